#!/usr/bin/env bash
# Installs the Debian 12 packages that building, checking, testing and running strata need.
# Idempotent: does nothing when everything is there. Needs root (or sudo) for apt-get.
# --fuzz: also what `make fuzz` needs (clang 14 with libFuzzer, and its OpenMP runtime since the
# tree builds with -fopenmp); not in the default list, which CI installs.
set -euo pipefail

# clang-format: Debian 12's is version 14, the one the tree is formatted with (make format-check)
# ansible, ansible-lint: the playbook in ansible/ and its CI check (make ansible-check);
# openssh-server: the hosts of make test-cluster
packages=(
  build-essential pkg-config
  libopenblas-dev libzmq3-dev libmsgpack-dev libopenmpi-dev openmpi-bin
  libyaml-dev libjansson-dev libpng-dev libsodium-dev zlib1g-dev libmicrohttpd-dev
  clang-format
  # the tests of the coordinator's HTTP pages: promtool checks /metrics, headless Chromium loads
  # the status page (without them those tests say "skipped")
  prometheus chromium
  ansible ansible-lint openssh-server
)
[ "${1:-}" = --fuzz ] && packages+=(clang-14 libclang-rt-14-dev libomp-14-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
