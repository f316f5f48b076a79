// goro/core/stack.hpp — reading a task's logical stack: its chain of suspension sites.
//
//   auto frames = goro::current_stack();  // inside a task: leaf first, root last
//
// Each frame is (function, file, line) of a `co_await` that is suspended now.
// Names come from the compiler: g++ (std::source_location) gives the qualified
// name, but for a coroutine body the name of its "actor" wrapper, e.g.
//   void ns::worker(ns::worker(int)::_ZN2ns6workerEi.Frame*)
// which `clean_function_name` turns into `ns::worker`; clang++ 14 gives the
// bare name (`worker`). Lambdas read `f()::{lambda}`.
//
// Only call stack_of on a task that is not running: parked or runnable, with
// the world stopped (see goro/inspect/snapshot.hpp), or from the task itself.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <goro/core/frame.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>

namespace goro {

/// One frame of a task's logical stack.
struct stack_frame {
    std::string function;  ///< cleaned-up function name
    std::string file;
    unsigned line = 0;
};

/// Turns the compiler's spelling of a function into a readable name.
GORO_DECL std::string clean_function_name(std::string_view raw);

namespace detail {

GORO_DECL stack_frame to_frame(const site& s);

/// The task's stack, leaf first, names cleaned.
GORO_DECL std::vector<stack_frame> stack_of(const task_header& t);

}  // namespace detail

/// The stack of the task calling this (leaf first). Inside a task only.
GORO_DECL std::vector<stack_frame> current_stack();

}  // namespace goro

#if GORO_BODIES
namespace goro {

GORO_DECL std::string clean_function_name(std::string_view raw) {
    std::string_view s = raw;
    if (auto w = s.find(" [with "); w != std::string_view::npos) s = s.substr(0, w);
    // The argument list is the last balanced (...) group.
    if (!s.empty() && s.back() == ')') {
        int depth = 0;
        std::size_t i = s.size();
        while (i > 0) {
            --i;
            if (s[i] == ')') ++depth;
            else if (s[i] == '(' && --depth == 0) break;
        }
        s = s.substr(0, i);
    }
    // Drop the return type: text up to the last space outside <...> and (...).
    int depth = 0;
    std::size_t cut = std::string_view::npos;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c == '<' || c == '(') ++depth;
        else if ((c == '>' || c == ')') && depth > 0) --depth;
        else if (c == ' ' && depth == 0) cut = i;
    }
    if (cut != std::string_view::npos) s = s.substr(cut + 1);
    std::string out(s);
    if (out == "operator" && raw == "operator()") return "{lambda}";  // clang's bare lambda name
    // g++: "f()::<lambda(int)>::operator()" -> "f()::{lambda}"
    for (std::size_t p; (p = out.find("<lambda(")) != std::string::npos;) {
        std::size_t q = p + 7;  // at '('
        int d = 0;
        std::size_t e = q;
        for (; e < out.size(); ++e) {
            if (out[e] == '(') ++d;
            else if (out[e] == ')' && --d == 0) break;
        }
        std::size_t end = out.find('>', e);
        if (end == std::string::npos) break;
        out.replace(p, end - p + 1, "{lambda}");
    }
    const std::string_view op = "::operator()";
    if (out.size() > op.size() && out.compare(out.size() - op.size(), op.size(), op) == 0 &&
        out.find("{lambda}") != std::string::npos)
        out.erase(out.size() - op.size());
    return out;
}

namespace detail {

GORO_DECL stack_frame to_frame(const site& s) {
    return stack_frame{clean_function_name(s.function_name()), s.file_name() ? s.file_name() : "",
                       static_cast<unsigned>(s.line())};
}

GORO_DECL std::vector<stack_frame> stack_of(const task_header& t) {
    std::vector<stack_frame> out;
    for (const promise_base* p = t.leaf; p; p = p->parent_) out.push_back(to_frame(p->site_));
    return out;
}

}  // namespace detail

GORO_DECL std::vector<stack_frame> current_stack() {
    task_header* t = detail::tls_current_task;
    if (!t) return {};
    auto frames = detail::stack_of(*t);
    // A running leaf that has not suspended yet shows its own function (ENTRY
    // SITE, goro/core/task.hpp); a frame without any site is left out.
    if (!frames.empty() && frames.front().line == 0) frames.erase(frames.begin());
    return frames;
}

}  // namespace goro
#endif  // GORO_BODIES
