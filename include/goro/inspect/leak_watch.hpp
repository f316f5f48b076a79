// goro/inspect/leak_watch.hpp — which groups of tasks are leaking, since when, how fast.
//
//   goro::leak_watch w;                 // interval 10 s, window 6 samples
//   w.start();                          // a sampling thread (or call w.sample_now() yourself)
//   ...
//   for (const auto& g : w.suspects()) std::cerr << g.frames[0].function << " +" << g.growth_per_minute << "/min\n";
//   std::cout << w.report_text();       // what /debug/goro/leaks serves
//
// A debug_server starts one (debug_server_options::leak_watch_interval, 10 s;
// 0: none) and serves it at /debug/goro/leaks, /debug/goro/leaks?format=json
// and in /metrics (see goro/http/routes.hpp).
//
// SAMPLING. Each sample takes one goroutine profile (goro/inspect/snapshot.hpp:
// the world stops only to begin an epoch, then records are copied while tasks
// run) and groups it exactly as debug=1 does (same stack and labels). Each
// group is known by its stable key (the hash of its sites' ids and labels,
// goro::site_id: the same in every run of the same binary), so a group keeps
// its identity from sample to sample. The watch keeps, per group, a ring of the
// last `history` counts, its stack (at most `max_frames` frames), labels, and
// its oldest task's wait reason and parked time. A group absent from a sample
// is forgotten at once (its count went to zero: not a leak); only the
// `max_groups` largest groups of a sample are kept.
//
// MEMORY BOUND. history × 4 bytes of counts per group, plus its frames (each
// a function name and a file name) and labels: with the defaults (history 60,
// max_groups 2,048, max_frames 32) at most 2,048 × (240 B + the text of 32
// frames); about 1 KiB per group for typical C++ names, so ~2 MiB at worst,
// and nothing grows with the number of samples or tasks. Each sample also
// briefly holds one snapshot (64 bytes per task plus its frames), freed when
// the sample is done.
//
// THE SUSPECT RULE. Over the last `window` samples (n, default 6: one minute
// at 10 s) a group is a suspect when all of these hold:
//   (a) its count rose in at least `min_rises` (k, default 4) of the n-1 steps
//       between those samples (a rise: strictly more than the sample before);
//   (b) it grew by at least `min_growth` tasks (default 5) from the first to
//       the last sample of the window;
//   (c) the last sample is the window's highest: it is still growing now;
//   (d) it is not merely following load. The load is the spawn rate (tasks
//       started between two samples, from the registry's counter of tasks
//       ever started; per step, so samples taken by hand count steps of work). Tasks that serve requests are as many as the
//       requests in flight: they grow when the rate grows and stop growing
//       when it levels. So while the rate rose by `load_ramp` (default 1.25:
//       25 %) or more from the window's first step to its last, a group must
//       grow by a factor more than 10 % larger than the rate's to be a suspect.
// A leak keeps growing as long as any work arrives, so (a)–(c) hold for it at
// a steady load, and after a ramp. A load ramp that levels off stops (a) and
// (c) within one window once it is level: no suspect then, whatever the
// plateau. During a ramp (d) keeps the groups that grow in proportion to the
// load quiet; a leak is then flagged when the ramp levels (or earlier, if it
// outgrows the load). A group newer than the window counts as 0 in the
// samples before it appeared (the watch saw it absent), so a new leak starts
// from zero; a group that was present but not kept (max_groups) is judged
// only once the window lies within the samples that kept it. Small or slow leaks need a longer window or a lower min_growth;
// the defaults flag a leak of one task per 10-second step or more.
//
// growth_per_minute: (last − first count of the window) / the window's time.
// growing_since: the time of the sample just before the current run of
// non-decreasing counts began (walking back through the history).
//
// THREAD SAFETY: every member may be called from any thread; a mutex guards
// the state (never held while a snapshot is taken). sample_now() from inside a
// goro task works (it takes a snapshot like any dump); the sampling thread is
// an ordinary std::thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <goro/core/go.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/stack.hpp>

