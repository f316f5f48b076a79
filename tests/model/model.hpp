// tests/model/model.hpp — a deterministic model checker for goro's lock-free
// protocols, on a model of x86-TSO. Standard library only.
//
//   auto r = goro_model::explore({.preemption_bound = 2}, [] {
//       auto s = std::make_shared<state>();        // fresh for every execution
//       goro_model::thread([s] { ... s->x.store(1, std::memory_order_relaxed); ... });
//       goro_model::thread([s] { ... });
//       goro_model::finally([s] { goro_model::check(s->ok(), "what must hold"); });
//   });
//   REQUIRE_FALSE(r.failed);   // r.message, r.schedule say what went wrong, and where
//
// The protocol under test is written against a policy (atomics and fences as
// template parameters, see core/slot_handoff.hpp); `goro_model::policy`
// gives it `goro_model::atomic<T>`, whose every operation is a step.
//
// HOW IT RUNS. Each model thread is an OS thread, but only one runs at a
// time: a baton (a mutex and a condition variable) passes between them, and
// the thread holding it decides, before each of its steps, which thread
// performs the next step. So a schedule is a sequence of choices, and an
// execution is a pure function of it (the threads must not depend on
// anything else: no clocks, no addresses in decisions).
//   Exhaustive mode (the default) explores every schedule by depth-first
//   search over the choices, re-running the setup for each: after an
//   execution, the last choice that still has an untried option takes its
//   next one, and everything after it is chosen afresh. A preemption bound
//   (switching away from a thread that could go on counts one; switching
//   from one that finished or waits is free) keeps the count polynomial;
//   most concurrency bugs need only one or two preemptions.
//   Random mode (`random_schedules`) runs that many schedules, each choice
//   drawn from a generator seeded with `seed`, for shapes too big to explore.
//   Either way the first failure stops the search, and its schedule (a list of
//   choices) is returned; `options::replay` runs exactly that schedule again.
//
// THE MEMORY MODEL: x86-TSO. Memory holds one value per atomic. Each thread
// has a FIFO store buffer:
//   * a relaxed/release store goes into the own buffer; a seq_cst store also
//     drains the own buffer (x86 compiles it to XCHG);
//   * a load sees the own buffer's newest store to that atomic, else memory;
//   * an RMW (exchange, fetch_add, compare_exchange) drains the own buffer and
//     reads and writes memory at once; so does a seq_cst fence (MFENCE);
//   * fence_heavy() (membarrier) drains every thread's buffer;
//   * fence_light() (a compiler barrier) does nothing: the model never moves a
//     thread's operations; only its buffer delays its stores.
//   When another thread's buffered store drains is a choice too, made where it
//   can matter: before a load or RMW of an atomic that other threads have
//   buffered stores to, the explorer chooses whether (and whose) buffers drain
//   up to such a store first. Buffers also drain when nothing else can move,
//   and before `finally`.
//   A wait loop must call spin() (policy::spin) each round: the thread then
//   waits until memory changes, so a loop does not make schedules infinite;
//   when every thread waits and nothing can drain, that is a failure
//   (deadlock or livelock), as is an execution longer than `max_steps`.
//   `options::spin_on_loaded` narrows "until memory changes" (a reduction, off
//   by default): a round of a wait loop that only loaded (no store, no RMW
//   that changed memory) waits until one of the values it loaded would read
//   differently, that is until another thread's write (a drain or an RMW)
//   reaches one of those atomics. Every other write leaves it waiting, so it
//   does not wake for nothing and spin again, and every such wake-up no longer
//   multiplies the schedules. Sound for a wait loop whose round is a function
//   of the model atomics it loads (loads, a decision, spin()): run again on
//   the same values, it would only spin again. A round that wrote waits as
//   without the option (until any write reaches memory).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace goro_model {

