// goro/core/pool.hpp: the frame allocator's size classes, alignment, reuse on
// one thread, and blocks handed over through the depot when a thread ends.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include <goro/core/pool.hpp>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_pool {

TEST_CASE("the frame pool hands out blocks of the requested class and takes them back", "[pool]") {
    using namespace goro::detail;
    // Every class's block is 8 short of a multiple of 16, so the general
    // allocator's 8-byte size word completes it; a request fits its block.
    for (std::size_t size = 1; size <= pool_max; ++size) {
        std::size_t cls = pool_class(size);
        REQUIRE(cls < pool_classes);
        REQUIRE(pool_block_size(cls) >= size);
        REQUIRE((pool_block_size(cls) + 8) % 16 == 0);
        REQUIRE((cls == 0 || pool_block_size(cls - 1) < size));
    }
    // Blocks are 16-byte aligned and usable to their end; a freed block is
    // reused by the next request of its class on this thread.
    std::vector<void*> blocks;
    for (std::size_t size : {1u, 24u, 88u, 184u, 185u, 1016u, 1017u, 5000u}) {
        void* p = pool_allocate(size);
        REQUIRE(reinterpret_cast<std::uintptr_t>(p) % 16 == 0);
        std::memset(p, 0xab, size);
        blocks.push_back(p);
    }
    std::size_t i = 0;
    for (std::size_t size : {1u, 24u, 88u, 184u, 185u, 1016u, 1017u, 5000u}) pool_free(blocks[i++], size);
#if GORO_POOL_ENABLED
    void* again = pool_allocate(184);
    CHECK(again == blocks[3]);
    pool_free(again, 184);
#endif
    // A thread that allocates and frees many blocks hands them to the depot
    // when it ends; another thread can then use them.
    std::thread([] {
        std::vector<void*> v;
        for (int k = 0; k < 1000; ++k) v.push_back(pool_allocate(200));
        for (void* p : v) pool_free(p, 200);
    }).join();
    std::vector<void*> w;
    for (int k = 0; k < 1000; ++k) w.push_back(pool_allocate(200));
    for (void* p : w) pool_free(p, 200);
}

}  // namespace tests_pool
