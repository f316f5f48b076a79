// goro::task<T>: values, exceptions, move-only results, laziness, deep chains.
#include <catch2/catch.hpp>

#include <coroutine>
#include <memory>
#include <stdexcept>
#include <string>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_task {

namespace {

goro::task<int> answer() { co_return 42; }
goro::task<std::string> text(int n) { co_return std::string(static_cast<std::size_t>(n), 'x'); }
goro::task<int> add(int a, int b) { co_return co_await answer() - 42 + a + b; }
goro::task<> fails() {
    throw std::runtime_error("boom");
    co_return;
}
goro::task<int> fails_int() {
    co_await goro::yield();
    throw std::logic_error("bad");
}
goro::task<std::unique_ptr<int>> move_only(int v) { co_return std::make_unique<int>(v); }

goro::task<int> one() { co_return 1; }
goro::task<long> many_sequential(int n) {
    long s = 0;
    for (int i = 0; i < n; ++i) s += co_await one();
    co_return s;
}
goro::task<long> nested(int n) {
    if (n == 0) co_return 0;
    co_return 1 + co_await nested(n - 1);
}
goro::task<long> nested_yielding(int n) {
    if (n == 0) {
        co_await goro::yield();
        co_return 0;
    }
    co_return 1 + co_await nested_yielding(n - 1);
}

}  // namespace

TEST_CASE("task returns a value to its awaiter", "[task]") {
    CHECK(goro::block_on(answer()) == 42);
    CHECK(goro::block_on(add(1, 2)) == 3);
    CHECK(goro::block_on(text(5)) == "xxxxx");
}

TEST_CASE("task propagates exceptions to the awaiter", "[task]") {
    CHECK_THROWS_AS(goro::block_on(fails()), std::runtime_error);
    CHECK_THROWS_WITH(goro::block_on(fails_int()), "bad");
    auto catcher = []() -> goro::task<std::string> {
        try {
            co_await fails();
        } catch (const std::runtime_error& e) {
            co_return e.what();
        }
        co_return "not thrown";
    };
    CHECK(goro::block_on(catcher()) == "boom");
}

TEST_CASE("task supports move-only results", "[task]") {
    auto p = goro::block_on(move_only(7));
    REQUIRE(p);
    CHECK(*p == 7);
}

TEST_CASE("task is lazy and destroying an unstarted task frees it", "[task]") {
    goro_test::counted::alive = 0;
    bool ran = false;
    {
        auto t = [](goro_test::counted, bool& r) -> goro::task<> {
            r = true;
            co_return;
        }(goro_test::counted(1), ran);
        CHECK(goro_test::counted::alive == 1);  // the parameter copy lives in the frame
    }
    CHECK_FALSE(ran);
    CHECK(goro_test::counted::alive == 0);
}

TEST_CASE("a moved-from task is empty", "[task]") {
    auto t = answer();
    auto u = std::move(t);
    CHECK_FALSE(static_cast<bool>(t));
    CHECK(static_cast<bool>(u));
    CHECK(goro::block_on(std::move(u)) == 42);
    goro::task<> v = fails();
    goro::task<> w = std::move(v);
    CHECK_THROWS_AS(goro::go(std::move(v)), goro::usage_error);
}

TEST_CASE("a million sequential awaits do not grow the stack", "[task][deep]") {
    CHECK(goro::block_on(many_sequential(1'000'000)) == 1'000'000);
}

TEST_CASE("a million nested awaits do not overflow the stack", "[task][deep]") {
    CHECK(goro::block_on(nested(1'000'000)) == 1'000'000);
    CHECK(goro::block_on(nested_yielding(100'000)) == 100'000);
}

namespace {

// An awaiter that counts its copies and moves and hands back a reference to
// a member, to show what await_transform does with it.
struct counting_awaiter {
    static inline int copies = 0;
    int value = 7;
    bool suspend_result = false;  // false: await_suspend resumes at once
    counting_awaiter() = default;
    counting_awaiter(const counting_awaiter& o) : value(o.value), suspend_result(o.suspend_result) { ++copies; }
    counting_awaiter(counting_awaiter&& o) noexcept : value(o.value), suspend_result(o.suspend_result) { ++copies; }
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<>) noexcept { return suspend_result; }
    int& await_resume() noexcept { return value; }
};

// An awaitable with operator co_await: goro must still call it.
struct via_operator {
    int v;
    auto operator co_await() const noexcept {
        struct aw {
            int v;
            bool await_ready() const noexcept { return true; }
            void await_suspend(std::coroutine_handle<>) const noexcept {}
            int await_resume() const noexcept { return v * 2; }
        };
        return aw{v};
    }
};

// An awaiter whose await_suspend returns a handle: symmetric transfer back
// to the awaiting frame itself.
struct transfer_awaiter {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) const noexcept { return h; }
    int await_resume() const noexcept { return 5; }
};

goro::task<int> awaits_in_place() {
    counting_awaiter named;
    int& r = co_await named;  // the reference is to `named` itself, not to a copy
    r = 11;
    int a = named.value;
    int b = co_await counting_awaiter{};  // a temporary, awaited where it is
    int c = co_await via_operator{4};
    int d = co_await transfer_awaiter{};
    co_return a + b + c + d;
}

}  // namespace

TEST_CASE("co_await uses the awaiter in place, without copying it", "[task]") {
    counting_awaiter::copies = 0;
    CHECK(goro::block_on(awaits_in_place()) == 11 + 7 + 8 + 5);
    CHECK(counting_awaiter::copies == 0);
}

}  // namespace tests_task
