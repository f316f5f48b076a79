// The runtime of goro compiled once, for programs built with
// GORO_SEPARATE_COMPILATION (see goro/core/linkage.hpp). Compile this file
// with the same compiler and flags as the program, and link it in.
#define GORO_IMPLEMENTATION 1
#include <goro/goro.hpp>
