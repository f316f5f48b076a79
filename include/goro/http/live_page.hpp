#ifndef GORO_HTTP_LIVE_PAGE_HPP
#define GORO_HTTP_LIVE_PAGE_HPP

// /debug/goro/ — one self-contained HTML page of the program's tasks, and
// /debug/goro/group?key=K — one group's stack and tasks; both served by
// goro::debug_server (goro::register_default_routes).
//
// THE PAGE, rendered on the server from one snapshot (readable with
// JavaScript off):
//   * a summary line (tasks, groups, when) and links: the goroutine profile
//     as pprof (a download), debug=1, debug=2, tasks.json, the leak report,
//     the wait and mutex profiles, /metrics;
//   * the leak suspects of the server's leak watch (goro/inspect/leak_watch.hpp):
//     function, tasks now, growth per minute, growing since, the oldest
//     task's wait, and a sparkline (inline SVG) of the group's count history;
//   * every group (same stack and labels, like debug=1; at most 10,000, the
//     largest): tasks, wait reason, the oldest task's wait, the leaf function
//     and its place, labels. One short table row per group: the leaf
//     function is a link to the group's own page (below), so the page does
//     not carry 10,000 stacks and task lists. The rows come in bodies
//     (<tbody>) of 200, laid out as grids, each with `content-visibility:
//     auto`: the browser lays out and paints only the bodies on screen. A
//     page of 10,000 groups is about 2.8 MB; headless Chromium spends
//     0.8 s of CPU to show it, where one table of 10,000 rows with their
//     stacks took 7.6 s (tests/browser/test_live_page.py prints the times).
// THE GROUP PAGE (/debug/goro/group?key=0x…, the key of a row): the group's
// full stack and its tasks (id, name, state, minutes waiting, `created by`;
// at most 1,000 listed), from a new snapshot; 404 when no group has that key
// any more (its tasks ended or moved on). With &fragment=1 only the part
// that the page inserts under the row.
// WITH JAVASCRIPT (inline; it fetches nothing but this server's own pages):
//   * a click on a group's function opens, under its row, the group's stack
//     and tasks (the group page's fragment); a second click closes it;
//   * click a column head to sort; a filter box matches function, wait
//     reason and labels; a select keeps one wait reason;
//   * auto-refresh every `refresh` seconds (query ?refresh=N, 1 to 3600,
//     default 5; at least four times as long as the last refresh took): the
//     page fetches itself and swaps in the new tables, keeping the sort, the
//     filter and the opened groups (re-fetched); a pause button.
//     When the page was requested with `Authorization: Bearer <token>` (the
//     server's bearer_token), the page carries that header's value (the
//     requester knows it already) and sends it with each fetch.
// Element ids and classes the browser test relies on: #summary, #suspects
// tr.suspect (.fn, .count), #groups tr.group (data-key, data-count, td.fn a),
// #groups tr.detail (pre.stack, pre.tasks), #pause, #filter, #reason, #updated.
// No external resource: no script, style, font or image is fetched.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <goro/core/linkage.hpp>
#include <goro/http/request.hpp>
#include <goro/http/response.hpp>
#include <goro/inspect/leak_watch.hpp>

