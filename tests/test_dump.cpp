// goro::dump_goroutines and friends: Go's debug=1 and debug=2 text, JSON, diff.
//
// GOLDEN FILES (tests/golden/dump_*.txt) hold the output for a known program
// (the dumpgold_* functions below), normalised so that it is the same on every
// machine, build directory and compiler:
//   * a path ending in test_dump.cpp becomes `test_dump.cpp`; a line number in
//     it becomes the name of the marked line (`@worker`, see the LINE_* marks),
//     any other line `@?`;
//   * site ids `0x…` become `0xS1`, `0xS2`, … in order of first appearance (so
//     equal ids stay equal), and runs of tabs in `#` lines become one tab (the
//     tab alignment depends on the ids' lengths; it is tested on its own below);
//   * task ids become `G`, parent ids `P`, durations `N`; blocks whose order
//     depends on ids (debug=2 blocks, JSON task lines) are sorted.
// The dumpgold_* functions are plain functions at namespace scope, so g++ and
// clang++ name them alike ("dumpgold_worker"). Set GORO_UPDATE_GOLDEN=1 to
// rewrite the golden files from the current output.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <streambuf>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <goro/core/spawn.hpp>
#include <goro/sync/channel.hpp>
#include <goro/inspect/dump.hpp>
#include <goro/sync/wait_group.hpp>

#include "golden.hpp"
#include "support.hpp"

using goro_test::check_golden;
using goro_test::file_text;
using goro_test::golden_dir;

using goro_test::eventually;
using namespace std::chrono_literals;

// --- the known program ------------------------------------------------------------

// Written by the tasks as they pass the marked lines (atomics: many tasks write them).
static std::atomic<int> LINE_worker, LINE_start_workers, LINE_inner, LINE_outer, LINE_spawner, LINE_producer,
    LINE_start_producers, LINE_waiter, LINE_start_waiters, LINE_main;

static goro::task<> dumpgold_worker(goro::channel<int> ch) {
    for (;;) {
        LINE_worker.store(__LINE__ + 1, std::memory_order_relaxed);
        auto v = co_await ch.recv();
        if (!v) break;
    }
}

static void dumpgold_start_workers(int n, goro::channel<int> ch) {
    LINE_start_workers.store(__LINE__ + 1, std::memory_order_relaxed);
    for (int i = 0; i < n; ++i) goro::go(dumpgold_worker(ch));
}

static goro::task<> dumpgold_inner(goro_test::gate& g) {
    LINE_inner.store(__LINE__ + 1, std::memory_order_relaxed);
    co_await g.wait();
}

static goro::task<> dumpgold_outer(goro_test::gate& g) {
    LINE_outer.store(__LINE__ + 1, std::memory_order_relaxed);
    co_await dumpgold_inner(g);
}

static goro::task<> dumpgold_spawner(goro_test::gate& g, int n, std::atomic<std::uint64_t>& id) {
    id.store(goro::this_task_id());
    for (int i = 0; i < n; ++i) {
        LINE_spawner.store(__LINE__ + 1, std::memory_order_relaxed);
        goro::go(dumpgold_outer(g), {.name = "gated", .labels = {{"shard", "a\"b"}, {"role", "gated"}}});
    }
    co_return;
}

static goro::task<> dumpgold_producer(goro::channel<int> ch) {
    LINE_producer.store(__LINE__ + 1, std::memory_order_relaxed);
    co_await ch.send(1);
}

static void dumpgold_start_producers(int n, goro::channel<int> ch) {
    LINE_start_producers.store(__LINE__ + 1, std::memory_order_relaxed);
    for (int i = 0; i < n; ++i) goro::go(dumpgold_producer(ch));
}

static goro::task<> dumpgold_waiter(goro::wait_group& wg) {
    LINE_waiter.store(__LINE__ + 1, std::memory_order_relaxed);
    co_await wg.wait();
}

static void dumpgold_start_waiters(int n, goro::wait_group& wg) {
    LINE_start_waiters.store(__LINE__ + 1, std::memory_order_relaxed);
    for (int i = 0; i < n; ++i) goro::go(dumpgold_waiter(wg));
}

static void dumpgold_main(goro_test::gate& g) {
    LINE_main.store(__LINE__ + 1, std::memory_order_relaxed);
    goro::block_on(dumpgold_outer(g));
}

namespace {

/// 15 workers (chan receive), 4 wait-group waiters, 3 labelled gated tasks
/// spawned by a task, 2 blocked senders, 1 thread in block_on: every group has
/// its own count, so the order of groups is fixed.
struct known_program {
    // Every task, the block_on body included, stays parked until this thread
    // opens the gates: for the deadlock watch that is a deadlock unless it
    // knows a plain thread will wake them (under TSan on a loaded machine a
    // test's checks take longer than the watch's 1 s grace).
    goro::external_wakeup_guard outside_waker;
    goro::channel<int> jobs;
    goro::channel<int> out;
    goro::wait_group wg;
    goro_test::gate gate, main_gate;
    std::atomic<std::uint64_t> spawner_id{0};
    std::thread main_thread;
    bool producers_drained = false;

