// For the live page's browser test: a debug server over N groups of tasks
// (N tasks parked on one channel, each with its own label, so each is a group
// of its own). Prints `listening on 127.0.0.1:PORT`, then serves until stdin
// closes (the test's end), then lets its tasks go.
//
//   many_groups N
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include <goro/goro.hpp>

namespace {

goro::task<> grouped_waiter(goro::channel<int> ch) {
    for (;;) {  // (not `while (co_await ...)`: g++ 12 miscompiles it)
        auto v = co_await ch.recv();
        if (!v) break;
    }
}

}  // namespace

int main(int argc, char** argv) {
    long n = argc > 1 ? std::atol(argv[1]) : 10000;
    if (n < 1 || n > 1000000) {
        std::fprintf(stderr, "usage: %s N (1 to 1000000 groups)\n", argv[0]);
        return 2;
    }
    goro::channel<int> ch;
    for (long i = 0; i < n; ++i) goro::go(grouped_waiter(ch), {.labels = {{"group", std::to_string(i)}}});
    goro::debug_server::options o;
    o.port = 0;
    goro::debug_server server(o);
    server.start();
    std::printf("listening on 127.0.0.1:%u\n", static_cast<unsigned>(server.port()));
    std::fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line)) {
    }
    server.stop();
    ch.close();
    while (goro::num_goroutines() > 0) std::this_thread::yield();
    return 0;
}
