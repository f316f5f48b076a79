// goro/net/tcp.hpp — TCP for goro tasks: `goro::net::listener` and `goro::net::stream`,
// after Go's net.Listener and net.TCPConn.
//
//   goro::task<> serve(goro::net::stream s) {           // one task per connection
//       char buf[512];
//       for (;;) {
//           std::size_t n = co_await s.read(buf, sizeof buf);
//           if (n == 0) co_return;                       // the peer closed
//           co_await s.write_all(buf, n);
//       }
//   }
//   goro::task<> server() {
//       auto ln = goro::net::listen("127.0.0.1:8080");
//       for (;;) {
//           goro::net::stream s = co_await ln.accept();  // not go(serve(co_await ...)):
//           goro::go(serve(std::move(s)));               // g++ 12 miscompiles that
//       }
//   }
//   auto s = co_await goro::net::connect("127.0.0.1:8080", ctx);
//
// Every operation that can wait is an awaitable: it tries its system call
// first and parks in "IO wait" only when the socket is not ready (see
// goro/io/poller.hpp). Each takes an optional goro::context:
//
// CANCELLATION AND DEADLINES: when the context is cancelled or passes its
//   deadline while the operation waits, the operation ends with goro::io_error
//   (code io_errc::canceled or io_errc::deadline_exceeded, is_canceled()). The
//   socket STAYS OPEN AND USABLE: a read consumed nothing; a write_all wrote
//   bytes_transferred() bytes of its buffer (the stream carries on from there);
//   a connect's socket is closed (there is no stream yet). A context that is
//   already done does not stop an operation that can complete without waiting.
//
// ERRORS: goro::io_error (a std::system_error) whose what() names the
//   operation and the reason ("goro::net::stream::read: Connection reset by
//   peer"); code() is the errno, or io_errc::closed for a socket closed before
//   or during the operation (close() wakes operations parked on it), or
//   io_errc::eof from read_full when the stream ends early. read() returns 0 at
//   the end of the stream, as read(2) does. Writes never raise SIGPIPE (a
//   write to a closed peer is an EPIPE or ECONNRESET io_error). Misuse (a bad
//   address string) is goro::usage_error.
//
// THREAD SAFETY: one task may read while another writes on the same stream,
//   and any task may close() it meanwhile; two concurrent reads (or two
//   writes) on one stream interleave their data, as in Go. A listener, stream
//   or socket object must outlive the operations started on it.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <goro/core/linkage.hpp>
#include <goro/io/poller.hpp>
#include <goro/net/address.hpp>
#include <goro/net/resolve.hpp>

