// goro::context: background, cancel trees, unlinking, deadlines, values, the
// std::stop_token bridge both ways, causes, and cancelling many waiters.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <goro/sync/channel.hpp>
#include <goro/sync/context.hpp>
#include <goro/sync/select.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_context {

using namespace std::chrono_literals;
using goro_test::eventually;

namespace {

const goro::context_key<std::string> user_key{"user"};
const goro::context_key<int> depth_key{"depth"};
const goro::context_key<int> unused_key{"unused"};

bool done_now(const goro::context& ctx) { return goro::try_select(ctx.done()).index() == 0; }

std::string what_of(std::exception_ptr e) {
    try {
        if (e) std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    }
    return "";
}

}  // namespace

TEST_CASE("background is never done and has no deadline or values", "[context]") {
    goro::context bg = goro::background();
    CHECK(bg.err() == goro::context_error::none);
    CHECK_FALSE(bg.is_done());
    CHECK_FALSE(bg.deadline());
    CHECK(bg.value(user_key) == nullptr);
    CHECK_FALSE(done_now(bg));
    CHECK_FALSE(bg.stop_token().stop_possible());
    CHECK(goro::cause(bg) == nullptr);
    CHECK_NOTHROW(bg.throw_if_done());
    // Its done() is a nil channel: a select with a timeout times out.
    auto body = [](goro::context c) -> goro::task<int> {
        auto r = co_await goro::select(c.done(), goro::after(5ms));
        co_return r.index();
    };
    CHECK(goro::block_on(body(bg)) == 1);
}

