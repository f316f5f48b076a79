#!/usr/bin/env bash
# goro's whole test run: the README quick start's test command, and what CI
# runs (.ci/run). On a fresh Debian 12 machine, as root, it first installs what
# it needs with apt-get; then it
#   1. checks that single_include/goro/goro.hpp is fresh (tools/amalgamate.py --check),
#   2. builds and runs the meson test suite in three configurations, under build/ci-*:
#        gcc    g++, -Dwerror=true, -O2 -g1
#        tsan   g++, -Db_sanitize=thread, -O1 -g1
#        asan   clang++, -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false, -O1 -g1,
#               -Dseparate_compilation=true: the tests link the runtime compiled
#               once (goro/core/linkage.hpp), so both ways of building goro
#               are tested, each under a sanitizer
#               (clang++ builds everything here, benchmarks included, and passes
#               every test under ASan+UBSan: so a plain clang configuration,
#               `clang`, is left out of the default run to keep CI short; it
#               stays available with GORO_TEST_CONFIGS)
#      and one more run of the gcc configuration's tests, not rebuilt:
#        nofence  build/ci-gcc's tests with GORO_ASYM_FENCE=off (no membarrier:
#                 the fallback paths of the scheduler's slots and the biased lock)
#   3. builds and runs the consumer projects (tests/consumers/run.sh),
#   4. checks that every statement of the version agrees (tests/consumers/check_version.py).
# A failing step does not stop the run. Counted: each meson test of each
# configuration (from meson-logs/testlog.json), each consumer, each check; a
# configuration that fails to configure or build counts one failure more. The
# last line is `N passed, N failed`; the exit status is 1 if anything failed.
#
# Environment:
#   GORO_TEST_CONFIGS   configurations to run (default "gcc tsan asan nofence"; also "clang";
#                       nofence needs gcc's build, from this run or an earlier one)
#   GORO_JOBS           build parallelism (default 2)
#   MESON_TESTTHREADS   test parallelism, passed to meson test (default 2)
#   GORO_TSAN_CXX, GORO_ASAN_CXX   compiler of the sanitizer configurations
#   TSAN_OPTIONS, ASAN_OPTIONS, UBSAN_OPTIONS   kept when set; defaults below
#   GORO_TEST_LOAD      run with N CPU-burning processes beside it (default 0), as
#                       on a loaded machine: e.g. GORO_TEST_LOAD=2 bash scripts/test.sh.
#                       They run at the script's own priority (nice -n 0) and end
#                       with it (an EXIT trap; each also exits once the script is gone).
set -u

# Debian packages the run needs (checked with dpkg, installed when missing).
# libclang-rt-14-dev: clang's sanitizer runtimes (only recommended by clang);
# libgtest-dev: the GoogleTest listener's test; golang-go and protobuf-compiler:
# the pprof tests read goro's profiles with `go tool pprof` and `protoc`;
# chromium and chromium-driver: the live page's test in a headless browser.
GORO_APT_PACKAGES="meson ninja-build g++ clang libclang-rt-14-dev catch2 libgtest-dev pkg-config \
cmake golang-go protobuf-compiler python3 git chromium chromium-driver"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

# --- load beside the run (GORO_TEST_LOAD) -------------------------------------
# Busy loops, so that the suite meets the scheduling delays of a busy machine
# (a worker that misses a stop-the-world deadline, a timer thread that runs
# late). Each checks now and then that this script is alive, so none outlives
# it even if the script is killed without running its trap.
load_pids=()
stop_load() {
    local pid
    for pid in "${load_pids[@]+"${load_pids[@]}"}"; do kill "$pid" 2>/dev/null; done
    for pid in "${load_pids[@]+"${load_pids[@]}"}"; do wait "$pid" 2>/dev/null; done
    load_pids=()
}
load=${GORO_TEST_LOAD:-0}
if ! [[ $load =~ ^[0-9]+$ ]]; then
    echo "GORO_TEST_LOAD must be a number of processes, not '$load'"
    exit 2
fi
if ((load > 0)); then
    trap stop_load EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    for ((i = 0; i < load; i++)); do
        nice -n 0 bash -c 'while kill -0 "$1" 2>/dev/null; do for ((j = 0; j < 200000; j++)); do :; done; done' \
            goro-load $$ &
        load_pids+=($!)
    done
    echo "load: $load CPU-burning processes beside the run (pids ${load_pids[*]})"
fi

configs=${GORO_TEST_CONFIGS-gcc tsan asan nofence}
jobs=${GORO_JOBS:-2}
start_time=$SECONDS
passed=0
failed=0
failures=()

pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); failures+=("$1"); }
elapsed() { local s=$((SECONDS - start_time)); printf '%02d:%02d' $((s / 60)) $((s % 60)); }
banner() { printf '\n==> [%s] %s\n' "$(elapsed)" "$*"; }
finish() {
    banner "summary"
    local f
    for f in "${failures[@]+"${failures[@]}"}"; do echo "FAILED: $f"; done
    echo "total time $(elapsed)"
    echo "$passed passed, $failed failed"
    exit $((failed > 0))
}