namespace goro {

namespace detail {

inline constexpr std::size_t live_page_max_groups = 10000;
inline constexpr std::size_t live_page_max_tasks = 1000;  // listed on a group's page
inline constexpr std::size_t live_page_chunk = 200;       // rows per <tbody> (see live_page_style)

/// The page for one request (see the top of this header).
GORO_DECL std::string render_live_page(const leak_watch* watch, const debug_request& req);

/// /debug/goro/group?key=K[&fragment=1] (see the top of this header).
GORO_DECL void serve_live_group(const debug_request& req, debug_response& r);

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>
#include <charconv>
#include <cstdio>

#include <goro/inspect/dump.hpp>
#include <goro/inspect/pprof.hpp>
#include <goro/inspect/snapshot.hpp>

namespace goro::detail {

/// "340ms", "12s", "5m12s", "2h3m".
GORO_DECL std::string short_duration(std::int64_t ns) {
    if (ns < 1'000'000) return std::to_string(ns / 1000) + "µs";
    if (ns < 1'000'000'000) return std::to_string(ns / 1'000'000) + "ms";
    std::int64_t s = ns / 1'000'000'000;
    if (s < 60) return std::to_string(s) + "s";
    if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
    return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m";
}

GORO_DECL void append_int(std::string& out, std::int64_t v) {
    char b[24];
    auto [end, ec] = std::to_chars(b, b + sizeof b, v);
    (void)ec;  // 24 characters hold any int64
    out.append(b, end);
}

GORO_DECL void append_hex(std::string& out, std::uint64_t v) {
    char b[20];
    out.append(b, format_hex(b, v));
}

/// An inline SVG polyline of `h` (oldest first), scaled to its maximum.
GORO_DECL void append_sparkline(std::string& out, const std::vector<std::uint32_t>& h) {
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

GORO_DECL void append_labels_text(std::string& out,
                                  const std::vector<std::pair<std::string, std::string>>& labels) {
    bool first = true;
    for (const auto& [k, v] : labels) {
        if (!first) out += ", ";
        first = false;
        append_html_escaped(out, k);
        out += '=';
        append_html_escaped(out, v);
    }
}

/// The wait of a group's longest-waiting task: its reason (null when no task
/// of the group waits) and, in `oldest`, how long (0 when none waits).
GORO_DECL const char* oldest_wait(const task_group& g, const snapshot::task_list& tasks, std::int64_t now,
                                  std::int64_t& oldest) noexcept {
    oldest = 0;
    const char* why = nullptr;
    for (std::uint32_t ti : g.tasks) {
        const task_record& r = tasks[ti];
        if (r.state != task_state::waiting || !r.since_ns) continue;
        std::int64_t age = now > r.since_ns ? now - r.since_ns : 0;
        if (!why || age > oldest) {
            oldest = age;
            why = r.wait_reason ? r.wait_reason : "waiting";
        }
    }
    return why;
}

/// `<meta name=goro-token …>` when the request carried a bearer token (see the top).
GORO_DECL void append_token_meta(std::string& out, const debug_request& req) {
    if (auto a = req.header("Authorization"); a && a->substr(0, 7) == "Bearer ") {
        out += "<meta name=goro-token content=\"";
        append_html_escaped(out, *a);
        out += "\">";
    }
}

GORO_DECL const char* live_page_style() {
    return R"(body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
nav a{margin-right:1em}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eee;cursor:pointer;user-select:none;white-space:nowrap}td.num,th.num{text-align:right}
#groups table,#groups thead,#groups tbody{display:block}#groups tbody{content-visibility:auto;contain-intrinsic-size:auto 5400px}
#groups tr{display:grid;grid-template-columns:6em 10em 6em minmax(0,1fr) 25%}#groups td{overflow-wrap:anywhere}
#groups tr[hidden],#groups tbody[hidden]{display:none}#groups tr.detail td{grid-column:1/-1}
tr.suspect td{background:#fff1f0}.fn{font-family:ui-monospace,monospace}td.fn a{color:#1a4f9c}
pre{margin:.3em 0;font-size:12px;background:#f4f4f4;padding:4px;overflow-x:auto;white-space:pre-wrap}
.spark polyline{fill:none;stroke:#c0392b;stroke-width:1.5}#controls{margin:.6em 0}
#controls input{width:24em}.muted{color:#777}tr.detail td{background:#f8f8f8}
pre.tasks{background:#fff;border-left:3px solid #ddd})";
}

GORO_DECL const char* live_page_script() {
    return R"JS((function(){
var meta=document.querySelector('meta[name=goro-token]');
var token=meta?meta.content:'';
var period=parseInt(document.body.dataset.refresh||'5',10)*1000;
var paused=false,sortKey='count',sortDesc=true,timer=0,cost=0,open={};
var COL={count:0,reason:1,age:2,fn:3,labels:4},CHUNK=parseInt(document.body.dataset.chunk||'200',10);
function $(id){return document.getElementById(id);}
function hdrs(){var h={};if(token)h['Authorization']=token;return h;}
function tbody(){return document.querySelector('#groups tbody');}
function rows(){return Array.prototype.slice.call(document.querySelectorAll('#groups tbody tr.group'));}
function cell(row,k){var c=row.cells[COL[k]];return c?c.textContent:'';}
function detailOf(row){var d=row.nextElementSibling;return d&&d.classList.contains('detail')?d:null;}
function plain(){return sortKey==='count'&&sortDesc&&!$('filter').value&&!$('reason').value;}
// Sorts and filters the rows (with their opened details) into new bodies of
// CHUNK rows (each laid out only when it scrolls into view: see the style),
// the rows filtered out last, in a hidden body.
function apply(){
  var tb=tbody();if(!tb)return;
  var table=tb.parentNode;
  var f=$('filter').value.toLowerCase(),r=$('reason').value,num=(sortKey==='count'||sortKey==='age');
  var keys=rows().map(function(row,i){
    var reason=cell(row,'reason');
    return {row:row,d:detailOf(row),i:i,n:num?parseFloat(row.getAttribute('data-'+sortKey)):0,
      s:num?'':cell(row,sortKey),reason:reason,
      text:(cell(row,'fn')+' '+reason+' '+cell(row,'labels')).toLowerCase()};});
  keys.sort(function(a,b){var c=num?a.n-b.n:a.s.localeCompare(b.s);return (sortDesc?-c:c)||a.i-b.i;});
  var bodies=[],cur=null,n=0,gone=document.createElement('tbody');gone.hidden=true;
  keys.forEach(function(k){
    var show=(!f||k.text.indexOf(f)>=0)&&(!r||k.reason===r),into=gone;
    if(k.row.hidden===show)k.row.hidden=!show;
    if(show){if(!cur||n===CHUNK){cur=document.createElement('tbody');bodies.push(cur);n=0;}++n;into=cur;}
    into.appendChild(k.row);
    if(k.d){k.d.hidden=!show;into.appendChild(k.d);}});
  bodies.push(gone);
  table.querySelectorAll('tbody').forEach(function(b){b.remove();});
  bodies.forEach(function(b){table.appendChild(b);});
}
function load(row){
  var d=detailOf(row);
  if(!d){d=document.createElement('tr');d.className='detail';d.dataset.key=row.dataset.key;
    var td=d.insertCell();td.colSpan=5;td.textContent='loading…';row.parentNode.insertBefore(d,row.nextSibling);}
  var a=row.querySelector('td.fn a');
  fetch(a.href+'&fragment=1',{headers:hdrs(),cache:'no-store'}).then(function(r){
    return r.text().then(function(t){
      if(r.ok)d.cells[0].innerHTML=t;
      else{var p=document.createElement('pre');p.textContent=t;d.cells[0].replaceChildren(p);}});
  }).catch(function(e){d.cells[0].textContent='failed: '+e;});
}
function toggle(row){
  var d=detailOf(row),key=row.dataset.key;
  if(d){d.remove();delete open[key];}else{open[key]=1;load(row);}
}
document.addEventListener('click',function(e){
  var t=e.target;if(!t.closest)return;
  var th=t.closest('#groups th[data-sort]');
  if(th){var k=th.dataset.sort;if(sortKey===k)sortDesc=!sortDesc;else{sortKey=k;sortDesc=(k==='count'||k==='age');}apply();return;}
  var a=t.closest('#groups tr.group td.fn a');
  if(!a||e.button!==0||e.ctrlKey||e.metaKey||e.shiftKey||e.altKey)return;
  e.preventDefault();toggle(a.closest('tr'));
});
function schedule(){clearTimeout(timer);if(!paused)timer=setTimeout(refresh,Math.max(period,4*cost));}
function refresh(){
  if(paused)return;
  var t0=performance.now();
  fetch(location.href,{headers:hdrs(),cache:'no-store'}).then(function(r){return r.text();}).then(function(t){
    if(paused)return;
    var doc=new DOMParser().parseFromString(t,'text/html');
    ['summary','content'].forEach(function(id){var n=doc.getElementById(id),o=$(id);
      if(n&&o)o.parentNode.replaceChild(document.adoptNode(n),o);});
    var ns=doc.getElementById('reason'),sel=$('reason'),cur=sel.value;
    if(ns){sel.innerHTML=ns.innerHTML;sel.value=cur;if(sel.value!==cur)sel.value='';}
    rows().forEach(function(row){if(open[row.dataset.key])load(row);});
    if(!plain())apply();
    $('updated').textContent='updated '+new Date().toLocaleTimeString();
    cost=performance.now()-t0;schedule();
  }).catch(function(e){$('updated').textContent='refresh failed: '+e;schedule();});
}
$('controls').hidden=false;
$('filter').oninput=apply;
$('reason').onchange=apply;
$('pause').onclick=function(){paused=!paused;this.textContent=paused?'resume':'pause';
  $('updated').textContent=paused?'paused':'';if(paused)clearTimeout(timer);else schedule();};
schedule();
})();)JS";
}

GORO_DECL std::string render_live_page(const leak_watch* watch, const debug_request& req) {
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
    const std::size_t shown = std::min(v.groups().size(), live_page_max_groups);

    // Each group's oldest wait and its reason, and the reasons for the select.
    std::vector<std::int64_t> oldest(shown);
    std::vector<const char*> reason(shown);
    std::vector<std::string_view> reasons;
    for (std::size_t gi = 0; gi < shown; ++gi) {
        const task_group& g = v.groups()[gi];
        reason[gi] = oldest_wait(g, tasks, now, oldest[gi]);
        if (!reason[gi]) reason[gi] = state_text(tasks[g.tasks.front()]);
        std::string_view why(reason[gi]);
        if (std::find(reasons.begin(), reasons.end(), why) == reasons.end()) reasons.push_back(why);
    }
    std::sort(reasons.begin(), reasons.end());

    std::string out;
    out.reserve(8192 + shown * 260);
    out += "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>goro: tasks</title>"
           "<meta name=viewport content='width=device-width'>";
    append_token_meta(out, req);
    out += "<style>";
    out += live_page_style();
    out += "</style></head>\n<body data-refresh=";
    append_int(out, refresh);
    out += " data-chunk=";
    append_int(out, static_cast<std::int64_t>(live_page_chunk));
    out += ">\n<h1>goro tasks</h1>\n<div id=summary>";
    out += std::to_string(s.total()) + " tasks in " + std::to_string(v.groups().size()) + " groups; " +
           std::to_string(rep.suspects.size()) + " leak suspect" + (rep.suspects.size() == 1 ? "" : "s") +
           "; taken " + rfc3339(unix_now_ns());
    out += "</div>\n<nav><a href='/debug/pprof/goroutine' download='goroutine.pb'>download pprof profile</a>"
           "<a href='/debug/pprof/goroutine?debug=1'>debug=1</a><a href='/debug/pprof/goroutine?debug=2'>debug=2</a>"
           "<a href='/debug/goro/tasks.json'>tasks.json</a><a href='/debug/goro/leaks'>leak report</a>"
           "<a href='/debug/pprof/block?debug=1'>wait profile</a><a href='/debug/pprof/mutex?debug=1'>mutex profile</a>"
           "<a href='/metrics'>metrics</a><a href='/debug/pprof/'>index</a></nav>\n";
    out += "<div id=controls hidden><input id=filter type=search placeholder='filter: function, wait reason, label'> "
           "<select id=reason><option value=''>every wait reason</option>";
    for (std::string_view why : reasons) {
        out += "<option>";
        append_html_escaped(out, why);
        out += "</option>";
    }
    out += "</select> <button id=pause type=button>pause</button> <span id=updated class=muted></span> "
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
            out += "<tr class=suspect data-key='";
            append_hex(out, g.key);
            out += "'><td class=fn>";
            if (g.frames.empty()) {
                out += '?';
            } else {
                // The group page, when the group still has the same key.
                out += "<a href='group?key=";
                append_hex(out, g.key);
                out += "'>";
                append_html_escaped(out, g.frames[0].function);
                out += "</a><br><span class=muted>";
                append_html_escaped(out, g.frames[0].file);
                out += ':';
                append_int(out, g.frames[0].line);
                out += "</span>";
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

    // Groups: one short row each (end tags left out, as HTML allows).
    out += "<section id=groups><h2>Groups (" + std::to_string(v.groups().size()) + ")</h2>\n";
    if (shown < v.groups().size())
        out += "<p class=muted>the " + std::to_string(shown) + " largest groups are shown</p>\n";
    out += "<table><thead><tr><th class=num data-sort=count>tasks</th><th data-sort=reason>wait reason</th>"
           "<th class=num data-sort=age>oldest</th><th data-sort=fn>function (click for stack and tasks)</th>"
           "<th data-sort=labels>labels</th></tr></thead><tbody>\n";
    for (std::size_t gi = 0; gi < shown; ++gi) {
        if (gi && gi % live_page_chunk == 0) out += "</tbody><tbody>\n";
        const task_group& g = v.groups()[gi];
        const task_record& first = tasks[g.tasks.front()];
        const site_info& leaf = v.site(v.frames(first)[0]);
        out += "<tr class=group data-key=";
        append_hex(out, g.key);
        out += " data-count=";
        append_int(out, static_cast<std::int64_t>(g.count));
        out += " data-age=";
        append_int(out, oldest[gi]);
        out += "><td class=num>";
        append_int(out, static_cast<std::int64_t>(g.count));
        out += "<td>";
        append_html_escaped(out, reason[gi]);
        out += "<td class=num>";
        out += oldest[gi] > 0 ? short_duration(oldest[gi]) : std::string("-");
        out += "<td class=fn><a href='group?key=";
        append_hex(out, g.key);
        out += "'>";
        append_html_escaped(out, leaf.function);
        out += "</a>";
        if (!leaf.file.empty()) {
            out += " <span class=muted>";
            append_html_escaped(out, leaf.file);
            out += ':';
            append_int(out, leaf.line);
            out += "</span>";
        }
        out += "<td>";
        append_labels_text(out, profile_view::labels(first));
        out += "</tr>\n";
    }
    out += "</tbody></table></section>\n</main>\n<script>";
    out += live_page_script();
    out += "</script>\n</body></html>\n";
    return out;
}

/// A group's stack and tasks: what the page inserts under a row, and the
/// body of the group's own page.
GORO_DECL void append_group_detail(std::string& out, profile_view& v, const task_group& g,
                                   std::int64_t now) {
    const auto& tasks = v.snap().tasks();
    const task_record& first = tasks[g.tasks.front()];
    out += "<div class=group-detail data-key='";
    append_hex(out, g.key);
    out += "'><pre class=stack>";
    for (std::uint32_t f : v.frames(first)) {
        const site_info& si = v.site(f);
        append_html_escaped(out, si.function);
        if (!si.file.empty()) {
            out += "\n\t";
            append_html_escaped(out, si.file);
            out += ':';
            append_int(out, si.line);
        }
        out += '\n';
    }
    out += "</pre><pre class=tasks>";
    for (std::size_t k = 0; k < g.tasks.size() && k < live_page_max_tasks; ++k) {
        const task_record& r = tasks[g.tasks[k]];
        out += "goroutine ";
        append_int(out, static_cast<std::int64_t>(r.id));
        if (r.meta && !r.meta->name.empty()) {
            out += " name=";
            std::string q;
            go_quote(q, r.meta->name);
            append_html_escaped(out, q);
        }
        out += " [";
        append_html_escaped(out, state_text(r));
        if (std::int64_t m = minutes_waiting(r, now); m >= 1) {
            out += ", ";
            append_int(out, m);
            out += " minutes";
        }
        out += "]: ";
        if (r.kind == task_kind::blocked) {
            out += "a thread in block_on";
        } else {
            const site_info& c = v.table()[v.table().intern(r.created_by)];
            out += "created by ";
            append_html_escaped(out, c.function);
            if (r.parent_id) {
                out += " in goroutine ";
                append_int(out, static_cast<std::int64_t>(r.parent_id));
            }
            out += " (";
            append_html_escaped(out, c.file);
            out += ':';
            append_int(out, c.line);
            out += ')';
        }
        out += '\n';
    }
    if (g.tasks.size() > live_page_max_tasks) {
        out += "and ";
        append_int(out, static_cast<std::int64_t>(g.tasks.size() - live_page_max_tasks));
        out += " more\n";
    }
    out += "</pre></div>";
}

/// "0x6eb2c8bb6be23f46" (or without 0x) as a group key.
GORO_DECL std::optional<std::uint64_t> parse_group_key(std::string_view s) noexcept {
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s.remove_prefix(2);
    if (s.empty() || s.size() > 16) return std::nullopt;
    std::uint64_t k = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), k, 16);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return k;
}

GORO_DECL void serve_live_group(const debug_request& req, debug_response& r) {
    auto text = [&](int status, std::string body) {
        r.status = status;
        r.content_type = "text/plain; charset=utf-8";
        r.body = std::move(body);
    };
    auto raw = req.param("key");
    auto key = raw ? parse_group_key(*raw) : std::nullopt;
    if (!key) {
        text(400, "invalid value of query parameter 'key' (want a group's key, like 0x6eb2c8bb6be23f46, "
                  "from /debug/goro/)\n");
        return;
    }
    snapshot s = snapshot::take();
    profile_view v(s);
    const task_group* g = nullptr;
    for (const task_group& c : v.groups())
        if (c.key == *key) {
            g = &c;
            break;
        }
    if (!g) {
        std::string k;
        append_hex(k, *key);
        text(404, "no group " + k + " now: its tasks ended, or now wait somewhere else\n");
        return;
    }
    r.content_type = "text/html; charset=utf-8";
    std::string& out = r.body;
    auto frag = req.param("fragment");
    if (frag && !frag->empty() && *frag != "0") {
        append_group_detail(out, v, *g, s.taken_at_ns());
        return;
    }
    const task_record& first = s.tasks()[g->tasks.front()];
    const site_info& leaf = v.site(v.frames(first)[0]);
    std::int64_t oldest = 0;
    const char* why = oldest_wait(*g, s.tasks(), s.taken_at_ns(), oldest);
    out += "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>goro: ";
    append_html_escaped(out, leaf.function);
    out += "</title><meta name=viewport content='width=device-width'><style>";
    out += live_page_style();
    out += "</style></head>\n<body>\n<nav><a href='/debug/goro/'>all groups</a></nav>\n<h1 class=fn>";
    append_html_escaped(out, leaf.function);
    out += "</h1>\n<p id=summary>";
    append_int(out, static_cast<std::int64_t>(g->count));
    out += g->count == 1 ? " task" : " tasks";
    if (why) {
        out += "; the oldest [";
        append_html_escaped(out, why);
        out += ", " + short_duration(oldest) + "]";
    }
    if (!profile_view::labels(first).empty()) {
        out += "; labels ";
        append_labels_text(out, profile_view::labels(first));
    }
    out += "; taken " + rfc3339(unix_now_ns()) + "</p>\n";
    append_group_detail(out, v, *g, s.taken_at_ns());
    out += "\n</body></html>\n";
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_LIVE_PAGE_HPP
