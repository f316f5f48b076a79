// goro/inspect/dump.hpp — every task's stack in Go's goroutine-profile formats.
//
//   goro::dump_goroutines();                   // debug=1 to stderr, grouped by stack
//   goro::dump_goroutines(std::cout, 2);       // one block per task, like a Go crash
//   std::string pb = goro::goroutine_profile(0);   // pprof protobuf (go tool pprof)
//   std::string js = goro::tasks_json();           // machine-readable (debug=3)
//   auto before = goro::snapshot::take(); ... auto after = goro::snapshot::take();
//   goro::write_diff(std::cerr, goro::diff(before, after));   // what leaked in between
//
// Every form takes a snapshot (goro/inspect/snapshot.hpp: the world stops only to begin
// it; records are copied while tasks run) or formats one the caller already took, so a leak checker or the
// debug server can print one snapshot several ways. Formatting runs on the
// caller's thread while tasks run. Text goes through a 64 KiB buffer and an
// ostream gets it chunk by chunk: a dump of any size is complete (Go stops
// debug=2 at 64 MiB; goro does not) and never built as one string unless a
// string was asked for. Per-site text is formatted once per call (see the
// profile_view in goro/inspect/pprof.hpp), so a million tasks on a few sites cost a
// few string copies each.
//
// debug = 1 (Go's grouped format; `grep "goroutine profile:"` keeps working)
//     goroutine profile: total 20
//     15 @ 0x2f4a0c11d2e1 0x91aa20e4f0b7
//     # labels: {"role":"worker"}
//     #	0x2f4a0c11d2e1	worker		src/w.cpp:16
//     #	0x91aa20e4f0b7	run_pool	src/w.cpp:40
//     (blank line)
//   Groups by count descending (ties: smallest task id first); the sum of the
//   counts is the total. `0x…` is goro::site_id: stable across runs for the
//   same function, file and line. Columns are padded with tabs exactly as Go's
//   text/tabwriter pads them (minwidth 1, tabwidth 8, padding 1). The labels
//   line uses Go's spelling: "key":"value" pairs quoted like Go's %q, sorted,
//   joined by ", ".
//
// debug = 2 (one block per task, ascending id, blocks separated by a blank line)
//     goroutine 18 [chan receive, 5 minutes]:
//     goroutine 19 name="worker-2" [chan receive]:     (a named task: Go-quoted,
//                                   where Go's system tracebacks put gp=… m=…)
//     worker(...)
//     	src/w.cpp:16
//     created by run_pool in goroutine 1
//     	src/w.cpp:40
//   States: the wait reason (Go's words) when parked, else `running` or
//   `runnable`; `, N minutes` once parked a minute or more (N = whole minutes,
//   Go's rule). ` in goroutine N` is left out when the task was started from a
//   plain thread. A thread in block_on() has no `created by` line: like Go's
//   main goroutine, its bottom frame is the block_on() call.
//
// Frames that cannot be read show as a pseudo-frame: `(not started)` for a
// task that never ran, `(stack unavailable: running)` for a task still
// running on a worker that did not stop when the site its worker resumed it
// at is unknown. A task running there shows that site instead; a task that
// has not suspended yet shows its own function (ENTRY SITE in
// goro/core/task.hpp: the line is the function's closing brace on g++, its
// declaration on clang++), so a CPU loop or a blocking call before the first
// co_await is found by name. A task started with go(callable) or spawn() is
// resumed first in goro's runner frame, which has no site of its own: it
// shows the go()/spawn() call while the callable runs, then the entry site
// of the task the callable returned (the go()/spawn() call again for a lambda
// coroutine with captures; RUNNING SITE in goro/core/go.hpp).
//
// debug = 0: pprof protobuf, see goro/inspect/pprof.hpp.
//
// debug = 3 / tasks_json(): JSON, one task or group per line. SCHEMA
//   {
//     "total": <int>,                       // = tasks.length = sum of groups[].count
//     "tasks": [ {                          // ascending id
//        "id": <int>,
//        "state": "waiting" | "runnable" | "running",
//        "wait_reason": <string> | null,    // Go's words ("chan receive"); null unless waiting
//        "waiting_ns": <int>,               // how long parked when the snapshot was taken; 0 unless waiting
//        "name": <string>,                  // "" when unnamed
//        "labels": { <string>: <string>, ... },
//        "kind": "task" | "block_on",       // block_on: a plain thread waiting in goro::block_on
//        "parent_id": <int>,                // 0: started outside any task
//        "created_by": <frame>,             // where go()/block_on() was called
//        "frames_known": <bool>,            // false: running on a worker that did not stop
//        "frames": [ <frame>, ... ]         // leaf first
//     } ],
//     "groups": [ {                         // as debug=1: count descending
//        "count": <int>, "task_ids": [<int>, ...], "labels": {...}, "frames": [ <frame>, ... ]
//     } ]
//   }
//   <frame> = {"function": <string>, "file": <string>, "line": <int>, "site_id": "0x…"}
//   Strings are JSON-escaped; invalid UTF-8 bytes become U+FFFD.
//
// Diff: `diff(before, after)` lists the groups whose count grew (new groups
// too), by delta descending, with the ids of the tasks in them that did not
// exist before. `write_diff` prints it in the debug=1 shape:
//     goroutine profile diff: +15
//     +15 @ 0x2f4a0c11d2e1
//     #	0x2f4a0c11d2e1	worker	src/w.cpp:16
//   (the header's number is the change of the total; `+delta @ …` per group).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <goro/core/algo.hpp>
#include <goro/core/hash_map.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/stack.hpp>
#include <goro/core/vec.hpp>
#include <goro/inspect/pprof.hpp>
#include <goro/inspect/snapshot.hpp>

