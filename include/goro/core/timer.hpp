// goro/core/timer.hpp — the timer heap behind sleep_for, select timeouts and deadlines.
//
// One thread owns the heap and fires timers when they are due. A timer is an
// intrusive `timer_node` that lives inside the awaiter (no allocation); its
// `fire` callback runs on the timer thread, without the heap lock held.
//
// CONTRACT between the timer thread and a node's owner
//   * The timer thread never touches a node after calling its `fire`, so
//     `fire` may free the node (a context's deadline timer drops the
//     reference that keeps its node alive as its last access).
//   * `cancel(node)` returns true when it removed the node before it fired;
//     then `fire` will never run. It returns false when the node was already
//     taken for firing — `fire` may be running right now, or not have
//     started yet: the owner must then learn from `fire`'s own protocol
//     (e.g. a compare-and-swap on a select's state, and `fired_done` set as
//     the callback's last access when it lost; or a reference that `fire`
//     drops) before freeing the node. Both outcomes are decided under the
//     heap lock, so exactly one of "cancel won" and "fire runs" happens.
//   * The same thread also calls a periodic `tick` (every 10 ms while the pool
//     is busy): the scheduler uses it to rescue work stuck behind a task that
//     does not suspend.
//   * While the timers due at one look are being fired the queue is not
//     `quiet()`: a timer taken out of the heap but not yet fired is still a
//     timer that will wake someone (the deadlock watch asks).
//   * A `fire` that makes a task runnable (`ready`) does not hand it to the
//     pool at once: the tasks woken by one batch of due timers are gathered
//     in `timer_wakes` and handed over together after the batch's last
//     `fire` (one hold of the global queue's lock and one wake-up for the
//     batch, not one of each per timer: with 10,000 tickers they were most
//     of the timer thread's time). A woken task runs no sooner, only later
//     by the rest of the batch; `fire` may still free its node.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>

#include <goro/core/linkage.hpp>
#include <goro/core/lock_rank.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/vec.hpp>

namespace goro {
struct task_header;
}

namespace goro::detail {

/// The tasks made runnable by the timers fired in one batch (see CONTRACT).
/// Set on the timer thread while it fires a batch; the scheduler's `ready`
/// appends to it when it is set and belongs to its own timer queue.
struct timer_wakes {
    const void* owner;  // the scheduler whose timer thread gathers
    vec<task_header*> tasks;
};
inline thread_local timer_wakes* tls_timer_wakes = nullptr;

struct timer_node {
    std::int64_t when_ns = 0;                       // CLOCK_MONOTONIC nanoseconds
    void (*fire)(timer_node*) noexcept = nullptr;
    std::size_t heap_index = npos;                  // under the heap lock
    std::atomic<bool> fired_done{false};            // see CONTRACT
    static constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();

    timer_node() = default;
    // Awaiters holding a node may be moved before they suspend (g++ moves the
    // operand of co_await into the frame); a node is never moved once added.
    timer_node(const timer_node& o) noexcept : when_ns(o.when_ns), fire(o.fire) {}
    timer_node& operator=(const timer_node&) = delete;
};

/// A 4-ary min-heap of timer nodes by `when_ns`, each node knowing its
/// index (so a node is removed in O(log n) without a search). Not
/// synchronised: timer_queue holds its lock around every call.
///
/// Each entry keeps the node's deadline beside its pointer: a sift compares
/// deadlines in the heap's own array and never loads a node (with 10,000
/// tickers armed, loading each node's `when_ns` from its scattered state
/// missed the cache at every level and was most of the timer thread's time).
/// Four children per level halve the depth; the four sit in one cache line.
class timer_heap {
    struct entry {
        std::int64_t when;
        timer_node* node;
    };
    static constexpr std::size_t arity = 4;

public:
    void push(timer_node* n);
    /// The earliest node, or null when empty.
    timer_node* front() const noexcept { return nodes_.empty() ? nullptr : nodes_.front().node; }
    /// Removes `n` if it is in the heap; false when it is not (never added, fired, or removed).
    bool remove(timer_node* n) noexcept {
        if (n->heap_index == timer_node::npos) return false;
        remove_at(n->heap_index);
        return true;
    }
    /// Removes and returns the earliest node if it is due at `now_ns`, else null.
    timer_node* pop_due(std::int64_t now_ns) noexcept {
        if (nodes_.empty() || nodes_.front().when > now_ns) return nullptr;
        timer_node* n = nodes_.front().node;
        remove_at(0);
        return n;
    }
    std::size_t size() const noexcept { return nodes_.size(); }
    bool empty() const noexcept { return nodes_.empty(); }

private:
    // Sifts move a hole instead of swapping: each moved entry's node learns
    // its new index once.
    void sift_up(std::size_t i) noexcept;
    void sift_down(std::size_t i) noexcept;
    void place(std::size_t i, const entry& e) noexcept {
        nodes_[i] = e;
        e.node->heap_index = i;
    }
    void remove_at(std::size_t i) noexcept;

