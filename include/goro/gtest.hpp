// goro/gtest.hpp — goro's leak check in a GoogleTest run (not part of goro.hpp).
//
//   int main(int argc, char** argv) {
//       return goro::testing::gtest_main(argc, argv);   // InitGoogleTest + listener + RUN_ALL_TESTS
//   }
//   // or, with a main of one's own, after InitGoogleTest:
//   goro::testing::install_gtest_leak_check();
//
// `gtest_leak_listener` takes a baseline of the tasks alive when each test
// starts and, when it ends, runs `goro::testing::find_leaks`
// (goro/inspect/leak_check.hpp) for tasks started since that are still alive. Leaked
// tasks fail the test (ADD_FAILURE, attributed to it because GoogleTest calls
// OnTestEnd before it stops collecting the test's results, and before its
// result printer, since "end" events go to listeners in reverse order); the
// message names the test and lists the tasks in Go's debug=2 form.
// A test that leaves tasks on purpose calls `goro::testing::allow_leaks()`;
// GORO_LEAK_CHECK=off in the environment turns the check off.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include <goro/goro.hpp>
#include <goro/inspect/leak_check.hpp>
#include <goro/inspect/leak_watch.hpp>

namespace goro::testing {

class gtest_leak_listener : public ::testing::EmptyTestEventListener {
public:
    /// `extra`: options applied to every test's check (e.g. ignore_top_function).
    explicit gtest_leak_listener(std::vector<option> extra = {}) : check_(std::move(extra)) {}

    void OnTestStart(const ::testing::TestInfo&) override { check_.starting(); }

    void OnTestEnd(const ::testing::TestInfo& info) override {
        std::string name = std::string(info.test_suite_name()) + "." + info.name();
        std::string failure = check_.ended(name);
        if (!failure.empty()) ADD_FAILURE_AT(info.file(), info.line()) << failure;
    }

private:
    per_test_check check_;
};

/// Appends a gtest_leak_listener to GoogleTest's listeners (which own it).
inline void install_gtest_leak_check(std::vector<option> extra = {}) {
    ::testing::UnitTest::GetInstance()->listeners().Append(new gtest_leak_listener(std::move(extra)));
}

/// A whole main: initialises GoogleTest, installs the leak check, runs every test.
inline int gtest_main(int argc, char** argv, std::vector<option> extra = {}) {
    ::testing::InitGoogleTest(&argc, argv);
    install_gtest_leak_check(std::move(extra));
    return RUN_ALL_TESTS();
}

}  // namespace goro::testing

/// Fails the test (and goes on) when a group of tasks grows with the iterations.
#define GORO_EXPECT_NO_GROWTH(fn, iterations)                                                 \
    do {                                                                                      \
        std::string goro_growth_report_;                                                      \
        if (!::goro::testing::find_growth((fn), (iterations), &goro_growth_report_).empty()) \
            ADD_FAILURE() << goro_growth_report_;                                             \
    } while (false)

/// The same, returning from the test (a void function) on failure.
#define GORO_ASSERT_NO_GROWTH(fn, iterations)                                                 \
    do {                                                                                      \
        std::string goro_growth_report_;                                                      \
        if (!::goro::testing::find_growth((fn), (iterations), &goro_growth_report_).empty()) \
            FAIL() << goro_growth_report_;                                                    \
    } while (false)
