// goro/sync/rw_mutex.hpp — `goro::rw_mutex`: a reader/writer lock for goro tasks.
//
//   goro::rw_mutex m;
//   co_await m.lock_shared();  ... m.unlock_shared();      // many readers at once
//   co_await m.lock();         ... m.unlock();             // one writer, no readers
//   { auto g = co_await m.scoped_lock_shared(); ... }      // guards unlock on scope exit
//   { auto g = co_await m.scoped_lock(); ... }
//   m.try_lock(), m.try_lock_shared()
//
// Go's sync.RWMutex, with its rule that a pending writer blocks new readers:
// once a writer has called lock(), a later lock_shared() parks until that
// writer has had the lock and released it, so a steady stream of readers
// cannot starve a writer. When the writer unlocks, every reader that parked
// meanwhile is admitted at once (before the next writer), as in Go; the next
// writer then waits for those readers to leave.
//
// Wait reasons, in Go's words (a Go dump shows the same):
//   sync.RWMutex.RLock  a reader parked behind a writer (holding or pending);
//   sync.RWMutex.Lock   the pending writer, waiting for the readers to leave;
//   sync.Mutex.Lock     a writer queued behind another writer (Go's writers
//                       first take the RWMutex's inner sync.Mutex).
//
// STATE (under `lock_`, a spinlock held a few instructions):
//   readers_       readers holding the lock;
//   writer_        a writer holds it;
//   pending_       the writer that announced itself and waits for readers_ to
//                  reach 0 (null when none); while set, readers park;
//   rq_ / wq_      parked readers / writers queued behind pending_ (FIFO).
// INVARIANTS: writer_ implies readers_ == 0 and pending_ == null; pending_
// implies readers_ > 0; wq_ non-empty implies writer_ or pending_; rq_
// non-empty implies writer_ or pending_.
//
// Like Go's, the lock is not tied to a task: any task or thread may unlock.
// Tasks are readied only after `lock_` is released.
//
// DESTRUCTION with tasks parked is a bug: they are woken with
// goro::rw_mutex_destroyed thrown from their lock call.
#pragma once

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

/// A `goro::rw_mutex` was destroyed while tasks waited for it; thrown from their lock call.
class rw_mutex_destroyed : public error {
public:
    using error::error;
};

class rw_mutex;

/// Owns a `goro::rw_mutex` (exclusively, or shared) and releases it on
/// destruction; obtained only from `co_await m.scoped_lock()` /
/// `co_await m.scoped_lock_shared()`. Movable; `unlock()` releases it early.
template <bool Shared>
class rw_lock_guard {
public:
    rw_lock_guard() noexcept = default;
    rw_lock_guard(rw_lock_guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    rw_lock_guard& operator=(rw_lock_guard&& o) noexcept {
        if (this != &o) {
            release_lock();
            m_ = std::exchange(o.m_, nullptr);
        }
        return *this;
    }
    rw_lock_guard(const rw_lock_guard&) = delete;
    rw_lock_guard& operator=(const rw_lock_guard&) = delete;
    ~rw_lock_guard() { release_lock(); }

    /// Releases now; throws goro::usage_error when this guard owns nothing.
    inline void unlock();
    bool owns_lock() const noexcept { return m_ != nullptr; }
    explicit operator bool() const noexcept { return owns_lock(); }
    rw_mutex* mutex() const noexcept { return m_; }

private:
    friend class rw_mutex;
    explicit rw_lock_guard(rw_mutex& m) noexcept : m_(&m) {}
    inline void release_lock() noexcept;
    rw_mutex* m_ = nullptr;
};

class rw_mutex {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        bool destroyed = false;
    };

public:
    /// Awaiter of lock() (Shared = false) and lock_shared() (true): resumes
    /// holding the lock. Copyable until it suspends.
    template <bool Shared>
    class lock_operation {
    public:
        using is_goro_awaiter = void;
        explicit lock_operation(rw_mutex& m) noexcept : m_(&m) {}
        bool await_ready() noexcept { return Shared ? m_->try_lock_shared() : m_->try_lock(); }
        bool await_suspend(std::coroutine_handle<> h) { return m_->enqueue(node_, h, Shared); }
        void await_resume() const {
            if (node_.destroyed)
                throw rw_mutex_destroyed(Shared ? "goro::rw_mutex::lock_shared: the mutex was destroyed while this task waited"
                                                : "goro::rw_mutex::lock: the mutex was destroyed while this task waited");
        }

    protected:
        rw_mutex* m_;
        waiter_node node_{};
    };

    /// Awaiter of scoped_lock() / scoped_lock_shared(): resumes with a guard.
    template <bool Shared>
    class scoped_lock_operation : public lock_operation<Shared> {
    public:
        using lock_operation<Shared>::lock_operation;
        [[nodiscard]] rw_lock_guard<Shared> await_resume() const {
            lock_operation<Shared>::await_resume();
            return rw_lock_guard<Shared>(*this->m_);
        }
    };

    rw_mutex() noexcept = default;
    rw_mutex(const rw_mutex&) = delete;
    rw_mutex& operator=(const rw_mutex&) = delete;

    ~rw_mutex();

