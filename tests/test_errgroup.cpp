// goro::errgroup: first error, cancellation of the siblings, the limit, spawn sites, wait's rethrow.
#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <goro/sync/errgroup.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_errgroup {

using goro_test::eventually;

namespace {

struct seen_task {
    std::string reason;
    bool waiting = false;
    std::uint64_t parent = 0;
    unsigned spawn_line = 0;
};

/// The tasks named `name`, read with the world stopped.
std::vector<seen_task> tasks_named(const std::string& name) {
    std::vector<seen_task> out;
    auto& s = goro::detail::the_scheduler();
    goro_test::stop_whole_world();
    goro::detail::the_registry().for_each_locked([&](goro::task_header& h) {
        if (h.cold().meta && h.cold().meta->name == name) {
            const char* r = h.wait_reason.load();
            out.push_back({r ? r : "", h.state.load() == goro::task_state::waiting, h.cold().parent_id,
                           static_cast<unsigned>(h.cold().spawn_site.line())});
        }
    });
    s.start_the_world();
    return out;
}

std::size_t parked_count(const std::string& name) {
    std::size_t n = 0;
    for (auto& t : tasks_named(name)) n += t.waiting;
    return n;
}

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

/// Waits for the group's context to be cancelled, then counts itself.
goro::task<> until_cancelled(goro::context ctx, std::atomic<int>& exited) {
    co_await ctx.done();
    exited.fetch_add(1);
}

goro::task<> fail_with(std::string what) {
    throw std::runtime_error(what);
    co_return;
}

goro::task<> count_up(std::atomic<int>& n) {
    n.fetch_add(1);
    co_return;
}

}  // namespace

