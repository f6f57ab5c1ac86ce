#!/usr/bin/env bash
# The test command: set up, build the policies, run every test (unit and
# end-to-end) in release mode (one profile: wasmtime compiles policies
# 25-60x faster in a release host), then fmt and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build-policies.sh >/dev/null
cargo test --release --workspace --exclude primary-backup --exclude hostile
cargo fmt --all -- --check
cargo clippy --release -p wisp --all-targets -- -D warnings
cargo clippy --release --target wasm32-wasip2 -p wisp-policy -p primary-backup -p hostile -- -D warnings
