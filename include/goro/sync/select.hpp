// goro/sync/select.hpp — `goro::select`: wait on several channel operations at once.
//
//   auto r = co_await goro::select(goro::recv(jobs),          // case 0
//                                  goro::send(out, v),        // case 1
//                                  ctx.done(),                // case 2
//                                  goro::after(100ms));       // case 3
//   switch (r.index()) {
//   case 0: if (auto& job = r.get<0>()) use(*job); else /* jobs closed */; break;
//   ...
//   }
//   auto r = goro::try_select(goro::recv(jobs));   // Go's `default:`: never blocks;
//   if (r.index() == goro::select_default) ...     // nothing was ready
//
// Semantics are Go's: a case on a nil channel never fires; the same channel may
// appear in several cases (also a send and a receive on one channel); among
// the ready cases one is chosen uniformly at random; a select with no cases
// parks forever (wait reason `select (no cases)`); a chosen send on a closed
// channel throws goro::channel_closed. A send case that is not chosen keeps
// its value (it is neither delivered nor duplicated).
//
// ALGORITHM (after Go's runtime/select.go, with channel.hpp's lock-free paths first)
//   0. Draw a random poll order (a fresh permutation each time). Try the cases
//      in that order WITHOUT locks, each with its channel's lock-free path
//      (a buffered ring's send or receive, a closed channel, a timer that has
//      passed): the first that proceeds wins. A case the lock-free path cannot
//      judge (waiters parked, a position in flight, an unbuffered channel with
//      a waiter) ends this pass; the locked poll below then uses the same
//      order, so every ready case keeps the same chance (fairness). Only a
//      one-case try_select takes "nothing ready" from this pass: with several
//      cases the answers come from different moments. A blocking select
//      first tries, with no random draw, the order that puts the cases that
//      only look (nil, unbuffered, timer) first, when they are not ready and
//      one case at most is left (select_op::poll_fast_plain: recv-or-done).
//   1. Lock every distinct channel once, in increasing address order (the
//      lock order shared with every other select, so two selects never deadlock).
//   2. Poll the cases in the same order under the locks; the first that can
//      proceed does. None: announce the coming waiters to each buffered
//      case's channel (channel.hpp's PARKING HANDSHAKE: lock-free operations
//      from now on take the lock) and poll once more, to catch an operation
//      that went through lock-free before the announcement.
//   3. Still none: enqueue one waiter per channel case (in this frame: no allocation),
//      all sharing one select_core, and arm a timer_node for the earliest
//      `after` case; then unlock (channels in reverse order, so the lowest
//      address is released last; each clears the wait flags of its emptied
//      queues first). The first waker to flip the core's
//      `claimed` flag (a channel waker under its channel's lock, or the timer
//      thread) owns the wake-up; the others skip our waiters.
//   4. Woken: lock the other cases' channels again and unlink our remaining
//      waiters (the winner's was unlinked by its waker); if
//      the timer lost, cancel it, or wait for its callback's `fired_done`
//      (timer.hpp's CONTRACT) before the frame may go.
//
// THREAD SAFETY: the select's waiters and result slots are written by a waker
// under the channel's lock and read by the select after it is readied. While
// parked, the task is resumed at most once: only the claimer readies it. After
// the unlock that publishes the waiters, await_suspend reads only locals: a
// waker (or the timer) may already be resuming the task on another worker,
// which then waits for our remaining channel locks before it touches anything.
//
// LIFETIME: a channel case holds a handle to its channel (a reference: one
// atomic increment when the case is made, one decrement when the select is
// done), so a select parked on a channel whose every other handle is dropped
// meanwhile still finds it alive when it wakes (through another case) and
// unlinks its waiter. A context's done() case holds the context the same way.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include <goro/sync/channel.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/timer.hpp>

