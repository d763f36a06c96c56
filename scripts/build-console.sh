#!/usr/bin/env bash
# Builds the browser half of the Leptos console into target/site/pkg, without cargo-leptos
# (it takes ~19 minutes to install on a 2-core machine; these two steps are all we need from it):
#
#   scripts/build-console.sh [debug|release]     (default: debug)
#
# 1. the console crate for wasm32 with the `hydrate` feature;
# 2. wasm-bindgen (the CLI version must equal the wasm-bindgen crate in Cargo.lock, see
#    scripts/setup.sh) writes target/site/pkg/gatehouse_console.js and gatehouse_console_bg.wasm,
#    the names leptos' <HydrationScripts/> asks for when LEPTOS_OUTPUT_NAME is unset at compile
#    time (which it is without cargo-leptos) and output-name is gatehouse_console;
# 3. frontend/console/style.css, if there, is copied to target/site/pkg/gatehouse_console.css.
# No wasm-opt pass: Debian's binaryen 108 produces a wasm that fails to hydrate.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROFILE=${1:-debug}
case $PROFILE in
    debug) cargo_profile_flag=() ;;
    release) cargo_profile_flag=(--release) ;;
    *)
        echo "usage: scripts/build-console.sh [debug|release]" >&2
        exit 2
        ;;
esac

die() {
    printf 'build-console: ERROR: %s\n' "$*" >&2
    exit 1
}

CRATE=gatehouse_console
SITE_PKG=target/site/pkg

command -v wasm-bindgen >/dev/null || die "wasm-bindgen is not installed: run scripts/setup.sh"
want=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/^version = "|"$/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version | awk '{print $2}')
[[ -z $want || $have == "$want" ]] ||
    die "wasm-bindgen CLI is $have but Cargo.lock has wasm-bindgen $want: run scripts/setup.sh"

cargo build -p gatehouse-console --lib --target wasm32-unknown-unknown \
    --no-default-features --features hydrate "${cargo_profile_flag[@]}"

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
wasm=${target_dir:-target}/wasm32-unknown-unknown/$PROFILE/$CRATE.wasm
[[ -f $wasm ]] || die "$wasm was not built (is gatehouse-console's crate-type still [\"cdylib\", \"rlib\"]?)"

mkdir -p "$SITE_PKG"
wasm-bindgen --target web --no-typescript --out-dir "$SITE_PKG" --out-name "$CRATE" "$wasm"

if [[ -f frontend/console/style.css ]]; then
    cp frontend/console/style.css "$SITE_PKG/$CRATE.css"
fi

echo "build-console: $PROFILE build of the console written to $SITE_PKG/$CRATE.{js,_bg.wasm}" >&2
