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
#include <ctime>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__)
#include <cpuid.h>
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
inline void detect_cpu_features() noexcept {
#if defined(__x86_64__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    bool prefetchw = __get_cpuid(0x80000001u, &a, &b, &c, &d) != 0 && (c & (1u << 8)) != 0;  // PRFCHW
    cpu_has_prefetchw.store(prefetchw, std::memory_order_relaxed);
#endif
}

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
inline bool asym_fence_available() noexcept {
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

inline void asym_fence_heavy() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
    constexpr int private_expedited = 1 << 3;  // MEMBARRIER_CMD_PRIVATE_EXPEDITED
    (void)::syscall(SYS_membarrier, private_expedited, 0, 0);
#endif
}

/// Monotonic time in nanoseconds from a clock that is cheap to read (a few ns,
/// millisecond-ish resolution): good enough for "parked for 5 minutes".
inline std::int64_t coarse_now_ns() noexcept {
    timespec ts;
#if defined(CLOCK_MONOTONIC_COARSE)
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

/// Monotonic time in nanoseconds, full resolution (same epoch as steady_clock on Linux).
inline std::int64_t now_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

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

}  // namespace detail
}  // namespace goro