namespace goro {

namespace detail {

/// Asks for transparent huge pages for the not yet touched memory [p, p + n)
/// of a big string, as big_array_allocator does for its arrays: a debug=2
/// dump of a million tasks is over 100 MiB, and faulting that in 4 KiB at a
/// time cost more than formatting it. Only the whole 2 MiB pages inside the
/// range are advised; a hint, without effect where unsupported.
GORO_DECL void advise_huge_pages(char* p, std::size_t n) noexcept;

/// Where formatted text goes: a string (grows), or an ostream fed in chunks.
class text_sink {
public:
    explicit text_sink(std::string& s) noexcept : buf_(&s) {}
    explicit text_sink(std::ostream& os) : buf_(&own_), os_(&os) { own_.reserve(chunk + 4096); }
    text_sink(const text_sink&) = delete;
    text_sink& operator=(const text_sink&) = delete;
    ~text_sink() { flush(); }

    void append(std::string_view s) {
        buf_->append(s.data(), s.size());
        if (os_ && buf_->size() >= chunk) flush();
    }
    void put(char c) { buf_->push_back(c); }
    void number(std::uint64_t v);
    void signed_number(std::int64_t v);
    void flush();
    /// Room for `n` more bytes when writing to a string (a hint; no effect on a stream).
    void reserve_more(std::size_t n);
    /// Bytes written to a string so far (0 for a stream).
    std::size_t string_size() const noexcept { return os_ ? 0 : buf_->size(); }

private:
    static constexpr std::size_t chunk = 64 * 1024;
    std::string own_;
    std::string* buf_;
    std::ostream* os_ = nullptr;
};

/// Length of the valid UTF-8 sequence starting at s[i] (a lead byte >= 0x80), or 0.
GORO_DECL std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept;

/// How quote() escapes: the two spellings goro writes differ only here.
struct quote_rule {
    bool bell_and_vtab;          // \a and \v have short escapes
    bool del_is_control;         // 0x7f is escaped like a control byte
    const char* control_prefix;  // before a control byte's two hex digits
    const char* invalid_byte;    // for a byte that is not valid UTF-8; null: control_prefix and its hex
};

/// Go's strconv.Quote: the spelling of pprof labels in debug=1.
inline constexpr quote_rule go_quote_rule{true, true, "\\x", nullptr};
/// JSON: invalid UTF-8 bytes become U+FFFD so the output stays valid JSON.
inline constexpr quote_rule json_quote_rule{false, false, "\\u00", "\\ufffd"};

/// Appends `s` to `out` in double quotes, escaped by `rule`; valid UTF-8
/// sequences are copied as they are.
GORO_DECL void quote(std::string& out, std::string_view s, const quote_rule& rule);

inline void go_quote(std::string& out, std::string_view s) { quote(out, s, go_quote_rule); }
inline void json_quote(std::string& out, std::string_view s) { quote(out, s, json_quote_rule); }

/// One frame line of the debug=1 shape, whatever it comes from.
struct text_frame {
    std::string_view hex, function, file;
    std::uint32_t line = 0;
    std::uint32_t function_width = 0;
};

/// Go's text/tabwriter with minwidth 1, tabwidth 8, padding 1 and '\t' padding:
/// a column is as wide as its widest cell plus one, rounded up to a multiple
/// of 8, and each cell is followed by as many tabs as reach that width.
GORO_DECL void tab_pad(std::string& out, std::size_t text_width, std::size_t column_width);

GORO_DECL void write_frame_lines(std::string& out, std::span<const text_frame> frames);

/// The `# labels: {...}` line of debug=1 (nothing when there are no labels).
GORO_DECL void write_labels_line(std::string& out, const std::vector<std::pair<std::string, std::string>>& labels);

inline text_frame text_frame_of(const site_info& si) noexcept {
    return text_frame{std::string_view(si.hex, si.hex_len), si.function, si.file, si.line, si.function_width};
}

GORO_DECL void write_debug1(text_sink& out, const profile_view& v);

GORO_DECL const char* state_text(const task_record& r) noexcept;

/// Whole minutes parked, Go's rule: shown when at least one.
inline std::int64_t minutes_waiting(const task_record& r, std::int64_t now_ns) noexcept {
    if (r.state != task_state::waiting || r.since_ns == 0 || now_ns <= r.since_ns) return 0;
    return (now_ns - r.since_ns) / 60'000'000'000;
}

struct pick_all {
    bool operator()(const task_record&) const noexcept { return true; }
};

/// debug=2 blocks for the tasks `pick` accepts (all of them for a dump).
template <class Pick = pick_all>
void write_stacks(text_sink& out, profile_view& v, Pick&& pick = {}) {
    const auto& tasks = v.snap().tasks();
    site_table& table = v.table();
    // Per-site text, made on first use: "function(...)\n\tfile:line\n" for a
    // frame, and the two halves of a "created by" line.
    vec<std::string> frame_text, created_text, created_place;
    auto ensure = [](vec<std::string>& v, std::size_t n) {
        if (v.size() < n) v.resize(n);
    };
    // Room for the whole dump in a string, once the first blocks have told
    // how long a block is: growing it by doubling would copy what is written
    // and fault in its pages again (a million tasks write over 100 MiB).
    constexpr std::size_t sample = 256;
    const std::size_t start = out.string_size();
    const std::int64_t now = v.snap().taken_at_ns();
    bool first = true;
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (i == sample) {
            const std::size_t per_task = (out.string_size() - start) / sample + 1;
            out.reserve_more((tasks.size() - sample) * per_task / 8 * 9 + 4096);
        }
        const task_record& r = tasks[i];
        if (!pick(r)) continue;
        if (!first) out.put('\n');
        first = false;
        out.append("goroutine ");
        out.number(r.id);
        if (r.meta && !r.meta->name.empty()) {
            // The task's name, as Go's system tracebacks put `gp=… m=…`
            // between the id and the state: `goroutine 18 name="price" [chan receive]:`.
            std::string q = " name=";
            go_quote(q, r.meta->name);
            out.append(q);
        }
        out.append(" [");
        out.append(state_text(r));
        if (std::int64_t m = minutes_waiting(r, now); m >= 1) {
            out.append(", ");
            out.signed_number(m);
            out.append(" minutes");
        }
        out.append("]:\n");
        for (std::uint32_t f : v.frames(r)) {
            ensure(frame_text, table.size());
            std::string& t = frame_text[f];
            if (t.empty()) {
                const site_info& si = table[f];
                if (f < 2) {
                    t = "\t" + si.function + "\n";
                } else {
                    t = si.function + "(...)\n\t" + si.file + ":" + std::to_string(si.line) + "\n";
                }
            }
            out.append(t);
        }
        if (r.kind == task_kind::blocked) continue;  // like Go's main goroutine
        std::uint32_t c = table.intern(r.created_by);
        ensure(created_text, table.size());
        ensure(created_place, table.size());
        if (created_text[c].empty()) {
            const site_info& si = table[c];
            created_text[c] = "created by " + (c < 2 ? std::string("?") : si.function);
            created_place[c] = "\n\t" + si.file + ":" + std::to_string(si.line) + "\n";
        }
        out.append(created_text[c]);
        if (r.parent_id) {
            out.append(" in goroutine ");
            out.number(r.parent_id);
        }
        out.append(created_place[c]);
    }
}

GORO_DECL void write_json_frame(std::string& out, const site_info& si);

GORO_DECL void write_json_labels(std::string& out, const std::vector<std::pair<std::string, std::string>>& labels);

GORO_DECL void write_json(text_sink& out, profile_view& v);

GORO_DECL void check_debug(int debug, const char* op);

/// debug=2: every task's block.
GORO_DECL void write_debug2_all(text_sink& out, const snapshot& s);

/// debug=1, flushed to `out`.
GORO_DECL void write_debug1_to(std::ostream& out, const snapshot& s);

GORO_DECL void write_profile(text_sink& out, const snapshot& s, int debug);

}  // namespace detail

