#!/usr/bin/env bash
# shellcheck disable=SC2317  # consumer_* functions are called by name
# Builds and runs one tiny consumer project for every way a user can bring goro
# into a build, each compiling main.cpp (spawn a task, receive over a channel,
# print the goroutine dump):
#
#   single-header-gcc        g++ -std=c++20 -pthread -I single_include
#   single-header-clang      clang++, same flags
#   meson-subproject         dependency('goro', fallback : ...) with the repo in subprojects/goro
#   meson-install-pkgconfig  `meson install` to a temp prefix, then g++ $(pkg-config --cflags --libs goro)
#   meson-install-dependency the same meson project as meson-subproject, finding the installed goro.pc
#   cmake-add-subdirectory   add_subdirectory(third_party/goro), goro::goro; and goro::runtime
#                            (the runtime compiled once, GORO_SEPARATE_COMPILATION)
#   cmake-fetchcontent       FetchContent from a file:// git clone of the working tree
#   cmake-find-package       `cmake --install` to a temp prefix, find_package(goro CONFIG);
#                            goro::goro and goro::single
#
# Everything happens in a temp dir, on a snapshot of the working tree (tracked
# and untracked files that git does not ignore), so no build output of the
# repository leaks in. Prints `PASS name` / `FAIL name` per consumer (a failing
# one's log tail follows it) and exits 1 if any failed.
#
# Usage: tests/consumers/run.sh [name...]     (default: all)
# Environment: GORO_CONSUMER_JOBS (build parallelism, default 2),
#              GORO_CONSUMER_KEEP=1 (keep the temp dir and say where it is).
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
jobs=${GORO_CONSUMER_JOBS:-2}
all_consumers=(single-header-gcc single-header-clang meson-subproject
               meson-install-pkgconfig meson-install-dependency
               cmake-add-subdirectory cmake-fetchcontent cmake-find-package)

work=$(mktemp -d "${TMPDIR:-/tmp}/goro-consumers.XXXXXX") || exit 1
if [[ ${GORO_CONSUMER_KEEP:-0} == 1 ]]; then
    echo "consumers: keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi
src=$work/goro-src
mkdir -p "$work/logs" "$src"

cmake_generator=()
if command -v ninja >/dev/null 2>&1; then cmake_generator=(-G Ninja); fi

# --- the snapshot of the working tree -------------------------------------
snapshot() {
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # Tracked files that still exist, plus untracked ones git does not ignore.
        (cd "$root" && git ls-files -z --cached --others --exclude-standard) |
            while IFS= read -r -d '' f; do
                if [[ -e $root/$f || -L $root/$f ]]; then printf '%s\0' "$f"; fi
            done | tar -C "$root" --null -T - -cf - | tar -C "$src" -xf -
    else
        # Not a git checkout (e.g. an unpacked tarball): everything but build dirs.
        (cd "$root" && tar --exclude='./build*' --exclude=./.git -cf - .) | tar -C "$src" -xf -
    fi
}
if ! snapshot || [[ ! -f $src/meson.build ]]; then
    echo "consumers: could not copy the working tree to $src" >&2
    exit 1
fi
version=$(tr -d ' \t\r\n' <"$src/VERSION" 2>/dev/null)

# --- helpers (run inside each consumer's `set -e` subshell) -----------------
# Runs the built program and checks what it printed.
run_program() {
    local exe=$1 out=$work/logs/$current.out
    echo "+ $exe"
    local rc=0
    timeout 60 "$exe" >"$out" 2>&1 || rc=$?
    cat "$out"
    if [[ $rc != 0 ]]; then
        echo "consumer program exited with status $rc"
        return 1
    fi
    if ! grep -q '^goroutine profile: total [0-9]' "$out"; then
        echo "consumer program did not print a goroutine dump ('goroutine profile: total N')"
        return 1
    fi
}

# A fresh directory with the consumer project $1 (a folder next to this script,
# or none) and main.cpp in it; prints nothing, cds into it.
enter_project() {
    local dir=$work/$current
    rm -rf "$dir"
    mkdir -p "$dir"
    if [[ -n ${1:-} ]]; then cp -R "$here/$1/." "$dir/"; fi
    cp "$here/main.cpp" "$dir/"
    cd "$dir"
}

# `meson install` of the snapshot to a temp prefix, done once for both
# consumers that use it.
meson_prefix=$work/prefix-meson
meson_install_goro() {
    if [[ -f $work/meson-installed ]]; then return 0; fi
    echo "+ meson setup/install goro to $meson_prefix"
    meson setup "$work/goro-meson-build" "$src" --prefix "$meson_prefix" \
        -Dtests=false -Dexamples=false -Dbench=false
    meson install -C "$work/goro-meson-build"
    touch "$work/meson-installed"
}

# --- the consumers ---------------------------------------------------------
consumer_single-header-gcc() {
    enter_project ""
    (set -x; g++ -std=c++20 -pthread -I "$src/single_include" main.cpp -o consumer)
    run_program ./consumer
}

