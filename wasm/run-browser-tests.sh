#!/usr/bin/env bash
# The wasm crate's tests in headless chromium, with a demo relay to talk to:
# starts `underpass relay --demo` on a free loopback port, hands its config
# to the tests (at compile time: a page cannot read the environment) and
# runs them with wasm-bindgen-test-runner and Debian's chromedriver. The
# runner's page is another origin than the relay's, so the runner gets a
# fixed port and the relay allows that origin.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${UNDERPASS_BIN:-${CARGO_TARGET_DIR:-target}/debug/underpass}
[ -x "$bin" ] || cargo build --locked -p underpass
log=$(mktemp)
runner_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export WASM_BINDGEN_TEST_ADDRESS="127.0.0.1:$runner_port"
"$bin" relay --listen 127.0.0.1:0 --demo --allow-origin "http://$WASM_BINDGEN_TEST_ADDRESS" >"$log" 2>&1 &
relay=$!
trap 'kill $relay 2>/dev/null; rm -f "$log"' EXIT
addr=
for _ in $(seq 200); do
    addr=$(sed -n 's|^relay http://\([^ ]*\) .*|\1|p' "$log")
    [ -n "$addr" ] && break
    kill -0 $relay 2>/dev/null || { cat "$log"; echo "the relay exited" >&2; exit 1; }
    sleep 0.05
done
[ -n "$addr" ] || { cat "$log"; echo "the relay did not start" >&2; exit 1; }
export UNDERPASS_TEST_RELAY="ws://$addr/relay"
UNDERPASS_TEST_DEMO=$(curl -sSf "http://$addr/demo")
export UNDERPASS_TEST_DEMO
export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=120
cargo test --locked --target wasm32-unknown-unknown -p underpass-wasm "$@"
