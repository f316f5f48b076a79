// goro/sync/ticker.hpp — `goro::ticker`, `goro::timer`, `goro::after_func`:
// Go's time.Ticker, time.Timer and time.AfterFunc. (time.After's use, a
// timeout in a select, is select's own `goro::after(d)` case.)
//
//   goro::ticker t(10ms);                       // time.NewTicker(10 * time.Millisecond)
//   while (auto at = co_await t.chan().recv()) { ... if (done) break; }
//   t.reset(50ms);  t.stop();
//
//   goro::timer tm(1s);                         // time.NewTimer(time.Second)
//   auto v = co_await tm.chan().recv();         // the time it was due
//   if (tm.stop()) { /* it had not fired: it never will */ }
//
//   goro::timer f = goro::after_func(100ms, [&] { flush(); });   // f runs in its own task
//   f.stop();                                   // true: f will not run
//
// SEMANTICS: Go 1.23's (the current contract; Go 1.19, installed here, had the
// older "asynchronous channel" behaviour that 1.23 fixed):
//   * chan() is a channel of `goro::tick_time` (steady_clock) with a buffer of
//     one. A tick is sent without blocking: a receiver slower than the period
//     finds at most one tick waiting, and the others are DROPPED, as Go's are.
//     The value sent is the time the tick was due (Go 1.23 sends that too).
//   * After a ticker falls behind (a busy timer thread), its next tick is due
//     at the first multiple of the period after now: missed periods are
//     skipped, never delivered in a burst (Go's rule).
//   * stop() and reset(d): once they return, no value prepared before them is
//     received from chan(): a tick already buffered is discarded, and a tick
//     being sent concurrently is either discarded or never sent (the send
//     happens under the state's lock, as Go 1.23's under its sendLock).
//   * timer::stop() returns true when the call stopped the timer: it had not
//     fired, or its value was still unreceived (and is now discarded) — Go
//     1.23's rule; false when it was already stopped or its value was
//     received. timer::reset(d) returns the same about the timer before the
//     reset, and arms it to fire after d (d ≤ 0: at once).
//   * ticker(d) and ticker::reset(d) need d > 0 (goro::usage_error, where Go
//     panics "non-positive interval for NewTicker").
//   * Stop does not close the channel (Go: "to prevent a read from the
//     channel succeeding incorrectly"): a task still receiving from it waits.
//   * after_func(d, f): after d, f runs in its own goro task (void f, or one
//     returning goro::task<>); the task reads "created by" the after_func
//     caller. The timer's chan() is nil; stop() returns true if f had not
//     been started (and now will not be); reset(d) schedules f again.
//   * Destroying a ticker or timer stops it. Go's Timer/Ticker are pointers;
//     these are move-only handles that own the timer.
//
// IMPLEMENTATION: each timer is a `time_state` (one allocation, counted
// references: the handle, the timer thread while the node is armed or being
// fired, and an after_func task while it runs). Its node sits in the pool's
// one timer heap (goro/core/timer.hpp), whose thread calls `fire`. Under
// `mu` (lock rank time_chan): `seq` counts arms, stops and resets; the node
// carries the `seq` it was armed for. A `fire` whose seq is stale (a stop or
// reset came while the timer thread held the node) sends nothing: it re-arms
// the node for the current schedule, or drops it when stopped. A live `fire`
// sends the tick with `mu` held and re-arms a ticker for the next period.
// Both re-arms go through the queue's rearm_from_fire (no hold of the heap's
// lock per fire); `mu`, held around them and around every cancel, orders
// them with stop and reset (timer.hpp's CONTRACT).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <type_traits>
#include <utility>

#include <goro/core/go.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/task.hpp>
#include <goro/core/timer.hpp>
#include <goro/sync/channel.hpp>

namespace goro {

/// The value a timer or ticker sends: the time the tick was due.
using tick_time = std::chrono::steady_clock::time_point;

namespace detail {

struct time_state : timer_node {
    ranked_lock<spinlock, lock_rank::time_chan> mu;
    std::atomic<std::uint32_t> refs{1};
    void (*destroy)(time_state*) noexcept = nullptr;
    void (*on_fire)(time_state*) noexcept = nullptr;  // after_func: starts f's task (no lock held)
    channel<tick_time> ch{nullptr};                   // nil for after_func
    // Under mu:
    std::int64_t period_ns = 0;  // > 0: a ticker
    std::int64_t want_ns = 0;    // when the current arming is due
    std::uint64_t seq = 0;       // bumped by every arm, stop and reset
    std::uint64_t node_seq = 0;  // the seq the node was (re-)armed for
    bool active = false;         // armed and not yet fired (a ticker: until stopped)
    bool owned = false;          // the timer thread holds the node (heap or firing): holds a reference

