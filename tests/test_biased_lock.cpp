// The biased lock's owner/revoker handshake (core/spinlock.hpp,
// biased_spinlock) under the model checker (tests/model/model.hpp, x86-TSO).
//
// biased_spinlock is not yet written against a policy, so this checks a copy
// of its protocol's core, step for step: the owner's fast path (a plain
// store records the lock in its slot, a compiler barrier, the bias checked
// again), its unlock (a plain store), and a revoker (CAS of the bias to odd,
// membarrier, wait until the owner's slot is empty, take the inner lock,
// unbias). Mutual exclusion must hold under every explored schedule; the same
// copy without the owner's second check must fail, so the check can fail.
#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "model/model.hpp"

namespace {

constexpr std::uintptr_t owner_id = 2;  // the owner's slot address, in the real lock (even)

struct biased_model {
    goro_model::atomic<std::uintptr_t> bias{owner_id};  // biased to the owner from the start
    goro_model::atomic<const void*> owner_slot;          // the owner's bias_slot entry
    goro_model::atomic<bool> inner;                       // the inner spinlock
    goro_model::atomic<int> data;                         // what the lock protects
    int inside = 0;                                       // threads in the critical section
    int entries = 0;
    bool owner_rechecks = true;  // false: the broken copy

    // The critical section: a read and a write of the protected word (steps
    // of the model, so another thread may run between them).
    void critical_section() {
        ++inside;
        ++entries;
        goro_model::check(inside == 1, "two threads inside the lock");
        const int v = data.load(std::memory_order_relaxed);
        goro_model::check(inside == 1, "two threads inside the lock");
        data.store(v + 1, std::memory_order_relaxed);
        --inside;
    }

    void inner_lock() {
        for (;;) {
            bool f = false;
            if (inner.compare_exchange_strong(f, true, std::memory_order_acquire, std::memory_order_relaxed)) return;
            while (inner.load(std::memory_order_relaxed)) goro_model::spin();
        }
    }
    void inner_unlock() { inner.store(false, std::memory_order_release); }

    // biased_spinlock::enter_as_owner: -1, or inside by the fast path.
    bool owner_fast() {
        if (bias.load(std::memory_order_relaxed) != owner_id) return false;
        owner_slot.store(this, std::memory_order_relaxed);  // bias_slot::enter
        goro_model::fence_light();
        if (!owner_rechecks || bias.load(std::memory_order_relaxed) == owner_id) return true;
        owner_slot.store(nullptr, std::memory_order_release);
        return false;
    }

    // biased_spinlock::revoke for a bias seen owned by the owner.
    void revoke(std::uintptr_t b) {
        if (!(b & 1)) {
            if (!bias.compare_exchange_strong(b, b | 1, std::memory_order_seq_cst, std::memory_order_acquire)) return;
            goro_model::fence_heavy();
            while (owner_slot.load(std::memory_order_acquire) == this) goro_model::spin();
            inner_lock();
            bias.store(0, std::memory_order_release);
            inner_unlock();
            return;
        }
        while (bias.load(std::memory_order_acquire) == b) goro_model::spin();
    }

    // biased_spinlock::lock_slow (without counting streaks: no re-biasing here).
    void lock_slow(std::uintptr_t id) {
        for (;;) {
            std::uintptr_t b = bias.load(std::memory_order_acquire);
            if (b != 0 && b != id) {
                revoke(b);
                continue;
            }
            inner_lock();
            b = bias.load(std::memory_order_acquire);
            if (b != 0 && b != id) {
                inner_unlock();
                continue;
            }
            return;
        }
    }

    void lock(std::uintptr_t id) {
        if (id == owner_id && owner_fast()) return;
        lock_slow(id);
    }
    void unlock(std::uintptr_t id) {
        // biased_spinlock::unlock: the fast path's holder finds itself in its slot.
        if (id == owner_id && (bias.load(std::memory_order_relaxed) & ~std::uintptr_t(1)) == owner_id &&
            owner_slot.load(std::memory_order_relaxed) == this) {
            owner_slot.store(nullptr, std::memory_order_release);
            return;
        }
        inner_unlock();
    }
};

goro_model::result check_lock(bool owner_rechecks, int owner_rounds, goro_model::options o) {
    return goro_model::explore(o, [=] {
        auto m = std::make_shared<biased_model>();
        m->owner_rechecks = owner_rechecks;
        goro_model::thread([m, owner_rounds] {
            for (int i = 0; i < owner_rounds; ++i) {
                m->lock(owner_id);
                m->critical_section();
                m->unlock(owner_id);
            }
        });
        goro_model::thread([m] {
            const std::uintptr_t other = 4;
            m->lock(other);
            m->critical_section();
            m->unlock(other);
        });
        goro_model::finally([m, owner_rounds] {
            goro_model::check(m->entries == owner_rounds + 1, "a lock() did not get in");
            goro_model::check(m->data.load() == owner_rounds + 1, "an update under the lock was lost");
            goro_model::check(m->bias.load() == 0, "the bias was not revoked");
        });
    });
}

goro_model::options bounded(int preemptions) {
    goro_model::options o;
    o.preemption_bound = preemptions;
    return o;
}

}  // namespace

TEST_CASE("biased lock model: the owner's plain-store path and a revoker exclude each other", "[biased_lock]") {
    for (int rounds : {1, 2}) {
        auto r = check_lock(true, rounds, bounded(3));
        INFO("owner rounds " << rounds << ": " << goro_model::describe(r));
        CHECK_FALSE(r.failed);
        CHECK(r.complete);
        CHECK(r.executions > 1);
    }
}

TEST_CASE("biased lock model: without the owner's second look at the bias, two get in", "[biased_lock]") {
    auto r = check_lock(false, 1, bounded(2));
    INFO(goro_model::describe(r));
    CHECK(r.failed);
    // Both inside at once, or one after the other without the inner lock's
    // ordering (the owner reads the word before the revoker's store reached memory).
    CHECK((r.message == "two threads inside the lock" || r.message == "an update under the lock was lost"));
}