/// Writes `s` in the format `debug` selects (0 pprof, 1 grouped, 2 per task, 3 JSON).
GORO_DECL void write_goroutine_profile(std::ostream& out, const snapshot& s, int debug = 1);

/// `s` in the format `debug` selects, as a string (debug 0: the protobuf bytes).
GORO_DECL std::string goroutine_profile(const snapshot& s, int debug = 1);

namespace detail {
/// A snapshot for format `debug`: the grouped ones (0 and 1) need no order.
inline snapshot take_for(int debug) { return snapshot::take({.sorted = debug >= 2}); }
}  // namespace detail

/// Takes a snapshot now and returns it in the format `debug` selects.
inline std::string goroutine_profile(int debug = 1) {
    detail::check_debug(debug, "goro::goroutine_profile");
    return goroutine_profile(detail::take_for(debug), debug);
}

/// Prints every task's stack, like Go's pprof.Lookup("goroutine").WriteTo(out, debug).
GORO_DECL void dump_goroutines(std::ostream& out, int debug = 1);

/// Prints every task's stack to std::cerr, grouped by stack (debug=1). Its own
/// function, not a default argument, so that a program that only ever calls
/// this compiles none of the other formats into itself.
GORO_DECL void dump_goroutines();

/// Prints a snapshot already taken.
GORO_DECL void dump_goroutines(std::ostream& out, const snapshot& s, int debug = 1);

