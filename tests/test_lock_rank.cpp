// goro/core/lock_rank.hpp: every lock of the library has its rank; with checking
// on, locks taken in rank order (and one rank in address order) pass, and a
// lock taken out of order aborts the process naming both locks.
#include <catch2/catch.hpp>

#include <mutex>
#include <string>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <goro/goro.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_lock_rank {

namespace {

using goro::detail::lock_rank;
using goro::detail::ranked_lock;
using goro::detail::spinlock;

struct child_result {
    bool aborted = false;
    std::string err;
};

/// Runs `f` in a forked child with stderr captured; reports whether the
/// child died of SIGABRT, and what it printed.
template <class F>
child_result run_in_child(F f) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[0]);
        ::dup2(fds[1], 2);
        rlimit no_core{0, 0};
        ::setrlimit(RLIMIT_CORE, &no_core);
        ::signal(SIGABRT, SIG_DFL);  // Catch2's handler would report the abort as this test's failure
        f();
        ::_exit(0);
    }
    ::close(fds[1]);
    child_result r;
    char buf[512];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) r.err.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    r.aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
    return r;
}

}  // namespace

TEST_CASE("every lock of the library has its rank", "[lock_rank]") {
    using goro::detail::chan_base;
    STATIC_REQUIRE(decltype(chan_base::lock)::rank == lock_rank::channel);
    STATIC_REQUIRE(decltype(goro::detail::registry_shard::lock)::rank == lock_rank::registry_shard);
    STATIC_REQUIRE(decltype(goro::detail::cancel_node::mu)::rank == lock_rank::context);
    STATIC_REQUIRE(decltype(goro::detail::pool_depot::lock)::rank == lock_rank::frame_pool);
    STATIC_REQUIRE(decltype(goro::detail::pool_holder::mu)::rank == lock_rank::pool_holder);
    STATIC_REQUIRE(decltype(goro::detail::deadlock_watch::mu)::rank == lock_rank::deadlock_watch);
    // Ranks are distinct and named.
    CHECK(std::string(to_string(lock_rank::channel)) == "channel");
    CHECK(std::string(to_string(lock_rank::registry_shard)) == "registry shard");
}

#ifndef NDEBUG
TEST_CASE("a build without NDEBUG checks lock ranks", "[lock_rank]") {
    // The test builds (meson's debugoptimized does not define NDEBUG) run the
    // whole suite with checking on.
    STATIC_REQUIRE(GORO_LOCK_RANK_CHECK == 1);
}
#endif

#if GORO_LOCK_RANK_CHECK
TEST_CASE("locks taken in rank order, and one rank in address order, pass the check", "[lock_rank]") {
    ranked_lock<spinlock, lock_rank::registry_shard> shard[2];
    ranked_lock<spinlock, lock_rank::channel> chan;
    ranked_lock<std::mutex, lock_rank::timer> timer;
    {
        std::lock_guard a(shard[0]);
        std::lock_guard b(shard[1]);  // same rank, higher address
        std::lock_guard c(chan);
        std::lock_guard d(timer);
        CHECK(goro::detail::tls_held_locks.n == 4);
    }
    CHECK(goro::detail::tls_held_locks.n == 0);
    // Released out of order, then taken again.
    shard[0].lock();
    chan.lock();
    shard[0].unlock();
    CHECK(goro::detail::tls_held_locks.n == 1);
    chan.unlock();
    // try_lock never waits: it may go against the order.
    chan.lock();
    REQUIRE(shard[0].try_lock());
    shard[0].unlock();
    chan.unlock();
    CHECK(goro::detail::tls_held_locks.n == 0);
}

TEST_CASE("a lock taken out of rank order aborts, naming both locks", "[lock_rank]") {
    auto r = run_in_child([] {
        ranked_lock<spinlock, lock_rank::channel> chan;
        ranked_lock<spinlock, lock_rank::registry_shard> shard;
        chan.lock();
        shard.lock();  // a registry shard under a channel: aborts
    });
    INFO(r.err);
    CHECK(r.aborted);
    CHECK(r.err.find("lock order violated") != std::string::npos);
    CHECK(r.err.find("taking the registry shard lock") != std::string::npos);
    CHECK(r.err.find("holding the channel lock") != std::string::npos);
}

TEST_CASE("locks of one rank taken against address order abort", "[lock_rank]") {
    auto r = run_in_child([] {
        ranked_lock<spinlock, lock_rank::channel> chans[2];
        chans[1].lock();
        chans[0].lock();
    });
    INFO(r.err);
    CHECK(r.aborted);
    CHECK(r.err.find("taking the channel lock") != std::string::npos);
    CHECK(r.err.find("holding the channel lock") != std::string::npos);
}

TEST_CASE("the library's own locks are checked: closing a channel under a held timer lock aborts", "[lock_rank]") {
    auto r = run_in_child([] {
        goro::channel<int> ch(1);
        ranked_lock<std::mutex, lock_rank::timer> timer;
        std::lock_guard g(timer);
        ch.close();  // takes the channel's lock, ranked below the timer's
    });
    INFO(r.err);
    CHECK(r.aborted);
    CHECK(r.err.find("taking the channel lock") != std::string::npos);
    CHECK(r.err.find("holding the timer lock") != std::string::npos);
}
#endif

}  // namespace tests_lock_rank
