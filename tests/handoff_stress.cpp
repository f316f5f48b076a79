// The handoff of a stuck worker with ONE worker (meson runs it with
// GORO_MAXPROCS=1; without that variable it sets one): the case where a
// task that never suspends used to hang every other task forever.
//
//   1. A task loops send(1); recv() on a channel of capacity 1 for ~2 s (it
//      never parks). A task sleeping 10 ms must wake before the loop ends
//      (Go wakes it after ~15 ms). Its lateness is printed.
//   2. Three tasks block in a plain read() on pipes (nothing wraps it): a
//      100 ms heartbeat must keep beating (worst lateness printed; the
//      bound is generous, 1 s, where without the handoff it is forever).
//
// Its own program, because the pool must have one worker from the start.
// Exits 0 on success, 1 with a message on failure.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <goro/core.hpp>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

int failures = 0;

void check(bool ok, const std::string& what) {
    if (ok) return;
    std::fprintf(stderr, "handoff_stress: FAILED: %s\n", what.c_str());
    ++failures;
}

double ms(clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

goro::task<> never_parks(std::chrono::milliseconds how_long, std::atomic<bool>& started,
                         std::atomic<bool>& ended, std::atomic<long>& rounds) {
    goro::channel<int> ch(1);
    started.store(true);
    const auto end = clock_type::now() + how_long;
    long n = 0;
    while (clock_type::now() < end) {
        co_await ch.send(1);
        (void)co_await ch.recv();
        ++n;
    }
    rounds.store(n);
    ended.store(true);
}

goro::task<> sleeper(std::atomic<bool>& loop_ended, bool& woke_before_end, clock_type::duration& late) {
    const auto due = clock_type::now() + 10ms;
    co_await goro::sleep_for(10ms);
    late = clock_type::now() - due;
    woke_before_end = !loop_ended.load();
}

void channel_loop_does_not_starve_a_sleeper() {
    std::atomic<bool> started{false}, ended{false};
    std::atomic<long> rounds{0};
    goro::go(never_parks(2000ms, started, ended, rounds));
    while (!started.load()) std::this_thread::sleep_for(1ms);
    bool woke_before_end = false;
    clock_type::duration late{};
    goro::block_on(sleeper(ended, woke_before_end, late));
    std::printf("handoff_stress: a 10 ms sleeper woke %.1f ms late beside a task that never parks (GORO_MAXPROCS=%u)\n",
                ms(late), goro::max_procs());
    check(woke_before_end, "the sleeper woke only after the never-parking loop ended (no handoff)");
    while (!ended.load()) std::this_thread::sleep_for(1ms);
    check(rounds.load() > 0, "the loop made no round");
}

goro::task<> plain_reader(int fd, std::atomic<int>& entered, std::atomic<int>& got) {
    entered.fetch_add(1);
    char c = 0;
    if (::read(fd, &c, 1) == 1) got.fetch_add(1);
    co_return;
}

goro::task<clock_type::duration> heartbeat(int beats) {
    auto next = clock_type::now();
    clock_type::duration worst{};
    for (int i = 0; i < beats; ++i) {
        next += 100ms;
        co_await goro::sleep_until(next);
        worst = std::max(worst, clock_type::now() - next);
    }
    co_return worst;
}

void plain_reads_do_not_stop_a_heartbeat() {
    constexpr int readers = 3;
    int rd[readers], wr[readers];
    for (int i = 0; i < readers; ++i) {
        int p[2];
        if (::pipe(p) != 0) {
            check(false, "pipe()");
            return;
        }
        rd[i] = p[0];
        wr[i] = p[1];
    }
    std::atomic<int> entered{0}, got{0};
    for (int i = 0; i < readers; ++i) goro::go(plain_reader(rd[i], entered, got));
    const auto deadline = clock_type::now() + 20s;
    while (entered.load() < readers && clock_type::now() < deadline) std::this_thread::sleep_for(1ms);
    check(entered.load() == readers, "not every reader started: a worker stuck in read() was not replaced");
    auto worst = goro::block_on(heartbeat(5));
    const auto stuck = goro::stuck_workers();
    std::printf("handoff_stress: 100 ms heartbeat worst lateness %.1f ms with %d tasks in a plain read() "
                "(stuck workers: %u, longest %.0f ms)\n",
                ms(worst), readers, stuck.count, ms(stuck.longest));
    check(worst < 1s, "the heartbeat was more than 1 s late");
    check(stuck.count == readers, "stuck_workers() does not count the readers' workers");
    for (int i = 0; i < readers; ++i) check(::write(wr[i], "x", 1) == 1, "write()");
    const auto end = clock_type::now() + 20s;
    while (got.load() < readers && clock_type::now() < end) std::this_thread::sleep_for(1ms);
    check(got.load() == readers, "a reader did not finish");
    while (goro::num_goroutines() > 0 && clock_type::now() < end) std::this_thread::sleep_for(1ms);
    check(goro::num_goroutines() == 0, "tasks left behind");
    for (int i = 0; i < readers; ++i) {
        ::close(rd[i]);
        ::close(wr[i]);
    }
}

}  // namespace

int main() {
    if (!std::getenv("GORO_MAXPROCS")) goro::set_max_procs(1);
    channel_loop_does_not_starve_a_sleeper();
    plain_reads_do_not_stop_a_heartbeat();
    if (failures) return 1;
    std::printf("handoff_stress: ok\n");
    return 0;
}
