// Tests for goro/http/response.hpp: response helpers, escaping, dates.

#include <goro/http/response.hpp>

#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>

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

}  // namespace tests_response
