// goro/gtest.hpp: the GoogleTest listener fails exactly the tests that leak.
//
// The suite below contains one test that leaks on purpose (Leaks.LeavesATask),
// so GoogleTest itself reports it as FAILED; this program's main then checks
// that the listener did exactly that (the leaking test failed, naming it and
// its task; every other test passed) and exits 0 only then. Run under meson
// as `gtest_listener`.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <goro/gtest.hpp>

#include "../support.hpp"

using namespace std::chrono_literals;

namespace {

goro_test::gate leak_gate;    // opened by Leaks.Cleanup, which runs after the leaking tests
goro_test::gate allowed_gate;

goro::task<> parked_in_gtest(goro_test::gate& g) { co_await g.wait(); }

goro::task<> quick(std::atomic<int>& n) {
    co_await goro::yield();
    n.fetch_add(1);
}

}  // namespace

TEST(Leaks, CleanTestPasses) {
    std::atomic<int> n{0};
    for (int i = 0; i < 10; ++i) goro::go(quick(n));
    // The tasks may still be finishing when the test ends: the check's retries wait for them.
    EXPECT_TRUE(goro_test::eventually([&] { return n.load() == 10; }));
}

TEST(Leaks, LeavesATask) {
    goro::go(parked_in_gtest(leak_gate));
    ASSERT_TRUE(goro_test::eventually([] { return leak_gate.parked() == 1; }));
}

TEST(Leaks, LeavesATaskOnPurpose) {
    goro::go(parked_in_gtest(allowed_gate));
    ASSERT_TRUE(goro_test::eventually([] { return allowed_gate.parked() == 1; }));
    goro::testing::allow_leaks();
}

TEST(Leaks, EarlierLeaksAreNotBlamedOnLaterTests) { SUCCEED(); }

namespace {
goro_test::gate growth_gate;
goro::task<> grows_per_call(goro_test::gate& g) { co_await g.wait(); }
}  // namespace

TEST(Leaks, NoGrowthPasses) {
    std::atomic<int> n{0};
    int started = 0;
    GORO_EXPECT_NO_GROWTH([&] {
        goro::go(quick(n));
        ++started;
        goro_test::eventually([&] { return n.load() == started; });
    }, 5);
}

TEST(Leaks, GrowthFails) {
    const std::int64_t baseline = goro::num_goroutines();
    std::size_t started = 0;
    GORO_EXPECT_NO_GROWTH([&] {
        goro::go(grows_per_call(growth_gate));
        ++started;
        goro_test::eventually([&] { return growth_gate.parked() == started; });
    }, 5);
    growth_gate.open();  // no leak left for the listener
    EXPECT_TRUE(goro_test::tasks_drained(baseline));
}

TEST(Leaks, Cleanup) {
    leak_gate.open();
    allowed_gate.open();
    EXPECT_TRUE(goro_test::tasks_drained());
}

namespace {

const ::testing::TestResult* result_of(const char* name) {
    const ::testing::TestSuite* suite = nullptr;
    auto* ut = ::testing::UnitTest::GetInstance();
    for (int i = 0; i < ut->total_test_suite_count(); ++i)
        if (std::string(ut->GetTestSuite(i)->name()) == "Leaks") suite = ut->GetTestSuite(i);
    if (!suite) return nullptr;
    for (int i = 0; i < suite->total_test_count(); ++i)
        if (std::string(suite->GetTestInfo(i)->name()) == name) return suite->GetTestInfo(i)->result();
    return nullptr;
}

bool expect(bool ok, const char* what) {
    std::printf("%s: %s\n", ok ? "ok" : "NOT OK", what);
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    ::testing::GTEST_FLAG(shuffle) = false;  // Cleanup must run last
    goro::testing::install_gtest_leak_check();
    int gtest_status = RUN_ALL_TESTS();  // non-zero: Leaks.LeavesATask failed, as it should

    std::printf("\n--- checking the listener's verdicts ---\n");
    bool ok = true;
    const auto* leaky = result_of("LeavesATask");
    ok &= expect(leaky && leaky->Failed(), "Leaks.LeavesATask failed");
    if (leaky && leaky->total_part_count() > 0) {
        std::string msg = leaky->GetTestPartResult(leaky->total_part_count() - 1).message();
        ok &= expect(msg.find("goro leak check: test \"Leaks.LeavesATask\" left goroutines alive: found 1 "
                              "unexpected goroutine") != std::string::npos,
                     "the failure names the test");
        ok &= expect(msg.find("parked_in_gtest(...)") != std::string::npos, "the failure lists the task's stack");
    }
    const auto* grew = result_of("GrowthFails");
    ok &= expect(grew && grew->Failed(), "Leaks.GrowthFails failed");
    if (grew && grew->total_part_count() > 0) {
        std::string msg = grew->GetTestPartResult(0).message();
        ok &= expect(msg.find("goro::testing::expect_no_growth: 1 group of tasks grew") != std::string::npos,
                     "the growth failure says what grew");
        ok &= expect(msg.find("grows_per_call") != std::string::npos, "the growth failure shows the stack");
        ok &= expect(grew->total_part_count() == 1, "only the growth check failed it (no leak left)");
    }
    for (const char* name : {"CleanTestPasses", "NoGrowthPasses", "LeavesATaskOnPurpose", "EarlierLeaksAreNotBlamedOnLaterTests", "Cleanup"}) {
        const auto* r = result_of(name);
        ok &= expect(r && r->Passed(), (std::string("Leaks.") + name + " passed").c_str());
    }
    ok &= expect(gtest_status != 0, "RUN_ALL_TESTS reported the failure");
    std::printf("%s\n", ok ? "listener behaves as expected" : "listener misbehaves");
    return ok ? 0 : 1;
}