namespace goro {

/// select_result::index() of a try_select that found nothing ready (Go's `default:`).
inline constexpr int select_default = -1;

/// A receive case: `goro::recv(ch)`. Also awaitable on its own:
/// `co_await goro::recv(ch)` is `co_await ch.recv()`. `keep` is what keeps
/// `ch` alive while the case exists: a handle to the channel itself, or (for
/// a context's done()) to the context that owns it.
template <class T, class Keep = channel<T>>
struct [[nodiscard("goro::recv: co_await it or pass it to goro::select")]] recv_case {
    using is_goro_awaiter = void;
    detail::chan_state<T>* ch = nullptr;
    Keep keep{};
    detail::recv_op<T> operator co_await() const noexcept { return detail::recv_op<T>{ch}; }
};

/// A send case: `goro::send(ch, v)` holds the value until the select chooses
/// it; `keep` is what keeps the channel alive, as for recv_case. Also
/// awaitable on its own: `co_await goro::send(ch, v)` is `co_await ch.send(v)`.
template <class T, class Keep = channel<T>>
struct [[nodiscard("goro::send: co_await it or pass it to goro::select")]] send_case {
    using is_goro_awaiter = void;
    detail::chan_state<T>* ch = nullptr;
    T value;
    Keep keep{};
    detail::send_op<T> operator co_await() && noexcept { return {ch, std::move(value)}; }
};

/// A timeout case: fires once `when_ns` (monotonic) has passed (Go's `<-time.After(d)`).
struct [[nodiscard("goro::after: pass it to goro::select")]] after_case {
    std::int64_t when_ns = 0;
};

namespace detail {
/// What a case made from a channel variable keeps: the variable's address,
/// and no count (see recv).
template <class H>
struct borrowed {
    const H* handle = nullptr;
};
}  // namespace detail

/// A receive case (and a send case, below) on a channel variable borrows it,
/// as a std::string_view borrows a string: the variable must be alive when the select starts,
/// which it is when the case is written inside the select
/// (`co_await goro::select(goro::recv(ch), ...)`, the usual way). A select
/// that parks takes a count on the channel then, so a parked select keeps its
/// channels alive whatever happens to the variables meanwhile; a select that
/// finds a case ready, the common case in a busy loop, takes and drops none
/// (two locked instructions on the channel's line saved per select). A
/// select_case (select_dynamic.hpp), which is kept in containers, takes its
/// own handle from it.
template <class T>
recv_case<T, detail::borrowed<channel<T>>> recv(const channel<T>& ch) noexcept {
    return {ch.state(), {&ch}};
}

/// A receive case on a temporary channel keeps the channel alive.
template <class T>
recv_case<T> recv(channel<T>&& ch) noexcept {
    detail::chan_state<T>* s = ch.state();
    return {s, std::move(ch)};
}

/// A send case on a channel variable borrows it (see recv).
template <class T, class U>
    requires std::is_constructible_v<T, U&&>
send_case<T, detail::borrowed<channel<T>>> send(const channel<T>& ch, U&& v) {
    return {ch.state(), T(std::forward<U>(v)), {&ch}};
}

/// A send case on a temporary channel keeps the channel alive.
template <class T, class U>
    requires std::is_constructible_v<T, U&&>
send_case<T> send(channel<T>&& ch, U&& v) {
    detail::chan_state<T>* s = ch.state();
    return {s, T(std::forward<U>(v)), std::move(ch)};
}

/// `goro::send(ch, std::in_place, a, b)`: a send case of a T made from `a, b`
/// inside this call (channel<T>::send(std::in_place, ...) says why).
template <class T, class... Args>
    requires detail::makeable<T, Args...>
send_case<T, detail::borrowed<channel<T>>> send(const channel<T>& ch, std::in_place_t, Args&&... args) {
    return {ch.state(), detail::make_value<T>(std::forward<Args>(args)...), {&ch}};
}
template <class T, class... Args>
    requires detail::makeable<T, Args...>
send_case<T> send(channel<T>&& ch, std::in_place_t, Args&&... args) {
    detail::chan_state<T>* s = ch.state();
    return {s, detail::make_value<T>(std::forward<Args>(args)...), std::move(ch)};
}
template <class T, class... Args>
    requires detail::makeable<T, Args...>
send_case<T> send(const send_only<T>& ch, std::in_place_t, Args&&... args) {
    return {ch.state(), detail::make_value<T>(std::forward<Args>(args)...), detail::direction_access::handle(ch)};
}

/// A receive case on a receive-only view (a context's done(), say).
template <class T>
recv_case<T, recv_only<T>> recv(const recv_only<T>& ch) noexcept {
    return {ch.state(), ch};
}

/// A send case on a send-only view.
template <class T, class U>
    requires std::is_constructible_v<T, U&&>
send_case<T> send(const send_only<T>& ch, U&& v) {
    return {ch.state(), T(std::forward<U>(v)), detail::direction_access::handle(ch)};
}

template <class Rep, class Period>
after_case after(std::chrono::duration<Rep, Period> d) noexcept {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    return {detail::now_ns() + (ns > 0 ? std::int64_t(ns) : 0)};
}

/// A timeout case at a point in time (steady_clock).
inline after_case after_until(std::chrono::steady_clock::time_point t) noexcept {
    return {std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count()};
}

namespace detail {

enum class case_kind { recv, send, timer };

template <class C>
struct case_traits;

template <class T, class Keep>
struct case_traits<recv_case<T, Keep>> {
    static constexpr case_kind kind = case_kind::recv;
    using slot = std::optional<T>;
    using value_type = T;
};

template <class T, class Keep>
struct case_traits<send_case<T, Keep>> {
    static constexpr case_kind kind = case_kind::send;
    using slot = std::monostate;
};

template <>
struct case_traits<after_case> {
    static constexpr case_kind kind = case_kind::timer;
    using slot = std::monostate;
};

template <class C>
using case_t = std::remove_cvref_t<C>;

/// A case that borrows its channel (see recv): counted only while parked.
template <class C>
struct borrows_channel : std::false_type {};
template <class T, class H>
struct borrows_channel<recv_case<T, borrowed<H>>> : std::true_type {};
template <class T, class H>
struct borrows_channel<send_case<T, borrowed<H>>> : std::true_type {};

template <class C>
struct is_recv_only : std::false_type {};
template <class T>
struct is_recv_only<recv_only<T>> : std::true_type {};

/// A select argument as a case: a receive-only view (ctx.done()) becomes its
/// receive case; a case is itself.
template <class C>
auto as_case(C&& c) {
    if constexpr (is_recv_only<case_t<C>>::value) {
        using T = typename case_t<C>::value_type;
        auto* s = c.state();
        // Moved when it can be (ctx.done() is a temporary): no count taken and dropped.
        return recv_case<T, recv_only<T>>{s, case_t<C>(std::forward<C>(c))};
    } else {
        return case_t<C>(std::forward<C>(c));
    }
}
/// Accepted as a select argument: a case, or a receive-only view.
template <class C>
concept select_arg = is_recv_only<case_t<C>>::value || requires { case_traits<case_t<C>>::kind; };

/// The case type of a select argument; void for anything else, so that a
/// select over what is no case (a std::vector<select_case>&, say) is dropped
/// by its requires-clause instead of failing inside as_case.
template <class C, bool = select_arg<C>>
struct case_of {
    using type = void;
};
template <class C>
struct case_of<C, true> {
    using type = decltype(as_case(std::declval<C>()));
};
template <class C>
using case_of_t = typename case_of<C>::type;

/// A per-thread xorshift generator for the poll order: cheap, and different
/// on every worker.
GORO_DECL std::uint32_t select_rand() noexcept;

/// The timer of a blocking select's `after` case.
struct select_timer : timer_node {
    select_core* core = nullptr;
    int case_index = -1;

