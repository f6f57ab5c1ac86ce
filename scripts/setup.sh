#!/usr/bin/env bash
# Install what wisp needs to build and run: the wasm32-wasip2 target (for
# policies) and, as root on Debian/Ubuntu, sipp (package sip-tester; the
# quickstart's caller and carriers). With --test, also what the tests use:
# the tools the torture-corpus replay uses to make a loopback-only network
# namespace (`unshare` from util-linux, `ip` from iproute2), the openssl
# CLI (the TLS tests make their certificates with it and use s_client),
# Node.js with npm for JsSIP, the WebRTC SIP stack the WebSocket tests run
# (`npm ci` in tests/jssip, versions pinned by its package-lock.json),
# Kamailio 5.6 with its TLS module (an independent TLS peer), socat (it
# carries Debian's TLS-less sipp over TLS), the PostgreSQL server (the
# tests start their own cluster in a temporary folder), dnsmasq (a
# local DNS server for the SRV tests), and nats-server with JetStream (the
# cluster tests start their own engine).
set -euo pipefail
cd "$(dirname "$0")/.."
tests=false
[ "${1:-}" = "--test" ] && tests=true

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target (policies are built for it)"
  rustup target add wasm32-wasip2
fi

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
if $tests; then
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
command -v socat >/dev/null 2>&1 || missing+=(socat)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v dnsmasq >/dev/null 2>&1 || missing+=(dnsmasq-base)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
[ -n "$(find /usr/lib -path '*kamailio/modules/tls.so' 2>/dev/null | head -1)" ] || missing+=(kamailio-tls-modules)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

if $tests && [ ! -d tests/jssip/node_modules/jssip ]; then
  echo "setup: installing JsSIP for the WebSocket tests (npm ci in tests/jssip)"
  (cd tests/jssip && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
