#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS (default 60) each with the nightly toolchain.
# Fails on the first crash (the reproducer is left in fuzz/artifacts/<target>/).
# Works from a clean clone: installs cargo-fuzz if missing; new corpus entries go to a temp
# dir so the committed seeds in fuzz/corpus/<target>/ stay as they are.
# Usage: FUZZ_SECONDS=60 bash fuzz/run.sh [target...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: toolchain '$toolchain' missing; installing it" >&2
    rustup toolchain install "$toolchain" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# AddressSanitizer needs a nightly whose sanitizer runtime works on this host; fall back to
# no sanitizer (the core forbids unsafe code, so ASan adds little) when it does not.
sanitizer="${FUZZ_SANITIZER:-}"
if [ -z "$sanitizer" ]; then
    if cargo "+$toolchain" fuzz build -O >/dev/null 2>&1; then
        sanitizer=address
    else
        echo "fuzz/run.sh: address sanitizer build failed; using --sanitizer none" >&2
        sanitizer=none
    fi
fi
cargo "+$toolchain" fuzz build -O --sanitizer "$sanitizer"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi
[ "${#targets[@]}" -gt 0 ] || { echo "fuzz/run.sh: no targets" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    echo "=== fuzz $t for ${seconds}s (sanitizer $sanitizer)"
    mkdir -p "$work/$t" "corpus/$t"
    # First dir receives new inputs; the committed seeds are read only.
    cargo "+$toolchain" fuzz run -O --sanitizer "$sanitizer" "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
echo "fuzz/run.sh: ${#targets[@]} targets ran ${seconds}s each without a crash"
