#!/bin/bash
# A cluster of 2 or 3 nodes on one machine, for tests of multi-node behaviour (issue "Fine levels
# across nodes"): each node is a network namespace with its own address on a veth link to a
# bridge in the root namespace, so MPI traffic between nodes crosses a real TCP link between
# distinct addresses. mpirun reaches the nodes through tests/mpi/netns-agent.sh (in place of ssh).
#
#   tests/mpi/netns.sh [OPTIONS] mpi PROG [ARGS...]   run PROG as one MPI job across the nodes
#   tests/mpi/netns.sh [OPTIONS] -- CMD [ARGS...]     run CMD in the root namespace (where a
#                                                     coordinator stands) with the bed's variables
#   OPTIONS: --nodes N (2 or 3, default 2), --np R (ranks for `mpi`, default N; mapped by node),
#            --timeout S (the whole command, default 120 s; then it is killed: status 124)
#
# The hook for strata's rank groups is the `--` form: CMD sees in its environment
#   STRATA_NETNS_BRIDGE       the bridge address (10.88.X.1): bind a coordinator there
#   STRATA_NETNS_SUBNET       the bed's /24 (10.88.X.0/24)
#   STRATA_NETNS_HOSTS        mpirun's --host list (one slot per node: NS1:1,NS2:1[,NS3:1])
#   STRATA_NETNS_HOSTFILE     the same as a hostfile
#   STRATA_NETNS_MPIRUN_ARGS  everything mpirun needs to run across the nodes but -np, e.g.
#     tests/mpi/netns.sh -- sh -c 'build/strata render ... --ranks l1024=2 \
#       --mpirun-args "$STRATA_NETNS_MPIRUN_ARGS"'
#   OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1, so an mpirun that CMD starts works as root.
# The nodes share the root's file system (a unix socket path reaches across them; 127.0.0.1 does
# not: each node has its own loopback). Nodes have no route outside 10.88.X.0/24.
#
# Exit status: CMD's or PROG's (mpirun's); 124 when --timeout ran out; 77 with one line
# "skip: REASON" when the bed cannot be made here (not root, no `ip netns`, no bridge or veth
# support, no mpirun for `mpi`); 1 when something could not be cleaned up (it says what).
# Every namespace, link, process and file it made is removed on exit, Ctrl-C and TERM included;
# what a run killed by SIGKILL left (its pid, in the names, gone) the next run removes.
set -u

SKIP=77
nodes=2
np=
limit=120
usage() {
  sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case $1 in
  --nodes) nodes=${2:?}; shift 2 ;;
  --np) np=${2:?}; shift 2 ;;
  --timeout) limit=${2:?}; shift 2 ;;
  mpi | --) break ;;
  *) usage ;;
  esac
done
[ $# -ge 2 ] || usage
mode=$1
shift
case $nodes in 2 | 3) ;; *) echo "netns: --nodes is 2 or 3" >&2; exit 2 ;; esac
np=${np:-$nodes}

here=$(cd "$(dirname "$0")" && pwd)
agent=$here/netns-agent.sh
tag=strata-nn$$   # namespaces strata-nnPID-I: netns-agent.sh accepts only strata-nn* names
bridge=snb$$      # interface names stay under 15 characters (pid_max is at most 7 digits)
namespaces=()
links=()
made_bridge=0
tmp=
cmd_pid=

skip() {
  echo "skip: $*"
  exit $SKIP
}

