// goro/core/scheduler.hpp — the worker pool: run queues, stealing, parking, stop-the-world.
//
// N workers (GORO_MAXPROCS, else the hardware concurrency, or set_max_procs()
// before first use) run root tasks. What each worker has, after Go's runtime:
//
//   run_next   one slot: the task this worker just woke. It runs as soon as the
//              current task suspends, so a ping-pong between two tasks stays on
//              one core and one cache. Not stolen, except from a worker whose
//              current task has run for a whole monitor period (10 ms): then
//              thieves take it, and the monitor moves it (RESCUE).
//              The owner takes it without a locked instruction (RUN_NEXT below).
//   local queue  256 entries, owner pushes at the tail, anyone takes at the head
//              (the owner pops one, or four at once from a long queue: CLAIMED
//              below; a thief takes half). Full: half moves to the global queue.
//   global queue  tasks woken or spawned by threads outside the pool (the
//              timer thread's wake-ups among them), tasks that yield, and
//              overflow; a ring of pointers under a spinlock. See GLOBAL QUEUE.
//
// IDLE WORKERS AND WAKE-UPS (no lost wake-up, no busy loop)
//   A worker that finds nothing spins for a while, stealing, as a "spinner";
//   then registers as idle, re-checks every queue, and sleeps on its own futex.
//   Whoever makes work stealable (spawn, overflow, a wake-up from outside) then
//   wakes one idle worker, unless one is already spinning. A spinner that finds
//   work wakes another before running it, so parallelism ramps up. The two sides
//   publish then check (seq_cst fences), so one of them always sees the other.
//   Except a worker that queues work on itself (spawn, wake-up, yield): it
//   checks without the fence, as Go's runqput and wakep do, because the fence
//   would wait on every spawn for the store buffer, full of the new task's
//   cache misses. If that check misses a worker that is just going to sleep,
//   nothing is lost: the work is in this worker's own queue, which it serves
//   as soon as its task suspends, and if the task never does, the monitor
//   moves it to the global queue (RESCUE; a few ms, as Go's sysmon would).
//
// GLOBAL QUEUE: how its tasks get their turn beside busy local queues
//   * A worker takes a batch, not one task: its share (size / workers + 1),
//     at most half a local queue and no more than fits; the first runs, the
//     rest go to the tail of its local queue, where they are served in turn
//     (and can be stolen).
//   * It looks there when its own queue and run_next are empty, every 61st
//     round whatever its queue holds (running the first task taken), and on
//     the round after a wake-up from outside the pool was queued
//     (`outside_waiting_`: one relaxed load per round, of a line written
//     only when that flag changes): then it moves a batch to its queue's tail, so a
//     timer's wake-up waits behind at most one local queue, never behind
//     61 rounds per task.
//   * `yield` (Go's Gosched) puts the task on the global queue, as Go does,
//     not on the local queue: a worker whose tasks all yield would otherwise
//     never empty its queue, and the global queue would drain one task per
//     61 rounds. (A contended channel operation's step aside stays local.)
//   `gq_outside_` counts the wake-ups from outside queued and not yet taken
//   (an estimate: a take counts whatever it took against it; it never
//   exceeds the queue's size); `outside_waiting_` mirrors `gq_outside_ != 0`.
//   Both change under the global queue's lock.
//
// STOP THE WORLD
//   `stop_the_world()` raises an odd generation number. A running worker
//   acknowledges at its next safe point (between two task resumes) and waits;
//   an idle worker is taken by a compare-and-swap of its status and can leave
//   idleness only after the world restarts. A worker that has not stopped by
//   the timeout is reported (`stw_report::unstopped`); it goes on resuming
//   tasks until it reaches its next safe point, but only through run(), which
//   publishes the task in `current` before it looks for a profile epoch. So a
//   profiler that starts an epoch without every worker stopped learns, from
//   running_unclaimed(), the only tasks whose frames it must not read: those
//   the unstopped workers run without having claimed them (PROFILE EPOCHS,
//   profile_epoch.hpp). The caller's own worker, if any, counts as stopped.
//
// RUN_NEXT: the owner fills an empty slot with a plain store (a thief only
//   ever takes a task out), and empties it with a plain store too, which is
//   two locked instructions less per ping-pong round trip. That is safe
//   because a thief is rare (a starving worker) and does the fencing for both
//   with membarrier: the protocol, and why no task is taken twice, is in
//   slot_handoff.hpp. Without membarrier (old kernels, GORO_ASYM_FENCE=off)
//   the owner takes with an exchange.
//
// CLAIMED: a worker whose queue holds at least 8 tasks takes up to 4 with
//   one CAS of the queue's head (local_runq::pop_batch), runs the first and
//   keeps the others in its `claimed` slots, which it empties like run_next:
//   plain stores, with the same in_pop / steal_req handshake. So a busy
//   worker pays one locked instruction per four tasks it pops, not one each.
//   Thieves leave the slots alone, as they leave run_next, except when the
//   worker is starving (its task has run for a monitor tick while work
//   waited): then steal_slots takes the claimed tasks too, and no task
//   waits behind one that never suspends; the monitor takes them likewise
//   (RESCUE). A queue shorter than 8 is popped one at a time, so that the
//   few tasks there stay stealable. Without membarrier no worker claims.
//
// RESCUE: a worker whose task runs a whole monitor tick (10 ms) without
//   suspending, while tasks wait behind it, is `starving`. Stealing alone
//   does not save those tasks: only a worker that runs dry steals, and the
//   monitor could only wake a worker from the idle list (spares are not on
//   it, and when every other worker is busy nobody is). So at every tick
//   where a worker starves, the monitor itself takes everything queued
//   behind it (run_next, the claimed slots, the local queue) with the
//   thieves' own calls (slot_handoff::steal, local_runq::grab: no protocol
//   of its own) and puts it on the global queue as if woken from outside
//   (so each busy worker moves a share to its queue at its next round),
//   then wakes an idle worker unless one spins. If every other worker is
//   stuck too, the handoff below brings in spares, which find the work on
//   the global queue. `rescued_tasks()` counts the tasks moved.
//
// STUCK WORKERS (Go's sysmon retaking a P): a task that runs without
//   suspending (a CPU loop, a channel loop that never parks, a plain read())
//   holds its worker. The monitor (every 10 ms) marks a worker stuck when the
//   same run has lasted the handoff threshold (default 10 ms), and brings
//   another worker in to take its place: a spare (a worker thread parked by
//   an earlier handoff) or a new thread, up to a fixed capacity of worker
//   structs (made on demand, never freed, so stealers and stops of the world
//   walk a stable array [0, nlive_)). The newcomer wakes as a spinner and
//   finds the stuck worker's tasks on the global queue (RESCUE), or steals
//   them (the stuck worker is `starving`); the stuck worker keeps owning its
//   queue (only steals cross). So size() workers keep running tasks. When
//   the stuck task suspends, its worker counts itself unstuck and, one
//   worker too many now, hands its queued tasks to the global queue and
//   parks as a spare.
//   Counts (under procs_mu_, read anywhere): nactive_ (not spare, stuck
//   included), nstuck_; a surplus (nactive_ - nstuck_ > size(), also after
//   set_max_procs shrinks) raises `rebalance_`, which every worker reads at
//   its safe point beside stop_gen_, and the first to see it retires.
//   A spare parks with status idle, so a stop of the world holds it like an
//   idle worker; a worker started during a stop sees the odd generation at its
//   first safe point (the stop raises it before it reads nlive_, the starter
//   publishes nlive_ before the thread starts; both seq_cst).
//
// PARKING PROTOCOL for awaitables that block (channels, sleep, wait groups):
//   in await_suspend(h): `park(task, h, reason)`, then publish the waiter
//   (e.g. enqueue it on a channel, under the channel's lock), and after the
//   publication never touch the awaiter or the frame again: another worker may
//   already be resuming the task. A waker calls `ready(task)` once, after
//   releasing its own locks.
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include <goro/core/frame.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/lock_rank.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/slot_handoff.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/timer.hpp>
#include <goro/core/vec.hpp>
#include <goro/core/wait_profile.hpp>

