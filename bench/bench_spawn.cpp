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

goro::task<> spawn_join_body(long ops, const char* name = "spawn_join", bench::extras extra = {}) {
    goro::wait_group wg;
    auto t = bench::clock::now();
    for (long i = 0; i < ops; ++i) {
        wg.add(1);
        goro::go(finish(wg));
    }
    co_await wg.wait();
    bench::emit(name, ops, bench::clock::now() - t, extra);
}

void spawn_join(const bench::options& o) { goro::block_on(spawn_join_body(o.n(1'000'000))); }

// The same with the wait profile on (goro/core/wait_profile.hpp): every wait
// recorded (rate 1), then one in default_wait_profile_rate.
void spawn_join_waitprof(const bench::options& o) {
    for (std::int64_t rate : {std::int64_t(1), goro::default_wait_profile_rate}) {
        const char* name = rate == 1 ? "spawn_join_waitprof" : "spawn_join_waitprof_default";
        if (!o.want(name)) continue;
        bench::wait_profile_scope on(rate);
        goro::block_on(spawn_join_body(o.n(1'000'000), name, {{"wait_profile_rate", double(rate)}}));
    }
}

}  // namespace

GORO_BENCH("spawn_join", spawn_join);
GORO_BENCH("spawn_join_waitprof|spawn_join_waitprof_default", spawn_join_waitprof);
