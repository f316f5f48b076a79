// goro/inspect/leak_check.hpp — goleak for C++: fail a test that leaves tasks alive.
//
//   goro::testing::verify_none();                              // throws leak_error
//   auto before = goro::testing::ignore_current();             // a baseline
//   ... run the code under test ...
//   goro::testing::verify_none(before, goro::testing::ignore_top_function("serve"));
//
//   auto r = goro::testing::find_leaks(before);                // no throw
//   if (!r.ok()) std::cerr << r.report;
//
// A task is a leak when it is listed (alive: started by go() and not finished,
// or a thread waiting in block_on) and no option excuses it. The caller itself
// (when it is a task) never counts. Tasks that are just finishing are not
// blamed: the check retries with a growing pause (10 µs doubling up to
// 100 ms) for `max_wait` in all (default 500 ms) before it reports. The report
// lists each leaked task in Go's debug=2 form (goro/inspect/panic.hpp writes it).
//
// OPTIONS (any number, in any order, also as a std::vector<option>)
//   ignore_top_function(f)   the leaf frame (where the task is parked) is f
//   ignore_any_function(f)   some frame of its stack is f
//   ignore_created_by(f)     go() was called from f (its spawn site)
//   ignore_current()         the tasks alive now (a baseline: their ids)
//   ignore_ids(ids)          the given task ids
//   max_wait(d)              the retry budget (0: one look, no retry)
//
// FUNCTION NAMES are compared after `goro::clean_function_name` (stack.hpp),
// whole names, not substrings: "ns::worker" matches the frame "ns::worker".
// g++ records qualified names and clang++ bare ones, so when either side is
// unqualified only the last component is compared: "worker" matches
// "ns::worker" and "ns::worker" matches a clang frame "worker". Lambdas read
// "f()::{lambda}" on g++ and "{lambda}" on clang++.
//
// Test frameworks: goro/catch2.hpp (Catch2 v2 listener) and goro/gtest.hpp
// (GoogleTest listener) run this check after every test. A test that leaves
// tasks on purpose calls `goro::testing::allow_leaks()`; GORO_LEAK_CHECK=off
// in the environment turns those listeners off.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <ostream>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/algo.hpp>
#include <goro/core/stack.hpp>

namespace goro::testing {

/// One rule of a leak check (see OPTIONS above).
struct option {
    enum class kind : std::uint8_t { top_function, any_function, created_by, ids, max_wait };
    kind what = kind::ids;
    std::string function{};                                  // cleaned
    std::shared_ptr<const std::vector<std::uint64_t>> ids{};  // sorted
    std::chrono::nanoseconds wait{0};
};

inline option ignore_top_function(std::string_view f) {
    return {option::kind::top_function, clean_function_name(f), nullptr, {}};
}
inline option ignore_any_function(std::string_view f) {
    return {option::kind::any_function, clean_function_name(f), nullptr, {}};
}
inline option ignore_created_by(std::string_view f) {
    return {option::kind::created_by, clean_function_name(f), nullptr, {}};
}
inline option ignore_ids(std::vector<std::uint64_t> ids) {
    detail::stable_sort(ids.data(), ids.data() + ids.size(), [](std::uint64_t a, std::uint64_t b) { return a < b; });
    return {option::kind::ids, {}, std::make_shared<const std::vector<std::uint64_t>>(std::move(ids)), {}};
}
/// The tasks alive now, as a baseline; cheap when none is.
GORO_DECL option ignore_current();
template <class Rep, class Period>
option max_wait(std::chrono::duration<Rep, Period> d) {
    return {option::kind::max_wait, {}, nullptr, std::chrono::duration_cast<std::chrono::nanoseconds>(d)};
}

/// The result of a check: the leaked tasks' ids and the printable report.
struct leak_result {
    std::vector<std::uint64_t> leaked;  ///< ascending ids; empty: no leak
    std::string report;                 ///< empty when ok(); else a header line and debug=2 blocks

