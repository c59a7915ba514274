# scripts/proc.sh - sourced by the teardown scripts: stopping the processes they started.
# The sourcing script defines say (one line to stderr, with its own prefix).

# alive PID: whether the process exists and is not a zombie. PID 1 of this machine reaps
# slowly, so a killed process may linger as a zombie for a while: that counts as gone.
alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# descendants PID: the PIDs of its children, theirs, and so on, one per line.
descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
        echo "$c"
        descendants "$c"
    done
}

# stop PID...: SIGTERM, up to 10 s of grace, then SIGKILL to those still alive.
stop() {
    local p left
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for _ in $(seq 100); do
        left=""
        for p in "$@"; do alive "$p" && left="$left $p"; done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    say "SIGKILL to$left"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
}
