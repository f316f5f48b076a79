// goro/sync/semaphore.hpp — `goro::semaphore`: a counting semaphore for goro tasks.
//
//   goro::semaphore slots(4);          // four permits
//   co_await slots.acquire();          // or acquire(n) for n permits at once
//   ...
//   slots.release();                   // or release(n)
//   { auto p = co_await slots.scoped_acquire(); ... }   // a permit: released when p goes
//
// A task that cannot get its permits parks (wait reason `semacquire`, Go's
// word for its runtime semaphore). Like golang.org/x/sync/semaphore.Weighted,
// waiters are served strictly in FIFO order: a newcomer never overtakes a
// parked waiter, even when enough permits are free for the newcomer but not for
// the waiter at the head (so a large acquire cannot starve behind small ones).
//
// INVARIANTS (under `lock_`): `count_` ≥ 0 is the number of free permits; when
// the waiter list is non-empty, its head needs more than `count_`.
//
// THREAD SAFETY: every operation takes `lock_` (a spinlock, a few instructions
// long); `release` collects the waiters it satisfies, unlocks, then readies
// them in FIFO order. Any thread may release; acquire is awaited in a goro task.
//
// DESTRUCTION with tasks parked in `acquire` is a bug: the destructor wakes them
// with `goro::semaphore_destroyed` thrown from their `co_await s.acquire()`.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/waiter_list.hpp>

namespace goro {

/// A `goro::semaphore` was destroyed while tasks waited on it; thrown from their `acquire()`.
class semaphore_destroyed : public error {
public:
    using error::error;
};

class semaphore {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        std::int64_t want = 0;
        bool destroyed = false;  // set by ~semaphore before the wake-up
    };

public:
    /// Awaiter of `acquire(n)`. Copyable until it suspends (g++ may move the
    /// operand of co_await); the node is linked only in await_suspend.
    class [[nodiscard("goro::semaphore::acquire: co_await it"), gnu::warn_unused]] acquire_operation {
    public:
        using is_goro_awaiter = void;
        acquire_operation(semaphore& s, std::int64_t n) noexcept : s_(&s) { node_.want = n; }
        bool await_ready() noexcept { return s_->try_acquire(node_.want); }
        bool await_suspend(std::coroutine_handle<> h) { return s_->enqueue(node_, h); }
        void await_resume() const;

    protected:
        semaphore* s_;
        waiter_node node_{};
    };

    /// Holds `count()` permits of a semaphore and releases them on
    /// destruction; obtained from `co_await s.scoped_acquire(n)` or
    /// `s.try_scoped_acquire(n)`. Movable; `release()` gives them back early.
    class permit {
    public:
        permit() noexcept = default;
        permit(permit&& o) noexcept : s_(std::exchange(o.s_, nullptr)), n_(std::exchange(o.n_, 0)) {}
        permit& operator=(permit&& o) noexcept;
        permit(const permit&) = delete;
        permit& operator=(const permit&) = delete;
        ~permit() { give_back(); }

        /// Releases the permits now; throws goro::usage_error when this permit holds none.
        void release();
        bool owns() const noexcept { return s_ != nullptr; }
        explicit operator bool() const noexcept { return owns(); }
        /// The number of permits held (0 when empty).
        std::int64_t count() const noexcept { return s_ ? n_ : 0; }

    private:
        friend class semaphore;
        permit(semaphore& s, std::int64_t n) noexcept : s_(&s), n_(n) {}
        void give_back() noexcept {
            // Cannot throw: the permits were taken from this semaphore.
            if (s_) std::exchange(s_, nullptr)->release_nothrow(std::exchange(n_, 0));
        }
        semaphore* s_ = nullptr;
        std::int64_t n_ = 0;
    };

    /// Awaiter of `scoped_acquire(n)`: as acquire_operation, resuming with a permit.
    class scoped_acquire_operation : public acquire_operation {
    public:
        using acquire_operation::acquire_operation;
        [[nodiscard]] permit await_resume() const {
            acquire_operation::await_resume();
            return permit(*s_, node_.want);
        }
    };

    /// A semaphore with `initial` (≥ 0) free permits.
    explicit semaphore(std::int64_t initial);
    semaphore(const semaphore&) = delete;
    semaphore& operator=(const semaphore&) = delete;

    ~semaphore();

    /// `co_await s.acquire(n)`: parks (FIFO) until `n` permits are taken.
    /// Throws goro::usage_error (at once) for n < 0; n == 0 waits only for its turn.
    [[nodiscard("goro::semaphore::acquire: co_await it")]] acquire_operation acquire(std::int64_t n = 1) {
        check(n, "goro::semaphore::acquire");
        return acquire_operation(*this, n);
    }

