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
// STATE, on two cache lines, so that a spawner's add() and the finishers'
// done() do not pull one line back and forth:
//
//   added_  (line A): how many add()s so far, a 64-bit count; only add() writes it.
//   state_  (line B):
//
//     63            32 31                 2     1          0
//     +---------------+--------------------+-----------+---------+
//     | done (u32)    | busy finishers     | releasing | waiters |
//     +---------------+--------------------+-----------+---------+
//
//   hint_   (line B): a value `added_` had (its low 32 bits); a lower bound of it.
//
//   The counter is `added - done`, in 32-bit two's complement as Go's.
//
// DONE. A finisher claims its done() with one CAS of `state_`. When its new
// done count is below `hint_`, the counter cannot have reached zero (added_ is
// at least the hint) and the CAS is all it does: this is the path of every
// done() but the few that catch up with the hint. Otherwise the same CAS also
// counts it as a *busy finisher*; it then reads `added_`, refreshes the hint,
// checks for a negative counter, and leaves the busy count with a second CAS.
// That second CAS is where a finisher decides to release: when it leaves no
// finisher busy, waiters are counted, nobody is releasing, and its done count
// has caught up with the added count it read, it also sets `releasing`.
//
// WAIT. A waiter sees zero only when no finisher is busy, nobody is releasing,
// and done equals added (state read first, then added). So from the moment a
// finisher becomes busy until it leaves, no waiter can return, and a finisher
// that leaves without `releasing` touches nothing of the group afterwards: a
// waiter may destroy the group as soon as its wait() returns (the usual
// pattern), and the last done() never reads freed memory. A waiter that does
// not see zero sets `waiters` under `lock_` and links itself there.
//
// RELEASE. Only the holder of `releasing` takes the waiter list, and only
// when, under the lock, no finisher is busy and done equals added. It then
// drops `releasing` with a CAS that looks once more: if waiters linked
// themselves meanwhile and the counter is still zero, it goes round again.
// Waking happens after that CAS and touches only the waiters' own nodes.
//
// WHY NO WAKE-UP IS LOST: a waiter links itself only while a finisher is busy
// (that finisher, or the last busy one, will look at `waiters` when it
// leaves), while somebody is releasing (its dropping CAS looks again), or while
// done < added (the done() that reaches the added count has a new done count
// at least the hint, so it becomes busy and looks when it leaves).
//
// Reuse: as in Go, an `add` that raises the counter from zero must happen before
// the `wait` that is meant to see it. An `add` racing with the `done` that
// reached zero does not lose anyone: the releaser then finds the counter not
// zero and the waiters wait for the next zero.
//
// MISUSE, detected as Go detects it, by add() (goro::usage_error; the
// counter is left as it was): raising the counter from zero while the
// waiters released at that zero are still being released ("add called
// concurrently with wait"), or have not yet returned from their wait()
// ("reused before the previous wait has returned"). `returning_`, on the
// line of `added_` so that a plain add() reads it for free, counts the
// releasers at work (high half) and the released waiters that have not
// returned (low half). A waiter leaves the count (and the `woken_` list)
// under `lock_` as it returns; ~wait_group tells those that have not begun
// to return that the group is gone (`orphaned`: they touch nothing) and
// waits, briefly, for those that have. A race of add() with the done() that
// reaches zero is detected only when add() sees the release begun, as in Go.
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

#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/waiter_list.hpp>

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
        // Released and not yet returned (see MISUSE): linked in `woken_`.
        wait_group* group = nullptr;  // set by the releaser, under lock_
        waiter_node* rprev = nullptr;
        waiter_node* rnext = nullptr;
        std::atomic<unsigned char> st{pending};  // pending -> returning (the waiter) or orphaned (~wait_group)

        waiter_node() = default;
        waiter_node(const waiter_node&) noexcept {}  // an awaiter is copied only before it parks
    };
    static constexpr unsigned char pending = 0, returning = 1, orphaned = 2;

