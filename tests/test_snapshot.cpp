// goro::snapshot (goro/inspect/snapshot.hpp): every live task copied once,
// while the world runs (profile epochs), and when a stop of the world times out.
//
// The fallback is forced on purpose, two ways: a task that never returns to
// its worker (it spins, awaiting children that finish at once, so its `leaf`
// and sites keep changing), and the test hook stw_workers_run_through(), with
// which no worker stops at all and every worker goes on resuming tasks while
// the snapshot starts its epoch, as on a loaded machine.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <goro/inspect/dump.hpp>
#include <goro/inspect/snapshot.hpp>
#include <goro/sync/channel.hpp>
#include <goro/sync/wait_group.hpp>

#include "support.hpp"

using goro_test::eventually;
using namespace std::chrono_literals;

// Plain functions at namespace scope, so that g++ and clang++ name them alike.
static std::atomic<int> snap_started{0};

static goro::task<> snap_pinger(goro::channel<int> in, goro::channel<int> out, std::atomic<bool>& stop) {
    snap_started.fetch_add(1);
    while (!stop.load(std::memory_order_relaxed)) {
        co_await out.send(1);
        auto v = co_await in.recv();
        if (!v) break;
    }
    out.close();
}

static goro::task<> snap_ponger(goro::channel<int> in, goro::channel<int> out) {
    snap_started.fetch_add(1);
    while (auto v = co_await in.recv()) co_await out.send(*v);
}

static goro::task<> snap_short_lived(goro::wait_group& wg) {
    wg.done();
    co_return;
}

// Spawns rounds of 16 short-lived tasks, each round once the last has
// finished: steady churn in the registry, never an unbounded backlog that
// would leave the other tasks of the program waiting behind it.
static goro::task<> snap_spawner(std::atomic<bool>& stop) {
    snap_started.fetch_add(1);
    goro::wait_group wg;
    while (!stop.load(std::memory_order_relaxed)) {
        wg.add(16);
        for (int i = 0; i < 16; ++i) goro::go(snap_short_lived(wg));
        co_await wg.wait();
        co_await goro::yield();
    }
}

static goro::task<int> snap_child(int i) { co_return i; }

/// Never returns to its worker until released: each child it awaits finishes
/// at once, so the task's `leaf` and its frame's site change all the time.
static goro::task<> snap_hog(std::atomic<bool>& release, std::atomic<bool>& entered) {
    entered.store(true);
    long sum = 0;
    while (!release.load(std::memory_order_relaxed)) sum += co_await snap_child(1);
    (void)sum;
}

static goro::task<> snap_left(goro::channel<int> ch, std::atomic<int>& parked) {
    parked.fetch_add(1);
    for (;;) {
        auto v = co_await ch.recv();
        if (!v) break;
    }
}

static goro::task<> snap_right(goro::channel<int> ch, std::atomic<int>& parked) {
    parked.fetch_add(1);
    for (;;) {
        auto v = co_await ch.recv();
        if (!v) break;
    }
}

namespace {

/// Turns the run-through hook on for a scope.
struct run_through {
    run_through() { goro::detail::stw_workers_run_through().store(true); }
    ~run_through() { goro::detail::stw_workers_run_through().store(false); }
};

/// A program that keeps running and parking: ping-pong pairs, spawners of
/// short-lived tasks, and optionally a hog. Each long-lived task is named, so
/// it can be recognised when its stack is unavailable.
struct busy_program {
    static constexpr int pairs = 32;
    std::atomic<bool> stop{false}, release{false}, entered{false};
    bool hog;