namespace goro {

namespace detail {

inline constexpr std::uint32_t runq_capacity = 256;

/// The time a parking task records: the coarse clock as of the last monitor
/// tick (every 10 ms while the pool is busy), the last worker wake-up or the
/// pool's start, so parking reads no clock. A dump shows minutes; 10 ms is
/// plenty. The wait profile compares it at a wake on a worker to find long
/// waits (wait_profile.hpp, LONG WAITS). A constinit global, not a
/// function's static: reading it checks no guard. A cache line of its own:
/// every worker's wake-up writes it, and the globals that would share its
/// line (the wait profile's rate and clock offset) are read at every wake.
struct alignas(cache_line) parked_clock_line {
    std::atomic<std::int64_t> t{0};
};
inline constinit parked_clock_line g_parked_clock{};
[[gnu::always_inline]] inline std::atomic<std::int64_t>& parked_clock() noexcept { return g_parked_clock.t; }

/// A worker's local run queue: single producer (the owner), many consumers.
class local_runq {
public:
    /// Owner only. False when full.
    bool push(task_header* t) noexcept;
    /// Owner only: takes the first task and, when at least `2 * (max + 1)`
    /// are queued, `max` more into `more` (one CAS for all; see CLAIMED).
    /// Returns the first (null when empty); `*nmore` is how many went to `more`.
    template <std::uint32_t max>
    task_header* pop_batch(std::atomic<task_header*>* more, std::uint32_t* nmore) noexcept {
        std::uint32_t h = head_.load(std::memory_order_acquire);
        for (;;) {
            const std::uint32_t tl = tail_.load(std::memory_order_relaxed);
            const std::uint32_t queued = tl - h;
            if (queued == 0) return nullptr;
            const std::uint32_t extra = queued >= 2 * (max + 1) ? max : 0;
            task_header* t = buf_[h % runq_capacity].load(std::memory_order_relaxed);
            task_header* rest[max];
            for (std::uint32_t i = 0; i < extra; ++i)
                rest[i] = buf_[(h + 1 + i) % runq_capacity].load(std::memory_order_relaxed);
            if (head_.compare_exchange_weak(h, h + 1 + extra, std::memory_order_acq_rel, std::memory_order_acquire)) {
                for (std::uint32_t i = 0; i < extra; ++i) more[i].store(rest[i], std::memory_order_relaxed);
                *nmore = extra;
                if (extra == 0) {
                    prefetch_ahead(h + 1, tl);
                } else {
                    // A pipeline by batches: the headers of the batch after
                    // next, and the frames of the next batch (whose headers
                    // were fetched a batch ago).
                    const std::uint32_t next = h + 1 + extra;
                    const std::uint32_t left = tl - next;
                    for (std::uint32_t i = max + 1; i < 2 * (max + 1) && i < left; ++i)
                        prefetch_for_write(buf_[(next + i) % runq_capacity].load(std::memory_order_relaxed));
                    for (std::uint32_t i = 0; i <= max && i < left; ++i) {
                        task_header* u = buf_[(next + i) % runq_capacity].load(std::memory_order_relaxed);
                        const char* f = static_cast<const char*>(u->resume_addr_.load(std::memory_order_relaxed));
                        prefetch_frame(f);
                    }
                }
                return t;
            }
        }
    }
    /// Owner only.
    task_header* pop() noexcept;
    /// The tasks queued behind the one just taken were most likely made or
    /// woken on another core, and each costs a miss on its header and one on
    /// its frame, one after the other (the frame's address is in the header).
    /// So a pipeline: fetch the header `header_ahead` places back, and the
    /// frame `frame_ahead` places back, whose header was fetched some pops
    /// ago. (A thief may take any of them meanwhile: headers outlive their
    /// tasks and the address is read atomically, so a stale one only costs a
    /// useless prefetch.)
    void prefetch_ahead(std::uint32_t next, std::uint32_t tl) const noexcept;

    /// The first four lines of a frame, for writing. What a resumed task
    /// touches first is its resume index, its promise and the awaiter it was
    /// suspended in (a select's, with the waiters a close just claimed),
    /// which follow one another from the frame's start; a frame is only
    /// 16-byte aligned, so that start may lie anywhere in a line. Two lines
    /// missed the resume index itself (88 bytes in, with g++) for one frame
    /// in four, and the awaiter for most: cancel_fanout's wake-ups took about
    /// a fifth less CPU time with four. (Integer arithmetic: a stale address is only
    /// ever prefetched, and a prefetch never faults.)
    static void prefetch_frame(const void* f) noexcept {
        const auto a = reinterpret_cast<std::uintptr_t>(f);
        for (std::uintptr_t i = 0; i < 4; ++i) prefetch_for_write(reinterpret_cast<const void*>(a + i * cache_line));
    }

    /// Anyone: takes up to half (at least one) of the entries into `out`.
    std::uint32_t grab(task_header** out, std::uint32_t max) noexcept;
    std::uint32_t size() const noexcept;

private:
    alignas(cache_line) std::atomic<std::uint32_t> head_{0};
    alignas(cache_line) std::atomic<std::uint32_t> tail_{0};
    alignas(cache_line) std::atomic<task_header*> buf_[runq_capacity]{};
};

enum worker_status : int { ws_running = 0, ws_idle = 1, ws_held = 2 };

/// A site another thread may read while its owner rewrites it: relaxed
/// atomics, so a reader sees one whole site or (clang, three words) a mix of
/// two, never anything but pointers to static strings.
struct site_cell {
#if GORO_HAS_SOURCE_LOCATION
    std::atomic<site> v{};
    void store(const site& s) noexcept { v.store(s, std::memory_order_relaxed); }
    site load() const noexcept { return v.load(std::memory_order_relaxed); }
#else
    std::atomic<const char*> file{""}, function{""};
    std::atomic<std::uint_least32_t> line{0};
    void store(const site& s) noexcept {
        file.store(s.file_, std::memory_order_relaxed);
        function.store(s.function_, std::memory_order_relaxed);
        line.store(s.line_, std::memory_order_relaxed);
    }
    site load() const noexcept {
        return site{file.load(std::memory_order_relaxed), function.load(std::memory_order_relaxed),
                    line.load(std::memory_order_relaxed)};
    }
#endif
};

class scheduler;

struct worker {
    scheduler* sched = nullptr;
    unsigned index = 0;
    local_runq q;
    static constexpr std::uint32_t claim_max = 3;
    // run_next, and the tasks popped with the last batch, not run yet (RUN_NEXT, CLAIMED)
    alignas(cache_line) slot_handoff<task_header, claim_max> slots;
    std::atomic<task_header*> current{nullptr};
    std::atomic<std::uint64_t> resumes{0};
    std::atomic<bool> starving{false};
    // STUCK WORKERS: set by the monitor under procs_mu_, cleared by the
    // monitor or the owner (whoever clears it counts it out of nstuck_).
    std::atomic<bool> stuck{false};
    std::atomic<std::int64_t> stuck_since_ns{0};  // when the stuck run was first seen
    site_cell resumed_at;  // where `current` was resumed (its leaf's site), stored before `current`
    alignas(cache_line) std::atomic<int> status{ws_running};
    std::atomic<std::uint32_t> acked_gen{0};
    std::atomic<std::uint32_t> wake_word{0};
    std::atomic<bool> exited{false};
    std::atomic<std::uint64_t> contention_yields{0};  // written by the owner: see step_aside
    // owner-only
    std::uint32_t tick = 0;
    std::uint32_t next_streak = 0;  // picks since the local queue was last served
    std::uint64_t rng = 0;
    bool spinning = false;
    // under the idle mutex
    bool idle_listed = false;
    // monitor-only
    std::uint64_t seen_resumes = 0;
    std::int64_t seen_since_ns = 0;  // when `seen_resumes` was first seen (the run's start, within a tick)
    std::thread thread;
};

inline thread_local constinit worker* tls_worker = nullptr;

/// Set by the netpoller (goro/io/poller.hpp) when it starts: a non-blocking
/// poll that a worker finding no work makes before it spins and before it
/// sleeps (Go's findrunnable calls netpoll(0) likewise). It readies the
/// tasks whose descriptors are ready and returns one of them to run here,
/// or null. Null when no program part uses the poller.
inline constinit std::atomic<task_header* (*)() noexcept> idle_poll_hook{nullptr};

/// Set by the netpoller too: called by a worker about to sleep (counted
/// idle, after the handshake's fence), so that when the whole pool goes
/// idle, the netpoller's thread stops leaving readiness to the workers and
/// waits on the epoll descriptor again (poller.hpp, WHO POLLS). Takes no
/// scheduler lock.
inline constinit std::atomic<void (*)() noexcept> idle_sleep_hook{nullptr};

/// What a stop of the world achieved.
struct stw_report {
    bool all_stopped = true;                  ///< every worker reached a safe point
    vec<task_header*> running;        ///< tasks running at the timeout (unstopped workers, or the caller's own)
    vec<worker*> unstopped;           ///< workers that did not reach a safe point: they may still resume tasks
};

/// Test hook: while set, workers pass their safe points without stopping, so
/// every stop of the world times out with the workers still resuming tasks
/// (how a loaded machine makes a stop miss its deadline, on demand).
inline std::atomic<bool>& stw_workers_run_through() noexcept {
    static std::atomic<bool> on{false};
    return on;
}

/// Test hook: while set, no worker steals (from another's queue or slots)
/// nor counts another's queue as work to stay awake for, so a task queued
/// behind a task that never suspends runs only if the monitor rescues it
/// (RESCUE).
inline std::atomic<bool>& workers_never_steal() noexcept {
    static std::atomic<bool> on{false};
    return on;
}

class scheduler {
public:
    explicit scheduler(unsigned nworkers);

    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;

    /// Stops the workers after their current task and the timer thread. Tasks
    /// still queued or parked are not run again; their frames stay listed.
    /// Called by a worker (std::exit inside a task runs the pool holder's
    /// destructor on that worker), it does not wait for its own thread: that
    /// one is in the middle of a task and goes on into exit.
    void shutdown() noexcept;

