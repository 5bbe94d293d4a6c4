#!/bin/bash
# A standing coordinator whose fine pool is one 2-rank group across the test bed's nodes, and a
# rank of that group killed mid-task: run through the hook
#
#   tests/mpi/netns.sh --timeout 400 -- tests/mpi/netns_farm_kill.sh [build/strata]
#
# A coordinator stands on the bridge address; test-4k.yaml's l16, l64 and l256 workers run on
# this host and l1024 (441 tiles of 64) is one mpirun of 2 ranks, one per node. A 1-image job at
# 1024 goes through them with `strata submit --wait`. Once the coordinator's progress says the
# l1024 task is running and rank 1 (found by OMPI_COMM_WORLD_RANK in its environment, in a
# node's namespace) is computing, rank 1 gets SIGKILL. mpirun then ends the whole group; this
# script restarts it as a supervisor would (strata render does the same for its pools). The
# coordinator must re-queue the task and the new group must finish it: the PNG and manifest must
# be byte-identical to `strata render`'s of the same job, the manifest must list the image
# once, and the progress lines must name l1024's ranks (ranks=2).
# Exits 0 and prints "netns_farm_kill: ok ..." or says what failed and exits 1. Every wait is
# bounded; everything it started is stopped on exit.
set -u
# shellcheck source=tests/mpi/lib.sh
. "$(dirname "$0")/lib.sh"
strata=${1:-build/strata}
pipeline=configs/pipelines/test-4k.yaml
if [ -z "${STRATA_NETNS_BRIDGE:-}" ]; then
  echo "netns_farm_kill: run through the bed: tests/mpi/netns.sh -- $0" >&2
  exit 2
fi
command -v mpirun >/dev/null || { echo "skip: no mpirun (OpenMPI: make deps)"; exit 77; }
b=$STRATA_NETNS_BRIDGE
dir=$(mktemp -d /tmp/strata-netns-kill.XXXXXX)
coord=
pool=
local_pools=
submit=

