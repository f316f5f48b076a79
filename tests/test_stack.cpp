// goro/core/stack.hpp: compiler function names cleaned to Go's spelling, and a
// task's own stack read from inside it.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <goro/core/go.hpp>
#include <goro/core/stack.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_stack {

namespace {

int outer_line = 0;

goro::task<std::vector<goro::stack_frame>> inner_stack() { co_return goro::current_stack(); }

goro::task<std::vector<goro::stack_frame>> outer_stack() {
    outer_line = __LINE__ + 1;
    auto frames = co_await inner_stack();
    co_return frames;
}

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

TEST_CASE("function names are cleaned up", "[stack]") {
    CHECK(goro::clean_function_name("void ns::worker(ns::worker(int)::_ZN2ns6workerEi.Frame*)") == "ns::worker");
    CHECK(goro::clean_function_name("goro::task<int> ns::C::f(ns::C::f(int)::_ZN.Frame*)") == "ns::C::f");
    CHECK(goro::clean_function_name("void main()::<lambda()>::operator()(main()::<lambda()>::_ZZ.Frame*)") ==
          "main()::{lambda}");
    CHECK(goro::clean_function_name("int main()") == "main");
    CHECK(goro::clean_function_name("worker") == "worker");
    CHECK(goro::clean_function_name("operator()") == "{lambda}");
    CHECK(goro::clean_function_name("void f(T) [with T = int]") == "f");
}

TEST_CASE("current_stack: inside a task, the callers' co_await lines, leaf first", "[stack]") {
    auto frames = goro::block_on(outer_stack());
    REQUIRE(!frames.empty());
    // The running leaf (inner_stack) has not suspended yet: it shows its own
    // function (its line is the compiler's: its closing brace on g++, its
    // declaration on clang++). Then its caller, suspended at the co_await of it.
    REQUIRE(frames.size() >= 2);
    CHECK(ends_with(frames[0].function, "inner_stack"));
    CHECK(ends_with(frames[0].file, "test_stack.cpp"));
    CHECK(ends_with(frames[1].function, "outer_stack"));
    CHECK(frames[1].line == static_cast<unsigned>(outer_line));
    CHECK(ends_with(frames[1].file, "test_stack.cpp"));
    for (const auto& f : frames) CHECK(f.line != 0);
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("current_stack: outside a task, empty", "[stack]") { CHECK(goro::current_stack().empty()); }

}  // namespace tests_stack
