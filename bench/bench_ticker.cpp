// ticker_1ms_tasks10000: as the Go anchor's tickers(). o.n(10'000) tasks each
// make a ticker of 1 ms, receive 20 ticks from it and stop it; the main body
// (under block_on, Go's main goroutine) waits for all. ns_per_op is the wall
// time per tick delivered (n = tasks x 20); wall_ms the whole run.
#include <chrono>

#include <goro/sync/ticker.hpp>
#include <goro/sync/wait_group.hpp>

#include "bench.hpp"

namespace {

using namespace std::chrono_literals;

constexpr int ticks = 20;

goro::task<> ticking(goro::wait_group& wg) {
    goro::ticker tk(1ms);
    for (int j = 0; j < ticks; ++j) (void)co_await tk.chan().recv();
    tk.stop();
    wg.done();
}

goro::task<> tickers_body(long count) {
    goro::wait_group wg;
    auto t = bench::clock::now();
    for (long i = 0; i < count; ++i) {
        wg.add(1);
        goro::go(ticking(wg));
    }
    co_await wg.wait();
    auto d = bench::clock::now() - t;
    bench::emit("ticker_1ms_tasks10000", count * ticks, d,
                {{"wall_ms", std::chrono::duration<double, std::milli>(d).count()}});
}

void tickers(const bench::options& o) { goro::block_on(tickers_body(o.n(10'000))); }

}  // namespace

GORO_BENCH("ticker_1ms_tasks10000", tickers);
