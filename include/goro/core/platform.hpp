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
#pragma once

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

#include <goro/core/linkage.hpp>

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
