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
//               with a list of parked waiters and a readiness sequence
//               number (`seq`, bumped by each event). Descriptors are
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
//               NAPPING: once the poller thread finds that a worker took
//               the events it woke for, it stops waiting on the epoll
//               descriptor (where every event wakes it: on free cores, a
//               cross-core wake-up inside the writer's system call, twice
//               per ping-pong round trip, ~2 context switches per round
//               trip) and naps instead (1 ms), kept napping while the
//               workers' polls go on (a count they bump). A nap in which no
//               worker polled (they are all busy, or asleep) sends it back
//               to the descriptor, and the last worker to fall asleep ends
//               a nap at once (the scheduler's idle_sleep_hook; a
//               publish-then-check handshake with the nap). A missed
//               handshake would cost one nap, never an event: naps are
//               bounded. So a pool whose workers never run dry waits two
//               naps at most for readiness (Go: sysmon's 10 ms).
//
// EDGE-TRIGGERED READINESS, without a lost wake-up (Go's pdReady, made a count)
//   An operation reads `seq[d]` BEFORE its system call. An event in
//   direction d, under the descriptor's lock, bumps `seq[d]` and takes out
//   and wakes EVERY waiter parked in that direction: with an edge, nobody
//   can tell which of them the readiness is for (two tasks accepting on one
//   listener, two reading one stream), so each tries its call again and
//   parks again on EAGAIN. A task that got EAGAIN parks under the same
//   lock, unless `seq[d]` has moved since it read it: then it tries the call
//   again. So an edge that arrives between the system call and the park is
//   never lost, whoever else is parked or running meanwhile, and a task
//   parks without a stale flag's extra EAGAIN. (A flag set by an event, as
//   in Go, is enough for one waiter per direction, which Go's fdMutex
//   ensures; goro lets several tasks use a descriptor at once.)
//
// KNOWN EMPTY: a read that can tell it left nothing behind (a TCP stream's
//   recvmsg with TCP_INQ: bytes still queued, in a control message) marks
//   the descriptor drained at the sequence it read before the call
//   (`rdrained`). The next read that finds the read sequence still there
//   parks at once, without the read(2) that would say EAGAIN: anything that
//   arrived since raised an edge, which moved the sequence (an edge already
//   queued at the draining read is harvested after its sequence was read).
//   io_wait_op's check under the lock closes the gap between the test and
//   the park, as for an EAGAIN. A hang-up or error seen by an event
//   (`rhup`, sticky) turns the shortcut off: the end of a stream is no byte
//   in the queue, and only a read can report it. Saves one system call per
//   read that waits (a ping-pong: two per round trip).
//
// CLOSING (Go's fdMutex, with a lock instead of a state word)
//   Every operation holds a reference on its descriptor from its start to its
//   end (`desc_ref`), so the fd number is never closed under a running
//   system call (where a new socket could take the number and be read by
//   mistake). close() marks the descriptor closing and wakes every waiter
//   of both directions (they fail with io_errc::closed); whoever drops the
//   last reference unregisters and closes the fd and recycles the
//   descriptor (new generation).
//
// CANCELLATION: an operation given a `goro::context` registers a
//   std::stop_callback on the context's stop token while it parks; the
//   callback takes its own waiter out of its direction's list under the
//   descriptor's lock (the others stay parked) and wakes it, and the
//   operation fails with io_errc::canceled or io_errc::deadline_exceeded.
//   Nothing was transferred by the wait itself, so the descriptor stays open
//   and usable (a write_all reports in io_error::bytes_transferred() what it
//   wrote before it was stopped).
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
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <goro/core/go.hpp>
#include <goro/core/linkage.hpp>
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
    GORO_DECL std::string message(int c) const override;
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

/// A parked operation's waiter, inside its awaiter (so in the parked task's
/// frame: a waker reads `next` and `task` before it wakes the task, after
/// which the waiter may be gone). All fields under the descriptor's lock;
/// `result` is written by the waker before it wakes the task.
struct io_waiter {
    task_header* task = nullptr;
    io_waiter* next = nullptr;  // the direction's list (while parked)
    io_wake result = io_wake::none;
    bool cancel_requested = false;
};

