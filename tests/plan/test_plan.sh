#!/bin/bash
# `make test-plan`: does `strata plan` predict a farm? It plans the default pipeline (emoji) for
# one node of this machine's cores, renders COUNT images with the planned pools, and checks,
# from the job's timings.jsonl (the workers' compute seconds per image and level):
#   - each level's measured CPU seconds per image is within 25% of what the plan measured;
#   - the slowest level's pool (the bottleneck) is busy at least 80% of the render's wall time
#     (its compute wall seconds / (render wall seconds x its workers));
#   - the images per second are within 20% of the plan's images per hour / 3600.
# Wants an idle machine, like `make bench`: other processes on the cores slow the render, not
# the plan's CPU seconds. Usage: test_plan.sh STRATA OUTDIR [COUNT] [RESOLUTION] [CORES]
set -u
strata=$1 out=$2 count=${3:-24} res=${4:-128} cores=${5:-$(nproc)}
fail() { echo "test-plan: FAIL: $*" >&2; exit 1; }
mkdir -p "$out" || fail "cannot create $out"

"$strata" plan --nodes 1 --cores-per-node "$cores" --resolution "$res" --format yaml \
  >"$out/plan.yaml" 2>"$out/plan.log" || { cat "$out/plan.log" >&2; fail "strata plan failed"; }
cat "$out/plan.log" "$out/plan.yaml"
# "  l32: {workers: 1, threads: 1, seconds_per_image: 0.1}" -> l32=1
workers=$(sed -n 's/^  \([a-z0-9_]*\): {workers: \([0-9]*\),.*/\1=\2/p' "$out/plan.yaml" | paste -sd,)
[ -n "$workers" ] || fail "no strata_pools in the plan"

start=$(date +%s.%N)
"$strata" render --count "$count" --resolution "$res" --workers "$workers" --threads 1 \
  --out "$out" --name plan --fresh >"$out/render.log" 2>&1 ||
  { tail -20 "$out/render.log" >&2; fail "strata render failed"; }
end=$(date +%s.%N)

python3 - "$out/plan.yaml" "$out/plan/timings.jsonl" "$start" "$end" "$count" <<'PY' || exit 1
import json, re, sys
plan_path, timings_path, start, end, count = sys.argv[1:]
wall = float(end) - float(start)
text = open(plan_path).read()
per_hour = float(re.search(r"images_per_hour: ([0-9.]+)", text).group(1))
slowest = re.search(r"slowest_level: (\S+)", text).group(1)
pools = {m[0]: (int(m[1]), float(m[2])) for m in re.findall(
    r"  (\w+): \{workers: (\d+), threads: \d+, seconds_per_image: ([0-9.e+-]+)\}", text)}
lines = [json.loads(l) for l in open(timings_path)]
ok = True
print(f"test-plan: {len(lines)} images in {wall:.1f} s")
for name, (workers, planned) in pools.items():
    cpu = [l["levels"][name]["cpu_s"] for l in lines if name in l["levels"]]
    busy_s = sum(l["levels"][name]["wall_s"] for l in lines if name in l["levels"])
    mean = sum(cpu) / len(cpu)
    busy = busy_s / (wall * workers)
    walls = [l["levels"][name]["wall_s"] for l in lines if name in l["levels"]]
    print(f"  {name}: {workers} workers, planned {planned:.4f} s/image, measured {mean:.4f} "
          f"CPU s ({mean / planned:.2f}x), {sum(walls) / len(walls):.4f} wall s, busy "
          f"{busy:.0%}{'  (slowest)' if name == slowest else ''}")
    if name == slowest and sum(walls) > 1.2 * sum(cpu):
        print(f"test-plan: {name}'s images took {sum(walls) / sum(cpu):.1f}x their CPU time in "
              "wall time: other processes share the cores, the throughput cannot be as planned")
    if abs(mean / planned - 1) > 0.25:
        print(f"test-plan: {name}: measured seconds per image off the plan's by more than 25%")
        ok = False
    if name == slowest and busy < 0.8:
        print(f"test-plan: {name}: the bottleneck pool is busy {busy:.0%} of the time, under 80%")
        ok = False
rate, predicted = int(count) / wall, per_hour / 3600
print(f"  throughput {rate:.3f} images/s, predicted {predicted:.3f} ({rate / predicted:.2f}x)")
if abs(rate / predicted - 1) > 0.2:
    print("test-plan: throughput more than 20% off the prediction")
    ok = False
print("test-plan: ok" if ok else "test-plan: FAIL")
sys.exit(0 if ok else 1)
PY
