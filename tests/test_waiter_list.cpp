// goro/core/waiter_list.hpp: FIFO order, splicing, and the wake-up of every
// waiter, each told before it is readied (the destructor's path). The
// primitives built on it (mutex, semaphore, wait_group) test its use.
#include <catch2/catch.hpp>

#include <atomic>
#include <coroutine>
#include <vector>

#include <goro/core/go.hpp>
#include <goro/core/spinlock.hpp>
#include <goro/core/waiter_list.hpp>

#include "support.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_waiter_list {

using goro_test::eventually;

namespace {

struct node {
    node* next = nullptr;
    goro::task_header* task = nullptr;
    int tag = 0;
    bool told = false;
};

/// A tiny primitive: tasks park on its list until `wake_destroyed`.
struct parking {
    goro::detail::spinlock lock;
    goro::detail::waiter_list<node> waiters;
    std::atomic<int> parked{0};

    struct awaiter {
        using is_goro_awaiter = void;
        parking& p;
        node n;
        bool await_ready() const noexcept { return false; }
        bool await_suspend(std::coroutine_handle<> h) {
            n.task = goro::detail::current_task_or_throw("parking::wait");
            goro::detail::park(n.task, h, "parking");
            std::lock_guard g(p.lock);
            p.waiters.push_back(n);
            p.parked.fetch_add(1);
            return true;
        }
        bool await_resume() const noexcept { return n.told; }
    };
    awaiter wait(int tag) { return awaiter{*this, node{nullptr, nullptr, tag, false}}; }
};

}  // namespace

TEST_CASE("waiter_list: FIFO, pop, splice and size", "[waiter_list]") {
    goro::detail::waiter_list<node> a, b;
    node n[5];
    for (int i = 0; i < 5; ++i) n[i].tag = i;
    CHECK(a.empty());
    CHECK(a.pop_front() == nullptr);
    a.push_back(n[0]);
    a.push_back(n[1]);
    b.push_back(n[2]);
    b.push_back(n[3]);
    a.splice_back(b);
    CHECK(b.empty());
    CHECK(a.size() == 4);
    CHECK(a.front() == &n[0]);
    std::vector<int> order;
    while (node* w = a.pop_front()) order.push_back(w->tag);
    CHECK(order == std::vector<int>{0, 1, 2, 3});
    CHECK(a.empty());
    a.push_back(n[4]);  // usable again after emptied
    CHECK(a.front() == &n[4]);
    CHECK(a.pop_front() == &n[4]);
    CHECK(a.empty());
}

TEST_CASE("waiter_list: wake_destroyed tells every parked task, then readies it", "[waiter_list]") {
    parking p;
    std::atomic<int> told{0};
    auto waiter = [](parking& p, int tag, std::atomic<int>& told) -> goro::task<> {
        if (co_await p.wait(tag)) told.fetch_add(1);
    };
    constexpr int n = 8;
    for (int i = 0; i < n; ++i) goro::go(waiter(p, i, told));
    REQUIRE(eventually([&] { return p.parked.load() == n; }));
    std::size_t counted = 0;
    goro::detail::wake_destroyed(p.waiters, p.lock, [&](node& w, std::size_t how_many) noexcept {
        w.told = true;
        counted = how_many;
    });
    CHECK(counted == n);
    CHECK(p.waiters.empty());
    REQUIRE(eventually([&] { return told.load() == n; }));
    CHECK(goro_test::tasks_drained());
}

}  // namespace tests_waiter_list
