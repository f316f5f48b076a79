// The worker pool (core/scheduler.hpp): sizing, stealing, wake-ups from outside,
// stop-the-world, a stuck worker's slots, exit from a task. go/block_on, sleep
// and yield (core/go.hpp) are in test_go.cpp.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

extern char** environ;

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_scheduler {


using namespace std::chrono_literals;
using goro_test::eventually;

namespace {

goro::task<> bump(std::atomic<long>& n) {
    n.fetch_add(1);
    co_return;
}

goro::task<> spawner(std::atomic<long>& n, int count) {
    for (int i = 0; i < count; ++i) goro::go(bump(n));
    co_return;
}

/// Runs this test binary on the hidden test case `name` (with
/// GORO_TEST_CHILD=1, so that the case run by hand does nothing) and returns
/// its wait status, or -1 when it did not end within `deadline` (then it is
/// killed). The deadline only bounds a hang.
int run_self(const std::string& name, std::chrono::seconds deadline = std::chrono::seconds(120)) {
    std::vector<std::string> env{"GORO_TEST_CHILD=1"};
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string exe = "/proc/self/exe", arg = name;
    char* argv[] = {exe.data(), arg.data(), nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);  // the child's Catch2 banner; stderr stays
    pid_t pid = -1;
    int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return -2;
    auto end = std::chrono::steady_clock::now() + deadline;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        if (r < 0 && errno != EINTR) return -2;
        if (std::chrono::steady_clock::now() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

bool in_child() { return std::getenv("GORO_TEST_CHILD") != nullptr; }

}  // namespace

TEST_CASE("the pool has the requested number of workers", "[scheduler]") {
    unsigned n = goro::max_procs();
    CHECK(n >= 1);
    CHECK_NOTHROW(goro::set_max_procs(n));  // same size: accepted
    CHECK_THROWS_AS(goro::set_max_procs(0), goro::usage_error);
    // Spares (stuck workers' replacements, a larger set_max_procs) may have started too.
    CHECK(goro::detail::the_scheduler().workers().size() >= n);
}

TEST_CASE("work spawned on one worker is stolen by the others", "[scheduler]") {
    if (goro::max_procs() < 2) SUCCEED("one worker: nothing to steal");
    else {
        std::mutex mu;
        std::set<std::thread::id> ran_on;
        std::atomic<int> done{0};
        auto record = [](std::mutex& m, std::set<std::thread::id>& s, std::atomic<int>& d) -> goro::task<> {
            {
                std::lock_guard<std::mutex> lk(m);
                s.insert(std::this_thread::get_id());
            }
            d.fetch_add(1);
            co_return;
        };
        // The spawner never suspends until another worker has run one of its
        // tasks: only stealing can make that happen.
        auto spawn_and_hold = [&]() -> goro::task<bool> {
            for (int i = 0; i < 64; ++i) goro::go(record(mu, ran_on, done));
            auto me = std::this_thread::get_id();
            bool stolen = eventually([&] {
                std::lock_guard<std::mutex> lk(mu);
                return ran_on.size() > 1 || (ran_on.size() == 1 && !ran_on.count(me));
            });
            co_return stolen;
        };
        CHECK(goro::block_on(spawn_and_hold()));
        CHECK(eventually([&] { return done.load() == 64; }));
    }
}

TEST_CASE("one task spawned by a task that never suspends runs while the other workers had been asleep",
          "[scheduler]") {
    // The spawner's look for an idle worker has no fence: if it missed one
    // going to sleep, the monitor must still get the task run elsewhere.
    if (goro::max_procs() < 2) {
        SUCCEED("one worker: nothing to steal");
        return;
    }
    for (int round = 0; round < 20; ++round) {
        // Every worker has gone idle (nothing else runs between test cases).
        auto& sched = goro::detail::the_scheduler();
        REQUIRE(eventually([&] { return sched.idle_workers() == static_cast<int>(sched.size()); }));
        std::atomic<bool> ran{false};
        auto flag = [](std::atomic<bool>& r) -> goro::task<> {
            r.store(true);
            co_return;
        };
        auto spawn_and_hold = [&]() -> goro::task<bool> {
            goro::go(flag(ran));
            co_return eventually([&] { return ran.load(); });  // never suspends meanwhile
        };
        REQUIRE(goro::block_on(spawn_and_hold()));
    }
}

TEST_CASE("stop the world: no task runs while stopped, all resume after", "[scheduler]") {
    std::atomic<bool> stop{false};
    std::atomic<long> ticks{0};
    auto ticker = [](std::atomic<bool>& s, std::atomic<long>& t) -> goro::task<> {
        while (!s.load()) {
            t.fetch_add(1);
            co_await goro::yield();
        }
    };
    const int n = 8;
    for (int i = 0; i < n; ++i) goro::go(ticker(stop, ticks));
    REQUIRE(eventually([&] { return ticks.load() > 1000; }));

    auto& s = goro::detail::the_scheduler();
    for (int round = 0; round < 5; ++round) {
        auto rep = goro_test::stop_whole_world();  // every worker, however long a loaded machine takes
        CHECK(rep.running.empty());
        long before = ticks.load();
        std::this_thread::sleep_for(20ms);  // observing that nothing moves
        long after = ticks.load();
        s.start_the_world();
        CHECK(before == after);
        long resumed_from = ticks.load();
        CHECK(eventually([&] { return ticks.load() > resumed_from + 100; }));
    }
    stop.store(true);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("stop the world reports a task that never suspends as running", "[scheduler]") {
    if (goro::max_procs() < 2) return;
    std::atomic<bool> release{false}, entered{false};
    auto hog = [](std::atomic<bool>& r, std::atomic<bool>& e) -> goro::task<> {
        e.store(true);
        while (!r.load()) std::this_thread::yield();  // never suspends
        co_return;
    };
    goro::go(hog(release, entered));
    REQUIRE(eventually([&] { return entered.load(); }));
    auto& s = goro::detail::the_scheduler();
    auto rep = s.stop_the_world(50ms);
    CHECK_FALSE(rep.all_stopped);
    CHECK(rep.running.size() == 1);
    s.start_the_world();
    release.store(true);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("a million tasks spawned from many tasks all complete", "[scheduler][stress]") {
    std::atomic<long> n{0};
    const int spawners = 100, each = 10'000;
    for (int i = 0; i < spawners; ++i) goro::go(spawner(n, each));
    CHECK(eventually([&] { return n.load() == long(spawners) * each; }, std::chrono::seconds(120)));
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("tasks woken from a plain thread run on the pool", "[scheduler]") {
    goro_test::gate g;
    std::atomic<int> passed{0};
    auto passer = [](goro_test::gate& gt, std::atomic<int>& p) -> goro::task<> {
        co_await gt.wait();
        p.fetch_add(1);
    };
    for (int i = 0; i < 100; ++i) goro::go(passer(g, passed));
    REQUIRE(eventually([&] { return g.parked() == 100; }));
    std::thread([&] { g.open(); }).join();
    CHECK(eventually([&] { return passed.load() == 100; }));
    CHECK(goro_test::tasks_drained());
}

namespace {

goro::task<> marker(std::atomic<int>& ran) {
    ran.fetch_add(1);
    co_return;
}

// Wakes its partner and parks, over and over: the partner lands in this
// worker's run_next slot each time. Once, it also queues a marker task behind.
goro::task<> ping(goro::channel<int> in, goro::channel<int> out, std::atomic<bool>& stop, std::atomic<int>& ran) {
    for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        if (i == 100) goro::go(marker(ran));
        co_await out.send(i);
        auto v = co_await in.recv();  // (not `if (!co_await ...)`: see the g++ 12 notes in the README)
        if (!v) break;
    }
    out.close();
}

goro::task<> pong(goro::channel<int> in, goro::channel<int> out) {
    while (auto v = co_await in.recv()) co_await out.send(*v);
}

}  // namespace

TEST_CASE("two tasks that wake each other do not starve the tasks queued behind them", "[scheduler]") {
    const int pairs = 4 * static_cast<int>(goro::max_procs());  // every worker busy with chains
    std::atomic<bool> stop{false};
    std::atomic<int> ran{0};
    for (int i = 0; i < pairs; ++i) {
        goro::channel<int> a, b;
        goro::go(ping(a, b, stop, ran));
        goro::go(pong(b, a));
    }
    CHECK(eventually([&] { return ran.load() == pairs; }));
    stop.store(true);
    CHECK(goro_test::tasks_drained());
}

namespace {

// Parks on `ch`, then counts how many times it ran past the receive.
goro::task<> count_wakeups(goro::channel<int> ch, std::atomic<int>& woke, std::atomic<bool>& flag) {
    auto v = co_await ch.recv();
    (void)v;
    woke.fetch_add(1);
    flag.store(true);
}

// Wakes the receiver (it lands in this worker's run_next), then keeps the
// worker busy without suspending: until `flag` is set by the woken task
// (which therefore must be stolen from run_next), or for `spin`.
goro::task<> wake_then_spin(goro::channel<int> ch, std::atomic<bool>& flag, std::chrono::microseconds spin,
                            std::atomic<int>& finished) {
    co_await ch.send(1);
    const auto end = std::chrono::steady_clock::now() + spin;
    if (spin.count() == 0) {
        while (!flag.load()) goro::detail::cpu_relax();
    } else {
        while (std::chrono::steady_clock::now() < end) goro::detail::cpu_relax();
    }
    finished.fetch_add(1);
}

// Waits until `n` tasks are parked on a channel receive.
bool receivers_parked(std::size_t n) {
    return eventually([n] {
        const goro::snapshot s = goro::snapshot::take();
        std::size_t k = 0;
        for (auto& r : s.tasks())
            if (r.state == goro::task_state::waiting && goro_test::same_reason(r.wait_reason, goro::wait_reason::chan_receive))
                ++k;
        return k == n;
    });
}

}  // namespace

TEST_CASE("a task left in a stuck worker's run_next is stolen, and runs exactly once", "[scheduler]") {
    // A thief takes run_next from a worker whose task has not suspended for
    // a monitor period, after a membarrier; the owner takes it without a
    // locked instruction (RUN_NEXT in scheduler.hpp). First: the stuck task
    // waits for the one it woke, which only a thief can run (this hung in a
    // young pool, whose monitor did not tick).
    {
        goro::channel<int> ch;
        std::atomic<int> woke{0}, finished{0};
        std::atomic<bool> flag{false};
        goro::go(count_wakeups(ch, woke, flag));
        REQUIRE(receivers_parked(1));
        goro::go(wake_then_spin(ch, flag, std::chrono::microseconds(0), finished));
        REQUIRE(eventually([&] { return finished.load() == 1; }));
        CHECK(woke.load() == 1);
        CHECK(goro_test::tasks_drained());
    }
    // Then: the owner stops spinning around the moment thieves start to
    // look (the monitor marks a worker starving after 10 ms), so the owner's
    // take and a thief's race. Whoever wins, the task runs once.
    std::atomic<int> woke{0}, finished{0};
    constexpr int rounds = 40;
    for (int i = 0; i < rounds; ++i) {
        goro::channel<int> ch;
        std::atomic<bool> flag{false};
        goro::go(count_wakeups(ch, woke, flag));
        REQUIRE(receivers_parked(1));
        goro::go(wake_then_spin(ch, flag, std::chrono::microseconds(8000 + 200 * i), finished));
        REQUIRE(eventually([&] { return finished.load() == i + 1 && woke.load() == i + 1; }));
        CHECK(goro_test::tasks_drained());
    }
    CHECK(woke.load() == rounds);
}

namespace {

// Spins (never suspends) until `go_on` is set, or for at most 60 s.
void spin_until(const std::atomic<bool>& go_on) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!go_on.load() && std::chrono::steady_clock::now() < end) goro::detail::cpu_relax();
}

goro::task<> occupy_worker(std::atomic<int>& started, const std::atomic<bool>& release) {
    started.fetch_add(1);
    spin_until(release);
    co_return;
}

goro::task<> count_run(std::atomic<int>& runs, std::atomic<int>& total) {
    runs.fetch_add(1);
    total.fetch_add(1);
    co_return;
}

// Runs first of a batch its worker claimed, and keeps that worker until the
// tasks claimed with it (and the rest) have run elsewhere.
goro::task<> spin_until_all_ran(std::atomic<bool>& started, const std::atomic<int>& total, int want,
                                std::atomic<bool>& finished) {
    started.store(true);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (total.load() < want && std::chrono::steady_clock::now() < end) goro::detail::cpu_relax();
    finished.store(true);
    co_return;
}

constexpr int claimed_batch_tasks = 11;

struct claim_round {
    std::atomic<int> occupied{0};
    std::atomic<bool> spinner_started{false}, spinner_finished{false};
    std::atomic<int> total{0};
    std::atomic<int> runs[claimed_batch_tasks]{};
};

// Occupies every other worker, then queues the spinner and the counted tasks
// on its own worker and finishes: that worker then pops the spinner with
// three of them claimed (its queue holds 12, CLAIMED in scheduler.hpp), and
// nobody else can have stolen anything before.
goro::task<> queue_batch_behind_spinner(claim_round& r, unsigned others) {
    for (unsigned i = 0; i < others; ++i) goro::go(occupy_worker(r.occupied, r.spinner_started));
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (r.occupied.load() < static_cast<int>(others) && std::chrono::steady_clock::now() < end)
        goro::detail::cpu_relax();
    goro::go(spin_until_all_ran(r.spinner_started, r.total, claimed_batch_tasks, r.spinner_finished));
    for (auto& n : r.runs) goro::go(count_run(n, r.total));
    co_return;
}

}  // namespace

TEST_CASE("tasks claimed with a batch by a worker that gets stuck are stolen, and each runs once", "[scheduler]") {
    // A worker pops up to four tasks with one CAS and keeps the three it does
    // not run yet in slots that only a thief of a starving worker empties. If
    // that path were missing, the spinner would wait for them for 60 s and
    // the checks below would fail.
    const unsigned workers = goro::max_procs();
    if (workers < 2) {
        WARN("needs two workers; GORO_MAXPROCS is 1");
        return;
    }
    for (int round = 0; round < 5; ++round) {
        claim_round r;
        goro::go(queue_batch_behind_spinner(r, workers - 1));
        REQUIRE(eventually([&] { return r.spinner_finished.load(); }, std::chrono::seconds(90)));
        CHECK(r.total.load() == claimed_batch_tasks);
        for (auto& n : r.runs) CHECK(n.load() == 1);
        CHECK(goro_test::tasks_drained());
    }
}

TEST_CASE("child: std::exit from a task", "[.]") {
    if (!in_child()) return;
    // Keep the other workers busy with tasks that come and go, so shutdown
    // has workers to stop besides the one calling exit.
    std::atomic<bool> stop{false};
    for (int i = 0; i < 3; ++i)
        goro::go([](std::atomic<bool>& s) -> goro::task<> {
            while (!s.load()) co_await goro::yield();
        }(stop));
    goro::go([]() -> goro::task<> {
        co_await goro::yield();
        std::exit(42);
    }());
    std::this_thread::sleep_for(std::chrono::minutes(5));  // the task ends the process first
    std::_Exit(3);
}

TEST_CASE("std::exit called inside a task ends the process with its status", "[scheduler]") {
    // The worker calling exit runs the pool's shutdown itself: it must not
    // wait for its own thread to stop (nor hang or crash).
    int status = run_self("child: std::exit from a task");
    REQUIRE(status != -2);
    REQUIRE(status != -1);  // it hung
    INFO("wait status " << status);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 42);
}

}  // namespace tests_scheduler
