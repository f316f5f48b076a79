// goro/io/poller.hpp — the netpoller: tasks that wait for a file descriptor
// to become readable or writable, and the errors of goro's I/O.
//
//   co_await goro::wait_readable(fd);          // any non-blocking fd the caller owns
//   co_await goro::wait_writable(fd, ctx);     // ends with goro::io_error when ctx is done
//
// goro::net (goro/net/*.hpp) builds sockets on the same machinery. An I/O
// operation first tries its system call; only on EAGAIN does the task park,
// with wait reason "IO wait" and its whole stack, like any parked task: it is
// counted, dumped, grouped and profiled. Go's netpoller, in short.
//
// THE PIECES
//   poll_desc   one per registered descriptor, registered ONCE with epoll,
//               edge-triggered for every event (EPOLLIN | EPOLLOUT |
//               EPOLLRDHUP | EPOLLET). Two directions (read, write), each
//               with a waiter slot and a `ready` flag. Descriptors are
//               recycled, never freed, and carry a generation number that
//               the epoll event carries too (its top 16 bits; the address
//               below): an event or an operation that finds another
//               generation is about a descriptor since closed and is ignored
//               (an event) or fails as "use of closed network connection"
//               (an operation).
//   who polls  (1) A worker that finds no work polls epoll without blocking,
//               before it spins and again before it sleeps (the scheduler's
//               idle_poll_hook; Go's findrunnable calls netpoll(0) the same
//               way), and runs one woken task itself: a ping-pong over
//               loopback, where the peer's readiness is there as soon as
//               the write returns, never leaves the worker.
//               (2) One poller thread, started with the first registration,
//               sleeps in poll() on the epoll descriptor (it sees that
//               events are queued without taking them). When it wakes while
//               a worker is awake, it yields once so that the worker takes
//               them first; then it takes what is left and hands the woken
//               tasks to the pool with ready_n, as the timer thread does:
//               the global queue, and an idle worker woken. So a pool busy
//               with tasks that never run dry does not hold an I/O wake-up
//               back, an idle process does not spin, and since timers keep
//               their own thread, no timer waits behind epoll.
//               Measured (tcp_echo, 2 loaded cores): without (1), each
//               wake-up costs two thread hand-offs (poller thread, then a
//               worker): ~4x slower than Go; with (1) alone the poller
//               thread still took half the events; with the yield, ~99%
//               are taken by the workers.
//
// EDGE-TRIGGERED READINESS, without a lost wake-up (Go's pdReady)
//   An event in direction d, under the descriptor's lock: a parked waiter is
//   taken out and woken; with no waiter, `ready[d]` is set. A task that got
//   EAGAIN parks under the same lock, unless `ready[d]` is set: then it
//   clears it and tries the call again. So an edge that arrives between the
//   EAGAIN and the park is never lost. A stale flag costs one more EAGAIN.
//
// CLOSING (Go's fdMutex, with a lock instead of a state word)
//   Every operation holds a reference on its descriptor from its start to its
//   end (`desc_ref`), so the fd number is never closed under a running
//   system call (where a new socket could take the number and be read by
//   mistake). close() marks the descriptor closing and wakes both waiters
//   (they fail with io_errc::closed); whoever drops the last reference
//   unregisters and closes the fd and recycles the descriptor (new generation).
//
// CANCELLATION: an operation given a `goro::context` registers a
//   std::stop_callback on the context's stop token while it parks; the
//   callback takes the waiter out under the descriptor's lock and wakes it,
//   and the operation fails with io_errc::canceled or
//   io_errc::deadline_exceeded. Nothing was transferred by the wait itself,
//   so the descriptor stays open and usable (a write_all reports in
//   io_error::bytes_transferred() what it wrote before it was stopped).
//
// THREAD SAFETY / LOCKS: a descriptor's lock is a leaf (nothing is taken
//   under it; tasks are woken after it is released) and is never taken under
//   another goro lock, so it is not in the rank table (as the HTTP server's
//   locks are not). The callbacks run on the poller thread, on whichever
//   thread cancels the context, and on the closing task's thread.
//
// DEADLOCK DETECTION: a task parked in IO wait may be woken by the world, so
//   while any waits, block_on's deadlock detector counts it as an external
//   wake-up guard (as Go never calls a program blocked on the network dead).
#pragma once

