#!/bin/bash
# make chaos: a standing coordinator with --state serves one job of configs/pipelines/test-4k.yaml
# (three levels of tiny real models at --resolution 256) to 2 workers per level while a random
# worker is SIGKILLed and restarted every second or so, one worker is SIGSTOPped for 6 s, and the
# coordinator is SIGKILLed and restarted on the same --state (same endpoints) twice. A client
# (`strata submit --wait`) waits through all of it. Then every PNG must exist, byte-identical to
# a clean `strata render` of the same job, and the manifest must list each image once (it is
# compared whole). Prints, per coordinator restart, the images written before the kill that were
# written again and the time until the next image was written after the restart.
#
# usage: tests/chaos/chaos.sh BIN DIR [COUNT [RESOLUTION [RESTARTS]]]  (defaults 200 256 2)
# The test suite runs a short variant (farm_chaos_short: 24 images at 64, one restart).
set -u
BIN=$(readlink -f "$1"); DIR=$(realpath -m "$2"); COUNT=${3:-200}; RES=${4:-256}; RESTARTS=${5:-2}
PIPE=configs/pipelines/test-4k.yaml
LIMIT_S=${CHAOS_LIMIT_S:-7200}
KILL_S=${CHAOS_KILL_S:-1} # seconds between worker SIGKILLs
. "$(dirname "$0")/../mpi/lib.sh"
rm -rf "$DIR" && mkdir -p "$DIR" || exit 1
# its own copy of the binary: a rebuild during the run (it lasts long) must not change it
cp "$BIN" "$DIR/strata" && BIN=$DIR/strata || exit 1
LOG=$DIR/coordinator.log
FARM=$DIR/out/chaos
START=$(date +%s)
RANDOM=7 # the chaos is random, but the same each run

fail() { echo "chaos: FAIL: $*" >&2; cleanup; exit 1; }
late() { [ $(( $(date +%s) - START )) -lt "$LIMIT_S" ] || fail "past ${LIMIT_S} s"; }
pngs() { ls "$FARM" 2>/dev/null | grep -c '^[0-9]*\.png$'; }

# the clean reference, rendered alone (CHAOS_REF=DIR: one rendered before, DIR/chaos, reused)
if [ -n "${CHAOS_REF:-}" ]; then
  mkdir -p "$DIR/ref" && cp -r "$CHAOS_REF/chaos" "$DIR/ref/" || exit 1
else
  "$BIN" render --pipeline $PIPE --resolution "$RES" --count "$COUNT" --seed 7 --name chaos \
    --out "$DIR/ref" --workers l16=2,l64=2,l256=2 --fresh 2>"$DIR/ref.log" ||
    { echo "chaos: the clean render failed (see $DIR/ref.log)" >&2; exit 1; }
fi

LEVELS=(l16 l64 l256)
[ "$RES" -le 64 ] && LEVELS=(l16 l64)
WEP="tcp://127.0.0.1:*"; CEP="tcp://127.0.0.1:*"; COORD=0; WAITER=0
declare -a WPID WLEVEL
cleanup() {
  [ "$COORD" -gt 0 ] && stop_pids "$COORD"
  for p in "${WPID[@]}"; do kill -CONT "$p" 2>/dev/null; done
  stop_pids "${WPID[@]}" ${WAITER:+$WAITER} 2>/dev/null
}

# coord_start: on the endpoints of the first start (ports chosen then)
coord_start() {
  : > "$DIR/coord.out"
  # --max-losses: the deaths here are the test's own; an l256 task (seconds) meets a SIGKILL of
  # its worker often, and 3 in a row (the default's limit) would fail its image
  "$BIN" coordinator --pipeline $PIPE --workers "$WEP" --clients "$CEP" --state "$DIR/state" \
    --max-losses 100 \
    --out-root / >"$DIR/coord.out" 2>>"$LOG" &
  COORD=$!
  for _ in $(seq 600); do grep -q '^strata coordinator:' "$DIR/coord.out" && break; sleep 0.05; done
  line=$(grep '^strata coordinator:' "$DIR/coord.out") || fail "the coordinator did not start"
  WEP=$(echo "$line" | sed -n 's/.*workers=\([^ ]*\).*/\1/p')
  CEP=$(echo "$line" | sed -n 's/.*clients=\([^ ]*\).*/\1/p')
}
inodes() { (cd "$FARM" && stat -c '%i %n' [0-9]*.png 2>/dev/null | grep -v '\.l' | sort -k2); }
worker_start() { # worker_start INDEX LEVEL
  "$BIN" worker --level "$2" --connect "$WEP" --pipeline "$PIPE" 2>>"$DIR/workers.log" &
  WPID[$1]=$!; WLEVEL[$1]=$2
}

