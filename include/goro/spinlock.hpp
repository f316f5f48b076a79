// goro/spinlock.hpp — a small test-and-test-and-set lock for critical sections
// of a few dozen instructions (a registry shard, a run queue's overflow, a
// channel). It spins with the pause hint, then yields the thread, so a holder
// that was descheduled does not burn a core forever. It satisfies Lockable.
#pragma once

#include <atomic>
#include <thread>

#include <goro/platform.hpp>

namespace goro::detail {

class spinlock {
public:
    void lock() noexcept {
        for (;;) {
            if (!locked_.exchange(true, std::memory_order_acquire)) return;
            int spins = 0;
            while (locked_.load(std::memory_order_relaxed)) {
                if (++spins < 64) cpu_relax();
                else std::this_thread::yield();
            }
        }
    }
    bool try_lock() noexcept {
        return !locked_.load(std::memory_order_relaxed) &&
               !locked_.exchange(true, std::memory_order_acquire);
    }
    void unlock() noexcept { locked_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> locked_{false};
};

}  // namespace goro::detail