    /// `co_await m.lock()` (RWMutex.Lock): parks until this task holds the lock alone.
    [[nodiscard("goro::rw_mutex::lock: co_await it")]] lock_operation<false> lock() noexcept {
        return lock_operation<false>(*this);
    }
    /// `co_await m.lock_shared()` (RWMutex.RLock): parks while a writer holds or waits for the lock.
    [[nodiscard("goro::rw_mutex::lock_shared: co_await it")]] lock_operation<true> lock_shared() noexcept {
        return lock_operation<true>(*this);
    }
    /// `auto g = co_await m.scoped_lock()`: as lock(), returning a guard that unlocks.
    [[nodiscard("goro::rw_mutex::scoped_lock: co_await it, and keep the guard")]] scoped_lock_operation<false>
    scoped_lock() noexcept {
        return scoped_lock_operation<false>(*this);
    }
    /// `auto g = co_await m.scoped_lock_shared()`: as lock_shared(), returning a guard.
    [[nodiscard("goro::rw_mutex::scoped_lock_shared: co_await it, and keep the guard")]] scoped_lock_operation<true>
    scoped_lock_shared() noexcept {
        return scoped_lock_operation<true>(*this);
    }

    /// Takes the lock if nobody holds or waits for it (RWMutex.TryLock); never parks.
    bool try_lock() noexcept;

    /// Takes a read lock if no writer holds or waits (RWMutex.TryRLock); never parks.
    bool try_lock_shared() noexcept;

    /// Releases the write lock (RWMutex.Unlock): admits every parked reader,
    /// else hands the lock to the next writer. Throws goro::usage_error when
    /// no writer holds it.
    void unlock();

    /// Releases a read lock (RWMutex.RUnlock); the last reader out hands the
    /// lock to a pending writer. Throws goro::usage_error when no reader holds it.
    void unlock_shared();

private:
    bool enqueue(waiter_node& n, std::coroutine_handle<> h, bool shared);

    mutable detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    std::int64_t readers_ = 0;
    bool writer_ = false;
    waiter_node* pending_ = nullptr;
    detail::waiter_list<waiter_node> rq_;
    detail::waiter_list<waiter_node> wq_;
};

template <bool Shared>
inline void rw_lock_guard<Shared>::unlock() {
    if (!m_) throw usage_error("goro::rw_lock_guard::unlock: the guard does not own an rw_mutex");
    rw_mutex* m = std::exchange(m_, nullptr);
    if constexpr (Shared) m->unlock_shared();
    else m->unlock();
}

template <bool Shared>
inline void rw_lock_guard<Shared>::release_lock() noexcept {
    // Cannot throw: a guard only ever holds a lock it took.
    if (!m_) return;
    rw_mutex* m = std::exchange(m_, nullptr);
    if constexpr (Shared) m->unlock_shared();
    else m->unlock();
}

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL rw_mutex::~rw_mutex() {
    detail::waiter_list<waiter_node> all;
    {
        std::lock_guard g(lock_);
        if (pending_) all.push_back(*std::exchange(pending_, nullptr));
        all.splice_back(wq_);
        all.splice_back(rq_);
    }
    all.wake_all([](waiter_node& w) noexcept { w.destroyed = true; });
}

GORO_DECL bool rw_mutex::try_lock() noexcept {
    std::lock_guard g(lock_);
    if (writer_ || pending_ || readers_ != 0) return false;
    writer_ = true;
    return true;
}

GORO_DECL bool rw_mutex::try_lock_shared() noexcept {
    std::lock_guard g(lock_);
    if (writer_ || pending_) return false;
    ++readers_;
    return true;
}

GORO_DECL void rw_mutex::unlock() {
    detail::waiter_list<waiter_node> wake;
    {
        std::lock_guard g(lock_);
        if (!writer_) throw usage_error("goro::rw_mutex::unlock: unlock of an rw_mutex not locked for writing");
        writer_ = false;
        while (waiter_node* r = rq_.pop_front()) {
            ++readers_;
            wake.push_back(*r);
        }
        if (waiter_node* w = wq_.pop_front()) {
            if (readers_ == 0) {
                writer_ = true;
                wake.push_back(*w);
            } else {
                // The next writer now waits for the readers just admitted.
                pending_ = w;
                w->task->wait_reason.store(wait_reason::rw_mutex_lock, std::memory_order_relaxed);
            }
        }
    }
    wake.wake_all();
}

GORO_DECL void rw_mutex::unlock_shared() {
    waiter_node* w = nullptr;
    {
        std::lock_guard g(lock_);
        if (readers_ == 0)
            throw usage_error("goro::rw_mutex::unlock_shared: unlock_shared of an rw_mutex not locked for reading");
        if (--readers_ == 0 && pending_) {
            w = std::exchange(pending_, nullptr);
            writer_ = true;
        }
    }
    if (w) detail::ready(w->task);
}

GORO_DECL bool rw_mutex::enqueue(waiter_node& n, std::coroutine_handle<> h, bool shared) {
    task_header* t = detail::current_task_or_throw(shared ? "goro::rw_mutex::lock_shared" : "goro::rw_mutex::lock");
    n.task = t;
    std::lock_guard g(lock_);
    if (shared) {
        if (!writer_ && !pending_) {  // released meanwhile
            ++readers_;
            return false;
        }
        detail::park(t, h, wait_reason::rw_mutex_rlock);
        rq_.push_back(n);
        return true;
    }
    if (!writer_ && !pending_) {
        if (readers_ == 0) {
            writer_ = true;
            return false;
        }
        detail::park(t, h, wait_reason::rw_mutex_lock);  // announced: new readers now park
        pending_ = &n;
        return true;
    }
    detail::park(t, h, wait_reason::mutex_lock);  // behind another writer: Go's w.Lock()
    wq_.push_back(n);
    return true;
}

}  // namespace goro
#endif  // GORO_BODIES
