#!/usr/bin/env bash
# wisp cluster example: nats-server with JetStream on 127.0.0.1:4222, the
# quickstart's three carriers (sipp UAS on 5071-5073), three wisp nodes
# (a, b, c on udp:127.0.0.1:5060-5062, control on 5065-5067) and one caller
# per node at 1 call/s. Then, from another shell:
#   ./target/release/wisp ctl --url 127.0.0.1:5065 cluster.status
#   ./target/release/wisp ctl --url 127.0.0.1:5066 dispatcher.list
#   ./target/release/wisp ctl --url 127.0.0.1:5067 cluster.publish policy \
#       target/wasm32-wasip2/policy/primary_backup.wasm --wait
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/setup.sh
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || {
  echo "nats-server is missing: sudo apt-get install nats-server" >&2; exit 1; }
PATH="$PATH:/usr/sbin"
cargo build --release
./scripts/build-policies.sh >/dev/null

logs=$(mktemp -d /tmp/wisp-cluster.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "cluster example stopped (logs in $logs)"
}
trap cleanup EXIT INT TERM

nats-server -js -a 127.0.0.1 -p 4222 -sd "$logs/jetstream" >"$logs/nats.log" 2>&1 &
pids+=($!)
for port in 5071 5072 5073; do
  sipp -sf tests/sipp/uas.xml -i 127.0.0.1 -p "$port" -nostdin -timeout 1800s \
    >"$logs/carrier-$port.log" 2>&1 &
  pids+=($!)
done
for n in a b c; do
  ./target/release/wisp run -c "examples/cluster/$n.toml" 2>"$logs/wisp-$n.log" &
  pids+=($!)
done
sleep 2
for port in 5060 5061 5062; do
  sipp -sf tests/sipp/uac.xml -i 127.0.0.1 -p $((port + 20)) -s carrier "127.0.0.1:$port" \
    -r 1 -m 1800 -timeout 1800s -nostdin >"$logs/caller-$port.log" 2>&1 &
  pids+=($!)
done
echo "cluster running: logs in $logs (wisp-a.log, ...); Ctrl-C to stop"
tail -f "$logs/wisp-a.log"
