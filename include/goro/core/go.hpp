// goro/core/go.hpp — starting tasks and waiting for them: go, block_on, sleep, yield.
//
//   goro::go(worker(ch));                       // detached root task, like `go worker(ch)`
//   goro::go(worker(ch), {.name = "worker"});   // with a name (and pprof labels)
//   int v = goro::block_on(compute());          // from main or any plain thread
//   co_await goro::sleep_for(10ms);
//   co_await goro::yield();
//
// go() records where it was called ("created by f in goroutine N"). block_on()
// lists the calling thread in the registry for as long as it waits, with the
// call site as its bottom frame, so a dump shows what `main` waits for.
// block_on() on a pool worker throws goro::usage_error: blocking a worker can
// deadlock the pool (co_await instead).
//
// What a failing program prints is the same whatever it includes: the first
// task started (by go() or block_on()) installs the crash report
// (goro/inspect/panic.hpp) as the handler of an exception that escapes a task,
// and block_on() always waits through the deadlock detector
// (goro/inspect/deadlock.hpp). So this header, the top of core/, includes those
// two inspect/ headers; they are reached only from go() and block_on(), and
// a program that never calls them compiles none of their code into itself.
//
// At process exit the pool's workers are stopped. Tasks still parked then (a
// leak) are neither resumed nor destroyed: their frames stay allocated and
// listed in the registry, which is never freed, so leak checkers see them as
// reachable and no destructor runs against already destroyed globals.
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/task.hpp>
#include <goro/core/timer.hpp>
#include <goro/inspect/deadlock.hpp>
#include <goro/inspect/panic.hpp>

namespace goro {

namespace detail {

template <class A>
using await_result_t = decltype(std::declval<decltype(get_awaiter(std::declval<A>()))&>().await_resume());

/// Once per process, before the first task starts: what the runtime needs
/// from the layers above core/ and from the CPU. Here rather than in static
/// initialisers, so that a program that includes goro and never starts a task
/// runs none of it and links none of it.
GORO_DECL void start_runtime_once();

GORO_DECL task_header* new_header(task_kind kind, const site& where);

/// After add(): when this thread's count of live tasks reaches a power of
/// two (>= 1024), the global queue gets room for twice the total, so that a
/// close or a cancel that wakes them all at once finds room there (see
/// scheduler::reserve_global). The total, not this thread's count: a thread
/// that only spawns, whose tasks end on other threads, counts up forever.
GORO_DECL void make_room(std::int64_t live) noexcept;

GORO_DECL void start_root(task_header* h, std::coroutine_handle<> frame, promise_base& p);

/// The bottom frame goro adds below a user's task when it must own
/// something for the task's whole life: the callable of go(callable), the
/// result slot of spawn(), the foreign coroutine awaiting a goro::task. It
/// runs the user's task as a child with no parent frame (root_child), so the
/// stack a dump shows is the user's task alone. At its end it leaves the
/// registry (an exception that escaped goes to the panic handler first),
/// then continues `then_` if one was set (set_then): a coroutine that is not
/// goro's, which runs on this worker outside any task.
struct runner {
    struct promise_type : promise_base {
        std::coroutine_handle<> then_{};
        std::exception_ptr error_{};

        struct final_awaiter {
            using is_goro_awaiter = void;
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<promise_type> h) const noexcept;
            void await_resume() const noexcept {}
        };

