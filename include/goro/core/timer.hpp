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
//   * A periodic `fire` arms its node again with `rearm_from_fire` instead of
//     `add`: no hold of the queue's lock per fire (with 10,000 tickers that
//     hold was a fifth of the timer thread's time). The node goes back into
//     the heap after the batch's last `fire`, in the one hold of the lock
//     that ends the batch. Until then it counts as armed: `cancel` finds it
//     (its heap_index names its place in the batch) and takes it out, as it
//     would from the heap. The owner calls both `rearm_from_fire` (in its
//     `fire`) and `cancel` under one lock of its own, which orders them.
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
    // heap_index from here up (npos excluded): armed again by its fire, the
    // batch's entry heap_index - rearmed_base (see CONTRACT).
    static constexpr std::size_t rearmed_base = npos / 2;

    timer_node() = default;
    // Awaiters holding a node may be moved before they suspend (g++ moves the
    // operand of co_await into the frame); a node is never moved once added.
    timer_node(const timer_node& o) noexcept : when_ns(o.when_ns), fire(o.fire) {}
    timer_node& operator=(const timer_node&) = delete;
};

/// A 4-ary min-heap of timer nodes by `when_ns`. Not synchronised:
/// timer_queue holds its lock around every call.
///
/// The heap's entries are compact: a deadline and a slot number. A sift
/// compares deadlines in the heap's own array and never loads a node (with
/// 10,000 tickers armed, loading each node's `when_ns` from its scattered
/// state missed the cache at every level). Where each entry sits is kept in
/// the slot table beside it, not in the node: a sift writes the moved
/// entries' new places there, and a node is written only when it comes in
/// (its slot, in heap_index) and when it goes out (npos). Removing a node
/// looks its place up through its slot: O(log n), no search. Four children
/// per level halve the depth; the four sit in one cache line.
class timer_heap {
    struct entry {
        std::int64_t when;
        std::uint32_t slot;
    };
    struct slot_entry {
        timer_node* node;    // null while free
        std::uint32_t pos;   // the node's place in nodes_, while taken
        std::uint32_t next;  // the next free slot, while free
    };
    static constexpr std::size_t arity = 4;
    static constexpr std::uint32_t no_slot = std::numeric_limits<std::uint32_t>::max();

public:
    void push(timer_node* n);
    /// The earliest node, or null when empty.
    timer_node* front() const noexcept { return nodes_.empty() ? nullptr : slots_[nodes_.front().slot].node; }
    /// Removes `n` if it is in the heap; false when it is not (never added, fired, or removed).
    bool remove(timer_node* n) noexcept {
        if (n->heap_index == timer_node::npos) return false;
        remove_at(slots_[n->heap_index].pos);
        return true;
    }
    /// Removes and returns the earliest node if it is due at `now_ns`, else null.
    timer_node* pop_due(std::int64_t now_ns) noexcept {
        if (nodes_.empty() || nodes_.front().when > now_ns) return nullptr;
        return remove_at(0);
    }
    std::size_t size() const noexcept { return nodes_.size(); }
    bool empty() const noexcept { return nodes_.empty(); }
    /// True when `n` is in this heap, its slot naming it and its place naming
    /// its slot (the tests' check of the table).
    bool contains(const timer_node* n) const noexcept {
        const std::size_t id = n->heap_index;
        return id < slots_.size() && slots_[id].node == n && slots_[id].pos < nodes_.size() &&
               nodes_[slots_[id].pos].slot == id;
    }

private:
    // Sifts move a hole instead of swapping: each moved entry's slot learns
    // its new place once.
    void sift_up(std::size_t i) noexcept;
    void sift_down(std::size_t i) noexcept;
    /// The earliest of the children that start at `first` (< size).
    std::size_t min_child(std::size_t first) const noexcept;
    void place(std::size_t i, const entry& e) noexcept {
        nodes_[i] = e;
        slots_[e.slot].pos = static_cast<std::uint32_t>(i);
    }
    timer_node* remove_at(std::size_t i) noexcept;

    vec<entry> nodes_;
    vec<slot_entry> slots_;
    std::uint32_t free_ = no_slot;  // the first free slot
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
    /// From `n`'s own `fire`, on the timer thread, under the owner's lock
    /// that it also holds around cancel(n): arms `n` again for `when` (the
    /// node goes back into the heap at the batch's end; see CONTRACT).
    void rearm_from_fire(timer_node* n, std::int64_t when) noexcept;
    /// In a `fire`: the time (now_ns) at which the batch was taken, which a
    /// periodic timer schedules its next period from (one clock read a
    /// batch, not one a fire).
    std::int64_t batch_now() const noexcept { return batch_now_; }
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
    // The batch being fired. Taken and given back under mu_; fired unlocked.
    // cancel() clears the entry of a node armed again (under mu_ and the
    // owner's lock, after that node's fire read its entry).
    vec<timer_node*> due_;
    // Timer thread only: the entry being fired, and the entries armed again.
    std::size_t fire_index_ = 0;
    std::int64_t batch_now_ = 0;
    vec<std::size_t> rearmed_;
    std::atomic<bool> ticking_{false};
    tick_fn tick_;
    wake_fn wake_;
    void* tick_arg_;
    std::thread thread_;
};

}  // namespace goro::detail