    /// The number of workers that run tasks (GORO_MAXPROCS; set_max_procs).
    unsigned size() const noexcept { return procs_.load(std::memory_order_relaxed); }
    /// Workers taking part now: size() plus those stuck in a task (and,
    /// for a moment, one about to retire).
    int active_workers() const noexcept { return nactive_.load(std::memory_order_relaxed); }
    /// Worker threads started so far (active, stuck and spare).
    unsigned live_workers() const noexcept { return nlive_.load(std::memory_order_acquire); }
    bool stopping() const noexcept { return shutdown_.load(std::memory_order_relaxed); }

    /// A new root task: this worker's local queue, or the global queue.
    void spawn(task_header* t) noexcept;

    /// Makes a parked task runnable. Call once per park, from any thread,
    /// holding no lock that the task may take.
    [[gnu::always_inline]] void ready(task_header* t) noexcept {
        worker* w = tls_worker;
        if (const std::int64_t rate = wait_profile_rate_n.load(std::memory_order_relaxed)) [[unlikely]]
            wait_profile_wake(t, rate, wake_clock(w));  // wait_profile.hpp
        t->state.store(task_state::runnable, std::memory_order_relaxed);
        // An empty slot is filled with a plain store: a thief only ever
        // exchanges a non-null value out, so none can be lost or doubled.
        // (One locked instruction less per hand-off: half of ping-pong.)
        if (w && w->sched == this && w->slots.offer_next(t)) return;  // runs when the current task suspends
        ready_slow(t, w);
    }

private:
    /// The coarse clock at a wake, for the wait profile's long-wait test: on
    /// a worker of this pool the parked clock (a tick old at most, as the
    /// pool is busy); elsewhere the pool may be idle and its clock stale, so
    /// CLOCK_MONOTONIC_COARSE (such a wake goes through the global queue).
    std::int64_t wake_clock(const worker* w) const noexcept;

    void ready_slow(task_header* t, worker* w) noexcept;

public:

    /// Makes many parked tasks runnable at once (a close or a cancel waking
    /// all its waiters): onto this worker's queue, or off the pool onto the
    /// global queue in one hold of its lock; idle workers are woken once.
    void ready_n(task_header* const* ts, std::size_t n) noexcept;

    /// Puts the current task on the global queue, behind the work there
    /// (Go's Gosched; see GLOBAL QUEUE). No idle worker is woken: this
    /// worker looks at the global queue at the latest when its own queue
    /// runs dry, and a spinning worker takes it sooner.
    void gosched(task_header* t) noexcept;

    /// Puts the current task at the back of this worker's queue (a step
    /// aside after a contended channel operation).
    void yield_task(task_header* t) noexcept;

    /// Makes room in the global queue for `need` tasks. The new ring is
    /// allocated and its pages touched (zeroed) before the lock is taken, and
    /// the old one freed after; under the lock, only the queued pointers are
    /// copied. Spawn calls it as the number of tasks doubles (go.hpp), so
    /// that thousands of tasks woken at once (a close, a cancel) overflow
    /// into a ring that has room, rather than one that grows, page by page,
    /// while every worker waits on its lock.
    void reserve_global(std::size_t need) noexcept;

    timer_queue& timers() noexcept { return timers_; }

    /// Tasks that stepped aside after a contended channel operation, all
    /// workers together (for tests and diagnostics).
    std::uint64_t contention_yields() const noexcept;

    // --- stop the world ---------------------------------------------------

    /// Stops every worker at a safe point, waiting at most `timeout` for each.
    /// Pair with start_the_world(); one stop at a time.
    stw_report stop_the_world(std::chrono::nanoseconds timeout = std::chrono::milliseconds(100));

    /// Call after a stop that left workers running (`rep.unstopped`) and
    /// after setting the profile epoch's `active` flag: the tasks those
    /// workers may be running without having claimed them for the epoch.
    /// Every other resume from now on claims its task first (PROFILE EPOCHS).
    ///
    /// Why this is all of them: run() stores the task in `current` and only
    /// then loads `active`; this stores `active`, fences, then loads every
    /// unstopped worker's `current` (a Dekker handshake: with membarrier the
    /// worker's side is a compiler barrier, without it both sides are
    /// sequentially consistent). A resume that read `active` false therefore
    /// published its task before the fence, and the load below sees that
    /// task, or a later value stored after that run had ended.
    vec<task_header*> running_unclaimed(const stw_report& rep);

    /// The site a worker resumed `t` at, if some worker runs `t` now: for a
    /// dump of a task running on a worker that did not stop. False when no
    /// worker runs it, or the site is unknown (it has not suspended yet).
    bool running_site(const task_header* t, site& out) const noexcept;

    void start_the_world();

    /// Tasks the monitor has moved from behind a task that did not suspend
    /// to the global queue, so far (RESCUE; for tests and diagnostics).
    std::uint64_t rescued_tasks() const noexcept { return rescued_.load(std::memory_order_relaxed); }

    /// Number of workers parked idle now (for the deadlock detector and metrics).
    int idle_workers() const noexcept { return nidle_.load(std::memory_order_relaxed); }
    std::size_t global_queue_size() const noexcept { return gq_size_.load(std::memory_order_relaxed); }
    /// The workers started so far (active, stuck and spare); a stable array.
    std::span<const std::unique_ptr<worker>> workers() const noexcept {
        return {workers_.data(), nlive_.load(std::memory_order_seq_cst)};
    }

private:
    // --- queues -----------------------------------------------------------

    void local_push(worker& w, task_header* t) noexcept;

    void global_push(task_header* t) noexcept { global_push_n(&t, 1, false); }

    // The global queue is a ring of pointers: moving tasks in and out never
    // touches the tasks themselves (each would be a cache miss).
    // `outside`: woken or spawned from outside the pool (see GLOBAL QUEUE).
    void global_push_n(task_header* const* ts, std::size_t n, bool outside = false) noexcept;

    /// Takes a share of the global queue: returns one, moves the rest to the
    /// tail of `w`'s queue (GLOBAL QUEUE).
    task_header* global_get(worker& w, std::size_t max) noexcept;

    /// After a wake-up from outside: moves a share of the global queue to
    /// the tail of `w`'s queue, behind the tasks already there (GLOBAL QUEUE).
    /// Nothing when that queue is half full: it has work enough for now.
    void global_refill(worker& w) noexcept;

    /// Owner only. Takes up to a share of the global queue (its size /
    /// workers + 1, at most `max`, at most what `w`'s queue has room for):
    /// with `first`, the first taken goes there and the rest to `w`'s queue;
    /// without, all go to the queue. Returns how many were taken.
    std::size_t global_take(worker& w, std::size_t max, task_header** first) noexcept;

    bool stealable_work() const noexcept;

    task_header* steal(worker& self) noexcept;

    /// Owner only: empties run_next, returning what it held (RUN_NEXT).
    task_header* take_run_next(worker& w) noexcept { return w.slots.take_next(asym_fence_); }

    /// Owner only: the next task of its queue, claiming a batch when the
    /// queue is long (CLAIMED).
    task_header* pop_local(worker& w) noexcept;

    /// A thief takes a starving worker's run_next and claimed tasks (RUN_NEXT,
    /// CLAIMED): returns one, queues the others on `self`.
    task_header* steal_slots(worker& self, worker& v) noexcept;

    static std::uint64_t next_rand(worker& w) noexcept;

    // --- idle workers -----------------------------------------------------

    /// The waker's half of IDLE WORKERS' handshake. `local`: the work went to
    /// this worker's own queue, so no fence (see IDLE WORKERS AND WAKE-UPS).
    void wake_if_needed(bool local) noexcept;

    void wake_one() noexcept;

    void stop_spinning(worker& w) noexcept;

    /// Becomes runnable again after idling; waits while the world is stopped.
    void claim_running(worker& w) noexcept;

    void hold_at_safe_point(worker& w) noexcept;

    /// Finds the next task, sleeping when there is none. Null: look at the
    /// stop and shutdown flags.
    task_header* find_runnable(worker& w) noexcept;

    /// The usual case of find_runnable_or_sleep, inline: a task of this
    /// worker's own (run_next, claimed, local queue) on a round that does
    /// not look at the global queue first. Null: ask the full search.
    [[gnu::always_inline]] task_header* find_local(worker& w) noexcept {
        if ((w.tick + 1) % 61 == 0 || (w.next_streak + 1) % 64 == 0 ||
            outside_waiting_.load(std::memory_order_relaxed))
            return nullptr;
        ++w.tick;
        ++w.next_streak;
        return pick_own(w, true);
    }

    /// A task of this worker's own: run_next first (the task just woken here:
    /// warm caches), but not forever: two tasks that wake each other would
    /// keep the slot full and starve the queue behind it (Go ends such a
    /// chain with its 10 ms time slice), so every 64th pick in a row
    /// (`next_first` false) takes the queue first.
    task_header* pick_own(worker& w, bool next_first) noexcept;

    task_header* find_runnable_or_sleep(worker& w) noexcept;

    void go_idle(worker& w) noexcept;

    void run(worker& w, task_header* t) noexcept;

    void worker_main(worker& w) noexcept;

    // --- monitor (every 10 ms on the timer thread while busy) --------------

    static void tick_thunk(void* self) noexcept { static_cast<scheduler*>(self)->monitor(); }
    /// The timer thread's batch of woken tasks (timer.hpp): onto the global
    /// queue in one hold of its lock, and one idle worker woken (a spinner
    /// that finds work wakes the next).
    static void timer_wake_thunk(void* self, task_header* const* ts, std::size_t n) noexcept;

