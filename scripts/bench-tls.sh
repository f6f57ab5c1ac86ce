#!/usr/bin/env bash
# Calls over TLS on both sides through wisp, against the same calls over TCP.
# Debian's sipp has no TLS, so socat (OpenSSL) carries sipp's TCP over TLS:
#   sipp caller -TCP-> socat -TLS-> wisp tls:127.0.0.1:5161 -TLS-> socat
#   fronts 5271/5272 -TCP-> sipp carriers 5171/5172 (set 1, round-robin).
# MODE=tcp runs the same topology with plain TCP relays in socat's place
# (the same batching of messages into reads and writes, no TLS); MODE=direct
# connects sipp straight to wisp over TCP. Prints sipp's outcome and wisp's
# CPU use (socat's is not counted). HANDSHAKES=1 also
# measures new TLS handshakes/s against wisp with `openssl s_time`.
# Loopback only; bounded by a call count and a timeout.
#   MODE=tls RATE=500 SECONDS_OF_LOAD=15 ./scripts/bench-tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${MODE:-tls}
RATE=${RATE:-500}
SECS=${SECONDS_OF_LOAD:-15}
CALLS=$((RATE * SECS))
OUT=$(mktemp -d /tmp/wisp-bench-tls.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
bg() { setsid "$@" & pids+=($!); }

# A test CA and one certificate for 127.0.0.1 (server and client use).
(
  cd "$OUT"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >ext.cnf
  openssl req "${ec[@]}" -keyout tls.key -out tls.csr -subj /CN=127.0.0.1 2>/dev/null
  openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 2 -extfile ext.cnf 2>/dev/null
)
tls_opts="cert=$OUT/tls.pem,key=$OUT/tls.key,cafile=$OUT/ca.pem"

for port in 5171 5172; do
  bg sipp -sf tests/sipp/uas.xml -i 127.0.0.1 -p "$port" -t t1 -nostdin -timeout $((SECS + 60))s \
    -max_socket 4096 >"$OUT/uas-$port.log" 2>&1
done
if [ "$MODE" = tls ]; then
  for port in 5171 5172; do
    bg socat "OPENSSL-LISTEN:$((port + 100)),bind=127.0.0.1,reuseaddr,fork,$tls_opts,verify=0" "TCP:127.0.0.1:$port"
  done
  printf '1 sip:127.0.0.1:5271;transport=tls\n1 sip:127.0.0.1:5272;transport=tls\n' >"$OUT/dispatcher.list"
  bg socat "TCP-LISTEN:5260,bind=127.0.0.1,reuseaddr,fork" "OPENSSL:127.0.0.1:5161,$tls_opts,verify=1"
  entry=5260
elif [ "$MODE" = tcp ]; then
  for port in 5171 5172; do
    bg socat "TCP-LISTEN:$((port + 100)),bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$port"
  done
  printf '1 sip:127.0.0.1:5271;transport=tcp\n1 sip:127.0.0.1:5272;transport=tcp\n' >"$OUT/dispatcher.list"
  bg socat "TCP-LISTEN:5260,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:5160"
  entry=5260
else
  printf '1 sip:127.0.0.1:5171;transport=tcp\n1 sip:127.0.0.1:5172;transport=tcp\n' >"$OUT/dispatcher.list"
  entry=5160
fi
cat >"$OUT/wisp.toml" <<TOML
[sip]
listen = ["udp:127.0.0.1:5160", "tcp:127.0.0.1:5160", "tls:127.0.0.1:5161"]
[dispatcher]
list_file = "dispatcher.list"
[policy]
file = "$PWD/target/wasm32-wasip2/policy/primary_backup.wasm"
[control]
listen = "127.0.0.1:0"
[log]
level = "warn"
[tls]
certificate = "$OUT/tls.pem"
private_key = "$OUT/tls.key"
ca = "$OUT/ca.pem"
TOML
./target/release/wisp run -c "$OUT/wisp.toml" 2>"$OUT/wisp.log" &
wisp=$!
pids+=("$wisp")
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$wisp/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); s0=$(date +%s.%N)
sipp -sf tests/sipp/uac.xml -i 127.0.0.1 -p 5180 -t t1 -s service "127.0.0.1:$entry" \
  -m "$CALLS" -r "$RATE" -l $((RATE * 4)) -nostdin -timeout $((SECS + 60))s >"$OUT/uac.log" 2>&1 || true
t1=$(ticks); s1=$(date +%s.%N)
echo "mode: $MODE"
grep -E "Successful call|Failed call" "$OUT/uac.log" | head -2
cpu=$(echo "scale=1; ($t1 - $t0) * 100 / $hz / ($s1 - $s0)" | bc)
per_call=$(echo "scale=1; ($t1 - $t0) * 1000000 / $hz / $CALLS" | bc)
echo "wisp cpu: $cpu % of one core over $(echo "scale=1; $s1 - $s0" | bc) s ($CALLS calls at $RATE cps requested), $per_call us per call"
if [ "${HANDSHAKES:-0}" = 1 ]; then
  t0=$(ticks)
  openssl s_time -connect 127.0.0.1:5161 -new -time 10 -CAfile "$OUT/ca.pem" 2>/dev/null | grep -E "connections in|connections/user" || true
  t1=$(ticks)
  echo "wisp cpu during s_time: $(echo "scale=2; ($t1 - $t0) / $hz" | bc) s"
fi
echo "logs: $OUT"
