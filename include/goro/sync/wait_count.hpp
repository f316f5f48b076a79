// goro/sync/wait_count.hpp — the counter protocol of `goro::wait_group`
// (sync/wait_group.hpp), written against a policy so that the production
// group and the model check (tests/test_wait_count.cpp) run the same steps.
//
// `basic_wait_count<Policy, Lock, Node>`: Policy gives the atomics and the
// wait loop's spin (machine_policy in platform.hpp, or the model checker's);
// Lock guards the waiter lists; Node is a parked waiter's node, with
//   Node* next, rprev, rnext;   bool released;
//   Policy::atomic<unsigned char> st;   void wake() noexcept;
// wait_group wraps it with the coroutine side (parking a task, waking it).
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
//   hint_   (line B): a value `added_` had (its low 32 bits); a lower bound of
//   it, since `added_` only grows.
//
//   The counter is `added - done`, in 32-bit two's complement as Go's.
//
// DONE (finish). A finisher claims its done() with one CAS of `state_`. When
// its new done count is below `hint_`, the counter cannot have reached zero
// (added_ is at least the hint) and the CAS is all it does: this is the path
// of every done() but the few that catch up with the hint. Otherwise the same
// CAS also counts it as a *busy finisher*; it then reads `added_`, refreshes
// the hint, checks for a negative counter, and leaves the busy count with a
// second CAS (which also takes back a done that made the counter negative).
// That second CAS is where a finisher decides to release: when it leaves no
// finisher busy, waiters are counted, nobody is releasing, and its done count
// has caught up with the added count it read, it also sets `releasing`.
//
// WAIT (at_zero, enqueue). A waiter sees zero only when no finisher is busy,
// nobody is releasing, and done equals added (state read first, then added).
// So from the moment a finisher becomes busy until it leaves, no waiter can
// return, and a finisher that leaves without `releasing` touches nothing of
// the group afterwards: a waiter may destroy the group as soon as its wait()
// returns (the usual pattern), and the last done() never reads freed memory.
// A waiter that does not see zero sets `waiters` under `lock_` and links
// itself there.
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
// REUSE: as in Go, an add() that raises the counter from zero must happen
// before the wait() that is meant to see it. An add() racing with the done()
// that reached zero does not lose anyone: the releaser then finds the counter
// not zero and the waiters wait for the next zero.
//
// MISUSE, detected as Go detects it, by add() (goro::usage_error; the counter
// is left as it was): raising the counter from zero while the waiters
// released at that zero are still being released ("add called concurrently
// with wait"), or have not yet returned from their wait() ("reused before the
// previous wait has returned"). `returning_`, on the line of `added_` so that
// a plain add() reads it for free, counts the releasers at work (high half)
// and the released waiters that have not returned (low half). A released
// waiter is linked in `woken_` (under `lock_`) and leaves it as it returns
// (returned): it unlinks itself under the lock, and then, as its very last
// access to the group, takes itself out of the count. A race of add() with
// the done() that reaches zero is detected only when add() sees the release
// begun, as in Go. A done() below zero throws and is taken back (the counter
// is left as it was).
//
// DESTRUCTION (destroy, from the group's destructor) takes the lock once.
// Under it, it hands back the waiters still parked (the caller wakes them
// with an error: destroying a group that tasks wait on is the program's bug),
// marks the group `destroying_` (a waiter that returns later leaves the list
// alone: its neighbours may be gone), and tells each released waiter that has
// not begun to return that the group is gone: its node's `st` becomes
// `orphaned` by a CAS, after which that node is not touched again (its task
// may run and free it at once; its `rnext` was read before), and its count is
// taken out of `returning_`. Then, without the lock, it waits with plain loads
// until `returning_` is zero: the waiters that had begun to return have taken
// their last step of the group. Nobody touches the group after that: not a
// finisher (see WAIT), not a releaser (it leaves the count before it drops
// `releasing`, and no waiter returns while `releasing` is set), not a waiter.
//
// CHECKED by tests/test_wait_count.cpp in the model checker at 2–3 threads:
// no waiter left parked at zero, none released before the last done, no done
// lost, reuse after a wait, both misuses, and no step of a finisher or a
// returning waiter after the group was destroyed (with a destructor that does
// not wait for the returning waiters as a negative control).
#pragma once