namespace goro {

struct leak_watch_options {
    /// Time between two samples of the sampling thread (start()).
    std::chrono::nanoseconds interval = std::chrono::seconds(10);
    /// Counts kept per group (a ring); at least `window`.
    std::size_t history = 60;
    /// Samples the suspect rule looks at (n, at least 3).
    std::size_t window = 6;
    /// Rises needed among the window's n-1 steps (k, 1 to n-1).
    std::size_t min_rises = 4;
    /// Growth over the window needed (tasks, at least 1).
    std::size_t min_growth = 5;
    /// The spawn rate's rise over the window (a factor) from which a group
    /// must outgrow the load; 0 turns rule (d) off.
    double load_ramp = 1.25;
    /// Largest groups kept per sample.
    std::size_t max_groups = 2048;
    /// Frames kept per group's stack (leaf first).
    std::size_t max_frames = 32;
};

/// One group as the watch knows it (a copy: safe to keep).
struct leak_group {
    std::uint64_t key = 0;                   ///< stable group id: site ids and labels
    std::size_t count = 0;                   ///< tasks in the group at the last sample
    std::vector<std::uint64_t> site_ids;     ///< leaf first (0 for a pseudo-frame)
    std::vector<stack_frame> frames;         ///< leaf first, at most max_frames
    std::vector<std::pair<std::string, std::string>> labels;
    std::string wait_reason;                 ///< of its longest-parked task ("" if none waits)
    std::int64_t oldest_wait_ns = 0;         ///< how long that task had been parked at the last sample
    std::vector<std::uint32_t> history;      ///< counts, oldest first, the last one is `count`
    bool suspect = false;
    double growth_per_minute = 0;            ///< over the window (suspects; else 0)
    std::int64_t growing_since_unix_ns = 0;  ///< wall-clock time (suspects; else 0)
};

/// The watch's state at its last sample.
struct leak_report {
    std::uint64_t samples = 0;             ///< samples taken so far
    std::int64_t last_sample_unix_ns = 0;  ///< 0: none yet
    std::size_t groups_seen = 0;           ///< groups in the last sample (kept or not)
    std::size_t total_tasks = 0;           ///< tasks in the last sample
    std::int64_t last_sample_cpu_ns = 0;   ///< CPU time of the last sample (the sampling thread's)
    std::int64_t last_sample_pause_ns = 0; ///< the world's stop in the last sample
    std::vector<leak_group> suspects;      ///< by growth per minute, descending
    std::vector<leak_group> groups;        ///< the kept groups, by count descending
};

class snapshot;  // goro/inspect/snapshot.hpp (the bodies include it)

namespace detail {

class profile_view;  // goro/inspect/pprof.hpp

GORO_DECL std::int64_t thread_cpu_ns() noexcept;

inline std::int64_t unix_now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/// "2026-12-06T23:10:00Z" (UTC, whole seconds).
GORO_DECL std::string rfc3339(std::int64_t unix_ns);

}  // namespace detail

class leak_watch {
public:
    explicit leak_watch(leak_watch_options o = {});
    ~leak_watch() { stop(); }
    leak_watch(const leak_watch&) = delete;
    leak_watch& operator=(const leak_watch&) = delete;

    const leak_watch_options& options() const noexcept { return opt_; }

    /// Starts the sampling thread: a sample every `interval`, the first one
    /// after one interval. Throws std::logic_error when already started.
    void start();
    /// Stops and joins the sampling thread (idempotent).
    void stop();
    bool running() const {
        std::lock_guard g(thread_mu_);
        return thread_.joinable();
    }

    /// Takes one sample now and applies the suspect rule.
    void sample_now() { sample_at(std::chrono::steady_clock::now()); }
    /// The same, as if taken at `at` (tests drive time explicitly: growth per
    /// minute and growing_since are computed from these times). Times must
    /// not go backwards.
    void sample_at(std::chrono::steady_clock::time_point at);

    std::uint64_t samples() const {
        std::lock_guard g(mu_);
        return seq_;
    }

    /// The suspects at the last sample, by growth per minute descending.
    std::vector<leak_group> suspects() const { return report().suspects; }

    /// Everything known at the last sample.
    leak_report report() const;

    /// The report in the debug=1 shape (what /debug/goro/leaks serves).
    std::string report_text() const { return to_text(report(), opt_); }
    /// The report as JSON (/debug/goro/leaks?format=json).
    std::string report_json() const { return to_json(report(), opt_); }

    // --- formats (static: also for a report copied out earlier) ---

    static std::string to_text(const leak_report& r, const leak_watch_options& o);

