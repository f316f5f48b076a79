// bench/bench.hpp — the shape of goro's benchmark program.
//
// Each benchmark prints one JSON object per line with the same names and
// fields as the Go anchor (../shared/anchors/go/main.go):
//   {"bench": NAME, "n": N, "ns_per_op": X, "gomaxprocs": P, "impl": "goro", ...extra}
// A file defines its benchmarks and registers them with GORO_BENCH; main
// runs those whose name contains --only, with counts multiplied by --scale.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <goro/goro.hpp>

namespace bench {

struct options {
    double scale = 1.0;
    std::string only;
    bool want(const std::string& name) const { return only.empty() || name.find(only) != std::string::npos; }
    long n(long base) const { return std::max(1L, static_cast<long>(static_cast<double>(base) * scale)); }
};

struct entry {
    const char* key;  // matched against --only, like the Go anchor's want(...)
    void (*run)(const options&);
};

inline std::vector<entry>& registry() {
    static std::vector<entry> r;
    return r;
}

struct registrar {
    registrar(const char* key, void (*run)(const options&)) { registry().push_back({key, run}); }
};

#define GORO_BENCH_CAT2(a, b) a##b
#define GORO_BENCH_CAT(a, b) GORO_BENCH_CAT2(a, b)
/// Registers `fn` (void(const bench::options&)) to run when --only matches `key`.
#define GORO_BENCH(key, fn) static ::bench::registrar GORO_BENCH_CAT(goro_bench_reg_, __LINE__){key, fn}

/// Extra fields: pairs of name and number.
using extras = std::vector<std::pair<std::string, double>>;

inline void emit(const std::string& name, long ops, std::chrono::nanoseconds d, const extras& extra = {}) {
    std::string line = "{\"bench\":\"" + name + "\",\"n\":" + std::to_string(ops) +
                       ",\"ns_per_op\":" + std::to_string(double(d.count()) / double(ops)) +
                       ",\"gomaxprocs\":" + std::to_string(goro::max_procs()) + ",\"impl\":\"goro\"";
    for (auto& [k, v] : extra) line += ",\"" + k + "\":" + std::to_string(v);
    line += "}";
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
}

using clock = std::chrono::steady_clock;

/// The wait profile on at `rate` (goro::set_wait_profile_rate) for one
/// benchmark row, emptied before and after; the rate before is restored.
struct wait_profile_scope {
    std::int64_t prev = goro::wait_profile_rate();
    explicit wait_profile_scope(std::int64_t rate) {
        goro::reset_wait_profile();
        goro::set_wait_profile_rate(rate);
    }
    ~wait_profile_scope() {
        goro::set_wait_profile_rate(prev);
        goro::reset_wait_profile();
    }
    wait_profile_scope(const wait_profile_scope&) = delete;
    wait_profile_scope& operator=(const wait_profile_scope&) = delete;
};

}  // namespace bench
