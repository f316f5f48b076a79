#ifndef GORO_HTTP_ADDRESS_HPP
#define GORO_HTTP_ADDRESS_HPP

// The debug server's socket helpers: parsing a bind address (and whether it is
// loopback), formatting a peer's endpoint, checking that a Host names this
// machine, and small file-descriptor utilities.

#include <optional>
#include <string>
#include <string_view>

#include <sys/socket.h>
#include <sys/types.h>

#include <goro/core/linkage.hpp>
#include <goro/http/request.hpp>

namespace goro {

namespace detail {

// A parsed bind address.
struct socket_address {
    sockaddr_storage storage{};
    socklen_t length = 0;
    int family = AF_UNSPEC;
    bool loopback = false;
    std::string text;  // "127.0.0.1" or "::1", without brackets
};

// Accepts IPv4 and IPv6 literals ("[::1]" too) and "localhost" (127.0.0.1).
GORO_DECL std::optional<socket_address> parse_bind_address(std::string_view address);

GORO_DECL std::string format_endpoint(const sockaddr* sa);

// Is the Host value (host[:port]) a name that can only mean this machine?
GORO_DECL bool is_loopback_host(std::string_view host);

GORO_DECL void set_cloexec_nonblock(int fd) noexcept;

GORO_DECL void close_fd(int& fd) noexcept;

#ifdef MSG_NOSIGNAL
inline constexpr int send_flags = MSG_NOSIGNAL;
#else
inline constexpr int send_flags = 0;  // SO_NOSIGPIPE is set on the socket instead
#endif

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <cstring>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

namespace goro::detail {

GORO_DECL std::optional<socket_address> parse_bind_address(std::string_view address) {
    std::string text(address);
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
    if (iequals(text, "localhost")) text = "127.0.0.1";
    socket_address a;
    in_addr v4{};
    in6_addr v6{};
    if (text.find('\0') != std::string::npos) return std::nullopt;
    if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr = v4;
        std::memcpy(&a.storage, &sin, sizeof sin);
        a.length = sizeof sin;
        a.family = AF_INET;
        a.loopback = (ntohl(v4.s_addr) >> 24) == 127;
    } else if (::inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr = v6;
        std::memcpy(&a.storage, &sin6, sizeof sin6);
        a.length = sizeof sin6;
        a.family = AF_INET6;
        const unsigned char* b = v6.s6_addr;
        static constexpr unsigned char loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        static constexpr unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (std::memcmp(b, mapped, 12) == 0) {
            // An IPv4-mapped address (::ffff:a.b.c.d) names an IPv4 endpoint,
            // which an IPv6-only socket cannot bind: it is bound as that IPv4
            // address, and url() shows the IPv4 form.
            in_addr v4m{};
            std::memcpy(&v4m.s_addr, b + 12, 4);
            char buf[INET_ADDRSTRLEN] = {};
            ::inet_ntop(AF_INET, &v4m, buf, sizeof buf);
            return parse_bind_address(buf);
        }
        a.loopback = std::memcmp(b, loop6, 16) == 0;
    } else {
        return std::nullopt;
    }
    a.text = text;
    return a;
}

GORO_DECL std::string format_endpoint(const sockaddr* sa) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (sa->sa_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, sa, sizeof sin);
        ::inet_ntop(AF_INET, &sin.sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(sin.sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, sa, sizeof sin6);
        ::inet_ntop(AF_INET6, &sin6.sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(sin6.sin6_port));
    }
    return "?";
}

GORO_DECL bool is_loopback_host(std::string_view host) {
    if (host.empty()) return false;
    std::string_view name;
    if (host.front() == '[') {
        std::size_t close = host.find(']');
        if (close == std::string_view::npos) return false;
        name = host.substr(1, close - 1);
        std::string_view rest = host.substr(close + 1);
        if (!rest.empty() && rest.front() != ':') return false;
        auto a = parse_bind_address(name);
        return a && a->loopback;  // [::1], or [::ffff:127.x.y.z]
    }
    std::size_t colon = host.find(':');
    name = host.substr(0, colon);
    if (colon != std::string_view::npos && host.find(':', colon + 1) != std::string_view::npos) return false;
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);  // "localhost."
    if (iequals(name, "localhost")) return true;
    if (name.size() > 10 && iequals(name.substr(name.size() - 10), ".localhost")) return true;
    std::string n(name);
    in_addr v4{};
    return ::inet_pton(AF_INET, n.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

GORO_DECL void set_cloexec_nonblock(int fd) noexcept {
    int fdf = ::fcntl(fd, F_GETFD);
    if (fdf >= 0) ::fcntl(fd, F_SETFD, fdf | FD_CLOEXEC);
    int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

GORO_DECL void close_fd(int& fd) noexcept {
    if (fd >= 0) {
        ::close(fd);  // Not retried on EINTR: on Linux the fd is gone either way.
        fd = -1;
    }
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_ADDRESS_HPP