    select_timer() = default;
    select_timer(const select_timer&) noexcept : timer_node() {}

    static void on_fire(timer_node* n) noexcept;
};

struct no_timer {
    no_timer() = default;
};

template <bool Blocking, class... Cases>
class select_op;

}  // namespace detail

/// What a select chose: index() and, for a receive case, what it received.
template <class... Cases>
class select_result {
public:
    /// The chosen case (0-based, in argument order), or select_default.
    int index() const noexcept { return index_; }

    /// The received value of receive case I: nullopt when the channel was
    /// closed (or the case was not chosen).
    template <std::size_t I>
    auto& get() & noexcept {
        static_assert(is_recv<I>, "goro::select_result::get<I>: case I is not a receive case");
        return std::get<I>(slots_);
    }
    template <std::size_t I>
    const auto& get() const& noexcept {
        static_assert(is_recv<I>, "goro::select_result::get<I>: case I is not a receive case");
        return std::get<I>(slots_);
    }
    template <std::size_t I>
    auto&& get() && noexcept {
        static_assert(is_recv<I>, "goro::select_result::get<I>: case I is not a receive case");
        return std::move(std::get<I>(slots_));
    }

    /// The value receive case I received; throws goro::usage_error when it
    /// received none (another case fired, or the channel was closed).
    template <std::size_t I>
    auto& value() {
        auto& s = get<I>();
        if (!s)
            throw usage_error("goro::select_result::value<" + std::to_string(I) + ">: case " + std::to_string(I) +
                              (index_ == int(I) ? " found its channel closed" : " was not chosen"));
        return *s;
    }

private:
    template <bool, class...>
    friend class detail::select_op;
    template <std::size_t I>
    static constexpr bool is_recv = detail::case_traits<std::tuple_element_t<I, std::tuple<Cases...>>>::kind ==
                                    detail::case_kind::recv;

