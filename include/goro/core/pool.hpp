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
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>

#include <goro/core/linkage.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/spinlock.hpp>

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
