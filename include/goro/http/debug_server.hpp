#ifndef GORO_DEBUG_SERVER_HPP
#define GORO_DEBUG_SERVER_HPP

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
// register_default_routes at the end of this file), answering as Go's
// net/http/pprof does, so curl, `watch` and `go tool pprof URL` work unchanged:
//   /debug/pprof/                   HTML index: each profile with its count and a link
//   /debug/pprof/goroutine          pprof protobuf (application/octet-stream,
//                                   attachment "goroutine"): `go tool pprof URL`
//   /debug/pprof/goroutine?debug=1  grouped stacks, `goroutine profile: total N`
//   /debug/pprof/goroutine?debug=2  one stack per task, like a Go crash
//   /debug/goro/tasks.json          the snapshot as JSON (schema in goro/inspect/dump.hpp)
//   /metrics                        Prometheus text: tasks by state and wait
//                                   reason, tasks started, workers, queue length
// Each profile request takes one snapshot (goro/inspect/snapshot.hpp: the world stops
// only to begin it) on the server thread. /metrics stops nothing: it walks
// the registry's live headers, so a scrape never pauses the workers.
//
// THREADING MODEL
//   * One server thread per running server, started by start() and joined by
//     stop(). It is an ordinary std::thread, never a pool worker, so the server
//     answers even when every worker of the pool is stuck: that is when one
//     needs it most.
//   * That thread owns the listening socket and a fixed set of connection
//     slots (options.max_connections). It multiplexes them with poll() over
//     non-blocking sockets: read the request head, run the handler, write the
//     response. Handlers therefore run on the server thread, one at a time.
//     Why one thread and not one per connection: a client can never make the
//     server create threads or unbounded state (memory is bounded by
//     max_connections x the head limits, plus the responses being written),
//     stop() has exactly one thread to wake and join, and serial handlers are
//     what profile handlers want anyway (two concurrent snapshots would
//     only queue behind each other). The price: a slow handler
//     delays the others. Handlers should be quick.
//   * When every slot is busy, new connections wait in the kernel's listen
//     backlog, except that an idle keep-alive connection is closed to make room.
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
//   silently: a handler response that HTTP cannot carry (a bad status, a
//   header the server manages, CR/LF in a header) becomes a 500 saying why.
//
// The HTTP parser is a pure function, detail::parse_http_request(), fuzzed by
// tests/fuzz/fuzz_http_request.cpp. detail::prometheus_text_writer writes the
// Prometheus text exposition format 0.0.4 for /metrics.

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
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

#include <goro/inspect/dump.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/inspect/snapshot.hpp>
#include <goro/version.hpp>

namespace goro {

class debug_server;

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

// Limits on a request head. A request over a limit is answered with the given
// status and the connection is closed.
struct debug_server_limits {
    std::size_t max_request_line = 8 * 1024;   // bytes, CRLF excluded; else 414
    std::size_t max_header_bytes = 16 * 1024;  // all field lines with their CRLFs
                                               // and the final empty line; else 431
    std::size_t max_header_count = 100;        // field lines; else 431
};

struct debug_server_options {
    // An IPv4 or IPv6 literal ("127.0.0.1", "::1", "[::1]") or "localhost"
    // (meaning 127.0.0.1). Host names are not resolved.
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

// ---------------------------------------------------------------------------
// Request and response as handlers see them
// ---------------------------------------------------------------------------

using http_fields = std::vector<std::pair<std::string, std::string>>;

namespace detail {

class debug_server_state;

inline char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

inline bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
}

}  // namespace detail

class debug_request {
public:
    debug_request() = default;

    // The method as sent, case-sensitive ("GET", "HEAD").
    std::string_view method() const noexcept { return method_; }
    bool is_head() const noexcept { return method_ == "HEAD"; }
    // The percent-decoded path, e.g. "/debug/pprof/goroutine".
    std::string_view path() const noexcept { return path_; }
    // The request target exactly as sent, e.g. "/debug/pprof/goroutine?debug=1".
    std::string_view target() const noexcept { return target_; }
    // The raw query, without '?': "debug=1&seconds=5".
    std::string_view raw_query() const noexcept { return raw_query_; }
    // The first value of a query parameter (decoded, '+' as space), like Go's
    // url.Values.Get; nullopt when absent. "?debug" gives an empty value.
    std::optional<std::string_view> param(std::string_view name) const noexcept {
        for (const auto& [k, v] : params_)
            if (k == name) return std::string_view(v);
        return std::nullopt;
    }
    // Every query parameter in order, repeated names included.
    const http_fields& params() const noexcept { return params_; }
    // The first header field of that name, compared case-insensitively.
    std::optional<std::string_view> header(std::string_view name) const noexcept {
        for (const auto& [k, v] : headers_)
            if (detail::iequals(k, name)) return std::string_view(v);
        return std::nullopt;
    }
    // Every header field in order, names as sent, values without surrounding blanks.
    const http_fields& headers() const noexcept { return headers_; }
    // HTTP/1.<minor>.
    int version_minor() const noexcept { return version_minor_; }
    // The client's address, e.g. "127.0.0.1:53412" or "[::1]:53412".
    std::string_view remote_address() const noexcept { return remote_; }

private:
    friend class detail::debug_server_state;
    std::string method_, path_, target_, raw_query_, remote_;
    http_fields params_, headers_;
    int version_minor_ = 1;
};

struct debug_response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    // Extra header fields. The server writes Content-Type (from content_type),
    // Content-Length, Connection, Date and X-Content-Type-Options itself; a
    // handler that sets one of those here gets a 500.
    http_fields headers;
    // Any bytes, binary included.
    std::string body;

