// goro::select and goro::try_select: ready cases, nil channels, duplicate
// channels, send and receive on one channel, timeouts, closes, fairness, and
// races between a select's timer and its channels. Modelled on Go's
// runtime/chan_test.go and select_test.go.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <goro/sync/channel.hpp>
#include <goro/sync/select.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_select {


using namespace std::chrono_literals;
using goro_test::counted;
using goro_test::eventually;
using goro_test::same_reason;

/// Waits (with the suite's deadline) until the task that stored itself in
/// `me` has parked.
bool parks(const std::atomic<goro::task_header*>& me) {
    return eventually([&] {
        goro::task_header* t = me.load(std::memory_order_acquire);
        return t && t->state.load() == goro::task_state::waiting;
    });
}

TEST_CASE("select takes the ready receive case and exposes its value", "[select]") {
    goro::channel<int> a(1), b(1);
    CHECK(b.try_send(7) == goro::send_status::sent);
    auto body = [](goro::channel<int> x, goro::channel<int> y) -> goro::task<int> {
        auto r = co_await goro::select(goro::recv(x), goro::recv(y));
        CHECK(r.index() == 1);
        CHECK_FALSE(r.get<0>());
        REQUIRE(r.get<1>());
        co_return r.value<1>();
    };
    CHECK(goro::block_on(body(a, b)) == 7);
}

