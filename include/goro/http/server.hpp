#ifndef GORO_HTTP_SERVER_HPP
#define GORO_HTTP_SERVER_HPP

// The debug server's options and its connection loop: detail::debug_server_state
// owns the listening socket, the connections and the route table, and runs on
// its own thread. goro::debug_server (goro/http/debug_server.hpp) is the handle
// a program holds; see there for the behaviour as a whole.
//
// Only the options and the counters are declarations: detail::debug_server_state
// and its loop are in the bodies section (GORO_BODIES, goro/core/linkage.hpp),
// since goro::debug_server holds the state by pointer and nothing else uses it.
//
// THE CONNECTION LOOP (Linux epoll, level-triggered, on the server thread only)
//   * One ordinary std::thread, never a pool worker: the server answers while
//     every worker of the pool is wedged, which is when one needs it.
//   * Up to options.max_connections (default 1,024) connections are served at
//     once. Each is a slot of about 200 bytes (struct connection below) in a
//     table that grows to at most max_connections + max(max_connections,
//     1,024) slots (serving and lingering), plus while it is active: the request head received so far
//     (at most ~2 x max_request_line + max_header_bytes, released when the
//     head is consumed) and the response head being written (~200 bytes). A
//     response body is never copied per connection: it is held once, by a
//     shared pointer, and identical requests to a route registered with
//     share_response within shared_response_window share one body, as long
//     as no task was started, finished or resumed in between (world_stamp)
//     or another connection is still being sent that body (a burst of
//     requests shares one dump however busy the program is). A dump route
//     writes its body to debug_response::stream(): blocks mapped from the
//     system, never grown by copying, unmapped when the last sender is done;
//     after a large body is produced the allocator's free pages are returned
//     (malloc_trim), so the scratch of a dump does not stay resident either.
//     Measured with 100k parked tasks (a 37 MiB tasks.json), 16 clients that
//     never read raise RSS by about 1.25x one body (1.97x with one growing
//     string per body and no trimming), and after they leave RSS is back
//     within about a quarter of one body (0.72x before): glibc keeps some of
//     the snapshot's scratch at the top of the server thread's arena.
//   * When every slot is taken, a new connection evicts the oldest connection
//     that is reading: an idle keep-alive connection (preferred among the
//     oldest 16: its client expects such a close and retries) or one whose head
//     is still incomplete (slowloris) or not begun. A connection writing a response is never evicted:
//     its response finishes first (or its write deadline ends it). When all
//     connections are writing, new ones wait in the kernel's listen backlog.
//   * An evicted or finished connection is closed gracefully: the write side is
//     shut down (FIN) and what the client still sends is read and discarded
//     until it closes too or a short linger deadline passes, so closing never
//     resets (RST) a connection whose response the client has not read yet.
//   * Deadlines: read_timeout bounds a whole request head from accept (or from
//     the previous response), so a client trickling bytes (slowloris) holds a
//     slot no longer than that; write_timeout bounds a whole response, so a
//     client that stops reading is dropped and releases the body it pinned.
//     Each phase has one timeout, so its connections sit in a FIFO list in
//     deadline order: expiring and evicting cost O(1) per connection.
//   * Handlers run on this thread, one at a time (a slow handler delays the
//     others; handlers should be quick).
//
// Connection life cycle:
//
//    accept --> reading --(head complete)--> handler --> writing --+--> reading (keep-alive)
//                 |  (parse error / timeout: error response) ------^    |
//                 |                                                     +--> lingering --> closed
//                 +--(EOF, error, stop: closed; evicted, idle timeout: lingering)
//
// Lock order: lifecycle_mutex_ (start/stop) is never held while taking
// routes_mutex_ from the server thread; routes_mutex_ is a leaf and is never
// held while calling user code (handlers, count callbacks).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <goro/core/linkage.hpp>
#include <goro/http/request.hpp>

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
    // Connections served at once (1 to 1,048,576). When all are taken, a new
    // one evicts the oldest idle or incomplete one (see server.hpp). Each
    // needs a file descriptor, twice while it lingers: mind RLIMIT_NOFILE.
    std::size_t max_connections = 1024;
    // After this many requests a keep-alive connection is closed.
    std::size_t max_requests_per_connection = 1000;
    // Identical requests (same path and query) to a route registered with
    // share_response, arriving within this time after the body was produced,
    // get that body instead of a new one, provided no task was started,
    // finished or resumed since, or another connection is still being sent
    // it: N clients of a large dump cost one dump's memory and one dump's
    // time, a client that asks again after reading its answer sees a fresh
    // picture unless nothing moved, and concurrent clients of a busy program
    // share the dump being sent (at most this old). The body is held that
    // long. 0 turns sharing off.
    std::chrono::milliseconds shared_response_window{1000};
    debug_server_limits limits{};
    // The goroutine routes (/debug/pprof/goroutine, /debug/goro/tasks.json,
    // /metrics, and the goroutine row of /debug/pprof/): the constructor calls
    // goro::register_default_routes(). False: only /debug/pprof/ and what the
    // program registers itself.
    bool with_default_routes = true;
    // The leak watch (goro/inspect/leak_watch.hpp) that start() starts and
    // stop() stops, served at /debug/goro/leaks and in /metrics (with the
    // default routes): a sample of the grouped profile every this long. 0: none.
    std::chrono::milliseconds leak_watch_interval{10000};
};

