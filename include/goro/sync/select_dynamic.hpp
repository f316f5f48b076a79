// goro/sync/select_dynamic.hpp — a select over a number of cases known only at
// run time (Go's reflect.Select).
//
//   std::vector<goro::select_case> cases;
//   for (auto& ch : inputs) cases.push_back(goro::recv(ch));   // any element types
//   cases.push_back(ctx.done());
//   cases.push_back(goro::after(1s));
//   int i = co_await goro::select(cases);          // a std::span<goro::select_case>
//   if (auto& v = cases[i].received<int>()) ...    // what receive case i received
//   int j = goro::try_select(cases);               // goro::select_default: nothing ready
//
// The same semantics as goro::select (select.hpp): a nil case never fires, a
// channel may appear in several cases, the ready case is chosen uniformly at
// random (a fresh random poll order each time, also for the order in which a
// parked select's waiters are linked, so that several cases on one channel
// each get their turn), a chosen send on a closed channel throws
// goro::channel_closed, a send case that is not chosen keeps its value. An
// empty list parks forever (`select (no cases)`), as reflect.Select does.
//
// A select_case is type-erased: it owns its case (and the value of a send)
// in one allocation, made when the case is made; a select over the list
// allocates only its poll order and lock list, and none when there are at
// most 16 cases. The parked waiter of each case lives in the select_case, so
// a list is used by one select at a time, and must not be resized while a
// select over it is in progress. A case may be reused by the next select (a
// send case that fired has given its value away: its value is moved-from).
//
// ALGORITHM: select.hpp's, step by step, with the cases in a list instead of a
// tuple: the lock-free poll in a random order, the channels locked once each
// in address order, the locked poll in the same order, the announcement and
// the second look, the waiters linked in the poll order, the earliest `after`
// case armed as a timer, and after the wake-up the losers unlinked under the
// locks of their channels.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/algo.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/timer.hpp>
#include <goro/sync/channel.hpp>
#include <goro/sync/select.hpp>

namespace goro {

class select_case;

namespace detail {

template <class T>
inline const char dyn_type_tag = 0;

/// What a select_case can do with its erased case (`box`).
struct dyn_case_ops {
    fast_result (*fast)(void* box, bool& send_closed) noexcept;
    bool (*locked)(void* box, wake_list& wakes, bool& send_closed) noexcept;
    void (*announce)(void* box) noexcept;
    void (*link)(void* box, chan_waiter& w) noexcept;
    void (*unlink)(void* box, chan_waiter& w) noexcept;
    void (*reset)(void* box) noexcept;
    void (*destroy)(void* box) noexcept;
    void* (*slot)(void* box) noexcept;  // receive: its std::optional<T>
    const void* type;                   // receive: &dyn_type_tag<T>
};

template <class T, class Keep>
struct dyn_recv_box {
    recv_case<T, Keep> c;
    std::optional<T> slot{};

    static fast_result fast(void* b, bool&) noexcept {
        auto* x = static_cast<dyn_recv_box*>(b);
        if (!x->c.ch) return fast_result::not_ready;
        fast_result f = x->c.ch->recv_fast(x->slot);  // closed: fires with nullopt
        return f == fast_result::done_contended ? fast_result::done : f;
    }
    static bool locked(void* b, wake_list& wakes, bool&) noexcept {
        auto* x = static_cast<dyn_recv_box*>(b);
        return x->c.ch && x->c.ch->recv_locked(x->slot, wakes) != recv_status::empty;
    }
    static void announce(void* b) noexcept { static_cast<dyn_recv_box*>(b)->c.ch->announce_recv_wait(); }
    static void link(void* b, chan_waiter& w) noexcept {
        auto* x = static_cast<dyn_recv_box*>(b);
        w.elem = &x->slot;
        x->c.ch->recvq.push(&w);
    }
    static void unlink(void* b, chan_waiter& w) noexcept { static_cast<dyn_recv_box*>(b)->c.ch->recvq.remove(&w); }
    static void reset(void* b) noexcept { static_cast<dyn_recv_box*>(b)->slot.reset(); }
    static void destroy(void* b) noexcept { delete static_cast<dyn_recv_box*>(b); }
    static void* slot_of(void* b) noexcept { return &static_cast<dyn_recv_box*>(b)->slot; }

    static constexpr dyn_case_ops ops{&fast, &locked, &announce, &link, &unlink, &reset, &destroy, &slot_of,
                                      &dyn_type_tag<T>};
};

template <class T>
struct dyn_send_box {
    send_case<T> c;

