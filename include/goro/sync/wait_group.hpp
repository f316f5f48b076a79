// goro/sync/wait_group.hpp — `goro::wait_group`: wait for a collection of tasks to finish.
//
//   goro::wait_group wg;
//   for (auto& job : jobs) {
//       wg.add(1);
//       goro::go(work(job, wg));          // each calls wg.done() when finished
//   }
//   co_await wg.wait();                   // or goro::block_on(wg.wait()) on a plain thread
//
// Go's sync.WaitGroup. A parked waiter shows the wait reason `sync.WaitGroup.Wait`.
//
// THE COUNTER PROTOCOL (lock-free add and done; parking only when the
// counter is not zero; reuse; Go's misuse errors; the last done() never
// touches a group that its waiter freed) is detail::basic_wait_count in
// goro/sync/wait_count.hpp, documented there and model-checked by
// tests/test_wait_count.cpp; this header parks and wakes the tasks.
//
// DESTRUCTION with tasks still parked in `wait` is a bug in the program (they
// could never be woken): the destructor wakes each of them with a
// `goro::wait_group_destroyed` exception thrown from its `co_await wg.wait()`,
// whose message names the operation and the number of waiters. Nothing is
// touched after the wake-up, so this is never use-after-free.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/waiter_list.hpp>
#include <goro/sync/wait_count.hpp>

namespace goro {

/// A `goro::wait_group` was destroyed while tasks waited on it; thrown from their `wait()`.
class wait_group_destroyed : public error {
public:
    using error::error;
};

class wait_group {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        const char* destroyed_msg = nullptr;  // set by ~wait_group before the wake-up
        std::uint32_t destroyed_count = 0;
        // Released and not yet returned (see wait_count.hpp, MISUSE): linked in `woken_`.
        bool released = false;  // set by the releaser, under lock_
        waiter_node* rprev = nullptr;
        waiter_node* rnext = nullptr;
        std::atomic<unsigned char> st{detail::wait_node_pending};

        waiter_node() = default;
        waiter_node(const waiter_node&) noexcept {}  // an awaiter is copied only before it parks
        void wake() noexcept { detail::ready(task); }
    };
    using counter = detail::basic_wait_count<detail::machine_policy,
                                             detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters>,
                                             waiter_node>;

public:
    /// Awaiter of `wait()`: parks until the counter is zero. Copyable until it
    /// suspends (g++ may move the operand of co_await); the node is linked only
    /// in await_suspend.
    class [[nodiscard("goro::wait_group::wait: co_await it"), gnu::warn_unused]] wait_operation {
    public:
        using is_goro_awaiter = void;
        explicit wait_operation(wait_group& wg) noexcept : wg_(&wg) {}

        bool await_ready() const noexcept { return wg_->c_.at_zero(); }

        bool await_suspend(std::coroutine_handle<> h);

        void await_resume();

    private:
        wait_group* wg_;
        waiter_node node_{};
    };

    wait_group() noexcept = default;
    /// Starts with `n` (≥ 0) outstanding tasks, like `wg.Add(n)` right after construction.
    explicit wait_group(std::int64_t n) { add(n); }
    wait_group(const wait_group&) = delete;
    wait_group& operator=(const wait_group&) = delete;

    ~wait_group();

    /// Adds `n` (may be negative) to the counter. Throws goro::usage_error when
    /// `n` is out of the counter's range, when the counter would go below
    /// zero, or on the misuse Go detects (see wait_count.hpp, MISUSE): raising
    /// the counter from zero while waiters released at that zero have not
    /// returned from wait() yet, or while they are being released. The counter
    /// is then left as it was.
    void add(std::int64_t n);

    /// Marks one task finished: `add(-1)`.
    void done();

    /// `co_await wg.wait()`: parks until the counter is zero (at once if it is).
    [[nodiscard("goro::wait_group::wait: co_await it")]] wait_operation wait() noexcept { return wait_operation(*this); }

    /// The counter now (for diagnostics; stale as soon as it is read).
    std::int64_t count() const noexcept { return c_.count(); }

private:
    counter c_;
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL bool wait_group::wait_operation::await_suspend(std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::wait_group::wait");
    node_.task = t;
    detail::park(t, h, wait_reason::wait_group);
    counter& c = wg_->c_;
    std::lock_guard g(c.lock_);
    if (c.enqueue(node_)) return true;  // published: from here on a releaser owns the node
    t->state.store(task_state::running, std::memory_order_relaxed);
    return false;  // reached zero meanwhile: continue without parking
}

GORO_DECL void wait_group::wait_operation::await_resume() {
    if (node_.released) wg_->c_.returned(node_);
    if (node_.destroyed_msg)
        throw wait_group_destroyed(std::string(node_.destroyed_msg) + " (" +
                                   std::to_string(node_.destroyed_count) + " tasks were waiting)");
}

GORO_DECL wait_group::~wait_group() {
    detail::waiter_list<waiter_node> parked;
    c_.destroy(parked);  // the group's last step: nobody touches it after
    const std::size_t n = parked.size();
    parked.wake_all([n](waiter_node& w) noexcept {
        w.destroyed_msg = "goro::wait_group::wait: the wait group was destroyed while this task waited";
        w.destroyed_count = static_cast<std::uint32_t>(n);
    });
}

GORO_DECL void wait_group::add(std::int64_t n) {
    if (n > std::numeric_limits<std::int32_t>::max() || n < -std::int64_t(std::numeric_limits<std::int32_t>::max()))
        throw usage_error("goro::wait_group::add: delta " + std::to_string(n) + " is out of range");
    if (n > 0) c_.add(static_cast<std::uint32_t>(n));
    else if (n < 0) c_.finish(static_cast<std::uint32_t>(-n), "goro::wait_group::add");
}

GORO_DECL void wait_group::done() { c_.finish(1, "goro::wait_group::done"); }

}  // namespace goro
#endif  // GORO_BODIES
