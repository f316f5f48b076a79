// goro/wait_group.hpp — `goro::wait_group`: wait for a collection of tasks to finish.
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
// STATE: two counters on two cache lines, so that the task that adds and the
// tasks that finish do not pass one line back and forth on every call (a
// spawn loop and its workers do both all the time):
//
//     added_   (u32)  everything ever added (positive deltas), mod 2^32
//     state_   (u64)  done count (u32, mod 2^32) << 32 | waiters (u32)
//
//   The counter is `added - done`, an int32 read from two u32. Both counts only
//   grow, so any value of `added_` once read is a lower bound of it for good:
//   a finisher keeps the last value it read in `added_seen_` (its own line), and
//   while its done count stays below that, the counter cannot be zero and it
//   reads nothing else. Only a finisher that catches up reads `added_` again
//   (once per batch of spawns, not per task). An adder likewise checks for
//   overflow against `done_seen_`, a lower bound of the done count.
//
//   Zero is decided by the finisher whose RMW on `state_` brings the done count
//   up to `added_` (read after the RMW). A waiter registers by a CAS on the same
//   word, from a value it read *before* it read `added_`: either its CAS comes
//   first and the finisher's RMW returns the waiter bits, or the finisher's RMW
//   comes first and the CAS fails, and the waiter looks again. (All four are
//   seq_cst: the loads of `added_` must not see a value older than one an RMW
//   before them in that order saw.)
//
// INVARIANTS (under `lock_`): the waiter bits equal the number of nodes in the
// waiter list. A waiter increments them (CAS, retried while the done count
// moves) and links its node in one critical section; a waker clears them (CAS,
// only while the counter is still zero) and takes the whole list in another.
// So a counter reaching zero while waiters are counted always finds them listed.
//
// A counter below zero (more done than added) is seen at once by the call that
// took it there, which undoes its own change and throws. Overflow (above
// INT32_MAX) is refused before `added_` changes, so `added_` never goes back.
//
// THREAD SAFETY: any thread may call add/done; `wait` is awaited in a goro task.
// Waiters are readied after the lock is released (collect, unlock, wake), in the
// order they parked. Waking happens on the thread whose `done` reached zero,
// and `done` touches nothing of the group after the wake-ups, so a waiter may
// destroy the group as soon as its `wait` returns (the usual pattern).
//
// Reuse: as in Go, an `add` that raises the counter from zero must happen before
// the `wait` that is meant to see it. An `add` racing with the `done` that
// reached zero does not lose anyone: the waiters then wait for the next zero.
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

#include <goro/platform.hpp>
#include <goro/registry.hpp>
#include <goro/scheduler.hpp>
#include <goro/spinlock.hpp>

namespace goro {

namespace detail {
struct wait_group_probe;
}

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
    };

public:
    /// Awaiter of `wait()`: parks until the counter is zero. Copyable until it
    /// suspends (g++ may move the operand of co_await); the node is linked only
    /// in await_suspend.
    class wait_operation {
    public:
        explicit wait_operation(wait_group& wg) noexcept : wg_(&wg) {}

        bool await_ready() const noexcept { return wg_->count() == 0; }

        bool await_suspend(std::coroutine_handle<> h) {
            task_header* t = detail::current_task_or_throw("goro::wait_group::wait");
            node_.task = t;
            detail::park(t, h, wait_reason::wait_group);
            wait_group& wg = *wg_;
            std::lock_guard<detail::spinlock> g(wg.lock_);
            std::uint64_t s = wg.state_.load(std::memory_order_seq_cst);
            for (;;) {
                if (wg.counter(s) == 0) {
                    t->state.store(task_state::running, std::memory_order_relaxed);
                    return false;  // reached zero meanwhile: continue without parking
                }
                // Fails when a done() moved the count since `s` was read: look again.
                if (wg.state_.compare_exchange_weak(s, s + 1, std::memory_order_seq_cst, std::memory_order_seq_cst))
                    break;
            }
            if (wg.tail_) wg.tail_->next = &node_;
            else wg.head_ = &node_;
            wg.tail_ = &node_;
            return true;  // published: from here on a waker owns the node
        }

        void await_resume() const {
            if (node_.destroyed_msg)
                throw wait_group_destroyed(std::string(node_.destroyed_msg) + " (" +
                                           std::to_string(node_.destroyed_count) + " tasks were waiting)");
        }

    private:
        wait_group* wg_;
        waiter_node node_{};
    };

    wait_group() noexcept = default;
    /// Starts with `n` (≥ 0) outstanding tasks, like `wg.Add(n)` right after construction.
    explicit wait_group(std::int64_t n) { add(n); }
    wait_group(const wait_group&) = delete;
    wait_group& operator=(const wait_group&) = delete;

    ~wait_group() {
        waiter_node* list;
        std::uint32_t n;
        {
            std::lock_guard<detail::spinlock> g(lock_);
            list = head_;
            head_ = tail_ = nullptr;
            n = waiters_of(state_.load(std::memory_order_relaxed));
        }
        while (list) {
            waiter_node* next = list->next;  // read before the wake: the node dies with its frame
            list->destroyed_msg = "goro::wait_group::wait: the wait group was destroyed while this task waited";
            list->destroyed_count = n;
            detail::ready(list->task);
            list = next;
        }
    }

    /// Adds `n` (may be negative) to the counter. Throws goro::usage_error when
    /// the counter would go below zero (and leaves it unchanged) or overflow.
    void add(std::int64_t n) {
        if (n > std::numeric_limits<std::int32_t>::max() || n < std::numeric_limits<std::int32_t>::min())
            throw usage_error("goro::wait_group::add: delta " + std::to_string(n) + " is out of range");
        if (n > 0) increase(static_cast<std::uint32_t>(n));
        else if (n < 0) decrease(static_cast<std::uint32_t>(-n), "goro::wait_group::add");
    }

    /// Marks one task finished: `add(-1)`.
    void done() { decrease(1, "goro::wait_group::done"); }

    /// `co_await wg.wait()`: parks until the counter is zero (at once if it is).
    [[nodiscard]] wait_operation wait() noexcept { return wait_operation(*this); }

    /// The counter now (for diagnostics; stale as soon as it is read). The
    /// done count is read first, so a zero seen here follows every done()
    /// counted, and every add() they followed.
    std::int64_t count() const noexcept { return counter(state_.load(std::memory_order_seq_cst)); }

