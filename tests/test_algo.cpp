// goro/core/algo.hpp: the runtime's sorts, binary search and find, checked
// against <algorithm> on random arrays with many equal keys (stability is
// seen through a second field that the comparison ignores).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <goro/core/algo.hpp>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_algo {

struct item {
    int key = 0;
    int order = 0;  // position before sorting: equal keys keep it ascending when stable
    friend bool operator==(const item&, const item&) = default;
};

std::vector<item> random_items(std::size_t n, int keys, unsigned seed) {
    std::vector<item> v(n);
    for (std::size_t i = 0; i < n; ++i) {
        seed = seed * 1103515245u + 12345u;
        v[i] = item{int((seed >> 8) % unsigned(keys)), int(i)};
    }
    return v;
}

TEST_CASE("algo: stable_sort agrees with std::stable_sort, equal keys in their order", "[algo]") {
    auto by_key = [](const item& a, const item& b) { return a.key < b.key; };
    for (std::size_t n : {0u, 1u, 2u, 15u, 16u, 17u, 31u, 32u, 33u, 100u, 1000u, 4097u})
        for (int keys : {1, 3, 50, 1000000}) {
            auto v = random_items(n, keys, unsigned(n * 31 + std::size_t(keys)));
            auto ref = v;
            std::stable_sort(ref.begin(), ref.end(), by_key);
            goro::detail::stable_sort(v.data(), v.data() + v.size(), by_key);
            CHECK(v == ref);
        }
}

TEST_CASE("algo: stable_sort moves strings without losing one", "[algo]") {
    std::vector<std::string> v;
    for (int i = 0; i < 300; ++i) v.push_back(std::string(40, char('a' + (i * 7) % 26)) + std::to_string(i));
    auto ref = v;
    std::sort(ref.begin(), ref.end());
    goro::detail::stable_sort(v.data(), v.data() + v.size(), [](const std::string& a, const std::string& b) { return a < b; });
    CHECK(v == ref);
}

TEST_CASE("algo: heap_sort sorts; equal keys all kept", "[algo]") {
    auto by_key = [](const item& a, const item& b) { return a.key < b.key; };
    for (std::size_t n : {0u, 1u, 2u, 3u, 10u, 64u, 1000u})
        for (int keys : {1, 5, 1000000}) {
            auto v = random_items(n, keys, unsigned(n + std::size_t(keys)));
            auto ref = v;
            goro::detail::heap_sort(v.data(), v.data() + v.size(), by_key);
            CHECK(std::is_sorted(v.begin(), v.end(), by_key));
            auto by_both = [](const item& a, const item& b) { return a.key != b.key ? a.key < b.key : a.order < b.order; };
            std::sort(v.begin(), v.end(), by_both);
            std::sort(ref.begin(), ref.end(), by_both);
            CHECK(v == ref);
        }
}

TEST_CASE("algo: sorted_contains and find", "[algo]") {
    std::vector<std::uint64_t> v{2, 3, 5, 7, 11, 13};
    for (std::uint64_t x = 0; x < 16; ++x)
        CHECK(goro::detail::sorted_contains(v, x) == std::binary_search(v.begin(), v.end(), x));
    CHECK_FALSE(goro::detail::sorted_contains(std::vector<std::uint64_t>{}, std::uint64_t(1)));
    CHECK(goro::detail::find(v.data(), v.data() + v.size(), std::uint64_t(7)) == v.data() + 3);
    CHECK(goro::detail::find(v.data(), v.data() + v.size(), std::uint64_t(8)) == v.data() + v.size());
}

}  // namespace tests_algo
