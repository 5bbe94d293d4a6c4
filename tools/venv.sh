#!/usr/bin/env bash
# Creates the Python environment of tools/ (data sets, training, export, fixtures):
#   tools/venv.sh            -> .venv at the repository root, from tools/requirements.txt
#   tools/venv.sh --data     also apt-get installs the Debian packages the data sets come from
# PYTHON=python3.11 tools/venv.sh picks the interpreter (3.10 or newer). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ "${1:-}" = "--data" ]; then
  pkgs=(fonts-noto-color-emoji unicode-data mate-backgrounds gnome-backgrounds desktop-base)
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q -r "$root/tools/requirements.txt"
"$venv/bin/python" -c 'import torch, diffusers, safetensors, numpy, fontTools, PIL; print("venv ok:", torch.__version__, "diffusers", diffusers.__version__)'