struct options {
    int preemption_bound = 2;                  ///< exhaustive mode; negative: unbounded
    std::uint64_t max_executions = 2'000'000;  ///< exhaustive mode stops there, incomplete
    std::uint64_t random_schedules = 0;        ///< nonzero: random mode, this many schedules
    std::uint64_t seed = 1;                    ///< random mode's generator seed
    std::size_t max_steps = 100'000;           ///< steps per execution before it counts as a livelock
    std::string replay;                        ///< a failure's `schedule`: run only it
    bool trace = false;                        ///< print every step to stderr (for a replay)
    bool spin_on_loaded = false;               ///< a load-only wait round waits for what it loaded (see above)
};

struct result {
    std::uint64_t executions = 0;  ///< schedules run
    bool complete = false;         ///< exhaustive: every schedule within the bound was run
    bool failed = false;
    std::string message;   ///< the first failure
    std::string schedule;  ///< its choices (for options::replay)
};

namespace detail {

/// One atomic's cell of memory (values are stored as up to 8 bytes).
struct location {
    mutable std::uint64_t value = 0;
};

struct store_entry {
    const location* loc;
    std::uint64_t value;
};

/// Thrown through a model thread to end an execution that cannot finish.
struct aborted {};

struct model_thread {
    std::function<void()> body;
    std::deque<store_entry> buffer;
    bool finished = false;
    bool waiting = false;  // in spin(): until memory changes
    bool chosen = true;    // its next step was already chosen (it starts, or ends a spin round)
    // options::spin_on_loaded: what this round (since its last spin()) loaded,
    // and whether it wrote; `watching`: it waits for one of `seen` to change.
    std::vector<std::pair<const location*, std::uint64_t>> seen;
    bool wrote = false;
    bool watching = false;
};

class explorer {
public:
    explicit explorer(const options& o) : opt_(o), rng_(o.seed) {}
    ~explorer() {
        {
            std::lock_guard<std::mutex> g(mu_);
            closing_ = true;
        }
        notify_every();
        for (auto& t : pool_) t.join();
    }
    explorer(const explorer&) = delete;
    explorer& operator=(const explorer&) = delete;

    // --- set up by the test, per execution -------------------------------------
    void add_thread(std::function<void()> f) {
        auto t = std::make_unique<model_thread>();
        t->body = std::move(f);
        threads_.push_back(std::move(t));
    }
    void add_finally(std::function<void()> f) { finals_.push_back(std::move(f)); }

    result run(const std::function<void()>& setup);

    // --- called by a model thread holding the baton -------------------------------
    void step();  // before every operation
    void spin();
    std::uint64_t load(const location& l);
    void store(const location& l, std::uint64_t v, bool seq_cst);
    template <class F>
    std::uint64_t rmw(const location& l, F f) {
        step();
        drain_choices(l);
        drain_all_of(cur_);
        const std::uint64_t old = l.value;
        const std::uint64_t nv = f(old);
        if (nv != old) l.value = nv;
        if (opt_.spin_on_loaded) {
            threads_[cur_]->seen.emplace_back(&l, old);
            if (nv != old) threads_[cur_]->wrote = true;
        }
        if (opt_.trace) std::fprintf(stderr, "  t%zu rmw   %p %llx -> %llx\n", cur_, static_cast<const void*>(&l), static_cast<unsigned long long>(old), static_cast<unsigned long long>(nv));
        memory_changed();
        return old;
    }
    void fence_seq_cst() {
        step();
        drain_all_of(cur_);
    }
    void fence_heavy();
    void fail(const std::string& what) {
        if (!failed_) {
            failed_ = true;
            message_ = what;
        }
    }
    static thread_local int current_thread;  // the model thread running here, -1 on others

private:
    std::size_t choose(std::size_t n, const char* what);
    bool enabled(std::size_t i) const { return !threads_[i]->finished && !threads_[i]->waiting; }
    void drain_one(std::size_t i);  // the oldest store of thread i's buffer to memory
    void drain_all_of(std::size_t i) {
        while (!threads_[i]->buffer.empty()) drain_one(i);
    }
    void drain_choices(const location& l);
    bool drain_some();  // when nothing can move: a chosen buffer drains; false if all empty
    void memory_changed() {
        for (auto& t : threads_)
            if (t->waiting && (!t->watching || seen_changed(*t))) t->waiting = false;
    }
    /// Thread t would load another value than it did for one of `seen` (its
    /// own buffer's newest store to an atomic, else memory).
    static bool seen_changed(const model_thread& t) {
        for (const auto& [l, v] : t.seen) {
            std::uint64_t now = l->value;
            for (auto it = t.buffer.rbegin(); it != t.buffer.rend(); ++it)
                if (it->loc == l) {
                    now = it->value;
                    break;
                }
            if (now != v) return true;
        }
        return false;
    }
    void pass_to(int next);  // hands the baton on and waits for it back (or for the end)
    void schedule_next(bool self_enabled);
    void thread_main(std::size_t i);
    void pool_main(std::size_t i);
    void end_execution_abort(const std::string& why);
    std::string schedule_text() const;
    bool backtrack();

