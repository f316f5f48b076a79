// goro/io/blocking.hpp — `co_await goro::blocking(fn)`: a blocking call off the pool.
//
//   std::string text = co_await goro::blocking([&] { return read_whole_file(path); });
//   auto addrs = co_await goro::blocking([&] { return resolve(host); });   // getaddrinfo
//
// `fn` runs on a thread of a separate pool of blocking threads (tokio's
// spawn_blocking; Go hands its P away for the length of a system call). The
// calling task parks meanwhile, with wait reason `syscall` and its whole
// stack (a dump shows `goroutine 7 [syscall]:` and where it called), and the
// worker runs other tasks. The result of `fn` is the result of the co_await
// (void, references and move-only types included); an exception that escapes
// `fn` is rethrown there.
//
// THE THREADS: made on demand, up to a limit (default 512, as tokio's; the
// environment variable GORO_MAX_BLOCKING_THREADS, read at first use, or
// `set_max_blocking_threads(n)`); a thread idle for the keep-alive (default
// 10 s, `set_blocking_keep_alive(d)`) exits. At the limit, calls queue in
// order and run as threads come free. `fn` should block, not compute for
// long: computation belongs on the pool, where it is scheduled with the rest.
//
// PARKING: await_suspend parks the task (PARKING PROTOCOL in
// core/scheduler.hpp) and then queues the call: the queue is the
// publication. The blocking thread runs `fn`, stores the result in the
// awaiter (in the task's frame), and calls ready(task) as its very last
// access: from there on the task may run and free the frame.
//
// THE DEADLOCK DETECTOR never counts a task parked here as asleep: a running
// call will wake it: each call counts as an `external_wakeup_guard` from
// its queueing until after its wake-up (inspect/deadlock.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include <goro/core/linkage.hpp>
#include <goro/core/lock_rank.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>

namespace goro {

namespace detail {

/// One call waiting for, or running on, a blocking thread (an intrusive FIFO link).
struct blocking_job {
    blocking_job* next_job = nullptr;
    virtual void run() noexcept = 0;

protected:
    blocking_job() = default;
    blocking_job(const blocking_job&) = default;
    ~blocking_job() = default;
};

inline constexpr unsigned default_max_blocking_threads = 512;

GORO_DECL unsigned blocking_threads_from_env();

/// The blocking threads and their queue of calls (see THE THREADS above).
///
/// Accounting, all under `mu_`: `threads_` alive; `idle_` waiting on the
/// condition and not yet promised a call; `wakeups_` notifications sent to
/// idle threads and not yet taken. A submitter that finds an idle thread
/// moves one from `idle_` to `wakeups_` and notifies; a thread that wakes
/// takes a wake-up if one is left, else (a spurious or timed-out wake) counts
/// itself out of `idle_`. So two calls queued at once wake two threads, not
/// one twice.
class blocking_pool {
public:
    blocking_pool() : max_threads_(blocking_threads_from_env()) {}

    void submit(blocking_job* j) noexcept;

    unsigned max_threads() const noexcept { return max_threads_.load(std::memory_order_relaxed); }
    void set_max_threads(unsigned n) noexcept;
    std::chrono::nanoseconds keep_alive() const noexcept {
        return std::chrono::nanoseconds(keep_alive_ns_.load(std::memory_order_relaxed));
    }
    void set_keep_alive(std::chrono::nanoseconds d) noexcept {
        keep_alive_ns_.store(d.count(), std::memory_order_relaxed);
        cv_.notify_all();  // idle threads re-read it
    }

    /// Blocking threads alive now, and how many of them wait for a call.
    unsigned threads();
    unsigned idle_threads();
    /// Calls queued or running, not yet returned to their task.
    std::int64_t calls_in_flight() const noexcept { return in_flight_.load(std::memory_order_acquire); }

private:
    /// Threads running a call, or woken to take one.
    unsigned busy_locked() const noexcept { return threads_ - idle_; }

    enum class started { none, woke, made };

    /// A queued call needs a thread: wakes an idle one (`woke`: notify after
    /// unlocking) or makes one, unless `max_threads_` are busy. `none`: the
    /// call stays queued for a busy thread to take.
    started start_one_locked() noexcept;

    blocking_job* pop_locked() noexcept;

    void finish(blocking_job* j) noexcept;

    void thread_main() noexcept;

