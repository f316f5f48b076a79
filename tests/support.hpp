// Helpers shared by goro's tests: waiting for a condition with a deadline
// (never a bare sleep), and a type that counts its constructions.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>
#include <thread>

#include <goro/goro.hpp>

namespace goro_test {

/// Polls `pred` until it holds or `deadline` passes; returns whether it held.
/// Deadlines are generous: they only bound a hang, they never assert speed.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds deadline = std::chrono::seconds(30)) {
    auto end = std::chrono::steady_clock::now() + deadline;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end) return false;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
}

/// Waits (with a deadline) until no task is alive but `baseline` ones.
inline bool tasks_drained(std::int64_t baseline = 0) {
    return eventually([&] { return goro::num_goroutines() <= baseline; });
}

/// Counts live instances, copies and moves, to prove nothing leaks or is copied.
struct counted {
    static inline std::atomic<long> alive{0}, copies{0}, moves{0};
    int value = 0;
    counted(int v = 0) : value(v) { ++alive; }
    counted(const counted& o) : value(o.value) { ++alive; ++copies; }
    counted(counted&& o) noexcept : value(o.value) { ++alive; ++moves; }
    counted& operator=(const counted& o) { value = o.value; ++copies; return *this; }
    counted& operator=(counted&& o) noexcept { value = o.value; ++moves; return *this; }
    ~counted() { --alive; }
    static void reset() { copies = 0; moves = 0; }
};

}  // namespace goro_test

namespace goro_test {

/// A hand-operated wait point: a task parks on `wait()` until the test calls
/// `open()`. Lets a test hold tasks parked at known lines.
class gate {
public:
    struct awaiter {
        using is_goro_awaiter = void;  // it parks the task itself (see goro/core/foreign.hpp)
        gate* g;
        bool await_ready() const noexcept { return g->opened_.load(std::memory_order_acquire); }
        bool await_suspend(std::coroutine_handle<> h) {
            goro::task_header* t = goro::detail::current_task_or_throw("gate::wait");
            goro::detail::park(t, h, "gate");
            std::lock_guard<std::mutex> lk(g->mu_);
            if (g->opened_.load(std::memory_order_relaxed)) {
                t->state.store(goro::task_state::running, std::memory_order_relaxed);
                return false;
            }
            g->waiters_.push_back(t);
            return true;
        }
        void await_resume() const noexcept {}
    };
    awaiter wait() noexcept { return {this}; }
    void open() {
        std::vector<goro::task_header*> ws;
        {
            std::lock_guard<std::mutex> lk(mu_);
            opened_.store(true, std::memory_order_release);
            ws.swap(waiters_);
        }
        for (auto* t : ws) goro::detail::ready(t);  // never wake while holding the lock
    }
    std::size_t parked() {
        std::lock_guard<std::mutex> lk(mu_);
        return waiters_.size();
    }

private:
    std::mutex mu_;
    std::atomic<bool> opened_{false};
    std::vector<goro::task_header*> waiters_;
};

}  // namespace goro_test

namespace goro_test {

/// Stops the world with every worker at a safe point, however long that
/// takes on a loaded machine: a stop that times out is undone and tried
/// again. Throws (failing the test) only if no stop succeeded within
/// `deadline`, which bounds a hang. Pair with the_scheduler().start_the_world().
inline goro::detail::stw_report stop_whole_world(std::chrono::milliseconds deadline = std::chrono::seconds(120)) {
    auto& s = goro::detail::the_scheduler();
    auto end = std::chrono::steady_clock::now() + deadline;
    for (;;) {
        goro::detail::stw_report rep = s.stop_the_world(std::chrono::seconds(1));
        if (rep.all_stopped) return rep;
        s.start_the_world();
        if (std::chrono::steady_clock::now() > end)
            throw std::runtime_error("stop_whole_world: a worker reached no safe point in the deadline");
    }
}

/// Wait reasons of the parked tasks named `name`, read with the world stopped.
inline std::vector<std::string> parked_reasons(const std::string& name) {
    std::vector<std::string> out;
    auto& s = goro::detail::the_scheduler();
    stop_whole_world();
    goro::detail::the_registry().for_each_locked([&](goro::task_header& h) {
        if (h.cold().meta && h.cold().meta->name == name && h.state.load() == goro::task_state::waiting) {
            const char* r = h.wait_reason.load();
            out.push_back(r ? r : "");
        }
    });
    s.start_the_world();
    return out;
}

inline std::size_t parked_count(const std::string& name) { return parked_reasons(name).size(); }

}  // namespace goro_test

namespace goro_test {

/// Compares wait reasons by text, not by address: a string literal's address
/// may differ between translation units (ASan, for one, does not merge them).
inline bool same_reason(const char* a, const char* b) { return a && b && std::string_view(a) == b; }

}  // namespace goro_test
