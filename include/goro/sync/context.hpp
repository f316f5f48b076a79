// goro/sync/context.hpp — `goro::context`: Go's context.Context, for cancellation
// trees, deadlines and request-scoped values.
//
//   auto [ctx, cancel] = goro::with_timeout(goro::background(), 2s);
//   goro::go(worker(ctx, jobs));        // worker: select(goro::recv(jobs), ctx.done())
//   ...
//   cancel();                           // every descendant is cancelled at once
//   ctx.err();                          // context_error::canceled (or deadline_exceeded)
//
// A context is a counted handle to an immutable node; nodes chain to their
// parent (a strong reference), so a tree is shared by everything that holds
// a handle into it:
//
//          background (no node)
//               │
//         cancel_node A ◄─────── with_cancel(background())
//          ╱         ╲           A lists B and C as children (raw links, A's lock)
//   cancel_node B   value_node V ◄── with_value(A, key, v): no children list, no done;
//                       │            done/err/deadline are A's
//                 cancel_node C      C is listed in A (its nearest cancelable ancestor)
//
// CANCELLATION, with Go's guarantee: while done() is open err() is none;
// once err() is set, done() is closed and every descendant's err() is set
// (and its done() closed). Cancelling a node happens in three passes (see
// cancel_tree): begin — under each node's `mu`, record the error and cause,
// detach the children list and stop the deadline timer, for the node and its
// whole subtree (iteratively: no recursion, no allocation); publish — close
// each node's `done` channel, parents before children (which wakes every
// task waiting on it); then request stop on each std::stop_source handed out
// and drop the references taken. err() reads the error only once `done` is
// closed and the whole subtree's cancellation published, so err() and
// done() change together, and a parent's err() is seen only once its
// subtree is done. If another thread began cancelling a node first,
// cancel (and a parent's cancel reaching it) waits until that one is
// published: cancel() returns with the context done. A node cancelled
// through its own cancel func, deadline or stop token also unlinks itself
// from its parent's list, and so does a node destroyed uncancelled, so a
// long-lived parent does not grow while children come and go.
//
// THREAD SAFETY / LOCK ORDER
//   * A cancel node's `mu` guards its children list (and the sibling links of
//     those children), its stop_source and whether its timer is armed. At most
//     one node's `mu` is held at a time; the done channel's lock and the timer
//     heap's mutex are taken after or under it, never the other way round.
//   * `err` is written once (under `mu`, after `cause`) when a cancellation
//     begins; readers outside `mu` look at it only after seeing `done`
//     closed (an acquire load of the channel's closed flag, set after `err`
//     by the same thread), so err() and cause() are wait-free.
//   * A parent holds no reference to its children: cancelling one takes a
//     reference only if the child is not already being destroyed (count not
//     zero), and a dying child unlinks itself under the parent's `mu`.
//   * OWNERSHIP OF A TIMED NODE. An armed deadline timer holds a reference
//     to its node (`timer_ref`), and exactly one party drops it: the cancel
//     or abandon that wins timer_queue::cancel (the timer will never fire),
//     or else the timer callback, as the very last thing it does — after
//     cancelling the node, which wakes the tasks on `done` and may let them
//     drop every handle. So the node outlives everything the timer thread
//     does with it, and whoever drops the last reference frees it.
//   * No thread touches a node after dropping its own reference. In
//     particular, the holder of the last handle stops the timer early (a
//     forgotten cancel must not keep a subtree alive until its deadline)
//     *before* it lets go: when its release would leave only the timer's
//     reference, it first calls abandon_timer() with its handle still held,
//     and only then drops it. Nothing ever waits for a timer callback: no
//     deadlock when the timer thread itself drops the last handle of another
//     timed node.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>

#include <goro/sync/channel.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/sync/select.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/timer.hpp>