#include <cstdint>
#include <limits>
#include <mutex>
#include <string>

#include <goro/core/platform.hpp>
#include <goro/core/waiter_list.hpp>

namespace goro::detail {

/// A node's `st`: released and not yet returned (pending), returning, or told
/// that the group is gone (orphaned).
inline constexpr unsigned char wait_node_pending = 0, wait_node_returning = 1, wait_node_orphaned = 2;

/// `Mutation` is for the model check's negative controls only (0 everywhere
/// else): 1 drops the releaser's second look before it lets go of
/// `releasing`; 2 lets a waiter see zero while a finisher is busy; 3 makes
/// destroy() return without waiting for the waiters that began to return.
template <class Policy, class Lock, class Node, int Mutation = 0>
struct basic_wait_count {
    template <class U>
    using atomic = typename Policy::template atomic<U>;

    static constexpr std::uint64_t waiters_bit = 1;
    static constexpr std::uint64_t releasing_bit = 2;
    static constexpr std::uint64_t busy_one = 4;
    static constexpr std::uint64_t busy_mask = 0xffff'fffcull;
    static constexpr std::uint64_t done_one = std::uint64_t(1) << 32;
    static constexpr std::uint64_t releaser_one = std::uint64_t(1) << 32;  // in returning_

    static std::uint32_t done_of(std::uint64_t s) noexcept { return static_cast<std::uint32_t>(s >> 32); }
    static std::uint32_t low(std::uint64_t a) noexcept { return static_cast<std::uint32_t>(a); }
    /// a ≥ b in the wrapping 32-bit counts.
    static bool at_least(std::uint32_t a, std::uint32_t b) noexcept { return static_cast<std::int32_t>(a - b) >= 0; }

    // --- the waiter's side ---------------------------------------------------

    /// The counter is zero now (a waiter need not park).
    bool at_zero() const { return zero(state_.load(std::memory_order_acquire)); }

    /// Under `lock_`: links `w` as a waiter, or returns false if the counter
    /// is zero (then the caller does not park).
    bool enqueue(Node& w) {
        std::uint64_t s = state_.load(std::memory_order_acquire);
        for (;;) {
            if (zero(s)) return false;
            if (s & waiters_bit) break;  // already set; stays set until a releaser takes the list
            if (state_.compare_exchange_weak(s, s | waiters_bit, std::memory_order_acq_rel,
                                             std::memory_order_acquire))
                break;
        }
        waiters_.push_back(w);
        return true;  // published: from here on a releaser owns the node
    }

    /// A released waiter (`w.released`) returns from wait(): it leaves
    /// `woken_`, unless the group is being destroyed (orphaned: then it
    /// touches nothing of the group).
    void returned(Node& w) {
        unsigned char expected = wait_node_pending;
        if (!w.st.compare_exchange_strong(expected, wait_node_returning, std::memory_order_acq_rel)) return;  // orphaned
        {
            std::lock_guard g(lock_);
            if (!destroying_) unlink_woken(w);  // else the list is dead, and its other nodes may be gone
        }
        // The last access to the group: destroy() waits, with loads only, for
        // `returning_` to reach zero, and the group may be freed right after.
        returning_.fetch_sub(1, std::memory_order_acq_rel);
    }

    // --- the adders' and finishers' side -------------------------------------

    /// add(n) for n > 0 (the caller checked the range).
    void add(std::uint32_t n) {
        const std::uint64_t before = added_.fetch_add(n, std::memory_order_acq_rel);
        // On the line of added_: the common add() pays no extra cache miss.
        if (returning_.load(std::memory_order_acquire) != 0) [[unlikely]]
            check_reuse(low(before), n);
    }

    /// done() n times; `op` names the operation in the error of a negative counter.
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

    /// The counter now (for diagnostics; stale as soon as it is read).
    std::int64_t count() const {
        const std::uint64_t s = state_.load(std::memory_order_acquire);
        return static_cast<std::int32_t>(low(added_.load(std::memory_order_acquire)) - done_of(s));
    }

    // --- destruction ---------------------------------------------------------

