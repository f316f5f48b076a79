// goro/spinlock.hpp — a small test-and-test-and-set lock for critical sections
// of a few dozen instructions (a registry shard, a run queue's overflow, a
// channel). It spins with the pause hint, then yields the thread, so a holder
// that was descheduled does not burn a core forever. It satisfies Lockable.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>

#include <goro/platform.hpp>

namespace goro::detail {

class spinlock {
public:
    void lock() noexcept {
        for (;;) {
            if (!locked_.exchange(true, std::memory_order_acquire)) return;
            int spins = 0;
            while (locked_.load(std::memory_order_relaxed)) {
                if (++spins < 64) cpu_relax();
                else std::this_thread::yield();
            }
        }
    }
    bool try_lock() noexcept {
        return !locked_.load(std::memory_order_relaxed) &&
               !locked_.exchange(true, std::memory_order_acquire);
    }
    void unlock() noexcept { locked_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> locked_{false};
};

/// A small number naming this thread for biased locks: even, never 0, never
/// reused (a thread that exits keeps its number).
inline std::uint32_t bias_thread_id() noexcept {
    static std::atomic<std::uint32_t> next{2};
    thread_local const std::uint32_t id = next.fetch_add(2, std::memory_order_relaxed);
    return id;
}

/// A spinlock that one thread can take without a locked instruction while it
/// is the only one taking it: a lock "biased" towards that thread, as in the
/// JVM's biased locking, made safe by the asymmetric fence (membarrier). A
/// channel used by two tasks that run on one worker (Go's runnext keeps a
/// ping-pong there) is locked and unlocked four times per round trip by one
/// thread: with the bias those are plain loads and stores.
///
/// STATES (`bias_`): 0, unbiased: everybody takes the inner spinlock.
///   `id` (even): biased to the thread with that id. It locks by raising
///   `busy_` and checking that the bias is still its own; nobody else enters
///   until the bias is revoked.
///   `id | 1`: being revoked. The revoker set it by a compare-and-swap, then
///   runs asym_fence_heavy() and waits until `busy_` is down. After the fence,
///   either the owner's `busy_ = 1` is visible (the revoker waits for its
///   unlock) or the owner's check that follows it sees the odd value (it backs
///   off to the slow path). So owner and revoker are never both inside. Then
///   the revoker sets 0.
/// BIASING: a holder of the inner lock that is the same thread for
///   `threshold_` acquisitions in a row (64 at first) makes the lock biased to
///   itself before it unlocks. Every revocation quadruples the threshold, so
///   a lock that two threads share keeps paying one fence now and then at
///   most, not one per acquisition. A thread that waited for the inner lock
///   checks the bias again once it has it: if someone else holds the bias, it
///   lets go and revokes.
/// LOCK-FREE WORDS: a structure may also have words that threads update
///   without the lock (a channel's ring positions). Bracket each such update
///   with enter_words() / leave_words(): the bias's owner then gets `true`
///   and may update them with plain stores, as under the lock, because every
///   other thread first revokes the bias. Another thread gets `false` (and
///   uses atomic read-modify-writes) after raising its own `active` flag and
///   seeing the lock unbiased. A thread that makes the lock biased runs the
///   heavy fence and waits until no other thread is active, so no update
///   that began before the bias is still under way when the owner starts
///   its plain stores. (The flags are per thread, not per lock: the waits
///   are for updates a few instructions long, and biasing is rare.)
/// Without membarrier (asym_fence_available() false) no lock is ever biased.
class biased_spinlock {
public:
    biased_spinlock() noexcept = default;
    /// The streak that first earns the bias, and the most it can grow to
    /// (tests make both small, to bias and revoke thousands of times).
    biased_spinlock(std::uint32_t first_threshold, std::uint32_t max_threshold) noexcept
        : max_threshold_(max_threshold), threshold_(first_threshold) {}

    void lock() noexcept {
        const std::uint32_t me = bias_thread_id();
        if (bias_.load(std::memory_order_relaxed) == me) {
            busy_.store(true, std::memory_order_relaxed);
            std::atomic_signal_fence(std::memory_order_seq_cst);  // the heavy fence of a revoker orders the rest
            if (bias_.load(std::memory_order_relaxed) == me) return;
            busy_.store(false, std::memory_order_release);
        }
        lock_slow(me);
    }

    void unlock() noexcept {
        // `busy_` is only ever raised by the bias's owner, so only it can see
        // its own store here: any other thread reads false.
        if ((bias_.load(std::memory_order_relaxed) & ~1u) == bias_thread_id() &&
            busy_.load(std::memory_order_relaxed)) {
            busy_.store(false, std::memory_order_release);
            return;
        }
        inner_.unlock();
    }

    /// The thread the lock is biased to (0: none), for tests.
    std::uint32_t bias_owner() const noexcept { return bias_.load(std::memory_order_acquire) & ~1u; }

