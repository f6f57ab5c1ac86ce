#!/usr/bin/env bash
# Install what wisp needs to build and test: the wasm32-wasip2 target (for
# policies) and, as root on Debian/Ubuntu, sipp (package sip-tester).
set -euo pipefail

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target (policies are built for it)"
  rustup target add wasm32-wasip2
fi

if ! command -v sipp >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing sipp (apt package sip-tester)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null
  else
    echo "setup: sipp is missing; install it with: sudo apt-get install sip-tester" >&2
    exit 1
  fi
fi
