#ifndef GORO_HTTP_SERVER_HPP
#define GORO_HTTP_SERVER_HPP

// The debug server's options and its connection loop: detail::debug_server_state
// owns the listening socket, the connections and the route table, and runs on
// its own thread. goro::debug_server (goro/http/debug_server.hpp) is the handle
// a program holds; see there for the behaviour as a whole.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <goro/http/request.hpp>
#include <goro/http/response.hpp>
#include <goro/http/address.hpp>

namespace goro {

struct debug_server_options {
    // An IPv4 or IPv6 literal ("127.0.0.1", "::1", "[::1]") or "localhost"
    // (meaning 127.0.0.1). Host names are not resolved. An IPv4-mapped IPv6
    // literal ("::ffff:127.0.0.1") is bound as the IPv4 address it maps.
    std::string address = "127.0.0.1";
    // 0 picks a free port; debug_server::port() tells which.
    std::uint16_t port = 6060;
    // Required to bind anything outside 127.0.0.0/8 and ::1.
    bool allow_non_loopback = false;
    // Non-empty: every request needs "Authorization: Bearer <token>".
    // Must be a non-empty run of visible ASCII without spaces (RFC 6750 b64token).
    std::string bearer_token;
    // While bound to loopback, reject requests whose Host is not a loopback
    // name (DNS rebinding protection). Ignored when bound elsewhere.
    bool check_host = true;
    // Deadline for a whole request head (and for an idle keep-alive connection).
    std::chrono::milliseconds read_timeout{5000};
    // Deadline for writing a whole response.
    std::chrono::milliseconds write_timeout{30000};
    // Connections served at once; more wait in the listen backlog.
    std::size_t max_connections = 16;
    // After this many requests a keep-alive connection is closed.
    std::size_t max_requests_per_connection = 1000;
    debug_server_limits limits{};
    // The goroutine routes (/debug/pprof/goroutine, /debug/goro/tasks.json,
    // /metrics, and the goroutine row of /debug/pprof/): the constructor calls
    // goro::register_default_routes(). False: only /debug/pprof/ and what the
    // program registers itself.
    bool with_default_routes = true;
};

// Counters, read with relaxed loads: each is exact, the set is not a snapshot.
struct debug_server_stats {
    std::uint64_t connections_accepted = 0;
    std::uint64_t connections_evicted = 0;   // idle keep-alive closed to make room
    std::uint64_t requests = 0;              // complete, parsed request heads
    std::uint64_t bad_requests = 0;          // heads rejected by the parser (4xx/505)
    std::uint64_t timeouts = 0;              // read or write deadline expired
    std::uint64_t handler_errors = 0;        // handler threw or returned an invalid response
};

namespace detail {

// ---------------------------------------------------------------------------
// detail: the server's state, shared by the debug_server handle and its thread
// ---------------------------------------------------------------------------
//
// Lock order: lifecycle_mutex_ (start/stop) is never held while taking
// routes_mutex_ from the server thread; routes_mutex_ is a leaf and is never
// held while calling user code (handlers, count callbacks).
//
// Connection life cycle, on the server thread only:
//
//    accept --> reading --(head complete)--> handler --> writing --+--> reading (keep-alive)
//                 |  (parse error / timeout: error response) ------^    |
//                 |                                                     +--> lingering --> closed
//                 +--(EOF, error, stop)--> closed
//
// "lingering": after the last response the write side is shut down and what
// the client still sends is read and discarded for a moment, so that closing
// does not reset the connection (a RST can destroy the response before the
// client has read it, e.g. a 431 sent while the client still writes headers).

class debug_server_state {
public:
    explicit debug_server_state(debug_server_options opts, socket_address addr)
        : opts_(std::move(opts)), addr_(std::move(addr)) {}

    debug_server_state(const debug_server_state&) = delete;
    debug_server_state& operator=(const debug_server_state&) = delete;

    ~debug_server_state() { stop(); }

