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

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the build and tests need: clang compiles ring's C for
# wasm32; curl is the proxies' client in the end-to-end tests; wireguard-go,
# wireguard-tools, iproute2 and tcpdump make the interop peer (root only).
APT_PACKAGES=(clang curl wireguard-go wireguard-tools iproute2 tcpdump python3)

if [ "$install" = 1 ]; then
    step "install what is missing"
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "apt: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
    for component in clippy rustfmt; do
        rustup component list --installed | grep -q "^$component" || rustup component add "$component"
    done
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
# One debug build of everything, the binary the end-to-end tests start
# included.
cargo build --workspace --locked --all-targets

step "tests"
cargo test --workspace --locked

step "sans-IO crates build for wasm32-unknown-unknown"
cargo build --locked --target wasm32-unknown-unknown -p underpass-core -p underpass-stack

step "all checks passed"
