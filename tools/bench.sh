#!/usr/bin/env bash
# `make bench`: strata's UNet forward beside PyTorch's on the ddpm-cifar10 config, and the
# convolutions' GFLOP/s beside plain OpenBLAS sgemm; then the same for a shipped super-resolution
# model at its tile size, its GFLOP/s against the sgemm peak, and its time per megapixel by tile
# side. All in one run on this machine; benchmarks want an idle machine: the load average is
# printed first.
#
#   tools/bench.sh [all|cifar|sr]      (make bench: all; make bench-sr: sr)
#
# Env: BENCH_MODEL, BENCH_ITERS (10) for ddpm-cifar10; BENCH_SR_MODEL (models/l4096),
# BENCH_SR_SIZE (1056, l4096's tile), BENCH_SR_ITERS (3: a 1056 forward takes seconds),
# BENCH_SR_SIDES ("264 528 1056", the tile sides timed per megapixel); BENCH_PYTHON
# (.venv/bin/python) the Python with PyTorch and diffusers.
set -euo pipefail
cd "$(dirname "$0")/.."
sections=${1:-all}
case "$sections" in all | cifar | sr) ;; *) echo "usage: tools/bench.sh [all|cifar|sr]" >&2; exit 2 ;; esac
model=${BENCH_MODEL:-tests/fixtures/unet/cifar10/model}
iters=${BENCH_ITERS:-10}
sr_model=${BENCH_SR_MODEL:-models/l4096}
sr_size=${BENCH_SR_SIZE:-1056}
sr_iters=${BENCH_SR_ITERS:-3}
sr_sides=${BENCH_SR_SIDES:-264 528 1056}
py=${BENCH_PYTHON:-.venv/bin/python}
strata=build/strata

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
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

# ddpm-cifar10: strata beside PyTorch by batch and thread count, then its convolutions.
cifar_section() {
  echo "model: $model"
  printf '\n%-6s %-8s %10s %10s %9s %12s %10s %10s\n' batch threads strata_ms torch_ms speedup gemms_alone strata_mb torch_mb
  for batch in 1 8; do
    for threads in 1 2; do
      s=$(best_of_two "$strata" bench unet --model "$model" --batch "$batch" --threads "$threads" --iters "$iters")
      s_ms=$(echo "$s" | field min_ms); s_rss=$(echo "$s" | field peak_rss_mb)
      s_gemm=$(echo "$s" | field gemm_alone_ms)
      t_ms=-; t_rss=-; ratio=-
      if [ "$have_torch" = 1 ]; then
        t=$(torch_run "$threads" --model "$model" --batch "$batch" --iters "$iters")
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
    "$strata" bench conv --shapes cifar --threads "$threads" --iters "$iters"
  done
}

# PyTorch's best of two runs at its best settings here: its OpenMP threads, passive waiting, no
# OpenBLAS threads. torch_run THREADS ARGS...: ARGS are tools/bench_torch.py's besides --threads.
torch_run() {
  local threads=$1
  shift
  OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE \
    best_of_two "$py" tools/bench_torch.py --threads "$threads" "$@" 2>/dev/null
}

