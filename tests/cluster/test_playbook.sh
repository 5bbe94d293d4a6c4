#!/bin/bash
# The playbook ansible/site.yml over SSH on three hosts (`make test-cluster`):
#
#   tests/mpi/netns.sh --nodes 3 --timeout 3000 -- \
#     tests/cluster/netns_cluster.sh tests/cluster/test_playbook.sh [build/strata]
#
# A copy of ansible/ (site.yml, roles, vars) with this test's group_vars and host_vars: host c1
# is the coordinator, w1 serves l16 and l32 of configs/pipelines/test-tiny.yaml, w2 serves l32
# and runs l32's rank group of one rank (group mpi_l32: mpirun with its hostfile);
# each host has its own PREFIX and state directory (the hosts share this file system); the
# services run as supervised processes (no systemd here) and every unit passes
# `systemd-analyze verify`. It checks that
#   1. the first run installs, makes and hands out the CURVE keys and starts the coordinator
#      (--state, keys) and both pools; a second run reports changed=0 on every host;
#   2. a job submitted with the client key (strata submit --wait, over CURVE) gives the bytes of
#      strata render of the same job;
#   3. raising l32's count in group_vars/pool_l32.yml to 2 starts strata-worker@l32-1 on w1 and
#      w2 and changes nothing on c1, nor any other process; then, with a job in flight (sized
#      from the farm's measured pace to outlast the run; STRATA_CLUSTER_JOB=N sets it), lowering
#      it to 1 stops those two (SIGTERM; each exits 0) and nothing else; the job completes,
#      every image ok and byte-identical to strata render's.
# Prints "test_playbook: ok ..." with the runs' times, or says what failed and exits 1; 77
# with "skip: ..." when Ansible is not installed.
set -u
strata=$(readlink -f "${1:-build/strata}")
src=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${STRATA_CLUSTER_DIR:-}" ]; then
  echo "test_playbook: run through tests/cluster/netns_cluster.sh (see its header)" >&2
  exit 2
