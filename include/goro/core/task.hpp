// goro/core/task.hpp — `goro::task<T>`: a lazily started, move-only coroutine.
//
//   goro::task<int> answer() { co_return 42; }
//   goro::task<> caller() { int v = co_await answer(); ... }
//
// A task does nothing until it is awaited (it then runs as a child whose
// frames join the awaiting task's logical stack, see goro/core/frame.hpp) or handed
// to `goro::go` (it then runs as a root task on the pool). Its result, or the
// exception that escaped it, is delivered to the awaiter. Awaiting consumes
// the task; a task can be awaited once.
//
// Which thread runs what: a child runs on the thread of its awaiter, through
// that thread's trampoline; when it finishes, its awaiter continues on the
// thread that finished it (a worker, after a wake-up that may have moved the
// task).
#pragma once

#include <concepts>
#include <coroutine>
#include <exception>
#include <new>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <goro/core/foreign.hpp>
#include <goro/core/frame.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/registry.hpp>

namespace goro {

template <class T = void>
class task;

namespace detail {

// LAMBDA CALLS. `goro::go([=]() -> goro::task<> {...}())` calls a lambda in
// place: the coroutine reads its captures through the lambda object, a
// temporary that dies when go() returns, long before the task runs. The
// promise's constructor sees the object a member coroutine is called on
// (C++20 passes it first, before the parameters): when that is a lambda's
// closure with captures and it does not live in the frame itself (a lambda
// passed by value to a coroutine function is a parameter copied into the
// frame: that is safe), the frame is marked (its site, unused until the
// first suspension) and go() and spawn() refuse the task. g++ passes the
// object; clang++ 14 does not pass a lambda's, so there nothing is caught.

template <class T>
constexpr std::string_view type_spelling() noexcept {
    return __PRETTY_FUNCTION__;
}

/// True for a lambda's closure type, read from the compiler's spelling of it
/// (g++: "f()::<lambda(int)>", clang++: "(lambda at f.cpp:3:5)").
template <class T>
constexpr bool is_closure_type() noexcept {
    std::string_view s = type_spelling<T>();
    const auto p = s.find("T = ");
    if (p == std::string_view::npos) return false;
    s = s.substr(p + 4);
    if (s.substr(0, 11) == "(lambda at ") return true;
    s = s.substr(0, s.find_first_of(";]"));
    const auto l = s.rfind("<lambda(");
    if (l == std::string_view::npos) return false;
    int depth = 0;
    std::size_t i = l + 7;
    for (; i < s.size(); ++i) {
        if (s[i] == '(') ++depth;
        else if (s[i] == ')' && --depth == 0) break;
    }
    return i + 2 == s.size() && s[i + 1] == '>';  // the lambda is the type itself, not an argument of it
}

/// The mark of a frame made by calling a lambda with captures (see LAMBDA CALLS).
inline site lambda_call_site() noexcept {
#if GORO_HAS_SOURCE_LOCATION
    return site::current();
#else
    return site{__FILE__, "goro::detail::lambda_call_site", __LINE__};
#endif
}

GORO_DECL bool is_lambda_call_site(const site& s) noexcept;

template <class Self, class... Args>
void note_self(Self& self, promise_base& p, std::size_t promise_size, void* frame) noexcept {
    using S = std::remove_cvref_t<Self>;
    if constexpr (std::is_class_v<S> && !std::is_empty_v<S> && is_closure_type<S>()) {
        const char* a = reinterpret_cast<const char*>(std::addressof(self));
        const char* f = static_cast<const char*>(frame);
        // Parameters are copied into the frame right after the promise.
        const std::size_t params = sizeof(S) + (0 + ... + sizeof(Args)) + 16 * (1 + sizeof...(Args));
        if (a >= f && a < reinterpret_cast<const char*>(&p) + promise_size + params + 256) return;
        p.site_ = lambda_call_site();
    } else {
        (void)self, (void)p, (void)promise_size, (void)frame;
    }
}

/// Throws when `h` was made by calling a lambda with captures in place.
template <class Promise>
void check_not_lambda_call(std::coroutine_handle<Promise> h, const char* op) {
    const site& s = h.promise().site_;
    if (s.line() != 0 && is_lambda_call_site(s)) [[unlikely]]
        throw usage_error(std::string(op) +
                          ": the task is a call of a lambda with captures, which live in the lambda object and die "
                          "with it before the task runs; pass the lambda itself, not called: "
                          "goro::go([=]() -> goro::task<> { ... })");
}

template <class Promise>
struct final_awaiter {
    using is_goro_awaiter = void;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<Promise> h) noexcept {
        Promise& p = h.promise();
        if (p.continuation_) {
            if (p.header_) p.header_->leaf = p.parent_;
            continue_with(p.continuation_);
            return;
        }
        if (p.header_ && p.header_->root_frame_ == h.address()) {
            // A root task started by go(): it owns itself.
            task_header* hdr = p.header_;
            std::exception_ptr e = p.take_exception();
            if (e) panic_handler().load(std::memory_order_acquire)(*hdr, std::move(e));
            finish_root(hdr, h);
        }
        // Otherwise the task was resumed by hand, outside goro: its owner destroys it.
    }
    void await_resume() const noexcept {}
};

template <class T>
struct task_promise : promise_base {
    // The result: a value, or an exception (error_ set, value_ empty), or
    // neither before the body returns. Not a std::variant: its machinery
    // costs every program ~50 functions per T at -O0 (issue 17).
    std::optional<T> value_;
    std::exception_ptr error_;