    bool ok() const noexcept { return leaked.empty(); }
    std::size_t count() const noexcept { return leaked.size(); }
};

/// Thrown by verify_none; what() is the whole report.
class leak_error : public goro::error {
public:
    explicit leak_error(leak_result r) : goro::error(r.report), result_(std::move(r)) {}
    const leak_result& result() const noexcept { return result_; }

private:
    leak_result result_;
};

/// Whether the cleaned function name `name` is `pattern` (see FUNCTION NAMES).
GORO_DECL bool function_matches(std::string_view pattern, std::string_view name) noexcept;

/// Looks for leaked tasks, retrying (see the top of this header); never throws
/// for a leak.
GORO_DECL leak_result find_leaks(const std::vector<option>& opts);

template <class... Options>
    requires(std::is_convertible_v<const Options&, const option&> && ...)
leak_result find_leaks(const Options&... opts) {
    return find_leaks(std::vector<option>{opts...});
}

/// Throws leak_error (what(): "goro::testing::verify_none: found N unexpected
/// goroutines:" and the debug=2 blocks) when a task other than the allowed
/// ones is alive.
GORO_DECL void verify_none(const std::vector<option>& opts);

template <class... Options>
    requires(std::is_convertible_v<const Options&, const option&> && ...)
void verify_none(const Options&... opts) {
    verify_none(std::vector<option>{opts...});
}

// --- shared by the test framework listeners -------------------------------

namespace detail {
inline std::atomic<bool>& leaks_allowed_flag() noexcept {
    static std::atomic<bool> f{false};
    return f;
}
}  // namespace detail

/// The running test may leave tasks alive: the listener's check after it is
/// skipped (its tasks then join the next test's baseline). Reset at each test start.
inline void allow_leaks() noexcept { detail::leaks_allowed_flag().store(true, std::memory_order_relaxed); }

/// False when GORO_LEAK_CHECK is "off", "0" or "false" (the listeners do nothing).
GORO_DECL bool leak_check_enabled();

/// For a test program's main, like goleak.VerifyTestMain: returns `status`,
/// or 1 (when `status` is 0) after printing the leaked tasks to `err`.
GORO_DECL int verify_test_main(int status, const std::vector<option>& opts = {}, std::ostream& err = std::cerr);

/// What the listeners do around each test.
class per_test_check {
public:
    explicit per_test_check(std::vector<option> extra = {}) : extra_(std::move(extra)), enabled_(leak_check_enabled()) {}

    void starting() {
        detail::leaks_allowed_flag().store(false, std::memory_order_relaxed);
        if (enabled_) baseline_ = ignore_current();
    }
    /// The failure message for `test_name`, or empty when all is well.
    std::string ended(std::string_view test_name);

private:
    std::vector<option> extra_;
    option baseline_{};
    bool enabled_;
};

}  // namespace goro::testing

#if GORO_BODIES
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include <goro/core/go.hpp>
#include <goro/core/registry.hpp>
#include <goro/inspect/panic.hpp>
#include <goro/inspect/snapshot.hpp>

namespace goro::testing {

GORO_DECL option ignore_current() {
    std::vector<std::uint64_t> ids;
    if (num_goroutines() > 0) {
        snapshot s = snapshot::take();
        ids.reserve(s.total());
        for (const task_record& r : s.tasks()) ids.push_back(r.id);
    }
    return ignore_ids(std::move(ids));
}

namespace detail {

/// The last component of a cleaned name, outside <...> and (...): "ns::f" -> "f".
inline std::string_view unqualified(std::string_view name) noexcept {
    int depth = 0;
    std::size_t start = 0;
    for (std::size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        if (c == '<' || c == '(' || c == '{') ++depth;
        else if ((c == '>' || c == ')' || c == '}') && depth > 0) --depth;
        else if (c == ':' && depth == 0 && i + 1 < name.size() && name[i + 1] == ':') {
            start = i + 2;
            ++i;
        }
    }
    return name.substr(start);
}

}  // namespace detail

GORO_DECL bool function_matches(std::string_view pattern, std::string_view name) noexcept {
    if (pattern.empty() || name.empty()) return false;
    if (pattern == name) return true;
    std::string_view pt = detail::unqualified(pattern), nt = detail::unqualified(name);
    bool pattern_bare = pt.size() == pattern.size(), name_bare = nt.size() == name.size();
    return (pattern_bare || name_bare) && pt == nt;
}

namespace detail {

struct leak_rules {
    std::vector<const option*> top, any, created;
    std::vector<const std::vector<std::uint64_t>*> ids;
    std::chrono::nanoseconds wait = std::chrono::milliseconds(500);