    ranked_lock<std::mutex, lock_rank::blocking_pool> mu_;
    std::condition_variable_any cv_;
    blocking_job* head_ = nullptr;
    blocking_job* tail_ = nullptr;
    std::size_t queued_ = 0;
    unsigned threads_ = 0;
    unsigned idle_ = 0;
    unsigned wakeups_ = 0;
    std::atomic<unsigned> max_threads_;
    std::atomic<std::int64_t> keep_alive_ns_{10'000'000'000};
    std::atomic<std::int64_t> in_flight_{0};
};

/// Made at first use and never destroyed: its threads may outlive main.
inline blocking_pool& the_blocking_pool() {
    static blocking_pool* p = new blocking_pool();
    return *p;
}

/// What a blocking call's awaiter keeps of fn's result.
template <class R>
using blocking_stored = std::conditional_t<std::is_reference_v<R>, std::add_pointer_t<R>, R>;

template <class F>
class blocking_awaiter final : blocking_job {
public:
    using is_goro_awaiter = void;
    using result_type = std::invoke_result_t<F&>;

    explicit blocking_awaiter(F&& f) : fn_(std::move(f)) {}
    /// Moved only before it is awaited (block_on takes its awaitable by value).
    blocking_awaiter(blocking_awaiter&& o) noexcept(std::is_nothrow_move_constructible_v<F>)
        : blocking_job(), fn_(std::move(o.fn_)) {}
    blocking_awaiter& operator=(blocking_awaiter&&) = delete;

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
        task_ = current_task_or_throw("goro::blocking");
        park(task_, h, wait_reason::syscall);
        the_blocking_pool().submit(this);  // published: another thread may resume the task from here on
    }
    result_type await_resume() {
        if (result_.index() == 2) std::rethrow_exception(std::move(std::get<2>(result_)));
        if constexpr (std::is_void_v<result_type>) return;
        else if constexpr (std::is_reference_v<result_type>) return static_cast<result_type>(*std::get<1>(result_));
        else return std::move(std::get<1>(result_));
    }

private:
    void run() noexcept override {
        try {
            if constexpr (std::is_void_v<result_type>) {
                fn_();
                result_.template emplace<1>();
            } else if constexpr (std::is_reference_v<result_type>) {
                result_.template emplace<1>(&fn_());
            } else {
                result_.template emplace<1>(fn_());
            }
        } catch (...) {
            result_.template emplace<2>(std::current_exception());
        }
        ready(task_);  // last access: the task may run, and free this awaiter, from here on
    }

    using stored = std::conditional_t<std::is_void_v<result_type>, std::monostate, blocking_stored<result_type>>;
    F fn_;
    task_header* task_ = nullptr;
    std::variant<std::monostate, stored, std::exception_ptr> result_;
};

}  // namespace detail

/// Runs `fn()` on a blocking thread while the calling task parks (wait
/// reason `syscall`); the co_await gives fn's result or rethrows its
/// exception. `fn` is moved (or copied) into the awaiter; what it refers to
/// by reference must outlive the co_await, which it does when it lives in
/// the awaiting coroutine.
template <class F>
    requires std::invocable<std::decay_t<F>&>
[[nodiscard("goro::blocking: co_await it")]] detail::blocking_awaiter<std::decay_t<F>> blocking(F&& fn) {
    return detail::blocking_awaiter<std::decay_t<F>>(std::decay_t<F>(std::forward<F>(fn)));
}

/// The most blocking threads alive at once (default 512, or
/// GORO_MAX_BLOCKING_THREADS). Calls beyond it queue.
inline unsigned max_blocking_threads() { return detail::the_blocking_pool().max_threads(); }

/// Sets that limit; at least 1. Raising it starts threads for queued calls;
/// lowering it lets the surplus threads finish their call and exit when idle.
inline void set_max_blocking_threads(unsigned n) {
    if (n == 0) throw usage_error("goro::set_max_blocking_threads: the limit must be at least 1");
    detail::the_blocking_pool().set_max_threads(n);
}

/// How long an idle blocking thread waits for a call before it exits (default 10 s).
inline void set_blocking_keep_alive(std::chrono::nanoseconds d) {
    if (d.count() < 0) throw usage_error("goro::set_blocking_keep_alive: the keep-alive must not be negative");
    detail::the_blocking_pool().set_keep_alive(d);
}

/// Blocking threads alive now (idle ones included).
inline unsigned blocking_threads() { return detail::the_blocking_pool().threads(); }

}  // namespace goro

#if GORO_BODIES
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <goro/inspect/deadlock.hpp>