    explicit busy_program(bool with_hog) : hog(with_hog) {
        snap_started.store(0);
        for (int i = 0; i < pairs; ++i) {
            goro::channel<int> a, b;
            goro::go(snap_pinger(a, b, stop), {.name = "pinger"});
            goro::go(snap_ponger(b, a), {.name = "ponger"});
        }
        goro::go(snap_spawner(stop), {.name = "spawner"});
        goro::go(snap_spawner(stop), {.name = "spawner"});
        if (hog) goro::go(snap_hog(release, entered), {.name = "hog"});
    }
    bool started() const {
        return snap_started.load() == 2 * pairs + 2 && (!hog || entered.load());
    }
    /// Waits for every task to start; if they do not, says what the pool
    /// looked like (seen once, under load: the tasks started only once the
    /// hog was released) before the test fails.
    bool wait_started() const {
        if (goro_test::eventually([&] { return started(); })) return true;
        auto& sch = goro::detail::the_scheduler();
        auto stuck = goro::stuck_workers();
        std::fprintf(stderr,
                     "busy_program: not started: %d of %d tasks counted, hog %s; workers: %u wanted, %d active, "
                     "%u live, %u stuck (longest %lld ms)\n",
                     snap_started.load(), 2 * pairs + 2, hog ? (entered.load() ? "entered" : "not entered") : "none",
                     sch.size(), sch.active_workers(), sch.live_workers(), stuck.count,
                     static_cast<long long>(stuck.longest.count() / 1000000));
        goro::dump_goroutines();
        return false;
    }
    /// The tasks refer to the flags: they must be gone before the flags are.
    ~busy_program() {
        stop.store(true);
        release.store(true);
        drained = goro_test::tasks_drained();
    }
    static inline bool drained = false;
};

/// One line per worker thread started: for a failed check about the tasks
/// they run.
void snap_print_workers() {
    auto& sch = goro::detail::the_scheduler();
    auto stuck = goro::stuck_workers();
    std::fprintf(stderr, "workers: %u wanted, %d active, %u live, %u stuck, %d idle, %zu in the global queue\n",
                 sch.size(), sch.active_workers(), sch.live_workers(), stuck.count, sch.idle_workers(),
                 sch.global_queue_size());
    for (const auto& w : sch.workers()) {
        const int st = w->status.load();
        const char* status = w->exited.load()                   ? "exited"
                             : st == goro::detail::ws_running ? "running"
                             : st == goro::detail::ws_idle    ? "idle or spare"
                             : st == goro::detail::ws_held    ? "held by a stop"
                                                              : "?";
        const goro::task_header* t = w->current.load();
        const std::string task = t ? "running task " + std::to_string(t->id) : std::string("no task");
        std::fprintf(stderr, "  worker %u: %s%s%s, %s, %llu resumes, %u queued%s\n", w->index, status,
                     w->stuck.load() ? ", stuck" : "", w->starving.load() ? ", starving" : "", task.c_str(),
                     static_cast<unsigned long long>(w->resumes.load()), w->q.size(),
                     w->slots.peek_next() ? ", run_next full" : "");
    }
}

/// What every snapshot of a busy_program must show, however it was taken.
void check_busy_snapshot(const goro::snapshot& s, const busy_program& prog) {
    std::set<std::uint64_t> ids;
    std::map<std::string, int> named;
    int unknown = 0;
    for (const auto& r : s.tasks()) {
        REQUIRE(r.id != 0);
        ids.insert(r.id);
        std::string name = r.meta ? r.meta->name : std::string();
        if (!name.empty()) ++named[name];
        if (!r.frames_known) {
            // Only a task running on a worker that did not stop.
            ++unknown;
            CHECK(!s.all_stopped());
            CHECK(r.state == goro::task_state::running);
            CHECK(r.frame_count == 0);
            continue;
        }
        auto st = s.stack(r);
        if (name == "pinger" || name == "ponger" || name == "spawner") {
            REQUIRE(!st.empty());
            CHECK(goro::clean_function_name(st.back().function_name()) == "snap_" + name);
        } else if (name.empty()) {
            std::string top = st.empty() ? std::string() : goro::clean_function_name(st.back().function_name());
            if (top.empty()) CHECK(r.state == goro::task_state::runnable);  // not started yet: no site
            else CHECK(top == "snap_short_lived");
        }
        if (r.state == goro::task_state::waiting) CHECK(r.wait_reason != nullptr);
    }
    CHECK(ids.size() == s.total());  // nobody twice
    CHECK(named["pinger"] == busy_program::pairs);  // nobody missing, running or not
    CHECK(named["ponger"] == busy_program::pairs);
    CHECK(named["spawner"] == 2);
    // One per worker that did not stop, each running one task: spares and
    // the stuck workers' replacements count, so not max_procs().
    const unsigned live = goro::detail::the_scheduler().live_workers();
    CHECK(unknown <= int(live));
    if (unknown > int(live)) snap_print_workers();
    if (prog.hog) {
        CHECK(named["hog"] == 1);
        CHECK(!s.all_stopped());  // its worker cannot stop
    }
    CHECK(std::is_sorted(s.tasks().begin(), s.tasks().end(),
                         [](const goro::task_record& a, const goro::task_record& b) { return a.id < b.id; }));
    std::size_t sum = 0;
    for (const auto& g : s.groups()) sum += g.count;
    CHECK(sum == s.total());
}

}  // namespace

TEST_CASE("a snapshot taken while tasks run lists each of them once, with a stack of its own code", "[snapshot]") {
    REQUIRE(goro_test::tasks_drained());
    {
        busy_program prog(false);
        REQUIRE(prog.wait_started());
        for (int round = 0; round < 200; ++round) {
            auto s = goro::snapshot::take();
            check_busy_snapshot(s, prog);
        }
    }
    REQUIRE(busy_program::drained);
}

TEST_CASE("1,000 snapshots while a task never returns to its worker: it shows as running in its function, the rest as usual",
          "[snapshot]") {
    if (goro::max_procs() < 2) {
        SUCCEED("one worker: the hog would starve the program");
        return;
    }
    REQUIRE(goro_test::tasks_drained());
    int shown_hogs = 0;
    {
        busy_program prog(true);
        REQUIRE(prog.wait_started());
        for (int round = 0; round < 1000; ++round) {
            goro::snapshot::options opt;
            opt.stop_timeout = 1ms;  // the hog's worker never stops: every round falls back
            opt.concurrent = round % 2 == 0;
            auto s = goro::snapshot::take(opt);
            check_busy_snapshot(s, prog);
            for (const auto& r : s.tasks())
                if (r.meta && r.meta->name == "hog") {
                    CHECK(r.state == goro::task_state::running);
                    // Its frames are not read; it shows where its worker
                    // resumed it: its first run, so its own function.
                    auto st = s.stack(r);
                    if (r.frames_known && st.size() == 1 &&
                        goro::clean_function_name(st[0].function_name()) == "snap_hog")
                        ++shown_hogs;
                }
        }
    }
    CHECK(shown_hogs == 1000);
    REQUIRE(busy_program::drained);
}

