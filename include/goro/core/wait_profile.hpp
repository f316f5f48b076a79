// goro/core/wait_profile.hpp — where tasks wait, and for how long: Go's block profile.
//
//   goro::set_wait_profile_rate(1);     // record every wait (Go's SetBlockProfileRate(1))
//   goro::set_wait_profile_rate();      // or one wait in default_wait_profile_rate: cheap enough to leave on
//   ...
//   auto entries = goro::wait_profile_buckets();   // or /debug/pprof/block
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
// PER-THREAD TABLES. Each thread that wakes tasks records into its own table
// (found through one thread_local pointer): no lock and no read-modify-write
// on the hot path, and no cache line shared with other workers. A table's
// counters have one writer, its owner, which adds with relaxed loads and
// stores; wait_profile_buckets() reads them with relaxed loads and merges the
// tables (one bucket per stack and reason). A new stack is added under the
// table's mutex (the only lock the owner takes, once per stack). Cells never
// move, so a reader may read one while the owner adds another. A thread that
// exits leaves its table in the profile and hands it to the next thread that
// records. reset_wait_profile() cannot write the counters (it is not the
// owner): it records each cell's current values as its zero.
//
// CLOCK. A sampled wait reads the clock twice (park and wake). On x86-64 with
// an invariant TSC (CPUID) that is the TSC (__builtin_ia32_rdtsc) scaled to
// now_ns()'s epoch, calibrated against now_ns() over about 2 ms when the
// profile is first turned on; elsewhere, or until calibrated, now_ns(). (On
// a KVM guest, now_ns() costs about twice a TSC read.) The scaled TSC can
// drift from CLOCK_MONOTONIC by its rate error (parts per million): a
// sampled park's since_ns, which a dump shows as the wait's age in minutes,
// is off by that much.
//
// COST. Off: park() and ready() each do one relaxed load of the rate and a
// branch not taken (the only lines this header adds to core/scheduler.hpp:
// in park(), which calls wait_profile_park_time() when the rate is not 0; in
// scheduler::ready() and ready_n(), which call record_wait() for a sampled
// park first). A sampled park is marked by an odd since_ns (the precise clock
// with its lowest bit set; the coarse clock that other parks store has its
// lowest bit cleared). On, a park not sampled costs a decrement, its wake a
// test of since_ns; a sampled wait costs two clock reads, a walk of the
// task's frames and a probe of the thread's table. Measured on a loaded
// 2-core VM whose TSC read costs ~40 ns (a hardware one costs ~10): per
// park and wake, 1.1 ns off, ~100 ns at rate 1 (the two clock reads are
// most of it), ~2 ns at rate 100, ~1.5 ns at rate 1000. chan_pingpong_unbuffered
// (two waits a round trip; medians of 7 runs of bench/goro_bench rows
// *_waitprof, *_waitprof_default): 224 ns off, 373 ns at rate 1 (+65 %; the
// shared locked table of before: about +300 %), 246 ns at rate 100 (within
// the noise; ~2 % by the per-wait cost). spawn_join: no difference (its tasks
// do not park). So recording every wait cannot stay within 5 % of a
// ~100 ns hand-off: default_wait_profile_rate (100) does, and is the rate
// set_wait_profile_rate() sets with no argument.
//
// MEMORY BOUND: per thread that has recorded (tables are reused after their
// thread exits, so: per thread alive at once), at most 256 buckets, each with
// at most 32 frames: about 85 KiB of counters plus the stacks (under 64 KiB
// on g++). Waits whose stack is new once a table is full go to that table's
// bucket "(other stacks)".
//
// THREAD SAFETY: all functions may be called from any thread.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <goro/core/hash_map.hpp>
#include <goro/core/vec.hpp>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <goro/core/frame.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>

