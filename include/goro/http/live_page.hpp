#ifndef GORO_HTTP_LIVE_PAGE_HPP
#define GORO_HTTP_LIVE_PAGE_HPP

// /debug/goro/ — one self-contained HTML page of the program's tasks, served
// by goro::debug_server (goro::register_default_routes).
//
// WHAT IT SHOWS, rendered on the server from one snapshot (readable with
// JavaScript off):
//   * a summary line (tasks, groups, when) and links: the goroutine profile
//     as pprof (a download), debug=1, debug=2, tasks.json, the leak report,
//     the wait profile, /metrics;
//   * the leak suspects of the server's leak watch (goro/inspect/leak_watch.hpp):
//     function, tasks now, growth per minute, growing since, the oldest
//     task's wait, and a sparkline (inline SVG) of the group's count history;
//   * every group (same stack and labels, like debug=1; at most 10,000, the
//     largest): tasks, wait reason, the oldest task's wait, labels, the leaf
//     function and its place; a <details> element opens the group's full
//     stack and its tasks (id, name, state, created by, debug=2's words;
//     at most 100 listed).
// WITH JAVASCRIPT (inline, no network fetch but the page itself):
//   * click a column head to sort; a filter box matches function, wait
//     reason and labels; a select keeps one wait reason;
//   * auto-refresh every `refresh` seconds (query ?refresh=N, 1 to 3600,
//     default 5): the page fetches itself and swaps in the new tables,
//     keeping the sort, the filter and the opened groups; a pause button.
//     When the page was requested with `Authorization: Bearer <token>` (the
//     server's bearer_token), the page carries that header's value (the
//     requester knows it already) and sends it with each refresh.
// Element ids and classes the browser test relies on: #summary, #suspects
// tr.suspect (.fn, .count), #groups tr.group (data-key, data-count, .fn),
// #pause, #filter, #reason, #updated.
// No external resource: no script, style, font or image is fetched.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <goro/http/request.hpp>
#include <goro/http/response.hpp>
#include <goro/inspect/dump.hpp>
#include <goro/inspect/leak_watch.hpp>
#include <goro/inspect/pprof.hpp>
#include <goro/inspect/snapshot.hpp>

