#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD SECONDS TARGET...: run each fuzz target (BUILD/fuzz/TARGET, built by
# `make fuzz`) for SECONDS on its corpus tests/fuzz/corpus/TARGET, which grows with the inputs
# that reach new code, then is minimised (-merge=1: the fewest inputs that keep its coverage);
# crashing inputs land in BUILD/fuzz-artifacts/TARGET/. Appends one line
# per target to tests/fuzz/tally.tsv (UTC date, target, seconds, executions, new crashes) and
# prints every target's totals over all runs of the tally. Exits 1 when a run found a crash.
set -uo pipefail

build=$1 seconds=$2
shift 2
tally=tests/fuzz/tally.tsv
[ -f "$tally" ] || printf 'date\ttarget\tseconds\texecutions\tcrashes\n' >"$tally"
found=0
for t in "$@"; do
  bin=$build/fuzz/$t corpus=tests/fuzz/corpus/$t art=$build/fuzz-artifacts/$t
  mkdir -p "$corpus" "$art"
  before=$(ls "$art" | wc -l)
  log=$build/fuzz-artifacts/$t.log
  # -rss_limit_mb / -timeout: an input costing more than 2 GB or 10 s is a finding too.
  # -max_len: the seeds' largest (a safetensors header) plus room to grow.
  nice -n 19 "$bin" "$corpus" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$art/" -rss_limit_mb=2048 -timeout=10 -max_len=65536 >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashes=$(($(ls "$art" | wc -l) - before))
  min=$build/fuzz-artifacts/$t.min
  rm -rf "$min" && mkdir -p "$min" &&
    nice -n 19 "$bin" -merge=1 -max_len=65536 -rss_limit_mb=2048 -timeout=10 "$min" "$corpus" \
      >"$log.merge" 2>&1 && [ -n "$(ls "$min")" ] && mv "$corpus" "$corpus.old" &&
    mv "$min" "$corpus" && rm -rf "$corpus.old"
  printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$seconds" "${execs:-0}" "$crashes" >>"$tally"
  echo "fuzz $t: ${execs:-0} executions in ${seconds}s, $crashes new crashes (exit $rc; log $log)"
  if [ "$crashes" -gt 0 ] || [ "$rc" -ne 0 ]; then
    found=1
    grep -m3 -E 'ERROR|runtime error|fuzz [a-z]+:' "$log" | sed 's/^/  /'
  fi
done
echo "totals over every run in $tally (target, seconds, executions, crashes):"
awk -F'\t' 'NR > 1 { s[$2] += $3; x[$2] += $4; c[$2] += $5 }
  END { for (t in x) printf "  %-12s %8d %12d %4d\n", t, s[t], x[t], c[t] }' "$tally" | sort
exit $found
