// goro/core/hash_map.hpp: the open-addressing map behind the profiles,
// snapshots and dumps, checked against std::map on the operations goro uses.
#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <goro/core/hash_map.hpp>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_hash_map {

TEST_CASE("hash_map: try_emplace, find, operator[] agree with std::map through many growths", "[hash_map]") {
    goro::detail::hash_map<std::uint64_t, std::uint32_t> m;
    std::map<std::uint64_t, std::uint32_t> ref;
    CHECK(m.empty());
    CHECK(m.find(7) == m.end());
    std::uint64_t x = 88172645463325252ull;  // xorshift: keys with collisions in the low bits too
    for (std::uint32_t i = 0; i < 20000; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::uint64_t k = (i % 3 == 0) ? (x & 1023) : (i % 3 == 1 ? (x << 20) : x);  // small, low-zero, any
        auto [it, fresh] = m.try_emplace(k, i);
        auto [rit, rfresh] = ref.try_emplace(k, i);
        REQUIRE(fresh == rfresh);
        REQUIRE(it->first == k);
        REQUIRE(it->second == rit->second);
    }
    CHECK(m.size() == ref.size());
    for (const auto& [k, v] : ref) {
        auto it = m.find(k);
        REQUIRE(it != m.end());
        CHECK(it->second == v);
    }
    CHECK(m.find(0xdeadbeefcafef00dull) == m.end());
    m[0xdeadbeefcafef00dull] += 5;  // operator[] value-initialises
    CHECK(m.find(0xdeadbeefcafef00dull)->second == 5);
    CHECK(m.size() == ref.size() + 1);
    m.clear();
    CHECK(m.empty());
    CHECK(m.find(ref.begin()->first) == m.end());
    m[1] = 2;  // usable after clear
    CHECK(m.find(1)->second == 2);
}

TEST_CASE("hash_map: string, string_view and tuple keys; vector values; emplace keeps the first", "[hash_map]") {
    goro::detail::hash_map<std::string_view, std::int64_t> sv{{"", 0}};
    CHECK(sv.size() == 1);
    CHECK(sv.find("")->second == 0);
    CHECK_FALSE(sv.try_emplace(std::string_view(""), 9).second);
    CHECK(sv.try_emplace(std::string_view("a"), 1).second);

    goro::detail::hash_map<std::string, std::uint64_t> s;
    std::string key = "function";
    key.push_back('\0');
    key += "file.cpp";
    CHECK(s.try_emplace(std::move(key), 1).second);
    std::string again = "function";
    again.push_back('\0');
    again += "file.cpp";
    auto [it, fresh] = s.try_emplace(again, 2);
    CHECK_FALSE(fresh);
    CHECK(it->second == 1);
    CHECK(s.find("function") == s.end());  // the NUL is part of the key

    struct tuple_hash {
        std::size_t operator()(const std::tuple<const char*, int>& t) const noexcept {
            return std::hash<const void*>{}(std::get<0>(t)) ^ std::size_t(std::get<1>(t));
        }
    };
    static const char a[] = "a";
    goro::detail::hash_map<std::tuple<const char*, int>, int, tuple_hash> t;
    CHECK(t.emplace(std::make_tuple(a, 1), 10).first->second == 10);
    CHECK(t.emplace(std::make_tuple(a, 1), 20).first->second == 10);  // like std: the first stays
    CHECK(t.emplace(std::make_tuple(a, 2), 30).second);
    CHECK(t.size() == 2);

    goro::detail::hash_map<std::uint64_t, std::vector<std::size_t>> groups;
    for (std::size_t i = 0; i < 100; ++i) groups[i % 7].push_back(i);
    std::size_t total = 0;
    for (std::uint64_t k = 0; k < 7; ++k) total += groups.find(k)->second.size();
    CHECK(total == 100);
    CHECK(groups.find(3)->second.front() == 3);
}

}  // namespace tests_hash_map