    /// `auto p = co_await s.scoped_acquire(n)`: as acquire(n), returning a
    /// permit that releases the n permits when it goes out of scope.
    [[nodiscard("goro::semaphore::scoped_acquire: co_await it, and keep the permit")]] scoped_acquire_operation
    scoped_acquire(std::int64_t n = 1) {
        check(n, "goro::semaphore::scoped_acquire");
        return scoped_acquire_operation(*this, n);
    }

    /// A permit for `n` permits if they are free and nobody waits, else an
    /// empty one (false); never parks.
    [[nodiscard("goro::semaphore::try_scoped_acquire: keep the permit")]] permit try_scoped_acquire(std::int64_t n = 1);

    /// Takes `n` permits when they are free and nobody waits; never parks.
    bool try_acquire(std::int64_t n = 1);

    /// Returns `n` permits and wakes, in FIFO order, every waiter they now satisfy.
    void release(std::int64_t n = 1) {
        check(n, "goro::semaphore::release");
        add_permits(n, true);
    }

private:
    /// release(n) for permits known to have been taken (cannot overflow).
    void release_nothrow(std::int64_t n) noexcept { add_permits(n, false); }

    void add_permits(std::int64_t n, bool check_overflow);

public:
    /// Free permits now (a hint: stale once read).
    std::int64_t available() const noexcept {
        std::lock_guard g(lock_);
        return count_;
    }

private:
    static void check(std::int64_t n, const char* op);

    bool enqueue(waiter_node& n, std::coroutine_handle<> h);

    mutable detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    std::int64_t count_;
    detail::waiter_list<waiter_node> waiters_;  // under lock_
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL void semaphore::acquire_operation::await_resume() const {
    if (node_.destroyed)
        throw semaphore_destroyed("goro::semaphore::acquire: the semaphore was destroyed while this task waited");
}

GORO_DECL semaphore::permit& semaphore::permit::operator=(permit&& o) noexcept {
    if (this != &o) {
        give_back();
        s_ = std::exchange(o.s_, nullptr);
        n_ = std::exchange(o.n_, 0);
    }
    return *this;
}

GORO_DECL void semaphore::permit::release() {
    if (!s_) throw usage_error("goro::semaphore::permit::release: the permit holds nothing");
    give_back();
}

GORO_DECL semaphore::semaphore(std::int64_t initial) : count_(initial) {
    if (initial < 0) throw usage_error("goro::semaphore: negative initial count " + std::to_string(initial));
}

GORO_DECL semaphore::~semaphore() {
    detail::wake_destroyed(waiters_, lock_, [](waiter_node& w, std::size_t) noexcept { w.destroyed = true; });
}

GORO_DECL semaphore::permit semaphore::try_scoped_acquire(std::int64_t n) {
    check(n, "goro::semaphore::try_scoped_acquire");
    if (!try_acquire(n)) return permit();
    return permit(*this, n);
}

GORO_DECL bool semaphore::try_acquire(std::int64_t n) {
    check(n, "goro::semaphore::try_acquire");
    std::lock_guard g(lock_);
    if (!waiters_.empty() || count_ < n) return false;
    count_ -= n;
    return true;
}

GORO_DECL void semaphore::add_permits(std::int64_t n, bool check_overflow) {
    detail::waiter_list<waiter_node> wake;
    {
        std::lock_guard g(lock_);
        if (check_overflow && count_ > std::numeric_limits<std::int64_t>::max() - n)
            throw usage_error("goro::semaphore::release: count overflow");
        count_ += n;
        while (!waiters_.empty() && waiters_.front()->want <= count_) {
            count_ -= waiters_.front()->want;
            wake.push_back(*waiters_.pop_front());
        }
    }
    wake.wake_all();
}

GORO_DECL void semaphore::check(std::int64_t n, const char* op) {
    if (n < 0) throw usage_error(std::string(op) + ": negative count " + std::to_string(n));
}

GORO_DECL bool semaphore::enqueue(waiter_node& n, std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::semaphore::acquire");
    n.task = t;
    detail::park(t, h, wait_reason::semacquire);
    std::lock_guard g(lock_);
    if (waiters_.empty() && count_ >= n.want) {  // released meanwhile
        count_ -= n.want;
        t->state.store(task_state::running, std::memory_order_relaxed);
        return false;
    }
    waiters_.push_back(n);
    return true;  // published: a releaser owns the node now
}

}  // namespace goro
#endif  // GORO_BODIES
