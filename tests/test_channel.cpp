// goro::channel<T>: order, close, nil channels, try-variants, hand-off, move-only
// values, copies and leaks (counted), stress with random closes, and no
// allocation per operation. Modelled on Go's runtime/chan_test.go.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <goro/sync/channel.hpp>
#include <goro/sync/select.hpp>
#include <goro/sync/wait_group.hpp>

#include "support.hpp"

// --- a counting allocator, armed per thread ----------------------------------
// operator new is replaced program-wide; it counts only on threads (pool
// workers included) while the global flag is up, so other tests are unaffected.
namespace tests_channel_alloc {
std::atomic<bool> g_count_allocs{false};
std::atomic<long> g_allocs{0};
}  // namespace tests_channel_alloc
using tests_channel_alloc::g_count_allocs;
using tests_channel_alloc::g_allocs;

// Every non-aligned form is replaced, so that each allocation and its release
// go through the same pair (ASan checks that); the aligned forms keep the
// library's pair. noinline: g++ would otherwise see malloc/free paired with
// new/delete at inlined call sites and warn (-Wmismatched-new-delete).
[[gnu::noinline]] void* operator new(std::size_t n) {
    if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](std::size_t n) { return ::operator new(n); }
[[gnu::noinline]] void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n ? n : 1);
}
[[gnu::noinline]] void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return ::operator new(n, t); }
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI). The
// replaced allocation functions above must stay at global scope.
namespace tests_channel {

using namespace std::chrono_literals;
using goro_test::counted;
using goro_test::eventually;
using goro_test::same_reason;

namespace {

template <class T>
goro::task<> collect_all(goro::channel<T> ch, std::vector<T>& out) {
    while (auto v = co_await ch.recv()) out.push_back(std::move(*v));
}

goro::task<> send_range(goro::channel<int> ch, int from, int to, bool close_after) {
    for (int i = from; i < to; ++i) co_await ch.send(i);
    if (close_after) ch.close();
}

}  // namespace

TEST_CASE("unbuffered channel delivers in order and blocks the sender", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> ch;
    CHECK(ch.capacity() == 0);
    std::vector<int> got;
    goro::go(send_range(ch, 0, 1000, true));
    goro::block_on(collect_all(ch, got));
    REQUIRE(got.size() == 1000);
    for (int i = 0; i < 1000; ++i) CHECK(got[std::size_t(i)] == i);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("buffered channel is FIFO, also through parked senders", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    for (std::size_t cap : {1u, 2u, 7u, 64u}) {
        goro::channel<int> ch(cap);
        CHECK(ch.capacity() == cap);
        std::vector<int> got;
        // More senders' values than slots: later ones park and go through the ring.
        goro::go(send_range(ch, 0, 500, true));
        goro::block_on(collect_all(ch, got));
        REQUIRE(got.size() == 500);
        CHECK(std::is_sorted(got.begin(), got.end()));
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("a buffered channel fills without a receiver and try_send reports full", "[channel]") {
    goro::channel<int> ch(3);
    auto body = [](goro::channel<int> c) -> goro::task<> {
        for (int i = 0; i < 3; ++i) co_await c.send(i);  // never parks
        co_return;
    };
    goro::block_on(body(ch));
    CHECK(ch.size() == 3);
    int v = 9;
    CHECK(ch.try_send(std::move(v)) == goro::send_status::full);
    auto r = ch.try_recv();
    REQUIRE(r);
    CHECK(r.status == goro::recv_status::received);
    CHECK(*r.value == 0);
    CHECK(ch.try_send(9) == goro::send_status::sent);
    CHECK(ch.size() == 3);
}

TEST_CASE("close drains the buffer first, then receivers get nullopt", "[channel]") {
    goro::channel<int> ch(4);
    CHECK(ch.try_send(1) == goro::send_status::sent);
    CHECK(ch.try_send(2) == goro::send_status::sent);
    ch.close();
    auto body = [](goro::channel<int> c) -> goro::task<std::vector<std::optional<int>>> {
        std::vector<std::optional<int>> r;
        for (int i = 0; i < 4; ++i) r.push_back(co_await c.recv());
        co_return r;
    };
    auto got = goro::block_on(body(ch));
    REQUIRE(got.size() == 4);
    CHECK(got[0] == 1);
    CHECK(got[1] == 2);
    CHECK_FALSE(got[2]);
    CHECK_FALSE(got[3]);
    CHECK(ch.try_recv().status == goro::recv_status::closed);
    CHECK(ch.try_send(3) == goro::send_status::closed);
}

TEST_CASE("close wakes every parked receiver with nullopt", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> ch;
    std::atomic<int> closed_seen{0};
    auto rx = [](goro::channel<int> c, std::atomic<int>& n) -> goro::task<> {
        auto v = co_await c.recv();
        if (!v) n.fetch_add(1);
    };
    for (int i = 0; i < 50; ++i) goro::go(rx(ch, closed_seen));
    // Some may still be on their way to park: they then see "closed" at once.
    ch.close();
    CHECK(eventually([&] { return closed_seen.load() == 50; }));
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("senders parked when the channel closes throw channel_closed", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> ch;
    std::atomic<int> threw{0}, parked{0};
    auto tx = [](goro::channel<int> c, std::atomic<int>& t, std::atomic<int>& p) -> goro::task<> {
        p.fetch_add(1);
        try {
            co_await c.send(1);
        } catch (const goro::channel_closed& e) {
            if (std::string(e.what()).find("goro::channel::send") != std::string::npos) t.fetch_add(1);
        }
    };
    for (int i = 0; i < 20; ++i) goro::go(tx(ch, threw, parked));
    REQUIRE(eventually([&] { return parked.load() == 20; }));
    ch.close();
    CHECK(eventually([&] { return threw.load() == 20; }));
    CHECK(goro_test::tasks_drained(tasks_before));
}

namespace {

// How many tasks are parked now, by wait reason (a snapshot's view).
std::size_t parked_with(const char* reason) {
    std::size_t n = 0;
    const goro::snapshot s = goro::snapshot::take();
    for (auto& r : s.tasks())
        if (r.state == goro::task_state::waiting && r.wait_reason && std::string(r.wait_reason) == reason) ++n;
    return n;
}

goro::task<> close_from_task(goro::channel<int> ch) {
    ch.close();
    co_return;
}

}  // namespace

TEST_CASE("one close wakes a thousand receivers, senders and selects, in batches", "[channel]") {
    // A close empties the queues 64 waiters at a time, readying each batch
    // with the lock released: every waiter must be woken exactly once,
    // whichever thread closes (a worker queues them locally, a plain thread
    // on the global queue).
    const bool from_task = GENERATE(false, true);
    const auto tasks_before = goro::num_goroutines();
    constexpr int receivers = 1000, selects = 300, senders = 700;
    goro::channel<int> rch, sch, other;
    std::atomic<int> rx_closed{0}, sel_closed{0}, tx_threw{0}, wrong{0};
    auto rx = [](goro::channel<int> c, std::atomic<int>& n, std::atomic<int>& bad) -> goro::task<> {
        auto v = co_await c.recv();
        if (!v) n.fetch_add(1);
        else bad.fetch_add(1);
    };
    auto sel = [](goro::channel<int> c, goro::channel<int> o, std::atomic<int>& n,
                  std::atomic<int>& bad) -> goro::task<> {
        auto r = co_await goro::select(goro::recv(c), goro::recv(o));
        if (r.index() == 0 && !r.get<0>()) n.fetch_add(1);
        else bad.fetch_add(1);
    };
    auto tx = [](goro::channel<int> c, std::atomic<int>& n) -> goro::task<> {
        try {
            co_await c.send(1);
        } catch (const goro::channel_closed&) {
            n.fetch_add(1);
        }
    };
    for (int i = 0; i < receivers; ++i) goro::go(rx(rch, rx_closed, wrong));
    for (int i = 0; i < selects; ++i) goro::go(sel(rch, other, sel_closed, wrong));
    for (int i = 0; i < senders; ++i) goro::go(tx(sch, tx_threw));
    REQUIRE(eventually([&] {
        return parked_with("chan receive") == receivers && parked_with("select") == selects &&
               parked_with("chan send") == senders;
    }));
    if (from_task) {
        goro::go(close_from_task(rch));
        goro::go(close_from_task(sch));
    } else {
        rch.close();
        sch.close();
    }
    CHECK(eventually([&] {
        return rx_closed.load() == receivers && sel_closed.load() == selects && tx_threw.load() == senders;
    }));
    CHECK(wrong.load() == 0);
    CHECK(goro_test::tasks_drained(tasks_before));
    // The other channel's queue holds none of the selects' waiters any more.
    CHECK(other.try_send(1) == goro::send_status::full);
}

TEST_CASE("send on a closed channel throws and names the operation", "[channel]") {
    goro::channel<int> ch(1);
    ch.close();
    auto body = [](goro::channel<int> c) -> goro::task<> { co_await c.send(5); };
    CHECK_THROWS_WITH(goro::block_on(body(ch)), Catch::Contains("goro::channel::send: send on closed channel"));
}

TEST_CASE("closing twice or closing a nil channel throws", "[channel]") {
    goro::channel<int> ch;
    ch.close();
    CHECK_THROWS_AS(ch.close(), goro::channel_closed);
    CHECK_THROWS_WITH(ch.close(), Catch::Contains("goro::channel::close: close of closed channel"));
    goro::channel<int> nil{nullptr};
    CHECK(nil.is_nil());
    CHECK_THROWS_AS(nil.close(), goro::usage_error);
    CHECK_THROWS_WITH(nil.close(), Catch::Contains("close of nil channel"));
}

TEST_CASE("handles share one channel; reset makes a nil channel", "[channel]") {
    goro::channel<int> a(2);
    goro::channel<int> b = a;
    CHECK(a == b);
    CHECK(a.try_send(1) == goro::send_status::sent);
    CHECK(b.size() == 1);
    b.reset();
    CHECK(b.is_nil());
    CHECK_FALSE(b);
    CHECK(b.try_send(1) == goro::send_status::full);
    CHECK(b.try_recv().status == goro::recv_status::empty);
    CHECK(b.size() == 0);
    CHECK(b.capacity() == 0);
    goro::channel<int> c = std::move(a);
    CHECK(a.is_nil());
    CHECK(c.size() == 1);
}

TEST_CASE("nil channel send and receive park forever with Go's wait reasons", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> nil{nullptr};
    std::atomic<goro::task_header*> rx_task{nullptr}, tx_task{nullptr};
    std::atomic<int> resumed{0};
    auto rx = [](goro::channel<int> c, std::atomic<goro::task_header*>& me, std::atomic<int>& r) -> goro::task<> {
        me.store(goro::detail::tls_current_task);
        co_await c.recv();
        r.fetch_add(1);
    };
    auto tx = [](goro::channel<int> c, std::atomic<goro::task_header*>& me, std::atomic<int>& r) -> goro::task<> {
        me.store(goro::detail::tls_current_task);
        co_await c.send(1);
        r.fetch_add(1);
    };
    goro::go(rx(nil, rx_task, resumed));
    goro::go(tx(nil, tx_task, resumed));
    REQUIRE(eventually([&] { return rx_task.load() && tx_task.load(); }));
    auto reason_is = [](goro::task_header* t, const char* r) {
        return t->state.load() == goro::task_state::waiting && same_reason(t->wait_reason.load(), r);
    };
    REQUIRE(eventually([&] { return reason_is(rx_task.load(), goro::wait_reason::chan_receive_nil); }));
    REQUIRE(eventually([&] { return reason_is(tx_task.load(), goro::wait_reason::chan_send_nil); }));
    std::this_thread::sleep_for(20ms);  // nothing may wake them (observing, not timing)
    CHECK(resumed.load() == 0);
    // Nothing in goro can wake them; the test does it by hand so it leaves no task behind.
    goro::detail::ready(rx_task.load());
    goro::detail::ready(tx_task.load());
    CHECK(eventually([&] { return resumed.load() == 2; }));
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("parked tasks record chan receive and chan send", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> a, b;
    std::atomic<goro::task_header*> rx_task{nullptr}, tx_task{nullptr};
    auto rx = [](goro::channel<int> c, std::atomic<goro::task_header*>& me) -> goro::task<> {
        me.store(goro::detail::tls_current_task);
        co_await c.recv();
    };
    auto tx = [](goro::channel<int> c, std::atomic<goro::task_header*>& me) -> goro::task<> {
        me.store(goro::detail::tls_current_task);
        try {
            co_await c.send(1);
        } catch (const goro::channel_closed&) {
        }
    };
    goro::go(rx(a, rx_task));
    goro::go(tx(b, tx_task));
    REQUIRE(eventually([&] { return rx_task.load() && tx_task.load(); }));
    CHECK(eventually([&] {
        return same_reason(rx_task.load()->wait_reason.load(), goro::wait_reason::chan_receive) &&
               rx_task.load()->state.load() == goro::task_state::waiting;
    }));
    CHECK(eventually([&] {
        return same_reason(tx_task.load()->wait_reason.load(), goro::wait_reason::chan_send) &&
               tx_task.load()->state.load() == goro::task_state::waiting;
    }));
    a.close();
    b.close();
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("a value handed to a parked receiver is delivered (try_send hand-off)", "[channel]") {
    goro::channel<int> ch;
    std::atomic<int> got{-1};
    std::atomic<bool> started{false};
    auto rx = [](goro::channel<int> c, std::atomic<int>& g, std::atomic<bool>& s) -> goro::task<> {
        s.store(true);
        auto v = co_await c.recv();
        g.store(v ? *v : -2);
    };
    goro::go(rx(ch, got, started));
    REQUIRE(eventually([&] { return started.load(); }));
    // From a plain thread: succeeds exactly when the receiver is parked.
    int v = 42;
    REQUIRE(eventually([&] { return ch.try_send(std::move(v)) == goro::send_status::sent; }));
    CHECK(eventually([&] { return got.load() == 42; }));
    CHECK(ch.try_send(43) == goro::send_status::full);  // nobody waits on an unbuffered channel
}

TEST_CASE("try_recv takes from a parked sender", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<std::string> ch;
    goro::go([](goro::channel<std::string> c) -> goro::task<> { co_await c.send(std::string("hello")); }(ch));
    goro::try_recv_result<std::string> r;
    REQUIRE(eventually([&] {
        r = ch.try_recv();
        return r.status == goro::recv_status::received;
    }));
    CHECK(*r.value == "hello");
    CHECK(ch.try_recv().status == goro::recv_status::empty);
    ch.close();
    CHECK(ch.try_recv().status == goro::recv_status::closed);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("try_send does not consume a move-only value when it fails", "[channel]") {
    goro::channel<std::unique_ptr<int>> ch(1);
    auto p = std::make_unique<int>(1);
    CHECK(ch.try_send(std::move(p)) == goro::send_status::sent);
    CHECK(p == nullptr);
    auto q = std::make_unique<int>(2);
    CHECK(ch.try_send(std::move(q)) == goro::send_status::full);
    REQUIRE(q != nullptr);
    CHECK(*q == 2);
    ch.close();
    CHECK(ch.try_send(std::move(q)) == goro::send_status::closed);
    REQUIRE(q != nullptr);
    auto r = ch.try_recv();
    REQUIRE(r);
    CHECK(**r.value == 1);
}

TEST_CASE("move-only values go through unbuffered and buffered channels", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    for (std::size_t cap : {0u, 4u}) {
        goro::channel<std::unique_ptr<int>> ch(cap);
        auto producer = [](goro::channel<std::unique_ptr<int>> c) -> goro::task<> {
            for (int i = 0; i < 100; ++i) co_await c.send(std::make_unique<int>(i));
            c.close();
        };
        auto consumer = [](goro::channel<std::unique_ptr<int>> c) -> goro::task<long> {
            long s = 0;
            while (auto v = co_await c.recv()) s += **v;
            co_return s;
        };
        goro::go(producer(ch));
        CHECK(goro::block_on(consumer(ch)) == 99 * 100 / 2);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("values are moved, never copied, and none leaks", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    counted::reset();
    long alive_before = counted::alive.load();
    {
        goro::channel<counted> unbuf;
        goro::channel<counted> buf(8);
        auto producer = [](goro::channel<counted> c, int n) -> goro::task<> {
            for (int i = 0; i < n; ++i) co_await c.send(counted(i));
            c.close();
        };
        auto consumer = [](goro::channel<counted> c) -> goro::task<long> {
            long s = 0;
            while (auto v = co_await c.recv()) s += v->value;
            co_return s;
        };
        goro::go(producer(unbuf, 200));
        CHECK(goro::block_on(consumer(unbuf)) == 199 * 200 / 2);
        goro::go(producer(buf, 200));
        CHECK(goro::block_on(consumer(buf)) == 199 * 200 / 2);
        // Values left in a buffer are destroyed with the channel.
        goro::channel<counted> left(4);
        CHECK(left.try_send(counted(1)) == goro::send_status::sent);
        CHECK(left.try_send(counted(2)) == goro::send_status::sent);
        CHECK(counted::alive.load() == alive_before + 2);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
    CHECK(counted::copies.load() == 0);
    CHECK(counted::alive.load() == alive_before);
}

TEST_CASE("a failed send destroys its value: not delivered, not leaked", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    long alive_before = counted::alive.load();
    goro::channel<counted> ch;
    std::atomic<int> threw{0}, parked{0};
    auto tx = [](goro::channel<counted> c, std::atomic<int>& t, std::atomic<int>& p) -> goro::task<> {
        p.fetch_add(1);
        try {
            co_await c.send(counted(7));
        } catch (const goro::channel_closed&) {
            t.fetch_add(1);
        }
    };
    for (int i = 0; i < 5; ++i) goro::go(tx(ch, threw, parked));
    REQUIRE(eventually([&] { return parked.load() == 5; }));
    ch.close();
    REQUIRE(eventually([&] { return threw.load() == 5; }));
    CHECK(goro_test::tasks_drained(tasks_before));
    CHECK(ch.try_recv().status == goro::recv_status::closed);
    CHECK(counted::alive.load() == alive_before);
}

TEST_CASE("send and recv outside a task are usage errors; block_on works", "[channel]") {
    goro::channel<int> ch(1);
    auto s = ch.send(1);
    CHECK_THROWS_AS(s.await_suspend(std::noop_coroutine()), goro::usage_error);
    auto r = ch.recv();
    CHECK_THROWS_WITH(r.await_suspend(std::noop_coroutine()), Catch::Contains("goro::channel::recv"));
    goro::block_on(ch.send(5));
    auto v = goro::block_on(ch.recv());
    REQUIRE(v);
    CHECK(*v == 5);
}

namespace {

// Go's TestChan "nonblocking" and "multi-sender" shapes at scale, with random
// closes: producers stop at the first channel_closed; consumers drain.
struct stress_log {
    std::mutex mu;
    std::vector<int> sent, received;
    std::atomic<int> exited{0};
};

goro::task<> stress_producer(goro::channel<int> ch, int id, int n, stress_log& log) {
    std::vector<int> mine;
    try {
        for (int i = 0; i < n; ++i) {
            int v = id * 1'000'000 + i;
            co_await ch.send(v);
            mine.push_back(v);  // only values whose send returned normally count as sent
        }
    } catch (const goro::channel_closed&) {
    }
    {
        std::lock_guard<std::mutex> lk(log.mu);
        log.sent.insert(log.sent.end(), mine.begin(), mine.end());
    }
    log.exited.fetch_add(1);
}

goro::task<> stress_consumer(goro::channel<int> ch, stress_log& log) {
    std::vector<int> mine;
    while (auto v = co_await ch.recv()) mine.push_back(*v);
    {
        std::lock_guard<std::mutex> lk(log.mu);
        log.received.insert(log.received.end(), mine.begin(), mine.end());
    }
    log.exited.fetch_add(1);
}

goro::task<> stress_closer(goro::channel<int> ch, int delay_us, stress_log& log) {
    co_await goro::sleep_for(std::chrono::microseconds(delay_us));
    ch.close();
    log.exited.fetch_add(1);
}

}  // namespace

TEST_CASE("stress: 8 producers, 8 consumers, random closes: exactly-once delivery", "[channel][stress]") {
    const auto tasks_before = goro::num_goroutines();
    std::mt19937 rng(12345);
    const int rounds = 40;
    for (int round = 0; round < rounds; ++round) {
        std::size_t cap = (round % 3 == 0) ? 0 : (round % 3 == 1 ? 1 : 64);
        goro::channel<int> ch(cap);
        stress_log log;
        const int per = 2000;
        for (int c = 0; c < 8; ++c) goro::go(stress_consumer(ch, log));
        for (int p = 0; p < 8; ++p) goro::go(stress_producer(ch, p, per, log));
        goro::go(stress_closer(ch, int(rng() % 3000), log));
        REQUIRE(eventually([&] { return log.exited.load() == 17; }, std::chrono::seconds(120)));
        std::sort(log.sent.begin(), log.sent.end());
        std::sort(log.received.begin(), log.received.end());
        CHECK(std::adjacent_find(log.received.begin(), log.received.end()) == log.received.end());
        // A send that threw delivered nothing; one that returned delivered its value.
        CHECK(log.received == log.sent);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("stress: close racing a send for the same parked receiver loses no wake-up", "[channel][stress]") {
    const auto tasks_before = goro::num_goroutines();
    for (int round = 0; round < 2000; ++round) {
        goro::channel<int> ch;
        std::atomic<int> outcome{0};  // 1: value, 2: closed
        std::atomic<int> send_result{0};  // 1: sent, 2: threw
        auto rx = [](goro::channel<int> c, std::atomic<int>& o) -> goro::task<> {
            auto v = co_await c.recv();
            o.store(v ? 1 : 2);
        };
        auto tx = [](goro::channel<int> c, std::atomic<int>& r) -> goro::task<> {
            try {
                co_await c.send(1);
                r.store(1);
            } catch (const goro::channel_closed&) {
                r.store(2);
            }
        };
        auto cl = [](goro::channel<int> c) -> goro::task<> {
            c.close();
            co_return;
        };
        goro::go(rx(ch, outcome));
        goro::go(tx(ch, send_result));
        goro::go(cl(ch));
        REQUIRE(eventually([&] { return outcome.load() != 0 && send_result.load() != 0; }));
        // The value arrived exactly when the send reported success.
        CHECK((outcome.load() == 1) == (send_result.load() == 1));
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("no allocation per channel or select operation on the steady state", "[channel]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> ping, pong;
    goro::channel<int> buf(16);
    auto echo = [](goro::channel<int> in, goro::channel<int> out) -> goro::task<> {
        while (auto v = co_await in.recv()) co_await out.send(*v);
        out.close();
    };
    goro::go(echo(ping, pong));
    auto body = [](goro::channel<int> ping_, goro::channel<int> pong_, goro::channel<int> b, long& allocs) -> goro::task<> {
        // Warm up (first use of thread-locals, queues), then count.
        for (int i = 0; i < 100; ++i) {
            co_await ping_.send(i);
            co_await goro::select(goro::recv(pong_), goro::after(std::chrono::hours(1)));
        }
        long before = g_allocs.load();
        g_count_allocs.store(true);
        for (int i = 0; i < 10'000; ++i) {
            co_await ping_.send(i);      // hand-off to a parked receiver
            co_await pong_.recv();       // parks, then is handed a value
            co_await b.send(i);          // buffered
            co_await b.recv();
            (void)b.try_send(i);
            (void)b.try_recv();
            // select: a ready case (poll only), then a parked one with a timer
            // that loses to the hand-off (enqueue, timer add and cancel, dequeue).
            (void)b.try_send(i);
            co_await goro::select(goro::recv(b), goro::recv(pong_));
            co_await ping_.send(i);
            co_await goro::select(goro::recv(pong_), goro::after(std::chrono::hours(1)));
        }
        g_count_allocs.store(false);
        allocs = g_allocs.load() - before;
    };
    long allocs = -1;
    goro::block_on(body(ping, pong, buf, allocs));
    CHECK(allocs == 0);
    ping.close();
    CHECK(goro_test::tasks_drained(tasks_before));
}

namespace {

// Values are id * 1'000'000 + i, so a duplicate or a stray is visible.
goro::task<> fast_path_producer(goro::channel<int> ch, int id, int n, stress_log& log) {
    std::vector<int> mine;
    for (int i = 0; i < n; ++i) {
        int v = id * 1'000'000 + i;
        bool sent = false;
        try {
            if (i % 3 == 0) {
                // try_send spins on the lock-free path too; blocking send otherwise.
                auto st = ch.try_send(v);
                if (st == goro::send_status::closed) break;
                if (st == goro::send_status::full) co_await ch.send(v);
            } else {
                co_await ch.send(v);
            }
            sent = true;
        } catch (const goro::channel_closed&) {
        }
        if (!sent) break;
        mine.push_back(v);  // only values whose send returned normally count as sent
    }
    {
        std::lock_guard<std::mutex> lk(log.mu);
        log.sent.insert(log.sent.end(), mine.begin(), mine.end());
    }
    log.exited.fetch_add(1);
}

goro::task<> fast_path_consumer(goro::channel<int> ch, bool use_select, stress_log& log) {
    std::vector<int> mine;
    for (;;) {
        std::optional<int> v;
        if (use_select) {
            auto r = co_await goro::select(goro::recv(ch));
            v = std::move(r.get<0>());
        } else if (auto t = ch.try_recv(); t.status == goro::recv_status::received) {
            v = std::move(t.value);
        } else if (t.status == goro::recv_status::closed) {
            break;
        } else {
            v = co_await ch.recv();
        }
        if (!v) break;
        mine.push_back(*v);
    }
    {
        std::lock_guard<std::mutex> lk(log.mu);
        log.received.insert(log.received.end(), mine.begin(), mine.end());
    }
    log.exited.fetch_add(1);
}

}  // namespace

TEST_CASE("stress: lock-free ring paths racing close: every sent value received exactly once", "[channel][stress]") {
    // Small buffers, so the ring is often full and often empty: senders and
    // receivers keep crossing between the lock-free paths and parking, while
    // close() lands at a random moment.
    const auto tasks_before = goro::num_goroutines();
    std::mt19937 rng(2024);
    for (int round = 0; round < 60; ++round) {
        const std::size_t cap = std::size_t(1 + round % 4);  // 1..4, powers of two and not
        goro::channel<int> ch(cap);
        stress_log log;
        const int producers = 6, consumers = 6, per = 3000;
        for (int c = 0; c < consumers; ++c) goro::go(fast_path_consumer(ch, c % 2 == 0, log));
        for (int p = 0; p < producers; ++p) goro::go(fast_path_producer(ch, p, per, log));
        // Every fourth round closes at once, racing the very first sends.
        goro::go(stress_closer(ch, round % 4 == 0 ? 0 : int(rng() % 1000), log));
        REQUIRE(eventually([&] { return log.exited.load() == producers + consumers + 1; }, std::chrono::seconds(120)));
        std::sort(log.sent.begin(), log.sent.end());
        std::sort(log.received.begin(), log.received.end());
        CHECK(std::adjacent_find(log.received.begin(), log.received.end()) == log.received.end());
        CHECK(log.received == log.sent);
        CHECK(ch.size() == 0);
        CHECK(ch.try_recv().status == goro::recv_status::closed);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("buffered channel FIFO per producer through the lock-free paths", "[channel]") {
    // Two producers and one consumer on a tiny ring: each producer's values
    // arrive in the order it sent them.
    const auto tasks_before = goro::num_goroutines();
    for (std::size_t cap : {1u, 3u, 8u}) {
        goro::channel<int> ch(cap);
        std::atomic<int> done{0};
        auto producer = [](goro::channel<int> c, int id, std::atomic<int>& d) -> goro::task<> {
            for (int i = 0; i < 5000; ++i) co_await c.send(id * 1'000'000 + i);
            if (d.fetch_add(1) == 1) c.close();
        };
        goro::go(producer(ch, 1, done));
        goro::go(producer(ch, 2, done));
        std::vector<int> got;
        goro::block_on(collect_all(ch, got));
        REQUIRE(got.size() == 10000);
        int last[3] = {-1, -1, -1};
        bool ordered = true;
        for (int v : got) {
            int id = v / 1'000'000, i = v % 1'000'000;
            if (i != last[id] + 1) ordered = false;
            last[id] = i;
        }
        CHECK(ordered);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("contended claims: tasks that step aside lose no value and keep each producer's order", "[channel]") {
    // Four producers and four consumers on one ring, as in the mpmc
    // benchmark: two workers running the same side lose CASes of `enq` or
    // `deq` to each other, back off, and step aside after their operation
    // (channel.hpp, CONTENTION). Half the consumers receive through a select.
    const auto tasks_before = goro::num_goroutines();
    auto& sched = goro::detail::the_scheduler();
    const std::uint64_t yields_before = sched.contention_yields();
    const int producers = 4, consumers = 4, per = 20000;
    auto producer = [](goro::channel<int> c, int id, int n, goro::wait_group& wg) -> goro::task<> {
        for (int i = 0; i < n; ++i) co_await c.send(id * 1'000'000 + i);
        wg.done();
    };
    auto consumer = [](goro::channel<int> c, bool by_select, std::vector<int>& got,
                       goro::wait_group& wg) -> goro::task<> {
        for (;;) {
            std::optional<int> v;
            if (by_select) {
                auto r = co_await goro::select(goro::recv(c));
                v = r.get<0>();
            } else {
                v = co_await c.recv();
            }
            if (!v) break;
            got.push_back(*v);
        }
        wg.done();
    };
    int rounds = 0;
    do {
        goro::channel<int> ch(1024);
        goro::wait_group pw, cw;
        std::vector<std::vector<int>> got(consumers);
        cw.add(consumers);
        for (int c = 0; c < consumers; ++c) goro::go(consumer(ch, c % 2 == 1, got[c], cw));
        pw.add(producers);
        for (int p = 0; p < producers; ++p) goro::go(producer(ch, p, per, pw));
        goro::block_on(pw.wait());
        ch.close();
        goro::block_on(cw.wait());
        std::vector<int> all;
        bool ordered = true;
        for (auto& g : got) {
            int last[producers] = {-1, -1, -1, -1};
            for (int v : g) {
                const int id = v / 1'000'000, i = v % 1'000'000;
                if (i <= last[id]) ordered = false;  // FIFO: one producer's values arrive in order
                last[id] = i;
            }
            all.insert(all.end(), g.begin(), g.end());
        }
        CHECK(ordered);
        std::sort(all.begin(), all.end());
        std::vector<int> want;
        for (int p = 0; p < producers; ++p)
            for (int i = 0; i < per; ++i) want.push_back(p * 1'000'000 + i);
        REQUIRE(all == want);  // every value exactly once
    } while (++rounds < 20 && sched.contention_yields() == yields_before);
    if (sched.contention_yields() == yields_before)
        WARN("no task stepped aside in " << rounds << " rounds (no two workers contended here)");
    CHECK(goro_test::tasks_drained(tasks_before));
}

// --- the channel's biased lock (its own tests: test_spinlock.cpp) -----------

TEST_CASE("a ping-pong between tasks, then a plain thread on the same channel: every value is handed off once",
          "[channel][lock]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> ping, pong;
    constexpr int rounds = 20000;
    auto echo = [](goro::channel<int> in, goro::channel<int> out) -> goro::task<> {
        while (auto v = co_await in.recv()) co_await out.send(*v + 1);
        out.close();
    };
    goro::go(echo(ping, pong));
    long sum = goro::block_on([](goro::channel<int> ping, goro::channel<int> pong) -> goro::task<long> {
        long s = 0;
        for (int i = 0; i < rounds; ++i) {
            co_await ping.send(i);
            s += *co_await pong.recv();
        }
        co_return s;
    }(ping, pong));
    CHECK(sum == long(rounds) * (rounds - 1) / 2 + rounds);

    // Now a plain thread sends into the same channel: it must revoke the
    // worker's bias, and no value may be lost or doubled.
    std::thread sender([&] {
        for (int i = 0; i < 1000; ++i) goro::block_on(ping.send(int(i)));
    });
    long got = goro::block_on([](goro::channel<int> pong) -> goro::task<long> {
        long s = 0;
        for (int i = 0; i < 1000; ++i) s += *co_await pong.recv();
        co_return s;
    }(pong));
    sender.join();
    CHECK(got == 1000L * 999 / 2 + 1000);
    ping.close();
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("a buffered channel first used by tasks, then shared with a plain thread, hands every value over once",
          "[channel][lock]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> ch(8);
    constexpr int solo = 50000, shared = 20000;
    // Tasks: a producer fills the ring and parks, the receiver drains it and
    // wakes it, and so on (usually on one worker: the lock and the ring's
    // words then become biased to its thread).
    auto produce = [](goro::channel<int> ch, int from, int to) -> goro::task<> {
        for (int i = from; i < to; ++i) co_await ch.send(i);
    };
    goro::go(produce(ch, 0, solo));
    long solo_sum = goro::block_on([](goro::channel<int> ch) -> goro::task<long> {
        long s = 0;
        for (int i = 0; i < solo; ++i) s += *co_await ch.recv();
        co_return s;
    }(ch));
    CHECK(solo_sum == long(solo) * (solo - 1) / 2);

    // Shared: a task sends, a plain thread polls with try_recv; every value arrives once.
    std::vector<char> seen(shared, 0);
    std::thread receiver([&] {
        for (int got = 0; got < shared;) {
            if (auto r = ch.try_recv()) {
                ++seen[std::size_t(*r.value)];
                ++got;
            } else {
                std::this_thread::yield();
            }
        }
    });
    goro::block_on(produce(ch, 0, shared));
    receiver.join();
    CHECK(std::count(seen.begin(), seen.end(), 1) == shared);
    CHECK(goro_test::tasks_drained(tasks_before));
}

}  // namespace tests_channel
