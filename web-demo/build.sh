#!/usr/bin/env bash
# Builds the wasm module into web-demo/pkg (what index.html imports).
#   web-demo/build.sh            debug profile (what the tests use)
#   web-demo/build.sh --release  optimised, for the benchmark
# Needs wasm-bindgen-cli of the version in Cargo.lock (./test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug flag=()
if [ "${1:-}" = "--release" ]; then profile=release flag=(--release); fi
cargo build --locked --target wasm32-unknown-unknown -p underpass-wasm "${flag[@]}"
wasm-bindgen --target web --no-typescript --out-dir web-demo/pkg \
    "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$profile/underpass_wasm.wasm"
echo "web-demo/pkg built ($profile): $(du -h web-demo/pkg/underpass_wasm_bg.wasm | cut -f1)"
