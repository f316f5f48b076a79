// goro/registry.hpp — every live task, listed from go() until its frame is destroyed.
//
// A `task_header` describes one root task (started by `go`) or one thread
// blocked in `block_on` (shown like Go's main goroutine). Headers are linked
// into intrusive lists, sharded so that spawn and exit on different threads
// take different locks: a thread picks its shard once; a header remembers its
// shard so it can be unlinked from any thread.
//
// THREAD SAFETY
//   * id, parent_id, spawn_site, kind, meta: written before the header is
//     published (linked), then immutable.
//   * state, wait_reason, since: atomics (relaxed). The task writes them when
//     it parks; a waker writes `state` from any thread.
//   * leaf and the frames' sites: written only by the thread running the task;
//     read by a snapshot while the world is stopped (the stop's handshake
//     orders them).
//   * list links: under the shard's lock.
//
// Ids come from a global counter in blocks of 64 per thread, so they are never
// reused and spawning does not contend on one cache line.
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

struct task_header {
    // --- registry list (shard lock) ---
    task_header* prev_ = nullptr;
    task_header* next_ = nullptr;
    // --- run queues ---
    task_header* next_runnable_ = nullptr;          // intrusive link of the global queue
    std::coroutine_handle<> resume_point_{};        // the leaf frame to resume
    // --- identity (immutable once linked) ---
    std::uint64_t id = 0;
    std::uint64_t parent_id = 0;                    // 0: spawned outside any task
    detail::site spawn_site{};
    std::shared_ptr<const task_options> meta;       // null when no name or labels
    std::coroutine_handle<> root_{};                // the root frame, destroyed at exit
    detail::promise_base* leaf = nullptr;           // innermost frame
    // --- state (atomics; see THREAD SAFETY) ---
    std::atomic<const char*> wait_reason{nullptr};
    std::atomic<std::int64_t> since_ns{0};          // coarse monotonic time it parked
    std::atomic<task_state> state{task_state::runnable};
    std::atomic<bool> dead{false};                  // finished; unlinked later in a batch
    task_kind kind = task_kind::task;
    std::uint16_t shard = 0;
};

namespace detail {

inline constexpr std::size_t registry_shards = 64;

/// Headers this thread retired and has not unlinked yet.
struct retired_list {
    task_header* head;
    std::uint32_t count;
};
inline thread_local constinit retired_list tls_retired{nullptr, 0};

struct alignas(cache_line) registry_shard {
    spinlock lock;
    task_header* head = nullptr;
    std::atomic<std::int64_t> count{0};
    std::atomic<std::uint64_t> added{0};  // ever listed here (monotonic, for metrics)
};

class registry {
public:
    /// Links `h` into this thread's shard and gives it a fresh id.
    void add(task_header* h) noexcept {
        h->id = next_id();
        std::size_t s = this_shard();
        h->shard = static_cast<std::uint16_t>(s);
        registry_shard& sh = shards_[s];
        {
            std::lock_guard<spinlock> g(sh.lock);
            h->prev_ = nullptr;
            h->next_ = sh.head;
            if (sh.head) sh.head->prev_ = h;
            sh.head = h;
        }
        sh.count.fetch_add(1, std::memory_order_relaxed);
        sh.added.fetch_add(1, std::memory_order_relaxed);
    }

    /// A task has finished (its frame is destroyed): it stops counting at once
    /// and is skipped by every walk; the header is unlinked and freed later,
    /// with others, so that exits do not take the spawner's lock one by one.
    void retire(task_header* h) noexcept {
        h->dead.store(true, std::memory_order_release);
        // Release: a reader that sees the count drop sees everything the task did.
        shards_[this_shard()].count.fetch_sub(1, std::memory_order_release);
        retired_list& r = tls_retired;
        h->next_runnable_ = r.head;
        r.head = h;
        if (++r.count >= retire_batch) flush_retired();
    }

    /// Unlinks and frees the headers this thread retired (a worker calls it
    /// every 64 exits and before it sleeps).
    void flush_retired() noexcept {
        retired_list& r = tls_retired;
        task_header* h = r.head;
        r.head = nullptr;
        r.count = 0;
        while (h) {
            registry_shard& sh = shards_[h->shard];
            std::lock_guard<spinlock> g(sh.lock);
            // Unlink every retired header of this shard in one hold of its lock.
            task_header* rest = nullptr;
            while (h) {
                task_header* nx = h->next_runnable_;
                if (&shards_[h->shard] == &sh) {
                    if (h->prev_) h->prev_->next_ = h->next_;
                    else sh.head = h->next_;
                    if (h->next_) h->next_->prev_ = h->prev_;
                    h->~task_header();
                    pool_free(h, sizeof(task_header));
                } else {
                    h->next_runnable_ = rest;
                    rest = h;
                }
                h = nx;
            }
            h = rest;
        }
    }

    /// Live tasks and blocked threads; no lock, no stop of the world. (Each
    /// shard counts its thread's spawns minus its thread's exits, so one shard
    /// alone can be negative; the sum is exact.)
    std::int64_t count() const noexcept {
        std::int64_t n = 0;
        for (auto& s : shards_) n += s.count.load(std::memory_order_acquire);
        return n;
    }

    /// Tasks and block_on threads ever listed (a monotonic counter, like
    /// Prometheus wants): started minus live is the number that finished.
    std::uint64_t total_added() const noexcept {
        std::uint64_t n = 0;
        for (auto& s : shards_) n += s.added.load(std::memory_order_relaxed);
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