// Counters, read with relaxed loads: each is exact, the set is not a snapshot.
struct debug_server_stats {
    std::uint64_t connections_accepted = 0;
    std::uint64_t connections_evicted = 0;   // reading (idle or incomplete) closed to make room
    std::uint64_t connections_open = 0;      // now: reading or writing (lingering not counted)
    std::uint64_t requests = 0;              // complete, parsed request heads
    std::uint64_t bad_requests = 0;          // heads rejected by the parser (4xx/505)
    std::uint64_t timeouts = 0;              // read or write deadline expired
    std::uint64_t handler_errors = 0;        // handler threw or returned an invalid response
    std::uint64_t responses_shared = 0;      // bodies reused instead of produced again
    std::uint64_t response_bytes_held = 0;   // now: bytes of bodies held (a shared one once)
};

// How a route is served (debug_server::handle's third argument).
struct debug_route_options {
    // The response depends only on the path and the query, never on headers
    // or on the client: identical requests may share one response body (see
    // debug_server_options::shared_response_window). For large dumps.
    bool share_response = false;
};

}  // namespace goro

#if GORO_BODIES

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>  // malloc_trim
#endif

#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/http/address.hpp>
#include <goro/http/response.hpp>

namespace goro::detail {

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
        s.connections_open = connections_open_.load(std::memory_order_relaxed);
        s.requests = requests_.load(std::memory_order_relaxed);
        s.bad_requests = bad_requests_.load(std::memory_order_relaxed);
        s.timeouts = timeouts_.load(std::memory_order_relaxed);
        s.handler_errors = handler_errors_.load(std::memory_order_relaxed);
        s.responses_shared = responses_shared_.load(std::memory_order_relaxed);
        s.response_bytes_held = response_bytes_held_.load(std::memory_order_relaxed);
        return s;
    }

    void start();
    void stop();

    void handle(std::string path, debug_handler handler, debug_route_options ro = {}) {
        if (path.empty() || path.front() != '/')
            throw std::invalid_argument("goro::debug_server::handle: path must start with '/': '" +
                                        path + "'");
        if (!handler) throw std::invalid_argument("goro::debug_server::handle: empty handler for " + path);
        route r{std::make_shared<const debug_handler>(std::move(handler)), ro.share_response};
        std::lock_guard lock(routes_mutex_);
        routes_[std::move(path)] = std::move(r);
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
    using clock = std::chrono::steady_clock;

    struct profile_entry {
        std::string name;
        std::string description;
        std::function<std::int64_t()> count;
    };

    struct route {
        std::shared_ptr<const debug_handler> handler;
        bool share = false;
    };

    // A response body as sent: `bytes` (a handler's debug_response::body),
    // then `blocks` (what it wrote to debug_response::stream(), mapped from
    // the system). Produced once; every connection sending it holds a shared
    // pointer, so N clients of one dump hold one copy. Its size is counted in
    // response_bytes_held_ while it lives.
    struct response_body {
        std::string bytes;
        body_blocks blocks;
        std::atomic<std::uint64_t>* held;
        response_body(std::string b, body_blocks bl, std::atomic<std::uint64_t>* h)
            : bytes(std::move(b)), blocks(std::move(bl)), held(h) {
            held->fetch_add(size(), std::memory_order_relaxed);
        }
        // The memory goes first, the count after: whoever sees
        // response_bytes_held fall sees the memory released already.
        ~response_body() {
            const std::size_t n = size();
            const bool large_string = bytes.size() >= large_body;
            blocks = body_blocks{};  // unmapped
            std::string().swap(bytes);
            // A large string body, once its last sender lets go, is handed
            // back to the system: glibc keeps freed blocks of a thread's
            // arena otherwise, and a process that served a big dump would
            // stay that big.
            if (large_string) trim_heap();
            held->fetch_sub(n, std::memory_order_relaxed);
        }
        response_body(const response_body&) = delete;
        response_body& operator=(const response_body&) = delete;
        std::size_t size() const noexcept { return bytes.size() + blocks.size(); }
    };
    using body_ptr = std::shared_ptr<const response_body>;

    // A response of a share_response route, reused for identical requests
    // until `made + shared_response_window`. The entry holds the body for that
    // long (so back-to-back requests share it too); after that only the
    // connections still sending it do, and the entry is dropped.
    struct shared_entry {
        body_ptr hold;
        int status = 200;
        std::string content_type;
        http_fields headers;
        std::weak_ptr<const response_body> body;
        std::size_t length = 0;
        clock::time_point made{};
        std::uint64_t stamp = 0;  // world_stamp() when made
    };

    // What a task dump depends on, as counters read without stopping anyone:
    // tasks started, tasks alive, and resumes on every worker. A shared body
    // is reused only while the stamp is unchanged, so a request that follows
    // a change (a request served, a task woken) gets a fresh body, never an
    // older picture; a dump of a quiet program is made once for all clients.
    static std::uint64_t world_stamp() noexcept {
        registry& reg = the_registry();
        std::uint64_t s = reg.total_added() * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(reg.count());
        if (pool_started()) {
            scheduler& sch = the_scheduler();
            if (!sch.stopping())
                for (auto& w : sch.workers()) s = s * 31 + w->resumes.load(std::memory_order_relaxed);
        }
        return s;
    }

    enum class phase : std::uint8_t { free, reading, writing, lingering };
    static constexpr std::uint32_t none = 0xffffffffu;

    // One connection slot; about 200 bytes while idle (the strings are empty,
    // their buffers released between requests).
    struct connection {
        int fd = -1;
        phase state = phase::free;
        bool need_parse = false;    // new bytes worth a parse arrived
        bool peer_eof = false;      // the client shut its write side
        bool close_after = false;   // linger after the response being written
        std::uint32_t index = 0;    // in conns_
        std::uint32_t gen = 0;      // bumped on each reuse; epoll events carry it
        std::uint32_t events = 0;   // epoll interest registered now
        std::uint32_t prev = none, next = none;  // in the list of its phase
        std::uint32_t requests = 0;
        std::size_t out_sent = 0;
        std::size_t drained = 0;
        clock::time_point deadline{};
        std::string in;             // received, not yet consumed
        std::string out_head;       // status line and header fields being written
        body_ptr out_body;          // null: no body
        std::string peer;
    };

    static_assert(sizeof(connection) <= 256, "the per-connection cost stated above");

    // Connections of one phase in the order they entered it, which is
    // deadline order since each phase has one timeout.
    struct conn_list {
        std::uint32_t head = none, tail = none;
        std::size_t size = 0;
    };

    static constexpr std::uint64_t wake_tag = ~std::uint64_t{0};
    static constexpr std::uint64_t listen_tag = ~std::uint64_t{0} - 1;

    // Head bytes beyond which the parser must have answered (see parse_http_request).
    std::size_t head_cap() const noexcept {
        const auto& l = opts_.limits;
        return 2 * (l.max_request_line + 2) + l.max_header_bytes + 1;
    }
    std::chrono::milliseconds linger_time() const noexcept {
        return std::min<std::chrono::milliseconds>(opts_.read_timeout, std::chrono::seconds(2));
    }
    std::size_t active() const noexcept { return reading_.size + writing_.size; }
    // Lingering connections hold a slot and a descriptor, no buffers; under
    // a burst of evictions they must outlast the clients' reaction time.
    std::size_t max_lingering() const noexcept {
        return std::max<std::size_t>(opts_.max_connections, 1024);
    }
    conn_list* list_of(phase p) noexcept {
        switch (p) {
        case phase::reading: return &reading_;
        case phase::writing: return &writing_;
        case phase::lingering: return &lingering_;
        case phase::free: break;
        }
        return nullptr;
    }

    void run() noexcept;
    void refuse_on_server_thread(const char* op) const;
    void set_phase(connection& c, phase p, clock::time_point deadline) noexcept;
    void settle(connection& c) noexcept;
    void set_listening(bool on) noexcept;
    void expire(clock::time_point now);
    // Drops shared responses older than the window; returns the next expiry.
    clock::time_point prune_shared(clock::time_point now) noexcept;
    void accept_new(clock::time_point now);
    void on_event(connection& c, std::uint32_t events);
    void read_some(connection& c);
    void process(connection& c);
    void respond(connection& c, const http_request_head& head);
    void respond_error(connection& c, int status, std::string_view reason, bool head_only);
    void start_write(connection& c, int status, std::string_view content_type,
                     const http_fields& headers, body_ptr body, std::size_t length, bool head_only,
                     std::string_view connection_header);
    // Null for an empty body.
    body_ptr make_body(std::string&& bytes, body_blocks&& blocks = {}) {
        if (bytes.empty() && blocks.empty()) return nullptr;
        return std::make_shared<const response_body>(std::move(bytes), std::move(blocks),
                                                     &response_bytes_held_);
    }
    static constexpr std::size_t large_body = std::size_t{1} << 20;
    // Returns the free pages of the allocator's arenas to the system (glibc
    // only; elsewhere nothing). Called after a large body was produced (the
    // snapshot and the scratch a dump needs are free by then) and when a
    // large string body is freed: without it, each thread's arena keeps them.
    static void trim_heap() noexcept {
#if defined(__GLIBC__)
        ::malloc_trim(0);
#endif
    }
    // True while a connection other than the caller (holding `body` too) and
    // the shared_ entry (`entry_holds`) is still sending it. The server
    // thread owns every copy, so the count is exact.
    static bool in_flight(const body_ptr& body, bool entry_holds) noexcept {
        return body.use_count() > 1 + (entry_holds ? 1 : 0);
    }
    void write_some(connection& c);
    void finish_response(connection& c);
    void linger(connection& c);
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
    int epoll_fd_ = -1;
    int wake_read_ = -1;
    int wake_write_ = -1;

    // Owned by the server thread while running (and by start/stop otherwise).
    // A deque: slots never move, so a connection& stays valid while it grows.
    std::deque<connection> conns_;
    std::vector<std::uint32_t> free_slots_;
    conn_list reading_, writing_, lingering_;
    bool listening_ = false;               // listen_fd_ registered for EPOLLIN
    clock::time_point accept_paused_until_{};
    std::unordered_map<std::string, shared_entry> shared_;

    mutable std::mutex routes_mutex_;
    std::unordered_map<std::string, route> routes_;
    std::vector<std::shared_ptr<const profile_entry>> profiles_;
    std::vector<std::pair<std::string, std::string>> index_links_;

    std::atomic<std::uint64_t> connections_accepted_{0}, connections_evicted_{0},
        connections_open_{0}, requests_{0}, bad_requests_{0}, timeouts_{0}, handler_errors_{0},
        responses_shared_{0}, response_bytes_held_{0};
};

