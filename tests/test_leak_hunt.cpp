// The leak hunt, end to end, and the debug server's goroutine routes.
//
// PART 1, in process: goro::register_default_routes (the routes every
// debug_server has by default) answers as Go's net/http/pprof does: status
// codes, Content-Type, Content-Disposition, and counts that follow tasks parked
// at a known line of this file.
//
// PART 2, end to end: the example programs examples/leak_hunt/leaky and fixed
// run as child processes on a free port (`--port 0`; their first line on
// stdout says which) and are driven over loopback like a user with curl would:
//   * leaky: the `goroutine profile: total` grows with the number of requests,
//     and the largest group is the worker's receive loop, `price_worker` at
//     the line of leaky.cpp marked `LEAK 1:` (found by reading the source, not
//     hard-coded), 4 tasks per request;
//   * the service's own tasks are in the dump like Go's net/http goroutines:
//     the acceptor and the connection tasks in [IO wait] (an idle connection
//     in read_request, until its client closes it);
//   * `go tool pprof -top URL` (when `go` is on PATH) names price_worker with
//     the same count;
//   * fixed: the total is the same before and after the requests (after a
//     deadline for the tasks that are just returning).
// Where the programs are: $LEAKY_BIN and $FIXED_BIN, their source
// $LEAKY_SRC (meson sets all three; see tests/meson.build). Without them the
// end-to-end cases say so and skip.
//
// Child processes are owned by an RAII guard: SIGTERM, then SIGKILL after a
// deadline, then reaped, also when an assertion throws. PR_SET_PDEATHSIG makes
// the kernel kill them if this process dies without unwinding.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <goro/http/debug_server.hpp>
#include <goro/inspect/dump.hpp>

#include "support.hpp"

extern char** environ;



using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one request per connection (Connection: close).
// ---------------------------------------------------------------------------

struct http_reply {
    int status = 0;  // 0: no complete response
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    std::string header(std::string_view name) const {
        for (const auto& [k, v] : headers)
            if (goro::detail::iequals(k, name)) return v;
        return {};
    }
};

http_reply http_request(std::uint16_t port, std::string_view target, std::string_view method = "GET") {
    http_reply r;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return r;
    timeval tv{30, 0};  // bounds a hang only
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return r;
    }
    std::string req = std::string(method) + " " + std::string(target) +
                      " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                      "\r\nUser-Agent: goro-leak-hunt-test\r\nConnection: close\r\n\r\n";
    std::string_view rest = req;
    while (!rest.empty()) {
        ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
        if (n <= 0) {
            ::close(fd);
            return r;
        }
        rest.remove_prefix(static_cast<std::size_t>(n));
    }
    std::string in;
    char buf[16384];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            in.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    ::close(fd);
    std::size_t end = in.find("\r\n\r\n");
    if (end == std::string::npos || in.rfind("HTTP/1.1 ", 0) != 0) return r;
    std::string head = in.substr(0, end);
    std::size_t p = head.find("\r\n");
    int status = std::atoi(head.substr(9, 3).c_str());
    while (p != std::string::npos && p + 2 < head.size()) {
        std::size_t e = head.find("\r\n", p + 2);
        std::string line = head.substr(p + 2, e == std::string::npos ? std::string::npos : e - p - 2);
        std::size_t colon = line.find(':');
        if (colon != std::string::npos) {
            std::string v = line.substr(colon + 1);
            while (!v.empty() && v.front() == ' ') v.erase(0, 1);
            r.headers.emplace_back(line.substr(0, colon), v);
        }
        p = e;
    }
    r.body = in.substr(end + 4);
    std::string length = r.header("Content-Length");
    if (method != "HEAD" && !length.empty() && std::stoul(length) != r.body.size()) return r;
    r.status = status;
    return r;
}

// ---------------------------------------------------------------------------
// Reading Go's goroutine profile text (debug=1) and Prometheus text
// ---------------------------------------------------------------------------

struct frame_line {
    std::string function, file;
    int line = 0;
};

struct profile_group {
    long count = 0;
    std::vector<frame_line> frames;  // leaf first
};

struct profile_text {
    long total = -1;  // -1: no header line
    std::vector<profile_group> groups;
};