struct poll_desc {
    spinlock mu;
    int fd = -1;                   // constant while registered
    std::uint32_t gen = 0;         // bumped when recycled (the event carries its low 16 bits)
    int refs = 0;                  // operations in progress, plus the owner's
    bool closing = false;
    // Bumped under `mu` by each event of the direction; read by an operation
    // before its system call (see EDGE-TRIGGERED READINESS). 64 bits: never
    // wraps. Reset to 0 when registered.
    std::atomic<std::uint64_t> seq[2] = {0, 0};
    // KNOWN EMPTY: the read sequence at which a read last drained the
    // descriptor (never, ~0, when registered), and whether an event saw it
    // hung up or in error (set under `mu` before the sequence moves).
    std::atomic<std::uint64_t> rdrained{~std::uint64_t{0}};
    std::atomic<bool> rhup{false};
    io_waiter* waiter[2] = {nullptr, nullptr};  // heads of the parked waiters' lists
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
    poll_desc* open(int fd, const std::string& op, std::uint32_t* gen_out);

    /// Direction `dir`'s readiness sequence: read it before the system call
    /// whose EAGAIN may lead to an io_wait_op, and hand it to that.
    static std::uint64_t seq(poll_desc* d, io_dir dir) noexcept {
        return d->seq[dir].load(std::memory_order_acquire);
    }

    /// KNOWN EMPTY: a read that returned bytes and left none queued marks
    /// the descriptor drained at `seq`, the read sequence it read before
    /// its system call.
    static void mark_drained(poll_desc* d, std::uint64_t seq) noexcept {
        d->rdrained.store(seq, std::memory_order_relaxed);
    }
    /// True when a read would say EAGAIN: the last read drained the
    /// descriptor and no event came since (`seq` read just before), and
    /// no hang-up was seen. The caller then waits with io_wait_op{.., seq}.
    static bool known_empty(poll_desc* d, std::uint64_t seq) noexcept {
        return d->rdrained.load(std::memory_order_relaxed) == seq && !d->rhup.load(std::memory_order_relaxed);
    }

    /// Takes a reference for an operation; false when the descriptor is
    /// closing or was recycled (generation `gen` is gone).
    static bool acquire(poll_desc* d, std::uint32_t gen) noexcept;

    /// Drops a reference; the last one of a closing descriptor closes the fd.
    void release(poll_desc* d) noexcept;

    /// Marks the descriptor closing, wakes its waiters (they fail with
    /// io_errc::closed) and drops the owner's reference. False when it was
    /// closing already (or recycled).
    bool close(poll_desc* d, std::uint32_t gen) noexcept;

    /// WHO POLLS, napping: how long the poller thread leaves readiness to
    /// the workers before it looks itself (1 ms by default). For tests.
    void set_nap_interval(std::chrono::nanoseconds d) noexcept { nap_ns_.store(d.count(), std::memory_order_relaxed); }
    std::chrono::nanoseconds nap_interval() const noexcept {
        return std::chrono::nanoseconds(nap_ns_.load(std::memory_order_relaxed));
    }
    /// How many naps the poller thread has begun (for tests).
    std::uint64_t naps() const noexcept { return naps_.load(std::memory_order_relaxed); }

    /// Counts a parked waiter as an external wake-up guard for the
    /// deadlock detector (see DEADLOCK DETECTION); the waker uncounts it
    /// before it wakes the task.
    void guard() noexcept { watch_.external_guards.fetch_add(1, std::memory_order_acq_rel); }
    void unguard(std::size_t n) noexcept {
        if (n) watch_.external_guards.fetch_sub(static_cast<int>(n), std::memory_order_acq_rel);
    }

private:
    poller();

    poll_desc* take_free();
    void put_free(poll_desc* d) noexcept;

    void finish_close(poll_desc* d) noexcept;

    /// Descriptor locked: takes out direction `dir`'s whole list of waiters
    /// into `*list`, each with `result` set; returns how many there were.
    static std::size_t take_all(poll_desc* d, int dir, io_wake result, io_waiter** list) noexcept;

