// leaky: an order service that leaks tasks on every request, in the three
// classic ways. Hunt them with the goroutine profile (docs/walkthrough.md):
//
//   ./leaky &                                           # 127.0.0.1:6060
//   for i in $(seq 10); do curl -s localhost:6060/process; done
//   curl -s 'localhost:6060/debug/pprof/goroutine?debug=1'
//   go tool pprof -top http://localhost:6060/debug/pprof/goroutine
//
// Each order goes through three steps; each step leaks:
//   1. price the items: a producer feeds `jobs` to a pool of workers.
//      LEAK 1: the producer never closes `jobs`, so every worker waits forever
//      in its receive loop (4 tasks per order, [chan receive]).
//   2. ask three replicas for a shipping quote, take the fastest, cancel the rest.
//      LEAK 2: the replicas were not given the context, so the cancel reaches
//      nobody; the two slower ones wait forever to send a quote nobody reads
//      (2 per order, [chan send]).
//   3. reserve the items in three warehouses; the first error aborts (in this
//      demo warehouse 3 is always out of stock, so every order takes that path).
//      LEAK 3: the caller returns at the first error; the warehouses still
//      answering wait forever to send into a channel nobody reads
//      (2 per order, [chan send]).
// fixed.cpp is the same service with the three fixes.
#include <chrono>
#include <string>

#include "service.hpp"

using namespace std::chrono_literals;

constexpr int pricing_workers = 4;
constexpr int replicas = 3;
constexpr int warehouses = 3;

// [produce]
goro::task<> produce(int order, int items, goro::channel<int> jobs) {
    for (int i = 1; i <= items; ++i) co_await jobs.send(order * 1000 + i);
    // (no jobs.close(): nothing tells the workers that this was the last job)
}
// [/produce]

// [price_worker]
goro::task<> price_worker(goro::channel<int> jobs, goro::channel<long> prices) {
    while (auto job = co_await jobs.recv()) {  // LEAK 1: jobs is never closed, so this waits forever
        co_await prices.send(100 + *job % 997);
    }
}
// [/price_worker]

// [fetch_quote]
// The context is not a parameter: the caller's cancel() cannot reach us.
goro::task<> fetch_quote(int order, int replica, goro::channel<int> quotes) {
    int quote = 500 + (order * 31 + replica * 7) % 100;  // the replica's answer
    co_await quotes.send(quote);  // LEAK 2: the losers wait here forever; nobody reads their quote
}
// [/fetch_quote]

// [reserve]
goro::task<> reserve(int warehouse, goro::channel<std::string> errors) {
    std::string error;
    if (warehouse == 3) {
        error = "warehouse 3: out of stock";  // fails at once
    } else {
        co_await goro::sleep_for(10ms);  // the reservation call
    }
    co_await errors.send(error);  // LEAK 3: after the first error nobody reads this channel
}
// [/reserve]

goro::task<std::string> process_order(int order, int items) {
    // 1. Price the items on a pool of workers.
    goro::channel<int> jobs;
    goro::channel<long> prices;
    goro::go(produce(order, items, jobs));
    for (int w = 0; w < pricing_workers; ++w) goro::go(price_worker(jobs, prices));
    long total = 0;
    for (int i = 0; i < items; ++i) total += *co_await prices.recv();

    // 2. The fastest of three replicas gives the shipping quote.
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    goro::channel<int> quotes;
    for (int r = 1; r <= replicas; ++r) goro::go(fetch_quote(order, r, quotes));
    int quote = *co_await quotes.recv();
    cancel();  // meant to stop the slower replicas, but they never see ctx

    // 3. Reserve the items; any error aborts the order.
    goro::channel<std::string> errors;
    for (int w = 1; w <= warehouses; ++w) goro::go(reserve(w, errors));
    std::string status = "reserved";
    for (int w = 1; w <= warehouses; ++w) {
        std::string error = *co_await errors.recv();
        if (!error.empty()) {
            status = "not reserved (" + error + ")";
            break;  // returns early: the other warehouses are left behind
        }
    }

    co_return "order " + std::to_string(order) + ": " + std::to_string(items) + " items, " +
        std::to_string(total) + " + shipping " + std::to_string(quote) + ", " + status + "\n";
}

int main(int argc, char** argv) { return leak_hunt::run_service(argc, argv, process_order); }
