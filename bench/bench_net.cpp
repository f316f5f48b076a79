// tcp_echo_conns1, tcp_echo_conns100: as the Go anchor's tcpEcho(conns).
// Server and clients in one process over loopback: an accepting task starts
// one task per connection that reads 64 bytes and writes them back; `conns`
// client tasks each do o.n(2'000) round trips (write 64 bytes, read 64).
// ns_per_op is the wall time per round trip, all clients together
// (conns * rounds operations), the connections dialled before the clock starts.
#include <array>
#include <vector>

#include <goro/net/tcp.hpp>
#include <goro/sync/wait_group.hpp>

#include "bench.hpp"

namespace {

goro::task<> echo_conn(goro::net::stream c) {
    std::array<char, 64> buf{};
    try {
        for (;;) {
            co_await c.read_full(buf.data(), buf.size());
            co_await c.write_all(buf.data(), buf.size());
        }
    } catch (const goro::io_error&) {
    }
}

goro::task<> echo_accept(goro::net::listener& ln) {
    for (;;) {
        goro::net::stream c;
        try {
            c = co_await ln.accept();
        } catch (const goro::io_error&) {
            co_return;
        }
        goro::go(echo_conn(std::move(c)));
    }
}

goro::task<> echo_client(goro::net::stream& c, long rounds, goro::wait_group& wg) {
    std::array<char, 64> msg{}, buf{};
    for (long r = 0; r < rounds; ++r) {
        co_await c.write_all(msg.data(), msg.size());
        co_await c.read_full(buf.data(), buf.size());
    }
    wg.done();
}

goro::task<> tcp_echo_body(int conns, long rounds) {
    auto ln = goro::net::listen("127.0.0.1:0");
    goro::go(echo_accept(ln));
    std::vector<goro::net::stream> clients;
    for (int i = 0; i < conns; ++i) clients.push_back(co_await goro::net::connect(ln.local_address()));
    goro::wait_group wg;
    auto t = bench::clock::now();
    for (auto& c : clients) {
        wg.add(1);
        goro::go(echo_client(c, rounds, wg));
    }
    co_await wg.wait();
    bench::emit("tcp_echo_conns" + std::to_string(conns), conns * rounds, bench::clock::now() - t);
    for (auto& c : clients) c.close();
    ln.close();
}

void tcp_echo(const bench::options& o) {
    if (o.want("tcp_echo_conns1")) goro::block_on(tcp_echo_body(1, o.n(2'000)));
    if (o.want("tcp_echo_conns100")) goro::block_on(tcp_echo_body(100, o.n(2'000)));
}

}  // namespace

GORO_BENCH("tcp_echo_conns1|tcp_echo_conns100", tcp_echo);
