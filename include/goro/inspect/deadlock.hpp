// goro/inspect/deadlock.hpp — "fatal error: all goroutines are asleep - deadlock!"
//
//   int main() { goro::channel<int> ch; goro::block_on(ch.recv()); }  // nobody sends
//
// prints to stderr
//
//   fatal error: all goroutines are asleep - deadlock!
//
//   goroutine 1 [chan receive]:
//   main(...)
//           main.cpp:1
//
// and makes that block_on throw `goro::deadlock_error` (the default policy).
//
// WHAT COUNTS AS A DEADLOCK: a thread waits in block_on, every listed task
// (block_on bodies included) is parked, no timer is pending (a sleep, a
// deadline or a select timeout will wake someone), no work is queued, every
// worker is idle, no `external_wakeup_guard` exists, no task awaits a foreign
// awaitable (goro/core/foreign.hpp: it is answered from outside), and nothing has moved
// for a grace period (default 1 s): no task was resumed (the workers'
// `resumes` counters) and none was spawned or finished. The grace period is
// there because a thread goro does not know of may still send; a program that
// relies on such a thread to wake tasks after long pauses should hold an
// `external_wakeup_guard` (or turn detection off).
//
// POLICY (`goro::set_deadlock_policy`, or the environment variable
// GORO_DEADLOCK read once at first use; the API call wins):
//   throw (throw_error, default)  print the report; every block_on waiting
//                                 then throws goro::deadlock_error (its
//                                 report() holds the same text)
//   abort                         print the report, then std::abort()
//   off                           never check
// `goro::set_deadlock_grace(d)` changes the grace period.
//
// AFTER deadlock_error the parked tasks stay parked: they are leaked, and
// still listed by dumps and leak checks. The deadlocked block_on's own task is
// abandoned: its awaitable belonged to the caller, whose unwinding destroys
// it, so the task is re-pointed at its bottom frame (a dump shows the
// block_on call, parked on what it waited for) and, should some thread wake
// it later anyway, it leaves the registry without touching the destroyed
// awaitable.
//
// THREADS AND LOCKS: block_on (go.hpp) calls `deadlock_aware_wait`, which
// lists the waiting thread, then sleeps on its `done` word like any block_on. One
// watchdog thread, started at the first block_on and never stopped, looks
// every grace/4 (at most 100 ms) while some block_on waits, and sleeps
// otherwise. It reports from its own thread. Lock order (core/lock_rank.hpp):
// stop the world → registry shards → watch mutex. A waiting thread takes only the watch mutex.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <goro/core/linkage.hpp>
#include <goro/core/lock_rank.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/vec.hpp>

namespace goro {

/// Thrown by a block_on that waited in a deadlock (see the top of this header).
class deadlock_error : public error {
public:
    explicit deadlock_error(std::shared_ptr<const std::string> report)
        : error("goro::block_on: all goroutines are asleep - deadlock!"), report_(std::move(report)) {}
    /// The report printed to stderr: the fatal error line, a blank line, every task (debug=2).
    const std::string& report() const noexcept {
        static const std::string none;
        return report_ ? *report_ : none;
    }

private:
    std::shared_ptr<const std::string> report_;
};

enum class deadlock_policy : int {
    throw_error,  ///< print the report, then block_on throws goro::deadlock_error
    abort,        ///< print the report, then std::abort()
    off,          ///< no detection
};

namespace detail {

struct deadlock_waiter {
    std::atomic<std::uint32_t>* done;
    task_header* body;                              // a key; dereferenced only while listed, world stopped
    std::shared_ptr<const std::string> report{};    // set when the watchdog ends the wait
};

struct deadlock_watch {
    ranked_lock<std::mutex, lock_rank::deadlock_watch> mu;
    std::condition_variable cv;
    vec<deadlock_waiter*> waiters;         // under mu
    bool thread_started = false;                   // under mu
    std::atomic<int> policy{-1};                   // -1: not read from the environment yet
    std::atomic<std::int64_t> grace_ns{1'000'000'000};
    std::atomic<int> external_guards{0};
};

inline deadlock_watch& the_deadlock_watch() {
    static deadlock_watch* w = new deadlock_watch();  // never destroyed: the watchdog outlives main
    return *w;
}

GORO_DECL deadlock_policy current_deadlock_policy();

/// block_on's wait (go.hpp): lists the thread for the watchdog while it waits.
GORO_DECL void deadlock_aware_wait(std::atomic<std::uint32_t>& done, task_header* body);

}  // namespace detail

/// Chooses what a detected deadlock does (see POLICY above).
inline void set_deadlock_policy(deadlock_policy p) {
    detail::the_deadlock_watch().policy.store(static_cast<int>(p), std::memory_order_release);
}

inline deadlock_policy get_deadlock_policy() { return detail::current_deadlock_policy(); }

/// How long nothing must move before a deadlock is reported (default 1 s).
template <class Rep, class Period>
void set_deadlock_grace(std::chrono::duration<Rep, Period> d) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    if (ns <= 0) throw usage_error("goro::set_deadlock_grace: the grace period must be positive");
    detail::deadlock_watch& w = detail::the_deadlock_watch();
    w.grace_ns.store(ns, std::memory_order_relaxed);
    std::lock_guard g(w.mu);
    w.cv.notify_all();  // pick up a shorter period now
}

inline std::chrono::nanoseconds deadlock_grace() {
    return std::chrono::nanoseconds(detail::the_deadlock_watch().grace_ns.load(std::memory_order_relaxed));
}

/// While one exists, the deadlock detector never fires: hold one in a
/// component whose threads wake tasks from outside goro (an I/O poller, a
/// callback thread) and may stay silent longer than the grace period.
class external_wakeup_guard {
public:
    external_wakeup_guard() noexcept { detail::the_deadlock_watch().external_guards.fetch_add(1, std::memory_order_acq_rel); }
    ~external_wakeup_guard() { detail::the_deadlock_watch().external_guards.fetch_sub(1, std::memory_order_acq_rel); }
    external_wakeup_guard(const external_wakeup_guard&) = delete;
    external_wakeup_guard& operator=(const external_wakeup_guard&) = delete;
};

}  // namespace goro

