// goro/core/thread_slot.hpp: one slot per thread, made once, listed for every
// reader, and kept after its thread ends.
#include <catch2/catch.hpp>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include <goro/core/thread_slot.hpp>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_thread_slot {

namespace {

// A slot type of this test only, so the list holds exactly the slots made here.
struct test_slot {
    std::atomic<int> value{0};
    test_slot* next = nullptr;
};
using slots = goro::detail::thread_slots<test_slot>;

}  // namespace

TEST_CASE("thread_slots: one slot per thread, all listed, kept after the thread ends", "[thread_slot]") {
    test_slot& mine = slots::mine();
    CHECK(&slots::mine() == &mine);  // made once
    mine.value.store(1);
    constexpr int threads = 4;
    std::vector<test_slot*> theirs(threads);
    std::vector<std::thread> ts;
    for (int i = 0; i < threads; ++i)
        ts.emplace_back([&theirs, i] {
            test_slot& s = slots::mine();
            s.value.store(10 + i);
            theirs[static_cast<std::size_t>(i)] = &s;
        });
    for (auto& t : ts) t.join();
    // Every thread's slot is listed (the threads have ended), each once, with its value.
    std::set<test_slot*> listed;
    int sum = 0;
    for (test_slot* s = slots::first(); s; s = s->next) {
        CHECK(listed.insert(s).second);
        sum += s->value.load();
    }
    CHECK(listed.size() == threads + 1);
    CHECK(listed.count(&mine) == 1);
    for (test_slot* s : theirs) CHECK(listed.count(s) == 1);
    CHECK(sum == 1 + 10 + 11 + 12 + 13);
}

}  // namespace tests_thread_slot
