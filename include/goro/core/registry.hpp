// goro/core/registry.hpp — every live task, listed from go() until its frame is destroyed.
//
// A `task_header` describes one root task (started by `go`) or one thread
// blocked in `block_on` (shown like Go's main goroutine). It is alive (listed,
// counted, seen by every walk) from go() until its frame is destroyed. Headers
// live in intrusive lists sharded by the thread that created them; like Go's
// `allgs`, a finished header stays linked, marked dead, and is reused by a
// later spawn on the same shard. So spawning takes a lock only to link a new
// header, and exiting takes none: exits hand dead headers back to their shard
// in batches of 64, appended to the shard's array of dead headers.
//
// THREAD SAFETY
//   * id, kind and the cold part (parent_id, spawn_site, meta): written
//     before the header is published (linked), then immutable.
//   * state, wait_reason, since: atomics (relaxed). The task writes them when
//     it parks; a waker writes `state` from any thread.
//   * leaf and the frames' sites: written only by the thread running the task;
//     read by a snapshot with the world stopped (the stop's handshake orders
//     them), or by the thread holding the task's profile-epoch claim, which
//     no worker resumes it without (profile_epoch.hpp).
//   * dead: release-stored when a header comes alive (after its fields are
//     written) and when it dies; walks acquire it and skip dead headers. A
//     dead header's fields are written only by the thread reviving it.
//   * list links and the shard's dead array: under the shard's lock. A
//     header's `next_` is written once, before it is linked, and never again
//     (headers are never unlinked), so a walk that read a shard's head under
//     its lock may follow `next_` without the lock.
//   * prof_gen: the concurrent profile's claim (see goro/core/profile_epoch.hpp).
//
// Ids come from a global counter in blocks of 64 per thread, so they are never
// reused and spawning does not contend on one cache line.
//
// PROFILE EPOCHS: the concurrent goroutine profile's claim on each header
//   (`prof_gen`) and its protocol live in goro/core/profile_epoch.hpp.
#pragma once

#include <array>
#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <goro/core/frame.hpp>
#include <goro/core/linkage.hpp>
#include <goro/core/lock_rank.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/pool.hpp>
#include <goro/core/profile_epoch.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/thread_slot.hpp>

namespace goro {

/// What a task is doing, as a dump shows it.
enum class task_state : std::uint8_t {
    runnable,  ///< ready, waiting for a worker
    running,   ///< a worker is running it now
    waiting,   ///< parked; `wait_reason` says on what
};

GORO_DECL const char* to_string(task_state s) noexcept;

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
inline constexpr const char* rw_mutex_rlock = "sync.RWMutex.RLock";
inline constexpr const char* rw_mutex_lock = "sync.RWMutex.Lock";
inline constexpr const char* cond_wait = "sync.Cond.Wait";
inline constexpr const char* context_done = "context done";
inline constexpr const char* block_on = "block_on";
inline constexpr const char* external = "external";  ///< a foreign awaitable (goro/core/foreign.hpp)
inline constexpr const char* join = "join";  ///< a spawned task's join handle, when_all, when_any
inline constexpr const char* syscall = "syscall";  ///< goro::blocking (io/blocking.hpp)
inline constexpr const char* io_wait = "IO wait";  // goro/io/poller.hpp: a socket or fd not ready
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
    task_meta& operator=(task_meta&& o) noexcept;
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

namespace detail {
class registry;
}

/// The part of a task's header that is written at spawn and read only by
/// walks (snapshots, dumps, profiles). It lives apart from the header (see
/// task_header::cold), so the core that runs the task never touches its line.
struct task_header_cold {
    std::uint64_t parent_id = 0;  // 0: spawned outside any task
    detail::site spawn_site{};
    task_meta meta;               // empty when no name or labels
};

// One cache line, aligned: what the worker that runs, parks, wakes and
// retires the task touches, and its identity. The rest (task_header_cold) is
// kept beside it in the same slab: headers are carved from slabs of 16 KiB,
// header lines first, then the cold parts, in the same order, so one is found
// from the other by arithmetic (and no allocator word sits between them).
// Why: a task is usually spawned on one core and run on another, and its
// header comes back to the spawner for reuse. Only this line moves between
// those cores, no two headers share a line, and the cold part, written at
// spawn, stays in the spawner's cache. A header and its cold part take 88 bytes on g++ (104
// on clang, whose sites are three words): a million parked tasks carry a
// million of them. Only the registry makes headers (they are never freed).
struct alignas(detail::cache_line) task_header {
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
    std::atomic<std::uint32_t> prof_gen{0};         // profile epoch claim, see profile_epoch.hpp
    void* root_frame_ = nullptr;                    // the root frame, destroyed at exit
    task_header* next_ = nullptr;                   // the registry list (shard lock)
    std::uint64_t id = 0;                           // immutable while alive

