// The wait profile (goro/core/wait_profile.hpp) and its Go block-profile formats
// (goro/inspect/block_profile.hpp): off by default, what one wait adds, the
// debug=1 text, what `go tool pprof` prints for it (-top, -traces, -tagfocus,
// when go is installed), and /debug/pprof/block; the mutex profile (its lock
// waits) the same way, and /debug/pprof/mutex.
//
// The waits are made deterministic: a consumer task receives from a channel
// in a loop; the test sends each value only once the consumer is parked
// (seen with the world stopped), so each value ends exactly one wait, and the
// close ends one more.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <regex>
#include <string>
#include <vector>

#include <goro/http/debug_server.hpp>
#include <goro/inspect/block_profile.hpp>
#include <goro/sync/mutex.hpp>

#include "http_client.hpp"
#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_block_profile {

namespace {

goro::task<bool> bp_recv_one(goro::channel<int> ch) {
    auto v = co_await ch.recv();  // the wait site
    co_return v.has_value();
}

goro::task<> bp_consumer(goro::channel<int> ch) {
    for (;;) {  // (not `while (co_await ...)`: g++ 12 miscompiles a co_await in a loop condition)
        bool more = co_await bp_recv_one(ch);
        if (!more) break;
    }
}

/// Runs the consumer through `values` sends and a close: values + 1 waits.
void drive(int values) {
    const std::int64_t baseline = goro::num_goroutines();
    goro::channel<int> ch;
    goro::go(bp_consumer(ch), {.name = "bp_consumer"});
    for (int i = 0; i < values; ++i) {
        REQUIRE(goro_test::eventually([] { return goro_test::parked_count("bp_consumer") == 1; }));
        goro::block_on(ch.send(i));
    }
    REQUIRE(goro_test::eventually([] { return goro_test::parked_count("bp_consumer") == 1; }));
    ch.close();
    REQUIRE(goro_test::tasks_drained(baseline));
}

/// Turns the profile on for one test, and off and empty after it.
struct profile_on {
    explicit profile_on(std::int64_t rate = 1) {
        goro::reset_wait_profile();
        goro::set_wait_profile_rate(rate);
    }
    ~profile_on() {
        goro::set_wait_profile_rate(0);
        goro::reset_wait_profile();
    }
};

const goro::detail::wait_bucket* consumer_bucket(const std::vector<goro::detail::wait_bucket>& bs) {
    for (const auto& b : bs)
        if (!b.stack.empty() && std::string(b.stack[0].function_name()).find("bp_recv_one") != std::string::npos)
            return &b;
    return nullptr;
}

goro::task<> mx_take(goro::mutex& mu) {
    co_await mu.lock();  // the contended site
    mu.unlock();
}

goro::task<> mx_worker(goro::mutex& mu) { co_await mx_take(mu); }

/// `waits` times: the thread holds the mutex, a task parks in lock() (seen
/// parked), the thread unlocks (handing it over); plus channel waits
/// (drive), which the mutex profile must leave out.
void drive_mutex(int waits) {
    const std::int64_t baseline = goro::num_goroutines();
    goro::mutex mu;
    for (int i = 0; i < waits; ++i) {
        REQUIRE(mu.try_lock());
        goro::go(mx_worker(mu), {.name = "mx_worker"});
        REQUIRE(goro_test::eventually([] { return goro_test::parked_count("mx_worker") == 1; }));
        mu.unlock();
        REQUIRE(goro_test::tasks_drained(baseline));
    }
    drive(2);
}

bool on_path(const char* tool) {
    std::string cmd = std::string("command -v ") + tool + " >/dev/null 2>&1";
    return std::system(cmd.c_str()) == 0;
}

std::pair<int, std::string> run(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return {-1, ""};
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    return {::pclose(p), out};
}

bool matches(const std::string& text, const char* re) { return std::regex_search(text, std::regex(re)); }

}  // namespace

TEST_CASE("the wait profile is off by default and records nothing then", "[block_profile]") {
    goro::reset_wait_profile();
    CHECK(goro::wait_profile_rate() == 0);
    drive(3);
    CHECK(goro::wait_profile_buckets().empty());
    CHECK(goro::block_profile(1) == "--- contention:\ncycles/second=1000000000\n");
}

