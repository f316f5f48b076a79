// goro/sync/cond.hpp — `goro::cond`: a condition variable for goro tasks (Go's sync.Cond).
//
//   goro::mutex m;
//   goro::cond cv(m);
//   {
//       auto g = co_await m.scoped_lock();
//       while (!ready) co_await cv.wait();   // unlocks m, parks, resumes holding m again
//       ...
//   }
//   // elsewhere, with or without m held:
//   ready = true; cv.signal();               // wakes one waiter (the longest waiting)
//   cv.broadcast();                          // wakes them all
//
// SEMANTICS (Go's): wait() must be called with `m` held (it throws
// goro::usage_error otherwise, where Go panics with "unlock of unlocked
// mutex"). It queues the task on the condition, THEN unlocks m, so a signal
// sent after the unlock cannot be missed, and parks (wait reason
// `sync.Cond.Wait`). A woken waiter relocks m before wait() returns. Waiters
// are woken in FIFO order; a signal with nobody waiting does nothing (it is
// not remembered). As in Go, wake-ups are not spurious, but another task may
// change the state between the signal and the relock: wait in a loop.
//
// HOW THE RELOCK WORKS (wait morphing): signal() does not ready the waiter to
// fight for the mutex; it moves the waiter onto the mutex, in one step: if the
// mutex is free the waiter is given it and readied, else it joins the mutex's
// queue (its wait reason turns to `sync.Mutex.Lock`, where a Go dump would show
// the woken goroutine) and is handed the mutex by an unlock. So broadcast()
// wakes one task at a time as the mutex comes free, not a herd.
//
// LOCK ORDER: the condition's `lock_` and the mutex's lock are never held
// together (a waiter is unlinked from the condition, then given to the mutex).
//
// DESTRUCTION with tasks waiting is a bug: they are given the mutex (as by a
// broadcast), then goro::cond_destroyed is thrown from their wait(), holding m.
#pragma once

#include <coroutine>
#include <mutex>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/waiter_list.hpp>
#include <goro/sync/mutex.hpp>

namespace goro {

/// A `goro::cond` was destroyed while tasks waited on it; thrown from their
/// wait(), which has relocked the mutex.
class cond_destroyed : public error {
public:
    using error::error;
};

class cond {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        mutex::waiter_node relock{};  // the same task's node on the mutex, once signalled
        bool destroyed = false;
    };

public:
    /// Awaiter of wait(): resumes holding the mutex.
    class wait_operation {
    public:
        using is_goro_awaiter = void;
        explicit wait_operation(cond& c) noexcept : c_(&c) {}
        bool await_ready() const;
        void await_suspend(std::coroutine_handle<> h) { c_->enqueue(node_, h); }
        void await_resume() const;

    private:
        cond* c_;
        waiter_node node_{};
    };

    /// A condition on `m`, which must outlive it.
    explicit cond(goro::mutex& m) noexcept : m_(&m) {}
    cond(const cond&) = delete;
    cond& operator=(const cond&) = delete;

    ~cond();

    /// `co_await cv.wait()` with the mutex held: unlocks it, parks until
    /// signalled, and resumes holding it again (Go's Cond.Wait).
    [[nodiscard("goro::cond::wait: co_await it")]] wait_operation wait() noexcept { return wait_operation(*this); }

    /// Wakes the longest-waiting task, if any (Go's Cond.Signal).
    void signal() noexcept;

    /// Wakes every waiting task (Go's Cond.Broadcast); they take the mutex in FIFO order.
    void broadcast() noexcept;

    /// The mutex this condition waits on.
    goro::mutex& mutex() const noexcept { return *m_; }

private:
    void enqueue(waiter_node& n, std::coroutine_handle<> h);

    /// Moves each node onto the mutex; readies the one that gets it at once.
    void hand_to_mutex(detail::waiter_list<waiter_node>& list, bool destroyed) noexcept;

    goro::mutex* m_;
    detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    detail::waiter_list<waiter_node> waiters_;  // under lock_
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL bool cond::wait_operation::await_ready() const {
    if (!c_->m_->is_locked())
        throw usage_error("goro::cond::wait: the mutex is not locked (wait must be called holding it)");
    return false;
}

GORO_DECL void cond::wait_operation::await_resume() const {
    if (node_.relock.destroyed)
        throw mutex_destroyed("goro::cond::wait: the mutex was destroyed while this task waited to relock it");
    if (node_.destroyed)
        throw cond_destroyed("goro::cond::wait: the cond was destroyed while this task waited on it");
}

GORO_DECL cond::~cond() {
    detail::waiter_list<waiter_node> all;
    {
        std::lock_guard g(lock_);
        all = std::move(waiters_);
    }
    hand_to_mutex(all, true);
}

GORO_DECL void cond::signal() noexcept {
    detail::waiter_list<waiter_node> one;
    {
        std::lock_guard g(lock_);
        if (waiter_node* w = waiters_.pop_front()) one.push_back(*w);
    }
    hand_to_mutex(one, false);
}

GORO_DECL void cond::broadcast() noexcept {
    detail::waiter_list<waiter_node> all;
    {
        std::lock_guard g(lock_);
        all = std::move(waiters_);
    }
    hand_to_mutex(all, false);
}

GORO_DECL void cond::enqueue(waiter_node& n, std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::cond::wait");
    n.task = t;
    n.relock.task = t;
    detail::park(t, h, wait_reason::cond_wait);
    goro::mutex* m = m_;
    {
        std::lock_guard g(lock_);
        waiters_.push_back(n);
    }
    // Published: `n` (and this awaiter) may be gone once the mutex is free.
    // Queued first, unlocked second: a signal after the unlock finds us.
    m->unlock();
}

GORO_DECL void cond::hand_to_mutex(detail::waiter_list<waiter_node>& list, bool destroyed) noexcept {
    goro::mutex* m = m_;
    while (waiter_node* w = list.pop_front()) {
        w->destroyed = destroyed;
        task_header* t = w->task;
        // After lock_for the node may belong to the mutex (and die with a
        // resumed frame): `list` was advanced first, and only `t` is used.
        if (m->lock_for(w->relock)) detail::ready(t);
    }
}

}  // namespace goro
#endif  // GORO_BODIES
