// goro/inspect/panic.hpp — the crash report: an exception escaping a detached task.
//
//   goro::go(worker());        // worker() throws std::runtime_error("boom")
//
// prints to stderr, like Go's runtime:
//
//   panic: boom [std::runtime_error]
//
//   goroutine 7 [running]:
//   worker(...)
//           src/worker.cpp:31
//   created by main in goroutine 1
//           src/main.cpp:12
//
//   goroutine 1 [chan receive]:
//   ...
//
// and terminates with std::abort() (SIGABRT). The first block is the task that
// panicked, at the last `co_await` its root frame reached (the frames between
// that point and the `throw` are already unwound: exceptions travel through
// co_await); then every other task, in Go's debug=2 form.
//
// A program can replace the default with `goro::set_panic_handler(fn)`; `fn`
// receives a `goro::panic_info` (the task's record, the exception, its message
// and type, and the whole report above as text). When `fn` returns, the task's
// frames are destroyed and it leaves the registry as if it had finished: the
// process goes on. `fn` runs on the worker that ran the task, must not throw
// (it is called from a noexcept context: a throw terminates), and must not
// block waiting for other tasks (it occupies a worker).
//
// Every program gets this report: goro/core/go.hpp includes this header and
// installs the report as goro's panic handler (`detail::panic_handler()`,
// registry.hpp) before the first task starts.
//
// THREAD SAFETY: panics on several workers at once are reported one at a time
// (a process-wide mutex); the first default report aborts the process. The
// report takes a snapshot, which stops the world from the panicking worker
// (allowed: the caller's own worker counts as stopped).
#pragma once

#include <atomic>
#include <exception>
// std::function only: libstdc++'s <functional> also brings the C++17
// searchers (hash tables, all of <algorithm>), ~13 MB of compiler memory in
// every program that includes goro/core.hpp.
#if __has_include(<bits/std_function.h>)
#include <bits/std_function.h>
#else
#include <functional>
#endif
#include <ostream>
#include <string>
#include <utility>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/inspect/snapshot.hpp>
#include <goro/core/stack.hpp>

namespace goro {

namespace detail {

// --- Go's debug=2 text, one block per task ---------------------------------
// Shared by the crash and leak reports. goro/inspect/dump.hpp owns the public
// formats and writes whole snapshots; these reports need blocks for chosen
// tasks (the panicking one first, or only the leaked ones), so they write
// them here, in the same shape as dump.hpp's debug=2:
//
//   goroutine 18 [chan receive, 5 minutes]:
//   worker(...)
//           file.cpp:16
//   created by start_workers in goroutine 1
//           file.cpp:23

/// One task's block, without the blank line that separates blocks.
GORO_DECL void write_debug2_task(std::ostream& out, const snapshot& snap, const task_record& r);

/// Blocks for the tasks for which `pick(record)` holds, in id order, each
/// followed by a blank line (as Go separates them).
template <class Pick>
void write_debug2(std::ostream& out, const snapshot& snap, Pick&& pick) {
    for (const task_record& r : snap.tasks())
        if (pick(r)) {
            write_debug2_task(out, snap, r);
            out << '\n';
        }
}

}  // namespace detail

/// What a panic handler is told.
struct panic_info {
    task_record task;              ///< the task the exception escaped (state running)
    std::exception_ptr error;      ///< the exception itself
    std::string message;           ///< what() for a std::exception, else a description
    std::string type;              ///< demangled type of the exception, or empty
    std::string report;            ///< the whole crash report (see the top of this header)
};

/// A replacement for the crash report (see the top of this header).
using panic_hook = std::function<void(const panic_info&)>;

namespace detail {

/// goro's panic handler (registry.hpp), installed by go.hpp before the first task starts.
GORO_DECL void report_panic(task_header& task, std::exception_ptr error) noexcept;

}  // namespace detail

/// Replaces what happens when an exception escapes a detached task; an empty
/// `fn` restores the default (print the report and abort). Returns the
/// previous hook (empty when it was the default).
GORO_DECL panic_hook set_panic_handler(panic_hook fn);

}  // namespace goro

#if GORO_BODIES
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <typeinfo>

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#define GORO_HAS_CXXABI 1
#else
#define GORO_HAS_CXXABI 0
#endif

