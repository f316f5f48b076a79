// goro/core/backoff.hpp — how a thread waits for another thread's short critical
// section: spin with the pause hint, then yield the thread.
//
//   detail::backoff b;
//   while (busy.load(std::memory_order_acquire)) b.pause();
//
// The waits it serves are a few dozen instructions long, so spinning usually
// ends them; past `spin_limit` pauses the other thread was probably
// descheduled inside, and yielding lets it run instead of burning the core.
// One object per wait: its count starts at zero.
//
// Nothing to test on its own (it only delays); the locks that use it
// (test_spinlock.cpp) are its tests.
#pragma once

#include <thread>

#include <goro/core/platform.hpp>

namespace goro::detail {

class backoff {
public:
    /// `spin_limit`: pauses before the first yield.
    explicit constexpr backoff(unsigned spin_limit = 64) noexcept : limit_(spin_limit) {}

    /// One step of the wait: a pause hint while the count is under the
    /// limit, a yield of the thread after.
    void pause() noexcept {
        if (++spins_ < limit_) cpu_relax();
        else std::this_thread::yield();
    }

private:
    unsigned spins_ = 0;
    unsigned limit_;
};

}  // namespace goro::detail
