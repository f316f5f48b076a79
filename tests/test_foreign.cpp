// Foreign awaitables inside goro tasks, and goro tasks awaited by foreign coroutines.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <stdexcept>
#include <string>
#include <thread>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_foreign {

using namespace std::chrono_literals;

namespace {

bool on_worker() { return goro::detail::tls_worker != nullptr; }

/// Resumes the awaiting coroutine from a plain std::thread (another
/// library's event loop, say), after `delay`.
struct thread_resumer {
    std::chrono::milliseconds delay{0};
    int value = 0;
    std::thread th{};
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
        th = std::thread([this, h] {
            std::this_thread::sleep_for(delay);
            value = 7;
            h.resume();  // a foreign resumption; goro must bring the task back to the pool
        });
    }
    int await_resume() {
        th.join();  // the thread has resumed us: it is ending
        return value;
    }
};

/// Resumes the awaiting coroutine inside await_suspend, on the same thread.
struct sync_resumer {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { h.resume(); }
    int await_resume() const noexcept { return 3; }
};

struct declines {  // await_suspend returns false: do not suspend at all
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<>) const noexcept { return false; }
    int await_resume() const noexcept { return 4; }
};

struct hands_back {  // returns the handle it was given: resume it now
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) const noexcept { return h; }
    int await_resume() const noexcept { return 5; }
};

/// Returns noop_coroutine (suspend) and keeps the handle for a thread.
struct hands_noop {
    std::thread th{};
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
        th = std::thread([h] { h.resume(); });
        return std::noop_coroutine();
    }
    int await_resume() {
        th.join();
        return 6;
    }
};

struct throws_in_suspend {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<>) { throw std::runtime_error("foreign: refused"); }
    int await_resume() const noexcept { return 0; }
};

/// An event another thread sets; the waiter is resumed on that thread.
struct foreign_event {
    std::mutex mu;
    std::coroutine_handle<> waiter{};
    bool set_ = false;
    std::atomic<bool> waiting{false};

    struct awaiter {
        foreign_event& e;
        bool await_ready() const noexcept { return false; }
        bool await_suspend(std::coroutine_handle<> h) {
            std::lock_guard g(e.mu);
            if (e.set_) return false;
            e.waiter = h;
            e.waiting.store(true);
            return true;
        }
        void await_resume() const noexcept {}
    };
    awaiter operator co_await() noexcept { return {*this}; }
    void set() {
        std::coroutine_handle<> h;
        {
            std::lock_guard g(mu);
            set_ = true;
            h = std::exchange(waiter, {});
        }
        if (h) h.resume();
    }
};

goro::task<int> after_thread() {
    const std::uint64_t id = goro::this_task_id();
    int v = co_await thread_resumer{5ms};
    CHECK(on_worker());
    CHECK(goro::this_task_id() == id);
    co_await goro::sleep_for(1ms);  // a goro awaitable works after it
    co_await goro::yield();
    co_return v;
}

goro::task<int> mixed() {
    int a = co_await sync_resumer{};
    CHECK(on_worker());
    int b = co_await declines{};
    int c = co_await hands_back{};
    int d = co_await hands_noop{};
    CHECK(on_worker());
    co_await goro::sleep_for(1ms);
    co_return a + b + c + d;
}

goro::task<std::string> catches() {
    std::string what;
    try {
        co_await throws_in_suspend{};
    } catch (const std::runtime_error& e) {
        what = e.what();
    }
    CHECK(on_worker());
    co_await goro::sleep_for(1ms);  // still a task: not parked, back in control
    co_return what;
}

goro::task<> parked_on_foreign(foreign_event& e) {
    co_await e;
    co_await goro::sleep_for(1ms);
}

goro::task<int> many_from_threads(int n) {
    int sum = 0;
    for (int i = 0; i < n; ++i) sum += co_await thread_resumer{0ms};
    co_return sum;
}

/// A coroutine type that is not goro's: starts eagerly, records its result.
struct plain_co {
    struct promise_type {
        std::atomic<bool> finished{false};  // set once suspended at the end: then the frame may be destroyed
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
                h.promise().finished.store(true, std::memory_order_release);
            }
            void await_resume() const noexcept {}
        };
        plain_co get_return_object() { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        final_awaiter final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> h;
};