/// debug=2 blocks of the chosen tasks only (`pick(const task_record&) -> bool`),
/// for reports that show some tasks (a leak check, a crash report).
template <class Pick>
void write_goroutine_stacks(std::ostream& out, const snapshot& s, Pick&& pick) {
    detail::text_sink sink(out);
    detail::profile_view v(s, detail::grouping::none);
    detail::write_stacks(sink, v, pick);
}

/// The snapshot as JSON (schema at the top of this file).
inline std::string tasks_json(const snapshot& s) { return goroutine_profile(s, 3); }
inline std::string tasks_json() { return goroutine_profile(snapshot::take(), 3); }
inline void write_tasks_json(std::ostream& out, const snapshot& s) { write_goroutine_profile(out, s, 3); }

// --- diff ----------------------------------------------------------------------
//
// diff(), write_diff() and to_string(diff) are function templates with one
// defaulted parameter, called as plain functions: a template is compiled only
// in a program that calls it, while a plain inline function makes the
// compiler instantiate everything it calls (here hash maps of vectors and a
// sort) in every program that includes goro/core.hpp (issue 17: ~6 MB of
// compiler memory).

/// A stack whose task count grew between two snapshots.
struct group_change {
    std::int64_t delta = 0;  ///< after - before (> 0)
    std::size_t before = 0;  ///< count in the earlier snapshot (0: a new group)
    std::size_t after = 0;
    std::vector<std::uint64_t> site_ids;  ///< leaf first (0 for a pseudo-frame)
    std::vector<stack_frame> frames;      ///< leaf first
    std::vector<std::pair<std::string, std::string>> labels;
    std::vector<std::uint64_t> new_task_ids;  ///< tasks of this group that did not exist before
};

struct snapshot_diff {
    std::size_t total_before = 0;
    std::size_t total_after = 0;
    std::vector<group_change> grown;  ///< delta descending, then count descending
};

