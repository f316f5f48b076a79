// goro/core/frame.hpp — the logical stack of a task: coroutine frames chained to a root.
//
//   registry ──► task_header ──leaf──► promise_base (innermost frame, parked here)
//                  ▲                        │ parent
//                  │ header                 ▼
//                  │                    promise_base (its caller)
//                  │                        │ parent
//                  └──────────────────  promise_base (the root task, started by go())
//
// Every goro coroutine frame's promise derives from `promise_base`. When a frame
// `co_await`s another task, the child's `parent` is set to the awaiting frame and
// the root's `leaf` to the child; when the child finishes, `leaf` goes back to the
// parent. Each frame records the site of its current suspension in
// `await_transform` (one store on g++). While a task is parked, every frame from
// the leaf to the root is a coroutine suspended at a recorded site, so the chain
// is the task's whole stack. Only the thread running the task writes the chain;
// a snapshot reads it with the world stopped.
//
// FOREIGN AWAITABLES. An awaitable that is not goro's (it carries no member
// `using is_goro_awaiter = void;`, nor does the awaiter its operator co_await
// returns) is wrapped by `await_transform` in a `foreign_awaiter`
// (goro/core/foreign.hpp): the task parks with wait reason "external" and the
// awaitable is handed a small relay handle instead of the frame's, so that a
// resumption on any thread makes the task runnable on the pool rather than
// running it there. Every goro awaiter carries the tag; one that parks the
// task itself (park/ready) and lacks it would be parked twice.
//
// Resumption goes through a per-thread trampoline (`run_trampoline`): a task
// awaiting a child hands the child to the trampoline instead of resuming it on
// its own stack, and a finishing child hands back its parent. g++ at -O0 and
// under the sanitizers does not turn symmetric transfer into a tail call, so a
// chain of a million awaits would overflow the stack; the trampoline keeps the
// native stack flat on every compiler and at every optimisation level.
//
// No test file of its own: the chain is what test_stack.cpp and test_dump.cpp
// read back (every frame, its site, a million-deep await), the trampoline what
// test_task.cpp runs, and the foreign wrapper test_foreign.cpp's subject.
#pragma once

#include <coroutine>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/pool.hpp>

