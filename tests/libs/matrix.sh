#!/usr/bin/env bash
# Rebuilds the command matrix: runs every library flow against a real redis-server on loopback
# with `redis-cli MONITOR` capturing, and prints, per flow, each distinct command shape it sent
# (command name and its option words; keys and values elided). With TANDEM=host:port it then
# runs each flow against that tandemd and prints PASS or the first failure.
#
#   bash tests/libs/matrix.sh [out-dir]      (needs redis-server, node_modules, the venv)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
py=${PYTHON:-$here/../../target/libs-venv/bin/python}
port=16399
redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$out" --logfile "$out/redis.log" --pidfile "$out/redis.pid" || exit 1
trap 'kill "$(cat "$out/redis.pid")" 2>/dev/null' EXIT
sleep 0.3

flows=(
    "node-redis|node $here/node/flow.js node-redis"
    "ioredis|node $here/node/flow.js ioredis"
    "rate-limit-redis|node $here/node/flow.js rate-limit"
    "flask-session|$py $here/python/flask_flow.py"
    "django-redis|$py $here/python/django_flow.py"
    "flask-limiter|$py $here/python/limiter_flow.py ${LIMITER_STRATEGY:-fixed-window}"
    "php-redis|php $here/php/flow.php"
)

# A command's shape: its name upper-cased, then the arguments that are option words.
shape() {
    sed -E -e 's/^[0-9.]+ \[[0-9]+ lua\] /(in script) /' -e 's/^[0-9.]+ \[[^]]*\] //' | python3 -c '
import shlex, sys
opts = {"EX", "PX", "NX", "XX", "GET", "KEEPTTL", "EXAT", "PXAT", "MATCH", "COUNT", "TYPE", "LOAD", "FLUSH", "EXISTS", "PERSIST", "GT", "LT", "SETNAME", "SETINFO", "LIB-NAME", "LIB-VER", "AUTH"}
for line in sys.stdin:
    try:
        w = shlex.split(line.replace("\\\"", "\x00"))
    except ValueError:
        continue
    if not w or w[0] == "OK":
        continue
    lua = w[:2] == ["(in", "script)"]
    if lua:
        w = w[2:]
    name = ("(in script) " if lua else "") + w[0].upper()
    words = [a.upper() for a in w[1:] if a.upper() in opts]
    if name in ("HELLO", "SELECT"):
        words = w[1:2]
    if name == "CLIENT" or name == "SCRIPT":
        words = [w[1].upper()] + words[1:] if len(w) > 1 else words
    print(" ".join([name] + words))
' | sort | uniq -c | sort -rn
}

for f in "${flows[@]}"; do
    name=${f%%|*}
    cmd=${f#*|}
    redis-cli -p $port flushall >/dev/null
    redis-cli -p $port monitor >"$out/$name.mon" &
    mon=$!
    sleep 0.2
    TANDEM_A=127.0.0.1:$port TANDEM_B=127.0.0.1:$port $cmd >"$out/$name.redis.log" 2>&1
    rc=$?
    sleep 0.2
    kill $mon
    echo "== $name (against redis-server: exit $rc)"
    shape <"$out/$name.mon"
    if [ -n "${TANDEM:-}" ]; then
        TANDEM_A=$TANDEM TANDEM_B=$TANDEM timeout 60 $cmd >"$out/$name.tandem.log" 2>&1
        if [ $? = 0 ]; then
            echo "   tandem: PASS"
        else
            echo "   tandem: $(grep -m1 -E 'FAIL|Error:|ERR|NOPROTO' "$out/$name.tandem.log" | cut -c1-200)"
        fi
    fi
done
echo "captures in $out"