namespace goro {

namespace detail {

inline void write_debug2_header(std::ostream& out, const snapshot& snap, const task_record& r) {
    out << "goroutine " << r.id;
    if (r.meta && !r.meta->name.empty()) {
        // As dump.hpp writes it: name="…", escaped like Go's %q for ASCII.
        static constexpr char hexd[] = "0123456789abcdef";
        out << " name=\"";
        for (unsigned char c : r.meta->name) {
            if (c == '"' || c == '\\') out << '\\' << char(c);
            else if (c == '\n') out << "\\n";
            else if (c == '\t') out << "\\t";
            else if (c < 0x20 || c == 0x7f) out << "\\x" << hexd[c >> 4] << hexd[c & 15];
            else out << char(c);
        }
        out << '"';
    }
    out << " [";
    switch (r.state) {
    case task_state::running: out << "running"; break;
    case task_state::runnable: out << "runnable"; break;
    case task_state::waiting: out << (r.wait_reason ? r.wait_reason : "waiting"); break;
    }
    if (r.state == task_state::waiting && r.since_ns > 0) {
        std::int64_t minutes = (snap.taken_at_ns() - r.since_ns) / 60'000'000'000;
        if (minutes >= 1) out << ", " << minutes << " minutes";  // Go's spelling, "1 minutes" included
    }
    out << "]:\n";
}

GORO_DECL void write_debug2_task(std::ostream& out, const snapshot& snap, const task_record& r) {
    write_debug2_header(out, snap, r);
    bool any = false;
    for (const site& s : snap.stack(r)) {
        // A frame that never suspended has no site yet (its root ran straight to a throw).
        if (s.line() == 0 && (!s.function_name() || !*s.function_name())) continue;
        any = true;
        out << clean_function_name(s.function_name() ? s.function_name() : "") << "(...)\n\t"
            << (s.file_name() ? s.file_name() : "") << ':' << s.line() << '\n';
    }
    // Pseudo-frames, spelled as goro/inspect/dump.hpp spells them.
    if (!r.frames_known) out << "\t(stack unavailable: running)\n";
    else if (!any) out << (r.state == task_state::runnable ? "\t(not started)\n" : "\t(no co_await reached yet)\n");
    // A thread in block_on is the bottom of its own stack, like Go's main: no creator.
    if (r.kind == task_kind::task) {
        const site& c = r.created_by;
        std::string creator = clean_function_name(c.function_name() ? c.function_name() : "");
        out << "created by " << (creator.empty() ? "?" : creator);
        if (r.parent_id) out << " in goroutine " << r.parent_id;
        out << "\n\t" << (c.file_name() ? c.file_name() : "") << ':' << c.line() << '\n';
    }
}

/// The name of an exception's dynamic type, demangled where the ABI allows;
/// call inside a catch block. Empty when unknown.
inline std::string current_exception_type_name() {
#if GORO_HAS_CXXABI
    const std::type_info* t = abi::__cxa_current_exception_type();
    if (!t) return {};
    int status = 0;
    char* d = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
    std::string out = (status == 0 && d) ? std::string(d) : std::string(t->name());
    std::free(d);
    return out;
#else
    return {};
#endif
}

struct panic_state {
    ranked_lock<std::mutex, lock_rank::panic_report> report_mu;  // one report at a time
    ranked_lock<std::mutex, lock_rank::panic_hook> hook_mu;      // guards hook
    std::shared_ptr<const goro::panic_hook> hook;
};

inline panic_state& the_panic_state() {
    static panic_state* s = new panic_state();  // never destroyed: panics may come during exit
    return *s;
}

/// Builds the report for `task`, which is running on this worker and whose
/// frames are those of its last suspension.
inline panic_info make_panic_info(task_header& task, std::exception_ptr error) {
    panic_info info;
    info.error = error;
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        info.message = e.what();
        info.type = current_exception_type_name();
    } catch (...) {
        info.type = current_exception_type_name();
        info.message = info.type.empty() ? "unknown exception" : "exception of type " + info.type;
    }
    snapshot snap = snapshot::take();
    const task_record* self = nullptr;
    for (const task_record& r : snap.tasks())
        if (r.id == task.id) self = &r;

    std::ostringstream out;
    out << "panic: " << info.message;
    if (!info.type.empty() && info.message.rfind("exception of type ", 0) != 0) out << " [" << info.type << ']';
    out << "\n\n";
    if (self) {
        info.task = *self;
        write_debug2_task(out, snap, *self);
        out << '\n';
    } else {
        // Cannot happen (the task is listed until it finishes); say so rather than lie.
        out << "goroutine " << task.id << " [running]:\n\t(not found in the snapshot)\n\n";
        info.task.id = task.id;
        info.task.state = task_state::running;
    }
    write_debug2(out, snap, [&](const task_record& r) { return r.id != task.id; });
    info.report = out.str();
    return info;
}

GORO_DECL void report_panic(task_header& task, std::exception_ptr error) noexcept {
    panic_state& ps = the_panic_state();
    std::shared_ptr<const goro::panic_hook> hook;
    {
        std::lock_guard g(ps.hook_mu);
        hook = ps.hook;
    }
    std::unique_lock g(ps.report_mu, std::defer_lock);
    if (!hook) g.lock();  // the default report ends the process: let one finish printing
    panic_info info;
    try {
        info = make_panic_info(task, error);
    } catch (...) {
        // Out of memory while formatting: fall back to the minimal report.
        default_panic(task, std::move(error));
    }
    if (hook) {
        (*hook)(info);
        return;
    }
    std::fwrite(info.report.data(), 1, info.report.size(), stderr);
    std::fflush(stderr);
    std::abort();
}

}  // namespace detail

GORO_DECL panic_hook set_panic_handler(panic_hook fn) {
    detail::panic_state& ps = detail::the_panic_state();
    std::shared_ptr<const goro::panic_hook> next;
    if (fn) next = std::make_shared<const panic_hook>(std::move(fn));
    std::lock_guard g(ps.hook_mu);
    std::shared_ptr<const goro::panic_hook> prev = std::exchange(ps.hook, std::move(next));
    // Reassert ours, in case something replaced the raw pointer meanwhile.
    detail::panic_handler().store(&detail::report_panic, std::memory_order_release);
    return prev ? *prev : panic_hook{};
}

}  // namespace goro
#endif  // GORO_BODIES