    void monitor() noexcept;

    /// Monitor, at a tick where `v`'s task has run the whole tick while work
    /// waited behind it (RESCUE): moves that work (run_next, the claimed
    /// slots, the local queue) to the global queue, taking it as any thief
    /// does (slot_handoff::steal, local_runq::grab), then wakes an idle worker
    /// unless one spins. `v`'s owner may push meanwhile: what it pushes after
    /// the last grab waits for the next tick (or for a thief).
    void rescue(worker& v) noexcept;

    // --- stuck workers, spares, set_max_procs (STUCK WORKERS) --------------

    static unsigned worker_capacity(unsigned procs) noexcept {
        // Room for set_max_procs to grow and for a stuck worker's
        // replacements; worker structs are made on demand, so an unused
        // entry costs one pointer.
        return std::max(4 * procs, procs + 1024);
    }

    void make_worker(unsigned i);

    /// Monitor: marks the workers stuck past the threshold, unmarks those
    /// that moved, and starts replacements for the stuck ones.
    void hand_off(std::int64_t now, std::int64_t threshold) noexcept;

    /// procs_mu_ held: activates spares (or starts workers) until size()
    /// workers are active and not stuck; asks the surplus to retire.
    void rebalance_locked() noexcept;

    /// procs_mu_ held: one more active worker, a spare woken or a thread
    /// started. False when none can be had (capacity, shutdown, no thread).
    bool activate_locked() noexcept;

    /// Owner, after a run the monitor marked stuck: counts itself unstuck,
    /// and retires if that makes one worker too many.
    void unstuck(worker& w) noexcept;

    /// Owner, at a safe point: becomes a spare if more than size() workers
    /// are active and not stuck.
    void maybe_retire(worker& w) noexcept;

    /// Owner: hands its queued tasks to the others, then sleeps until
    /// activated (activate_locked) or the pool shuts down.
    void park_spare(worker& w) noexcept;

public:
    /// Changes the number of workers that run tasks (set_max_procs at run
    /// time): more are activated at once; the surplus retire at their next
    /// safe point.
    void set_procs(unsigned n);

    /// How long a task may run without suspending before its worker is
    /// replaced (STUCK WORKERS). Zero turns the handoff off.
    void set_handoff_threshold(std::chrono::nanoseconds d) noexcept {
        handoff_threshold_ns_.store(d.count(), std::memory_order_relaxed);
    }
    std::chrono::nanoseconds handoff_threshold() const noexcept {
        return std::chrono::nanoseconds(handoff_threshold_ns_.load(std::memory_order_relaxed));
    }

    /// Workers the monitor sees stuck in one task now, and the longest for how long.
    std::pair<unsigned, std::chrono::nanoseconds> stuck_now() const noexcept;

private:

    vec<std::unique_ptr<worker>> workers_;  // fixed size (capacity); [0, nlive_) made and started
    alignas(cache_line) std::atomic<unsigned> nlive_{0};
    std::atomic<unsigned> procs_{0};    // size(): workers meant to run tasks
    std::atomic<int> nactive_{0};       // workers not spare (stuck ones included); written under procs_mu_
    std::atomic<int> nstuck_{0};        // active workers marked stuck; written under procs_mu_
    std::atomic<std::int64_t> handoff_threshold_ns_{10'000'000};
    ranked_lock<std::mutex, lock_rank::scheduler_procs> procs_mu_;
    vec<worker*> spares_;       // under procs_mu_
    timer_queue timers_;
    const bool asym_fence_;  // membarrier available: run_next is taken without a locked instruction

    alignas(cache_line) ranked_lock<spinlock, lock_rank::global_queue> gq_lock_;
    vec<task_header*> gq_ring_;  // power-of-two capacity (or empty); grows only (reserve_global)
    std::atomic<std::size_t> gq_cap_{0};  // gq_ring_.size(), for a check without the lock
    std::size_t gq_head_ = 0;
    std::size_t gq_outside_ = 0;  // wake-ups from outside not yet taken (GLOBAL QUEUE)
    alignas(cache_line) std::atomic<std::size_t> gq_size_{0};
    // Read by every worker every round: on a line of its own, written only
    // when it changes, so that a pool with no wake-up from outside reads it
    // from its own cache.
    alignas(cache_line) std::atomic<bool> outside_waiting_{false};

    alignas(cache_line) ranked_lock<std::mutex, lock_rank::scheduler_idle> idle_mu_;
    vec<worker*> idle_;
    alignas(cache_line) std::atomic<int> nidle_{0};
    alignas(cache_line) std::atomic<int> nspinning_{0};

    alignas(cache_line) std::atomic<std::uint32_t> stop_gen_{0};
    // Read by every worker every round beside stop_gen_, on its line: a
    // surplus of active workers (STUCK WORKERS).
    std::atomic<bool> rebalance_{false};
    ranked_lock<std::mutex, lock_rank::stop_the_world> stw_mu_;
    vec<unsigned char> held_by_me_;  // by worker index: stopped by this stop of the world

    std::atomic<bool> shutdown_{false};
    std::atomic<std::uint64_t> rescued_{0};  // tasks the monitor moved to the global queue (RESCUE)
};

// --- the process-wide pool -------------------------------------------------

inline std::atomic<unsigned>& requested_procs() noexcept {
    static std::atomic<unsigned> n{0};
    return n;
}

GORO_DECL unsigned default_procs();

struct pool_holder {
    std::atomic<scheduler*> pool{nullptr};
    ranked_lock<std::mutex, lock_rank::pool_holder> mu;
    ~pool_holder() {
        // Static destruction at exit: stop the workers so they do not run user
        // code against destroyed globals. The scheduler object itself is kept
        // (parked frames may still refer to it).
        if (scheduler* s = pool.load()) s->shutdown();
    }
};

inline pool_holder& the_pool_holder() {
    static pool_holder h;
    return h;
}

// The pool once made, for the hot paths: a plain global needs no guard of a
// function-local static (the holder's destructor makes it need one).
inline constinit std::atomic<scheduler*> g_scheduler{nullptr};

[[gnu::noinline]] inline scheduler& make_the_scheduler() {
    pool_holder& h = the_pool_holder();
    std::lock_guard g(h.mu);
    if (scheduler* s = h.pool.load(std::memory_order_relaxed)) return *s;
    unsigned n = requested_procs().load();
    auto* s = new scheduler(n ? n : default_procs());
    h.pool.store(s, std::memory_order_release);
    g_scheduler.store(s, std::memory_order_release);
    return *s;
}

[[gnu::always_inline]] inline scheduler& the_scheduler() {
    if (scheduler* s = g_scheduler.load(std::memory_order_acquire)) return *s;
    return make_the_scheduler();
}

inline bool pool_started() noexcept {
    return the_pool_holder().pool.load(std::memory_order_acquire) != nullptr;
}

/// Marks the current task parked on `reason`; `h` is the frame to resume.
GORO_DECL void park(task_header* t, std::coroutine_handle<> h, const char* reason) noexcept;

/// Makes a parked task runnable (see the PARKING PROTOCOL above).
inline void ready(task_header* t) noexcept { the_scheduler().ready(t); }

/// True when the calling thread is a worker with another task waiting to run
/// (a moment's view).
inline bool local_work_waiting() noexcept {
    worker* w = tls_worker;
    return w && (w->slots.peek_next() || w->q.size() || w->slots.has_claimed());
}

/// The current task `t`, on a worker, steps aside after a contended channel
/// operation: it goes behind the tasks runnable here, to resume at `h`.
[[gnu::noinline]] inline void step_aside(task_header* t, std::coroutine_handle<> h) noexcept {
    t->set_resume_point(h);
    std::atomic<std::uint64_t>& n = tls_worker->contention_yields;
    n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    the_scheduler().yield_task(t);
}
inline void ready_n(task_header* const* ts, std::size_t n) noexcept { the_scheduler().ready_n(ts, n); }

/// The task running on this thread now; throws when there is none.
GORO_DECL task_header* current_task_or_throw(const char* op);

}  // namespace detail

/// Sets the number of workers that run tasks at once (Go's GOMAXPROCS(n)).
/// Before the pool starts it sets the pool's size; afterwards the pool grows
/// at once (spare or new threads), or shrinks as the surplus workers reach
/// their next safe point (they park as spares). Queued tasks are never lost.
GORO_DECL void set_max_procs(unsigned n);

/// The number of workers that run tasks at once (starts the pool if needed).
inline unsigned max_procs() { return detail::the_scheduler().size(); }

/// Workers stuck in one task (running without a suspension past the handoff
/// threshold, see STUCK WORKERS in goro/core/scheduler.hpp) now.
struct stuck_workers_info {
    unsigned count = 0;                     ///< workers stuck now (each replaced by another thread)
    std::chrono::nanoseconds longest{0};    ///< how long the longest-stuck one has run its task
};

/// A moment's view of the stuck workers (for metrics: 0 when the pool has not started).
GORO_DECL stuck_workers_info stuck_workers() noexcept;

/// How long a task may run without suspending before the monitor hands its
/// worker's place and queue to another thread (default 10 ms; checked every
/// 10 ms, so a handoff comes 10 to 20 ms after the task started). Zero turns
/// the handoff off.
inline void set_handoff_threshold(std::chrono::nanoseconds d) {
    if (d.count() < 0) throw usage_error("goro::set_handoff_threshold: the threshold must not be negative");
    detail::the_scheduler().set_handoff_threshold(d);
}

}  // namespace goro