#include <atomic>
#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <goro/core/go.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/task.hpp>
#include <goro/inspect/deadlock.hpp>
#include <goro/sync/context.hpp>

namespace goro {

/// goro's own I/O error conditions (errno values use std::system_category).
enum class io_errc {
    eof = 1,            ///< the peer closed the stream before the bytes asked for arrived
    closed,             ///< use of a closed socket or descriptor (closed before or during the operation)
    canceled,           ///< the operation's context was cancelled
    deadline_exceeded,  ///< the operation's context passed its deadline
};

namespace detail {
class io_category_impl : public std::error_category {
public:
    const char* name() const noexcept override { return "goro.io"; }
    std::string message(int c) const override {
        switch (static_cast<io_errc>(c)) {
        case io_errc::eof: return "unexpected EOF";
        case io_errc::closed: return "use of closed network connection";
        case io_errc::canceled: return "context canceled";
        case io_errc::deadline_exceeded: return "context deadline exceeded";
        }
        return "unknown goro.io error";
    }
};
}  // namespace detail

inline const std::error_category& io_category() noexcept {
    static const detail::io_category_impl c;
    return c;
}

inline std::error_code make_error_code(io_errc e) noexcept { return {static_cast<int>(e), io_category()}; }

}  // namespace goro

template <>
struct std::is_error_code_enum<goro::io_errc> : std::true_type {};

namespace goro {

/// The error of a failed I/O operation: what() reads "OPERATION: reason",
/// e.g. "goro::net::stream::read: Connection reset by peer"; code() is the
/// errno (std::system_category) or a goro::io_errc.
class io_error : public std::system_error {
public:
    io_error(std::error_code ec, const std::string& op, std::size_t transferred = 0)
        : std::system_error(ec, op), op_(op), transferred_(transferred) {}
    /// The operation that failed ("goro::net::stream::write_all").
    const std::string& op() const noexcept { return op_; }
    /// Bytes the operation moved before it failed (write_all, read_full).
    std::size_t bytes_transferred() const noexcept { return transferred_; }
    bool is_eof() const noexcept { return code() == io_errc::eof; }
    bool is_closed() const noexcept { return code() == io_errc::closed; }
    /// Cancelled or past the deadline of its context.
    bool is_canceled() const noexcept { return code() == io_errc::canceled || code() == io_errc::deadline_exceeded; }

private:
    std::string op_;
    std::size_t transferred_;
};

namespace detail {

[[noreturn]] inline void throw_errno(const std::string& op, int err, std::size_t transferred = 0) {
    throw io_error(std::error_code(err, std::system_category()), op, transferred);
}
[[noreturn]] inline void throw_io(io_errc e, const std::string& op, std::size_t transferred = 0) {
    throw io_error(make_error_code(e), op, transferred);
}

enum io_dir : unsigned char { io_read = 0, io_write = 1 };
enum class io_wake : unsigned char { none, ready, closed, canceled };

/// A parked operation's waiter, inside its awaiter. `result` is written by
/// the waker before it wakes the task; the rest under the descriptor's lock.
struct io_waiter {
    task_header* task = nullptr;
    io_wake result = io_wake::none;
    bool cancel_requested = false;
};

struct poll_desc {
    spinlock mu;
    int fd = -1;                   // constant while registered
    std::uint32_t gen = 0;         // bumped when recycled (the event carries its low 16 bits)
    int refs = 0;                  // operations in progress, plus the owner's
    bool closing = false;
    bool ready[2] = {false, false};
    io_waiter* waiter[2] = {nullptr, nullptr};
    poll_desc* next_free = nullptr;  // under the poller's free-list lock
};

inline constexpr std::uint64_t io_ptr_mask = (std::uint64_t{1} << 48) - 1;

inline std::uint64_t io_event_key(poll_desc* d, std::uint32_t gen) noexcept {
    return (reinterpret_cast<std::uintptr_t>(d) & io_ptr_mask) | (std::uint64_t(gen & 0xffff) << 48);
}

class poller {
public:
    static poller& get() {
        // Never destroyed: its thread outlives main (blocked in epoll_wait),
        // and tasks parked at exit keep pointing into its descriptors.
        static poller* p = new poller();
        return *p;
    }