        runner get_return_object() noexcept { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { error_ = std::current_exception(); }
    };
    std::coroutine_handle<promise_type> handle;
};

/// RUNNING SITE. A dump shows a task that runs on a worker that did not stop
/// at the site the worker resumed it at (scheduler::running_site). A task
/// started by go(callable) or spawn() is resumed first in the runner's frame,
/// which has no site of its own, so until its first suspension it would show
/// as `stack unavailable`. The runner therefore notes the site itself: while
/// the callable runs (it may block before it returns its task), the go() or
/// spawn() call; once the user's task starts, that task's entry site (ENTRY
/// SITE in goro/core/task.hpp). Only this worker writes its `resumed_at`.
inline void note_running_site(const site& s) noexcept {
    if (worker* w = tls_worker) w->resumed_at.store(s);
}

/// The callable of go(callable) or spawn() returned `t`: a lambda with
/// captures, called by the runner, left the lambda-call mark as its frame's
/// site (LAMBDA CALLS in goro/core/task.hpp; harmless here, the lambda lives
/// in the runner's frame), which names nothing: the task shows the go() or
/// spawn() call instead until its first suspension.
template <class Promise>
void note_entry_site(Promise& p, const site& call) noexcept {
    if (p.site_.line() == 0 || is_lambda_call_site(p.site_)) p.site_ = call;
}

/// Runs a task as the runner's child, with no parent frame (see runner).
template <class Promise, bool TakeResult = true>
struct root_child {
    using is_goro_awaiter = void;
    std::coroutine_handle<Promise> child;

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<runner::promise_type> r) noexcept {
        Promise& cp = child.promise();
        cp.continuation_ = r;
        cp.parent_ = nullptr;
        cp.header_ = r.promise().header_;
        cp.header_->leaf = &cp;
        note_running_site(cp.site_);  // the user's task starts here (RUNNING SITE)
        continue_with(child);
    }
    decltype(auto) await_resume() {
        if constexpr (TakeResult) return child.promise().take_result();
    }
};

/// Sets the coroutine the runner continues once it has left the registry.
struct set_then {
    using is_goro_awaiter = void;
    std::coroutine_handle<> h;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<runner::promise_type> me) const noexcept {
        me.promise().then_ = h;
        return false;
    }
    void await_resume() const noexcept {}
};

/// The site of the call (site::current() where there is std::source_location).
inline site site_here(GORO_SITE_PARAM) noexcept { return GORO_SITE_ARG; }

GORO_DECL void check_pool_open(const char* op);

/// Lists a runner as a new root task and queues it; returns the task's id.
GORO_DECL std::uint64_t start_runner(runner r, task_options&& options, const site& where);

template <class F>
runner run_callable(F f, site call) {
    note_running_site(call);  // while the callable runs (RUNNING SITE)
    auto t = f();             // `f` lives in this frame as long as the task runs
    if (!t) throw usage_error("goro::go: the callable returned an empty task");
    note_entry_site(t.handle().promise(), call);
    co_await root_child<typename decltype(t)::promise_type>{t.handle()};
}

template <class Promise>
runner foreign_awaited_body(std::coroutine_handle<Promise> child, std::coroutine_handle<> awaiting) {
    co_await root_child<Promise, false>{child};  // the awaiter takes the result
    co_await set_then{awaiting};
}

template <class Promise>
void start_for_foreign(std::coroutine_handle<Promise> child, std::coroutine_handle<> awaiting) {
    start_runner(foreign_awaited_body(child, awaiting), {}, site_here());
}

template <class R>
struct block_on_state {
    std::conditional_t<std::is_void_v<R>, bool, std::optional<std::conditional_t<std::is_void_v<R>, int, R>>> value{};
    std::exception_ptr error;
    std::atomic<std::uint32_t> done{0};
};

// `A` is `T&` for an lvalue argument (the caller keeps it) and `T` for an
// rvalue, which the body's frame then owns: its frames live as long as the
// body, whatever happens to the caller (see the deadlock report).
template <class R, class A>
task<> block_on_body(A a, std::shared_ptr<block_on_state<R>> st) {
    try {
        if constexpr (std::is_void_v<R>) {
            co_await keep_site<A>{static_cast<A&&>(a)};
        } else {
            st->value.emplace(co_await keep_site<A>{static_cast<A&&>(a)});
        }
    } catch (...) {
        st->error = std::current_exception();
    }
    st->done.store(1, std::memory_order_release);
    st->done.notify_all();
}

struct [[nodiscard("goro::sleep_for: co_await it")]] sleep_awaiter {
    using is_goro_awaiter = void;
    struct wake_node : timer_node {
        task_header* task = nullptr;
    };
    std::int64_t deadline_ns;
    wake_node node{};

    bool await_ready() const noexcept { return deadline_ns <= now_ns(); }
    void await_suspend(std::coroutine_handle<> h);
    void await_resume() const noexcept {}
};

struct [[nodiscard("goro::yield: co_await it")]] yield_awaiter {
    using is_goro_awaiter = void;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h);
    void await_resume() const noexcept {}
};

