// The model checker itself (tests/model/model.hpp): it must find the classic
// store-buffer outcome that x86 allows (Dekker: each thread stores its flag
// and then reads the other's, and both read 0), and must not find it when a
// fence forbids it, including the asymmetric pair (a compiler barrier on one
// side, membarrier on the other) that goro's protocols use. And the
// spin_on_loaded reduction keeps every end of a wait and every deadlock.
#include <catch2/catch.hpp>

#include <atomic>
#include <memory>

#include "model/model.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_model {

namespace {

goro_model::options unbounded() {
    goro_model::options o;
    o.preemption_bound = -1;
    return o;
}

enum class fence { none, light, seq_cst, heavy, seq_cst_store };

void apply(fence f) {
    switch (f) {
    case fence::none: break;
    case fence::light: goro_model::fence_light(); break;
    case fence::seq_cst: goro_model::fence_seq_cst(); break;
    case fence::heavy: goro_model::fence_heavy(); break;
    case fence::seq_cst_store: break;  // the store itself is seq_cst
    }
}

// Dekker's handshake; true when some schedule lets both threads read 0.
goro_model::result dekker(fence f0, fence f1, goro_model::options o = {}) {
    struct state {
        goro_model::atomic<int> x, y;
        int r0 = -1, r1 = -1;
    };
    return goro_model::explore(o, [f0, f1] {
        auto s = std::make_shared<state>();
        goro_model::thread([s, f0] {
            s->x.store(1, f0 == fence::seq_cst_store ? std::memory_order_seq_cst : std::memory_order_relaxed);
            apply(f0);
            s->r0 = s->y.load(std::memory_order_relaxed);
        });
        goro_model::thread([s, f1] {
            s->y.store(1, f1 == fence::seq_cst_store ? std::memory_order_seq_cst : std::memory_order_relaxed);
            apply(f1);
            s->r1 = s->x.load(std::memory_order_relaxed);
        });
        goro_model::finally([s] { goro_model::check(!(s->r0 == 0 && s->r1 == 0), "both threads read 0"); });
    });
}

}  // namespace

TEST_CASE("the model finds the store-buffer outcome of Dekker's handshake without fences", "[model]") {
    auto r = dekker(fence::none, fence::none);
    INFO(goro_model::describe(r));
    CHECK(r.failed);
    CHECK(r.message == "both threads read 0");
    // A compiler barrier changes nothing on the machine, nor in the model.
    CHECK(dekker(fence::light, fence::light).failed);
    // One full fence is not enough: the other side's store can still wait.
    CHECK(dekker(fence::seq_cst, fence::none).failed);
}

TEST_CASE("the model finds no violation of Dekker's handshake with fences", "[model]") {
    for (auto [f0, f1] : {std::pair{fence::seq_cst, fence::seq_cst}, std::pair{fence::seq_cst_store, fence::seq_cst_store},
                          std::pair{fence::light, fence::heavy}, std::pair{fence::heavy, fence::light},
                          std::pair{fence::heavy, fence::heavy}}) {
        auto r = dekker(f0, f1, unbounded());
        INFO(goro_model::describe(r));
        CHECK_FALSE(r.failed);
        CHECK(r.complete);
        CHECK(r.executions > 1);
    }
}

TEST_CASE("a failing schedule is reported and replays to the same failure", "[model]") {
    auto r = dekker(fence::none, fence::none);
    REQUIRE(r.failed);
    REQUIRE_FALSE(r.schedule.empty());
    goro_model::options o;
    o.replay = r.schedule;
    auto again = dekker(fence::none, fence::none, o);
    CHECK(again.failed);
    CHECK(again.executions == 1);
    CHECK(again.message == r.message);
}

