// goro::once, once_func, once_value: Go's sync.Once / OnceFunc / OnceValue.
#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <string>

#include <goro/sync/once.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_once {

using goro_test::eventually;
using goro_test::parked_reasons;

namespace {

std::string what_of(std::exception_ptr e) {
    if (!e) return "";
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
        return "?";
    }
}

/// Calls `o.call(f)` where f runs `calls` up and parks on `g` (when given);
/// then records whether f had finished when call() returned.
goro::task<> caller(goro::once& o, std::atomic<int>& calls, std::atomic<bool>& f_done, goro_test::gate* g,
                    std::atomic<int>& returned, std::atomic<int>& early) {
    co_await o.call([&]() -> goro::task<> {
        calls.fetch_add(1);
        if (g) co_await g->wait();
        f_done.store(true);
    });
    if (!f_done.load()) early.fetch_add(1);  // Go: no call returns before f has
    returned.fetch_add(1);
}

}  // namespace

TEST_CASE("once: f runs once however many tasks call; none returns before f has", "[once]") {
    goro::once o;
    goro_test::gate g;
    std::atomic<int> calls{0}, returned{0}, early{0};
    std::atomic<bool> f_done{false};
    goro::task_options named{.name = "once-caller"};
    for (int i = 0; i < 16; ++i) goro::go(caller(o, calls, f_done, &g, returned, early), named);
    // One runs f (parked in the gate), fifteen wait for it: Go's dump shows them in
    // the Once's mutex, "sync.Mutex.Lock".
    REQUIRE(eventually([&] { return parked_reasons("once-caller").size() == 16; }));
    int in_mutex = 0, in_gate = 0;
    for (auto& r : parked_reasons("once-caller")) {
        in_mutex += r == "sync.Mutex.Lock";
        in_gate += r == "gate";
    }
    CHECK(in_mutex == 15);
    CHECK(in_gate == 1);
    CHECK(calls.load() == 1);
    CHECK(returned.load() == 0);
    CHECK_FALSE(o.done());
    g.open();
    REQUIRE(eventually([&] { return returned.load() == 16; }));
    CHECK(calls.load() == 1);
    CHECK(early.load() == 0);
    CHECK(o.done());
    // Later calls return at once and never call f.
    goro::block_on(o.call([&] { calls.fetch_add(1); }));
    CHECK(calls.load() == 1);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("once: a synchronous f runs in the first caller; later calls are a load", "[once]") {
    goro::once o;
    int n = 0;
    auto body = [](goro::once& on, int& k) -> goro::task<int> {
        for (int i = 0; i < 1000; ++i) co_await on.call([&] { ++k; });
        co_return k;
    };
    CHECK(goro::block_on(body(o, n)) == 1);
    CHECK(o.done());
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("once: an f that throws counts as done; the exception reaches the first caller only", "[once]") {
    goro::once o;
    std::atomic<int> calls{0};
    auto first = [&]() -> goro::task<> { co_await o.call([&] {
                                             calls.fetch_add(1);
                                             throw std::runtime_error("init failed");
                                         }); };
    CHECK_THROWS_WITH(goro::block_on(first()), "init failed");
    CHECK(o.done());
    goro::block_on(o.call([&] { calls.fetch_add(1); }));  // Go: not called again, returns normally
    CHECK(calls.load() == 1);

    // The same with a task-returning f, and a waiter parked while it runs.
    goro::once o2;
    goro_test::gate g;
    std::atomic<int> waiter_done{0};
    auto thrower = [&]() -> goro::task<> {
        co_await o2.call([&]() -> goro::task<> {
            co_await g.wait();
            throw std::runtime_error("async init failed");
        });
    };
    std::atomic<int> first_threw{0};
    auto runner = [&]() -> goro::task<> {
        try {
            co_await thrower();
        } catch (const std::runtime_error&) {
            first_threw.fetch_add(1);
        }
    };
    goro::go(runner, {.name = "once-thrower"});
    REQUIRE(eventually([&] { return parked_reasons("once-thrower").size() == 1; }));
    auto waiter = [&]() -> goro::task<> {
        co_await o2.call([] {});  // parks until the throwing first call has returned
        waiter_done.fetch_add(1);
    };
    goro::go(waiter, {.name = "once-waiter"});
    REQUIRE(eventually([&] { return parked_reasons("once-waiter").size() == 1; }));
    CHECK(parked_reasons("once-waiter")[0] == "sync.Mutex.Lock");
    g.open();
    REQUIRE(eventually([&] { return waiter_done.load() == 1 && first_threw.load() == 1; }));
    CHECK(o2.done());
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("once_func: one call of f, and its exception rethrown on every call", "[once]") {
    std::atomic<int> calls{0};
    auto f = goro::once_func([&] { calls.fetch_add(1); });
    auto copy = f;  // copies share the one call
    goro::block_on(f());
    goro::block_on(copy());
    goro::block_on(f());
    CHECK(calls.load() == 1);
    CHECK(f.done());

    auto bad = goro::once_func([&] {
        calls.fetch_add(1);
        throw std::runtime_error("panic value");
    });
    std::exception_ptr e1, e2;
    try {
        goro::block_on(bad());
    } catch (...) {
        e1 = std::current_exception();
    }
    try {
        goro::block_on(bad());
    } catch (...) {
        e2 = std::current_exception();
    }
    CHECK(calls.load() == 2);
    CHECK(what_of(e1) == "panic value");
    CHECK(e1 == e2);  // the same exception, as Go re-panics with the same value
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("once_value: every caller gets the one value; a task-returning f is awaited once", "[once]") {
    std::atomic<int> calls{0};
    auto v = goro::once_value([&] {
        calls.fetch_add(1);
        return std::string("config");
    });
    std::atomic<int> right{0};
    auto read = [](decltype(v) h, std::atomic<int>& ok) -> goro::task<> {
        if (co_await h() == "config") ok.fetch_add(1);
    };
    for (int i = 0; i < 32; ++i) goro::go(read(v, right));
    REQUIRE(eventually([&] { return right.load() == 32; }));
    CHECK(calls.load() == 1);

    goro_test::gate g;
    auto av = goro::once_value([&]() -> goro::task<int> {
        calls.fetch_add(1);
        co_await g.wait();
        co_return 42;
    });
    std::atomic<int> sum{0};
    auto add = [](decltype(av) h, std::atomic<int>& s) -> goro::task<> { s.fetch_add(co_await h()); };
    goro::task_options named{.name = "once-value-reader"};
    for (int i = 0; i < 8; ++i) goro::go(add(av, sum), named);
    REQUIRE(eventually([&] { return parked_reasons("once-value-reader").size() == 8; }));
    g.open();
    REQUIRE(eventually([&] { return sum.load() == 8 * 42; }));
    CHECK(calls.load() == 2);

    auto bad = goro::once_value([]() -> int { throw std::logic_error("no value"); });
    CHECK_THROWS_WITH(goro::block_on(bad()), "no value");
    CHECK_THROWS_WITH(goro::block_on(bad()), "no value");
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("once: many onces raced by many tasks each run their f exactly once", "[once][stress]") {
    constexpr int onces = 64, tasks = 8;
    std::vector<goro::once> os(onces);
    std::vector<std::atomic<int>> runs(onces);
    std::atomic<int> finished{0}, bad{0};
    auto racer = [&](int seed) -> goro::task<> {
        for (int k = 0; k < onces; ++k) {
            int i = (k * 7 + seed) % onces;
            bool async = (i % 2) == 0;
            if (async)
                co_await os[i].call([&, i]() -> goro::task<> {
                    runs[i].fetch_add(1);
                    co_await goro::yield();
                });
            else
                co_await os[i].call([&, i] { runs[i].fetch_add(1); });
            if (runs[i].load() != 1) bad.fetch_add(1);  // returned before f ran, or f ran twice
        }
        finished.fetch_add(1);
    };
    for (int t = 0; t < tasks; ++t) goro::go([&racer, t] { return racer(t); });
    REQUIRE(eventually([&] { return finished.load() == tasks; }, std::chrono::seconds(120)));
    CHECK(bad.load() == 0);
    for (auto& r : runs) CHECK(r.load() == 1);
    CHECK(goro_test::tasks_drained());
}

}  // namespace tests_once
