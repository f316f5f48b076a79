// goro/inspect/deadlock.hpp: the deadlock report and its policies; and the
// Catch2 leak listener, whose failure ends a child process like theirs.
// What ends a process runs in a child (see child.hpp).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "child.hpp"
#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_deadlock {

using namespace std::chrono_literals;
using goro_test::default_abort_action;
using goro_test::eventually;
using goro_test::in_child;
using goro_test::run_child;
using goro_test::starts_with;

namespace {

/// Sets the deadlock policy and grace for one test, restoring them after.
struct deadlock_settings {
    goro::deadlock_policy old_policy = goro::get_deadlock_policy();
    std::chrono::nanoseconds old_grace = goro::deadlock_grace();
    deadlock_settings(goro::deadlock_policy p, std::chrono::nanoseconds grace) {
        goro::set_deadlock_policy(p);
        goro::set_deadlock_grace(grace);
    }
    ~deadlock_settings() {
        goro::set_deadlock_policy(old_policy);
        goro::set_deadlock_grace(old_grace);
    }
};

goro::task<> wait_on_gate(goro_test::gate& g) { co_await g.wait(); }

goro::task<> parked_forever(goro_test::gate& g) { co_await wait_on_gate(g); }

goro::task<> spin_until(std::atomic<bool>& flag) {
    while (!flag.load()) co_await goro::yield();
}

}  // namespace

// --- deadlock ----------------------------------------------------------------

TEST_CASE("child: deadlock throws", "[.][deadlock_child]") {
    if (!in_child()) return;
    goro::set_deadlock_grace(100ms);
    goro_test::gate g;
    goro::go(parked_forever(g));
    REQUIRE(eventually([&] { return g.parked() == 1; }));

    // Two threads deadlocked in block_on: both get the error.
    std::atomic<bool> other_threw{false};
    std::thread other([&] {
        try {
            goro::block_on(wait_on_gate(g));
        } catch (const goro::deadlock_error&) {
            other_threw = true;
        }
    });
    REQUIRE(eventually([&] { return g.parked() == 2; }));
    std::string what, report;
    try {
        goro::block_on(wait_on_gate(g));
    } catch (const goro::deadlock_error& e) {
        what = e.what();
        report = e.report();
    }
    other.join();
    CHECK(other_threw);
    CHECK(what == "goro::block_on: all goroutines are asleep - deadlock!");
    CHECK(starts_with(report, "fatal error: all goroutines are asleep - deadlock!\n\ngoroutine "));

    // The parked tasks stay (leaked, listed); the abandoned block_on tasks show
    // their block_on frame, and a snapshot is safe although their awaitables are gone.
    auto leaks = goro::testing::find_leaks(goro::testing::max_wait(0ms));
    CHECK(leaks.count() == 3);
    std::cout << "LEAKS\n" << leaks.report << std::flush;
    CHECK(leaks.report.find("test_deadlock.cpp") != std::string::npos);

    // Waking them now is harmless: the detached task finishes, the abandoned ones leave the registry.
    g.open();
    CHECK(goro_test::tasks_drained());
    CHECK_NOTHROW(goro::testing::verify_none());
    std::cout << "CHILD DONE\n";
}

TEST_CASE("a real deadlock prints the report and block_on throws deadlock_error", "[deadlock]") {
    auto r = run_child("child: deadlock throws", {"GORO_LEAK_CHECK=off"});
    INFO(r.describe());
    CHECK(r.exited_ok());
    CHECK(r.out.find("CHILD DONE") != std::string::npos);
    CHECK(starts_with(r.err, "fatal error: all goroutines are asleep - deadlock!\n\ngoroutine "));
    CHECK(r.err.find(" [gate]:\n") != std::string::npos);
    CHECK(r.err.find("wait_on_gate(...)\n\t") != std::string::npos);
    CHECK(r.err.find("parked_forever(...)\n\t") != std::string::npos);
    // Reported once, although two threads were deadlocked.
    CHECK(r.err.find("fatal error", 1) == std::string::npos);
}

TEST_CASE("child: deadlock waits", "[.][deadlock_child]") {
    if (!in_child()) return;
    default_abort_action();
    goro::set_deadlock_grace(50ms);
    goro_test::gate g;
    // A jthread: when block_on throws (the default policy), unwinding joins it.
    std::jthread opener([&] {
        eventually([&] { return g.parked() == 1; });
        std::this_thread::sleep_for(500ms);  // ten grace periods
        g.open();
    });
    goro::block_on(wait_on_gate(g));
    std::cout << "CHILD DONE\n";
}

