#!/usr/bin/env bash
# Build every policy crate (policies/*, tests/policies/*) as a wasm32-wasip2
# component into target/wasm32-wasip2/policy/<name>.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=()
for dir in policies/*/ tests/policies/*/; do
  [ -f "$dir/Cargo.toml" ] || continue
  packages+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)")
done
cargo build --quiet --profile policy --target wasm32-wasip2 "${packages[@]}"
ls target/wasm32-wasip2/policy/*.wasm
