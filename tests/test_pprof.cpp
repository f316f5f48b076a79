// The pprof goroutine profile (debug=0): decoded here by a small protobuf
// reader, then read by the real tools when they are installed: `go tool pprof`
// (-raw, -traces, -top, -base) and `protoc --decode_raw`. A missing tool skips
// its check with a visible warning (CI installs golang-go and protobuf-compiler).
//
// GOLDEN FILE tests/golden/pprof_decoded.txt: the decoded profile of a known
// program, normalised as in test_dump.cpp (paths end in test_pprof.cpp, marked
// lines become names, time is left out). GORO_UPDATE_GOLDEN=1 rewrites it.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <goro/sync/channel.hpp>
#include <goro/inspect/dump.hpp>
#include <goro/inspect/pprof.hpp>

#include "golden.hpp"
#include "support.hpp"

using goro_test::check_golden;
using goro_test::file_text;
using goro_test::golden_dir;

using goro_test::eventually;

// Written by the tasks as they pass the marked lines (atomics: many tasks write them).
static std::atomic<int> PLINE_worker, PLINE_inner, PLINE_outer;

static goro::task<> pprofgold_worker(goro::channel<int> ch) {
    for (;;) {
        PLINE_worker.store(__LINE__ + 1, std::memory_order_relaxed);
        auto v = co_await ch.recv();
        if (!v) break;
    }
}

static goro::task<> pprofgold_inner(goro_test::gate& g) {
    PLINE_inner.store(__LINE__ + 1, std::memory_order_relaxed);
    co_await g.wait();
}

static goro::task<> pprofgold_outer(goro_test::gate& g) {
    PLINE_outer.store(__LINE__ + 1, std::memory_order_relaxed);
    co_await pprofgold_inner(g);
}

namespace {

/// 15 workers parked on a channel, 3 labelled tasks two frames deep on a gate.
struct pprof_program {
    goro::channel<int> jobs, more;
    goro_test::gate gate;

    pprof_program() {
        REQUIRE(goro_test::tasks_drained());
        for (int i = 0; i < 15; ++i) goro::go(pprofgold_worker(jobs));
        for (int i = 0; i < 3; ++i) goro::go(pprofgold_outer(gate), {.labels = {{"role", "gated"}}});
        wait_parked(18);
    }
    void add_workers(int n) {
        for (int i = 0; i < n; ++i) goro::go(pprofgold_worker(more));
        wait_parked(18 + n);
    }
    static void wait_parked(std::size_t n) {
        REQUIRE(eventually([&] {
            auto s = goro::snapshot::take();
            return s.total() == n && std::all_of(s.tasks().begin(), s.tasks().end(), [](auto& r) {
                       return r.state == goro::task_state::waiting;
                   });
        }));
    }
    ~pprof_program() {
        jobs.close();
        more.close();
        gate.open();
        CHECK(goro_test::tasks_drained());
    }
};

// --- a small protobuf reader ---------------------------------------------------------

struct pb_reader {
    std::string_view s;
    std::size_t i = 0;
    bool ok = true;

    bool more() const { return ok && i < s.size(); }
    std::uint64_t varint() {
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (i >= s.size()) {
                ok = false;
                return 0;
            }
            auto b = static_cast<unsigned char>(s[i++]);
            v |= std::uint64_t(b & 0x7f) << shift;
            if (!(b & 0x80)) return v;
        }
        ok = false;
        return 0;
    }
    std::string_view bytes() {
        std::uint64_t n = varint();
        if (!ok || n > s.size() - i) {
            ok = false;
            return {};
        }
        auto out = s.substr(i, n);
        i += n;
        return out;
    }
    void skip(std::uint32_t wire) {
        if (wire == 0) varint();
        else if (wire == 2) bytes();
        else if (wire == 1) i += 8;
        else if (wire == 5) i += 4;
        else ok = false;
        if (i > s.size()) ok = false;
    }
    /// Repeated varints, packed (wire 2) or not (wire 0).
    void repeated(std::uint32_t wire, std::vector<std::uint64_t>& out) {
        if (wire == 0) {
            out.push_back(varint());
            return;
        }
        pb_reader inner{bytes()};
        while (inner.more()) out.push_back(inner.varint());
        ok = ok && inner.ok;
    }
};