namespace goro {

/// Why a context is done (Go's ctx.Err()).
enum class context_error : unsigned char {
    none,               ///< not done
    canceled,           ///< its cancel func was called (or an ancestor's, or its stop token's)
    deadline_exceeded,  ///< its deadline (or an ancestor's) passed
};

GORO_DECL const char* to_string(context_error e) noexcept;

/// Thrown by context::throw_if_done() for a cancelled context (Go's context.Canceled).
class canceled_error : public error {
public:
    canceled_error() : error("context canceled") {}
    using error::error;
};

/// Thrown by context::throw_if_done() once a deadline passed (Go's context.DeadlineExceeded).
class deadline_exceeded_error : public error {
public:
    deadline_exceeded_error() : error("context deadline exceeded") {}
    using error::error;
};

/// A typed key for with_value: its address is its identity, T the value's type.
///   inline const goro::context_key<std::string> request_id{"request_id"};
template <class T>
class context_key {
public:
    explicit constexpr context_key(const char* name) noexcept : name_(name) {}
    context_key(const context_key&) = delete;
    context_key& operator=(const context_key&) = delete;
    constexpr const char* name() const noexcept { return name_; }

private:
    const char* name_;
};

class context;
class cancel_func;

namespace detail {

struct cancel_node;

struct ctx_node {
    // refs = 2 x (handles: context, cancel_func, a child's parent link) + 1 while a deadline timer is armed.
    static constexpr std::size_t handle_ref = 2;
    static constexpr std::size_t timer_ref = 1;

    std::atomic<std::size_t> refs{handle_ref};
    ctx_node* parent = nullptr;           // a handle reference (null: background)
    cancel_node* nearest = nullptr;       // closest cancelable node, this one included
    std::int64_t deadline_ns = std::numeric_limits<std::int64_t>::max();
    const void* key = nullptr;            // set on value nodes

    ctx_node() = default;
    ctx_node(const ctx_node&) = delete;
    ctx_node& operator=(const ctx_node&) = delete;
    virtual ~ctx_node() = default;

    /// Called by the holder of the last handle, before it lets go of it, when
    /// an armed timer's reference is all that would be left: nobody could
    /// observe this node any more, so the timer is stopped now instead of at
    /// the deadline (dropping the timer's reference if it did not fire yet).
    virtual void abandon_timer() noexcept {}

    void add_ref() noexcept { refs.fetch_add(handle_ref, std::memory_order_relaxed); }
    /// A handle reference unless the node is already being destroyed.
    bool try_add_ref() noexcept;
    /// Drops a reference (a handle's, or the timer's); frees the nodes that
    /// reach zero, walking up the chain iteratively (no recursion).
    ///
    /// The last handle never goes from `handle_ref + timer_ref` straight to
    /// `timer_ref`: first, still holding itself, it stops the timer
    /// (abandon_timer). Once a thread has dropped its reference it never
    /// touches the node again, so whoever drops the last reference — the timer
    /// callback included — may free it at once.
    static void release(ctx_node* n, std::size_t amount = handle_ref) noexcept;
};

template <class T>
struct value_node final : ctx_node {
    T value;
    template <class U>
    explicit value_node(U&& v) : value(std::forward<U>(v)) {}
};

/// Cancels `n` and every descendant, and returns once all of them are
/// published (err() set, done() closed). The caller holds a reference to `n`.
///
/// Three passes, iteratively (no recursion, no allocation; the lists run
/// through `work_next`):
///   1. begin: `n` and, depth first, every descendant whose cancellation had
///      not begun; their children lists are detached on the way. A child whose
///      cancellation another thread began is set aside, to wait for.
///   2. publish, each parent before its children (so a task woken by a
///      child's done() finds its ancestors done), then mark every node
///      `settled`; err() of a published node waits for that, so a node's
///      err() is never seen before its descendants' done() closed.
///      First wait for the set-aside children: a thread waits
///      only for nodes outside the subtrees of what it began and has not
///      published, and their canceller only for nodes below them, so the
///      waits end (the tree has no cycles).
///   3. only now what may run user code or start another cancellation:
///      stop_source callbacks, and dropping the references (a node's
///      destructor runs its values' destructors). Everything begun is
///      published by then, so nothing started here waits for this thread.
GORO_DECL void cancel_tree(cancel_node* n, context_error err, std::exception_ptr cause, bool unlink) noexcept;

struct cancel_node final : ctx_node {
    struct deadline_timer : timer_node {
        cancel_node* owner = nullptr;
        static void on_fire(timer_node* t) noexcept;
    };
    struct stop_relay {
        cancel_node* owner;
        void operator()() const noexcept;
    };

