// Tests for goro/http/address.hpp: bind addresses and Host checks.

#include <goro/http/address.hpp>

#include <catch2/catch.hpp>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_address {

TEST_CASE("is_loopback_host accepts only names of this machine", "[address]") {

    CHECK(goro::detail::is_loopback_host("localhost"));
    CHECK(goro::detail::is_loopback_host("LOCALHOST:6060"));
    CHECK(goro::detail::is_loopback_host("app.localhost:1"));
    CHECK(goro::detail::is_loopback_host("127.0.0.1:6060"));
    CHECK(goro::detail::is_loopback_host("127.1.2.3"));
    CHECK(goro::detail::is_loopback_host("[::1]:6060"));
    CHECK_FALSE(goro::detail::is_loopback_host("evil.example:6060"));
    CHECK_FALSE(goro::detail::is_loopback_host("localhost.evil.example"));
    CHECK_FALSE(goro::detail::is_loopback_host("10.0.0.1"));
    CHECK_FALSE(goro::detail::is_loopback_host("[::2]"));
}

TEST_CASE("IPv4-mapped addresses are IPv4 endpoints", "[address]") {
    auto a = goro::detail::parse_bind_address("::ffff:127.0.0.1");
    REQUIRE(a);
    CHECK(a->family == AF_INET);
    CHECK(a->loopback);
    CHECK(a->text == "127.0.0.1");
    auto b = goro::detail::parse_bind_address("[::FFFF:7f00:2]");
    REQUIRE(b);
    CHECK(b->family == AF_INET);
    CHECK(b->text == "127.0.0.2");
    auto c = goro::detail::parse_bind_address("::ffff:192.168.0.1");
    REQUIRE(c);
    CHECK_FALSE(c->loopback);
    auto d = goro::detail::parse_bind_address("::1");
    REQUIRE(d);
    CHECK(d->family == AF_INET6);
    CHECK(d->loopback);
    CHECK(goro::detail::is_loopback_host("[::ffff:127.0.0.1]:6060"));
    CHECK_FALSE(goro::detail::is_loopback_host("[::ffff:10.0.0.1]"));
    CHECK_FALSE(goro::detail::parse_bind_address("fe80::1%lo"));
}

}  // namespace tests_address
