#ifndef GORO_HTTP_DEBUG_SERVER_HPP
#define GORO_HTTP_DEBUG_SERVER_HPP

// goro::debug_server: a small HTTP/1.1 server for goro's debug endpoints, in the
// spirit of Go's net/http/pprof. It serves the goroutine routes (below), and
// whatever exact paths the program registers:
//
//     goro::debug_server server;            // 127.0.0.1:6060, loopback only
//     server.handle("/healthz", [](const goro::debug_request&, goro::debug_response& r) {
//         r.body = "ok\n";
//     });
//     server.start();                        // binds, listens, starts its thread
//     ...                                    // curl http://127.0.0.1:6060/healthz
//     server.stop();                         // or let the destructor do it
//
// DEFAULT ROUTES (options.with_default_routes, on by default; see
// goro/http/routes.hpp), answering as Go's
// net/http/pprof does, so curl, `watch` and `go tool pprof URL` work unchanged:
//   /debug/pprof/                   HTML index: each profile with its count and a link
//   /debug/pprof/goroutine          pprof protobuf (application/octet-stream,
//                                   attachment "goroutine"): `go tool pprof URL`
//   /debug/pprof/goroutine?debug=1  grouped stacks, `goroutine profile: total N`
//   /debug/pprof/goroutine?debug=2  one stack per task, like a Go crash
//   /debug/goro/tasks.json          the snapshot as JSON (schema in goro/inspect/dump.hpp)
//   /metrics                        Prometheus text: tasks by state and wait
//                                   reason, tasks started, workers, queue length
//   /debug/pprof/block, /debug/pprof/mutex  the wait profile, and its lock waits
//                                   (goro/inspect/block_profile.hpp); ?debug=1: text
//   /debug/goro/, /debug/goro/group?key=K  the live page and one group's page
//                                   (goro/http/live_page.hpp)
// Each profile request takes one snapshot (goro/inspect/snapshot.hpp: the world stops
// only to begin it) on the server thread. /metrics stops nothing: it walks
// the registry's live headers, so a scrape never pauses the workers.
//
// THREADING MODEL
//   * One server thread per running server, started by start() and joined by
//     stop(). It is an ordinary std::thread, never a pool worker, so the server
//     answers even when every worker of the pool is stuck: that is when one
//     needs it most.
//   * That thread owns the listening socket and the connections, multiplexed
//     with epoll over non-blocking sockets (goro/http/server.hpp tells how):
//     read the request head, run the handler, write the response. Handlers
//     therefore run on the server thread, one at a time. Why one thread and
//     not one per connection: a client can never make the server create
//     threads, memory is bounded per connection (a small slot, the head
//     received so far, the response head; bodies are shared, not copied),
//     stop() has exactly one thread to wake and join, and serial handlers are
//     what profile handlers want anyway (two concurrent snapshots would only
//     queue behind each other). The price: a slow handler delays the others.
//   * Up to max_connections (default 1,024) at once. When all are taken, a new
//     connection evicts the oldest idle or still-incomplete one, closed
//     gracefully (FIN, then the client's bytes are drained; never a reset of a
//     response in flight): a local process holding thousands of idle or
//     trickling connections cannot lock out the next client.
//   * handle(), remove_handler(), add_profile(), add_index_link() may be called
//     from any thread, before or after start(), also from inside a handler.
//     Routes live under one mutex; a handler is looked up under it and called
//     after releasing it (and kept alive by a shared_ptr while it runs).
//   * start(), stop() and the destructor may be called from any thread except
//     the server thread itself (that is, not from inside a handler).
//   * stop() wakes the thread through a self-pipe, closes every connection
//     (responses being written are cut off) and joins. No thread and no file
//     descriptor outlives stop().
//
// HTTP
//   GET and HEAD (HEAD: same status and headers, Content-Length included, no
//   body); any other method is answered 405 with `Allow: GET, HEAD`. Keep-alive
//   (HTTP/1.1 default, HTTP/1.0 opt-in) with pipelining; `Connection: close` is
//   honoured. A request carrying a body (Content-Length > 0 or
//   Transfer-Encoding) is answered and the connection closed: no endpoint reads
//   bodies. Every response has Content-Type, Content-Length (except 204 and
//   304), `X-Content-Type-Options: nosniff` and Date. Paths are percent-decoded
//   and matched exactly, with one convenience from Go's ServeMux: if "/x" is
//   unknown but "/x/" is registered, "/x" redirects (301) to "/x/".
//
// LIMITS (debug_server_limits, all configurable)
//   request line 8 KiB (else 414), header section 16 KiB (else 431), 100 header
//   fields (else 431). read_timeout (default 5 s) bounds the WHOLE request head,
//   counted from the connection's accept (or from the previous response on a
//   keep-alive connection), so a client trickling one byte at a time cannot
//   hold a slot longer than that (Slowloris). write_timeout (default 30 s)
//   bounds the whole response, so a client that stops reading is dropped too.
//
// SECURITY
//   * Binds 127.0.0.1 by default. Any address outside 127.0.0.0/8 and ::1
//     (0.0.0.0 and :: included) is refused with std::invalid_argument unless
//     options.allow_non_loopback is set: goroutine dumps show function names,
//     task names and labels, which may be sensitive.
//   * While bound to loopback, requests whose Host is not a loopback name
//     (localhost, *.localhost, 127.x.y.z, [::1]) get 403: this defeats DNS
//     rebinding, by which a web page in the user's browser could otherwise read
//     a localhost server. Turn off with options.check_host = false (e.g.
//     behind a reverse proxy that rewrites Host).
//   * options.bearer_token: when non-empty every endpoint, 404s included,
//     requires `Authorization: Bearer <token>` (compared in constant time) and
//     otherwise answers 401 with `WWW-Authenticate: Bearer ...`.
//   * The server never touches the file system; paths are only looked up in the
//     route table, so "/../" is just an unknown path. Handler headers are
//     checked for CR/LF (no response splitting). SIGPIPE is never raised.
//   * A handler's exception becomes a 500 whose text/plain body is its what():
//     fine for a debug server, do not put secrets in exception messages.
//
// ERRORS
//   Construction validates the options (std::invalid_argument naming the
//   option). start() throws std::system_error naming the operation and the
//   address, e.g. "goro::debug_server::start: bind 127.0.0.1:6060: Address
//   already in use"; std::logic_error if already running. Nothing is dropped

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <goro/core/linkage.hpp>
#include <goro/http/request.hpp>
#include <goro/http/response.hpp>
#include <goro/http/server.hpp>
#include <goro/inspect/block_profile.hpp>
#include <goro/inspect/leak_watch.hpp>