    const debug_server_options& options() const noexcept { return opts_; }
    const socket_address& address() const noexcept { return addr_; }
    std::uint16_t port() const noexcept { return port_.load(std::memory_order_acquire); }
    bool running() const noexcept { return running_.load(std::memory_order_acquire); }

    debug_server_stats stats() const noexcept {
        debug_server_stats s;
        s.connections_accepted = connections_accepted_.load(std::memory_order_relaxed);
        s.connections_evicted = connections_evicted_.load(std::memory_order_relaxed);
        s.requests = requests_.load(std::memory_order_relaxed);
        s.bad_requests = bad_requests_.load(std::memory_order_relaxed);
        s.timeouts = timeouts_.load(std::memory_order_relaxed);
        s.handler_errors = handler_errors_.load(std::memory_order_relaxed);
        return s;
    }

    void start();
    void stop();

    void handle(std::string path, debug_handler handler) {
        if (path.empty() || path.front() != '/')
            throw std::invalid_argument("goro::debug_server::handle: path must start with '/': '" +
                                        path + "'");
        if (!handler) throw std::invalid_argument("goro::debug_server::handle: empty handler for " + path);
        auto h = std::make_shared<const debug_handler>(std::move(handler));
        std::lock_guard lock(routes_mutex_);
        routes_[std::move(path)] = std::move(h);
    }

    bool remove_handler(std::string_view path) {
        std::lock_guard lock(routes_mutex_);
        auto it = routes_.find(std::string(path));
        if (it == routes_.end()) return false;
        routes_.erase(it);
        return true;
    }

