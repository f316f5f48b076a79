// The wait profile's own structure (goro/core/wait_profile.hpp): per-thread
// tables merged when read, tables of threads that exit kept (and reused),
// reset as a new zero, the calibrated clock, and reads racing records (for
// TSan). What one wait adds and the Go formats are in test_block_profile.cpp.
//
// Waits are made deterministic as there: a consumer task receives from a
// channel in a loop, and each value is sent only once it is parked; the
// value is sent with try_send from a plain thread, so the wake (and the
// record) happens on that thread.
#include <catch2/catch.hpp>

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

double consumer_count(const std::vector<goro::detail::wait_bucket>& bs, std::size_t* buckets = nullptr) {
    double n = 0;
    std::size_t k = 0;
    for (const auto& b : bs)
        if (!b.stack.empty() && std::string(b.stack[0].function_name()).find("wp_recv_one") != std::string::npos) {
            n += b.count;
            ++k;
            CHECK(double(std::accumulate(b.histogram.begin(), b.histogram.end(), std::uint64_t(0))) == b.count);
        }
    if (buckets) *buckets = k;
    return n;
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

}  // namespace tests_wait_profile
