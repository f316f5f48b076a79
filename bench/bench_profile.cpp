// The goroutine profile of many parked tasks, and waking them all by one close:
// the anchor's parkedProfile(count) (../shared/anchors/go/main.go), step by step.
//
//   goroutine_profile_debug{0,1,2}_parked{N}: ms (the whole call: snapshot,
//     grouping, formatting into a string, as Go's WriteTo into a bytes.Buffer;
//     called from a task, as the anchor calls it from the main goroutine,
//     which holds one of the GOMAXPROCS Ps),
//     max_pause_ms (the largest gap seen by a probe task that reads the clock
//     in a loop and yields, while the profile is taken: the stop of the world),
//     bytes (the output's size), bytes_per_parked_task.
//   wake_all_by_close_parked{N}: close the channel; time until every task exited.
//
// bytes_per_parked_task: the growth of malloc's in-use bytes (glibc mallinfo2:
// uordblks + hblkhd, summed over all arenas, chunk headers included) from
// before the tasks were spawned to when all have started, divided by N. It
// counts each task's coroutine frame (with its channel waiter inside) and its
// registry header. Go counts stack in use + heap the same way.
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <goro/sync/channel.hpp>
#include <goro/inspect/dump.hpp>

#include "bench.hpp"

namespace {

goro::task<> parked_receiver(goro::channel<int> ch, std::atomic<long>& started) {
    started.fetch_add(1, std::memory_order_relaxed);
    for (;;) {
        auto v = co_await ch.recv();
        if (!v) break;
    }
}

goro::task<> pause_probe(std::atomic<bool>& stop, std::atomic<std::int64_t>& worst, std::atomic<bool>& done) {
    std::int64_t w = 0, last = goro::detail::now_ns();
    while (!stop.load(std::memory_order_relaxed)) {
        std::int64_t now = goro::detail::now_ns();
        if (now - last > w) w = now - last;
        last = now;
        co_await goro::yield();
    }
    worst.store(w);
    done.store(true);
}

goro::task<std::string> take_profile(int debug, bench::clock::duration& took) {
    auto t = bench::clock::now();
    std::string out = goro::goroutine_profile(debug);
    took = bench::clock::now() - t;
    co_return out;
}

std::size_t heap_in_use() {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

void parked_profile(long count) {
    using namespace std::chrono_literals;
    const std::int64_t baseline = goro::num_goroutines();
    malloc_trim(0);
    const std::size_t before = heap_in_use();
    goro::channel<int> ch;
    std::atomic<long> started{0};
    for (long i = 0; i < count; ++i) goro::go(parked_receiver(ch, started));
    while (started.load() < count) std::this_thread::sleep_for(100us);
    const std::size_t after = heap_in_use();
    const double per_task = (double(after) - double(before)) / double(count);

    for (int debug : {0, 1, 2}) {
        std::atomic<bool> stop{false}, done{false};
        std::atomic<std::int64_t> worst{0};
        goro::go(pause_probe(stop, worst, done));
        std::this_thread::sleep_for(10ms);
        bench::clock::duration d{};
        std::string out = goro::block_on(take_profile(debug, d));
        std::this_thread::sleep_for(10ms);
        stop.store(true);
        while (!done.load()) std::this_thread::sleep_for(50us);
        double us = double(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
        bench::emit("goroutine_profile_debug" + std::to_string(debug) + "_parked" + std::to_string(count), 1,
                    std::chrono::duration_cast<std::chrono::nanoseconds>(d),
                    {{"bytes", double(out.size())},
                     {"bytes_per_parked_task", per_task},
                     {"ms", us / 1000},
                     {"max_pause_ms", double(worst.load() / 1000) / 1000}});
    }
    // The probes have exited (done), but their frames are freed just after: wait for the count.
    while (goro::num_goroutines() > baseline + count) std::this_thread::yield();
    auto t = bench::clock::now();
    ch.close();
    while (goro::num_goroutines() > baseline) std::this_thread::yield();
    bench::emit("wake_all_by_close_parked" + std::to_string(count), count,
                std::chrono::duration_cast<std::chrono::nanoseconds>(bench::clock::now() - t));
}

void run(const bench::options& o) {
    parked_profile(o.n(100'000));
    if (o.scale >= 1) parked_profile(1'000'000);
}

}  // namespace

GORO_BENCH("goroutine_profile|wake_all", run);
