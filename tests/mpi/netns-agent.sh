#!/bin/sh
# The mpirun launch agent of the multi-node test bed (tests/mpi/netns.sh), used in place of ssh:
#   mpirun --mca plm_rsh_agent tests/mpi/netns-agent.sh --host NS1:1,NS2:1 ...
# mpirun calls it as `netns-agent.sh HOST COMMAND...` (as it would call `ssh HOST COMMAND...`);
# HOST is the name of a network namespace made by netns.sh, which stands for a node. The agent
# runs COMMAND (mpirun's orted line, one shell string) inside that namespace, in a UTS namespace
# of its own whose hostname is HOST, so each "node" also reports its own host name.
# It refuses a host that is not one of the bed's namespaces (names start "strata-nn"), so a
# stray hostfile can never make it run anything elsewhere.
set -eu
if [ $# -lt 2 ]; then
  echo "netns-agent: usage: netns-agent.sh HOST COMMAND..." >&2
  exit 2
fi
host=$1
shift
case $host in
strata-nn*) ;;
*)
  echo "netns-agent: $host is not a namespace of the test bed (strata-nn*)" >&2
  exit 2
  ;;
esac
if ! ip netns list | grep -q "^$host\( \|$\)"; then
  echo "netns-agent: no network namespace $host" >&2
  exit 2
fi
# "$*": mpirun hands over one shell command line, possibly split over several words (as ssh joins them).
# shellcheck disable=SC2016 # $0 and $1 expand in the inner shell
exec ip netns exec "$host" unshare --uts /bin/sh -c 'hostname "$0" && exec /bin/sh -c "$1"' "$host" "$*"