inline std::int64_t to_monotonic_ns(std::chrono::steady_clock::time_point t) noexcept {
    // steady_clock is CLOCK_MONOTONIC on the platforms goro supports.
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace detail

/// Starts `t` as a detached root task on the pool, like Go's `go` statement.
///
/// LIFETIME: the task must not refer to anything that may die before it
/// ends. A lambda's captures live in the lambda object, not in the coroutine
/// frame, so `goro::go([=]() -> goro::task<> {...}())` — a lambda called in
/// place — leaves the task reading a dead object. Pass the lambda itself:
/// `goro::go([=]() -> goro::task<> {...})` copies it into the task, which
/// keeps it alive to its end. Parameters of a coroutine function, taken by
/// value, live in its frame and are safe. go() throws goro::usage_error when
/// it sees the wrong form (see detail::note_self in goro/core/task.hpp).
GORO_DECL void go(task<> t, task_options options = {}, GORO_SITE_PARAM);

/// Starts `f()` as a detached root task, keeping the callable `f` (moved or
/// copied in) alive until the task ends: `goro::go([=]() -> goro::task<> { ... })`.
template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, task<>> && std::is_invocable_v<std::decay_t<F>&> &&
             std::is_same_v<std::invoke_result_t<std::decay_t<F>&>, task<>>)
void go(F&& f, task_options options = {}, GORO_SITE_PARAM) {
    detail::check_pool_open("goro::go");
    const detail::site call = GORO_SITE_ARG;
    detail::start_runner(detail::run_callable<std::decay_t<F>>(std::decay_t<F>(static_cast<F&&>(f)), call),
                         std::move(options), call);
}

/// Runs the awaitable `a` on the pool and waits for it on this plain thread;
/// returns its result or rethrows its exception.
template <class A>
auto block_on(A&& a, GORO_SITE_PARAM) -> detail::await_result_t<A&&> {
    using R = detail::await_result_t<A&&>;
    if (detail::tls_worker)
        throw usage_error("goro::block_on: called on a pool worker; co_await the operation instead "
                          "(blocking a worker can deadlock the pool)");
    auto st = std::make_shared<detail::block_on_state<R>>();
    task<> body = detail::block_on_body<R, A>(static_cast<A&&>(a), st);
    auto frame = body.release();
    auto site = GORO_SITE_ARG;
    frame.promise().site_ = site;  // the bottom frame shows the block_on call
    task_header* h = detail::new_header(task_kind::blocked, site);
    detail::start_root(h, frame, frame.promise());
    // The wait, which the deadlock watchdog (goro/inspect/deadlock.hpp) can
    // end: then `done` reads 2 and it throws goro::deadlock_error. `h` is only
    // a key for the watchdog: the body may already have finished and freed it.
    detail::deadlock_aware_wait(st->done, h);
    // Move the error out: the worker may drop the state's last reference at
    // any moment, and the exception's own count is invisible to TSan.
    if (std::exception_ptr e = std::move(st->error)) std::rethrow_exception(std::move(e));
    if constexpr (!std::is_void_v<R>) return std::move(*st->value);
}

/// Parks the current task for at least `d` (wait reason "sleep").
template <class Rep, class Period>
[[nodiscard("goro::sleep_for: co_await it")]] detail::sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> d) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    return detail::sleep_awaiter{detail::now_ns() + (ns > 0 ? ns : 0)};
}

/// Parks the current task until `t` (any clock; converted to the monotonic clock).
template <class Clock, class Duration>
[[nodiscard("goro::sleep_until: co_await it")]] detail::sleep_awaiter sleep_until(std::chrono::time_point<Clock, Duration> t) {
    if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
        return detail::sleep_awaiter{detail::to_monotonic_ns(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(t))};
    } else {
        auto d = t - Clock::now();
        return sleep_for(d);
    }
}

/// Lets other runnable tasks run, then continues (Go's runtime.Gosched).
[[nodiscard("goro::yield: co_await it")]] inline detail::yield_awaiter yield() noexcept { return {}; }

/// The id of the task running on this thread (0 off the pool).
inline std::uint64_t this_task_id() noexcept {
    task_header* t = detail::tls_current_task;
    return t ? t->id : 0;
}

}  // namespace goro