    void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(this);
    }

    static std::int64_t deadline_after(std::int64_t d_ns) noexcept;

    /// Under mu: schedules the next fire at `when` (replacing any schedule).
    void arm_locked(std::int64_t when);

    /// Under mu: cancels the schedule. True when it was active. `drop` is set
    /// when the node came back from the heap (the caller releases its reference
    /// after unlocking).
    bool stop_locked(bool& drop);

    /// Under mu: discards a tick sent but not received. True when there was one.
    bool drain_locked();

    static void fire_cb(timer_node* n) noexcept;
};

template <class Rep, class Period>
std::int64_t to_ns(std::chrono::duration<Rep, Period> d) noexcept {
    using namespace std::chrono;
    if (d > duration_cast<duration<Rep, Period>>(nanoseconds::max())) return nanoseconds::max().count();
    if (d < duration_cast<duration<Rep, Period>>(nanoseconds::min())) return nanoseconds::min().count();
    return duration_cast<nanoseconds>(d).count();
}

GORO_DECL time_state* make_chan_state();

template <class F>
struct after_state : time_state {
    F f;
    site where;
    after_state(F fn, const site& w) : f(std::move(fn)), where(w) {}
};

template <class F>
task<> after_func_body(after_state<F>* s) {
    struct ref {
        after_state<F>* p;
        ~ref() { p->release(); }
    } keep{s};
    if constexpr (std::is_void_v<std::invoke_result_t<F&>>) s->f();
    else co_await s->f();
}

template <class F>
void after_func_start(time_state* base) noexcept {
    auto* s = static_cast<after_state<F>*>(base);
    try {
#if GORO_HAS_SOURCE_LOCATION
        goro::go(after_func_body<F>(s), task_options{}, s->where);
#else
        goro::go(after_func_body<F>(s), task_options{}, s->where.file_name(), s->where.function_name(),
                 s->where.line());
#endif
    } catch (...) {
        // The pool has shut down (process exit): f cannot run; its reference goes.
        s->release();
    }
}

}  // namespace detail

/// Go's time.Timer: one value on chan() when it fires (or, from after_func, f runs).
class timer {
public:
    /// An empty timer (nil chan(); stop() returns false).
    timer() noexcept = default;

    /// Fires once, `d` from now (time.NewTimer); d ≤ 0 fires at once.
    template <class Rep, class Period>
    explicit timer(std::chrono::duration<Rep, Period> d) : s_(detail::make_chan_state()), ch_(s_->ch) {
        std::lock_guard g(s_->mu);
        s_->arm_locked(detail::time_state::deadline_after(detail::to_ns(d)));
    }

    timer(timer&& o) noexcept : s_(std::exchange(o.s_, nullptr)), ch_(std::move(o.ch_)) {}
    timer& operator=(timer&& o) noexcept;
    timer(const timer&) = delete;
    timer& operator=(const timer&) = delete;
    ~timer() { close(); }

    /// The channel the time is sent on (nil for after_func's timers and empty
    /// ones), Go's t.C: this timer's own handle, valid while the timer is
    /// (copy it to keep it longer; copies refer to the same channel).
    const channel<tick_time>& chan() const noexcept { return ch_; }

    /// Stops the timer (Timer.Stop, Go 1.23): true when this call stopped it
    /// before its value was received (an unreceived value is discarded).
    bool stop();

    /// Re-arms the timer to fire `d` from now (Timer.Reset, Go 1.23); returns
    /// what stop() would have. An unreceived value is discarded first.
    template <class Rep, class Period>
    bool reset(std::chrono::duration<Rep, Period> d) {
        if (!s_) throw usage_error("goro::timer::reset: the timer is empty (moved-from or default-constructed)");
        std::lock_guard g(s_->mu);
        bool pending = s_->active;
        if (s_->drain_locked()) pending = true;
        s_->arm_locked(detail::time_state::deadline_after(detail::to_ns(d)));
        return pending;
    }