    int index_ = select_default;
    std::tuple<typename detail::case_traits<Cases>::slot...> slots_{};
};

namespace detail {

template <bool Blocking, class... Cases>
class [[nodiscard("goro::select: co_await it")]] select_op {
public:
    using is_goro_awaiter = void;

private:
    static constexpr std::size_t N = sizeof...(Cases);
    static_assert(N < 256, "goro::select: too many cases");
    static constexpr std::size_t NS = N ? N : 1;
    static constexpr std::size_t timers = ((case_traits<Cases>::kind == case_kind::timer ? 1 : 0) + ... + 0);
    using timer_type = std::conditional_t<(Blocking && timers > 0), select_timer, no_timer>;

public:
    using result_type = select_result<Cases...>;

    explicit select_op(Cases&&... cs) : cases_(std::move(cs)...) {}
    explicit select_op(std::tuple<Cases...>&& cs) : cases_(std::move(cs)) {}
    select_op(select_op&& o) noexcept(std::is_nothrow_move_constructible_v<std::tuple<Cases...>>)
        : cases_(std::move(o.cases_)) {}
    select_op& operator=(select_op&&) = delete;

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::select");
        if constexpr (N == 0) {
            park(self, h, wait_reason::select_no_cases);  // never published: parks forever
            return true;
        } else {
            std::int64_t now = 0;
            if constexpr (timers > 0) now = now_ns();
            const int plain = poll_fast_plain(now);
            if (plain >= 0) return false;
            unsigned char order[NS];
            shuffle(order);
            if (plain == fast_random && poll_fast(order, now) >= 0) return false;
            chan_base* locks[NS];
            std::size_t nl = lock_order(locks);
            lock_all(locks, nl);
            wake_list wakes;
            bool fired = poll_locked(order, now, wakes);
            if (!fired) {
                announce_all();
                fired = poll_locked(order, now, wakes);  // the second look (channel.hpp's PARKING HANDSHAKE)
            }
            if (fired) {
                unlock_all(locks, nl);
                wakes.ready_all();
                return false;
            }
            hold_borrowed();  // before park: a parked select is seen with its counts
            park(self, h, wait_reason::select);
            parked_ = true;
            core_.task = self;
            enqueue_all(order);  // its waiters find `self` in core_
            if constexpr (!std::is_same_v<timer_type, no_timer>) arm_timer();
            // Published. From here on only locals: `this` may be resumed elsewhere.
            unlock_all(locks, nl);
            wakes.ready_all();  // senders a refill moved into a ring (locals only)
            return true;
        }
    }

