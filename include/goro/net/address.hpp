// goro/net/address.hpp — `goro::net::address`: an IPv4 or IPv6 socket address,
// and the "host:port" syntax every goro::net call takes (Go's net.JoinHostPort).
//
//   auto a = goro::net::address::parse("127.0.0.1:8080");
//   auto b = goro::net::address::parse("[::1]:0");
//   auto c = goro::net::address::parse(":8080");        // every interface (0.0.0.0)
//   auto d = goro::net::address::parse("localhost:80"); // 127.0.0.1
//   a.to_string() == "127.0.0.1:8080";  b.port();  b.family() == AF_INET6
//
// parse() takes numeric hosts and "localhost" only: it never blocks. Names
// are resolved by goro::net::resolve (goro/net/resolve.hpp), which
// goro::net::connect uses for a host that is not numeric.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <netinet/in.h>
#include <sys/socket.h>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>

namespace goro::net {

/// An IPv4 or IPv6 address and port (a sockaddr_in / sockaddr_in6).
class address {
public:
    address() noexcept = default;

    /// From a socket API's sockaddr (accept, getsockname, recvfrom).
    static address from(const sockaddr* sa, socklen_t len) noexcept;

    /// A host (numeric IPv4 or IPv6, or "localhost") and a port.
    static std::optional<address> from_host(std::string_view host, std::uint16_t port);

    /// "host:port", "[v6]:port" or ":port"; the host numeric or "localhost".
    /// Throws goro::usage_error naming `op` for anything else.
    static address parse(std::string_view host_port, const char* op = "goro::net::address::parse");

    /// Splits "host:port" ("[v6]:port"); false when there is no port.
    static bool split(std::string_view s, std::string_view& host, std::string_view& port) noexcept;

    static std::uint16_t parse_port(std::string_view port, std::string_view whole, const char* op);

    int family() const noexcept { return len_ ? storage_.ss_family : AF_UNSPEC; }
    bool empty() const noexcept { return len_ == 0; }

    std::uint16_t port() const noexcept;

    /// The numeric host, without brackets ("127.0.0.1", "::1").
    std::string host() const;

    /// "127.0.0.1:8080" or "[::1]:8080", which parse() reads back.
    std::string to_string() const;

    const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
    socklen_t size() const noexcept { return len_; }

    friend bool operator==(const address& a, const address& b) noexcept {
        return a.len_ == b.len_ && a.family() == b.family() && a.port() == b.port() && a.host() == b.host();
    }

private:
    sockaddr_storage storage_{};
    socklen_t len_ = 0;
};

}  // namespace goro::net

#if GORO_BODIES
#include <cstring>

#include <arpa/inet.h>

namespace goro::net {

GORO_DECL address address::from(const sockaddr* sa, socklen_t len) noexcept {
    address a;
    if (len > static_cast<socklen_t>(sizeof a.storage_)) len = sizeof a.storage_;
    std::memcpy(&a.storage_, sa, static_cast<std::size_t>(len));
    a.len_ = len;
    return a;
}

GORO_DECL std::optional<address> address::from_host(std::string_view host, std::uint16_t port) {
    std::string h(host);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    if (h.empty()) h = "0.0.0.0";
    if (h == "localhost") h = "127.0.0.1";
    address a;
    if (h.find(':') == std::string::npos) {
        sockaddr_in in{};
        in.sin_family = AF_INET;
        in.sin_port = htons(port);
        if (::inet_pton(AF_INET, h.c_str(), &in.sin_addr) != 1) return std::nullopt;
        std::memcpy(&a.storage_, &in, sizeof in);
        a.len_ = sizeof in;
    } else {
        sockaddr_in6 in6{};
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(port);
        if (::inet_pton(AF_INET6, h.c_str(), &in6.sin6_addr) != 1) return std::nullopt;
        std::memcpy(&a.storage_, &in6, sizeof in6);
        a.len_ = sizeof in6;
    }
    return a;
}

GORO_DECL address address::parse(std::string_view host_port, const char* op) {
    std::string_view host, port;
    if (!split(host_port, host, port))
        throw usage_error(std::string(op) + ": \"" + std::string(host_port) + "\" is not host:port");
    std::uint16_t p = parse_port(port, host_port, op);
    std::optional<address> a = from_host(host, p);
    if (!a)
        throw usage_error(std::string(op) + ": \"" + std::string(host) +
                          "\" is not a numeric IPv4 or IPv6 address (or localhost); use goro::net::resolve for names");
    return *a;
}

GORO_DECL bool address::split(std::string_view s, std::string_view& host, std::string_view& port) noexcept {
    std::size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (!host.empty() && host.front() == '[') {
        if (host.back() != ']') return false;
        host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string_view::npos) {
        return false;  // an IPv6 host must be bracketed
    }
    return true;
}

GORO_DECL std::uint16_t address::parse_port(std::string_view port, std::string_view whole, const char* op) {
    unsigned long v = 0;
    if (port.empty() || port.size() > 5) v = 70000;
    for (char c : port) {
        if (c < '0' || c > '9') {
            v = 70000;
            break;
        }
        v = v * 10 + static_cast<unsigned long>(c - '0');
    }
    if (v > 65535)
        throw usage_error(std::string(op) + ": bad port in \"" + std::string(whole) + "\" (want 0 to 65535)");
    return static_cast<std::uint16_t>(v);
}

GORO_DECL std::uint16_t address::port() const noexcept {
    if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    return 0;
}

GORO_DECL std::string address::host() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (family() == AF_INET)
        ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
    else if (family() == AF_INET6)
        ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf, sizeof buf);
    return buf;
}

GORO_DECL std::string address::to_string() const {
    if (family() == AF_INET6) return "[" + host() + "]:" + std::to_string(port());
    if (family() == AF_INET) return host() + ":" + std::to_string(port());
    return "";
}

}  // namespace goro::net
#endif  // GORO_BODIES
