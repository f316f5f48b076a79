// goro::leak_watch: the suspect rule against a leaking service and against a
// load ramp that levels off (samples driven by hand with sample_at: no
// wall-clock waiting), the bounds of its memory, its text and JSON reports,
// its sampling thread, and goro::testing::expect_no_growth.
//
// A "service" here is simulated step by step: each step the requests in
// flight (handler tasks parked on that step's gate) finish and the next
// step's start, `load` of them; a leaking service also leaves `leak` tasks
// parked for good on every step. Between samples the test waits until every
// task it started is parked (gate::parked), so each sample sees whole steps.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <goro/catch2.hpp>
#include <goro/http/debug_server.hpp>
#include <goro/inspect/leak_watch.hpp>

#include "http_client.hpp"
#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_leak_watch {

using namespace std::chrono_literals;

namespace {

goro::task<> lw_handler(goro_test::gate& g) { co_await g.wait(); }    // a request in flight
goro::task<> lw_leaked_worker(goro_test::gate& g) { co_await g.wait(); }  // left behind

/// The simulated service; opens every gate (ending every task) when destroyed.
struct service {
    std::vector<std::unique_ptr<goro_test::gate>> steps;  // one per step: the requests in flight
    goro_test::gate leaked;                               // the leaked tasks of every step
    std::size_t leaked_count = 0;
    std::int64_t baseline = goro::num_goroutines();
    std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();

    /// One step of `interval`: the previous requests end, `load` start, `leak` leak; then a sample.
    void step(goro::leak_watch& w, std::size_t load, std::size_t leak) {
        if (!steps.empty()) steps.back()->open();
        steps.push_back(std::make_unique<goro_test::gate>());
        goro_test::gate& g = *steps.back();
        for (std::size_t i = 0; i < load; ++i) goro::go(lw_handler(g));
        for (std::size_t i = 0; i < leak; ++i) goro::go(lw_leaked_worker(leaked));
        leaked_count += leak;
        REQUIRE(goro_test::eventually([&] {
            return g.parked() == load && leaked.parked() == leaked_count &&
                   goro::num_goroutines() == baseline + std::int64_t(load + leaked_count);
        }));
        t += 10s;
        w.sample_at(t);
    }
    ~service() {
        for (auto& g : steps) g->open();
        leaked.open();
        goro_test::tasks_drained(baseline);
    }
};

bool names(const goro::leak_group& g, std::string_view fn) {
    return !g.frames.empty() && g.frames.front().function.find(fn) != std::string::npos;
}

const goro::leak_group* find_group(const goro::leak_report& r, std::string_view fn) {
    for (const auto& g : r.groups)
        if (names(g, fn)) return &g;
    return nullptr;
}

}  // namespace

TEST_CASE("a leaking service under steady load: the leaking group is the one suspect", "[leak_watch]") {
    goro::leak_watch w;  // window 6, 4 rises, +5
    service svc;
    for (int i = 0; i < 5; ++i) {
        svc.step(w, 10, 2);
        CHECK(w.suspects().empty());  // not a full window yet
    }
    svc.step(w, 10, 2);  // the sixth sample: the leak rose in all 5 steps, by 10
    auto r = w.report();
    REQUIRE(r.suspects.size() == 1);
    const goro::leak_group& s = r.suspects[0];
    CHECK(names(s, "lw_leaked_worker"));
    CHECK(s.count == 12);
    CHECK(s.wait_reason == "gate");
    // +10 tasks over 50 s of samples: 12 per minute.
    CHECK(s.growth_per_minute == Approx(12.0));
    CHECK(s.growing_since_unix_ns > 0);
    CHECK(s.history.back() == 12);
    // The handlers in flight: a steady group, never a suspect.
    const goro::leak_group* h = find_group(r, "lw_handler");
    REQUIRE(h);
    CHECK(h->count == 10);
    CHECK_FALSE(h->suspect);
    // growing_since: the sample before the first rise (the group's first sample
    // counts from 0), so at or before the first sample's time.
    CHECK(s.growing_since_unix_ns <= r.last_sample_unix_ns - 50'000'000'000ll + 1'000'000'000ll);

    // The leak stops (a fix deployed): the group stays but stops being a suspect within a window.
    for (int i = 0; i < 5; ++i) svc.step(w, 10, 0);
    CHECK(w.suspects().empty());
}