# Kills what is left of the command and every process inside the bed's namespaces, deletes the
# namespaces (their veth ends go with them), the host ends, the bridge and the files; then checks
# that none is left and says so. Every wait is bounded (5 s).
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local rc=$? ns i left=
  trap - EXIT INT TERM
  if [ -n "$cmd_pid" ] && kill -0 "$cmd_pid" 2>/dev/null; then
    kill -TERM -- "-$cmd_pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$cmd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$cmd_pid" 2>/dev/null
  fi
  for ns in "${namespaces[@]}"; do
    # Orted and ranks left by a finished mpirun get 1 s to exit by themselves, then TERM, then KILL.
    for i in $(seq 50); do
      pids=$(ip netns pids "$ns" 2>/dev/null)
      [ -z "$pids" ] && break
      # shellcheck disable=SC2086 # one pid per word
      if [ "$i" -gt 30 ]; then kill -KILL $pids 2>/dev/null; elif [ "$i" -gt 10 ]; then kill -TERM $pids 2>/dev/null; fi
      sleep 0.1
    done
    ip netns del "$ns" 2>/dev/null
  done
  for i in "${links[@]}"; do ip link del "$i" 2>/dev/null; done
  [ "$made_bridge" = 1 ] && ip link del "$bridge" 2>/dev/null
  [ -n "$tmp" ] && rm -rf "$tmp"
  for ns in "${namespaces[@]}"; do
    ip netns list 2>/dev/null | grep -q "^$ns\( \|$\)" && left="$left namespace $ns"
    [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && left="$left processes in $ns"
  done
  for i in "${links[@]}" $([ "$made_bridge" = 1 ] && echo "$bridge"); do
    ip link show "$i" >/dev/null 2>&1 && left="$left link $i"
  done
  if [ -n "$left" ]; then
    echo "netns: could not clean up:$left" >&2
    [ "$rc" = 0 ] && rc=1
  elif [ ${#namespaces[@]} -gt 0 ]; then
    echo "netns: cleaned up ${#namespaces[@]} namespaces, their links and bridge $bridge" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- can the bed be made here? ----
[ "$(id -u)" = 0 ] || skip "the network-namespace test bed needs root (ip netns add)"
command -v ip >/dev/null || skip "no ip command (iproute2)"
command -v unshare >/dev/null || skip "no unshare command (util-linux)"
command -v timeout >/dev/null || skip "no timeout command (coreutils)"
if [ "$mode" = mpi ]; then
  command -v mpirun >/dev/null || skip "no mpirun (OpenMPI)"
fi
[ "$np" -ge 1 ] 2>/dev/null || { echo "netns: --np is a positive number" >&2; exit 2; }

# ---- a free /24 and the bridge, chosen and made under a lock (runs side by side don't clash) ----
exec 9>/run/lock/strata-netns.lock || skip "cannot open /run/lock/strata-netns.lock"
flock -w 10 9 || skip "the lock /run/lock/strata-netns.lock stayed taken for 10 s"
# What an earlier run killed with SIGKILL left (its pid, in the names, is gone): removed first.
for ns in $(ip netns list 2>/dev/null | grep -o '^strata-nn[0-9]*-[0-9]*'); do
  p=${ns#strata-nn}
  p=${p%%-*}
  kill -0 "$p" 2>/dev/null && continue
  # shellcheck disable=SC2046 # one pid per word
  kill -KILL $(ip netns pids "$ns") 2>/dev/null
  ip netns del "$ns" 2>/dev/null && echo "netns: removed $ns, left by a run that was killed" >&2
done
for l in $(ip -o link show 2>/dev/null | grep -o ' sn[bv][0-9]*[-0-9]*[@:]' | tr -d ' @:'); do
  p=${l#sn?}
  p=${p%%-*}
  kill -0 "$p" 2>/dev/null || { ip link del "$l" 2>/dev/null && echo "netns: removed link $l, left by a run that was killed" >&2; }
done
for d in /tmp/strata-netns.[0-9]*.*; do
  p=${d#/tmp/strata-netns.}
  p=${p%%.*}
  [ -d "$d" ] && ! kill -0 "$p" 2>/dev/null && rm -rf "$d"
done
net=
for i in $(seq 0 99); do
  x=$((100 + ($$ + i) % 100))
  ip -4 addr show | grep -q " 10\.88\.$x\." && continue
  ip -4 route show | grep -q "^10\.88\.$x\." && continue
  net=10.88.$x
  break
done
[ -n "$net" ] || skip "no free /24 in 10.88.100-199.0"
ip link add "$bridge" type bridge 2>"/dev/null" || skip "cannot make a bridge (ip link add type bridge)"
made_bridge=1
if ! ip addr add "$net.1/24" dev "$bridge" || ! ip link set "$bridge" up; then
  skip "cannot address bridge $bridge"
fi
exec 9>&-

# ---- the nodes: a namespace each, its veth end renamed eth0, lo up ----
for i in $(seq "$nodes"); do
  ns=$tag-$i
  ip netns add "$ns" 2>/dev/null || skip "cannot make network namespaces (ip netns add)"
  namespaces+=("$ns")
  ip link add "snv$$-$i" type veth peer name "snp$$-$i" 2>/dev/null ||
    skip "cannot make veth pairs (ip link add type veth)"
  links+=("snv$$-$i")
  if ! { ip link set "snp$$-$i" netns "$ns" &&
    ip link set "snv$$-$i" master "$bridge" up &&
    ip -n "$ns" link set lo up &&
    ip -n "$ns" link set "snp$$-$i" name eth0 &&
    ip -n "$ns" addr add "$net.$((10 + i))/24" dev eth0 &&
    ip -n "$ns" link set eth0 up; }; then
    echo "netns: could not set up node $ns" >&2
    exit 1
  fi
done

# Bounded wait until every link carries traffic (carrier up, bridge port forwarding).
ready=0
for i in $(seq 100); do
  ready=1
  for j in $(seq "$nodes"); do
    [ "$(cat "/sys/class/net/snv$$-$j/brport/state" 2>/dev/null)" = 3 ] || ready=0
    ip -n "$tag-$j" link show eth0 | grep -q LOWER_UP || ready=0
  done
  [ "$ready" = 1 ] && break
  sleep 0.05
done
[ "$ready" = 1 ] || { echo "netns: the links did not come up in 5 s" >&2; exit 1; }

tmp=$(mktemp -d "/tmp/strata-netns.$$.XXXXXX")
hosts=
slots=$(((np + nodes - 1) / nodes))
for ns in "${namespaces[@]}"; do
  hosts=${hosts:+$hosts,}$ns:1
  echo "$ns slots=$slots" >>"$tmp/hostfile"
done
export STRATA_NETNS_BRIDGE=$net.1 STRATA_NETNS_SUBNET=$net.0/24 STRATA_NETNS_HOSTS=$hosts
export STRATA_NETNS_HOSTFILE=$tmp/hostfile
export STRATA_NETNS_MPIRUN_ARGS="--hostfile $tmp/hostfile --mca plm_rsh_agent $agent \
--mca plm_rsh_no_tree_spawn 1 --mca btl self,tcp --mca btl_tcp_if_include $net.0/24 \
--mca oob_tcp_if_include $net.0/24 --allow-run-as-root"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "netns: $nodes nodes ${namespaces[*]} at $net.11-$((10 + nodes)), bridge $bridge $net.1" >&2

# ---- the command, in a process group of its own (timeout makes one), bounded by --timeout ----
if [ "$mode" = mpi ]; then
  # shellcheck disable=SC2086 # the arguments are split on purpose (no spaces in them)
  set -- mpirun $STRATA_NETNS_MPIRUN_ARGS -np "$np" --map-by node \
    -x STRATA_NETNS_BRIDGE ${OPENBLAS_CORETYPE:+-x OPENBLAS_CORETYPE} "$@"
fi
timeout -k 5 "$limit" "$@" &
cmd_pid=$!
wait "$cmd_pid"
rc=$?
cmd_pid=
[ "$rc" = 124 ] && echo "netns: the command ran past --timeout $limit s and was killed" >&2
for j in $(seq "$nodes"); do
  s=/sys/class/net/snv$$-$j/statistics
  echo "netns: node $tag-$j $net.$((10 + j)) sent $(cat "$s/rx_bytes") bytes," \
    "received $(cat "$s/tx_bytes") over its link" >&2
done
exit "$rc"