coord_start
n=0
for l in "${LEVELS[@]}"; do worker_start $n "$l"; worker_start $((n + 1)) "$l"; n=$((n + 2)); done
cat > "$DIR/job.yaml" <<EOT
pipeline: $PIPE
name: chaos
count: $COUNT
seed: 7
resolution: $RES
out: $DIR/out
EOT
"$BIN" submit "$DIR/job.yaml" --coordinator "$CEP" >/dev/null || fail "submit"
"$BIN" submit "$DIR/job.yaml" --wait --coordinator "$CEP" >/dev/null 2>"$DIR/waiter.log" &
WAITER=$!

# the chaos, until the waiting client is done: every 0.1 s the coordinator may be hit (at
# 1/3 and 2/3 of the images), every KILL_S a worker
restarts=0; stopped=-1; stop_at=0; next_kill=0; step=0
while kill -0 "$WAITER" 2>/dev/null; do
  late
  sleep 0.1
  step=$((step + 1))
  if [ "$step" -ge "$next_kill" ]; then
    next_kill=$((step + KILL_S * 10))
    w=$((RANDOM % ${#WPID[@]}))
    if [ "$stopped" -eq -1 ]; then
      kill -STOP "${WPID[$w]}"; stopped=$w; stop_at=$((step + 60))
      echo "chaos: worker ${WLEVEL[$w]} SIGSTOPped for 6 s"
    elif [ "$w" -ne "$stopped" ]; then
      kill -KILL "${WPID[$w]}" 2>/dev/null; wait "${WPID[$w]}" 2>/dev/null
      worker_start "$w" "${WLEVEL[$w]}"
    fi
  fi
  if [ "$stopped" -ge 0 ] && [ "$step" -ge "$stop_at" ]; then
    kill -CONT "${WPID[$stopped]}"; stopped=-2
  fi
  done_now=$(pngs)
  if [ "$restarts" -lt "$RESTARTS" ] &&
    [ "$done_now" -ge $(( COUNT * (restarts + 1) / (RESTARTS + 1) )) ] && [ "$done_now" -lt "$COUNT" ]; then
    kill -KILL "$COORD"; wait "$COORD" 2>/dev/null
    inodes > "$DIR/before.$restarts"
    had=$(wc -l < "$DIR/before.$restarts")
    t0=$(date +%s.%N)
    coord_start
    restarts=$((restarts + 1))
    while [ "$(pngs)" -le "$had" ] && kill -0 "$WAITER" 2>/dev/null; do late; sleep 0.05; done
    t1=$(date +%s.%N)
    echo "$had $(awk "BEGIN { print $t1 - $t0 }")" > "$DIR/restart.$((restarts - 1))"
    echo "chaos: coordinator SIGKILLed at $had images and restarted"
  fi
done
wait "$WAITER"; rc=$?; WAITER=
[ "$rc" -eq 0 ] || fail "submit --wait exited $rc: $(tail -3 "$DIR/waiter.log")"
[ "$restarts" -eq "$RESTARTS" ] || fail "only $restarts coordinator restarts happened"

# every PNG and the manifest byte-identical to the clean render
for i in $(seq 0 $((COUNT - 1))); do
  f=$(printf '%06d.png' "$i")
  cmp -s "$DIR/ref/chaos/$f" "$FARM/$f" || fail "$f differs from the clean render"
done
cmp -s "$DIR/ref/chaos/manifest.jsonl" "$FARM/manifest.jsonl" || fail "the manifest differs"
[ "$(grep -c '"status":"ok"' "$FARM/manifest.jsonl")" -eq "$COUNT" ] || fail "manifest count"
inodes > "$DIR/after"
for r in $(seq 0 $((RESTARTS - 1))); do
  read -r had secs < "$DIR/restart.$r"
  redone=$(comm -23 <(sort "$DIR/before.$r") <(sort "$DIR/after") | wc -l)
  printf 'chaos: restart %d: %d images written before the kill, %d written again; next image %.1f s after the restart\n' \
    $((r + 1)) "$had" "$redone" "$secs"
done
echo "chaos: ok: $COUNT images at $RES, byte-identical to the clean render, manifest complete ($(( $(date +%s) - START )) s)"
cleanup
exit 0
