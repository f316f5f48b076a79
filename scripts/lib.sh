# Shell functions shared by scripts/demo.sh and scripts/readme_outputs.sh.
# Sourced, not run: `. "$root/scripts/lib.sh"`.

# Stops the background service whose process id is in $pid, if there is one,
# and waits until it has exited; then clears $pid. Harmless when nothing runs,
# so it can be called after each service and again from an EXIT trap.
stop_service() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