#if GORO_BODIES
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <goro/core/algo.hpp>
#include <goro/core/foreign.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/task.hpp>
#include <goro/inspect/dump.hpp>
#include <goro/inspect/panic.hpp>
#include <goro/inspect/snapshot.hpp>

namespace goro::detail {

inline deadlock_policy policy_from_env() {
    const char* e = std::getenv("GORO_DEADLOCK");
    if (!e || !*e || std::strcmp(e, "throw") == 0) return deadlock_policy::throw_error;
    if (std::strcmp(e, "abort") == 0) return deadlock_policy::abort;
    if (std::strcmp(e, "off") == 0) return deadlock_policy::off;
    std::fprintf(stderr, "goro: ignoring GORO_DEADLOCK=\"%s\": want throw, abort or off\n", e);
    return deadlock_policy::throw_error;
}

GORO_DECL deadlock_policy current_deadlock_policy() {
    deadlock_watch& w = the_deadlock_watch();
    int p = w.policy.load(std::memory_order_acquire);
    if (p < 0) {
        int fresh = static_cast<int>(policy_from_env());
        if (w.policy.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) p = fresh;
    }
    return static_cast<deadlock_policy>(p);
}

/// What the watchdog compares across the grace period.
struct quiet_state {
    bool quiet = false;          // idle workers, empty queue, no timer, no guard
    std::uint64_t resumes = 0;   // sum of the workers' resume counters
    std::int64_t tasks = 0;      // registry count
};

inline quiet_state observe_quiet() {
    quiet_state q;
    if (!pool_started()) return q;
    scheduler& s = the_scheduler();
    if (s.stopping()) return q;
    if (the_deadlock_watch().external_guards.load(std::memory_order_acquire) != 0) return q;
    if (external_waits().load(std::memory_order_acquire) != 0) return q;  // a foreign awaitable will answer
    if (s.idle_workers() != s.active_workers()) return q;
    if (s.global_queue_size() != 0) return q;
    if (!s.timers().quiet()) return q;
    for (auto& w : s.workers()) q.resumes += w->resumes.load(std::memory_order_relaxed);
    q.tasks = the_registry().count();
    q.quiet = true;
    return q;
}

inline bool same_quiet(const quiet_state& a, const quiet_state& b) {
    return a.quiet && b.quiet && a.resumes == b.resumes && a.tasks == b.tasks;
}

/// Resumed, if ever, instead of an abandoned block_on body (see AFTER
/// deadlock_error above): unlists the task without touching its awaitable.
struct abandoned_task {
    struct promise_type {
        abandoned_task get_return_object() noexcept {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        std::suspend_never final_suspend() const noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> handle;
};

// A template only so that g++ compiles this coroutine where it is used: g++ 12
// emits the body of every inline coroutine that is not a template in every
// translation unit that sees it.
template <int = 0>
abandoned_task reap_abandoned(task_header* h) {
    // Only the body's own frame is left to free: the frames it awaited were the caller's.
    h->leaf = nullptr;
    std::coroutine_handle<>::from_address(h->root_frame_).destroy();
    the_registry().retire(h);
    co_return;
}

/// World stopped, registry locked, `h` listed and parked: cut the frames the
/// caller owns off its chain and make a wake-up harmless.
inline void abandon_block_on_body(task_header* h) {
    using body_promise = task_promise<void>;  // block_on_body returns task<>
    auto root = std::coroutine_handle<body_promise>::from_address(h->root_frame_);
    h->leaf = &root.promise();
    h->set_resume_point(reap_abandoned(h).handle);
}

/// Confirms the deadlock with the world stopped and, per policy, reports it.
inline void fire_if_deadlocked(deadlock_watch& w, const quiet_state& base) {
    snapshot snap = snapshot::take();
    for (const task_record& r : snap.tasks())
        if (r.state != task_state::waiting) return;
    if (!same_quiet(observe_quiet(), base)) return;
    deadlock_policy p = current_deadlock_policy();
    if (p == deadlock_policy::off) return;

    std::string text = "fatal error: all goroutines are asleep - deadlock!\n\n";
    {
        text_sink sink(text);
        write_debug2_all(sink, snap);  // debug=2
    }
    auto report = std::make_shared<const std::string>(std::move(text));
    if (p == deadlock_policy::abort) {
        std::fwrite(report->data(), 1, report->size(), stderr);
        std::fflush(stderr);
        std::abort();
    }

    scheduler& s = the_scheduler();
    registry& reg = the_registry();
    vec<deadlock_waiter*> fired;
    if (!s.stop_the_world(std::chrono::seconds(1)).all_stopped) {
        // A worker that did not stop may be running a task: nothing is
        // confirmed or cut with the world moving; the watchdog looks again.
        s.start_the_world();
        return;
    }
    reg.lock_all();
    std::unique_lock lk(w.mu);
    bool still = same_quiet(observe_quiet(), base);
    vec<task_header*> listed;
    reg.for_each_unlocked([&](task_header& h) {
        if (h.state.load(std::memory_order_relaxed) != task_state::waiting) still = false;
        listed.push_back(&h);
    });
    if (still) {
        for (deadlock_waiter* dw : w.waiters) {
            bool is_listed = goro::detail::find(listed.begin(), listed.end(), dw->body) != listed.end();
            std::uint32_t zero = 0;
            // `done` still 0 means the body has not finished, so the header is alive and listed.
            if (is_listed && dw->done->compare_exchange_strong(zero, 2, std::memory_order_acq_rel)) {
                abandon_block_on_body(dw->body);
                dw->report = report;
                fired.push_back(dw);
            }
        }
    }
    reg.unlock_all();
    s.start_the_world();
    if (fired.empty()) return;
    std::fwrite(report->data(), 1, report->size(), stderr);
    std::fflush(stderr);
    // Still under mu: a woken waiter unlists itself (and frees `done`) only after this.
    for (deadlock_waiter* dw : fired) dw->done->notify_all();
}

inline void watchdog_main() {
    deadlock_watch& w = the_deadlock_watch();
    quiet_state base;
    std::int64_t quiet_since = 0;
    std::unique_lock<std::mutex> lk(w.mu.unranked());  // for cv; released before anything else is taken
    for (;;) {
        if (w.waiters.empty()) {
            base = {};
            w.cv.wait(lk);
            continue;
        }
        std::int64_t grace = w.grace_ns.load(std::memory_order_relaxed);
        std::int64_t period = std::min<std::int64_t>(std::max<std::int64_t>(grace / 4, 1'000'000), 100'000'000);
        w.cv.wait_for(lk, std::chrono::nanoseconds(period));
        if (w.waiters.empty()) continue;
        lk.unlock();
        quiet_state now = current_deadlock_policy() == deadlock_policy::off ? quiet_state{} : observe_quiet();
        std::int64_t t = now_ns();
        if (!same_quiet(now, base)) {
            base = now;
            quiet_since = t;
        } else if (t - quiet_since >= w.grace_ns.load(std::memory_order_relaxed)) {
            fire_if_deadlocked(w, base);
            base = {};
        }
        lk.lock();
    }
}

GORO_DECL void deadlock_aware_wait(std::atomic<std::uint32_t>& done, task_header* body) {
    deadlock_watch& w = the_deadlock_watch();
    deadlock_waiter me{&done, body};
    {
        std::lock_guard g(w.mu);
        w.waiters.push_back(&me);
        if (!w.thread_started) {
            w.thread_started = true;
            std::thread(watchdog_main).detach();
        }
        if (w.waiters.size() == 1) w.cv.notify_one();
    }
    while (done.load(std::memory_order_acquire) == 0) done.wait(0, std::memory_order_acquire);
    std::shared_ptr<const std::string> report;
    {
        std::lock_guard g(w.mu);
        w.waiters.erase(goro::detail::find(w.waiters.begin(), w.waiters.end(), &me));
        report = std::move(me.report);
    }
    if (report) throw deadlock_error(std::move(report));
}

}  // namespace goro::detail
#endif  // GORO_BODIES
