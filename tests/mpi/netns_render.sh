#!/bin/bash
# `strata render` with a rank group across the test bed's nodes: run through the hook
#
#   tests/mpi/netns.sh --timeout 400 -- tests/mpi/netns_render.sh [build/strata]
#
# test-4k.yaml at 1024 (l1024: 441 tiles of 64) is rendered on this host without --ranks, then
# with --ranks l1024=2 --bind BRIDGE --mpirun-args "$STRATA_NETNS_MPIRUN_ARGS --map-by node":
# render's coordinator takes workers on the bridge address, mpirun starts the l1024 group with
# one rank on each node (namespace), and rank 0 connects back across the link. Both ranks must
# be seen running in two different namespaces, the group must join the coordinator from a node,
# render's progress must say l1024 runs on ranks=2, and every file (PNG and manifest) must be byte-identical to the run without --ranks.
# Exits 0 and prints "netns_render: ok ..." or says what failed and exits 1. Every wait is
# bounded; everything it started is stopped on exit.
set -u
# shellcheck source=tests/mpi/lib.sh
. "$(dirname "$0")/lib.sh"
strata=${1:-build/strata}
pipeline=configs/pipelines/test-4k.yaml
if [ -z "${STRATA_NETNS_BRIDGE:-}" ]; then
  echo "netns_render: run through the bed: tests/mpi/netns.sh -- $0" >&2
  exit 2
fi
command -v mpirun >/dev/null || { echo "skip: no mpirun (OpenMPI: make deps)"; exit 77; }
b=$STRATA_NETNS_BRIDGE
dir=$(mktemp -d /tmp/strata-netns-render.XXXXXX)
render=

# shellcheck disable=SC2317 # called by the EXIT trap
stop() {
  local rc=$?
  trap - EXIT INT TERM
  # shellcheck disable=SC2086 # an empty one drops out
  stop_pids $render
  rm -rf "$dir"
  exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() {
  echo "netns_render: FAILED: $*" >&2
  [ -f "$dir/ranks.log" ] && tail -20 "$dir/ranks.log" | sed 's/^/  render: /' >&2
  exit 1
}

# Pinned kernels for every process, forwarded to the ranks by render (mpirun -x).
OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$("$strata" --version | sed -n 's/.*OpenBLAS kernels: \([A-Za-z0-9]*\).*/\1/p')}
export OPENBLAS_CORETYPE

timeout 300 "$strata" render --pipeline "$pipeline" --count 1 --resolution 1024 --name j \
  --out "$dir/plain" >"$dir/plain.log" 2>&1 || { cat "$dir/plain.log" >&2; fail "strata render without --ranks failed"; }

timeout 300 "$strata" render --pipeline "$pipeline" --count 1 --resolution 1024 --name j \
  --out "$dir/ranks" --ranks l1024=2 --bind "$b" --verbose \
  --mpirun-args "$STRATA_NETNS_MPIRUN_ARGS --map-by node" >"$dir/ranks.out" 2>"$dir/ranks.log" &
render=$!

# The nodes' namespaces (the hostfile's first column) that run a rank of the l1024 group: each
# rank is looked up in its namespace while the render runs.
nodes=$(awk '{print $1}' "$STRATA_NETNS_HOSTFILE")
seen=
while kill -0 "$render" 2>/dev/null; do
  for ns in $nodes; do
    case " $seen " in *" $ns "*) continue ;; esac
    for p in $(ip netns pids "$ns" 2>/dev/null); do
      tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "worker --level l1024 --connect tcp://$b:" || continue
      r=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
      [ -n "$r" ] && seen="$seen $ns" && echo "netns_render: l1024 rank $r (pid $p) runs in $ns"
    done
  done
  sleep 0.1
done
wait "$render"
rc=$?
render=
[ "$rc" = 0 ] || fail "strata render --ranks l1024=2 --bind $b exited $rc"
[ "$(echo "$seen" | wc -w)" = 2 ] || fail "want the 2 ranks in 2 different namespaces, saw:$seen"
grep -q "strata render: l1024: 1 worker of 2 MPI ranks each" "$dir/ranks.log" ||
  fail "render did not start l1024 as a group of 2 ranks"
grep -q "(l1024) joined from strata-nn[0-9]*-[0-9]" "$dir/ranks.log" ||
  fail "the l1024 group did not join render's coordinator from a node"
grep -q "^  l1024 done=.* ranks=2$" "$dir/ranks.log" || fail "no progress line of l1024 names its 2 ranks"

n=0
for f in "$dir"/plain/j/*; do
  case "$f" in */timings.jsonl) continue ;; esac # compute times differ from run to run
  cmp -s "$f" "$dir/ranks/j/$(basename "$f")" || fail "$(basename "$f") differs from the run without --ranks"
  n=$((n + 1))
done
[ "$n" -ge 2 ] || fail "the render without --ranks wrote $n files, want the PNG and the manifest"
echo "netns_render: ok: render's coordinator on $b, l1024 as one 2-rank group on 2 nodes," \
  "$n files byte-identical to the run without --ranks"