    vec<entry> nodes_;
};

class timer_queue {
public:
    using tick_fn = void (*)(void*) noexcept;
    /// Hands a batch's woken tasks to the pool (see CONTRACT).
    using wake_fn = void (*)(void*, task_header* const*, std::size_t) noexcept;

    timer_queue(tick_fn tick, void* tick_arg, wake_fn wake = nullptr);
    ~timer_queue() { stop(); }

    void stop();
    void add(timer_node* n);
    /// True when `n` was removed before it fired (see CONTRACT).
    bool cancel(timer_node* n);
    /// Timers armed (in the heap).
    std::size_t pending() const;
    /// True when no timer is armed and none is being fired: no timer will wake anyone.
    bool quiet() const;

    /// Asks for `tick` calls every 10 ms (set while the pool has work).
    /// Asks for ticks (the scheduler calls it when a worker starts running).
    /// Sequentially consistent with the timer thread's clearing of the flag
    /// before a tick, which then reads the workers' status: either this call
    /// sees the flag cleared (and sets it), or that tick sees the worker
    /// running (and asks again). Relaxed, both could miss: ticks stopped
    /// while a worker ran, and work stuck behind a task that never suspends
    /// was never rescued.
    void want_ticks();

private:
    static constexpr std::int64_t tick_period_ns = 10'000'000;

    void run();

    mutable ranked_lock<std::mutex, lock_rank::timer> mu_;
    std::condition_variable cv_;
    timer_heap heap_;
    bool stopping_ = false;
    std::size_t firing_ = 0;  // nodes taken by the batch being fired (under mu_)
    std::atomic<bool> ticking_{false};
    tick_fn tick_;
    wake_fn wake_;
    void* tick_arg_;
    std::thread thread_;
};

}  // namespace goro::detail