struct decoded_profile {
    struct value_type {
        std::int64_t type = 0, unit = 0;
    };
    struct label {
        std::int64_t key = 0, str = 0;
    };
    struct sample {
        std::vector<std::uint64_t> locations;
        std::vector<std::uint64_t> values;
        std::vector<label> labels;
    };
    struct line {
        std::uint64_t function = 0;
        std::int64_t number = 0;
    };
    struct location {
        std::uint64_t id = 0, mapping = 0, address = 0;
        std::vector<line> lines;
    };
    struct function {
        std::uint64_t id = 0;
        std::int64_t name = 0, system_name = 0, filename = 0;
    };
    std::vector<value_type> sample_types;
    value_type period_type;
    std::int64_t period = 0, time_nanos = 0;
    std::vector<sample> samples;
    std::map<std::uint64_t, location> locations;
    std::map<std::uint64_t, function> functions;
    std::vector<std::string> strings;
    int mappings = 0;
    bool ok = true;

    const std::string& str(std::int64_t i) const {
        static const std::string bad = "<bad string index>";
        return i >= 0 && std::size_t(i) < strings.size() ? strings[std::size_t(i)] : bad;
    }
};

decoded_profile::value_type decode_value_type(std::string_view b, bool& ok) {
    decoded_profile::value_type v;
    pb_reader r{b};
    while (r.more()) {
        auto key = r.varint();
        auto f = key >> 3;
        auto w = static_cast<std::uint32_t>(key & 7);
        if (f == 1 && w == 0) v.type = static_cast<std::int64_t>(r.varint());
        else if (f == 2 && w == 0) v.unit = static_cast<std::int64_t>(r.varint());
        else r.skip(w);
    }
    ok = ok && r.ok;
    return v;
}

decoded_profile decode(std::string_view data) {
    decoded_profile p;
    pb_reader r{data};
    while (r.more()) {
        auto key = r.varint();
        auto f = key >> 3;
        auto w = static_cast<std::uint32_t>(key & 7);
        switch (f) {
        case 1: p.sample_types.push_back(decode_value_type(r.bytes(), p.ok)); break;
        case 2: {
            decoded_profile::sample s;
            pb_reader sr{r.bytes()};
            while (sr.more()) {
                auto k = sr.varint();
                auto sw = static_cast<std::uint32_t>(k & 7);
                if ((k >> 3) == 1) sr.repeated(sw, s.locations);
                else if ((k >> 3) == 2) sr.repeated(sw, s.values);
                else if ((k >> 3) == 3) {
                    pb_reader lr{sr.bytes()};
                    decoded_profile::label l;
                    while (lr.more()) {
                        auto lk = lr.varint();
                        if ((lk >> 3) == 1) l.key = static_cast<std::int64_t>(lr.varint());
                        else if ((lk >> 3) == 2) l.str = static_cast<std::int64_t>(lr.varint());
                        else lr.skip(static_cast<std::uint32_t>(lk & 7));
                    }
                    p.ok = p.ok && lr.ok;
                    s.labels.push_back(l);
                } else sr.skip(sw);
            }
            p.ok = p.ok && sr.ok;
            p.samples.push_back(std::move(s));
            break;
        }
        case 3:
            r.bytes();
            ++p.mappings;
            break;
        case 4: {
            decoded_profile::location loc;
            pb_reader lr{r.bytes()};
            while (lr.more()) {
                auto k = lr.varint();
                auto lw = static_cast<std::uint32_t>(k & 7);
                if ((k >> 3) == 1) loc.id = lr.varint();
                else if ((k >> 3) == 2) loc.mapping = lr.varint();
                else if ((k >> 3) == 3) loc.address = lr.varint();
                else if ((k >> 3) == 4) {
                    pb_reader ln{lr.bytes()};
                    decoded_profile::line l;
                    while (ln.more()) {
                        auto kk = ln.varint();
                        if ((kk >> 3) == 1) l.function = ln.varint();
                        else if ((kk >> 3) == 2) l.number = static_cast<std::int64_t>(ln.varint());
                        else ln.skip(static_cast<std::uint32_t>(kk & 7));
                    }
                    p.ok = p.ok && ln.ok;
                    loc.lines.push_back(l);
                } else lr.skip(lw);
            }
            p.ok = p.ok && lr.ok;
            p.locations[loc.id] = loc;
            break;
        }
        case 5: {
            decoded_profile::function fn;
            pb_reader fr{r.bytes()};
            while (fr.more()) {
                auto k = fr.varint();
                auto v = fr.varint();
                if ((k & 7) != 0) p.ok = false;
                if ((k >> 3) == 1) fn.id = v;
                else if ((k >> 3) == 2) fn.name = static_cast<std::int64_t>(v);
                else if ((k >> 3) == 3) fn.system_name = static_cast<std::int64_t>(v);
                else if ((k >> 3) == 4) fn.filename = static_cast<std::int64_t>(v);
            }
            p.ok = p.ok && fr.ok;
            p.functions[fn.id] = fn;
            break;
        }
        case 6: p.strings.emplace_back(r.bytes()); break;
        case 9: p.time_nanos = static_cast<std::int64_t>(r.varint()); break;
        case 11: p.period_type = decode_value_type(r.bytes(), p.ok); break;
        case 12: p.period = static_cast<std::int64_t>(r.varint()); break;
        default: r.skip(w);
        }
    }
    p.ok = p.ok && r.ok;
    return p;
}

