// goro/net/resolve.hpp — `goro::net::resolve(host, port)`: host names to addresses.
//
//   std::vector<goro::net::address> all = co_await goro::net::resolve("example.com", 443);
//
// Numeric hosts and "localhost" are answered at once, without a lookup. A
// name is looked up with getaddrinfo, which blocks, so it runs through
// goro::blocking (io/blocking.hpp): the task parks in [syscall] meanwhile
// and no worker is held. A context cancelled or past its deadline ends the
// wait with io_errc::canceled / deadline_exceeded (the lookup itself cannot
// be interrupted; it finishes on its blocking thread and is dropped).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <sys/socket.h>

#include <goro/core/linkage.hpp>
#include <goro/core/task.hpp>
#include <goro/io/blocking.hpp>
#include <goro/io/poller.hpp>
#include <goro/net/address.hpp>
#include <goro/sync/channel.hpp>
#include <goro/sync/context.hpp>
#include <goro/sync/select.hpp>

namespace goro::net {

namespace detail {

class gai_category_impl : public std::error_category {
public:
    const char* name() const noexcept override { return "getaddrinfo"; }
    GORO_DECL std::string message(int c) const override;
};

inline const std::error_category& gai_category() noexcept {
    static const gai_category_impl c;
    return c;
}

/// getaddrinfo, on a blocking thread: the addresses, or an error code.
struct lookup_result {
    std::vector<address> addrs;
    std::error_code error;
};

GORO_DECL lookup_result lookup(const std::string& host, std::uint16_t port);

}  // namespace detail

/// The addresses of `host` (IPv4 and IPv6), each with `port`. Throws
/// goro::io_error naming "goro::net::resolve" and the host when the name is
/// unknown (code() in the "getaddrinfo" category), or when `ctx` ends the wait.
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::net::resolve: co_await it")]] inline task<std::vector<address>> resolve(std::string host,
                                                                                           std::uint16_t port,
                                                                                           context ctx = {}) {
    static constexpr const char* op = "goro::net::resolve";
    if (std::optional<address> a = address::from_host(host, port)) co_return std::vector<address>{*a};
    if (ctx == context{}) {
        detail::lookup_result r = co_await goro::blocking([&] { return detail::lookup(host, port); });
        if (r.error) throw io_error(r.error, std::string(op) + " " + host);
        co_return std::move(r.addrs);
    }
    // With a context: the lookup runs in its own task, which outlives this
    // one if the context ends the wait first; its result arrives on a channel.
    channel<detail::lookup_result> done(1);
    go([](std::string h, std::uint16_t p, channel<detail::lookup_result> out) -> task<> {
        detail::lookup_result r = co_await goro::blocking([&] { return detail::lookup(h, p); });
        (void)out.try_send(std::move(r));  // capacity 1, one send: never full
    }(host, port, done));
    auto got = co_await select(recv(done), ctx.done());
    if (got.index() == 1)
        goro::detail::throw_io(ctx.err() == context_error::deadline_exceeded ? io_errc::deadline_exceeded
                                                                             : io_errc::canceled,
                               std::string(op) + " " + host);
    auto v = std::move(got.template get<0>());  // `template`: co_await makes got dependent here
    if (!v) goro::detail::throw_io(io_errc::closed, std::string(op) + " " + host);
    detail::lookup_result r = std::move(*v);
    if (r.error) throw io_error(r.error, std::string(op) + " " + host);
    co_return std::move(r.addrs);
}

}  // namespace goro::net

#if GORO_BODIES
#include <netdb.h>

namespace goro::net::detail {

GORO_DECL std::string gai_category_impl::message(int c) const { return ::gai_strerror(c); }

GORO_DECL lookup_result lookup(const std::string& host, std::uint16_t port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    addrinfo* res = nullptr;
    lookup_result out;
    int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (rc != 0) {
        out.error = rc == EAI_SYSTEM ? std::error_code(errno, std::system_category()) : std::error_code(rc, gai_category());
        return out;
    }
    for (addrinfo* p = res; p; p = p->ai_next)
        if (p->ai_family == AF_INET || p->ai_family == AF_INET6)
            out.addrs.push_back(address::from(p->ai_addr, p->ai_addrlen));
    ::freeaddrinfo(res);
    if (out.addrs.empty()) out.error = std::error_code(EAI_NONAME, gai_category());
    return out;
}

}  // namespace goro::net::detail
#endif  // GORO_BODIES
