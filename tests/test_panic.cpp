// goro/inspect/panic.hpp: an exception escaping a task prints Go's crash report
// (the panicking task first) and aborts, or goes to an installed hook.
// What aborts runs in a child process (see child.hpp).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <goro/inspect/panic.hpp>

#include "child.hpp"
#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_panic {

using goro_test::eventually;
using goro_test::run_child;
using goro_test::starts_with;

namespace {

goro::task<> wait_on_gate(goro_test::gate& g) { co_await g.wait(); }

goro::task<> parked_forever(goro_test::gate& g) { co_await wait_on_gate(g); }

goro::task<> panicky() {
    co_await goro::yield();
    throw std::runtime_error("boom");
}

goro::task<> panicky_int() {
    co_await goro::yield();
    throw 42;
}

}  // namespace

TEST_CASE("child: panic", "[.][panic_child]") {
    if (!goro_test::in_child()) return;
    goro_test::default_abort_action();
    goro_test::gate g;
    goro::go(parked_forever(g));
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    goro::go(panicky());
    // The panic aborts the process; this wait only bounds a child that failed to.
    eventually([] { return false; }, std::chrono::seconds(30));
}
TEST_CASE("an exception escaping a task prints the crash report and aborts", "[panic]") {
    auto r = run_child("child: panic", {"GORO_LEAK_CHECK=off"});
    INFO(r.describe());
    CHECK(r.aborted());
    CHECK(starts_with(r.err, "panic: boom [std::runtime_error]\n\ngoroutine "));
    // The panicking task first, then the others.
    auto first = r.err.find("goroutine ");
    auto running = r.err.find(" [running]:\n");  // g++ qualifies the name: {anonymous}::panicky
    CHECK(r.err.find("panicky(...)\n\t") < r.err.find(" [gate]:\n"));
    CHECK(running != std::string::npos);
    CHECK(r.err.find('\n', first) > running);  // the first block is the running one
    CHECK(r.err.find(" [gate]:\n") > running);
    CHECK(r.err.find("parked_forever(...)") != std::string::npos);
    CHECK(r.err.find("created by ") != std::string::npos);
}

TEST_CASE("a panic hook replaces the report and the task is cleaned up", "[panic]") {
    REQUIRE(goro_test::tasks_drained());
    std::mutex mu;
    std::vector<goro::panic_info> seen;
    auto previous = goro::set_panic_handler([&](const goro::panic_info& info) {
        std::lock_guard<std::mutex> lk(mu);
        seen.push_back(info);
    });
    struct restore {
        goro::panic_hook h;
        ~restore() { goro::set_panic_handler(std::move(h)); }
    } restore_previous{previous};

    goro::go(panicky());
    goro::go(panicky_int());
    REQUIRE(eventually([&] {
        std::lock_guard<std::mutex> lk(mu);
        return seen.size() == 2;
    }));
    CHECK(goro_test::tasks_drained());
    std::lock_guard<std::mutex> lk(mu);
    const goro::panic_info* boom = seen[0].message == "boom" ? &seen[0] : &seen[1];
    const goro::panic_info* other = boom == &seen[0] ? &seen[1] : &seen[0];
    CHECK(boom->message == "boom");
    CHECK(boom->type == "std::runtime_error");
    CHECK(boom->task.id != 0);
    CHECK(boom->task.state == goro::task_state::running);
    CHECK(starts_with(boom->report, "panic: boom [std::runtime_error]\n\ngoroutine " + std::to_string(boom->task.id) +
                                        " [running]:\n"));
    CHECK(boom->report.find("panicky(...)\n\t") != std::string::npos);
    CHECK_THROWS_WITH(std::rethrow_exception(boom->error), "boom");
    CHECK(other->message == "exception of type int");
    CHECK(other->type == "int");
    CHECK(starts_with(other->report, "panic: exception of type int\n\n"));
}

}  // namespace tests_panic
