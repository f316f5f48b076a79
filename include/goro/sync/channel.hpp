// goro/sync/channel.hpp — `goro::channel<T>`: Go's channels, for goro tasks.
//
//   goro::channel<int> ch;        // unbuffered, like make(chan int)
//   goro::channel<int> jobs(64);  // buffered: a ring of 64 slots
//   goro::channel<int> nil{nullptr};  // Go's nil channel (so is a reset or moved-from handle)
//
//   co_await ch.send(v);                      // ch <- v   (throws goro::channel_closed when closed)
//   while (auto v = co_await ch.recv()) ...   // for v := range ch
//   ch.try_send(v), ch.try_recv()             // never block; say why not
//   ch.close();                               // wakes every parked receiver and sender
//
// A handle is a counted reference: copies refer to the same channel, and the
// state lives until the last handle goes. Its operations are const (they
// change the channel, not the handle), as Go's on a channel value. The state is one allocation (the
// header followed by the ring); an operation allocates nothing: a task that
// parks links a waiter node that lives in its awaiter, inside its own frame.
//
// ALGORITHM (after Go's runtime/chan.go, with a lock-free ring in front)
//   Every channel has one spinlock and two queues of parked waiters (recvq,
//   sendq), as in chan.go. A buffered channel's ring is a bounded MPMC queue
//   after Dmitry Vyukov's: each slot carries a sequence number, and a sender
//   (receiver) claims a position by a compare-and-swap of the enqueue
//   (dequeue) word, then writes (moves out) the value and publishes the slot's
//   next sequence number. While nobody is parked, a buffered send or receive
//   is that and nothing more: no lock. Everything else takes the lock:
//   unbuffered channels (hand-off only), a full or empty ring, and every
//   operation while some task is parked on the channel, so that a parked
//   waiter is served in FIFO order by the lock holders (Go's algorithm: a
//   receiver first takes from a parked sender, unbuffered: its value directly,
//   buffered: through the ring, refilling it from parked senders; a sender
//   hands its value directly to a parked receiver, else appends to the ring,
//   else parks). close() wakes every waiter: parked receivers get "closed"
//   (nullopt) once the ring is drained, parked senders get channel_closed.
//
//   The two position words (each on its own cache line):
//
//     enq = position << 3 | send_wait | recv_wait | closed     (senders CAS it)
//     deq = position << 1 | send_wait                          (receivers CAS it)
//
//   A lock-free send CASes `enq` only from a value with all three flags clear,
//   a lock-free receive CASes `deq` only from a value without send_wait; an
//   operation holding the lock CASes the position and keeps the flags. The
//   flags change only under the lock (fetch_or / fetch_and): so once a flag is
//   set, no lock-free operation of that side can start, and every one that
//   started before is visible in the word (single-variable coherence).
//   ring slot i:  seq == 2p      free for the send at position p (i = p mod cap)
//                 seq == 2p + 1  holds the value sent at position p
//                 (the receive at p stores 2(p + cap): free for the send at
//                 p + cap; doubled so that "holds p" and "free for p + 1"
//                 differ even when cap is 1)
//   A position claimed but not yet published (or moved out) is "in flight":
//   only a lock holder ever waits for one, by spinning; the claimer needs no
//   lock to finish, so the wait is a few instructions long.
//
// THE PARKING HANDSHAKE (no lost wake-up between the lock-free paths and a
// task about to park). Under the lock, a task that found nothing to do:
//   * receiver: sets recv_wait in `enq`, then looks at the ring again. A
//     lock-free send either claimed its position before the flag (the second
//     look sees the position, waits until it is published and takes it) or
//     fails its CAS on the changed word and takes the lock, where it finds
//     the parked receiver and hands the value over directly.
//   * sender (buffered): sets send_wait in `deq` and in `enq`, then looks
//     again. A lock-free receive either claimed before the flag (the second
//     look sees the freed slot) or fails its CAS and takes the lock, where
//     recv_locked moves parked senders' values into the slots it frees.
//     The flag in `enq` keeps lock-free senders out while senders are parked,
//     so a slot freed under the lock cannot be taken from under the waiter
//     being moved into it (a select's waiter, once claimed, must be served),
//     and parked senders keep their FIFO turn.
//   A select registering its waiters does the same for each buffered case's
//   channel, all under its locks, then polls every case again.
//   The flags are cleared (sync_wait_flags) by the lock holder that leaves a
//   queue empty, before it unlocks.
//
// INVARIANTS (under the lock)
//   * At least one of recvq and sendq is empty (of live waiters).
//   * sendq non-empty  => the ring is full (or the channel is unbuffered), and
//                         send_wait is set in both words.
//   * recvq non-empty  => the ring is empty, and recv_wait is set in `enq`.
//   * closed           => sendq is empty; `enq` is never advanced again, so
//                         every send that returned normally is in the ring
//                         and will be received exactly once. (`closed` and
//                         enq_closed are set together, by close(): the bool
//                         for lock holders, the flag for the lock-free paths.)
//   * A waiter in a queue belongs to a parked task, or to a select whose
//     state may already be claimed by another waker: pop() claims a select's
//     waiter by a compare-and-swap on its select_core and skips (unlinks) the
//     waiters of selects that were already claimed; the select removes its
//     remaining waiters itself, under the same locks, after it wakes. (Such a
//     stale waiter may keep a flag set a little longer: harmless, it only
//     sends operations to the lock.)
//
// WHICH THREAD DOES WHAT
//   The task that parks fills its waiter, links it under the lock, unlocks,
//   and then never touches its awaiter again (see the PARKING PROTOCOL in
//   scheduler.hpp). The waker unlinks the waiter, moves the value, sets
//   `success`, all under the lock; it calls detail::ready() only after
//   unlocking (one lock holder may wake several: a receive that refills the
//   ring from parked senders). A woken task reads what the waker wrote:
//   ready() and the scheduler's queues order the two. A ring slot's value is
//   handed between a sender and a receiver by the slot's sequence number
//   (release store, acquire load).
//
// LOCK ORDER (checked in debug builds, see core/lock_rank.hpp): channel locks
// in increasing address order (select), then the timer heap's mutex. Nothing
// else is taken under a channel lock; nothing is woken under one.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include <goro/core/backoff.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/lock_rank.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/spinlock.hpp>

