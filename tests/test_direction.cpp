// Directional channels (goro::send_only / goro::recv_only), ctx.done() as a
// receive-only channel, select cases evaluated in source order
// (goro::cases{...}), and the send forms that g++ 12's temporary bug cannot
// reach (std::in_place).
#include <catch2/catch.hpp>

#include <atomic>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <goro/sync/channel.hpp>
#include <goro/sync/context.hpp>
#include <goro/sync/select.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_direction {

using namespace std::chrono_literals;

namespace {

// --- the wrong forms do not compile (Go's test/chan/perm.go, as requires-expressions) ---

template <class C>
concept can_send = requires(C c) { c.send(1); };
template <class C>
concept can_try_send = requires(C c) { c.try_send(1); };
template <class C>
concept can_close = requires(C c) { c.close(); };
template <class C>
concept can_recv = requires(C c) { c.recv(); };
template <class C>
concept can_try_recv = requires(C c) { c.try_recv(); };
template <class C>
concept can_send_case = requires(C c) { goro::send(c, 1); };
template <class C>
concept can_recv_case = requires(C c) { goro::recv(c); };
template <class C>
concept can_select_send = requires(C c) { goro::try_select(goro::send(c, 1)); };

using ch_t = goro::channel<int>;
using so_t = goro::send_only<int>;
using ro_t = goro::recv_only<int>;

// The right forms compile (so the negative checks below test the direction, not a typo).
static_assert(can_send<ch_t> && can_try_send<ch_t> && can_close<ch_t> && can_recv<ch_t> && can_try_recv<ch_t>);
static_assert(can_send_case<ch_t> && can_recv_case<ch_t> && can_select_send<ch_t>);
static_assert(can_send<so_t> && can_try_send<so_t> && can_close<so_t> && can_send_case<so_t> && can_select_send<so_t>);
static_assert(can_recv<ro_t> && can_try_recv<ro_t> && can_recv_case<ro_t>);
// A receive-only view cannot send, close, or be a send case.
static_assert(!can_send<ro_t> && !can_try_send<ro_t> && !can_close<ro_t>);
static_assert(!can_send_case<ro_t> && !can_select_send<ro_t>);
// A send-only view cannot receive.
static_assert(!can_recv<so_t> && !can_try_recv<so_t> && !can_recv_case<so_t>);
// A channel converts to either view; a view converts to nothing else.
static_assert(std::is_convertible_v<ch_t, so_t> && std::is_convertible_v<ch_t, ro_t>);
static_assert(!std::is_convertible_v<so_t, ro_t> && !std::is_convertible_v<ro_t, so_t>);
static_assert(!std::is_convertible_v<so_t, ch_t> && !std::is_convertible_v<ro_t, ch_t>);
static_assert(!std::is_constructible_v<ch_t, so_t> && !std::is_constructible_v<ch_t, ro_t>);
// ctx.done() is a receive-only channel of std::monostate.
static_assert(std::is_same_v<decltype(std::declval<goro::context>().done()), goro::recv_only<std::monostate>>);
static_assert(!can_close<goro::recv_only<std::monostate>>);

goro::task<> produce(goro::send_only<int> out, int n) {
    for (int i = 0; i < n; ++i) co_await out.send(i);
    out.close();
}

goro::task<long> consume(goro::recv_only<int> in) {
    long sum = 0;
    while (auto v = co_await in.recv()) sum += *v;
    co_return sum;
}

/// Waits for `done` the way a Go program ranges over ctx.Done(): the loop ends when it is closed.
goro::task<int> range_over(goro::recv_only<std::monostate> done) {
    int values = 0;
    // A done channel is only ever closed. (With a declaration in the condition:
    // g++ 12 miscompiles `while (co_await x)`, see docs/api.md.)
    while (auto v = co_await done.recv()) ++values;
    co_return values;
}

struct page {  // an aggregate holding strings: what g++ 12's bug double-frees
    std::string url;
    std::string body;
};

}  // namespace

