#!/usr/bin/env bash
# Runs the firmware demo under QEMU (lm3s6965evb, Cortex-M3, thumbv7m-none-eabi build):
# two tandem nodes over a lossy in-memory link on SysTick, then the PROTOCOL.md vectors.
# Output and exit status come over semihosting; exits non-zero on any failed check.
set -euo pipefail
cd "$(dirname "$0")"
command -v qemu-system-arm >/dev/null || { echo "run.sh: needs qemu-system-arm (Debian: qemu-system-arm)" >&2; exit 2; }
cargo build --release --quiet --bin demo
# The runner of .cargo/config.toml; QEMU's own notice about the idle timer is dropped.
timeout 120 qemu-system-arm -cpu cortex-m3 -machine lm3s6965evb -nographic \
    -semihosting-config enable=on,target=native -icount shift=3 \
    -kernel target/thumbv7m-none-eabi/release/demo 2> >(grep -v 'Timer with period zero' >&2)