consumer_single-header-clang() {
    enter_project ""
    (set -x; clang++ -std=c++20 -pthread -I "$src/single_include" main.cpp -o consumer)
    run_program ./consumer
}

consumer_meson-subproject() {
    enter_project meson
    mkdir -p subprojects
    cp -R "$src" subprojects/goro
    # An installed goro must not be picked up instead of the subproject.
    (set -x; PKG_CONFIG_PATH='' meson setup build --force-fallback-for=goro)
    grep -q "Subproject goro" build/meson-logs/meson-log.txt ||
        { echo "the goro subproject was not used"; return 1; }
    (set -x; meson compile -C build -j "$jobs")
    run_program build/consumer
}

consumer_meson-install-pkgconfig() {
    meson_install_goro
    enter_project ""
    export PKG_CONFIG_PATH=$meson_prefix/share/pkgconfig
    local f
    for f in include/goro/goro.hpp include/goro/version.hpp \
             include/goro-single/goro/goro.hpp share/pkgconfig/goro-single.pc; do
        [[ -f $meson_prefix/$f ]] || { echo "meson install did not install $f"; return 1; }
    done
    (set -x; pkg-config --exact-version="$version" goro)
    local cflags libs
    cflags=$(pkg-config --cflags goro)
    libs=$(pkg-config --libs goro)
    echo "pkg-config: cflags: $cflags; libs: $libs"
    # shellcheck disable=SC2086 # the flags are words
    (set -x; g++ -std=c++20 $cflags main.cpp -o consumer $libs)
    run_program ./consumer
}

consumer_meson-install-dependency() {
    meson_install_goro
    enter_project meson
    (set -x; PKG_CONFIG_PATH=$meson_prefix/share/pkgconfig meson setup build --wrap-mode=nofallback)
    grep -q "Run-time dependency goro found: YES" build/meson-logs/meson-log.txt ||
        { echo "goro was not found through pkg-config"; return 1; }
    (set -x; meson compile -C build -j "$jobs")
    run_program build/consumer
}

consumer_cmake-add-subdirectory() {
    enter_project cmake_add_subdirectory
    mkdir -p third_party
    cp -R "$src" third_party/goro
    (set -x; cmake -S . -B build "${cmake_generator[@]}")
    (set -x; cmake --build build -j "$jobs")
    run_program build/consumer
    run_program build/consumer_runtime
}

consumer_cmake-fetchcontent() {
    # A git repository made from the snapshot, so uncommitted work is fetched too.
    local repo=$work/goro-git
    rm -rf "$repo"
    cp -R "$src" "$repo"
    git -C "$repo" init -q
    git -C "$repo" add -A
    git -C "$repo" -c user.name=goro-consumers -c user.email=goro-consumers@localhost \
        -c commit.gpgsign=false commit -q -m snapshot
    local sha
    sha=$(git -C "$repo" rev-parse HEAD)
    enter_project cmake_fetchcontent
    (set -x; cmake -S . -B build "${cmake_generator[@]}" \
        -DGORO_GIT_URL="file://$repo" -DGORO_GIT_TAG="$sha" -DFETCHCONTENT_QUIET=OFF)
    (set -x; cmake --build build -j "$jobs")
    run_program build/consumer
}

consumer_cmake-find-package() {
    local prefix=$work/prefix-cmake
    (set -x; cmake -S "$src" -B "$work/goro-cmake-build" "${cmake_generator[@]}")
    (set -x; cmake --install "$work/goro-cmake-build" --prefix "$prefix")
    enter_project cmake_find_package
    (set -x; cmake -S . -B build "${cmake_generator[@]}" \
        -DCMAKE_PREFIX_PATH="$prefix" -DGORO_EXPECTED_VERSION="$version")
    (set -x; cmake --build build -j "$jobs")
    run_program build/consumer
    run_program build/consumer_single
}

# --- driver ----------------------------------------------------------------
selected=("$@")
if [[ ${#selected[@]} == 0 ]]; then selected=("${all_consumers[@]}"); fi

failed=0
for current in "${selected[@]}"; do
    if ! declare -F "consumer_$current" >/dev/null; then
        echo "FAIL $current (no such consumer; known: ${all_consumers[*]})"
        failed=$((failed + 1))
        continue
    fi
    log=$work/logs/$current.log
    # A subshell with errexit: the first failing command fails the consumer.
    # (Not inside `if`, where bash would ignore set -e.)
    (set -e -o pipefail; "consumer_$current") >"$log" 2>&1
    rc=$?
    cd "$work"
    if [[ $rc == 0 ]]; then
        echo "PASS $current"
    else
        echo "FAIL $current"
        tail -n 40 "$log" | sed 's/^/    | /'
        failed=$((failed + 1))
    fi
done
exit $((failed > 0))
