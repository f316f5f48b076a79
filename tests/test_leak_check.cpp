// goro::testing::verify_none / find_leaks: what counts as a leak, the ignore
// options, the baseline, retries, and the debug=2 report.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace std::chrono_literals;
using goro_test::eventually;
namespace gt = goro::testing;

namespace {

int leaf_line = 0;

goro::task<> leak_leaf(goro_test::gate& g) {
    leaf_line = __LINE__ + 1;
    co_await g.wait();
}

goro::task<> leak_middle(goro_test::gate& g) { co_await leak_leaf(g); }

void spawn_leaker(goro_test::gate& g) { goro::go(leak_middle(g)); }

goro::task<> sleepy(std::chrono::milliseconds d) { co_await goro::sleep_for(d); }

goro::task<std::string> check_from_inside() {
    co_await goro::yield();
    try {
        gt::verify_none(gt::max_wait(0ms));
        co_return "";
    } catch (const gt::leak_error& e) {
        co_return e.what();
    }
}

/// Opens the gates and waits until their tasks are gone, whatever the test's outcome.
struct open_at_exit {
    std::vector<goro_test::gate*> gates;
    std::int64_t baseline;
    ~open_at_exit() {
        for (auto* g : gates) g->open();
        goro_test::tasks_drained(baseline);
    }
};

}  // namespace

TEST_CASE("verify_none passes when no task is alive", "[leak_check]") {
    REQUIRE(goro_test::tasks_drained());
    CHECK_NOTHROW(gt::verify_none());
    auto r = gt::find_leaks();
    CHECK(r.ok());
    CHECK(r.count() == 0);
    CHECK(r.report.empty());
}

TEST_CASE("verify_none reports a parked task in debug=2 form", "[leak_check]") {
    REQUIRE(goro_test::tasks_drained());
    goro_test::gate g;
    open_at_exit cleanup{{&g}, 0};
    spawn_leaker(g);
    REQUIRE(eventually([&] { return g.parked() == 1; }));

    std::string what;
    try {
        gt::verify_none(gt::max_wait(20ms));
    } catch (const gt::leak_error& e) {
        what = e.what();
        CHECK(e.result().count() == 1);
    }
    INFO(what);
    CHECK(what.rfind("goro::testing::verify_none: found 1 unexpected goroutine:\n\ngoroutine ", 0) == 0);
    CHECK(what.find(" [gate]:\n") != std::string::npos);
    CHECK(what.find("leak_leaf(...)\n\t") != std::string::npos);
    CHECK(what.find("test_leak_check.cpp:" + std::to_string(leaf_line) + "\n") != std::string::npos);
    CHECK(what.find("leak_middle(...)\n\t") != std::string::npos);
    CHECK(what.find("created by ") != std::string::npos);
    CHECK(what.find("spawn_leaker") != std::string::npos);
    // The leaf comes before its caller.
    CHECK(what.find("leak_leaf(") < what.find("leak_middle("));

    g.open();
    CHECK_NOTHROW(gt::verify_none(gt::max_wait(30s)));
}

TEST_CASE("the ignore options excuse tasks by top function, any frame, creator and id", "[leak_check]") {
    REQUIRE(goro_test::tasks_drained());
    goro_test::gate g;
    open_at_exit cleanup{{&g}, 0};
    spawn_leaker(g);
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    auto none = gt::max_wait(0ms);

    CHECK(gt::find_leaks(none, gt::ignore_top_function("leak_leaf")).ok());
    CHECK_FALSE(gt::find_leaks(none, gt::ignore_top_function("leak_middle")).ok());  // not the leaf
    CHECK(gt::find_leaks(none, gt::ignore_any_function("leak_middle")).ok());
    CHECK(gt::find_leaks(none, gt::ignore_any_function("leak_leaf")).ok());
    CHECK_FALSE(gt::find_leaks(none, gt::ignore_any_function("spawn_leaker")).ok());  // creator, not a frame
    CHECK(gt::find_leaks(none, gt::ignore_created_by("spawn_leaker")).ok());
    CHECK_FALSE(gt::find_leaks(none, gt::ignore_created_by("leak_middle")).ok());
    // A qualified pattern matches either compiler's spelling of a function in the
    // anonymous namespace: g++ "{anonymous}::leak_leaf", clang++ "leak_leaf".
    CHECK(gt::find_leaks(none, gt::ignore_top_function("{anonymous}::leak_leaf")).ok());

    auto leaked = gt::find_leaks(none);
    REQUIRE(leaked.count() == 1);
    CHECK(gt::find_leaks(none, gt::ignore_ids(leaked.leaked)).ok());
    CHECK(gt::find_leaks(gt::ignore_current(), none).ok());
    // A vector of options works as well as a list.
    std::vector<gt::option> opts{none, gt::ignore_top_function("leak_leaf")};
    CHECK(gt::find_leaks(opts).ok());
    CHECK_NOTHROW(gt::verify_none(opts));
}

