#!/bin/sh
# Rank invariance at size (`make test-4k-ranks`, about 3 minutes on 2 cores): test-4k.yaml at
# --resolution 1024 (l1024: 441 tiles of 64) without --ranks, then with --ranks l1024=1, 2 and 3;
# every PNG must be byte-identical to the first. usage: test_4k_ranks.sh STRATA OUTDIR
S=$1 OUT=$2
rm -rf "$OUT" && mkdir -p "$OUT" || exit 1
run() { # NAME [--ranks SPEC]
  name=$1
  shift
  start=$(date +%s)
  "$S" render --pipeline configs/pipelines/test-4k.yaml --count 1 --resolution 1024 \
    --out "$OUT/$name" --name test-4k "$@" 2>"$OUT/$name.err" ||
    { cat "$OUT/$name.err" >&2; echo "FAIL: render $name" >&2; exit 1; }
  echo "$name: $(($(date +%s) - start)) s, $(grep 'l1024 done' "$OUT/$name.err" | tail -1)"
}
run base
for r in 1 2 3; do
  run "ranks$r" --ranks "l1024=$r"
  cmp "$OUT/base/test-4k/000000.png" "$OUT/ranks$r/test-4k/000000.png" ||
    { echo "FAIL: --ranks l1024=$r differs from the run without ranks" >&2; exit 1; }
done
echo "test-4k-ranks: l1024 at 1, 2 and 3 ranks gives the bytes of the run without ranks"
