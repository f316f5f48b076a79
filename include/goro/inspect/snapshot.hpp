// goro/inspect/snapshot.hpp — a copy of every task's record, taken while the world
// runs, as Go 1.19 takes its goroutine profile.
//
//   request → stop the world → start an epoch → resume → copy records → group → format
//
// `goro::snapshot::take()` stops every worker at a safe point (see
// scheduler.hpp) only to start a profile epoch and note where each registry
// shard's list begins; then the world runs again. Each task alive at that
// moment is copied once, as it was then: by the walk that follows, or by the
// worker about to resume it, whichever claims it first (PROFILE EPOCHS in
// registry.hpp). The pause is therefore the same for ten tasks or a million.
// Names are cleaned, stacks grouped and text formatted after that, on the
// caller's thread.
//
// Every task alive when the epoch began appears exactly once (tasks spawned
// after it do not; one that exits meanwhile appears as it was); `total()`
// equals the sum of the group counts. The task calling take() from inside the
// pool is recorded as running with its frames as last suspended.
// `options::concurrent = false` copies everything with the world stopped.
//
// When a worker does not reach a safe point before the timeout (a task that
// never suspends, or a loaded machine), the snapshot still takes the epoch's
// way, and `all_stopped()` is false. Such a worker resumes tasks only through
// scheduler::run, which claims each task for the epoch once it can see it
// (profile_epoch.hpp); the tasks it may be running unclaimed are learnt from
// the scheduler (running_unclaimed), claimed by the profiler and recorded as
// running with `frames_known` false: their frames are changing, so neither
// their frames nor their `leaf` is read. Every other task is copied as above.
// As those workers did not stop, "when the epoch began" is not one instant
// for them: a task running there that exits just then may be left out, and
// one that has just suspended may show as running.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <goro/core/frame.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/stack.hpp>
#include <goro/core/vec.hpp>

namespace goro {

/// One task as the snapshot saw it. (64 bytes on g++: a profile of a million
/// tasks writes a million of these.)
struct task_record {
    std::uint64_t id = 0;
    std::uint64_t parent_id = 0;        ///< 0: spawned outside any task
    const char* wait_reason = nullptr;  ///< static string, Go's words; null unless waiting
    std::int64_t since_ns = 0;          ///< coarse monotonic time it parked (waiting only)
    detail::site created_by{};          ///< where go() / block_on() was called
    task_meta meta;                     ///< name and labels, or empty
    std::uint32_t first_frame = 0;      ///< index into snapshot::sites()
    std::uint32_t frame_count = 0;
    task_state state = task_state::runnable;
    task_kind kind = task_kind::task;
    bool frames_known = true;           ///< false: running on a worker that did not stop (stack unavailable)
};

/// Tasks with the same stack (and labels), as Go's debug=1 groups them.
struct task_group {
    std::size_t count = 0;
    std::vector<std::uint32_t> tasks;  ///< indices into snapshot::tasks(), in its order (ascending id when sorted)
    std::uint64_t key = 0;             ///< hash of the site chain and labels
    std::uint32_t first = 0;           ///< index of its task with the smallest id into snapshot::tasks()
};

/// A stable id for a site: the same file, line and function give the same id
/// in every run, so two dumps can be compared textually.
GORO_DECL std::uint64_t site_id(const detail::site& s) noexcept;

class snapshot {
public:
    /// The records and the sites: vectors whose storage, when big, is mapped
    /// in huge pages (detail::big_array_allocator).
    using task_list = std::vector<task_record, detail::big_array_allocator<task_record>>;
    using site_list = std::vector<detail::site, detail::big_array_allocator<detail::site>>;

    struct options {
        /// How long to wait for each worker to reach a safe point.
        std::chrono::nanoseconds stop_timeout = std::chrono::milliseconds(100);
        /// Copy the records while the world runs (Go 1.19's way): the world
        /// stops only to start a profile epoch. False: copy everything with
        /// the world stopped, or, when a worker did not stop, as if true.
        bool concurrent = true;
        /// Order tasks() by ascending id. False: in the order they were
        /// copied, for a caller that only groups them (debug=0 and 1 order
        /// their groups by count and smallest id either way), which spares
        /// the sort and its memory.
        bool sorted = true;
    };

