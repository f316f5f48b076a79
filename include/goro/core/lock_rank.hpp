// goro/core/lock_rank.hpp — every lock of goro has a rank; a thread takes locks
// in increasing rank, and debug builds check it.
//
//   detail::ranked_lock<detail::spinlock, detail::lock_rank::registry_shard> lock;
//   std::lock_guard g(lock);   // checked: aborts if this thread holds a lock of a higher rank
//
// THE ORDER (a thread holding a lock takes only locks further down; each line
// says why the ones below it can be taken under it):
//
//   panic_report       one crash report at a time; the report takes a snapshot
//   snapshot           one snapshot at a time; it stops the world
//   stop_the_world     the scheduler's stop; held while the registry is walked
//   registry_shard     the registry's lists; all 64 are held by a walk
//   snapshot_overflow  a snapshot's records beyond its estimate, added during a walk
//   deadlock_watch     the watchdog's list of block_on threads, read during a walk
//   context            a cancel node's children; arming its deadline adds a timer
//   time_chan          a goro::timer's or ticker's state: held while its tick is
//                      sent (Go's sendLock) and while it re-arms its timer node
//   channel            a channel's queues; select holds several, and arms a timer
//   sync_waiters       the waiter list of a mutex, semaphore or wait group; an errgroup's error
//   pool_holder        the making of the pool: the first use may come under any
//                      lock above; making it starts the timer
//   scheduler_procs    the active, stuck and spare workers (scheduler.hpp, STUCK
//                      WORKERS); activating one wakes it and takes the idle list
//   timer              the timer heap
//   scheduler_idle     the list of idle workers
//   global_queue       the run queue of tasks woken from outside the pool
//   blocking_pool      the queue of goro::blocking calls (io/blocking.hpp)
//   panic_hook         the installed crash hook
//   frame_pool         the frame allocator's shared depot (frames are made anywhere)
//
// Locks of one rank may be held together only when taken in increasing
// address order: select locks its channels so, and a registry walk its shards.
// A lock taken with try_lock never waits, so it is not checked when taken
// (it is recorded as held, and checked against what is taken under it).
//
// CHECKING is on when NDEBUG is not defined, or when GORO_LOCK_RANK_CHECK is
// defined to 1; GORO_LOCK_RANK_CHECK defined to 0 turns it off. Each thread
// keeps a small stack of the ranked locks it holds; a lock taken out of order,
// or twice, prints both locks' names and aborts: that order could deadlock
// with another thread that follows the table. Off, ranked_lock<L, R> is L with
// nothing added. Every translation unit of a program must agree on it (as
// with assert, it changes what the inline functions do).
//
// Locks of goro's HTTP server are not ranked: they are taken on its own
// threads and never under a lock of this table.
#pragma once

#include <cstdint>
#include <utility>

#include <goro/core/linkage.hpp>

#ifndef GORO_LOCK_RANK_CHECK
#ifdef NDEBUG
#define GORO_LOCK_RANK_CHECK 0
#else
#define GORO_LOCK_RANK_CHECK 1
#endif
#endif

namespace goro::detail {

enum class lock_rank : std::uint8_t {
    panic_report = 1,
    snapshot,
    stop_the_world,
    registry_shard,
    snapshot_overflow,
    deadlock_watch,
    context,
    time_chan,
    channel,
    sync_waiters,
    pool_holder,
    scheduler_procs,
    timer,
    scheduler_idle,
    global_queue,
    blocking_pool,
    panic_hook,
    frame_pool,
};

GORO_DECL const char* to_string(lock_rank r) noexcept;

#if GORO_LOCK_RANK_CHECK

/// The ranked locks this thread holds, in the order taken.
struct held_locks {
    static constexpr unsigned capacity = 128;  // a registry walk holds 64
    struct entry {
        const void* lock;
        lock_rank rank;
    };
    entry v[capacity];
    unsigned n;
};
inline thread_local constinit held_locks tls_held_locks{{}, 0};

/// Before waiting for `lock`: every held lock must come before it.
GORO_DECL void lock_rank_check(lock_rank r, const void* lock) noexcept;

GORO_DECL void lock_rank_push(lock_rank r, const void* lock) noexcept;

/// Locks may be released in any order.
GORO_DECL void lock_rank_pop(const void* lock) noexcept;

/// `Lock` with its rank checked on lock, try_lock and unlock. Everything else
/// of `Lock` (constructors, other members) is as it is.
template <class Lock, lock_rank Rank>
class ranked_lock : public Lock {
public:
    using Lock::Lock;
    static constexpr lock_rank rank = Rank;