    std::coroutine_handle<> resume_point() const noexcept {
        return std::coroutine_handle<>::from_address(resume_addr_.load(std::memory_order_relaxed));
    }
    void set_resume_point(std::coroutine_handle<> h) noexcept {
        resume_addr_.store(h.address(), std::memory_order_relaxed);
    }

    /// Parent id, spawn site, name and labels (see task_header_cold).
    task_header_cold& cold() noexcept;
    const task_header_cold& cold() const noexcept;

private:
    friend class detail::registry;
    task_header() noexcept = default;
};
static_assert(sizeof(task_header) == detail::cache_line, "task_header: one line (the cold rest lives beside it)");

namespace detail {

/// A slab of headers: `count` header lines, then their cold parts, then the
/// link to the previous slab (slabs are never freed; the chain keeps them
/// reachable for leak checkers).
struct header_slab {
    static constexpr std::size_t bytes = 16384;
    static constexpr std::size_t count =
        (bytes - sizeof(void*)) / (sizeof(task_header) + sizeof(task_header_cold));
    static_assert(count >= 64, "header_slab: too few headers per slab");
    static char* base_of(const task_header* h) noexcept {
        return reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(h) & ~std::uintptr_t(bytes - 1));
    }
    static task_header_cold* cold_of(const task_header* h) noexcept {
        char* base = base_of(h);
        const std::size_t i = static_cast<std::size_t>(reinterpret_cast<const char*>(h) - base) / sizeof(task_header);
        return reinterpret_cast<task_header_cold*>(base + count * sizeof(task_header) + i * sizeof(task_header_cold));
    }
    static void*& link_of(char* base) noexcept {
        return *reinterpret_cast<void**>(base + bytes - sizeof(void*));
    }
};

}  // namespace detail

inline task_header_cold& task_header::cold() noexcept { return *std::launder(detail::header_slab::cold_of(this)); }
inline const task_header_cold& task_header::cold() const noexcept {
    return *std::launder(detail::header_slab::cold_of(this));
}

