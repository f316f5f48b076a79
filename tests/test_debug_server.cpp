// Tests for goro/http/debug_server.hpp: the server over loopback with a small
// blocking client (tests/http_client.hpp). Every wait has a deadline; no
// assertion depends on how fast anything runs.

#include <goro/http/debug_server.hpp>

#include <catch2/catch.hpp>

#include "http_client.hpp"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_debug_server {

using namespace http_test;
using namespace std::chrono_literals;


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
                // retry on a fresh one when the server closed the connection
                // before answering (it evicts the oldest idle or incomplete
                // connection to make room for a new one): a bounded number of times.
                auto c = std::make_unique<client>(s.port());
                for (int i = 0; i < rounds; ++i) {
                    std::string v = std::to_string(t) + "-" + std::to_string(i);
                    std::string req = "GET /echo?v=" + v + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
                    c->send_all(req);
                    auto r = c->read_reply();
                    for (int retry = 0; r.status == 0 && retry < 100; ++retry) {
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
    o.read_timeout = 60s;   // long: the silent one is evicted, not timed out
    o.max_connections = 1;  // the silent one holds the only slot
    goro::debug_server s(o);
    s.handle("/hello", hello);
    s.start();

    client silent(s.port());
    REQUIRE(eventually([&] { return s.stats().connections_accepted >= 1; }));
    auto r = fetch(s.port(), get("/hello"));  // the silent one gives way
    CHECK(r.status == 200);
    auto r2 = silent.read_reply();
    CHECK(r2.closed);
    CHECK(silent.wait_closed());
    CHECK(s.stats().connections_evicted == 1);
}

TEST_CASE("a silent client alone is told 408 at its deadline", "[debug_server]") {
    auto o = test_options();
    o.read_timeout = 200ms;
    goro::debug_server s(o);
    s.start();
    client silent(s.port());
    auto r = silent.read_reply();
    CHECK(r.status == 408);
    CHECK(silent.wait_closed());
    CHECK(s.stats().timeouts == 1);
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


TEST_CASE("D4: the 301 body HTML-escapes the target it echoes", "[debug_server]") {
    goro::debug_server s(test_options());
    s.start();
    auto r = fetch(s.port(), get("/debug/pprof?%22%3E%3Cscript%3E=1&\"><script>alert(1)</script>"));
    REQUIRE(r.status == 301);
    CHECK(r.body.find("<script>") == std::string::npos);
    CHECK(r.body.find("\"><") == std::string::npos);
    CHECK(r.body ==
          "<a href=\"/debug/pprof/?%22%3E%3Cscript%3E=1&amp;&#34;&gt;&lt;script&gt;alert(1)&lt;/"
          "script&gt;\">Moved Permanently</a>.\n");
    // The Location header carries the target as sent (visible ASCII, checked by the parser).
    CHECK(r.header("Location") == "/debug/pprof/?%22%3E%3Cscript%3E=1&\"><script>alert(1)</script>");
}

TEST_CASE("D5: a 400 body that echoes client bytes is valid UTF-8", "[debug_server]") {
    goro::debug_server s(test_options());
    s.start();
    // %80 and %ff decode to bytes that are not UTF-8; %e2%82%ac is a euro sign; %1b is ESC.
    auto r = fetch(s.port(), get("/debug/pprof/goroutine?debug=%80x%ff%e2%82%ac%1b"));
    REQUIRE(r.status == 400);
    CHECK(r.header("Content-Type") == "text/plain; charset=utf-8");
    for (std::size_t i = 0; i < r.body.size();) {
        std::size_t n = goro::detail::utf8_sequence_length(std::string_view(r.body).substr(i));
        INFO("offset " << i);
        REQUIRE(n > 0);
        i += n;
    }
    CHECK(r.body.find("\"\\x80x\\xff\xe2\x82\xac\\x1b\"") != std::string::npos);
}

TEST_CASE("D6: a HEAD request rejected by the parser gets no body", "[debug_server]") {
    auto o = test_options();
    o.limits.max_header_bytes = 64;
    goro::debug_server s(o);
    s.start();
    client c(s.port());
    REQUIRE(c.send_all("HEAD / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + std::string(200, 'a') +
                       "\r\n\r\n"));
    auto r = c.read_reply(true);
    REQUIRE(r.status == 431);
    CHECK(std::stoul(r.header("Content-Length")) > 0);  // the length a GET would have had
    // Nothing follows the head: the next bytes are the server's close.
    CHECK(c.wait_closed());
    CHECK(c.leftover().empty());

    client d(s.port());
    REQUIRE(d.send_all("HEAD /x HTTP/1.1\r\nHost: localhost\r\nBad Name: v\r\n\r\n"));
    auto r2 = d.read_reply(true);
    CHECK(r2.status == 400);
    CHECK(d.wait_closed());
    CHECK(d.leftover().empty());
}

TEST_CASE("D7: an IPv4-mapped loopback address is bound as IPv4", "[debug_server]") {
    for (std::string address : {"::ffff:127.0.0.1", "[::ffff:127.0.0.1]"}) {
        auto o = test_options();
        o.address = address;
        goro::debug_server s(o);
        s.handle("/hello", hello);
        REQUIRE_NOTHROW(s.start());
        CHECK(s.url() == "http://127.0.0.1:" + std::to_string(s.port()));
        auto r = fetch(s.port(), get("/hello"));
        CHECK(r.status == 200);
        CHECK(r.body == "hello\n");
    }
    // A mapped address outside 127/8 is not loopback.
    auto o = test_options();
    o.address = "::ffff:10.1.2.3";
    CHECK_THROWS_AS(goro::debug_server(o), std::invalid_argument);
}

}  // namespace tests_debug_server
