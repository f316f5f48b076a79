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
// THE ENCODER (detail::pprof_builder, which goro/inspect/block_profile.hpp
// uses too). profile.proto written by hand (varints and length-delimited
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

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <goro/core/hash_map.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/stack.hpp>
#include <goro/core/vec.hpp>
#include <goro/inspect/snapshot.hpp>

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

GORO_DECL std::uint32_t utf8_width(std::string_view s) noexcept;

/// Appends `v` in hexadecimal with a 0x prefix, like Go's %#x.
GORO_DECL std::size_t format_hex(char* out, std::uint64_t v) noexcept;

/// Distinct sites of one snapshot. Index 0 and 1 are the pseudo-sites.
class site_table {
public:
    static constexpr std::uint32_t not_started = 0;
    static constexpr std::uint32_t running = 1;

    site_table();

    /// The index of `s`, interning it on first sight.
    std::uint32_t intern(const site& s);

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

    void add_pseudo(const char* name);

    std::uint32_t make(const site& s);

    void grow();

    vec<site_info> infos_;
    vec<slot> slots_;
    std::size_t used_ = 0;
    slot last_{};
    detail::hash_map<std::uint64_t, std::uint32_t> by_id_;
};

/// A snapshot with its sites interned and its tasks grouped, ready to print.
/// What grouping to do: none (debug=2 prints task by task), the groups'
/// counts and first tasks only (debug=0 and 1, which print one stack per
/// group: no list of a million indices to build), or their members too
/// (JSON, the live page, diffs, leak reports).
enum class grouping { none, counts, members };

class profile_view {
public:
    explicit profile_view(const snapshot& s, grouping g = grouping::members);

    const snapshot& snap() const noexcept { return snap_; }
    const site_info& site(std::uint32_t i) const noexcept { return table_[i]; }
    site_table& table() noexcept { return table_; }
    const std::vector<task_group>& groups() const noexcept { return groups_; }

    /// Indices of task `r`'s frames (into site()), leaf first; never empty.
    std::span<const std::uint32_t> frames(const task_record& r) const noexcept;

    static const std::vector<std::pair<std::string, std::string>>& labels(const task_record& r) noexcept;

    /// Same stack and same labels: one group.
    bool same_group(const task_record& a, const task_record& b) const;

    std::uint64_t group_key(const task_record& r) const noexcept;

private:
    void group(bool members);

    const snapshot& snap_;
    site_table table_;
    std::vector<std::uint32_t, big_array_allocator<std::uint32_t>> frame_site_;  // parallel to snap_.sites()
    std::vector<task_group> groups_;
};

// --- protobuf wire format ------------------------------------------------------

class pb_writer {
public:
    explicit pb_writer(std::string& out) : out_(out) {}

    void varint(std::uint64_t v);
    void tag(std::uint32_t field, std::uint32_t wire) { varint(std::uint64_t(field) << 3 | wire); }
    /// A varint field; proto3 omits zero values.
    void uint_field(std::uint32_t field, std::uint64_t v);
    void int_field(std::uint32_t field, std::int64_t v) { uint_field(field, static_cast<std::uint64_t>(v)); }
    void bool_field(std::uint32_t field, bool v) { uint_field(field, v ? 1 : 0); }
    void bytes_field(std::uint32_t field, std::string_view b);
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

GORO_DECL std::uint32_t crc32(std::string_view data) noexcept;

}  // namespace detail

/// Wraps `data` in a gzip member made of stored (uncompressed) deflate blocks.
GORO_DECL std::string pprof_gzip(std::string_view data);

namespace detail {

/// Builds one profile.proto message, as every pprof profile of goro writes
/// it (the goroutine profile here, the wait and mutex profiles in
/// goro/inspect/block_profile.hpp): the string table (starting with ""),
/// one location per distinct site of `table` (address = site id), numbered
/// from 1 in first-use order, one function per distinct (name, file), one
/// mapping covering every site id and flagged as symbolized (so pprof never
/// tries to symbolize an address). Use in this order: sample_type()s, then
/// the samples (begin_sample, label, end_sample), then finish().
class pprof_builder {
public:
    // Field numbers of profile.proto.
    enum : std::uint32_t {
        p_sample_type = 1, p_sample = 2, p_mapping = 3, p_location = 4, p_function = 5, p_string_table = 6,
        p_time_nanos = 9, p_period_type = 11, p_period = 12,
    };

