#!/usr/bin/env bash
# The test command: set up, build the policies, run every test (unit and
# end-to-end) in release mode (one profile: wasmtime compiles policies
# 25-60x faster in a release host), then fmt and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
./scripts/build-policies.sh >/dev/null
# Policy crates are wasm components: tested through the host, linted for wasm.
excludes=() wasm=(-p wisp-policy)
for dir in policies/*/ tests/policies/*/; do
  name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
  excludes+=(--exclude "$name")
  wasm+=(-p "$name")
done
cargo test --release --workspace "${excludes[@]}"
# The example policies' own unit tests, run natively.
examples=()
for dir in policies/*/; do
  examples+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)")
done
cargo test --release "${examples[@]}"
# The SDK packages on its own (its WIT contract inside the crate).
cargo package --quiet -p wisp-policy --allow-dirty
cargo fmt --all -- --check
cargo clippy --release -p wisp --all-targets -- -D warnings
cargo clippy --release --target wasm32-wasip2 "${wasm[@]}" -- -D warnings
