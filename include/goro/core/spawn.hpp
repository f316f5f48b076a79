// goro/core/spawn.hpp — `goro::spawn`: start a task and keep a handle to its result.
//
//   goro::join_handle<int> h = goro::spawn(compute(x));   // runs now, on the pool
//   ...                                                   // the caller goes on
//   int v = co_await h;                                   // its result, or its exception
//
//   auto h2 = goro::spawn([=]() -> goro::task<int> { co_return x * 2; });  // a callable: kept alive
//
// The task is a root task like go()'s: listed, counted, dumped with its own
// stack ("created by" the spawn call), run by any worker. The handle is
// move-only and awaited once (`co_await h` or `co_await std::move(h)`; a
// second co_await throws goro::usage_error). A task awaiting it parks with
// wait reason "join"; a coroutine that is not goro's may await it too (it
// is continued on the worker that finished the task). Dropping a handle
// without awaiting it, or calling detach(), detaches the task: it runs to
// its end, and its result (or exception) is discarded — unlike go(), an
// exception from a spawned task never reaches the panic handler; it waits
// in the handle.
//
// THREADS: the task's result and the waiter meet in a `one_shot`: one word,
// 0 (nobody waits), the waiter's record (it parked), or 1 (the task ended).
// The waiter publishes its record with a CAS from 0, the task's end
// exchanges in 1: whoever is second sees the other and acts (the waiter
// does not park; the task readies the waiter). The result is written before
// the exchange, read after the waiter saw it.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

#include <goro/core/go.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/task.hpp>

namespace goro {

template <class T>
class join_handle;

namespace detail {

/// One waiter, woken once (see THREADS above).
class one_shot {
public:
    struct waiter {
        task_header* task = nullptr;        // a goro task, parked
        std::coroutine_handle<> foreign{};  // or a coroutine that is not goro's
    };

    bool fired() const noexcept { return word_.load(std::memory_order_acquire) == fired_word; }

    /// Suspends the awaiting coroutine `h` on this one_shot; false when it has
    /// fired already (then `h` goes on without suspending).
    template <class P>
    bool suspend(waiter& w, std::coroutine_handle<P> h, const char* reason) noexcept {
        task_header* t = nullptr;
        if constexpr (std::is_base_of_v<promise_base, P>) t = h.promise().header_;
        if (t && t == tls_current_task) {
            w.task = t;
            park(t, h, reason);
        } else {
            w.foreign = h;
        }
        std::uintptr_t expected = 0;
        if (word_.compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(&w), std::memory_order_acq_rel,
                                          std::memory_order_acquire))
            return true;  // published: the firer owns the wake-up
        if (t) t->state.store(task_state::running, std::memory_order_relaxed);
        return false;
    }

    /// Fires: a parked goro task is made runnable; a foreign coroutine is
    /// returned, for the caller to continue (null when there is none).
    /// Touches nothing of this object afterwards.
    [[nodiscard]] std::coroutine_handle<> fire() noexcept;

private:
    static constexpr std::uintptr_t fired_word = 1;
    std::atomic<std::uintptr_t> word_{0};
};

/// Awaits a one_shot (wait reason "join").
struct one_shot_awaiter {
    using is_goro_awaiter = void;
    one_shot* s;
    one_shot::waiter w{};
    bool await_ready() const noexcept { return s->fired(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        return s->suspend(w, h, wait_reason::join);
    }
    void await_resume() const noexcept {}
};

template <class T>
using result_slot_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class T>
struct join_state {
    std::atomic<std::uint32_t> refs{2};  // the handle and the task
    one_shot done;
    std::optional<result_slot_t<T>> value;
    std::exception_ptr error;

    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }
};

/// The task made from what spawn() was given: the task itself, or a call of the callable.
template <class Src>
auto make_task(Src& src) {
    if constexpr (is_task_v<Src>) return std::move(src);
    else return src();
}

template <class T, class Src>
runner spawn_body(Src src, join_state<T>* st, site call) {
    try {
        note_running_site(call);     // while the callable runs (RUNNING SITE in goro/core/go.hpp)
        task<T> t = make_task(src);  // `src` (a callable) lives in this frame to the end
        if (!t) throw usage_error("goro::spawn: the callable returned an empty task");
        note_entry_site(t.handle().promise(), call);
        if constexpr (std::is_void_v<T>) {
            co_await root_child<typename task<T>::promise_type>{t.handle()};
            st->value.emplace();
        } else {
            st->value.emplace(co_await root_child<typename task<T>::promise_type>{t.handle()});
        }
    } catch (...) {
        st->error = std::current_exception();
    }
    std::coroutine_handle<> then = st->done.fire();
    st->release();
    if (then) co_await set_then{then};
}

template <class T>
struct join_awaiter {
    using is_goro_awaiter = void;
    join_state<T>* st;
    one_shot::waiter w{};