    /// Appends to `out`; the sites come from `table`, which may still grow
    /// while samples are added.
    pprof_builder(std::string& out, site_table& table) : w_(out), table_(table) { str(""); }

    /// The index of `s` in the string table, adding it on first sight.
    std::int64_t str(std::string_view s);

    void sample_type(std::string_view type, std::string_view unit) { value_type(p_sample_type, type, unit); }

    /// The location id of site `f` (an index into the table).
    std::uint64_t location(std::uint32_t f);

    /// A sample of sites `frames` (table indices, leaf first) and `values`
    /// (one per sample type); its labels follow with label(), then end_sample().
    template <class Frames>
    void begin_sample(const Frames& frames, std::span<const std::int64_t> values) {
        locs_.clear();
        for (std::uint32_t f : frames) locs_.push_back(location(f));
        msg_.clear();
        pb_writer s(msg_);
        s.packed_field(1, locs_.begin(), locs_.end());
        s.packed_field(2, values.begin(), values.end());
    }
    /// A string label of the sample begun last.
    void label(std::string_view key, std::string_view value);
    void end_sample() { w_.bytes_field(p_sample, msg_); }

    /// The mapping, locations, functions, string table, time and period.
    void finish(std::string_view period_type, std::string_view period_unit, std::int64_t period);

private:
    void value_type(std::uint32_t field, std::string_view type, std::string_view unit);

    pb_writer w_;
    site_table& table_;
    vec<std::unique_ptr<std::string>> strings_;
    hash_map<std::string_view, std::int64_t> string_ids_;
    vec<std::uint64_t> location_of_;  // by site index; 0: none yet
    std::vector<std::uint32_t> location_sites_;
    hash_map<std::string, std::uint64_t> function_ids_;  // "function\0file"
    std::vector<std::uint32_t> function_sites_;
    vec<std::uint64_t> function_of_location_;
    vec<std::uint64_t> locs_;
    std::string msg_, sub_;
};

/// Encodes the view's groups as a profile.proto message into `out`.
GORO_DECL void write_pprof(std::string& out, profile_view& v);

}  // namespace detail

/// The snapshot as a pprof goroutine profile (uncompressed profile.proto bytes).
GORO_DECL std::string pprof_profile(const snapshot& s);

/// Takes a snapshot now and returns it as a pprof goroutine profile.
inline std::string pprof_profile() { return pprof_profile(snapshot::take({.sorted = false})); }

}  // namespace goro

#if GORO_BODIES
#include <array>
#include <chrono>
#include <cstring>

#include <goro/core/algo.hpp>