namespace goro {

class debug_server;

// Registers /debug/pprof/goroutine?debug=0|1|2 (and its row on the index),
// /debug/goro/tasks.json and /metrics on `server` (see DEFAULT ROUTES above);
// the constructor calls it unless options.with_default_routes is false.
// Replaces handlers already registered on those paths. Defined below, after
// debug_server.
GORO_DECL void register_default_routes(debug_server& server);

// ---------------------------------------------------------------------------
// debug_server
// ---------------------------------------------------------------------------

class debug_server {
public:
    using options = debug_server_options;

    // Validates the options (std::invalid_argument naming the bad one) and
    // registers /debug/pprof/; does not bind: start() does.
    explicit debug_server(options opts = {});

    ~debug_server();  // the state's destructor stops the server

    debug_server(const debug_server&) = delete;
    debug_server& operator=(const debug_server&) = delete;
    // A moved-from server may only be destroyed or assigned to; the thread
    // keeps running with the state, which moves along.
    debug_server(debug_server&&) noexcept;
    debug_server& operator=(debug_server&&) noexcept;

    // Binds, listens and starts the server thread. Throws std::system_error
    // ("goro::debug_server::start: bind 127.0.0.1:6060: Address already in
    // use") or std::logic_error when already running. May be called again
    // after stop(); with port 0 the new port may differ.
    void start();
    // Stops accepting, closes every connection, joins the thread. Idempotent.
    // Throws std::logic_error when called from the server thread.
    void stop();
    bool running() const noexcept;

    // The bound port (the real one when options.port is 0); 0 before the first
    // start(). After stop() the last bound port.
    std::uint16_t port() const noexcept;
    // "http://127.0.0.1:6060" or "http://[::1]:6060".
    std::string url() const;
    const options& config() const;
    // The leak watch this server runs (null when leak_watch_interval is 0).
    // It samples while the server runs; sample_now() works at any time.
    std::shared_ptr<leak_watch> watch() const noexcept { return watch_; }
    debug_server_stats stats() const;

