// goro/sync/mutex.hpp — `goro::mutex`: a mutual-exclusion lock for goro tasks.
//
//   goro::mutex m;
//   co_await m.lock();  ...  m.unlock();
//   { auto g = co_await m.scoped_lock(); ... }     // unlocked when g goes out of scope
//   if (m.try_lock()) { ... m.unlock(); }
//
// Go's sync.Mutex for coroutines: a task that finds the mutex locked parks
// (wait reason `sync.Mutex.Lock`) instead of blocking its worker thread. Like
// Go's, it is not tied to an owner: any task or thread may unlock it.
//
// FAIRNESS: direct hand-off, always. `unlock` with waiters does not release
// the mutex; it passes ownership to the longest-waiting task, which resumes
// already holding it. A newcomer can take the mutex only while nobody waits,
// so no waiter starves (Go gets the same guarantee from its starvation mode,
// entered after a waiter has waited 1 ms; goro pays the hand-off from the
// start, which costs throughput under heavy contention but keeps FIFO order).
//
// STATE (one word): bit 0 = locked, bits 1.. = number of parked waiters.
//   lock/try_lock fast path: CAS 0 -> 1. unlock fast path: CAS 1 -> 0.
//
// INVARIANTS (under `lock_`): the waiter bits equal the length of the waiter
// list; waiters are counted and linked in one critical section, and unlinked
// and uncounted in one. While waiters exist the locked bit is set (a waiter
// parks only after seeing it set, and unlock hands over instead of clearing it).
//
// THREAD SAFETY: lock order is `lock_` only; a hand-off readies the waiter
// after `lock_` is released. The waiter resumes on whichever worker picks it up.
//
// DESTRUCTION with tasks parked in `lock()` is a bug (they would wait forever):
// the destructor wakes them with `goro::mutex_destroyed` thrown from their
// `co_await m.lock()`.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/waiter_list.hpp>

namespace goro {

/// A `goro::mutex` was destroyed while tasks waited to lock it; thrown from their `lock()`.
class mutex_destroyed : public error {
public:
    using error::error;
};

class mutex;
class cond;

/// Owns a locked `goro::mutex` and unlocks it on destruction (from `co_await m.scoped_lock()`).
/// Movable, like std::unique_lock; `unlock()` releases it early.
class lock_guard {
public:
    lock_guard() noexcept = default;
    explicit lock_guard(goro::mutex& m, std::adopt_lock_t) noexcept : m_(&m) {}
    lock_guard(lock_guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    lock_guard& operator=(lock_guard&& o) noexcept;
    lock_guard(const lock_guard&) = delete;
    lock_guard& operator=(const lock_guard&) = delete;
    ~lock_guard() { release_lock(); }

    /// Unlocks now; throws goro::usage_error when this guard owns nothing.
    void unlock();
    bool owns_lock() const noexcept { return m_ != nullptr; }
    explicit operator bool() const noexcept { return owns_lock(); }
    goro::mutex* mutex() const noexcept { return m_; }

private:
    void release_lock() noexcept;
    goro::mutex* m_ = nullptr;
};

class mutex {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        bool destroyed = false;  // set by ~mutex before the wake-up
    };

public:
    /// Awaiter of `lock()`: resumes holding the mutex. Copyable until it
    /// suspends (g++ may move the operand of co_await).
    class [[nodiscard("goro::mutex::lock: co_await it"), gnu::warn_unused]] lock_operation {
    public:
        using is_goro_awaiter = void;
        explicit lock_operation(mutex& m) noexcept : m_(&m) {}
        bool await_ready() noexcept { return m_->try_lock(); }
        bool await_suspend(std::coroutine_handle<> h) { return m_->enqueue(node_, h); }
        void await_resume() const;

    protected:
        mutex* m_;
        waiter_node node_{};
    };

    /// Awaiter of `scoped_lock()`: like lock_operation, resumes with a guard.
    // warn_unused: `auto g = m.scoped_lock();` (no co_await) locks nothing, and
    // g is never used: the compilers warn "unused variable" (an error under -Werror).
    class [[nodiscard("goro::mutex::scoped_lock: co_await it: auto g = co_await m.scoped_lock()"),
            gnu::warn_unused]] scoped_lock_operation : public lock_operation {
    public:
        using lock_operation::lock_operation;
        [[nodiscard]] lock_guard await_resume() const {
            lock_operation::await_resume();
            return lock_guard(*m_, std::adopt_lock);
        }
    };

    mutex() noexcept = default;
    mutex(const mutex&) = delete;
    mutex& operator=(const mutex&) = delete;

    ~mutex();

    /// `co_await m.lock()`: parks (FIFO) until this task owns the mutex.
    [[nodiscard("goro::mutex::lock: co_await it")]] lock_operation lock() noexcept { return lock_operation(*this); }

