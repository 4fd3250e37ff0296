#!/usr/bin/env bash
# Starts a two-node tandem cluster on this machine (loopback multicast, no config file) and
# prints both nodes' /status. Runs until Ctrl-C; with --check it prints and stops.
#   node 1: HTTP 127.0.0.1:7380, RESP 127.0.0.1:6380
#   node 2: HTTP 127.0.0.1:7381, RESP 127.0.0.1:6381
# TANDEMD=/path/to/tandemd skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${TANDEMD:-}" ]]; then
    cargo build --release -q -p tandemd
    TANDEMD="${CARGO_TARGET_DIR:-target}/release/tandemd"
fi

get() { # get PORT PATH: HTTP GET on 127.0.0.1 without curl
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3
    sed '1,/^\r$/d' <&3
    exec 3<&-
}

pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap stop EXIT INT TERM

"$TANDEMD" --node-id 1 --http 127.0.0.1:7380 --resp 127.0.0.1:6380 --profile fast & pids+=($!)
"$TANDEMD" --node-id 2 --http 127.0.0.1:7381 --resp 127.0.0.1:6381 --profile fast & pids+=($!)

# Wait (bounded: 10 s) until both nodes are healthy (alive, the state transfer done) and each
# lists the other alive: printing as soon as node 2 is listed could show node 1 a moment
# before its state transfer completes.
ready() { # ready PORT OTHER_ID
    local s
    s=$(get "$1" /status 2>/dev/null) || return 1
    [[ "$s" == *'"healthy":true'* && "$s" == *"\"node_id\":$2,\"state\":\"alive\""* ]]
}
healthy=no
for _ in $(seq 100); do
    if ready 7380 2 && ready 7381 1; then healthy=yes; break; fi
    sleep 0.1
done
[[ $healthy == yes ]] || echo "--- not both healthy after 10 s; printing what they say" >&2
echo "--- node 1: curl -s 127.0.0.1:7380/status"
get 7380 /status
echo "--- node 2: curl -s 127.0.0.1:7381/status"
get 7381 /status
if [[ "${1:-}" == "--check" ]]; then [[ $healthy == yes ]]; exit; fi
echo "--- the same, for a person: $TANDEMD status --http 127.0.0.1:7380"
"$TANDEMD" status --http 127.0.0.1:7380
echo "--- running; Ctrl-C stops both nodes"
wait