TEST_CASE("each wait adds one to its stack and reason: count, total time, histogram", "[block_profile]") {
    profile_on on;
    drive(5);
    auto bs = goro::wait_profile_buckets();
    const auto* b = consumer_bucket(bs);
    REQUIRE(b);
    CHECK(std::string(b->reason) == "chan receive");
    // Six receives park (five values and the close), less any whose sender
    // came while it was on its way to parking: it then takes the value
    // without being woken, which is not a wait.
    CHECK(b->count >= 1);
    CHECK(b->count <= 6);
    CHECK(b->delay_ns > 0);
    CHECK(double(std::accumulate(b->histogram.begin(), b->histogram.end(), std::uint64_t(0))) == b->count);
    REQUIRE(b->stack.size() == 2);
    CHECK(std::string(b->stack[1].function_name()).find("bp_consumer") != std::string::npos);

    // The histogram's buckets: < 1 µs, then powers of 4 from 1 µs.
    CHECK(goro::detail::wait_histogram_index(999) == 0);
    CHECK(goro::detail::wait_histogram_index(1000) == 1);
    CHECK(goro::detail::wait_histogram_index(3999) == 1);
    CHECK(goro::detail::wait_histogram_index(4000) == 2);
    CHECK(goro::detail::wait_histogram_index(1'000'000) == 5);
    CHECK(goro::detail::wait_histogram_index(std::int64_t(1) << 62) == 15);

    std::string text = goro::block_profile(1);
    INFO(text);
    CHECK(text.rfind("--- contention:\ncycles/second=1000000000\n", 0) == 0);
    CHECK(matches(text, R"(\n\d+ [1-6] @ 0x[0-9a-f]+ 0x[0-9a-f]+\n# wait_reason: chan receive\n# histogram: <1us:\d+)"));
    CHECK(matches(text, R"(\n#\t0x[0-9a-f]+\t\S*bp_recv_one\t+\S*test_block_profile\.cpp:\d+\n)"));

    goro::reset_wait_profile();
    CHECK(goro::wait_profile_buckets().empty());
    CHECK_THROWS_WITH(goro::block_profile(2), Catch::Contains("goro::block_profile: debug must be"));
}

TEST_CASE("a rate n records one wait in n and counts it n times", "[block_profile]") {
    profile_on on(3);
    drive(11);  // 12 waits of the consumer, over whichever workers ran it
    const auto bs = goro::wait_profile_buckets();
    if (const auto* b = consumer_bucket(bs)) {
        const auto seen = std::accumulate(b->histogram.begin(), b->histogram.end(), std::uint64_t(0));
        // Each recorded wait stands for 3, but one of 100 ms or more (a
        // stall under load: the test waits for each park) is recorded even
        // when not sampled, and counted once: count = 3 x short + long,
        // seen = short + long.
        INFO("count " << b->count << ", recorded " << seen);
        CHECK(b->count >= double(seen));
        CHECK(b->count <= double(3 * seen));
        CHECK(std::fmod(b->count - double(seen), 2.0) == 0);
        CHECK(seen <= 12);
    }
    // Parks not sampled keep the coarse clock with its lowest bit clear.
    CHECK((goro::detail::parked_clock().load() & ~std::int64_t(1)) % 2 == 0);
}