TEST_CASE("ignore_current takes a baseline: only tasks started later count", "[leak_check]") {
    REQUIRE(goro_test::tasks_drained());
    goro_test::gate g1, g2;
    open_at_exit cleanup{{&g1, &g2}, 0};
    spawn_leaker(g1);
    REQUIRE(eventually([&] { return g1.parked() == 1; }));
    auto before = gt::ignore_current();
    CHECK_NOTHROW(gt::verify_none(before, gt::max_wait(0ms)));

    spawn_leaker(g2);
    REQUIRE(eventually([&] { return g2.parked() == 1; }));
    auto r = gt::find_leaks(before, gt::max_wait(0ms));
    CHECK(r.count() == 1);
    g2.open();
    CHECK(gt::find_leaks(before, gt::max_wait(30s)).ok());
}

TEST_CASE("verify_none retries so that tasks about to finish are not blamed", "[leak_check]") {
    REQUIRE(goro_test::tasks_drained());
    goro::go(sleepy(30ms));
    // One look sees it; the retries (a generous budget here) outlast it.
    CHECK_FALSE(gt::find_leaks(gt::max_wait(0ms)).ok());
    CHECK_NOTHROW(gt::verify_none(gt::max_wait(30s)));
}

TEST_CASE("a thread waiting in block_on is a task too", "[leak_check]") {
    REQUIRE(goro_test::tasks_drained());
    goro_test::gate g;
    open_at_exit cleanup{{&g}, 0};
    std::thread waiter([&] { goro::block_on(g.wait()); });
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    auto r = gt::find_leaks(gt::max_wait(0ms));
    CHECK(r.count() == 1);
    INFO(r.report);
    CHECK(r.report.find("[gate]:") != std::string::npos);
    CHECK(r.report.find("created by") == std::string::npos);  // block_on is its own bottom frame
    g.open();
    waiter.join();
    CHECK(gt::find_leaks(gt::max_wait(30s)).ok());
}

TEST_CASE("verify_none inside a task does not count the caller", "[leak_check]") {
    REQUIRE(goro_test::tasks_drained());
    CHECK(goro::block_on(check_from_inside()).empty());
}

TEST_CASE("function_matches compares whole names, qualified or not", "[leak_check]") {
    CHECK(gt::function_matches("worker", "worker"));
    CHECK(gt::function_matches("ns::worker", "ns::worker"));
    CHECK(gt::function_matches("worker", "ns::worker"));      // bare pattern, g++ name
    CHECK(gt::function_matches("ns::worker", "worker"));      // qualified pattern, clang name
    CHECK_FALSE(gt::function_matches("ns::worker", "other::worker"));
    CHECK_FALSE(gt::function_matches("work", "worker"));      // no substrings
    CHECK_FALSE(gt::function_matches("worker", "ns::worker2"));
    CHECK_FALSE(gt::function_matches("", "worker"));
    CHECK(gt::function_matches("run", "ns::pool<a::b>::run"));
    CHECK(gt::function_matches("f()::{lambda}", "f()::{lambda}"));
    CHECK(gt::function_matches("{lambda}", "f()::{lambda}"));
    // Patterns are cleaned like frame names: a raw compiler spelling works too.
    CHECK(gt::ignore_top_function("void ns::worker(int)").function == "ns::worker");
}

TEST_CASE("verify_test_main turns leaks into a failing exit status", "[leak_check]") {
    REQUIRE(goro_test::tasks_drained());
    goro_test::gate g;
    open_at_exit cleanup{{&g}, 0};
    auto before = gt::ignore_current();
    std::ostringstream err;
    CHECK(gt::verify_test_main(0, {before}, err) == 0);
    CHECK(err.str().empty());
    spawn_leaker(g);
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    CHECK(gt::verify_test_main(0, {before, gt::max_wait(0ms)}, err) == 1);
    CHECK(gt::verify_test_main(3, {before, gt::max_wait(0ms)}, err) == 3);  // a failing run stays failing
    CHECK(err.str().rfind("goro leak check: goroutines alive at the end of the test run: found 1 unexpected", 0) == 0);
    g.open();
    CHECK(gt::verify_test_main(0, {before, gt::max_wait(30s)}, err) == 0);
}

TEST_CASE("allow_leaks marks the running test as leaking on purpose", "[leak_check]") {
    gt::per_test_check check({gt::max_wait(0ms)});
    check.starting();
    goro_test::gate g;
    open_at_exit cleanup{{&g}, goro::num_goroutines()};
    spawn_leaker(g);
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    std::string failure = check.ended("my test");
    CHECK(failure.rfind("goro leak check: test \"my test\" left goroutines alive: found 1 unexpected goroutine", 0) == 0);
    gt::allow_leaks();
    CHECK(check.ended("my test").empty());
    check.starting();  // the next test starts checked again, with the parked task in its baseline
    CHECK(check.ended("next").empty());
}