TEST_CASE("a load ramp that levels off gives no suspect once level", "[leak_watch]") {
    SECTION("with the load rule (d): quiet during the ramp as well") {
        goro::leak_watch w;
        service svc;
        for (int i = 0; i < 6; ++i) svc.step(w, 10, 0);  // steady
        for (std::size_t load : {20, 30, 40, 50, 60}) {
            svc.step(w, load, 0);  // ramp: the handlers follow the load
            CHECK(w.suspects().empty());
        }
        for (int i = 0; i < 8; ++i) {
            svc.step(w, 60, 0);  // level
            CHECK(w.suspects().empty());
        }
        const goro::leak_report r = w.report();
        const goro::leak_group* h = find_group(r, "lw_handler");
        REQUIRE(h);
        CHECK(h->count == 60);
    }
    SECTION("without rule (d): flagged while it ramps, cleared within a window of the level") {
        goro::leak_watch_options o;
        o.load_ramp = 0;
        goro::leak_watch w(o);
        service svc;
        for (int i = 0; i < 6; ++i) svc.step(w, 10, 0);
        for (std::size_t load : {20, 30, 40, 50, 60}) svc.step(w, load, 0);
        CHECK(w.suspects().size() == 1);  // rules (a)-(c) alone cannot tell a ramp from a leak
        int level_steps = 0;
        while (!w.suspects().empty() && level_steps < 20) {
            svc.step(w, 60, 0);
            ++level_steps;
        }
        CHECK(w.suspects().empty());
        CHECK(level_steps <= 2);  // (a) needs 4 rises in 5 steps: two level steps end it
        for (int i = 0; i < 8; ++i) {
            svc.step(w, 60, 0);
            CHECK(w.suspects().empty());
        }
    }
}

TEST_CASE("a leak during a load ramp is flagged once the load levels", "[leak_watch]") {
    goro::leak_watch w;
    service svc;
    for (int i = 0; i < 6; ++i) svc.step(w, 10, 1);
    bool flagged_after_level = false;
    for (std::size_t load : {20, 30, 40, 50, 60}) svc.step(w, load, 1);
    for (int i = 0; i < 6 && !flagged_after_level; ++i) {
        svc.step(w, 60, 1);
        for (const auto& s : w.suspects()) {
            CHECK(names(s, "lw_leaked_worker"));
            flagged_after_level = true;
        }
    }
    CHECK(flagged_after_level);
}

TEST_CASE("vanished groups are forgotten; history and groups are bounded", "[leak_watch]") {
    goro::leak_watch_options o;
    o.history = 8;
    o.window = 4;
    o.min_rises = 2;
    o.min_growth = 2;
    o.max_groups = 1;
    goro::leak_watch w(o);
    service svc;
    for (int i = 0; i < 20; ++i) svc.step(w, 5, 1);
    auto r = w.report();
    REQUIRE(r.groups.size() == 1);  // only the largest group is kept
    CHECK(r.groups_seen == 2);
    CHECK(names(r.groups[0], "lw_leaked_worker"));  // 20 leaked > 5 in flight
    CHECK(r.groups[0].history.size() == 8);
    CHECK(r.groups[0].history.back() == 20);
    CHECK(r.groups[0].suspect);
    // The handlers end and none start: their group leaves; the leaked stay.
    svc.steps.back()->open();
    REQUIRE(goro_test::eventually([&] { return goro::num_goroutines() == svc.baseline + 20; }));
    svc.t += 10s;
    w.sample_at(svc.t);
    r = w.report();
    REQUIRE(r.groups.size() == 1);
    CHECK(r.groups_seen == 1);

    CHECK_THROWS_WITH(goro::leak_watch(goro::leak_watch_options{.window = 2}),
                      Catch::Contains("goro::leak_watch: window"));
    CHECK_THROWS_WITH(goro::leak_watch(goro::leak_watch_options{.history = 3}),
                      Catch::Contains("history must be at least window"));
}