    void add_profile(debug_profile profile) {
        const std::string& n = profile.name;
        bool ok = !n.empty();
        for (char c : n)
            ok = ok && (c == '_' || c == '-' || c == '.' || (c >= '0' && c <= '9') ||
                        ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'));
        if (!ok)
            throw std::invalid_argument("goro::debug_server::add_profile: invalid profile name '" + n +
                                        "' (want [A-Za-z0-9_.-]+)");
        if (profile.handler) handle("/debug/pprof/" + n, profile.handler);
        auto entry = std::make_shared<const profile_entry>(
            profile_entry{profile.name, profile.description, std::move(profile.count)});
        std::lock_guard lock(routes_mutex_);
        auto it = std::find_if(profiles_.begin(), profiles_.end(),
                               [&](const auto& e) { return e->name == entry->name; });
        if (it != profiles_.end()) *it = std::move(entry);
        else profiles_.push_back(std::move(entry));
        std::sort(profiles_.begin(), profiles_.end(),
                  [](const auto& a, const auto& b) { return a->name < b->name; });
    }

    void add_index_link(std::string href, std::string text) {
        std::lock_guard lock(routes_mutex_);
        for (auto& [h, t] : index_links_)
            if (h == href) {
                t = std::move(text);
                return;
            }
        index_links_.emplace_back(std::move(href), std::move(text));
    }

    // The /debug/pprof/ page.
    std::string render_index();

private:
    struct profile_entry {
        std::string name;
        std::string description;
        std::function<std::int64_t()> count;
    };

    enum class phase { reading, writing, lingering };

    struct connection {
        int fd = -1;
        phase state = phase::reading;
        std::string in;             // received, not yet consumed
        bool need_parse = false;    // new bytes worth a parse arrived
        bool peer_eof = false;      // the client shut its write side
        std::string out_head;       // response being written
        std::string out_body;
        std::size_t out_sent = 0;
        bool close_after = false;
        std::size_t requests = 0;
        std::size_t drained = 0;
        std::chrono::steady_clock::time_point deadline{};
        std::string peer;
    };

    using clock = std::chrono::steady_clock;

    // Head bytes beyond which the parser must have answered (see parse_http_request).
    std::size_t head_cap() const noexcept {
        const auto& l = opts_.limits;
        return 2 * (l.max_request_line + 2) + l.max_header_bytes + 1;
    }

    void run() noexcept;
    void refuse_on_server_thread(const char* op) const;
    void accept_new(clock::time_point now);
    void on_event(connection& c, short revents);
    void read_some(connection& c);
    void process(connection& c);
    void respond(connection& c, const http_request_head& head);
    void respond_error(connection& c, int status, std::string_view reason, bool head_only = false);
    // Takes r.body (a dump can be large: moved, not copied).
    void start_write(connection& c, int status, debug_response& r, bool head_only,
                     std::string_view connection_header);
    void write_some(connection& c);
    void finish_response(connection& c);
    void drain(connection& c);
    void close_connection(connection& c) noexcept;
    bool host_allowed(const http_request_head& head) const;
    // False means 401, with the WWW-Authenticate value in `challenge`.
    bool authorized(const http_request_head& head, std::string& challenge) const;

    debug_server_options opts_;
    socket_address addr_;

    std::mutex lifecycle_mutex_;  // start/stop
    std::thread thread_;
    std::atomic<std::thread::id> server_thread_{};
    std::atomic<bool> running_{false};
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint16_t> port_{0};
    int listen_fd_ = -1;
    int wake_read_ = -1;
    int wake_write_ = -1;

    // Owned by the server thread while running.
    std::vector<connection> conns_;
    clock::time_point accept_paused_until_{};

    mutable std::mutex routes_mutex_;
    std::unordered_map<std::string, std::shared_ptr<const debug_handler>> routes_;
    std::vector<std::shared_ptr<const profile_entry>> profiles_;
    std::vector<std::pair<std::string, std::string>> index_links_;

    std::atomic<std::uint64_t> connections_accepted_{0}, connections_evicted_{0}, requests_{0},
        bad_requests_{0}, timeouts_{0}, handler_errors_{0};
};

inline void debug_server_state::start() {
    refuse_on_server_thread("start");
    std::lock_guard lock(lifecycle_mutex_);
    if (running_.load(std::memory_order_relaxed))
        throw std::logic_error("goro::debug_server::start: already running");
    const std::string where = addr_.family == AF_INET6
                                  ? "[" + addr_.text + "]:" + std::to_string(opts_.port)
                                  : addr_.text + ":" + std::to_string(opts_.port);
    auto fail = [&](int err, const std::string& what) {
        close_fd(listen_fd_);
        close_fd(wake_read_);
        close_fd(wake_write_);
        throw std::system_error(err, std::generic_category(), "goro::debug_server::start: " + what);
    };

    conns_.assign(opts_.max_connections, connection{});  // may throw: before any fd exists
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) fail(errno, "pipe");
    wake_read_ = pipe_fds[0];
    wake_write_ = pipe_fds[1];
    set_cloexec_nonblock(wake_read_);
    set_cloexec_nonblock(wake_write_);

    int type = SOCK_STREAM;
#ifdef SOCK_CLOEXEC
    type |= SOCK_CLOEXEC;
#endif
    listen_fd_ = ::socket(addr_.family, type, 0);
    if (listen_fd_ < 0) fail(errno, "socket for " + where);
    set_cloexec_nonblock(listen_fd_);
    int one = 1;
    // Lets a restarted server rebind while old connections sit in TIME_WAIT.
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr_.family == AF_INET6) ::setsockopt(listen_fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);

    sockaddr_storage sa = addr_.storage;
    if (addr_.family == AF_INET) reinterpret_cast<sockaddr_in*>(&sa)->sin_port = htons(opts_.port);
    else reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port = htons(opts_.port);
    if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&sa), addr_.length) != 0)
        fail(errno, "bind " + where);
    if (::listen(listen_fd_, 128) != 0) fail(errno, "listen " + where);

    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len) != 0)
        fail(errno, "getsockname " + where);
    std::uint16_t p = bound.ss_family == AF_INET
                          ? ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port)
                          : ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);

    stopping_.store(false, std::memory_order_relaxed);
    try {
        thread_ = std::thread([this] { run(); });
    } catch (const std::system_error& e) {
        fail(e.code().value(), "thread");
    }
    port_.store(p, std::memory_order_release);
    running_.store(true, std::memory_order_release);
}

