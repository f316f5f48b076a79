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
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>  // std::hash for the integers, strings and string views
#include <utility>

#include <goro/core/vec.hpp>

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
