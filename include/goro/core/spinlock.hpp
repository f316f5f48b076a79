// goro/core/spinlock.hpp — a small test-and-test-and-set lock for critical sections
// of a few dozen instructions (a registry shard, a run queue's overflow, a
// channel). It spins with the pause hint, then yields the thread, so a holder
// that was descheduled does not burn a core forever. It satisfies Lockable.
#pragma once

#include <atomic>
#include <cstdint>

#include <goro/core/lock_rank.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/thread_slot.hpp>

namespace goro::detail {

/// The atomics and the wait come from `Policy` (machine_policy in
/// platform.hpp); tests/test_spinlock.cpp runs the biased lock below, and this
/// one inside it, with the model checker's. Not noexcept: the model checker
/// unwinds a stuck thread through them (std::atomic never throws).
template <class Policy = machine_policy>
class basic_spinlock {
public:
    void lock() {
        for (;;) {
            if (!locked_.exchange(true, std::memory_order_acquire)) return;
            int spins = 0;
            while (locked_.load(std::memory_order_relaxed)) Policy::spin(spins);
        }
    }
    bool try_lock() {
        return !locked_.load(std::memory_order_relaxed) &&
               !locked_.exchange(true, std::memory_order_acquire);
    }
    void unlock() { locked_.store(false, std::memory_order_release); }

private:
    typename Policy::template atomic<bool> locked_{false};
};

using spinlock = basic_spinlock<>;

/// What a thread publishes for the biased locks (below), in its own cache
/// line: which biased locks it is inside by the fast path, and whether it is
/// updating a biased structure's lock-free words without the bias. Only its
/// thread writes it (plain stores); revokers and biasing threads read it.
/// One per thread (thread_slots<bias_slot>): never freed, since another
/// thread may read it after its thread has ended.
template <class Policy = machine_policy>
struct alignas(cache_line) basic_bias_slot {
    template <class U>
    using atomic = typename Policy::template atomic<U>;
    static constexpr int depth = 7;           // biased locks held at once by the fast path
    atomic<const void*> inside[depth] = {};   // the locks; null: a free entry
    atomic<bool> active{false};               // an unbiased lock-free update is under way
    basic_bias_slot* next = nullptr;          // thread_slots' list