fi
command -v ansible-playbook >/dev/null || { echo "skip: no ansible-playbook (Debian: ansible)"; exit 77; }
dir=$STRATA_CLUSTER_DIR
play=$dir/ansible
hosts="c1 w1 w2"
addr() { echo "$STRATA_CLUSTER_HOSTS" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
c1=$(addr c1)
coretype=Haswell

fail() {
  echo "test_playbook: FAILED: $*" >&2
  exit 1
}

# Every service the playbook started, stopped by its own supervisor (workers first).
# shellcheck disable=SC2317 # called by the EXIT trap
stop_all() {
  local rc=$? h p u
  trap - EXIT INT TERM
  for h in w1 w2 c1; do
    for p in "$dir/hosts/$h/state/run"/*.pid; do
      [ -f "$p" ] || continue
      u=$(basename "$p" .pid)
      timeout 30 "$dir/hosts/$h/prefix/libexec/strata/strata-service" \
        "$dir/hosts/$h/state/units" "$dir/hosts/$h/state/run" stop "$u" >/dev/null
    done
  done
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the playbook's copy, inventory, group_vars and host_vars ----
mkdir -p "$play/group_vars" "$play/host_vars"
cp -r "$src/ansible/site.yml" "$src/ansible/ansible.cfg" "$src/ansible/roles" "$src/ansible/vars" "$play/"
{
  cat "$STRATA_CLUSTER_INVENTORY"
  printf '\n[coordinator]\nc1\n\n[pool_l16]\nw1\n\n[pool_l32]\nw1\nw2\n\n[mpi_l32]\nw2\n'
} >"$play/inventory.ini"
cat >"$play/group_vars/all.yml" <<EOF
---
strata_src: $src
strata_build_host: c1
strata_prefix: /nonexistent   # each host's own, in host_vars
strata_state_dir: /nonexistent
strata_out_root: $dir/out
strata_pipeline: test-tiny.yaml
strata_worker_port: 5555
strata_client_port: 5556
strata_openblas_coretype: $coretype
strata_service_manager: process
strata_keys_dir: $dir/keys
strata_keygen_binary: $strata
strata_clients: [ops]
strata_admin_clients: [ops]
EOF
for h in $hosts; do
  printf -- '---\nstrata_prefix: %s\nstrata_state_dir: %s\n' \
    "$dir/hosts/$h/prefix" "$dir/hosts/$h/state" >"$play/host_vars/$h.yml"
done
pool() {
  printf -- '---\nstrata_pool_%s:\n  workers: %s\n  threads: 1\n  stop_timeout: 60\n' "$1" "$2" \
    >"$play/group_vars/pool_$1.yml"
}
pool l16 1
pool l32 1
# a rank group of one rank on w2 (roles/mpi: the hostfile, mpirun under the same supervisor)
printf -- '---\nstrata_mpi_l32:\n  slots: 1\n  threads: 1\n  stop_timeout: 60\n  mpirun_args: %s\n' \
  "--mca btl self,tcp --mca btl_tcp_if_include $STRATA_NETNS_SUBNET --mca oob_tcp_if_include $STRATA_NETNS_SUBNET" \
  >"$play/group_vars/mpi_l32.yml"

# run NAME: one run of the playbook, its output in $dir/NAME.log; sets $secs.
run() {
  local t=$SECONDS
  # Ansible's temporary files and SSH control sockets under this run's directory
  (cd "$play" && ANSIBLE_CONFIG=$play/ansible.cfg ANSIBLE_LOCAL_TEMP=$dir/ansible-tmp \
    ANSIBLE_REMOTE_TEMP=$dir/ansible-remote-tmp ANSIBLE_SSH_CONTROL_PATH_DIR=$dir/cp \
    ANSIBLE_NOCOLOR=1 timeout 900 ansible-playbook -i inventory.ini site.yml) >"$dir/$1.log" 2>&1 ||
    { tail -40 "$dir/$1.log" >&2; fail "ansible-playbook ($1) failed"; }
  secs=$((SECONDS - t))
}
# changed N of HOST in run NAME's recap
changed() { sed -n "s/^$2 *: .*changed=\([0-9]*\).*/\1/p" "$dir/$1.log"; }
recap() { sed -n '/PLAY RECAP/,$p' "$dir/$1.log" | grep -E '^(c1|w1|w2) ' | tr -s ' '; }
# every running service as "HOST UNIT PID", sorted
services() {
  local h p
  for h in $hosts; do
    for p in "$dir/hosts/$h/state/run"/*.pid; do
      [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null && echo "$h $(basename "$p" .pid) $(cat "$p")"
    done
  done | sort
}
client=(--coordinator "tcp://$c1:5556" --key "$dir/keys/ops.key" --server-key "$dir/keys/coordinator.pub")
# job NAME COUNT: a job file of test-tiny at 32 px
job() {
  printf 'pipeline: %s\nname: %s\ncount: %s\nseed: 7\nresolution: 32\nout: %s/out/farm/\n' \
    "$dir/hosts/c1/prefix/share/strata/configs/pipelines/test-tiny.yaml" "$1" "$2" "$dir" >"$dir/$1.yaml"
}
# same NAME COUNT: the farm's job NAME byte-identical to strata render's
same() {
  OPENBLAS_CORETYPE=$coretype timeout 1200 "$strata" render --pipeline "$src/configs/pipelines/test-tiny.yaml" \
    --name "$1" --count "$2" --seed 7 --resolution 32 --out "$dir/render" >"$dir/render-$1.log" 2>&1 ||
    { cat "$dir/render-$1.log" >&2; fail "strata render of $1 failed"; }
  local n=0 f
  for f in "$dir/render/$1"/*; do
    case "$f" in */timings.jsonl) continue ;; esac # compute times differ from run to run
    cmp -s "$f" "$dir/out/farm/$1/$(basename "$f")" || fail "$1/$(basename "$f") differs from strata render's"
    n=$((n + 1))
  done
  [ "$n" = $(($2 + 1)) ] || fail "strata render wrote $n files for $1, want $2 PNGs and the manifest"
}

# ---- 1. install and start, then nothing to change ----
run first
first=$secs
echo "test_playbook: first run ${first} s: $(recap first | tr '\n' ';')"
for h in w1 w2 c1; do
  u=$dir/hosts/$h/state/units
  units=$(cd "$u" && ls -d ./*.service.d 2>/dev/null | sed 's|^\./||; s|\.d$||'; ls ./*[!@].service 2>/dev/null | sed 's|^\./||')
  # shellcheck disable=SC2086 # one unit per word
  SYSTEMD_UNIT_PATH=$u: systemd-analyze verify $units >"$dir/verify-$h.log" 2>&1 ||
    { cat "$dir/verify-$h.log" >&2; fail "systemd-analyze verify of $h's units"; }
  echo "test_playbook: $h: systemd-analyze verify ok:" "$(echo $units)"
done
[ "$(services | wc -l)" = 5 ] ||
  { services >&2; fail "want 5 services running (coordinator, l16 on w1, l32 on w1 and w2, l32's rank group on w2)"; }
run second
second=$secs
for h in $hosts; do
  [ "$(changed second "$h")" = 0 ] || { recap second >&2; grep -B2 -A3 '^changed' "$dir/second.log" | head -40 >&2; fail "the second run changed something on $h"; }
done
echo "test_playbook: second run ${second} s: $(recap second | tr '\n' ';')"

# ---- 2. a job over CURVE gives strata render's bytes ----
job small 40
t=$(date +%s%N)
timeout 300 "$strata" submit "$dir/small.yaml" --wait "${client[@]}" >"$dir/small.log" 2>&1 ||
  { cat "$dir/small.log" >&2; fail "the job did not complete on the farm"; }
ms=$((($(date +%s%N) - t) / 1000000))
same small 40
mpilog=$dir/hosts/w2/state/run/strata-mpi@l32.service.log
! grep -q "exited with status" "$mpilog" || { cat "$mpilog" >&2; fail "the l32 rank group (mpirun) exited"; }
echo "test_playbook: a 40-image job through the farm (${ms} ms) is byte-identical to strata render's"

# ---- 3. scale l32 up, then down with a job in flight ----
before=$(services)
pool l32 2
run up
up=$secs
after=$(services)
[ "$(changed up c1)" = 0 ] || fail "raising l32 changed something on the coordinator's host"
started=$(comm -13 <(echo "$before") <(echo "$after") | cut -d' ' -f1,2 | tr '\n' ' ')
[ "$started" = "w1 strata-worker@l32-1.service w2 strata-worker@l32-1.service " ] ||
  fail "raising l32 to 2 started '$started', want l32-1 on w1 and w2"
[ -z "$(comm -23 <(echo "$before") <(echo "$after"))" ] || fail "raising l32 stopped or restarted a service"
echo "test_playbook: l32 raised to 2 (${up} s): started ${started}; $(recap up | tr '\n' ';')"

# The job lasts about four times a run with nothing to do at the pace of the 40-image job (the
# pool is larger now, and a run that drains takes about twice as long), so it is still running
# when the drain comes at the end of the next run.
big=${STRATA_CLUSTER_JOB:-$((4 * 40 * second * 1000 / (ms + 1)))}
[ "$big" -lt 200 ] && big=200
[ "$big" -gt 8000 ] && big=8000
job big "$big"
timeout 1200 "$strata" submit "$dir/big.yaml" --wait "${client[@]}" >"$dir/big.log" 2>&1 &
submit=$!
pool l32 1
run down
down=$secs
final=$(services)
[ "$(changed down c1)" = 0 ] || fail "lowering l32 changed something on the coordinator's host"
[ "$final" = "$before" ] || { echo "$final" >&2; fail "lowering l32 to 1 did not leave the services as before"; }
in_flight=no
"$strata" status big "${client[@]}" 2>/dev/null | grep -q "^big  *running" && in_flight=yes
for h in w1 w2; do
  log=$dir/hosts/$h/state/run/strata-worker@l32-1.service.log
  grep -q "strata-worker@l32-1.service exited with status 0" "$log" ||
    { tail "$log" >&2; fail "l32-1 on $h did not exit 0 on SIGTERM"; }
done
echo "test_playbook: l32 lowered to 1 (${down} s): l32-1 on w1 and w2 stopped by SIGTERM, each exited 0" \
  "(the $big-image job still running after the drain: $in_flight); $(recap down | tr '\n' ';')"
wait "$submit" || { tail "$dir/big.log" >&2; fail "the job in flight did not complete"; }
[ "$(grep -c '"status":"ok"' "$dir/out/farm/big/manifest.jsonl")" = "$big" ] || fail "want $big images ok in big's manifest"
same big "$big"
echo "test_playbook: ok: first run ${first} s, second ${second} s with changed=0 on c1 w1 w2;" \
  "l32 up ${up} s, down ${down} s; the $big-image job in flight completed, byte-identical to strata render's"
