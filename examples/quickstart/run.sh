#!/usr/bin/env bash
# wisp quickstart: set up, build wisp and the primary-backup policy, then run
#   - three simulated carriers (sipp UAS): set 1 = 127.0.0.1:5071, :5072,
#     set 2 (backup) = 127.0.0.1:5073, answering OPTIONS and calls;
#   - wisp on udp:127.0.0.1:5060 and tcp:127.0.0.1:5060 with
#     examples/quickstart/wisp.toml;
#   - a caller (sipp UAC) placing 2 calls per second through wisp
#     (at most 3600 calls / 30 minutes).
# wisp prints one line per call: Call-ID, carrier, final code.
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/setup.sh
cargo build --release
./scripts/build-policies.sh >/dev/null

logs=$(mktemp -d /tmp/wisp-quickstart.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "quickstart stopped (sipp logs in $logs)"
}
trap cleanup EXIT INT TERM

for port in 5071 5072 5073; do
  sipp -sf tests/sipp/uas.xml -i 127.0.0.1 -p "$port" -nostdin -timeout 1800s \
    >"$logs/carrier-$port.log" 2>&1 &
  pids+=($!)
done

./target/release/wisp run -c examples/quickstart/wisp.toml &
pids+=($!)
sleep 1

sipp -sf tests/sipp/uac.xml -i 127.0.0.1 -p 5080 -s carrier 127.0.0.1:5060 \
  -r 2 -m 3600 -timeout 1800s -nostdin >"$logs/caller.log" 2>&1 &
pids+=($!)

echo "quickstart running: calls flow every 500 ms; Ctrl-C to stop"
wait "${pids[3]}"