std::string base_name(const std::string& path) {
    auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string line_name(const std::string& file, std::int64_t line) {
    if (base_name(file) != "test_pprof.cpp") return std::to_string(line);
    if (line == PLINE_worker) return "@worker";
    if (line == PLINE_inner) return "@inner";
    if (line == PLINE_outer) return "@outer";
    return "@?";
}

/// The profile as text: types, then one line per sample (frames leaf first).
std::string render(const decoded_profile& p) {
    std::ostringstream o;
    for (auto& t : p.sample_types) o << "sample_type " << p.str(t.type) << "/" << p.str(t.unit) << "\n";
    o << "period_type " << p.str(p.period_type.type) << "/" << p.str(p.period_type.unit) << " period " << p.period
      << "\n";
    o << "mappings " << p.mappings << "\n";
    for (auto& s : p.samples) {
        o << "sample";
        for (auto v : s.values) o << " " << v;
        o << ":";
        for (auto id : s.locations) {
            auto it = p.locations.find(id);
            if (it == p.locations.end() || it->second.lines.size() != 1) {
                o << " <bad location " << id << ">";
                continue;
            }
            auto& l = it->second.lines[0];
            auto fit = p.functions.find(l.function);
            if (fit == p.functions.end()) {
                o << " <bad function>";
                continue;
            }
            std::string file = base_name(p.str(fit->second.filename));
            o << " " << p.str(fit->second.name) << " " << file << ":" << line_name(p.str(fit->second.filename), l.number)
              << ";";
        }
        for (auto& l : s.labels) o << " label " << p.str(l.key) << "=" << p.str(l.str);
        o << "\n";
    }
    return o.str();
}


bool on_path(const char* tool) {
    std::string cmd = std::string("command -v ") + tool + " >/dev/null 2>&1";
    return std::system(cmd.c_str()) == 0;
}

/// Runs a shell command; returns its exit status and output (stdout and stderr).
std::pair<int, std::string> run(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return {-1, ""};
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    int st = ::pclose(p);
    return {st, out};
}

/// A private temporary directory, removed at the end of the scope.
struct temp_dir {
    std::string path;
    temp_dir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "goro_pprof_XXXXXX").string();
        std::vector<char> b(tmpl.begin(), tmpl.end());
        b.push_back('\0');
        REQUIRE(::mkdtemp(b.data()) != nullptr);
        path = b.data();
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string write(const std::string& name, const std::string& data) const {
        std::string p = path + "/" + name;
        std::ofstream(p, std::ios::binary) << data;
        return p;
    }
};

