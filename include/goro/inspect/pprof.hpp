// goro/inspect/pprof.hpp — a snapshot as a pprof goroutine profile (profile.proto), and
// the grouped view of a snapshot that every output format is printed from.
//
//   std::string pb = goro::pprof_profile(goro::snapshot::take());
//   // write it to a file: `go tool pprof -top file`, `-traces`, `-base old new`
//
// THE VIEW (detail::profile_view). A snapshot holds, per task, raw site values
// (pointers to the compiler's static strings). A million parked tasks share a
// handful of distinct sites, so the view interns each site once: a small
// open-addressing table keyed on the site's pointers maps it to an index into
// `sites`, whose entry carries the cleaned function name, file, line and the
// stable site id (`goro::site_id`), all computed once. Two sites with equal
// content but different pointers (an inline function emitted in two
// translation units) get one index: entries are deduplicated by site id.
// Grouping then hashes small integers, not strings. Groups come out in Go's
// order: count descending, ties by the smallest task id.
//
// Two pseudo-sites stand for stacks that cannot be read: a task that never ran
// yet (its root frame has no site) shows `(not started)`; a task running on a
// worker that did not stop shows `(stack unavailable: running)`.
//
// THE ENCODER. profile.proto written by hand (varints and length-delimited
// fields; the string table starts with ""): sample_type and period_type
// goroutine/count as Go writes them (so `pprof -base` accepts a Go profile as
// the other side), period 1, one sample per group whose value is the count,
// location ids leaf first, one location per distinct site (address = site id),
// one function per distinct (name, file), labels as string sample labels, one
// mapping flagged as symbolized so pprof never tries to symbolize addresses.
// Uncompressed: pprof reads raw and gzipped profiles alike
// (`pprof_gzip` wraps it in a stored-block gzip for tools that insist).
//
// THREAD SAFETY: everything here works on a snapshot, a value; no lock, no
// stop of the world. Call from any thread.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <goro/core/hash_map.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/inspect/snapshot.hpp>
#include <goro/core/stack.hpp>

