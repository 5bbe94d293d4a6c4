#!/usr/bin/env python3
"""Checks of the shipped cascade (issue 4), run through `strata render` on the real models.

  consistency   each refine level's output, box-downsampled to its input size, against its
                input: PSNR >= 30 dB on 64 held-out emoji
  detail        Laplacian energy of the refined output / of the ground truth on held-out
                emoji: within 0.7..1.3, where bicubic upscaling stays well below
  memorisation  fewer than 5% of 256 level-1 samples closer (L2, 32x32) to a training image
                than the median nearest-neighbour distance between training images

Needs the data sets (tools/data_emoji.py) and build/strata. Exits 1 when a check fails.
  .venv/bin/python tools/eval_cascade.py [consistency detail memorisation]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(ROOT, "build", "strata")
DATA = os.path.join(ROOT, "tools", "data", "emoji")
PIPELINE = os.path.join(ROOT, "configs", "pipelines", "emoji.yaml")


def render(out, count, resolution, extra=()):
    subprocess.run([STRATA, "render", "--pipeline", PIPELINE, "--count", str(count),
                    "--resolution", str(resolution), "--out", out, "--name", "eval",
                    "--workers", "l32=1,l128=2", *extra],
                   check=True, stderr=subprocess.DEVNULL)
    return [np.asarray(Image.open(os.path.join(out, "eval", f"{i:06d}.png")).convert("RGB"),
                       dtype=np.float64) for i in range(count)]


def box_down(img, factor):
    h, w, c = img.shape
    return img.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))


def psnr(a, b):
    mse = np.mean((a - b) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def laplacian_energy(img):
    g = img.mean(axis=2)
    lap = (4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    return float(np.mean(lap ** 2))


def heldout(n):
    held = np.load(os.path.join(DATA, "heldout.npy"))
    idx = np.flatnonzero(held)[:n]
    return np.load(os.path.join(DATA, "emoji_32.npy"))[idx], np.load(
        os.path.join(DATA, "emoji_128.npy"))[idx]


def refine_from(lows, tmp):
    init = os.path.join(tmp, "init")
    os.makedirs(init, exist_ok=True)
    for i, low in enumerate(lows):
        Image.fromarray(low).save(os.path.join(init, f"{i:06d}.png"))
    return render(os.path.join(tmp, "out"), len(lows), 128,
                  ["--start-level", "l128", "--init", init])


def check_consistency(tmp):
    lows, _ = heldout(64)
    outs = refine_from(lows, tmp)
    values = [psnr(box_down(o, 4), low.astype(np.float64)) for o, low in zip(outs, lows)]
    mean = float(np.mean(values))
    print(f"consistency l128: PSNR(box_down(output), input) mean {mean:.1f} dB, "
          f"min {min(values):.1f} dB over {len(values)} held-out emoji (need >= 30)")
    return mean >= 30


def check_detail(tmp):
    lows, highs = heldout(64)
    outs = refine_from(lows, tmp)
    truth = [laplacian_energy(h.astype(np.float64)) for h in highs]
    refined = np.mean([laplacian_energy(o) for o in outs]) / np.mean(truth)
    bicubic = np.mean([laplacian_energy(np.asarray(Image.fromarray(low).resize(
        (128, 128), Image.BICUBIC), dtype=np.float64)) for low in lows]) / np.mean(truth)
    print(f"detail l128: Laplacian energy / ground truth: refined {refined:.2f} (need 0.7..1.3), "
          f"bicubic {bicubic:.2f}")
    return 0.7 <= refined <= 1.3 and bicubic < 0.7


def check_memorisation(tmp):
    held = np.load(os.path.join(DATA, "heldout.npy"))
    train = np.load(os.path.join(DATA, "emoji_32.npy"))[~held].reshape(int((~held).sum()), -1)
    train = train.astype(np.float64)
    samples = np.stack(render(os.path.join(tmp, "mem"), 256, 32)).reshape(256, -1)

    def nearest(a, b, same):
        d = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T
        if same:
            np.fill_diagonal(d, np.inf)
        return np.sqrt(np.maximum(d.min(axis=1), 0))

    median = float(np.median(nearest(train, train, True)))
    close = float(np.mean(nearest(samples, train, False) < median))
    print(f"memorisation l32: {100 * close:.1f}% of 256 samples closer to a training image than "
          f"the median training nearest-neighbour distance {median:.0f} (need < 5%)")
    return close < 0.05


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checks", nargs="*", default=["consistency", "detail", "memorisation"])
    args = parser.parse_args()
    checks = {"consistency": check_consistency, "detail": check_detail,
              "memorisation": check_memorisation}
    ok = True
    for name in args.checks:
        with tempfile.TemporaryDirectory() as tmp:
            ok &= checks[name](tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