#if GORO_BODIES
namespace goro {

namespace detail {

GORO_DECL void start_runtime_once() {
    static const bool started = [] {
        detect_cpu_features();
        panic_handler().store(&report_panic, std::memory_order_release);
        return true;
    }();
    (void)started;
}

GORO_DECL task_header* new_header(task_kind kind, const site& where) {
    start_runtime_once();
    task_header* h = the_registry().make_header();
    h->kind = kind;
    task_header_cold& c = h->cold();
    c.spawn_site = where;
    if (task_header* cur = tls_current_task) c.parent_id = cur->id;
    return h;
}

GORO_DECL void make_room(std::int64_t live) noexcept {
    if (live >= 1024 && (live & (live - 1)) == 0) [[unlikely]] {
        const std::int64_t total = the_registry().count();
        if (total > 0) the_scheduler().reserve_global(2 * static_cast<std::size_t>(total));
    }
}

GORO_DECL void start_root(task_header* h, std::coroutine_handle<> frame, promise_base& p) {
    h->root_frame_ = frame.address();
    h->set_resume_point(frame);
    h->leaf = &p;
    p.header_ = h;
    const std::int64_t live = the_registry().add(h);
    make_room(live);
    the_scheduler().spawn(h);
}

GORO_DECL void runner::promise_type::final_awaiter::await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
    promise_type& p = h.promise();
    task_header* hdr = p.header_;
    std::coroutine_handle<> then = p.then_;
    if (std::exception_ptr e = std::move(p.error_)) panic_handler().load(std::memory_order_acquire)(*hdr, std::move(e));
    finish_root(hdr, h);
    if (then) {
        tls_current_task = nullptr;  // `then` belongs to no task
        continue_with(then);
    }
}

GORO_DECL void check_pool_open(const char* op) {
    pool_holder& ph = the_pool_holder();
    if (scheduler* p = ph.pool.load(std::memory_order_acquire); p && p->stopping())
        throw usage_error(std::string(op) + ": the pool has shut down (process exit)");
}

GORO_DECL std::uint64_t start_runner(runner r, task_options&& options, const site& where) {
    task_header* h;
    try {
        h = new_header(task_kind::task, where);
        if (!options.name.empty() || !options.labels.empty()) h->cold().meta = task_meta(std::move(options));
    } catch (...) {
        r.handle.destroy();
        throw;
    }
    // start_root, reading the id before the task may run (and end, and its header be reused).
    h->root_frame_ = r.handle.address();
    h->set_resume_point(r.handle);
    h->leaf = &r.handle.promise();
    r.handle.promise().header_ = h;
    const std::int64_t live = the_registry().add(h);
    const std::uint64_t id = h->id;
    make_room(live);
    the_scheduler().spawn(h);
    return id;
}

GORO_DECL void sleep_awaiter::await_suspend(std::coroutine_handle<> h) {
    node.task = current_task_or_throw("goro::sleep");
    park(node.task, h, wait_reason::sleep);
    node.when_ns = deadline_ns;
    node.fire = [](timer_node* n) noexcept {
        ready(static_cast<wake_node*>(n)->task);  // last access: the task may run (and free us) from here on
    };
    the_scheduler().timers().add(&node);
}

GORO_DECL void yield_awaiter::await_suspend(std::coroutine_handle<> h) {
    task_header* t = current_task_or_throw("goro::yield");
    t->set_resume_point(h);
    the_scheduler().gosched(t);
}

}  // namespace detail

GORO_DECL void go(task<> t, task_options options, GORO_SITE_PARAM_DEF) {
    if (!t) throw usage_error("goro::go: the task is empty (moved-from or default-constructed)");
    if (t.handle().done()) throw usage_error("goro::go: the task has already run (it was awaited)");
    detail::check_pool_open("goro::go");
    detail::check_not_lambda_call(t.handle(), "goro::go");
    auto frame = t.release();
    task_header* h = detail::new_header(task_kind::task, GORO_SITE_ARG);
    if (!options.name.empty() || !options.labels.empty())
        h->cold().meta = task_meta(std::move(options));
    detail::start_root(h, frame, frame.promise());
}

}  // namespace goro
#endif  // GORO_BODIES