inline void debug_server_state::refuse_on_server_thread(const char* op) const {
    // Checked before taking lifecycle_mutex_: a stop() on another thread may
    // hold it while joining this very thread.
    if (server_thread_.load(std::memory_order_acquire) == std::this_thread::get_id())
        throw std::logic_error(std::string("goro::debug_server::") + op +
                               ": called from the server's own thread (inside a handler); "
                               "it would wait for itself");
}

inline void debug_server_state::stop() {
    refuse_on_server_thread("stop");
    std::lock_guard lock(lifecycle_mutex_);
    if (!thread_.joinable()) return;
    stopping_.store(true, std::memory_order_release);
    char byte = 1;
    // The pipe is non-blocking; if it is full the thread is already being woken.
    [[maybe_unused]] auto n = ::write(wake_write_, &byte, 1);
    thread_.join();
    server_thread_.store(std::thread::id{}, std::memory_order_release);
    // The thread closed its connections on the way out.
    close_fd(listen_fd_);
    close_fd(wake_read_);
    close_fd(wake_write_);
    conns_.clear();
    running_.store(false, std::memory_order_release);
}

inline void debug_server_state::run() noexcept {
    server_thread_.store(std::this_thread::get_id(), std::memory_order_release);
    std::vector<pollfd> fds;
    std::vector<std::size_t> slot_of;
    fds.reserve(conns_.size() + 2);
    slot_of.reserve(conns_.size());
    for (;;) {
        if (stopping_.load(std::memory_order_acquire)) break;
        const auto now = clock::now();

        // Deadlines.
        for (auto& c : conns_) {
            if (c.fd < 0 || now < c.deadline) continue;
            if (c.state == phase::reading && !c.in.empty()) {
                timeouts_.fetch_add(1, std::memory_order_relaxed);
                try {
                    respond_error(c, 408, "request head not received within read_timeout",
                                  starts_head_request(c.in));
                } catch (...) {
                    close_connection(c);
                }
            } else if (c.state == phase::reading && c.requests == 0) {
                // Connected, sent nothing: tell it why before closing.
                timeouts_.fetch_add(1, std::memory_order_relaxed);
                try {
                    respond_error(c, 408, "no request received within read_timeout");
                } catch (...) {
                    close_connection(c);
                }
            } else {
                // An idle keep-alive connection is closed silently (a 408 could
                // race a request the client is just sending); a response not
                // written in time or a lingering close are simply ended.
                if (c.state == phase::writing) timeouts_.fetch_add(1, std::memory_order_relaxed);
                close_connection(c);
            }
        }

        bool free_slot = false, idle_slot = false;
        for (const auto& c : conns_) {
            if (c.fd < 0) free_slot = true;
            else if (c.state == phase::reading && c.requests > 0 && c.in.empty()) idle_slot = true;
        }
        const bool accepting = (free_slot || idle_slot) && now >= accept_paused_until_;

        fds.clear();
        slot_of.clear();
        fds.push_back(pollfd{wake_read_, POLLIN, 0});
        if (accepting) fds.push_back(pollfd{listen_fd_, POLLIN, 0});
        const std::size_t first_conn = fds.size();
        auto next_deadline = clock::time_point::max();
        if (!accepting && free_slot) next_deadline = accept_paused_until_;
        for (std::size_t i = 0; i < conns_.size(); ++i) {
            const auto& c = conns_[i];
            if (c.fd < 0) continue;
            fds.push_back(pollfd{c.fd, static_cast<short>(c.state == phase::writing ? POLLOUT : POLLIN), 0});
            slot_of.push_back(i);
            next_deadline = std::min(next_deadline, c.deadline);
        }
        int timeout_ms = -1;
        if (next_deadline != clock::time_point::max()) {
            auto left = std::chrono::ceil<std::chrono::milliseconds>(next_deadline - now).count();
            timeout_ms = static_cast<int>(std::clamp<long long>(left, 0, 60'000));
        }

        int n = ::poll(fds.data(), static_cast<nfds_t>(fds.size()), timeout_ms);
        if (n < 0) {
            if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        if (fds[0].revents != 0) {
            char buf[64];
            while (::read(wake_read_, buf, sizeof buf) > 0) {
            }
        }
        if (stopping_.load(std::memory_order_acquire)) break;

        for (std::size_t k = first_conn; k < fds.size(); ++k) {
            if (fds[k].revents == 0) continue;
            auto& c = conns_[slot_of[k - first_conn]];
            if (c.fd != fds[k].fd) continue;
            try {
                on_event(c, fds[k].revents);
            } catch (...) {
                // Out of memory or the like while serving this one: drop it.
                close_connection(c);
            }
        }
        if (accepting && (fds[1].revents & (POLLIN | POLLERR)) != 0) {
            try {
                accept_new(clock::now());
            } catch (...) {
                accept_paused_until_ = clock::now() + std::chrono::milliseconds(100);
            }
        }
    }
    for (auto& c : conns_) close_connection(c);
}

inline void debug_server_state::accept_new(clock::time_point now) {
    for (;;) {
        auto slot = std::find_if(conns_.begin(), conns_.end(), [](const connection& c) { return c.fd < 0; });
        if (slot == conns_.end()) {
            // Full: make room by closing an idle keep-alive connection, if any.
            slot = std::find_if(conns_.begin(), conns_.end(), [](const connection& c) {
                return c.state == phase::reading && c.requests > 0 && c.in.empty();
            });
            if (slot == conns_.end()) return;
            close_connection(*slot);
            connections_evicted_.fetch_add(1, std::memory_order_relaxed);
        }
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        int fd = ::accept(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
                accept_paused_until_ = now + std::chrono::milliseconds(100);
            return;  // EAGAIN: nothing more pending
        }
        set_cloexec_nonblock(fd);
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#if !defined(MSG_NOSIGNAL) && defined(SO_NOSIGPIPE)
        ::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
        connection& c = *slot;
        c = connection{};
        c.fd = fd;
        c.deadline = now + opts_.read_timeout;
        c.peer = format_endpoint(reinterpret_cast<const sockaddr*>(&peer));
        connections_accepted_.fetch_add(1, std::memory_order_relaxed);
    }
}

inline void debug_server_state::on_event(connection& c, short revents) {
    if ((revents & POLLNVAL) != 0) {
        c.fd = -1;  // not an open fd: nothing to close, just free the slot
        close_connection(c);
        return;
    }
    switch (c.state) {
    case phase::reading:
        if ((revents & (POLLIN | POLLHUP | POLLERR)) != 0) read_some(c);
        break;
    case phase::writing:
        if ((revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
            write_some(c);
            // Written in full on a keep-alive connection: serve what was pipelined.
            if (c.fd >= 0 && c.state == phase::reading) process(c);
        }
        break;
    case phase::lingering:
        if ((revents & (POLLIN | POLLHUP | POLLERR)) != 0) drain(c);
        break;
    }
}

inline void debug_server_state::read_some(connection& c) {
    const std::size_t cap = head_cap();
    const std::size_t before = c.in.size();
    char buf[16 * 1024];
    while (c.in.size() < cap) {
        std::size_t want = std::min(sizeof buf, cap - c.in.size());
        ssize_t n = ::recv(c.fd, buf, want, 0);
        if (n > 0) {
            c.in.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            c.peer_eof = true;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        close_connection(c);  // ECONNRESET and friends
        return;
    }
    // Parse only when it can tell something new: a line ended, the first bytes
    // arrived (rejects e.g. a TLS handshake at once), the request line grew past
    // its limit, or the buffer is full.
    const std::size_t rl = opts_.limits.max_request_line + 2;
    if (std::memchr(c.in.data() + before, '\n', c.in.size() - before) != nullptr || before == 0 ||
        (before <= rl && c.in.size() > rl) || c.in.size() >= cap)
        c.need_parse = true;
    process(c);
}

inline void debug_server_state::process(connection& c) {
    while (c.fd >= 0 && c.state == phase::reading) {
        if (c.in.empty() || !c.need_parse) {
            if (c.peer_eof) close_connection(c);
            return;
        }
        c.need_parse = false;
        http_parse_result r = parse_http_request(c.in, opts_.limits);
        if (r.status == http_parse_status::incomplete) {
            if (c.in.size() >= head_cap()) {  // cannot happen by the parser's contract; be safe
                bad_requests_.fetch_add(1, std::memory_order_relaxed);
                respond_error(c, 431, "request head too large", starts_head_request(c.in));
            } else if (c.peer_eof) {
                close_connection(c);
            }
            return;
        }
        if (r.status == http_parse_status::error) {
            bad_requests_.fetch_add(1, std::memory_order_relaxed);
            respond_error(c, r.error_status, r.error_reason, starts_head_request(c.in));
            return;
        }
        requests_.fetch_add(1, std::memory_order_relaxed);
        ++c.requests;
        c.close_after = !r.request.keep_alive || r.request.has_body || c.peer_eof ||
                        c.requests >= opts_.max_requests_per_connection ||
                        stopping_.load(std::memory_order_relaxed);
        c.in.erase(0, r.consumed);
        c.need_parse = !c.in.empty();
        respond(c, r.request);  // writes now if it can; back to reading if it all went out
    }
}

inline bool debug_server_state::host_allowed(const http_request_head& head) const {
    if (!opts_.check_host || !addr_.loopback) return true;
    if (!head.authority.empty()) return is_loopback_host(head.authority);
    auto host = std::find_if(head.headers.begin(), head.headers.end(),
                             [](const auto& h) { return iequals(h.first, "host"); });
    if (host == head.headers.end() || host->second.empty()) return true;  // HTTP/1.0 or no authority
    return is_loopback_host(host->second);
}

inline bool debug_server_state::authorized(const http_request_head& head, std::string& challenge) const {
    if (opts_.bearer_token.empty()) return true;
    std::optional<std::string_view> value;
    int seen = 0;
    for (const auto& [k, v] : head.headers)
        if (iequals(k, "authorization")) {
            ++seen;
            value = v;
        }
    challenge = "Bearer realm=\"goro debug server\"";
    if (seen != 1) return false;
    std::string_view v = *value;
    if (v.size() < 7 || !iequals(v.substr(0, 6), "bearer") || (v[6] != ' ' && v[6] != '\t')) return false;
    v.remove_prefix(7);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    if (constant_time_equal(v, opts_.bearer_token)) return true;
    challenge += ", error=\"invalid_token\"";
    return false;
}

inline void debug_server_state::respond(connection& c, const http_request_head& head) {
    const bool head_only = head.method == "HEAD";
    debug_response resp;
    std::string challenge;
    auto plain = [&](int status, std::string body) {
        resp = debug_response{};
        resp.status = status;
        resp.body = std::move(body);
    };
    if (!host_allowed(head)) {
        plain(403, "403 Forbidden: Host is not a loopback name (DNS rebinding protection; "
                   "see goro::debug_server_options::check_host)\n");
    } else if (!authorized(head, challenge)) {
        plain(401, "401 Unauthorized: this server requires \"Authorization: Bearer <token>\"\n");
        resp.headers.emplace_back("WWW-Authenticate", challenge);
    } else if (head.method != "GET" && head.method != "HEAD") {
        plain(405, "405 Method Not Allowed: only GET and HEAD\n");
        resp.headers.emplace_back("Allow", "GET, HEAD");
    } else {
        std::shared_ptr<const debug_handler> handler;
        bool redirect = false;
        {
            std::lock_guard lock(routes_mutex_);
            auto it = routes_.find(head.path);
            if (it != routes_.end()) handler = it->second;
            else if (head.path.back() != '/') redirect = routes_.count(head.path + "/") != 0;
        }
        if (handler) {
            debug_request req;
            req.method_ = head.method;
            req.path_ = head.path;
            req.target_ = head.target;
            req.raw_query_ = head.raw_query;
            req.params_ = head.query;
            req.headers_ = head.headers;
            req.version_minor_ = head.version_minor;
            req.remote_ = c.peer;
            try {
                (*handler)(req, resp);
                if (std::string why = check_response(resp); !why.empty()) {
                    handler_errors_.fetch_add(1, std::memory_order_relaxed);
                    plain(500, "500 Internal Server Error: " + why + "\n");
                }
            } catch (const std::exception& e) {
                handler_errors_.fetch_add(1, std::memory_order_relaxed);
                plain(500, utf8_escaped(e.what()) + "\n");
            } catch (...) {
                handler_errors_.fetch_add(1, std::memory_order_relaxed);
                plain(500, "handler threw an exception not derived from std::exception\n");
            }
        } else if (redirect) {
            // raw_path is plain visible ASCII (checked by the parser): safe in a header.
            std::string location = head.raw_path + "/";
            if (!head.raw_query.empty()) location += "?" + head.raw_query;
            // The body echoes the target: HTML-escaped, as Go's http.Redirect does.
            std::string body = "<a href=\"";
            append_html_escaped(body, location);
            body += "\">Moved Permanently</a>.\n";
            plain(301, std::move(body));
            resp.content_type = "text/html; charset=utf-8";
            resp.headers.emplace_back("Location", std::move(location));
        } else {
            plain(404, "404 page not found\n");
        }
    }
    std::string_view conn_header;
    if (c.close_after) conn_header = "close";
    else if (head.version_minor == 0) conn_header = "keep-alive";
    start_write(c, resp.status, resp, head_only, conn_header);
}

inline void debug_server_state::respond_error(connection& c, int status, std::string_view reason,
                                              bool head_only) {
    debug_response r;
    r.status = status;
    r.body = std::to_string(status) + " " + std::string(http_reason_phrase(status)) + ": " +
             std::string(reason) + "\n";
    c.close_after = true;
    c.in.clear();
    start_write(c, status, r, head_only, "close");
}

inline void debug_server_state::start_write(connection& c, int status, debug_response& r,
                                            bool head_only, std::string_view connection_header) {
    std::string& h = c.out_head;
    h.clear();
    h += "HTTP/1.1 ";
    h += std::to_string(status);
    h += ' ';
    h += http_reason_phrase(status);
    h += "\r\nDate: ";
    h += http_date(std::time(nullptr));
    h += "\r\nContent-Type: ";
    h += r.content_type;
    if (status != 204 && status != 304) {
        h += "\r\nContent-Length: ";
        h += std::to_string(r.body.size());
    }
    h += "\r\nX-Content-Type-Options: nosniff";
    if (!connection_header.empty()) {
        h += "\r\nConnection: ";
        h += connection_header;
    }
    for (const auto& [k, v] : r.headers) {
        h += "\r\n";
        h += k;
        h += ": ";
        h += v;
    }
    h += "\r\n\r\n";
    c.out_body.clear();
    if (!head_only && status != 204 && status != 304) c.out_body = std::move(r.body);
    c.out_sent = 0;
    c.state = phase::writing;
    c.deadline = clock::now() + opts_.write_timeout;
    write_some(c);
}

inline void debug_server_state::write_some(connection& c) {
    const std::size_t total = c.out_head.size() + c.out_body.size();
    while (c.out_sent < total) {
        iovec iov[2];
        int n_iov = 0;
        if (c.out_sent < c.out_head.size()) {
            iov[n_iov].iov_base = c.out_head.data() + c.out_sent;
            iov[n_iov].iov_len = c.out_head.size() - c.out_sent;
            ++n_iov;
            if (!c.out_body.empty()) {
                iov[n_iov].iov_base = c.out_body.data();
                iov[n_iov].iov_len = c.out_body.size();
                ++n_iov;
            }
        } else {
            std::size_t off = c.out_sent - c.out_head.size();
            iov[n_iov].iov_base = c.out_body.data() + off;
            iov[n_iov].iov_len = c.out_body.size() - off;
            ++n_iov;
        }
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = static_cast<decltype(msg.msg_iovlen)>(n_iov);
        ssize_t n = ::sendmsg(c.fd, &msg, send_flags);
        if (n >= 0) {
            c.out_sent += static_cast<std::size_t>(n);
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // wait for POLLOUT
        close_connection(c);  // EPIPE, ECONNRESET
        return;
    }
    finish_response(c);
}

inline void debug_server_state::finish_response(connection& c) {
    c.out_head.clear();
    c.out_body.clear();
    c.out_body.shrink_to_fit();  // a large dump should not stay allocated per slot
    c.out_sent = 0;
    if (c.close_after) {
        if (c.peer_eof) {
            close_connection(c);
            return;
        }
        ::shutdown(c.fd, SHUT_WR);
        c.state = phase::lingering;
        c.in.clear();
        c.drained = 0;
        c.deadline = clock::now() + std::min<std::chrono::milliseconds>(opts_.read_timeout,
                                                                       std::chrono::seconds(2));
        return;
    }
    c.state = phase::reading;
    c.deadline = clock::now() + opts_.read_timeout;
    // process() continues with pipelined bytes already in c.in, if any.
}

inline void debug_server_state::drain(connection& c) {
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n > 0) {
            c.drained += static_cast<std::size_t>(n);
            if (c.drained > 256 * 1024) break;  // enough: it is not going to stop
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        break;  // EOF or error
    }
    close_connection(c);
}

inline void debug_server_state::close_connection(connection& c) noexcept {
    close_fd(c.fd);
    c.state = phase::reading;
    c.in.clear();
    c.in.shrink_to_fit();
    c.out_head.clear();
    c.out_body.clear();
    c.out_body.shrink_to_fit();
    c.out_sent = 0;
    c.requests = 0;
    c.need_parse = false;
    c.peer_eof = false;
    c.close_after = false;
}

inline std::string debug_server_state::render_index() {
    std::vector<std::shared_ptr<const profile_entry>> profiles;
    std::vector<std::pair<std::string, std::string>> links;
    {
        std::lock_guard lock(routes_mutex_);
        profiles = profiles_;
        links = index_links_;
    }
    std::string o;
    o += "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>/debug/pprof/</title>\n"
         "<style>\n.profile-name{\n\tdisplay:inline-block;\n\twidth:6rem;\n}\n</style>\n</head>\n"
         "<body>\n/debug/pprof/\n<br>\n"
         "<p>Add debug=1 to a profile's URL for the text format, debug=2 (goroutine) for one "
         "stack per goroutine; without debug the profile is pprof protobuf for "
         "<code>go tool pprof</code>.</p>\n<br>\nTypes of profiles available:\n<table>\n"
         "<thead><td>Count</td><td>Profile</td></thead>\n";
    for (const auto& p : profiles) {
        std::int64_t count = p->count ? p->count() : 0;  // may throw: the index becomes a 500
        o += "<tr><td>";
        o += std::to_string(count);
        o += "</td><td><a href='";
        append_html_escaped(o, p->name);
        o += "?debug=1'>";
        append_html_escaped(o, p->name);
        o += "</a></td></tr>\n";
    }
    o += "</table>\n";
    for (const auto& [href, text] : links) {
        o += "<a href=\"";
        append_html_escaped(o, href);
        o += "\">";
        append_html_escaped(o, text);
        o += "</a>\n<br>\n";
    }
    o += "<p>\nProfile Descriptions:\n<ul>\n";
    for (const auto& p : profiles) {
        o += "<li><div class=profile-name>";
        append_html_escaped(o, p->name);
        o += ": </div> ";
        append_html_escaped(o, p->description);
        o += "</li>\n";
    }
    o += "</ul>\n</p>\n</body>\n</html>\n";
    return o;
}

}  // namespace detail

}  // namespace goro

#endif  // GORO_HTTP_SERVER_HPP