# --- 0. what the run needs --------------------------------------------------
banner "dependencies: $GORO_APT_PACKAGES"
if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for p in $GORO_APT_PACKAGES; do
        if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$p")
        fi
    done
    if [[ ${#missing[@]} == 0 ]]; then
        echo "all installed"
    elif [[ $(id -u) == 0 ]]; then
        echo "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }; then
            fail "apt-get install ${missing[*]}"
        fi
    else
        echo "missing packages: ${missing[*]}"
        echo "install them first, as root:  apt-get install -y ${missing[*]}"
        fail "missing packages: ${missing[*]}"
        finish
    fi
else
    echo "no dpkg here: not installing anything; the steps below say what is missing"
fi

# --- 1. the single header is fresh ------------------------------------------
banner "single header is fresh (tools/amalgamate.py --check)"
if python3 tools/amalgamate.py --check; then
    pass
else
    fail "single header check (run tools/amalgamate.py and commit the result)"
fi

# --- 2. the meson test suite, per configuration -----------------------------
export TSAN_OPTIONS=${TSAN_OPTIONS-halt_on_error=1 second_deadlock_stack=1}
export ASAN_OPTIONS=${ASAN_OPTIONS-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS-halt_on_error=1:print_stacktrace=1}

# Counts the results in $1/meson-logs/${3:-testlog}.json for configuration $2.
count_tests() {
    local log=$1/meson-logs/${3:-testlog}.json name=$2 line p=0 f=0 s=0
    if [[ ! -s $log ]]; then
        echo "no test results in $log"
        fail "$name: no tests ran"
        return
    fi
    while IFS= read -r line; do
        case $line in
            "pass "*) p=$((p + 1)); pass ;;
            "skip "*) s=$((s + 1)) ;;
            "fail "*) f=$((f + 1)); fail "$name: ${line#fail }" ;;
        esac
    done < <(python3 - "$log" <<'EOF'
import json, sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    if not line.strip():
        continue
    t = json.loads(line)
    r = t.get("result", "?")
    kind = {"OK": "pass", "EXPECTEDFAIL": "pass", "SKIP": "skip"}.get(r, "fail")
    print("%s %s (%s)" % (kind, t.get("name", "?"), r))
EOF
)
    echo "$name: $p passed, $f failed, $s skipped"
    if [[ $((p + f)) == 0 ]]; then fail "$name: no tests ran"; fi
}

