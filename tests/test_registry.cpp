// The registry: counts, unique ids, spawn sites, parents, names, site chains.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_registry {

using goro_test::eventually;

namespace {

goro::task<> nothing() { co_return; }

goro::task<> record_id(std::vector<std::uint64_t>& ids, int i, std::atomic<int>& done) {
    ids[static_cast<std::size_t>(i)] = goro::this_task_id();
    done.fetch_add(1);
    co_return;
}

int parked_line = 0;
int inner_line = 0;
int spawn_line = 0;

goro::task<> inner_wait(goro_test::gate& g) {
    inner_line = __LINE__ + 1;
    co_await g.wait();
}

goro::task<> outer_wait(goro_test::gate& g) {
    parked_line = __LINE__ + 1;
    co_await inner_wait(g);
}

struct seen_task {
    std::uint64_t id, parent;
    std::vector<goro::stack_frame> stack;
    goro::stack_frame created;
    std::string name;
    std::string state;
    std::string reason;
};

std::vector<seen_task> look() {
    std::vector<seen_task> out;
    auto& s = goro::detail::the_scheduler();
    goro_test::stop_whole_world();
    goro::detail::the_registry().for_each_locked([&](goro::task_header& h) {
        const char* r = h.wait_reason.load();
        out.push_back({h.id, h.cold().parent_id, goro::detail::stack_of(h), goro::detail::to_frame(h.cold().spawn_site),
                       h.cold().meta ? h.cold().meta->name : std::string(), goro::to_string(h.state.load()), r ? r : ""});
    });
    s.start_the_world();
    return out;
}

}  // namespace

TEST_CASE("the count returns to zero after 100,000 spawns", "[registry]") {
    REQUIRE(goro_test::tasks_drained());
    for (int i = 0; i < 100'000; ++i) goro::go(nothing());
    CHECK(goro_test::tasks_drained());
    CHECK(goro::num_goroutines() == 0);
}

TEST_CASE("task ids are unique", "[registry]") {
    const int n = 20'000;
    std::vector<std::uint64_t> ids(n, 0);
    std::atomic<int> done{0};
    auto spawn_all = [&]() -> goro::task<> {
        for (int i = 0; i < n; ++i) goro::go(record_id(ids, i, done));
        co_return;
    };
    goro::go(spawn_all);
    REQUIRE(eventually([&] { return done.load() == n; }));
    std::set<std::uint64_t> unique(ids.begin(), ids.end());
    CHECK(unique.size() == std::size_t(n));
    CHECK_FALSE(unique.count(0));
}

TEST_CASE("a parked task's site chain points at the co_await lines", "[registry]") {
    goro_test::gate g;
    spawn_line = __LINE__ + 1;
    goro::go(outer_wait(g), {.name = "waiter", .labels = {{"role", "test"}}});
    REQUIRE(eventually([&] { return g.parked() == 1; }));

    auto tasks = look();
    auto it = std::find_if(tasks.begin(), tasks.end(), [](const seen_task& t) { return t.name == "waiter"; });
    REQUIRE(it != tasks.end());
    CHECK(it->state == "waiting");
    CHECK(it->reason == "gate");
    REQUIRE(it->stack.size() == 2);
    CHECK(it->stack[0].line == unsigned(inner_line));
    CHECK(it->stack[1].line == unsigned(parked_line));
    CHECK_THAT(it->stack[0].function, Catch::Matches("(.*::)?inner_wait"));
    CHECK_THAT(it->stack[1].function, Catch::Matches("(.*::)?outer_wait"));
    CHECK_THAT(it->stack[0].file, Catch::EndsWith("test_registry.cpp"));
    CHECK(it->created.line == unsigned(spawn_line));
    CHECK_THAT(it->created.file, Catch::EndsWith("test_registry.cpp"));
    CHECK(it->parent == 0);  // spawned from a plain thread

    g.open();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("a task spawned by a task records its parent", "[registry]") {
    goro_test::gate g;
    std::atomic<std::uint64_t> parent_id{0};
    auto parent = [](goro_test::gate& gt, std::atomic<std::uint64_t>& pid) -> goro::task<> {
        pid.store(goro::this_task_id());
        goro::go(outer_wait(gt), {.name = "child"});
        co_return;
    };
    goro::go(parent(g, parent_id));
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    auto tasks = look();
    auto it = std::find_if(tasks.begin(), tasks.end(), [](const seen_task& t) { return t.name == "child"; });
    REQUIRE(it != tasks.end());
    CHECK(it->parent == parent_id.load());
    CHECK(it->parent != 0);
    g.open();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("a thread in block_on is listed while it waits", "[registry]") {
    goro_test::gate g;
    std::atomic<bool> finished{false};
    int call_line = 0;
    std::thread th([&] {
        call_line = __LINE__ + 1;
        goro::block_on(outer_wait(g));
        finished.store(true);
    });
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    auto tasks = look();
    REQUIRE(tasks.size() >= 1);
    auto it = std::find_if(tasks.begin(), tasks.end(), [](const seen_task& t) {
        return t.stack.size() == 3;
    });
    REQUIRE(it != tasks.end());
    CHECK(it->stack[1].line == unsigned(parked_line));
    CHECK(it->stack[2].line == unsigned(call_line));  // the bottom frame is the block_on call
    g.open();
    th.join();
    CHECK(finished.load());
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("a task's header is small and its name outlives it in a snapshot", "[registry]") {
    // One line that the running core touches; the rest beside it in a slab.
    STATIC_REQUIRE(sizeof(goro::task_header) == 64);
    STATIC_REQUIRE(alignof(goro::task_header) == 64);
#if defined(__GNUC__) && !defined(__clang__)
    // g++: sites are one pointer (std::source_location), so a header and its
    // cold part take 88 bytes in a slab (no allocator word). A million parked
    // tasks carry a million headers: the memory goal was met with 96.
    STATIC_REQUIRE(sizeof(goro::task_header_cold) == 24);
    STATIC_REQUIRE(goro::detail::header_slab::count == 186);
#endif
    goro_test::gate g;
    goro::go([](goro_test::gate& gt) -> goro::task<> { co_await gt.wait(); }(g),
             goro::task_options{"named", {{"k", "v"}}});
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    goro::snapshot snap = goro::snapshot::take();
    g.open();
    REQUIRE(eventually([] { return goro_test::tasks_drained(); }));
    // The task is gone and its header may be reused; the record still holds the options.
    auto it = std::find_if(snap.tasks().begin(), snap.tasks().end(),
                           [](const goro::task_record& r) { return r.meta && r.meta->name == "named"; });
    REQUIRE(it != snap.tasks().end());
    REQUIRE(it->meta->labels.size() == 1);
    CHECK(it->meta->labels[0].first == "k");
    goro::task_meta copy = it->meta;
    CHECK(copy == it->meta);
    CHECK((*copy).name == "named");
    goro::task_meta moved = std::move(copy);
    CHECK_FALSE(copy);
    CHECK(moved == it->meta);
    moved.reset();
    CHECK_FALSE(moved);
    CHECK(it->meta->name == "named");
}

}  // namespace tests_registry