    /// Registers `fd` (non-blocking) and returns its descriptor, holding the
    /// owner's reference; `*gen_out` is its generation. Throws io_error
    /// naming `op`; `fd` is then left open.
    poll_desc* open(int fd, const std::string& op, std::uint32_t* gen_out) {
        poll_desc* d = take_free();
        std::uint32_t gen;
        {
            std::lock_guard g(d->mu);
            d->fd = fd;
            d->refs = 1;
            d->closing = false;
            d->ready[0] = d->ready[1] = false;
            d->waiter[0] = d->waiter[1] = nullptr;
            gen = d->gen;
        }
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.u64 = io_event_key(d, gen);
        if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
            int e = errno;
            {
                std::lock_guard g(d->mu);
                d->fd = -1;
                d->refs = 0;
                ++d->gen;
            }
            put_free(d);
            throw_errno(op + ": epoll_ctl", e);
        }
        *gen_out = gen;
        return d;
    }

    /// Takes a reference for an operation; false when the descriptor is
    /// closing or was recycled (generation `gen` is gone).
    static bool acquire(poll_desc* d, std::uint32_t gen) noexcept {
        std::lock_guard g(d->mu);
        if (d->gen != gen || d->closing) return false;
        ++d->refs;
        return true;
    }

    /// Drops a reference; the last one of a closing descriptor closes the fd.
    void release(poll_desc* d) noexcept {
        bool last;
        {
            std::lock_guard g(d->mu);
            last = --d->refs == 0 && d->closing;
        }
        if (last) finish_close(d);
    }

    /// Marks the descriptor closing, wakes its waiters (they fail with
    /// io_errc::closed) and drops the owner's reference. False when it was
    /// closing already (or recycled).
    bool close(poll_desc* d, std::uint32_t gen) noexcept {
        task_header* wake[2];
        std::size_t n = 0;
        bool last;
        {
            std::lock_guard g(d->mu);
            if (d->gen != gen || d->closing) return false;
            d->closing = true;
            for (io_waiter*& w : d->waiter) {
                if (!w) continue;
                w->result = io_wake::closed;
                wake[n++] = w->task;
                w = nullptr;
            }
            last = --d->refs == 0;
        }
        unguard(n);
        if (n) ready_n(wake, n);
        if (last) finish_close(d);
        return true;
    }

    /// Counts a parked waiter as an external wake-up guard for the
    /// deadlock detector (see DEADLOCK DETECTION); the waker uncounts it
    /// before it wakes the task.
    void guard() noexcept { watch_.external_guards.fetch_add(1, std::memory_order_acq_rel); }
    void unguard(std::size_t n) noexcept {
        if (n) watch_.external_guards.fetch_sub(static_cast<int>(n), std::memory_order_acq_rel);
    }

private:
    poller() : watch_(the_deadlock_watch()) {
        epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
        if (epfd_ < 0) throw_errno("goro::io::poller: epoll_create1", errno);
        thread_ = std::thread([this] { run(); });
        thread_.detach();
        idle_poll_hook.store(&poller::poll_now, std::memory_order_release);
    }

    poll_desc* take_free() {
        {
            std::lock_guard g(free_mu_);
            if (poll_desc* d = free_) {
                free_ = d->next_free;
                d->next_free = nullptr;
                return d;
            }
        }
        return new poll_desc();
    }
    void put_free(poll_desc* d) noexcept {
        std::lock_guard g(free_mu_);
        d->next_free = free_;
        free_ = d;
    }