namespace goro::detail {

GORO_DECL std::uint32_t utf8_width(std::string_view s) noexcept {
    std::uint32_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

GORO_DECL std::size_t format_hex(char* out, std::uint64_t v) noexcept {
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

GORO_DECL site_table::site_table() {
    add_pseudo("(not started)");
    add_pseudo("(stack unavailable: running)");
    slots_.assign(64, slot{});
}

GORO_DECL std::uint32_t site_table::intern(const site& s) {
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

GORO_DECL void site_table::add_pseudo(const char* name) {
    site_info si;
    si.function = name;
    si.hex_len = static_cast<std::uint8_t>(format_hex(si.hex, 0));
    si.function_width = utf8_width(si.function);
    infos_.push_back(std::move(si));
}

GORO_DECL std::uint32_t site_table::make(const site& s) {
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

GORO_DECL void site_table::grow() {
    vec<slot> old(slots_.size() * 2);
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

GORO_DECL profile_view::profile_view(const snapshot& s, grouping g) : snap_(s) {
    const auto& raw = s.sites();
    frame_site_.resize(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) frame_site_[i] = table_.intern(raw[i]);
    if (g != grouping::none) group(g == grouping::members);
}

GORO_DECL std::span<const std::uint32_t> profile_view::frames(const task_record& r) const noexcept {
    static constexpr std::uint32_t running_frame[1] = {site_table::running};
    static constexpr std::uint32_t unstarted_frame[1] = {site_table::not_started};
    if (!r.frames_known) return {running_frame, 1};
    if (r.frame_count == 0) return {unstarted_frame, 1};
    return {frame_site_.data() + r.first_frame, r.frame_count};
}

GORO_DECL const std::vector<std::pair<std::string, std::string>>& profile_view::labels(const task_record& r) noexcept {
    static const std::vector<std::pair<std::string, std::string>> none;
    return r.meta ? r.meta->labels : none;
}

GORO_DECL bool profile_view::same_group(const task_record& a, const task_record& b) const {
    auto fa = frames(a), fb = frames(b);
    if (fa.size() != fb.size() || !std::equal(fa.begin(), fa.end(), fb.begin())) return false;
    return a.meta == b.meta || labels(a) == labels(b);
}

GORO_DECL std::uint64_t profile_view::group_key(const task_record& r) const noexcept {
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

GORO_DECL void profile_view::group(bool members) {
    const auto& tasks = snap_.tasks();
    hash_map<std::uint64_t, std::vector<std::uint32_t>> by_key;  // key -> groups (collisions)
    std::uint64_t last_key = 0;
    std::uint32_t last_group = UINT32_MAX;
    for (std::uint32_t i = 0; i < tasks.size(); ++i) {
        const task_record& r = tasks[i];
        std::uint64_t k = group_key(r);
        std::uint32_t gi = UINT32_MAX;
        // Neighbours usually share a stack: try the previous group before hashing.
        if (last_group != UINT32_MAX && k == last_key && same_group(tasks[groups_[last_group].first], r))
            gi = last_group;
        if (gi == UINT32_MAX) {
            auto& cands = by_key[k];
            for (std::uint32_t c : cands)
                if (same_group(tasks[groups_[c].first], r)) {
                    gi = c;
                    break;
                }
            if (gi == UINT32_MAX) {
                gi = static_cast<std::uint32_t>(groups_.size());
                cands.push_back(gi);
                groups_.push_back(task_group{0, {}, k, i});
            }
        }
        task_group& g = groups_[gi];
        if (members) g.tasks.push_back(i);
        ++g.count;
        if (r.id < tasks[g.first].id) g.first = i;  // only when the snapshot is not sorted
        last_key = k;
        last_group = gi;
    }
    detail::stable_sort(groups_.data(), groups_.data() + groups_.size(), [&](const task_group& a, const task_group& b) {
        if (a.count != b.count) return a.count > b.count;
        return tasks[a.first].id < tasks[b.first].id;
    });
}

GORO_DECL void pb_writer::varint(std::uint64_t v) {
    char b[10];
    std::size_t n = 0;
    while (v >= 0x80) {
        b[n++] = static_cast<char>((v & 0x7f) | 0x80);
        v >>= 7;
    }
    b[n++] = static_cast<char>(v);
    out_.append(b, n);
}

GORO_DECL void pb_writer::uint_field(std::uint32_t field, std::uint64_t v) {
    if (v == 0) return;
    tag(field, 0);
    varint(v);
}

GORO_DECL void pb_writer::bytes_field(std::uint32_t field, std::string_view b) {
    tag(field, 2);
    varint(b.size());
    out_.append(b.data(), b.size());
}

GORO_DECL std::uint32_t crc32(std::string_view data) noexcept {
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

GORO_DECL std::int64_t pprof_builder::str(std::string_view s) {
    auto it = string_ids_.find(s);
    if (it != string_ids_.end()) return it->second;
    strings_.push_back(std::make_unique<std::string>(s));  // each string kept in place: string_ids_ points into it
    const std::string& kept = *strings_.back();
    const auto id = static_cast<std::int64_t>(strings_.size() - 1);
    string_ids_.emplace(std::string_view(kept), id);
    return id;
}

GORO_DECL std::uint64_t pprof_builder::location(std::uint32_t f) {
    if (location_of_.size() <= f) location_of_.resize(std::max<std::size_t>(table_.size(), f + 1));  // new entries 0
    if (!location_of_[f]) {
        location_of_[f] = location_sites_.size() + 1;
        location_sites_.push_back(f);
        const site_info& si = table_[f];
        std::string fkey = si.function;
        fkey.push_back('\0');
        fkey += si.file;
        auto [it, fresh] = function_ids_.try_emplace(std::move(fkey), function_sites_.size() + 1);
        if (fresh) function_sites_.push_back(f);
        function_of_location_.push_back(it->second);
    }
    return location_of_[f];
}

GORO_DECL void pprof_builder::label(std::string_view key, std::string_view value) {
    sub_.clear();
    pb_writer l(sub_);
    l.int_field(1, str(key));
    l.int_field(2, str(value));
    pb_writer(msg_).bytes_field(3, sub_);
}

GORO_DECL void pprof_builder::finish(std::string_view period_type, std::string_view period_unit, std::int64_t period) {
    msg_.clear();
    {
        pb_writer m(msg_);
        m.uint_field(1, 1);
        m.uint_field(3, std::uint64_t(1) << 48);
        m.int_field(5, str("goro"));
        m.bool_field(7, true);
        m.bool_field(8, true);
        m.bool_field(9, true);
    }
    w_.bytes_field(p_mapping, msg_);
    for (std::size_t i = 0; i < location_sites_.size(); ++i) {
        const site_info& si = table_[location_sites_[i]];
        msg_.clear();
        pb_writer m(msg_);
        m.uint_field(1, i + 1);
        m.uint_field(2, 1);
        m.uint_field(3, si.id);
        sub_.clear();
        pb_writer line(sub_);
        line.uint_field(1, function_of_location_[i]);
        line.int_field(2, si.line);
        m.bytes_field(4, sub_);
        w_.bytes_field(p_location, msg_);
    }
    for (std::size_t i = 0; i < function_sites_.size(); ++i) {
        const site_info& si = table_[function_sites_[i]];
        msg_.clear();
        pb_writer m(msg_);
        m.uint_field(1, i + 1);
        m.int_field(2, str(si.function));
        m.int_field(3, str(si.function));
        m.int_field(4, str(si.file));
        w_.bytes_field(p_function, msg_);
    }
    // The period type's strings go in before the table is written.
    const std::int64_t type = str(period_type), unit = str(period_unit);
    for (const auto& s : strings_) w_.bytes_field(p_string_table, *s);
    w_.int_field(p_time_nanos, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
    sub_.clear();
    pb_writer s(sub_);
    s.int_field(1, type);
    s.int_field(2, unit);
    w_.bytes_field(p_period_type, sub_);
    w_.int_field(p_period, period);
}

GORO_DECL void pprof_builder::value_type(std::uint32_t field, std::string_view type, std::string_view unit) {
    sub_.clear();
    pb_writer s(sub_);
    s.int_field(1, str(type));
    s.int_field(2, str(unit));
    w_.bytes_field(field, sub_);
}

GORO_DECL void write_pprof(std::string& out, profile_view& v) {
    pprof_builder b(out, v.table());
    b.sample_type("goroutine", "count");
    const auto& tasks = v.snap().tasks();
    for (const task_group& g : v.groups()) {
        const task_record& r = tasks[g.first];
        const std::int64_t count = static_cast<std::int64_t>(g.count);
        b.begin_sample(v.frames(r), {&count, 1});
        for (const auto& [k, val] : profile_view::labels(r)) b.label(k, val);
        b.end_sample();
    }
    b.finish("goroutine", "count", 1);
}

}  // namespace goro::detail

namespace goro {

GORO_DECL std::string pprof_gzip(std::string_view data) {
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

GORO_DECL std::string pprof_profile(const snapshot& s) {
    detail::profile_view v(s, detail::grouping::counts);
    std::string out;
    detail::write_pprof(out, v);
    return out;
}

}  // namespace goro
#endif  // GORO_BODIES
