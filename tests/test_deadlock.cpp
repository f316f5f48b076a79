// The deadlock report, the crash (panic) report, and the Catch2 leak listener.
//
// What ends a process (abort, a report on stderr) runs in a child: the test
// binary runs itself (/proc/self/exe) on one hidden test case ("[.]", named
// "child: ..."), with GORO_TEST_CHILD=1 so that a hidden case run by hand
// does nothing, and the parent checks the child's exit status and output.
#include <catch2/catch.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

extern char** environ;

using namespace std::chrono_literals;
using goro_test::eventually;

namespace {

struct child_result {
    int status = -1;  // as from waitpid
    std::string out, err;

    bool exited_ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
    bool aborted() const { return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT; }
    std::string describe() const {
        std::ostringstream s;
        if (WIFEXITED(status)) s << "exit status " << WEXITSTATUS(status);
        else if (WIFSIGNALED(status)) s << "signal " << WTERMSIG(status);
        s << "\n--- stdout ---\n" << out << "\n--- stderr ---\n" << err;
        return s.str();
    }
};

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

/// Runs this test binary on the hidden test case `name`, with `env` added.
child_result run_child(const std::string& name, std::vector<std::string> env = {}) {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = tmp && *tmp ? tmp : "/tmp";
    std::string out_path = dir + "/goro_child_out_XXXXXX", err_path = dir + "/goro_child_err_XXXXXX";
    int out_fd = mkstemp(out_path.data());
    int err_fd = mkstemp(err_path.data());
    REQUIRE(out_fd >= 0);
    REQUIRE(err_fd >= 0);

    env.push_back("GORO_TEST_CHILD=1");
    for (char** e = environ; *e; ++e) env.emplace_back(*e);  // later duplicates lose: ours come first
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string exe = "/proc/self/exe", arg = name;
    char* argv[] = {exe.data(), arg.data(), nullptr};

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&fa);
    REQUIRE(rc == 0);
    child_result r;
    while (waitpid(pid, &r.status, 0) < 0) {
    }
    close(out_fd);
    close(err_fd);
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    unlink(out_path.c_str());
    unlink(err_path.c_str());
    return r;
}

bool in_child() { return std::getenv("GORO_TEST_CHILD") != nullptr; }

/// In a child that is expected to abort: Catch2's own SIGABRT handler (and
/// the sanitizers' deferral of signals into it) would turn the abort into
/// something else.
void default_abort_action() { std::signal(SIGABRT, SIG_DFL); }

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

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

goro::task<> panicky() {
    co_await goro::yield();
    throw std::runtime_error("boom");
}

goro::task<> panicky_int() {
    co_await goro::yield();
    throw 42;
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

// --- panic -------------------------------------------------------------------

TEST_CASE("child: panic", "[.][deadlock_child]") {
    if (!in_child()) return;
    default_abort_action();
    goro_test::gate g;
    goro::go(parked_forever(g));
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    goro::go(panicky());
    std::this_thread::sleep_for(30s);  // the panic aborts long before
}

TEST_CASE("an exception escaping a task prints the crash report and aborts", "[deadlock]") {
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

TEST_CASE("a panic hook replaces the report and the task is cleaned up", "[deadlock]") {
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