    void drain_producers() {
        for (int i = 0; i < 2; ++i) CHECK(goro::block_on(out.recv()) == 1);
        producers_drained = true;
    }

    known_program() {
        REQUIRE(goro_test::tasks_drained());
        wg.add(1);
        dumpgold_start_workers(15, jobs);
        dumpgold_start_waiters(4, wg);
        dumpgold_start_producers(2, out);
        goro::go(dumpgold_spawner(gate, 3, spawner_id));
        main_thread = std::thread([this] { dumpgold_main(main_gate); });
        std::string last;
        bool parked = eventually([&] {
            auto s = goro::snapshot::take();
            last = goro::goroutine_profile(s, 2);
            if (s.total() != 25) return false;
            for (const auto& r : s.tasks())
                if (r.state != goro::task_state::waiting) return false;
            return true;
        });
        INFO("last dump:\n" << last);
        REQUIRE(parked);
    }
    ~known_program() {
        jobs.close();
        wg.done();
        gate.open();
        main_gate.open();
        main_thread.join();
        // The senders stay parked until someone receives.
        if (!producers_drained) drain_producers();
        CHECK(goro_test::tasks_drained());
    }
};


std::string line_name(int line) {
    const std::pair<std::atomic<int>*, const char*> marks[] = {
        {&LINE_worker, "@worker"},   {&LINE_start_workers, "@start_workers"}, {&LINE_inner, "@inner"},
        {&LINE_outer, "@outer"},     {&LINE_spawner, "@spawner"},             {&LINE_producer, "@producer"},
        {&LINE_start_producers, "@start_producers"}, {&LINE_waiter, "@waiter"},
        {&LINE_start_waiters, "@start_waiters"},     {&LINE_main, "@main"},
    };
    for (auto& [l, n] : marks)
        if (l->load() == line) return n;
    return "@?";
}

std::string regex_map(const std::string& in, const std::regex& re,
                      const std::function<std::string(const std::smatch&)>& f) {
    std::string out;
    auto it = std::sregex_iterator(in.begin(), in.end(), re), end = std::sregex_iterator();
    std::size_t pos = 0;
    for (; it != end; ++it) {
        out.append(in, pos, static_cast<std::size_t>(it->position()) - pos);
        out += f(*it);
        pos = static_cast<std::size_t>(it->position() + it->length());
    }
    out.append(in, pos, std::string::npos);
    return out;
}

/// The normalisation described at the top of this file.
std::string normalise(std::string s) {
    s = std::regex_replace(s, std::regex(R"((\(anonymous namespace\)|\{anonymous\})::)"), "");
    s = regex_map(s, std::regex(R"([^\s"]*test_dump\.cpp(:|","line":)(\d+))"), [](const std::smatch& m) {
        return "test_dump.cpp" + m[1].str() + (m[1].str() == ":" ? "" : "\"") + line_name(std::stoi(m[2].str())) +
               (m[1].str() == ":" ? "" : "\"");
    });
    std::map<std::string, std::string> ids;
    s = regex_map(s, std::regex(R"(0x[0-9a-f]+)"), [&](const std::smatch& m) {
        auto [it, fresh] = ids.try_emplace(m.str(), "0xS" + std::to_string(ids.size() + 1));
        return it->second;
    });
    s = std::regex_replace(s, std::regex("\t+"), "\t");
    s = std::regex_replace(s, std::regex(R"(goroutine \d+ (name="[^"]*" )?\[)"), "goroutine G $1[");
    s = std::regex_replace(s, std::regex(R"( in goroutine \d+)"), " in goroutine P");
    s = std::regex_replace(s, std::regex(R"(, \d+ minutes)"), ", N minutes");
    s = std::regex_replace(s, std::regex(R"("id":\d+)"), "\"id\":G");
    s = std::regex_replace(s, std::regex(R"("parent_id":[1-9]\d*)"), "\"parent_id\":P");
    s = std::regex_replace(s, std::regex(R"("waiting_ns":\d+)"), "\"waiting_ns\":N");
    s = regex_map(s, std::regex(R"("task_ids":\[[0-9,]*\])"), [](const std::smatch& m) {
        std::string t = std::regex_replace(m.str(), std::regex(R"(\d+)"), "G");
        return t;
    });
    return s;
}

std::vector<std::string> split(const std::string& s, const std::string& sep) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    for (;;) {
        std::size_t q = s.find(sep, pos);
        if (q == std::string::npos) {
            out.push_back(s.substr(pos));
            return out;
        }
        out.push_back(s.substr(pos, q - pos));
        pos = q + sep.size();
    }
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
    return out;
}

std::vector<std::uint64_t> ids_in(const std::string& text, const std::regex& re) {
    std::vector<std::uint64_t> out;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
        out.push_back(std::stoull((*it)[1].str()));
    return out;
}

std::vector<std::string> ids_in_str(const std::string& text, const std::regex& re) {
    std::vector<std::string> out;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
        out.push_back((*it)[1].str());
    return out;
}

/// A minimal JSON syntax checker (RFC 8259 grammar; strings must be valid UTF-8 with valid escapes).
struct json_checker {
    const std::string& s;
    std::size_t i = 0;
    void ws() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i;
    }
    bool lit(const char* w) {
        std::size_t n = std::strlen(w);
        if (s.compare(i, n, w) != 0) return false;
        i += n;
        return true;
    }
    bool string() {
        if (i >= s.size() || s[i] != '"') return false;
        ++i;
        while (i < s.size() && s[i] != '"') {
            unsigned char c = static_cast<unsigned char>(s[i]);
            if (c < 0x20) return false;
            if (c == '\\') {
                ++i;
                if (i >= s.size()) return false;
                char e = s[i];
                if (e == 'u') {
                    for (int k = 1; k <= 4; ++k)
                        if (i + k >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + k]))) return false;
                    i += 5;
                    continue;
                }
                if (!std::strchr("\"\\/bfnrt", e)) return false;
                ++i;
                continue;
            }
            if (c >= 0x80) {
                std::size_t n = goro::detail::utf8_sequence_length(s, i);
                if (!n) return false;
                i += n;
                continue;
            }
            ++i;
        }
        if (i >= s.size()) return false;
        ++i;
        return true;
    }
    bool number() {
        std::size_t b = i;
        if (i < s.size() && s[i] == '-') ++i;
        while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
        return i > b;
    }
    bool value() {
        ws();
        if (i >= s.size()) return false;
        bool ok;
        if (s[i] == '{') {
            ++i;
            ws();
            if (i < s.size() && s[i] == '}') {
                ++i;
                return true;
            }
            for (;;) {
                ws();
                if (!string()) return false;
                ws();
                if (i >= s.size() || s[i++] != ':') return false;
                if (!value()) return false;
                ws();
                if (i < s.size() && s[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < s.size() && s[i] == '}') {
                    ++i;
                    return true;
                }
                return false;
            }
        } else if (s[i] == '[') {
            ++i;
            ws();
            if (i < s.size() && s[i] == ']') {
                ++i;
                return true;
            }
            for (;;) {
                if (!value()) return false;
                ws();
                if (i < s.size() && s[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < s.size() && s[i] == ']') {
                    ++i;
                    return true;
                }
                return false;
            }
        } else if (s[i] == '"') {
            ok = string();
        } else if (lit("true") || lit("false") || lit("null")) {
            ok = true;
        } else {
            ok = number();
        }
        return ok;
    }
    bool document() {
        if (!value()) return false;
        ws();
        return i == s.size();
    }
};

bool valid_json(const std::string& s) { return json_checker{s}.document(); }

/// An ostream that only counts: how many bytes, how many debug=2 blocks, the
/// largest single write (proves the dump streams instead of building one string).
class counting_buf : public std::streambuf {
public:
    std::size_t bytes = 0, blocks = 0, largest_write = 0;
    std::string tail;  // the last bytes, to find "goroutine " split across writes

protected:
    std::streamsize xsputn(const char* p, std::streamsize n) override {
        largest_write = std::max(largest_write, static_cast<std::size_t>(n));
        std::string chunk = tail + std::string(p, static_cast<std::size_t>(n));
        const std::string key = "\ngoroutine ";
        std::size_t from = 0;
        if (bytes == 0 && chunk.rfind("goroutine ", 0) == 0) ++blocks;
        for (std::size_t q; (q = chunk.find(key, from)) != std::string::npos; from = q + 1)
            if (q + key.size() > tail.size()) ++blocks;
        tail = chunk.size() > key.size() ? chunk.substr(chunk.size() - key.size()) : chunk;
        bytes += static_cast<std::size_t>(n);
        return n;
    }
    int overflow(int c) override {
        if (c != EOF) {
            char ch = static_cast<char>(c);
            xsputn(&ch, 1);
        }
        return c;
    }
};

}  // namespace

