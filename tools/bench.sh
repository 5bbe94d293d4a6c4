#!/usr/bin/env bash
# `make bench`: strata's UNet forward beside PyTorch's on the ddpm-cifar10 config, and the
# convolutions' GFLOP/s beside plain OpenBLAS sgemm, all in one run on this machine.
# Benchmarks want an idle machine: the load average is printed first.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${BENCH_MODEL:-tests/fixtures/unet/cifar10/model}
iters=${BENCH_ITERS:-10}
py=.venv/bin/python
strata=build/strata

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model: $model"
echo "$("$strata" --version) (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}; strata picks the kernels when OpenBLAS falls back to generic ones)"
have_torch=1
if ! [ -x "$py" ] || ! "$py" -c 'import torch, diffusers' 2>/dev/null; then
  echo "(no PyTorch: run tools/venv.sh to compare against it)"
  have_torch=0
fi

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

# The better of two runs by their fastest forward: on a shared VM whole runs are often slowed
# by neighbours, and the fastest of 2 x iters forwards is what the code itself costs. Both
# sides are measured the same way.
best_of_two() {
  local a b
  a=$("$@"); b=$("$@")
  if awk -v x="$(echo "$a" | field min_ms)" -v y="$(echo "$b" | field min_ms)" 'BEGIN { exit !(x <= y) }'; then
    echo "$a"
  else
    echo "$b"
  fi
}

printf '\n%-6s %-8s %10s %10s %9s %12s %10s %10s\n' batch threads strata_ms torch_ms speedup gemms_alone strata_mb torch_mb
for batch in 1 8; do
  for threads in 1 2; do
    s=$(best_of_two "$strata" bench unet --model "$model" --batch "$batch" --threads "$threads" --iters "$iters")
    s_ms=$(echo "$s" | field min_ms); s_rss=$(echo "$s" | field peak_rss_mb)
    s_gemm=$(echo "$s" | field gemm_alone_ms)
    t_ms=-; t_rss=-; ratio=-
    if [ "$have_torch" = 1 ]; then
      # PyTorch's best settings here: its OpenMP threads, passive waiting, no OpenBLAS threads
      t=$(OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE \
          best_of_two "$py" tools/bench_torch.py --model "$model" --batch "$batch" --threads "$threads" --iters "$iters" 2>/dev/null)
      t_ms=$(echo "$t" | field min_ms); t_rss=$(echo "$t" | field peak_rss_mb)
      ratio=$(awk -v a="$t_ms" -v b="$s_ms" 'BEGIN { printf "%.2fx", a / b }')
    fi
    printf '%-6s %-8s %10s %10s %9s %12s %10s %10s\n' "$batch" "$threads" "$s_ms" "$t_ms" "$ratio" "$s_gemm" "$s_rss" "$t_rss"
  done
done
echo "(ms: the fastest forward of two runs of $iters; speedup = PyTorch time / strata time, above 1"
echo " strata is faster; gemms_alone: the GEMMs of strata's forward timed alone as plain OpenBLAS"
echo " sgemm calls, their weights in cache: what those GEMMs cost with nothing around them; mb: peak"
echo " RSS)"
echo
echo "convolutions (ddpm-cifar10 shapes, batch 1) as strata runs them (nine shifted GEMMs for 3x3 on"
echo "16+ wide images, else im2col + GEMM) vs one plain OpenBLAS sgemm of the same M, N, K"
for threads in 1 2; do
  "$strata" bench conv --threads "$threads" --iters "$iters"
done