TEST_CASE("errgroup: wait returns null when every task succeeds, then cancels the context", "[errgroup]") {
    std::atomic<int> n{0};
    auto body = [](std::atomic<int>& k) -> goro::task<bool> {
        auto [g, ctx] = goro::errgroup::with_context(goro::background());
        for (int i = 0; i < 100; ++i) co_await g.go(count_up(k));
        bool live = ctx.err() == goro::context_error::none;
        std::exception_ptr e = co_await g.wait_error();
        co_return live && !e && ctx.err() == goro::context_error::canceled && k.load() == 100;
    };
    CHECK(goro::block_on(body(n)));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: the first error is returned and cancels the siblings", "[errgroup]") {
    std::atomic<int> exited{0};
    const int siblings = 20;
    auto body = [](std::atomic<int>& ex, int sib) -> goro::task<std::string> {
        auto [g, ctx] = goro::errgroup::with_context(goro::background());
        goro::task_options named{.name = "eg-sibling"};  // named: see errgroup::go
        for (int i = 0; i < sib; ++i) co_await g.go(until_cancelled(ctx, ex), named);
        co_await g.go(fail_with("boom"));
        std::exception_ptr e = co_await g.wait_error();
        // wait() returned only after every sibling saw the cancellation and exited.
        if (ex.load() != sib) co_return "siblings still running";
        if (ctx.err() != goro::context_error::canceled) co_return "context not cancelled";
        if (what_of(goro::cause(ctx)) != "boom") co_return "cause is not the error";
        co_return what_of(e);
    };
    CHECK(goro::block_on(body(exited, siblings)) == "boom");
    CHECK(exited.load() == siblings);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: the first error cancels tasks parked on the context before wait", "[errgroup]") {
    auto [g, ctx] = goro::errgroup::with_context(goro::background());
    std::atomic<int> exited{0};
    for (int i = 0; i < 5; ++i) goro::block_on(g.go(until_cancelled(ctx, exited), {.name = "eg-parked"}));
    REQUIRE(eventually([&] { return parked_count("eg-parked") == 5; }));
    CHECK(ctx.err() == goro::context_error::none);
    goro::block_on(g.go(fail_with("first")));
    REQUIRE(eventually([&] { return exited.load() == 5; }));
    CHECK(ctx.err() == goro::context_error::canceled);
    CHECK(what_of(goro::block_on(g.wait_error())) == "first");
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: only the first of several errors is kept", "[errgroup]") {
    auto second = [](goro::context ctx) -> goro::task<> {
        co_await ctx.done();
        throw std::runtime_error("second");
    };
    auto [g, ctx] = goro::errgroup::with_context(goro::background());
    for (int i = 0; i < 4; ++i) CHECK(g.try_go(second(ctx)));
    CHECK(g.try_go(fail_with("first")));
    CHECK(what_of(goro::block_on(g.wait_error())) == "first");
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: a group without a context collects errors and cancels nothing", "[errgroup]") {
    goro::errgroup g;
    std::atomic<int> n{0};
    goro::block_on(g.go(count_up(n)));
    goro::block_on(g.go(fail_with("lonely")));
    goro::block_on(g.go(count_up(n)));
    CHECK(g.ctx().err() == goro::context_error::none);
    CHECK(what_of(goro::block_on(g.wait_error())) == "lonely");
    CHECK(n.load() == 2);
    CHECK(g.ctx().err() == goro::context_error::none);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: a cancelled parent cancels the group's context", "[errgroup]") {
    auto [parent, cancel] = goro::with_cancel(goro::background());
    goro::errgroup g(parent);
    std::atomic<int> exited{0};
    for (int i = 0; i < 3; ++i) goro::block_on(g.go(until_cancelled(g.ctx(), exited)));
    cancel();
    CHECK_FALSE(goro::block_on(g.wait_error()));
    CHECK(exited.load() == 3);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: go under a limit keeps at most n tasks in flight", "[errgroup]") {
    const int limit = 3, total = 60;
    std::atomic<int> in_flight{0}, max_in_flight{0}, ran{0};
    auto job = [](std::atomic<int>& f, std::atomic<int>& mx, std::atomic<int>& r) -> goro::task<> {
        int now = f.fetch_add(1) + 1;
        int seen = mx.load();
        while (now > seen && !mx.compare_exchange_weak(seen, now)) {
        }
        for (int i = 0; i < 3; ++i) co_await goro::yield();
        r.fetch_add(1);
        f.fetch_sub(1);
    };
    auto body = [&]() -> goro::task<std::exception_ptr> {
        goro::errgroup g;
        g.set_limit(limit);
        for (int i = 0; i < total; ++i) co_await g.go(job(in_flight, max_in_flight, ran));
        co_return co_await g.wait_error();
    };
    CHECK_FALSE(goro::block_on(body()));
    CHECK(ran.load() == total);
    CHECK(max_in_flight.load() <= limit);
    CHECK(max_in_flight.load() >= 1);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: go parks on semacquire while the limit is reached", "[errgroup]") {
    goro::errgroup g;
    g.set_limit(1);
    goro_test::gate hold;
    std::atomic<int> ran{0};
    auto driver = [](goro::errgroup grp, goro_test::gate& h, std::atomic<int>& r) -> goro::task<> {
        auto blocked = [](goro_test::gate& hh) -> goro::task<> { co_await hh.wait(); };
        co_await grp.go(blocked(h));
        co_await grp.go(count_up(r));  // parks: the first holds the only slot
    };
    goro::go(driver(g, hold, ran), {.name = "eg-driver"});
    REQUIRE(eventually([&] { return parked_count("eg-driver") == 1; }));
    auto seen = tasks_named("eg-driver");
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].reason == "semacquire");
    CHECK(ran.load() == 0);
    hold.open();
    REQUIRE(eventually([&] { return ran.load() == 1; }));
    CHECK_FALSE(goro::block_on(g.wait_error()));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: go, try_go and set_limit misuse under a limit", "[errgroup]") {
    goro::errgroup g;
    g.set_limit(1);
    goro_test::gate hold;
    auto blocked = [](goro_test::gate& h) -> goro::task<> { co_await h.wait(); };
    CHECK(g.try_go(blocked(hold)));
    CHECK_FALSE(g.try_go(blocked(hold)));  // the limit is reached
    std::atomic<int> n{0};
    goro::task<> later = count_up(n);
    CHECK_FALSE(g.try_go(std::move(later)));
    CHECK(bool(later));  // still ours
    CHECK_THROWS_WITH(g.set_limit(5), Catch::Contains("goro::errgroup::set_limit"));
    CHECK_THROWS_WITH((void)g.go(goro::task<>{}), Catch::Contains("goro::errgroup::go: the task is empty"));
    CHECK_THROWS_AS(g.try_go(goro::task<>{}), goro::usage_error);
    hold.open();
    goro::block_on(g.wait());
    CHECK(g.try_go(std::move(later)));
    goro::block_on(g.wait());
    CHECK(n.load() == 1);
    g.set_limit(-1);  // no limit: try_go never refuses
    for (int i = 0; i < 10; ++i) CHECK(g.try_go(count_up(n)));
    goro::block_on(g.wait());
    CHECK(n.load() == 11);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: tasks are registered as created by the caller of go", "[errgroup]") {
    goro_test::gate hold;
    static unsigned go_line = 0;
    auto blocked = [](goro_test::gate& h) -> goro::task<> { co_await h.wait(); };
    auto starter = [&](goro::errgroup g) -> goro::task<std::uint64_t> {
        go_line = __LINE__ + 1;
        (void)g.try_go(blocked(hold), {.name = "eg-child"});  // seen below: one eg-child parks
        co_return goro::this_task_id();
    };
    goro::errgroup g;
    std::uint64_t starter_id = goro::block_on(starter(g));
    REQUIRE(eventually([&] { return parked_count("eg-child") == 1; }));
    auto seen = tasks_named("eg-child");
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].parent == starter_id);
    CHECK(seen[0].spawn_line == go_line);
    hold.open();
    CHECK_FALSE(goro::block_on(g.wait_error()));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: many groups failing at random leave no task behind", "[errgroup][stress]") {
    auto worker = [](goro::context ctx, int i, int fail_at) -> goro::task<> {
        for (int k = 0; k < 20; ++k) {
            ctx.throw_if_done();
            if (i == fail_at && k == 3) throw std::runtime_error("worker " + std::to_string(i));
            co_await goro::yield();
        }
    };
    auto group = [&](int seed) -> goro::task<bool> {
        auto [g, ctx] = goro::errgroup::with_context(goro::background());
        const int n = 30;
        int fail_at = seed % 3 == 0 ? -1 : seed % n;  // a third of the groups succeed
        for (int i = 0; i < n; ++i) co_await g.go(worker(ctx, i, fail_at));
        std::exception_ptr e = co_await g.wait_error();
        if (fail_at < 0) co_return !e;
        co_return what_of(e) == "worker " + std::to_string(fail_at);
    };
    std::atomic<int> ok{0};
    auto run_group = [&](int seed, std::atomic<int>& k) -> goro::task<> {
        if (co_await group(seed)) k.fetch_add(1);
    };
    goro::errgroup outer;
    for (int s = 0; s < 24; ++s) goro::block_on(outer.go(run_group(s, ok)));
    CHECK_FALSE(goro::block_on(outer.wait_error()));
    CHECK(ok.load() == 24);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: wait rethrows the first error; wait_error returns it", "[errgroup]") {
    goro::errgroup g;
    goro::block_on(g.go(fail_with("rethrown")));
    CHECK_THROWS_WITH(goro::block_on(g.wait()), "rethrown");
    CHECK(what_of(goro::block_on(g.wait_error())) == "rethrown");  // kept: every wait sees it
    CHECK_THROWS_WITH(goro::block_on(g.wait()), "rethrown");
    goro::errgroup ok;
    std::atomic<int> n{0};
    goro::block_on(ok.go(count_up(n)));
    goro::block_on(ok.wait());  // no error: returns normally
    CHECK(n.load() == 1);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: go at the limit waits for a slot instead of throwing, in FIFO order", "[errgroup]") {
    // Go's blocking Group.Go: three drivers each co_await go() on a group of
    // limit 1 whose slot is held; they park on semacquire and start their
    // tasks one by one as slots free up.
    goro::errgroup g;
    g.set_limit(1);
    goro_test::gate hold;
    auto blocked = [](goro_test::gate& h) -> goro::task<> { co_await h.wait(); };
    REQUIRE(g.try_go(blocked(hold)));
    std::mutex mu;
    std::vector<int> order;
    auto record = [](std::mutex& m, std::vector<int>& o, int i) -> goro::task<> {
        std::lock_guard lk(m);
        o.push_back(i);
        co_return;
    };
    auto driver = [&](int i) -> goro::task<> { co_await g.go(record(mu, order, i)); };
    goro::task_options named{.name = "eg-waiting-driver"};
    goro::go([&driver] { return driver(0); }, named);
    REQUIRE(eventually([&] { return parked_count("eg-waiting-driver") == 1; }));
    goro::go([&driver] { return driver(1); }, named);
    REQUIRE(eventually([&] { return parked_count("eg-waiting-driver") == 2; }));
    for (auto& t : tasks_named("eg-waiting-driver")) CHECK(t.reason == "semacquire");
    {
        std::lock_guard lk(mu);
        CHECK(order.empty());
    }
    hold.open();
    // wait() may return while a driver is still between its slot and its
    // go() (as Go's Wait with a Go call blocked on the limit): wait for both
    // records first, and never hold `mu` while tasks may still want it.
    REQUIRE(eventually([&] {
        std::lock_guard lk(mu);
        return order.size() == 2;
    }));
    goro::block_on(g.wait());
    {
        std::lock_guard lk(mu);
        CHECK(order == std::vector<int>{0, 1});
    }
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("errgroup: the derived context is cancelled by the first error while go waits at the limit", "[errgroup]") {
    auto [g, ctx] = goro::errgroup::with_context(goro::background());
    g.set_limit(2);
    std::atomic<int> exited{0};
    REQUIRE(g.try_go(until_cancelled(ctx, exited)));
    // The second slot: fails, cancelling ctx; the first then exits, freeing
    // slots for the driver's go(), which was waiting.
    auto driver = [](goro::errgroup grp, goro::context c, std::atomic<int>& ex) -> goro::task<> {
        co_await grp.go(fail_with("cancel them"));
        co_await grp.go(until_cancelled(c, ex));  // waits, then starts on a cancelled ctx: exits at once
    };
    goro::block_on(driver(g, ctx, exited));
    CHECK_THROWS_WITH(goro::block_on(g.wait()), "cancel them");
    CHECK(exited.load() == 2);
    CHECK(ctx.err() == goro::context_error::canceled);
    CHECK(goro_test::tasks_drained());
}

}  // namespace tests_errgroup
