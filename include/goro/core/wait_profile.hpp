// goro/core/wait_profile.hpp — where tasks wait, and for how long: Go's block profile.
//
//   goro::set_wait_profile_rate(1);     // record every wait (Go's SetBlockProfileRate(1))
//   ...
//   auto entries = goro::wait_profile_entries();   // or /debug/pprof/block
//   goro::set_wait_profile_rate(0);     // off (the default)
//
// WHAT IS RECORDED. When a parked task is made runnable again (scheduler
// ready(), ready_n()), the wait it ends is added to the bucket of its stack
// (the sites of its frames, leaf first: the leaf is the co_await it waited
// at) and its wait reason ("chan receive", "select", ...): one more wait, its
// time added to the total, and to a histogram of 16 buckets (< 1 µs, then
// powers of 4 from 1 µs: < 4 µs, < 16 µs, ... , ≥ 268 s). A task that is
// cancelled or wakes some other way than ready() is not recorded.
//
// RATE: 0 is off; 1 records every wait; n > 1 records one wait in n (each
// thread counts its parks down from n) and counts it n times, so the totals
// stay unbiased. (Go's SetBlockProfileRate takes nanoseconds and samples by
// the wait's length, which needs the clock read at every park; a count
// keeps the parks that are not sampled at the cost of a decrement.)
//
// COST. Off: park() and ready() each do one relaxed load of the rate and a
// branch not taken (the only lines this header adds to core/scheduler.hpp:
// in park(), which calls wait_profile_park_time() when the rate is not 0; in
// scheduler::ready() and ready_n(), which call record_wait() for a sampled
// park first). A sampled park is marked by an odd since_ns (the precise clock
// with its lowest bit set; the coarse clock that other parks store has its
// lowest bit cleared). On, a park not sampled costs a decrement, its wake a
// test of since_ns; a sampled wait costs one clock read at park and one at
// wake, a walk of the task's frames, and a short hold of one of 16 shard
// locks (measured: bench/goro_bench --wait-profile N).
//
// MEMORY BOUND: at most 4,096 buckets (256 per shard), each with at most 32
// frames (a site is two or three words): under 1.5 MiB. Waits whose stack is
// new once a shard is full go to that shard's bucket "(other stacks)".
//
// THREAD SAFETY: all functions may be called from any thread.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <mutex>
#include <vector>

#include <goro/core/hash_map.hpp>
#include <goro/core/frame.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>

