// goro::ticker, goro::timer, goro::after_func: Go 1.23's time.Ticker /
// time.Timer / time.AfterFunc — ticks, dropped ticks, stop and reset with no
// stale value after them, Stop's and Reset's results, no timer left armed.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <goro/sync/ticker.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_ticker {

using goro_test::eventually;
using goro_test::parked_reasons;
using namespace std::chrono_literals;

namespace {

std::size_t armed_timers() { return goro::detail::the_scheduler().timers().pending(); }

/// Timers of other tests (a select's timeout, a context's deadline) may still
/// be armed when a test starts: each test compares with what it found.
struct armed_baseline {
    std::size_t before = armed_timers();
    bool back() const {
        return eventually([&] { return armed_timers() <= before; });
    }
};

}  // namespace

TEST_CASE("ticker: ticks arrive in order, each due a period after the last", "[ticker]") {
    armed_baseline base;
    auto body = []() -> goro::task<int> {
        // Read before the ticker is made: its first tick is due a period after
        // that, however long this thread is kept off a CPU in between.
        auto start = goro::tick_time::clock::now();
        goro::ticker t(2ms);
        goro::tick_time prev{};
        int bad = 0;
        for (int i = 0; i < 10; ++i) {
            auto v = co_await t.chan().recv();
            if (!v) co_return -1;
            if (*v < start || (i > 0 && *v <= prev)) ++bad;
            // Due times are whole periods apart (missed ones skipped, never bunched).
            if (i > 0 && (*v - prev) % 2ms != 0ns) ++bad;
            prev = *v;
        }
        t.stop();
        co_return bad;
    };
    CHECK(goro::block_on(body()) == 0);
    CHECK(base.back());
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("ticker: a slow receiver finds one tick waiting; the rest were dropped", "[ticker]") {
    armed_baseline base;
    goro::ticker t(1ms);
    CHECK(t.chan().capacity() == 1);
    // Let several periods pass without receiving (generously: each wait ends
    // when a tick is waiting, however slow the machine).
    REQUIRE(eventually([&] { return t.chan().size() == 1; }));
    std::this_thread::sleep_for(20ms);
    CHECK(t.chan().size() == 1);  // never more than one, however many periods passed
    auto first = t.chan().try_recv();
    REQUIRE(first.status == goro::recv_status::received);
    auto second = goro::block_on(t.chan().recv());
    REQUIRE(second);
    // The next tick after a drop is a later period, not a backlog.
    CHECK(*second > *first.value);
    t.stop();
    CHECK(base.back());
}

TEST_CASE("ticker: after stop no tick is received, not even one already buffered", "[ticker]") {
    armed_baseline base;
    goro::ticker t(1ms);
    REQUIRE(eventually([&] { return t.chan().size() == 1; }));  // a tick is buffered
    t.stop();
    CHECK(t.chan().size() == 0);  // Go 1.23: no stale value after Stop
    std::this_thread::sleep_for(10ms);
    CHECK(t.chan().try_recv().status == goro::recv_status::empty);
    CHECK(base.back());
    t.stop();  // twice: nothing
    // Reset starts a stopped ticker again.
    t.reset(1ms);
    CHECK(goro::block_on(t.chan().recv()).has_value());
    t.stop();
    CHECK(base.back());
}

TEST_CASE("ticker: reset discards a buffered tick and moves the next one a new period away", "[ticker]") {
    armed_baseline base;
    goro::ticker t(1ms);
    REQUIRE(eventually([&] { return t.chan().size() == 1; }));
    auto before = goro::tick_time::clock::now();
    t.reset(1h);
    CHECK(t.chan().size() == 0);
    std::this_thread::sleep_for(10ms);
    CHECK(t.chan().try_recv().status == goro::recv_status::empty);  // next tick is an hour away
    t.reset(2ms);
    auto v = goro::block_on(t.chan().recv());
    REQUIRE(v);
    CHECK(*v >= before + 2ms);
    t.stop();
    CHECK(base.back());
}

TEST_CASE("ticker: a non-positive period is refused, naming the call", "[ticker]") {
    CHECK_THROWS_WITH(goro::ticker(0ms), Catch::Contains("goro::ticker") && Catch::Contains("non-positive"));
    CHECK_THROWS_WITH(goro::ticker(-1s), Catch::Contains("non-positive"));
    goro::ticker t(1h);
    CHECK_THROWS_WITH(t.reset(0s), Catch::Contains("goro::ticker::reset") && Catch::Contains("non-positive"));
    goro::ticker empty;
    CHECK(empty.chan().is_nil());
    CHECK_THROWS_WITH(empty.reset(1s), Catch::Contains("goro::ticker::reset"));
}

TEST_CASE("ticker: moving and destroying tickers leaves no timer armed", "[ticker]") {
    armed_baseline base;
    {
        goro::ticker a(1ms);
        goro::ticker b = std::move(a);
        CHECK_FALSE(a);
        CHECK(a.chan().is_nil());
        goro::ticker c(5ms);
        c = std::move(b);  // the ticker c held stops
        CHECK(goro::block_on(c.chan().recv()).has_value());
        goro::timer t(1h);
        goro::timer u = std::move(t);
        CHECK_FALSE(t);
        CHECK(u);
    }
    CHECK(base.back());
}

TEST_CASE("timer: fires once; Stop and Reset report as Go 1.23's", "[ticker]") {
    armed_baseline base;
    goro::timer t(1ms);
    auto v = goro::block_on(t.chan().recv());
    REQUIRE(v);
    CHECK_FALSE(t.stop());  // fired and received: nothing to stop
    std::this_thread::sleep_for(5ms);
    CHECK(t.chan().try_recv().status == goro::recv_status::empty);  // fires once only

    goro::timer pending(1h);
    CHECK(pending.stop());        // stopped before it fired
    CHECK_FALSE(pending.stop());  // already stopped
    CHECK(pending.chan().try_recv().status == goro::recv_status::empty);

    goro::timer unreceived(1ms);
    REQUIRE(eventually([&] { return unreceived.chan().size() == 1; }));
    CHECK(unreceived.stop());  // Go 1.23: its value was not received, so Stop stops it...
    CHECK(unreceived.chan().size() == 0);  // ...and the value is gone

    goro::timer r(1h);
    CHECK(r.reset(1ms));  // was active
    CHECK(goro::block_on(r.chan().recv()).has_value());
    CHECK_FALSE(r.reset(1h));  // fired and received
    CHECK(r.reset(0ms));       // was active; 0: fires at once
    CHECK(goro::block_on(r.chan().recv()).has_value());
    CHECK_FALSE(r.reset(1ms));  // fired and received; armed again
    REQUIRE(eventually([&] { return r.chan().size() == 1; }));
    CHECK(r.reset(1h));  // an unreceived value counts as active, and is discarded
    CHECK(r.chan().size() == 0);
    CHECK(r.stop());
    goro::timer empty;
    CHECK_FALSE(empty.stop());
    CHECK_THROWS_WITH(empty.reset(1s), Catch::Contains("goro::timer::reset"));
    CHECK(base.back());
}

TEST_CASE("after_func: f runs in its own task after d; stop before cancels it; reset runs it again", "[ticker]") {
    armed_baseline base;
    std::atomic<int> ran{0};
    std::atomic<std::uint64_t> ran_in{0};
    std::uint64_t caller = 0;
    auto arm = [&]() -> goro::task<goro::timer> {
        caller = goro::this_task_id();
        co_return goro::after_func(1ms, [&] {
            ran_in.store(goro::this_task_id());
            ran.fetch_add(1);
        });
    };
    goro::timer t = goro::block_on(arm());
    CHECK_FALSE(t.chan());  // an after_func timer has no channel (Go: nil C)
    REQUIRE(eventually([&] { return ran.load() == 1; }));
    CHECK(ran_in.load() != 0);
    CHECK(ran_in.load() != caller);  // its own task
    CHECK_FALSE(t.stop());           // f has started: too late
    CHECK_FALSE(t.reset(1ms));       // not active; schedules f again
    REQUIRE(eventually([&] { return ran.load() == 2; }));

    goro::timer never = goro::after_func(1h, [&] { ran.fetch_add(100); });
    CHECK(never.stop());  // f will not run
    CHECK(base.back());

    // f may be a task; the timer may be dropped while f runs.
    goro_test::gate g;
    std::atomic<int> async_ran{0};
    {
        goro::timer a = goro::after_func(0ms, [&]() -> goro::task<> {
            co_await g.wait();
            async_ran.fetch_add(1);
        });
        REQUIRE(eventually([&] { return g.parked() == 1; }));
    }  // destroyed: f's task keeps what it needs
    g.open();
    REQUIRE(eventually([&] { return async_ran.load() == 1; }));
    CHECK(ran.load() == 2);
    CHECK(goro_test::tasks_drained());
    CHECK(base.back());
}

TEST_CASE("ticker: a task receiving from a ticker is parked on chan receive in dumps", "[ticker]") {
    goro::ticker t(1h);
    goro::channel<goro::tick_time> c = t.chan();
    auto recv = [](goro::channel<goro::tick_time> ch) -> goro::task<> { (void)co_await ch.recv(); };
    goro::go(recv(c), {.name = "ticker-receiver"});
    REQUIRE(eventually([&] { return parked_reasons("ticker-receiver").size() == 1; }));
    CHECK(parked_reasons("ticker-receiver")[0] == "chan receive");
    t.reset(1ms);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("ticker: stop and reset racing the timer thread never deliver a stale tick (stress)", "[ticker][stress]") {
    // Each round: a ticker of 1 µs fires constantly while this task resets
    // it to an hour or stops it; right after either, the channel must be
    // empty (a tick due before the call is never received after it).
    armed_baseline base;
    auto body = []() -> goro::task<int> {
        int stale = 0;
        for (int round = 0; round < 300; ++round) {
            goro::ticker t(1us);
            for (int k = 0; k < 3; ++k) (void)co_await t.chan().recv();
            if (round % 2) {
                t.reset(1h);
            } else {
                t.stop();
            }
            if (t.chan().try_recv().status != goro::recv_status::empty) ++stale;
            goro::timer tm(std::chrono::microseconds(round % 5));
            if (round % 3 == 0) co_await goro::yield();
            bool stopped = tm.stop();
            auto left = tm.chan().try_recv();
            if (left.status == goro::recv_status::received) ++stale;  // stop discards it
            (void)stopped;
        }
        co_return stale;
    };
    std::atomic<int> stale{0}, done{0};
    auto run = [&]() -> goro::task<> {
        stale.fetch_add(co_await body());
        done.fetch_add(1);
    };
    for (int i = 0; i < 4; ++i) goro::go(run);
    REQUIRE(eventually([&] { return done.load() == 4; }, std::chrono::seconds(120)));
    CHECK(stale.load() == 0);
    CHECK(goro_test::tasks_drained());
    CHECK(base.back());
}

}  // namespace tests_ticker
