// Channel, select and context benchmarks: the same work, counts and names as
// pingPong, spsc, mpmc, selectRecv and cancelFanout in the Go anchor
// (../shared/anchors/go/main.go). Go's main goroutine is a block_on task here.
#include <atomic>
#include <chrono>
#include <thread>

#include <goro/sync/channel.hpp>
#include <goro/sync/context.hpp>
#include <goro/sync/select.hpp>
#include <goro/sync/wait_group.hpp>

#include "bench.hpp"

namespace {

using bench::clock;

// Round trip over two unbuffered channels between two tasks.
goro::task<> pingpong_echo(goro::channel<int> ping, goro::channel<int> pong) {
    while (auto v = co_await ping.recv()) co_await pong.send(*v);
    pong.close();
}

goro::task<> pingpong_main(long ops, const char* name = "chan_pingpong_unbuffered", bench::extras extra = {}) {
    goro::channel<int> ping, pong;
    goro::go(pingpong_echo(ping, pong));
    auto t = clock::now();
    for (long i = 0; i < ops; ++i) {
        co_await ping.send(int(i));
        co_await pong.recv();
    }
    bench::emit(name, ops, clock::now() - t, extra);
    ping.close();
}

void ping_pong(const bench::options& o) { goro::block_on(pingpong_main(o.n(1'000'000))); }

// The same with the wait profile on (goro/core/wait_profile.hpp): every wait
// recorded (rate 1), then one in default_wait_profile_rate.
void ping_pong_waitprof(const bench::options& o) {
    for (std::int64_t rate : {std::int64_t(1), goro::default_wait_profile_rate}) {
        if (!o.want(rate == 1 ? "chan_pingpong_unbuffered_waitprof" : "chan_pingpong_unbuffered_waitprof_default"))
            continue;
        bench::wait_profile_scope on(rate);
        goro::block_on(pingpong_main(o.n(1'000'000),
                                     rate == 1 ? "chan_pingpong_unbuffered_waitprof"
                                               : "chan_pingpong_unbuffered_waitprof_default",
                                     {{"wait_profile_rate", double(rate)}}));
    }
}

// One producer, one consumer, buffered channel of 1024.
goro::task<> spsc_consumer(goro::channel<int> ch, goro::channel<int> done) {
    long s = 0;
    while (auto v = co_await ch.recv()) s += *v;
    static std::atomic<long> sink;
    sink.store(s, std::memory_order_relaxed);
    done.close();
}

goro::task<> spsc_main(long ops) {
    goro::channel<int> ch(1024), done;
    goro::go(spsc_consumer(ch, done));
    auto t = clock::now();
    for (long i = 0; i < ops; ++i) co_await ch.send(int(i));
    ch.close();
    co_await done.recv();
    bench::emit("chan_spsc_buffered1024", ops, clock::now() - t);
}

void spsc(const bench::options& o) { goro::block_on(spsc_main(o.n(10'000'000))); }

// Four producers, four consumers, buffered channel of 1024.
goro::task<> mpmc_consumer(goro::channel<int> ch, goro::wait_group& cw) {
    // Not `while (co_await ch.recv())`: g++ 12 miscompiles a co_await that is
    // a while condition without a declaration (the coroutine never starts).
    while (auto v = co_await ch.recv()) {
    }
    cw.done();
}

goro::task<> mpmc_producer(goro::channel<int> ch, long count, goro::wait_group& pw) {
    for (long i = 0; i < count; ++i) co_await ch.send(int(i));
    pw.done();
}

goro::task<> mpmc_main(long ops) {
    goro::channel<int> ch(1024);
    goro::wait_group cw, pw;
    auto t = clock::now();
    for (int c = 0; c < 4; ++c) {
        cw.add(1);
        goro::go(mpmc_consumer(ch, cw));
    }
    for (int p = 0; p < 4; ++p) {
        pw.add(1);
        goro::go(mpmc_producer(ch, ops / 4, pw));
    }
    co_await pw.wait();
    ch.close();
    co_await cw.wait();
    bench::emit("chan_mpmc4x4_buffered1024", ops, clock::now() - t);
}

void mpmc(const bench::options& o) { goro::block_on(mpmc_main(o.n(4'000'000))); }

// A worker receiving from a channel or a context's done in a select, fed by main.
goro::task<> select_worker(goro::context ctx, goro::channel<int> ch, goro::channel<int> done) {
    for (;;) {
        auto r = co_await goro::select(goro::recv(ch), ctx.done());
        if (r.index() == 0 && !r.get<0>()) break;  // closed
        if (r.index() == 1) break;
    }
    done.close();
}

goro::task<> select_main(long ops) {
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    goro::channel<int> ch(1024), done;
    goro::go(select_worker(ctx, ch, done));
    auto t = clock::now();
    for (long i = 0; i < ops; ++i) co_await ch.send(int(i));
    ch.close();
    co_await done.recv();
    bench::emit("select_recv_or_done", ops, clock::now() - t);
    cancel();
}

void select_recv(const bench::options& o) { goro::block_on(select_main(o.n(2'000'000))); }

// The producer's side of the same loop, Go's `select { case out <- v: case
// <-ctx.Done(): }`: a worker sends in a select on a channel main drains.
// goro only (the Go anchor has no such benchmark): a figure to compare
// goro's own versions by.
goro::task<> select_sender(goro::context ctx, goro::channel<int> ch, long ops) {
    for (long i = 0; i < ops; ++i) {
        auto r = co_await goro::select(goro::send(ch, int(i)), ctx.done());
        if (r.index() == 1) break;
    }
    ch.close();
}

goro::task<> select_send_main(long ops) {
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    goro::channel<int> ch(1024);
    goro::go(select_sender(ctx, ch, ops));
    auto t = clock::now();
    long got = 0;
    while (auto v = co_await ch.recv()) ++got;
    bench::emit("select_send_or_done", got, clock::now() - t);
    cancel();
}

void select_send(const bench::options& o) { goro::block_on(select_send_main(o.n(2'000'000))); }

// Cancel a context that N tasks wait on in a select; time until all exit.
goro::task<> fanout_waiter(goro::context ctx, goro::channel<int> never, goro::wait_group& wg) {
    co_await goro::select(goro::recv(never), ctx.done());
    wg.done();
}

goro::task<> fanout_main(long count) {
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    goro::wait_group wg;
    goro::channel<int> never;
    for (long i = 0; i < count; ++i) {
        wg.add(1);
        goro::go(fanout_waiter(ctx, never, wg));
    }
    co_await goro::sleep_for(std::chrono::milliseconds(50));
    auto t = clock::now();
    cancel();
    co_await wg.wait();
    bench::emit("cancel_fanout", count, clock::now() - t);
}

void cancel_fanout(const bench::options& o) { goro::block_on(fanout_main(o.n(100'000))); }

}  // namespace

GORO_BENCH("chan_pingpong", ping_pong);
GORO_BENCH("chan_pingpong_unbuffered_waitprof|chan_pingpong_unbuffered_waitprof_default", ping_pong_waitprof);
GORO_BENCH("chan_spsc", spsc);
GORO_BENCH("chan_mpmc", mpmc);
GORO_BENCH("select_recv", select_recv);
GORO_BENCH("select_send", select_send);
GORO_BENCH("cancel_fanout", cancel_fanout);