    /// Records `lock` in a free entry: its index, or -1 when all are taken.
    [[gnu::always_inline]] int enter(const void* lock) {
        for (int i = 0; i < depth; ++i)
            if (!inside[i].load(std::memory_order_relaxed)) {
                inside[i].store(lock, std::memory_order_relaxed);
                return i;
            }
        return -1;
    }
    /// Removes `lock`; false if it was not recorded.
    [[gnu::always_inline]] bool leave(const void* lock) {
        for (int i = 0; i < depth; ++i)
            if (inside[i].load(std::memory_order_relaxed) == lock) {
                inside[i].store(nullptr, std::memory_order_release);
                return true;
            }
        return false;
    }
    /// Read by another thread: whether `lock` is recorded.
    bool holds(const void* lock) const {
        for (int i = 0; i < depth; ++i)
            if (inside[i].load(std::memory_order_acquire) == lock) return true;
        return false;
    }
};

using bias_slot = basic_bias_slot<>;

/// The biased lock's policy on the real machine: machine_policy, plus where
/// each thread's bias_slot is (thread_slots: made on first use, never freed)
/// and whether the heavy fence exists here. The model's is in test_spinlock.cpp.
struct machine_bias_policy : machine_policy {
    using slot = bias_slot;
    [[gnu::always_inline]] static slot& mine() noexcept { return thread_slots<bias_slot>::mine(); }
    static slot* first() noexcept { return thread_slots<bias_slot>::first(); }
    static bool heavy_fence_available() noexcept {
        static const bool ok = asym_fence_available();
        return ok;
    }
};

[[gnu::always_inline]] inline bias_slot& my_bias_slot() noexcept { return machine_bias_policy::mine(); }

/// This thread's name in a biased lock: the address of its bias_slot.
inline std::uintptr_t bias_thread_id() noexcept { return reinterpret_cast<std::uintptr_t>(&my_bias_slot()); }

/// A spinlock that one thread can take without a locked instruction while it
/// is the only one taking it: a lock "biased" towards that thread, as in the
/// JVM's biased locking, made safe by the asymmetric fence (membarrier). A
/// channel used by two tasks that run on one worker (Go's runnext keeps a
/// ping-pong there) is locked and unlocked four times per round trip by one
/// thread: with the bias those are plain loads and stores.
///
/// STATES (`bias_`): 0, unbiased: everybody takes the inner spinlock.
///   the owner's bias_slot address: biased to that thread. It locks by
///   recording the lock in its slot and checking that the bias is still its
///   own; nobody else enters until the bias is revoked. (The record is in the
///   owner's own memory: a thread that read a bias that is no longer its own
///   and records itself meanwhile disturbs no one.)
///   that address | 1: being revoked. The revoker set it by a compare-and-swap,
///   then runs asym_fence_heavy() and waits until the owner's slot no longer
///   records the lock. After the fence, either the owner's record is visible
///   (the revoker waits for its unlock) or the owner's check that follows it
///   sees the odd value (it backs off to the slow path). So owner and revoker
///   are never both inside. The revoker then takes the inner lock (an owner
///   that holds it, see below, finishes first) and sets 0.
/// BIASING: a holder of the inner lock that is the same thread for
///   `threshold_` acquisitions in a row (64 at first) makes the lock biased to
///   itself before it unlocks. Every revocation quadruples the threshold, so
///   a lock that two threads share keeps paying one fence now and then at
///   most, not one per acquisition. A thread that waited for the inner lock
///   checks the bias again once it has it: if someone else holds the bias, it
///   lets go and revokes. (The owner itself takes the inner lock when its
///   slot is full: more than bias_slot::depth biased locks at once.)
/// LOCK-FREE WORDS: a structure may also have words that threads update
///   without the lock (a channel's ring positions). Bracket each such update
///   with enter_words() / leave_words(): the bias's owner then gets its
///   slot's entry (>= 0) and may update them with plain stores, as under the
///   lock, because every other thread first revokes the bias. Another thread
///   gets -1 (and uses atomic read-modify-writes) after raising its slot's
///   `active` flag and seeing the lock unbiased. A thread that makes the lock biased runs
///   the heavy fence and waits until no other thread is active, so no update
///   that began before the bias is still under way when the owner starts its
///   plain stores. (The waits are for updates a few instructions long, and
///   biasing is rare.)
/// Without membarrier (asym_fence_available() false) no lock is ever biased.
template <class Policy = machine_bias_policy>
class basic_biased_spinlock {
    using slot = typename Policy::slot;

public:
    basic_biased_spinlock() noexcept = default;
    /// The streak that first earns the bias, and the most it can grow to
    /// (tests make both small, to bias and revoke thousands of times).
    basic_biased_spinlock(std::uint32_t first_threshold, std::uint32_t max_threshold) noexcept
        : max_threshold_(max_threshold), threshold_(first_threshold) {}

    [[gnu::always_inline]] void lock() {
        slot& me = Policy::mine();
        const std::uintptr_t id = reinterpret_cast<std::uintptr_t>(&me);
        if (enter_as_owner(me, id) < 0) lock_slow(id);
    }

    [[gnu::always_inline]] void unlock() {
        // Only this thread records itself in its slot: if it did, it holds
        // the lock by the fast path.
        slot& me = Policy::mine();
        if ((bias_.load(std::memory_order_relaxed) & ~std::uintptr_t(1)) == reinterpret_cast<std::uintptr_t>(&me) &&
            me.leave(this))
            return;
        inner_.unlock();
    }

    /// The thread the lock is biased to (its bias_thread_id(); 0: none), for tests.
    std::uintptr_t bias_owner() const { return bias_.load(std::memory_order_acquire) & ~std::uintptr_t(1); }

    /// Called by the holder of the lock: whether the words may be updated
    /// with plain stores (this thread owns the bias; a revoker waits for the
    /// lock before it lets anyone else at them).
    bool held_plain() const {
        return (bias_.load(std::memory_order_relaxed) & ~std::uintptr_t(1)) == reinterpret_cast<std::uintptr_t>(&Policy::mine());
    }

    /// A lock-free update of the words begins (lock not held). At least 0:
    /// this thread owns the bias, plain stores are safe until
    /// leave_words(that value); -1: update them atomically, then leave_words(-1).
    [[gnu::always_inline]] int enter_words() {
        slot& me = Policy::mine();
        const std::uintptr_t id = reinterpret_cast<std::uintptr_t>(&me);
        const int i = enter_as_owner(me, id);
        return i >= 0 ? i : enter_words_slow(me, id);
    }

