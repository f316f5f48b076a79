// goro/registry.hpp — every live task, listed from go() until its frame is destroyed.
//
// A `task_header` describes one root task (started by `go`) or one thread
// blocked in `block_on` (shown like Go's main goroutine). It is alive (listed,
// counted, seen by every walk) from go() until its frame is destroyed. Headers
// live in intrusive lists sharded by the thread that created them; like Go's
// `allgs`, a finished header stays linked, marked dead, and is reused by a
// later spawn on the same shard. So spawning takes a lock only to link a new
// header, and exiting takes none: exits hand dead headers back to their shard
// in batches of 64, by splicing a chain.
//
// THREAD SAFETY
//   * id, parent_id, spawn_site, kind, meta: written before the header is
//     published (linked), then immutable.
//   * state, wait_reason, since: atomics (relaxed). The task writes them when
//     it parks; a waker writes `state` from any thread.
//   * leaf and the frames' sites: written only by the thread running the task;
//     read by a snapshot while the world is stopped (the stop's handshake
//     orders them).
//   * dead: release-stored when a header comes alive (after its fields are
//     written) and when it dies; walks acquire it and skip dead headers. A
//     dead header's fields are written only by the thread reviving it.
//   * list links and the shard's dead list: under the shard's lock. A
//     header's `next_` is written once, before it is linked, and never again
//     (headers are never unlinked), so a walk that read a shard's head under
//     its lock may follow `next_` without the lock.
//   * prof_gen: the concurrent profile's claim (see PROFILE EPOCHS below).
//
// Ids come from a global counter in blocks of 64 per thread, so they are never
// reused and spawning does not contend on one cache line.
//
// PROFILE EPOCHS (the concurrent goroutine profile, as Go 1.19 takes it)
//   A profile stops the world only to start an epoch E (an even number) and to
//   note each shard's head; then the world runs again while the profiler walks
//   the lists. Each task is copied exactly once, as it was when the epoch
//   began, by whoever claims it first: the profiler's walk, or the worker about
//   to resume it (scheduler::run calls profile_before_resume). A claim is a CAS
//   of the header's prof_gen from an older value to E|1 ("being copied"); the
//   claimer copies and then stores E. Anyone who finds E|1 waits for E: a
//   worker must not resume a task whose frames are being read. Headers made
//   while the epoch is on start at E, so tasks spawned after the stop are not
//   in the profile; reviving a dead header waits out a claim the same way.
//   The profile ends by clearing `active` and waiting until no worker is
//   between its check of `active` and the end of its copy (`inflight`).
#pragma once

#include <array>
#include <atomic>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <goro/frame.hpp>
#include <goro/platform.hpp>
#include <goro/pool.hpp>
#include <goro/spinlock.hpp>

