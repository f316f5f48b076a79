// Tests for goro/http/server.hpp: the connection loop under hostile or
// careless clients, over loopback. Every loop is bounded in count and in
// time; no assertion depends on how fast anything runs (latencies are
// reported, not asserted).

#include <goro/goro.hpp>

#include <catch2/catch.hpp>

#include "http_client.hpp"
#include "support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_server {

using namespace http_test;
using namespace std::chrono_literals;

namespace {

// Raises the soft RLIMIT_NOFILE to at least `want` within the hard limit;
// returns the soft limit now in force.
rlim_t raise_fd_limit(rlim_t want) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = std::min(want, rl.rlim_max);
        ::setrlimit(RLIMIT_NOFILE, &rl);
        ::getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

// A connected loopback socket (blocking, with 10 s timeouts), or -1.
int connect_to(std::uint16_t port, int rcvbuf = 0) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// Resident set size of this process in bytes, from /proc/self/statm; 0 if unknown.
std::size_t rss_bytes() {
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int got = std::fscanf(f, "%lu %lu", &size, &resident);
    std::fclose(f);
    return got == 2 ? resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif
#else
constexpr bool sanitized = false;
#endif

goro::task<> park_on(goro::channel<int> ch) {
    auto v = co_await ch.recv();
    (void)v;
}

// How one keep-alive exchange ended, seen from the client.
enum class outcome { answered, closed_before_response, truncated, reset };

// Sends `request` on fd and reads one response with a Content-Length.
outcome exchange(int fd, const std::string& request, std::string& buf) {
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size()))
        return errno == ECONNRESET ? outcome::reset : outcome::closed_before_response;
    buf.clear();
    for (;;) {
        std::size_t end = buf.find("\r\n\r\n");
        if (end != std::string::npos) {
            std::size_t cl = buf.find("Content-Length: ");
            if (cl != std::string::npos && cl < end) {
                std::size_t len = std::stoul(buf.substr(cl + 16));
                if (buf.size() >= end + 4 + len) return outcome::answered;
            }
        }
        char tmp[4096];
        ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
        if (n > 0) {
            buf.append(tmp, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) return buf.empty() ? outcome::closed_before_response : outcome::truncated;
        return errno == ECONNRESET ? outcome::reset : outcome::truncated;
    }
}

// GETs `path` (Connection: close) and returns how many body bytes came,
// without keeping them: the test's own memory stays out of what it measures.
// Returns 0 unless the response was a 200 whose length matches Content-Length.
std::size_t fetch_length(std::uint16_t port, std::string_view path) {
    int fd = connect_to(port);
    if (fd < 0) return 0;
    const std::string req = get(path);
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        ::close(fd);
        return 0;
    }
    std::string head;
    std::size_t body = 0;
    bool in_body = false;
    char tmp[64 * 1024];
    for (int rounds = 0; rounds < 1'000'000; ++rounds) {
        ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) break;
        if (in_body) {
            body += static_cast<std::size_t>(n);
            continue;
        }
        head.append(tmp, static_cast<std::size_t>(n));
        if (std::size_t end = head.find("\r\n\r\n"); end != std::string::npos) {
            in_body = true;
            body = head.size() - end - 4;
            head.resize(end);
        }
    }
    ::close(fd);
    const std::size_t cl = head.find("Content-Length: ");
    if (head.rfind("HTTP/1.1 200", 0) != 0 || cl == std::string::npos) return 0;
    return std::stoul(head.substr(cl + 16)) == body ? body : 0;
}

}  // namespace

