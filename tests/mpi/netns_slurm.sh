#!/bin/bash
# cluster/slurm-fine-pool.sbatch on the test bed's nodes, with a stand-in for Slurm: run through
#
#   tests/mpi/netns.sh --timeout 120 -- tests/mpi/netns_slurm.sh [build/strata]
#
# A coordinator stands on the bridge address; the batch script runs twice as a Slurm job of 2
# nodes would run it: once taking its mpirun branch (the allocation's nodes given to mpirun as a
# default hostfile, as Slurm's would be) and once its `srun --mpi=pmix` branch (a stand-in srun
# that starts one task per node through mpirun). Each time every rank must print the same pinned
# kernels (Haswell), the l32 pool (one rank group of both nodes) must join the coordinator, and the script must
# end with status 0 when the coordinator shuts down. Real Slurm is not exercised: only what the
# script itself does. Prints "netns_slurm: ok ..." or says what failed and exits 1.
set -u
# shellcheck source=tests/mpi/lib.sh
. "$(dirname "$0")/lib.sh"
strata=${1:-build/strata}
if [ -z "${STRATA_NETNS_BRIDGE:-}" ]; then
  echo "netns_slurm: run through the bed: tests/mpi/netns.sh -- $0" >&2
  exit 2
fi
b=$STRATA_NETNS_BRIDGE
dir=$(mktemp -d /tmp/strata-netns-slurm.XXXXXX)
coord=
job=

# shellcheck disable=SC2317 # called by the EXIT trap
stop() {
  local rc=$?
  trap - EXIT INT TERM
  # shellcheck disable=SC2086 # empty ones drop out
  stop_pids $coord $job
  rm -rf "$dir"
  exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() {
  echo "netns_slurm: FAILED ($launch): $*" >&2
  for f in job.out coord.log; do
    [ -f "$dir/$f" ] && sed "s/^/  $f: /" "$dir/$f" | tail -20 >&2
  done
  exit 1
}

# The stand-in srun: `--mpi=list` names pmix; otherwise one task per node of the bed.
mkdir -p "$dir/bin"
cat >"$dir/bin/srun" <<'EOF'
#!/bin/bash
if [ "$1" = --mpi=list ]; then printf 'MPI plugin types are...\n\tnone\n\tpmix\n'; exit 0; fi
while [ $# -gt 0 ]; do case $1 in --mpi=* | --export=* | --cpu-bind=*) shift ;; *) break ;; esac; done
# shellcheck disable=SC2086
exec mpirun $STRATA_NETNS_MPIRUN_ARGS -np "$SLURM_JOB_NUM_NODES" --map-by node -x OPENBLAS_CORETYPE "$@"
EOF
chmod +x "$dir/bin/srun"

# Runs the batch script once with launch $1 against a fresh coordinator; checks it.
run_job() {
  launch=$1
  : >"$dir/coord.out"
  bed_coordinator "$strata" configs/pipelines/test-tiny.yaml "$dir" || fail "no coordinator"
  (
    export PATH=$dir/bin:$PATH SLURM_JOB_NUM_NODES=2 SLURM_JOB_NODELIST=netns SLURM_CPUS_PER_TASK=1
    export SLURM_SUBMIT_DIR=$PWD STRATA=$strata STRATA_NET=$STRATA_NETNS_SUBNET STRATA_LAUNCH=$launch
    export STRATA_PIPELINE=configs/pipelines/test-tiny.yaml
    unset OPENBLAS_CORETYPE
    # What Slurm's allocation gives mpirun, here the bed's nodes and its launch agent.
    export OMPI_MCA_orte_default_hostfile=$STRATA_NETNS_HOSTFILE OMPI_MCA_plm_rsh_no_tree_spawn=1
    export OMPI_MCA_plm_rsh_agent=$PWD/tests/mpi/netns-agent.sh
    exec bash cluster/slurm-fine-pool.sbatch "$b" l32 5555
  ) >"$dir/job.out" 2>&1 &
  job=$!
  for _ in $(seq 200); do
    [ "$(grep -c "(l32) joined from" "$dir/coord.log")" -ge 1 ] && break
    kill -0 "$job" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$coord"
  for _ in $(seq 100); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$job" 2>/dev/null && fail "the pool did not end within 10 s of the coordinator's SHUTDOWN"
  wait "$job" || fail "the batch script exited $?"
  wait "$coord"
  coord=''
  job=''
  [ "$(grep -c "OpenBLAS kernels: Haswell" "$dir/job.out")" = 2 ] || fail "want 2 ranks on Haswell kernels"
  nodes=$(grep -o "(l32) joined from strata-nn[0-9]*-[0-9]*" "$dir/coord.log" | sort -u | grep -c .)
  # the 2 ranks are one rank group: rank 0 alone joins (2 joins: they started as 2 workers)
  [ "$nodes" = 1 ] || fail "the l32 pool joined from $nodes nodes, want 1 (one rank group)"
  echo "netns_slurm: ok ($launch): 2 ranks on Haswell kernels, the l32 pool joined from $nodes node(s), job ended 0"
}
run_job mpirun
run_job srun
