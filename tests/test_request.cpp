// Tests for goro/http/request.hpp: the pure HTTP request-head parser.

#include <goro/http/request.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <string_view>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_request {

namespace {

using goro::detail::http_parse_result;
using goro::detail::http_parse_status;
using goro::detail::parse_http_request;

http_parse_result parse(std::string_view s, goro::debug_server_limits limits = {}) {
    return parse_http_request(s, limits);
}

int error_of(std::string_view s, goro::debug_server_limits limits = {}) {
    auto r = parse(s, limits);
    INFO("input: " << std::string(s));
    REQUIRE(r.status == http_parse_status::error);
    return r.error_status;
}

std::string header_of(const goro::detail::http_request_head& h, std::string_view name) {
    for (const auto& [k, v] : h.headers)
        if (goro::detail::iequals(k, name)) return v;
    return "<absent>";
}

}  // namespace

// ===========================================================================
// Parser
// ===========================================================================

TEST_CASE("parser: a simple GET", "[request]") {
    std::string req = "GET /debug/pprof/goroutine?debug=1 HTTP/1.1\r\nHost: localhost:6060\r\n"
                      "User-Agent: curl/7.88\r\nAccept: */*\r\n\r\n";
    auto r = parse(req + "GET /next");
    REQUIRE(r.status == http_parse_status::complete);
    CHECK(r.consumed == req.size());
    CHECK(r.request.method == "GET");
    CHECK(r.request.target == "/debug/pprof/goroutine?debug=1");
    CHECK(r.request.path == "/debug/pprof/goroutine");
    CHECK(r.request.raw_query == "debug=1");
    REQUIRE(r.request.query.size() == 1);
    CHECK(r.request.query[0] == std::pair<std::string, std::string>{"debug", "1"});
    CHECK(r.request.version_minor == 1);
    CHECK(r.request.keep_alive);
    CHECK_FALSE(r.request.has_body);
    REQUIRE(r.request.headers.size() == 3);
    CHECK(header_of(r.request, "host") == "localhost:6060");
    CHECK(header_of(r.request, "USER-AGENT") == "curl/7.88");
}

TEST_CASE("parser: every prefix of a valid head is incomplete", "[request]") {
    std::string req = "\r\nHEAD /a%20b?x=1&y HTTP/1.1\r\nHost: [::1]:80\r\nX-Empty:\r\nX-Tab:\t v \t\r\n\r\n";
    for (std::size_t n = 0; n < req.size(); ++n) {
        INFO("prefix length " << n);
        CHECK(parse(std::string_view(req).substr(0, n)).status == http_parse_status::incomplete);
    }
    auto r = parse(req);
    REQUIRE(r.status == http_parse_status::complete);
    CHECK(r.consumed == req.size());
    CHECK(r.request.method == "HEAD");
    CHECK(r.request.path == "/a b");
    CHECK(header_of(r.request, "x-empty").empty());
    CHECK(header_of(r.request, "x-tab") == "v");
}

TEST_CASE("parser: bare LF line endings, leading empty lines", "[request]") {
    auto r = parse("\n\r\nGET / HTTP/1.1\nHost: a\n\n");
    REQUIRE(r.status == http_parse_status::complete);
    CHECK(r.request.path == "/");
    CHECK(r.consumed == std::string_view("\n\r\nGET / HTTP/1.1\nHost: a\n\n").size());
}

