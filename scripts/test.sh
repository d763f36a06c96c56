#!/usr/bin/env bash
# Runs every check and test of Gatehouse: `make test`, and CI through .ci/run.
#
# Steps: set-up (scripts/setup.sh test), a throwaway PostgreSQL cluster, rustfmt, clippy
# (native and the console's wasm side), the console's browser build, the gatehouse binary,
# doc tests, the test suite (cargo nextest, else cargo test), the MCP conformance suite against
# our fixture upstream directly and through the gateway (backend/cli/tests/conformance/run.mjs,
# docs/conformance.md), a short fuzz run (scripts/fuzz.sh), and the browser test
# (playwright/console.spec.mjs, if present). A failing
# check does not stop the later ones; the exit status is non-zero if any step failed, and a
# summary closes the output.
#
# Environment given to the tests:
#   GATEHOUSE_TEST_DATABASE_URL  the throwaway PostgreSQL cluster (removed on exit)
#   GATEHOUSE_PEERS_DIR          backend/cli/tests/peers/node_modules (npm MCP peers)
#   GATEHOUSE_PYTHON             .tools/venv/bin/python (with the `mcp` Python SDK)
#   CHROMIUM                     Debian's chromium
#
# shellcheck disable=SC2317  # cleanup and start_postgres run through trap and step
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD

SUMMARY=()
FAILED=()

# step NAME COMMAND...: runs one step, records PASS/FAIL and its duration.
step() {
    local name=$1
    shift
    printf '\n==== %s  %s\n==== $ %s\n' "$(date +%H:%M:%S)" "$name" "$*"
    local start=$SECONDS status=0
    "$@" || status=$?
    local took=$((SECONDS - start))
    if ((status == 0)); then
        SUMMARY+=("$(printf '  PASS  %-34s %6ss' "$name" "$took")")
    else
        SUMMARY+=("$(printf '  FAIL  %-34s %6ss  (exit %s)' "$name" "$took" "$status")")
        FAILED+=("$name")
    fi
    return "$status"
}

skip() {
    SUMMARY+=("$(printf '  SKIP  %-34s         %s' "$1" "$2")")
    printf '\n==== %s  %s: skipped (%s)\n' "$(date +%H:%M:%S)" "$1" "$2"
}

summary() {
    printf '\n==== summary (%s min in all)\n' "$((SECONDS / 60))"
    printf '%s\n' "${SUMMARY[@]}"
    if ((${#FAILED[@]})); then
        local IFS=,
        printf 'test.sh: FAILED steps: %s\n' "${FAILED[*]}"
    else
        echo "test.sh: every step passed"
    fi
}

finish() {
    summary
    ((${#FAILED[@]} == 0))
    exit $?
}

PG_DIR=""
cleanup() {
    if [[ -n $PG_DIR ]]; then
        "$ROOT/scripts/pg-cluster.sh" stop "$PG_DIR" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- prerequisites
step "setup" scripts/setup.sh test || finish

start_postgres() {
    PG_DIR=$(mktemp -d -t gatehouse-pg.XXXXXX) || return 1
    local url
    url=$(scripts/pg-cluster.sh start "$PG_DIR") || return 1
    export GATEHOUSE_TEST_DATABASE_URL=$url
    echo "GATEHOUSE_TEST_DATABASE_URL=$url"
}
step "postgres cluster" start_postgres || finish

export GATEHOUSE_PEERS_DIR=$ROOT/backend/cli/tests/peers/node_modules
export GATEHOUSE_PYTHON=$ROOT/.tools/venv/bin/python
CHROMIUM=$(command -v chromium || true)
export CHROMIUM

# ---------------------------------------------------------------- lint
step "rustfmt --check" cargo fmt --all -- --check
step "clippy (native)" cargo clippy --workspace --all-targets -- -D warnings
step "clippy (console wasm, hydrate)" cargo clippy -p gatehouse-console --lib \
    --target wasm32-unknown-unknown --features hydrate -- -D warnings

# ---------------------------------------------------------------- build
console_ok=0
binary_ok=0
step "console wasm build" scripts/build-console.sh && console_ok=1
step "gatehouse binary build" cargo build -p gatehouse && binary_ok=1

# ---------------------------------------------------------------- tests
# Doc tests first: nextest does not run them, and the suite's closing lines should come last.
step "doc tests" cargo test --workspace --doc
if cargo nextest --version >/dev/null 2>&1; then
    step "tests (cargo nextest)" cargo nextest run --workspace --no-fail-fast --no-tests=warn
else
    step "tests (cargo test)" cargo test --workspace --no-fail-fast
fi

# The conformance suite's own output goes to files; run.mjs prints per-era counts and a verdict.
if ((!binary_ok)); then
    SUMMARY+=("$(printf '  FAIL  %-34s         %s' "conformance" "not run: the binary did not build")")
    FAILED+=("conformance")
else
    # Strict: an expected failure that now passes must come off the list, so the list stays honest.
    step "conformance" env CONFORMANCE_STRICT=1 node backend/cli/tests/conformance/run.mjs
fi

# The request parser and the MCP 2026-07-28 header rules under libFuzzer (cargo-fuzz on the stable
# toolchain, see scripts/fuzz.sh): briefly, to catch panics on odd input; longer runs by hand.
step "fuzz (request parser, headers)" scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

if [[ ! -f playwright/console.spec.mjs ]]; then
    skip "browser test" "playwright/console.spec.mjs does not exist yet"
elif ((!console_ok || !binary_ok)); then
    SUMMARY+=("$(printf '  FAIL  %-34s         %s' "browser test" "not run: the console or the binary did not build")")
    FAILED+=("browser test")
else
    step "browser test" node playwright/console.spec.mjs
fi

finish
