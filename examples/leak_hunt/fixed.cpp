// fixed: leaky.cpp's order service with its three task leaks fixed. After any
// number of requests the goroutine profile shows no task left behind:
//
//   ./fixed &
//   for i in $(seq 10); do curl -s localhost:6060/process; done
//   curl -s 'localhost:6060/debug/pprof/goroutine?debug=1' | head -1   # goroutine profile: total 2
//   (the service's own two tasks: its acceptor and the connection asking)
//
// The three fixes, Go's usual ones (compare with leaky.cpp, step by step):
//   FIX 1: the producer closes `jobs` after the last send, so each worker's
//          receive loop ends (`for job := range jobs`); a wait group lets the
//          caller wait until every worker has returned.
//   FIX 2: the replicas get the order's context and send with a select on
//          ctx.done(), so cancel() releases the losers.
//   FIX 3: an error group with a context: the first error cancels the others,
//          which watch ctx.done() while they work, and wait() returns only when
//          every task has finished. Results go into slots, not a channel that
//          someone must drain.
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "service.hpp"

using namespace std::chrono_literals;

constexpr int pricing_workers = 4;
constexpr int replicas = 3;
constexpr int warehouses = 3;

// [produce]
goro::task<> produce(int order, int items, goro::channel<int> jobs) {
    for (int i = 1; i <= items; ++i) co_await jobs.send(order * 1000 + i);
    jobs.close();  // FIX 1: the last job was sent; every worker's loop ends
}
// [/produce]

// [price_worker]
goro::task<> price_worker(goro::channel<int> jobs, goro::channel<long> prices, goro::wait_group& wg) {
    while (auto job = co_await jobs.recv()) {  // ends when jobs is closed and drained
        co_await prices.send(100 + *job % 997);
    }
    wg.done();
}
// [/price_worker]

// [fetch_quote]
goro::task<> fetch_quote(goro::context ctx, int order, int replica, goro::channel<int> quotes) {
    int quote = 500 + (order * 31 + replica * 7) % 100;  // the replica's answer
    // FIX 2: give up when the order no longer wants an answer.
    co_await goro::select(goro::send(quotes, quote), ctx.done());
}
// [/fetch_quote]

// [reserve]
struct out_of_stock : std::runtime_error {
    using std::runtime_error::runtime_error;
};

goro::task<> reserve(goro::context ctx, int warehouse) {
    if (warehouse == 3) throw out_of_stock("warehouse 3: out of stock");  // fails at once
    // The reservation call, abandoned when a sibling failed (FIX 3).
    co_await goro::select(goro::after(10ms), ctx.done());
}
// [/reserve]

// [process_order]
goro::task<std::string> process_order(int order, int items) {
    // 1. Price the items on a pool of workers.
    goro::channel<int> jobs;
    goro::channel<long> prices;
    goro::wait_group wg;
    goro::go(produce(order, items, jobs));
    for (int w = 0; w < pricing_workers; ++w) {
        wg.add(1);
        goro::go(price_worker(jobs, prices, wg));
    }
    long total = 0;
    for (int i = 0; i < items; ++i) total += *co_await prices.recv();
    co_await wg.wait();  // every worker has left its loop

    // 2. The fastest of three replicas gives the shipping quote.
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    goro::channel<int> quotes;
    for (int r = 1; r <= replicas; ++r) goro::go(fetch_quote(ctx, order, r, quotes));
    int quote = *co_await quotes.recv();
    cancel();  // the slower replicas see ctx.done() and return

    // 3. Reserve the items; any error aborts the order (and cancels the rest).
    auto [group, group_ctx] = goro::errgroup::with_context(goro::background());
    for (int w = 1; w <= warehouses; ++w) co_await group.go(reserve(group_ctx, w));
    std::string status = "reserved";
    if (std::exception_ptr e = co_await group.wait_error()) {  // after every reservation has returned
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& err) {
            status = std::string("not reserved (") + err.what() + ")";
        }
    }

    co_return "order " + std::to_string(order) + ": " + std::to_string(items) + " items, " +
        std::to_string(total) + " + shipping " + std::to_string(quote) + ", " + status + "\n";
}
// [/process_order]

int main(int argc, char** argv) { return leak_hunt::run_service(argc, argv, process_order); }
