// A TCP echo server on goro::net, in Go's style: one task accepts, one task
// per connection echoes, each connection's reads bounded by an idle timeout.
//
//   ./echo_server 127.0.0.1:7000     serve until killed (try: nc 127.0.0.1 7000)
//   ./echo_server                    serve on a free port, run 50 clients
//                                    against it, check every byte, and exit
//
// While it serves, a dump (goro::dump_goroutines, or the debug server) shows
// the connection tasks parked in [IO wait] in echo(), and the acceptor in
// accept_loop(): a parked I/O task is a task like any other.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <goro/goro.hpp>

using namespace std::chrono_literals;

namespace {

// [echo]
goro::task<> echo(goro::net::stream conn) {
    std::vector<char> buf(16 * 1024);
    for (;;) {
        // A client silent for 30 s is dropped: the read's context times out.
        auto [ctx, cancel] = goro::with_timeout(goro::background(), 30s);
        std::size_t n = 0;
        try {
            n = co_await conn.read(buf.data(), buf.size(), ctx);
        } catch (const goro::io_error& e) {
            if (!e.is_canceled()) std::fprintf(stderr, "echo: %s\n", e.what());
            co_return;
        }
        if (n == 0) co_return;  // the client closed
        co_await conn.write_all(buf.data(), n);
    }
}

goro::task<> accept_loop(goro::net::listener& ln) {
    for (;;) {
        goro::net::stream conn;
        try {
            conn = co_await ln.accept();
        } catch (const goro::io_error& e) {
            if (!e.is_closed()) std::fprintf(stderr, "accept: %s\n", e.what());
            co_return;
        }
        goro::go(echo(std::move(conn)), {.name = "echo"});
    }
}
// [/echo]

goro::task<> client(goro::net::address to, int id, int& failures, goro::wait_group& wg) {
    try {
        goro::net::stream c = co_await goro::net::connect(to);
        for (int round = 0; round < 20; ++round) {
            std::string msg = "client " + std::to_string(id) + " round " + std::to_string(round) + "\n";
            co_await c.write_all(msg);
            std::string back(msg.size(), '\0');
            co_await c.read_full(back.data(), back.size());
            if (back != msg) ++failures;
        }
    } catch (const goro::io_error& e) {
        std::fprintf(stderr, "client %d: %s\n", id, e.what());
        ++failures;
    }
    wg.done();
}

goro::task<int> self_test() {
    goro::net::listener ln = goro::net::listen("127.0.0.1:0");
    std::printf("echo server on %s\n", ln.local_address().to_string().c_str());
    goro::go(accept_loop(ln), {.name = "accept"});
    constexpr int clients = 50;
    std::vector<int> fails(clients, 0);  // one slot per client task; read after wg.wait()
    goro::wait_group wg;
    for (int i = 0; i < clients; ++i) {
        wg.add(1);
        goro::go(client(ln.local_address(), i, fails[static_cast<std::size_t>(i)], wg));
    }
    co_await wg.wait();
    ln.close();  // the acceptor ends; each echo task ends when its client closed
    int failures = 0;
    for (int f : fails) failures += f;
    std::printf("%d clients, %d failures\n", clients, failures);
    co_return failures == 0 ? 0 : 1;
}

goro::task<> serve(std::string at) {
    goro::net::listener ln = goro::net::listen(at);
    std::printf("echo server on %s\n", ln.local_address().to_string().c_str());
    co_await accept_loop(ln);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1) {
        goro::block_on(serve(argv[1]));
        return 0;
    }
    return goro::block_on(self_test());
}