namespace detail {

inline constexpr std::size_t registry_shards = 64;
static_assert(registry_shards < 256, "task_header::shard is one byte, and registry_shards itself means 'not linked'");

/// An array of dead headers: a shard's, filled by the threads that retire
/// them, or a spawner's, taken whole from its shard. An array rather than a
/// chain through the headers, so a spawner can fetch the headers it will
/// reuse several spawns ahead without reading each to find the next.
struct dead_array {
    task_header** v;
    std::uint32_t n;    // entries
    std::uint32_t cap;  // room
};

/// Headers a thread retires before it hands them back to their shard.
inline constexpr std::uint32_t retire_batch = 64;

/// Headers this thread retired and has not handed back to their shard yet
/// (an array: handing them back reads no header to find the next), and dead
/// headers this thread took from its shard for reuse.
struct header_lists {
    task_header* retired[retire_batch];
    std::uint32_t nretired;
    std::uint32_t next_spare;  // the next entry of `spare` to reuse
    dead_array spare;
};
inline thread_local constinit header_lists tls_headers{{}, 0, 0, {nullptr, 0, 0}};

struct alignas(cache_line) registry_shard {
    ranked_lock<spinlock, lock_rank::registry_shard> lock;
    task_header* head = nullptr;          // every header of this shard, alive or dead
    dead_array dead{nullptr, 0, 0};       // dead ones, for reuse
    std::uint32_t linked = 0;             // headers in the list (they are never unlinked)
};

/// One thread's counts. Only its thread writes them (plain stores, no locked
/// instruction on the spawn and exit paths); readers sum every thread's.
struct alignas(cache_line) count_slot {
    std::atomic<std::int64_t> live{0};    // this thread's spawns minus its exits
    std::atomic<std::uint64_t> added{0};  // this thread's spawns (monotonic, for metrics)
    count_slot* next = nullptr;           // thread_slots' list (a slot outlives its thread)
};

inline count_slot& my_count_slot() { return thread_slots<count_slot>::mine(); }

class registry {
public:
    /// A header for a new task: a dead one of this thread's shard, reset, or a
    /// new one. It is not visible to walks until add().
    task_header* make_header();

    /// Lists `h` (from make_header, fields filled) and gives it a fresh id.
    /// Returns this thread's count of live tasks (its spawns minus its exits,
    /// so it may exceed the total): the spawner grows the scheduler's global
    /// queue when it reaches a power of two (go.hpp), as add() grows the
    /// shard's dead array when the shard's list does.
    std::int64_t add(task_header* h) noexcept;

    /// A task has finished (its frame is destroyed): it stops counting at once
    /// and walks skip it; the header goes back to its shard's dead list later,
    /// with others, so that exits do not take the spawner's lock one by one.
    /// Like Go's allgs, headers stay linked for reuse and are never freed.
    void retire(task_header* h) noexcept;

    /// Hands the headers this thread retired back to their shards (a worker
    /// calls it every 64 exits and before it sleeps): one short hold of each
    /// shard's lock per batch, appending to its array; no neighbour is touched.
    void flush_retired() noexcept;

    /// Live tasks and blocked threads; no lock, no stop of the world. (Each
    /// thread counts its spawns minus its exits, so one slot alone can be
    /// negative; the sum is exact once the threads' stores are visible.)
    std::int64_t count() const noexcept;

    /// Tasks and block_on threads ever listed (a monotonic counter, like
    /// Prometheus wants): started minus live is the number that finished.
    std::uint64_t total_added() const noexcept;

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
    std::array<task_header*, registry_shards> heads_locked() const noexcept;

    template <class F>
    void for_each_unlocked(F&& f) {
        for (auto& s : shards_)
            for (task_header* h = s.head; h; h = h->next_)
                if (!h->dead.load(std::memory_order_acquire)) f(*h);
    }

private:
    static constexpr std::uint32_t spare_ahead = 8;

    /// Takes this thread's shard's dead array whole, leaving it this thread's
    /// spent one (so the two arrays go back and forth, and stop growing).
    void take_spares(header_lists& l) noexcept;

    /// A header never used: the next one of this thread's slab (a new slab
    /// when it is used up), with its cold part.
    static task_header* fresh_header();

    /// A thread's spare array outlives it in its shard: the dead headers not
    /// reused yet go back there, and the array is freed.
    struct spares_owner {
        registry* reg = nullptr;
        ~spares_owner();
    };

    void give_back_spares(header_lists& l) noexcept {
        append_dead(shards_[this_shard()], l.spare.v + l.next_spare, l.spare.n - l.next_spare);
    }

    /// Appends `n` dead headers to a shard's array. Out of memory for a
    /// bigger array, they stay listed and dead, and are not reused.
    static void append_dead(registry_shard& sh, task_header* const* hs, std::uint32_t n) noexcept;

