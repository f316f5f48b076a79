// goro::rw_mutex: shared readers, exclusive writers, Go's pending-writer rule,
// wait reasons (and their dump), misuse, destruction.
#include <catch2/catch.hpp>

#include <atomic>
#include <sstream>
#include <string>
#include <vector>

#include <goro/sync/rw_mutex.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_rw_mutex {

using goro_test::eventually;
using goro_test::parked_reasons;

namespace {

goro::task<> hold_shared(goro::rw_mutex& m, goro_test::gate& g, std::atomic<int>& in) {
    auto guard = co_await m.scoped_lock_shared();
    in.fetch_add(1);
    co_await g.wait();
    in.fetch_sub(1);
}

goro::task<> hold_exclusive(goro::rw_mutex& m, goro_test::gate& g, std::atomic<int>& in) {
    auto guard = co_await m.scoped_lock();
    in.fetch_add(1);
    co_await g.wait();
    in.fetch_sub(1);
}

goro::task<> take_shared(goro::rw_mutex& m, std::atomic<int>& got) {
    co_await m.lock_shared();
    got.fetch_add(1);
    m.unlock_shared();
}

}  // namespace

TEST_CASE("rw_mutex: readers share the lock; a writer waits for all of them", "[rw_mutex]") {
    goro::rw_mutex m;
    goro_test::gate readers_go, writer_go;
    std::atomic<int> readers{0}, writers{0};
    goro::task_options rn{.name = "rw-reader"}, wn{.name = "rw-writer"};
    for (int i = 0; i < 4; ++i) goro::go(hold_shared(m, readers_go, readers), rn);
    REQUIRE(eventually([&] { return readers.load() == 4; }));  // four readers in at once
    CHECK_FALSE(m.try_lock());
    CHECK(m.try_lock_shared());  // no writer waits yet: a reader may join
    m.unlock_shared();
    goro::go(hold_exclusive(m, writer_go, writers), wn);
    REQUIRE(eventually([&] { return parked_reasons("rw-writer").size() == 1; }));
    CHECK(parked_reasons("rw-writer")[0] == "sync.RWMutex.Lock");  // waits for the readers to leave
    CHECK(writers.load() == 0);
    readers_go.open();
    REQUIRE(eventually([&] { return writers.load() == 1; }));
    CHECK(readers.load() == 0);
    CHECK_FALSE(m.try_lock_shared());
    writer_go.open();
    REQUIRE(goro_test::tasks_drained());
    CHECK(m.try_lock());
    m.unlock();
}