namespace goro {

namespace detail {

/// The rate: 0 off (see RATE above). Read on every park and wake: constinit,
/// so no guard variable is checked.
inline constinit std::atomic<std::int64_t> wait_profile_rate_ns{0};

/// park()'s since_ns while the rate is not 0: `coarse` (its lowest bit
/// cleared) for a park not sampled, the precise clock with the lowest bit
/// set for one that is (see RATE).
inline std::int64_t wait_profile_park_time(std::int64_t coarse) noexcept {
    static thread_local constinit std::int64_t countdown = 0;
    if (--countdown > 0) return coarse;
    countdown = wait_profile_rate_ns.load(std::memory_order_relaxed);
    return now_ns() | 1;
}

/// Whether `t`'s park was sampled (see wait_profile_park_time).
inline bool wait_sampled(const task_header* t) noexcept {
    return (t->since_ns.load(std::memory_order_relaxed) & 1) != 0;
}

inline constexpr std::size_t wait_histogram_buckets = 16;
inline constexpr std::size_t wait_max_frames = 32;
inline constexpr std::size_t wait_shards = 16;
inline constexpr std::size_t wait_buckets_per_shard = 256;

/// The histogram bucket of a wait of `ns` (see WHAT IS RECORDED).
inline std::size_t wait_histogram_index(std::int64_t ns) noexcept {
    if (ns < 1000) return 0;
    const auto us = static_cast<std::uint64_t>(ns / 1000);
    const std::size_t i = 1 + (static_cast<std::size_t>(std::bit_width(us)) - 1) / 2;
    return i < wait_histogram_buckets ? i : wait_histogram_buckets - 1;
}

/// One stack and reason's waits.
struct wait_bucket {
    const char* reason = nullptr;  // static string; null: "(other stacks)"
    std::vector<site> stack;       // leaf first
    double count = 0;              // waits (a sampled one counts as the rate)
    double delay_ns = 0;           // their total time parked
    std::array<std::uint64_t, wait_histogram_buckets> histogram{};  // waits actually recorded, by duration
};

struct alignas(cache_line) wait_shard {
    std::mutex mu;
    hash_map<std::uint64_t, std::vector<std::uint32_t>> index;  // hash -> buckets
    std::vector<wait_bucket> buckets;
    wait_bucket other;  // new stacks once the shard is full
};

inline std::array<wait_shard, wait_shards>& wait_shard_table() {
    static std::array<wait_shard, wait_shards>* t = new std::array<wait_shard, wait_shards>();  // never destroyed
    return *t;
}

/// Adds the wait that `t` is ending to its bucket. Called by ready() before
/// the task is made runnable (so its frames cannot change meanwhile), only
/// while the rate is not 0.
[[gnu::cold, gnu::noinline]] inline void record_wait(task_header* t) noexcept {
    const std::int64_t rate = wait_profile_rate_ns.load(std::memory_order_relaxed);
    if (rate <= 0 || t->state.load(std::memory_order_relaxed) != task_state::waiting) return;
    const std::int64_t since = t->since_ns.load(std::memory_order_relaxed);
    if (!(since & 1)) return;  // not a sampled park
    std::int64_t d = now_ns() - (since & ~std::int64_t(1));
    if (d < 0) d = 0;
    const double count = double(rate), delay = double(d) * double(rate);
    const char* reason = t->wait_reason.load(std::memory_order_relaxed);
    site frames[wait_max_frames];
    std::size_t n = 0;
    std::uint64_t h = 0xcbf29ce484222325ull ^ reinterpret_cast<std::uintptr_t>(reason);
    for (const promise_base* p = t->leaf; p && n < wait_max_frames; p = p->parent_) {
        frames[n++] = p->site_;
        h = (h ^ reinterpret_cast<std::uintptr_t>(p->site_.file_name())) * 0x100000001b3ull;
        h = (h ^ reinterpret_cast<std::uintptr_t>(p->site_.function_name())) * 0x100000001b3ull;
        h = (h ^ p->site_.line()) * 0x100000001b3ull;
    }
    auto same = [&](const wait_bucket& b) {
        if (b.reason != reason || b.stack.size() != n) return false;
        for (std::size_t i = 0; i < n; ++i)
            if (b.stack[i].file_name() != frames[i].file_name() ||
                b.stack[i].function_name() != frames[i].function_name() || b.stack[i].line() != frames[i].line())
                return false;
        return true;
    };
    wait_shard& sh = wait_shard_table()[(h >> 32) % wait_shards];
    std::lock_guard g(sh.mu);
    wait_bucket* b = nullptr;
    try {
        auto& cands = sh.index[h];
        for (std::uint32_t i : cands)
            if (same(sh.buckets[i])) {
                b = &sh.buckets[i];
                break;
            }
        if (!b && sh.buckets.size() < wait_buckets_per_shard) {
            cands.push_back(static_cast<std::uint32_t>(sh.buckets.size()));
            sh.buckets.push_back(wait_bucket{reason, std::vector<site>(frames, frames + n), 0, 0, {}});
            b = &sh.buckets.back();
        }
    } catch (...) {
        b = nullptr;  // out of memory: counted with the others
    }
    if (!b) b = &sh.other;
    b->count += count;
    b->delay_ns += delay;
    ++b->histogram[wait_histogram_index(d)];
}

}  // namespace detail

/// Turns the wait profile on (1: every wait; n: one in n, see RATE) or off
/// (0), like Go's runtime.SetBlockProfileRate. What was recorded is kept
/// (reset_wait_profile clears it).
inline void set_wait_profile_rate(std::int64_t rate_ns) noexcept {
    detail::wait_profile_rate_ns.store(rate_ns < 0 ? 0 : rate_ns, std::memory_order_relaxed);
}
inline std::int64_t wait_profile_rate() noexcept {
    return detail::wait_profile_rate_ns.load(std::memory_order_relaxed);
}

/// Forgets every recorded wait.
inline void reset_wait_profile() {
    for (detail::wait_shard& sh : detail::wait_shard_table()) {
        std::lock_guard g(sh.mu);
        sh.index.clear();
        sh.buckets.clear();
        sh.other = detail::wait_bucket{};
    }
}

/// A copy of every bucket with at least one wait (the "(other stacks)" ones included).
inline std::vector<detail::wait_bucket> wait_profile_buckets() {
    std::vector<detail::wait_bucket> out;
    for (detail::wait_shard& sh : detail::wait_shard_table()) {
        std::lock_guard g(sh.mu);
        for (const auto& b : sh.buckets)
            if (b.count > 0) out.push_back(b);
        if (sh.other.count > 0) out.push_back(sh.other);
    }
    return out;
}

}  // namespace goro
