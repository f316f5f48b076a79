#!/usr/bin/env bash
# Builds test files both ways, header-only and against the runtime compiled
# once (GORO_SEPARATE_COMPILATION, goro/core/linkage.hpp), and runs them.
#
#   scripts/separate_check.sh [-c CXX] tests/test_timer.cpp [more test files...]
#
# A quick check while converting headers; the full suite in separate mode is
# `meson setup build-sep -Dseparate_compilation=true`.
set -euo pipefail
cxx=g++
if [[ ${1-} == -c ]]; then cxx=$2; shift 2; fi
[[ $# -gt 0 ]] || { echo "usage: $0 [-c CXX] TEST.cpp..." >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c++20 -O1 -g -pthread -I"$root/include" -I"$root/tests" $(pkg-config --cflags catch2))
objs_h=() objs_s=()
"$cxx" "${flags[@]}" -c "$root/tests/main.cpp" -o "$out/main_h.o" &
"$cxx" "${flags[@]}" -DGORO_SEPARATE_COMPILATION -c "$root/tests/main.cpp" -o "$out/main_s.o"
wait
"$cxx" "${flags[@]}" -c "$root/src/goro.cpp" -o "$out/goro.o"
for t in "$@"; do
    b=$(basename "$t" .cpp)
    "$cxx" "${flags[@]}" -c "$t" -o "$out/${b}_h.o" && objs_h+=("$out/${b}_h.o")
    "$cxx" "${flags[@]}" -DGORO_SEPARATE_COMPILATION -c "$t" -o "$out/${b}_s.o" && objs_s+=("$out/${b}_s.o")
done
"$cxx" -pthread "$out/main_h.o" "${objs_h[@]}" -o "$out/tests_h"
"$cxx" -pthread "$out/main_s.o" "${objs_s[@]}" "$out/goro.o" -o "$out/tests_s"
echo "== header-only"; "$out/tests_h"
echo "== separate compilation"; "$out/tests_s"
