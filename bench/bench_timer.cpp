// timer_lateness_under_yield: as the Go anchor's timerLatenessUnderYield().
// The benchmark's main body runs as a task under block_on (Go's main
// goroutine): 4 tasks spin ~50 µs and yield in a loop, while o.n(2'000)
// tasks each sleep 10 ms once. Prints the lateness of the sleepers' wake-ups
// (p50_ms, p99_ms); ns_per_op is the whole run's time per sleeper.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include <goro/sync/wait_group.hpp>

#include "bench.hpp"

namespace {

using namespace std::chrono_literals;

goro::task<> spinner(std::atomic<bool>& stop, goro::wait_group& wg) {
    while (!stop.load(std::memory_order_relaxed)) {
        auto t = bench::clock::now();
        while (bench::clock::now() - t < 50us) {
        }
        co_await goro::yield();
    }
    wg.done();
}

goro::task<> sleeper(std::vector<double>& late, std::size_t i, goro::wait_group& wg) {
    auto t = bench::clock::now();
    co_await goro::sleep_for(10ms);
    late[i] = std::chrono::duration<double, std::milli>(bench::clock::now() - t - 10ms).count();
    wg.done();
}

goro::task<> timer_lateness_body(long sleepers) {
    constexpr int spinners = 4;
    std::atomic<bool> stop{false};
    goro::wait_group spin;
    for (int i = 0; i < spinners; ++i) {
        spin.add(1);
        goro::go(spinner(stop, spin));
    }
    co_await goro::sleep_for(20ms);
    std::vector<double> late(static_cast<std::size_t>(sleepers));
    goro::wait_group wg;
    auto t0 = bench::clock::now();
    for (std::size_t i = 0; i < late.size(); ++i) {
        wg.add(1);
        goro::go(sleeper(late, i, wg));
    }
    co_await wg.wait();
    auto d = bench::clock::now() - t0;
    stop.store(true, std::memory_order_relaxed);
    co_await spin.wait();
    std::sort(late.begin(), late.end());
    bench::emit("timer_lateness_under_yield", sleepers, d,
                {{"p50_ms", late[late.size() / 2]}, {"p99_ms", late[late.size() * 99 / 100]}});
}

void timer_lateness(const bench::options& o) { goro::block_on(timer_lateness_body(o.n(2'000))); }

}  // namespace

GORO_BENCH("timer_lateness", timer_lateness);