    // Sets or replaces a header field (case-insensitive name); "Content-Type"
    // sets content_type. Throws std::invalid_argument for a server-managed
    // field or one HTTP cannot carry (CR, LF, NUL in it; a name not a token).
    void set_header(std::string_view name, std::string_view value);
    // Content-Disposition: attachment; filename="<filename>", like Go's pprof
    // handlers for binary profiles.
    void set_attachment(std::string_view filename);
};

using debug_handler = std::function<void(const debug_request&, debug_response&)>;

// One row of the /debug/pprof/ index, and its handler at /debug/pprof/<name>.
struct debug_profile {
    std::string name;         // [A-Za-z0-9_.-]+, e.g. "goroutine"
    std::string description;  // plain text, shown under the table
    // The count column; empty shows 0, as Go does for profiles without a count.
    // Called on the server thread while the index is rendered.
    std::function<std::int64_t()> count;
    // Served at /debug/pprof/<name>; may be empty when the route is registered
    // separately with handle().
    debug_handler handler;
};

// Registers /debug/pprof/goroutine?debug=0|1|2 (and its row on the index),
// /debug/goro/tasks.json and /metrics on `server` (see DEFAULT ROUTES above);
// the constructor calls it unless options.with_default_routes is false.
// Replaces handlers already registered on those paths. Defined at the end of
// this file, after debug_server.
inline void register_default_routes(debug_server& server);

// ---------------------------------------------------------------------------
// detail: HTTP parsing (pure, no sockets)
// ---------------------------------------------------------------------------

namespace detail {

// tchar from RFC 9110 5.6.2.
inline bool is_tchar(unsigned char c) noexcept {
    if (c >= '0' && c <= '9') return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

inline bool is_token(std::string_view s) noexcept {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_tchar(static_cast<unsigned char>(c))) return false;
    return true;
}

// field-value characters: VCHAR, obs-text, SP, HTAB.
inline bool is_field_value(std::string_view s) noexcept {
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c == '\t') continue;
        if (c < 0x20 || c == 0x7f) return false;
    }
    return true;
}