namespace goro::net {

namespace detail {

using goro::detail::check_wake;
using goro::detail::ctx_or_null;
using goro::detail::desc_ref;
using goro::detail::io_read;
using goro::detail::io_wait_op;
using goro::detail::io_write;
using goro::detail::poller;
using goro::detail::registered_fd;
using goro::detail::throw_errno;
using goro::detail::throw_io;

/// A new non-blocking socket; throws io_error naming `op` (EMFILE and the like).
GORO_DECL int new_socket(int family, int type, const char* op);

/// Asks the kernel to say, with each read, how many bytes stay queued
/// (TCP_INQ; see recv_inq). Where it cannot, reads never find the socket
/// drained, and simply do not take the KNOWN EMPTY shortcut.
GORO_DECL void enable_inq(const registered_fd& r) noexcept;

/// recv(2) by recvmsg, which also brings TCP_INQ's count of the bytes left
/// queued: `*drained` is true when bytes were read and none are left (see
/// KNOWN EMPTY in goro/io/poller.hpp; the kernel counts a received FIN as
/// a byte left).
GORO_DECL ssize_t recv_inq(int fd, void* buf, std::size_t n, bool* drained) noexcept;

template <class F>
address sock_name(const registered_fd& r, F getname, const char* op) {
    desc_ref ref(r.desc(), r.gen(), op);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getname(ref.fd(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) throw_errno(op, errno);
    return address::from(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace detail

/// Which side(s) of a stream shutdown() ends.
enum class shutdown_how { read = SHUT_RD, write = SHUT_WR, both = SHUT_RDWR };

/// A TCP connection (Go's net.TCPConn). Move-only; closes on destruction.
/// TCP_NODELAY is on, as in Go.
class stream {
public:
    stream() noexcept = default;
    /// Adopts a connected socket (made non-blocking). Throws io_error.
    explicit stream(int fd) : r_(fd, "goro::net::stream") { detail::enable_inq(r_); }
    explicit stream(detail::registered_fd r) noexcept : r_(std::move(r)) { detail::enable_inq(r_); }

    /// Reads what is there, up to `n` bytes, waiting until at least one byte
    /// (or the end of the stream) arrives. Returns 0 at the end of the
    /// stream (and for n == 0).
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::read: co_await it")]] task<std::size_t> read(void* buf, std::size_t n,
                                                                                 context ctx = {}) {
        static constexpr const char* op = "goro::net::stream::read";
        detail::desc_ref ref(r_.desc(), r_.gen(), op);
        if (n == 0) co_return 0;  // as Go's Read (recv(2) of 0 bytes would wait for data)
        for (;;) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_read);
            if (!detail::poller::known_empty(r_.desc(), seq)) {  // else: EAGAIN for sure
                bool drained;
                ssize_t got = detail::recv_inq(ref.fd(), buf, n, &drained);
                if (got >= 0) {
                    if (drained) detail::poller::mark_drained(r_.desc(), seq);
                    co_return static_cast<std::size_t>(got);
                }
                const int e = errno;
                if (e == EINTR) continue;
                if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e);
            }
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_read, seq, detail::ctx_or_null(ctx), op}, detail::ctx_or_null(ctx), op);
        }
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::read: co_await it")]] task<std::size_t> read(std::span<std::byte> buf,
                                                                                 context ctx = {}) {
        return read(buf.data(), buf.size(), std::move(ctx));
    }

    /// Reads exactly `n` bytes (Go's io.ReadFull). At the end of the stream
    /// before that, throws io_error with io_errc::eof and
    /// bytes_transferred() the count read (the bytes are in `buf`).
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::read_full: co_await it")]] task<> read_full(void* buf, std::size_t n,
                                                                                context ctx = {}) {
        static constexpr const char* op = "goro::net::stream::read_full";
        detail::desc_ref ref(r_.desc(), r_.gen(), op);
        char* p = static_cast<char*>(buf);
        std::size_t done = 0;
        while (done < n) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_read);
            if (!detail::poller::known_empty(r_.desc(), seq)) {  // else: EAGAIN for sure
                bool drained;
                ssize_t got = detail::recv_inq(ref.fd(), p + done, n - done, &drained);
                if (got > 0) {
                    if (drained) detail::poller::mark_drained(r_.desc(), seq);
                    done += static_cast<std::size_t>(got);
                    continue;
                }
                if (got == 0) detail::throw_io(io_errc::eof, std::string(op) + " (" + std::to_string(done) + " of " + std::to_string(n) + " bytes)", done);
                const int e = errno;
                if (e == EINTR) continue;
                if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e, done);
            }
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_read, seq, detail::ctx_or_null(ctx), op}, detail::ctx_or_null(ctx), op,
                       done);
        }
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::read_full: co_await it")]] task<> read_full(std::span<std::byte> buf,
                                                                                context ctx = {}) {
        return read_full(buf.data(), buf.size(), std::move(ctx));
    }

    /// Writes all `n` bytes, waiting while the socket's buffer is full. On an
    /// error, bytes_transferred() says how many were written.
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::write_all: co_await it")]] task<> write_all(const void* buf, std::size_t n,
                                                                                context ctx = {}) {
        static constexpr const char* op = "goro::net::stream::write_all";
        detail::desc_ref ref(r_.desc(), r_.gen(), op);
        const char* p = static_cast<const char*>(buf);
        std::size_t done = 0;
        while (done < n) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_write);
            ssize_t put = ::send(ref.fd(), p + done, n - done, MSG_NOSIGNAL);
            if (put >= 0) {
                done += static_cast<std::size_t>(put);
                continue;
            }
            const int e = errno;
            if (e == EINTR) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e, done);
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_write, seq, detail::ctx_or_null(ctx), op}, detail::ctx_or_null(ctx), op,
                       done);
        }
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::write_all: co_await it")]] task<> write_all(std::string_view s,
                                                                                context ctx = {}) {
        return write_all(s.data(), s.size(), std::move(ctx));
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::write_all: co_await it")]] task<> write_all(std::span<const std::byte> buf,
                                                                                context ctx = {}) {
        return write_all(buf.data(), buf.size(), std::move(ctx));
    }

    /// Ends one or both directions (Go's CloseWrite / CloseRead): after
    /// shutdown(write) the peer reads the end of the stream.
    void shutdown(shutdown_how how = shutdown_how::write);

    /// Closes the connection (idempotent). Operations parked on it end with
    /// io_errc::closed; the fd is closed once the last of them has.
    void close() noexcept { r_.close(); }
    bool is_open() const noexcept { return r_.is_open(); }

    address local_address() const { return detail::sock_name(r_, ::getsockname, "goro::net::stream::local_address"); }
    address peer_address() const { return detail::sock_name(r_, ::getpeername, "goro::net::stream::peer_address"); }

    /// Sets TCP_NODELAY (on by default).
    void set_no_delay(bool on);

    /// The socket's descriptor, valid while the stream is open (for
    /// setsockopt and the like; do not close it).
    int native_handle() const noexcept { return r_.desc() && r_.is_open() ? r_.desc()->fd : -1; }

