// A context tree cancelled from the top: a request context with a value,
// two handlers below it, each with workers. One cancel() at the root stops
// every task in the tree at once; each task sees why (ctx.err()).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>

#include <goro/goro.hpp>

using namespace std::chrono_literals;

namespace {

const goro::context_key<std::string> request_id{"request_id"};

goro::task<> worker(goro::context ctx, std::string name, goro::channel<int> jobs, goro::wait_group& wg) {
    int handled = 0;
    for (;;) {
        auto r = co_await goro::select(goro::recv(jobs), ctx.done());
        if (r.index() == 1) break;  // cancelled
        ++handled;
    }
    std::printf("%s (request %s): stopped after %d jobs: %s\n", name.c_str(), ctx.value(request_id)->c_str(), handled,
                goro::to_string(ctx.err()));
    wg.done();
}

goro::task<> handler(goro::context parent, std::string name, goro::wait_group& wg) {
    // Each handler has its own subtree (and could cancel just that).
    auto [ctx, cancel] = goro::with_timeout(parent, 10s);
    goro::channel<int> jobs(4);
    for (int i = 0; i < 2; ++i) {
        wg.add(1);
        goro::go(worker(ctx, name + "/worker" + std::to_string(i), jobs, wg));
    }
    for (int j = 0; j < 8; ++j) {
        auto r = co_await goro::select(goro::send(jobs, j), ctx.done());
        if (r.index() == 1) break;
    }
    co_await ctx.done();  // until someone above cancels
    cancel();             // releases the timer at once (idempotent)
    wg.done();
}

goro::task<> serve() {
    auto [root, cancel] = goro::with_cancel(goro::background());
    goro::context request = goro::with_value(root, request_id, std::string("req-7"));
    goro::wait_group wg;
    for (const char* name : {"handler-a", "handler-b"}) {
        wg.add(1);
        goro::go(handler(request, name, wg));
    }
    co_await goro::sleep_for(20ms);
    std::printf("cancelling the root\n");
    cancel();
    co_await wg.wait();
    std::printf("every task stopped: %s\n", goro::to_string(request.err()));
}

}  // namespace

int main() {
    goro::block_on(serve());
    return 0;
}