goro::task<std::uint64_t> task_id_after_sleep() {
    co_await goro::sleep_for(2ms);
    co_return goro::this_task_id();
}

goro::task<int> throws_late() {
    co_await goro::yield();
    throw std::logic_error("from the task");
}

plain_co plain_awaits(std::atomic<int>& state, std::uint64_t& id, std::string& err) {
    id = co_await task_id_after_sleep();  // runs on the pool as a task of its own
    try {
        co_await throws_late();
    } catch (const std::logic_error& e) {
        err = e.what();
    }
    state.store(1, std::memory_order_release);
}

}  // namespace

TEST_CASE("a foreign awaitable resumed from a plain thread brings the task back onto the pool", "[foreign]") {
    CHECK(goro::block_on(after_thread()) == 7);
    CHECK(goro::block_on(many_from_threads(50)) == 350);
    // Directly in block_on, too.
    CHECK(goro::block_on(thread_resumer{1ms}) == 7);
}

TEST_CASE("foreign await_suspend returning void, bool or a handle, or resuming inline", "[foreign]") {
    CHECK(goro::block_on(mixed()) == 3 + 4 + 5 + 6);
}

TEST_CASE("an exception from a foreign await_suspend reaches the task, which is not parked", "[foreign]") {
    CHECK(goro::block_on(catches()) == "foreign: refused");
}

TEST_CASE("a task parked on a foreign awaitable is dumped [external] with its stack", "[foreign]") {
    foreign_event e;
    goro::wait_group wg(1);
    goro::go([&]() -> goro::task<> {
        co_await parked_on_foreign(e);
        wg.done();
    });
    REQUIRE(goro_test::eventually([&] { return e.waiting.load(); }));
    std::string dump;
    REQUIRE(goro_test::eventually([&] {
        dump = goro::goroutine_profile(2);
        return dump.find("[external") != std::string::npos;
    }));
    INFO(dump);
    CHECK(dump.find("parked_on_foreign") != std::string::npos);
    std::thread t([&] { e.set(); });  // resumed on a plain thread
    goro::block_on(wg.wait());
    t.join();
}

TEST_CASE("a task waiting on a plain thread longer than the grace period is no deadlock", "[foreign]") {
    const auto grace = goro::deadlock_grace();
    goro::set_deadlock_grace(200ms);
    // No external_wakeup_guard: the foreign wait itself tells the detector
    // that the world outside will answer. (Without it: deadlock_error after 200 ms.)
    int v = 0;
    CHECK_NOTHROW(v = goro::block_on(thread_resumer{1500ms}));
    CHECK(v == 7);
    goro::set_deadlock_grace(grace);
}

TEST_CASE("a coroutine that is not goro's can await a goro::task", "[foreign]") {
    std::atomic<int> state{0};
    std::uint64_t id = 0;
    std::string err;
    plain_co c = plain_awaits(state, id, err);
    REQUIRE(goro_test::eventually([&] { return c.h.promise().finished.load(std::memory_order_acquire); }));
    CHECK(state.load() == 1);
    CHECK(id != 0);  // the task ran on the pool, as a task
    CHECK(err == "from the task");
    c.h.destroy();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("goro's awaitables carry the goro tag; others do not", "[foreign]") {
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<goro::task<int>>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<goro::task<>&>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(goro::sleep_for(1ms))>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(goro::yield())>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(std::declval<goro::channel<int>&>().recv())>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(std::declval<goro::channel<int>&>().send(1))>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(goro::recv(std::declval<goro::channel<int>&>()))>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(goro::select(goro::recv(std::declval<goro::channel<int>&>())))>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(std::declval<goro::mutex&>().lock())>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(std::declval<goro::mutex&>().scoped_lock())>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(std::declval<goro::semaphore&>().acquire())>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(std::declval<goro::wait_group&>().wait())>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<decltype(std::declval<goro::context&>().done())>);
    STATIC_REQUIRE(goro::detail::is_goro_awaitable_v<goro::join_handle<int>&>);
    STATIC_REQUIRE_FALSE(goro::detail::is_goro_awaitable_v<thread_resumer>);
    STATIC_REQUIRE_FALSE(goro::detail::is_goro_awaitable_v<foreign_event&>);
    STATIC_REQUIRE_FALSE(goro::detail::is_goro_awaitable_v<std::suspend_never>);
}

}  // namespace tests_foreign