    ranked_lock<spinlock, lock_rank::context> mu;
    chan_state<std::monostate> done{0};  // closed when the cancellation is published (see CANCELLATION)
    // Set once, under mu, when a cancellation begins (after `cause`); the
    // context's err() reads it only once `done` is closed.
    std::atomic<context_error> err{context_error::none};
    std::exception_ptr cause;            // written under mu before err
    // --- under mu ---
    cancel_node* first_child = nullptr;
    std::size_t nchildren = 0;
    bool timer_armed = false;
    std::optional<std::stop_source> stop;
    // --- under the ancestor's mu (the list this node is in) ---
    cancel_node* prev_sibling = nullptr;
    cancel_node* next_sibling = nullptr;
    bool linked = false;
    // --- owned by the canceller that detached this node from its ancestor's list ---
    cancel_node* work_next = nullptr;
    // --- immutable ---
    cancel_node* ancestor = nullptr;     // whose children list this node joins (parent's nearest)
    deadline_timer timer{};
    std::optional<std::stop_callback<stop_relay>> relay;  // with_stop_token only

    /// The error as others may see it: none until `done` is closed. Closing
    /// sets the channel's closed flag under its lock, so a thread that sees
    /// the flag here also finds done() ready, and one that found done()
    /// ready sees the flag; `err` was stored before the close.
    ///
    /// Once `done` is closed the cancellation of this node's whole subtree is
    /// under way on another thread and ends without waiting for anything
    /// (CANCELLATION); like Go's Err(), which takes the lock the canceller
    /// holds throughout, this waits for it, so a non-none error also means
    /// every descendant is done.
    context_error published_err() const noexcept;

    GORO_DECL void abandon_timer() noexcept override;

    GORO_DECL ~cancel_node() override;

    void unlink_from_ancestor() noexcept;

    /// Begins this node's cancellation: records the error and cause (so no
    /// one else begins it, and a child created from now on is cancelled by
    /// its creator), stops the timer, and moves the children, each with a
    /// reference, onto `work`. False when a cancellation had begun already.
    /// The caller holds a reference.
    bool begin_cancel(context_error e, const std::exception_ptr& c, cancel_node*& work) noexcept;

    /// Makes the cancellation visible: err() and done() change together here.
    void publish_cancel() noexcept { done.close("goro::context::cancel"); }

    /// After publishing: stops the stop_source handed out by stop_token(), if
    /// any. (stop_token() checks `done` under mu after creating one, so a
    /// source created now is stopped there.)
    void stop_after_cancel() noexcept;

    /// Waits until another thread's cancellation of this node is published:
    /// its done() and every descendant's closed.
    void wait_published() const noexcept {
        while (!settled.load(std::memory_order_acquire)) std::this_thread::yield();
    }

