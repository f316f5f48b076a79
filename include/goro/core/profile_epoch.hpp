// goro/core/profile_epoch.hpp — the concurrent goroutine profile's epochs, as Go 1.19 takes it.
//
// A profile (goro/inspect/snapshot.hpp) stops the world only to start an epoch
// E (an even number) and to note each registry shard's head; then the world
// runs again while the profiler walks the lists. Each task is copied exactly
// once, as it was when the epoch began, by whoever claims it first: the
// profiler's walk, or the worker about to resume it (scheduler::run calls
// profile_before_resume).
//
// INVARIANTS
//   * A header's `prof_gen` is its claim word: E (copied in epoch E, or made
//     while E was on and so not in it), E|1 (being copied in epoch E, by the
//     thread that set it), or an older even value (not yet copied in E).
//   * A claim is a CAS of `prof_gen` from an older value to E|1; the claimer
//     copies and then stores E (release). Anyone who finds E|1 waits for E: a
//     worker must not resume a task whose frames are being read, and a dead
//     header must not be revived while it is read.
//   * No task is resumed during epoch E without having been claimed, by its
//     resumer or by the profiler, except by a worker that had not stopped
//     when the epoch began (its stop timed out). scheduler::run publishes the
//     task in the worker's `current` before it loads `active`; the profiler
//     stores `active`, fences, and reads those workers' `current`
//     (scheduler::running_unclaimed). So every resume that missed the epoch
//     is of a task the profiler then finds there: it claims such a task and
//     records it as running without reading its frames, and reads the frames
//     of no other task it has not claimed.
//   * Headers made while the epoch is on start at E, so tasks spawned after
//     the stop are not in the profile; reviving a dead header waits out a
//     claim the same way (profile_revive).
//   * `record` and `ctx` are written before `active` is set and read only by
//     a worker that saw `active`; the profile ends by clearing `active` and
//     waiting until no worker is between its check of `active` and the end of
//     its copy (`inflight`), so the collector outlives every copy into it.
//   * One profile at a time (the snapshot's mutex).
//
// The functions take the header as a template parameter only because
// task_header is completed in goro/core/registry.hpp, which includes this
// file; every caller passes a task_header.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

#include <goro/core/frame.hpp>
#include <goro/core/platform.hpp>

namespace goro {

struct task_header;

namespace detail {

/// The state of the concurrent profile (one at a time; see above).
struct profile_epoch_state {
    using record_fn = void (*)(void* ctx, task_header& h) noexcept;
    alignas(cache_line) std::atomic<bool> active{false};
    std::atomic<std::uint32_t> gen{0};   // the current or last epoch: even
    record_fn record = nullptr;          // written before active is set
    void* ctx = nullptr;
    alignas(cache_line) std::atomic<int> inflight{0};  // workers between the check of active and a copy's end
};

inline profile_epoch_state& profile_epoch() noexcept {
    static profile_epoch_state s;
    return s;
}

/// Waits a little for another thread's short copy (it may be descheduled).
inline void profile_backoff(unsigned& spins) noexcept {
    if (++spins < 256) cpu_relax();
    else std::this_thread::yield();
}

/// Claims `h` for epoch `e`: true if the caller must copy it and then call
/// profile_publish; false if it already is (or was) copied in this epoch.
template <class Header>
bool profile_claim(Header& h, std::uint32_t e) noexcept {
    std::uint32_t g = h.prof_gen.load(std::memory_order_acquire);
    unsigned spins = 0;
    for (;;) {
        if (g == e) return false;
        if (g == (e | 1)) {  // being copied by another thread: wait for it
            profile_backoff(spins);
            g = h.prof_gen.load(std::memory_order_acquire);
            continue;
        }
        if (h.prof_gen.compare_exchange_weak(g, e | 1, std::memory_order_acq_rel, std::memory_order_acquire))
            return true;
    }
}

template <class Header>
void profile_publish(Header& h, std::uint32_t e) noexcept {
    h.prof_gen.store(e, std::memory_order_release);
}

/// A worker is about to resume `h`: if a profile is on and has not copied `h`
/// yet, copy it now, before its frames change.
template <class Header>
void profile_before_resume(Header& h) noexcept {
    profile_epoch_state& p = profile_epoch();
    // Acquire, even when it reads false: the profile that just ended read
    // this task's frames before clearing `active`, and resuming writes them.
    // Sequentially consistent (a plain load on x86 and ARMv8, as acquire):
    // the second half of the handshake with scheduler::running_unclaimed
    // where membarrier is not available.
    if (!p.active.load(std::memory_order_seq_cst)) return;
    p.inflight.fetch_add(1, std::memory_order_seq_cst);
    if (p.active.load(std::memory_order_seq_cst)) {
        std::uint32_t e = p.gen.load(std::memory_order_relaxed);
        if (profile_claim(h, e)) {
            p.record(p.ctx, h);
            profile_publish(h, e);
        }
    }
    p.inflight.fetch_sub(1, std::memory_order_release);
}

/// Makes a dead header's claim current before it comes alive again: waits
/// out a profiler that is looking at it, then sets the current epoch, so a
/// profile that began before the revival does not list the new task.
template <class Header>
void profile_revive(Header& h) noexcept {
    // In a task on a worker, while no profile is on, nothing is to be done:
    // the last profile's walk ended before it cleared `active` (acquire: its
    // reads of the header came before the writes of the revival), and an
    // epoch begins either with every worker stopped between two tasks, so
    // not before this task suspends, or, after a stop that timed out, while
    // this worker runs on; then the walk may claim the header meanwhile, but
    // reads its fields only once it sees it alive, which add() publishes
    // after the writes of the revival, and the new task's first resume
    // claims it like any other (see running_unclaimed). (This spares a spawn
    // a locked instruction.)
    if (tls_current_task && !profile_epoch().active.load(std::memory_order_acquire)) return;
    std::uint32_t g = h.prof_gen.load(std::memory_order_acquire);
    unsigned spins = 0;
    for (;;) {
        if (g & 1) {
            profile_backoff(spins);
            g = h.prof_gen.load(std::memory_order_acquire);
            continue;
        }
        std::uint32_t e = profile_epoch().gen.load(std::memory_order_acquire);
        if (h.prof_gen.compare_exchange_weak(g, e, std::memory_order_acq_rel, std::memory_order_acquire)) return;
    }
}

}  // namespace detail
}  // namespace goro
