// goro::select over a std::span<goro::select_case> (Go's reflect.Select):
// mixed element types, send cases, timeouts, closes, nil cases, fairness
// among ready cases and among parked waiters on one channel, and no lost or
// duplicated value.
#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <variant>
#include <vector>

#include <goro/sync/channel.hpp>
#include <goro/sync/context.hpp>
#include <goro/sync/select.hpp>
#include <goro/sync/select_dynamic.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_select_dynamic {

using namespace std::chrono_literals;

namespace {
/// Tasks parked now with wait reason `reason` (read with the world stopped).
std::size_t parked_with_reason(const char* reason) {
    std::size_t n = 0;
    auto& s = goro::detail::the_scheduler();
    goro_test::stop_whole_world();
    goro::detail::the_registry().for_each_locked([&](goro::task_header& h) {
        const char* r = h.wait_reason.load();
        if (h.state.load() == goro::task_state::waiting && goro_test::same_reason(r, reason)) ++n;
    });
    s.start_the_world();
    return n;
}
}  // namespace

TEST_CASE("dynamic select: mixed element types, the received value by index", "[select_dynamic]") {
    goro::channel<int> a(1);
    goro::channel<std::string> b(1);
    goro::channel<int> nil{nullptr};
    (void)b.try_send("hi");
    std::vector<goro::select_case> cs;
    cs.push_back(goro::recv(a));
    cs.push_back(goro::recv(b));
    cs.push_back(goro::recv(nil));
    cs.emplace_back();  // a case that never fires
    CHECK(cs[1].is_recv());
    auto body = [](std::vector<goro::select_case>& c) -> goro::task<int> { co_return co_await goro::select(c); };
    CHECK(goro::block_on(body(cs)) == 1);
    REQUIRE(cs[1].received<std::string>());
    CHECK(*cs[1].received<std::string>() == "hi");
    CHECK_FALSE(cs[0].received<int>());
    CHECK_THROWS_WITH(cs[1].received<int>(), Catch::Contains("goro::select_case::received"));
    CHECK_THROWS_AS(cs[3].received<int>(), goro::usage_error);
    // Nothing ready: try_select says so; the slot of the last select is forgotten.
    CHECK(goro::try_select(cs) == goro::select_default);
    CHECK_FALSE(cs[1].received<std::string>());
    // Empty list: try_select is default.
    std::vector<goro::select_case> none;
    CHECK(goro::try_select(none) == goro::select_default);
}

TEST_CASE("dynamic select: a case made from a channel variable outlives the variable", "[select_dynamic]") {
    std::vector<goro::select_case> cs;
    {
        goro::channel<int> a(1);
        REQUIRE(a.try_send(3) == goro::send_status::sent);
        const std::size_t base = a.state()->refs.load();
        cs.push_back(goro::recv(a));  // a borrowing case: the select_case takes a handle of its own
        CHECK(a.state()->refs.load() == base + 1);
    }  // the variable, the channel's only other handle, is gone
    REQUIRE(goro::try_select(cs) == 0);
    REQUIRE(cs[0].received<int>());
    CHECK(*cs[0].received<int>() == 3);
    // A send case likewise: the list keeps the channel, whose value a receiver then finds.
    goro::channel<int> out(1);
    std::vector<goro::select_case> sends;
    {
        goro::channel<int> b = out;
        const std::size_t base = b.state()->refs.load();
        sends.push_back(goro::send(b, 8));
        CHECK(b.state()->refs.load() == base + 1);
    }
    out = goro::channel<int>(nullptr);  // now only the case holds the channel
    REQUIRE(goro::try_select(sends) == 0);
}

