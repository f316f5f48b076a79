// Fan-out / fan-in: one producer feeds a channel of jobs, N workers take jobs
// from it in parallel (fan-out) and send results into one channel (fan-in).
// A wait group counts the workers; when the last one is done, a closer task
// closes the results channel, which ends the consumer's `while (recv)` loop,
// Go's `for r := range results`.
//
//   producer ──jobs──► worker ×N ──results──► main (sums)
//                         │ wg.done()
//                         ▼
//                 closer: co_await wg.wait(); results.close();
//
// Run: ./fan_out_in [workers] [jobs]
#include <cstdio>
#include <cstdlib>

#include <goro/goro.hpp>

namespace {

goro::task<> produce(goro::channel<long> jobs, long count) {
    for (long i = 1; i <= count; ++i) co_await jobs.send(i);
    jobs.close();  // no more jobs: each worker's loop ends once the channel is drained
}

goro::task<> work(goro::channel<long> jobs, goro::channel<long> results, goro::wait_group& wg) {
    while (auto job = co_await jobs.recv()) co_await results.send(*job * *job);
    wg.done();
}

goro::task<> close_when_done(goro::wait_group& wg, goro::channel<long> results) {
    co_await wg.wait();
    results.close();
}

goro::task<long> run(int workers, long count) {
    goro::channel<long> jobs(64), results(64);
    goro::wait_group wg;
    goro::go(produce(jobs, count));
    for (int i = 0; i < workers; ++i) {
        wg.add(1);
        goro::go(work(jobs, results, wg));
    }
    goro::go(close_when_done(wg, results));
    long sum = 0;
    while (auto r = co_await results.recv()) sum += *r;
    co_return sum;  // the closer has finished with wg: results closed only after wg.wait() returned
}

}  // namespace

int main(int argc, char** argv) {
    int workers = argc > 1 ? std::atoi(argv[1]) : 8;
    long count = argc > 2 ? std::atol(argv[2]) : 10000;
    if (workers < 1 || count < 0) {
        std::fprintf(stderr, "usage: fan_out_in [workers ≥ 1] [jobs ≥ 0]\n");
        return 2;
    }
    long sum = goro::block_on(run(workers, count));
    long want = count * (count + 1) * (2 * count + 1) / 6;  // sum of squares 1..count
    std::printf("%d workers, %ld jobs: sum of squares %ld (%s)\n", workers, count, sum, sum == want ? "ok" : "WRONG");
    return sum == want ? 0 : 1;
}