    void finish_close(poll_desc* d) noexcept {
        int fd;
        {
            std::lock_guard g(d->mu);
            fd = d->fd;
            d->fd = -1;
            ++d->gen;  // from here on, events and operations of the old generation are ignored
            d->closing = false;
            d->ready[0] = d->ready[1] = false;
        }
        ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);  // a dup of fd may live on: unregister explicitly
        ::close(fd);
        put_free(d);
    }

    /// Takes the waiters of `n` events into `wake` (room for 2n); returns how many.
    std::size_t harvest(const epoll_event* evs, int n, task_header** wake) noexcept {
        std::size_t k = 0;
        for (int i = 0; i < n; ++i) {
            auto* d = reinterpret_cast<poll_desc*>(static_cast<std::uintptr_t>(evs[i].data.u64 & io_ptr_mask));
            const std::uint32_t gen16 = static_cast<std::uint32_t>(evs[i].data.u64 >> 48);
            const std::uint32_t e = evs[i].events;
            const bool r = e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI);
            const bool w = e & (EPOLLOUT | EPOLLHUP | EPOLLERR);
            std::lock_guard g(d->mu);
            if ((d->gen & 0xffff) != gen16 || d->fd < 0) continue;  // a descriptor since closed
            for (int dir = 0; dir < 2; ++dir) {
                if (!(dir == io_read ? r : w)) continue;
                if (io_waiter* wt = d->waiter[dir]) {
                    d->waiter[dir] = nullptr;
                    wt->result = io_wake::ready;
                    wake[k++] = wt->task;
                } else {
                    d->ready[dir] = true;
                }
            }
        }
        unguard(k);
        return k;
    }

    /// The scheduler's idle_poll_hook: a worker with nothing to run looks
    /// for ready descriptors without blocking, and runs one woken task
    /// itself: a ping-pong over loopback then never leaves the worker (the
    /// peer's readiness is there as soon as the write returns).
    static task_header* poll_now() noexcept {
        poller& p = get();
        // Nobody parked in IO wait (each waiter counts as an external guard):
        // no system call. A miss only leaves an event to the poller thread.
        if (p.watch_.external_guards.load(std::memory_order_relaxed) == 0) return nullptr;
        constexpr int max_events = 64;
        epoll_event evs[max_events];
        int n = ::epoll_wait(p.epfd_, evs, max_events, 0);
        if (n <= 0) return nullptr;
        task_header* wake[2 * max_events];
        std::size_t k = p.harvest(evs, n, wake);
        if (k == 0) return nullptr;
        if (k > 1) ready_n(wake + 1, k - 1);
        // Not through ready() (this worker runs it next): its wait is
        // recorded here (core/wait_profile.hpp; on a worker, so the parked clock).
        if (const std::int64_t rate = wait_profile_rate_n.load(std::memory_order_relaxed)) [[unlikely]]
            wait_profile_wake(wake[0], rate, parked_clock().load(std::memory_order_relaxed));
        wake[0]->state.store(task_state::runnable, std::memory_order_relaxed);
        return wake[0];
    }

    void run() noexcept {
        constexpr int max_events = 256;
        epoll_event evs[max_events];
        std::vector<task_header*> wake(2 * max_events);
        for (;;) {
            // Wait for readiness without taking it (the epoll fd polls
            // readable while events are queued), and when a worker is awake
            // let it take them first: it runs the woken task at once
            // (poll_now), where from here the task would go through the
            // global queue and maybe a futex wake. Whatever is left after a
            // yield is taken here, so a pool busy with tasks that never run
            // dry does not hold an I/O wake-up back.
            pollfd pf{epfd_, POLLIN, 0};
            if (::poll(&pf, 1, -1) < 0) continue;
            if (scheduler* s = g_scheduler.load(std::memory_order_acquire);
                s && s->idle_workers() < static_cast<int>(s->size()))
                std::this_thread::yield();
            int n = ::epoll_wait(epfd_, evs, max_events, 0);
            if (n < 0) {
                if (errno == EINTR) continue;
                std::fprintf(stderr, "goro: netpoller: epoll_wait: %s\n", std::strerror(errno));
                std::abort();
            }
            if (std::size_t k = harvest(evs, n, wake.data())) ready_n(wake.data(), k);
        }
    }

    int epfd_ = -1;
    deadlock_watch& watch_;
    std::mutex free_mu_;
    poll_desc* free_ = nullptr;
    std::thread thread_;
};