    /// `auto g = co_await m.scoped_lock()`: as lock(), returning a guard that unlocks.
    [[nodiscard("goro::mutex::scoped_lock: co_await it")]] scoped_lock_operation scoped_lock() noexcept { return scoped_lock_operation(*this); }

    /// Takes the mutex if it is free and nobody waits; never parks.
    bool try_lock() noexcept {
        std::uint32_t expected = 0;
        return state_.compare_exchange_strong(expected, locked, std::memory_order_acquire, std::memory_order_relaxed);
    }

    /// Releases the mutex, or hands it to the longest waiter. Throws
    /// goro::usage_error when the mutex is not locked.
    void unlock();

    /// True while some task holds the mutex (a hint: stale once read).
    bool is_locked() const noexcept { return state_.load(std::memory_order_relaxed) & locked; }

private:
    friend class cond;
    static constexpr std::uint32_t locked = 1;
    static constexpr std::uint32_t one_waiter = 2;

    /// For goro::cond (a waiter moved from the condition to the mutex: Go's
    /// woken waiter relocks): takes the mutex for `n`'s parked task (true:
    /// the caller readies it), or queues `n` for an unlock's hand-off (false:
    /// the node belongs to the mutex from then on).
    bool lock_for(waiter_node& n) noexcept;

    /// Slow path of lock(): take the mutex, or count and link `n` and park.
    bool enqueue(waiter_node& n, std::coroutine_handle<> h);

    alignas(detail::cache_line) std::atomic<std::uint32_t> state_{0};
    detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    detail::waiter_list<waiter_node> waiters_;  // under lock_
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL lock_guard& lock_guard::operator=(lock_guard&& o) noexcept {
    if (this != &o) {
        release_lock();
        m_ = std::exchange(o.m_, nullptr);
    }
    return *this;
}

GORO_DECL void mutex::lock_operation::await_resume() const {
    if (node_.destroyed)
        throw mutex_destroyed("goro::mutex::lock: the mutex was destroyed while this task waited for it");
}

GORO_DECL mutex::~mutex() {
    detail::wake_destroyed(waiters_, lock_, [](waiter_node& w, std::size_t) noexcept { w.destroyed = true; });
}

GORO_DECL void mutex::unlock() {
    for (;;) {
        std::uint32_t s = state_.load(std::memory_order_relaxed);
        if (!(s & locked)) throw usage_error("goro::mutex::unlock: unlock of an unlocked mutex");
        if (s == locked) {
            if (state_.compare_exchange_weak(s, 0, std::memory_order_release, std::memory_order_relaxed)) return;
            continue;
        }
        waiter_node* w;
        {
            std::lock_guard g(lock_);
            w = waiters_.pop_front();
            if (!w) continue;  // only a racing second unlock (a misuse) gets here; re-check
            // The locked bit stays: ownership passes to `w`. Its critical
            // section sees ours through the scheduler's queue (release/acquire).
            state_.fetch_sub(one_waiter, std::memory_order_release);
        }
        detail::ready(w->task);
        return;
    }
}

GORO_DECL bool mutex::lock_for(waiter_node& n) noexcept {
    std::lock_guard g(lock_);
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
        if (!(s & locked)) {
            if (state_.compare_exchange_weak(s, s | locked, std::memory_order_acquire, std::memory_order_relaxed))
                return true;
        } else if (state_.compare_exchange_weak(s, s + one_waiter, std::memory_order_relaxed,
                                                std::memory_order_relaxed)) {
            break;
        }
    }
    n.task->wait_reason.store(wait_reason::mutex_lock, std::memory_order_relaxed);
    waiters_.push_back(n);
    return false;
}

GORO_DECL bool mutex::enqueue(waiter_node& n, std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::mutex::lock");
    n.task = t;
    detail::park(t, h, wait_reason::mutex_lock);
    std::lock_guard g(lock_);
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
        if (!(s & locked)) {
            // Free now. No one waits (waiters keep the bit set), so no one is bypassed.
            if (state_.compare_exchange_weak(s, s | locked, std::memory_order_acquire, std::memory_order_relaxed)) {
                t->state.store(task_state::running, std::memory_order_relaxed);
                return false;
            }
        } else if (state_.compare_exchange_weak(s, s + one_waiter, std::memory_order_relaxed,
                                                std::memory_order_relaxed)) {
            break;
        }
    }
    waiters_.push_back(n);
    return true;  // published: the unlocker owns the node now
}

GORO_DECL void lock_guard::unlock() {
    if (!m_) throw usage_error("goro::lock_guard::unlock: the guard does not own a mutex");
    std::exchange(m_, nullptr)->unlock();
}

GORO_DECL void lock_guard::release_lock() noexcept {
    // Cannot throw: a guard only ever holds a mutex it locked.
    if (m_) std::exchange(m_, nullptr)->unlock();
}

}  // namespace goro
#endif  // GORO_BODIES