namespace goro::detail {

GORO_DECL unsigned blocking_threads_from_env() {
    if (const char* e = std::getenv("GORO_MAX_BLOCKING_THREADS")) {
        char* end = nullptr;
        long v = std::strtol(e, &end, 10);
        if (end != e && *end == '\0' && v > 0 && v <= 1'000'000) return static_cast<unsigned>(v);
        std::fprintf(stderr, "goro: ignoring GORO_MAX_BLOCKING_THREADS=\"%s\": want an integer from 1 to 1000000\n", e);
    }
    return default_max_blocking_threads;
}

GORO_DECL void blocking_pool::submit(blocking_job* j) noexcept {
    in_flight_.fetch_add(1, std::memory_order_acq_rel);
    the_deadlock_watch().external_guards.fetch_add(1, std::memory_order_acq_rel);
    std::unique_lock g(mu_);
    if (tail_) tail_->next_job = j;
    else head_ = j;
    tail_ = j;
    ++queued_;
    if (start_one_locked() == started::woke) {
        g.unlock();
        cv_.notify_one();
        return;
    }
    if (threads_ > 0) return;  // queued: a busy thread takes it when its call returns
    // No thread can be made and none exists: run the calls here rather
    // than leave them waiting forever (the worker blocks, as without goro).
    while (blocking_job* k = pop_locked()) {
        g.unlock();
        finish(k);
        g.lock();
    }
}

GORO_DECL void blocking_pool::set_max_threads(unsigned n) noexcept {
    bool notify = false;
    {
        std::lock_guard g(mu_);
        max_threads_.store(n, std::memory_order_relaxed);
        // Raised: put threads on the calls that queued at the old limit.
        for (std::size_t need = queued_ > wakeups_ ? queued_ - wakeups_ : 0; need > 0; --need) {
            const started r = start_one_locked();
            if (r == started::none) break;
            if (r == started::woke) notify = true;
        }
    }
    if (notify) cv_.notify_all();
}

GORO_DECL unsigned blocking_pool::threads() {
    std::lock_guard g(mu_);
    return threads_;
}

GORO_DECL unsigned blocking_pool::idle_threads() {
    std::lock_guard g(mu_);
    return idle_;
}

GORO_DECL blocking_pool::started blocking_pool::start_one_locked() noexcept {
    if (busy_locked() >= max_threads_.load(std::memory_order_relaxed)) return started::none;
    if (idle_ > 0) {
        --idle_;
        ++wakeups_;
        return started::woke;
    }
    ++threads_;
    try {
        std::thread([this] { thread_main(); }).detach();
    } catch (...) {
        --threads_;
        return started::none;
    }
    return started::made;
}

GORO_DECL blocking_job* blocking_pool::pop_locked() noexcept {
    blocking_job* j = head_;
    if (!j) return nullptr;
    head_ = j->next_job;
    if (!head_) tail_ = nullptr;
    j->next_job = nullptr;
    --queued_;
    return j;
}

GORO_DECL void blocking_pool::finish(blocking_job* j) noexcept {
    j->run();  // wakes its task as its last access to the job
    // Counted out only after the wake-up, so the deadlock detector never
    // sees the task parked with no call in flight.
    the_deadlock_watch().external_guards.fetch_sub(1, std::memory_order_acq_rel);
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
}

GORO_DECL void blocking_pool::thread_main() noexcept {
    std::unique_lock g(mu_);
    for (;;) {
        // Counted busy here; a thread woken by a spurious or timed-out
        // wake (or set_keep_alive's broadcast) takes a call only within the limit.
        blocking_job* j = busy_locked() <= max_threads_.load(std::memory_order_relaxed) ? pop_locked() : nullptr;
        if (j) {
            g.unlock();
            finish(j);
            g.lock();
            // Over a lowered limit: leave, if the others busy are enough.
            if (busy_locked() > max_threads_.load(std::memory_order_relaxed)) {
                --threads_;
                return;
            }
            continue;
        }
        ++idle_;
        const auto deadline = std::chrono::steady_clock::now() + keep_alive();
        const bool timed_out = cv_.wait_until(g, deadline) == std::cv_status::timeout;
        if (wakeups_ > 0) {
            --wakeups_;  // a submitter counted us out of idle_
            continue;
        }
        --idle_;
        if (timed_out && !head_) {
            --threads_;
            return;
        }
    }
}

}  // namespace goro::detail
#endif  // GORO_BODIES
