// goro/core/wait_profile.hpp — where tasks wait, and for how long: Go's block profile.
//
//   goro::set_wait_profile_rate(1);     // record every wait (Go's SetBlockProfileRate(1))
//   goro::set_wait_profile_rate();      // or one wait in default_wait_profile_rate (and every wait of
//                                       // 100 ms or more): cheap enough to leave on
//   ...
//   auto entries = goro::wait_profile_buckets();   // or /debug/pprof/block
//   goro::set_wait_profile_rate(0);     // off (the default)
//
// WHAT IS RECORDED. When a parked task is made runnable again (scheduler
// ready(), ready_n(), or the poller's poll_now(), which hands the worker an
// I/O waiter to run next), the wait it ends is added to the bucket of its stack
// (the sites of its frames, leaf first: the leaf is the co_await it waited
// at) and its wait reason ("chan receive", "select", ...): one more wait, its
// time added to the total, and to a histogram of 16 buckets (< 1 µs, then
// powers of 4 from 1 µs: < 4 µs, < 16 µs, ... , ≥ 268 s). A task that is
// cancelled or wakes some other way than these is not recorded.
//
// RATE: 0 is off; 1 records every wait; n > 1 records one wait in n and
// counts it n times, so the totals stay unbiased. Each thread counts its
// parks down from a random start, and draws each next countdown at random
// from 1 to 2n - 1 (mean n): threads do not sample in lockstep, and a thread
// whose parks alternate between sites (A, B, A, B) samples both, which a
// fixed period of n would not. Lowering the rate applies at the next park (a
// countdown longer than the new rate allows is drawn again). (Go's
// SetBlockProfileRate takes nanoseconds and samples by the wait's length,
// which needs the clock read at every park; a count keeps the parks that are
// not sampled at the cost of a decrement.)
//
// LONG WAITS. A wait of wait_profile_long_wait_ns (100 ms) or more is always
// recorded, sampled or not, and counted once: a rare long wait, the one a
// block profile is read for, is never lost to sampling (Go keeps every wait
// longer than its rate too). Where the park was not sampled, its length is
// the coarse clock's: park() stores the scheduler's parked clock (a tick
// old, at most ~10 ms), and the wake compares it with the same clock on a
// worker (one load) or CLOCK_MONOTONIC_COARSE elsewhere (a vDSO read, where
// the wake goes through the global queue anyway). A sampled wait is timed
// with the precise clock and counted once if that long, n times if not. So
// the boundary is fuzzy by a tick: a wait within ~10 ms of 100 ms may count
// as long or short. A long wait that began before the profile was turned on
// is recorded when it ends (as Go records a wait when it ends).
// detail::wait_clock_offset_ns (0; tests only) is added to the clock read
// at every wake, to make a wait look long without sleeping.
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
// scheduler::ready() and ready_n(), which call wait_profile_wake() first;
// and io/poller.hpp's poll_now()).
// A sampled park is marked by an odd since_ns (the precise clock with its
// lowest bit set; the coarse clock that other parks store has its lowest bit
// cleared). On, a park not sampled costs a decrement and two compares, its
// wake a test of since_ns and, for the long-wait test, a load of the parked
// clock and of the offset, a subtraction and a compare (on a worker); a
// sampled or long wait costs two clock reads, a walk of the task's frames
// and a probe of the thread's table. Measured on a loaded
// 2-core VM whose TSC read costs ~40 ns (a hardware one costs ~10): per
// park and wake, 1.1 ns off, ~100 ns at rate 1 (the two clock reads are
// most of it), ~2 ns at rate 100, ~1.5 ns at rate 1000. chan_pingpong_unbuffered
// (two waits a round trip; medians of 7 runs of bench/goro_bench rows
// *_waitprof, *_waitprof_default): 224 ns off, 373 ns at rate 1 (+65 %; the
// shared locked table of before: about +300 %), 246 ns at rate 100 (within
// the noise; ~2 % by the per-wait cost). spawn_join: no difference (its tasks
// do not park). So recording every wait cannot stay within 5 % of a
// ~100 ns hand-off: default_wait_profile_rate (100) does, and is the rate
// set_wait_profile_rate() sets with no argument. With the long-wait test and
// the random countdowns (the same VM, far more loaded: load average 20 to
// 30 on 2 cores; medians of 11 runs, alternating with the code before):
// off 198 ns before, 219 after (the same code: the noise); rate 100 221
// before, 219 after; rate 1 308 before, 431 after. CPU time per round trip
// (user + sys, medians of 9): off 55 / 62, rate 100 66 / 69, rate 1 81 /
// 108. The rate 1 difference is in park()'s TSC read, whose code is the
// same as before (perf puts ~7x the samples on it): to measure again on a
// quiet machine.
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
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <goro/core/vec.hpp>
#include <vector>

