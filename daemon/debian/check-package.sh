#!/usr/bin/env bash
# Builds the Debian package and checks it on this machine (CI, as root): install with dpkg -i,
# the README's set-up (a key from `tandemd keygen`), `tandemd check` on the shipped config,
# `systemd-analyze verify` on the unit where systemd-analyze works, then remove and purge,
# checking nothing is left. Needs cargo-deb. Leaves the machine as it found it (the `tandem`
# user stays after a purge, as Debian policy asks).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -q -p tandemd
deb=$(cargo deb -p tandemd --no-build --strip 2>/dev/null | tail -n1)
[[ -f "$deb" ]] || { echo "cargo deb made no package"; exit 1; }
echo "built $deb ($(du -k "$deb" | cut -f1) KiB)"

if dpkg -s tandemd >/dev/null 2>&1; then
    echo "tandemd is already installed on this machine; not touching it"
    exit 1
fi
cleanup() { dpkg --purge tandemd >/dev/null 2>&1 || true; }
trap cleanup EXIT

dpkg -i "$deb"
test -x /usr/bin/tandemd
test -f /usr/lib/systemd/system/tandemd.service || test -f /lib/systemd/system/tandemd.service
getent passwd tandem >/dev/null
[[ "$(stat -c '%U %a' /etc/tandem)" == "tandem 700" ]] || { stat /etc/tandem; exit 1; }

# The README's set-up: one key for the cluster, readable by the service user only.
(umask 077; tandemd keygen --id 1 > /etc/tandem/key)
chown tandem:tandem /etc/tandem/key
# The shipped config names eth0; a machine without one checks it on its default-route
# interface (or loopback) instead.
iface_flag=()
if ! ip -o -4 addr show dev eth0 2>/dev/null | grep -q inet; then
    iface=$(ip -o -4 route show default 2>/dev/null | awk '{print $5; exit}')
    iface_flag=(--interface "${iface:-lo}")
fi
out=$(tandemd check --config /etc/tandem/tandemd.toml "${iface_flag[@]}" 2>&1)
echo "tandemd check: $out"
[[ "$out" == *"configuration ok"* ]]
# And a broken one is refused with exit 2.
set +e
tandemd check --config /etc/tandem/tandemd.toml --node-id 0 --ttl 0 "${iface_flag[@]}" >/dev/null 2>&1
rc=$?
set -e
[[ $rc == 2 ]] || { echo "check of a broken config exited $rc, not 2"; exit 1; }

# systemd-analyze works where it can verify a trivial unit; then the real one must pass.
probe=$(mktemp -d)/tandem-probe.service
printf '[Service]\nExecStart=/bin/true\n' > "$probe"
if systemd-analyze verify "$probe" >/dev/null 2>&1; then
    unit=$(ls /usr/lib/systemd/system/tandemd.service /lib/systemd/system/tandemd.service 2>/dev/null | head -n1)
    systemd-analyze verify "$unit"
    echo "systemd-analyze verify: ok"
else
    echo "SKIP systemd-analyze verify: systemd-analyze is missing or cannot verify units here"
fi
rm -rf "$(dirname "$probe")"

dpkg -r tandemd
test ! -e /usr/bin/tandemd
test -f /etc/tandem/tandemd.toml  # a conffile stays until purge
dpkg --purge tandemd
test ! -e /etc/tandem
! dpkg -s tandemd >/dev/null 2>&1
echo "package: installed, checked, removed and purged cleanly"
