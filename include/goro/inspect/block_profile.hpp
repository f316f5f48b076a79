// goro/inspect/block_profile.hpp — the wait profile (goro/core/wait_profile.hpp)
// in Go's block-profile formats.
//
//   goro::set_wait_profile_rate(1);
//   ...
//   std::string pb = goro::block_profile();      // pprof: `go tool pprof -top file`
//   std::string text = goro::block_profile(1);   // Go's debug=1 text
//
// pprof (debug=0): sample types contentions/count and delay/nanoseconds, as
// Go's /debug/pprof/block writes them (period type contentions/count, period
// 1), one sample per stack and wait reason, whose values are the number of
// waits and their total time parked; the wait reason is a string label
// `wait_reason` (so `-tagfocus=wait_reason=select` works). Locations and
// functions as in the goroutine profile (address = goro::site_id).
//
// debug=1, Go's text shape (cycles/second is 1e9: delays are nanoseconds):
//     --- contention:
//     cycles/second=1000000000
//     52000 12 @ 0x2f4a0c11d2e1 0x91aa20e4f0b7
//     # wait_reason: chan receive
//     # histogram: <1us:0 <4us:2 <16us:7 <64us:3
//     #	0x2f4a0c11d2e1	consumer	src/c.cpp:16
//     #	0x91aa20e4f0b7	run		src/c.cpp:40
//     (blank line)
//   Stacks by total delay, descending. The histogram lists its buckets up to
//   the last non-empty one (waits actually seen; sampled waits count once).
//
// THE MUTEX PROFILE (goro::mutex_profile, /debug/pprof/mutex): the same
// buckets, only the lock-like waits: goro::mutex and goro::once
// ("sync.Mutex.Lock"), goro::rw_mutex ("sync.RWMutex.Lock",
// "sync.RWMutex.RLock") and goro::semaphore ("semacquire"), in the same two
// forms (debug=1 begins "--- mutex:", then "sampling period=" the wait
// profile's rate, as Go's prints its SetMutexProfileFraction). On while the
// wait profile is on (set_wait_profile_rate; no setter of its own: the waits
// are sampled once, for both). Unlike Go's, whose delay is charged to the
// stack that unlocked (where the lock was held too long), goro charges it to
// the stack that waited (where the lock was wanted); cond waits are not
// contention (Go leaves them out too), and the channels' internal locks are
// spin locks held for a few instructions, not measured.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <goro/core/linkage.hpp>
#include <goro/core/wait_profile.hpp>

namespace goro {

namespace detail {

inline const char* const wait_histogram_labels[wait_histogram_buckets] = {
    "<1us", "<4us", "<16us", "<64us", "<256us", "<1ms", "<4ms", "<16ms",
    "<66ms", "<262ms", "<1s", "<4s", "<17s", "<67s", "<268s", ">=268s"};

GORO_DECL std::vector<wait_bucket> sorted_wait_buckets();

/// Whether a wait of `reason` is lock contention (see THE MUTEX PROFILE).
GORO_DECL bool is_lock_wait(const char* reason) noexcept;

/// `out` begins with Go's first lines ("--- contention:\ncycles/second=...\n").
GORO_DECL std::string block_profile_text(const std::vector<wait_bucket>& bs,
                                         std::string out = "--- contention:\ncycles/second=1000000000\n");

GORO_DECL std::string block_profile_pprof(const std::vector<wait_bucket>& bs);

}  // namespace detail

/// The wait profile: pprof protobuf (debug 0) or Go's debug=1 text (1).
GORO_DECL std::string block_profile(int debug = 0);

/// The mutex profile (see THE MUTEX PROFILE above): pprof (debug 0) or Go's
/// debug=1 text (1).
GORO_DECL std::string mutex_profile(int debug = 0);

}  // namespace goro

#if GORO_BODIES
#include <algorithm>
#include <cmath>
#include <string_view>