    // Set once the cancellation of this node and of every descendant it
    // reached is published (cancel_tree's pass 2).
    std::atomic<bool> settled{false};
};

GORO_DECL std::exception_ptr error_of(context_error e);

}  // namespace detail

/// A context handle. Default-constructed: background (never cancelled, no
/// deadline, no values; its done() is a nil channel that never fires).
class context {
public:
    context() noexcept = default;
    context(const context& o) noexcept : n_(o.n_) {
        if (n_) n_->add_ref();
    }
    context(context&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
    context& operator=(const context& o) noexcept;
    context& operator=(context&& o) noexcept;
    ~context() { detail::ctx_node::release(n_); }

    /// The context's done channel (Go's ctx.Done()), receive-only: closed once
    /// the context is done; nil for background. `co_await ctx.done()`,
    /// `ctx.done()` as a select case, `while (auto v = co_await d.recv()) {}`
    /// (not `while (co_await d.recv())`: g++ 12 miscompiles a co_await in a
    /// condition without a declaration), or passed on as a
    /// `recv_only<std::monostate>`. It holds a handle to the
    /// context, so it may outlive this one.
    recv_only<std::monostate> done() const noexcept;

    /// Why the context is done, or context_error::none.
    context_error err() const noexcept {
        detail::cancel_node* c = n_ ? n_->nearest : nullptr;
        return c ? c->published_err() : context_error::none;
    }
    /// True once the context is cancelled or past its deadline.
    bool is_done() const noexcept { return err() != context_error::none; }

    /// Throws canceled_error or deadline_exceeded_error when the context is done.
    void throw_if_done() const;

    /// The earliest deadline along the chain, if any.
    std::optional<std::chrono::steady_clock::time_point> deadline() const noexcept;

    /// The value stored under `key` by the nearest with_value, or null.
    template <class T>
    const T* value(const context_key<T>& key) const noexcept {
        for (detail::ctx_node* n = n_; n; n = n->parent)
            if (n->key == &key) return &static_cast<detail::value_node<T>*>(n)->value;
        return nullptr;
    }

    /// A std::stop_token that is stop-requested when this context is done
    /// (never, for background).
    std::stop_token stop_token() const;

    friend bool operator==(const context& a, const context& b) noexcept { return a.n_ == b.n_; }

private:
    friend class cancel_func;
    friend struct context_access;
    explicit context(detail::ctx_node* adopt) noexcept : n_(adopt) {}
    detail::ctx_node* n_ = nullptr;
};

namespace detail {
struct ctx_keep {
    static void add(void* p) noexcept { static_cast<ctx_node*>(p)->add_ref(); }
    static void drop(void* p) noexcept { ctx_node::release(static_cast<ctx_node*>(p)); }
    static constexpr keep_ops ops{&add, &drop};
};
}  // namespace detail

/// Cancels its context (Go's CancelFunc). Copyable; calling it again, or after
/// the context was cancelled some other way, does nothing.
class cancel_func {
public:
    cancel_func() noexcept = default;
    cancel_func(const cancel_func& o) noexcept : n_(o.n_) {
        if (n_) n_->add_ref();
    }
    cancel_func(cancel_func&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
    cancel_func& operator=(cancel_func o) noexcept {
        std::swap(n_, o.n_);
        return *this;
    }
    ~cancel_func() { detail::ctx_node::release(n_); }

    /// Cancels with context_error::canceled.
    void operator()() const noexcept {
        if (n_) detail::cancel_tree(n_, context_error::canceled, nullptr, true);
    }
    /// Cancels with context_error::canceled, recording `cause` (see goro::cause).
    void operator()(std::exception_ptr cause) const noexcept {
        if (n_) detail::cancel_tree(n_, context_error::canceled, std::move(cause), true);
    }

private:
    friend struct context_access;
    explicit cancel_func(detail::cancel_node* n) noexcept : n_(n) {
        if (n_) n_->add_ref();
    }
    detail::cancel_node* n_ = nullptr;
};

/// goro::background(): the root of every context tree. goro::todo(): the same,
/// spelled for "not decided yet".
inline context background() noexcept { return {}; }
inline context todo() noexcept { return {}; }

struct context_access {
    static detail::ctx_node* node(const context& c) noexcept { return c.n_; }
    static context adopt(detail::ctx_node* n) noexcept { return context(n); }
    static cancel_func make_cancel(detail::cancel_node* n) noexcept { return cancel_func(n); }

    /// A new cancel node below `parent`, linked into its nearest cancelable
    /// ancestor, or cancelled at once when that one is done already.
    static detail::cancel_node* new_cancel_node(const context& parent, std::int64_t deadline_ns);

    static void arm_deadline(detail::cancel_node* n, std::int64_t when_ns);

