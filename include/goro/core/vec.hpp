// goro/core/vec.hpp — the runtime's own growable array, for its internal
// lists (the scheduler's worker lists and global queue, the timer heap, the
// hash map's slots, the deadlock watch's waiters).
//
//   detail::vec<worker*> idle;
//   idle.push_back(w);  for (worker* x : idle) ...;  idle.pop_back();
//
// Why not std::vector: every program that includes goro compiles the runtime,
// and at -O0 each std::vector<T> instantiates some fifty functions (the
// allocator, its traits, the relocation helpers, the iterator class), each
// compiled and emitted; vec<T> has a dozen, plain pointers as iterators.
// The public API keeps std::vector.
//
// The subset of std::vector the runtime uses, with its meaning: elements are
// contiguous, begin()/end() are pointers, growth doubles the capacity, and
// reallocating moves the elements (T's move constructor must not throw, so a
// failed allocation, the only thing that can throw, leaves the vec as it was).
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace goro::detail {

template <class T>
class vec {
    static_assert(std::is_nothrow_move_constructible_v<T>, "vec<T> moves elements when it grows");
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__, "vec<T> allocates with plain operator new");

public:
    using value_type = T;
    using iterator = T*;
    using const_iterator = const T*;

    vec() noexcept = default;
    /// n value-initialised elements.
    explicit vec(std::size_t n) { resize(n); }
    vec(const vec& o) {
        reserve(o.n_);
        for (std::size_t i = 0; i < o.n_; ++i) push_back(o.p_[i]);
    }
    vec(vec&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), cap_(std::exchange(o.cap_, 0)) {}
    /// Copy or move assignment (by value, then swap).
    vec& operator=(vec o) noexcept {
        swap(o);
        return *this;
    }
    ~vec() {
        clear();
        ::operator delete(p_);
    }

    std::size_t size() const noexcept { return n_; }
    bool empty() const noexcept { return n_ == 0; }
    std::size_t capacity() const noexcept { return cap_; }
    T* data() noexcept { return p_; }
    const T* data() const noexcept { return p_; }
    T* begin() noexcept { return p_; }
    T* end() noexcept { return p_ + n_; }
    const T* begin() const noexcept { return p_; }
    const T* end() const noexcept { return p_ + n_; }
    T& operator[](std::size_t i) noexcept { return p_[i]; }
    const T& operator[](std::size_t i) const noexcept { return p_[i]; }
    T& front() noexcept { return p_[0]; }
    T& back() noexcept { return p_[n_ - 1]; }
    const T& front() const noexcept { return p_[0]; }
    const T& back() const noexcept { return p_[n_ - 1]; }

    void reserve(std::size_t n) {
        if (n > cap_) reallocate(n);
    }
    template <class... A>
    T& emplace_back(A&&... a) {
        if (n_ == cap_) reallocate(cap_ ? cap_ * 2 : 4);
        T* e = ::new (static_cast<void*>(p_ + n_)) T(std::forward<A>(a)...);
        ++n_;
        return *e;
    }
    void push_back(const T& v) { emplace_back(v); }
    void push_back(T&& v) { emplace_back(std::move(v)); }
    void pop_back() noexcept { p_[--n_].~T(); }
    /// Removes *pos, moving the later elements down; returns pos.
    T* erase(T* pos) noexcept {
        for (T* q = pos; q + 1 != p_ + n_; ++q) *q = std::move(q[1]);
        pop_back();
        return pos;
    }
    /// Grows with value-initialised elements, or shrinks.
    void resize(std::size_t n) {
        if (n < n_) {
            while (n_ > n) pop_back();
            return;
        }
        reserve(n);
        while (n_ < n) emplace_back();
    }
    /// n copies of v, replacing the contents.
    void assign(std::size_t n, const T& v) {
        clear();
        reserve(n);
        while (n_ < n) emplace_back(v);
    }
    void clear() noexcept {
        while (n_ > 0) pop_back();
    }
    void swap(vec& o) noexcept {
        std::swap(p_, o.p_);
        std::swap(n_, o.n_);
        std::swap(cap_, o.cap_);
    }

private:
    void reallocate(std::size_t cap) {
        T* np = static_cast<T*>(::operator new(cap * sizeof(T)));
        for (std::size_t i = 0; i < n_; ++i) {
            ::new (static_cast<void*>(np + i)) T(std::move(p_[i]));
            p_[i].~T();
        }
        ::operator delete(p_);
        p_ = np;
        cap_ = cap;
    }

    T* p_ = nullptr;
    std::size_t n_ = 0;
    std::size_t cap_ = 0;
};

}  // namespace goro::detail