inline int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Percent-decodes `in`; with plus_as_space, '+' decodes to ' ' (query strings,
// as Go's url.ParseQuery). nullopt on a malformed escape ("%", "%4", "%zz").
inline std::optional<std::string> percent_decode(std::string_view in, bool plus_as_space) {
    std::string out;
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= in.size()) return std::nullopt;
            int hi = hex_value(in[i + 1]);
            int lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else if (c == '+' && plus_as_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return out;
}

// Splits "a=1&b=2&a" into decoded pairs; empty pieces are skipped.
// nullopt on a malformed escape.
inline std::optional<http_fields> parse_query(std::string_view query) {
    http_fields out;
    while (!query.empty()) {
        std::size_t amp = query.find('&');
        std::string_view piece = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (piece.empty()) continue;
        std::size_t eq = piece.find('=');
        auto key = percent_decode(piece.substr(0, eq), true);
        auto value = percent_decode(
            eq == std::string_view::npos ? std::string_view{} : piece.substr(eq + 1), true);
        if (!key || !value) return std::nullopt;
        out.emplace_back(std::move(*key), std::move(*value));
    }
    return out;
}

enum class http_parse_status { incomplete, complete, error };

struct http_request_head {
    std::string method;
    std::string target;     // as sent
    std::string authority;  // from an absolute-form target, else empty
    std::string path;       // percent-decoded; "*" for "OPTIONS *"
    std::string raw_path;   // the path part of the target, undecoded
    std::string raw_query;  // after '?', undecoded
    http_fields query;      // decoded
    http_fields headers;    // names as sent; values with surrounding blanks removed
    int version_minor = 1;  // HTTP/1.<minor>
    bool keep_alive = true; // by version and Connection header
    bool has_body = false;  // Content-Length > 0 or Transfer-Encoding present
};

struct http_parse_result {
    http_parse_status status = http_parse_status::incomplete;
    // complete: bytes of the head, final empty line included (a body or the
    // next pipelined request starts there).
    std::size_t consumed = 0;
    // error: the status to answer (400, 414, 431, 505) and why, for the body.
    int error_status = 0;
    std::string error_reason;
    http_request_head request;  // meaningful when complete
};


inline http_parse_result make_parse_error(int status, std::string reason) {
    http_parse_result r;
    r.status = http_parse_status::error;
    r.error_status = status;
    r.error_reason = std::move(reason);
    return r;
}

// Splits a comma-separated header value into trimmed, non-empty elements.
template <class F>
inline void for_each_list_element(std::string_view value, F&& f) {
    while (!value.empty()) {
        std::size_t comma = value.find(',');
        std::string_view el = value.substr(0, comma);
        value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
        while (!el.empty() && (el.front() == ' ' || el.front() == '\t')) el.remove_prefix(1);
        while (!el.empty() && (el.back() == ' ' || el.back() == '\t')) el.remove_suffix(1);
        if (!el.empty()) f(el);
    }
}

// Host field value: uri-host [":" port], loosely (RFC 3986 reg-name, IPv4,
// IP-literal chars). Empty is allowed (RFC 9112 3.2).
inline bool is_host_value(std::string_view v) noexcept {
    for (char ch : v) {
        auto c = static_cast<unsigned char>(ch);
        bool ok = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
                  std::string_view("-._~!$&'()*+,;=:[]%").find(static_cast<char>(c)) !=
                      std::string_view::npos;
        if (!ok) return false;
    }
    return true;
}

// Parses a request head from the start of `data`, which may hold a prefix of
// it (incomplete), a whole head followed by more bytes (complete; `consumed`
// says where the head ends), or a head that is not acceptable (error).
//
// Streaming contract, relied on by the server and checked by the fuzzer: for
// a prefix P of an input X, parse(P) is incomplete or the same result as
// parse(X) (the same error status; or complete with the same `consumed` when
// P already holds X's whole head). So an error is final as soon as it is seen,
// and limits are enforced before a head is complete: a request line longer
// than max_request_line is answered 414 after max_request_line + 2 bytes, a
// header section over max_header_bytes is answered 431 at that size.
//
// Lines end with CRLF or a bare LF (RFC 9112 2.2 allows accepting LF); a CR
// elsewhere is an error. Empty lines before the request line are skipped.
// Rejected with 400: a method that is not a token, anything but single spaces
// between the three parts, a target that is not origin-form, absolute-form
// (http/https) or "*" with OPTIONS, a target byte outside 0x21-0x7e or a '#',
// a bad percent escape or an escaped NUL in path or query, a version that is
// not HTTP/d.d, obs-fold, a field name that is not a token (so no blank before
// the colon), a control byte in a field value, an invalid or conflicting
// Content-Length, Content-Length with Transfer-Encoding, Transfer-Encoding in
// HTTP/1.0, and HTTP/1.1 without exactly one Host. HTTP/d.d with d != 1: 505.
inline http_parse_result parse_http_request(std::string_view in, const debug_server_limits& limits) {
    using status = http_parse_status;
    http_parse_result result;
    std::size_t pos = 0;

    // Empty lines before the request line (RFC 9112 2.2), bounded.
    for (;;) {
        if (pos > limits.max_request_line)
            return make_parse_error(400, "too many empty lines before the request line");
        if (pos < in.size() && in[pos] == '\n') { ++pos; continue; }
        if (pos + 1 < in.size() && in[pos] == '\r' && in[pos + 1] == '\n') { pos += 2; continue; }
        if (pos + 1 == in.size() && in[pos] == '\r') return result;  // incomplete
        break;
    }
    if (pos == in.size()) return result;

    // The request line. The method check comes first and looks at the same
    // window whether the line is complete or not, so that a prefix never
    // reports a different error than the whole input (see the contract).
    std::size_t nl = in.find('\n', pos);
    const bool line_complete = nl != std::string_view::npos;
    std::string_view raw_line = in.substr(pos, line_complete ? nl - pos : std::string_view::npos);
    {
        std::size_t window = std::min(raw_line.size(), limits.max_request_line + 1);
        for (std::size_t i = 0; i < window && raw_line[i] != ' '; ++i)
            if (!is_tchar(static_cast<unsigned char>(raw_line[i])))
                return make_parse_error(400, "malformed request line (method is not a token)");
    }
    if (!line_complete) {
        if (raw_line.size() > limits.max_request_line + 1)
            return make_parse_error(414, "request line longer than " +
                                             std::to_string(limits.max_request_line) + " bytes");
        return result;  // incomplete
    }
    std::string_view line = raw_line;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > limits.max_request_line)
        return make_parse_error(414, "request line longer than " +
                                         std::to_string(limits.max_request_line) + " bytes");
    if (line.find('\r') != std::string_view::npos)
        return make_parse_error(400, "bare CR in request line");

    std::size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos || sp1 == 0)
        return make_parse_error(400, "malformed request line");
    std::size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || sp2 == sp1 + 1 ||
        line.find(' ', sp2 + 1) != std::string_view::npos)
        return make_parse_error(400, "malformed request line");
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);

    // HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive.
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
        return make_parse_error(400, "malformed HTTP version");
    if (version[5] != '1')
        return make_parse_error(505, "only HTTP/1.x is supported");

    http_request_head& req = result.request;
    req.version_minor = version[7] - '0';

    for (char ch : target) {
        auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c >= 0x7f) return make_parse_error(400, "invalid byte in request target");
        if (c == '#') return make_parse_error(400, "fragment in request target");
    }
    std::string_view path_and_query;
    if (target == "*") {
        if (method != "OPTIONS") return make_parse_error(400, "'*' target is only for OPTIONS");
    } else if (!target.empty() && target.front() == '/') {
        path_and_query = target;
    } else {
        // absolute-form (RFC 9112 3.2.2): scheme "://" authority [path-abempty] ["?" query]
        std::string_view rest;
        if (target.size() > 7 && iequals(target.substr(0, 7), "http://")) rest = target.substr(7);
        else if (target.size() > 8 && iequals(target.substr(0, 8), "https://")) rest = target.substr(8);
        else return make_parse_error(400, "request target is not a path");
        std::size_t end = rest.find_first_of("/?");
        std::string_view authority = rest.substr(0, end);
        if (authority.empty() || !is_host_value(authority))
            return make_parse_error(400, "invalid authority in request target");
        req.authority = std::string(authority);
        path_and_query = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
    }
    if (target == "*") {
        req.path = "*";
        req.raw_path = "*";
    } else {
        std::size_t q = path_and_query.find('?');
        std::string_view raw_path = path_and_query.substr(0, q);
        if (q != std::string_view::npos) req.raw_query = std::string(path_and_query.substr(q + 1));
        req.raw_path = raw_path.empty() ? std::string("/") : std::string(raw_path);
        auto decoded = percent_decode(req.raw_path, false);
        if (!decoded) return make_parse_error(400, "malformed percent escape in path");
        if (decoded->find('\0') != std::string::npos) return make_parse_error(400, "NUL in path");
        req.path = std::move(*decoded);
        auto query = parse_query(req.raw_query);
        if (!query) return make_parse_error(400, "malformed percent escape in query");
        for (const auto& [k, v] : *query)
            if (k.find('\0') != std::string::npos || v.find('\0') != std::string::npos)
                return make_parse_error(400, "NUL in query");
        req.query = std::move(*query);
    }
    req.method = std::string(method);
    req.target = std::string(target);

    // Header fields.
    const std::size_t fields_start = nl + 1;
    std::size_t p = fields_start;
    std::size_t count = 0;
    for (;;) {
        std::size_t eol = in.find('\n', p);
        if (eol == std::string_view::npos) {
            if (in.size() - fields_start > limits.max_header_bytes)
                return make_parse_error(431, "header section larger than " +
                                                 std::to_string(limits.max_header_bytes) + " bytes");
            result.request = http_request_head{};
            return result;  // incomplete
        }
        if (eol + 1 - fields_start > limits.max_header_bytes)
            return make_parse_error(431, "header section larger than " +
                                             std::to_string(limits.max_header_bytes) + " bytes");
        std::string_view fl = in.substr(p, eol - p);
        p = eol + 1;
        if (!fl.empty() && fl.back() == '\r') fl.remove_suffix(1);
        if (fl.empty()) break;  // end of the head
        if (fl.front() == ' ' || fl.front() == '\t')
            return make_parse_error(400, "obsolete line folding in header section");
        if (++count > limits.max_header_count)
            return make_parse_error(431, "more than " + std::to_string(limits.max_header_count) +
                                             " header fields");
        std::size_t colon = fl.find(':');
        if (colon == std::string_view::npos) return make_parse_error(400, "header line without ':'");
        std::string_view name = fl.substr(0, colon);
        if (!is_token(name)) return make_parse_error(400, "invalid header field name");
        std::string_view value = fl.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
        while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
        if (!is_field_value(value)) return make_parse_error(400, "invalid byte in header field value");
        req.headers.emplace_back(std::string(name), std::string(value));
    }
    result.consumed = p;

    // Semantics of the fields that frame the message.
    int hosts = 0;
    bool saw_close = false, saw_keep_alive = false, saw_te = false;
    std::optional<std::uint64_t> content_length;
    for (const auto& [name, value] : req.headers) {
        if (iequals(name, "host")) {
            ++hosts;
            if (!is_host_value(value)) return make_parse_error(400, "invalid Host header");
        } else if (iequals(name, "connection")) {
            for_each_list_element(value, [&](std::string_view el) {
                if (iequals(el, "close")) saw_close = true;
                else if (iequals(el, "keep-alive")) saw_keep_alive = true;
            });
        } else if (iequals(name, "transfer-encoding")) {
            saw_te = true;
        } else if (iequals(name, "content-length")) {
            std::uint64_t n = 0;
            if (value.empty() || value.size() > 18) return make_parse_error(400, "invalid Content-Length");
            for (char c : value) {
                if (c < '0' || c > '9') return make_parse_error(400, "invalid Content-Length");
                n = n * 10 + static_cast<std::uint64_t>(c - '0');
            }
            if (content_length && *content_length != n)
                return make_parse_error(400, "conflicting Content-Length headers");
            content_length = n;
        }
    }
    if (req.version_minor >= 1 && hosts != 1)
        return make_parse_error(400, hosts == 0 ? "missing Host header" : "more than one Host header");
    if (hosts > 1) return make_parse_error(400, "more than one Host header");
    if (saw_te && content_length)
        return make_parse_error(400, "both Transfer-Encoding and Content-Length");
    if (saw_te && req.version_minor == 0)
        return make_parse_error(400, "Transfer-Encoding in an HTTP/1.0 request");
    req.has_body = saw_te || (content_length && *content_length > 0);
    req.keep_alive = req.version_minor >= 1 ? !saw_close : (saw_keep_alive && !saw_close);
    result.status = status::complete;
    return result;
}

