// goro/sync/errgroup.hpp — `goro::errgroup`: a group of tasks working on one job,
// with the first failure cancelling the rest (golang.org/x/sync/errgroup).
//
//   auto [g, ctx] = goro::errgroup::with_context(parent);
//   for (auto& url : urls) co_await g.go(fetch(ctx, url));   // fetch may throw
//   co_await g.wait();              // after all finished: rethrows the first error
//   std::exception_ptr e = co_await g.wait_error();          // or: returns it (null: none)
//
// SEMANTICS (Go's):
//   * `co_await g.go(t)` starts `t` with goro::go (so it is a registered
//     task, "created by" the caller of go). An exception escaping `t` does not
//     crash the process: the first one becomes the group's error and cancels
//     the group's context (with that exception as the context's cause, see
//     goro::cause). Later errors are dropped, as in Go.
//   * `co_await g.wait()` returns once every started task has finished, and
//     rethrows the first error (Go's Wait returns it; `wait_error()` does).
//     It then cancels the group's context too (Go does, so a context derived
//     for the group never outlives it).
//   * Tasks see the cancellation only if they look: `ctx.done()` in a select,
//     `co_await ctx.done()`, or `ctx.throw_if_done()`. That is what stops the
//     classic leak of siblings left running after one failed.
//
// LIMIT on tasks in flight (Go's SetLimit/TryGo):
//   * `g.set_limit(n)`: at most n tasks in flight (n < 0: no limit, the default).
//     Throws goro::usage_error while tasks are in flight (Go panics).
//   * `co_await g.go(t)`: with the limit reached, waits for a free slot (wait
//     reason `semacquire`, as Go's blocked Go), then starts `t`. Without a
//     limit, or with a slot free, it starts `t` at once and never suspends.
//     From a plain thread: `goro::block_on(g.go(t))`.
//   * `g.try_go(std::move(t))`: starts `t` if a slot is free; else returns
//     false and leaves `t` with the caller (Go's TryGo).
//   go() is [[nodiscard]]: `g.go(t);` without co_await starts nothing, and
//   the compiler says so.
//
// A group is a shared handle (copies refer to the same group), so it can be
// returned from with_context, captured by tasks, and outlive its creator while
// tasks run. The state is freed with the last handle and the last task.
//
// THREAD SAFETY: every member may be called from any task or thread, except
// set_limit, which must not race with starting tasks. `mu` guards the first
// error only; the context is cancelled after `mu` is released.
#pragma once

#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include <goro/sync/context.hpp>
#include <goro/core/go.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/sync/semaphore.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/task.hpp>
#include <goro/sync/wait_group.hpp>

namespace goro {

class errgroup {
    struct state {
        wait_group wg;                      // counts tasks in flight
        detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> mu;  // guards err
        std::exception_ptr err;
        goro::context ctx;                  // background when the group has none
        cancel_func cancel;                 // empty when the group has no context
        std::unique_ptr<semaphore> limit;   // null: no limit

        void fail(std::exception_ptr e) noexcept;
    };

public:
    /// A group without a context (Go's zero Group): errors are collected, nothing is cancelled.
    errgroup() : s_(std::make_shared<state>()) {}

    /// A group whose context is derived from `parent`; cancelled on the first
    /// error and when wait() returns. Tasks get it from `ctx()`.
    explicit errgroup(const goro::context& parent);

    /// `auto [g, ctx] = goro::errgroup::with_context(parent);` (Go's errgroup.WithContext).
    static std::pair<errgroup, goro::context> with_context(const goro::context& parent);

    /// The group's context (background for a group made without one).
    const goro::context& ctx() const noexcept { return s_->ctx; }

    /// Limits the tasks in flight to `n` (n < 0: no limit). Throws
    /// goro::usage_error while any task of the group is in flight.
    void set_limit(std::int64_t n);

    // go, try_go and wait, and what they call down to the group's
    // coroutines, are templates (of a parameter nobody passes) only so that
    // a program compiles them where it uses them: g++ 12 emits the body of
    // every coroutine it instantiates, or that is not a template, in every
    // translation unit that sees it, used or not, with all that it calls.

    /// Awaiter of go(t): starts `t` at once when the limit allows, else first
    /// parks (semacquire) until a task of the group finishes.
    template <int N>
    class go_operation {
    public:
        using is_goro_awaiter = void;
        go_operation(std::shared_ptr<state> s, task<> t, task_options options, const detail::site& where)
            : s_(std::move(s)), t_(std::move(t)), options_(std::move(options)), where_(where) {}

        bool await_ready() {
            semaphore* limit = s_->limit.get();
            if (limit && !limit->try_acquire()) {
                acquire_.emplace(limit->acquire());
                return false;
            }
            errgroup::start<N>(s_, std::move(t_), std::move(options_), where_);
            started_ = true;
            return true;
        }
        bool await_suspend(std::coroutine_handle<> h) { return acquire_->await_suspend(h); }
        void await_resume() {
            if (started_) return;
            acquire_->await_resume();
            errgroup::start<N>(s_, std::move(t_), std::move(options_), where_);
        }

    private:
        std::shared_ptr<state> s_;
        task<> t_;
        task_options options_;
        detail::site where_;
        std::optional<semaphore::acquire_operation> acquire_;
        bool started_ = false;
    };

