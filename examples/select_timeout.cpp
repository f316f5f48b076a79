// select with a timeout: wait for a result, but not forever.
//   select {
//   case v := <-results: ...
//   case <-time.After(50 * time.Millisecond): ...
//   }
// A slow worker misses the deadline; a fast one makes it. try_select is
// Go's `default:` case: it never waits.
#include <chrono>
#include <cstdio>

#include <goro/goro.hpp>

using namespace std::chrono_literals;

namespace {

// [select]
goro::task<> worker(std::chrono::milliseconds delay, goro::channel<int> results) {
    co_await goro::sleep_for(delay);
    // Buffered by one: the send never blocks, even if nobody listens any more.
    co_await results.send(42);
}

goro::task<bool> ask(std::chrono::milliseconds delay) {
    goro::channel<int> results(1);
    goro::go(worker(delay, results));
    auto r = co_await goro::select(goro::recv(results), goro::after(50ms));
    if (r.index() == 0) {
        std::printf("worker (%lld ms): answered %d\n", static_cast<long long>(delay.count()), *r.get<0>());
        co_return true;
    }
    std::printf("worker (%lld ms): timed out\n", static_cast<long long>(delay.count()));
    co_return false;
}
// [/select]

}  // namespace

int main() {
    bool fast = goro::block_on(ask(1ms));
    bool slow = goro::block_on(ask(500ms));

    goro::channel<int> empty(1);
    auto polled = goro::try_select(goro::recv(empty));
    std::printf("non-blocking poll: %s\n", polled.index() == goro::select_default ? "nothing ready" : "got a value");
    return fast && !slow ? 0 : 1;
}