// ---------------------------------------------------------------------------
// detail: small helpers shared by the server and the routes
// ---------------------------------------------------------------------------

// Compares in time that depends only on the lengths, not on where the first
// difference is: for the bearer token.
inline bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
    // Volatile keeps the compiler from turning the loop into an early exit.
    volatile unsigned char diff = static_cast<unsigned char>(a.size() != b.size());
    for (std::size_t i = 0; i < b.size(); ++i) {
        unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        diff = static_cast<unsigned char>(diff | (x ^ static_cast<unsigned char>(b[i])));
    }
    return diff == 0;
}

inline void append_html_escaped(std::string& out, std::string_view s) {
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out.push_back(c);
        }
    }
}

inline std::string_view http_reason_phrase(int status) noexcept {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

// IMF-fixdate (RFC 9110 5.6.7), without the locale that strftime would use.
inline std::string http_date(std::time_t t) {
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    if (::gmtime_r(&t, &tm) == nullptr) return "Thu, 01 Jan 1970 00:00:00 GMT";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                  tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    return buf;
}

// Header fields the server writes itself.
inline bool is_managed_header(std::string_view name) noexcept {
    return iequals(name, "content-length") || iequals(name, "content-type") ||
           iequals(name, "transfer-encoding") || iequals(name, "connection") ||
           iequals(name, "date") || iequals(name, "x-content-type-options") ||
           iequals(name, "keep-alive");
}

// Why a handler's response cannot be sent as is; empty when it can.
inline std::string check_response(const debug_response& r) {
    if (r.status < 200 || r.status > 599)
        return "handler set status " + std::to_string(r.status) + " (must be 200-599)";
    if ((r.status == 204 || r.status == 304) && !r.body.empty())
        return "handler set a body on a " + std::to_string(r.status) + " response";
    if (r.content_type.empty()) return "handler cleared content_type";
    if (!is_field_value(r.content_type)) return "invalid byte in content_type";
    for (const auto& [name, value] : r.headers) {
        if (!is_token(name)) return "invalid header name '" + name + "'";
        if (is_managed_header(name)) return "handler set server-managed header '" + name + "'";
        if (!is_field_value(value)) return "invalid byte in value of header '" + name + "'";
    }
    return {};
}

}  // namespace detail