/// An operation's reference on its descriptor (see CLOSING); throws
/// io_errc::closed naming `op` when the descriptor is closed.
class desc_ref {
public:
    desc_ref(poll_desc* d, std::uint32_t gen, const char* op) : d_(d) {
        if (!d || !poller::acquire(d, gen)) throw_io(io_errc::closed, op);
    }
    ~desc_ref() { poller::get().release(d_); }
    desc_ref(const desc_ref&) = delete;
    desc_ref& operator=(const desc_ref&) = delete;
    int fd() const noexcept { return d_->fd; }

private:
    poll_desc* d_;
};

/// An open, registered descriptor that this object owns (goro::net's
/// sockets hold one): closing it, or destroying it, closes the fd once no
/// operation uses it any more (see CLOSING). Move-only.
class registered_fd {
public:
    registered_fd() noexcept = default;
    /// Takes ownership of `fd` (made non-blocking here unless
    /// `set_nonblocking` is false); closes it and throws io_error naming
    /// `op` when it cannot be registered.
    registered_fd(int fd, const std::string& op, bool set_nonblocking = true) {
        int fl = set_nonblocking ? ::fcntl(fd, F_GETFL) : O_NONBLOCK;
        if (fl < 0 || (!(fl & O_NONBLOCK) && ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)) {
            int e = errno;
            ::close(fd);
            throw_errno(op + ": fcntl", e);
        }
        try {
            d_ = poller::get().open(fd, op, &gen_);
        } catch (...) {
            ::close(fd);
            throw;
        }
    }
    registered_fd(registered_fd&& o) noexcept : d_(std::exchange(o.d_, nullptr)), gen_(o.gen_) {}
    registered_fd& operator=(registered_fd&& o) noexcept {
        if (this != &o) {
            close();
            d_ = std::exchange(o.d_, nullptr);
            gen_ = o.gen_;
        }
        return *this;
    }
    ~registered_fd() { close(); }

    /// Idempotent; wakes the operations parked on it (they fail with
    /// io_errc::closed). Safe while other tasks use the descriptor.
    void close() noexcept {
        if (d_) poller::get().close(d_, gen_);
    }
    bool is_open() const noexcept {
        if (!d_) return false;
        std::lock_guard g(d_->mu);
        return d_->gen == gen_ && !d_->closing;
    }
    poll_desc* desc() const noexcept { return d_; }
    std::uint32_t gen() const noexcept { return gen_; }

private:
    poll_desc* d_ = nullptr;
    std::uint32_t gen_ = 0;
};

/// Parks the current task until direction `dir` of `d` is ready (or was
/// since the last EAGAIN), the descriptor is closed, or `ctx` is done.
/// The caller holds a desc_ref. Returns why it woke.
struct [[nodiscard("goro::io wait: co_await it")]] io_wait_op {
    using is_goro_awaiter = void;

    struct on_cancel {
        io_wait_op* self;
        void operator()() const noexcept { self->cancel(); }
    };

