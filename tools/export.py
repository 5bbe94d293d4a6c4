#!/usr/bin/env python3
"""Export a training checkpoint to a diffusers UNet2DModel directory (F16).

  tools/export.py --level l32 [--ckpt tools/runs/l32/ckpt.pt | tools/checkpoints/l32.safetensors]
                  [--out models/l32]
                  [--raw] [--sampler ddim|dpm++2m] [--preview grid.png --steps 25 --cfg 1.0]

Writes <out>/config.json, <out>/diffusion_pytorch_model.safetensors (F16, EMA weights
unless --raw), <out>/scheduler_config.json (DDIMScheduler by default, or
DPMSolverMultistepScheduler, with the training schedule and prediction type) and
<out>/strata.json (how the level was trained: conditioning, upsampling, noise range).
Then it reloads the directory with UNet2DModel.from_pretrained and compares one
forward pass against the F32 weights. --preview samples a few images with the
exported model and writes them as one PNG (refine levels: held-out emoji as input,
with the level-consistency PSNR printed).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UNet2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scheduler_for(kind):
    common = dict(num_train_timesteps=train.SCHEDULE["num_train_timesteps"],
                  beta_schedule=train.SCHEDULE["beta_schedule"],
                  prediction_type=train.SCHEDULE["prediction_type"],
                  timestep_spacing="trailing")
    if kind == "ddim":
        # No clip_sample: clipping every x0 estimate to [-1, 1] pulls pixels that sit at the
        # range's edge (the emoji's white background) inwards, a bias of -5 to -8 levels of 255
        # that cost l128 about 3 dB of level consistency.
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True,
                             steps_offset=0)
    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                       lower_order_final=True, thresholding=False)


def strata_info(level, step, raw, run_dir, previous):
    cfg = train.LEVELS[level]
    info = dict(level=level, kind=cfg["kind"], trained_steps=step, weights="raw" if raw else "ema",
                pixel_range=[-1, 1], channels="RGB",
                schedule=train.SCHEDULE)
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            start = json.load(f).get("init_from")
    except OSError:
        start = None
    if start:
        start = f"{start} (trained_steps counts from there)"
    else:  # a run resumed from a compact checkpoint: keep what the last export recorded
        start = previous.get("initialised_from")
    if start:
        info["initialised_from"] = start
    if cfg["kind"] == "generate":
        info.update(class_labels="Unicode emoji group", groups=train_groups(), null_class=train.NULL_CLASS)
    else:
        info.update(scale_factor=cfg["factor"],
                    upsampling="torch.nn.functional.interpolate(mode='bilinear', align_corners=True, antialias=False)",
                    cond="sqrt(abar[s]) * up(low) + sqrt(1 - abar[s]) * N(0,1), abar = training alphas_cumprod",
                    unet_input="concat([x_t, cond], dim=1)",
                    class_labels="noise level s (integer timestep units)",
                    noise_level_trained=[0, train.MAX_NOISE_LEVEL],
                    low_res_from_high_res="box average (PIL Image.reduce)")
    return info


def train_groups():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import data_emoji
    return data_emoji.GROUPS


@torch.no_grad()
def sample(model, sched, steps, x_shape, labels, gen, cond=None, cfg_scale=1.0):
    sched.set_timesteps(steps)
    x = torch.randn(x_shape, generator=gen) * sched.init_noise_sigma
    for t in sched.timesteps:
        tt = torch.full((x_shape[0],), int(t), dtype=torch.long)
        inp = x if cond is None else torch.cat([x, cond], 1)
        out = model(inp, tt, class_labels=labels).sample
        if cfg_scale != 1.0:
            null = torch.full_like(labels, train.NULL_CLASS)
            out_u = model(inp, tt, class_labels=null).sample
            out = out_u + cfg_scale * (out - out_u)
        x = sched.step(out, t, x).prev_sample
    return x.clamp(-1, 1)


def to_u8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def grid(imgs, ncol):
    n, h, w, c = imgs.shape
    nrow = math.ceil(n / ncol)
    g = np.full((nrow * h, ncol * w, c), 255, np.uint8)
    for i, im in enumerate(imgs):
        g[(i // ncol) * h:(i // ncol + 1) * h, (i % ncol) * w:(i % ncol + 1) * w] = im
    return g


def psnr(a, b):
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def preview(level, out_dir, path, n, steps, cfg_scale, noise_level, seed, sampler):
    torch.set_num_threads(1)
    model = UNet2DModel.from_pretrained(out_dir).float().eval()
    sched = scheduler_for(sampler)
    gen = torch.Generator().manual_seed(seed)
    cfg = train.LEVELS[level]
    if cfg["kind"] == "generate":
        labels = torch.arange(n) % train.NUM_GROUPS
        x = sample(model, sched, steps, (n, 3, 32, 32), labels, gen, cfg_scale=cfg_scale)
        imgs = to_u8(x)
        Image.fromarray(grid(imgs, min(n, 9))).resize((min(n, 9) * 64, math.ceil(n / 9) * 64),
                                                     Image.Resampling.NEAREST).save(path)
        print(f"wrote {path}: {n} samples, classes 0..8 cycling, cfg {cfg_scale}, {steps} steps")
        return
    f = cfg["factor"]
    emo = train.EmojiData("heldout")
    idx = np.random.default_rng(seed).choice(emo.n, n, replace=False)
    hi = emo.x128[idx]
    lo = np.stack([train.box_reduce(h, f) for h in hi])
    low_t = train.to_t(lo)
    up = train.upsample(low_t, 128)
    abar = sched.alphas_cumprod.float()[noise_level]
    cond = abar.sqrt() * up + (1 - abar).sqrt() * torch.randn(up.shape, generator=gen)
    labels = torch.full((n,), noise_level, dtype=torch.long)
    x = sample(model, sched, steps, (n, 3, 128, 128), labels, gen, cond=cond)
    out = to_u8(x)
    back = np.stack([train.box_reduce(o, f) for o in out])
    up_u8 = to_u8(up)
    cons = [psnr(b, l) for b, l in zip(back, lo)]
    gt = [psnr(o, h) for o, h in zip(out, hi)]
    bil = [psnr(u, h) for u, h in zip(up_u8, hi)]
    rows = np.concatenate([grid(up_u8, n), grid(out, n), grid(hi, n)], 0)
    Image.fromarray(rows).save(path)
    print(f"wrote {path}: rows = bilinear input, {level} output, ground truth "
          f"(held-out emoji, noise level {noise_level}, {steps} steps)")
    print(f"consistency PSNR (box-downsampled output vs input): mean {np.mean(cons):.2f} dB, "
          f"min {np.min(cons):.2f} dB")
    print(f"PSNR vs ground truth: output {np.mean(gt):.2f} dB, bilinear {np.mean(bil):.2f} dB")


def load_checkpoint(path):
    """A run's ckpt.pt, or a compact checkpoint (train.save_compact: float16 model and EMA)."""
    if not path.endswith(".safetensors"):
        return torch.load(path, map_location="cpu", weights_only=False)
    with safe_open(path, "pt") as f:
        part = {p: {k[len(p) + 1:]: f.get_tensor(k).float() for k in f.keys()
                    if k.startswith(p + ".")} for p in ("model", "ema")}
        step = int(f.metadata()["step"])
    return dict(model=part["model"], ema=dict(shadow=part["ema"]), step=step)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--level", required=True, choices=sorted(train.LEVELS))
    ap.add_argument("--ckpt", help="a run's ckpt.pt or a compact .safetensors checkpoint "
                    "(default tools/runs/<level>/ckpt.pt)")
    ap.add_argument("--out", help="default models/<level>")
    ap.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    ap.add_argument("--sampler", default="ddim", choices=["ddim", "dpm++2m"])
    ap.add_argument("--preview", help="PNG to write with a few samples")
    ap.add_argument("--n", type=int, default=18)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (l32)")
    ap.add_argument("--noise-level", type=int, default=0, help="refine levels, preview only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preview-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = args.ckpt or os.path.join(train.RUNS, args.level, "ckpt.pt")
    out = args.out or os.path.join(ROOT, "models", args.level)

    if not args.preview_only:
        s = load_checkpoint(ckpt)
        model = train.build(args.level)
        weights = s["model"] if args.raw else s["ema"]["shadow"]
        model.load_state_dict(weights)
        model.eval()
        ref = model
        half = train.build(args.level)
        half.load_state_dict(weights)
        half = half.half()
        os.makedirs(out, exist_ok=True)
        half.save_pretrained(out, safe_serialization=True)
        scheduler_for(args.sampler).save_pretrained(out)
        try:
            with open(os.path.join(out, "strata.json")) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = {}
        with open(os.path.join(out, "strata.json"), "w") as f:
            # a compact checkpoint's run (and its args.json) is tools/runs/<level>
            run_dir = os.path.join(train.RUNS, args.level) if ckpt.endswith(".safetensors") \
                else os.path.dirname(ckpt)
            json.dump(strata_info(args.level, s["step"], args.raw, run_dir, previous), f, indent=1)
            f.write("\n")
        # reload exactly as a user of diffusers would, compare with the F32 weights
        st = os.path.join(out, "diffusion_pytorch_model.safetensors")
        os.chmod(st, 0o644)
        with safe_open(st, "pt") as fh:
            dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}
        assert dtypes == {"F16"}, f"weights are not all F16: {dtypes}"
        re = UNet2DModel.from_pretrained(out).float().eval()
        cfg = train.LEVELS[args.level]["unet"]
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, cfg["in_channels"], 32, 32, generator=g)
        t = torch.tensor([10, 700])
        lab = torch.tensor([0, train.NULL_CLASS]) if cfg.get("num_class_embeds") else \
            (torch.tensor([0, 250]) if cfg.get("class_embed_type") else None)
        with torch.no_grad():
            a = ref(x, t, class_labels=lab).sample
            b = re(x, t, class_labels=lab).sample
        err = (a - b).abs().max().item()
        size = os.path.getsize(os.path.join(out, "diffusion_pytorch_model.safetensors"))
        print(f"exported {ckpt} (step {s['step']}, {'raw' if args.raw else 'EMA'}) -> {out}: "
              f"{sum(p.numel() for p in re.parameters())} params, {size / 2**20:.2f} MiB; "
              f"reload OK, max |f32 - f16| on one forward = {err:.2e}")
    if args.preview:
        preview(args.level, out, args.preview, args.n, args.steps, args.cfg, args.noise_level,
                args.seed, args.sampler)


if __name__ == "__main__":
    main()