    options opt_;
    std::mt19937_64 rng_;
    std::vector<std::unique_ptr<model_thread>> threads_;
    std::vector<std::function<void()>> finals_;
    // OS threads, reused by every execution: pool_[i] runs model thread i.
    std::vector<std::thread> pool_;
    std::uint64_t generation_ = 0;  // bumped when an execution's threads may start
    std::size_t nthreads_ = 0;      // threads_.size(), for the pool (under mu_)
    std::size_t ended_ = 0;         // pool threads done with this execution
    bool closing_ = false;
    std::mutex mu_;
    // One condition variable per pool thread, and the controller's: a hand-off
    // wakes only the thread that gets the baton. Grown by the controller only
    // between executions.
    std::vector<std::unique_ptr<std::condition_variable>> tcv_;
    std::condition_variable main_cv_;
    void notify(int who) {
        if (who < 0) main_cv_.notify_one();
        else tcv_[static_cast<std::size_t>(who)]->notify_one();
    }
    void notify_every() {
        for (auto& c : tcv_) c->notify_all();
        main_cv_.notify_all();
    }
    int turn_ = -1;  // the model thread that holds the baton; -1: the controller
    bool aborting_ = false;
    std::size_t cur_ = 0;  // the model thread running now
    int preemptions_ = 0;
    std::size_t steps_ = 0;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> trail_;  // (chosen, of how many)
    std::size_t pos_ = 0;
    bool failed_ = false;
    std::string message_;
};

inline thread_local int explorer::current_thread = -1;
inline explorer* active = nullptr;  // the explorer of the execution under way

inline std::size_t explorer::choose(std::size_t n, const char* what) {
    if (n <= 1) return 0;
    std::uint32_t c;
    if (pos_ < trail_.size()) {
        if (trail_[pos_].second != n) {
            end_execution_abort(std::string("the test is not deterministic: choice ") + std::to_string(pos_) + " (" +
                                what + ") had " + std::to_string(trail_[pos_].second) + " options, now " +
                                std::to_string(n));
        }
        c = trail_[pos_].first;
    } else {
        c = opt_.random_schedules ? static_cast<std::uint32_t>(rng_() % n) : 0;
        trail_.emplace_back(c, static_cast<std::uint32_t>(n));
    }
    ++pos_;
    return c;
}

inline void explorer::drain_one(std::size_t i) {
    auto& b = threads_[i]->buffer;
    if (opt_.trace) std::fprintf(stderr, "  t%zu drain %p <- %llx\n", i, static_cast<const void*>(b.front().loc), static_cast<unsigned long long>(b.front().value));
    b.front().loc->value = b.front().value;
    b.pop_front();
    memory_changed();
}

inline void explorer::drain_choices(const location& l) {
    for (;;) {
        std::vector<std::size_t> who;
        for (std::size_t i = 0; i < threads_.size(); ++i) {
            if (i == cur_) continue;
            for (auto& e : threads_[i]->buffer)
                if (e.loc == &l) {
                    who.push_back(i);
                    break;
                }
        }
        if (who.empty()) return;
        const std::size_t c = choose(who.size() + 1, "drain before a load");
        if (c == 0) return;
        const std::size_t i = who[c - 1];
        for (;;) {  // up to and including its oldest store to l
            const bool hit = threads_[i]->buffer.front().loc == &l;
            drain_one(i);
            if (hit) break;
        }
    }
}

inline bool explorer::drain_some() {
    std::vector<std::size_t> who;
    for (std::size_t i = 0; i < threads_.size(); ++i)
        if (!threads_[i]->buffer.empty()) who.push_back(i);
    if (who.empty()) return false;
    drain_one(who[choose(who.size(), "drain while all wait")]);
    return true;
}

inline void explorer::fence_heavy() {
    step();
    drain_all_of(cur_);
    // Every other thread's buffer drains; the order between threads matters
    // only for stores to one atomic, so it is a choice when two are non-empty.
    for (;;) {
        std::vector<std::size_t> who;
        for (std::size_t i = 0; i < threads_.size(); ++i)
            if (!threads_[i]->buffer.empty()) who.push_back(i);
        if (who.empty()) return;
        drain_all_of(who[choose(who.size(), "membarrier drain order")]);
    }
}

inline std::uint64_t explorer::load(const location& l) {
    step();
    drain_choices(l);
    auto& b = threads_[cur_]->buffer;
    std::uint64_t v = l.value;
    for (auto it = b.rbegin(); it != b.rend(); ++it)
        if (it->loc == &l) {
            v = it->value;
            break;
        }
    if (opt_.trace) std::fprintf(stderr, "  t%zu load  %p -> %llx\n", cur_, static_cast<const void*>(&l), static_cast<unsigned long long>(v));
    if (opt_.spin_on_loaded) threads_[cur_]->seen.emplace_back(&l, v);
    return v;
}

inline void explorer::store(const location& l, std::uint64_t v, bool seq_cst) {
    step();
    threads_[cur_]->buffer.push_back({&l, v});
    threads_[cur_]->wrote = true;
    if (opt_.trace) std::fprintf(stderr, "  t%zu store %p <- %llx%s\n", cur_, static_cast<const void*>(&l), static_cast<unsigned long long>(v), seq_cst ? " (seq_cst)" : "");
    if (seq_cst) drain_all_of(cur_);
}

inline void explorer::step() {
    if (++steps_ > opt_.max_steps) end_execution_abort("an execution ran more than max_steps steps (a livelock?)");
    if (std::exchange(threads_[cur_]->chosen, false)) return;
    schedule_next(true);
}

inline void explorer::spin() {
    ++steps_;
    auto& t = *threads_[cur_];
    t.waiting = true;
    t.watching = opt_.spin_on_loaded && !t.wrote && !t.seen.empty();
    schedule_next(false);
    t.chosen = true;  // chosen just now to go on: its next load needs no second choice
    t.watching = t.wrote = false;  // a new round begins
    t.seen.clear();
}

/// The baton holder `cur_` picks who performs the next step. `self_enabled`:
/// cur_ itself is about to step (else it waits or has finished).
inline void explorer::schedule_next(bool self_enabled) {
    const std::size_t self = cur_;
    std::vector<std::size_t> opts;
    for (;;) {
        opts.clear();
        if (self_enabled) opts.push_back(self);
        const bool may_preempt = !self_enabled || opt_.preemption_bound < 0 || preemptions_ < opt_.preemption_bound ||
                                 opt_.random_schedules;
        for (std::size_t i = 0; i < threads_.size(); ++i) {
            if (i == self) {
                if (!self_enabled && enabled(i)) opts.push_back(i);  // it waited, and memory changed
            } else if (may_preempt && enabled(i)) {
                opts.push_back(i);
            }
        }
        if (!opts.empty()) break;
        if (!drain_some()) {
            bool all_done = true;
            for (auto& t : threads_) all_done = all_done && t->finished;
            if (all_done) {
                pass_to(-1);
                return;
            }
            end_execution_abort("every thread waits and no store is left to drain: deadlock or livelock");
        }
    }
    const std::size_t next = opts[choose(opts.size(), "next thread")];
    if (next == self) return;
    if (self_enabled) ++preemptions_;
    pass_to(static_cast<int>(next));
}

inline void explorer::pass_to(int next) {
    const int self = current_thread;
    std::unique_lock<std::mutex> g(mu_);
    turn_ = next;
    if (next >= 0) cur_ = static_cast<std::size_t>(next);
    notify(next);
    if (self < 0 || threads_[static_cast<std::size_t>(self)]->finished) return;
    tcv_[static_cast<std::size_t>(self)]->wait(g, [&] { return turn_ == self || aborting_; });
    if (aborting_) throw aborted{};
}

inline void explorer::end_execution_abort(const std::string& why) {
    fail(why);
    {
        std::lock_guard<std::mutex> g(mu_);
        aborting_ = true;
        turn_ = -1;
        notify_every();
    }
    throw aborted{};
}

inline void explorer::thread_main(std::size_t i) {
    current_thread = static_cast<int>(i);
    {
        std::unique_lock<std::mutex> g(mu_);
        tcv_[i]->wait(g, [&] { return turn_ == static_cast<int>(i) || aborting_; });
        if (aborting_) {
            current_thread = -1;
            return;
        }
    }
    try {
        threads_[i]->body();
    } catch (const aborted&) {
        current_thread = -1;
        return;
    } catch (const std::exception& e) {
        fail(std::string("a model thread threw: ") + e.what());
    } catch (...) {
        fail("a model thread threw");
    }
    threads_[i]->finished = true;
    try {
        schedule_next(false);
    } catch (const aborted&) {
    }
    current_thread = -1;
}

/// "p<bound>:" (the options the choices depend on), then chosen/options for each choice.
inline void explorer::pool_main(std::size_t i) {
    std::uint64_t seen = 0;
    for (;;) {
        {
            std::unique_lock<std::mutex> g(mu_);
            tcv_[i]->wait(g, [&] { return closing_ || (generation_ != seen && i < nthreads_); });
            if (closing_) return;
            seen = generation_;
        }
        thread_main(i);
        {
            std::lock_guard<std::mutex> g(mu_);
            ++ended_;
            main_cv_.notify_one();
        }
    }
}

inline std::string explorer::schedule_text() const {
    std::string s = "p" + std::to_string(opt_.random_schedules ? -1 : opt_.preemption_bound) + ":";
    for (std::size_t i = 0; i < pos_ && i < trail_.size(); ++i) {
        if (i) s += '.';
        s += std::to_string(trail_[i].first) + "/" + std::to_string(trail_[i].second);
    }
    return s;
}

/// Depth-first: the next schedule to try. False when every one was tried.
inline bool explorer::backtrack() {
    trail_.resize(std::min(trail_.size(), pos_));
    while (!trail_.empty() && trail_.back().first + 1 >= trail_.back().second) trail_.pop_back();
    if (trail_.empty()) return false;
    ++trail_.back().first;
    return true;
}

inline result explorer::run(const std::function<void()>& setup) {
    result r;
    if (!opt_.replay.empty()) {
        const auto colon = opt_.replay.find(':');
        if (opt_.replay[0] != 'p' || colon == std::string::npos) {
            r.failed = true;
            r.message = "options::replay: not a schedule this explorer printed";
            return r;
        }
        opt_.preemption_bound = std::stoi(opt_.replay.substr(1, colon - 1));
        opt_.random_schedules = 0;
        std::istringstream in(opt_.replay.substr(colon + 1));
        std::string tok;
        while (std::getline(in, tok, '.')) {
            const auto slash = tok.find('/');
            trail_.emplace_back(static_cast<std::uint32_t>(std::stoul(tok.substr(0, slash))),
                                static_cast<std::uint32_t>(std::stoul(tok.substr(slash + 1))));
        }
    }
    for (;;) {
        threads_.clear();
        finals_.clear();
        active = this;
        setup();
        pos_ = 0;
        steps_ = 0;
        preemptions_ = 0;
        aborting_ = false;
        if (opt_.random_schedules) trail_.clear();
        if (!threads_.empty()) {
            {
                std::lock_guard<std::mutex> g(mu_);
                while (pool_.size() < threads_.size()) {
                    const std::size_t i = pool_.size();
                    tcv_.push_back(std::make_unique<std::condition_variable>());
                    pool_.emplace_back([this, i] { pool_main(i); });
                }
                turn_ = -2;  // nobody: the first choice is made below
                ended_ = 0;
                nthreads_ = threads_.size();
                ++generation_;
                for (std::size_t i = 0; i < nthreads_; ++i) tcv_[i]->notify_one();
            }
            // The first thread to step is a choice too (not a preemption).
            std::size_t first = 0;
            try {
                first = choose(threads_.size(), "first thread");
            } catch (const aborted&) {
                std::lock_guard<std::mutex> g(mu_);
                aborting_ = true;
            }
            {
                std::unique_lock<std::mutex> g(mu_);
                if (!aborting_) {
                    cur_ = first;
                    turn_ = static_cast<int>(first);
                }
                if (!aborting_) notify(turn_);
                main_cv_.wait(g, [&] { return turn_ == -1 || aborting_; });
                main_cv_.wait(g, [&] { return ended_ == nthreads_; });
            }
        }
        ++r.executions;
        if (!aborting_) {
            // Every buffered store reaches memory (in a chosen order), then the checks.
            try {
                current_thread = -1;
                while (drain_some()) {
                }
            } catch (const aborted&) {
            }
            for (auto& f : finals_) f();
        }
        active = nullptr;
        if (failed_) {
            r.failed = true;
            r.message = message_;
            r.schedule = schedule_text();
            return r;
        }
        if (!opt_.replay.empty()) return r;
        if (opt_.random_schedules) {
            if (r.executions >= opt_.random_schedules) return r;
            continue;
        }
        if (!backtrack()) {
            r.complete = true;
            return r;
        }
        if (r.executions >= opt_.max_executions) return r;
    }
}

/// The explorer when called from a model thread of the running execution.
inline explorer* here() noexcept { return active && explorer::current_thread >= 0 ? active : nullptr; }

}  // namespace detail

