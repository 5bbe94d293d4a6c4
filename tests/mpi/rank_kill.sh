#!/bin/sh
# Renders with LEVEL as a 2-rank group and SIGKILLs rank 1 of that group once it computes a task
# (its CPU time passes 20 ticks: an idle rank costs ~0). The render must restart the group, the
# coordinator must run the task again, and the render must succeed (the caller compares bytes).
# usage: rank_kill.sh STRATA PIPELINE OUT LEVEL; exit: the render's, or 3 when nothing was killed.
S=$1 PIPE=$2 OUT=$3 LEVEL=$4
"$S" render --pipeline "$PIPE" --count 1 --seed 11 --resolution 256 --keep-levels --out "$OUT" \
  --name j --ranks "$LEVEL=2" 2>"$OUT.err" &
R=$!
killed=0
# rank 1 of LEVEL's group: a child of mpirun, itself a child of this render
rank1() {
  for m in $(pgrep -P "$R"); do
    for p in $(pgrep -P "$m"); do
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' || continue
      tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "--level $LEVEL " && echo "$p"
    done
  done
}
while kill -0 "$R" 2>/dev/null; do
  if [ $killed = 0 ]; then
    for p in $(rank1); do
      t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null)
      if [ "${t:-0}" -gt 20 ]; then
        kill -9 "$p" && killed=1 && echo "killed rank 1 (pid $p) after $t ticks of CPU" >&2
      fi
    done
  fi
  sleep 0.05
done
wait "$R"
rc=$?
cat "$OUT.err" >&2
[ $killed = 1 ] || { echo "rank 1 of the $LEVEL group was never seen computing" >&2; exit 3; }
exit $rc