# The SR model at its tile size on 1 and 2 threads: strata beside PyTorch, both as GFLOP/s of the
# forward's work (the direct convolutions', which PyTorch does) against OpenBLAS's sgemm peak on
# as many threads, and strata's GEMMs' own rate (Winograd's do less work than they stand for); the convolutions' shapes
# at that side; the time per megapixel by tile side. strata skips timing the GEMMs alone here
# (--no-gemms-alone): at 1056 that would be 2 x (iters + 1) forwards' GEMMs more.
sr_section() {
  local convs="" s2=""
  echo "super-resolution model: $sr_model at ${sr_size}x$sr_size, batch 1"
  printf '\n%-8s %10s %10s %9s %9s %8s %8s %8s %8s %8s %10s %10s\n' threads strata_ms torch_ms speedup gflop strata_gf torch_gf sgemm_pk of_peak gemm_gf strata_mb torch_mb
  for threads in 1 2; do
    # the sgemm peak from the convolutions' run (the shapes' own rates and three large GEMMs)
    c=$("$strata" bench conv --shapes sr --side "$sr_size" --threads "$threads" --iters "$sr_iters")
    convs+="$c"$'\n'
    peak=$(echo "$c" | grep '^sgemm_peak' | field gflops)
    s=$(best_of_two "$strata" bench unet --model "$sr_model" --size "$sr_size" --threads "$threads" --iters "$sr_iters" --no-gemms-alone)
    [ "$threads" = 2 ] && s2=$s
    s_ms=$(echo "$s" | field min_ms); s_rss=$(echo "$s" | field peak_rss_mb)
    gflop=$(echo "$s" | field direct_gflop); s_gf=$(echo "$s" | field direct_gflops)
    g_gf=$(echo "$s" | field gflops)
    of_peak=$(awk -v a="$s_gf" -v b="$peak" 'BEGIN { printf "%.0f%%", 100 * a / b }')
    t_ms=-; t_rss=-; ratio=-; t_gf=-
    if [ "$have_torch" = 1 ]; then
      t=$(torch_run "$threads" --model "$sr_model" --size "$sr_size" --iters "$sr_iters")
      t_ms=$(echo "$t" | field min_ms); t_rss=$(echo "$t" | field peak_rss_mb)
      ratio=$(awk -v a="$t_ms" -v b="$s_ms" 'BEGIN { printf "%.2fx", a / b }')
      t_gf=$(awk -v g="$gflop" -v t="$t_ms" 'BEGIN { printf "%.1f", g * 1e3 / t }')
    fi
    printf '%-8s %10s %10s %9s %9s %8s %8s %8s %8s %8s %10s %10s\n' "$threads" "$s_ms" "$t_ms" "$ratio" "$gflop" "$s_gf" "$t_gf" "$peak" "$of_peak" "$g_gf" "$s_rss" "$t_rss"
  done
  echo "(ms: the fastest forward of two runs of $sr_iters; gflop: the forward's work as direct"
  echo " convolutions and GEMMs (strata's direct_gflop: its Winograd GEMMs counted as the direct work"
  echo " they replace); strata_gf, torch_gf: that work over the fastest forward; sgemm_pk: OpenBLAS's"
  echo " best sgemm GFLOP/s on as many threads (the sgemm_peak lines below); of_peak = strata_gf /"
  echo " sgemm_pk; gemm_gf: the GEMMs strata runs (gemm_gflop) over its fastest forward; mb: peak RSS)"
  echo
  echo "convolutions of $sr_model at side $sr_size (every shape of its forward; count: how many"
  echo "convolutions have it) vs one plain OpenBLAS sgemm of the same M, K and N (N at most 8192)"
  printf '%s' "$convs"
  echo
  echo "time per megapixel of the $sr_model forward by tile side (2 threads, fastest of two runs of $sr_iters)"
  printf '%-6s %10s %12s %8s %10s\n' side min_ms s_per_mpix gflops strata_mb
  for side in $sr_sides; do
    if [ "$side" = "$sr_size" ] && [ -n "$s2" ]; then
      s=$s2 # measured above
    else
      s=$(best_of_two "$strata" bench unet --model "$sr_model" --size "$side" --threads 2 --iters "$sr_iters" --no-gemms-alone)
    fi
    s_ms=$(echo "$s" | field min_ms)
    per=$(awk -v t="$s_ms" -v p="$side" 'BEGIN { printf "%.2f", t / 1e3 / (p * p / 1e6) }')
    printf '%-6s %10s %12s %8s %10s\n' "$side" "$s_ms" "$per" "$(echo "$s" | field gflops)" "$(echo "$s" | field peak_rss_mb)"
  done
}

case "$sections" in
  all) cifar_section; echo; sr_section ;;
  cifar) cifar_section ;;
  sr) sr_section ;;
esac