    poll_desc* d;
    std::uint32_t gen;
    io_dir dir;
    const context* ctx;
    const char* op;
    io_waiter w{};
    std::optional<std::stop_callback<on_cancel>> cb{};

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
        w.task = current_task_or_throw(op);
        if (ctx) {
            std::stop_token tok = ctx->stop_token();
            if (tok.stop_possible()) cb.emplace(std::move(tok), on_cancel{this});  // may run cancel() at once
        }
        poller& p = poller::get();
        std::lock_guard g(d->mu);
        if (d->gen != gen || d->closing) {
            w.result = io_wake::closed;
            return false;
        }
        if (w.cancel_requested) {
            w.result = io_wake::canceled;
            return false;
        }
        if (d->ready[dir]) {
            d->ready[dir] = false;
            w.result = io_wake::ready;
            return false;
        }
        park(w.task, h, wait_reason::io_wait);
        d->waiter[dir] = &w;
        p.guard();
        return true;  // published: from here on a waker may resume the task
    }
    io_wake await_resume() noexcept {
        cb.reset();  // waits for a cancel() running on another thread
        return w.result;
    }

    void cancel() noexcept {
        bool take;
        {
            std::lock_guard g(d->mu);
            take = d->waiter[dir] == &w;
            if (take) {
                d->waiter[dir] = nullptr;
                w.result = io_wake::canceled;
            } else {
                w.cancel_requested = true;
            }
        }
        if (take) {
            poller::get().unguard(1);
            ready(w.task);
        }
    }
};

/// Turns a wake-up that was not readiness into the operation's error.
inline void check_wake(io_wake r, const context* ctx, const char* op, std::size_t transferred = 0) {
    if (r == io_wake::ready) return;
    if (r == io_wake::closed) throw_io(io_errc::closed, op, transferred);
    if (ctx && ctx->err() == context_error::deadline_exceeded) throw_io(io_errc::deadline_exceeded, op, transferred);
    throw_io(io_errc::canceled, op, transferred);
}

inline const context* ctx_or_null(const context& ctx) noexcept {
    return ctx == context{} ? nullptr : &ctx;
}

/// A task parked on a user-owned descriptor: registers a duplicate of it
/// (so the caller's own registrations, if any, are untouched), waits, and
/// unregisters by closing the duplicate.
template <int = 0>
task<> wait_fd(int fd, io_dir dir, context ctx, const char* op) {
    {
        pollfd p{fd, static_cast<short>(dir == io_read ? POLLIN : POLLOUT), 0};
        int r;
        do r = ::poll(&p, 1, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0) throw_errno(op, errno);
        if (p.revents & POLLNVAL) throw_errno(op, EBADF);
        if (r > 0) co_return;  // ready now: no registration
    }
    if (const context* c = ctx_or_null(ctx); c && c->is_done())
        throw_io(c->err() == context_error::deadline_exceeded ? io_errc::deadline_exceeded : io_errc::canceled, op);
    int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) throw_errno(op, errno);
    // The duplicate shares the open file, and with it the O_NONBLOCK flag,
    // which is the caller's: leave it (nothing is read or written here).
    registered_fd reg(dup, op, false);
    io_wake r;
    {
        desc_ref ref(reg.desc(), reg.gen(), op);
        r = co_await io_wait_op{reg.desc(), reg.gen(), dir, ctx_or_null(ctx), op};
    }
    check_wake(r, ctx_or_null(ctx), op);
}

}  // namespace detail

/// Parks the current task until `fd` (a non-blocking descriptor the caller
/// owns and keeps open meanwhile) is readable, has hung up or has an error
/// pending (tokio's AsyncFd::readable). Returns at once when it is already.
/// Throws goro::io_error when `ctx` is cancelled or past its deadline
/// (io_errc::canceled / deadline_exceeded) or `fd` is not open (EBADF).
/// Wait reason "IO wait". The descriptor is left as it was.
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::wait_readable: co_await it")]] inline task<> wait_readable(int fd, context ctx = {}) {
    return detail::wait_fd(fd, detail::io_read, std::move(ctx), "goro::wait_readable");
}

/// As wait_readable, for writability (tokio's AsyncFd::writable).
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::wait_writable: co_await it")]] inline task<> wait_writable(int fd, context ctx = {}) {
    return detail::wait_fd(fd, detail::io_write, std::move(ctx), "goro::wait_writable");
}

}  // namespace goro