TEST_CASE("parser: percent-decoding of the path", "[request]") {
    auto path_of = [](std::string target) {
        auto r = parse("GET " + target + " HTTP/1.1\r\nHost: a\r\n\r\n");
        REQUIRE(r.status == http_parse_status::complete);
        return r.request.path;
    };
    CHECK(path_of("/a%20b") == "/a b");
    CHECK(path_of("/a%2fb%2F") == "/a/b/");
    CHECK(path_of("/a+b") == "/a+b");  // '+' is a space only in queries
    CHECK(path_of("/%C3%A9t%C3%A9") == "/\xC3\xA9t\xC3\xA9");
    CHECK(path_of("/debug/pprof/../x") == "/debug/pprof/../x");  // no normalisation: exact match
    CHECK(error_of("GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
    CHECK(error_of("GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
    CHECK(error_of("GET /a% HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
    CHECK(error_of("GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
}

TEST_CASE("parser: query strings", "[request]") {
    auto query_of = [](std::string q) {
        auto r = parse("GET /p?" + q + " HTTP/1.1\r\nHost: a\r\n\r\n");
        REQUIRE(r.status == http_parse_status::complete);
        return r.request.query;
    };
    using fields = goro::http_fields;
    CHECK(query_of("debug=1&seconds=5") == fields{{"debug", "1"}, {"seconds", "5"}});
    CHECK(query_of("a=1&a=2") == fields{{"a", "1"}, {"a", "2"}});
    CHECK(query_of("a+b=c+d%2B") == fields{{"a b", "c d+"}});
    CHECK(query_of("flag&&x=&=v") == fields{{"flag", ""}, {"x", ""}, {"", "v"}});
    CHECK(query_of("k=%3D%26") == fields{{"k", "=&"}});
    CHECK(query_of("").empty());
    CHECK(error_of("GET /p?a=%G0 HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
    CHECK(error_of("GET /p?a=%00 HTTP/1.1\r\nHost: a\r\n\r\n") == 400);

    goro::debug_request empty;
    CHECK_FALSE(empty.param("x").has_value());
}

TEST_CASE("parser: absolute-form and asterisk targets", "[request]") {
    auto r = parse("GET http://localhost:6060/debug/pprof/?x=1 HTTP/1.1\r\nHost: localhost:6060\r\n\r\n");
    REQUIRE(r.status == http_parse_status::complete);
    CHECK(r.request.authority == "localhost:6060");
    CHECK(r.request.path == "/debug/pprof/");
    CHECK(r.request.raw_query == "x=1");
    r = parse("GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n");
    REQUIRE(r.status == http_parse_status::complete);
    CHECK(r.request.path == "/");
    r = parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    REQUIRE(r.status == http_parse_status::complete);
    CHECK(r.request.path == "*");
    CHECK(error_of("GET * HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    CHECK(error_of("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    CHECK(error_of("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
}

TEST_CASE("parser: malformed request lines are 400", "[request]") {
    const char* bad[] = {
        "GET\r\n\r\n",
        "GET /\r\n\r\n",                             // HTTP/0.9
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",        // two spaces
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",        // trailing space
        " GET / HTTP/1.1\r\nHost: a\r\n\r\n",        // leading space
        "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",         // method not a token
        "GET / http/1.1\r\nHost: a\r\n\r\n",         // version is case-sensitive
        "GET / HTTP/1.10\r\nHost: a\r\n\r\n",
        "GET / HTTP/1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.x\r\nHost: a\r\n\r\n",
        "GET relative HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", // raw non-ASCII in the target
        "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n",     // bare CR
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  // a TLS ClientHello: at once, no newline needed
    };
    for (const char* b : bad) CHECK(error_of(b) == 400);
    CHECK(error_of("GET / HTTP/2.0\r\nHost: a\r\n\r\n") == 505);
    CHECK(error_of("GET / HTTP/0.9\r\nHost: a\r\n\r\n") == 505);
}

TEST_CASE("parser: malformed header sections are 400", "[request]") {
    const char* bad[] = {
        "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nName : v\r\n\r\n",           // blank before the colon
        "GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",                // empty name
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n",   // obs-fold
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n",          // control byte
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",            // bare CR
        "GET / HTTP/1.1\r\n\r\n",                                  // HTTP/1.1 without Host
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    };
    for (const char* b : bad) CHECK(error_of(b) == 400);
}

TEST_CASE("parser: connection semantics and bodies", "[request]") {
    auto head = [](std::string s) {
        auto r = parse(s);
        REQUIRE(r.status == http_parse_status::complete);
        return r.request;
    };
    CHECK(head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
    CHECK_FALSE(head("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n").keep_alive);
    CHECK_FALSE(head("GET / HTTP/1.1\r\nHost: a\r\nConnection: te, close\r\n\r\n").keep_alive);
    CHECK_FALSE(head("GET / HTTP/1.0\r\n\r\n").keep_alive);  // HTTP/1.0 needs no Host
    CHECK(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    CHECK(head("GET / HTTP/1.2\r\nHost: a\r\n\r\n").version_minor == 2);
    CHECK_FALSE(head("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").has_body);
    CHECK(head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").has_body);
    CHECK(head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").has_body);
    CHECK(head("get / HTTP/1.1\r\nHost: a\r\n\r\n").method == "get");  // a token; the server answers 405
}

TEST_CASE("parser: limits", "[request]") {
    goro::debug_server_limits lim;
    lim.max_request_line = 64;
    lim.max_header_bytes = 128;
    lim.max_header_count = 4;

    std::string target_at_limit = "/" + std::string(64 - 4 - 1 - 9, 'a');  // "GET " + target + " HTTP/1.1"
    std::string line = "GET " + target_at_limit + " HTTP/1.1";
    REQUIRE(line.size() == 64);
    CHECK(parse(line + "\r\nHost: a\r\n\r\n", lim).status == http_parse_status::complete);
    CHECK(error_of("GET " + target_at_limit + "b HTTP/1.1\r\nHost: a\r\n\r\n", lim) == 414);
    // Known before the line ends: no need to wait for a client that never sends LF.
    CHECK(error_of("GET /" + std::string(70, 'a'), lim) == 414);
    CHECK(parse("GET /" + std::string(60, 'a'), lim).status == http_parse_status::incomplete);

    // 128 bytes of fields, final CRLF included, is the most allowed.
    std::string fields = "Host: a\r\nX: " + std::string(128 - 9 - 5 - 2, 'v') + "\r\n\r\n";
    REQUIRE(fields.size() == 128);
    CHECK(parse("GET / HTTP/1.1\r\n" + fields, lim).status == http_parse_status::complete);
    fields.insert(12, "v");
    CHECK(error_of("GET / HTTP/1.1\r\n" + fields, lim) == 431);
    CHECK(error_of("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(200, 'v'), lim) == 431);

    CHECK(parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", lim).status ==
          http_parse_status::complete);
    CHECK(error_of("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", lim) == 431);

    CHECK(error_of(std::string(100, '\n') + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", lim) == 400);
}

TEST_CASE("parser: an error is final as soon as it is seen", "[request]") {
    std::string bad = "GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\nMore: x\r\n\r\n";
    std::size_t error_at = bad.find("More");
    for (std::size_t n = 0; n <= bad.size(); ++n) {
        auto r = parse(std::string_view(bad).substr(0, n));
        INFO("prefix length " << n);
        if (n < error_at) CHECK(r.status == http_parse_status::incomplete);
        else CHECK((r.status == http_parse_status::error && r.error_status == 400));
    }
}

}  // namespace tests_request
