// goro::wait_group's counter protocol (sync/wait_count.hpp) under the model
// checker (tests/model/model.hpp, x86-TSO): the protocol's own code,
// instantiated with model atomics, the project's spinlock on model atomics,
// and a node whose "park" is a wait for its wake flag. Each shape has 2 or 3
// threads (finishers, adders, waiters; one or two waits each) and is explored
// exhaustively within a preemption bound, then by deterministic random
// schedules, with the model's spin_on_loaded reduction (a parked waiter or a
// lock's spinner waits for a write to what it loaded; GORO_MODEL_SPIN_ALL=1
// turns it off). Under every schedule:
//   * no waiter stays parked (a waiter parked for good ends the execution
//     with the model's "every thread waits": a lost wake-up);
//   * no waiter returns before every done() it waits for (each finisher's
//     work, written before its done(), is seen by the waiter that returns);
//   * no done is lost and nothing is left behind: at the end the counter is
//     zero, no finisher is busy, nobody releases, no waiter is listed, and
//     `returning_` and `woken_` are empty;
//   * a group is reused after its wait (a second round on one group);
//   * the misuses are errors, with the counter left as it was: a done() below
//     zero (exactly one of two racing done()s of one add throws), an add()
//     at zero while the previous waiters have not returned (reuse too early),
//     and an add() racing the done() that reaches zero; and no such error
//     when the previous waiter has returned;
//   * the group may be destroyed by the first waiter to return: no finisher
//     and no other returning waiter touches it after that (every atomic of
//     the group checks it is still alive when it is used);
//   * the counts wrap at 2^32 as Go's do.
// The negative controls keep three broken variants of the protocol (the
// `Mutation` parameter of basic_wait_count) and require the checker to find
// their bug: a releaser that lets go of `releasing` without looking again
// (a waiter parked for good), a waiter that sees zero while a finisher is
// busy (the finisher then touches a group already destroyed), and a
// destructor that does not wait for a released waiter that has begun to
// return (that waiter then touches the destroyed group).
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include <goro/core/spinlock.hpp>
#include <goro/sync/wait_count.hpp>

#include "model/model.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_wait_count {