TEST_CASE("a probe is answered while 1,000 slowloris and 1,000 idle connections are open", "[server]") {
    int n = 1000;
    // Per attacking connection: the client's fd, and the server's (twice while it lingers).
    const rlim_t limit = raise_fd_limit(static_cast<rlim_t>(4 * n + 2 * 1024 + 256));
    if (limit < static_cast<rlim_t>(4 * n + 2 * 1024 + 256)) {
        n = static_cast<int>((limit > 2 * 1024 + 512 ? limit - 2 * 1024 - 256 : 256) / 4);
        WARN("RLIMIT_NOFILE allows " << limit << " descriptors: " << n << " of each kind instead of 1,000");
    }
    auto o = test_options();
    o.read_timeout = 60s;  // long: only eviction can keep a slot for the probe
    goro::debug_server s(o);
    REQUIRE(s.config().max_connections >= 1024);
    s.handle("/hello", hello);
    s.start();

    std::vector<int> slow, idle;
    for (int i = 0; i < n; ++i) {
        int fd = connect_to(s.port());
        REQUIRE(fd >= 0);
        std::string part = "GET /hello HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        ::send(fd, part.data(), part.size(), MSG_NOSIGNAL);
        slow.push_back(fd);
    }
    for (int i = 0; i < n; ++i) {
        int fd = connect_to(s.port());
        REQUIRE(fd >= 0);
        idle.push_back(fd);
    }
    double worst_ms = 0;
    for (int round = 0; round < 3; ++round) {
        for (int fd : slow) ::send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);  // still trickling
        auto t0 = std::chrono::steady_clock::now();
        auto r = fetch(s.port(), get("/hello"));
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        worst_ms = std::max(worst_ms, ms);
        CHECK(r.status == 200);
        CHECK(r.body == "hello\n");
    }
    WARN("probe latency with " << n << " slowloris and " << n << " idle connections: worst of 3 "
                               << worst_ms << " ms; evicted " << s.stats().connections_evicted);
    if (2 * n + 1 > 1024) CHECK(s.stats().connections_evicted > 0);
    CHECK(s.stats().connections_open <= s.config().max_connections);
    for (int fd : slow) ::close(fd);
    for (int fd : idle) ::close(fd);
    s.stop();
}

TEST_CASE("eviction takes the oldest reading connection and closes it with a FIN", "[server]") {
    auto o = test_options();
    o.max_connections = 2;
    o.read_timeout = 60s;
    goro::debug_server s(o);
    s.handle("/hello", hello);
    s.start();
    client oldest(s.port());
    REQUIRE(oldest.request("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").status == 200);
    REQUIRE(http_test::eventually([&] { return s.stats().connections_open == 1; }));
    client newer(s.port());
    REQUIRE(newer.request("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").status == 200);
    CHECK(fetch(s.port(), get("/hello")).status == 200);
    CHECK(s.stats().connections_evicted == 1);
    // The oldest got an orderly close (EOF, not a reset); the newer one still serves.
    char c;
    CHECK(::recv(oldest.fd(), &c, 1, 0) == 0);
    CHECK(newer.request("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").status == 200);
}

