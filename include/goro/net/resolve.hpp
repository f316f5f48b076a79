// goro/net/resolve.hpp — `goro::net::resolve(host, port)`: host names to addresses.
//
//   std::vector<goro::net::address> all = co_await goro::net::resolve("example.com", 443);
//
// Numeric hosts and "localhost" are answered at once, without a lookup.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <goro/core/task.hpp>
#include <goro/io/poller.hpp>
#include <goro/net/address.hpp>
#include <goro/sync/context.hpp>

namespace goro::net {

/// The addresses of `host` (IPv4 and IPv6), each with `port`. Throws
/// goro::io_error naming "goro::net::resolve" when the name is unknown.
[[nodiscard("goro::net::resolve: co_await it")]] inline task<std::vector<address>> resolve(std::string host,
                                                                                           std::uint16_t port,
                                                                                           context ctx = {}) {
    static constexpr const char* op = "goro::net::resolve";
    ctx.throw_if_done();
    if (std::optional<address> a = address::from_host(host, port)) co_return std::vector<address>{*a};
    throw usage_error(std::string(op) + ": \"" + host +
                      "\": only numeric addresses and localhost are supported in this build");
}

}  // namespace goro::net