    result_type await_resume() {
        if (parked_) {
            // The winner's waiter was unlinked by its waker: only the channels
            // of the other cases need their locks (often not the busiest one).
            const int w = core_.winner;
            chan_base* locks[NS];
            std::size_t nl = lock_order(locks, w);
            lock_all(locks, nl);
            dequeue_losers(w);
            unlock_all(locks, nl);
            if constexpr (!std::is_same_v<timer_type, no_timer>) {
                if (w != timer_.case_index && !the_scheduler().timers().cancel(&timer_))
                    while (!timer_.fired_done.load(std::memory_order_acquire)) cpu_relax();
            }
            result_.index_ = w;
            finish_parked(w);
            drop_borrowed();
        }
        if (send_closed_) throw channel_closed("goro::select: send on closed channel");
        return std::move(result_);
    }

    /// The non-blocking form: the lock-free poll, then one poll under the locks.
    result_type poll_now() {
        if constexpr (N > 0) {
            unsigned char order[NS];
            shuffle(order);
            std::int64_t now = 0;
            if constexpr (timers > 0) now = now_ns();
            int f = poll_fast(order, now);
            // "Nothing ready" seen case by case without the locks is not one
            // moment's view when there are several cases: then the locks decide.
            if (f == fast_none && N == 1) {
                result_.index_ = select_default;
            } else if (f < 0) {
                chan_base* locks[NS];
                std::size_t nl = lock_order(locks);
                lock_all(locks, nl);
                wake_list wakes;
                if (!poll_locked(order, now, wakes)) result_.index_ = select_default;
                unlock_all(locks, nl);
                wakes.ready_all();
            }
        }
        if (send_closed_) throw channel_closed("goro::select: send on closed channel");
        return std::move(result_);
    }

private:
    template <std::size_t I>
    using case_at = std::tuple_element_t<I, std::tuple<Cases...>>;

    /// A count on each borrowed channel while the select is parked (see recv).
    void hold_borrowed() noexcept {
        for_each_case([&](auto I) {
            if constexpr (borrows_channel<case_at<I>>::value)
                if (auto* c = std::get<I>(cases_).ch) c->add_ref();
        });
    }
    void drop_borrowed() noexcept {
        for_each_case([&](auto I) {
            if constexpr (borrows_channel<case_at<I>>::value)
                if (auto* c = std::get<I>(cases_).ch) c->release();
        });
    }

    template <class F, std::size_t... I>
    static void for_each_index(F&& f, std::index_sequence<I...>) {
        (f(std::integral_constant<std::size_t, I>{}), ...);
    }
    template <class F>
    static void for_each_case(F&& f) {
        for_each_index(f, std::index_sequence_for<Cases...>{});
    }
    template <class F>
    static void visit(std::size_t i, F&& f) {
        for_each_case([&](auto I) {
            if (i == I) f(I);
        });
    }

    template <std::size_t I>
    chan_base* chan_of() const noexcept {
        if constexpr (case_traits<case_at<I>>::kind == case_kind::timer) return nullptr;
        else return std::get<I>(cases_).ch;
    }

    /// The distinct non-nil channels of every case but `skip`, sorted by address.
    std::size_t lock_order(chan_base** locks, int skip = -1) const noexcept {
        std::size_t n = 0;
        for_each_case([&](auto I) {
            chan_base* c = chan_of<I>();
            if (!c || int(I) == skip) return;
            std::size_t k = n;
            while (k > 0 && locks[k - 1] > c) --k;
            if (k > 0 && locks[k - 1] == c) return;  // already listed
            for (std::size_t j = n; j > k; --j) locks[j] = locks[j - 1];
            locks[k] = c;
            ++n;
        });
        return n;
    }

    static void lock_all(chan_base** locks, std::size_t n) noexcept {
        for (std::size_t i = 0; i < n; ++i) locks[i]->lock.lock();
    }
    /// Clears the wait flags of emptied queues (channel.hpp), then unlocks.
    static void unlock_all(chan_base** locks, std::size_t n) noexcept {
        for (std::size_t i = n; i > 0; --i) locks[i - 1]->unlock_synced();
    }

