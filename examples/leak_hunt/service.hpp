// The plumbing shared by the leak-hunting example's two programs, `leaky` and
// `fixed`: command line, the HTTP service, the debug server, shutdown. The
// programs differ only in how one order is processed (process_order in
// leaky.cpp and fixed.cpp); everything here is the same for both, so a diff
// of the two files shows the three fixes and nothing else.
//
//   leaky [--port N] [--debug-port M]
//                         N: 0 picks a free port; default $LEAK_HUNT_PORT, else 6060
//                         M: the debug server's own port; default 0 (a free one)
//   leaky --diff N        no server: process N orders in this process between two
//                         snapshots and print goro::diff of them (what they left behind)
//
// The first line on stdout is `listening on 127.0.0.1:PORT` (flushed), so a
// script or a test that started the program on port 0 learns where it is; the
// second is `debug server on 127.0.0.1:PORT ...`.
//
// HOW IT SERVES, as a Go program with net/http and net/http/pprof would:
//   * The service is a goro::net TCP listener on 127.0.0.1:N. One task accepts
//     (accept_loop); each connection gets its own task (serve_conn), which
//     reads HTTP/1.1 requests one after the other (keep-alive, pipelining) and
//     answers them. Idle connections park in [IO wait], like Go's
//     net/http.(*conn).serve goroutines.
//   * GET /process[?items=N] processes one order of N items (default 8) in the
//     connection's task and answers one line of text.
//   * Every other path (/debug/pprof/..., /debug/goro/..., /metrics) is passed
//     to goro::debug_server, which runs on its own thread (not a pool worker)
//     on 127.0.0.1:M: the connection task relays the request there and the
//     answer back, so the whole API is on one port, as with Go's
//     DefaultServeMux. When every pool worker is stuck, the service port stops
//     answering (its tasks cannot run) but the debug server's own port still
//     does: that is the address to keep for a bad day.
//
// THREADS: main blocks SIGINT and SIGTERM before anything starts a thread (so
// every thread inherits the mask) and waits for one of them with sigwait, then
// cancels the acceptor and stops the debug server.
#pragma once

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
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
                 "usage: %s [--port N] [--debug-port M]   serve (N = 0 picks a free port; default\n"
                 "           $LEAK_HUNT_PORT or 6060; M: the debug server's own port, default 0: a free one)\n"
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

// ---------------------------------------------------------------------------
// The HTTP service: one task per connection
// ---------------------------------------------------------------------------

struct service_state {
    order_fn process_order;
    goro::net::address debug_server;  // where requests for other paths go
    std::atomic<int> next_order{0};
};

// An idle keep-alive connection (or a client sending its request slowly) is
// dropped after this long without a byte.
inline constexpr std::chrono::seconds idle_timeout{120};

inline std::string http_date() {
    std::time_t now = std::time(nullptr);
    std::tm t{};
    gmtime_r(&now, &t);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &t);
    return buf;
}

inline const char* status_text(int status) {
    switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 414: return "URI Too Long";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 502: return "Bad Gateway";
        case 505: return "HTTP Version Not Supported";
        default: return "Error";
    }
}

// A whole text/plain response; no body after HEAD (Content-Length still says
// how long it would be).
inline std::string http_response(int status, std::string_view body, bool head, bool close,
                                 std::string_view extra_fields = {}) {
    std::string r = "HTTP/1.1 " + std::to_string(status) + " " + status_text(status) + "\r\n";
    r += "Content-Type: text/plain; charset=utf-8\r\n";
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    r += "Date: " + http_date() + "\r\n";
    r += extra_fields;
    if (close) r += "Connection: close\r\n";
    r += "\r\n";
    if (!head) r += body;
    return r;
}

// Reads until `in` holds a whole request head (or the client is gone: then
// nullopt). Bytes after the head (a pipelined request) stay in `in`.
// [read_request]
inline goro::task<std::optional<goro::detail::http_parse_result>> read_request(goro::net::stream& conn,
                                                                               std::string& in) {
    static const goro::debug_server_limits limits;  // 8 KiB request line, 16 KiB of fields
    char buf[4096];
    for (;;) {
        auto parsed = goro::detail::parse_http_request(in, limits);
        if (parsed.status != goro::detail::http_parse_status::incomplete) co_return parsed;
        auto [ctx, cancel] = goro::with_timeout(goro::background(), idle_timeout);
        std::size_t n = co_await conn.read(buf, sizeof buf, ctx);  // idle connections park here, [IO wait]
        if (n == 0) co_return std::nullopt;  // the client closed
        in.append(buf, n);
    }
}
// [/read_request]

// Passes one request to the debug server and its whole answer back; the
// client's connection is closed afterwards (the relayed answer says so).
inline goro::task<> relay_to_debug_server(goro::net::stream& client, const goro::detail::http_request_head& req,
                                          const goro::net::address& debug_server) {
    goro::net::stream upstream;
    std::string error;
    try {
        upstream = co_await goro::net::connect(debug_server);
    } catch (const goro::io_error& e) {
        error = e.what();
    }
    if (!upstream.is_open()) {  // the debug server is gone (stopping): say so
        co_await client.write_all(http_response(502, error + "\n", req.method == "HEAD", true));
        co_return;
    }
    std::string head = req.method + " " + req.target + " HTTP/1.1\r\n";
    for (const auto& [name, value] : req.headers)
        if (!goro::detail::iequals(name, "connection") && !goro::detail::iequals(name, "keep-alive"))
            head += name + ": " + value + "\r\n";
    head += "Connection: close\r\n\r\n";
    co_await upstream.write_all(head);
    char buf[16 * 1024];
    for (;;) {
        std::size_t n = co_await upstream.read(buf, sizeof buf);
        if (n == 0) co_return;
        co_await client.write_all(buf, n);
    }
}