namespace goro {

namespace detail {

/// The rate: 0 off (see RATE above). Read on every park and wake: constinit,
/// so no guard variable is checked.
inline constinit std::atomic<std::int64_t> wait_profile_rate_ns{0};

// ---- The clock (see CLOCK above).

/// Nanoseconds per TSC tick in 32.32 fixed point; 0 until calibrated (or
/// when there is no invariant TSC): wait_now_ns() reads now_ns() then.
inline constinit std::atomic<std::uint64_t> wait_tsc_mul{0};
inline constinit std::atomic<std::uint64_t> wait_tsc_base{0};  // a TSC reading ...
inline constinit std::atomic<std::int64_t> wait_ns_base{0};    // ... and now_ns() at the same moment

/// The monotonic time of a wait's start or end, in now_ns()'s epoch: the TSC
/// scaled when calibrated, else now_ns().
inline std::int64_t wait_now_ns() noexcept {
#if defined(__x86_64__)
    if (const std::uint64_t mul = wait_tsc_mul.load(std::memory_order_acquire)) {
        const auto d = static_cast<std::int64_t>(__builtin_ia32_rdtsc() - wait_tsc_base.load(std::memory_order_relaxed));
        const std::uint64_t u = d > 0 ? static_cast<std::uint64_t>(d) : 0;
        return wait_ns_base.load(std::memory_order_relaxed) +
               static_cast<std::int64_t>((u >> 32) * mul + (((u & 0xffffffffu) * mul) >> 32));
    }
#endif
    return now_ns();
}

/// Whether this machine's TSC runs at a constant rate in every power state
/// (CPUID 0x80000007, EDX bit 8), so that it may time waits.
inline bool wait_tsc_invariant() noexcept {
#if defined(__x86_64__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u) return false;
    if (!__get_cpuid(0x80000007u, &a, &b, &c, &d)) return false;
    return (d & (1u << 8)) != 0;
#else
    return false;
#endif
}

/// Measures the TSC against now_ns() over about 2 ms, once per process (the
/// first call that turns the profile on; calls meanwhile use now_ns()).
/// Readings interrupted for more than 20 µs are taken again; a rate outside
/// 0.1 to 20 GHz keeps now_ns().
inline void wait_clock_calibrate() noexcept {
#if defined(__x86_64__)
    static constinit std::atomic<bool> started{false};
    if (started.load(std::memory_order_relaxed) || started.exchange(true)) return;
    if (!wait_tsc_invariant()) return;
    struct reading {
        std::uint64_t tsc;
        std::int64_t ns;
    };
    auto read = []() noexcept {
        for (int tries = 0;; ++tries) {
            const std::int64_t a = now_ns();
            const std::uint64_t t = __builtin_ia32_rdtsc();
            const std::int64_t b = now_ns();
            if (b - a <= 20'000 || tries >= 100) return reading{t, a + (b - a) / 2};
        }
    };
    const reading r0 = read();
    reading r1 = r0;
    while (r1.ns - r0.ns < 2'000'000) r1 = read();
    const double ticks = double(r1.tsc - r0.tsc), ns = double(r1.ns - r0.ns);
    if (ticks <= 0 || ns <= 0) return;
    const double ghz = ticks / ns;
    if (ghz < 0.1 || ghz > 20) return;
    wait_tsc_base.store(r1.tsc, std::memory_order_relaxed);
    wait_ns_base.store(r1.ns, std::memory_order_relaxed);
    wait_tsc_mul.store(static_cast<std::uint64_t>(ns / ticks * 4294967296.0), std::memory_order_release);
#endif
}

/// park()'s since_ns while the rate is not 0: `coarse` (its lowest bit
/// cleared) for a park not sampled, the precise clock with the lowest bit
/// set for one that is (see RATE).
inline std::int64_t wait_profile_park_time(std::int64_t coarse) noexcept {
    static thread_local constinit std::int64_t countdown = 0;
    if (--countdown > 0) return coarse;
    countdown = wait_profile_rate_ns.load(std::memory_order_relaxed);
    return wait_now_ns() | 1;
}

/// Whether `t`'s park was sampled (see wait_profile_park_time).
inline bool wait_sampled(const task_header* t) noexcept {
    return (t->since_ns.load(std::memory_order_relaxed) & 1) != 0;
}

inline constexpr std::size_t wait_histogram_buckets = 16;
inline constexpr std::size_t wait_max_frames = 32;
inline constexpr std::size_t wait_buckets_per_table = 256;
inline constexpr std::size_t wait_index_slots = 512;  // open addressing, at most half full

/// The histogram bucket of a wait of `ns` (see WHAT IS RECORDED).
inline std::size_t wait_histogram_index(std::int64_t ns) noexcept {
    if (ns < 1000) return 0;
    const auto us = static_cast<std::uint64_t>(ns / 1000);
    const std::size_t i = 1 + (static_cast<std::size_t>(std::bit_width(us)) - 1) / 2;
    return i < wait_histogram_buckets ? i : wait_histogram_buckets - 1;
}

/// One stack and reason's waits (what wait_profile_buckets() returns).
struct wait_bucket {
    const char* reason = nullptr;  // static string; null: "(other stacks)"
    vec<site> stack;               // leaf first
    double count = 0;              // waits (a sampled one counts as the rate)
    double delay_ns = 0;           // their total time parked
    std::array<std::uint64_t, wait_histogram_buckets> histogram{};  // waits actually recorded, by duration
};

/// A site as one word for hashing and for the owner's exact-match test:
/// std::source_location is one pointer to data the compiler emits per site.
inline std::uint64_t wait_site_word(const site& s) noexcept {
    if constexpr (sizeof(site) == sizeof(std::uintptr_t) && std::is_trivially_copyable_v<site>) {
        std::uintptr_t w;
        std::memcpy(&w, &s, sizeof w);
        return w;
    } else {
        std::uint64_t h = reinterpret_cast<std::uintptr_t>(s.file_name());
        h = (h ^ reinterpret_cast<std::uintptr_t>(s.function_name())) * 0x100000001b3ull;
        return (h ^ s.line()) * 0x100000001b3ull;
    }
}
inline bool wait_same_site(const site& a, const site& b) noexcept {
    return a.file_name() == b.file_name() && a.function_name() == b.function_name() && a.line() == b.line();
}

/// A bucket of one thread's table. Written only by the owner thread, with
/// relaxed loads and stores (no read-modify-write: one writer); read by
/// wait_profile_buckets() with relaxed loads. `stack`, `reason` and `hash`
/// are written before the bucket is published (table mutex); the `base_*`
/// fields are the values at the last reset (table mutex, readers only).
struct wait_cell {
    const char* reason = nullptr;
    vec<site> stack;
    std::uint64_t hash = 0;
    std::atomic<std::uint64_t> count{0};  // sum of the rates of the recorded waits
    std::atomic<double> delay_ns{0};      // sum of wait x rate
    std::array<std::atomic<std::uint64_t>, wait_histogram_buckets> histogram{};
    std::uint64_t base_count = 0;
    double base_delay_ns = 0;
    std::array<std::uint64_t, wait_histogram_buckets> base_histogram{};

    void add(std::uint64_t rate, std::int64_t d) noexcept {
        count.store(count.load(std::memory_order_relaxed) + rate, std::memory_order_relaxed);
        delay_ns.store(delay_ns.load(std::memory_order_relaxed) + double(d) * double(rate), std::memory_order_relaxed);
        auto& h = histogram[wait_histogram_index(d)];
        h.store(h.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
};

/// One thread's waits (see PER-THREAD TABLES above). Cells are fixed in
/// place (an array of wait_buckets_per_table), so a reader may read one's
/// counters while the owner adds a new one.
struct wait_table {
    std::mutex mu;                        // `size`, a new cell's stack, the base_* fields
    std::size_t size = 0;                 // cells in use (mu)
    std::size_t owner_size = 0;           // the same, the owner's copy (owner only)
    std::array<std::uint16_t, wait_index_slots> index{};  // owner only: cell + 1, 0 empty
    std::unique_ptr<wait_cell[]> cells{new wait_cell[wait_buckets_per_table]};
    wait_cell other;                      // new stacks once the table is full (reason null)

    /// Owner only: the cell of the stack of `leaf` (its frames' site words
    /// `words`, `n` of them, hashed with the reason to `h`) and `reason`, made
    /// when new (null when full or out of memory: the caller uses `other`).
    wait_cell* find(const char* reason, const promise_base* leaf, const std::uint64_t* words, std::size_t n,
                    std::uint64_t h) noexcept {
        for (std::size_t i = h % wait_index_slots, probes = 0; probes < wait_index_slots;
             i = (i + 1) % wait_index_slots, ++probes) {
            const std::uint16_t k = index[i];
            if (k == 0) return insert(i, reason, leaf, n, h);
            wait_cell& c = cells[k - 1u];
            if (c.hash != h || c.reason != reason || c.stack.size() != n) continue;
            std::size_t j = 0;
            while (j < n && wait_site_word(c.stack[j]) == words[j]) ++j;
            if (j == n) return &c;
        }
        return nullptr;
    }

private:
    [[gnu::noinline]] wait_cell* insert(std::size_t slot, const char* reason, const promise_base* leaf, std::size_t n,
                                        std::uint64_t h) noexcept {
        if (owner_size == wait_buckets_per_table) return nullptr;
        wait_cell& c = cells[owner_size];
        try {
            std::lock_guard g(mu);
            c.stack.clear();
            c.stack.reserve(n);
            for (const promise_base* p = leaf; c.stack.size() < n; p = p->parent_) c.stack.push_back(p->site_);
            c.reason = reason;
            c.hash = h;
            size = ++owner_size;
        } catch (...) {
            return nullptr;
        }
        index[slot] = static_cast<std::uint16_t>(owner_size);
        return &c;
    }
};

/// Every thread's table, kept after the thread exits (its waits stay in the
/// profile) and handed to the next thread that records (so threads that come
/// and go do not grow memory).
struct wait_tables {
    std::mutex mu;
    vec<wait_table*> all;   // never freed
    vec<wait_table*> free;  // of threads that exited
};
inline wait_tables& wait_table_list() {
    static wait_tables* t = new wait_tables();  // never destroyed: threads exit after main
    return *t;
}

inline constinit thread_local wait_table* tl_wait_table = nullptr;

/// Gives the thread's table back at thread exit (made only with a table).
struct wait_table_release {
    ~wait_table_release() {
        if (!tl_wait_table) return;
        wait_tables& l = wait_table_list();
        std::lock_guard g(l.mu);
        l.free.push_back(tl_wait_table);  // reserved at creation: cannot throw
        tl_wait_table = nullptr;
    }
};

/// The calling thread's table, made or adopted at its first record; null when out of memory.
[[gnu::noinline]] inline wait_table* make_wait_table() noexcept {
    try {
        static thread_local wait_table_release release;  // registers the exit hook
        (void)release;
        wait_tables& l = wait_table_list();
        std::lock_guard g(l.mu);
        if (!l.free.empty()) {
            tl_wait_table = l.free.back();
            l.free.pop_back();
        } else {
            auto t = std::make_unique<wait_table>();
            l.all.reserve(l.all.size() + 1);
            l.free.reserve(l.all.size() + 1);
            l.all.push_back(t.get());
            tl_wait_table = t.release();
        }
        return tl_wait_table;
    } catch (...) {
        return nullptr;
    }
}

/// Adds the wait that `t` is ending to its bucket. Called by ready() before
/// the task is made runnable (so its frames cannot change meanwhile), only
/// while the rate is not 0.
[[gnu::noinline]] inline void record_wait(task_header* t) noexcept {
    const std::int64_t rate = wait_profile_rate_ns.load(std::memory_order_relaxed);
    if (rate <= 0 || t->state.load(std::memory_order_relaxed) != task_state::waiting) return;
    const std::int64_t since = t->since_ns.load(std::memory_order_relaxed);
    if (!(since & 1)) return;  // not a sampled park
    std::int64_t d = wait_now_ns() - (since & ~std::int64_t(1));
    if (d < 0) d = 0;
    const char* reason = t->wait_reason.load(std::memory_order_relaxed);
    std::uint64_t words[wait_max_frames];  // (not sites: no constructor to run)
    std::size_t n = 0;
    std::uint64_t h = 0xcbf29ce484222325ull ^ reinterpret_cast<std::uintptr_t>(reason);
    for (const promise_base* p = t->leaf; p && n < wait_max_frames; p = p->parent_) {
        words[n] = wait_site_word(p->site_);
        h = (h ^ words[n++]) * 0x100000001b3ull;
    }
    h ^= h >> 29;
    wait_table* tab = tl_wait_table;
    if (!tab && !(tab = make_wait_table())) return;
    wait_cell* c = tab->find(reason, t->leaf, words, n, h);
    (c ? *c : tab->other).add(static_cast<std::uint64_t>(rate), d);
}

}  // namespace detail

/// The rate to leave the wait profile on at: one wait in 100, counted 100
/// times (see COST above: it keeps chan_pingpong_unbuffered and spawn_join
/// within 5 %; rate 1 does not).
inline constexpr std::int64_t default_wait_profile_rate = 100;

/// Turns the wait profile on (1: every wait; n: one in n, see RATE) or off
/// (0), like Go's runtime.SetBlockProfileRate. What was recorded is kept
/// (reset_wait_profile clears it). The first call that turns it on
/// calibrates the clock (about 2 ms, see CLOCK).
inline void set_wait_profile_rate(std::int64_t rate_ns = default_wait_profile_rate) noexcept {
    if (rate_ns > 0) detail::wait_clock_calibrate();
    detail::wait_profile_rate_ns.store(rate_ns < 0 ? 0 : rate_ns, std::memory_order_relaxed);
}
inline std::int64_t wait_profile_rate() noexcept {
    return detail::wait_profile_rate_ns.load(std::memory_order_relaxed);
}

/// Forgets every recorded wait (of every thread: what each has recorded so
/// far becomes its zero).
inline void reset_wait_profile() {
    detail::wait_tables& l = detail::wait_table_list();
    std::lock_guard g(l.mu);
    for (detail::wait_table* t : l.all) {
        std::lock_guard tg(t->mu);
        auto rebase = [](detail::wait_cell& c) {
            c.base_count = c.count.load(std::memory_order_relaxed);
            c.base_delay_ns = c.delay_ns.load(std::memory_order_relaxed);
            for (std::size_t i = 0; i < detail::wait_histogram_buckets; ++i)
                c.base_histogram[i] = c.histogram[i].load(std::memory_order_relaxed);
        };
        for (std::size_t i = 0; i < t->size; ++i) rebase(t->cells[i]);
        rebase(t->other);
    }
}

/// Every bucket with at least one wait (the "(other stacks)" one included):
/// the threads' tables merged, one bucket per stack and reason.
inline std::vector<detail::wait_bucket> wait_profile_buckets() {
    std::vector<detail::wait_bucket> out;
    detail::hash_map<std::uint64_t, std::vector<std::size_t>> seen;  // hash -> out indices
    std::size_t other = SIZE_MAX;
    auto same = [](const detail::wait_bucket& b, const detail::wait_cell& c) {
        if (b.reason != c.reason || b.stack.size() != c.stack.size()) return false;
        for (std::size_t i = 0; i < b.stack.size(); ++i)
            if (!detail::wait_same_site(b.stack[i], c.stack[i])) return false;
        return true;
    };
    auto add = [&](const detail::wait_cell& c, bool is_other) {
        const std::uint64_t count = c.count.load(std::memory_order_relaxed) - c.base_count;
        if (count == 0) return;
        detail::wait_bucket* b = nullptr;
        if (is_other) {
            if (other == SIZE_MAX) {
                other = out.size();
                out.emplace_back();
            }
            b = &out[other];
        } else {
            // Sites are compared by their strings' addresses (as before the
            // tables were per thread), hashed by file and line only.
            std::uint64_t h = reinterpret_cast<std::uintptr_t>(c.reason);
            for (const detail::site& s : c.stack)
                h = (h ^ reinterpret_cast<std::uintptr_t>(s.file_name()) ^ (std::uint64_t(s.line()) << 48)) *
                    0x100000001b3ull;
            auto& idx = seen[h];
            for (std::size_t i : idx)
                if (same(out[i], c)) b = &out[i];
            if (!b) {
                idx.push_back(out.size());
                out.push_back(detail::wait_bucket{c.reason, c.stack, 0, 0, {}});
                b = &out.back();
            }
        }
        b->count += double(count);
        b->delay_ns += c.delay_ns.load(std::memory_order_relaxed) - c.base_delay_ns;
        for (std::size_t i = 0; i < detail::wait_histogram_buckets; ++i)
            b->histogram[i] += c.histogram[i].load(std::memory_order_relaxed) - c.base_histogram[i];
    };
    detail::wait_tables& l = detail::wait_table_list();
    std::lock_guard g(l.mu);
    for (detail::wait_table* t : l.all) {
        std::lock_guard tg(t->mu);
        for (std::size_t i = 0; i < t->size; ++i) add(t->cells[i], false);
        add(t->other, true);
    }
    return out;
}

}  // namespace goro
