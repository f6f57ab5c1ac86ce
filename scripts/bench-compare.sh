#!/usr/bin/env bash
# wisp and Kamailio side by side, in one run, through the team's sipp harness
# (shared/bench/sip-bench.sh): CPU per call at 1,000 cps, the uncapped ramp,
# and the overload curve with each proxy capped at 25 % of one core (cgroup
# CPU quota) from 0.5x to 4x the capped knee. Writes a table into
# docs/benchmarks.md (between the bench-compare markers) and a plot of
# goodput against offered load, docs/bench-overload.svg.
#
# A benchmark, not a test: it takes ~15 minutes on 2 cores, needs root
# (cgroups, apt) and a quiet machine. Knobs (environment):
#   BENCH_DIR   the harness (default ../shared/bench beside this repository)
#   SECTIONS    "cpu ramp capped split" (default all four; split = wisp's user
#               and kernel CPU per call at 1, 3 and 6 kcps)
#   RAMP_RATES  uncapped ramp steps (default "3000 4000 5000 6000 7000 8000")
#   STEP_S      seconds per step or curve point (default 15)
#   CAP_PCT     the CPU cap, percent of one core (default 25)
#   CAP_KNEE    the capped knee to scale the curve by (default 1800 cps: wisp's,
#               measured 2026-12-01; the curve is offered to both proxies)
#   CURVE       multiples of the knee (default "0.5 1 1.5 2 4")
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
SECTIONS=${SECTIONS:-"cpu ramp capped split"}
RAMP_RATES=${RAMP_RATES:-"3000 4000 5000 6000 7000 8000"}
STEP_S=${STEP_S:-15}
CAP_PCT=${CAP_PCT:-25}
CAP_KNEE=${CAP_KNEE:-1800}
CURVE=${CURVE:-"0.5 1 1.5 2 4"}
OUT=${OUT:-/tmp/wisp-bench-compare/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

[ -x "$BENCH_DIR/sip-bench.sh" ] || { echo "bench-compare: no harness at $BENCH_DIR (set BENCH_DIR)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench-compare: run as root (cgroups, packages)" >&2; exit 1; }
missing=()
command -v sipp >/dev/null || missing+=(sip-tester)
command -v kamailio >/dev/null || missing+=(kamailio)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench-compare: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
./scripts/build-policies.sh >/dev/null
cargo build --release -p wisp --quiet
WISP="$ROOT/target/release/wisp run -c $ROOT/examples/bench/wisp.toml"

# The CPU cap: a cgroup (v2 cpu.max or v1 cfs quota) the wrapped SUT joins
# (run without SCHED_RR: real-time tasks cannot join a CFS-capped group).
CG=""
if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
  CG=/sys/fs/cgroup/wisp-bench; mkdir -p "$CG"
  echo "$(( CAP_PCT * 1000 )) 100000" > "$CG/cpu.max"
elif [ -d /sys/fs/cgroup/cpu ]; then
  CG=/sys/fs/cgroup/cpu/wisp-bench; mkdir -p "$CG"
  echo 100000 > "$CG/cpu.cfs_period_us"; echo $(( CAP_PCT * 1000 )) > "$CG/cpu.cfs_quota_us"
fi
# Wrappers that join the cgroup, then become the proxy.
printf '#!/bin/sh\necho $$ > %s/cgroup.procs\nexec "$@"\n' "$CG" > "$OUT/capped.sh"
printf '#!/bin/sh\necho $$ > %s/cgroup.procs\nexec kamailio "$@"\n' "$CG" > "$OUT/capped-kamailio.sh"
chmod +x "$OUT/capped.sh" "$OUT/capped-kamailio.sh"

# One harness run; prints the result.json path.
harness() {   # harness NAME SUT_KIND MODE [VAR=VALUE...]
  local name=$1 kind=$2 mode=$3; shift 3
  local dir="$OUT/$name"
  if [ "$kind" = kamailio ]; then
    env "$@" SUT=kamailio OUT="$dir" "$BENCH_DIR/sip-bench.sh" "$mode" > "$dir.log" 2>&1 || true
  else
    env "$@" SUT=cmd OUT="$dir" "$BENCH_DIR/sip-bench.sh" "$mode" > "$dir.log" 2>&1 || true
  fi
  echo "$dir"
}

# A wrapper that reports the user and system CPU time of the proxy it runs
# (bash's `times`, children's line) into $TIMES_FILE when it ends.
cat > "$OUT/timed.sh" <<'WRAP'
#!/bin/bash
"$@" &
child=$!
trap 'kill -TERM $child' TERM INT
wait $child; wait $child
times > "$TIMES_FILE.all"   # not in a pipe: a subshell would report its own
tail -1 "$TIMES_FILE.all" > "$TIMES_FILE"
WRAP
chmod +x "$OUT/timed.sh"

for s in $SECTIONS; do
  case $s in
  split)
    for rate in 1000 3000 6000; do
      harness "split-wisp-$rate" cmd run SUT_CMD="$OUT/timed.sh $WISP" TIMES_FILE="$OUT/split-wisp-$rate.times" \
        RATE="$rate" BENCH_RT=10 >/dev/null
    done ;;
  cpu)
    harness cpu-wisp cmd run SUT_CMD="$WISP" RATE=1000 REPEAT=3 BENCH_RT=10 >/dev/null
    harness cpu-kamailio kamailio run RATE=1000 REPEAT=3 BENCH_RT=10 >/dev/null ;;
  ramp)
    harness ramp-wisp cmd ramp SUT_CMD="$WISP" RATES="$RAMP_RATES" STEP_S="$STEP_S" REFINE=1 BENCH_RT=10 >/dev/null
    harness ramp-kamailio kamailio ramp RATES="1500 2000 2500 3000 3500 4000" STEP_S="$STEP_S" REFINE=1 BENCH_RT=10 >/dev/null ;;
  capped)
    [ -n "$CG" ] || { echo "bench-compare: no cgroup CPU controller: capped curve skipped" >&2; continue; }
    for m in $CURVE; do
      rate=$(python3 -c "print(int($CAP_KNEE * $m))")
      harness "capped-wisp-$rate" cmd run SUT_CMD="$OUT/capped.sh $WISP" RATE="$rate" CALLS=$(( rate * STEP_S )) BENCH_RT=0 >/dev/null
      harness "capped-kamailio-$rate" kamailio run KAM_BIN="$OUT/capped-kamailio.sh" \
        RATE="$rate" CALLS=$(( rate * STEP_S )) BENCH_RT=0 >/dev/null
    done ;;
  esac
done

python3 "$ROOT/scripts/bench/report.py" "$OUT" "$CAP_PCT" "$CAP_KNEE" "$ROOT/docs/benchmarks.md" "$ROOT/docs/bench-overload.svg"
echo "bench-compare: results in $OUT; docs/benchmarks.md and docs/bench-overload.svg updated"