    // ROOM FOR DEAD HEADERS. When thousands of tasks end at once (a close, a
    // cancel), their headers come back to the shard in batches; an array
    // that grew then would be reallocated, and its new pages faulted in,
    // under the shard's lock that the spawner and every retiring worker
    // wait on. So the room is made at spawn: when a new header makes the
    // shard's list longer than its dead array, the array gets room for half
    // as many again (a shard never holds more dead headers than it lists;
    // 1.5, not 2: a million parked tasks carry this array). The new array
    // is allocated and touched before the lock is taken, and the old one
    // freed after; under the lock only the entries are copied. (After
    // take_spares swaps the shard's array with a spawner's smaller one, an
    // exit may have to grow it: outside the lock too, in append_dead.)

    static std::uint32_t room_for(std::uint32_t need) noexcept { return std::max<std::uint32_t>(need, 256); }

    /// Gives a shard's dead array room for `need` entries (see ROOM FOR DEAD
    /// HEADERS); false when memory is short.
    static bool reserve_dead(registry_shard& sh, std::uint32_t need) noexcept;

    static std::uint64_t next_id() noexcept;
    static std::atomic<std::uint64_t>& global_ids() noexcept;
    static std::size_t this_shard() noexcept;

    std::array<registry_shard, registry_shards> shards_{};
};

/// The process-wide registry. Never destroyed: tasks still parked at exit stay
/// listed (and reachable, so leak checkers do not report their frames).
inline registry& the_registry() noexcept {
    static registry* r = new registry();
    return *r;
}

/// Called when an exception escapes a task started by go(). The default
/// (replaced by goro/inspect/panic.hpp's report before the first task starts,
/// see go.hpp) prints it and terminates.
using panic_handler_fn = void (*)(task_header& task, std::exception_ptr error) noexcept;

GORO_DECL void default_panic(task_header& task, std::exception_ptr error) noexcept;

inline std::atomic<panic_handler_fn>& panic_handler() noexcept {
    static std::atomic<panic_handler_fn> h{&default_panic};
    return h;
}

/// A root frame has finished: destroy it, then unlist and free its header.
GORO_DECL void finish_root(task_header* h, std::coroutine_handle<> frame) noexcept;

}  // namespace detail

/// The number of live tasks (and threads blocked in block_on), like
/// `runtime.NumGoroutine()`. Cheap: no stop of the world.
inline std::int64_t num_goroutines() noexcept { return detail::the_registry().count(); }

}  // namespace goro

#if GORO_BODIES
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

