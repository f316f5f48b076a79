// goro_bench: goro's side of ../shared/bench/compare.
//   goro_bench [--only NAME] [--scale X] [--wait-profile RATE]
// --wait-profile: goro::set_wait_profile_rate(RATE) first (1: record every
// wait), to measure what the wait profile costs when on.
#include <cstdlib>
#include <cstring>
#include <string>

#include <goro/core/wait_profile.hpp>

#include "bench.hpp"

int main(int argc, char** argv) {
    bench::options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "--only" || a == "-only") && i + 1 < argc) o.only = argv[++i];
        else if ((a == "--scale" || a == "-scale") && i + 1 < argc) o.scale = std::atof(argv[++i]);
        else if (a == "--wait-profile" && i + 1 < argc) goro::set_wait_profile_rate(std::atoll(argv[++i]));
        else {
            std::fprintf(stderr, "usage: goro_bench [--only NAME] [--scale X] [--wait-profile RATE]\n");
            return 2;
        }
    }
    if (o.scale <= 0) {
        std::fprintf(stderr, "goro_bench: --scale must be positive\n");
        return 2;
    }
    // Run in the anchor's order: registration order within each file, files as listed in meson.build.
    for (auto& e : bench::registry()) {
        // A key may name several benchmarks, "a|b": it runs when any matches.
        std::string keys = e.key;
        bool run = false;
        for (std::size_t p = 0; p <= keys.size();) {
            std::size_t q = keys.find('|', p);
            if (q == std::string::npos) q = keys.size();
            run = run || o.want(keys.substr(p, q - p));
            p = q + 1;
        }
        if (run) e.run(o);
    }
    return 0;
}
