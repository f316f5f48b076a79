// goro::spawn and join handles, go(callable), when_all / when_any, awaiting a
// task twice, and the [[nodiscard]] / warn_unused marks on awaitables.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <variant>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_spawn {

using namespace std::chrono_literals;

namespace {

goro::task<int> square(int x) {
    co_await goro::yield();
    co_return x * x;
}

goro::task<> nothing() { co_return; }

goro::task<int> fail_with(std::string what) {
    co_await goro::yield();
    throw std::runtime_error(what);
}

goro::task<int> parked_until(goro::channel<int> ch) {
    auto v = co_await ch.recv();
    co_return v ? *v : -1;
}

/// Runs until its context is cancelled; returns how it ended.
goro::task<std::string> until_cancelled(goro::context ctx) {
    auto r = co_await goro::select(ctx.done());
    (void)r;
    co_return goro::to_string(ctx.err());
}

goro::task<int> quick(goro::context, int v) {
    co_await goro::sleep_for(1ms);
    co_return v;
}

goro::task<int> fails_after(goro::context, int ms) {
    co_await goro::sleep_for(std::chrono::milliseconds(ms));
    throw std::runtime_error("the first failure");
}

goro::task<int> canceled_throws(goro::context ctx) {
    co_await goro::select(ctx.done());
    throw std::logic_error("cancelled, so I threw");
}

}  // namespace

