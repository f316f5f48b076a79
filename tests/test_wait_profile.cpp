// The wait profile's own structure (goro/core/wait_profile.hpp): per-thread
// tables merged when read, tables of threads that exit kept (and reused),
// reset as a new zero, the calibrated clock, reads racing records (for
// TSan), long waits kept whatever the rate, and the sampling countdown's
// random start. What one wait adds and the Go formats are in
// test_block_profile.cpp.
//
// Waits are made deterministic as there: a consumer task receives from a
// channel in a loop, and each value is sent only once it is parked; the
// value is sent with try_send from a plain thread, so the wake (and the
// record) happens on that thread.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <cstdint>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <goro/core/wait_profile.hpp>
#include <goro/sync/channel.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_wait_profile {

namespace {

goro::task<bool> wp_recv_one(goro::channel<int> ch) {
    auto v = co_await ch.recv();  // the wait site
    co_return v.has_value();
}

goro::task<> wp_consumer(goro::channel<int> ch) {
    for (;;) {
        bool more = co_await wp_recv_one(ch);
        if (!more) break;
    }
}

goro::task<> wp_echo(goro::channel<int> in, goro::channel<int> out) {
    for (;;) {
        auto v = co_await in.recv();
        if (!v) break;
        co_await out.send(*v);
    }
    out.close();
}

goro::task<> wp_pinger(goro::channel<int> out, goro::channel<int> in) {
    for (int i = 0; i < 2000; ++i) {
        co_await out.send(int(i));
        co_await in.recv();
    }
    out.close();
}

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

/// Sends one value to the parked consumer from the calling (plain) thread.
void send_parked(goro::channel<int>& ch, int v) {
    REQUIRE(goro_test::eventually([] { return goro_test::parked_count("wp_consumer") == 1; }));
    REQUIRE(ch.try_send(v) == goro::send_status::sent);
}

double consumer_count(const std::vector<goro::detail::wait_bucket>& bs, std::size_t* buckets = nullptr,
                      double* delay_ns = nullptr) {
    double n = 0, delay = 0;
    std::size_t k = 0;
    for (const auto& b : bs)
        if (!b.stack.empty() && std::string(b.stack[0].function_name()).find("wp_recv_one") != std::string::npos) {
            n += b.count;
            delay += b.delay_ns;
            ++k;
            CHECK(double(std::accumulate(b.histogram.begin(), b.histogram.end(), std::uint64_t(0))) == b.count);
        }
    if (buckets) *buckets = k;
    if (delay_ns) *delay_ns = delay;
    return n;
}

/// While alive, every wake's clock reads `ns` later (the test hook of LONG WAITS).
struct clock_offset {
    explicit clock_offset(std::int64_t ns) { goro::detail::wait_clock_offset_ns.store(ns); }
    ~clock_offset() { goro::detail::wait_clock_offset_ns.store(0); }
};

/// Calls wait_profile_park_time(rate) until it samples a park (an odd
/// since): how many calls that took, at most `limit`.
std::int64_t parks_until_sampled(std::int64_t rate, std::int64_t limit) {
    for (std::int64_t i = 1; i <= limit; ++i)
        if (goro::detail::wait_profile_park_time(0, rate) & 1) return i;
    return limit + 1;
}

}  // namespace

