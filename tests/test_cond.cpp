// goro::cond: Go's sync.Cond — wait unlocks, parks and relocks; signal wakes
// one (FIFO), broadcast all; wait reason and its dump; misuse; destruction.
#include <catch2/catch.hpp>

#include <atomic>
#include <deque>
#include <sstream>
#include <string>
#include <vector>

#include <goro/sync/cond.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_cond {

using goro_test::eventually;
using goro_test::parked_reasons;

namespace {

/// Waits until `turn` reaches `mine`, then records `mine` (checking it holds m).
goro::task<> wait_for_turn(goro::mutex& m, goro::cond& cv, const int& turn, int mine, std::vector<int>& woke,
                           std::atomic<int>& not_held) {
    auto g = co_await m.scoped_lock();
    while (turn < mine) {
        co_await cv.wait();
        if (!m.is_locked()) not_held.fetch_add(1);
    }
    woke.push_back(mine);
}

goro::task<> wait_once(goro::mutex& m, goro::cond& cv, std::atomic<int>& woke) {
    auto g = co_await m.scoped_lock();
    co_await cv.wait();
    woke.fetch_add(1);
}

}  // namespace

TEST_CASE("cond: signal wakes the longest waiter, broadcast wakes all, each relocked", "[cond]") {
    goro::mutex m;
    goro::cond cv(m);
    std::atomic<int> woke{0};
    goro::task_options named{.name = "cond-waiter"};
    for (int i = 0; i < 5; ++i) {
        goro::go(wait_once(m, cv, woke), named);
        // One at a time, so their FIFO order is known.
        REQUIRE(eventually([&] { return parked_reasons("cond-waiter").size() == std::size_t(i) + 1; }));
    }
    for (auto& r : parked_reasons("cond-waiter")) CHECK(r == "sync.Cond.Wait");
    CHECK_FALSE(m.is_locked());  // every waiter released the mutex
    cv.signal();
    REQUIRE(eventually([&] { return woke.load() == 1; }));
    REQUIRE(eventually([&] { return parked_reasons("cond-waiter").size() == 4; }));
    cv.broadcast();
    REQUIRE(eventually([&] { return woke.load() == 5; }));
    CHECK(goro_test::tasks_drained());
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("cond: a signal with nobody waiting is not remembered", "[cond]") {
    goro::mutex m;
    goro::cond cv(m);
    cv.signal();
    cv.broadcast();
    std::atomic<int> woke{0};
    goro::go(wait_once(m, cv, woke), {.name = "cond-late"});
    REQUIRE(eventually([&] { return parked_reasons("cond-late").size() == 1; }));
    CHECK(woke.load() == 0);
    cv.signal();
    REQUIRE(eventually([&] { return woke.load() == 1; }));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("cond: a woken waiter holding nothing yet waits for the mutex (sync.Mutex.Lock)", "[cond]") {
    goro::mutex m;
    goro::cond cv(m);
    std::atomic<int> woke{0};
    goro::go(wait_once(m, cv, woke), {.name = "cond-relock"});
    REQUIRE(eventually([&] { return parked_reasons("cond-relock").size() == 1; }));
    REQUIRE(m.try_lock());
    cv.signal();  // signalled while the mutex is held: the waiter queues on the mutex
    auto r = parked_reasons("cond-relock");
    REQUIRE(r.size() == 1);
    CHECK(r[0] == "sync.Mutex.Lock");
    CHECK(woke.load() == 0);
    m.unlock();  // hands the mutex to it
    REQUIRE(eventually([&] { return woke.load() == 1; }));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("cond: wait in a loop sees each turn in order; wait returns holding the mutex", "[cond]") {
    goro::mutex m;
    goro::cond cv(m);
    int turn = 0;
    std::vector<int> woke;
    std::atomic<int> not_held{0};
    const int n = 8;
    for (int i = n; i >= 1; --i) goro::go(wait_for_turn(m, cv, turn, i, woke, not_held));
    auto advance = [](goro::mutex& mu, goro::cond& c, int& t, int n_) -> goro::task<> {
        for (int k = 1; k <= n_; ++k) {
            {
                auto g = co_await mu.scoped_lock();
                t = k;
            }
            c.broadcast();
            co_await goro::yield();
        }
    };
    goro::block_on(advance(m, cv, turn, n));
    REQUIRE(eventually([&] {
        if (!m.try_lock()) return false;
        bool all = woke.size() == std::size_t(n);
        m.unlock();
        return all;
    }));
    CHECK(not_held.load() == 0);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("cond: a goroutine dump shows sync.Cond.Wait", "[cond]") {
    goro::mutex m;
    goro::cond cv(m);
    std::atomic<int> woke{0};
    goro::go(wait_once(m, cv, woke), {.name = "cond-dump"});
    REQUIRE(eventually([&] { return parked_reasons("cond-dump").size() == 1; }));
    std::ostringstream os;
    goro::dump_goroutines(os, 2);
    CHECK(os.str().find("[sync.Cond.Wait") != std::string::npos);
    std::ostringstream os1;
    goro::dump_goroutines(os1, 1);
    CHECK(os1.str().find("wait_once") != std::string::npos);
    cv.broadcast();
    REQUIRE(eventually([&] { return woke.load() == 1; }));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("cond: wait without the mutex held throws; destroyed, waiters relock and throw", "[cond]") {
    goro::mutex m;
    std::atomic<int> misuse{0}, destroyed_held{0};
    {
        goro::cond cv(m);
        auto bad = [](goro::cond& c, std::atomic<int>& k) -> goro::task<> {
            try {
                co_await c.wait();
            } catch (const goro::usage_error& e) {
                if (std::string(e.what()).find("goro::cond::wait") != std::string::npos) k.fetch_add(1);
            }
        };
        goro::block_on(bad(cv, misuse));
        auto doomed = [](goro::mutex& mu, goro::cond& c, std::atomic<int>& k) -> goro::task<> {
            auto g = co_await mu.scoped_lock();
            try {
                co_await c.wait();
            } catch (const goro::cond_destroyed&) {
                if (mu.is_locked()) k.fetch_add(1);  // it resumed holding the mutex
            }
        };
        goro::task_options named{.name = "cond-doomed"};
        for (int i = 0; i < 3; ++i) goro::go(doomed(m, cv, destroyed_held), named);
        REQUIRE(eventually([&] { return parked_reasons("cond-doomed").size() == 3; }));
    }
    REQUIRE(eventually([&] { return destroyed_held.load() == 3; }));
    CHECK(misuse.load() == 1);
    CHECK(goro_test::tasks_drained());
    CHECK_FALSE(m.is_locked());
}

TEST_CASE("cond: a bounded producer/consumer queue passes every item exactly once (stress)", "[cond][stress]") {
    goro::mutex m;
    goro::cond not_empty(m), not_full(m);
    std::deque<int> q;
    const std::size_t cap = 4;
    const int producers = 3, consumers = 3, per_producer = 2000;
    std::atomic<long> sum{0};
    std::atomic<int> consumed{0}, finished{0};
    bool closed = false;
    auto producer = [&](int base) -> goro::task<> {
        for (int i = 0; i < per_producer; ++i) {
            auto g = co_await m.scoped_lock();
            while (q.size() >= cap) co_await not_full.wait();
            q.push_back(base + i);
            not_empty.signal();
        }
        finished.fetch_add(1);
    };
    auto consumer = [&]() -> goro::task<> {
        for (;;) {
            auto g = co_await m.scoped_lock();
            while (q.empty() && !closed) co_await not_empty.wait();
            if (q.empty()) break;
            int v = q.front();
            q.pop_front();
            not_full.signal();
            g.unlock();
            sum.fetch_add(v);
            consumed.fetch_add(1);
        }
        finished.fetch_add(1);
    };
    for (int c = 0; c < consumers; ++c) goro::go(consumer);
    for (int p = 0; p < producers; ++p) goro::go([&producer, p] { return producer(p * 100000); });
    REQUIRE(eventually([&] { return consumed.load() == producers * per_producer; }, std::chrono::seconds(120)));
    auto close_all = [&]() -> goro::task<> {
        {
            auto g = co_await m.scoped_lock();
            closed = true;
        }
        not_empty.broadcast();
    };
    goro::block_on(close_all());
    REQUIRE(eventually([&] { return finished.load() == producers + consumers; }, std::chrono::seconds(120)));
    long want = 0;
    for (int p = 0; p < producers; ++p)
        for (int i = 0; i < per_producer; ++i) want += p * 100000 + i;
    CHECK(sum.load() == want);
    CHECK(goro_test::tasks_drained());
}

}  // namespace tests_cond