    /// Wakes the waiters of lists[0, nl) (taken out by take_all, under no
    /// lock now), handing them to the pool through `buf` (room for `cap`),
    /// or, with `keep_first`, returns the first task instead of readying it.
    /// Taken out, a waiter is the waker's alone (a cancel() no longer finds
    /// it) until its task is readied: so `next` and `task` are read before.
    static task_header* wake_all(io_waiter* const* lists, std::size_t nl, task_header** buf, std::size_t cap,
                                 bool keep_first) noexcept;

    /// Bumps the sequences of `n` events and takes their waiters' lists into
    /// `lists` (room for 2n); `*nl` is how many lists, and the result how
    /// many waiters, uncounted as guards already.
    std::size_t harvest(const epoll_event* evs, int n, io_waiter** lists, std::size_t* nl) noexcept;

    /// The scheduler's idle_poll_hook: a worker with nothing to run looks
    /// for ready descriptors without blocking, and runs one woken task
    /// itself: a ping-pong over loopback then never leaves the worker (the
    /// peer's readiness is there as soon as the write returns).
    static task_header* poll_now() noexcept;

    /// A worker of the pool is awake (not counted idle): it polls when it
    /// runs dry.
    static bool workers_awake() noexcept;

    /// The scheduler's idle_sleep_hook: a worker about to sleep, counted
    /// idle already (a seq_cst update, then a fence), ends the poller
    /// thread's nap when no worker is awake any more. The nap publishes
    /// `napping_` and fences before it looks at the idle count: so either
    /// the nap sees the pool idle and does not begin, or this sees the nap.
    /// (A miss would cost a nap's length, never a wake-up: see run().)
    static void before_idle_sleep() noexcept;

    /// Sleeps for the nap interval, or until the last awake worker goes to
    /// sleep (before_idle_sleep); returns at once when none is awake.
    void nap() noexcept;

    void run() noexcept;

    int epfd_ = -1;
    deadlock_watch& watch_;
    std::mutex free_mu_;
    poll_desc* free_ = nullptr;
    std::thread thread_;
    // WHO POLLS, napping. `polls_`: the workers' polls (poll_now), a count
    // the poller thread compares across a nap; its own line, as every
    // worker's poll writes it.
    alignas(cache_line) std::atomic<std::uint64_t> polls_{0};
    alignas(cache_line) std::atomic<bool> napping_{false};  // written under nap_mu_
    std::atomic<std::int64_t> nap_ns_{1'000'000};
    std::atomic<std::uint64_t> naps_{0};
    std::mutex nap_mu_;
    std::condition_variable nap_cv_;
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
    registered_fd(int fd, const std::string& op, bool set_nonblocking = true);
    registered_fd(registered_fd&& o) noexcept : d_(std::exchange(o.d_, nullptr)), gen_(o.gen_) {}
    registered_fd& operator=(registered_fd&& o) noexcept;
    ~registered_fd() { close(); }

    /// Idempotent; wakes the operations parked on it (they fail with
    /// io_errc::closed). Safe while other tasks use the descriptor.
    void close() noexcept {
        if (d_) poller::get().close(d_, gen_);
    }
    bool is_open() const noexcept;
    poll_desc* desc() const noexcept { return d_; }
    std::uint32_t gen() const noexcept { return gen_; }

private:
    poll_desc* d_ = nullptr;
    std::uint32_t gen_ = 0;
};

/// Parks the current task until direction `dir` of `d` is ready (an event
/// since `seq`, the direction's sequence read before the system call that
/// said EAGAIN), the descriptor is closed, or `ctx` is done. Several tasks
/// may wait on one descriptor and direction at once. The caller holds a
/// desc_ref. Returns why it woke.
struct [[nodiscard("goro::io wait: co_await it")]] io_wait_op {
    using is_goro_awaiter = void;

    struct on_cancel {
        io_wait_op* self;
        void operator()() const noexcept { self->cancel(); }
    };

    poll_desc* d;
    std::uint32_t gen;
    io_dir dir;
    std::uint64_t seq;
    const context* ctx;
    const char* op;
    io_waiter w{};
    std::optional<std::stop_callback<on_cancel>> cb{};

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h);
    io_wake await_resume() noexcept {
        cb.reset();  // waits for a cancel() running on another thread
        return w.result;
    }

    void cancel() noexcept;
};

