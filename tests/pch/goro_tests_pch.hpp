// Precompiled for every test source of goro_tests: Catch2 and the library are
// most of each translation unit's compile time (CI has two cores).
#include <catch2/catch.hpp>

#include <goro/goro.hpp>