inline void debug_response::set_header(std::string_view name, std::string_view value) {
    if (!detail::is_token(name))
        throw std::invalid_argument("goro::debug_response::set_header: invalid name '" +
                                    std::string(name) + "'");
    if (!detail::is_field_value(value))
        throw std::invalid_argument("goro::debug_response::set_header: invalid byte in value of '" +
                                    std::string(name) + "'");
    if (detail::iequals(name, "content-type")) {
        content_type = std::string(value);
        return;
    }
    if (detail::is_managed_header(name))
        throw std::invalid_argument("goro::debug_response::set_header: '" + std::string(name) +
                                    "' is written by the server");
    for (auto& [k, v] : headers) {
        if (detail::iequals(k, name)) {
            v = std::string(value);
            return;
        }
    }
    headers.emplace_back(std::string(name), std::string(value));
}

inline void debug_response::set_attachment(std::string_view filename) {
    std::string v = "attachment; filename=\"";
    for (char c : filename) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) throw std::invalid_argument(
            "goro::debug_response::set_attachment: control byte in filename");
        if (c == '"' || c == '\\') v.push_back('\\');
        v.push_back(c);
    }
    v.push_back('"');
    set_header("Content-Disposition", v);
}

// ---------------------------------------------------------------------------
// detail: Prometheus text exposition format 0.0.4
// ---------------------------------------------------------------------------

namespace detail {

inline constexpr std::string_view prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";

enum class metric_type { counter, gauge, histogram, summary, untyped };

// Writes metric families into a string:
//
//     std::string out;
//     goro::detail::prometheus_text_writer w(out);
//     w.family("goro_goroutines", goro::detail::metric_type::gauge, "Goroutines that exist.");
//     w.sample("goro_goroutines", 12);
//     w.family("goro_tasks", goro::detail::metric_type::gauge, "Tasks by state.");
//     w.sample("goro_tasks", {{"state", "waiting"}}, 7);
//
// Names are checked (metric: [a-zA-Z_:][a-zA-Z0-9_:]*, label:
// [a-zA-Z_][a-zA-Z0-9_]* not starting with "__"); a bad name or a family
// written twice throws std::invalid_argument, since it is a programming error
// and Prometheus would reject the whole scrape. HELP text and label values are
// escaped. Integers are written exactly, floating values shortest-round-trip,
// NaN and infinities as NaN, +Inf, -Inf.
class prometheus_text_writer {
public:
    using label = std::pair<std::string_view, std::string_view>;

    explicit prometheus_text_writer(std::string& out) : out_(out) {}

    void family(std::string_view name, metric_type type, std::string_view help) {
        check_metric_name(name);
        for (const auto& f : families_)
            if (f == name)
                throw std::invalid_argument("goro::detail::prometheus_text_writer: family '" +
                                            std::string(name) + "' written twice");
        families_.emplace_back(name);
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        for (char c : help) {
            if (c == '\\') out_ += "\\\\";
            else if (c == '\n') out_ += "\\n";
            else out_.push_back(c);
        }
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type_name(type);
        out_ += '\n';
    }

    template <class T>
        requires std::is_arithmetic_v<T>
    void sample(std::string_view name, T value) {
        sample(name, std::span<const label>{}, value);
    }

    template <class T>
        requires std::is_arithmetic_v<T>
    void sample(std::string_view name, std::initializer_list<label> labels, T value) {
        sample(name, std::span<const label>(labels.begin(), labels.size()), value);
    }

