// blocking_pread4k_tasks64: as the Go anchor's blockingRead(). 64 tasks each
// read 4 KiB at random offsets of a 16 MiB file in the page cache,
// o.n(200'000) reads in all; ns_per_op is wall time per read.
//
// Go's ReadAt on a regular file is a plain blocking pread (no netpoller),
// relying on sysmon to hand the P away if a call blocks long. The same work
// in goro, written as a Go programmer would, is a plain pread inside the
// task, relying on goro's handoff of a stuck worker (STUCK WORKERS,
// core/scheduler.hpp) the same way; that is the benchmark's number. The
// same reads wrapped in goro::blocking (each one a trip to a blocking thread
// and back) are measured too and printed as `blocking_ns_per_op`: the price
// of wrapping a call that does not actually block for long.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <goro/sync/wait_group.hpp>

#include "bench.hpp"

namespace {

constexpr std::int64_t file_size = 16 << 20;
constexpr std::int64_t block = 4096;
constexpr int tasks = 64;

std::uint64_t next_rand(std::uint64_t& s) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

void read_at(int fd, char* buf, std::int64_t off) {
    if (::pread(fd, buf, block, off) != block) {
        std::perror("blocking_pread4k_tasks64: pread");
        std::abort();
    }
}

goro::task<> reader(int fd, long reads, std::uint64_t seed, bool wrapped, goro::wait_group& wg) {
    std::vector<char> buf(block);
    std::uint64_t rng = 0x9E3779B97F4A7C15ull * (seed + 1);
    for (long i = 0; i < reads; ++i) {
        const std::int64_t off = static_cast<std::int64_t>(next_rand(rng) % (file_size / block)) * block;
        if (wrapped) co_await goro::blocking([&] { read_at(fd, buf.data(), off); });
        else read_at(fd, buf.data(), off);
    }
    wg.done();
}

goro::task<std::chrono::nanoseconds> run_readers(int fd, long per_task, bool wrapped) {
    goro::wait_group wg;
    wg.add(tasks);
    auto t0 = bench::clock::now();
    for (int w = 0; w < tasks; ++w) goro::go(reader(fd, per_task, static_cast<std::uint64_t>(w), wrapped, wg));
    co_await wg.wait();
    co_return std::chrono::nanoseconds(bench::clock::now() - t0);
}

void blocking_pread(const bench::options& o) {
    const long reads = o.n(200'000);
    const long per_task = reads / tasks;
    std::string path = "/tmp/goro-bench-blocking-XXXXXX";
    int fd = ::mkstemp(path.data());
    if (fd < 0) {
        std::perror("blocking_pread4k_tasks64: mkstemp");
        std::abort();
    }
    ::unlink(path.c_str());
    {
        std::vector<char> zeros(1 << 20);
        for (std::int64_t done = 0; done < file_size; done += static_cast<std::int64_t>(zeros.size()))
            if (::write(fd, zeros.data(), zeros.size()) != static_cast<ssize_t>(zeros.size())) {
                std::perror("blocking_pread4k_tasks64: write");
                std::abort();
            }
    }
    const auto wrapped = goro::block_on(run_readers(fd, per_task, true));
    const auto plain = goro::block_on(run_readers(fd, per_task, false));
    const double ops = static_cast<double>(per_task * tasks);
    bench::emit("blocking_pread4k_tasks64", per_task * tasks, plain,
                {{"blocking_ns_per_op", static_cast<double>(wrapped.count()) / ops}});
    ::close(fd);
}

}  // namespace

GORO_BENCH("blocking_pread4k_tasks64", blocking_pread);
