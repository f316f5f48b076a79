// goro/catch2.hpp — goro's leak check in a Catch2 v2 test run (not part of goro.hpp).
//
// In one translation unit of the test program, at namespace scope:
//
//   #include <goro/catch2.hpp>
//   GORO_CATCH2_LEAK_CHECK();          // check after every test case
//   // or
//   GORO_CATCH2_LEAK_CHECK_AT_END();   // one check when the run ends (goleak's VerifyTestMain)
//
// GORO_CATCH2_LEAK_CHECK: before each run of a test case's body (once per
// leaf SECTION path) the listener takes a baseline of the tasks alive; after
// it, `goro::testing::find_leaks` (goro/inspect/leak_check.hpp) looks for tasks
// started since that are still alive. Leaked tasks fail the test case with a
// failed assertion "GORO_CATCH2_LEAK_CHECK" at the test case's line, whose
// message names the test case and lists the tasks in Go's debug=2 form; the
// run's exit status counts it like any other failure. A test that leaves
// tasks on purpose calls `goro::testing::allow_leaks()`.
//
// GORO_CATCH2_LEAK_CHECK_AT_END: the baseline is taken when the run starts;
// when it ends the leaked tasks are printed to stderr and the process exits
// with status 1 (through an atexit handler, after Catch2 has printed its
// summary), as goleak.VerifyTestMain does. A program with its own main can
// instead write `return goro::testing::verify_test_main(session.run());`.
//
// GORO_LEAK_CHECK=off in the environment disables both.
//
// GORO_CHECK_NO_GROWTH(fn, iterations) / GORO_REQUIRE_NO_GROWTH(...): runs
// goro::testing::find_growth (goro/inspect/leak_watch.hpp) and fails the test
// (continuing, or aborting it) with the stack of each group of tasks that grew
// with the iteration count:
//
//   TEST_CASE("the pool does not grow per request") {
//       GORO_CHECK_NO_GROWTH([&] { handle_one_request(pool); }, 10);
//   }
#pragma once

#include <catch2/catch.hpp>

#include <atomic>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include <goro/goro.hpp>
#include <goro/inspect/leak_check.hpp>
#include <goro/inspect/leak_watch.hpp>

// The listeners need Catch2's reporter interfaces, which catch.hpp declares
// only in the translation unit that defines CATCH_CONFIG_MAIN or
// CATCH_CONFIG_RUNNER (or CATCH_CONFIG_EXTERNAL_INTERFACES); elsewhere this
// header gives the growth macros only.
#if defined(CATCH_CONFIG_EXTERNAL_INTERFACES)
namespace goro::testing {

/// The listener behind GORO_CATCH2_LEAK_CHECK.
class catch2_leak_listener : public Catch::TestEventListenerBase {
public:
    using Catch::TestEventListenerBase::TestEventListenerBase;

    void testCaseStarting(const Catch::TestCaseInfo& info) override {
        Catch::TestEventListenerBase::testCaseStarting(info);
        depth_ = 0;
        test_ = &info;
    }

    void sectionStarting(const Catch::SectionInfo& info) override {
        Catch::TestEventListenerBase::sectionStarting(info);
        if (depth_++ == 0) check_.starting();
    }

    // The test case's outermost section ends inside Catch2's run of the test,
    // before its totals are taken: an assertion added here fails the test case.
    void sectionEnded(const Catch::SectionStats& stats) override {
        if (depth_ > 0 && --depth_ == 0 && test_) {
            std::string failure = check_.ended(test_->name);
            if (!failure.empty()) {
                try {
                    Catch::AssertionHandler h("GORO_CATCH2_LEAK_CHECK"_catch_sr, test_->lineInfo, Catch::StringRef(),
                                              Catch::ResultDisposition::ContinueOnFailure);
                    h.handleMessage(Catch::ResultWas::ExplicitFailure, failure);
                    h.complete();
                } catch (...) {
                    // Catch2 throws to abort the run (--abort): already recorded.
                }
            }
        }
        Catch::TestEventListenerBase::sectionEnded(stats);
    }

private:
    per_test_check check_{};
    const Catch::TestCaseInfo* test_ = nullptr;
    int depth_ = 0;
};

namespace detail {
inline std::atomic<bool>& leaked_at_end() noexcept {
    static std::atomic<bool> f{false};
    return f;
}
}  // namespace detail

/// The listener behind GORO_CATCH2_LEAK_CHECK_AT_END.
class catch2_leak_listener_at_end : public Catch::TestEventListenerBase {
public:
    using Catch::TestEventListenerBase::TestEventListenerBase;

    void testRunStarting(const Catch::TestRunInfo& info) override {
        Catch::TestEventListenerBase::testRunStarting(info);
        if (leak_check_enabled()) baseline_ = ignore_current();
    }

    void testRunEnded(const Catch::TestRunStats& stats) override {
        Catch::TestEventListenerBase::testRunEnded(stats);
        if (!leak_check_enabled()) return;
        leak_result r = find_leaks(baseline_);
        if (r.ok()) return;
        std::cerr << "goro leak check: goroutines alive at the end of the test run: " << r.report << std::flush;
        // Catch2's exit status was computed before this runs: change it at exit,
        // once the reporter (which prints after the listeners) has finished.
        if (!detail::leaked_at_end().exchange(true))
            std::atexit([] {
                std::cout.flush();
                std::cerr.flush();
                std::fflush(nullptr);
                std::_Exit(1);
            });
    }

private:
    option baseline_{};
};

}  // namespace goro::testing

#define GORO_CATCH2_LEAK_CHECK()                                                                     \
    namespace {                                                                                      \
    const ::Catch::ListenerRegistrar<::goro::testing::catch2_leak_listener> goro_catch2_leak_check_; \
    }                                                                                                \
    static_assert(true, "")

#define GORO_CATCH2_LEAK_CHECK_AT_END()                                                                          \
    namespace {                                                                                                  \
    const ::Catch::ListenerRegistrar<::goro::testing::catch2_leak_listener_at_end> goro_catch2_leak_check_end_; \
    }                                                                                                            \
    static_assert(true, "")
#endif  // CATCH_CONFIG_EXTERNAL_INTERFACES

#define GORO_CATCH2_NO_GROWTH_IMPL(fail, fn, iterations)                                          \
    do {                                                                                          \
        std::string goro_growth_report_;                                                          \
        if (!::goro::testing::find_growth((fn), (iterations), &goro_growth_report_).empty())     \
            fail(goro_growth_report_);                                                            \
        else                                                                                      \
            SUCCEED("no group of tasks grew over " << (iterations) << " iterations");            \
    } while (false)

/// Fails the test case (and goes on) when a group of tasks grows with the iterations.
#define GORO_CHECK_NO_GROWTH(fn, iterations) GORO_CATCH2_NO_GROWTH_IMPL(FAIL_CHECK, fn, iterations)
/// The same, ending the test case.
#define GORO_REQUIRE_NO_GROWTH(fn, iterations) GORO_CATCH2_NO_GROWTH_IMPL(FAIL, fn, iterations)