/// An atomic whose operations are steps of the model (outside a model thread,
/// e.g. in setup or finally, they act on memory directly). T: up to 8 bytes,
/// trivially copyable. Memory orders are accepted as on std::atomic; only
/// seq_cst stores differ (they drain the store buffer), as on x86.
template <class T>
class atomic : detail::location {
    static_assert(sizeof(T) <= sizeof(std::uint64_t) && std::is_trivially_copyable_v<T>);
    static std::uint64_t enc(T v) noexcept {
        std::uint64_t u = 0;
        std::memcpy(&u, &v, sizeof v);
        return u;
    }
    static T dec(std::uint64_t u) noexcept {
        T v;
        std::memcpy(&v, &u, sizeof v);
        return v;
    }

public:
    atomic() noexcept { value = enc(T{}); }
    atomic(T v) noexcept { value = enc(v); }  // NOLINT: as std::atomic
    atomic(const atomic&) = delete;
    atomic& operator=(const atomic&) = delete;

    T load(std::memory_order = std::memory_order_seq_cst) const {
        if (auto* e = detail::here()) return dec(e->load(*this));
        return dec(value);
    }
    void store(T v, std::memory_order o = std::memory_order_seq_cst) {
        if (auto* e = detail::here()) return e->store(*this, enc(v), o == std::memory_order_seq_cst);
        value = enc(v);
    }
    T exchange(T v, std::memory_order = std::memory_order_seq_cst) {
        return modify([&](T) { return v; });
    }
    bool compare_exchange_strong(T& expected, T desired, std::memory_order = std::memory_order_seq_cst,
                                 std::memory_order = std::memory_order_seq_cst) {
        const T want = expected;
        const T old = modify([&](T cur) { return enc(cur) == enc(want) ? desired : cur; });
        if (enc(old) == enc(want)) return true;
        expected = old;
        return false;
    }
    bool compare_exchange_weak(T& expected, T desired, std::memory_order o1 = std::memory_order_seq_cst,
                               std::memory_order o2 = std::memory_order_seq_cst) {
        return compare_exchange_strong(expected, desired, o1, o2);  // never fails spuriously here
    }
    T fetch_add(T d, std::memory_order = std::memory_order_seq_cst) {
        return modify([&](T cur) { return static_cast<T>(cur + d); });
    }
    T fetch_sub(T d, std::memory_order = std::memory_order_seq_cst) {
        return modify([&](T cur) { return static_cast<T>(cur - d); });
    }
    T fetch_and(T m, std::memory_order = std::memory_order_seq_cst) {
        return modify([&](T cur) { return static_cast<T>(cur & m); });
    }
    T fetch_or(T m, std::memory_order = std::memory_order_seq_cst) {
        return modify([&](T cur) { return static_cast<T>(cur | m); });
    }

private:
    template <class F>
    T modify(F f) {
        if (auto* e = detail::here()) return dec(e->rmw(*this, [&](std::uint64_t u) { return enc(f(dec(u))); }));
        const T old = dec(value);
        value = enc(f(old));
        return old;
    }
};