TEST_CASE("1,000 snapshots while no worker stops: workers resume tasks all through the epoch's start",
          "[snapshot]") {
    REQUIRE(goro_test::tasks_drained());
    int fell_back = 0;
    {
        busy_program prog(goro::max_procs() >= 2);
        REQUIRE(prog.wait_started());
        run_through hook;
        for (int round = 0; round < 1000; ++round) {
            goro::snapshot::options opt;
            opt.stop_timeout = 0ns;
            opt.concurrent = round % 2 == 0;
            auto s = goro::snapshot::take(opt);
            check_busy_snapshot(s, prog);
            fell_back += !s.all_stopped();
        }
    }
    // Idle workers are stopped by the snapshot itself, so a round may find every worker idle.
    CHECK(fell_back > 0);
    REQUIRE(busy_program::drained);
}

TEST_CASE("a snapshot that falls back leaves the pool able to stop the world again", "[snapshot]") {
    if (goro::max_procs() < 2) return;
    REQUIRE(goro_test::tasks_drained());
    std::atomic<bool> release{false}, entered{false};
    goro::go(snap_hog(release, entered), {.name = "hog"});
    REQUIRE(eventually([&] { return entered.load(); }));
    auto s = goro::snapshot::take({.stop_timeout = 0ns});
    CHECK_FALSE(s.all_stopped());
    REQUIRE(s.total() == 1);
    CHECK(s.tasks()[0].state == goro::task_state::running);
    CHECK(s.tasks()[0].frames_known);  // where its worker resumed it: its own function (ENTRY SITE)
    REQUIRE(s.stack(s.tasks()[0]).size() == 1);
    CHECK(goro::clean_function_name(s.stack(s.tasks()[0])[0].function_name()) == "snap_hog");
    release.store(true);
    REQUIRE(goro_test::tasks_drained());
    // Every worker reaches a safe point now that nothing spins (however long that takes).
    REQUIRE(eventually([] { return goro::snapshot::take().all_stopped(); }, 120s));
}

TEST_CASE("a snapshot taken once exited tasks' headers are reused lists each task once, whole, by ascending id",
          "[snapshot]") {
    REQUIRE(goro_test::tasks_drained());
    // A first wave exits, every other task first, so that the second wave
    // reuses its headers out of their list order: the walk then meets ids
    // up and down, and the records must be reordered.
    std::atomic<int> parked{0};
    {
        goro::channel<int> even, odd;
        for (int i = 0; i < 3000; ++i) goro::go(snap_left(i % 2 ? odd : even, parked));
        REQUIRE(eventually([&] { return parked.load() == 3000; }));
        even.close();
        REQUIRE(goro_test::tasks_drained(1500));
        odd.close();
        REQUIRE(goro_test::tasks_drained());
    }
    parked.store(0);
    goro::channel<int> second;
    for (int i = 0; i < 5000; ++i) {
        if (i % 2 == 0) goro::go(snap_right(second, parked), {.name = "right"});
        else goro::go(snap_left(second, parked), {.name = "left"});
    }
    REQUIRE(eventually([&] { return parked.load() == 5000; }));
    auto s = goro::snapshot::take();
    REQUIRE(s.total() == 5000);
    std::map<std::string, int> by_name;
    for (std::size_t i = 0; i < s.total(); ++i) {
        const goro::task_record& r = s.tasks()[i];
        if (i > 0) CHECK(s.tasks()[i - 1].id < r.id);
        REQUIRE(r.meta);
        ++by_name[r.meta->name];
        // Each record moved whole: its name goes with its own stack.
        auto st = s.stack(r);
        REQUIRE(!st.empty());
        CHECK(goro::clean_function_name(st.back().function_name()) == "snap_" + r.meta->name);
        CHECK(r.state == goro::task_state::waiting);
    }
    CHECK(by_name["right"] == 2500);
    CHECK(by_name["left"] == 2500);
    // Unsorted, as debug=0 and 1 take it: the same groups, in the same order
    // (a tie of counts here: the group with the smallest id first).
    auto u = goro::snapshot::take({.sorted = false});
    auto gs = s.groups(), gu = u.groups();
    REQUIRE(gs.size() == 2);
    REQUIRE(gu.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        CHECK(gu[i].count == gs[i].count);
        CHECK(u.tasks()[gu[i].first].id == s.tasks()[gs[i].first].id);
    }
    CHECK(s.tasks()[gs[0].first].id == s.tasks()[0].id);
    CHECK(goro::goroutine_profile(u, 1) == goro::goroutine_profile(s, 1));
    second.close();
    REQUIRE(goro_test::tasks_drained());
}