    /// Called by the holder of the lock: whether the words may be updated
    /// with plain stores (this thread owns the bias; a revoker waits for the
    /// lock before it lets anyone else at them).
    bool held_plain() const noexcept { return (bias_.load(std::memory_order_relaxed) & ~1u) == bias_thread_id(); }

    /// A lock-free update of the words begins (lock not held). True: this
    /// thread owns the bias, plain stores are safe until leave_words(true).
    bool enter_words() noexcept {
        const std::uint32_t me = bias_thread_id();
        word_slot& slot = my_word_slot();
        unsigned spins = 0;
        for (;;) {
            std::uint32_t b = bias_.load(std::memory_order_relaxed);
            if (b == me) {
                busy_.store(true, std::memory_order_relaxed);
                std::atomic_signal_fence(std::memory_order_seq_cst);
                if (bias_.load(std::memory_order_relaxed) == me) return true;
                busy_.store(false, std::memory_order_release);
                continue;
            }
            slot.active.store(true, std::memory_order_relaxed);
            std::atomic_signal_fence(std::memory_order_seq_cst);  // a biasing thread's heavy fence orders the rest
            b = bias_.load(std::memory_order_acquire);
            if (b == 0) return false;
            slot.active.store(false, std::memory_order_release);
            if (b & 1) {
                while (bias_.load(std::memory_order_acquire) == b) backoff(spins);
            } else if (b != me) {
                revoke(b);
            }
        }
    }

    void leave_words(bool plain) noexcept {
        if (plain) busy_.store(false, std::memory_order_release);
        else my_word_slot().active.store(false, std::memory_order_release);
    }

private:

    [[gnu::noinline]] void lock_slow(std::uint32_t me) noexcept {
        for (;;) {
            std::uint32_t b = bias_.load(std::memory_order_acquire);
            if (b != 0 && b != me) {
                revoke(b);
                continue;
            }
            inner_.lock();
            b = bias_.load(std::memory_order_acquire);
            if (b != 0 && b != me) {  // biased by the holder we waited for
                inner_.unlock();
                continue;
            }
            if (b == 0) count_streak(me);
            return;
        }
    }

    /// Inner lock held, unbiased.
    void count_streak(std::uint32_t me) noexcept {
        if (last_ != me) {
            last_ = me;
            streak_ = 1;
            return;
        }
        if (++streak_ < threshold_) return;
        streak_ = 0;
        static const bool fence_ok = asym_fence_available();
        if (!fence_ok) return;
        bias_.store(me, std::memory_order_seq_cst);
        asym_fence_heavy();
        // Every lock-free update that saw the lock unbiased ends before ours begin.
        word_slot& mine = my_word_slot();
        unsigned spins = 0;
        for (word_slot* w = word_slots().load(std::memory_order_acquire); w; w = w->next)
            if (w != &mine)
                while (w->active.load(std::memory_order_acquire)) backoff(spins);
    }

    /// One per thread that ever updated a biased structure's words without
    /// its lock; never freed (a biasing thread may read it after the thread ends).
    struct alignas(cache_line) word_slot {
        std::atomic<bool> active{false};
        word_slot* next = nullptr;
    };

    static std::atomic<word_slot*>& word_slots() noexcept {
        static std::atomic<word_slot*> head{nullptr};
        return head;
    }

    static word_slot& my_word_slot() noexcept {
        static thread_local word_slot* mine = nullptr;
        if (word_slot* w = mine) return *w;
        auto* w = new word_slot();
        word_slot* h = word_slots().load(std::memory_order_relaxed);
        do w->next = h;
        while (!word_slots().compare_exchange_weak(h, w, std::memory_order_release, std::memory_order_relaxed));
        mine = w;
        return *w;
    }

    void revoke(std::uint32_t b) noexcept {
        unsigned spins = 0;
        if (!(b & 1)) {
            if (!bias_.compare_exchange_strong(b, b | 1, std::memory_order_seq_cst, std::memory_order_acquire))
                return;  // changed meanwhile: look again
            asym_fence_heavy();
            while (busy_.load(std::memory_order_acquire)) backoff(spins);  // the owner is inside
            inner_.lock();
            threshold_ = std::min(threshold_ * 4, max_threshold_);
            last_ = 0;
            streak_ = 0;
            bias_.store(0, std::memory_order_release);
            inner_.unlock();
            return;
        }
        while (bias_.load(std::memory_order_acquire) == b) backoff(spins);  // another revoker's
    }

    static void backoff(unsigned& spins) noexcept {
        if (++spins < 64) cpu_relax();
        else std::this_thread::yield();  // the owner was descheduled inside
    }

    std::atomic<std::uint32_t> bias_{0};
    std::atomic<bool> busy_{false};
    spinlock inner_;
    std::uint32_t max_threshold_ = 1u << 26;
    // Under inner_:
    std::uint32_t last_ = 0;
    std::uint32_t streak_ = 0;
    std::uint32_t threshold_ = 64;
};

}  // namespace goro::detail