bool matches(const std::string& text, const char* re) { return std::regex_search(text, std::regex(re)); }

}  // namespace

TEST_CASE("the profile decodes with Go's types, one sample per group", "[pprof]") {
    pprof_program prog;
    auto s = goro::snapshot::take();
    std::string pb = goro::pprof_profile(s);
    CHECK(pb == goro::goroutine_profile(s, 0).substr(0, 0) + pb);  // same encoder behind both names
    auto p = decode(pb);
    REQUIRE(p.ok);
    REQUIRE(!p.strings.empty());
    CHECK(p.strings[0].empty());
    REQUIRE(p.sample_types.size() == 1);
    CHECK(p.str(p.sample_types[0].type) == "goroutine");
    CHECK(p.str(p.sample_types[0].unit) == "count");
    CHECK(p.str(p.period_type.type) == "goroutine");
    CHECK(p.str(p.period_type.unit) == "count");
    CHECK(p.period == 1);
    CHECK(p.time_nanos > 1'600'000'000'000'000'000);  // wall-clock nanoseconds, after 2020
    REQUIRE(p.samples.size() == 2);
    std::uint64_t total = 0;
    for (auto& smp : p.samples) {
        REQUIRE(smp.values.size() == 1);
        total += smp.values[0];
        for (auto id : smp.locations) {
            REQUIRE(p.locations.count(id));
            CHECK(p.locations[id].lines.size() == 1);
            CHECK(p.locations[id].address != 0);  // the site id
            CHECK(p.functions.count(p.locations[id].lines[0].function));
        }
    }
    CHECK(total == s.total());
    CHECK(p.samples[0].values[0] == 15);
    CHECK(p.samples[1].values[0] == 3);
    // Leaf first: the gated sample starts at the inner frame.
    auto leaf = p.locations[p.samples[1].locations.at(0)].lines[0];
    CHECK(p.str(p.functions[leaf.function].name) == "pprofgold_inner");
    CHECK(leaf.number == PLINE_inner.load());
    // The address is the site id debug=1 prints.
    char hex[20];
    std::string h(hex, goro::detail::format_hex(hex, p.locations[p.samples[0].locations.at(0)].address));
    CHECK(goro::goroutine_profile(s, 1).find("15 @ " + h + "\n") != std::string::npos);
    check_golden("pprof_decoded.txt", render(p));
}

