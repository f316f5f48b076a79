// A small blocking HTTP client for the debug server's tests (loopback only),
// and the helpers those tests share. Every wait has a deadline.
#pragma once

#include <goro/http/debug_server.hpp>

#include <chrono>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace http_test {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// A blocking client with timeouts, enough HTTP to read one response. It
// reports trouble by throwing, never with Catch2 macros: those are not
// thread-safe and the client runs on several threads at once.
// ---------------------------------------------------------------------------

inline void expect(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string("test client: ") + what);
}

struct reply {
    int status = 0;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    bool closed = false;  // the server closed the connection after it

    std::string header(std::string_view name) const {
        for (const auto& [k, v] : headers)
            if (goro::detail::iequals(k, name)) return v;
        return "<absent>";
    }
    bool has_header(std::string_view name) const { return header(name) != "<absent>"; }
};

class client {
public:
    explicit client(std::uint16_t port, bool v6 = false) {
        fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
        expect(fd_ >= 0, "socket");
        timeval tv{10, 0};  // a hung server fails the test instead of hanging it
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int rc;
        if (v6) {
            sockaddr_in6 a{};
            a.sin6_family = AF_INET6;
            a.sin6_port = htons(port);
            a.sin6_addr = in6addr_loopback;
            rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        } else {
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(port);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        }
        if (rc != 0) ::close(fd_);
        expect(rc == 0, "connect");
    }
    ~client() {
        if (fd_ >= 0) ::close(fd_);
    }
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    int fd() const { return fd_; }
    // Bytes received and not consumed by read_reply (wait_closed keeps them too).
    const std::string& leftover() const { return buf_; }

    bool send_all(std::string_view s) {
        while (!s.empty()) {
            ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            s.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    // Reads one response; for HEAD there is no body whatever Content-Length says.
    reply read_reply(bool head_request = false) {
        reply r;
        std::size_t end;
        while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
            if (!fill()) {
                r.closed = true;
                return r;  // status 0: no (complete) response
            }
        }
        std::string head = buf_.substr(0, end);
        buf_.erase(0, end + 4);
        std::size_t line_end = head.find("\r\n");
        std::string status_line = head.substr(0, line_end);
        expect(status_line.rfind("HTTP/1.1 ", 0) == 0, "status line");
        r.status = std::stoi(status_line.substr(9, 3));
        std::size_t p = line_end == std::string::npos ? head.size() : line_end + 2;
        while (p < head.size()) {
            std::size_t e = head.find("\r\n", p);
            if (e == std::string::npos) e = head.size();
            std::string line = head.substr(p, e - p);
            std::size_t colon = line.find(':');
            expect(colon != std::string::npos, "header line without ':'");
            std::string value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ') value.erase(0, 1);
            r.headers.emplace_back(line.substr(0, colon), value);
            p = e + 2;
        }
        std::size_t length = 0;
        if (r.has_header("Content-Length")) length = std::stoul(r.header("Content-Length"));
        if (!head_request) {
            while (buf_.size() < length)
                if (!fill()) break;
            r.body = buf_.substr(0, length);
            buf_.erase(0, std::min(length, buf_.size()));
        }
        return r;
    }

    // True once the server has closed (EOF or reset), within the socket timeout.
    bool wait_closed() {
        for (;;) {
            char c[512];
            ssize_t n = ::recv(fd_, c, sizeof c, 0);
            if (n == 0) return true;
            if (n < 0) return errno == ECONNRESET;
            buf_.append(c, static_cast<std::size_t>(n));
        }
    }

    reply request(std::string_view raw, bool head_request = false) {
        expect(send_all(raw), "send");
        return read_reply(head_request);
    }

private:
    bool fill() {
        char tmp[4096];
        ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
        if (n <= 0) return false;
        buf_.append(tmp, static_cast<std::size_t>(n));
        return true;
    }

    int fd_ = -1;
    std::string buf_;
};

inline std::string get(std::string_view path, std::string_view extra = "") {
    return "GET " + std::string(path) + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" +
           std::string(extra) + "\r\n";
}

inline reply fetch(std::uint16_t port, std::string_view raw, bool head_request = false) {
    client c(port);
    return c.request(raw, head_request);
}

inline goro::debug_server::options test_options() {
    goro::debug_server::options o;
    o.port = 0;
    return o;
}

inline void hello(const goro::debug_request&, goro::debug_response& r) { r.body = "hello\n"; }

// Open file descriptors of this process; -1 where /proc is not there.
inline int open_fds() {
    DIR* d = ::opendir("/proc/self/fd");
    if (d == nullptr) return -1;
    int n = 0;
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
    return n;
}

template <class F>
bool eventually(F&& f, std::chrono::milliseconds limit = 10s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (f()) return true;
        std::this_thread::sleep_for(5ms);
    }
    return f();
}

}  // namespace http_test