    /// One group in the debug=1 shape, with its suspect, history and labels lines.
    static void write_group(std::string& out, const leak_group& g);

    static std::string to_json(const leak_report& r, const leak_watch_options& o);

    static std::string duration_text(std::chrono::nanoseconds d);

private:
    struct sample_meta {
        std::int64_t steady_ns = 0;
        std::int64_t unix_ns = 0;
        std::uint64_t spawned = 0;  // registry total_added at the sample
        bool truncated = false;     // more groups than max_groups: some were not kept
    };
    struct tracked {
        std::uint64_t key = 0;
        std::uint64_t first_seq = 0;  // the first sample in which it was kept
        bool zero_before = false;     // the sample before first_seq kept every group: it was absent (0)
        std::vector<std::uint32_t> ring;
        std::vector<std::uint64_t> site_ids;
        std::vector<stack_frame> frames;
        std::vector<std::pair<std::string, std::string>> labels;
        std::string wait_reason;
        std::int64_t oldest_wait_ns = 0;
        bool suspect = false;
        double growth_per_minute = 0;
        std::int64_t growing_since_unix_ns = 0;
    };

    void run();

    std::uint32_t count_at(const tracked& t, std::uint64_t seq) const noexcept {
        return seq < t.first_seq ? 0 : t.ring[seq % opt_.history];
    }

    void ingest(const snapshot& s, const detail::profile_view& v, std::chrono::steady_clock::time_point at,
                std::uint64_t spawned);

    /// Applies the suspect rule (top of this header) to `t` at sample `seq`.
    void judge(tracked& t, std::uint64_t seq) const;

    /// Tasks started in the step that ends at sample `seq` (>= 1). Per step,
    /// not per second: the sampling thread's steps are equally long, and
    /// samples taken by hand (a test, /debug/goro/leaks/sample) are steps of
    /// work, however long they took.
    double rate(std::uint64_t seq) const noexcept;

    leak_group view(const tracked& t) const;

    const leak_watch_options opt_;
    mutable std::mutex mu_;
    std::uint64_t seq_ = 0;
    std::vector<sample_meta> meta_;
    std::unordered_map<std::uint64_t, tracked> tracked_;
    std::size_t groups_seen_ = 0, total_tasks_ = 0;
    std::int64_t last_cpu_ns_ = 0, last_pause_ns_ = 0;

