// Tests for goro/http/address.hpp: bind addresses and Host checks.

#include <goro/http/address.hpp>

#include <catch2/catch.hpp>

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