    static fast_result fast(void* b, bool& send_closed) noexcept {
        auto* x = static_cast<dyn_send_box*>(b);
        if (!x->c.ch) return fast_result::not_ready;
        fast_result f = x->c.ch->send_fast(x->c.value);
        if (f == fast_result::done_contended) f = fast_result::done;
        if (f == fast_result::closed) send_closed = true;
        return f;
    }
    static bool locked(void* b, wake_list& wakes, bool& send_closed) noexcept {
        auto* x = static_cast<dyn_send_box*>(b);
        if (!x->c.ch) return false;
        auto r = x->c.ch->send_locked(x->c.value, wakes);
        if (r == send_status::full) return false;
        if (r == send_status::closed) send_closed = true;
        return true;
    }
    static void announce(void* b) noexcept { static_cast<dyn_send_box*>(b)->c.ch->announce_send_wait(); }
    static void link(void* b, chan_waiter& w) noexcept {
        auto* x = static_cast<dyn_send_box*>(b);
        w.elem = &x->c.value;
        x->c.ch->sendq.push(&w);
    }
    static void unlink(void* b, chan_waiter& w) noexcept { static_cast<dyn_send_box*>(b)->c.ch->sendq.remove(&w); }
    static void reset(void*) noexcept {}
    static void destroy(void* b) noexcept { delete static_cast<dyn_send_box*>(b); }
    static void* slot_of(void*) noexcept { return nullptr; }

    static constexpr dyn_case_ops ops{&fast, &locked, &announce, &link, &unlink, &reset, &destroy, &slot_of, nullptr};
};

template <bool Blocking>
class dyn_select_op;

}  // namespace detail

/// One case of a dynamic select: made from goro::recv(ch), goro::send(ch, v),
/// a receive-only view (ctx.done()), goro::after(d), or default-constructed
/// (a case that never fires, like one on a nil channel). Move-only.
class select_case {
public:
    select_case() noexcept = default;

    template <class T, class Keep>
    select_case(recv_case<T, Keep> c)
        : kind_(kind::recv), ops_(&detail::dyn_recv_box<T, Keep>::ops), ch_(c.ch),
          box_(new detail::dyn_recv_box<T, Keep>{std::move(c)}) {}
    /// From a case that borrows a channel variable: takes a handle of its
    /// own, since a select_case may outlive the variable.
    template <class T>
    select_case(recv_case<T, detail::borrowed<channel<T>>> c) : select_case(recv_case<T>{c.ch, *c.keep.handle}) {}
    template <class T>
    select_case(const recv_only<T>& r) : select_case(goro::recv(r)) {}
    template <class T>
    select_case(send_case<T> c)
        : kind_(kind::send), ops_(&detail::dyn_send_box<T>::ops), ch_(c.ch),
          box_(new detail::dyn_send_box<T>{std::move(c)}) {}
    /// From a send case that borrows a channel variable: a handle of its own, as above.
    template <class T>
    select_case(send_case<T, detail::borrowed<channel<T>>> c)
        : select_case(send_case<T>{c.ch, std::move(c.value), *c.keep.handle}) {}
    select_case(after_case a) noexcept : kind_(kind::timer), when_ns_(a.when_ns) {}

    select_case(select_case&& o) noexcept
        : kind_(o.kind_), ops_(o.ops_), ch_(o.ch_), box_(std::exchange(o.box_, nullptr)), when_ns_(o.when_ns_) {
        o.kind_ = kind::none;
        o.ch_ = nullptr;
    }
    select_case& operator=(select_case&& o) noexcept;
    select_case(const select_case&) = delete;
    select_case& operator=(const select_case&) = delete;
    ~select_case() {
        if (box_) ops_->destroy(box_);
    }

    bool is_recv() const noexcept { return kind_ == kind::recv; }
    bool is_send() const noexcept { return kind_ == kind::send; }
    bool is_after() const noexcept { return kind_ == kind::timer; }

    /// What this receive case received in the last select over it: nullopt
    /// when its channel was closed, or when another case was chosen. Throws
    /// goro::usage_error when this is not a receive case of element type T.
    template <class T>
    std::optional<T>& received() {
        if (kind_ != kind::recv || ops_->type != &detail::dyn_type_tag<T>)
            throw usage_error(std::string("goro::select_case::received: ") +
                              (kind_ == kind::recv ? "the element type is not the channel's"
                                                   : "not a receive case"));
        return *static_cast<std::optional<T>*>(ops_->slot(box_));
    }

private:
    template <bool>
    friend class detail::dyn_select_op;
    enum class kind : unsigned char { none, recv, send, timer };