    static snapshot take() { return take(options{}); }

    static snapshot take(const options& opt);

    std::size_t total() const noexcept { return tasks_.size(); }
    const task_list& tasks() const noexcept { return tasks_; }
    const site_list& sites() const noexcept { return sites_; }
    /// The sites of one task's stack, leaf first.
    std::span<const detail::site> stack(const task_record& r) const noexcept {
        return {sites_.data() + r.first_frame, r.frame_count};
    }
    /// Coarse monotonic time of the snapshot (compare with task_record::since_ns).
    std::int64_t taken_at_ns() const noexcept { return taken_at_ns_; }
    /// How long the world stayed stopped once every worker had stopped: the
    /// epoch's start, or the whole copy when it was taken with the world stopped.
    std::int64_t copy_ns() const noexcept { return pause_ns_; }
    /// Whether every worker reached a safe point within the stop timeout.
    /// False: the tasks that the others were running show as running, with
    /// `frames_known` false; every other task as usual.
    bool all_stopped() const noexcept { return all_stopped_; }

    /// Groups tasks by identical stack and labels, largest group first (ties:
    /// by the smallest task id), like Go's debug=1. (Each group's `tasks`
    /// ascend by id when the snapshot was taken `sorted`.)
    std::vector<task_group> groups() const;

    /// The hash that groups tasks: the stable ids of the stack's sites and the labels.
    std::uint64_t stack_key(const task_record& r) const;

private:
    /// site_id() of each distinct site, computed once (keyed by the site's
    /// static data, which is the same for every task suspended there).
    struct site_ids;

    std::uint64_t stack_key(const task_record& r, site_ids& ids) const;

    bool same_group(const task_record& a, const task_record& b, site_ids& ids) const;

    /// Ascending id. The walk copies each registry list newest first, so
    /// the records often arrive in descending order: that costs a reversal.
    /// Once headers of exited tasks have been reused, new ids sit among old
    /// ones and the order is mixed. Then the ids are sorted apart, as
    /// (id, index) pairs by radix (two passes for a range of 4 million ids),
    /// and each record is moved once to its place: a merge sort of the
    /// 64-byte records themselves made 16 passes over 64 MiB for a million
    /// tasks, and took longer than the rest of the profile together.
    void sort_by_id();

    static detail::ranked_lock<std::mutex, detail::lock_rank::snapshot>& profile_mutex() noexcept;

    /// Where the copies go: slots of the presized vectors, claimed with an
    /// atomic cursor by the profiler and by workers alike; a rare record that
    /// does not fit goes to a side list under a mutex.
    class collector;

    task_list tasks_;
    site_list sites_;
    std::int64_t taken_at_ns_ = 0;
    std::int64_t pause_ns_ = 0;
    bool all_stopped_ = true;
};

}  // namespace goro

#if GORO_BODIES
#include <bit>
#include <tuple>

#include <goro/core/algo.hpp>
#include <goro/core/hash_map.hpp>

