// goro::blocking: results, exceptions, many calls, the thread limit, dumps,
// the deadlock detector, and a heartbeat that keeps time while every worker's
// tasks wait in blocking calls.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <goro/core.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_blocking {

using namespace std::chrono_literals;
using goro_test::eventually;

namespace {

/// Restores the blocking pool's settings a test changed.
struct blocking_settings_guard {
    unsigned limit = goro::max_blocking_threads();
    ~blocking_settings_guard() {
        goro::set_max_blocking_threads(limit);
        goro::set_blocking_keep_alive(10s);
    }
};

goro::task<long> one_call(int i) {
    long v = co_await goro::blocking([i] {
        std::this_thread::sleep_for(1ms);
        return static_cast<long>(i);
    });
    co_return v;
}

goro::task<> many_calls(int n, std::atomic<long>& sum) {
    goro::wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; ++i)
        goro::go([](int i, goro::wait_group& wg, std::atomic<long>& sum) -> goro::task<> {
            sum.fetch_add(co_await one_call(i));
            wg.done();
        }(i, wg, sum));
    co_await wg.wait();
}

}  // namespace

TEST_CASE("blocking: returns fn's result, of any type", "[blocking]") {
    CHECK(goro::block_on(goro::blocking([] { return 42; })) == 42);
    CHECK(goro::block_on(goro::blocking([] { return std::string(100, 'x'); })) == std::string(100, 'x'));

    // move-only
    auto p = goro::block_on(goro::blocking([] { return std::make_unique<int>(7); }));
    REQUIRE(p);
    CHECK(*p == 7);

    // void, run exactly once, on another thread than the worker
    std::atomic<int> runs{0};
    std::thread::id where{};
    goro::block_on([](std::atomic<int>& runs, std::thread::id& where) -> goro::task<> {
        std::thread::id worker = std::this_thread::get_id();
        co_await goro::blocking([&] {
            runs.fetch_add(1);
            where = std::this_thread::get_id();
        });
        CHECK(where != worker);
    }(runs, where));
    CHECK(runs.load() == 1);

    // a reference
    int target = 1;
    int* r = goro::block_on([](int& t) -> goro::task<int*> {
        int& got = co_await goro::blocking([&]() -> int& { return t; });
        co_return &got;
    }(target));
    CHECK(r == &target);

    // moved once into the awaiter, never copied, and the result moved out
    goro_test::counted::reset();
    goro_test::counted c = goro::block_on(goro::blocking([] { return goro_test::counted(5); }));
    CHECK(c.value == 5);
    CHECK(goro_test::counted::copies.load() == 0);
}

TEST_CASE("blocking: an exception from fn is rethrown in the task", "[blocking]") {
    CHECK_THROWS_WITH(goro::block_on(goro::blocking([]() -> int { throw std::runtime_error("disk on fire"); })),
                      "disk on fire");
    bool caught = goro::block_on([]() -> goro::task<bool> {
        try {
            co_await goro::blocking([] { throw std::logic_error("nope"); });
        } catch (const std::logic_error&) {
            co_return true;
        }
        co_return false;
    }());
    CHECK(caught);
}

TEST_CASE("blocking: 1,000 concurrent calls all return, threads bounded by the limit", "[blocking]") {
    blocking_settings_guard restore;
    goro::set_max_blocking_threads(32);  // beyond it calls queue
    std::atomic<long> sum{0};
    goro::block_on(many_calls(1000, sum));
    CHECK(sum.load() == 999L * 1000 / 2);
    CHECK(goro::blocking_threads() <= 32);
}

TEST_CASE("blocking: at the limit calls queue; idle threads exit after the keep-alive", "[blocking]") {
    blocking_settings_guard restore;
    goro::set_max_blocking_threads(2);
    goro::set_blocking_keep_alive(50ms);
    std::atomic<int> now{0}, most{0};
    goro::block_on([](std::atomic<int>& now, std::atomic<int>& most) -> goro::task<> {
        goro::wait_group wg;
        wg.add(8);
        for (int i = 0; i < 8; ++i)
            goro::go([](std::atomic<int>& now, std::atomic<int>& most, goro::wait_group& wg) -> goro::task<> {
                co_await goro::blocking([&] {
                    int n = now.fetch_add(1) + 1;
                    int m = most.load();
                    while (n > m && !most.compare_exchange_weak(m, n)) {}
                    std::this_thread::sleep_for(5ms);
                    now.fetch_sub(1);
                });
                wg.done();
            }(now, most, wg));
        co_await wg.wait();
    }(now, most));
    CHECK(most.load() >= 1);
    CHECK(most.load() <= 2);
    CHECK(eventually([] { return goro::blocking_threads() == 0; }));
    CHECK_THROWS_AS(goro::set_max_blocking_threads(0), goro::usage_error);
}

namespace {

goro::task<> parked_in_blocking_call(std::atomic<bool>& release) {
    co_await goro::blocking([&] {
        while (!release.load()) std::this_thread::sleep_for(1ms);
    });
}

}  // namespace

TEST_CASE("blocking: a dump shows the task in [syscall] with the calling function", "[blocking]") {
    std::atomic<bool> release{false};
    goro::go(parked_in_blocking_call(release), {.name = "in-syscall"});
    REQUIRE(eventually([] { return goro_test::parked_count("in-syscall") == 1; }));
    CHECK(goro_test::same_reason(goro_test::parked_reasons("in-syscall").at(0).c_str(), "syscall"));
    std::ostringstream out;
    goro::dump_goroutines(out, 2);
    const std::string text = out.str();
    CHECK(text.find("[syscall") != std::string::npos);
    CHECK(text.find("parked_in_blocking_call") != std::string::npos);
    release.store(true);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("blocking: a task waiting in blocking() is never a deadlock", "[blocking]") {
    auto grace = goro::deadlock_grace();
    goro::set_deadlock_grace(50ms);
    // Every task parked, every worker idle, no timer: only the call is alive.
    int v = goro::block_on(goro::blocking([] {
        std::this_thread::sleep_for(400ms);
        return 3;
    }));
    goro::set_deadlock_grace(grace);
    CHECK(v == 3);
}

TEST_CASE("blocking: a heartbeat keeps its schedule while every worker's tasks block", "[blocking]") {
    const unsigned workers = goro::max_procs();
    std::atomic<bool> release{false};
    std::atomic<unsigned> entered{0};
    for (unsigned i = 0; i < 2 * workers; ++i)
        goro::go([](std::atomic<bool>& release, std::atomic<unsigned>& entered) -> goro::task<> {
            co_await goro::blocking([&] {
                entered.fetch_add(1);
                for (int k = 0; k < 30'000 && !release.load(); ++k) std::this_thread::sleep_for(1ms);
            });
        }(release, entered));
    REQUIRE(eventually([&] { return entered.load() == 2 * workers; }));

    auto worst = goro::block_on([]() -> goro::task<std::chrono::nanoseconds> {
        auto next = std::chrono::steady_clock::now();
        std::chrono::nanoseconds worst{0};
        for (int beat = 0; beat < 5; ++beat) {
            next += 100ms;
            co_await goro::sleep_until(next);
            worst = std::max(worst, std::chrono::nanoseconds(std::chrono::steady_clock::now() - next));
        }
        co_return worst;
    }());
    release.store(true);
    std::printf("blocking heartbeat: worst lateness %.1f ms with %u workers' tasks in blocking()\n",
                static_cast<double>(worst.count()) / 1e6, workers);
    CHECK(worst < 1s);  // without blocking(): a beat waits for a worker (forever here)
    CHECK(goro_test::tasks_drained());
}

}  // namespace tests_blocking