GORO_DECL void debug_server_state::start() {
    refuse_on_server_thread("start");
    std::lock_guard lock(lifecycle_mutex_);
    if (running_.load(std::memory_order_relaxed))
        throw std::logic_error("goro::debug_server::start: already running");
    const std::string where = addr_.family == AF_INET6
                                  ? "[" + addr_.text + "]:" + std::to_string(opts_.port)
                                  : addr_.text + ":" + std::to_string(opts_.port);
    auto fail = [&](int err, const std::string& what) {
        close_fd(listen_fd_);
        close_fd(epoll_fd_);
        close_fd(wake_read_);
        close_fd(wake_write_);
        throw std::system_error(err, std::generic_category(), "goro::debug_server::start: " + what);
    };

    conns_.clear();
    free_slots_.clear();
    shared_.clear();
    reading_ = writing_ = lingering_ = conn_list{};
    free_slots_.reserve(64);  // grows with conns_, see accept_new
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) fail(errno, "pipe");
    wake_read_ = pipe_fds[0];
    wake_write_ = pipe_fds[1];
    set_cloexec_nonblock(wake_read_);
    set_cloexec_nonblock(wake_write_);
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) fail(errno, "epoll_create1");
    epoll_event wev{};
    wev.events = EPOLLIN;
    wev.data.u64 = wake_tag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_read_, &wev) != 0) fail(errno, "epoll_ctl");

    listen_fd_ = ::socket(addr_.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd_ < 0) fail(errno, "socket for " + where);
    int one = 1;
    // Lets a restarted server rebind while old connections sit in TIME_WAIT.
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr_.family == AF_INET6) ::setsockopt(listen_fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);

    sockaddr_storage sa = addr_.storage;
    if (addr_.family == AF_INET) reinterpret_cast<sockaddr_in*>(&sa)->sin_port = htons(opts_.port);
    else reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port = htons(opts_.port);
    if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&sa), addr_.length) != 0)
        fail(errno, "bind " + where);
    // A long backlog: a burst of connections waits there while the loop
    // accepts (and evicts) in batches.
    if (::listen(listen_fd_, SOMAXCONN) != 0) fail(errno, "listen " + where);

    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len) != 0)
        fail(errno, "getsockname " + where);
    std::uint16_t p = bound.ss_family == AF_INET
                          ? ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port)
                          : ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
    epoll_event lev{};
    lev.events = EPOLLIN;
    lev.data.u64 = listen_tag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &lev) != 0) fail(errno, "epoll_ctl");
    listening_ = true;
    accept_paused_until_ = clock::time_point{};

    stopping_.store(false, std::memory_order_relaxed);
    try {
        thread_ = std::thread([this] { run(); });
    } catch (const std::system_error& e) {
        fail(e.code().value(), "thread");
    }
    port_.store(p, std::memory_order_release);
    running_.store(true, std::memory_order_release);
}

