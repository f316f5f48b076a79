// goro/channel.hpp — `goro::channel<T>`: Go's channels, for goro tasks.
//
//   goro::channel<int> ch;        // unbuffered, like make(chan int)
//   goro::channel<int> jobs(64);  // buffered: a ring of 64 slots
//   goro::channel<int> nil{nullptr};  // Go's nil channel (so is a reset or moved-from handle)
//
//   co_await ch.send(v);                      // ch <- v   (throws goro::channel_closed when closed)
//   while (auto v = co_await ch.recv()) ...   // for v := range ch
//   ch.try_send(v), ch.try_recv()             // never block; say why not
//   ch.close();                               // wakes every parked receiver and sender
//
// A handle is a counted reference: copies refer to the same channel, and the
// state lives until the last handle goes. The state is one allocation (the
// header followed by the ring); an operation allocates nothing: a task that
// parks links a waiter node that lives in its awaiter, inside its own frame.
//
// ALGORITHM (after Go's runtime/chan.go)
//   One spinlock per channel guards everything below. A receiver first takes
//   from a parked sender (unbuffered: its value directly; buffered: the head
//   of the full ring, and the sender's value goes to the tail), else from the
//   ring, else parks. A sender hands its value directly to a parked receiver,
//   else appends to the ring, else parks. close() wakes every waiter: parked
//   receivers get "closed" (nullopt) once the ring is drained, parked senders
//   get channel_closed.
//
// INVARIANTS (under the lock)
//   * At least one of recvq and sendq is empty.
//   * sendq non-empty  => the ring is full (or the channel is unbuffered).
//   * recvq non-empty  => the ring is empty.
//   * closed           => sendq is empty.
//   * A waiter in a queue belongs to a parked task, or to a select whose
//     state may already be claimed by another waker: pop() claims a select's
//     waiter by a compare-and-swap on its select_core and skips (unlinks) the
//     waiters of selects that were already claimed; the select removes its
//     remaining waiters itself, under the same locks, after it wakes.
//
// WHICH THREAD DOES WHAT
//   The task that parks fills its waiter, links it under the lock, unlocks,
//   and then never touches its awaiter again (see the PARKING PROTOCOL in
//   scheduler.hpp). The waker unlinks the waiter, moves the value, sets
//   `success`, all under the lock; it calls detail::ready() only after
//   unlocking. A woken task reads what the waker wrote: ready() and the
//   scheduler's queues order the two.
//
// LOCK ORDER: channel locks in increasing address order (select), then the
// timer heap's mutex. Nothing else is taken under a channel lock; nothing is
// woken under one.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <goro/platform.hpp>
#include <goro/registry.hpp>
#include <goro/scheduler.hpp>
#include <goro/spinlock.hpp>

namespace goro {

/// Thrown by a send on a closed channel (Go panics), by a sender parked when
/// the channel closes, and by closing a channel twice.
class channel_closed : public error {
public:
    using error::error;
};

/// Why try_send did or did not send.
enum class send_status : unsigned char {
    sent,    ///< handed to a receiver or buffered
    full,    ///< no receiver waits and the buffer is full (always so for a nil channel)
    closed,  ///< the channel is closed; the value was not taken
};

/// Why try_recv did or did not receive.
enum class recv_status : unsigned char {
    received,  ///< `value` holds what was received
    empty,     ///< nothing to receive now (always so for a nil channel)
    closed,    ///< closed and drained: nothing will ever come
};

inline const char* to_string(send_status s) noexcept {
    switch (s) {
    case send_status::sent: return "sent";
    case send_status::full: return "full";
    case send_status::closed: return "closed";
    }
    return "unknown";
}

inline const char* to_string(recv_status s) noexcept {
    switch (s) {
    case recv_status::received: return "received";
    case recv_status::empty: return "empty";
    case recv_status::closed: return "closed";
    }
    return "unknown";
}

/// The result of try_recv: a status and, when received, the value.
template <class T>
struct try_recv_result {
    recv_status status = recv_status::empty;
    std::optional<T> value{};
    explicit operator bool() const noexcept { return status == recv_status::received; }
};

namespace detail {

/// The shared state of one blocking select: whoever flips `claimed` first
/// (a channel waker under its channel's lock, or the select's timer) owns the
/// wake-up, records the winning case and readies the task.
struct select_core {
    std::atomic<bool> claimed{false};
    int winner = -1;              // written by the claimer before it readies the task
    task_header* task = nullptr;  // immutable while parked

