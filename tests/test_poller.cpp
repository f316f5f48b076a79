// goro/io/poller.hpp: wait_readable / wait_writable on descriptors the caller
// owns (a pipe), cancellation, bad descriptors, and what the deadlock
// detector makes of a task parked in IO wait.
#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <goro/goro.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_poller {

using namespace std::chrono_literals;
using goro_test::eventually;
using goro_test::parked_reasons;

namespace {

struct pipe_fds {
    int r = -1, w = -1;
    pipe_fds() {
        int p[2];
        REQUIRE(::pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
        r = p[0];
        w = p[1];
    }
    ~pipe_fds() {
        if (r >= 0) ::close(r);
        if (w >= 0) ::close(w);
    }
};

goro::task<> read_when_ready(int fd, std::string& out, goro::wait_group& wg) {
    for (;;) {
        co_await goro::wait_readable(fd);
        char buf[64];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            out.append(buf, static_cast<std::size_t>(n));
            if (out.size() >= 5) break;
        } else if (n == 0) {
            break;
        }
        // n < 0: EAGAIN after a spurious readiness: wait again
    }
    wg.done();
}

}  // namespace

TEST_CASE("poller: wait_readable on a pipe parks in IO wait until a plain thread writes", "[poller]") {
    pipe_fds p;
    std::string got;
    goro::wait_group wg;
    wg.add(1);
    goro::go(read_when_ready(p.r, got, wg), {.name = "pipe_reader"});
    REQUIRE(eventually([&] { return parked_reasons("pipe_reader") == std::vector<std::string>{"IO wait"}; }));
    std::atomic<long> wrote{0};  // Catch2's assertions are for the main thread only
    std::thread writer([&] {
        wrote += ::write(p.w, "hel", 3);
        std::this_thread::sleep_for(5ms);
        wrote += ::write(p.w, "lo", 2);
    });
    goro::block_on(wg.wait());
    writer.join();
    CHECK(wrote.load() == 5);
    CHECK(got == "hello");
}

TEST_CASE("poller: wait_readable returns at once when data is there; the fd's flags are untouched", "[poller]") {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);  // blocking: the caller's choice, left as it is
    REQUIRE(::write(p[1], "x", 1) == 1);
    goro::block_on(goro::wait_readable(p[0]));
    goro::block_on(goro::wait_writable(p[1]));
    CHECK((::fcntl(p[0], F_GETFL) & O_NONBLOCK) == 0);
    CHECK((::fcntl(p[1], F_GETFL) & O_NONBLOCK) == 0);
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("poller: wait_writable on a full pipe wakes when a reader drains it", "[poller]") {
    pipe_fds p;
    char chunk[4096] = {};
    std::size_t filled = 0;
    while (::write(p.w, chunk, sizeof chunk) > 0) filled += sizeof chunk;  // until EAGAIN
    REQUIRE(errno == EAGAIN);
    std::atomic<bool> woke{false};
    goro::wait_group wg;
    wg.add(1);
    goro::go([](int fd, std::atomic<bool>& w, goro::wait_group& g) -> goro::task<> {
        co_await goro::wait_writable(fd);
        w = true;
        g.done();
    }(p.w, woke, wg), {.name = "pipe_writer"});
    REQUIRE(eventually([&] { return parked_reasons("pipe_writer").size() == 1; }));
    CHECK(!woke.load());
    std::vector<char> sink(filled);
    std::size_t drained = 0;
    while (drained < filled) {
        ssize_t n = ::read(p.r, sink.data(), sink.size());
        if (n <= 0) break;
        drained += static_cast<std::size_t>(n);
    }
    goro::block_on(wg.wait());
    CHECK(woke.load());
}

TEST_CASE("poller: a context cancels wait_readable; a bad fd is EBADF naming the op", "[poller]") {
    pipe_fds p;
    goro::block_on([](int fd) -> goro::task<> {
        auto [ctx, cancel] = goro::with_timeout(goro::background(), 10ms);
        try {
            co_await goro::wait_readable(fd, ctx);
            FAIL("returned");
        } catch (const goro::io_error& e) {
            CHECK(e.code() == goro::io_errc::deadline_exceeded);
            CHECK(std::string(e.what()) == "goro::wait_readable: context deadline exceeded");
        }
        auto [ctx2, cancel2] = goro::with_cancel(goro::background());
        cancel2();
        std::string w;
        try {
            co_await goro::wait_readable(fd, ctx2);
        } catch (const goro::io_error& e) {
            w = e.what();
        }
        CHECK(w == "goro::wait_readable: context canceled");
    }(p.r));
    int closed_fd = ::dup(p.r);
    ::close(closed_fd);
    try {
        goro::block_on(goro::wait_readable(closed_fd));
        FAIL("returned");
    } catch (const goro::io_error& e) {
        CHECK(e.code() == std::errc::bad_file_descriptor);
        CHECK_THAT(e.what(), Catch::StartsWith("goro::wait_readable"));
    }
}

TEST_CASE("poller: many tasks wait on one pipe at once; each is woken", "[poller]") {
    pipe_fds p;
    constexpr int n = 50;
    std::atomic<int> woke{0};
    goro::wait_group wg;
    for (int i = 0; i < n; ++i) {
        wg.add(1);
        goro::go([](int fd, std::atomic<int>& w, goro::wait_group& g) -> goro::task<> {
            co_await goro::wait_readable(fd);
            w.fetch_add(1);
            g.done();
        }(p.r, woke, wg), {.name = "pipe_many"});
    }
    REQUIRE(eventually([&] { return parked_reasons("pipe_many").size() == n; }));
    REQUIRE(::write(p.w, "!", 1) == 1);
    goro::block_on(wg.wait());
    CHECK(woke.load() == n);
}

TEST_CASE("poller: block_on waiting on a task in IO wait is not a deadlock", "[poller]") {
    goro::set_deadlock_grace(50ms);
    pipe_fds p;
    std::atomic<long> wrote{0};
    std::thread late([&] {
        std::this_thread::sleep_for(300ms);  // well past the grace period
        wrote = ::write(p.w, "z", 1);
    });
    bool threw = false;
    try {
        goro::block_on(goro::wait_readable(p.r));
    } catch (const goro::deadlock_error&) {
        threw = true;
    }
    late.join();
    CHECK(!threw);
    CHECK(wrote.load() == 1);
    goro::set_deadlock_grace(1s);
}

}  // namespace tests_poller