// "goroutine profile: total N", then blocks "N @ 0x…" / "# labels: …" /
// "#\t0x…\tfunction\tfile:line" separated by blank lines.
profile_text parse_debug1(const std::string& text) {
    profile_text p;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("goroutine profile: total ", 0) == 0) {
            p.total = std::atol(line.c_str() + 25);
        } else if (!line.empty() && line[0] >= '0' && line[0] <= '9' && line.find(" @") != std::string::npos) {
            p.groups.push_back(profile_group{std::atol(line.c_str()), {}});
        } else if (line.rfind("#\t", 0) == 0 && !p.groups.empty()) {
            std::vector<std::string> cols;
            std::size_t i = 1;
            while (i < line.size()) {
                std::size_t j = line.find('\t', i);
                if (j == std::string::npos) j = line.size();
                if (j > i) cols.push_back(line.substr(i, j - i));
                i = j + 1;
            }
            if (cols.size() < 3) continue;  // hex, function, file:line
            frame_line f;
            f.function = cols[1];
            const std::string& where = cols.back();
            std::size_t colon = where.rfind(':');
            f.file = where.substr(0, colon);
            if (colon != std::string::npos) f.line = std::atoi(where.c_str() + colon + 1);
            p.groups.back().frames.push_back(std::move(f));
        }
    }
    return p;
}

// The value of the first sample line that starts with `series` + ' '
// (e.g. `goro_tasks_waiting{reason="chan receive"}`); nullopt when absent.
std::optional<long long> metric(const std::string& text, std::string_view series) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line))
        if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ')
            return std::atoll(line.c_str() + series.size() + 1);
    return std::nullopt;
}

bool ends_with(std::string_view s, std::string_view tail) {
    return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// g++ records qualified names, clang++ bare ones: compare the last component.
bool is_function(std::string_view name, std::string_view want) {
    return name == want || ends_with(name, "::" + std::string(want));
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

std::string find_in_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    if (!path) return {};
    std::string_view rest = path;
    while (true) {
        std::size_t colon = rest.find(':');
        std::string dir(rest.substr(0, colon));
        if (dir.empty()) dir = ".";
        std::string full = dir + "/" + program;
        struct stat st{};
        if (::stat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(full.c_str(), X_OK) == 0) return full;
        if (colon == std::string_view::npos) return {};
        rest.remove_prefix(colon + 1);
    }
}

// A child process with its stdout (and, when asked, its stderr) on a pipe.
// The destructor ends it: SIGTERM, up to 10 s to exit, then SIGKILL; always reaped.
class child_process {
public:
    child_process(std::vector<std::string> argv, std::vector<std::string> extra_env = {},
                  bool merge_stderr = false) {
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        std::vector<std::string> env_store;
        for (char** e = environ; *e; ++e) {
            std::string_view kv = *e;
            bool replaced = false;
            for (const auto& x : extra_env)
                if (kv.substr(0, kv.find('=') + 1) == std::string_view(x).substr(0, x.find('=') + 1)) replaced = true;
            if (!replaced) env_store.emplace_back(kv);
        }
        for (auto& x : extra_env) env_store.push_back(x);
        std::vector<char*> envp;
        for (auto& e : env_store) envp.push_back(e.data());
        envp.push_back(nullptr);

        int out[2];
        if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        const pid_t parent = ::getpid();
        pid_ = ::fork();
        if (pid_ < 0) {
            ::close(out[0]);
            ::close(out[1]);
            throw std::runtime_error("fork failed");
        }
        if (pid_ == 0) {
            // Only async-signal-safe calls between fork and exec.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(127);
            sigset_t none;
            sigemptyset(&none);
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            ::dup2(out[1], 1);
            if (merge_stderr) ::dup2(out[1], 2);
            ::execve(args[0], args.data(), envp.data());
            ::_exit(127);
        }
        ::close(out[1]);
        out_ = out[0];
    }

    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    ~child_process() {
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGTERM);
            if (!wait_for_exit(10s)) {
                ::kill(pid_, SIGKILL);
                int st = 0;
                while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {}
            }
        }
        if (out_ >= 0) ::close(out_);
    }

    // One line of stdout (without '\n'); nullopt at EOF or after `timeout`.
    std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (std::size_t nl = buf_.find('\n'); nl != std::string::npos) {
                std::string line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return line;
            }
            if (!fill(deadline)) return std::nullopt;
        }
    }

    // Everything until EOF (or `timeout`).
    std::string read_all(std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (fill(deadline)) {}
        return std::exchange(buf_, {});
    }

    // Waits for the child to exit; its wait status, or nullopt after `timeout`.
    std::optional<int> wait(std::chrono::milliseconds timeout) {
        if (!wait_for_exit(timeout)) return std::nullopt;
        return status_;
    }

    // SIGTERM, then wait(timeout).
    std::optional<int> terminate(std::chrono::milliseconds timeout) {
        if (!reaped_) ::kill(pid_, SIGTERM);
        return wait(timeout);
    }