/// Groups whose count grew from `before` to `after`: "what leaks between these two moments".
template <int = 0>
snapshot_diff diff(const snapshot& before, const snapshot& after) {
    detail::profile_view vb(before), va(after);
    snapshot_diff d;
    d.total_before = before.total();
    d.total_after = after.total();
    auto signature = [](const detail::profile_view& v, const task_record& r) {
        std::vector<std::uint64_t> sig;
        for (std::uint32_t f : v.frames(r)) sig.push_back(f < 2 ? 0xfeed0000ull + f : v.site(f).id);
        return sig;
    };
    struct old_group {
        std::vector<std::uint64_t> sig;
        const std::vector<std::pair<std::string, std::string>>* labels;
        std::size_t count;
    };
    detail::hash_map<std::uint64_t, std::vector<old_group>> old;
    for (const task_group& g : vb.groups()) {
        const task_record& r = before.tasks()[g.tasks.front()];
        old[g.key].push_back(old_group{signature(vb, r), &detail::profile_view::labels(r), g.count});
    }
    std::vector<std::uint64_t> before_ids;
    before_ids.reserve(before.total());
    for (const task_record& r : before.tasks()) before_ids.push_back(r.id);  // ascending already
    for (const task_group& g : va.groups()) {
        const task_record& r = after.tasks()[g.tasks.front()];
        auto sig = signature(va, r);
        const auto& labels = detail::profile_view::labels(r);
        std::size_t was = 0;
        if (auto it = old.find(g.key); it != old.end())
            for (const old_group& o : it->second)
                if (o.sig == sig && *o.labels == labels) was = o.count;
        if (g.count <= was) continue;
        group_change c;
        c.delta = static_cast<std::int64_t>(g.count) - static_cast<std::int64_t>(was);
        c.before = was;
        c.after = g.count;
        for (std::uint32_t f : va.frames(r)) {
            const detail::site_info& si = va.site(f);
            c.site_ids.push_back(si.id);
            c.frames.push_back(stack_frame{si.function, si.file, si.line});
        }
        c.labels = labels;
        for (std::uint32_t ti : g.tasks) {
            std::uint64_t id = after.tasks()[ti].id;
            auto at = std::lower_bound(before_ids.begin(), before_ids.end(), id);
            if (at == before_ids.end() || *at != id) c.new_task_ids.push_back(id);
        }
        d.grown.push_back(std::move(c));
    }
    detail::stable_sort(d.grown.data(), d.grown.data() + d.grown.size(), [](const group_change& a, const group_change& b) {
        if (a.delta != b.delta) return a.delta > b.delta;
        return a.after > b.after;
    });
    return d;
}

namespace detail {

/// The text of write_diff(), into any sink: to_string(diff) writes it into a
/// string directly (no std::ostringstream, so no <sstream> to parse).
template <int = 0>
void write_diff_text(text_sink& out, const snapshot_diff& d) {
    std::string block = "goroutine profile diff: ";
    std::int64_t total = static_cast<std::int64_t>(d.total_after) - static_cast<std::int64_t>(d.total_before);
    if (total >= 0) block += '+';
    block += std::to_string(total);
    block += '\n';
    out.append(block);
    detail::vec<std::string> hex;
    detail::vec<detail::text_frame> frames;
    for (const group_change& c : d.grown) {
        block.clear();
        hex.clear();
        frames.clear();
        block += '+';
        block += std::to_string(c.delta);
        block += " @";
        for (std::size_t i = 0; i < c.frames.size(); ++i) {
            char b[20];
            hex.emplace_back(b, detail::format_hex(b, c.site_ids[i]));
            block += ' ';
            block += hex.back();
        }
        block += '\n';
        for (std::size_t i = 0; i < c.frames.size(); ++i) {
            const stack_frame& f = c.frames[i];
            frames.push_back(detail::text_frame{hex[i], f.function, f.file, f.line, detail::utf8_width(f.function)});
        }
        detail::write_labels_line(block, c.labels);
        detail::write_frame_lines(block, frames);
        block += '\n';
        out.append(block);
    }
}

}  // namespace detail

/// Prints a diff in the debug=1 shape (`goroutine profile diff: +N`, `+delta @ …`).
template <int = 0>
void write_diff(std::ostream& os, const snapshot_diff& d) {
    detail::text_sink out(os);
    detail::write_diff_text(out, d);
}

