#!/usr/bin/env bash
# The test command. On a fresh machine it first installs what is missing
# (idempotent, and quick when everything is there), then runs every check:
# formatting, clippy, all tests, and the wasm32 builds of the sans-IO crates.
#
#   ./test.sh            everything
#   ./test.sh --no-install   skip the install step
set -euo pipefail
cd "$(dirname "$0")"

install=1
for arg in "$@"; do
    case "$arg" in
        --no-install) install=0 ;;
        *) echo "usage: $0 [--no-install]" >&2; exit 2 ;;
    esac
done

# Each step says when it started (seconds into the run), so a slow CI run
# shows where its time went.
step() { printf '\n==> %s  [%ds]\n' "$*" "$SECONDS"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the build and tests need: clang compiles ring's C for
# wasm32; curl is the proxies' client in the end-to-end tests; wireguard-go,
# wireguard-tools, iproute2, tcpdump and python3 (its servers) make the
# interop peer (root only); iperf3 measures throughput in the benchmark
# programs (interop_bench, wan_bench); nftables and ethtool drop packets on
# the browser benchmark's path (browser_bench --path-loss); chromium and
# chromium-driver run the web demo and the wasm tests; nc is the plain
# (not proxy-aware) client of the exec tests; useradd and setpriv (passwd,
# util-linux) run the client unprivileged; openssl makes the certificates
# of the TLS tests.
APT_PACKAGES=(clang curl openssl netcat-openbsd passwd wireguard-go wireguard-tools iproute2 tcpdump python3 iperf3 nftables ethtool chromium chromium-driver)

if [ "$install" = 1 ]; then
    step "install what is missing"
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    # node and npm drive chromium (playwright-core); any install will do.
    command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "apt: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
    for component in clippy rustfmt; do
        rustup component list --installed | grep -q "^$component" || rustup component add "$component"
    done
    # wasm-bindgen-cli must be exactly the wasm-bindgen of Cargo.lock.
    wb=$(sed -n '/^name = "wasm-bindgen"$/{n;s/version = "\(.*\)"/\1/p}' Cargo.lock)
    if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wb" ]; then
        echo "cargo install wasm-bindgen-cli $wb"
        cargo install --quiet wasm-bindgen-cli --version "$wb"
    fi
    if [ ! -d web-demo/node_modules/playwright-core ] || [ web-demo/package-lock.json -nt web-demo/node_modules ]; then
        (cd web-demo && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --target wasm32-unknown-unknown -p underpass-wasm --all-targets --locked -- -D warnings

step "build"
# One debug build of everything, the binary the end-to-end tests start
# included.
cargo build --workspace --locked --all-targets

step "sans-IO crates build for wasm32-unknown-unknown"
cargo build --locked --target wasm32-unknown-unknown -p underpass-core -p underpass-stack

step "the web demo's wasm module"
web-demo/build.sh

step "tests"
cargo test --workspace --locked

# Tests that need root (network namespaces) are #[ignore]d with the reason,
# so a run without root says "ignored" rather than passing them unrun;
# here, where they can run, they do (CI runs this script as root).
step "root-only tests: network namespaces, wireguard-go"
if [ "$(id -u)" = 0 ]; then
    cargo test --locked -p underpass-tests --test gateway --test tls -- --ignored
    if command -v wireguard-go >/dev/null && [ -e /dev/net/tun ]; then
        cargo test --locked -p underpass-tests --test interop -- --ignored
    else
        echo "skipped the wireguard-go interop tests: wireguard-go or /dev/net/tun is missing"
    fi
else
    echo "skipped: not root (they are listed above as ignored)"
fi

step "wasm tests in headless chromium"
wasm/run-browser-tests.sh

step "all checks passed"