private:
    bool fill(std::chrono::steady_clock::time_point deadline) {
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return false;
            pollfd p{out_, POLLIN, 0};
            int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
            if (r < 0 && errno != EINTR) return false;
            if (r <= 0) continue;
            char tmp[4096];
            ssize_t n = ::read(out_, tmp, sizeof tmp);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            buf_.append(tmp, static_cast<std::size_t>(n));
            return true;
        }
    }

    bool wait_for_exit(std::chrono::milliseconds timeout) {
        if (reaped_) return true;
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            int st = 0;
            pid_t r = ::waitpid(pid_, &st, WNOHANG);
            if (r == pid_) {
                reaped_ = true;
                status_ = st;
                return true;
            }
            if (r < 0 && errno != EINTR) {
                reaped_ = true;  // not our child any more: nothing left to reap
                return true;
            }
            if (std::chrono::steady_clock::now() > deadline) return false;
            std::this_thread::sleep_for(5ms);
        }
    }

    pid_t pid_ = -1;
    int out_ = -1;
    bool reaped_ = false;
    int status_ = 0;
    std::string buf_;
};

// One of the example services, started on a free port.
class service {
public:
    explicit service(const std::string& binary) : proc_({binary, "--port", "0"}) {
        auto line = proc_.read_line(60s);
        REQUIRE(line.has_value());
        INFO("first line: " << *line);
        const std::string prefix = "listening on 127.0.0.1:";
        REQUIRE(line->rfind(prefix, 0) == 0);
        port_ = static_cast<std::uint16_t>(std::atoi(line->c_str() + prefix.size()));
        REQUIRE(port_ != 0);
    }
    std::uint16_t port() const { return port_; }

    // Stops the service the way a user would (SIGTERM): it must exit cleanly,
    // with status 0 (under a sanitizer, a report makes the status non-zero).
    void stop() {
        auto st = proc_.terminate(30s);
        REQUIRE(st.has_value());
        CHECK(WIFEXITED(*st));
        CHECK(WEXITSTATUS(*st) == 0);
    }

    std::string url(std::string_view path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
    }

    http_reply get(std::string_view target) const { return http_request(port_, target); }
    profile_text profile() const {
        http_reply r = get("/debug/pprof/goroutine?debug=1");
        REQUIRE(r.status == 200);
        return parse_debug1(r.body);
    }
    void process(int requests) const {
        for (int i = 0; i < requests; ++i) {
            http_reply r = get("/process");
            INFO("reply to /process: " << r.body);
            REQUIRE(r.status == 200);
            REQUIRE(r.body.rfind("order ", 0) == 0);
        }
    }

private:
    child_process proc_;
    std::uint16_t port_ = 0;
};

// Polls `pred` every 10 ms (each poll is an HTTP request, so not faster)
// until it holds or `deadline` passes.
template <class Pred>
bool poll_until(Pred pred, std::chrono::milliseconds deadline = 30s) {
    auto end = std::chrono::steady_clock::now() + deadline;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end) return false;
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

std::optional<std::string> env(const char* name) {
    const char* v = std::getenv(name);
    if (!v || !*v) return std::nullopt;
    return std::string(v);
}

// The line of `source` that holds both markers; 0 when none.
int marked_line(const std::string& source, std::string_view code, std::string_view marker) {
    std::ifstream in(source);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
        ++n;
        if (line.find(code) != std::string::npos && line.find(marker) != std::string::npos) return n;
    }
    return 0;
}

