#!/bin/sh
# CPU time of an idle rank group: a coordinator of PIPELINE and LEVEL's worker as `mpirun -np
# RANKS`; once the level is loaded (no task comes: nothing is submitted), each rank's user +
# system time over SECONDS is printed as "rank PID TICKS" (TICKS in 1/CLK_TCK s), then all stop.
# usage: idle_cpu.sh STRATA PIPELINE LEVEL RANKS SECONDS DIR
S=$1 PIPE=$2 LEVEL=$3 RANKS=$4 SECS=$5 DIR=$6
"$S" coordinator --pipeline "$PIPE" --workers 'tcp://127.0.0.1:*' --clients 'tcp://127.0.0.1:*' \
  >"$DIR/coord.out" 2>"$DIR/coord.err" &
C=$!
# the coordinator's SHUTDOWN ends the ranks; mpirun may linger after them until told to go
stop() {
  kill "$C" 2>/dev/null
  wait "$C"
  for i in $(seq 50); do [ -z "$(pgrep -P "$M" 2>/dev/null | while read -r p; do
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] || echo "$p"; done)" ] && break
    sleep 0.1; done
  kill "$M" 2>/dev/null
  wait
}
for i in $(seq 100); do grep -q workers= "$DIR/coord.out" && break; sleep 0.1; done
EP=$(sed -n 's/.*workers=\([^ ]*\).*/\1/p' "$DIR/coord.out")
[ -n "$EP" ] || { echo "the coordinator did not start" >&2; cat "$DIR/coord.err" >&2; stop; exit 1; }
ROOT=
[ "$(id -u)" = 0 ] && ROOT=--allow-run-as-root
mpirun $ROOT --oversubscribe --bind-to none --stdin none -np "$RANKS" "$S" worker --level "$LEVEL" \
  --connect "$EP" --pipeline "$PIPE" --verbose >"$DIR/worker.out" 2>"$DIR/worker.err" &
M=$!
for i in $(seq 300); do grep -q 'level loaded' "$DIR/worker.err" && break; sleep 0.1; done
grep -q 'level loaded' "$DIR/worker.err" || { echo "the group did not load" >&2; cat "$DIR/worker.err" >&2; stop; exit 1; }
sleep 0.5 # the other ranks' load has ended: they agreed on it with rank 0
P=$(pgrep -P "$M")
for p in $P; do echo "$p $(awk '{print $14 + $15}' "/proc/$p/stat")"; done >"$DIR/t0"
sleep "$SECS"
for p in $P; do echo "$p $(awk '{print $14 + $15}' "/proc/$p/stat")"; done >"$DIR/t1"
join "$DIR/t0" "$DIR/t1" | awk '{print "rank", $1, $3 - $2}'
echo "clk_tck $(getconf CLK_TCK)"
stop