namespace goro {

/// Thrown by a send on a closed channel (Go panics), by a sender parked when
/// the channel closes, and by closing a channel twice.
class channel_closed : public error {
public:
    using error::error;
};

/// Why try_send did or did not send.
enum class send_status : unsigned char {
    sent,    ///< handed to a receiver or buffered
    full,    ///< no receiver waits and the buffer is full (always so for a nil channel)
    closed,  ///< the channel is closed; the value was not taken
};

/// Why try_recv did or did not receive.
enum class recv_status : unsigned char {
    received,  ///< `value` holds what was received
    empty,     ///< nothing to receive now (always so for a nil channel)
    closed,    ///< closed and drained: nothing will ever come
};

GORO_DECL const char* to_string(send_status s) noexcept;

GORO_DECL const char* to_string(recv_status s) noexcept;

/// The result of try_recv: a status and, when received, the value.
template <class T>
struct try_recv_result {
    recv_status status = recv_status::empty;
    std::optional<T> value{};
    explicit operator bool() const noexcept { return status == recv_status::received; }
};

namespace detail {

/// The shared state of one blocking select: whoever flips `claimed` first
/// (a channel waker under its channel's lock, or the select's timer) owns the
/// wake-up, records the winning case and readies the task.
struct select_core {
    std::atomic<bool> claimed{false};
    int winner = -1;              // written by the claimer before it readies the task
    task_header* task = nullptr;  // immutable while parked

    bool try_claim(int case_index) noexcept;
};

/// A parked sender or receiver (Go's sudog). Lives in an awaiter, in the
/// parked task's frame; every field is under the channel's lock while linked.
/// 40 bytes: a parked task's frame holds one, so the task's own header and a
/// select's core share a word (a select's waiters find the task in the core).
struct chan_waiter {
    chan_waiter* next = nullptr;
    chan_waiter* prev = nullptr;
    void* elem = nullptr;          // receiver: its std::optional<T>; sender: its T
    union {
        task_header* task_ = nullptr;  // a plain send or receive: the parked task
        select_core* sel_;             // one case of a select
    };
    int case_index = 0;
    bool in_select = false;
    bool linked = false;
    bool success = false;          // true: a value moved; false: woken by close

    chan_waiter() = default;
    // An awaiter may be moved before it suspends; a linked node never is.
    chan_waiter(const chan_waiter&) noexcept {}
    chan_waiter& operator=(const chan_waiter&) = delete;

    void set_task(task_header* t) noexcept {
        task_ = t;
        in_select = false;
    }
    void set_select(select_core* c, int index) noexcept {
        sel_ = c;
        case_index = index;
        in_select = true;
    }
    task_header* task() const noexcept { return in_select ? sel_->task : task_; }
};

/// FIFO of parked waiters, intrusive: no allocation. Changed only under the
/// channel's lock; `first_` is atomic so that a select's lock-free poll may
/// glance at whether anyone waits (a hint: the lock holder decides).
class waitq {
public:
    bool empty() const noexcept { return first_.load(std::memory_order_relaxed) == nullptr; }

    void push(chan_waiter* w) noexcept;

    /// The first waiter that can still be woken: a plain one, or a select's
    /// whose state this call claims. Waiters of already claimed selects are
    /// unlinked and skipped (their select will not look for them).
    chan_waiter* pop() noexcept;

    /// Lock held, about to pop the first waiter: fetches, for writing, where
    /// the waiter `ahead` places back lies if the waiters lie at a constant
    /// stride, as the first two do. Waiters live in their tasks' frames and
    /// the queue is a chain, so popping many in a row (a close) waits for one
    /// miss per waiter, each found only once the one before it is in; but
    /// tasks that parked in a row (spawned in a loop, say) often have frames
    /// one after another. A wrong guess costs a useless prefetch (a prefetch
    /// never faults), and the second line covers a select's state, just
    /// after the waiter in its frame.
    void prefetch_stride(std::uintptr_t ahead) const noexcept;

    /// Unlinks `w` if it is still linked (a select cleaning up after itself).
    void remove(chan_waiter* w) noexcept {
        if (w->linked) unlink(w);
    }

private:
    void unlink(chan_waiter* w) noexcept;

    std::atomic<chan_waiter*> first_{nullptr};
    chan_waiter* last_ = nullptr;
};

/// Waiters a lock holder took out of a queue, to be readied once it has
/// unlocked (linked through `next`, which a dequeued waiter no longer uses).
class wake_list {
public:
    void add(chan_waiter* w) noexcept {
        w->next = nullptr;
        if (last_) last_->next = w;
        else first_ = w;
        last_ = w;
    }
    bool empty() const noexcept { return first_ == nullptr; }

    /// No lock held. Each task is readied once; `next` is read first: once
    /// readied, the task may free its waiter. One waiter (a hand-off) goes
    /// through ready(), which runs it next on this worker; many (a close)
    /// go to the queues in batches, waking idle workers once a batch.
    void ready_all() noexcept;

private:
    [[gnu::noinline]] static void ready_many(chan_waiter* w) noexcept {
        task_header* batch[64];
        std::size_t n = 0;
        while (w) {
            chan_waiter* next = w->next;
            batch[n++] = w->task();
            if (n == 64) {
                ready_n(batch, n);
                n = 0;
            }
            w = next;
        }
        ready_n(batch, n);
    }

private:
    chan_waiter* first_ = nullptr;
    chan_waiter* last_ = nullptr;
};

/// What a lock-free attempt found (see chan_state::send_fast / recv_fast).
enum class fast_result : unsigned char {
    done,       ///< sent / received
    done_contended,  ///< done, after losing a position to another core (see CONTENTION)
    closed,     ///< send: the channel is closed; receive: closed and drained
    not_ready,  ///< a moment's view: would block (full / empty, nobody parked)
    locked,     ///< cannot tell without the lock (waiters, a position in flight, unbuffered)
};

/// What every channel has, whatever its element type: select sorts and locks
/// channels through this. Three cache lines: the lock, the queues and what
/// never changes; the senders' word; the receivers' word. (No alignas: a context embeds a channel; create() aligns
/// the buffered ones, where the padding matters.)
struct chan_base {
    // `enq`: position << 3 | enq_send_wait | enq_recv_wait | enq_closed
    static constexpr std::uint64_t enq_closed = 1;
    static constexpr std::uint64_t enq_recv_wait = 2;
    static constexpr std::uint64_t enq_send_wait = 4;
    static constexpr std::uint64_t enq_flags = 7;
    static constexpr unsigned enq_shift = 3;
    // `deq`: position << 1 | deq_send_wait
    static constexpr std::uint64_t deq_send_wait = 1;
    static constexpr unsigned deq_shift = 1;

