// goro::semaphore: never more holders than permits, FIFO order of weighted
// waiters, one release waking all it satisfies, misuse, destruction.
#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <goro/sync/semaphore.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_semaphore {

using goro_test::eventually;
using goro_test::parked_count;
using goro_test::parked_reasons;

TEST_CASE("semaphore: never more holders than permits", "[semaphore]") {
    const int permits = 3, tasks = 32, rounds = 300;
    goro::semaphore sem(permits);
    std::atomic<int> in_use{0}, max_in_use{0}, finished{0};
    auto w = [](goro::semaphore& s, std::atomic<int>& u, std::atomic<int>& mx, std::atomic<int>& f, int r) -> goro::task<> {
        for (int i = 0; i < r; ++i) {
            co_await s.acquire();
            int now = u.fetch_add(1) + 1;
            int seen = mx.load();
            while (now > seen && !mx.compare_exchange_weak(seen, now)) {
            }
            if (i % 8 == 0) co_await goro::yield();
            u.fetch_sub(1);
            s.release();
        }
        f.fetch_add(1);
    };
    for (int i = 0; i < tasks; ++i) goro::go(w(sem, in_use, max_in_use, finished, rounds));
    REQUIRE(eventually([&] { return finished.load() == tasks; }, std::chrono::seconds(120)));
    CHECK(max_in_use.load() <= permits);
    CHECK(max_in_use.load() >= 1);
    CHECK(sem.available() == permits);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("semaphore: weighted waiters are served in FIFO order", "[semaphore]") {
    goro::semaphore sem(0);
    std::mutex mu;
    std::vector<int> order;
    auto w = [](goro::semaphore& s, std::int64_t n, int tag, std::mutex& m, std::vector<int>& o) -> goro::task<> {
        co_await s.acquire(n);
        std::lock_guard<std::mutex> lk(m);
        o.push_back(tag);
    };
    auto got = [&] {
        std::lock_guard<std::mutex> lk(mu);
        return order;
    };
    goro::go(w(sem, 3, 1, mu, order), {.name = "sem-fifo"});
    REQUIRE(eventually([&] { return parked_count("sem-fifo") == 1; }));
    goro::go(w(sem, 1, 2, mu, order), {.name = "sem-fifo"});
    REQUIRE(eventually([&] { return parked_count("sem-fifo") == 2; }));
    for (auto& r : parked_reasons("sem-fifo")) CHECK(r == "semacquire");

    sem.release(1);  // enough for the second waiter, but the first is ahead of it
    CHECK(sem.available() == 1);
    CHECK_FALSE(sem.try_acquire(1));  // newcomers do not overtake either
    CHECK(parked_count("sem-fifo") == 2);
    CHECK(got().empty());

    sem.release(2);  // the first waiter takes all three
    REQUIRE(eventually([&] { return got().size() == 1; }));
    CHECK(got() == std::vector<int>{1});
    CHECK(sem.available() == 0);
    CHECK(parked_count("sem-fifo") == 1);

    sem.release(1);
    REQUIRE(eventually([&] { return got().size() == 2; }));
    CHECK(got() == std::vector<int>{1, 2});
    CHECK(sem.available() == 0);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("semaphore: one release wakes every waiter it satisfies", "[semaphore]") {
    goro::semaphore sem(0);
    std::atomic<int> woken{0};
    auto w = [](goro::semaphore& s, std::atomic<int>& k) -> goro::task<> {
        co_await s.acquire(2);
        k.fetch_add(1);
    };
    for (int i = 0; i < 5; ++i) goro::go(w(sem, woken), {.name = "sem-many"});
    REQUIRE(eventually([&] { return parked_count("sem-many") == 5; }));
    sem.release(7);  // three waiters of two, one permit left over
    REQUIRE(eventually([&] { return woken.load() == 3; }));
    CHECK(sem.available() == 1);
    CHECK(parked_count("sem-many") == 2);
    sem.release(3);
    REQUIRE(eventually([&] { return woken.load() == 5; }));
    CHECK(sem.available() == 0);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("semaphore: try_acquire, zero counts and misuse", "[semaphore]") {
    goro::semaphore sem(2);
    CHECK(sem.try_acquire());
    CHECK(sem.try_acquire());
    CHECK_FALSE(sem.try_acquire());
    CHECK(sem.try_acquire(0));
    sem.release(2);
    CHECK_FALSE(sem.try_acquire(3));
    CHECK(sem.try_acquire(2));
    sem.release(2);
    auto body = [](goro::semaphore& s) -> goro::task<std::int64_t> {
        co_await s.acquire(0);
        co_await s.acquire(2);
        s.release(2);
        co_return s.available();
    };
    CHECK(goro::block_on(body(sem)) == 2);
    CHECK_THROWS_WITH(sem.acquire(-1), Catch::Contains("goro::semaphore::acquire: negative count"));
    CHECK_THROWS_WITH(sem.try_acquire(-1), Catch::Contains("goro::semaphore::try_acquire: negative count"));
    CHECK_THROWS_WITH(sem.release(-1), Catch::Contains("goro::semaphore::release: negative count"));
    CHECK_THROWS_AS(goro::semaphore(-1), goro::usage_error);
    CHECK(sem.available() == 2);
}

TEST_CASE("semaphore: destroying it with waiters wakes them with an error", "[semaphore]") {
    auto sem = std::make_unique<goro::semaphore>(0);
    std::atomic<int> errors{0};
    auto w = [](goro::semaphore& s, std::atomic<int>& e) -> goro::task<> {
        try {
            co_await s.acquire();
        } catch (const goro::semaphore_destroyed& ex) {
            if (std::string(ex.what()).find("goro::semaphore::acquire") != std::string::npos) e.fetch_add(1);
        }
    };
    for (int i = 0; i < 2; ++i) goro::go(w(*sem, errors), {.name = "sem-orphan"});
    REQUIRE(eventually([&] { return parked_count("sem-orphan") == 2; }));
    sem.reset();
    REQUIRE(eventually([&] { return errors.load() == 2; }));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("semaphore: a permit releases its permits when it goes, moves, and releases early", "[semaphore]") {
    goro::semaphore sem(3);
    auto body = [](goro::semaphore& s) -> goro::task<int> {
        int score = 0;
        {
            auto p = co_await s.scoped_acquire(2);
            score += p.owns() && p.count() == 2 && s.available() == 1;
            goro::semaphore::permit q = std::move(p);
            score += !p && q.count() == 2 && p.count() == 0;
            auto r = co_await s.scoped_acquire();
            score += s.available() == 0;
            r.release();
            score += !r && s.available() == 1;
        }
        score += s.available() == 3;  // q released its 2 at scope exit
        {
            auto t = s.try_scoped_acquire(3);
            auto u = s.try_scoped_acquire(1);
            score += bool(t) && !u && s.available() == 0;
        }
        score += s.available() == 3;
        co_return score;
    };
    CHECK(goro::block_on(body(sem)) == 7);
    goro::semaphore::permit empty;
    CHECK_THROWS_WITH(empty.release(), Catch::Contains("goro::semaphore::permit::release"));
    CHECK_THROWS_WITH((void)sem.scoped_acquire(-1), Catch::Contains("goro::semaphore::scoped_acquire: negative count"));
}

TEST_CASE("semaphore: a task parked in scoped_acquire gets its permit when another goes out of scope", "[semaphore]") {
    goro::semaphore sem(1);
    goro_test::gate hold;
    std::atomic<int> got{0};
    auto holder = [](goro::semaphore& s, goro_test::gate& g) -> goro::task<> {
        auto p = co_await s.scoped_acquire();
        co_await g.wait();
    };
    auto waiter = [](goro::semaphore& s, std::atomic<int>& k) -> goro::task<> {
        auto p = co_await s.scoped_acquire();
        k.fetch_add(1);
    };
    goro::go(holder(sem, hold), {.name = "sem-permit-holder"});
    REQUIRE(eventually([&] { return parked_count("sem-permit-holder") == 1; }));
    goro::go(waiter(sem, got), {.name = "sem-permit-waiter"});
    REQUIRE(eventually([&] { return parked_count("sem-permit-waiter") == 1; }));
    CHECK(parked_reasons("sem-permit-waiter")[0] == "semacquire");
    hold.open();
    REQUIRE(eventually([&] { return got.load() == 1; }));
    CHECK(goro_test::tasks_drained());
    CHECK(sem.available() == 1);
}

}  // namespace tests_semaphore