private:
    detail::registered_fd r_;
};

/// Connects to `to` (Go's net.Dial("tcp", ...)). Throws io_error naming
/// "goro::net::connect" (ECONNREFUSED, ...; canceled / deadline_exceeded by `ctx`).
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::net::connect: co_await it")]] inline task<stream> connect(address to, context ctx = {}) {
    static constexpr const char* op = "goro::net::connect";
    if (to.empty()) throw usage_error(std::string(op) + ": empty address");
    detail::registered_fd r(detail::new_socket(to.family(), SOCK_STREAM, op), op);
    {
        detail::desc_ref ref(r.desc(), r.gen(), op);
        std::uint64_t seq = detail::poller::seq(r.desc(), detail::io_write);
        if (::connect(ref.fd(), to.data(), to.size()) != 0) {
            int e = errno;
            if (e != EINPROGRESS && e != EINTR) detail::throw_errno(op + (": " + to.to_string()), e);
            for (;;) {
                detail::check_wake(co_await detail::io_wait_op{r.desc(), r.gen(), detail::io_write, seq, detail::ctx_or_null(ctx), op},
                                   detail::ctx_or_null(ctx), op);
                seq = detail::poller::seq(r.desc(), detail::io_write);
                socklen_t len = sizeof e;
                if (::getsockopt(ref.fd(), SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
                if (e == EINPROGRESS || e == EALREADY || e == EINTR) continue;
                if (e != 0 && e != EISCONN) detail::throw_errno(op + (": " + to.to_string()), e);
                // A wake-up may be stale (a socket not yet connected polls
                // writable and hung up when registered): connected only if
                // it has a peer; else wait for the next edge.
                sockaddr_storage peer{};
                socklen_t plen = sizeof peer;
                if (::getpeername(ref.fd(), reinterpret_cast<sockaddr*>(&peer), &plen) == 0) break;
                if (errno != ENOTCONN) detail::throw_errno(op + (": " + to.to_string()), errno);
            }
        }
    }
    stream s(std::move(r));
    s.set_no_delay(true);
    co_return s;
}

/// Connects to "host:port"; a host that is not numeric (nor "localhost") is
/// resolved with goro::net::resolve, and each address tried in turn.
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::net::connect: co_await it")]] inline task<stream> connect(std::string host_port,
                                                                             context ctx = {}) {
    static constexpr const char* op = "goro::net::connect";
    std::string_view host, port;
    if (!address::split(host_port, host, port))
        throw usage_error(std::string(op) + ": \"" + host_port + "\" is not host:port");
    std::uint16_t p = address::parse_port(port, host_port, op);
    if (std::optional<address> a = address::from_host(host, p)) co_return co_await connect(*a, ctx);
    std::vector<address> all = co_await resolve(std::string(host), p, ctx);
    std::exception_ptr last;
    for (const address& a : all) {
        try {
            co_return co_await connect(a, ctx);
        } catch (const io_error& e) {
            if (e.is_canceled()) throw;
            last = std::current_exception();
        }
    }
    std::rethrow_exception(last);
}

/// A listening TCP socket (Go's net.TCPListener). Move-only; closes on destruction.
class listener {
public:
    listener() noexcept = default;
    explicit listener(detail::registered_fd r) noexcept : r_(std::move(r)) {}

