// goro/sync/when.hpp — run tasks concurrently and wait for all of them, or for the first.
//
//   auto [a, b] = co_await goro::when_all(fetch(x), fetch(y));        // std::tuple<A, B>
//
//   auto r = co_await goro::when_any(ctx,                              // std::variant<A, B>
//       [&](goro::context c) { return fetch(c, primary); },
//       [&](goro::context c) { return fetch(c, mirror); });
//   r.index();   // which one finished first
//
// Every task runs as a root task of its own on the pool (listed and dumped
// like go()'s, "created by goro::when_all"), concurrently; the awaiting task
// parks with wait reason "join". Neither returns before every task it
// started has ended: nothing is left running behind the caller.
//
//   when_all(tasks...)         waits for all; the result is a tuple (void gives
//                              std::monostate); if some failed, the exception of
//                              the first to fail (in time) is rethrown.
//   when_all(ctx, fns...)      each fn(goro::context) -> goro::task<R> gets a
//                              context derived from `ctx`; the first failure
//                              cancels it, so the others can stop early (like
//                              errgroup.WithContext).
//   when_any(ctx, fns...)      the first task to end (with a value or an
//                              exception) wins: the derived context is
//                              cancelled, the losers are awaited (they should
//                              watch the context: ctx.done() in a select, or
//                              ctx.err()), and the winner's value is returned as a
//                              std::variant whose index() is the winner's
//                              position, or its exception rethrown. The losers'
//                              results and exceptions are discarded.
//   when_any(tasks...)         the same, but the tasks were made without a
//                              context of when_any's: nothing can tell the
//                              losers to stop, so it returns once all have ended.
//                              Use the context form to cancel them.
//
// The derived context is cancelled when the call returns, as Go's `defer
// cancel()`. The callables are kept alive (in the awaiting frame) until
// every task has ended.
//
// THREADS: the children write their own slots of the group (value or
// exception) and then count down `remaining` (acq_rel); the last wakes the
// parent through a one_shot (goro/core/spawn.hpp). The first to win the CAS
// on `winner` cancels the context. The group lives in the awaiting frame,
// which cannot resume before the count reaches zero.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <exception>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include <goro/core/go.hpp>
#include <goro/core/spawn.hpp>
#include <goro/core/task.hpp>
#include <goro/sync/context.hpp>

namespace goro {

namespace detail {

inline constexpr std::size_t no_winner = static_cast<std::size_t>(-1);

template <class... Ts>
struct when_group {
    static constexpr std::size_t N = sizeof...(Ts);
    std::tuple<std::optional<result_slot_t<Ts>>...> values;
    std::array<std::exception_ptr, N> errors{};
    std::atomic<std::size_t> remaining{N};
    std::atomic<std::size_t> winner{no_winner};  // when_any: the first to end; when_all: the first to fail
    bool any = false;
    std::optional<cancel_func> cancel;
    one_shot done;

    /// Child `i` has written its slot. Returns a foreign coroutine to continue, if that is who waits.
    std::coroutine_handle<> child_ended(std::size_t i, bool failed) noexcept {
        if (any || failed) {
            std::size_t none = no_winner;
            if (winner.compare_exchange_strong(none, i, std::memory_order_acq_rel) && cancel) (*cancel)();
        }
        // The last one wakes the parent; after the decrement nothing here is touched.
        if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) return done.fire();
        return {};
    }
    /// A child that could not be started counts as ended.
    std::coroutine_handle<> not_started(std::size_t n) noexcept {
        if (remaining.fetch_sub(n, std::memory_order_acq_rel) == n) return done.fire();
        return {};
    }
};

template <std::size_t I, class T, class G>
runner group_child(task<T> t, G* g) {
    bool failed = false;
    try {
        if constexpr (std::is_void_v<T>) {
            co_await root_child<typename task<T>::promise_type>{t.handle()};
            std::get<I>(g->values).emplace();
        } else {
            std::get<I>(g->values).emplace(co_await root_child<typename task<T>::promise_type>{t.handle()});
        }
    } catch (...) {
        g->errors[I] = std::current_exception();
        failed = true;
    }
    std::coroutine_handle<> then = g->child_ended(I, failed);
    if (then) co_await set_then{then};
}

template <class... Ts>
void check_tasks(const char* op, const task<Ts>&... ts) {
    if ((... || !ts)) throw usage_error(std::string(op) + ": a task is empty (moved-from or default-constructed)");
    if ((... || ts.handle().done())) throw usage_error(std::string(op) + ": a task has already run (it was awaited)");
}

/// Starts every task as a root task; returns the first start's failure (the
/// rest then count as ended), after which the group must still be awaited.
template <class G, class... Ts, std::size_t... I>
std::exception_ptr start_group(G& g, std::index_sequence<I...>, task<Ts>&... ts) {
    std::exception_ptr err;
    std::size_t started = 0;
    auto one = [&]<std::size_t J, class T>(std::integral_constant<std::size_t, J>, task<T>& t) {
        if (err) return;
        try {
            start_runner(group_child<J, T, G>(std::move(t), &g), {}, site_here());
            ++started;
        } catch (...) {
            err = std::current_exception();
        }
    };
    (one(std::integral_constant<std::size_t, I>{}, ts), ...);
    if (started < G::N) {
        // No child left to wake a parent that has not waited yet: nobody to continue.
        std::coroutine_handle<> none = g.not_started(G::N - started);
        (void)none;
    }
    return err;
}

template <class V, class G, std::size_t... I>
V take_winner(G& g, std::size_t w, std::index_sequence<I...>) {
    std::optional<V> out;
    ((I == w ? (void)out.emplace(std::in_place_index<I>, std::move(*std::get<I>(g.values))) : void()), ...);
    return std::move(*out);
}

template <class G, std::size_t... I>
auto take_all(G& g, std::index_sequence<I...>) {
    return std::tuple<typename std::tuple_element_t<I, decltype(g.values)>::value_type...>(
        std::move(*std::get<I>(g.values))...);
}

template <class F>
using fn_task_t = std::invoke_result_t<F&, context>;

template <class... Fs>
concept context_task_fns =
    (sizeof...(Fs) > 0) && (... && (std::is_invocable_v<Fs&, context> && is_task_v<std::invoke_result_t<Fs&, context>>));

}  // namespace detail