    void lock() noexcept(noexcept(std::declval<Lock&>().lock())) {
        lock_rank_check(Rank, this);
        Lock::lock();
        lock_rank_push(Rank, this);
    }
    bool try_lock() noexcept(noexcept(std::declval<Lock&>().try_lock())) {
        if (!Lock::try_lock()) return false;
        lock_rank_push(Rank, this);
        return true;
    }
    void unlock() noexcept(noexcept(std::declval<Lock&>().unlock())) {
        lock_rank_pop(this);
        Lock::unlock();
    }

    /// The lock without the check, for a std::condition_variable's
    /// unique_lock on the thread that only waits on it.
    Lock& unranked() noexcept { return *this; }
};

#else

template <class Lock, lock_rank Rank>
class ranked_lock : public Lock {
public:
    using Lock::Lock;
    static constexpr lock_rank rank = Rank;
    Lock& unranked() noexcept { return *this; }
};

#endif

}  // namespace goro::detail

#if GORO_BODIES
#include <cstdio>
#include <cstdlib>

namespace goro::detail {

GORO_DECL const char* to_string(lock_rank r) noexcept {
    switch (r) {
    case lock_rank::panic_report: return "panic report";
    case lock_rank::snapshot: return "snapshot";
    case lock_rank::stop_the_world: return "stop the world";
    case lock_rank::registry_shard: return "registry shard";
    case lock_rank::snapshot_overflow: return "snapshot overflow";
    case lock_rank::deadlock_watch: return "deadlock watch";
    case lock_rank::context: return "context";
    case lock_rank::time_chan: return "timer channel";
    case lock_rank::channel: return "channel";
    case lock_rank::sync_waiters: return "sync waiters";
    case lock_rank::timer: return "timer";
    case lock_rank::scheduler_idle: return "scheduler idle list";
    case lock_rank::global_queue: return "global run queue";
    case lock_rank::blocking_pool: return "blocking pool";
    case lock_rank::pool_holder: return "pool holder";
    case lock_rank::scheduler_procs: return "scheduler procs";
    case lock_rank::panic_hook: return "panic hook";
    case lock_rank::frame_pool: return "frame pool";
    }
    return "unknown";
}

#if GORO_LOCK_RANK_CHECK

[[noreturn, gnu::cold, gnu::noinline]] GORO_DECL void lock_rank_violation(lock_rank taking, const void* lock,
                                                                        lock_rank held, const void* held_lock) noexcept {
    std::fprintf(stderr,
                 "goro: lock order violated: taking the %s lock (rank %u, %p) while holding the %s lock (rank %u, "
                 "%p); see goro/core/lock_rank.hpp\n",
                 to_string(taking), static_cast<unsigned>(taking), lock, to_string(held),
                 static_cast<unsigned>(held), held_lock);
    std::fflush(stderr);
    std::abort();
}

GORO_DECL void lock_rank_check(lock_rank r, const void* lock) noexcept {
    held_locks& h = tls_held_locks;
    for (unsigned i = 0; i < h.n; ++i) {
        const held_locks::entry& e = h.v[i];
        if (e.rank > r || (e.rank == r && e.lock >= lock)) lock_rank_violation(r, lock, e.rank, e.lock);
    }
}

GORO_DECL void lock_rank_push(lock_rank r, const void* lock) noexcept {
    held_locks& h = tls_held_locks;
    if (h.n == held_locks::capacity) {
        std::fprintf(stderr, "goro: lock rank check: more than %u locks held by one thread\n", held_locks::capacity);
        std::abort();
    }
    h.v[h.n++] = {lock, r};
}

GORO_DECL void lock_rank_pop(const void* lock) noexcept {
    held_locks& h = tls_held_locks;
    for (unsigned i = h.n; i-- > 0;)
        if (h.v[i].lock == lock) {
            for (unsigned k = i + 1; k < h.n; ++k) h.v[k - 1] = h.v[k];
            --h.n;
            return;
        }
    std::fprintf(stderr, "goro: lock rank check: unlocking a lock (%p) this thread does not hold\n", lock);
    std::abort();
}

#endif  // GORO_LOCK_RANK_CHECK

}  // namespace goro::detail
#endif  // GORO_BODIES
