// goro/core/foreign.hpp — awaiting another library's awaitables inside a goro task.
//
//   goro::task<> handler() {
//       auto row = co_await db.query("...");   // resumes us on the library's own thread
//       co_await goro::sleep_for(10ms);        // still a goro task, back on the pool
//   }
//
// THE RULE: inside a goro task, `co_await x` on an awaitable that is not
// goro's (no member `using is_goro_awaiter = void;` on it or on the awaiter
// its operator co_await returns) parks the task with wait reason "external"
// and hands the awaitable a *relay* handle instead of the task's frame. When
// the awaitable resumes the relay — once, on any thread, even synchronously
// inside its await_suspend — the relay makes the task runnable on the pool
// (`ready`), so the rest of the task always runs on a goro worker. While it
// waits the task is listed, dumped as `[external]` with its stack, and never
// counted as part of a deadlock (the detector treats a pending foreign wait
// like an `external_wakeup_guard`: it cannot know when the world will
// answer). An awaitable that is ready (`await_ready` true) costs one forwarded
// call; one that suspends costs a small heap-allocated relay frame.
//
// await_suspend returning void, bool or a handle is honoured: false, or the
// relay handed back, continues the task at once; another handle runs there
// (off the task: goro::this_task_id() reads 0 in it) while the task stays
// parked; an exception from await_suspend is rethrown in the task, which is
// no longer parked. A relay resumed before await_suspend returned also
// continues the task inline, without a trip through the run queue.
//
// The awaitable must resume the handle it was given exactly once. Destroying
// it instead (some libraries do on cancellation) leaves the task parked for
// ever, shown as `[external]`.
//
// Goro's own awaiters park the task themselves, so each carries the tag;
// an awaiter written against goro's parking protocol (park/ready) without
// the tag would be wrapped, and parked twice: put the tag on it.
//
// THREADS: the relay's `phase` decides who continues the task. The task's
// worker sets 0 → 1 after await_suspend returned (it will not touch the
// frame again); the relay sets any → 2 when resumed. Whoever comes second
// acts: the relay seeing 1 frees itself and calls ready(); the worker seeing 2
// frees the relay and continues the task itself.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>

#include <goro/core/frame.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>

namespace goro {
namespace detail {

/// Foreign waits in progress: while it is not zero the deadlock detector
/// stays quiet (goro/inspect/deadlock.hpp).
inline std::atomic<std::int64_t>& external_waits() noexcept {
    static std::atomic<std::int64_t> n{0};
    return n;
}

/// The handle a foreign awaitable is given (see THREADS above).
struct relay {
    struct promise_type {
        std::atomic<std::uint32_t> phase{0};  // 0: await_suspend runs, 1: it returned, 2: resumed
        task_header* task = nullptr;

        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<promise_type> h) const noexcept;
            void await_resume() const noexcept {}
        };

        relay get_return_object() noexcept { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> h;
};

// A template only so that g++ compiles the coroutine where it is used (see
// reap_abandoned in goro/inspect/deadlock.hpp).
template <int = 0>
relay make_relay() {
    co_return;
}

template <class A>
struct foreign_awaiter {
    using inner_ref = decltype(get_awaiter(std::declval<A>()));
    static constexpr bool by_ref = std::is_reference_v<inner_ref>;
    using inner_t = std::remove_reference_t<inner_ref>;
    using stored_t = std::conditional_t<by_ref, inner_t*, inner_t>;
    using suspend_t = decltype(std::declval<inner_t&>().await_suspend(std::declval<std::coroutine_handle<>>()));
    static constexpr bool returns_handle = !std::is_void_v<suspend_t> && !std::is_same_v<suspend_t, bool>;
    using result_t = std::conditional_t<returns_handle, std::coroutine_handle<>, bool>;

    promise_base* frame;
    stored_t inner;
    bool parked = false;