    // Line 0: what an unbuffered channel's operations touch, all of it (one
    // line moves between cores per hand-off); for a buffered one, read-only
    // while nobody parks.
    std::atomic<std::size_t> refs{1};
    std::size_t cap = 0;   // immutable
    std::size_t mask = 0;  // immutable: cap - 1 when cap is a power of two
    waitq recvq;
    waitq sendq;
    ranked_lock<biased_spinlock, lock_rank::channel> lock;  // see spinlock.hpp: free of locked instructions while one thread uses the channel
    bool pow2 = false;     // immutable
    bool closed = false;   // under lock; also enq_closed in `enq`, for the lock-free paths
    char pad0_[cache_line - (3 * sizeof(std::size_t) + 2 * sizeof(waitq) + sizeof(biased_spinlock) + 2) % cache_line];
    // Line 1: the senders' word. Line 2: the receivers' word.
    std::atomic<std::uint64_t> enq{0};
    char pad1_[cache_line - sizeof(std::atomic<std::uint64_t>)];
    std::atomic<std::uint64_t> deq{0};
    char pad2_[cache_line - sizeof(std::atomic<std::uint64_t>)];

    explicit chan_base(std::size_t capacity) noexcept
        : cap(capacity), mask(capacity ? capacity - 1 : 0), pow2(capacity && (capacity & (capacity - 1)) == 0) {}

    /// Ring index of position p.
    std::size_t index(std::uint64_t p) const noexcept { return pow2 ? std::size_t(p & mask) : std::size_t(p % cap); }

    bool is_closed() const noexcept { return (enq.load(std::memory_order_acquire) & enq_closed) != 0; }

    // --- updating `enq` and `deq` ------------------------------------------
    // `plain`: this thread owns the lock's bias (see biased_spinlock's
    // LOCK-FREE WORDS), so nobody else writes the words: a load and a store
    // do what a locked read-modify-write does for everybody else.

    static bool cas_word(std::atomic<std::uint64_t>& w, std::uint64_t& expected, std::uint64_t desired,
                         bool plain) noexcept {
        if (!plain) return w.compare_exchange_weak(expected, desired, std::memory_order_acq_rel, std::memory_order_relaxed);
        const std::uint64_t now = w.load(std::memory_order_relaxed);
        if (now != expected) {
            expected = now;
            return false;
        }
        w.store(desired, std::memory_order_release);
        return true;
    }
    static void or_word(std::atomic<std::uint64_t>& w, std::uint64_t bits, bool plain) noexcept {
        if (plain) w.store(w.load(std::memory_order_relaxed) | bits, std::memory_order_release);
        else w.fetch_or(bits, std::memory_order_acq_rel);
    }
    static void and_word(std::atomic<std::uint64_t>& w, std::uint64_t bits, bool plain) noexcept {
        if (plain) w.store(w.load(std::memory_order_relaxed) & bits, std::memory_order_release);
        else w.fetch_and(bits, std::memory_order_acq_rel);
    }

    /// A lock-free operation's claim on the words (lock not held).
    class word_guard {
    public:
        explicit word_guard(biased_spinlock& l) noexcept : lock_(l), entry_(l.enter_words()) {}
        ~word_guard() { lock_.leave_words(entry_); }
        word_guard(const word_guard&) = delete;
        word_guard& operator=(const word_guard&) = delete;
        bool plain() const noexcept { return entry_ >= 0; }

    private:
        biased_spinlock& lock_;
        int entry_;
    };

    /// Values buffered now (a moment's view).
    std::size_t buffered() const noexcept;

    // --- the parking handshake (lock held; see THE PARKING HANDSHAKE) -----

    /// A receiver is about to park: lock-free senders must take the lock from
    /// now on. The caller then looks at the ring again.
    void announce_recv_wait() noexcept;

    /// A sender is about to park: lock-free receivers and senders must take
    /// the lock from now on. The caller then looks at the ring again.
    void announce_send_wait() noexcept;

    /// Clears the flags of queues that are empty now; call before unlocking
    /// after anything that may have emptied a queue. (Sets none: a flag is set
    /// only by announce_*, before the second look.)
    void sync_wait_flags() noexcept;

    /// The unlock of every locked operation: flags first, then the lock.
    void unlock_synced() noexcept;
};

template <class T>
struct chan_state : chan_base {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "goro::channel<T>: T must be nothrow move constructible (values move under the channel's lock)");
    static_assert(std::is_nothrow_destructible_v<T>, "goro::channel<T>: T must be nothrow destructible");

    /// One ring slot: its sequence number (see ALGORITHM) and room for a T.
    struct slot_type {
        std::atomic<std::uint64_t> seq;
        alignas(T) unsigned char storage[sizeof(T)];
        T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
    };

    explicit chan_state(std::size_t capacity) noexcept : chan_base(capacity) {}
    chan_state(const chan_state&) = delete;
    chan_state& operator=(const chan_state&) = delete;

    ~chan_state() {
        if (!cap) return;
        std::uint64_t d = deq.load(std::memory_order_relaxed) >> deq_shift;
        std::uint64_t e = enq.load(std::memory_order_relaxed) >> enq_shift;
        for (std::uint64_t p = d; p < e; ++p) slot(p).value()->~T();
    }

    // --- one allocation: the header, then the ring -------------------------

    static constexpr std::size_t max3(std::size_t a, std::size_t b, std::size_t c) noexcept {
        return a > b ? (a > c ? a : c) : (b > c ? b : c);
    }
    static constexpr std::size_t align = max3(alignof(slot_type), alignof(chan_base), cache_line);
    static constexpr std::size_t ring_offset =
        (sizeof(chan_state) + alignof(slot_type) - 1) / alignof(slot_type) * alignof(slot_type);

    static chan_state* create(std::size_t capacity) {
        if (capacity > (std::size_t(-1) - ring_offset) / sizeof(slot_type) / 2)
            throw std::length_error("goro::channel: capacity too large");
        void* p = ::operator new(ring_offset + capacity * sizeof(slot_type), std::align_val_t(align));
        auto* s = ::new (p) chan_state(capacity);
        for (std::size_t i = 0; i < capacity; ++i) ::new (&s->ring()[i].seq) std::atomic<std::uint64_t>(2 * i);
        return s;
    }

    static void destroy(chan_state* s) noexcept {
        s->~chan_state();
        ::operator delete(static_cast<void*>(s), std::align_val_t(align));
    }

    void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(this);
    }

    slot_type* ring() noexcept {
        return reinterpret_cast<slot_type*>(reinterpret_cast<unsigned char*>(this) + ring_offset);
    }
    /// The slot of position p.
    slot_type& slot(std::uint64_t p) noexcept { return ring()[index(p)]; }