TEST_CASE("dynamic select: send cases, timeouts, closed channels, ctx.done()", "[select_dynamic]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> out;  // unbuffered: the send waits for the receiver
    std::atomic<int> got{-1};
    goro::go([](goro::channel<int> c, std::atomic<int>& g) -> goro::task<> { g.store(*co_await c.recv()); }(out, got));
    auto body = [](goro::channel<int> o) -> goro::task<int> {
        goro::channel<int> never;
        std::vector<goro::select_case> cs;
        cs.push_back(goro::recv(never));
        cs.push_back(goro::send(o, 11));
        co_return co_await goro::select(cs);
    };
    CHECK(goro::block_on(body(out)) == 1);
    CHECK(goro_test::eventually([&] { return got.load() == 11; }));
    // A timeout fires when nothing else does.
    auto timeout = []() -> goro::task<int> {
        goro::channel<int> never;
        std::vector<goro::select_case> cs;
        cs.push_back(goro::recv(never));
        cs.push_back(goro::after(1h));
        cs.push_back(goro::after(5ms));
        co_return co_await goro::select(cs);
    };
    CHECK(goro::block_on(timeout()) == 2);
    // close wakes a parked dynamic select: a receive gets nullopt, a send throws.
    goro::channel<int> c1, c2;
    auto parked = [](goro::channel<int> r, goro::channel<int> s, bool recv_side) -> goro::task<int> {
        std::vector<goro::select_case> cs;
        if (recv_side) cs.push_back(goro::recv(r));
        else cs.push_back(goro::send(s, 1));
        cs.push_back(goro::after(1h));
        int i = co_await goro::select(cs);
        co_return i == 0 && !(recv_side && cs[0].received<int>()) ? 1 : 0;
    };
    std::atomic<int> rc{-1};
    std::atomic<bool> threw{false};
    goro::go([](decltype(parked) p, goro::channel<int> r, std::atomic<int>& out) -> goro::task<> {
        out.store(co_await p(r, nullptr, true));
    }(parked, c1, rc));
    goro::go([](decltype(parked) p, goro::channel<int> s, std::atomic<bool>& t) -> goro::task<> {
        try {
            (void)co_await p(nullptr, s, false);
        } catch (const goro::channel_closed&) {
            t.store(true);
        }
    }(parked, c2, threw));
    REQUIRE(goro_test::eventually([] { return parked_with_reason("select") >= 2; }));
    c1.close();
    c2.close();
    CHECK(goro_test::eventually([&] { return rc.load() == 1 && threw.load(); }));
    // ctx.done() as a case.
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    cancel();
    std::vector<goro::select_case> cs;
    goro::channel<int> never;
    cs.push_back(goro::recv(never));
    cs.push_back(ctx.done());
    CHECK(goro::try_select(cs) == 1);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("dynamic select is fair among ready cases and among parked waiters on one channel", "[select_dynamic]") {
    // Ready: eight buffered channels, all holding a value.
    const int n = 8, rounds = 4000;
    std::vector<goro::channel<int>> chans;
    std::vector<goro::select_case> cs;
    for (int i = 0; i < n; ++i) chans.emplace_back(1);
    for (auto& c : chans) cs.push_back(goro::recv(c));
    std::vector<int> hits(n);
    for (int r = 0; r < rounds; ++r) {
        for (auto& c : chans) (void)c.try_send(r);
        int i = goro::try_select(cs);
        REQUIRE(i >= 0);
        ++hits[std::size_t(i)];
        for (auto& c : chans) (void)c.try_recv();
    }
    // Expected 500 each, sigma ~ 21: a band of more than 7 sigma.
    for (int h : hits) CHECK((h > 350 && h < 650));
    // Parked: two send cases on one unbuffered channel (Go's TestPseudoRandomSend shape).
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> c;
    const int sends = 200;
    std::atomic<int> ones{0}, zeros{0};
    goro::go([](goro::channel<int> ch, int k, std::atomic<int>& o, std::atomic<int>& z) -> goro::task<> {
        for (int i = 0; i < k; ++i) {
            co_await goro::yield();
            if (*co_await ch.recv() == 1) o.fetch_add(1);
            else z.fetch_add(1);
        }
    }(c, sends, ones, zeros));
    auto sender = [](goro::channel<int> ch, int k) -> goro::task<> {
        for (int i = 0; i < k; ++i) {
            std::vector<goro::select_case> two;
            two.push_back(goro::send(ch, 1));
            two.push_back(goro::send(ch, 0));
            (void)co_await goro::select(two);
        }
    };
    goro::block_on(sender(c, sends));
    REQUIRE(goro_test::eventually([&] { return ones.load() + zeros.load() == sends; }));
    CHECK(ones.load() > sends / 10);
    CHECK(zeros.load() > sends / 10);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("dynamic select: many selectors and senders over a run-time set lose and duplicate nothing",
          "[select_dynamic][stress]") {
    const auto tasks_before = goro::num_goroutines();
    const int nchan = 5, per_sender = 400, receivers = 3;
    std::vector<goro::channel<int>> chans;
    for (int i = 0; i < nchan; ++i) chans.emplace_back(std::size_t(i % 2));  // unbuffered and buffered
    goro::wait_group senders;
    senders.add(nchan);
    for (int i = 0; i < nchan; ++i)
        goro::go([](goro::channel<int> c, int base, int k, goro::wait_group& wg) -> goro::task<> {
            for (int j = 0; j < k; ++j) co_await c.send(base + j);
            wg.done();
        }(chans[std::size_t(i)], i * per_sender, per_sender, senders));
    goro::channel<std::monostate> stop;
    std::vector<std::atomic<int>> seen(std::size_t(nchan * per_sender));
    goro::wait_group recvs;
    recvs.add(receivers);
    for (int r = 0; r < receivers; ++r)
        goro::go([](std::vector<goro::channel<int>> in, goro::channel<std::monostate> st,
                    std::vector<std::atomic<int>>& s, goro::wait_group& wg) -> goro::task<> {
            std::vector<goro::select_case> cs;
            for (auto& c : in) cs.push_back(goro::recv(c));
            cs.push_back(goro::recv(st));
            for (;;) {
                int i = co_await goro::select(cs);
                if (i == int(in.size())) break;
                if (auto& v = cs[std::size_t(i)].received<int>()) s[std::size_t(*v)].fetch_add(1);
            }
            wg.done();
        }(chans, stop, seen, recvs));
    goro::block_on(senders.wait());
    // Every value sent is received (some may still sit in a buffer), then the receivers stop.
    REQUIRE(goro_test::eventually([&] {
        int n = 0;
        for (auto& x : seen) n += x.load();
        return n >= nchan * per_sender;
    }));
    stop.close();
    goro::block_on(recvs.wait());
    int bad = 0;
    for (auto& s : seen) bad += s.load() != 1;
    CHECK(bad == 0);
    CHECK(goro_test::tasks_drained(tasks_before));
}

}  // namespace tests_select_dynamic
