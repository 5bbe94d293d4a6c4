#!/bin/bash
# The farm across the test bed's nodes, its refine level one MPI rank group spanning two nodes:
# run through the hook
#
#   tests/mpi/netns.sh --timeout 120 -- tests/mpi/netns_farm.sh [build/strata]
#
# A coordinator stands on the bridge address (STRATA_NETNS_BRIDGE); the tiny cascade's l16
# worker runs on this host, and one mpirun (the launch line of cluster/hostfile.example with the
# bed's hostfile) starts l32 as one rank group of 2 ranks, one per node, so the task's broadcast
# and the gathered model outputs cross the veth link over TCP. `strata submit --wait` runs a
# 2-image job through them, and the PNGs and manifest must be byte-identical to `strata
# render`'s of the same job on this host. The coordinator's log must show the group's rank 0
# joining from a node.
# Exits 0 and prints "netns_farm: ok ..." or says what failed and exits 1. Every wait is bounded;
# everything it started is stopped on exit.
set -u
# shellcheck source=tests/mpi/lib.sh
. "$(dirname "$0")/lib.sh"
strata=${1:-build/strata}
pipeline=configs/pipelines/test-tiny.yaml
if [ -z "${STRATA_NETNS_BRIDGE:-}" ]; then
  echo "netns_farm: run through the bed: tests/mpi/netns.sh -- $0" >&2
  exit 2
fi
b=$STRATA_NETNS_BRIDGE
dir=$(mktemp -d /tmp/strata-netns-farm.XXXXXX)
coord=
pool=
pool16=

# shellcheck disable=SC2317 # called by the EXIT trap
stop() {
  local rc=$?
  trap - EXIT INT TERM
  # shellcheck disable=SC2086 # empty ones drop out
  stop_pids $coord $pool $pool16
  rm -rf "$dir"
  exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() {
  echo "netns_farm: FAILED: $*" >&2
  [ -f "$dir/coord.log" ] && sed 's/^/  coordinator: /' "$dir/coord.log" | tail -20 >&2
  exit 1
}

pin_kernels "$strata"

bed_coordinator "$strata" "$pipeline" "$dir" || fail "no coordinator"

# shellcheck disable=SC2086 # the bed's arguments are split on purpose
mpirun $STRATA_NETNS_MPIRUN_ARGS --map-by node -x OPENBLAS_CORETYPE \
  -np 2 "$strata" worker --level l32 --connect "tcp://$b:5555" --pipeline "$pipeline" >"$dir/pool.log" 2>&1 &
pool=$!
"$strata" worker --level l16 --connect "tcp://$b:5555" --pipeline "$pipeline" >"$dir/pool16.log" 2>&1 &
pool16=$!

cat >"$dir/job.yaml" <<EOF
pipeline: $pipeline
name: netns
count: 2
seed: 7
resolution: 32
out: $dir/farm/
EOF
timeout 60 "$strata" submit "$dir/job.yaml" --wait --coordinator "tcp://$b:5556" >"$dir/submit.log" 2>&1 ||
  { cat "$dir/submit.log" "$dir/pool.log" >&2; fail "the job did not finish through the nodes"; }
timeout 60 "$strata" render --pipeline "$pipeline" --name netns --count 2 --seed 7 \
  --resolution 32 --out "$dir/render" >"$dir/render.log" 2>&1 ||
  { cat "$dir/render.log" >&2; fail "strata render failed"; }

n=0
for f in "$dir"/render/netns/*; do
  case "$f" in */timings.jsonl) continue ;; esac # compute times differ from run to run
  cmp -s "$f" "$dir/farm/netns/$(basename "$f")" || fail "$(basename "$f") differs from strata render's"
  n=$((n + 1))
done
[ "$n" -ge 3 ] || fail "strata render wrote $n files, want 2 PNGs and the manifest"
nodes=$(grep -o "joined from strata-nn[0-9]*-[0-9]*" "$dir/coord.log" | sort -u)
for w in $nodes; do [ "$w" = joined ] || [ "$w" = from ] || echo "netns_farm: a worker joined from $w"; done
[ "$(echo "$nodes" | grep -c .)" = 1 ] || fail "want the l32 rank group joining from a node"
echo "netns_farm: ok: coordinator on $b, l32 as one 2-rank group across 2 nodes, $n files byte-identical to strata render's"