TEST_CASE("the text and JSON reports show each suspect's stack, count, growth and oldest wait", "[leak_watch]") {
    goro::leak_watch w;
    CHECK(w.report_text().find("# no sample yet") != std::string::npos);
    service svc;
    for (int i = 0; i < 6; ++i) svc.step(w, 3, 2);
    std::string text = w.report_text();
    INFO(text);
    CHECK(text.rfind("goro leak watch: 1 suspect of 2 groups, 15 tasks; 6 samples, every 10s\n", 0) == 0);
    CHECK(text.find("\n12 @ 0x") != std::string::npos);
    CHECK(text.find("# suspect: +12.0/min since 20") != std::string::npos);
    CHECK(text.find("oldest [gate]") != std::string::npos);
    CHECK(text.find("# history: 2 4 6 8 10 12\n") != std::string::npos);
    CHECK(text.find("lw_leaked_worker") != std::string::npos);
    CHECK(text.find("test_leak_watch.cpp:") != std::string::npos);
    CHECK(text.find("lw_handler") == std::string::npos);  // only suspects are listed

    std::string js = w.report_json();
    INFO(js);
    CHECK(js.rfind("{\"samples\":6,", 0) == 0);
    CHECK(js.find("\"suspect\":true") != std::string::npos);
    CHECK(js.find("\"growth_per_minute\":12.000") != std::string::npos);
    CHECK(js.find("\"history\":[2,4,6,8,10,12]") != std::string::npos);
    CHECK(js.find("\"wait_reason\":\"gate\"") != std::string::npos);
    CHECK(js.find("lw_leaked_worker") != std::string::npos);
}

TEST_CASE("the sampling thread samples every interval and stops", "[leak_watch]") {
    goro::leak_watch w(goro::leak_watch_options{.interval = 1ms});
    w.start();
    CHECK(w.running());
    CHECK_THROWS_AS(w.start(), std::logic_error);
    CHECK(goro_test::eventually([&] { return w.samples() >= 3; }));
    w.stop();
    CHECK_FALSE(w.running());
    auto n = w.samples();
    w.stop();  // idempotent
    CHECK(w.samples() == n);
}

namespace {

goro_test::gate* leak_gate = nullptr;
goro::task<> growth_leaker(goro_test::gate& g) { co_await g.wait(); }
goro::task<> growth_short() { co_await goro::yield(); }

}  // namespace

TEST_CASE("expect_no_growth passes a clean function and names the stack of a growing group", "[leak_watch]") {
    const std::int64_t baseline = goro::num_goroutines();
    CHECK_NOTHROW(goro::testing::expect_no_growth([] { goro::block_on(growth_short()); }, 6));
    CHECK_NOTHROW(goro::testing::expect_no_growth([]() -> goro::task<> { co_await growth_short(); }, 4));

    goro_test::gate g;
    leak_gate = &g;
    std::size_t started = 0;
    std::string what;
    try {
        goro::testing::expect_no_growth(
            [&] {
                goro::go(growth_leaker(*leak_gate));
                ++started;
                goro_test::eventually([&] { return g.parked() == started; });
            },
            6);
    } catch (const goro::testing::growth_error& e) {
        what = e.what();
        REQUIRE(e.grown().size() == 1);
        CHECK(e.grown()[0].count == 7);
    }
    g.open();
    REQUIRE(goro_test::tasks_drained(baseline));
    INFO(what);
    CHECK(what.rfind("goro::testing::expect_no_growth: 1 group of tasks grew with the iterations", 0) == 0);
    CHECK(what.find("growth_leaker") != std::string::npos);
    CHECK(what.find("# history: 1 2 3 4 5 6 7\n") != std::string::npos);
    CHECK_THROWS_WITH(goro::testing::expect_no_growth([] {}, 2), Catch::Contains("iterations must be at least 3"));
}