GORO_DECL void debug_server_state::refuse_on_server_thread(const char* op) const {
    // Checked before taking lifecycle_mutex_: a stop() on another thread may
    // hold it while joining this very thread.
    if (server_thread_.load(std::memory_order_acquire) == std::this_thread::get_id())
        throw std::logic_error(std::string("goro::debug_server::") + op +
                               ": called from the server's own thread (inside a handler); "
                               "it would wait for itself");
}

GORO_DECL void debug_server_state::stop() {
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
    close_fd(epoll_fd_);
    close_fd(wake_read_);
    close_fd(wake_write_);
    conns_.clear();
    free_slots_.clear();
    shared_.clear();
    reading_ = writing_ = lingering_ = conn_list{};
    running_.store(false, std::memory_order_release);
}

// Moves `c` to the end of phase p's list (deadline order) with that deadline.
GORO_DECL void debug_server_state::set_phase(connection& c, phase p, clock::time_point deadline) noexcept {
    const bool was_active = c.state == phase::reading || c.state == phase::writing;
    if (conn_list* from = list_of(c.state)) {
        if (c.prev != none) conns_[c.prev].next = c.next;
        else from->head = c.next;
        if (c.next != none) conns_[c.next].prev = c.prev;
        else from->tail = c.prev;
        --from->size;
    }
    c.prev = c.next = none;
    c.state = p;
    c.deadline = deadline;
    if (conn_list* to = list_of(p)) {
        c.prev = to->tail;
        if (to->tail != none) conns_[to->tail].next = c.index;
        else to->head = c.index;
        to->tail = c.index;
        ++to->size;
    }
    const bool is_active = p == phase::reading || p == phase::writing;
    if (was_active != is_active) {
        if (is_active) connections_open_.fetch_add(1, std::memory_order_relaxed);
        else connections_open_.fetch_sub(1, std::memory_order_relaxed);
    }
}