/// Turns a wake-up that was not readiness into the operation's error.
GORO_DECL void check_wake(io_wake r, const context* ctx, const char* op, std::size_t transferred = 0);

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
        // Sequence 0, as registered: an edge since (EPOLL_CTL_ADD reports
        // the readiness of the moment) is not lost.
        r = co_await io_wait_op{reg.desc(), reg.gen(), dir, 0, ctx_or_null(ctx), op};
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

#if GORO_BODIES
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace goro::detail {

GORO_DECL std::string io_category_impl::message(int c) const {
    switch (static_cast<io_errc>(c)) {
    case io_errc::eof: return "unexpected EOF";
    case io_errc::closed: return "use of closed network connection";
    case io_errc::canceled: return "context canceled";
    case io_errc::deadline_exceeded: return "context deadline exceeded";
    }
    return "unknown goro.io error";
}

GORO_DECL poll_desc* poller::open(int fd, const std::string& op, std::uint32_t* gen_out) {
    poll_desc* d = take_free();
    std::uint32_t gen;
    {
        std::lock_guard g(d->mu);
        d->fd = fd;
        d->refs = 1;
        d->closing = false;
        d->seq[0].store(0, std::memory_order_relaxed);
        d->seq[1].store(0, std::memory_order_relaxed);
        d->rdrained.store(~std::uint64_t{0}, std::memory_order_relaxed);
        d->rhup.store(false, std::memory_order_relaxed);
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

GORO_DECL bool poller::acquire(poll_desc* d, std::uint32_t gen) noexcept {
    std::lock_guard g(d->mu);
    if (d->gen != gen || d->closing) return false;
    ++d->refs;
    return true;
}

GORO_DECL void poller::release(poll_desc* d) noexcept {
    bool last;
    {
        std::lock_guard g(d->mu);
        last = --d->refs == 0 && d->closing;
    }
    if (last) finish_close(d);
}

GORO_DECL bool poller::close(poll_desc* d, std::uint32_t gen) noexcept {
    io_waiter* lists[2];
    std::size_t n = 0;
    bool last;
    {
        std::lock_guard g(d->mu);
        if (d->gen != gen || d->closing) return false;
        d->closing = true;
        for (int dir = 0; dir < 2; ++dir) n += take_all(d, dir, io_wake::closed, lists + dir);
        last = --d->refs == 0;
    }
    unguard(n);
    task_header* buf[16];
    wake_all(lists, 2, buf, 16, false);
    if (last) finish_close(d);
    return true;
}

GORO_DECL poller::poller() : watch_(the_deadlock_watch()) {
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) throw_errno("goro::io::poller: epoll_create1", errno);
    thread_ = std::thread([this] { run(); });
    thread_.detach();
    idle_sleep_hook.store(&poller::before_idle_sleep, std::memory_order_release);
    idle_poll_hook.store(&poller::poll_now, std::memory_order_release);
}

GORO_DECL poll_desc* poller::take_free() {
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

GORO_DECL void poller::put_free(poll_desc* d) noexcept {
    std::lock_guard g(free_mu_);
    d->next_free = free_;
    free_ = d;
}

GORO_DECL void poller::finish_close(poll_desc* d) noexcept {
    int fd;
    {
        std::lock_guard g(d->mu);
        fd = d->fd;
        d->fd = -1;
        ++d->gen;  // from here on, events and operations of the old generation are ignored
        d->closing = false;
    }
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);  // a dup of fd may live on: unregister explicitly
    ::close(fd);
    put_free(d);
}

GORO_DECL std::size_t poller::take_all(poll_desc* d, int dir, io_wake result, io_waiter** list) noexcept {
    std::size_t n = 0;
    for (io_waiter* w = d->waiter[dir]; w; w = w->next) {
        w->result = result;
        ++n;
    }
    *list = d->waiter[dir];
    d->waiter[dir] = nullptr;
    return n;
}

GORO_DECL task_header* poller::wake_all(io_waiter* const* lists, std::size_t nl, task_header** buf, std::size_t cap,
                                         bool keep_first) noexcept {
    task_header* first = nullptr;
    std::size_t k = 0;
    for (std::size_t i = 0; i < nl; ++i) {
        for (io_waiter* w = lists[i]; w;) {
            task_header* t = w->task;
            w = w->next;  // before `t` can run (its frame holds the waiter)
            if (keep_first && !first) {
                first = t;
                continue;
            }
            buf[k++] = t;
            if (k == cap) {
                ready_n(buf, k);
                k = 0;
            }
        }
    }
    if (k) ready_n(buf, k);
    return first;
}

GORO_DECL std::size_t poller::harvest(const epoll_event* evs, int n, io_waiter** lists, std::size_t* nl) noexcept {
    std::size_t k = 0;
    std::size_t l = 0;
    for (int i = 0; i < n; ++i) {
        auto* d = reinterpret_cast<poll_desc*>(static_cast<std::uintptr_t>(evs[i].data.u64 & io_ptr_mask));
        const std::uint32_t gen16 = static_cast<std::uint32_t>(evs[i].data.u64 >> 48);
        const std::uint32_t e = evs[i].events;
        const bool r = e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI);
        const bool w = e & (EPOLLOUT | EPOLLHUP | EPOLLERR);
        std::lock_guard g(d->mu);
        if ((d->gen & 0xffff) != gen16 || d->fd < 0) continue;  // a descriptor since closed
        if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) d->rhup.store(true, std::memory_order_relaxed);
        for (int dir = 0; dir < 2; ++dir) {
            if (!(dir == io_read ? r : w)) continue;
            d->seq[dir].fetch_add(1, std::memory_order_release);
            if (d->waiter[dir]) k += take_all(d, dir, io_wake::ready, lists + l++);
        }
    }
    *nl = l;
    unguard(k);
    return k;
}

