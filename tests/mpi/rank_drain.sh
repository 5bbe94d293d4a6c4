#!/bin/bash
# Drains a 2-rank group: a coordinator of PIPELINE, LEVEL's worker as `mpirun -np 2` (stub tasks
# of 3 s), one job; once the group holds a task, SIGTERM goes to every rank, as mpirun forwards
# it (not to mpirun itself: it SIGKILLs its ranks 1 s after forwarding, odls_base_sigkill_timeout).
# Rank 0 must drain (READY draining, the task finished and its RESULT taken, BYE), rank 1 must
# not die mid-task but stop when rank 0 says, and mpirun must exit 0.
# usage: rank_drain.sh STRATA PIPELINE LEVEL DIR; exit 0, or 1 with what went wrong on stderr.
S=$1 PIPE=$2 LEVEL=$3 DIR=$4
fail() {
  echo "rank_drain: $*" >&2
  for f in coord.log worker.err; do sed "s/^/  $f: /" "$DIR/$f" | tail -15 >&2; done
  kill "$M" "$C" 2>/dev/null
  wait 2>/dev/null
  exit 1
}
"$S" coordinator --pipeline "$PIPE" --workers 'tcp://127.0.0.1:*' --clients 'tcp://127.0.0.1:*' \
  --out-root "$DIR" --verbose >"$DIR/coord.out" 2>"$DIR/coord.log" &
C=$!
for _ in $(seq 100); do grep -q workers= "$DIR/coord.out" && break; sleep 0.1; done
WEP=$(sed -n 's/.*workers=\([^ ]*\) .*/\1/p' "$DIR/coord.out")
CEP=$(sed -n 's/.*clients=\([^ ]*\)$/\1/p' "$DIR/coord.out")
[ -n "$WEP" ] || fail "the coordinator did not start"
ROOT=
[ "$(id -u)" = 0 ] && ROOT=--allow-run-as-root
# under make asan: OpenMPI's own allocations left at exit are not ours (as cluster/render_ranks.c)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
  mpirun $ROOT --oversubscribe --bind-to none --stdin none -np 2 "$S" worker --level "$LEVEL" \
    --connect "$WEP" --stub-ms 3000 --verbose >"$DIR/worker.out" 2>"$DIR/worker.err" &
M=$!
printf 'pipeline: %s\nname: j\ncount: 2\nseed: 1\nresolution: 16\nout: %s\n' "$PIPE" "$DIR" \
  >"$DIR/job.yaml"
"$S" submit "$DIR/job.yaml" --coordinator "$CEP" >/dev/null 2>&1 || fail "submit failed"
for _ in $(seq 300); do grep -q -- "-> worker" "$DIR/coord.log" && break; sleep 0.1; done
grep -q -- "-> worker" "$DIR/coord.log" || fail "no task went to the group in 30 s"
ranks=$(pgrep -P "$M")
[ "$(echo "$ranks" | wc -w)" = 2 ] || fail "expected 2 ranks under mpirun, got: $ranks"
# shellcheck disable=SC2086 # one pid per word
kill -TERM $ranks
for _ in $(seq 300); do kill -0 "$M" 2>/dev/null || break; sleep 0.1; done
kill -0 "$M" 2>/dev/null && fail "the group did not end within 30 s of SIGTERM"
wait "$M"
rc=$?
kill "$C"
wait "$C"
[ $rc = 0 ] || fail "mpirun exit $rc"
log=$(sed -n '/draining: no more tasks/,$p' "$DIR/coord.log")
echo "$log" | grep -q "done by worker" || fail "no RESULT taken after the group drained"
echo "$log" | grep -q "said BYE after draining" || fail "no BYE after draining"
echo "$log" | grep -q -- "-> worker" && fail "a TASK went to the group after it drained"
grep -q "re-queued" "$DIR/coord.log" && fail "a task was re-queued"
exit 0