// One connection, Go's net/http.(*conn).serve: requests in order, each
// answered before the next is read.
// [serve_conn]
inline goro::task<> serve_conn(goro::net::stream conn, service_state& svc) {
    std::string in;
    try {
        for (;;) {
            auto parsed = co_await read_request(conn, in);
            if (!parsed) co_return;
            if (parsed->status == goro::detail::http_parse_status::error) {
                co_await conn.write_all(http_response(parsed->error_status, parsed->error_reason + "\n", false, true));
                co_return;
            }
            const goro::detail::http_request_head& req = parsed->request;
            in.erase(0, parsed->consumed);
            const bool head = req.method == "HEAD";
            if (req.has_body) {  // no route here reads a body
                co_await conn.write_all(http_response(400, "request bodies are not accepted\n", head, true));
                co_return;
            }
            if (req.path != "/process") {  // the debug routes, on their own thread
                co_await relay_to_debug_server(conn, req, svc.debug_server);
                co_return;
            }
            if (req.method != "GET" && !head) {
                co_await conn.write_all(http_response(405, "only GET and HEAD\n", false, !req.keep_alive,
                                                      "Allow: GET, HEAD\r\n"));
                continue;
            }
            int items = 8;
            for (const auto& [name, value] : req.query) {
                if (name != "items") continue;
                items = std::atoi(value.c_str());
                break;
            }
            if (items < 1 || items > 1000) {
                co_await conn.write_all(http_response(400, "items must be between 1 and 1000\n", head, !req.keep_alive));
            } else {
                std::string body, error;
                try {
                    body = co_await svc.process_order(++svc.next_order, items);
                } catch (const std::exception& e) {  // the order failed: a 500 with its reason
                    error = e.what();
                }
                if (error.empty()) co_await conn.write_all(http_response(200, body, head, !req.keep_alive));
                else co_await conn.write_all(http_response(500, error + "\n", head, !req.keep_alive));
            }
            if (!req.keep_alive) co_return;
        }
    } catch (const goro::io_error&) {
        // The client went away or stayed silent too long (or the debug
        // server did): nothing to answer.
    }
}
// [/serve_conn]

// [accept_loop]
inline goro::task<> accept_loop(goro::net::listener ln, goro::context ctx, service_state& svc,
                                goro::wait_group& done) {
    for (;;) {
        goro::net::stream conn;
        try {
            conn = co_await ln.accept(ctx);  // waits in [IO wait] between connections
        } catch (const goro::io_error& e) {
            if (!e.is_canceled()) std::fprintf(stderr, "accept: %s\n", e.what());
            break;
        }
        goro::go(serve_conn(std::move(conn), svc), {.name = "conn"});
    }
    ln.close();
    done.done();
}
// [/accept_loop]

inline int run_service(int argc, char** argv, order_fn process_order) {
    if (argc == 3 && std::string_view(argv[1]) == "--diff") {
        int orders = std::atoi(argv[2]);
        if (orders < 1) return usage(argv[0]);
        return print_diff(orders, process_order);
    }
    std::uint16_t port = 6060, debug_port = 0;
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
        } else if (a == "--debug-port" && i + 1 < argc) {
            if (!parse_port(argv[++i], debug_port)) return usage(argv[0]);
        } else if (a.rfind("--debug-port=", 0) == 0) {
            if (!parse_port(a.substr(13), debug_port)) return usage(argv[0]);
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
    opts.port = debug_port;
    goro::debug_server server(opts);
    static service_state svc{process_order, {}, {}};  // static: connection tasks still parked at exit may refer to it
    goro::net::listener ln;
    try {
        server.start();
        svc.debug_server = goro::net::address::parse("127.0.0.1:" + std::to_string(server.port()));
        ln = goro::net::listen("127.0.0.1:" + std::to_string(port));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
        return 1;
    }
    std::printf("listening on %s\n", ln.local_address().to_string().c_str());
    std::printf("debug server on 127.0.0.1:%u (its own thread: it answers even when every worker is stuck)\n",
                static_cast<unsigned>(server.port()));
    std::fflush(stdout);

    auto [ctx, cancel] = goro::with_cancel(goro::background());
    goro::wait_group acceptor;
    acceptor.add(1);
    goro::go(accept_loop(std::move(ln), ctx, svc, acceptor), {.name = "accept"});

    int sig = 0;
    sigwait(&stop_signals, &sig);
    cancel();
    goro::block_on(acceptor.wait());
    server.stop();
    std::fprintf(stderr, "%s: stopped by %s; %lld tasks still alive\n", argv[0],
                 sig == SIGINT ? "SIGINT" : "SIGTERM", static_cast<long long>(goro::num_goroutines()));
    return 0;
}

}  // namespace leak_hunt