// --- golden output -------------------------------------------------------------

TEST_CASE("debug=1 of a known program matches the golden file", "[dump]") {
    known_program prog;
    auto s = goro::snapshot::take();
    std::string text = goro::goroutine_profile(s, 1);
    CHECK(text.rfind("goroutine profile: total 25\n", 0) == 0);
    // The sum of the group counts is the total.
    std::size_t sum = 0;
    for (auto n : ids_in(text, std::regex(R"(\n(\d+) @)"))) sum += n;
    CHECK(sum == 25);
    check_golden("dump_debug1.txt", normalise(text));
}

TEST_CASE("debug=2 of a known program matches the golden file", "[dump]") {
    known_program prog;
    auto s = goro::snapshot::take();
    std::string text = goro::goroutine_profile(s, 2);
    // One block per task, ascending id.
    auto ids = ids_in(text, std::regex(R"((?:^|\n)goroutine (\d+) (?:name="[^"]*" )?\[)"));
    CHECK(ids.size() == 25);
    CHECK(std::is_sorted(ids.begin(), ids.end()));
    CHECK(std::set<std::uint64_t>(ids.begin(), ids.end()).size() == ids.size());
    // The gated tasks were created by the spawner task, and say so.
    auto parents = ids_in(text, std::regex(R"(created by dumpgold_spawner in goroutine (\d+))"));
    CHECK(parents.size() == 3);
    for (auto p : parents) CHECK(p == prog.spawner_id.load());
    CHECK(text.find("created by dumpgold_start_workers\n") != std::string::npos);  // from a plain thread: no "in goroutine"
    CHECK(text.back() == '\n');
    CHECK(text.find("\n\n\n") == std::string::npos);
    // The filtered form prints the chosen blocks only, in the same spelling.
    std::ostringstream some;
    goro::write_goroutine_stacks(some, s, [&](const goro::task_record& r) { return r.id == ids.front() || r.id == ids.back(); });
    auto all_blocks = split(text.substr(0, text.size() - 1), "\n\n");
    CHECK(some.str() == all_blocks.front() + "\n\n" + all_blocks.back() + "\n");
    auto blocks = split(normalise(text.substr(0, text.size() - 1)), "\n\n");
    std::sort(blocks.begin(), blocks.end());
    check_golden("dump_debug2.txt", join(blocks, "\n\n") + "\n");
}

TEST_CASE("JSON of a known program is valid and matches the golden file", "[dump]") {
    known_program prog;
    auto s = goro::snapshot::take();
    std::string js = goro::tasks_json(s);
    CHECK(js == goro::goroutine_profile(s, 3));
    REQUIRE(valid_json(js));
    CHECK(js.rfind("{\"total\":25,", 0) == 0);
    // Every frame's site id is the one debug=1 prints for it.
    std::string d1 = goro::goroutine_profile(s, 1);
    for (const auto& id : ids_in_str(js, std::regex(R"re("frames":\[\{"function":"[^"]*","file":"[^"]*","line":\d+,"site_id":"(0x[0-9a-f]+)")re")))
        CHECK(d1.find("#\t" + id + "\t") != std::string::npos);
    // Task lines come in id order, so the order in which site ids first appear varies: blank them.
    js = std::regex_replace(js, std::regex(R"("site_id":"0x[0-9a-f]+")"), R"("site_id":"0x_")");
    auto lines = split(normalise(js), "\n");
    // Task lines come in id order, which depends on the threads that spawned them: sort them.
    auto first_task = std::find_if(lines.begin(), lines.end(), [](auto& l) { return l.rfind("{\"id\"", 0) == 0; });
    auto end_tasks = std::find_if(first_task, lines.end(), [](auto& l) { return l.rfind("{\"id\"", 0) != 0; });
    for (auto it = first_task; it != end_tasks; ++it)
        if (!it->empty() && it->back() == ',') it->pop_back();
    std::sort(first_task, end_tasks);
    check_golden("dump_json.txt", join(lines, "\n"));
}

TEST_CASE("diff of two snapshots lists the groups that grew", "[dump]") {
    known_program prog;
    auto before = goro::snapshot::take();
    goro::channel<int> more;
    dumpgold_start_workers(5, more);
    goro::wait_group wg2;
    wg2.add(1);
    dumpgold_start_waiters(2, wg2);
    REQUIRE(eventually([&] {
        auto s = goro::snapshot::take();
        return s.total() == 32 && std::all_of(s.tasks().begin(), s.tasks().end(), [](auto& r) {
                   return r.state == goro::task_state::waiting;
               });
    }));
    prog.drain_producers();  // the 2 senders exit: a group that shrinks is not listed
    REQUIRE(eventually([&] { return goro::num_goroutines() == 30; }));
    auto after = goro::snapshot::take();
    auto d = goro::diff(before, after);
    CHECK(d.total_before == 25);
    CHECK(d.total_after == 30);
    REQUIRE(d.grown.size() == 2);
    CHECK(d.grown[0].delta == 5);
    CHECK(d.grown[0].before == 15);
    CHECK(d.grown[0].after == 20);
    CHECK(d.grown[0].new_task_ids.size() == 5);
    CHECK(d.grown[0].frames.at(0).function == "dumpgold_worker");
    CHECK(d.grown[1].delta == 2);
    CHECK(d.grown[1].before == 4);
    CHECK(d.grown[1].after == 6);
    CHECK(d.grown[1].new_task_ids.size() == 2);
    std::string text = goro::to_string(d);
    CHECK(text.rfind("goroutine profile diff: +5\n", 0) == 0);
    check_golden("dump_diff.txt", normalise(text));
    // Nothing changed: nothing listed.
    auto again = goro::diff(after, after);
    CHECK(again.grown.empty());
    CHECK(goro::to_string(again) == "goroutine profile diff: +0\n");
    more.close();
    wg2.done();
}

// --- details of the formats --------------------------------------------------------

TEST_CASE("debug=1 pads columns with tabs exactly as Go's tabwriter", "[dump]") {
    // Go 1.19's own output (runtime functions of its profiling goroutine).
    const std::vector<std::pair<std::string, std::string>> frames = {
        {"0x45e144", "runtime/pprof.runtime_goroutineProfileWithLabels+0x24"},
        {"0x4abfb4", "runtime/pprof.writeRuntimeProfile+0xb4"},
        {"0x4abdcc", "runtime/pprof.writeGoroutine+0x4c"},
        {"0x4a8d2a", "runtime/pprof.(*Profile).WriteTo+0x14a"},
        {"0x4b5c3c", "main.main+0x17c"},
        {"0x437271", "runtime.main+0x211"},
    };
    std::vector<goro::detail::text_frame> tf;
    for (auto& [h, f] : frames)
        tf.push_back({h, f, "f.go", 1, goro::detail::utf8_width(f)});
    std::string out;
    goro::detail::write_frame_lines(out, tf);
    CHECK(out ==
          "#\t0x45e144\truntime/pprof.runtime_goroutineProfileWithLabels+0x24\tf.go:1\n"
          "#\t0x4abfb4\truntime/pprof.writeRuntimeProfile+0xb4\t\t\tf.go:1\n"
          "#\t0x4abdcc\truntime/pprof.writeGoroutine+0x4c\t\t\tf.go:1\n"
          "#\t0x4a8d2a\truntime/pprof.(*Profile).WriteTo+0x14a\t\t\tf.go:1\n"
          "#\t0x4b5c3c\tmain.main+0x17c\t\t\t\t\t\tf.go:1\n"
          "#\t0x437271\truntime.main+0x211\t\t\t\t\tf.go:1\n");
    // A hex column of different widths, and a name exactly 8 wide.
    std::vector<goro::detail::text_frame> tf2 = {{"0x1", "abcdefgh", "a", 1, 8}, {"0x123456789abc", "é", "b", 2, 1}};
    out.clear();
    goro::detail::write_frame_lines(out, tf2);
    CHECK(out == "#\t0x1\t\tabcdefgh\ta:1\n#\t0x123456789abc\té\t\tb:2\n");
}

TEST_CASE("labels are quoted, sorted and joined like Go's", "[dump]") {
    std::string out;
    goro::detail::write_labels_line(out, {{"zone", "b"}, {"a\"k", "tab\there"}, {"ctl", std::string("\x01\x7f\xff", 3)},
                                          {"utf", "h\xc3\xa9"}});
    CHECK(out == "# labels: {\"a\\\"k\":\"tab\\there\", \"ctl\":\"\\x01\\x7f\\xff\", \"utf\":\"h\xc3\xa9\", "
                 "\"zone\":\"b\"}\n");
    out.clear();
    goro::detail::write_labels_line(out, {});
    CHECK(out.empty());
}

TEST_CASE("JSON strings are escaped and stay valid UTF-8", "[dump]") {
    std::string out;
    goro::detail::json_quote(out, std::string("q\"b\\s\n\t\x01\xc3\xa9\xff", 11));
    CHECK(out == "\"q\\\"b\\\\s\\n\\t\\u0001\xc3\xa9\\ufffd\"");
    CHECK(valid_json(out));
    CHECK_FALSE(valid_json("{\"a\":}"));
    CHECK_FALSE(valid_json("\"\xff\""));
}

TEST_CASE("labels with quotes and control characters make valid JSON and Go-quoted debug=1", "[dump]") {
    REQUIRE(goro_test::tasks_drained());
    goro_test::gate g;
    goro::go(dumpgold_outer(g), {.name = "n\"\n", .labels = {{"k\"\\", std::string("v\x02\xfe", 3)}}});
    REQUIRE(eventually([&] { return g.parked() == 1; }));
    auto s = goro::snapshot::take();
    std::string js = goro::tasks_json(s);
    CHECK(valid_json(js));
    CHECK(js.find(R"("name":"n\"\n")") != std::string::npos);
    CHECK(js.find(R"("labels":{"k\"\\":"v\u0002\ufffd"})") != std::string::npos);
    std::string d1 = goro::goroutine_profile(s, 1);
    CHECK(d1.find("# labels: {\"k\\\"\\\\\":\"v\\x02\\xfe\"}\n") != std::string::npos);
    // debug=2 names the task, Go-quoted, between its id and its state.
    std::string d2 = goro::goroutine_profile(s, 2);
    CHECK(d2.find(R"( name="n\"\n" [gate]:)") != std::string::npos);
    g.open();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("debug=2 shows how many minutes a task has been parked, Go's rule", "[dump]") {
    goro::task_record r;
    r.state = goro::task_state::waiting;
    const std::int64_t now = 1'000'000'000'000;
    r.since_ns = now - 59'999'999'999;
    CHECK(goro::detail::minutes_waiting(r, now) == 0);
    r.since_ns = now - 60'000'000'000;
    CHECK(goro::detail::minutes_waiting(r, now) == 1);
    r.since_ns = now - 330'000'000'000;  // 5.5 minutes
    CHECK(goro::detail::minutes_waiting(r, now) == 5);
    r.since_ns = 0;  // never set: nothing shown (Go: waitsince == 0)
    CHECK(goro::detail::minutes_waiting(r, now) == 0);
    r.since_ns = now - 330'000'000'000;
    r.state = goro::task_state::runnable;
    CHECK(goro::detail::minutes_waiting(r, now) == 0);

    // End to end: a parked task whose park time is moved 5.5 minutes back.
    REQUIRE(goro_test::tasks_drained());
    goro_test::gate g;
    goro::go(dumpgold_outer(g), {.name = "old"});
    goro::go(dumpgold_outer(g), {.name = "young"});
    REQUIRE(eventually([&] { return g.parked() == 2; }));
    goro::detail::the_registry().for_each_locked([](goro::task_header& h) {
        if (h.cold().meta && h.cold().meta->name == "old")
            h.since_ns.store(goro::detail::coarse_now_ns() - 330'000'000'000, std::memory_order_relaxed);
    });
    std::string text = goro::goroutine_profile(2);
    CHECK(text.find(" name=\"old\" [gate, 5 minutes]:\n") != std::string::npos);
    CHECK(text.find(" name=\"young\" [gate]:\n") != std::string::npos);
    g.open();
    CHECK(goro_test::tasks_drained());
}

// A task that loops without ever reaching a co_await (before the fix: "stack
// unavailable", no function at all).
static goro::task<> dumpspin_never_suspends(std::atomic<bool>& rel, std::atomic<bool>& sp) {
    sp.store(true);
    while (!rel.load()) std::this_thread::yield();
    co_return;
}

TEST_CASE("a task that never suspends shows as running in its own function", "[dump]") {
    REQUIRE(goro_test::tasks_drained());
    std::atomic<bool> release{false}, spinning{false};
    goro::go(dumpspin_never_suspends(release, spinning));
    REQUIRE(eventually([&] { return spinning.load(); }));
    auto s = goro::snapshot::take({.stop_timeout = 20ms});
    std::string d2 = goro::goroutine_profile(s, 2);
    INFO(d2);
    // Its block: running, the coroutine's function and its file (the line is
    // the compiler's: the closing brace on g++, the declaration on clang++).
    std::size_t at = d2.find("[running]:\ndumpspin_never_suspends(...)\n\t");
    REQUIRE(at != std::string::npos);
    std::size_t eol = d2.find('\n', d2.find("\n\t", at) + 2);
    std::string where = d2.substr(d2.find("\n\t", at) + 2, eol - d2.find("\n\t", at) - 2);
    CHECK(where.find("test_dump.cpp:") != std::string::npos);
    CHECK(d2.find("stack unavailable") == std::string::npos);
    std::string d1 = goro::goroutine_profile(s, 1);
    CHECK(d1.find("\tdumpspin_never_suspends\t") != std::string::npos);
    CHECK(valid_json(goro::tasks_json(s)));
    CHECK(goro::tasks_json(s).find("\"function\":\"dumpspin_never_suspends\"") != std::string::npos);
    release.store(true);
    CHECK(goro_test::tasks_drained());
}

// Tasks started with a callable (go(callable), spawn()) that block in a plain
// read() before their first suspension (before the fix: "stack unavailable",
// since goro's runner frame resumed them first and has no site).
static void dumpread_block(int fd, std::atomic<int>& entered) {
    entered.fetch_add(1);
    char c;
    while (::read(fd, &c, 1) < 0 && errno == EINTR) {
    }
}

static goro::task<> dumpread_named(int fd, std::atomic<int>& entered) {
    dumpread_block(fd, entered);
    co_return;
}

static goro::task<> dumpread_nothing() { co_return; }

TEST_CASE("tasks started with a callable that block before their first suspension show their site", "[dump]") {
    REQUIRE(goro_test::tasks_drained());
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const int fd = fds[0];
    std::atomic<int> entered{0};
    std::atomic<int>* e = &entered;
    {
        struct releaser {  // one byte for each read(), however the block is left
            int fd;
            ~releaser() { (void)!::write(fd, "xyz", 3); }
        } release{fds[1]};
        // 1. A callable that returns a named coroutine: the coroutine's entry site.
        goro::go([fd, e] { return dumpread_named(fd, *e); });
        // 2. A lambda coroutine with captures: the go() call (its own line on clang++).
        const int go_line = __LINE__ + 1;
        goro::go([fd, e]() -> goro::task<> { dumpread_block(fd, *e); co_return; });
        // 3. spawn() of a callable that blocks before it returns its task: the spawn() call.
        const int spawn_line = __LINE__ + 1;
        goro::spawn([fd, e] { dumpread_block(fd, *e); return dumpread_nothing(); }).detach();
        REQUIRE(eventually([&] { return entered.load() == 3; }));

        auto s = goro::snapshot::take({.stop_timeout = 20ms});
        const std::string d2 = goro::goroutine_profile(s, 2), d1 = goro::goroutine_profile(s, 1);
        const std::string js = goro::tasks_json(s);
        INFO(d2);
        CHECK(d2.find("stack unavailable") == std::string::npos);
        CHECK(d1.find("stack unavailable") == std::string::npos);
        // A debug=2 block's leaf frame ("goroutine N [running]:\nf(...)\n\tfile:line\n..."), not
        // its "created by" line (which is the go() call too); a JSON task's first frame (up to
        // its site_id: a function's name may hold braces, as clang++'s "{lambda}").
        auto leaf_frames = [&] {
            std::vector<std::string> out;
            for (std::size_t b = 0; b < d2.size();) {
                std::size_t end = d2.find("\n\n", b);
                if (end == std::string::npos) end = d2.size();
                const std::string block = d2.substr(b, end - b);
                if (block.find(" [running]:\n") != std::string::npos) {
                    const std::size_t f = block.find('\n') + 1, l = block.find('\n', f) + 1;
                    out.push_back(block.substr(f, block.find('\n', l) - f));  // "f(...)\n\tfile:line"
                }
                b = end + 2;
            }
            return out;
        };
        auto json_leaf_has = [&](const std::string& part) {
            for (std::size_t p = js.find("\"frames\":[{"); p != std::string::npos; p = js.find("\"frames\":[{", p + 1))
                if (js.substr(p, js.find("\"site_id\"", p) - p).find(part) != std::string::npos) return true;
            return false;
        };
        const auto running = leaf_frames();
        auto running_at = [&](const std::string& part) {
            return std::any_of(running.begin(), running.end(),
                               [&](const std::string& f) { return f.find(part) != std::string::npos; });
        };
        // 1: the coroutine's function and its file (the line is the compiler's).
        CHECK(running_at("dumpread_named(...)\n\t"));
        CHECK(std::any_of(running.begin(), running.end(), [](const std::string& f) {
            return f.rfind("dumpread_named(...)\n\t", 0) == 0 && f.find("test_dump.cpp:") != std::string::npos;
        }));
        CHECK(d1.find("\tdumpread_named\t") != std::string::npos);
        CHECK(json_leaf_has("\"function\":\"dumpread_named\""));
        // 2 and 3: the line of the call, in each format (debug=1 has no "created by").
        for (int line : {go_line, spawn_line}) {
            INFO("line " << line);
            const std::string where = "test_dump.cpp:" + std::to_string(line);
            CHECK(std::any_of(running.begin(), running.end(), [&](const std::string& f) {
                return f.size() >= where.size() && f.compare(f.size() - where.size(), where.size(), where) == 0;
            }));
            CHECK(d1.find(where + "\n") != std::string::npos);
            CHECK(json_leaf_has("test_dump.cpp\",\"line\":" + std::to_string(line) + ","));
        }
        CHECK(valid_json(js));
    }
    CHECK(goro_test::tasks_drained());
    ::close(fds[0]);
    ::close(fds[1]);
}

TEST_CASE("an empty program dumps a zero total", "[dump]") {
    REQUIRE(goro_test::tasks_drained());
    auto s = goro::snapshot::take();
    CHECK(goro::goroutine_profile(s, 1) == "goroutine profile: total 0\n");
    CHECK(goro::goroutine_profile(s, 2).empty());
    CHECK(goro::tasks_json(s) == "{\"total\":0,\"tasks\":[\n],\"groups\":[\n]}\n");
    CHECK(valid_json(goro::tasks_json(s)));
}

TEST_CASE("dump_goroutines writes to a stream; a bad debug value throws naming the call", "[dump]") {
    known_program prog;
    std::ostringstream os1, os2;
    auto s = goro::snapshot::take();
    goro::dump_goroutines(os1, s, 1);
    CHECK(os1.str() == goro::goroutine_profile(s, 1));
    goro::dump_goroutines(os2);  // takes its own snapshot, debug=1
    CHECK(os2.str().rfind("goroutine profile: total 25\n", 0) == 0);
    std::ostringstream bin;
    goro::write_goroutine_profile(bin, s, 0);
    CHECK(bin.str().size() == goro::goroutine_profile(s, 0).size());  // equal but for time_nanos (the wall clock)
    CHECK_THROWS_WITH(goro::dump_goroutines(os1, 7), Catch::Contains("goro::dump_goroutines") && Catch::Contains("debug"));
    CHECK_THROWS_AS(goro::goroutine_profile(-1), goro::usage_error);
    CHECK(goro::num_goroutines() == 25);
}

TEST_CASE("debug=2 of 300,000 parked tasks is complete and streamed", "[dump]") {
    REQUIRE(goro_test::tasks_drained());
    const long n = 300'000;
    goro::channel<int> ch;
    dumpgold_start_workers(static_cast<int>(n), ch);
    REQUIRE(eventually([&] { return goro::num_goroutines() == n; }, std::chrono::seconds(120)));
    counting_buf buf;
    std::ostream os(&buf);
    goro::dump_goroutines(os, 2);
    CHECK(buf.blocks == std::size_t(n));
    CHECK(buf.bytes > std::size_t(n) * 60);   // every block has its frame and its "created by"
    CHECK(buf.largest_write <= 256 * 1024);  // streamed in chunks, not one giant string
    std::string d1 = goro::goroutine_profile(1);
    CHECK(d1.rfind("goroutine profile: total 300000\n300000 @ ", 0) == 0);
    ch.close();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("debug=2 and JSON as a string are the same text as streamed, for thousands of tasks", "[dump]") {
    // A string is sized from the first blocks' length and grows past that
    // estimate when later blocks are longer (here: names after 300 tasks).
    REQUIRE(goro_test::tasks_drained());
    goro::channel<int> ch;
    dumpgold_start_workers(300, ch);
    REQUIRE(eventually([&] { return goro::num_goroutines() == 300; }));
    for (int i = 0; i < 3000; ++i)
        goro::go(dumpgold_worker(ch), {.name = "a name long enough to outgrow the estimate " + std::to_string(i)});
    REQUIRE(eventually([&] { return goro::num_goroutines() == 3300; }));
    goro::snapshot s = goro::snapshot::take();
    for (int debug : {2, 3}) {
        std::ostringstream os;
        goro::write_goroutine_profile(os, s, debug);
        CHECK(goro::goroutine_profile(s, debug) == os.str());
    }
    const std::string text = goro::goroutine_profile(s, 2);
    CHECK(split(text.substr(0, text.size() - 1), "\n\n").size() == 3300);
    ch.close();
    CHECK(goro_test::tasks_drained());
}

TEST_CASE("snapshots taken in a loop while producers and consumers run lose nothing", "[dump]") {
    REQUIRE(goro_test::tasks_drained());
    constexpr int producers = 4, consumers = 4, per_producer = 20'000;
    goro::channel<int> ch(16);
    goro::wait_group sent;
    std::atomic<long> received_sum{0}, received_count{0};
    std::atomic<int> consumers_left{consumers};
    auto producer = [](goro::channel<int> c, int base, goro::wait_group& wg) -> goro::task<> {
        for (int i = 0; i < per_producer; ++i) {
            co_await c.send(base + i);
            if (i % 64 == 0) co_await goro::yield();
        }
        wg.done();
    };
    auto consumer = [](goro::channel<int> c, std::atomic<long>& sum, std::atomic<long>& count,
                       std::atomic<int>& left) -> goro::task<> {
        while (auto v = co_await c.recv()) {
            sum.fetch_add(*v, std::memory_order_relaxed);
            count.fetch_add(1, std::memory_order_relaxed);
        }
        left.fetch_sub(1);
    };
    auto closer = [](goro::channel<int> c, goro::wait_group& wg) -> goro::task<> {
        co_await wg.wait();
        c.close();
    };
    sent.add(producers);
    for (int c = 0; c < consumers; ++c) goro::go(consumer(ch, received_sum, received_count, consumers_left));
    for (int p = 0; p < producers; ++p) goro::go(producer(ch, p * per_producer, sent));
    goro::go(closer(ch, sent));
    int snapshots = 0;
    while (consumers_left.load() > 0 || snapshots < 20) {
        auto s = goro::snapshot::take();
        CHECK(s.total() <= std::size_t(producers + consumers + 1));
        std::set<std::uint64_t> ids;
        for (auto& r : s.tasks()) ids.insert(r.id);
        CHECK(ids.size() == s.total());
        std::size_t sum = 0;
        for (auto& g : s.groups()) sum += g.count;
        CHECK(sum == s.total());
        std::string d1 = goro::goroutine_profile(s, 1);
        CHECK(d1.rfind("goroutine profile: total " + std::to_string(s.total()) + "\n", 0) == 0);
        std::size_t grouped = 0;
        for (auto c : ids_in(d1, std::regex(R"(\n(\d+) @)"))) grouped += c;
        CHECK(grouped == s.total());
        CHECK(ids_in(goro::goroutine_profile(s, 2), std::regex(R"((?:^|\n)goroutine (\d+) \[)")).size() == s.total());
        if (snapshots % 4 == 0) CHECK(valid_json(goro::tasks_json(s)));
        ++snapshots;
    }
    REQUIRE(goro_test::tasks_drained());
    const long total = long(producers) * per_producer;
    CHECK(received_count.load() == total);
    CHECK(received_sum.load() == total * (total - 1) / 2);
}

// --- the concurrent snapshot (profile epochs) ----------------------------------------

// (Snapshots of a running program: tests/test_snapshot.cpp.)

TEST_CASE("the concurrent snapshot and the stop-the-world copy agree on a quiet program", "[dump]") {
    known_program prog;
    auto concurrent = goro::snapshot::take();
    auto stopped = goro::snapshot::take({.concurrent = false});
    CHECK(concurrent.total() == stopped.total());
    CHECK(goro::goroutine_profile(concurrent, 1) == goro::goroutine_profile(stopped, 1));
    std::set<std::uint64_t> a, b;
    for (auto& r : concurrent.tasks()) a.insert(r.id);
    for (auto& r : stopped.tasks()) b.insert(r.id);
    CHECK(a == b);
}

TEST_CASE("a snapshot taken inside a task shows that task running, the others as they wait", "[dump]") {
    known_program prog;
    auto body = []() -> goro::task<goro::snapshot> { co_return goro::snapshot::take(); };
    goro::snapshot s = goro::block_on(body());
    int running = 0;
    for (auto& r : s.tasks())
        if (r.state == goro::task_state::running) {
            ++running;
            CHECK(r.frames_known);
            CHECK(s.stack(r).size() >= 1);
        }
    CHECK(running == 1);
    CHECK(s.total() == 26);  // the known program's 25, and block_on's task
}