    // --- the ring: claiming one position -------------------------------------

    /// Claims send position `p` (its slot `s` is free) by a CAS of `enq` from
    /// `e`, then writes `v` and publishes it. False: `e` changed (reloaded).
    bool claim_and_put(std::uint64_t& e, std::uint64_t p, slot_type& s, T& v, bool plain) noexcept {
        if (!cas_word(enq, e, e + (1u << enq_shift), plain)) return false;
        ::new (static_cast<void*>(s.storage)) T(std::move(v));
        s.seq.store(2 * p + 1, std::memory_order_release);
        return true;
    }

    /// Claims receive position `p` (its slot `s` is published) by a CAS of
    /// `deq` from `d`, then moves the value out. False: `d` changed (reloaded).
    bool claim_and_take(std::uint64_t& d, std::uint64_t p, slot_type& s, std::optional<T>& out, bool plain) noexcept {
        if (!cas_word(deq, d, d + (1u << deq_shift), plain)) return false;
        take(s, p, out);
        return true;
    }

    // --- the ring, lock-free ---------------------------------------------------
    //
    // THREAD SAFETY: any thread. Only positions claimed by this call's own CAS
    // are written; a result other than `done` changed nothing.

    /// Appends `v` when the ring has room and nobody is parked on the channel
    /// (then nothing more is owed to anyone). Moves from `v` only on `done`.
    fast_result send_fast(T& v) noexcept {
        if (!cap) {
            // Unbuffered: only a hand-off, under the lock. A glance says whether to try.
            if (is_closed()) return fast_result::closed;
            return recvq.empty() ? fast_result::not_ready : fast_result::locked;
        }
        word_guard g(lock);
        return send_ring<false>(v, g.plain());
    }

    /// Takes the oldest value when one is published and no sender is parked.
    fast_result recv_fast(std::optional<T>& out) noexcept {
        if (!cap) {
            // Unbuffered: closed means no sender is parked and none will come.
            if (is_closed()) return fast_result::closed;
            return sendq.empty() ? fast_result::not_ready : fast_result::locked;
        }
        word_guard g(lock);
        return recv_ring<false>(out, g.plain());
    }

    // The loops of send_fast and recv_fast. A lost CAS leaves the first,
    // inlined copy (`Lost` false) for a second one that backs off (see
    // CONTENTION) and reports done_contended, so the uncontended path
    // carries no backoff code.
    template <bool Lost>
    fast_result send_ring(T& v, bool plain) noexcept {
        std::uint64_t e = enq.load(std::memory_order_relaxed);
        for (unsigned lost = Lost;;) {
            if (e & enq_flags) return (e & enq_closed) ? fast_result::closed : fast_result::locked;
            const std::uint64_t p = e >> enq_shift;
            slot_type& s = slot(p);
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * p) {
                if (claim_and_put(e, p, s, v, plain)) return Lost ? fast_result::done_contended : fast_result::done;
                if constexpr (!Lost) return send_after_loss(v, plain);
                contention_backoff(lost++);
            } else if (std::int64_t(seq - 2 * p) < 0) {
                // The slot still holds position p - cap: full, or its receiver is moving it out.
                std::uint64_t d = deq.load(std::memory_order_acquire) >> deq_shift;
                if (std::int64_t(p - d) >= std::int64_t(cap)) return fast_result::not_ready;
                return fast_result::locked;
            } else {
                e = enq.load(std::memory_order_relaxed);  // another sender took p
            }
        }
    }
    [[gnu::noinline]] fast_result send_after_loss(T& v, bool plain) noexcept {
        contention_backoff(0);
        return send_ring<true>(v, plain);
    }

    template <bool Lost>
    fast_result recv_ring(std::optional<T>& out, bool plain) noexcept {
        std::uint64_t d = deq.load(std::memory_order_relaxed);
        for (unsigned lost = Lost;;) {
            if (d & deq_send_wait) return fast_result::locked;
            const std::uint64_t p = d >> deq_shift;
            slot_type& s = slot(p);
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * p + 1) {
                if (claim_and_take(d, p, s, out, plain)) return Lost ? fast_result::done_contended : fast_result::done;
                if constexpr (!Lost) return recv_after_loss(out, plain);
                contention_backoff(lost++);
            } else if (std::int64_t(seq - (2 * p + 1)) < 0) {
                // Position p is not published: the ring is empty, or its sender is still writing.
                std::uint64_t e = enq.load(std::memory_order_acquire);
                if (std::int64_t((e >> enq_shift) - p) > 0) return fast_result::locked;
                return (e & enq_closed) ? fast_result::closed : fast_result::not_ready;
            } else {
                d = deq.load(std::memory_order_relaxed);  // another receiver took p
            }
        }
    }
    [[gnu::noinline]] fast_result recv_after_loss(std::optional<T>& out, bool plain) noexcept {
        contention_backoff(0);
        return recv_ring<true>(out, plain);
    }

    // --- the ring, lock held ---------------------------------------------------
    //
    // Exact answers: a position in flight is waited for (its claimer needs no
    // lock to finish). The flags are kept as they are.

    /// Appends `v` unless the ring is full; `enq` must not be closed.
    bool push_locked(T& v) noexcept {
        const bool plain = lock.held_plain();
        std::uint64_t e = enq.load(std::memory_order_relaxed);
        detail::backoff wait;
        for (;;) {
            const std::uint64_t p = e >> enq_shift;
            slot_type& s = slot(p);
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * p) {
                if (claim_and_put(e, p, s, v, plain)) return true;
                continue;
            }
            if (std::int64_t(seq - 2 * p) < 0) {
                std::uint64_t d = deq.load(std::memory_order_acquire) >> deq_shift;
                std::int64_t n = std::int64_t(p - d);
                if (n >= std::int64_t(cap)) return false;  // full at the moment `deq` was read
                if (n >= 0) wait.pause();                  // a receiver is moving p - cap out
            }
            e = enq.load(std::memory_order_relaxed);
        }
    }

    /// Takes the oldest value unless the ring is empty; `e_seen` is then the
    /// `enq` word that showed it empty (its closed flag says whether for good).
    bool pop_locked(std::optional<T>& out, std::uint64_t& e_seen) noexcept {
        const bool plain = lock.held_plain();
        std::uint64_t d = deq.load(std::memory_order_relaxed);
        detail::backoff wait;
        for (;;) {
            const std::uint64_t p = d >> deq_shift;
            slot_type& s = slot(p);
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * p + 1) {
                if (claim_and_take(d, p, s, out, plain)) return true;
                continue;
            }
            if (std::int64_t(seq - (2 * p + 1)) < 0) {
                std::uint64_t e = enq.load(std::memory_order_acquire);
                std::int64_t n = std::int64_t((e >> enq_shift) - p);
                if (n <= 0) {
                    e_seen = e;
                    return false;  // empty at the moment `enq` was read
                }
                wait.pause();  // a sender is writing p
            }
            d = deq.load(std::memory_order_relaxed);
        }
    }

    /// Moves parked senders' values into free slots, oldest first, while there
    /// is room (Go moves one per receive; a lock-free receive that freed a slot
    /// before a sender parked leaves room for more).
    void refill_locked(wake_list& wakes) noexcept {
        while (!sendq.empty()) {
            // send_wait is set (sendq is not empty): only lock holders move the
            // positions now, so the room seen here stays until we use it.
            std::uint64_t d = deq.load(std::memory_order_acquire) >> deq_shift;
            std::uint64_t e = enq.load(std::memory_order_relaxed) >> enq_shift;
            if (std::int64_t(e - d) >= std::int64_t(cap)) return;
            chan_waiter* w = sendq.pop();
            if (!w) return;
            push_locked(*static_cast<T*>(w->elem));  // there is room: cannot fail
            w->success = true;
            wakes.add(w);
        }
    }

    // --- operations, channel locked ----------------------------------------

    /// Sends `v` without blocking: to a parked receiver, else into the ring
    /// (behind the values of parked senders). Moves from `v` only when the
    /// status is `sent`.
    send_status send_locked(T& v, wake_list& wakes) noexcept {
        if (closed) return send_status::closed;
        if (chan_waiter* w = recvq.pop()) {
            static_cast<std::optional<T>*>(w->elem)->emplace(std::move(v));
            w->success = true;
            wakes.add(w);
            return send_status::sent;
        }
        if (!cap) return send_status::full;
        refill_locked(wakes);
        if (!sendq.empty()) return send_status::full;  // the ring is full again
        return push_locked(v) ? send_status::sent : send_status::full;
    }

    /// Receives into `out` without blocking: from the ring, refilling it from
    /// parked senders, else directly from a parked sender (the ring is empty:
    /// FIFO order holds), else reports empty or closed.
    recv_status recv_locked(std::optional<T>& out, wake_list& wakes) noexcept {
        std::uint64_t e = 0;
        if (cap) {
            if (pop_locked(out, e)) {
                refill_locked(wakes);
                return recv_status::received;
            }
        } else if (closed) {
            e = enq_closed;  // unbuffered: the flag under the lock says it
        }
        if (chan_waiter* w = sendq.pop()) {
            out.emplace(std::move(*static_cast<T*>(w->elem)));
            w->success = true;
            wakes.add(w);
            if (cap) refill_locked(wakes);
            return recv_status::received;
        }
        return (e & enq_closed) ? recv_status::closed : recv_status::empty;
    }

    /// Closes the channel and wakes every waiter, or throws when it was
    /// closed already. Lock NOT held on entry.
    void close(const char* op) {
        lock.lock();
        if (closed) {
            lock.unlock();
            throw channel_closed(std::string(op) + ": close of closed channel");
        }
        closed = true;
        // From here on no send can claim a position: those that did are in the ring.
        or_word(enq, enq_closed, lock.held_plain());
        // Nobody can join the queues now, so they can be emptied a batch at
        // a time, readying each batch with the lock released. Each waiter is
        // touched once, while its line is in cache (a close of a channel that
        // a million tasks wait on would otherwise walk them twice).
        for (;;) {
            task_header* batch[64];
            std::size_t n = 0;
            while (n < 64) {
                recvq.prefetch_stride(8);
                chan_waiter* w = recvq.pop();
                if (!w) w = sendq.pop();
                if (!w) break;
                w->success = false;
                batch[n++] = w->task();
            }
            unlock_synced();
            ready_n(batch, n);
            if (n < 64) return;
            lock.lock();
        }
    }