    mutable std::mutex thread_mu_;
    std::mutex cv_mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace goro

namespace goro::testing {

/// Thrown by expect_no_growth; what() is the report (the growing groups' stacks).
class growth_error : public goro::error {
public:
    explicit growth_error(std::string report, std::vector<leak_group> grown)
        : goro::error(std::move(report)), grown_(std::move(grown)) {}
    const std::vector<leak_group>& grown() const noexcept { return grown_; }

private:
    std::vector<leak_group> grown_;
};

/// The groups that grew with the iteration count while `fn` ran `iterations`
/// times (see expect_no_growth); empty when none did. `report` gets the text.
template <class F>
std::vector<leak_group> find_growth(F&& fn, int iterations, std::string* report = nullptr) {
    if (iterations < 3)
        throw std::invalid_argument("goro::testing::expect_no_growth: iterations must be at least 3, not " +
                                    std::to_string(iterations));
    auto run_once = [&] {
        if constexpr (std::is_void_v<std::invoke_result_t<F&>>) fn();
        else block_on(fn());
    };
    const std::size_t n = static_cast<std::size_t>(iterations);
    leak_watch_options o;
    o.window = n + 1;
    o.history = n + 2;
    o.min_rises = std::max<std::size_t>(1, n / 2);
    o.min_growth = std::max<std::size_t>(1, n / 2);
    o.load_ramp = 0;
    leak_watch w(o);
    run_once();  // warm-up: pools and caches that start on first use
    auto t = std::chrono::steady_clock::now();
    w.sample_at(t);
    for (std::size_t i = 0; i < n; ++i) {
        run_once();
        t += std::chrono::seconds(1);
        w.sample_at(t);
    }
    std::vector<leak_group> grown = w.suspects();
    if (report && !grown.empty()) {
        *report = "goro::testing::expect_no_growth: " + std::to_string(grown.size()) +
                  (grown.size() == 1 ? " group" : " groups") + " of tasks grew with the iterations (" +
                  std::to_string(iterations) + " runs; counts after each in `# history`):\n\n";
        for (const leak_group& g : grown) leak_watch::write_group(*report, g);
    }
    return grown;
}

/// Runs `fn` (void(), or returning an awaitable such as goro::task<>, which is
/// block_on'd) once to warm up, then `iterations` times (at least 3), taking a
/// goroutine profile after each; throws growth_error, whose what() prints each
/// growing group's stack, when a group grew with the iteration count: it rose
/// after at least half of the runs and by at least iterations/2 tasks overall,
/// and is at its highest at the end. Catches leaks in pools that outlive the
/// test (verify_none cannot: the pool's own tasks are alive by design).
/// Call it from a plain thread (it block_on's), not from inside a task.
template <class F>
void expect_no_growth(F&& fn, int iterations = 10) {
    std::string report;
    std::vector<leak_group> grown = find_growth(std::forward<F>(fn), iterations, &report);
    if (!grown.empty()) throw growth_error(std::move(report), std::move(grown));
}

}  // namespace goro::testing

#if GORO_BODIES
#include <ctime>

#include <goro/inspect/dump.hpp>
#include <goro/inspect/pprof.hpp>
#include <goro/inspect/snapshot.hpp>

namespace goro::detail {

GORO_DECL std::int64_t thread_cpu_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

GORO_DECL std::string rfc3339(std::int64_t unix_ns) {
    std::time_t t = static_cast<std::time_t>(unix_ns / 1'000'000'000);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char b[32];
    std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

}  // namespace goro::detail

namespace goro {

GORO_DECL leak_watch::leak_watch(leak_watch_options o) : opt_(o) {
    const char* op = "goro::leak_watch";
    if (opt_.window < 3) throw std::invalid_argument(std::string(op) + ": window must be at least 3 samples");
    if (opt_.history < opt_.window)
        throw std::invalid_argument(std::string(op) + ": history must be at least window");
    if (opt_.history > 100000) throw std::invalid_argument(std::string(op) + ": history must be at most 100000");
    if (opt_.min_rises < 1 || opt_.min_rises > opt_.window - 1)
        throw std::invalid_argument(std::string(op) + ": min_rises must be between 1 and window-1");
    if (opt_.min_growth < 1) throw std::invalid_argument(std::string(op) + ": min_growth must be at least 1");
    if (opt_.interval.count() <= 0) throw std::invalid_argument(std::string(op) + ": interval must be positive");
    if (opt_.max_groups < 1) throw std::invalid_argument(std::string(op) + ": max_groups must be at least 1");
    meta_.resize(opt_.history);
}

GORO_DECL void leak_watch::start() {
    std::lock_guard g(thread_mu_);
    if (thread_.joinable()) throw std::logic_error("goro::leak_watch::start: already started");
    stopping_ = false;
    thread_ = std::thread([this] { run(); });
}

GORO_DECL void leak_watch::stop() {
    std::lock_guard g(thread_mu_);
    if (!thread_.joinable()) return;
    {
        std::lock_guard l(cv_mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

GORO_DECL void leak_watch::sample_at(std::chrono::steady_clock::time_point at) {
    const std::int64_t cpu0 = detail::thread_cpu_ns();
    snapshot s = snapshot::take();
    detail::profile_view v(s);
    const std::uint64_t spawned = detail::the_registry().total_added();
    std::lock_guard g(mu_);
    ingest(s, v, at, spawned);
    last_cpu_ns_ = detail::thread_cpu_ns() - cpu0;
    last_pause_ns_ = s.copy_ns();
}

GORO_DECL leak_report leak_watch::report() const {
    std::lock_guard g(mu_);
    leak_report r;
    r.samples = seq_;
    r.last_sample_unix_ns = seq_ ? meta_[(seq_ - 1) % opt_.history].unix_ns : 0;
    r.groups_seen = groups_seen_;
    r.total_tasks = total_tasks_;
    r.last_sample_cpu_ns = last_cpu_ns_;
    r.last_sample_pause_ns = last_pause_ns_;
    r.groups.reserve(tracked_.size());
    for (const auto& [k, t] : tracked_) r.groups.push_back(view(t));
    std::sort(r.groups.begin(), r.groups.end(), [](const leak_group& a, const leak_group& b) {
        if (a.count != b.count) return a.count > b.count;
        return a.key < b.key;
    });
    for (const leak_group& lg : r.groups)
        if (lg.suspect) r.suspects.push_back(lg);
    std::stable_sort(r.suspects.begin(), r.suspects.end(), [](const leak_group& a, const leak_group& b) {
        return a.growth_per_minute > b.growth_per_minute;
    });
    return r;
}

GORO_DECL std::string leak_watch::to_text(const leak_report& r, const leak_watch_options& o) {
    std::string out = "goro leak watch: " + std::to_string(r.suspects.size()) + " suspect" +
                      (r.suspects.size() == 1 ? "" : "s") + " of " + std::to_string(r.groups_seen) +
                      " groups, " + std::to_string(r.total_tasks) + " tasks; " + std::to_string(r.samples) +
                      " samples, every " + duration_text(o.interval) + "\n";
    out += "# rule: rose in >= " + std::to_string(o.min_rises) + " of the last " + std::to_string(o.window - 1) +
           " steps, grew by >= " + std::to_string(o.min_growth) +
           ", highest now, and outgrew the spawn rate while it ramped\n";
    if (r.samples == 0) out += "# no sample yet\n";
    out += '\n';
    for (const leak_group& g : r.suspects) write_group(out, g);
    return out;
}

GORO_DECL void leak_watch::write_group(std::string& out, const leak_group& g) {
    std::vector<std::string> hex;
    std::vector<detail::text_frame> frames;
    {
        out += std::to_string(g.count) + " @";
        for (std::uint64_t id : g.site_ids) {
            char b[20];
            hex.emplace_back(b, detail::format_hex(b, id));
            out += ' ';
            out += hex.back();
        }
        out += '\n';
        char rate[32];
        std::snprintf(rate, sizeof rate, "%+.1f", g.growth_per_minute);
        out += g.suspect ? "# suspect: " : "# growth: ";
        out += rate;
        out += "/min since " + (g.growing_since_unix_ns ? detail::rfc3339(g.growing_since_unix_ns) : std::string("-")) + "; oldest [" +
               (g.wait_reason.empty() ? std::string("running") : g.wait_reason);
        if (std::int64_t m = g.oldest_wait_ns / 60'000'000'000; m >= 1)
            out += ", " + std::to_string(m) + (m == 1 ? " minute" : " minutes");
        out += "]\n# history:";
        for (std::uint32_t c : g.history) out += ' ' + std::to_string(c);
        out += '\n';
        detail::write_labels_line(out, g.labels);
        for (std::size_t i = 0; i < g.frames.size(); ++i) {
            const stack_frame& f = g.frames[i];
            frames.push_back(detail::text_frame{hex[i], f.function, f.file, f.line, detail::utf8_width(f.function)});
        }
        detail::write_frame_lines(out, frames);
        out += '\n';
    }
}

GORO_DECL std::string leak_watch::to_json(const leak_report& r, const leak_watch_options& o) {
    std::string out = "{\"samples\":" + std::to_string(r.samples) +
                      ",\"interval_ns\":" + std::to_string(o.interval.count()) +
                      ",\"window\":" + std::to_string(o.window) + ",\"min_rises\":" + std::to_string(o.min_rises) +
                      ",\"min_growth\":" + std::to_string(o.min_growth) +
                      ",\"last_sample_unix_ns\":" + std::to_string(r.last_sample_unix_ns) +
                      ",\"groups_seen\":" + std::to_string(r.groups_seen) +
                      ",\"total_tasks\":" + std::to_string(r.total_tasks) +
                      ",\"last_sample_cpu_ns\":" + std::to_string(r.last_sample_cpu_ns) +
                      ",\"last_sample_pause_ns\":" + std::to_string(r.last_sample_pause_ns) + ",\"suspects\":[";
    auto group = [&](const leak_group& g) {
        char b[20];
        out += "\n{\"group\":\"";
        out.append(b, detail::format_hex(b, g.key));
        out += "\",\"count\":" + std::to_string(g.count) + ",\"suspect\":" + (g.suspect ? "true" : "false");
        char rate[32];
        std::snprintf(rate, sizeof rate, "%.3f", g.growth_per_minute);
        out += ",\"growth_per_minute\":";
        out += rate;
        out += ",\"growing_since_unix_ns\":" + std::to_string(g.growing_since_unix_ns);
        out += ",\"growing_since\":";
        detail::json_quote(out, g.growing_since_unix_ns ? detail::rfc3339(g.growing_since_unix_ns) : "");
        out += ",\"wait_reason\":";
        detail::json_quote(out, g.wait_reason);
        out += ",\"oldest_wait_ns\":" + std::to_string(g.oldest_wait_ns) + ",\"labels\":";
        detail::write_json_labels(out, g.labels);
        out += ",\"history\":[";
        for (std::size_t i = 0; i < g.history.size(); ++i) {
            if (i) out += ',';
            out += std::to_string(g.history[i]);
        }
        out += "],\"frames\":[";
        for (std::size_t i = 0; i < g.frames.size(); ++i) {
            if (i) out += ',';
            out += "{\"function\":";
            detail::json_quote(out, g.frames[i].function);
            out += ",\"file\":";
            detail::json_quote(out, g.frames[i].file);
            out += ",\"line\":" + std::to_string(g.frames[i].line) + ",\"site_id\":\"";
            out.append(b, detail::format_hex(b, g.site_ids[i]));
            out += "\"}";
        }
        out += "]}";
    };
    for (std::size_t i = 0; i < r.suspects.size(); ++i) {
        if (i) out += ',';
        group(r.suspects[i]);
    }
    out += "],\"groups\":[";
    for (std::size_t i = 0; i < r.groups.size(); ++i) {
        if (i) out += ',';
        group(r.groups[i]);
    }
    out += "]}\n";
    return out;
}

GORO_DECL std::string leak_watch::duration_text(std::chrono::nanoseconds d) {
    auto ns = d.count();
    if (ns % 1'000'000'000 == 0) return std::to_string(ns / 1'000'000'000) + "s";
    if (ns % 1'000'000 == 0) return std::to_string(ns / 1'000'000) + "ms";
    return std::to_string(ns) + "ns";
}

GORO_DECL void leak_watch::run() {
    std::unique_lock l(cv_mu_);
    for (;;) {
        if (cv_.wait_for(l, opt_.interval, [this] { return stopping_; })) return;
        l.unlock();
        try {
            sample_now();
        } catch (...) {
            // Out of memory for a snapshot: skip this sample.
        }
        l.lock();
    }
}

GORO_DECL void leak_watch::ingest(const snapshot& s, const detail::profile_view& v,
                                  std::chrono::steady_clock::time_point at, std::uint64_t spawned) {
    const std::uint64_t seq = seq_;  // this sample's number
    const std::int64_t steady =
        std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
    const std::int64_t unix_ns =
        detail::unix_now_ns() -
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - at).count();
    meta_[seq % opt_.history] = sample_meta{steady, unix_ns, spawned, v.groups().size() > opt_.max_groups};
    const auto& tasks = s.tasks();
    const auto& groups = v.groups();
    groups_seen_ = groups.size();
    total_tasks_ = s.total();
    std::unordered_map<std::uint64_t, tracked> next;
    next.reserve(std::min(groups.size(), opt_.max_groups) * 2);
    const std::int64_t now = s.taken_at_ns();
    for (std::size_t gi = 0; gi < groups.size() && gi < opt_.max_groups; ++gi) {
        const task_group& g = groups[gi];
        const task_record& first = tasks[g.tasks.front()];
        auto it = tracked_.find(g.key);
        tracked t;
        if (it != tracked_.end()) {
            t = std::move(it->second);
        } else {
            t.key = g.key;
            t.first_seq = seq;
            t.zero_before = seq > 0 && !meta_[(seq - 1) % opt_.history].truncated;
            t.ring.assign(opt_.history, 0);
            auto fr = v.frames(first);
            for (std::size_t i = 0; i < fr.size() && i < opt_.max_frames; ++i) {
                const detail::site_info& si = v.site(fr[i]);
                t.site_ids.push_back(si.id);
                t.frames.push_back(stack_frame{si.function, si.file, si.line});
            }
            t.labels = detail::profile_view::labels(first);
        }
        t.ring[seq % opt_.history] = static_cast<std::uint32_t>(std::min<std::size_t>(g.count, UINT32_MAX));
        // The longest-parked task of the group.
        std::int64_t oldest = 0;
        const char* why = nullptr;
        for (std::uint32_t ti : g.tasks) {
            const task_record& r = tasks[ti];
            if (r.state != task_state::waiting || r.since_ns == 0) continue;
            std::int64_t age = now > r.since_ns ? now - r.since_ns : 0;
            if (!why || age > oldest) {
                oldest = age;
                why = r.wait_reason ? r.wait_reason : "waiting";
            }
        }
        t.wait_reason = why ? why : (first.state == task_state::running ? "running" : "runnable");
        t.oldest_wait_ns = oldest;
        next.emplace(g.key, std::move(t));
    }
    tracked_.swap(next);  // groups not in this sample are forgotten
    seq_ = seq + 1;
    for (auto& [k, t] : tracked_) judge(t, seq);
}

GORO_DECL void leak_watch::judge(tracked& t, std::uint64_t seq) const {
    t.suspect = false;
    t.growth_per_minute = 0;
    t.growing_since_unix_ns = 0;
    const std::size_t n = opt_.window;
    if (seq + 1 < n) return;  // not a full window yet
    const std::uint64_t first = seq + 1 - n;
    // Samples before it was kept: zeros if it was absent then, else unknown.
    if (first < t.first_seq && !t.zero_before) return;
    std::size_t rises = 0;
    std::uint32_t hi = 0;
    for (std::uint64_t s = first; s <= seq; ++s) {
        std::uint32_t c = count_at(t, s);
        if (s > first && c > count_at(t, s - 1)) ++rises;
        hi = std::max(hi, c);
    }
    const std::uint32_t c0 = count_at(t, first), c1 = count_at(t, seq);
    if (rises < opt_.min_rises) return;                      // (a)
    if (c1 < c0 || c1 - c0 < opt_.min_growth) return;       // (b)
    if (c1 < hi) return;                                     // (c)
    if (opt_.load_ramp > 0 && first >= 1 && n < opt_.history) {  // (d)
        const double r0 = rate(first), r1 = rate(seq);
        if (r0 > 0 && r1 >= opt_.load_ramp * r0) {
            const double load_factor = r1 / r0;
            const double group_factor = double(c1) / double(std::max<std::uint32_t>(c0, 1));
            if (group_factor <= 1.1 * load_factor) return;
        }
    }
    t.suspect = true;
    const sample_meta& m0 = meta_[first % opt_.history];
    const sample_meta& m1 = meta_[seq % opt_.history];
    const double minutes = double(std::max<std::int64_t>(m1.steady_ns - m0.steady_ns, 1)) / 60e9;
    t.growth_per_minute = double(c1 - c0) / minutes;
    // Back through the history while the counts did not fall.
    const std::uint64_t oldest = seq + 1 > opt_.history ? seq + 1 - opt_.history : 0;
    std::uint64_t s = seq;
    const std::uint64_t known = t.zero_before ? t.first_seq - 1 : t.first_seq;
    while (s > std::max(oldest, known) && count_at(t, s - 1) <= count_at(t, s)) --s;
    // `s`: the lowest point before the run; or the oldest sample kept.
    t.growing_since_unix_ns = meta_[s % opt_.history].unix_ns;
}

GORO_DECL double leak_watch::rate(std::uint64_t seq) const noexcept {
    const sample_meta& a = meta_[(seq - 1) % opt_.history];
    const sample_meta& b = meta_[seq % opt_.history];
    return double(b.spawned - a.spawned);
}

GORO_DECL leak_group leak_watch::view(const tracked& t) const {
    leak_group g;
    g.key = t.key;
    g.site_ids = t.site_ids;
    g.frames = t.frames;
    g.labels = t.labels;
    g.wait_reason = t.wait_reason;
    g.oldest_wait_ns = t.oldest_wait_ns;
    g.suspect = t.suspect;
    g.growth_per_minute = t.growth_per_minute;
    g.growing_since_unix_ns = t.growing_since_unix_ns;
    const std::uint64_t last = seq_ - 1;
    const std::uint64_t from = seq_ > opt_.history ? seq_ - opt_.history : 0;
    for (std::uint64_t s = std::max(from, t.zero_before ? t.first_seq - 1 : t.first_seq); s <= last; ++s)
        g.history.push_back(count_at(t, s));
    g.count = g.history.empty() ? 0 : g.history.back();
    return g;
}

}  // namespace goro
#endif  // GORO_BODIES