GORO_DECL task_header* poller::poll_now() noexcept {
    poller& p = get();
    // Nobody parked in IO wait (each waiter counts as an external guard):
    // no system call. A miss only leaves an event to the poller thread.
    if (p.watch_.external_guards.load(std::memory_order_relaxed) == 0) return nullptr;
    constexpr int max_events = 64;
    epoll_event evs[max_events];
    int n = ::epoll_wait(p.epfd_, evs, max_events, 0);
    p.polls_.fetch_add(1, std::memory_order_relaxed);  // the poller thread naps while this moves
    if (n <= 0) return nullptr;
    io_waiter* lists[2 * max_events];
    std::size_t nl;
    if (p.harvest(evs, n, lists, &nl) == 0) return nullptr;
    task_header* buf[max_events];
    task_header* first = wake_all(lists, nl, buf, max_events, true);
    // Not through ready() (this worker runs it next): its wait is
    // recorded here (core/wait_profile.hpp; on a worker, so the parked clock).
    if (const std::int64_t rate = wait_profile_rate_n.load(std::memory_order_relaxed)) [[unlikely]]
        wait_profile_wake(first, rate, parked_clock().load(std::memory_order_relaxed));
    first->state.store(task_state::runnable, std::memory_order_relaxed);
    return first;
}

GORO_DECL bool poller::workers_awake() noexcept {
    scheduler* s = g_scheduler.load(std::memory_order_acquire);
    return s && s->idle_workers() < static_cast<int>(s->size());
}

GORO_DECL void poller::before_idle_sleep() noexcept {
    poller& p = get();
    if (!p.napping_.load(std::memory_order_seq_cst) || workers_awake()) return;
    {
        std::lock_guard g(p.nap_mu_);
        if (!p.napping_.load(std::memory_order_relaxed)) return;
        p.napping_.store(false, std::memory_order_relaxed);
    }
    p.nap_cv_.notify_one();
}

GORO_DECL void poller::nap() noexcept {
    std::unique_lock lk(nap_mu_);
    napping_.store(true, std::memory_order_seq_cst);
    seq_fence();
    if (workers_awake()) {
        naps_.fetch_add(1, std::memory_order_relaxed);
        nap_cv_.wait_for(lk, nap_interval(), [this] { return !napping_.load(std::memory_order_relaxed); });
    }
    napping_.store(false, std::memory_order_relaxed);
}

