// Fuzz target for goro::detail::parse_http_request, the debug server's HTTP
// request-head parser.
//
// With libFuzzer (clang):
//     clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude
//             tests/fuzz/fuzz_http_request.cpp -o fuzz_http_request
//     ./fuzz_http_request -max_len=4096 corpus_dir/
//
// Without libFuzzer (g++, or a quick check in `meson test`), define
// GORO_FUZZ_STANDALONE: a small driver runs the built-in seeds, any files
// named on the command line, and a bounded number of deterministic mutations:
//     g++ -std=c++20 -DGORO_FUZZ_STANDALONE -Iinclude tests/fuzz/fuzz_http_request.cpp
//     ./a.out -runs=100000 [-seed=N] [file...]
//
// Besides "no crash, no sanitizer report", each input checks the parser's
// contract (a violation aborts):
//   * complete: 0 < consumed <= size, the head ends with LF, the method is a
//     token, the path is "*" or starts with '/', limits are respected;
//   * error: the status is one of 400, 414, 431, 505 and a reason is given;
//   * streaming: every shorter prefix of the input parses as incomplete or to
//     the same outcome (same error status; complete with the same consumed),
//     and the head alone (data[0, consumed)) parses to the same request.

#include <goro/http/request.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

[[noreturn]] void contract_broken(const char* what, std::string_view input) {
    std::fprintf(stderr, "parse_http_request contract broken: %s\ninput (%zu bytes): ", what,
                 input.size());
    for (char c : input) {
        auto u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u < 0x7f && u != '\\') std::fputc(c, stderr);
        else std::fprintf(stderr, "\\x%02x", u);
    }
    std::fputc('\n', stderr);
    std::abort();
}

void check(bool ok, const char* what, std::string_view input) {
    if (!ok) contract_broken(what, input);
}

bool same_head(const goro::detail::http_request_head& a, const goro::detail::http_request_head& b) {
    return a.method == b.method && a.target == b.target && a.path == b.path &&
           a.raw_query == b.raw_query && a.query == b.query && a.headers == b.headers &&
           a.version_minor == b.version_minor && a.keep_alive == b.keep_alive &&
           a.has_body == b.has_body && a.authority == b.authority;
}

void check_one(std::string_view in, const goro::debug_server_limits& limits) {
    using goro::detail::http_parse_status;
    auto r = goro::detail::parse_http_request(in, limits);
    switch (r.status) {
    case http_parse_status::complete: {
        check(r.consumed > 0 && r.consumed <= in.size(), "consumed out of range", in);
        check(in[r.consumed - 1] == '\n', "head does not end with LF", in);
        check(goro::detail::is_token(r.request.method), "method is not a token", in);
        check(r.request.path == "*" || (!r.request.path.empty() && r.request.path.front() == '/'),
              "path neither '*' nor absolute", in);
        check(r.request.target.size() <= limits.max_request_line, "request line limit", in);
        check(r.request.headers.size() <= limits.max_header_count, "header count limit", in);
        check(r.request.path.find('\0') == std::string::npos, "NUL in path", in);
        for (const auto& [k, v] : r.request.headers) {
            check(goro::detail::is_token(k), "header name is not a token", in);
            check(goro::detail::is_field_value(v), "header value with CTL", in);
            check(v.empty() || (v.front() != ' ' && v.back() != ' '), "header value not trimmed", in);
        }
        auto again = goro::detail::parse_http_request(in.substr(0, r.consumed), limits);
        check(again.status == http_parse_status::complete && again.consumed == r.consumed &&
                  same_head(again.request, r.request),
              "the head alone parses differently", in);
        break;
    }
    case http_parse_status::error:
        check(r.error_status == 400 || r.error_status == 414 || r.error_status == 431 ||
                  r.error_status == 505,
              "unexpected error status", in);
        check(!r.error_reason.empty(), "error without a reason", in);
        break;
    case http_parse_status::incomplete:
        break;
    }
    // A handful of prefixes: all of them is quadratic, and the fuzzer varies
    // the input's length anyway.
    const std::size_t n = in.size();
    const std::size_t cuts[] = {n / 4, n / 2, n - n / 4, n > 0 ? n - 1 : 0, n > 1 ? n - 2 : 0};
    for (std::size_t cut : cuts) {
        if (cut >= n) continue;
        auto p = goro::detail::parse_http_request(in.substr(0, cut), limits);
        if (p.status == http_parse_status::incomplete) continue;
        check(p.status == r.status, "a prefix reached a different outcome", in);
        if (p.status == http_parse_status::error)
            check(p.error_status == r.error_status, "a prefix reached a different error", in);
        else
            check(p.consumed == r.consumed, "a prefix completed at a different place", in);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    check_one(in, goro::debug_server_limits{});
    // Small limits, so that mutations actually reach them.
    goro::debug_server_limits small;
    small.max_request_line = 32;
    small.max_header_bytes = 64;
    small.max_header_count = 3;
    check_one(in, small);

    // The query and path decoders on their own.
    if (auto q = goro::detail::parse_query(in)) {
        for (const auto& [k, v] : *q) check(k.size() <= in.size() && v.size() <= in.size(), "query grew", in);
    }
    if (auto d = goro::detail::percent_decode(in, false))
        check(d->size() <= in.size(), "percent_decode grew", in);
    return 0;
}

#ifdef GORO_FUZZ_STANDALONE

#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

namespace {

// xorshift64*: deterministic across platforms, so a failing run is repeatable.
struct rng {
    std::uint64_t s;
    std::uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 2685821657736338717ull;
    }
    std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(next() % n); }
};