private:
    friend struct detail::wait_group_probe;  // tests: start the counts near their wrap-around

    static std::uint32_t done_of(std::uint64_t s) noexcept { return static_cast<std::uint32_t>(s >> 32); }
    static std::uint32_t waiters_of(std::uint64_t s) noexcept { return static_cast<std::uint32_t>(s); }
    static std::int32_t diff(std::uint32_t a, std::uint32_t d) noexcept { return static_cast<std::int32_t>(a - d); }
    /// The counter, given a value of `state_` read before this reads `added_`.
    std::int32_t counter(std::uint64_t s) const noexcept {
        return diff(added_.load(std::memory_order_seq_cst), done_of(s));
    }

    void increase(std::uint32_t n) {
        std::uint32_t a = added_.load(std::memory_order_relaxed);
        for (;;) {
            // done_seen_ ≤ the done count, so this bound is ≥ the counter after the add.
            if (std::int64_t(a - done_seen_.load(std::memory_order_relaxed)) + n > std::numeric_limits<std::int32_t>::max()) {
                std::uint32_t d = done_of(state_.load(std::memory_order_seq_cst));
                done_seen_.store(d, std::memory_order_relaxed);
                std::int64_t now = diff(a, d);
                if (now < 0) now = 0;  // a misused done() in flight, about to undo itself
                if (now + n > std::numeric_limits<std::int32_t>::max())
                    throw usage_error("goro::wait_group::add: counter overflow");
            }
            if (added_.compare_exchange_weak(a, a + n, std::memory_order_seq_cst, std::memory_order_relaxed)) return;
        }
    }

    void decrease(std::uint32_t n, const char* op) {
        const std::uint64_t dn = std::uint64_t(n) << 32;
        const std::uint64_t s = state_.fetch_add(dn, std::memory_order_seq_cst) + dn;
        const std::uint32_t d = done_of(s);
        // Still below what was added once: not zero, nothing more to look at.
        if (diff(added_seen_.load(std::memory_order_relaxed), d) > 0) return;
        const std::uint32_t a = added_.load(std::memory_order_seq_cst);
        added_seen_.store(a, std::memory_order_relaxed);
        const std::int32_t v = diff(a, d);
        if (v < 0) {
            // Undo, so the misuse does not wedge the group. A wait() that saw
            // the bad counter may have parked meanwhile: release it if the
            // undo brings the counter back to zero.
            const std::uint64_t u = state_.fetch_sub(dn, std::memory_order_seq_cst) - dn;
            if (waiters_of(u) != 0 && counter(u) == 0) release_waiters();
            throw usage_error(std::string(op) + ": negative counter (" + std::to_string(std::int64_t(v) + n) +
                              " - " + std::to_string(n) + ")");
        }
        if (v == 0 && waiters_of(s) != 0) release_waiters();
    }

    /// The counter reached zero with waiters counted: wake every listed waiter.
    void release_waiters() {
        waiter_node* list = nullptr;
        {
            std::lock_guard<detail::spinlock> g(lock_);
            std::uint64_t s = state_.load(std::memory_order_seq_cst);
            for (;;) {
                // A racing add() raised the counter again, or another waker
                // already took the list: nothing to do here.
                if (waiters_of(s) == 0 || counter(s) != 0) return;
                if (state_.compare_exchange_weak(s, s & ~std::uint64_t(0xffffffffu), std::memory_order_seq_cst,
                                                 std::memory_order_seq_cst))
                    break;
            }
            list = head_;
            head_ = tail_ = nullptr;
        }
        while (list) {
            waiter_node* next = list->next;  // read before the wake: the node dies with its frame
            detail::ready(list->task);
            list = next;
        }
    }

    // The adders' line.
    alignas(detail::cache_line) std::atomic<std::uint32_t> added_{0};
    std::atomic<std::uint32_t> done_seen_{0};  // a done count read once (a lower bound of it)
    // The finishers' line (and the waiters').
    alignas(detail::cache_line) std::atomic<std::uint64_t> state_{0};
    std::atomic<std::uint32_t> added_seen_{0};  // a value of added_ read once (a lower bound of it)
    detail::spinlock lock_;
    waiter_node* head_ = nullptr;  // FIFO of parked waiters, under lock_
    waiter_node* tail_ = nullptr;
};

}  // namespace goro
