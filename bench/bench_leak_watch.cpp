// One sample of goro::leak_watch with 100,000 parked tasks (issue: ≤ 15 ms of
// one core, ≤ 0.1 ms of pause):
//
//   leak_watch_sample_parked{N}: cpu_ms (CPU time of the sampling thread for
//     one sample: snapshot, grouping, the watch's bookkeeping; the median of
//     7 samples), wall_ms (the same sample's wall time), pause_ms (the world's
//     stop in it: snapshot::copy_ns, the median), max_pause_ms (the largest of
//     the 7). Sampled from a plain thread, as the watch's own thread does.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <goro/inspect/leak_watch.hpp>
#include <goro/sync/channel.hpp>

#include "bench.hpp"

namespace {

goro::task<> watched_receiver(goro::channel<int> ch, std::atomic<long>& started) {
    started.fetch_add(1, std::memory_order_relaxed);
    for (;;) {  // (not `while (co_await ...)`: g++ 12 miscompiles it)
        auto v = co_await ch.recv();
        if (!v) break;
    }
}

void sample_parked(long count) {
    using namespace std::chrono_literals;
    const std::int64_t baseline = goro::num_goroutines();
    goro::channel<int> ch;
    std::atomic<long> started{0};
    for (long i = 0; i < count; ++i) goro::go(watched_receiver(ch, started));
    while (started.load() < count) std::this_thread::sleep_for(100us);
    std::this_thread::sleep_for(10ms);

    goro::leak_watch w;
    std::vector<double> cpu, wall, pause;
    for (int i = 0; i < 7; ++i) {
        auto t = bench::clock::now();
        w.sample_now();
        wall.push_back(double(std::chrono::duration_cast<std::chrono::nanoseconds>(bench::clock::now() - t).count()) / 1e6);
        auto r = w.report();
        cpu.push_back(double(r.last_sample_cpu_ns) / 1e6);
        pause.push_back(double(r.last_sample_pause_ns) / 1e6);
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    const double max_pause = *std::max_element(pause.begin(), pause.end());
    bench::emit("leak_watch_sample_parked" + std::to_string(count), 1,
                std::chrono::nanoseconds(static_cast<std::int64_t>(median(wall) * 1e6)),
                {{"cpu_ms", median(cpu)}, {"wall_ms", median(wall)}, {"pause_ms", median(pause)},
                 {"max_pause_ms", max_pause}});
    ch.close();
    while (goro::num_goroutines() > baseline) std::this_thread::yield();
}

void run(const bench::options& o) { sample_parked(o.n(100'000)); }

}  // namespace

GORO_BENCH("leak_watch", run);