    /// A fresh random poll order (Fisher-Yates, built inside out).
    static void shuffle(unsigned char* order) noexcept {
        for (std::size_t i = 0; i < N; ++i) {
            std::size_t j = std::size_t((std::uint64_t(select_rand()) * (i + 1)) >> 32);
            order[i] = order[j];
            order[j] = static_cast<unsigned char>(i);
        }
    }

    static constexpr int fast_none = -1;    // every case would block (case by case)
    static constexpr int fast_locked = -2;  // a case needs the locks to tell
    static constexpr int fast_random = -3;  // poll_fast_plain: the random order must decide

    /// No locks. The lock-free pass without a random order, where the order
    /// cannot change the answer. Some cases' lock-free poll only looks and
    /// takes nothing: a nil channel, an unbuffered one (closed? anyone
    /// parked?), a timer. When each of those is looked at here, in argument
    /// order, and is not ready, and at most one other case is left (a
    /// buffered channel's ring), that one is polled alone. Every answer this
    /// gives is the one poll_fast gives with the looking cases first in the
    /// order, so it is as fair; and it draws no random number and branches on
    /// none (a select in a loop, such as recv-or-done, predicts every branch).
    /// A looking case that is ready (or needs the locks), or two cases that
    /// take: fast_random, and poll_fast decides in a random order.
    int poll_fast_plain(std::int64_t now) noexcept {
        int taker = -1;
        bool plain = true;
        for_each_case([&](auto I) {
            constexpr case_kind kind = case_traits<case_at<I>>::kind;
            auto& cs = std::get<I>(cases_);
            if (!plain) return;
            if constexpr (kind == case_kind::timer) {
                if (now >= cs.when_ns) plain = false;
            } else {
                if (!cs.ch) return;  // nil: never ready
                if (cs.ch->cap == 0) {
                    // What recv_fast / send_fast look at for an unbuffered
                    // channel (and all they do): closed fires, a parked peer
                    // needs the locks.
                    const bool empty = kind == case_kind::recv ? cs.ch->sendq.empty() : cs.ch->recvq.empty();
                    if (cs.ch->is_closed() || !empty) plain = false;
                } else if (taker >= 0) {
                    plain = false;
                } else {
                    taker = int(I);
                }
            }
        });
        if (!plain) return fast_random;
        if (taker < 0) return fast_none;
        fast_result f = fast_result::not_ready;
        visit(std::size_t(taker), [&](auto I) { f = fast_one<I>(now); });
        if (f == fast_result::done || f == fast_result::closed) {
            result_.index_ = taker;
            return taker;
        }
        return f == fast_result::locked ? fast_locked : fast_none;
    }

    /// No locks. Tries the cases in `order` with the channels' lock-free
    /// paths; stops at the first case that only the locks can tell about (so
    /// the locked poll, in the same order, gives it the same chance: fair).
    /// Returns the case that fired (recorded in result_), else fast_none or
    /// fast_locked.
    int poll_fast(const unsigned char* order, std::int64_t now) noexcept {
        for (std::size_t k = 0; k < N; ++k) {
            fast_result f = fast_result::not_ready;
            visit(order[k], [&](auto I) { f = fast_one<I>(now); });
            if (f == fast_result::done || f == fast_result::closed) {
                result_.index_ = order[k];
                return order[k];
            }
            if (f == fast_result::locked) return fast_locked;
        }
        return fast_none;
    }

    template <std::size_t I>
    fast_result fast_one(std::int64_t now) noexcept {
        constexpr case_kind kind = case_traits<case_at<I>>::kind;
        auto& cs = std::get<I>(cases_);
        if constexpr (kind == case_kind::timer) {
            return now >= cs.when_ns ? fast_result::done : fast_result::not_ready;
        } else if constexpr (kind == case_kind::recv) {
            if (!cs.ch) return fast_result::not_ready;
            fast_result f = cs.ch->recv_fast(std::get<I>(result_.slots_));  // closed: fires with nullopt
            return f == fast_result::done_contended ? fast_result::done : f;
        } else {
            if (!cs.ch) return fast_result::not_ready;
            fast_result f = cs.ch->send_fast(cs.value);
            if (f == fast_result::done_contended) f = fast_result::done;
            if (f == fast_result::closed) send_closed_ = true;
            return f;
        }
    }