    static std::int64_t now_ns() noexcept { return detail::now_ns(); }
};

/// A child of `parent` with its own cancel func (Go's WithCancel).
GORO_DECL std::pair<context, cancel_func> with_cancel(const context& parent);

/// A child that is cancelled with deadline_exceeded at `deadline` (Go's WithDeadline).
template <class Duration>
std::pair<context, cancel_func> with_deadline(const context& parent,
                                              std::chrono::time_point<std::chrono::steady_clock, Duration> deadline) {
    std::int64_t when = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    detail::cancel_node* n = context_access::new_cancel_node(parent, when);
    context ctx = context_access::adopt(n);
    cancel_func cancel = context_access::make_cancel(n);
    // The parent's earlier deadline already covers this one: no timer of our own.
    detail::ctx_node* p = context_access::node(parent);
    if (!p || when < p->deadline_ns) context_access::arm_deadline(n, when);
    return {std::move(ctx), std::move(cancel)};
}

/// with_deadline(parent, now + timeout) (Go's WithTimeout).
template <class Rep, class Period>
std::pair<context, cancel_func> with_timeout(const context& parent, std::chrono::duration<Rep, Period> timeout) {
    return with_deadline(parent, std::chrono::steady_clock::now() +
                                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout));
}

/// A child cancelled (context_error::canceled) when `token` is stop-requested,
/// or by its cancel func: the bridge from std::stop_token (std::jthread, …).
GORO_DECL std::pair<context, cancel_func> with_stop_token(const context& parent, std::stop_token token);

/// A child carrying `value` under `key` (Go's WithValue); lookup: ctx.value(key).
template <class T, class U>
    requires std::is_constructible_v<T, U&&>
context with_value(const context& parent, const context_key<T>& key, U&& value) {
    auto* n = new detail::value_node<T>(std::forward<U>(value));
    n->key = &key;
    if (detail::ctx_node* p = context_access::node(parent)) {
        p->add_ref();
        n->parent = p;
        n->nearest = p->nearest;
        n->deadline_ns = p->deadline_ns;
    }
    return context_access::adopt(n);
}

/// Why `ctx` was cancelled: the cause given to its cancel func (or an
/// ancestor's), else canceled_error / deadline_exceeded_error; null while
/// the context is not done (Go's context.Cause).
GORO_DECL std::exception_ptr cause(const context& ctx);

namespace detail {
/// Children currently linked under the nearest cancelable node of `ctx` (for tests and metrics).
GORO_DECL std::size_t context_children(const context& ctx) noexcept;
}  // namespace detail

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL const char* to_string(context_error e) noexcept {
    switch (e) {
    case context_error::none: return "none";
    case context_error::canceled: return "context canceled";
    case context_error::deadline_exceeded: return "context deadline exceeded";
    }
    return "unknown";
}

}  // namespace goro

namespace goro::detail {

GORO_DECL bool ctx_node::try_add_ref() noexcept {
    std::size_t r = refs.load(std::memory_order_relaxed);
    while (r != 0)
        if (refs.compare_exchange_weak(r, r + handle_ref, std::memory_order_acq_rel, std::memory_order_relaxed))
            return true;
    return false;
}

GORO_DECL void ctx_node::release(ctx_node* n, std::size_t amount) noexcept {
    while (n) {
        std::size_t r = n->refs.load(std::memory_order_relaxed);
        bool abandoned = false;
        for (;;) {
            if (amount == handle_ref && r == handle_ref + timer_ref && !abandoned) {
                abandoned = true;
                n->abandon_timer();  // our handle keeps n alive meanwhile
                r = n->refs.load(std::memory_order_relaxed);
                continue;
            }
            // A failed abandon means the timer is firing, or a cancel took
            // it: either drops the timer's reference soon, so we may go.
            if (n->refs.compare_exchange_weak(r, r - amount, std::memory_order_acq_rel, std::memory_order_relaxed))
                break;
        }
        if (r != amount) return;
        ctx_node* p = n->parent;  // kept until n is gone: n's destructor may lock an ancestor
        delete n;
        n = p;
        amount = handle_ref;
    }
}

GORO_DECL void cancel_node::deadline_timer::on_fire(timer_node* t) noexcept {
    cancel_node* n = static_cast<deadline_timer*>(t)->owner;
    cancel_tree(n, context_error::deadline_exceeded, nullptr, true);
    ctx_node::release(n, timer_ref);  // last access: the armed timer's reference
}

GORO_DECL void cancel_node::stop_relay::operator()() const noexcept {
    cancel_tree(owner, context_error::canceled,
                std::make_exception_ptr(canceled_error("goro::with_stop_token: stop requested")), true);
}

GORO_DECL context_error cancel_node::published_err() const noexcept {
    if (!done.is_closed()) return context_error::none;
    wait_published();
    return err.load(std::memory_order_relaxed);
}

GORO_DECL void cancel_node::abandon_timer() noexcept {
    std::lock_guard g(mu);
    // Not cancelled: the callback is running (or about to) and drops the
    // timer's reference itself. Cancelled: never zero here, the caller
    // still holds its handle.
    if (timer_armed && the_scheduler().timers().cancel(&timer)) {
        timer_armed = false;
        refs.fetch_sub(timer_ref, std::memory_order_acq_rel);
    }
}

GORO_DECL cancel_node::~cancel_node() {
    relay.reset();  // waits for a stop callback running on another thread
    unlink_from_ancestor();
}

GORO_DECL void cancel_node::unlink_from_ancestor() noexcept {
    cancel_node* a = ancestor;
    if (!a) return;
    std::lock_guard g(a->mu);
    if (!linked) return;
    if (prev_sibling) prev_sibling->next_sibling = next_sibling;
    else a->first_child = next_sibling;
    if (next_sibling) next_sibling->prev_sibling = prev_sibling;
    prev_sibling = next_sibling = nullptr;
    linked = false;
    --a->nchildren;
}

GORO_DECL bool cancel_node::begin_cancel(context_error e, const std::exception_ptr& c, cancel_node*& work) noexcept {
    bool stop_timer = false;
    {
        std::lock_guard g(mu);
        if (err.load(std::memory_order_relaxed) != context_error::none) return false;
        cause = c;
        err.store(e, std::memory_order_relaxed);
        for (cancel_node* ch = first_child; ch;) {
            cancel_node* next = ch->next_sibling;
            ch->prev_sibling = ch->next_sibling = nullptr;
            ch->linked = false;
            if (ch->try_add_ref()) {  // a child at zero is being destroyed: nobody can observe it
                ch->work_next = work;
                work = ch;
            }
            ch = next;
        }
        first_child = nullptr;
        nchildren = 0;
        stop_timer = std::exchange(timer_armed, false);
    }
    if (stop_timer && the_scheduler().timers().cancel(&timer)) {
        // The timer will not fire: drop its reference (the caller holds one).
        refs.fetch_sub(timer_ref, std::memory_order_acq_rel);
    }
    return true;
}

GORO_DECL void cancel_node::stop_after_cancel() noexcept {
    std::optional<std::stop_source> to_stop;
    {
        std::lock_guard g(mu);
        if (stop) to_stop = stop;
    }
    if (to_stop) to_stop->request_stop();
}

GORO_DECL void cancel_tree(cancel_node* n, context_error err, std::exception_ptr cause, bool unlink) noexcept {
    cancel_node* work = nullptr;
    if (!n->begin_cancel(err, cause, work)) {
        n->wait_published();  // cancel() returns with the context done, whoever cancelled it
        return;
    }
    cancel_node* begun = nullptr;  // newest first: children before parents
    cancel_node* foreign = nullptr;
    while (work) {
        cancel_node* c = work;
        work = c->work_next;
        if (c->begin_cancel(err, cause, work)) {
            c->work_next = begun;
            begun = c;
        } else {
            c->work_next = foreign;
            foreign = c;
        }
    }
    for (cancel_node* c = foreign; c; c = c->work_next) c->wait_published();
    // Parents before children, as Go does: a task woken by a child's done()
    // finds its ancestors done too. err() of any of them waits for `settled`.
    n->publish_cancel();
    cancel_node* order = nullptr;  // `begun` reversed: discovery order
    while (begun) {
        cancel_node* c = begun;
        begun = c->work_next;
        c->work_next = order;
        order = c;
    }
    begun = order;
    for (cancel_node* c = begun; c; c = c->work_next) c->publish_cancel();
    for (cancel_node* c = begun; c; c = c->work_next) c->settled.store(true, std::memory_order_release);
    n->settled.store(true, std::memory_order_release);
    for (cancel_node* lists : {begun, foreign}) {
        while (lists) {
            cancel_node* c = lists;
            lists = c->work_next;
            c->work_next = nullptr;
            c->stop_after_cancel();  // a foreign node's own canceller does it too: idempotent
            ctx_node::release(c);
        }
    }
    n->stop_after_cancel();
    if (unlink) n->unlink_from_ancestor();
}

GORO_DECL std::exception_ptr error_of(context_error e) {
    if (e == context_error::deadline_exceeded) return std::make_exception_ptr(deadline_exceeded_error());
    return std::make_exception_ptr(canceled_error());
}

}  // namespace goro::detail

namespace goro {

GORO_DECL context& context::operator=(const context& o) noexcept {
    if (o.n_) o.n_->add_ref();
    detail::ctx_node::release(n_);
    n_ = o.n_;
    return *this;
}

GORO_DECL context& context::operator=(context&& o) noexcept {
    if (this != &o) {
        detail::ctx_node::release(n_);
        n_ = std::exchange(o.n_, nullptr);
    }
    return *this;
}

GORO_DECL void context::throw_if_done() const {
    switch (err()) {
    case context_error::none: return;
    case context_error::canceled: throw canceled_error();
    case context_error::deadline_exceeded: throw deadline_exceeded_error();
    }
}

GORO_DECL std::optional<std::chrono::steady_clock::time_point> context::deadline() const noexcept {
    if (!n_ || n_->deadline_ns == std::numeric_limits<std::int64_t>::max()) return std::nullopt;
    return std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::nanoseconds(n_->deadline_ns)));
}

