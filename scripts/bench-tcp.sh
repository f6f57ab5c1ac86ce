#!/usr/bin/env bash
# Calls over TCP on both sides through wisp: a sipp caller over one TCP
# connection -> wisp (tcp:127.0.0.1:5160) -> two sipp carriers over TCP
# (set 1, round-robin). Prints sipp's outcome and wisp's CPU use.
# Loopback only; bounded by a call count and a timeout.
#   RATE=500 SECONDS_OF_LOAD=15 ./scripts/bench-tcp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-500}
SECS=${SECONDS_OF_LOAD:-15}
CALLS=$((RATE * SECS))
OUT=$(mktemp -d /tmp/wisp-bench-tcp.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

for port in 5171 5172; do
  sipp -sf tests/sipp/uas.xml -i 127.0.0.1 -p "$port" -t t1 -nostdin -timeout $((SECS + 60))s \
    -max_socket 4096 >"$OUT/uas-$port.log" 2>&1 &
  pids+=($!)
done
printf '1 sip:127.0.0.1:5171;transport=tcp\n1 sip:127.0.0.1:5172;transport=tcp\n' >"$OUT/dispatcher.list"
cat >"$OUT/wisp.toml" <<TOML
[sip]
listen = ["udp:127.0.0.1:5160", "tcp:127.0.0.1:5160"]
[dispatcher]
list_file = "dispatcher.list"
[policy]
file = "$PWD/target/wasm32-wasip2/policy/primary_backup.wasm"
[control]
listen = "127.0.0.1:0"
[log]
level = "warn"
TOML
./target/release/wisp run -c "$OUT/wisp.toml" 2>"$OUT/wisp.log" &
wisp=$!
pids+=("$wisp")
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$wisp/stat"; }
t0=$(ticks); s0=$(date +%s.%N)
sipp -sf tests/sipp/uac.xml -i 127.0.0.1 -p 5180 -t t1 -s service 127.0.0.1:5160 \
  -m "$CALLS" -r "$RATE" -l $((RATE * 4)) -nostdin -timeout $((SECS + 60))s >"$OUT/uac.log" 2>&1 || true
t1=$(ticks); s1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
grep -E "Successful call|Failed call" "$OUT/uac.log" | head -2
echo "wisp cpu: $(echo "scale=1; ($t1 - $t0) * 100 / $hz / ($s1 - $s0)" | bc) % of one core over $(echo "scale=1; $s1 - $s0" | bc) s ($CALLS calls at $RATE cps requested)"
echo "logs: $OUT"