    task_promise() noexcept = default;
    template <class Self, class... Args>
    explicit task_promise(Self& self, Args&...) noexcept {
        note_self<Self, Args...>(self, *this, sizeof(task_promise),
                                 std::coroutine_handle<task_promise>::from_promise(*this).address());
    }

    task<T> get_return_object(GORO_SITE_PARAM) noexcept;
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter<task_promise> final_suspend() const noexcept { return {}; }

    template <class U>
        requires std::convertible_to<U&&, T>
    void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
        value_.emplace(std::forward<U>(v));
    }
    void unhandled_exception() noexcept {
        value_.reset();
        error_ = std::current_exception();
    }

    std::exception_ptr take_exception() noexcept { return std::move(error_); }
    T take_result() {
        if (error_) std::rethrow_exception(std::move(error_));
        return std::move(*value_);
    }

    using promise_base::await_transform;
    template <class A>
    decltype(auto) await_transform(keep_site<A> k) noexcept(is_goro_awaitable_v<A>) {
        return transform_awaitable(*this, static_cast<A&&>(k.awaitable));
    }
};

template <>
struct task_promise<void> : promise_base {
    std::exception_ptr error_;

    task_promise() noexcept = default;
    template <class Self, class... Args>
    explicit task_promise(Self& self, Args&...) noexcept {
        note_self<Self, Args...>(self, *this, sizeof(task_promise),
                                 std::coroutine_handle<task_promise>::from_promise(*this).address());
    }

    task<void> get_return_object(GORO_SITE_PARAM) noexcept;
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter<task_promise> final_suspend() const noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { error_ = std::current_exception(); }

    std::exception_ptr take_exception() noexcept { return std::move(error_); }
    void take_result() {
        if (error_) std::rethrow_exception(std::move(error_));
    }

    using promise_base::await_transform;
    template <class A>
    decltype(auto) await_transform(keep_site<A> k) noexcept(is_goro_awaitable_v<A>) {
        return transform_awaitable(*this, static_cast<A&&>(k.awaitable));
    }
};

/// Runs `child` as a root task on the pool and resumes `awaiting` (a
/// coroutine that is not goro's) on the worker that finished it, once the
/// task has left the registry (defined in goro/core/go.hpp).
template <class Promise>
void start_for_foreign(std::coroutine_handle<Promise> child, std::coroutine_handle<> awaiting);

