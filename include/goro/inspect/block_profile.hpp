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
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <goro/core/wait_profile.hpp>
#include <goro/inspect/dump.hpp>
#include <goro/inspect/pprof.hpp>

namespace goro {

namespace detail {

inline const char* const wait_histogram_labels[wait_histogram_buckets] = {
    "<1us", "<4us", "<16us", "<64us", "<256us", "<1ms", "<4ms", "<16ms",
    "<66ms", "<262ms", "<1s", "<4s", "<17s", "<67s", "<268s", ">=268s"};

inline std::vector<wait_bucket> sorted_wait_buckets() {
    std::vector<wait_bucket> bs = wait_profile_buckets();
    std::stable_sort(bs.begin(), bs.end(), [](const wait_bucket& a, const wait_bucket& b) {
        return a.delay_ns > b.delay_ns;
    });
    return bs;
}

inline std::string block_profile_text(const std::vector<wait_bucket>& bs) {
    std::string out = "--- contention:\ncycles/second=1000000000\n";
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

inline std::string block_profile_pprof(const std::vector<wait_bucket>& bs) {
    std::string out;
    std::vector<std::string> strings{""};
    std::unordered_map<std::string, std::int64_t> string_ids{{"", 0}};
    auto str = [&](std::string_view s) -> std::int64_t {
        auto [it, fresh] = string_ids.try_emplace(std::string(s), static_cast<std::int64_t>(strings.size()));
        if (fresh) strings.emplace_back(s);
        return it->second;
    };
    site_table table;
    std::vector<std::uint64_t> location_of;  // by site index; 0: none yet
    std::vector<std::uint32_t> location_sites;
    std::unordered_map<std::string, std::uint64_t> function_ids;
    std::vector<std::uint32_t> function_sites;
    std::vector<std::uint64_t> function_of_location;
    std::string msg, sub;
    pb_writer w(out);
    auto value_type = [&](std::uint32_t field, std::string_view type, std::string_view unit) {
        sub.clear();
        pb_writer s(sub);
        s.int_field(1, str(type));
        s.int_field(2, str(unit));
        w.bytes_field(field, sub);
    };
    value_type(1, "contentions", "count");
    value_type(1, "delay", "nanoseconds");
    const std::int64_t reason_key = str("wait_reason");
    std::vector<std::uint64_t> locs;
    for (const wait_bucket& b : bs) {
        locs.clear();
        for (const site& s : b.stack) {
            std::uint32_t f = table.intern(s);
            if (location_of.size() < table.size()) location_of.resize(table.size(), 0);
            if (!location_of[f]) {
                location_of[f] = location_sites.size() + 1;
                location_sites.push_back(f);
                const site_info& si = table[f];
                std::string key = si.function;
                key.push_back('\0');
                key += si.file;
                auto [it, fresh] = function_ids.try_emplace(std::move(key), function_sites.size() + 1);
                if (fresh) function_sites.push_back(f);
                function_of_location.push_back(it->second);
            }
            locs.push_back(location_of[f]);
        }
        msg.clear();
        pb_writer s(msg);
        s.packed_field(1, locs.begin(), locs.end());
        const std::int64_t vals[2] = {std::max<std::int64_t>(1, std::llround(b.count)), std::llround(b.delay_ns)};
        s.packed_field(2, vals, vals + 2);
        sub.clear();
        pb_writer l(sub);
        l.int_field(1, reason_key);
        l.int_field(2, str(b.reason ? b.reason : "(other stacks)"));
        s.bytes_field(3, sub);
        w.bytes_field(2, msg);
    }
    msg.clear();
    {
        pb_writer m(msg);
        m.uint_field(1, 1);
        m.uint_field(3, std::uint64_t(1) << 48);
        m.int_field(5, str("goro"));
        m.bool_field(7, true);
        m.bool_field(8, true);
        m.bool_field(9, true);
    }
    w.bytes_field(3, msg);
    for (std::size_t i = 0; i < location_sites.size(); ++i) {
        const site_info& si = table[location_sites[i]];
        msg.clear();
        pb_writer m(msg);
        m.uint_field(1, i + 1);
        m.uint_field(2, 1);
        m.uint_field(3, si.id);
        sub.clear();
        pb_writer line(sub);
        line.uint_field(1, function_of_location[i]);
        line.int_field(2, si.line);
        m.bytes_field(4, sub);
        w.bytes_field(4, msg);
    }
    for (std::size_t i = 0; i < function_sites.size(); ++i) {
        const site_info& si = table[function_sites[i]];
        msg.clear();
        pb_writer m(msg);
        m.uint_field(1, i + 1);
        m.int_field(2, str(si.function));
        m.int_field(3, str(si.function));
        m.int_field(4, str(si.file));
        w.bytes_field(5, msg);
    }
    for (const std::string& s : strings) w.bytes_field(6, s);
    w.int_field(9, std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count());
    value_type(11, "contentions", "count");
    w.int_field(12, 1);
    return out;
}

}  // namespace detail

/// The wait profile: pprof protobuf (debug 0) or Go's debug=1 text (1).
inline std::string block_profile(int debug = 0) {
    if (debug != 0 && debug != 1)
        throw usage_error("goro::block_profile: debug must be 0 (pprof) or 1 (text), not " + std::to_string(debug));
    auto bs = detail::sorted_wait_buckets();
    return debug == 0 ? detail::block_profile_pprof(bs) : detail::block_profile_text(bs);
}

}  // namespace goro
