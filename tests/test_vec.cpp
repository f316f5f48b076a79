// goro/core/vec.hpp: the runtime's growable array, checked against
// std::vector on the operations goro uses, with a counted element type that
// proves each element is constructed and destroyed exactly once.
#include <catch2/catch.hpp>

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include <goro/core/vec.hpp>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_vec {

struct counted {
    static inline int live = 0;
    int v = 0;
    counted() noexcept { ++live; }
    explicit counted(int x) noexcept : v(x) { ++live; }
    counted(const counted& o) noexcept : v(o.v) { ++live; }
    counted(counted&& o) noexcept : v(o.v) { ++live; o.v = -1; }
    counted& operator=(const counted&) noexcept = default;
    counted& operator=(counted&& o) noexcept {
        v = o.v;
        o.v = -1;
        return *this;
    }
    ~counted() { --live; }
};

TEST_CASE("vec: push_back, erase, pop_back, resize agree with std::vector through many growths", "[vec]") {
    {
        goro::detail::vec<counted> v;
        std::vector<int> ref;
        CHECK(v.empty());
        unsigned x = 12345;
        for (int i = 0; i < 5000; ++i) {
            x = x * 1103515245u + 12345u;
            switch ((x >> 16) % 8) {
            case 0:
                if (!ref.empty()) {
                    std::size_t at = (x >> 8) % ref.size();
                    v.erase(v.begin() + at);
                    ref.erase(ref.begin() + static_cast<std::ptrdiff_t>(at));
                }
                break;
            case 1:
                if (!ref.empty()) {
                    v.pop_back();
                    ref.pop_back();
                }
                break;
            case 2: {
                std::size_t n = (x >> 4) % 64;
                v.resize(n);
                ref.resize(n);
                break;
            }
            default:
                v.push_back(counted(i));
                ref.push_back(i);
            }
            REQUIRE(v.size() == ref.size());
            REQUIRE(counted::live == static_cast<int>(v.size()));
        }
        for (std::size_t i = 0; i < ref.size(); ++i) CHECK(v[i].v == ref[i]);
        CHECK(v.capacity() >= v.size());
        CHECK(v.end() - v.begin() == static_cast<std::ptrdiff_t>(v.size()));
    }
    CHECK(counted::live == 0);
}

TEST_CASE("vec: copy, move, swap, assign, clear and the sized constructor", "[vec]") {
    goro::detail::vec<std::string> a;
    for (int i = 0; i < 100; ++i) a.emplace_back(std::to_string(i));
    goro::detail::vec<std::string> b = a;  // copy
    REQUIRE(b.size() == 100);
    CHECK(b[42] == "42");
    CHECK(b.front() == "0");
    CHECK(b.back() == "99");
    goro::detail::vec<std::string> c = std::move(a);
    CHECK(a.empty());
    CHECK(c.size() == 100);
    c.swap(a);
    CHECK(c.empty());
    CHECK(a[99] == "99");
    c = b;  // copy assignment
    CHECK(c.size() == 100);
    c = goro::detail::vec<std::string>();  // move assignment
    CHECK(c.empty());
    b.assign(3, "x");
    REQUIRE(b.size() == 3);
    CHECK((b[0] == "x" && b[2] == "x"));
    b.clear();
    CHECK(b.empty());
    goro::detail::vec<unsigned char> z(17);
    REQUIRE(z.size() == 17);
    for (unsigned char e : z) CHECK(e == 0);
    z.reserve(1000);
    CHECK(z.capacity() >= 1000);
    CHECK(z.size() == 17);
}

}  // namespace tests_vec
