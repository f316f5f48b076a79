// The program every consumer project builds: the few lines a user writes
// first. It spawns a task, receives its value over an unbuffered channel and
// prints the goroutine dump (Go's debug=1 text) to stdout; run.sh checks the
// exit status and the dump's header line.
#include <goro/goro.hpp>

#include <iostream>

goro::task<> producer(goro::channel<int> ch) {
    co_await ch.send(42);
    ch.close();
}

int main() {
    goro::channel<int> ch;  // unbuffered
    goro::go(producer(ch));
    auto v = goro::block_on(ch.recv());  // std::optional<int>
    goro::dump_goroutines(std::cout, 1);
    return v == 42 ? 0 : 1;
}