#include <goro/core/frame.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>

namespace goro {

namespace detail {

/// The rate, a count n (one park in n; see RATE above), 0 off. Read on every
/// park and wake: constinit, so no guard variable is checked.
inline constinit std::atomic<std::int64_t> wait_profile_rate_n{0};

/// Tests only: added to the clock read at every wake (see LONG WAITS), so a
/// wait can look long without lasting long. 0 otherwise.
inline constinit std::atomic<std::int64_t> wait_clock_offset_ns{0};

// ---- The clock (see CLOCK above).

/// Nanoseconds per TSC tick in 32.32 fixed point; 0 until calibrated (or
/// when there is no invariant TSC): wait_now_ns() reads now_ns() then.
inline constinit std::atomic<std::uint64_t> wait_tsc_mul{0};
inline constinit std::atomic<std::uint64_t> wait_tsc_base{0};  // a TSC reading ...
inline constinit std::atomic<std::int64_t> wait_ns_base{0};    // ... and now_ns() at the same moment

/// The monotonic time of a wait's start or end, in now_ns()'s epoch: the TSC
/// scaled when calibrated, else now_ns().
GORO_DECL std::int64_t wait_now_ns() noexcept;

/// The histogram bucket of a wait of `ns` (see WHAT IS RECORDED).
GORO_DECL std::size_t wait_histogram_index(std::int64_t ns) noexcept;

/// Measures the TSC against now_ns() over about 2 ms, once per process (the
/// first call that turns the profile on; calls meanwhile use now_ns()).
/// Readings interrupted for more than 20 µs are taken again; a rate outside
/// 0.1 to 20 GHz keeps now_ns().
GORO_DECL void wait_clock_calibrate() noexcept;

/// A draw from 1 to 2 * rate - 1, uniformly (mean `rate`): the parks until
/// a thread's next sampled one (see RATE). The generator is per thread
/// (xorshift64*), seeded at its first draw from its address and the clock.
// Declared without GORO_DECL, here and for the other [[gnu::noinline]]
// functions of this header: g++ rejects noinline after an inline declaration,
// so the definition (GORO_BODIES) carries both.
std::int64_t wait_sample_interval(std::int64_t rate) noexcept;

/// A thread's parks left until it samples one; 0 before its first park
/// with the profile on.
inline constinit thread_local std::int64_t wait_countdown = 0;

/// The part of wait_profile_park_time() that runs once in `rate` parks: the
/// countdown `c` reached 0 (sample this park), or was never started (c < 0)
/// or is longer than `rate` allows (it was drawn at a higher rate): draw it
/// again, and sample this park if the draw is 1.
std::int64_t wait_park_sample(std::int64_t c, std::int64_t rate, std::int64_t coarse) noexcept;

/// park()'s since_ns while the rate (`rate`, > 0) is on: `coarse` (its lowest
/// bit cleared) for a park not sampled, the precise clock with the lowest bit
/// set for one that is (see RATE).
[[gnu::always_inline]] inline std::int64_t wait_profile_park_time(std::int64_t coarse, std::int64_t rate) noexcept {
    const std::int64_t c = wait_countdown - 1;
    if (c > 0 && (c >> 1) < rate) [[likely]] {  // c < 2 * rate, without overflow
        wait_countdown = c;
        return coarse;
    }
    if (c == 0 && rate == 1) return wait_now_ns() | 1;  // rate 1: every park (the countdown stays 1)
    return wait_park_sample(c, rate, coarse);
}

/// A wait this long or longer is always recorded, and counted once (see LONG WAITS).
inline constexpr std::int64_t wait_profile_long_wait_ns = 100'000'000;

inline constexpr std::size_t wait_histogram_buckets = 16;
inline constexpr std::size_t wait_max_frames = 32;
inline constexpr std::size_t wait_buckets_per_table = 256;
inline constexpr std::size_t wait_index_slots = 512;  // open addressing, at most half full

/// One stack and reason's waits (what wait_profile_buckets() returns).
struct wait_bucket {
    const char* reason = nullptr;  // static string; null: "(other stacks)"
    vec<site> stack;               // leaf first
    double count = 0;              // waits (a sampled one counts as the rate)
    double delay_ns = 0;           // their total time parked
    std::array<std::uint64_t, wait_histogram_buckets> histogram{};  // waits actually recorded, by duration
};

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