    [[gnu::always_inline]] void leave_words(int entry) {
        slot& me = Policy::mine();
        if (entry >= 0) me.inside[entry].store(nullptr, std::memory_order_release);
        else me.active.store(false, std::memory_order_release);
    }

private:
    /// The owner's way in: records this lock in its slot, then checks that the
    /// bias is still its own. The entry used, or -1 (not the owner, the bias
    /// was just lost, or the slot is full).
    [[gnu::always_inline]] int enter_as_owner(slot& me, std::uintptr_t id) {
        if (bias_.load(std::memory_order_relaxed) != id) return -1;
        const int i = me.enter(this);
        if (i < 0) return -1;
        Policy::fence_light();  // a revoker's heavy fence orders the rest
        if (bias_.load(std::memory_order_relaxed) == id) return i;
        me.inside[i].store(nullptr, std::memory_order_release);
        return -1;
    }

    [[gnu::noinline]] int enter_words_slow(slot& me, std::uintptr_t id) {
        int spins = 0;
        for (;;) {
            std::uintptr_t b = bias_.load(std::memory_order_relaxed);
            if (b == id) {
                const int i = enter_as_owner(me, id);
                if (i >= 0) return i;
                // Lost the bias meanwhile (look again), or no free entry
                // (many biased locks held): then unbias this one.
                if (bias_.load(std::memory_order_relaxed) == id) revoke(id);
                continue;
            }
            me.active.store(true, std::memory_order_relaxed);
            Policy::fence_light();  // a biasing thread's heavy fence orders the rest
            b = bias_.load(std::memory_order_acquire);
            if (b == 0) return -1;
            me.active.store(false, std::memory_order_release);
            if (b & 1) {
                while (bias_.load(std::memory_order_acquire) == b) Policy::spin(spins);
            } else if (b != id) {
                revoke(b);
            }
        }
    }

    [[gnu::noinline]] void lock_slow(std::uintptr_t id) {
        for (;;) {
            std::uintptr_t b = bias_.load(std::memory_order_acquire);
            if (b != 0 && b != id) {
                revoke(b);
                continue;
            }
            inner_.lock();
            b = bias_.load(std::memory_order_acquire);
            if (b != 0 && b != id) {  // biased by the holder we waited for
                inner_.unlock();
                continue;
            }
            if (b == 0) count_streak(id);
            return;
        }
    }

    /// Inner lock held, unbiased.
    void count_streak(std::uintptr_t id) {
        if (last_ != id) {
            last_ = id;
            streak_ = 1;
            return;
        }
        if (++streak_ < threshold_) return;
        streak_ = 0;
        if (!Policy::heavy_fence_available()) return;
        bias_.store(id, std::memory_order_seq_cst);
        Policy::fence_heavy();
        // Every lock-free update that saw the lock unbiased ends before ours begin.
        const slot* mine = reinterpret_cast<const slot*>(id);
        int spins = 0;
        for (slot* w = Policy::first(); w; w = w->next)
            if (w != mine)
                while (w->active.load(std::memory_order_acquire)) Policy::spin(spins);
    }

    /// `b`: the bias seen, owned by another thread (even) or being revoked (odd).
    void revoke(std::uintptr_t b) {
        int spins = 0;  // waits for an owner descheduled inside, or another revoker
        if (!(b & 1)) {
            if (!bias_.compare_exchange_strong(b, b | 1, std::memory_order_seq_cst, std::memory_order_acquire))
                return;  // changed meanwhile: look again
            Policy::fence_heavy();
            const slot* owner = reinterpret_cast<const slot*>(b);
            while (owner->holds(this)) Policy::spin(spins);  // the owner is inside
            inner_.lock();
            threshold_ = std::min(threshold_ * 4, max_threshold_);
            last_ = 0;
            streak_ = 0;
            bias_.store(0, std::memory_order_release);
            inner_.unlock();
            return;
        }
        while (bias_.load(std::memory_order_acquire) == b) Policy::spin(spins);  // another revoker's
    }

    typename Policy::template atomic<std::uintptr_t> bias_{0};
    basic_spinlock<Policy> inner_;
    std::uint32_t max_threshold_ = 1u << 26;
    // Under inner_:
    std::uintptr_t last_ = 0;
    std::uint32_t streak_ = 0;
    std::uint32_t threshold_ = 64;
};

using biased_spinlock = basic_biased_spinlock<>;

}  // namespace goro::detail
