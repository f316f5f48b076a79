// The plumbing shared by the leak-hunting example's two programs, `leaky` and
// `fixed`: command line, the debug server, the /process route, shutdown. The
// programs differ only in how one order is processed (process_order in
// leaky.cpp and fixed.cpp); everything here is the same for both, so a diff
// of the two files shows the three fixes and nothing else.
//
//   leaky [--port N]      N: 0 picks a free port; default $LEAK_HUNT_PORT, else 6060
//   leaky --diff N        no server: process N orders in this process between two
//                         snapshots and print goro::diff of them (what they left behind)
//
// The first line on stdout is `listening on 127.0.0.1:PORT` (flushed), so a
// script or a test that started the program on port 0 learns where it is.
// Routes: GET /process[?items=N] processes one order of N items (default 8)
// and answers one line of text; plus goro's debug routes (/debug/pprof/,
// /debug/pprof/goroutine, /debug/goro/tasks.json, /metrics).
//
// THREADS: main blocks SIGINT and SIGTERM before anything starts a thread (so
// every thread inherits the mask) and waits for one of them with sigwait, then
// stops the server. Handlers run on the server's own thread, which is not a
// pool worker: there a handler may goro::block_on the request's coroutine.
#pragma once

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>

#include <signal.h>

#include <goro/http/debug_server.hpp>
#include <goro/inspect/dump.hpp>
#include <goro/goro.hpp>

namespace leak_hunt {

// The program's own part: one order, processed inside the pool.
using order_fn = goro::task<std::string> (*)(int order, int items);

inline bool parse_port(std::string_view s, std::uint16_t& port) {
    if (s.empty() || s.size() > 5) return false;
    unsigned v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v > 65535) return false;
    port = static_cast<std::uint16_t>(v);
    return true;
}

inline int usage(const char* prog) {
    std::fprintf(stderr,
                 "usage: %s [--port N]   serve (N = 0 picks a free port; default $LEAK_HUNT_PORT or 6060)\n"
                 "       %s --diff N     process N orders between two snapshots, print goro::diff\n",
                 prog, prog);
    return 2;
}

// goro's own "compare two moments": a snapshot before, the suspect code, a
// snapshot after, and the groups that grew in between.
// [print_diff]
inline int print_diff(int orders, order_fn process_order) {
    auto before = goro::snapshot::take();
    for (int i = 1; i <= orders; ++i) goro::block_on(process_order(i, 8));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the last order's stragglers park
    auto after = goro::snapshot::take();
    goro::write_diff(std::cout, goro::diff(before, after));
    return 0;
}
// [/print_diff]

inline int run_service(int argc, char** argv, order_fn process_order) {
    if (argc == 3 && std::string_view(argv[1]) == "--diff") {
        int orders = std::atoi(argv[2]);
        if (orders < 1) return usage(argv[0]);
        return print_diff(orders, process_order);
    }
    std::uint16_t port = 6060;
    if (const char* env = std::getenv("LEAK_HUNT_PORT"); env && *env) {
        if (!parse_port(env, port)) {
            std::fprintf(stderr, "%s: LEAK_HUNT_PORT=\"%s\" is not a port number\n", argv[0], env);
            return 2;
        }
    }
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--port" && i + 1 < argc) {
            if (!parse_port(argv[++i], port)) return usage(argv[0]);
        } else if (a.rfind("--port=", 0) == 0) {
            if (!parse_port(a.substr(7), port)) return usage(argv[0]);
        } else {
            return usage(argv[0]);
        }
    }

    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    goro::debug_server::options opts;  // 127.0.0.1 only, with the goroutine routes
    opts.port = port;
    goro::debug_server server(opts);
    int next_order = 0;  // only the server thread touches it: handlers run there, one at a time
    server.handle("/process", [&next_order, process_order](const goro::debug_request& req,
                                                           goro::debug_response& r) {
        int items = 8;
        if (auto v = req.param("items")) {
            items = std::atoi(std::string(*v).c_str());
            if (items < 1 || items > 1000) {
                r.status = 400;
                r.body = "items must be between 1 and 1000\n";
                return;
            }
        }
        r.body = goro::block_on(process_order(++next_order, items));
    });
    try {
        server.start();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
        return 1;
    }
    std::printf("listening on 127.0.0.1:%u\n", static_cast<unsigned>(server.port()));
    std::fflush(stdout);

    int sig = 0;
    sigwait(&stop_signals, &sig);
    server.stop();
    std::fprintf(stderr, "%s: stopped by %s; %lld tasks still alive\n", argv[0],
                 sig == SIGINT ? "SIGINT" : "SIGTERM", static_cast<long long>(goro::num_goroutines()));
    return 0;
}

}  // namespace leak_hunt