TEST_CASE("rw_mutex: a pending writer blocks new readers (Go's rule), who get in after it", "[rw_mutex]") {
    goro::rw_mutex m;
    goro_test::gate first_reader_go, writer_go;
    std::atomic<int> readers{0}, writers{0}, late{0};
    goro::go(hold_shared(m, first_reader_go, readers), {.name = "rw-first-reader"});
    REQUIRE(eventually([&] { return readers.load() == 1; }));
    goro::go(hold_exclusive(m, writer_go, writers), {.name = "rw-pending-writer"});
    REQUIRE(eventually([&] { return parked_reasons("rw-pending-writer").size() == 1; }));
    // The writer is pending: a new reader parks even though only readers hold the lock.
    CHECK_FALSE(m.try_lock_shared());
    goro::task_options ln{.name = "rw-late-reader"};
    for (int i = 0; i < 3; ++i) goro::go(take_shared(m, late), ln);
    REQUIRE(eventually([&] { return parked_reasons("rw-late-reader").size() == 3; }));
    for (auto& r : parked_reasons("rw-late-reader")) CHECK(r == "sync.RWMutex.RLock");
    CHECK(late.load() == 0);
    first_reader_go.open();  // the last reader out hands the lock to the writer
    REQUIRE(eventually([&] { return writers.load() == 1; }));
    CHECK(late.load() == 0);  // still behind the writer
    writer_go.open();         // its unlock admits every parked reader
    REQUIRE(eventually([&] { return late.load() == 3; }));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("rw_mutex: readers parked behind a writer go before the next writer", "[rw_mutex]") {
    goro::rw_mutex m;
    goro_test::gate w1_go, w2_go, readers_go;
    std::atomic<int> w1{0}, w2{0}, readers{0};
    goro::go(hold_exclusive(m, w1_go, w1), {.name = "rw-w1"});
    REQUIRE(eventually([&] { return w1.load() == 1; }));
    goro::go(hold_exclusive(m, w2_go, w2), {.name = "rw-w2"});
    REQUIRE(eventually([&] { return parked_reasons("rw-w2").size() == 1; }));
    // Behind another writer, Go's writer waits in the RWMutex's inner mutex.
    CHECK(parked_reasons("rw-w2")[0] == "sync.Mutex.Lock");
    goro::task_options rn{.name = "rw-r"};
    for (int i = 0; i < 2; ++i) goro::go(hold_shared(m, readers_go, readers), rn);
    REQUIRE(eventually([&] { return parked_reasons("rw-r").size() == 2; }));
    w1_go.open();
    // The readers are admitted; w2 now waits for them as the pending writer.
    REQUIRE(eventually([&] { return readers.load() == 2; }));
    REQUIRE(eventually([&] {
        auto r = parked_reasons("rw-w2");
        return r.size() == 1 && r[0] == "sync.RWMutex.Lock";
    }));
    CHECK(w2.load() == 0);
    readers_go.open();
    REQUIRE(eventually([&] { return w2.load() == 1; }));
    w2_go.open();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("rw_mutex: a goroutine dump shows sync.RWMutex.RLock and sync.RWMutex.Lock", "[rw_mutex]") {
    goro::rw_mutex m;
    goro_test::gate reader_go, writer_go;
    std::atomic<int> readers{0}, writers{0}, late{0};
    goro::go(hold_shared(m, reader_go, readers), {.name = "rw-dump-reader"});
    REQUIRE(eventually([&] { return readers.load() == 1; }));
    goro::go(hold_exclusive(m, writer_go, writers), {.name = "rw-dump-writer"});
    REQUIRE(eventually([&] { return parked_reasons("rw-dump-writer").size() == 1; }));
    goro::go(take_shared(m, late), {.name = "rw-dump-late"});
    REQUIRE(eventually([&] { return parked_reasons("rw-dump-late").size() == 1; }));
    std::ostringstream os;
    goro::dump_goroutines(os, 2);
    const std::string dump = os.str();
    CHECK(dump.find("[sync.RWMutex.Lock") != std::string::npos);
    CHECK(dump.find("[sync.RWMutex.RLock") != std::string::npos);
    reader_go.open();
    REQUIRE(eventually([&] { return writers.load() == 1; }));
    writer_go.open();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("rw_mutex: misuse throws naming the operation; guards release", "[rw_mutex]") {
    goro::rw_mutex m;
    CHECK_THROWS_WITH(m.unlock(), Catch::Contains("goro::rw_mutex::unlock"));
    CHECK_THROWS_WITH(m.unlock_shared(), Catch::Contains("goro::rw_mutex::unlock_shared"));
    auto body = [](goro::rw_mutex& mu) -> goro::task<int> {
        int score = 0;
        {
            auto g = co_await mu.scoped_lock();
            score += g.owns_lock() && !mu.try_lock_shared();
            auto moved = std::move(g);
            score += !g.owns_lock() && moved.mutex() == &mu;
            moved.unlock();
            score += !moved.owns_lock() && mu.try_lock_shared();
            mu.unlock_shared();
        }
        {
            auto r1 = co_await mu.scoped_lock_shared();
            auto r2 = co_await mu.scoped_lock_shared();
            score += !mu.try_lock();
        }
        score += mu.try_lock();  // both guards gone
        mu.unlock();
        co_return score;
    };
    CHECK(goro::block_on(body(m)) == 5);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("rw_mutex: destroyed with tasks parked, they wake with rw_mutex_destroyed", "[rw_mutex]") {
    std::atomic<int> threw{0};
    auto waiter = [](goro::rw_mutex& mu, bool shared, std::atomic<int>& t) -> goro::task<> {
        try {
            if (shared) co_await mu.lock_shared();
            else co_await mu.lock();
        } catch (const goro::rw_mutex_destroyed&) {
            t.fetch_add(1);
        }
    };
    {
        goro::rw_mutex m;
        REQUIRE(m.try_lock());
        goro::task_options wn{.name = "rw-doomed"};
        goro::go(waiter(m, true, threw), wn);
        goro::go(waiter(m, false, threw), wn);
        goro::go(waiter(m, true, threw), wn);
        REQUIRE(eventually([&] { return parked_reasons("rw-doomed").size() == 3; }));
    }
    REQUIRE(eventually([&] { return threw.load() == 3; }));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("rw_mutex: readers and writers at random keep the invariant (bounded stress)", "[rw_mutex][stress]") {
    goro::rw_mutex m;
    long a = 0, b = 0;  // writers keep a == b; readers check it
    std::atomic<int> torn{0}, finished{0}, concurrent_readers{0}, max_readers{0};
    auto writer = [&](int rounds) -> goro::task<> {
        for (int i = 0; i < rounds; ++i) {
            auto g = co_await m.scoped_lock();
            ++a;
            if (i % 16 == 0) co_await goro::yield();
            ++b;
        }
        finished.fetch_add(1);
    };
    auto reader = [&](int rounds) -> goro::task<> {
        for (int i = 0; i < rounds; ++i) {
            auto g = co_await m.scoped_lock_shared();
            int now = concurrent_readers.fetch_add(1) + 1;
            int seen = max_readers.load();
            while (now > seen && !max_readers.compare_exchange_weak(seen, now)) {
            }
            if (a != b) torn.fetch_add(1);
            if (i % 8 == 0) co_await goro::yield();
            if (a != b) torn.fetch_add(1);
            concurrent_readers.fetch_sub(1);
        }
        finished.fetch_add(1);
    };
    const int writers = 3, readers = 6, rounds = 2000;
    for (int i = 0; i < writers; ++i) goro::go([&] { return writer(rounds); });
    for (int i = 0; i < readers; ++i) goro::go([&] { return reader(rounds); });
    REQUIRE(eventually([&] { return finished.load() == writers + readers; }, std::chrono::seconds(120)));
    CHECK(torn.load() == 0);
    REQUIRE(m.try_lock());  // orders the reads below after every writer
    CHECK(a == long(writers) * rounds);
    CHECK(b == a);
    m.unlock();
    CHECK(goro_test::tasks_drained());
}

}  // namespace tests_rw_mutex