/// Starts a child task: links it below the awaiting goro frame and hands it
/// to the trampoline. A coroutine that is not goro's gets the child run as a
/// task of its own on the pool (start_for_foreign), and is resumed when it ends.
template <class Promise>
struct task_awaiter {
    using is_goro_awaiter = void;
    std::coroutine_handle<Promise> child;

    bool await_ready() const {
        if (!child) return true;  // await_resume says why
        // A task runs only once awaited or started: one already done was awaited.
        if (child.done()) throw usage_error("goro::task: co_await on a task that was already awaited (a task can be awaited once)");
        return false;
    }

    template <class P>
    void await_suspend(std::coroutine_handle<P> parent) noexcept(std::is_base_of_v<promise_base, P>) {
        Promise& cp = child.promise();
        if constexpr (std::is_base_of_v<promise_base, P>) {
            cp.continuation_ = parent;
            promise_base& pp = parent.promise();
            cp.parent_ = &pp;
            cp.header_ = pp.header_;
            if (cp.header_) cp.header_->leaf = &cp;
            continue_with(child);
        } else {
            start_for_foreign(child, parent);
        }
    }

    decltype(auto) await_resume() {
        if (!child) throw usage_error("goro::task: co_await on an empty (moved-from) task");
        return child.promise().take_result();
    }
};

}  // namespace detail

template <class T>
class [[nodiscard("goro::task: co_await it, or start it with goro::go or goro::spawn")]] task {
public:
    using is_goro_awaiter = void;
    using promise_type = detail::task_promise<T>;
    using value_type = T;

    task() noexcept = default;
    explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    task& operator=(task&& o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    ~task() { reset(); }

    /// True when this object holds a coroutine (not moved-from or empty).
    explicit operator bool() const noexcept { return bool(h_); }

    auto operator co_await() && noexcept { return detail::task_awaiter<promise_type>{h_}; }
    auto operator co_await() & noexcept { return detail::task_awaiter<promise_type>{h_}; }

    /// Gives up ownership of the frame (used by go() and block_on()).
    std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, {}); }
    std::coroutine_handle<promise_type> handle() const noexcept { return h_; }

private:
    void reset() noexcept {
        if (h_) std::exchange(h_, {}).destroy();
    }
    std::coroutine_handle<promise_type> h_{};
};

namespace detail {
// ENTRY SITE. The compiler calls get_return_object from inside the new
// coroutine, so its default site argument names the coroutine itself: the
// frame's site until its first co_await replaces it. A task that runs without
// ever suspending (a CPU loop, a blocking call) therefore shows in a dump in
// its own function, not as "stack unavailable". The line is where the compiler
// places the call: the function's closing brace on g++, its declaration on
// clang++. A frame marked by note_self (LAMBDA CALLS) keeps its mark.
template <class T>
task<T> task_promise<T>::get_return_object(GORO_SITE_PARAM_DEF) noexcept {
    if (this->site_.line() == 0) this->site_ = GORO_SITE_ARG;
    return task<T>{std::coroutine_handle<task_promise<T>>::from_promise(*this)};
}
inline task<void> task_promise<void>::get_return_object(GORO_SITE_PARAM_DEF) noexcept {
    if (site_.line() == 0) site_ = GORO_SITE_ARG;
    return task<void>{std::coroutine_handle<task_promise<void>>::from_promise(*this)};
}

/// Whether X is a goro::task (spawn, once and when_* tell a task from a callable).
template <class X>
inline constexpr bool is_task_v = false;
template <class T>
inline constexpr bool is_task_v<task<T>> = true;
}  // namespace detail

}  // namespace goro

#if GORO_BODIES
namespace goro::detail {

GORO_DECL bool is_lambda_call_site(const site& s) noexcept {
    // The line and the function name, not the file name: that is spelled as
    // each translation unit found the header (-I paths differ between a
    // program and the runtime compiled once, or between two programs' TUs).
    static const site mark = lambda_call_site();
    return s.line() == mark.line() && s.line() != 0 && std::string_view(s.function_name()) == mark.function_name();
}

}  // namespace goro::detail
#endif  // GORO_BODIES
