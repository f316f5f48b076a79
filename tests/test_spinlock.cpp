// goro/core/spinlock.hpp: the plain spinlock excludes, and the biased lock
// (the channel's) gets its bias, loses it to another thread, grows its
// threshold, and never lets two holders or two word updates overlap.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include <goro/core/spinlock.hpp>

TEST_CASE("spinlock: threads that increment a plain counter under it lose no increment", "[spinlock]") {
    goro::detail::spinlock lock;
    long plain = 0;
    constexpr long per_thread = 100000;
    auto hammer = [&] {
        for (long i = 0; i < per_thread; ++i) {
            std::lock_guard g(lock);
            ++plain;
        }
    };
    std::thread a(hammer), b(hammer);
    hammer();
    a.join();
    b.join();
    CHECK(plain == 3 * per_thread);
    REQUIRE(lock.try_lock());
    CHECK_FALSE(lock.try_lock());
    lock.unlock();
}

// --- the biased lock ------------------------------------------------------------
// One thread that keeps taking the lock gets it biased to itself (no locked
// instruction); a second thread revokes the bias and both then share the
// lock. The counter is a plain int: any overlap of two holders would lose an
// increment (and is a race ThreadSanitizer reports).

TEST_CASE("biased_spinlock: a lone thread gets the bias, another revokes it, no holder overlaps", "[spinlock]") {
    if (!goro::detail::asym_fence_available()) {
        WARN("no membarrier here: locks are never biased");
        return;
    }
    goro::detail::biased_spinlock lock;
    long plain = 0;
    for (int i = 0; i < 200; ++i) {
        lock.lock();
        ++plain;
        lock.unlock();
    }
    CHECK(lock.bias_owner() == goro::detail::bias_thread_id());

    // Two threads hammer it: every round ends with one of them revoking the
    // other's bias, or with both on the inner lock.
    constexpr long per_thread = 200000;
    auto hammer = [&] {
        for (long i = 0; i < per_thread; ++i) {
            lock.lock();
            ++plain;
            lock.unlock();
        }
    };
    std::thread other(hammer);
    hammer();
    other.join();
    CHECK(plain == 200 + 2 * per_thread);

    // Revoked by a thread that takes it once: the first owner goes back to the inner lock.
    std::thread once([&] {
        lock.lock();
        ++plain;
        lock.unlock();
    });
    once.join();
    CHECK(lock.bias_owner() != goro::detail::bias_thread_id());
    lock.lock();
    ++plain;
    lock.unlock();
    CHECK(plain == 200 + 2 * per_thread + 2);
}

TEST_CASE("biased_spinlock: each revocation makes the next bias four times harder to get", "[spinlock]") {
    if (!goro::detail::asym_fence_available()) {
        WARN("no membarrier here: locks are never biased");
        return;
    }
    goro::detail::biased_spinlock lock;
    auto take = [&](int n) {
        for (int i = 0; i < n; ++i) {
            lock.lock();
            lock.unlock();
        }
    };
    auto revoke_from_another_thread = [&] { std::thread([&] { take(1); }).join(); };
    const std::uintptr_t me = goro::detail::bias_thread_id();
    take(64);
    CHECK(lock.bias_owner() == me);
    revoke_from_another_thread();
    CHECK(lock.bias_owner() == 0);
    take(255);  // the threshold is now 4 * 64: a streak of 255 is one short
    CHECK(lock.bias_owner() == 0);
    take(2);
    CHECK(lock.bias_owner() == me);
}

TEST_CASE("biased_spinlock: lock-free word updates by the owner and by other threads are never lost", "[spinlock]") {
    if (!goro::detail::asym_fence_available()) {
        WARN("no membarrier here: locks are never biased");
        return;
    }
    goro::detail::biased_spinlock lock(4, 4);  // biased again after every 4 acquisitions in a row
    std::atomic<std::uint64_t> word{0};
    // The owner's update is a plain load and store: only exclusive access
    // makes it right. Everybody else's is an atomic add. Both take a while,
    // so that an overlap, if the protocol let one happen, would lose counts.
    auto update = [&] {
        const int entry = lock.enter_words();
        const bool plain = entry >= 0;
        if (plain) {
            const std::uint64_t v = word.load(std::memory_order_relaxed);
            for (int k = 0; k < 200; ++k) goro::detail::cpu_relax();
            word.store(v + 1, std::memory_order_relaxed);
        } else {
            for (int k = 0; k < 20; ++k) goro::detail::cpu_relax();
            word.fetch_add(1, std::memory_order_relaxed);
        }
        lock.leave_words(entry);
        return plain;
    };
    // Alone, a thread that keeps taking the lock gets the bias, and with it plain updates.
    for (int i = 0; i < 4; ++i) {
        lock.lock();
        lock.unlock();
    }
    CHECK(update());
    std::uint64_t expected = 1;

    // Together: one thread takes the lock and updates, regaining the bias
    // four acquisitions after each revocation; two others update until it is
    // done, revoking the bias whenever they find it.
    constexpr int rounds = 100000;
    std::atomic<bool> go{false}, owner_done{false};
    std::atomic<std::uint64_t> others{0};
    auto updater = [&] {
        while (!go.load()) std::this_thread::yield();
        std::uint64_t n = 0;
        while (!owner_done.load(std::memory_order_relaxed)) {
            update();
            ++n;
            for (int k = 0; k < 400; ++k) goro::detail::cpu_relax();  // leave the owner room to regain the bias
        }
        others += n;
    };
    std::thread a(updater), b(updater);
    go.store(true);
    long plain_updates = 0;
    for (int i = 0; i < rounds; ++i) {
        lock.lock();
        lock.unlock();
        plain_updates += update();
    }
    owner_done.store(true);
    a.join();
    b.join();
    INFO("plain updates by the owner: " << plain_updates << ", updates by the others: " << others.load());
    expected += std::uint64_t(rounds) + others.load();
    CHECK(word.load() == expected);
}