const char* const seeds[] = {
    "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "GET /debug/pprof/goroutine?debug=1 HTTP/1.1\r\nHost: 127.0.0.1:6060\r\nUser-Agent: curl/7.88.1\r\n"
    "Accept: */*\r\n\r\n",
    "HEAD /debug/pprof/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "GET /a%20b/%2F?x=1&y=%41+b&&z HTTP/1.1\r\nHost: [::1]:6060\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n",
    "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "GET http://localhost:6060/debug/goro/tasks.json HTTP/1.1\r\nHost: localhost\r\n"
    "Authorization: Bearer abc\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "\r\n\nGET / HTTP/1.1\nHost: a\nX:\t v \t\n\n",
    "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    "GET / HTTP/2.0\r\n\r\n",
    "GET /x HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
};

const char* const tokens[] = {
    "\r\n", "\n", "\r", " ", "\t", ":", "%", "%00", "%2F", "%zz", "?", "&", "=", "+", "#", "*",
    "HTTP/1.1", "HTTP/1.0", "HTTP/9.9", "GET", "HEAD", "Host: ", "Content-Length: ",
    "Transfer-Encoding: chunked", "Connection: close", "\r\n\r\n", "http://", "[::1]", "\x7f", "\xff",
};

std::string mutate(std::string s, rng& r, const std::vector<std::string>& corpus) {
    int steps = 1 + static_cast<int>(r.below(4));
    for (int i = 0; i < steps; ++i) {
        std::size_t at = r.below(s.size() + 1);
        switch (r.below(8)) {
        case 0:  // flip a bit
            if (!s.empty()) s[r.below(s.size())] ^= static_cast<char>(1u << r.below(8));
            break;
        case 1:  // random byte
            s.insert(at, 1, static_cast<char>(r.below(256)));
            break;
        case 2:  // delete a range
            if (!s.empty()) s.erase(r.below(s.size()), 1 + r.below(8));
            break;
        case 3:  // an interesting token
            s.insert(at, tokens[r.below(std::size(tokens))]);
            break;
        case 4:  // repeat a chunk, to reach the limits
            if (!s.empty()) {
                std::size_t from = r.below(s.size());
                std::string chunk = s.substr(from, 1 + r.below(16));
                std::size_t times = 1 + r.below(64);
                std::string rep;
                for (std::size_t k = 0; k < times; ++k) rep += chunk;
                s.insert(at, rep);
            }
            break;
        case 5: {  // splice with another input
            const std::string& o = corpus[r.below(corpus.size())];
            std::size_t from = r.below(o.size() + 1);
            s = s.substr(0, at) + o.substr(from);
            break;
        }
        case 6:  // truncate
            s.resize(r.below(s.size() + 1));
            break;
        default:  // overwrite a byte with a printable one
            if (!s.empty()) s[r.below(s.size())] = static_cast<char>(0x20 + r.below(0x5f));
            break;
        }
        if (s.size() > 64 * 1024) s.resize(64 * 1024);
    }
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    long runs = 20000;
    std::uint64_t seed = 0x9e3779b97f4a7c15ull;
    std::vector<std::string> corpus(std::begin(seeds), std::end(seeds));
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a.rfind("-runs=", 0) == 0) {
            runs = std::strtol(argv[i] + 6, nullptr, 10);
        } else if (a.rfind("-seed=", 0) == 0) {
            seed = std::strtoull(argv[i] + 6, nullptr, 10) | 1;
        } else if (!a.empty() && a.front() == '-') {
            std::fprintf(stderr, "usage: %s [-runs=N] [-seed=N] [file...]\n", argv[0]);
            return 2;
        } else {
            std::ifstream f(argv[i], std::ios::binary);
            if (!f) {
                std::fprintf(stderr, "cannot read %s\n", argv[i]);
                return 2;
            }
            std::ostringstream ss;
            ss << f.rdbuf();
            corpus.push_back(ss.str());
        }
    }
    auto run = [](const std::string& s) {
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
    };
    for (const auto& s : corpus) run(s);
    rng r{seed};
    for (long i = 0; i < runs; ++i) {
        std::string m = mutate(corpus[r.below(corpus.size())], r, corpus);
        run(m);
        // Keep some mutants as parents, so that mutations accumulate.
        if (r.below(16) == 0 && corpus.size() < 512) corpus.push_back(std::move(m));
    }
    std::printf("fuzz_http_request: %ld mutations of %zu inputs, no contract broken\n", runs,
                corpus.size());
    return 0;
}

#endif  // GORO_FUZZ_STANDALONE