// Registers the epoll interest the connection's phase needs, if it changed:
// done once after each event rather than at every phase change, since a
// request usually goes reading -> writing -> reading within one event.
GORO_DECL void debug_server_state::settle(connection& c) noexcept {
    if (c.state == phase::free) return;
    const std::uint32_t want = c.state == phase::writing ? std::uint32_t{EPOLLOUT} : std::uint32_t{EPOLLIN};
    if (want == c.events) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = (std::uint64_t{c.gen} << 32) | c.index;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev) == 0) c.events = want;
    else close_connection(c);
}

GORO_DECL void debug_server_state::set_listening(bool on) noexcept {
    if (on == listening_) return;
    epoll_event ev{};
    ev.events = on ? std::uint32_t{EPOLLIN} : std::uint32_t{0};
    ev.data.u64 = listen_tag;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev) == 0) listening_ = on;
}

GORO_DECL void debug_server_state::run() noexcept {
    server_thread_.store(std::this_thread::get_id(), std::memory_order_release);
    epoll_event evs[256];
    for (;;) {
        if (stopping_.load(std::memory_order_acquire)) break;
        auto now = clock::now();
        try {
            expire(now);
        } catch (...) {
        }
        // Listen again once a slot can be had: a free one, or a reading one to evict.
        const bool room = active() < opts_.max_connections || reading_.size > 0;
        if (!listening_ && room && now >= accept_paused_until_) set_listening(true);

        auto next_deadline = prune_shared(now);
        for (const conn_list* l : {&reading_, &writing_, &lingering_})
            if (l->head != none) next_deadline = std::min(next_deadline, conns_[l->head].deadline);
        if (!listening_ && room) next_deadline = std::min(next_deadline, accept_paused_until_);
        int timeout_ms = -1;
        if (next_deadline != clock::time_point::max()) {
            auto left = std::chrono::ceil<std::chrono::milliseconds>(next_deadline - now).count();
            timeout_ms = static_cast<int>(std::clamp<long long>(left, 0, 60'000));
        }

        int n = ::epoll_wait(epoll_fd_, evs, static_cast<int>(std::size(evs)), timeout_ms);
        if (n < 0) {
            if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        bool listen_ready = false;
        for (int k = 0; k < n; ++k) {
            const std::uint64_t tag = evs[k].data.u64;
            if (tag == wake_tag) {
                char buf[64];
                while (::read(wake_read_, buf, sizeof buf) > 0) {
                }
                continue;
            }
            if (tag == listen_tag) {
                listen_ready = true;
                continue;
            }
            const auto index = static_cast<std::uint32_t>(tag);
            if (index >= conns_.size()) continue;
            connection& c = conns_[index];
            // An event for a connection closed (and its slot perhaps reused)
            // earlier in this batch.
            if (c.state == phase::free || c.gen != static_cast<std::uint32_t>(tag >> 32)) continue;
            try {
                on_event(c, evs[k].events);
            } catch (...) {
                // Out of memory or the like while serving this one: drop it.
                close_connection(c);
            }
            settle(c);
        }
        if (stopping_.load(std::memory_order_acquire)) break;
        if (listen_ready) {
            try {
                accept_new(clock::now());
            } catch (...) {
                accept_paused_until_ = clock::now() + std::chrono::milliseconds(100);
                set_listening(false);
            }
        }
    }
    for (auto& c : conns_)
        if (c.state != phase::free) close_connection(c);
}

GORO_DECL debug_server_state::clock::time_point debug_server_state::prune_shared(
    clock::time_point now) noexcept {
    auto next = clock::time_point::max();
    for (auto it = shared_.begin(); it != shared_.end();) {
        const auto until = it->second.made + opts_.shared_response_window;
        if (until <= now) {
            it = shared_.erase(it);  // may free the body, unless a connection still sends it
        } else {
            next = std::min(next, until);
            ++it;
        }
    }
    return next;
}

GORO_DECL void debug_server_state::expire(clock::time_point now) {
    while (lingering_.head != none && conns_[lingering_.head].deadline <= now)
        close_connection(conns_[lingering_.head]);
    while (writing_.head != none && conns_[writing_.head].deadline <= now) {
        // A client that does not read: its response (and the body it pins) goes.
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        close_connection(conns_[writing_.head]);
    }
    while (reading_.head != none && conns_[reading_.head].deadline <= now) {
        connection& c = conns_[reading_.head];
        try {
            if (!c.in.empty() || c.requests == 0) {
                // A head not complete in time, or nothing sent at all: say why.
                timeouts_.fetch_add(1, std::memory_order_relaxed);
                respond_error(c, 408,
                              c.in.empty() ? "no request received within read_timeout"
                                           : "request head not received within read_timeout",
                              starts_head_request(c.in));
            } else {
                // Idle keep-alive: closed without a 408, which could race a
                // request the client is just sending; gracefully, so that
                // such a request meets a FIN (and is retried), not a reset.
                linger(c);
            }
        } catch (...) {
            close_connection(c);
        }
        settle(c);
    }
}

GORO_DECL void debug_server_state::accept_new(clock::time_point now) {
    // A bounded batch, so that a flood of connections cannot starve the
    // connections already served; the rest wait for the next round.
    for (int batch = 0; batch < 64; ++batch) {
        if (active() >= opts_.max_connections && reading_.size == 0) {
            // Every slot is writing a response: nothing may be evicted. Stop
            // listening until a slot frees (run() checks each round).
            accept_paused_until_ = now;
            set_listening(false);
            return;
        }
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                accept_paused_until_ = now + std::chrono::milliseconds(100);
                set_listening(false);
            }
            return;  // EAGAIN: nothing more pending
        }
        if (active() >= opts_.max_connections) {
            // Full: the oldest reading connection gives way, gracefully. An
            // idle keep-alive one first (among the oldest few): a client must
            // expect a keep-alive connection to close and retries on a new
            // one, while a connection closed before its first answer is an
            // error to it. Else the oldest, idle or with its head incomplete.
            std::uint32_t pick = reading_.head;
            std::uint32_t i = reading_.head;
            for (int looked = 0; i != none && looked < 16; ++looked, i = conns_[i].next) {
                if (conns_[i].requests > 0 && conns_[i].in.empty()) {
                    pick = i;
                    break;
                }
            }
            connection& victim = conns_[pick];
            connections_evicted_.fetch_add(1, std::memory_order_relaxed);
            linger(victim);
            settle(victim);
        }
        if (lingering_.size > max_lingering())
            close_connection(conns_[lingering_.head]);  // drained once more first

        std::uint32_t index;
        if (!free_slots_.empty()) {
            index = free_slots_.back();
            free_slots_.pop_back();
        } else {
            index = static_cast<std::uint32_t>(conns_.size());
            try {
                // close_connection (noexcept) pushes the slot back without allocating.
                if (free_slots_.capacity() < conns_.size() + 1) free_slots_.reserve(2 * (conns_.size() + 1));
                conns_.emplace_back();
            } catch (...) {
                ::close(fd);
                throw;
            }
            conns_.back().index = index;
        }
        connection& c = conns_[index];
        c.fd = fd;
        c.events = EPOLLIN;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = (std::uint64_t{c.gen} << 32) | index;
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
            ::close(fd);
            c.fd = -1;
            free_slots_.push_back(index);
            continue;
        }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c.peer = format_endpoint(reinterpret_cast<const sockaddr*>(&peer));
        set_phase(c, phase::reading, now + opts_.read_timeout);
        connections_accepted_.fetch_add(1, std::memory_order_relaxed);
    }
}