    explicit leak_rules(const std::vector<option>& opts) {
        for (const option& o : opts) switch (o.what) {
            case option::kind::top_function: top.push_back(&o); break;
            case option::kind::any_function: any.push_back(&o); break;
            case option::kind::created_by: created.push_back(&o); break;
            case option::kind::ids:
                if (o.ids) ids.push_back(o.ids.get());
                break;
            case option::kind::max_wait: wait = o.wait; break;
            }
    }

    bool excused(const snapshot& snap, const task_record& r) const {
        for (auto* v : ids)
            if (goro::detail::sorted_contains(*v, r.id)) return true;
        if (!created.empty()) {
            std::string c = clean_function_name(r.created_by.function_name() ? r.created_by.function_name() : "");
            for (const option* o : created)
                if (function_matches(o->function, c)) return true;
        }
        if (top.empty() && any.empty()) return false;
        bool leaf = true;
        for (const ::goro::detail::site& s : snap.stack(r)) {
            if (s.line() == 0 && (!s.function_name() || !*s.function_name())) continue;  // never suspended
            std::string f = clean_function_name(s.function_name());
            if (leaf)
                for (const option* o : top)
                    if (function_matches(o->function, f)) return true;
            leaf = false;
            for (const option* o : any)
                if (function_matches(o->function, f)) return true;
        }
        return false;
    }
};

inline leak_result find_leaks_once(const leak_rules& rules) {
    leak_result res;
    if (num_goroutines() == 0) return res;
    snapshot snap = snapshot::take();
    const std::uint64_t self = this_task_id();
    for (const task_record& r : snap.tasks())  // ascending ids
        if (r.id != self && !rules.excused(snap, r)) res.leaked.push_back(r.id);
    if (res.leaked.empty()) return res;
    std::ostringstream out;
    out << "found " << res.leaked.size() << " unexpected goroutine" << (res.leaked.size() == 1 ? "" : "s")
        << ":\n\n";
    ::goro::detail::write_debug2(out, snap, [&](const task_record& r) {
        return goro::detail::sorted_contains(res.leaked, r.id);
    });
    res.report = out.str();
    return res;
}

}  // namespace detail

GORO_DECL leak_result find_leaks(const std::vector<option>& opts) {
    detail::leak_rules rules(opts);
    auto deadline = std::chrono::steady_clock::now() + rules.wait;
    auto pause = std::chrono::microseconds(10);
    for (;;) {
        leak_result r = detail::find_leaks_once(rules);
        auto now = std::chrono::steady_clock::now();
        if (r.ok() || now >= deadline) return r;
        std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(pause, deadline - now));
        pause = std::min(pause * 2, std::chrono::microseconds(100'000));
    }
}

GORO_DECL void verify_none(const std::vector<option>& opts) {
    leak_result r = find_leaks(opts);
    if (r.ok()) return;
    r.report.insert(0, "goro::testing::verify_none: ");
    throw leak_error(std::move(r));
}

GORO_DECL bool leak_check_enabled() {
    const char* e = std::getenv("GORO_LEAK_CHECK");
    if (!e) return true;
    return !(std::strcmp(e, "off") == 0 || std::strcmp(e, "0") == 0 || std::strcmp(e, "false") == 0);
}

GORO_DECL int verify_test_main(int status, const std::vector<option>& opts, std::ostream& err) {
    if (!leak_check_enabled()) return status;
    leak_result r = find_leaks(opts);
    if (r.ok()) return status;
    err << "goro leak check: goroutines alive at the end of the test run: " << r.report << std::flush;
    return status ? status : 1;
}

GORO_DECL std::string per_test_check::ended(std::string_view test_name) {
    if (!enabled_ || detail::leaks_allowed_flag().load(std::memory_order_relaxed)) return {};
    std::vector<option> opts = extra_;
    opts.push_back(baseline_);
    leak_result r = find_leaks(opts);
    if (r.ok()) return {};
    return "goro leak check: test \"" + std::string(test_name) + "\" left goroutines alive: " + r.report;
}

}  // namespace goro::testing
#endif  // GORO_BODIES
