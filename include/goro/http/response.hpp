#ifndef GORO_HTTP_RESPONSE_HPP
#define GORO_HTTP_RESPONSE_HPP

// goro::debug_response, the response a handler fills in; debug_handler and
// debug_profile, what a program registers on a debug_server; and the helpers
// that check a response and write its status line and Date.

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <ostream>
#include <streambuf>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <goro/core/linkage.hpp>
#include <goro/http/request.hpp>

namespace goro {

namespace detail {

// A large response body, written in blocks mapped straight from the system
// (64 KiB, doubling up to 1 MiB) instead of one string. Such a string grows
// by copying (a 39 MB dump passes through buffers of 16 and 32 MB first) and,
// once freed, leaves its space with the allocator: glibc raises its mmap
// threshold to the largest freed block, so the next dump of that size comes
// from the heap and stays in the process. A block is returned to the system
// (munmap) when the body is destroyed, and only the pages written are ever
// resident. Move-only; not thread-safe (one writer, then read-only).
class body_blocks {
public:
    struct block {
        char* data;
        std::size_t capacity;
        std::size_t size;
    };

    body_blocks() = default;
    body_blocks(body_blocks&& o) noexcept : blocks_(std::move(o.blocks_)), size_(std::exchange(o.size_, 0)) {
        o.blocks_.clear();
    }
    body_blocks& operator=(body_blocks&& o) noexcept;
    body_blocks(const body_blocks&) = delete;
    body_blocks& operator=(const body_blocks&) = delete;
    ~body_blocks() { release(); }

    static constexpr std::size_t first_block = std::size_t{64} << 10;
    static constexpr std::size_t max_block = std::size_t{1} << 20;

    // Throws std::bad_alloc when the system has no memory to map.
    void append(const char* p, std::size_t n);
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    const std::vector<block>& blocks() const noexcept { return blocks_; }
    // All the bytes as one string (for tests and small bodies).
    std::string str() const;

private:
    void grow();
    void release() noexcept;

    std::vector<block> blocks_;
    std::size_t size_ = 0;
};

// The streambuf behind debug_response::stream(): appends to body_blocks.
class body_streambuf final : public std::streambuf {
public:
    body_blocks& blocks() noexcept { return blocks_; }

private:
    std::streamsize xsputn(const char* s, std::streamsize n) override {
        blocks_.append(s, static_cast<std::size_t>(n));
        return n;
    }
    GORO_DECL int_type overflow(int_type c) override;

    body_blocks blocks_;
};

// The std::ostream of debug_response::stream().
class body_stream final : public std::ostream {
public:
    body_stream();
    body_blocks& blocks() noexcept { return buf_.blocks(); }

private:
    body_streambuf buf_;
};

}  // namespace detail

struct debug_response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    // Extra header fields. The server writes Content-Type (from content_type),
    // Content-Length, Connection, Date and X-Content-Type-Options itself; a
    // handler that sets one of those here gets a 500.
    http_fields headers;
    // Any bytes, binary included.
    std::string body;

    // For a large body (a dump): what is written here is sent after `body`,
    // and is kept in blocks mapped from the system rather than in one string
    // (see detail::body_blocks): no copy while it grows, one copy however many
    // clients receive it, and its memory goes back to the system as soon as
    // the last connection sending it is done. The stream throws what the
    // mapping throws (std::bad_alloc), which makes the response a 500.
    std::ostream& stream() {
        if (!stream_) stream_ = std::make_unique<detail::body_stream>();
        return *stream_;
    }
    // Bytes written to stream() so far.
    std::size_t streamed_size() const noexcept { return stream_ ? stream_->blocks().size() : 0; }
    // Takes what was written to stream() (the server does, to send it).
    detail::body_blocks take_streamed();

