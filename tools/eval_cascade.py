#!/usr/bin/env python3
"""Checks of the shipped cascade (issue 4), run through `strata render` on the real models.

  consistency[:LEVEL]  a refine level's output, box-downsampled to its input size, against its
                       input: PSNR >= 30 dB (mean over --samples held-out inputs)
  detail[:LEVEL]       Laplacian energy of the refined output / of the ground truth on held-out
                       data: within 0.7..1.3, where bicubic upscaling stays well below
  memorisation         fewer than 5% of 256 level-1 samples closer (L2, 32x32) to a training
                       image than the median nearest-neighbour distance between training images
  quality              the first level's samples through the frozen emoji-group classifier
                       (tools/eval_quality.py): FED with its floor and ceilings, precision and
                       recall, class accuracy at guidance 1, 2 and 4, memorisation

Without a LEVEL a check runs on every refine level of the pipeline. Each refine level runs alone
(`render --start-level`) from held-out inputs with its own settings (steps, sampler,
noise_level, tiles), on a canvas of at most --canvas pixels a side: the models are fully
convolutional, so l2048 and l4096 are measured on crops of their input scale, not whole images,
in a 2x2 grid of tiles with their own overlap (144-pixel tiles on the 256 canvas; emoji, on 128,
untiled).
Inputs: held-out emoji (the 128x128 image as ground truth, box-reduced by the level's factor as
input) for every level; for the levels above l128, trained on emoji and wallpapers, also patches of
the held-out wallpapers (tools/train.py HELDOUT_PHOTOS) at the content scales their model trained
on. Each set is reported and checked on its own.

Needs the data sets (tools/data_emoji.py, tools/data_photos.py) and build/strata. Exits 1 when a
check fails.
  .venv/bin/python tools/eval_cascade.py [--samples 64] [--wallpaper-samples N] [--canvas 256]
                                         [--quality-samples 1000] [--class-samples 24]
                                         [--render-dir DIR] [--json FILE]
                                         [consistency detail memorisation quality ...]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_quality  # noqa: E402
import train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(ROOT, "build", "strata")
DATA = os.path.join(ROOT, "tools", "data", "emoji")
PIPELINE = os.path.join(ROOT, "configs", "pipelines", "emoji.yaml")


def load_png(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def render(pipeline, out, count, resolution, workers, extra=()):
    run = subprocess.run([STRATA, "render", "--pipeline", pipeline, "--count", str(count),
                          "--resolution", str(resolution), "--out", out, "--name", "eval",
                          "--workers", workers, *extra], stderr=subprocess.PIPE, text=True)
    if run.returncode:
        lines = [ln for ln in run.stderr.splitlines() if "done=" not in ln and "running" not in ln]
        sys.exit("eval_cascade.py: strata render failed:\n" + "\n".join(lines[-10:]))
    return [load_png(os.path.join(out, "eval", f"{i:06d}.png")) for i in range(count)]


def box_down(img, factor):
    h, w, c = img.shape
    return img.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))


def psnr(a, b):
    mse = np.mean((a - b) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)  # 99: as tests/cluster


def laplacian_energy(img):
    g = img.mean(axis=2)
    lap = (4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    return float(np.mean(lap ** 2))


def bicubic_energy(lows, side):
    """Mean Laplacian energy of the inputs upscaled bicubically to side: the bar to beat."""
    return np.mean([laplacian_energy(np.asarray(Image.fromarray(low).resize(
        (side, side), Image.BICUBIC), dtype=np.float64)) for low in lows])


class Pipeline:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        with open(path) as f:
            self.levels = yaml.safe_load(f)["levels"]
        here = os.path.dirname(self.path)
        for lv in self.levels:
            lv["model"] = os.path.normpath(os.path.join(here, lv["model"]))

    def refine_levels(self):
        return [lv["name"] for lv in self.levels[1:] if lv["kind"] != "generate"]

    def level(self, name):
        k = [lv["name"] for lv in self.levels].index(name)
        return k, self.levels[k]


# Tiled levels are measured in a 2x2 grid of tiles with the level's own overlap, so the per-step
# blending is part of what is measured; tiles below this side measure the level untiled instead
# (the shipped tiles are 704 and 1056: small tiles put most of the canvas in overlaps).
MIN_EVAL_TILE = 128


def level_alone(pipe, name, canvas, tmp):
    """A two-level pipeline: a placeholder input level, then `name` on a canvas-sized output."""
    k, lv = pipe.level(name)
    factor = lv["side"] // pipe.levels[k - 1]["side"]
    unit = 4 * factor  # whole input pixels and a side the UNet's 2 downsamplings divide
    side = min(lv["side"], max(canvas // unit * unit, unit))
    alone = dict(lv, side=side)
    if alone.get("tile", 0) and side < lv["side"]:
        # two tiles a side span side = 2 * tile - overlap
        alone["tile"] = (side + lv.get("overlap", 0)) // 2 // unit * unit
    if alone.get("tile", 0) >= side or alone.get("tile", MIN_EVAL_TILE) < MIN_EVAL_TILE:
        alone.pop("tile", None)
        alone.pop("overlap", None)
    first = dict(name="input", kind="generate", model=pipe.levels[0]["model"],
                 side=side // factor, steps=1)
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(dict(name=f"eval-{name}", levels=[first, alone]), f, sort_keys=False)
    return path, factor, side


def heldout_emoji(n):
    held = np.load(os.path.join(DATA, "heldout.npy"))
    idx = np.flatnonzero(held)[:n]
    return np.load(os.path.join(DATA, "emoji_32.npy"))[idx], np.load(
        os.path.join(DATA, "emoji_128.npy"))[idx]


def heldout_patches(n, side, scales, seed):
    """n side x side patches of the held-out wallpapers, content scale 1/k with k in scales."""
    photos = train.PhotoData("heldout")
    rng = np.random.default_rng(seed)
    return np.stack([photos.patch(rng, side, scales) for _ in range(n)])


def datasets(pipe, name):
    """l128 is measured on emoji; the levels above, trained on emoji and wallpapers, on both."""
    return ("emoji",) if pipe.level(name)[0] == 1 else ("emoji", "wallpapers")


def heldout_inputs(data, factor, side, n, seed):
    """(low-res inputs, ground truth): n held-out emoji (128x128) or wallpaper patches (side x
    side, drawn with seed), box-reduced by factor."""
    if data == "emoji":
        _, highs = heldout_emoji(n)
    else:
        # The content scales each model trained on (tools/train.py): the 4x model (l512, l2048)
        # 1, 1/2, 1/4 and 1/8 of a wallpaper, the 2x model (l4096) 1, 1/2 and 1/4.
        scales = (1, 2, 4, 8) if factor == 4 else (1, 2, 4)
        highs = heldout_patches(n, side, scales, seed)
    return np.stack([np.asarray(Image.fromarray(h).reduce(factor)) for h in highs]), highs


def inputs_for(pipe, name, data, factor, side, n):
    """(low-res inputs, ground truth) for level `name` on a side x side canvas; each level
    draws its own wallpaper patches (seed: its index in the pipeline)."""
    return heldout_inputs(data, factor, side, n, seed=pipe.level(name)[0])


_RUNS = {}


def run_level(pipe, name, data, args, tmp):
    """Renders level `name` from held-out inputs once; consistency and detail share the run."""
    if (name, data) not in _RUNS:
        _RUNS[name, data] = render_level(pipe, name, data, args, tmp)
    return _RUNS[name, data]


def render_level(pipe, name, data, args, tmp):
    # emoji: the 128x128 held-out emoji are the ground truth, whatever the level's factor
    canvas = 128 if data == "emoji" else args.canvas
    path, factor, side = level_alone(pipe, name, canvas, tmp)
    n = args.wallpaper_samples if data == "wallpapers" and args.wallpaper_samples else args.samples
    lows, highs = inputs_for(pipe, name, data, factor, side, n)
    init = os.path.join(tmp, f"init-{name}-{data}")
    os.makedirs(init, exist_ok=True)
    for i, low in enumerate(lows):
        Image.fromarray(low).save(os.path.join(init, f"{i:06d}.png"))
    outs = render(path, os.path.join(tmp, f"out-{name}-{data}"), len(lows), side,
                  f"{name}={args.workers}", ["--start-level", name, "--init", init])
    return factor, side, lows, highs, outs


def check_consistency(pipe, name, args, tmp):
    ok = True
    for data in datasets(pipe, name):
        factor, side, lows, _, outs = run_level(pipe, name, data, args, tmp)
        values = [psnr(box_down(o, factor), low.astype(np.float64)) for o, low in zip(outs, lows)]
        mean = float(np.mean(values))
        print(f"consistency {name} [{data}]: PSNR(box_down(output), input) mean {mean:.1f} dB, "
              f"min {min(values):.1f} dB over {len(values)} held-out inputs, {side // factor} -> "
              f"{side} (need >= 30)", flush=True)
        ok &= mean >= 30
    return ok


def check_detail(pipe, name, args, tmp):
    ok = True
    for data in datasets(pipe, name):
        factor, side, lows, highs, outs = run_level(pipe, name, data, args, tmp)
        truth = np.mean([laplacian_energy(h.astype(np.float64)) for h in highs])
        refined = np.mean([laplacian_energy(o) for o in outs]) / truth
        bicubic = bicubic_energy(lows, side) / truth
        print(f"detail {name} [{data}]: Laplacian energy / ground truth: refined {refined:.2f} "
              f"(need 0.7..1.3), bicubic {bicubic:.2f}, over {len(outs)} held-out inputs, "
              f"{side // factor} -> {side}", flush=True)
        ok &= 0.7 <= refined <= 1.3 and bicubic < 0.7
    return ok


def check_memorisation(pipe, _name, args, tmp):
    held = np.load(os.path.join(DATA, "heldout.npy"))
    train_x = np.load(os.path.join(DATA, "emoji_32.npy"))[~held].reshape(int((~held).sum()), -1)
    train_x = train_x.astype(np.float64)
    first = pipe.levels[0]["name"]
    samples = np.stack(render(pipe.path, os.path.join(tmp, "mem"), 256, pipe.levels[0]["side"],
                              f"{first}={args.workers}")).reshape(256, -1)

    def nearest(a, b, same):
        d = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T
        if same:
            np.fill_diagonal(d, np.inf)
        return np.sqrt(np.maximum(d.min(axis=1), 0))

    median = float(np.median(nearest(train_x, train_x, True)))
    close = float(np.mean(nearest(samples, train_x, False) < median))
    print(f"memorisation {first}: {100 * close:.1f}% of 256 samples closer to a training image "
          f"than the median training nearest-neighbour distance {median:.0f} (need < 5%)",
          flush=True)
    return close < 0.05


def check_quality(pipe, _name, args, tmp):
    return eval_quality.check(pipe, args, tmp)


CHECKS = {"consistency": check_consistency, "detail": check_detail,
          "memorisation": check_memorisation, "quality": check_quality}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checks", nargs="*",
                        default=["consistency", "detail", "memorisation", "quality"],
                        help="CHECK or CHECK:LEVEL")
    parser.add_argument("--pipeline", default=PIPELINE)
    parser.add_argument("--samples", type=int, default=64, help="held-out inputs per set")
    parser.add_argument("--wallpaper-samples", type=int,
                        help="held-out wallpaper patches (default --samples): fewer keep the "
                             "tiled levels' runs short")
    parser.add_argument("--canvas", type=int, default=256,
                        help="largest output side a refine level is measured on")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    eval_quality.add_arguments(parser)
    args = parser.parse_args()
    pipe = Pipeline(args.pipeline)
    if args.canvas < 128:
        parser.error("--canvas must be at least 128 (l128 compares with the 128x128 emoji)")
    jobs = []
    for spec in args.checks:
        check, _, level = spec.partition(":")
        if check not in CHECKS:
            parser.error(f"unknown check {check!r} (one of {', '.join(CHECKS)})")
        if level and level not in pipe.refine_levels():
            parser.error(f"{spec}: {level!r} is not a refine level of {args.pipeline} "
                         f"({', '.join(pipe.refine_levels())})")
        first_only = check in ("memorisation", "quality")
        names = [level] if level or first_only else pipe.refine_levels()
        jobs += [(check, name) for name in names]
    for check, name in jobs:
        if name and not os.path.isdir(pipe.level(name)[1]["model"]):
            parser.error(f"level {name}: no model at {pipe.level(name)[1]['model']}")
    tmp = tempfile.mkdtemp(prefix="strata-eval-")
    ok = True
    try:
        for check, name in jobs:
            ok &= CHECKS[check](pipe, name, args, tmp)
    finally:
        shutil.rmtree(tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