    /// The group is being destroyed (see DESTRUCTION): moves the waiters
    /// still parked to `parked` (the caller wakes them), orphans the released
    /// waiters that have not begun to return, and waits until those that have
    /// are done with the group. Takes the lock once; afterwards nobody touches
    /// the group.
    void destroy(waiter_list<Node>& parked) {
        {
            std::lock_guard g(lock_);
            destroying_ = true;
            parked = std::move(waiters_);
            std::uint64_t orphaned = 0;
            for (Node* w = woken_; w;) {
                Node* next = w->rnext;  // read first: once orphaned, the node may be gone
                unsigned char expected = wait_node_pending;
                if (w->st.compare_exchange_strong(expected, wait_node_orphaned, std::memory_order_acq_rel)) ++orphaned;
                w = next;
            }
            woken_ = nullptr;
            if (orphaned) returning_.fetch_sub(orphaned, std::memory_order_acq_rel);
        }
        if constexpr (Mutation == 3) return;
        // The waiters that began to return unlink themselves under the lock,
        // then leave the count as their last step; only loads here.
        int spins = 0;
        while (returning_.load(std::memory_order_acquire) != 0) Policy::spin(spins);
    }

    // --- the protocol's steps (see the top of this file) ---------------------

    /// The counter is zero, seen from state `s` (read before added_).
    bool zero(std::uint64_t s) const {
        constexpr std::uint64_t blocking = Mutation == 2 ? releasing_bit : (busy_mask | releasing_bit);
        if (s & blocking) return false;
        return done_of(s) == low(added_.load(std::memory_order_acquire));
    }

    /// Seen by the holder of `releasing` (which it ignores): waiters are
    /// listed, no finisher is busy, and the counter is zero.
    bool zero_with_waiters(std::uint64_t s) const {
        return (s & busy_mask) == 0 && (s & waiters_bit) && done_of(s) == low(added_.load(std::memory_order_acquire));
    }

    /// Any done() but the common one: a retried claim, or one that becomes busy.
    [[gnu::noinline]] void finish_slow(std::uint32_t n, const char* op, std::uint64_t s) {
        const std::uint32_t hint = hint_.load(std::memory_order_relaxed);
        for (;;) {
            const bool sure_positive = !at_least(done_of(s) + n, hint);
            const std::uint64_t claim = std::uint64_t(n) * done_one + (sure_positive ? 0 : busy_one);
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
        // Leave: drop busy (and take back a bad done); decide whether to release.
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
        waiter_list<Node> taken;
        for (;;) {
            {
                std::lock_guard g(lock_);
                if (zero_with_waiters(state_.load(std::memory_order_acquire))) {
                    std::uint64_t k = 0;
                    for (Node* w = waiters_.front(); w; w = w->next, ++k) link_woken(*w);
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
                if (Mutation != 1 && zero_with_waiters(s)) {
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
            if (!counted) returning_.fetch_add(releaser_one, std::memory_order_acq_rel);
        }
        // The group may be gone from here on; only the parked waiters' nodes are touched.
        while (Node* w = taken.pop_front()) w->wake();  // reads w->next before the wake
    }

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

    void link_woken(Node& w) noexcept {  // under lock_
        w.released = true;
        w.rprev = nullptr;
        w.rnext = woken_;
        if (woken_) woken_->rprev = &w;
        woken_ = &w;
    }
    void unlink_woken(Node& w) noexcept {  // under lock_
        if (w.rprev) w.rprev->rnext = w.rnext;
        else woken_ = w.rnext;
        if (w.rnext) w.rnext->rprev = w.rprev;
        w.rprev = w.rnext = nullptr;
    }

    alignas(cache_line) atomic<std::uint64_t> added_{0};
    // On added_'s line: releasers at work << 32 | released waiters not yet returned (MISUSE).
    atomic<std::uint64_t> returning_{0};
    alignas(cache_line) atomic<std::uint64_t> state_{0};
    atomic<std::uint32_t> hint_{0};
    Lock lock_;
    waiter_list<Node> waiters_;  // under lock_
    Node* woken_ = nullptr;      // under lock_: released, not yet returned
    bool destroying_ = false;    // under lock_: destroy() has run; `woken_` is dead
};

}  // namespace goro::detail