    explicit operator bool() const noexcept { return s_ != nullptr; }

private:
    template <class F>
    friend timer after_func_at(std::chrono::nanoseconds, F&&, const detail::site&);
    explicit timer(detail::time_state* s) noexcept : s_(s) {}

    void close() noexcept;

    detail::time_state* s_ = nullptr;
    // A copy of s_->ch: receivers read it here, not from the state that the
    // timer thread writes at every fire (one cache line less moved per tick).
    channel<tick_time> ch_{nullptr};
};

/// Go's time.Ticker: a tick on chan() every period; ticks a slow receiver
/// misses are dropped.
class ticker {
public:
    ticker() noexcept = default;

    /// Ticks every `d` (> 0), the first `d` from now (time.NewTicker).
    template <class Rep, class Period>
    explicit ticker(std::chrono::duration<Rep, Period> d) {
        const std::int64_t ns = detail::to_ns(d);
        if (ns <= 0) throw usage_error("goro::ticker: non-positive interval");
        s_ = detail::make_chan_state();
        ch_ = s_->ch;
        std::lock_guard g(s_->mu);
        s_->period_ns = ns;
        s_->arm_locked(detail::time_state::deadline_after(ns));
    }

    ticker(ticker&& o) noexcept : s_(std::exchange(o.s_, nullptr)), ch_(std::move(o.ch_)) {}
    ticker& operator=(ticker&& o) noexcept;
    ticker(const ticker&) = delete;
    ticker& operator=(const ticker&) = delete;
    ~ticker() { close(); }

    /// The channel the ticks are sent on (capacity 1; nil for an empty
    /// ticker), Go's t.C: this ticker's own handle, valid while the ticker is
    /// (copy it to keep it longer; copies refer to the same channel).
    const channel<tick_time>& chan() const noexcept { return ch_; }

    /// Turns the ticker off (Ticker.Stop): no more ticks, and a tick not yet
    /// received is discarded. The channel is not closed.
    void stop();

    /// Stops the ticker and restarts it with period `d` (> 0); the next tick
    /// is due `d` from now (Ticker.Reset). A tick not yet received is discarded.
    template <class Rep, class Period>
    void reset(std::chrono::duration<Rep, Period> d) {
        if (!s_) throw usage_error("goro::ticker::reset: the ticker is empty (moved-from or default-constructed)");
        const std::int64_t ns = detail::to_ns(d);
        if (ns <= 0) throw usage_error("goro::ticker::reset: non-positive interval");
        std::lock_guard g(s_->mu);
        s_->drain_locked();
        s_->period_ns = ns;
        s_->arm_locked(detail::time_state::deadline_after(ns));
    }

    explicit operator bool() const noexcept { return s_ != nullptr; }

private:
    void close() noexcept;

    detail::time_state* s_ = nullptr;
    channel<tick_time> ch_{nullptr};  // a copy of s_->ch (see timer::ch_)
};

template <class F>
timer after_func_at(std::chrono::nanoseconds d, F&& f, const detail::site& where) {
    using fn = std::decay_t<F>;
    using result = std::invoke_result_t<fn&>;
    static_assert(std::is_void_v<result> || std::is_same_v<result, task<>>,
                  "goro::after_func: f must return void or goro::task<>");
    auto* s = new detail::after_state<fn>(fn(std::forward<F>(f)), where);
    s->destroy = [](detail::time_state* p) noexcept { delete static_cast<detail::after_state<fn>*>(p); };
    s->on_fire = &detail::after_func_start<fn>;
    timer t(s);
    std::lock_guard g(s->mu);
    s->arm_locked(detail::time_state::deadline_after(d.count()));
    return t;
}

/// Go's time.AfterFunc: after `d`, runs `f` (void, or returning goro::task<>)
/// in its own task. The returned timer's stop() cancels f if it has not started.
template <class Rep, class Period, class F>
timer after_func(std::chrono::duration<Rep, Period> d, F&& f, GORO_SITE_PARAM) {
    return after_func_at(std::chrono::nanoseconds(detail::to_ns(d)), std::forward<F>(f), GORO_SITE_ARG);
}

}  // namespace goro

#if GORO_BODIES

