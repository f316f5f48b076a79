#!/usr/bin/env bash
# Regenerates every output shown in the leak-hunt walkthrough
# (docs/leak-hunt.md, and its one-screen version in the README) from the real
# example programs, and rewrites the marked blocks of the given markdown files
# in place:
#
#   <!-- output:NAME -->            replaced by the output called NAME below,
#   ```text                         in a ```text fence
#   ...
#   ```
#   <!-- /output -->
#
# The code blocks of the same files (`<!-- snippet: PATH#TAG -->`, the lines
# between `// [TAG]` and `// [/TAG]` in PATH) are refreshed afterwards by
# scripts/readme_snippets.py.
#
# Usage: scripts/readme_outputs.sh [FILE.md ...]   (default: README.md and docs/*.md)
#
# A name may be shown in several places (the README repeats two of the
# walkthrough's outputs); each is rewritten.
#
# The programs run on free ports and temporary directories; the outputs are
# normalised only where those show (the port becomes 6060, pprof's download
# directory $HOME/pprof), so the blocks read as a user following the text at
# the default port sees them. Everything else is as printed, pprof's "Time:"
# line included. It fails (and changes nothing) when a marked name is unknown
# or a step does not behave as the walkthrough says.
#
# Binaries: $LEAKY_BIN and $FIXED_BIN, else build/demo/examples/{leaky,fixed},
# built with meson and ninja when missing (as scripts/demo.sh does). Needs
# curl, python3 and go.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
. "$root/scripts/lib.sh"  # stop_service