TEST_CASE("random schedules are deterministic for a seed and find the store-buffer outcome", "[model]") {
    goro_model::options o;
    o.random_schedules = 2000;
    o.seed = 7;
    auto a = dekker(fence::none, fence::none, o);
    auto b = dekker(fence::none, fence::none, o);
    CHECK(a.failed);
    CHECK(a.executions == b.executions);
    CHECK(a.schedule == b.schedule);
    auto fenced = dekker(fence::light, fence::heavy, o);
    CHECK_FALSE(fenced.failed);
    CHECK(fenced.executions == 2000);
}

TEST_CASE("the model counts every interleaving within the preemption bound", "[model]") {
    // Two threads, each two RMWs on one counter: no buffers, so the schedules
    // are the interleavings: C(4, 2) = 6 without a bound.
    struct state {
        goro_model::atomic<int> n;
    };
    auto r = goro_model::explore(unbounded(), [] {
        auto s = std::make_shared<state>();
        for (int t = 0; t < 2; ++t)
            goro_model::thread([s] {
                s->n.fetch_add(1);
                s->n.fetch_add(1);
            });
        goro_model::finally([s] { goro_model::check(s->n.load() == 4, "an increment was lost"); });
    });
    INFO(goro_model::describe(r));
    CHECK_FALSE(r.failed);
    CHECK(r.complete);
    CHECK(r.executions == 6);
}

TEST_CASE("a wait that nothing can end is reported as a deadlock", "[model]") {
    struct state {
        goro_model::atomic<int> flag;
    };
    auto r = goro_model::explore({}, [] {
        auto s = std::make_shared<state>();
        goro_model::thread([s] {
            while (s->flag.load(std::memory_order_acquire) == 0) goro_model::spin();
        });
    });
    CHECK(r.failed);
    CHECK(r.message.find("deadlock") != std::string::npos);

    // ... and a wait that another thread's store ends, including a store that
    // sits in a store buffer until the explorer drains it, is not.
    auto ok = goro_model::explore(unbounded(), [] {
        auto s = std::make_shared<state>();
        goro_model::thread([s] {
            while (s->flag.load(std::memory_order_acquire) == 0) goro_model::spin();
        });
        goro_model::thread([s] { s->flag.store(1, std::memory_order_release); });
    });
    INFO(goro_model::describe(ok));
    CHECK_FALSE(ok.failed);
    CHECK(ok.complete);
    CHECK(ok.executions > 1);
}

TEST_CASE("spin_on_loaded: a wait wakes for a write to what it loaded only, and still sees every end and deadlock",
          "[model]") {
    // Thread 0 waits for `flag`; thread 1 writes `other` three times, then
    // `flag` (or, in the second shape, never `flag`).
    struct state {
        goro_model::atomic<int> flag, other;
    };
    auto shape = [](bool ends) {
        return [ends] {
            auto s = std::make_shared<state>();
            goro_model::thread([s] {
                while (s->flag.load(std::memory_order_acquire) == 0) goro_model::spin();
            });
            goro_model::thread([s, ends] {
                for (int i = 1; i <= 3; ++i) s->other.store(i, std::memory_order_relaxed);
                if (ends) s->flag.store(1, std::memory_order_release);
            });
        };
    };
    goro_model::options reduced = unbounded();
    reduced.spin_on_loaded = true;
    auto all = goro_model::explore(unbounded(), shape(true));
    auto few = goro_model::explore(reduced, shape(true));
    INFO("without: " << goro_model::describe(all) << "; with: " << goro_model::describe(few));
    CHECK_FALSE(all.failed);
    CHECK_FALSE(few.failed);
    CHECK(all.complete);
    CHECK(few.complete);
    CHECK(few.executions > 1);
    CHECK(few.executions < all.executions);  // the writes to `other` no longer wake the waiter

    auto stuck = goro_model::explore(reduced, shape(false));
    INFO(goro_model::describe(stuck));
    CHECK(stuck.failed);
    CHECK(stuck.message.find("deadlock") != std::string::npos);
}

}  // namespace tests_model
