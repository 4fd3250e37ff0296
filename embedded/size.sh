#!/usr/bin/env bash
# Builds the three size configurations of tandem-core for a Cortex-M3 (thumbv7m-none-eabi,
# opt-level s, LTO, AES-128-GCM with RustCrypto's aes_compact, core without the `adaptive`
# feature, 16 members, 16-slot retransmit ring), prints flash, RAM and worst-case stack of
# each, and exits non-zero when a budget is exceeded (issue 15's budgets).
#
# flash = .vector_table + .text + .rodata + .data (llvm-size); static RAM = .data + .bss.
# Stack: measured, not computed. Each binary paints the free stack with a pattern at boot,
# runs its workload under QEMU and reports the deepest word that was overwritten: once
# after starting its state in place ("init": below main's frame, in the non-inlined init
# function) and once at the end ("max": the whole stack's high-water mark over the run).
# Per member: (size_of Node<16 members> - size_of Node<8 members>) / 8.
set -euo pipefail
cd "$(dirname "$0")"

# Budgets (issue 15), bytes.
declare -A FLASH_BUDGET=([heartbeat]=$((10 * 1024)) [membership]=$((16 * 1024)) [node]=$((28 * 1024)))
INIT_STACK_BUDGET=1024
PER_MEMBER_BUDGET=256

size_tool=$(command -v llvm-size || command -v rust-size || true)
[ -n "$size_tool" ] || { echo "size.sh: needs llvm-size (Debian: llvm) or cargo-binutils" >&2; exit 2; }

cargo build --release --quiet --bins
runner() {
    timeout 120 qemu-system-arm -cpu cortex-m3 -machine lm3s6965evb -nographic \
        -semihosting-config enable=on,target=native -icount shift=3 -kernel "$1" 2>/dev/null
}

fail=0
printf '%-12s %8s %8s %8s %12s %11s %s\n' config flash static stack.max "RAM total" stack.init per-member
for cfg in heartbeat membership node; do
    elf=target/thumbv7m-none-eabi/release/size-$cfg
    read -r text data bss < <("$size_tool" "$elf" | awk 'NR == 2 { print $1, $2, $3 }')
    flash=$((text + data))
    static=$((data + bss))
    out=$(runner "$elf") || { echo "$out"; echo "size.sh: $cfg run failed" >&2; exit 1; }
    init=$(awk '/^stack.init/ { print $2 }' <<<"$out")
    max=$(awk '/^stack.max/ { print $2 }' <<<"$out")
    per=$(awk '/^node.per_member/ { print $2 }' <<<"$out")
    printf '%-12s %8d %8d %8d %12d %11d %s\n' "$cfg" "$flash" "$static" "$max" \
        $((static + max)) "$init" "${per:--}"
    if [ "$flash" -gt "${FLASH_BUDGET[$cfg]}" ]; then
        echo "  OVER BUDGET: $cfg flash $flash > ${FLASH_BUDGET[$cfg]}"; fail=1
    fi
    if [ "$init" -gt "$INIT_STACK_BUDGET" ]; then
        echo "  OVER BUDGET: $cfg stack at init $init > $INIT_STACK_BUDGET"; fail=1
    fi
    if [ -n "$per" ] && [ "$per" -gt "$PER_MEMBER_BUDGET" ]; then
        echo "  OVER BUDGET: $cfg RAM per member $per > $PER_MEMBER_BUDGET"; fail=1
    fi
done
exit $fail