public:
    /// Awaiter of `wait()`: parks until the counter is zero. Copyable until it
    /// suspends (g++ may move the operand of co_await); the node is linked only
    /// in await_suspend.
    class [[nodiscard("goro::wait_group::wait: co_await it"), gnu::warn_unused]] wait_operation {
    public:
        using is_goro_awaiter = void;
        explicit wait_operation(wait_group& wg) noexcept : wg_(&wg) {}

        bool await_ready() const noexcept { return wg_->zero(wg_->state_.load(std::memory_order_acquire)); }

        bool await_suspend(std::coroutine_handle<> h) {
            task_header* t = detail::current_task_or_throw("goro::wait_group::wait");
            node_.task = t;
            detail::park(t, h, wait_reason::wait_group);
            wait_group& wg = *wg_;
            std::lock_guard g(wg.lock_);
            std::uint64_t s = wg.state_.load(std::memory_order_acquire);
            for (;;) {
                if (wg.zero(s)) {
                    t->state.store(task_state::running, std::memory_order_relaxed);
                    return false;  // reached zero meanwhile: continue without parking
                }
                if (s & waiters_bit) break;  // already set; stays set until a releaser takes the list
                if (wg.state_.compare_exchange_weak(s, s | waiters_bit, std::memory_order_acq_rel,
                                                    std::memory_order_acquire))
                    break;
            }
            wg.waiters_.push_back(node_);
            return true;  // published: from here on a releaser owns the node
        }

        void await_resume() {
            if (node_.group) node_.group->returned(node_);
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
        // Waiters released but not yet returned from wait(): they must not
        // look at the group any more. One that has begun to (`returning`)
        // is running, and leaves `woken_` in a moment.
        for (;;) {
            {
                std::lock_guard g(lock_);
                for (waiter_node* w = woken_; w;) {
                    waiter_node* next = w->rnext;
                    unsigned char expected = pending;
                    if (w->st.compare_exchange_strong(expected, orphaned, std::memory_order_acq_rel)) unlink_woken(*w);
                    w = next;
                }
                if (!woken_) break;
            }
            detail::cpu_relax();
        }
        detail::wake_destroyed(waiters_, lock_, [](waiter_node& w, std::size_t n) noexcept {
            w.destroyed_msg = "goro::wait_group::wait: the wait group was destroyed while this task waited";
            w.destroyed_count = static_cast<std::uint32_t>(n);
        });
    }

    /// Adds `n` (may be negative) to the counter. Throws goro::usage_error when
    /// `n` is out of the counter's range, when the counter would go below
    /// zero, or on the misuse Go detects (see MISUSE): raising the counter
    /// from zero while waiters released at that zero have not returned from
    /// wait() yet, or while they are being released. The counter is then
    /// left as it was.
    void add(std::int64_t n) {
        if (n > std::numeric_limits<std::int32_t>::max() || n < -std::int64_t(std::numeric_limits<std::int32_t>::max()))
            throw usage_error("goro::wait_group::add: delta " + std::to_string(n) + " is out of range");
        if (n > 0) {
            const std::uint64_t before = added_.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_acq_rel);
            // On the line of added_: the common add() pays no extra cache miss.
            if (returning_.load(std::memory_order_acquire) != 0) [[unlikely]]
                check_reuse(low(before), static_cast<std::uint32_t>(n));
        } else if (n < 0) {
            finish(static_cast<std::uint32_t>(-n), "goro::wait_group::add");
        }
    }

    /// Marks one task finished: `add(-1)`.
    void done() { finish(1, "goro::wait_group::done"); }

    /// `co_await wg.wait()`: parks until the counter is zero (at once if it is).
    [[nodiscard("goro::wait_group::wait: co_await it")]] wait_operation wait() noexcept { return wait_operation(*this); }

    /// The counter now (for diagnostics; stale as soon as it is read).
    std::int64_t count() const noexcept {
        std::uint64_t s = state_.load(std::memory_order_acquire);
        return static_cast<std::int32_t>(low(added_.load(std::memory_order_acquire)) - done_of(s));
    }

