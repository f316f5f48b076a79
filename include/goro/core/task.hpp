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
#include <type_traits>
#include <utility>
#include <variant>

#include <goro/core/frame.hpp>
#include <goro/core/registry.hpp>

namespace goro {

template <class T = void>
class task;

namespace detail {

template <class Promise>
struct final_awaiter {
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
    std::variant<std::monostate, T, std::exception_ptr> result_;

    task<T> get_return_object() noexcept;
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter<task_promise> final_suspend() const noexcept { return {}; }

    template <class U>
        requires std::convertible_to<U&&, T>
    void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
        result_.template emplace<1>(std::forward<U>(v));
    }
    void unhandled_exception() noexcept { result_.template emplace<2>(std::current_exception()); }

    std::exception_ptr take_exception() noexcept {
        if (result_.index() == 2) return std::move(std::get<2>(result_));
        return nullptr;
    }
    T take_result() {
        if (result_.index() == 2) std::rethrow_exception(std::move(std::get<2>(result_)));
        return std::move(std::get<1>(result_));
    }

    using promise_base::await_transform;
    template <class A>
    decltype(auto) await_transform(keep_site<A> k) noexcept { return forward_awaitable(static_cast<A&&>(k.awaitable)); }
};

template <>
struct task_promise<void> : promise_base {
    std::exception_ptr error_;

    task<void> get_return_object() noexcept;
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
    decltype(auto) await_transform(keep_site<A> k) noexcept { return forward_awaitable(static_cast<A&&>(k.awaitable)); }
};

/// Starts a child task: links it below the awaiting frame and hands it to the
/// trampoline. Works for any awaiting coroutine; frames chain only when the
/// awaiter is a goro frame too.
template <class Promise>
struct task_awaiter {
    std::coroutine_handle<Promise> child;

    bool await_ready() const noexcept { return !child || child.done(); }

    template <class P>
    void await_suspend(std::coroutine_handle<P> parent) noexcept {
        Promise& cp = child.promise();
        cp.continuation_ = parent;
        if constexpr (std::is_base_of_v<promise_base, P>) {
            promise_base& pp = parent.promise();
            cp.parent_ = &pp;
            cp.header_ = pp.header_;
        } else {
            cp.header_ = tls_current_task;
        }
        if (cp.header_) cp.header_->leaf = &cp;
        continue_with(child);
    }

    decltype(auto) await_resume() {
        if (!child) throw usage_error("goro::task: co_await on an empty (moved-from) task");
        return child.promise().take_result();
    }
};

}  // namespace detail

template <class T>
class [[nodiscard]] task {
public:
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
template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
    return task<T>{std::coroutine_handle<task_promise<T>>::from_promise(*this)};
}
inline task<void> task_promise<void>::get_return_object() noexcept {
    return task<void>{std::coroutine_handle<task_promise<void>>::from_promise(*this)};
}
}  // namespace detail

}  // namespace goro
