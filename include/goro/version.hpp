// goro/version.hpp — the library's version, for the preprocessor and for code.
//
// The top-level VERSION file is the one place the version is written for the
// build systems: meson reads it (`project(version : files('VERSION'))`) and so
// does CMake (`file(READ VERSION ...)`). A header-only library cannot generate
// this header at build time, so the three numbers below repeat it;
// `tests/consumers/check_version.py` fails when they, the single header, meson's
// project version, goro.pc and CMake's package version disagree. The string is
// spelled from the numbers, so it cannot drift from them.
//
//   #if GORO_VERSION >= GORO_MAKE_VERSION(0, 2, 0)   // compile-time test
//   std::cout << goro::version();                     // "0.1.0"
#pragma once

#include <string_view>

#define GORO_VERSION_MAJOR 0
#define GORO_VERSION_MINOR 1
#define GORO_VERSION_PATCH 0

#define GORO_MAKE_VERSION(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))
#define GORO_VERSION GORO_MAKE_VERSION(GORO_VERSION_MAJOR, GORO_VERSION_MINOR, GORO_VERSION_PATCH)

// Two levels so the arguments are expanded before they are stringized.
#define GORO_VERSION_STRINGIZE_(x) #x
#define GORO_VERSION_STRINGIZE(x) GORO_VERSION_STRINGIZE_(x)
#define GORO_VERSION_STRING                    \
    GORO_VERSION_STRINGIZE(GORO_VERSION_MAJOR) "." \
    GORO_VERSION_STRINGIZE(GORO_VERSION_MINOR) "." \
    GORO_VERSION_STRINGIZE(GORO_VERSION_PATCH)

namespace goro {

// The version as "MAJOR.MINOR.PATCH", usable in constant expressions.
constexpr std::string_view version() noexcept { return GORO_VERSION_STRING; }

}  // namespace goro