template <int = 0>
std::string to_string(const snapshot_diff& d) {
    std::string text;
    {
        detail::text_sink out(text);
        detail::write_diff_text(out, d);
    }
    return text;
}

}  // namespace goro

#if GORO_BODIES
#include <charconv>
#include <iostream>
#include <ostream>

namespace goro::detail {

GORO_DECL void advise_huge_pages(char* p, std::size_t n) noexcept {
#if GORO_BIG_ARRAY_MMAP && defined(MADV_HUGEPAGE)
    constexpr std::uintptr_t huge = std::uintptr_t(2) << 20;
    const std::uintptr_t from = (reinterpret_cast<std::uintptr_t>(p) + huge - 1) & ~(huge - 1);
    const std::uintptr_t to = (reinterpret_cast<std::uintptr_t>(p) + n) & ~(huge - 1);
    if (to > from) (void)::madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
#endif
}

GORO_DECL void text_sink::number(std::uint64_t v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    buf_->append(b, static_cast<std::size_t>(r.ptr - b));
}

GORO_DECL void text_sink::signed_number(std::int64_t v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    buf_->append(b, static_cast<std::size_t>(r.ptr - b));
}

GORO_DECL void text_sink::flush() {
    if (os_ && !own_.empty()) {
        os_->write(own_.data(), static_cast<std::streamsize>(own_.size()));
        own_.clear();
    }
}

GORO_DECL void text_sink::reserve_more(std::size_t n) {
    if (os_ || buf_->capacity() >= buf_->size() + n) return;
    buf_->reserve(buf_->size() + n);
    advise_huge_pages(buf_->data() + buf_->size(), buf_->capacity() - buf_->size());
}

GORO_DECL std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept {
    unsigned char c = static_cast<unsigned char>(s[i]);
    std::size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
    if (c >= 0xF5) n = 0;
    if (n == 0 || i + n > s.size()) return 0;
    for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
    unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
    if (c == 0xE0 && c1 < 0xA0) return 0;  // overlong
    if (c == 0xED && c1 > 0x9F) return 0;  // surrogate
    if (c == 0xF0 && c1 < 0x90) return 0;  // overlong
    if (c == 0xF4 && c1 > 0x8F) return 0;  // beyond U+10FFFF
    return n;
}

GORO_DECL void quote(std::string& out, std::string_view s, const quote_rule& rule) {
    static constexpr char hexd[] = "0123456789abcdef";
    const auto hex_escape = [&](unsigned char c) {
        out += rule.control_prefix;
        out.push_back(hexd[c >> 4]);
        out.push_back(hexd[c & 15]);
    };
    out.push_back('"');
    for (std::size_t i = 0; i < s.size();) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\a':
                if (rule.bell_and_vtab) out += "\\a";
                else hex_escape(c);
                break;
            case '\v':
                if (rule.bell_and_vtab) out += "\\v";
                else hex_escape(c);
                break;
            default:
                if (c < 0x20 || (c == 0x7f && rule.del_is_control)) hex_escape(c);
                else out.push_back(static_cast<char>(c));
            }
            ++i;
            continue;
        }
        std::size_t n = utf8_sequence_length(s, i);
        if (n == 0) {
            if (rule.invalid_byte) out += rule.invalid_byte;
            else hex_escape(c);
            ++i;
        } else {
            out.append(s.data() + i, n);
            i += n;
        }
    }
    out.push_back('"');
}

GORO_DECL void tab_pad(std::string& out, std::size_t text_width, std::size_t column_width) {
    std::size_t cell = (column_width + 7) / 8 * 8;
    std::size_t tabs = (cell - text_width + 7) / 8;
    out.append(tabs, '\t');
}