TEST_CASE("with_cancel: cancel closes done, sets err and cause, and is idempotent", "[context]") {
    const auto tasks_before = goro::num_goroutines();
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    CHECK_FALSE(ctx.is_done());
    CHECK_FALSE(done_now(ctx));
    std::atomic<bool> woke{false};
    goro::go([](goro::context c, std::atomic<bool>& w) -> goro::task<> {
        co_await c.done();
        w.store(true);
    }(ctx, woke));
    cancel();
    CHECK(eventually([&] { return woke.load(); }));
    CHECK(ctx.err() == goro::context_error::canceled);
    CHECK(done_now(ctx));
    CHECK_THROWS_AS(ctx.throw_if_done(), goro::canceled_error);
    CHECK(what_of(goro::cause(ctx)) == "context canceled");
    // Again, and with a cause: nothing changes.
    cancel();
    cancel(std::make_exception_ptr(std::runtime_error("late")));
    CHECK(ctx.err() == goro::context_error::canceled);
    CHECK(what_of(goro::cause(ctx)) == "context canceled");
    CHECK(std::string(goro::to_string(ctx.err())) == "context canceled");
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("a cancel cause reaches every descendant", "[context]") {
    auto [root, cancel] = goro::with_cancel(goro::background());
    auto [child, cc] = goro::with_cancel(root);
    goro::context leaf = goro::with_value(child, depth_key, 2);
    cancel(std::make_exception_ptr(std::runtime_error("shutting down")));
    CHECK(leaf.err() == goro::context_error::canceled);
    CHECK(what_of(goro::cause(leaf)) == "shutting down");
    CHECK(what_of(goro::cause(child)) == "shutting down");
    (void)cc;
}

TEST_CASE("cancelling a parent cancels every descendant; a child's cancel does not climb", "[context]") {
    const std::size_t timers_before = goro::detail::the_scheduler().timers().pending();  // other tests' timers may be pending
    auto [root, cancel_root] = goro::with_cancel(goro::background());
    auto [a, cancel_a] = goro::with_cancel(root);
    auto [b, cancel_b] = goro::with_cancel(root);
    goro::context av = goro::with_value(a, depth_key, 1);
    auto [a1, cancel_a1] = goro::with_cancel(av);  // below a value node: linked to a
    auto [a2, cancel_a2] = goro::with_timeout(a1, 1h);

    cancel_b();
    CHECK(b.is_done());
    CHECK_FALSE(root.is_done());
    CHECK_FALSE(a.is_done());
    CHECK_FALSE(a2.is_done());

    cancel_root();
    for (auto* c : {&root, &a, &av, &a1, &a2}) {
        CHECK(c->err() == goro::context_error::canceled);
        CHECK(done_now(*c));
    }
    // A context made under a cancelled parent is born cancelled.
    auto [late, cancel_late] = goro::with_cancel(a1);
    CHECK(late.err() == goro::context_error::canceled);
    (void)cancel_a;
    (void)cancel_a1;
    (void)cancel_a2;
    (void)cancel_late;
    CHECK(goro::detail::the_scheduler().timers().pending() <= timers_before);  // a2's timer was stopped
}

TEST_CASE("children unlink from their parent when cancelled or dropped", "[context]") {
    const std::size_t timers_before = goro::detail::the_scheduler().timers().pending();  // other tests' timers may be pending
    auto [parent, cancel_parent] = goro::with_cancel(goro::background());
    CHECK(goro::detail::context_children(parent) == 0);
    {
        std::vector<std::pair<goro::context, goro::cancel_func>> kids;
        for (int i = 0; i < 100; ++i) kids.push_back(goro::with_cancel(parent));
        CHECK(goro::detail::context_children(parent) == 100);
        for (int i = 0; i < 50; ++i) kids[std::size_t(i)].second();  // cancelled: unlinked at once
        CHECK(goro::detail::context_children(parent) == 50);
        for (int i = 50; i < 100; ++i) CHECK_FALSE(kids[std::size_t(i)].first.is_done());
    }
    // The uncancelled ones were dropped: they unlinked on destruction.
    CHECK(goro::detail::context_children(parent) == 0);
    // Children come and go many times: the parent does not grow.
    for (int i = 0; i < 10'000; ++i) {
        auto [c, cancel] = goro::with_timeout(parent, 1h);
        auto v = goro::with_value(c, depth_key, i);
        auto [g, cg] = goro::with_cancel(v);
        if (i % 2) cancel();
        else cg();
    }
    CHECK(goro::detail::context_children(parent) == 0);
    CHECK(goro::detail::the_scheduler().timers().pending() <= timers_before);
    cancel_parent();
}

TEST_CASE("with_timeout fires deadline_exceeded and wakes waiters", "[context]") {
    auto t0 = std::chrono::steady_clock::now();
    auto [ctx, cancel] = goro::with_timeout(goro::background(), 30ms);
    REQUIRE(ctx.deadline());
    CHECK(*ctx.deadline() >= t0 + 30ms);
    CHECK(*ctx.deadline() <= std::chrono::steady_clock::now() + 30ms);
    auto [child, cc] = goro::with_cancel(ctx);
    auto body = [](goro::context c) -> goro::task<goro::context_error> {
        co_await c.done();
        co_return c.err();
    };
    CHECK(goro::block_on(body(child)) == goro::context_error::deadline_exceeded);
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
    CHECK(ctx.err() == goro::context_error::deadline_exceeded);
    CHECK_THROWS_AS(ctx.throw_if_done(), goro::deadline_exceeded_error);
    CHECK(what_of(goro::cause(child)) == "context deadline exceeded");
    cancel();  // after the fact: nothing changes
    CHECK(ctx.err() == goro::context_error::deadline_exceeded);
    (void)cc;
}

TEST_CASE("deadlines: the earliest along the chain wins; a past one is done at once", "[context]") {
    const std::size_t timers_before = goro::detail::the_scheduler().timers().pending();  // other tests' timers may be pending
    auto now = std::chrono::steady_clock::now();
    auto [outer, c1] = goro::with_deadline(goro::background(), now + 1h);
    auto [inner, c2] = goro::with_deadline(outer, now + 2h);  // later than its parent's
    REQUIRE(inner.deadline());
    CHECK(*inner.deadline() == *outer.deadline());
    auto [tight, c3] = goro::with_timeout(outer, 1min);
    CHECK(*tight.deadline() < *outer.deadline());
    auto [past, c4] = goro::with_deadline(goro::background(), now - 1s);
    CHECK(past.err() == goro::context_error::deadline_exceeded);
    auto v = goro::with_value(tight, depth_key, 1);
    CHECK(v.deadline() == tight.deadline());
    c1();
    CHECK(inner.err() == goro::context_error::canceled);
    CHECK(tight.err() == goro::context_error::canceled);
    (void)c2;
    (void)c3;
    (void)c4;
    CHECK(goro::detail::the_scheduler().timers().pending() <= timers_before);
}

TEST_CASE("values are found through the chain; the nearest wins", "[context]") {
    goro::context a = goro::with_value(goro::background(), user_key, std::string("alice"));
    auto [b, cancel] = goro::with_cancel(a);
    goro::context c = goro::with_value(b, depth_key, 3);
    goro::context d = goro::with_value(c, user_key, "bob");
    REQUIRE(c.value(user_key));
    CHECK(*c.value(user_key) == "alice");
    CHECK(*d.value(user_key) == "bob");
    CHECK(*d.value(depth_key) == 3);
    CHECK(a.value(depth_key) == nullptr);
    CHECK(d.value(unused_key) == nullptr);
    cancel();
    CHECK(d.is_done());
    CHECK(*d.value(user_key) == "bob");  // values outlive cancellation
}

TEST_CASE("stop_token bridge: ctx.stop_token() stops on cancel", "[context]") {
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    std::stop_token st = ctx.stop_token();
    CHECK(st.stop_possible());
    CHECK_FALSE(st.stop_requested());
    std::atomic<int> called{0};
    std::stop_callback cb(st, [&] { called.fetch_add(1); });
    cancel();
    CHECK(st.stop_requested());
    CHECK(called.load() == 1);
    // Asked for after the cancel: already stopped.
    CHECK(ctx.stop_token().stop_requested());
    auto [child, cc] = goro::with_cancel(ctx);
    CHECK(child.stop_token().stop_requested());
    (void)cc;
    // A std::jthread-style worker loop driven by a context's token.
    auto [ctx2, cancel2] = goro::with_timeout(goro::background(), 20ms);
    std::jthread worker([tok = ctx2.stop_token()] {
        while (!tok.stop_requested()) std::this_thread::sleep_for(1ms);
    });
    worker.join();
    CHECK(ctx2.err() == goro::context_error::deadline_exceeded);
    (void)cancel2;
}

TEST_CASE("stop_token bridge: with_stop_token cancels on request_stop", "[context]") {
    const auto tasks_before = goro::num_goroutines();
    std::stop_source src;
    auto [ctx, cancel] = goro::with_stop_token(goro::background(), src.get_token());
    auto [child, cc] = goro::with_cancel(ctx);
    std::atomic<bool> woke{false};
    goro::go([](goro::context c, std::atomic<bool>& w) -> goro::task<> {
        co_await c.done();
        w.store(true);
    }(child, woke));
    CHECK_FALSE(ctx.is_done());
    std::thread([&] { src.request_stop(); }).join();
    CHECK(ctx.err() == goro::context_error::canceled);
    CHECK(child.err() == goro::context_error::canceled);
    CHECK(what_of(goro::cause(child)).find("stop requested") != std::string::npos);
    CHECK(eventually([&] { return woke.load(); }));
    // An already stopped token: cancelled at once. Cancelling first also works.
    std::stop_source stopped;
    stopped.request_stop();
    auto [c2, k2] = goro::with_stop_token(goro::background(), stopped.get_token());
    CHECK(c2.is_done());
    std::stop_source never;
    auto [c3, k3] = goro::with_stop_token(goro::background(), never.get_token());
    k3();
    CHECK(c3.is_done());
    (void)cancel;
    (void)cc;
    (void)k2;
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("ctx.done() in a select: receive or done", "[context]") {
    const auto tasks_before = goro::num_goroutines();
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    goro::channel<int> ch(16);
    std::atomic<int> received{0};
    std::atomic<bool> exited{false};
    goro::go([](goro::context c, goro::channel<int> in, std::atomic<int>& n, std::atomic<bool>& e) -> goro::task<> {
        for (;;) {
            auto r = co_await goro::select(goro::recv(in), c.done());
            if (r.index() == 1) break;
            n.fetch_add(1);
        }
        e.store(true);
    }(ctx, ch, received, exited));
    for (int i = 0; i < 10; ++i) goro::block_on(ch.send(i));
    REQUIRE(eventually([&] { return received.load() == 10; }));
    CHECK_FALSE(exited.load());
    cancel();
    CHECK(eventually([&] { return exited.load(); }));
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("cancelling a context wakes 100,000 waiting tasks", "[context][stress]") {
    const auto tasks_before = goro::num_goroutines();
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    goro::channel<int> never;
    const int n = 100'000;
    std::atomic<int> parked{0}, woke{0};
    auto waiter = [](goro::context c, goro::channel<int> nv, int i, std::atomic<int>& p, std::atomic<int>& w) -> goro::task<> {
        p.fetch_add(1);
        if (i % 2) co_await c.done();
        else co_await goro::select(goro::recv(nv), c.done());
        w.fetch_add(1);
    };
    for (int i = 0; i < n; ++i) goro::go(waiter(ctx, never, i, parked, woke));
    REQUIRE(eventually([&] { return parked.load() == n; }, std::chrono::seconds(120)));
    CHECK(woke.load() == 0);
    cancel();
    CHECK(eventually([&] { return woke.load() == n; }, std::chrono::seconds(120)));
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("cancel racing child creation: every child ends up cancelled", "[context][stress]") {
    for (int round = 0; round < 200; ++round) {
        auto made = goro::with_cancel(goro::background());  // not a structured binding: captured below
        goro::context root = made.first;
        goro::cancel_func cancel = made.second;
        std::vector<goro::context> kids[4];
        std::vector<std::thread> ts;
        for (int t = 0; t < 4; ++t)
            ts.emplace_back([&, t] {
                for (int i = 0; i < 50; ++i) {
                    auto [c, cc] = goro::with_cancel(root);
                    kids[t].push_back(c);
                    (void)cc;
                }
            });
        std::this_thread::yield();
        cancel();
        for (auto& th : ts) th.join();
        for (auto& v : kids)
            for (auto& c : v) CHECK(c.err() == goro::context_error::canceled);
        CHECK(goro::detail::context_children(root) == 0);
    }
}

TEST_CASE("stress: producers and consumers with random cancellations deliver exactly once", "[context][stress]") {
    const auto tasks_before = goro::num_goroutines();
    std::mt19937 rng(777);
    for (int round = 0; round < 30; ++round) {
        std::size_t cap = round % 2 ? 0 : 32;
        goro::channel<int> ch(cap);
        auto [ctx, cancel] = goro::with_cancel(goro::background());
        std::mutex mu;
        std::vector<int> sent, received;
        std::atomic<int> exited{0};
        for (int p = 0; p < 8; ++p)
            goro::go([](goro::context c, goro::channel<int> out, int id, std::mutex& m, std::vector<int>& log,
                        std::atomic<int>& ex) -> goro::task<> {
                std::vector<int> mine;
                for (int i = 0; i < 100'000; ++i) {
                    int v = id * 1'000'000 + i;
                    auto r = co_await goro::select(goro::send(out, v), c.done());
                    if (r.index() == 1) break;
                    mine.push_back(v);
                }
                {
                    std::lock_guard<std::mutex> lk(m);
                    log.insert(log.end(), mine.begin(), mine.end());
                }
                ex.fetch_add(1);  // last: the test ends the round (and the mutex) when all have counted
            }(ctx, ch, p, mu, sent, exited));
        for (int q = 0; q < 8; ++q)
            goro::go([](goro::context c, goro::channel<int> in, std::mutex& m, std::vector<int>& log,
                        std::atomic<int>& ex) -> goro::task<> {
                std::vector<int> mine;
                for (;;) {
                    auto r = co_await goro::select(goro::recv(in), c.done());
                    if (r.index() == 1) break;
                    mine.push_back(*r.get<0>());
                }
                {
                    std::lock_guard<std::mutex> lk(m);
                    log.insert(log.end(), mine.begin(), mine.end());
                }
                ex.fetch_add(1);  // last: the test ends the round (and the mutex) when all have counted
            }(ctx, ch, mu, received, exited));
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
        cancel();
        REQUIRE(eventually([&] { return exited.load() == 16; }, std::chrono::seconds(120)));
        while (auto r = ch.try_recv()) received.push_back(*r.value);  // what stayed buffered
        std::sort(sent.begin(), sent.end());
        std::sort(received.begin(), received.end());
        CHECK(std::adjacent_find(received.begin(), received.end()) == received.end());
        CHECK(received == sent);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("a timed context's timer outlives its wake-up: 3,000 short timeouts awaited", "[context][stress]") {
    // The timer thread cancels the node (waking the task, which drops every
    // handle at once) and only then drops the timer's reference: the node must
    // stay alive until then, whichever thread lets go last.
    const auto tasks_before = goro::num_goroutines();
    auto body = []() -> goro::task<int> {
        int expired = 0;
        for (int i = 0; i < 3000; ++i) {
            auto [ctx, cancel] = goro::with_timeout(goro::background(), 50us);
            co_await ctx.done();
            if (ctx.err() == goro::context_error::deadline_exceeded) ++expired;
        }
        co_return expired;
    };
    CHECK(goro::block_on(body()) == 3000);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("err() is seen only with done closed and the children cancelled, and done only with err", "[context][stress]") {
    // Go's contract: while Done is open Err is nil; once Err is non-nil Done
    // is closed, and a cancelled parent's children are cancelled too. One
    // thread spins on the parent's err(), another on its done(); on odd
    // rounds the second first cancels the child itself, racing the parent's
    // cancel down the same subtree.
    const int rounds = 20'000;
    struct round_state {
        goro::context parent, child, grandchild, value;
        goro::cancel_func cancel_child;
    };
    round_state st;
    std::atomic<int> started{-1}, err_seen{-1}, done_seen{-1};
    std::atomic<long> err_without_done{0}, err_without_child{0}, done_without_err{0};
    auto wait_for = [](std::atomic<int>& a, int round) {
        while (a.load(std::memory_order_acquire) != round) std::this_thread::yield();
    };
    std::thread err_watcher([&] {
        for (int r = 0; r < rounds; ++r) {
            wait_for(started, r);
            while (st.parent.err() == goro::context_error::none) std::this_thread::yield();
            if (!done_now(st.parent)) ++err_without_done;
            if (st.child.err() == goro::context_error::none || !done_now(st.child) ||
                st.grandchild.err() == goro::context_error::none || !done_now(st.grandchild) ||
                st.value.err() == goro::context_error::none)
                ++err_without_child;
            err_seen.store(r, std::memory_order_release);
        }
    });
    std::thread done_watcher([&] {
        for (int r = 0; r < rounds; ++r) {
            wait_for(started, r);
            if (r % 2) st.cancel_child();
            while (!done_now(st.parent)) std::this_thread::yield();
            if (st.parent.err() == goro::context_error::none) ++done_without_err;
            done_seen.store(r, std::memory_order_release);
        }
    });
    for (int r = 0; r < rounds; ++r) {
        auto [parent, cancel] = goro::with_cancel(goro::background());
        auto [child, cancel_child] = goro::with_cancel(parent);
        auto [grandchild, cg] = goro::with_timeout(child, 1h);
        st.parent = parent;
        st.child = child;
        st.grandchild = grandchild;
        st.value = goro::with_value(grandchild, depth_key, r);
        st.cancel_child = cancel_child;
        started.store(r, std::memory_order_release);
        cancel();
        wait_for(err_seen, r);
        wait_for(done_seen, r);
        st = round_state{};
        (void)cg;
    }
    err_watcher.join();
    done_watcher.join();
    CHECK(err_without_done.load() == 0);
    CHECK(err_without_child.load() == 0);
    CHECK(done_without_err.load() == 0);
}

}  // namespace tests_context