    bool try_claim(int case_index) noexcept {
        bool expected = false;
        if (!claimed.compare_exchange_strong(expected, true, std::memory_order_acq_rel, std::memory_order_relaxed))
            return false;
        winner = case_index;
        return true;
    }
};

/// A parked sender or receiver (Go's sudog). Lives in an awaiter, in the
/// parked task's frame; every field is under the channel's lock while linked.
struct chan_waiter {
    chan_waiter* next = nullptr;
    chan_waiter* prev = nullptr;
    task_header* task = nullptr;
    void* elem = nullptr;          // receiver: its std::optional<T>; sender: its T
    select_core* sel = nullptr;    // set when the waiter is one case of a select
    int case_index = 0;
    bool linked = false;
    bool success = false;          // true: a value moved; false: woken by close

    chan_waiter() = default;
    // An awaiter may be moved before it suspends; a linked node never is.
    chan_waiter(const chan_waiter&) noexcept {}
    chan_waiter& operator=(const chan_waiter&) = delete;
};

/// FIFO of parked waiters, intrusive: no allocation.
class waitq {
public:
    bool empty() const noexcept { return first_ == nullptr; }

    void push(chan_waiter* w) noexcept {
        w->next = nullptr;
        w->prev = last_;
        if (last_) last_->next = w;
        else first_ = w;
        last_ = w;
        w->linked = true;
    }

    /// The first waiter that can still be woken: a plain one, or a select's
    /// whose state this call claims. Waiters of already claimed selects are
    /// unlinked and skipped (their select will not look for them).
    chan_waiter* pop() noexcept {
        while (chan_waiter* w = first_) {
            unlink(w);
            if (!w->sel || w->sel->try_claim(w->case_index)) return w;
        }
        return nullptr;
    }

    /// Unlinks `w` if it is still linked (a select cleaning up after itself).
    void remove(chan_waiter* w) noexcept {
        if (w->linked) unlink(w);
    }

private:
    void unlink(chan_waiter* w) noexcept {
        if (w->prev) w->prev->next = w->next;
        else first_ = w->next;
        if (w->next) w->next->prev = w->prev;
        else last_ = w->prev;
        w->next = w->prev = nullptr;
        w->linked = false;
    }

    chan_waiter* first_ = nullptr;
    chan_waiter* last_ = nullptr;
};

/// What every channel has, whatever its element type: select sorts and locks
/// channels through this.
struct chan_base {
    std::atomic<std::size_t> refs{1};
    spinlock lock;
    bool closed = false;                // under lock
    std::size_t cap = 0;                // immutable
    std::size_t head = 0;               // under lock: index of the oldest buffered value
    std::atomic<std::size_t> count{0};  // written under lock; read without it by size()
    waitq recvq;
    waitq sendq;

    explicit chan_base(std::size_t capacity) noexcept : cap(capacity) {}
};

/// Outcome of an operation attempted under the lock, and the task the caller
/// must ready once it has unlocked.
template <class Status>
struct locked_result {
    Status status;
    task_header* wake;
};

/// Moves the waiters collected by close() onto the run queues. No lock held.
inline void ready_list(chan_waiter* w) noexcept {
    while (w) {
        chan_waiter* next = w->next;  // read first: once readied, the task may free `w`
        ready(w->task);
        w = next;
    }
}

template <class T>
struct chan_state : chan_base {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "goro::channel<T>: T must be nothrow move constructible (values move under the channel's lock)");
    static_assert(std::is_nothrow_destructible_v<T>, "goro::channel<T>: T must be nothrow destructible");

    explicit chan_state(std::size_t capacity) noexcept : chan_base(capacity) {}
    chan_state(const chan_state&) = delete;
    chan_state& operator=(const chan_state&) = delete;

    ~chan_state() {
        std::size_t n = count.load(std::memory_order_relaxed);
        for (std::size_t i = 0, at = head; i < n; ++i) {
            slot(at)->~T();
            if (++at == cap) at = 0;
        }
    }

    // --- one allocation: the header, then the ring -------------------------

    static constexpr std::size_t align = alignof(T) > alignof(chan_base) ? alignof(T) : alignof(chan_base);
    static constexpr std::size_t ring_offset = (sizeof(chan_state) + alignof(T) - 1) / alignof(T) * alignof(T);

    static chan_state* create(std::size_t capacity) {
        if (capacity > (std::size_t(-1) - ring_offset) / (sizeof(T) ? sizeof(T) : 1))
            throw std::length_error("goro::channel: capacity too large");
        void* p = ::operator new(ring_offset + capacity * sizeof(T), std::align_val_t(align));
        return ::new (p) chan_state(capacity);
    }

    static void destroy(chan_state* s) noexcept {
        s->~chan_state();
        ::operator delete(static_cast<void*>(s), std::align_val_t(align));
    }

    void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(this);
    }

    /// Raw storage of ring slot `i` (for placement new).
    void* raw(std::size_t i) noexcept { return reinterpret_cast<unsigned char*>(this) + ring_offset + i * sizeof(T); }
    /// The live value in ring slot `i`.
    T* slot(std::size_t i) noexcept { return std::launder(static_cast<T*>(raw(i))); }

