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
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include <goro/core/vec.hpp>

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