#include <goro/inspect/dump.hpp>
#include <goro/inspect/pprof.hpp>

namespace goro::detail {

GORO_DECL std::vector<wait_bucket> sorted_wait_buckets() {
    std::vector<wait_bucket> bs = wait_profile_buckets();
    std::stable_sort(bs.begin(), bs.end(), [](const wait_bucket& a, const wait_bucket& b) {
        return a.delay_ns > b.delay_ns;
    });
    return bs;
}

GORO_DECL bool is_lock_wait(const char* reason) noexcept {
    if (!reason) return false;
    const std::string_view r(reason);
    return r == wait_reason::mutex_lock || r == wait_reason::rw_mutex_lock || r == wait_reason::rw_mutex_rlock ||
           r == wait_reason::semacquire;
}

GORO_DECL std::string block_profile_text(const std::vector<wait_bucket>& bs, std::string out) {
    site_table table;
    std::vector<text_frame> frames;
    for (const wait_bucket& b : bs) {
        frames.clear();
        out += std::to_string(std::llround(b.delay_ns));
        out += ' ';
        out += std::to_string(std::llround(b.count));
        out += " @";
        for (const site& s : b.stack) {
            const site_info& si = table[table.intern(s)];
            out += ' ';
            out.append(si.hex, si.hex_len);
        }
        out += '\n';
        out += "# wait_reason: ";
        out += b.reason ? b.reason : "(other stacks)";
        out += "\n# histogram:";
        std::size_t last = 0;
        for (std::size_t i = 0; i < wait_histogram_buckets; ++i)
            if (b.histogram[i]) last = i;
        for (std::size_t i = 0; i <= last; ++i) {
            out += ' ';
            out += wait_histogram_labels[i];
            out += ':';
            out += std::to_string(b.histogram[i]);
        }
        out += '\n';
        for (const site& s : b.stack) frames.push_back(text_frame_of(table[table.intern(s)]));
        write_frame_lines(out, frames);
        out += '\n';
    }
    return out;
}

GORO_DECL std::string block_profile_pprof(const std::vector<wait_bucket>& bs) {
    std::string out;
    site_table table;
    pprof_builder b(out, table);
    b.sample_type("contentions", "count");
    b.sample_type("delay", "nanoseconds");
    b.str("wait_reason");
    std::vector<std::uint32_t> frames;
    for (const wait_bucket& wb : bs) {
        frames.clear();
        for (const site& s : wb.stack) frames.push_back(table.intern(s));
        const std::int64_t vals[2] = {std::max<std::int64_t>(1, std::llround(wb.count)), std::llround(wb.delay_ns)};
        b.begin_sample(frames, vals);
        b.label("wait_reason", wb.reason ? wb.reason : "(other stacks)");
        b.end_sample();
    }
    b.finish("contentions", "count", 1);
    return out;
}

}  // namespace goro::detail

namespace goro {

GORO_DECL std::string block_profile(int debug) {
    if (debug != 0 && debug != 1)
        throw usage_error("goro::block_profile: debug must be 0 (pprof) or 1 (text), not " + std::to_string(debug));
    auto bs = detail::sorted_wait_buckets();
    return debug == 0 ? detail::block_profile_pprof(bs) : detail::block_profile_text(bs);
}

GORO_DECL std::string mutex_profile(int debug) {
    if (debug != 0 && debug != 1)
        throw usage_error("goro::mutex_profile: debug must be 0 (pprof) or 1 (text), not " + std::to_string(debug));
    auto bs = detail::sorted_wait_buckets();
    std::erase_if(bs, [](const detail::wait_bucket& b) { return !detail::is_lock_wait(b.reason); });
    if (debug == 0) return detail::block_profile_pprof(bs);
    return detail::block_profile_text(bs, "--- mutex:\ncycles/second=1000000000\nsampling period=" +
                                              std::to_string(wait_profile_rate()) + "\n");
}

}  // namespace goro
#endif  // GORO_BODIES
