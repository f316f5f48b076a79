// core/go.hpp: go and block_on, sleep_for/sleep_until, yield.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <mutex>
#include <string>
#include <vector>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_go {

using namespace std::chrono_literals;
using goro_test::eventually;

namespace {

goro::task<> bump(std::atomic<long>& n) {
    n.fetch_add(1);
    co_return;
}

goro::task<> sleeper(std::chrono::milliseconds d, int tag, std::mutex& mu, std::vector<int>& order) {
    co_await goro::sleep_for(d);
    std::lock_guard<std::mutex> lk(mu);
    order.push_back(tag);
}

goro::task<> try_block_on(bool& threw) {
    std::atomic<long> n{0};
    try {
        goro::block_on(bump(n));
    } catch (const goro::usage_error& e) {
        threw = std::string(e.what()).find("goro::block_on") != std::string::npos;
    }
    co_return;
}

}  // namespace

TEST_CASE("go runs a detached task and block_on waits for a result", "[go]") {
    std::atomic<long> n{0};
    goro::go(bump(n));
    CHECK(eventually([&] { return n.load() == 1; }));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("block_on on a pool worker throws instead of deadlocking", "[go]") {
    bool threw = false;
    auto outer = [](bool& t) -> goro::task<> { co_await try_block_on(t); };
    goro::block_on(outer(threw));
    CHECK(threw);
}

TEST_CASE("sleepers wake in deadline order", "[go]") {
    std::mutex mu;
    std::vector<int> order;
    // Deadlines 40 ms apart: far more than any scheduling jitter.
    for (int i = 4; i >= 0; --i) goro::go(sleeper(std::chrono::milliseconds(40 * i), i, mu, order));
    REQUIRE(eventually([&] {
        std::lock_guard<std::mutex> lk(mu);
        return order.size() == 5;
    }));
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("sleep_for waits at least the duration", "[go]") {
    auto t0 = std::chrono::steady_clock::now();
    goro::block_on(goro::sleep_for(20ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
    auto t1 = std::chrono::steady_clock::now();
    goro::block_on(goro::sleep_until(t1 + 10ms));
    CHECK(std::chrono::steady_clock::now() >= t1 + 10ms);
    goro::block_on(goro::sleep_for(-5ms));  // a past deadline does not park
}

TEST_CASE("sleep outside a task is a usage error", "[go]") {
    auto s = goro::sleep_for(1ms);
    CHECK_THROWS_AS(s.await_suspend(std::noop_coroutine()), goro::usage_error);
}

TEST_CASE("yield lets other tasks on the same worker run", "[go]") {
    // One task spins on a flag that only another task sets; without yield (and
    // with a single worker) it would never finish. With more workers the flag
    // is set elsewhere; either way yield must not lose the task.
    std::atomic<bool> flag{false};
    std::atomic<int> yields{0};
    auto waiter = [](std::atomic<bool>& f, std::atomic<int>& y) -> goro::task<> {
        while (!f.load()) {
            y.fetch_add(1);
            co_await goro::yield();
        }
    };
    auto setter = [](std::atomic<bool>& f) -> goro::task<> {
        f.store(true);
        co_return;
    };
    auto both = [&]() -> goro::task<> {
        goro::go(setter(flag));
        co_await waiter(flag, yields);
    };
    goro::block_on(both());
    CHECK(flag.load());
}

}  // namespace tests_go