    kind kind_ = kind::none;
    const detail::dyn_case_ops* ops_ = nullptr;
    detail::chan_base* ch_ = nullptr;  // null: nil channel, timer, or none
    void* box_ = nullptr;
    std::int64_t when_ns_ = 0;
    detail::chan_waiter node_{};
};

namespace detail {

/// A few entries inline, more on the heap (a select's poll order and lock list).
template <class T, std::size_t Inline = 16>
class small_buf {
public:
    explicit small_buf(std::size_t n) : p_(n <= Inline ? inline_ : (heap_.resize(n), heap_.data())) {}
    small_buf(const small_buf&) = delete;
    small_buf& operator=(const small_buf&) = delete;
    T& operator[](std::size_t i) noexcept { return p_[i]; }
    T* data() noexcept { return p_; }

private:
    T inline_[Inline]{};
    std::vector<T> heap_;
    T* p_;
};

template <bool Blocking>
class [[nodiscard("goro::select: co_await it")]] dyn_select_op {
public:
    using is_goro_awaiter = void;

    explicit dyn_select_op(std::span<select_case> cs) noexcept : cs_(cs) {}
    dyn_select_op(dyn_select_op&& o) noexcept : cs_(o.cs_) {}
    dyn_select_op& operator=(dyn_select_op&&) = delete;

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::select (dynamic)");
        const std::size_t n = cs_.size();
        if (n == 0) {
            park(self, h, wait_reason::select_no_cases);  // never published: parks forever
            return true;
        }
        prepare();
        small_buf<std::uint32_t> order(n);
        shuffle(order.data());
        const std::int64_t now = timers_ ? now_ns() : 0;
        if (poll_fast(order.data(), now) >= 0) return false;
        small_buf<chan_base*> locks(n);
        std::size_t nl = lock_order(locks.data());
        lock_all(locks.data(), nl);
        wake_list wakes;
        bool fired = poll_locked(order.data(), now, wakes);
        if (!fired) {
            for (select_case& c : cs_)
                if (c.ch_) c.ops_->announce(c.box_);
            fired = poll_locked(order.data(), now, wakes);  // the second look (channel.hpp's PARKING HANDSHAKE)
        }
        if (fired) {
            unlock_all(locks.data(), nl);
            wakes.ready_all();
            return false;
        }
        park(self, h, wait_reason::select);
        parked_ = true;
        core_.task = self;
        // The waiters, in the poll order (see select.hpp's enqueue_all).
        for (std::size_t k = 0; k < n; ++k) {
            select_case& c = cs_[order[k]];
            if (!c.ch_) continue;
            c.node_.set_select(&core_, int(order[k]));
            c.node_.success = false;
            c.ops_->link(c.box_, c.node_);
        }
        if (timers_) arm_timer();
        // Published. From here on only locals: `this` may be resumed elsewhere.
        unlock_all(locks.data(), nl);
        wakes.ready_all();
        return true;
    }

    int await_resume() {
        if (parked_) {
            const int w = core_.winner;
            small_buf<chan_base*> locks(cs_.size());
            std::size_t nl = lock_order(locks.data(), w);
            lock_all(locks.data(), nl);
            for (std::size_t i = 0; i < cs_.size(); ++i)
                if (int(i) != w && cs_[i].ch_) cs_[i].ops_->unlink(cs_[i].box_, cs_[i].node_);
            unlock_all(locks.data(), nl);
            if (timers_ && w != timer_.case_index && !the_scheduler().timers().cancel(&timer_))
                while (!timer_.fired_done.load(std::memory_order_acquire)) cpu_relax();
            index_ = w;
            if (cs_[std::size_t(w)].kind_ == select_case::kind::send && !cs_[std::size_t(w)].node_.success)
                send_closed_ = true;  // woken by close
        }
        if (send_closed_) throw channel_closed("goro::select: send on closed channel");
        return index_;
    }

    /// The non-blocking form, as select_op::poll_now.
    int poll_now() {
        const std::size_t n = cs_.size();
        if (n > 0) {
            prepare();
            small_buf<std::uint32_t> order(n);
            shuffle(order.data());
            const std::int64_t now = timers_ ? now_ns() : 0;
            int f = poll_fast(order.data(), now);
            if (f == fast_none && n == 1) {
                index_ = select_default;
            } else if (f < 0) {
                small_buf<chan_base*> locks(n);
                std::size_t nl = lock_order(locks.data());
                lock_all(locks.data(), nl);
                wake_list wakes;
                if (!poll_locked(order.data(), now, wakes)) index_ = select_default;
                unlock_all(locks.data(), nl);
                wakes.ready_all();
            }
        }
        if (send_closed_) throw channel_closed("goro::select: send on closed channel");
        return index_;
    }

private:
    static constexpr int fast_none = -1;
    static constexpr int fast_locked = -2;