    /// Waits for the next connection. Throws io_error: io_errc::closed once
    /// the listener is closed (close() wakes a parked accept), EMFILE when
    /// the process is out of descriptors (the connection stays queued).
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::listener::accept: co_await it")]] task<stream> accept(context ctx = {}) {
        static constexpr const char* op = "goro::net::listener::accept";
        detail::desc_ref ref(r_.desc(), r_.gen(), op);
        for (;;) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_read);
            int fd = ::accept4(ref.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                stream s(detail::registered_fd(fd, op));
                s.set_no_delay(true);
                co_return s;
            }
            const int e = errno;
            if (e == EINTR || e == ECONNABORTED) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e);
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_read, seq, detail::ctx_or_null(ctx), op}, detail::ctx_or_null(ctx), op);
        }
    }

    /// The address it listens on (the port chosen, after listening on port 0).
    address local_address() const { return detail::sock_name(r_, ::getsockname, "goro::net::listener::local_address"); }
    /// Stops listening (idempotent); a parked accept ends with io_errc::closed.
    void close() noexcept { r_.close(); }
    bool is_open() const noexcept { return r_.is_open(); }
    int native_handle() const noexcept { return r_.desc() && r_.is_open() ? r_.desc()->fd : -1; }

private:
    detail::registered_fd r_;
};

/// Listens on `at` (SO_REUSEADDR set, as Go does). Throws io_error naming
/// "goro::net::listen" (EADDRINUSE, EMFILE, ...).
GORO_DECL listener listen(const address& at, int backlog = 4096);

/// Listens on "host:port" (numeric host or "localhost"; ":port" for every
/// IPv4 interface; port 0 picks a free one: see local_address()).
inline listener listen(std::string_view host_port, int backlog = 4096) {
    return listen(address::parse(host_port, "goro::net::listen"), backlog);
}

}  // namespace goro::net

#if GORO_BODIES
#include <cstring>

#include <netinet/tcp.h>
#include <sys/uio.h>

#ifndef TCP_INQ  // Linux 4.18; older headers
#define TCP_INQ 36
#define TCP_CM_INQ TCP_INQ
#endif

namespace goro::net::detail {

GORO_DECL int new_socket(int family, int type, const char* op) {
    int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw_errno(std::string(op) + ": socket", errno);
    return fd;
}

GORO_DECL void enable_inq(const registered_fd& r) noexcept {
    if (!r.desc()) return;
    int one = 1;
    ::setsockopt(r.desc()->fd, IPPROTO_TCP, TCP_INQ, &one, sizeof one);
}

GORO_DECL ssize_t recv_inq(int fd, void* buf, std::size_t n, bool* drained) noexcept {
    iovec iov{buf, n};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    ssize_t got = ::recvmsg(fd, &m, 0);
    *drained = false;
    if (got > 0)
        for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
            if (c->cmsg_level == IPPROTO_TCP && c->cmsg_type == TCP_CM_INQ && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                int left;
                std::memcpy(&left, CMSG_DATA(c), sizeof left);
                *drained = left == 0;
            }
    return got;
}

}  // namespace goro::net::detail

namespace goro::net {

GORO_DECL void stream::shutdown(shutdown_how how) {
    static constexpr const char* op = "goro::net::stream::shutdown";
    detail::desc_ref ref(r_.desc(), r_.gen(), op);
    if (::shutdown(ref.fd(), static_cast<int>(how)) != 0) detail::throw_errno(op, errno);
}

GORO_DECL void stream::set_no_delay(bool on) {
    static constexpr const char* op = "goro::net::stream::set_no_delay";
    detail::desc_ref ref(r_.desc(), r_.gen(), op);
    int v = on ? 1 : 0;
    if (::setsockopt(ref.fd(), IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0) detail::throw_errno(op, errno);
}

GORO_DECL listener listen(const address& at, int backlog) {
    static constexpr const char* op = "goro::net::listen";
    if (at.empty()) throw usage_error(std::string(op) + ": empty address");
    detail::registered_fd r(detail::new_socket(at.family(), SOCK_STREAM, op), op);
    {
        detail::desc_ref ref(r.desc(), r.gen(), op);
        int one = 1;
        ::setsockopt(ref.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(ref.fd(), at.data(), at.size()) != 0)
            detail::throw_errno(std::string(op) + ": bind " + at.to_string(), errno);
        if (::listen(ref.fd(), backlog) != 0) detail::throw_errno(std::string(op) + ": listen " + at.to_string(), errno);
    }
    return listener(std::move(r));
}

}  // namespace goro::net
#endif  // GORO_BODIES
