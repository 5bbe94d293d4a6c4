#!/bin/bash
# Three hosts reachable by SSH, on one machine, for Ansible (issue "Operating a farm"): run through
# the multi-node test bed, which makes the namespaces, their addresses and the bridge, and removes
# them after (tests/mpi/netns.sh):
#
#   tests/mpi/netns.sh --nodes 3 --timeout S -- tests/cluster/netns_cluster.sh CMD [ARGS...]
#
# In each of the bed's 3 nodes it starts an sshd on the node's address (root, key only, no PAM),
# which lets in a key pair made for this run (its own authorized_keys file: root's ~/.ssh is not
# touched). It then runs CMD (in the root namespace, the Ansible controller) with
#   STRATA_CLUSTER_DIR       a directory of this run (removed after)
#   STRATA_CLUSTER_HOSTS     "NAME=ADDRESS ..." for the nodes: c1 (a coordinator host), w1, w2
#   STRATA_CLUSTER_INVENTORY an Ansible inventory of them, group-less ([nodes]), with the
#                            connection variables (key, no host-key checks); CMD adds its groups
# The nodes share this machine's file system (give each host its own PREFIX and state directory)
# and have no route beyond the bed's /24. Exit status: CMD's; 77 with "skip: REASON" when no
# sshd is installed; 1 when an sshd does not answer in 10 s. The sshds stop on exit.
set -u
# shellcheck source=tests/mpi/lib.sh
. "$(dirname "$0")/../mpi/lib.sh"
if [ -z "${STRATA_NETNS_HOSTS:-}" ] || [ $# = 0 ]; then
  echo "netns_cluster: run through the bed: tests/mpi/netns.sh --nodes 3 -- $0 CMD [ARGS...]" >&2
  exit 2
fi
[ -x /usr/sbin/sshd ] || { echo "skip: no sshd (Debian: openssh-server)"; exit 77; }
command -v ssh-keygen >/dev/null || { echo "skip: no ssh-keygen (openssh-client)"; exit 77; }

namespaces=$(echo "$STRATA_NETNS_HOSTS" | tr ',' '\n' | sed 's/:.*//')
[ "$(echo "$namespaces" | wc -l)" = 3 ] || { echo "netns_cluster: want 3 nodes (--nodes 3)" >&2; exit 2; }
net=${STRATA_NETNS_BRIDGE%.1}
# What a run killed by SIGKILL left (its pid, in the name, gone) goes first.
for d in /tmp/strata-cluster.[0-9]*.*; do
  p=${d#/tmp/strata-cluster.}
  [ -d "$d" ] && ! kill -0 "${p%%.*}" 2>/dev/null && rm -rf "$d"
done
dir=$(mktemp -d "/tmp/strata-cluster.$$.XXXXXX")
sshd_pids=

# shellcheck disable=SC2317 # called by the EXIT trap
stop() {
  local rc=$?
  trap - EXIT INT TERM
  # shellcheck disable=SC2086 # one pid per word
  stop_pids $sshd_pids
  rm -rf "$dir"
  exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ssh-keygen -q -t ed25519 -N '' -C strata-cluster -f "$dir/ssh_key" || exit 1
cp "$dir/ssh_key.pub" "$dir/authorized_keys"
mkdir -p /run/sshd
hosts=
i=0
for ns in $namespaces; do
  i=$((i + 1))
  name=$(echo "c1 w1 w2" | cut -d' ' -f"$i")
  addr=$net.$((10 + i))
  cat >"$dir/sshd-$name.conf" <<EOF
ListenAddress $addr
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile $dir/sshd-$name.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  ip netns exec "$ns" /usr/sbin/sshd -f "$dir/sshd-$name.conf" -E "$dir/sshd-$name.log" ||
    { echo "netns_cluster: sshd did not start in $ns" >&2; exit 1; }
  hosts="$hosts $name=$addr"
done
ssh_opts=(-i "$dir/ssh_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o BatchMode=yes -o ConnectTimeout=2 -o LogLevel=ERROR)
for h in $hosts; do
  for _ in $(seq 50); do
    [ -f "$dir/sshd-${h%%=*}.pid" ] && ssh "${ssh_opts[@]}" "root@${h#*=}" true 2>/dev/null && break
    sleep 0.2
  done
  ssh "${ssh_opts[@]}" "root@${h#*=}" true ||
    { echo "netns_cluster: no ssh to ${h%%=*} at ${h#*=} in 10 s" >&2; exit 1; }
  sshd_pids="$sshd_pids $(cat "$dir/sshd-${h%%=*}.pid")"
done

{
  echo "[nodes]"
  for h in $hosts; do echo "${h%%=*} ansible_host=${h#*=}"; done
  echo
  echo "[all:vars]"
  echo "ansible_user=root"
  echo "ansible_ssh_private_key_file=$dir/ssh_key"
  echo "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'"
  echo "ansible_python_interpreter=/usr/bin/python3"
} >"$dir/inventory.ini"
echo "netns_cluster: sshd on${hosts//=/ at }" >&2
export STRATA_CLUSTER_DIR=$dir STRATA_CLUSTER_HOSTS=${hosts# } STRATA_CLUSTER_INVENTORY=$dir/inventory.ini
"$@"