    foreign_awaiter(promise_base& p, A&& a) : frame(&p), inner(make(static_cast<A&&>(a))) {}
    foreign_awaiter(const foreign_awaiter&) = delete;
    foreign_awaiter& operator=(const foreign_awaiter&) = delete;

    static stored_t make(A&& a) {
        if constexpr (by_ref) {
            auto&& r = get_awaiter(static_cast<A&&>(a));
            return std::addressof(r);
        } else {
            return get_awaiter(static_cast<A&&>(a));
        }
    }
    inner_t& in() noexcept {
        if constexpr (by_ref) return *inner;
        else return inner;
    }

    bool await_ready() { return in().await_ready(); }

    result_t await_suspend(std::coroutine_handle<> h) {
        task_header* t = frame->header_;
        if (!t || tls_current_task != t) [[unlikely]] return pass_through(h);  // not on the pool: as it is
        relay r = make_relay();
        r.h.promise().task = t;
        park(t, h, wait_reason::external);
        external_waits().fetch_add(1, std::memory_order_relaxed);
        parked = true;
        if constexpr (std::is_void_v<suspend_t>) {
            call_inner(r, t);
            return settle(r, t, h);
        } else if constexpr (std::is_same_v<suspend_t, bool>) {
            if (!call_inner(r, t)) {  // not suspended: the relay will never be resumed
                r.h.destroy();
                unpark(t);
                return false;
            }
            return settle(r, t, h);
        } else {
            std::coroutine_handle<> o = call_inner(r, t);
            if (o == r.h) {  // "resume the awaiting coroutine now"
                r.h.destroy();
                unpark(t);
                return h;
            }
            if (r.h.promise().phase.exchange(1, std::memory_order_acq_rel) == 2) {
                // Resumed already: the task runs on from the queue; `o` runs here.
                r.h.destroy();
                ready(t);
            }
            // `o` is not part of the task: it runs with no current task.
            tls_current_task = nullptr;
            return o;
        }
    }

    decltype(auto) await_resume() {
        if (parked) external_waits().fetch_sub(1, std::memory_order_relaxed);
        return in().await_resume();
    }

private:
    result_t pass_through(std::coroutine_handle<> h) {
        if constexpr (std::is_void_v<suspend_t>) {
            in().await_suspend(h);
            return true;
        } else {
            return in().await_suspend(h);
        }
    }

    void unpark(task_header* t) noexcept {
        t->state.store(task_state::running, std::memory_order_relaxed);
        external_waits().fetch_sub(1, std::memory_order_relaxed);
        parked = false;
    }

    decltype(auto) call_inner(relay& r, task_header* t) {
        try {
            return in().await_suspend(std::coroutine_handle<>(r.h));
        } catch (...) {
            // The awaitable did not suspend: by contract it keeps no handle.
            r.h.destroy();
            unpark(t);
            throw;
        }
    }

    /// After an await_suspend that suspended: park, or continue at once if
    /// the relay already ran. Touches nothing of the frame once parked.
    result_t settle(relay& r, task_header* t, std::coroutine_handle<> h) {
        (void)h;
        std::coroutine_handle<relay::promise_type> rh = r.h;
        if (rh.promise().phase.exchange(1, std::memory_order_acq_rel) != 2) {
            if constexpr (returns_handle) return std::noop_coroutine();
            else return true;
        }
        rh.destroy();
        unpark(t);
        if constexpr (returns_handle) return h;
        else return false;
    }
};

}  // namespace detail
}  // namespace goro

#if GORO_BODIES
namespace goro::detail {

GORO_DECL void relay::promise_type::final_awaiter::await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
    promise_type& p = h.promise();
    task_header* t = p.task;
    if (p.phase.exchange(2, std::memory_order_acq_rel) == 1) {
        h.destroy();
        ready(t);  // the task may run (and end) from here on
    }
    // Else the worker is still in await_suspend: it frees us and continues the task.
}

}  // namespace goro::detail
#endif  // GORO_BODIES
