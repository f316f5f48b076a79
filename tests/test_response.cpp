// Tests for goro/http/response.hpp: response helpers, escaping, dates.

#include <goro/http/response.hpp>

#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <algorithm>
#include <ostream>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_response {

TEST_CASE("helpers: constant_time_equal, html escaping, http date", "[response]") {
    using goro::detail::constant_time_equal;
    CHECK(constant_time_equal("secret", "secret"));
    CHECK_FALSE(constant_time_equal("secreT", "secret"));
    CHECK_FALSE(constant_time_equal("secret1", "secret"));
    CHECK_FALSE(constant_time_equal("secre", "secret"));
    CHECK_FALSE(constant_time_equal("", "secret"));
    CHECK(constant_time_equal("", ""));

    std::string out;
    goro::detail::append_html_escaped(out, "<a href=\"x\">&'");
    CHECK(out == "&lt;a href=&#34;x&#34;&gt;&amp;&#39;");

}

TEST_CASE("response helpers refuse what HTTP cannot carry", "[response]") {
    goro::debug_response r;
    r.set_header("X-A", "1");
    r.set_header("x-a", "2");
    REQUIRE(r.headers.size() == 1);
    CHECK(r.headers[0].second == "2");
    r.set_header("Content-Type", "application/json");
    CHECK(r.content_type == "application/json");
    CHECK_THROWS_AS(r.set_header("Content-Length", "3"), std::invalid_argument);
    CHECK_THROWS_AS(r.set_header("X-B", "a\r\nSet-Cookie: x"), std::invalid_argument);
    CHECK_THROWS_AS(r.set_header("X B", "v"), std::invalid_argument);
    r.set_attachment("go\"routine");
    CHECK(r.headers.back().second == "attachment; filename=\"go\\\"routine\"");
}

TEST_CASE("utf8_escaped keeps UTF-8 and escapes everything else", "[response]") {
    using goro::detail::utf8_escaped;
    CHECK(utf8_escaped("plain text\tand\nlines") == "plain text\tand\nlines");
    CHECK(utf8_escaped("\xe2\x82\xac \xf0\x9f\x98\x80 \xc3\xa9") == "\xe2\x82\xac \xf0\x9f\x98\x80 \xc3\xa9");
    CHECK(utf8_escaped("\x80") == "\\x80");
    CHECK(utf8_escaped("a\xff" "b") == "a\\xffb");
    CHECK(utf8_escaped("\xc0\xaf") == "\\xc0\\xaf");          // overlong '/'
    CHECK(utf8_escaped("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a surrogate
    CHECK(utf8_escaped("\xe2\x82") == "\\xe2\\x82");          // truncated
    CHECK(utf8_escaped("\x1b[31m\x7f") == "\\x1b[31m\\x7f");
    CHECK(utf8_escaped(std::string("a\0b", 3)) == "a\\x00b");
}

TEST_CASE("a streamed body keeps every byte in order across its blocks", "[response]") {
    using goro::detail::body_blocks;
    // A pattern that differs at every offset modulo a prime, written in
    // uneven pieces so that writes straddle block boundaries.
    const std::size_t total = 3 * body_blocks::max_block + 12345;
    std::string expect;
    expect.reserve(total);
    for (std::size_t i = 0; i < total; ++i) expect.push_back(static_cast<char>('a' + i % 23));

    goro::debug_response r;
    CHECK(r.streamed_size() == 0);
    std::ostream& os = r.stream();
    std::size_t at = 0, piece = 1;
    while (at < total) {
        const std::size_t n = std::min(piece, total - at);
        if (n == 1) os.put(expect[at]);
        else os.write(expect.data() + at, static_cast<std::streamsize>(n));
        at += n;
        piece = piece * 7 % 100'003 + 1;
    }
    CHECK(os.good());
    CHECK(r.streamed_size() == total);
    body_blocks b = r.take_streamed();
    CHECK(r.streamed_size() == 0);
    REQUIRE(b.size() == total);
    // Blocks grow from 64 KiB to 1 MiB, each filled before the next begins.
    REQUIRE(b.blocks().size() >= 2);
    CHECK(b.blocks().front().capacity == body_blocks::first_block);
    for (std::size_t i = 0; i + 1 < b.blocks().size(); ++i) {
        CHECK(b.blocks()[i].size == b.blocks()[i].capacity);
        CHECK(b.blocks()[i].capacity <= body_blocks::max_block);
    }
    CHECK(b.str() == expect);

    body_blocks moved = std::move(b);
    CHECK(b.empty());
    CHECK(moved.size() == total);

    // A 204 may not carry a streamed body either.
    goro::debug_response nc;
    nc.status = 204;
    nc.stream() << "x";
    CHECK_FALSE(goro::detail::check_response(nc).empty());
}

}  // namespace tests_response
