// Compiled by the meson tests direction_compile_fail_N (tests/meson.build):
// case 0 must compile; every other case uses a channel view in the wrong
// direction and must not (Go's test/chan/perm.go).
#include <goro/sync/channel.hpp>
#include <goro/sync/select.hpp>

#ifndef GORO_WRONG
#define GORO_WRONG 0
#endif

int main() {
    goro::channel<int> ch(1);
    goro::recv_only<int> r = ch;
    goro::send_only<int> s = ch;
    (void)s.try_send(1);
    (void)r.try_recv();
#if GORO_WRONG == 1
    (void)r.try_send(1);  // send on a receive-only channel
#elif GORO_WRONG == 2
    r.close();  // close of a receive-only channel
#elif GORO_WRONG == 3
    (void)goro::try_select(goro::send(r, 1));  // a send case on a receive-only channel
#elif GORO_WRONG == 4
    (void)s.try_recv();  // receive from a send-only channel
#elif GORO_WRONG == 5
    goro::channel<int> back = r;  // a view does not convert back
    (void)back;
#elif GORO_WRONG == 6
    goro::recv_only<int> other = s;  // nor to the other direction
    (void)other;
#endif
    return 0;
}
