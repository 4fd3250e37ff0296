#!/usr/bin/env bash
# Checks the flows themselves: for each flow and each command it sends, a redis-server with
# that command disabled (`--rename-command CMD ""`, which then answers `-ERR unknown command`
# as tandem does) must make the flow fail. Prints one line per pair and exits 1 if a flow
# passed without one of its commands. Needs redis-server, node_modules, the venv and php.
#
#   bash tests/libs/refusals.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-$here/../../target/libs-venv/bin/python}
port=16398
# flow | the commands it sends (php-redis sends EVALSHA first and falls back to EVAL by
# itself, so a server without EVALSHA alone does not fail it: EVAL is listed, EVALSHA not).
flows=(
    "node $here/node/flow.js node-redis|GET SET EXPIRE DEL"
    "node $here/node/flow.js ioredis|GET SET EXPIRE DEL INFO"
    "$py $here/python/flask_flow.py|GET SET DEL"
    "$py $here/python/django_flow.py|GET SET DEL EXISTS"
    "$py $here/python/limiter_flow.py|EVALSHA SCRIPT"
    "node $here/node/flow.js rate-limit|EVALSHA SCRIPT"
    "php $here/php/flow.php|GET SET SETEX EXPIRE EXISTS DEL EVAL"
)
bad=0
for f in "${flows[@]}"; do
    cmd=${f%%|*}
    for c in ${f#*|}; do
        d=$(mktemp -d)
        redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
            --dir "$d" --pidfile "$d/pid" --rename-command "$c" "" >/dev/null || exit 1
        sleep 0.2
        TANDEM_A=127.0.0.1:$port TANDEM_B=127.0.0.1:$port timeout 60 $cmd >"$d/out" 2>&1
        rc=$?
        kill "$(cat "$d/pid")"
        sleep 0.2
        if [ $rc = 0 ]; then
            echo "PASSED WITHOUT $c: $cmd"
            bad=1
        else
            echo "fails without $c: $cmd"
        fi
        rm -rf "$d"
    done
done
exit $bad