private:
    /// Moves the value at position p (claimed by this thread) out and frees the slot.
    void take(slot_type& s, std::uint64_t p, std::optional<T>& out) noexcept {
        T* v = s.value();
        out.emplace(std::move(*v));
        v->~T();
        s.seq.store(2 * (p + cap), std::memory_order_release);
    }

    // CONTENTION. A CAS of `enq` or `deq` that fails means that another core
    // claimed a position between our load and our CAS: two cores are doing
    // the same thing on this channel (sending, or receiving), and the word's
    // line moves between them on every claim. Retrying at once keeps it
    // moving. So the loser pauses, twice as long after each loss in the same
    // call (4 to 64 pauses), and the winner claims a run of positions with
    // the line in its cache. The operation then reports done_contended: its
    // task steps aside if another task waits on its worker (send_op and
    // recv_op), often one of the other side (a receiver woken by these
    // sends, say), and two workers that each run one side of the channel do
    // not contend at all.
    [[gnu::cold, gnu::noinline]] static void contention_backoff(unsigned lost) noexcept {
        const unsigned pauses = 4u << (lost < 4 ? lost : 4);
        for (unsigned k = 0; k < pauses; ++k) cpu_relax();
    }
};

// --- awaiters ---------------------------------------------------------------

/// `co_await ch.send(v)`. Holds the value until it is delivered; when the send
/// fails (closed) the value was not delivered and is destroyed with the awaiter.
template <class T>
class [[nodiscard("goro::channel::send: co_await it")]] send_op {
public:
    using is_goro_awaiter = void;
    send_op(chan_state<T>* c, T&& v) noexcept : ch_(c), value_(std::move(v)) {}
    send_op(chan_state<T>* c, const T& v) : ch_(c), value_(v) {}
    send_op(send_op&& o) noexcept : ch_(o.ch_), value_(std::move(o.value_)) {}
    send_op& operator=(send_op&&) = delete;