    bool await_ready() const noexcept { return st->done.fired(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        return st->done.suspend(w, h, wait_reason::join);
    }
    T await_resume() {
        if (st->error) std::rethrow_exception(std::move(st->error));
        if constexpr (!std::is_void_v<T>) return std::move(*st->value);
    }
};

template <class T, class Src>
join_handle<T> spawn_from(Src&& src, task_options&& options, const site& where);

}  // namespace detail

/// The handle of a task started by goro::spawn: awaitable once for its result.
template <class T>
class [[nodiscard("goro::spawn: co_await the handle for the result (dropping it detaches the task)")]] join_handle {
public:
    using is_goro_awaiter = void;
    using value_type = T;

    join_handle() noexcept = default;
    join_handle(join_handle&& o) noexcept
        : st_(std::exchange(o.st_, nullptr)), id_(o.id_), awaited_(o.awaited_) {}
    join_handle& operator=(join_handle&& o) noexcept {
        if (this != &o) {
            detach();
            st_ = std::exchange(o.st_, nullptr);
            id_ = o.id_;
            awaited_ = o.awaited_;
        }
        return *this;
    }
    join_handle(const join_handle&) = delete;
    join_handle& operator=(const join_handle&) = delete;
    ~join_handle() { detach(); }

    /// The task's id, as dumps show it ("goroutine N").
    std::uint64_t id() const noexcept { return id_; }
    /// True once the task has ended (a moment's view).
    bool done() const noexcept { return st_ && st_->done.fired(); }
    /// True while the handle refers to a task (not moved-from, not detached).
    explicit operator bool() const noexcept { return st_ != nullptr; }
    /// Lets the task run on alone; its result is discarded. The destructor does the same.
    void detach() noexcept {
        if (st_) std::exchange(st_, nullptr)->release();
    }

    detail::join_awaiter<T> operator co_await() & { return take_awaiter(); }
    detail::join_awaiter<T> operator co_await() && { return take_awaiter(); }

private:
    template <class U, class Src>
    friend join_handle<U> detail::spawn_from(Src&& src, task_options&& options, const detail::site& where);

    join_handle(detail::join_state<T>* st, std::uint64_t id) noexcept : st_(st), id_(id) {}

    detail::join_awaiter<T> take_awaiter() {
        if (!st_) throw usage_error("goro::join_handle: co_await on an empty handle (moved-from, detached or default-constructed)");
        if (awaited_) throw usage_error("goro::join_handle: co_await on a handle already awaited (a result is delivered once)");
        awaited_ = true;
        return detail::join_awaiter<T>{st_};
    }

    detail::join_state<T>* st_ = nullptr;
    std::uint64_t id_ = 0;
    bool awaited_ = false;
};

namespace detail {

template <class T, class Src>
join_handle<T> spawn_from(Src&& src, task_options&& options, const site& where) {
    check_pool_open("goro::spawn");
    auto* st = new join_state<T>();
    std::uint64_t id;
    try {
        id = start_runner(spawn_body<T, std::decay_t<Src>>(std::decay_t<Src>(static_cast<Src&&>(src)), st, where),
                          std::move(options), where);
    } catch (...) {
        delete st;  // the body never ran
        throw;
    }
    return join_handle<T>(st, id);
}

}  // namespace detail

/// Starts `t` as a root task on the pool and returns a handle to its result.
template <class T>
[[nodiscard("goro::spawn: co_await the handle for the result (dropping it detaches the task)")]] join_handle<T> spawn(
    task<T> t, task_options options = {}, GORO_SITE_PARAM) {
    if (!t) throw usage_error("goro::spawn: the task is empty (moved-from or default-constructed)");
    if (t.handle().done()) throw usage_error("goro::spawn: the task has already run (it was awaited)");
    detail::check_not_lambda_call(t.handle(), "goro::spawn");
    return detail::spawn_from<T>(std::move(t), std::move(options), GORO_SITE_ARG);
}

/// Starts `f()` (a callable returning goro::task<T>, kept alive until the
/// task ends) as a root task and returns a handle to its result.
template <class F>
    requires(!detail::is_task_v<std::remove_cvref_t<F>> && std::is_invocable_v<std::decay_t<F>&> &&
             detail::is_task_v<std::invoke_result_t<std::decay_t<F>&>>)
[[nodiscard("goro::spawn: co_await the handle for the result (dropping it detaches the task)")]] auto spawn(
    F&& f, task_options options = {}, GORO_SITE_PARAM) {
    using T = typename std::invoke_result_t<std::decay_t<F>&>::value_type;
    return detail::spawn_from<T>(static_cast<F&&>(f), std::move(options), GORO_SITE_ARG);
}

}  // namespace goro

#if GORO_BODIES
namespace goro::detail {

GORO_DECL std::coroutine_handle<> one_shot::fire() noexcept {
    std::uintptr_t v = word_.exchange(fired_word, std::memory_order_acq_rel);
    if (v == 0 || v == fired_word) return {};
    waiter* w = reinterpret_cast<waiter*>(v);
    task_header* t = w->task;
    std::coroutine_handle<> f = w->foreign;
    if (t) {
        ready(t);
        return {};
    }
    return f;
}

}  // namespace goro::detail
#endif  // GORO_BODIES
