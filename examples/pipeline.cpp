// A pipeline whose stages end by close: generate -> square -> sum.
// Each stage ranges over its input (`while (auto v = co_await in.recv())`,
// Go's `for v := range in`) and closes its output when the input is drained,
// so the end of the data flows down the pipeline and every task exits.
#include <cstdio>

#include <goro/goro.hpp>

namespace {

// [pipeline]
goro::task<> generate(int n, goro::channel<int> out) {
    for (int i = 1; i <= n; ++i) co_await out.send(i);
    out.close();
}

goro::task<> square(goro::channel<int> in, goro::channel<long> out) {
    while (auto v = co_await in.recv()) co_await out.send(long(*v) * *v);
    out.close();
}

goro::task<long> sum(goro::channel<long> in) {
    long total = 0;
    while (auto v = co_await in.recv()) total += *v;
    co_return total;
}

goro::task<long> run(int n) {
    goro::channel<int> numbers;        // unbuffered: each value is handed over
    goro::channel<long> squares(16);   // buffered: the squarer runs ahead
    goro::go(generate(n, numbers));
    goro::go(square(numbers, squares));
    co_return co_await sum(squares);
}
// [/pipeline]

}  // namespace

int main() {
    const int n = 1000;
    long total = goro::block_on(run(n));
    long expected = long(n) * (n + 1) * (2 * n + 1) / 6;
    std::printf("sum of squares 1..%d = %ld (%s)\n", n, total, total == expected ? "ok" : "WRONG");
    return total == expected ? 0 : 1;
}
