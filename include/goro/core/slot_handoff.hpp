// goro/core/slot_handoff.hpp — a worker's private task slots, which its owner
// empties without a locked instruction and a rare thief can still steal from.
//
// Each worker has a `run_next` slot (the task it just woke) and a few
// `claimed` slots (tasks it popped from its queue in one batch and has not
// run yet). The owner is the only thread that fills a slot; the owner takes
// its tasks out one at a time, and a thief, when the owner is starving (its
// task has run for a whole monitor tick), takes all of them. Every task put
// in a slot is taken out exactly once, by the owner or by a thief.
//
// THE PROTOCOL (x86-TSO reasoning; `fenced` = the asymmetric fence exists)
//   owner take:  in_pop = 1 (plain store); light fence (compiler barrier);
//                if steal_req == 0 { t = slot; slot = null (plain store); in_pop = 0 }
//                else { in_pop = 0; t = exchange(slot, null) }
//   thief steal: ++steal_req (locked RMW: visible before the next step);
//                heavy fence (membarrier); wait while in_pop;
//                exchange every slot with null; --steal_req
//   The owner's light fence only keeps the compiler from moving its loads
//   above `in_pop = 1`; the CPU may still hold that store in its store
//   buffer while the owner reads steal_req (store-load reordering). The
//   thief's heavy fence makes every other core execute a full fence at some
//   point P of its program: the owner's stores before P are then visible to
//   the thief, and the owner's loads after P see the thief's increment,
//   which was visible before the fence began. So, for one take:
//     P before the owner reads steal_req: the owner sees the request and
//       takes with an exchange, which a thief's exchange cannot double.
//     P after it: `in_pop = 1` is visible to the thief, which waits for
//       `in_pop = 0`; the owner stores that after `slot = null`, and stores
//       become visible in program order, so the thief's exchange finds the
//       slot empty (or holding a newer task the owner put there since).
//   Hence the owner reads the slot only after it has announced itself and
//   read steal_req. A slot read before `in_pop = 1` leaves room for a
//   thief's whole steal (increment, fence, in_pop still 0, exchange,
//   decrement) before the owner's check, which then sees no request and
//   runs the stolen task a second time. tests/test_slot_handoff.cpp checks
//   this protocol, and that ordering's failure, in a model of x86-TSO.
//   Unfenced (no membarrier): the owner always takes with an exchange, and
//   the thief skips the handshake.
//
// FILLING: the owner stores into an empty slot with a plain store. A thief
//   only ever exchanges a non-null task out, never puts one in, so a slot the
//   owner saw empty stays empty until the owner fills it. The claimed slots
//   are filled only when all of them have been looked at (has_claimed() false).
//
// The atomics and the two fences come from `Policy` (machine_policy here; a
// test instantiates the protocol with model atomics at a tiny size). The
// member functions are not noexcept: the model checker unwinds a stuck thread
// through them. With std::atomic nothing throws.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

#include <goro/core/platform.hpp>

namespace goro::detail {

template <class T, std::uint32_t Claimed, class Policy = machine_policy>
class slot_handoff {
public:
    template <class U>
    using atomic = typename Policy::template atomic<U>;
    static constexpr std::uint32_t claim_max = Claimed;
    static_assert(Claimed >= 1, "at least one claimed slot");

    // --- owner only ----------------------------------------------------------

    /// Puts `t` in run_next if it is empty (a plain store); false if full.
    [[gnu::always_inline]] bool offer_next(T* t) {
        if (next_.load(std::memory_order_relaxed)) return false;
        next_.store(t, std::memory_order_release);
        return true;
    }
    /// Puts `t` (or null) in run_next, returning what was there.
    T* swap_next(T* t) { return next_.exchange(t, std::memory_order_acq_rel); }

    /// Empties run_next, returning what it held (null: empty or stolen).
    [[gnu::always_inline]] T* take_next(bool fenced) { return take(next_, fenced); }

    /// The next claimed task that no thief took; null when none is left.
    [[gnu::always_inline]] T* take_claimed(bool fenced) {
        while (claimed_next_ != claimed_end_)
            if (T* t = take(claimed_[claimed_next_++], fenced)) return t;
        return nullptr;
    }
    /// Some claimed slot has not been looked at yet (a moment's view of the owner's own).
    bool has_claimed() const noexcept { return claimed_next_ != claimed_end_; }

    /// The claimed slots, to fill (with relaxed stores) when has_claimed() is
    /// false; then say how many were filled with claimed_filled().
    atomic<T*>* claim_slots() noexcept { return claimed_; }
    void claimed_filled(std::uint32_t n) noexcept {
        claimed_next_ = 0;
        claimed_end_ = n;
    }

    // --- anyone (a moment's view) ---------------------------------------------

    T* peek_next() const { return next_.load(std::memory_order_acquire); }
    bool any_claimed() const {
        for (auto& c : claimed_)
            if (c.load(std::memory_order_relaxed)) return true;
        return false;
    }
    bool any() const { return next_.load(std::memory_order_relaxed) != nullptr || any_claimed(); }

    // --- a thief -----------------------------------------------------------------

    /// Takes every task in the slots into `out` (room for 1 + Claimed);
    /// returns how many.
    std::uint32_t steal(T** out, bool fenced) {
        if (!any()) return 0;
        if (fenced) {
            steal_req_.fetch_add(1, std::memory_order_seq_cst);
            Policy::fence_heavy();
            for (int spins = 0; in_pop_.load(std::memory_order_acquire);) Policy::spin(spins);
        }
        std::uint32_t n = 0;
        if (next_.load(std::memory_order_relaxed))
            if (T* t = next_.exchange(nullptr, std::memory_order_acq_rel)) out[n++] = t;
        for (auto& c : claimed_)
            if (c.load(std::memory_order_relaxed))
                if (T* t = c.exchange(nullptr, std::memory_order_acq_rel)) out[n++] = t;
        if (fenced) steal_req_.fetch_sub(1, std::memory_order_release);
        return n;
    }

private:
    /// The owner's take (THE PROTOCOL above).
    [[gnu::always_inline]] T* take(atomic<T*>& slot, bool fenced) {
        // An early look without announcing: only the owner fills a slot, so
        // an empty one stays empty; a full one must be read again below.
        if (!slot.load(std::memory_order_relaxed)) return nullptr;
        if (fenced) {
            in_pop_.store(true, std::memory_order_relaxed);
            Policy::fence_light();
            if (steal_req_.load(std::memory_order_acquire) == 0) {
                T* t = slot.load(std::memory_order_acquire);
                slot.store(nullptr, std::memory_order_relaxed);
                in_pop_.store(false, std::memory_order_release);
                return t;
            }
            in_pop_.store(false, std::memory_order_release);
        }
        return slot.exchange(nullptr, std::memory_order_acq_rel);
    }

    atomic<T*> next_{nullptr};
    atomic<bool> in_pop_{false};   // the owner is taking a task out (owner writes)
    atomic<int> steal_req_{0};     // thieves in their handshake
    atomic<T*> claimed_[Claimed]{};
    std::uint32_t claimed_next_ = 0, claimed_end_ = 0;  // owner only: the claimed slots still to look at
};

}  // namespace goro::detail
