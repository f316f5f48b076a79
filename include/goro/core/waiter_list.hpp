// goro/core/waiter_list.hpp — the FIFO of tasks parked on a mutex, a semaphore
// or a wait group.
//
//   struct node { node* next = nullptr; task_header* task = nullptr; /* ... */ };
//   detail::waiter_list<node> waiters;          // under the primitive's lock
//   waiters.push_back(n);                       // a task parks (n lives in its awaiter)
//   auto* w = waiters.pop_front();  ... unlock ...  detail::ready(w->task);
//
// Intrusive: a node lives in its awaiter, in the parked task's frame, so
// parking allocates nothing. Which node is woken, and when, is the
// primitive's business; the list only keeps the order. Its rules:
//   * the list itself is guarded by the primitive's lock;
//   * a task is readied only after that lock is released (take the nodes
//     out under the lock, into a local list, then wake_all());
//   * once a task is readied its node may be gone with its frame: wake_all
//     reads a node's `next` before readying its task.
// wake_destroyed() is the destructor of such a primitive: tasks still parked
// would wait forever, so each is told (a flag in its node) and woken.
#pragma once

#include <cstddef>
#include <mutex>
#include <utility>

#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>

namespace goro::detail {

/// `Node` has `Node* next` and `task_header* task`; the rest is the primitive's.
template <class Node>
class waiter_list {
public:
    waiter_list() noexcept = default;
    waiter_list(waiter_list&& o) noexcept
        : head_(std::exchange(o.head_, nullptr)), tail_(std::exchange(o.tail_, nullptr)) {}
    waiter_list& operator=(waiter_list&& o) noexcept {
        head_ = std::exchange(o.head_, nullptr);
        tail_ = std::exchange(o.tail_, nullptr);
        return *this;
    }

    bool empty() const noexcept { return head_ == nullptr; }
    /// The longest-waiting node; null when empty.
    Node* front() const noexcept { return head_; }

    void push_back(Node& n) noexcept {
        n.next = nullptr;
        if (tail_) tail_->next = &n;
        else head_ = &n;
        tail_ = &n;
    }

    /// Unlinks the longest-waiting node; null when empty.
    Node* pop_front() noexcept {
        Node* n = head_;
        if (n) {
            head_ = n->next;
            if (!head_) tail_ = nullptr;
        }
        return n;
    }

    /// Moves every node of `o`, in order, behind this list's.
    void splice_back(waiter_list& o) noexcept {
        if (!o.head_) return;
        if (tail_) tail_->next = o.head_;
        else head_ = o.head_;
        tail_ = o.tail_;
        o.head_ = o.tail_ = nullptr;
    }

    std::size_t size() const noexcept {
        std::size_t n = 0;
        for (const Node* w = head_; w; w = w->next) ++n;
        return n;
    }

    /// Readies every node's task, oldest first, after `before_wake(node)`;
    /// the list is empty after. Call with no lock held.
    template <class F>
    void wake_all(F&& before_wake) noexcept {
        Node* w = std::exchange(head_, nullptr);
        tail_ = nullptr;
        while (w) {
            Node* next = w->next;  // read before the wake: the node dies with its frame
            before_wake(*w);
            ready(w->task);
            w = next;
        }
    }
    void wake_all() noexcept {
        wake_all([](Node&) noexcept {});
    }

private:
    Node* head_ = nullptr;
    Node* tail_ = nullptr;
};

/// A primitive with parked tasks is being destroyed: takes its list under
/// `lock`, then wakes every task after `mark(node, how_many)` has told its
/// node that the primitive is gone (its awaiter then throws).
template <class Node, class Lock, class Mark>
void wake_destroyed(waiter_list<Node>& list, Lock& lock, Mark&& mark) noexcept {
    waiter_list<Node> taken;
    {
        std::lock_guard<Lock> g(lock);
        taken = std::move(list);
    }
    const std::size_t n = taken.size();
    taken.wake_all([&](Node& w) noexcept { mark(w, n); });
}

}  // namespace goro::detail