TEST_CASE("the debug server serves its watch at /debug/goro/leaks and in /metrics", "[leak_watch]") {
    auto o = http_test::test_options();
    o.leak_watch_interval = std::chrono::hours(1);  // samples come from /debug/goro/leaks/sample only
    goro::debug_server server(o);
    server.start();
    REQUIRE(server.watch());
    CHECK(server.watch()->running());
    service svc;
    for (int i = 0; i < 6; ++i) {
        svc.step(*server.watch(), 2, 3);  // six samples, the leaked group +3 each
    }
    auto text = http_test::fetch(server.port(), http_test::get("/debug/goro/leaks"));
    INFO(text.body);
    CHECK(text.status == 200);
    CHECK(text.body.rfind("goro leak watch: 1 suspect of 2 groups", 0) == 0);
    CHECK(text.body.find("\n18 @ 0x") != std::string::npos);
    CHECK(text.body.find("lw_leaked_worker") != std::string::npos);

    auto js = http_test::fetch(server.port(), http_test::get("/debug/goro/leaks?format=json"));
    CHECK(js.status == 200);
    CHECK(js.header("Content-Type") == "application/json");
    CHECK(js.body.find("\"suspects\":[\n{\"group\":\"0x") != std::string::npos);
    CHECK(http_test::fetch(server.port(), http_test::get("/debug/goro/leaks?format=xml")).status == 400);

    auto m = http_test::fetch(server.port(), http_test::get("/metrics"));
    INFO(m.body);
    CHECK(m.body.find("\ngoro_leak_suspects 1\n") != std::string::npos);
    CHECK(m.body.find("\ngoro_leak_watch_samples_total 6\n") != std::string::npos);
    auto at = m.body.find("\ngoro_leak_suspect_growth_per_minute{group=\"0x");
    REQUIRE(at != std::string::npos);
    CHECK(m.body.find("lw_leaked_worker\",site=\"0x", at) != std::string::npos);
    CHECK(m.body.find("\ngoro_leak_suspect_tasks{group=\"0x") != std::string::npos);

    // The sampling route takes one more sample.
    auto s7 = http_test::fetch(server.port(), http_test::get("/debug/goro/leaks/sample?format=json"));
    CHECK(s7.body.rfind("{\"samples\":7,", 0) == 0);
    server.stop();
    CHECK_FALSE(server.watch()->running());

    auto off = http_test::test_options();
    off.leak_watch_interval = std::chrono::milliseconds(0);
    goro::debug_server none(off);
    CHECK_FALSE(none.watch());
    none.start();
    CHECK(http_test::fetch(none.port(), http_test::get("/debug/goro/leaks")).status == 404);
    CHECK(http_test::fetch(none.port(), http_test::get("/metrics")).body.find("goro_leak") == std::string::npos);
}

TEST_CASE("GORO_CHECK_NO_GROWTH passes a function that leaves nothing behind", "[leak_watch]") {
    int runs = 0;
    GORO_CHECK_NO_GROWTH([&] {
        goro::block_on(growth_short());
        ++runs;
    }, 5);
    CHECK(runs == 6);  // a warm-up and five
    // The failing form goes through find_growth, whose report is checked above.
    std::string report;
    goro_test::gate g;
    std::size_t started = 0;
    auto grown = goro::testing::find_growth([&] {
        goro::go(growth_leaker(g));
        ++started;
        goro_test::eventually([&] { return g.parked() == started; });
    }, 4, &report);
    g.open();
    REQUIRE(goro_test::tasks_drained());
    CHECK(grown.size() == 1);
    CHECK(report.find("growth_leaker") != std::string::npos);
}

