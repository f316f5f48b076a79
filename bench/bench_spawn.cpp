// spawn_join: as the Go anchor's spawn(). The benchmark's main body runs as a
// task under block_on (Go's main goroutine), spawns o.n(1'000'000) tasks that
// each only call wg.done(), then waits for them all.
#include <goro/sync/wait_group.hpp>

#include "bench.hpp"

namespace {

goro::task<> finish(goro::wait_group& wg) {
    wg.done();
    co_return;
}

goro::task<> spawn_join_body(long ops) {
    goro::wait_group wg;
    auto t = bench::clock::now();
    for (long i = 0; i < ops; ++i) {
        wg.add(1);
        goro::go(finish(wg));
    }
    co_await wg.wait();
    bench::emit("spawn_join", ops, bench::clock::now() - t);
}

void spawn_join(const bench::options& o) { goro::block_on(spawn_join_body(o.n(1'000'000))); }

}  // namespace

GORO_BENCH("spawn_join", spawn_join);