TEST_CASE("the tables of several threads merge into one bucket per stack, and outlive their threads",
          "[wait_profile]") {
    profile_on on;
    const std::int64_t baseline = goro::num_goroutines();
    goro::channel<int> ch;
    goro::go(wp_consumer(ch), {.name = "wp_consumer"});
    // Each value is sent by a new thread that exits after: four threads
    // record one wait each (the consumer was parked before each send).
    for (int i = 0; i < 4; ++i) std::thread([&] { send_parked(ch, i); }).join();
    REQUIRE(goro_test::eventually([] { return goro_test::parked_count("wp_consumer") == 1; }));

    std::size_t buckets = 0;
    CHECK(consumer_count(goro::wait_profile_buckets(), &buckets) == 4);
    CHECK(buckets == 1);  // merged: one stack, one reason

    // A thread that exits gives its table to the next: four threads in turn
    // made one table between them (the list grows only with threads alive at once).
    {
        auto& l = goro::detail::wait_table_list();
        std::size_t before;
        {
            std::lock_guard g(l.mu);
            before = l.all.size();
        }
        std::thread([&] { send_parked(ch, 9); }).join();
        REQUIRE(goro_test::eventually([] { return goro_test::parked_count("wp_consumer") == 1; }));
        std::lock_guard g(l.mu);
        CHECK(l.all.size() == before);
        CHECK(!l.free.empty());
    }
    CHECK(consumer_count(goro::wait_profile_buckets()) == 5);

    // Reset: every table's counters become its zero; later waits count from there.
    goro::reset_wait_profile();
    CHECK(consumer_count(goro::wait_profile_buckets()) == 0);
    CHECK(goro::wait_profile_buckets().empty());
    std::thread([&] { send_parked(ch, 10); }).join();
    REQUIRE(goro_test::eventually([] { return goro_test::parked_count("wp_consumer") == 1; }));
    CHECK(consumer_count(goro::wait_profile_buckets()) == 1);

    ch.close();
    REQUIRE(goro_test::tasks_drained(baseline));
}

TEST_CASE("a full table sends new stacks to its (other stacks) bucket", "[wait_profile]") {
    goro::detail::wait_table t;
    const char* reason = "chan receive";
    std::uint64_t words[1] = {0};
    goro::detail::promise_base leaf;
    for (std::size_t i = 0; i < goro::detail::wait_buckets_per_table; ++i) {
        words[0] = 0;  // one stack (the leaf's site), told apart by hash and reason
        auto* c = t.find(reinterpret_cast<const char*>(reason + (i % 2)), &leaf, words, 1, i * 7919);
        REQUIRE(c);
        CHECK(t.find(reinterpret_cast<const char*>(reason + (i % 2)), &leaf, words, 1, i * 7919) == c);
    }
    CHECK(t.find(reason, &leaf, words, 1, 123456789) == nullptr);  // full
    std::lock_guard g(t.mu);
    CHECK(t.size == goro::detail::wait_buckets_per_table);
}

