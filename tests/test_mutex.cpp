// goro::mutex: exclusion, FIFO hand-off, misuse, wait reasons.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <goro/sync/mutex.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_mutex {

using goro_test::eventually;
using goro_test::parked_count;
using goro_test::parked_reasons;

namespace {


goro::task<> increment_locked(goro::mutex& m, long& counter, int times, std::atomic<int>& finished) {
    for (int i = 0; i < times; ++i) {
        co_await m.lock();
        long v = counter;
        if (i % 64 == 0) co_await goro::yield();  // hold the mutex across a suspension: others park
        counter = v + 1;
        m.unlock();
    }
    finished.fetch_add(1);
}

goro::task<> increment_scoped(goro::mutex& m, long& counter, int times, std::atomic<int>& finished) {
    for (int i = 0; i < times; ++i) {
        auto g = co_await m.scoped_lock();
        long v = counter;
        if (i % 64 == 0) co_await goro::yield();
        counter = v + 1;
    }
    finished.fetch_add(1);
}

}  // namespace

// --- mutex -------------------------------------------------------------------

TEST_CASE("mutex: 8 tasks x 10,000 increments of a plain counter add up exactly", "[mutex]") {
    goro::mutex m;
    long counter = 0;
    std::atomic<int> finished{0};
    for (int i = 0; i < 8; ++i) goro::go(increment_locked(m, counter, 10000, finished));
    REQUIRE(eventually([&] { return finished.load() == 8; }, std::chrono::seconds(120)));
    REQUIRE(m.try_lock());  // also orders the read of counter after every task's writes
    CHECK(counter == 80000);
    m.unlock();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("mutex: scoped_lock guards exclude each other and unlock on scope exit", "[mutex]") {
    goro::mutex m;
    long counter = 0;
    std::atomic<int> finished{0};
    for (int i = 0; i < 8; ++i) goro::go(increment_scoped(m, counter, 10000, finished));
    REQUIRE(eventually([&] { return finished.load() == 8; }, std::chrono::seconds(120)));
    REQUIRE(m.try_lock());
    CHECK(counter == 80000);
    m.unlock();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("mutex: guard moves, unlocks early, and reports ownership", "[mutex]") {
    goro::mutex m;
    auto body = [](goro::mutex& mu) -> goro::task<bool> {
        auto g = co_await mu.scoped_lock();
        bool ok = g.owns_lock() && g.mutex() == &mu && mu.is_locked() && !mu.try_lock();
        goro::lock_guard moved = std::move(g);
        ok = ok && !g.owns_lock() && moved.owns_lock();
        moved.unlock();
        ok = ok && !moved.owns_lock() && !mu.is_locked();
        bool threw = false;
        try {
            moved.unlock();
        } catch (const goro::usage_error& e) {
            threw = std::string(e.what()).find("goro::lock_guard::unlock") != std::string::npos;
        }
        co_return ok && threw;
    };
    CHECK(goro::block_on(body(m)));
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("mutex: try_lock and unlock of an unlocked mutex", "[mutex]") {
    goro::mutex m;
    CHECK(m.try_lock());
    CHECK_FALSE(m.try_lock());
    m.unlock();
    CHECK_THROWS_WITH(m.unlock(), Catch::Contains("goro::mutex::unlock: unlock of an unlocked mutex"));
    CHECK_THROWS_AS(m.unlock(), goro::usage_error);
    CHECK(m.try_lock());
    m.unlock();
}

TEST_CASE("mutex: lock outside a task is a usage error", "[mutex]") {
    goro::mutex m;
    REQUIRE(m.try_lock());
    auto op = m.lock();
    CHECK_FALSE(op.await_ready());
    CHECK_THROWS_WITH(op.await_suspend(std::noop_coroutine()), Catch::Contains("goro::mutex::lock"));
    m.unlock();
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("mutex: waiters get the mutex in FIFO order, parked as sync.Mutex.Lock", "[mutex]") {
    goro::mutex m;
    std::mutex order_mu;
    std::vector<int> order;
    auto w = [](goro::mutex& mu, int i, std::mutex& om, std::vector<int>& o) -> goro::task<> {
        co_await mu.lock();
        {
            std::lock_guard<std::mutex> lk(om);
            o.push_back(i);
        }
        mu.unlock();
    };
    REQUIRE(m.try_lock());
    const int n = 10;
    for (int i = 0; i < n; ++i) {
        goro::go(w(m, i, order_mu, order), {.name = "mutex-fifo"});
        // Enqueue one at a time, so the queue order is known.
        REQUIRE(eventually([&] { return parked_count("mutex-fifo") == std::size_t(i + 1); }));
    }
    for (auto& r : parked_reasons("mutex-fifo")) CHECK(r == "sync.Mutex.Lock");
    m.unlock();
    REQUIRE(eventually([&] {
        std::lock_guard<std::mutex> lk(order_mu);
        return order.size() == std::size_t(n);
    }));
    std::vector<int> want(n);
    for (int i = 0; i < n; ++i) want[std::size_t(i)] = i;
    std::lock_guard<std::mutex> lk(order_mu);
    CHECK(order == want);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("mutex: unlock hands ownership to the waiter; newcomers cannot barge", "[mutex]") {
    goro::mutex m;
    goro_test::gate hold;
    std::atomic<bool> acquired{false};
    auto w = [](goro::mutex& mu, goro_test::gate& g, std::atomic<bool>& a) -> goro::task<> {
        co_await mu.lock();
        a.store(true);
        co_await g.wait();
        mu.unlock();
    };
    REQUIRE(m.try_lock());
    goro::go(w(m, hold, acquired), {.name = "mutex-handoff"});
    REQUIRE(eventually([&] { return parked_count("mutex-handoff") == 1; }));
    m.unlock();
    CHECK_FALSE(m.try_lock());  // already owned by the woken waiter, even before it runs
    REQUIRE(eventually([&] { return acquired.load(); }));
    CHECK(m.is_locked());
    hold.open();
    REQUIRE(eventually([&] { return !m.is_locked(); }));
    CHECK(m.try_lock());
    m.unlock();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("mutex: destroying it with waiters wakes them with an error", "[mutex]") {
    auto m = std::make_unique<goro::mutex>();
    REQUIRE(m->try_lock());
    std::atomic<int> errors{0};
    auto w = [](goro::mutex& mu, std::atomic<int>& e) -> goro::task<> {
        try {
            co_await mu.lock();
        } catch (const goro::mutex_destroyed& ex) {
            if (std::string(ex.what()).find("goro::mutex::lock") != std::string::npos) e.fetch_add(1);
        }
    };
    for (int i = 0; i < 2; ++i) goro::go(w(*m, errors), {.name = "mutex-orphan"});
    REQUIRE(eventually([&] { return parked_count("mutex-orphan") == 2; }));
    m.reset();
    REQUIRE(eventually([&] { return errors.load() == 2; }));
    CHECK(goro_test::tasks_drained());
}

}  // namespace tests_mutex