GORO_DECL void write_frame_lines(std::string& out, std::span<const text_frame> frames) {
    std::size_t hex_w = 1, fn_w = 1;
    for (const text_frame& f : frames) {
        hex_w = std::max(hex_w, f.hex.size() + 1);
        fn_w = std::max(fn_w, std::size_t(f.function_width) + 1);
    }
    char num[16];
    for (const text_frame& f : frames) {
        out += "#";
        tab_pad(out, 1, 2);
        out += f.hex;
        tab_pad(out, f.hex.size(), hex_w);
        out += f.function;
        if (f.file.empty() && f.line == 0) {  // a pseudo-frame has no place (and is alone)
            out += '\n';
            continue;
        }
        tab_pad(out, f.function_width, fn_w);
        out += f.file;
        out += ':';
        auto r = std::to_chars(num, num + sizeof num, f.line);
        out.append(num, static_cast<std::size_t>(r.ptr - num));
        out += '\n';
    }
}

GORO_DECL void write_labels_line(std::string& out, const std::vector<std::pair<std::string, std::string>>& labels) {
    if (labels.empty()) return;
    vec<std::string> kv;
    kv.reserve(labels.size());
    for (const auto& [k, v] : labels) {
        std::string s;
        go_quote(s, k);
        s += ':';
        go_quote(s, v);
        kv.push_back(std::move(s));
    }
    detail::stable_sort(kv.begin(), kv.end(), [](const std::string& a, const std::string& b) { return a < b; });
    out += "# labels: {";
    for (std::size_t i = 0; i < kv.size(); ++i) {
        if (i) out += ", ";
        out += kv[i];
    }
    out += "}\n";
}

GORO_DECL void write_debug1(text_sink& out, const profile_view& v) {
    const auto& tasks = v.snap().tasks();
    std::string head = "goroutine profile: total " + std::to_string(v.snap().total()) + "\n";
    out.append(head);
    std::string block;
    vec<text_frame> frames;
    for (const task_group& g : v.groups()) {
        const task_record& r = tasks[g.first];
        block.clear();
        frames.clear();
        block += std::to_string(g.count);
        block += " @";
        for (std::uint32_t f : v.frames(r)) {
            const site_info& si = v.site(f);
            block += ' ';
            block.append(si.hex, si.hex_len);
            frames.push_back(text_frame_of(si));
        }
        block += '\n';
        write_labels_line(block, profile_view::labels(r));
        write_frame_lines(block, frames);
        block += '\n';
        out.append(block);
    }
}

GORO_DECL const char* state_text(const task_record& r) noexcept {
    switch (r.state) {
    case task_state::waiting: return r.wait_reason ? r.wait_reason : "waiting";
    case task_state::running: return "running";
    case task_state::runnable: return "runnable";
    }
    return "unknown";
}

GORO_DECL void write_json_frame(std::string& out, const site_info& si) {
    out += "{\"function\":";
    json_quote(out, si.function);
    out += ",\"file\":";
    json_quote(out, si.file);
    out += ",\"line\":";
    out += std::to_string(si.line);
    out += ",\"site_id\":\"";
    out.append(si.hex, si.hex_len);
    out += "\"}";
}

GORO_DECL void write_json_labels(std::string& out, const std::vector<std::pair<std::string, std::string>>& labels) {
    out += '{';
    bool first = true;
    for (const auto& [k, val] : labels) {
        if (!first) out += ',';
        first = false;
        json_quote(out, k);
        out += ':';
        json_quote(out, val);
    }
    out += '}';
}