#if GORO_BODIES
namespace goro::detail {

GORO_DECL void timer_heap::push(timer_node* n) {
    nodes_.push_back({n->when_ns, n});
    n->heap_index = nodes_.size() - 1;
    sift_up(nodes_.size() - 1);
}

GORO_DECL void timer_heap::sift_up(std::size_t i) noexcept {
    entry e = nodes_[i];
    while (i > 0) {
        std::size_t p = (i - 1) / arity;
        if (!(e.when < nodes_[p].when)) break;
        place(i, nodes_[p]);
        i = p;
    }
    place(i, e);
}

GORO_DECL void timer_heap::sift_down(std::size_t i) noexcept {
    entry e = nodes_[i];
    const std::size_t n = nodes_.size();
    for (;;) {
        std::size_t first = arity * i + 1;
        if (first >= n) break;
        std::size_t last = std::min(first + arity, n), m = first;
        for (std::size_t c = first + 1; c < last; ++c)
            if (nodes_[c].when < nodes_[m].when) m = c;
        if (!(nodes_[m].when < e.when)) break;
        place(i, nodes_[m]);
        i = m;
    }
    place(i, e);
}

GORO_DECL void timer_heap::remove_at(std::size_t i) noexcept {
    timer_node* n = nodes_[i].node;
    std::size_t last = nodes_.size() - 1;
    if (i != last) {
        nodes_[i] = nodes_[last];
        nodes_.pop_back();
        if (i > 0 && nodes_[i].when < nodes_[(i - 1) / arity].when) sift_up(i);
        else sift_down(i);
    } else {
        nodes_.pop_back();
    }
    n->heap_index = timer_node::npos;
}

GORO_DECL timer_queue::timer_queue(tick_fn tick, void* tick_arg, wake_fn wake)
    : tick_(tick), wake_(wake), tick_arg_(tick_arg) {
    thread_ = std::thread([this] { run(); });
}

GORO_DECL void timer_queue::stop() {
    {
        std::lock_guard g(mu_);
        if (stopping_) return;
        stopping_ = true;
    }
    cv_.notify_all();
    if (!thread_.joinable()) return;
    // Stopped from a callback (std::exit in one): it cannot join itself.
    if (thread_.get_id() == std::this_thread::get_id()) thread_.detach();
    else thread_.join();
}

GORO_DECL void timer_queue::add(timer_node* n) {
    bool earliest;
    {
        std::lock_guard g(mu_);
        n->fired_done.store(false, std::memory_order_relaxed);
        heap_.push(n);
        earliest = heap_.front() == n;
    }
    if (earliest) cv_.notify_one();
}

GORO_DECL bool timer_queue::cancel(timer_node* n) {
    std::lock_guard g(mu_);
    return heap_.remove(n);
}

GORO_DECL std::size_t timer_queue::pending() const {
    std::lock_guard g(mu_);
    return heap_.size();
}

GORO_DECL bool timer_queue::quiet() const {
    std::lock_guard g(mu_);
    return heap_.empty() && firing_ == 0;
}

GORO_DECL void timer_queue::want_ticks() {
    if (ticking_.load(std::memory_order_seq_cst) || ticking_.exchange(true, std::memory_order_seq_cst))
        return;
    { std::lock_guard g(mu_); }  // the timer thread is waiting, or sees the flag
    cv_.notify_one();
}

GORO_DECL void timer_queue::run() {
    vec<timer_node*> due;
    timer_wakes woken{tick_arg_, {}};
    std::int64_t next_tick = 0;
    std::unique_lock<std::mutex> lk(mu_.unranked());  // this thread takes nothing under it
    while (!stopping_) {
        std::int64_t now = now_ns();
        while (timer_node* n = heap_.pop_due(now)) due.push_back(n);
        bool ticking = ticking_.load(std::memory_order_acquire);
        if (!due.empty() || (ticking && now >= next_tick)) {
            firing_ = due.size();
            lk.unlock();
            if (wake_) tls_timer_wakes = &woken;
            for (timer_node* n : due) n->fire(n);
            tls_timer_wakes = nullptr;
            due.clear();
            if (!woken.tasks.empty()) {
                wake_(tick_arg_, woken.tasks.data(), woken.tasks.size());
                woken.tasks.clear();
            }
            if (ticking && now >= next_tick) {
                next_tick = now + tick_period_ns;
                ticking_.store(false, std::memory_order_seq_cst);  // see want_ticks()
                tick_(tick_arg_);  // asks again through want_ticks() while busy
            }
            lk.lock();
            firing_ = 0;
            continue;
        }
        std::int64_t wake = std::numeric_limits<std::int64_t>::max();
        if (!heap_.empty()) wake = heap_.front()->when_ns;
        if (ticking) wake = std::min(wake, next_tick);
        if (wake == std::numeric_limits<std::int64_t>::max()) {
            cv_.wait(lk);
        } else {
            auto d = std::chrono::nanoseconds(wake - now);
            cv_.wait_for(lk, d);
        }
    }
}

}  // namespace goro::detail
#endif  // GORO_BODIES