# shellcheck disable=SC2317 # called by the EXIT trap
stop() {
  local rc=$?
  trap - EXIT INT TERM
  # shellcheck disable=SC2086 # empty ones drop out
  stop_pids $submit $coord $pool $local_pools
  rm -rf "$dir"
  exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() {
  echo "netns_farm_kill: FAILED: $*" >&2
  [ -f "$dir/coord.log" ] && sed 's/^/  coordinator: /' "$dir/coord.log" | tail -20 >&2
  [ -f "$dir/pool.log" ] && sed 's/^/  pool: /' "$dir/pool.log" | tail -10 >&2
  exit 1
}

pin_kernels "$strata"

bed_coordinator "$strata" "$pipeline" "$dir" || fail "no coordinator"

# The l1024 pool: one rank group of 2 ranks, one per node (what a supervisor keeps running).
start_pool() {
  # shellcheck disable=SC2086 # the bed's arguments are split on purpose
  mpirun $STRATA_NETNS_MPIRUN_ARGS --map-by node -x OPENBLAS_CORETYPE \
    -np 2 "$strata" worker --level l1024 --connect "tcp://$b:5555" --pipeline "$pipeline" >>"$dir/pool.log" 2>&1 &
  pool=$!
}
start_pool
for l in l16 l64 l256; do
  "$strata" worker --level "$l" --connect "tcp://$b:5555" --pipeline "$pipeline" >>"$dir/local.log" 2>&1 &
  local_pools="$local_pools $!"
done

cat >"$dir/job.yaml" <<EOF
pipeline: $pipeline
name: j
count: 1
seed: 3
resolution: 1024
out: $dir/farm/
EOF
timeout 300 "$strata" submit "$dir/job.yaml" --wait --coordinator "tcp://$b:5556" \
  >"$dir/submit.out" 2>"$dir/submit.log" &
submit=$!

# The signal that the l1024 task is in flight: the coordinator's progress (submit --wait prints
# every PROGRESS) says it runs.
for _ in $(seq 2400); do
  grep -q "^  l1024 done=0 running=1 " "$dir/submit.log" && break
  kill -0 "$submit" 2>/dev/null || { cat "$dir/submit.log" >&2; fail "the job ended before l1024 ran"; }
  sleep 0.1
done
grep -q "^  l1024 done=0 running=1 " "$dir/submit.log" || fail "l1024 did not start in 240 s"

# Rank 1 of the group: in one of the nodes' namespaces, the l1024 worker whose environment says
# OMPI_COMM_WORLD_RANK=1.
rank1=
# shellcheck disable=SC2013 # namespace names hold no spaces
for ns in $(awk '{print $1}' "$STRATA_NETNS_HOSTFILE"); do
  for p in $(ip netns pids "$ns" 2>/dev/null); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "worker --level l1024 " || continue
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' &&
      rank1=$p && rank1_ns=$ns
  done
done
[ -n "$rank1" ] || fail "no rank 1 of the l1024 group in the nodes' namespaces"
# Mid-task: its CPU time grows by 20 ticks after the task started (an idle rank costs ~0).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }
t0=$(ticks "$rank1")
for _ in $(seq 600); do
  t=$(ticks "$rank1")
  [ "${t:-0}" -gt $((${t0:-0} + 20)) ] && break
  sleep 0.1
done
[ "${t:-0}" -gt $((${t0:-0} + 20)) ] || fail "rank 1 (pid $rank1) did not compute in 60 s"
grep -q "^  l1024 done=0 running=1 " <(tail -5 "$dir/submit.log") || fail "l1024 was no longer running when rank 1 was to be killed"
kill -KILL "$rank1" || fail "could not kill rank 1 (pid $rank1)"
echo "netns_farm_kill: killed l1024 rank 1 (pid $rank1 in $rank1_ns) after $((t - t0)) ticks of the task"

# The supervisor: mpirun ends the group when a rank dies; start it again.
for _ in $(seq 300); do kill -0 "$pool" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pool" 2>/dev/null && fail "mpirun did not end within 30 s of its rank 1 dying"
wait "$pool"
echo "netns_farm_kill: mpirun exited $? after the rank died; starting the l1024 group again"
start_pool

wait "$submit"
rc=$?
submit=
[ "$rc" = 0 ] || { cat "$dir/submit.log" >&2; fail "the job did not finish after the restart (status $rc)"; }
requeued=$(grep -o "task [0-9]* attempt 2 re-queued.*" "$dir/coord.log" | head -1)
[ -n "$requeued" ] || fail "the coordinator did not re-queue the task"
echo "netns_farm_kill: coordinator: $requeued"
grep -q "attempt 2 ([^ ]* #0 l1024) done by worker" "$dir/coord.log" ||
  fail "the l1024 task's second attempt was not done by the new group"
grep -q "^  l1024 done=.* ranks=2$" "$dir/submit.log" || fail "no progress line of l1024 names its 2 ranks"

timeout 300 "$strata" render --pipeline "$pipeline" --name j --count 1 --seed 3 \
  --resolution 1024 --out "$dir/render" >"$dir/render.log" 2>&1 ||
  { cat "$dir/render.log" >&2; fail "strata render failed"; }
n=0
for f in "$dir"/render/j/*; do
  case "$f" in */timings.jsonl) continue ;; esac # compute times differ from run to run
  cmp -s "$f" "$dir/farm/j/$(basename "$f")" || fail "$(basename "$f") differs from strata render's"
  n=$((n + 1))
done
[ "$n" -ge 2 ] || fail "strata render wrote $n files, want the PNG and the manifest"
[ "$(grep -c '"index":0,' "$dir/farm/j/manifest.jsonl")" = 1 ] || fail "the manifest does not list image 0 once"
echo "netns_farm_kill: ok: rank 1 of the 2-node l1024 group killed mid-task, the group restarted," \
  "the task redone; $n files byte-identical to strata render's, image 0 listed once"