namespace goro {

namespace detail {

/// One distinct site of a snapshot, with its formatted pieces computed once.
struct site_info {
    std::uint64_t id = 0;   ///< goro::site_id (0 for the pseudo-sites)
    std::string function;   ///< cleaned name
    std::string file;
    std::uint32_t line = 0;
    char hex[20] = {};      ///< "0x…" of id
    std::uint8_t hex_len = 0;
    std::uint32_t function_width = 0;  ///< in code points, for Go's column alignment
};

inline std::uint32_t utf8_width(std::string_view s) noexcept {
    std::uint32_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

/// Appends `v` in hexadecimal with a 0x prefix, like Go's %#x.
inline std::size_t format_hex(char* out, std::uint64_t v) noexcept {
    static constexpr char digits[] = "0123456789abcdef";
    char tmp[16];
    std::size_t n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    out[0] = '0';
    out[1] = 'x';
    for (std::size_t i = 0; i < n; ++i) out[2 + i] = tmp[n - 1 - i];
    return n + 2;
}

/// Distinct sites of one snapshot. Index 0 and 1 are the pseudo-sites.
class site_table {
public:
    static constexpr std::uint32_t not_started = 0;
    static constexpr std::uint32_t running = 1;

    site_table() {
        add_pseudo("(not started)");
        add_pseudo("(stack unavailable: running)");
        slots_.assign(64, slot{});
    }

    /// The index of `s`, interning it on first sight.
    std::uint32_t intern(const site& s) {
        const char* file = s.file_name();
        const char* func = s.function_name();
        const std::uint32_t line = s.line(), col = s.column();
        if (file == last_.file && func == last_.func && line == last_.line && col == last_.col) return last_.index;
        std::uint64_t h = reinterpret_cast<std::uintptr_t>(file) * 0x9E3779B97F4A7C15ull;
        h ^= reinterpret_cast<std::uintptr_t>(func) * 0xC2B2AE3D27D4EB4Full;
        h ^= (std::uint64_t(line) << 32 | col) * 0x165667B19E3779F9ull;
        h ^= h >> 29;
        std::size_t mask = slots_.size() - 1;
        for (std::size_t i = h & mask;; i = (i + 1) & mask) {
            slot& sl = slots_[i];
            if (!sl.used) {
                sl = slot{file, func, line, col, make(s), true};
                last_ = sl;
                if (++used_ * 2 > slots_.size()) grow();
                return last_.index;
            }
            if (sl.file == file && sl.func == func && sl.line == line && sl.col == col) {
                last_ = sl;
                return sl.index;
            }
        }
    }

    const site_info& operator[](std::uint32_t i) const noexcept { return infos_[i]; }
    std::size_t size() const noexcept { return infos_.size(); }

private:
    struct slot {
        const char* file = nullptr;
        const char* func = nullptr;
        std::uint32_t line = 0, col = 0;
        std::uint32_t index = 0;
        bool used = false;
    };

    void add_pseudo(const char* name) {
        site_info si;
        si.function = name;
        si.hex_len = static_cast<std::uint8_t>(format_hex(si.hex, 0));
        si.function_width = utf8_width(si.function);
        infos_.push_back(std::move(si));
    }

    std::uint32_t make(const site& s) {
        const char* func = s.function_name();
        if (s.line() == 0 && (!func || !*func)) return not_started;  // a root frame that never ran
        std::uint64_t id = site_id(s);
        auto [it, fresh] = by_id_.try_emplace(id, static_cast<std::uint32_t>(infos_.size()));
        if (!fresh) return it->second;
        site_info si;
        si.id = id;
        si.function = clean_function_name(func ? func : "");
        si.file = s.file_name() ? s.file_name() : "";
        si.line = s.line();
        si.hex_len = static_cast<std::uint8_t>(format_hex(si.hex, id));
        si.function_width = utf8_width(si.function);
        infos_.push_back(std::move(si));
        return it->second;
    }

    void grow() {
        std::vector<slot> old(slots_.size() * 2);
        old.swap(slots_);
        std::size_t mask = slots_.size() - 1;
        for (const slot& sl : old) {
            if (!sl.used) continue;
            std::uint64_t h = reinterpret_cast<std::uintptr_t>(sl.file) * 0x9E3779B97F4A7C15ull;
            h ^= reinterpret_cast<std::uintptr_t>(sl.func) * 0xC2B2AE3D27D4EB4Full;
            h ^= (std::uint64_t(sl.line) << 32 | sl.col) * 0x165667B19E3779F9ull;
            h ^= h >> 29;
            std::size_t i = h & mask;
            while (slots_[i].used) i = (i + 1) & mask;
            slots_[i] = sl;
        }
    }

    std::vector<site_info> infos_;
    std::vector<slot> slots_;
    std::size_t used_ = 0;
    slot last_{};
    detail::hash_map<std::uint64_t, std::uint32_t> by_id_;
};

/// A snapshot with its sites interned and its tasks grouped, ready to print.
class profile_view {
public:
    explicit profile_view(const snapshot& s, bool want_groups = true) : snap_(s) {
        const auto& raw = s.sites();
        frame_site_.resize(raw.size());
        for (std::size_t i = 0; i < raw.size(); ++i) frame_site_[i] = table_.intern(raw[i]);
        if (want_groups) group();
    }

    const snapshot& snap() const noexcept { return snap_; }
    const site_info& site(std::uint32_t i) const noexcept { return table_[i]; }
    site_table& table() noexcept { return table_; }
    const std::vector<task_group>& groups() const noexcept { return groups_; }

    /// Indices of task `r`'s frames (into site()), leaf first; never empty.
    std::span<const std::uint32_t> frames(const task_record& r) const noexcept {
        static constexpr std::uint32_t running_frame[1] = {site_table::running};
        static constexpr std::uint32_t unstarted_frame[1] = {site_table::not_started};
        if (!r.frames_known) return {running_frame, 1};
        if (r.frame_count == 0) return {unstarted_frame, 1};
        return {frame_site_.data() + r.first_frame, r.frame_count};
    }

    static const std::vector<std::pair<std::string, std::string>>& labels(const task_record& r) noexcept {
        static const std::vector<std::pair<std::string, std::string>> none;
        return r.meta ? r.meta->labels : none;
    }

    /// Same stack and same labels: one group.
    bool same_group(const task_record& a, const task_record& b) const {
        auto fa = frames(a), fb = frames(b);
        if (fa.size() != fb.size() || !std::equal(fa.begin(), fa.end(), fb.begin())) return false;
        return a.meta == b.meta || labels(a) == labels(b);
    }

    std::uint64_t group_key(const task_record& r) const noexcept {
        std::uint64_t h = 0xcbf29ce484222325ull;
        for (std::uint32_t f : frames(r)) {
            // Site ids, not indices: the key means the same in every snapshot (diff relies on it).
            std::uint64_t x = f < 2 ? 0xfeed0000ull + f : site(f).id;
            h = (h ^ x) * 0x100000001b3ull;
        }
        for (const auto& [k, v] : labels(r)) {
            for (char c : k) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
            h = (h ^ 0x3d) * 0x100000001b3ull;
            for (char c : v) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
            h = (h ^ 0x2c) * 0x100000001b3ull;
        }
        return h;
    }

private:
    void group() {
        const auto& tasks = snap_.tasks();
        hash_map<std::uint64_t, std::vector<std::uint32_t>> by_key;  // key -> groups (collisions)
        std::uint64_t last_key = 0;
        std::uint32_t last_group = UINT32_MAX;
        for (std::uint32_t i = 0; i < tasks.size(); ++i) {
            const task_record& r = tasks[i];
            std::uint64_t k = group_key(r);
            std::uint32_t gi = UINT32_MAX;
            // Neighbours usually share a stack: try the previous group before hashing.
            if (last_group != UINT32_MAX && k == last_key && same_group(tasks[groups_[last_group].tasks.front()], r))
                gi = last_group;
            if (gi == UINT32_MAX) {
                auto& cands = by_key[k];
                for (std::uint32_t c : cands)
                    if (same_group(tasks[groups_[c].tasks.front()], r)) {
                        gi = c;
                        break;
                    }
                if (gi == UINT32_MAX) {
                    gi = static_cast<std::uint32_t>(groups_.size());
                    cands.push_back(gi);
                    groups_.push_back(task_group{0, {}, k});
                }
            }
            groups_[gi].tasks.push_back(i);
            ++groups_[gi].count;
            last_key = k;
            last_group = gi;
        }
        // Tasks are in ascending id order, so each group's first task has its smallest id.
        std::sort(groups_.begin(), groups_.end(), [&](const task_group& a, const task_group& b) {
            if (a.count != b.count) return a.count > b.count;
            return tasks[a.tasks.front()].id < tasks[b.tasks.front()].id;
        });
    }

    const snapshot& snap_;
    site_table table_;
    std::vector<std::uint32_t> frame_site_;  // parallel to snap_.sites()
    std::vector<task_group> groups_;
};

// --- protobuf wire format ------------------------------------------------------

class pb_writer {
public:
    explicit pb_writer(std::string& out) : out_(out) {}

    void varint(std::uint64_t v) {
        char b[10];
        std::size_t n = 0;
        while (v >= 0x80) {
            b[n++] = static_cast<char>((v & 0x7f) | 0x80);
            v >>= 7;
        }
        b[n++] = static_cast<char>(v);
        out_.append(b, n);
    }
    void tag(std::uint32_t field, std::uint32_t wire) { varint(std::uint64_t(field) << 3 | wire); }
    /// A varint field; proto3 omits zero values.
    void uint_field(std::uint32_t field, std::uint64_t v) {
        if (v == 0) return;
        tag(field, 0);
        varint(v);
    }
    void int_field(std::uint32_t field, std::int64_t v) { uint_field(field, static_cast<std::uint64_t>(v)); }
    void bool_field(std::uint32_t field, bool v) { uint_field(field, v ? 1 : 0); }
    void bytes_field(std::uint32_t field, std::string_view b) {
        tag(field, 2);
        varint(b.size());
        out_.append(b.data(), b.size());
    }
    /// Packed repeated varints (how proto3 writes repeated scalars).
    template <class It>
    void packed_field(std::uint32_t field, It first, It last) {
        scratch_.clear();
        pb_writer inner(scratch_);
        for (; first != last; ++first) inner.varint(static_cast<std::uint64_t>(*first));
        bytes_field(field, scratch_);
    }

private:
    std::string& out_;
    std::string scratch_;
};

// --- gzip, stored blocks (no compression: no zlib dependency) -------------------

inline std::uint32_t crc32(std::string_view data) noexcept {
    static const auto table = [] {
        std::array<std::uint32_t, 256> t{};
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    std::uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : data) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

}  // namespace detail

/// Wraps `data` in a gzip member made of stored (uncompressed) deflate blocks.
inline std::string pprof_gzip(std::string_view data) {
    std::string out;
    out.reserve(data.size() + data.size() / 65535 * 5 + 32);
    const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255};  // no mtime: reproducible
    out.append(reinterpret_cast<const char*>(header), sizeof header);
    std::size_t pos = 0;
    do {
        std::size_t n = std::min<std::size_t>(65535, data.size() - pos);
        bool final_block = pos + n == data.size();
        char b[5] = {static_cast<char>(final_block ? 1 : 0), static_cast<char>(n & 0xff), static_cast<char>(n >> 8),
                     static_cast<char>(~n & 0xff), static_cast<char>((~n >> 8) & 0xff)};
        out.append(b, 5);
        out.append(data.data() + pos, n);
        pos += n;
    } while (pos < data.size());
    auto put32 = [&](std::uint32_t v) {
        for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    };
    put32(detail::crc32(data));
    put32(static_cast<std::uint32_t>(data.size()));
    return out;
}

namespace detail {

/// Encodes the view's groups as a profile.proto message into `out`.
inline void write_pprof(std::string& out, profile_view& v) {
    // Field numbers of profile.proto.
    enum : std::uint32_t {
        p_sample_type = 1, p_sample = 2, p_mapping = 3, p_location = 4, p_function = 5, p_string_table = 6,
        p_time_nanos = 9, p_period_type = 11, p_period = 12,
    };
    std::vector<std::string_view> strings{""};
    hash_map<std::string_view, std::int64_t> string_ids{{"", 0}};
    auto str = [&](std::string_view s) -> std::int64_t {
        auto [it, fresh] = string_ids.try_emplace(s, static_cast<std::int64_t>(strings.size()));
        if (fresh) strings.push_back(s);
        return it->second;
    };
    const auto& tasks = v.snap().tasks();

    // Locations: one per distinct site used by a group, numbered from 1 in first-use order.
    std::vector<std::uint64_t> location_of(v.table().size(), 0);
    std::vector<std::uint32_t> location_sites;
    // Functions: one per (name, file).
    hash_map<std::string, std::uint64_t> function_ids;
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
    value_type(p_sample_type, "goroutine", "count");

    std::vector<std::uint64_t> locs;
    for (const task_group& g : v.groups()) {
        const task_record& r = tasks[g.tasks.front()];
        locs.clear();
        for (std::uint32_t f : v.frames(r)) {
            if (!location_of[f]) {
                location_of[f] = location_sites.size() + 1;
                location_sites.push_back(f);
                const site_info& si = v.site(f);
                std::string fkey = si.function;
                fkey.push_back('\0');
                fkey += si.file;
                auto [it, fresh] = function_ids.try_emplace(std::move(fkey), function_sites.size() + 1);
                if (fresh) function_sites.push_back(f);
                function_of_location.push_back(it->second);
            }
            locs.push_back(location_of[f]);
        }
        msg.clear();
        pb_writer s(msg);
        s.packed_field(1, locs.begin(), locs.end());
        const std::int64_t count = static_cast<std::int64_t>(g.count);
        s.packed_field(2, &count, &count + 1);
        for (const auto& [k, val] : profile_view::labels(r)) {
            sub.clear();
            pb_writer l(sub);
            l.int_field(1, str(k));
            l.int_field(2, str(val));
            s.bytes_field(3, sub);
        }
        w.bytes_field(p_sample, msg);
    }

    // One mapping covering every site id (48 bits), marked symbolized.
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
    w.bytes_field(p_mapping, msg);

    for (std::size_t i = 0; i < location_sites.size(); ++i) {
        const site_info& si = v.site(location_sites[i]);
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
        w.bytes_field(p_location, msg);
    }
    for (std::size_t i = 0; i < function_sites.size(); ++i) {
        const site_info& si = v.site(function_sites[i]);
        msg.clear();
        pb_writer m(msg);
        m.uint_field(1, i + 1);
        m.int_field(2, str(si.function));
        m.int_field(3, str(si.function));
        m.int_field(4, str(si.file));
        w.bytes_field(p_function, msg);
    }
    for (std::string_view s : strings) w.bytes_field(p_string_table, s);
    auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
    w.int_field(p_time_nanos, wall);
    value_type(p_period_type, "goroutine", "count");
    w.int_field(p_period, 1);
}

}  // namespace detail

/// The snapshot as a pprof goroutine profile (uncompressed profile.proto bytes).
inline std::string pprof_profile(const snapshot& s) {
    detail::profile_view v(s);
    std::string out;
    detail::write_pprof(out, v);
    return out;
}

/// Takes a snapshot now and returns it as a pprof goroutine profile.
inline std::string pprof_profile() { return pprof_profile(snapshot::take()); }

}  // namespace goro
