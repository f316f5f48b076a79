// Tests for goro::debug_server: the pure HTTP parser first, then the server
// over loopback with a small blocking client. Every wait has a deadline; no
// assertion depends on how fast anything runs.

#include <goro/http/debug_server.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using goro::detail::http_parse_result;
using goro::detail::http_parse_status;
using goro::detail::parse_http_request;
using namespace std::chrono_literals;

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

// ---------------------------------------------------------------------------
// A blocking client with timeouts, enough HTTP to read one response. It
// reports trouble by throwing, never with Catch2 macros: those are not
// thread-safe and the client runs on several threads at once.
// ---------------------------------------------------------------------------

void expect(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string("test client: ") + what);
}

struct reply {
    int status = 0;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    bool closed = false;  // the server closed the connection after it

    std::string header(std::string_view name) const {
        for (const auto& [k, v] : headers)
            if (goro::detail::iequals(k, name)) return v;
        return "<absent>";
    }
    bool has_header(std::string_view name) const { return header(name) != "<absent>"; }
};

class client {
public:
    explicit client(std::uint16_t port, bool v6 = false) {
        fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
        expect(fd_ >= 0, "socket");
        timeval tv{10, 0};  // a hung server fails the test instead of hanging it
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int rc;
        if (v6) {
            sockaddr_in6 a{};
            a.sin6_family = AF_INET6;
            a.sin6_port = htons(port);
            a.sin6_addr = in6addr_loopback;
            rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        } else {
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(port);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        }
        if (rc != 0) ::close(fd_);
        expect(rc == 0, "connect");
    }
    ~client() {
        if (fd_ >= 0) ::close(fd_);
    }
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    int fd() const { return fd_; }

    bool send_all(std::string_view s) {
        while (!s.empty()) {
            ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            s.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    // Reads one response; for HEAD there is no body whatever Content-Length says.
    reply read_reply(bool head_request = false) {
        reply r;
        std::size_t end;
        while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
            if (!fill()) {
                r.closed = true;
                return r;  // status 0: no (complete) response
            }
        }
        std::string head = buf_.substr(0, end);
        buf_.erase(0, end + 4);
        std::size_t line_end = head.find("\r\n");
        std::string status_line = head.substr(0, line_end);
        expect(status_line.rfind("HTTP/1.1 ", 0) == 0, "status line");
        r.status = std::stoi(status_line.substr(9, 3));
        std::size_t p = line_end == std::string::npos ? head.size() : line_end + 2;
        while (p < head.size()) {
            std::size_t e = head.find("\r\n", p);
            if (e == std::string::npos) e = head.size();
            std::string line = head.substr(p, e - p);
            std::size_t colon = line.find(':');
            expect(colon != std::string::npos, "header line without ':'");
            std::string value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ') value.erase(0, 1);
            r.headers.emplace_back(line.substr(0, colon), value);
            p = e + 2;
        }
        std::size_t length = 0;
        if (r.has_header("Content-Length")) length = std::stoul(r.header("Content-Length"));
        if (!head_request) {
            while (buf_.size() < length)
                if (!fill()) break;
            r.body = buf_.substr(0, length);
            buf_.erase(0, std::min(length, buf_.size()));
        }
        return r;
    }

    // True once the server has closed (EOF or reset), within the socket timeout.
    bool wait_closed() {
        for (;;) {
            char c[512];
            ssize_t n = ::recv(fd_, c, sizeof c, 0);
            if (n == 0) return true;
            if (n < 0) return errno == ECONNRESET;
        }
    }

    reply request(std::string_view raw, bool head_request = false) {
        expect(send_all(raw), "send");
        return read_reply(head_request);
    }

private:
    bool fill() {
        char tmp[4096];
        ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
        if (n <= 0) return false;
        buf_.append(tmp, static_cast<std::size_t>(n));
        return true;
    }

    int fd_ = -1;
    std::string buf_;
};

std::string get(std::string_view path, std::string_view extra = "") {
    return "GET " + std::string(path) + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" +
           std::string(extra) + "\r\n";
}

reply fetch(std::uint16_t port, std::string_view raw, bool head_request = false) {
    client c(port);
    return c.request(raw, head_request);
}

goro::debug_server::options test_options() {
    goro::debug_server::options o;
    o.port = 0;
    return o;
}

void hello(const goro::debug_request&, goro::debug_response& r) { r.body = "hello\n"; }

// Open file descriptors of this process; -1 where /proc is not there.
int open_fds() {
    DIR* d = ::opendir("/proc/self/fd");
    if (d == nullptr) return -1;
    int n = 0;
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
    return n;
}

template <class F>
bool eventually(F&& f, std::chrono::milliseconds limit = 10s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (f()) return true;
        std::this_thread::sleep_for(5ms);
    }
    return f();
}

}  // namespace

