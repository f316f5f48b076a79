// goro/pool.hpp — recycling of coroutine frames and task headers.
//
// A task's frame and header are allocated by the thread that spawns it and
// usually freed by another (the worker that ran it last), so the general
// allocator's per-thread caches never help either side. This pool keeps
// freed blocks in per-thread lists by size class (64-byte steps up to 1 KiB)
// and moves them between threads in batches of 64 through a global depot, so
// a spawn and an exit each cost a few instructions on the fast path.
//
// Blocks larger than 1 KiB go to ::operator new. Memory in the pool is kept
// for reuse (like Go keeps exited goroutines' descriptors), up to a bound per
// size class in the depot; past it, batches go back to the general allocator.
// Under AddressSanitizer the pool is off, so use-after-free stays detectable.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>

#include <goro/platform.hpp>
#include <goro/spinlock.hpp>

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

inline constexpr std::size_t pool_step = 64;
inline constexpr std::size_t pool_classes = 16;  // 64 .. 1024 bytes
inline constexpr std::uint32_t pool_batch = 64;
inline constexpr std::size_t pool_depot_max_batches = 1024;  // per class: 64 Ki blocks

struct pool_block {
    pool_block* next;
    pool_block* next_batch;  // in the depot: the next batch
    std::uint32_t count;     // in the depot: blocks in this batch
};

struct pool_depot {
    spinlock lock;
    std::array<pool_block*, pool_classes> batches{};
    std::array<std::size_t, pool_classes> nbatches{};
};

inline pool_depot& the_pool_depot() noexcept {
    static pool_depot* d = new pool_depot();  // never freed: blocks may be returned at exit
    return *d;
}

struct pool_cache {
    std::array<pool_block*, pool_classes> head{};
    std::array<std::uint32_t, pool_classes> count{};
    bool registered = false;
};

inline thread_local constinit pool_cache tls_pool_cache{};

inline void pool_flush_class(pool_cache& c, std::size_t cls, std::uint32_t keep) noexcept;

/// Returns a thread's cached blocks to the depot when the thread exits.
struct pool_cache_owner {
    ~pool_cache_owner() {
        pool_cache& c = tls_pool_cache;
        for (std::size_t i = 0; i < pool_classes; ++i) pool_flush_class(c, i, 0);
    }
};

inline void pool_register_thread() {
    static thread_local pool_cache_owner owner;
    (void)owner;
    tls_pool_cache.registered = true;
}

/// Moves all but `keep` cached blocks of a class to the depot, a batch at a time.
inline void pool_flush_class(pool_cache& c, std::size_t cls, std::uint32_t keep) noexcept {
    pool_depot& d = the_pool_depot();
    while (c.count[cls] > keep) {
        std::uint32_t n = std::min(pool_batch, c.count[cls] - keep);
        pool_block* first = c.head[cls];
        pool_block* last = first;
        for (std::uint32_t i = 1; i < n; ++i) last = last->next;
        c.head[cls] = last->next;
        c.count[cls] -= n;
        last->next = nullptr;
        first->count = n;
        bool kept = false;
        {
            std::lock_guard<spinlock> g(d.lock);
            if (d.nbatches[cls] < pool_depot_max_batches) {
                first->next_batch = d.batches[cls];
                d.batches[cls] = first;
                ++d.nbatches[cls];
                kept = true;
            }
        }
        if (!kept) {
            for (pool_block* b = first; b;) {
                pool_block* nx = b->next;
                ::operator delete(static_cast<void*>(b));
                b = nx;
            }
        }
    }
}

inline void* pool_allocate(std::size_t size) {
#if GORO_POOL_ENABLED
    if (size != 0 && size <= pool_step * pool_classes) {
        std::size_t cls = (size - 1) / pool_step;
        pool_cache& c = tls_pool_cache;
        if (pool_block* b = c.head[cls]) {
            c.head[cls] = b->next;
            --c.count[cls];
            return b;
        }
        if (!c.registered) pool_register_thread();
        pool_depot& d = the_pool_depot();
        pool_block* batch = nullptr;
        {
            std::lock_guard<spinlock> g(d.lock);
            if ((batch = d.batches[cls])) {
                d.batches[cls] = batch->next_batch;
                --d.nbatches[cls];
            }
        }
        if (batch) {
            c.head[cls] = batch->next;
            c.count[cls] = batch->count - 1;
            return batch;
        }
        return ::operator new((cls + 1) * pool_step);
    }
#endif
    return ::operator new(size);
}

inline void pool_free(void* p, std::size_t size) noexcept {
#if GORO_POOL_ENABLED
    if (p && size != 0 && size <= pool_step * pool_classes) {
        std::size_t cls = (size - 1) / pool_step;
        pool_cache& c = tls_pool_cache;
        auto* b = static_cast<pool_block*>(p);
        b->next = c.head[cls];
        c.head[cls] = b;
        if (++c.count[cls] >= 2 * pool_batch) {
            if (!c.registered) pool_register_thread();
            pool_flush_class(c, cls, pool_batch);
        }
        return;
    }
#endif
    (void)size;
    ::operator delete(p);
}

}  // namespace goro::detail