    /// Forgets what the last select over these cases received; counts the timers.
    void prepare() noexcept {
        for (select_case& c : cs_) {
            if (c.box_) c.ops_->reset(c.box_);
            if (c.kind_ == select_case::kind::timer) timers_ = true;
        }
    }

    void shuffle(std::uint32_t* order) const noexcept {
        for (std::size_t i = 0; i < cs_.size(); ++i) {
            std::size_t j = std::size_t((std::uint64_t(select_rand()) * (i + 1)) >> 32);
            order[i] = order[j];
            order[j] = std::uint32_t(i);
        }
    }

    int poll_fast(const std::uint32_t* order, std::int64_t now) noexcept {
        for (std::size_t k = 0; k < cs_.size(); ++k) {
            select_case& c = cs_[order[k]];
            fast_result f = fast_result::not_ready;
            if (c.kind_ == select_case::kind::timer) f = now >= c.when_ns_ ? fast_result::done : fast_result::not_ready;
            else if (c.box_) f = c.ops_->fast(c.box_, send_closed_);
            if (f == fast_result::done || f == fast_result::closed) {
                index_ = int(order[k]);
                return index_;
            }
            if (f == fast_result::locked) return fast_locked;
        }
        return fast_none;
    }

    bool poll_locked(const std::uint32_t* order, std::int64_t now, wake_list& wakes) noexcept {
        for (std::size_t k = 0; k < cs_.size(); ++k) {
            select_case& c = cs_[order[k]];
            bool fired = false;
            if (c.kind_ == select_case::kind::timer) fired = now >= c.when_ns_;
            else if (c.ch_) fired = c.ops_->locked(c.box_, wakes, send_closed_);
            if (fired) {
                index_ = int(order[k]);
                return true;
            }
        }
        return false;
    }

    /// The distinct non-nil channels of every case but `skip`, sorted by address.
    std::size_t lock_order(chan_base** locks, int skip = -1) const noexcept {
        std::size_t n = 0;
        for (std::size_t i = 0; i < cs_.size(); ++i)
            if (cs_[i].ch_ && int(i) != skip) locks[n++] = cs_[i].ch_;
        detail::heap_sort(locks, locks + n, [](chan_base* a, chan_base* b) { return a < b; });
        std::size_t distinct = 0;
        for (std::size_t i = 0; i < n; ++i)
            if (distinct == 0 || locks[distinct - 1] != locks[i]) locks[distinct++] = locks[i];
        return distinct;
    }
    static void lock_all(chan_base** locks, std::size_t n) noexcept {
        for (std::size_t i = 0; i < n; ++i) locks[i]->lock.lock();
    }
    static void unlock_all(chan_base** locks, std::size_t n) noexcept {
        for (std::size_t i = n; i > 0; --i) locks[i - 1]->unlock_synced();
    }

    void arm_timer() {
        timer_.core = &core_;
        timer_.fire = &select_timer::on_fire;
        bool first = true;
        for (std::size_t i = 0; i < cs_.size(); ++i) {
            if (cs_[i].kind_ != select_case::kind::timer) continue;
            if (first || cs_[i].when_ns_ < timer_.when_ns) {
                timer_.when_ns = cs_[i].when_ns_;
                timer_.case_index = int(i);
                first = false;
            }
        }
        the_scheduler().timers().add(&timer_);
    }

    std::span<select_case> cs_;
    select_core core_{};
    select_timer timer_{};
    int index_ = select_default;
    bool timers_ = false;
    bool parked_ = false;
    bool send_closed_ = false;
};

}  // namespace detail

/// A select over a list of cases whose number is known only at run time (Go's
/// reflect.Select): the index of the case chosen. A receive case's value is
/// then `cases[i].received<T>()`.
inline detail::dyn_select_op<true> select(std::span<select_case> cases) noexcept {
    return detail::dyn_select_op<true>(cases);
}

/// The non-blocking form: the index of the case performed, or goro::select_default.
GORO_DECL int try_select(std::span<select_case> cases);

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL select_case& select_case::operator=(select_case&& o) noexcept {
    if (this != &o) {
        if (box_) ops_->destroy(box_);
        kind_ = std::exchange(o.kind_, kind::none);
        ops_ = o.ops_;
        ch_ = std::exchange(o.ch_, nullptr);
        box_ = std::exchange(o.box_, nullptr);
        when_ns_ = o.when_ns_;
    }
    return *this;
}

GORO_DECL int try_select(std::span<select_case> cases) {
    return detail::dyn_select_op<false>(cases).poll_now();
}

}  // namespace goro
#endif  // GORO_BODIES