#if GORO_BODIES

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <goro/core/algo.hpp>

namespace goro::detail {

GORO_DECL bool local_runq::push(task_header* t) noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    std::uint32_t tl = tail_.load(std::memory_order_relaxed);
    if (tl - h >= runq_capacity) return false;
    buf_[tl % runq_capacity].store(t, std::memory_order_relaxed);
    tail_.store(tl + 1, std::memory_order_release);
    return true;
}

GORO_DECL task_header* local_runq::pop() noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    for (;;) {
        std::uint32_t tl = tail_.load(std::memory_order_relaxed);
        if (h == tl) return nullptr;
        task_header* t = buf_[h % runq_capacity].load(std::memory_order_relaxed);
        if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
            prefetch_ahead(h + 1, tl);
            return t;
        }
    }
}

GORO_DECL void local_runq::prefetch_ahead(std::uint32_t next, std::uint32_t tl) const noexcept {
    constexpr std::uint32_t header_ahead = 4, frame_ahead = 2;
    const std::uint32_t queued = tl - next;
    if (queued > header_ahead) {
        task_header* t = buf_[(next + header_ahead) % runq_capacity].load(std::memory_order_relaxed);
        prefetch_for_write(t);  // one line: the cold part is the spawner's (see task_header)
    } else if (queued) {
        // A short queue: no time to wait for a pipeline, fetch the next header.
        prefetch_for_write(buf_[next % runq_capacity].load(std::memory_order_relaxed));
    }
    if (queued > frame_ahead) {
        task_header* t = buf_[(next + frame_ahead) % runq_capacity].load(std::memory_order_relaxed);
        const char* f = static_cast<const char*>(t->resume_addr_.load(std::memory_order_relaxed));
        prefetch_frame(f);
    }
}

GORO_DECL std::uint32_t local_runq::grab(task_header** out, std::uint32_t max) noexcept {
    for (;;) {
        std::uint32_t h = head_.load(std::memory_order_acquire);
        std::uint32_t tl = tail_.load(std::memory_order_acquire);
        std::uint32_t n = tl - h;
        n = n - n / 2;
        if (n == 0) return 0;
        if (n > runq_capacity / 2) continue;  // read head and tail at different times: retry
        n = std::min(n, max);
        for (std::uint32_t i = 0; i < n; ++i) out[i] = buf_[(h + i) % runq_capacity].load(std::memory_order_relaxed);
        if (head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel, std::memory_order_acquire))
            return n;
    }
}

GORO_DECL std::uint32_t local_runq::size() const noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    std::uint32_t tl = tail_.load(std::memory_order_acquire);
    return tl - h;
}

GORO_DECL scheduler::scheduler(unsigned nworkers)
    : timers_(&scheduler::tick_thunk, this, &scheduler::timer_wake_thunk), asym_fence_(asym_fence_available()) {
    parked_clock().store(coarse_now_ns(), std::memory_order_relaxed);  // before any task can park
    if (nworkers == 0) nworkers = 1;
    workers_.resize(worker_capacity(nworkers));
    for (unsigned i = 0; i < nworkers; ++i) make_worker(i);
    procs_.store(nworkers, std::memory_order_relaxed);
    nactive_.store(static_cast<int>(nworkers), std::memory_order_relaxed);
    nlive_.store(nworkers, std::memory_order_release);
    for (unsigned i = 0; i < nworkers; ++i) {
        worker* wp = workers_[i].get();
        wp->thread = std::thread([this, wp] { worker_main(*wp); });
    }
    // Workers start running (spinning), not idle, so none passes through
    // claim_running() until it has slept once: ask for the monitor's
    // ticks now, or work stuck behind a task that never suspends in a
    // young pool would never be rescued.
    timers_.want_ticks();
}

GORO_DECL void scheduler::shutdown() noexcept {
    if (shutdown_.exchange(true)) return;
    worker* self = tls_worker && tls_worker->sched == this ? tls_worker : nullptr;
    timers_.stop();
    // No worker starts after this (activate_locked looks at shutdown_ under procs_mu_).
    { std::lock_guard g(procs_mu_); }
    const unsigned live = nlive_.load(std::memory_order_acquire);
    {
        std::lock_guard g(idle_mu_);
        for (worker* w : idle_) w->idle_listed = false;
        idle_.clear();
        nidle_.store(0);
    }
    for (unsigned i = 0; i < live; ++i) {
        worker* w = workers_[i].get();
        w->wake_word.store(1, std::memory_order_release);
        w->wake_word.notify_one();
    }
    stop_gen_.fetch_add(2);
    stop_gen_.notify_all();
    // A worker stuck in a task that never suspends cannot be joined: give
    // them a bounded time, then leave the stuck ones behind (the process is exiting).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (unsigned i = 0; i < live; ++i) {
        worker* w = workers_[i].get();
        if (w == self) {
            w->thread.detach();
            continue;
        }
        while (!w->exited.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        if (w->exited.load(std::memory_order_acquire)) w->thread.join();
        else w->thread.detach();
    }
}

GORO_DECL void scheduler::spawn(task_header* t) noexcept {
    t->state.store(task_state::runnable, std::memory_order_relaxed);
    worker* w = tls_worker;
    const bool local = w && w->sched == this;
    if (local) local_push(*w, t);
    else global_push_n(&t, 1, true);
    wake_if_needed(local);
}

GORO_DECL std::int64_t scheduler::wake_clock(const worker* w) const noexcept {
    if (w && w->sched == this) [[likely]]
        return parked_clock().load(std::memory_order_relaxed);
    return coarse_now_ns();
}

[[gnu::noinline]] GORO_DECL void scheduler::ready_slow(task_header* t, worker* w) noexcept {
    if (w && w->sched == this) {
        task_header* old = w->slots.swap_next(t);
        if (!old) return;
        local_push(*w, old);
        wake_if_needed(true);
    } else if (timer_wakes* b = tls_timer_wakes; b && b->owner == this) {
        b->tasks.push_back(t);  // the timer thread hands its batch over at once (timer.hpp)
    } else {
        global_push_n(&t, 1, true);
        wake_if_needed(false);
    }
}

GORO_DECL void scheduler::ready_n(task_header* const* ts, std::size_t n) noexcept {
    if (n == 0) return;
    if (n == 1) {
        ready(ts[0]);
        return;
    }
    worker* w = tls_worker;
    if (const std::int64_t rate = wait_profile_rate_n.load(std::memory_order_relaxed)) [[unlikely]] {
        const std::int64_t now = wake_clock(w);  // wait_profile.hpp
        for (std::size_t i = 0; i < n; ++i) wait_profile_wake(ts[i], rate, now);
    }
    for (std::size_t i = 0; i < n; ++i) ts[i]->state.store(task_state::runnable, std::memory_order_relaxed);
    const bool local = w && w->sched == this;
    if (local) {
        for (std::size_t i = 0; i < n; ++i) local_push(*w, ts[i]);
    } else if (timer_wakes* b = tls_timer_wakes; b && b->owner == this) {
        for (std::size_t i = 0; i < n; ++i) b->tasks.push_back(ts[i]);
        return;
    } else {
        global_push_n(ts, n, true);
    }
    wake_if_needed(local);
}

GORO_DECL void scheduler::gosched(task_header* t) noexcept {
    t->state.store(task_state::runnable, std::memory_order_relaxed);
    worker* w = tls_worker;
    global_push(t);
    if (!w || w->sched != this) wake_if_needed(false);
}

GORO_DECL void scheduler::yield_task(task_header* t) noexcept {
    t->state.store(task_state::runnable, std::memory_order_relaxed);
    worker* w = tls_worker;
    const bool local = w && w->sched == this;
    if (local) {
        // Behind everything runnable here, including a task in run_next.
        if (task_header* rn = w->slots.swap_next(nullptr)) local_push(*w, rn);
        local_push(*w, t);
    } else {
        global_push(t);
    }
    wake_if_needed(local);
}

GORO_DECL void scheduler::reserve_global(std::size_t need) noexcept {
    if (need <= gq_cap_.load(std::memory_order_relaxed)) return;
    const std::size_t cap = std::bit_ceil(std::max<std::size_t>(need, 1024));
    vec<task_header*> ring(cap);  // declared before the guard: the old ring is freed unlocked
    std::lock_guard g(gq_lock_);
    const std::size_t old_cap = gq_ring_.size();
    if (old_cap >= cap) return;  // another thread grew it meanwhile
    const std::size_t sz = gq_size_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < sz; ++i) ring[i] = gq_ring_[(gq_head_ + i) & (old_cap - 1)];
    gq_ring_.swap(ring);
    gq_head_ = 0;
    gq_cap_.store(cap, std::memory_order_relaxed);
}

GORO_DECL std::uint64_t scheduler::contention_yields() const noexcept {
    std::uint64_t n = 0;
    for (auto& w : workers()) n += w->contention_yields.load(std::memory_order_relaxed);
    return n;
}