TEST_CASE("the wait clock follows now_ns", "[wait_profile]") {
    profile_on on;  // calibrates (once per process)
    const std::int64_t a = goro::detail::wait_now_ns(), b = goro::detail::now_ns();
    INFO("wait_now_ns - now_ns = " << (a - b) << " ns; tsc mul " << goro::detail::wait_tsc_mul.load());
    CHECK(std::abs(a - b) < 1'000'000'000);  // same epoch (generous: the thread may be descheduled)
    const std::int64_t t0 = goro::detail::wait_now_ns();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::int64_t d = goro::detail::wait_now_ns() - t0;
    INFO("a 20 ms sleep measured " << d << " ns");
    CHECK(d >= 10'000'000);
    CHECK(d < 60'000'000'000);
}

TEST_CASE("reads and resets race records without a data race", "[wait_profile]") {
    profile_on on;
    const std::int64_t baseline = goro::num_goroutines();
    goro::channel<int> ping, pong;
    goro::go(wp_echo(ping, pong));
    std::atomic<bool> done{false};
    std::thread reader([&] {
        for (int i = 0; i < 200 && !done.load(); ++i) {
            auto bs = goro::wait_profile_buckets();
            for (const auto& b : bs) CHECK(b.count >= 0);
            if (i % 10 == 0) goro::reset_wait_profile();
            std::this_thread::yield();
        }
    });
    goro::block_on(wp_pinger(ping, pong));
    done = true;
    reader.join();
    REQUIRE(goro_test::tasks_drained(baseline));
}

TEST_CASE("at rate 100 every long wait is recorded, and counted once", "[wait_profile]") {
    profile_on on(100);
    const std::int64_t baseline = goro::num_goroutines();
    goro::channel<int> ch;
    goro::go(wp_consumer(ch), {.name = "wp_consumer"});
    // Each wait looks one second long (the clock offset is set while the
    // consumer is parked, and cleared once it has parked again). Half are
    // ended from a plain thread (try_send: CLOCK_MONOTONIC_COARSE at the
    // wake), half from a task on a worker (the parked clock at the wake).
    constexpr int waits = 6;
    for (int i = 0; i < waits; ++i) {
        REQUIRE(goro_test::eventually([] { return goro_test::parked_count("wp_consumer") == 1; }));
        clock_offset later(1'000'000'000);
        if (i % 2) REQUIRE(ch.try_send(i) == goro::send_status::sent);
        else goro::block_on(ch.send(i));
        REQUIRE(goro_test::eventually([] { return goro_test::parked_count("wp_consumer") == 1; }));
    }
    double delay = 0;
    CHECK(consumer_count(goro::wait_profile_buckets(), nullptr, &delay) == waits);  // each once, none lost, none x100
    CHECK(delay >= waits * 1e9);

    // A real wait of 150 ms, no offset: recorded, once.
    goro::reset_wait_profile();
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    REQUIRE(ch.try_send(99) == goro::send_status::sent);
    REQUIRE(goro_test::eventually([] { return goro_test::parked_count("wp_consumer") == 1; }));
    CHECK(consumer_count(goro::wait_profile_buckets(), nullptr, &delay) == 1);
    CHECK(delay >= 100e6);

    ch.close();
    REQUIRE(goro_test::tasks_drained(baseline));
}

TEST_CASE("at rate 100 short waits are still sampled, and counted 100 times", "[wait_profile]") {
    profile_on on(100);
    const std::int64_t baseline = goro::num_goroutines();
    goro::channel<int> ping, pong;
    goro::go(wp_echo(ping, pong));
    goro::block_on(wp_pinger(ping, pong));  // up to 4000 parks, ~40 sampled
    double count = 0, seen = 0;
    for (const auto& b : goro::wait_profile_buckets())
        if (!b.stack.empty() && (std::string(b.stack[0].function_name()).find("wp_echo") != std::string::npos ||
                                 std::string(b.stack[0].function_name()).find("wp_pinger") != std::string::npos)) {
            count += b.count;
            seen += double(std::accumulate(b.histogram.begin(), b.histogram.end(), std::uint64_t(0)));
        }
    INFO("count " << count << ", recorded " << seen);
    CHECK(seen >= 1);
    CHECK(seen <= 400);       // not every wait: one in 100 (and any of 100 ms or more, none here unless stalled)
    CHECK(count >= 100);      // a short one stands for 100
    CHECK(count <= 100 * seen);
    REQUIRE(goro_test::tasks_drained(baseline));
}

TEST_CASE("each thread's sampling countdown starts at random, and a lower rate applies at once", "[wait_profile]") {
    // The first sampled park of each of 16 new threads at rate 100: between
    // the 1st and the 199th park (countdowns are drawn from 1 to 2n - 1),
    // and not the same for all (a countdown that started at n, or at 0,
    // would sample in lockstep).
    std::vector<std::int64_t> first(16);
    for (auto& f : first) std::thread([&f] { f = parks_until_sampled(100, 1000); }).join();
    INFO("first sampled park of each thread: " << Catch::Detail::stringify(first));
    for (std::int64_t f : first) {
        CHECK(f >= 1);
        CHECK(f <= 199);
    }
    CHECK(std::count(first.begin(), first.end(), first[0]) < std::int64_t(first.size()));

    // The countdowns: from 1 to 2n - 1, mean n.
    std::int64_t lo = 1'000'000, hi = 0, sum = 0;
    for (int i = 0; i < 10000; ++i) {
        const std::int64_t c = goro::detail::wait_sample_interval(100);
        lo = std::min(lo, c);
        hi = std::max(hi, c);
        sum += c;
    }
    CHECK(lo >= 1);
    CHECK(hi <= 199);
    CHECK(hi > lo);
    CHECK(sum / 10000.0 > 90);
    CHECK(sum / 10000.0 < 110);
    CHECK(goro::detail::wait_sample_interval(1) == 1);

    // Lowering the rate: a thread whose countdown was drawn at 2^30 samples
    // within 3 parks at rate 2 (it does not finish the old countdown).
    std::int64_t after = 0;
    std::thread([&] {
        (void)parks_until_sampled(std::int64_t(1) << 30, 1);
        after = parks_until_sampled(2, 1000);
    }).join();
    CHECK(after >= 1);
    CHECK(after <= 3);

    // Rate 1 samples every park.
    std::thread([] {
        for (int i = 0; i < 5; ++i) CHECK(parks_until_sampled(1, 1) == 1);
    }).join();
}

}  // namespace tests_wait_profile