#if GORO_BODIES
#include <stdexcept>

namespace goro::detail {

GORO_DECL void timer_heap::push(timer_node* n) {
    std::uint32_t id = free_;
    if (id != no_slot) {
        free_ = slots_[id].next;
    } else {
        if (slots_.size() >= no_slot) throw std::length_error("goro: timer heap: too many timers armed");
        id = static_cast<std::uint32_t>(slots_.size());
        slots_.push_back({});
    }
    try {
        nodes_.push_back({n->when_ns, id});
    } catch (...) {
        slots_[id].next = free_;
        free_ = id;
        throw;
    }
    slots_[id].node = n;
    n->heap_index = id;
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

GORO_DECL std::size_t timer_heap::min_child(std::size_t first) const noexcept {
    if (first + arity <= nodes_.size()) {
        // Four children (nearly always): a tournament of selects, no branch
        // on deadlines that a sift could mispredict at every level.
        const entry* c = &nodes_[first];
        const std::size_t a = c[1].when < c[0].when ? 1 : 0;
        const std::size_t b = c[3].when < c[2].when ? 3 : 2;
        return first + (c[b].when < c[a].when ? b : a);
    }
    std::size_t m = first;
    for (std::size_t c = first + 1; c < nodes_.size(); ++c)
        if (nodes_[c].when < nodes_[m].when) m = c;
    return m;
}

GORO_DECL void timer_heap::sift_down(std::size_t i) noexcept {
    entry e = nodes_[i];
    const std::size_t n = nodes_.size();
    for (;;) {
        std::size_t first = arity * i + 1;
        if (first >= n) break;
        const std::size_t m = min_child(first);
        if (!(nodes_[m].when < e.when)) break;
        place(i, nodes_[m]);
        i = m;
    }
    place(i, e);
}

GORO_DECL timer_node* timer_heap::remove_at(std::size_t i) noexcept {
    const std::uint32_t id = nodes_[i].slot;
    timer_node* n = slots_[id].node;
    std::size_t last = nodes_.size() - 1;
    if (i == 0 && last > 0) {
        // The earliest goes (a fire): the hole goes down to a leaf by the
        // earlier child, without comparing the last entry at each level,
        // which then sifts up from there, where it nearly always belongs.
        const entry e = nodes_[last];
        nodes_.pop_back();
        for (std::size_t first = 1; first < last; first = arity * i + 1) {
            const std::size_t m = min_child(first);
            place(i, nodes_[m]);
            i = m;
        }
        nodes_[i] = e;
        sift_up(i);
    } else if (i != last) {
        nodes_[i] = nodes_[last];
        nodes_.pop_back();
        if (i > 0 && nodes_[i].when < nodes_[(i - 1) / arity].when) sift_up(i);
        else sift_down(i);
    } else {
        nodes_.pop_back();
    }
    slots_[id].node = nullptr;
    slots_[id].next = free_;
    free_ = id;
    n->heap_index = timer_node::npos;
    return n;
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
    const std::size_t i = n->heap_index;
    if (i != timer_node::npos && i >= timer_node::rearmed_base) {  // armed again by its fire, in the batch
        due_[i - timer_node::rearmed_base] = nullptr;
        n->heap_index = timer_node::npos;
        return true;
    }
    return heap_.remove(n);
}

GORO_DECL void timer_queue::rearm_from_fire(timer_node* n, std::int64_t when) noexcept {
    n->when_ns = when;
    n->heap_index = timer_node::rearmed_base + fire_index_;
    rearmed_.push_back(fire_index_);  // reserved for the whole batch
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
    timer_wakes woken{tick_arg_, {}};
    std::int64_t next_tick = 0;
    std::unique_lock<std::mutex> lk(mu_.unranked());  // this thread takes nothing under it
    while (!stopping_) {
        std::int64_t now = now_ns();
        while (timer_node* n = heap_.pop_due(now)) due_.push_back(n);
        bool ticking = ticking_.load(std::memory_order_acquire);
        if (!due_.empty() || (ticking && now >= next_tick)) {
            firing_ = due_.size();
            rearmed_.reserve(due_.size());
            batch_now_ = now;
            lk.unlock();
            if (wake_) tls_timer_wakes = &woken;
            // An entry is read before its fire; cancel() clears only the
            // entries of nodes that their fire armed again (see due_).
            for (std::size_t k = 0, n = due_.size(); k < n; ++k) {
                fire_index_ = k;
                timer_node* t = due_[k];
                t->fire(t);
            }
            tls_timer_wakes = nullptr;
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
            for (std::size_t k : rearmed_) {
                timer_node* t = due_[k];
                if (!t) continue;  // cancelled meanwhile
                t->fired_done.store(false, std::memory_order_relaxed);
                heap_.push(t);
            }
            rearmed_.clear();
            due_.clear();
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