    // The lock-free attempt comes first, before the coroutine saves its
    // state to suspend (in a task only: elsewhere await_suspend says why not).
    bool await_ready() noexcept {
        chan_state<T>* c = ch_;
        if (!c || !c->cap || !tls_current_task) return false;
        fast_result f = c->send_fast(value_);
        if (f == fast_result::done) [[likely]] {
            state_ = done;
            return true;
        }
        if (f == fast_result::closed) {
            state_ = failed;
            return true;
        }
        return f == fast_result::done_contended && sent_after_contention();
    }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::channel::send");
        if (state_ == done) [[unlikely]] {  // sent, after contention: only step aside
            step_aside(self, h);
            return true;
        }
        chan_state<T>* c = ch_;
        if (!c) {
            park(self, h, wait_reason::chan_send_nil);  // never published: parks forever, like Go
            return true;
        }
        // await_ready made the lock-free attempt; the locked path below decides exactly.
        wake_list wakes;
        c->lock.lock();
        auto r = c->send_locked(value_, wakes);
        if (r == send_status::full && c->cap) {
            c->announce_send_wait();
            r = c->send_locked(value_, wakes);  // the second look (THE PARKING HANDSHAKE)
        }
        if (r != send_status::full) {
            c->unlock_synced();
            state_ = r == send_status::sent ? done : failed;
            wakes.ready_all();
            return false;
        }
        park(self, h, wait_reason::chan_send);
        state_ = parked;
        waiter_.set_task(self);
        waiter_.elem = &value_;
        waiter_.success = false;
        c->sendq.push(&waiter_);
        c->unlock_synced();  // published: from here on a receiver may resume us
        wakes.ready_all();   // a refill before we parked (only locals from here on)
        return true;
    }

    /// Sent, but only after losing a position to another core: true to go
    /// on, false to step aside in await_suspend (see CONTENTION).
    [[gnu::noinline]] bool sent_after_contention() noexcept {
        state_ = done;
        return !local_work_waiting();
    }

    void await_resume() const {
        if (state_ == failed || (state_ == parked && !waiter_.success))
            throw channel_closed("goro::channel::send: send on closed channel");
    }

private:
    enum op_state : unsigned char { idle, done, failed, parked };
    chan_state<T>* ch_;
    T value_;
    chan_waiter waiter_{};
    op_state state_ = idle;
};

/// `co_await ch.recv()`: the value, or nullopt once closed and drained.
template <class T>
class [[nodiscard("goro::channel::recv: co_await it")]] recv_op {
public:
    using is_goro_awaiter = void;
    explicit recv_op(chan_state<T>* c) noexcept : ch_(c) {}
    recv_op(recv_op&& o) noexcept : ch_(o.ch_) {}
    recv_op& operator=(recv_op&&) = delete;

    // The lock-free attempt comes first, as in send_op.
    bool await_ready() noexcept {
        chan_state<T>* c = ch_;
        if (!c || !c->cap || !tls_current_task) return false;
        fast_result f = c->recv_fast(out_);
        if (f == fast_result::done || f == fast_result::closed) [[likely]]
            return true;
        return f == fast_result::done_contended && received_after_contention();
    }

    /// As send_op::sent_after_contention.
    [[gnu::noinline]] bool received_after_contention() noexcept {
        if (!local_work_waiting()) return true;
        step_aside_ = true;
        return false;
    }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::channel::recv");
        if (step_aside_) [[unlikely]] {
            step_aside(self, h);
            return true;
        }
        chan_state<T>* c = ch_;
        if (!c) {
            park(self, h, wait_reason::chan_receive_nil);  // never published: parks forever
            return true;
        }
        // await_ready made the lock-free attempt; the locked path below decides exactly.
        wake_list wakes;
        c->lock.lock();
        auto r = c->recv_locked(out_, wakes);
        if (r == recv_status::empty && c->cap) {
            c->announce_recv_wait();
            r = c->recv_locked(out_, wakes);  // the second look (THE PARKING HANDSHAKE)
        }
        if (r != recv_status::empty) {
            c->unlock_synced();
            wakes.ready_all();
            return false;
        }
        park(self, h, wait_reason::chan_receive);
        waiter_.set_task(self);
        waiter_.elem = &out_;
        waiter_.success = false;
        c->recvq.push(&waiter_);
        c->unlock_synced();  // published: from here on a sender or close may resume us
        return true;
    }

    // A sender filled out_ (success) or close left it empty. Read as flag and
    // value, not as a whole: they were just written separately, and one wider
    // load of both would wait for the stores to drain (no store forwarding).
    std::optional<T> await_resume() noexcept {
        if (!out_) return std::nullopt;
        return std::optional<T>(std::move(*out_));
    }

private:
    chan_state<T>* ch_;
    chan_waiter waiter_{};
    std::optional<T> out_{};
    bool step_aside_ = false;
};

}  // namespace detail

namespace detail {

/// T can be made from Args: by a constructor, or (an aggregate) by braces.
template <class T, class... Args>
concept makeable = std::is_constructible_v<T, Args&&...> || requires(Args&&... a) { T{std::forward<Args>(a)...}; };

/// A T made from `args` in this (non-coroutine) call.
template <class T, class... Args>
T make_value(Args&&... args) {
    if constexpr (std::is_constructible_v<T, Args&&...>) return T(std::forward<Args>(args)...);
    else return T{std::forward<Args>(args)...};
}

/// try_recv on a channel's state (null: a nil channel): the lock-free path,
/// then the lock when only the lock can tell.
template <class T>
try_recv_result<T> try_recv_on(chan_state<T>* s) {
    try_recv_result<T> res;
    if (!s) return res;
    switch (s->recv_fast(res.value)) {
    case fast_result::done:
    case fast_result::done_contended: res.status = recv_status::received; return res;
    case fast_result::closed: res.status = recv_status::closed; return res;
    case fast_result::not_ready: res.status = recv_status::empty; return res;
    case fast_result::locked: break;
    }
    wake_list wakes;
    s->lock.lock();
    res.status = s->recv_locked(res.value, wakes);
    s->unlock_synced();
    wakes.ready_all();
    return res;
}

/// try_send on a channel's state (null: a nil channel). Moves from `v` only when sent.
template <class T>
send_status try_send_on(chan_state<T>* s, T& v) {
    if (!s) return send_status::full;
    switch (s->send_fast(v)) {
    case fast_result::done:
    case fast_result::done_contended: return send_status::sent;
    case fast_result::closed: return send_status::closed;
    case fast_result::not_ready: return send_status::full;
    case fast_result::locked: break;
    }
    wake_list wakes;
    s->lock.lock();
    auto r = s->send_locked(v, wakes);
    s->unlock_synced();
    wakes.ready_all();
    return r;
}

}  // namespace detail

/// A channel of T: a counted handle to a shared queue (see the top of this file).
template <class T>
class channel {
public:
    using value_type = T;

    /// An unbuffered channel (make(chan T)).
    channel() : s_(state_type::create(0)) {}
    /// A channel with a buffer of `capacity` values (make(chan T, capacity)).
    explicit channel(std::size_t capacity) : s_(state_type::create(capacity)) {}
    /// Go's nil channel: send and receive park forever, a select case on it never fires.
    channel(std::nullptr_t) noexcept {}