GORO_DECL void poller::run() noexcept {
    constexpr int max_events = 256;
    epoll_event evs[max_events];
    std::vector<io_waiter*> lists(2 * max_events);
    std::vector<task_header*> buf(max_events);
    bool napping = false;
    std::uint64_t seen_polls = 0;
    for (;;) {
        // NAPPING (see WHO POLLS): the workers took the last readiness
        // themselves, so this thread does not sleep on the epoll
        // descriptor, where each event would wake it (a cross-core
        // wake-up inside the writer's system call, per message of a
        // ping-pong) only to find the events taken. It looks again after
        // the nap, and goes back to waiting on the descriptor when no
        // worker polled meanwhile (all busy, or the pool went idle: then
        // the last worker to sleep ends the nap early). So readiness
        // waits a nap or two at most for a pool that does not run dry,
        // and nothing is ever left unharvested: the nap is bounded.
        if (napping) {
            nap();
            const std::uint64_t polls = polls_.load(std::memory_order_relaxed);
            if (polls != seen_polls && workers_awake()) {
                seen_polls = polls;
                continue;
            }
            napping = false;
        }
        // Wait for readiness without taking it (the epoll fd polls
        // readable while events are queued), and when a worker is awake
        // let it take them first: it runs the woken task at once
        // (poll_now), where from here the task would go through the
        // global queue and maybe a futex wake. Whatever is left after a
        // yield is taken here, so a pool busy with tasks that never run
        // dry does not hold an I/O wake-up back.
        pollfd pf{epfd_, POLLIN, 0};
        if (::poll(&pf, 1, -1) < 0) continue;
        const bool awake = workers_awake();
        if (awake) std::this_thread::yield();
        int n = ::epoll_wait(epfd_, evs, max_events, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            std::fprintf(stderr, "goro: netpoller: epoll_wait: %s\n", std::strerror(errno));
            std::abort();
        }
        if (n == 0 && awake) {  // a worker took them: leave the next ones to the workers
            napping = true;
            seen_polls = polls_.load(std::memory_order_relaxed);
            continue;
        }
        std::size_t nl;
        if (harvest(evs, n, lists.data(), &nl)) wake_all(lists.data(), nl, buf.data(), buf.size(), false);
    }
}

GORO_DECL registered_fd::registered_fd(int fd, const std::string& op, bool set_nonblocking) {
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

GORO_DECL registered_fd& registered_fd::operator=(registered_fd&& o) noexcept {
    if (this != &o) {
        close();
        d_ = std::exchange(o.d_, nullptr);
        gen_ = o.gen_;
    }
    return *this;
}

GORO_DECL bool registered_fd::is_open() const noexcept {
    if (!d_) return false;
    std::lock_guard g(d_->mu);
    return d_->gen == gen_ && !d_->closing;
}

GORO_DECL bool io_wait_op::await_suspend(std::coroutine_handle<> h) {
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
    if (d->seq[dir].load(std::memory_order_relaxed) != seq) {  // an edge since the system call
        w.result = io_wake::ready;
        return false;
    }
    park(w.task, h, wait_reason::io_wait);
    w.next = d->waiter[dir];
    d->waiter[dir] = &w;
    p.guard();
    return true;  // published: from here on a waker may resume the task
}

GORO_DECL void io_wait_op::cancel() noexcept {
    bool take = false;
    {
        std::lock_guard g(d->mu);
        for (io_waiter** pp = &d->waiter[dir]; *pp; pp = &(*pp)->next) {
            if (*pp == &w) {  // still parked: unlink it alone
                *pp = w.next;
                w.next = nullptr;
                w.result = io_wake::canceled;
                take = true;
                break;
            }
        }
        if (!take) w.cancel_requested = true;  // not parked yet, or woken already
    }
    if (take) {
        poller::get().unguard(1);
        ready(w.task);
    }
}

GORO_DECL void check_wake(io_wake r, const context* ctx, const char* op, std::size_t transferred) {
    if (r == io_wake::ready) return;
    if (r == io_wake::closed) throw_io(io_errc::closed, op, transferred);
    if (ctx && ctx->err() == context_error::deadline_exceeded) throw_io(io_errc::deadline_exceeded, op, transferred);
    throw_io(io_errc::canceled, op, transferred);
}

}  // namespace goro::detail
#endif  // GORO_BODIES