GORO_DECL stw_report scheduler::stop_the_world(std::chrono::nanoseconds timeout) {
    stw_mu_.lock();
    stw_report rep;
    std::uint32_t gen = stop_gen_.fetch_add(1, std::memory_order_seq_cst) + 1;  // odd: stop
    worker* self = tls_worker && tls_worker->sched == this ? tls_worker : nullptr;
    held_by_me_.assign(workers_.size(), false);
    vec<worker*> pending;
    // A worker started after this load sees the odd generation at its
    // first safe point and holds there (both sides seq_cst: STUCK WORKERS).
    for (auto& w : workers())
        if (w.get() != self) pending.push_back(w.get());
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int rounds = 0;
    while (!pending.empty()) {
        for (std::size_t i = 0; i < pending.size();) {
            worker* w = pending[i];
            int st = ws_idle;
            bool done = false;
            if (w->acked_gen.load(std::memory_order_acquire) == gen) done = true;
            else if (w->status.compare_exchange_strong(st, ws_held, std::memory_order_acq_rel)) {
                held_by_me_[w->index] = true;
                done = true;
            } else if (w->exited.load(std::memory_order_acquire)) {
                done = true;
            }
            if (done) {
                pending[i] = pending.back();
                pending.pop_back();
            } else {
                ++i;
            }
        }
        if (pending.empty()) break;
        if (std::chrono::steady_clock::now() > deadline) break;
        if (++rounds < 100) cpu_relax();
        else std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    if (!pending.empty()) rep.all_stopped = false;
    for (worker* w : pending)
        if (task_header* t = w->current.load(std::memory_order_acquire)) rep.running.push_back(t);
    if (self && tls_current_task) rep.running.push_back(tls_current_task);
    rep.unstopped = std::move(pending);
    return rep;
}

GORO_DECL vec<task_header*> scheduler::running_unclaimed(const stw_report& rep) {
    vec<task_header*> out;
    if (rep.unstopped.empty()) return out;
    if (asym_fence_) asym_fence_heavy();
    else seq_fence();
    for (worker* w : rep.unstopped)
        if (task_header* t = w->current.load(std::memory_order_seq_cst)) out.push_back(t);
    return out;
}

GORO_DECL bool scheduler::running_site(const task_header* t, site& out) const noexcept {
    for (auto& w : workers()) {
        if (w->current.load(std::memory_order_acquire) != t) continue;
        site s = w->resumed_at.load();
        // Best effort (no fence: TSan does not model one): the site was
        // stored before `current`, and a worker that moved on is seen here.
        if (w->current.load(std::memory_order_seq_cst) != t) return false;  // moved on: unknown
        if (!s.function_name() || !*s.function_name() || s.line() == 0) return false;
        out = s;
        return true;
    }
    return false;
}

GORO_DECL void scheduler::start_the_world() {
    for (auto& w : workers())
        if (held_by_me_[w->index]) w->status.store(ws_idle, std::memory_order_release);
    stop_gen_.fetch_add(1, std::memory_order_seq_cst);  // even: run
    stop_gen_.notify_all();
    stw_mu_.unlock();
}

GORO_DECL void scheduler::local_push(worker& w, task_header* t) noexcept {
    if (w.q.push(t)) return;
    // Full: move half of it and `t` to the global queue.
    task_header* batch[runq_capacity / 2 + 1];
    std::uint32_t n = w.q.grab(batch, runq_capacity / 2);
    batch[n++] = t;
    global_push_n(batch, n);
}

GORO_DECL void scheduler::global_push_n(task_header* const* ts, std::size_t n, bool outside) noexcept {
    for (;;) {
        std::size_t need;
        {
            std::lock_guard g(gq_lock_);
            std::size_t sz = gq_size_.load(std::memory_order_relaxed);
            need = sz + n;
            if (need <= gq_ring_.size()) {
                std::size_t mask = gq_ring_.size() - 1;
                for (std::size_t i = 0; i < n; ++i) gq_ring_[(gq_head_ + sz + i) & mask] = ts[i];
                gq_size_.store(sz + n, std::memory_order_release);
                if (outside) {
                    gq_outside_ += n;
                    if (!outside_waiting_.load(std::memory_order_relaxed))
                        outside_waiting_.store(true, std::memory_order_relaxed);
                }
                return;
            }
        }
        // Full: a bigger ring is made with the lock released (reserve_global), then try again.
        reserve_global(2 * need);
    }
}

GORO_DECL task_header* scheduler::global_get(worker& w, std::size_t max) noexcept {
    task_header* first = nullptr;
    global_take(w, max, &first);
    return first;
}

GORO_DECL void scheduler::global_refill(worker& w) noexcept {
    if (w.q.size() >= runq_capacity / 2) return;
    global_take(w, runq_capacity / 2, nullptr);
}

GORO_DECL std::size_t scheduler::global_take(worker& w, std::size_t max, task_header** first) noexcept {
    if (gq_size_.load(std::memory_order_acquire) == 0) return 0;
    // Thieves only shrink the queue, so the room seen here can only grow.
    const std::size_t room = runq_capacity - w.q.size() + (first ? 1 : 0);
    std::lock_guard g(gq_lock_);
    std::size_t sz = gq_size_.load(std::memory_order_relaxed);
    if (sz == 0) return 0;
    std::size_t n = std::min(std::min(sz, sz / size() + 1), std::min(std::min(max, room), std::size_t(runq_capacity / 2)));
    if (n == 0) return 0;
    std::size_t mask = gq_ring_.size() - 1;
    std::size_t taken = 0;
    if (first) {
        *first = gq_ring_[gq_head_];
        taken = 1;
    }
    for (; taken < n; ++taken)
        if (!w.q.push(gq_ring_[(gq_head_ + taken) & mask])) break;  // cannot happen (room); stay safe
    gq_head_ = (gq_head_ + taken) & mask;
    gq_size_.store(sz - taken, std::memory_order_release);
    gq_outside_ = std::min(gq_outside_ - std::min(gq_outside_, taken), sz - taken);
    if (gq_outside_ == 0 && outside_waiting_.load(std::memory_order_relaxed))
        outside_waiting_.store(false, std::memory_order_relaxed);
    return taken;
}

GORO_DECL bool scheduler::stealable_work() const noexcept {
    if (gq_size_.load(std::memory_order_acquire)) return true;
    if (workers_never_steal().load(std::memory_order_relaxed)) [[unlikely]]
        return false;
    for (auto& w : workers())
        if (w->q.size()) return true;
    return false;
}

GORO_DECL task_header* scheduler::steal(worker& self) noexcept {
    if (workers_never_steal().load(std::memory_order_relaxed)) [[unlikely]]
        return nullptr;
    const std::size_t n = nlive_.load(std::memory_order_acquire);
    if (n < 2) return nullptr;
    for (int round = 0; round < 4; ++round) {
        std::size_t start = static_cast<std::size_t>(next_rand(self) % n);
        for (std::size_t k = 0; k < n; ++k) {
            worker& v = *workers_[(start + k) % n];
            if (&v == &self) continue;
            task_header* batch[runq_capacity / 2];
            std::uint32_t got = v.q.grab(batch, runq_capacity / 2);
            if (got) {
                // The first ones out of our queue: fetch their headers
                // now (local_runq::prefetch_ahead keeps it up from there).
                for (std::uint32_t i = 1; i < got && i <= 5; ++i) prefetch_for_write(batch[i]);
                for (std::uint32_t i = 1; i < got; ++i) self.q.push(batch[i]);
                return batch[0];
            }
            if (round == 3 && v.starving.load(std::memory_order_relaxed))
                if (task_header* t = steal_slots(self, v)) return t;
        }
    }
    return nullptr;
}

GORO_DECL task_header* scheduler::pop_local(worker& w) noexcept {
    if (task_header* t = w.slots.take_claimed(asym_fence_)) return t;
    if (!asym_fence_) return w.q.pop();
    std::uint32_t n = 0;
    task_header* t = w.q.pop_batch<worker::claim_max>(w.slots.claim_slots(), &n);
    w.slots.claimed_filled(n);
    return t;
}

GORO_DECL task_header* scheduler::steal_slots(worker& self, worker& v) noexcept {
    task_header* got[1 + worker::claim_max];
    const std::uint32_t n = v.slots.steal(got, asym_fence_);
    if (n == 0) return nullptr;
    for (std::uint32_t i = 1; i < n; ++i)
        if (!self.q.push(got[i])) global_push(got[i]);  // (a thief's queue is empty: there is room)
    return got[0];
}

GORO_DECL std::uint64_t scheduler::next_rand(worker& w) noexcept {
    w.rng ^= w.rng << 13;
    w.rng ^= w.rng >> 7;
    w.rng ^= w.rng << 17;
    return w.rng;
}

GORO_DECL void scheduler::wake_if_needed(bool local) noexcept {
    if (!local) seq_fence();
    if (nspinning_.load(std::memory_order_seq_cst) == 0 && nidle_.load(std::memory_order_seq_cst) > 0)
        wake_one();
}

GORO_DECL void scheduler::wake_one() noexcept {
    worker* w = nullptr;
    {
        std::lock_guard g(idle_mu_);
        if (idle_.empty()) return;
        w = idle_.back();
        idle_.pop_back();
        w->idle_listed = false;
        nidle_.fetch_sub(1, std::memory_order_seq_cst);
        nspinning_.fetch_add(1, std::memory_order_seq_cst);  // it wakes as a spinner
    }
    w->wake_word.store(1, std::memory_order_release);
    w->wake_word.notify_one();
    timers_.want_ticks();
}

GORO_DECL void scheduler::stop_spinning(worker& w) noexcept {
    if (!w.spinning) return;
    w.spinning = false;
    // The last spinner found work: there may be more, so start another.
    if (nspinning_.fetch_sub(1, std::memory_order_seq_cst) == 1) wake_if_needed(true);  // after a full barrier
}

GORO_DECL void scheduler::claim_running(worker& w) noexcept {
    for (;;) {
        int st = ws_idle;
        if (w.status.compare_exchange_strong(st, ws_running, std::memory_order_seq_cst)) {
            parked_clock().store(coarse_now_ns(), std::memory_order_relaxed);
            timers_.want_ticks();
            return;
        }
        std::uint32_t g = stop_gen_.load(std::memory_order_acquire);
        if ((g & 1) && w.status.load(std::memory_order_acquire) == ws_held) stop_gen_.wait(g);
    }
}

GORO_DECL void scheduler::hold_at_safe_point(worker& w) noexcept {
    if (stw_workers_run_through().load(std::memory_order_relaxed)) [[unlikely]]
        return;
    for (;;) {
        std::uint32_t g = stop_gen_.load(std::memory_order_seq_cst);
        if (!(g & 1)) return;
        w.acked_gen.store(g, std::memory_order_release);
        stop_gen_.wait(g, std::memory_order_acquire);
    }
}

GORO_DECL task_header* scheduler::find_runnable(worker& w) noexcept {
    task_header* t = find_local(w);
    if (!t) t = find_runnable_or_sleep(w);
    if (t) stop_spinning(w);
    return t;
}

GORO_DECL task_header* scheduler::pick_own(worker& w, bool next_first) noexcept {
    if (next_first)
        if (task_header* t = take_run_next(w)) return t;
    if (task_header* t = pop_local(w)) {
        w.next_streak = 0;
        return t;
    }
    if (!next_first)
        if (task_header* t = take_run_next(w)) return t;
    return nullptr;
}

GORO_DECL task_header* scheduler::find_runnable_or_sleep(worker& w) noexcept {
    for (;;) {
        if (shutdown_.load(std::memory_order_relaxed)) return nullptr;
        if (stop_gen_.load(std::memory_order_relaxed) & 1) return nullptr;
        if (++w.tick % 61 == 0) {
            if (task_header* t = global_get(w, runq_capacity / 2)) return t;
        } else if (outside_waiting_.load(std::memory_order_relaxed)) {
            global_refill(w);
        }
        if (task_header* t = pick_own(w, ++w.next_streak % 64 != 0)) return t;
        if (task_header* t = global_get(w, runq_capacity / 2)) return t;
        auto* const poll = idle_poll_hook.load(std::memory_order_acquire);
        if (poll)
            if (task_header* t = poll()) return t;

        // Spin, stealing, unless enough others already do.
        int busy = nactive_.load(std::memory_order_relaxed) - nidle_.load(std::memory_order_relaxed);
        if (!w.spinning && 2 * nspinning_.load(std::memory_order_relaxed) < busy) {
            w.spinning = true;
            nspinning_.fetch_add(1, std::memory_order_seq_cst);
        }
        if (w.spinning) {
            for (int i = 0; i < 32; ++i) {
                if (task_header* t = steal(w)) return t;
                if (task_header* t = global_get(w, runq_capacity / 2)) return t;
                if (stop_gen_.load(std::memory_order_relaxed) & 1) return nullptr;
                for (int k = 0; k < 16; ++k) cpu_relax();
            }
            if (poll)
                if (task_header* t = poll()) return t;
        }
        go_idle(w);
    }
}

GORO_DECL void scheduler::go_idle(worker& w) noexcept {
    the_registry().flush_retired();
    w.status.store(ws_idle, std::memory_order_seq_cst);
    {
        std::lock_guard g(idle_mu_);
        w.idle_listed = true;
        idle_.push_back(&w);
        nidle_.fetch_add(1, std::memory_order_seq_cst);
    }
    if (w.spinning) {
        w.spinning = false;
        nspinning_.fetch_sub(1, std::memory_order_seq_cst);
    }
    seq_fence();
    bool work = stealable_work() || w.slots.peek_next() || shutdown_.load();
    bool slept = true;
    if (work) {
        std::lock_guard g(idle_mu_);
        if (w.idle_listed) {
            idle_.erase(detail::find(idle_.begin(), idle_.end(), &w));
            w.idle_listed = false;
            nidle_.fetch_sub(1, std::memory_order_seq_cst);
            w.spinning = true;
            nspinning_.fetch_add(1, std::memory_order_seq_cst);
            slept = false;
        }
    }
    if (slept) {
        if (auto* const hook = idle_sleep_hook.load(std::memory_order_acquire)) hook();
        // Sleep until a waker takes us off the idle list (it counts us as spinning).
        while (w.wake_word.load(std::memory_order_acquire) == 0) w.wake_word.wait(0, std::memory_order_acquire);
        w.wake_word.store(0, std::memory_order_relaxed);
        if (!shutdown_.load()) w.spinning = true;
    }
    claim_running(w);
}

GORO_DECL void scheduler::run(worker& w, task_header* t) noexcept {
    // Where it resumes: what a dump shows for a task stuck here (its
    // frames change as it runs). The leaf's promise shares its line
    // with the resume pointer the resume reads anyway.
    if (const promise_base* leaf = t->leaf) w.resumed_at.store(leaf->site_);
    else w.resumed_at.store(site{});
    // Publish the task, then look for a profile epoch: a profiler that
    // starts one while this worker has not stopped either finds `t` here
    // or is seen by profile_before_resume (see running_unclaimed).
    if (asym_fence_) {
        w.current.store(t, std::memory_order_release);
        std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
        w.current.exchange(t, std::memory_order_seq_cst);
    }
    profile_before_resume(*t);  // a concurrent profile copies it first, if it has not yet
    t->state.store(task_state::running, std::memory_order_relaxed);
    w.resumes.store(w.resumes.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    tls_current_task = t;
    run_trampoline(t->resume_point());
    tls_current_task = nullptr;
    w.current.store(nullptr, std::memory_order_release);
}

GORO_DECL void scheduler::worker_main(worker& w) noexcept {
    tls_worker = &w;
    for (;;) {
        if (stop_gen_.load(std::memory_order_seq_cst) & 1) hold_at_safe_point(w);
        if (shutdown_.load(std::memory_order_acquire)) break;
        if (rebalance_.load(std::memory_order_relaxed)) [[unlikely]] {
            maybe_retire(w);
            continue;
        }
        task_header* t = find_runnable(w);
        if (!t) continue;
        run(w, t);
        if (w.stuck.load(std::memory_order_relaxed)) [[unlikely]] unstuck(w);
    }
    if (w.spinning) {
        w.spinning = false;
        nspinning_.fetch_sub(1);
    }
    the_registry().flush_retired();
    tls_worker = nullptr;
    w.exited.store(true, std::memory_order_release);
}

GORO_DECL void scheduler::timer_wake_thunk(void* self, task_header* const* ts, std::size_t n) noexcept {
    auto* s = static_cast<scheduler*>(self);
    s->global_push_n(ts, n, true);
    s->wake_if_needed(false);
}

GORO_DECL void scheduler::monitor() noexcept {
    const std::int64_t now = coarse_now_ns();
    parked_clock().store(now, std::memory_order_relaxed);
    const std::int64_t threshold = handoff_threshold_ns_.load(std::memory_order_relaxed);
    bool busy = false, changed = false;
    for (auto& wp : workers()) {
        worker& w = *wp;
        std::uint64_t r = w.resumes.load(std::memory_order_relaxed);
        const bool running = w.current.load(std::memory_order_relaxed) != nullptr;
        bool stuck = running && r == w.seen_resumes;
        bool waiting_work = w.slots.any() || w.q.size();
        w.starving.store(stuck && waiting_work, std::memory_order_relaxed);
        if (stuck && waiting_work && !shutdown_.load(std::memory_order_relaxed)) rescue(w);
        if (!stuck) w.seen_since_ns = now;
        w.seen_resumes = r;
        const bool long_stuck = stuck && threshold > 0 && now - w.seen_since_ns >= threshold;
        if (long_stuck != w.stuck.load(std::memory_order_relaxed)) changed = true;
        if (w.status.load(std::memory_order_seq_cst) == ws_running) busy = true;  // see timer_queue::want_ticks
    }
    if (changed && !shutdown_.load()) hand_off(now, threshold);
    if (busy && !shutdown_.load()) timers_.want_ticks();
}

GORO_DECL void scheduler::rescue(worker& v) noexcept {
    task_header* batch[1 + worker::claim_max + runq_capacity];
    std::size_t n = v.slots.steal(batch, asym_fence_);
    while (n < std::size(batch)) {
        const std::uint32_t room = static_cast<std::uint32_t>(std::size(batch) - n);
        const std::uint32_t got = v.q.grab(batch + n, room);
        if (got == 0) break;
        n += got;
    }
    if (n == 0) return;
    // Counted as wake-ups from outside: every worker then moves a share
    // to its queue at its next round, so a rescued task, which has
    // waited a tick already, waits behind one local queue at most.
    global_push_n(batch, n, true);
    rescued_.fetch_add(n, std::memory_order_relaxed);
    wake_if_needed(false);
}

GORO_DECL void scheduler::make_worker(unsigned i) {
    auto w = std::make_unique<worker>();
    w->sched = this;
    w->index = i;
    w->rng = 0x9E3779B97F4A7C15ull * (i + 1);
    workers_[i] = std::move(w);
}

GORO_DECL void scheduler::hand_off(std::int64_t now, std::int64_t threshold) noexcept {
    std::lock_guard g(procs_mu_);
    for (auto& wp : workers()) {
        worker& w = *wp;
        const bool long_stuck = w.current.load(std::memory_order_relaxed) && threshold > 0 &&
                                w.resumes.load(std::memory_order_relaxed) == w.seen_resumes &&
                                now - w.seen_since_ns >= threshold;
        if (long_stuck && !w.stuck.load(std::memory_order_relaxed)) {
            w.stuck_since_ns.store(w.seen_since_ns, std::memory_order_relaxed);
            if (!w.stuck.exchange(true, std::memory_order_acq_rel)) nstuck_.fetch_add(1, std::memory_order_relaxed);
        } else if (!long_stuck && w.stuck.load(std::memory_order_relaxed)) {
            if (w.stuck.exchange(false, std::memory_order_acq_rel)) nstuck_.fetch_sub(1, std::memory_order_relaxed);
        }
    }
    rebalance_locked();
}

GORO_DECL void scheduler::rebalance_locked() noexcept {
    int unstuck = nactive_.load(std::memory_order_relaxed) - nstuck_.load(std::memory_order_relaxed);
    const int want = static_cast<int>(procs_.load(std::memory_order_relaxed));
    while (unstuck < want && activate_locked()) ++unstuck;
    const bool surplus = unstuck > want;
    if (rebalance_.load(std::memory_order_relaxed) != surplus) rebalance_.store(surplus, std::memory_order_relaxed);
}

GORO_DECL bool scheduler::activate_locked() noexcept {
    if (shutdown_.load()) return false;
    if (!spares_.empty()) {
        worker* w = spares_.back();
        spares_.pop_back();
        nactive_.fetch_add(1, std::memory_order_seq_cst);
        nspinning_.fetch_add(1, std::memory_order_seq_cst);  // it wakes as a spinner
        w->wake_word.store(1, std::memory_order_release);
        w->wake_word.notify_one();
        timers_.want_ticks();
        return true;
    }
    const unsigned i = nlive_.load(std::memory_order_relaxed);
    if (i >= workers_.size()) return false;
    try {
        if (!workers_[i]) make_worker(i);
    } catch (...) {
        return false;
    }
    worker* w = workers_[i].get();
    w->spinning = true;  // before its thread starts: it starts as a spinner
    nspinning_.fetch_add(1, std::memory_order_seq_cst);
    nactive_.fetch_add(1, std::memory_order_seq_cst);
    nlive_.store(i + 1, std::memory_order_seq_cst);
    try {
        w->thread = std::thread([this, w] { worker_main(*w); });
    } catch (...) {
        // Listed but never running: a stop of the world skips it as exited.
        w->spinning = false;
        nspinning_.fetch_sub(1, std::memory_order_seq_cst);
        nactive_.fetch_sub(1, std::memory_order_seq_cst);
        w->exited.store(true, std::memory_order_release);
        return false;
    }
    timers_.want_ticks();
    return true;
}

GORO_DECL void scheduler::unstuck(worker& w) noexcept {
    {
        std::lock_guard g(procs_mu_);
        if (w.stuck.exchange(false, std::memory_order_acq_rel)) nstuck_.fetch_sub(1, std::memory_order_relaxed);
        rebalance_locked();
    }
    if (rebalance_.load(std::memory_order_relaxed)) maybe_retire(w);
}

GORO_DECL void scheduler::maybe_retire(worker& w) noexcept {
    {
        std::lock_guard g(procs_mu_);
        const int want = static_cast<int>(procs_.load(std::memory_order_relaxed));
        const int unstuck = nactive_.load(std::memory_order_relaxed) - nstuck_.load(std::memory_order_relaxed);
        if (unstuck <= want || shutdown_.load()) {
            rebalance_locked();
            return;
        }
        nactive_.fetch_sub(1, std::memory_order_seq_cst);
        spares_.push_back(&w);
        rebalance_.store(unstuck - 1 > want, std::memory_order_relaxed);
    }
    park_spare(w);
}

GORO_DECL void scheduler::park_spare(worker& w) noexcept {
    if (w.spinning) {
        w.spinning = false;
        nspinning_.fetch_sub(1, std::memory_order_seq_cst);
    }
    task_header* batch[runq_capacity + 1 + worker::claim_max];
    std::size_t n = 0;
    if (task_header* t = take_run_next(w)) batch[n++] = t;
    while (task_header* t = w.slots.take_claimed(asym_fence_)) batch[n++] = t;
    while (n < std::size(batch))
        if (task_header* t = w.q.pop()) batch[n++] = t;
        else break;
    if (n) global_push_n(batch, n);
    // Whether or not it queued any: a task that yielded just before
    // (gosched wakes no one, counting on this worker) waits there too.
    wake_if_needed(false);
    the_registry().flush_retired();
    w.status.store(ws_idle, std::memory_order_seq_cst);  // a stop of the world holds it like an idle worker
    while (w.wake_word.load(std::memory_order_acquire) == 0) w.wake_word.wait(0, std::memory_order_acquire);
    w.wake_word.store(0, std::memory_order_relaxed);
    if (!shutdown_.load()) w.spinning = true;
    claim_running(w);
}

GORO_DECL void scheduler::set_procs(unsigned n) {
    std::lock_guard g(procs_mu_);
    if (n > workers_.size() / 2)
        throw usage_error("goro::set_max_procs: " + std::to_string(n) + " workers is more than this pool allows (" +
                          std::to_string(workers_.size() / 2) + ")");
    procs_.store(n, std::memory_order_relaxed);
    rebalance_locked();
}

GORO_DECL std::pair<unsigned, std::chrono::nanoseconds> scheduler::stuck_now() const noexcept {
    unsigned n = 0;
    std::int64_t longest = 0;
    const std::int64_t now = coarse_now_ns();
    for (auto& w : workers())
        if (w->stuck.load(std::memory_order_relaxed)) {
            ++n;
            longest = std::max(longest, now - w->stuck_since_ns.load(std::memory_order_relaxed));
        }
    return {n, std::chrono::nanoseconds(longest)};
}

GORO_DECL unsigned default_procs() {
    if (const char* e = std::getenv("GORO_MAXPROCS")) {
        char* end = nullptr;
        long v = std::strtol(e, &end, 10);
        if (end != e && *end == '\0' && v > 0 && v <= 4096) return static_cast<unsigned>(v);
        std::fprintf(stderr, "goro: ignoring GORO_MAXPROCS=\"%s\": want an integer from 1 to 4096\n", e);
    }
    unsigned hc = std::thread::hardware_concurrency();
    return hc ? hc : 1;
}

GORO_DECL void park(task_header* t, std::coroutine_handle<> h, const char* reason) noexcept {
    t->set_resume_point(h);
    t->wait_reason.store(reason, std::memory_order_relaxed);
    // Even: the coarse clock; odd: a park the wait profile samples (wait_profile.hpp).
    std::int64_t since = parked_clock().load(std::memory_order_relaxed) & ~std::int64_t(1);
    if (const std::int64_t rate = wait_profile_rate_n.load(std::memory_order_relaxed)) [[unlikely]]
        since = wait_profile_park_time(since, rate);
    t->since_ns.store(since, std::memory_order_relaxed);
    t->state.store(task_state::waiting, std::memory_order_relaxed);
}

GORO_DECL task_header* current_task_or_throw(const char* op) {
    task_header* t = tls_current_task;
    if (!t) throw usage_error(std::string(op) + ": must be awaited inside a goro task (use goro::block_on from a plain thread)");
    return t;
}

}  // namespace goro::detail

namespace goro {

GORO_DECL void set_max_procs(unsigned n) {
    if (n == 0) throw usage_error("goro::set_max_procs: the number of workers must be at least 1");
    detail::pool_holder& h = detail::the_pool_holder();
    std::lock_guard g(h.mu);
    if (detail::scheduler* s = h.pool.load()) {
        if (s->stopping()) throw usage_error("goro::set_max_procs: the pool has shut down (process exit)");
        s->set_procs(n);
        return;
    }
    detail::requested_procs().store(n);
}

GORO_DECL stuck_workers_info stuck_workers() noexcept {
    if (!detail::pool_started()) return {};
    auto [n, d] = detail::the_scheduler().stuck_now();
    return {n, d};
}

}  // namespace goro

#endif  // GORO_BODIES