// `go tool pprof -top URL` with HOME and GOCACHE in a fresh temporary
// directory (pprof saves the fetched profile under $HOME/pprof).
std::string pprof_top(const std::string& go, const std::string& url) {
    std::string dir_template = (std::filesystem::temp_directory_path() / "goro-leak-hunt-XXXXXX").string();
    const char* dir = ::mkdtemp(dir_template.data());
    REQUIRE(dir != nullptr);
    std::string home = dir;
    std::string out;
    {
        child_process p({go, "tool", "pprof", "-top", url},
                        {"HOME=" + home, "GOCACHE=" + home + "/gocache", "PPROF_TMPDIR=" + home,
                         "GOFLAGS=", "GO111MODULE=off"},
                        true);
        out = p.read_all(120s);
        auto st = p.wait(120s);
        INFO("go tool pprof output:\n" << out);
        REQUIRE(st.has_value());
        CHECK(WIFEXITED(*st));
        CHECK(WEXITSTATUS(*st) == 0);
    }
    // The temporary directory holds a profile and a build cache: remove it.
    std::error_code ec;
    std::filesystem::remove_all(home, ec);
    return out;
}

// The flat count of `function` in pprof's -top table; nullopt when not listed.
std::optional<long> pprof_flat(const std::string& top, std::string_view function) {
    std::istringstream in(top);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream cols(line);
        std::vector<std::string> c;
        for (std::string w; cols >> w;) c.push_back(w);
        // flat flat% sum% cum cum% name
        if (c.size() >= 6 && is_function(c.back(), function) && c[0].find_first_not_of("0123456789") == std::string::npos)
            return std::atol(c[0].c_str());
    }
    return std::nullopt;
}

}  // namespace

// Parks tasks at one known line, for the in-process route tests. At namespace
// scope, not in the anonymous namespace, so both compilers name it alike.
constexpr int hunt_parked_line = __LINE__ + 2;
goro::task<> hunt_parked(goro_test::gate& g) {
    co_await g.wait();
}

// ===========================================================================
// PART 1: the default routes, in process
// ===========================================================================