    channel(const channel& o) noexcept : s_(o.s_) {
        if (s_) s_->add_ref();
    }
    channel(channel&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    channel& operator=(const channel& o) noexcept {
        if (o.s_) o.s_->add_ref();
        reset();
        s_ = o.s_;
        return *this;
    }
    channel& operator=(channel&& o) noexcept {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    ~channel() { reset(); }

    /// Drops this handle's reference; the handle becomes a nil channel.
    void reset() noexcept {
        if (s_) std::exchange(s_, nullptr)->release();
    }

    /// True unless this is a nil channel.
    explicit operator bool() const noexcept { return s_ != nullptr; }
    bool is_nil() const noexcept { return s_ == nullptr; }

    /// `co_await ch.send(v)`: waits until a receiver took `v` (unbuffered) or
    /// it is buffered. Throws goro::channel_closed on a closed channel.
    [[nodiscard("goro::channel::send: co_await it")]] detail::send_op<T> send(T&& v) const noexcept { return {s_, std::move(v)}; }
    [[nodiscard("goro::channel::send: co_await it")]] detail::send_op<T> send(const T& v) const
        requires std::is_copy_constructible_v<T>
    {
        return {s_, v};
    }

    /// `co_await ch.send(std::in_place, a, b)`: sends a T made from `a, b`
    /// (T(a, b), or T{a, b} for an aggregate) inside this call, not in the
    /// caller's coroutine: the form that g++ 12's bug with class temporaries
    /// in a co_await expression cannot reach (see the README).
    template <class... Args>
        requires detail::makeable<T, Args...>
    detail::send_op<T> send(std::in_place_t, Args&&... args) const {
        return {s_, detail::make_value<T>(std::forward<Args>(args)...)};
    }

    /// `co_await ch.recv()`: a value, or std::nullopt once closed and drained.
    [[nodiscard("goro::channel::recv: co_await it")]] detail::recv_op<T> recv() const noexcept { return detail::recv_op<T>{s_}; }

    /// Sends without blocking. Moves from `v` only when it returns `sent`.
    send_status try_send(T&& v) const { return try_send_ref(v); }
    send_status try_send(const T& v) const
        requires std::is_copy_constructible_v<T>
    {
        T copy(v);
        return try_send_ref(copy);
    }

    /// Receives without blocking.
    try_recv_result<T> try_recv() const { return detail::try_recv_on(s_); }

    /// Closes the channel: buffered values can still be received, then every
    /// receive yields nullopt; every parked receiver and sender wakes. Closing
    /// twice throws goro::channel_closed; closing a nil channel throws goro::usage_error.
    void close() const {
        if (!s_) throw usage_error("goro::channel::close: close of nil channel");
        s_->close("goro::channel::close");
    }

    /// Values buffered now (a moment's view).
    std::size_t size() const noexcept { return s_ ? s_->buffered() : 0; }
    /// The buffer's capacity (0: unbuffered or nil).
    std::size_t capacity() const noexcept { return s_ ? s_->cap : 0; }

    friend bool operator==(const channel& a, const channel& b) noexcept { return a.s_ == b.s_; }

    /// The shared state (select uses it); null for a nil channel.
    detail::chan_state<T>* state() const noexcept { return s_; }

private:
    using state_type = detail::chan_state<T>;

    send_status try_send_ref(T& v) const { return detail::try_send_on(s_, v); }

    state_type* s_ = nullptr;
};

namespace detail {

/// A counted reference to whatever keeps a channel's state alive (the channel
/// itself, or the context that embeds it), erased: `ops` knows how to count.
struct keep_ops {
    void (*add)(void*) noexcept;
    void (*drop)(void*) noexcept;
};

class keep_ref {
public:
    keep_ref() noexcept = default;
    /// Adopts one reference to `obj` (null: keeps nothing).
    keep_ref(void* obj, const keep_ops* ops) noexcept : obj_(obj), ops_(ops) {}
    keep_ref(const keep_ref& o) noexcept : obj_(o.obj_), ops_(o.ops_) {
        if (obj_) ops_->add(obj_);
    }
    keep_ref(keep_ref&& o) noexcept : obj_(std::exchange(o.obj_, nullptr)), ops_(o.ops_) {}
    keep_ref& operator=(keep_ref o) noexcept {
        std::swap(obj_, o.obj_);
        std::swap(ops_, o.ops_);
        return *this;
    }
    ~keep_ref() {
        if (obj_) ops_->drop(obj_);
    }

private:
    void* obj_ = nullptr;
    const keep_ops* ops_ = nullptr;
};

template <class T>
struct chan_keep {
    static void add(void* p) noexcept { static_cast<chan_state<T>*>(p)->add_ref(); }
    static void drop(void* p) noexcept { static_cast<chan_state<T>*>(p)->release(); }
    static constexpr keep_ops ops{&add, &drop};
};

struct direction_access;

}  // namespace detail

/// A send-only view of a channel (Go's `chan<- T`): send, try_send and close;
/// no receive. A `channel<T>` converts to it implicitly; it never converts
/// back, nor to a `recv_only<T>`. A counted handle like `channel<T>`.
template <class T>
class send_only {
public:
    using value_type = T;

    /// A nil channel.
    send_only() noexcept = default;
    send_only(std::nullptr_t) noexcept {}
    send_only(const channel<T>& c) noexcept : c_(c) {}
    send_only(channel<T>&& c) noexcept : c_(std::move(c)) {}

    /// `co_await ch.send(v)`, as channel<T>::send.
    detail::send_op<T> send(T&& v) const noexcept { return c_.send(std::move(v)); }
    detail::send_op<T> send(const T& v) const
        requires std::is_copy_constructible_v<T>
    {
        return c_.send(v);
    }
    template <class... Args>
        requires detail::makeable<T, Args...>
    detail::send_op<T> send(std::in_place_t, Args&&... args) const {
        return c_.send(std::in_place, std::forward<Args>(args)...);
    }
    send_status try_send(T&& v) const { return c_.try_send(std::move(v)); }
    send_status try_send(const T& v) const
        requires std::is_copy_constructible_v<T>
    {
        return c_.try_send(v);
    }
    /// As channel<T>::close (Go lets the sending side close).
    void close() const { c_.close(); }

    std::size_t size() const noexcept { return c_.size(); }
    std::size_t capacity() const noexcept { return c_.capacity(); }
    explicit operator bool() const noexcept { return bool(c_); }
    bool is_nil() const noexcept { return c_.is_nil(); }
    detail::chan_state<T>* state() const noexcept { return c_.state(); }
    friend bool operator==(const send_only& a, const send_only& b) noexcept { return a.c_ == b.c_; }

private:
    friend struct detail::direction_access;
    channel<T> c_{nullptr};
};

/// A receive-only view of a channel (Go's `<-chan T`): recv and try_recv; no
/// send, no close. A `channel<T>` converts to it implicitly; it never converts
/// back, nor to a `send_only<T>`. A context's done() is one (a
/// `recv_only<std::monostate>` that is closed when the context is done).
/// `co_await r` receives once, as `co_await r.recv()`; it may appear in a
/// select as it is, or as `goro::recv(r)`.
template <class T>
class recv_only {
public:
    using value_type = T;

    /// A nil channel.
    recv_only() noexcept = default;
    recv_only(std::nullptr_t) noexcept {}
    recv_only(const channel<T>& c) noexcept : s_(c.state()) {
        if (s_) {
            s_->add_ref();
            keep_ = detail::keep_ref(s_, &detail::chan_keep<T>::ops);
        }
    }
    /// A view of `s` kept alive by `keep` (goro's own types use this: a context's done()).
    recv_only(detail::chan_state<T>* s, detail::keep_ref keep) noexcept : s_(s), keep_(std::move(keep)) {}

    /// `co_await r.recv()`: a value, or std::nullopt once closed and drained.
    detail::recv_op<T> recv() const noexcept { return detail::recv_op<T>{s_}; }
    detail::recv_op<T> operator co_await() const noexcept { return detail::recv_op<T>{s_}; }
    try_recv_result<T> try_recv() const { return detail::try_recv_on(s_); }

    std::size_t size() const noexcept { return s_ ? s_->buffered() : 0; }
    std::size_t capacity() const noexcept { return s_ ? s_->cap : 0; }
    explicit operator bool() const noexcept { return s_ != nullptr; }
    bool is_nil() const noexcept { return s_ == nullptr; }
    detail::chan_state<T>* state() const noexcept { return s_; }
    friend bool operator==(const recv_only& a, const recv_only& b) noexcept { return a.s_ == b.s_; }

private:
    detail::chan_state<T>* s_ = nullptr;
    detail::keep_ref keep_{};
};

namespace detail {
struct direction_access {
    template <class T>
    static const channel<T>& handle(const send_only<T>& s) noexcept {
        return s.c_;
    }
};
}  // namespace detail

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL const char* to_string(send_status s) noexcept {
    switch (s) {
    case send_status::sent: return "sent";
    case send_status::full: return "full";
    case send_status::closed: return "closed";
    }
    return "unknown";
}

GORO_DECL const char* to_string(recv_status s) noexcept {
    switch (s) {
    case recv_status::received: return "received";
    case recv_status::empty: return "empty";
    case recv_status::closed: return "closed";
    }
    return "unknown";
}

}  // namespace goro

namespace goro::detail {

GORO_DECL bool select_core::try_claim(int case_index) noexcept {
    bool expected = false;
    if (!claimed.compare_exchange_strong(expected, true, std::memory_order_acq_rel, std::memory_order_relaxed))
        return false;
    winner = case_index;
    return true;
}

GORO_DECL void waitq::push(chan_waiter* w) noexcept {
    w->next = nullptr;
    w->prev = last_;
    if (last_) last_->next = w;
    else first_.store(w, std::memory_order_relaxed);
    last_ = w;
    w->linked = true;
}

GORO_DECL chan_waiter* waitq::pop() noexcept {
    while (chan_waiter* w = first_.load(std::memory_order_relaxed)) {
        unlink(w);
        if (!w->in_select || w->sel_->try_claim(w->case_index)) return w;
    }
    return nullptr;
}

GORO_DECL void waitq::prefetch_stride(std::uintptr_t ahead) const noexcept {
    chan_waiter* w = first_.load(std::memory_order_relaxed);
    if (!w || !w->next) return;
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(w);
    const std::uintptr_t step = reinterpret_cast<std::uintptr_t>(w->next) - a;
    const char* guess = reinterpret_cast<const char*>(a + step * ahead);
    prefetch_for_write(guess);
    prefetch_for_write(guess + cache_line);
}

GORO_DECL void waitq::unlink(chan_waiter* w) noexcept {
    if (w->prev) w->prev->next = w->next;
    else first_.store(w->next, std::memory_order_relaxed);
    if (w->next) w->next->prev = w->prev;
    else last_ = w->prev;
    w->next = w->prev = nullptr;
    w->linked = false;
}

GORO_DECL void wake_list::ready_all() noexcept {
    chan_waiter* w = first_;
    first_ = last_ = nullptr;
    if (w && !w->next) {
        ready(w->task());
        return;
    }
    if (w) ready_many(w);
}

GORO_DECL std::size_t chan_base::buffered() const noexcept {
    std::uint64_t d = deq.load(std::memory_order_relaxed) >> deq_shift;
    std::uint64_t e = enq.load(std::memory_order_relaxed) >> enq_shift;
    if (e <= d) return 0;
    return std::size_t(e - d) > cap ? cap : std::size_t(e - d);
}

GORO_DECL void chan_base::announce_recv_wait() noexcept {
    if (cap && !(enq.load(std::memory_order_relaxed) & enq_recv_wait))
        or_word(enq, enq_recv_wait, lock.held_plain());
}

GORO_DECL void chan_base::announce_send_wait() noexcept {
    if (!cap) return;
    const bool plain = lock.held_plain();
    if (!(deq.load(std::memory_order_relaxed) & deq_send_wait)) or_word(deq, deq_send_wait, plain);
    if (!(enq.load(std::memory_order_relaxed) & enq_send_wait)) or_word(enq, enq_send_wait, plain);
}

GORO_DECL void chan_base::sync_wait_flags() noexcept {
    if (!cap) return;
    std::uint64_t e = enq.load(std::memory_order_relaxed);
    std::uint64_t clear = 0;
    if ((e & enq_recv_wait) && recvq.empty()) clear |= enq_recv_wait;
    if ((e & enq_send_wait) && sendq.empty()) clear |= enq_send_wait;
    const bool plain = lock.held_plain();
    if (clear) and_word(enq, ~clear, plain);
    if (sendq.empty() && (deq.load(std::memory_order_relaxed) & deq_send_wait))
        and_word(deq, ~deq_send_wait, plain);
}

GORO_DECL void chan_base::unlock_synced() noexcept {
    if (cap) sync_wait_flags();
    lock.unlock();
}

}  // namespace goro::detail
#endif  // GORO_BODIES
