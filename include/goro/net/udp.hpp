// goro/net/udp.hpp — UDP for goro tasks: `goro::net::udp_socket` (Go's net.UDPConn).
//
//   auto sock = goro::net::listen_udp("127.0.0.1:0");
//   co_await sock.send_to("ping", 4, peer);
//   char buf[1500];
//   auto [n, from] = co_await sock.recv_from(buf, sizeof buf, ctx);
//
// Cancellation, errors and closing work as for TCP (goro/net/tcp.hpp): a
// cancelled or timed-out operation leaves the socket open and usable.
#pragma once

#include <cerrno>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include <sys/socket.h>

#include <goro/core/linkage.hpp>
#include <goro/io/poller.hpp>
#include <goro/net/address.hpp>
#include <goro/net/tcp.hpp>

namespace goro::net {

/// What recv_from received: its size and its sender.
struct datagram {
    std::size_t size = 0;
    address from;
};

/// A UDP socket bound to a local address. Move-only; closes on destruction.
class udp_socket {
public:
    udp_socket() noexcept = default;
    explicit udp_socket(detail::registered_fd r) noexcept : r_(std::move(r)) {}

    /// Sends one datagram of `n` bytes to `to`; waits while the socket's
    /// buffer is full.
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::udp_socket::send_to: co_await it")]] task<> send_to(const void* buf, std::size_t n,
                                                                                address to, context ctx = {}) {
        static constexpr const char* op = "goro::net::udp_socket::send_to";
        goro::detail::desc_ref ref(r_.desc(), r_.gen(), op);
        for (;;) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_write);
            ssize_t put = ::sendto(ref.fd(), buf, n, MSG_NOSIGNAL, to.data(), to.size());
            if (put >= 0) co_return;
            const int e = errno;
            if (e == EINTR) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(std::string(op) + " " + to.to_string(), e);
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_write, seq,
                                                           detail::ctx_or_null(ctx), op},
                               detail::ctx_or_null(ctx), op);
        }
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::udp_socket::send_to: co_await it")]] task<> send_to(std::string_view s, address to,
                                                                                context ctx = {}) {
        return send_to(s.data(), s.size(), std::move(to), std::move(ctx));
    }

    /// Waits for one datagram; a longer one than `n` bytes is truncated.
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::udp_socket::recv_from: co_await it")]] task<datagram> recv_from(void* buf, std::size_t n,
                                                                                            context ctx = {}) {
        static constexpr const char* op = "goro::net::udp_socket::recv_from";
        goro::detail::desc_ref ref(r_.desc(), r_.gen(), op);
        for (;;) {
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_read);
            ssize_t got = ::recvfrom(ref.fd(), buf, n, 0, reinterpret_cast<sockaddr*>(&ss), &len);
            if (got >= 0) co_return datagram{static_cast<std::size_t>(got), address::from(reinterpret_cast<sockaddr*>(&ss), len)};
            const int e = errno;
            if (e == EINTR) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e);
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_read, seq,
                                                           detail::ctx_or_null(ctx), op},
                               detail::ctx_or_null(ctx), op);
        }
    }

    address local_address() const { return detail::sock_name(r_, ::getsockname, "goro::net::udp_socket::local_address"); }
    /// Closes the socket (idempotent); parked operations end with io_errc::closed.
    void close() noexcept { r_.close(); }
    bool is_open() const noexcept { return r_.is_open(); }
    int native_handle() const noexcept { return r_.desc() && r_.is_open() ? r_.desc()->fd : -1; }

private:
    detail::registered_fd r_;
};

/// A UDP socket bound to `at` (port 0: a free one; see local_address()).
GORO_DECL udp_socket listen_udp(const address& at);

/// listen_udp on "host:port" (numeric host or "localhost").
inline udp_socket listen_udp(std::string_view host_port) {
    return listen_udp(address::parse(host_port, "goro::net::listen_udp"));
}

}  // namespace goro::net

#if GORO_BODIES
namespace goro::net {

GORO_DECL udp_socket listen_udp(const address& at) {
    static constexpr const char* op = "goro::net::listen_udp";
    if (at.empty()) throw usage_error(std::string(op) + ": empty address");
    detail::registered_fd r(detail::new_socket(at.family(), SOCK_DGRAM, op), op);
    {
        goro::detail::desc_ref ref(r.desc(), r.gen(), op);
        if (::bind(ref.fd(), at.data(), at.size()) != 0)
            detail::throw_errno(std::string(op) + ": bind " + at.to_string(), errno);
    }
    return udp_socket(std::move(r));
}

}  // namespace goro::net
#endif  // GORO_BODIES
