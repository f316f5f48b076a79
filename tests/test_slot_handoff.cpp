// The scheduler's slot hand-off (core/slot_handoff.hpp) under the model
// checker (tests/model/model.hpp, x86-TSO): an owner that fills and empties
// its run_next and claimed slots with plain stores, beside one or two thieves
// that steal with membarrier. Under every explored schedule each task is
// taken exactly once: none is lost, none runs twice. With the asymmetric
// fence and without it (the fallback: the owner takes with an exchange).
//
// The last test keeps a copy of a wrong ordering (the owner reads the slot
// before announcing itself: issue 16 §0a) and requires the checker to find
// its double take: proof that the model sees that kind of bug.
#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include <goro/core/slot_handoff.hpp>

#include "model/model.hpp"

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_slot_handoff {

namespace {

struct task {
    int id = 0;
};

constexpr int max_tasks = 4;

template <std::uint32_t Claimed>
struct world {
    goro::detail::slot_handoff<task, Claimed, goro_model::policy> slots;
    task tasks[max_tasks];
    int taken[max_tasks] = {};  // by anyone; the model runs one thread at a time
    int ntasks = 0;

    world() {
        for (int i = 0; i < max_tasks; ++i) tasks[i].id = i;
    }
    void took(task* t, const char* who) {
        if (!t) return;
        if (++taken[t->id] > 1) goro_model::check(false, std::string("task ") + std::to_string(t->id) + " taken twice (last by " + who + ")");
    }
    void all_taken_once() const {
        for (int i = 0; i < ntasks; ++i)
            goro_model::check(taken[i] == 1, "task " + std::to_string(i) + " taken " + std::to_string(taken[i]) + " times");
    }
};

/// The owner: puts task 0 in run_next and `nclaimed` tasks in the claimed
/// slots (as pop_batch does: relaxed stores), then takes its tasks as the
/// scheduler's pick does. With `refill`, after its first take (whether it got
/// a task or a thief did) it puts one more task in run_next (a wake-up),
/// while thieves may be at work.
template <std::uint32_t Claimed>
void owner(world<Claimed>& w, int nclaimed, bool refill, bool fenced) {
    int next_task = 0;
    w.slots.offer_next(&w.tasks[next_task++]);
    for (int i = 0; i < nclaimed; ++i) w.slots.claim_slots()[i].store(&w.tasks[next_task++], std::memory_order_relaxed);
    w.slots.claimed_filled(static_cast<std::uint32_t>(nclaimed));
    for (;;) {
        task* t = w.slots.take_next(fenced);
        if (!t) t = w.slots.take_claimed(fenced);
        w.took(t, "the owner");
        if (refill) {
            refill = false;
            // run_next is empty: this take or a thief emptied it, and only the owner fills it.
            if (!w.slots.offer_next(&w.tasks[next_task])) goro_model::check(false, "run_next was full after a take");
            ++next_task;
            continue;
        }
        if (!t) break;
    }
}

template <std::uint32_t Claimed>
void thief(world<Claimed>& w, bool fenced) {
    task* got[1 + Claimed];
    const std::uint32_t n = w.slots.steal(got, fenced);
    for (std::uint32_t i = 0; i < n; ++i) w.took(got[i], "a thief");
}

template <std::uint32_t Claimed>
goro_model::result check_handoff(int nthieves, int nclaimed, bool refill, bool fenced, goro_model::options o) {
    return goro_model::explore(o, [=] {
        auto w = std::make_shared<world<Claimed>>();
        w->ntasks = 1 + nclaimed + (refill ? 1 : 0);
        goro_model::thread([w, nclaimed, refill, fenced] { owner(*w, nclaimed, refill, fenced); });
        for (int i = 0; i < nthieves; ++i) goro_model::thread([w, fenced] { thief(*w, fenced); });
        goro_model::finally([w] { w->all_taken_once(); });
    });
}

goro_model::options bounded(int preemptions) {
    goro_model::options o;
    o.preemption_bound = preemptions;
    return o;
}

goro_model::options randomly(std::uint64_t schedules, std::uint64_t seed) {
    goro_model::options o;
    o.random_schedules = schedules;
    o.seed = seed;
    return o;
}

}  // namespace

TEST_CASE("slot hand-off: owner and one thief take each task once, under every schedule", "[slot_handoff]") {
    for (bool fenced : {true, false}) {
        for (int nclaimed : {0, 1, 2}) {
            for (bool refill : {false, true}) {
                if (nclaimed + 1 + (refill ? 1 : 0) > 3) continue;  // 1-3 tasks
                auto r = check_handoff<2>(1, nclaimed, refill, fenced, bounded(3));
                INFO("fenced " << fenced << ", claimed " << nclaimed << ", refill " << refill << ": "
                               << goro_model::describe(r));
                CHECK_FALSE(r.failed);
                CHECK(r.complete);
                CHECK(r.executions > 1);
                if (r.failed) {
                    goro_model::options o;
                    o.replay = r.schedule;
                    o.trace = true;
                    check_handoff<2>(1, nclaimed, refill, fenced, o);
                }
            }
        }
    }
}

TEST_CASE("slot hand-off: owner and two thieves take each task once", "[slot_handoff]") {
    for (bool fenced : {true, false}) {
        for (int nclaimed : {1, 2}) {
            // Exhaustive within one preemption, then many random schedules
            // (two preemptions: some 50,000 schedules, too slow for every CI run).
            auto r = check_handoff<2>(2, nclaimed, nclaimed == 1, fenced, bounded(1));
            INFO("fenced " << fenced << ", claimed " << nclaimed << ": " << goro_model::describe(r));
            CHECK_FALSE(r.failed);
            CHECK(r.complete);
            CHECK(r.executions > 1);
            auto rr = check_handoff<2>(2, nclaimed, nclaimed == 1, fenced, randomly(1500, 42 + nclaimed));
            INFO("random: " << goro_model::describe(rr));
            CHECK_FALSE(rr.failed);
            CHECK(rr.executions == 1500);
        }
    }
}

namespace {

// The wrong ordering (not used by goro): the owner reads the slot before it
// announces itself. The thief is the real protocol's.
struct old_order {
    goro_model::atomic<task*> slot;
    goro_model::atomic<bool> in_pop;
    goro_model::atomic<int> steal_req;

    task* owner_take() {
        task* t = slot.load(std::memory_order_acquire);
        if (!t) return nullptr;
        in_pop.store(true, std::memory_order_relaxed);
        goro_model::fence_light();
        const bool contested = steal_req.load(std::memory_order_relaxed) != 0;
        if (!contested) slot.store(nullptr, std::memory_order_relaxed);
        in_pop.store(false, std::memory_order_release);
        if (!contested) return t;
        return slot.exchange(nullptr, std::memory_order_acq_rel);
    }
    task* thief_steal() {
        steal_req.fetch_add(1, std::memory_order_seq_cst);
        goro_model::fence_heavy();
        while (in_pop.load(std::memory_order_acquire)) goro_model::spin();
        task* t = slot.exchange(nullptr, std::memory_order_acq_rel);
        steal_req.fetch_sub(1, std::memory_order_release);
        return t;
    }
};

}  // namespace

TEST_CASE("slot hand-off: the model finds the double take of the old ordering", "[slot_handoff]") {
    struct state {
        old_order s;
        task t;
        int taken = 0;
    };
    auto r = goro_model::explore(bounded(2), [] {
        auto st = std::make_shared<state>();
        st->s.slot.store(&st->t);
        goro_model::thread([st] { st->taken += st->s.owner_take() != nullptr; });
        goro_model::thread([st] { st->taken += st->s.thief_steal() != nullptr; });
        goro_model::finally([st] { goro_model::check(st->taken == 1, "taken " + std::to_string(st->taken) + " times"); });
    });
    INFO(goro_model::describe(r));
    CHECK(r.failed);
    CHECK(r.message == "taken 2 times");
    CHECK(r.executions > 1);
}

}  // namespace tests_slot_handoff
