#!/usr/bin/env bash
# The leak hunt, start to finish: the README quick start's first command.
#
# On a fresh Debian 12 machine, as root, it installs what it needs with
# apt-get (only the missing packages), builds the two example services of
# examples/leak_hunt/ with meson into build/demo, and then, for `leaky` and
# then for `fixed`:
#   1. starts the service on 127.0.0.1:$DEMO_PORT,
#   2. sends $DEMO_REQUESTS requests to /process, printing after each one the
#      first line of the goroutine profile (`goroutine profile: total N`),
#   3. prints the goroutine profile (debug=1: stacks grouped, largest first),
#   4. runs `go tool pprof -top` against the same URL,
#   5. stops the service.
# leaky's total grows with every request and its largest group points at the
# worker's receive loop (leaky.cpp, the line marked LEAK 1); fixed's total
# comes back to where it was before the requests (the service's own tasks: the
# acceptor and the connection that asks for the profile). The exit status is 0
# when that is what happened.
#
# Environment:
#   DEMO_REQUESTS   requests per service (default 10)
#   DEMO_PORT       port of the services (default 6060, as in the walkthrough)
#   GORO_JOBS       build parallelism (default 2)
set -euo pipefail

requests=${DEMO_REQUESTS:-10}
port=${DEMO_PORT:-6060}
jobs=${GORO_JOBS:-2}
packages="meson ninja-build g++ catch2 pkg-config curl golang-go"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
. "$root/scripts/lib.sh"  # stop_service
build=build/demo

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold= plain=; fi
heading() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
say() { printf '    %s\n' "$*"; }

# --- what the demo needs ------------------------------------------------------
heading "packages: $packages"
if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for p in $packages; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
    done
    if [[ ${#missing[@]} == 0 ]]; then
        say "all installed"
    else
        sudo=()
        if [[ $(id -u) != 0 ]]; then
            if command -v sudo >/dev/null 2>&1; then
                sudo=(sudo)
            else
                echo "missing packages: ${missing[*]}; install them as root:" >&2
                echo "    apt-get install -y ${missing[*]}" >&2
                exit 1
            fi
        fi
        say "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get update -q
        "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
else
    say "no dpkg here: not installing anything (needs meson, ninja, g++ 12+, curl; go for pprof)"
fi

# --- build ----------------------------------------------------------------------
heading "build: meson setup $build, ninja -C $build examples/leaky examples/fixed"
if [[ ! -f $build/build.ninja ]]; then
    meson setup "$build" -Dtests=false -Dbench=false --buildtype=debugoptimized >/dev/null
fi
ninja -C "$build" -j "$jobs" examples/leaky examples/fixed

# --- run ------------------------------------------------------------------------
tmp=$(mktemp -d)
pid=
trap 'stop_service; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

url=http://localhost:$port
curl_() { curl -sS --max-time 60 "$@"; }
total() { curl_ "$url/debug/pprof/goroutine?debug=1" | sed -n 1p; }  # sed reads it all: no SIGPIPE for curl
total_n() { total | sed -n 's/^goroutine profile: total //p'; }

start_service() {
    local name=$1
    heading "$name: start it ($build/examples/$name --port $port)"
    "$build/examples/$name" --port "$port" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    for _ in $(seq 100); do
        if grep -q '^listening on ' "$tmp/$name.out" 2>/dev/null; then
            say "$(head -1 "$tmp/$name.out")"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$tmp/$name.err" >&2
            echo "$name did not start (is port $port in use? set DEMO_PORT)" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "$name did not say where it listens within 10 s" >&2
    exit 1
}

# One service, steps 1-5; leaves the total before any request in $first and
# the settled total after the requests in $final.
first=
final=
hunt() {
    local name=$1 i reply
    start_service "$name"

    heading "$name: curl -s '$url/debug/pprof/goroutine?debug=1' | head -1   (before any request)"
    first=$(total_n)
    say "goroutine profile: total $first"

    heading "$name: $requests requests to /process; after each, the first line of the profile"
    for i in $(seq "$requests"); do
        reply=$(curl_ "$url/process")
        printf '    %-78s %s\n' "$reply" "$(total)"
    done
    # The last request's tasks finish (fixed) or park (leaky) a moment after
    # its reply: wait until the count holds still.
    local last=-1 now
    for _ in $(seq 50); do
        now=$(total_n)
        [[ $now == "$last" ]] && break
        last=$now
        sleep 0.1
    done
    final=$now

    heading "$name: curl -s '$url/debug/pprof/goroutine?debug=1'   (stacks grouped, largest group first)"
    curl_ "$url/debug/pprof/goroutine?debug=1" | sed 's/^/    /'

    heading "$name: go tool pprof -top $url/debug/pprof/goroutine"
    if command -v go >/dev/null 2>&1; then
        PPROF_TMPDIR=$tmp HOME=${HOME:-$tmp} go tool pprof -top "$url/debug/pprof/goroutine" 2>&1 |
            grep -v '^Saved profile in ' | sed 's/^/    /'
    else
        say "(go is not installed: apt-get install golang-go)"
    fi
    stop_service
    say "$name stopped"
}

hunt leaky
leaky_first=$first leaky_total=$final
hunt fixed
fixed_first=$first fixed_total=$final

heading "summary"
say "leaky: goroutine profile: total $leaky_total after $requests requests, $leaky_first before (it grows with every request)"
say "fixed: goroutine profile: total $fixed_total after $requests requests, $fixed_first before"
say "next: the whole walkthrough, docs/leak-hunt.md"
[[ $leaky_total -gt $leaky_first && $fixed_total == "$fixed_first" ]]
