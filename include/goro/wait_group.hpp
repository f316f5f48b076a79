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
// STATE (one 64-bit word, as in Go):
//
//     63            32 31             0
//     +---------------+----------------+
//     |  counter (i32)| waiters (u32)  |
//     +---------------+----------------+
//
//   `add`/`done` are a single fetch_add of `n << 32`; only when the counter
//   reaches zero with waiters counted do they take the lock, to release them.
//   `wait` needs no lock when the counter is already zero.
//
// INVARIANTS (under `lock_`): the waiter bits equal the number of nodes in the
// waiter list. A waiter increments them (CAS, retried while the counter moves)
// and links its node in one critical section; a waker clears them (CAS, only
// while the counter is still zero) and takes the whole list in another. So a
// counter reaching zero while waiters are counted always finds them listed.
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

        bool await_ready() const noexcept {
            return counter_of(wg_->state_.load(std::memory_order_acquire)) == 0;
        }

        bool await_suspend(std::coroutine_handle<> h) {
            task_header* t = detail::current_task_or_throw("goro::wait_group::wait");
            node_.task = t;
            detail::park(t, h, wait_reason::wait_group);
            wait_group& wg = *wg_;
            std::lock_guard<detail::spinlock> g(wg.lock_);
            std::uint64_t s = wg.state_.load(std::memory_order_acquire);
            for (;;) {
                if (counter_of(s) == 0) {
                    t->state.store(task_state::running, std::memory_order_relaxed);
                    return false;  // reached zero meanwhile: continue without parking
                }
                // acquire on success too: the counted waiter must see the
                // done() calls that precede a later zero through the waker.
                if (wg.state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire))
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
        change(static_cast<std::int32_t>(n), "goro::wait_group::add");
    }

    /// Marks one task finished: `add(-1)`.
    void done() { change(-1, "goro::wait_group::done"); }

    /// `co_await wg.wait()`: parks until the counter is zero (at once if it is).
    [[nodiscard]] wait_operation wait() noexcept { return wait_operation(*this); }

    /// The counter now (for diagnostics; stale as soon as it is read).
    std::int64_t count() const noexcept { return counter_of(state_.load(std::memory_order_acquire)); }

private:
    static std::int32_t counter_of(std::uint64_t s) noexcept {
        return static_cast<std::int32_t>(static_cast<std::uint32_t>(s >> 32));
    }
    static std::uint32_t waiters_of(std::uint64_t s) noexcept { return static_cast<std::uint32_t>(s); }

    void change(std::int32_t delta, const char* op) {
        // acq_rel: a done() releases the task's work; the one reaching zero
        // acquires every earlier done() before it wakes the waiters.
        const std::uint64_t d = static_cast<std::uint64_t>(static_cast<std::uint32_t>(delta)) << 32;
        std::uint64_t s = state_.fetch_add(d, std::memory_order_acq_rel) + d;
        std::int64_t v = counter_of(s);
        std::int64_t before = static_cast<std::int64_t>(counter_of(s - d));
        if (v < 0 || before + delta != v) {
            // Undo, so the misuse does not wedge the group. A wait() that saw
            // the bad counter may have parked meanwhile: release it if the
            // undo brings the counter back to zero.
            std::uint64_t u = state_.fetch_sub(d, std::memory_order_acq_rel) - d;
            if (counter_of(u) == 0 && waiters_of(u) != 0) release_waiters();
            if (before + delta < 0)
                throw usage_error(std::string(op) + ": negative counter (" + std::to_string(before) + " " +
                                  (delta < 0 ? "- " : "+ ") + std::to_string(delta < 0 ? -std::int64_t(delta) : delta) + ")");
            throw usage_error(std::string(op) + ": counter overflow");
        }
        if (v != 0 || waiters_of(s) == 0) return;
        release_waiters();
    }

    /// The counter reached zero with waiters counted: wake every listed waiter.
    void release_waiters() {
        waiter_node* list = nullptr;
        {
            std::lock_guard<detail::spinlock> g(lock_);
            std::uint64_t s = state_.load(std::memory_order_acquire);
            for (;;) {
                // A racing add() raised the counter again, or another waker
                // already took the list: nothing to do here.
                if (counter_of(s) != 0 || waiters_of(s) == 0) return;
                if (state_.compare_exchange_weak(s, 0, std::memory_order_acq_rel, std::memory_order_acquire)) break;
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

    alignas(detail::cache_line) std::atomic<std::uint64_t> state_{0};
    detail::spinlock lock_;
    waiter_node* head_ = nullptr;  // FIFO of parked waiters, under lock_
    waiter_node* tail_ = nullptr;
};

}  // namespace goro
