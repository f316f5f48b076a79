// Golden-file comparison for goro's format tests (test_dump.cpp, test_pprof.cpp).
// The directory is $GORO_GOLDEN_DIR (meson sets it), else tests/golden next to
// this file; GORO_UPDATE_GOLDEN=1 rewrites the files instead of comparing.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

namespace goro_test {

inline std::string file_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

inline std::string golden_dir() {
    if (const char* e = std::getenv("GORO_GOLDEN_DIR")) return e;
    std::string f = __FILE__;
    auto slash = f.find_last_of('/');
    return (slash == std::string::npos ? std::string(".") : f.substr(0, slash)) + "/golden";
}

/// Compares `actual` with the golden file `name` (or rewrites it on request).
inline void check_golden(const std::string& name, const std::string& actual) {
    std::string path = golden_dir() + "/" + name;
    if (std::getenv("GORO_UPDATE_GOLDEN")) {
        std::ofstream(path, std::ios::binary) << actual;
        WARN("rewrote " << path);
        return;
    }
    std::string expected = file_text(path);
    INFO("golden file: " << path << " (GORO_UPDATE_GOLDEN=1 rewrites it)");
    REQUIRE_FALSE(expected.empty());
    CHECK(actual == expected);
}

}  // namespace goro_test