TEST_CASE("go tool pprof reads the wait profile: -top, -traces, -tagfocus", "[block_profile]") {
    if (!on_path("go")) {
        WARN("go not on PATH (apt-get install golang-go): go tool pprof checks skipped");
        SUCCEED("skipped: no go toolchain");
        return;
    }
    profile_on on;
    drive(5);
    std::string dir = (std::filesystem::temp_directory_path() / "goro_block_XXXXXX").string();
    REQUIRE(::mkdtemp(dir.data()));
    std::string file = dir + "/block.pb";
    std::ofstream(file, std::ios::binary) << goro::block_profile(0);
    std::string pprof = "env HOME=" + dir + " GOCACHE=" + dir + "/cache GOPATH=" + dir + "/gopath go tool pprof ";
    {
        auto [st, out] = run(pprof + "-sample_index=contentions -top " + file);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(Type: contentions)"));
        // Six receives park (five values and the close), but a receive whose
        // sender arrives while it is on its way to parking takes the value
        // without being woken, and is not a wait: 1 to 6 of them, all of it
        // in bp_recv_one.
        std::smatch m;
        const std::regex top(R"(\n\s+([1-6])\s+100%\s+100%\s+([1-6])\s+100%\s+\S*bp_recv_one\n)");
        REQUIRE(std::regex_search(out, m, top));
        CHECK(m[1] == m[2]);
    }
    {
        auto [st, out] = run(pprof + "-top " + file);  // the last sample type, delay, by default (as Go's)
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(Type: delay)"));
        CHECK(matches(out, R"(bp_recv_one)"));
    }
    {
        auto [st, out] = run(pprof + "-traces " + file);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(\n\s+\S+\s+\S*bp_recv_one\n\s+\S*bp_consumer\n)"));
        CHECK(matches(out, R"(wait_reason:\s*chan receive)"));
    }
    {
        auto [st, out] = run(pprof + "-top '-tagfocus=wait_reason=chan receive' " + file);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(bp_recv_one)"));
        auto [st2, none] = run(pprof + "-top -tagfocus=wait_reason=select " + file);
        INFO(none);
        CHECK_FALSE(matches(none, R"(bp_recv_one)"));
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("/debug/pprof/block serves the wait profile", "[block_profile]") {
    profile_on on;
    drive(2);
    goro::debug_server s(http_test::test_options());
    s.start();
    auto pb = http_test::fetch(s.port(), http_test::get("/debug/pprof/block"));
    CHECK(pb.status == 200);
    CHECK(pb.header("Content-Type") == "application/octet-stream");
    CHECK(pb.body.find("contentions") != std::string::npos);
    CHECK(pb.body.find("bp_recv_one") != std::string::npos);
    auto text = http_test::fetch(s.port(), http_test::get("/debug/pprof/block?debug=1"));
    CHECK(text.body.rfind("--- contention:\n", 0) == 0);
    CHECK(matches(text.body, R"(\n\d+ [1-3] @ 0x)"));  // three receives park, less any that found a sender
    CHECK(http_test::fetch(s.port(), http_test::get("/debug/pprof/block?debug=7")).status == 400);
    auto index = http_test::fetch(s.port(), http_test::get("/debug/pprof/"));
    CHECK(index.body.find("<a href='block?debug=1'>block</a>") != std::string::npos);
}

TEST_CASE("the mutex profile keeps the lock waits of the wait profile", "[block_profile]") {
    profile_on on;
    drive_mutex(3);
    const std::string text = goro::mutex_profile(1);
    INFO(text);
    CHECK(text.rfind("--- mutex:\ncycles/second=1000000000\nsampling period=1\n", 0) == 0);
    // Each of the three tasks parked once in lock() (it found the mutex held).
    CHECK(matches(text, R"(\n\d+ 3 @ 0x[0-9a-f]+ 0x[0-9a-f]+\n# wait_reason: sync.Mutex.Lock\n)"));
    CHECK(matches(text, R"(#\t0x[0-9a-f]+\t\S*mx_take)"));
    CHECK_FALSE(matches(text, R"(chan receive|bp_recv_one)"));  // in the block profile only
    CHECK(goro::block_profile(1).find("bp_recv_one") != std::string::npos);
    CHECK_THROWS_AS(goro::mutex_profile(2), goro::usage_error);
}

TEST_CASE("go tool pprof reads the mutex profile: -top, -traces", "[block_profile]") {
    if (!on_path("go")) {
        WARN("go not on PATH (apt-get install golang-go): go tool pprof checks skipped");
        SUCCEED("skipped: no go toolchain");
        return;
    }
    profile_on on;
    drive_mutex(3);
    std::string dir = (std::filesystem::temp_directory_path() / "goro_mutex_XXXXXX").string();
    REQUIRE(::mkdtemp(dir.data()));
    std::string file = dir + "/mutex.pb";
    std::ofstream(file, std::ios::binary) << goro::mutex_profile(0);
    std::string pprof = "env HOME=" + dir + " GOCACHE=" + dir + "/cache GOPATH=" + dir + "/gopath go tool pprof ";
    {
        auto [st, out] = run(pprof + "-sample_index=contentions -top " + file);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(Type: contentions)"));
        // All three contentions in mx_take, none of the channel's waits.
        CHECK(matches(out, R"(\n\s+3\s+100%\s+100%\s+3\s+100%\s+\S*mx_take\n)"));
        CHECK_FALSE(matches(out, R"(bp_recv_one)"));
    }
    {
        auto [st, out] = run(pprof + "-top " + file);  // delay, the last sample type, as Go's
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(Type: delay)"));
        CHECK(matches(out, R"(\S*mx_take\n)"));
    }
    {
        auto [st, out] = run(pprof + "-traces " + file);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(\n\s+\S+\s+\S*mx_take\n\s+\S*mx_worker\n)"));
        CHECK(matches(out, R"(wait_reason:\s*sync.Mutex.Lock)"));
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("/debug/pprof/mutex serves the mutex profile, listed on the index", "[block_profile]") {
    profile_on on;
    drive_mutex(1);
    goro::debug_server s(http_test::test_options());
    s.start();
    auto pb = http_test::fetch(s.port(), http_test::get("/debug/pprof/mutex"));
    CHECK(pb.status == 200);
    CHECK(pb.header("Content-Type") == "application/octet-stream");
    CHECK(pb.header("Content-Disposition") == "attachment; filename=\"mutex\"");
    CHECK(pb.body.find("mx_take") != std::string::npos);
    CHECK(pb.body.find("bp_recv_one") == std::string::npos);
    auto text = http_test::fetch(s.port(), http_test::get("/debug/pprof/mutex?debug=1"));
    CHECK(text.body.rfind("--- mutex:\n", 0) == 0);
    CHECK(matches(text.body, R"(\n\d+ 1 @ 0x)"));
    CHECK(http_test::fetch(s.port(), http_test::get("/debug/pprof/mutex?debug=3")).status == 400);
    auto index = http_test::fetch(s.port(), http_test::get("/debug/pprof/"));
    INFO(index.body);
    CHECK(index.body.find("<a href='mutex?debug=1'>mutex</a>") != std::string::npos);
}

}  // namespace tests_block_profile