    // --- operations, channel locked ----------------------------------------

    /// Sends `v` without blocking: to a parked receiver, else into the ring.
    /// Moves from `v` only when the status is `sent`.
    locked_result<send_status> send_locked(T& v) noexcept {
        if (closed) return {send_status::closed, nullptr};
        if (chan_waiter* w = recvq.pop()) {
            static_cast<std::optional<T>*>(w->elem)->emplace(std::move(v));
            w->success = true;
            return {send_status::sent, w->task};
        }
        std::size_t n = count.load(std::memory_order_relaxed);
        if (n < cap) {
            std::size_t tail = head + n;
            if (tail >= cap) tail -= cap;
            ::new (raw(tail)) T(std::move(v));
            count.store(n + 1, std::memory_order_relaxed);
            return {send_status::sent, nullptr};
        }
        return {send_status::full, nullptr};
    }

    /// Receives into `out` without blocking: from a parked sender (through
    /// the ring when buffered, so FIFO order holds), else from the ring.
    locked_result<recv_status> recv_locked(std::optional<T>& out) noexcept {
        if (chan_waiter* w = sendq.pop()) {
            T& src = *static_cast<T*>(w->elem);
            if (cap == 0) {
                out.emplace(std::move(src));
            } else {
                // The ring is full: take its head, put the sender's value at its tail.
                T* s = slot(head);
                out.emplace(std::move(*s));
                s->~T();
                ::new (raw(head)) T(std::move(src));
                if (++head == cap) head = 0;
            }
            w->success = true;
            return {recv_status::received, w->task};
        }
        std::size_t n = count.load(std::memory_order_relaxed);
        if (n > 0) {
            T* s = slot(head);
            out.emplace(std::move(*s));
            s->~T();
            if (++head == cap) head = 0;
            count.store(n - 1, std::memory_order_relaxed);
            return {recv_status::received, nullptr};
        }
        if (closed) return {recv_status::closed, nullptr};
        return {recv_status::empty, nullptr};
    }

    /// Closes the channel and returns every waiter to wake (linked through
    /// `next`), or throws when it was closed already. Lock NOT held on entry.
    void close(const char* op) {
        chan_waiter* first = nullptr;
        chan_waiter* last = nullptr;
        auto collect = [&](chan_waiter* w) {
            w->success = false;
            w->next = nullptr;
            if (last) last->next = w;
            else first = w;
            last = w;
        };
        lock.lock();
        if (closed) {
            lock.unlock();
            throw channel_closed(std::string(op) + ": close of closed channel");
        }
        closed = true;
        while (chan_waiter* w = recvq.pop()) collect(w);
        while (chan_waiter* w = sendq.pop()) collect(w);
        lock.unlock();
        ready_list(first);
    }
};

// --- awaiters ---------------------------------------------------------------

/// `co_await ch.send(v)`. Holds the value until it is delivered; when the send
/// fails (closed) the value was not delivered and is destroyed with the awaiter.
template <class T>
class [[nodiscard]] send_op {
public:
    send_op(chan_state<T>* c, T&& v) noexcept : ch_(c), value_(std::move(v)) {}
    send_op(chan_state<T>* c, const T& v) : ch_(c), value_(v) {}
    send_op(send_op&& o) noexcept : ch_(o.ch_), value_(std::move(o.value_)) {}
    send_op& operator=(send_op&&) = delete;

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::channel::send");
        chan_state<T>* c = ch_;
        if (!c) {
            park(self, h, wait_reason::chan_send_nil);  // never published: parks forever, like Go
            return true;
        }
        c->lock.lock();
        auto r = c->send_locked(value_);
        if (r.status != send_status::full) {
            c->lock.unlock();
            state_ = r.status == send_status::sent ? done : failed;
            if (r.wake) ready(r.wake);
            return false;
        }
        park(self, h, wait_reason::chan_send);
        state_ = parked;
        waiter_.task = self;
        waiter_.elem = &value_;
        waiter_.sel = nullptr;
        waiter_.success = false;
        c->sendq.push(&waiter_);
        c->lock.unlock();  // published: from here on a receiver may resume us
        return true;
    }

    void await_resume() const {
        if (state_ == failed || (state_ == parked && !waiter_.success))
            throw channel_closed("goro::channel::send: send on closed channel");
    }

private:
    enum op_state : unsigned char { idle, done, failed, parked };
    chan_state<T>* ch_;
    T value_;
    chan_waiter waiter_{};
    op_state state_ = idle;
};