    /// `co_await g.go(t)` (Go's Group.Go): starts `t`; under a reached limit,
    /// waits for a slot first. Pass a named `task_options` variable, not a
    /// braced temporary: g++ 12 relocates temporaries that appear in a
    /// co_await expression bitwise, which breaks a std::string inside them.
    template <int N = 0>
    [[nodiscard("goro::errgroup::go: co_await it (without, the task is never started)")]] go_operation<N> go(
        task<> t, GORO_SITE_PARAM) {
        if (!t) throw usage_error("goro::errgroup::go: the task is empty (moved-from or default-constructed)");
        return go_operation<N>(s_, std::move(t), task_options(), GORO_SITE_ARG);
    }

    /// As go(t), with a name and labels. (No defaulted `options = {}`: a
    /// default argument is a braced temporary in the caller's co_await
    /// expression, the very thing g++ 12 destroys twice.)
    template <int N = 0>
    [[nodiscard("goro::errgroup::go: co_await it (without, the task is never started)")]] go_operation<N> go(
        task<> t, const task_options& options, GORO_SITE_PARAM) {
        if (!t) throw usage_error("goro::errgroup::go: the task is empty (moved-from or default-constructed)");
        return go_operation<N>(s_, std::move(t), options, GORO_SITE_ARG);
    }

    /// Starts `t` if the limit allows; otherwise returns false and leaves `t` alone.
    template <int N = 0>
    bool try_go(task<>&& t, task_options options = {}, GORO_SITE_PARAM) {
        if (!t) throw usage_error("goro::errgroup::try_go: the task is empty (moved-from or default-constructed)");
        if (s_->limit && !s_->limit->try_acquire()) return false;
        start<N>(s_, std::move(t), std::move(options), GORO_SITE_ARG);
        return true;
    }

    /// `co_await g.wait()` (Go's Group.Wait): once every started task has
    /// finished, cancels the group's context and rethrows the first error.
    template <int N = 0>
    [[nodiscard("goro::errgroup::wait: co_await it")]] task<> wait() const {
        return wait_rethrow<N>(s_);
    }

    /// `co_await g.wait_error()`: as wait(), returning the first error (null
    /// when none failed) instead of throwing it.
    template <int N = 0>
    [[nodiscard("goro::errgroup::wait_error: co_await it")]] task<std::exception_ptr> wait_error() const {
        return wait_body<N>(s_);
    }

private:
    /// Starts `t` in the group `s`, whose limit (if any) has a slot taken for it.
    template <int N>
    static void start(const std::shared_ptr<state>& s, task<> t, task_options options, const detail::site& where) {
        s->wg.add(1);
        try {
            launch(run<N>(s, std::move(t)), std::move(options), where);
        } catch (...) {
            s->wg.done();
            if (s->limit) s->limit->release();
            throw;
        }
    }

    static void launch(task<> t, task_options options, const detail::site& where);

    template <int N>
    static task<> run(std::shared_ptr<state> s, task<> t) {
        std::exception_ptr e;
        try {
            co_await std::move(t);
        } catch (...) {
            e = std::current_exception();
        }
        if (e) s->fail(std::move(e));
        if (s->limit) s->limit->release();  // the slot first: a go() may be waiting for it
        s->wg.done();                       // last touch of the group by this task
    }

    template <int N>
    static task<std::exception_ptr> wait_body(std::shared_ptr<state> s) {
        co_await s->wg.wait();
        s->cancel();
        std::lock_guard g(s->mu);
        co_return s->err;
    }

    template <int N>
    static task<> wait_rethrow(std::shared_ptr<state> s) {
        if (std::exception_ptr e = co_await wait_body<N>(std::move(s))) std::rethrow_exception(std::move(e));
    }

    std::shared_ptr<state> s_;
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL void errgroup::state::fail(std::exception_ptr e) noexcept {
    bool first = false;
    {
        std::lock_guard g(mu);
        if (!err) {
            err = e;
            first = true;
        }
    }
    if (first) cancel(std::move(e));
}

GORO_DECL errgroup::errgroup(const goro::context& parent) : s_(std::make_shared<state>()) {
    auto [c, cancel] = with_cancel(parent);
    s_->ctx = std::move(c);
    s_->cancel = std::move(cancel);
}

GORO_DECL std::pair<errgroup, goro::context> errgroup::with_context(const goro::context& parent) {
    errgroup g(parent);
    goro::context c = g.ctx();
    return {std::move(g), std::move(c)};
}

GORO_DECL void errgroup::set_limit(std::int64_t n) {
    if (std::int64_t active = s_->wg.count(); active != 0)
        throw usage_error("goro::errgroup::set_limit: cannot change the limit while " + std::to_string(active) +
                          " tasks of the group are in flight");
    s_->limit = n < 0 ? nullptr : std::make_unique<semaphore>(n);
}

GORO_DECL void errgroup::launch(task<> t, task_options options, const detail::site& where) {
    // goro::go with the caller's site, so the task reads "created by" them.
#if GORO_HAS_SOURCE_LOCATION
    goro::go(std::move(t), std::move(options), where);
#else
    goro::go(std::move(t), std::move(options), where.file_name(), where.function_name(), where.line());
#endif
}

}  // namespace goro
#endif  // GORO_BODIES
