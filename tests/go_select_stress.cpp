// Go's TestSelectStress (runtime/chan_test.go), in goro: ten tasks on ten
// workers hammer four channels (two unbuffered, buffers of 2 and 3). For each
// channel one task sends N values and one receives N; one more task sends N
// values on each channel through a single four-case select, and one receives
// N from each through another. A case whose channel has had its N values is
// turned off by making its channel nil, as Go does. Nothing may deadlock,
// and every value sent must be received exactly once.
//
// Its own program, because the pool must have ten workers from the start
// (meson runs it with GORO_MAXPROCS=10; without that variable it sets ten).
// It is a stress test: it found a task run on two workers at once under
// ThreadSanitizer, so CI runs it a few times in the sanitizer builds.
//
//   go_select_stress [N [ROUNDS]]   N values per channel and sender (default
//                                   10000), the whole test ROUNDS times (default 1)
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <goro/core.hpp>

namespace {

constexpr int nchan = 4;
using chans = std::array<goro::channel<int>, nchan>;

// Values carry their sender and channel, so the receivers' sums prove that
// each value arrived exactly once: plain senders send 1, the select sends 1000.
constexpr int plain_value = 1, select_value = 1000;

std::atomic<std::int64_t> received_sum[nchan];
std::atomic<std::int64_t> received_count[nchan];

void fail(const std::string& what) {
    std::fprintf(stderr, "go_select_stress: FAILED: %s\n", what.c_str());
    std::exit(1);
}

goro::task<> sender(goro::channel<int> c, int n, goro::wait_group& wg) {
    for (int i = 0; i < n; ++i) co_await c.send(plain_value);
    wg.done();
}

goro::task<> receiver(goro::channel<int> c, int k, int n, goro::wait_group& wg) {
    for (int i = 0; i < n; ++i) {
        auto v = co_await c.recv();
        if (!v) fail("receiver: channel closed");
        received_sum[k].fetch_add(*v, std::memory_order_relaxed);
        received_count[k].fetch_add(1, std::memory_order_relaxed);
    }
    wg.done();
}

// Sends n values on each channel through one select; a channel that has had
// its n is replaced by a nil channel, so its case never fires again.
goro::task<> select_sender(chans c, int n, goro::wait_group& wg) {
    int sent[nchan] = {};
    for (int i = 0; i < nchan * n; ++i) {
        // Go's case order: 3, 2, 0, 1.
        auto r = co_await goro::select(goro::send(c[3], select_value), goro::send(c[2], select_value),
                                       goro::send(c[0], select_value), goro::send(c[1], select_value));
        static constexpr int chan_of_case[nchan] = {3, 2, 0, 1};
        const int k = chan_of_case[r.index()];
        if (++sent[k] == n) c[k] = goro::channel<int>(nullptr);
    }
    wg.done();
}

goro::task<> select_receiver(chans c, int n, goro::wait_group& wg) {
    int got[nchan] = {};
    for (int i = 0; i < nchan * n; ++i) {
        auto r = co_await goro::select(goro::recv(c[0]), goro::recv(c[1]), goro::recv(c[2]), goro::recv(c[3]));
        const int k = static_cast<int>(r.index());
        int v = 0;
        switch (k) {
        case 0: if (!r.get<0>()) fail("select receiver: channel closed"); v = *r.get<0>(); break;
        case 1: if (!r.get<1>()) fail("select receiver: channel closed"); v = *r.get<1>(); break;
        case 2: if (!r.get<2>()) fail("select receiver: channel closed"); v = *r.get<2>(); break;
        default: if (!r.get<3>()) fail("select receiver: channel closed"); v = *r.get<3>(); break;
        }
        received_sum[k].fetch_add(v, std::memory_order_relaxed);
        received_count[k].fetch_add(1, std::memory_order_relaxed);
        if (++got[k] == n) c[k] = goro::channel<int>(nullptr);
    }
    wg.done();
}

void run_round(int n) {
    for (int k = 0; k < nchan; ++k) {
        received_sum[k].store(0);
        received_count[k].store(0);
    }
    const auto tasks_before = goro::num_goroutines();
    {
        chans c = {goro::channel<int>(), goro::channel<int>(), goro::channel<int>(std::size_t{2}),
                   goro::channel<int>(std::size_t{3})};
        goro::wait_group wg;
        wg.add(2 * nchan + 2);
        for (int k = 0; k < nchan; ++k) {
            goro::go(sender(c[k], n, wg));
            goro::go(receiver(c[k], k, n, wg));
        }
        goro::go(select_sender(c, n, wg));
        goro::go(select_receiver(c, n, wg));
        goro::block_on(wg.wait());
    }

    // Every value went through: each channel carried n plain values and n
    // from the select, all received once.
    for (int k = 0; k < nchan; ++k) {
        const std::int64_t count = received_count[k].load(), sum = received_sum[k].load();
        if (count != 2 * std::int64_t(n) || sum != std::int64_t(n) * (plain_value + select_value))
            fail("channel " + std::to_string(k) + ": received " + std::to_string(count) + " values summing to " +
                 std::to_string(sum) + ", want " + std::to_string(2 * n) + " summing to " +
                 std::to_string(std::int64_t(n) * (plain_value + select_value)));
    }
    // The tasks finish just after their last wg.done(): wait for that, generously.
    for (int i = 0; i < 60000 && goro::num_goroutines() != tasks_before; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (goro::num_goroutines() != tasks_before)
        fail(std::to_string(goro::num_goroutines() - tasks_before) + " tasks still alive at the end");
}

}  // namespace

int main(int argc, char** argv) {
    const int n = argc > 1 ? std::atoi(argv[1]) : 10000;
    const int rounds = argc > 2 ? std::atoi(argv[2]) : 1;
    if (n <= 0 || rounds <= 0) fail("N and ROUNDS must be positive");
    if (!std::getenv("GORO_MAXPROCS")) goro::set_max_procs(10);
    if (goro::max_procs() != 10)
        fail("the pool has " + std::to_string(goro::max_procs()) + " workers, not 10 (GORO_MAXPROCS?)");
    for (int r = 0; r < rounds; ++r) run_round(n);
    std::printf("go_select_stress: ok, %d rounds of %d values per channel and sender, 10 workers\n", rounds, n);
    return 0;
}