    // Serves GET/HEAD `path` (exact, percent-decoded, starting with '/') with
    // `handler`, on the server thread. Replaces a handler already registered
    // there. Thread-safe; may be called while running.
    void handle(std::string path, debug_handler handler);
    // The same, with route options: share_response for a handler whose answer
    // depends only on the path and query (a dump), so concurrent identical
    // requests share one body (see debug_server_options::shared_response_window).
    void handle(std::string path, debug_handler handler, debug_route_options route);
    // Unregisters; false if nothing was there. A call already running finishes.
    bool remove_handler(std::string_view path);
    // Lists `profile` on /debug/pprof/ (sorted by name) and, with a handler,
    // serves it at /debug/pprof/<name>. Replaces a profile of the same name.
    void add_profile(debug_profile profile);
    // An extra link under the index table, e.g. ("goroutine?debug=2", "full goroutine stack dump").
    // A link to the same href replaces the earlier one's text.
    void add_index_link(std::string href, std::string text);

private:
    detail::debug_server_state& state() const;
    std::unique_ptr<detail::debug_server_state> state_;
    std::shared_ptr<leak_watch> watch_;  // after state_: destroyed (stopped) first
};

}  // namespace goro

#if GORO_BODIES

#include <stdexcept>
#include <utility>

#include <goro/http/live_page.hpp>
#include <goro/http/routes.hpp>

namespace goro {

GORO_DECL debug_server::debug_server(options opts) {
    auto addr = detail::parse_bind_address(opts.address);
    if (!addr)
        throw std::invalid_argument("goro::debug_server: invalid address '" + opts.address +
                                    "' (want an IPv4 or IPv6 literal, or localhost)");
    if (!addr->loopback && !opts.allow_non_loopback)
        throw std::invalid_argument(
            "goro::debug_server: refusing to bind non-loopback address " + opts.address +
            ": goroutine dumps may expose internals; set "
            "goro::debug_server_options::allow_non_loopback = true to serve it anyway");
    for (char c : opts.bearer_token) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f)
            throw std::invalid_argument(
                "goro::debug_server: bearer_token must be visible ASCII without spaces");
    }
    if (opts.max_connections == 0 || opts.max_connections > (std::size_t{1} << 20))
        throw std::invalid_argument(
            "goro::debug_server: max_connections must be between 1 and 1048576");
    if (opts.shared_response_window.count() < 0)
        throw std::invalid_argument("goro::debug_server: shared_response_window must not be negative");
    if (opts.leak_watch_interval.count() < 0)
        throw std::invalid_argument("goro::debug_server: leak_watch_interval must not be negative");
    if (opts.max_requests_per_connection == 0)
        throw std::invalid_argument(
            "goro::debug_server: max_requests_per_connection must be at least 1");
    if (opts.read_timeout.count() <= 0 || opts.write_timeout.count() <= 0)
        throw std::invalid_argument("goro::debug_server: read_timeout and write_timeout must be positive");
    if (opts.limits.max_request_line < 16 || opts.limits.max_header_bytes < 16 ||
        opts.limits.max_request_line > (1u << 24) || opts.limits.max_header_bytes > (1u << 24))
        throw std::invalid_argument(
            "goro::debug_server: limits.max_request_line and limits.max_header_bytes must be "
            "between 16 bytes and 16 MiB");
    const bool defaults = opts.with_default_routes;
    if (opts.leak_watch_interval.count() > 0) {
        leak_watch_options wo;
        wo.interval = opts.leak_watch_interval;
        watch_ = std::make_shared<leak_watch>(wo);
    }
    state_ = std::make_unique<detail::debug_server_state>(std::move(opts), std::move(*addr));
    detail::debug_server_state* s = state_.get();
    // The state outlives the route (it owns it), so a raw pointer is safe.
    s->handle("/debug/pprof/", [s](const debug_request&, debug_response& r) {
        r.content_type = "text/html; charset=utf-8";
        r.body = s->render_index();
    });
    if (defaults) register_default_routes(*this);
}

GORO_DECL debug_server::~debug_server() = default;
GORO_DECL debug_server::debug_server(debug_server&&) noexcept = default;
GORO_DECL debug_server& debug_server::operator=(debug_server&&) noexcept = default;

GORO_DECL void debug_server::start() {
    state().start();
    if (watch_ && !watch_->running()) watch_->start();
}