/// In setup: adds a thread to this execution.
inline void thread(std::function<void()> f) { detail::active->add_thread(std::move(f)); }
/// In setup: runs after every thread ended and every store reached memory.
inline void finally(std::function<void()> f) { detail::active->add_finally(std::move(f)); }
/// Records a failure (the first one is reported, with its schedule).
inline void check(bool ok, const std::string& what) {
    if (!ok && detail::active) detail::active->fail(what);
}
/// membarrier: drains every thread's store buffer.
inline void fence_heavy() {
    if (auto* e = detail::here()) e->fence_heavy();
}
/// A compiler barrier: nothing to do in a model that never reorders a program.
inline void fence_light() noexcept {}
/// MFENCE: drains the own store buffer.
inline void fence_seq_cst() {
    if (auto* e = detail::here()) e->fence_seq_cst();
}
/// One round of a wait loop: waits until memory changes.
inline void spin() {
    if (auto* e = detail::here()) e->spin();
}

/// Runs `setup` once per schedule (it creates the state and the threads).
inline result explore(const options& o, const std::function<void()>& setup) {
    detail::explorer e(o);
    return e.run(setup);
}

/// The policy a protocol header takes (see core/slot_handoff.hpp).
struct policy {
    template <class U>
    using atomic = goro_model::atomic<U>;
    static void fence_light() noexcept {}
    static void fence_heavy() { goro_model::fence_heavy(); }
    static void spin(int&) { goro_model::spin(); }
};

/// A failure's report, for a test's INFO.
inline std::string describe(const result& r) {
    std::string s = std::to_string(r.executions) + " schedules run";
    if (r.complete) s += " (all within the bound)";
    if (r.failed) s += "; FAILED: " + r.message + "; schedule (options::replay): " + r.schedule;
    return s;
}

}  // namespace goro_model
