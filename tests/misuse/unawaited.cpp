// Misuse the compilers must reject under -Werror (see check.py): an awaitable
// that is not awaited. Built once per GORO_MISUSE value; 0 is the correct
// form, which must compile, so a failure is the misuse's and not the setup's.
#include <chrono>

#include <goro/core/go.hpp>
#include <goro/sync/channel.hpp>
#include <goro/sync/mutex.hpp>

goro::task<> body(goro::mutex& m, goro::channel<int> ch) {
#if GORO_MISUSE == 0
    auto g = co_await m.scoped_lock();
    co_await goro::sleep_for(std::chrono::milliseconds(1));
    co_await ch.send(1);
    (void)g;
#elif GORO_MISUSE == 1
    auto g = m.scoped_lock();  // the operation, not a guard: locks nothing
#elif GORO_MISUSE == 2
    goro::sleep_for(std::chrono::milliseconds(1));  // sleeps nothing
#elif GORO_MISUSE == 3
    ch.send(1);  // sends nothing
#elif GORO_MISUSE == 4
    m.lock();  // locks nothing
#endif
    co_return;
}

int main() {}