namespace goro {

/// What a task is doing, as a dump shows it.
enum class task_state : std::uint8_t {
    runnable,  ///< ready, waiting for a worker
    running,   ///< a worker is running it now
    waiting,   ///< parked; `wait_reason` says on what
};

inline const char* to_string(task_state s) noexcept {
    switch (s) {
    case task_state::runnable: return "runnable";
    case task_state::running: return "running";
    case task_state::waiting: return "waiting";
    }
    return "unknown";
}

/// Wait reasons, in Go's words, so dumps read the same as Go's.
namespace wait_reason {
inline constexpr const char* chan_receive = "chan receive";
inline constexpr const char* chan_send = "chan send";
inline constexpr const char* chan_receive_nil = "chan receive (nil chan)";
inline constexpr const char* chan_send_nil = "chan send (nil chan)";
inline constexpr const char* select = "select";
inline constexpr const char* select_no_cases = "select (no cases)";
inline constexpr const char* sleep = "sleep";
inline constexpr const char* wait_group = "sync.WaitGroup.Wait";
inline constexpr const char* mutex_lock = "sync.Mutex.Lock";
inline constexpr const char* semacquire = "semacquire";
inline constexpr const char* context_done = "context done";
inline constexpr const char* block_on = "block_on";
}  // namespace wait_reason

/// A task's optional name and key/value labels (pprof labels), set at spawn.
struct task_options {
    std::string name{};
    std::vector<std::pair<std::string, std::string>> labels{};
};

enum class task_kind : std::uint8_t {
    task,     ///< a root task started by go()
    blocked,  ///< a plain thread waiting in block_on()
};

/// A task's name and labels, shared by its header and every snapshot record
/// of it. One pointer wide (a shared_ptr is two): the header of every parked
/// task carries one. The count lives in the block with the options.
class task_meta {
public:
    task_meta() noexcept = default;
    explicit task_meta(task_options o) : p_(new node{std::move(o), {1}}) {}
    task_meta(const task_meta& o) noexcept : p_(o.p_) {
        if (p_) p_->refs.fetch_add(1, std::memory_order_relaxed);
    }
    task_meta(task_meta&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    task_meta& operator=(const task_meta& o) noexcept {
        task_meta(o).swap(*this);
        return *this;
    }
    task_meta& operator=(task_meta&& o) noexcept {
        if (this != &o) {
            reset();
            p_ = std::exchange(o.p_, nullptr);
        }
        return *this;
    }
    ~task_meta() {
        if (p_) release(p_);
    }

    void swap(task_meta& o) noexcept { std::swap(p_, o.p_); }
    void reset() noexcept {
        if (p_) release(std::exchange(p_, nullptr));
    }
    const task_options* get() const noexcept { return p_ ? &p_->options : nullptr; }
    const task_options* operator->() const noexcept { return get(); }
    const task_options& operator*() const noexcept { return p_->options; }
    explicit operator bool() const noexcept { return p_ != nullptr; }
    friend bool operator==(const task_meta& a, const task_meta& b) noexcept { return a.p_ == b.p_; }

private:
    struct node {
        task_options options;
        std::atomic<std::size_t> refs;
    };
    // Out of line: most tasks have no name, and the check above is all they pay.
    [[gnu::noinline]] static void release(node* p) noexcept {
        if (p->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete p;
    }
    node* p_ = nullptr;
};

// 88 bytes on g++ (a million parked tasks carry a million headers), 8-byte
// aligned so that the general allocator adds nothing (see goro/pool.hpp). The
// first 48 bytes are what the worker that runs, parks, wakes and retires the
// task touches; the rest is written at spawn and read by walks.
struct task_header {
    // --- hot: running, parking, waking, exiting ---
    // The leaf frame to resume. Atomic (relaxed: plain moves) only so that a
    // worker may read it of a queued task it does not own, to prefetch.
    std::atomic<void*> resume_addr_{nullptr};
    detail::promise_base* leaf = nullptr;           // innermost frame
    std::atomic<const char*> wait_reason{nullptr};  // state: atomics, see THREAD SAFETY
    std::atomic<std::int64_t> since_ns{0};          // coarse monotonic time it parked
    std::atomic<task_state> state{task_state::runnable};
    std::atomic<bool> dead{false};                  // finished (or not started): walks skip it
    task_kind kind = task_kind::task;
    std::uint8_t shard = 0;
    std::atomic<std::uint32_t> prof_gen{0};         // profile epoch claim, see PROFILE EPOCHS
    union {
        void* root_frame_ = nullptr;                // alive: the root frame, destroyed at exit
        task_header* next_runnable_;                // dead: the link of a retired or dead list
    };
    // --- cold: the registry list (shard lock) and identity (immutable while alive) ---
    task_header* next_ = nullptr;
    std::uint64_t id = 0;
    std::uint64_t parent_id = 0;                    // 0: spawned outside any task
    detail::site spawn_site{};
    task_meta meta;                                 // empty when no name or labels

    std::coroutine_handle<> resume_point() const noexcept {
        return std::coroutine_handle<>::from_address(resume_addr_.load(std::memory_order_relaxed));
    }
    void set_resume_point(std::coroutine_handle<> h) noexcept {
        resume_addr_.store(h.address(), std::memory_order_relaxed);
    }
};

namespace detail {

inline constexpr std::size_t registry_shards = 64;
static_assert(registry_shards < 256, "task_header::shard is one byte, and registry_shards itself means 'not linked'");

/// Headers this thread retired and has not handed back to their shard yet,
/// and dead headers this thread took from its shard for reuse.
struct header_lists {
    task_header* retired;
    std::uint32_t nretired;
    task_header* spare;
    task_header* ahead;        // a header of `spare`, fetched already: see make_header
    std::uint32_t ahead_dist;  // how far down `spare` it is
};
inline thread_local constinit header_lists tls_headers{nullptr, 0, nullptr, nullptr, 0};

struct alignas(cache_line) registry_shard {
    spinlock lock;
    task_header* head = nullptr;          // every header of this shard, alive or dead
    task_header* dead = nullptr;          // dead ones, for reuse (linked by next_runnable_)
};

/// One thread's counts. Only its thread writes them (plain stores, no locked
/// instruction on the spawn and exit paths); readers sum every thread's.
struct alignas(cache_line) count_slot {
    std::atomic<std::int64_t> live{0};    // this thread's spawns minus its exits
    std::atomic<std::uint64_t> added{0};  // this thread's spawns (monotonic, for metrics)
    count_slot* next = nullptr;           // all slots, push-only (a slot outlives its thread)
};

inline std::atomic<count_slot*>& count_slots() noexcept {
    static std::atomic<count_slot*> head{nullptr};
    return head;
}

inline thread_local constinit count_slot* tls_count_slot = nullptr;

inline count_slot& my_count_slot() {
    if (count_slot* s = tls_count_slot) return *s;
    auto* s = new count_slot();  // never freed: the sums read it after the thread ends
    count_slot* h = count_slots().load(std::memory_order_relaxed);
    do s->next = h;
    while (!count_slots().compare_exchange_weak(h, s, std::memory_order_release, std::memory_order_relaxed));
    tls_count_slot = s;
    return *s;
}

/// The state of the concurrent profile (one at a time; see PROFILE EPOCHS).
struct profile_epoch_state {
    using record_fn = void (*)(void* ctx, task_header& h) noexcept;
    alignas(cache_line) std::atomic<bool> active{false};
    std::atomic<std::uint32_t> gen{0};   // the current or last epoch: even
    record_fn record = nullptr;          // written before active is set
    void* ctx = nullptr;
    alignas(cache_line) std::atomic<int> inflight{0};  // workers between the check of active and a copy's end
};

inline profile_epoch_state& profile_epoch() noexcept {
    static profile_epoch_state s;
    return s;
}

/// Waits a little for another thread's short copy (it may be descheduled).
inline void profile_backoff(unsigned& spins) noexcept {
    if (++spins < 256) cpu_relax();
    else std::this_thread::yield();
}

/// Claims `h` for epoch `e`: true if the caller must copy it and then call
/// profile_publish; false if it already is (or was) copied in this epoch.
inline bool profile_claim(task_header& h, std::uint32_t e) noexcept {
    std::uint32_t g = h.prof_gen.load(std::memory_order_acquire);
    unsigned spins = 0;
    for (;;) {
        if (g == e) return false;
        if (g == (e | 1)) {  // being copied by another thread: wait for it
            profile_backoff(spins);
            g = h.prof_gen.load(std::memory_order_acquire);
            continue;
        }
        if (h.prof_gen.compare_exchange_weak(g, e | 1, std::memory_order_acq_rel, std::memory_order_acquire))
            return true;
    }
}

inline void profile_publish(task_header& h, std::uint32_t e) noexcept {
    h.prof_gen.store(e, std::memory_order_release);
}

/// A worker is about to resume `h`: if a profile is on and has not copied `h`
/// yet, copy it now, before its frames change.
inline void profile_before_resume(task_header& h) noexcept {
    profile_epoch_state& p = profile_epoch();
    // Acquire, even when it reads false: the profile that just ended read
    // this task's frames before clearing `active`, and resuming writes them.
    if (!p.active.load(std::memory_order_acquire)) return;
    p.inflight.fetch_add(1, std::memory_order_seq_cst);
    if (p.active.load(std::memory_order_seq_cst)) {
        std::uint32_t e = p.gen.load(std::memory_order_relaxed);
        if (profile_claim(h, e)) {
            p.record(p.ctx, h);
            profile_publish(h, e);
        }
    }
    p.inflight.fetch_sub(1, std::memory_order_release);
}

/// Makes a dead header's claim current before it comes alive again: waits
/// out a profiler that is looking at it, then sets the current epoch, so a
/// profile that began before the revival does not list the new task.
inline void profile_revive(task_header& h) noexcept {
    // In a task on a worker, while no profile is on, nothing is to be done:
    // an epoch begins only when every worker has stopped between two tasks,
    // so none can begin before this task suspends, and the last one's walk
    // ended before it cleared `active` (acquire: its reads of the header came
    // before the writes of the revival). No claim is under way; a later epoch
    // claims the header as a task that existed when it began. (This spares a
    // spawn a locked instruction.)
    if (tls_current_task && !profile_epoch().active.load(std::memory_order_acquire)) return;
    std::uint32_t g = h.prof_gen.load(std::memory_order_acquire);
    unsigned spins = 0;
    for (;;) {
        if (g & 1) {
            profile_backoff(spins);
            g = h.prof_gen.load(std::memory_order_acquire);
            continue;
        }
        std::uint32_t e = profile_epoch().gen.load(std::memory_order_acquire);
        if (h.prof_gen.compare_exchange_weak(g, e, std::memory_order_acq_rel, std::memory_order_acquire)) return;
    }
}

class registry {
public:
    /// A header for a new task: a dead one of this thread's shard, reset, or a
    /// new one. It is not visible to walks until add().
    task_header* make_header() {
        header_lists& l = tls_headers;
        if (!l.spare) {
            registry_shard& sh = shards_[this_shard()];
            {
                std::lock_guard<spinlock> g(sh.lock);
                l.spare = sh.dead;
                sh.dead = nullptr;
            }
            l.ahead = l.spare;
            l.ahead_dist = 0;
        }
        if (task_header* h = l.spare) {
            l.spare = h->next_runnable_;
            prefetch_spares(l);
            // Dead, so no walk reads it: reset the fields of its last life.
            profile_revive(*h);
            h->next_runnable_ = nullptr;
            h->set_resume_point({});
            h->parent_id = 0;
            h->meta.reset();
            h->leaf = nullptr;
            h->wait_reason.store(nullptr, std::memory_order_relaxed);
            h->since_ns.store(0, std::memory_order_relaxed);
            h->state.store(task_state::runnable, std::memory_order_relaxed);
            h->kind = task_kind::task;
            return h;
        }
        auto* h = new (pool_allocate(sizeof(task_header))) task_header();
        h->dead.store(true, std::memory_order_relaxed);
        h->prof_gen.store(profile_epoch().gen.load(std::memory_order_acquire), std::memory_order_relaxed);
        h->shard = static_cast<std::uint8_t>(registry_shards);  // not linked yet
        return h;
    }

    /// The dead list is a chain through headers that another core retired, so
    /// each costs a miss, and the next one's address is in it. A cursor runs
    /// `spare_ahead` headers ahead of the next one out, fetching for writing;
    /// it steps twice per spawn until it is that far ahead (each step reads
    /// a header fetched at least one spawn earlier).
    static void prefetch_spares(header_lists& l) noexcept {
        constexpr std::uint32_t spare_ahead = 4;
        if (l.ahead_dist) --l.ahead_dist;  // the head moved one closer
        else l.ahead = l.spare;            // the cursor was the header just taken
        for (int step = 0; step < 2 && l.ahead && l.ahead_dist < spare_ahead; ++step) {
            task_header* nx = l.ahead->next_runnable_;
            if (!nx) break;
            __builtin_prefetch(nx, 1);
            __builtin_prefetch(reinterpret_cast<char*>(nx) + sizeof(task_header) - 1, 1);
            l.ahead = nx;
            ++l.ahead_dist;
        }
    }

    /// Lists `h` (from make_header, fields filled) and gives it a fresh id.
    void add(task_header* h) noexcept {
        h->id = next_id();
        std::size_t s = this_shard();
        registry_shard& sh = shards_[s];
        if (h->shard == registry_shards) {
            h->shard = static_cast<std::uint8_t>(s);
            std::lock_guard<spinlock> g(sh.lock);
            h->next_ = sh.head;
            sh.head = h;
            h->dead.store(false, std::memory_order_release);
        } else {
            // Already linked: a walk reads the fields only after seeing it alive.
            h->dead.store(false, std::memory_order_release);
        }
        count_slot& c = my_count_slot();
        c.live.store(c.live.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        c.added.store(c.added.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }

    /// A task has finished (its frame is destroyed): it stops counting at once
    /// and walks skip it; the header goes back to its shard's dead list later,
    /// with others, so that exits do not take the spawner's lock one by one.
    /// Like Go's allgs, headers stay linked for reuse and are never freed.
    void retire(task_header* h) noexcept {
        h->dead.store(true, std::memory_order_release);
        // Release: a reader that sees the count drop sees everything the task did.
        count_slot& c = my_count_slot();
        c.live.store(c.live.load(std::memory_order_relaxed) - 1, std::memory_order_release);
        header_lists& l = tls_headers;
        h->next_runnable_ = l.retired;
        l.retired = h;
        if (++l.nretired >= retire_batch) flush_retired();
    }

    /// Hands the headers this thread retired back to their shards (a worker
    /// calls it every 64 exits and before it sleeps): one short hold of each
    /// shard's lock per batch, splicing a chain; no neighbour is touched.
    void flush_retired() noexcept {
        header_lists& l = tls_headers;
        task_header* h = l.retired;
        l.retired = nullptr;
        l.nretired = 0;
        while (h) {
            std::uint8_t s = h->shard;
            task_header* first = nullptr;
            task_header* last = nullptr;
            task_header* rest = nullptr;
            while (h) {
                task_header* nx = h->next_runnable_;
                if (h->shard == s) {
                    h->next_runnable_ = first;
                    if (!first) last = h;
                    first = h;
                } else {
                    h->next_runnable_ = rest;
                    rest = h;
                }
                h = nx;
            }
            registry_shard& sh = shards_[s];
            {
                std::lock_guard<spinlock> g(sh.lock);
                last->next_runnable_ = sh.dead;
                sh.dead = first;
            }
            h = rest;
        }
    }

    /// Live tasks and blocked threads; no lock, no stop of the world. (Each
    /// thread counts its spawns minus its exits, so one slot alone can be
    /// negative; the sum is exact once the threads' stores are visible.)
    std::int64_t count() const noexcept {
        std::int64_t n = 0;
        for (count_slot* c = count_slots().load(std::memory_order_acquire); c; c = c->next)
            n += c->live.load(std::memory_order_acquire);
        return n;
    }

    /// Tasks and block_on threads ever listed (a monotonic counter, like
    /// Prometheus wants): started minus live is the number that finished.
    std::uint64_t total_added() const noexcept {
        std::uint64_t n = 0;
        for (count_slot* c = count_slots().load(std::memory_order_acquire); c; c = c->next)
            n += c->added.load(std::memory_order_relaxed);
        return n;
    }

    /// Calls `f(task_header&)` for every listed header with every shard locked,
    /// so the set cannot change during the walk. Keep `f` short and non-blocking.
    template <class F>
    void for_each_locked(F&& f) {
        for (auto& s : shards_) s.lock.lock();
        for (auto& s : shards_)
            for (task_header* h = s.head; h; h = h->next_)
                if (!h->dead.load(std::memory_order_acquire)) f(*h);
        for (auto& s : shards_) s.lock.unlock();
    }

    /// Locks every shard (spawns and exits wait) until `unlock_all`.
    void lock_all() noexcept { for (auto& s : shards_) s.lock.lock(); }
    void unlock_all() noexcept { for (auto& s : shards_) s.lock.unlock(); }
    /// Each shard's first header (call with every shard locked): a later walk
    /// may follow `next_` from these without the locks (see THREAD SAFETY).
    std::array<task_header*, registry_shards> heads_locked() const noexcept {
        std::array<task_header*, registry_shards> out{};
        for (std::size_t i = 0; i < registry_shards; ++i) out[i] = shards_[i].head;
        return out;
    }

    template <class F>
    void for_each_unlocked(F&& f) {
        for (auto& s : shards_)
            for (task_header* h = s.head; h; h = h->next_)
                if (!h->dead.load(std::memory_order_acquire)) f(*h);
    }

private:
    static constexpr std::uint32_t retire_batch = 64;

    static std::uint64_t next_id() noexcept {
        struct block { std::uint64_t next = 0, end = 0; };
        static thread_local block b;
        if (b.next == b.end) {
            b.next = global_ids().fetch_add(64, std::memory_order_relaxed);
            b.end = b.next + 64;
        }
        return b.next++;
    }
    static std::atomic<std::uint64_t>& global_ids() noexcept {
        static std::atomic<std::uint64_t> ids{1};
        return ids;
    }
    static std::size_t this_shard() noexcept {
        static std::atomic<std::size_t> rr{0};
        static thread_local std::size_t s = rr.fetch_add(1, std::memory_order_relaxed) % registry_shards;
        return s;
    }

    std::array<registry_shard, registry_shards> shards_{};
};

/// The process-wide registry. Never destroyed: tasks still parked at exit stay
/// listed (and reachable, so leak checkers do not report their frames).
inline registry& the_registry() noexcept {
    static registry* r = new registry();
    return *r;
}

/// Called when an exception escapes a task started by go(). The default
/// (replaced by goro/panic.hpp when included) prints it and terminates.
using panic_handler_fn = void (*)(task_header& task, std::exception_ptr error) noexcept;

inline void default_panic(task_header& task, std::exception_ptr error) noexcept {
    const char* what = "unknown exception";
    std::string text;
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        text = e.what();
        what = text.c_str();
    } catch (...) {
    }
    std::fprintf(stderr, "panic: %s\n\ngoroutine %llu [running]\n", what,
                 static_cast<unsigned long long>(task.id));
    std::fflush(stderr);
    std::terminate();
}

inline std::atomic<panic_handler_fn>& panic_handler() noexcept {
    static std::atomic<panic_handler_fn> h{&default_panic};
    return h;
}

/// A root frame has finished: destroy it, then unlist and free its header.
inline void finish_root(task_header* h, std::coroutine_handle<> frame) noexcept {
    h->leaf = nullptr;
    frame.destroy();
    the_registry().retire(h);
}

}  // namespace detail

/// The number of live tasks (and threads blocked in block_on), like
/// `runtime.NumGoroutine()`. Cheap: no stop of the world.
inline std::int64_t num_goroutines() noexcept { return detail::the_registry().count(); }

}  // namespace goro