namespace goro {

GORO_DECL const char* to_string(task_state s) noexcept {
    switch (s) {
    case task_state::runnable: return "runnable";
    case task_state::running: return "running";
    case task_state::waiting: return "waiting";
    }
    return "unknown";
}

GORO_DECL task_meta& task_meta::operator=(task_meta&& o) noexcept {
    if (this != &o) {
        reset();
        p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
}

namespace detail {

GORO_DECL task_header* registry::make_header() {
    header_lists& l = tls_headers;
    if (l.next_spare == l.spare.n) [[unlikely]] take_spares(l);
    if (l.next_spare != l.spare.n) {
        task_header** v = l.spare.v;
        const std::uint32_t i = l.next_spare++;
        // Headers come back from the core that ran them: fetch the one
        // `spare_ahead` places on for writing (both its lines), so its
        // misses overlap the spawns in between; and the array's line
        // further on, which that core wrote.
        if (i + spare_ahead < l.spare.n) {
            task_header* f = v[i + spare_ahead];
            prefetch_for_write(f);
            prefetch_for_write(header_slab::cold_of(f));  // normally in this core's cache already
            if (i + 3 * spare_ahead < l.spare.n) __builtin_prefetch(&v[i + 3 * spare_ahead]);
        }
        task_header* h = v[i];
        // Dead, so no walk reads it: reset the fields of its last life.
        profile_revive(*h);
        h->set_resume_point({});
        task_header_cold& c = h->cold();
        c.parent_id = 0;
        c.meta.reset();
        h->leaf = nullptr;
        h->wait_reason.store(nullptr, std::memory_order_relaxed);
        h->since_ns.store(0, std::memory_order_relaxed);
        h->state.store(task_state::runnable, std::memory_order_relaxed);
        h->kind = task_kind::task;
        return h;
    }
    task_header* h = fresh_header();
    h->dead.store(true, std::memory_order_relaxed);
    h->prof_gen.store(profile_epoch().gen.load(std::memory_order_acquire), std::memory_order_relaxed);
    h->shard = static_cast<std::uint8_t>(registry_shards);  // not linked yet
    return h;
}

GORO_DECL std::int64_t registry::add(task_header* h) noexcept {
    h->id = next_id();
    std::size_t s = this_shard();
    registry_shard& sh = shards_[s];
    if (h->shard == registry_shards) {
        h->shard = static_cast<std::uint8_t>(s);
        std::uint32_t linked;
        bool short_of_room;
        {
            std::lock_guard g(sh.lock);
            h->next_ = sh.head;
            sh.head = h;
            linked = ++sh.linked;
            short_of_room = linked > sh.dead.cap;
            h->dead.store(false, std::memory_order_release);
        }
        if (short_of_room) [[unlikely]] reserve_dead(sh, linked + linked / 2);
    } else {
        // Already linked: a walk reads the fields only after seeing it alive.
        h->dead.store(false, std::memory_order_release);
    }
    count_slot& c = my_count_slot();
    const std::int64_t live = c.live.load(std::memory_order_relaxed) + 1;
    c.live.store(live, std::memory_order_relaxed);
    c.added.store(c.added.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return live;
}

GORO_DECL void registry::retire(task_header* h) noexcept {
    h->dead.store(true, std::memory_order_release);
    // Release: a reader that sees the count drop sees everything the task did.
    count_slot& c = my_count_slot();
    c.live.store(c.live.load(std::memory_order_relaxed) - 1, std::memory_order_release);
    header_lists& l = tls_headers;
    l.retired[l.nretired] = h;
    if (++l.nretired == retire_batch) flush_retired();
}

GORO_DECL void registry::flush_retired() noexcept {
    header_lists& l = tls_headers;
    task_header** v = l.retired;
    const std::uint32_t n = l.nretired;
    l.nretired = 0;
    // Group by shard in place (usually there is one: the spawner's).
    for (std::uint32_t i = 0; i < n;) {
        const std::uint8_t s = v[i]->shard;
        std::uint32_t j = i + 1;
        for (std::uint32_t k = j; k < n; ++k)
            if (v[k]->shard == s) std::swap(v[j++], v[k]);
        append_dead(shards_[s], v + i, j - i);
        i = j;
    }
}

GORO_DECL std::int64_t registry::count() const noexcept {
    std::int64_t n = 0;
    for (count_slot* c = thread_slots<count_slot>::first(); c; c = c->next)
        n += c->live.load(std::memory_order_acquire);
    return n;
}

GORO_DECL std::uint64_t registry::total_added() const noexcept {
    std::uint64_t n = 0;
    for (count_slot* c = thread_slots<count_slot>::first(); c; c = c->next)
        n += c->added.load(std::memory_order_relaxed);
    return n;
}

GORO_DECL std::array<task_header*, registry_shards> registry::heads_locked() const noexcept {
    std::array<task_header*, registry_shards> out{};
    for (std::size_t i = 0; i < registry_shards; ++i) out[i] = shards_[i].head;
    return out;
}

GORO_DECL void registry::take_spares(header_lists& l) noexcept {
    registry_shard& sh = shards_[this_shard()];
    l.spare.n = 0;
    l.next_spare = 0;
    static thread_local spares_owner owner;  // gives the array back when the thread ends
    owner.reg = this;
    {
        std::lock_guard g(sh.lock);
        if (sh.dead.n == 0) return;
        std::swap(l.spare, sh.dead);
    }
    for (std::uint32_t i = 0; i < spare_ahead && i < l.spare.n; ++i) prefetch_for_write(l.spare.v[i]);
}

GORO_DECL task_header* registry::fresh_header() {
    struct cursor { char* base; std::size_t next; };
    static thread_local constinit cursor cur{nullptr, header_slab::count};
    if (cur.next == header_slab::count) {
        char* base = static_cast<char*>(::operator new(header_slab::bytes, std::align_val_t(header_slab::bytes)));
        static std::atomic<void*> slabs{nullptr};
        void* prev = slabs.load(std::memory_order_relaxed);
        do header_slab::link_of(base) = prev;
        while (!slabs.compare_exchange_weak(prev, base, std::memory_order_release, std::memory_order_relaxed));
        cur = {base, 0};
    }
    char* line = cur.base + cur.next * sizeof(task_header);
    ++cur.next;
    auto* h = new (line) task_header();
    new (header_slab::cold_of(h)) task_header_cold();
    return h;
}

GORO_DECL registry::spares_owner::~spares_owner() {
    header_lists& l = tls_headers;
    if (reg && l.next_spare != l.spare.n) reg->give_back_spares(l);
    std::free(l.spare.v);
    l.spare = {nullptr, 0, 0};
    l.next_spare = 0;
}

GORO_DECL void registry::append_dead(registry_shard& sh, task_header* const* hs, std::uint32_t n) noexcept {
    for (;;) {
        std::uint32_t need;
        {
            std::lock_guard g(sh.lock);
            need = sh.dead.n + n;
            if (need <= sh.dead.cap) {
                std::copy(hs, hs + n, sh.dead.v + sh.dead.n);
                sh.dead.n = need;
                return;
            }
        }
        if (!reserve_dead(sh, need + need / 2)) return;
    }
}

GORO_DECL bool registry::reserve_dead(registry_shard& sh, std::uint32_t need) noexcept {
    const std::uint32_t cap = room_for(need);
    const std::size_t bytes = std::size_t(cap) * sizeof(task_header*);
    auto* v = static_cast<task_header**>(std::malloc(bytes));
    if (!v) return false;
    std::memset(v, 0, bytes);  // its pages, faulted in here rather than under the lock
    {
        std::lock_guard g(sh.lock);
        if (sh.dead.cap < cap) {
            std::copy(sh.dead.v, sh.dead.v + sh.dead.n, v);
            std::swap(sh.dead.v, v);  // `v`: the old array, freed below
            sh.dead.cap = cap;
        }
    }
    std::free(v);
    return true;
}

GORO_DECL std::uint64_t registry::next_id() noexcept {
    struct block { std::uint64_t next = 0, end = 0; };
    static thread_local block b;
    if (b.next == b.end) {
        b.next = global_ids().fetch_add(64, std::memory_order_relaxed);
        b.end = b.next + 64;
    }
    return b.next++;
}

GORO_DECL std::atomic<std::uint64_t>& registry::global_ids() noexcept {
    static std::atomic<std::uint64_t> ids{1};
    return ids;
}

GORO_DECL std::size_t registry::this_shard() noexcept {
    static std::atomic<std::size_t> rr{0};
    static thread_local std::size_t s = rr.fetch_add(1, std::memory_order_relaxed) % registry_shards;
    return s;
}

GORO_DECL void default_panic(task_header& task, std::exception_ptr error) noexcept {
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

GORO_DECL void finish_root(task_header* h, std::coroutine_handle<> frame) noexcept {
    h->leaf = nullptr;
    frame.destroy();
    the_registry().retire(h);
}

}  // namespace detail
}  // namespace goro
#endif  // GORO_BODIES