namespace goro {

namespace detail {

inline constexpr std::size_t live_page_max_groups = 10000;
inline constexpr std::size_t live_page_max_tasks = 100;

/// "340ms", "12s", "5m12s", "2h3m".
inline std::string short_duration(std::int64_t ns) {
    if (ns < 1'000'000) return std::to_string(ns / 1000) + "µs";
    if (ns < 1'000'000'000) return std::to_string(ns / 1'000'000) + "ms";
    std::int64_t s = ns / 1'000'000'000;
    if (s < 60) return std::to_string(s) + "s";
    if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
    return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m";
}

/// An inline SVG polyline of `h` (oldest first), scaled to its maximum.
inline void append_sparkline(std::string& out, const std::vector<std::uint32_t>& h) {
    const int w = 120, ht = 24;
    std::uint32_t hi = 1;
    for (std::uint32_t c : h) hi = std::max(hi, c);
    out += "<svg class=spark width=120 height=24 viewBox='0 0 120 24' role=img aria-label='count history'><polyline points='";
    const std::size_t n = h.size();
    char b[48];
    for (std::size_t i = 0; i < n; ++i) {
        double x = n > 1 ? double(i) * (w - 2) / double(n - 1) + 1 : w / 2.0;
        double y = ht - 2 - double(h[i]) * (ht - 4) / double(hi);
        std::snprintf(b, sizeof b, "%s%.1f,%.1f", i ? " " : "", x, y);
        out += b;
    }
    out += "'/></svg>";
}

inline void append_labels_text(std::string& out, const std::vector<std::pair<std::string, std::string>>& labels) {
    bool first = true;
    for (const auto& [k, v] : labels) {
        if (!first) out += ", ";
        first = false;
        append_html_escaped(out, k);
        out += '=';
        append_html_escaped(out, v);
    }
}

inline const char* live_page_style() {
    return R"(body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
nav a{margin-right:1em}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eee;cursor:pointer;user-select:none;white-space:nowrap}td.num,th.num{text-align:right}
tr.suspect td{background:#fff1f0}.fn{font-family:ui-monospace,monospace}
pre{margin:.3em 0;font-size:12px;background:#f4f4f4;padding:4px;overflow-x:auto}
.spark polyline{fill:none;stroke:#c0392b;stroke-width:1.5}#controls{margin:.6em 0}
#controls input{width:24em}.muted{color:#777}summary{cursor:pointer}
pre.tasks{background:#fff;border-left:3px solid #ddd})";
}

inline const char* live_page_script() {
    return R"JS((function(){
var meta=document.querySelector('meta[name=goro-token]');
var token=meta?meta.content:'';
var period=parseInt(document.body.dataset.refresh||'5',10)*1000;
var paused=false,sortKey='count',sortDesc=true;
function rows(){return Array.prototype.slice.call(document.querySelectorAll('#groups tbody tr.group'));}
function apply(){
  var f=document.getElementById('filter').value.toLowerCase();
  var r=document.getElementById('reason').value;
  var tb=document.querySelector('#groups tbody');if(!tb)return;
  var rs=rows(),keys=rs.map(function(row,i){var v=row.getAttribute('data-'+sortKey)||'';var n=parseFloat(v);
    return {row:row,i:i,n:n,s:v,text:(row.dataset.fn+' '+row.dataset.reason+' '+row.dataset.labels).toLowerCase()};});
  keys.sort(function(a,b){
    var c=(!isNaN(a.n)&&!isNaN(b.n))?a.n-b.n:a.s.localeCompare(b.s);
    return (sortDesc?-c:c)||a.i-b.i;});
  // Rows are moved in a detached body: one layout, not one per row.
  var table=tb.parentNode,next=tb.nextSibling;table.removeChild(tb);
  keys.forEach(function(k){
    var show=(!f||k.text.indexOf(f)>=0)&&(!r||k.row.dataset.reason===r);
    if((k.row.style.display!=='none')!==show)k.row.style.display=show?'':'none';
    tb.appendChild(k.row);});
  table.insertBefore(tb,next);
}
function reasons(){
  var sel=document.getElementById('reason'),cur=sel.value,seen={};
  rows().forEach(function(row){seen[row.dataset.reason]=1;});
  while(sel.options.length>1)sel.remove(1);
  Object.keys(seen).sort().forEach(function(k){var o=document.createElement('option');o.value=k;o.textContent=k;sel.appendChild(o);});
  sel.value=seen[cur]?cur:'';
}
function wire(){
  document.querySelectorAll('#groups th[data-sort]').forEach(function(th){
    th.onclick=function(){var k=th.dataset.sort;if(sortKey===k)sortDesc=!sortDesc;else{sortKey=k;sortDesc=(k==='count'||k==='age');}apply();};});
}
function refresh(){
  if(paused)return;
  var h={};if(token)h['Authorization']=token;
  fetch(location.href,{headers:h,cache:'no-store'}).then(function(r){return r.text();}).then(function(t){
    var doc=new DOMParser().parseFromString(t,'text/html');
    var open={};document.querySelectorAll('#groups tr.group details[open]').forEach(function(d){open[d.closest('tr').dataset.key]=1;});
    ['summary','content'].forEach(function(id){var n=doc.getElementById(id);if(n)document.getElementById(id).innerHTML=n.innerHTML;});
    rows().forEach(function(row){if(open[row.dataset.key]){var d=row.querySelector('details');if(d)d.open=true;}});
    wire();reasons();apply();
    document.getElementById('updated').textContent='updated '+new Date().toLocaleTimeString();
  }).catch(function(e){document.getElementById('updated').textContent='refresh failed: '+e;});
}
document.getElementById('controls').hidden=false;
document.getElementById('filter').oninput=apply;
document.getElementById('reason').onchange=apply;
document.getElementById('pause').onclick=function(){paused=!paused;this.textContent=paused?'resume':'pause';document.getElementById('updated').textContent=paused?'paused':'';};
wire();reasons();apply();
setInterval(refresh,period);
})();)JS";
}

/// The page for one request (see the top of this header).
inline std::string render_live_page(const leak_watch* watch, const debug_request& req) {
    int refresh = 5;
    if (auto r = req.param("refresh"); r && !r->empty()) {
        int v = 0;
        for (char c : *r) v = (c >= '0' && c <= '9' && v < 100000) ? v * 10 + (c - '0') : 100000;
        if (v >= 1 && v <= 3600) refresh = v;
    }
    snapshot s = snapshot::take();
    profile_view v(s);
    const auto& tasks = s.tasks();
    const std::int64_t now = s.taken_at_ns();
    leak_report rep;
    if (watch) rep = watch->report();

    std::string out;
    out.reserve(4096 + std::min(v.groups().size(), live_page_max_groups) * 600);
    out += "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>goro: tasks</title>"
           "<meta name=viewport content='width=device-width'>";
    if (auto a = req.header("Authorization"); a && a->substr(0, 7) == "Bearer ") {
        out += "<meta name=goro-token content=\"";
        append_html_escaped(out, *a);
        out += "\">";
    }
    out += "<style>";
    out += live_page_style();
    out += "</style></head>\n<body data-refresh=";
    out += std::to_string(refresh);
    out += ">\n<h1>goro tasks</h1>\n<div id=summary>";
    out += std::to_string(s.total()) + " tasks in " + std::to_string(v.groups().size()) + " groups; " +
           std::to_string(rep.suspects.size()) + " leak suspect" + (rep.suspects.size() == 1 ? "" : "s") +
           "; taken " + rfc3339(unix_now_ns());
    out += "</div>\n<nav><a href='/debug/pprof/goroutine' download='goroutine.pb'>download pprof profile</a>"
           "<a href='/debug/pprof/goroutine?debug=1'>debug=1</a><a href='/debug/pprof/goroutine?debug=2'>debug=2</a>"
           "<a href='/debug/goro/tasks.json'>tasks.json</a><a href='/debug/goro/leaks'>leak report</a>"
           "<a href='/debug/pprof/block?debug=1'>wait profile</a><a href='/metrics'>metrics</a>"
           "<a href='/debug/pprof/'>index</a></nav>\n";
    out += "<div id=controls hidden><input id=filter type=search placeholder='filter: function, wait reason, label'> "
           "<select id=reason><option value=''>every wait reason</option></select> "
           "<button id=pause type=button>pause</button> <span id=updated class=muted></span> "
           "<span class=muted>refresh every " + std::to_string(refresh) + "s</span></div>\n<main id=content>\n";

    // Leak suspects.
    out += "<section id=suspects><h2>Leak suspects (" + std::to_string(rep.suspects.size()) + ")</h2>\n";
    if (!watch) {
        out += "<p class=muted>no leak watch on this server (debug_server_options::leak_watch_interval is 0)</p>";
    } else if (rep.suspects.empty()) {
        out += "<p class=muted>none after " + std::to_string(rep.samples) + " samples</p>";
    } else {
        out += "<table><thead><tr><th>function</th><th class=num>tasks</th><th class=num>growth/min</th>"
               "<th>growing since</th><th>oldest</th><th>history</th></tr></thead><tbody>\n";
        for (const leak_group& g : rep.suspects) {
            char b[20];
            out += "<tr class=suspect data-key='";
            out.append(b, format_hex(b, g.key));
            out += "'><td class=fn>";
            append_html_escaped(out, g.frames.empty() ? std::string_view("?") : std::string_view(g.frames[0].function));
            if (!g.frames.empty()) {
                out += "<br><span class=muted>";
                append_html_escaped(out, g.frames[0].file);
                out += ":" + std::to_string(g.frames[0].line) + "</span>";
            }
            char rate[32];
            std::snprintf(rate, sizeof rate, "%+.1f", g.growth_per_minute);
            out += "</td><td class='num count'>" + std::to_string(g.count) + "</td><td class=num>" + rate +
                   "</td><td>" + rfc3339(g.growing_since_unix_ns) + "</td><td>[";
            append_html_escaped(out, g.wait_reason);
            if (g.oldest_wait_ns > 0) out += ", " + short_duration(g.oldest_wait_ns);
            out += "]</td><td>";
            append_sparkline(out, g.history);
            out += "</td></tr>\n";
        }
        out += "</tbody></table>";
    }
    out += "</section>\n";

    // Groups.
    const std::size_t shown = std::min(v.groups().size(), live_page_max_groups);
    out += "<section id=groups><h2>Groups (" + std::to_string(v.groups().size()) + ")</h2>\n";
    if (shown < v.groups().size())
        out += "<p class=muted>the " + std::to_string(shown) + " largest groups are shown</p>\n";
    out += "<table><thead><tr><th class=num data-sort=count>tasks</th><th data-sort=reason>wait reason</th>"
           "<th class=num data-sort=age>oldest</th><th data-sort=fn>function (click for stack and tasks)</th>"
           "<th data-sort=labels>labels</th></tr></thead><tbody>\n";
    std::string labels_text, stack;
    for (std::size_t gi = 0; gi < shown; ++gi) {
        const task_group& g = v.groups()[gi];
        const task_record& first = tasks[g.tasks.front()];
        std::int64_t oldest = 0;
        const char* why = nullptr;
        for (std::uint32_t ti : g.tasks) {
            const task_record& r = tasks[ti];
            if (r.state != task_state::waiting || !r.since_ns) continue;
            std::int64_t age = now > r.since_ns ? now - r.since_ns : 0;
            if (!why || age > oldest) {
                oldest = age;
                why = r.wait_reason;
            }
        }
        std::string reason = why ? why : state_text(first);
        auto fr = v.frames(first);
        const site_info& leaf = v.site(fr[0]);
        labels_text.clear();
        append_labels_text(labels_text, profile_view::labels(first));
        char b[20];
        out += "<tr class=group data-key='";
        out.append(b, format_hex(b, g.key));
        out += "' data-count=" + std::to_string(g.count) + " data-age=" + std::to_string(oldest) + " data-reason=\"";
        append_html_escaped(out, reason);
        out += "\" data-fn=\"";
        append_html_escaped(out, leaf.function);
        out += "\" data-labels=\"" + labels_text + "\"><td class=num>" + std::to_string(g.count) + "</td><td>";
        append_html_escaped(out, reason);
        out += "</td><td class=num>" + (why ? short_duration(oldest) : std::string("-")) + "</td><td><details><summary class=fn>";
        append_html_escaped(out, leaf.function);
        if (!leaf.file.empty()) {
            out += " (";
            append_html_escaped(out, leaf.file);
            out += ":" + std::to_string(leaf.line) + ")";
        }
        out += "</summary><pre>";
        for (std::uint32_t f : fr) {
            const site_info& si = v.site(f);
            append_html_escaped(out, si.function);
            if (!si.file.empty()) {
                out += "\n\t";
                append_html_escaped(out, si.file);
                out += ":" + std::to_string(si.line);
            }
            out += '\n';
        }
        // The tasks as text (one element per group, not a table: a page of
        // 10,000 groups stays a DOM the browser parses quickly).
        out += "</pre><pre class=tasks>";
        for (std::size_t k = 0; k < g.tasks.size() && k < live_page_max_tasks; ++k) {
            const task_record& r = tasks[g.tasks[k]];
            out += "goroutine " + std::to_string(r.id);
            if (r.meta && !r.meta->name.empty()) {
                out += " name=";
                std::string q;
                go_quote(q, r.meta->name);
                append_html_escaped(out, q);
            }
            out += " [";
            append_html_escaped(out, state_text(r));
            if (std::int64_t m = minutes_waiting(r, now); m >= 1) out += ", " + std::to_string(m) + " minutes";
            out += "]: ";
            if (r.kind == task_kind::blocked) {
                out += "a thread in block_on";
            } else {
                const site_info& c = v.table()[v.table().intern(r.created_by)];
                out += "created by ";
                append_html_escaped(out, c.function);
                if (r.parent_id) out += " in goroutine " + std::to_string(r.parent_id);
                out += " (";
                append_html_escaped(out, c.file);
                out += ":" + std::to_string(c.line) + ")";
            }
            out += '\n';
        }
        if (g.tasks.size() > live_page_max_tasks)
            out += "and " + std::to_string(g.tasks.size() - live_page_max_tasks) + " more\n";
        out += "</pre></details></td><td>" + labels_text + "</td></tr>\n";
    }
    out += "</tbody></table></section>\n</main>\n<script>";
    out += live_page_script();
    out += "</script>\n</body></html>\n";
    return out;
}

}  // namespace detail

}  // namespace goro

#endif  // GORO_HTTP_LIVE_PAGE_HPP