    /// Channels locked. Tries the cases in `order`; when one proceeds, records
    /// it and returns true (the caller unlocks, then readies `wakes`).
    bool poll_locked(const unsigned char* order, std::int64_t now, wake_list& wakes) noexcept {
        for (std::size_t k = 0; k < N; ++k) {
            bool fired = false;
            visit(order[k], [&](auto I) { fired = poll_one<I>(wakes, now); });
            if (fired) {
                result_.index_ = order[k];
                return true;
            }
        }
        return false;
    }

    template <std::size_t I>
    bool poll_one(wake_list& wakes, std::int64_t now) noexcept {
        constexpr case_kind kind = case_traits<case_at<I>>::kind;
        auto& cs = std::get<I>(cases_);
        if constexpr (kind == case_kind::timer) {
            return now >= cs.when_ns;
        } else if constexpr (kind == case_kind::recv) {
            if (!cs.ch) return false;
            // closed: fires with nullopt
            return cs.ch->recv_locked(std::get<I>(result_.slots_), wakes) != recv_status::empty;
        } else {
            if (!cs.ch) return false;
            auto r = cs.ch->send_locked(cs.value, wakes);
            if (r == send_status::full) return false;
            if (r == send_status::closed) send_closed_ = true;
            return true;
        }
    }

    /// Channels locked, nothing ready: each buffered case's channel learns that
    /// a waiter is coming (before the second poll).
    void announce_all() noexcept {
        for_each_case([&](auto I) {
            constexpr case_kind kind = case_traits<case_at<I>>::kind;
            if constexpr (kind != case_kind::timer) {
                auto& cs = std::get<I>(cases_);
                if (!cs.ch) return;
                if constexpr (kind == case_kind::recv) cs.ch->announce_recv_wait();
                else cs.ch->announce_send_wait();
            }
        });
    }

    /// Links one waiter per channel case, in the random poll order: among the
    /// cases on one channel, the first linked is the first a waker takes, so
    /// each gets the same chance (Go's "permute cases on the same channel").
    /// All locks are held: the linking order cannot deadlock anything.
    void enqueue_all(const unsigned char* order) noexcept {
        for (std::size_t k = 0; k < N; ++k) visit(order[k], [&](auto I) {
            constexpr case_kind kind = case_traits<case_at<I>>::kind;
            if constexpr (kind != case_kind::timer) {
                auto& cs = std::get<I>(cases_);
                if (!cs.ch) return;
                chan_waiter& w = nodes_[I];
                w.set_select(&core_, int(I));
                w.success = false;
                if constexpr (kind == case_kind::recv) {
                    w.elem = &std::get<I>(result_.slots_);
                    cs.ch->recvq.push(&w);
                } else {
                    w.elem = &cs.value;
                    cs.ch->sendq.push(&w);
                }
            }
        });
    }

    void arm_timer() {
        if constexpr (!std::is_same_v<timer_type, no_timer>) {
            timer_.core = &core_;
            timer_.fire = &select_timer::on_fire;
            bool first = true;
            for_each_case([&](auto I) {
                if constexpr (case_traits<case_at<I>>::kind == case_kind::timer) {
                    std::int64_t when = std::get<I>(cases_).when_ns;
                    if (first || when < timer_.when_ns) {
                        timer_.when_ns = when;
                        timer_.case_index = int(I);
                        first = false;
                    }
                }
            });
            the_scheduler().timers().add(&timer_);
        }
    }