/// `co_await ch.recv()`: the value, or nullopt once closed and drained.
template <class T>
class [[nodiscard]] recv_op {
public:
    explicit recv_op(chan_state<T>* c) noexcept : ch_(c) {}
    recv_op(recv_op&& o) noexcept : ch_(o.ch_) {}
    recv_op& operator=(recv_op&&) = delete;

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) {
        task_header* self = current_task_or_throw("goro::channel::recv");
        chan_state<T>* c = ch_;
        if (!c) {
            park(self, h, wait_reason::chan_receive_nil);  // never published: parks forever
            return true;
        }
        c->lock.lock();
        auto r = c->recv_locked(out_);
        if (r.status != recv_status::empty) {
            c->lock.unlock();
            if (r.wake) ready(r.wake);
            return false;
        }
        park(self, h, wait_reason::chan_receive);
        waiter_.task = self;
        waiter_.elem = &out_;
        waiter_.sel = nullptr;
        waiter_.success = false;
        c->recvq.push(&waiter_);
        c->lock.unlock();  // published: from here on a sender or close may resume us
        return true;
    }

    // A sender filled out_ (success) or close left it empty.
    std::optional<T> await_resume() noexcept { return std::move(out_); }

private:
    chan_state<T>* ch_;
    chan_waiter waiter_{};
    std::optional<T> out_{};
};

}  // namespace detail

/// A channel of T: a counted handle to a shared queue (see the top of this file).
template <class T>
class channel {
public:
    using value_type = T;

    /// An unbuffered channel (make(chan T)).
    channel() : s_(state_type::create(0)) {}
    /// A channel with a buffer of `capacity` values (make(chan T, capacity)).
    explicit channel(std::size_t capacity) : s_(state_type::create(capacity)) {}
    /// Go's nil channel: send and receive park forever, a select case on it never fires.
    channel(std::nullptr_t) noexcept {}

    channel(const channel& o) noexcept : s_(o.s_) {
        if (s_) s_->add_ref();
    }
    channel(channel&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    channel& operator=(const channel& o) noexcept {
        if (o.s_) o.s_->add_ref();
        reset();
        s_ = o.s_;
        return *this;
    }
    channel& operator=(channel&& o) noexcept {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    ~channel() { reset(); }

    /// Drops this handle's reference; the handle becomes a nil channel.
    void reset() noexcept {
        if (s_) std::exchange(s_, nullptr)->release();
    }

    /// True unless this is a nil channel.
    explicit operator bool() const noexcept { return s_ != nullptr; }
    bool is_nil() const noexcept { return s_ == nullptr; }

    /// `co_await ch.send(v)`: waits until a receiver took `v` (unbuffered) or
    /// it is buffered. Throws goro::channel_closed on a closed channel.
    detail::send_op<T> send(T&& v) noexcept { return {s_, std::move(v)}; }
    detail::send_op<T> send(const T& v)
        requires std::is_copy_constructible_v<T>
    {
        return {s_, v};
    }

    /// `co_await ch.recv()`: a value, or std::nullopt once closed and drained.
    detail::recv_op<T> recv() const noexcept { return detail::recv_op<T>{s_}; }

    /// Sends without blocking. Moves from `v` only when it returns `sent`.
    send_status try_send(T&& v) { return try_send_ref(v); }
    send_status try_send(const T& v)
        requires std::is_copy_constructible_v<T>
    {
        T copy(v);
        return try_send_ref(copy);
    }

    /// Receives without blocking.
    try_recv_result<T> try_recv() {
        try_recv_result<T> res;
        if (!s_) return res;
        s_->lock.lock();
        auto r = s_->recv_locked(res.value);
        s_->lock.unlock();
        res.status = r.status;
        if (r.wake) detail::ready(r.wake);
        return res;
    }

    /// Closes the channel: buffered values can still be received, then every
    /// receive yields nullopt; every parked receiver and sender wakes. Closing
    /// twice throws goro::channel_closed; closing a nil channel throws goro::usage_error.
    void close() {
        if (!s_) throw usage_error("goro::channel::close: close of nil channel");
        s_->close("goro::channel::close");
    }

    /// Values buffered now (a moment's view).
    std::size_t size() const noexcept { return s_ ? s_->count.load(std::memory_order_relaxed) : 0; }
    /// The buffer's capacity (0: unbuffered or nil).
    std::size_t capacity() const noexcept { return s_ ? s_->cap : 0; }

    friend bool operator==(const channel& a, const channel& b) noexcept { return a.s_ == b.s_; }

    /// The shared state (select uses it); null for a nil channel.
    detail::chan_state<T>* state() const noexcept { return s_; }

private:
    using state_type = detail::chan_state<T>;

    send_status try_send_ref(T& v) {
        if (!s_) return send_status::full;
        s_->lock.lock();
        auto r = s_->send_locked(v);
        s_->lock.unlock();
        if (r.wake) detail::ready(r.wake);
        return r.status;
    }

    state_type* s_ = nullptr;
};

}  // namespace goro