GORO_DECL std::stop_token context::stop_token() const {
    detail::cancel_node* c = n_ ? n_->nearest : nullptr;
    if (!c) return {};
    std::stop_source src{std::nostopstate};
    bool already = false;
    {
        std::lock_guard g(c->mu);
        if (!c->stop) c->stop.emplace();
        src = *c->stop;
        already = c->done.is_closed();
    }
    if (already) src.request_stop();  // published before anyone asked: catch up
    return src.get_token();
}

GORO_DECL recv_only<std::monostate> context::done() const noexcept {
    detail::cancel_node* c = n_ ? n_->nearest : nullptr;
    if (!c) return {};  // background: a nil channel, nothing to keep
    n_->add_ref();
    return {&c->done, detail::keep_ref(n_, &detail::ctx_keep::ops)};
}

GORO_DECL detail::cancel_node* context_access::new_cancel_node(const context& parent, std::int64_t deadline_ns) {
    auto* n = new detail::cancel_node();
    n->nearest = n;
    n->timer.owner = n;
    n->timer.fire = &detail::cancel_node::deadline_timer::on_fire;
    detail::ctx_node* p = parent.n_;
    if (p) {
        p->add_ref();
        n->parent = p;
        n->deadline_ns = p->deadline_ns;
        n->ancestor = p->nearest;
    }
    if (deadline_ns < n->deadline_ns) n->deadline_ns = deadline_ns;
    if (detail::cancel_node* a = n->ancestor) {
        context_error perr;
        {
            std::lock_guard g(a->mu);
            perr = a->err.load(std::memory_order_relaxed);  // begun, maybe not yet published
            if (perr == context_error::none) {
                n->next_sibling = a->first_child;
                if (a->first_child) a->first_child->prev_sibling = n;
                a->first_child = n;
                n->linked = true;
                ++a->nchildren;
            }
        }
        if (perr != context_error::none) detail::cancel_tree(n, perr, a->cause, false);
    }
    return n;
}