// ===========================================================================
// Parser
// ===========================================================================

TEST_CASE("parser: a simple GET", "[debug_server][parser]") {
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

TEST_CASE("parser: every prefix of a valid head is incomplete", "[debug_server][parser]") {
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

TEST_CASE("parser: bare LF line endings, leading empty lines", "[debug_server][parser]") {
    auto r = parse("\n\r\nGET / HTTP/1.1\nHost: a\n\n");
    REQUIRE(r.status == http_parse_status::complete);
    CHECK(r.request.path == "/");
    CHECK(r.consumed == std::string_view("\n\r\nGET / HTTP/1.1\nHost: a\n\n").size());
}

TEST_CASE("parser: percent-decoding of the path", "[debug_server][parser]") {
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

TEST_CASE("parser: query strings", "[debug_server][parser]") {
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

TEST_CASE("parser: absolute-form and asterisk targets", "[debug_server][parser]") {
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

TEST_CASE("parser: malformed request lines are 400", "[debug_server][parser]") {
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

TEST_CASE("parser: malformed header sections are 400", "[debug_server][parser]") {
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

TEST_CASE("parser: connection semantics and bodies", "[debug_server][parser]") {
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

TEST_CASE("parser: limits", "[debug_server][parser]") {
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

TEST_CASE("parser: an error is final as soon as it is seen", "[debug_server][parser]") {
    std::string bad = "GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\nMore: x\r\n\r\n";
    std::size_t error_at = bad.find("More");
    for (std::size_t n = 0; n <= bad.size(); ++n) {
        auto r = parse(std::string_view(bad).substr(0, n));
        INFO("prefix length " << n);
        if (n < error_at) CHECK(r.status == http_parse_status::incomplete);
        else CHECK((r.status == http_parse_status::error && r.error_status == 400));
    }
}

TEST_CASE("helpers: constant_time_equal, html escaping, http date", "[debug_server]") {
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

    CHECK(goro::detail::http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");

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

TEST_CASE("response helpers refuse what HTTP cannot carry", "[debug_server]") {
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

TEST_CASE("prometheus text writer", "[debug_server][prometheus]") {
    using goro::detail::metric_type;
    std::string out;
    goro::detail::prometheus_text_writer w(out);
    w.family("goro_goroutines", metric_type::gauge, "Goroutines that exist.\nBack\\slash");
    w.sample("goro_goroutines", 12);
    w.family("goro_tasks", metric_type::gauge, "Tasks by state.");
    w.sample("goro_tasks", {{"state", "waiting"}, {"reason", "chan \"re\\cv\"\n"}}, std::uint64_t{7});
    w.family("goro_ratio", metric_type::untyped, "r");
    w.sample("goro_ratio", 0.25);
    w.sample("goro_ratio", {{"k", "nan"}}, std::nan(""));
    w.sample("goro_ratio", {{"k", "inf"}}, -HUGE_VAL);
    std::vector<goro::detail::prometheus_text_writer::label> labels{{"a", "b"}};
    w.sample("goro_ratio", labels, true);
    CHECK(out ==
          "# HELP goro_goroutines Goroutines that exist.\\nBack\\\\slash\n"
          "# TYPE goro_goroutines gauge\n"
          "goro_goroutines 12\n"
          "# HELP goro_tasks Tasks by state.\n"
          "# TYPE goro_tasks gauge\n"
          "goro_tasks{state=\"waiting\",reason=\"chan \\\"re\\\\cv\\\"\\n\"} 7\n"
          "# HELP goro_ratio r\n"
          "# TYPE goro_ratio untyped\n"
          "goro_ratio 0.25\n"
          "goro_ratio{k=\"nan\"} NaN\n"
          "goro_ratio{k=\"inf\"} -Inf\n"
          "goro_ratio{a=\"b\"} 1\n");
    CHECK_THROWS_AS(w.family("goro_tasks", metric_type::gauge, "again"), std::invalid_argument);
    CHECK_THROWS_AS(w.family("1bad", metric_type::gauge, ""), std::invalid_argument);
    CHECK_THROWS_AS(w.sample("bad-name", 1), std::invalid_argument);
    CHECK_THROWS_AS(w.sample("ok", {{"__reserved", "x"}}, 1), std::invalid_argument);
    CHECK_THROWS_AS(w.sample("ok", {{"a:b", "x"}}, 1), std::invalid_argument);
    CHECK(goro::detail::prometheus_content_type == "text/plain; version=0.0.4; charset=utf-8");
}

// ===========================================================================
// Server over loopback
// ===========================================================================

TEST_CASE("options are validated at construction", "[debug_server]") {
    auto with_address = [](std::string a) {
        auto o = test_options();
        o.address = std::move(a);
        return o;
    };
    for (const char* a : {"0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "::ffff:10.0.0.1"}) {
        INFO(a);
        try {
            goro::debug_server s(with_address(a));
            FAIL("a non-loopback address was accepted");
        } catch (const std::invalid_argument& e) {
            CHECK_THAT(e.what(), Catch::Contains("goro::debug_server") &&
                                     Catch::Contains("allow_non_loopback"));
        }
    }
    CHECK_THROWS_AS(goro::debug_server(with_address("not an address")), std::invalid_argument);
    CHECK_THROWS_AS(goro::debug_server(with_address("example.com")), std::invalid_argument);
    for (const char* a : {"127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"})
        CHECK_NOTHROW(goro::debug_server(with_address(a)));

    auto o = test_options();
    o.bearer_token = "has space";
    CHECK_THROWS_AS(goro::debug_server(o), std::invalid_argument);
    o = test_options();
    o.max_connections = 0;
    CHECK_THROWS_AS(goro::debug_server(o), std::invalid_argument);
    o = test_options();
    o.with_default_routes = true;  // the goroutine routes (tested in test_leak_hunt.cpp)
    CHECK_NOTHROW(goro::debug_server(o));
}

TEST_CASE("non-loopback with the opt-in serves", "[debug_server]") {
    auto o = test_options();
    o.address = "0.0.0.0";
    o.allow_non_loopback = true;
    goro::debug_server s(o);
    s.handle("/hello", hello);
    s.start();
    // Host is not checked off loopback; reached here through 127.0.0.1.
    auto r = fetch(s.port(), "GET /hello HTTP/1.1\r\nHost: box.example:1\r\nConnection: close\r\n\r\n");
    CHECK(r.status == 200);
}

TEST_CASE("GET, HEAD and the headers every response has", "[debug_server]") {
    goro::debug_server s(test_options());
    CHECK_FALSE(s.running());
    s.handle("/hello", [](const goro::debug_request& req, goro::debug_response& r) {
        r.body = "hello " + std::string(req.param("name").value_or("world")) + "\n";
        r.set_header("X-Method", req.method());
        r.set_header("X-Agent", req.header("user-agent").value_or("-"));
        r.set_header("X-Remote-Is-Loopback", req.remote_address().rfind("127.0.0.1:", 0) == 0 ? "yes" : "no");
    });
    s.start();
    REQUIRE(s.running());
    REQUIRE(s.port() != 0);
    CHECK(s.url() == "http://127.0.0.1:" + std::to_string(s.port()));

    auto r = fetch(s.port(), get("/hello?name=g%C3%B6ro+x", "User-Agent: t/1\r\n"));
    CHECK(r.status == 200);
    CHECK(r.body == "hello g\xC3\xB6ro x\n");
    CHECK(r.header("Content-Type") == "text/plain; charset=utf-8");
    CHECK(r.header("Content-Length") == std::to_string(r.body.size()));
    CHECK(r.header("X-Content-Type-Options") == "nosniff");
    CHECK(r.header("Connection") == "close");
    CHECK(r.header("Date").size() == 29);
    CHECK(r.header("X-Method") == "GET");
    CHECK(r.header("X-Agent") == "t/1");
    CHECK(r.header("X-Remote-Is-Loopback") == "yes");

    client c(s.port());
    auto h = c.request("HEAD /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", true);
    CHECK(h.status == 200);
    CHECK(h.header("Content-Length") == "12");  // the GET body's length
    CHECK(h.header("X-Method") == "HEAD");
    CHECK(c.wait_closed());  // and no body bytes before the close
    CHECK(h.body.empty());
}

TEST_CASE("405, 404, 400, 414, 431, 505 over the wire", "[debug_server]") {
    auto o = test_options();
    o.limits.max_request_line = 256;
    o.limits.max_header_bytes = 1024;
    goro::debug_server s(o);
    s.handle("/hello", hello);
    s.start();

    auto r = fetch(s.port(), "POST /hello HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc");
    CHECK(r.status == 405);
    CHECK(r.header("Allow") == "GET, HEAD");
    CHECK(r.header("Connection") == "close");  // it had a body, which nobody reads

    CHECK(fetch(s.port(), "DELETE /nope HTTP/1.1\r\nHost: localhost\r\n\r\n").status == 405);
    r = fetch(s.port(), get("/nope"));
    CHECK(r.status == 404);
    CHECK(r.header("Content-Type") == "text/plain; charset=utf-8");
    CHECK(r.header("X-Content-Type-Options") == "nosniff");
    CHECK(fetch(s.port(), get("/hello/")).status == 404);

    r = fetch(s.port(), "this is not http\r\n\r\n");
    CHECK(r.status == 400);
    CHECK(r.header("Connection") == "close");
    CHECK(fetch(s.port(), "GET /hello HTTP/1.1\r\n\r\n").status == 400);  // no Host
    CHECK(fetch(s.port(), "GET /hello HTTP/3.0\r\nHost: localhost\r\n\r\n").status == 505);
    CHECK(fetch(s.port(), get("/" + std::string(300, 'a'))).status == 414);
    r = fetch(s.port(), get("/hello", "X-Big: " + std::string(2000, 'b') + "\r\n"));
    CHECK(r.status == 431);
    CHECK_THAT(r.body, Catch::Contains("1024"));

    // The server is still healthy afterwards.
    CHECK(fetch(s.port(), get("/hello")).status == 200);
    CHECK(s.stats().bad_requests == 5);
}

TEST_CASE("a 431 arrives even while the client is still sending", "[debug_server]") {
    goro::debug_server s(test_options());
    s.start();
    client c(s.port());
    // 200 KiB of headers: the server answers at 16 KiB and discards the rest,
    // so the response is not destroyed by a connection reset.
    std::string big = "GET / HTTP/1.1\r\nHost: localhost\r\n";
    for (int i = 0; i < 200; ++i) big += "X-Filler-" + std::to_string(i) + ": " + std::string(1000, 'f') + "\r\n";
    std::thread sender([&] { c.send_all(big); });
    auto r = c.read_reply();
    sender.join();
    CHECK(r.status == 431);
}

TEST_CASE("keep-alive, pipelining and Connection: close", "[debug_server]") {
    goro::debug_server s(test_options());
    std::atomic<int> calls{0};
    s.handle("/n", [&](const goro::debug_request&, goro::debug_response& r) {
        r.body = std::to_string(++calls);
    });
    s.start();
    client c(s.port());
    auto r1 = c.request("GET /n HTTP/1.1\r\nHost: localhost\r\n\r\n");
    CHECK(r1.status == 200);
    CHECK(r1.body == "1");
    CHECK_FALSE(r1.has_header("Connection"));
    // Three pipelined in one write, the last one closing.
    REQUIRE(c.send_all("GET /n HTTP/1.1\r\nHost: localhost\r\n\r\n"
                       "HEAD /n HTTP/1.1\r\nHost: localhost\r\n\r\n"
                       "GET /n HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
    auto r2 = c.read_reply();
    auto r3 = c.read_reply(true);
    auto r4 = c.read_reply();
    CHECK(r2.body == "2");
    CHECK(r3.status == 200);
    CHECK(r3.header("Content-Length") == "1");
    CHECK(r4.body == "4");
    CHECK(r4.header("Connection") == "close");
    CHECK(c.wait_closed());

    // HTTP/1.0 closes unless asked to keep alive.
    client d(s.port());
    auto r5 = d.request("GET /n HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(r5.header("Connection") == "keep-alive");
    auto r6 = d.request("GET /n HTTP/1.0\r\n\r\n");
    CHECK(r6.header("Connection") == "close");
    CHECK(d.wait_closed());
}

TEST_CASE("bearer token", "[debug_server]") {
    auto o = test_options();
    o.bearer_token = "s3cr3t-T0ken";
    goro::debug_server s(o);
    s.handle("/hello", hello);
    s.start();

    auto r = fetch(s.port(), get("/hello"));
    CHECK(r.status == 401);
    CHECK_THAT(r.header("WWW-Authenticate"), Catch::StartsWith("Bearer"));
    CHECK(r.body.find("s3cr3t") == std::string::npos);
    r = fetch(s.port(), get("/nope"));
    CHECK(r.status == 401);  // not 404: no probing of paths without the token
    r = fetch(s.port(), get("/hello", "Authorization: Bearer s3cr3t-T0keN\r\n"));
    CHECK(r.status == 401);
    CHECK_THAT(r.header("WWW-Authenticate"), Catch::Contains("invalid_token"));
    CHECK(fetch(s.port(), get("/hello", "Authorization: Bearer s3cr3t-T0ke\r\n")).status == 401);
    CHECK(fetch(s.port(), get("/hello", "Authorization: Basic czNjcjN0LVQwa2Vu\r\n")).status == 401);
    CHECK(fetch(s.port(), get("/hello", "Authorization: Bearer s3cr3t-T0ken\r\n"
                                        "Authorization: Bearer s3cr3t-T0ken\r\n")).status == 401);
    CHECK(fetch(s.port(), "POST /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").status == 401);

    r = fetch(s.port(), get("/hello", "Authorization: Bearer s3cr3t-T0ken\r\n"));
    CHECK(r.status == 200);
    CHECK(r.body == "hello\n");
    CHECK(fetch(s.port(), get("/hello", "authorization: bearer   s3cr3t-T0ken\r\n")).status == 200);
    CHECK(fetch(s.port(), get("/debug/pprof/", "Authorization: Bearer s3cr3t-T0ken\r\n")).status == 200);
}

TEST_CASE("Host must be a loopback name while bound to loopback", "[debug_server]") {
    goro::debug_server s(test_options());
    s.handle("/hello", hello);
    s.start();
    auto with_host = [&](std::string host) {
        return fetch(s.port(), "GET /hello HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n").status;
    };
    CHECK(with_host("localhost:" + std::to_string(s.port())) == 200);
    CHECK(with_host("127.0.0.1:" + std::to_string(s.port())) == 200);
    CHECK(with_host("[::1]") == 200);
    CHECK(with_host("rebind.attacker.example:" + std::to_string(s.port())) == 403);
    CHECK(fetch(s.port(), "GET http://evil.example/hello HTTP/1.1\r\nHost: localhost\r\n\r\n").status == 403);
    CHECK(fetch(s.port(), "GET /hello HTTP/1.0\r\n\r\n").status == 200);

    auto o = test_options();
    o.check_host = false;
    goro::debug_server open(o);
    open.handle("/hello", hello);
    open.start();
    CHECK(fetch(open.port(), "GET /hello HTTP/1.1\r\nHost: proxy.example\r\nConnection: close\r\n\r\n").status == 200);
}

TEST_CASE("IPv6 loopback", "[debug_server]") {
    auto o = test_options();
    o.address = "::1";
    goro::debug_server s(o);
    s.handle("/hello", hello);
    try {
        s.start();
    } catch (const std::system_error& e) {
        WARN("no IPv6 loopback here, skipped: " << e.what());
        return;
    }
    CHECK(s.url() == "http://[::1]:" + std::to_string(s.port()));
    client c(s.port(), true);
    auto r = c.request("GET /hello HTTP/1.1\r\nHost: [::1]:" + std::to_string(s.port()) + "\r\n\r\n");
    CHECK(r.status == 200);
    CHECK(r.body == "hello\n");
}

TEST_CASE("bind failure names the address and the operation", "[debug_server]") {
    goro::debug_server a(test_options());
    a.start();
    auto o = test_options();
    o.port = a.port();
    goro::debug_server b(o);
    try {
        b.start();
        FAIL("a second server bound the same port");
    } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::address_in_use);
        CHECK_THAT(e.what(), Catch::Contains("goro::debug_server::start: bind 127.0.0.1:" +
                                              std::to_string(a.port())));
    }
    CHECK_FALSE(b.running());
    CHECK_THROWS_AS(a.start(), std::logic_error);  // already running
    a.stop();
    b.start();  // the port is free again (SO_REUSEADDR despite TIME_WAIT)
    CHECK(b.running());
}

TEST_CASE("handler errors become 500 with the message", "[debug_server]") {
    goro::debug_server s(test_options());
    s.handle("/throws", [](const goro::debug_request&, goro::debug_response&) {
        throw std::runtime_error("the snapshot broke");
    });
    s.handle("/throws-int", [](const goro::debug_request&, goro::debug_response&) { throw 42; });
    s.handle("/bad-header", [](const goro::debug_request&, goro::debug_response& r) {
        r.headers.emplace_back("X-Injected", "a\r\nSet-Cookie: evil=1");
    });
    s.handle("/managed-header", [](const goro::debug_request&, goro::debug_response& r) {
        r.headers.emplace_back("Content-Length", "1");
    });
    s.handle("/bad-status", [](const goro::debug_request&, goro::debug_response& r) { r.status = 99; });
    s.handle("/teapot", [](const goro::debug_request&, goro::debug_response& r) {
        r.status = 418;
        r.body = "short and stout";
    });
    s.handle("/no-content", [](const goro::debug_request&, goro::debug_response& r) { r.status = 204; });
    s.start();

    auto r = fetch(s.port(), get("/throws"));
    CHECK(r.status == 500);
    CHECK(r.header("Content-Type") == "text/plain; charset=utf-8");
    CHECK_THAT(r.body, Catch::Contains("the snapshot broke"));
    CHECK(fetch(s.port(), get("/throws-int")).status == 500);
    r = fetch(s.port(), get("/bad-header"));
    CHECK(r.status == 500);
    CHECK_FALSE(r.has_header("Set-Cookie"));
    CHECK(fetch(s.port(), get("/managed-header")).status == 500);
    CHECK(fetch(s.port(), get("/bad-status")).status == 500);
    r = fetch(s.port(), get("/teapot"));
    CHECK(r.status == 418);
    CHECK(r.body == "short and stout");
    client c(s.port());
    r = c.request(get("/no-content"), true);
    CHECK(r.status == 204);
    CHECK_FALSE(r.has_header("Content-Length"));
    CHECK(s.stats().handler_errors == 5);
    CHECK(fetch(s.port(), get("/throws")).status == 500);  // and it keeps serving
}

TEST_CASE("binary bodies and attachments", "[debug_server]") {
    goro::debug_server s(test_options());
    std::string blob;
    for (int i = 0; i < 3 * 65536 + 7; ++i) blob.push_back(static_cast<char>((i * 131) & 0xff));
    s.handle("/debug/pprof/goroutine", [&](const goro::debug_request&, goro::debug_response& r) {
        r.content_type = "application/octet-stream";
        r.set_attachment("goroutine");
        r.body = blob;
    });
    s.start();
    auto r = fetch(s.port(), get("/debug/pprof/goroutine"));
    CHECK(r.status == 200);
    CHECK(r.header("Content-Type") == "application/octet-stream");
    CHECK(r.header("Content-Disposition") == "attachment; filename=\"goroutine\"");
    CHECK(r.body.size() == blob.size());
    CHECK(r.body == blob);
}

TEST_CASE("routes: register after start, replace, remove, redirect to the slash", "[debug_server]") {
    goro::debug_server s(test_options());
    s.start();
    CHECK(fetch(s.port(), get("/late")).status == 404);
    s.handle("/late", hello);
    CHECK(fetch(s.port(), get("/late")).body == "hello\n");
    s.handle("/late", [](const goro::debug_request&, goro::debug_response& r) { r.body = "v2"; });
    CHECK(fetch(s.port(), get("/late")).body == "v2");
    CHECK(s.remove_handler("/late"));
    CHECK_FALSE(s.remove_handler("/late"));
    CHECK(fetch(s.port(), get("/late")).status == 404);
    CHECK_THROWS_AS(s.handle("relative", hello), std::invalid_argument);
    CHECK_THROWS_AS(s.handle("/x", goro::debug_handler{}), std::invalid_argument);

    s.handle("/a b", hello);  // matched after percent-decoding
    CHECK(fetch(s.port(), get("/a%20b")).status == 200);

    auto r = fetch(s.port(), get("/debug/pprof?x=1"));
    CHECK(r.status == 301);
    CHECK(r.header("Location") == "/debug/pprof/?x=1");

    // A handler may register another one: routes are not locked while it runs.
    s.handle("/register", [&s](const goro::debug_request&, goro::debug_response& r) {
        s.handle("/registered", hello);
        r.body = "done";
    });
    CHECK(fetch(s.port(), get("/register")).body == "done");
    CHECK(fetch(s.port(), get("/registered")).status == 200);
}

TEST_CASE("the /debug/pprof/ index lists profiles", "[debug_server]") {
    goro::debug_server s(test_options());
    std::atomic<std::int64_t> n{41};
    s.add_profile({"goroutine", "Stack traces of all current goroutines <all of them>.",
                   [&] { return ++n; },
                   [](const goro::debug_request& req, goro::debug_response& r) {
                       r.body = "debug=" + std::string(req.param("debug").value_or("0"));
                   }});
    s.add_profile({"allocs", "A sampling of past allocations.", {}, {}});
    s.add_index_link("goroutine?debug=2", "full goroutine stack dump");
    CHECK_THROWS_AS(s.add_profile({"bad name", "", {}, {}}), std::invalid_argument);
    s.start();

    auto r = fetch(s.port(), get("/debug/pprof/"));
    CHECK(r.status == 200);
    CHECK(r.header("Content-Type") == "text/html; charset=utf-8");
    CHECK_THAT(r.body, Catch::Contains("<tr><td>42</td><td><a href='goroutine?debug=1'>goroutine</a></td></tr>"));
    CHECK_THAT(r.body, Catch::Contains("<tr><td>0</td><td><a href='allocs?debug=1'>allocs</a></td></tr>"));
    CHECK(r.body.find("allocs?debug=1") < r.body.find("goroutine?debug=1"));  // sorted by name
    CHECK_THAT(r.body, Catch::Contains("<a href=\"goroutine?debug=2\">full goroutine stack dump</a>"));
    CHECK_THAT(r.body, Catch::Contains("goroutine: </div> Stack traces of all current goroutines "
                                       "&lt;all of them&gt;.</li>"));
    CHECK(fetch(s.port(), get("/debug/pprof/goroutine?debug=2")).body == "debug=2");
    CHECK(fetch(s.port(), get("/debug/pprof/allocs")).status == 404);  // listed, no handler given

    s.add_profile({"broken", "", [] () -> std::int64_t { throw std::runtime_error("count failed"); }, {}});
    r = fetch(s.port(), get("/debug/pprof/"));
    CHECK(r.status == 500);
    CHECK_THAT(r.body, Catch::Contains("count failed"));
}

TEST_CASE("several clients at once", "[debug_server]") {
    auto o = test_options();
    o.max_connections = 4;  // fewer slots than clients: the rest wait in the backlog
    goro::debug_server s(o);
    s.handle("/echo", [](const goro::debug_request& req, goro::debug_response& r) {
        r.body = std::string(req.param("v").value_or(""));
    });
    s.start();
    constexpr int clients = 8, rounds = 25;
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < clients; ++t) {
        threads.emplace_back([&, t] {
            try {
                // Keep-alive: rounds share a connection. Like any HTTP client,
                // retry once on a fresh one when the server closed an idle
                // connection (it does, to make room for clients in the backlog).
                auto c = std::make_unique<client>(s.port());
                for (int i = 0; i < rounds; ++i) {
                    std::string v = std::to_string(t) + "-" + std::to_string(i);
                    std::string req = "GET /echo?v=" + v + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
                    c->send_all(req);
                    auto r = c->read_reply();
                    if (r.status == 0) {
                        c = std::make_unique<client>(s.port());
                        c->send_all(req);
                        r = c->read_reply();
                    }
                    if (r.status == 200 && r.body == v) ++ok;
                }
            } catch (const std::exception&) {
                // shows as missing answers below
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(ok == clients * rounds);
}

TEST_CASE("a silent client does not block others and is closed", "[debug_server]") {
    auto o = test_options();
    o.read_timeout = 200ms;
    o.max_connections = 1;  // the silent one holds the only slot until its deadline
    goro::debug_server s(o);
    s.handle("/hello", hello);
    s.start();

    client silent(s.port());
    REQUIRE(eventually([&] { return s.stats().connections_accepted >= 1; }));
    auto r = fetch(s.port(), get("/hello"));  // waits in the backlog, then is served
    CHECK(r.status == 200);

    auto r2 = silent.read_reply();
    CHECK((r2.status == 408 || r2.closed));
    CHECK(silent.wait_closed());
    CHECK(s.stats().timeouts >= 1);
}

TEST_CASE("a trickling client is cut off at the head deadline", "[debug_server]") {
    auto o = test_options();
    o.read_timeout = 300ms;
    goro::debug_server s(o);
    s.handle("/hello", hello);
    s.start();

    client slow(s.port());
    // One byte every 10 ms, forever if allowed: each byte arrives well within
    // any per-byte timeout, but the whole head never does.
    std::string head = "GET /hello HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + std::string(100000, 'p');
    bool cut = false;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    for (std::size_t i = 0; i < head.size() && std::chrono::steady_clock::now() < deadline; ++i) {
        if (::send(slow.fd(), &head[i], 1, MSG_NOSIGNAL) != 1) {
            cut = true;
            break;
        }
        pollfd p{slow.fd(), POLLIN, 0};
        if (::poll(&p, 1, 10) > 0) {
            cut = true;
            break;
        }
    }
    REQUIRE(cut);
    auto r = slow.read_reply();
    CHECK((r.status == 408 || r.closed));
    CHECK(s.stats().timeouts >= 1);
    CHECK(fetch(s.port(), get("/hello")).status == 200);
}

TEST_CASE("an idle keep-alive connection gives way when all slots are busy", "[debug_server]") {
    auto o = test_options();
    o.max_connections = 1;
    o.read_timeout = 60s;  // long: only eviction can free the slot in time
    goro::debug_server s(o);
    s.handle("/hello", hello);
    s.start();
    client idle(s.port());
    CHECK(idle.request("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").status == 200);
    CHECK(fetch(s.port(), get("/hello")).status == 200);
    CHECK(s.stats().connections_evicted == 1);
    CHECK(idle.wait_closed());
}

TEST_CASE("start, stop, restart", "[debug_server]") {
    const int fds_before = open_fds();
    goro::debug_server s(test_options());
    s.handle("/hello", hello);
    s.stop();  // not running: nothing to do
    for (int i = 0; i < 20; ++i) {
        s.start();
        REQUIRE(s.running());
        CHECK(fetch(s.port(), get("/hello")).status == 200);
        std::uint16_t port = s.port();
        s.stop();
        CHECK_FALSE(s.running());
        CHECK(s.port() == port);
        // Nothing listens any more.
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0);
        ::close(fd);
    }
    s.stop();
    {
        // Stopped while a connection is open on the server side too.
        s.start();
        client idle(s.port());
        REQUIRE(eventually([&] { return s.stats().connections_accepted >= 21; }));
        s.stop();
        CHECK(idle.wait_closed());
    }
    CHECK(open_fds() == fds_before);  // no socket or pipe outlives stop()
}

TEST_CASE("stop with connected clients does not hang and closes them", "[debug_server]") {
    std::optional<client> idle, mid;
    {
        auto o = test_options();
        o.read_timeout = 60s;
        goro::debug_server s(o);
        s.start();
        idle.emplace(s.port());
        mid.emplace(s.port());
        REQUIRE(mid->send_all("GET /half HTTP/1.1\r\nHost: local"));
        REQUIRE(eventually([&] { return s.stats().connections_accepted >= 2; }));
    }  // destructor: stops, joins, closes
    CHECK(idle->wait_closed());
    CHECK(mid->wait_closed());
}

TEST_CASE("stop from inside a handler is refused, not a deadlock", "[debug_server]") {
    goro::debug_server s(test_options());
    s.handle("/stop", [&s](const goro::debug_request&, goro::debug_response& r) {
        s.stop();
        r.body = "stopped?";
    });
    s.start();
    auto r = fetch(s.port(), get("/stop"));
    CHECK(r.status == 500);
    CHECK_THAT(r.body, Catch::Contains("own thread"));
}

TEST_CASE("a server can be moved", "[debug_server]") {
    goro::debug_server a(test_options());
    a.handle("/hello", hello);
    a.start();
    goro::debug_server b(std::move(a));
    CHECK(b.running());
    CHECK_FALSE(a.running());  // NOLINT(bugprone-use-after-move): documented state
    CHECK(fetch(b.port(), get("/hello")).status == 200);
    CHECK_THROWS_AS(a.start(), std::logic_error);
    goro::debug_server c(test_options());
    c = std::move(b);
    CHECK(fetch(c.port(), get("/hello")).status == 200);
}

TEST_CASE("handlers registered from many threads while serving", "[debug_server]") {
    goro::debug_server s(test_options());
    s.start();
    std::atomic<bool> done{false};
    std::thread writer([&] {
        for (int i = 0; !done; ++i) {
            s.handle("/r" + std::to_string(i % 10), hello);
            s.remove_handler("/r" + std::to_string((i + 5) % 10));
        }
    });
    for (int i = 0; i < 100; ++i) {
        int st = fetch(s.port(), get("/r3")).status;
        CHECK((st == 200 || st == 404));
    }
    done = true;
    writer.join();
}
