#ifndef GORO_HTTP_REQUEST_HPP
#define GORO_HTTP_REQUEST_HPP

// The debug server's request side: the limits on a request head, the HTTP/1.x
// request-head parser and goro::debug_request, the request as a handler sees it.
//
// detail::parse_http_request() is a pure function (no sockets, no state): the
// connection loop (goro/http/server.hpp) calls it on the bytes received so far,
// and tests/fuzz/fuzz_http_request.cpp fuzzes it against its streaming contract.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <goro/core/linkage.hpp>

namespace goro {

// Limits on a request head. A request over a limit is answered with the given
// status and the connection is closed.
struct debug_server_limits {
    std::size_t max_request_line = 8 * 1024;   // bytes, CRLF excluded; else 414
    std::size_t max_header_bytes = 16 * 1024;  // all field lines with their CRLFs
                                               // and the final empty line; else 431
    std::size_t max_header_count = 100;        // field lines; else 431
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

GORO_DECL bool iequals(std::string_view a, std::string_view b) noexcept;

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
    std::optional<std::string_view> param(std::string_view name) const noexcept;
    // Every query parameter in order, repeated names included.
    const http_fields& params() const noexcept { return params_; }
    // The first header field of that name, compared case-insensitively.
    std::optional<std::string_view> header(std::string_view name) const noexcept;
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

// ---------------------------------------------------------------------------
// detail: HTTP parsing (pure, no sockets)
// ---------------------------------------------------------------------------

namespace detail {

// tchar from RFC 9110 5.6.2.
GORO_DECL bool is_tchar(unsigned char c) noexcept;

GORO_DECL bool is_token(std::string_view s) noexcept;

// field-value characters: VCHAR, obs-text, SP, HTAB.
GORO_DECL bool is_field_value(std::string_view s) noexcept;

GORO_DECL int hex_value(char c) noexcept;

// Percent-decodes `in`; with plus_as_space, '+' decodes to ' ' (query strings,
// as Go's url.ParseQuery). nullopt on a malformed escape ("%", "%4", "%zz").
GORO_DECL std::optional<std::string> percent_decode(std::string_view in, bool plus_as_space);

// Splits "a=1&b=2&a" into decoded pairs; empty pieces are skipped.
// nullopt on a malformed escape.
GORO_DECL std::optional<http_fields> parse_query(std::string_view query);

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


GORO_DECL http_parse_result make_parse_error(int status, std::string reason);

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
GORO_DECL bool is_host_value(std::string_view v) noexcept;

// Whether the bytes received so far begin a HEAD request (after the empty
// lines the parser skips): an error answer to it must have no body either,
// even when the parser rejected the head.
GORO_DECL bool starts_head_request(std::string_view in) noexcept;

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
GORO_DECL http_parse_result parse_http_request(std::string_view in, const debug_server_limits& limits);

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>

namespace goro {

GORO_DECL std::optional<std::string_view> debug_request::param(std::string_view name) const noexcept {
    for (const auto& [k, v] : params_)
        if (k == name) return std::string_view(v);
    return std::nullopt;
}

GORO_DECL std::optional<std::string_view> debug_request::header(std::string_view name) const noexcept {
    for (const auto& [k, v] : headers_)
        if (detail::iequals(k, name)) return std::string_view(v);
    return std::nullopt;
}

}  // namespace goro

namespace goro::detail {

GORO_DECL bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
}

GORO_DECL bool is_tchar(unsigned char c) noexcept {
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

GORO_DECL bool is_token(std::string_view s) noexcept {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_tchar(static_cast<unsigned char>(c))) return false;
    return true;
}

GORO_DECL bool is_field_value(std::string_view s) noexcept {
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c == '\t') continue;
        if (c < 0x20 || c == 0x7f) return false;
    }
    return true;
}

GORO_DECL int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

GORO_DECL std::optional<std::string> percent_decode(std::string_view in, bool plus_as_space) {
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

GORO_DECL std::optional<http_fields> parse_query(std::string_view query) {
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

GORO_DECL http_parse_result make_parse_error(int status, std::string reason) {
    http_parse_result r;
    r.status = http_parse_status::error;
    r.error_status = status;
    r.error_reason = std::move(reason);
    return r;
}

GORO_DECL bool is_host_value(std::string_view v) noexcept {
    for (char ch : v) {
        auto c = static_cast<unsigned char>(ch);
        bool ok = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
                  std::string_view("-._~!$&'()*+,;=:[]%").find(static_cast<char>(c)) !=
                      std::string_view::npos;
        if (!ok) return false;
    }
    return true;
}

GORO_DECL bool starts_head_request(std::string_view in) noexcept {
    std::size_t i = 0;
    while (i < in.size() && (in[i] == '\r' || in[i] == '\n')) ++i;
    return in.substr(i, 5) == "HEAD ";
}

GORO_DECL http_parse_result parse_http_request(std::string_view in, const debug_server_limits& limits) {
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

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_REQUEST_HPP
