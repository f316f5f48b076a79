#ifndef GORO_HTTP_ROUTES_HPP
#define GORO_HTTP_ROUTES_HPP

// The handlers of the default routes (goro::register_default_routes in
// goro/http/debug_server.hpp registers them): /debug/pprof/goroutine,
// /debug/goro/tasks.json and /metrics. Each is an ordinary debug_handler.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <goro/core/linkage.hpp>
#include <goro/http/prometheus.hpp>
#include <goro/http/request.hpp>
#include <goro/http/response.hpp>
#include <goro/inspect/leak_watch.hpp>

namespace goro {

namespace detail {

// The `debug` parameter of /debug/pprof/goroutine: absent or empty is 0 (as in
// Go, where FormValue gives "" and Atoi's error is ignored); 0, 1 and 2 are
// Go's; anything else is refused, naming the parameter, rather than guessed.
GORO_DECL std::optional<int> goroutine_debug_param(const debug_request& req);

GORO_DECL void serve_goroutine_profile(const debug_request& req, debug_response& r);

// Tasks by state and wait reason, from one walk of the registry's live headers
// (the shard locks hold spawns off; a task that exits during the walk may or
// may not be counted). States are read as they are, with no stop of the
// world: precise enough for a gauge, and a scrape never pauses the workers.
struct task_census {
    std::int64_t total = 0;
    std::int64_t by_state[3] = {0, 0, 0};  // waiting, runnable, running
    std::vector<std::pair<std::string, std::int64_t>> by_reason;  // sorted by reason
};

GORO_DECL task_census take_task_census();

// At most this many wait reasons get a series of their own in /metrics; the
// rest (only a program that makes up reasons at run time has more) are summed
// under reason="other", so the scrape's cardinality stays bounded.
inline constexpr std::size_t max_reason_series = 32;

// The leak watch's families: how many suspects, and for the ten fastest
// growing (bounded cardinality) their growth and count, labelled by the
// group's stable id, its leaf function and the leaf's site id.
GORO_DECL void render_leak_metrics(prometheus_text_writer& w, const leak_watch& watch);

// /debug/pprof/block and /debug/pprof/mutex: the wait profile and its lock
// waits (goro/inspect/block_profile.hpp), pprof or, with debug=1, text.
GORO_DECL void serve_wait_profile(const debug_request& req, debug_response& r, const char* name,
                                  std::string (*profile)(int));

GORO_DECL void serve_block_profile(const debug_request& req, debug_response& r);

GORO_DECL void serve_mutex_profile(const debug_request& req, debug_response& r);

// /debug/goro/leaks: the watch's report, as text (the debug=1 shape) or, with
// ?format=json, as JSON (goro::leak_watch::to_json).
GORO_DECL void serve_leaks(const leak_watch& w, const debug_request& req, debug_response& r);

GORO_DECL std::string render_metrics(const leak_watch* watch = nullptr);

GORO_DECL void serve_tasks_json(const debug_request&, debug_response& r);

GORO_DECL void serve_metrics(const debug_request&, debug_response& r);

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>

#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/inspect/block_profile.hpp>
#include <goro/inspect/dump.hpp>
#include <goro/inspect/snapshot.hpp>
#include <goro/version.hpp>

namespace goro::detail {

GORO_DECL std::optional<int> goroutine_debug_param(const debug_request& req) {
    auto v = req.param("debug");
    if (!v || v->empty()) return 0;
    if (*v == "0") return 0;
    if (*v == "1") return 1;
    if (*v == "2") return 2;
    return std::nullopt;
}

GORO_DECL void serve_goroutine_profile(const debug_request& req, debug_response& r) {
    auto bad = [&](std::string why) {
        r.status = 400;
        r.content_type = "text/plain; charset=utf-8";
        r.body = std::move(why);
    };
    std::optional<int> debug = goroutine_debug_param(req);
    if (!debug) {
        std::string_view raw = req.param("debug").value_or("");
        std::string shown = utf8_escaped(raw.substr(0, 32));
        if (raw.size() > 32) shown += "...";
        bad("invalid value of query parameter 'debug': \"" + shown +
            "\" (want 0 for the pprof protobuf, 1 for stacks grouped with counts, 2 for one "
            "stack per goroutine)\n");
        return;
    }
    // Go serves a delta profile for ?seconds=N, holding the request for N
    // seconds; one slow request would hold this server's only thread, so goro
    // says how to get the same answer instead of pretending.
    if (auto sec = req.param("seconds"); sec && !sec->empty() && *sec != "0") {
        bad("query parameter 'seconds' (a delta profile) is not supported: fetch the profile "
            "twice and compare with `go tool pprof -base first second`, or goro::diff\n");
        return;
    }
    if (*debug == 0) {
        r.content_type = "application/octet-stream";
        r.set_attachment("goroutine");
    } else {
        r.content_type = "text/plain; charset=utf-8";
    }
    // Written in blocks (debug_response::stream): a dump of many tasks is
    // never grown as one string.
    write_goroutine_profile(r.stream(), snapshot::take(), *debug);
}

GORO_DECL task_census take_task_census() {
    task_census c;
    // Wait reasons are static strings: count by pointer under the locks (no
    // allocation there beyond the rare new reason), merge by text afterwards.
    std::vector<std::pair<const char*, std::int64_t>> reasons;
    reasons.reserve(32);
    the_registry().for_each_locked([&](task_header& h) {
        ++c.total;
        switch (h.state.load(std::memory_order_relaxed)) {
        case task_state::waiting: {
            ++c.by_state[0];
            const char* why = h.wait_reason.load(std::memory_order_relaxed);
            if (!why) why = "unknown";
            auto it = std::find_if(reasons.begin(), reasons.end(),
                                   [&](const auto& p) { return p.first == why; });
            if (it != reasons.end()) ++it->second;
            else reasons.emplace_back(why, 1);
            break;
        }
        case task_state::runnable: ++c.by_state[1]; break;
        default: ++c.by_state[2]; break;
        }
    });
    for (const auto& [why, n] : reasons) {
        std::string_view text(why);
        auto it = std::find_if(c.by_reason.begin(), c.by_reason.end(),
                               [&](const auto& p) { return p.first == text; });
        if (it != c.by_reason.end()) it->second += n;
        else c.by_reason.emplace_back(std::string(text), n);
    }
    std::sort(c.by_reason.begin(), c.by_reason.end());
    return c;
}

GORO_DECL void render_leak_metrics(prometheus_text_writer& w, const leak_watch& watch) {
    const leak_report rep = watch.report();
    w.family("goro_leak_suspects", metric_type::gauge,
             "Groups of tasks (same stack and labels) that the leak watch sees growing (goro::leak_watch).");
    w.sample("goro_leak_suspects", static_cast<std::int64_t>(rep.suspects.size()));
    w.family("goro_leak_watch_samples_total", metric_type::counter, "Samples the leak watch has taken.");
    w.sample("goro_leak_watch_samples_total", rep.samples);
    w.family("goro_leak_suspect_growth_per_minute", metric_type::gauge,
             "Growth of a suspect group over the watch's window, in tasks per minute (the ten fastest).");
    std::vector<std::string> ids, sites;
    const std::size_t n = std::min<std::size_t>(rep.suspects.size(), 10);
    for (std::size_t i = 0; i < n; ++i) {
        const leak_group& g = rep.suspects[i];
        char b[20];
        ids.emplace_back(b, format_hex(b, g.key));
        sites.emplace_back(b, format_hex(b, g.site_ids.empty() ? 0 : g.site_ids[0]));
    }
    auto fn = [&](std::size_t i) -> std::string_view {
        return rep.suspects[i].frames.empty() ? std::string_view() : std::string_view(rep.suspects[i].frames[0].function);
    };
    for (std::size_t i = 0; i < n; ++i)
        w.sample("goro_leak_suspect_growth_per_minute", {{"group", ids[i]}, {"function", fn(i)}, {"site", sites[i]}},
                 rep.suspects[i].growth_per_minute);
    w.family("goro_leak_suspect_tasks", metric_type::gauge, "Tasks in a suspect group now (the ten fastest growing).");
    for (std::size_t i = 0; i < n; ++i)
        w.sample("goro_leak_suspect_tasks", {{"group", ids[i]}, {"function", fn(i)}, {"site", sites[i]}},
                 static_cast<std::int64_t>(rep.suspects[i].count));
}

GORO_DECL void serve_wait_profile(const debug_request& req, debug_response& r, const char* name,
                                  std::string (*profile)(int)) {
    auto d = req.param("debug");
    if (!d || d->empty() || *d == "0") {
        r.content_type = "application/octet-stream";
        r.set_attachment(name);
        r.body = profile(0);
    } else if (*d == "1") {
        r.content_type = "text/plain; charset=utf-8";
        r.body = profile(1);
    } else {
        r.status = 400;
        r.content_type = "text/plain; charset=utf-8";
        r.body = "invalid value of query parameter 'debug' (want 0 for the pprof protobuf, 1 for text)\n";
    }
}

GORO_DECL void serve_block_profile(const debug_request& req, debug_response& r) {
    serve_wait_profile(req, r, "block", [](int debug) { return block_profile(debug); });
}

GORO_DECL void serve_mutex_profile(const debug_request& req, debug_response& r) {
    serve_wait_profile(req, r, "mutex", [](int debug) { return mutex_profile(debug); });
}

GORO_DECL void serve_leaks(const leak_watch& w, const debug_request& req, debug_response& r) {
    auto f = req.param("format");
    if (f && *f == "json") {
        r.content_type = "application/json";
        r.body = w.report_json();
    } else if (!f || f->empty() || *f == "text") {
        r.content_type = "text/plain; charset=utf-8";
        r.body = w.report_text();
    } else {
        r.status = 400;
        r.content_type = "text/plain; charset=utf-8";
        r.body = "invalid value of query parameter 'format' (want text or json)\n";
    }
}

GORO_DECL std::string render_metrics(const leak_watch* watch) {
    std::string out;
    prometheus_text_writer w(out);
    const task_census c = take_task_census();
    w.family("goro_tasks", metric_type::gauge,
             "Tasks that exist now (goro::num_goroutines(): started and not finished, "
             "plus threads waiting in goro::block_on).");
    w.sample("goro_tasks", c.total);
    w.family("goro_tasks_by_state", metric_type::gauge, "Tasks by scheduling state.");
    w.sample("goro_tasks_by_state", {{"state", "waiting"}}, c.by_state[0]);
    w.sample("goro_tasks_by_state", {{"state", "runnable"}}, c.by_state[1]);
    w.sample("goro_tasks_by_state", {{"state", "running"}}, c.by_state[2]);
    w.family("goro_tasks_waiting", metric_type::gauge,
             "Waiting tasks by wait reason, in Go's words (\"chan receive\", \"select\", ...).");
    {
        // Largest first for the cut, then by name for a stable order.
        std::vector<std::pair<std::string, std::int64_t>> rs = c.by_reason;
        std::int64_t other = 0;
        if (rs.size() > max_reason_series) {
            std::stable_sort(rs.begin(), rs.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
            for (std::size_t i = max_reason_series - 1; i < rs.size(); ++i) other += rs[i].second;
            rs.resize(max_reason_series - 1);
            std::sort(rs.begin(), rs.end());
        }
        for (const auto& [reason, n] : rs) w.sample("goro_tasks_waiting", {{"reason", reason}}, n);
        if (other) w.sample("goro_tasks_waiting", {{"reason", "other"}}, other);
    }
    w.family("goro_tasks_started_total", metric_type::counter,
             "Tasks ever started (and block_on calls); minus goro_tasks, the number that finished.");
    w.sample("goro_tasks_started_total", the_registry().total_added());
    // Not the_scheduler(): a scrape must not start the pool as a side effect.
    std::int64_t workers = 0, idle = 0, queued = 0;
    if (pool_started()) {
        scheduler& s = the_scheduler();
        workers = static_cast<std::int64_t>(s.size());
        idle = s.idle_workers();
        queued = static_cast<std::int64_t>(s.global_queue_size());
    }
    w.family("goro_workers", metric_type::gauge,
             "Worker threads of the pool (GOMAXPROCS); 0 until the pool starts.");
    w.sample("goro_workers", workers);
    w.family("goro_workers_idle", metric_type::gauge, "Workers parked for lack of work.");
    w.sample("goro_workers_idle", idle);
    w.family("goro_global_queue_length", metric_type::gauge,
             "Runnable tasks in the global run queue (woken from outside the pool, or overflow).");
    w.sample("goro_global_queue_length", queued);
    const stuck_workers_info stuck = goro::stuck_workers();
    w.family("goro_stuck_workers", metric_type::gauge,
             "Workers running one task past the handoff threshold without a suspension (each replaced by another thread).");
    w.sample("goro_stuck_workers", static_cast<std::int64_t>(stuck.count));
    w.family("goro_stuck_longest_seconds", metric_type::gauge,
             "How long the longest-stuck worker has been running its task; 0 when none is stuck.");
    w.sample("goro_stuck_longest_seconds", std::chrono::duration<double>(stuck.longest).count());
    w.family("goro_build_info", metric_type::gauge, "The goro library version; the value is always 1.");
    w.sample("goro_build_info", {{"version", goro::version()}}, 1);
    if (watch) render_leak_metrics(w, *watch);
    return out;
}

GORO_DECL void serve_tasks_json(const debug_request&, debug_response& r) {
    r.content_type = "application/json";
    write_tasks_json(r.stream(), snapshot::take());
}

GORO_DECL void serve_metrics(const debug_request&, debug_response& r) {
    r.content_type = std::string(prometheus_content_type);
    r.body = render_metrics();
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_ROUTES_HPP