    /// Channels locked, after the wake-up: unlink the waiters nobody took.
    void dequeue_losers(int winner) noexcept {
        for_each_case([&](auto I) {
            constexpr case_kind kind = case_traits<case_at<I>>::kind;
            if constexpr (kind != case_kind::timer) {
                auto& cs = std::get<I>(cases_);
                if (!cs.ch || int(I) == winner) return;
                if constexpr (kind == case_kind::recv) cs.ch->recvq.remove(&nodes_[I]);
                else cs.ch->sendq.remove(&nodes_[I]);
            }
        });
    }

    void finish_parked(int winner) noexcept {
        visit(std::size_t(winner), [&](auto I) {
            if constexpr (case_traits<case_at<I>>::kind == case_kind::send)
                if (!nodes_[I].success) send_closed_ = true;  // woken by close
            // A receive case: the sender filled the slot, or close left it empty.
        });
    }

    std::tuple<Cases...> cases_;
    result_type result_{};
    chan_waiter nodes_[NS]{};
    select_core core_{};
    [[no_unique_address]] timer_type timer_{};
    bool parked_ = false;
    bool send_closed_ = false;
};

}  // namespace detail

/// Select cases evaluated in source order: `goro::select(goro::cases{a, b, c})`.
/// The arguments of a function call (`goro::select(a, b, c)`) are evaluated
/// in an unspecified order (g++: right to left, clang++: left to right); the
/// elements of a braced list are evaluated left to right, always, as Go
/// evaluates its cases. (Within one case, `goro::send(ch, f())`, the channel
/// and the value are still function arguments.)
template <class... Cs>
struct cases {
    std::tuple<Cs...> list;

    template <class... As>
        requires(sizeof...(As) == sizeof...(Cs) && (detail::select_arg<As> && ...))
    cases(As&&... as) : list(detail::as_case(std::forward<As>(as))...) {}
};
template <class... As>
cases(As&&...) -> cases<detail::case_of_t<As>...>;

/// Waits until one of the cases can proceed and performs it (Go's select).
template <class... Cases>
    requires(detail::select_arg<Cases> && ...)
[[nodiscard("goro::select: co_await it")]] detail::select_op<true, detail::case_of_t<Cases>...> select(Cases&&... cases) {
    return detail::select_op<true, detail::case_of_t<Cases>...>(detail::as_case(std::forward<Cases>(cases))...);
}

/// As select(a, b, ...), with the cases evaluated in source order.
template <class... Cs>
[[nodiscard("goro::select: co_await it")]] detail::select_op<true, Cs...> select(cases<Cs...>&& cs) {
    return detail::select_op<true, Cs...>(std::move(cs.list));
}

/// Performs one ready case, or none (index() == goro::select_default): Go's
/// select with a `default:` case. Never blocks; callable from any thread.
template <class... Cases>
    requires(detail::select_arg<Cases> && ...)
select_result<detail::case_of_t<Cases>...> try_select(Cases&&... cases) {
    detail::select_op<false, detail::case_of_t<Cases>...> op(detail::as_case(std::forward<Cases>(cases))...);
    return op.poll_now();
}

/// As try_select(a, b, ...), with the cases evaluated in source order.
template <class... Cs>
select_result<Cs...> try_select(cases<Cs...>&& cs) {
    detail::select_op<false, Cs...> op(std::move(cs.list));
    return op.poll_now();
}

}  // namespace goro

#if GORO_BODIES

namespace goro::detail {

GORO_DECL std::uint32_t select_rand() noexcept {
    static thread_local std::uint64_t s = 0;
    if (s == 0) s = ((reinterpret_cast<std::uintptr_t>(&s) * 0x9E3779B97F4A7C15ull) ^ std::uint64_t(now_ns())) | 1;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<std::uint32_t>(s >> 32);
}

GORO_DECL void select_timer::on_fire(timer_node* n) noexcept {
    auto* t = static_cast<select_timer*>(n);
    select_core* c = t->core;
    if (c->try_claim(t->case_index)) {
        ready(c->task);  // last access: the select may resume and free us from here on
        return;
    }
    t->fired_done.store(true, std::memory_order_release);  // last access (CONTRACT)
}

}  // namespace goro::detail
#endif  // GORO_BODIES