# After a failed build: the tests whose programs are built and up to date.
# Prints one test name per line; the others as "missing NAME".
runnable_tests() {
    python3 - "$1" <<'EOF'
import json, os, subprocess, sys
build = os.path.abspath(sys.argv[1])
tests = json.loads(subprocess.run(["meson", "introspect", build, "--tests"],
                                  stdout=subprocess.PIPE, check=True).stdout)
for t in tests:
    exe = os.path.abspath(t["cmd"][0]) if t["cmd"] else ""
    ok = os.path.exists(exe)
    if ok and exe.startswith(build + os.sep):
        dry = subprocess.run(["ninja", "-C", build, "-n", os.path.relpath(exe, build)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True).stdout
        ok = "no work to do" in dry
    print(t["name"] if ok else "missing " + t["name"])
EOF
}

# A sanitizer runtime may not cope with the kernel's address-space layout
# (high mmap randomisation breaks older TSan); run without ASLR if that helps.
tsan_wrapper=()
probe_tsan() {
    local cxx=$1 dir
    dir=$(mktemp -d) || return 0
    printf 'int main() { return 0; }\n' >"$dir/t.cpp"
    if "$cxx" -fsanitize=thread "$dir/t.cpp" -o "$dir/t" 2>/dev/null && ! "$dir/t" >/dev/null 2>&1; then
        if setarch "$(uname -m)" -R "$dir/t" >/dev/null 2>&1; then
            echo "TSan programs fail with address randomisation here: running tests under setarch -R"
            tsan_wrapper=(setarch "$(uname -m)" -R)
        fi
    fi
    rm -rf "$dir"
}

run_config() {
    local name=$1 cxx=$2
    shift 2
    local opts=("$@") dir=build/ci-$name
    local test_args=(--no-rebuild --print-errorlogs)
    local wrapper=()
    if [[ -z ${MESON_TESTTHREADS:-} ]]; then
        test_args+=(--num-processes 2)
    fi
    case $name in
        tsan) test_args+=(--timeout-multiplier 3); probe_tsan "$cxx"; wrapper=("${tsan_wrapper[@]+"${tsan_wrapper[@]}"}") ;;
        asan) test_args+=(--timeout-multiplier 2) ;;
    esac

    banner "ci-$name: configure ($cxx ${opts[*]})"
    # Reuse a build dir set up with the same compiler and options (ninja
    # re-runs meson itself when a build file changed); otherwise start afresh:
    # meson 1.0 ignores some -D options (cpp_args) on --reconfigure.
    local stamp=$dir/goro-ci-setup want="CXX=$cxx ${opts[*]}"
    if [[ -f $dir/meson-private/coredata.dat && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "reusing $dir"
    else
        rm -rf "$dir"
        if ! CXX=$cxx meson setup "$dir" "${opts[@]}"; then
            fail "ci-$name: meson setup"
            return
        fi
        echo "$want" >"$stamp"
    fi

    banner "ci-$name: build (ninja -j$jobs)"
    local names=()
    if ninja -C "$dir" -j "$jobs" -k 0; then
        :
    else
        fail "ci-$name: build"
        # Run what did build, so one broken test does not hide the others.
        local line
        while IFS= read -r line; do
            case $line in
                "missing "*) fail "ci-$name: ${line#missing } (not built)" ;;
                *) names+=("$line") ;;
            esac
        done < <(runnable_tests "$dir")
        if [[ ${#names[@]} == 0 ]]; then
            echo "ci-$name: no test program was built"
            return
        fi
        echo "ci-$name: running the ${#names[@]} tests that were built"
    fi

    banner "ci-$name: test (meson test ${test_args[*]})"
    rm -f "$dir/meson-logs/testlog.json"
    "${wrapper[@]+"${wrapper[@]}"}" meson test -C "$dir" "${test_args[@]}" "${names[@]+"${names[@]}"}"
    count_tests "$dir" "ci-$name"
}

# The gcc build's tests again, with membarrier turned off; the log goes to
# meson-logs/nofence.json, beside gcc's own.
run_nofence() {
    local dir=build/ci-gcc
    banner "ci-nofence: build/ci-gcc's tests with GORO_ASYM_FENCE=off (meson test --no-rebuild)"
    if [[ ! -f $dir/build.ninja ]]; then
        fail "ci-nofence: build/ci-gcc is not set up (run the gcc configuration first)"
        return
    fi
    rm -f "$dir/meson-logs/nofence.json"
    local test_args=(--no-rebuild --print-errorlogs --logbase nofence)
    if [[ -z ${MESON_TESTTHREADS:-} ]]; then test_args+=(--num-processes 2); fi
    GORO_ASYM_FENCE=off meson test -C "$dir" "${test_args[@]}"
    count_tests "$dir" "ci-nofence" nofence
}

# Compile time is most of a run: the suite's builds keep line tables only
# (-g1: a failure's stack still has files and lines) and the sanitizer builds
# are at -O1, as the sanitizers advise. Together about half the time of
# debugoptimized (-O2 -g) per test file. Asserts stay on (the lock-rank checks).
# The benchmarks are always built at -O2 (bench/meson.build).
# The test program is built six test files to a translation unit
# (-Dtest_unity=6): the library's inline code is then compiled once per group,
# not once per file.
fast_gcc=(-Doptimization=2 -Ddebug=false -Dcpp_args=-g1 -Dtest_unity=6)
fast_san=(-Doptimization=1 -Ddebug=false -Dcpp_args=-g1 -Dtest_unity=6)
for config in $configs; do
    case $config in
        gcc)   run_config gcc g++ -Dwerror=true "${fast_gcc[@]}" ;;
        clang) run_config clang clang++ -Dwerror=true "${fast_gcc[@]}" ;;
        tsan)  run_config tsan "${GORO_TSAN_CXX:-g++}" -Db_sanitize=thread -Db_lundef=false -Dbench=false "${fast_san[@]}" ;;
        # (meson.build drops clang 14's -fsanitize=function, which cannot
        # compile coroutines.)
        asan)  run_config asan "${GORO_ASAN_CXX:-clang++}" -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
                   -Dseparate_compilation=true "${fast_san[@]}" ;;
        nofence) run_nofence ;;
        *)     banner "unknown configuration '$config' (known: gcc clang tsan asan nofence)"
               fail "unknown configuration $config" ;;
    esac
done

# --- 3. consumer projects ---------------------------------------------------
banner "consumer projects (tests/consumers/run.sh)"
consumer_out=$(mktemp) || exit 1
GORO_CONSUMER_JOBS=$jobs bash tests/consumers/run.sh 2>&1 | tee "$consumer_out"
consumer_rc=${PIPESTATUS[0]}
consumer_counted=0
while IFS= read -r line; do
    case $line in
        "PASS "*) pass; consumer_counted=$((consumer_counted + 1)) ;;
        "FAIL "*) fail "consumer ${line#FAIL }"; consumer_counted=$((consumer_counted + 1)) ;;
    esac
done <"$consumer_out"
rm -f "$consumer_out"
if [[ $consumer_rc != 0 && $consumer_counted == 0 ]]; then
    fail "tests/consumers/run.sh (exit status $consumer_rc)"
fi

# --- 4. one version everywhere ----------------------------------------------
banner "version agreement (tests/consumers/check_version.py)"
if python3 tests/consumers/check_version.py; then
    pass
else
    fail "version check"
fi

finish