    template <class T>
        requires std::is_arithmetic_v<T>
    void sample(std::string_view name, std::span<const label> labels, T value) {
        check_metric_name(name);
        out_ += name;
        if (!labels.empty()) {
            out_ += '{';
            bool first = true;
            for (const auto& [k, v] : labels) {
                check_label_name(k);
                if (!first) out_ += ',';
                first = false;
                out_ += k;
                out_ += "=\"";
                for (char c : v) {
                    if (c == '\\') out_ += "\\\\";
                    else if (c == '"') out_ += "\\\"";
                    else if (c == '\n') out_ += "\\n";
                    else out_.push_back(c);
                }
                out_ += '"';
            }
            out_ += '}';
        }
        out_ += ' ';
        append_value(value);
        out_ += '\n';
    }

private:
    static std::string_view type_name(metric_type t) noexcept {
        switch (t) {
        case metric_type::counter: return "counter";
        case metric_type::gauge: return "gauge";
        case metric_type::histogram: return "histogram";
        case metric_type::summary: return "summary";
        case metric_type::untyped: break;
        }
        return "untyped";
    }
    static bool name_char(char c, bool first, bool colon_ok) noexcept {
        if (c == '_' || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return true;
        if (c == ':') return colon_ok;
        return !first && c >= '0' && c <= '9';
    }
    static void check_metric_name(std::string_view n) {
        bool ok = !n.empty();
        for (std::size_t i = 0; ok && i < n.size(); ++i) ok = name_char(n[i], i == 0, true);
        if (!ok)
            throw std::invalid_argument("goro::detail::prometheus_text_writer: invalid metric name '" +
                                        std::string(n) + "'");
    }
    static void check_label_name(std::string_view n) {
        bool ok = !n.empty() && n.substr(0, std::min<std::size_t>(2, n.size())) != "__";
        for (std::size_t i = 0; ok && i < n.size(); ++i) ok = name_char(n[i], i == 0, false);
        if (!ok)
            throw std::invalid_argument("goro::detail::prometheus_text_writer: invalid label name '" +
                                        std::string(n) + "'");
    }
    template <class T>
    void append_value(T value) {
        if constexpr (std::is_same_v<T, bool>) {
            out_ += value ? '1' : '0';
        } else if constexpr (std::is_integral_v<T>) {
            char buf[32];
            auto r = std::to_chars(buf, buf + sizeof buf, value);
            out_.append(buf, r.ptr);
        } else {
            double d = static_cast<double>(value);
            if (std::isnan(d)) { out_ += "NaN"; return; }
            if (std::isinf(d)) { out_ += d > 0 ? "+Inf" : "-Inf"; return; }
            char buf[64];
            auto r = std::to_chars(buf, buf + sizeof buf, d);
            out_.append(buf, r.ptr);
        }
    }

    std::string& out_;
    std::vector<std::string> families_;
};

}  // namespace detail

// ---------------------------------------------------------------------------
// detail: sockets
// ---------------------------------------------------------------------------

namespace detail {

// A parsed bind address.
struct socket_address {
    sockaddr_storage storage{};
    socklen_t length = 0;
    int family = AF_UNSPEC;
    bool loopback = false;
    std::string text;  // "127.0.0.1" or "::1", without brackets
};

// Accepts IPv4 and IPv6 literals ("[::1]" too) and "localhost" (127.0.0.1).
inline std::optional<socket_address> parse_bind_address(std::string_view address) {
    std::string text(address);
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
    if (iequals(text, "localhost")) text = "127.0.0.1";
    socket_address a;
    in_addr v4{};
    in6_addr v6{};
    if (text.find('\0') != std::string::npos) return std::nullopt;
    if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr = v4;
        std::memcpy(&a.storage, &sin, sizeof sin);
        a.length = sizeof sin;
        a.family = AF_INET;
        a.loopback = (ntohl(v4.s_addr) >> 24) == 127;
    } else if (::inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr = v6;
        std::memcpy(&a.storage, &sin6, sizeof sin6);
        a.length = sizeof sin6;
        a.family = AF_INET6;
        const unsigned char* b = v6.s6_addr;
        static constexpr unsigned char loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        static constexpr unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        a.loopback = std::memcmp(b, loop6, 16) == 0 ||
                     (std::memcmp(b, mapped, 12) == 0 && b[12] == 127);
    } else {
        return std::nullopt;
    }
    a.text = text;
    return a;
}

inline std::string format_endpoint(const sockaddr* sa) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (sa->sa_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, sa, sizeof sin);
        ::inet_ntop(AF_INET, &sin.sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(sin.sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, sa, sizeof sin6);
        ::inet_ntop(AF_INET6, &sin6.sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(sin6.sin6_port));
    }
    return "?";
}