TEST_CASE("default routes: the goroutine profile in its three forms", "[leak_hunt][routes]") {
    const std::int64_t base = goro::num_goroutines();
    goro_test::gate g;
    constexpr int parked = 5;
    for (int i = 0; i < parked; ++i) goro::go(hunt_parked(g));
    REQUIRE(goro_test::eventually([&] { return g.parked() == parked; }));

    goro::debug_server::options o;
    o.port = 0;
    goro::debug_server s(o);  // with_default_routes is the default
    s.start();

    SECTION("debug=1: text, grouped, the parked group counted and pointing here") {
        http_reply r = http_request(s.port(), "/debug/pprof/goroutine?debug=1");
        REQUIRE(r.status == 200);
        CHECK(r.header("Content-Type") == "text/plain; charset=utf-8");
        CHECK(r.header("Content-Disposition").empty());
        profile_text p = parse_debug1(r.body);
        CHECK(p.total >= base + parked);
        long sum = 0;
        const profile_group* ours = nullptr;
        for (const auto& grp : p.groups) {
            sum += grp.count;
            if (!grp.frames.empty() && is_function(grp.frames.front().function, "hunt_parked")) ours = &grp;
        }
        CHECK(sum == p.total);
        REQUIRE(ours != nullptr);
        CHECK(ours->count == parked);
        CHECK(ends_with(ours->frames.front().file, "test_leak_hunt.cpp"));
        CHECK(ours->frames.front().line == hunt_parked_line);
    }
    SECTION("debug=2: one block per task with its wait reason") {
        http_reply r = http_request(s.port(), "/debug/pprof/goroutine?debug=2");
        REQUIRE(r.status == 200);
        CHECK(r.header("Content-Type") == "text/plain; charset=utf-8");
        std::size_t blocks = 0;
        for (std::size_t p = 0; (p = r.body.find("[gate]:\nhunt_parked", p)) != std::string::npos; ++p) ++blocks;
        CHECK(blocks == parked);
    }
    SECTION("no query: pprof protobuf as an attachment, like Go") {
        http_reply r = http_request(s.port(), "/debug/pprof/goroutine");
        REQUIRE(r.status == 200);
        CHECK(r.header("Content-Type") == "application/octet-stream");
        CHECK(r.header("Content-Disposition") == "attachment; filename=\"goroutine\"");
        CHECK(r.header("X-Content-Type-Options") == "nosniff");
        REQUIRE_FALSE(r.body.empty());
        CHECK(r.body.find("hunt_parked") != std::string::npos);  // in the string table
        http_reply r0 = http_request(s.port(), "/debug/pprof/goroutine?debug=0");
        CHECK(r0.status == 200);
        CHECK(r0.header("Content-Type") == "application/octet-stream");
    }
    SECTION("HEAD: the same headers, no body") {
        http_reply r = http_request(s.port(), "/debug/pprof/goroutine?debug=1", "HEAD");
        REQUIRE(r.status == 200);
        CHECK(r.body.empty());
        CHECK(std::stoul(r.header("Content-Length")) > 0);
    }
    SECTION("a bad debug value or ?seconds is a 400 that names the parameter") {
        for (const char* q : {"?debug=3", "?debug=x", "?debug=-1", "?debug=01"}) {
            http_reply r = http_request(s.port(), std::string("/debug/pprof/goroutine") + q);
            INFO(q << " -> " << r.body);
            CHECK(r.status == 400);
            CHECK(r.body.find("'debug'") != std::string::npos);
        }
        http_reply r = http_request(s.port(), "/debug/pprof/goroutine?seconds=5");
        CHECK(r.status == 400);
        CHECK(r.body.find("'seconds'") != std::string::npos);
        CHECK(http_request(s.port(), "/debug/pprof/goroutine?debug=").status == 200);  // Go: empty is 0
    }
    SECTION("the index lists the goroutine profile with its count") {
        http_reply r = http_request(s.port(), "/debug/pprof/");
        REQUIRE(r.status == 200);
        CHECK(r.header("Content-Type") == "text/html; charset=utf-8");
        CHECK(r.body.find("<a href='goroutine?debug=1'>goroutine</a>") != std::string::npos);
        CHECK(r.body.find("goroutine?debug=2") != std::string::npos);
        CHECK(r.body.find("/debug/goro/tasks.json") != std::string::npos);
        // The goroutine row (the rows are sorted by name: block comes first).
        std::size_t cell = r.body.rfind("<tr><td>", r.body.find("<a href='goroutine?debug=1'>"));
        REQUIRE(cell != std::string::npos);
        CHECK(std::atol(r.body.c_str() + cell + 8) >= base + parked);
    }
    SECTION("tasks.json") {
        http_reply r = http_request(s.port(), "/debug/goro/tasks.json");
        REQUIRE(r.status == 200);
        CHECK(r.header("Content-Type") == "application/json");
        REQUIRE(r.body.rfind("{\"total\":", 0) == 0);
        CHECK(std::atol(r.body.c_str() + 9) >= base + parked);
        CHECK(r.body.find("\"function\":\"hunt_parked\"") != std::string::npos);
    }
    SECTION("/metrics: Prometheus text with the tasks by state and wait reason") {
        http_reply r = http_request(s.port(), "/metrics");
        REQUIRE(r.status == 200);
        CHECK(r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
        const std::string& m = r.body;
        INFO(m);
        CHECK(m.find("# TYPE goro_tasks gauge\n") != std::string::npos);
        CHECK(m.find("# TYPE goro_tasks_started_total counter\n") != std::string::npos);
        CHECK(m.find("# TYPE goro_tasks_waiting gauge\n") != std::string::npos);
        CHECK(metric(m, "goro_tasks").value_or(-1) >= base + parked);
        CHECK(metric(m, "goro_tasks_waiting{reason=\"gate\"}") == parked);
        CHECK(metric(m, "goro_tasks_by_state{state=\"waiting\"}").value_or(-1) >= parked);
        CHECK(metric(m, "goro_tasks_by_state{state=\"runnable\"}").has_value());
        CHECK(metric(m, "goro_tasks_by_state{state=\"running\"}").has_value());
        CHECK(metric(m, "goro_tasks_started_total").value_or(-1) >= parked);
        CHECK(metric(m, "goro_workers") == static_cast<long long>(goro::max_procs()));
        CHECK(metric(m, "goro_workers_idle").has_value());
        CHECK(metric(m, "goro_global_queue_length").has_value());
        CHECK(metric(m, "goro_build_info{version=\"" + std::string(goro::version()) + "\"}") == 1);
        // Every sample belongs to a family announced by # TYPE before it.
        std::istringstream in(m);
        std::vector<std::string> families;
        for (std::string line; std::getline(in, line);) {
            if (line.rfind("# TYPE ", 0) == 0) families.push_back(line.substr(7, line.find(' ', 7) - 7));
            else if (!line.empty() && line[0] != '#') {
                std::string name = line.substr(0, line.find_first_of("{ "));
                CHECK(std::find(families.begin(), families.end(), name) != families.end());
            }
        }
    }
    SECTION("the counts follow the tasks: none left once they return") {
        g.open();
        REQUIRE(goro_test::tasks_drained(base));
        http_reply r = http_request(s.port(), "/metrics");
        CHECK(metric(r.body, "goro_tasks_waiting{reason=\"gate\"}") == std::nullopt);
        profile_text p = parse_debug1(http_request(s.port(), "/debug/pprof/goroutine?debug=1").body);
        CHECK(p.total == base);
    }
    s.stop();
    g.open();
    REQUIRE(goro_test::tasks_drained(base));
}

TEST_CASE("default routes: off with with_default_routes = false, and registered on demand",
          "[leak_hunt][routes]") {
    goro::debug_server::options o;
    o.port = 0;
    o.with_default_routes = false;
    goro::debug_server s(o);
    s.start();
    CHECK(http_request(s.port(), "/debug/pprof/goroutine?debug=1").status == 404);
    CHECK(http_request(s.port(), "/metrics").status == 404);
    CHECK(http_request(s.port(), "/debug/pprof/").body.find("<a href='goroutine?debug=1'>") == std::string::npos);
    goro::register_default_routes(s);
    goro::register_default_routes(s);  // twice: replaces, does not duplicate
    CHECK(http_request(s.port(), "/debug/pprof/goroutine?debug=1").status == 200);
    CHECK(http_request(s.port(), "/metrics").status == 200);
    std::string index = http_request(s.port(), "/debug/pprof/").body;
    CHECK(index.find("goroutine?debug=2") == index.rfind("goroutine?debug=2"));
    CHECK(index.find("<a href='goroutine?debug=1'>") == index.rfind("<a href='goroutine?debug=1'>"));
}

// ===========================================================================
// PART 2: the example services, end to end
// ===========================================================================

TEST_CASE("leaky: the total grows with the requests, the worker's receive line leads", "[leak_hunt][e2e]") {
    auto bin = env("LEAKY_BIN");
    auto src = env("LEAKY_SRC");
    if (!bin || !src) {
        WARN("LEAKY_BIN / LEAKY_SRC not set (meson sets them): skipping the leaky end-to-end test");
        return;
    }
    const int recv_line = marked_line(*src, "co_await jobs.recv()", "LEAK 1:");
    INFO("leaky.cpp: " << *src << ", worker receive line " << recv_line);
    REQUIRE(recv_line > 0);
    constexpr long workers_per_request = 4;

    service leaky(*bin);
    const long before = leaky.profile().total;
    REQUIRE(before >= 0);

    // The largest group, once the last request's workers are parked again.
    auto leader_reaches = [&](long want) {
        profile_text p;
        bool ok = poll_until([&] {
            p = leaky.profile();
            return !p.groups.empty() && p.groups.front().count == want;
        });
        INFO("profile total " << p.total << ", groups " << p.groups.size()
             << ", largest " << (p.groups.empty() ? 0 : p.groups.front().count));
        REQUIRE(ok);
        return p;
    };

    leaky.process(3);
    profile_text after3 = leader_reaches(3 * workers_per_request);
    leaky.process(3);
    profile_text after6 = leader_reaches(6 * workers_per_request);

    CHECK(after3.total >= before + 3 * workers_per_request);
    CHECK(after6.total >= after3.total + 3 * workers_per_request);
    long sum = 0;
    for (const auto& grp : after6.groups) sum += grp.count;
    CHECK(sum == after6.total);

    const profile_group& leader = after6.groups.front();
    REQUIRE_FALSE(leader.frames.empty());
    INFO("leading frame: " << leader.frames.front().function << " " << leader.frames.front().file << ":"
                           << leader.frames.front().line);
    CHECK(is_function(leader.frames.front().function, "price_worker"));
    CHECK(ends_with(leader.frames.front().file, "leaky.cpp"));
    CHECK(leader.frames.front().line == recv_line);

    // debug=2 agrees: each of those tasks waits in [chan receive] at that line.
    http_reply d2 = leaky.get("/debug/pprof/goroutine?debug=2");
    REQUIRE(d2.status == 200);
    std::string want_block = "[chan receive]:\nprice_worker(...)\n\t";
    std::size_t blocks = 0;
    for (std::size_t p = 0; (p = d2.body.find("[chan receive]:\n", p)) != std::string::npos; ++p) {
        std::size_t eol = d2.body.find('\n', p + 16);
        std::size_t eol2 = d2.body.find('\n', eol + 1);
        std::string fn = d2.body.substr(p + 16, eol - p - 16);
        std::string where = d2.body.substr(eol + 1, eol2 - eol - 1);
        if (is_function(fn, "price_worker(...)") && ends_with(where, "leaky.cpp:" + std::to_string(recv_line))) ++blocks;
    }
    CHECK(blocks == 6 * workers_per_request);

    // The service itself is tasks too, as in Go's net/http: the acceptor and
    // one task per connection, parked in [IO wait] on their sockets. An idle
    // connection (connected, nothing sent) shows its task in read_request.
    {
        int idle = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(idle >= 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(leaky.port());
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(idle, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        auto has_block = [](const std::string& dump, std::string_view head, std::string_view fn) {
            for (std::size_t p = 0; (p = dump.find(head, p)) != std::string::npos; ++p) {
                std::size_t end = dump.find("\n\n", p);
                if (dump.substr(p, end - p).find(fn) != std::string::npos) return true;
            }
            return false;
        };
        std::string dump;
        bool seen = poll_until([&] {
            dump = leaky.get("/debug/pprof/goroutine?debug=2").body;
            return has_block(dump, "[IO wait]:\n", "read_request(...)");
        });
        INFO(dump);
        CHECK(seen);
        CHECK(has_block(dump, "name=\"accept\" [IO wait]:\n", "accept_loop(...)"));
        // The connection that asked for this dump waits for the debug server's answer.
        CHECK(has_block(dump, "name=\"conn\" [IO wait]:\n", "relay_to_debug_server(...)"));
        ::close(idle);
        // Its task ends when the client closes the connection.
        CHECK(poll_until([&] {
            return !has_block(leaky.get("/debug/pprof/goroutine?debug=2").body, "[IO wait]:\n", "read_request(...)");
        }));
    }

    // /metrics counts the same parked receivers.
    http_reply m = leaky.get("/metrics");
    REQUIRE(m.status == 200);
    CHECK(metric(m.body, "goro_tasks_waiting{reason=\"chan receive\"}").value_or(0) >= 6 * workers_per_request);
    CHECK(metric(m.body, "goro_tasks").value_or(0) >= 6 * workers_per_request);

    // go tool pprof reads the same endpoint as for a Go program.
    std::string go = find_in_path("go");
    if (go.empty()) {
        WARN("go is not on PATH: skipping the `go tool pprof -top` check");
    } else {
        std::string top = pprof_top(go, leaky.url("/debug/pprof/goroutine"));
        INFO("go tool pprof -top:\n" << top);
        CHECK(top.find("Type: goroutine") != std::string::npos);
        CHECK(pprof_flat(top, "price_worker") == 6 * workers_per_request);
    }
    leaky.stop();
}

TEST_CASE("fixed: the total is flat after the same requests", "[leak_hunt][e2e]") {
    auto bin = env("FIXED_BIN");
    if (!bin) {
        WARN("FIXED_BIN not set (meson sets it): skipping the fixed end-to-end test");
        return;
    }
    service fixed(*bin);
    const long before = fixed.profile().total;
    REQUIRE(before >= 0);
    auto started = [&] { return metric(fixed.get("/metrics").body, "goro_tasks_started_total").value_or(-1); };
    const long long started_before = started();

    fixed.process(6);

    // The requests did start tasks (the producer and 4 workers each, at least)...
    CHECK(started() - started_before >= 6 * 5);
    // ...and every one of them has returned, or will shortly.
    profile_text p;
    bool flat = poll_until([&] {
        p = fixed.profile();
        return p.total == before;
    });
    INFO("fixed: total " << p.total << " (before the requests: " << before << ")");
    CHECK(flat);
    CHECK(metric(fixed.get("/metrics").body, "goro_tasks") == before);
    fixed.stop();
}

