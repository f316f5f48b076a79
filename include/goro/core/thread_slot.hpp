// goro/core/thread_slot.hpp — one slot per thread, in a list every thread can walk.
//
//   struct alignas(cache_line) my_slot { std::atomic<long> n{0}; my_slot* next = nullptr; };
//   detail::thread_slots<my_slot>::mine().n.store(...);          // only this thread writes
//   for (auto* s = detail::thread_slots<my_slot>::first(); s; s = s->next) ...  // anyone reads
//
// For per-thread data that other threads read: counts summed by readers, or
// what a thread publishes about itself to the threads it synchronises with.
// A thread's slot is made on its first call to mine() and pushed on the front
// of the list (a CAS: push-only, so a walk never sees a slot removed). Slots
// are never freed: a reader may walk the list after a thread has ended, and a
// slot's address may serve as the thread's name. Each `Slot` type has its own
// list; it needs a `Slot* next` member, and its own thread-safety rules for
// the rest.
#pragma once

#include <atomic>

namespace goro::detail {

template <class Slot>
class thread_slots {
public:
    /// The newest slot; follow `next` for the others (acquire: a slot is
    /// seen fully constructed).
    static Slot* first() noexcept { return head_.load(std::memory_order_acquire); }

    /// This thread's slot, made on first use.
    [[gnu::always_inline]] static Slot& mine() {
        if (Slot* s = tls_) return *s;
        return make();
    }

private:
    [[gnu::noinline]] static Slot& make() {
        auto* s = new Slot();  // never freed (see above)
        Slot* h = head_.load(std::memory_order_relaxed);
        do s->next = h;
        while (!head_.compare_exchange_weak(h, s, std::memory_order_release, std::memory_order_relaxed));
        tls_ = s;
        return *s;
    }

    static inline std::atomic<Slot*> head_{nullptr};
    static inline thread_local constinit Slot* tls_ = nullptr;
};

}  // namespace goro::detail