TEST_CASE("the abort policy aborts after the report", "[deadlock]") {
    auto r = run_child("child: deadlock waits", {"GORO_DEADLOCK=abort", "GORO_LEAK_CHECK=off"});
    INFO(r.describe());
    CHECK(r.aborted());
    CHECK(starts_with(r.err, "fatal error: all goroutines are asleep - deadlock!\n\ngoroutine "));
    CHECK(r.out.find("CHILD DONE") == std::string::npos);
}

TEST_CASE("GORO_DEADLOCK=off turns detection off", "[deadlock]") {
    auto r = run_child("child: deadlock waits", {"GORO_DEADLOCK=off"});
    INFO(r.describe());
    CHECK(r.exited_ok());
    CHECK(r.out.find("CHILD DONE") != std::string::npos);
    CHECK(r.err.find("fatal error") == std::string::npos);
}

TEST_CASE("the throw policy is the default", "[deadlock]") {
    auto r = run_child("child: deadlock waits", {"GORO_LEAK_CHECK=off"});
    INFO(r.describe());
    CHECK(starts_with(r.err, "fatal error: all goroutines are asleep - deadlock!\n\n"));
    CHECK_FALSE(r.exited_ok());  // the uncaught deadlock_error fails the child's test case
    CHECK(r.out.find("goro::block_on: all goroutines are asleep - deadlock!") != std::string::npos);
}

TEST_CASE("no deadlock is reported while a timer is pending", "[deadlock]") {
    deadlock_settings s(goro::deadlock_policy::throw_error, 20ms);
    auto t0 = std::chrono::steady_clock::now();
    CHECK_NOTHROW(goro::block_on(goro::sleep_for(200ms)));
    CHECK(std::chrono::steady_clock::now() - t0 >= 200ms);
}

TEST_CASE("no deadlock is reported while a task runs", "[deadlock]") {
    deadlock_settings s(goro::deadlock_policy::throw_error, 20ms);
    std::atomic<bool> flag{false};
    std::thread t([&] {
        std::this_thread::sleep_for(200ms);
        flag = true;
    });
    CHECK_NOTHROW(goro::block_on(spin_until(flag)));
    t.join();
}

TEST_CASE("an external_wakeup_guard holds the detector off", "[deadlock]") {
    deadlock_settings s(goro::deadlock_policy::throw_error, 20ms);
    goro_test::gate g;
    std::thread t;
    {
        goro::external_wakeup_guard guard;
        t = std::thread([&] {
            eventually([&] { return g.parked() == 1; });
            std::this_thread::sleep_for(200ms);  // ten grace periods
            g.open();
        });
        CHECK_NOTHROW(goro::block_on(wait_on_gate(g)));
    }
    t.join();
}

TEST_CASE("set_deadlock_grace rejects a non-positive period", "[deadlock]") {
    CHECK_THROWS_AS(goro::set_deadlock_grace(0ms), goro::usage_error);
    CHECK_THROWS_WITH(goro::set_deadlock_grace(-1s), Catch::Contains("goro::set_deadlock_grace"));
}

// --- the Catch2 listener (main.cpp has GORO_CATCH2_LEAK_CHECK()) ---------------

TEST_CASE("child: leaks a task", "[.][deadlock_child]") {
    if (!in_child()) return;
    static goro_test::gate g;  // outlives the test: the task stays parked until exit
    goro::go(parked_forever(g));
    REQUIRE(eventually([&] { return g.parked() == 1; }));
}

TEST_CASE("child: leaks on purpose", "[.][deadlock_child]") {
    if (!in_child()) return;
    static goro_test::gate g;
    goro::go(parked_forever(g));
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    goro::testing::allow_leaks();
}

TEST_CASE("the Catch2 listener fails a test case that leaks, naming it", "[leak_check]") {
    auto r = run_child("child: leaks a task");
    INFO(r.describe());
    CHECK(WIFEXITED(r.status));
    CHECK_FALSE(r.exited_ok());
    CHECK(r.out.find("goro leak check: test \"child: leaks a task\" left goroutines alive") != std::string::npos);
    CHECK(r.out.find("parked_forever(...)") != std::string::npos);

    auto ok = run_child("child: leaks on purpose");
    INFO(ok.describe());
    CHECK(ok.exited_ok());
    auto off = run_child("child: leaks a task", {"GORO_LEAK_CHECK=off"});
    INFO(off.describe());
    CHECK(off.exited_ok());
}

}  // namespace tests_deadlock