TEST_CASE("the live page /debug/goro/ renders the suspects and groups on the server", "[leak_watch]") {
    auto o = http_test::test_options();
    o.leak_watch_interval = std::chrono::hours(1);
    o.bearer_token = "s3cret";
    goro::debug_server server(o);
    server.start();
    service svc;
    for (int i = 0; i < 6; ++i) svc.step(*server.watch(), 2, 3);
    auto r = http_test::fetch(server.port(), http_test::get("/debug/goro/?refresh=2", "Authorization: Bearer s3cret\r\n"));
    INFO(r.body.substr(0, 4000));
    CHECK(r.status == 200);
    CHECK(r.header("Content-Type") == "text/html; charset=utf-8");
    const std::string& h = r.body;
    CHECK(h.find("<body data-refresh=2 data-chunk=200>") != std::string::npos);
    CHECK(h.find("<meta name=goro-token content=\"Bearer s3cret\">") != std::string::npos);  // for its refreshes
    auto suspects = h.find("<section id=suspects>"), groups = h.find("<section id=groups>");
    REQUIRE(suspects != std::string::npos);
    REQUIRE(groups != std::string::npos);
    auto row = h.find("<tr class=suspect", suspects);
    REQUIRE(row < groups);
    CHECK(h.find("lw_leaked_worker", row) < groups);
    CHECK(h.find("<td class='num count'>18</td>", row) < groups);
    CHECK(h.find("<svg class=spark", row) < groups);
    // The leaked group's row: its count, and a link to its own page (stack and tasks).
    auto leaked = h.find("lw_leaked_worker", groups);
    REQUIRE(leaked != std::string::npos);
    auto row_start = h.rfind("<tr class=group data-key=0x", leaked);
    REQUIRE(row_start != std::string::npos);
    REQUIRE(row_start > groups);
    const std::string row_text = h.substr(row_start, leaked - row_start);
    INFO(row_text);
    CHECK(row_text.find(" data-count=18 ") != std::string::npos);
    const std::string key = row_text.substr(25, row_text.find(' ', 25) - 25);
    CHECK(row_text.find("<a href='group?key=" + key + "'>") != std::string::npos);
    CHECK(h.find("created by ", groups) == std::string::npos);  // the tasks are on the group's page only
    CHECK(h.find("<script src") == std::string::npos);
    CHECK(h.find("<link") == std::string::npos);
    CHECK(http_test::fetch(server.port(), http_test::get("/debug/goro/")).status == 401);  // the token is required

    // The group's page, and the fragment the page's script inserts under the row.
    const std::string auth = "Authorization: Bearer s3cret\r\n";
    auto gp = http_test::fetch(server.port(), http_test::get("/debug/goro/group?key=" + key, auth));
    INFO(gp.body.substr(0, 4000));
    CHECK(gp.status == 200);
    CHECK(gp.header("Content-Type") == "text/html; charset=utf-8");
    CHECK(gp.body.rfind("<!doctype html>", 0) == 0);
    CHECK(gp.body.find("<p id=summary>18 tasks; the oldest [") != std::string::npos);
    auto stack = gp.body.find("<pre class=stack>");
    REQUIRE(stack != std::string::npos);
    // (the file's path is as the build named it: relative, or absolute in a unity build)
    CHECK(gp.body.find("lw_leaked_worker\n\t", stack) < gp.body.find("</pre>", stack));
    CHECK(gp.body.find("tests/test_leak_watch.cpp:", stack) < gp.body.find("</pre>", stack));
    CHECK(gp.body.find("<pre class=tasks>goroutine ", stack) != std::string::npos);
    CHECK(gp.body.find("]: created by ", stack) != std::string::npos);
    auto frag = http_test::fetch(server.port(), http_test::get("/debug/goro/group?key=" + key + "&fragment=1", auth));
    CHECK(frag.status == 200);
    CHECK(frag.body.rfind("<div class=group-detail data-key='" + key + "'><pre class=stack>", 0) == 0);
    CHECK(frag.body.find("lw_leaked_worker") != std::string::npos);
    CHECK(frag.body.find("<!doctype") == std::string::npos);
    CHECK(http_test::fetch(server.port(), http_test::get("/debug/goro/group?key=0x1", auth)).status == 404);
    CHECK(http_test::fetch(server.port(), http_test::get("/debug/goro/group?key=zz", auth)).status == 400);
    CHECK(http_test::fetch(server.port(), http_test::get("/debug/goro/group", auth)).status == 400);
    CHECK(http_test::fetch(server.port(), http_test::get("/debug/goro/group?key=" + key)).status == 401);
}

}  // namespace tests_leak_watch
