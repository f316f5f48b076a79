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
// The state and the functions are written against a policy (atomics and the
// wait loop's spin: machine_policy in platform.hpp), and take the header as a
// template parameter, so that tests/test_profile_epoch.cpp runs the protocol
// itself in the model checker (tests/model/model.hpp), with a tiny header of
// its own; every caller here passes a task_header and the machine's policy.
#pragma once

#include <atomic>
#include <cstdint>

#include <goro/core/frame.hpp>
#include <goro/core/platform.hpp>

namespace goro {

struct task_header;

namespace detail {

/// The state of the concurrent profile (one at a time; see above).
template <class Header, class Policy = machine_policy>
struct basic_profile_epoch {
    template <class U>
    using atomic = typename Policy::template atomic<U>;
    using record_fn = void (*)(void* ctx, Header& h) noexcept;
    alignas(cache_line) atomic<bool> active{false};
    atomic<std::uint32_t> gen{0};        // the current or last epoch: even
    record_fn record = nullptr;          // written before active is set
    void* ctx = nullptr;
    alignas(cache_line) atomic<int> inflight{0};  // workers between the check of active and a copy's end
};

using profile_epoch_state = basic_profile_epoch<task_header>;

inline profile_epoch_state& profile_epoch() noexcept {
    static profile_epoch_state s;
    return s;
}

/// Claims `h` for epoch `e`: true if the caller must copy it and then call
/// profile_publish; false if it already is (or was) copied in this epoch.
template <class Policy = machine_policy, class Header>
bool profile_claim(Header& h, std::uint32_t e) {
    std::uint32_t g = h.prof_gen.load(std::memory_order_acquire);
    int spins = 0;
    for (;;) {
        if (g == e) return false;
        if (g == (e | 1)) {  // being copied by another thread (maybe descheduled): wait for it
            Policy::spin(spins);
            g = h.prof_gen.load(std::memory_order_acquire);
            continue;
        }
        if (h.prof_gen.compare_exchange_weak(g, e | 1, std::memory_order_acq_rel, std::memory_order_acquire))
            return true;
    }
}

template <class Header>
void profile_publish(Header& h, std::uint32_t e) {
    h.prof_gen.store(e, std::memory_order_release);
}

// --- the profiler's side (goro/inspect/snapshot.hpp), with the world stopped ---

/// Starts the numbering of a new epoch and returns it. Headers made from
/// now on start at it (registry::add), so they are not in this profile.
template <class Header, class Policy>
std::uint32_t profile_next_epoch(basic_profile_epoch<Header, Policy>& p) {
    const std::uint32_t e = p.gen.load(std::memory_order_relaxed) + 2;
    p.gen.store(e, std::memory_order_release);
    return e;
}

/// Turns the epoch on: from now on a worker about to resume an unclaimed task
/// copies it first with `record(ctx, h)`.
template <class Header, class Policy>
void profile_activate(basic_profile_epoch<Header, Policy>& p, typename basic_profile_epoch<Header, Policy>::record_fn record,
                      void* ctx) {
    p.record = record;
    p.ctx = ctx;
    p.active.store(true, std::memory_order_seq_cst);
}

// --- the profiler's side, with the world running again ---

/// The walk's step for one header: claims it and, if the claim is the
/// caller's, calls `copy(h)` and publishes; false when someone else has it.
template <class Policy = machine_policy, class Header, class Copy>
bool profile_copy(Header& h, std::uint32_t e, Copy&& copy) {
    if (!profile_claim<Policy>(h, e)) return false;
    copy(h);
    profile_publish(h, e);
    return true;
}

/// Ends the epoch once no worker is between its check of `active` and the
/// end of its copy, so the collector outlives every copy into it.
template <class Header, class Policy>
void profile_end(basic_profile_epoch<Header, Policy>& p) {
    p.active.store(false, std::memory_order_seq_cst);
    int spins = 0;
    while (p.inflight.load(std::memory_order_seq_cst) != 0) Policy::spin(spins);
    p.record = nullptr;
    p.ctx = nullptr;
}

// --- the workers' side ---------------------------------------------------------

/// A worker is about to resume `h`: if a profile is on and has not copied `h`
/// yet, copy it now, before its frames change.
template <class Header, class Policy>
void profile_before_resume(basic_profile_epoch<Header, Policy>& p, Header& h) {
    // Acquire, even when it reads false: the profile that just ended read
    // this task's frames before clearing `active`, and resuming writes them.
    // Sequentially consistent (a plain load on x86 and ARMv8, as acquire):
    // the second half of the handshake with scheduler::running_unclaimed
    // where membarrier is not available.
    if (!p.active.load(std::memory_order_seq_cst)) return;
    p.inflight.fetch_add(1, std::memory_order_seq_cst);
    if (p.active.load(std::memory_order_seq_cst)) {
        std::uint32_t e = p.gen.load(std::memory_order_relaxed);
        if (profile_claim<Policy>(h, e)) {
            p.record(p.ctx, h);
            profile_publish(h, e);
        }
    }
    p.inflight.fetch_sub(1, std::memory_order_release);
}

/// The machine's: the scheduler calls this one.
template <class Header>
void profile_before_resume(Header& h) noexcept { profile_before_resume(profile_epoch(), h); }

/// Makes a dead header's claim current before it comes alive again: waits
/// out a profiler that is looking at it, then sets the current epoch, so a
/// profile that began before the revival does not list the new task.
/// `in_task`: the caller is a task on a worker (see below).
template <class Header, class Policy>
void profile_revive(basic_profile_epoch<Header, Policy>& p, Header& h, bool in_task) {
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
    if (in_task && !p.active.load(std::memory_order_acquire)) return;
    std::uint32_t g = h.prof_gen.load(std::memory_order_acquire);
    int spins = 0;
    for (;;) {
        if (g & 1) {
            Policy::spin(spins);
            g = h.prof_gen.load(std::memory_order_acquire);
            continue;
        }
        std::uint32_t e = p.gen.load(std::memory_order_acquire);
        if (h.prof_gen.compare_exchange_weak(g, e, std::memory_order_acq_rel, std::memory_order_acquire)) return;
    }
}

/// The machine's: the registry calls this one.
template <class Header>
void profile_revive(Header& h) noexcept { profile_revive(profile_epoch(), h, tls_current_task != nullptr); }

}  // namespace detail
}  // namespace goro
