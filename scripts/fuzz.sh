#!/usr/bin/env bash
# Fuzzes the gateway's request parsing and MCP 2026-07-28 header validation (fuzz/, cargo-fuzz).
#
#   scripts/fuzz.sh [SECONDS]     run the `request` target for SECONDS (default 60)
#
# Works on the stable toolchain pinned by rust-toolchain.toml: cargo-fuzz needs nightly-only flags
# (-Zsanitizer, sanitizer coverage), which RUSTC_BOOTSTRAP=1 enables; stable ships the ASan runtime.
# Installs cargo-fuzz if it is missing. The committed seeds are fuzz/corpus/request; the run grows
# fuzz/corpus-run/request (not committed). Exits non-zero when the fuzzer finds a crash; the
# input is then in fuzz/artifacts/request/ (replay: scripts/fuzz.sh replay FILE).
#
# Environment: FUZZ_SANITIZER (address, the default, or none), FUZZ_JOBS (parallel workers,
# default 1).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET=request
CARGO_FUZZ_VERSION=0.13.2
SANITIZER=${FUZZ_SANITIZER:-address}
JOBS=${FUZZ_JOBS:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION (about a minute)"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

export RUSTC_BOOTSTRAP=1
# Its own target dir: the instrumented build must not evict the main workspace's artifacts.
export CARGO_TARGET_DIR="$ROOT/fuzz/target"

if [[ ${1:-} == replay ]]; then
    exec cargo fuzz run --sanitizer "$SANITIZER" "$TARGET" "${2:?usage: scripts/fuzz.sh replay FILE}"
fi

SECONDS_TO_RUN=${1:-60}
if ! [[ $SECONDS_TO_RUN =~ ^[0-9]+$ ]] || ((SECONDS_TO_RUN == 0)); then
    echo "usage: scripts/fuzz.sh [SECONDS] | replay FILE" >&2
    exit 2
fi

WORK="$ROOT/fuzz/corpus-run/$TARGET"
mkdir -p "$WORK"
args=(-max_total_time="$SECONDS_TO_RUN" -dict="$ROOT/fuzz/$TARGET.dict" -print_final_stats=1)
if ((JOBS > 1)); then
    args+=(-fork="$JOBS")
fi
status=0
cargo fuzz run --sanitizer "$SANITIZER" "$TARGET" "$WORK" "$ROOT/fuzz/corpus/$TARGET" -- "${args[@]}" || status=$?
if ((status != 0)); then
    echo "fuzz.sh: the fuzzer failed (exit $status); crashing inputs:" >&2
    ls -l "$ROOT/fuzz/artifacts/$TARGET/" >&2 2>/dev/null || true
fi
exit "$status"