TEST_CASE("select send case hands its value to a parked receiver", "[select]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<std::string> ch;
    std::atomic<bool> got{false};
    goro::go([](goro::channel<std::string> c, std::atomic<bool>& g) -> goro::task<> {
        auto v = co_await c.recv();
        g.store(v && *v == "hi");
    }(ch, got));
    auto body = [](goro::channel<std::string> c) -> goro::task<int> {
        goro::channel<int> never;
        auto r = co_await goro::select(goro::recv(never), goro::send(c, std::string("hi")));
        co_return r.index();
    };
    CHECK(goro::block_on(body(ch)) == 1);
    CHECK(eventually([&] { return got.load(); }));
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("recv and send cases are awaitable on their own", "[select]") {
    goro::channel<int> ch(1);
    auto body = [](goro::channel<int> c) -> goro::task<int> {
        co_await goro::send(c, 5);
        auto v = co_await goro::recv(c);
        co_return v.value_or(-1);
    };
    CHECK(goro::block_on(body(ch)) == 5);
}

TEST_CASE("try_select returns select_default when nothing is ready", "[select]") {
    goro::channel<int> a, b(1);
    auto r = goro::try_select(goro::recv(a), goro::recv(b));
    CHECK(r.index() == goro::select_default);
    CHECK_FALSE(r.get<0>());
    CHECK(b.try_send(3) == goro::send_status::sent);
    auto r2 = goro::try_select(goro::recv(a), goro::recv(b));
    CHECK(r2.index() == 1);
    CHECK(r2.value<1>() == 3);
    CHECK_THROWS_AS(r2.value<0>(), goro::usage_error);
    // A send case that is not taken keeps its value: nothing is delivered.
    auto r3 = goro::try_select(goro::send(a, 1));
    CHECK(r3.index() == goro::select_default);
    CHECK(goro::try_select().index() == goro::select_default);
}

TEST_CASE("a case on a nil channel never fires", "[select]") {
    goro::channel<int> nil{nullptr};
    // try_select on nil cases only: nothing ready.
    CHECK(goro::try_select(goro::recv(nil), goro::send(nil, 1)).index() == goro::select_default);
    // With a timeout: the timeout wins, every time.
    auto body = [](goro::channel<int> n) -> goro::task<int> {
        auto r = co_await goro::select(goro::recv(n), goro::send(n, 2), goro::after(5ms));
        co_return r.index();
    };
    for (int i = 0; i < 3; ++i) CHECK(goro::block_on(body(nil)) == 2);
}

TEST_CASE("after fires once its duration has passed", "[select]") {
    const std::size_t timers_before = goro::detail::the_scheduler().timers().pending();  // other tests' timers may be pending
    goro::channel<int> never;
    auto t0 = std::chrono::steady_clock::now();
    auto body = [](goro::channel<int> n) -> goro::task<int> {
        auto r = co_await goro::select(goro::recv(n), goro::after(30ms), goro::after(1h));
        co_return r.index();
    };
    CHECK(goro::block_on(body(never)) == 1);
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
    // An expired timeout is ready at once, even in try_select.
    CHECK(goro::try_select(goro::recv(never), goro::after(-1ms)).index() == 1);
    CHECK(goro::detail::the_scheduler().timers().pending() <= timers_before);  // the 1h timer was cancelled
}

TEST_CASE("the same channel may appear in several cases", "[select]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> ch(8);
    auto body = [](goro::channel<int> c) -> goro::task<std::vector<int>> {
        std::vector<int> idx;
        for (int i = 0; i < 200; ++i) {
            CHECK(c.try_send(i) == goro::send_status::sent);
            auto r = co_await goro::select(goro::recv(c), goro::recv(c), goro::recv(c));
            idx.push_back(r.index());
            auto& got = r.index() == 0 ? r.get<0>() : r.index() == 1 ? r.get<1>() : r.get<2>();
            CHECK(got == i);
        }
        co_return idx;
    };
    auto idx = goro::block_on(body(ch));
    for (int k = 0; k < 3; ++k) CHECK(std::count(idx.begin(), idx.end(), k) > 0);  // random choice among duplicates
    // Blocking with duplicates: a task parks with two waiters on one channel; one send wakes it once.
    goro::channel<int> un;
    std::atomic<int> woke{0};
    goro::go([](goro::channel<int> c, std::atomic<int>& w) -> goro::task<> {
        auto r = co_await goro::select(goro::recv(c), goro::recv(c));
        if (r.index() == 0 && r.get<0>() == 9) w.fetch_add(1);
        if (r.index() == 1 && r.get<1>() == 9) w.fetch_add(1);
    }(un, woke));
    REQUIRE(eventually([&] { return un.try_send(9) == goro::send_status::sent; }));
    CHECK(eventually([&] { return woke.load() == 1; }));
    CHECK(goro_test::tasks_drained(tasks_before));
    CHECK(un.try_send(10) == goro::send_status::full);  // its other waiter was unlinked
}

TEST_CASE("select with a send and a receive on one channel never receives its own value", "[select]") {
    const auto tasks_before = goro::num_goroutines();
    // Go's TestSelfSelect: two tasks each select { c <- p; v := <-c }. On an
    // unbuffered channel a task must never receive the value it sends itself.
    for (std::size_t cap : {0u, 1u, 10u}) {
        goro::channel<int> c(cap);
        std::atomic<int> self_receives{0}, finished{0};
        auto worker = [](goro::channel<int> ch, int p, std::size_t k, std::atomic<int>& self,
                         std::atomic<int>& fin) -> goro::task<> {
            for (int i = 0; i < 1000; ++i) {
                auto r = co_await goro::select(goro::send(ch, p), goro::recv(ch));
                if (r.index() == 1 && k == 0 && r.get<1>() == p) self.fetch_add(1);
            }
            fin.fetch_add(1);
        };
        goro::go(worker(c, 0, cap, self_receives, finished));
        goro::go(worker(c, 1, cap, self_receives, finished));
        REQUIRE(eventually([&] { return finished.load() == 2; }));
        CHECK(self_receives.load() == 0);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("a closed channel fires its receive case with nullopt; a send case throws", "[select]") {
    goro::channel<int> c, never;
    c.close();
    auto r = goro::try_select(goro::recv(never), goro::recv(c));
    CHECK(r.index() == 1);
    CHECK_FALSE(r.get<1>());
    CHECK_THROWS_WITH(goro::try_select(goro::send(c, 1)), Catch::Contains("goro::select: send on closed channel"));
    auto body = [](goro::channel<int> cc) -> goro::task<> { co_await goro::select(goro::send(cc, 1)); };
    CHECK_THROWS_AS(goro::block_on(body(c)), goro::channel_closed);
}

TEST_CASE("close wakes a parked select: receive case gets nullopt, send case throws", "[select]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> a, b, never;
    std::atomic<int> recv_closed{0}, send_threw{0}, parked{0};
    goro::go([](goro::channel<int> x, goro::channel<int> n, std::atomic<int>& rc, std::atomic<int>& p) -> goro::task<> {
        p.fetch_add(1);
        auto r = co_await goro::select(goro::recv(n), goro::recv(x));
        if (r.index() == 1 && !r.get<1>()) rc.fetch_add(1);
    }(a, never, recv_closed, parked));
    goro::go([](goro::channel<int> y, goro::channel<int> n, std::atomic<int>& st, std::atomic<int>& p) -> goro::task<> {
        p.fetch_add(1);
        try {
            co_await goro::select(goro::recv(n), goro::send(y, 5));
        } catch (const goro::channel_closed&) {
            st.fetch_add(1);
        }
    }(b, never, send_threw, parked));
    REQUIRE(eventually([&] { return parked.load() == 2; }));
    a.close();
    b.close();
    CHECK(eventually([&] { return recv_closed.load() == 1 && send_threw.load() == 1; }));
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("a parked select records the wait reason select; no cases: select (no cases)", "[select]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> a, b;
    std::atomic<goro::task_header*> t1{nullptr}, t2{nullptr};
    std::atomic<int> done{0};
    goro::go([](goro::channel<int> x, goro::channel<int> y, std::atomic<goro::task_header*>& me,
                std::atomic<int>& d) -> goro::task<> {
        me.store(goro::detail::tls_current_task);
        co_await goro::select(goro::recv(x), goro::recv(y));
        d.fetch_add(1);
    }(a, b, t1, done));
    goro::go([](std::atomic<goro::task_header*>& me, std::atomic<int>& d) -> goro::task<> {
        me.store(goro::detail::tls_current_task);
        auto r = co_await goro::select();
        // Catch's assertions are not thread-safe: report through the counter.
        d.fetch_add(r.index() == goro::select_default ? 1 : 100);
    }(t2, done));
    REQUIRE(eventually([&] { return t1.load() && t2.load(); }));
    auto reason_is = [](goro::task_header* t, const char* r) {
        return t->state.load() == goro::task_state::waiting && same_reason(t->wait_reason.load(), r);
    };
    CHECK(eventually([&] { return reason_is(t1.load(), goro::wait_reason::select); }));
    CHECK(eventually([&] { return reason_is(t2.load(), goro::wait_reason::select_no_cases); }));
    std::this_thread::sleep_for(10ms);  // observing that nothing wakes it
    CHECK(done.load() == 0);
    b.close();
    CHECK(eventually([&] { return done.load() == 1; }));
    goro::detail::ready(t2.load());  // nothing in goro can wake it: the test does, to leave no task behind
    CHECK(eventually([&] { return done.load() == 2; }));
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("non-blocking receive never misses a buffered value racing with close", "[select]") {
    const auto tasks_before = goro::num_goroutines();
    // Go's TestNonblockRecvRace.
    int misses = 0;
    for (int i = 0; i < 2000; ++i) {
        goro::channel<int> c(1);
        CHECK(c.try_send(1) == goro::send_status::sent);
        std::atomic<bool> ok{false}, done{false};
        goro::go([](goro::channel<int> ch, std::atomic<bool>& o, std::atomic<bool>& d) -> goro::task<> {
            auto r = goro::try_select(goro::recv(ch));
            o.store(r.index() == 0);
            d.store(true);
            co_return;
        }(c, ok, done));
        c.close();
        REQUIRE(eventually([&] { return done.load(); }));
        if (!ok.load()) ++misses;
    }
    CHECK(misses == 0);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("non-blocking selects racing on a channel pair lose nothing", "[select]") {
    const auto tasks_before = goro::num_goroutines();
    // Go's TestNonblockSelectRace: two tasks try to exchange through two
    // buffered channels with non-blocking selects; one side must always win.
    for (int i = 0; i < 2000; ++i) {
        goro::channel<int> c1(1), c2(1);
        CHECK(c1.try_send(1) == goro::send_status::sent);
        std::atomic<int> done{0};
        goro::go([](goro::channel<int> a, goro::channel<int> b, std::atomic<int>& d) -> goro::task<> {
            (void)goro::try_select(goro::recv(a), goro::recv(b));
            d.fetch_add(1);
            co_return;
        }(c1, c2, done));
        auto r = goro::try_select(goro::recv(c1), goro::send(c2, 1));
        REQUIRE(eventually([&] { return done.load() == 1; }));
        (void)r;
        // Exactly one value is left in the pair, or none, never two or a lost one:
        // c1's value was taken by one side; if ours took the send case, c2 holds one
        // or the other side took it.
        CHECK(c1.size() + c2.size() <= 1);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("select is fair among ready cases (binomial band, 5 sigma)", "[select]") {
    const int n = 100'000;
    goro::channel<int> a(1), b(1);
    CHECK(a.try_send(0) == goro::send_status::sent);
    CHECK(b.try_send(0) == goro::send_status::sent);
    auto body = [](goro::channel<int> x, goro::channel<int> y, int count) -> goro::task<std::array<int, 2>> {
        std::array<int, 2> hits{0, 0};
        for (int i = 0; i < count; ++i) {
            auto r = co_await goro::select(goro::recv(x), goro::recv(y));
            ++hits[std::size_t(r.index())];
            CHECK((r.index() == 0 ? x : y).try_send(0) == goro::send_status::sent);  // keep both ready
        }
        co_return hits;
    };
    auto hits = goro::block_on(body(a, b, n));
    const double sigma = std::sqrt(n * 0.5 * 0.5);
    CHECK(std::abs(hits[0] - n / 2) < 5 * sigma);
    CHECK(hits[0] + hits[1] == n);
    // The non-blocking form draws from the same generator.
    int t0 = 0;
    for (int i = 0; i < n; ++i) {
        auto r = goro::try_select(goro::recv(a), goro::recv(b));
        if (r.index() == 0) ++t0;
        CHECK((r.index() == 0 ? a : b).try_send(0) == goro::send_status::sent);
    }
    CHECK(std::abs(t0 - n / 2) < 5 * sigma);
}

// A blocking select first polls without a random draw when the cases that
// only look (nil, unbuffered, timer) are not ready and one case is left; a
// looking case that is ready must still get its fair chance.
TEST_CASE("a ready unbuffered case keeps its chance against a ready buffered one", "[select]") {
    const int n = 100'000;
    goro::channel<int> buf(1), shut;
    shut.close();
    CHECK(buf.try_send(0) == goro::send_status::sent);
    auto body = [](goro::channel<int> b, goro::channel<int> c, int count) -> goro::task<std::array<int, 2>> {
        std::array<int, 2> hits{0, 0};
        for (int i = 0; i < count; ++i) {
            auto r = co_await goro::select(goro::recv(b), goro::recv(c));
            ++hits[std::size_t(r.index())];
            if (r.index() == 0) CHECK(b.try_send(0) == goro::send_status::sent);  // keep it ready
            else CHECK(!r.get<1>());
        }
        co_return hits;
    };
    auto hits = goro::block_on(body(buf, shut, n));
    const double sigma = std::sqrt(n * 0.5 * 0.5);
    CHECK(std::abs(hits[0] - n / 2) < 5 * sigma);
    CHECK(hits[0] + hits[1] == n);
}

TEST_CASE("with nil, unbuffered and timer cases not ready, a ready buffered case fires each time", "[select]") {
    goro::channel<int> buf(4), idle, nil{nullptr};
    auto body = [](goro::channel<int> b, goro::channel<int> i, goro::channel<int> z) -> goro::task<int> {
        int fired = 0;
        for (int k = 0; k < 1000; ++k) {
            CHECK(b.try_send(k) == goro::send_status::sent);
            auto r = co_await goro::select(goro::recv(i), goro::recv(z), goro::after(1h), goro::recv(b));
            CHECK(r.index() == 3);
            if (r.index() == 3 && r.get<3>() == k) ++fired;
        }
        co_return fired;
    };
    CHECK(goro::block_on(body(buf, idle, nil)) == 1000);
    CHECK(buf.try_recv().status == goro::recv_status::empty);  // each value taken once
}

TEST_CASE("a send case that loses keeps its value; a winning one delivers it once", "[select][stress]") {
    const auto tasks_before = goro::num_goroutines();
    counted::reset();
    long alive_before = counted::alive.load();
    {
        goro::channel<counted> a, b;
        std::atomic<long> received_sum{0}, sent_sum{0};
        std::atomic<int> producers_done{0}, consumers_done{0};
        const int per = 2000;
        for (int p = 0; p < 4; ++p)
            goro::go([](goro::channel<counted> x, goro::channel<counted> y, int id, int count, std::atomic<long>& sent,
                        std::atomic<int>& fin) -> goro::task<> {
                for (int i = 0; i < count; ++i) {
                    int v = id * 100'000 + i;
                    auto r = co_await goro::select(goro::send(x, counted(v)), goro::send(y, counted(v)));
                    if (r.index() >= 0) sent.fetch_add(v);
                }
                fin.fetch_add(1);
            }(a, b, p, per, sent_sum, producers_done));
        auto consumer = [](goro::channel<counted> x, std::atomic<long>& sum, std::atomic<int>& fin) -> goro::task<> {
            while (auto v = co_await x.recv()) sum.fetch_add(v->value);
            fin.fetch_add(1);
        };
        for (int c = 0; c < 2; ++c) goro::go(consumer(a, received_sum, consumers_done));
        for (int c = 0; c < 2; ++c) goro::go(consumer(b, received_sum, consumers_done));
        REQUIRE(eventually([&] { return producers_done.load() == 4; }, std::chrono::seconds(120)));
        a.close();
        b.close();
        REQUIRE(eventually([&] { return consumers_done.load() == 4; }));
        CHECK(received_sum.load() == sent_sum.load());
    }
    CHECK(goro_test::tasks_drained(tasks_before));
    CHECK(counted::copies.load() == 0);
    CHECK(counted::alive.load() == alive_before);
}

TEST_CASE("select timers racing channel wake-ups lose and invent nothing", "[select][stress]") {
    const auto tasks_before = goro::num_goroutines();
    const std::size_t timers_before = goro::detail::the_scheduler().timers().pending();  // other tests' timers may be pending
    // Producers offer values with a tiny timeout, consumers take with a tiny
    // timeout: every race between a timer and a hand-off is exercised. What a
    // producer's select reports as sent must equal what consumers received.
    goro::channel<int> ch;
    std::atomic<long> sent{0}, received{0}, sent_n{0}, received_n{0};
    std::atomic<int> fin{0};
    const int iters = 3000;
    for (int p = 0; p < 4; ++p)
        goro::go([](goro::channel<int> c, int id, std::atomic<long>& s, std::atomic<long>& sn, std::atomic<int>& f) -> goro::task<> {
            for (int i = 0; i < 3000; ++i) {
                int v = id * 10'000 + i + 1;
                auto r = co_await goro::select(goro::send(c, v), goro::after(std::chrono::microseconds(i % 50)));
                if (r.index() == 0) {
                    s.fetch_add(v);
                    sn.fetch_add(1);
                }
            }
            f.fetch_add(1);
        }(ch, p, sent, sent_n, fin));
    for (int q = 0; q < 4; ++q)
        goro::go([](goro::channel<int> c, std::atomic<long>& r_, std::atomic<long>& rn, std::atomic<int>& f) -> goro::task<> {
            for (int i = 0; i < 3000; ++i) {
                auto r = co_await goro::select(goro::recv(c), goro::after(std::chrono::microseconds((i * 7) % 50)));
                if (r.index() == 0) {
                    r_.fetch_add(r.get<0>().value_or(-1'000'000));  // a missing value shows in the sums
                    rn.fetch_add(1);
                }
            }
            f.fetch_add(1);
        }(ch, received, received_n, fin));
    REQUIRE(eventually([&] { return fin.load() == 8; }, std::chrono::seconds(120)));
    (void)iters;
    CHECK(sent_n.load() == received_n.load());
    CHECK(sent.load() == received.load());
    CHECK(sent_n.load() > 0);
    CHECK(goro_test::tasks_drained(tasks_before));
    CHECK(goro::detail::the_scheduler().timers().pending() <= timers_before);
}

TEST_CASE("move-only values through select", "[select]") {
    goro::channel<std::unique_ptr<int>> ch(1);
    auto body = [](goro::channel<std::unique_ptr<int>> c) -> goro::task<int> {
        auto r1 = co_await goro::select(goro::send(c, std::make_unique<int>(4)));
        CHECK(r1.index() == 0);
        auto r2 = co_await goro::select(goro::recv(c));
        std::unique_ptr<int> p = std::move(r2.value<0>());
        co_return *p;
    };
    CHECK(goro::block_on(body(ch)) == 4);
}

TEST_CASE("a receive case borrows a channel variable, counted only while its select is parked", "[select]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> ch(1);
    auto& refs = ch.state()->refs;
    const std::size_t base = refs.load();
    {
        auto c = goro::recv(ch);  // a variable: borrowed, no count
        CHECK(refs.load() == base);
        CHECK(c.ch == ch.state());
    }
    // A ready case: the select takes and drops no count.
    REQUIRE(ch.try_send(1) == goro::send_status::sent);
    auto r = goro::try_select(goro::recv(ch));
    CHECK(r.index() == 0);
    CHECK(refs.load() == base);
    // A parked select holds one count while parked, and drops it when it resumes.
    std::atomic<goro::task_header*> me{nullptr};
    std::atomic<int> got{-1};
    goro::go([](const goro::channel<int>& c, std::atomic<goro::task_header*>& me,
                std::atomic<int>& got) -> goro::task<> {
        me.store(goro::detail::tls_current_task, std::memory_order_release);
        goro::channel<int> never;
        auto r = co_await goro::select(goro::recv(c), goro::recv(never));
        got.store(r.index() == 0 && r.get<0>() ? *r.get<0>() : -2);
    }(ch, me, got));
    REQUIRE(parks(me));
    CHECK(refs.load() == base + 1);
    REQUIRE(ch.try_send(9) == goro::send_status::sent);
    REQUIRE(eventually([&] { return got.load() != -1; }));
    CHECK(got.load() == 9);
    CHECK(goro_test::tasks_drained(tasks_before));
    CHECK(refs.load() == base);
}

TEST_CASE("a send case borrows a channel variable, counted only while its select is parked", "[select]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> ch;  // unbuffered: a send parks until a receiver comes
    auto& refs = ch.state()->refs;
    const std::size_t base = refs.load();
    {
        auto c = goro::send(ch, 1);
        CHECK(refs.load() == base);
        CHECK(c.ch == ch.state());
        auto d = goro::send(ch, std::in_place, 2);
        CHECK(refs.load() == base);
        CHECK(d.value == 2);
    }
    std::atomic<goro::task_header*> me{nullptr};
    std::atomic<int> chosen{-1};
    goro::go([](const goro::channel<int>& c, std::atomic<goro::task_header*>& me,
                std::atomic<int>& chosen) -> goro::task<> {
        me.store(goro::detail::tls_current_task, std::memory_order_release);
        goro::channel<int> never;
        auto r = co_await goro::select(goro::send(c, 11), goro::recv(never));
        chosen.store(r.index());
    }(ch, me, chosen));
    REQUIRE(parks(me));
    CHECK(refs.load() == base + 1);
    auto got = ch.try_recv();  // takes the parked sender's value
    REQUIRE(got.status == goro::recv_status::received);
    CHECK(got.value == 11);
    REQUIRE(eventually([&] { return chosen.load() != -1; }));
    CHECK(chosen.load() == 0);
    CHECK(goro_test::tasks_drained(tasks_before));
    CHECK(refs.load() == base);
    // On a temporary channel the case holds a handle of its own.
    goro::channel<int> buf(1);
    auto& brefs = buf.state()->refs;
    const std::size_t bbase = brefs.load();
    auto owned = goro::send(goro::channel<int>(buf), 4);
    CHECK(brefs.load() == bbase + 1);
    CHECK(goro::try_select(std::move(owned)).index() == 0);
    CHECK(brefs.load() == bbase);
    CHECK(buf.try_recv().value == 4);
}

TEST_CASE("a receive case on a temporary channel keeps it alive", "[select]") {
    auto ready = [](int v) {
        goro::channel<int> c(1);
        (void)c.try_send(v);
        return c;
    };
    auto c = goro::recv(ready(42));  // the case holds the channel's only handle
    auto r = goro::try_select(std::move(c));
    REQUIRE(r.index() == 0);
    REQUIRE(r.get<0>());
    CHECK(*r.get<0>() == 42);
    goro::channel<int> ch(1);
    REQUIRE(ch.try_send(5) == goro::send_status::sent);
    auto& refs = ch.state()->refs;
    const std::size_t base = refs.load();
    auto moved = goro::recv(goro::channel<int>(ch));  // a copy, moved into the case: one count more
    CHECK(refs.load() == base + 1);
    CHECK(goro::try_select(std::move(moved)).index() == 0);
    CHECK(refs.load() == base);
}

TEST_CASE("a parked select keeps a channel alive when its last other handle is dropped", "[select]") {
    // The task's select refers to A only through a handle owned outside the
    // task; that handle is dropped while the select is parked, then the
    // select completes through its other case (a value on B, or its timer)
    // and must still find A to unlink its waiter there.
    const auto tasks_before = goro::num_goroutines();
    for (int variant = 0; variant < 2; ++variant) {
        const bool by_timer = variant == 1;
        auto a = std::make_unique<goro::channel<int>>();
        goro::channel<int> b;
        std::atomic<goro::task_header*> me{nullptr};
        std::atomic<int> got{-1};
        goro::go([](const goro::channel<int>& a, goro::channel<int> b, bool by_timer,
                    std::atomic<goro::task_header*>& me, std::atomic<int>& got) -> goro::task<> {
            auto case_a = goro::recv(a);  // the last read of the outside handle
            me.store(goro::detail::tls_current_task, std::memory_order_release);
            if (by_timer) {
                auto r = co_await goro::select(std::move(case_a), goro::after(200ms));
                got.store(r.index() == 1 ? 100 : -2);
            } else {
                auto r = co_await goro::select(std::move(case_a), goro::recv(b));
                got.store(r.index() == 1 && r.get<1>() ? *r.get<1>() : -2);
            }
        }(*a, b, by_timer, me, got));
        REQUIRE(parks(me));
        a.reset();  // A's last handle but the select's own
        if (!by_timer) CHECK(b.try_send(7) == goro::send_status::sent);  // the parked select takes it
        CHECK(eventually([&] { return got.load() != -1; }));
        CHECK(got.load() == (by_timer ? 100 : 7));
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

}  // namespace tests_select