    void add(std::uint64_t rate, std::int64_t d) noexcept;
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
                    std::uint64_t h) noexcept;

private:
    wait_cell* insert(std::size_t slot, const char* reason, const promise_base* leaf, std::size_t n,
                      std::uint64_t h) noexcept;
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
    ~wait_table_release();
};

/// The calling thread's table, made or adopted at its first record; null when out of memory.
wait_table* make_wait_table() noexcept;

/// Adds the wait that `t` is ending to its bucket: `since` is its since_ns
/// (the precise clock, odd, for a sampled park: timed here; else the coarse
/// clock, and `coarse_d` the wait's coarse length, which the caller found
/// long). Called by wait_profile_wake() (ready(), ready_n()) before the task
/// is made runnable, so its frames cannot change meanwhile.
void record_wait(task_header* t, std::int64_t rate, std::int64_t since, std::int64_t coarse_d) noexcept;

/// What ready() and ready_n() do for a task `t` they wake while the rate
/// (`rate`) is on: record its wait when its park was sampled or when, by the
/// coarse clock, it was long. `coarse_now` is the coarse clock at the wake
/// (see LONG WAITS: the caller's parked clock on a worker).
[[gnu::always_inline]] inline void wait_profile_wake(task_header* t, std::int64_t rate,
                                                     std::int64_t coarse_now) noexcept {
    const std::int64_t since = t->since_ns.load(std::memory_order_relaxed);
    const std::int64_t d = coarse_now + wait_clock_offset_ns.load(std::memory_order_relaxed) - since;
    if ((since & 1) || d >= wait_profile_long_wait_ns) [[unlikely]]
        record_wait(t, rate, since, d);
}

}  // namespace detail

/// The rate to leave the wait profile on at: one wait in 100, counted 100
/// times (see COST above: it keeps chan_pingpong_unbuffered and spawn_join
/// within 5 %; rate 1 does not).
inline constexpr std::int64_t default_wait_profile_rate = 100;

/// Turns the wait profile on (1: every wait; n: one in n, a count, not
/// nanoseconds, see RATE; waits of 100 ms or more always, see LONG WAITS)
/// or off (0), like Go's runtime.SetBlockProfileRate. What was recorded is
/// kept (reset_wait_profile clears it). The first call that turns it on
/// calibrates the clock (about 2 ms, see CLOCK). Rates above 2^40 are taken
/// as 2^40.
GORO_DECL void set_wait_profile_rate(std::int64_t rate_n = default_wait_profile_rate) noexcept;
inline std::int64_t wait_profile_rate() noexcept {
    return detail::wait_profile_rate_n.load(std::memory_order_relaxed);
}

/// Forgets every recorded wait (of every thread: what each has recorded so
/// far becomes its zero).
GORO_DECL void reset_wait_profile();

/// Every bucket with at least one wait (the "(other stacks)" one included):
/// the threads' tables merged, one bucket per stack and reason.
GORO_DECL std::vector<detail::wait_bucket> wait_profile_buckets();

}  // namespace goro

#if GORO_BODIES
#include <bit>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <goro/core/hash_map.hpp>