TEST_CASE("send_only and recv_only views carry a pipeline; close through the send side", "[direction]") {
    const auto tasks_before = goro::num_goroutines();
    for (std::size_t cap : {std::size_t(0), std::size_t(8)}) {
        goro::channel<int> ch(cap);
        goro::go(produce(ch, 1000));
        CHECK(goro::block_on(consume(ch)) == 999L * 1000 / 2);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("views: nil, equality, size and capacity, try forms, select cases", "[direction]") {
    goro::channel<int> ch(2);
    goro::send_only<int> s = ch;
    goro::recv_only<int> r = ch;
    goro::recv_only<int> nil_r;
    goro::send_only<int> nil_s = nullptr;
    CHECK(nil_r.is_nil());
    CHECK(nil_s.is_nil());
    CHECK_FALSE(r.is_nil());
    CHECK(r == goro::recv_only<int>(ch));
    CHECK(s.try_send(1) == goro::send_status::sent);
    CHECK(r.size() == 1);
    CHECK(s.capacity() == 2);
    CHECK(r.capacity() == 2);
    auto got = r.try_recv();
    REQUIRE(got);
    CHECK(*got.value == 1);
    CHECK(nil_r.try_recv().status == goro::recv_status::empty);
    // select over views: a send case on the send side, a receive case on the other.
    auto body = [](goro::send_only<int> so, goro::recv_only<int> ro) -> goro::task<int> {
        auto a = co_await goro::select(goro::send(so, 7), goro::recv(goro::recv_only<int>{}));
        CHECK(a.index() == 0);
        auto b = co_await goro::select(ro, goro::after(10s));  // a view is a case as it is
        CHECK(b.index() == 0);
        co_return b.value<0>();
    };
    CHECK(goro::block_on(body(s, r)) == 7);
    // The view keeps the channel alive after its last channel handle is gone.
    goro::recv_only<int> kept = [] {
        goro::channel<int> c(1);
        (void)c.try_send(42);
        return goro::recv_only<int>(c);
    }();
    CHECK(*kept.try_recv().value == 42);
    s.close();
    CHECK(r.try_recv().status == goro::recv_status::closed);
}

TEST_CASE("ctx.done() is a receive-only channel: ranged over, passed on, awaited, selected", "[direction]") {
    const auto tasks_before = goro::num_goroutines();
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    goro::recv_only<std::monostate> done = ctx.done();  // passable where recv_only<monostate> is expected
    CHECK_FALSE(done.is_nil());
    CHECK(done.try_recv().status == goro::recv_status::empty);
    std::atomic<int> ranged{-1};
    std::atomic<bool> awaited{false};
    goro::go([](goro::recv_only<std::monostate> d, std::atomic<int>& out) -> goro::task<> {
        out.store(co_await range_over(d));
    }(done, ranged));
    goro::go([](goro::context c, std::atomic<bool>& out) -> goro::task<> {
        co_await c.done();  // awaitable on its own, as before
        out.store(true);
    }(ctx, awaited));
    CHECK(ranged.load() == -1);
    cancel();
    CHECK(goro_test::eventually([&] { return ranged.load() == 0 && awaited.load(); }));
    CHECK(done.try_recv().status == goro::recv_status::closed);
    CHECK(goro::try_select(ctx.done()).index() == 0);
    // A view outlives the context handle it came from.
    goro::recv_only<std::monostate> orphan = [] {
        auto [c, k] = goro::with_cancel(goro::background());
        k();
        return c.done();
    }();
    CHECK(orphan.try_recv().status == goro::recv_status::closed);
    // background: a nil channel.
    CHECK(goro::background().done().is_nil());
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("goro::cases{...} evaluates the case expressions in source order", "[direction]") {
    goro::channel<int> a(1), b(1), c(1);
    (void)c.try_send(3);
    std::vector<int> seen;
    auto note = [&](int i, goro::channel<int>& ch) {
        seen.push_back(i);
        return goro::recv(ch);
    };
    auto r = goro::try_select(goro::cases{note(0, a), note(1, b), note(2, c)});
    CHECK(seen == std::vector<int>{0, 1, 2});
    CHECK(r.index() == 2);
    CHECK(r.value<2>() == 3);
    seen.clear();
    auto body = [](std::vector<int>& s, goro::channel<int> x, goro::channel<int> y) -> goro::task<int> {
        auto rr = co_await goro::select(goro::cases{
            (s.push_back(0), goro::recv(x)), (s.push_back(1), goro::send(y, 5)), (s.push_back(2), goro::after(10s))});
        co_return rr.index();
    };
    CHECK(goro::block_on(body(seen, a, b)) == 1);
    CHECK(seen == std::vector<int>{0, 1, 2});
    CHECK(*b.try_recv().value == 5);
}

TEST_CASE("std::in_place sends of an aggregate holding strings: nothing freed twice", "[direction]") {
    // g++ 12 destroys an aggregate temporary built inside a co_await
    // expression twice (`co_await ch.send(page{url, body})`); these forms
    // build it inside a plain call. Run under g++ with ASan (see the README).
    const auto tasks_before = goro::num_goroutines();
    goro::channel<page> buffered(4), unbuffered;
    goro::send_only<page> view = buffered;
    auto producer = [](goro::channel<page> b, goro::channel<page> u, goro::send_only<page> v, std::string url,
                       std::string body) -> goro::task<> {
        for (int i = 0; i < 50; ++i) {
            co_await b.send(std::in_place, url, body);
            co_await v.send(std::in_place, url, body + "!");
            co_await goro::select(goro::send(u, std::in_place, url, body), goro::after(30s));
            auto made = goro::send(u, page{url, body});  // a case built in its own statement is safe too
            co_await goro::select(std::move(made), goro::after(30s));
        }
        b.close();
        u.close();
    };
    goro::go(producer(buffered, unbuffered, view, std::string(40, 'u'), std::string(100, 'b')));
    auto consumer = [](goro::channel<page> b, goro::channel<page> u) -> goro::task<std::size_t> {
        std::size_t bytes = 0;
        bool b_open = true, u_open = true;
        while (b_open || u_open) {
            // (Not `goro::recv(b_open ? b : nil)` inside the co_await: g++ 12
            // destroys that conditional's temporary twice, see the README.)
            goro::channel<page> bb = b_open ? b : goro::channel<page>(nullptr);
            goro::channel<page> uu = u_open ? u : goro::channel<page>(nullptr);
            auto r = co_await goro::select(goro::recv(bb), goro::recv(uu));
            if (r.index() == 0) {
                if (auto& p = r.get<0>()) bytes += p->url.size() + p->body.size();
                else b_open = false;
            } else {
                if (auto& p = r.get<1>()) bytes += p->url.size() + p->body.size();
                else u_open = false;
            }
        }
        co_return bytes;
    };
    CHECK(goro::block_on(consumer(buffered, unbuffered)) == 50u * (140 + 141 + 140 + 140));
    CHECK(goro_test::tasks_drained(tasks_before));
}

}  // namespace tests_direction