GORO_DECL void debug_server::stop() {
    state().stop();
    if (watch_) watch_->stop();
}

GORO_DECL bool debug_server::running() const noexcept { return state_ && state_->running(); }

GORO_DECL std::uint16_t debug_server::port() const noexcept { return state_ ? state_->port() : 0; }

GORO_DECL std::string debug_server::url() const {
    const auto& a = state().address();
    std::string host = a.family == AF_INET6 ? "[" + a.text + "]" : a.text;
    return "http://" + host + ":" + std::to_string(port());
}

GORO_DECL const debug_server::options& debug_server::config() const { return state().options(); }

GORO_DECL debug_server_stats debug_server::stats() const { return state().stats(); }

GORO_DECL void debug_server::handle(std::string path, debug_handler handler) {
    state().handle(std::move(path), std::move(handler));
}

GORO_DECL void debug_server::handle(std::string path, debug_handler handler, debug_route_options route) {
    state().handle(std::move(path), std::move(handler), route);
}

GORO_DECL bool debug_server::remove_handler(std::string_view path) { return state().remove_handler(path); }

GORO_DECL void debug_server::add_profile(debug_profile profile) { state().add_profile(std::move(profile)); }

GORO_DECL void debug_server::add_index_link(std::string href, std::string text) {
    state().add_index_link(std::move(href), std::move(text));
}

GORO_DECL detail::debug_server_state& debug_server::state() const {
    if (!state_) throw std::logic_error("goro::debug_server: used after being moved from");
    return *state_;
}

GORO_DECL void register_default_routes(debug_server& server) {
    server.add_profile(debug_profile{
        "goroutine",
        "Stack traces of all current goroutines (goro tasks). Use debug=2 as a query parameter "
        "to export in the same format as an unrecovered panic.",
        [] { return num_goroutines(); },
        {},  // served below, with a shared response
    });
    server.handle("/debug/pprof/goroutine", detail::serve_goroutine_profile, {.share_response = true});
    server.add_index_link("goroutine?debug=2", "full goroutine stack dump");
    server.add_index_link("/debug/goro/tasks.json", "every task as JSON");
    server.add_index_link("/metrics", "Prometheus metrics");
    server.handle("/debug/goro/tasks.json", detail::serve_tasks_json, {.share_response = true});
    server.add_profile(debug_profile{
        "block",
        "Where tasks waited and for how long (the wait profile). Off by default: turn it on with "
        "goro::set_wait_profile_rate() (one wait in 100, and every wait of 100 ms or more; 1 records every "
        "wait). Use debug=1 for text.",
        [] { return static_cast<std::int64_t>(wait_profile_buckets().size()); },
        detail::serve_block_profile,
    });
    server.add_profile(debug_profile{
        "mutex",
        "Where tasks waited for goro::mutex, rw_mutex, once and semaphore (the wait profile's lock "
        "waits). On with the wait profile: goro::set_wait_profile_rate(). Use debug=1 for text.",
        [] {
            std::int64_t n = 0;
            for (const auto& b : wait_profile_buckets()) n += detail::is_lock_wait(b.reason);
            return n;
        },
        detail::serve_mutex_profile,
    });
    std::shared_ptr<leak_watch> w = server.watch();
    server.handle("/metrics", [w](const debug_request&, debug_response& r) {
        r.content_type = std::string(detail::prometheus_content_type);
        r.body = detail::render_metrics(w.get());
    });
    server.add_index_link("/debug/goro/", "live page: groups, leak suspects (auto-refresh)");
    server.handle("/debug/goro/", [w](const debug_request& req, debug_response& r) {
        r.content_type = "text/html; charset=utf-8";
        r.body = detail::render_live_page(w.get(), req);
    });
    server.handle("/debug/goro/group", detail::serve_live_group);
    if (w) {
        server.add_index_link("/debug/goro/leaks", "leak suspects (groups that keep growing)");
        server.handle("/debug/goro/leaks", [w](const debug_request& req, debug_response& r) {
            detail::serve_leaks(*w, req, r);
        });
        server.handle("/debug/goro/leaks/sample", [w](const debug_request& req, debug_response& r) {
            w->sample_now();
            detail::serve_leaks(*w, req, r);
        });
    }
}

}  // namespace goro

#endif  // GORO_BODIES

#endif  // GORO_HTTP_DEBUG_SERVER_HPP