namespace goro {

GORO_DECL std::uint64_t site_id(const detail::site& s) noexcept {
    std::uint64_t h = 1469598103934665603ull;
    auto mix = [&](const char* p) {
        for (; p && *p; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
    };
    mix(s.file_name());
    mix(s.function_name());
    h = (h ^ s.line()) * 1099511628211ull;
    return h & 0xffffffffffffull;  // 48 bits: reads like an address
}

struct snapshot::site_ids {
    struct key_hash {
        std::size_t operator()(const std::tuple<const char*, const char*, std::uint32_t>& k) const noexcept {
            auto a = reinterpret_cast<std::uintptr_t>(std::get<0>(k));
            auto b = reinterpret_cast<std::uintptr_t>(std::get<1>(k));
            return std::size_t((a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full) ^ std::get<2>(k));
        }
    };
    detail::hash_map<std::tuple<const char*, const char*, std::uint32_t>, std::uint64_t, key_hash> map;
    std::uint64_t operator()(const detail::site& s) {
        auto k = std::make_tuple(s.file_name(), s.function_name(), std::uint32_t(s.line()));
        auto it = map.find(k);
        if (it != map.end()) return it->second;
        return map.emplace(k, site_id(s)).first->second;
    }
};

class snapshot::collector {
public:
    explicit collector(snapshot& s) noexcept : s_(s), task_cap_(s.tasks_.size()), site_cap_(s.sites_.size()) {}

    static void record_thunk(void* self, task_header& h) noexcept {
        static_cast<collector*>(self)->record(h, false, true);
    }

    /// Copies `h`, alive and claimed by the caller (or the world stopped).
    /// `running`: it runs now. `frames`: read its frames (it does not run,
    /// or runs on the calling thread); false for a task running on a
    /// worker that did not stop: its leaf and frames are not touched.
    /// `last_site`: with `frames` false, the one frame to show (where a
    /// worker that did not stop resumed the task), if known.
    void record(task_header& h, bool running, bool frames, const detail::site* last_site = nullptr) noexcept {
        task_record r;
        r.id = h.id;
        r.parent_id = h.cold().parent_id;
        r.state = running ? task_state::running : h.state.load(std::memory_order_relaxed);
        r.kind = h.kind;
        r.created_by = h.cold().spawn_site;
        r.meta = h.cold().meta;
        if (r.state == task_state::waiting) {
            r.wait_reason = h.wait_reason.load(std::memory_order_relaxed);
            r.since_ns = h.since_ns.load(std::memory_order_relaxed);
        }
        std::uint32_t depth = 0;
        r.frames_known = frames || last_site;
        if (frames)
            for (const detail::promise_base* p = h.leaf; p; p = p->parent_) ++depth;
        else if (last_site)
            depth = 1;
        r.frame_count = depth;
        std::size_t off = nsites_.fetch_add(depth, std::memory_order_relaxed);
        std::size_t slot = ntasks_.fetch_add(1, std::memory_order_relaxed);
        if (off + depth <= site_cap_ && slot < task_cap_) {
            r.first_frame = static_cast<std::uint32_t>(off);
            if (frames) copy_sites(h, s_.sites_.data() + off, depth);
            else if (last_site) s_.sites_[off] = *last_site;
            s_.tasks_[slot] = std::move(r);
            return;
        }
        detail::vec<detail::site> sites(depth);  // rare: more than was counted
        if (frames) copy_sites(h, sites.data(), depth);
        else if (last_site) sites[0] = *last_site;
        std::lock_guard g(overflow_mu_);
        overflow_.emplace_back(std::move(r), std::move(sites));
        if (slot < task_cap_) s_.tasks_[slot].id = 0;  // an unused slot: dropped by finish()
    }

    /// After the last copy: trims the vectors and appends the overflow.
    void finish() {
        std::size_t n = std::min(ntasks_.load(), task_cap_);
        s_.tasks_.resize(n);
        std::erase_if(s_.tasks_, [](const task_record& r) { return r.id == 0; });
        s_.sites_.resize(std::min(nsites_.load(), site_cap_));
        for (auto& [r, sites] : overflow_) {
            r.first_frame = static_cast<std::uint32_t>(s_.sites_.size());
            for (const detail::site& st : sites) s_.sites_.push_back(st);
            s_.tasks_.push_back(std::move(r));
        }
    }

private:
    static void copy_sites(task_header& h, detail::site* out, std::uint32_t depth) noexcept {
        if (depth == 0) return;  // no frames, or not to be read: `leaf` may be changing
        const detail::promise_base* p = h.leaf;
        for (std::uint32_t i = 0; i < depth; ++i, p = p->parent_) out[i] = p->site_;
    }

    snapshot& s_;
    const std::size_t task_cap_, site_cap_;
    alignas(detail::cache_line) std::atomic<std::size_t> ntasks_{0};
    alignas(detail::cache_line) std::atomic<std::size_t> nsites_{0};
    detail::ranked_lock<std::mutex, detail::lock_rank::snapshot_overflow> overflow_mu_;
    detail::vec<std::pair<task_record, detail::vec<detail::site>>> overflow_;
};

GORO_DECL snapshot snapshot::take(const options& opt) {
    snapshot s;
    s.taken_at_ns_ = detail::coarse_now_ns();
    detail::registry& reg = detail::the_registry();
    // Sized (not just reserved) outside the stop, so that the pages are
    // touched now and the copy does not page-fault with the world stopped.
    std::size_t expect = static_cast<std::size_t>(std::max<std::int64_t>(0, reg.count()));
    s.tasks_.resize(expect + expect / 8 + 64);
    s.sites_.resize(2 * expect + 256);

    std::lock_guard one_at_a_time(profile_mutex());
    collector c(s);
    detail::scheduler* sched = detail::pool_started() ? &detail::the_scheduler() : nullptr;
    detail::stw_report rep;
    if (sched) rep = sched->stop_the_world(opt.stop_timeout);
    s.all_stopped_ = rep.all_stopped;
    auto t0 = detail::now_ns();
    reg.lock_all();
    task_header* self = detail::tls_current_task;
    if (!opt.concurrent && rep.all_stopped) {
        // Everything now: no task runs but the caller's own, on this thread.
        reg.for_each_unlocked([&](task_header& h) { c.record(h, &h == self, true); });
        reg.unlock_all();
        s.pause_ns_ = detail::now_ns() - t0;
        if (sched) sched->start_the_world();
    } else {
        // Start an epoch; copy the caller's own task now (it is running);
        // every other task is copied by the walk below or by the worker
        // that resumes it first (goro/core/profile_epoch.hpp).
        detail::profile_epoch_state& p = detail::profile_epoch();
        const std::uint32_t e = detail::profile_next_epoch(p);
        auto heads = reg.heads_locked();
        if (self && !self->dead.load(std::memory_order_acquire)) {
            c.record(*self, true, true);
            detail::profile_publish(*self, e);
        }
        detail::profile_activate(p, &collector::record_thunk, &c);
        reg.unlock_all();
        // Workers that did not stop resume tasks only through
        // scheduler::run, which claims each task once it can see the
        // epoch; the tasks they may be running unclaimed are these. Each
        // is claimed here, so no one else copies it, and recorded as
        // running without its frames, which are changing.
        detail::vec<task_header*> unclaimed;
        if (sched && !rep.all_stopped) unclaimed = sched->running_unclaimed(rep);
        for (task_header* h : unclaimed) {
            if (h == self) continue;
            detail::profile_copy(*h, e, [&](task_header& t) {
                // A stuck task shows the site its worker resumed it at, when known.
                detail::site at{};
                const bool known = sched->running_site(&t, at);
                if (!t.dead.load(std::memory_order_acquire)) c.record(t, true, false, known ? &at : nullptr);
            });
        }
        s.pause_ns_ = detail::now_ns() - t0;
        if (sched) sched->start_the_world();

        for (task_header* head : heads)
            for (task_header* h = head; h; h = h->next_)
                detail::profile_copy(*h, e, [&](task_header& t) {
                    if (!t.dead.load(std::memory_order_acquire)) c.record(t, false, true);
                });

        // End the epoch once no worker is between its check and its copy.
        detail::profile_end(p);
    }
    c.finish();
    if (opt.sorted) s.sort_by_id();
    return s;
}

GORO_DECL std::vector<task_group> snapshot::groups() const {
    // A million tasks share a few sites: hash each distinct site once.
    site_ids ids;
    detail::hash_map<std::uint64_t, std::vector<std::size_t>> by_key;  // key -> group indices (collisions)
    std::vector<task_group> out;
    for (std::uint32_t i = 0; i < tasks_.size(); ++i) {
        std::uint64_t k = stack_key(tasks_[i], ids);
        auto& cands = by_key[k];
        task_group* g = nullptr;
        for (std::size_t gi : cands)
            if (same_group(tasks_[out[gi].tasks.front()], tasks_[i], ids)) {
                g = &out[gi];
                break;
            }
        if (!g) {
            cands.push_back(out.size());
            out.push_back(task_group{0, {}, k, i});
            g = &out.back();
        }
        g->tasks.push_back(i);
        ++g->count;
        if (tasks_[i].id < tasks_[g->first].id) g->first = i;
    }
    detail::stable_sort(out.data(), out.data() + out.size(), [&](const task_group& a, const task_group& b) {
        if (a.count != b.count) return a.count > b.count;
        return tasks_[a.first].id < tasks_[b.first].id;
    });
    return out;
}

GORO_DECL std::uint64_t snapshot::stack_key(const task_record& r) const {
    site_ids ids;
    return stack_key(r, ids);
}

GORO_DECL std::uint64_t snapshot::stack_key(const task_record& r, site_ids& ids) const {
    std::uint64_t h = 0xcbf29ce484222325ull ^ r.frames_known;
    for (const auto& s : stack(r)) h = (h ^ ids(s)) * 0x100000001b3ull;
    if (r.meta)
        for (auto& [k, v] : r.meta->labels) {
            for (char c : k) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
            h = (h ^ 0x3d) * 0x100000001b3ull;
            for (char c : v) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
            h = (h ^ 0x2c) * 0x100000001b3ull;
        }
    return h;
}

GORO_DECL bool snapshot::same_group(const task_record& a, const task_record& b, site_ids& ids) const {
    if (a.frames_known != b.frames_known || a.frame_count != b.frame_count) return false;
    auto sa = stack(a), sb = stack(b);
    for (std::size_t i = 0; i < sa.size(); ++i)
        if (ids(sa[i]) != ids(sb[i])) return false;
    static const std::vector<std::pair<std::string, std::string>> none;
    const auto& la = a.meta ? a.meta->labels : none;
    const auto& lb = b.meta ? b.meta->labels : none;
    return la == lb;
}

GORO_DECL void snapshot::sort_by_id() {
    const std::size_t n = tasks_.size();
    task_record* t = tasks_.data();
    std::size_t up = 1, down = 1;  // lengths of the ascending and descending prefixes
    while (up < n && t[up - 1].id < t[up].id) ++up;
    while (down < n && t[down - 1].id > t[down].id) ++down;
    if (up >= n) return;
    if (down >= n) {
        for (std::size_t i = 0, j = n - 1; i < j; ++i, --j) std::swap(t[i], t[j]);
        return;
    }
    struct key {
        std::uint64_t id;  // minus the smallest id
        std::uint64_t at;  // index into tasks_
    };
    std::vector<key, detail::big_array_allocator<key>> space(2 * n);
    key* keys = space.data();
    key* spare = keys + n;
    std::uint64_t lo = t[0].id, hi = t[0].id;
    for (std::size_t i = 0; i < n; ++i) {
        lo = std::min(lo, t[i].id);
        hi = std::max(hi, t[i].id);
    }
    for (std::size_t i = 0; i < n; ++i) keys[i] = key{t[i].id - lo, i};
    // Least significant digit first, 11 bits a pass (the counts fit in L1).
    constexpr int digit = 11;
    constexpr std::size_t radix = std::size_t(1) << digit;
    const int bits = static_cast<int>(std::bit_width(hi - lo));
    for (int shift = 0; shift < bits; shift += digit) {
        std::size_t start[radix] = {};
        for (std::size_t i = 0; i < n; ++i) ++start[(keys[i].id >> shift) & (radix - 1)];
        std::size_t sum = 0;
        for (std::size_t& c : start) sum += std::exchange(c, sum);
        for (std::size_t i = 0; i < n; ++i) spare[start[(keys[i].id >> shift) & (radix - 1)]++] = keys[i];
        std::swap(keys, spare);
    }
    task_list sorted;
    sorted.reserve(n);
    for (std::size_t i = 0; i < n; ++i) sorted.push_back(std::move(t[keys[i].at]));
    tasks_.swap(sorted);
}

GORO_DECL detail::ranked_lock<std::mutex, detail::lock_rank::snapshot>& snapshot::profile_mutex() noexcept {
    static detail::ranked_lock<std::mutex, detail::lock_rank::snapshot> m;
    return m;
}

}  // namespace goro
#endif  // GORO_BODIES