files=("$@")
if [[ ${#files[@]} == 0 ]]; then
    files=(README.md docs/*.md)
fi

for tool in curl python3 go; do
    command -v "$tool" >/dev/null 2>&1 || { echo "readme_outputs.sh: $tool is required" >&2; exit 1; }
done

leaky=${LEAKY_BIN:-build/demo/examples/leaky}
fixed=${FIXED_BIN:-build/demo/examples/fixed}
if [[ -z ${LEAKY_BIN:-} || -z ${FIXED_BIN:-} ]]; then
    if [[ ! -f build/demo/build.ninja ]]; then
        meson setup build/demo -Dtests=false -Dbench=false --buildtype=debugoptimized >/dev/null
    fi
    ninja -C build/demo -j "${GORO_JOBS:-2}" examples/leaky examples/fixed >/dev/null
fi

tmp=$(mktemp -d)
out=$tmp/out       # one file per output name
mkdir -p "$out" "$tmp/pprof"
pid=
trap 'stop_service; rm -rf "$tmp"' EXIT

port=
start_service() {  # $1: binary, $2: name for the files
    "$1" --port 0 >"$tmp/$2.stdout" 2>"$tmp/$2.stderr" &
    pid=$!
    for _ in $(seq 200); do
        if grep -q '^listening on ' "$tmp/$2.stdout" 2>/dev/null; then
            port=$(sed -n '1s/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/$2.stdout")
            return
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$tmp/$2.stderr" >&2; exit 1; }
        sleep 0.05
    done
    echo "readme_outputs.sh: $2 did not start" >&2
    exit 1
}

url() { echo "http://localhost:$port$1"; }
get() { curl -sS --max-time 60 "$(url "$1")"; }
# The first $2 lines of $1's body (read whole first: under pipefail, a curl cut
# off by head would fail the script).
head_of() { local body; body=$(get "$1"); printf '%s\n' "$body" | sed -n "1,${2}p"; }
# Waits until the profile's total holds still (the last request's tasks park
# or finish a moment after its reply).
settle() {
    local last=-1 now
    for _ in $(seq 100); do
        now=$(head_of '/debug/pprof/goroutine?debug=1' 1)
        [[ $now == "$last" ]] && return
        last=$now
        sleep 0.1
    done
}
requests() { local i; for i in $(seq "$1"); do get /process; done; }
pprof() { PPROF_TMPDIR=$tmp/pprof HOME=$tmp go tool pprof "$@" 2>&1; }
# Saves stdin as output $1, with the running service's port shown as 6060 and
# pprof's download directory as $HOME/pprof.
save() {
    sed -e "s#localhost:$port\b#localhost:6060#g" -e "s#127\.0\.0\.1:$port\b#127.0.0.1:6060#g" \
        -e "s#$tmp/pprof#\$HOME/pprof#g" >"$out/$1"
}
expect() { grep -q -- "$2" "$out/$1" || { echo "readme_outputs.sh: output '$1' lacks '$2':" >&2; cat "$out/$1" >&2; exit 1; }; }

# --- leaky ----------------------------------------------------------------------
start_service "$leaky" leaky
head -1 "$tmp/leaky.stdout" | save start
head_of '/debug/pprof/goroutine?debug=1' 1 | save total_before
requests 10 | save process
settle
head_of '/debug/pprof/goroutine?debug=1' 1 | save total_after
get '/debug/pprof/goroutine?debug=1' | save debug1
head_of '/debug/pprof/goroutine?debug=2' 17 | save debug2
# A client that keeps a connection open and idle (a browser, a connection
# pool), as `exec 3<>/dev/tcp/localhost/6060` does in the walkthrough: its
# connection task parks in [IO wait] until the service stops.
exec 3<>"/dev/tcp/127.0.0.1/$port"
for _ in $(seq 100); do  # until the acceptor has started its task
    [[ $(head_of '/debug/pprof/goroutine?debug=1' 1) == 'goroutine profile: total 83' ]] && break
    sleep 0.05
done
# The connection tasks' blocks (debug=2 separates blocks with a blank line).
get '/debug/pprof/goroutine?debug=2' | awk 'BEGIN { RS = ""; ORS = "\n\n" } /serve_conn/' | save debug2_conns
pprof -top "$(url /debug/pprof/goroutine)" | save pprof_top
pprof -source_path build/demo -list 'price_worker' "$(url /debug/pprof/goroutine)" | save pprof_list
pprof -traces "$(url /debug/pprof/goroutine)" | save pprof_traces
# Two moments, compared by pprof: the profile now, five more requests, again.
curl -sS -o "$tmp/before.pb" "$(url /debug/pprof/goroutine)"
requests 5 >/dev/null
settle
curl -sS -o "$tmp/after.pb" "$(url /debug/pprof/goroutine)"
(cd "$tmp" && PPROF_TMPDIR=$tmp/pprof HOME=$tmp go tool pprof -top -base before.pb after.pb 2>&1) | save pprof_base
head_of '/debug/pprof/goroutine?debug=1' 1 | save total_later
get /metrics | grep -v '^#' | save metrics
exec 3>&-
stop_service
"$leaky" --diff 5 | save goro_diff

expect start 'listening on 127.0.0.1:6060'
expect total_before 'goroutine profile: total 2'
expect total_after 'goroutine profile: total 82'
expect debug1 'goroutine profile: total 82'
expect debug2_conns 'read_request'
expect debug2_conns 'IO wait'
expect debug1 '^40 @ '
expect pprof_top ' 40 .* price_worker$'
expect pprof_list 'LEAK 1'
expect pprof_base ' 20 .* price_worker$'
expect goro_diff '^+20 @ '

# --- fixed ----------------------------------------------------------------------
start_service "$fixed" fixed
requests 10 | save fixed_process
settle
get '/debug/pprof/goroutine?debug=1' | save fixed_debug1
get /metrics | grep -E '^goro_tasks(_started_total)? ' | save fixed_metrics
stop_service
"$fixed" --diff 5 | save fixed_diff

expect fixed_debug1 'goroutine profile: total 2'
expect fixed_diff 'goroutine profile diff: +0'

# --- rewrite the marked blocks ------------------------------------------------------
python3 - "$out" "${files[@]}" <<'EOF'
import os, re, sys

out_dir, files = sys.argv[1], sys.argv[2:]
outputs = {n: open(os.path.join(out_dir, n), encoding="utf-8").read() for n in os.listdir(out_dir)}

block = re.compile(r"(<!-- output:([^ ]+) -->\n)(.*?)(<!-- /output -->)", re.S)
# Every file is rendered before any is written: an unknown name changes nothing.
rendered = []
for path in files:
    text = open(path, encoding="utf-8").read()
    def replace(m):
        name = m.group(2)
        if name not in outputs:
            sys.exit("readme_outputs.sh: %s asks for unknown output '%s' (known: %s)"
                     % (path, name, ", ".join(sorted(outputs))))
        body = outputs[name]
        if not body.endswith("\n"):
            body += "\n"
        return m.group(1) + "```text\n" + body + "```\n" + m.group(4)
    new, n = block.subn(replace, text)
    rendered.append((path, text, new, n))
for path, text, new, n in rendered:
    if new != text:
        open(path, "w", encoding="utf-8").write(new)
    print("%s: %d blocks%s" % (path, n, "" if new != text else " (unchanged)"))
EOF

python3 scripts/readme_snippets.py "${files[@]}"