namespace goro {

struct task_header;

namespace detail {

/// A plain awaiter: the type that `co_await` uses as it is (no operator co_await).
template <class A>
concept direct_awaiter = requires(A& a) {
    a.await_ready();
    a.await_resume();
};

/// Stands in for an awaiter that lives elsewhere in the frame (the temporary
/// of the co_await expression, or a named object), forwarding to it.
///
/// Why: when `await_transform` hands back a reference to the awaiter, g++ 12
/// gives the frame a second copy of it; the awaiter of a channel operation is
/// 64 bytes, so every suspended task paid that twice. One pointer costs 8.
/// (clang allocates the same frame either way.)
template <class A>
struct await_ref {
    A* a;
    bool await_ready() noexcept(noexcept(a->await_ready())) { return a->await_ready(); }
    template <class H>
    decltype(auto) await_suspend(H h) noexcept(noexcept(a->await_suspend(h))) { return a->await_suspend(h); }
    decltype(auto) await_resume() noexcept(noexcept(a->await_resume())) { return a->await_resume(); }
};

/// The awaitable an await_transform returns: a pointer to a plain awaiter;
/// anything else (a type with operator co_await) as it came.
template <class A>
decltype(auto) forward_awaitable(A&& a) noexcept {
    if constexpr (direct_awaiter<std::remove_reference_t<A>>)
        return await_ref<std::remove_reference_t<A>>{&a};
    else
        return static_cast<A&&>(a);
}

/// What `co_await a` awaits: `a.operator co_await()`, `operator co_await(a)`, or `a`.
template <class A>
decltype(auto) get_awaiter(A&& a) {
    if constexpr (requires { static_cast<A&&>(a).operator co_await(); })
        return static_cast<A&&>(a).operator co_await();
    else if constexpr (requires { operator co_await(static_cast<A&&>(a)); })
        return operator co_await(static_cast<A&&>(a));
    else
        return static_cast<A&&>(a);
}

template <class A>
concept tagged_goro_awaiter = requires { typename std::remove_cvref_t<A>::is_goro_awaiter; };

/// True for goro's own awaitables: the type, or the awaiter it yields, has
/// the member `using is_goro_awaiter = void;`.
template <class A>
inline constexpr bool is_goro_awaitable_v = [] {
    if constexpr (tagged_goro_awaiter<A>) return true;
    else if constexpr (requires { get_awaiter(std::declval<A>()); })
        return tagged_goro_awaiter<decltype(get_awaiter(std::declval<A>()))>;
    else return false;
}();

struct promise_base;

/// Wraps a foreign awaitable (see FOREIGN AWAITABLES above; defined in goro/core/foreign.hpp).
template <class A>
struct foreign_awaiter;

/// What an await_transform of a goro frame returns for `a`: goro's own
/// awaitables as they are (see forward_awaitable), others wrapped.
template <class A>
decltype(auto) transform_awaitable(promise_base& p, A&& a) noexcept(is_goro_awaitable_v<A>) {
    if constexpr (is_goro_awaitable_v<A>)
        return forward_awaitable(static_cast<A&&>(a));
    else
        return foreign_awaiter<A>(p, static_cast<A&&>(a));
}

struct promise_base {
    std::coroutine_handle<> continuation_{};  // frame to resume when this one finishes
    promise_base* parent_ = nullptr;          // that frame's promise (null for a root)
    task_header* header_ = nullptr;           // the root task this frame runs in
    site site_{};                             // where this frame is suspended now; before its
                                              // first suspension, its own function (ENTRY SITE, task.hpp)

    // Frames come from goro's pool: a task is usually freed by another thread
    // than the one that spawned it (see goro/core/pool.hpp).
    static void* operator new(std::size_t size) { return pool_allocate(size); }
    static void operator delete(void* p, std::size_t size) noexcept { pool_free(p, size); }

    /// Records the site of every `co_await` in a goro coroutine, then forwards
    /// the awaitable (see await_ref for how), or wraps a foreign one.
    template <class A>
    decltype(auto) await_transform(A&& a, GORO_SITE_PARAM) noexcept(is_goro_awaitable_v<A>) {
        site_ = GORO_SITE_ARG;
        return transform_awaitable(*this, static_cast<A&&>(a));
    }
};

/// Wraps an awaitable whose `co_await` must not overwrite the frame's site
/// (goro's own frames carry their caller's site instead of their own).
template <class A>
struct keep_site {
    A&& awaitable;
};

struct trampoline {
    std::coroutine_handle<> next{};
    bool active = false;
};

inline thread_local constinit trampoline tls_trampoline{};

/// Resumes `h`, then whatever it hands to the trampoline, until nothing is left.
GORO_DECL void run_trampoline(std::coroutine_handle<> h);

/// Continues `h` next on this thread: through the trampoline when one runs
/// (the usual case, on a pool worker), else right here.
inline void continue_with(std::coroutine_handle<> h) {
    trampoline& t = tls_trampoline;
    if (t.active) t.next = h;
    else run_trampoline(h);
}

/// The task whose frames this thread is running now (null off the pool).
inline thread_local constinit task_header* tls_current_task = nullptr;

}  // namespace detail
}  // namespace goro

#if GORO_BODIES
namespace goro::detail {

GORO_DECL void run_trampoline(std::coroutine_handle<> h) {
    trampoline& t = tls_trampoline;
    const bool outer = !t.active;
    std::coroutine_handle<> saved = t.next;
    t.active = true;
    do {
        t.next = {};
        h.resume();
        h = t.next;
    } while (h);
    t.next = saved;
    if (outer) t.active = false;
}

}  // namespace goro::detail
#endif  // GORO_BODIES