TEST_CASE("a response being written is never evicted: it finishes, then its connection may go", "[server]") {
    auto o = test_options();
    o.max_connections = 1;
    o.read_timeout = 60s;
    goro::debug_server s(o);
    const std::string big(8 << 20, 'x');  // more than the socket buffers hold
    s.handle("/big", [&](const goro::debug_request&, goro::debug_response& r) { r.body = big; });
    s.handle("/hello", hello);
    s.start();
    client reader(s.port());
    REQUIRE(reader.send_all("GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    REQUIRE(http_test::eventually([&] { return s.stats().requests == 1; }));
    // The only slot is writing: a second client waits in the backlog, unanswered.
    std::atomic<int> probe_status{0};
    std::thread probe([&] {
        try {
            probe_status = fetch(s.port(), get("/hello")).status;
        } catch (...) {
            probe_status = -1;
        }
    });
    auto r = reader.read_reply();  // reads the whole 8 MiB, then the probe can be served
    CHECK(r.status == 200);
    CHECK(r.body.size() == big.size());
    probe.join();
    CHECK(probe_status == 200);
    CHECK(s.stats().connections_evicted == 1);  // the reader, once idle
}

TEST_CASE("keep-alive clients evicted under load see a clean close, never a reset", "[server]") {
    auto o = test_options();
    o.max_connections = 4;  // 8 clients: evictions all the time
    o.read_timeout = 60s;
    goro::debug_server s(o);
    s.handle("/hello", hello);
    s.start();
    constexpr int clients = 8, per_client = 150, max_tries = 200;
    std::atomic<int> answered{0}, reconnects{0}, resets{0}, truncated{0}, gave_up{0};
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    std::vector<std::thread> threads;
    for (int t = 0; t < clients; ++t) {
        threads.emplace_back([&] {
            const std::string req = "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n";
            std::string buf;
            int fd = connect_to(s.port());
            for (int i = 0; i < per_client && std::chrono::steady_clock::now() < deadline; ++i) {
                bool done = false;
                for (int tries = 0; tries < max_tries && !done; ++tries) {
                    if (fd < 0) fd = connect_to(s.port());
                    if (fd < 0) continue;
                    switch (exchange(fd, req, buf)) {
                    case outcome::answered: ++answered; done = true; continue;
                    case outcome::closed_before_response: ++reconnects; break;  // retry, as clients do
                    case outcome::truncated: ++truncated; break;
                    case outcome::reset: ++resets; break;
                    }
                    ::close(fd);
                    fd = -1;
                }
                if (!done) ++gave_up;
            }
            if (fd >= 0) ::close(fd);
        });
    }
    for (auto& th : threads) th.join();
    INFO("answered " << answered << ", reconnects " << reconnects << ", evicted "
                     << s.stats().connections_evicted);
    CHECK(resets == 0);
    CHECK(truncated == 0);
    CHECK(gave_up == 0);
    CHECK(answered == clients * per_client);
}

TEST_CASE("16 clients that never read share one tasks.json body; its memory returns when they leave", "[server]") {
    REQUIRE(goro_test::tasks_drained());
    const int parked = sanitized ? 10'000 : 100'000;
    goro::channel<int> ch;
    for (int i = 0; i < parked; ++i) goro::go(park_on(ch));
    REQUIRE(goro_test::eventually([&] { return goro::num_goroutines() == parked; }, 120s));

    auto o = test_options();
    o.write_timeout = 120s;                // the clients leave first
    o.shared_response_window = 5s;  // long enough for 16 requests on a loaded machine
    // The leak watch samples the 100k tasks on its own thread every 10 s; its
    // scratch would blur what this test measures, the response path.
    o.leak_watch_interval = 0ms;
    goro::debug_server s(o);
    s.start();
    const std::size_t rss_start = rss_bytes();
    const std::size_t one = fetch_length(s.port(), "/debug/goro/tasks.json");
    REQUIRE(one > std::size_t(parked) * 50);
    // The sizing fetch's body is held for the window, then released.
    REQUIRE(http_test::eventually([&] { return s.stats().response_bytes_held == 0; }, 60s));
    const std::size_t rss_before = rss_bytes();

    constexpr int clients = 16;
    std::vector<int> fds;
    for (int i = 0; i < clients; ++i) {
        int fd = connect_to(s.port(), 4096);
        REQUIRE(fd >= 0);
        std::string req = "GET /debug/goro/tasks.json HTTP/1.1\r\nHost: localhost\r\n\r\n";
        REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
        fds.push_back(fd);
    }
    REQUIRE(http_test::eventually([&] { return s.stats().requests == 1 + clients; }, 60s));
    const auto during = s.stats();
    const std::size_t rss_during = rss_bytes();
    // Each body is held once however many connections send it.
    CHECK(during.response_bytes_held <= 2 * one);
    CHECK(during.responses_shared >= clients - 2);

    for (int fd : fds) ::close(fd);
    CHECK(http_test::eventually([&] {
        auto st = s.stats();
        return st.response_bytes_held == 0 && st.connections_open == 0;
    }, 60s));
    const std::size_t rss_after = rss_bytes();
    auto mib = [](std::size_t b) { return static_cast<double>(b) / (1 << 20); };
    auto rel = [&](std::size_t a, std::size_t b) {
        return a >= b ? static_cast<double>(a - b) / static_cast<double>(one)
                      : -static_cast<double>(b - a) / static_cast<double>(one);
    };
    WARN("tasks.json with " << parked << " parked tasks: " << mib(one) << " MiB; RSS before any dump "
                            << mib(rss_start) << " MiB, after the first " << mib(rss_before) << " MiB ("
                            << rel(rss_before, rss_start) << " x one body); before the clients "
                            << mib(rss_before) << " MiB, with " << clients << " non-reading clients "
                            << mib(rss_during) << " MiB (" << rel(rss_during, rss_before)
                            << " x one body), after they left " << mib(rss_after) << " MiB ("
                            << rel(rss_after, rss_before) << " x one body)");
    if (!sanitized && rss_before != 0) {
        // Copied per client this would be 16 bodies; shared it is one, plus
        // what remains of the snapshot that produced it.
        CHECK(rss_during <= rss_before + 2 * one);
        // The body's blocks are unmapped and the dump's scratch trimmed: back
        // near the start (the rest is the allocator's, bounded generously;
        // a body kept as free heap would be a whole one).
        CHECK(rss_after <= rss_before + one / 2);
    }
    s.stop();
    ch.close();
    CHECK(goro_test::tasks_drained());
}

namespace {

// A share_response route whose every production is a distinct 8 MiB body
// (more than the socket buffers of a client that never reads hold).
struct counted_dump {
    std::atomic<int> made{0};
    static constexpr std::size_t size = 8u << 20;
    void operator()(const goro::debug_request&, goro::debug_response& r) {
        const int n = ++made;
        std::string piece(64 * 1024, static_cast<char>('a' + n % 26));
        for (std::size_t i = 0; i < size / piece.size(); ++i) r.stream() << piece;
    }
};

goro::task<> tick_until(std::atomic<bool>& stop, std::atomic<int>& ticks) {
    while (!stop.load()) {
        co_await goro::sleep_for(1ms);
        ++ticks;
    }
}

}  // namespace

TEST_CASE("concurrent clients of a busy program share the dump still being sent", "[server]") {
    REQUIRE(goro_test::tasks_drained());
    auto o = test_options();
    o.write_timeout = 120s;
    o.shared_response_window = 60s;
    goro::debug_server s(o);
    auto dump = std::make_shared<counted_dump>();
    s.handle("/dump", [dump](const goro::debug_request& q, goro::debug_response& r) { (*dump)(q, r); },
             {.share_response = true});
    s.start();
    // A task that runs all along: the world stamp changes between requests.
    std::atomic<bool> stop{false};
    std::atomic<int> ticks{0};
    goro::go(tick_until(stop, ticks));

    constexpr int clients = 16;
    std::vector<int> fds;
    for (int i = 0; i < clients; ++i) {
        int fd = connect_to(s.port(), 4096);
        REQUIRE(fd >= 0);
        std::string req = "GET /dump HTTP/1.1\r\nHost: localhost\r\n\r\n";
        REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
        fds.push_back(fd);
        const int before = ticks.load();
        // Something moves between any two requests.
        REQUIRE(goro_test::eventually([&] { return ticks.load() > before + 1; }));
    }
    REQUIRE(http_test::eventually([&] { return s.stats().requests == clients; }, 60s));
    const auto st = s.stats();
    INFO("bodies made " << dump->made << ", shared " << st.responses_shared);
    // One dump for all: the first client's is still being sent (it reads
    // nothing), so every later request joins it. Made per request, 16 would
    // be pinned at once.
    CHECK(dump->made <= 2);
    CHECK(st.response_bytes_held <= 2 * counted_dump::size);
    for (int fd : fds) ::close(fd);
    CHECK(http_test::eventually([&] { return s.stats().connections_open == 0; }, 60s));
    // Nothing is being sent now: a request after a change gets a fresh body.
    const int made = dump->made;
    const int before = ticks.load();
    REQUIRE(goro_test::eventually([&] { return ticks.load() > before + 1; }));
    auto r = fetch(s.port(), get("/dump"));
    CHECK(r.status == 200);
    CHECK(r.body.size() == counted_dump::size);
    CHECK(dump->made == made + 1);
    stop = true;
    s.stop();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("a streamed body arrives byte for byte after the string body, by GET and by HEAD", "[server]") {
    auto o = test_options();
    goro::debug_server s(o);
    // Uneven pieces straddling the blocks (64 KiB doubling to 1 MiB): 3 MiB and a bit.
    const std::string prefix = "string part\n";
    std::string expect_stream;
    for (std::size_t i = 0; expect_stream.size() < (3u << 20) + 777; ++i)
        expect_stream += std::to_string(i * 2654435761u % 1000003) + (i % 17 == 0 ? "\n" : ",");
    s.handle("/streamed", [&](const goro::debug_request&, goro::debug_response& r) {
        r.body = prefix;
        std::size_t at = 0, piece = 1;
        while (at < expect_stream.size()) {
            const std::size_t n = std::min(piece, expect_stream.size() - at);
            r.stream().write(expect_stream.data() + at, static_cast<std::streamsize>(n));
            at += n;
            piece = piece * 13 % 70'001 + 1;
        }
    });
    s.handle("/hello", hello);
    s.start();
    client c(s.port());
    auto r = c.request("GET /streamed HTTP/1.1\r\nHost: localhost\r\n\r\n");
    CHECK(r.status == 200);
    CHECK(r.header("Content-Length") == std::to_string(prefix.size() + expect_stream.size()));
    CHECK(r.body.size() == prefix.size() + expect_stream.size());
    CHECK(r.body == prefix + expect_stream);
    // The framing holds: the same connection serves on.
    auto h = c.request("HEAD /streamed HTTP/1.1\r\nHost: localhost\r\n\r\n", true);
    CHECK(h.status == 200);
    CHECK(h.header("Content-Length") == std::to_string(prefix.size() + expect_stream.size()));
    auto hello_r = c.request("GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
    CHECK(hello_r.status == 200);
    CHECK(hello_r.body == "hello\n");
    CHECK(http_test::eventually([&] { return s.stats().response_bytes_held == 0; }));
}

TEST_CASE("the goroutine dumps served in blocks equal the whole-string dumps", "[server]") {
    REQUIRE(goro_test::tasks_drained());
    goro::channel<int> ch;
    constexpr int parked = 300;
    for (int i = 0; i < parked; ++i) goro::go(park_on(ch), {.name = "parked"});
    // Every task parked, none still to start (a task not yet started shows
    // at its function's entry, another site: the two dumps would differ).
    REQUIRE(goro_test::eventually([&] { return goro_test::parked_count("parked") == parked; }));
    auto o = test_options();
    o.leak_watch_interval = 0ms;
    goro::debug_server s(o);
    s.start();
    // A quiet program: the same tasks in the same places, so both ways of
    // producing a dump see the same picture, but for how long each task has
    // waited (JSON's waiting_ns), which is blanked.
    auto blank_durations = [](std::string t) {
        const std::string key = "\"waiting_ns\":";
        for (std::size_t at = t.find(key); at != std::string::npos; at = t.find(key, at + key.size())) {
            std::size_t end = at + key.size();
            while (end < t.size() && t[end] >= '0' && t[end] <= '9') ++end;
            t.replace(at + key.size(), end - at - key.size(), "0");
        }
        return t;
    };
    for (const char* debug : {"1", "3"}) {
        INFO("debug=" << debug);
        const bool json = debug[0] == '3';
        const std::string whole = json ? blank_durations(goro::tasks_json()) : goro::goroutine_profile(1);
        const auto r = fetch(s.port(), get(json ? "/debug/goro/tasks.json" : "/debug/pprof/goroutine?debug=1"));
        CHECK(r.status == 200);
        const std::string served = json ? blank_durations(r.body) : r.body;
        CHECK(served.size() == whole.size());
        CHECK(served == whole);
    }
    s.stop();
    ch.close();
    CHECK(goro_test::tasks_drained());
}

}  // namespace tests_server