GORO_DECL void write_json(text_sink& out, profile_view& v) {
    const auto& tasks = v.snap().tasks();
    site_table& table = v.table();
    vec<std::string> frame_json;
    auto frame = [&](std::uint32_t f) -> const std::string& {
        if (frame_json.size() < table.size()) frame_json.resize(table.size());
        std::string& t = frame_json[f];
        if (t.empty()) write_json_frame(t, table[f]);
        return t;
    };
    const std::int64_t now = v.snap().taken_at_ns();
    out.reserve_more(tasks.size() * 260);
    out.append("{\"total\":");
    out.number(v.snap().total());
    out.append(",\"tasks\":[");
    std::string line;
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        const task_record& r = tasks[i];
        line.clear();
        line += i ? ",\n" : "\n";
        line += "{\"id\":";
        line += std::to_string(r.id);
        line += ",\"state\":\"";
        line += to_string(r.state);
        line += "\",\"wait_reason\":";
        if (r.state == task_state::waiting && r.wait_reason) json_quote(line, r.wait_reason);
        else line += "null";
        line += ",\"waiting_ns\":";
        line += std::to_string(r.state == task_state::waiting && r.since_ns && now > r.since_ns ? now - r.since_ns : 0);
        line += ",\"name\":";
        json_quote(line, r.meta ? std::string_view(r.meta->name) : std::string_view());
        line += ",\"labels\":";
        write_json_labels(line, profile_view::labels(r));
        line += r.kind == task_kind::blocked ? ",\"kind\":\"block_on\"" : ",\"kind\":\"task\"";
        line += ",\"parent_id\":";
        line += std::to_string(r.parent_id);
        line += ",\"created_by\":";
        line += frame(table.intern(r.created_by));
        line += r.frames_known ? ",\"frames_known\":true" : ",\"frames_known\":false";
        line += ",\"frames\":[";
        bool first = true;
        for (std::uint32_t f : v.frames(r)) {
            if (!first) line += ',';
            first = false;
            line += frame(f);
        }
        line += "]}";
        out.append(line);
    }
    out.append("\n],\"groups\":[");
    for (std::size_t gi = 0; gi < v.groups().size(); ++gi) {
        const task_group& g = v.groups()[gi];
        const task_record& r = tasks[g.tasks.front()];
        line.clear();
        line += gi ? ",\n" : "\n";
        line += "{\"count\":";
        line += std::to_string(g.count);
        line += ",\"task_ids\":[";
        for (std::size_t k = 0; k < g.tasks.size(); ++k) {
            if (k) line += ',';
            line += std::to_string(tasks[g.tasks[k]].id);
            if (line.size() > 60000) {
                out.append(line);
                line.clear();
            }
        }
        line += "],\"labels\":";
        write_json_labels(line, profile_view::labels(r));
        line += ",\"frames\":[";
        bool first = true;
        for (std::uint32_t f : v.frames(r)) {
            if (!first) line += ',';
            first = false;
            line += frame(f);
        }
        line += "]}";
        out.append(line);
    }
    out.append("\n]}\n");
}

GORO_DECL void check_debug(int debug, const char* op) {
    if (debug < 0 || debug > 3)
        throw usage_error(std::string(op) + ": debug must be 0 (pprof), 1 (grouped), 2 (per task) or 3 (JSON), not " +
                          std::to_string(debug));
}

GORO_DECL void write_debug2_all(text_sink& out, const snapshot& s) {
    profile_view v(s, grouping::none);
    write_stacks(out, v);
}

GORO_DECL void write_debug1_to(std::ostream& out, const snapshot& s) {
    {
        text_sink sink(out);
        profile_view v(s, grouping::counts);
        write_debug1(sink, v);
    }
    out.flush();
}

GORO_DECL void write_profile(text_sink& out, const snapshot& s, int debug) {
    switch (debug) {
    case 0: {
        profile_view v(s, grouping::counts);
        std::string pb;
        write_pprof(pb, v);
        out.append(pb);
        return;
    }
    case 1: {
        profile_view v(s, grouping::counts);
        write_debug1(out, v);
        return;
    }
    case 2:
        write_debug2_all(out, s);
        return;
    default: {
        profile_view v(s);
        write_json(out, v);
        return;
    }
    }
}

}  // namespace goro::detail

namespace goro {

GORO_DECL void write_goroutine_profile(std::ostream& out, const snapshot& s, int debug) {
    detail::check_debug(debug, "goro::write_goroutine_profile");
    detail::text_sink sink(out);
    detail::write_profile(sink, s, debug);
}

GORO_DECL std::string goroutine_profile(const snapshot& s, int debug) {
    detail::check_debug(debug, "goro::goroutine_profile");
    std::string out;
    {
        detail::text_sink sink(out);
        detail::write_profile(sink, s, debug);
    }
    return out;
}

GORO_DECL void dump_goroutines(std::ostream& out, int debug) {
    detail::check_debug(debug, "goro::dump_goroutines");
    write_goroutine_profile(out, detail::take_for(debug), debug);
    out.flush();
}

GORO_DECL void dump_goroutines() { detail::write_debug1_to(std::cerr, detail::take_for(1)); }

GORO_DECL void dump_goroutines(std::ostream& out, const snapshot& s, int debug) {
    detail::check_debug(debug, "goro::dump_goroutines");
    write_goroutine_profile(out, s, debug);
    out.flush();
}

}  // namespace goro
#endif  // GORO_BODIES
