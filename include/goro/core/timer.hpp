// goro/core/timer.hpp — the timer heap behind sleep_for, select timeouts and deadlines.
//
// One thread owns the heap and fires timers when they are due. A timer is an
// intrusive `timer_node` that lives inside the awaiter (no allocation); its
// `fire` callback runs on the timer thread, without the heap lock held.
//
// CONTRACT between the timer thread and a node's owner
//   * The timer thread never touches a node after calling its `fire`.
//   * `cancel(node)` returns true when it removed the node before it fired;
//     then `fire` will never run. It returns false when the node was already
//     taken for firing: the owner must then learn from `fire`'s own protocol
//     (e.g. a compare-and-swap on a select's state, and `fired_done` set as
//     the callback's last access when it lost) before freeing the node.
//   * The same thread also calls a periodic `tick` (every 10 ms while the pool
//     is busy): the scheduler uses it to rescue work stuck behind a task that
//     does not suspend.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include <goro/core/lock_rank.hpp>
#include <goro/core/platform.hpp>

namespace goro::detail {

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

class timer_queue {
public:
    using tick_fn = void (*)(void*) noexcept;

    timer_queue(tick_fn tick, void* tick_arg) : tick_(tick), tick_arg_(tick_arg) {
        thread_ = std::thread([this] { run(); });
    }
    ~timer_queue() { stop(); }

    void stop() {
        {
            std::lock_guard g(mu_);
            if (stopping_) return;
            stopping_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

    void add(timer_node* n) {
        bool earliest;
        {
            std::lock_guard g(mu_);
            n->fired_done.store(false, std::memory_order_relaxed);
            n->heap_index = heap_.size();
            heap_.push_back(n);
            sift_up(n->heap_index);
            earliest = heap_.front() == n;
        }
        if (earliest) cv_.notify_one();
    }

    /// True when `n` was removed before it fired (see CONTRACT).
    bool cancel(timer_node* n) {
        std::lock_guard g(mu_);
        if (n->heap_index == timer_node::npos) return false;
        remove_at(n->heap_index);
        return true;
    }

    std::size_t pending() const {
        std::lock_guard g(mu_);
        return heap_.size();
    }

    /// Asks for `tick` calls every 10 ms (set while the pool has work).
    /// Asks for ticks (the scheduler calls it when a worker starts running).
    /// Sequentially consistent with the timer thread's clearing of the flag
    /// before a tick, which then reads the workers' status: either this call
    /// sees the flag cleared (and sets it), or that tick sees the worker
    /// running (and asks again). Relaxed, both could miss: ticks stopped
    /// while a worker ran, and work stuck behind a task that never suspends
    /// was never rescued.
    void want_ticks() {
        if (ticking_.load(std::memory_order_seq_cst) || ticking_.exchange(true, std::memory_order_seq_cst))
            return;
        { std::lock_guard g(mu_); }  // the timer thread is waiting, or sees the flag
        cv_.notify_one();
    }

private:
    static constexpr std::int64_t tick_period_ns = 10'000'000;

    void run() {
        std::vector<timer_node*> due;
        std::int64_t next_tick = 0;
        std::unique_lock<std::mutex> lk(mu_.unranked());  // this thread takes nothing under it
        while (!stopping_) {
            std::int64_t now = now_ns();
            while (!heap_.empty() && heap_.front()->when_ns <= now) {
                timer_node* n = heap_.front();
                remove_at(0);
                due.push_back(n);
            }
            bool ticking = ticking_.load(std::memory_order_acquire);
            if (!due.empty() || (ticking && now >= next_tick)) {
                lk.unlock();
                for (timer_node* n : due) n->fire(n);
                due.clear();
                if (ticking && now >= next_tick) {
                    next_tick = now + tick_period_ns;
                    ticking_.store(false, std::memory_order_seq_cst);  // see want_ticks()
                    tick_(tick_arg_);  // asks again through want_ticks() while busy
                }
                lk.lock();
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

    bool less(std::size_t a, std::size_t b) const { return heap_[a]->when_ns < heap_[b]->when_ns; }
    void swap_at(std::size_t a, std::size_t b) {
        std::swap(heap_[a], heap_[b]);
        heap_[a]->heap_index = a;
        heap_[b]->heap_index = b;
    }
    void sift_up(std::size_t i) {
        while (i > 0) {
            std::size_t p = (i - 1) / 2;
            if (!less(i, p)) break;
            swap_at(i, p);
            i = p;
        }
    }
    void sift_down(std::size_t i) {
        for (;;) {
            std::size_t l = 2 * i + 1, r = l + 1, m = i;
            if (l < heap_.size() && less(l, m)) m = l;
            if (r < heap_.size() && less(r, m)) m = r;
            if (m == i) return;
            swap_at(i, m);
            i = m;
        }
    }
    void remove_at(std::size_t i) {
        timer_node* n = heap_[i];
        std::size_t last = heap_.size() - 1;
        if (i != last) {
            swap_at(i, last);
            heap_.pop_back();
            sift_down(i);
            sift_up(i);
        } else {
            heap_.pop_back();
        }
        n->heap_index = timer_node::npos;
    }

    mutable ranked_lock<std::mutex, lock_rank::timer> mu_;
    std::condition_variable cv_;
    std::vector<timer_node*> heap_;
    bool stopping_ = false;
    std::atomic<bool> ticking_{false};
    tick_fn tick_;
    void* tick_arg_;
    std::thread thread_;
};

}  // namespace goro::detail