GORO_DECL void context_access::arm_deadline(detail::cancel_node* n, std::int64_t when_ns) {
    if (when_ns <= now_ns()) {
        detail::cancel_tree(n, context_error::deadline_exceeded, nullptr, true);
        return;
    }
    std::lock_guard g(n->mu);
    if (n->err.load(std::memory_order_relaxed) != context_error::none) return;
    n->refs.fetch_add(detail::ctx_node::timer_ref, std::memory_order_relaxed);
    n->timer_armed = true;
    n->timer.when_ns = when_ns;
    detail::the_scheduler().timers().add(&n->timer);
}

GORO_DECL std::pair<context, cancel_func> with_cancel(const context& parent) {
    detail::cancel_node* n = context_access::new_cancel_node(parent, std::numeric_limits<std::int64_t>::max());
    return {context_access::adopt(n), context_access::make_cancel(n)};
}

GORO_DECL std::pair<context, cancel_func> with_stop_token(const context& parent, std::stop_token token) {
    detail::cancel_node* n = context_access::new_cancel_node(parent, std::numeric_limits<std::int64_t>::max());
    context ctx = context_access::adopt(n);
    cancel_func cancel = context_access::make_cancel(n);
    n->relay.emplace(std::move(token), detail::cancel_node::stop_relay{n});  // may run at once: fine
    return {std::move(ctx), std::move(cancel)};
}

GORO_DECL std::exception_ptr cause(const context& ctx) {
    detail::ctx_node* n = context_access::node(ctx);
    detail::cancel_node* c = n ? n->nearest : nullptr;
    if (!c) return nullptr;
    context_error e = c->published_err();
    if (e == context_error::none) return nullptr;
    if (c->cause) return c->cause;
    return detail::error_of(e);
}

}  // namespace goro

namespace goro::detail {

GORO_DECL std::size_t context_children(const context& ctx) noexcept {
    ctx_node* n = context_access::node(ctx);
    cancel_node* c = n ? n->nearest : nullptr;
    if (!c) return 0;
    std::lock_guard g(c->mu);
    return c->nchildren;
}

}  // namespace goro::detail
#endif  // GORO_BODIES
