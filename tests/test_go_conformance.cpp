// Go's own conformance programs for channels and select, ported: the tests of
// runtime/chan_test.go that apply to goro, and test/chan/*.go. Each TEST_CASE
// is named after the Go test or program it ports. Sizes are bounded so that
// the whole file runs in seconds under TSan on a busy machine; Go's sleeps
// ("make sure A is queued first") are replaced by waiting for the task to be
// seen parked.
#include <catch2/catch.hpp>

#include <atomic>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <goro/sync/channel.hpp>
#include <goro/sync/context.hpp>
#include <goro/sync/select.hpp>
#include <goro/sync/wait_group.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_go_conformance {

using namespace std::chrono_literals;
using goro_test::eventually;

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

// --- runtime/chan_test.go ----------------------------------------------------

TEST_CASE("TestPseudoRandomSend: two send cases on one channel each win about half the time", "[go_conformance]") {
    // A parked select with both cases on one channel must not always
    // complete through its first case (Go: "permute cases on the same channel").
    const auto tasks_before = goro::num_goroutines();
    const int n = 100;
    for (std::size_t cap : {std::size_t(0), std::size_t(n)}) {
        goro::channel<int> c(cap);
        std::vector<int> l(n, -1);
        goro::channel<std::monostate> finished;
        goro::go([](goro::channel<int> ch, std::vector<int>& out, goro::channel<std::monostate> fin) -> goro::task<> {
            for (auto& x : out) {
                co_await goro::yield();
                x = *co_await ch.recv();
            }
            fin.close();
        }(c, l, finished));
        auto sender = [](goro::channel<int> ch, int k) -> goro::task<> {
            for (int i = 0; i < k; ++i) (void)co_await goro::select(goro::send(ch, 1), goro::send(ch, 0));
        };
        goro::block_on(sender(c, n));
        goro::block_on(finished.recv());
        int n0 = 0, n1 = 0;
        for (int x : l) {
            n0 += (x + 1) % 2;
            n1 += x;
        }
        INFO("chan cap " << cap << ": " << n0 << " zeros, " << n1 << " ones");
        CHECK(n0 > n / 10);
        CHECK(n1 > n / 10);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("TestMultiConsumer: 23 workers ranging over one queue lose and invent nothing", "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    const int nwork = 23, niter = 20000;
    static constexpr int pn[] = {2, 3, 7, 11, 13, 17, 19, 23, 27, 31};
    goro::channel<int> q(nwork * 3), r(nwork * 3);
    goro::wait_group wg;
    for (int i = 0; i < nwork; ++i) {
        wg.add(1);
        goro::go([](int w, goro::recv_only<int> in, goro::send_only<int> out, goro::wait_group& g) -> goro::task<> {
            while (auto v = co_await in.recv()) {
                if (pn[w % 10] == *v) co_await goro::yield();  // mess with the FIFO-ish nature of range
                co_await out.send(*v);
            }
            g.done();
        }(i, q, r, wg));
    }
    std::atomic<long> expect{0};
    goro::go([](goro::channel<int> in, goro::channel<int> out, goro::wait_group& g, std::atomic<long>& e,
                int k) -> goro::task<> {
        long sum = 0;
        for (int i = 0; i < k; ++i) {
            sum += pn[i % 10];
            co_await in.send(pn[i % 10]);
        }
        e.store(sum);
        in.close();          // no more work
        co_await g.wait();   // workers done
        out.close();         // so there can be no more results
    }(q, r, wg, expect, niter));
    auto consume = [](goro::recv_only<int> in) -> goro::task<std::pair<int, long>> {
        int n = 0;
        long s = 0;
        while (auto v = co_await in.recv()) {
            ++n;
            s += *v;
        }
        co_return std::pair<int, long>{n, s};
    };
    auto [n, s] = goro::block_on(consume(r));
    CHECK(n == niter);
    CHECK(s == expect.load());
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("TestSelectDuplicateChannel: a select queued twice on one channel leaves it sound", "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<int> c, d, e;
    // goroutine A: two cases on c, one on d.
    goro::go([](goro::channel<int> c, goro::channel<int> d, goro::channel<int> e) -> goro::task<> {
        (void)co_await goro::select(goro::recv(c), goro::recv(c), goro::recv(d));
        co_await e.send(9);
    }(c, d, e));
    REQUIRE(eventually([] { return parked_with_reason("select") >= 1; }));  // A is queued first on c
    // goroutine B
    goro::go([](goro::channel<int> c) -> goro::task<> { (void)co_await c.recv(); }(c));
    REQUIRE(eventually([] { return parked_with_reason("chan receive") >= 1; }));  // B is queued on c
    auto main_part = [](goro::channel<int> c, goro::channel<int> d, goro::channel<int> e) -> goro::task<int> {
        co_await d.send(7);         // wakes A, which dequeues itself from c
        int got = *co_await e.recv();  // A tells us it's done
        co_await c.send(8);         // wakes B (not A again)
        co_return got;
    };
    CHECK(goro::block_on(main_part(c, d, e)) == 9);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("TestNonblockRecvRace: a buffered value is ready for a non-blocking receive racing with close",
          "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    std::atomic<int> not_ready{0};
    goro::wait_group wg;
    for (int i = 0; i < 1000; ++i) {
        goro::channel<int> c(1);
        (void)c.try_send(1);
        wg.add(1);
        goro::go([](goro::channel<int> ch, std::atomic<int>& bad, goro::wait_group& g) -> goro::task<> {
            if (goro::try_select(goro::recv(ch)).index() == goro::select_default) bad.fetch_add(1);
            g.done();
            co_return;
        }(c, not_ready, wg));
        c.close();
        (void)c.try_recv();
    }
    goro::block_on(wg.wait());
    CHECK(not_ready.load() == 0);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("TestNonblockSelectRace: a non-blocking select sees one of two channels ready", "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    goro::channel<bool> done(1);
    int failures = 0;
    for (int i = 0; i < 2000; ++i) {
        goro::channel<int> c1(1), c2(1);
        (void)c1.try_send(1);
        goro::go([](goro::channel<int> a, goro::channel<int> b, goro::channel<bool> d) -> goro::task<> {
            auto r = goro::try_select(goro::recv(a), goro::recv(b));
            co_await d.send(r.index() != goro::select_default);
        }(c1, c2, done));
        (void)c2.try_send(1);
        (void)goro::try_select(goro::recv(c1));
        failures += !*goro::block_on(done.recv());
    }
    CHECK(failures == 0);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("TestSelfSelect: send and receive on one channel in one select never receive their own value",
          "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    for (std::size_t cap : {std::size_t(0), std::size_t(10)}) {
        goro::wait_group wg;
        wg.add(2);
        goro::channel<int> c(cap);
        std::atomic<int> self_receives{0};
        for (int p = 0; p < 2; ++p)
            goro::go([](int p, std::size_t cap, goro::channel<int> c, std::atomic<int>& bad,
                        goro::wait_group& g) -> goro::task<> {
                for (int i = 0; i < 1000; ++i) {
                    if (p == 0 || i % 2 == 0) {
                        auto r = co_await goro::select(goro::send(c, p), goro::recv(c));
                        if (r.index() == 1 && cap == 0 && r.value<1>() == p) bad.fetch_add(1);
                    } else {
                        auto r = co_await goro::select(goro::recv(c), goro::send(c, p));
                        if (r.index() == 0 && cap == 0 && r.value<0>() == p) bad.fetch_add(1);
                    }
                }
                g.done();
            }(p, cap, c, self_receives, wg));
        goro::block_on(wg.wait());
        CHECK(self_receives.load() == 0);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

// --- test/chan/*.go ----------------------------------------------------------

namespace {

goro::task<> chain(goro::recv_only<int> ch, int val, goro::recv_only<int> in, goro::send_only<int> out,
                   std::atomic<int>& bad) {
    (void)co_await in.recv();
    // Not `if (*co_await ch.recv() != val)`: g++ 12 miscompiles a co_await in
    // an if condition without a declaration (the frame is resumed corrupted),
    // as it does `while (co_await x)` (see the README).
    auto v = co_await ch.recv();
    if (*v != val) bad.fetch_add(1);
    co_await out.send(1);
}

goro::task<> sender4(int n, goro::send_only<int> c1, goro::send_only<int> c2, goro::send_only<int> c3,
                     goro::send_only<int> c4) {
    for (int i = 0; i < n; ++i)
        (void)co_await goro::select(goro::send(c1, i), goro::send(c2, i), goro::send(c3, i), goro::send(c4, i));
    c1.close();
    c2.close();
    c3.close();
    c4.close();
}

goro::task<> mux(goro::send_only<int> out, goro::recv_only<int> in, goro::send_only<bool> done) {
    while (auto v = co_await in.recv()) co_await out.send(*v);
    co_await done.send(true);
}

// sieve1.go, with a context so that the endless generators stop at the end.
goro::task<> generate(goro::recv_only<std::monostate> stop, goro::send_only<int> ch) {
    for (int i = 2;; ++i) {
        auto r = co_await goro::select(goro::send(ch, i), stop);
        if (r.index() == 1) co_return;
    }
}

goro::task<> filter(goro::recv_only<std::monostate> stop, goro::recv_only<int> in, goro::send_only<int> out,
                    int prime) {
    for (;;) {
        auto r = co_await goro::select(goro::recv(in), stop);
        if (r.index() == 1) co_return;
        int i = r.value<0>();
        if (i % prime != 0) {
            auto s = co_await goro::select(goro::send(out, i), stop);
            if (s.index() == 1) co_return;
        }
    }
}

}  // namespace

TEST_CASE("fifo.go: AsynchFifo and SynchFifo keep FIFO order", "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    const int n = 200;
    // AsynchFifo
    goro::channel<int> ach(n);
    for (int i = 0; i < n; ++i) REQUIRE(ach.try_send(i) == goro::send_status::sent);
    for (int i = 0; i < n; ++i) REQUIRE(*ach.try_recv().value == i);
    // SynchFifo: a daisy chain of tasks reads the elements in sequence.
    std::atomic<int> bad{0};
    goro::channel<int> ch, in;
    goro::channel<int> start = in;
    for (int i = 0; i < n; ++i) {
        goro::channel<int> out;
        goro::go(chain(ch, i, in, out, bad));
        in = out;
    }
    auto synch = [](int count, goro::channel<int> st, goro::channel<int> c, goro::channel<int> last) -> goro::task<> {
        co_await st.send(0);
        for (int i = 0; i < count; ++i) co_await c.send(i);
        (void)co_await last.recv();
    };
    goro::block_on(synch(n, start, ch, in));
    CHECK(bad.load() == 0);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("doubleselect.go: values sent through a four-way select and four muxes arrive once each",
          "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    const int iterations = 5000;
    goro::channel<int> c1, c2, c3, c4, cmux;
    goro::channel<bool> done;
    goro::go(sender4(iterations, c1, c2, c3, c4));
    goro::go(mux(cmux, c1, done));
    goro::go(mux(cmux, c2, done));
    goro::go(mux(cmux, c3, done));
    goro::go(mux(cmux, c4, done));
    goro::go([](goro::recv_only<bool> d, goro::channel<int> m) -> goro::task<> {
        for (int i = 0; i < 4; ++i) (void)co_await d.recv();
        m.close();
    }(done, cmux));
    auto recver = [](goro::recv_only<int> in) -> goro::task<std::pair<int, int>> {
        std::set<int> seen;
        int dups = 0;
        while (auto v = co_await in.recv()) dups += !seen.insert(*v).second;
        co_return std::pair<int, int>{int(seen.size()), dups};
    };
    auto [distinct, dups] = goro::block_on(recver(cmux));
    CHECK(dups == 0);
    CHECK(distinct == iterations);
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("sieve1.go: the concurrent prime sieve yields the first 100 primes", "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    auto [ctx, cancel] = goro::with_cancel(goro::background());
    // Sieve's loop runs on this thread (sieve1.go's main), spawning each filter from here.
    goro::channel<int> ch;
    goro::go(generate(ctx.done(), ch));
    std::vector<int> got;
    for (int k = 0; k < 100; ++k) {
        auto next = [](goro::recv_only<int> c) -> goro::task<int> { co_return *co_await c.recv(); };
        int prime = goro::block_on(next(ch));
        got.push_back(prime);
        goro::channel<int> ch1;
        goro::go(filter(ctx.done(), ch, ch1, prime));
        ch = ch1;
    }
    std::vector<int> want;
    for (int i = 2; int(want.size()) < 100; ++i) {
        bool prime = true;
        for (int p : want) prime = prime && i % p != 0;
        if (prime) want.push_back(i);
    }
    CHECK(got == want);
    cancel();  // every generator and filter stops: ctx.done() is a case in each of their selects
    CHECK(goro_test::tasks_drained(tasks_before));
}

TEST_CASE("nonblock.go: non-blocking sends and receives on unbuffered and buffered channels", "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    for (std::size_t cap : {std::size_t(0), std::size_t(1), std::size_t(10)}) {
        goro::channel<int> c(cap);
        // Nothing to receive, and (unbuffered) nobody to send to.
        CHECK(c.try_recv().status == goro::recv_status::empty);
        if (cap == 0) CHECK(c.try_send(1) == goro::send_status::full);
        // A parked receiver makes a non-blocking send succeed; a parked sender a non-blocking receive.
        std::atomic<int> got{-1};
        goro::go([](goro::recv_only<int> r, std::atomic<int>& g) -> goro::task<> { g.store(*co_await r.recv()); }(c, got));
        if (cap == 0) {
            REQUIRE(eventually([&] { return c.try_send(7) == goro::send_status::sent; }));
        } else {
            CHECK(c.try_send(7) == goro::send_status::sent);
        }
        REQUIRE(eventually([&] { return got.load() == 7; }));
        goro::go([](goro::send_only<int> s) -> goro::task<> { co_await s.send(8); }(c));
        std::optional<int> v;
        REQUIRE(eventually([&] {
            auto r = c.try_recv();
            if (r) v = r.value;
            return bool(r);
        }));
        CHECK(v == 8);
    }
    CHECK(goro_test::tasks_drained(tasks_before));
}

// --- context/context_test.go, sync/waitgroup_test.go --------------------------

TEST_CASE("context_test.go TestWithCancel: cancelling a parent closes every child's done channel",
          "[go_conformance]") {
    auto [c1, cancel] = goro::with_cancel(goro::background());
    auto [c2, cancel2] = goro::with_cancel(c1);
    static const goro::context_key<int> key{"key"};
    auto c3 = goro::with_value(c2, key, 1);
    goro::context contexts[] = {c1, c2, c3};
    for (auto& c : contexts) {
        CHECK(c.err() == goro::context_error::none);
        CHECK(goro::try_select(c.done()).index() == goro::select_default);
    }
    cancel();
    for (auto& c : contexts) {
        CHECK(c.err() == goro::context_error::canceled);
        CHECK(goro::try_select(c.done()).index() == 0);  // err() set means done() closed
        CHECK(c.done().try_recv().status == goro::recv_status::closed);
    }
    (void)cancel2;
}

TEST_CASE("waitgroup_test.go TestWaitGroup: two groups handed back and forth, n tasks", "[go_conformance]") {
    const auto tasks_before = goro::num_goroutines();
    const int n = 16;
    goro::wait_group wg1, wg2;
    wg1.add(n);
    wg2.add(n);
    std::atomic<int> exited{0};
    for (int i = 0; i != n; ++i)
        goro::go([](goro::wait_group& a, goro::wait_group& b, std::atomic<int>& e) -> goro::task<> {
            a.done();
            co_await b.wait();
            e.fetch_add(1);
        }(wg1, wg2, exited));
    goro::block_on(wg1.wait());
    CHECK(exited.load() == 0);  // wg2 is still at n: nobody can have passed it
    for (int i = 0; i != n; ++i) wg2.done();
    CHECK(eventually([&] { return exited.load() == n; }));
    CHECK(goro_test::tasks_drained(tasks_before));
}

}  // namespace tests_go_conformance