private:
    static constexpr std::uint64_t releaser_one = std::uint64_t(1) << 32;  // in returning_

    /// add() raised the counter from `before` while somebody is being
    /// released or has not returned from wait(): misuse if the counter was zero.
    [[gnu::noinline, gnu::cold]] void check_reuse(std::uint32_t before, std::uint32_t n) {
        const std::uint64_t s = state_.load(std::memory_order_acquire);
        if (done_of(s) != before) return;  // the counter was above zero: an ordinary add
        const std::uint64_t r = returning_.load(std::memory_order_acquire);
        finish(n, "goro::wait_group::add");  // undo: the counter goes back to zero
        if (static_cast<std::uint32_t>(r) != 0)
            throw usage_error("goro::wait_group::add: wait group is reused before the previous wait has returned (" +
                              std::to_string(static_cast<std::uint32_t>(r)) +
                              " tasks released at zero are still returning from wait())");
        throw usage_error("goro::wait_group::add: add called concurrently with wait (the counter was zero while "
                          "its waiters were being released)");
    }

    /// A released waiter returns from wait(): it leaves `woken_`, unless the
    /// group is being destroyed (then it touches nothing).
    void returned(waiter_node& w) noexcept {
        unsigned char expected = pending;
        if (!w.st.compare_exchange_strong(expected, returning, std::memory_order_acq_rel)) return;  // orphaned
        std::lock_guard g(lock_);
        unlink_woken(w);
        returning_.fetch_sub(1, std::memory_order_acq_rel);
        // The destructor waits for `woken_` to empty under lock_: nothing after the unlock.
    }

    void link_woken(waiter_node& w) noexcept {  // under lock_
        w.group = this;
        w.rprev = nullptr;
        w.rnext = woken_;
        if (woken_) woken_->rprev = &w;
        woken_ = &w;
    }
    void unlink_woken(waiter_node& w) noexcept {  // under lock_
        if (w.rprev) w.rprev->rnext = w.rnext;
        else woken_ = w.rnext;
        if (w.rnext) w.rnext->rprev = w.rprev;
        w.rprev = w.rnext = nullptr;
    }

    static constexpr std::uint64_t waiters_bit = 1;
    static constexpr std::uint64_t releasing_bit = 2;
    static constexpr std::uint64_t busy_one = 4;
    static constexpr std::uint64_t busy_mask = 0xffff'fffcull;
    static constexpr std::uint64_t done_one = std::uint64_t(1) << 32;

    static std::uint32_t done_of(std::uint64_t s) noexcept { return static_cast<std::uint32_t>(s >> 32); }
    static std::uint32_t low(std::uint64_t a) noexcept { return static_cast<std::uint32_t>(a); }
    /// a ≥ b in the wrapping 32-bit counts.
    static bool at_least(std::uint32_t a, std::uint32_t b) noexcept { return static_cast<std::int32_t>(a - b) >= 0; }

    /// The counter is zero, seen from state `s` (read before added_).
    bool zero(std::uint64_t s) const noexcept {
        if (s & (busy_mask | releasing_bit)) return false;
        return done_of(s) == low(added_.load(std::memory_order_acquire));
    }

    /// Seen by the holder of `releasing` (which it ignores): waiters are
    /// listed, no finisher is busy, and the counter is zero.
    bool zero_with_waiters(std::uint64_t s) const noexcept {
        return (s & busy_mask) == 0 && (s & waiters_bit) && done_of(s) == low(added_.load(std::memory_order_acquire));
    }

    /// The common done(), inline: the counter stays above zero (see DONE).
    void finish(std::uint32_t n, const char* op) {
        // acq_rel: a done() releases the task's work; the chain of CASes
        // carries every earlier done() (and the adds before them) to a waiter.
        std::uint64_t s = state_.load(std::memory_order_relaxed);
        if (!at_least(done_of(s) + n, hint_.load(std::memory_order_relaxed)) &&
            state_.compare_exchange_strong(s, s + std::uint64_t(n) * done_one, std::memory_order_acq_rel,
                                           std::memory_order_relaxed))
            return;
        finish_slow(n, op, s);
    }

    /// Any other done(): a retried claim, or one that becomes busy.
    [[gnu::noinline]] void finish_slow(std::uint32_t n, const char* op, std::uint64_t s) {
        const std::uint32_t hint = hint_.load(std::memory_order_relaxed);
        std::uint64_t claim;
        for (;;) {
            const bool sure_positive = !at_least(done_of(s) + n, hint);
            claim = std::uint64_t(n) * done_one + (sure_positive ? 0 : busy_one);
            if (state_.compare_exchange_weak(s, s + claim, std::memory_order_acq_rel, std::memory_order_relaxed)) {
                if (sure_positive) return;  // the counter is above zero: nothing to look at
                break;
            }
        }
        // Busy: no waiter can see zero until this finisher leaves.
        const std::uint32_t done_now = done_of(s) + n;
        const std::uint32_t added = low(added_.load(std::memory_order_acquire));
        const bool negative = !at_least(added, done_now);
        if (!negative && added != hint) hint_.store(added, std::memory_order_relaxed);
        // Leave: drop busy (and undo a bad done); decide whether to release.
        const std::uint64_t leave = busy_one + (negative ? std::uint64_t(n) * done_one : 0);
        s = state_.load(std::memory_order_relaxed);
        bool release;
        for (;;) {
            std::uint64_t ns = s - leave;
            release = (ns & busy_mask) == 0 && (ns & waiters_bit) && !(ns & releasing_bit) &&
                      at_least(done_of(ns), added);
            if (release) ns |= releasing_bit;
            if (state_.compare_exchange_weak(s, ns, std::memory_order_acq_rel, std::memory_order_relaxed)) break;
        }
        if (release) {
            returning_.fetch_add(releaser_one, std::memory_order_acq_rel);  // see MISUSE
            release_waiters();
        }
        if (negative) {
            const std::int64_t before = static_cast<std::int32_t>(added - (done_now - n));
            throw usage_error(std::string(op) + ": negative counter (" + std::to_string(before) + " - " +
                              std::to_string(n) + ")");
        }
    }

    /// The caller set `releasing`: take every listed waiter if the counter is
    /// zero, drop `releasing`, then wake them.
    void release_waiters() {
        detail::waiter_list<waiter_node> taken;
        for (;;) {
            {
                std::lock_guard g(lock_);
                if (zero_with_waiters(state_.load(std::memory_order_acquire))) {
                    std::uint64_t k = 0;
                    for (waiter_node* w = waiters_.front(); w; w = w->next, ++k) link_woken(*w);
                    returning_.fetch_add(k, std::memory_order_acq_rel);
                    taken.splice_back(waiters_);
                    state_.fetch_and(~waiters_bit, std::memory_order_acq_rel);
                }
            }
            // Drop `releasing`, unless waiters linked themselves meanwhile at zero.
            std::uint64_t s = state_.load(std::memory_order_acquire);
            bool again = false;
            bool counted = true;  // our releaser_one in returning_, dropped just before `releasing`
            for (;;) {
                if (zero_with_waiters(s)) {
                    again = true;
                    break;
                }
                if (counted) {
                    returning_.fetch_sub(releaser_one, std::memory_order_acq_rel);
                    counted = false;
                }
                if (state_.compare_exchange_weak(s, s & ~releasing_bit, std::memory_order_acq_rel,
                                                 std::memory_order_acquire))
                    break;
            }
            if (!again) break;
            if (!counted) {
                returning_.fetch_add(releaser_one, std::memory_order_acq_rel);
                counted = true;
            }
        }
        // The group may be gone from here on; only the parked waiters' nodes are touched.
        taken.wake_all();
    }

    alignas(detail::cache_line) std::atomic<std::uint64_t> added_{0};
    // On added_'s line: releasers at work << 32 | released waiters not yet returned (MISUSE).
    std::atomic<std::uint64_t> returning_{0};
    alignas(detail::cache_line) std::atomic<std::uint64_t> state_{0};
    std::atomic<std::uint32_t> hint_{0};
    detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    detail::waiter_list<waiter_node> waiters_;  // under lock_
    waiter_node* woken_ = nullptr;               // under lock_: released, not yet returned
};

}  // namespace goro