GORO_DECL void debug_server_state::on_event(connection& c, std::uint32_t events) {
    switch (c.state) {
    case phase::reading:
        if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) read_some(c);
        break;
    case phase::writing:
        if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) {
            write_some(c);
            // Written in full on a keep-alive connection: serve what was pipelined.
            if (c.state == phase::reading) process(c);
        }
        break;
    case phase::lingering:
        drain(c);
        break;
    case phase::free:
        break;
    }
}

GORO_DECL void debug_server_state::read_some(connection& c) {
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

GORO_DECL void debug_server_state::process(connection& c) {
    while (c.state == phase::reading) {
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
        if (c.in.empty() && c.in.capacity() > 1024) std::string().swap(c.in);  // idle slots stay small
        c.need_parse = !c.in.empty();
        respond(c, r.request);  // writes now if it can; back to reading if it all went out
    }
}

GORO_DECL bool debug_server_state::host_allowed(const http_request_head& head) const {
    if (!opts_.check_host || !addr_.loopback) return true;
    if (!head.authority.empty()) return is_loopback_host(head.authority);
    auto host = std::find_if(head.headers.begin(), head.headers.end(),
                             [](const auto& h) { return iequals(h.first, "host"); });
    if (host == head.headers.end() || host->second.empty()) return true;  // HTTP/1.0 or no authority
    return is_loopback_host(host->second);
}

GORO_DECL bool debug_server_state::authorized(const http_request_head& head, std::string& challenge) const {
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


GORO_DECL void debug_server_state::respond(connection& c, const http_request_head& head) {
    const bool head_only = head.method == "HEAD";
    std::string_view conn_header;
    if (c.close_after) conn_header = "close";
    else if (head.version_minor == 0) conn_header = "keep-alive";

    debug_response resp;
    std::string challenge;
    auto plain = [&](int status, std::string body) {
        resp = debug_response{};
        resp.status = status;
        resp.body = std::move(body);
    };
    std::string share_key;
    std::uint64_t stamp_before = 0;
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
        route found;
        bool redirect = false;
        {
            std::lock_guard lock(routes_mutex_);
            auto it = routes_.find(head.path);
            if (it != routes_.end()) found = it->second;
            else if (head.path.back() != '/') redirect = routes_.count(head.path + "/") != 0;
        }
        if (found.handler && found.share) {
            share_key = head.path;
            share_key += '?';
            share_key += head.raw_query;
            auto it = shared_.find(share_key);
            if (it != shared_.end()) {
                const shared_entry& e = it->second;
                body_ptr body = e.body.lock();
                // Fresh enough: made within the window, and either nothing
                // moved since or another client is still being sent it (a
                // burst of requests for one dump shares it, however busy the
                // program, so N slow clients never pin N dumps).
                if (body && clock::now() - e.made <= opts_.shared_response_window &&
                    (e.stamp == world_stamp() || in_flight(body, e.hold != nullptr))) {
                    responses_shared_.fetch_add(1, std::memory_order_relaxed);
                    start_write(c, e.status, e.content_type, e.headers, std::move(body), e.length,
                                head_only, conn_header);
                    return;
                }
            }
        }
        if (found.handler) {
            if (!share_key.empty()) stamp_before = world_stamp();
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
                (*found.handler)(req, resp);
                if (std::string why = check_response(resp); !why.empty()) {
                    handler_errors_.fetch_add(1, std::memory_order_relaxed);
                    plain(500, "500 Internal Server Error: " + utf8_escaped(why) + "\n");
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
    const std::size_t length = resp.body.size() + resp.streamed_size();
    body_ptr body = make_body(std::move(resp.body), resp.take_streamed());
    if (length >= large_body) trim_heap();  // what producing it needed is free now
    if (!share_key.empty() && resp.status == 200 && body) {
        // The map holds only what was made within the window: at most as many
        // bodies as handlers can produce in that time.
        shared_entry& e = shared_[share_key];
        e.hold = opts_.shared_response_window.count() > 0 ? body : nullptr;
        e.status = resp.status;
        e.content_type = resp.content_type;
        e.headers = resp.headers;
        e.body = body;
        e.length = length;
        e.made = clock::now();
        e.stamp = stamp_before;
    }
    start_write(c, resp.status, resp.content_type, resp.headers, std::move(body), length, head_only,
                conn_header);
}

GORO_DECL void debug_server_state::respond_error(connection& c, int status, std::string_view reason,
                                                 bool head_only) {
    std::string text = std::to_string(status) + " " + std::string(http_reason_phrase(status)) + ": " +
                       std::string(reason) + "\n";
    c.close_after = true;
    c.in.clear();
    const std::size_t length = text.size();
    start_write(c, status, "text/plain; charset=utf-8", {}, make_body(std::move(text)), length,
                head_only, "close");
}

GORO_DECL void debug_server_state::start_write(connection& c, int status, std::string_view content_type,
                                               const http_fields& headers, body_ptr body,
                                               std::size_t length, bool head_only,
                                               std::string_view connection_header) {
    std::string& h = c.out_head;
    h.clear();
    h += "HTTP/1.1 ";
    h += std::to_string(status);
    h += ' ';
    h += http_reason_phrase(status);
    h += "\r\nDate: ";
    h += http_date(std::time(nullptr));
    h += "\r\nContent-Type: ";
    h += content_type;
    if (status != 204 && status != 304) {
        h += "\r\nContent-Length: ";
        h += std::to_string(length);
    }
    h += "\r\nX-Content-Type-Options: nosniff";
    if (!connection_header.empty()) {
        h += "\r\nConnection: ";
        h += connection_header;
    }
    for (const auto& [k, v] : headers) {
        h += "\r\n";
        h += k;
        h += ": ";
        h += v;
    }
    h += "\r\n\r\n";
    c.out_body.reset();
    if (!head_only && status != 204 && status != 304) c.out_body = std::move(body);
    c.out_sent = 0;
    set_phase(c, phase::writing, clock::now() + opts_.write_timeout);
    write_some(c);
}

GORO_DECL void debug_server_state::write_some(connection& c) {
    const response_body* b = c.out_body.get();
    const std::size_t total = c.out_head.size() + (b ? b->size() : 0);
    while (c.out_sent < total) {
        // The unsent rest, gathered from the head, the string part and the
        // blocks: up to max_iov pieces per call.
        constexpr int max_iov = 64;
        iovec iov[max_iov];
        int n_iov = 0;
        std::size_t skip = c.out_sent;
        auto add = [&](const char* p, std::size_t n) {
            if (n_iov == max_iov || n == 0) return;
            if (skip >= n) {
                skip -= n;
                return;
            }
            iov[n_iov].iov_base = const_cast<char*>(p + skip);
            iov[n_iov].iov_len = n - skip;
            skip = 0;
            ++n_iov;
        };
        add(c.out_head.data(), c.out_head.size());
        if (b) {
            add(b->bytes.data(), b->bytes.size());
            for (const body_blocks::block& k : b->blocks.blocks()) {
                if (n_iov == max_iov) break;
                add(k.data, k.size);
            }
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
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // wait for EPOLLOUT
        close_connection(c);  // EPIPE, ECONNRESET
        return;
    }
    finish_response(c);
}

GORO_DECL void debug_server_state::finish_response(connection& c) {
    std::string().swap(c.out_head);
    c.out_body.reset();  // the last holder frees a large dump here
    c.out_sent = 0;
    if (c.close_after) {
        linger(c);
        return;
    }
    set_phase(c, phase::reading, clock::now() + opts_.read_timeout);
    // process() continues with pipelined bytes already in c.in, if any.
}

// Ends a connection without resetting it: FIN now, then read and discard what
// the client still sends until it closes too or linger_time() passes. A close()
// with unread bytes in the socket would send a RST, and a RST can destroy a
// response the client has received but not yet read.
GORO_DECL void debug_server_state::linger(connection& c) {
    if (c.peer_eof) {
        close_connection(c);
        return;
    }
    ::shutdown(c.fd, SHUT_WR);
    std::string().swap(c.in);
    std::string().swap(c.out_head);
    c.out_body.reset();
    c.need_parse = false;
    c.drained = 0;
    set_phase(c, phase::lingering, clock::now() + linger_time());
}

GORO_DECL void debug_server_state::drain(connection& c) {
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

GORO_DECL void debug_server_state::close_connection(connection& c) noexcept {
    if (c.state == phase::free) return;
    if (c.state == phase::lingering) {
        // Closed early (deadline, room, stop): read what arrived meanwhile, so
        // that close() finds nothing unread and sends a FIN, not a RST.
        char buf[4096];
        for (int i = 0; i < 16 && ::recv(c.fd, buf, sizeof buf, 0) > 0; ++i) {
        }
    }
    close_fd(c.fd);  // also leaves the epoll set
    set_phase(c, phase::free, clock::time_point{});
    std::string().swap(c.in);
    std::string().swap(c.out_head);
    std::string().swap(c.peer);
    c.out_body.reset();
    c.out_sent = 0;
    c.requests = 0;
    c.events = 0;
    c.need_parse = false;
    c.peer_eof = false;
    c.close_after = false;
    ++c.gen;
    free_slots_.push_back(c.index);  // capacity >= conns_.size(): reserved in accept_new
}

GORO_DECL std::string debug_server_state::render_index() {
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

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_SERVER_HPP