namespace {

// --- the group's atomics check that the group still exists ---------------------

bool group_gone = false;  // set when the model destroyed the group; reset by every setup

template <class T>
struct guarded_atomic : goro_model::atomic<T> {
    using base = goro_model::atomic<T>;
    using base::base;
    static void touch() {
        if (goro_model::detail::here() && group_gone) goro_model::check(false, "a step of the wait group after it was destroyed");
    }
    T load(std::memory_order o = std::memory_order_seq_cst) const {
        touch();
        return base::load(o);
    }
    void store(T v, std::memory_order o = std::memory_order_seq_cst) {
        touch();
        base::store(v, o);
    }
    T exchange(T v, std::memory_order o = std::memory_order_seq_cst) {
        touch();
        return base::exchange(v, o);
    }
    bool compare_exchange_strong(T& e, T d, std::memory_order a = std::memory_order_seq_cst,
                                 std::memory_order b = std::memory_order_seq_cst) {
        touch();
        return base::compare_exchange_strong(e, d, a, b);
    }
    bool compare_exchange_weak(T& e, T d, std::memory_order a = std::memory_order_seq_cst,
                               std::memory_order b = std::memory_order_seq_cst) {
        touch();
        return base::compare_exchange_weak(e, d, a, b);
    }
    T fetch_add(T d, std::memory_order o = std::memory_order_seq_cst) {
        touch();
        return base::fetch_add(d, o);
    }
    T fetch_sub(T d, std::memory_order o = std::memory_order_seq_cst) {
        touch();
        return base::fetch_sub(d, o);
    }
    T fetch_and(T m, std::memory_order o = std::memory_order_seq_cst) {
        touch();
        return base::fetch_and(m, o);
    }
};

struct guarded_policy : goro_model::policy {
    template <class U>
    using atomic = guarded_atomic<U>;
};

/// A waiter's node: "parked" until `woken`. Its own atomics are not the group's.
struct node {
    node* next = nullptr;
    node* rprev = nullptr;
    node* rnext = nullptr;
    bool released = false;
    goro_model::atomic<unsigned char> st{goro::detail::wait_node_pending};
    goro_model::atomic<bool> woken{false};
    void wake() { woken.store(true, std::memory_order_release); }  // the task is readied
};

template <int Mutation>
using counter = goro::detail::basic_wait_count<guarded_policy, goro::detail::basic_spinlock<guarded_policy>, node, Mutation>;

/// wait_group::wait_operation's steps: at_zero (await_ready), enqueue under
/// the lock (await_suspend), the park, returned (await_resume).
/// `parked` (if given) counts the waiter once it is linked.
template <class C>
void wait(C& c, node& n, goro_model::atomic<int>* parked = nullptr) {
    if (c.at_zero()) return;
    {
        std::lock_guard g(c.lock_);
        if (!c.enqueue(n)) return;
    }
    if (parked) parked->fetch_add(1, std::memory_order_acq_rel);
    while (!n.woken.load(std::memory_order_acquire)) goro_model::spin();
    if (n.released) c.returned(n);
}

/// ~wait_group's steps; after them the group is gone.
template <class C>
void destroy(C& c) {
    goro::detail::waiter_list<node> parked;
    c.destroy(parked);
    goro_model::check(parked.empty(), "the group was destroyed with waiters parked");
    group_gone = true;
}

template <class C>
std::string done_and_added(const C& c) {
    return "added " + std::to_string(c.added_.load()) + ", state " + std::to_string(c.state_.load()) +
           ", returning " + std::to_string(c.returning_.load());
}

/// At the end: counter zero, nobody busy or releasing, no waiter listed, nothing returning.
template <class C>
void check_clean(const C& c) {
    const std::uint64_t s = c.state_.load();
    goro_model::check(C::done_of(s) == C::low(c.added_.load()), "the counter is not zero at the end: " + done_and_added(c));
    goro_model::check((s & (C::busy_mask | C::releasing_bit | C::waiters_bit)) == 0,
                      "a finisher, a releaser or the waiters bit is left in the state: " + done_and_added(c));
    goro_model::check(c.returning_.load() == 0, "returning_ is not zero at the end: " + done_and_added(c));
    goro_model::check(c.waiters_.empty() && c.woken_ == nullptr, "a waiter is left in a list");
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

bool env_is_1(const char* name) {
    const char* v = std::getenv(name);
    return v && std::string(v) == "1";
}

/// GORO_MODEL_SPIN_ALL=1 in the environment: explore without the model's
/// spin_on_loaded reduction (a waiting thread then wakes at every write, not
/// only at a write to what it waits on). The reduction is what makes every
/// shape's exhaustive search at preemption bound 1 finish: without it the
/// shape "reuse before the other waiter returned" reaches the explorer's cap
/// of 2,000,000 schedules (260,387 with it), and "one finisher and two
/// waiters" takes 1,234,832 (21,140 with it).
bool spin_all() { return env_is_1("GORO_MODEL_SPIN_ALL"); }

goro_model::options bounded(int preemptions) {
    goro_model::options o;
    o.preemption_bound = preemptions;
    o.spin_on_loaded = !spin_all();
    return o;
}
goro_model::options randomly(std::uint64_t n, std::uint64_t seed) {
    goro_model::options o;
    o.random_schedules = n;
    o.seed = seed;
    o.spin_on_loaded = !spin_all();
    return o;
}

/// GORO_MODEL_DEEP=1 in the environment: the deep run, every shape also
/// explored exhaustively at preemption bound 1, which must finish within the
/// explorer's cap of 2,000,000 schedules (the largest shape takes about
/// 260,000; with GORO_MODEL_SPIN_ALL=1 one shape reaches the cap, which is
/// then reported, not failed), and 20,000 random schedules (minutes).
/// Otherwise the suite's run: exhaustive only for the shapes marked cheap (a
/// few thousand schedules each), and 500 random schedules each (seconds).
bool deep() { return env_is_1("GORO_MODEL_DEEP"); }

/// Runs `shape` exhaustively within preemption bound 1 (complete) where
/// `cheap` or in the deep run, then by random schedules. (Waiting threads
/// make the exhaustive count grow fast: every store re-enables a waiter, and
/// switching to it from a thread that waits is free.)
template <class Shape>
void explore_both(Shape shape, bool cheap = false) {
    goro_model::result r;
    if (cheap || deep()) {
        r = goro_model::explore(bounded(1), shape);
        INFO("exhaustive: " << goro_model::describe(r));
        REQUIRE_FALSE(r.failed);
        if (!spin_all()) REQUIRE(r.complete);
        else if (!r.complete) WARN("the exhaustive search stopped at its cap, " << goro_model::describe(r));
    }
    auto q = goro_model::explore(randomly(deep() ? 20000 : 500, 7), shape);
    INFO("random: " << goro_model::describe(q));
    REQUIRE_FALSE(q.failed);
    if (deep()) WARN("exhaustive: " << goro_model::describe(r) << "; random: " << goro_model::describe(q));
}

struct base_world {
    counter<0> c;
    node n[3];
    int work[3] = {};
    base_world() { group_gone = false; }
};

}  // namespace

TEST_CASE("wait count model: two finishers and a waiter; the waiter sees both works, nothing left", "[wait_count]") {
    explore_both([] {
        auto w = std::make_shared<base_world>();
        w->c.add(2);
        for (int i = 0; i < 2; ++i)
            goro_model::thread([w, i] {
                w->work[i] = 1;
                w->c.finish(1, "done");
            });
        goro_model::thread([w] {
            wait(w->c, w->n[0]);
            goro_model::check(w->work[0] && w->work[1], "a waiter returned before every done()");
        });
        goro_model::finally([w] { check_clean(w->c); });
    }, true);
}

TEST_CASE("wait count model: one finisher and two waiters; both return after the done", "[wait_count]") {
    explore_both([] {
        auto w = std::make_shared<base_world>();
        w->c.add(1);
        goro_model::thread([w] {
            w->work[0] = 1;
            w->c.finish(1, "done");
        });
        for (int i = 0; i < 2; ++i)
            goro_model::thread([w, i] {
                wait(w->c, w->n[i]);
                goro_model::check(w->work[0] == 1, "a waiter returned before the done()");
            });
        goro_model::finally([w] { check_clean(w->c); });
    });
}

TEST_CASE("wait count model: a task that adds for a child before its own done keeps the waiter parked", "[wait_count]") {
    // The hint is stale here (it says 0 while 1 and then 2 were added): the
    // done()s must find the added count themselves.
    explore_both([] {
        struct world : base_world {
            goro_model::atomic<bool> spawned{false};
        };
        auto w = std::make_shared<world>();
        w->c.add(1);
        goro_model::thread([w] {
            w->c.add(1);  // the child's
            w->spawned.store(true, std::memory_order_release);
            w->work[0] = 1;
            w->c.finish(1, "done");
        });
        goro_model::thread([w] {
            while (!w->spawned.load(std::memory_order_acquire)) goro_model::spin();
            w->work[1] = 1;
            w->c.finish(1, "done");
        });
        goro_model::thread([w] {
            wait(w->c, w->n[0]);
            goro_model::check(w->work[0] && w->work[1], "a waiter returned before every done()");
        });
        goro_model::finally([w] { check_clean(w->c); });
    }, true);
}

TEST_CASE("wait count model: the counts wrap at 2^32 as Go's", "[wait_count]") {
    explore_both([] {
        auto w = std::make_shared<base_world>();
        w->c.added_.store(0xffff'ffffull);  // outside a model thread: straight to memory
        w->c.state_.store(0xffff'ffffull << 32);
        w->c.hint_.store(0xffff'ffffu);
        w->c.add(2);
        for (int i = 0; i < 2; ++i)
            goro_model::thread([w, i] {
                w->work[i] = 1;
                w->c.finish(1, "done");
            });
        goro_model::thread([w] {
            wait(w->c, w->n[0]);
            goro_model::check(w->work[0] && w->work[1], "a waiter returned before every done()");
        });
        goro_model::finally([w] {
            check_clean(w->c);
            goro_model::check(w->c.count() == 0, "the counter is not zero after the wrap");
        });
    }, true);
}

TEST_CASE("wait count model: the group is reused after its wait returned", "[wait_count]") {
    // Round 1: one done; the waiter returns, adds for round 2 (never a
    // misuse: it is the only waiter, and it has returned), lets the finisher
    // go again, and waits for round 2.
    explore_both([] {
        struct world : base_world {
            goro_model::atomic<bool> round2{false};
        };
        auto w = std::make_shared<world>();
        w->c.add(1);
        goro_model::thread([w] {
            w->work[0] = 1;
            w->c.finish(1, "done");
            while (!w->round2.load(std::memory_order_acquire)) goro_model::spin();
            w->work[1] = 1;
            w->c.finish(1, "done");
        });
        goro_model::thread([w] {
            wait(w->c, w->n[0]);
            goro_model::check(w->work[0] == 1, "round 1: the waiter returned before the done()");
            try {
                w->c.add(1);
            } catch (const goro::usage_error& e) {
                goro_model::check(false, std::string("a reuse after the only wait returned was refused: ") + e.what());
                return;
            }
            w->round2.store(true, std::memory_order_release);
            wait(w->c, w->n[1]);
            goro_model::check(w->work[1] == 1, "round 2: the waiter returned before the done()");
        });
        goro_model::finally([w] { check_clean(w->c); });
    }, true);
}

TEST_CASE("wait count model: reuse before the other waiter returned is an error, the counter unchanged", "[wait_count]") {
    // Go: "WaitGroup is reused before previous Wait has returned". Waiter 0
    // adds for a second round as soon as it returns; waiter 1 may not have
    // returned yet. Then add() throws (the counter stays zero) and no round
    // 2 happens; if waiter 1 had returned before the add began, add() must
    // not throw. Either way nobody stays parked and nothing is left.
    static int threw = 0, reused = 0;
    threw = reused = 0;
    explore_both([] {
        struct world : base_world {
            goro_model::atomic<int> round2{0};  // 1: go on with round 2; 2: there is none
            bool w1_returned = false;
        };
        auto w = std::make_shared<world>();
        w->c.add(1);
        goro_model::thread([w] {
            w->work[0] = 1;
            w->c.finish(1, "done");
            int r;
            while ((r = w->round2.load(std::memory_order_acquire)) == 0) goro_model::spin();
            if (r == 1) {
                w->work[1] = 1;
                w->c.finish(1, "done");
            }
        });
        goro_model::thread([w] {
            wait(w->c, w->n[0]);
            const bool other_returned = w->w1_returned;
            try {
                w->c.add(1);
            } catch (const goro::usage_error& e) {
                const std::string what = e.what();
                goro_model::check(!other_returned, "add() refused a reuse after every waiter returned: " + what);
                goro_model::check(contains(what, "goro::wait_group::add: ") &&
                                      (contains(what, "reused before the previous wait has returned") ||
                                       contains(what, "concurrently with wait")),
                                  "the misuse's message: " + what);
                goro_model::check(w->c.count() == 0, "the refused add() changed the counter");
                ++threw;
                w->round2.store(2, std::memory_order_release);
                return;
            }
            ++reused;
            w->round2.store(1, std::memory_order_release);
            wait(w->c, w->n[2]);
            goro_model::check(w->work[1] == 1, "round 2: the waiter returned before the done()");
        });
        goro_model::thread([w] {
            wait(w->c, w->n[1]);
            goro_model::check(w->work[0] == 1, "waiter 1 returned before the done()");
            w->w1_returned = true;
        });
        goro_model::finally([w] { check_clean(w->c); });
    });
    INFO("add() threw in " << threw << " executions, reused the group in " << reused);
    CHECK(threw > 0);
    CHECK(reused > 0);
}

TEST_CASE("wait count model: an add racing the done that reaches zero: an error or none, nobody left parked",
          "[wait_count]") {
    // Go: "Add called concurrently with Wait". The adder does its done()
    // only when its add() was accepted.
    static int threw = 0;
    threw = 0;
    explore_both([] {
        auto w = std::make_shared<base_world>();
        w->c.add(1);
        goro_model::thread([w] { w->c.finish(1, "done"); });
        goro_model::thread([w] {
            try {
                w->c.add(1);
            } catch (const goro::usage_error& e) {
                const std::string what = e.what();
                goro_model::check(contains(what, "goro::wait_group::add: ") &&
                                      (contains(what, "concurrently with wait") ||
                                       contains(what, "reused before the previous wait has returned")),
                                  "the misuse's message: " + what);
                ++threw;
                return;
            }
            w->c.finish(1, "done");
        });
        goro_model::thread([w] { wait(w->c, w->n[0]); });
        goro_model::finally([w] { check_clean(w->c); });
    }, true);
    INFO("add() threw in " << threw << " executions");
    CHECK(threw > 0);
}

TEST_CASE("wait count model: two done()s for one add: exactly one throws, the counter stays at zero", "[wait_count]") {
    explore_both([] {
        struct world : base_world {
            int threw = 0;
        };
        auto w = std::make_shared<world>();
        w->c.add(1);
        for (int i = 0; i < 2; ++i)
            goro_model::thread([w] {
                try {
                    w->c.finish(1, "goro::wait_group::done");
                } catch (const goro::usage_error& e) {
                    goro_model::check(contains(e.what(), "goro::wait_group::done: negative counter"),
                                      std::string("the negative counter's message: ") + e.what());
                    ++w->threw;
                }
            });
        goro_model::thread([w] { wait(w->c, w->n[0]); });
        goro_model::finally([w] {
            goro_model::check(w->threw == 1, std::to_string(w->threw) + " of the two done()s threw");
            check_clean(w->c);
            goro_model::check(w->c.count() == 0, "the counter moved below zero");
        });
    }, true);
}

TEST_CASE("wait count model: the waiter destroys the group as soon as it returns; the last done() touches nothing after",
          "[wait_count]") {
    // The usual pattern: the group lives in the waiter's frame, and the last
    // done() may still be inside the group's code when the wait returns.
    explore_both(
        [] {
            auto w = std::make_shared<base_world>();
            w->c.add(1);
            goro_model::thread([w] { w->c.finish(1, "done"); });
            goro_model::thread([w] {
                wait(w->c, w->n[0]);
                destroy(w->c);
            });
        },
        true);
}

TEST_CASE("wait count model: the first of two waiters to return destroys the group; nobody touches it after",
          "[wait_count]") {
    // Both wait before the done (a wait() begun on a destroyed group would be
    // the program's bug): the other waiter, released and still returning,
    // and the releaser must take no step of the group once it is destroyed.
    explore_both([] {
        struct world : base_world {
            bool destroyed = false;
            goro_model::atomic<int> parked{0};
        };
        auto w = std::make_shared<world>();
        w->c.add(1);
        goro_model::thread([w] {
            while (w->parked.load(std::memory_order_acquire) != 2) goro_model::spin();
            w->c.finish(1, "done");
        });
        for (int i = 0; i < 2; ++i)
            goro_model::thread([w, i] {
                wait(w->c, w->n[i], &w->parked);
                if (!w->destroyed) {
                    w->destroyed = true;
                    destroy(w->c);
                }
            });
    }, true);
}

// --- negative controls: broken variants the checker must catch ------------------

TEST_CASE("wait count model: a releaser that does not look again before letting go loses a waiter", "[wait_count]") {
    // Random schedules: the exhaustive search reaches this schedule late.
    auto r = goro_model::explore(randomly(20000, 7), [] {
        struct world {
            counter<1> c;
            node n[2];
            world() { group_gone = false; }
        };
        auto w = std::make_shared<world>();
        w->c.add(1);
        goro_model::thread([w] { w->c.finish(1, "done"); });
        for (int i = 0; i < 2; ++i) goro_model::thread([w, i] { wait(w->c, w->n[i]); });
    });
    INFO(goro_model::describe(r));
    REQUIRE(r.failed);
    CHECK(contains(r.message, "every thread waits"));
}

TEST_CASE("wait count model: a waiter that sees zero while a finisher is busy lets it touch a destroyed group",
          "[wait_count]") {
    auto r = goro_model::explore(bounded(1), [] {
        struct world {
            counter<2> c;
            node n[1];
            world() { group_gone = false; }
        };
        auto w = std::make_shared<world>();
        w->c.add(1);
        goro_model::thread([w] { w->c.finish(1, "done"); });
        goro_model::thread([w] {
            wait(w->c, w->n[0]);
            destroy(w->c);
        });
    });
    INFO(goro_model::describe(r));
    REQUIRE(r.failed);
    CHECK(contains(r.message, "after it was destroyed"));
}

TEST_CASE("wait count model: a destructor that does not wait for a returning waiter lets it touch a destroyed group",
          "[wait_count]") {
    // The shape of "the first of two waiters to return destroys the group",
    // with a destroy() that orphans the waiters that have not begun to return
    // but does not wait for one that has: that one's unlink (or its leaving
    // the count) comes after the group is gone.
    auto r = goro_model::explore(bounded(1), [] {
        struct world {
            counter<3> c;
            node n[2];
            bool destroyed = false;
            goro_model::atomic<int> parked{0};
            world() { group_gone = false; }
        };
        auto w = std::make_shared<world>();
        w->c.add(1);
        goro_model::thread([w] {
            while (w->parked.load(std::memory_order_acquire) != 2) goro_model::spin();
            w->c.finish(1, "done");
        });
        for (int i = 0; i < 2; ++i)
            goro_model::thread([w, i] {
                wait(w->c, w->n[i], &w->parked);
                if (!w->destroyed) {
                    w->destroyed = true;
                    destroy(w->c);
                }
            });
    });
    INFO(goro_model::describe(r));
    REQUIRE(r.failed);
    CHECK(contains(r.message, "after it was destroyed"));
}

}  // namespace tests_wait_count