/// Runs the tasks concurrently on the pool and returns all their results.
template <class... Ts>
[[nodiscard("goro::when_all: co_await it")]] task<std::tuple<detail::result_slot_t<Ts>...>> when_all(task<Ts>... ts) {
    detail::check_tasks("goro::when_all", ts...);
    detail::when_group<Ts...> g;
    std::exception_ptr err = detail::start_group(g, std::index_sequence_for<Ts...>{}, ts...);
    co_await detail::one_shot_awaiter{&g.done};
    if (err) std::rethrow_exception(err);
    if (std::size_t w = g.winner.load(std::memory_order_acquire); w != detail::no_winner)
        std::rethrow_exception(g.errors[w]);
    co_return detail::take_all(g, std::index_sequence_for<Ts...>{});
}

/// As when_all(tasks...), each task made by `fn(ctx2)` with ctx2 derived from
/// `parent`; the first failure cancels ctx2.
template <class... Fs>
    requires detail::context_task_fns<Fs...>
[[nodiscard("goro::when_all: co_await it")]] task<
    std::tuple<detail::result_slot_t<typename detail::fn_task_t<Fs>::value_type>...>>
when_all(context parent, Fs... fns) {
    auto [ctx, cancel] = with_cancel(parent);
    detail::when_group<typename detail::fn_task_t<Fs>::value_type...> g;
    g.cancel.emplace(cancel);
    std::exception_ptr err;
    {
        std::tuple<detail::fn_task_t<Fs>...> ts{};
        try {
            ts = std::tuple<detail::fn_task_t<Fs>...>{fns(ctx)...};
            std::apply([](auto&... t) { detail::check_tasks("goro::when_all", t...); }, ts);
        } catch (...) {
            cancel();
            throw;
        }
        err = std::apply([&](auto&... t) { return detail::start_group(g, std::index_sequence_for<Fs...>{}, t...); }, ts);
    }
    co_await detail::one_shot_awaiter{&g.done};
    cancel();
    if (err) std::rethrow_exception(err);
    if (std::size_t w = g.winner.load(std::memory_order_acquire); w != detail::no_winner)
        std::rethrow_exception(g.errors[w]);
    co_return detail::take_all(g, std::index_sequence_for<Fs...>{});
}

/// Runs the tasks concurrently; returns the result of the first to end (the
/// variant's index says which) once all have ended.
template <class... Ts>
[[nodiscard("goro::when_any: co_await it")]] task<std::variant<detail::result_slot_t<Ts>...>> when_any(
    task<Ts>... ts) {
    static_assert(sizeof...(Ts) > 0, "goro::when_any: needs at least one task");
    detail::check_tasks("goro::when_any", ts...);
    detail::when_group<Ts...> g;
    g.any = true;
    std::exception_ptr err = detail::start_group(g, std::index_sequence_for<Ts...>{}, ts...);
    co_await detail::one_shot_awaiter{&g.done};
    if (err) std::rethrow_exception(err);
    const std::size_t w = g.winner.load(std::memory_order_acquire);
    if (g.errors[w]) std::rethrow_exception(g.errors[w]);
    co_return detail::take_winner<std::variant<detail::result_slot_t<Ts>...>>(g, w, std::index_sequence_for<Ts...>{});
}

/// Runs `fn(ctx2)...` concurrently, ctx2 derived from `parent`; the first to
/// end wins, ctx2 is cancelled, the losers are awaited, and the winner's
/// result is returned (the variant's index says which) or its exception rethrown.
template <class... Fs>
    requires detail::context_task_fns<Fs...>
[[nodiscard("goro::when_any: co_await it")]] task<
    std::variant<detail::result_slot_t<typename detail::fn_task_t<Fs>::value_type>...>>
when_any(context parent, Fs... fns) {
    using V = std::variant<detail::result_slot_t<typename detail::fn_task_t<Fs>::value_type>...>;
    auto [ctx, cancel] = with_cancel(parent);
    detail::when_group<typename detail::fn_task_t<Fs>::value_type...> g;
    g.any = true;
    g.cancel.emplace(cancel);
    std::exception_ptr err;
    {
        std::tuple<detail::fn_task_t<Fs>...> ts{};
        try {
            ts = std::tuple<detail::fn_task_t<Fs>...>{fns(ctx)...};
            std::apply([](auto&... t) { detail::check_tasks("goro::when_any", t...); }, ts);
        } catch (...) {
            cancel();
            throw;
        }
        err = std::apply([&](auto&... t) { return detail::start_group(g, std::index_sequence_for<Fs...>{}, t...); }, ts);
    }
    co_await detail::one_shot_awaiter{&g.done};
    cancel();
    if (err) std::rethrow_exception(err);
    const std::size_t w = g.winner.load(std::memory_order_acquire);
    if (g.errors[w]) std::rethrow_exception(g.errors[w]);
    co_return detail::take_winner<V>(g, w, std::index_sequence_for<Fs...>{});
}

}  // namespace goro
