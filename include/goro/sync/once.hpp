// goro/sync/once.hpp — `goro::once`, `goro::once_func`, `goro::once_value`:
// Go's sync.Once, sync.OnceFunc and sync.OnceValue for goro tasks.
//
//   goro::once init;
//   co_await init.call([&] { table = load(); });          // f runs once, ever
//   co_await init.call([&]() -> goro::task<> { co_await connect(); });  // f may be a task
//
//   auto cfg = goro::once_value([] { return read_config(); });   // shareable handle
//   const config c = co_await cfg();                           // every call: the one value
//   auto warn = goro::once_func([] { log("deprecated"); });
//   co_await warn();
//
// SEMANTICS (Go's, to the letter):
//   * once::call(f) (Once.Do): the first call runs f, in the calling task.
//     Every other call, concurrent or later, returns only after that first
//     call has returned: a task that arrives while f runs parks (Go's
//     waiters block in the Once's mutex: the wait reason is `sync.Mutex.Lock`,
//     as in Go's dumps) until f is done.
//   * If f throws, the exception leaves the first call, and the Once counts as
//     done: later calls do not call f again and return normally (Go: "if f
//     panics, Do considers it to have returned").
//   * once_func(f) (Go 1.21's OnceFunc) and once_value(f) (OnceValue): a
//     copyable handle whose calls share one Once. If f throws, EVERY call
//     rethrows that same exception (Go re-panics with the same value);
//     once_value's calls all return (a copy of) the one value f returned.
//   * f may return void (once_value: a T) or a goro::task<> (task<T>), which
//     is awaited: an asynchronous initialisation runs once, and its latecomers
//     wait for it.
//
// COST: after the first call, `co_await o.call(f)` is one acquire load (the
// awaiter is ready at once; no frame is made). A task-returning f makes
// call() a coroutine, and once_func / once_value calls are coroutines.
//
// INVARIANTS (under `lock_`): state_ goes idle -> running -> done, once each
// way; waiters are linked only while running; done is stored, and the list
// taken, in one critical section.
//
// DESTRUCTION while the first call runs is a bug: tasks parked on it are woken
// with goro::once_destroyed thrown from their call.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/task.hpp>
#include <goro/core/waiter_list.hpp>

namespace goro {

/// A `goro::once` was destroyed while tasks waited for its first call; thrown from their call().
class once_destroyed : public error {
public:
    using error::error;
};

namespace detail {
template <class T>
struct task_value {};
template <class T>
struct task_value<task<T>> {
    using type = T;
};
}  // namespace detail

class once {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        bool destroyed = false;
    };
    static constexpr std::uint32_t idle = 0, running = 1, finished = 2;

public:
    /// Parks until the first call has returned (await_ready: it already has).
    class wait_operation {
    public:
        using is_goro_awaiter = void;
        explicit wait_operation(once& o) noexcept : o_(&o) {}
        bool await_ready() const noexcept { return o_->done(); }
        bool await_suspend(std::coroutine_handle<> h) { return o_->enqueue(node_, h); }
        void await_resume() const;

    protected:
        once* o_;
        waiter_node node_{};
    };

    /// Awaiter of call(f) for an f that returns void: the first caller runs f
    /// inside await_ready (so the fast path never suspends).
    template <class F>
    class call_operation : public wait_operation {
    public:
        call_operation(once& o, F f) : wait_operation(o), f_(std::move(f)) {}
        bool await_ready() {
            if (o_->done()) return true;
            if (!o_->begin()) return false;  // another task runs f: wait for it
            finisher fin{o_};
            f_();  // an exception leaves the co_await; the once is done all the same
            return true;
        }

    private:
        F f_;
    };

    once() noexcept = default;
    once(const once&) = delete;
    once& operator=(const once&) = delete;
    ~once();

    /// `co_await o.call(f)` (Go's Once.Do): runs f if no call has yet; else
    /// waits until the first call has returned. f returns void or goro::task<>.
    template <class F>
    [[nodiscard("goro::once::call: co_await it")]] auto call(F&& f) {
        using fn = std::decay_t<F>;
        using result = std::invoke_result_t<fn&>;
        if constexpr (std::is_void_v<result>) {
            return call_operation<fn>(*this, std::forward<F>(f));
        } else {
            static_assert(std::is_same_v<result, task<>>,
                          "goro::once::call: f must return void or goro::task<>");
            return call_async<fn>(this, fn(std::forward<F>(f)));
        }
    }

    /// True once a first call has returned (normally or by an exception).
    bool done() const noexcept { return state_.load(std::memory_order_acquire) == finished; }

private:
    struct finisher {
        once* o;
        ~finisher() { o->finish(); }
    };

    /// Claims the first call; false when another task has it (or it is done).
    bool begin() noexcept {
        std::uint32_t s = idle;
        return state_.compare_exchange_strong(s, running, std::memory_order_acquire, std::memory_order_acquire);
    }

    void finish() noexcept;

    bool enqueue(waiter_node& n, std::coroutine_handle<> h);