namespace goro {
namespace detail {

GORO_DECL std::int64_t wait_now_ns() noexcept {
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
GORO_DECL bool wait_tsc_invariant() noexcept {
#if defined(__x86_64__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u) return false;
    if (!__get_cpuid(0x80000007u, &a, &b, &c, &d)) return false;
    return (d & (1u << 8)) != 0;
#else
    return false;
#endif
}

GORO_DECL void wait_clock_calibrate() noexcept {
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

[[gnu::noinline]] GORO_DECL std::int64_t wait_sample_interval(std::int64_t rate) noexcept {
    if (rate <= 1) return 1;
    static thread_local constinit std::uint64_t x = 0;
    if (x == 0) {
        std::uint64_t z = reinterpret_cast<std::uintptr_t>(&x) ^ static_cast<std::uint64_t>(now_ns());
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;  // splitmix64's finaliser
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        x = (z ^ (z >> 31)) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    const std::uint64_t r = x * 0x2545f4914f6cdd1dull;
    const std::uint64_t span = 2 * static_cast<std::uint64_t>(rate) - 1;
    return 1 + static_cast<std::int64_t>((r >> 1) % span);
}

[[gnu::noinline]] GORO_DECL std::int64_t wait_park_sample(std::int64_t c, std::int64_t rate,
                                                          std::int64_t coarse) noexcept {
    if (c != 0 && (c = wait_sample_interval(rate) - 1) > 0) {
        wait_countdown = c;
        return coarse;
    }
    wait_countdown = wait_sample_interval(rate);
    return wait_now_ns() | 1;
}

GORO_DECL std::size_t wait_histogram_index(std::int64_t ns) noexcept {
    if (ns < 1000) return 0;
    const auto us = static_cast<std::uint64_t>(ns / 1000);
    const std::size_t i = 1 + (static_cast<std::size_t>(std::bit_width(us)) - 1) / 2;
    return i < wait_histogram_buckets ? i : wait_histogram_buckets - 1;
}

/// A site as one word for hashing and for the owner's exact-match test:
/// std::source_location is one pointer to data the compiler emits per site.
GORO_DECL std::uint64_t wait_site_word(const site& s) noexcept {
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

GORO_DECL void wait_cell::add(std::uint64_t rate, std::int64_t d) noexcept {
    count.store(count.load(std::memory_order_relaxed) + rate, std::memory_order_relaxed);
    delay_ns.store(delay_ns.load(std::memory_order_relaxed) + double(d) * double(rate), std::memory_order_relaxed);
    auto& h = histogram[wait_histogram_index(d)];
    h.store(h.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

GORO_DECL wait_cell* wait_table::find(const char* reason, const promise_base* leaf, const std::uint64_t* words,
                                     std::size_t n, std::uint64_t h) noexcept {
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

[[gnu::noinline]] GORO_DECL wait_cell* wait_table::insert(std::size_t slot, const char* reason,
                                                          const promise_base* leaf, std::size_t n,
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

GORO_DECL wait_table_release::~wait_table_release() {
    if (!tl_wait_table) return;
    wait_tables& l = wait_table_list();
    std::lock_guard g(l.mu);
    l.free.push_back(tl_wait_table);  // reserved at creation: cannot throw
    tl_wait_table = nullptr;
}

[[gnu::noinline]] GORO_DECL wait_table* make_wait_table() noexcept {
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

[[gnu::noinline]] GORO_DECL void record_wait(task_header* t, std::int64_t rate, std::int64_t since,
                                             std::int64_t coarse_d) noexcept {
    if (t->state.load(std::memory_order_relaxed) != task_state::waiting) return;
    std::int64_t d = coarse_d;
    std::uint64_t weight = 1;  // a long wait counts once
    if (since & 1) {
        d = wait_now_ns() + wait_clock_offset_ns.load(std::memory_order_relaxed) - (since & ~std::int64_t(1));
        if (d < wait_profile_long_wait_ns) weight = static_cast<std::uint64_t>(rate);
    }
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
    (c ? *c : tab->other).add(weight, d);
}

}  // namespace detail

GORO_DECL void set_wait_profile_rate(std::int64_t rate_n) noexcept {
    if (rate_n > 0) detail::wait_clock_calibrate();
    constexpr std::int64_t max_rate = std::int64_t(1) << 40;
    detail::wait_profile_rate_n.store(rate_n < 0 ? 0 : rate_n > max_rate ? max_rate : rate_n,
                                      std::memory_order_relaxed);
}

GORO_DECL void reset_wait_profile() {
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

GORO_DECL std::vector<detail::wait_bucket> wait_profile_buckets() {
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
#endif  // GORO_BODIES
