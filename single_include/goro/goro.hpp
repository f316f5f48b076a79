// goro — single-header edition of goro/goro.hpp.
//
// GENERATED FILE: do not edit. It is produced by tools/amalgamate.py from the
// headers under include/goro/; edit those and run the script again.
// Use: #include <goro/goro.hpp> with -I single_include, -std=c++20 -pthread.
#pragma once

// ---- begin goro/goro.hpp ----
// goro/goro.hpp — everything goro offers, in one include.
//
// The layers, bottom to top; a header includes only headers of its own layer
// or of the layers below it (sync/ and inspect/ sit side by side and never
// include each other). One exception: core/go.hpp, where tasks start, includes
// inspect/panic.hpp and inspect/deadlock.hpp, so that the crash report and the
// deadlock report are there in every program that starts a task, whatever
// else it includes.
//
//   core/     platform, spinlock, pool, timer, frame, registry, scheduler,
//             task, go, stack: tasks on the worker pool, and their registry
//   sync/     channel, select, context, wait_group, mutex, semaphore, errgroup
//   inspect/  snapshot, pprof, dump, panic, leak_check, deadlock
//   http/     request, response, prometheus, address, server, routes,
//             debug_server: /debug/pprof/goroutine, /metrics, /debug/goro/…
//   io/       poller: the netpoller, wait_readable / wait_writable, io_error
//   net/      address, resolve, tcp (listener, stream), udp (udp_socket)
//
// goro/core.hpp is the same without http/, io/ and net/ (and is cheaper to compile); the
// test-framework integrations goro/catch2.hpp and goro/gtest.hpp are separate.


// ---- begin goro/core.hpp ----
// goro/core.hpp — tasks, channels, select, contexts, the rest of sync, and
// dump_goroutines(): what a program that uses goro needs, without the debug
// server (goro/goro.hpp adds it). The leak watch (inspect/leak_watch.hpp) and
// the block profile (inspect/block_profile.hpp) are in goro/goro.hpp, not here:
// include them by name to have them without the server.


// ---- begin goro/version.hpp ----
// goro/version.hpp — the library's version, for the preprocessor and for code.
//
// The top-level VERSION file is the one place the version is written for the
// build systems: meson reads it (`project(version : files('VERSION'))`) and so
// does CMake (`file(READ VERSION ...)`). A header-only library cannot generate
// this header at build time, so the three numbers below repeat it;
// `tests/consumers/check_version.py` fails when they, the single header, meson's
// project version, goro.pc and CMake's package version disagree. The string is
// spelled from the numbers, so it cannot drift from them.
//
//   #if GORO_VERSION >= GORO_MAKE_VERSION(0, 2, 0)   // compile-time test
//   std::cout << goro::version();                     // "0.1.0"

#include <string_view>

#define GORO_VERSION_MAJOR 0
#define GORO_VERSION_MINOR 1
#define GORO_VERSION_PATCH 0

#define GORO_MAKE_VERSION(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))
#define GORO_VERSION GORO_MAKE_VERSION(GORO_VERSION_MAJOR, GORO_VERSION_MINOR, GORO_VERSION_PATCH)

// Two levels so the arguments are expanded before they are stringized.
#define GORO_VERSION_STRINGIZE_(x) #x
#define GORO_VERSION_STRINGIZE(x) GORO_VERSION_STRINGIZE_(x)
#define GORO_VERSION_STRING                    \
    GORO_VERSION_STRINGIZE(GORO_VERSION_MAJOR) "." \
    GORO_VERSION_STRINGIZE(GORO_VERSION_MINOR) "." \
    GORO_VERSION_STRINGIZE(GORO_VERSION_PATCH)

namespace goro {

// The version as "MAJOR.MINOR.PATCH", usable in constant expressions.
constexpr std::string_view version() noexcept { return GORO_VERSION_STRING; }

}  // namespace goro
// ---- end goro/version.hpp ----

// ---- begin goro/core/platform.hpp ----
// goro/core/platform.hpp — compiler and machine shims shared by every goro header.
//
// What lives here:
//   * `goro::detail::site`: where a coroutine is suspended (file, line, function).
//     g++ 12 has `std::source_location` (one pointer to static data, so recording
//     a site is one store). clang++ 14 with libstdc++ 12 has no
//     `std::source_location`, so there a site is three words filled from
//     `__builtin_FILE/LINE/FUNCTION`, evaluated as defaulted arguments at the
//     call site. Both spell the same accessors. Use `GORO_SITE_PARAM` as the last
//     parameter of a function that records its caller's site.
//   * cache-line size, a spin-wait hint, a monotonic coarse clock, an
//     asymmetric fence (membarrier) for a rare side that must see a hot side's stores.
//   * `goro::error` and its subclasses: every misuse goro detects throws one of
//     these, with a message that names the operation.
//   * `machine_policy`: the atomics, fences and spin of the real machine, for
//     the protocols written against a policy (their tests swap in the model's).
//   * `big_array_allocator`: for the arrays a snapshot of a million tasks
//     fills (tens of MiB, written once): mapped in 2 MiB pages where it can.
//
// No test file of its own: each piece is a shim whose behaviour is what its
// users' tests check (sites: test_dump.cpp and test_stack.cpp; the fence:
// test_slot_handoff.cpp and test_spinlock.cpp, and the whole suite again
// without it, the `nofence` configuration; the errors: every test of a misuse).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include <memory>
#include <new>


// ---- begin goro/core/linkage.hpp ----
// goro/core/linkage.hpp — header-only (the default) or compiled once.
//
// Header-only: every function of the runtime is inline and defined in the
// headers. A program includes <goro/goro.hpp> and needs nothing else.
//
// Separate compilation: a program defines GORO_SEPARATE_COMPILATION in every
// translation unit (or compiles with -DGORO_SEPARATE_COMPILATION), and links
// the runtime compiled once: src/goro.cpp (meson: `goro_lib_dep`, or build
// it yourself). There, the headers declare the runtime's non-template
// functions and leave their bodies out, so a translation unit parses and
// compiles only the declarations and the templates it uses (channels, tasks,
// select). The translation unit that compiles the bodies defines
// GORO_IMPLEMENTATION before it includes <goro/goro.hpp>.
//
// A program uses one way throughout: a body compiled inline in one
// translation unit and out of line in another would be two definitions of one
// function.
//
// In a header, a non-template function that the runtime compiles once is
// declared, and then defined at the end of the header, in a section compiled
// only when GORO_BODIES is 1:
//
//     class timer_queue {
//         void add(timer_node* n);
//     };
//     #if GORO_BODIES
//     GORO_DECL void timer_queue::add(timer_node* n) { ... }
//     #endif
//
// A free function is declared with GORO_DECL too (`GORO_DECL void f();`),
// so that it is inline in header-only mode from its first declaration on.
// So is a virtual member function whose body moves (`GORO_DECL void f()
// override;`): declared without `inline`, it would be the class's key
// function, and every translation unit that includes the header would emit
// the class's vtable and everything it reaches, used or not (an unused
// include added 33 KB to a stripped binary before this rule).
// g++ rejects `[[gnu::noinline]]` after an inline declaration, so a noinline
// function is declared without GORO_DECL and defined `[[gnu::noinline]]
// GORO_DECL`, or stays where it is.
// Templates, constexpr functions and one-line accessors stay where they are.

#if defined(GORO_IMPLEMENTATION) && !defined(GORO_SEPARATE_COMPILATION)
#define GORO_SEPARATE_COMPILATION 1
#endif

#if defined(GORO_SEPARATE_COMPILATION)
#define GORO_DECL
#if defined(GORO_IMPLEMENTATION)
#define GORO_BODIES 1
#else
#define GORO_BODIES 0
#endif
#else
#define GORO_DECL inline
#define GORO_BODIES 1
#endif
// ---- end goro/core/linkage.hpp ----

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if __has_include(<source_location>)
#include <source_location>
#endif

#if defined(__cpp_lib_source_location) && __cpp_lib_source_location >= 201907L
#define GORO_HAS_SOURCE_LOCATION 1
#else
#define GORO_HAS_SOURCE_LOCATION 0
#endif

#if defined(__SANITIZE_THREAD__)
#define GORO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GORO_TSAN 1
#endif
#endif
#ifndef GORO_TSAN
#define GORO_TSAN 0
#endif

// big_array_allocator maps its arrays itself on Linux, except under
// AddressSanitizer (which should see their bounds).
#if !defined(__linux__) || defined(__SANITIZE_ADDRESS__)
#define GORO_BIG_ARRAY_MMAP 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GORO_BIG_ARRAY_MMAP 0
#endif
#endif
#ifndef GORO_BIG_ARRAY_MMAP
#define GORO_BIG_ARRAY_MMAP 1
#endif

namespace goro {

/// Base of every exception goro throws for a misuse or a failed operation.
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A goro API was used in a way it does not allow (e.g. `block_on` on a worker).
class usage_error : public error {
public:
    using error::error;
};

namespace detail {

#if GORO_HAS_SOURCE_LOCATION
/// A suspension or spawn site: one pointer to static data the compiler emits.
using site = std::source_location;
#define GORO_SITE_PARAM ::goro::detail::site goro_site_ = ::goro::detail::site::current()
#define GORO_SITE_ARG goro_site_
// The same parameter without its default (an out-of-line definition).
#define GORO_SITE_PARAM_DEF ::goro::detail::site goro_site_
#else
/// A suspension or spawn site, filled from the compiler builtins at the call site.
struct site {
    const char* file_ = "";
    const char* function_ = "";
    std::uint_least32_t line_ = 0;

    constexpr const char* file_name() const noexcept { return file_; }
    constexpr const char* function_name() const noexcept { return function_; }
    constexpr std::uint_least32_t line() const noexcept { return line_; }
    constexpr std::uint_least32_t column() const noexcept { return 0; }
};
#define GORO_SITE_PARAM                                                          \
    const char* goro_site_file_ = __builtin_FILE(),                              \
    const char* goro_site_func_ = __builtin_FUNCTION(),                          \
    unsigned goro_site_line_ = __builtin_LINE()
#define GORO_SITE_ARG (::goro::detail::site{goro_site_file_, goro_site_func_, goro_site_line_})
#define GORO_SITE_PARAM_DEF const char* goro_site_file_, const char* goro_site_func_, unsigned goro_site_line_
#endif

inline constexpr std::size_t cache_line = 64;

/// The spin-wait hint: tells the core that this thread busy-waits.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#else
    std::this_thread::yield();
#endif
}

#if defined(__x86_64__)
/// The CPU has PREFETCHW (every AMD64 CPU, Intel since Broadwell); set by
/// detect_cpu_features() before the first task starts. Until then it is
/// false, which only means a plain prefetch. Constant-initialised: no code
/// runs for it at start-up.
inline constinit std::atomic<bool> cpu_has_prefetchw{false};
#endif

/// Reads the CPU features that the hot paths test (go.hpp calls it once,
/// before the first task starts).
GORO_DECL void detect_cpu_features() noexcept;

/// Fetches the line at `p` for writing: into this core's cache, owned, so the
/// stores that follow do not wait for other cores' copies to be invalidated.
/// For the lines that cross between cores with every task (headers, frames),
/// which another core wrote last. On x86-64 this is PREFETCHW, emitted here:
/// `__builtin_prefetch(p, 1)` gives it only under -mprfchw (or a -march that
/// has it), and otherwise a read prefetch, which brings the line in shared,
/// so that the first store still has to ask for it. A hint: never faults.
inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__)
    if (cpu_has_prefetchw.load(std::memory_order_relaxed)) {
        asm volatile("prefetchw (%0)" : : "r"(p));
        return;
    }
#endif
    __builtin_prefetch(p, 1);
}

/// A full (sequentially consistent) fence, for "publish, then check" handshakes
/// between two threads. ThreadSanitizer does not model fences, so there both
/// sides perform a read-modify-write of one shared word instead, which orders
/// them just as well and is visible to the tool.
inline void seq_fence() noexcept {
#if GORO_TSAN
    static std::atomic<unsigned> word{0};
    word.fetch_add(0, std::memory_order_seq_cst);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

/// The asymmetric fence (Linux membarrier, private expedited): a rare side
/// calls asym_fence_heavy() and from then on sees every store that any other
/// thread of the process made before that thread's next load, as if each had
/// run a full fence; the hot side pays nothing but a compiler barrier.
/// asym_fence_available() registers the process once and says whether the
/// kernel offers it (Linux 4.14+); without it, callers keep their locked
/// instructions.
///
/// GORO_ASYM_FENCE=off in the environment (read once, at the first call)
/// makes it answer false, so the fallback paths run as on a kernel without
/// membarrier: CI runs the suite that way too.
GORO_DECL bool asym_fence_available() noexcept;

GORO_DECL void asym_fence_heavy() noexcept;

/// Monotonic time in nanoseconds from a clock that is cheap to read (a few ns,
/// millisecond-ish resolution): good enough for "parked for 5 minutes".
GORO_DECL std::int64_t coarse_now_ns() noexcept;

/// Monotonic time in nanoseconds, full resolution (same epoch as steady_clock on Linux).
GORO_DECL std::int64_t now_ns() noexcept;

/// The real machine: std::atomic, a compiler barrier, and membarrier. A lock-free
/// protocol written against a policy (slot_handoff.hpp, profile_epoch.hpp) is
/// instantiated with this one, and by its tests with the model checker's
/// (tests/model/model.hpp), whose every atomic operation is a step.
struct machine_policy {
    template <class U>
    using atomic = std::atomic<U>;
    /// The hot side's fence: keeps the compiler from reordering, costs nothing.
    static void fence_light() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }
    /// The rare side's fence: every other thread executes a full fence.
    static void fence_heavy() noexcept { asym_fence_heavy(); }
    /// One round of a wait for another thread's store.
    static void spin(int& spins) noexcept {
        if (++spins < 64) cpu_relax();
        else std::this_thread::yield();  // the other thread was descheduled
    }
};

/// An allocator for big arrays written once, front to back: a snapshot's
/// records and sites (goro/inspect/snapshot.hpp). From 256 KiB up it maps
/// the array itself (mmap), 2 MiB aligned and rounded up to 2 MiB, and asks
/// for transparent huge pages (madvise MADV_HUGEPAGE, honoured when the
/// system's setting is `madvise` or `always`), and unmaps it when freed.
/// Why: a million tasks' records are 64 MiB, and faulting those in 4 KiB at
/// a time (16 thousand faults, each a trip into the kernel, dear on a
/// virtual machine) took most of the profile's time; in 2 MiB pages it is
/// 32 faults. And malloc would keep such a block only while its mmap
/// threshold allows, so every profile would fault its pages in again.
/// Smaller arrays, other systems, and AddressSanitizer builds (which should
/// see every array's bounds) use ::operator new.
template <class T>
struct big_array_allocator {
    using value_type = T;
    static constexpr std::size_t map_from = std::size_t(256) << 10;
    static constexpr std::size_t huge_page = std::size_t(2) << 20;

    big_array_allocator() noexcept = default;
    template <class U>
    big_array_allocator(const big_array_allocator<U>&) noexcept {}

    T* allocate(std::size_t n) {
#if GORO_BIG_ARRAY_MMAP
        if (n >= map_from / sizeof(T) && n <= std::size_t(-1) / 4 / sizeof(T)) {  // (larger: let new fail)
            if (void* p = map(n * sizeof(T))) return static_cast<T*>(p);
            throw std::bad_alloc();
        }
#endif
        return std::allocator<T>().allocate(n);
    }

    void deallocate(T* p, std::size_t n) noexcept {
#if GORO_BIG_ARRAY_MMAP
        if (n >= map_from / sizeof(T) && n <= std::size_t(-1) / 4 / sizeof(T)) {
            ::munmap(p, round_up(n * sizeof(T)));
            return;
        }
#endif
        std::allocator<T>().deallocate(p, n);
    }

    friend bool operator==(const big_array_allocator&, const big_array_allocator&) noexcept { return true; }

private:
    static constexpr std::size_t round_up(std::size_t bytes) noexcept { return (bytes + huge_page - 1) & ~(huge_page - 1); }

#if GORO_BIG_ARRAY_MMAP
    /// `bytes` rounded up to 2 MiB, at a 2 MiB boundary: a range one huge
    /// page longer is mapped, and what lies outside the aligned part unmapped.
    static void* map(std::size_t bytes) noexcept {
        const std::size_t len = round_up(bytes);
        void* raw = ::mmap(nullptr, len + huge_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) return nullptr;
        char* base = static_cast<char*>(raw);
        char* p = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(base) + huge_page - 1) & ~(huge_page - 1));
        if (p != base) ::munmap(base, static_cast<std::size_t>(p - base));
        if (const std::size_t tail = static_cast<std::size_t>(base + len + huge_page - (p + len))) ::munmap(p + len, tail);
#if defined(MADV_HUGEPAGE)
        (void)::madvise(p, len, MADV_HUGEPAGE);  // a hint: without it, 4 KiB pages
#endif
        return p;
    }
#endif
};

}  // namespace detail
}  // namespace goro

#if GORO_BODIES
#include <ctime>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace goro::detail {

GORO_DECL void detect_cpu_features() noexcept {
#if defined(__x86_64__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    bool prefetchw = __get_cpuid(0x80000001u, &a, &b, &c, &d) != 0 && (c & (1u << 8)) != 0;  // PRFCHW
    cpu_has_prefetchw.store(prefetchw, std::memory_order_relaxed);
#endif
}

GORO_DECL bool asym_fence_available() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
    static const bool ok = [] {
        if (const char* v = std::getenv("GORO_ASYM_FENCE"); v && std::string_view(v) == "off") return false;
        constexpr int register_private_expedited = 1 << 4;  // MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED
        return ::syscall(SYS_membarrier, register_private_expedited, 0, 0) == 0;
    }();
    return ok;
#else
    return false;
#endif
}

GORO_DECL void asym_fence_heavy() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
    constexpr int private_expedited = 1 << 3;  // MEMBARRIER_CMD_PRIVATE_EXPEDITED
    (void)::syscall(SYS_membarrier, private_expedited, 0, 0);
#endif
}

GORO_DECL std::int64_t coarse_now_ns() noexcept {
    timespec ts;
#if defined(CLOCK_MONOTONIC_COARSE)
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

GORO_DECL std::int64_t now_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/core/platform.hpp ----

// ---- begin goro/core/frame.hpp ----
// goro/core/frame.hpp — the logical stack of a task: coroutine frames chained to a root.
//
//   registry ──► task_header ──leaf──► promise_base (innermost frame, parked here)
//                  ▲                        │ parent
//                  │ header                 ▼
//                  │                    promise_base (its caller)
//                  │                        │ parent
//                  └──────────────────  promise_base (the root task, started by go())
//
// Every goro coroutine frame's promise derives from `promise_base`. When a frame
// `co_await`s another task, the child's `parent` is set to the awaiting frame and
// the root's `leaf` to the child; when the child finishes, `leaf` goes back to the
// parent. Each frame records the site of its current suspension in
// `await_transform` (one store on g++). While a task is parked, every frame from
// the leaf to the root is a coroutine suspended at a recorded site, so the chain
// is the task's whole stack. Only the thread running the task writes the chain;
// a snapshot reads it with the world stopped.
//
// FOREIGN AWAITABLES. An awaitable that is not goro's (it carries no member
// `using is_goro_awaiter = void;`, nor does the awaiter its operator co_await
// returns) is wrapped by `await_transform` in a `foreign_awaiter`
// (goro/core/foreign.hpp): the task parks with wait reason "external" and the
// awaitable is handed a small relay handle instead of the frame's, so that a
// resumption on any thread makes the task runnable on the pool rather than
// running it there. Every goro awaiter carries the tag; one that parks the
// task itself (park/ready) and lacks it would be parked twice.
//
// Resumption goes through a per-thread trampoline (`run_trampoline`): a task
// awaiting a child hands the child to the trampoline instead of resuming it on
// its own stack, and a finishing child hands back its parent. g++ at -O0 and
// under the sanitizers does not turn symmetric transfer into a tail call, so a
// chain of a million awaits would overflow the stack; the trampoline keeps the
// native stack flat on every compiler and at every optimisation level.
//
// No test file of its own: the chain is what test_stack.cpp and test_dump.cpp
// read back (every frame, its site, a million-deep await), the trampoline what
// test_task.cpp runs, and the foreign wrapper test_foreign.cpp's subject.

#include <coroutine>
#include <cstdint>
#include <type_traits>
#include <utility>


// ---- begin goro/core/pool.hpp ----
// goro/core/pool.hpp — recycling of coroutine frames and task headers.
//
// A task's frame and header are allocated by the thread that spawns it and
// usually freed by another (the worker that ran it last), so the general
// allocator's per-thread caches never help either side. This pool keeps
// freed blocks in per-thread lists by size class and moves them between
// threads in batches of 64 through a global depot, so a spawn and an exit
// each cost a few instructions on the fast path.
//
// Size classes are 16 bytes apart, and a class's blocks are requested from
// the general allocator at 16·k − 8 bytes: glibc's malloc (like most) puts an
// 8-byte size word before each block and rounds to 16, so such a request
// occupies exactly 16·k bytes and nothing is wasted. (A million parked tasks
// are a million frames and headers: every byte of slack counts a megabyte.)
// Blocks are 16-byte aligned, which is what coroutine frames ask for.
//
// Blocks larger than the last class go straight to ::operator new. Memory in
// the pool is kept for reuse (like Go keeps exited goroutines' descriptors),
// up to a bound per size class in the depot; past it, batches go back to the
// general allocator. Under AddressSanitizer the pool is off, so
// use-after-free stays detectable.

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>


// ---- begin goro/core/spinlock.hpp ----
// goro/core/spinlock.hpp — a small test-and-test-and-set lock for critical sections
// of a few dozen instructions (a registry shard, a run queue's overflow, a
// channel). It spins with the pause hint, then yields the thread, so a holder
// that was descheduled does not burn a core forever. It satisfies Lockable.

#include <atomic>
#include <cstdint>


// ---- begin goro/core/lock_rank.hpp ----
// goro/core/lock_rank.hpp — every lock of goro has a rank; a thread takes locks
// in increasing rank, and debug builds check it.
//
//   detail::ranked_lock<detail::spinlock, detail::lock_rank::registry_shard> lock;
//   std::lock_guard g(lock);   // checked: aborts if this thread holds a lock of a higher rank
//
// THE ORDER (a thread holding a lock takes only locks further down; each line
// says why the ones below it can be taken under it):
//
//   panic_report       one crash report at a time; the report takes a snapshot
//   snapshot           one snapshot at a time; it stops the world
//   stop_the_world     the scheduler's stop; held while the registry is walked
//   registry_shard     the registry's lists; all 64 are held by a walk
//   snapshot_overflow  a snapshot's records beyond its estimate, added during a walk
//   deadlock_watch     the watchdog's list of block_on threads, read during a walk
//   context            a cancel node's children; arming its deadline adds a timer
//   time_chan          a goro::timer's or ticker's state: held while its tick is
//                      sent (Go's sendLock) and while it re-arms its timer node
//   channel            a channel's queues; select holds several, and arms a timer
//   sync_waiters       the waiter list of a mutex, semaphore or wait group; an errgroup's error
//   pool_holder        the making of the pool: the first use may come under any
//                      lock above; making it starts the timer
//   scheduler_procs    the active, stuck and spare workers (scheduler.hpp, STUCK
//                      WORKERS); activating one wakes it and takes the idle list
//   timer              the timer heap
//   scheduler_idle     the list of idle workers
//   global_queue       the run queue of tasks woken from outside the pool
//   blocking_pool      the queue of goro::blocking calls (io/blocking.hpp)
//   panic_hook         the installed crash hook
//   frame_pool         the frame allocator's shared depot (frames are made anywhere)
//
// Locks of one rank may be held together only when taken in increasing
// address order: select locks its channels so, and a registry walk its shards.
// A lock taken with try_lock never waits, so it is not checked when taken
// (it is recorded as held, and checked against what is taken under it).
//
// CHECKING is on when NDEBUG is not defined, or when GORO_LOCK_RANK_CHECK is
// defined to 1; GORO_LOCK_RANK_CHECK defined to 0 turns it off. Each thread
// keeps a small stack of the ranked locks it holds; a lock taken out of order,
// or twice, prints both locks' names and aborts: that order could deadlock
// with another thread that follows the table. Off, ranked_lock<L, R> is L with
// nothing added. Every translation unit of a program must agree on it (as
// with assert, it changes what the inline functions do).
//
// Locks of goro's HTTP server are not ranked: they are taken on its own
// threads and never under a lock of this table.

#include <cstdint>
#include <utility>


#ifndef GORO_LOCK_RANK_CHECK
#ifdef NDEBUG
#define GORO_LOCK_RANK_CHECK 0
#else
#define GORO_LOCK_RANK_CHECK 1
#endif
#endif

namespace goro::detail {

enum class lock_rank : std::uint8_t {
    panic_report = 1,
    snapshot,
    stop_the_world,
    registry_shard,
    snapshot_overflow,
    deadlock_watch,
    context,
    time_chan,
    channel,
    sync_waiters,
    pool_holder,
    scheduler_procs,
    timer,
    scheduler_idle,
    global_queue,
    blocking_pool,
    panic_hook,
    frame_pool,
};

GORO_DECL const char* to_string(lock_rank r) noexcept;

#if GORO_LOCK_RANK_CHECK

/// The ranked locks this thread holds, in the order taken.
struct held_locks {
    static constexpr unsigned capacity = 128;  // a registry walk holds 64
    struct entry {
        const void* lock;
        lock_rank rank;
    };
    entry v[capacity];
    unsigned n;
};
inline thread_local constinit held_locks tls_held_locks{{}, 0};

/// Before waiting for `lock`: every held lock must come before it.
GORO_DECL void lock_rank_check(lock_rank r, const void* lock) noexcept;

GORO_DECL void lock_rank_push(lock_rank r, const void* lock) noexcept;

/// Locks may be released in any order.
GORO_DECL void lock_rank_pop(const void* lock) noexcept;

/// `Lock` with its rank checked on lock, try_lock and unlock. Everything else
/// of `Lock` (constructors, other members) is as it is.
template <class Lock, lock_rank Rank>
class ranked_lock : public Lock {
public:
    using Lock::Lock;
    static constexpr lock_rank rank = Rank;

    void lock() noexcept(noexcept(std::declval<Lock&>().lock())) {
        lock_rank_check(Rank, this);
        Lock::lock();
        lock_rank_push(Rank, this);
    }
    bool try_lock() noexcept(noexcept(std::declval<Lock&>().try_lock())) {
        if (!Lock::try_lock()) return false;
        lock_rank_push(Rank, this);
        return true;
    }
    void unlock() noexcept(noexcept(std::declval<Lock&>().unlock())) {
        lock_rank_pop(this);
        Lock::unlock();
    }

    /// The lock without the check, for a std::condition_variable's
    /// unique_lock on the thread that only waits on it.
    Lock& unranked() noexcept { return *this; }
};

#else

template <class Lock, lock_rank Rank>
class ranked_lock : public Lock {
public:
    using Lock::Lock;
    static constexpr lock_rank rank = Rank;
    Lock& unranked() noexcept { return *this; }
};

#endif

}  // namespace goro::detail

#if GORO_BODIES
#include <cstdio>
#include <cstdlib>

namespace goro::detail {

GORO_DECL const char* to_string(lock_rank r) noexcept {
    switch (r) {
    case lock_rank::panic_report: return "panic report";
    case lock_rank::snapshot: return "snapshot";
    case lock_rank::stop_the_world: return "stop the world";
    case lock_rank::registry_shard: return "registry shard";
    case lock_rank::snapshot_overflow: return "snapshot overflow";
    case lock_rank::deadlock_watch: return "deadlock watch";
    case lock_rank::context: return "context";
    case lock_rank::time_chan: return "timer channel";
    case lock_rank::channel: return "channel";
    case lock_rank::sync_waiters: return "sync waiters";
    case lock_rank::timer: return "timer";
    case lock_rank::scheduler_idle: return "scheduler idle list";
    case lock_rank::global_queue: return "global run queue";
    case lock_rank::blocking_pool: return "blocking pool";
    case lock_rank::pool_holder: return "pool holder";
    case lock_rank::scheduler_procs: return "scheduler procs";
    case lock_rank::panic_hook: return "panic hook";
    case lock_rank::frame_pool: return "frame pool";
    }
    return "unknown";
}

#if GORO_LOCK_RANK_CHECK

[[noreturn, gnu::cold, gnu::noinline]] GORO_DECL void lock_rank_violation(lock_rank taking, const void* lock,
                                                                        lock_rank held, const void* held_lock) noexcept {
    std::fprintf(stderr,
                 "goro: lock order violated: taking the %s lock (rank %u, %p) while holding the %s lock (rank %u, "
                 "%p); see goro/core/lock_rank.hpp\n",
                 to_string(taking), static_cast<unsigned>(taking), lock, to_string(held),
                 static_cast<unsigned>(held), held_lock);
    std::fflush(stderr);
    std::abort();
}

GORO_DECL void lock_rank_check(lock_rank r, const void* lock) noexcept {
    held_locks& h = tls_held_locks;
    for (unsigned i = 0; i < h.n; ++i) {
        const held_locks::entry& e = h.v[i];
        if (e.rank > r || (e.rank == r && e.lock >= lock)) lock_rank_violation(r, lock, e.rank, e.lock);
    }
}

GORO_DECL void lock_rank_push(lock_rank r, const void* lock) noexcept {
    held_locks& h = tls_held_locks;
    if (h.n == held_locks::capacity) {
        std::fprintf(stderr, "goro: lock rank check: more than %u locks held by one thread\n", held_locks::capacity);
        std::abort();
    }
    h.v[h.n++] = {lock, r};
}

GORO_DECL void lock_rank_pop(const void* lock) noexcept {
    held_locks& h = tls_held_locks;
    for (unsigned i = h.n; i-- > 0;)
        if (h.v[i].lock == lock) {
            for (unsigned k = i + 1; k < h.n; ++k) h.v[k - 1] = h.v[k];
            --h.n;
            return;
        }
    std::fprintf(stderr, "goro: lock rank check: unlocking a lock (%p) this thread does not hold\n", lock);
    std::abort();
}

#endif  // GORO_LOCK_RANK_CHECK

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/core/lock_rank.hpp ----

// ---- begin goro/core/thread_slot.hpp ----
// goro/core/thread_slot.hpp — one slot per thread, in a list every thread can walk.
//
//   struct alignas(cache_line) my_slot { std::atomic<long> n{0}; my_slot* next = nullptr; };
//   detail::thread_slots<my_slot>::mine().n.store(...);          // only this thread writes
//   for (auto* s = detail::thread_slots<my_slot>::first(); s; s = s->next) ...  // anyone reads
//
// For per-thread data that other threads read: counts summed by readers, or
// what a thread publishes about itself to the threads it synchronises with.
// A thread's slot is made on its first call to mine() and pushed on the front
// of the list (a CAS: push-only, so a walk never sees a slot removed). Slots
// are never freed: a reader may walk the list after a thread has ended, and a
// slot's address may serve as the thread's name. Each `Slot` type has its own
// list; it needs a `Slot* next` member, and its own thread-safety rules for
// the rest.

#include <atomic>

namespace goro::detail {

template <class Slot>
class thread_slots {
public:
    /// The newest slot; follow `next` for the others (acquire: a slot is
    /// seen fully constructed).
    static Slot* first() noexcept { return head_.load(std::memory_order_acquire); }

    /// This thread's slot, made on first use.
    [[gnu::always_inline]] static Slot& mine() {
        if (Slot* s = tls_) return *s;
        return make();
    }

private:
    [[gnu::noinline]] static Slot& make() {
        auto* s = new Slot();  // never freed (see above)
        Slot* h = head_.load(std::memory_order_relaxed);
        do s->next = h;
        while (!head_.compare_exchange_weak(h, s, std::memory_order_release, std::memory_order_relaxed));
        tls_ = s;
        return *s;
    }

    static inline std::atomic<Slot*> head_{nullptr};
    static inline thread_local constinit Slot* tls_ = nullptr;
};

}  // namespace goro::detail
// ---- end goro/core/thread_slot.hpp ----

namespace goro::detail {

/// The atomics and the wait come from `Policy` (machine_policy in
/// platform.hpp); tests/test_spinlock.cpp runs the biased lock below, and this
/// one inside it, with the model checker's. Not noexcept: the model checker
/// unwinds a stuck thread through them (std::atomic never throws).
template <class Policy = machine_policy>
class basic_spinlock {
public:
    void lock() {
        for (;;) {
            if (!locked_.exchange(true, std::memory_order_acquire)) return;
            int spins = 0;
            while (locked_.load(std::memory_order_relaxed)) Policy::spin(spins);
        }
    }
    bool try_lock() {
        return !locked_.load(std::memory_order_relaxed) &&
               !locked_.exchange(true, std::memory_order_acquire);
    }
    void unlock() { locked_.store(false, std::memory_order_release); }

private:
    typename Policy::template atomic<bool> locked_{false};
};

using spinlock = basic_spinlock<>;

/// What a thread publishes for the biased locks (below), in its own cache
/// line: which biased locks it is inside by the fast path, and whether it is
/// updating a biased structure's lock-free words without the bias. Only its
/// thread writes it (plain stores); revokers and biasing threads read it.
/// One per thread (thread_slots<bias_slot>): never freed, since another
/// thread may read it after its thread has ended.
template <class Policy = machine_policy>
struct alignas(cache_line) basic_bias_slot {
    template <class U>
    using atomic = typename Policy::template atomic<U>;
    static constexpr int depth = 7;           // biased locks held at once by the fast path
    atomic<const void*> inside[depth] = {};   // the locks; null: a free entry
    atomic<bool> active{false};               // an unbiased lock-free update is under way
    basic_bias_slot* next = nullptr;          // thread_slots' list

    /// Records `lock` in a free entry: its index, or -1 when all are taken.
    [[gnu::always_inline]] int enter(const void* lock) {
        for (int i = 0; i < depth; ++i)
            if (!inside[i].load(std::memory_order_relaxed)) {
                inside[i].store(lock, std::memory_order_relaxed);
                return i;
            }
        return -1;
    }
    /// Removes `lock`; false if it was not recorded.
    [[gnu::always_inline]] bool leave(const void* lock) {
        for (int i = 0; i < depth; ++i)
            if (inside[i].load(std::memory_order_relaxed) == lock) {
                inside[i].store(nullptr, std::memory_order_release);
                return true;
            }
        return false;
    }
    /// Read by another thread: whether `lock` is recorded.
    bool holds(const void* lock) const {
        for (int i = 0; i < depth; ++i)
            if (inside[i].load(std::memory_order_acquire) == lock) return true;
        return false;
    }
};

using bias_slot = basic_bias_slot<>;

/// The biased lock's policy on the real machine: machine_policy, plus where
/// each thread's bias_slot is (thread_slots: made on first use, never freed)
/// and whether the heavy fence exists here. The model's is in test_spinlock.cpp.
struct machine_bias_policy : machine_policy {
    using slot = bias_slot;
    [[gnu::always_inline]] static slot& mine() noexcept { return thread_slots<bias_slot>::mine(); }
    static slot* first() noexcept { return thread_slots<bias_slot>::first(); }
    static bool heavy_fence_available() noexcept {
        static const bool ok = asym_fence_available();
        return ok;
    }
};

[[gnu::always_inline]] inline bias_slot& my_bias_slot() noexcept { return machine_bias_policy::mine(); }

/// This thread's name in a biased lock: the address of its bias_slot.
inline std::uintptr_t bias_thread_id() noexcept { return reinterpret_cast<std::uintptr_t>(&my_bias_slot()); }

/// A spinlock that one thread can take without a locked instruction while it
/// is the only one taking it: a lock "biased" towards that thread, as in the
/// JVM's biased locking, made safe by the asymmetric fence (membarrier). A
/// channel used by two tasks that run on one worker (Go's runnext keeps a
/// ping-pong there) is locked and unlocked four times per round trip by one
/// thread: with the bias those are plain loads and stores.
///
/// STATES (`bias_`): 0, unbiased: everybody takes the inner spinlock.
///   the owner's bias_slot address: biased to that thread. It locks by
///   recording the lock in its slot and checking that the bias is still its
///   own; nobody else enters until the bias is revoked. (The record is in the
///   owner's own memory: a thread that read a bias that is no longer its own
///   and records itself meanwhile disturbs no one.)
///   that address | 1: being revoked. The revoker set it by a compare-and-swap,
///   then runs asym_fence_heavy() and waits until the owner's slot no longer
///   records the lock. After the fence, either the owner's record is visible
///   (the revoker waits for its unlock) or the owner's check that follows it
///   sees the odd value (it backs off to the slow path). So owner and revoker
///   are never both inside. The revoker then takes the inner lock (an owner
///   that holds it, see below, finishes first) and sets 0.
/// BIASING: a holder of the inner lock that is the same thread for
///   `threshold_` acquisitions in a row (64 at first) makes the lock biased to
///   itself before it unlocks. Every revocation quadruples the threshold, so
///   a lock that two threads share keeps paying one fence now and then at
///   most, not one per acquisition. A thread that waited for the inner lock
///   checks the bias again once it has it: if someone else holds the bias, it
///   lets go and revokes. (The owner itself takes the inner lock when its
///   slot is full: more than bias_slot::depth biased locks at once.)
/// LOCK-FREE WORDS: a structure may also have words that threads update
///   without the lock (a channel's ring positions). Bracket each such update
///   with enter_words() / leave_words(): the bias's owner then gets its
///   slot's entry (>= 0) and may update them with plain stores, as under the
///   lock, because every other thread first revokes the bias. Another thread
///   gets -1 (and uses atomic read-modify-writes) after raising its slot's
///   `active` flag and seeing the lock unbiased. A thread that makes the lock biased runs
///   the heavy fence and waits until no other thread is active, so no update
///   that began before the bias is still under way when the owner starts its
///   plain stores. (The waits are for updates a few instructions long, and
///   biasing is rare.)
/// Without membarrier (asym_fence_available() false) no lock is ever biased.
template <class Policy = machine_bias_policy>
class basic_biased_spinlock {
    using slot = typename Policy::slot;

public:
    basic_biased_spinlock() noexcept = default;
    /// The streak that first earns the bias, and the most it can grow to
    /// (tests make both small, to bias and revoke thousands of times).
    basic_biased_spinlock(std::uint32_t first_threshold, std::uint32_t max_threshold) noexcept
        : max_threshold_(max_threshold), threshold_(first_threshold) {}

    [[gnu::always_inline]] void lock() {
        slot& me = Policy::mine();
        const std::uintptr_t id = reinterpret_cast<std::uintptr_t>(&me);
        if (enter_as_owner(me, id) < 0) lock_slow(id);
    }

    [[gnu::always_inline]] void unlock() {
        // Only this thread records itself in its slot: if it did, it holds
        // the lock by the fast path.
        slot& me = Policy::mine();
        if ((bias_.load(std::memory_order_relaxed) & ~std::uintptr_t(1)) == reinterpret_cast<std::uintptr_t>(&me) &&
            me.leave(this))
            return;
        inner_.unlock();
    }

    /// The thread the lock is biased to (its bias_thread_id(); 0: none), for tests.
    std::uintptr_t bias_owner() const { return bias_.load(std::memory_order_acquire) & ~std::uintptr_t(1); }

    /// Called by the holder of the lock: whether the words may be updated
    /// with plain stores (this thread owns the bias; a revoker waits for the
    /// lock before it lets anyone else at them).
    bool held_plain() const {
        return (bias_.load(std::memory_order_relaxed) & ~std::uintptr_t(1)) == reinterpret_cast<std::uintptr_t>(&Policy::mine());
    }

    /// A lock-free update of the words begins (lock not held). At least 0:
    /// this thread owns the bias, plain stores are safe until
    /// leave_words(that value); -1: update them atomically, then leave_words(-1).
    [[gnu::always_inline]] int enter_words() {
        slot& me = Policy::mine();
        const std::uintptr_t id = reinterpret_cast<std::uintptr_t>(&me);
        const int i = enter_as_owner(me, id);
        return i >= 0 ? i : enter_words_slow(me, id);
    }

    [[gnu::always_inline]] void leave_words(int entry) {
        slot& me = Policy::mine();
        if (entry >= 0) me.inside[entry].store(nullptr, std::memory_order_release);
        else me.active.store(false, std::memory_order_release);
    }

private:
    /// The owner's way in: records this lock in its slot, then checks that the
    /// bias is still its own. The entry used, or -1 (not the owner, the bias
    /// was just lost, or the slot is full).
    [[gnu::always_inline]] int enter_as_owner(slot& me, std::uintptr_t id) {
        if (bias_.load(std::memory_order_relaxed) != id) return -1;
        const int i = me.enter(this);
        if (i < 0) return -1;
        Policy::fence_light();  // a revoker's heavy fence orders the rest
        if (bias_.load(std::memory_order_relaxed) == id) return i;
        me.inside[i].store(nullptr, std::memory_order_release);
        return -1;
    }

    [[gnu::noinline]] int enter_words_slow(slot& me, std::uintptr_t id) {
        int spins = 0;
        for (;;) {
            std::uintptr_t b = bias_.load(std::memory_order_relaxed);
            if (b == id) {
                const int i = enter_as_owner(me, id);
                if (i >= 0) return i;
                // Lost the bias meanwhile (look again), or no free entry
                // (many biased locks held): then unbias this one.
                if (bias_.load(std::memory_order_relaxed) == id) revoke(id);
                continue;
            }
            me.active.store(true, std::memory_order_relaxed);
            Policy::fence_light();  // a biasing thread's heavy fence orders the rest
            b = bias_.load(std::memory_order_acquire);
            if (b == 0) return -1;
            me.active.store(false, std::memory_order_release);
            if (b & 1) {
                while (bias_.load(std::memory_order_acquire) == b) Policy::spin(spins);
            } else if (b != id) {
                revoke(b);
            }
        }
    }

    [[gnu::noinline]] void lock_slow(std::uintptr_t id) {
        for (;;) {
            std::uintptr_t b = bias_.load(std::memory_order_acquire);
            if (b != 0 && b != id) {
                revoke(b);
                continue;
            }
            inner_.lock();
            b = bias_.load(std::memory_order_acquire);
            if (b != 0 && b != id) {  // biased by the holder we waited for
                inner_.unlock();
                continue;
            }
            if (b == 0) count_streak(id);
            return;
        }
    }

    /// Inner lock held, unbiased.
    void count_streak(std::uintptr_t id) {
        if (last_ != id) {
            last_ = id;
            streak_ = 1;
            return;
        }
        if (++streak_ < threshold_) return;
        streak_ = 0;
        if (!Policy::heavy_fence_available()) return;
        bias_.store(id, std::memory_order_seq_cst);
        Policy::fence_heavy();
        // Every lock-free update that saw the lock unbiased ends before ours begin.
        const slot* mine = reinterpret_cast<const slot*>(id);
        int spins = 0;
        for (slot* w = Policy::first(); w; w = w->next)
            if (w != mine)
                while (w->active.load(std::memory_order_acquire)) Policy::spin(spins);
    }

    /// `b`: the bias seen, owned by another thread (even) or being revoked (odd).
    void revoke(std::uintptr_t b) {
        int spins = 0;  // waits for an owner descheduled inside, or another revoker
        if (!(b & 1)) {
            if (!bias_.compare_exchange_strong(b, b | 1, std::memory_order_seq_cst, std::memory_order_acquire))
                return;  // changed meanwhile: look again
            Policy::fence_heavy();
            const slot* owner = reinterpret_cast<const slot*>(b);
            while (owner->holds(this)) Policy::spin(spins);  // the owner is inside
            inner_.lock();
            threshold_ = std::min(threshold_ * 4, max_threshold_);
            last_ = 0;
            streak_ = 0;
            bias_.store(0, std::memory_order_release);
            inner_.unlock();
            return;
        }
        while (bias_.load(std::memory_order_acquire) == b) Policy::spin(spins);  // another revoker's
    }

    typename Policy::template atomic<std::uintptr_t> bias_{0};
    basic_spinlock<Policy> inner_;
    std::uint32_t max_threshold_ = 1u << 26;
    // Under inner_:
    std::uintptr_t last_ = 0;
    std::uint32_t streak_ = 0;
    std::uint32_t threshold_ = 64;
};

using biased_spinlock = basic_biased_spinlock<>;

}  // namespace goro::detail
// ---- end goro/core/spinlock.hpp ----

#if defined(__SANITIZE_ADDRESS__)
#define GORO_POOL_ENABLED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GORO_POOL_ENABLED 0
#endif
#endif
#ifndef GORO_POOL_ENABLED
#define GORO_POOL_ENABLED 1
#endif

namespace goro::detail {

inline constexpr std::size_t pool_step = 16;
inline constexpr std::size_t pool_classes = 64;  // requests of 8, 24, 40, ... 1016 bytes
inline constexpr std::size_t pool_max = pool_step * pool_classes - 8;
inline constexpr std::uint32_t pool_batch = 64;
inline constexpr std::size_t pool_depot_max_batches = 1024;  // per class: 64 Ki blocks

/// The class of a request of `size` bytes (1 <= size <= pool_max), and the
/// size a block of that class has.
constexpr std::size_t pool_class(std::size_t size) noexcept { return (size + 7) / pool_step; }
constexpr std::size_t pool_block_size(std::size_t cls) noexcept { return (cls + 1) * pool_step - 8; }
static_assert(pool_class(184) == 11 && pool_block_size(11) == 184);
static_assert(pool_class(185) == 12 && pool_class(pool_max) == pool_classes - 1);

// Free blocks are kept as arrays of pointers, not linked through the blocks:
// a block freed by another core is not in this core's cache, and popping it
// from an intrusive list would stall on loading its link.
struct pool_batch_node {
    pool_batch_node* next = nullptr;
    std::uint32_t count = 0;
    void* blocks[pool_batch];
};

struct pool_depot {
    ranked_lock<spinlock, lock_rank::frame_pool> lock;
    std::array<pool_batch_node*, pool_classes> full{};  // batches of free blocks
    std::array<std::size_t, pool_classes> nfull{};
    pool_batch_node* empty = nullptr;                    // spare batch nodes
};

inline pool_depot& the_pool_depot() noexcept {
    static pool_depot* d = new pool_depot();  // never freed: blocks may be returned at exit
    return *d;
}

// Each thread's cache is allocated on its first use (64 classes of 128
// pointers, 64 KiB: too much to put in every thread's static TLS).
struct pool_cache {
    std::array<std::array<void*, 2 * pool_batch>, pool_classes> slots{};
    std::array<std::uint32_t, pool_classes> count{};
};

inline thread_local constinit pool_cache* tls_pool_cache = nullptr;
// Set once this thread's cache is gone (thread exit): from then on its
// frees and allocations go straight to the general allocator.
inline thread_local constinit bool tls_pool_closed = false;

/// Moves all but `keep` cached blocks of a class to the depot, a batch at a time.
GORO_DECL void pool_flush_class(pool_cache& c, std::size_t cls, std::uint32_t keep) noexcept;

/// Returns a thread's cached blocks to the depot when the thread exits.
struct pool_cache_owner {
    pool_cache* cache = nullptr;
    ~pool_cache_owner();
};

/// This thread's cache, made on first use; null when memory is short or the
/// thread is exiting.
[[gnu::noinline]] inline pool_cache* pool_make_cache() noexcept {
    if (tls_pool_closed) return nullptr;
    static thread_local pool_cache_owner owner;
    if (!owner.cache) owner.cache = new (std::nothrow) pool_cache();
    tls_pool_cache = owner.cache;
    return owner.cache;
}

GORO_DECL void* pool_allocate(std::size_t size);

GORO_DECL void pool_free(void* p, std::size_t size) noexcept;

}  // namespace goro::detail

#if GORO_BODIES

#include <mutex>
#include <utility>

namespace goro::detail {

GORO_DECL pool_cache_owner::~pool_cache_owner() {
    tls_pool_closed = true;
    tls_pool_cache = nullptr;
    if (!cache) return;
    for (std::size_t i = 0; i < pool_classes; ++i) pool_flush_class(*cache, i, 0);
    delete std::exchange(cache, nullptr);
}

GORO_DECL void pool_flush_class(pool_cache& c, std::size_t cls, std::uint32_t keep) noexcept {
    pool_depot& d = the_pool_depot();
    while (c.count[cls] > keep) {
        std::uint32_t n = std::min(pool_batch, c.count[cls] - keep);
        pool_batch_node* node = nullptr;
        bool room = false;
        {
            std::lock_guard g(d.lock);
            room = d.nfull[cls] < pool_depot_max_batches;
            if (room && (node = d.empty)) d.empty = node->next;
        }
        if (!node && room) node = new (std::nothrow) pool_batch_node();
        c.count[cls] -= n;
        void** from = c.slots[cls].data() + c.count[cls];
        if (!node) {  // the depot is full (or memory is short): give the blocks back
            for (std::uint32_t i = 0; i < n; ++i) ::operator delete(from[i]);
            continue;
        }
        std::copy(from, from + n, node->blocks);
        node->count = n;
        std::lock_guard g(d.lock);
        node->next = d.full[cls];
        d.full[cls] = node;
        ++d.nfull[cls];
    }
}

GORO_DECL void* pool_allocate(std::size_t size) {
#if GORO_POOL_ENABLED
    if (size != 0 && size <= pool_max) {
        const std::size_t cls = pool_class(size);
        pool_cache* c = tls_pool_cache;
        if (c && c->count[cls]) [[likely]] {
            // The blocks out next are likely ones another core freed: fetch
            // the one `ahead` places back for writing now (the slots are an
            // array: no chain to follow), so that its misses overlap the work
            // of the allocations in between. Its first and last line: frames
            // and headers are written at both ends first.
            constexpr std::uint32_t ahead = 3;
            std::uint32_t n = --c->count[cls];
            if (n >= ahead) {
                char* b = static_cast<char*>(c->slots[cls][n - ahead]);
                prefetch_for_write(b);
                prefetch_for_write(b + pool_block_size(cls) - 1);
            } else if (n) {
                prefetch_for_write(c->slots[cls][n - 1]);
            }
            return c->slots[cls][n];
        }
        if (!c && !(c = pool_make_cache())) return ::operator new(pool_block_size(cls));
        pool_depot& d = the_pool_depot();
        pool_batch_node* node = nullptr;
        {
            std::lock_guard g(d.lock);
            if ((node = d.full[cls])) {
                d.full[cls] = node->next;
                --d.nfull[cls];
            }
        }
        if (!node) return ::operator new(pool_block_size(cls));
        std::copy(node->blocks, node->blocks + node->count, c->slots[cls].data());
        c->count[cls] = node->count;
        {
            std::lock_guard g(d.lock);
            node->next = d.empty;
            d.empty = node;
        }
        return c->slots[cls][--c->count[cls]];
    }
#endif
    return ::operator new(size);
}

GORO_DECL void pool_free(void* p, std::size_t size) noexcept {
#if GORO_POOL_ENABLED
    if (p && size != 0 && size <= pool_max) {
        const std::size_t cls = pool_class(size);
        pool_cache* c = tls_pool_cache;
        if (!c && !(c = pool_make_cache())) {
            ::operator delete(p);
            return;
        }
        if (c->count[cls] == 2 * pool_batch) pool_flush_class(*c, cls, pool_batch);
        c->slots[cls][c->count[cls]++] = p;
        return;
    }
#endif
    (void)size;
    ::operator delete(p);
}

}  // namespace goro::detail

#endif  // GORO_BODIES
// ---- end goro/core/pool.hpp ----

namespace goro {

struct task_header;

namespace detail {

/// A plain awaiter: the type that `co_await` uses as it is (no operator co_await).
template <class A>
concept direct_awaiter = requires(A& a) {
    a.await_ready();
    a.await_resume();
};

/// Stands in for an awaiter that lives elsewhere in the frame (the temporary
/// of the co_await expression, or a named object), forwarding to it.
///
/// Why: when `await_transform` hands back a reference to the awaiter, g++ 12
/// gives the frame a second copy of it; the awaiter of a channel operation is
/// 64 bytes, so every suspended task paid that twice. One pointer costs 8.
/// (clang allocates the same frame either way.)
template <class A>
struct await_ref {
    A* a;
    bool await_ready() noexcept(noexcept(a->await_ready())) { return a->await_ready(); }
    template <class H>
    decltype(auto) await_suspend(H h) noexcept(noexcept(a->await_suspend(h))) { return a->await_suspend(h); }
    decltype(auto) await_resume() noexcept(noexcept(a->await_resume())) { return a->await_resume(); }
};

/// The awaitable an await_transform returns: a pointer to a plain awaiter;
/// anything else (a type with operator co_await) as it came.
template <class A>
decltype(auto) forward_awaitable(A&& a) noexcept {
    if constexpr (direct_awaiter<std::remove_reference_t<A>>)
        return await_ref<std::remove_reference_t<A>>{&a};
    else
        return static_cast<A&&>(a);
}

/// What `co_await a` awaits: `a.operator co_await()`, `operator co_await(a)`, or `a`.
template <class A>
decltype(auto) get_awaiter(A&& a) {
    if constexpr (requires { static_cast<A&&>(a).operator co_await(); })
        return static_cast<A&&>(a).operator co_await();
    else if constexpr (requires { operator co_await(static_cast<A&&>(a)); })
        return operator co_await(static_cast<A&&>(a));
    else
        return static_cast<A&&>(a);
}

template <class A>
concept tagged_goro_awaiter = requires { typename std::remove_cvref_t<A>::is_goro_awaiter; };

/// True for goro's own awaitables: the type, or the awaiter it yields, has
/// the member `using is_goro_awaiter = void;`.
template <class A>
inline constexpr bool is_goro_awaitable_v = [] {
    if constexpr (tagged_goro_awaiter<A>) return true;
    else if constexpr (requires { get_awaiter(std::declval<A>()); })
        return tagged_goro_awaiter<decltype(get_awaiter(std::declval<A>()))>;
    else return false;
}();

struct promise_base;

/// Wraps a foreign awaitable (see FOREIGN AWAITABLES above; defined in goro/core/foreign.hpp).
template <class A>
struct foreign_awaiter;

/// What an await_transform of a goro frame returns for `a`: goro's own
/// awaitables as they are (see forward_awaitable), others wrapped.
template <class A>
decltype(auto) transform_awaitable(promise_base& p, A&& a) noexcept(is_goro_awaitable_v<A>) {
    if constexpr (is_goro_awaitable_v<A>)
        return forward_awaitable(static_cast<A&&>(a));
    else
        return foreign_awaiter<A>(p, static_cast<A&&>(a));
}

struct promise_base {
    std::coroutine_handle<> continuation_{};  // frame to resume when this one finishes
    promise_base* parent_ = nullptr;          // that frame's promise (null for a root)
    task_header* header_ = nullptr;           // the root task this frame runs in
    site site_{};                             // where this frame is suspended now; before its
                                              // first suspension, its own function (ENTRY SITE, task.hpp)

    // Frames come from goro's pool: a task is usually freed by another thread
    // than the one that spawned it (see goro/core/pool.hpp).
    static void* operator new(std::size_t size) { return pool_allocate(size); }
    static void operator delete(void* p, std::size_t size) noexcept { pool_free(p, size); }

    /// Records the site of every `co_await` in a goro coroutine, then forwards
    /// the awaitable (see await_ref for how), or wraps a foreign one.
    template <class A>
    decltype(auto) await_transform(A&& a, GORO_SITE_PARAM) noexcept(is_goro_awaitable_v<A>) {
        site_ = GORO_SITE_ARG;
        return transform_awaitable(*this, static_cast<A&&>(a));
    }
};

/// Wraps an awaitable whose `co_await` must not overwrite the frame's site
/// (goro's own frames carry their caller's site instead of their own).
template <class A>
struct keep_site {
    A&& awaitable;
};

struct trampoline {
    std::coroutine_handle<> next{};
    bool active = false;
};

inline thread_local constinit trampoline tls_trampoline{};

/// Resumes `h`, then whatever it hands to the trampoline, until nothing is left.
GORO_DECL void run_trampoline(std::coroutine_handle<> h);

/// Continues `h` next on this thread: through the trampoline when one runs
/// (the usual case, on a pool worker), else right here.
inline void continue_with(std::coroutine_handle<> h) {
    trampoline& t = tls_trampoline;
    if (t.active) t.next = h;
    else run_trampoline(h);
}

/// The task whose frames this thread is running now (null off the pool).
inline thread_local constinit task_header* tls_current_task = nullptr;

}  // namespace detail
}  // namespace goro

#if GORO_BODIES
namespace goro::detail {

GORO_DECL void run_trampoline(std::coroutine_handle<> h) {
    trampoline& t = tls_trampoline;
    const bool outer = !t.active;
    std::coroutine_handle<> saved = t.next;
    t.active = true;
    do {
        t.next = {};
        h.resume();
        h = t.next;
    } while (h);
    t.next = saved;
    if (outer) t.active = false;
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/core/frame.hpp ----

// ---- begin goro/core/registry.hpp ----
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


// ---- begin goro/core/profile_epoch.hpp ----
// goro/core/profile_epoch.hpp — the concurrent goroutine profile's epochs, as Go 1.19 takes it.
//
// A profile (goro/inspect/snapshot.hpp) stops the world only to start an epoch
// E (an even number) and to note each registry shard's head; then the world
// runs again while the profiler walks the lists. Each task is copied exactly
// once, as it was when the epoch began, by whoever claims it first: the
// profiler's walk, or the worker about to resume it (scheduler::run calls
// profile_before_resume).
//
// INVARIANTS
//   * A header's `prof_gen` is its claim word: E (copied in epoch E, or made
//     while E was on and so not in it), E|1 (being copied in epoch E, by the
//     thread that set it), or an older even value (not yet copied in E).
//   * A claim is a CAS of `prof_gen` from an older value to E|1; the claimer
//     copies and then stores E (release). Anyone who finds E|1 waits for E: a
//     worker must not resume a task whose frames are being read, and a dead
//     header must not be revived while it is read.
//   * No task is resumed during epoch E without having been claimed, by its
//     resumer or by the profiler, except by a worker that had not stopped
//     when the epoch began (its stop timed out). scheduler::run publishes the
//     task in the worker's `current` before it loads `active`; the profiler
//     stores `active`, fences, and reads those workers' `current`
//     (scheduler::running_unclaimed). So every resume that missed the epoch
//     is of a task the profiler then finds there: it claims such a task and
//     records it as running without reading its frames, and reads the frames
//     of no other task it has not claimed.
//   * Headers made while the epoch is on start at E, so tasks spawned after
//     the stop are not in the profile; reviving a dead header waits out a
//     claim the same way (profile_revive).
//   * `record` and `ctx` are written before `active` is set and read only by
//     a worker that saw `active`; the profile ends by clearing `active` and
//     waiting until no worker is between its check of `active` and the end of
//     its copy (`inflight`), so the collector outlives every copy into it.
//   * One profile at a time (the snapshot's mutex).
//
// The state and the functions are written against a policy (atomics and the
// wait loop's spin: machine_policy in platform.hpp), and take the header as a
// template parameter, so that tests/test_profile_epoch.cpp runs the protocol
// itself in the model checker (tests/model/model.hpp), with a tiny header of
// its own; every caller here passes a task_header and the machine's policy.

#include <atomic>
#include <cstdint>


namespace goro {

struct task_header;

namespace detail {

/// The state of the concurrent profile (one at a time; see above).
template <class Header, class Policy = machine_policy>
struct basic_profile_epoch {
    template <class U>
    using atomic = typename Policy::template atomic<U>;
    using record_fn = void (*)(void* ctx, Header& h) noexcept;
    alignas(cache_line) atomic<bool> active{false};
    atomic<std::uint32_t> gen{0};        // the current or last epoch: even
    record_fn record = nullptr;          // written before active is set
    void* ctx = nullptr;
    alignas(cache_line) atomic<int> inflight{0};  // workers between the check of active and a copy's end
};

using profile_epoch_state = basic_profile_epoch<task_header>;

inline profile_epoch_state& profile_epoch() noexcept {
    static profile_epoch_state s;
    return s;
}

/// Claims `h` for epoch `e`: true if the caller must copy it and then call
/// profile_publish; false if it already is (or was) copied in this epoch.
template <class Policy = machine_policy, class Header>
bool profile_claim(Header& h, std::uint32_t e) {
    std::uint32_t g = h.prof_gen.load(std::memory_order_acquire);
    int spins = 0;
    for (;;) {
        if (g == e) return false;
        if (g == (e | 1)) {  // being copied by another thread (maybe descheduled): wait for it
            Policy::spin(spins);
            g = h.prof_gen.load(std::memory_order_acquire);
            continue;
        }
        if (h.prof_gen.compare_exchange_weak(g, e | 1, std::memory_order_acq_rel, std::memory_order_acquire))
            return true;
    }
}

template <class Header>
void profile_publish(Header& h, std::uint32_t e) {
    h.prof_gen.store(e, std::memory_order_release);
}

// --- the profiler's side (goro/inspect/snapshot.hpp), with the world stopped ---

/// Starts the numbering of a new epoch and returns it. Headers made from
/// now on start at it (registry::add), so they are not in this profile.
template <class Header, class Policy>
std::uint32_t profile_next_epoch(basic_profile_epoch<Header, Policy>& p) {
    const std::uint32_t e = p.gen.load(std::memory_order_relaxed) + 2;
    p.gen.store(e, std::memory_order_release);
    return e;
}

/// Turns the epoch on: from now on a worker about to resume an unclaimed task
/// copies it first with `record(ctx, h)`.
template <class Header, class Policy>
void profile_activate(basic_profile_epoch<Header, Policy>& p, typename basic_profile_epoch<Header, Policy>::record_fn record,
                      void* ctx) {
    p.record = record;
    p.ctx = ctx;
    p.active.store(true, std::memory_order_seq_cst);
}

// --- the profiler's side, with the world running again ---

/// The walk's step for one header: claims it and, if the claim is the
/// caller's, calls `copy(h)` and publishes; false when someone else has it.
template <class Policy = machine_policy, class Header, class Copy>
bool profile_copy(Header& h, std::uint32_t e, Copy&& copy) {
    if (!profile_claim<Policy>(h, e)) return false;
    copy(h);
    profile_publish(h, e);
    return true;
}

/// Ends the epoch once no worker is between its check of `active` and the
/// end of its copy, so the collector outlives every copy into it.
template <class Header, class Policy>
void profile_end(basic_profile_epoch<Header, Policy>& p) {
    p.active.store(false, std::memory_order_seq_cst);
    int spins = 0;
    while (p.inflight.load(std::memory_order_seq_cst) != 0) Policy::spin(spins);
    p.record = nullptr;
    p.ctx = nullptr;
}

// --- the workers' side ---------------------------------------------------------

/// A worker is about to resume `h`: if a profile is on and has not copied `h`
/// yet, copy it now, before its frames change.
template <class Header, class Policy>
void profile_before_resume(basic_profile_epoch<Header, Policy>& p, Header& h) {
    // Acquire, even when it reads false: the profile that just ended read
    // this task's frames before clearing `active`, and resuming writes them.
    // Sequentially consistent (a plain load on x86 and ARMv8, as acquire):
    // the second half of the handshake with scheduler::running_unclaimed
    // where membarrier is not available.
    if (!p.active.load(std::memory_order_seq_cst)) return;
    p.inflight.fetch_add(1, std::memory_order_seq_cst);
    if (p.active.load(std::memory_order_seq_cst)) {
        std::uint32_t e = p.gen.load(std::memory_order_relaxed);
        if (profile_claim<Policy>(h, e)) {
            p.record(p.ctx, h);
            profile_publish(h, e);
        }
    }
    p.inflight.fetch_sub(1, std::memory_order_release);
}

/// The machine's: the scheduler calls this one.
template <class Header>
void profile_before_resume(Header& h) noexcept { profile_before_resume(profile_epoch(), h); }

/// Makes a dead header's claim current before it comes alive again: waits
/// out a profiler that is looking at it, then sets the current epoch, so a
/// profile that began before the revival does not list the new task.
/// `in_task`: the caller is a task on a worker (see below).
template <class Header, class Policy>
void profile_revive(basic_profile_epoch<Header, Policy>& p, Header& h, bool in_task) {
    // In a task on a worker, while no profile is on, nothing is to be done:
    // the last profile's walk ended before it cleared `active` (acquire: its
    // reads of the header came before the writes of the revival), and an
    // epoch begins either with every worker stopped between two tasks, so
    // not before this task suspends, or, after a stop that timed out, while
    // this worker runs on; then the walk may claim the header meanwhile, but
    // reads its fields only once it sees it alive, which add() publishes
    // after the writes of the revival, and the new task's first resume
    // claims it like any other (see running_unclaimed). (This spares a spawn
    // a locked instruction.)
    if (in_task && !p.active.load(std::memory_order_acquire)) return;
    std::uint32_t g = h.prof_gen.load(std::memory_order_acquire);
    int spins = 0;
    for (;;) {
        if (g & 1) {
            Policy::spin(spins);
            g = h.prof_gen.load(std::memory_order_acquire);
            continue;
        }
        std::uint32_t e = p.gen.load(std::memory_order_acquire);
        if (h.prof_gen.compare_exchange_weak(g, e, std::memory_order_acq_rel, std::memory_order_acquire)) return;
    }
}

/// The machine's: the registry calls this one.
template <class Header>
void profile_revive(Header& h) noexcept { profile_revive(profile_epoch(), h, tls_current_task != nullptr); }

}  // namespace detail
}  // namespace goro
// ---- end goro/core/profile_epoch.hpp ----

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
// ---- end goro/core/registry.hpp ----

// ---- begin goro/core/task.hpp ----
// goro/core/task.hpp — `goro::task<T>`: a lazily started, move-only coroutine.
//
//   goro::task<int> answer() { co_return 42; }
//   goro::task<> caller() { int v = co_await answer(); ... }
//
// A task does nothing until it is awaited (it then runs as a child whose
// frames join the awaiting task's logical stack, see goro/core/frame.hpp) or handed
// to `goro::go` (it then runs as a root task on the pool). Its result, or the
// exception that escaped it, is delivered to the awaiter. Awaiting consumes
// the task; a task can be awaited once.
//
// Which thread runs what: a child runs on the thread of its awaiter, through
// that thread's trampoline; when it finishes, its awaiter continues on the
// thread that finished it (a worker, after a wake-up that may have moved the
// task).

#include <concepts>
#include <coroutine>
#include <exception>
#include <new>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>


// ---- begin goro/core/foreign.hpp ----
// goro/core/foreign.hpp — awaiting another library's awaitables inside a goro task.
//
//   goro::task<> handler() {
//       auto row = co_await db.query("...");   // resumes us on the library's own thread
//       co_await goro::sleep_for(10ms);        // still a goro task, back on the pool
//   }
//
// THE RULE: inside a goro task, `co_await x` on an awaitable that is not
// goro's (no member `using is_goro_awaiter = void;` on it or on the awaiter
// its operator co_await returns) parks the task with wait reason "external"
// and hands the awaitable a *relay* handle instead of the task's frame. When
// the awaitable resumes the relay — once, on any thread, even synchronously
// inside its await_suspend — the relay makes the task runnable on the pool
// (`ready`), so the rest of the task always runs on a goro worker. While it
// waits the task is listed, dumped as `[external]` with its stack, and never
// counted as part of a deadlock (the detector treats a pending foreign wait
// like an `external_wakeup_guard`: it cannot know when the world will
// answer). An awaitable that is ready (`await_ready` true) costs one forwarded
// call; one that suspends costs a small heap-allocated relay frame.
//
// await_suspend returning void, bool or a handle is honoured: false, or the
// relay handed back, continues the task at once; another handle runs there
// (off the task: goro::this_task_id() reads 0 in it) while the task stays
// parked; an exception from await_suspend is rethrown in the task, which is
// no longer parked. A relay resumed before await_suspend returned also
// continues the task inline, without a trip through the run queue.
//
// The awaitable must resume the handle it was given exactly once. Destroying
// it instead (some libraries do on cancellation) leaves the task parked for
// ever, shown as `[external]`.
//
// Goro's own awaiters park the task themselves, so each carries the tag;
// an awaiter written against goro's parking protocol (park/ready) without
// the tag would be wrapped, and parked twice: put the tag on it.
//
// THREADS: the relay's `phase` decides who continues the task. The task's
// worker sets 0 → 1 after await_suspend returned (it will not touch the
// frame again); the relay sets any → 2 when resumed. Whoever comes second
// acts: the relay seeing 1 frees itself and calls ready(); the worker seeing 2
// frees the relay and continues the task itself.

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>


// ---- begin goro/core/scheduler.hpp ----
// goro/core/scheduler.hpp — the worker pool: run queues, stealing, parking, stop-the-world.
//
// N workers (GORO_MAXPROCS, else the hardware concurrency, or set_max_procs()
// before first use) run root tasks. What each worker has, after Go's runtime:
//
//   run_next   one slot: the task this worker just woke. It runs as soon as the
//              current task suspends, so a ping-pong between two tasks stays on
//              one core and one cache. Not stolen, except from a worker whose
//              current task has run for a whole monitor period (10 ms): then
//              thieves take it, and the monitor moves it (RESCUE).
//              The owner takes it without a locked instruction (RUN_NEXT below).
//   local queue  256 entries, owner pushes at the tail, anyone takes at the head
//              (the owner pops one, or four at once from a long queue: CLAIMED
//              below; a thief takes half). Full: half moves to the global queue.
//   global queue  tasks woken or spawned by threads outside the pool (the
//              timer thread's wake-ups among them), tasks that yield, and
//              overflow; a ring of pointers under a spinlock. See GLOBAL QUEUE.
//
// IDLE WORKERS AND WAKE-UPS (no lost wake-up, no busy loop)
//   A worker that finds nothing spins for a while, stealing, as a "spinner";
//   then registers as idle, re-checks every queue, and sleeps on its own futex.
//   Whoever makes work stealable (spawn, overflow, a wake-up from outside) then
//   wakes one idle worker, unless one is already spinning. A spinner that finds
//   work wakes another before running it, so parallelism ramps up. The two sides
//   publish then check (seq_cst fences), so one of them always sees the other.
//   Except a worker that queues work on itself (spawn, wake-up, yield): it
//   checks without the fence, as Go's runqput and wakep do, because the fence
//   would wait on every spawn for the store buffer, full of the new task's
//   cache misses. If that check misses a worker that is just going to sleep,
//   nothing is lost: the work is in this worker's own queue, which it serves
//   as soon as its task suspends, and if the task never does, the monitor
//   moves it to the global queue (RESCUE; a few ms, as Go's sysmon would).
//
// GLOBAL QUEUE: how its tasks get their turn beside busy local queues
//   * A worker takes a batch, not one task: its share (size / workers + 1),
//     at most half a local queue and no more than fits; the first runs, the
//     rest go to the tail of its local queue, where they are served in turn
//     (and can be stolen).
//   * It looks there when its own queue and run_next are empty, every 61st
//     round whatever its queue holds (running the first task taken), and on
//     the round after a wake-up from outside the pool was queued
//     (`outside_waiting_`: one relaxed load per round, of a line written
//     only when that flag changes): then it moves a batch to its queue's tail, so a
//     timer's wake-up waits behind at most one local queue, never behind
//     61 rounds per task.
//   * `yield` (Go's Gosched) puts the task on the global queue, as Go does,
//     not on the local queue: a worker whose tasks all yield would otherwise
//     never empty its queue, and the global queue would drain one task per
//     61 rounds. (A contended channel operation's step aside stays local.)
//   `gq_outside_` counts the wake-ups from outside queued and not yet taken
//   (an estimate: a take counts whatever it took against it; it never
//   exceeds the queue's size); `outside_waiting_` mirrors `gq_outside_ != 0`.
//   Both change under the global queue's lock.
//
// STOP THE WORLD
//   `stop_the_world()` raises an odd generation number. A running worker
//   acknowledges at its next safe point (between two task resumes) and waits;
//   an idle worker is taken by a compare-and-swap of its status and can leave
//   idleness only after the world restarts. A worker that has not stopped by
//   the timeout is reported (`stw_report::unstopped`); it goes on resuming
//   tasks until it reaches its next safe point, but only through run(), which
//   publishes the task in `current` before it looks for a profile epoch. So a
//   profiler that starts an epoch without every worker stopped learns, from
//   running_unclaimed(), the only tasks whose frames it must not read: those
//   the unstopped workers run without having claimed them (PROFILE EPOCHS,
//   profile_epoch.hpp). The caller's own worker, if any, counts as stopped.
//
// RUN_NEXT: the owner fills an empty slot with a plain store (a thief only
//   ever takes a task out), and empties it with a plain store too, which is
//   two locked instructions less per ping-pong round trip. That is safe
//   because a thief is rare (a starving worker) and does the fencing for both
//   with membarrier: the protocol, and why no task is taken twice, is in
//   slot_handoff.hpp. Without membarrier (old kernels, GORO_ASYM_FENCE=off)
//   the owner takes with an exchange.
//
// CLAIMED: a worker whose queue holds at least 8 tasks takes up to 4 with
//   one CAS of the queue's head (local_runq::pop_batch), runs the first and
//   keeps the others in its `claimed` slots, which it empties like run_next:
//   plain stores, with the same in_pop / steal_req handshake. So a busy
//   worker pays one locked instruction per four tasks it pops, not one each.
//   Thieves leave the slots alone, as they leave run_next, except when the
//   worker is starving (its task has run for a monitor tick while work
//   waited): then steal_slots takes the claimed tasks too, and no task
//   waits behind one that never suspends; the monitor takes them likewise
//   (RESCUE). A queue shorter than 8 is popped one at a time, so that the
//   few tasks there stay stealable. Without membarrier no worker claims.
//
// RESCUE: a worker whose task runs a whole monitor tick (10 ms) without
//   suspending, while tasks wait behind it, is `starving`. Stealing alone
//   does not save those tasks: only a worker that runs dry steals, and the
//   monitor could only wake a worker from the idle list (spares are not on
//   it, and when every other worker is busy nobody is). So at every tick
//   where a worker starves, the monitor itself takes everything queued
//   behind it (run_next, the claimed slots, the local queue) with the
//   thieves' own calls (slot_handoff::steal, local_runq::grab: no protocol
//   of its own) and puts it on the global queue as if woken from outside
//   (so each busy worker moves a share to its queue at its next round),
//   then wakes an idle worker unless one spins. If every other worker is
//   stuck too, the handoff below brings in spares, which find the work on
//   the global queue. `rescued_tasks()` counts the tasks moved.
//
// STUCK WORKERS (Go's sysmon retaking a P): a task that runs without
//   suspending (a CPU loop, a channel loop that never parks, a plain read())
//   holds its worker. The monitor (every 10 ms) marks a worker stuck when the
//   same run has lasted the handoff threshold (default 10 ms), and brings
//   another worker in to take its place: a spare (a worker thread parked by
//   an earlier handoff) or a new thread, up to a fixed capacity of worker
//   structs (made on demand, never freed, so stealers and stops of the world
//   walk a stable array [0, nlive_)). The newcomer wakes as a spinner and
//   finds the stuck worker's tasks on the global queue (RESCUE), or steals
//   them (the stuck worker is `starving`); the stuck worker keeps owning its
//   queue (only steals cross). So size() workers keep running tasks. When
//   the stuck task suspends, its worker counts itself unstuck and, one
//   worker too many now, hands its queued tasks to the global queue and
//   parks as a spare.
//   Counts (under procs_mu_, read anywhere): nactive_ (not spare, stuck
//   included), nstuck_; a surplus (nactive_ - nstuck_ > size(), also after
//   set_max_procs shrinks) raises `rebalance_`, which every worker reads at
//   its safe point beside stop_gen_, and the first to see it retires.
//   A spare parks with status idle, so a stop of the world holds it like an
//   idle worker; a worker started during a stop sees the odd generation at its
//   first safe point (the stop raises it before it reads nlive_, the starter
//   publishes nlive_ before the thread starts; both seq_cst).
//
// PARKING PROTOCOL for awaitables that block (channels, sleep, wait groups):
//   in await_suspend(h): `park(task, h, reason)`, then publish the waiter
//   (e.g. enqueue it on a channel, under the channel's lock), and after the
//   publication never touch the awaiter or the frame again: another worker may
//   already be resuming the task. A waker calls `ready(task)` once, after
//   releasing its own locks.

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>


// ---- begin goro/core/slot_handoff.hpp ----
// goro/core/slot_handoff.hpp — a worker's private task slots, which its owner
// empties without a locked instruction and a rare thief can still steal from.
//
// Each worker has a `run_next` slot (the task it just woke) and a few
// `claimed` slots (tasks it popped from its queue in one batch and has not
// run yet). The owner is the only thread that fills a slot; the owner takes
// its tasks out one at a time, and a thief, when the owner is starving (its
// task has run for a whole monitor tick), takes all of them. Every task put
// in a slot is taken out exactly once, by the owner or by a thief.
//
// THE PROTOCOL (x86-TSO reasoning; `fenced` = the asymmetric fence exists)
//   owner take:  in_pop = 1 (plain store); light fence (compiler barrier);
//                if steal_req == 0 { t = slot; slot = null (plain store); in_pop = 0 }
//                else { in_pop = 0; t = exchange(slot, null) }
//   thief steal: ++steal_req (locked RMW: visible before the next step);
//                heavy fence (membarrier); wait while in_pop;
//                exchange every slot with null; --steal_req
//   The owner's light fence only keeps the compiler from moving its loads
//   above `in_pop = 1`; the CPU may still hold that store in its store
//   buffer while the owner reads steal_req (store-load reordering). The
//   thief's heavy fence makes every other core execute a full fence at some
//   point P of its program: the owner's stores before P are then visible to
//   the thief, and the owner's loads after P see the thief's increment,
//   which was visible before the fence began. So, for one take:
//     P before the owner reads steal_req: the owner sees the request and
//       takes with an exchange, which a thief's exchange cannot double.
//     P after it: `in_pop = 1` is visible to the thief, which waits for
//       `in_pop = 0`; the owner stores that after `slot = null`, and stores
//       become visible in program order, so the thief's exchange finds the
//       slot empty (or holding a newer task the owner put there since).
//   Hence the owner reads the slot only after it has announced itself and
//   read steal_req. A slot read before `in_pop = 1` leaves room for a
//   thief's whole steal (increment, fence, in_pop still 0, exchange,
//   decrement) before the owner's check, which then sees no request and
//   runs the stolen task a second time. tests/test_slot_handoff.cpp checks
//   this protocol, and that ordering's failure, in a model of x86-TSO.
//   Unfenced (no membarrier): the owner always takes with an exchange, and
//   the thief skips the handshake.
//
// FILLING: the owner stores into an empty slot with a plain store. A thief
//   only ever exchanges a non-null task out, never puts one in, so a slot the
//   owner saw empty stays empty until the owner fills it. The claimed slots
//   are filled only when all of them have been looked at (has_claimed() false).
//
// The atomics and the two fences come from `Policy` (machine_policy here; a
// test instantiates the protocol with model atomics at a tiny size). The
// member functions are not noexcept: the model checker unwinds a stuck thread
// through them. With std::atomic nothing throws.

#include <atomic>
#include <cstdint>
#include <thread>


namespace goro::detail {

template <class T, std::uint32_t Claimed, class Policy = machine_policy>
class slot_handoff {
public:
    template <class U>
    using atomic = typename Policy::template atomic<U>;
    static constexpr std::uint32_t claim_max = Claimed;
    static_assert(Claimed >= 1, "at least one claimed slot");

    // --- owner only ----------------------------------------------------------

    /// Puts `t` in run_next if it is empty (a plain store); false if full.
    [[gnu::always_inline]] bool offer_next(T* t) {
        if (next_.load(std::memory_order_relaxed)) return false;
        next_.store(t, std::memory_order_release);
        return true;
    }
    /// Puts `t` (or null) in run_next, returning what was there.
    T* swap_next(T* t) { return next_.exchange(t, std::memory_order_acq_rel); }

    /// Empties run_next, returning what it held (null: empty or stolen).
    [[gnu::always_inline]] T* take_next(bool fenced) { return take(next_, fenced); }

    /// The next claimed task that no thief took; null when none is left.
    [[gnu::always_inline]] T* take_claimed(bool fenced) {
        while (claimed_next_ != claimed_end_)
            if (T* t = take(claimed_[claimed_next_++], fenced)) return t;
        return nullptr;
    }
    /// Some claimed slot has not been looked at yet (a moment's view of the owner's own).
    bool has_claimed() const noexcept { return claimed_next_ != claimed_end_; }

    /// The claimed slots, to fill (with relaxed stores) when has_claimed() is
    /// false; then say how many were filled with claimed_filled().
    atomic<T*>* claim_slots() noexcept { return claimed_; }
    void claimed_filled(std::uint32_t n) noexcept {
        claimed_next_ = 0;
        claimed_end_ = n;
    }

    // --- anyone (a moment's view) ---------------------------------------------

    T* peek_next() const { return next_.load(std::memory_order_acquire); }
    bool any_claimed() const {
        for (auto& c : claimed_)
            if (c.load(std::memory_order_relaxed)) return true;
        return false;
    }
    bool any() const { return next_.load(std::memory_order_relaxed) != nullptr || any_claimed(); }

    // --- a thief -----------------------------------------------------------------

    /// Takes every task in the slots into `out` (room for 1 + Claimed);
    /// returns how many.
    std::uint32_t steal(T** out, bool fenced) {
        if (!any()) return 0;
        if (fenced) {
            steal_req_.fetch_add(1, std::memory_order_seq_cst);
            Policy::fence_heavy();
            for (int spins = 0; in_pop_.load(std::memory_order_acquire);) Policy::spin(spins);
        }
        std::uint32_t n = 0;
        if (next_.load(std::memory_order_relaxed))
            if (T* t = next_.exchange(nullptr, std::memory_order_acq_rel)) out[n++] = t;
        for (auto& c : claimed_)
            if (c.load(std::memory_order_relaxed))
                if (T* t = c.exchange(nullptr, std::memory_order_acq_rel)) out[n++] = t;
        if (fenced) steal_req_.fetch_sub(1, std::memory_order_release);
        return n;
    }

private:
    /// The owner's take (THE PROTOCOL above).
    [[gnu::always_inline]] T* take(atomic<T*>& slot, bool fenced) {
        // An early look without announcing: only the owner fills a slot, so
        // an empty one stays empty; a full one must be read again below.
        if (!slot.load(std::memory_order_relaxed)) return nullptr;
        if (fenced) {
            in_pop_.store(true, std::memory_order_relaxed);
            Policy::fence_light();
            if (steal_req_.load(std::memory_order_acquire) == 0) {
                T* t = slot.load(std::memory_order_acquire);
                slot.store(nullptr, std::memory_order_relaxed);
                in_pop_.store(false, std::memory_order_release);
                return t;
            }
            in_pop_.store(false, std::memory_order_release);
        }
        return slot.exchange(nullptr, std::memory_order_acq_rel);
    }

    atomic<T*> next_{nullptr};
    atomic<bool> in_pop_{false};   // the owner is taking a task out (owner writes)
    atomic<int> steal_req_{0};     // thieves in their handshake
    atomic<T*> claimed_[Claimed]{};
    std::uint32_t claimed_next_ = 0, claimed_end_ = 0;  // owner only: the claimed slots still to look at
};

}  // namespace goro::detail
// ---- end goro/core/slot_handoff.hpp ----

// ---- begin goro/core/timer.hpp ----
// goro/core/timer.hpp — the timer heap behind sleep_for, select timeouts and deadlines.
//
// One thread owns the heap and fires timers when they are due. A timer is an
// intrusive `timer_node` that lives inside the awaiter (no allocation); its
// `fire` callback runs on the timer thread, without the heap lock held.
//
// CONTRACT between the timer thread and a node's owner
//   * The timer thread never touches a node after calling its `fire`, so
//     `fire` may free the node (a context's deadline timer drops the
//     reference that keeps its node alive as its last access).
//   * `cancel(node)` returns true when it removed the node before it fired;
//     then `fire` will never run. It returns false when the node was already
//     taken for firing — `fire` may be running right now, or not have
//     started yet: the owner must then learn from `fire`'s own protocol
//     (e.g. a compare-and-swap on a select's state, and `fired_done` set as
//     the callback's last access when it lost; or a reference that `fire`
//     drops) before freeing the node. Both outcomes are decided under the
//     heap lock, so exactly one of "cancel won" and "fire runs" happens.
//   * The same thread also calls a periodic `tick` (every 10 ms while the pool
//     is busy): the scheduler uses it to rescue work stuck behind a task that
//     does not suspend.
//   * While the timers due at one look are being fired the queue is not
//     `quiet()`: a timer taken out of the heap but not yet fired is still a
//     timer that will wake someone (the deadlock watch asks).
//   * A `fire` that makes a task runnable (`ready`) does not hand it to the
//     pool at once: the tasks woken by one batch of due timers are gathered
//     in `timer_wakes` and handed over together after the batch's last
//     `fire` (one hold of the global queue's lock and one wake-up for the
//     batch, not one of each per timer: with 10,000 tickers they were most
//     of the timer thread's time). A woken task runs no sooner, only later
//     by the rest of the batch; `fire` may still free its node.
//   * A periodic `fire` arms its node again with `rearm_from_fire` instead of
//     `add`: no hold of the queue's lock per fire (with 10,000 tickers that
//     hold was a fifth of the timer thread's time). The node goes back into
//     the heap after the batch's last `fire`, in the one hold of the lock
//     that ends the batch. Until then it counts as armed: `cancel` finds it
//     (its heap_index names its place in the batch) and takes it out, as it
//     would from the heap. The owner calls both `rearm_from_fire` (in its
//     `fire`) and `cancel` under one lock of its own, which orders them.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>


// ---- begin goro/core/vec.hpp ----
// goro/core/vec.hpp — the runtime's own growable array, for its internal
// lists (the scheduler's worker lists and global queue, the timer heap, the
// hash map's slots, the deadlock watch's waiters).
//
//   detail::vec<worker*> idle;
//   idle.push_back(w);  for (worker* x : idle) ...;  idle.pop_back();
//
// Why not std::vector: every program that includes goro compiles the runtime,
// and at -O0 each std::vector<T> instantiates some fifty functions (the
// allocator, its traits, the relocation helpers, the iterator class), each
// compiled and emitted; vec<T> has a dozen, plain pointers as iterators.
// The public API keeps std::vector.
//
// The subset of std::vector the runtime uses, with its meaning: elements are
// contiguous, begin()/end() are pointers, growth doubles the capacity, and
// reallocating moves the elements (T's move constructor must not throw, so a
// failed allocation, the only thing that can throw, leaves the vec as it was).

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace goro::detail {

template <class T>
class vec {
    static_assert(std::is_nothrow_move_constructible_v<T>, "vec<T> moves elements when it grows");
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__, "vec<T> allocates with plain operator new");

public:
    using value_type = T;
    using iterator = T*;
    using const_iterator = const T*;

    vec() noexcept = default;
    /// n value-initialised elements.
    explicit vec(std::size_t n) { resize(n); }
    vec(const vec& o) {
        reserve(o.n_);
        for (std::size_t i = 0; i < o.n_; ++i) push_back(o.p_[i]);
    }
    vec(vec&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), cap_(std::exchange(o.cap_, 0)) {}
    /// Copy or move assignment (by value, then swap).
    vec& operator=(vec o) noexcept {
        swap(o);
        return *this;
    }
    ~vec() {
        clear();
        ::operator delete(p_);
    }

    std::size_t size() const noexcept { return n_; }
    bool empty() const noexcept { return n_ == 0; }
    std::size_t capacity() const noexcept { return cap_; }
    T* data() noexcept { return p_; }
    const T* data() const noexcept { return p_; }
    T* begin() noexcept { return p_; }
    T* end() noexcept { return p_ + n_; }
    const T* begin() const noexcept { return p_; }
    const T* end() const noexcept { return p_ + n_; }
    T& operator[](std::size_t i) noexcept { return p_[i]; }
    const T& operator[](std::size_t i) const noexcept { return p_[i]; }
    T& front() noexcept { return p_[0]; }
    T& back() noexcept { return p_[n_ - 1]; }
    const T& front() const noexcept { return p_[0]; }
    const T& back() const noexcept { return p_[n_ - 1]; }

    void reserve(std::size_t n) {
        if (n > cap_) reallocate(n);
    }
    template <class... A>
    T& emplace_back(A&&... a) {
        if (n_ == cap_) reallocate(cap_ ? cap_ * 2 : 4);
        T* e = ::new (static_cast<void*>(p_ + n_)) T(std::forward<A>(a)...);
        ++n_;
        return *e;
    }
    void push_back(const T& v) { emplace_back(v); }
    void push_back(T&& v) { emplace_back(std::move(v)); }
    void pop_back() noexcept { p_[--n_].~T(); }
    /// Removes *pos, moving the later elements down; returns pos.
    T* erase(T* pos) noexcept {
        for (T* q = pos; q + 1 != p_ + n_; ++q) *q = std::move(q[1]);
        pop_back();
        return pos;
    }
    /// Grows with value-initialised elements, or shrinks.
    void resize(std::size_t n) {
        if (n < n_) {
            while (n_ > n) pop_back();
            return;
        }
        reserve(n);
        while (n_ < n) emplace_back();
    }
    /// n copies of v, replacing the contents.
    void assign(std::size_t n, const T& v) {
        clear();
        reserve(n);
        while (n_ < n) emplace_back(v);
    }
    void clear() noexcept {
        while (n_ > 0) pop_back();
    }
    void swap(vec& o) noexcept {
        std::swap(p_, o.p_);
        std::swap(n_, o.n_);
        std::swap(cap_, o.cap_);
    }

private:
    void reallocate(std::size_t cap) {
        T* np = static_cast<T*>(::operator new(cap * sizeof(T)));
        for (std::size_t i = 0; i < n_; ++i) {
            ::new (static_cast<void*>(np + i)) T(std::move(p_[i]));
            p_[i].~T();
        }
        ::operator delete(p_);
        p_ = np;
        cap_ = cap;
    }

    T* p_ = nullptr;
    std::size_t n_ = 0;
    std::size_t cap_ = 0;
};

}  // namespace goro::detail
// ---- end goro/core/vec.hpp ----

namespace goro {
struct task_header;
}

namespace goro::detail {

/// The tasks made runnable by the timers fired in one batch (see CONTRACT).
/// Set on the timer thread while it fires a batch; the scheduler's `ready`
/// appends to it when it is set and belongs to its own timer queue.
struct timer_wakes {
    const void* owner;  // the scheduler whose timer thread gathers
    vec<task_header*> tasks;
};
inline thread_local timer_wakes* tls_timer_wakes = nullptr;

struct timer_node {
    std::int64_t when_ns = 0;                       // CLOCK_MONOTONIC nanoseconds
    void (*fire)(timer_node*) noexcept = nullptr;
    std::size_t heap_index = npos;                  // under the heap lock
    std::atomic<bool> fired_done{false};            // see CONTRACT
    static constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();
    // heap_index from here up (npos excluded): armed again by its fire, the
    // batch's entry heap_index - rearmed_base (see CONTRACT).
    static constexpr std::size_t rearmed_base = npos / 2;

    timer_node() = default;
    // Awaiters holding a node may be moved before they suspend (g++ moves the
    // operand of co_await into the frame); a node is never moved once added.
    timer_node(const timer_node& o) noexcept : when_ns(o.when_ns), fire(o.fire) {}
    timer_node& operator=(const timer_node&) = delete;
};

/// A 4-ary min-heap of timer nodes by `when_ns`. Not synchronised:
/// timer_queue holds its lock around every call.
///
/// The heap's entries are compact: a deadline and a slot number. A sift
/// compares deadlines in the heap's own array and never loads a node (with
/// 10,000 tickers armed, loading each node's `when_ns` from its scattered
/// state missed the cache at every level). Where each entry sits is kept in
/// the slot table beside it, not in the node: a sift writes the moved
/// entries' new places there, and a node is written only when it comes in
/// (its slot, in heap_index) and when it goes out (npos). Removing a node
/// looks its place up through its slot: O(log n), no search. Four children
/// per level halve the depth; the four sit in one cache line.
class timer_heap {
    struct entry {
        std::int64_t when;
        std::uint32_t slot;
    };
    struct slot_entry {
        timer_node* node;    // null while free
        std::uint32_t pos;   // the node's place in nodes_, while taken
        std::uint32_t next;  // the next free slot, while free
    };
    static constexpr std::size_t arity = 4;
    static constexpr std::uint32_t no_slot = std::numeric_limits<std::uint32_t>::max();

public:
    void push(timer_node* n);
    /// The earliest node, or null when empty.
    timer_node* front() const noexcept { return nodes_.empty() ? nullptr : slots_[nodes_.front().slot].node; }
    /// Removes `n` if it is in the heap; false when it is not (never added, fired, or removed).
    bool remove(timer_node* n) noexcept {
        if (n->heap_index == timer_node::npos) return false;
        remove_at(slots_[n->heap_index].pos);
        return true;
    }
    /// Removes and returns the earliest node if it is due at `now_ns`, else null.
    timer_node* pop_due(std::int64_t now_ns) noexcept {
        if (nodes_.empty() || nodes_.front().when > now_ns) return nullptr;
        return remove_at(0);
    }
    std::size_t size() const noexcept { return nodes_.size(); }
    bool empty() const noexcept { return nodes_.empty(); }
    /// True when `n` is in this heap, its slot naming it and its place naming
    /// its slot (the tests' check of the table).
    bool contains(const timer_node* n) const noexcept {
        const std::size_t id = n->heap_index;
        return id < slots_.size() && slots_[id].node == n && slots_[id].pos < nodes_.size() &&
               nodes_[slots_[id].pos].slot == id;
    }

private:
    // Sifts move a hole instead of swapping: each moved entry's slot learns
    // its new place once.
    void sift_up(std::size_t i) noexcept;
    void sift_down(std::size_t i) noexcept;
    /// The earliest of the children that start at `first` (< size).
    std::size_t min_child(std::size_t first) const noexcept;
    void place(std::size_t i, const entry& e) noexcept {
        nodes_[i] = e;
        slots_[e.slot].pos = static_cast<std::uint32_t>(i);
    }
    timer_node* remove_at(std::size_t i) noexcept;

    vec<entry> nodes_;
    vec<slot_entry> slots_;
    std::uint32_t free_ = no_slot;  // the first free slot
};

class timer_queue {
public:
    using tick_fn = void (*)(void*) noexcept;
    /// Hands a batch's woken tasks to the pool (see CONTRACT).
    using wake_fn = void (*)(void*, task_header* const*, std::size_t) noexcept;

    timer_queue(tick_fn tick, void* tick_arg, wake_fn wake = nullptr);
    ~timer_queue() { stop(); }

    void stop();
    void add(timer_node* n);
    /// True when `n` was removed before it fired (see CONTRACT).
    bool cancel(timer_node* n);
    /// From `n`'s own `fire`, on the timer thread, under the owner's lock
    /// that it also holds around cancel(n): arms `n` again for `when` (the
    /// node goes back into the heap at the batch's end; see CONTRACT).
    void rearm_from_fire(timer_node* n, std::int64_t when) noexcept;
    /// In a `fire`: the time (now_ns) at which the batch was taken, which a
    /// periodic timer schedules its next period from (one clock read a
    /// batch, not one a fire).
    std::int64_t batch_now() const noexcept { return batch_now_; }
    /// Timers armed (in the heap).
    std::size_t pending() const;
    /// True when no timer is armed and none is being fired: no timer will wake anyone.
    bool quiet() const;

    /// Asks for `tick` calls every 10 ms (set while the pool has work).
    /// Asks for ticks (the scheduler calls it when a worker starts running).
    /// Sequentially consistent with the timer thread's clearing of the flag
    /// before a tick, which then reads the workers' status: either this call
    /// sees the flag cleared (and sets it), or that tick sees the worker
    /// running (and asks again). Relaxed, both could miss: ticks stopped
    /// while a worker ran, and work stuck behind a task that never suspends
    /// was never rescued.
    void want_ticks();

private:
    static constexpr std::int64_t tick_period_ns = 10'000'000;

    void run();

    mutable ranked_lock<std::mutex, lock_rank::timer> mu_;
    std::condition_variable cv_;
    timer_heap heap_;
    bool stopping_ = false;
    std::size_t firing_ = 0;  // nodes taken by the batch being fired (under mu_)
    // The batch being fired. Taken and given back under mu_; fired unlocked.
    // cancel() clears the entry of a node armed again (under mu_ and the
    // owner's lock, after that node's fire read its entry).
    vec<timer_node*> due_;
    // Timer thread only: the entry being fired, and the entries armed again.
    std::size_t fire_index_ = 0;
    std::int64_t batch_now_ = 0;
    vec<std::size_t> rearmed_;
    std::atomic<bool> ticking_{false};
    tick_fn tick_;
    wake_fn wake_;
    void* tick_arg_;
    std::thread thread_;
};

}  // namespace goro::detail

#if GORO_BODIES
#include <stdexcept>

namespace goro::detail {

GORO_DECL void timer_heap::push(timer_node* n) {
    std::uint32_t id = free_;
    if (id != no_slot) {
        free_ = slots_[id].next;
    } else {
        if (slots_.size() >= no_slot) throw std::length_error("goro: timer heap: too many timers armed");
        id = static_cast<std::uint32_t>(slots_.size());
        slots_.push_back({});
    }
    try {
        nodes_.push_back({n->when_ns, id});
    } catch (...) {
        slots_[id].next = free_;
        free_ = id;
        throw;
    }
    slots_[id].node = n;
    n->heap_index = id;
    sift_up(nodes_.size() - 1);
}

GORO_DECL void timer_heap::sift_up(std::size_t i) noexcept {
    entry e = nodes_[i];
    while (i > 0) {
        std::size_t p = (i - 1) / arity;
        if (!(e.when < nodes_[p].when)) break;
        place(i, nodes_[p]);
        i = p;
    }
    place(i, e);
}

GORO_DECL std::size_t timer_heap::min_child(std::size_t first) const noexcept {
    if (first + arity <= nodes_.size()) {
        // Four children (nearly always): a tournament of selects, no branch
        // on deadlines that a sift could mispredict at every level.
        const entry* c = &nodes_[first];
        const std::size_t a = c[1].when < c[0].when ? 1 : 0;
        const std::size_t b = c[3].when < c[2].when ? 3 : 2;
        return first + (c[b].when < c[a].when ? b : a);
    }
    std::size_t m = first;
    for (std::size_t c = first + 1; c < nodes_.size(); ++c)
        if (nodes_[c].when < nodes_[m].when) m = c;
    return m;
}

GORO_DECL void timer_heap::sift_down(std::size_t i) noexcept {
    entry e = nodes_[i];
    const std::size_t n = nodes_.size();
    for (;;) {
        std::size_t first = arity * i + 1;
        if (first >= n) break;
        const std::size_t m = min_child(first);
        if (!(nodes_[m].when < e.when)) break;
        place(i, nodes_[m]);
        i = m;
    }
    place(i, e);
}

GORO_DECL timer_node* timer_heap::remove_at(std::size_t i) noexcept {
    const std::uint32_t id = nodes_[i].slot;
    timer_node* n = slots_[id].node;
    std::size_t last = nodes_.size() - 1;
    if (i == 0 && last > 0) {
        // The earliest goes (a fire): the hole goes down to a leaf by the
        // earlier child, without comparing the last entry at each level,
        // which then sifts up from there, where it nearly always belongs.
        const entry e = nodes_[last];
        nodes_.pop_back();
        for (std::size_t first = 1; first < last; first = arity * i + 1) {
            const std::size_t m = min_child(first);
            place(i, nodes_[m]);
            i = m;
        }
        nodes_[i] = e;
        sift_up(i);
    } else if (i != last) {
        nodes_[i] = nodes_[last];
        nodes_.pop_back();
        if (i > 0 && nodes_[i].when < nodes_[(i - 1) / arity].when) sift_up(i);
        else sift_down(i);
    } else {
        nodes_.pop_back();
    }
    slots_[id].node = nullptr;
    slots_[id].next = free_;
    free_ = id;
    n->heap_index = timer_node::npos;
    return n;
}

GORO_DECL timer_queue::timer_queue(tick_fn tick, void* tick_arg, wake_fn wake)
    : tick_(tick), wake_(wake), tick_arg_(tick_arg) {
    thread_ = std::thread([this] { run(); });
}

GORO_DECL void timer_queue::stop() {
    {
        std::lock_guard g(mu_);
        if (stopping_) return;
        stopping_ = true;
    }
    cv_.notify_all();
    if (!thread_.joinable()) return;
    // Stopped from a callback (std::exit in one): it cannot join itself.
    if (thread_.get_id() == std::this_thread::get_id()) thread_.detach();
    else thread_.join();
}

GORO_DECL void timer_queue::add(timer_node* n) {
    bool earliest;
    {
        std::lock_guard g(mu_);
        n->fired_done.store(false, std::memory_order_relaxed);
        heap_.push(n);
        earliest = heap_.front() == n;
    }
    if (earliest) cv_.notify_one();
}

GORO_DECL bool timer_queue::cancel(timer_node* n) {
    std::lock_guard g(mu_);
    const std::size_t i = n->heap_index;
    if (i != timer_node::npos && i >= timer_node::rearmed_base) {  // armed again by its fire, in the batch
        due_[i - timer_node::rearmed_base] = nullptr;
        n->heap_index = timer_node::npos;
        return true;
    }
    return heap_.remove(n);
}

GORO_DECL void timer_queue::rearm_from_fire(timer_node* n, std::int64_t when) noexcept {
    n->when_ns = when;
    n->heap_index = timer_node::rearmed_base + fire_index_;
    rearmed_.push_back(fire_index_);  // reserved for the whole batch
}

GORO_DECL std::size_t timer_queue::pending() const {
    std::lock_guard g(mu_);
    return heap_.size();
}

GORO_DECL bool timer_queue::quiet() const {
    std::lock_guard g(mu_);
    return heap_.empty() && firing_ == 0;
}

GORO_DECL void timer_queue::want_ticks() {
    if (ticking_.load(std::memory_order_seq_cst) || ticking_.exchange(true, std::memory_order_seq_cst))
        return;
    { std::lock_guard g(mu_); }  // the timer thread is waiting, or sees the flag
    cv_.notify_one();
}

GORO_DECL void timer_queue::run() {
    timer_wakes woken{tick_arg_, {}};
    std::int64_t next_tick = 0;
    std::unique_lock<std::mutex> lk(mu_.unranked());  // this thread takes nothing under it
    while (!stopping_) {
        std::int64_t now = now_ns();
        while (timer_node* n = heap_.pop_due(now)) due_.push_back(n);
        bool ticking = ticking_.load(std::memory_order_acquire);
        if (!due_.empty() || (ticking && now >= next_tick)) {
            firing_ = due_.size();
            rearmed_.reserve(due_.size());
            batch_now_ = now;
            lk.unlock();
            if (wake_) tls_timer_wakes = &woken;
            // An entry is read before its fire; cancel() clears only the
            // entries of nodes that their fire armed again (see due_).
            for (std::size_t k = 0, n = due_.size(); k < n; ++k) {
                fire_index_ = k;
                timer_node* t = due_[k];
                t->fire(t);
            }
            tls_timer_wakes = nullptr;
            if (!woken.tasks.empty()) {
                wake_(tick_arg_, woken.tasks.data(), woken.tasks.size());
                woken.tasks.clear();
            }
            if (ticking && now >= next_tick) {
                next_tick = now + tick_period_ns;
                ticking_.store(false, std::memory_order_seq_cst);  // see want_ticks()
                tick_(tick_arg_);  // asks again through want_ticks() while busy
            }
            lk.lock();
            for (std::size_t k : rearmed_) {
                timer_node* t = due_[k];
                if (!t) continue;  // cancelled meanwhile
                t->fired_done.store(false, std::memory_order_relaxed);
                heap_.push(t);
            }
            rearmed_.clear();
            due_.clear();
            firing_ = 0;
            continue;
        }
        std::int64_t wake = std::numeric_limits<std::int64_t>::max();
        if (!heap_.empty()) wake = heap_.front()->when_ns;
        if (ticking) wake = std::min(wake, next_tick);
        if (wake == std::numeric_limits<std::int64_t>::max()) {
            cv_.wait(lk);
        } else {
            auto d = std::chrono::nanoseconds(wake - now);
            cv_.wait_for(lk, d);
        }
    }
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/core/timer.hpp ----

// ---- begin goro/core/wait_profile.hpp ----
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

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <vector>


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


// ---- begin goro/core/hash_map.hpp ----
// goro/core/hash_map.hpp — detail::hash_map, the map that goro's profiles,
// snapshots and dumps use for their bookkeeping.
//
// The subset of std::unordered_map that goro needs (find, end, try_emplace,
// emplace, operator[], clear, size), with open addressing in one vector. It
// exists for the compile time: every translation unit that includes goro
// instantiates these maps, and one std::unordered_map costs several times as
// much to compile as this whole class.
//
// Unlike std::unordered_map, an insertion may move every element: a pointer or
// reference into the map (what find, try_emplace and operator[] return) is
// valid only until the next insertion. Iteration is not offered.

#include <cstddef>
#include <cstdint>
#include <string_view>  // std::hash for the integers, strings and string views
#include <utility>


namespace goro::detail {

template <class K, class V, class Hash = std::hash<K>>
class hash_map {
public:
    struct entry {
        K first{};
        V second{};
    };
    using iterator = entry*;

    hash_map() = default;
    hash_map(std::initializer_list<std::pair<K, V>> init) {
        for (const auto& [k, v] : init) try_emplace(k, v);
    }

    std::size_t size() const noexcept { return count_; }
    bool empty() const noexcept { return count_ == 0; }
    iterator end() const noexcept { return nullptr; }

    /// The entry with key `k`, or end().
    iterator find(const K& k) {
        if (count_ == 0) return end();
        for (std::size_t i = home(k);; i = (i + 1) & (slots_.size() - 1)) {
            slot& s = slots_[i];
            if (!s.used) return end();
            if (s.e.first == k) return &s.e;
        }
    }

    /// Inserts {k, V(args...)} unless `k` is there; returns the entry and
    /// whether it is new.
    template <class KK, class... Args>
    std::pair<iterator, bool> try_emplace(KK&& k, Args&&... args) {
        if ((count_ + 1) * 2 > slots_.size()) grow();
        std::size_t i = home(k);
        for (;; i = (i + 1) & (slots_.size() - 1)) {
            slot& s = slots_[i];
            if (!s.used) break;
            if (s.e.first == k) return {&s.e, false};
        }
        slot& s = slots_[i];
        s.e.first = K(std::forward<KK>(k));
        s.e.second = V(std::forward<Args>(args)...);
        s.used = true;
        ++count_;
        return {&s.e, true};
    }
    template <class KK, class VV>
    std::pair<iterator, bool> emplace(KK&& k, VV&& v) {
        return try_emplace(std::forward<KK>(k), std::forward<VV>(v));
    }
    V& operator[](const K& k) { return try_emplace(k).first->second; }

    void clear() noexcept {
        slots_.clear();
        count_ = 0;
    }

private:
    struct slot {
        bool used = false;
        entry e;
    };

    // Fibonacci hashing: spreads keys that are already hashes, and small
    // integers, over the power-of-two table alike.
    std::size_t home(const K& k) const noexcept {
        std::uint64_t h = static_cast<std::uint64_t>(Hash{}(k)) * 0x9E3779B97F4A7C15ull;
        return static_cast<std::size_t>(h >> 32) & (slots_.size() - 1);
    }

    void grow() {
        vec<slot> old(slots_.empty() ? 16 : slots_.size() * 2);
        old.swap(slots_);
        for (slot& s : old) {
            if (!s.used) continue;
            std::size_t i = home(s.e.first);
            while (slots_[i].used) i = (i + 1) & (slots_.size() - 1);
            slots_[i].e = std::move(s.e);
            slots_[i].used = true;
        }
    }

    vec<slot> slots_;  // size 0 or a power of two, at most half full
    std::size_t count_ = 0;
};

}  // namespace goro::detail
// ---- end goro/core/hash_map.hpp ----

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
// ---- end goro/core/wait_profile.hpp ----

namespace goro {

namespace detail {

inline constexpr std::uint32_t runq_capacity = 256;

/// The time a parking task records: the coarse clock as of the last monitor
/// tick (every 10 ms while the pool is busy), the last worker wake-up or the
/// pool's start, so parking reads no clock. A dump shows minutes; 10 ms is
/// plenty. The wait profile compares it at a wake on a worker to find long
/// waits (wait_profile.hpp, LONG WAITS). A constinit global, not a
/// function's static: reading it checks no guard. A cache line of its own:
/// every worker's wake-up writes it, and the globals that would share its
/// line (the wait profile's rate and clock offset) are read at every wake.
struct alignas(cache_line) parked_clock_line {
    std::atomic<std::int64_t> t{0};
};
inline constinit parked_clock_line g_parked_clock{};
[[gnu::always_inline]] inline std::atomic<std::int64_t>& parked_clock() noexcept { return g_parked_clock.t; }

/// A worker's local run queue: single producer (the owner), many consumers.
class local_runq {
public:
    /// Owner only. False when full.
    bool push(task_header* t) noexcept;
    /// Owner only: takes the first task and, when at least `2 * (max + 1)`
    /// are queued, `max` more into `more` (one CAS for all; see CLAIMED).
    /// Returns the first (null when empty); `*nmore` is how many went to `more`.
    template <std::uint32_t max>
    task_header* pop_batch(std::atomic<task_header*>* more, std::uint32_t* nmore) noexcept {
        std::uint32_t h = head_.load(std::memory_order_acquire);
        for (;;) {
            const std::uint32_t tl = tail_.load(std::memory_order_relaxed);
            const std::uint32_t queued = tl - h;
            if (queued == 0) return nullptr;
            const std::uint32_t extra = queued >= 2 * (max + 1) ? max : 0;
            task_header* t = buf_[h % runq_capacity].load(std::memory_order_relaxed);
            task_header* rest[max];
            for (std::uint32_t i = 0; i < extra; ++i)
                rest[i] = buf_[(h + 1 + i) % runq_capacity].load(std::memory_order_relaxed);
            if (head_.compare_exchange_weak(h, h + 1 + extra, std::memory_order_acq_rel, std::memory_order_acquire)) {
                for (std::uint32_t i = 0; i < extra; ++i) more[i].store(rest[i], std::memory_order_relaxed);
                *nmore = extra;
                if (extra == 0) {
                    prefetch_ahead(h + 1, tl);
                } else {
                    // A pipeline by batches: the headers of the batch after
                    // next, and the frames of the next batch (whose headers
                    // were fetched a batch ago).
                    const std::uint32_t next = h + 1 + extra;
                    const std::uint32_t left = tl - next;
                    for (std::uint32_t i = max + 1; i < 2 * (max + 1) && i < left; ++i)
                        prefetch_for_write(buf_[(next + i) % runq_capacity].load(std::memory_order_relaxed));
                    for (std::uint32_t i = 0; i <= max && i < left; ++i) {
                        task_header* u = buf_[(next + i) % runq_capacity].load(std::memory_order_relaxed);
                        const char* f = static_cast<const char*>(u->resume_addr_.load(std::memory_order_relaxed));
                        prefetch_frame(f);
                    }
                }
                return t;
            }
        }
    }
    /// Owner only.
    task_header* pop() noexcept;
    /// The tasks queued behind the one just taken were most likely made or
    /// woken on another core, and each costs a miss on its header and one on
    /// its frame, one after the other (the frame's address is in the header).
    /// So a pipeline: fetch the header `header_ahead` places back, and the
    /// frame `frame_ahead` places back, whose header was fetched some pops
    /// ago. (A thief may take any of them meanwhile: headers outlive their
    /// tasks and the address is read atomically, so a stale one only costs a
    /// useless prefetch.)
    void prefetch_ahead(std::uint32_t next, std::uint32_t tl) const noexcept;

    /// The first four lines of a frame, for writing. What a resumed task
    /// touches first is its resume index, its promise and the awaiter it was
    /// suspended in (a select's, with the waiters a close just claimed),
    /// which follow one another from the frame's start; a frame is only
    /// 16-byte aligned, so that start may lie anywhere in a line. Two lines
    /// missed the resume index itself (88 bytes in, with g++) for one frame
    /// in four, and the awaiter for most: cancel_fanout's wake-ups took about
    /// a fifth less CPU time with four. (Integer arithmetic: a stale address is only
    /// ever prefetched, and a prefetch never faults.)
    static void prefetch_frame(const void* f) noexcept {
        const auto a = reinterpret_cast<std::uintptr_t>(f);
        for (std::uintptr_t i = 0; i < 4; ++i) prefetch_for_write(reinterpret_cast<const void*>(a + i * cache_line));
    }

    /// Anyone: takes up to half (at least one) of the entries into `out`.
    std::uint32_t grab(task_header** out, std::uint32_t max) noexcept;
    std::uint32_t size() const noexcept;

private:
    alignas(cache_line) std::atomic<std::uint32_t> head_{0};
    alignas(cache_line) std::atomic<std::uint32_t> tail_{0};
    alignas(cache_line) std::atomic<task_header*> buf_[runq_capacity]{};
};

enum worker_status : int { ws_running = 0, ws_idle = 1, ws_held = 2 };

/// A site another thread may read while its owner rewrites it: relaxed
/// atomics, so a reader sees one whole site or (clang, three words) a mix of
/// two, never anything but pointers to static strings.
struct site_cell {
#if GORO_HAS_SOURCE_LOCATION
    std::atomic<site> v{};
    void store(const site& s) noexcept { v.store(s, std::memory_order_relaxed); }
    site load() const noexcept { return v.load(std::memory_order_relaxed); }
#else
    std::atomic<const char*> file{""}, function{""};
    std::atomic<std::uint_least32_t> line{0};
    void store(const site& s) noexcept {
        file.store(s.file_, std::memory_order_relaxed);
        function.store(s.function_, std::memory_order_relaxed);
        line.store(s.line_, std::memory_order_relaxed);
    }
    site load() const noexcept {
        return site{file.load(std::memory_order_relaxed), function.load(std::memory_order_relaxed),
                    line.load(std::memory_order_relaxed)};
    }
#endif
};

class scheduler;

struct worker {
    scheduler* sched = nullptr;
    unsigned index = 0;
    local_runq q;
    static constexpr std::uint32_t claim_max = 3;
    // run_next, and the tasks popped with the last batch, not run yet (RUN_NEXT, CLAIMED)
    alignas(cache_line) slot_handoff<task_header, claim_max> slots;
    std::atomic<task_header*> current{nullptr};
    std::atomic<std::uint64_t> resumes{0};
    std::atomic<bool> starving{false};
    // STUCK WORKERS: set by the monitor under procs_mu_, cleared by the
    // monitor or the owner (whoever clears it counts it out of nstuck_).
    std::atomic<bool> stuck{false};
    std::atomic<std::int64_t> stuck_since_ns{0};  // when the stuck run was first seen
    site_cell resumed_at;  // where `current` was resumed (its leaf's site), stored before `current`
    alignas(cache_line) std::atomic<int> status{ws_running};
    std::atomic<std::uint32_t> acked_gen{0};
    std::atomic<std::uint32_t> wake_word{0};
    std::atomic<bool> exited{false};
    std::atomic<std::uint64_t> contention_yields{0};  // written by the owner: see step_aside
    // owner-only
    std::uint32_t tick = 0;
    std::uint32_t next_streak = 0;  // picks since the local queue was last served
    std::uint64_t rng = 0;
    bool spinning = false;
    // under the idle mutex
    bool idle_listed = false;
    // monitor-only
    std::uint64_t seen_resumes = 0;
    std::int64_t seen_since_ns = 0;  // when `seen_resumes` was first seen (the run's start, within a tick)
    std::thread thread;
};

inline thread_local constinit worker* tls_worker = nullptr;

/// Set by the netpoller (goro/io/poller.hpp) when it starts: a non-blocking
/// poll that a worker finding no work makes before it spins and before it
/// sleeps (Go's findrunnable calls netpoll(0) likewise). It readies the
/// tasks whose descriptors are ready and returns one of them to run here,
/// or null. Null when no program part uses the poller.
inline constinit std::atomic<task_header* (*)() noexcept> idle_poll_hook{nullptr};

/// Set by the netpoller too: called by a worker about to sleep (counted
/// idle, after the handshake's fence), so that when the whole pool goes
/// idle, the netpoller's thread stops leaving readiness to the workers and
/// waits on the epoll descriptor again (poller.hpp, WHO POLLS). Takes no
/// scheduler lock.
inline constinit std::atomic<void (*)() noexcept> idle_sleep_hook{nullptr};

/// What a stop of the world achieved.
struct stw_report {
    bool all_stopped = true;                  ///< every worker reached a safe point
    vec<task_header*> running;        ///< tasks running at the timeout (unstopped workers, or the caller's own)
    vec<worker*> unstopped;           ///< workers that did not reach a safe point: they may still resume tasks
};

/// Test hook: while set, workers pass their safe points without stopping, so
/// every stop of the world times out with the workers still resuming tasks
/// (how a loaded machine makes a stop miss its deadline, on demand).
inline std::atomic<bool>& stw_workers_run_through() noexcept {
    static std::atomic<bool> on{false};
    return on;
}

/// Test hook: while set, no worker steals (from another's queue or slots)
/// nor counts another's queue as work to stay awake for, so a task queued
/// behind a task that never suspends runs only if the monitor rescues it
/// (RESCUE).
inline std::atomic<bool>& workers_never_steal() noexcept {
    static std::atomic<bool> on{false};
    return on;
}

class scheduler {
public:
    explicit scheduler(unsigned nworkers);

    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;

    /// Stops the workers after their current task and the timer thread. Tasks
    /// still queued or parked are not run again; their frames stay listed.
    /// Called by a worker (std::exit inside a task runs the pool holder's
    /// destructor on that worker), it does not wait for its own thread: that
    /// one is in the middle of a task and goes on into exit.
    void shutdown() noexcept;

    /// The number of workers that run tasks (GORO_MAXPROCS; set_max_procs).
    unsigned size() const noexcept { return procs_.load(std::memory_order_relaxed); }
    /// Workers taking part now: size() plus those stuck in a task (and,
    /// for a moment, one about to retire).
    int active_workers() const noexcept { return nactive_.load(std::memory_order_relaxed); }
    /// Worker threads started so far (active, stuck and spare).
    unsigned live_workers() const noexcept { return nlive_.load(std::memory_order_acquire); }
    bool stopping() const noexcept { return shutdown_.load(std::memory_order_relaxed); }

    /// A new root task: this worker's local queue, or the global queue.
    void spawn(task_header* t) noexcept;

    /// Makes a parked task runnable. Call once per park, from any thread,
    /// holding no lock that the task may take.
    [[gnu::always_inline]] void ready(task_header* t) noexcept {
        worker* w = tls_worker;
        if (const std::int64_t rate = wait_profile_rate_n.load(std::memory_order_relaxed)) [[unlikely]]
            wait_profile_wake(t, rate, wake_clock(w));  // wait_profile.hpp
        t->state.store(task_state::runnable, std::memory_order_relaxed);
        // An empty slot is filled with a plain store: a thief only ever
        // exchanges a non-null value out, so none can be lost or doubled.
        // (One locked instruction less per hand-off: half of ping-pong.)
        if (w && w->sched == this && w->slots.offer_next(t)) return;  // runs when the current task suspends
        ready_slow(t, w);
    }

private:
    /// The coarse clock at a wake, for the wait profile's long-wait test: on
    /// a worker of this pool the parked clock (a tick old at most, as the
    /// pool is busy); elsewhere the pool may be idle and its clock stale, so
    /// CLOCK_MONOTONIC_COARSE (such a wake goes through the global queue).
    std::int64_t wake_clock(const worker* w) const noexcept;

    void ready_slow(task_header* t, worker* w) noexcept;

public:

    /// Makes many parked tasks runnable at once (a close or a cancel waking
    /// all its waiters): onto this worker's queue, or off the pool onto the
    /// global queue in one hold of its lock; idle workers are woken once.
    void ready_n(task_header* const* ts, std::size_t n) noexcept;

    /// Puts the current task on the global queue, behind the work there
    /// (Go's Gosched; see GLOBAL QUEUE). No idle worker is woken: this
    /// worker looks at the global queue at the latest when its own queue
    /// runs dry, and a spinning worker takes it sooner.
    void gosched(task_header* t) noexcept;

    /// Puts the current task at the back of this worker's queue (a step
    /// aside after a contended channel operation).
    void yield_task(task_header* t) noexcept;

    /// Makes room in the global queue for `need` tasks. The new ring is
    /// allocated and its pages touched (zeroed) before the lock is taken, and
    /// the old one freed after; under the lock, only the queued pointers are
    /// copied. Spawn calls it as the number of tasks doubles (go.hpp), so
    /// that thousands of tasks woken at once (a close, a cancel) overflow
    /// into a ring that has room, rather than one that grows, page by page,
    /// while every worker waits on its lock.
    void reserve_global(std::size_t need) noexcept;

    timer_queue& timers() noexcept { return timers_; }

    /// Tasks that stepped aside after a contended channel operation, all
    /// workers together (for tests and diagnostics).
    std::uint64_t contention_yields() const noexcept;

    // --- stop the world ---------------------------------------------------

    /// Stops every worker at a safe point, waiting at most `timeout` for each.
    /// Pair with start_the_world(); one stop at a time.
    stw_report stop_the_world(std::chrono::nanoseconds timeout = std::chrono::milliseconds(100));

    /// Call after a stop that left workers running (`rep.unstopped`) and
    /// after setting the profile epoch's `active` flag: the tasks those
    /// workers may be running without having claimed them for the epoch.
    /// Every other resume from now on claims its task first (PROFILE EPOCHS).
    ///
    /// Why this is all of them: run() stores the task in `current` and only
    /// then loads `active`; this stores `active`, fences, then loads every
    /// unstopped worker's `current` (a Dekker handshake: with membarrier the
    /// worker's side is a compiler barrier, without it both sides are
    /// sequentially consistent). A resume that read `active` false therefore
    /// published its task before the fence, and the load below sees that
    /// task, or a later value stored after that run had ended.
    vec<task_header*> running_unclaimed(const stw_report& rep);

    /// The site a worker resumed `t` at, if some worker runs `t` now: for a
    /// dump of a task running on a worker that did not stop. False when no
    /// worker runs it, or the site is unknown (it has not suspended yet).
    bool running_site(const task_header* t, site& out) const noexcept;

    void start_the_world();

    /// Tasks the monitor has moved from behind a task that did not suspend
    /// to the global queue, so far (RESCUE; for tests and diagnostics).
    std::uint64_t rescued_tasks() const noexcept { return rescued_.load(std::memory_order_relaxed); }

    /// Number of workers parked idle now (for the deadlock detector and metrics).
    int idle_workers() const noexcept { return nidle_.load(std::memory_order_relaxed); }
    std::size_t global_queue_size() const noexcept { return gq_size_.load(std::memory_order_relaxed); }
    /// The workers started so far (active, stuck and spare); a stable array.
    std::span<const std::unique_ptr<worker>> workers() const noexcept {
        return {workers_.data(), nlive_.load(std::memory_order_seq_cst)};
    }

private:
    // --- queues -----------------------------------------------------------

    void local_push(worker& w, task_header* t) noexcept;

    void global_push(task_header* t) noexcept { global_push_n(&t, 1, false); }

    // The global queue is a ring of pointers: moving tasks in and out never
    // touches the tasks themselves (each would be a cache miss).
    // `outside`: woken or spawned from outside the pool (see GLOBAL QUEUE).
    void global_push_n(task_header* const* ts, std::size_t n, bool outside = false) noexcept;

    /// Takes a share of the global queue: returns one, moves the rest to the
    /// tail of `w`'s queue (GLOBAL QUEUE).
    task_header* global_get(worker& w, std::size_t max) noexcept;

    /// After a wake-up from outside: moves a share of the global queue to
    /// the tail of `w`'s queue, behind the tasks already there (GLOBAL QUEUE).
    /// Nothing when that queue is half full: it has work enough for now.
    void global_refill(worker& w) noexcept;

    /// Owner only. Takes up to a share of the global queue (its size /
    /// workers + 1, at most `max`, at most what `w`'s queue has room for):
    /// with `first`, the first taken goes there and the rest to `w`'s queue;
    /// without, all go to the queue. Returns how many were taken.
    std::size_t global_take(worker& w, std::size_t max, task_header** first) noexcept;

    bool stealable_work() const noexcept;

    task_header* steal(worker& self) noexcept;

    /// Owner only: empties run_next, returning what it held (RUN_NEXT).
    task_header* take_run_next(worker& w) noexcept { return w.slots.take_next(asym_fence_); }

    /// Owner only: the next task of its queue, claiming a batch when the
    /// queue is long (CLAIMED).
    task_header* pop_local(worker& w) noexcept;

    /// A thief takes a starving worker's run_next and claimed tasks (RUN_NEXT,
    /// CLAIMED): returns one, queues the others on `self`.
    task_header* steal_slots(worker& self, worker& v) noexcept;

    static std::uint64_t next_rand(worker& w) noexcept;

    // --- idle workers -----------------------------------------------------

    /// The waker's half of IDLE WORKERS' handshake. `local`: the work went to
    /// this worker's own queue, so no fence (see IDLE WORKERS AND WAKE-UPS).
    void wake_if_needed(bool local) noexcept;

    void wake_one() noexcept;

    void stop_spinning(worker& w) noexcept;

    /// Becomes runnable again after idling; waits while the world is stopped.
    void claim_running(worker& w) noexcept;

    void hold_at_safe_point(worker& w) noexcept;

    /// Finds the next task, sleeping when there is none. Null: look at the
    /// stop and shutdown flags.
    task_header* find_runnable(worker& w) noexcept;

    /// The usual case of find_runnable_or_sleep, inline: a task of this
    /// worker's own (run_next, claimed, local queue) on a round that does
    /// not look at the global queue first. Null: ask the full search.
    [[gnu::always_inline]] task_header* find_local(worker& w) noexcept {
        if ((w.tick + 1) % 61 == 0 || (w.next_streak + 1) % 64 == 0 ||
            outside_waiting_.load(std::memory_order_relaxed))
            return nullptr;
        ++w.tick;
        ++w.next_streak;
        return pick_own(w, true);
    }

    /// A task of this worker's own: run_next first (the task just woken here:
    /// warm caches), but not forever: two tasks that wake each other would
    /// keep the slot full and starve the queue behind it (Go ends such a
    /// chain with its 10 ms time slice), so every 64th pick in a row
    /// (`next_first` false) takes the queue first.
    task_header* pick_own(worker& w, bool next_first) noexcept;

    task_header* find_runnable_or_sleep(worker& w) noexcept;

    void go_idle(worker& w) noexcept;

    void run(worker& w, task_header* t) noexcept;

    void worker_main(worker& w) noexcept;

    // --- monitor (every 10 ms on the timer thread while busy) --------------

    static void tick_thunk(void* self) noexcept { static_cast<scheduler*>(self)->monitor(); }
    /// The timer thread's batch of woken tasks (timer.hpp): onto the global
    /// queue in one hold of its lock, and one idle worker woken (a spinner
    /// that finds work wakes the next).
    static void timer_wake_thunk(void* self, task_header* const* ts, std::size_t n) noexcept;

    void monitor() noexcept;

    /// Monitor, at a tick where `v`'s task has run the whole tick while work
    /// waited behind it (RESCUE): moves that work (run_next, the claimed
    /// slots, the local queue) to the global queue, taking it as any thief
    /// does (slot_handoff::steal, local_runq::grab), then wakes an idle worker
    /// unless one spins. `v`'s owner may push meanwhile: what it pushes after
    /// the last grab waits for the next tick (or for a thief).
    void rescue(worker& v) noexcept;

    // --- stuck workers, spares, set_max_procs (STUCK WORKERS) --------------

    static unsigned worker_capacity(unsigned procs) noexcept {
        // Room for set_max_procs to grow and for a stuck worker's
        // replacements; worker structs are made on demand, so an unused
        // entry costs one pointer.
        return std::max(4 * procs, procs + 1024);
    }

    void make_worker(unsigned i);

    /// Monitor: marks the workers stuck past the threshold, unmarks those
    /// that moved, and starts replacements for the stuck ones.
    void hand_off(std::int64_t now, std::int64_t threshold) noexcept;

    /// procs_mu_ held: activates spares (or starts workers) until size()
    /// workers are active and not stuck; asks the surplus to retire.
    void rebalance_locked() noexcept;

    /// procs_mu_ held: one more active worker, a spare woken or a thread
    /// started. False when none can be had (capacity, shutdown, no thread).
    bool activate_locked() noexcept;

    /// Owner, after a run the monitor marked stuck: counts itself unstuck,
    /// and retires if that makes one worker too many.
    void unstuck(worker& w) noexcept;

    /// Owner, at a safe point: becomes a spare if more than size() workers
    /// are active and not stuck.
    void maybe_retire(worker& w) noexcept;

    /// Owner: hands its queued tasks to the others, then sleeps until
    /// activated (activate_locked) or the pool shuts down.
    void park_spare(worker& w) noexcept;

public:
    /// Changes the number of workers that run tasks (set_max_procs at run
    /// time): more are activated at once; the surplus retire at their next
    /// safe point.
    void set_procs(unsigned n);

    /// How long a task may run without suspending before its worker is
    /// replaced (STUCK WORKERS). Zero turns the handoff off.
    void set_handoff_threshold(std::chrono::nanoseconds d) noexcept {
        handoff_threshold_ns_.store(d.count(), std::memory_order_relaxed);
    }
    std::chrono::nanoseconds handoff_threshold() const noexcept {
        return std::chrono::nanoseconds(handoff_threshold_ns_.load(std::memory_order_relaxed));
    }

    /// Workers the monitor sees stuck in one task now, and the longest for how long.
    std::pair<unsigned, std::chrono::nanoseconds> stuck_now() const noexcept;

private:

    vec<std::unique_ptr<worker>> workers_;  // fixed size (capacity); [0, nlive_) made and started
    alignas(cache_line) std::atomic<unsigned> nlive_{0};
    std::atomic<unsigned> procs_{0};    // size(): workers meant to run tasks
    std::atomic<int> nactive_{0};       // workers not spare (stuck ones included); written under procs_mu_
    std::atomic<int> nstuck_{0};        // active workers marked stuck; written under procs_mu_
    std::atomic<std::int64_t> handoff_threshold_ns_{10'000'000};
    ranked_lock<std::mutex, lock_rank::scheduler_procs> procs_mu_;
    vec<worker*> spares_;       // under procs_mu_
    timer_queue timers_;
    const bool asym_fence_;  // membarrier available: run_next is taken without a locked instruction

    alignas(cache_line) ranked_lock<spinlock, lock_rank::global_queue> gq_lock_;
    vec<task_header*> gq_ring_;  // power-of-two capacity (or empty); grows only (reserve_global)
    std::atomic<std::size_t> gq_cap_{0};  // gq_ring_.size(), for a check without the lock
    std::size_t gq_head_ = 0;
    std::size_t gq_outside_ = 0;  // wake-ups from outside not yet taken (GLOBAL QUEUE)
    alignas(cache_line) std::atomic<std::size_t> gq_size_{0};
    // Read by every worker every round: on a line of its own, written only
    // when it changes, so that a pool with no wake-up from outside reads it
    // from its own cache.
    alignas(cache_line) std::atomic<bool> outside_waiting_{false};

    alignas(cache_line) ranked_lock<std::mutex, lock_rank::scheduler_idle> idle_mu_;
    vec<worker*> idle_;
    alignas(cache_line) std::atomic<int> nidle_{0};
    alignas(cache_line) std::atomic<int> nspinning_{0};

    alignas(cache_line) std::atomic<std::uint32_t> stop_gen_{0};
    // Read by every worker every round beside stop_gen_, on its line: a
    // surplus of active workers (STUCK WORKERS).
    std::atomic<bool> rebalance_{false};
    ranked_lock<std::mutex, lock_rank::stop_the_world> stw_mu_;
    vec<unsigned char> held_by_me_;  // by worker index: stopped by this stop of the world

    std::atomic<bool> shutdown_{false};
    std::atomic<std::uint64_t> rescued_{0};  // tasks the monitor moved to the global queue (RESCUE)
};

// --- the process-wide pool -------------------------------------------------

inline std::atomic<unsigned>& requested_procs() noexcept {
    static std::atomic<unsigned> n{0};
    return n;
}

GORO_DECL unsigned default_procs();

struct pool_holder {
    std::atomic<scheduler*> pool{nullptr};
    ranked_lock<std::mutex, lock_rank::pool_holder> mu;
    ~pool_holder() {
        // Static destruction at exit: stop the workers so they do not run user
        // code against destroyed globals. The scheduler object itself is kept
        // (parked frames may still refer to it).
        if (scheduler* s = pool.load()) s->shutdown();
    }
};

inline pool_holder& the_pool_holder() {
    static pool_holder h;
    return h;
}

// The pool once made, for the hot paths: a plain global needs no guard of a
// function-local static (the holder's destructor makes it need one).
inline constinit std::atomic<scheduler*> g_scheduler{nullptr};

[[gnu::noinline]] inline scheduler& make_the_scheduler() {
    pool_holder& h = the_pool_holder();
    std::lock_guard g(h.mu);
    if (scheduler* s = h.pool.load(std::memory_order_relaxed)) return *s;
    unsigned n = requested_procs().load();
    auto* s = new scheduler(n ? n : default_procs());
    h.pool.store(s, std::memory_order_release);
    g_scheduler.store(s, std::memory_order_release);
    return *s;
}

[[gnu::always_inline]] inline scheduler& the_scheduler() {
    if (scheduler* s = g_scheduler.load(std::memory_order_acquire)) return *s;
    return make_the_scheduler();
}

inline bool pool_started() noexcept {
    return the_pool_holder().pool.load(std::memory_order_acquire) != nullptr;
}

/// Marks the current task parked on `reason`; `h` is the frame to resume.
GORO_DECL void park(task_header* t, std::coroutine_handle<> h, const char* reason) noexcept;

/// Makes a parked task runnable (see the PARKING PROTOCOL above).
inline void ready(task_header* t) noexcept { the_scheduler().ready(t); }

/// True when the calling thread is a worker with another task waiting to run
/// (a moment's view).
inline bool local_work_waiting() noexcept {
    worker* w = tls_worker;
    return w && (w->slots.peek_next() || w->q.size() || w->slots.has_claimed());
}

/// The current task `t`, on a worker, steps aside after a contended channel
/// operation: it goes behind the tasks runnable here, to resume at `h`.
[[gnu::noinline]] inline void step_aside(task_header* t, std::coroutine_handle<> h) noexcept {
    t->set_resume_point(h);
    std::atomic<std::uint64_t>& n = tls_worker->contention_yields;
    n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    the_scheduler().yield_task(t);
}
inline void ready_n(task_header* const* ts, std::size_t n) noexcept { the_scheduler().ready_n(ts, n); }

/// The task running on this thread now; throws when there is none.
GORO_DECL task_header* current_task_or_throw(const char* op);

}  // namespace detail

/// Sets the number of workers that run tasks at once (Go's GOMAXPROCS(n)).
/// Before the pool starts it sets the pool's size; afterwards the pool grows
/// at once (spare or new threads), or shrinks as the surplus workers reach
/// their next safe point (they park as spares). Queued tasks are never lost.
GORO_DECL void set_max_procs(unsigned n);

/// The number of workers that run tasks at once (starts the pool if needed).
inline unsigned max_procs() { return detail::the_scheduler().size(); }

/// Workers stuck in one task (running without a suspension past the handoff
/// threshold, see STUCK WORKERS in goro/core/scheduler.hpp) now.
struct stuck_workers_info {
    unsigned count = 0;                     ///< workers stuck now (each replaced by another thread)
    std::chrono::nanoseconds longest{0};    ///< how long the longest-stuck one has run its task
};

/// A moment's view of the stuck workers (for metrics: 0 when the pool has not started).
GORO_DECL stuck_workers_info stuck_workers() noexcept;

/// How long a task may run without suspending before the monitor hands its
/// worker's place and queue to another thread (default 10 ms; checked every
/// 10 ms, so a handoff comes 10 to 20 ms after the task started). Zero turns
/// the handoff off.
inline void set_handoff_threshold(std::chrono::nanoseconds d) {
    if (d.count() < 0) throw usage_error("goro::set_handoff_threshold: the threshold must not be negative");
    detail::the_scheduler().set_handoff_threshold(d);
}

}  // namespace goro

#if GORO_BODIES

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <string>


// ---- begin goro/core/algo.hpp ----
// goro/core/algo.hpp — the few array algorithms the runtime needs, on pointer
// ranges, instead of <algorithm>.
//
//   detail::stable_sort(first, last, less)   merge sort: stable, O(n log n),
//                                            a buffer of n elements (may throw)
//   detail::heap_sort(first, last, less)     in place, not stable, O(n log n),
//                                            noexcept when moving T is
//   detail::sorted_contains(v, x)            binary search in an ascending vector
//   detail::find(first, last, x)             the first element == x, or last
//
// Why not <algorithm>: the header alone costs every including program ~5 MB
// of compiler memory, and std::sort and std::stable_sort each instantiate a
// dozen function templates (introsort, heap select, adaptive merges ...) for
// every element type and comparator, and a header-only library compiles them
// in every program that includes it, whether it sorts or not (a call in an
// inline function is enough). These are a few small functions each
// (issue 17: the compile cost of goro/core.hpp).

#include <cstddef>
#include <type_traits>
#include <utility>


namespace goro::detail {

/// Sorts [first, last) by `less`, keeping equal elements in their order.
template <class T, class Less>
void stable_sort(T* first, T* last, Less less) {
    const std::size_t n = static_cast<std::size_t>(last - first);
    constexpr std::size_t run = 16;  // insertion-sorted runs, then merged pairwise
    for (std::size_t lo = 0; lo < n; lo += run) {
        const std::size_t hi = lo + run < n ? lo + run : n;
        for (std::size_t i = lo + 1; i < hi; ++i) {
            if (!less(first[i], first[i - 1])) continue;
            T v = std::move(first[i]);
            std::size_t j = i;
            for (; j > lo && less(v, first[j - 1]); --j) first[j] = std::move(first[j - 1]);
            first[j] = std::move(v);
        }
    }
    if (n <= run) return;
    vec<T> buf(n);
    T* from = first;
    T* to = buf.data();
    for (std::size_t width = run; width < n; width *= 2) {
        for (std::size_t lo = 0; lo < n; lo += 2 * width) {
            const std::size_t mid = lo + width < n ? lo + width : n;
            const std::size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            std::size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) to[k++] = less(from[j], from[i]) ? std::move(from[j++]) : std::move(from[i++]);
            while (i < mid) to[k++] = std::move(from[i++]);
            while (j < hi) to[k++] = std::move(from[j++]);
        }
        std::swap(from, to);
    }
    if (from != first)
        for (std::size_t i = 0; i < n; ++i) first[i] = std::move(from[i]);
}

/// Sorts [first, last) by `less` in place (equal elements in no given order).
template <class T, class Less>
void heap_sort(T* first, T* last, Less less) noexcept(std::is_nothrow_move_constructible_v<T>) {
    const std::size_t n = static_cast<std::size_t>(last - first);
    // Moves first[i] down the max-heap [0, len) to where it belongs.
    auto sift_down = [&](std::size_t i, std::size_t len) {
        T v = std::move(first[i]);
        for (std::size_t c; (c = 2 * i + 1) < len; i = c) {
            if (c + 1 < len && less(first[c], first[c + 1])) ++c;
            if (!less(v, first[c])) break;
            first[i] = std::move(first[c]);
        }
        first[i] = std::move(v);
    };
    for (std::size_t i = n / 2; i-- > 0;) sift_down(i, n);
    for (std::size_t len = n; len > 1; --len) {
        std::swap(first[0], first[len - 1]);
        sift_down(0, len - 1);
    }
}

/// Whether the ascending vector `v` holds `x` (binary search).
template <class Vector, class T>
bool sorted_contains(const Vector& v, const T& x) noexcept {
    std::size_t lo = 0, hi = v.size();
    while (lo < hi) {
        const std::size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo < v.size() && !(x < v[lo]);
}

/// The first element of [first, last) equal to `x`, or `last`.
template <class T, class U>
T* find(T* first, T* last, const U& x) noexcept {
    while (first != last && !(*first == x)) ++first;
    return first;
}

}  // namespace goro::detail
// ---- end goro/core/algo.hpp ----

namespace goro::detail {

GORO_DECL bool local_runq::push(task_header* t) noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    std::uint32_t tl = tail_.load(std::memory_order_relaxed);
    if (tl - h >= runq_capacity) return false;
    buf_[tl % runq_capacity].store(t, std::memory_order_relaxed);
    tail_.store(tl + 1, std::memory_order_release);
    return true;
}

GORO_DECL task_header* local_runq::pop() noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    for (;;) {
        std::uint32_t tl = tail_.load(std::memory_order_relaxed);
        if (h == tl) return nullptr;
        task_header* t = buf_[h % runq_capacity].load(std::memory_order_relaxed);
        if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
            prefetch_ahead(h + 1, tl);
            return t;
        }
    }
}

GORO_DECL void local_runq::prefetch_ahead(std::uint32_t next, std::uint32_t tl) const noexcept {
    constexpr std::uint32_t header_ahead = 4, frame_ahead = 2;
    const std::uint32_t queued = tl - next;
    if (queued > header_ahead) {
        task_header* t = buf_[(next + header_ahead) % runq_capacity].load(std::memory_order_relaxed);
        prefetch_for_write(t);  // one line: the cold part is the spawner's (see task_header)
    } else if (queued) {
        // A short queue: no time to wait for a pipeline, fetch the next header.
        prefetch_for_write(buf_[next % runq_capacity].load(std::memory_order_relaxed));
    }
    if (queued > frame_ahead) {
        task_header* t = buf_[(next + frame_ahead) % runq_capacity].load(std::memory_order_relaxed);
        const char* f = static_cast<const char*>(t->resume_addr_.load(std::memory_order_relaxed));
        prefetch_frame(f);
    }
}

GORO_DECL std::uint32_t local_runq::grab(task_header** out, std::uint32_t max) noexcept {
    for (;;) {
        std::uint32_t h = head_.load(std::memory_order_acquire);
        std::uint32_t tl = tail_.load(std::memory_order_acquire);
        std::uint32_t n = tl - h;
        n = n - n / 2;
        if (n == 0) return 0;
        if (n > runq_capacity / 2) continue;  // read head and tail at different times: retry
        n = std::min(n, max);
        for (std::uint32_t i = 0; i < n; ++i) out[i] = buf_[(h + i) % runq_capacity].load(std::memory_order_relaxed);
        if (head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel, std::memory_order_acquire))
            return n;
    }
}

GORO_DECL std::uint32_t local_runq::size() const noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    std::uint32_t tl = tail_.load(std::memory_order_acquire);
    return tl - h;
}

GORO_DECL scheduler::scheduler(unsigned nworkers)
    : timers_(&scheduler::tick_thunk, this, &scheduler::timer_wake_thunk), asym_fence_(asym_fence_available()) {
    parked_clock().store(coarse_now_ns(), std::memory_order_relaxed);  // before any task can park
    if (nworkers == 0) nworkers = 1;
    workers_.resize(worker_capacity(nworkers));
    for (unsigned i = 0; i < nworkers; ++i) make_worker(i);
    procs_.store(nworkers, std::memory_order_relaxed);
    nactive_.store(static_cast<int>(nworkers), std::memory_order_relaxed);
    nlive_.store(nworkers, std::memory_order_release);
    for (unsigned i = 0; i < nworkers; ++i) {
        worker* wp = workers_[i].get();
        wp->thread = std::thread([this, wp] { worker_main(*wp); });
    }
    // Workers start running (spinning), not idle, so none passes through
    // claim_running() until it has slept once: ask for the monitor's
    // ticks now, or work stuck behind a task that never suspends in a
    // young pool would never be rescued.
    timers_.want_ticks();
}

GORO_DECL void scheduler::shutdown() noexcept {
    if (shutdown_.exchange(true)) return;
    worker* self = tls_worker && tls_worker->sched == this ? tls_worker : nullptr;
    timers_.stop();
    // No worker starts after this (activate_locked looks at shutdown_ under procs_mu_).
    { std::lock_guard g(procs_mu_); }
    const unsigned live = nlive_.load(std::memory_order_acquire);
    {
        std::lock_guard g(idle_mu_);
        for (worker* w : idle_) w->idle_listed = false;
        idle_.clear();
        nidle_.store(0);
    }
    for (unsigned i = 0; i < live; ++i) {
        worker* w = workers_[i].get();
        w->wake_word.store(1, std::memory_order_release);
        w->wake_word.notify_one();
    }
    stop_gen_.fetch_add(2);
    stop_gen_.notify_all();
    // A worker stuck in a task that never suspends cannot be joined: give
    // them a bounded time, then leave the stuck ones behind (the process is exiting).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (unsigned i = 0; i < live; ++i) {
        worker* w = workers_[i].get();
        if (w == self) {
            w->thread.detach();
            continue;
        }
        while (!w->exited.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        if (w->exited.load(std::memory_order_acquire)) w->thread.join();
        else w->thread.detach();
    }
}

GORO_DECL void scheduler::spawn(task_header* t) noexcept {
    t->state.store(task_state::runnable, std::memory_order_relaxed);
    worker* w = tls_worker;
    const bool local = w && w->sched == this;
    if (local) local_push(*w, t);
    else global_push_n(&t, 1, true);
    wake_if_needed(local);
}

GORO_DECL std::int64_t scheduler::wake_clock(const worker* w) const noexcept {
    if (w && w->sched == this) [[likely]]
        return parked_clock().load(std::memory_order_relaxed);
    return coarse_now_ns();
}

[[gnu::noinline]] GORO_DECL void scheduler::ready_slow(task_header* t, worker* w) noexcept {
    if (w && w->sched == this) {
        task_header* old = w->slots.swap_next(t);
        if (!old) return;
        local_push(*w, old);
        wake_if_needed(true);
    } else if (timer_wakes* b = tls_timer_wakes; b && b->owner == this) {
        b->tasks.push_back(t);  // the timer thread hands its batch over at once (timer.hpp)
    } else {
        global_push_n(&t, 1, true);
        wake_if_needed(false);
    }
}

GORO_DECL void scheduler::ready_n(task_header* const* ts, std::size_t n) noexcept {
    if (n == 0) return;
    if (n == 1) {
        ready(ts[0]);
        return;
    }
    worker* w = tls_worker;
    if (const std::int64_t rate = wait_profile_rate_n.load(std::memory_order_relaxed)) [[unlikely]] {
        const std::int64_t now = wake_clock(w);  // wait_profile.hpp
        for (std::size_t i = 0; i < n; ++i) wait_profile_wake(ts[i], rate, now);
    }
    for (std::size_t i = 0; i < n; ++i) ts[i]->state.store(task_state::runnable, std::memory_order_relaxed);
    const bool local = w && w->sched == this;
    if (local) {
        for (std::size_t i = 0; i < n; ++i) local_push(*w, ts[i]);
    } else if (timer_wakes* b = tls_timer_wakes; b && b->owner == this) {
        for (std::size_t i = 0; i < n; ++i) b->tasks.push_back(ts[i]);
        return;
    } else {
        global_push_n(ts, n, true);
    }
    wake_if_needed(local);
}

GORO_DECL void scheduler::gosched(task_header* t) noexcept {
    t->state.store(task_state::runnable, std::memory_order_relaxed);
    worker* w = tls_worker;
    global_push(t);
    if (!w || w->sched != this) wake_if_needed(false);
}

GORO_DECL void scheduler::yield_task(task_header* t) noexcept {
    t->state.store(task_state::runnable, std::memory_order_relaxed);
    worker* w = tls_worker;
    const bool local = w && w->sched == this;
    if (local) {
        // Behind everything runnable here, including a task in run_next.
        if (task_header* rn = w->slots.swap_next(nullptr)) local_push(*w, rn);
        local_push(*w, t);
    } else {
        global_push(t);
    }
    wake_if_needed(local);
}

GORO_DECL void scheduler::reserve_global(std::size_t need) noexcept {
    if (need <= gq_cap_.load(std::memory_order_relaxed)) return;
    const std::size_t cap = std::bit_ceil(std::max<std::size_t>(need, 1024));
    vec<task_header*> ring(cap);  // declared before the guard: the old ring is freed unlocked
    std::lock_guard g(gq_lock_);
    const std::size_t old_cap = gq_ring_.size();
    if (old_cap >= cap) return;  // another thread grew it meanwhile
    const std::size_t sz = gq_size_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < sz; ++i) ring[i] = gq_ring_[(gq_head_ + i) & (old_cap - 1)];
    gq_ring_.swap(ring);
    gq_head_ = 0;
    gq_cap_.store(cap, std::memory_order_relaxed);
}

GORO_DECL std::uint64_t scheduler::contention_yields() const noexcept {
    std::uint64_t n = 0;
    for (auto& w : workers()) n += w->contention_yields.load(std::memory_order_relaxed);
    return n;
}

GORO_DECL stw_report scheduler::stop_the_world(std::chrono::nanoseconds timeout) {
    stw_mu_.lock();
    stw_report rep;
    std::uint32_t gen = stop_gen_.fetch_add(1, std::memory_order_seq_cst) + 1;  // odd: stop
    worker* self = tls_worker && tls_worker->sched == this ? tls_worker : nullptr;
    held_by_me_.assign(workers_.size(), false);
    vec<worker*> pending;
    // A worker started after this load sees the odd generation at its
    // first safe point and holds there (both sides seq_cst: STUCK WORKERS).
    for (auto& w : workers())
        if (w.get() != self) pending.push_back(w.get());
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int rounds = 0;
    while (!pending.empty()) {
        for (std::size_t i = 0; i < pending.size();) {
            worker* w = pending[i];
            int st = ws_idle;
            bool done = false;
            if (w->acked_gen.load(std::memory_order_acquire) == gen) done = true;
            else if (w->status.compare_exchange_strong(st, ws_held, std::memory_order_acq_rel)) {
                held_by_me_[w->index] = true;
                done = true;
            } else if (w->exited.load(std::memory_order_acquire)) {
                done = true;
            }
            if (done) {
                pending[i] = pending.back();
                pending.pop_back();
            } else {
                ++i;
            }
        }
        if (pending.empty()) break;
        if (std::chrono::steady_clock::now() > deadline) break;
        if (++rounds < 100) cpu_relax();
        else std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    if (!pending.empty()) rep.all_stopped = false;
    for (worker* w : pending)
        if (task_header* t = w->current.load(std::memory_order_acquire)) rep.running.push_back(t);
    if (self && tls_current_task) rep.running.push_back(tls_current_task);
    rep.unstopped = std::move(pending);
    return rep;
}

GORO_DECL vec<task_header*> scheduler::running_unclaimed(const stw_report& rep) {
    vec<task_header*> out;
    if (rep.unstopped.empty()) return out;
    if (asym_fence_) asym_fence_heavy();
    else seq_fence();
    for (worker* w : rep.unstopped)
        if (task_header* t = w->current.load(std::memory_order_seq_cst)) out.push_back(t);
    return out;
}

GORO_DECL bool scheduler::running_site(const task_header* t, site& out) const noexcept {
    for (auto& w : workers()) {
        if (w->current.load(std::memory_order_acquire) != t) continue;
        site s = w->resumed_at.load();
        // Best effort (no fence: TSan does not model one): the site was
        // stored before `current`, and a worker that moved on is seen here.
        if (w->current.load(std::memory_order_seq_cst) != t) return false;  // moved on: unknown
        if (!s.function_name() || !*s.function_name() || s.line() == 0) return false;
        out = s;
        return true;
    }
    return false;
}

GORO_DECL void scheduler::start_the_world() {
    for (auto& w : workers())
        if (held_by_me_[w->index]) w->status.store(ws_idle, std::memory_order_release);
    stop_gen_.fetch_add(1, std::memory_order_seq_cst);  // even: run
    stop_gen_.notify_all();
    stw_mu_.unlock();
}

GORO_DECL void scheduler::local_push(worker& w, task_header* t) noexcept {
    if (w.q.push(t)) return;
    // Full: move half of it and `t` to the global queue.
    task_header* batch[runq_capacity / 2 + 1];
    std::uint32_t n = w.q.grab(batch, runq_capacity / 2);
    batch[n++] = t;
    global_push_n(batch, n);
}

GORO_DECL void scheduler::global_push_n(task_header* const* ts, std::size_t n, bool outside) noexcept {
    for (;;) {
        std::size_t need;
        {
            std::lock_guard g(gq_lock_);
            std::size_t sz = gq_size_.load(std::memory_order_relaxed);
            need = sz + n;
            if (need <= gq_ring_.size()) {
                std::size_t mask = gq_ring_.size() - 1;
                for (std::size_t i = 0; i < n; ++i) gq_ring_[(gq_head_ + sz + i) & mask] = ts[i];
                gq_size_.store(sz + n, std::memory_order_release);
                if (outside) {
                    gq_outside_ += n;
                    if (!outside_waiting_.load(std::memory_order_relaxed))
                        outside_waiting_.store(true, std::memory_order_relaxed);
                }
                return;
            }
        }
        // Full: a bigger ring is made with the lock released (reserve_global), then try again.
        reserve_global(2 * need);
    }
}

GORO_DECL task_header* scheduler::global_get(worker& w, std::size_t max) noexcept {
    task_header* first = nullptr;
    global_take(w, max, &first);
    return first;
}

GORO_DECL void scheduler::global_refill(worker& w) noexcept {
    if (w.q.size() >= runq_capacity / 2) return;
    global_take(w, runq_capacity / 2, nullptr);
}

GORO_DECL std::size_t scheduler::global_take(worker& w, std::size_t max, task_header** first) noexcept {
    if (gq_size_.load(std::memory_order_acquire) == 0) return 0;
    // Thieves only shrink the queue, so the room seen here can only grow.
    const std::size_t room = runq_capacity - w.q.size() + (first ? 1 : 0);
    std::lock_guard g(gq_lock_);
    std::size_t sz = gq_size_.load(std::memory_order_relaxed);
    if (sz == 0) return 0;
    std::size_t n = std::min(std::min(sz, sz / size() + 1), std::min(std::min(max, room), std::size_t(runq_capacity / 2)));
    if (n == 0) return 0;
    std::size_t mask = gq_ring_.size() - 1;
    std::size_t taken = 0;
    if (first) {
        *first = gq_ring_[gq_head_];
        taken = 1;
    }
    for (; taken < n; ++taken)
        if (!w.q.push(gq_ring_[(gq_head_ + taken) & mask])) break;  // cannot happen (room); stay safe
    gq_head_ = (gq_head_ + taken) & mask;
    gq_size_.store(sz - taken, std::memory_order_release);
    gq_outside_ = std::min(gq_outside_ - std::min(gq_outside_, taken), sz - taken);
    if (gq_outside_ == 0 && outside_waiting_.load(std::memory_order_relaxed))
        outside_waiting_.store(false, std::memory_order_relaxed);
    return taken;
}

GORO_DECL bool scheduler::stealable_work() const noexcept {
    if (gq_size_.load(std::memory_order_acquire)) return true;
    if (workers_never_steal().load(std::memory_order_relaxed)) [[unlikely]]
        return false;
    for (auto& w : workers())
        if (w->q.size()) return true;
    return false;
}

GORO_DECL task_header* scheduler::steal(worker& self) noexcept {
    if (workers_never_steal().load(std::memory_order_relaxed)) [[unlikely]]
        return nullptr;
    const std::size_t n = nlive_.load(std::memory_order_acquire);
    if (n < 2) return nullptr;
    for (int round = 0; round < 4; ++round) {
        std::size_t start = static_cast<std::size_t>(next_rand(self) % n);
        for (std::size_t k = 0; k < n; ++k) {
            worker& v = *workers_[(start + k) % n];
            if (&v == &self) continue;
            task_header* batch[runq_capacity / 2];
            std::uint32_t got = v.q.grab(batch, runq_capacity / 2);
            if (got) {
                // The first ones out of our queue: fetch their headers
                // now (local_runq::prefetch_ahead keeps it up from there).
                for (std::uint32_t i = 1; i < got && i <= 5; ++i) prefetch_for_write(batch[i]);
                for (std::uint32_t i = 1; i < got; ++i) self.q.push(batch[i]);
                return batch[0];
            }
            if (round == 3 && v.starving.load(std::memory_order_relaxed))
                if (task_header* t = steal_slots(self, v)) return t;
        }
    }
    return nullptr;
}

GORO_DECL task_header* scheduler::pop_local(worker& w) noexcept {
    if (task_header* t = w.slots.take_claimed(asym_fence_)) return t;
    if (!asym_fence_) return w.q.pop();
    std::uint32_t n = 0;
    task_header* t = w.q.pop_batch<worker::claim_max>(w.slots.claim_slots(), &n);
    w.slots.claimed_filled(n);
    return t;
}

GORO_DECL task_header* scheduler::steal_slots(worker& self, worker& v) noexcept {
    task_header* got[1 + worker::claim_max];
    const std::uint32_t n = v.slots.steal(got, asym_fence_);
    if (n == 0) return nullptr;
    for (std::uint32_t i = 1; i < n; ++i)
        if (!self.q.push(got[i])) global_push(got[i]);  // (a thief's queue is empty: there is room)
    return got[0];
}

GORO_DECL std::uint64_t scheduler::next_rand(worker& w) noexcept {
    w.rng ^= w.rng << 13;
    w.rng ^= w.rng >> 7;
    w.rng ^= w.rng << 17;
    return w.rng;
}

GORO_DECL void scheduler::wake_if_needed(bool local) noexcept {
    if (!local) seq_fence();
    if (nspinning_.load(std::memory_order_seq_cst) == 0 && nidle_.load(std::memory_order_seq_cst) > 0)
        wake_one();
}

GORO_DECL void scheduler::wake_one() noexcept {
    worker* w = nullptr;
    {
        std::lock_guard g(idle_mu_);
        if (idle_.empty()) return;
        w = idle_.back();
        idle_.pop_back();
        w->idle_listed = false;
        nidle_.fetch_sub(1, std::memory_order_seq_cst);
        nspinning_.fetch_add(1, std::memory_order_seq_cst);  // it wakes as a spinner
    }
    w->wake_word.store(1, std::memory_order_release);
    w->wake_word.notify_one();
    timers_.want_ticks();
}

GORO_DECL void scheduler::stop_spinning(worker& w) noexcept {
    if (!w.spinning) return;
    w.spinning = false;
    // The last spinner found work: there may be more, so start another.
    if (nspinning_.fetch_sub(1, std::memory_order_seq_cst) == 1) wake_if_needed(true);  // after a full barrier
}

GORO_DECL void scheduler::claim_running(worker& w) noexcept {
    for (;;) {
        int st = ws_idle;
        if (w.status.compare_exchange_strong(st, ws_running, std::memory_order_seq_cst)) {
            parked_clock().store(coarse_now_ns(), std::memory_order_relaxed);
            timers_.want_ticks();
            return;
        }
        std::uint32_t g = stop_gen_.load(std::memory_order_acquire);
        if ((g & 1) && w.status.load(std::memory_order_acquire) == ws_held) stop_gen_.wait(g);
    }
}

GORO_DECL void scheduler::hold_at_safe_point(worker& w) noexcept {
    if (stw_workers_run_through().load(std::memory_order_relaxed)) [[unlikely]]
        return;
    for (;;) {
        std::uint32_t g = stop_gen_.load(std::memory_order_seq_cst);
        if (!(g & 1)) return;
        w.acked_gen.store(g, std::memory_order_release);
        stop_gen_.wait(g, std::memory_order_acquire);
    }
}

GORO_DECL task_header* scheduler::find_runnable(worker& w) noexcept {
    task_header* t = find_local(w);
    if (!t) t = find_runnable_or_sleep(w);
    if (t) stop_spinning(w);
    return t;
}

GORO_DECL task_header* scheduler::pick_own(worker& w, bool next_first) noexcept {
    if (next_first)
        if (task_header* t = take_run_next(w)) return t;
    if (task_header* t = pop_local(w)) {
        w.next_streak = 0;
        return t;
    }
    if (!next_first)
        if (task_header* t = take_run_next(w)) return t;
    return nullptr;
}

GORO_DECL task_header* scheduler::find_runnable_or_sleep(worker& w) noexcept {
    for (;;) {
        if (shutdown_.load(std::memory_order_relaxed)) return nullptr;
        if (stop_gen_.load(std::memory_order_relaxed) & 1) return nullptr;
        if (++w.tick % 61 == 0) {
            if (task_header* t = global_get(w, runq_capacity / 2)) return t;
        } else if (outside_waiting_.load(std::memory_order_relaxed)) {
            global_refill(w);
        }
        if (task_header* t = pick_own(w, ++w.next_streak % 64 != 0)) return t;
        if (task_header* t = global_get(w, runq_capacity / 2)) return t;
        auto* const poll = idle_poll_hook.load(std::memory_order_acquire);
        if (poll)
            if (task_header* t = poll()) return t;

        // Spin, stealing, unless enough others already do.
        int busy = nactive_.load(std::memory_order_relaxed) - nidle_.load(std::memory_order_relaxed);
        if (!w.spinning && 2 * nspinning_.load(std::memory_order_relaxed) < busy) {
            w.spinning = true;
            nspinning_.fetch_add(1, std::memory_order_seq_cst);
        }
        if (w.spinning) {
            for (int i = 0; i < 32; ++i) {
                if (task_header* t = steal(w)) return t;
                if (task_header* t = global_get(w, runq_capacity / 2)) return t;
                if (stop_gen_.load(std::memory_order_relaxed) & 1) return nullptr;
                for (int k = 0; k < 16; ++k) cpu_relax();
            }
            if (poll)
                if (task_header* t = poll()) return t;
        }
        go_idle(w);
    }
}

GORO_DECL void scheduler::go_idle(worker& w) noexcept {
    the_registry().flush_retired();
    w.status.store(ws_idle, std::memory_order_seq_cst);
    {
        std::lock_guard g(idle_mu_);
        w.idle_listed = true;
        idle_.push_back(&w);
        nidle_.fetch_add(1, std::memory_order_seq_cst);
    }
    if (w.spinning) {
        w.spinning = false;
        nspinning_.fetch_sub(1, std::memory_order_seq_cst);
    }
    seq_fence();
    bool work = stealable_work() || w.slots.peek_next() || shutdown_.load();
    bool slept = true;
    if (work) {
        std::lock_guard g(idle_mu_);
        if (w.idle_listed) {
            idle_.erase(detail::find(idle_.begin(), idle_.end(), &w));
            w.idle_listed = false;
            nidle_.fetch_sub(1, std::memory_order_seq_cst);
            w.spinning = true;
            nspinning_.fetch_add(1, std::memory_order_seq_cst);
            slept = false;
        }
    }
    if (slept) {
        if (auto* const hook = idle_sleep_hook.load(std::memory_order_acquire)) hook();
        // Sleep until a waker takes us off the idle list (it counts us as spinning).
        while (w.wake_word.load(std::memory_order_acquire) == 0) w.wake_word.wait(0, std::memory_order_acquire);
        w.wake_word.store(0, std::memory_order_relaxed);
        if (!shutdown_.load()) w.spinning = true;
    }
    claim_running(w);
}

GORO_DECL void scheduler::run(worker& w, task_header* t) noexcept {
    // Where it resumes: what a dump shows for a task stuck here (its
    // frames change as it runs). The leaf's promise shares its line
    // with the resume pointer the resume reads anyway.
    if (const promise_base* leaf = t->leaf) w.resumed_at.store(leaf->site_);
    else w.resumed_at.store(site{});
    // Publish the task, then look for a profile epoch: a profiler that
    // starts one while this worker has not stopped either finds `t` here
    // or is seen by profile_before_resume (see running_unclaimed).
    if (asym_fence_) {
        w.current.store(t, std::memory_order_release);
        std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
        w.current.exchange(t, std::memory_order_seq_cst);
    }
    profile_before_resume(*t);  // a concurrent profile copies it first, if it has not yet
    t->state.store(task_state::running, std::memory_order_relaxed);
    w.resumes.store(w.resumes.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    tls_current_task = t;
    run_trampoline(t->resume_point());
    tls_current_task = nullptr;
    w.current.store(nullptr, std::memory_order_release);
}

GORO_DECL void scheduler::worker_main(worker& w) noexcept {
    tls_worker = &w;
    for (;;) {
        if (stop_gen_.load(std::memory_order_seq_cst) & 1) hold_at_safe_point(w);
        if (shutdown_.load(std::memory_order_acquire)) break;
        if (rebalance_.load(std::memory_order_relaxed)) [[unlikely]] {
            maybe_retire(w);
            continue;
        }
        task_header* t = find_runnable(w);
        if (!t) continue;
        run(w, t);
        if (w.stuck.load(std::memory_order_relaxed)) [[unlikely]] unstuck(w);
    }
    if (w.spinning) {
        w.spinning = false;
        nspinning_.fetch_sub(1);
    }
    the_registry().flush_retired();
    tls_worker = nullptr;
    w.exited.store(true, std::memory_order_release);
}

GORO_DECL void scheduler::timer_wake_thunk(void* self, task_header* const* ts, std::size_t n) noexcept {
    auto* s = static_cast<scheduler*>(self);
    s->global_push_n(ts, n, true);
    s->wake_if_needed(false);
}

GORO_DECL void scheduler::monitor() noexcept {
    const std::int64_t now = coarse_now_ns();
    parked_clock().store(now, std::memory_order_relaxed);
    const std::int64_t threshold = handoff_threshold_ns_.load(std::memory_order_relaxed);
    bool busy = false, changed = false;
    for (auto& wp : workers()) {
        worker& w = *wp;
        std::uint64_t r = w.resumes.load(std::memory_order_relaxed);
        const bool running = w.current.load(std::memory_order_relaxed) != nullptr;
        bool stuck = running && r == w.seen_resumes;
        bool waiting_work = w.slots.any() || w.q.size();
        w.starving.store(stuck && waiting_work, std::memory_order_relaxed);
        if (stuck && waiting_work && !shutdown_.load(std::memory_order_relaxed)) rescue(w);
        if (!stuck) w.seen_since_ns = now;
        w.seen_resumes = r;
        const bool long_stuck = stuck && threshold > 0 && now - w.seen_since_ns >= threshold;
        if (long_stuck != w.stuck.load(std::memory_order_relaxed)) changed = true;
        if (w.status.load(std::memory_order_seq_cst) == ws_running) busy = true;  // see timer_queue::want_ticks
    }
    if (changed && !shutdown_.load()) hand_off(now, threshold);
    if (busy && !shutdown_.load()) timers_.want_ticks();
}

GORO_DECL void scheduler::rescue(worker& v) noexcept {
    task_header* batch[1 + worker::claim_max + runq_capacity];
    std::size_t n = v.slots.steal(batch, asym_fence_);
    while (n < std::size(batch)) {
        const std::uint32_t room = static_cast<std::uint32_t>(std::size(batch) - n);
        const std::uint32_t got = v.q.grab(batch + n, room);
        if (got == 0) break;
        n += got;
    }
    if (n == 0) return;
    // Counted as wake-ups from outside: every worker then moves a share
    // to its queue at its next round, so a rescued task, which has
    // waited a tick already, waits behind one local queue at most.
    global_push_n(batch, n, true);
    rescued_.fetch_add(n, std::memory_order_relaxed);
    wake_if_needed(false);
}

GORO_DECL void scheduler::make_worker(unsigned i) {
    auto w = std::make_unique<worker>();
    w->sched = this;
    w->index = i;
    w->rng = 0x9E3779B97F4A7C15ull * (i + 1);
    workers_[i] = std::move(w);
}

GORO_DECL void scheduler::hand_off(std::int64_t now, std::int64_t threshold) noexcept {
    std::lock_guard g(procs_mu_);
    for (auto& wp : workers()) {
        worker& w = *wp;
        const bool long_stuck = w.current.load(std::memory_order_relaxed) && threshold > 0 &&
                                w.resumes.load(std::memory_order_relaxed) == w.seen_resumes &&
                                now - w.seen_since_ns >= threshold;
        if (long_stuck && !w.stuck.load(std::memory_order_relaxed)) {
            w.stuck_since_ns.store(w.seen_since_ns, std::memory_order_relaxed);
            if (!w.stuck.exchange(true, std::memory_order_acq_rel)) nstuck_.fetch_add(1, std::memory_order_relaxed);
        } else if (!long_stuck && w.stuck.load(std::memory_order_relaxed)) {
            if (w.stuck.exchange(false, std::memory_order_acq_rel)) nstuck_.fetch_sub(1, std::memory_order_relaxed);
        }
    }
    rebalance_locked();
}

GORO_DECL void scheduler::rebalance_locked() noexcept {
    int unstuck = nactive_.load(std::memory_order_relaxed) - nstuck_.load(std::memory_order_relaxed);
    const int want = static_cast<int>(procs_.load(std::memory_order_relaxed));
    while (unstuck < want && activate_locked()) ++unstuck;
    const bool surplus = unstuck > want;
    if (rebalance_.load(std::memory_order_relaxed) != surplus) rebalance_.store(surplus, std::memory_order_relaxed);
}

GORO_DECL bool scheduler::activate_locked() noexcept {
    if (shutdown_.load()) return false;
    if (!spares_.empty()) {
        worker* w = spares_.back();
        spares_.pop_back();
        nactive_.fetch_add(1, std::memory_order_seq_cst);
        nspinning_.fetch_add(1, std::memory_order_seq_cst);  // it wakes as a spinner
        w->wake_word.store(1, std::memory_order_release);
        w->wake_word.notify_one();
        timers_.want_ticks();
        return true;
    }
    const unsigned i = nlive_.load(std::memory_order_relaxed);
    if (i >= workers_.size()) return false;
    try {
        if (!workers_[i]) make_worker(i);
    } catch (...) {
        return false;
    }
    worker* w = workers_[i].get();
    w->spinning = true;  // before its thread starts: it starts as a spinner
    nspinning_.fetch_add(1, std::memory_order_seq_cst);
    nactive_.fetch_add(1, std::memory_order_seq_cst);
    nlive_.store(i + 1, std::memory_order_seq_cst);
    try {
        w->thread = std::thread([this, w] { worker_main(*w); });
    } catch (...) {
        // Listed but never running: a stop of the world skips it as exited.
        w->spinning = false;
        nspinning_.fetch_sub(1, std::memory_order_seq_cst);
        nactive_.fetch_sub(1, std::memory_order_seq_cst);
        w->exited.store(true, std::memory_order_release);
        return false;
    }
    timers_.want_ticks();
    return true;
}

GORO_DECL void scheduler::unstuck(worker& w) noexcept {
    {
        std::lock_guard g(procs_mu_);
        if (w.stuck.exchange(false, std::memory_order_acq_rel)) nstuck_.fetch_sub(1, std::memory_order_relaxed);
        rebalance_locked();
    }
    if (rebalance_.load(std::memory_order_relaxed)) maybe_retire(w);
}

GORO_DECL void scheduler::maybe_retire(worker& w) noexcept {
    {
        std::lock_guard g(procs_mu_);
        const int want = static_cast<int>(procs_.load(std::memory_order_relaxed));
        const int unstuck = nactive_.load(std::memory_order_relaxed) - nstuck_.load(std::memory_order_relaxed);
        if (unstuck <= want || shutdown_.load()) {
            rebalance_locked();
            return;
        }
        nactive_.fetch_sub(1, std::memory_order_seq_cst);
        spares_.push_back(&w);
        rebalance_.store(unstuck - 1 > want, std::memory_order_relaxed);
    }
    park_spare(w);
}

GORO_DECL void scheduler::park_spare(worker& w) noexcept {
    if (w.spinning) {
        w.spinning = false;
        nspinning_.fetch_sub(1, std::memory_order_seq_cst);
    }
    task_header* batch[runq_capacity + 1 + worker::claim_max];
    std::size_t n = 0;
    if (task_header* t = take_run_next(w)) batch[n++] = t;
    while (task_header* t = w.slots.take_claimed(asym_fence_)) batch[n++] = t;
    while (n < std::size(batch))
        if (task_header* t = w.q.pop()) batch[n++] = t;
        else break;
    if (n) global_push_n(batch, n);
    // Whether or not it queued any: a task that yielded just before
    // (gosched wakes no one, counting on this worker) waits there too.
    wake_if_needed(false);
    the_registry().flush_retired();
    w.status.store(ws_idle, std::memory_order_seq_cst);  // a stop of the world holds it like an idle worker
    while (w.wake_word.load(std::memory_order_acquire) == 0) w.wake_word.wait(0, std::memory_order_acquire);
    w.wake_word.store(0, std::memory_order_relaxed);
    if (!shutdown_.load()) w.spinning = true;
    claim_running(w);
}

GORO_DECL void scheduler::set_procs(unsigned n) {
    std::lock_guard g(procs_mu_);
    if (n > workers_.size() / 2)
        throw usage_error("goro::set_max_procs: " + std::to_string(n) + " workers is more than this pool allows (" +
                          std::to_string(workers_.size() / 2) + ")");
    procs_.store(n, std::memory_order_relaxed);
    rebalance_locked();
}

GORO_DECL std::pair<unsigned, std::chrono::nanoseconds> scheduler::stuck_now() const noexcept {
    unsigned n = 0;
    std::int64_t longest = 0;
    const std::int64_t now = coarse_now_ns();
    for (auto& w : workers())
        if (w->stuck.load(std::memory_order_relaxed)) {
            ++n;
            longest = std::max(longest, now - w->stuck_since_ns.load(std::memory_order_relaxed));
        }
    return {n, std::chrono::nanoseconds(longest)};
}

GORO_DECL unsigned default_procs() {
    if (const char* e = std::getenv("GORO_MAXPROCS")) {
        char* end = nullptr;
        long v = std::strtol(e, &end, 10);
        if (end != e && *end == '\0' && v > 0 && v <= 4096) return static_cast<unsigned>(v);
        std::fprintf(stderr, "goro: ignoring GORO_MAXPROCS=\"%s\": want an integer from 1 to 4096\n", e);
    }
    unsigned hc = std::thread::hardware_concurrency();
    return hc ? hc : 1;
}

GORO_DECL void park(task_header* t, std::coroutine_handle<> h, const char* reason) noexcept {
    t->set_resume_point(h);
    t->wait_reason.store(reason, std::memory_order_relaxed);
    // Even: the coarse clock; odd: a park the wait profile samples (wait_profile.hpp).
    std::int64_t since = parked_clock().load(std::memory_order_relaxed) & ~std::int64_t(1);
    if (const std::int64_t rate = wait_profile_rate_n.load(std::memory_order_relaxed)) [[unlikely]]
        since = wait_profile_park_time(since, rate);
    t->since_ns.store(since, std::memory_order_relaxed);
    t->state.store(task_state::waiting, std::memory_order_relaxed);
}

GORO_DECL task_header* current_task_or_throw(const char* op) {
    task_header* t = tls_current_task;
    if (!t) throw usage_error(std::string(op) + ": must be awaited inside a goro task (use goro::block_on from a plain thread)");
    return t;
}

}  // namespace goro::detail

namespace goro {

GORO_DECL void set_max_procs(unsigned n) {
    if (n == 0) throw usage_error("goro::set_max_procs: the number of workers must be at least 1");
    detail::pool_holder& h = detail::the_pool_holder();
    std::lock_guard g(h.mu);
    if (detail::scheduler* s = h.pool.load()) {
        if (s->stopping()) throw usage_error("goro::set_max_procs: the pool has shut down (process exit)");
        s->set_procs(n);
        return;
    }
    detail::requested_procs().store(n);
}

GORO_DECL stuck_workers_info stuck_workers() noexcept {
    if (!detail::pool_started()) return {};
    auto [n, d] = detail::the_scheduler().stuck_now();
    return {n, d};
}

}  // namespace goro

#endif  // GORO_BODIES
// ---- end goro/core/scheduler.hpp ----

namespace goro {
namespace detail {

/// Foreign waits in progress: while it is not zero the deadlock detector
/// stays quiet (goro/inspect/deadlock.hpp).
inline std::atomic<std::int64_t>& external_waits() noexcept {
    static std::atomic<std::int64_t> n{0};
    return n;
}

/// The handle a foreign awaitable is given (see THREADS above).
struct relay {
    struct promise_type {
        std::atomic<std::uint32_t> phase{0};  // 0: await_suspend runs, 1: it returned, 2: resumed
        task_header* task = nullptr;

        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<promise_type> h) const noexcept;
            void await_resume() const noexcept {}
        };

        relay get_return_object() noexcept { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> h;
};

// A template only so that g++ compiles the coroutine where it is used (see
// reap_abandoned in goro/inspect/deadlock.hpp).
template <int = 0>
relay make_relay() {
    co_return;
}

template <class A>
struct foreign_awaiter {
    using inner_ref = decltype(get_awaiter(std::declval<A>()));
    static constexpr bool by_ref = std::is_reference_v<inner_ref>;
    using inner_t = std::remove_reference_t<inner_ref>;
    using stored_t = std::conditional_t<by_ref, inner_t*, inner_t>;
    using suspend_t = decltype(std::declval<inner_t&>().await_suspend(std::declval<std::coroutine_handle<>>()));
    static constexpr bool returns_handle = !std::is_void_v<suspend_t> && !std::is_same_v<suspend_t, bool>;
    using result_t = std::conditional_t<returns_handle, std::coroutine_handle<>, bool>;

    promise_base* frame;
    stored_t inner;
    bool parked = false;

    foreign_awaiter(promise_base& p, A&& a) : frame(&p), inner(make(static_cast<A&&>(a))) {}
    foreign_awaiter(const foreign_awaiter&) = delete;
    foreign_awaiter& operator=(const foreign_awaiter&) = delete;

    static stored_t make(A&& a) {
        if constexpr (by_ref) {
            auto&& r = get_awaiter(static_cast<A&&>(a));
            return std::addressof(r);
        } else {
            return get_awaiter(static_cast<A&&>(a));
        }
    }
    inner_t& in() noexcept {
        if constexpr (by_ref) return *inner;
        else return inner;
    }

    bool await_ready() { return in().await_ready(); }

    result_t await_suspend(std::coroutine_handle<> h) {
        task_header* t = frame->header_;
        if (!t || tls_current_task != t) [[unlikely]] return pass_through(h);  // not on the pool: as it is
        relay r = make_relay();
        r.h.promise().task = t;
        park(t, h, wait_reason::external);
        external_waits().fetch_add(1, std::memory_order_relaxed);
        parked = true;
        if constexpr (std::is_void_v<suspend_t>) {
            call_inner(r, t);
            return settle(r, t, h);
        } else if constexpr (std::is_same_v<suspend_t, bool>) {
            if (!call_inner(r, t)) {  // not suspended: the relay will never be resumed
                r.h.destroy();
                unpark(t);
                return false;
            }
            return settle(r, t, h);
        } else {
            std::coroutine_handle<> o = call_inner(r, t);
            if (o == r.h) {  // "resume the awaiting coroutine now"
                r.h.destroy();
                unpark(t);
                return h;
            }
            if (r.h.promise().phase.exchange(1, std::memory_order_acq_rel) == 2) {
                // Resumed already: the task runs on from the queue; `o` runs here.
                r.h.destroy();
                ready(t);
            }
            // `o` is not part of the task: it runs with no current task.
            tls_current_task = nullptr;
            return o;
        }
    }

    decltype(auto) await_resume() {
        if (parked) external_waits().fetch_sub(1, std::memory_order_relaxed);
        return in().await_resume();
    }

private:
    result_t pass_through(std::coroutine_handle<> h) {
        if constexpr (std::is_void_v<suspend_t>) {
            in().await_suspend(h);
            return true;
        } else {
            return in().await_suspend(h);
        }
    }

    void unpark(task_header* t) noexcept {
        t->state.store(task_state::running, std::memory_order_relaxed);
        external_waits().fetch_sub(1, std::memory_order_relaxed);
        parked = false;
    }

    decltype(auto) call_inner(relay& r, task_header* t) {
        try {
            return in().await_suspend(std::coroutine_handle<>(r.h));
        } catch (...) {
            // The awaitable did not suspend: by contract it keeps no handle.
            r.h.destroy();
            unpark(t);
            throw;
        }
    }

    /// After an await_suspend that suspended: park, or continue at once if
    /// the relay already ran. Touches nothing of the frame once parked.
    result_t settle(relay& r, task_header* t, std::coroutine_handle<> h) {
        (void)h;
        std::coroutine_handle<relay::promise_type> rh = r.h;
        if (rh.promise().phase.exchange(1, std::memory_order_acq_rel) != 2) {
            if constexpr (returns_handle) return std::noop_coroutine();
            else return true;
        }
        rh.destroy();
        unpark(t);
        if constexpr (returns_handle) return h;
        else return false;
    }
};

}  // namespace detail
}  // namespace goro

#if GORO_BODIES
namespace goro::detail {

GORO_DECL void relay::promise_type::final_awaiter::await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
    promise_type& p = h.promise();
    task_header* t = p.task;
    if (p.phase.exchange(2, std::memory_order_acq_rel) == 1) {
        h.destroy();
        ready(t);  // the task may run (and end) from here on
    }
    // Else the worker is still in await_suspend: it frees us and continues the task.
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/core/foreign.hpp ----

namespace goro {

template <class T = void>
class task;

namespace detail {

// LAMBDA CALLS. `goro::go([=]() -> goro::task<> {...}())` calls a lambda in
// place: the coroutine reads its captures through the lambda object, a
// temporary that dies when go() returns, long before the task runs. The
// promise's constructor sees the object a member coroutine is called on
// (C++20 passes it first, before the parameters): when that is a lambda's
// closure with captures and it does not live in the frame itself (a lambda
// passed by value to a coroutine function is a parameter copied into the
// frame: that is safe), the frame is marked (its site, unused until the
// first suspension) and go() and spawn() refuse the task. g++ passes the
// object; clang++ 14 does not pass a lambda's, so there nothing is caught.

template <class T>
constexpr std::string_view type_spelling() noexcept {
    return __PRETTY_FUNCTION__;
}

/// True for a lambda's closure type, read from the compiler's spelling of it
/// (g++: "f()::<lambda(int)>", clang++: "(lambda at f.cpp:3:5)").
template <class T>
constexpr bool is_closure_type() noexcept {
    std::string_view s = type_spelling<T>();
    const auto p = s.find("T = ");
    if (p == std::string_view::npos) return false;
    s = s.substr(p + 4);
    if (s.substr(0, 11) == "(lambda at ") return true;
    s = s.substr(0, s.find_first_of(";]"));
    const auto l = s.rfind("<lambda(");
    if (l == std::string_view::npos) return false;
    int depth = 0;
    std::size_t i = l + 7;
    for (; i < s.size(); ++i) {
        if (s[i] == '(') ++depth;
        else if (s[i] == ')' && --depth == 0) break;
    }
    return i + 2 == s.size() && s[i + 1] == '>';  // the lambda is the type itself, not an argument of it
}

/// The mark of a frame made by calling a lambda with captures (see LAMBDA CALLS).
inline site lambda_call_site() noexcept {
#if GORO_HAS_SOURCE_LOCATION
    return site::current();
#else
    return site{__FILE__, "goro::detail::lambda_call_site", __LINE__};
#endif
}

GORO_DECL bool is_lambda_call_site(const site& s) noexcept;

template <class Self, class... Args>
void note_self(Self& self, promise_base& p, std::size_t promise_size, void* frame) noexcept {
    using S = std::remove_cvref_t<Self>;
    if constexpr (std::is_class_v<S> && !std::is_empty_v<S> && is_closure_type<S>()) {
        const char* a = reinterpret_cast<const char*>(std::addressof(self));
        const char* f = static_cast<const char*>(frame);
        // Parameters are copied into the frame right after the promise.
        const std::size_t params = sizeof(S) + (0 + ... + sizeof(Args)) + 16 * (1 + sizeof...(Args));
        if (a >= f && a < reinterpret_cast<const char*>(&p) + promise_size + params + 256) return;
        p.site_ = lambda_call_site();
    } else {
        (void)self, (void)p, (void)promise_size, (void)frame;
    }
}

/// Throws when `h` was made by calling a lambda with captures in place.
template <class Promise>
void check_not_lambda_call(std::coroutine_handle<Promise> h, const char* op) {
    const site& s = h.promise().site_;
    if (s.line() != 0 && is_lambda_call_site(s)) [[unlikely]]
        throw usage_error(std::string(op) +
                          ": the task is a call of a lambda with captures, which live in the lambda object and die "
                          "with it before the task runs; pass the lambda itself, not called: "
                          "goro::go([=]() -> goro::task<> { ... })");
}

template <class Promise>
struct final_awaiter {
    using is_goro_awaiter = void;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<Promise> h) noexcept {
        Promise& p = h.promise();
        if (p.continuation_) {
            if (p.header_) p.header_->leaf = p.parent_;
            continue_with(p.continuation_);
            return;
        }
        if (p.header_ && p.header_->root_frame_ == h.address()) {
            // A root task started by go(): it owns itself.
            task_header* hdr = p.header_;
            std::exception_ptr e = p.take_exception();
            if (e) panic_handler().load(std::memory_order_acquire)(*hdr, std::move(e));
            finish_root(hdr, h);
        }
        // Otherwise the task was resumed by hand, outside goro: its owner destroys it.
    }
    void await_resume() const noexcept {}
};

template <class T>
struct task_promise : promise_base {
    // The result: a value, or an exception (error_ set, value_ empty), or
    // neither before the body returns. Not a std::variant: its machinery
    // costs every program ~50 functions per T at -O0 (issue 17).
    std::optional<T> value_;
    std::exception_ptr error_;

    task_promise() noexcept = default;
    template <class Self, class... Args>
    explicit task_promise(Self& self, Args&...) noexcept {
        note_self<Self, Args...>(self, *this, sizeof(task_promise),
                                 std::coroutine_handle<task_promise>::from_promise(*this).address());
    }

    task<T> get_return_object(GORO_SITE_PARAM) noexcept;
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter<task_promise> final_suspend() const noexcept { return {}; }

    template <class U>
        requires std::convertible_to<U&&, T>
    void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
        value_.emplace(std::forward<U>(v));
    }
    void unhandled_exception() noexcept {
        value_.reset();
        error_ = std::current_exception();
    }

    std::exception_ptr take_exception() noexcept { return std::move(error_); }
    T take_result() {
        if (error_) std::rethrow_exception(std::move(error_));
        return std::move(*value_);
    }

    using promise_base::await_transform;
    template <class A>
    decltype(auto) await_transform(keep_site<A> k) noexcept(is_goro_awaitable_v<A>) {
        return transform_awaitable(*this, static_cast<A&&>(k.awaitable));
    }
};

template <>
struct task_promise<void> : promise_base {
    std::exception_ptr error_;

    task_promise() noexcept = default;
    template <class Self, class... Args>
    explicit task_promise(Self& self, Args&...) noexcept {
        note_self<Self, Args...>(self, *this, sizeof(task_promise),
                                 std::coroutine_handle<task_promise>::from_promise(*this).address());
    }

    task<void> get_return_object(GORO_SITE_PARAM) noexcept;
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter<task_promise> final_suspend() const noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { error_ = std::current_exception(); }

    std::exception_ptr take_exception() noexcept { return std::move(error_); }
    void take_result() {
        if (error_) std::rethrow_exception(std::move(error_));
    }

    using promise_base::await_transform;
    template <class A>
    decltype(auto) await_transform(keep_site<A> k) noexcept(is_goro_awaitable_v<A>) {
        return transform_awaitable(*this, static_cast<A&&>(k.awaitable));
    }
};

/// Runs `child` as a root task on the pool and resumes `awaiting` (a
/// coroutine that is not goro's) on the worker that finished it, once the
/// task has left the registry (defined in goro/core/go.hpp).
template <class Promise>
void start_for_foreign(std::coroutine_handle<Promise> child, std::coroutine_handle<> awaiting);

/// Starts a child task: links it below the awaiting goro frame and hands it
/// to the trampoline. A coroutine that is not goro's gets the child run as a
/// task of its own on the pool (start_for_foreign), and is resumed when it ends.
template <class Promise>
struct task_awaiter {
    using is_goro_awaiter = void;
    std::coroutine_handle<Promise> child;

    bool await_ready() const {
        if (!child) return true;  // await_resume says why
        // A task runs only once awaited or started: one already done was awaited.
        if (child.done()) throw usage_error("goro::task: co_await on a task that was already awaited (a task can be awaited once)");
        return false;
    }

    template <class P>
    void await_suspend(std::coroutine_handle<P> parent) noexcept(std::is_base_of_v<promise_base, P>) {
        Promise& cp = child.promise();
        if constexpr (std::is_base_of_v<promise_base, P>) {
            cp.continuation_ = parent;
            promise_base& pp = parent.promise();
            cp.parent_ = &pp;
            cp.header_ = pp.header_;
            if (cp.header_) cp.header_->leaf = &cp;
            continue_with(child);
        } else {
            start_for_foreign(child, parent);
        }
    }

    decltype(auto) await_resume() {
        if (!child) throw usage_error("goro::task: co_await on an empty (moved-from) task");
        return child.promise().take_result();
    }
};

}  // namespace detail

template <class T>
class [[nodiscard("goro::task: co_await it, or start it with goro::go or goro::spawn")]] task {
public:
    using is_goro_awaiter = void;
    using promise_type = detail::task_promise<T>;
    using value_type = T;

    task() noexcept = default;
    explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    task& operator=(task&& o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    ~task() { reset(); }

    /// True when this object holds a coroutine (not moved-from or empty).
    explicit operator bool() const noexcept { return bool(h_); }

    auto operator co_await() && noexcept { return detail::task_awaiter<promise_type>{h_}; }
    auto operator co_await() & noexcept { return detail::task_awaiter<promise_type>{h_}; }

    /// Gives up ownership of the frame (used by go() and block_on()).
    std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, {}); }
    std::coroutine_handle<promise_type> handle() const noexcept { return h_; }

private:
    void reset() noexcept {
        if (h_) std::exchange(h_, {}).destroy();
    }
    std::coroutine_handle<promise_type> h_{};
};

namespace detail {
// ENTRY SITE. The compiler calls get_return_object from inside the new
// coroutine, so its default site argument names the coroutine itself: the
// frame's site until its first co_await replaces it. A task that runs without
// ever suspending (a CPU loop, a blocking call) therefore shows in a dump in
// its own function, not as "stack unavailable". The line is where the compiler
// places the call: the function's closing brace on g++, its declaration on
// clang++. A frame marked by note_self (LAMBDA CALLS) keeps its mark.
template <class T>
task<T> task_promise<T>::get_return_object(GORO_SITE_PARAM_DEF) noexcept {
    if (this->site_.line() == 0) this->site_ = GORO_SITE_ARG;
    return task<T>{std::coroutine_handle<task_promise<T>>::from_promise(*this)};
}
inline task<void> task_promise<void>::get_return_object(GORO_SITE_PARAM_DEF) noexcept {
    if (site_.line() == 0) site_ = GORO_SITE_ARG;
    return task<void>{std::coroutine_handle<task_promise<void>>::from_promise(*this)};
}

/// Whether X is a goro::task (spawn, once and when_* tell a task from a callable).
template <class X>
inline constexpr bool is_task_v = false;
template <class T>
inline constexpr bool is_task_v<task<T>> = true;
}  // namespace detail

}  // namespace goro

#if GORO_BODIES
namespace goro::detail {

GORO_DECL bool is_lambda_call_site(const site& s) noexcept {
    // The line and the function name, not the file name: that is spelled as
    // each translation unit found the header (-I paths differ between a
    // program and the runtime compiled once, or between two programs' TUs).
    static const site mark = lambda_call_site();
    return s.line() == mark.line() && s.line() != 0 && std::string_view(s.function_name()) == mark.function_name();
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/core/task.hpp ----

// ---- begin goro/core/go.hpp ----
// goro/core/go.hpp — starting tasks and waiting for them: go, block_on, sleep, yield.
//
//   goro::go(worker(ch));                       // detached root task, like `go worker(ch)`
//   goro::go(worker(ch), {.name = "worker"});   // with a name (and pprof labels)
//   int v = goro::block_on(compute());          // from main or any plain thread
//   co_await goro::sleep_for(10ms);
//   co_await goro::yield();
//
// go() records where it was called ("created by f in goroutine N"). block_on()
// lists the calling thread in the registry for as long as it waits, with the
// call site as its bottom frame, so a dump shows what `main` waits for.
// block_on() on a pool worker throws goro::usage_error: blocking a worker can
// deadlock the pool (co_await instead).
//
// What a failing program prints is the same whatever it includes: the first
// task started (by go() or block_on()) installs the crash report
// (goro/inspect/panic.hpp) as the handler of an exception that escapes a task,
// and block_on() always waits through the deadlock detector
// (goro/inspect/deadlock.hpp). So this header, the top of core/, includes those
// two inspect/ headers; they are reached only from go() and block_on(), and
// a program that never calls them compiles none of their code into itself.
//
// At process exit the pool's workers are stopped. Tasks still parked then (a
// leak) are neither resumed nor destroyed: their frames stay allocated and
// listed in the registry, which is never freed, so leak checkers see them as
// reachable and no destructor runs against already destroyed globals.

#include <atomic>
#include <chrono>
#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>


// ---- begin goro/inspect/deadlock.hpp ----
// goro/inspect/deadlock.hpp — "fatal error: all goroutines are asleep - deadlock!"
//
//   int main() { goro::channel<int> ch; goro::block_on(ch.recv()); }  // nobody sends
//
// prints to stderr
//
//   fatal error: all goroutines are asleep - deadlock!
//
//   goroutine 1 [chan receive]:
//   main(...)
//           main.cpp:1
//
// and makes that block_on throw `goro::deadlock_error` (the default policy).
//
// WHAT COUNTS AS A DEADLOCK: a thread waits in block_on, every listed task
// (block_on bodies included) is parked, no timer is pending (a sleep, a
// deadline or a select timeout will wake someone), no work is queued, every
// worker is idle, no `external_wakeup_guard` exists, no task awaits a foreign
// awaitable (goro/core/foreign.hpp: it is answered from outside), and nothing has moved
// for a grace period (default 1 s): no task was resumed (the workers'
// `resumes` counters) and none was spawned or finished. The grace period is
// there because a thread goro does not know of may still send; a program that
// relies on such a thread to wake tasks after long pauses should hold an
// `external_wakeup_guard` (or turn detection off).
//
// POLICY (`goro::set_deadlock_policy`, or the environment variable
// GORO_DEADLOCK read once at first use; the API call wins):
//   throw (throw_error, default)  print the report; every block_on waiting
//                                 then throws goro::deadlock_error (its
//                                 report() holds the same text)
//   abort                         print the report, then std::abort()
//   off                           never check
// `goro::set_deadlock_grace(d)` changes the grace period.
//
// AFTER deadlock_error the parked tasks stay parked: they are leaked, and
// still listed by dumps and leak checks. The deadlocked block_on's own task is
// abandoned: its awaitable belonged to the caller, whose unwinding destroys
// it, so the task is re-pointed at its bottom frame (a dump shows the
// block_on call, parked on what it waited for) and, should some thread wake
// it later anyway, it leaves the registry without touching the destroyed
// awaitable.
//
// THREADS AND LOCKS: block_on (go.hpp) calls `deadlock_aware_wait`, which
// lists the waiting thread, then sleeps on its `done` word like any block_on. One
// watchdog thread, started at the first block_on and never stopped, looks
// every grace/4 (at most 100 ms) while some block_on waits, and sleeps
// otherwise. It reports from its own thread. Lock order (core/lock_rank.hpp):
// stop the world → registry shards → watch mutex. A waiting thread takes only the watch mutex.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>


namespace goro {

/// Thrown by a block_on that waited in a deadlock (see the top of this header).
class deadlock_error : public error {
public:
    explicit deadlock_error(std::shared_ptr<const std::string> report)
        : error("goro::block_on: all goroutines are asleep - deadlock!"), report_(std::move(report)) {}
    /// The report printed to stderr: the fatal error line, a blank line, every task (debug=2).
    const std::string& report() const noexcept {
        static const std::string none;
        return report_ ? *report_ : none;
    }

private:
    std::shared_ptr<const std::string> report_;
};

enum class deadlock_policy : int {
    throw_error,  ///< print the report, then block_on throws goro::deadlock_error
    abort,        ///< print the report, then std::abort()
    off,          ///< no detection
};

namespace detail {

struct deadlock_waiter {
    std::atomic<std::uint32_t>* done;
    task_header* body;                              // a key; dereferenced only while listed, world stopped
    std::shared_ptr<const std::string> report{};    // set when the watchdog ends the wait
};

struct deadlock_watch {
    ranked_lock<std::mutex, lock_rank::deadlock_watch> mu;
    std::condition_variable cv;
    vec<deadlock_waiter*> waiters;         // under mu
    bool thread_started = false;                   // under mu
    std::atomic<int> policy{-1};                   // -1: not read from the environment yet
    std::atomic<std::int64_t> grace_ns{1'000'000'000};
    std::atomic<int> external_guards{0};
};

inline deadlock_watch& the_deadlock_watch() {
    static deadlock_watch* w = new deadlock_watch();  // never destroyed: the watchdog outlives main
    return *w;
}

GORO_DECL deadlock_policy current_deadlock_policy();

/// block_on's wait (go.hpp): lists the thread for the watchdog while it waits.
GORO_DECL void deadlock_aware_wait(std::atomic<std::uint32_t>& done, task_header* body);

}  // namespace detail

/// Chooses what a detected deadlock does (see POLICY above).
inline void set_deadlock_policy(deadlock_policy p) {
    detail::the_deadlock_watch().policy.store(static_cast<int>(p), std::memory_order_release);
}

inline deadlock_policy get_deadlock_policy() { return detail::current_deadlock_policy(); }

/// How long nothing must move before a deadlock is reported (default 1 s).
template <class Rep, class Period>
void set_deadlock_grace(std::chrono::duration<Rep, Period> d) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    if (ns <= 0) throw usage_error("goro::set_deadlock_grace: the grace period must be positive");
    detail::deadlock_watch& w = detail::the_deadlock_watch();
    w.grace_ns.store(ns, std::memory_order_relaxed);
    std::lock_guard g(w.mu);
    w.cv.notify_all();  // pick up a shorter period now
}

inline std::chrono::nanoseconds deadlock_grace() {
    return std::chrono::nanoseconds(detail::the_deadlock_watch().grace_ns.load(std::memory_order_relaxed));
}

/// While one exists, the deadlock detector never fires: hold one in a
/// component whose threads wake tasks from outside goro (an I/O poller, a
/// callback thread) and may stay silent longer than the grace period.
class external_wakeup_guard {
public:
    external_wakeup_guard() noexcept { detail::the_deadlock_watch().external_guards.fetch_add(1, std::memory_order_acq_rel); }
    ~external_wakeup_guard() { detail::the_deadlock_watch().external_guards.fetch_sub(1, std::memory_order_acq_rel); }
    external_wakeup_guard(const external_wakeup_guard&) = delete;
    external_wakeup_guard& operator=(const external_wakeup_guard&) = delete;
};

}  // namespace goro

#if GORO_BODIES
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>


// ---- begin goro/inspect/dump.hpp ----
// goro/inspect/dump.hpp — every task's stack in Go's goroutine-profile formats.
//
//   goro::dump_goroutines();                   // debug=1 to stderr, grouped by stack
//   goro::dump_goroutines(std::cout, 2);       // one block per task, like a Go crash
//   std::string pb = goro::goroutine_profile(0);   // pprof protobuf (go tool pprof)
//   std::string js = goro::tasks_json();           // machine-readable (debug=3)
//   auto before = goro::snapshot::take(); ... auto after = goro::snapshot::take();
//   goro::write_diff(std::cerr, goro::diff(before, after));   // what leaked in between
//
// Every form takes a snapshot (goro/inspect/snapshot.hpp: the world stops only to begin
// it; records are copied while tasks run) or formats one the caller already took, so a leak checker or the
// debug server can print one snapshot several ways. Formatting runs on the
// caller's thread while tasks run. Text goes through a 64 KiB buffer and an
// ostream gets it chunk by chunk: a dump of any size is complete (Go stops
// debug=2 at 64 MiB; goro does not) and never built as one string unless a
// string was asked for. Per-site text is formatted once per call (see the
// profile_view in goro/inspect/pprof.hpp), so a million tasks on a few sites cost a
// few string copies each.
//
// debug = 1 (Go's grouped format; `grep "goroutine profile:"` keeps working)
//     goroutine profile: total 20
//     15 @ 0x2f4a0c11d2e1 0x91aa20e4f0b7
//     # labels: {"role":"worker"}
//     #	0x2f4a0c11d2e1	worker		src/w.cpp:16
//     #	0x91aa20e4f0b7	run_pool	src/w.cpp:40
//     (blank line)
//   Groups by count descending (ties: smallest task id first); the sum of the
//   counts is the total. `0x…` is goro::site_id: stable across runs for the
//   same function, file and line. Columns are padded with tabs exactly as Go's
//   text/tabwriter pads them (minwidth 1, tabwidth 8, padding 1). The labels
//   line uses Go's spelling: "key":"value" pairs quoted like Go's %q, sorted,
//   joined by ", ".
//
// debug = 2 (one block per task, ascending id, blocks separated by a blank line)
//     goroutine 18 [chan receive, 5 minutes]:
//     goroutine 19 name="worker-2" [chan receive]:     (a named task: Go-quoted,
//                                   where Go's system tracebacks put gp=… m=…)
//     worker(...)
//     	src/w.cpp:16
//     created by run_pool in goroutine 1
//     	src/w.cpp:40
//   States: the wait reason (Go's words) when parked, else `running` or
//   `runnable`; `, N minutes` once parked a minute or more (N = whole minutes,
//   Go's rule). ` in goroutine N` is left out when the task was started from a
//   plain thread. A thread in block_on() has no `created by` line: like Go's
//   main goroutine, its bottom frame is the block_on() call.
//
// Frames that cannot be read show as a pseudo-frame: `(not started)` for a
// task that never ran, `(stack unavailable: running)` for a task still
// running on a worker that did not stop when the site its worker resumed it
// at is unknown. A task running there shows that site instead; a task that
// has not suspended yet shows its own function (ENTRY SITE in
// goro/core/task.hpp: the line is the function's closing brace on g++, its
// declaration on clang++), so a CPU loop or a blocking call before the first
// co_await is found by name. A task started with go(callable) or spawn() is
// resumed first in goro's runner frame, which has no site of its own: it
// shows the go()/spawn() call while the callable runs, then the entry site
// of the task the callable returned (the go()/spawn() call again for a lambda
// coroutine with captures; RUNNING SITE in goro/core/go.hpp).
//
// debug = 0: pprof protobuf, see goro/inspect/pprof.hpp.
//
// debug = 3 / tasks_json(): JSON, one task or group per line. SCHEMA
//   {
//     "total": <int>,                       // = tasks.length = sum of groups[].count
//     "tasks": [ {                          // ascending id
//        "id": <int>,
//        "state": "waiting" | "runnable" | "running",
//        "wait_reason": <string> | null,    // Go's words ("chan receive"); null unless waiting
//        "waiting_ns": <int>,               // how long parked when the snapshot was taken; 0 unless waiting
//        "name": <string>,                  // "" when unnamed
//        "labels": { <string>: <string>, ... },
//        "kind": "task" | "block_on",       // block_on: a plain thread waiting in goro::block_on
//        "parent_id": <int>,                // 0: started outside any task
//        "created_by": <frame>,             // where go()/block_on() was called
//        "frames_known": <bool>,            // false: running on a worker that did not stop
//        "frames": [ <frame>, ... ]         // leaf first
//     } ],
//     "groups": [ {                         // as debug=1: count descending
//        "count": <int>, "task_ids": [<int>, ...], "labels": {...}, "frames": [ <frame>, ... ]
//     } ]
//   }
//   <frame> = {"function": <string>, "file": <string>, "line": <int>, "site_id": "0x…"}
//   Strings are JSON-escaped; invalid UTF-8 bytes become U+FFFD.
//
// Diff: `diff(before, after)` lists the groups whose count grew (new groups
// too), by delta descending, with the ids of the tasks in them that did not
// exist before. `write_diff` prints it in the debug=1 shape:
//     goroutine profile diff: +15
//     +15 @ 0x2f4a0c11d2e1
//     #	0x2f4a0c11d2e1	worker	src/w.cpp:16
//   (the header's number is the change of the total; `+delta @ …` per group).

#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>


// ---- begin goro/core/stack.hpp ----
// goro/core/stack.hpp — reading a task's logical stack: its chain of suspension sites.
//
//   auto frames = goro::current_stack();  // inside a task: leaf first, root last
//
// Each frame is (function, file, line) of a `co_await` that is suspended now.
// Names come from the compiler: g++ (std::source_location) gives the qualified
// name, but for a coroutine body the name of its "actor" wrapper, e.g.
//   void ns::worker(ns::worker(int)::_ZN2ns6workerEi.Frame*)
// which `clean_function_name` turns into `ns::worker`; clang++ 14 gives the
// bare name (`worker`). Lambdas read `f()::{lambda}`.
//
// Only call stack_of on a task that is not running: parked or runnable, with
// the world stopped (see goro/inspect/snapshot.hpp), or from the task itself.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>


namespace goro {

/// One frame of a task's logical stack.
struct stack_frame {
    std::string function;  ///< cleaned-up function name
    std::string file;
    unsigned line = 0;
};

/// Turns the compiler's spelling of a function into a readable name.
GORO_DECL std::string clean_function_name(std::string_view raw);

namespace detail {

GORO_DECL stack_frame to_frame(const site& s);

/// The task's stack, leaf first, names cleaned.
GORO_DECL std::vector<stack_frame> stack_of(const task_header& t);

}  // namespace detail

/// The stack of the task calling this (leaf first). Inside a task only.
GORO_DECL std::vector<stack_frame> current_stack();

}  // namespace goro

#if GORO_BODIES
namespace goro {

GORO_DECL std::string clean_function_name(std::string_view raw) {
    std::string_view s = raw;
    if (auto w = s.find(" [with "); w != std::string_view::npos) s = s.substr(0, w);
    // The argument list is the last balanced (...) group.
    if (!s.empty() && s.back() == ')') {
        int depth = 0;
        std::size_t i = s.size();
        while (i > 0) {
            --i;
            if (s[i] == ')') ++depth;
            else if (s[i] == '(' && --depth == 0) break;
        }
        s = s.substr(0, i);
    }
    // Drop the return type: text up to the last space outside <...> and (...).
    int depth = 0;
    std::size_t cut = std::string_view::npos;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c == '<' || c == '(') ++depth;
        else if ((c == '>' || c == ')') && depth > 0) --depth;
        else if (c == ' ' && depth == 0) cut = i;
    }
    if (cut != std::string_view::npos) s = s.substr(cut + 1);
    std::string out(s);
    if (out == "operator" && raw == "operator()") return "{lambda}";  // clang's bare lambda name
    // g++: "f()::<lambda(int)>::operator()" -> "f()::{lambda}"
    for (std::size_t p; (p = out.find("<lambda(")) != std::string::npos;) {
        std::size_t q = p + 7;  // at '('
        int d = 0;
        std::size_t e = q;
        for (; e < out.size(); ++e) {
            if (out[e] == '(') ++d;
            else if (out[e] == ')' && --d == 0) break;
        }
        std::size_t end = out.find('>', e);
        if (end == std::string::npos) break;
        out.replace(p, end - p + 1, "{lambda}");
    }
    const std::string_view op = "::operator()";
    if (out.size() > op.size() && out.compare(out.size() - op.size(), op.size(), op) == 0 &&
        out.find("{lambda}") != std::string::npos)
        out.erase(out.size() - op.size());
    return out;
}

namespace detail {

GORO_DECL stack_frame to_frame(const site& s) {
    return stack_frame{clean_function_name(s.function_name()), s.file_name() ? s.file_name() : "",
                       static_cast<unsigned>(s.line())};
}

GORO_DECL std::vector<stack_frame> stack_of(const task_header& t) {
    std::vector<stack_frame> out;
    for (const promise_base* p = t.leaf; p; p = p->parent_) out.push_back(to_frame(p->site_));
    return out;
}

}  // namespace detail

GORO_DECL std::vector<stack_frame> current_stack() {
    task_header* t = detail::tls_current_task;
    if (!t) return {};
    auto frames = detail::stack_of(*t);
    // A running leaf that has not suspended yet shows its own function (ENTRY
    // SITE, goro/core/task.hpp); a frame without any site is left out.
    if (!frames.empty() && frames.front().line == 0) frames.erase(frames.begin());
    return frames;
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/core/stack.hpp ----

// ---- begin goro/inspect/pprof.hpp ----
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

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>


// ---- begin goro/inspect/snapshot.hpp ----
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

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>


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
// ---- end goro/inspect/snapshot.hpp ----

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
// ---- end goro/inspect/pprof.hpp ----

namespace goro {

namespace detail {

/// Asks for transparent huge pages for the not yet touched memory [p, p + n)
/// of a big string, as big_array_allocator does for its arrays: a debug=2
/// dump of a million tasks is over 100 MiB, and faulting that in 4 KiB at a
/// time cost more than formatting it. Only the whole 2 MiB pages inside the
/// range are advised; a hint, without effect where unsupported.
GORO_DECL void advise_huge_pages(char* p, std::size_t n) noexcept;

/// Where formatted text goes: a string (grows), or an ostream fed in chunks.
class text_sink {
public:
    explicit text_sink(std::string& s) noexcept : buf_(&s) {}
    explicit text_sink(std::ostream& os) : buf_(&own_), os_(&os) { own_.reserve(chunk + 4096); }
    text_sink(const text_sink&) = delete;
    text_sink& operator=(const text_sink&) = delete;
    ~text_sink() { flush(); }

    void append(std::string_view s) {
        buf_->append(s.data(), s.size());
        if (os_ && buf_->size() >= chunk) flush();
    }
    void put(char c) { buf_->push_back(c); }
    void number(std::uint64_t v);
    void signed_number(std::int64_t v);
    void flush();
    /// Room for `n` more bytes when writing to a string (a hint; no effect on a stream).
    void reserve_more(std::size_t n);
    /// Bytes written to a string so far (0 for a stream).
    std::size_t string_size() const noexcept { return os_ ? 0 : buf_->size(); }

private:
    static constexpr std::size_t chunk = 64 * 1024;
    std::string own_;
    std::string* buf_;
    std::ostream* os_ = nullptr;
};

/// Length of the valid UTF-8 sequence starting at s[i] (a lead byte >= 0x80), or 0.
GORO_DECL std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept;

/// How quote() escapes: the two spellings goro writes differ only here.
struct quote_rule {
    bool bell_and_vtab;          // \a and \v have short escapes
    bool del_is_control;         // 0x7f is escaped like a control byte
    const char* control_prefix;  // before a control byte's two hex digits
    const char* invalid_byte;    // for a byte that is not valid UTF-8; null: control_prefix and its hex
};

/// Go's strconv.Quote: the spelling of pprof labels in debug=1.
inline constexpr quote_rule go_quote_rule{true, true, "\\x", nullptr};
/// JSON: invalid UTF-8 bytes become U+FFFD so the output stays valid JSON.
inline constexpr quote_rule json_quote_rule{false, false, "\\u00", "\\ufffd"};

/// Appends `s` to `out` in double quotes, escaped by `rule`; valid UTF-8
/// sequences are copied as they are.
GORO_DECL void quote(std::string& out, std::string_view s, const quote_rule& rule);

inline void go_quote(std::string& out, std::string_view s) { quote(out, s, go_quote_rule); }
inline void json_quote(std::string& out, std::string_view s) { quote(out, s, json_quote_rule); }

/// One frame line of the debug=1 shape, whatever it comes from.
struct text_frame {
    std::string_view hex, function, file;
    std::uint32_t line = 0;
    std::uint32_t function_width = 0;
};

/// Go's text/tabwriter with minwidth 1, tabwidth 8, padding 1 and '\t' padding:
/// a column is as wide as its widest cell plus one, rounded up to a multiple
/// of 8, and each cell is followed by as many tabs as reach that width.
GORO_DECL void tab_pad(std::string& out, std::size_t text_width, std::size_t column_width);

GORO_DECL void write_frame_lines(std::string& out, std::span<const text_frame> frames);

/// The `# labels: {...}` line of debug=1 (nothing when there are no labels).
GORO_DECL void write_labels_line(std::string& out, const std::vector<std::pair<std::string, std::string>>& labels);

inline text_frame text_frame_of(const site_info& si) noexcept {
    return text_frame{std::string_view(si.hex, si.hex_len), si.function, si.file, si.line, si.function_width};
}

GORO_DECL void write_debug1(text_sink& out, const profile_view& v);

GORO_DECL const char* state_text(const task_record& r) noexcept;

/// Whole minutes parked, Go's rule: shown when at least one.
inline std::int64_t minutes_waiting(const task_record& r, std::int64_t now_ns) noexcept {
    if (r.state != task_state::waiting || r.since_ns == 0 || now_ns <= r.since_ns) return 0;
    return (now_ns - r.since_ns) / 60'000'000'000;
}

struct pick_all {
    bool operator()(const task_record&) const noexcept { return true; }
};

/// debug=2 blocks for the tasks `pick` accepts (all of them for a dump).
template <class Pick = pick_all>
void write_stacks(text_sink& out, profile_view& v, Pick&& pick = {}) {
    const auto& tasks = v.snap().tasks();
    site_table& table = v.table();
    // Per-site text, made on first use: "function(...)\n\tfile:line\n" for a
    // frame, and the two halves of a "created by" line.
    vec<std::string> frame_text, created_text, created_place;
    auto ensure = [](vec<std::string>& v, std::size_t n) {
        if (v.size() < n) v.resize(n);
    };
    // Room for the whole dump in a string, once the first blocks have told
    // how long a block is: growing it by doubling would copy what is written
    // and fault in its pages again (a million tasks write over 100 MiB).
    constexpr std::size_t sample = 256;
    const std::size_t start = out.string_size();
    const std::int64_t now = v.snap().taken_at_ns();
    bool first = true;
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (i == sample) {
            const std::size_t per_task = (out.string_size() - start) / sample + 1;
            out.reserve_more((tasks.size() - sample) * per_task / 8 * 9 + 4096);
        }
        const task_record& r = tasks[i];
        if (!pick(r)) continue;
        if (!first) out.put('\n');
        first = false;
        out.append("goroutine ");
        out.number(r.id);
        if (r.meta && !r.meta->name.empty()) {
            // The task's name, as Go's system tracebacks put `gp=… m=…`
            // between the id and the state: `goroutine 18 name="price" [chan receive]:`.
            std::string q = " name=";
            go_quote(q, r.meta->name);
            out.append(q);
        }
        out.append(" [");
        out.append(state_text(r));
        if (std::int64_t m = minutes_waiting(r, now); m >= 1) {
            out.append(", ");
            out.signed_number(m);
            out.append(" minutes");
        }
        out.append("]:\n");
        for (std::uint32_t f : v.frames(r)) {
            ensure(frame_text, table.size());
            std::string& t = frame_text[f];
            if (t.empty()) {
                const site_info& si = table[f];
                if (f < 2) {
                    t = "\t" + si.function + "\n";
                } else {
                    t = si.function + "(...)\n\t" + si.file + ":" + std::to_string(si.line) + "\n";
                }
            }
            out.append(t);
        }
        if (r.kind == task_kind::blocked) continue;  // like Go's main goroutine
        std::uint32_t c = table.intern(r.created_by);
        ensure(created_text, table.size());
        ensure(created_place, table.size());
        if (created_text[c].empty()) {
            const site_info& si = table[c];
            created_text[c] = "created by " + (c < 2 ? std::string("?") : si.function);
            created_place[c] = "\n\t" + si.file + ":" + std::to_string(si.line) + "\n";
        }
        out.append(created_text[c]);
        if (r.parent_id) {
            out.append(" in goroutine ");
            out.number(r.parent_id);
        }
        out.append(created_place[c]);
    }
}

GORO_DECL void write_json_frame(std::string& out, const site_info& si);

GORO_DECL void write_json_labels(std::string& out, const std::vector<std::pair<std::string, std::string>>& labels);

GORO_DECL void write_json(text_sink& out, profile_view& v);

GORO_DECL void check_debug(int debug, const char* op);

/// debug=2: every task's block.
GORO_DECL void write_debug2_all(text_sink& out, const snapshot& s);

/// debug=1, flushed to `out`.
GORO_DECL void write_debug1_to(std::ostream& out, const snapshot& s);

GORO_DECL void write_profile(text_sink& out, const snapshot& s, int debug);

}  // namespace detail

/// Writes `s` in the format `debug` selects (0 pprof, 1 grouped, 2 per task, 3 JSON).
GORO_DECL void write_goroutine_profile(std::ostream& out, const snapshot& s, int debug = 1);

/// `s` in the format `debug` selects, as a string (debug 0: the protobuf bytes).
GORO_DECL std::string goroutine_profile(const snapshot& s, int debug = 1);

namespace detail {
/// A snapshot for format `debug`: the grouped ones (0 and 1) need no order.
inline snapshot take_for(int debug) { return snapshot::take({.sorted = debug >= 2}); }
}  // namespace detail

/// Takes a snapshot now and returns it in the format `debug` selects.
inline std::string goroutine_profile(int debug = 1) {
    detail::check_debug(debug, "goro::goroutine_profile");
    return goroutine_profile(detail::take_for(debug), debug);
}

/// Prints every task's stack, like Go's pprof.Lookup("goroutine").WriteTo(out, debug).
GORO_DECL void dump_goroutines(std::ostream& out, int debug = 1);

/// Prints every task's stack to std::cerr, grouped by stack (debug=1). Its own
/// function, not a default argument, so that a program that only ever calls
/// this compiles none of the other formats into itself.
GORO_DECL void dump_goroutines();

/// Prints a snapshot already taken.
GORO_DECL void dump_goroutines(std::ostream& out, const snapshot& s, int debug = 1);

/// debug=2 blocks of the chosen tasks only (`pick(const task_record&) -> bool`),
/// for reports that show some tasks (a leak check, a crash report).
template <class Pick>
void write_goroutine_stacks(std::ostream& out, const snapshot& s, Pick&& pick) {
    detail::text_sink sink(out);
    detail::profile_view v(s, detail::grouping::none);
    detail::write_stacks(sink, v, pick);
}

/// The snapshot as JSON (schema at the top of this file).
inline std::string tasks_json(const snapshot& s) { return goroutine_profile(s, 3); }
inline std::string tasks_json() { return goroutine_profile(snapshot::take(), 3); }
inline void write_tasks_json(std::ostream& out, const snapshot& s) { write_goroutine_profile(out, s, 3); }

// --- diff ----------------------------------------------------------------------
//
// diff(), write_diff() and to_string(diff) are function templates with one
// defaulted parameter, called as plain functions: a template is compiled only
// in a program that calls it, while a plain inline function makes the
// compiler instantiate everything it calls (here hash maps of vectors and a
// sort) in every program that includes goro/core.hpp (issue 17: ~6 MB of
// compiler memory).

/// A stack whose task count grew between two snapshots.
struct group_change {
    std::int64_t delta = 0;  ///< after - before (> 0)
    std::size_t before = 0;  ///< count in the earlier snapshot (0: a new group)
    std::size_t after = 0;
    std::vector<std::uint64_t> site_ids;  ///< leaf first (0 for a pseudo-frame)
    std::vector<stack_frame> frames;      ///< leaf first
    std::vector<std::pair<std::string, std::string>> labels;
    std::vector<std::uint64_t> new_task_ids;  ///< tasks of this group that did not exist before
};

struct snapshot_diff {
    std::size_t total_before = 0;
    std::size_t total_after = 0;
    std::vector<group_change> grown;  ///< delta descending, then count descending
};

/// Groups whose count grew from `before` to `after`: "what leaks between these two moments".
template <int = 0>
snapshot_diff diff(const snapshot& before, const snapshot& after) {
    detail::profile_view vb(before), va(after);
    snapshot_diff d;
    d.total_before = before.total();
    d.total_after = after.total();
    auto signature = [](const detail::profile_view& v, const task_record& r) {
        std::vector<std::uint64_t> sig;
        for (std::uint32_t f : v.frames(r)) sig.push_back(f < 2 ? 0xfeed0000ull + f : v.site(f).id);
        return sig;
    };
    struct old_group {
        std::vector<std::uint64_t> sig;
        const std::vector<std::pair<std::string, std::string>>* labels;
        std::size_t count;
    };
    detail::hash_map<std::uint64_t, std::vector<old_group>> old;
    for (const task_group& g : vb.groups()) {
        const task_record& r = before.tasks()[g.tasks.front()];
        old[g.key].push_back(old_group{signature(vb, r), &detail::profile_view::labels(r), g.count});
    }
    std::vector<std::uint64_t> before_ids;
    before_ids.reserve(before.total());
    for (const task_record& r : before.tasks()) before_ids.push_back(r.id);  // ascending already
    for (const task_group& g : va.groups()) {
        const task_record& r = after.tasks()[g.tasks.front()];
        auto sig = signature(va, r);
        const auto& labels = detail::profile_view::labels(r);
        std::size_t was = 0;
        if (auto it = old.find(g.key); it != old.end())
            for (const old_group& o : it->second)
                if (o.sig == sig && *o.labels == labels) was = o.count;
        if (g.count <= was) continue;
        group_change c;
        c.delta = static_cast<std::int64_t>(g.count) - static_cast<std::int64_t>(was);
        c.before = was;
        c.after = g.count;
        for (std::uint32_t f : va.frames(r)) {
            const detail::site_info& si = va.site(f);
            c.site_ids.push_back(si.id);
            c.frames.push_back(stack_frame{si.function, si.file, si.line});
        }
        c.labels = labels;
        for (std::uint32_t ti : g.tasks) {
            std::uint64_t id = after.tasks()[ti].id;
            auto at = std::lower_bound(before_ids.begin(), before_ids.end(), id);
            if (at == before_ids.end() || *at != id) c.new_task_ids.push_back(id);
        }
        d.grown.push_back(std::move(c));
    }
    detail::stable_sort(d.grown.data(), d.grown.data() + d.grown.size(), [](const group_change& a, const group_change& b) {
        if (a.delta != b.delta) return a.delta > b.delta;
        return a.after > b.after;
    });
    return d;
}

namespace detail {

/// The text of write_diff(), into any sink: to_string(diff) writes it into a
/// string directly (no std::ostringstream, so no <sstream> to parse).
template <int = 0>
void write_diff_text(text_sink& out, const snapshot_diff& d) {
    std::string block = "goroutine profile diff: ";
    std::int64_t total = static_cast<std::int64_t>(d.total_after) - static_cast<std::int64_t>(d.total_before);
    if (total >= 0) block += '+';
    block += std::to_string(total);
    block += '\n';
    out.append(block);
    detail::vec<std::string> hex;
    detail::vec<detail::text_frame> frames;
    for (const group_change& c : d.grown) {
        block.clear();
        hex.clear();
        frames.clear();
        block += '+';
        block += std::to_string(c.delta);
        block += " @";
        for (std::size_t i = 0; i < c.frames.size(); ++i) {
            char b[20];
            hex.emplace_back(b, detail::format_hex(b, c.site_ids[i]));
            block += ' ';
            block += hex.back();
        }
        block += '\n';
        for (std::size_t i = 0; i < c.frames.size(); ++i) {
            const stack_frame& f = c.frames[i];
            frames.push_back(detail::text_frame{hex[i], f.function, f.file, f.line, detail::utf8_width(f.function)});
        }
        detail::write_labels_line(block, c.labels);
        detail::write_frame_lines(block, frames);
        block += '\n';
        out.append(block);
    }
}

}  // namespace detail

/// Prints a diff in the debug=1 shape (`goroutine profile diff: +N`, `+delta @ …`).
template <int = 0>
void write_diff(std::ostream& os, const snapshot_diff& d) {
    detail::text_sink out(os);
    detail::write_diff_text(out, d);
}

template <int = 0>
std::string to_string(const snapshot_diff& d) {
    std::string text;
    {
        detail::text_sink out(text);
        detail::write_diff_text(out, d);
    }
    return text;
}

}  // namespace goro

#if GORO_BODIES
#include <charconv>
#include <iostream>
#include <ostream>

namespace goro::detail {

GORO_DECL void advise_huge_pages(char* p, std::size_t n) noexcept {
#if GORO_BIG_ARRAY_MMAP && defined(MADV_HUGEPAGE)
    constexpr std::uintptr_t huge = std::uintptr_t(2) << 20;
    const std::uintptr_t from = (reinterpret_cast<std::uintptr_t>(p) + huge - 1) & ~(huge - 1);
    const std::uintptr_t to = (reinterpret_cast<std::uintptr_t>(p) + n) & ~(huge - 1);
    if (to > from) (void)::madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
#endif
}

GORO_DECL void text_sink::number(std::uint64_t v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    buf_->append(b, static_cast<std::size_t>(r.ptr - b));
}

GORO_DECL void text_sink::signed_number(std::int64_t v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    buf_->append(b, static_cast<std::size_t>(r.ptr - b));
}

GORO_DECL void text_sink::flush() {
    if (os_ && !own_.empty()) {
        os_->write(own_.data(), static_cast<std::streamsize>(own_.size()));
        own_.clear();
    }
}

GORO_DECL void text_sink::reserve_more(std::size_t n) {
    if (os_ || buf_->capacity() >= buf_->size() + n) return;
    buf_->reserve(buf_->size() + n);
    advise_huge_pages(buf_->data() + buf_->size(), buf_->capacity() - buf_->size());
}

GORO_DECL std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept {
    unsigned char c = static_cast<unsigned char>(s[i]);
    std::size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
    if (c >= 0xF5) n = 0;
    if (n == 0 || i + n > s.size()) return 0;
    for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
    unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
    if (c == 0xE0 && c1 < 0xA0) return 0;  // overlong
    if (c == 0xED && c1 > 0x9F) return 0;  // surrogate
    if (c == 0xF0 && c1 < 0x90) return 0;  // overlong
    if (c == 0xF4 && c1 > 0x8F) return 0;  // beyond U+10FFFF
    return n;
}

GORO_DECL void quote(std::string& out, std::string_view s, const quote_rule& rule) {
    static constexpr char hexd[] = "0123456789abcdef";
    const auto hex_escape = [&](unsigned char c) {
        out += rule.control_prefix;
        out.push_back(hexd[c >> 4]);
        out.push_back(hexd[c & 15]);
    };
    out.push_back('"');
    for (std::size_t i = 0; i < s.size();) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\a':
                if (rule.bell_and_vtab) out += "\\a";
                else hex_escape(c);
                break;
            case '\v':
                if (rule.bell_and_vtab) out += "\\v";
                else hex_escape(c);
                break;
            default:
                if (c < 0x20 || (c == 0x7f && rule.del_is_control)) hex_escape(c);
                else out.push_back(static_cast<char>(c));
            }
            ++i;
            continue;
        }
        std::size_t n = utf8_sequence_length(s, i);
        if (n == 0) {
            if (rule.invalid_byte) out += rule.invalid_byte;
            else hex_escape(c);
            ++i;
        } else {
            out.append(s.data() + i, n);
            i += n;
        }
    }
    out.push_back('"');
}

GORO_DECL void tab_pad(std::string& out, std::size_t text_width, std::size_t column_width) {
    std::size_t cell = (column_width + 7) / 8 * 8;
    std::size_t tabs = (cell - text_width + 7) / 8;
    out.append(tabs, '\t');
}

GORO_DECL void write_frame_lines(std::string& out, std::span<const text_frame> frames) {
    std::size_t hex_w = 1, fn_w = 1;
    for (const text_frame& f : frames) {
        hex_w = std::max(hex_w, f.hex.size() + 1);
        fn_w = std::max(fn_w, std::size_t(f.function_width) + 1);
    }
    char num[16];
    for (const text_frame& f : frames) {
        out += "#";
        tab_pad(out, 1, 2);
        out += f.hex;
        tab_pad(out, f.hex.size(), hex_w);
        out += f.function;
        if (f.file.empty() && f.line == 0) {  // a pseudo-frame has no place (and is alone)
            out += '\n';
            continue;
        }
        tab_pad(out, f.function_width, fn_w);
        out += f.file;
        out += ':';
        auto r = std::to_chars(num, num + sizeof num, f.line);
        out.append(num, static_cast<std::size_t>(r.ptr - num));
        out += '\n';
    }
}

GORO_DECL void write_labels_line(std::string& out, const std::vector<std::pair<std::string, std::string>>& labels) {
    if (labels.empty()) return;
    vec<std::string> kv;
    kv.reserve(labels.size());
    for (const auto& [k, v] : labels) {
        std::string s;
        go_quote(s, k);
        s += ':';
        go_quote(s, v);
        kv.push_back(std::move(s));
    }
    detail::stable_sort(kv.begin(), kv.end(), [](const std::string& a, const std::string& b) { return a < b; });
    out += "# labels: {";
    for (std::size_t i = 0; i < kv.size(); ++i) {
        if (i) out += ", ";
        out += kv[i];
    }
    out += "}\n";
}

GORO_DECL void write_debug1(text_sink& out, const profile_view& v) {
    const auto& tasks = v.snap().tasks();
    std::string head = "goroutine profile: total " + std::to_string(v.snap().total()) + "\n";
    out.append(head);
    std::string block;
    vec<text_frame> frames;
    for (const task_group& g : v.groups()) {
        const task_record& r = tasks[g.first];
        block.clear();
        frames.clear();
        block += std::to_string(g.count);
        block += " @";
        for (std::uint32_t f : v.frames(r)) {
            const site_info& si = v.site(f);
            block += ' ';
            block.append(si.hex, si.hex_len);
            frames.push_back(text_frame_of(si));
        }
        block += '\n';
        write_labels_line(block, profile_view::labels(r));
        write_frame_lines(block, frames);
        block += '\n';
        out.append(block);
    }
}

GORO_DECL const char* state_text(const task_record& r) noexcept {
    switch (r.state) {
    case task_state::waiting: return r.wait_reason ? r.wait_reason : "waiting";
    case task_state::running: return "running";
    case task_state::runnable: return "runnable";
    }
    return "unknown";
}

GORO_DECL void write_json_frame(std::string& out, const site_info& si) {
    out += "{\"function\":";
    json_quote(out, si.function);
    out += ",\"file\":";
    json_quote(out, si.file);
    out += ",\"line\":";
    out += std::to_string(si.line);
    out += ",\"site_id\":\"";
    out.append(si.hex, si.hex_len);
    out += "\"}";
}

GORO_DECL void write_json_labels(std::string& out, const std::vector<std::pair<std::string, std::string>>& labels) {
    out += '{';
    bool first = true;
    for (const auto& [k, val] : labels) {
        if (!first) out += ',';
        first = false;
        json_quote(out, k);
        out += ':';
        json_quote(out, val);
    }
    out += '}';
}

GORO_DECL void write_json(text_sink& out, profile_view& v) {
    const auto& tasks = v.snap().tasks();
    site_table& table = v.table();
    vec<std::string> frame_json;
    auto frame = [&](std::uint32_t f) -> const std::string& {
        if (frame_json.size() < table.size()) frame_json.resize(table.size());
        std::string& t = frame_json[f];
        if (t.empty()) write_json_frame(t, table[f]);
        return t;
    };
    const std::int64_t now = v.snap().taken_at_ns();
    out.reserve_more(tasks.size() * 260);
    out.append("{\"total\":");
    out.number(v.snap().total());
    out.append(",\"tasks\":[");
    std::string line;
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        const task_record& r = tasks[i];
        line.clear();
        line += i ? ",\n" : "\n";
        line += "{\"id\":";
        line += std::to_string(r.id);
        line += ",\"state\":\"";
        line += to_string(r.state);
        line += "\",\"wait_reason\":";
        if (r.state == task_state::waiting && r.wait_reason) json_quote(line, r.wait_reason);
        else line += "null";
        line += ",\"waiting_ns\":";
        line += std::to_string(r.state == task_state::waiting && r.since_ns && now > r.since_ns ? now - r.since_ns : 0);
        line += ",\"name\":";
        json_quote(line, r.meta ? std::string_view(r.meta->name) : std::string_view());
        line += ",\"labels\":";
        write_json_labels(line, profile_view::labels(r));
        line += r.kind == task_kind::blocked ? ",\"kind\":\"block_on\"" : ",\"kind\":\"task\"";
        line += ",\"parent_id\":";
        line += std::to_string(r.parent_id);
        line += ",\"created_by\":";
        line += frame(table.intern(r.created_by));
        line += r.frames_known ? ",\"frames_known\":true" : ",\"frames_known\":false";
        line += ",\"frames\":[";
        bool first = true;
        for (std::uint32_t f : v.frames(r)) {
            if (!first) line += ',';
            first = false;
            line += frame(f);
        }
        line += "]}";
        out.append(line);
    }
    out.append("\n],\"groups\":[");
    for (std::size_t gi = 0; gi < v.groups().size(); ++gi) {
        const task_group& g = v.groups()[gi];
        const task_record& r = tasks[g.tasks.front()];
        line.clear();
        line += gi ? ",\n" : "\n";
        line += "{\"count\":";
        line += std::to_string(g.count);
        line += ",\"task_ids\":[";
        for (std::size_t k = 0; k < g.tasks.size(); ++k) {
            if (k) line += ',';
            line += std::to_string(tasks[g.tasks[k]].id);
            if (line.size() > 60000) {
                out.append(line);
                line.clear();
            }
        }
        line += "],\"labels\":";
        write_json_labels(line, profile_view::labels(r));
        line += ",\"frames\":[";
        bool first = true;
        for (std::uint32_t f : v.frames(r)) {
            if (!first) line += ',';
            first = false;
            line += frame(f);
        }
        line += "]}";
        out.append(line);
    }
    out.append("\n]}\n");
}

GORO_DECL void check_debug(int debug, const char* op) {
    if (debug < 0 || debug > 3)
        throw usage_error(std::string(op) + ": debug must be 0 (pprof), 1 (grouped), 2 (per task) or 3 (JSON), not " +
                          std::to_string(debug));
}

GORO_DECL void write_debug2_all(text_sink& out, const snapshot& s) {
    profile_view v(s, grouping::none);
    write_stacks(out, v);
}

GORO_DECL void write_debug1_to(std::ostream& out, const snapshot& s) {
    {
        text_sink sink(out);
        profile_view v(s, grouping::counts);
        write_debug1(sink, v);
    }
    out.flush();
}

GORO_DECL void write_profile(text_sink& out, const snapshot& s, int debug) {
    switch (debug) {
    case 0: {
        profile_view v(s, grouping::counts);
        std::string pb;
        write_pprof(pb, v);
        out.append(pb);
        return;
    }
    case 1: {
        profile_view v(s, grouping::counts);
        write_debug1(out, v);
        return;
    }
    case 2:
        write_debug2_all(out, s);
        return;
    default: {
        profile_view v(s);
        write_json(out, v);
        return;
    }
    }
}

}  // namespace goro::detail

namespace goro {

GORO_DECL void write_goroutine_profile(std::ostream& out, const snapshot& s, int debug) {
    detail::check_debug(debug, "goro::write_goroutine_profile");
    detail::text_sink sink(out);
    detail::write_profile(sink, s, debug);
}

GORO_DECL std::string goroutine_profile(const snapshot& s, int debug) {
    detail::check_debug(debug, "goro::goroutine_profile");
    std::string out;
    {
        detail::text_sink sink(out);
        detail::write_profile(sink, s, debug);
    }
    return out;
}

GORO_DECL void dump_goroutines(std::ostream& out, int debug) {
    detail::check_debug(debug, "goro::dump_goroutines");
    write_goroutine_profile(out, detail::take_for(debug), debug);
    out.flush();
}

GORO_DECL void dump_goroutines() { detail::write_debug1_to(std::cerr, detail::take_for(1)); }

GORO_DECL void dump_goroutines(std::ostream& out, const snapshot& s, int debug) {
    detail::check_debug(debug, "goro::dump_goroutines");
    write_goroutine_profile(out, s, debug);
    out.flush();
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/inspect/dump.hpp ----

// ---- begin goro/inspect/panic.hpp ----
// goro/inspect/panic.hpp — the crash report: an exception escaping a detached task.
//
//   goro::go(worker());        // worker() throws std::runtime_error("boom")
//
// prints to stderr, like Go's runtime:
//
//   panic: boom [std::runtime_error]
//
//   goroutine 7 [running]:
//   worker(...)
//           src/worker.cpp:31
//   created by main in goroutine 1
//           src/main.cpp:12
//
//   goroutine 1 [chan receive]:
//   ...
//
// and terminates with std::abort() (SIGABRT). The first block is the task that
// panicked, at the last `co_await` its root frame reached (the frames between
// that point and the `throw` are already unwound: exceptions travel through
// co_await); then every other task, in Go's debug=2 form.
//
// A program can replace the default with `goro::set_panic_handler(fn)`; `fn`
// receives a `goro::panic_info` (the task's record, the exception, its message
// and type, and the whole report above as text). When `fn` returns, the task's
// frames are destroyed and it leaves the registry as if it had finished: the
// process goes on. `fn` runs on the worker that ran the task, must not throw
// (it is called from a noexcept context: a throw terminates), and must not
// block waiting for other tasks (it occupies a worker).
//
// Every program gets this report: goro/core/go.hpp includes this header and
// installs the report as goro's panic handler (`detail::panic_handler()`,
// registry.hpp) before the first task starts.
//
// THREAD SAFETY: panics on several workers at once are reported one at a time
// (a process-wide mutex); the first default report aborts the process. The
// report takes a snapshot, which stops the world from the panicking worker
// (allowed: the caller's own worker counts as stopped).

#include <atomic>
#include <exception>
// std::function only: libstdc++'s <functional> also brings the C++17
// searchers (hash tables, all of <algorithm>), ~13 MB of compiler memory in
// every program that includes goro/core.hpp.
#if __has_include(<bits/std_function.h>)
#include <bits/std_function.h>
#else
#include <functional>
#endif
#include <ostream>
#include <string>
#include <utility>


namespace goro {

namespace detail {

// --- Go's debug=2 text, one block per task ---------------------------------
// Shared by the crash and leak reports. goro/inspect/dump.hpp owns the public
// formats and writes whole snapshots; these reports need blocks for chosen
// tasks (the panicking one first, or only the leaked ones), so they write
// them here, in the same shape as dump.hpp's debug=2:
//
//   goroutine 18 [chan receive, 5 minutes]:
//   worker(...)
//           file.cpp:16
//   created by start_workers in goroutine 1
//           file.cpp:23

/// One task's block, without the blank line that separates blocks.
GORO_DECL void write_debug2_task(std::ostream& out, const snapshot& snap, const task_record& r);

/// Blocks for the tasks for which `pick(record)` holds, in id order, each
/// followed by a blank line (as Go separates them).
template <class Pick>
void write_debug2(std::ostream& out, const snapshot& snap, Pick&& pick) {
    for (const task_record& r : snap.tasks())
        if (pick(r)) {
            write_debug2_task(out, snap, r);
            out << '\n';
        }
}

}  // namespace detail

/// What a panic handler is told.
struct panic_info {
    task_record task;              ///< the task the exception escaped (state running)
    std::exception_ptr error;      ///< the exception itself
    std::string message;           ///< what() for a std::exception, else a description
    std::string type;              ///< demangled type of the exception, or empty
    std::string report;            ///< the whole crash report (see the top of this header)
};

/// A replacement for the crash report (see the top of this header).
using panic_hook = std::function<void(const panic_info&)>;

namespace detail {

/// goro's panic handler (registry.hpp), installed by go.hpp before the first task starts.
GORO_DECL void report_panic(task_header& task, std::exception_ptr error) noexcept;

}  // namespace detail

/// Replaces what happens when an exception escapes a detached task; an empty
/// `fn` restores the default (print the report and abort). Returns the
/// previous hook (empty when it was the default).
GORO_DECL panic_hook set_panic_handler(panic_hook fn);

}  // namespace goro

#if GORO_BODIES
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <typeinfo>

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#define GORO_HAS_CXXABI 1
#else
#define GORO_HAS_CXXABI 0
#endif

namespace goro {

namespace detail {

inline void write_debug2_header(std::ostream& out, const snapshot& snap, const task_record& r) {
    out << "goroutine " << r.id;
    if (r.meta && !r.meta->name.empty()) {
        // As dump.hpp writes it: name="…", escaped like Go's %q for ASCII.
        static constexpr char hexd[] = "0123456789abcdef";
        out << " name=\"";
        for (unsigned char c : r.meta->name) {
            if (c == '"' || c == '\\') out << '\\' << char(c);
            else if (c == '\n') out << "\\n";
            else if (c == '\t') out << "\\t";
            else if (c < 0x20 || c == 0x7f) out << "\\x" << hexd[c >> 4] << hexd[c & 15];
            else out << char(c);
        }
        out << '"';
    }
    out << " [";
    switch (r.state) {
    case task_state::running: out << "running"; break;
    case task_state::runnable: out << "runnable"; break;
    case task_state::waiting: out << (r.wait_reason ? r.wait_reason : "waiting"); break;
    }
    if (r.state == task_state::waiting && r.since_ns > 0) {
        std::int64_t minutes = (snap.taken_at_ns() - r.since_ns) / 60'000'000'000;
        if (minutes >= 1) out << ", " << minutes << " minutes";  // Go's spelling, "1 minutes" included
    }
    out << "]:\n";
}

GORO_DECL void write_debug2_task(std::ostream& out, const snapshot& snap, const task_record& r) {
    write_debug2_header(out, snap, r);
    bool any = false;
    for (const site& s : snap.stack(r)) {
        // A frame that never suspended has no site yet (its root ran straight to a throw).
        if (s.line() == 0 && (!s.function_name() || !*s.function_name())) continue;
        any = true;
        out << clean_function_name(s.function_name() ? s.function_name() : "") << "(...)\n\t"
            << (s.file_name() ? s.file_name() : "") << ':' << s.line() << '\n';
    }
    // Pseudo-frames, spelled as goro/inspect/dump.hpp spells them.
    if (!r.frames_known) out << "\t(stack unavailable: running)\n";
    else if (!any) out << (r.state == task_state::runnable ? "\t(not started)\n" : "\t(no co_await reached yet)\n");
    // A thread in block_on is the bottom of its own stack, like Go's main: no creator.
    if (r.kind == task_kind::task) {
        const site& c = r.created_by;
        std::string creator = clean_function_name(c.function_name() ? c.function_name() : "");
        out << "created by " << (creator.empty() ? "?" : creator);
        if (r.parent_id) out << " in goroutine " << r.parent_id;
        out << "\n\t" << (c.file_name() ? c.file_name() : "") << ':' << c.line() << '\n';
    }
}

/// The name of an exception's dynamic type, demangled where the ABI allows;
/// call inside a catch block. Empty when unknown.
inline std::string current_exception_type_name() {
#if GORO_HAS_CXXABI
    const std::type_info* t = abi::__cxa_current_exception_type();
    if (!t) return {};
    int status = 0;
    char* d = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
    std::string out = (status == 0 && d) ? std::string(d) : std::string(t->name());
    std::free(d);
    return out;
#else
    return {};
#endif
}

struct panic_state {
    ranked_lock<std::mutex, lock_rank::panic_report> report_mu;  // one report at a time
    ranked_lock<std::mutex, lock_rank::panic_hook> hook_mu;      // guards hook
    std::shared_ptr<const goro::panic_hook> hook;
};

inline panic_state& the_panic_state() {
    static panic_state* s = new panic_state();  // never destroyed: panics may come during exit
    return *s;
}

/// Builds the report for `task`, which is running on this worker and whose
/// frames are those of its last suspension.
inline panic_info make_panic_info(task_header& task, std::exception_ptr error) {
    panic_info info;
    info.error = error;
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        info.message = e.what();
        info.type = current_exception_type_name();
    } catch (...) {
        info.type = current_exception_type_name();
        info.message = info.type.empty() ? "unknown exception" : "exception of type " + info.type;
    }
    snapshot snap = snapshot::take();
    const task_record* self = nullptr;
    for (const task_record& r : snap.tasks())
        if (r.id == task.id) self = &r;

    std::ostringstream out;
    out << "panic: " << info.message;
    if (!info.type.empty() && info.message.rfind("exception of type ", 0) != 0) out << " [" << info.type << ']';
    out << "\n\n";
    if (self) {
        info.task = *self;
        write_debug2_task(out, snap, *self);
        out << '\n';
    } else {
        // Cannot happen (the task is listed until it finishes); say so rather than lie.
        out << "goroutine " << task.id << " [running]:\n\t(not found in the snapshot)\n\n";
        info.task.id = task.id;
        info.task.state = task_state::running;
    }
    write_debug2(out, snap, [&](const task_record& r) { return r.id != task.id; });
    info.report = out.str();
    return info;
}

GORO_DECL void report_panic(task_header& task, std::exception_ptr error) noexcept {
    panic_state& ps = the_panic_state();
    std::shared_ptr<const goro::panic_hook> hook;
    {
        std::lock_guard g(ps.hook_mu);
        hook = ps.hook;
    }
    std::unique_lock g(ps.report_mu, std::defer_lock);
    if (!hook) g.lock();  // the default report ends the process: let one finish printing
    panic_info info;
    try {
        info = make_panic_info(task, error);
    } catch (...) {
        // Out of memory while formatting: fall back to the minimal report.
        default_panic(task, std::move(error));
    }
    if (hook) {
        (*hook)(info);
        return;
    }
    std::fwrite(info.report.data(), 1, info.report.size(), stderr);
    std::fflush(stderr);
    std::abort();
}

}  // namespace detail

GORO_DECL panic_hook set_panic_handler(panic_hook fn) {
    detail::panic_state& ps = detail::the_panic_state();
    std::shared_ptr<const goro::panic_hook> next;
    if (fn) next = std::make_shared<const panic_hook>(std::move(fn));
    std::lock_guard g(ps.hook_mu);
    std::shared_ptr<const goro::panic_hook> prev = std::exchange(ps.hook, std::move(next));
    // Reassert ours, in case something replaced the raw pointer meanwhile.
    detail::panic_handler().store(&detail::report_panic, std::memory_order_release);
    return prev ? *prev : panic_hook{};
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/inspect/panic.hpp ----

namespace goro::detail {

inline deadlock_policy policy_from_env() {
    const char* e = std::getenv("GORO_DEADLOCK");
    if (!e || !*e || std::strcmp(e, "throw") == 0) return deadlock_policy::throw_error;
    if (std::strcmp(e, "abort") == 0) return deadlock_policy::abort;
    if (std::strcmp(e, "off") == 0) return deadlock_policy::off;
    std::fprintf(stderr, "goro: ignoring GORO_DEADLOCK=\"%s\": want throw, abort or off\n", e);
    return deadlock_policy::throw_error;
}

GORO_DECL deadlock_policy current_deadlock_policy() {
    deadlock_watch& w = the_deadlock_watch();
    int p = w.policy.load(std::memory_order_acquire);
    if (p < 0) {
        int fresh = static_cast<int>(policy_from_env());
        if (w.policy.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) p = fresh;
    }
    return static_cast<deadlock_policy>(p);
}

/// What the watchdog compares across the grace period.
struct quiet_state {
    bool quiet = false;          // idle workers, empty queue, no timer, no guard
    std::uint64_t resumes = 0;   // sum of the workers' resume counters
    std::int64_t tasks = 0;      // registry count
};

inline quiet_state observe_quiet() {
    quiet_state q;
    if (!pool_started()) return q;
    scheduler& s = the_scheduler();
    if (s.stopping()) return q;
    if (the_deadlock_watch().external_guards.load(std::memory_order_acquire) != 0) return q;
    if (external_waits().load(std::memory_order_acquire) != 0) return q;  // a foreign awaitable will answer
    if (s.idle_workers() != s.active_workers()) return q;
    if (s.global_queue_size() != 0) return q;
    if (!s.timers().quiet()) return q;
    for (auto& w : s.workers()) q.resumes += w->resumes.load(std::memory_order_relaxed);
    q.tasks = the_registry().count();
    q.quiet = true;
    return q;
}

inline bool same_quiet(const quiet_state& a, const quiet_state& b) {
    return a.quiet && b.quiet && a.resumes == b.resumes && a.tasks == b.tasks;
}

/// Resumed, if ever, instead of an abandoned block_on body (see AFTER
/// deadlock_error above): unlists the task without touching its awaitable.
struct abandoned_task {
    struct promise_type {
        abandoned_task get_return_object() noexcept {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        std::suspend_never final_suspend() const noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> handle;
};

// A template only so that g++ compiles this coroutine where it is used: g++ 12
// emits the body of every inline coroutine that is not a template in every
// translation unit that sees it.
template <int = 0>
abandoned_task reap_abandoned(task_header* h) {
    // Only the body's own frame is left to free: the frames it awaited were the caller's.
    h->leaf = nullptr;
    std::coroutine_handle<>::from_address(h->root_frame_).destroy();
    the_registry().retire(h);
    co_return;
}

/// World stopped, registry locked, `h` listed and parked: cut the frames the
/// caller owns off its chain and make a wake-up harmless.
inline void abandon_block_on_body(task_header* h) {
    using body_promise = task_promise<void>;  // block_on_body returns task<>
    auto root = std::coroutine_handle<body_promise>::from_address(h->root_frame_);
    h->leaf = &root.promise();
    h->set_resume_point(reap_abandoned(h).handle);
}

/// Confirms the deadlock with the world stopped and, per policy, reports it.
inline void fire_if_deadlocked(deadlock_watch& w, const quiet_state& base) {
    snapshot snap = snapshot::take();
    for (const task_record& r : snap.tasks())
        if (r.state != task_state::waiting) return;
    if (!same_quiet(observe_quiet(), base)) return;
    deadlock_policy p = current_deadlock_policy();
    if (p == deadlock_policy::off) return;

    std::string text = "fatal error: all goroutines are asleep - deadlock!\n\n";
    {
        text_sink sink(text);
        write_debug2_all(sink, snap);  // debug=2
    }
    auto report = std::make_shared<const std::string>(std::move(text));
    if (p == deadlock_policy::abort) {
        std::fwrite(report->data(), 1, report->size(), stderr);
        std::fflush(stderr);
        std::abort();
    }

    scheduler& s = the_scheduler();
    registry& reg = the_registry();
    vec<deadlock_waiter*> fired;
    if (!s.stop_the_world(std::chrono::seconds(1)).all_stopped) {
        // A worker that did not stop may be running a task: nothing is
        // confirmed or cut with the world moving; the watchdog looks again.
        s.start_the_world();
        return;
    }
    reg.lock_all();
    std::unique_lock lk(w.mu);
    bool still = same_quiet(observe_quiet(), base);
    vec<task_header*> listed;
    reg.for_each_unlocked([&](task_header& h) {
        if (h.state.load(std::memory_order_relaxed) != task_state::waiting) still = false;
        listed.push_back(&h);
    });
    if (still) {
        for (deadlock_waiter* dw : w.waiters) {
            bool is_listed = goro::detail::find(listed.begin(), listed.end(), dw->body) != listed.end();
            std::uint32_t zero = 0;
            // `done` still 0 means the body has not finished, so the header is alive and listed.
            if (is_listed && dw->done->compare_exchange_strong(zero, 2, std::memory_order_acq_rel)) {
                abandon_block_on_body(dw->body);
                dw->report = report;
                fired.push_back(dw);
            }
        }
    }
    reg.unlock_all();
    s.start_the_world();
    if (fired.empty()) return;
    std::fwrite(report->data(), 1, report->size(), stderr);
    std::fflush(stderr);
    // Still under mu: a woken waiter unlists itself (and frees `done`) only after this.
    for (deadlock_waiter* dw : fired) dw->done->notify_all();
}

inline void watchdog_main() {
    deadlock_watch& w = the_deadlock_watch();
    quiet_state base;
    std::int64_t quiet_since = 0;
    std::unique_lock<std::mutex> lk(w.mu.unranked());  // for cv; released before anything else is taken
    for (;;) {
        if (w.waiters.empty()) {
            base = {};
            w.cv.wait(lk);
            continue;
        }
        std::int64_t grace = w.grace_ns.load(std::memory_order_relaxed);
        std::int64_t period = std::min<std::int64_t>(std::max<std::int64_t>(grace / 4, 1'000'000), 100'000'000);
        w.cv.wait_for(lk, std::chrono::nanoseconds(period));
        if (w.waiters.empty()) continue;
        lk.unlock();
        quiet_state now = current_deadlock_policy() == deadlock_policy::off ? quiet_state{} : observe_quiet();
        std::int64_t t = now_ns();
        if (!same_quiet(now, base)) {
            base = now;
            quiet_since = t;
        } else if (t - quiet_since >= w.grace_ns.load(std::memory_order_relaxed)) {
            fire_if_deadlocked(w, base);
            base = {};
        }
        lk.lock();
    }
}

GORO_DECL void deadlock_aware_wait(std::atomic<std::uint32_t>& done, task_header* body) {
    deadlock_watch& w = the_deadlock_watch();
    deadlock_waiter me{&done, body};
    {
        std::lock_guard g(w.mu);
        w.waiters.push_back(&me);
        if (!w.thread_started) {
            w.thread_started = true;
            std::thread(watchdog_main).detach();
        }
        if (w.waiters.size() == 1) w.cv.notify_one();
    }
    while (done.load(std::memory_order_acquire) == 0) done.wait(0, std::memory_order_acquire);
    std::shared_ptr<const std::string> report;
    {
        std::lock_guard g(w.mu);
        w.waiters.erase(goro::detail::find(w.waiters.begin(), w.waiters.end(), &me));
        report = std::move(me.report);
    }
    if (report) throw deadlock_error(std::move(report));
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/inspect/deadlock.hpp ----

namespace goro {

namespace detail {

template <class A>
using await_result_t = decltype(std::declval<decltype(get_awaiter(std::declval<A>()))&>().await_resume());

/// Once per process, before the first task starts: what the runtime needs
/// from the layers above core/ and from the CPU. Here rather than in static
/// initialisers, so that a program that includes goro and never starts a task
/// runs none of it and links none of it.
GORO_DECL void start_runtime_once();

GORO_DECL task_header* new_header(task_kind kind, const site& where);

/// After add(): when this thread's count of live tasks reaches a power of
/// two (>= 1024), the global queue gets room for twice the total, so that a
/// close or a cancel that wakes them all at once finds room there (see
/// scheduler::reserve_global). The total, not this thread's count: a thread
/// that only spawns, whose tasks end on other threads, counts up forever.
GORO_DECL void make_room(std::int64_t live) noexcept;

GORO_DECL void start_root(task_header* h, std::coroutine_handle<> frame, promise_base& p);

/// The bottom frame goro adds below a user's task when it must own
/// something for the task's whole life: the callable of go(callable), the
/// result slot of spawn(), the foreign coroutine awaiting a goro::task. It
/// runs the user's task as a child with no parent frame (root_child), so the
/// stack a dump shows is the user's task alone. At its end it leaves the
/// registry (an exception that escaped goes to the panic handler first),
/// then continues `then_` if one was set (set_then): a coroutine that is not
/// goro's, which runs on this worker outside any task.
struct runner {
    struct promise_type : promise_base {
        std::coroutine_handle<> then_{};
        std::exception_ptr error_{};

        struct final_awaiter {
            using is_goro_awaiter = void;
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<promise_type> h) const noexcept;
            void await_resume() const noexcept {}
        };

        runner get_return_object() noexcept { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { error_ = std::current_exception(); }
    };
    std::coroutine_handle<promise_type> handle;
};

/// RUNNING SITE. A dump shows a task that runs on a worker that did not stop
/// at the site the worker resumed it at (scheduler::running_site). A task
/// started by go(callable) or spawn() is resumed first in the runner's frame,
/// which has no site of its own, so until its first suspension it would show
/// as `stack unavailable`. The runner therefore notes the site itself: while
/// the callable runs (it may block before it returns its task), the go() or
/// spawn() call; once the user's task starts, that task's entry site (ENTRY
/// SITE in goro/core/task.hpp). Only this worker writes its `resumed_at`.
inline void note_running_site(const site& s) noexcept {
    if (worker* w = tls_worker) w->resumed_at.store(s);
}

/// The callable of go(callable) or spawn() returned `t`: a lambda with
/// captures, called by the runner, left the lambda-call mark as its frame's
/// site (LAMBDA CALLS in goro/core/task.hpp; harmless here, the lambda lives
/// in the runner's frame), which names nothing: the task shows the go() or
/// spawn() call instead until its first suspension.
template <class Promise>
void note_entry_site(Promise& p, const site& call) noexcept {
    if (p.site_.line() == 0 || is_lambda_call_site(p.site_)) p.site_ = call;
}

/// Runs a task as the runner's child, with no parent frame (see runner).
template <class Promise, bool TakeResult = true>
struct root_child {
    using is_goro_awaiter = void;
    std::coroutine_handle<Promise> child;

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<runner::promise_type> r) noexcept {
        Promise& cp = child.promise();
        cp.continuation_ = r;
        cp.parent_ = nullptr;
        cp.header_ = r.promise().header_;
        cp.header_->leaf = &cp;
        note_running_site(cp.site_);  // the user's task starts here (RUNNING SITE)
        continue_with(child);
    }
    decltype(auto) await_resume() {
        if constexpr (TakeResult) return child.promise().take_result();
    }
};

/// Sets the coroutine the runner continues once it has left the registry.
struct set_then {
    using is_goro_awaiter = void;
    std::coroutine_handle<> h;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<runner::promise_type> me) const noexcept {
        me.promise().then_ = h;
        return false;
    }
    void await_resume() const noexcept {}
};

/// The site of the call (site::current() where there is std::source_location).
inline site site_here(GORO_SITE_PARAM) noexcept { return GORO_SITE_ARG; }

GORO_DECL void check_pool_open(const char* op);

/// Lists a runner as a new root task and queues it; returns the task's id.
GORO_DECL std::uint64_t start_runner(runner r, task_options&& options, const site& where);

template <class F>
runner run_callable(F f, site call) {
    note_running_site(call);  // while the callable runs (RUNNING SITE)
    auto t = f();             // `f` lives in this frame as long as the task runs
    if (!t) throw usage_error("goro::go: the callable returned an empty task");
    note_entry_site(t.handle().promise(), call);
    co_await root_child<typename decltype(t)::promise_type>{t.handle()};
}

template <class Promise>
runner foreign_awaited_body(std::coroutine_handle<Promise> child, std::coroutine_handle<> awaiting) {
    co_await root_child<Promise, false>{child};  // the awaiter takes the result
    co_await set_then{awaiting};
}

template <class Promise>
void start_for_foreign(std::coroutine_handle<Promise> child, std::coroutine_handle<> awaiting) {
    start_runner(foreign_awaited_body(child, awaiting), {}, site_here());
}

template <class R>
struct block_on_state {
    std::conditional_t<std::is_void_v<R>, bool, std::optional<std::conditional_t<std::is_void_v<R>, int, R>>> value{};
    std::exception_ptr error;
    std::atomic<std::uint32_t> done{0};
};

// `A` is `T&` for an lvalue argument (the caller keeps it) and `T` for an
// rvalue, which the body's frame then owns: its frames live as long as the
// body, whatever happens to the caller (see the deadlock report).
template <class R, class A>
task<> block_on_body(A a, std::shared_ptr<block_on_state<R>> st) {
    try {
        if constexpr (std::is_void_v<R>) {
            co_await keep_site<A>{static_cast<A&&>(a)};
        } else {
            st->value.emplace(co_await keep_site<A>{static_cast<A&&>(a)});
        }
    } catch (...) {
        st->error = std::current_exception();
    }
    st->done.store(1, std::memory_order_release);
    st->done.notify_all();
}

struct [[nodiscard("goro::sleep_for: co_await it")]] sleep_awaiter {
    using is_goro_awaiter = void;
    struct wake_node : timer_node {
        task_header* task = nullptr;
    };
    std::int64_t deadline_ns;
    wake_node node{};

    bool await_ready() const noexcept { return deadline_ns <= now_ns(); }
    void await_suspend(std::coroutine_handle<> h);
    void await_resume() const noexcept {}
};

struct [[nodiscard("goro::yield: co_await it")]] yield_awaiter {
    using is_goro_awaiter = void;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h);
    void await_resume() const noexcept {}
};

inline std::int64_t to_monotonic_ns(std::chrono::steady_clock::time_point t) noexcept {
    // steady_clock is CLOCK_MONOTONIC on the platforms goro supports.
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace detail

/// Starts `t` as a detached root task on the pool, like Go's `go` statement.
///
/// LIFETIME: the task must not refer to anything that may die before it
/// ends. A lambda's captures live in the lambda object, not in the coroutine
/// frame, so `goro::go([=]() -> goro::task<> {...}())` — a lambda called in
/// place — leaves the task reading a dead object. Pass the lambda itself:
/// `goro::go([=]() -> goro::task<> {...})` copies it into the task, which
/// keeps it alive to its end. Parameters of a coroutine function, taken by
/// value, live in its frame and are safe. go() throws goro::usage_error when
/// it sees the wrong form (see detail::note_self in goro/core/task.hpp).
GORO_DECL void go(task<> t, task_options options = {}, GORO_SITE_PARAM);

/// Starts `f()` as a detached root task, keeping the callable `f` (moved or
/// copied in) alive until the task ends: `goro::go([=]() -> goro::task<> { ... })`.
template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, task<>> && std::is_invocable_v<std::decay_t<F>&> &&
             std::is_same_v<std::invoke_result_t<std::decay_t<F>&>, task<>>)
void go(F&& f, task_options options = {}, GORO_SITE_PARAM) {
    detail::check_pool_open("goro::go");
    const detail::site call = GORO_SITE_ARG;
    detail::start_runner(detail::run_callable<std::decay_t<F>>(std::decay_t<F>(static_cast<F&&>(f)), call),
                         std::move(options), call);
}

/// Runs the awaitable `a` on the pool and waits for it on this plain thread;
/// returns its result or rethrows its exception.
template <class A>
auto block_on(A&& a, GORO_SITE_PARAM) -> detail::await_result_t<A&&> {
    using R = detail::await_result_t<A&&>;
    if (detail::tls_worker)
        throw usage_error("goro::block_on: called on a pool worker; co_await the operation instead "
                          "(blocking a worker can deadlock the pool)");
    auto st = std::make_shared<detail::block_on_state<R>>();
    task<> body = detail::block_on_body<R, A>(static_cast<A&&>(a), st);
    auto frame = body.release();
    auto site = GORO_SITE_ARG;
    frame.promise().site_ = site;  // the bottom frame shows the block_on call
    task_header* h = detail::new_header(task_kind::blocked, site);
    detail::start_root(h, frame, frame.promise());
    // The wait, which the deadlock watchdog (goro/inspect/deadlock.hpp) can
    // end: then `done` reads 2 and it throws goro::deadlock_error. `h` is only
    // a key for the watchdog: the body may already have finished and freed it.
    detail::deadlock_aware_wait(st->done, h);
    // Move the error out: the worker may drop the state's last reference at
    // any moment, and the exception's own count is invisible to TSan.
    if (std::exception_ptr e = std::move(st->error)) std::rethrow_exception(std::move(e));
    if constexpr (!std::is_void_v<R>) return std::move(*st->value);
}

/// Parks the current task for at least `d` (wait reason "sleep").
template <class Rep, class Period>
[[nodiscard("goro::sleep_for: co_await it")]] detail::sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> d) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    return detail::sleep_awaiter{detail::now_ns() + (ns > 0 ? ns : 0)};
}

/// Parks the current task until `t` (any clock; converted to the monotonic clock).
template <class Clock, class Duration>
[[nodiscard("goro::sleep_until: co_await it")]] detail::sleep_awaiter sleep_until(std::chrono::time_point<Clock, Duration> t) {
    if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
        return detail::sleep_awaiter{detail::to_monotonic_ns(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(t))};
    } else {
        auto d = t - Clock::now();
        return sleep_for(d);
    }
}

/// Lets other runnable tasks run, then continues (Go's runtime.Gosched).
[[nodiscard("goro::yield: co_await it")]] inline detail::yield_awaiter yield() noexcept { return {}; }

/// The id of the task running on this thread (0 off the pool).
inline std::uint64_t this_task_id() noexcept {
    task_header* t = detail::tls_current_task;
    return t ? t->id : 0;
}

}  // namespace goro

#if GORO_BODIES
namespace goro {

namespace detail {

GORO_DECL void start_runtime_once() {
    static const bool started = [] {
        detect_cpu_features();
        panic_handler().store(&report_panic, std::memory_order_release);
        return true;
    }();
    (void)started;
}

GORO_DECL task_header* new_header(task_kind kind, const site& where) {
    start_runtime_once();
    task_header* h = the_registry().make_header();
    h->kind = kind;
    task_header_cold& c = h->cold();
    c.spawn_site = where;
    if (task_header* cur = tls_current_task) c.parent_id = cur->id;
    return h;
}

GORO_DECL void make_room(std::int64_t live) noexcept {
    if (live >= 1024 && (live & (live - 1)) == 0) [[unlikely]] {
        const std::int64_t total = the_registry().count();
        if (total > 0) the_scheduler().reserve_global(2 * static_cast<std::size_t>(total));
    }
}

GORO_DECL void start_root(task_header* h, std::coroutine_handle<> frame, promise_base& p) {
    h->root_frame_ = frame.address();
    h->set_resume_point(frame);
    h->leaf = &p;
    p.header_ = h;
    const std::int64_t live = the_registry().add(h);
    make_room(live);
    the_scheduler().spawn(h);
}

GORO_DECL void runner::promise_type::final_awaiter::await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
    promise_type& p = h.promise();
    task_header* hdr = p.header_;
    std::coroutine_handle<> then = p.then_;
    if (std::exception_ptr e = std::move(p.error_)) panic_handler().load(std::memory_order_acquire)(*hdr, std::move(e));
    finish_root(hdr, h);
    if (then) {
        tls_current_task = nullptr;  // `then` belongs to no task
        continue_with(then);
    }
}

GORO_DECL void check_pool_open(const char* op) {
    pool_holder& ph = the_pool_holder();
    if (scheduler* p = ph.pool.load(std::memory_order_acquire); p && p->stopping())
        throw usage_error(std::string(op) + ": the pool has shut down (process exit)");
}

GORO_DECL std::uint64_t start_runner(runner r, task_options&& options, const site& where) {
    task_header* h;
    try {
        h = new_header(task_kind::task, where);
        if (!options.name.empty() || !options.labels.empty()) h->cold().meta = task_meta(std::move(options));
    } catch (...) {
        r.handle.destroy();
        throw;
    }
    // start_root, reading the id before the task may run (and end, and its header be reused).
    h->root_frame_ = r.handle.address();
    h->set_resume_point(r.handle);
    h->leaf = &r.handle.promise();
    r.handle.promise().header_ = h;
    const std::int64_t live = the_registry().add(h);
    const std::uint64_t id = h->id;
    make_room(live);
    the_scheduler().spawn(h);
    return id;
}

GORO_DECL void sleep_awaiter::await_suspend(std::coroutine_handle<> h) {
    node.task = current_task_or_throw("goro::sleep");
    park(node.task, h, wait_reason::sleep);
    node.when_ns = deadline_ns;
    node.fire = [](timer_node* n) noexcept {
        ready(static_cast<wake_node*>(n)->task);  // last access: the task may run (and free us) from here on
    };
    the_scheduler().timers().add(&node);
}

GORO_DECL void yield_awaiter::await_suspend(std::coroutine_handle<> h) {
    task_header* t = current_task_or_throw("goro::yield");
    t->set_resume_point(h);
    the_scheduler().gosched(t);
}

}  // namespace detail

GORO_DECL void go(task<> t, task_options options, GORO_SITE_PARAM_DEF) {
    if (!t) throw usage_error("goro::go: the task is empty (moved-from or default-constructed)");
    if (t.handle().done()) throw usage_error("goro::go: the task has already run (it was awaited)");
    detail::check_pool_open("goro::go");
    detail::check_not_lambda_call(t.handle(), "goro::go");
    auto frame = t.release();
    task_header* h = detail::new_header(task_kind::task, GORO_SITE_ARG);
    if (!options.name.empty() || !options.labels.empty())
        h->cold().meta = task_meta(std::move(options));
    detail::start_root(h, frame, frame.promise());
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/core/go.hpp ----

// ---- begin goro/core/spawn.hpp ----
// goro/core/spawn.hpp — `goro::spawn`: start a task and keep a handle to its result.
//
//   goro::join_handle<int> h = goro::spawn(compute(x));   // runs now, on the pool
//   ...                                                   // the caller goes on
//   int v = co_await h;                                   // its result, or its exception
//
//   auto h2 = goro::spawn([=]() -> goro::task<int> { co_return x * 2; });  // a callable: kept alive
//
// The task is a root task like go()'s: listed, counted, dumped with its own
// stack ("created by" the spawn call), run by any worker. The handle is
// move-only and awaited once (`co_await h` or `co_await std::move(h)`; a
// second co_await throws goro::usage_error). A task awaiting it parks with
// wait reason "join"; a coroutine that is not goro's may await it too (it
// is continued on the worker that finished the task). Dropping a handle
// without awaiting it, or calling detach(), detaches the task: it runs to
// its end, and its result (or exception) is discarded — unlike go(), an
// exception from a spawned task never reaches the panic handler; it waits
// in the handle.
//
// THREADS: the task's result and the waiter meet in a `one_shot`: one word,
// 0 (nobody waits), the waiter's record (it parked), or 1 (the task ended).
// The waiter publishes its record with a CAS from 0, the task's end
// exchanges in 1: whoever is second sees the other and acts (the waiter
// does not park; the task readies the waiter). The result is written before
// the exchange, read after the waiter saw it.

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>


namespace goro {

template <class T>
class join_handle;

namespace detail {

/// One waiter, woken once (see THREADS above).
class one_shot {
public:
    struct waiter {
        task_header* task = nullptr;        // a goro task, parked
        std::coroutine_handle<> foreign{};  // or a coroutine that is not goro's
    };

    bool fired() const noexcept { return word_.load(std::memory_order_acquire) == fired_word; }

    /// Suspends the awaiting coroutine `h` on this one_shot; false when it has
    /// fired already (then `h` goes on without suspending).
    template <class P>
    bool suspend(waiter& w, std::coroutine_handle<P> h, const char* reason) noexcept {
        task_header* t = nullptr;
        if constexpr (std::is_base_of_v<promise_base, P>) t = h.promise().header_;
        if (t && t == tls_current_task) {
            w.task = t;
            park(t, h, reason);
        } else {
            w.foreign = h;
        }
        std::uintptr_t expected = 0;
        if (word_.compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(&w), std::memory_order_acq_rel,
                                          std::memory_order_acquire))
            return true;  // published: the firer owns the wake-up
        if (t) t->state.store(task_state::running, std::memory_order_relaxed);
        return false;
    }

    /// Fires: a parked goro task is made runnable; a foreign coroutine is
    /// returned, for the caller to continue (null when there is none).
    /// Touches nothing of this object afterwards.
    [[nodiscard]] std::coroutine_handle<> fire() noexcept;

private:
    static constexpr std::uintptr_t fired_word = 1;
    std::atomic<std::uintptr_t> word_{0};
};

/// Awaits a one_shot (wait reason "join").
struct one_shot_awaiter {
    using is_goro_awaiter = void;
    one_shot* s;
    one_shot::waiter w{};
    bool await_ready() const noexcept { return s->fired(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        return s->suspend(w, h, wait_reason::join);
    }
    void await_resume() const noexcept {}
};

template <class T>
using result_slot_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class T>
struct join_state {
    std::atomic<std::uint32_t> refs{2};  // the handle and the task
    one_shot done;
    std::optional<result_slot_t<T>> value;
    std::exception_ptr error;

    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }
};

/// The task made from what spawn() was given: the task itself, or a call of the callable.
template <class Src>
auto make_task(Src& src) {
    if constexpr (is_task_v<Src>) return std::move(src);
    else return src();
}

template <class T, class Src>
runner spawn_body(Src src, join_state<T>* st, site call) {
    try {
        note_running_site(call);     // while the callable runs (RUNNING SITE in goro/core/go.hpp)
        task<T> t = make_task(src);  // `src` (a callable) lives in this frame to the end
        if (!t) throw usage_error("goro::spawn: the callable returned an empty task");
        note_entry_site(t.handle().promise(), call);
        if constexpr (std::is_void_v<T>) {
            co_await root_child<typename task<T>::promise_type>{t.handle()};
            st->value.emplace();
        } else {
            st->value.emplace(co_await root_child<typename task<T>::promise_type>{t.handle()});
        }
    } catch (...) {
        st->error = std::current_exception();
    }
    std::coroutine_handle<> then = st->done.fire();
    st->release();
    if (then) co_await set_then{then};
}

template <class T>
struct join_awaiter {
    using is_goro_awaiter = void;
    join_state<T>* st;
    one_shot::waiter w{};

    bool await_ready() const noexcept { return st->done.fired(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        return st->done.suspend(w, h, wait_reason::join);
    }
    T await_resume() {
        if (st->error) std::rethrow_exception(std::move(st->error));
        if constexpr (!std::is_void_v<T>) return std::move(*st->value);
    }
};

template <class T, class Src>
join_handle<T> spawn_from(Src&& src, task_options&& options, const site& where);

}  // namespace detail

/// The handle of a task started by goro::spawn: awaitable once for its result.
template <class T>
class [[nodiscard("goro::spawn: co_await the handle for the result (dropping it detaches the task)")]] join_handle {
public:
    using is_goro_awaiter = void;
    using value_type = T;

    join_handle() noexcept = default;
    join_handle(join_handle&& o) noexcept
        : st_(std::exchange(o.st_, nullptr)), id_(o.id_), awaited_(o.awaited_) {}
    join_handle& operator=(join_handle&& o) noexcept {
        if (this != &o) {
            detach();
            st_ = std::exchange(o.st_, nullptr);
            id_ = o.id_;
            awaited_ = o.awaited_;
        }
        return *this;
    }
    join_handle(const join_handle&) = delete;
    join_handle& operator=(const join_handle&) = delete;
    ~join_handle() { detach(); }

    /// The task's id, as dumps show it ("goroutine N").
    std::uint64_t id() const noexcept { return id_; }
    /// True once the task has ended (a moment's view).
    bool done() const noexcept { return st_ && st_->done.fired(); }
    /// True while the handle refers to a task (not moved-from, not detached).
    explicit operator bool() const noexcept { return st_ != nullptr; }
    /// Lets the task run on alone; its result is discarded. The destructor does the same.
    void detach() noexcept {
        if (st_) std::exchange(st_, nullptr)->release();
    }

    detail::join_awaiter<T> operator co_await() & { return take_awaiter(); }
    detail::join_awaiter<T> operator co_await() && { return take_awaiter(); }

private:
    template <class U, class Src>
    friend join_handle<U> detail::spawn_from(Src&& src, task_options&& options, const detail::site& where);

    join_handle(detail::join_state<T>* st, std::uint64_t id) noexcept : st_(st), id_(id) {}

    detail::join_awaiter<T> take_awaiter() {
        if (!st_) throw usage_error("goro::join_handle: co_await on an empty handle (moved-from, detached or default-constructed)");
        if (awaited_) throw usage_error("goro::join_handle: co_await on a handle already awaited (a result is delivered once)");
        awaited_ = true;
        return detail::join_awaiter<T>{st_};
    }

    detail::join_state<T>* st_ = nullptr;
    std::uint64_t id_ = 0;
    bool awaited_ = false;
};

namespace detail {

template <class T, class Src>
join_handle<T> spawn_from(Src&& src, task_options&& options, const site& where) {
    check_pool_open("goro::spawn");
    auto* st = new join_state<T>();
    std::uint64_t id;
    try {
        id = start_runner(spawn_body<T, std::decay_t<Src>>(std::decay_t<Src>(static_cast<Src&&>(src)), st, where),
                          std::move(options), where);
    } catch (...) {
        delete st;  // the body never ran
        throw;
    }
    return join_handle<T>(st, id);
}

}  // namespace detail

/// Starts `t` as a root task on the pool and returns a handle to its result.
template <class T>
[[nodiscard("goro::spawn: co_await the handle for the result (dropping it detaches the task)")]] join_handle<T> spawn(
    task<T> t, task_options options = {}, GORO_SITE_PARAM) {
    if (!t) throw usage_error("goro::spawn: the task is empty (moved-from or default-constructed)");
    if (t.handle().done()) throw usage_error("goro::spawn: the task has already run (it was awaited)");
    detail::check_not_lambda_call(t.handle(), "goro::spawn");
    return detail::spawn_from<T>(std::move(t), std::move(options), GORO_SITE_ARG);
}

/// Starts `f()` (a callable returning goro::task<T>, kept alive until the
/// task ends) as a root task and returns a handle to its result.
template <class F>
    requires(!detail::is_task_v<std::remove_cvref_t<F>> && std::is_invocable_v<std::decay_t<F>&> &&
             detail::is_task_v<std::invoke_result_t<std::decay_t<F>&>>)
[[nodiscard("goro::spawn: co_await the handle for the result (dropping it detaches the task)")]] auto spawn(
    F&& f, task_options options = {}, GORO_SITE_PARAM) {
    using T = typename std::invoke_result_t<std::decay_t<F>&>::value_type;
    return detail::spawn_from<T>(static_cast<F&&>(f), std::move(options), GORO_SITE_ARG);
}

}  // namespace goro

#if GORO_BODIES
namespace goro::detail {

GORO_DECL std::coroutine_handle<> one_shot::fire() noexcept {
    std::uintptr_t v = word_.exchange(fired_word, std::memory_order_acq_rel);
    if (v == 0 || v == fired_word) return {};
    waiter* w = reinterpret_cast<waiter*>(v);
    task_header* t = w->task;
    std::coroutine_handle<> f = w->foreign;
    if (t) {
        ready(t);
        return {};
    }
    return f;
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/core/spawn.hpp ----

// ---- begin goro/sync/channel.hpp ----
// goro/sync/channel.hpp — `goro::channel<T>`: Go's channels, for goro tasks.
//
//   goro::channel<int> ch;        // unbuffered, like make(chan int)
//   goro::channel<int> jobs(64);  // buffered: a ring of 64 slots
//   goro::channel<int> nil{nullptr};  // Go's nil channel (so is a reset or moved-from handle)
//
//   co_await ch.send(v);                      // ch <- v   (throws goro::channel_closed when closed)
//   while (auto v = co_await ch.recv()) ...   // for v := range ch
//   ch.try_send(v), ch.try_recv()             // never block; say why not
//   ch.close();                               // wakes every parked receiver and sender
//
// A handle is a counted reference: copies refer to the same channel, and the
// state lives until the last handle goes. Its operations are const (they
// change the channel, not the handle), as Go's on a channel value. The state is one allocation (the
// header followed by the ring); an operation allocates nothing: a task that
// parks links a waiter node that lives in its awaiter, inside its own frame.
//
// ALGORITHM (after Go's runtime/chan.go, with a lock-free ring in front)
//   Every channel has one spinlock and two queues of parked waiters (recvq,
//   sendq), as in chan.go. A buffered channel's ring is a bounded MPMC queue
//   after Dmitry Vyukov's: each slot carries a sequence number, and a sender
//   (receiver) claims a position by a compare-and-swap of the enqueue
//   (dequeue) word, then writes (moves out) the value and publishes the slot's
//   next sequence number. While nobody is parked, a buffered send or receive
//   is that and nothing more: no lock. Everything else takes the lock:
//   unbuffered channels (hand-off only), a full or empty ring, and every
//   operation while some task is parked on the channel, so that a parked
//   waiter is served in FIFO order by the lock holders (Go's algorithm: a
//   receiver first takes from a parked sender, unbuffered: its value directly,
//   buffered: through the ring, refilling it from parked senders; a sender
//   hands its value directly to a parked receiver, else appends to the ring,
//   else parks). close() wakes every waiter: parked receivers get "closed"
//   (nullopt) once the ring is drained, parked senders get channel_closed.
//
//   The two position words (each on its own cache line):
//
//     enq = position << 3 | send_wait | recv_wait | closed     (senders CAS it)
//     deq = position << 1 | send_wait                          (receivers CAS it)
//
//   A lock-free send CASes `enq` only from a value with all three flags clear,
//   a lock-free receive CASes `deq` only from a value without send_wait; an
//   operation holding the lock CASes the position and keeps the flags. The
//   flags change only under the lock (fetch_or / fetch_and): so once a flag is
//   set, no lock-free operation of that side can start, and every one that
//   started before is visible in the word (single-variable coherence).
//   ring slot i:  seq == 2p      free for the send at position p (i = p mod cap)
//                 seq == 2p + 1  holds the value sent at position p
//                 (the receive at p stores 2(p + cap): free for the send at
//                 p + cap; doubled so that "holds p" and "free for p + 1"
//                 differ even when cap is 1)
//   A position claimed but not yet published (or moved out) is "in flight":
//   only a lock holder ever waits for one, by spinning; the claimer needs no
//   lock to finish, so the wait is a few instructions long.
//
// THE PARKING HANDSHAKE (no lost wake-up between the lock-free paths and a
// task about to park). Under the lock, a task that found nothing to do:
//   * receiver: sets recv_wait in `enq`, then looks at the ring again. A
//     lock-free send either claimed its position before the flag (the second
//     look sees the position, waits until it is published and takes it) or
//     fails its CAS on the changed word and takes the lock, where it finds
//     the parked receiver and hands the value over directly.
//   * sender (buffered): sets send_wait in `deq` and in `enq`, then looks
//     again. A lock-free receive either claimed before the flag (the second
//     look sees the freed slot) or fails its CAS and takes the lock, where
//     recv_locked moves parked senders' values into the slots it frees.
//     The flag in `enq` keeps lock-free senders out while senders are parked,
//     so a slot freed under the lock cannot be taken from under the waiter
//     being moved into it (a select's waiter, once claimed, must be served),
//     and parked senders keep their FIFO turn.
//   A select registering its waiters does the same for each buffered case's
//   channel, all under its locks, then polls every case again.
//   The flags are cleared (sync_wait_flags) by the lock holder that leaves a
//   queue empty, before it unlocks.
//
// INVARIANTS (under the lock)
//   * At least one of recvq and sendq is empty (of live waiters).
//   * sendq non-empty  => the ring is full (or the channel is unbuffered), and
//                         send_wait is set in both words.
//   * recvq non-empty  => the ring is empty, and recv_wait is set in `enq`.
//   * closed           => sendq is empty; `enq` is never advanced again, so
//                         every send that returned normally is in the ring
//                         and will be received exactly once. (`closed` and
//                         enq_closed are set together, by close(): the bool
//                         for lock holders, the flag for the lock-free paths.)
//   * A waiter in a queue belongs to a parked task, or to a select whose
//     state may already be claimed by another waker: pop() claims a select's
//     waiter by a compare-and-swap on its select_core and skips (unlinks) the
//     waiters of selects that were already claimed; the select removes its
//     remaining waiters itself, under the same locks, after it wakes. (Such a
//     stale waiter may keep a flag set a little longer: harmless, it only
//     sends operations to the lock.)
//
// WHICH THREAD DOES WHAT
//   The task that parks fills its waiter, links it under the lock, unlocks,
//   and then never touches its awaiter again (see the PARKING PROTOCOL in
//   scheduler.hpp). The waker unlinks the waiter, moves the value, sets
//   `success`, all under the lock; it calls detail::ready() only after
//   unlocking (one lock holder may wake several: a receive that refills the
//   ring from parked senders). A woken task reads what the waker wrote:
//   ready() and the scheduler's queues order the two. A ring slot's value is
//   handed between a sender and a receiver by the slot's sequence number
//   (release store, acquire load).
//
// LOCK ORDER (checked in debug builds, see core/lock_rank.hpp): channel locks
// in increasing address order (select), then the timer heap's mutex. Nothing
// else is taken under a channel lock; nothing is woken under one.

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>


// ---- begin goro/core/backoff.hpp ----
// goro/core/backoff.hpp — how a thread waits for another thread's short critical
// section: spin with the pause hint, then yield the thread.
//
//   detail::backoff b;
//   while (busy.load(std::memory_order_acquire)) b.pause();
//
// The waits it serves are a few dozen instructions long, so spinning usually
// ends them; past `spin_limit` pauses the other thread was probably
// descheduled inside, and yielding lets it run instead of burning the core.
// One object per wait: its count starts at zero.
//
// Nothing to test on its own (it only delays); the locks that use it
// (test_spinlock.cpp) are its tests.

#include <thread>


namespace goro::detail {

class backoff {
public:
    /// `spin_limit`: pauses before the first yield.
    explicit constexpr backoff(unsigned spin_limit = 64) noexcept : limit_(spin_limit) {}

    /// One step of the wait: a pause hint while the count is under the
    /// limit, a yield of the thread after.
    void pause() noexcept {
        if (++spins_ < limit_) cpu_relax();
        else std::this_thread::yield();
    }

private:
    unsigned spins_ = 0;
    unsigned limit_;
};

}  // namespace goro::detail
// ---- end goro/core/backoff.hpp ----

namespace goro {

/// Thrown by a send on a closed channel (Go panics), by a sender parked when
/// the channel closes, and by closing a channel twice.
class channel_closed : public error {
public:
    using error::error;
};

/// Why try_send did or did not send.
enum class send_status : unsigned char {
    sent,    ///< handed to a receiver or buffered
    full,    ///< no receiver waits and the buffer is full (always so for a nil channel)
    closed,  ///< the channel is closed; the value was not taken
};

/// Why try_recv did or did not receive.
enum class recv_status : unsigned char {
    received,  ///< `value` holds what was received
    empty,     ///< nothing to receive now (always so for a nil channel)
    closed,    ///< closed and drained: nothing will ever come
};

GORO_DECL const char* to_string(send_status s) noexcept;

GORO_DECL const char* to_string(recv_status s) noexcept;

/// The result of try_recv: a status and, when received, the value.
template <class T>
struct try_recv_result {
    recv_status status = recv_status::empty;
    std::optional<T> value{};
    explicit operator bool() const noexcept { return status == recv_status::received; }
};

namespace detail {

/// The shared state of one blocking select: whoever flips `claimed` first
/// (a channel waker under its channel's lock, or the select's timer) owns the
/// wake-up, records the winning case and readies the task.
struct select_core {
    std::atomic<bool> claimed{false};
    int winner = -1;              // written by the claimer before it readies the task
    task_header* task = nullptr;  // immutable while parked

    bool try_claim(int case_index) noexcept;
};

/// A parked sender or receiver (Go's sudog). Lives in an awaiter, in the
/// parked task's frame; every field is under the channel's lock while linked.
/// 40 bytes: a parked task's frame holds one, so the task's own header and a
/// select's core share a word (a select's waiters find the task in the core).
struct chan_waiter {
    chan_waiter* next = nullptr;
    chan_waiter* prev = nullptr;
    void* elem = nullptr;          // receiver: its std::optional<T>; sender: its T
    union {
        task_header* task_ = nullptr;  // a plain send or receive: the parked task
        select_core* sel_;             // one case of a select
    };
    int case_index = 0;
    bool in_select = false;
    bool linked = false;
    bool success = false;          // true: a value moved; false: woken by close

    chan_waiter() = default;
    // An awaiter may be moved before it suspends; a linked node never is.
    chan_waiter(const chan_waiter&) noexcept {}
    chan_waiter& operator=(const chan_waiter&) = delete;

    void set_task(task_header* t) noexcept {
        task_ = t;
        in_select = false;
    }
    void set_select(select_core* c, int index) noexcept {
        sel_ = c;
        case_index = index;
        in_select = true;
    }
    task_header* task() const noexcept { return in_select ? sel_->task : task_; }
};

/// FIFO of parked waiters, intrusive: no allocation. Changed only under the
/// channel's lock; `first_` is atomic so that a select's lock-free poll may
/// glance at whether anyone waits (a hint: the lock holder decides).
class waitq {
public:
    bool empty() const noexcept { return first_.load(std::memory_order_relaxed) == nullptr; }

    void push(chan_waiter* w) noexcept;

    /// The first waiter that can still be woken: a plain one, or a select's
    /// whose state this call claims. Waiters of already claimed selects are
    /// unlinked and skipped (their select will not look for them).
    chan_waiter* pop() noexcept;

    /// Lock held, about to pop the first waiter: fetches, for writing, where
    /// the waiter `ahead` places back lies if the waiters lie at a constant
    /// stride, as the first two do. Waiters live in their tasks' frames and
    /// the queue is a chain, so popping many in a row (a close) waits for one
    /// miss per waiter, each found only once the one before it is in; but
    /// tasks that parked in a row (spawned in a loop, say) often have frames
    /// one after another. A wrong guess costs a useless prefetch (a prefetch
    /// never faults), and the second line covers a select's state, just
    /// after the waiter in its frame.
    void prefetch_stride(std::uintptr_t ahead) const noexcept;

    /// Unlinks `w` if it is still linked (a select cleaning up after itself).
    void remove(chan_waiter* w) noexcept {
        if (w->linked) unlink(w);
    }

private:
    void unlink(chan_waiter* w) noexcept;

    std::atomic<chan_waiter*> first_{nullptr};
    chan_waiter* last_ = nullptr;
};

/// Waiters a lock holder took out of a queue, to be readied once it has
/// unlocked (linked through `next`, which a dequeued waiter no longer uses).
class wake_list {
public:
    void add(chan_waiter* w) noexcept {
        w->next = nullptr;
        if (last_) last_->next = w;
        else first_ = w;
        last_ = w;
    }
    bool empty() const noexcept { return first_ == nullptr; }

    /// No lock held. Each task is readied once; `next` is read first: once
    /// readied, the task may free its waiter. One waiter (a hand-off) goes
    /// through ready(), which runs it next on this worker; many (a close)
    /// go to the queues in batches, waking idle workers once a batch.
    void ready_all() noexcept;

private:
    [[gnu::noinline]] static void ready_many(chan_waiter* w) noexcept {
        task_header* batch[64];
        std::size_t n = 0;
        while (w) {
            chan_waiter* next = w->next;
            batch[n++] = w->task();
            if (n == 64) {
                ready_n(batch, n);
                n = 0;
            }
            w = next;
        }
        ready_n(batch, n);
    }

private:
    chan_waiter* first_ = nullptr;
    chan_waiter* last_ = nullptr;
};

/// What a lock-free attempt found (see chan_state::send_fast / recv_fast).
enum class fast_result : unsigned char {
    done,       ///< sent / received
    done_contended,  ///< done, after losing a position to another core (see CONTENTION)
    closed,     ///< send: the channel is closed; receive: closed and drained
    not_ready,  ///< a moment's view: would block (full / empty, nobody parked)
    locked,     ///< cannot tell without the lock (waiters, a position in flight, unbuffered)
};

/// What every channel has, whatever its element type: select sorts and locks
/// channels through this. Three cache lines: the lock, the queues and what
/// never changes; the senders' word; the receivers' word. (No alignas: a context embeds a channel; create() aligns
/// the buffered ones, where the padding matters.)
struct chan_base {
    // `enq`: position << 3 | enq_send_wait | enq_recv_wait | enq_closed
    static constexpr std::uint64_t enq_closed = 1;
    static constexpr std::uint64_t enq_recv_wait = 2;
    static constexpr std::uint64_t enq_send_wait = 4;
    static constexpr std::uint64_t enq_flags = 7;
    static constexpr unsigned enq_shift = 3;
    // `deq`: position << 1 | deq_send_wait
    static constexpr std::uint64_t deq_send_wait = 1;
    static constexpr unsigned deq_shift = 1;

    // Line 0: what an unbuffered channel's operations touch, all of it (one
    // line moves between cores per hand-off); for a buffered one, read-only
    // while nobody parks.
    std::atomic<std::size_t> refs{1};
    std::size_t cap = 0;   // immutable
    std::size_t mask = 0;  // immutable: cap - 1 when cap is a power of two
    waitq recvq;
    waitq sendq;
    ranked_lock<biased_spinlock, lock_rank::channel> lock;  // see spinlock.hpp: free of locked instructions while one thread uses the channel
    bool pow2 = false;     // immutable
    bool closed = false;   // under lock; also enq_closed in `enq`, for the lock-free paths
    char pad0_[cache_line - (3 * sizeof(std::size_t) + 2 * sizeof(waitq) + sizeof(biased_spinlock) + 2) % cache_line];
    // Line 1: the senders' word. Line 2: the receivers' word.
    std::atomic<std::uint64_t> enq{0};
    char pad1_[cache_line - sizeof(std::atomic<std::uint64_t>)];
    std::atomic<std::uint64_t> deq{0};
    char pad2_[cache_line - sizeof(std::atomic<std::uint64_t>)];

    explicit chan_base(std::size_t capacity) noexcept
        : cap(capacity), mask(capacity ? capacity - 1 : 0), pow2(capacity && (capacity & (capacity - 1)) == 0) {}

    /// Ring index of position p.
    std::size_t index(std::uint64_t p) const noexcept { return pow2 ? std::size_t(p & mask) : std::size_t(p % cap); }

    bool is_closed() const noexcept { return (enq.load(std::memory_order_acquire) & enq_closed) != 0; }

    // --- updating `enq` and `deq` ------------------------------------------
    // `plain`: this thread owns the lock's bias (see biased_spinlock's
    // LOCK-FREE WORDS), so nobody else writes the words: a load and a store
    // do what a locked read-modify-write does for everybody else.

    static bool cas_word(std::atomic<std::uint64_t>& w, std::uint64_t& expected, std::uint64_t desired,
                         bool plain) noexcept {
        if (!plain) return w.compare_exchange_weak(expected, desired, std::memory_order_acq_rel, std::memory_order_relaxed);
        const std::uint64_t now = w.load(std::memory_order_relaxed);
        if (now != expected) {
            expected = now;
            return false;
        }
        w.store(desired, std::memory_order_release);
        return true;
    }
    static void or_word(std::atomic<std::uint64_t>& w, std::uint64_t bits, bool plain) noexcept {
        if (plain) w.store(w.load(std::memory_order_relaxed) | bits, std::memory_order_release);
        else w.fetch_or(bits, std::memory_order_acq_rel);
    }
    static void and_word(std::atomic<std::uint64_t>& w, std::uint64_t bits, bool plain) noexcept {
        if (plain) w.store(w.load(std::memory_order_relaxed) & bits, std::memory_order_release);
        else w.fetch_and(bits, std::memory_order_acq_rel);
    }

    /// A lock-free operation's claim on the words (lock not held).
    class word_guard {
    public:
        explicit word_guard(biased_spinlock& l) noexcept : lock_(l), entry_(l.enter_words()) {}
        ~word_guard() { lock_.leave_words(entry_); }
        word_guard(const word_guard&) = delete;
        word_guard& operator=(const word_guard&) = delete;
        bool plain() const noexcept { return entry_ >= 0; }

    private:
        biased_spinlock& lock_;
        int entry_;
    };

    /// Values buffered now (a moment's view).
    std::size_t buffered() const noexcept;

    // --- the parking handshake (lock held; see THE PARKING HANDSHAKE) -----

    /// A receiver is about to park: lock-free senders must take the lock from
    /// now on. The caller then looks at the ring again.
    void announce_recv_wait() noexcept;

    /// A sender is about to park: lock-free receivers and senders must take
    /// the lock from now on. The caller then looks at the ring again.
    void announce_send_wait() noexcept;

    /// Clears the flags of queues that are empty now; call before unlocking
    /// after anything that may have emptied a queue. (Sets none: a flag is set
    /// only by announce_*, before the second look.)
    void sync_wait_flags() noexcept;

    /// The unlock of every locked operation: flags first, then the lock.
    void unlock_synced() noexcept;
};

template <class T>
struct chan_state : chan_base {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "goro::channel<T>: T must be nothrow move constructible (values move under the channel's lock)");
    static_assert(std::is_nothrow_destructible_v<T>, "goro::channel<T>: T must be nothrow destructible");

    /// One ring slot: its sequence number (see ALGORITHM) and room for a T.
    struct slot_type {
        std::atomic<std::uint64_t> seq;
        alignas(T) unsigned char storage[sizeof(T)];
        T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
    };

    explicit chan_state(std::size_t capacity) noexcept : chan_base(capacity) {}
    chan_state(const chan_state&) = delete;
    chan_state& operator=(const chan_state&) = delete;

    ~chan_state() {
        if (!cap) return;
        std::uint64_t d = deq.load(std::memory_order_relaxed) >> deq_shift;
        std::uint64_t e = enq.load(std::memory_order_relaxed) >> enq_shift;
        for (std::uint64_t p = d; p < e; ++p) slot(p).value()->~T();
    }

    // --- one allocation: the header, then the ring -------------------------

    static constexpr std::size_t max3(std::size_t a, std::size_t b, std::size_t c) noexcept {
        return a > b ? (a > c ? a : c) : (b > c ? b : c);
    }
    static constexpr std::size_t align = max3(alignof(slot_type), alignof(chan_base), cache_line);
    static constexpr std::size_t ring_offset =
        (sizeof(chan_state) + alignof(slot_type) - 1) / alignof(slot_type) * alignof(slot_type);

    static chan_state* create(std::size_t capacity) {
        if (capacity > (std::size_t(-1) - ring_offset) / sizeof(slot_type) / 2)
            throw std::length_error("goro::channel: capacity too large");
        void* p = ::operator new(ring_offset + capacity * sizeof(slot_type), std::align_val_t(align));
        auto* s = ::new (p) chan_state(capacity);
        for (std::size_t i = 0; i < capacity; ++i) ::new (&s->ring()[i].seq) std::atomic<std::uint64_t>(2 * i);
        return s;
    }

    static void destroy(chan_state* s) noexcept {
        s->~chan_state();
        ::operator delete(static_cast<void*>(s), std::align_val_t(align));
    }

    void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(this);
    }

    slot_type* ring() noexcept {
        return reinterpret_cast<slot_type*>(reinterpret_cast<unsigned char*>(this) + ring_offset);
    }
    /// The slot of position p.
    slot_type& slot(std::uint64_t p) noexcept { return ring()[index(p)]; }

    // --- the ring: claiming one position -------------------------------------

    /// Claims send position `p` (its slot `s` is free) by a CAS of `enq` from
    /// `e`, then writes `v` and publishes it. False: `e` changed (reloaded).
    bool claim_and_put(std::uint64_t& e, std::uint64_t p, slot_type& s, T& v, bool plain) noexcept {
        if (!cas_word(enq, e, e + (1u << enq_shift), plain)) return false;
        ::new (static_cast<void*>(s.storage)) T(std::move(v));
        s.seq.store(2 * p + 1, std::memory_order_release);
        return true;
    }

    /// Claims receive position `p` (its slot `s` is published) by a CAS of
    /// `deq` from `d`, then moves the value out. False: `d` changed (reloaded).
    bool claim_and_take(std::uint64_t& d, std::uint64_t p, slot_type& s, std::optional<T>& out, bool plain) noexcept {
        if (!cas_word(deq, d, d + (1u << deq_shift), plain)) return false;
        take(s, p, out);
        return true;
    }

    // --- the ring, lock-free ---------------------------------------------------
    //
    // THREAD SAFETY: any thread. Only positions claimed by this call's own CAS
    // are written; a result other than `done` changed nothing.

    /// Appends `v` when the ring has room and nobody is parked on the channel
    /// (then nothing more is owed to anyone). Moves from `v` only on `done`.
    fast_result send_fast(T& v) noexcept {
        if (!cap) {
            // Unbuffered: only a hand-off, under the lock. A glance says whether to try.
            if (is_closed()) return fast_result::closed;
            return recvq.empty() ? fast_result::not_ready : fast_result::locked;
        }
        word_guard g(lock);
        return send_ring<false>(v, g.plain());
    }

    /// Takes the oldest value when one is published and no sender is parked.
    fast_result recv_fast(std::optional<T>& out) noexcept {
        if (!cap) {
            // Unbuffered: closed means no sender is parked and none will come.
            if (is_closed()) return fast_result::closed;
            return sendq.empty() ? fast_result::not_ready : fast_result::locked;
        }
        word_guard g(lock);
        return recv_ring<false>(out, g.plain());
    }

    // The loops of send_fast and recv_fast. A lost CAS leaves the first,
    // inlined copy (`Lost` false) for a second one that backs off (see
    // CONTENTION) and reports done_contended, so the uncontended path
    // carries no backoff code.
    template <bool Lost>
    fast_result send_ring(T& v, bool plain) noexcept {
        std::uint64_t e = enq.load(std::memory_order_relaxed);
        for (unsigned lost = Lost;;) {
            if (e & enq_flags) return (e & enq_closed) ? fast_result::closed : fast_result::locked;
            const std::uint64_t p = e >> enq_shift;
            slot_type& s = slot(p);
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * p) {
                if (claim_and_put(e, p, s, v, plain)) return Lost ? fast_result::done_contended : fast_result::done;
                if constexpr (!Lost) return send_after_loss(v, plain);
                contention_backoff(lost++);
            } else if (std::int64_t(seq - 2 * p) < 0) {
                // The slot still holds position p - cap: full, or its receiver is moving it out.
                std::uint64_t d = deq.load(std::memory_order_acquire) >> deq_shift;
                if (std::int64_t(p - d) >= std::int64_t(cap)) return fast_result::not_ready;
                return fast_result::locked;
            } else {
                e = enq.load(std::memory_order_relaxed);  // another sender took p
            }
        }
    }
    [[gnu::noinline]] fast_result send_after_loss(T& v, bool plain) noexcept {
        contention_backoff(0);
        return send_ring<true>(v, plain);
    }

    template <bool Lost>
    fast_result recv_ring(std::optional<T>& out, bool plain) noexcept {
        std::uint64_t d = deq.load(std::memory_order_relaxed);
        for (unsigned lost = Lost;;) {
            if (d & deq_send_wait) return fast_result::locked;
            const std::uint64_t p = d >> deq_shift;
            slot_type& s = slot(p);
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * p + 1) {
                if (claim_and_take(d, p, s, out, plain)) return Lost ? fast_result::done_contended : fast_result::done;
                if constexpr (!Lost) return recv_after_loss(out, plain);
                contention_backoff(lost++);
            } else if (std::int64_t(seq - (2 * p + 1)) < 0) {
                // Position p is not published: the ring is empty, or its sender is still writing.
                std::uint64_t e = enq.load(std::memory_order_acquire);
                if (std::int64_t((e >> enq_shift) - p) > 0) return fast_result::locked;
                return (e & enq_closed) ? fast_result::closed : fast_result::not_ready;
            } else {
                d = deq.load(std::memory_order_relaxed);  // another receiver took p
            }
        }
    }
    [[gnu::noinline]] fast_result recv_after_loss(std::optional<T>& out, bool plain) noexcept {
        contention_backoff(0);
        return recv_ring<true>(out, plain);
    }

    // --- the ring, lock held ---------------------------------------------------
    //
    // Exact answers: a position in flight is waited for (its claimer needs no
    // lock to finish). The flags are kept as they are.

    /// Appends `v` unless the ring is full; `enq` must not be closed.
    bool push_locked(T& v) noexcept {
        const bool plain = lock.held_plain();
        std::uint64_t e = enq.load(std::memory_order_relaxed);
        detail::backoff wait;
        for (;;) {
            const std::uint64_t p = e >> enq_shift;
            slot_type& s = slot(p);
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * p) {
                if (claim_and_put(e, p, s, v, plain)) return true;
                continue;
            }
            if (std::int64_t(seq - 2 * p) < 0) {
                std::uint64_t d = deq.load(std::memory_order_acquire) >> deq_shift;
                std::int64_t n = std::int64_t(p - d);
                if (n >= std::int64_t(cap)) return false;  // full at the moment `deq` was read
                if (n >= 0) wait.pause();                  // a receiver is moving p - cap out
            }
            e = enq.load(std::memory_order_relaxed);
        }
    }

    /// Takes the oldest value unless the ring is empty; `e_seen` is then the
    /// `enq` word that showed it empty (its closed flag says whether for good).
    bool pop_locked(std::optional<T>& out, std::uint64_t& e_seen) noexcept {
        const bool plain = lock.held_plain();
        std::uint64_t d = deq.load(std::memory_order_relaxed);
        detail::backoff wait;
        for (;;) {
            const std::uint64_t p = d >> deq_shift;
            slot_type& s = slot(p);
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * p + 1) {
                if (claim_and_take(d, p, s, out, plain)) return true;
                continue;
            }
            if (std::int64_t(seq - (2 * p + 1)) < 0) {
                std::uint64_t e = enq.load(std::memory_order_acquire);
                std::int64_t n = std::int64_t((e >> enq_shift) - p);
                if (n <= 0) {
                    e_seen = e;
                    return false;  // empty at the moment `enq` was read
                }
                wait.pause();  // a sender is writing p
            }
            d = deq.load(std::memory_order_relaxed);
        }
    }

    /// Moves parked senders' values into free slots, oldest first, while there
    /// is room (Go moves one per receive; a lock-free receive that freed a slot
    /// before a sender parked leaves room for more).
    void refill_locked(wake_list& wakes) noexcept {
        while (!sendq.empty()) {
            // send_wait is set (sendq is not empty): only lock holders move the
            // positions now, so the room seen here stays until we use it.
            std::uint64_t d = deq.load(std::memory_order_acquire) >> deq_shift;
            std::uint64_t e = enq.load(std::memory_order_relaxed) >> enq_shift;
            if (std::int64_t(e - d) >= std::int64_t(cap)) return;
            chan_waiter* w = sendq.pop();
            if (!w) return;
            push_locked(*static_cast<T*>(w->elem));  // there is room: cannot fail
            w->success = true;
            wakes.add(w);
        }
    }

    // --- operations, channel locked ----------------------------------------

    /// Sends `v` without blocking: to a parked receiver, else into the ring
    /// (behind the values of parked senders). Moves from `v` only when the
    /// status is `sent`.
    send_status send_locked(T& v, wake_list& wakes) noexcept {
        if (closed) return send_status::closed;
        if (chan_waiter* w = recvq.pop()) {
            static_cast<std::optional<T>*>(w->elem)->emplace(std::move(v));
            w->success = true;
            wakes.add(w);
            return send_status::sent;
        }
        if (!cap) return send_status::full;
        refill_locked(wakes);
        if (!sendq.empty()) return send_status::full;  // the ring is full again
        return push_locked(v) ? send_status::sent : send_status::full;
    }

    /// Receives into `out` without blocking: from the ring, refilling it from
    /// parked senders, else directly from a parked sender (the ring is empty:
    /// FIFO order holds), else reports empty or closed.
    recv_status recv_locked(std::optional<T>& out, wake_list& wakes) noexcept {
        std::uint64_t e = 0;
        if (cap) {
            if (pop_locked(out, e)) {
                refill_locked(wakes);
                return recv_status::received;
            }
        } else if (closed) {
            e = enq_closed;  // unbuffered: the flag under the lock says it
        }
        if (chan_waiter* w = sendq.pop()) {
            out.emplace(std::move(*static_cast<T*>(w->elem)));
            w->success = true;
            wakes.add(w);
            if (cap) refill_locked(wakes);
            return recv_status::received;
        }
        return (e & enq_closed) ? recv_status::closed : recv_status::empty;
    }

    /// Closes the channel and wakes every waiter, or throws when it was
    /// closed already. Lock NOT held on entry.
    void close(const char* op) {
        lock.lock();
        if (closed) {
            lock.unlock();
            throw channel_closed(std::string(op) + ": close of closed channel");
        }
        closed = true;
        // From here on no send can claim a position: those that did are in the ring.
        or_word(enq, enq_closed, lock.held_plain());
        // Nobody can join the queues now, so they can be emptied a batch at
        // a time, readying each batch with the lock released. Each waiter is
        // touched once, while its line is in cache (a close of a channel that
        // a million tasks wait on would otherwise walk them twice).
        for (;;) {
            task_header* batch[64];
            std::size_t n = 0;
            while (n < 64) {
                recvq.prefetch_stride(8);
                chan_waiter* w = recvq.pop();
                if (!w) w = sendq.pop();
                if (!w) break;
                w->success = false;
                batch[n++] = w->task();
            }
            unlock_synced();
            ready_n(batch, n);
            if (n < 64) return;
            lock.lock();
        }
    }

private:
    /// Moves the value at position p (claimed by this thread) out and frees the slot.
    void take(slot_type& s, std::uint64_t p, std::optional<T>& out) noexcept {
        T* v = s.value();
        out.emplace(std::move(*v));
        v->~T();
        s.seq.store(2 * (p + cap), std::memory_order_release);
    }

    // CONTENTION. A CAS of `enq` or `deq` that fails means that another core
    // claimed a position between our load and our CAS: two cores are doing
    // the same thing on this channel (sending, or receiving), and the word's
    // line moves between them on every claim. Retrying at once keeps it
    // moving. So the loser pauses, twice as long after each loss in the same
    // call (4 to 64 pauses), and the winner claims a run of positions with
    // the line in its cache. The operation then reports done_contended: its
    // task steps aside if another task waits on its worker (send_op and
    // recv_op), often one of the other side (a receiver woken by these
    // sends, say), and two workers that each run one side of the channel do
    // not contend at all.
    [[gnu::cold, gnu::noinline]] static void contention_backoff(unsigned lost) noexcept {
        const unsigned pauses = 4u << (lost < 4 ? lost : 4);
        for (unsigned k = 0; k < pauses; ++k) cpu_relax();
    }
};

// --- awaiters ---------------------------------------------------------------

/// `co_await ch.send(v)`. Holds the value until it is delivered; when the send
/// fails (closed) the value was not delivered and is destroyed with the awaiter.
template <class T>
class [[nodiscard("goro::channel::send: co_await it")]] send_op {
public:
    using is_goro_awaiter = void;
    send_op(chan_state<T>* c, T&& v) noexcept : ch_(c), value_(std::move(v)) {}
    send_op(chan_state<T>* c, const T& v) : ch_(c), value_(v) {}
    send_op(send_op&& o) noexcept : ch_(o.ch_), value_(std::move(o.value_)) {}
    send_op& operator=(send_op&&) = delete;

    // The lock-free attempt comes first, before the coroutine saves its
    // state to suspend (in a task only: elsewhere await_suspend says why not).
    bool await_ready() noexcept {
        chan_state<T>* c = ch_;
        if (!c || !c->cap || !tls_current_task) return false;
        fast_result f = c->send_fast(value_);
        if (f == fast_result::done) [[likely]] {
            state_ = done;
            return true;
        }
        if (f == fast_result::closed) {
            state_ = failed;
            return true;
        }
        return f == fast_result::done_contended && sent_after_contention();
    }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::channel::send");
        if (state_ == done) [[unlikely]] {  // sent, after contention: only step aside
            step_aside(self, h);
            return true;
        }
        chan_state<T>* c = ch_;
        if (!c) {
            park(self, h, wait_reason::chan_send_nil);  // never published: parks forever, like Go
            return true;
        }
        // await_ready made the lock-free attempt; the locked path below decides exactly.
        wake_list wakes;
        c->lock.lock();
        auto r = c->send_locked(value_, wakes);
        if (r == send_status::full && c->cap) {
            c->announce_send_wait();
            r = c->send_locked(value_, wakes);  // the second look (THE PARKING HANDSHAKE)
        }
        if (r != send_status::full) {
            c->unlock_synced();
            state_ = r == send_status::sent ? done : failed;
            wakes.ready_all();
            return false;
        }
        park(self, h, wait_reason::chan_send);
        state_ = parked;
        waiter_.set_task(self);
        waiter_.elem = &value_;
        waiter_.success = false;
        c->sendq.push(&waiter_);
        c->unlock_synced();  // published: from here on a receiver may resume us
        wakes.ready_all();   // a refill before we parked (only locals from here on)
        return true;
    }

    /// Sent, but only after losing a position to another core: true to go
    /// on, false to step aside in await_suspend (see CONTENTION).
    [[gnu::noinline]] bool sent_after_contention() noexcept {
        state_ = done;
        return !local_work_waiting();
    }

    void await_resume() const {
        if (state_ == failed || (state_ == parked && !waiter_.success))
            throw channel_closed("goro::channel::send: send on closed channel");
    }

private:
    enum op_state : unsigned char { idle, done, failed, parked };
    chan_state<T>* ch_;
    T value_;
    chan_waiter waiter_{};
    op_state state_ = idle;
};

/// `co_await ch.recv()`: the value, or nullopt once closed and drained.
template <class T>
class [[nodiscard("goro::channel::recv: co_await it")]] recv_op {
public:
    using is_goro_awaiter = void;
    explicit recv_op(chan_state<T>* c) noexcept : ch_(c) {}
    recv_op(recv_op&& o) noexcept : ch_(o.ch_) {}
    recv_op& operator=(recv_op&&) = delete;

    // The lock-free attempt comes first, as in send_op.
    bool await_ready() noexcept {
        chan_state<T>* c = ch_;
        if (!c || !c->cap || !tls_current_task) return false;
        fast_result f = c->recv_fast(out_);
        if (f == fast_result::done || f == fast_result::closed) [[likely]]
            return true;
        return f == fast_result::done_contended && received_after_contention();
    }

    /// As send_op::sent_after_contention.
    [[gnu::noinline]] bool received_after_contention() noexcept {
        if (!local_work_waiting()) return true;
        step_aside_ = true;
        return false;
    }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::channel::recv");
        if (step_aside_) [[unlikely]] {
            step_aside(self, h);
            return true;
        }
        chan_state<T>* c = ch_;
        if (!c) {
            park(self, h, wait_reason::chan_receive_nil);  // never published: parks forever
            return true;
        }
        // await_ready made the lock-free attempt; the locked path below decides exactly.
        wake_list wakes;
        c->lock.lock();
        auto r = c->recv_locked(out_, wakes);
        if (r == recv_status::empty && c->cap) {
            c->announce_recv_wait();
            r = c->recv_locked(out_, wakes);  // the second look (THE PARKING HANDSHAKE)
        }
        if (r != recv_status::empty) {
            c->unlock_synced();
            wakes.ready_all();
            return false;
        }
        park(self, h, wait_reason::chan_receive);
        waiter_.set_task(self);
        waiter_.elem = &out_;
        waiter_.success = false;
        c->recvq.push(&waiter_);
        c->unlock_synced();  // published: from here on a sender or close may resume us
        return true;
    }

    // A sender filled out_ (success) or close left it empty. Read as flag and
    // value, not as a whole: they were just written separately, and one wider
    // load of both would wait for the stores to drain (no store forwarding).
    std::optional<T> await_resume() noexcept {
        if (!out_) return std::nullopt;
        return std::optional<T>(std::move(*out_));
    }

private:
    chan_state<T>* ch_;
    chan_waiter waiter_{};
    std::optional<T> out_{};
    bool step_aside_ = false;
};

}  // namespace detail

namespace detail {

/// T can be made from Args: by a constructor, or (an aggregate) by braces.
template <class T, class... Args>
concept makeable = std::is_constructible_v<T, Args&&...> || requires(Args&&... a) { T{std::forward<Args>(a)...}; };

/// A T made from `args` in this (non-coroutine) call.
template <class T, class... Args>
T make_value(Args&&... args) {
    if constexpr (std::is_constructible_v<T, Args&&...>) return T(std::forward<Args>(args)...);
    else return T{std::forward<Args>(args)...};
}

/// try_recv on a channel's state (null: a nil channel): the lock-free path,
/// then the lock when only the lock can tell.
template <class T>
try_recv_result<T> try_recv_on(chan_state<T>* s) {
    try_recv_result<T> res;
    if (!s) return res;
    switch (s->recv_fast(res.value)) {
    case fast_result::done:
    case fast_result::done_contended: res.status = recv_status::received; return res;
    case fast_result::closed: res.status = recv_status::closed; return res;
    case fast_result::not_ready: res.status = recv_status::empty; return res;
    case fast_result::locked: break;
    }
    wake_list wakes;
    s->lock.lock();
    res.status = s->recv_locked(res.value, wakes);
    s->unlock_synced();
    wakes.ready_all();
    return res;
}

/// try_send on a channel's state (null: a nil channel). Moves from `v` only when sent.
template <class T>
send_status try_send_on(chan_state<T>* s, T& v) {
    if (!s) return send_status::full;
    switch (s->send_fast(v)) {
    case fast_result::done:
    case fast_result::done_contended: return send_status::sent;
    case fast_result::closed: return send_status::closed;
    case fast_result::not_ready: return send_status::full;
    case fast_result::locked: break;
    }
    wake_list wakes;
    s->lock.lock();
    auto r = s->send_locked(v, wakes);
    s->unlock_synced();
    wakes.ready_all();
    return r;
}

}  // namespace detail

/// A channel of T: a counted handle to a shared queue (see the top of this file).
template <class T>
class channel {
public:
    using value_type = T;

    /// An unbuffered channel (make(chan T)).
    channel() : s_(state_type::create(0)) {}
    /// A channel with a buffer of `capacity` values (make(chan T, capacity)).
    explicit channel(std::size_t capacity) : s_(state_type::create(capacity)) {}
    /// Go's nil channel: send and receive park forever, a select case on it never fires.
    channel(std::nullptr_t) noexcept {}

    channel(const channel& o) noexcept : s_(o.s_) {
        if (s_) s_->add_ref();
    }
    channel(channel&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    channel& operator=(const channel& o) noexcept {
        if (o.s_) o.s_->add_ref();
        reset();
        s_ = o.s_;
        return *this;
    }
    channel& operator=(channel&& o) noexcept {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    ~channel() { reset(); }

    /// Drops this handle's reference; the handle becomes a nil channel.
    void reset() noexcept {
        if (s_) std::exchange(s_, nullptr)->release();
    }

    /// True unless this is a nil channel.
    explicit operator bool() const noexcept { return s_ != nullptr; }
    bool is_nil() const noexcept { return s_ == nullptr; }

    /// `co_await ch.send(v)`: waits until a receiver took `v` (unbuffered) or
    /// it is buffered. Throws goro::channel_closed on a closed channel.
    [[nodiscard("goro::channel::send: co_await it")]] detail::send_op<T> send(T&& v) const noexcept { return {s_, std::move(v)}; }
    [[nodiscard("goro::channel::send: co_await it")]] detail::send_op<T> send(const T& v) const
        requires std::is_copy_constructible_v<T>
    {
        return {s_, v};
    }

    /// `co_await ch.send(std::in_place, a, b)`: sends a T made from `a, b`
    /// (T(a, b), or T{a, b} for an aggregate) inside this call, not in the
    /// caller's coroutine: the form that g++ 12's bug with class temporaries
    /// in a co_await expression cannot reach (see the README).
    template <class... Args>
        requires detail::makeable<T, Args...>
    detail::send_op<T> send(std::in_place_t, Args&&... args) const {
        return {s_, detail::make_value<T>(std::forward<Args>(args)...)};
    }

    /// `co_await ch.recv()`: a value, or std::nullopt once closed and drained.
    [[nodiscard("goro::channel::recv: co_await it")]] detail::recv_op<T> recv() const noexcept { return detail::recv_op<T>{s_}; }

    /// Sends without blocking. Moves from `v` only when it returns `sent`.
    send_status try_send(T&& v) const { return try_send_ref(v); }
    send_status try_send(const T& v) const
        requires std::is_copy_constructible_v<T>
    {
        T copy(v);
        return try_send_ref(copy);
    }

    /// Receives without blocking.
    try_recv_result<T> try_recv() const { return detail::try_recv_on(s_); }

    /// Closes the channel: buffered values can still be received, then every
    /// receive yields nullopt; every parked receiver and sender wakes. Closing
    /// twice throws goro::channel_closed; closing a nil channel throws goro::usage_error.
    void close() const {
        if (!s_) throw usage_error("goro::channel::close: close of nil channel");
        s_->close("goro::channel::close");
    }

    /// Values buffered now (a moment's view).
    std::size_t size() const noexcept { return s_ ? s_->buffered() : 0; }
    /// The buffer's capacity (0: unbuffered or nil).
    std::size_t capacity() const noexcept { return s_ ? s_->cap : 0; }

    friend bool operator==(const channel& a, const channel& b) noexcept { return a.s_ == b.s_; }

    /// The shared state (select uses it); null for a nil channel.
    detail::chan_state<T>* state() const noexcept { return s_; }

private:
    using state_type = detail::chan_state<T>;

    send_status try_send_ref(T& v) const { return detail::try_send_on(s_, v); }

    state_type* s_ = nullptr;
};

namespace detail {

/// A counted reference to whatever keeps a channel's state alive (the channel
/// itself, or the context that embeds it), erased: `ops` knows how to count.
struct keep_ops {
    void (*add)(void*) noexcept;
    void (*drop)(void*) noexcept;
};

class keep_ref {
public:
    keep_ref() noexcept = default;
    /// Adopts one reference to `obj` (null: keeps nothing).
    keep_ref(void* obj, const keep_ops* ops) noexcept : obj_(obj), ops_(ops) {}
    keep_ref(const keep_ref& o) noexcept : obj_(o.obj_), ops_(o.ops_) {
        if (obj_) ops_->add(obj_);
    }
    keep_ref(keep_ref&& o) noexcept : obj_(std::exchange(o.obj_, nullptr)), ops_(o.ops_) {}
    keep_ref& operator=(keep_ref o) noexcept {
        std::swap(obj_, o.obj_);
        std::swap(ops_, o.ops_);
        return *this;
    }
    ~keep_ref() {
        if (obj_) ops_->drop(obj_);
    }

private:
    void* obj_ = nullptr;
    const keep_ops* ops_ = nullptr;
};

template <class T>
struct chan_keep {
    static void add(void* p) noexcept { static_cast<chan_state<T>*>(p)->add_ref(); }
    static void drop(void* p) noexcept { static_cast<chan_state<T>*>(p)->release(); }
    static constexpr keep_ops ops{&add, &drop};
};

struct direction_access;

}  // namespace detail

/// A send-only view of a channel (Go's `chan<- T`): send, try_send and close;
/// no receive. A `channel<T>` converts to it implicitly; it never converts
/// back, nor to a `recv_only<T>`. A counted handle like `channel<T>`.
template <class T>
class send_only {
public:
    using value_type = T;

    /// A nil channel.
    send_only() noexcept = default;
    send_only(std::nullptr_t) noexcept {}
    send_only(const channel<T>& c) noexcept : c_(c) {}
    send_only(channel<T>&& c) noexcept : c_(std::move(c)) {}

    /// `co_await ch.send(v)`, as channel<T>::send.
    detail::send_op<T> send(T&& v) const noexcept { return c_.send(std::move(v)); }
    detail::send_op<T> send(const T& v) const
        requires std::is_copy_constructible_v<T>
    {
        return c_.send(v);
    }
    template <class... Args>
        requires detail::makeable<T, Args...>
    detail::send_op<T> send(std::in_place_t, Args&&... args) const {
        return c_.send(std::in_place, std::forward<Args>(args)...);
    }
    send_status try_send(T&& v) const { return c_.try_send(std::move(v)); }
    send_status try_send(const T& v) const
        requires std::is_copy_constructible_v<T>
    {
        return c_.try_send(v);
    }
    /// As channel<T>::close (Go lets the sending side close).
    void close() const { c_.close(); }

    std::size_t size() const noexcept { return c_.size(); }
    std::size_t capacity() const noexcept { return c_.capacity(); }
    explicit operator bool() const noexcept { return bool(c_); }
    bool is_nil() const noexcept { return c_.is_nil(); }
    detail::chan_state<T>* state() const noexcept { return c_.state(); }
    friend bool operator==(const send_only& a, const send_only& b) noexcept { return a.c_ == b.c_; }

private:
    friend struct detail::direction_access;
    channel<T> c_{nullptr};
};

/// A receive-only view of a channel (Go's `<-chan T`): recv and try_recv; no
/// send, no close. A `channel<T>` converts to it implicitly; it never converts
/// back, nor to a `send_only<T>`. A context's done() is one (a
/// `recv_only<std::monostate>` that is closed when the context is done).
/// `co_await r` receives once, as `co_await r.recv()`; it may appear in a
/// select as it is, or as `goro::recv(r)`.
template <class T>
class recv_only {
public:
    using value_type = T;

    /// A nil channel.
    recv_only() noexcept = default;
    recv_only(std::nullptr_t) noexcept {}
    recv_only(const channel<T>& c) noexcept : s_(c.state()) {
        if (s_) {
            s_->add_ref();
            keep_ = detail::keep_ref(s_, &detail::chan_keep<T>::ops);
        }
    }
    /// A view of `s` kept alive by `keep` (goro's own types use this: a context's done()).
    recv_only(detail::chan_state<T>* s, detail::keep_ref keep) noexcept : s_(s), keep_(std::move(keep)) {}

    /// `co_await r.recv()`: a value, or std::nullopt once closed and drained.
    detail::recv_op<T> recv() const noexcept { return detail::recv_op<T>{s_}; }
    detail::recv_op<T> operator co_await() const noexcept { return detail::recv_op<T>{s_}; }
    try_recv_result<T> try_recv() const { return detail::try_recv_on(s_); }

    std::size_t size() const noexcept { return s_ ? s_->buffered() : 0; }
    std::size_t capacity() const noexcept { return s_ ? s_->cap : 0; }
    explicit operator bool() const noexcept { return s_ != nullptr; }
    bool is_nil() const noexcept { return s_ == nullptr; }
    detail::chan_state<T>* state() const noexcept { return s_; }
    friend bool operator==(const recv_only& a, const recv_only& b) noexcept { return a.s_ == b.s_; }

private:
    detail::chan_state<T>* s_ = nullptr;
    detail::keep_ref keep_{};
};

namespace detail {
struct direction_access {
    template <class T>
    static const channel<T>& handle(const send_only<T>& s) noexcept {
        return s.c_;
    }
};
}  // namespace detail

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL const char* to_string(send_status s) noexcept {
    switch (s) {
    case send_status::sent: return "sent";
    case send_status::full: return "full";
    case send_status::closed: return "closed";
    }
    return "unknown";
}

GORO_DECL const char* to_string(recv_status s) noexcept {
    switch (s) {
    case recv_status::received: return "received";
    case recv_status::empty: return "empty";
    case recv_status::closed: return "closed";
    }
    return "unknown";
}

}  // namespace goro

namespace goro::detail {

GORO_DECL bool select_core::try_claim(int case_index) noexcept {
    bool expected = false;
    if (!claimed.compare_exchange_strong(expected, true, std::memory_order_acq_rel, std::memory_order_relaxed))
        return false;
    winner = case_index;
    return true;
}

GORO_DECL void waitq::push(chan_waiter* w) noexcept {
    w->next = nullptr;
    w->prev = last_;
    if (last_) last_->next = w;
    else first_.store(w, std::memory_order_relaxed);
    last_ = w;
    w->linked = true;
}

GORO_DECL chan_waiter* waitq::pop() noexcept {
    while (chan_waiter* w = first_.load(std::memory_order_relaxed)) {
        unlink(w);
        if (!w->in_select || w->sel_->try_claim(w->case_index)) return w;
    }
    return nullptr;
}

GORO_DECL void waitq::prefetch_stride(std::uintptr_t ahead) const noexcept {
    chan_waiter* w = first_.load(std::memory_order_relaxed);
    if (!w || !w->next) return;
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(w);
    const std::uintptr_t step = reinterpret_cast<std::uintptr_t>(w->next) - a;
    const char* guess = reinterpret_cast<const char*>(a + step * ahead);
    prefetch_for_write(guess);
    prefetch_for_write(guess + cache_line);
}

GORO_DECL void waitq::unlink(chan_waiter* w) noexcept {
    if (w->prev) w->prev->next = w->next;
    else first_.store(w->next, std::memory_order_relaxed);
    if (w->next) w->next->prev = w->prev;
    else last_ = w->prev;
    w->next = w->prev = nullptr;
    w->linked = false;
}

GORO_DECL void wake_list::ready_all() noexcept {
    chan_waiter* w = first_;
    first_ = last_ = nullptr;
    if (w && !w->next) {
        ready(w->task());
        return;
    }
    if (w) ready_many(w);
}

GORO_DECL std::size_t chan_base::buffered() const noexcept {
    std::uint64_t d = deq.load(std::memory_order_relaxed) >> deq_shift;
    std::uint64_t e = enq.load(std::memory_order_relaxed) >> enq_shift;
    if (e <= d) return 0;
    return std::size_t(e - d) > cap ? cap : std::size_t(e - d);
}

GORO_DECL void chan_base::announce_recv_wait() noexcept {
    if (cap && !(enq.load(std::memory_order_relaxed) & enq_recv_wait))
        or_word(enq, enq_recv_wait, lock.held_plain());
}

GORO_DECL void chan_base::announce_send_wait() noexcept {
    if (!cap) return;
    const bool plain = lock.held_plain();
    if (!(deq.load(std::memory_order_relaxed) & deq_send_wait)) or_word(deq, deq_send_wait, plain);
    if (!(enq.load(std::memory_order_relaxed) & enq_send_wait)) or_word(enq, enq_send_wait, plain);
}

GORO_DECL void chan_base::sync_wait_flags() noexcept {
    if (!cap) return;
    std::uint64_t e = enq.load(std::memory_order_relaxed);
    std::uint64_t clear = 0;
    if ((e & enq_recv_wait) && recvq.empty()) clear |= enq_recv_wait;
    if ((e & enq_send_wait) && sendq.empty()) clear |= enq_send_wait;
    const bool plain = lock.held_plain();
    if (clear) and_word(enq, ~clear, plain);
    if (sendq.empty() && (deq.load(std::memory_order_relaxed) & deq_send_wait))
        and_word(deq, ~deq_send_wait, plain);
}

GORO_DECL void chan_base::unlock_synced() noexcept {
    if (cap) sync_wait_flags();
    lock.unlock();
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/sync/channel.hpp ----

// ---- begin goro/sync/select.hpp ----
// goro/sync/select.hpp — `goro::select`: wait on several channel operations at once.
//
//   auto r = co_await goro::select(goro::recv(jobs),          // case 0
//                                  goro::send(out, v),        // case 1
//                                  ctx.done(),                // case 2
//                                  goro::after(100ms));       // case 3
//   switch (r.index()) {
//   case 0: if (auto& job = r.get<0>()) use(*job); else /* jobs closed */; break;
//   ...
//   }
//   auto r = goro::try_select(goro::recv(jobs));   // Go's `default:`: never blocks;
//   if (r.index() == goro::select_default) ...     // nothing was ready
//
// Semantics are Go's: a case on a nil channel never fires; the same channel may
// appear in several cases (also a send and a receive on one channel); among
// the ready cases one is chosen uniformly at random; a select with no cases
// parks forever (wait reason `select (no cases)`); a chosen send on a closed
// channel throws goro::channel_closed. A send case that is not chosen keeps
// its value (it is neither delivered nor duplicated).
//
// ALGORITHM (after Go's runtime/select.go, with channel.hpp's lock-free paths first)
//   0. Draw a random poll order (a fresh permutation each time). Try the cases
//      in that order WITHOUT locks, each with its channel's lock-free path
//      (a buffered ring's send or receive, a closed channel, a timer that has
//      passed): the first that proceeds wins. A case the lock-free path cannot
//      judge (waiters parked, a position in flight, an unbuffered channel with
//      a waiter) ends this pass; the locked poll below then uses the same
//      order, so every ready case keeps the same chance (fairness). Only a
//      one-case try_select takes "nothing ready" from this pass: with several
//      cases the answers come from different moments. A blocking select
//      first tries, with no random draw, the order that puts the cases that
//      only look (nil, unbuffered, timer) first, when they are not ready and
//      one case at most is left (select_op::poll_fast_plain: recv-or-done).
//   1. Lock every distinct channel once, in increasing address order (the
//      lock order shared with every other select, so two selects never deadlock).
//   2. Poll the cases in the same order under the locks; the first that can
//      proceed does. None: announce the coming waiters to each buffered
//      case's channel (channel.hpp's PARKING HANDSHAKE: lock-free operations
//      from now on take the lock) and poll once more, to catch an operation
//      that went through lock-free before the announcement.
//   3. Still none: enqueue one waiter per channel case (in this frame: no allocation),
//      all sharing one select_core, and arm a timer_node for the earliest
//      `after` case; then unlock (channels in reverse order, so the lowest
//      address is released last; each clears the wait flags of its emptied
//      queues first). The first waker to flip the core's
//      `claimed` flag (a channel waker under its channel's lock, or the timer
//      thread) owns the wake-up; the others skip our waiters.
//   4. Woken: lock the other cases' channels again and unlink our remaining
//      waiters (the winner's was unlinked by its waker); if
//      the timer lost, cancel it, or wait for its callback's `fired_done`
//      (timer.hpp's CONTRACT) before the frame may go.
//
// THREAD SAFETY: the select's waiters and result slots are written by a waker
// under the channel's lock and read by the select after it is readied. While
// parked, the task is resumed at most once: only the claimer readies it. After
// the unlock that publishes the waiters, await_suspend reads only locals: a
// waker (or the timer) may already be resuming the task on another worker,
// which then waits for our remaining channel locks before it touches anything.
//
// LIFETIME: a channel case holds a handle to its channel (a reference: one
// atomic increment when the case is made, one decrement when the select is
// done), so a select parked on a channel whose every other handle is dropped
// meanwhile still finds it alive when it wakes (through another case) and
// unlinks its waiter. A context's done() case holds the context the same way.

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>


namespace goro {

/// select_result::index() of a try_select that found nothing ready (Go's `default:`).
inline constexpr int select_default = -1;

/// A receive case: `goro::recv(ch)`. Also awaitable on its own:
/// `co_await goro::recv(ch)` is `co_await ch.recv()`. `keep` is what keeps
/// `ch` alive while the case exists: a handle to the channel itself, or (for
/// a context's done()) to the context that owns it.
template <class T, class Keep = channel<T>>
struct [[nodiscard("goro::recv: co_await it or pass it to goro::select")]] recv_case {
    using is_goro_awaiter = void;
    detail::chan_state<T>* ch = nullptr;
    Keep keep{};
    detail::recv_op<T> operator co_await() const noexcept { return detail::recv_op<T>{ch}; }
};

/// A send case: `goro::send(ch, v)` holds the value until the select chooses
/// it; `keep` is what keeps the channel alive, as for recv_case. Also
/// awaitable on its own: `co_await goro::send(ch, v)` is `co_await ch.send(v)`.
template <class T, class Keep = channel<T>>
struct [[nodiscard("goro::send: co_await it or pass it to goro::select")]] send_case {
    using is_goro_awaiter = void;
    detail::chan_state<T>* ch = nullptr;
    T value;
    Keep keep{};
    detail::send_op<T> operator co_await() && noexcept { return {ch, std::move(value)}; }
};

/// A timeout case: fires once `when_ns` (monotonic) has passed (Go's `<-time.After(d)`).
struct [[nodiscard("goro::after: pass it to goro::select")]] after_case {
    std::int64_t when_ns = 0;
};

namespace detail {
/// What a case made from a channel variable keeps: the variable's address,
/// and no count (see recv).
template <class H>
struct borrowed {
    const H* handle = nullptr;
};
}  // namespace detail

/// A receive case (and a send case, below) on a channel variable borrows it,
/// as a std::string_view borrows a string: the variable must be alive when the select starts,
/// which it is when the case is written inside the select
/// (`co_await goro::select(goro::recv(ch), ...)`, the usual way). A select
/// that parks takes a count on the channel then, so a parked select keeps its
/// channels alive whatever happens to the variables meanwhile; a select that
/// finds a case ready, the common case in a busy loop, takes and drops none
/// (two locked instructions on the channel's line saved per select). A
/// select_case (select_dynamic.hpp), which is kept in containers, takes its
/// own handle from it.
template <class T>
recv_case<T, detail::borrowed<channel<T>>> recv(const channel<T>& ch) noexcept {
    return {ch.state(), {&ch}};
}

/// A receive case on a temporary channel keeps the channel alive.
template <class T>
recv_case<T> recv(channel<T>&& ch) noexcept {
    detail::chan_state<T>* s = ch.state();
    return {s, std::move(ch)};
}

/// A send case on a channel variable borrows it (see recv).
template <class T, class U>
    requires std::is_constructible_v<T, U&&>
send_case<T, detail::borrowed<channel<T>>> send(const channel<T>& ch, U&& v) {
    return {ch.state(), T(std::forward<U>(v)), {&ch}};
}

/// A send case on a temporary channel keeps the channel alive.
template <class T, class U>
    requires std::is_constructible_v<T, U&&>
send_case<T> send(channel<T>&& ch, U&& v) {
    detail::chan_state<T>* s = ch.state();
    return {s, T(std::forward<U>(v)), std::move(ch)};
}

/// `goro::send(ch, std::in_place, a, b)`: a send case of a T made from `a, b`
/// inside this call (channel<T>::send(std::in_place, ...) says why).
template <class T, class... Args>
    requires detail::makeable<T, Args...>
send_case<T, detail::borrowed<channel<T>>> send(const channel<T>& ch, std::in_place_t, Args&&... args) {
    return {ch.state(), detail::make_value<T>(std::forward<Args>(args)...), {&ch}};
}
template <class T, class... Args>
    requires detail::makeable<T, Args...>
send_case<T> send(channel<T>&& ch, std::in_place_t, Args&&... args) {
    detail::chan_state<T>* s = ch.state();
    return {s, detail::make_value<T>(std::forward<Args>(args)...), std::move(ch)};
}
template <class T, class... Args>
    requires detail::makeable<T, Args...>
send_case<T> send(const send_only<T>& ch, std::in_place_t, Args&&... args) {
    return {ch.state(), detail::make_value<T>(std::forward<Args>(args)...), detail::direction_access::handle(ch)};
}

/// A receive case on a receive-only view (a context's done(), say).
template <class T>
recv_case<T, recv_only<T>> recv(const recv_only<T>& ch) noexcept {
    return {ch.state(), ch};
}

/// A send case on a send-only view.
template <class T, class U>
    requires std::is_constructible_v<T, U&&>
send_case<T> send(const send_only<T>& ch, U&& v) {
    return {ch.state(), T(std::forward<U>(v)), detail::direction_access::handle(ch)};
}

template <class Rep, class Period>
after_case after(std::chrono::duration<Rep, Period> d) noexcept {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    return {detail::now_ns() + (ns > 0 ? std::int64_t(ns) : 0)};
}

/// A timeout case at a point in time (steady_clock).
inline after_case after_until(std::chrono::steady_clock::time_point t) noexcept {
    return {std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count()};
}

namespace detail {

enum class case_kind { recv, send, timer };

template <class C>
struct case_traits;

template <class T, class Keep>
struct case_traits<recv_case<T, Keep>> {
    static constexpr case_kind kind = case_kind::recv;
    using slot = std::optional<T>;
    using value_type = T;
};

template <class T, class Keep>
struct case_traits<send_case<T, Keep>> {
    static constexpr case_kind kind = case_kind::send;
    using slot = std::monostate;
};

template <>
struct case_traits<after_case> {
    static constexpr case_kind kind = case_kind::timer;
    using slot = std::monostate;
};

template <class C>
using case_t = std::remove_cvref_t<C>;

/// A case that borrows its channel (see recv): counted only while parked.
template <class C>
struct borrows_channel : std::false_type {};
template <class T, class H>
struct borrows_channel<recv_case<T, borrowed<H>>> : std::true_type {};
template <class T, class H>
struct borrows_channel<send_case<T, borrowed<H>>> : std::true_type {};

template <class C>
struct is_recv_only : std::false_type {};
template <class T>
struct is_recv_only<recv_only<T>> : std::true_type {};

/// A select argument as a case: a receive-only view (ctx.done()) becomes its
/// receive case; a case is itself.
template <class C>
auto as_case(C&& c) {
    if constexpr (is_recv_only<case_t<C>>::value) {
        using T = typename case_t<C>::value_type;
        auto* s = c.state();
        // Moved when it can be (ctx.done() is a temporary): no count taken and dropped.
        return recv_case<T, recv_only<T>>{s, case_t<C>(std::forward<C>(c))};
    } else {
        return case_t<C>(std::forward<C>(c));
    }
}
/// Accepted as a select argument: a case, or a receive-only view.
template <class C>
concept select_arg = is_recv_only<case_t<C>>::value || requires { case_traits<case_t<C>>::kind; };

/// The case type of a select argument; void for anything else, so that a
/// select over what is no case (a std::vector<select_case>&, say) is dropped
/// by its requires-clause instead of failing inside as_case.
template <class C, bool = select_arg<C>>
struct case_of {
    using type = void;
};
template <class C>
struct case_of<C, true> {
    using type = decltype(as_case(std::declval<C>()));
};
template <class C>
using case_of_t = typename case_of<C>::type;

/// A per-thread xorshift generator for the poll order: cheap, and different
/// on every worker.
GORO_DECL std::uint32_t select_rand() noexcept;

/// The timer of a blocking select's `after` case.
struct select_timer : timer_node {
    select_core* core = nullptr;
    int case_index = -1;

    select_timer() = default;
    select_timer(const select_timer&) noexcept : timer_node() {}

    static void on_fire(timer_node* n) noexcept;
};

struct no_timer {
    no_timer() = default;
};

template <bool Blocking, class... Cases>
class select_op;

}  // namespace detail

/// What a select chose: index() and, for a receive case, what it received.
template <class... Cases>
class select_result {
public:
    /// The chosen case (0-based, in argument order), or select_default.
    int index() const noexcept { return index_; }

    /// The received value of receive case I: nullopt when the channel was
    /// closed (or the case was not chosen).
    template <std::size_t I>
    auto& get() & noexcept {
        static_assert(is_recv<I>, "goro::select_result::get<I>: case I is not a receive case");
        return std::get<I>(slots_);
    }
    template <std::size_t I>
    const auto& get() const& noexcept {
        static_assert(is_recv<I>, "goro::select_result::get<I>: case I is not a receive case");
        return std::get<I>(slots_);
    }
    template <std::size_t I>
    auto&& get() && noexcept {
        static_assert(is_recv<I>, "goro::select_result::get<I>: case I is not a receive case");
        return std::move(std::get<I>(slots_));
    }

    /// The value receive case I received; throws goro::usage_error when it
    /// received none (another case fired, or the channel was closed).
    template <std::size_t I>
    auto& value() {
        auto& s = get<I>();
        if (!s)
            throw usage_error("goro::select_result::value<" + std::to_string(I) + ">: case " + std::to_string(I) +
                              (index_ == int(I) ? " found its channel closed" : " was not chosen"));
        return *s;
    }

private:
    template <bool, class...>
    friend class detail::select_op;
    template <std::size_t I>
    static constexpr bool is_recv = detail::case_traits<std::tuple_element_t<I, std::tuple<Cases...>>>::kind ==
                                    detail::case_kind::recv;

    int index_ = select_default;
    std::tuple<typename detail::case_traits<Cases>::slot...> slots_{};
};

namespace detail {

template <bool Blocking, class... Cases>
class [[nodiscard("goro::select: co_await it")]] select_op {
public:
    using is_goro_awaiter = void;

private:
    static constexpr std::size_t N = sizeof...(Cases);
    static_assert(N < 256, "goro::select: too many cases");
    static constexpr std::size_t NS = N ? N : 1;
    static constexpr std::size_t timers = ((case_traits<Cases>::kind == case_kind::timer ? 1 : 0) + ... + 0);
    using timer_type = std::conditional_t<(Blocking && timers > 0), select_timer, no_timer>;

public:
    using result_type = select_result<Cases...>;

    explicit select_op(Cases&&... cs) : cases_(std::move(cs)...) {}
    explicit select_op(std::tuple<Cases...>&& cs) : cases_(std::move(cs)) {}
    select_op(select_op&& o) noexcept(std::is_nothrow_move_constructible_v<std::tuple<Cases...>>)
        : cases_(std::move(o.cases_)) {}
    select_op& operator=(select_op&&) = delete;

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::select");
        if constexpr (N == 0) {
            park(self, h, wait_reason::select_no_cases);  // never published: parks forever
            return true;
        } else {
            std::int64_t now = 0;
            if constexpr (timers > 0) now = now_ns();
            const int plain = poll_fast_plain(now);
            if (plain >= 0) return false;
            unsigned char order[NS];
            shuffle(order);
            if (plain == fast_random && poll_fast(order, now) >= 0) return false;
            chan_base* locks[NS];
            std::size_t nl = lock_order(locks);
            lock_all(locks, nl);
            wake_list wakes;
            bool fired = poll_locked(order, now, wakes);
            if (!fired) {
                announce_all();
                fired = poll_locked(order, now, wakes);  // the second look (channel.hpp's PARKING HANDSHAKE)
            }
            if (fired) {
                unlock_all(locks, nl);
                wakes.ready_all();
                return false;
            }
            hold_borrowed();  // before park: a parked select is seen with its counts
            park(self, h, wait_reason::select);
            parked_ = true;
            core_.task = self;
            enqueue_all(order);  // its waiters find `self` in core_
            if constexpr (!std::is_same_v<timer_type, no_timer>) arm_timer();
            // Published. From here on only locals: `this` may be resumed elsewhere.
            unlock_all(locks, nl);
            wakes.ready_all();  // senders a refill moved into a ring (locals only)
            return true;
        }
    }

    result_type await_resume() {
        if (parked_) {
            // The winner's waiter was unlinked by its waker: only the channels
            // of the other cases need their locks (often not the busiest one).
            const int w = core_.winner;
            chan_base* locks[NS];
            std::size_t nl = lock_order(locks, w);
            lock_all(locks, nl);
            dequeue_losers(w);
            unlock_all(locks, nl);
            if constexpr (!std::is_same_v<timer_type, no_timer>) {
                if (w != timer_.case_index && !the_scheduler().timers().cancel(&timer_))
                    while (!timer_.fired_done.load(std::memory_order_acquire)) cpu_relax();
            }
            result_.index_ = w;
            finish_parked(w);
            drop_borrowed();
        }
        if (send_closed_) throw channel_closed("goro::select: send on closed channel");
        return std::move(result_);
    }

    /// The non-blocking form: the lock-free poll, then one poll under the locks.
    result_type poll_now() {
        if constexpr (N > 0) {
            unsigned char order[NS];
            shuffle(order);
            std::int64_t now = 0;
            if constexpr (timers > 0) now = now_ns();
            int f = poll_fast(order, now);
            // "Nothing ready" seen case by case without the locks is not one
            // moment's view when there are several cases: then the locks decide.
            if (f == fast_none && N == 1) {
                result_.index_ = select_default;
            } else if (f < 0) {
                chan_base* locks[NS];
                std::size_t nl = lock_order(locks);
                lock_all(locks, nl);
                wake_list wakes;
                if (!poll_locked(order, now, wakes)) result_.index_ = select_default;
                unlock_all(locks, nl);
                wakes.ready_all();
            }
        }
        if (send_closed_) throw channel_closed("goro::select: send on closed channel");
        return std::move(result_);
    }

private:
    template <std::size_t I>
    using case_at = std::tuple_element_t<I, std::tuple<Cases...>>;

    /// A count on each borrowed channel while the select is parked (see recv).
    void hold_borrowed() noexcept {
        for_each_case([&](auto I) {
            if constexpr (borrows_channel<case_at<I>>::value)
                if (auto* c = std::get<I>(cases_).ch) c->add_ref();
        });
    }
    void drop_borrowed() noexcept {
        for_each_case([&](auto I) {
            if constexpr (borrows_channel<case_at<I>>::value)
                if (auto* c = std::get<I>(cases_).ch) c->release();
        });
    }

    template <class F, std::size_t... I>
    static void for_each_index(F&& f, std::index_sequence<I...>) {
        (f(std::integral_constant<std::size_t, I>{}), ...);
    }
    template <class F>
    static void for_each_case(F&& f) {
        for_each_index(f, std::index_sequence_for<Cases...>{});
    }
    template <class F>
    static void visit(std::size_t i, F&& f) {
        for_each_case([&](auto I) {
            if (i == I) f(I);
        });
    }

    template <std::size_t I>
    chan_base* chan_of() const noexcept {
        if constexpr (case_traits<case_at<I>>::kind == case_kind::timer) return nullptr;
        else return std::get<I>(cases_).ch;
    }

    /// The distinct non-nil channels of every case but `skip`, sorted by address.
    std::size_t lock_order(chan_base** locks, int skip = -1) const noexcept {
        std::size_t n = 0;
        for_each_case([&](auto I) {
            chan_base* c = chan_of<I>();
            if (!c || int(I) == skip) return;
            std::size_t k = n;
            while (k > 0 && locks[k - 1] > c) --k;
            if (k > 0 && locks[k - 1] == c) return;  // already listed
            for (std::size_t j = n; j > k; --j) locks[j] = locks[j - 1];
            locks[k] = c;
            ++n;
        });
        return n;
    }

    static void lock_all(chan_base** locks, std::size_t n) noexcept {
        for (std::size_t i = 0; i < n; ++i) locks[i]->lock.lock();
    }
    /// Clears the wait flags of emptied queues (channel.hpp), then unlocks.
    static void unlock_all(chan_base** locks, std::size_t n) noexcept {
        for (std::size_t i = n; i > 0; --i) locks[i - 1]->unlock_synced();
    }

    /// A fresh random poll order (Fisher-Yates, built inside out).
    static void shuffle(unsigned char* order) noexcept {
        for (std::size_t i = 0; i < N; ++i) {
            std::size_t j = std::size_t((std::uint64_t(select_rand()) * (i + 1)) >> 32);
            order[i] = order[j];
            order[j] = static_cast<unsigned char>(i);
        }
    }

    static constexpr int fast_none = -1;    // every case would block (case by case)
    static constexpr int fast_locked = -2;  // a case needs the locks to tell
    static constexpr int fast_random = -3;  // poll_fast_plain: the random order must decide

    /// No locks. The lock-free pass without a random order, where the order
    /// cannot change the answer. Some cases' lock-free poll only looks and
    /// takes nothing: a nil channel, an unbuffered one (closed? anyone
    /// parked?), a timer. When each of those is looked at here, in argument
    /// order, and is not ready, and at most one other case is left (a
    /// buffered channel's ring), that one is polled alone. Every answer this
    /// gives is the one poll_fast gives with the looking cases first in the
    /// order, so it is as fair; and it draws no random number and branches on
    /// none (a select in a loop, such as recv-or-done, predicts every branch).
    /// A looking case that is ready (or needs the locks), or two cases that
    /// take: fast_random, and poll_fast decides in a random order.
    int poll_fast_plain(std::int64_t now) noexcept {
        int taker = -1;
        bool plain = true;
        for_each_case([&](auto I) {
            constexpr case_kind kind = case_traits<case_at<I>>::kind;
            auto& cs = std::get<I>(cases_);
            if (!plain) return;
            if constexpr (kind == case_kind::timer) {
                if (now >= cs.when_ns) plain = false;
            } else {
                if (!cs.ch) return;  // nil: never ready
                if (cs.ch->cap == 0) {
                    // What recv_fast / send_fast look at for an unbuffered
                    // channel (and all they do): closed fires, a parked peer
                    // needs the locks.
                    const bool empty = kind == case_kind::recv ? cs.ch->sendq.empty() : cs.ch->recvq.empty();
                    if (cs.ch->is_closed() || !empty) plain = false;
                } else if (taker >= 0) {
                    plain = false;
                } else {
                    taker = int(I);
                }
            }
        });
        if (!plain) return fast_random;
        if (taker < 0) return fast_none;
        fast_result f = fast_result::not_ready;
        visit(std::size_t(taker), [&](auto I) { f = fast_one<I>(now); });
        if (f == fast_result::done || f == fast_result::closed) {
            result_.index_ = taker;
            return taker;
        }
        return f == fast_result::locked ? fast_locked : fast_none;
    }

    /// No locks. Tries the cases in `order` with the channels' lock-free
    /// paths; stops at the first case that only the locks can tell about (so
    /// the locked poll, in the same order, gives it the same chance: fair).
    /// Returns the case that fired (recorded in result_), else fast_none or
    /// fast_locked.
    int poll_fast(const unsigned char* order, std::int64_t now) noexcept {
        for (std::size_t k = 0; k < N; ++k) {
            fast_result f = fast_result::not_ready;
            visit(order[k], [&](auto I) { f = fast_one<I>(now); });
            if (f == fast_result::done || f == fast_result::closed) {
                result_.index_ = order[k];
                return order[k];
            }
            if (f == fast_result::locked) return fast_locked;
        }
        return fast_none;
    }

    template <std::size_t I>
    fast_result fast_one(std::int64_t now) noexcept {
        constexpr case_kind kind = case_traits<case_at<I>>::kind;
        auto& cs = std::get<I>(cases_);
        if constexpr (kind == case_kind::timer) {
            return now >= cs.when_ns ? fast_result::done : fast_result::not_ready;
        } else if constexpr (kind == case_kind::recv) {
            if (!cs.ch) return fast_result::not_ready;
            fast_result f = cs.ch->recv_fast(std::get<I>(result_.slots_));  // closed: fires with nullopt
            return f == fast_result::done_contended ? fast_result::done : f;
        } else {
            if (!cs.ch) return fast_result::not_ready;
            fast_result f = cs.ch->send_fast(cs.value);
            if (f == fast_result::done_contended) f = fast_result::done;
            if (f == fast_result::closed) send_closed_ = true;
            return f;
        }
    }

    /// Channels locked. Tries the cases in `order`; when one proceeds, records
    /// it and returns true (the caller unlocks, then readies `wakes`).
    bool poll_locked(const unsigned char* order, std::int64_t now, wake_list& wakes) noexcept {
        for (std::size_t k = 0; k < N; ++k) {
            bool fired = false;
            visit(order[k], [&](auto I) { fired = poll_one<I>(wakes, now); });
            if (fired) {
                result_.index_ = order[k];
                return true;
            }
        }
        return false;
    }

    template <std::size_t I>
    bool poll_one(wake_list& wakes, std::int64_t now) noexcept {
        constexpr case_kind kind = case_traits<case_at<I>>::kind;
        auto& cs = std::get<I>(cases_);
        if constexpr (kind == case_kind::timer) {
            return now >= cs.when_ns;
        } else if constexpr (kind == case_kind::recv) {
            if (!cs.ch) return false;
            // closed: fires with nullopt
            return cs.ch->recv_locked(std::get<I>(result_.slots_), wakes) != recv_status::empty;
        } else {
            if (!cs.ch) return false;
            auto r = cs.ch->send_locked(cs.value, wakes);
            if (r == send_status::full) return false;
            if (r == send_status::closed) send_closed_ = true;
            return true;
        }
    }

    /// Channels locked, nothing ready: each buffered case's channel learns that
    /// a waiter is coming (before the second poll).
    void announce_all() noexcept {
        for_each_case([&](auto I) {
            constexpr case_kind kind = case_traits<case_at<I>>::kind;
            if constexpr (kind != case_kind::timer) {
                auto& cs = std::get<I>(cases_);
                if (!cs.ch) return;
                if constexpr (kind == case_kind::recv) cs.ch->announce_recv_wait();
                else cs.ch->announce_send_wait();
            }
        });
    }

    /// Links one waiter per channel case, in the random poll order: among the
    /// cases on one channel, the first linked is the first a waker takes, so
    /// each gets the same chance (Go's "permute cases on the same channel").
    /// All locks are held: the linking order cannot deadlock anything.
    void enqueue_all(const unsigned char* order) noexcept {
        for (std::size_t k = 0; k < N; ++k) visit(order[k], [&](auto I) {
            constexpr case_kind kind = case_traits<case_at<I>>::kind;
            if constexpr (kind != case_kind::timer) {
                auto& cs = std::get<I>(cases_);
                if (!cs.ch) return;
                chan_waiter& w = nodes_[I];
                w.set_select(&core_, int(I));
                w.success = false;
                if constexpr (kind == case_kind::recv) {
                    w.elem = &std::get<I>(result_.slots_);
                    cs.ch->recvq.push(&w);
                } else {
                    w.elem = &cs.value;
                    cs.ch->sendq.push(&w);
                }
            }
        });
    }

    void arm_timer() {
        if constexpr (!std::is_same_v<timer_type, no_timer>) {
            timer_.core = &core_;
            timer_.fire = &select_timer::on_fire;
            bool first = true;
            for_each_case([&](auto I) {
                if constexpr (case_traits<case_at<I>>::kind == case_kind::timer) {
                    std::int64_t when = std::get<I>(cases_).when_ns;
                    if (first || when < timer_.when_ns) {
                        timer_.when_ns = when;
                        timer_.case_index = int(I);
                        first = false;
                    }
                }
            });
            the_scheduler().timers().add(&timer_);
        }
    }

    /// Channels locked, after the wake-up: unlink the waiters nobody took.
    void dequeue_losers(int winner) noexcept {
        for_each_case([&](auto I) {
            constexpr case_kind kind = case_traits<case_at<I>>::kind;
            if constexpr (kind != case_kind::timer) {
                auto& cs = std::get<I>(cases_);
                if (!cs.ch || int(I) == winner) return;
                if constexpr (kind == case_kind::recv) cs.ch->recvq.remove(&nodes_[I]);
                else cs.ch->sendq.remove(&nodes_[I]);
            }
        });
    }

    void finish_parked(int winner) noexcept {
        visit(std::size_t(winner), [&](auto I) {
            if constexpr (case_traits<case_at<I>>::kind == case_kind::send)
                if (!nodes_[I].success) send_closed_ = true;  // woken by close
            // A receive case: the sender filled the slot, or close left it empty.
        });
    }

    std::tuple<Cases...> cases_;
    result_type result_{};
    chan_waiter nodes_[NS]{};
    select_core core_{};
    [[no_unique_address]] timer_type timer_{};
    bool parked_ = false;
    bool send_closed_ = false;
};

}  // namespace detail

/// Select cases evaluated in source order: `goro::select(goro::cases{a, b, c})`.
/// The arguments of a function call (`goro::select(a, b, c)`) are evaluated
/// in an unspecified order (g++: right to left, clang++: left to right); the
/// elements of a braced list are evaluated left to right, always, as Go
/// evaluates its cases. (Within one case, `goro::send(ch, f())`, the channel
/// and the value are still function arguments.)
template <class... Cs>
struct cases {
    std::tuple<Cs...> list;

    template <class... As>
        requires(sizeof...(As) == sizeof...(Cs) && (detail::select_arg<As> && ...))
    cases(As&&... as) : list(detail::as_case(std::forward<As>(as))...) {}
};
template <class... As>
cases(As&&...) -> cases<detail::case_of_t<As>...>;

/// Waits until one of the cases can proceed and performs it (Go's select).
template <class... Cases>
    requires(detail::select_arg<Cases> && ...)
[[nodiscard("goro::select: co_await it")]] detail::select_op<true, detail::case_of_t<Cases>...> select(Cases&&... cases) {
    return detail::select_op<true, detail::case_of_t<Cases>...>(detail::as_case(std::forward<Cases>(cases))...);
}

/// As select(a, b, ...), with the cases evaluated in source order.
template <class... Cs>
[[nodiscard("goro::select: co_await it")]] detail::select_op<true, Cs...> select(cases<Cs...>&& cs) {
    return detail::select_op<true, Cs...>(std::move(cs.list));
}

/// Performs one ready case, or none (index() == goro::select_default): Go's
/// select with a `default:` case. Never blocks; callable from any thread.
template <class... Cases>
    requires(detail::select_arg<Cases> && ...)
select_result<detail::case_of_t<Cases>...> try_select(Cases&&... cases) {
    detail::select_op<false, detail::case_of_t<Cases>...> op(detail::as_case(std::forward<Cases>(cases))...);
    return op.poll_now();
}

/// As try_select(a, b, ...), with the cases evaluated in source order.
template <class... Cs>
select_result<Cs...> try_select(cases<Cs...>&& cs) {
    detail::select_op<false, Cs...> op(std::move(cs.list));
    return op.poll_now();
}

}  // namespace goro

#if GORO_BODIES

namespace goro::detail {

GORO_DECL std::uint32_t select_rand() noexcept {
    static thread_local std::uint64_t s = 0;
    if (s == 0) s = ((reinterpret_cast<std::uintptr_t>(&s) * 0x9E3779B97F4A7C15ull) ^ std::uint64_t(now_ns())) | 1;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<std::uint32_t>(s >> 32);
}

GORO_DECL void select_timer::on_fire(timer_node* n) noexcept {
    auto* t = static_cast<select_timer*>(n);
    select_core* c = t->core;
    if (c->try_claim(t->case_index)) {
        ready(c->task);  // last access: the select may resume and free us from here on
        return;
    }
    t->fired_done.store(true, std::memory_order_release);  // last access (CONTRACT)
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/sync/select.hpp ----

// ---- begin goro/sync/select_dynamic.hpp ----
// goro/sync/select_dynamic.hpp — a select over a number of cases known only at
// run time (Go's reflect.Select).
//
//   std::vector<goro::select_case> cases;
//   for (auto& ch : inputs) cases.push_back(goro::recv(ch));   // any element types
//   cases.push_back(ctx.done());
//   cases.push_back(goro::after(1s));
//   int i = co_await goro::select(cases);          // a std::span<goro::select_case>
//   if (auto& v = cases[i].received<int>()) ...    // what receive case i received
//   int j = goro::try_select(cases);               // goro::select_default: nothing ready
//
// The same semantics as goro::select (select.hpp): a nil case never fires, a
// channel may appear in several cases, the ready case is chosen uniformly at
// random (a fresh random poll order each time, also for the order in which a
// parked select's waiters are linked, so that several cases on one channel
// each get their turn), a chosen send on a closed channel throws
// goro::channel_closed, a send case that is not chosen keeps its value. An
// empty list parks forever (`select (no cases)`), as reflect.Select does.
//
// A select_case is type-erased: it owns its case (and the value of a send)
// in one allocation, made when the case is made; a select over the list
// allocates only its poll order and lock list, and none when there are at
// most 16 cases. The parked waiter of each case lives in the select_case, so
// a list is used by one select at a time, and must not be resized while a
// select over it is in progress. A case may be reused by the next select (a
// send case that fired has given its value away: its value is moved-from).
//
// ALGORITHM: select.hpp's, step by step, with the cases in a list instead of a
// tuple: the lock-free poll in a random order, the channels locked once each
// in address order, the locked poll in the same order, the announcement and
// the second look, the waiters linked in the poll order, the earliest `after`
// case armed as a timer, and after the wake-up the losers unlinked under the
// locks of their channels.

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>


namespace goro {

class select_case;

namespace detail {

template <class T>
inline const char dyn_type_tag = 0;

/// What a select_case can do with its erased case (`box`).
struct dyn_case_ops {
    fast_result (*fast)(void* box, bool& send_closed) noexcept;
    bool (*locked)(void* box, wake_list& wakes, bool& send_closed) noexcept;
    void (*announce)(void* box) noexcept;
    void (*link)(void* box, chan_waiter& w) noexcept;
    void (*unlink)(void* box, chan_waiter& w) noexcept;
    void (*reset)(void* box) noexcept;
    void (*destroy)(void* box) noexcept;
    void* (*slot)(void* box) noexcept;  // receive: its std::optional<T>
    const void* type;                   // receive: &dyn_type_tag<T>
};

template <class T, class Keep>
struct dyn_recv_box {
    recv_case<T, Keep> c;
    std::optional<T> slot{};

    static fast_result fast(void* b, bool&) noexcept {
        auto* x = static_cast<dyn_recv_box*>(b);
        if (!x->c.ch) return fast_result::not_ready;
        fast_result f = x->c.ch->recv_fast(x->slot);  // closed: fires with nullopt
        return f == fast_result::done_contended ? fast_result::done : f;
    }
    static bool locked(void* b, wake_list& wakes, bool&) noexcept {
        auto* x = static_cast<dyn_recv_box*>(b);
        return x->c.ch && x->c.ch->recv_locked(x->slot, wakes) != recv_status::empty;
    }
    static void announce(void* b) noexcept { static_cast<dyn_recv_box*>(b)->c.ch->announce_recv_wait(); }
    static void link(void* b, chan_waiter& w) noexcept {
        auto* x = static_cast<dyn_recv_box*>(b);
        w.elem = &x->slot;
        x->c.ch->recvq.push(&w);
    }
    static void unlink(void* b, chan_waiter& w) noexcept { static_cast<dyn_recv_box*>(b)->c.ch->recvq.remove(&w); }
    static void reset(void* b) noexcept { static_cast<dyn_recv_box*>(b)->slot.reset(); }
    static void destroy(void* b) noexcept { delete static_cast<dyn_recv_box*>(b); }
    static void* slot_of(void* b) noexcept { return &static_cast<dyn_recv_box*>(b)->slot; }

    static constexpr dyn_case_ops ops{&fast, &locked, &announce, &link, &unlink, &reset, &destroy, &slot_of,
                                      &dyn_type_tag<T>};
};

template <class T>
struct dyn_send_box {
    send_case<T> c;

    static fast_result fast(void* b, bool& send_closed) noexcept {
        auto* x = static_cast<dyn_send_box*>(b);
        if (!x->c.ch) return fast_result::not_ready;
        fast_result f = x->c.ch->send_fast(x->c.value);
        if (f == fast_result::done_contended) f = fast_result::done;
        if (f == fast_result::closed) send_closed = true;
        return f;
    }
    static bool locked(void* b, wake_list& wakes, bool& send_closed) noexcept {
        auto* x = static_cast<dyn_send_box*>(b);
        if (!x->c.ch) return false;
        auto r = x->c.ch->send_locked(x->c.value, wakes);
        if (r == send_status::full) return false;
        if (r == send_status::closed) send_closed = true;
        return true;
    }
    static void announce(void* b) noexcept { static_cast<dyn_send_box*>(b)->c.ch->announce_send_wait(); }
    static void link(void* b, chan_waiter& w) noexcept {
        auto* x = static_cast<dyn_send_box*>(b);
        w.elem = &x->c.value;
        x->c.ch->sendq.push(&w);
    }
    static void unlink(void* b, chan_waiter& w) noexcept { static_cast<dyn_send_box*>(b)->c.ch->sendq.remove(&w); }
    static void reset(void*) noexcept {}
    static void destroy(void* b) noexcept { delete static_cast<dyn_send_box*>(b); }
    static void* slot_of(void*) noexcept { return nullptr; }

    static constexpr dyn_case_ops ops{&fast, &locked, &announce, &link, &unlink, &reset, &destroy, &slot_of, nullptr};
};

template <bool Blocking>
class dyn_select_op;

}  // namespace detail

/// One case of a dynamic select: made from goro::recv(ch), goro::send(ch, v),
/// a receive-only view (ctx.done()), goro::after(d), or default-constructed
/// (a case that never fires, like one on a nil channel). Move-only.
class select_case {
public:
    select_case() noexcept = default;

    template <class T, class Keep>
    select_case(recv_case<T, Keep> c)
        : kind_(kind::recv), ops_(&detail::dyn_recv_box<T, Keep>::ops), ch_(c.ch),
          box_(new detail::dyn_recv_box<T, Keep>{std::move(c)}) {}
    /// From a case that borrows a channel variable: takes a handle of its
    /// own, since a select_case may outlive the variable.
    template <class T>
    select_case(recv_case<T, detail::borrowed<channel<T>>> c) : select_case(recv_case<T>{c.ch, *c.keep.handle}) {}
    template <class T>
    select_case(const recv_only<T>& r) : select_case(goro::recv(r)) {}
    template <class T>
    select_case(send_case<T> c)
        : kind_(kind::send), ops_(&detail::dyn_send_box<T>::ops), ch_(c.ch),
          box_(new detail::dyn_send_box<T>{std::move(c)}) {}
    /// From a send case that borrows a channel variable: a handle of its own, as above.
    template <class T>
    select_case(send_case<T, detail::borrowed<channel<T>>> c)
        : select_case(send_case<T>{c.ch, std::move(c.value), *c.keep.handle}) {}
    select_case(after_case a) noexcept : kind_(kind::timer), when_ns_(a.when_ns) {}

    select_case(select_case&& o) noexcept
        : kind_(o.kind_), ops_(o.ops_), ch_(o.ch_), box_(std::exchange(o.box_, nullptr)), when_ns_(o.when_ns_) {
        o.kind_ = kind::none;
        o.ch_ = nullptr;
    }
    select_case& operator=(select_case&& o) noexcept;
    select_case(const select_case&) = delete;
    select_case& operator=(const select_case&) = delete;
    ~select_case() {
        if (box_) ops_->destroy(box_);
    }

    bool is_recv() const noexcept { return kind_ == kind::recv; }
    bool is_send() const noexcept { return kind_ == kind::send; }
    bool is_after() const noexcept { return kind_ == kind::timer; }

    /// What this receive case received in the last select over it: nullopt
    /// when its channel was closed, or when another case was chosen. Throws
    /// goro::usage_error when this is not a receive case of element type T.
    template <class T>
    std::optional<T>& received() {
        if (kind_ != kind::recv || ops_->type != &detail::dyn_type_tag<T>)
            throw usage_error(std::string("goro::select_case::received: ") +
                              (kind_ == kind::recv ? "the element type is not the channel's"
                                                   : "not a receive case"));
        return *static_cast<std::optional<T>*>(ops_->slot(box_));
    }

private:
    template <bool>
    friend class detail::dyn_select_op;
    enum class kind : unsigned char { none, recv, send, timer };

    kind kind_ = kind::none;
    const detail::dyn_case_ops* ops_ = nullptr;
    detail::chan_base* ch_ = nullptr;  // null: nil channel, timer, or none
    void* box_ = nullptr;
    std::int64_t when_ns_ = 0;
    detail::chan_waiter node_{};
};

namespace detail {

/// A few entries inline, more on the heap (a select's poll order and lock list).
template <class T, std::size_t Inline = 16>
class small_buf {
public:
    explicit small_buf(std::size_t n) : p_(n <= Inline ? inline_ : (heap_.resize(n), heap_.data())) {}
    small_buf(const small_buf&) = delete;
    small_buf& operator=(const small_buf&) = delete;
    T& operator[](std::size_t i) noexcept { return p_[i]; }
    T* data() noexcept { return p_; }

private:
    T inline_[Inline]{};
    std::vector<T> heap_;
    T* p_;
};

template <bool Blocking>
class [[nodiscard("goro::select: co_await it")]] dyn_select_op {
public:
    using is_goro_awaiter = void;

    explicit dyn_select_op(std::span<select_case> cs) noexcept : cs_(cs) {}
    dyn_select_op(dyn_select_op&& o) noexcept : cs_(o.cs_) {}
    dyn_select_op& operator=(dyn_select_op&&) = delete;

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::select (dynamic)");
        const std::size_t n = cs_.size();
        if (n == 0) {
            park(self, h, wait_reason::select_no_cases);  // never published: parks forever
            return true;
        }
        prepare();
        small_buf<std::uint32_t> order(n);
        shuffle(order.data());
        const std::int64_t now = timers_ ? now_ns() : 0;
        if (poll_fast(order.data(), now) >= 0) return false;
        small_buf<chan_base*> locks(n);
        std::size_t nl = lock_order(locks.data());
        lock_all(locks.data(), nl);
        wake_list wakes;
        bool fired = poll_locked(order.data(), now, wakes);
        if (!fired) {
            for (select_case& c : cs_)
                if (c.ch_) c.ops_->announce(c.box_);
            fired = poll_locked(order.data(), now, wakes);  // the second look (channel.hpp's PARKING HANDSHAKE)
        }
        if (fired) {
            unlock_all(locks.data(), nl);
            wakes.ready_all();
            return false;
        }
        park(self, h, wait_reason::select);
        parked_ = true;
        core_.task = self;
        // The waiters, in the poll order (see select.hpp's enqueue_all).
        for (std::size_t k = 0; k < n; ++k) {
            select_case& c = cs_[order[k]];
            if (!c.ch_) continue;
            c.node_.set_select(&core_, int(order[k]));
            c.node_.success = false;
            c.ops_->link(c.box_, c.node_);
        }
        if (timers_) arm_timer();
        // Published. From here on only locals: `this` may be resumed elsewhere.
        unlock_all(locks.data(), nl);
        wakes.ready_all();
        return true;
    }

    int await_resume() {
        if (parked_) {
            const int w = core_.winner;
            small_buf<chan_base*> locks(cs_.size());
            std::size_t nl = lock_order(locks.data(), w);
            lock_all(locks.data(), nl);
            for (std::size_t i = 0; i < cs_.size(); ++i)
                if (int(i) != w && cs_[i].ch_) cs_[i].ops_->unlink(cs_[i].box_, cs_[i].node_);
            unlock_all(locks.data(), nl);
            if (timers_ && w != timer_.case_index && !the_scheduler().timers().cancel(&timer_))
                while (!timer_.fired_done.load(std::memory_order_acquire)) cpu_relax();
            index_ = w;
            if (cs_[std::size_t(w)].kind_ == select_case::kind::send && !cs_[std::size_t(w)].node_.success)
                send_closed_ = true;  // woken by close
        }
        if (send_closed_) throw channel_closed("goro::select: send on closed channel");
        return index_;
    }

    /// The non-blocking form, as select_op::poll_now.
    int poll_now() {
        const std::size_t n = cs_.size();
        if (n > 0) {
            prepare();
            small_buf<std::uint32_t> order(n);
            shuffle(order.data());
            const std::int64_t now = timers_ ? now_ns() : 0;
            int f = poll_fast(order.data(), now);
            if (f == fast_none && n == 1) {
                index_ = select_default;
            } else if (f < 0) {
                small_buf<chan_base*> locks(n);
                std::size_t nl = lock_order(locks.data());
                lock_all(locks.data(), nl);
                wake_list wakes;
                if (!poll_locked(order.data(), now, wakes)) index_ = select_default;
                unlock_all(locks.data(), nl);
                wakes.ready_all();
            }
        }
        if (send_closed_) throw channel_closed("goro::select: send on closed channel");
        return index_;
    }

private:
    static constexpr int fast_none = -1;
    static constexpr int fast_locked = -2;

    /// Forgets what the last select over these cases received; counts the timers.
    void prepare() noexcept {
        for (select_case& c : cs_) {
            if (c.box_) c.ops_->reset(c.box_);
            if (c.kind_ == select_case::kind::timer) timers_ = true;
        }
    }

    void shuffle(std::uint32_t* order) const noexcept {
        for (std::size_t i = 0; i < cs_.size(); ++i) {
            std::size_t j = std::size_t((std::uint64_t(select_rand()) * (i + 1)) >> 32);
            order[i] = order[j];
            order[j] = std::uint32_t(i);
        }
    }

    int poll_fast(const std::uint32_t* order, std::int64_t now) noexcept {
        for (std::size_t k = 0; k < cs_.size(); ++k) {
            select_case& c = cs_[order[k]];
            fast_result f = fast_result::not_ready;
            if (c.kind_ == select_case::kind::timer) f = now >= c.when_ns_ ? fast_result::done : fast_result::not_ready;
            else if (c.box_) f = c.ops_->fast(c.box_, send_closed_);
            if (f == fast_result::done || f == fast_result::closed) {
                index_ = int(order[k]);
                return index_;
            }
            if (f == fast_result::locked) return fast_locked;
        }
        return fast_none;
    }

    bool poll_locked(const std::uint32_t* order, std::int64_t now, wake_list& wakes) noexcept {
        for (std::size_t k = 0; k < cs_.size(); ++k) {
            select_case& c = cs_[order[k]];
            bool fired = false;
            if (c.kind_ == select_case::kind::timer) fired = now >= c.when_ns_;
            else if (c.ch_) fired = c.ops_->locked(c.box_, wakes, send_closed_);
            if (fired) {
                index_ = int(order[k]);
                return true;
            }
        }
        return false;
    }

    /// The distinct non-nil channels of every case but `skip`, sorted by address.
    std::size_t lock_order(chan_base** locks, int skip = -1) const noexcept {
        std::size_t n = 0;
        for (std::size_t i = 0; i < cs_.size(); ++i)
            if (cs_[i].ch_ && int(i) != skip) locks[n++] = cs_[i].ch_;
        detail::heap_sort(locks, locks + n, [](chan_base* a, chan_base* b) { return a < b; });
        std::size_t distinct = 0;
        for (std::size_t i = 0; i < n; ++i)
            if (distinct == 0 || locks[distinct - 1] != locks[i]) locks[distinct++] = locks[i];
        return distinct;
    }
    static void lock_all(chan_base** locks, std::size_t n) noexcept {
        for (std::size_t i = 0; i < n; ++i) locks[i]->lock.lock();
    }
    static void unlock_all(chan_base** locks, std::size_t n) noexcept {
        for (std::size_t i = n; i > 0; --i) locks[i - 1]->unlock_synced();
    }

    void arm_timer() {
        timer_.core = &core_;
        timer_.fire = &select_timer::on_fire;
        bool first = true;
        for (std::size_t i = 0; i < cs_.size(); ++i) {
            if (cs_[i].kind_ != select_case::kind::timer) continue;
            if (first || cs_[i].when_ns_ < timer_.when_ns) {
                timer_.when_ns = cs_[i].when_ns_;
                timer_.case_index = int(i);
                first = false;
            }
        }
        the_scheduler().timers().add(&timer_);
    }

    std::span<select_case> cs_;
    select_core core_{};
    select_timer timer_{};
    int index_ = select_default;
    bool timers_ = false;
    bool parked_ = false;
    bool send_closed_ = false;
};

}  // namespace detail

/// A select over a list of cases whose number is known only at run time (Go's
/// reflect.Select): the index of the case chosen. A receive case's value is
/// then `cases[i].received<T>()`.
inline detail::dyn_select_op<true> select(std::span<select_case> cases) noexcept {
    return detail::dyn_select_op<true>(cases);
}

/// The non-blocking form: the index of the case performed, or goro::select_default.
GORO_DECL int try_select(std::span<select_case> cases);

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL select_case& select_case::operator=(select_case&& o) noexcept {
    if (this != &o) {
        if (box_) ops_->destroy(box_);
        kind_ = std::exchange(o.kind_, kind::none);
        ops_ = o.ops_;
        ch_ = std::exchange(o.ch_, nullptr);
        box_ = std::exchange(o.box_, nullptr);
        when_ns_ = o.when_ns_;
    }
    return *this;
}

GORO_DECL int try_select(std::span<select_case> cases) {
    return detail::dyn_select_op<false>(cases).poll_now();
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/sync/select_dynamic.hpp ----

// ---- begin goro/sync/context.hpp ----
// goro/sync/context.hpp — `goro::context`: Go's context.Context, for cancellation
// trees, deadlines and request-scoped values.
//
//   auto [ctx, cancel] = goro::with_timeout(goro::background(), 2s);
//   goro::go(worker(ctx, jobs));        // worker: select(goro::recv(jobs), ctx.done())
//   ...
//   cancel();                           // every descendant is cancelled at once
//   ctx.err();                          // context_error::canceled (or deadline_exceeded)
//
// A context is a counted handle to an immutable node; nodes chain to their
// parent (a strong reference), so a tree is shared by everything that holds
// a handle into it:
//
//          background (no node)
//               │
//         cancel_node A ◄─────── with_cancel(background())
//          ╱         ╲           A lists B and C as children (raw links, A's lock)
//   cancel_node B   value_node V ◄── with_value(A, key, v): no children list, no done;
//                       │            done/err/deadline are A's
//                 cancel_node C      C is listed in A (its nearest cancelable ancestor)
//
// CANCELLATION, with Go's guarantee: while done() is open err() is none;
// once err() is set, done() is closed and every descendant's err() is set
// (and its done() closed). Cancelling a node happens in three passes (see
// cancel_tree): begin — under each node's `mu`, record the error and cause,
// detach the children list and stop the deadline timer, for the node and its
// whole subtree (iteratively: no recursion, no allocation); publish — close
// each node's `done` channel, parents before children (which wakes every
// task waiting on it); then request stop on each std::stop_source handed out
// and drop the references taken. err() reads the error only once `done` is
// closed and the whole subtree's cancellation published, so err() and
// done() change together, and a parent's err() is seen only once its
// subtree is done. If another thread began cancelling a node first,
// cancel (and a parent's cancel reaching it) waits until that one is
// published: cancel() returns with the context done. A node cancelled
// through its own cancel func, deadline or stop token also unlinks itself
// from its parent's list, and so does a node destroyed uncancelled, so a
// long-lived parent does not grow while children come and go.
//
// THREAD SAFETY / LOCK ORDER
//   * A cancel node's `mu` guards its children list (and the sibling links of
//     those children), its stop_source and whether its timer is armed. At most
//     one node's `mu` is held at a time; the done channel's lock and the timer
//     heap's mutex are taken after or under it, never the other way round.
//   * `err` is written once (under `mu`, after `cause`) when a cancellation
//     begins; readers outside `mu` look at it only after seeing `done`
//     closed (an acquire load of the channel's closed flag, set after `err`
//     by the same thread), so err() and cause() are wait-free.
//   * A parent holds no reference to its children: cancelling one takes a
//     reference only if the child is not already being destroyed (count not
//     zero), and a dying child unlinks itself under the parent's `mu`.
//   * OWNERSHIP OF A TIMED NODE. An armed deadline timer holds a reference
//     to its node (`timer_ref`), and exactly one party drops it: the cancel
//     or abandon that wins timer_queue::cancel (the timer will never fire),
//     or else the timer callback, as the very last thing it does — after
//     cancelling the node, which wakes the tasks on `done` and may let them
//     drop every handle. So the node outlives everything the timer thread
//     does with it, and whoever drops the last reference frees it.
//   * No thread touches a node after dropping its own reference. In
//     particular, the holder of the last handle stops the timer early (a
//     forgotten cancel must not keep a subtree alive until its deadline)
//     *before* it lets go: when its release would leave only the timer's
//     reference, it first calls abandon_timer() with its handle still held,
//     and only then drops it. Nothing ever waits for a timer callback: no
//     deadlock when the timer thread itself drops the last handle of another
//     timed node.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>


namespace goro {

/// Why a context is done (Go's ctx.Err()).
enum class context_error : unsigned char {
    none,               ///< not done
    canceled,           ///< its cancel func was called (or an ancestor's, or its stop token's)
    deadline_exceeded,  ///< its deadline (or an ancestor's) passed
};

GORO_DECL const char* to_string(context_error e) noexcept;

/// Thrown by context::throw_if_done() for a cancelled context (Go's context.Canceled).
class canceled_error : public error {
public:
    canceled_error() : error("context canceled") {}
    using error::error;
};

/// Thrown by context::throw_if_done() once a deadline passed (Go's context.DeadlineExceeded).
class deadline_exceeded_error : public error {
public:
    deadline_exceeded_error() : error("context deadline exceeded") {}
    using error::error;
};

/// A typed key for with_value: its address is its identity, T the value's type.
///   inline const goro::context_key<std::string> request_id{"request_id"};
template <class T>
class context_key {
public:
    explicit constexpr context_key(const char* name) noexcept : name_(name) {}
    context_key(const context_key&) = delete;
    context_key& operator=(const context_key&) = delete;
    constexpr const char* name() const noexcept { return name_; }

private:
    const char* name_;
};

class context;
class cancel_func;

namespace detail {

struct cancel_node;

struct ctx_node {
    // refs = 2 x (handles: context, cancel_func, a child's parent link) + 1 while a deadline timer is armed.
    static constexpr std::size_t handle_ref = 2;
    static constexpr std::size_t timer_ref = 1;

    std::atomic<std::size_t> refs{handle_ref};
    ctx_node* parent = nullptr;           // a handle reference (null: background)
    cancel_node* nearest = nullptr;       // closest cancelable node, this one included
    std::int64_t deadline_ns = std::numeric_limits<std::int64_t>::max();
    const void* key = nullptr;            // set on value nodes

    ctx_node() = default;
    ctx_node(const ctx_node&) = delete;
    ctx_node& operator=(const ctx_node&) = delete;
    virtual ~ctx_node() = default;

    /// Called by the holder of the last handle, before it lets go of it, when
    /// an armed timer's reference is all that would be left: nobody could
    /// observe this node any more, so the timer is stopped now instead of at
    /// the deadline (dropping the timer's reference if it did not fire yet).
    virtual void abandon_timer() noexcept {}

    void add_ref() noexcept { refs.fetch_add(handle_ref, std::memory_order_relaxed); }
    /// A handle reference unless the node is already being destroyed.
    bool try_add_ref() noexcept;
    /// Drops a reference (a handle's, or the timer's); frees the nodes that
    /// reach zero, walking up the chain iteratively (no recursion).
    ///
    /// The last handle never goes from `handle_ref + timer_ref` straight to
    /// `timer_ref`: first, still holding itself, it stops the timer
    /// (abandon_timer). Once a thread has dropped its reference it never
    /// touches the node again, so whoever drops the last reference — the timer
    /// callback included — may free it at once.
    static void release(ctx_node* n, std::size_t amount = handle_ref) noexcept;
};

template <class T>
struct value_node final : ctx_node {
    T value;
    template <class U>
    explicit value_node(U&& v) : value(std::forward<U>(v)) {}
};

/// Cancels `n` and every descendant, and returns once all of them are
/// published (err() set, done() closed). The caller holds a reference to `n`.
///
/// Three passes, iteratively (no recursion, no allocation; the lists run
/// through `work_next`):
///   1. begin: `n` and, depth first, every descendant whose cancellation had
///      not begun; their children lists are detached on the way. A child whose
///      cancellation another thread began is set aside, to wait for.
///   2. publish, each parent before its children (so a task woken by a
///      child's done() finds its ancestors done), then mark every node
///      `settled`; err() of a published node waits for that, so a node's
///      err() is never seen before its descendants' done() closed.
///      First wait for the set-aside children: a thread waits
///      only for nodes outside the subtrees of what it began and has not
///      published, and their canceller only for nodes below them, so the
///      waits end (the tree has no cycles).
///   3. only now what may run user code or start another cancellation:
///      stop_source callbacks, and dropping the references (a node's
///      destructor runs its values' destructors). Everything begun is
///      published by then, so nothing started here waits for this thread.
GORO_DECL void cancel_tree(cancel_node* n, context_error err, std::exception_ptr cause, bool unlink) noexcept;

struct cancel_node final : ctx_node {
    struct deadline_timer : timer_node {
        cancel_node* owner = nullptr;
        static void on_fire(timer_node* t) noexcept;
    };
    struct stop_relay {
        cancel_node* owner;
        void operator()() const noexcept;
    };

    ranked_lock<spinlock, lock_rank::context> mu;
    chan_state<std::monostate> done{0};  // closed when the cancellation is published (see CANCELLATION)
    // Set once, under mu, when a cancellation begins (after `cause`); the
    // context's err() reads it only once `done` is closed.
    std::atomic<context_error> err{context_error::none};
    std::exception_ptr cause;            // written under mu before err
    // --- under mu ---
    cancel_node* first_child = nullptr;
    std::size_t nchildren = 0;
    bool timer_armed = false;
    std::optional<std::stop_source> stop;
    // --- under the ancestor's mu (the list this node is in) ---
    cancel_node* prev_sibling = nullptr;
    cancel_node* next_sibling = nullptr;
    bool linked = false;
    // --- owned by the canceller that detached this node from its ancestor's list ---
    cancel_node* work_next = nullptr;
    // --- immutable ---
    cancel_node* ancestor = nullptr;     // whose children list this node joins (parent's nearest)
    deadline_timer timer{};
    std::optional<std::stop_callback<stop_relay>> relay;  // with_stop_token only

    /// The error as others may see it: none until `done` is closed. Closing
    /// sets the channel's closed flag under its lock, so a thread that sees
    /// the flag here also finds done() ready, and one that found done()
    /// ready sees the flag; `err` was stored before the close.
    ///
    /// Once `done` is closed the cancellation of this node's whole subtree is
    /// under way on another thread and ends without waiting for anything
    /// (CANCELLATION); like Go's Err(), which takes the lock the canceller
    /// holds throughout, this waits for it, so a non-none error also means
    /// every descendant is done.
    context_error published_err() const noexcept;

    GORO_DECL void abandon_timer() noexcept override;

    GORO_DECL ~cancel_node() override;

    void unlink_from_ancestor() noexcept;

    /// Begins this node's cancellation: records the error and cause (so no
    /// one else begins it, and a child created from now on is cancelled by
    /// its creator), stops the timer, and moves the children, each with a
    /// reference, onto `work`. False when a cancellation had begun already.
    /// The caller holds a reference.
    bool begin_cancel(context_error e, const std::exception_ptr& c, cancel_node*& work) noexcept;

    /// Makes the cancellation visible: err() and done() change together here.
    void publish_cancel() noexcept { done.close("goro::context::cancel"); }

    /// After publishing: stops the stop_source handed out by stop_token(), if
    /// any. (stop_token() checks `done` under mu after creating one, so a
    /// source created now is stopped there.)
    void stop_after_cancel() noexcept;

    /// Waits until another thread's cancellation of this node is published:
    /// its done() and every descendant's closed.
    void wait_published() const noexcept {
        while (!settled.load(std::memory_order_acquire)) std::this_thread::yield();
    }

    // Set once the cancellation of this node and of every descendant it
    // reached is published (cancel_tree's pass 2).
    std::atomic<bool> settled{false};
};

GORO_DECL std::exception_ptr error_of(context_error e);

}  // namespace detail

/// A context handle. Default-constructed: background (never cancelled, no
/// deadline, no values; its done() is a nil channel that never fires).
class context {
public:
    context() noexcept = default;
    context(const context& o) noexcept : n_(o.n_) {
        if (n_) n_->add_ref();
    }
    context(context&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
    context& operator=(const context& o) noexcept;
    context& operator=(context&& o) noexcept;
    ~context() { detail::ctx_node::release(n_); }

    /// The context's done channel (Go's ctx.Done()), receive-only: closed once
    /// the context is done; nil for background. `co_await ctx.done()`,
    /// `ctx.done()` as a select case, `while (auto v = co_await d.recv()) {}`
    /// (not `while (co_await d.recv())`: g++ 12 miscompiles a co_await in a
    /// condition without a declaration), or passed on as a
    /// `recv_only<std::monostate>`. It holds a handle to the
    /// context, so it may outlive this one.
    recv_only<std::monostate> done() const noexcept;

    /// Why the context is done, or context_error::none.
    context_error err() const noexcept {
        detail::cancel_node* c = n_ ? n_->nearest : nullptr;
        return c ? c->published_err() : context_error::none;
    }
    /// True once the context is cancelled or past its deadline.
    bool is_done() const noexcept { return err() != context_error::none; }

    /// Throws canceled_error or deadline_exceeded_error when the context is done.
    void throw_if_done() const;

    /// The earliest deadline along the chain, if any.
    std::optional<std::chrono::steady_clock::time_point> deadline() const noexcept;

    /// The value stored under `key` by the nearest with_value, or null.
    template <class T>
    const T* value(const context_key<T>& key) const noexcept {
        for (detail::ctx_node* n = n_; n; n = n->parent)
            if (n->key == &key) return &static_cast<detail::value_node<T>*>(n)->value;
        return nullptr;
    }

    /// A std::stop_token that is stop-requested when this context is done
    /// (never, for background).
    std::stop_token stop_token() const;

    friend bool operator==(const context& a, const context& b) noexcept { return a.n_ == b.n_; }

private:
    friend class cancel_func;
    friend struct context_access;
    explicit context(detail::ctx_node* adopt) noexcept : n_(adopt) {}
    detail::ctx_node* n_ = nullptr;
};

namespace detail {
struct ctx_keep {
    static void add(void* p) noexcept { static_cast<ctx_node*>(p)->add_ref(); }
    static void drop(void* p) noexcept { ctx_node::release(static_cast<ctx_node*>(p)); }
    static constexpr keep_ops ops{&add, &drop};
};
}  // namespace detail

/// Cancels its context (Go's CancelFunc). Copyable; calling it again, or after
/// the context was cancelled some other way, does nothing.
class cancel_func {
public:
    cancel_func() noexcept = default;
    cancel_func(const cancel_func& o) noexcept : n_(o.n_) {
        if (n_) n_->add_ref();
    }
    cancel_func(cancel_func&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
    cancel_func& operator=(cancel_func o) noexcept {
        std::swap(n_, o.n_);
        return *this;
    }
    ~cancel_func() { detail::ctx_node::release(n_); }

    /// Cancels with context_error::canceled.
    void operator()() const noexcept {
        if (n_) detail::cancel_tree(n_, context_error::canceled, nullptr, true);
    }
    /// Cancels with context_error::canceled, recording `cause` (see goro::cause).
    void operator()(std::exception_ptr cause) const noexcept {
        if (n_) detail::cancel_tree(n_, context_error::canceled, std::move(cause), true);
    }

private:
    friend struct context_access;
    explicit cancel_func(detail::cancel_node* n) noexcept : n_(n) {
        if (n_) n_->add_ref();
    }
    detail::cancel_node* n_ = nullptr;
};

/// goro::background(): the root of every context tree. goro::todo(): the same,
/// spelled for "not decided yet".
inline context background() noexcept { return {}; }
inline context todo() noexcept { return {}; }

struct context_access {
    static detail::ctx_node* node(const context& c) noexcept { return c.n_; }
    static context adopt(detail::ctx_node* n) noexcept { return context(n); }
    static cancel_func make_cancel(detail::cancel_node* n) noexcept { return cancel_func(n); }

    /// A new cancel node below `parent`, linked into its nearest cancelable
    /// ancestor, or cancelled at once when that one is done already.
    static detail::cancel_node* new_cancel_node(const context& parent, std::int64_t deadline_ns);

    static void arm_deadline(detail::cancel_node* n, std::int64_t when_ns);

    static std::int64_t now_ns() noexcept { return detail::now_ns(); }
};

/// A child of `parent` with its own cancel func (Go's WithCancel).
GORO_DECL std::pair<context, cancel_func> with_cancel(const context& parent);

/// A child that is cancelled with deadline_exceeded at `deadline` (Go's WithDeadline).
template <class Duration>
std::pair<context, cancel_func> with_deadline(const context& parent,
                                              std::chrono::time_point<std::chrono::steady_clock, Duration> deadline) {
    std::int64_t when = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    detail::cancel_node* n = context_access::new_cancel_node(parent, when);
    context ctx = context_access::adopt(n);
    cancel_func cancel = context_access::make_cancel(n);
    // The parent's earlier deadline already covers this one: no timer of our own.
    detail::ctx_node* p = context_access::node(parent);
    if (!p || when < p->deadline_ns) context_access::arm_deadline(n, when);
    return {std::move(ctx), std::move(cancel)};
}

/// with_deadline(parent, now + timeout) (Go's WithTimeout).
template <class Rep, class Period>
std::pair<context, cancel_func> with_timeout(const context& parent, std::chrono::duration<Rep, Period> timeout) {
    return with_deadline(parent, std::chrono::steady_clock::now() +
                                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout));
}

/// A child cancelled (context_error::canceled) when `token` is stop-requested,
/// or by its cancel func: the bridge from std::stop_token (std::jthread, …).
GORO_DECL std::pair<context, cancel_func> with_stop_token(const context& parent, std::stop_token token);

/// A child carrying `value` under `key` (Go's WithValue); lookup: ctx.value(key).
template <class T, class U>
    requires std::is_constructible_v<T, U&&>
context with_value(const context& parent, const context_key<T>& key, U&& value) {
    auto* n = new detail::value_node<T>(std::forward<U>(value));
    n->key = &key;
    if (detail::ctx_node* p = context_access::node(parent)) {
        p->add_ref();
        n->parent = p;
        n->nearest = p->nearest;
        n->deadline_ns = p->deadline_ns;
    }
    return context_access::adopt(n);
}

/// Why `ctx` was cancelled: the cause given to its cancel func (or an
/// ancestor's), else canceled_error / deadline_exceeded_error; null while
/// the context is not done (Go's context.Cause).
GORO_DECL std::exception_ptr cause(const context& ctx);

namespace detail {
/// Children currently linked under the nearest cancelable node of `ctx` (for tests and metrics).
GORO_DECL std::size_t context_children(const context& ctx) noexcept;
}  // namespace detail

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL const char* to_string(context_error e) noexcept {
    switch (e) {
    case context_error::none: return "none";
    case context_error::canceled: return "context canceled";
    case context_error::deadline_exceeded: return "context deadline exceeded";
    }
    return "unknown";
}

}  // namespace goro

namespace goro::detail {

GORO_DECL bool ctx_node::try_add_ref() noexcept {
    std::size_t r = refs.load(std::memory_order_relaxed);
    while (r != 0)
        if (refs.compare_exchange_weak(r, r + handle_ref, std::memory_order_acq_rel, std::memory_order_relaxed))
            return true;
    return false;
}

GORO_DECL void ctx_node::release(ctx_node* n, std::size_t amount) noexcept {
    while (n) {
        std::size_t r = n->refs.load(std::memory_order_relaxed);
        bool abandoned = false;
        for (;;) {
            if (amount == handle_ref && r == handle_ref + timer_ref && !abandoned) {
                abandoned = true;
                n->abandon_timer();  // our handle keeps n alive meanwhile
                r = n->refs.load(std::memory_order_relaxed);
                continue;
            }
            // A failed abandon means the timer is firing, or a cancel took
            // it: either drops the timer's reference soon, so we may go.
            if (n->refs.compare_exchange_weak(r, r - amount, std::memory_order_acq_rel, std::memory_order_relaxed))
                break;
        }
        if (r != amount) return;
        ctx_node* p = n->parent;  // kept until n is gone: n's destructor may lock an ancestor
        delete n;
        n = p;
        amount = handle_ref;
    }
}

GORO_DECL void cancel_node::deadline_timer::on_fire(timer_node* t) noexcept {
    cancel_node* n = static_cast<deadline_timer*>(t)->owner;
    cancel_tree(n, context_error::deadline_exceeded, nullptr, true);
    ctx_node::release(n, timer_ref);  // last access: the armed timer's reference
}

GORO_DECL void cancel_node::stop_relay::operator()() const noexcept {
    cancel_tree(owner, context_error::canceled,
                std::make_exception_ptr(canceled_error("goro::with_stop_token: stop requested")), true);
}

GORO_DECL context_error cancel_node::published_err() const noexcept {
    if (!done.is_closed()) return context_error::none;
    wait_published();
    return err.load(std::memory_order_relaxed);
}

GORO_DECL void cancel_node::abandon_timer() noexcept {
    std::lock_guard g(mu);
    // Not cancelled: the callback is running (or about to) and drops the
    // timer's reference itself. Cancelled: never zero here, the caller
    // still holds its handle.
    if (timer_armed && the_scheduler().timers().cancel(&timer)) {
        timer_armed = false;
        refs.fetch_sub(timer_ref, std::memory_order_acq_rel);
    }
}

GORO_DECL cancel_node::~cancel_node() {
    relay.reset();  // waits for a stop callback running on another thread
    unlink_from_ancestor();
}

GORO_DECL void cancel_node::unlink_from_ancestor() noexcept {
    cancel_node* a = ancestor;
    if (!a) return;
    std::lock_guard g(a->mu);
    if (!linked) return;
    if (prev_sibling) prev_sibling->next_sibling = next_sibling;
    else a->first_child = next_sibling;
    if (next_sibling) next_sibling->prev_sibling = prev_sibling;
    prev_sibling = next_sibling = nullptr;
    linked = false;
    --a->nchildren;
}

GORO_DECL bool cancel_node::begin_cancel(context_error e, const std::exception_ptr& c, cancel_node*& work) noexcept {
    bool stop_timer = false;
    {
        std::lock_guard g(mu);
        if (err.load(std::memory_order_relaxed) != context_error::none) return false;
        cause = c;
        err.store(e, std::memory_order_relaxed);
        for (cancel_node* ch = first_child; ch;) {
            cancel_node* next = ch->next_sibling;
            ch->prev_sibling = ch->next_sibling = nullptr;
            ch->linked = false;
            if (ch->try_add_ref()) {  // a child at zero is being destroyed: nobody can observe it
                ch->work_next = work;
                work = ch;
            }
            ch = next;
        }
        first_child = nullptr;
        nchildren = 0;
        stop_timer = std::exchange(timer_armed, false);
    }
    if (stop_timer && the_scheduler().timers().cancel(&timer)) {
        // The timer will not fire: drop its reference (the caller holds one).
        refs.fetch_sub(timer_ref, std::memory_order_acq_rel);
    }
    return true;
}

GORO_DECL void cancel_node::stop_after_cancel() noexcept {
    std::optional<std::stop_source> to_stop;
    {
        std::lock_guard g(mu);
        if (stop) to_stop = stop;
    }
    if (to_stop) to_stop->request_stop();
}

GORO_DECL void cancel_tree(cancel_node* n, context_error err, std::exception_ptr cause, bool unlink) noexcept {
    cancel_node* work = nullptr;
    if (!n->begin_cancel(err, cause, work)) {
        n->wait_published();  // cancel() returns with the context done, whoever cancelled it
        return;
    }
    cancel_node* begun = nullptr;  // newest first: children before parents
    cancel_node* foreign = nullptr;
    while (work) {
        cancel_node* c = work;
        work = c->work_next;
        if (c->begin_cancel(err, cause, work)) {
            c->work_next = begun;
            begun = c;
        } else {
            c->work_next = foreign;
            foreign = c;
        }
    }
    for (cancel_node* c = foreign; c; c = c->work_next) c->wait_published();
    // Parents before children, as Go does: a task woken by a child's done()
    // finds its ancestors done too. err() of any of them waits for `settled`.
    n->publish_cancel();
    cancel_node* order = nullptr;  // `begun` reversed: discovery order
    while (begun) {
        cancel_node* c = begun;
        begun = c->work_next;
        c->work_next = order;
        order = c;
    }
    begun = order;
    for (cancel_node* c = begun; c; c = c->work_next) c->publish_cancel();
    for (cancel_node* c = begun; c; c = c->work_next) c->settled.store(true, std::memory_order_release);
    n->settled.store(true, std::memory_order_release);
    for (cancel_node* lists : {begun, foreign}) {
        while (lists) {
            cancel_node* c = lists;
            lists = c->work_next;
            c->work_next = nullptr;
            c->stop_after_cancel();  // a foreign node's own canceller does it too: idempotent
            ctx_node::release(c);
        }
    }
    n->stop_after_cancel();
    if (unlink) n->unlink_from_ancestor();
}

GORO_DECL std::exception_ptr error_of(context_error e) {
    if (e == context_error::deadline_exceeded) return std::make_exception_ptr(deadline_exceeded_error());
    return std::make_exception_ptr(canceled_error());
}

}  // namespace goro::detail

namespace goro {

GORO_DECL context& context::operator=(const context& o) noexcept {
    if (o.n_) o.n_->add_ref();
    detail::ctx_node::release(n_);
    n_ = o.n_;
    return *this;
}

GORO_DECL context& context::operator=(context&& o) noexcept {
    if (this != &o) {
        detail::ctx_node::release(n_);
        n_ = std::exchange(o.n_, nullptr);
    }
    return *this;
}

GORO_DECL void context::throw_if_done() const {
    switch (err()) {
    case context_error::none: return;
    case context_error::canceled: throw canceled_error();
    case context_error::deadline_exceeded: throw deadline_exceeded_error();
    }
}

GORO_DECL std::optional<std::chrono::steady_clock::time_point> context::deadline() const noexcept {
    if (!n_ || n_->deadline_ns == std::numeric_limits<std::int64_t>::max()) return std::nullopt;
    return std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::nanoseconds(n_->deadline_ns)));
}

GORO_DECL std::stop_token context::stop_token() const {
    detail::cancel_node* c = n_ ? n_->nearest : nullptr;
    if (!c) return {};
    std::stop_source src{std::nostopstate};
    bool already = false;
    {
        std::lock_guard g(c->mu);
        if (!c->stop) c->stop.emplace();
        src = *c->stop;
        already = c->done.is_closed();
    }
    if (already) src.request_stop();  // published before anyone asked: catch up
    return src.get_token();
}

GORO_DECL recv_only<std::monostate> context::done() const noexcept {
    detail::cancel_node* c = n_ ? n_->nearest : nullptr;
    if (!c) return {};  // background: a nil channel, nothing to keep
    n_->add_ref();
    return {&c->done, detail::keep_ref(n_, &detail::ctx_keep::ops)};
}

GORO_DECL detail::cancel_node* context_access::new_cancel_node(const context& parent, std::int64_t deadline_ns) {
    auto* n = new detail::cancel_node();
    n->nearest = n;
    n->timer.owner = n;
    n->timer.fire = &detail::cancel_node::deadline_timer::on_fire;
    detail::ctx_node* p = parent.n_;
    if (p) {
        p->add_ref();
        n->parent = p;
        n->deadline_ns = p->deadline_ns;
        n->ancestor = p->nearest;
    }
    if (deadline_ns < n->deadline_ns) n->deadline_ns = deadline_ns;
    if (detail::cancel_node* a = n->ancestor) {
        context_error perr;
        {
            std::lock_guard g(a->mu);
            perr = a->err.load(std::memory_order_relaxed);  // begun, maybe not yet published
            if (perr == context_error::none) {
                n->next_sibling = a->first_child;
                if (a->first_child) a->first_child->prev_sibling = n;
                a->first_child = n;
                n->linked = true;
                ++a->nchildren;
            }
        }
        if (perr != context_error::none) detail::cancel_tree(n, perr, a->cause, false);
    }
    return n;
}

GORO_DECL void context_access::arm_deadline(detail::cancel_node* n, std::int64_t when_ns) {
    if (when_ns <= now_ns()) {
        detail::cancel_tree(n, context_error::deadline_exceeded, nullptr, true);
        return;
    }
    std::lock_guard g(n->mu);
    if (n->err.load(std::memory_order_relaxed) != context_error::none) return;
    n->refs.fetch_add(detail::ctx_node::timer_ref, std::memory_order_relaxed);
    n->timer_armed = true;
    n->timer.when_ns = when_ns;
    detail::the_scheduler().timers().add(&n->timer);
}

GORO_DECL std::pair<context, cancel_func> with_cancel(const context& parent) {
    detail::cancel_node* n = context_access::new_cancel_node(parent, std::numeric_limits<std::int64_t>::max());
    return {context_access::adopt(n), context_access::make_cancel(n)};
}

GORO_DECL std::pair<context, cancel_func> with_stop_token(const context& parent, std::stop_token token) {
    detail::cancel_node* n = context_access::new_cancel_node(parent, std::numeric_limits<std::int64_t>::max());
    context ctx = context_access::adopt(n);
    cancel_func cancel = context_access::make_cancel(n);
    n->relay.emplace(std::move(token), detail::cancel_node::stop_relay{n});  // may run at once: fine
    return {std::move(ctx), std::move(cancel)};
}

GORO_DECL std::exception_ptr cause(const context& ctx) {
    detail::ctx_node* n = context_access::node(ctx);
    detail::cancel_node* c = n ? n->nearest : nullptr;
    if (!c) return nullptr;
    context_error e = c->published_err();
    if (e == context_error::none) return nullptr;
    if (c->cause) return c->cause;
    return detail::error_of(e);
}

}  // namespace goro

namespace goro::detail {

GORO_DECL std::size_t context_children(const context& ctx) noexcept {
    ctx_node* n = context_access::node(ctx);
    cancel_node* c = n ? n->nearest : nullptr;
    if (!c) return 0;
    std::lock_guard g(c->mu);
    return c->nchildren;
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/sync/context.hpp ----

// ---- begin goro/sync/wait_group.hpp ----
// goro/sync/wait_group.hpp — `goro::wait_group`: wait for a collection of tasks to finish.
//
//   goro::wait_group wg;
//   for (auto& job : jobs) {
//       wg.add(1);
//       goro::go(work(job, wg));          // each calls wg.done() when finished
//   }
//   co_await wg.wait();                   // or goro::block_on(wg.wait()) on a plain thread
//
// Go's sync.WaitGroup. A parked waiter shows the wait reason `sync.WaitGroup.Wait`.
//
// THE COUNTER PROTOCOL (lock-free add and done; parking only when the
// counter is not zero; reuse; Go's misuse errors; the last done() never
// touches a group that its waiter freed) is detail::basic_wait_count in
// goro/sync/wait_count.hpp, documented there and model-checked by
// tests/test_wait_count.cpp; this header parks and wakes the tasks.
//
// DESTRUCTION with tasks still parked in `wait` is a bug in the program (they
// could never be woken): the destructor wakes each of them with a
// `goro::wait_group_destroyed` exception thrown from its `co_await wg.wait()`,
// whose message names the operation and the number of waiters. Nothing is
// touched after the wake-up, so this is never use-after-free.

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>


// ---- begin goro/core/waiter_list.hpp ----
// goro/core/waiter_list.hpp — the FIFO of tasks parked on a mutex, a semaphore
// or a wait group.
//
//   struct node { node* next = nullptr; task_header* task = nullptr; /* ... */ };
//   detail::waiter_list<node> waiters;          // under the primitive's lock
//   waiters.push_back(n);                       // a task parks (n lives in its awaiter)
//   auto* w = waiters.pop_front();  ... unlock ...  detail::ready(w->task);
//
// Intrusive: a node lives in its awaiter, in the parked task's frame, so
// parking allocates nothing. Which node is woken, and when, is the
// primitive's business; the list only keeps the order. Its rules:
//   * the list itself is guarded by the primitive's lock;
//   * a task is readied only after that lock is released (take the nodes
//     out under the lock, into a local list, then wake_all());
//   * once a task is readied its node may be gone with its frame: wake_all
//     reads a node's `next` before readying its task.
// wake_destroyed() is the destructor of such a primitive: tasks still parked
// would wait forever, so each is told (a flag in its node) and woken.

#include <cstddef>
#include <mutex>
#include <utility>


namespace goro::detail {

/// `Node` has `Node* next` and `task_header* task`; the rest is the primitive's.
template <class Node>
class waiter_list {
public:
    waiter_list() noexcept = default;
    waiter_list(waiter_list&& o) noexcept
        : head_(std::exchange(o.head_, nullptr)), tail_(std::exchange(o.tail_, nullptr)) {}
    waiter_list& operator=(waiter_list&& o) noexcept {
        head_ = std::exchange(o.head_, nullptr);
        tail_ = std::exchange(o.tail_, nullptr);
        return *this;
    }

    bool empty() const noexcept { return head_ == nullptr; }
    /// The longest-waiting node; null when empty.
    Node* front() const noexcept { return head_; }

    void push_back(Node& n) noexcept {
        n.next = nullptr;
        if (tail_) tail_->next = &n;
        else head_ = &n;
        tail_ = &n;
    }

    /// Unlinks the longest-waiting node; null when empty.
    Node* pop_front() noexcept {
        Node* n = head_;
        if (n) {
            head_ = n->next;
            if (!head_) tail_ = nullptr;
        }
        return n;
    }

    /// Moves every node of `o`, in order, behind this list's.
    void splice_back(waiter_list& o) noexcept {
        if (!o.head_) return;
        if (tail_) tail_->next = o.head_;
        else head_ = o.head_;
        tail_ = o.tail_;
        o.head_ = o.tail_ = nullptr;
    }

    std::size_t size() const noexcept {
        std::size_t n = 0;
        for (const Node* w = head_; w; w = w->next) ++n;
        return n;
    }

    /// Readies every node's task, oldest first, after `before_wake(node)`;
    /// the list is empty after. Call with no lock held.
    template <class F>
    void wake_all(F&& before_wake) noexcept {
        Node* w = std::exchange(head_, nullptr);
        tail_ = nullptr;
        while (w) {
            Node* next = w->next;  // read before the wake: the node dies with its frame
            before_wake(*w);
            ready(w->task);
            w = next;
        }
    }
    void wake_all() noexcept {
        wake_all([](Node&) noexcept {});
    }

private:
    Node* head_ = nullptr;
    Node* tail_ = nullptr;
};

/// A primitive with parked tasks is being destroyed: takes its list under
/// `lock`, then wakes every task after `mark(node, how_many)` has told its
/// node that the primitive is gone (its awaiter then throws).
template <class Node, class Lock, class Mark>
void wake_destroyed(waiter_list<Node>& list, Lock& lock, Mark&& mark) noexcept {
    waiter_list<Node> taken;
    {
        std::lock_guard<Lock> g(lock);
        taken = std::move(list);
    }
    const std::size_t n = taken.size();
    taken.wake_all([&](Node& w) noexcept { mark(w, n); });
}

}  // namespace goro::detail
// ---- end goro/core/waiter_list.hpp ----

// ---- begin goro/sync/wait_count.hpp ----
// goro/sync/wait_count.hpp — the counter protocol of `goro::wait_group`
// (sync/wait_group.hpp), written against a policy so that the production
// group and the model check (tests/test_wait_count.cpp) run the same steps.
//
// `basic_wait_count<Policy, Lock, Node>`: Policy gives the atomics and the
// wait loop's spin (machine_policy in platform.hpp, or the model checker's);
// Lock guards the waiter lists; Node is a parked waiter's node, with
//   Node* next, rprev, rnext;   bool released;
//   Policy::atomic<unsigned char> st;   void wake() noexcept;
// wait_group wraps it with the coroutine side (parking a task, waking it).
//
// STATE, on two cache lines, so that a spawner's add() and the finishers'
// done() do not pull one line back and forth:
//
//   added_  (line A): how many add()s so far, a 64-bit count; only add() writes it.
//   state_  (line B):
//
//     63            32 31                 2     1          0
//     +---------------+--------------------+-----------+---------+
//     | done (u32)    | busy finishers     | releasing | waiters |
//     +---------------+--------------------+-----------+---------+
//
//   hint_   (line B): a value `added_` had (its low 32 bits); a lower bound of
//   it, since `added_` only grows.
//
//   The counter is `added - done`, in 32-bit two's complement as Go's.
//
// DONE (finish). A finisher claims its done() with one CAS of `state_`. When
// its new done count is below `hint_`, the counter cannot have reached zero
// (added_ is at least the hint) and the CAS is all it does: this is the path
// of every done() but the few that catch up with the hint. Otherwise the same
// CAS also counts it as a *busy finisher*; it then reads `added_`, refreshes
// the hint, checks for a negative counter, and leaves the busy count with a
// second CAS (which also takes back a done that made the counter negative).
// That second CAS is where a finisher decides to release: when it leaves no
// finisher busy, waiters are counted, nobody is releasing, and its done count
// has caught up with the added count it read, it also sets `releasing`.
//
// WAIT (at_zero, enqueue). A waiter sees zero only when no finisher is busy,
// nobody is releasing, and done equals added (state read first, then added).
// So from the moment a finisher becomes busy until it leaves, no waiter can
// return, and a finisher that leaves without `releasing` touches nothing of
// the group afterwards: a waiter may destroy the group as soon as its wait()
// returns (the usual pattern), and the last done() never reads freed memory.
// A waiter that does not see zero sets `waiters` under `lock_` and links
// itself there.
//
// RELEASE. Only the holder of `releasing` takes the waiter list, and only
// when, under the lock, no finisher is busy and done equals added. It then
// drops `releasing` with a CAS that looks once more: if waiters linked
// themselves meanwhile and the counter is still zero, it goes round again.
// Waking happens after that CAS and touches only the waiters' own nodes.
//
// WHY NO WAKE-UP IS LOST: a waiter links itself only while a finisher is busy
// (that finisher, or the last busy one, will look at `waiters` when it
// leaves), while somebody is releasing (its dropping CAS looks again), or while
// done < added (the done() that reaches the added count has a new done count
// at least the hint, so it becomes busy and looks when it leaves).
//
// REUSE: as in Go, an add() that raises the counter from zero must happen
// before the wait() that is meant to see it. An add() racing with the done()
// that reached zero does not lose anyone: the releaser then finds the counter
// not zero and the waiters wait for the next zero.
//
// MISUSE, detected as Go detects it, by add() (goro::usage_error; the counter
// is left as it was): raising the counter from zero while the waiters
// released at that zero are still being released ("add called concurrently
// with wait"), or have not yet returned from their wait() ("reused before the
// previous wait has returned"). `returning_`, on the line of `added_` so that
// a plain add() reads it for free, counts the releasers at work (high half)
// and the released waiters that have not returned (low half). A released
// waiter is linked in `woken_` (under `lock_`) and leaves it as it returns
// (returned): it unlinks itself under the lock, and then, as its very last
// access to the group, takes itself out of the count. A race of add() with
// the done() that reaches zero is detected only when add() sees the release
// begun, as in Go. A done() below zero throws and is taken back (the counter
// is left as it was).
//
// DESTRUCTION (destroy, from the group's destructor) takes the lock once.
// Under it, it hands back the waiters still parked (the caller wakes them
// with an error: destroying a group that tasks wait on is the program's bug),
// marks the group `destroying_` (a waiter that returns later leaves the list
// alone: its neighbours may be gone), and tells each released waiter that has
// not begun to return that the group is gone: its node's `st` becomes
// `orphaned` by a CAS, after which that node is not touched again (its task
// may run and free it at once; its `rnext` was read before), and its count is
// taken out of `returning_`. Then, without the lock, it waits with plain loads
// until `returning_` is zero: the waiters that had begun to return have taken
// their last step of the group. Nobody touches the group after that: not a
// finisher (see WAIT), not a releaser (it leaves the count before it drops
// `releasing`, and no waiter returns while `releasing` is set), not a waiter.
//
// CHECKED by tests/test_wait_count.cpp in the model checker at 2–3 threads:
// no waiter left parked at zero, none released before the last done, no done
// lost, reuse after a wait, both misuses, and no step of a finisher or a
// returning waiter after the group was destroyed (with a destructor that does
// not wait for the returning waiters as a negative control).

#include <cstdint>
#include <limits>
#include <mutex>
#include <string>


namespace goro::detail {

/// A node's `st`: released and not yet returned (pending), returning, or told
/// that the group is gone (orphaned).
inline constexpr unsigned char wait_node_pending = 0, wait_node_returning = 1, wait_node_orphaned = 2;

/// `Mutation` is for the model check's negative controls only (0 everywhere
/// else): 1 drops the releaser's second look before it lets go of
/// `releasing`; 2 lets a waiter see zero while a finisher is busy; 3 makes
/// destroy() return without waiting for the waiters that began to return.
template <class Policy, class Lock, class Node, int Mutation = 0>
struct basic_wait_count {
    template <class U>
    using atomic = typename Policy::template atomic<U>;

    static constexpr std::uint64_t waiters_bit = 1;
    static constexpr std::uint64_t releasing_bit = 2;
    static constexpr std::uint64_t busy_one = 4;
    static constexpr std::uint64_t busy_mask = 0xffff'fffcull;
    static constexpr std::uint64_t done_one = std::uint64_t(1) << 32;
    static constexpr std::uint64_t releaser_one = std::uint64_t(1) << 32;  // in returning_

    static std::uint32_t done_of(std::uint64_t s) noexcept { return static_cast<std::uint32_t>(s >> 32); }
    static std::uint32_t low(std::uint64_t a) noexcept { return static_cast<std::uint32_t>(a); }
    /// a ≥ b in the wrapping 32-bit counts.
    static bool at_least(std::uint32_t a, std::uint32_t b) noexcept { return static_cast<std::int32_t>(a - b) >= 0; }

    // --- the waiter's side ---------------------------------------------------

    /// The counter is zero now (a waiter need not park).
    bool at_zero() const { return zero(state_.load(std::memory_order_acquire)); }

    /// Under `lock_`: links `w` as a waiter, or returns false if the counter
    /// is zero (then the caller does not park).
    bool enqueue(Node& w) {
        std::uint64_t s = state_.load(std::memory_order_acquire);
        for (;;) {
            if (zero(s)) return false;
            if (s & waiters_bit) break;  // already set; stays set until a releaser takes the list
            if (state_.compare_exchange_weak(s, s | waiters_bit, std::memory_order_acq_rel,
                                             std::memory_order_acquire))
                break;
        }
        waiters_.push_back(w);
        return true;  // published: from here on a releaser owns the node
    }

    /// A released waiter (`w.released`) returns from wait(): it leaves
    /// `woken_`, unless the group is being destroyed (orphaned: then it
    /// touches nothing of the group).
    void returned(Node& w) {
        unsigned char expected = wait_node_pending;
        if (!w.st.compare_exchange_strong(expected, wait_node_returning, std::memory_order_acq_rel)) return;  // orphaned
        {
            std::lock_guard g(lock_);
            if (!destroying_) unlink_woken(w);  // else the list is dead, and its other nodes may be gone
        }
        // The last access to the group: destroy() waits, with loads only, for
        // `returning_` to reach zero, and the group may be freed right after.
        returning_.fetch_sub(1, std::memory_order_acq_rel);
    }

    // --- the adders' and finishers' side -------------------------------------

    /// add(n) for n > 0 (the caller checked the range).
    void add(std::uint32_t n) {
        const std::uint64_t before = added_.fetch_add(n, std::memory_order_acq_rel);
        // On the line of added_: the common add() pays no extra cache miss.
        if (returning_.load(std::memory_order_acquire) != 0) [[unlikely]]
            check_reuse(low(before), n);
    }

    /// done() n times; `op` names the operation in the error of a negative counter.
    void finish(std::uint32_t n, const char* op) {
        // acq_rel: a done() releases the task's work; the chain of CASes
        // carries every earlier done() (and the adds before them) to a waiter.
        std::uint64_t s = state_.load(std::memory_order_relaxed);
        if (!at_least(done_of(s) + n, hint_.load(std::memory_order_relaxed)) &&
            state_.compare_exchange_strong(s, s + std::uint64_t(n) * done_one, std::memory_order_acq_rel,
                                           std::memory_order_relaxed))
            return;
        finish_slow(n, op, s);
    }

    /// The counter now (for diagnostics; stale as soon as it is read).
    std::int64_t count() const {
        const std::uint64_t s = state_.load(std::memory_order_acquire);
        return static_cast<std::int32_t>(low(added_.load(std::memory_order_acquire)) - done_of(s));
    }

    // --- destruction ---------------------------------------------------------

    /// The group is being destroyed (see DESTRUCTION): moves the waiters
    /// still parked to `parked` (the caller wakes them), orphans the released
    /// waiters that have not begun to return, and waits until those that have
    /// are done with the group. Takes the lock once; afterwards nobody touches
    /// the group.
    void destroy(waiter_list<Node>& parked) {
        {
            std::lock_guard g(lock_);
            destroying_ = true;
            parked = std::move(waiters_);
            std::uint64_t orphaned = 0;
            for (Node* w = woken_; w;) {
                Node* next = w->rnext;  // read first: once orphaned, the node may be gone
                unsigned char expected = wait_node_pending;
                if (w->st.compare_exchange_strong(expected, wait_node_orphaned, std::memory_order_acq_rel)) ++orphaned;
                w = next;
            }
            woken_ = nullptr;
            if (orphaned) returning_.fetch_sub(orphaned, std::memory_order_acq_rel);
        }
        if constexpr (Mutation == 3) return;
        // The waiters that began to return unlink themselves under the lock,
        // then leave the count as their last step; only loads here.
        int spins = 0;
        while (returning_.load(std::memory_order_acquire) != 0) Policy::spin(spins);
    }

    // --- the protocol's steps (see the top of this file) ---------------------

    /// The counter is zero, seen from state `s` (read before added_).
    bool zero(std::uint64_t s) const {
        constexpr std::uint64_t blocking = Mutation == 2 ? releasing_bit : (busy_mask | releasing_bit);
        if (s & blocking) return false;
        return done_of(s) == low(added_.load(std::memory_order_acquire));
    }

    /// Seen by the holder of `releasing` (which it ignores): waiters are
    /// listed, no finisher is busy, and the counter is zero.
    bool zero_with_waiters(std::uint64_t s) const {
        return (s & busy_mask) == 0 && (s & waiters_bit) && done_of(s) == low(added_.load(std::memory_order_acquire));
    }

    /// Any done() but the common one: a retried claim, or one that becomes busy.
    [[gnu::noinline]] void finish_slow(std::uint32_t n, const char* op, std::uint64_t s) {
        const std::uint32_t hint = hint_.load(std::memory_order_relaxed);
        for (;;) {
            const bool sure_positive = !at_least(done_of(s) + n, hint);
            const std::uint64_t claim = std::uint64_t(n) * done_one + (sure_positive ? 0 : busy_one);
            if (state_.compare_exchange_weak(s, s + claim, std::memory_order_acq_rel, std::memory_order_relaxed)) {
                if (sure_positive) return;  // the counter is above zero: nothing to look at
                break;
            }
        }
        // Busy: no waiter can see zero until this finisher leaves.
        const std::uint32_t done_now = done_of(s) + n;
        const std::uint32_t added = low(added_.load(std::memory_order_acquire));
        const bool negative = !at_least(added, done_now);
        if (!negative && added != hint) hint_.store(added, std::memory_order_relaxed);
        // Leave: drop busy (and take back a bad done); decide whether to release.
        const std::uint64_t leave = busy_one + (negative ? std::uint64_t(n) * done_one : 0);
        s = state_.load(std::memory_order_relaxed);
        bool release;
        for (;;) {
            std::uint64_t ns = s - leave;
            release = (ns & busy_mask) == 0 && (ns & waiters_bit) && !(ns & releasing_bit) &&
                      at_least(done_of(ns), added);
            if (release) ns |= releasing_bit;
            if (state_.compare_exchange_weak(s, ns, std::memory_order_acq_rel, std::memory_order_relaxed)) break;
        }
        if (release) {
            returning_.fetch_add(releaser_one, std::memory_order_acq_rel);  // see MISUSE
            release_waiters();
        }
        if (negative) {
            const std::int64_t before = static_cast<std::int32_t>(added - (done_now - n));
            throw usage_error(std::string(op) + ": negative counter (" + std::to_string(before) + " - " +
                              std::to_string(n) + ")");
        }
    }

    /// The caller set `releasing`: take every listed waiter if the counter is
    /// zero, drop `releasing`, then wake them.
    void release_waiters() {
        waiter_list<Node> taken;
        for (;;) {
            {
                std::lock_guard g(lock_);
                if (zero_with_waiters(state_.load(std::memory_order_acquire))) {
                    std::uint64_t k = 0;
                    for (Node* w = waiters_.front(); w; w = w->next, ++k) link_woken(*w);
                    returning_.fetch_add(k, std::memory_order_acq_rel);
                    taken.splice_back(waiters_);
                    state_.fetch_and(~waiters_bit, std::memory_order_acq_rel);
                }
            }
            // Drop `releasing`, unless waiters linked themselves meanwhile at zero.
            std::uint64_t s = state_.load(std::memory_order_acquire);
            bool again = false;
            bool counted = true;  // our releaser_one in returning_, dropped just before `releasing`
            for (;;) {
                if (Mutation != 1 && zero_with_waiters(s)) {
                    again = true;
                    break;
                }
                if (counted) {
                    returning_.fetch_sub(releaser_one, std::memory_order_acq_rel);
                    counted = false;
                }
                if (state_.compare_exchange_weak(s, s & ~releasing_bit, std::memory_order_acq_rel,
                                                 std::memory_order_acquire))
                    break;
            }
            if (!again) break;
            if (!counted) returning_.fetch_add(releaser_one, std::memory_order_acq_rel);
        }
        // The group may be gone from here on; only the parked waiters' nodes are touched.
        while (Node* w = taken.pop_front()) w->wake();  // reads w->next before the wake
    }

    /// add() raised the counter from `before` while somebody is being
    /// released or has not returned from wait(): misuse if the counter was zero.
    [[gnu::noinline, gnu::cold]] void check_reuse(std::uint32_t before, std::uint32_t n) {
        const std::uint64_t s = state_.load(std::memory_order_acquire);
        if (done_of(s) != before) return;  // the counter was above zero: an ordinary add
        const std::uint64_t r = returning_.load(std::memory_order_acquire);
        finish(n, "goro::wait_group::add");  // undo: the counter goes back to zero
        if (static_cast<std::uint32_t>(r) != 0)
            throw usage_error("goro::wait_group::add: wait group is reused before the previous wait has returned (" +
                              std::to_string(static_cast<std::uint32_t>(r)) +
                              " tasks released at zero are still returning from wait())");
        throw usage_error("goro::wait_group::add: add called concurrently with wait (the counter was zero while "
                          "its waiters were being released)");
    }

    void link_woken(Node& w) noexcept {  // under lock_
        w.released = true;
        w.rprev = nullptr;
        w.rnext = woken_;
        if (woken_) woken_->rprev = &w;
        woken_ = &w;
    }
    void unlink_woken(Node& w) noexcept {  // under lock_
        if (w.rprev) w.rprev->rnext = w.rnext;
        else woken_ = w.rnext;
        if (w.rnext) w.rnext->rprev = w.rprev;
        w.rprev = w.rnext = nullptr;
    }

    alignas(cache_line) atomic<std::uint64_t> added_{0};
    // On added_'s line: releasers at work << 32 | released waiters not yet returned (MISUSE).
    atomic<std::uint64_t> returning_{0};
    alignas(cache_line) atomic<std::uint64_t> state_{0};
    atomic<std::uint32_t> hint_{0};
    Lock lock_;
    waiter_list<Node> waiters_;  // under lock_
    Node* woken_ = nullptr;      // under lock_: released, not yet returned
    bool destroying_ = false;    // under lock_: destroy() has run; `woken_` is dead
};

}  // namespace goro::detail
// ---- end goro/sync/wait_count.hpp ----

namespace goro {

/// A `goro::wait_group` was destroyed while tasks waited on it; thrown from their `wait()`.
class wait_group_destroyed : public error {
public:
    using error::error;
};

class wait_group {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        const char* destroyed_msg = nullptr;  // set by ~wait_group before the wake-up
        std::uint32_t destroyed_count = 0;
        // Released and not yet returned (see wait_count.hpp, MISUSE): linked in `woken_`.
        bool released = false;  // set by the releaser, under lock_
        waiter_node* rprev = nullptr;
        waiter_node* rnext = nullptr;
        std::atomic<unsigned char> st{detail::wait_node_pending};

        waiter_node() = default;
        waiter_node(const waiter_node&) noexcept {}  // an awaiter is copied only before it parks
        void wake() noexcept { detail::ready(task); }
    };
    using counter = detail::basic_wait_count<detail::machine_policy,
                                             detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters>,
                                             waiter_node>;

public:
    /// Awaiter of `wait()`: parks until the counter is zero. Copyable until it
    /// suspends (g++ may move the operand of co_await); the node is linked only
    /// in await_suspend.
    class [[nodiscard("goro::wait_group::wait: co_await it"), gnu::warn_unused]] wait_operation {
    public:
        using is_goro_awaiter = void;
        explicit wait_operation(wait_group& wg) noexcept : wg_(&wg) {}

        bool await_ready() const noexcept { return wg_->c_.at_zero(); }

        bool await_suspend(std::coroutine_handle<> h);

        void await_resume();

    private:
        wait_group* wg_;
        waiter_node node_{};
    };

    wait_group() noexcept = default;
    /// Starts with `n` (≥ 0) outstanding tasks, like `wg.Add(n)` right after construction.
    explicit wait_group(std::int64_t n) { add(n); }
    wait_group(const wait_group&) = delete;
    wait_group& operator=(const wait_group&) = delete;

    ~wait_group();

    /// Adds `n` (may be negative) to the counter. Throws goro::usage_error when
    /// `n` is out of the counter's range, when the counter would go below
    /// zero, or on the misuse Go detects (see wait_count.hpp, MISUSE): raising
    /// the counter from zero while waiters released at that zero have not
    /// returned from wait() yet, or while they are being released. The counter
    /// is then left as it was.
    void add(std::int64_t n);

    /// Marks one task finished: `add(-1)`.
    void done();

    /// `co_await wg.wait()`: parks until the counter is zero (at once if it is).
    [[nodiscard("goro::wait_group::wait: co_await it")]] wait_operation wait() noexcept { return wait_operation(*this); }

    /// The counter now (for diagnostics; stale as soon as it is read).
    std::int64_t count() const noexcept { return c_.count(); }

private:
    counter c_;
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL bool wait_group::wait_operation::await_suspend(std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::wait_group::wait");
    node_.task = t;
    detail::park(t, h, wait_reason::wait_group);
    counter& c = wg_->c_;
    std::lock_guard g(c.lock_);
    if (c.enqueue(node_)) return true;  // published: from here on a releaser owns the node
    t->state.store(task_state::running, std::memory_order_relaxed);
    return false;  // reached zero meanwhile: continue without parking
}

GORO_DECL void wait_group::wait_operation::await_resume() {
    if (node_.released) wg_->c_.returned(node_);
    if (node_.destroyed_msg)
        throw wait_group_destroyed(std::string(node_.destroyed_msg) + " (" +
                                   std::to_string(node_.destroyed_count) + " tasks were waiting)");
}

GORO_DECL wait_group::~wait_group() {
    detail::waiter_list<waiter_node> parked;
    c_.destroy(parked);  // the group's last step: nobody touches it after
    const std::size_t n = parked.size();
    parked.wake_all([n](waiter_node& w) noexcept {
        w.destroyed_msg = "goro::wait_group::wait: the wait group was destroyed while this task waited";
        w.destroyed_count = static_cast<std::uint32_t>(n);
    });
}

GORO_DECL void wait_group::add(std::int64_t n) {
    if (n > std::numeric_limits<std::int32_t>::max() || n < -std::int64_t(std::numeric_limits<std::int32_t>::max()))
        throw usage_error("goro::wait_group::add: delta " + std::to_string(n) + " is out of range");
    if (n > 0) c_.add(static_cast<std::uint32_t>(n));
    else if (n < 0) c_.finish(static_cast<std::uint32_t>(-n), "goro::wait_group::add");
}

GORO_DECL void wait_group::done() { c_.finish(1, "goro::wait_group::done"); }

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/sync/wait_group.hpp ----

// ---- begin goro/sync/mutex.hpp ----
// goro/sync/mutex.hpp — `goro::mutex`: a mutual-exclusion lock for goro tasks.
//
//   goro::mutex m;
//   co_await m.lock();  ...  m.unlock();
//   { auto g = co_await m.scoped_lock(); ... }     // unlocked when g goes out of scope
//   if (m.try_lock()) { ... m.unlock(); }
//
// Go's sync.Mutex for coroutines: a task that finds the mutex locked parks
// (wait reason `sync.Mutex.Lock`) instead of blocking its worker thread. Like
// Go's, it is not tied to an owner: any task or thread may unlock it.
//
// FAIRNESS: direct hand-off, always. `unlock` with waiters does not release
// the mutex; it passes ownership to the longest-waiting task, which resumes
// already holding it. A newcomer can take the mutex only while nobody waits,
// so no waiter starves (Go gets the same guarantee from its starvation mode,
// entered after a waiter has waited 1 ms; goro pays the hand-off from the
// start, which costs throughput under heavy contention but keeps FIFO order).
//
// STATE (one word): bit 0 = locked, bits 1.. = number of parked waiters.
//   lock/try_lock fast path: CAS 0 -> 1. unlock fast path: CAS 1 -> 0.
//
// INVARIANTS (under `lock_`): the waiter bits equal the length of the waiter
// list; waiters are counted and linked in one critical section, and unlinked
// and uncounted in one. While waiters exist the locked bit is set (a waiter
// parks only after seeing it set, and unlock hands over instead of clearing it).
//
// THREAD SAFETY: lock order is `lock_` only; a hand-off readies the waiter
// after `lock_` is released. The waiter resumes on whichever worker picks it up.
//
// DESTRUCTION with tasks parked in `lock()` is a bug (they would wait forever):
// the destructor wakes them with `goro::mutex_destroyed` thrown from their
// `co_await m.lock()`.

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>


namespace goro {

/// A `goro::mutex` was destroyed while tasks waited to lock it; thrown from their `lock()`.
class mutex_destroyed : public error {
public:
    using error::error;
};

class mutex;
class cond;

/// Owns a locked `goro::mutex` and unlocks it on destruction (from `co_await m.scoped_lock()`).
/// Movable, like std::unique_lock; `unlock()` releases it early.
class lock_guard {
public:
    lock_guard() noexcept = default;
    explicit lock_guard(goro::mutex& m, std::adopt_lock_t) noexcept : m_(&m) {}
    lock_guard(lock_guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    lock_guard& operator=(lock_guard&& o) noexcept;
    lock_guard(const lock_guard&) = delete;
    lock_guard& operator=(const lock_guard&) = delete;
    ~lock_guard() { release_lock(); }

    /// Unlocks now; throws goro::usage_error when this guard owns nothing.
    void unlock();
    bool owns_lock() const noexcept { return m_ != nullptr; }
    explicit operator bool() const noexcept { return owns_lock(); }
    goro::mutex* mutex() const noexcept { return m_; }

private:
    void release_lock() noexcept;
    goro::mutex* m_ = nullptr;
};

class mutex {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        bool destroyed = false;  // set by ~mutex before the wake-up
    };

public:
    /// Awaiter of `lock()`: resumes holding the mutex. Copyable until it
    /// suspends (g++ may move the operand of co_await).
    class [[nodiscard("goro::mutex::lock: co_await it"), gnu::warn_unused]] lock_operation {
    public:
        using is_goro_awaiter = void;
        explicit lock_operation(mutex& m) noexcept : m_(&m) {}
        bool await_ready() noexcept { return m_->try_lock(); }
        bool await_suspend(std::coroutine_handle<> h) { return m_->enqueue(node_, h); }
        void await_resume() const;

    protected:
        mutex* m_;
        waiter_node node_{};
    };

    /// Awaiter of `scoped_lock()`: like lock_operation, resumes with a guard.
    // warn_unused: `auto g = m.scoped_lock();` (no co_await) locks nothing, and
    // g is never used: the compilers warn "unused variable" (an error under -Werror).
    class [[nodiscard("goro::mutex::scoped_lock: co_await it: auto g = co_await m.scoped_lock()"),
            gnu::warn_unused]] scoped_lock_operation : public lock_operation {
    public:
        using lock_operation::lock_operation;
        [[nodiscard]] lock_guard await_resume() const {
            lock_operation::await_resume();
            return lock_guard(*m_, std::adopt_lock);
        }
    };

    mutex() noexcept = default;
    mutex(const mutex&) = delete;
    mutex& operator=(const mutex&) = delete;

    ~mutex();

    /// `co_await m.lock()`: parks (FIFO) until this task owns the mutex.
    [[nodiscard("goro::mutex::lock: co_await it")]] lock_operation lock() noexcept { return lock_operation(*this); }

    /// `auto g = co_await m.scoped_lock()`: as lock(), returning a guard that unlocks.
    [[nodiscard("goro::mutex::scoped_lock: co_await it")]] scoped_lock_operation scoped_lock() noexcept { return scoped_lock_operation(*this); }

    /// Takes the mutex if it is free and nobody waits; never parks.
    bool try_lock() noexcept {
        std::uint32_t expected = 0;
        return state_.compare_exchange_strong(expected, locked, std::memory_order_acquire, std::memory_order_relaxed);
    }

    /// Releases the mutex, or hands it to the longest waiter. Throws
    /// goro::usage_error when the mutex is not locked.
    void unlock();

    /// True while some task holds the mutex (a hint: stale once read).
    bool is_locked() const noexcept { return state_.load(std::memory_order_relaxed) & locked; }

private:
    friend class cond;
    static constexpr std::uint32_t locked = 1;
    static constexpr std::uint32_t one_waiter = 2;

    /// For goro::cond (a waiter moved from the condition to the mutex: Go's
    /// woken waiter relocks): takes the mutex for `n`'s parked task (true:
    /// the caller readies it), or queues `n` for an unlock's hand-off (false:
    /// the node belongs to the mutex from then on).
    bool lock_for(waiter_node& n) noexcept;

    /// Slow path of lock(): take the mutex, or count and link `n` and park.
    bool enqueue(waiter_node& n, std::coroutine_handle<> h);

    alignas(detail::cache_line) std::atomic<std::uint32_t> state_{0};
    detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    detail::waiter_list<waiter_node> waiters_;  // under lock_
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL lock_guard& lock_guard::operator=(lock_guard&& o) noexcept {
    if (this != &o) {
        release_lock();
        m_ = std::exchange(o.m_, nullptr);
    }
    return *this;
}

GORO_DECL void mutex::lock_operation::await_resume() const {
    if (node_.destroyed)
        throw mutex_destroyed("goro::mutex::lock: the mutex was destroyed while this task waited for it");
}

GORO_DECL mutex::~mutex() {
    detail::wake_destroyed(waiters_, lock_, [](waiter_node& w, std::size_t) noexcept { w.destroyed = true; });
}

GORO_DECL void mutex::unlock() {
    for (;;) {
        std::uint32_t s = state_.load(std::memory_order_relaxed);
        if (!(s & locked)) throw usage_error("goro::mutex::unlock: unlock of an unlocked mutex");
        if (s == locked) {
            if (state_.compare_exchange_weak(s, 0, std::memory_order_release, std::memory_order_relaxed)) return;
            continue;
        }
        waiter_node* w;
        {
            std::lock_guard g(lock_);
            w = waiters_.pop_front();
            if (!w) continue;  // only a racing second unlock (a misuse) gets here; re-check
            // The locked bit stays: ownership passes to `w`. Its critical
            // section sees ours through the scheduler's queue (release/acquire).
            state_.fetch_sub(one_waiter, std::memory_order_release);
        }
        detail::ready(w->task);
        return;
    }
}

GORO_DECL bool mutex::lock_for(waiter_node& n) noexcept {
    std::lock_guard g(lock_);
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
        if (!(s & locked)) {
            if (state_.compare_exchange_weak(s, s | locked, std::memory_order_acquire, std::memory_order_relaxed))
                return true;
        } else if (state_.compare_exchange_weak(s, s + one_waiter, std::memory_order_relaxed,
                                                std::memory_order_relaxed)) {
            break;
        }
    }
    n.task->wait_reason.store(wait_reason::mutex_lock, std::memory_order_relaxed);
    waiters_.push_back(n);
    return false;
}

GORO_DECL bool mutex::enqueue(waiter_node& n, std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::mutex::lock");
    n.task = t;
    detail::park(t, h, wait_reason::mutex_lock);
    std::lock_guard g(lock_);
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
        if (!(s & locked)) {
            // Free now. No one waits (waiters keep the bit set), so no one is bypassed.
            if (state_.compare_exchange_weak(s, s | locked, std::memory_order_acquire, std::memory_order_relaxed)) {
                t->state.store(task_state::running, std::memory_order_relaxed);
                return false;
            }
        } else if (state_.compare_exchange_weak(s, s + one_waiter, std::memory_order_relaxed,
                                                std::memory_order_relaxed)) {
            break;
        }
    }
    waiters_.push_back(n);
    return true;  // published: the unlocker owns the node now
}

GORO_DECL void lock_guard::unlock() {
    if (!m_) throw usage_error("goro::lock_guard::unlock: the guard does not own a mutex");
    std::exchange(m_, nullptr)->unlock();
}

GORO_DECL void lock_guard::release_lock() noexcept {
    // Cannot throw: a guard only ever holds a mutex it locked.
    if (m_) std::exchange(m_, nullptr)->unlock();
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/sync/mutex.hpp ----

// ---- begin goro/sync/semaphore.hpp ----
// goro/sync/semaphore.hpp — `goro::semaphore`: a counting semaphore for goro tasks.
//
//   goro::semaphore slots(4);          // four permits
//   co_await slots.acquire();          // or acquire(n) for n permits at once
//   ...
//   slots.release();                   // or release(n)
//   { auto p = co_await slots.scoped_acquire(); ... }   // a permit: released when p goes
//
// A task that cannot get its permits parks (wait reason `semacquire`, Go's
// word for its runtime semaphore). Like golang.org/x/sync/semaphore.Weighted,
// waiters are served strictly in FIFO order: a newcomer never overtakes a
// parked waiter, even when enough permits are free for the newcomer but not for
// the waiter at the head (so a large acquire cannot starve behind small ones).
//
// INVARIANTS (under `lock_`): `count_` ≥ 0 is the number of free permits; when
// the waiter list is non-empty, its head needs more than `count_`.
//
// THREAD SAFETY: every operation takes `lock_` (a spinlock, a few instructions
// long); `release` collects the waiters it satisfies, unlocks, then readies
// them in FIFO order. Any thread may release; acquire is awaited in a goro task.
//
// DESTRUCTION with tasks parked in `acquire` is a bug: the destructor wakes them
// with `goro::semaphore_destroyed` thrown from their `co_await s.acquire()`.

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>


namespace goro {

/// A `goro::semaphore` was destroyed while tasks waited on it; thrown from their `acquire()`.
class semaphore_destroyed : public error {
public:
    using error::error;
};

class semaphore {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        std::int64_t want = 0;
        bool destroyed = false;  // set by ~semaphore before the wake-up
    };

public:
    /// Awaiter of `acquire(n)`. Copyable until it suspends (g++ may move the
    /// operand of co_await); the node is linked only in await_suspend.
    class [[nodiscard("goro::semaphore::acquire: co_await it"), gnu::warn_unused]] acquire_operation {
    public:
        using is_goro_awaiter = void;
        acquire_operation(semaphore& s, std::int64_t n) noexcept : s_(&s) { node_.want = n; }
        bool await_ready() noexcept { return s_->try_acquire(node_.want); }
        bool await_suspend(std::coroutine_handle<> h) { return s_->enqueue(node_, h); }
        void await_resume() const;

    protected:
        semaphore* s_;
        waiter_node node_{};
    };

    /// Holds `count()` permits of a semaphore and releases them on
    /// destruction; obtained from `co_await s.scoped_acquire(n)` or
    /// `s.try_scoped_acquire(n)`. Movable; `release()` gives them back early.
    class permit {
    public:
        permit() noexcept = default;
        permit(permit&& o) noexcept : s_(std::exchange(o.s_, nullptr)), n_(std::exchange(o.n_, 0)) {}
        permit& operator=(permit&& o) noexcept;
        permit(const permit&) = delete;
        permit& operator=(const permit&) = delete;
        ~permit() { give_back(); }

        /// Releases the permits now; throws goro::usage_error when this permit holds none.
        void release();
        bool owns() const noexcept { return s_ != nullptr; }
        explicit operator bool() const noexcept { return owns(); }
        /// The number of permits held (0 when empty).
        std::int64_t count() const noexcept { return s_ ? n_ : 0; }

    private:
        friend class semaphore;
        permit(semaphore& s, std::int64_t n) noexcept : s_(&s), n_(n) {}
        void give_back() noexcept {
            // Cannot throw: the permits were taken from this semaphore.
            if (s_) std::exchange(s_, nullptr)->release_nothrow(std::exchange(n_, 0));
        }
        semaphore* s_ = nullptr;
        std::int64_t n_ = 0;
    };

    /// Awaiter of `scoped_acquire(n)`: as acquire_operation, resuming with a permit.
    class scoped_acquire_operation : public acquire_operation {
    public:
        using acquire_operation::acquire_operation;
        [[nodiscard]] permit await_resume() const {
            acquire_operation::await_resume();
            return permit(*s_, node_.want);
        }
    };

    /// A semaphore with `initial` (≥ 0) free permits.
    explicit semaphore(std::int64_t initial);
    semaphore(const semaphore&) = delete;
    semaphore& operator=(const semaphore&) = delete;

    ~semaphore();

    /// `co_await s.acquire(n)`: parks (FIFO) until `n` permits are taken.
    /// Throws goro::usage_error (at once) for n < 0; n == 0 waits only for its turn.
    [[nodiscard("goro::semaphore::acquire: co_await it")]] acquire_operation acquire(std::int64_t n = 1) {
        check(n, "goro::semaphore::acquire");
        return acquire_operation(*this, n);
    }

    /// `auto p = co_await s.scoped_acquire(n)`: as acquire(n), returning a
    /// permit that releases the n permits when it goes out of scope.
    [[nodiscard("goro::semaphore::scoped_acquire: co_await it, and keep the permit")]] scoped_acquire_operation
    scoped_acquire(std::int64_t n = 1) {
        check(n, "goro::semaphore::scoped_acquire");
        return scoped_acquire_operation(*this, n);
    }

    /// A permit for `n` permits if they are free and nobody waits, else an
    /// empty one (false); never parks.
    [[nodiscard("goro::semaphore::try_scoped_acquire: keep the permit")]] permit try_scoped_acquire(std::int64_t n = 1);

    /// Takes `n` permits when they are free and nobody waits; never parks.
    bool try_acquire(std::int64_t n = 1);

    /// Returns `n` permits and wakes, in FIFO order, every waiter they now satisfy.
    void release(std::int64_t n = 1) {
        check(n, "goro::semaphore::release");
        add_permits(n, true);
    }

private:
    /// release(n) for permits known to have been taken (cannot overflow).
    void release_nothrow(std::int64_t n) noexcept { add_permits(n, false); }

    void add_permits(std::int64_t n, bool check_overflow);

public:
    /// Free permits now (a hint: stale once read).
    std::int64_t available() const noexcept {
        std::lock_guard g(lock_);
        return count_;
    }

private:
    static void check(std::int64_t n, const char* op);

    bool enqueue(waiter_node& n, std::coroutine_handle<> h);

    mutable detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    std::int64_t count_;
    detail::waiter_list<waiter_node> waiters_;  // under lock_
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL void semaphore::acquire_operation::await_resume() const {
    if (node_.destroyed)
        throw semaphore_destroyed("goro::semaphore::acquire: the semaphore was destroyed while this task waited");
}

GORO_DECL semaphore::permit& semaphore::permit::operator=(permit&& o) noexcept {
    if (this != &o) {
        give_back();
        s_ = std::exchange(o.s_, nullptr);
        n_ = std::exchange(o.n_, 0);
    }
    return *this;
}

GORO_DECL void semaphore::permit::release() {
    if (!s_) throw usage_error("goro::semaphore::permit::release: the permit holds nothing");
    give_back();
}

GORO_DECL semaphore::semaphore(std::int64_t initial) : count_(initial) {
    if (initial < 0) throw usage_error("goro::semaphore: negative initial count " + std::to_string(initial));
}

GORO_DECL semaphore::~semaphore() {
    detail::wake_destroyed(waiters_, lock_, [](waiter_node& w, std::size_t) noexcept { w.destroyed = true; });
}

GORO_DECL semaphore::permit semaphore::try_scoped_acquire(std::int64_t n) {
    check(n, "goro::semaphore::try_scoped_acquire");
    if (!try_acquire(n)) return permit();
    return permit(*this, n);
}

GORO_DECL bool semaphore::try_acquire(std::int64_t n) {
    check(n, "goro::semaphore::try_acquire");
    std::lock_guard g(lock_);
    if (!waiters_.empty() || count_ < n) return false;
    count_ -= n;
    return true;
}

GORO_DECL void semaphore::add_permits(std::int64_t n, bool check_overflow) {
    detail::waiter_list<waiter_node> wake;
    {
        std::lock_guard g(lock_);
        if (check_overflow && count_ > std::numeric_limits<std::int64_t>::max() - n)
            throw usage_error("goro::semaphore::release: count overflow");
        count_ += n;
        while (!waiters_.empty() && waiters_.front()->want <= count_) {
            count_ -= waiters_.front()->want;
            wake.push_back(*waiters_.pop_front());
        }
    }
    wake.wake_all();
}

GORO_DECL void semaphore::check(std::int64_t n, const char* op) {
    if (n < 0) throw usage_error(std::string(op) + ": negative count " + std::to_string(n));
}

GORO_DECL bool semaphore::enqueue(waiter_node& n, std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::semaphore::acquire");
    n.task = t;
    detail::park(t, h, wait_reason::semacquire);
    std::lock_guard g(lock_);
    if (waiters_.empty() && count_ >= n.want) {  // released meanwhile
        count_ -= n.want;
        t->state.store(task_state::running, std::memory_order_relaxed);
        return false;
    }
    waiters_.push_back(n);
    return true;  // published: a releaser owns the node now
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/sync/semaphore.hpp ----

// ---- begin goro/sync/errgroup.hpp ----
// goro/sync/errgroup.hpp — `goro::errgroup`: a group of tasks working on one job,
// with the first failure cancelling the rest (golang.org/x/sync/errgroup).
//
//   auto [g, ctx] = goro::errgroup::with_context(parent);
//   for (auto& url : urls) co_await g.go(fetch(ctx, url));   // fetch may throw
//   co_await g.wait();              // after all finished: rethrows the first error
//   std::exception_ptr e = co_await g.wait_error();          // or: returns it (null: none)
//
// SEMANTICS (Go's):
//   * `co_await g.go(t)` starts `t` with goro::go (so it is a registered
//     task, "created by" the caller of go). An exception escaping `t` does not
//     crash the process: the first one becomes the group's error and cancels
//     the group's context (with that exception as the context's cause, see
//     goro::cause). Later errors are dropped, as in Go.
//   * `co_await g.wait()` returns once every started task has finished, and
//     rethrows the first error (Go's Wait returns it; `wait_error()` does).
//     It then cancels the group's context too (Go does, so a context derived
//     for the group never outlives it).
//   * Tasks see the cancellation only if they look: `ctx.done()` in a select,
//     `co_await ctx.done()`, or `ctx.throw_if_done()`. That is what stops the
//     classic leak of siblings left running after one failed.
//
// LIMIT on tasks in flight (Go's SetLimit/TryGo):
//   * `g.set_limit(n)`: at most n tasks in flight (n < 0: no limit, the default).
//     Throws goro::usage_error while tasks are in flight (Go panics).
//   * `co_await g.go(t)`: with the limit reached, waits for a free slot (wait
//     reason `semacquire`, as Go's blocked Go), then starts `t`. Without a
//     limit, or with a slot free, it starts `t` at once and never suspends.
//     From a plain thread: `goro::block_on(g.go(t))`.
//   * `g.try_go(std::move(t))`: starts `t` if a slot is free; else returns
//     false and leaves `t` with the caller (Go's TryGo).
//   go() is [[nodiscard]]: `g.go(t);` without co_await starts nothing, and
//   the compiler says so.
//
// A group is a shared handle (copies refer to the same group), so it can be
// returned from with_context, captured by tasks, and outlive its creator while
// tasks run. The state is freed with the last handle and the last task.
//
// THREAD SAFETY: every member may be called from any task or thread, except
// set_limit, which must not race with starting tasks. `mu` guards the first
// error only; the context is cancelled after `mu` is released.

#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>


namespace goro {

class errgroup {
    struct state {
        wait_group wg;                      // counts tasks in flight
        detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> mu;  // guards err
        std::exception_ptr err;
        goro::context ctx;                  // background when the group has none
        cancel_func cancel;                 // empty when the group has no context
        std::unique_ptr<semaphore> limit;   // null: no limit

        void fail(std::exception_ptr e) noexcept;
    };

public:
    /// A group without a context (Go's zero Group): errors are collected, nothing is cancelled.
    errgroup() : s_(std::make_shared<state>()) {}

    /// A group whose context is derived from `parent`; cancelled on the first
    /// error and when wait() returns. Tasks get it from `ctx()`.
    explicit errgroup(const goro::context& parent);

    /// `auto [g, ctx] = goro::errgroup::with_context(parent);` (Go's errgroup.WithContext).
    static std::pair<errgroup, goro::context> with_context(const goro::context& parent);

    /// The group's context (background for a group made without one).
    const goro::context& ctx() const noexcept { return s_->ctx; }

    /// Limits the tasks in flight to `n` (n < 0: no limit). Throws
    /// goro::usage_error while any task of the group is in flight.
    void set_limit(std::int64_t n);

    // go, try_go and wait, and what they call down to the group's
    // coroutines, are templates (of a parameter nobody passes) only so that
    // a program compiles them where it uses them: g++ 12 emits the body of
    // every coroutine it instantiates, or that is not a template, in every
    // translation unit that sees it, used or not, with all that it calls.

    /// Awaiter of go(t): starts `t` at once when the limit allows, else first
    /// parks (semacquire) until a task of the group finishes.
    template <int N>
    class go_operation {
    public:
        using is_goro_awaiter = void;
        go_operation(std::shared_ptr<state> s, task<> t, task_options options, const detail::site& where)
            : s_(std::move(s)), t_(std::move(t)), options_(std::move(options)), where_(where) {}

        bool await_ready() {
            semaphore* limit = s_->limit.get();
            if (limit && !limit->try_acquire()) {
                acquire_.emplace(limit->acquire());
                return false;
            }
            errgroup::start<N>(s_, std::move(t_), std::move(options_), where_);
            started_ = true;
            return true;
        }
        bool await_suspend(std::coroutine_handle<> h) { return acquire_->await_suspend(h); }
        void await_resume() {
            if (started_) return;
            acquire_->await_resume();
            errgroup::start<N>(s_, std::move(t_), std::move(options_), where_);
        }

    private:
        std::shared_ptr<state> s_;
        task<> t_;
        task_options options_;
        detail::site where_;
        std::optional<semaphore::acquire_operation> acquire_;
        bool started_ = false;
    };

    /// `co_await g.go(t)` (Go's Group.Go): starts `t`; under a reached limit,
    /// waits for a slot first. Pass a named `task_options` variable, not a
    /// braced temporary: g++ 12 relocates temporaries that appear in a
    /// co_await expression bitwise, which breaks a std::string inside them.
    template <int N = 0>
    [[nodiscard("goro::errgroup::go: co_await it (without, the task is never started)")]] go_operation<N> go(
        task<> t, GORO_SITE_PARAM) {
        if (!t) throw usage_error("goro::errgroup::go: the task is empty (moved-from or default-constructed)");
        return go_operation<N>(s_, std::move(t), task_options(), GORO_SITE_ARG);
    }

    /// As go(t), with a name and labels. (No defaulted `options = {}`: a
    /// default argument is a braced temporary in the caller's co_await
    /// expression, the very thing g++ 12 destroys twice.)
    template <int N = 0>
    [[nodiscard("goro::errgroup::go: co_await it (without, the task is never started)")]] go_operation<N> go(
        task<> t, const task_options& options, GORO_SITE_PARAM) {
        if (!t) throw usage_error("goro::errgroup::go: the task is empty (moved-from or default-constructed)");
        return go_operation<N>(s_, std::move(t), options, GORO_SITE_ARG);
    }

    /// Starts `t` if the limit allows; otherwise returns false and leaves `t` alone.
    template <int N = 0>
    bool try_go(task<>&& t, task_options options = {}, GORO_SITE_PARAM) {
        if (!t) throw usage_error("goro::errgroup::try_go: the task is empty (moved-from or default-constructed)");
        if (s_->limit && !s_->limit->try_acquire()) return false;
        start<N>(s_, std::move(t), std::move(options), GORO_SITE_ARG);
        return true;
    }

    /// `co_await g.wait()` (Go's Group.Wait): once every started task has
    /// finished, cancels the group's context and rethrows the first error.
    template <int N = 0>
    [[nodiscard("goro::errgroup::wait: co_await it")]] task<> wait() const {
        return wait_rethrow<N>(s_);
    }

    /// `co_await g.wait_error()`: as wait(), returning the first error (null
    /// when none failed) instead of throwing it.
    template <int N = 0>
    [[nodiscard("goro::errgroup::wait_error: co_await it")]] task<std::exception_ptr> wait_error() const {
        return wait_body<N>(s_);
    }

private:
    /// Starts `t` in the group `s`, whose limit (if any) has a slot taken for it.
    template <int N>
    static void start(const std::shared_ptr<state>& s, task<> t, task_options options, const detail::site& where) {
        s->wg.add(1);
        try {
            launch(run<N>(s, std::move(t)), std::move(options), where);
        } catch (...) {
            s->wg.done();
            if (s->limit) s->limit->release();
            throw;
        }
    }

    static void launch(task<> t, task_options options, const detail::site& where);

    template <int N>
    static task<> run(std::shared_ptr<state> s, task<> t) {
        std::exception_ptr e;
        try {
            co_await std::move(t);
        } catch (...) {
            e = std::current_exception();
        }
        if (e) s->fail(std::move(e));
        if (s->limit) s->limit->release();  // the slot first: a go() may be waiting for it
        s->wg.done();                       // last touch of the group by this task
    }

    template <int N>
    static task<std::exception_ptr> wait_body(std::shared_ptr<state> s) {
        co_await s->wg.wait();
        s->cancel();
        std::lock_guard g(s->mu);
        co_return s->err;
    }

    template <int N>
    static task<> wait_rethrow(std::shared_ptr<state> s) {
        if (std::exception_ptr e = co_await wait_body<N>(std::move(s))) std::rethrow_exception(std::move(e));
    }

    std::shared_ptr<state> s_;
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL void errgroup::state::fail(std::exception_ptr e) noexcept {
    bool first = false;
    {
        std::lock_guard g(mu);
        if (!err) {
            err = e;
            first = true;
        }
    }
    if (first) cancel(std::move(e));
}

GORO_DECL errgroup::errgroup(const goro::context& parent) : s_(std::make_shared<state>()) {
    auto [c, cancel] = with_cancel(parent);
    s_->ctx = std::move(c);
    s_->cancel = std::move(cancel);
}

GORO_DECL std::pair<errgroup, goro::context> errgroup::with_context(const goro::context& parent) {
    errgroup g(parent);
    goro::context c = g.ctx();
    return {std::move(g), std::move(c)};
}

GORO_DECL void errgroup::set_limit(std::int64_t n) {
    if (std::int64_t active = s_->wg.count(); active != 0)
        throw usage_error("goro::errgroup::set_limit: cannot change the limit while " + std::to_string(active) +
                          " tasks of the group are in flight");
    s_->limit = n < 0 ? nullptr : std::make_unique<semaphore>(n);
}

GORO_DECL void errgroup::launch(task<> t, task_options options, const detail::site& where) {
    // goro::go with the caller's site, so the task reads "created by" them.
#if GORO_HAS_SOURCE_LOCATION
    goro::go(std::move(t), std::move(options), where);
#else
    goro::go(std::move(t), std::move(options), where.file_name(), where.function_name(), where.line());
#endif
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/sync/errgroup.hpp ----

// ---- begin goro/sync/when.hpp ----
// goro/sync/when.hpp — run tasks concurrently and wait for all of them, or for the first.
//
//   auto [a, b] = co_await goro::when_all(fetch(x), fetch(y));        // std::tuple<A, B>
//
//   auto r = co_await goro::when_any(ctx,                              // std::variant<A, B>
//       [&](goro::context c) { return fetch(c, primary); },
//       [&](goro::context c) { return fetch(c, mirror); });
//   r.index();   // which one finished first
//
// Every task runs as a root task of its own on the pool (listed and dumped
// like go()'s, "created by goro::when_all"), concurrently; the awaiting task
// parks with wait reason "join". Neither returns before every task it
// started has ended: nothing is left running behind the caller.
//
//   when_all(tasks...)         waits for all; the result is a tuple (void gives
//                              std::monostate); if some failed, the exception of
//                              the first to fail (in time) is rethrown.
//   when_all(ctx, fns...)      each fn(goro::context) -> goro::task<R> gets a
//                              context derived from `ctx`; the first failure
//                              cancels it, so the others can stop early (like
//                              errgroup.WithContext).
//   when_any(ctx, fns...)      the first task to end (with a value or an
//                              exception) wins: the derived context is
//                              cancelled, the losers are awaited (they should
//                              watch the context: ctx.done() in a select, or
//                              ctx.err()), and the winner's value is returned as a
//                              std::variant whose index() is the winner's
//                              position, or its exception rethrown. The losers'
//                              results and exceptions are discarded.
//   when_any(tasks...)         the same, but the tasks were made without a
//                              context of when_any's: nothing can tell the
//                              losers to stop, so it returns once all have ended.
//                              Use the context form to cancel them.
//
// The derived context is cancelled when the call returns, as Go's `defer
// cancel()`. The callables are kept alive (in the awaiting frame) until
// every task has ended.
//
// THREADS: the children write their own slots of the group (value or
// exception) and then count down `remaining` (acq_rel); the last wakes the
// parent through a one_shot (goro/core/spawn.hpp). The first to win the CAS
// on `winner` cancels the context. The group lives in the awaiting frame,
// which cannot resume before the count reaches zero.

#include <array>
#include <atomic>
#include <cstddef>
#include <exception>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>


namespace goro {

namespace detail {

inline constexpr std::size_t no_winner = static_cast<std::size_t>(-1);

template <class... Ts>
struct when_group {
    static constexpr std::size_t N = sizeof...(Ts);
    std::tuple<std::optional<result_slot_t<Ts>>...> values;
    std::array<std::exception_ptr, N> errors{};
    std::atomic<std::size_t> remaining{N};
    std::atomic<std::size_t> winner{no_winner};  // when_any: the first to end; when_all: the first to fail
    bool any = false;
    std::optional<cancel_func> cancel;
    one_shot done;

    /// Child `i` has written its slot. Returns a foreign coroutine to continue, if that is who waits.
    std::coroutine_handle<> child_ended(std::size_t i, bool failed) noexcept {
        if (any || failed) {
            std::size_t none = no_winner;
            if (winner.compare_exchange_strong(none, i, std::memory_order_acq_rel) && cancel) (*cancel)();
        }
        // The last one wakes the parent; after the decrement nothing here is touched.
        if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) return done.fire();
        return {};
    }
    /// A child that could not be started counts as ended.
    std::coroutine_handle<> not_started(std::size_t n) noexcept {
        if (remaining.fetch_sub(n, std::memory_order_acq_rel) == n) return done.fire();
        return {};
    }
};

template <std::size_t I, class T, class G>
runner group_child(task<T> t, G* g) {
    bool failed = false;
    try {
        if constexpr (std::is_void_v<T>) {
            co_await root_child<typename task<T>::promise_type>{t.handle()};
            std::get<I>(g->values).emplace();
        } else {
            std::get<I>(g->values).emplace(co_await root_child<typename task<T>::promise_type>{t.handle()});
        }
    } catch (...) {
        g->errors[I] = std::current_exception();
        failed = true;
    }
    std::coroutine_handle<> then = g->child_ended(I, failed);
    if (then) co_await set_then{then};
}

template <class... Ts>
void check_tasks(const char* op, const task<Ts>&... ts) {
    if ((... || !ts)) throw usage_error(std::string(op) + ": a task is empty (moved-from or default-constructed)");
    if ((... || ts.handle().done())) throw usage_error(std::string(op) + ": a task has already run (it was awaited)");
}

/// Starts every task as a root task; returns the first start's failure (the
/// rest then count as ended), after which the group must still be awaited.
template <class G, class... Ts, std::size_t... I>
std::exception_ptr start_group(G& g, std::index_sequence<I...>, task<Ts>&... ts) {
    std::exception_ptr err;
    std::size_t started = 0;
    auto one = [&]<std::size_t J, class T>(std::integral_constant<std::size_t, J>, task<T>& t) {
        if (err) return;
        try {
            start_runner(group_child<J, T, G>(std::move(t), &g), {}, site_here());
            ++started;
        } catch (...) {
            err = std::current_exception();
        }
    };
    (one(std::integral_constant<std::size_t, I>{}, ts), ...);
    if (started < G::N) {
        // No child left to wake a parent that has not waited yet: nobody to continue.
        std::coroutine_handle<> none = g.not_started(G::N - started);
        (void)none;
    }
    return err;
}

template <class V, class G, std::size_t... I>
V take_winner(G& g, std::size_t w, std::index_sequence<I...>) {
    std::optional<V> out;
    ((I == w ? (void)out.emplace(std::in_place_index<I>, std::move(*std::get<I>(g.values))) : void()), ...);
    return std::move(*out);
}

template <class G, std::size_t... I>
auto take_all(G& g, std::index_sequence<I...>) {
    return std::tuple<typename std::tuple_element_t<I, decltype(g.values)>::value_type...>(
        std::move(*std::get<I>(g.values))...);
}

template <class F>
using fn_task_t = std::invoke_result_t<F&, context>;

template <class... Fs>
concept context_task_fns =
    (sizeof...(Fs) > 0) && (... && (std::is_invocable_v<Fs&, context> && is_task_v<std::invoke_result_t<Fs&, context>>));

}  // namespace detail

/// Runs the tasks concurrently on the pool and returns all their results.
template <class... Ts>
[[nodiscard("goro::when_all: co_await it")]] task<std::tuple<detail::result_slot_t<Ts>...>> when_all(task<Ts>... ts) {
    detail::check_tasks("goro::when_all", ts...);
    detail::when_group<Ts...> g;
    std::exception_ptr err = detail::start_group(g, std::index_sequence_for<Ts...>{}, ts...);
    co_await detail::one_shot_awaiter{&g.done};
    if (err) std::rethrow_exception(err);
    if (std::size_t w = g.winner.load(std::memory_order_acquire); w != detail::no_winner)
        std::rethrow_exception(g.errors[w]);
    co_return detail::take_all(g, std::index_sequence_for<Ts...>{});
}

/// As when_all(tasks...), each task made by `fn(ctx2)` with ctx2 derived from
/// `parent`; the first failure cancels ctx2.
template <class... Fs>
    requires detail::context_task_fns<Fs...>
[[nodiscard("goro::when_all: co_await it")]] task<
    std::tuple<detail::result_slot_t<typename detail::fn_task_t<Fs>::value_type>...>>
when_all(context parent, Fs... fns) {
    auto [ctx, cancel] = with_cancel(parent);
    detail::when_group<typename detail::fn_task_t<Fs>::value_type...> g;
    g.cancel.emplace(cancel);
    std::exception_ptr err;
    {
        std::tuple<detail::fn_task_t<Fs>...> ts{};
        try {
            ts = std::tuple<detail::fn_task_t<Fs>...>{fns(ctx)...};
            std::apply([](auto&... t) { detail::check_tasks("goro::when_all", t...); }, ts);
        } catch (...) {
            cancel();
            throw;
        }
        err = std::apply([&](auto&... t) { return detail::start_group(g, std::index_sequence_for<Fs...>{}, t...); }, ts);
    }
    co_await detail::one_shot_awaiter{&g.done};
    cancel();
    if (err) std::rethrow_exception(err);
    if (std::size_t w = g.winner.load(std::memory_order_acquire); w != detail::no_winner)
        std::rethrow_exception(g.errors[w]);
    co_return detail::take_all(g, std::index_sequence_for<Fs...>{});
}

/// Runs the tasks concurrently; returns the result of the first to end (the
/// variant's index says which) once all have ended.
template <class... Ts>
[[nodiscard("goro::when_any: co_await it")]] task<std::variant<detail::result_slot_t<Ts>...>> when_any(
    task<Ts>... ts) {
    static_assert(sizeof...(Ts) > 0, "goro::when_any: needs at least one task");
    detail::check_tasks("goro::when_any", ts...);
    detail::when_group<Ts...> g;
    g.any = true;
    std::exception_ptr err = detail::start_group(g, std::index_sequence_for<Ts...>{}, ts...);
    co_await detail::one_shot_awaiter{&g.done};
    if (err) std::rethrow_exception(err);
    const std::size_t w = g.winner.load(std::memory_order_acquire);
    if (g.errors[w]) std::rethrow_exception(g.errors[w]);
    co_return detail::take_winner<std::variant<detail::result_slot_t<Ts>...>>(g, w, std::index_sequence_for<Ts...>{});
}

/// Runs `fn(ctx2)...` concurrently, ctx2 derived from `parent`; the first to
/// end wins, ctx2 is cancelled, the losers are awaited, and the winner's
/// result is returned (the variant's index says which) or its exception rethrown.
template <class... Fs>
    requires detail::context_task_fns<Fs...>
[[nodiscard("goro::when_any: co_await it")]] task<
    std::variant<detail::result_slot_t<typename detail::fn_task_t<Fs>::value_type>...>>
when_any(context parent, Fs... fns) {
    using V = std::variant<detail::result_slot_t<typename detail::fn_task_t<Fs>::value_type>...>;
    auto [ctx, cancel] = with_cancel(parent);
    detail::when_group<typename detail::fn_task_t<Fs>::value_type...> g;
    g.any = true;
    g.cancel.emplace(cancel);
    std::exception_ptr err;
    {
        std::tuple<detail::fn_task_t<Fs>...> ts{};
        try {
            ts = std::tuple<detail::fn_task_t<Fs>...>{fns(ctx)...};
            std::apply([](auto&... t) { detail::check_tasks("goro::when_any", t...); }, ts);
        } catch (...) {
            cancel();
            throw;
        }
        err = std::apply([&](auto&... t) { return detail::start_group(g, std::index_sequence_for<Fs...>{}, t...); }, ts);
    }
    co_await detail::one_shot_awaiter{&g.done};
    cancel();
    if (err) std::rethrow_exception(err);
    const std::size_t w = g.winner.load(std::memory_order_acquire);
    if (g.errors[w]) std::rethrow_exception(g.errors[w]);
    co_return detail::take_winner<V>(g, w, std::index_sequence_for<Fs...>{});
}

}  // namespace goro
// ---- end goro/sync/when.hpp ----

// ---- begin goro/sync/once.hpp ----
// goro/sync/once.hpp — `goro::once`, `goro::once_func`, `goro::once_value`:
// Go's sync.Once, sync.OnceFunc and sync.OnceValue for goro tasks.
//
//   goro::once init;
//   co_await init.call([&] { table = load(); });          // f runs once, ever
//   co_await init.call([&]() -> goro::task<> { co_await connect(); });  // f may be a task
//
//   auto cfg = goro::once_value([] { return read_config(); });   // shareable handle
//   const config c = co_await cfg();                           // every call: the one value
//   auto warn = goro::once_func([] { log("deprecated"); });
//   co_await warn();
//
// SEMANTICS (Go's, to the letter):
//   * once::call(f) (Once.Do): the first call runs f, in the calling task.
//     Every other call, concurrent or later, returns only after that first
//     call has returned: a task that arrives while f runs parks (Go's
//     waiters block in the Once's mutex: the wait reason is `sync.Mutex.Lock`,
//     as in Go's dumps) until f is done.
//   * If f throws, the exception leaves the first call, and the Once counts as
//     done: later calls do not call f again and return normally (Go: "if f
//     panics, Do considers it to have returned").
//   * once_func(f) (Go 1.21's OnceFunc) and once_value(f) (OnceValue): a
//     copyable handle whose calls share one Once. If f throws, EVERY call
//     rethrows that same exception (Go re-panics with the same value);
//     once_value's calls all return (a copy of) the one value f returned.
//   * f may return void (once_value: a T) or a goro::task<> (task<T>), which
//     is awaited: an asynchronous initialisation runs once, and its latecomers
//     wait for it.
//
// COST: after the first call, `co_await o.call(f)` is one acquire load (the
// awaiter is ready at once; no frame is made). A task-returning f makes
// call() a coroutine, and once_func / once_value calls are coroutines.
//
// INVARIANTS (under `lock_`): state_ goes idle -> running -> done, once each
// way; waiters are linked only while running; done is stored, and the list
// taken, in one critical section.
//
// DESTRUCTION while the first call runs is a bug: tasks parked on it are woken
// with goro::once_destroyed thrown from their call.

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>


namespace goro {

/// A `goro::once` was destroyed while tasks waited for its first call; thrown from their call().
class once_destroyed : public error {
public:
    using error::error;
};

namespace detail {
template <class T>
struct task_value {};
template <class T>
struct task_value<task<T>> {
    using type = T;
};
}  // namespace detail

class once {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        bool destroyed = false;
    };
    static constexpr std::uint32_t idle = 0, running = 1, finished = 2;

public:
    /// Parks until the first call has returned (await_ready: it already has).
    class wait_operation {
    public:
        using is_goro_awaiter = void;
        explicit wait_operation(once& o) noexcept : o_(&o) {}
        bool await_ready() const noexcept { return o_->done(); }
        bool await_suspend(std::coroutine_handle<> h) { return o_->enqueue(node_, h); }
        void await_resume() const;

    protected:
        once* o_;
        waiter_node node_{};
    };

    /// Awaiter of call(f) for an f that returns void: the first caller runs f
    /// inside await_ready (so the fast path never suspends).
    template <class F>
    class call_operation : public wait_operation {
    public:
        call_operation(once& o, F f) : wait_operation(o), f_(std::move(f)) {}
        bool await_ready() {
            if (o_->done()) return true;
            if (!o_->begin()) return false;  // another task runs f: wait for it
            finisher fin{o_};
            f_();  // an exception leaves the co_await; the once is done all the same
            return true;
        }

    private:
        F f_;
    };

    once() noexcept = default;
    once(const once&) = delete;
    once& operator=(const once&) = delete;
    ~once();

    /// `co_await o.call(f)` (Go's Once.Do): runs f if no call has yet; else
    /// waits until the first call has returned. f returns void or goro::task<>.
    template <class F>
    [[nodiscard("goro::once::call: co_await it")]] auto call(F&& f) {
        using fn = std::decay_t<F>;
        using result = std::invoke_result_t<fn&>;
        if constexpr (std::is_void_v<result>) {
            return call_operation<fn>(*this, std::forward<F>(f));
        } else {
            static_assert(std::is_same_v<result, task<>>,
                          "goro::once::call: f must return void or goro::task<>");
            return call_async<fn>(this, fn(std::forward<F>(f)));
        }
    }

    /// True once a first call has returned (normally or by an exception).
    bool done() const noexcept { return state_.load(std::memory_order_acquire) == finished; }

private:
    struct finisher {
        once* o;
        ~finisher() { o->finish(); }
    };

    /// Claims the first call; false when another task has it (or it is done).
    bool begin() noexcept {
        std::uint32_t s = idle;
        return state_.compare_exchange_strong(s, running, std::memory_order_acquire, std::memory_order_acquire);
    }

    void finish() noexcept;

    bool enqueue(waiter_node& n, std::coroutine_handle<> h);

    // A template only so that a program compiles it where it uses it (see errgroup.hpp).
    template <class F>
    static task<> call_async(once* o, F f) {
        if (o->done()) co_return;
        if (!o->begin()) {
            co_await wait_operation(*o);
            co_return;
        }
        finisher fin{o};
        co_await f();
    }

    std::atomic<std::uint32_t> state_{idle};
    detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    detail::waiter_list<waiter_node> waiters_;  // under lock_, only while running
};

namespace detail {

/// once_func / once_value: f's outcome, shared by every copy of the handle.
template <class F, class T>
struct once_state {
    explicit once_state(F fn) : f(std::move(fn)) {}
    goro::once o;
    F f;
    std::conditional_t<std::is_void_v<T>, bool, std::optional<T>> value{};
    std::exception_ptr error;  // written by the first call, read after o is done
};

template <class F, class T>
struct once_runner {
    once_state<F, T>* s;
    void operator()() const {
        try {
            if constexpr (std::is_void_v<T>) s->f();
            else s->value.emplace(s->f());
        } catch (...) {
            s->error = std::current_exception();
        }
    }
};

template <class F, class T>
struct once_async_runner {
    once_state<F, T>* s;
    task<> operator()() const { return run(s); }
    static task<> run(once_state<F, T>* st) {
        try {
            if constexpr (std::is_void_v<T>) co_await st->f();
            else st->value.emplace(co_await st->f());
        } catch (...) {
            st->error = std::current_exception();
        }
    }
};

template <class F, class T, bool Async>
task<T> once_call(std::shared_ptr<once_state<F, T>> s) {
    if constexpr (Async) co_await s->o.call(once_async_runner<F, T>{s.get()});
    else co_await s->o.call(once_runner<F, T>{s.get()});
    if (s->error) std::rethrow_exception(s->error);
    if constexpr (!std::is_void_v<T>) co_return *s->value;
}

template <class F>
using once_result_t = std::invoke_result_t<F&>;

template <class F>
using once_value_t = typename std::conditional_t<is_task_v<once_result_t<F>>, task_value<once_result_t<F>>,
                                                 std::type_identity<once_result_t<F>>>::type;

}  // namespace detail

/// The handle once_func(f) and once_value(f) return: copies share one call of f.
/// `co_await h()` returns f's value (T = void for once_func) or rethrows f's exception.
template <class F, class T>
class once_function {
    static constexpr bool async = detail::is_task_v<detail::once_result_t<F>>;

public:
    explicit once_function(F f) : s_(std::make_shared<detail::once_state<F, T>>(std::move(f))) {}

    [[nodiscard("goro::once_function: co_await the call")]] task<T> operator()() const {
        return detail::once_call<F, T, async>(s_);
    }

    /// True once f has been called and has returned (or thrown).
    bool done() const noexcept { return s_->o.done(); }

private:
    std::shared_ptr<detail::once_state<F, T>> s_;
};

/// Go 1.21's sync.OnceFunc: a handle whose first call runs `f` (void or task<>);
/// every call rethrows the exception f threw, if it threw.
template <class F>
auto once_func(F&& f) {
    using fn = std::decay_t<F>;
    static_assert(std::is_void_v<detail::once_value_t<fn>>,
                  "goro::once_func: f must return void or goro::task<> (once_value keeps a value)");
    return once_function<fn, void>(std::forward<F>(f));
}

/// Go 1.21's sync.OnceValue: a handle whose first call runs `f` (returning T
/// or task<T>); every call returns a copy of that T, or rethrows f's exception.
template <class F>
auto once_value(F&& f) {
    using fn = std::decay_t<F>;
    using T = detail::once_value_t<fn>;
    static_assert(!std::is_void_v<T>, "goro::once_value: f must return a value (once_func runs a void f)");
    return once_function<fn, T>(std::forward<F>(f));
}

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL void once::wait_operation::await_resume() const {
    if (node_.destroyed)
        throw once_destroyed("goro::once::call: the once was destroyed while this task waited for its first call");
}

GORO_DECL once::~once() {
    detail::wake_destroyed(waiters_, lock_, [](waiter_node& w, std::size_t) noexcept { w.destroyed = true; });
}

GORO_DECL void once::finish() noexcept {
    detail::waiter_list<waiter_node> wake;
    {
        std::lock_guard g(lock_);
        state_.store(finished, std::memory_order_release);
        wake = std::move(waiters_);
    }
    wake.wake_all();
}

GORO_DECL bool once::enqueue(waiter_node& n, std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::once::call");
    n.task = t;
    detail::park(t, h, wait_reason::mutex_lock);  // Go's waiters block in Once.m.Lock()
    std::lock_guard g(lock_);
    if (state_.load(std::memory_order_acquire) == finished) {
        t->state.store(task_state::running, std::memory_order_relaxed);
        return false;
    }
    waiters_.push_back(n);
    return true;
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/sync/once.hpp ----

// ---- begin goro/sync/rw_mutex.hpp ----
// goro/sync/rw_mutex.hpp — `goro::rw_mutex`: a reader/writer lock for goro tasks.
//
//   goro::rw_mutex m;
//   co_await m.lock_shared();  ... m.unlock_shared();      // many readers at once
//   co_await m.lock();         ... m.unlock();             // one writer, no readers
//   { auto g = co_await m.scoped_lock_shared(); ... }      // guards unlock on scope exit
//   { auto g = co_await m.scoped_lock(); ... }
//   m.try_lock(), m.try_lock_shared()
//
// Go's sync.RWMutex, with its rule that a pending writer blocks new readers:
// once a writer has called lock(), a later lock_shared() parks until that
// writer has had the lock and released it, so a steady stream of readers
// cannot starve a writer. When the writer unlocks, every reader that parked
// meanwhile is admitted at once (before the next writer), as in Go; the next
// writer then waits for those readers to leave.
//
// Wait reasons, in Go's words (a Go dump shows the same):
//   sync.RWMutex.RLock  a reader parked behind a writer (holding or pending);
//   sync.RWMutex.Lock   the pending writer, waiting for the readers to leave;
//   sync.Mutex.Lock     a writer queued behind another writer (Go's writers
//                       first take the RWMutex's inner sync.Mutex).
//
// STATE (under `lock_`, a spinlock held a few instructions):
//   readers_       readers holding the lock;
//   writer_        a writer holds it;
//   pending_       the writer that announced itself and waits for readers_ to
//                  reach 0 (null when none); while set, readers park;
//   rq_ / wq_      parked readers / writers queued behind pending_ (FIFO).
// INVARIANTS: writer_ implies readers_ == 0 and pending_ == null; pending_
// implies readers_ > 0; wq_ non-empty implies writer_ or pending_; rq_
// non-empty implies writer_ or pending_.
//
// Like Go's, the lock is not tied to a task: any task or thread may unlock.
// Tasks are readied only after `lock_` is released.
//
// DESTRUCTION with tasks parked is a bug: they are woken with
// goro::rw_mutex_destroyed thrown from their lock call.

#include <coroutine>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>


namespace goro {

/// A `goro::rw_mutex` was destroyed while tasks waited for it; thrown from their lock call.
class rw_mutex_destroyed : public error {
public:
    using error::error;
};

class rw_mutex;

/// Owns a `goro::rw_mutex` (exclusively, or shared) and releases it on
/// destruction; obtained only from `co_await m.scoped_lock()` /
/// `co_await m.scoped_lock_shared()`. Movable; `unlock()` releases it early.
template <bool Shared>
class rw_lock_guard {
public:
    rw_lock_guard() noexcept = default;
    rw_lock_guard(rw_lock_guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    rw_lock_guard& operator=(rw_lock_guard&& o) noexcept {
        if (this != &o) {
            release_lock();
            m_ = std::exchange(o.m_, nullptr);
        }
        return *this;
    }
    rw_lock_guard(const rw_lock_guard&) = delete;
    rw_lock_guard& operator=(const rw_lock_guard&) = delete;
    ~rw_lock_guard() { release_lock(); }

    /// Releases now; throws goro::usage_error when this guard owns nothing.
    inline void unlock();
    bool owns_lock() const noexcept { return m_ != nullptr; }
    explicit operator bool() const noexcept { return owns_lock(); }
    rw_mutex* mutex() const noexcept { return m_; }

private:
    friend class rw_mutex;
    explicit rw_lock_guard(rw_mutex& m) noexcept : m_(&m) {}
    inline void release_lock() noexcept;
    rw_mutex* m_ = nullptr;
};

class rw_mutex {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        bool destroyed = false;
    };

public:
    /// Awaiter of lock() (Shared = false) and lock_shared() (true): resumes
    /// holding the lock. Copyable until it suspends.
    template <bool Shared>
    class lock_operation {
    public:
        using is_goro_awaiter = void;
        explicit lock_operation(rw_mutex& m) noexcept : m_(&m) {}
        bool await_ready() noexcept { return Shared ? m_->try_lock_shared() : m_->try_lock(); }
        bool await_suspend(std::coroutine_handle<> h) { return m_->enqueue(node_, h, Shared); }
        void await_resume() const {
            if (node_.destroyed)
                throw rw_mutex_destroyed(Shared ? "goro::rw_mutex::lock_shared: the mutex was destroyed while this task waited"
                                                : "goro::rw_mutex::lock: the mutex was destroyed while this task waited");
        }

    protected:
        rw_mutex* m_;
        waiter_node node_{};
    };

    /// Awaiter of scoped_lock() / scoped_lock_shared(): resumes with a guard.
    template <bool Shared>
    class scoped_lock_operation : public lock_operation<Shared> {
    public:
        using lock_operation<Shared>::lock_operation;
        [[nodiscard]] rw_lock_guard<Shared> await_resume() const {
            lock_operation<Shared>::await_resume();
            return rw_lock_guard<Shared>(*this->m_);
        }
    };

    rw_mutex() noexcept = default;
    rw_mutex(const rw_mutex&) = delete;
    rw_mutex& operator=(const rw_mutex&) = delete;

    ~rw_mutex();

    /// `co_await m.lock()` (RWMutex.Lock): parks until this task holds the lock alone.
    [[nodiscard("goro::rw_mutex::lock: co_await it")]] lock_operation<false> lock() noexcept {
        return lock_operation<false>(*this);
    }
    /// `co_await m.lock_shared()` (RWMutex.RLock): parks while a writer holds or waits for the lock.
    [[nodiscard("goro::rw_mutex::lock_shared: co_await it")]] lock_operation<true> lock_shared() noexcept {
        return lock_operation<true>(*this);
    }
    /// `auto g = co_await m.scoped_lock()`: as lock(), returning a guard that unlocks.
    [[nodiscard("goro::rw_mutex::scoped_lock: co_await it, and keep the guard")]] scoped_lock_operation<false>
    scoped_lock() noexcept {
        return scoped_lock_operation<false>(*this);
    }
    /// `auto g = co_await m.scoped_lock_shared()`: as lock_shared(), returning a guard.
    [[nodiscard("goro::rw_mutex::scoped_lock_shared: co_await it, and keep the guard")]] scoped_lock_operation<true>
    scoped_lock_shared() noexcept {
        return scoped_lock_operation<true>(*this);
    }

    /// Takes the lock if nobody holds or waits for it (RWMutex.TryLock); never parks.
    bool try_lock() noexcept;

    /// Takes a read lock if no writer holds or waits (RWMutex.TryRLock); never parks.
    bool try_lock_shared() noexcept;

    /// Releases the write lock (RWMutex.Unlock): admits every parked reader,
    /// else hands the lock to the next writer. Throws goro::usage_error when
    /// no writer holds it.
    void unlock();

    /// Releases a read lock (RWMutex.RUnlock); the last reader out hands the
    /// lock to a pending writer. Throws goro::usage_error when no reader holds it.
    void unlock_shared();

private:
    bool enqueue(waiter_node& n, std::coroutine_handle<> h, bool shared);

    mutable detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    std::int64_t readers_ = 0;
    bool writer_ = false;
    waiter_node* pending_ = nullptr;
    detail::waiter_list<waiter_node> rq_;
    detail::waiter_list<waiter_node> wq_;
};

template <bool Shared>
inline void rw_lock_guard<Shared>::unlock() {
    if (!m_) throw usage_error("goro::rw_lock_guard::unlock: the guard does not own an rw_mutex");
    rw_mutex* m = std::exchange(m_, nullptr);
    if constexpr (Shared) m->unlock_shared();
    else m->unlock();
}

template <bool Shared>
inline void rw_lock_guard<Shared>::release_lock() noexcept {
    // Cannot throw: a guard only ever holds a lock it took.
    if (!m_) return;
    rw_mutex* m = std::exchange(m_, nullptr);
    if constexpr (Shared) m->unlock_shared();
    else m->unlock();
}

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL rw_mutex::~rw_mutex() {
    detail::waiter_list<waiter_node> all;
    {
        std::lock_guard g(lock_);
        if (pending_) all.push_back(*std::exchange(pending_, nullptr));
        all.splice_back(wq_);
        all.splice_back(rq_);
    }
    all.wake_all([](waiter_node& w) noexcept { w.destroyed = true; });
}

GORO_DECL bool rw_mutex::try_lock() noexcept {
    std::lock_guard g(lock_);
    if (writer_ || pending_ || readers_ != 0) return false;
    writer_ = true;
    return true;
}

GORO_DECL bool rw_mutex::try_lock_shared() noexcept {
    std::lock_guard g(lock_);
    if (writer_ || pending_) return false;
    ++readers_;
    return true;
}

GORO_DECL void rw_mutex::unlock() {
    detail::waiter_list<waiter_node> wake;
    {
        std::lock_guard g(lock_);
        if (!writer_) throw usage_error("goro::rw_mutex::unlock: unlock of an rw_mutex not locked for writing");
        writer_ = false;
        while (waiter_node* r = rq_.pop_front()) {
            ++readers_;
            wake.push_back(*r);
        }
        if (waiter_node* w = wq_.pop_front()) {
            if (readers_ == 0) {
                writer_ = true;
                wake.push_back(*w);
            } else {
                // The next writer now waits for the readers just admitted.
                pending_ = w;
                w->task->wait_reason.store(wait_reason::rw_mutex_lock, std::memory_order_relaxed);
            }
        }
    }
    wake.wake_all();
}

GORO_DECL void rw_mutex::unlock_shared() {
    waiter_node* w = nullptr;
    {
        std::lock_guard g(lock_);
        if (readers_ == 0)
            throw usage_error("goro::rw_mutex::unlock_shared: unlock_shared of an rw_mutex not locked for reading");
        if (--readers_ == 0 && pending_) {
            w = std::exchange(pending_, nullptr);
            writer_ = true;
        }
    }
    if (w) detail::ready(w->task);
}

GORO_DECL bool rw_mutex::enqueue(waiter_node& n, std::coroutine_handle<> h, bool shared) {
    task_header* t = detail::current_task_or_throw(shared ? "goro::rw_mutex::lock_shared" : "goro::rw_mutex::lock");
    n.task = t;
    std::lock_guard g(lock_);
    if (shared) {
        if (!writer_ && !pending_) {  // released meanwhile
            ++readers_;
            return false;
        }
        detail::park(t, h, wait_reason::rw_mutex_rlock);
        rq_.push_back(n);
        return true;
    }
    if (!writer_ && !pending_) {
        if (readers_ == 0) {
            writer_ = true;
            return false;
        }
        detail::park(t, h, wait_reason::rw_mutex_lock);  // announced: new readers now park
        pending_ = &n;
        return true;
    }
    detail::park(t, h, wait_reason::mutex_lock);  // behind another writer: Go's w.Lock()
    wq_.push_back(n);
    return true;
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/sync/rw_mutex.hpp ----

// ---- begin goro/sync/cond.hpp ----
// goro/sync/cond.hpp — `goro::cond`: a condition variable for goro tasks (Go's sync.Cond).
//
//   goro::mutex m;
//   goro::cond cv(m);
//   {
//       auto g = co_await m.scoped_lock();
//       while (!ready) co_await cv.wait();   // unlocks m, parks, resumes holding m again
//       ...
//   }
//   // elsewhere, with or without m held:
//   ready = true; cv.signal();               // wakes one waiter (the longest waiting)
//   cv.broadcast();                          // wakes them all
//
// SEMANTICS (Go's): wait() must be called with `m` held (it throws
// goro::usage_error otherwise, where Go panics with "unlock of unlocked
// mutex"). It queues the task on the condition, THEN unlocks m, so a signal
// sent after the unlock cannot be missed, and parks (wait reason
// `sync.Cond.Wait`). A woken waiter relocks m before wait() returns. Waiters
// are woken in FIFO order; a signal with nobody waiting does nothing (it is
// not remembered). As in Go, wake-ups are not spurious, but another task may
// change the state between the signal and the relock: wait in a loop.
//
// HOW THE RELOCK WORKS (wait morphing): signal() does not ready the waiter to
// fight for the mutex; it moves the waiter onto the mutex, in one step: if the
// mutex is free the waiter is given it and readied, else it joins the mutex's
// queue (its wait reason turns to `sync.Mutex.Lock`, where a Go dump would show
// the woken goroutine) and is handed the mutex by an unlock. So broadcast()
// wakes one task at a time as the mutex comes free, not a herd.
//
// LOCK ORDER: the condition's `lock_` and the mutex's lock are never held
// together (a waiter is unlinked from the condition, then given to the mutex).
//
// DESTRUCTION with tasks waiting is a bug: they are given the mutex (as by a
// broadcast), then goro::cond_destroyed is thrown from their wait(), holding m.

#include <coroutine>
#include <mutex>


namespace goro {

/// A `goro::cond` was destroyed while tasks waited on it; thrown from their
/// wait(), which has relocked the mutex.
class cond_destroyed : public error {
public:
    using error::error;
};

class cond {
    struct waiter_node {
        waiter_node* next = nullptr;
        task_header* task = nullptr;
        mutex::waiter_node relock{};  // the same task's node on the mutex, once signalled
        bool destroyed = false;
    };

public:
    /// Awaiter of wait(): resumes holding the mutex.
    class wait_operation {
    public:
        using is_goro_awaiter = void;
        explicit wait_operation(cond& c) noexcept : c_(&c) {}
        bool await_ready() const;
        void await_suspend(std::coroutine_handle<> h) { c_->enqueue(node_, h); }
        void await_resume() const;

    private:
        cond* c_;
        waiter_node node_{};
    };

    /// A condition on `m`, which must outlive it.
    explicit cond(goro::mutex& m) noexcept : m_(&m) {}
    cond(const cond&) = delete;
    cond& operator=(const cond&) = delete;

    ~cond();

    /// `co_await cv.wait()` with the mutex held: unlocks it, parks until
    /// signalled, and resumes holding it again (Go's Cond.Wait).
    [[nodiscard("goro::cond::wait: co_await it")]] wait_operation wait() noexcept { return wait_operation(*this); }

    /// Wakes the longest-waiting task, if any (Go's Cond.Signal).
    void signal() noexcept;

    /// Wakes every waiting task (Go's Cond.Broadcast); they take the mutex in FIFO order.
    void broadcast() noexcept;

    /// The mutex this condition waits on.
    goro::mutex& mutex() const noexcept { return *m_; }

private:
    void enqueue(waiter_node& n, std::coroutine_handle<> h);

    /// Moves each node onto the mutex; readies the one that gets it at once.
    void hand_to_mutex(detail::waiter_list<waiter_node>& list, bool destroyed) noexcept;

    goro::mutex* m_;
    detail::ranked_lock<detail::spinlock, detail::lock_rank::sync_waiters> lock_;
    detail::waiter_list<waiter_node> waiters_;  // under lock_
};

}  // namespace goro

#if GORO_BODIES

namespace goro {

GORO_DECL bool cond::wait_operation::await_ready() const {
    if (!c_->m_->is_locked())
        throw usage_error("goro::cond::wait: the mutex is not locked (wait must be called holding it)");
    return false;
}

GORO_DECL void cond::wait_operation::await_resume() const {
    if (node_.relock.destroyed)
        throw mutex_destroyed("goro::cond::wait: the mutex was destroyed while this task waited to relock it");
    if (node_.destroyed)
        throw cond_destroyed("goro::cond::wait: the cond was destroyed while this task waited on it");
}

GORO_DECL cond::~cond() {
    detail::waiter_list<waiter_node> all;
    {
        std::lock_guard g(lock_);
        all = std::move(waiters_);
    }
    hand_to_mutex(all, true);
}

GORO_DECL void cond::signal() noexcept {
    detail::waiter_list<waiter_node> one;
    {
        std::lock_guard g(lock_);
        if (waiter_node* w = waiters_.pop_front()) one.push_back(*w);
    }
    hand_to_mutex(one, false);
}

GORO_DECL void cond::broadcast() noexcept {
    detail::waiter_list<waiter_node> all;
    {
        std::lock_guard g(lock_);
        all = std::move(waiters_);
    }
    hand_to_mutex(all, false);
}

GORO_DECL void cond::enqueue(waiter_node& n, std::coroutine_handle<> h) {
    task_header* t = detail::current_task_or_throw("goro::cond::wait");
    n.task = t;
    n.relock.task = t;
    detail::park(t, h, wait_reason::cond_wait);
    goro::mutex* m = m_;
    {
        std::lock_guard g(lock_);
        waiters_.push_back(n);
    }
    // Published: `n` (and this awaiter) may be gone once the mutex is free.
    // Queued first, unlocked second: a signal after the unlock finds us.
    m->unlock();
}

GORO_DECL void cond::hand_to_mutex(detail::waiter_list<waiter_node>& list, bool destroyed) noexcept {
    goro::mutex* m = m_;
    while (waiter_node* w = list.pop_front()) {
        w->destroyed = destroyed;
        task_header* t = w->task;
        // After lock_for the node may belong to the mutex (and die with a
        // resumed frame): `list` was advanced first, and only `t` is used.
        if (m->lock_for(w->relock)) detail::ready(t);
    }
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/sync/cond.hpp ----

// ---- begin goro/sync/ticker.hpp ----
// goro/sync/ticker.hpp — `goro::ticker`, `goro::timer`, `goro::after_func`:
// Go's time.Ticker, time.Timer and time.AfterFunc. (time.After's use, a
// timeout in a select, is select's own `goro::after(d)` case.)
//
//   goro::ticker t(10ms);                       // time.NewTicker(10 * time.Millisecond)
//   while (auto at = co_await t.chan().recv()) { ... if (done) break; }
//   t.reset(50ms);  t.stop();
//
//   goro::timer tm(1s);                         // time.NewTimer(time.Second)
//   auto v = co_await tm.chan().recv();         // the time it was due
//   if (tm.stop()) { /* it had not fired: it never will */ }
//
//   goro::timer f = goro::after_func(100ms, [&] { flush(); });   // f runs in its own task
//   f.stop();                                   // true: f will not run
//
// SEMANTICS: Go 1.23's (the current contract; Go 1.19, installed here, had the
// older "asynchronous channel" behaviour that 1.23 fixed):
//   * chan() is a channel of `goro::tick_time` (steady_clock) with a buffer of
//     one. A tick is sent without blocking: a receiver slower than the period
//     finds at most one tick waiting, and the others are DROPPED, as Go's are.
//     The value sent is the time the tick was due (Go 1.23 sends that too).
//   * After a ticker falls behind (a busy timer thread), its next tick is due
//     at the first multiple of the period after now: missed periods are
//     skipped, never delivered in a burst (Go's rule).
//   * stop() and reset(d): once they return, no value prepared before them is
//     received from chan(): a tick already buffered is discarded, and a tick
//     being sent concurrently is either discarded or never sent (the send
//     happens under the state's lock, as Go 1.23's under its sendLock).
//   * timer::stop() returns true when the call stopped the timer: it had not
//     fired, or its value was still unreceived (and is now discarded) — Go
//     1.23's rule; false when it was already stopped or its value was
//     received. timer::reset(d) returns the same about the timer before the
//     reset, and arms it to fire after d (d ≤ 0: at once).
//   * ticker(d) and ticker::reset(d) need d > 0 (goro::usage_error, where Go
//     panics "non-positive interval for NewTicker").
//   * Stop does not close the channel (Go: "to prevent a read from the
//     channel succeeding incorrectly"): a task still receiving from it waits.
//   * after_func(d, f): after d, f runs in its own goro task (void f, or one
//     returning goro::task<>); the task reads "created by" the after_func
//     caller. The timer's chan() is nil; stop() returns true if f had not
//     been started (and now will not be); reset(d) schedules f again.
//   * Destroying a ticker or timer stops it. Go's Timer/Ticker are pointers;
//     these are move-only handles that own the timer.
//
// IMPLEMENTATION: each timer is a `time_state` (one allocation, counted
// references: the handle, the timer thread while the node is armed or being
// fired, and an after_func task while it runs). Its node sits in the pool's
// one timer heap (goro/core/timer.hpp), whose thread calls `fire`. Under
// `mu` (lock rank time_chan): `seq` counts arms, stops and resets; the node
// carries the `seq` it was armed for. A `fire` whose seq is stale (a stop or
// reset came while the timer thread held the node) sends nothing: it re-arms
// the node for the current schedule, or drops it when stopped. A live `fire`
// sends the tick with `mu` held and re-arms a ticker for the next period.
// Both re-arms go through the queue's rearm_from_fire (no hold of the heap's
// lock per fire); `mu`, held around them and around every cancel, orders
// them with stop and reset (timer.hpp's CONTRACT).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <type_traits>
#include <utility>


namespace goro {

/// The value a timer or ticker sends: the time the tick was due.
using tick_time = std::chrono::steady_clock::time_point;

namespace detail {

struct time_state : timer_node {
    ranked_lock<spinlock, lock_rank::time_chan> mu;
    std::atomic<std::uint32_t> refs{1};
    void (*destroy)(time_state*) noexcept = nullptr;
    void (*on_fire)(time_state*) noexcept = nullptr;  // after_func: starts f's task (no lock held)
    channel<tick_time> ch{nullptr};                   // nil for after_func
    // Under mu:
    std::int64_t period_ns = 0;  // > 0: a ticker
    std::int64_t want_ns = 0;    // when the current arming is due
    std::uint64_t seq = 0;       // bumped by every arm, stop and reset
    std::uint64_t node_seq = 0;  // the seq the node was (re-)armed for
    bool active = false;         // armed and not yet fired (a ticker: until stopped)
    bool owned = false;          // the timer thread holds the node (heap or firing): holds a reference

    void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(this);
    }

    static std::int64_t deadline_after(std::int64_t d_ns) noexcept;

    /// Under mu: schedules the next fire at `when` (replacing any schedule).
    void arm_locked(std::int64_t when);

    /// Under mu: cancels the schedule. True when it was active. `drop` is set
    /// when the node came back from the heap (the caller releases its reference
    /// after unlocking).
    bool stop_locked(bool& drop);

    /// Under mu: discards a tick sent but not received. True when there was one.
    bool drain_locked();

    static void fire_cb(timer_node* n) noexcept;
};

template <class Rep, class Period>
std::int64_t to_ns(std::chrono::duration<Rep, Period> d) noexcept {
    using namespace std::chrono;
    if (d > duration_cast<duration<Rep, Period>>(nanoseconds::max())) return nanoseconds::max().count();
    if (d < duration_cast<duration<Rep, Period>>(nanoseconds::min())) return nanoseconds::min().count();
    return duration_cast<nanoseconds>(d).count();
}

GORO_DECL time_state* make_chan_state();

template <class F>
struct after_state : time_state {
    F f;
    site where;
    after_state(F fn, const site& w) : f(std::move(fn)), where(w) {}
};

template <class F>
task<> after_func_body(after_state<F>* s) {
    struct ref {
        after_state<F>* p;
        ~ref() { p->release(); }
    } keep{s};
    if constexpr (std::is_void_v<std::invoke_result_t<F&>>) s->f();
    else co_await s->f();
}

template <class F>
void after_func_start(time_state* base) noexcept {
    auto* s = static_cast<after_state<F>*>(base);
    try {
#if GORO_HAS_SOURCE_LOCATION
        goro::go(after_func_body<F>(s), task_options{}, s->where);
#else
        goro::go(after_func_body<F>(s), task_options{}, s->where.file_name(), s->where.function_name(),
                 s->where.line());
#endif
    } catch (...) {
        // The pool has shut down (process exit): f cannot run; its reference goes.
        s->release();
    }
}

}  // namespace detail

/// Go's time.Timer: one value on chan() when it fires (or, from after_func, f runs).
class timer {
public:
    /// An empty timer (nil chan(); stop() returns false).
    timer() noexcept = default;

    /// Fires once, `d` from now (time.NewTimer); d ≤ 0 fires at once.
    template <class Rep, class Period>
    explicit timer(std::chrono::duration<Rep, Period> d) : s_(detail::make_chan_state()), ch_(s_->ch) {
        std::lock_guard g(s_->mu);
        s_->arm_locked(detail::time_state::deadline_after(detail::to_ns(d)));
    }

    timer(timer&& o) noexcept : s_(std::exchange(o.s_, nullptr)), ch_(std::move(o.ch_)) {}
    timer& operator=(timer&& o) noexcept;
    timer(const timer&) = delete;
    timer& operator=(const timer&) = delete;
    ~timer() { close(); }

    /// The channel the time is sent on (nil for after_func's timers and empty
    /// ones), Go's t.C: this timer's own handle, valid while the timer is
    /// (copy it to keep it longer; copies refer to the same channel).
    const channel<tick_time>& chan() const noexcept { return ch_; }

    /// Stops the timer (Timer.Stop, Go 1.23): true when this call stopped it
    /// before its value was received (an unreceived value is discarded).
    bool stop();

    /// Re-arms the timer to fire `d` from now (Timer.Reset, Go 1.23); returns
    /// what stop() would have. An unreceived value is discarded first.
    template <class Rep, class Period>
    bool reset(std::chrono::duration<Rep, Period> d) {
        if (!s_) throw usage_error("goro::timer::reset: the timer is empty (moved-from or default-constructed)");
        std::lock_guard g(s_->mu);
        bool pending = s_->active;
        if (s_->drain_locked()) pending = true;
        s_->arm_locked(detail::time_state::deadline_after(detail::to_ns(d)));
        return pending;
    }

    explicit operator bool() const noexcept { return s_ != nullptr; }

private:
    template <class F>
    friend timer after_func_at(std::chrono::nanoseconds, F&&, const detail::site&);
    explicit timer(detail::time_state* s) noexcept : s_(s) {}

    void close() noexcept;

    detail::time_state* s_ = nullptr;
    // A copy of s_->ch: receivers read it here, not from the state that the
    // timer thread writes at every fire (one cache line less moved per tick).
    channel<tick_time> ch_{nullptr};
};

/// Go's time.Ticker: a tick on chan() every period; ticks a slow receiver
/// misses are dropped.
class ticker {
public:
    ticker() noexcept = default;

    /// Ticks every `d` (> 0), the first `d` from now (time.NewTicker).
    template <class Rep, class Period>
    explicit ticker(std::chrono::duration<Rep, Period> d) {
        const std::int64_t ns = detail::to_ns(d);
        if (ns <= 0) throw usage_error("goro::ticker: non-positive interval");
        s_ = detail::make_chan_state();
        ch_ = s_->ch;
        std::lock_guard g(s_->mu);
        s_->period_ns = ns;
        s_->arm_locked(detail::time_state::deadline_after(ns));
    }

    ticker(ticker&& o) noexcept : s_(std::exchange(o.s_, nullptr)), ch_(std::move(o.ch_)) {}
    ticker& operator=(ticker&& o) noexcept;
    ticker(const ticker&) = delete;
    ticker& operator=(const ticker&) = delete;
    ~ticker() { close(); }

    /// The channel the ticks are sent on (capacity 1; nil for an empty
    /// ticker), Go's t.C: this ticker's own handle, valid while the ticker is
    /// (copy it to keep it longer; copies refer to the same channel).
    const channel<tick_time>& chan() const noexcept { return ch_; }

    /// Turns the ticker off (Ticker.Stop): no more ticks, and a tick not yet
    /// received is discarded. The channel is not closed.
    void stop();

    /// Stops the ticker and restarts it with period `d` (> 0); the next tick
    /// is due `d` from now (Ticker.Reset). A tick not yet received is discarded.
    template <class Rep, class Period>
    void reset(std::chrono::duration<Rep, Period> d) {
        if (!s_) throw usage_error("goro::ticker::reset: the ticker is empty (moved-from or default-constructed)");
        const std::int64_t ns = detail::to_ns(d);
        if (ns <= 0) throw usage_error("goro::ticker::reset: non-positive interval");
        std::lock_guard g(s_->mu);
        s_->drain_locked();
        s_->period_ns = ns;
        s_->arm_locked(detail::time_state::deadline_after(ns));
    }

    explicit operator bool() const noexcept { return s_ != nullptr; }

private:
    void close() noexcept;

    detail::time_state* s_ = nullptr;
    channel<tick_time> ch_{nullptr};  // a copy of s_->ch (see timer::ch_)
};

template <class F>
timer after_func_at(std::chrono::nanoseconds d, F&& f, const detail::site& where) {
    using fn = std::decay_t<F>;
    using result = std::invoke_result_t<fn&>;
    static_assert(std::is_void_v<result> || std::is_same_v<result, task<>>,
                  "goro::after_func: f must return void or goro::task<>");
    auto* s = new detail::after_state<fn>(fn(std::forward<F>(f)), where);
    s->destroy = [](detail::time_state* p) noexcept { delete static_cast<detail::after_state<fn>*>(p); };
    s->on_fire = &detail::after_func_start<fn>;
    timer t(s);
    std::lock_guard g(s->mu);
    s->arm_locked(detail::time_state::deadline_after(d.count()));
    return t;
}

/// Go's time.AfterFunc: after `d`, runs `f` (void, or returning goro::task<>)
/// in its own task. The returned timer's stop() cancels f if it has not started.
template <class Rep, class Period, class F>
timer after_func(std::chrono::duration<Rep, Period> d, F&& f, GORO_SITE_PARAM) {
    return after_func_at(std::chrono::nanoseconds(detail::to_ns(d)), std::forward<F>(f), GORO_SITE_ARG);
}

}  // namespace goro

#if GORO_BODIES

namespace goro::detail {

GORO_DECL std::int64_t time_state::deadline_after(std::int64_t d_ns) noexcept {
    std::int64_t now = now_ns();
    if (d_ns <= 0) return now;
    if (d_ns > std::numeric_limits<std::int64_t>::max() - now) return std::numeric_limits<std::int64_t>::max();
    return now + d_ns;
}

GORO_DECL void time_state::arm_locked(std::int64_t when) {
    ++seq;
    want_ns = when;
    active = true;
    timer_queue& q = the_scheduler().timers();
    if (!owned) {
        owned = true;
        add_ref();  // the timer thread's
        node_seq = seq;
        when_ns = when;
        fire = &fire_cb;
        q.add(this);
    } else if (q.cancel(this)) {
        node_seq = seq;
        when_ns = when;
        q.add(this);
    }
    // else the timer thread is firing the node now: fire_cb sees the stale
    // seq and re-arms it for want_ns.
}

GORO_DECL bool time_state::stop_locked(bool& drop) {
    const bool was = active;
    active = false;
    ++seq;
    if (owned && the_scheduler().timers().cancel(this)) {
        owned = false;
        drop = true;
    }
    return was;
}

GORO_DECL bool time_state::drain_locked() {
    if (!ch) return false;
    return ch.try_recv().status == recv_status::received;
}

GORO_DECL void time_state::fire_cb(timer_node* n) noexcept {
    auto* s = static_cast<time_state*>(n);
    bool drop = false, run = false;
    {
        std::lock_guard g(s->mu);
        if (!s->active) {
            s->owned = false;
            drop = true;
        } else if (s->node_seq != s->seq) {
            // Reset while we held the node: fire at the new time instead.
            s->node_seq = s->seq;
            the_scheduler().timers().rearm_from_fire(s, s->want_ns);
        } else {
            const std::int64_t due = s->when_ns;
            if (s->period_ns > 0) {
                // Go's rule: the next multiple of the period after now (skip what was missed).
                const std::int64_t late = the_scheduler().timers().batch_now() - due;
                std::int64_t next = due + s->period_ns * (1 + (late > 0 ? late / s->period_ns : 0));
                s->want_ns = next;
                the_scheduler().timers().rearm_from_fire(s, next);
            } else {
                s->active = false;
                s->owned = false;
                drop = true;
            }
            if (s->ch) (void)s->ch.try_send(tick_time(std::chrono::nanoseconds(due)));  // full: dropped
            run = s->on_fire != nullptr;
            if (run) s->add_ref();  // for f's task
        }
    }
    if (run) s->on_fire(s);  // releases that reference, in the task or at once
    if (drop) s->release();  // last access
}

GORO_DECL time_state* make_chan_state() {
    auto* s = new time_state();
    s->destroy = [](time_state* p) noexcept { delete p; };
    s->ch = channel<tick_time>(1);
    return s;
}

}  // namespace goro::detail

namespace goro {

GORO_DECL timer& timer::operator=(timer&& o) noexcept {
    if (this != &o) {
        close();
        s_ = std::exchange(o.s_, nullptr);
        ch_ = std::move(o.ch_);
    }
    return *this;
}

GORO_DECL bool timer::stop() {
    if (!s_) return false;
    bool drop = false, pending;
    {
        std::lock_guard g(s_->mu);
        pending = s_->stop_locked(drop);
        if (s_->drain_locked()) pending = true;
    }
    if (drop) s_->release();
    return pending;
}

GORO_DECL void timer::close() noexcept {
    if (!s_) return;
    bool drop = false;
    {
        std::lock_guard g(s_->mu);
        s_->stop_locked(drop);
    }
    if (drop) s_->release();
    std::exchange(s_, nullptr)->release();
    ch_ = channel<tick_time>(nullptr);
}

GORO_DECL ticker& ticker::operator=(ticker&& o) noexcept {
    if (this != &o) {
        close();
        s_ = std::exchange(o.s_, nullptr);
        ch_ = std::move(o.ch_);
    }
    return *this;
}

GORO_DECL void ticker::stop() {
    if (!s_) return;
    bool drop = false;
    {
        std::lock_guard g(s_->mu);
        s_->stop_locked(drop);
        s_->drain_locked();
    }
    if (drop) s_->release();
}

GORO_DECL void ticker::close() noexcept {
    if (!s_) return;
    bool drop = false;
    {
        std::lock_guard g(s_->mu);
        s_->stop_locked(drop);
    }
    if (drop) s_->release();
    std::exchange(s_, nullptr)->release();
    ch_ = channel<tick_time>(nullptr);
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/sync/ticker.hpp ----

// ---- begin goro/inspect/leak_check.hpp ----
// goro/inspect/leak_check.hpp — goleak for C++: fail a test that leaves tasks alive.
//
//   goro::testing::verify_none();                              // throws leak_error
//   auto before = goro::testing::ignore_current();             // a baseline
//   ... run the code under test ...
//   goro::testing::verify_none(before, goro::testing::ignore_top_function("serve"));
//
//   auto r = goro::testing::find_leaks(before);                // no throw
//   if (!r.ok()) std::cerr << r.report;
//
// A task is a leak when it is listed (alive: started by go() and not finished,
// or a thread waiting in block_on) and no option excuses it. The caller itself
// (when it is a task) never counts. Tasks that are just finishing are not
// blamed: the check retries with a growing pause (10 µs doubling up to
// 100 ms) for `max_wait` in all (default 500 ms) before it reports. The report
// lists each leaked task in Go's debug=2 form (goro/inspect/panic.hpp writes it).
//
// OPTIONS (any number, in any order, also as a std::vector<option>)
//   ignore_top_function(f)   the leaf frame (where the task is parked) is f
//   ignore_any_function(f)   some frame of its stack is f
//   ignore_created_by(f)     go() was called from f (its spawn site)
//   ignore_current()         the tasks alive now (a baseline: their ids)
//   ignore_ids(ids)          the given task ids
//   max_wait(d)              the retry budget (0: one look, no retry)
//
// FUNCTION NAMES are compared after `goro::clean_function_name` (stack.hpp),
// whole names, not substrings: "ns::worker" matches the frame "ns::worker".
// g++ records qualified names and clang++ bare ones, so when either side is
// unqualified only the last component is compared: "worker" matches
// "ns::worker" and "ns::worker" matches a clang frame "worker". Lambdas read
// "f()::{lambda}" on g++ and "{lambda}" on clang++.
//
// Test frameworks: goro/catch2.hpp (Catch2 v2 listener) and goro/gtest.hpp
// (GoogleTest listener) run this check after every test. A test that leaves
// tasks on purpose calls `goro::testing::allow_leaks()`; GORO_LEAK_CHECK=off
// in the environment turns those listeners off.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <ostream>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>


namespace goro::testing {

/// One rule of a leak check (see OPTIONS above).
struct option {
    enum class kind : std::uint8_t { top_function, any_function, created_by, ids, max_wait };
    kind what = kind::ids;
    std::string function{};                                  // cleaned
    std::shared_ptr<const std::vector<std::uint64_t>> ids{};  // sorted
    std::chrono::nanoseconds wait{0};
};

inline option ignore_top_function(std::string_view f) {
    return {option::kind::top_function, clean_function_name(f), nullptr, {}};
}
inline option ignore_any_function(std::string_view f) {
    return {option::kind::any_function, clean_function_name(f), nullptr, {}};
}
inline option ignore_created_by(std::string_view f) {
    return {option::kind::created_by, clean_function_name(f), nullptr, {}};
}
inline option ignore_ids(std::vector<std::uint64_t> ids) {
    detail::stable_sort(ids.data(), ids.data() + ids.size(), [](std::uint64_t a, std::uint64_t b) { return a < b; });
    return {option::kind::ids, {}, std::make_shared<const std::vector<std::uint64_t>>(std::move(ids)), {}};
}
/// The tasks alive now, as a baseline; cheap when none is.
GORO_DECL option ignore_current();
template <class Rep, class Period>
option max_wait(std::chrono::duration<Rep, Period> d) {
    return {option::kind::max_wait, {}, nullptr, std::chrono::duration_cast<std::chrono::nanoseconds>(d)};
}

/// The result of a check: the leaked tasks' ids and the printable report.
struct leak_result {
    std::vector<std::uint64_t> leaked;  ///< ascending ids; empty: no leak
    std::string report;                 ///< empty when ok(); else a header line and debug=2 blocks

    bool ok() const noexcept { return leaked.empty(); }
    std::size_t count() const noexcept { return leaked.size(); }
};

/// Thrown by verify_none; what() is the whole report.
class leak_error : public goro::error {
public:
    explicit leak_error(leak_result r) : goro::error(r.report), result_(std::move(r)) {}
    const leak_result& result() const noexcept { return result_; }

private:
    leak_result result_;
};

/// Whether the cleaned function name `name` is `pattern` (see FUNCTION NAMES).
GORO_DECL bool function_matches(std::string_view pattern, std::string_view name) noexcept;

/// Looks for leaked tasks, retrying (see the top of this header); never throws
/// for a leak.
GORO_DECL leak_result find_leaks(const std::vector<option>& opts);

template <class... Options>
    requires(std::is_convertible_v<const Options&, const option&> && ...)
leak_result find_leaks(const Options&... opts) {
    return find_leaks(std::vector<option>{opts...});
}

/// Throws leak_error (what(): "goro::testing::verify_none: found N unexpected
/// goroutines:" and the debug=2 blocks) when a task other than the allowed
/// ones is alive.
GORO_DECL void verify_none(const std::vector<option>& opts);

template <class... Options>
    requires(std::is_convertible_v<const Options&, const option&> && ...)
void verify_none(const Options&... opts) {
    verify_none(std::vector<option>{opts...});
}

// --- shared by the test framework listeners -------------------------------

namespace detail {
inline std::atomic<bool>& leaks_allowed_flag() noexcept {
    static std::atomic<bool> f{false};
    return f;
}
}  // namespace detail

/// The running test may leave tasks alive: the listener's check after it is
/// skipped (its tasks then join the next test's baseline). Reset at each test start.
inline void allow_leaks() noexcept { detail::leaks_allowed_flag().store(true, std::memory_order_relaxed); }

/// False when GORO_LEAK_CHECK is "off", "0" or "false" (the listeners do nothing).
GORO_DECL bool leak_check_enabled();

/// For a test program's main, like goleak.VerifyTestMain: returns `status`,
/// or 1 (when `status` is 0) after printing the leaked tasks to `err`.
GORO_DECL int verify_test_main(int status, const std::vector<option>& opts = {}, std::ostream& err = std::cerr);

/// What the listeners do around each test.
class per_test_check {
public:
    explicit per_test_check(std::vector<option> extra = {}) : extra_(std::move(extra)), enabled_(leak_check_enabled()) {}

    void starting() {
        detail::leaks_allowed_flag().store(false, std::memory_order_relaxed);
        if (enabled_) baseline_ = ignore_current();
    }
    /// The failure message for `test_name`, or empty when all is well.
    std::string ended(std::string_view test_name);

private:
    std::vector<option> extra_;
    option baseline_{};
    bool enabled_;
};

}  // namespace goro::testing

#if GORO_BODIES
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>


namespace goro::testing {

GORO_DECL option ignore_current() {
    std::vector<std::uint64_t> ids;
    if (num_goroutines() > 0) {
        snapshot s = snapshot::take();
        ids.reserve(s.total());
        for (const task_record& r : s.tasks()) ids.push_back(r.id);
    }
    return ignore_ids(std::move(ids));
}

namespace detail {

/// The last component of a cleaned name, outside <...> and (...): "ns::f" -> "f".
inline std::string_view unqualified(std::string_view name) noexcept {
    int depth = 0;
    std::size_t start = 0;
    for (std::size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        if (c == '<' || c == '(' || c == '{') ++depth;
        else if ((c == '>' || c == ')' || c == '}') && depth > 0) --depth;
        else if (c == ':' && depth == 0 && i + 1 < name.size() && name[i + 1] == ':') {
            start = i + 2;
            ++i;
        }
    }
    return name.substr(start);
}

}  // namespace detail

GORO_DECL bool function_matches(std::string_view pattern, std::string_view name) noexcept {
    if (pattern.empty() || name.empty()) return false;
    if (pattern == name) return true;
    std::string_view pt = detail::unqualified(pattern), nt = detail::unqualified(name);
    bool pattern_bare = pt.size() == pattern.size(), name_bare = nt.size() == name.size();
    return (pattern_bare || name_bare) && pt == nt;
}

namespace detail {

struct leak_rules {
    std::vector<const option*> top, any, created;
    std::vector<const std::vector<std::uint64_t>*> ids;
    std::chrono::nanoseconds wait = std::chrono::milliseconds(500);

    explicit leak_rules(const std::vector<option>& opts) {
        for (const option& o : opts) switch (o.what) {
            case option::kind::top_function: top.push_back(&o); break;
            case option::kind::any_function: any.push_back(&o); break;
            case option::kind::created_by: created.push_back(&o); break;
            case option::kind::ids:
                if (o.ids) ids.push_back(o.ids.get());
                break;
            case option::kind::max_wait: wait = o.wait; break;
            }
    }

    bool excused(const snapshot& snap, const task_record& r) const {
        for (auto* v : ids)
            if (goro::detail::sorted_contains(*v, r.id)) return true;
        if (!created.empty()) {
            std::string c = clean_function_name(r.created_by.function_name() ? r.created_by.function_name() : "");
            for (const option* o : created)
                if (function_matches(o->function, c)) return true;
        }
        if (top.empty() && any.empty()) return false;
        bool leaf = true;
        for (const ::goro::detail::site& s : snap.stack(r)) {
            if (s.line() == 0 && (!s.function_name() || !*s.function_name())) continue;  // never suspended
            std::string f = clean_function_name(s.function_name());
            if (leaf)
                for (const option* o : top)
                    if (function_matches(o->function, f)) return true;
            leaf = false;
            for (const option* o : any)
                if (function_matches(o->function, f)) return true;
        }
        return false;
    }
};

inline leak_result find_leaks_once(const leak_rules& rules) {
    leak_result res;
    if (num_goroutines() == 0) return res;
    snapshot snap = snapshot::take();
    const std::uint64_t self = this_task_id();
    for (const task_record& r : snap.tasks())  // ascending ids
        if (r.id != self && !rules.excused(snap, r)) res.leaked.push_back(r.id);
    if (res.leaked.empty()) return res;
    std::ostringstream out;
    out << "found " << res.leaked.size() << " unexpected goroutine" << (res.leaked.size() == 1 ? "" : "s")
        << ":\n\n";
    ::goro::detail::write_debug2(out, snap, [&](const task_record& r) {
        return goro::detail::sorted_contains(res.leaked, r.id);
    });
    res.report = out.str();
    return res;
}

}  // namespace detail

GORO_DECL leak_result find_leaks(const std::vector<option>& opts) {
    detail::leak_rules rules(opts);
    auto deadline = std::chrono::steady_clock::now() + rules.wait;
    auto pause = std::chrono::microseconds(10);
    for (;;) {
        leak_result r = detail::find_leaks_once(rules);
        auto now = std::chrono::steady_clock::now();
        if (r.ok() || now >= deadline) return r;
        std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(pause, deadline - now));
        pause = std::min(pause * 2, std::chrono::microseconds(100'000));
    }
}

GORO_DECL void verify_none(const std::vector<option>& opts) {
    leak_result r = find_leaks(opts);
    if (r.ok()) return;
    r.report.insert(0, "goro::testing::verify_none: ");
    throw leak_error(std::move(r));
}

GORO_DECL bool leak_check_enabled() {
    const char* e = std::getenv("GORO_LEAK_CHECK");
    if (!e) return true;
    return !(std::strcmp(e, "off") == 0 || std::strcmp(e, "0") == 0 || std::strcmp(e, "false") == 0);
}

GORO_DECL int verify_test_main(int status, const std::vector<option>& opts, std::ostream& err) {
    if (!leak_check_enabled()) return status;
    leak_result r = find_leaks(opts);
    if (r.ok()) return status;
    err << "goro leak check: goroutines alive at the end of the test run: " << r.report << std::flush;
    return status ? status : 1;
}

GORO_DECL std::string per_test_check::ended(std::string_view test_name) {
    if (!enabled_ || detail::leaks_allowed_flag().load(std::memory_order_relaxed)) return {};
    std::vector<option> opts = extra_;
    opts.push_back(baseline_);
    leak_result r = find_leaks(opts);
    if (r.ok()) return {};
    return "goro leak check: test \"" + std::string(test_name) + "\" left goroutines alive: " + r.report;
}

}  // namespace goro::testing
#endif  // GORO_BODIES
// ---- end goro/inspect/leak_check.hpp ----

// ---- begin goro/io/blocking.hpp ----
// goro/io/blocking.hpp — `co_await goro::blocking(fn)`: a blocking call off the pool.
//
//   std::string text = co_await goro::blocking([&] { return read_whole_file(path); });
//   auto addrs = co_await goro::blocking([&] { return resolve(host); });   // getaddrinfo
//
// `fn` runs on a thread of a separate pool of blocking threads (tokio's
// spawn_blocking; Go hands its P away for the length of a system call). The
// calling task parks meanwhile, with wait reason `syscall` and its whole
// stack (a dump shows `goroutine 7 [syscall]:` and where it called), and the
// worker runs other tasks. The result of `fn` is the result of the co_await
// (void, references and move-only types included); an exception that escapes
// `fn` is rethrown there.
//
// THE THREADS: made on demand, up to a limit (default 512, as tokio's; the
// environment variable GORO_MAX_BLOCKING_THREADS, read at first use, or
// `set_max_blocking_threads(n)`); a thread idle for the keep-alive (default
// 10 s, `set_blocking_keep_alive(d)`) exits. At the limit, calls queue in
// order and run as threads come free. `fn` should block, not compute for
// long: computation belongs on the pool, where it is scheduled with the rest.
//
// PARKING: await_suspend parks the task (PARKING PROTOCOL in
// core/scheduler.hpp) and then queues the call: the queue is the
// publication. The blocking thread runs `fn`, stores the result in the
// awaiter (in the task's frame), and calls ready(task) as its very last
// access: from there on the task may run and free the frame.
//
// THE DEADLOCK DETECTOR never counts a task parked here as asleep: a running
// call will wake it: each call counts as an `external_wakeup_guard` from
// its queueing until after its wake-up (inspect/deadlock.hpp).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>


namespace goro {

namespace detail {

/// One call waiting for, or running on, a blocking thread (an intrusive FIFO link).
struct blocking_job {
    blocking_job* next_job = nullptr;
    virtual void run() noexcept = 0;

protected:
    blocking_job() = default;
    blocking_job(const blocking_job&) = default;
    ~blocking_job() = default;
};

inline constexpr unsigned default_max_blocking_threads = 512;

GORO_DECL unsigned blocking_threads_from_env();

/// The blocking threads and their queue of calls (see THE THREADS above).
///
/// Accounting, all under `mu_`: `threads_` alive; `idle_` waiting on the
/// condition and not yet promised a call; `wakeups_` notifications sent to
/// idle threads and not yet taken. A submitter that finds an idle thread
/// moves one from `idle_` to `wakeups_` and notifies; a thread that wakes
/// takes a wake-up if one is left, else (a spurious or timed-out wake) counts
/// itself out of `idle_`. So two calls queued at once wake two threads, not
/// one twice.
class blocking_pool {
public:
    blocking_pool() : max_threads_(blocking_threads_from_env()) {}

    void submit(blocking_job* j) noexcept;

    unsigned max_threads() const noexcept { return max_threads_.load(std::memory_order_relaxed); }
    void set_max_threads(unsigned n) noexcept;
    std::chrono::nanoseconds keep_alive() const noexcept {
        return std::chrono::nanoseconds(keep_alive_ns_.load(std::memory_order_relaxed));
    }
    void set_keep_alive(std::chrono::nanoseconds d) noexcept {
        keep_alive_ns_.store(d.count(), std::memory_order_relaxed);
        cv_.notify_all();  // idle threads re-read it
    }

    /// Blocking threads alive now, and how many of them wait for a call.
    unsigned threads();
    unsigned idle_threads();
    /// Calls queued or running, not yet returned to their task.
    std::int64_t calls_in_flight() const noexcept { return in_flight_.load(std::memory_order_acquire); }

private:
    /// Threads running a call, or woken to take one.
    unsigned busy_locked() const noexcept { return threads_ - idle_; }

    enum class started { none, woke, made };

    /// A queued call needs a thread: wakes an idle one (`woke`: notify after
    /// unlocking) or makes one, unless `max_threads_` are busy. `none`: the
    /// call stays queued for a busy thread to take.
    started start_one_locked() noexcept;

    blocking_job* pop_locked() noexcept;

    void finish(blocking_job* j) noexcept;

    void thread_main() noexcept;

    ranked_lock<std::mutex, lock_rank::blocking_pool> mu_;
    std::condition_variable_any cv_;
    blocking_job* head_ = nullptr;
    blocking_job* tail_ = nullptr;
    std::size_t queued_ = 0;
    unsigned threads_ = 0;
    unsigned idle_ = 0;
    unsigned wakeups_ = 0;
    std::atomic<unsigned> max_threads_;
    std::atomic<std::int64_t> keep_alive_ns_{10'000'000'000};
    std::atomic<std::int64_t> in_flight_{0};
};

/// Made at first use and never destroyed: its threads may outlive main.
inline blocking_pool& the_blocking_pool() {
    static blocking_pool* p = new blocking_pool();
    return *p;
}

/// What a blocking call's awaiter keeps of fn's result.
template <class R>
using blocking_stored = std::conditional_t<std::is_reference_v<R>, std::add_pointer_t<R>, R>;

template <class F>
class blocking_awaiter final : blocking_job {
public:
    using is_goro_awaiter = void;
    using result_type = std::invoke_result_t<F&>;

    explicit blocking_awaiter(F&& f) : fn_(std::move(f)) {}
    /// Moved only before it is awaited (block_on takes its awaitable by value).
    blocking_awaiter(blocking_awaiter&& o) noexcept(std::is_nothrow_move_constructible_v<F>)
        : blocking_job(), fn_(std::move(o.fn_)) {}
    blocking_awaiter& operator=(blocking_awaiter&&) = delete;

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
        task_ = current_task_or_throw("goro::blocking");
        park(task_, h, wait_reason::syscall);
        the_blocking_pool().submit(this);  // published: another thread may resume the task from here on
    }
    result_type await_resume() {
        if (result_.index() == 2) std::rethrow_exception(std::move(std::get<2>(result_)));
        if constexpr (std::is_void_v<result_type>) return;
        else if constexpr (std::is_reference_v<result_type>) return static_cast<result_type>(*std::get<1>(result_));
        else return std::move(std::get<1>(result_));
    }

private:
    void run() noexcept override {
        try {
            if constexpr (std::is_void_v<result_type>) {
                fn_();
                result_.template emplace<1>();
            } else if constexpr (std::is_reference_v<result_type>) {
                result_.template emplace<1>(&fn_());
            } else {
                result_.template emplace<1>(fn_());
            }
        } catch (...) {
            result_.template emplace<2>(std::current_exception());
        }
        ready(task_);  // last access: the task may run, and free this awaiter, from here on
    }

    using stored = std::conditional_t<std::is_void_v<result_type>, std::monostate, blocking_stored<result_type>>;
    F fn_;
    task_header* task_ = nullptr;
    std::variant<std::monostate, stored, std::exception_ptr> result_;
};

}  // namespace detail

/// Runs `fn()` on a blocking thread while the calling task parks (wait
/// reason `syscall`); the co_await gives fn's result or rethrows its
/// exception. `fn` is moved (or copied) into the awaiter; what it refers to
/// by reference must outlive the co_await, which it does when it lives in
/// the awaiting coroutine.
template <class F>
    requires std::invocable<std::decay_t<F>&>
[[nodiscard("goro::blocking: co_await it")]] detail::blocking_awaiter<std::decay_t<F>> blocking(F&& fn) {
    return detail::blocking_awaiter<std::decay_t<F>>(std::decay_t<F>(std::forward<F>(fn)));
}

/// The most blocking threads alive at once (default 512, or
/// GORO_MAX_BLOCKING_THREADS). Calls beyond it queue.
inline unsigned max_blocking_threads() { return detail::the_blocking_pool().max_threads(); }

/// Sets that limit; at least 1. Raising it starts threads for queued calls;
/// lowering it lets the surplus threads finish their call and exit when idle.
inline void set_max_blocking_threads(unsigned n) {
    if (n == 0) throw usage_error("goro::set_max_blocking_threads: the limit must be at least 1");
    detail::the_blocking_pool().set_max_threads(n);
}

/// How long an idle blocking thread waits for a call before it exits (default 10 s).
inline void set_blocking_keep_alive(std::chrono::nanoseconds d) {
    if (d.count() < 0) throw usage_error("goro::set_blocking_keep_alive: the keep-alive must not be negative");
    detail::the_blocking_pool().set_keep_alive(d);
}

/// Blocking threads alive now (idle ones included).
inline unsigned blocking_threads() { return detail::the_blocking_pool().threads(); }

}  // namespace goro

#if GORO_BODIES
#include <cstdio>
#include <cstdlib>
#include <thread>


namespace goro::detail {

GORO_DECL unsigned blocking_threads_from_env() {
    if (const char* e = std::getenv("GORO_MAX_BLOCKING_THREADS")) {
        char* end = nullptr;
        long v = std::strtol(e, &end, 10);
        if (end != e && *end == '\0' && v > 0 && v <= 1'000'000) return static_cast<unsigned>(v);
        std::fprintf(stderr, "goro: ignoring GORO_MAX_BLOCKING_THREADS=\"%s\": want an integer from 1 to 1000000\n", e);
    }
    return default_max_blocking_threads;
}

GORO_DECL void blocking_pool::submit(blocking_job* j) noexcept {
    in_flight_.fetch_add(1, std::memory_order_acq_rel);
    the_deadlock_watch().external_guards.fetch_add(1, std::memory_order_acq_rel);
    std::unique_lock g(mu_);
    if (tail_) tail_->next_job = j;
    else head_ = j;
    tail_ = j;
    ++queued_;
    if (start_one_locked() == started::woke) {
        g.unlock();
        cv_.notify_one();
        return;
    }
    if (threads_ > 0) return;  // queued: a busy thread takes it when its call returns
    // No thread can be made and none exists: run the calls here rather
    // than leave them waiting forever (the worker blocks, as without goro).
    while (blocking_job* k = pop_locked()) {
        g.unlock();
        finish(k);
        g.lock();
    }
}

GORO_DECL void blocking_pool::set_max_threads(unsigned n) noexcept {
    bool notify = false;
    {
        std::lock_guard g(mu_);
        max_threads_.store(n, std::memory_order_relaxed);
        // Raised: put threads on the calls that queued at the old limit.
        for (std::size_t need = queued_ > wakeups_ ? queued_ - wakeups_ : 0; need > 0; --need) {
            const started r = start_one_locked();
            if (r == started::none) break;
            if (r == started::woke) notify = true;
        }
    }
    if (notify) cv_.notify_all();
}

GORO_DECL unsigned blocking_pool::threads() {
    std::lock_guard g(mu_);
    return threads_;
}

GORO_DECL unsigned blocking_pool::idle_threads() {
    std::lock_guard g(mu_);
    return idle_;
}

GORO_DECL blocking_pool::started blocking_pool::start_one_locked() noexcept {
    if (busy_locked() >= max_threads_.load(std::memory_order_relaxed)) return started::none;
    if (idle_ > 0) {
        --idle_;
        ++wakeups_;
        return started::woke;
    }
    ++threads_;
    try {
        std::thread([this] { thread_main(); }).detach();
    } catch (...) {
        --threads_;
        return started::none;
    }
    return started::made;
}

GORO_DECL blocking_job* blocking_pool::pop_locked() noexcept {
    blocking_job* j = head_;
    if (!j) return nullptr;
    head_ = j->next_job;
    if (!head_) tail_ = nullptr;
    j->next_job = nullptr;
    --queued_;
    return j;
}

GORO_DECL void blocking_pool::finish(blocking_job* j) noexcept {
    j->run();  // wakes its task as its last access to the job
    // Counted out only after the wake-up, so the deadlock detector never
    // sees the task parked with no call in flight.
    the_deadlock_watch().external_guards.fetch_sub(1, std::memory_order_acq_rel);
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
}

GORO_DECL void blocking_pool::thread_main() noexcept {
    std::unique_lock g(mu_);
    for (;;) {
        // Counted busy here; a thread woken by a spurious or timed-out
        // wake (or set_keep_alive's broadcast) takes a call only within the limit.
        blocking_job* j = busy_locked() <= max_threads_.load(std::memory_order_relaxed) ? pop_locked() : nullptr;
        if (j) {
            g.unlock();
            finish(j);
            g.lock();
            // Over a lowered limit: leave, if the others busy are enough.
            if (busy_locked() > max_threads_.load(std::memory_order_relaxed)) {
                --threads_;
                return;
            }
            continue;
        }
        ++idle_;
        const auto deadline = std::chrono::steady_clock::now() + keep_alive();
        const bool timed_out = cv_.wait_until(g, deadline) == std::cv_status::timeout;
        if (wakeups_ > 0) {
            --wakeups_;  // a submitter counted us out of idle_
            continue;
        }
        --idle_;
        if (timed_out && !head_) {
            --threads_;
            return;
        }
    }
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/io/blocking.hpp ----
// ---- end goro/core.hpp ----

// ---- begin goro/inspect/leak_watch.hpp ----
// goro/inspect/leak_watch.hpp — which groups of tasks are leaking, since when, how fast.
//
//   goro::leak_watch w;                 // interval 10 s, window 6 samples
//   w.start();                          // a sampling thread (or call w.sample_now() yourself)
//   ...
//   for (const auto& g : w.suspects()) std::cerr << g.frames[0].function << " +" << g.growth_per_minute << "/min\n";
//   std::cout << w.report_text();       // what /debug/goro/leaks serves
//
// A debug_server starts one (debug_server_options::leak_watch_interval, 10 s;
// 0: none) and serves it at /debug/goro/leaks, /debug/goro/leaks?format=json
// and in /metrics (see goro/http/routes.hpp).
//
// SAMPLING. Each sample takes one goroutine profile (goro/inspect/snapshot.hpp:
// the world stops only to begin an epoch, then records are copied while tasks
// run) and groups it exactly as debug=1 does (same stack and labels). Each
// group is known by its stable key (the hash of its sites' ids and labels,
// goro::site_id: the same in every run of the same binary), so a group keeps
// its identity from sample to sample. The watch keeps, per group, a ring of the
// last `history` counts, its stack (at most `max_frames` frames), labels, and
// its oldest task's wait reason and parked time. A group absent from a sample
// is forgotten at once (its count went to zero: not a leak); only the
// `max_groups` largest groups of a sample are kept.
//
// MEMORY BOUND. history × 4 bytes of counts per group, plus its frames (each
// a function name and a file name) and labels: with the defaults (history 60,
// max_groups 2,048, max_frames 32) at most 2,048 × (240 B + the text of 32
// frames); about 1 KiB per group for typical C++ names, so ~2 MiB at worst,
// and nothing grows with the number of samples or tasks. Each sample also
// briefly holds one snapshot (64 bytes per task plus its frames), freed when
// the sample is done.
//
// THE SUSPECT RULE. Over the last `window` samples (n, default 6: one minute
// at 10 s) a group is a suspect when all of these hold:
//   (a) its count rose in at least `min_rises` (k, default 4) of the n-1 steps
//       between those samples (a rise: strictly more than the sample before);
//   (b) it grew by at least `min_growth` tasks (default 5) from the first to
//       the last sample of the window;
//   (c) the last sample is the window's highest: it is still growing now;
//   (d) it is not merely following load. The load is the spawn rate (tasks
//       started between two samples, from the registry's counter of tasks
//       ever started; per step, so samples taken by hand count steps of work). Tasks that serve requests are as many as the
//       requests in flight: they grow when the rate grows and stop growing
//       when it levels. So while the rate rose by `load_ramp` (default 1.25:
//       25 %) or more from the window's first step to its last, a group must
//       grow by a factor more than 10 % larger than the rate's to be a suspect.
// A leak keeps growing as long as any work arrives, so (a)–(c) hold for it at
// a steady load, and after a ramp. A load ramp that levels off stops (a) and
// (c) within one window once it is level: no suspect then, whatever the
// plateau. During a ramp (d) keeps the groups that grow in proportion to the
// load quiet; a leak is then flagged when the ramp levels (or earlier, if it
// outgrows the load). A group newer than the window counts as 0 in the
// samples before it appeared (the watch saw it absent), so a new leak starts
// from zero; a group that was present but not kept (max_groups) is judged
// only once the window lies within the samples that kept it. Small or slow leaks need a longer window or a lower min_growth;
// the defaults flag a leak of one task per 10-second step or more.
//
// growth_per_minute: (last − first count of the window) / the window's time.
// growing_since: the time of the sample just before the current run of
// non-decreasing counts began (walking back through the history).
//
// THREAD SAFETY: every member may be called from any thread; a mutex guards
// the state (never held while a snapshot is taken). sample_now() from inside a
// goro task works (it takes a snapshot like any dump); the sampling thread is
// an ordinary std::thread.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>


namespace goro {

struct leak_watch_options {
    /// Time between two samples of the sampling thread (start()).
    std::chrono::nanoseconds interval = std::chrono::seconds(10);
    /// Counts kept per group (a ring); at least `window`.
    std::size_t history = 60;
    /// Samples the suspect rule looks at (n, at least 3).
    std::size_t window = 6;
    /// Rises needed among the window's n-1 steps (k, 1 to n-1).
    std::size_t min_rises = 4;
    /// Growth over the window needed (tasks, at least 1).
    std::size_t min_growth = 5;
    /// The spawn rate's rise over the window (a factor) from which a group
    /// must outgrow the load; 0 turns rule (d) off.
    double load_ramp = 1.25;
    /// Largest groups kept per sample.
    std::size_t max_groups = 2048;
    /// Frames kept per group's stack (leaf first).
    std::size_t max_frames = 32;
};

/// One group as the watch knows it (a copy: safe to keep).
struct leak_group {
    std::uint64_t key = 0;                   ///< stable group id: site ids and labels
    std::size_t count = 0;                   ///< tasks in the group at the last sample
    std::vector<std::uint64_t> site_ids;     ///< leaf first (0 for a pseudo-frame)
    std::vector<stack_frame> frames;         ///< leaf first, at most max_frames
    std::vector<std::pair<std::string, std::string>> labels;
    std::string wait_reason;                 ///< of its longest-parked task ("" if none waits)
    std::int64_t oldest_wait_ns = 0;         ///< how long that task had been parked at the last sample
    std::vector<std::uint32_t> history;      ///< counts, oldest first, the last one is `count`
    bool suspect = false;
    double growth_per_minute = 0;            ///< over the window (suspects; else 0)
    std::int64_t growing_since_unix_ns = 0;  ///< wall-clock time (suspects; else 0)
};

/// The watch's state at its last sample.
struct leak_report {
    std::uint64_t samples = 0;             ///< samples taken so far
    std::int64_t last_sample_unix_ns = 0;  ///< 0: none yet
    std::size_t groups_seen = 0;           ///< groups in the last sample (kept or not)
    std::size_t total_tasks = 0;           ///< tasks in the last sample
    std::int64_t last_sample_cpu_ns = 0;   ///< CPU time of the last sample (the sampling thread's)
    std::int64_t last_sample_pause_ns = 0; ///< the world's stop in the last sample
    std::vector<leak_group> suspects;      ///< by growth per minute, descending
    std::vector<leak_group> groups;        ///< the kept groups, by count descending
};

class snapshot;  // goro/inspect/snapshot.hpp (the bodies include it)

namespace detail {

class profile_view;  // goro/inspect/pprof.hpp

GORO_DECL std::int64_t thread_cpu_ns() noexcept;

inline std::int64_t unix_now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/// "2026-12-06T23:10:00Z" (UTC, whole seconds).
GORO_DECL std::string rfc3339(std::int64_t unix_ns);

}  // namespace detail

class leak_watch {
public:
    explicit leak_watch(leak_watch_options o = {});
    ~leak_watch() { stop(); }
    leak_watch(const leak_watch&) = delete;
    leak_watch& operator=(const leak_watch&) = delete;

    const leak_watch_options& options() const noexcept { return opt_; }

    /// Starts the sampling thread: a sample every `interval`, the first one
    /// after one interval. Throws std::logic_error when already started.
    void start();
    /// Stops and joins the sampling thread (idempotent).
    void stop();
    bool running() const {
        std::lock_guard g(thread_mu_);
        return thread_.joinable();
    }

    /// Takes one sample now and applies the suspect rule.
    void sample_now() { sample_at(std::chrono::steady_clock::now()); }
    /// The same, as if taken at `at` (tests drive time explicitly: growth per
    /// minute and growing_since are computed from these times). Times must
    /// not go backwards.
    void sample_at(std::chrono::steady_clock::time_point at);

    std::uint64_t samples() const {
        std::lock_guard g(mu_);
        return seq_;
    }

    /// The suspects at the last sample, by growth per minute descending.
    std::vector<leak_group> suspects() const { return report().suspects; }

    /// Everything known at the last sample.
    leak_report report() const;

    /// The report in the debug=1 shape (what /debug/goro/leaks serves).
    std::string report_text() const { return to_text(report(), opt_); }
    /// The report as JSON (/debug/goro/leaks?format=json).
    std::string report_json() const { return to_json(report(), opt_); }

    // --- formats (static: also for a report copied out earlier) ---

    static std::string to_text(const leak_report& r, const leak_watch_options& o);

    /// One group in the debug=1 shape, with its suspect, history and labels lines.
    static void write_group(std::string& out, const leak_group& g);

    static std::string to_json(const leak_report& r, const leak_watch_options& o);

    static std::string duration_text(std::chrono::nanoseconds d);

private:
    struct sample_meta {
        std::int64_t steady_ns = 0;
        std::int64_t unix_ns = 0;
        std::uint64_t spawned = 0;  // registry total_added at the sample
        bool truncated = false;     // more groups than max_groups: some were not kept
    };
    struct tracked {
        std::uint64_t key = 0;
        std::uint64_t first_seq = 0;  // the first sample in which it was kept
        bool zero_before = false;     // the sample before first_seq kept every group: it was absent (0)
        std::vector<std::uint32_t> ring;
        std::vector<std::uint64_t> site_ids;
        std::vector<stack_frame> frames;
        std::vector<std::pair<std::string, std::string>> labels;
        std::string wait_reason;
        std::int64_t oldest_wait_ns = 0;
        bool suspect = false;
        double growth_per_minute = 0;
        std::int64_t growing_since_unix_ns = 0;
    };

    void run();

    std::uint32_t count_at(const tracked& t, std::uint64_t seq) const noexcept {
        return seq < t.first_seq ? 0 : t.ring[seq % opt_.history];
    }

    void ingest(const snapshot& s, const detail::profile_view& v, std::chrono::steady_clock::time_point at,
                std::uint64_t spawned);

    /// Applies the suspect rule (top of this header) to `t` at sample `seq`.
    void judge(tracked& t, std::uint64_t seq) const;

    /// Tasks started in the step that ends at sample `seq` (>= 1). Per step,
    /// not per second: the sampling thread's steps are equally long, and
    /// samples taken by hand (a test, /debug/goro/leaks/sample) are steps of
    /// work, however long they took.
    double rate(std::uint64_t seq) const noexcept;

    leak_group view(const tracked& t) const;

    const leak_watch_options opt_;
    mutable std::mutex mu_;
    std::uint64_t seq_ = 0;
    std::vector<sample_meta> meta_;
    std::unordered_map<std::uint64_t, tracked> tracked_;
    std::size_t groups_seen_ = 0, total_tasks_ = 0;
    std::int64_t last_cpu_ns_ = 0, last_pause_ns_ = 0;

    mutable std::mutex thread_mu_;
    std::mutex cv_mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace goro

namespace goro::testing {

/// Thrown by expect_no_growth; what() is the report (the growing groups' stacks).
class growth_error : public goro::error {
public:
    explicit growth_error(std::string report, std::vector<leak_group> grown)
        : goro::error(std::move(report)), grown_(std::move(grown)) {}
    const std::vector<leak_group>& grown() const noexcept { return grown_; }

private:
    std::vector<leak_group> grown_;
};

/// The groups that grew with the iteration count while `fn` ran `iterations`
/// times (see expect_no_growth); empty when none did. `report` gets the text.
template <class F>
std::vector<leak_group> find_growth(F&& fn, int iterations, std::string* report = nullptr) {
    if (iterations < 3)
        throw std::invalid_argument("goro::testing::expect_no_growth: iterations must be at least 3, not " +
                                    std::to_string(iterations));
    auto run_once = [&] {
        if constexpr (std::is_void_v<std::invoke_result_t<F&>>) fn();
        else block_on(fn());
    };
    const std::size_t n = static_cast<std::size_t>(iterations);
    leak_watch_options o;
    o.window = n + 1;
    o.history = n + 2;
    o.min_rises = std::max<std::size_t>(1, n / 2);
    o.min_growth = std::max<std::size_t>(1, n / 2);
    o.load_ramp = 0;
    leak_watch w(o);
    run_once();  // warm-up: pools and caches that start on first use
    auto t = std::chrono::steady_clock::now();
    w.sample_at(t);
    for (std::size_t i = 0; i < n; ++i) {
        run_once();
        t += std::chrono::seconds(1);
        w.sample_at(t);
    }
    std::vector<leak_group> grown = w.suspects();
    if (report && !grown.empty()) {
        *report = "goro::testing::expect_no_growth: " + std::to_string(grown.size()) +
                  (grown.size() == 1 ? " group" : " groups") + " of tasks grew with the iterations (" +
                  std::to_string(iterations) + " runs; counts after each in `# history`):\n\n";
        for (const leak_group& g : grown) leak_watch::write_group(*report, g);
    }
    return grown;
}

/// Runs `fn` (void(), or returning an awaitable such as goro::task<>, which is
/// block_on'd) once to warm up, then `iterations` times (at least 3), taking a
/// goroutine profile after each; throws growth_error, whose what() prints each
/// growing group's stack, when a group grew with the iteration count: it rose
/// after at least half of the runs and by at least iterations/2 tasks overall,
/// and is at its highest at the end. Catches leaks in pools that outlive the
/// test (verify_none cannot: the pool's own tasks are alive by design).
/// Call it from a plain thread (it block_on's), not from inside a task.
template <class F>
void expect_no_growth(F&& fn, int iterations = 10) {
    std::string report;
    std::vector<leak_group> grown = find_growth(std::forward<F>(fn), iterations, &report);
    if (!grown.empty()) throw growth_error(std::move(report), std::move(grown));
}

}  // namespace goro::testing

#if GORO_BODIES
#include <ctime>


namespace goro::detail {

GORO_DECL std::int64_t thread_cpu_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

GORO_DECL std::string rfc3339(std::int64_t unix_ns) {
    std::time_t t = static_cast<std::time_t>(unix_ns / 1'000'000'000);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char b[32];
    std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

}  // namespace goro::detail

namespace goro {

GORO_DECL leak_watch::leak_watch(leak_watch_options o) : opt_(o) {
    const char* op = "goro::leak_watch";
    if (opt_.window < 3) throw std::invalid_argument(std::string(op) + ": window must be at least 3 samples");
    if (opt_.history < opt_.window)
        throw std::invalid_argument(std::string(op) + ": history must be at least window");
    if (opt_.history > 100000) throw std::invalid_argument(std::string(op) + ": history must be at most 100000");
    if (opt_.min_rises < 1 || opt_.min_rises > opt_.window - 1)
        throw std::invalid_argument(std::string(op) + ": min_rises must be between 1 and window-1");
    if (opt_.min_growth < 1) throw std::invalid_argument(std::string(op) + ": min_growth must be at least 1");
    if (opt_.interval.count() <= 0) throw std::invalid_argument(std::string(op) + ": interval must be positive");
    if (opt_.max_groups < 1) throw std::invalid_argument(std::string(op) + ": max_groups must be at least 1");
    meta_.resize(opt_.history);
}

GORO_DECL void leak_watch::start() {
    std::lock_guard g(thread_mu_);
    if (thread_.joinable()) throw std::logic_error("goro::leak_watch::start: already started");
    stopping_ = false;
    thread_ = std::thread([this] { run(); });
}

GORO_DECL void leak_watch::stop() {
    std::lock_guard g(thread_mu_);
    if (!thread_.joinable()) return;
    {
        std::lock_guard l(cv_mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

GORO_DECL void leak_watch::sample_at(std::chrono::steady_clock::time_point at) {
    const std::int64_t cpu0 = detail::thread_cpu_ns();
    snapshot s = snapshot::take();
    detail::profile_view v(s);
    const std::uint64_t spawned = detail::the_registry().total_added();
    std::lock_guard g(mu_);
    ingest(s, v, at, spawned);
    last_cpu_ns_ = detail::thread_cpu_ns() - cpu0;
    last_pause_ns_ = s.copy_ns();
}

GORO_DECL leak_report leak_watch::report() const {
    std::lock_guard g(mu_);
    leak_report r;
    r.samples = seq_;
    r.last_sample_unix_ns = seq_ ? meta_[(seq_ - 1) % opt_.history].unix_ns : 0;
    r.groups_seen = groups_seen_;
    r.total_tasks = total_tasks_;
    r.last_sample_cpu_ns = last_cpu_ns_;
    r.last_sample_pause_ns = last_pause_ns_;
    r.groups.reserve(tracked_.size());
    for (const auto& [k, t] : tracked_) r.groups.push_back(view(t));
    std::sort(r.groups.begin(), r.groups.end(), [](const leak_group& a, const leak_group& b) {
        if (a.count != b.count) return a.count > b.count;
        return a.key < b.key;
    });
    for (const leak_group& lg : r.groups)
        if (lg.suspect) r.suspects.push_back(lg);
    std::stable_sort(r.suspects.begin(), r.suspects.end(), [](const leak_group& a, const leak_group& b) {
        return a.growth_per_minute > b.growth_per_minute;
    });
    return r;
}

GORO_DECL std::string leak_watch::to_text(const leak_report& r, const leak_watch_options& o) {
    std::string out = "goro leak watch: " + std::to_string(r.suspects.size()) + " suspect" +
                      (r.suspects.size() == 1 ? "" : "s") + " of " + std::to_string(r.groups_seen) +
                      " groups, " + std::to_string(r.total_tasks) + " tasks; " + std::to_string(r.samples) +
                      " samples, every " + duration_text(o.interval) + "\n";
    out += "# rule: rose in >= " + std::to_string(o.min_rises) + " of the last " + std::to_string(o.window - 1) +
           " steps, grew by >= " + std::to_string(o.min_growth) +
           ", highest now, and outgrew the spawn rate while it ramped\n";
    if (r.samples == 0) out += "# no sample yet\n";
    out += '\n';
    for (const leak_group& g : r.suspects) write_group(out, g);
    return out;
}

GORO_DECL void leak_watch::write_group(std::string& out, const leak_group& g) {
    std::vector<std::string> hex;
    std::vector<detail::text_frame> frames;
    {
        out += std::to_string(g.count) + " @";
        for (std::uint64_t id : g.site_ids) {
            char b[20];
            hex.emplace_back(b, detail::format_hex(b, id));
            out += ' ';
            out += hex.back();
        }
        out += '\n';
        char rate[32];
        std::snprintf(rate, sizeof rate, "%+.1f", g.growth_per_minute);
        out += g.suspect ? "# suspect: " : "# growth: ";
        out += rate;
        out += "/min since " + (g.growing_since_unix_ns ? detail::rfc3339(g.growing_since_unix_ns) : std::string("-")) + "; oldest [" +
               (g.wait_reason.empty() ? std::string("running") : g.wait_reason);
        if (std::int64_t m = g.oldest_wait_ns / 60'000'000'000; m >= 1)
            out += ", " + std::to_string(m) + (m == 1 ? " minute" : " minutes");
        out += "]\n# history:";
        for (std::uint32_t c : g.history) out += ' ' + std::to_string(c);
        out += '\n';
        detail::write_labels_line(out, g.labels);
        for (std::size_t i = 0; i < g.frames.size(); ++i) {
            const stack_frame& f = g.frames[i];
            frames.push_back(detail::text_frame{hex[i], f.function, f.file, f.line, detail::utf8_width(f.function)});
        }
        detail::write_frame_lines(out, frames);
        out += '\n';
    }
}

GORO_DECL std::string leak_watch::to_json(const leak_report& r, const leak_watch_options& o) {
    std::string out = "{\"samples\":" + std::to_string(r.samples) +
                      ",\"interval_ns\":" + std::to_string(o.interval.count()) +
                      ",\"window\":" + std::to_string(o.window) + ",\"min_rises\":" + std::to_string(o.min_rises) +
                      ",\"min_growth\":" + std::to_string(o.min_growth) +
                      ",\"last_sample_unix_ns\":" + std::to_string(r.last_sample_unix_ns) +
                      ",\"groups_seen\":" + std::to_string(r.groups_seen) +
                      ",\"total_tasks\":" + std::to_string(r.total_tasks) +
                      ",\"last_sample_cpu_ns\":" + std::to_string(r.last_sample_cpu_ns) +
                      ",\"last_sample_pause_ns\":" + std::to_string(r.last_sample_pause_ns) + ",\"suspects\":[";
    auto group = [&](const leak_group& g) {
        char b[20];
        out += "\n{\"group\":\"";
        out.append(b, detail::format_hex(b, g.key));
        out += "\",\"count\":" + std::to_string(g.count) + ",\"suspect\":" + (g.suspect ? "true" : "false");
        char rate[32];
        std::snprintf(rate, sizeof rate, "%.3f", g.growth_per_minute);
        out += ",\"growth_per_minute\":";
        out += rate;
        out += ",\"growing_since_unix_ns\":" + std::to_string(g.growing_since_unix_ns);
        out += ",\"growing_since\":";
        detail::json_quote(out, g.growing_since_unix_ns ? detail::rfc3339(g.growing_since_unix_ns) : "");
        out += ",\"wait_reason\":";
        detail::json_quote(out, g.wait_reason);
        out += ",\"oldest_wait_ns\":" + std::to_string(g.oldest_wait_ns) + ",\"labels\":";
        detail::write_json_labels(out, g.labels);
        out += ",\"history\":[";
        for (std::size_t i = 0; i < g.history.size(); ++i) {
            if (i) out += ',';
            out += std::to_string(g.history[i]);
        }
        out += "],\"frames\":[";
        for (std::size_t i = 0; i < g.frames.size(); ++i) {
            if (i) out += ',';
            out += "{\"function\":";
            detail::json_quote(out, g.frames[i].function);
            out += ",\"file\":";
            detail::json_quote(out, g.frames[i].file);
            out += ",\"line\":" + std::to_string(g.frames[i].line) + ",\"site_id\":\"";
            out.append(b, detail::format_hex(b, g.site_ids[i]));
            out += "\"}";
        }
        out += "]}";
    };
    for (std::size_t i = 0; i < r.suspects.size(); ++i) {
        if (i) out += ',';
        group(r.suspects[i]);
    }
    out += "],\"groups\":[";
    for (std::size_t i = 0; i < r.groups.size(); ++i) {
        if (i) out += ',';
        group(r.groups[i]);
    }
    out += "]}\n";
    return out;
}

GORO_DECL std::string leak_watch::duration_text(std::chrono::nanoseconds d) {
    auto ns = d.count();
    if (ns % 1'000'000'000 == 0) return std::to_string(ns / 1'000'000'000) + "s";
    if (ns % 1'000'000 == 0) return std::to_string(ns / 1'000'000) + "ms";
    return std::to_string(ns) + "ns";
}

GORO_DECL void leak_watch::run() {
    std::unique_lock l(cv_mu_);
    for (;;) {
        if (cv_.wait_for(l, opt_.interval, [this] { return stopping_; })) return;
        l.unlock();
        try {
            sample_now();
        } catch (...) {
            // Out of memory for a snapshot: skip this sample.
        }
        l.lock();
    }
}

GORO_DECL void leak_watch::ingest(const snapshot& s, const detail::profile_view& v,
                                  std::chrono::steady_clock::time_point at, std::uint64_t spawned) {
    const std::uint64_t seq = seq_;  // this sample's number
    const std::int64_t steady =
        std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
    const std::int64_t unix_ns =
        detail::unix_now_ns() -
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - at).count();
    meta_[seq % opt_.history] = sample_meta{steady, unix_ns, spawned, v.groups().size() > opt_.max_groups};
    const auto& tasks = s.tasks();
    const auto& groups = v.groups();
    groups_seen_ = groups.size();
    total_tasks_ = s.total();
    std::unordered_map<std::uint64_t, tracked> next;
    next.reserve(std::min(groups.size(), opt_.max_groups) * 2);
    const std::int64_t now = s.taken_at_ns();
    for (std::size_t gi = 0; gi < groups.size() && gi < opt_.max_groups; ++gi) {
        const task_group& g = groups[gi];
        const task_record& first = tasks[g.tasks.front()];
        auto it = tracked_.find(g.key);
        tracked t;
        if (it != tracked_.end()) {
            t = std::move(it->second);
        } else {
            t.key = g.key;
            t.first_seq = seq;
            t.zero_before = seq > 0 && !meta_[(seq - 1) % opt_.history].truncated;
            t.ring.assign(opt_.history, 0);
            auto fr = v.frames(first);
            for (std::size_t i = 0; i < fr.size() && i < opt_.max_frames; ++i) {
                const detail::site_info& si = v.site(fr[i]);
                t.site_ids.push_back(si.id);
                t.frames.push_back(stack_frame{si.function, si.file, si.line});
            }
            t.labels = detail::profile_view::labels(first);
        }
        t.ring[seq % opt_.history] = static_cast<std::uint32_t>(std::min<std::size_t>(g.count, UINT32_MAX));
        // The longest-parked task of the group.
        std::int64_t oldest = 0;
        const char* why = nullptr;
        for (std::uint32_t ti : g.tasks) {
            const task_record& r = tasks[ti];
            if (r.state != task_state::waiting || r.since_ns == 0) continue;
            std::int64_t age = now > r.since_ns ? now - r.since_ns : 0;
            if (!why || age > oldest) {
                oldest = age;
                why = r.wait_reason ? r.wait_reason : "waiting";
            }
        }
        t.wait_reason = why ? why : (first.state == task_state::running ? "running" : "runnable");
        t.oldest_wait_ns = oldest;
        next.emplace(g.key, std::move(t));
    }
    tracked_.swap(next);  // groups not in this sample are forgotten
    seq_ = seq + 1;
    for (auto& [k, t] : tracked_) judge(t, seq);
}

GORO_DECL void leak_watch::judge(tracked& t, std::uint64_t seq) const {
    t.suspect = false;
    t.growth_per_minute = 0;
    t.growing_since_unix_ns = 0;
    const std::size_t n = opt_.window;
    if (seq + 1 < n) return;  // not a full window yet
    const std::uint64_t first = seq + 1 - n;
    // Samples before it was kept: zeros if it was absent then, else unknown.
    if (first < t.first_seq && !t.zero_before) return;
    std::size_t rises = 0;
    std::uint32_t hi = 0;
    for (std::uint64_t s = first; s <= seq; ++s) {
        std::uint32_t c = count_at(t, s);
        if (s > first && c > count_at(t, s - 1)) ++rises;
        hi = std::max(hi, c);
    }
    const std::uint32_t c0 = count_at(t, first), c1 = count_at(t, seq);
    if (rises < opt_.min_rises) return;                      // (a)
    if (c1 < c0 || c1 - c0 < opt_.min_growth) return;       // (b)
    if (c1 < hi) return;                                     // (c)
    if (opt_.load_ramp > 0 && first >= 1 && n < opt_.history) {  // (d)
        const double r0 = rate(first), r1 = rate(seq);
        if (r0 > 0 && r1 >= opt_.load_ramp * r0) {
            const double load_factor = r1 / r0;
            const double group_factor = double(c1) / double(std::max<std::uint32_t>(c0, 1));
            if (group_factor <= 1.1 * load_factor) return;
        }
    }
    t.suspect = true;
    const sample_meta& m0 = meta_[first % opt_.history];
    const sample_meta& m1 = meta_[seq % opt_.history];
    const double minutes = double(std::max<std::int64_t>(m1.steady_ns - m0.steady_ns, 1)) / 60e9;
    t.growth_per_minute = double(c1 - c0) / minutes;
    // Back through the history while the counts did not fall.
    const std::uint64_t oldest = seq + 1 > opt_.history ? seq + 1 - opt_.history : 0;
    std::uint64_t s = seq;
    const std::uint64_t known = t.zero_before ? t.first_seq - 1 : t.first_seq;
    while (s > std::max(oldest, known) && count_at(t, s - 1) <= count_at(t, s)) --s;
    // `s`: the lowest point before the run; or the oldest sample kept.
    t.growing_since_unix_ns = meta_[s % opt_.history].unix_ns;
}

GORO_DECL double leak_watch::rate(std::uint64_t seq) const noexcept {
    const sample_meta& a = meta_[(seq - 1) % opt_.history];
    const sample_meta& b = meta_[seq % opt_.history];
    return double(b.spawned - a.spawned);
}

GORO_DECL leak_group leak_watch::view(const tracked& t) const {
    leak_group g;
    g.key = t.key;
    g.site_ids = t.site_ids;
    g.frames = t.frames;
    g.labels = t.labels;
    g.wait_reason = t.wait_reason;
    g.oldest_wait_ns = t.oldest_wait_ns;
    g.suspect = t.suspect;
    g.growth_per_minute = t.growth_per_minute;
    g.growing_since_unix_ns = t.growing_since_unix_ns;
    const std::uint64_t last = seq_ - 1;
    const std::uint64_t from = seq_ > opt_.history ? seq_ - opt_.history : 0;
    for (std::uint64_t s = std::max(from, t.zero_before ? t.first_seq - 1 : t.first_seq); s <= last; ++s)
        g.history.push_back(count_at(t, s));
    g.count = g.history.empty() ? 0 : g.history.back();
    return g;
}

}  // namespace goro
#endif  // GORO_BODIES
// ---- end goro/inspect/leak_watch.hpp ----

// ---- begin goro/inspect/block_profile.hpp ----
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

#include <cstdint>
#include <string>
#include <vector>


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
// ---- end goro/inspect/block_profile.hpp ----

// ---- begin goro/http/debug_server.hpp ----
#ifndef GORO_HTTP_DEBUG_SERVER_HPP
#define GORO_HTTP_DEBUG_SERVER_HPP

// goro::debug_server: a small HTTP/1.1 server for goro's debug endpoints, in the
// spirit of Go's net/http/pprof. It serves the goroutine routes (below), and
// whatever exact paths the program registers:
//
//     goro::debug_server server;            // 127.0.0.1:6060, loopback only
//     server.handle("/healthz", [](const goro::debug_request&, goro::debug_response& r) {
//         r.body = "ok\n";
//     });
//     server.start();                        // binds, listens, starts its thread
//     ...                                    // curl http://127.0.0.1:6060/healthz
//     server.stop();                         // or let the destructor do it
//
// DEFAULT ROUTES (options.with_default_routes, on by default; see
// goro/http/routes.hpp), answering as Go's
// net/http/pprof does, so curl, `watch` and `go tool pprof URL` work unchanged:
//   /debug/pprof/                   HTML index: each profile with its count and a link
//   /debug/pprof/goroutine          pprof protobuf (application/octet-stream,
//                                   attachment "goroutine"): `go tool pprof URL`
//   /debug/pprof/goroutine?debug=1  grouped stacks, `goroutine profile: total N`
//   /debug/pprof/goroutine?debug=2  one stack per task, like a Go crash
//   /debug/goro/tasks.json          the snapshot as JSON (schema in goro/inspect/dump.hpp)
//   /metrics                        Prometheus text: tasks by state and wait
//                                   reason, tasks started, workers, queue length
//   /debug/pprof/block, /debug/pprof/mutex  the wait profile, and its lock waits
//                                   (goro/inspect/block_profile.hpp); ?debug=1: text
//   /debug/goro/, /debug/goro/group?key=K  the live page and one group's page
//                                   (goro/http/live_page.hpp)
// Each profile request takes one snapshot (goro/inspect/snapshot.hpp: the world stops
// only to begin it) on the server thread. /metrics stops nothing: it walks
// the registry's live headers, so a scrape never pauses the workers.
//
// THREADING MODEL
//   * One server thread per running server, started by start() and joined by
//     stop(). It is an ordinary std::thread, never a pool worker, so the server
//     answers even when every worker of the pool is stuck: that is when one
//     needs it most.
//   * That thread owns the listening socket and the connections, multiplexed
//     with epoll over non-blocking sockets (goro/http/server.hpp tells how):
//     read the request head, run the handler, write the response. Handlers
//     therefore run on the server thread, one at a time. Why one thread and
//     not one per connection: a client can never make the server create
//     threads, memory is bounded per connection (a small slot, the head
//     received so far, the response head; bodies are shared, not copied),
//     stop() has exactly one thread to wake and join, and serial handlers are
//     what profile handlers want anyway (two concurrent snapshots would only
//     queue behind each other). The price: a slow handler delays the others.
//   * Up to max_connections (default 1,024) at once. When all are taken, a new
//     connection evicts the oldest idle or still-incomplete one, closed
//     gracefully (FIN, then the client's bytes are drained; never a reset of a
//     response in flight): a local process holding thousands of idle or
//     trickling connections cannot lock out the next client.
//   * handle(), remove_handler(), add_profile(), add_index_link() may be called
//     from any thread, before or after start(), also from inside a handler.
//     Routes live under one mutex; a handler is looked up under it and called
//     after releasing it (and kept alive by a shared_ptr while it runs).
//   * start(), stop() and the destructor may be called from any thread except
//     the server thread itself (that is, not from inside a handler).
//   * stop() wakes the thread through a self-pipe, closes every connection
//     (responses being written are cut off) and joins. No thread and no file
//     descriptor outlives stop().
//
// HTTP
//   GET and HEAD (HEAD: same status and headers, Content-Length included, no
//   body); any other method is answered 405 with `Allow: GET, HEAD`. Keep-alive
//   (HTTP/1.1 default, HTTP/1.0 opt-in) with pipelining; `Connection: close` is
//   honoured. A request carrying a body (Content-Length > 0 or
//   Transfer-Encoding) is answered and the connection closed: no endpoint reads
//   bodies. Every response has Content-Type, Content-Length (except 204 and
//   304), `X-Content-Type-Options: nosniff` and Date. Paths are percent-decoded
//   and matched exactly, with one convenience from Go's ServeMux: if "/x" is
//   unknown but "/x/" is registered, "/x" redirects (301) to "/x/".
//
// LIMITS (debug_server_limits, all configurable)
//   request line 8 KiB (else 414), header section 16 KiB (else 431), 100 header
//   fields (else 431). read_timeout (default 5 s) bounds the WHOLE request head,
//   counted from the connection's accept (or from the previous response on a
//   keep-alive connection), so a client trickling one byte at a time cannot
//   hold a slot longer than that (Slowloris). write_timeout (default 30 s)
//   bounds the whole response, so a client that stops reading is dropped too.
//
// SECURITY
//   * Binds 127.0.0.1 by default. Any address outside 127.0.0.0/8 and ::1
//     (0.0.0.0 and :: included) is refused with std::invalid_argument unless
//     options.allow_non_loopback is set: goroutine dumps show function names,
//     task names and labels, which may be sensitive.
//   * While bound to loopback, requests whose Host is not a loopback name
//     (localhost, *.localhost, 127.x.y.z, [::1]) get 403: this defeats DNS
//     rebinding, by which a web page in the user's browser could otherwise read
//     a localhost server. Turn off with options.check_host = false (e.g.
//     behind a reverse proxy that rewrites Host).
//   * options.bearer_token: when non-empty every endpoint, 404s included,
//     requires `Authorization: Bearer <token>` (compared in constant time) and
//     otherwise answers 401 with `WWW-Authenticate: Bearer ...`.
//   * The server never touches the file system; paths are only looked up in the
//     route table, so "/../" is just an unknown path. Handler headers are
//     checked for CR/LF (no response splitting). SIGPIPE is never raised.
//   * A handler's exception becomes a 500 whose text/plain body is its what():
//     fine for a debug server, do not put secrets in exception messages.
//
// ERRORS
//   Construction validates the options (std::invalid_argument naming the
//   option). start() throws std::system_error naming the operation and the
//   address, e.g. "goro::debug_server::start: bind 127.0.0.1:6060: Address
//   already in use"; std::logic_error if already running. Nothing is dropped

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>


// ---- begin goro/http/request.hpp ----
#ifndef GORO_HTTP_REQUEST_HPP
#define GORO_HTTP_REQUEST_HPP

// The debug server's request side: the limits on a request head, the HTTP/1.x
// request-head parser and goro::debug_request, the request as a handler sees it.
//
// detail::parse_http_request() is a pure function (no sockets, no state): the
// connection loop (goro/http/server.hpp) calls it on the bytes received so far,
// and tests/fuzz/fuzz_http_request.cpp fuzzes it against its streaming contract.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>


namespace goro {

// Limits on a request head. A request over a limit is answered with the given
// status and the connection is closed.
struct debug_server_limits {
    std::size_t max_request_line = 8 * 1024;   // bytes, CRLF excluded; else 414
    std::size_t max_header_bytes = 16 * 1024;  // all field lines with their CRLFs
                                               // and the final empty line; else 431
    std::size_t max_header_count = 100;        // field lines; else 431
};

// ---------------------------------------------------------------------------
// Request and response as handlers see them
// ---------------------------------------------------------------------------

using http_fields = std::vector<std::pair<std::string, std::string>>;

namespace detail {

class debug_server_state;

inline char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

GORO_DECL bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace detail

class debug_request {
public:
    debug_request() = default;

    // The method as sent, case-sensitive ("GET", "HEAD").
    std::string_view method() const noexcept { return method_; }
    bool is_head() const noexcept { return method_ == "HEAD"; }
    // The percent-decoded path, e.g. "/debug/pprof/goroutine".
    std::string_view path() const noexcept { return path_; }
    // The request target exactly as sent, e.g. "/debug/pprof/goroutine?debug=1".
    std::string_view target() const noexcept { return target_; }
    // The raw query, without '?': "debug=1&seconds=5".
    std::string_view raw_query() const noexcept { return raw_query_; }
    // The first value of a query parameter (decoded, '+' as space), like Go's
    // url.Values.Get; nullopt when absent. "?debug" gives an empty value.
    std::optional<std::string_view> param(std::string_view name) const noexcept;
    // Every query parameter in order, repeated names included.
    const http_fields& params() const noexcept { return params_; }
    // The first header field of that name, compared case-insensitively.
    std::optional<std::string_view> header(std::string_view name) const noexcept;
    // Every header field in order, names as sent, values without surrounding blanks.
    const http_fields& headers() const noexcept { return headers_; }
    // HTTP/1.<minor>.
    int version_minor() const noexcept { return version_minor_; }
    // The client's address, e.g. "127.0.0.1:53412" or "[::1]:53412".
    std::string_view remote_address() const noexcept { return remote_; }

private:
    friend class detail::debug_server_state;
    std::string method_, path_, target_, raw_query_, remote_;
    http_fields params_, headers_;
    int version_minor_ = 1;
};

// ---------------------------------------------------------------------------
// detail: HTTP parsing (pure, no sockets)
// ---------------------------------------------------------------------------

namespace detail {

// tchar from RFC 9110 5.6.2.
GORO_DECL bool is_tchar(unsigned char c) noexcept;

GORO_DECL bool is_token(std::string_view s) noexcept;

// field-value characters: VCHAR, obs-text, SP, HTAB.
GORO_DECL bool is_field_value(std::string_view s) noexcept;

GORO_DECL int hex_value(char c) noexcept;

// Percent-decodes `in`; with plus_as_space, '+' decodes to ' ' (query strings,
// as Go's url.ParseQuery). nullopt on a malformed escape ("%", "%4", "%zz").
GORO_DECL std::optional<std::string> percent_decode(std::string_view in, bool plus_as_space);

// Splits "a=1&b=2&a" into decoded pairs; empty pieces are skipped.
// nullopt on a malformed escape.
GORO_DECL std::optional<http_fields> parse_query(std::string_view query);

enum class http_parse_status { incomplete, complete, error };

struct http_request_head {
    std::string method;
    std::string target;     // as sent
    std::string authority;  // from an absolute-form target, else empty
    std::string path;       // percent-decoded; "*" for "OPTIONS *"
    std::string raw_path;   // the path part of the target, undecoded
    std::string raw_query;  // after '?', undecoded
    http_fields query;      // decoded
    http_fields headers;    // names as sent; values with surrounding blanks removed
    int version_minor = 1;  // HTTP/1.<minor>
    bool keep_alive = true; // by version and Connection header
    bool has_body = false;  // Content-Length > 0 or Transfer-Encoding present
};

struct http_parse_result {
    http_parse_status status = http_parse_status::incomplete;
    // complete: bytes of the head, final empty line included (a body or the
    // next pipelined request starts there).
    std::size_t consumed = 0;
    // error: the status to answer (400, 414, 431, 505) and why, for the body.
    int error_status = 0;
    std::string error_reason;
    http_request_head request;  // meaningful when complete
};


GORO_DECL http_parse_result make_parse_error(int status, std::string reason);

// Splits a comma-separated header value into trimmed, non-empty elements.
template <class F>
inline void for_each_list_element(std::string_view value, F&& f) {
    while (!value.empty()) {
        std::size_t comma = value.find(',');
        std::string_view el = value.substr(0, comma);
        value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
        while (!el.empty() && (el.front() == ' ' || el.front() == '\t')) el.remove_prefix(1);
        while (!el.empty() && (el.back() == ' ' || el.back() == '\t')) el.remove_suffix(1);
        if (!el.empty()) f(el);
    }
}

// Host field value: uri-host [":" port], loosely (RFC 3986 reg-name, IPv4,
// IP-literal chars). Empty is allowed (RFC 9112 3.2).
GORO_DECL bool is_host_value(std::string_view v) noexcept;

// Whether the bytes received so far begin a HEAD request (after the empty
// lines the parser skips): an error answer to it must have no body either,
// even when the parser rejected the head.
GORO_DECL bool starts_head_request(std::string_view in) noexcept;

// Parses a request head from the start of `data`, which may hold a prefix of
// it (incomplete), a whole head followed by more bytes (complete; `consumed`
// says where the head ends), or a head that is not acceptable (error).
//
// Streaming contract, relied on by the server and checked by the fuzzer: for
// a prefix P of an input X, parse(P) is incomplete or the same result as
// parse(X) (the same error status; or complete with the same `consumed` when
// P already holds X's whole head). So an error is final as soon as it is seen,
// and limits are enforced before a head is complete: a request line longer
// than max_request_line is answered 414 after max_request_line + 2 bytes, a
// header section over max_header_bytes is answered 431 at that size.
//
// Lines end with CRLF or a bare LF (RFC 9112 2.2 allows accepting LF); a CR
// elsewhere is an error. Empty lines before the request line are skipped.
// Rejected with 400: a method that is not a token, anything but single spaces
// between the three parts, a target that is not origin-form, absolute-form
// (http/https) or "*" with OPTIONS, a target byte outside 0x21-0x7e or a '#',
// a bad percent escape or an escaped NUL in path or query, a version that is
// not HTTP/d.d, obs-fold, a field name that is not a token (so no blank before
// the colon), a control byte in a field value, an invalid or conflicting
// Content-Length, Content-Length with Transfer-Encoding, Transfer-Encoding in
// HTTP/1.0, and HTTP/1.1 without exactly one Host. HTTP/d.d with d != 1: 505.
GORO_DECL http_parse_result parse_http_request(std::string_view in, const debug_server_limits& limits);

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>

namespace goro {

GORO_DECL std::optional<std::string_view> debug_request::param(std::string_view name) const noexcept {
    for (const auto& [k, v] : params_)
        if (k == name) return std::string_view(v);
    return std::nullopt;
}

GORO_DECL std::optional<std::string_view> debug_request::header(std::string_view name) const noexcept {
    for (const auto& [k, v] : headers_)
        if (detail::iequals(k, name)) return std::string_view(v);
    return std::nullopt;
}

}  // namespace goro

namespace goro::detail {

GORO_DECL bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
}

GORO_DECL bool is_tchar(unsigned char c) noexcept {
    if (c >= '0' && c <= '9') return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

GORO_DECL bool is_token(std::string_view s) noexcept {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_tchar(static_cast<unsigned char>(c))) return false;
    return true;
}

GORO_DECL bool is_field_value(std::string_view s) noexcept {
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c == '\t') continue;
        if (c < 0x20 || c == 0x7f) return false;
    }
    return true;
}

GORO_DECL int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

GORO_DECL std::optional<std::string> percent_decode(std::string_view in, bool plus_as_space) {
    std::string out;
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= in.size()) return std::nullopt;
            int hi = hex_value(in[i + 1]);
            int lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else if (c == '+' && plus_as_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return out;
}

GORO_DECL std::optional<http_fields> parse_query(std::string_view query) {
    http_fields out;
    while (!query.empty()) {
        std::size_t amp = query.find('&');
        std::string_view piece = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (piece.empty()) continue;
        std::size_t eq = piece.find('=');
        auto key = percent_decode(piece.substr(0, eq), true);
        auto value = percent_decode(
            eq == std::string_view::npos ? std::string_view{} : piece.substr(eq + 1), true);
        if (!key || !value) return std::nullopt;
        out.emplace_back(std::move(*key), std::move(*value));
    }
    return out;
}

GORO_DECL http_parse_result make_parse_error(int status, std::string reason) {
    http_parse_result r;
    r.status = http_parse_status::error;
    r.error_status = status;
    r.error_reason = std::move(reason);
    return r;
}

GORO_DECL bool is_host_value(std::string_view v) noexcept {
    for (char ch : v) {
        auto c = static_cast<unsigned char>(ch);
        bool ok = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
                  std::string_view("-._~!$&'()*+,;=:[]%").find(static_cast<char>(c)) !=
                      std::string_view::npos;
        if (!ok) return false;
    }
    return true;
}

GORO_DECL bool starts_head_request(std::string_view in) noexcept {
    std::size_t i = 0;
    while (i < in.size() && (in[i] == '\r' || in[i] == '\n')) ++i;
    return in.substr(i, 5) == "HEAD ";
}

GORO_DECL http_parse_result parse_http_request(std::string_view in, const debug_server_limits& limits) {
    using status = http_parse_status;
    http_parse_result result;
    std::size_t pos = 0;

    // Empty lines before the request line (RFC 9112 2.2), bounded.
    for (;;) {
        if (pos > limits.max_request_line)
            return make_parse_error(400, "too many empty lines before the request line");
        if (pos < in.size() && in[pos] == '\n') { ++pos; continue; }
        if (pos + 1 < in.size() && in[pos] == '\r' && in[pos + 1] == '\n') { pos += 2; continue; }
        if (pos + 1 == in.size() && in[pos] == '\r') return result;  // incomplete
        break;
    }
    if (pos == in.size()) return result;

    // The request line. The method check comes first and looks at the same
    // window whether the line is complete or not, so that a prefix never
    // reports a different error than the whole input (see the contract).
    std::size_t nl = in.find('\n', pos);
    const bool line_complete = nl != std::string_view::npos;
    std::string_view raw_line = in.substr(pos, line_complete ? nl - pos : std::string_view::npos);
    {
        std::size_t window = std::min(raw_line.size(), limits.max_request_line + 1);
        for (std::size_t i = 0; i < window && raw_line[i] != ' '; ++i)
            if (!is_tchar(static_cast<unsigned char>(raw_line[i])))
                return make_parse_error(400, "malformed request line (method is not a token)");
    }
    if (!line_complete) {
        if (raw_line.size() > limits.max_request_line + 1)
            return make_parse_error(414, "request line longer than " +
                                             std::to_string(limits.max_request_line) + " bytes");
        return result;  // incomplete
    }
    std::string_view line = raw_line;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > limits.max_request_line)
        return make_parse_error(414, "request line longer than " +
                                         std::to_string(limits.max_request_line) + " bytes");
    if (line.find('\r') != std::string_view::npos)
        return make_parse_error(400, "bare CR in request line");

    std::size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos || sp1 == 0)
        return make_parse_error(400, "malformed request line");
    std::size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || sp2 == sp1 + 1 ||
        line.find(' ', sp2 + 1) != std::string_view::npos)
        return make_parse_error(400, "malformed request line");
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);

    // HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive.
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
        return make_parse_error(400, "malformed HTTP version");
    if (version[5] != '1')
        return make_parse_error(505, "only HTTP/1.x is supported");

    http_request_head& req = result.request;
    req.version_minor = version[7] - '0';

    for (char ch : target) {
        auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c >= 0x7f) return make_parse_error(400, "invalid byte in request target");
        if (c == '#') return make_parse_error(400, "fragment in request target");
    }
    std::string_view path_and_query;
    if (target == "*") {
        if (method != "OPTIONS") return make_parse_error(400, "'*' target is only for OPTIONS");
    } else if (!target.empty() && target.front() == '/') {
        path_and_query = target;
    } else {
        // absolute-form (RFC 9112 3.2.2): scheme "://" authority [path-abempty] ["?" query]
        std::string_view rest;
        if (target.size() > 7 && iequals(target.substr(0, 7), "http://")) rest = target.substr(7);
        else if (target.size() > 8 && iequals(target.substr(0, 8), "https://")) rest = target.substr(8);
        else return make_parse_error(400, "request target is not a path");
        std::size_t end = rest.find_first_of("/?");
        std::string_view authority = rest.substr(0, end);
        if (authority.empty() || !is_host_value(authority))
            return make_parse_error(400, "invalid authority in request target");
        req.authority = std::string(authority);
        path_and_query = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
    }
    if (target == "*") {
        req.path = "*";
        req.raw_path = "*";
    } else {
        std::size_t q = path_and_query.find('?');
        std::string_view raw_path = path_and_query.substr(0, q);
        if (q != std::string_view::npos) req.raw_query = std::string(path_and_query.substr(q + 1));
        req.raw_path = raw_path.empty() ? std::string("/") : std::string(raw_path);
        auto decoded = percent_decode(req.raw_path, false);
        if (!decoded) return make_parse_error(400, "malformed percent escape in path");
        if (decoded->find('\0') != std::string::npos) return make_parse_error(400, "NUL in path");
        req.path = std::move(*decoded);
        auto query = parse_query(req.raw_query);
        if (!query) return make_parse_error(400, "malformed percent escape in query");
        for (const auto& [k, v] : *query)
            if (k.find('\0') != std::string::npos || v.find('\0') != std::string::npos)
                return make_parse_error(400, "NUL in query");
        req.query = std::move(*query);
    }
    req.method = std::string(method);
    req.target = std::string(target);

    // Header fields.
    const std::size_t fields_start = nl + 1;
    std::size_t p = fields_start;
    std::size_t count = 0;
    for (;;) {
        std::size_t eol = in.find('\n', p);
        if (eol == std::string_view::npos) {
            if (in.size() - fields_start > limits.max_header_bytes)
                return make_parse_error(431, "header section larger than " +
                                                 std::to_string(limits.max_header_bytes) + " bytes");
            result.request = http_request_head{};
            return result;  // incomplete
        }
        if (eol + 1 - fields_start > limits.max_header_bytes)
            return make_parse_error(431, "header section larger than " +
                                             std::to_string(limits.max_header_bytes) + " bytes");
        std::string_view fl = in.substr(p, eol - p);
        p = eol + 1;
        if (!fl.empty() && fl.back() == '\r') fl.remove_suffix(1);
        if (fl.empty()) break;  // end of the head
        if (fl.front() == ' ' || fl.front() == '\t')
            return make_parse_error(400, "obsolete line folding in header section");
        if (++count > limits.max_header_count)
            return make_parse_error(431, "more than " + std::to_string(limits.max_header_count) +
                                             " header fields");
        std::size_t colon = fl.find(':');
        if (colon == std::string_view::npos) return make_parse_error(400, "header line without ':'");
        std::string_view name = fl.substr(0, colon);
        if (!is_token(name)) return make_parse_error(400, "invalid header field name");
        std::string_view value = fl.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
        while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
        if (!is_field_value(value)) return make_parse_error(400, "invalid byte in header field value");
        req.headers.emplace_back(std::string(name), std::string(value));
    }
    result.consumed = p;

    // Semantics of the fields that frame the message.
    int hosts = 0;
    bool saw_close = false, saw_keep_alive = false, saw_te = false;
    std::optional<std::uint64_t> content_length;
    for (const auto& [name, value] : req.headers) {
        if (iequals(name, "host")) {
            ++hosts;
            if (!is_host_value(value)) return make_parse_error(400, "invalid Host header");
        } else if (iequals(name, "connection")) {
            for_each_list_element(value, [&](std::string_view el) {
                if (iequals(el, "close")) saw_close = true;
                else if (iequals(el, "keep-alive")) saw_keep_alive = true;
            });
        } else if (iequals(name, "transfer-encoding")) {
            saw_te = true;
        } else if (iequals(name, "content-length")) {
            std::uint64_t n = 0;
            if (value.empty() || value.size() > 18) return make_parse_error(400, "invalid Content-Length");
            for (char c : value) {
                if (c < '0' || c > '9') return make_parse_error(400, "invalid Content-Length");
                n = n * 10 + static_cast<std::uint64_t>(c - '0');
            }
            if (content_length && *content_length != n)
                return make_parse_error(400, "conflicting Content-Length headers");
            content_length = n;
        }
    }
    if (req.version_minor >= 1 && hosts != 1)
        return make_parse_error(400, hosts == 0 ? "missing Host header" : "more than one Host header");
    if (hosts > 1) return make_parse_error(400, "more than one Host header");
    if (saw_te && content_length)
        return make_parse_error(400, "both Transfer-Encoding and Content-Length");
    if (saw_te && req.version_minor == 0)
        return make_parse_error(400, "Transfer-Encoding in an HTTP/1.0 request");
    req.has_body = saw_te || (content_length && *content_length > 0);
    req.keep_alive = req.version_minor >= 1 ? !saw_close : (saw_keep_alive && !saw_close);
    result.status = status::complete;
    return result;
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_REQUEST_HPP
// ---- end goro/http/request.hpp ----

// ---- begin goro/http/response.hpp ----
#ifndef GORO_HTTP_RESPONSE_HPP
#define GORO_HTTP_RESPONSE_HPP

// goro::debug_response, the response a handler fills in; debug_handler and
// debug_profile, what a program registers on a debug_server; and the helpers
// that check a response and write its status line and Date.

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <ostream>
#include <streambuf>
#include <string>
#include <string_view>
#include <utility>
#include <vector>


namespace goro {

namespace detail {

// A large response body, written in blocks mapped straight from the system
// (64 KiB, doubling up to 1 MiB) instead of one string. Such a string grows
// by copying (a 39 MB dump passes through buffers of 16 and 32 MB first) and,
// once freed, leaves its space with the allocator: glibc raises its mmap
// threshold to the largest freed block, so the next dump of that size comes
// from the heap and stays in the process. A block is returned to the system
// (munmap) when the body is destroyed, and only the pages written are ever
// resident. Move-only; not thread-safe (one writer, then read-only).
class body_blocks {
public:
    struct block {
        char* data;
        std::size_t capacity;
        std::size_t size;
    };

    body_blocks() = default;
    body_blocks(body_blocks&& o) noexcept : blocks_(std::move(o.blocks_)), size_(std::exchange(o.size_, 0)) {
        o.blocks_.clear();
    }
    body_blocks& operator=(body_blocks&& o) noexcept;
    body_blocks(const body_blocks&) = delete;
    body_blocks& operator=(const body_blocks&) = delete;
    ~body_blocks() { release(); }

    static constexpr std::size_t first_block = std::size_t{64} << 10;
    static constexpr std::size_t max_block = std::size_t{1} << 20;

    // Throws std::bad_alloc when the system has no memory to map.
    void append(const char* p, std::size_t n);
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    const std::vector<block>& blocks() const noexcept { return blocks_; }
    // All the bytes as one string (for tests and small bodies).
    std::string str() const;

private:
    void grow();
    void release() noexcept;

    std::vector<block> blocks_;
    std::size_t size_ = 0;
};

// The streambuf behind debug_response::stream(): appends to body_blocks.
class body_streambuf final : public std::streambuf {
public:
    body_blocks& blocks() noexcept { return blocks_; }

private:
    std::streamsize xsputn(const char* s, std::streamsize n) override {
        blocks_.append(s, static_cast<std::size_t>(n));
        return n;
    }
    GORO_DECL int_type overflow(int_type c) override;

    body_blocks blocks_;
};

// The std::ostream of debug_response::stream().
class body_stream final : public std::ostream {
public:
    body_stream();
    body_blocks& blocks() noexcept { return buf_.blocks(); }

private:
    body_streambuf buf_;
};

}  // namespace detail

struct debug_response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    // Extra header fields. The server writes Content-Type (from content_type),
    // Content-Length, Connection, Date and X-Content-Type-Options itself; a
    // handler that sets one of those here gets a 500.
    http_fields headers;
    // Any bytes, binary included.
    std::string body;

    // For a large body (a dump): what is written here is sent after `body`,
    // and is kept in blocks mapped from the system rather than in one string
    // (see detail::body_blocks): no copy while it grows, one copy however many
    // clients receive it, and its memory goes back to the system as soon as
    // the last connection sending it is done. The stream throws what the
    // mapping throws (std::bad_alloc), which makes the response a 500.
    std::ostream& stream() {
        if (!stream_) stream_ = std::make_unique<detail::body_stream>();
        return *stream_;
    }
    // Bytes written to stream() so far.
    std::size_t streamed_size() const noexcept { return stream_ ? stream_->blocks().size() : 0; }
    // Takes what was written to stream() (the server does, to send it).
    detail::body_blocks take_streamed();

    // Sets or replaces a header field (case-insensitive name); "Content-Type"
    // sets content_type. Throws std::invalid_argument for a server-managed
    // field or one HTTP cannot carry (CR, LF, NUL in it; a name not a token).
    void set_header(std::string_view name, std::string_view value);
    // Content-Disposition: attachment; filename="<filename>", like Go's pprof
    // handlers for binary profiles.
    void set_attachment(std::string_view filename);

private:
    std::unique_ptr<detail::body_stream> stream_;
};

using debug_handler = std::function<void(const debug_request&, debug_response&)>;

// One row of the /debug/pprof/ index, and its handler at /debug/pprof/<name>.
struct debug_profile {
    std::string name;         // [A-Za-z0-9_.-]+, e.g. "goroutine"
    std::string description;  // plain text, shown under the table
    // The count column; empty shows 0, as Go does for profiles without a count.
    // Called on the server thread while the index is rendered.
    std::function<std::int64_t()> count;
    // Served at /debug/pprof/<name>; may be empty when the route is registered
    // separately with handle().
    debug_handler handler;
};

namespace detail {

// ---------------------------------------------------------------------------
// detail: small helpers shared by the server and the routes
// ---------------------------------------------------------------------------

// Compares in time that depends only on the lengths, not on where the first
// difference is: for the bearer token.
GORO_DECL bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

GORO_DECL void append_html_escaped(std::string& out, std::string_view s);

// Length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF); 0 when there is none.
GORO_DECL std::size_t utf8_sequence_length(std::string_view s) noexcept;

// Appends `s` for a text/plain; charset=utf-8 body that echoes what a client
// or a handler supplied: well-formed UTF-8 and printable ASCII as they are,
// every other byte (controls but TAB and LF, DEL, bytes that do not form
// UTF-8) as the four characters \xNN, so the body is always valid UTF-8 and
// cannot carry terminal escapes.
GORO_DECL void append_utf8_escaped(std::string& out, std::string_view s);

GORO_DECL std::string utf8_escaped(std::string_view s);

GORO_DECL std::string_view http_reason_phrase(int status) noexcept;

// IMF-fixdate (RFC 9110 5.6.7), without the locale that strftime would use.
GORO_DECL std::string http_date(std::time_t t);

// Header fields the server writes itself.
GORO_DECL bool is_managed_header(std::string_view name) noexcept;

// Why a handler's response cannot be sent as is; empty when it can.
GORO_DECL std::string check_response(const debug_response& r);

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>

#include <sys/mman.h>

namespace goro::detail {

GORO_DECL body_blocks& body_blocks::operator=(body_blocks&& o) noexcept {
    if (this != &o) {
        release();
        blocks_ = std::move(o.blocks_);
        o.blocks_.clear();
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

GORO_DECL void body_blocks::append(const char* p, std::size_t n) {
    while (n > 0) {
        if (blocks_.empty() || blocks_.back().size == blocks_.back().capacity) grow();
        block& b = blocks_.back();
        const std::size_t k = std::min(n, b.capacity - b.size);
        std::memcpy(b.data + b.size, p, k);
        b.size += k;
        size_ += k;
        p += k;
        n -= k;
    }
}

GORO_DECL std::string body_blocks::str() const {
    std::string s;
    s.reserve(size_);
    for (const block& b : blocks_) s.append(b.data, b.size);
    return s;
}

GORO_DECL void body_blocks::grow() {
    const std::size_t cap = blocks_.empty() ? first_block
                                            : std::min(blocks_.back().capacity * 2, max_block);
    blocks_.reserve(blocks_.size() + 1);  // so that a mapped block is never lost
    void* m = ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    blocks_.push_back(block{static_cast<char*>(m), cap, 0});
}

GORO_DECL void body_blocks::release() noexcept {
    for (const block& b : blocks_) ::munmap(b.data, b.capacity);
    blocks_.clear();
    size_ = 0;
}

GORO_DECL body_streambuf::int_type body_streambuf::overflow(int_type c) {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    const char ch = traits_type::to_char_type(c);
    blocks_.append(&ch, 1);
    return c;
}

GORO_DECL body_stream::body_stream() : std::ostream(nullptr) {
    rdbuf(&buf_);
    // A failed mapping reaches the server as std::bad_alloc (a 500), not
    // as a silently truncated body.
    exceptions(std::ios::badbit);
}

GORO_DECL bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
    // Volatile keeps the compiler from turning the loop into an early exit.
    volatile unsigned char diff = static_cast<unsigned char>(a.size() != b.size());
    for (std::size_t i = 0; i < b.size(); ++i) {
        unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        diff = static_cast<unsigned char>(diff | (x ^ static_cast<unsigned char>(b[i])));
    }
    return diff == 0;
}

GORO_DECL void append_html_escaped(std::string& out, std::string_view s) {
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out.push_back(c);
        }
    }
}

GORO_DECL std::size_t utf8_sequence_length(std::string_view s) noexcept {
    if (s.empty()) return 0;
    auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const unsigned char c = b(0);
    auto cont = [&](std::size_t i, unsigned char lo = 0x80, unsigned char hi = 0xbf) {
        return i < s.size() && b(i) >= lo && b(i) <= hi;
    };
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
    if (c == 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
    if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
    if (c == 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
    return 0;
}

GORO_DECL void append_utf8_escaped(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    while (!s.empty()) {
        const auto c = static_cast<unsigned char>(s[0]);
        std::size_t n = utf8_sequence_length(s);
        if (n == 1 && (c >= 0x20 || c == '\t' || c == '\n') && c != 0x7f) {
            out.push_back(s[0]);
        } else if (n > 1) {
            out.append(s.substr(0, n));
        } else {
            n = 1;
            out += "\\x";
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
        s.remove_prefix(n);
    }
}

GORO_DECL std::string utf8_escaped(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    append_utf8_escaped(out, s);
    return out;
}

GORO_DECL std::string_view http_reason_phrase(int status) noexcept {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

GORO_DECL std::string http_date(std::time_t t) {
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    if (::gmtime_r(&t, &tm) == nullptr) return "Thu, 01 Jan 1970 00:00:00 GMT";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                  tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    return buf;
}

GORO_DECL bool is_managed_header(std::string_view name) noexcept {
    return iequals(name, "content-length") || iequals(name, "content-type") ||
           iequals(name, "transfer-encoding") || iequals(name, "connection") ||
           iequals(name, "date") || iequals(name, "x-content-type-options") ||
           iequals(name, "keep-alive");
}

GORO_DECL std::string check_response(const debug_response& r) {
    if (r.status < 200 || r.status > 599)
        return "handler set status " + std::to_string(r.status) + " (must be 200-599)";
    if ((r.status == 204 || r.status == 304) && (!r.body.empty() || r.streamed_size() != 0))
        return "handler set a body on a " + std::to_string(r.status) + " response";
    if (r.content_type.empty()) return "handler cleared content_type";
    if (!is_field_value(r.content_type)) return "invalid byte in content_type";
    for (const auto& [name, value] : r.headers) {
        if (!is_token(name)) return "invalid header name '" + name + "'";
        if (is_managed_header(name)) return "handler set server-managed header '" + name + "'";
        if (!is_field_value(value)) return "invalid byte in value of header '" + name + "'";
    }
    return {};
}

}  // namespace goro::detail

namespace goro {

GORO_DECL detail::body_blocks debug_response::take_streamed() {
    detail::body_blocks b;
    if (stream_) {
        stream_->flush();
        b = std::move(stream_->blocks());
        stream_.reset();
    }
    return b;
}

GORO_DECL void debug_response::set_header(std::string_view name, std::string_view value) {
    if (!detail::is_token(name))
        throw std::invalid_argument("goro::debug_response::set_header: invalid name '" +
                                    std::string(name) + "'");
    if (!detail::is_field_value(value))
        throw std::invalid_argument("goro::debug_response::set_header: invalid byte in value of '" +
                                    std::string(name) + "'");
    if (detail::iequals(name, "content-type")) {
        content_type = std::string(value);
        return;
    }
    if (detail::is_managed_header(name))
        throw std::invalid_argument("goro::debug_response::set_header: '" + std::string(name) +
                                    "' is written by the server");
    for (auto& [k, v] : headers) {
        if (detail::iequals(k, name)) {
            v = std::string(value);
            return;
        }
    }
    headers.emplace_back(std::string(name), std::string(value));
}

GORO_DECL void debug_response::set_attachment(std::string_view filename) {
    std::string v = "attachment; filename=\"";
    for (char c : filename) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) throw std::invalid_argument(
            "goro::debug_response::set_attachment: control byte in filename");
        if (c == '"' || c == '\\') v.push_back('\\');
        v.push_back(c);
    }
    v.push_back('"');
    set_header("Content-Disposition", v);
}

}  // namespace goro

#endif  // GORO_BODIES

#endif  // GORO_HTTP_RESPONSE_HPP
// ---- end goro/http/response.hpp ----

// ---- begin goro/http/server.hpp ----
#ifndef GORO_HTTP_SERVER_HPP
#define GORO_HTTP_SERVER_HPP

// The debug server's options and its connection loop: detail::debug_server_state
// owns the listening socket, the connections and the route table, and runs on
// its own thread. goro::debug_server (goro/http/debug_server.hpp) is the handle
// a program holds; see there for the behaviour as a whole.
//
// Only the options and the counters are declarations: detail::debug_server_state
// and its loop are in the bodies section (GORO_BODIES, goro/core/linkage.hpp),
// since goro::debug_server holds the state by pointer and nothing else uses it.
//
// THE CONNECTION LOOP (Linux epoll, level-triggered, on the server thread only)
//   * One ordinary std::thread, never a pool worker: the server answers while
//     every worker of the pool is wedged, which is when one needs it.
//   * Up to options.max_connections (default 1,024) connections are served at
//     once. Each is a slot of about 200 bytes (struct connection below) in a
//     table that grows to at most max_connections + max(max_connections,
//     1,024) slots (serving and lingering), plus while it is active: the request head received so far
//     (at most ~2 x max_request_line + max_header_bytes, released when the
//     head is consumed) and the response head being written (~200 bytes). A
//     response body is never copied per connection: it is held once, by a
//     shared pointer, and identical requests to a route registered with
//     share_response within shared_response_window share one body, as long
//     as no task was started, finished or resumed in between (world_stamp)
//     or another connection is still being sent that body (a burst of
//     requests shares one dump however busy the program is). A dump route
//     writes its body to debug_response::stream(): blocks mapped from the
//     system, never grown by copying, unmapped when the last sender is done;
//     after a large body is produced the allocator's free pages are returned
//     (malloc_trim), so the scratch of a dump does not stay resident either.
//     Measured with 100k parked tasks (a 37 MiB tasks.json), 16 clients that
//     never read raise RSS by about 1.25x one body (1.97x with one growing
//     string per body and no trimming), and after they leave RSS is back
//     within about a quarter of one body (0.72x before): glibc keeps some of
//     the snapshot's scratch at the top of the server thread's arena.
//   * When every slot is taken, a new connection evicts the oldest connection
//     that is reading: an idle keep-alive connection (preferred among the
//     oldest 16: its client expects such a close and retries) or one whose head
//     is still incomplete (slowloris) or not begun. A connection writing a response is never evicted:
//     its response finishes first (or its write deadline ends it). When all
//     connections are writing, new ones wait in the kernel's listen backlog.
//   * An evicted or finished connection is closed gracefully: the write side is
//     shut down (FIN) and what the client still sends is read and discarded
//     until it closes too or a short linger deadline passes, so closing never
//     resets (RST) a connection whose response the client has not read yet.
//   * Deadlines: read_timeout bounds a whole request head from accept (or from
//     the previous response), so a client trickling bytes (slowloris) holds a
//     slot no longer than that; write_timeout bounds a whole response, so a
//     client that stops reading is dropped and releases the body it pinned.
//     Each phase has one timeout, so its connections sit in a FIFO list in
//     deadline order: expiring and evicting cost O(1) per connection.
//   * Handlers run on this thread, one at a time (a slow handler delays the
//     others; handlers should be quick).
//
// Connection life cycle:
//
//    accept --> reading --(head complete)--> handler --> writing --+--> reading (keep-alive)
//                 |  (parse error / timeout: error response) ------^    |
//                 |                                                     +--> lingering --> closed
//                 +--(EOF, error, stop: closed; evicted, idle timeout: lingering)
//
// Lock order: lifecycle_mutex_ (start/stop) is never held while taking
// routes_mutex_ from the server thread; routes_mutex_ is a leaf and is never
// held while calling user code (handlers, count callbacks).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>


namespace goro {

struct debug_server_options {
    // An IPv4 or IPv6 literal ("127.0.0.1", "::1", "[::1]") or "localhost"
    // (meaning 127.0.0.1). Host names are not resolved. An IPv4-mapped IPv6
    // literal ("::ffff:127.0.0.1") is bound as the IPv4 address it maps.
    std::string address = "127.0.0.1";
    // 0 picks a free port; debug_server::port() tells which.
    std::uint16_t port = 6060;
    // Required to bind anything outside 127.0.0.0/8 and ::1.
    bool allow_non_loopback = false;
    // Non-empty: every request needs "Authorization: Bearer <token>".
    // Must be a non-empty run of visible ASCII without spaces (RFC 6750 b64token).
    std::string bearer_token;
    // While bound to loopback, reject requests whose Host is not a loopback
    // name (DNS rebinding protection). Ignored when bound elsewhere.
    bool check_host = true;
    // Deadline for a whole request head (and for an idle keep-alive connection).
    std::chrono::milliseconds read_timeout{5000};
    // Deadline for writing a whole response.
    std::chrono::milliseconds write_timeout{30000};
    // Connections served at once (1 to 1,048,576). When all are taken, a new
    // one evicts the oldest idle or incomplete one (see server.hpp). Each
    // needs a file descriptor, twice while it lingers: mind RLIMIT_NOFILE.
    std::size_t max_connections = 1024;
    // After this many requests a keep-alive connection is closed.
    std::size_t max_requests_per_connection = 1000;
    // Identical requests (same path and query) to a route registered with
    // share_response, arriving within this time after the body was produced,
    // get that body instead of a new one, provided no task was started,
    // finished or resumed since, or another connection is still being sent
    // it: N clients of a large dump cost one dump's memory and one dump's
    // time, a client that asks again after reading its answer sees a fresh
    // picture unless nothing moved, and concurrent clients of a busy program
    // share the dump being sent (at most this old). The body is held that
    // long. 0 turns sharing off.
    std::chrono::milliseconds shared_response_window{1000};
    debug_server_limits limits{};
    // The goroutine routes (/debug/pprof/goroutine, /debug/goro/tasks.json,
    // /metrics, and the goroutine row of /debug/pprof/): the constructor calls
    // goro::register_default_routes(). False: only /debug/pprof/ and what the
    // program registers itself.
    bool with_default_routes = true;
    // The leak watch (goro/inspect/leak_watch.hpp) that start() starts and
    // stop() stops, served at /debug/goro/leaks and in /metrics (with the
    // default routes): a sample of the grouped profile every this long. 0: none.
    std::chrono::milliseconds leak_watch_interval{10000};
};

// Counters, read with relaxed loads: each is exact, the set is not a snapshot.
struct debug_server_stats {
    std::uint64_t connections_accepted = 0;
    std::uint64_t connections_evicted = 0;   // reading (idle or incomplete) closed to make room
    std::uint64_t connections_open = 0;      // now: reading or writing (lingering not counted)
    std::uint64_t requests = 0;              // complete, parsed request heads
    std::uint64_t bad_requests = 0;          // heads rejected by the parser (4xx/505)
    std::uint64_t timeouts = 0;              // read or write deadline expired
    std::uint64_t handler_errors = 0;        // handler threw or returned an invalid response
    std::uint64_t responses_shared = 0;      // bodies reused instead of produced again
    std::uint64_t response_bytes_held = 0;   // now: bytes of bodies held (a shared one once)
};

// How a route is served (debug_server::handle's third argument).
struct debug_route_options {
    // The response depends only on the path and the query, never on headers
    // or on the client: identical requests may share one response body (see
    // debug_server_options::shared_response_window). For large dumps.
    bool share_response = false;
};

}  // namespace goro

#if GORO_BODIES

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>  // malloc_trim
#endif


// ---- begin goro/http/address.hpp ----
#ifndef GORO_HTTP_ADDRESS_HPP
#define GORO_HTTP_ADDRESS_HPP

// The debug server's socket helpers: parsing a bind address (and whether it is
// loopback), formatting a peer's endpoint, checking that a Host names this
// machine, and small file-descriptor utilities.

#include <optional>
#include <string>
#include <string_view>

#include <sys/socket.h>
#include <sys/types.h>


namespace goro {

namespace detail {

// A parsed bind address.
struct socket_address {
    sockaddr_storage storage{};
    socklen_t length = 0;
    int family = AF_UNSPEC;
    bool loopback = false;
    std::string text;  // "127.0.0.1" or "::1", without brackets
};

// Accepts IPv4 and IPv6 literals ("[::1]" too) and "localhost" (127.0.0.1).
GORO_DECL std::optional<socket_address> parse_bind_address(std::string_view address);

GORO_DECL std::string format_endpoint(const sockaddr* sa);

// Is the Host value (host[:port]) a name that can only mean this machine?
GORO_DECL bool is_loopback_host(std::string_view host);

GORO_DECL void set_cloexec_nonblock(int fd) noexcept;

GORO_DECL void close_fd(int& fd) noexcept;

#ifdef MSG_NOSIGNAL
inline constexpr int send_flags = MSG_NOSIGNAL;
#else
inline constexpr int send_flags = 0;  // SO_NOSIGPIPE is set on the socket instead
#endif

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <cstring>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

namespace goro::detail {

GORO_DECL std::optional<socket_address> parse_bind_address(std::string_view address) {
    std::string text(address);
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
    if (iequals(text, "localhost")) text = "127.0.0.1";
    socket_address a;
    in_addr v4{};
    in6_addr v6{};
    if (text.find('\0') != std::string::npos) return std::nullopt;
    if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr = v4;
        std::memcpy(&a.storage, &sin, sizeof sin);
        a.length = sizeof sin;
        a.family = AF_INET;
        a.loopback = (ntohl(v4.s_addr) >> 24) == 127;
    } else if (::inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr = v6;
        std::memcpy(&a.storage, &sin6, sizeof sin6);
        a.length = sizeof sin6;
        a.family = AF_INET6;
        const unsigned char* b = v6.s6_addr;
        static constexpr unsigned char loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        static constexpr unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (std::memcmp(b, mapped, 12) == 0) {
            // An IPv4-mapped address (::ffff:a.b.c.d) names an IPv4 endpoint,
            // which an IPv6-only socket cannot bind: it is bound as that IPv4
            // address, and url() shows the IPv4 form.
            in_addr v4m{};
            std::memcpy(&v4m.s_addr, b + 12, 4);
            char buf[INET_ADDRSTRLEN] = {};
            ::inet_ntop(AF_INET, &v4m, buf, sizeof buf);
            return parse_bind_address(buf);
        }
        a.loopback = std::memcmp(b, loop6, 16) == 0;
    } else {
        return std::nullopt;
    }
    a.text = text;
    return a;
}

GORO_DECL std::string format_endpoint(const sockaddr* sa) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (sa->sa_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, sa, sizeof sin);
        ::inet_ntop(AF_INET, &sin.sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(sin.sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, sa, sizeof sin6);
        ::inet_ntop(AF_INET6, &sin6.sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(sin6.sin6_port));
    }
    return "?";
}

GORO_DECL bool is_loopback_host(std::string_view host) {
    if (host.empty()) return false;
    std::string_view name;
    if (host.front() == '[') {
        std::size_t close = host.find(']');
        if (close == std::string_view::npos) return false;
        name = host.substr(1, close - 1);
        std::string_view rest = host.substr(close + 1);
        if (!rest.empty() && rest.front() != ':') return false;
        auto a = parse_bind_address(name);
        return a && a->loopback;  // [::1], or [::ffff:127.x.y.z]
    }
    std::size_t colon = host.find(':');
    name = host.substr(0, colon);
    if (colon != std::string_view::npos && host.find(':', colon + 1) != std::string_view::npos) return false;
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);  // "localhost."
    if (iequals(name, "localhost")) return true;
    if (name.size() > 10 && iequals(name.substr(name.size() - 10), ".localhost")) return true;
    std::string n(name);
    in_addr v4{};
    return ::inet_pton(AF_INET, n.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

GORO_DECL void set_cloexec_nonblock(int fd) noexcept {
    int fdf = ::fcntl(fd, F_GETFD);
    if (fdf >= 0) ::fcntl(fd, F_SETFD, fdf | FD_CLOEXEC);
    int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

GORO_DECL void close_fd(int& fd) noexcept {
    if (fd >= 0) {
        ::close(fd);  // Not retried on EINTR: on Linux the fd is gone either way.
        fd = -1;
    }
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_ADDRESS_HPP
// ---- end goro/http/address.hpp ----

namespace goro::detail {

class debug_server_state {
public:
    explicit debug_server_state(debug_server_options opts, socket_address addr)
        : opts_(std::move(opts)), addr_(std::move(addr)) {}

    debug_server_state(const debug_server_state&) = delete;
    debug_server_state& operator=(const debug_server_state&) = delete;

    ~debug_server_state() { stop(); }

    const debug_server_options& options() const noexcept { return opts_; }
    const socket_address& address() const noexcept { return addr_; }
    std::uint16_t port() const noexcept { return port_.load(std::memory_order_acquire); }
    bool running() const noexcept { return running_.load(std::memory_order_acquire); }

    debug_server_stats stats() const noexcept {
        debug_server_stats s;
        s.connections_accepted = connections_accepted_.load(std::memory_order_relaxed);
        s.connections_evicted = connections_evicted_.load(std::memory_order_relaxed);
        s.connections_open = connections_open_.load(std::memory_order_relaxed);
        s.requests = requests_.load(std::memory_order_relaxed);
        s.bad_requests = bad_requests_.load(std::memory_order_relaxed);
        s.timeouts = timeouts_.load(std::memory_order_relaxed);
        s.handler_errors = handler_errors_.load(std::memory_order_relaxed);
        s.responses_shared = responses_shared_.load(std::memory_order_relaxed);
        s.response_bytes_held = response_bytes_held_.load(std::memory_order_relaxed);
        return s;
    }

    void start();
    void stop();

    void handle(std::string path, debug_handler handler, debug_route_options ro = {}) {
        if (path.empty() || path.front() != '/')
            throw std::invalid_argument("goro::debug_server::handle: path must start with '/': '" +
                                        path + "'");
        if (!handler) throw std::invalid_argument("goro::debug_server::handle: empty handler for " + path);
        route r{std::make_shared<const debug_handler>(std::move(handler)), ro.share_response};
        std::lock_guard lock(routes_mutex_);
        routes_[std::move(path)] = std::move(r);
    }
    bool remove_handler(std::string_view path) {
        std::lock_guard lock(routes_mutex_);
        auto it = routes_.find(std::string(path));
        if (it == routes_.end()) return false;
        routes_.erase(it);
        return true;
    }

    void add_profile(debug_profile profile) {
        const std::string& n = profile.name;
        bool ok = !n.empty();
        for (char c : n)
            ok = ok && (c == '_' || c == '-' || c == '.' || (c >= '0' && c <= '9') ||
                        ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'));
        if (!ok)
            throw std::invalid_argument("goro::debug_server::add_profile: invalid profile name '" + n +
                                        "' (want [A-Za-z0-9_.-]+)");
        if (profile.handler) handle("/debug/pprof/" + n, profile.handler);
        auto entry = std::make_shared<const profile_entry>(
            profile_entry{profile.name, profile.description, std::move(profile.count)});
        std::lock_guard lock(routes_mutex_);
        auto it = std::find_if(profiles_.begin(), profiles_.end(),
                               [&](const auto& e) { return e->name == entry->name; });
        if (it != profiles_.end()) *it = std::move(entry);
        else profiles_.push_back(std::move(entry));
        std::sort(profiles_.begin(), profiles_.end(),
                  [](const auto& a, const auto& b) { return a->name < b->name; });
    }

    void add_index_link(std::string href, std::string text) {
        std::lock_guard lock(routes_mutex_);
        for (auto& [h, t] : index_links_)
            if (h == href) {
                t = std::move(text);
                return;
            }
        index_links_.emplace_back(std::move(href), std::move(text));
    }

    // The /debug/pprof/ page.
    std::string render_index();

private:
    using clock = std::chrono::steady_clock;

    struct profile_entry {
        std::string name;
        std::string description;
        std::function<std::int64_t()> count;
    };

    struct route {
        std::shared_ptr<const debug_handler> handler;
        bool share = false;
    };

    // A response body as sent: `bytes` (a handler's debug_response::body),
    // then `blocks` (what it wrote to debug_response::stream(), mapped from
    // the system). Produced once; every connection sending it holds a shared
    // pointer, so N clients of one dump hold one copy. Its size is counted in
    // response_bytes_held_ while it lives.
    struct response_body {
        std::string bytes;
        body_blocks blocks;
        std::atomic<std::uint64_t>* held;
        response_body(std::string b, body_blocks bl, std::atomic<std::uint64_t>* h)
            : bytes(std::move(b)), blocks(std::move(bl)), held(h) {
            held->fetch_add(size(), std::memory_order_relaxed);
        }
        // The memory goes first, the count after: whoever sees
        // response_bytes_held fall sees the memory released already.
        ~response_body() {
            const std::size_t n = size();
            const bool large_string = bytes.size() >= large_body;
            blocks = body_blocks{};  // unmapped
            std::string().swap(bytes);
            // A large string body, once its last sender lets go, is handed
            // back to the system: glibc keeps freed blocks of a thread's
            // arena otherwise, and a process that served a big dump would
            // stay that big.
            if (large_string) trim_heap();
            held->fetch_sub(n, std::memory_order_relaxed);
        }
        response_body(const response_body&) = delete;
        response_body& operator=(const response_body&) = delete;
        std::size_t size() const noexcept { return bytes.size() + blocks.size(); }
    };
    using body_ptr = std::shared_ptr<const response_body>;

    // A response of a share_response route, reused for identical requests
    // until `made + shared_response_window`. The entry holds the body for that
    // long (so back-to-back requests share it too); after that only the
    // connections still sending it do, and the entry is dropped.
    struct shared_entry {
        body_ptr hold;
        int status = 200;
        std::string content_type;
        http_fields headers;
        std::weak_ptr<const response_body> body;
        std::size_t length = 0;
        clock::time_point made{};
        std::uint64_t stamp = 0;  // world_stamp() when made
    };

    // What a task dump depends on, as counters read without stopping anyone:
    // tasks started, tasks alive, and resumes on every worker. A shared body
    // is reused only while the stamp is unchanged, so a request that follows
    // a change (a request served, a task woken) gets a fresh body, never an
    // older picture; a dump of a quiet program is made once for all clients.
    static std::uint64_t world_stamp() noexcept {
        registry& reg = the_registry();
        std::uint64_t s = reg.total_added() * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(reg.count());
        if (pool_started()) {
            scheduler& sch = the_scheduler();
            if (!sch.stopping())
                for (auto& w : sch.workers()) s = s * 31 + w->resumes.load(std::memory_order_relaxed);
        }
        return s;
    }

    enum class phase : std::uint8_t { free, reading, writing, lingering };
    static constexpr std::uint32_t none = 0xffffffffu;

    // One connection slot; about 200 bytes while idle (the strings are empty,
    // their buffers released between requests).
    struct connection {
        int fd = -1;
        phase state = phase::free;
        bool need_parse = false;    // new bytes worth a parse arrived
        bool peer_eof = false;      // the client shut its write side
        bool close_after = false;   // linger after the response being written
        std::uint32_t index = 0;    // in conns_
        std::uint32_t gen = 0;      // bumped on each reuse; epoll events carry it
        std::uint32_t events = 0;   // epoll interest registered now
        std::uint32_t prev = none, next = none;  // in the list of its phase
        std::uint32_t requests = 0;
        std::size_t out_sent = 0;
        std::size_t drained = 0;
        clock::time_point deadline{};
        std::string in;             // received, not yet consumed
        std::string out_head;       // status line and header fields being written
        body_ptr out_body;          // null: no body
        std::string peer;
    };

    static_assert(sizeof(connection) <= 256, "the per-connection cost stated above");

    // Connections of one phase in the order they entered it, which is
    // deadline order since each phase has one timeout.
    struct conn_list {
        std::uint32_t head = none, tail = none;
        std::size_t size = 0;
    };

    static constexpr std::uint64_t wake_tag = ~std::uint64_t{0};
    static constexpr std::uint64_t listen_tag = ~std::uint64_t{0} - 1;

    // Head bytes beyond which the parser must have answered (see parse_http_request).
    std::size_t head_cap() const noexcept {
        const auto& l = opts_.limits;
        return 2 * (l.max_request_line + 2) + l.max_header_bytes + 1;
    }
    std::chrono::milliseconds linger_time() const noexcept {
        return std::min<std::chrono::milliseconds>(opts_.read_timeout, std::chrono::seconds(2));
    }
    std::size_t active() const noexcept { return reading_.size + writing_.size; }
    // Lingering connections hold a slot and a descriptor, no buffers; under
    // a burst of evictions they must outlast the clients' reaction time.
    std::size_t max_lingering() const noexcept {
        return std::max<std::size_t>(opts_.max_connections, 1024);
    }
    conn_list* list_of(phase p) noexcept {
        switch (p) {
        case phase::reading: return &reading_;
        case phase::writing: return &writing_;
        case phase::lingering: return &lingering_;
        case phase::free: break;
        }
        return nullptr;
    }

    void run() noexcept;
    void refuse_on_server_thread(const char* op) const;
    void set_phase(connection& c, phase p, clock::time_point deadline) noexcept;
    void settle(connection& c) noexcept;
    void set_listening(bool on) noexcept;
    void expire(clock::time_point now);
    // Drops shared responses older than the window; returns the next expiry.
    clock::time_point prune_shared(clock::time_point now) noexcept;
    void accept_new(clock::time_point now);
    void on_event(connection& c, std::uint32_t events);
    void read_some(connection& c);
    void process(connection& c);
    void respond(connection& c, const http_request_head& head);
    void respond_error(connection& c, int status, std::string_view reason, bool head_only);
    void start_write(connection& c, int status, std::string_view content_type,
                     const http_fields& headers, body_ptr body, std::size_t length, bool head_only,
                     std::string_view connection_header);
    // Null for an empty body.
    body_ptr make_body(std::string&& bytes, body_blocks&& blocks = {}) {
        if (bytes.empty() && blocks.empty()) return nullptr;
        return std::make_shared<const response_body>(std::move(bytes), std::move(blocks),
                                                     &response_bytes_held_);
    }
    static constexpr std::size_t large_body = std::size_t{1} << 20;
    // Returns the free pages of the allocator's arenas to the system (glibc
    // only; elsewhere nothing). Called after a large body was produced (the
    // snapshot and the scratch a dump needs are free by then) and when a
    // large string body is freed: without it, each thread's arena keeps them.
    static void trim_heap() noexcept {
#if defined(__GLIBC__)
        ::malloc_trim(0);
#endif
    }
    // True while a connection other than the caller (holding `body` too) and
    // the shared_ entry (`entry_holds`) is still sending it. The server
    // thread owns every copy, so the count is exact.
    static bool in_flight(const body_ptr& body, bool entry_holds) noexcept {
        return body.use_count() > 1 + (entry_holds ? 1 : 0);
    }
    void write_some(connection& c);
    void finish_response(connection& c);
    void linger(connection& c);
    void drain(connection& c);
    void close_connection(connection& c) noexcept;
    bool host_allowed(const http_request_head& head) const;
    // False means 401, with the WWW-Authenticate value in `challenge`.
    bool authorized(const http_request_head& head, std::string& challenge) const;

    debug_server_options opts_;
    socket_address addr_;

    std::mutex lifecycle_mutex_;  // start/stop
    std::thread thread_;
    std::atomic<std::thread::id> server_thread_{};
    std::atomic<bool> running_{false};
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint16_t> port_{0};
    int listen_fd_ = -1;
    int epoll_fd_ = -1;
    int wake_read_ = -1;
    int wake_write_ = -1;

    // Owned by the server thread while running (and by start/stop otherwise).
    // A deque: slots never move, so a connection& stays valid while it grows.
    std::deque<connection> conns_;
    std::vector<std::uint32_t> free_slots_;
    conn_list reading_, writing_, lingering_;
    bool listening_ = false;               // listen_fd_ registered for EPOLLIN
    clock::time_point accept_paused_until_{};
    std::unordered_map<std::string, shared_entry> shared_;

    mutable std::mutex routes_mutex_;
    std::unordered_map<std::string, route> routes_;
    std::vector<std::shared_ptr<const profile_entry>> profiles_;
    std::vector<std::pair<std::string, std::string>> index_links_;

    std::atomic<std::uint64_t> connections_accepted_{0}, connections_evicted_{0},
        connections_open_{0}, requests_{0}, bad_requests_{0}, timeouts_{0}, handler_errors_{0},
        responses_shared_{0}, response_bytes_held_{0};
};

GORO_DECL void debug_server_state::start() {
    refuse_on_server_thread("start");
    std::lock_guard lock(lifecycle_mutex_);
    if (running_.load(std::memory_order_relaxed))
        throw std::logic_error("goro::debug_server::start: already running");
    const std::string where = addr_.family == AF_INET6
                                  ? "[" + addr_.text + "]:" + std::to_string(opts_.port)
                                  : addr_.text + ":" + std::to_string(opts_.port);
    auto fail = [&](int err, const std::string& what) {
        close_fd(listen_fd_);
        close_fd(epoll_fd_);
        close_fd(wake_read_);
        close_fd(wake_write_);
        throw std::system_error(err, std::generic_category(), "goro::debug_server::start: " + what);
    };

    conns_.clear();
    free_slots_.clear();
    shared_.clear();
    reading_ = writing_ = lingering_ = conn_list{};
    free_slots_.reserve(64);  // grows with conns_, see accept_new
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) fail(errno, "pipe");
    wake_read_ = pipe_fds[0];
    wake_write_ = pipe_fds[1];
    set_cloexec_nonblock(wake_read_);
    set_cloexec_nonblock(wake_write_);
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) fail(errno, "epoll_create1");
    epoll_event wev{};
    wev.events = EPOLLIN;
    wev.data.u64 = wake_tag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_read_, &wev) != 0) fail(errno, "epoll_ctl");

    listen_fd_ = ::socket(addr_.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd_ < 0) fail(errno, "socket for " + where);
    int one = 1;
    // Lets a restarted server rebind while old connections sit in TIME_WAIT.
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr_.family == AF_INET6) ::setsockopt(listen_fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);

    sockaddr_storage sa = addr_.storage;
    if (addr_.family == AF_INET) reinterpret_cast<sockaddr_in*>(&sa)->sin_port = htons(opts_.port);
    else reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port = htons(opts_.port);
    if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&sa), addr_.length) != 0)
        fail(errno, "bind " + where);
    // A long backlog: a burst of connections waits there while the loop
    // accepts (and evicts) in batches.
    if (::listen(listen_fd_, SOMAXCONN) != 0) fail(errno, "listen " + where);

    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len) != 0)
        fail(errno, "getsockname " + where);
    std::uint16_t p = bound.ss_family == AF_INET
                          ? ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port)
                          : ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
    epoll_event lev{};
    lev.events = EPOLLIN;
    lev.data.u64 = listen_tag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &lev) != 0) fail(errno, "epoll_ctl");
    listening_ = true;
    accept_paused_until_ = clock::time_point{};

    stopping_.store(false, std::memory_order_relaxed);
    try {
        thread_ = std::thread([this] { run(); });
    } catch (const std::system_error& e) {
        fail(e.code().value(), "thread");
    }
    port_.store(p, std::memory_order_release);
    running_.store(true, std::memory_order_release);
}

GORO_DECL void debug_server_state::refuse_on_server_thread(const char* op) const {
    // Checked before taking lifecycle_mutex_: a stop() on another thread may
    // hold it while joining this very thread.
    if (server_thread_.load(std::memory_order_acquire) == std::this_thread::get_id())
        throw std::logic_error(std::string("goro::debug_server::") + op +
                               ": called from the server's own thread (inside a handler); "
                               "it would wait for itself");
}

GORO_DECL void debug_server_state::stop() {
    refuse_on_server_thread("stop");
    std::lock_guard lock(lifecycle_mutex_);
    if (!thread_.joinable()) return;
    stopping_.store(true, std::memory_order_release);
    char byte = 1;
    // The pipe is non-blocking; if it is full the thread is already being woken.
    [[maybe_unused]] auto n = ::write(wake_write_, &byte, 1);
    thread_.join();
    server_thread_.store(std::thread::id{}, std::memory_order_release);
    // The thread closed its connections on the way out.
    close_fd(listen_fd_);
    close_fd(epoll_fd_);
    close_fd(wake_read_);
    close_fd(wake_write_);
    conns_.clear();
    free_slots_.clear();
    shared_.clear();
    reading_ = writing_ = lingering_ = conn_list{};
    running_.store(false, std::memory_order_release);
}

// Moves `c` to the end of phase p's list (deadline order) with that deadline.
GORO_DECL void debug_server_state::set_phase(connection& c, phase p, clock::time_point deadline) noexcept {
    const bool was_active = c.state == phase::reading || c.state == phase::writing;
    if (conn_list* from = list_of(c.state)) {
        if (c.prev != none) conns_[c.prev].next = c.next;
        else from->head = c.next;
        if (c.next != none) conns_[c.next].prev = c.prev;
        else from->tail = c.prev;
        --from->size;
    }
    c.prev = c.next = none;
    c.state = p;
    c.deadline = deadline;
    if (conn_list* to = list_of(p)) {
        c.prev = to->tail;
        if (to->tail != none) conns_[to->tail].next = c.index;
        else to->head = c.index;
        to->tail = c.index;
        ++to->size;
    }
    const bool is_active = p == phase::reading || p == phase::writing;
    if (was_active != is_active) {
        if (is_active) connections_open_.fetch_add(1, std::memory_order_relaxed);
        else connections_open_.fetch_sub(1, std::memory_order_relaxed);
    }
}

// Registers the epoll interest the connection's phase needs, if it changed:
// done once after each event rather than at every phase change, since a
// request usually goes reading -> writing -> reading within one event.
GORO_DECL void debug_server_state::settle(connection& c) noexcept {
    if (c.state == phase::free) return;
    const std::uint32_t want = c.state == phase::writing ? std::uint32_t{EPOLLOUT} : std::uint32_t{EPOLLIN};
    if (want == c.events) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = (std::uint64_t{c.gen} << 32) | c.index;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev) == 0) c.events = want;
    else close_connection(c);
}

GORO_DECL void debug_server_state::set_listening(bool on) noexcept {
    if (on == listening_) return;
    epoll_event ev{};
    ev.events = on ? std::uint32_t{EPOLLIN} : std::uint32_t{0};
    ev.data.u64 = listen_tag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev) == 0) listening_ = on;
}

GORO_DECL void debug_server_state::run() noexcept {
    server_thread_.store(std::this_thread::get_id(), std::memory_order_release);
    epoll_event evs[256];
    for (;;) {
        if (stopping_.load(std::memory_order_acquire)) break;
        auto now = clock::now();
        try {
            expire(now);
        } catch (...) {
        }
        // Listen again once a slot can be had: a free one, or a reading one to evict.
        const bool room = active() < opts_.max_connections || reading_.size > 0;
        if (!listening_ && room && now >= accept_paused_until_) set_listening(true);

        auto next_deadline = prune_shared(now);
        for (const conn_list* l : {&reading_, &writing_, &lingering_})
            if (l->head != none) next_deadline = std::min(next_deadline, conns_[l->head].deadline);
        if (!listening_ && room) next_deadline = std::min(next_deadline, accept_paused_until_);
        int timeout_ms = -1;
        if (next_deadline != clock::time_point::max()) {
            auto left = std::chrono::ceil<std::chrono::milliseconds>(next_deadline - now).count();
            timeout_ms = static_cast<int>(std::clamp<long long>(left, 0, 60'000));
        }

        int n = ::epoll_wait(epoll_fd_, evs, static_cast<int>(std::size(evs)), timeout_ms);
        if (n < 0) {
            if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        bool listen_ready = false;
        for (int k = 0; k < n; ++k) {
            const std::uint64_t tag = evs[k].data.u64;
            if (tag == wake_tag) {
                char buf[64];
                while (::read(wake_read_, buf, sizeof buf) > 0) {
                }
                continue;
            }
            if (tag == listen_tag) {
                listen_ready = true;
                continue;
            }
            const auto index = static_cast<std::uint32_t>(tag);
            if (index >= conns_.size()) continue;
            connection& c = conns_[index];
            // An event for a connection closed (and its slot perhaps reused)
            // earlier in this batch.
            if (c.state == phase::free || c.gen != static_cast<std::uint32_t>(tag >> 32)) continue;
            try {
                on_event(c, evs[k].events);
            } catch (...) {
                // Out of memory or the like while serving this one: drop it.
                close_connection(c);
            }
            settle(c);
        }
        if (stopping_.load(std::memory_order_acquire)) break;
        if (listen_ready) {
            try {
                accept_new(clock::now());
            } catch (...) {
                accept_paused_until_ = clock::now() + std::chrono::milliseconds(100);
                set_listening(false);
            }
        }
    }
    for (auto& c : conns_)
        if (c.state != phase::free) close_connection(c);
}

GORO_DECL debug_server_state::clock::time_point debug_server_state::prune_shared(
    clock::time_point now) noexcept {
    auto next = clock::time_point::max();
    for (auto it = shared_.begin(); it != shared_.end();) {
        const auto until = it->second.made + opts_.shared_response_window;
        if (until <= now) {
            it = shared_.erase(it);  // may free the body, unless a connection still sends it
        } else {
            next = std::min(next, until);
            ++it;
        }
    }
    return next;
}

GORO_DECL void debug_server_state::expire(clock::time_point now) {
    while (lingering_.head != none && conns_[lingering_.head].deadline <= now)
        close_connection(conns_[lingering_.head]);
    while (writing_.head != none && conns_[writing_.head].deadline <= now) {
        // A client that does not read: its response (and the body it pins) goes.
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        close_connection(conns_[writing_.head]);
    }
    while (reading_.head != none && conns_[reading_.head].deadline <= now) {
        connection& c = conns_[reading_.head];
        try {
            if (!c.in.empty() || c.requests == 0) {
                // A head not complete in time, or nothing sent at all: say why.
                timeouts_.fetch_add(1, std::memory_order_relaxed);
                respond_error(c, 408,
                              c.in.empty() ? "no request received within read_timeout"
                                           : "request head not received within read_timeout",
                              starts_head_request(c.in));
            } else {
                // Idle keep-alive: closed without a 408, which could race a
                // request the client is just sending; gracefully, so that
                // such a request meets a FIN (and is retried), not a reset.
                linger(c);
            }
        } catch (...) {
            close_connection(c);
        }
        settle(c);
    }
}

GORO_DECL void debug_server_state::accept_new(clock::time_point now) {
    // A bounded batch, so that a flood of connections cannot starve the
    // connections already served; the rest wait for the next round.
    for (int batch = 0; batch < 64; ++batch) {
        if (active() >= opts_.max_connections && reading_.size == 0) {
            // Every slot is writing a response: nothing may be evicted. Stop
            // listening until a slot frees (run() checks each round).
            accept_paused_until_ = now;
            set_listening(false);
            return;
        }
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                accept_paused_until_ = now + std::chrono::milliseconds(100);
                set_listening(false);
            }
            return;  // EAGAIN: nothing more pending
        }
        if (active() >= opts_.max_connections) {
            // Full: the oldest reading connection gives way, gracefully. An
            // idle keep-alive one first (among the oldest few): a client must
            // expect a keep-alive connection to close and retries on a new
            // one, while a connection closed before its first answer is an
            // error to it. Else the oldest, idle or with its head incomplete.
            std::uint32_t pick = reading_.head;
            std::uint32_t i = reading_.head;
            for (int looked = 0; i != none && looked < 16; ++looked, i = conns_[i].next) {
                if (conns_[i].requests > 0 && conns_[i].in.empty()) {
                    pick = i;
                    break;
                }
            }
            connection& victim = conns_[pick];
            connections_evicted_.fetch_add(1, std::memory_order_relaxed);
            linger(victim);
            settle(victim);
        }
        if (lingering_.size > max_lingering())
            close_connection(conns_[lingering_.head]);  // drained once more first

        std::uint32_t index;
        if (!free_slots_.empty()) {
            index = free_slots_.back();
            free_slots_.pop_back();
        } else {
            index = static_cast<std::uint32_t>(conns_.size());
            try {
                // close_connection (noexcept) pushes the slot back without allocating.
                if (free_slots_.capacity() < conns_.size() + 1) free_slots_.reserve(2 * (conns_.size() + 1));
                conns_.emplace_back();
            } catch (...) {
                ::close(fd);
                throw;
            }
            conns_.back().index = index;
        }
        connection& c = conns_[index];
        c.fd = fd;
        c.events = EPOLLIN;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = (std::uint64_t{c.gen} << 32) | index;
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
            ::close(fd);
            c.fd = -1;
            free_slots_.push_back(index);
            continue;
        }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c.peer = format_endpoint(reinterpret_cast<const sockaddr*>(&peer));
        set_phase(c, phase::reading, now + opts_.read_timeout);
        connections_accepted_.fetch_add(1, std::memory_order_relaxed);
    }
}

GORO_DECL void debug_server_state::on_event(connection& c, std::uint32_t events) {
    switch (c.state) {
    case phase::reading:
        if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) read_some(c);
        break;
    case phase::writing:
        if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) {
            write_some(c);
            // Written in full on a keep-alive connection: serve what was pipelined.
            if (c.state == phase::reading) process(c);
        }
        break;
    case phase::lingering:
        drain(c);
        break;
    case phase::free:
        break;
    }
}

GORO_DECL void debug_server_state::read_some(connection& c) {
    const std::size_t cap = head_cap();
    const std::size_t before = c.in.size();
    char buf[16 * 1024];
    while (c.in.size() < cap) {
        std::size_t want = std::min(sizeof buf, cap - c.in.size());
        ssize_t n = ::recv(c.fd, buf, want, 0);
        if (n > 0) {
            c.in.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            c.peer_eof = true;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        close_connection(c);  // ECONNRESET and friends
        return;
    }
    // Parse only when it can tell something new: a line ended, the first bytes
    // arrived (rejects e.g. a TLS handshake at once), the request line grew past
    // its limit, or the buffer is full.
    const std::size_t rl = opts_.limits.max_request_line + 2;
    if (std::memchr(c.in.data() + before, '\n', c.in.size() - before) != nullptr || before == 0 ||
        (before <= rl && c.in.size() > rl) || c.in.size() >= cap)
        c.need_parse = true;
    process(c);
}

GORO_DECL void debug_server_state::process(connection& c) {
    while (c.state == phase::reading) {
        if (c.in.empty() || !c.need_parse) {
            if (c.peer_eof) close_connection(c);
            return;
        }
        c.need_parse = false;
        http_parse_result r = parse_http_request(c.in, opts_.limits);
        if (r.status == http_parse_status::incomplete) {
            if (c.in.size() >= head_cap()) {  // cannot happen by the parser's contract; be safe
                bad_requests_.fetch_add(1, std::memory_order_relaxed);
                respond_error(c, 431, "request head too large", starts_head_request(c.in));
            } else if (c.peer_eof) {
                close_connection(c);
            }
            return;
        }
        if (r.status == http_parse_status::error) {
            bad_requests_.fetch_add(1, std::memory_order_relaxed);
            respond_error(c, r.error_status, r.error_reason, starts_head_request(c.in));
            return;
        }
        requests_.fetch_add(1, std::memory_order_relaxed);
        ++c.requests;
        c.close_after = !r.request.keep_alive || r.request.has_body || c.peer_eof ||
                        c.requests >= opts_.max_requests_per_connection ||
                        stopping_.load(std::memory_order_relaxed);
        c.in.erase(0, r.consumed);
        if (c.in.empty() && c.in.capacity() > 1024) std::string().swap(c.in);  // idle slots stay small
        c.need_parse = !c.in.empty();
        respond(c, r.request);  // writes now if it can; back to reading if it all went out
    }
}

GORO_DECL bool debug_server_state::host_allowed(const http_request_head& head) const {
    if (!opts_.check_host || !addr_.loopback) return true;
    if (!head.authority.empty()) return is_loopback_host(head.authority);
    auto host = std::find_if(head.headers.begin(), head.headers.end(),
                             [](const auto& h) { return iequals(h.first, "host"); });
    if (host == head.headers.end() || host->second.empty()) return true;  // HTTP/1.0 or no authority
    return is_loopback_host(host->second);
}

GORO_DECL bool debug_server_state::authorized(const http_request_head& head, std::string& challenge) const {
    if (opts_.bearer_token.empty()) return true;
    std::optional<std::string_view> value;
    int seen = 0;
    for (const auto& [k, v] : head.headers)
        if (iequals(k, "authorization")) {
            ++seen;
            value = v;
        }
    challenge = "Bearer realm=\"goro debug server\"";
    if (seen != 1) return false;
    std::string_view v = *value;
    if (v.size() < 7 || !iequals(v.substr(0, 6), "bearer") || (v[6] != ' ' && v[6] != '\t')) return false;
    v.remove_prefix(7);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    if (constant_time_equal(v, opts_.bearer_token)) return true;
    challenge += ", error=\"invalid_token\"";
    return false;
}


GORO_DECL void debug_server_state::respond(connection& c, const http_request_head& head) {
    const bool head_only = head.method == "HEAD";
    std::string_view conn_header;
    if (c.close_after) conn_header = "close";
    else if (head.version_minor == 0) conn_header = "keep-alive";

    debug_response resp;
    std::string challenge;
    auto plain = [&](int status, std::string body) {
        resp = debug_response{};
        resp.status = status;
        resp.body = std::move(body);
    };
    std::string share_key;
    std::uint64_t stamp_before = 0;
    if (!host_allowed(head)) {
        plain(403, "403 Forbidden: Host is not a loopback name (DNS rebinding protection; "
                   "see goro::debug_server_options::check_host)\n");
    } else if (!authorized(head, challenge)) {
        plain(401, "401 Unauthorized: this server requires \"Authorization: Bearer <token>\"\n");
        resp.headers.emplace_back("WWW-Authenticate", challenge);
    } else if (head.method != "GET" && head.method != "HEAD") {
        plain(405, "405 Method Not Allowed: only GET and HEAD\n");
        resp.headers.emplace_back("Allow", "GET, HEAD");
    } else {
        route found;
        bool redirect = false;
        {
            std::lock_guard lock(routes_mutex_);
            auto it = routes_.find(head.path);
            if (it != routes_.end()) found = it->second;
            else if (head.path.back() != '/') redirect = routes_.count(head.path + "/") != 0;
        }
        if (found.handler && found.share) {
            share_key = head.path;
            share_key += '?';
            share_key += head.raw_query;
            auto it = shared_.find(share_key);
            if (it != shared_.end()) {
                const shared_entry& e = it->second;
                body_ptr body = e.body.lock();
                // Fresh enough: made within the window, and either nothing
                // moved since or another client is still being sent it (a
                // burst of requests for one dump shares it, however busy the
                // program, so N slow clients never pin N dumps).
                if (body && clock::now() - e.made <= opts_.shared_response_window &&
                    (e.stamp == world_stamp() || in_flight(body, e.hold != nullptr))) {
                    responses_shared_.fetch_add(1, std::memory_order_relaxed);
                    start_write(c, e.status, e.content_type, e.headers, std::move(body), e.length,
                                head_only, conn_header);
                    return;
                }
            }
        }
        if (found.handler) {
            if (!share_key.empty()) stamp_before = world_stamp();
            debug_request req;
            req.method_ = head.method;
            req.path_ = head.path;
            req.target_ = head.target;
            req.raw_query_ = head.raw_query;
            req.params_ = head.query;
            req.headers_ = head.headers;
            req.version_minor_ = head.version_minor;
            req.remote_ = c.peer;
            try {
                (*found.handler)(req, resp);
                if (std::string why = check_response(resp); !why.empty()) {
                    handler_errors_.fetch_add(1, std::memory_order_relaxed);
                    plain(500, "500 Internal Server Error: " + utf8_escaped(why) + "\n");
                }
            } catch (const std::exception& e) {
                handler_errors_.fetch_add(1, std::memory_order_relaxed);
                plain(500, utf8_escaped(e.what()) + "\n");
            } catch (...) {
                handler_errors_.fetch_add(1, std::memory_order_relaxed);
                plain(500, "handler threw an exception not derived from std::exception\n");
            }
        } else if (redirect) {
            // raw_path is plain visible ASCII (checked by the parser): safe in a header.
            std::string location = head.raw_path + "/";
            if (!head.raw_query.empty()) location += "?" + head.raw_query;
            // The body echoes the target: HTML-escaped, as Go's http.Redirect does.
            std::string body = "<a href=\"";
            append_html_escaped(body, location);
            body += "\">Moved Permanently</a>.\n";
            plain(301, std::move(body));
            resp.content_type = "text/html; charset=utf-8";
            resp.headers.emplace_back("Location", std::move(location));
        } else {
            plain(404, "404 page not found\n");
        }
    }
    const std::size_t length = resp.body.size() + resp.streamed_size();
    body_ptr body = make_body(std::move(resp.body), resp.take_streamed());
    if (length >= large_body) trim_heap();  // what producing it needed is free now
    if (!share_key.empty() && resp.status == 200 && body) {
        // The map holds only what was made within the window: at most as many
        // bodies as handlers can produce in that time.
        shared_entry& e = shared_[share_key];
        e.hold = opts_.shared_response_window.count() > 0 ? body : nullptr;
        e.status = resp.status;
        e.content_type = resp.content_type;
        e.headers = resp.headers;
        e.body = body;
        e.length = length;
        e.made = clock::now();
        e.stamp = stamp_before;
    }
    start_write(c, resp.status, resp.content_type, resp.headers, std::move(body), length, head_only,
                conn_header);
}

GORO_DECL void debug_server_state::respond_error(connection& c, int status, std::string_view reason,
                                                 bool head_only) {
    std::string text = std::to_string(status) + " " + std::string(http_reason_phrase(status)) + ": " +
                       std::string(reason) + "\n";
    c.close_after = true;
    c.in.clear();
    const std::size_t length = text.size();
    start_write(c, status, "text/plain; charset=utf-8", {}, make_body(std::move(text)), length,
                head_only, "close");
}

GORO_DECL void debug_server_state::start_write(connection& c, int status, std::string_view content_type,
                                               const http_fields& headers, body_ptr body,
                                               std::size_t length, bool head_only,
                                               std::string_view connection_header) {
    std::string& h = c.out_head;
    h.clear();
    h += "HTTP/1.1 ";
    h += std::to_string(status);
    h += ' ';
    h += http_reason_phrase(status);
    h += "\r\nDate: ";
    h += http_date(std::time(nullptr));
    h += "\r\nContent-Type: ";
    h += content_type;
    if (status != 204 && status != 304) {
        h += "\r\nContent-Length: ";
        h += std::to_string(length);
    }
    h += "\r\nX-Content-Type-Options: nosniff";
    if (!connection_header.empty()) {
        h += "\r\nConnection: ";
        h += connection_header;
    }
    for (const auto& [k, v] : headers) {
        h += "\r\n";
        h += k;
        h += ": ";
        h += v;
    }
    h += "\r\n\r\n";
    c.out_body.reset();
    if (!head_only && status != 204 && status != 304) c.out_body = std::move(body);
    c.out_sent = 0;
    set_phase(c, phase::writing, clock::now() + opts_.write_timeout);
    write_some(c);
}

GORO_DECL void debug_server_state::write_some(connection& c) {
    const response_body* b = c.out_body.get();
    const std::size_t total = c.out_head.size() + (b ? b->size() : 0);
    while (c.out_sent < total) {
        // The unsent rest, gathered from the head, the string part and the
        // blocks: up to max_iov pieces per call.
        constexpr int max_iov = 64;
        iovec iov[max_iov];
        int n_iov = 0;
        std::size_t skip = c.out_sent;
        auto add = [&](const char* p, std::size_t n) {
            if (n_iov == max_iov || n == 0) return;
            if (skip >= n) {
                skip -= n;
                return;
            }
            iov[n_iov].iov_base = const_cast<char*>(p + skip);
            iov[n_iov].iov_len = n - skip;
            skip = 0;
            ++n_iov;
        };
        add(c.out_head.data(), c.out_head.size());
        if (b) {
            add(b->bytes.data(), b->bytes.size());
            for (const body_blocks::block& k : b->blocks.blocks()) {
                if (n_iov == max_iov) break;
                add(k.data, k.size);
            }
        }
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = static_cast<decltype(msg.msg_iovlen)>(n_iov);
        ssize_t n = ::sendmsg(c.fd, &msg, send_flags);
        if (n >= 0) {
            c.out_sent += static_cast<std::size_t>(n);
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // wait for EPOLLOUT
        close_connection(c);  // EPIPE, ECONNRESET
        return;
    }
    finish_response(c);
}

GORO_DECL void debug_server_state::finish_response(connection& c) {
    std::string().swap(c.out_head);
    c.out_body.reset();  // the last holder frees a large dump here
    c.out_sent = 0;
    if (c.close_after) {
        linger(c);
        return;
    }
    set_phase(c, phase::reading, clock::now() + opts_.read_timeout);
    // process() continues with pipelined bytes already in c.in, if any.
}

// Ends a connection without resetting it: FIN now, then read and discard what
// the client still sends until it closes too or linger_time() passes. A close()
// with unread bytes in the socket would send a RST, and a RST can destroy a
// response the client has received but not yet read.
GORO_DECL void debug_server_state::linger(connection& c) {
    if (c.peer_eof) {
        close_connection(c);
        return;
    }
    ::shutdown(c.fd, SHUT_WR);
    std::string().swap(c.in);
    std::string().swap(c.out_head);
    c.out_body.reset();
    c.need_parse = false;
    c.drained = 0;
    set_phase(c, phase::lingering, clock::now() + linger_time());
}

GORO_DECL void debug_server_state::drain(connection& c) {
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n > 0) {
            c.drained += static_cast<std::size_t>(n);
            if (c.drained > 256 * 1024) break;  // enough: it is not going to stop
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        break;  // EOF or error
    }
    close_connection(c);
}

GORO_DECL void debug_server_state::close_connection(connection& c) noexcept {
    if (c.state == phase::free) return;
    if (c.state == phase::lingering) {
        // Closed early (deadline, room, stop): read what arrived meanwhile, so
        // that close() finds nothing unread and sends a FIN, not a RST.
        char buf[4096];
        for (int i = 0; i < 16 && ::recv(c.fd, buf, sizeof buf, 0) > 0; ++i) {
        }
    }
    close_fd(c.fd);  // also leaves the epoll set
    set_phase(c, phase::free, clock::time_point{});
    std::string().swap(c.in);
    std::string().swap(c.out_head);
    std::string().swap(c.peer);
    c.out_body.reset();
    c.out_sent = 0;
    c.requests = 0;
    c.events = 0;
    c.need_parse = false;
    c.peer_eof = false;
    c.close_after = false;
    ++c.gen;
    free_slots_.push_back(c.index);  // capacity >= conns_.size(): reserved in accept_new
}

GORO_DECL std::string debug_server_state::render_index() {
    std::vector<std::shared_ptr<const profile_entry>> profiles;
    std::vector<std::pair<std::string, std::string>> links;
    {
        std::lock_guard lock(routes_mutex_);
        profiles = profiles_;
        links = index_links_;
    }
    std::string o;
    o += "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>/debug/pprof/</title>\n"
         "<style>\n.profile-name{\n\tdisplay:inline-block;\n\twidth:6rem;\n}\n</style>\n</head>\n"
         "<body>\n/debug/pprof/\n<br>\n"
         "<p>Add debug=1 to a profile's URL for the text format, debug=2 (goroutine) for one "
         "stack per goroutine; without debug the profile is pprof protobuf for "
         "<code>go tool pprof</code>.</p>\n<br>\nTypes of profiles available:\n<table>\n"
         "<thead><td>Count</td><td>Profile</td></thead>\n";
    for (const auto& p : profiles) {
        std::int64_t count = p->count ? p->count() : 0;  // may throw: the index becomes a 500
        o += "<tr><td>";
        o += std::to_string(count);
        o += "</td><td><a href='";
        append_html_escaped(o, p->name);
        o += "?debug=1'>";
        append_html_escaped(o, p->name);
        o += "</a></td></tr>\n";
    }
    o += "</table>\n";
    for (const auto& [href, text] : links) {
        o += "<a href=\"";
        append_html_escaped(o, href);
        o += "\">";
        append_html_escaped(o, text);
        o += "</a>\n<br>\n";
    }
    o += "<p>\nProfile Descriptions:\n<ul>\n";
    for (const auto& p : profiles) {
        o += "<li><div class=profile-name>";
        append_html_escaped(o, p->name);
        o += ": </div> ";
        append_html_escaped(o, p->description);
        o += "</li>\n";
    }
    o += "</ul>\n</p>\n</body>\n</html>\n";
    return o;
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_SERVER_HPP
// ---- end goro/http/server.hpp ----

namespace goro {

class debug_server;

// Registers /debug/pprof/goroutine?debug=0|1|2 (and its row on the index),
// /debug/goro/tasks.json and /metrics on `server` (see DEFAULT ROUTES above);
// the constructor calls it unless options.with_default_routes is false.
// Replaces handlers already registered on those paths. Defined below, after
// debug_server.
GORO_DECL void register_default_routes(debug_server& server);

// ---------------------------------------------------------------------------
// debug_server
// ---------------------------------------------------------------------------

class debug_server {
public:
    using options = debug_server_options;

    // Validates the options (std::invalid_argument naming the bad one) and
    // registers /debug/pprof/; does not bind: start() does.
    explicit debug_server(options opts = {});

    ~debug_server();  // the state's destructor stops the server

    debug_server(const debug_server&) = delete;
    debug_server& operator=(const debug_server&) = delete;
    // A moved-from server may only be destroyed or assigned to; the thread
    // keeps running with the state, which moves along.
    debug_server(debug_server&&) noexcept;
    debug_server& operator=(debug_server&&) noexcept;

    // Binds, listens and starts the server thread. Throws std::system_error
    // ("goro::debug_server::start: bind 127.0.0.1:6060: Address already in
    // use") or std::logic_error when already running. May be called again
    // after stop(); with port 0 the new port may differ.
    void start();
    // Stops accepting, closes every connection, joins the thread. Idempotent.
    // Throws std::logic_error when called from the server thread.
    void stop();
    bool running() const noexcept;

    // The bound port (the real one when options.port is 0); 0 before the first
    // start(). After stop() the last bound port.
    std::uint16_t port() const noexcept;
    // "http://127.0.0.1:6060" or "http://[::1]:6060".
    std::string url() const;
    const options& config() const;
    // The leak watch this server runs (null when leak_watch_interval is 0).
    // It samples while the server runs; sample_now() works at any time.
    std::shared_ptr<leak_watch> watch() const noexcept { return watch_; }
    debug_server_stats stats() const;

    // Serves GET/HEAD `path` (exact, percent-decoded, starting with '/') with
    // `handler`, on the server thread. Replaces a handler already registered
    // there. Thread-safe; may be called while running.
    void handle(std::string path, debug_handler handler);
    // The same, with route options: share_response for a handler whose answer
    // depends only on the path and query (a dump), so concurrent identical
    // requests share one body (see debug_server_options::shared_response_window).
    void handle(std::string path, debug_handler handler, debug_route_options route);
    // Unregisters; false if nothing was there. A call already running finishes.
    bool remove_handler(std::string_view path);
    // Lists `profile` on /debug/pprof/ (sorted by name) and, with a handler,
    // serves it at /debug/pprof/<name>. Replaces a profile of the same name.
    void add_profile(debug_profile profile);
    // An extra link under the index table, e.g. ("goroutine?debug=2", "full goroutine stack dump").
    // A link to the same href replaces the earlier one's text.
    void add_index_link(std::string href, std::string text);

private:
    detail::debug_server_state& state() const;
    std::unique_ptr<detail::debug_server_state> state_;
    std::shared_ptr<leak_watch> watch_;  // after state_: destroyed (stopped) first
};

}  // namespace goro

#if GORO_BODIES

#include <stdexcept>
#include <utility>


// ---- begin goro/http/live_page.hpp ----
#ifndef GORO_HTTP_LIVE_PAGE_HPP
#define GORO_HTTP_LIVE_PAGE_HPP

// /debug/goro/ — one self-contained HTML page of the program's tasks, and
// /debug/goro/group?key=K — one group's stack and tasks; both served by
// goro::debug_server (goro::register_default_routes).
//
// THE PAGE, rendered on the server from one snapshot (readable with
// JavaScript off):
//   * a summary line (tasks, groups, when) and links: the goroutine profile
//     as pprof (a download), debug=1, debug=2, tasks.json, the leak report,
//     the wait and mutex profiles, /metrics;
//   * the leak suspects of the server's leak watch (goro/inspect/leak_watch.hpp):
//     function, tasks now, growth per minute, growing since, the oldest
//     task's wait, and a sparkline (inline SVG) of the group's count history;
//   * every group (same stack and labels, like debug=1; at most 10,000, the
//     largest): tasks, wait reason, the oldest task's wait, the leaf function
//     and its place, labels. One short table row per group: the leaf
//     function is a link to the group's own page (below), so the page does
//     not carry 10,000 stacks and task lists. The rows come in bodies
//     (<tbody>) of 200, laid out as grids, each with `content-visibility:
//     auto`: the browser lays out and paints only the bodies on screen. A
//     page of 10,000 groups is about 2.8 MB; headless Chromium spends
//     0.8 s of CPU to show it, where one table of 10,000 rows with their
//     stacks took 7.6 s (tests/browser/test_live_page.py prints the times).
// THE GROUP PAGE (/debug/goro/group?key=0x…, the key of a row): the group's
// full stack and its tasks (id, name, state, minutes waiting, `created by`;
// at most 1,000 listed), from a new snapshot; 404 when no group has that key
// any more (its tasks ended or moved on). With &fragment=1 only the part
// that the page inserts under the row.
// WITH JAVASCRIPT (inline; it fetches nothing but this server's own pages):
//   * a click on a group's function opens, under its row, the group's stack
//     and tasks (the group page's fragment); a second click closes it;
//   * click a column head to sort; a filter box matches function, wait
//     reason and labels; a select keeps one wait reason;
//   * auto-refresh every `refresh` seconds (query ?refresh=N, 1 to 3600,
//     default 5; at least four times as long as the last refresh took): the
//     page fetches itself and swaps in the new tables, keeping the sort, the
//     filter and the opened groups (re-fetched); a pause button.
//     When the page was requested with `Authorization: Bearer <token>` (the
//     server's bearer_token), the page carries that header's value (the
//     requester knows it already) and sends it with each fetch.
// Element ids and classes the browser test relies on: #summary, #suspects
// tr.suspect (.fn, .count), #groups tr.group (data-key, data-count, td.fn a),
// #groups tr.detail (pre.stack, pre.tasks), #pause, #filter, #reason, #updated.
// No external resource: no script, style, font or image is fetched.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>


namespace goro {

namespace detail {

inline constexpr std::size_t live_page_max_groups = 10000;
inline constexpr std::size_t live_page_max_tasks = 1000;  // listed on a group's page
inline constexpr std::size_t live_page_chunk = 200;       // rows per <tbody> (see live_page_style)

/// The page for one request (see the top of this header).
GORO_DECL std::string render_live_page(const leak_watch* watch, const debug_request& req);

/// /debug/goro/group?key=K[&fragment=1] (see the top of this header).
GORO_DECL void serve_live_group(const debug_request& req, debug_response& r);

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>
#include <charconv>
#include <cstdio>


namespace goro::detail {

/// "340ms", "12s", "5m12s", "2h3m".
GORO_DECL std::string short_duration(std::int64_t ns) {
    if (ns < 1'000'000) return std::to_string(ns / 1000) + "µs";
    if (ns < 1'000'000'000) return std::to_string(ns / 1'000'000) + "ms";
    std::int64_t s = ns / 1'000'000'000;
    if (s < 60) return std::to_string(s) + "s";
    if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
    return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m";
}

GORO_DECL void append_int(std::string& out, std::int64_t v) {
    char b[24];
    auto [end, ec] = std::to_chars(b, b + sizeof b, v);
    (void)ec;  // 24 characters hold any int64
    out.append(b, end);
}

GORO_DECL void append_hex(std::string& out, std::uint64_t v) {
    char b[20];
    out.append(b, format_hex(b, v));
}

/// An inline SVG polyline of `h` (oldest first), scaled to its maximum.
GORO_DECL void append_sparkline(std::string& out, const std::vector<std::uint32_t>& h) {
    const int w = 120, ht = 24;
    std::uint32_t hi = 1;
    for (std::uint32_t c : h) hi = std::max(hi, c);
    out += "<svg class=spark width=120 height=24 viewBox='0 0 120 24' role=img aria-label='count history'><polyline points='";
    const std::size_t n = h.size();
    char b[48];
    for (std::size_t i = 0; i < n; ++i) {
        double x = n > 1 ? double(i) * (w - 2) / double(n - 1) + 1 : w / 2.0;
        double y = ht - 2 - double(h[i]) * (ht - 4) / double(hi);
        std::snprintf(b, sizeof b, "%s%.1f,%.1f", i ? " " : "", x, y);
        out += b;
    }
    out += "'/></svg>";
}

GORO_DECL void append_labels_text(std::string& out,
                                  const std::vector<std::pair<std::string, std::string>>& labels) {
    bool first = true;
    for (const auto& [k, v] : labels) {
        if (!first) out += ", ";
        first = false;
        append_html_escaped(out, k);
        out += '=';
        append_html_escaped(out, v);
    }
}

/// The wait of a group's longest-waiting task: its reason (null when no task
/// of the group waits) and, in `oldest`, how long (0 when none waits).
GORO_DECL const char* oldest_wait(const task_group& g, const snapshot::task_list& tasks, std::int64_t now,
                                  std::int64_t& oldest) noexcept {
    oldest = 0;
    const char* why = nullptr;
    for (std::uint32_t ti : g.tasks) {
        const task_record& r = tasks[ti];
        if (r.state != task_state::waiting || !r.since_ns) continue;
        std::int64_t age = now > r.since_ns ? now - r.since_ns : 0;
        if (!why || age > oldest) {
            oldest = age;
            why = r.wait_reason ? r.wait_reason : "waiting";
        }
    }
    return why;
}

/// `<meta name=goro-token …>` when the request carried a bearer token (see the top).
GORO_DECL void append_token_meta(std::string& out, const debug_request& req) {
    if (auto a = req.header("Authorization"); a && a->substr(0, 7) == "Bearer ") {
        out += "<meta name=goro-token content=\"";
        append_html_escaped(out, *a);
        out += "\">";
    }
}

GORO_DECL const char* live_page_style() {
    return R"(body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
nav a{margin-right:1em}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eee;cursor:pointer;user-select:none;white-space:nowrap}td.num,th.num{text-align:right}
#groups table,#groups thead,#groups tbody{display:block}#groups tbody{content-visibility:auto;contain-intrinsic-size:auto 5400px}
#groups tr{display:grid;grid-template-columns:6em 10em 6em minmax(0,1fr) 25%}#groups td{overflow-wrap:anywhere}
#groups tr[hidden],#groups tbody[hidden]{display:none}#groups tr.detail td{grid-column:1/-1}
tr.suspect td{background:#fff1f0}.fn{font-family:ui-monospace,monospace}td.fn a{color:#1a4f9c}
pre{margin:.3em 0;font-size:12px;background:#f4f4f4;padding:4px;overflow-x:auto;white-space:pre-wrap}
.spark polyline{fill:none;stroke:#c0392b;stroke-width:1.5}#controls{margin:.6em 0}
#controls input{width:24em}.muted{color:#777}tr.detail td{background:#f8f8f8}
pre.tasks{background:#fff;border-left:3px solid #ddd})";
}

GORO_DECL const char* live_page_script() {
    return R"JS((function(){
var meta=document.querySelector('meta[name=goro-token]');
var token=meta?meta.content:'';
var period=parseInt(document.body.dataset.refresh||'5',10)*1000;
var paused=false,sortKey='count',sortDesc=true,timer=0,cost=0,open={};
var COL={count:0,reason:1,age:2,fn:3,labels:4},CHUNK=parseInt(document.body.dataset.chunk||'200',10);
function $(id){return document.getElementById(id);}
function hdrs(){var h={};if(token)h['Authorization']=token;return h;}
function tbody(){return document.querySelector('#groups tbody');}
function rows(){return Array.prototype.slice.call(document.querySelectorAll('#groups tbody tr.group'));}
function cell(row,k){var c=row.cells[COL[k]];return c?c.textContent:'';}
function detailOf(row){var d=row.nextElementSibling;return d&&d.classList.contains('detail')?d:null;}
function plain(){return sortKey==='count'&&sortDesc&&!$('filter').value&&!$('reason').value;}
// Sorts and filters the rows (with their opened details) into new bodies of
// CHUNK rows (each laid out only when it scrolls into view: see the style),
// the rows filtered out last, in a hidden body.
function apply(){
  var tb=tbody();if(!tb)return;
  var table=tb.parentNode;
  var f=$('filter').value.toLowerCase(),r=$('reason').value,num=(sortKey==='count'||sortKey==='age');
  var keys=rows().map(function(row,i){
    var reason=cell(row,'reason');
    return {row:row,d:detailOf(row),i:i,n:num?parseFloat(row.getAttribute('data-'+sortKey)):0,
      s:num?'':cell(row,sortKey),reason:reason,
      text:(cell(row,'fn')+' '+reason+' '+cell(row,'labels')).toLowerCase()};});
  keys.sort(function(a,b){var c=num?a.n-b.n:a.s.localeCompare(b.s);return (sortDesc?-c:c)||a.i-b.i;});
  var bodies=[],cur=null,n=0,gone=document.createElement('tbody');gone.hidden=true;
  keys.forEach(function(k){
    var show=(!f||k.text.indexOf(f)>=0)&&(!r||k.reason===r),into=gone;
    if(k.row.hidden===show)k.row.hidden=!show;
    if(show){if(!cur||n===CHUNK){cur=document.createElement('tbody');bodies.push(cur);n=0;}++n;into=cur;}
    into.appendChild(k.row);
    if(k.d){k.d.hidden=!show;into.appendChild(k.d);}});
  bodies.push(gone);
  table.querySelectorAll('tbody').forEach(function(b){b.remove();});
  bodies.forEach(function(b){table.appendChild(b);});
}
function load(row){
  var d=detailOf(row);
  if(!d){d=document.createElement('tr');d.className='detail';d.dataset.key=row.dataset.key;
    var td=d.insertCell();td.colSpan=5;td.textContent='loading…';row.parentNode.insertBefore(d,row.nextSibling);}
  var a=row.querySelector('td.fn a');
  fetch(a.href+'&fragment=1',{headers:hdrs(),cache:'no-store'}).then(function(r){
    return r.text().then(function(t){
      if(r.ok)d.cells[0].innerHTML=t;
      else{var p=document.createElement('pre');p.textContent=t;d.cells[0].replaceChildren(p);}});
  }).catch(function(e){d.cells[0].textContent='failed: '+e;});
}
function toggle(row){
  var d=detailOf(row),key=row.dataset.key;
  if(d){d.remove();delete open[key];}else{open[key]=1;load(row);}
}
document.addEventListener('click',function(e){
  var t=e.target;if(!t.closest)return;
  var th=t.closest('#groups th[data-sort]');
  if(th){var k=th.dataset.sort;if(sortKey===k)sortDesc=!sortDesc;else{sortKey=k;sortDesc=(k==='count'||k==='age');}apply();return;}
  var a=t.closest('#groups tr.group td.fn a');
  if(!a||e.button!==0||e.ctrlKey||e.metaKey||e.shiftKey||e.altKey)return;
  e.preventDefault();toggle(a.closest('tr'));
});
function schedule(){clearTimeout(timer);if(!paused)timer=setTimeout(refresh,Math.max(period,4*cost));}
function refresh(){
  if(paused)return;
  var t0=performance.now();
  fetch(location.href,{headers:hdrs(),cache:'no-store'}).then(function(r){return r.text();}).then(function(t){
    if(paused)return;
    var doc=new DOMParser().parseFromString(t,'text/html');
    ['summary','content'].forEach(function(id){var n=doc.getElementById(id),o=$(id);
      if(n&&o)o.parentNode.replaceChild(document.adoptNode(n),o);});
    var ns=doc.getElementById('reason'),sel=$('reason'),cur=sel.value;
    if(ns){sel.innerHTML=ns.innerHTML;sel.value=cur;if(sel.value!==cur)sel.value='';}
    rows().forEach(function(row){if(open[row.dataset.key])load(row);});
    if(!plain())apply();
    $('updated').textContent='updated '+new Date().toLocaleTimeString();
    cost=performance.now()-t0;schedule();
  }).catch(function(e){$('updated').textContent='refresh failed: '+e;schedule();});
}
$('controls').hidden=false;
$('filter').oninput=apply;
$('reason').onchange=apply;
$('pause').onclick=function(){paused=!paused;this.textContent=paused?'resume':'pause';
  $('updated').textContent=paused?'paused':'';if(paused)clearTimeout(timer);else schedule();};
schedule();
})();)JS";
}

GORO_DECL std::string render_live_page(const leak_watch* watch, const debug_request& req) {
    int refresh = 5;
    if (auto r = req.param("refresh"); r && !r->empty()) {
        int v = 0;
        for (char c : *r) v = (c >= '0' && c <= '9' && v < 100000) ? v * 10 + (c - '0') : 100000;
        if (v >= 1 && v <= 3600) refresh = v;
    }
    snapshot s = snapshot::take();
    profile_view v(s);
    const auto& tasks = s.tasks();
    const std::int64_t now = s.taken_at_ns();
    leak_report rep;
    if (watch) rep = watch->report();
    const std::size_t shown = std::min(v.groups().size(), live_page_max_groups);

    // Each group's oldest wait and its reason, and the reasons for the select.
    std::vector<std::int64_t> oldest(shown);
    std::vector<const char*> reason(shown);
    std::vector<std::string_view> reasons;
    for (std::size_t gi = 0; gi < shown; ++gi) {
        const task_group& g = v.groups()[gi];
        reason[gi] = oldest_wait(g, tasks, now, oldest[gi]);
        if (!reason[gi]) reason[gi] = state_text(tasks[g.tasks.front()]);
        std::string_view why(reason[gi]);
        if (std::find(reasons.begin(), reasons.end(), why) == reasons.end()) reasons.push_back(why);
    }
    std::sort(reasons.begin(), reasons.end());

    std::string out;
    out.reserve(8192 + shown * 260);
    out += "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>goro: tasks</title>"
           "<meta name=viewport content='width=device-width'>";
    append_token_meta(out, req);
    out += "<style>";
    out += live_page_style();
    out += "</style></head>\n<body data-refresh=";
    append_int(out, refresh);
    out += " data-chunk=";
    append_int(out, static_cast<std::int64_t>(live_page_chunk));
    out += ">\n<h1>goro tasks</h1>\n<div id=summary>";
    out += std::to_string(s.total()) + " tasks in " + std::to_string(v.groups().size()) + " groups; " +
           std::to_string(rep.suspects.size()) + " leak suspect" + (rep.suspects.size() == 1 ? "" : "s") +
           "; taken " + rfc3339(unix_now_ns());
    out += "</div>\n<nav><a href='/debug/pprof/goroutine' download='goroutine.pb'>download pprof profile</a>"
           "<a href='/debug/pprof/goroutine?debug=1'>debug=1</a><a href='/debug/pprof/goroutine?debug=2'>debug=2</a>"
           "<a href='/debug/goro/tasks.json'>tasks.json</a><a href='/debug/goro/leaks'>leak report</a>"
           "<a href='/debug/pprof/block?debug=1'>wait profile</a><a href='/debug/pprof/mutex?debug=1'>mutex profile</a>"
           "<a href='/metrics'>metrics</a><a href='/debug/pprof/'>index</a></nav>\n";
    out += "<div id=controls hidden><input id=filter type=search placeholder='filter: function, wait reason, label'> "
           "<select id=reason><option value=''>every wait reason</option>";
    for (std::string_view why : reasons) {
        out += "<option>";
        append_html_escaped(out, why);
        out += "</option>";
    }
    out += "</select> <button id=pause type=button>pause</button> <span id=updated class=muted></span> "
           "<span class=muted>refresh every " + std::to_string(refresh) + "s</span></div>\n<main id=content>\n";

    // Leak suspects.
    out += "<section id=suspects><h2>Leak suspects (" + std::to_string(rep.suspects.size()) + ")</h2>\n";
    if (!watch) {
        out += "<p class=muted>no leak watch on this server (debug_server_options::leak_watch_interval is 0)</p>";
    } else if (rep.suspects.empty()) {
        out += "<p class=muted>none after " + std::to_string(rep.samples) + " samples</p>";
    } else {
        out += "<table><thead><tr><th>function</th><th class=num>tasks</th><th class=num>growth/min</th>"
               "<th>growing since</th><th>oldest</th><th>history</th></tr></thead><tbody>\n";
        for (const leak_group& g : rep.suspects) {
            out += "<tr class=suspect data-key='";
            append_hex(out, g.key);
            out += "'><td class=fn>";
            if (g.frames.empty()) {
                out += '?';
            } else {
                // The group page, when the group still has the same key.
                out += "<a href='group?key=";
                append_hex(out, g.key);
                out += "'>";
                append_html_escaped(out, g.frames[0].function);
                out += "</a><br><span class=muted>";
                append_html_escaped(out, g.frames[0].file);
                out += ':';
                append_int(out, g.frames[0].line);
                out += "</span>";
            }
            char rate[32];
            std::snprintf(rate, sizeof rate, "%+.1f", g.growth_per_minute);
            out += "</td><td class='num count'>" + std::to_string(g.count) + "</td><td class=num>" + rate +
                   "</td><td>" + rfc3339(g.growing_since_unix_ns) + "</td><td>[";
            append_html_escaped(out, g.wait_reason);
            if (g.oldest_wait_ns > 0) out += ", " + short_duration(g.oldest_wait_ns);
            out += "]</td><td>";
            append_sparkline(out, g.history);
            out += "</td></tr>\n";
        }
        out += "</tbody></table>";
    }
    out += "</section>\n";

    // Groups: one short row each (end tags left out, as HTML allows).
    out += "<section id=groups><h2>Groups (" + std::to_string(v.groups().size()) + ")</h2>\n";
    if (shown < v.groups().size())
        out += "<p class=muted>the " + std::to_string(shown) + " largest groups are shown</p>\n";
    out += "<table><thead><tr><th class=num data-sort=count>tasks</th><th data-sort=reason>wait reason</th>"
           "<th class=num data-sort=age>oldest</th><th data-sort=fn>function (click for stack and tasks)</th>"
           "<th data-sort=labels>labels</th></tr></thead><tbody>\n";
    for (std::size_t gi = 0; gi < shown; ++gi) {
        if (gi && gi % live_page_chunk == 0) out += "</tbody><tbody>\n";
        const task_group& g = v.groups()[gi];
        const task_record& first = tasks[g.tasks.front()];
        const site_info& leaf = v.site(v.frames(first)[0]);
        out += "<tr class=group data-key=";
        append_hex(out, g.key);
        out += " data-count=";
        append_int(out, static_cast<std::int64_t>(g.count));
        out += " data-age=";
        append_int(out, oldest[gi]);
        out += "><td class=num>";
        append_int(out, static_cast<std::int64_t>(g.count));
        out += "<td>";
        append_html_escaped(out, reason[gi]);
        out += "<td class=num>";
        out += oldest[gi] > 0 ? short_duration(oldest[gi]) : std::string("-");
        out += "<td class=fn><a href='group?key=";
        append_hex(out, g.key);
        out += "'>";
        append_html_escaped(out, leaf.function);
        out += "</a>";
        if (!leaf.file.empty()) {
            out += " <span class=muted>";
            append_html_escaped(out, leaf.file);
            out += ':';
            append_int(out, leaf.line);
            out += "</span>";
        }
        out += "<td>";
        append_labels_text(out, profile_view::labels(first));
        out += "</tr>\n";
    }
    out += "</tbody></table></section>\n</main>\n<script>";
    out += live_page_script();
    out += "</script>\n</body></html>\n";
    return out;
}

/// A group's stack and tasks: what the page inserts under a row, and the
/// body of the group's own page.
GORO_DECL void append_group_detail(std::string& out, profile_view& v, const task_group& g,
                                   std::int64_t now) {
    const auto& tasks = v.snap().tasks();
    const task_record& first = tasks[g.tasks.front()];
    out += "<div class=group-detail data-key='";
    append_hex(out, g.key);
    out += "'><pre class=stack>";
    for (std::uint32_t f : v.frames(first)) {
        const site_info& si = v.site(f);
        append_html_escaped(out, si.function);
        if (!si.file.empty()) {
            out += "\n\t";
            append_html_escaped(out, si.file);
            out += ':';
            append_int(out, si.line);
        }
        out += '\n';
    }
    out += "</pre><pre class=tasks>";
    for (std::size_t k = 0; k < g.tasks.size() && k < live_page_max_tasks; ++k) {
        const task_record& r = tasks[g.tasks[k]];
        out += "goroutine ";
        append_int(out, static_cast<std::int64_t>(r.id));
        if (r.meta && !r.meta->name.empty()) {
            out += " name=";
            std::string q;
            go_quote(q, r.meta->name);
            append_html_escaped(out, q);
        }
        out += " [";
        append_html_escaped(out, state_text(r));
        if (std::int64_t m = minutes_waiting(r, now); m >= 1) {
            out += ", ";
            append_int(out, m);
            out += " minutes";
        }
        out += "]: ";
        if (r.kind == task_kind::blocked) {
            out += "a thread in block_on";
        } else {
            const site_info& c = v.table()[v.table().intern(r.created_by)];
            out += "created by ";
            append_html_escaped(out, c.function);
            if (r.parent_id) {
                out += " in goroutine ";
                append_int(out, static_cast<std::int64_t>(r.parent_id));
            }
            out += " (";
            append_html_escaped(out, c.file);
            out += ':';
            append_int(out, c.line);
            out += ')';
        }
        out += '\n';
    }
    if (g.tasks.size() > live_page_max_tasks) {
        out += "and ";
        append_int(out, static_cast<std::int64_t>(g.tasks.size() - live_page_max_tasks));
        out += " more\n";
    }
    out += "</pre></div>";
}

/// "0x6eb2c8bb6be23f46" (or without 0x) as a group key.
GORO_DECL std::optional<std::uint64_t> parse_group_key(std::string_view s) noexcept {
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s.remove_prefix(2);
    if (s.empty() || s.size() > 16) return std::nullopt;
    std::uint64_t k = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), k, 16);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return k;
}

GORO_DECL void serve_live_group(const debug_request& req, debug_response& r) {
    auto text = [&](int status, std::string body) {
        r.status = status;
        r.content_type = "text/plain; charset=utf-8";
        r.body = std::move(body);
    };
    auto raw = req.param("key");
    auto key = raw ? parse_group_key(*raw) : std::nullopt;
    if (!key) {
        text(400, "invalid value of query parameter 'key' (want a group's key, like 0x6eb2c8bb6be23f46, "
                  "from /debug/goro/)\n");
        return;
    }
    snapshot s = snapshot::take();
    profile_view v(s);
    const task_group* g = nullptr;
    for (const task_group& c : v.groups())
        if (c.key == *key) {
            g = &c;
            break;
        }
    if (!g) {
        std::string k;
        append_hex(k, *key);
        text(404, "no group " + k + " now: its tasks ended, or now wait somewhere else\n");
        return;
    }
    r.content_type = "text/html; charset=utf-8";
    std::string& out = r.body;
    auto frag = req.param("fragment");
    if (frag && !frag->empty() && *frag != "0") {
        append_group_detail(out, v, *g, s.taken_at_ns());
        return;
    }
    const task_record& first = s.tasks()[g->tasks.front()];
    const site_info& leaf = v.site(v.frames(first)[0]);
    std::int64_t oldest = 0;
    const char* why = oldest_wait(*g, s.tasks(), s.taken_at_ns(), oldest);
    out += "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>goro: ";
    append_html_escaped(out, leaf.function);
    out += "</title><meta name=viewport content='width=device-width'><style>";
    out += live_page_style();
    out += "</style></head>\n<body>\n<nav><a href='/debug/goro/'>all groups</a></nav>\n<h1 class=fn>";
    append_html_escaped(out, leaf.function);
    out += "</h1>\n<p id=summary>";
    append_int(out, static_cast<std::int64_t>(g->count));
    out += g->count == 1 ? " task" : " tasks";
    if (why) {
        out += "; the oldest [";
        append_html_escaped(out, why);
        out += ", " + short_duration(oldest) + "]";
    }
    if (!profile_view::labels(first).empty()) {
        out += "; labels ";
        append_labels_text(out, profile_view::labels(first));
    }
    out += "; taken " + rfc3339(unix_now_ns()) + "</p>\n";
    append_group_detail(out, v, *g, s.taken_at_ns());
    out += "\n</body></html>\n";
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_LIVE_PAGE_HPP
// ---- end goro/http/live_page.hpp ----

// ---- begin goro/http/routes.hpp ----
#ifndef GORO_HTTP_ROUTES_HPP
#define GORO_HTTP_ROUTES_HPP

// The handlers of the default routes (goro::register_default_routes in
// goro/http/debug_server.hpp registers them): /debug/pprof/goroutine,
// /debug/goro/tasks.json and /metrics. Each is an ordinary debug_handler.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>


// ---- begin goro/http/prometheus.hpp ----
#ifndef GORO_HTTP_PROMETHEUS_HPP
#define GORO_HTTP_PROMETHEUS_HPP

// detail::prometheus_text_writer: the Prometheus text exposition format 0.0.4,
// as served at /metrics (goro/http/routes.hpp). Pure: writes into a string.

#include <charconv>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>


namespace goro {

namespace detail {

inline constexpr std::string_view prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";

enum class metric_type { counter, gauge, histogram, summary, untyped };

// Writes metric families into a string:
//
//     std::string out;
//     goro::detail::prometheus_text_writer w(out);
//     w.family("goro_goroutines", goro::detail::metric_type::gauge, "Goroutines that exist.");
//     w.sample("goro_goroutines", 12);
//     w.family("goro_tasks", goro::detail::metric_type::gauge, "Tasks by state.");
//     w.sample("goro_tasks", {{"state", "waiting"}}, 7);
//
// Names are checked (metric: [a-zA-Z_:][a-zA-Z0-9_:]*, label:
// [a-zA-Z_][a-zA-Z0-9_]* not starting with "__"); a bad name or a family
// written twice throws std::invalid_argument, since it is a programming error
// and Prometheus would reject the whole scrape. HELP text and label values are
// escaped. Integers are written exactly, floating values shortest-round-trip,
// NaN and infinities as NaN, +Inf, -Inf.
class prometheus_text_writer {
public:
    using label = std::pair<std::string_view, std::string_view>;

    explicit prometheus_text_writer(std::string& out) : out_(out) {}

    void family(std::string_view name, metric_type type, std::string_view help);

    template <class T>
        requires std::is_arithmetic_v<T>
    void sample(std::string_view name, T value) {
        sample(name, std::span<const label>{}, value);
    }

    template <class T>
        requires std::is_arithmetic_v<T>
    void sample(std::string_view name, std::initializer_list<label> labels, T value) {
        sample(name, std::span<const label>(labels.begin(), labels.size()), value);
    }

    template <class T>
        requires std::is_arithmetic_v<T>
    void sample(std::string_view name, std::span<const label> labels, T value) {
        check_metric_name(name);
        out_ += name;
        if (!labels.empty()) {
            out_ += '{';
            bool first = true;
            for (const auto& [k, v] : labels) {
                check_label_name(k);
                if (!first) out_ += ',';
                first = false;
                out_ += k;
                out_ += "=\"";
                for (char c : v) {
                    if (c == '\\') out_ += "\\\\";
                    else if (c == '"') out_ += "\\\"";
                    else if (c == '\n') out_ += "\\n";
                    else out_.push_back(c);
                }
                out_ += '"';
            }
            out_ += '}';
        }
        out_ += ' ';
        append_value(value);
        out_ += '\n';
    }

private:
    static std::string_view type_name(metric_type t) noexcept;
    static bool name_char(char c, bool first, bool colon_ok) noexcept;
    static void check_metric_name(std::string_view n);
    static void check_label_name(std::string_view n);
    template <class T>
    void append_value(T value) {
        if constexpr (std::is_same_v<T, bool>) {
            out_ += value ? '1' : '0';
        } else if constexpr (std::is_integral_v<T>) {
            char buf[32];
            auto r = std::to_chars(buf, buf + sizeof buf, value);
            out_.append(buf, r.ptr);
        } else {
            double d = static_cast<double>(value);
            if (std::isnan(d)) { out_ += "NaN"; return; }
            if (std::isinf(d)) { out_ += d > 0 ? "+Inf" : "-Inf"; return; }
            char buf[64];
            auto r = std::to_chars(buf, buf + sizeof buf, d);
            out_.append(buf, r.ptr);
        }
    }

    std::string& out_;
    std::vector<std::string> families_;
};

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>
#include <stdexcept>

namespace goro::detail {

GORO_DECL void prometheus_text_writer::family(std::string_view name, metric_type type, std::string_view help) {
    check_metric_name(name);
    for (const auto& f : families_)
        if (f == name)
            throw std::invalid_argument("goro::detail::prometheus_text_writer: family '" +
                                        std::string(name) + "' written twice");
    families_.emplace_back(name);
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    for (char c : help) {
        if (c == '\\') out_ += "\\\\";
        else if (c == '\n') out_ += "\\n";
        else out_.push_back(c);
    }
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type_name(type);
    out_ += '\n';
}

GORO_DECL std::string_view prometheus_text_writer::type_name(metric_type t) noexcept {
    switch (t) {
    case metric_type::counter: return "counter";
    case metric_type::gauge: return "gauge";
    case metric_type::histogram: return "histogram";
    case metric_type::summary: return "summary";
    case metric_type::untyped: break;
    }
    return "untyped";
}

GORO_DECL bool prometheus_text_writer::name_char(char c, bool first, bool colon_ok) noexcept {
    if (c == '_' || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return true;
    if (c == ':') return colon_ok;
    return !first && c >= '0' && c <= '9';
}

GORO_DECL void prometheus_text_writer::check_metric_name(std::string_view n) {
    bool ok = !n.empty();
    for (std::size_t i = 0; ok && i < n.size(); ++i) ok = name_char(n[i], i == 0, true);
    if (!ok)
        throw std::invalid_argument("goro::detail::prometheus_text_writer: invalid metric name '" +
                                    std::string(n) + "'");
}

GORO_DECL void prometheus_text_writer::check_label_name(std::string_view n) {
    bool ok = !n.empty() && n.substr(0, std::min<std::size_t>(2, n.size())) != "__";
    for (std::size_t i = 0; ok && i < n.size(); ++i) ok = name_char(n[i], i == 0, false);
    if (!ok)
        throw std::invalid_argument("goro::detail::prometheus_text_writer: invalid label name '" +
                                    std::string(n) + "'");
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_PROMETHEUS_HPP
// ---- end goro/http/prometheus.hpp ----

namespace goro {

namespace detail {

// The `debug` parameter of /debug/pprof/goroutine: absent or empty is 0 (as in
// Go, where FormValue gives "" and Atoi's error is ignored); 0, 1 and 2 are
// Go's; anything else is refused, naming the parameter, rather than guessed.
GORO_DECL std::optional<int> goroutine_debug_param(const debug_request& req);

GORO_DECL void serve_goroutine_profile(const debug_request& req, debug_response& r);

// Tasks by state and wait reason, from one walk of the registry's live headers
// (the shard locks hold spawns off; a task that exits during the walk may or
// may not be counted). States are read as they are, with no stop of the
// world: precise enough for a gauge, and a scrape never pauses the workers.
struct task_census {
    std::int64_t total = 0;
    std::int64_t by_state[3] = {0, 0, 0};  // waiting, runnable, running
    std::vector<std::pair<std::string, std::int64_t>> by_reason;  // sorted by reason
};

GORO_DECL task_census take_task_census();

// At most this many wait reasons get a series of their own in /metrics; the
// rest (only a program that makes up reasons at run time has more) are summed
// under reason="other", so the scrape's cardinality stays bounded.
inline constexpr std::size_t max_reason_series = 32;

// The leak watch's families: how many suspects, and for the ten fastest
// growing (bounded cardinality) their growth and count, labelled by the
// group's stable id, its leaf function and the leaf's site id.
GORO_DECL void render_leak_metrics(prometheus_text_writer& w, const leak_watch& watch);

// /debug/pprof/block and /debug/pprof/mutex: the wait profile and its lock
// waits (goro/inspect/block_profile.hpp), pprof or, with debug=1, text.
GORO_DECL void serve_wait_profile(const debug_request& req, debug_response& r, const char* name,
                                  std::string (*profile)(int));

GORO_DECL void serve_block_profile(const debug_request& req, debug_response& r);

GORO_DECL void serve_mutex_profile(const debug_request& req, debug_response& r);

// /debug/goro/leaks: the watch's report, as text (the debug=1 shape) or, with
// ?format=json, as JSON (goro::leak_watch::to_json).
GORO_DECL void serve_leaks(const leak_watch& w, const debug_request& req, debug_response& r);

GORO_DECL std::string render_metrics(const leak_watch* watch = nullptr);

GORO_DECL void serve_tasks_json(const debug_request&, debug_response& r);

GORO_DECL void serve_metrics(const debug_request&, debug_response& r);

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>


namespace goro::detail {

GORO_DECL std::optional<int> goroutine_debug_param(const debug_request& req) {
    auto v = req.param("debug");
    if (!v || v->empty()) return 0;
    if (*v == "0") return 0;
    if (*v == "1") return 1;
    if (*v == "2") return 2;
    return std::nullopt;
}

GORO_DECL void serve_goroutine_profile(const debug_request& req, debug_response& r) {
    auto bad = [&](std::string why) {
        r.status = 400;
        r.content_type = "text/plain; charset=utf-8";
        r.body = std::move(why);
    };
    std::optional<int> debug = goroutine_debug_param(req);
    if (!debug) {
        std::string_view raw = req.param("debug").value_or("");
        std::string shown = utf8_escaped(raw.substr(0, 32));
        if (raw.size() > 32) shown += "...";
        bad("invalid value of query parameter 'debug': \"" + shown +
            "\" (want 0 for the pprof protobuf, 1 for stacks grouped with counts, 2 for one "
            "stack per goroutine)\n");
        return;
    }
    // Go serves a delta profile for ?seconds=N, holding the request for N
    // seconds; one slow request would hold this server's only thread, so goro
    // says how to get the same answer instead of pretending.
    if (auto sec = req.param("seconds"); sec && !sec->empty() && *sec != "0") {
        bad("query parameter 'seconds' (a delta profile) is not supported: fetch the profile "
            "twice and compare with `go tool pprof -base first second`, or goro::diff\n");
        return;
    }
    if (*debug == 0) {
        r.content_type = "application/octet-stream";
        r.set_attachment("goroutine");
    } else {
        r.content_type = "text/plain; charset=utf-8";
    }
    // Written in blocks (debug_response::stream): a dump of many tasks is
    // never grown as one string.
    write_goroutine_profile(r.stream(), snapshot::take(), *debug);
}

GORO_DECL task_census take_task_census() {
    task_census c;
    // Wait reasons are static strings: count by pointer under the locks (no
    // allocation there beyond the rare new reason), merge by text afterwards.
    std::vector<std::pair<const char*, std::int64_t>> reasons;
    reasons.reserve(32);
    the_registry().for_each_locked([&](task_header& h) {
        ++c.total;
        switch (h.state.load(std::memory_order_relaxed)) {
        case task_state::waiting: {
            ++c.by_state[0];
            const char* why = h.wait_reason.load(std::memory_order_relaxed);
            if (!why) why = "unknown";
            auto it = std::find_if(reasons.begin(), reasons.end(),
                                   [&](const auto& p) { return p.first == why; });
            if (it != reasons.end()) ++it->second;
            else reasons.emplace_back(why, 1);
            break;
        }
        case task_state::runnable: ++c.by_state[1]; break;
        default: ++c.by_state[2]; break;
        }
    });
    for (const auto& [why, n] : reasons) {
        std::string_view text(why);
        auto it = std::find_if(c.by_reason.begin(), c.by_reason.end(),
                               [&](const auto& p) { return p.first == text; });
        if (it != c.by_reason.end()) it->second += n;
        else c.by_reason.emplace_back(std::string(text), n);
    }
    std::sort(c.by_reason.begin(), c.by_reason.end());
    return c;
}

GORO_DECL void render_leak_metrics(prometheus_text_writer& w, const leak_watch& watch) {
    const leak_report rep = watch.report();
    w.family("goro_leak_suspects", metric_type::gauge,
             "Groups of tasks (same stack and labels) that the leak watch sees growing (goro::leak_watch).");
    w.sample("goro_leak_suspects", static_cast<std::int64_t>(rep.suspects.size()));
    w.family("goro_leak_watch_samples_total", metric_type::counter, "Samples the leak watch has taken.");
    w.sample("goro_leak_watch_samples_total", rep.samples);
    w.family("goro_leak_suspect_growth_per_minute", metric_type::gauge,
             "Growth of a suspect group over the watch's window, in tasks per minute (the ten fastest).");
    std::vector<std::string> ids, sites;
    const std::size_t n = std::min<std::size_t>(rep.suspects.size(), 10);
    for (std::size_t i = 0; i < n; ++i) {
        const leak_group& g = rep.suspects[i];
        char b[20];
        ids.emplace_back(b, format_hex(b, g.key));
        sites.emplace_back(b, format_hex(b, g.site_ids.empty() ? 0 : g.site_ids[0]));
    }
    auto fn = [&](std::size_t i) -> std::string_view {
        return rep.suspects[i].frames.empty() ? std::string_view() : std::string_view(rep.suspects[i].frames[0].function);
    };
    for (std::size_t i = 0; i < n; ++i)
        w.sample("goro_leak_suspect_growth_per_minute", {{"group", ids[i]}, {"function", fn(i)}, {"site", sites[i]}},
                 rep.suspects[i].growth_per_minute);
    w.family("goro_leak_suspect_tasks", metric_type::gauge, "Tasks in a suspect group now (the ten fastest growing).");
    for (std::size_t i = 0; i < n; ++i)
        w.sample("goro_leak_suspect_tasks", {{"group", ids[i]}, {"function", fn(i)}, {"site", sites[i]}},
                 static_cast<std::int64_t>(rep.suspects[i].count));
}

GORO_DECL void serve_wait_profile(const debug_request& req, debug_response& r, const char* name,
                                  std::string (*profile)(int)) {
    auto d = req.param("debug");
    if (!d || d->empty() || *d == "0") {
        r.content_type = "application/octet-stream";
        r.set_attachment(name);
        r.body = profile(0);
    } else if (*d == "1") {
        r.content_type = "text/plain; charset=utf-8";
        r.body = profile(1);
    } else {
        r.status = 400;
        r.content_type = "text/plain; charset=utf-8";
        r.body = "invalid value of query parameter 'debug' (want 0 for the pprof protobuf, 1 for text)\n";
    }
}

GORO_DECL void serve_block_profile(const debug_request& req, debug_response& r) {
    serve_wait_profile(req, r, "block", [](int debug) { return block_profile(debug); });
}

GORO_DECL void serve_mutex_profile(const debug_request& req, debug_response& r) {
    serve_wait_profile(req, r, "mutex", [](int debug) { return mutex_profile(debug); });
}

GORO_DECL void serve_leaks(const leak_watch& w, const debug_request& req, debug_response& r) {
    auto f = req.param("format");
    if (f && *f == "json") {
        r.content_type = "application/json";
        r.body = w.report_json();
    } else if (!f || f->empty() || *f == "text") {
        r.content_type = "text/plain; charset=utf-8";
        r.body = w.report_text();
    } else {
        r.status = 400;
        r.content_type = "text/plain; charset=utf-8";
        r.body = "invalid value of query parameter 'format' (want text or json)\n";
    }
}

GORO_DECL std::string render_metrics(const leak_watch* watch) {
    std::string out;
    prometheus_text_writer w(out);
    const task_census c = take_task_census();
    w.family("goro_tasks", metric_type::gauge,
             "Tasks that exist now (goro::num_goroutines(): started and not finished, "
             "plus threads waiting in goro::block_on).");
    w.sample("goro_tasks", c.total);
    w.family("goro_tasks_by_state", metric_type::gauge, "Tasks by scheduling state.");
    w.sample("goro_tasks_by_state", {{"state", "waiting"}}, c.by_state[0]);
    w.sample("goro_tasks_by_state", {{"state", "runnable"}}, c.by_state[1]);
    w.sample("goro_tasks_by_state", {{"state", "running"}}, c.by_state[2]);
    w.family("goro_tasks_waiting", metric_type::gauge,
             "Waiting tasks by wait reason, in Go's words (\"chan receive\", \"select\", ...).");
    {
        // Largest first for the cut, then by name for a stable order.
        std::vector<std::pair<std::string, std::int64_t>> rs = c.by_reason;
        std::int64_t other = 0;
        if (rs.size() > max_reason_series) {
            std::stable_sort(rs.begin(), rs.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
            for (std::size_t i = max_reason_series - 1; i < rs.size(); ++i) other += rs[i].second;
            rs.resize(max_reason_series - 1);
            std::sort(rs.begin(), rs.end());
        }
        for (const auto& [reason, n] : rs) w.sample("goro_tasks_waiting", {{"reason", reason}}, n);
        if (other) w.sample("goro_tasks_waiting", {{"reason", "other"}}, other);
    }
    w.family("goro_tasks_started_total", metric_type::counter,
             "Tasks ever started (and block_on calls); minus goro_tasks, the number that finished.");
    w.sample("goro_tasks_started_total", the_registry().total_added());
    // Not the_scheduler(): a scrape must not start the pool as a side effect.
    std::int64_t workers = 0, idle = 0, queued = 0;
    if (pool_started()) {
        scheduler& s = the_scheduler();
        workers = static_cast<std::int64_t>(s.size());
        idle = s.idle_workers();
        queued = static_cast<std::int64_t>(s.global_queue_size());
    }
    w.family("goro_workers", metric_type::gauge,
             "Worker threads of the pool (GOMAXPROCS); 0 until the pool starts.");
    w.sample("goro_workers", workers);
    w.family("goro_workers_idle", metric_type::gauge, "Workers parked for lack of work.");
    w.sample("goro_workers_idle", idle);
    w.family("goro_global_queue_length", metric_type::gauge,
             "Runnable tasks in the global run queue (woken from outside the pool, or overflow).");
    w.sample("goro_global_queue_length", queued);
    const stuck_workers_info stuck = goro::stuck_workers();
    w.family("goro_stuck_workers", metric_type::gauge,
             "Workers running one task past the handoff threshold without a suspension (each replaced by another thread).");
    w.sample("goro_stuck_workers", static_cast<std::int64_t>(stuck.count));
    w.family("goro_stuck_longest_seconds", metric_type::gauge,
             "How long the longest-stuck worker has been running its task; 0 when none is stuck.");
    w.sample("goro_stuck_longest_seconds", std::chrono::duration<double>(stuck.longest).count());
    w.family("goro_build_info", metric_type::gauge, "The goro library version; the value is always 1.");
    w.sample("goro_build_info", {{"version", goro::version()}}, 1);
    if (watch) render_leak_metrics(w, *watch);
    return out;
}

GORO_DECL void serve_tasks_json(const debug_request&, debug_response& r) {
    r.content_type = "application/json";
    write_tasks_json(r.stream(), snapshot::take());
}

GORO_DECL void serve_metrics(const debug_request&, debug_response& r) {
    r.content_type = std::string(prometheus_content_type);
    r.body = render_metrics();
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_ROUTES_HPP
// ---- end goro/http/routes.hpp ----

namespace goro {

GORO_DECL debug_server::debug_server(options opts) {
    auto addr = detail::parse_bind_address(opts.address);
    if (!addr)
        throw std::invalid_argument("goro::debug_server: invalid address '" + opts.address +
                                    "' (want an IPv4 or IPv6 literal, or localhost)");
    if (!addr->loopback && !opts.allow_non_loopback)
        throw std::invalid_argument(
            "goro::debug_server: refusing to bind non-loopback address " + opts.address +
            ": goroutine dumps may expose internals; set "
            "goro::debug_server_options::allow_non_loopback = true to serve it anyway");
    for (char c : opts.bearer_token) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f)
            throw std::invalid_argument(
                "goro::debug_server: bearer_token must be visible ASCII without spaces");
    }
    if (opts.max_connections == 0 || opts.max_connections > (std::size_t{1} << 20))
        throw std::invalid_argument(
            "goro::debug_server: max_connections must be between 1 and 1048576");
    if (opts.shared_response_window.count() < 0)
        throw std::invalid_argument("goro::debug_server: shared_response_window must not be negative");
    if (opts.leak_watch_interval.count() < 0)
        throw std::invalid_argument("goro::debug_server: leak_watch_interval must not be negative");
    if (opts.max_requests_per_connection == 0)
        throw std::invalid_argument(
            "goro::debug_server: max_requests_per_connection must be at least 1");
    if (opts.read_timeout.count() <= 0 || opts.write_timeout.count() <= 0)
        throw std::invalid_argument("goro::debug_server: read_timeout and write_timeout must be positive");
    if (opts.limits.max_request_line < 16 || opts.limits.max_header_bytes < 16 ||
        opts.limits.max_request_line > (1u << 24) || opts.limits.max_header_bytes > (1u << 24))
        throw std::invalid_argument(
            "goro::debug_server: limits.max_request_line and limits.max_header_bytes must be "
            "between 16 bytes and 16 MiB");
    const bool defaults = opts.with_default_routes;
    if (opts.leak_watch_interval.count() > 0) {
        leak_watch_options wo;
        wo.interval = opts.leak_watch_interval;
        watch_ = std::make_shared<leak_watch>(wo);
    }
    state_ = std::make_unique<detail::debug_server_state>(std::move(opts), std::move(*addr));
    detail::debug_server_state* s = state_.get();
    // The state outlives the route (it owns it), so a raw pointer is safe.
    s->handle("/debug/pprof/", [s](const debug_request&, debug_response& r) {
        r.content_type = "text/html; charset=utf-8";
        r.body = s->render_index();
    });
    if (defaults) register_default_routes(*this);
}

GORO_DECL debug_server::~debug_server() = default;
GORO_DECL debug_server::debug_server(debug_server&&) noexcept = default;
GORO_DECL debug_server& debug_server::operator=(debug_server&&) noexcept = default;

GORO_DECL void debug_server::start() {
    state().start();
    if (watch_ && !watch_->running()) watch_->start();
}

GORO_DECL void debug_server::stop() {
    state().stop();
    if (watch_) watch_->stop();
}

GORO_DECL bool debug_server::running() const noexcept { return state_ && state_->running(); }

GORO_DECL std::uint16_t debug_server::port() const noexcept { return state_ ? state_->port() : 0; }

GORO_DECL std::string debug_server::url() const {
    const auto& a = state().address();
    std::string host = a.family == AF_INET6 ? "[" + a.text + "]" : a.text;
    return "http://" + host + ":" + std::to_string(port());
}

GORO_DECL const debug_server::options& debug_server::config() const { return state().options(); }

GORO_DECL debug_server_stats debug_server::stats() const { return state().stats(); }

GORO_DECL void debug_server::handle(std::string path, debug_handler handler) {
    state().handle(std::move(path), std::move(handler));
}

GORO_DECL void debug_server::handle(std::string path, debug_handler handler, debug_route_options route) {
    state().handle(std::move(path), std::move(handler), route);
}

GORO_DECL bool debug_server::remove_handler(std::string_view path) { return state().remove_handler(path); }

GORO_DECL void debug_server::add_profile(debug_profile profile) { state().add_profile(std::move(profile)); }

GORO_DECL void debug_server::add_index_link(std::string href, std::string text) {
    state().add_index_link(std::move(href), std::move(text));
}

GORO_DECL detail::debug_server_state& debug_server::state() const {
    if (!state_) throw std::logic_error("goro::debug_server: used after being moved from");
    return *state_;
}

GORO_DECL void register_default_routes(debug_server& server) {
    server.add_profile(debug_profile{
        "goroutine",
        "Stack traces of all current goroutines (goro tasks). Use debug=2 as a query parameter "
        "to export in the same format as an unrecovered panic.",
        [] { return num_goroutines(); },
        {},  // served below, with a shared response
    });
    server.handle("/debug/pprof/goroutine", detail::serve_goroutine_profile, {.share_response = true});
    server.add_index_link("goroutine?debug=2", "full goroutine stack dump");
    server.add_index_link("/debug/goro/tasks.json", "every task as JSON");
    server.add_index_link("/metrics", "Prometheus metrics");
    server.handle("/debug/goro/tasks.json", detail::serve_tasks_json, {.share_response = true});
    server.add_profile(debug_profile{
        "block",
        "Where tasks waited and for how long (the wait profile). Off by default: turn it on with "
        "goro::set_wait_profile_rate() (one wait in 100, and every wait of 100 ms or more; 1 records every "
        "wait). Use debug=1 for text.",
        [] { return static_cast<std::int64_t>(wait_profile_buckets().size()); },
        detail::serve_block_profile,
    });
    server.add_profile(debug_profile{
        "mutex",
        "Where tasks waited for goro::mutex, rw_mutex, once and semaphore (the wait profile's lock "
        "waits). On with the wait profile: goro::set_wait_profile_rate(). Use debug=1 for text.",
        [] {
            std::int64_t n = 0;
            for (const auto& b : wait_profile_buckets()) n += detail::is_lock_wait(b.reason);
            return n;
        },
        detail::serve_mutex_profile,
    });
    std::shared_ptr<leak_watch> w = server.watch();
    server.handle("/metrics", [w](const debug_request&, debug_response& r) {
        r.content_type = std::string(detail::prometheus_content_type);
        r.body = detail::render_metrics(w.get());
    });
    server.add_index_link("/debug/goro/", "live page: groups, leak suspects (auto-refresh)");
    server.handle("/debug/goro/", [w](const debug_request& req, debug_response& r) {
        r.content_type = "text/html; charset=utf-8";
        r.body = detail::render_live_page(w.get(), req);
    });
    server.handle("/debug/goro/group", detail::serve_live_group);
    if (w) {
        server.add_index_link("/debug/goro/leaks", "leak suspects (groups that keep growing)");
        server.handle("/debug/goro/leaks", [w](const debug_request& req, debug_response& r) {
            detail::serve_leaks(*w, req, r);
        });
        server.handle("/debug/goro/leaks/sample", [w](const debug_request& req, debug_response& r) {
            w->sample_now();
            detail::serve_leaks(*w, req, r);
        });
    }
}

}  // namespace goro

#endif  // GORO_BODIES

#endif  // GORO_HTTP_DEBUG_SERVER_HPP
// ---- end goro/http/debug_server.hpp ----

// ---- begin goro/io/poller.hpp ----
// goro/io/poller.hpp — the netpoller: tasks that wait for a file descriptor
// to become readable or writable, and the errors of goro's I/O.
//
//   co_await goro::wait_readable(fd);          // any non-blocking fd the caller owns
//   co_await goro::wait_writable(fd, ctx);     // ends with goro::io_error when ctx is done
//
// goro::net (goro/net/*.hpp) builds sockets on the same machinery. An I/O
// operation first tries its system call; only on EAGAIN does the task park,
// with wait reason "IO wait" and its whole stack, like any parked task: it is
// counted, dumped, grouped and profiled. Go's netpoller, in short.
//
// THE PIECES
//   poll_desc   one per registered descriptor, registered ONCE with epoll,
//               edge-triggered for every event (EPOLLIN | EPOLLOUT |
//               EPOLLRDHUP | EPOLLET). Two directions (read, write), each
//               with a list of parked waiters and a readiness sequence
//               number (`seq`, bumped by each event). Descriptors are
//               recycled, never freed, and carry a generation number that
//               the epoll event carries too (its top 16 bits; the address
//               below): an event or an operation that finds another
//               generation is about a descriptor since closed and is ignored
//               (an event) or fails as "use of closed network connection"
//               (an operation).
//   who polls  (1) A worker that finds no work polls epoll without blocking,
//               before it spins and again before it sleeps (the scheduler's
//               idle_poll_hook; Go's findrunnable calls netpoll(0) the same
//               way), and runs one woken task itself: a ping-pong over
//               loopback, where the peer's readiness is there as soon as
//               the write returns, never leaves the worker.
//               (2) One poller thread, started with the first registration,
//               sleeps in poll() on the epoll descriptor (it sees that
//               events are queued without taking them). When it wakes while
//               a worker is awake, it yields once so that the worker takes
//               them first; then it takes what is left and hands the woken
//               tasks to the pool with ready_n, as the timer thread does:
//               the global queue, and an idle worker woken. So a pool busy
//               with tasks that never run dry does not hold an I/O wake-up
//               back, an idle process does not spin, and since timers keep
//               their own thread, no timer waits behind epoll.
//               Measured (tcp_echo, 2 loaded cores): without (1), each
//               wake-up costs two thread hand-offs (poller thread, then a
//               worker): ~4x slower than Go; with (1) alone the poller
//               thread still took half the events; with the yield, ~99%
//               are taken by the workers.
//               NAPPING: once the poller thread finds that a worker took
//               the events it woke for, it stops waiting on the epoll
//               descriptor (where every event wakes it: on free cores, a
//               cross-core wake-up inside the writer's system call, twice
//               per ping-pong round trip, ~2 context switches per round
//               trip) and naps instead (1 ms), kept napping while the
//               workers' polls go on (a count they bump). A nap in which no
//               worker polled (they are all busy, or asleep) sends it back
//               to the descriptor, and the last worker to fall asleep ends
//               a nap at once (the scheduler's idle_sleep_hook; a
//               publish-then-check handshake with the nap). A missed
//               handshake would cost one nap, never an event: naps are
//               bounded. So a pool whose workers never run dry waits two
//               naps at most for readiness (Go: sysmon's 10 ms).
//
// EDGE-TRIGGERED READINESS, without a lost wake-up (Go's pdReady, made a count)
//   An operation reads `seq[d]` BEFORE its system call. An event in
//   direction d, under the descriptor's lock, bumps `seq[d]` and takes out
//   and wakes EVERY waiter parked in that direction: with an edge, nobody
//   can tell which of them the readiness is for (two tasks accepting on one
//   listener, two reading one stream), so each tries its call again and
//   parks again on EAGAIN. A task that got EAGAIN parks under the same
//   lock, unless `seq[d]` has moved since it read it: then it tries the call
//   again. So an edge that arrives between the system call and the park is
//   never lost, whoever else is parked or running meanwhile, and a task
//   parks without a stale flag's extra EAGAIN. (A flag set by an event, as
//   in Go, is enough for one waiter per direction, which Go's fdMutex
//   ensures; goro lets several tasks use a descriptor at once.)
//
// KNOWN EMPTY: a read that can tell it left nothing behind (a TCP stream's
//   recvmsg with TCP_INQ: bytes still queued, in a control message) marks
//   the descriptor drained at the sequence it read before the call
//   (`rdrained`). The next read that finds the read sequence still there
//   parks at once, without the read(2) that would say EAGAIN: anything that
//   arrived since raised an edge, which moved the sequence (an edge already
//   queued at the draining read is harvested after its sequence was read).
//   io_wait_op's check under the lock closes the gap between the test and
//   the park, as for an EAGAIN. A hang-up or error seen by an event
//   (`rhup`, sticky) turns the shortcut off: the end of a stream is no byte
//   in the queue, and only a read can report it. Saves one system call per
//   read that waits (a ping-pong: two per round trip).
//
// CLOSING (Go's fdMutex, with a lock instead of a state word)
//   Every operation holds a reference on its descriptor from its start to its
//   end (`desc_ref`), so the fd number is never closed under a running
//   system call (where a new socket could take the number and be read by
//   mistake). close() marks the descriptor closing and wakes every waiter
//   of both directions (they fail with io_errc::closed); whoever drops the
//   last reference unregisters and closes the fd and recycles the
//   descriptor (new generation).
//
// CANCELLATION: an operation given a `goro::context` registers a
//   std::stop_callback on the context's stop token while it parks; the
//   callback takes its own waiter out of its direction's list under the
//   descriptor's lock (the others stay parked) and wakes it, and the
//   operation fails with io_errc::canceled or io_errc::deadline_exceeded.
//   Nothing was transferred by the wait itself, so the descriptor stays open
//   and usable (a write_all reports in io_error::bytes_transferred() what it
//   wrote before it was stopped).
//
// THREAD SAFETY / LOCKS: a descriptor's lock is a leaf (nothing is taken
//   under it; tasks are woken after it is released) and is never taken under
//   another goro lock, so it is not in the rank table (as the HTTP server's
//   locks are not). The callbacks run on the poller thread, on whichever
//   thread cancels the context, and on the closing task's thread.
//
// DEADLOCK DETECTION: a task parked in IO wait may be woken by the world, so
//   while any waits, block_on's deadlock detector counts it as an external
//   wake-up guard (as Go never calls a program blocked on the network dead).

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>


namespace goro {

/// goro's own I/O error conditions (errno values use std::system_category).
enum class io_errc {
    eof = 1,            ///< the peer closed the stream before the bytes asked for arrived
    closed,             ///< use of a closed socket or descriptor (closed before or during the operation)
    canceled,           ///< the operation's context was cancelled
    deadline_exceeded,  ///< the operation's context passed its deadline
};

namespace detail {
class io_category_impl : public std::error_category {
public:
    const char* name() const noexcept override { return "goro.io"; }
    GORO_DECL std::string message(int c) const override;
};
}  // namespace detail

inline const std::error_category& io_category() noexcept {
    static const detail::io_category_impl c;
    return c;
}

inline std::error_code make_error_code(io_errc e) noexcept { return {static_cast<int>(e), io_category()}; }

}  // namespace goro

template <>
struct std::is_error_code_enum<goro::io_errc> : std::true_type {};

namespace goro {

/// The error of a failed I/O operation: what() reads "OPERATION: reason",
/// e.g. "goro::net::stream::read: Connection reset by peer"; code() is the
/// errno (std::system_category) or a goro::io_errc.
class io_error : public std::system_error {
public:
    io_error(std::error_code ec, const std::string& op, std::size_t transferred = 0)
        : std::system_error(ec, op), op_(op), transferred_(transferred) {}
    /// The operation that failed ("goro::net::stream::write_all").
    const std::string& op() const noexcept { return op_; }
    /// Bytes the operation moved before it failed (write_all, read_full).
    std::size_t bytes_transferred() const noexcept { return transferred_; }
    bool is_eof() const noexcept { return code() == io_errc::eof; }
    bool is_closed() const noexcept { return code() == io_errc::closed; }
    /// Cancelled or past the deadline of its context.
    bool is_canceled() const noexcept { return code() == io_errc::canceled || code() == io_errc::deadline_exceeded; }

private:
    std::string op_;
    std::size_t transferred_;
};

namespace detail {

[[noreturn]] inline void throw_errno(const std::string& op, int err, std::size_t transferred = 0) {
    throw io_error(std::error_code(err, std::system_category()), op, transferred);
}
[[noreturn]] inline void throw_io(io_errc e, const std::string& op, std::size_t transferred = 0) {
    throw io_error(make_error_code(e), op, transferred);
}

enum io_dir : unsigned char { io_read = 0, io_write = 1 };
enum class io_wake : unsigned char { none, ready, closed, canceled };

/// A parked operation's waiter, inside its awaiter (so in the parked task's
/// frame: a waker reads `next` and `task` before it wakes the task, after
/// which the waiter may be gone). All fields under the descriptor's lock;
/// `result` is written by the waker before it wakes the task.
struct io_waiter {
    task_header* task = nullptr;
    io_waiter* next = nullptr;  // the direction's list (while parked)
    io_wake result = io_wake::none;
    bool cancel_requested = false;
};

struct poll_desc {
    spinlock mu;
    int fd = -1;                   // constant while registered
    std::uint32_t gen = 0;         // bumped when recycled (the event carries its low 16 bits)
    int refs = 0;                  // operations in progress, plus the owner's
    bool closing = false;
    // Bumped under `mu` by each event of the direction; read by an operation
    // before its system call (see EDGE-TRIGGERED READINESS). 64 bits: never
    // wraps. Reset to 0 when registered.
    std::atomic<std::uint64_t> seq[2] = {0, 0};
    // KNOWN EMPTY: the read sequence at which a read last drained the
    // descriptor (never, ~0, when registered), and whether an event saw it
    // hung up or in error (set under `mu` before the sequence moves).
    std::atomic<std::uint64_t> rdrained{~std::uint64_t{0}};
    std::atomic<bool> rhup{false};
    io_waiter* waiter[2] = {nullptr, nullptr};  // heads of the parked waiters' lists
    poll_desc* next_free = nullptr;  // under the poller's free-list lock
};

inline constexpr std::uint64_t io_ptr_mask = (std::uint64_t{1} << 48) - 1;

inline std::uint64_t io_event_key(poll_desc* d, std::uint32_t gen) noexcept {
    return (reinterpret_cast<std::uintptr_t>(d) & io_ptr_mask) | (std::uint64_t(gen & 0xffff) << 48);
}

class poller {
public:
    static poller& get() {
        // Never destroyed: its thread outlives main (blocked in epoll_wait),
        // and tasks parked at exit keep pointing into its descriptors.
        static poller* p = new poller();
        return *p;
    }

    /// Registers `fd` (non-blocking) and returns its descriptor, holding the
    /// owner's reference; `*gen_out` is its generation. Throws io_error
    /// naming `op`; `fd` is then left open.
    poll_desc* open(int fd, const std::string& op, std::uint32_t* gen_out);

    /// Direction `dir`'s readiness sequence: read it before the system call
    /// whose EAGAIN may lead to an io_wait_op, and hand it to that.
    static std::uint64_t seq(poll_desc* d, io_dir dir) noexcept {
        return d->seq[dir].load(std::memory_order_acquire);
    }

    /// KNOWN EMPTY: a read that returned bytes and left none queued marks
    /// the descriptor drained at `seq`, the read sequence it read before
    /// its system call.
    static void mark_drained(poll_desc* d, std::uint64_t seq) noexcept {
        d->rdrained.store(seq, std::memory_order_relaxed);
    }
    /// True when a read would say EAGAIN: the last read drained the
    /// descriptor and no event came since (`seq` read just before), and
    /// no hang-up was seen. The caller then waits with io_wait_op{.., seq}.
    static bool known_empty(poll_desc* d, std::uint64_t seq) noexcept {
        return d->rdrained.load(std::memory_order_relaxed) == seq && !d->rhup.load(std::memory_order_relaxed);
    }

    /// Takes a reference for an operation; false when the descriptor is
    /// closing or was recycled (generation `gen` is gone).
    static bool acquire(poll_desc* d, std::uint32_t gen) noexcept;

    /// Drops a reference; the last one of a closing descriptor closes the fd.
    void release(poll_desc* d) noexcept;

    /// Marks the descriptor closing, wakes its waiters (they fail with
    /// io_errc::closed) and drops the owner's reference. False when it was
    /// closing already (or recycled).
    bool close(poll_desc* d, std::uint32_t gen) noexcept;

    /// WHO POLLS, napping: how long the poller thread leaves readiness to
    /// the workers before it looks itself (1 ms by default). For tests.
    void set_nap_interval(std::chrono::nanoseconds d) noexcept { nap_ns_.store(d.count(), std::memory_order_relaxed); }
    std::chrono::nanoseconds nap_interval() const noexcept {
        return std::chrono::nanoseconds(nap_ns_.load(std::memory_order_relaxed));
    }
    /// How many naps the poller thread has begun (for tests).
    std::uint64_t naps() const noexcept { return naps_.load(std::memory_order_relaxed); }

    /// Counts a parked waiter as an external wake-up guard for the
    /// deadlock detector (see DEADLOCK DETECTION); the waker uncounts it
    /// before it wakes the task.
    void guard() noexcept { watch_.external_guards.fetch_add(1, std::memory_order_acq_rel); }
    void unguard(std::size_t n) noexcept {
        if (n) watch_.external_guards.fetch_sub(static_cast<int>(n), std::memory_order_acq_rel);
    }

private:
    poller();

    poll_desc* take_free();
    void put_free(poll_desc* d) noexcept;

    void finish_close(poll_desc* d) noexcept;

    /// Descriptor locked: takes out direction `dir`'s whole list of waiters
    /// into `*list`, each with `result` set; returns how many there were.
    static std::size_t take_all(poll_desc* d, int dir, io_wake result, io_waiter** list) noexcept;

    /// Wakes the waiters of lists[0, nl) (taken out by take_all, under no
    /// lock now), handing them to the pool through `buf` (room for `cap`),
    /// or, with `keep_first`, returns the first task instead of readying it.
    /// Taken out, a waiter is the waker's alone (a cancel() no longer finds
    /// it) until its task is readied: so `next` and `task` are read before.
    static task_header* wake_all(io_waiter* const* lists, std::size_t nl, task_header** buf, std::size_t cap,
                                 bool keep_first) noexcept;

    /// Bumps the sequences of `n` events and takes their waiters' lists into
    /// `lists` (room for 2n); `*nl` is how many lists, and the result how
    /// many waiters, uncounted as guards already.
    std::size_t harvest(const epoll_event* evs, int n, io_waiter** lists, std::size_t* nl) noexcept;

    /// The scheduler's idle_poll_hook: a worker with nothing to run looks
    /// for ready descriptors without blocking, and runs one woken task
    /// itself: a ping-pong over loopback then never leaves the worker (the
    /// peer's readiness is there as soon as the write returns).
    static task_header* poll_now() noexcept;

    /// A worker of the pool is awake (not counted idle): it polls when it
    /// runs dry.
    static bool workers_awake() noexcept;

    /// The scheduler's idle_sleep_hook: a worker about to sleep, counted
    /// idle already (a seq_cst update, then a fence), ends the poller
    /// thread's nap when no worker is awake any more. The nap publishes
    /// `napping_` and fences before it looks at the idle count: so either
    /// the nap sees the pool idle and does not begin, or this sees the nap.
    /// (A miss would cost a nap's length, never a wake-up: see run().)
    static void before_idle_sleep() noexcept;

    /// Sleeps for the nap interval, or until the last awake worker goes to
    /// sleep (before_idle_sleep); returns at once when none is awake.
    void nap() noexcept;

    void run() noexcept;

    int epfd_ = -1;
    deadlock_watch& watch_;
    std::mutex free_mu_;
    poll_desc* free_ = nullptr;
    std::thread thread_;
    // WHO POLLS, napping. `polls_`: the workers' polls (poll_now), a count
    // the poller thread compares across a nap; its own line, as every
    // worker's poll writes it.
    alignas(cache_line) std::atomic<std::uint64_t> polls_{0};
    alignas(cache_line) std::atomic<bool> napping_{false};  // written under nap_mu_
    std::atomic<std::int64_t> nap_ns_{1'000'000};
    std::atomic<std::uint64_t> naps_{0};
    std::mutex nap_mu_;
    std::condition_variable nap_cv_;
};

/// An operation's reference on its descriptor (see CLOSING); throws
/// io_errc::closed naming `op` when the descriptor is closed.
class desc_ref {
public:
    desc_ref(poll_desc* d, std::uint32_t gen, const char* op) : d_(d) {
        if (!d || !poller::acquire(d, gen)) throw_io(io_errc::closed, op);
    }
    ~desc_ref() { poller::get().release(d_); }
    desc_ref(const desc_ref&) = delete;
    desc_ref& operator=(const desc_ref&) = delete;
    int fd() const noexcept { return d_->fd; }

private:
    poll_desc* d_;
};

/// An open, registered descriptor that this object owns (goro::net's
/// sockets hold one): closing it, or destroying it, closes the fd once no
/// operation uses it any more (see CLOSING). Move-only.
class registered_fd {
public:
    registered_fd() noexcept = default;
    /// Takes ownership of `fd` (made non-blocking here unless
    /// `set_nonblocking` is false); closes it and throws io_error naming
    /// `op` when it cannot be registered.
    registered_fd(int fd, const std::string& op, bool set_nonblocking = true);
    registered_fd(registered_fd&& o) noexcept : d_(std::exchange(o.d_, nullptr)), gen_(o.gen_) {}
    registered_fd& operator=(registered_fd&& o) noexcept;
    ~registered_fd() { close(); }

    /// Idempotent; wakes the operations parked on it (they fail with
    /// io_errc::closed). Safe while other tasks use the descriptor.
    void close() noexcept {
        if (d_) poller::get().close(d_, gen_);
    }
    bool is_open() const noexcept;
    poll_desc* desc() const noexcept { return d_; }
    std::uint32_t gen() const noexcept { return gen_; }

private:
    poll_desc* d_ = nullptr;
    std::uint32_t gen_ = 0;
};

/// Parks the current task until direction `dir` of `d` is ready (an event
/// since `seq`, the direction's sequence read before the system call that
/// said EAGAIN), the descriptor is closed, or `ctx` is done. Several tasks
/// may wait on one descriptor and direction at once. The caller holds a
/// desc_ref. Returns why it woke.
struct [[nodiscard("goro::io wait: co_await it")]] io_wait_op {
    using is_goro_awaiter = void;

    struct on_cancel {
        io_wait_op* self;
        void operator()() const noexcept { self->cancel(); }
    };

    poll_desc* d;
    std::uint32_t gen;
    io_dir dir;
    std::uint64_t seq;
    const context* ctx;
    const char* op;
    io_waiter w{};
    std::optional<std::stop_callback<on_cancel>> cb{};

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h);
    io_wake await_resume() noexcept {
        cb.reset();  // waits for a cancel() running on another thread
        return w.result;
    }

    void cancel() noexcept;
};

/// Turns a wake-up that was not readiness into the operation's error.
GORO_DECL void check_wake(io_wake r, const context* ctx, const char* op, std::size_t transferred = 0);

inline const context* ctx_or_null(const context& ctx) noexcept {
    return ctx == context{} ? nullptr : &ctx;
}

/// A task parked on a user-owned descriptor: registers a duplicate of it
/// (so the caller's own registrations, if any, are untouched), waits, and
/// unregisters by closing the duplicate.
template <int = 0>
task<> wait_fd(int fd, io_dir dir, context ctx, const char* op) {
    {
        pollfd p{fd, static_cast<short>(dir == io_read ? POLLIN : POLLOUT), 0};
        int r;
        do r = ::poll(&p, 1, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0) throw_errno(op, errno);
        if (p.revents & POLLNVAL) throw_errno(op, EBADF);
        if (r > 0) co_return;  // ready now: no registration
    }
    if (const context* c = ctx_or_null(ctx); c && c->is_done())
        throw_io(c->err() == context_error::deadline_exceeded ? io_errc::deadline_exceeded : io_errc::canceled, op);
    int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) throw_errno(op, errno);
    // The duplicate shares the open file, and with it the O_NONBLOCK flag,
    // which is the caller's: leave it (nothing is read or written here).
    registered_fd reg(dup, op, false);
    io_wake r;
    {
        desc_ref ref(reg.desc(), reg.gen(), op);
        // Sequence 0, as registered: an edge since (EPOLL_CTL_ADD reports
        // the readiness of the moment) is not lost.
        r = co_await io_wait_op{reg.desc(), reg.gen(), dir, 0, ctx_or_null(ctx), op};
    }
    check_wake(r, ctx_or_null(ctx), op);
}

}  // namespace detail

/// Parks the current task until `fd` (a non-blocking descriptor the caller
/// owns and keeps open meanwhile) is readable, has hung up or has an error
/// pending (tokio's AsyncFd::readable). Returns at once when it is already.
/// Throws goro::io_error when `ctx` is cancelled or past its deadline
/// (io_errc::canceled / deadline_exceeded) or `fd` is not open (EBADF).
/// Wait reason "IO wait". The descriptor is left as it was.
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::wait_readable: co_await it")]] inline task<> wait_readable(int fd, context ctx = {}) {
    return detail::wait_fd(fd, detail::io_read, std::move(ctx), "goro::wait_readable");
}

/// As wait_readable, for writability (tokio's AsyncFd::writable).
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::wait_writable: co_await it")]] inline task<> wait_writable(int fd, context ctx = {}) {
    return detail::wait_fd(fd, detail::io_write, std::move(ctx), "goro::wait_writable");
}

}  // namespace goro

#if GORO_BODIES
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace goro::detail {

GORO_DECL std::string io_category_impl::message(int c) const {
    switch (static_cast<io_errc>(c)) {
    case io_errc::eof: return "unexpected EOF";
    case io_errc::closed: return "use of closed network connection";
    case io_errc::canceled: return "context canceled";
    case io_errc::deadline_exceeded: return "context deadline exceeded";
    }
    return "unknown goro.io error";
}

GORO_DECL poll_desc* poller::open(int fd, const std::string& op, std::uint32_t* gen_out) {
    poll_desc* d = take_free();
    std::uint32_t gen;
    {
        std::lock_guard g(d->mu);
        d->fd = fd;
        d->refs = 1;
        d->closing = false;
        d->seq[0].store(0, std::memory_order_relaxed);
        d->seq[1].store(0, std::memory_order_relaxed);
        d->rdrained.store(~std::uint64_t{0}, std::memory_order_relaxed);
        d->rhup.store(false, std::memory_order_relaxed);
        d->waiter[0] = d->waiter[1] = nullptr;
        gen = d->gen;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = io_event_key(d, gen);
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int e = errno;
        {
            std::lock_guard g(d->mu);
            d->fd = -1;
            d->refs = 0;
            ++d->gen;
        }
        put_free(d);
        throw_errno(op + ": epoll_ctl", e);
    }
    *gen_out = gen;
    return d;
}

GORO_DECL bool poller::acquire(poll_desc* d, std::uint32_t gen) noexcept {
    std::lock_guard g(d->mu);
    if (d->gen != gen || d->closing) return false;
    ++d->refs;
    return true;
}

GORO_DECL void poller::release(poll_desc* d) noexcept {
    bool last;
    {
        std::lock_guard g(d->mu);
        last = --d->refs == 0 && d->closing;
    }
    if (last) finish_close(d);
}

GORO_DECL bool poller::close(poll_desc* d, std::uint32_t gen) noexcept {
    io_waiter* lists[2];
    std::size_t n = 0;
    bool last;
    {
        std::lock_guard g(d->mu);
        if (d->gen != gen || d->closing) return false;
        d->closing = true;
        for (int dir = 0; dir < 2; ++dir) n += take_all(d, dir, io_wake::closed, lists + dir);
        last = --d->refs == 0;
    }
    unguard(n);
    task_header* buf[16];
    wake_all(lists, 2, buf, 16, false);
    if (last) finish_close(d);
    return true;
}

GORO_DECL poller::poller() : watch_(the_deadlock_watch()) {
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) throw_errno("goro::io::poller: epoll_create1", errno);
    thread_ = std::thread([this] { run(); });
    thread_.detach();
    idle_sleep_hook.store(&poller::before_idle_sleep, std::memory_order_release);
    idle_poll_hook.store(&poller::poll_now, std::memory_order_release);
}

GORO_DECL poll_desc* poller::take_free() {
    {
        std::lock_guard g(free_mu_);
        if (poll_desc* d = free_) {
            free_ = d->next_free;
            d->next_free = nullptr;
            return d;
        }
    }
    return new poll_desc();
}

GORO_DECL void poller::put_free(poll_desc* d) noexcept {
    std::lock_guard g(free_mu_);
    d->next_free = free_;
    free_ = d;
}

GORO_DECL void poller::finish_close(poll_desc* d) noexcept {
    int fd;
    {
        std::lock_guard g(d->mu);
        fd = d->fd;
        d->fd = -1;
        ++d->gen;  // from here on, events and operations of the old generation are ignored
        d->closing = false;
    }
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);  // a dup of fd may live on: unregister explicitly
    ::close(fd);
    put_free(d);
}

GORO_DECL std::size_t poller::take_all(poll_desc* d, int dir, io_wake result, io_waiter** list) noexcept {
    std::size_t n = 0;
    for (io_waiter* w = d->waiter[dir]; w; w = w->next) {
        w->result = result;
        ++n;
    }
    *list = d->waiter[dir];
    d->waiter[dir] = nullptr;
    return n;
}

GORO_DECL task_header* poller::wake_all(io_waiter* const* lists, std::size_t nl, task_header** buf, std::size_t cap,
                                         bool keep_first) noexcept {
    task_header* first = nullptr;
    std::size_t k = 0;
    for (std::size_t i = 0; i < nl; ++i) {
        for (io_waiter* w = lists[i]; w;) {
            task_header* t = w->task;
            w = w->next;  // before `t` can run (its frame holds the waiter)
            if (keep_first && !first) {
                first = t;
                continue;
            }
            buf[k++] = t;
            if (k == cap) {
                ready_n(buf, k);
                k = 0;
            }
        }
    }
    if (k) ready_n(buf, k);
    return first;
}

GORO_DECL std::size_t poller::harvest(const epoll_event* evs, int n, io_waiter** lists, std::size_t* nl) noexcept {
    std::size_t k = 0;
    std::size_t l = 0;
    for (int i = 0; i < n; ++i) {
        auto* d = reinterpret_cast<poll_desc*>(static_cast<std::uintptr_t>(evs[i].data.u64 & io_ptr_mask));
        const std::uint32_t gen16 = static_cast<std::uint32_t>(evs[i].data.u64 >> 48);
        const std::uint32_t e = evs[i].events;
        const bool r = e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI);
        const bool w = e & (EPOLLOUT | EPOLLHUP | EPOLLERR);
        std::lock_guard g(d->mu);
        if ((d->gen & 0xffff) != gen16 || d->fd < 0) continue;  // a descriptor since closed
        if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) d->rhup.store(true, std::memory_order_relaxed);
        for (int dir = 0; dir < 2; ++dir) {
            if (!(dir == io_read ? r : w)) continue;
            d->seq[dir].fetch_add(1, std::memory_order_release);
            if (d->waiter[dir]) k += take_all(d, dir, io_wake::ready, lists + l++);
        }
    }
    *nl = l;
    unguard(k);
    return k;
}

GORO_DECL task_header* poller::poll_now() noexcept {
    poller& p = get();
    // Nobody parked in IO wait (each waiter counts as an external guard):
    // no system call. A miss only leaves an event to the poller thread.
    if (p.watch_.external_guards.load(std::memory_order_relaxed) == 0) return nullptr;
    constexpr int max_events = 64;
    epoll_event evs[max_events];
    int n = ::epoll_wait(p.epfd_, evs, max_events, 0);
    p.polls_.fetch_add(1, std::memory_order_relaxed);  // the poller thread naps while this moves
    if (n <= 0) return nullptr;
    io_waiter* lists[2 * max_events];
    std::size_t nl;
    if (p.harvest(evs, n, lists, &nl) == 0) return nullptr;
    task_header* buf[max_events];
    task_header* first = wake_all(lists, nl, buf, max_events, true);
    // Not through ready() (this worker runs it next): its wait is
    // recorded here (core/wait_profile.hpp; on a worker, so the parked clock).
    if (const std::int64_t rate = wait_profile_rate_n.load(std::memory_order_relaxed)) [[unlikely]]
        wait_profile_wake(first, rate, parked_clock().load(std::memory_order_relaxed));
    first->state.store(task_state::runnable, std::memory_order_relaxed);
    return first;
}

GORO_DECL bool poller::workers_awake() noexcept {
    scheduler* s = g_scheduler.load(std::memory_order_acquire);
    return s && s->idle_workers() < static_cast<int>(s->size());
}

GORO_DECL void poller::before_idle_sleep() noexcept {
    poller& p = get();
    if (!p.napping_.load(std::memory_order_seq_cst) || workers_awake()) return;
    {
        std::lock_guard g(p.nap_mu_);
        if (!p.napping_.load(std::memory_order_relaxed)) return;
        p.napping_.store(false, std::memory_order_relaxed);
    }
    p.nap_cv_.notify_one();
}

GORO_DECL void poller::nap() noexcept {
    std::unique_lock lk(nap_mu_);
    napping_.store(true, std::memory_order_seq_cst);
    seq_fence();
    if (workers_awake()) {
        naps_.fetch_add(1, std::memory_order_relaxed);
        nap_cv_.wait_for(lk, nap_interval(), [this] { return !napping_.load(std::memory_order_relaxed); });
    }
    napping_.store(false, std::memory_order_relaxed);
}

GORO_DECL void poller::run() noexcept {
    constexpr int max_events = 256;
    epoll_event evs[max_events];
    std::vector<io_waiter*> lists(2 * max_events);
    std::vector<task_header*> buf(max_events);
    bool napping = false;
    std::uint64_t seen_polls = 0;
    for (;;) {
        // NAPPING (see WHO POLLS): the workers took the last readiness
        // themselves, so this thread does not sleep on the epoll
        // descriptor, where each event would wake it (a cross-core
        // wake-up inside the writer's system call, per message of a
        // ping-pong) only to find the events taken. It looks again after
        // the nap, and goes back to waiting on the descriptor when no
        // worker polled meanwhile (all busy, or the pool went idle: then
        // the last worker to sleep ends the nap early). So readiness
        // waits a nap or two at most for a pool that does not run dry,
        // and nothing is ever left unharvested: the nap is bounded.
        if (napping) {
            nap();
            const std::uint64_t polls = polls_.load(std::memory_order_relaxed);
            if (polls != seen_polls && workers_awake()) {
                seen_polls = polls;
                continue;
            }
            napping = false;
        }
        // Wait for readiness without taking it (the epoll fd polls
        // readable while events are queued), and when a worker is awake
        // let it take them first: it runs the woken task at once
        // (poll_now), where from here the task would go through the
        // global queue and maybe a futex wake. Whatever is left after a
        // yield is taken here, so a pool busy with tasks that never run
        // dry does not hold an I/O wake-up back.
        pollfd pf{epfd_, POLLIN, 0};
        if (::poll(&pf, 1, -1) < 0) continue;
        const bool awake = workers_awake();
        if (awake) std::this_thread::yield();
        int n = ::epoll_wait(epfd_, evs, max_events, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            std::fprintf(stderr, "goro: netpoller: epoll_wait: %s\n", std::strerror(errno));
            std::abort();
        }
        if (n == 0 && awake) {  // a worker took them: leave the next ones to the workers
            napping = true;
            seen_polls = polls_.load(std::memory_order_relaxed);
            continue;
        }
        std::size_t nl;
        if (harvest(evs, n, lists.data(), &nl)) wake_all(lists.data(), nl, buf.data(), buf.size(), false);
    }
}

GORO_DECL registered_fd::registered_fd(int fd, const std::string& op, bool set_nonblocking) {
    int fl = set_nonblocking ? ::fcntl(fd, F_GETFL) : O_NONBLOCK;
    if (fl < 0 || (!(fl & O_NONBLOCK) && ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)) {
        int e = errno;
        ::close(fd);
        throw_errno(op + ": fcntl", e);
    }
    try {
        d_ = poller::get().open(fd, op, &gen_);
    } catch (...) {
        ::close(fd);
        throw;
    }
}

GORO_DECL registered_fd& registered_fd::operator=(registered_fd&& o) noexcept {
    if (this != &o) {
        close();
        d_ = std::exchange(o.d_, nullptr);
        gen_ = o.gen_;
    }
    return *this;
}

GORO_DECL bool registered_fd::is_open() const noexcept {
    if (!d_) return false;
    std::lock_guard g(d_->mu);
    return d_->gen == gen_ && !d_->closing;
}

GORO_DECL bool io_wait_op::await_suspend(std::coroutine_handle<> h) {
    w.task = current_task_or_throw(op);
    if (ctx) {
        std::stop_token tok = ctx->stop_token();
        if (tok.stop_possible()) cb.emplace(std::move(tok), on_cancel{this});  // may run cancel() at once
    }
    poller& p = poller::get();
    std::lock_guard g(d->mu);
    if (d->gen != gen || d->closing) {
        w.result = io_wake::closed;
        return false;
    }
    if (w.cancel_requested) {
        w.result = io_wake::canceled;
        return false;
    }
    if (d->seq[dir].load(std::memory_order_relaxed) != seq) {  // an edge since the system call
        w.result = io_wake::ready;
        return false;
    }
    park(w.task, h, wait_reason::io_wait);
    w.next = d->waiter[dir];
    d->waiter[dir] = &w;
    p.guard();
    return true;  // published: from here on a waker may resume the task
}

GORO_DECL void io_wait_op::cancel() noexcept {
    bool take = false;
    {
        std::lock_guard g(d->mu);
        for (io_waiter** pp = &d->waiter[dir]; *pp; pp = &(*pp)->next) {
            if (*pp == &w) {  // still parked: unlink it alone
                *pp = w.next;
                w.next = nullptr;
                w.result = io_wake::canceled;
                take = true;
                break;
            }
        }
        if (!take) w.cancel_requested = true;  // not parked yet, or woken already
    }
    if (take) {
        poller::get().unguard(1);
        ready(w.task);
    }
}

GORO_DECL void check_wake(io_wake r, const context* ctx, const char* op, std::size_t transferred) {
    if (r == io_wake::ready) return;
    if (r == io_wake::closed) throw_io(io_errc::closed, op, transferred);
    if (ctx && ctx->err() == context_error::deadline_exceeded) throw_io(io_errc::deadline_exceeded, op, transferred);
    throw_io(io_errc::canceled, op, transferred);
}

}  // namespace goro::detail
#endif  // GORO_BODIES
// ---- end goro/io/poller.hpp ----

// ---- begin goro/net/address.hpp ----
// goro/net/address.hpp — `goro::net::address`: an IPv4 or IPv6 socket address,
// and the "host:port" syntax every goro::net call takes (Go's net.JoinHostPort).
//
//   auto a = goro::net::address::parse("127.0.0.1:8080");
//   auto b = goro::net::address::parse("[::1]:0");
//   auto c = goro::net::address::parse(":8080");        // every interface (0.0.0.0)
//   auto d = goro::net::address::parse("localhost:80"); // 127.0.0.1
//   a.to_string() == "127.0.0.1:8080";  b.port();  b.family() == AF_INET6
//
// parse() takes numeric hosts and "localhost" only: it never blocks. Names
// are resolved by goro::net::resolve (goro/net/resolve.hpp), which
// goro::net::connect uses for a host that is not numeric.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <netinet/in.h>
#include <sys/socket.h>


namespace goro::net {

/// An IPv4 or IPv6 address and port (a sockaddr_in / sockaddr_in6).
class address {
public:
    address() noexcept = default;

    /// From a socket API's sockaddr (accept, getsockname, recvfrom).
    static address from(const sockaddr* sa, socklen_t len) noexcept;

    /// A host (numeric IPv4 or IPv6, or "localhost") and a port.
    static std::optional<address> from_host(std::string_view host, std::uint16_t port);

    /// "host:port", "[v6]:port" or ":port"; the host numeric or "localhost".
    /// Throws goro::usage_error naming `op` for anything else.
    static address parse(std::string_view host_port, const char* op = "goro::net::address::parse");

    /// Splits "host:port" ("[v6]:port"); false when there is no port.
    static bool split(std::string_view s, std::string_view& host, std::string_view& port) noexcept;

    static std::uint16_t parse_port(std::string_view port, std::string_view whole, const char* op);

    int family() const noexcept { return len_ ? storage_.ss_family : AF_UNSPEC; }
    bool empty() const noexcept { return len_ == 0; }

    std::uint16_t port() const noexcept;

    /// The numeric host, without brackets ("127.0.0.1", "::1").
    std::string host() const;

    /// "127.0.0.1:8080" or "[::1]:8080", which parse() reads back.
    std::string to_string() const;

    const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
    socklen_t size() const noexcept { return len_; }

    friend bool operator==(const address& a, const address& b) noexcept {
        return a.len_ == b.len_ && a.family() == b.family() && a.port() == b.port() && a.host() == b.host();
    }

private:
    sockaddr_storage storage_{};
    socklen_t len_ = 0;
};

}  // namespace goro::net

#if GORO_BODIES
#include <cstring>

#include <arpa/inet.h>

namespace goro::net {

GORO_DECL address address::from(const sockaddr* sa, socklen_t len) noexcept {
    address a;
    if (len > static_cast<socklen_t>(sizeof a.storage_)) len = sizeof a.storage_;
    std::memcpy(&a.storage_, sa, static_cast<std::size_t>(len));
    a.len_ = len;
    return a;
}

GORO_DECL std::optional<address> address::from_host(std::string_view host, std::uint16_t port) {
    std::string h(host);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    if (h.empty()) h = "0.0.0.0";
    if (h == "localhost") h = "127.0.0.1";
    address a;
    if (h.find(':') == std::string::npos) {
        sockaddr_in in{};
        in.sin_family = AF_INET;
        in.sin_port = htons(port);
        if (::inet_pton(AF_INET, h.c_str(), &in.sin_addr) != 1) return std::nullopt;
        std::memcpy(&a.storage_, &in, sizeof in);
        a.len_ = sizeof in;
    } else {
        sockaddr_in6 in6{};
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(port);
        if (::inet_pton(AF_INET6, h.c_str(), &in6.sin6_addr) != 1) return std::nullopt;
        std::memcpy(&a.storage_, &in6, sizeof in6);
        a.len_ = sizeof in6;
    }
    return a;
}

GORO_DECL address address::parse(std::string_view host_port, const char* op) {
    std::string_view host, port;
    if (!split(host_port, host, port))
        throw usage_error(std::string(op) + ": \"" + std::string(host_port) + "\" is not host:port");
    std::uint16_t p = parse_port(port, host_port, op);
    std::optional<address> a = from_host(host, p);
    if (!a)
        throw usage_error(std::string(op) + ": \"" + std::string(host) +
                          "\" is not a numeric IPv4 or IPv6 address (or localhost); use goro::net::resolve for names");
    return *a;
}

GORO_DECL bool address::split(std::string_view s, std::string_view& host, std::string_view& port) noexcept {
    std::size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (!host.empty() && host.front() == '[') {
        if (host.back() != ']') return false;
        host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string_view::npos) {
        return false;  // an IPv6 host must be bracketed
    }
    return true;
}

GORO_DECL std::uint16_t address::parse_port(std::string_view port, std::string_view whole, const char* op) {
    unsigned long v = 0;
    if (port.empty() || port.size() > 5) v = 70000;
    for (char c : port) {
        if (c < '0' || c > '9') {
            v = 70000;
            break;
        }
        v = v * 10 + static_cast<unsigned long>(c - '0');
    }
    if (v > 65535)
        throw usage_error(std::string(op) + ": bad port in \"" + std::string(whole) + "\" (want 0 to 65535)");
    return static_cast<std::uint16_t>(v);
}

GORO_DECL std::uint16_t address::port() const noexcept {
    if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    return 0;
}

GORO_DECL std::string address::host() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (family() == AF_INET)
        ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
    else if (family() == AF_INET6)
        ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf, sizeof buf);
    return buf;
}

GORO_DECL std::string address::to_string() const {
    if (family() == AF_INET6) return "[" + host() + "]:" + std::to_string(port());
    if (family() == AF_INET) return host() + ":" + std::to_string(port());
    return "";
}

}  // namespace goro::net
#endif  // GORO_BODIES
// ---- end goro/net/address.hpp ----

// ---- begin goro/net/resolve.hpp ----
// goro/net/resolve.hpp — `goro::net::resolve(host, port)`: host names to addresses.
//
//   std::vector<goro::net::address> all = co_await goro::net::resolve("example.com", 443);
//
// Numeric hosts and "localhost" are answered at once, without a lookup. A
// name is looked up with getaddrinfo, which blocks, so it runs through
// goro::blocking (io/blocking.hpp): the task parks in [syscall] meanwhile
// and no worker is held. A context cancelled or past its deadline ends the
// wait with io_errc::canceled / deadline_exceeded (the lookup itself cannot
// be interrupted; it finishes on its blocking thread and is dropped).

#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <sys/socket.h>


namespace goro::net {

namespace detail {

class gai_category_impl : public std::error_category {
public:
    const char* name() const noexcept override { return "getaddrinfo"; }
    GORO_DECL std::string message(int c) const override;
};

inline const std::error_category& gai_category() noexcept {
    static const gai_category_impl c;
    return c;
}

/// getaddrinfo, on a blocking thread: the addresses, or an error code.
struct lookup_result {
    std::vector<address> addrs;
    std::error_code error;
};

GORO_DECL lookup_result lookup(const std::string& host, std::uint16_t port);

}  // namespace detail

/// The addresses of `host` (IPv4 and IPv6), each with `port`. Throws
/// goro::io_error naming "goro::net::resolve" and the host when the name is
/// unknown (code() in the "getaddrinfo" category), or when `ctx` ends the wait.
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::net::resolve: co_await it")]] inline task<std::vector<address>> resolve(std::string host,
                                                                                           std::uint16_t port,
                                                                                           context ctx = {}) {
    static constexpr const char* op = "goro::net::resolve";
    if (std::optional<address> a = address::from_host(host, port)) co_return std::vector<address>{*a};
    if (ctx == context{}) {
        detail::lookup_result r = co_await goro::blocking([&] { return detail::lookup(host, port); });
        if (r.error) throw io_error(r.error, std::string(op) + " " + host);
        co_return std::move(r.addrs);
    }
    // With a context: the lookup runs in its own task, which outlives this
    // one if the context ends the wait first; its result arrives on a channel.
    channel<detail::lookup_result> done(1);
    go([](std::string h, std::uint16_t p, channel<detail::lookup_result> out) -> task<> {
        detail::lookup_result r = co_await goro::blocking([&] { return detail::lookup(h, p); });
        (void)out.try_send(std::move(r));  // capacity 1, one send: never full
    }(host, port, done));
    auto got = co_await select(recv(done), ctx.done());
    if (got.index() == 1)
        goro::detail::throw_io(ctx.err() == context_error::deadline_exceeded ? io_errc::deadline_exceeded
                                                                             : io_errc::canceled,
                               std::string(op) + " " + host);
    auto v = std::move(got.template get<0>());  // `template`: co_await makes got dependent here
    if (!v) goro::detail::throw_io(io_errc::closed, std::string(op) + " " + host);
    detail::lookup_result r = std::move(*v);
    if (r.error) throw io_error(r.error, std::string(op) + " " + host);
    co_return std::move(r.addrs);
}

}  // namespace goro::net

#if GORO_BODIES
#include <netdb.h>

namespace goro::net::detail {

GORO_DECL std::string gai_category_impl::message(int c) const { return ::gai_strerror(c); }

GORO_DECL lookup_result lookup(const std::string& host, std::uint16_t port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    addrinfo* res = nullptr;
    lookup_result out;
    int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (rc != 0) {
        out.error = rc == EAI_SYSTEM ? std::error_code(errno, std::system_category()) : std::error_code(rc, gai_category());
        return out;
    }
    for (addrinfo* p = res; p; p = p->ai_next)
        if (p->ai_family == AF_INET || p->ai_family == AF_INET6)
            out.addrs.push_back(address::from(p->ai_addr, p->ai_addrlen));
    ::freeaddrinfo(res);
    if (out.addrs.empty()) out.error = std::error_code(EAI_NONAME, gai_category());
    return out;
}

}  // namespace goro::net::detail
#endif  // GORO_BODIES
// ---- end goro/net/resolve.hpp ----

// ---- begin goro/net/tcp.hpp ----
// goro/net/tcp.hpp — TCP for goro tasks: `goro::net::listener` and `goro::net::stream`,
// after Go's net.Listener and net.TCPConn.
//
//   goro::task<> serve(goro::net::stream s) {           // one task per connection
//       char buf[512];
//       for (;;) {
//           std::size_t n = co_await s.read(buf, sizeof buf);
//           if (n == 0) co_return;                       // the peer closed
//           co_await s.write_all(buf, n);
//       }
//   }
//   goro::task<> server() {
//       auto ln = goro::net::listen("127.0.0.1:8080");
//       for (;;) {
//           goro::net::stream s = co_await ln.accept();  // not go(serve(co_await ...)):
//           goro::go(serve(std::move(s)));               // g++ 12 miscompiles that
//       }
//   }
//   auto s = co_await goro::net::connect("127.0.0.1:8080", ctx);
//
// Every operation that can wait is an awaitable: it tries its system call
// first and parks in "IO wait" only when the socket is not ready (see
// goro/io/poller.hpp). Each takes an optional goro::context:
//
// CANCELLATION AND DEADLINES: when the context is cancelled or passes its
//   deadline while the operation waits, the operation ends with goro::io_error
//   (code io_errc::canceled or io_errc::deadline_exceeded, is_canceled()). The
//   socket STAYS OPEN AND USABLE: a read consumed nothing; a write_all wrote
//   bytes_transferred() bytes of its buffer (the stream carries on from there);
//   a connect's socket is closed (there is no stream yet). A context that is
//   already done does not stop an operation that can complete without waiting.
//
// ERRORS: goro::io_error (a std::system_error) whose what() names the
//   operation and the reason ("goro::net::stream::read: Connection reset by
//   peer"); code() is the errno, or io_errc::closed for a socket closed before
//   or during the operation (close() wakes operations parked on it), or
//   io_errc::eof from read_full when the stream ends early. read() returns 0 at
//   the end of the stream, as read(2) does. Writes never raise SIGPIPE (a
//   write to a closed peer is an EPIPE or ECONNRESET io_error). Misuse (a bad
//   address string) is goro::usage_error.
//
// THREAD SAFETY: one task may read while another writes on the same stream,
//   and any task may close() it meanwhile; two concurrent reads (or two
//   writes) on one stream interleave their data, as in Go. A listener, stream
//   or socket object must outlive the operations started on it.

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>


namespace goro::net {

namespace detail {

using goro::detail::check_wake;
using goro::detail::ctx_or_null;
using goro::detail::desc_ref;
using goro::detail::io_read;
using goro::detail::io_wait_op;
using goro::detail::io_write;
using goro::detail::poller;
using goro::detail::registered_fd;
using goro::detail::throw_errno;
using goro::detail::throw_io;

/// A new non-blocking socket; throws io_error naming `op` (EMFILE and the like).
GORO_DECL int new_socket(int family, int type, const char* op);

/// Asks the kernel to say, with each read, how many bytes stay queued
/// (TCP_INQ; see recv_inq). Where it cannot, reads never find the socket
/// drained, and simply do not take the KNOWN EMPTY shortcut.
GORO_DECL void enable_inq(const registered_fd& r) noexcept;

/// recv(2) by recvmsg, which also brings TCP_INQ's count of the bytes left
/// queued: `*drained` is true when bytes were read and none are left (see
/// KNOWN EMPTY in goro/io/poller.hpp; the kernel counts a received FIN as
/// a byte left).
GORO_DECL ssize_t recv_inq(int fd, void* buf, std::size_t n, bool* drained) noexcept;

template <class F>
address sock_name(const registered_fd& r, F getname, const char* op) {
    desc_ref ref(r.desc(), r.gen(), op);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getname(ref.fd(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) throw_errno(op, errno);
    return address::from(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace detail

/// Which side(s) of a stream shutdown() ends.
enum class shutdown_how { read = SHUT_RD, write = SHUT_WR, both = SHUT_RDWR };

/// A TCP connection (Go's net.TCPConn). Move-only; closes on destruction.
/// TCP_NODELAY is on, as in Go.
class stream {
public:
    stream() noexcept = default;
    /// Adopts a connected socket (made non-blocking). Throws io_error.
    explicit stream(int fd) : r_(fd, "goro::net::stream") { detail::enable_inq(r_); }
    explicit stream(detail::registered_fd r) noexcept : r_(std::move(r)) { detail::enable_inq(r_); }

    /// Reads what is there, up to `n` bytes, waiting until at least one byte
    /// (or the end of the stream) arrives. Returns 0 at the end of the
    /// stream (and for n == 0).
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::read: co_await it")]] task<std::size_t> read(void* buf, std::size_t n,
                                                                                 context ctx = {}) {
        static constexpr const char* op = "goro::net::stream::read";
        detail::desc_ref ref(r_.desc(), r_.gen(), op);
        if (n == 0) co_return 0;  // as Go's Read (recv(2) of 0 bytes would wait for data)
        for (;;) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_read);
            if (!detail::poller::known_empty(r_.desc(), seq)) {  // else: EAGAIN for sure
                bool drained;
                ssize_t got = detail::recv_inq(ref.fd(), buf, n, &drained);
                if (got >= 0) {
                    if (drained) detail::poller::mark_drained(r_.desc(), seq);
                    co_return static_cast<std::size_t>(got);
                }
                const int e = errno;
                if (e == EINTR) continue;
                if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e);
            }
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_read, seq, detail::ctx_or_null(ctx), op}, detail::ctx_or_null(ctx), op);
        }
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::read: co_await it")]] task<std::size_t> read(std::span<std::byte> buf,
                                                                                 context ctx = {}) {
        return read(buf.data(), buf.size(), std::move(ctx));
    }

    /// Reads exactly `n` bytes (Go's io.ReadFull). At the end of the stream
    /// before that, throws io_error with io_errc::eof and
    /// bytes_transferred() the count read (the bytes are in `buf`).
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::read_full: co_await it")]] task<> read_full(void* buf, std::size_t n,
                                                                                context ctx = {}) {
        static constexpr const char* op = "goro::net::stream::read_full";
        detail::desc_ref ref(r_.desc(), r_.gen(), op);
        char* p = static_cast<char*>(buf);
        std::size_t done = 0;
        while (done < n) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_read);
            if (!detail::poller::known_empty(r_.desc(), seq)) {  // else: EAGAIN for sure
                bool drained;
                ssize_t got = detail::recv_inq(ref.fd(), p + done, n - done, &drained);
                if (got > 0) {
                    if (drained) detail::poller::mark_drained(r_.desc(), seq);
                    done += static_cast<std::size_t>(got);
                    continue;
                }
                if (got == 0) detail::throw_io(io_errc::eof, std::string(op) + " (" + std::to_string(done) + " of " + std::to_string(n) + " bytes)", done);
                const int e = errno;
                if (e == EINTR) continue;
                if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e, done);
            }
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_read, seq, detail::ctx_or_null(ctx), op}, detail::ctx_or_null(ctx), op,
                       done);
        }
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::read_full: co_await it")]] task<> read_full(std::span<std::byte> buf,
                                                                                context ctx = {}) {
        return read_full(buf.data(), buf.size(), std::move(ctx));
    }

    /// Writes all `n` bytes, waiting while the socket's buffer is full. On an
    /// error, bytes_transferred() says how many were written.
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::write_all: co_await it")]] task<> write_all(const void* buf, std::size_t n,
                                                                                context ctx = {}) {
        static constexpr const char* op = "goro::net::stream::write_all";
        detail::desc_ref ref(r_.desc(), r_.gen(), op);
        const char* p = static_cast<const char*>(buf);
        std::size_t done = 0;
        while (done < n) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_write);
            ssize_t put = ::send(ref.fd(), p + done, n - done, MSG_NOSIGNAL);
            if (put >= 0) {
                done += static_cast<std::size_t>(put);
                continue;
            }
            const int e = errno;
            if (e == EINTR) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e, done);
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_write, seq, detail::ctx_or_null(ctx), op}, detail::ctx_or_null(ctx), op,
                       done);
        }
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::write_all: co_await it")]] task<> write_all(std::string_view s,
                                                                                context ctx = {}) {
        return write_all(s.data(), s.size(), std::move(ctx));
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::stream::write_all: co_await it")]] task<> write_all(std::span<const std::byte> buf,
                                                                                context ctx = {}) {
        return write_all(buf.data(), buf.size(), std::move(ctx));
    }

    /// Ends one or both directions (Go's CloseWrite / CloseRead): after
    /// shutdown(write) the peer reads the end of the stream.
    void shutdown(shutdown_how how = shutdown_how::write);

    /// Closes the connection (idempotent). Operations parked on it end with
    /// io_errc::closed; the fd is closed once the last of them has.
    void close() noexcept { r_.close(); }
    bool is_open() const noexcept { return r_.is_open(); }

    address local_address() const { return detail::sock_name(r_, ::getsockname, "goro::net::stream::local_address"); }
    address peer_address() const { return detail::sock_name(r_, ::getpeername, "goro::net::stream::peer_address"); }

    /// Sets TCP_NODELAY (on by default).
    void set_no_delay(bool on);

    /// The socket's descriptor, valid while the stream is open (for
    /// setsockopt and the like; do not close it).
    int native_handle() const noexcept { return r_.desc() && r_.is_open() ? r_.desc()->fd : -1; }

private:
    detail::registered_fd r_;
};

/// Connects to `to` (Go's net.Dial("tcp", ...)). Throws io_error naming
/// "goro::net::connect" (ECONNREFUSED, ...; canceled / deadline_exceeded by `ctx`).
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::net::connect: co_await it")]] inline task<stream> connect(address to, context ctx = {}) {
    static constexpr const char* op = "goro::net::connect";
    if (to.empty()) throw usage_error(std::string(op) + ": empty address");
    detail::registered_fd r(detail::new_socket(to.family(), SOCK_STREAM, op), op);
    {
        detail::desc_ref ref(r.desc(), r.gen(), op);
        std::uint64_t seq = detail::poller::seq(r.desc(), detail::io_write);
        if (::connect(ref.fd(), to.data(), to.size()) != 0) {
            int e = errno;
            if (e != EINPROGRESS && e != EINTR) detail::throw_errno(op + (": " + to.to_string()), e);
            for (;;) {
                detail::check_wake(co_await detail::io_wait_op{r.desc(), r.gen(), detail::io_write, seq, detail::ctx_or_null(ctx), op},
                                   detail::ctx_or_null(ctx), op);
                seq = detail::poller::seq(r.desc(), detail::io_write);
                socklen_t len = sizeof e;
                if (::getsockopt(ref.fd(), SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
                if (e == EINPROGRESS || e == EALREADY || e == EINTR) continue;
                if (e != 0 && e != EISCONN) detail::throw_errno(op + (": " + to.to_string()), e);
                // A wake-up may be stale (a socket not yet connected polls
                // writable and hung up when registered): connected only if
                // it has a peer; else wait for the next edge.
                sockaddr_storage peer{};
                socklen_t plen = sizeof peer;
                if (::getpeername(ref.fd(), reinterpret_cast<sockaddr*>(&peer), &plen) == 0) break;
                if (errno != ENOTCONN) detail::throw_errno(op + (": " + to.to_string()), errno);
            }
        }
    }
    stream s(std::move(r));
    s.set_no_delay(true);
    co_return s;
}

/// Connects to "host:port"; a host that is not numeric (nor "localhost") is
/// resolved with goro::net::resolve, and each address tried in turn.
template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
[[nodiscard("goro::net::connect: co_await it")]] inline task<stream> connect(std::string host_port,
                                                                             context ctx = {}) {
    static constexpr const char* op = "goro::net::connect";
    std::string_view host, port;
    if (!address::split(host_port, host, port))
        throw usage_error(std::string(op) + ": \"" + host_port + "\" is not host:port");
    std::uint16_t p = address::parse_port(port, host_port, op);
    if (std::optional<address> a = address::from_host(host, p)) co_return co_await connect(*a, ctx);
    std::vector<address> all = co_await resolve(std::string(host), p, ctx);
    std::exception_ptr last;
    for (const address& a : all) {
        try {
            co_return co_await connect(a, ctx);
        } catch (const io_error& e) {
            if (e.is_canceled()) throw;
            last = std::current_exception();
        }
    }
    std::rethrow_exception(last);
}

/// A listening TCP socket (Go's net.TCPListener). Move-only; closes on destruction.
class listener {
public:
    listener() noexcept = default;
    explicit listener(detail::registered_fd r) noexcept : r_(std::move(r)) {}

    /// Waits for the next connection. Throws io_error: io_errc::closed once
    /// the listener is closed (close() wakes a parked accept), EMFILE when
    /// the process is out of descriptors (the connection stays queued).
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::listener::accept: co_await it")]] task<stream> accept(context ctx = {}) {
        static constexpr const char* op = "goro::net::listener::accept";
        detail::desc_ref ref(r_.desc(), r_.gen(), op);
        for (;;) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_read);
            int fd = ::accept4(ref.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                stream s(detail::registered_fd(fd, op));
                s.set_no_delay(true);
                co_return s;
            }
            const int e = errno;
            if (e == EINTR || e == ECONNABORTED) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e);
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_read, seq, detail::ctx_or_null(ctx), op}, detail::ctx_or_null(ctx), op);
        }
    }

    /// The address it listens on (the port chosen, after listening on port 0).
    address local_address() const { return detail::sock_name(r_, ::getsockname, "goro::net::listener::local_address"); }
    /// Stops listening (idempotent); a parked accept ends with io_errc::closed.
    void close() noexcept { r_.close(); }
    bool is_open() const noexcept { return r_.is_open(); }
    int native_handle() const noexcept { return r_.desc() && r_.is_open() ? r_.desc()->fd : -1; }

private:
    detail::registered_fd r_;
};

/// Listens on `at` (SO_REUSEADDR set, as Go does). Throws io_error naming
/// "goro::net::listen" (EADDRINUSE, EMFILE, ...).
GORO_DECL listener listen(const address& at, int backlog = 4096);

/// Listens on "host:port" (numeric host or "localhost"; ":port" for every
/// IPv4 interface; port 0 picks a free one: see local_address()).
inline listener listen(std::string_view host_port, int backlog = 4096) {
    return listen(address::parse(host_port, "goro::net::listen"), backlog);
}

}  // namespace goro::net

#if GORO_BODIES
#include <cstring>

#include <netinet/tcp.h>
#include <sys/uio.h>

#ifndef TCP_INQ  // Linux 4.18; older headers
#define TCP_INQ 36
#define TCP_CM_INQ TCP_INQ
#endif

namespace goro::net::detail {

GORO_DECL int new_socket(int family, int type, const char* op) {
    int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw_errno(std::string(op) + ": socket", errno);
    return fd;
}

GORO_DECL void enable_inq(const registered_fd& r) noexcept {
    if (!r.desc()) return;
    int one = 1;
    ::setsockopt(r.desc()->fd, IPPROTO_TCP, TCP_INQ, &one, sizeof one);
}

GORO_DECL ssize_t recv_inq(int fd, void* buf, std::size_t n, bool* drained) noexcept {
    iovec iov{buf, n};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    ssize_t got = ::recvmsg(fd, &m, 0);
    *drained = false;
    if (got > 0)
        for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
            if (c->cmsg_level == IPPROTO_TCP && c->cmsg_type == TCP_CM_INQ && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                int left;
                std::memcpy(&left, CMSG_DATA(c), sizeof left);
                *drained = left == 0;
            }
    return got;
}

}  // namespace goro::net::detail

namespace goro::net {

GORO_DECL void stream::shutdown(shutdown_how how) {
    static constexpr const char* op = "goro::net::stream::shutdown";
    detail::desc_ref ref(r_.desc(), r_.gen(), op);
    if (::shutdown(ref.fd(), static_cast<int>(how)) != 0) detail::throw_errno(op, errno);
}

GORO_DECL void stream::set_no_delay(bool on) {
    static constexpr const char* op = "goro::net::stream::set_no_delay";
    detail::desc_ref ref(r_.desc(), r_.gen(), op);
    int v = on ? 1 : 0;
    if (::setsockopt(ref.fd(), IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0) detail::throw_errno(op, errno);
}

GORO_DECL listener listen(const address& at, int backlog) {
    static constexpr const char* op = "goro::net::listen";
    if (at.empty()) throw usage_error(std::string(op) + ": empty address");
    detail::registered_fd r(detail::new_socket(at.family(), SOCK_STREAM, op), op);
    {
        detail::desc_ref ref(r.desc(), r.gen(), op);
        int one = 1;
        ::setsockopt(ref.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(ref.fd(), at.data(), at.size()) != 0)
            detail::throw_errno(std::string(op) + ": bind " + at.to_string(), errno);
        if (::listen(ref.fd(), backlog) != 0) detail::throw_errno(std::string(op) + ": listen " + at.to_string(), errno);
    }
    return listener(std::move(r));
}

}  // namespace goro::net
#endif  // GORO_BODIES
// ---- end goro/net/tcp.hpp ----

// ---- begin goro/net/udp.hpp ----
// goro/net/udp.hpp — UDP for goro tasks: `goro::net::udp_socket` (Go's net.UDPConn).
//
//   auto sock = goro::net::listen_udp("127.0.0.1:0");
//   co_await sock.send_to("ping", 4, peer);
//   char buf[1500];
//   auto [n, from] = co_await sock.recv_from(buf, sizeof buf, ctx);
//
// Cancellation, errors and closing work as for TCP (goro/net/tcp.hpp): a
// cancelled or timed-out operation leaves the socket open and usable.

#include <cerrno>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include <sys/socket.h>


namespace goro::net {

/// What recv_from received: its size and its sender.
struct datagram {
    std::size_t size = 0;
    address from;
};

/// A UDP socket bound to a local address. Move-only; closes on destruction.
class udp_socket {
public:
    udp_socket() noexcept = default;
    explicit udp_socket(detail::registered_fd r) noexcept : r_(std::move(r)) {}

    /// Sends one datagram of `n` bytes to `to`; waits while the socket's
    /// buffer is full.
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::udp_socket::send_to: co_await it")]] task<> send_to(const void* buf, std::size_t n,
                                                                                address to, context ctx = {}) {
        static constexpr const char* op = "goro::net::udp_socket::send_to";
        goro::detail::desc_ref ref(r_.desc(), r_.gen(), op);
        for (;;) {
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_write);
            ssize_t put = ::sendto(ref.fd(), buf, n, MSG_NOSIGNAL, to.data(), to.size());
            if (put >= 0) co_return;
            const int e = errno;
            if (e == EINTR) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(std::string(op) + " " + to.to_string(), e);
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_write, seq,
                                                           detail::ctx_or_null(ctx), op},
                               detail::ctx_or_null(ctx), op);
        }
    }
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::udp_socket::send_to: co_await it")]] task<> send_to(std::string_view s, address to,
                                                                                context ctx = {}) {
        return send_to(s.data(), s.size(), std::move(to), std::move(ctx));
    }

    /// Waits for one datagram; a longer one than `n` bytes is truncated.
    template <int = 0>  // compiled only where used (g++ emits every inline coroutine)
    [[nodiscard("goro::net::udp_socket::recv_from: co_await it")]] task<datagram> recv_from(void* buf, std::size_t n,
                                                                                            context ctx = {}) {
        static constexpr const char* op = "goro::net::udp_socket::recv_from";
        goro::detail::desc_ref ref(r_.desc(), r_.gen(), op);
        for (;;) {
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            const std::uint64_t seq = detail::poller::seq(r_.desc(), detail::io_read);
            ssize_t got = ::recvfrom(ref.fd(), buf, n, 0, reinterpret_cast<sockaddr*>(&ss), &len);
            if (got >= 0) co_return datagram{static_cast<std::size_t>(got), address::from(reinterpret_cast<sockaddr*>(&ss), len)};
            const int e = errno;
            if (e == EINTR) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) detail::throw_errno(op, e);
            detail::check_wake(co_await detail::io_wait_op{r_.desc(), r_.gen(), detail::io_read, seq,
                                                           detail::ctx_or_null(ctx), op},
                               detail::ctx_or_null(ctx), op);
        }
    }

    address local_address() const { return detail::sock_name(r_, ::getsockname, "goro::net::udp_socket::local_address"); }
    /// Closes the socket (idempotent); parked operations end with io_errc::closed.
    void close() noexcept { r_.close(); }
    bool is_open() const noexcept { return r_.is_open(); }
    int native_handle() const noexcept { return r_.desc() && r_.is_open() ? r_.desc()->fd : -1; }

private:
    detail::registered_fd r_;
};

/// A UDP socket bound to `at` (port 0: a free one; see local_address()).
GORO_DECL udp_socket listen_udp(const address& at);

/// listen_udp on "host:port" (numeric host or "localhost").
inline udp_socket listen_udp(std::string_view host_port) {
    return listen_udp(address::parse(host_port, "goro::net::listen_udp"));
}

}  // namespace goro::net

#if GORO_BODIES
namespace goro::net {

GORO_DECL udp_socket listen_udp(const address& at) {
    static constexpr const char* op = "goro::net::listen_udp";
    if (at.empty()) throw usage_error(std::string(op) + ": empty address");
    detail::registered_fd r(detail::new_socket(at.family(), SOCK_DGRAM, op), op);
    {
        goro::detail::desc_ref ref(r.desc(), r.gen(), op);
        if (::bind(ref.fd(), at.data(), at.size()) != 0)
            detail::throw_errno(std::string(op) + ": bind " + at.to_string(), errno);
    }
    return udp_socket(std::move(r));
}

}  // namespace goro::net
#endif  // GORO_BODIES
// ---- end goro/net/udp.hpp ----
// ---- end goro/goro.hpp ----