TEST_CASE("protobuf primitives: varints, omitted zeros, packed fields, stored gzip", "[pprof]") {
    std::string out;
    goro::detail::pb_writer w(out);
    w.varint(300);
    CHECK(out == std::string("\xac\x02", 2));
    out.clear();
    w.uint_field(3, 0);  // proto3: a zero is not written
    CHECK(out.empty());
    w.uint_field(1, 1);
    CHECK(out == std::string("\x08\x01", 2));
    out.clear();
    std::uint64_t v[] = {1, 150};
    w.packed_field(1, std::begin(v), std::end(v));
    CHECK(out == std::string("\x0a\x03\x01\x96\x01", 5));
    out.clear();
    w.varint(~std::uint64_t(0));
    CHECK(out.size() == 10);

    CHECK(goro::detail::crc32("123456789") == 0xCBF43926u);
    CHECK(goro::detail::crc32("") == 0u);
    std::string big(200'000, 'x');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
    std::string gz = goro::pprof_gzip(big);
    CHECK(gz.substr(0, 3) == std::string("\x1f\x8b\x08", 3));
    CHECK(gz.size() == 10 + big.size() + 4 * 5 + 8);  // four stored blocks of at most 65535 bytes
    if (on_path("gzip")) {
        temp_dir t;
        std::string f = t.write("x.gz", gz);
        auto [st, text] = run("gzip -dc " + f);
        CHECK(st == 0);
        CHECK(text == big);
        auto [st0, empty] = run("gzip -dc " + t.write("e.gz", goro::pprof_gzip("")));
        CHECK(st0 == 0);
        CHECK(empty.empty());
    } else {
        WARN("gzip not on PATH: the stored-gzip round trip was not checked");
    }
}

TEST_CASE("protoc --decode_raw reads the profile", "[pprof]") {
    if (!on_path("protoc")) {
        WARN("protoc not on PATH (apt-get install protobuf-compiler): skipped");
        return;
    }
    pprof_program prog;
    temp_dir t;
    std::string f = t.write("goroutine.pb", goro::goroutine_profile(0));
    auto [st, text] = run("protoc --decode_raw < " + f);
    INFO(text);
    CHECK(st == 0);
    CHECK(text.find("\"goroutine\"") != std::string::npos);
    CHECK(text.find("\"pprofgold_worker\"") != std::string::npos);
    CHECK(text.find("\"pprofgold_inner\"") != std::string::npos);
}

TEST_CASE("go tool pprof reads the profile: -raw, -traces, -top, -base", "[pprof]") {
    if (!on_path("go")) {
        WARN("go not on PATH (apt-get install golang-go): go tool pprof checks skipped");
        SUCCEED("skipped: no go toolchain");
        return;
    }
    pprof_program prog;
    temp_dir t;
    // go needs writable HOME/GOCACHE/GOPATH; give it its own.
    std::string env = "env HOME=" + t.path + " GOCACHE=" + t.path + "/cache GOPATH=" + t.path + "/gopath ";
    std::string pprof = env + "go tool pprof ";
    std::string before = t.write("before.pb", goro::goroutine_profile(0));
    std::string before_gz = t.write("before.pb.gz", goro::pprof_gzip(goro::goroutine_profile(0)));

    {
        auto [st, out] = run(pprof + "-raw " + before);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(PeriodType: goroutine count)"));
        CHECK(matches(out, R"(\n\s+15: \d+ \n)"));
        CHECK(matches(out, R"(\n\s+3: \d+ \d+ \n\s+role:\[gated\])"));
        CHECK(matches(out, R"(pprofgold_worker \S*test_pprof\.cpp:\d+)"));
    }
    {
        auto [st, out] = run(pprof + "-traces " + before);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(Type: goroutine)"));
        CHECK(matches(out, R"(\n\s+15\s+pprofgold_worker\n)"));
        CHECK(matches(out, R"(\n\s+3\s+pprofgold_inner\n\s+pprofgold_outer\n)"));
    }
    {
        auto [st, out] = run(pprof + "-top " + before);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(accounting for 18, 100% of 18 total)"));
        CHECK(matches(out, R"(\n\s+15\s+83\.33%.*pprofgold_worker\n)"));
        CHECK(matches(out, R"(\n\s+3\s+16\.67%.*pprofgold_inner\n)"));
    }
    {
        auto [st, out] = run(pprof + "-traces " + before_gz);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(\n\s+15\s+pprofgold_worker\n)"));
    }
    {
        // Labels are sample tags: -tagfocus keeps the labelled group only.
        auto [st, out] = run(pprof + "-top -tagfocus=role=gated " + before);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(accounting for 3, 16\.67% of 18 total)"));
        CHECK(matches(out, R"(\n\s+3\s+16\.67%.*pprofgold_inner\n)"));
        CHECK_FALSE(matches(out, R"(pprofgold_worker)"));
        auto [st2, tags] = run(pprof + "-tags " + before);
        INFO(tags);
        CHECK(matches(tags, R"(role: Total 3(\.0)?\n\s+3(\.0)? \(\s*100%\): gated)"));
    }
    prog.add_workers(5);
    std::string after = t.write("after.pb", goro::goroutine_profile(0));
    {
        auto [st, out] = run(pprof + "-top -base " + before + " " + after);
        INFO(out);
        CHECK(st == 0);
        CHECK(matches(out, R"(accounting for 5, )"));
        CHECK(matches(out, R"(\n\s+5\s+.*pprofgold_worker\n)"));
        CHECK_FALSE(matches(out, R"(pprofgold_inner)"));
    }
}
