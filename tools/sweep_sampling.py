#!/usr/bin/env python3
"""How a refine model's sampling settings trade added detail against consistency, in diffusers.

Picks step counts for configs/pipelines/emoji.yaml quickly: PyTorch on a few held-out inputs,
the same measures as tools/eval_cascade.py (which runs the farm and gives the figures that count).

  .venv/bin/python tools/sweep_sampling.py --model models/l4096 --factor 2 --data wallpapers \\
      --runs 12/12/50 15/15/50 20/14/50

Each run is TOTAL/STEPS/NOISE_LEVEL: a DDIM schedule of TOTAL trailing steps of which the last
STEPS run (STEPS < TOTAL starts from the upsampled input noised to the first of them, as
img2img does), the cond noised to NOISE_LEVEL. --ckpt reads a compact training checkpoint's EMA
weights (tools/checkpoints/<level>.safetensors) instead of an exported --model directory.
--device cuda samples on a GPU (in batches of 32), where hundreds of patches take seconds; the
detail figure's bootstrap standard deviation says how much it moves with the patches drawn.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
import train  # noqa: E402
from eval_cascade import bicubic_energy, box_down, heldout_inputs, laplacian_energy, psnr  # noqa: E402


def load(args):
    if not args.ckpt:
        return UNet2DModel.from_pretrained(args.model).float().eval()
    model = train.build(args.level)
    model.load_state_dict(export.load_checkpoint(args.ckpt)["ema"]["shadow"])
    return model.eval()


def inputs(args):
    """(low-res inputs, ground truth, output side) as tools/eval_cascade.py picks them."""
    side = 128 if args.data == "emoji" else args.canvas
    return (*heldout_inputs(args.data, args.factor, side, args.n, args.seed), side)


@torch.no_grad()
def sample(model, sched, up, total, steps, noise_level, device="cpu", batch=32):
    """Samples in batches of `batch` on `device`; the noise is drawn on the CPU, in one go."""
    g = torch.Generator().manual_seed(0)
    cond = up
    if noise_level > 0:
        abar = sched.alphas_cumprod[noise_level]
        cond = abar.sqrt() * up + (1 - abar).sqrt() * torch.randn(up.shape, generator=g)
    sched.set_timesteps(total)
    ts = sched.timesteps[total - steps:]
    noise = torch.randn(up.shape, generator=g)
    start = noise if steps == total else sched.add_noise(up, noise, ts[:1])
    outs = []
    for i in range(0, len(up), batch):
        x, c = start[i:i + batch].to(device), cond[i:i + batch].to(device)
        labels = torch.full((len(x),), noise_level, device=device)
        for t in ts:
            v = model(torch.cat([x, c], 1), t, class_labels=labels).sample
            x = sched.step(v, t, x).prev_sample
        outs.append(((x.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(outs), int(ts[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="an exported level directory (models/<level>)")
    ap.add_argument("--ckpt", help="a compact checkpoint instead (its EMA weights)")
    ap.add_argument("--level", default="l512", help="with --ckpt: its level's architecture")
    ap.add_argument("--factor", type=int, default=4, choices=[2, 4])
    ap.add_argument("--data", default="wallpapers", choices=["emoji", "wallpapers"])
    ap.add_argument("--canvas", type=int, default=256, help="wallpapers: output side")
    ap.add_argument("--n", type=int, default=12, help="held-out inputs")
    ap.add_argument("--seed", type=int, help="wallpaper patch seed (default as eval_cascade.py "
                    "for l512 and l4096: 2 for --factor 4, 4 for --factor 2)")
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    ap.add_argument("--runs", nargs="+", default=["10/10/50"], metavar="TOTAL/STEPS/NOISE")
    args = ap.parse_args()
    if not (args.model or args.ckpt):
        ap.error("give --model or --ckpt")
    if args.seed is None:
        args.seed = 2 if args.factor == 4 else 4
    torch.set_num_threads(1)
    model = load(args).to(args.device)
    sched = DDIMScheduler(**train.SCHEDULE, timestep_spacing="trailing", set_alpha_to_one=True)
    lows, highs, side = inputs(args)
    truths = np.array([laplacian_energy(h.astype(np.float64)) for h in highs])
    truth = truths.mean()
    bicubic = bicubic_energy(lows, side) / truth
    low = torch.from_numpy(lows).permute(0, 3, 1, 2).float() / 127.5 - 1
    up = F.interpolate(low, size=(side, side), mode="bilinear", align_corners=True)
    print(f"{args.model or args.ckpt} on {args.n} held-out {args.data}, {side // args.factor} -> "
          f"{side}; bicubic detail {bicubic:.2f}", flush=True)
    for run in args.runs:
        total, steps, noise_level = map(int, run.split("/"))
        if not 1 <= steps <= total:
            sys.exit(f"sweep_sampling.py: run {run}: STEPS must be 1..TOTAL")
        outs, t0 = sample(model, sched, up, total, steps, noise_level, args.device)
        energies = np.array([laplacian_energy(o) for o in outs])
        detail = energies.mean() / truth
        # the spread of that ratio over resampled patch sets of the same size (bootstrap)
        pick = np.random.default_rng(0).integers(0, len(outs), (1000, len(outs)))
        spread = np.std(energies[pick].mean(1) / truths[pick].mean(1))
        consistency = np.mean([psnr(box_down(o, args.factor), lo.astype(np.float64))
                               for o, lo in zip(outs, lows)])
        print(f"  {run:>10}: first timestep {t0:3d}  detail {detail:.2f} "
              f"(bootstrap sd {spread:.2f})  consistency {consistency:.1f} dB", flush=True)


if __name__ == "__main__":
    main()