// Is the Host value (host[:port]) a name that can only mean this machine?
inline bool is_loopback_host(std::string_view host) {
    if (host.empty()) return false;
    std::string_view name;
    if (host.front() == '[') {
        std::size_t close = host.find(']');
        if (close == std::string_view::npos) return false;
        name = host.substr(1, close - 1);
        std::string_view rest = host.substr(close + 1);
        if (!rest.empty() && rest.front() != ':') return false;
        auto a = parse_bind_address(name);
        return a && a->family == AF_INET6 && a->loopback;
    }
    std::size_t colon = host.find(':');
    name = host.substr(0, colon);
    if (colon != std::string_view::npos && host.find(':', colon + 1) != std::string_view::npos) return false;
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);  // "localhost."
    if (iequals(name, "localhost")) return true;
    if (name.size() > 10 && iequals(name.substr(name.size() - 10), ".localhost")) return true;
    std::string n(name);
    in_addr v4{};
    return ::inet_pton(AF_INET, n.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

inline void set_cloexec_nonblock(int fd) noexcept {
    int fdf = ::fcntl(fd, F_GETFD);
    if (fdf >= 0) ::fcntl(fd, F_SETFD, fdf | FD_CLOEXEC);
    int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

inline void close_fd(int& fd) noexcept {
    if (fd >= 0) {
        ::close(fd);  // Not retried on EINTR: on Linux the fd is gone either way.
        fd = -1;
    }
}

#ifdef MSG_NOSIGNAL
inline constexpr int send_flags = MSG_NOSIGNAL;
#else
inline constexpr int send_flags = 0;  // SO_NOSIGPIPE is set on the socket instead
#endif

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
                    respond_error(c, 408, "request head not received within read_timeout");
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
                respond_error(c, 431, "request head too large");
            } else if (c.peer_eof) {
                close_connection(c);
            }
            return;
        }
        if (r.status == http_parse_status::error) {
            bad_requests_.fetch_add(1, std::memory_order_relaxed);
            respond_error(c, r.error_status, r.error_reason);
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
                plain(500, std::string(e.what()) + "\n");
            } catch (...) {
                handler_errors_.fetch_add(1, std::memory_order_relaxed);
                plain(500, "handler threw an exception not derived from std::exception\n");
            }
        } else if (redirect) {
            // raw_path is plain visible ASCII (checked by the parser): safe in a header.
            std::string location = head.raw_path + "/";
            if (!head.raw_query.empty()) location += "?" + head.raw_query;
            plain(301, "<a href=\"" + location + "\">Moved Permanently</a>.\n");
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

// ---------------------------------------------------------------------------
// debug_server
// ---------------------------------------------------------------------------

class debug_server {
public:
    using options = debug_server_options;

    // Validates the options (std::invalid_argument naming the bad one) and
    // registers /debug/pprof/; does not bind: start() does.
    explicit debug_server(options opts = {}) {
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
        if (opts.max_connections == 0)
            throw std::invalid_argument("goro::debug_server: max_connections must be at least 1");
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
        state_ = std::make_unique<detail::debug_server_state>(std::move(opts), std::move(*addr));
        detail::debug_server_state* s = state_.get();
        // The state outlives the route (it owns it), so a raw pointer is safe.
        s->handle("/debug/pprof/", [s](const debug_request&, debug_response& r) {
            r.content_type = "text/html; charset=utf-8";
            r.body = s->render_index();
        });
        if (defaults) register_default_routes(*this);
    }

    ~debug_server() = default;  // the state's destructor stops the server

    debug_server(const debug_server&) = delete;
    debug_server& operator=(const debug_server&) = delete;
    // A moved-from server may only be destroyed or assigned to; the thread
    // keeps running with the state, which moves along.
    debug_server(debug_server&&) noexcept = default;
    debug_server& operator=(debug_server&&) noexcept = default;

    // Binds, listens and starts the server thread. Throws std::system_error
    // ("goro::debug_server::start: bind 127.0.0.1:6060: Address already in
    // use") or std::logic_error when already running. May be called again
    // after stop(); with port 0 the new port may differ.
    void start() { state().start(); }
    // Stops accepting, closes every connection, joins the thread. Idempotent.
    // Throws std::logic_error when called from the server thread.
    void stop() { state().stop(); }
    bool running() const noexcept { return state_ && state_->running(); }

    // The bound port (the real one when options.port is 0); 0 before the first
    // start(). After stop() the last bound port.
    std::uint16_t port() const noexcept { return state_ ? state_->port() : 0; }
    // "http://127.0.0.1:6060" or "http://[::1]:6060".
    std::string url() const {
        const auto& a = state().address();
        std::string host = a.family == AF_INET6 ? "[" + a.text + "]" : a.text;
        return "http://" + host + ":" + std::to_string(port());
    }
    const options& config() const { return state().options(); }
    debug_server_stats stats() const { return state().stats(); }

    // Serves GET/HEAD `path` (exact, percent-decoded, starting with '/') with
    // `handler`, on the server thread. Replaces a handler already registered
    // there. Thread-safe; may be called while running.
    void handle(std::string path, debug_handler handler) { state().handle(std::move(path), std::move(handler)); }
    // Unregisters; false if nothing was there. A call already running finishes.
    bool remove_handler(std::string_view path) { return state().remove_handler(path); }
    // Lists `profile` on /debug/pprof/ (sorted by name) and, with a handler,
    // serves it at /debug/pprof/<name>. Replaces a profile of the same name.
    void add_profile(debug_profile profile) { state().add_profile(std::move(profile)); }
    // An extra link under the index table, e.g. ("goroutine?debug=2", "full goroutine stack dump").
    // A link to the same href replaces the earlier one's text.
    void add_index_link(std::string href, std::string text) {
        state().add_index_link(std::move(href), std::move(text));
    }

private:
    detail::debug_server_state& state() const {
        if (!state_) throw std::logic_error("goro::debug_server: used after being moved from");
        return *state_;
    }
    std::unique_ptr<detail::debug_server_state> state_;
};

// ---------------------------------------------------------------------------
// The default routes
// ---------------------------------------------------------------------------

namespace detail {

// The `debug` parameter of /debug/pprof/goroutine: absent or empty is 0 (as in
// Go, where FormValue gives "" and Atoi's error is ignored); 0, 1 and 2 are
// Go's; anything else is refused, naming the parameter, rather than guessed.
inline std::optional<int> goroutine_debug_param(const debug_request& req) {
    auto v = req.param("debug");
    if (!v || v->empty()) return 0;
    if (*v == "0") return 0;
    if (*v == "1") return 1;
    if (*v == "2") return 2;
    return std::nullopt;
}

inline void serve_goroutine_profile(const debug_request& req, debug_response& r) {
    auto bad = [&](std::string why) {
        r.status = 400;
        r.content_type = "text/plain; charset=utf-8";
        r.body = std::move(why);
    };
    std::optional<int> debug = goroutine_debug_param(req);
    if (!debug) {
        std::string shown(req.param("debug").value_or(""));
        if (shown.size() > 32) shown = shown.substr(0, 32) + "...";
        for (char& c : shown)
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
        bad("invalid value of query parameter 'debug': \"" + shown +
            "\" (want 0 for the pprof protobuf, 1 for stacks grouped with counts, 2 for one "
            "stack per goroutine)\n");
        return;
    }
    // Go serves a delta profile for ?seconds=N, holding the request for N
    // seconds; one slow request would hold this server's only thread, so goro
    // says how to get the same answer instead of pretending.
    if (auto sec = req.param("seconds"); sec && !sec->empty() && *sec != "0") {
        bad("query parameter 'seconds' (a delta profile) is not supported: fetch the profile "
            "twice and compare with `go tool pprof -base first second`, or goro::diff\n");
        return;
    }
    if (*debug == 0) {
        r.content_type = "application/octet-stream";
        r.set_attachment("goroutine");
    } else {
        r.content_type = "text/plain; charset=utf-8";
    }
    r.body = goroutine_profile(*debug);
}

// Tasks by state and wait reason, from one walk of the registry's live headers
// (the shard locks hold spawns off; a task that exits during the walk may or
// may not be counted). States are read as they are, with no stop of the
// world: precise enough for a gauge, and a scrape never pauses the workers.
struct task_census {
    std::int64_t total = 0;
    std::int64_t by_state[3] = {0, 0, 0};  // waiting, runnable, running
    std::vector<std::pair<std::string, std::int64_t>> by_reason;  // sorted by reason
};

inline task_census take_task_census() {
    task_census c;
    // Wait reasons are static strings: count by pointer under the locks (no
    // allocation there beyond the rare new reason), merge by text afterwards.
    std::vector<std::pair<const char*, std::int64_t>> reasons;
    reasons.reserve(32);
    the_registry().for_each_locked([&](task_header& h) {
        ++c.total;
        switch (h.state.load(std::memory_order_relaxed)) {
        case task_state::waiting: {
            ++c.by_state[0];
            const char* why = h.wait_reason.load(std::memory_order_relaxed);
            if (!why) why = "unknown";
            auto it = std::find_if(reasons.begin(), reasons.end(),
                                   [&](const auto& p) { return p.first == why; });
            if (it != reasons.end()) ++it->second;
            else reasons.emplace_back(why, 1);
            break;
        }
        case task_state::runnable: ++c.by_state[1]; break;
        default: ++c.by_state[2]; break;
        }
    });
    for (const auto& [why, n] : reasons) {
        std::string_view text(why);
        auto it = std::find_if(c.by_reason.begin(), c.by_reason.end(),
                               [&](const auto& p) { return p.first == text; });
        if (it != c.by_reason.end()) it->second += n;
        else c.by_reason.emplace_back(std::string(text), n);
    }
    std::sort(c.by_reason.begin(), c.by_reason.end());
    return c;
}

inline std::string render_metrics() {
    std::string out;
    prometheus_text_writer w(out);
    const task_census c = take_task_census();
    w.family("goro_tasks", metric_type::gauge,
             "Tasks that exist now (goro::num_goroutines(): started and not finished, "
             "plus threads waiting in goro::block_on).");
    w.sample("goro_tasks", c.total);
    w.family("goro_tasks_by_state", metric_type::gauge, "Tasks by scheduling state.");
    w.sample("goro_tasks_by_state", {{"state", "waiting"}}, c.by_state[0]);
    w.sample("goro_tasks_by_state", {{"state", "runnable"}}, c.by_state[1]);
    w.sample("goro_tasks_by_state", {{"state", "running"}}, c.by_state[2]);
    w.family("goro_tasks_waiting", metric_type::gauge,
             "Waiting tasks by wait reason, in Go's words (\"chan receive\", \"select\", ...).");
    for (const auto& [reason, n] : c.by_reason) w.sample("goro_tasks_waiting", {{"reason", reason}}, n);
    w.family("goro_tasks_started_total", metric_type::counter,
             "Tasks ever started (and block_on calls); minus goro_tasks, the number that finished.");
    w.sample("goro_tasks_started_total", the_registry().total_added());
    // Not the_scheduler(): a scrape must not start the pool as a side effect.
    std::int64_t workers = 0, idle = 0, queued = 0;
    if (pool_started()) {
        scheduler& s = the_scheduler();
        workers = static_cast<std::int64_t>(s.size());
        idle = s.idle_workers();
        queued = static_cast<std::int64_t>(s.global_queue_size());
    }
    w.family("goro_workers", metric_type::gauge,
             "Worker threads of the pool (GOMAXPROCS); 0 until the pool starts.");
    w.sample("goro_workers", workers);
    w.family("goro_workers_idle", metric_type::gauge, "Workers parked for lack of work.");
    w.sample("goro_workers_idle", idle);
    w.family("goro_global_queue_length", metric_type::gauge,
             "Runnable tasks in the global run queue (woken from outside the pool, or overflow).");
    w.sample("goro_global_queue_length", queued);
    w.family("goro_build_info", metric_type::gauge, "The goro library version; the value is always 1.");
    w.sample("goro_build_info", {{"version", goro::version()}}, 1);
    return out;
}

}  // namespace detail

inline void register_default_routes(debug_server& server) {
    server.add_profile(debug_profile{
        "goroutine",
        "Stack traces of all current goroutines (goro tasks). Use debug=2 as a query parameter "
        "to export in the same format as an unrecovered panic.",
        [] { return num_goroutines(); },
        detail::serve_goroutine_profile,
    });
    server.add_index_link("goroutine?debug=2", "full goroutine stack dump");
    server.add_index_link("/debug/goro/tasks.json", "every task as JSON");
    server.add_index_link("/metrics", "Prometheus metrics");
    server.handle("/debug/goro/tasks.json", [](const debug_request&, debug_response& r) {
        r.content_type = "application/json";
        r.body = tasks_json();
    });
    server.handle("/metrics", [](const debug_request&, debug_response& r) {
        r.content_type = std::string(detail::prometheus_content_type);
        r.body = detail::render_metrics();
    });
}

}  // namespace goro

#endif  // GORO_DEBUG_SERVER_HPP
