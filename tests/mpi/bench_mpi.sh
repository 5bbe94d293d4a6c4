#!/bin/sh
# `make bench-mpi` (about 6 minutes on 2 cores): strong scaling of a rank group on a fine level
# of the shipped models (tests/mpi/bench-mpi.yaml). l2048 (16 windows of 544, 2 steps) runs as
# a group of 1 rank, then of 2, one thread per rank; every rank writes its time split and bytes
# (STRATA_GROUP_STATS, worker/tile_group.c). Then l4096 at 4096x4096 (16 windows of 1056, 1 step)
# on 2 ranks from the l2048 image, for the peak RSS per rank. The images of 1 and 2 ranks must be the same bytes.
# usage: bench_mpi.sh STRATA OUTDIR
S=$1 OUT=$2
PIPE=tests/mpi/bench-mpi.yaml
rm -rf "$OUT" && mkdir -p "$OUT" || exit 1
render() { # NAME RESOLUTION [options]
  name=$1 res=$2
  shift 2
  STRATA_GROUP_STATS="$OUT/$name.stats" "$S" render --pipeline $PIPE --count 1 --seed 5 \
    --resolution "$res" --out "$OUT/$name" --name bench --threads 1 "$@" 2>"$OUT/$name.err" ||
    { cat "$OUT/$name.err" >&2; echo "FAIL: render $name" >&2; exit 1; }
}
# the same job name in every run: a PNG carries it (tEXt), and the bytes are compared
# one line per rank: compute, exchange, wait (s per step), MB sent per step, peak RSS (MB)
ranks() { # NAME
  cat "$OUT/$1.stats".* | tr ' =' '\n\n' | awk '
    /^rank$/ {getline r} /^steps$/ {getline n} /^compute_s$/ {getline c}
    /^exchange_s$/ {getline x} /^wait_s$/ {getline w} /^bytes_per_step$/ {getline b}
    /^peak_rss_mb$/ {getline m; printf "%s %.3f %.3f %.3f %.2f %.0f\n", r, c/n, x/n, w/n, b/1e6, m}'
}
render init 32 || exit 1
for r in 1 2; do
  render "r$r" 2048 --start-level l2048 --init "$OUT/init/bench" --ranks "l2048=$r" || exit 1
done
cmp "$OUT/r1/bench/000000.png" "$OUT/r2/bench/000000.png" ||
  { echo "FAIL: 2 ranks made other bytes than 1" >&2; exit 1; }
render big 4096 --start-level l4096 --init "$OUT/r2/bench" --ranks "l4096=2" || exit 1

echo "bench-mpi: l2048 of the shipped l512 model, 16 windows of 544 (8 a rank at 2), one thread a rank"
echo "ranks  rank  compute s/step  exchange s/step  wait s/step  MB sent/step  peak RSS MB"
for r in 1 2; do
  ranks "r$r" | sort -n | while read -r k c x w b m; do
    printf "%5d  %4d  %14.2f  %15.3f  %11.3f  %12.2f  %11.0f\n" "$r" "$k" "$c" "$x" "$w" "$b" "$m"
  done
done
# a step of the group lasts as long as its slowest rank
t1=$(ranks r1 | awk '{t = $2 + $3 + $4; if (t > m) m = t} END {print m}')
t2=$(ranks r2 | awk '{t = $2 + $3 + $4; if (t > m) m = t} END {print m}')
share=$(ranks r2 | awk '{t = $2 + $3 + $4; s = ($3 + $4) / t; if (s > m) m = s} END {print 100 * m}')
bytes=$(ranks r2 | awk '{b += $5} END {print b}')
awk -v t1="$t1" -v t2="$t2" -v s="$share" -v b="$bytes" 'BEGIN {
  printf "step: %.2f s at 1 rank, %.2f s at 2: speed-up %.2fx, parallel efficiency %.0f%%\n", t1, t2, t1 / t2, 50 * t1 / t2
  printf "exchange + wait at 2 ranks: %.1f%% of a step (the larger rank); %.2f MB sent a step in all\n", s, b }'
echo "l4096 at 4096x4096, 16 windows of 1056, 2 ranks:"
ranks big | sort -n | awk '{printf "  rank %d: compute %.1f s/step, peak RSS %.0f MB\n", $1, $2, $6}'