    // A template only so that a program compiles it where it uses it (see errgroup.hpp).
    template <class F>
    static task<> call_async(once* o, F f) {
        if (o->done()) co_return;
        if (!o->begin()) {
            co_await wait_operation(*o);
            co_return;
        }
        finisher fin{o};
        co_await f();
    }

    std::atomic<std::uint32_t> state_{idle};
    detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    detail::waiter_list<waiter_node> waiters_;  // under lock_, only while running
};

namespace detail {

/// once_func / once_value: f's outcome, shared by every copy of the handle.
template <class F, class T>
struct once_state {
    explicit once_state(F fn) : f(std::move(fn)) {}
    goro::once o;
    F f;
    std::conditional_t<std::is_void_v<T>, bool, std::optional<T>> value{};
    std::exception_ptr error;  // written by the first call, read after o is done
};

template <class F, class T>
struct once_runner {
    once_state<F, T>* s;
    void operator()() const {
        try {
            if constexpr (std::is_void_v<T>) s->f();
            else s->value.emplace(s->f());
        } catch (...) {
            s->error = std::current_exception();
        }
    }
};

template <class F, class T>
struct once_async_runner {
    once_state<F, T>* s;
    task<> operator()() const { return run(s); }
    static task<> run(once_state<F, T>* st) {
        try {
            if constexpr (std::is_void_v<T>) co_await st->f();
            else st->value.emplace(co_await st->f());
        } catch (...) {
            st->error = std::current_exception();
        }
    }
};

template <class F, class T, bool Async>
task<T> once_call(std::shared_ptr<once_state<F, T>> s) {
    if constexpr (Async) co_await s->o.call(once_async_runner<F, T>{s.get()});
    else co_await s->o.call(once_runner<F, T>{s.get()});
    if (s->error) std::rethrow_exception(s->error);
    if constexpr (!std::is_void_v<T>) co_return *s->value;
}

template <class F>
using once_result_t = std::invoke_result_t<F&>;

template <class F>
using once_value_t = typename std::conditional_t<is_task_v<once_result_t<F>>, task_value<once_result_t<F>>,
                                                 std::type_identity<once_result_t<F>>>::type;

}  // namespace detail

/// The handle once_func(f) and once_value(f) return: copies share one call of f.
/// `co_await h()` returns f's value (T = void for once_func) or rethrows f's exception.
template <class F, class T>
class once_function {
    static constexpr bool async = detail::is_task_v<detail::once_result_t<F>>;

public:
    explicit once_function(F f) : s_(std::make_shared<detail::once_state<F, T>>(std::move(f))) {}

    [[nodiscard("goro::once_function: co_await the call")]] task<T> operator()() const {
        return detail::once_call<F, T, async>(s_);
    }

    /// True once f has been called and has returned (or thrown).
    bool done() const noexcept { return s_->o.done(); }

private:
    std::shared_ptr<detail::once_state<F, T>> s_;
};

/// Go 1.21's sync.OnceFunc: a handle whose first call runs `f` (void or task<>);
/// every call rethrows the exception f threw, if it threw.
template <class F>
auto once_func(F&& f) {
    using fn = std::decay_t<F>;
    static_assert(std::is_void_v<detail::once_value_t<fn>>,
                  "goro::once_func: f must return void or goro::task<> (once_value keeps a value)");
    return once_function<fn, void>(std::forward<F>(f));
}

/// Go 1.21's sync.OnceValue: a handle whose first call runs `f` (returning T
/// or task<T>); every call returns a copy of that T, or rethrows f's exception.
template <class F>
auto once_value(F&& f) {
    using fn = std::decay_t<F>;
    using T = detail::once_value_t<fn>;
    static_assert(!std::is_void_v<T>, "goro::once_value: f must return a value (once_func runs a void f)");
    return once_function<fn, T>(std::forward<F>(f));
}

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL void once::wait_operation::await_resume() const {
    if (node_.destroyed)
        throw once_destroyed("goro::once::call: the once was destroyed while this task waited for its first call");
}

GORO_DECL once::~once() {
    detail::wake_destroyed(waiters_, lock_, [](waiter_node& w, std::size_t) noexcept { w.destroyed = true; });
}

GORO_DECL void once::finish() noexcept {
    detail::waiter_list<waiter_node> wake;
    {
        std::lock_guard g(lock_);
        state_.store(finished, std::memory_order_release);
        wake = std::move(waiters_);
    }
    wake.wake_all();
}

GORO_DECL bool once::enqueue(waiter_node& n, std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::once::call");
    n.task = t;
    detail::park(t, h, wait_reason::mutex_lock);  // Go's waiters block in Once.m.Lock()
    std::lock_guard g(lock_);
    if (state_.load(std::memory_order_acquire) == finished) {
        t->state.store(task_state::running, std::memory_order_relaxed);
        return false;
    }
    waiters_.push_back(n);
    return true;
}

}  // namespace goro
#endif  // GORO_BODIES
