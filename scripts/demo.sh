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

# Wait (bounded: 5 s) until node 1 lists node 2 as a member.
for _ in $(seq 50); do
    if get 7380 /status 2>/dev/null | grep -q '"node_id":2'; then break; fi
    sleep 0.1
done
echo "--- node 1: curl -s 127.0.0.1:7380/status"
get 7380 /status
echo "--- node 2: curl -s 127.0.0.1:7381/status"
get 7381 /status
[[ "${1:-}" == "--check" ]] && exit 0
echo "--- running; Ctrl-C stops both nodes"
wait
