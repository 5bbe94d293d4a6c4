#!/usr/bin/env python3
"""Farm benchmarks for `make bench` (standard library only; needs build/strata).

pipeline: three levels of stub workers (`strata worker --stub-ms`, no model) whose pools are
  sized so every level has the same throughput; reports end-to-end images/s beside the slowest
  level's and how often all levels were running at once (level-per-worker pipelining).
scale: a large job through three no-op levels with many stub workers on loopback; reports
  level-tasks per second through the coordinator and the coordinator's peak RSS.
With BENCH_CURVE=1 the farm's sockets run CURVE (keys from `strata keygen`).
"""
import argparse
import json
import shutil
import os
import signal
import subprocess
import sys
import tempfile
import time

STRATA = os.environ.get("STRATA_BIN", "build/strata")
MODEL = "tests/fixtures/unet/small3/model"  # never loaded by stub workers


def write_pipeline(path, sides):
    kinds = ["generate"] + ["refine"] * (len(sides) - 1)
    lines = ["name: bench-stub", "levels:"]
    for i, (side, kind) in enumerate(zip(sides, kinds)):
        lines += [f"  - name: s{i}", f"    kind: {kind}", f"    model: {os.path.abspath(MODEL)}",
                  f"    side: {side}", "    steps: 1"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def curve_keys(tmp):
    """With BENCH_CURVE=1 every socket of the farm runs CURVE: the coordinator's key pair and
    one key for all workers and the client (the ZAP handler's cost is per connection)."""
    if os.environ.get("BENCH_CURVE") != "1":
        return None
    keys = os.path.join(tmp, "keys")
    if not os.path.isdir(keys):
        os.mkdir(keys)
        for name in ("coord", "farm"):
            subprocess.run([STRATA, "keygen", os.path.join(keys, name)], check=True,
                           capture_output=True)
    return {"coord": ["--key", os.path.join(keys, "coord.key"), "--allow",
                      os.path.join(keys, "farm.pub")],
            "peer": ["--key", os.path.join(keys, "farm.key"), "--server-key",
                     os.path.join(keys, "coord.pub")]}


def start_farm(pipeline, pools, stub_ms, log, tmp, state=None):
    wrap = os.environ.get("BENCH_COORD_WRAP", "").split()
    keys = curve_keys(tmp)
    coord = subprocess.Popen(wrap + [STRATA, "coordinator", "--pipeline", pipeline, "--workers",
                              "tcp://127.0.0.1:*", "--clients", "tcp://127.0.0.1:*",
                              "--max-in-flight", "256", "--out-root", tmp] +
                             (["--state", state] if state else []) +
                             (keys["coord"] if keys else []),
                             stdout=subprocess.PIPE, stderr=log, text=True)
    line = coord.stdout.readline().split()
    workers_ep = line[2].split("=", 1)[1]
    clients_ep = line[3].split("=", 1)[1]
    workers = []
    for level, (count, ms) in enumerate(zip(pools, stub_ms)):
        for k in range(count):
            workers.append(subprocess.Popen(
                [STRATA, "worker", "--level", f"s{level}", "--connect", workers_ep,
                 "--stub-ms", str(ms), "--id", f"s{level}-{k}"] + (keys["peer"] if keys else []),
                stderr=log))
    return coord, workers, clients_ep, (keys["peer"] if keys else [])


def stop_farm(coord, workers):
    coord.terminate()
    coord.wait()
    for w in workers:  # SIGINT stops a worker at once (SIGTERM would drain it)
        w.send_signal(signal.SIGINT)
    for w in workers:
        w.wait()


def status(clients_ep, job, keys):
    out = subprocess.run([STRATA, "status", job, "--json", "--coordinator", clients_ep] + keys,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def run_job(tmp, pipeline, pools, stub_ms, count, poll_s, resolution, state=None):
    job = os.path.join(tmp, "job.yaml")
    with open(job, "w") as f:
        f.write(f"pipeline: {pipeline}\nname: bench\ncount: {count}\nresolution: {resolution}\n"
                f"out: {os.path.join(tmp, 'out')}\n")
    with open(os.path.join(tmp, "farm.log"), "w") as log:
        coord, workers, ep, keys = start_farm(pipeline, pools, stub_ms, log, tmp, state)
        try:
            start = time.monotonic()
            subprocess.run([STRATA, "submit", job, "--coordinator", ep] + keys, check=True,
                           capture_output=True)
            samples = []
            while True:
                s = status(ep, "bench", keys)
                samples.append((time.monotonic() - start, s))
                if s["state"] != "running":
                    break
                time.sleep(poll_s)  # sampling interval of the timeline, not synchronisation
            wall = time.monotonic() - start
            with open(f"/proc/{coord.pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
            with open(f"/proc/{coord.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        finally:
            stop_farm(coord, workers)
    return wall, samples, rss, cpu


def bench_pipeline(tmp, args):
    stub_ms = [30, 60, 90]
    pools = [1, 2, 3]  # each level: 33.3 images/s
    pipeline = os.path.join(tmp, "stub.yaml")
    write_pipeline(pipeline, [8, 16, 32])
    wall, samples, _, _ = run_job(tmp, pipeline, pools, stub_ms, args.images, 0.1, 32)
    slowest = min(p * 1000.0 / ms for p, ms in zip(pools, stub_ms))
    rate = args.images / wall
    busy = [sum(1 for l in s["levels"] if l["running"] > 0) for _, s in samples]
    all_busy = sum(1 for b in busy if b == 3) / max(1, len(busy))
    print(f"pipelining: {args.images} images, levels of {stub_ms} ms with pools {pools}")
    print(f"  end to end {rate:.1f} images/s; slowest level {slowest:.1f} images/s; "
          f"ratio {rate / slowest:.3f} (target >= 0.90)")
    print(f"  all three levels running at once in {100 * all_busy:.0f}% of "
          f"{len(samples)} status samples")
    print("  timeline (s: images done per level)")
    step = max(1, len(samples) // 8)
    for t, s in samples[::step]:
        print(f"    {t:5.2f}: " + "  ".join(f"{l['name']}={l['done']:<4}" for l in s["levels"]))


def bench_scale(tmp, args):
    """Outputs go to tmpfs when there is one: this measures the coordinator, not the disk
    (creating 100,000 files on this VM's ext4 costs more than routing 300,000 tasks)."""
    if args.out_dir:
        tmp = tempfile.mkdtemp(dir=args.out_dir)
    try:
        scale_job(tmp, args)
    finally:
        if args.out_dir:
            shutil.rmtree(tmp, ignore_errors=True)


def scale_job(tmp, args):
    pipeline = os.path.join(tmp, "scale.yaml")
    write_pipeline(pipeline, [4, 8, 16])
    per_level = args.workers // 3
    state = tempfile.mkdtemp(dir=args.state) if args.state else None
    try:
        wall, _, rss, cpu = run_job(tmp, pipeline, [per_level] * 3, [0, 0, 0], args.scale_images,
                                    1.0, 16, state)
    finally:
        if state:
            shutil.rmtree(state, ignore_errors=True)
    tasks = 3 * args.scale_images
    print(f"coordinator scale: {args.scale_images} images x 3 levels, {3 * per_level} stub "
          f"workers on loopback, outputs in {tmp}" +
          (f", --state in {args.state}" if state else ""))
    print(f"  {tasks / wall:.0f} level-tasks/s ({wall:.1f} s; target >= 5000); "
          f"coordinator peak RSS {rss:.1f} MB (target <= 256)")
    print(f"  the coordinator used {cpu:.1f} s of CPU in {wall:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", default=["pipeline", "scale"])
    parser.add_argument("--images", type=int, default=200, help="pipelining job size")
    parser.add_argument("--scale-images", type=int, default=100000)
    parser.add_argument("--workers", type=int, default=30)
    parser.add_argument("--out-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where the scale job writes (default: tmpfs)")
    parser.add_argument("--state", default=None,
                        help="the scale job's coordinator keeps --state in a new folder here "
                             "(the ordinary disk measures the journal and spool)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if "pipeline" in args.what:
            bench_pipeline(tmp, args)
        if "scale" in args.what:
            bench_scale(tmp, args)


if __name__ == "__main__":
    sys.exit(main())