TEST_CASE("spawn returns a join handle with the result or the exception", "[spawn]") {
    goro::block_on([]() -> goro::task<> {
        // (No co_await inside a CHECK: the macro expands its argument more than once.)
        auto h = goro::spawn(square(7));
        CHECK(h.id() != 0);
        int r = co_await h;
        CHECK(r == 49);

        auto v = goro::spawn(nothing());
        co_await std::move(v);

        auto f = goro::spawn(fail_with("spawned boom"));
        std::string what;
        try {
            (void)co_await f;
        } catch (const std::runtime_error& e) {
            what = e.what();
        }
        CHECK(what == "spawned boom");
        // Awaited once only.
        try {
            (void)co_await f;
        } catch (const goro::usage_error& e) {
            what = e.what();
        }
        CHECK(what == "goro::join_handle: co_await on a handle already awaited (a result is delivered once)");

        // A callable: kept alive for the task's life.
        auto keep = std::make_shared<int>(5);
        std::weak_ptr<int> watch = keep;
        auto c = goro::spawn([keep = std::move(keep)]() -> goro::task<int> {
            co_await goro::sleep_for(1ms);
            co_return *keep + 1;
        });
        r = co_await c;
        CHECK(r == 6);
        CHECK(goro_test::eventually([&] { return watch.expired(); }));
    }());
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("a spawned task is listed and dumped with its own stack while the spawner waits", "[spawn]") {
    goro::channel<int> ch;
    auto h = goro::spawn(parked_until(ch));
    std::string dump;
    REQUIRE(goro_test::eventually([&] {
        dump = goro::goroutine_profile(2);
        return dump.find("parked_until") != std::string::npos && dump.find("[chan receive") != std::string::npos;
    }));
    INFO(dump);
    CHECK(dump.find("goroutine " + std::to_string(h.id()) + " [chan receive") != std::string::npos);
    CHECK(dump.find("spawn_body") == std::string::npos);  // goro's runner frame is not shown
    // A task awaiting the handle parks with wait reason "join".
    goro::wait_group wg(1);
    int got = 0;
    goro::go([&]() -> goro::task<> {
        got = co_await h;
        wg.done();
    });
    REQUIRE(goro_test::eventually([&] { return goro::goroutine_profile(1).find("[join") != std::string::npos ||
                                               goro::goroutine_profile(2).find("[join") != std::string::npos; }));
    goro::block_on(ch.send(9));
    goro::block_on(wg.wait());
    CHECK(got == 9);
}

TEST_CASE("a dropped join handle detaches the task, which runs to its end", "[spawn]") {
    goro::channel<int> done(1);
    {
        auto h = goro::spawn([done]() mutable -> goro::task<int> {
            co_await goro::sleep_for(2ms);
            co_await done.send(1);
            co_return 1;
        });
        (void)h;  // dropped
    }
    CHECK(goro::block_on(done.recv()) == 1);
    auto h2 = goro::spawn(fail_with("nobody listens"));
    h2.detach();  // the exception is discarded, not a panic
    CHECK_FALSE(h2);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("go(callable) keeps the callable alive for the task's life", "[spawn]") {
    auto keep = std::make_shared<std::string>("captured");
    std::weak_ptr<std::string> watch = keep;
    goro::channel<std::string> out(1);
    goro::go([keep = std::move(keep), out]() mutable -> goro::task<> {
        co_await goro::sleep_for(2ms);  // the caller's temporary is long gone
        co_await out.send(*keep + "!");
    });
    CHECK(goro::block_on(out.recv()) == std::string("captured!"));
    CHECK(goro_test::eventually([&] { return watch.expired(); }));
    CHECK(goro_test::tasks_drained());
}

#if !defined(__clang__)
TEST_CASE("go of a capturing lambda called in place is refused (g++)", "[spawn]") {
    int x = 3;
    CHECK_THROWS_WITH(goro::go([x]() -> goro::task<> {
                          (void)x;
                          co_return;
                      }()),
                      Catch::Contains("goro::go: the task is a call of a lambda with captures"));
    CHECK_THROWS_WITH((void)goro::spawn([x]() -> goro::task<int> { co_return x; }()),
                      Catch::Contains("goro::spawn: the task is a call of a lambda"));
    // Not refused: a lambda without captures, a coroutine function taking a
    // capturing lambda by value (the copy lives in the frame), and the same
    // lambda-call awaited in place (block_on keeps the lambda alive).
    goro::channel<int> ch(3);
    goro::go([ch]() mutable -> goro::task<> { co_await ch.send(1); });
    auto by_value = [](auto f) -> goro::task<> { co_await f(); };
    (void)by_value;
    goro::go([](goro::channel<int> c) -> goro::task<> { co_await c.send(2); }(ch));
    CHECK(goro::block_on([x, ch]() -> goro::task<int> {
              auto a = co_await ch.recv();
              auto b = co_await ch.recv();
              co_return *a + *b + x;
          }()) == 6);
    CHECK(goro_test::tasks_drained());
}
#endif

namespace {
template <class F>
goro::task<> run_copy(F f) {
    co_await f();
}
}  // namespace

TEST_CASE("a coroutine function taking a capturing lambda by value may be started by go", "[spawn]") {
    goro::channel<int> ch(1);
    int v = 4;
    goro::go(run_copy([ch, v]() mutable -> goro::task<> { co_await ch.send(v); }));
    CHECK(goro::block_on(ch.recv()) == 4);
}

TEST_CASE("awaiting a goro::task twice fails with a clear error", "[spawn]") {
    goro::block_on([]() -> goro::task<> {
        goro::task<int> t = square(3);
        int r = co_await t;
        CHECK(r == 9);
        std::string what;
        try {
            (void)co_await t;
        } catch (const goro::usage_error& e) {
            what = e.what();
        }
        CHECK(what == "goro::task: co_await on a task that was already awaited (a task can be awaited once)");
        goro::task<> u = nothing();
        co_await u;
        CHECK_THROWS_WITH(goro::go(std::move(u)), Catch::Contains("goro::go: the task has already run"));
    }());
}

TEST_CASE("when_all runs tasks concurrently and returns every result", "[spawn]") {
    auto r = goro::block_on(goro::when_all(square(2), nothing(), square(3)));
    CHECK(std::get<0>(r) == 4);
    CHECK(std::get<2>(r) == 9);
    STATIC_REQUIRE(std::is_same_v<decltype(r), std::tuple<int, std::monostate, int>>);

    // Concurrently: the first waits for a value only the second sends.
    goro::channel<int> ch;
    auto [a, b] = goro::block_on(goro::when_all(parked_until(ch), [](goro::channel<int> c) -> goro::task<int> {
        co_await c.send(11);
        co_return 1;
    }(ch)));
    CHECK(a == 11);
    CHECK(b == 1);

    // The first failure (in time) is rethrown, after every task ended.
    CHECK_THROWS_WITH(goro::block_on(goro::when_all(square(1), fail_with("all: one failed"))), "all: one failed");
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("when_all with a context cancels the others at the first failure", "[spawn]") {
    auto r = goro::block_on(goro::when_all(goro::background(), [](goro::context c) { return quick(c, 1); },
                                           [](goro::context c) { return quick(c, 2); }));
    CHECK(r == std::tuple<int, int>{1, 2});
    CHECK_THROWS_WITH(goro::block_on(goro::when_all(goro::background(), [](goro::context c) { return fails_after(c, 2); },
                                                    [](goro::context c) { return canceled_throws(c); },
                                                    [](goro::context c) { return until_cancelled(c); })),
                      "the first failure");
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("when_any returns the first to end and cancels the losers through the context", "[spawn]") {
    auto r = goro::block_on(goro::when_any(goro::background(), [](goro::context c) { return until_cancelled(c); },
                                           [](goro::context c) { return quick(c, 42); },
                                           [](goro::context c) { return canceled_throws(c); }));
    REQUIRE(r.index() == 1);
    CHECK(std::get<1>(r) == 42);

    // The winner's exception is rethrown.
    CHECK_THROWS_WITH(goro::block_on(goro::when_any(goro::background(), [](goro::context c) { return until_cancelled(c); },
                                                    [](goro::context c) { return fails_after(c, 1); })),
                      "the first failure");

    // A cancelled parent cancels them all; the first to notice wins.
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    cancel();
    auto r2 = goro::block_on(goro::when_any(ctx, [](goro::context c) { return until_cancelled(c); }));
    CHECK(std::get<0>(r2) == "context canceled");

    // Over plain tasks: the first to end wins; the others are awaited.
    goro::channel<int> ch(1);
    auto r3 = goro::block_on(goro::when_any(parked_until(ch), [](goro::channel<int> c) -> goro::task<int> {
        co_await goro::sleep_for(1ms);
        co_await c.send(5);
        co_return 1;
    }(ch)));
    CHECK(r3.index() <= 1);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("when_all / when_any refuse empty and already-run tasks", "[spawn]") {
    goro::task<int> empty;
    CHECK_THROWS_WITH(goro::block_on(goro::when_all(std::move(empty), square(1))), Catch::Contains("goro::when_all: a task is empty"));
    CHECK_THROWS_AS(goro::spawn(goro::task<int>{}), goro::usage_error);
}

namespace {
// What the compilers can check about misuse.
template <class M>
concept lvalue_await_of_guard = requires(M& m) { m.scoped_lock().unlock(); };
}  // namespace

TEST_CASE("an awaitable is not a lock guard; the marks are in place", "[spawn]") {
    // `auto g = m.scoped_lock();` is the operation, not a guard: it cannot be
    // unlocked, and, never used, it is an unused variable (warn_unused):
    // an error under -Werror.
    STATIC_REQUIRE_FALSE(lvalue_await_of_guard<goro::mutex>);
    STATIC_REQUIRE(std::is_same_v<decltype(std::declval<goro::mutex::scoped_lock_operation&>().await_resume()),
                                  goro::lock_guard>);
}

}  // namespace tests_spawn