namespace goro::detail {

GORO_DECL std::int64_t time_state::deadline_after(std::int64_t d_ns) noexcept {
    std::int64_t now = now_ns();
    if (d_ns <= 0) return now;
    if (d_ns > std::numeric_limits<std::int64_t>::max() - now) return std::numeric_limits<std::int64_t>::max();
    return now + d_ns;
}

GORO_DECL void time_state::arm_locked(std::int64_t when) {
    ++seq;
    want_ns = when;
    active = true;
    timer_queue& q = the_scheduler().timers();
    if (!owned) {
        owned = true;
        add_ref();  // the timer thread's
        node_seq = seq;
        when_ns = when;
        fire = &fire_cb;
        q.add(this);
    } else if (q.cancel(this)) {
        node_seq = seq;
        when_ns = when;
        q.add(this);
    }
    // else the timer thread is firing the node now: fire_cb sees the stale
    // seq and re-arms it for want_ns.
}

GORO_DECL bool time_state::stop_locked(bool& drop) {
    const bool was = active;
    active = false;
    ++seq;
    if (owned && the_scheduler().timers().cancel(this)) {
        owned = false;
        drop = true;
    }
    return was;
}

GORO_DECL bool time_state::drain_locked() {
    if (!ch) return false;
    return ch.try_recv().status == recv_status::received;
}

GORO_DECL void time_state::fire_cb(timer_node* n) noexcept {
    auto* s = static_cast<time_state*>(n);
    bool drop = false, run = false;
    {
        std::lock_guard g(s->mu);
        if (!s->active) {
            s->owned = false;
            drop = true;
        } else if (s->node_seq != s->seq) {
            // Reset while we held the node: fire at the new time instead.
            s->node_seq = s->seq;
            the_scheduler().timers().rearm_from_fire(s, s->want_ns);
        } else {
            const std::int64_t due = s->when_ns;
            if (s->period_ns > 0) {
                // Go's rule: the next multiple of the period after now (skip what was missed).
                const std::int64_t late = the_scheduler().timers().batch_now() - due;
                std::int64_t next = due + s->period_ns * (1 + (late > 0 ? late / s->period_ns : 0));
                s->want_ns = next;
                the_scheduler().timers().rearm_from_fire(s, next);
            } else {
                s->active = false;
                s->owned = false;
                drop = true;
            }
            if (s->ch) (void)s->ch.try_send(tick_time(std::chrono::nanoseconds(due)));  // full: dropped
            run = s->on_fire != nullptr;
            if (run) s->add_ref();  // for f's task
        }
    }
    if (run) s->on_fire(s);  // releases that reference, in the task or at once
    if (drop) s->release();  // last access
}

GORO_DECL time_state* make_chan_state() {
    auto* s = new time_state();
    s->destroy = [](time_state* p) noexcept { delete p; };
    s->ch = channel<tick_time>(1);
    return s;
}

}  // namespace goro::detail

namespace goro {

GORO_DECL timer& timer::operator=(timer&& o) noexcept {
    if (this != &o) {
        close();
        s_ = std::exchange(o.s_, nullptr);
        ch_ = std::move(o.ch_);
    }
    return *this;
}

GORO_DECL bool timer::stop() {
    if (!s_) return false;
    bool drop = false, pending;
    {
        std::lock_guard g(s_->mu);
        pending = s_->stop_locked(drop);
        if (s_->drain_locked()) pending = true;
    }
    if (drop) s_->release();
    return pending;
}

GORO_DECL void timer::close() noexcept {
    if (!s_) return;
    bool drop = false;
    {
        std::lock_guard g(s_->mu);
        s_->stop_locked(drop);
    }
    if (drop) s_->release();
    std::exchange(s_, nullptr)->release();
    ch_ = channel<tick_time>(nullptr);
}

GORO_DECL ticker& ticker::operator=(ticker&& o) noexcept {
    if (this != &o) {
        close();
        s_ = std::exchange(o.s_, nullptr);
        ch_ = std::move(o.ch_);
    }
    return *this;
}

GORO_DECL void ticker::stop() {
    if (!s_) return;
    bool drop = false;
    {
        std::lock_guard g(s_->mu);
        s_->stop_locked(drop);
        s_->drain_locked();
    }
    if (drop) s_->release();
}

GORO_DECL void ticker::close() noexcept {
    if (!s_) return;
    bool drop = false;
    {
        std::lock_guard g(s_->mu);
        s_->stop_locked(drop);
    }
    if (drop) s_->release();
    std::exchange(s_, nullptr)->release();
    ch_ = channel<tick_time>(nullptr);
}

}  // namespace goro
#endif  // GORO_BODIES