    // Sets or replaces a header field (case-insensitive name); "Content-Type"
    // sets content_type. Throws std::invalid_argument for a server-managed
    // field or one HTTP cannot carry (CR, LF, NUL in it; a name not a token).
    void set_header(std::string_view name, std::string_view value);
    // Content-Disposition: attachment; filename="<filename>", like Go's pprof
    // handlers for binary profiles.
    void set_attachment(std::string_view filename);

private:
    std::unique_ptr<detail::body_stream> stream_;
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

namespace detail {

// ---------------------------------------------------------------------------
// detail: small helpers shared by the server and the routes
// ---------------------------------------------------------------------------

// Compares in time that depends only on the lengths, not on where the first
// difference is: for the bearer token.
GORO_DECL bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

GORO_DECL void append_html_escaped(std::string& out, std::string_view s);

// Length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF); 0 when there is none.
GORO_DECL std::size_t utf8_sequence_length(std::string_view s) noexcept;

// Appends `s` for a text/plain; charset=utf-8 body that echoes what a client
// or a handler supplied: well-formed UTF-8 and printable ASCII as they are,
// every other byte (controls but TAB and LF, DEL, bytes that do not form
// UTF-8) as the four characters \xNN, so the body is always valid UTF-8 and
// cannot carry terminal escapes.
GORO_DECL void append_utf8_escaped(std::string& out, std::string_view s);

GORO_DECL std::string utf8_escaped(std::string_view s);

GORO_DECL std::string_view http_reason_phrase(int status) noexcept;

// IMF-fixdate (RFC 9110 5.6.7), without the locale that strftime would use.
GORO_DECL std::string http_date(std::time_t t);

// Header fields the server writes itself.
GORO_DECL bool is_managed_header(std::string_view name) noexcept;

// Why a handler's response cannot be sent as is; empty when it can.
GORO_DECL std::string check_response(const debug_response& r);

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>

#include <sys/mman.h>

namespace goro::detail {

GORO_DECL body_blocks& body_blocks::operator=(body_blocks&& o) noexcept {
    if (this != &o) {
        release();
        blocks_ = std::move(o.blocks_);
        o.blocks_.clear();
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

GORO_DECL void body_blocks::append(const char* p, std::size_t n) {
    while (n > 0) {
        if (blocks_.empty() || blocks_.back().size == blocks_.back().capacity) grow();
        block& b = blocks_.back();
        const std::size_t k = std::min(n, b.capacity - b.size);
        std::memcpy(b.data + b.size, p, k);
        b.size += k;
        size_ += k;
        p += k;
        n -= k;
    }
}

GORO_DECL std::string body_blocks::str() const {
    std::string s;
    s.reserve(size_);
    for (const block& b : blocks_) s.append(b.data, b.size);
    return s;
}

GORO_DECL void body_blocks::grow() {
    const std::size_t cap = blocks_.empty() ? first_block
                                            : std::min(blocks_.back().capacity * 2, max_block);
    blocks_.reserve(blocks_.size() + 1);  // so that a mapped block is never lost
    void* m = ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    blocks_.push_back(block{static_cast<char*>(m), cap, 0});
}

GORO_DECL void body_blocks::release() noexcept {
    for (const block& b : blocks_) ::munmap(b.data, b.capacity);
    blocks_.clear();
    size_ = 0;
}

GORO_DECL body_streambuf::int_type body_streambuf::overflow(int_type c) {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    const char ch = traits_type::to_char_type(c);
    blocks_.append(&ch, 1);
    return c;
}

GORO_DECL body_stream::body_stream() : std::ostream(nullptr) {
    rdbuf(&buf_);
    // A failed mapping reaches the server as std::bad_alloc (a 500), not
    // as a silently truncated body.
    exceptions(std::ios::badbit);
}

GORO_DECL bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
    // Volatile keeps the compiler from turning the loop into an early exit.
    volatile unsigned char diff = static_cast<unsigned char>(a.size() != b.size());
    for (std::size_t i = 0; i < b.size(); ++i) {
        unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        diff = static_cast<unsigned char>(diff | (x ^ static_cast<unsigned char>(b[i])));
    }
    return diff == 0;
}

GORO_DECL void append_html_escaped(std::string& out, std::string_view s) {
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

GORO_DECL std::size_t utf8_sequence_length(std::string_view s) noexcept {
    if (s.empty()) return 0;
    auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const unsigned char c = b(0);
    auto cont = [&](std::size_t i, unsigned char lo = 0x80, unsigned char hi = 0xbf) {
        return i < s.size() && b(i) >= lo && b(i) <= hi;
    };
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
    if (c == 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
    if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
    if (c == 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
    return 0;
}

GORO_DECL void append_utf8_escaped(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    while (!s.empty()) {
        const auto c = static_cast<unsigned char>(s[0]);
        std::size_t n = utf8_sequence_length(s);
        if (n == 1 && (c >= 0x20 || c == '\t' || c == '\n') && c != 0x7f) {
            out.push_back(s[0]);
        } else if (n > 1) {
            out.append(s.substr(0, n));
        } else {
            n = 1;
            out += "\\x";
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
        s.remove_prefix(n);
    }
}

GORO_DECL std::string utf8_escaped(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    append_utf8_escaped(out, s);
    return out;
}

GORO_DECL std::string_view http_reason_phrase(int status) noexcept {
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

GORO_DECL std::string http_date(std::time_t t) {
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

GORO_DECL bool is_managed_header(std::string_view name) noexcept {
    return iequals(name, "content-length") || iequals(name, "content-type") ||
           iequals(name, "transfer-encoding") || iequals(name, "connection") ||
           iequals(name, "date") || iequals(name, "x-content-type-options") ||
           iequals(name, "keep-alive");
}

GORO_DECL std::string check_response(const debug_response& r) {
    if (r.status < 200 || r.status > 599)
        return "handler set status " + std::to_string(r.status) + " (must be 200-599)";
    if ((r.status == 204 || r.status == 304) && (!r.body.empty() || r.streamed_size() != 0))
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

}  // namespace goro::detail

namespace goro {

GORO_DECL detail::body_blocks debug_response::take_streamed() {
    detail::body_blocks b;
    if (stream_) {
        stream_->flush();
        b = std::move(stream_->blocks());
        stream_.reset();
    }
    return b;
}

GORO_DECL void debug_response::set_header(std::string_view name, std::string_view value) {
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

GORO_DECL void debug_response::set_attachment(std::string_view filename) {
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

}  // namespace goro

#endif  // GORO_BODIES

#endif  // GORO_HTTP_RESPONSE_HPP
