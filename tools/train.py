#!/usr/bin/env python3
"""Train one level of strata's emoji cascade with diffusers (CPU, resumable).

  tools/train.py --level l32    32x32 class-conditional emoji generator
  tools/train.py --level l128   32 -> 128 super-resolution (whole emoji)
  tools/train.py --level l512   4x super-resolution on patches of emoji and wallpapers,
                                used tiled by the farm for 128 -> 512 and 512 -> 2048
  tools/train.py --level l4096  2x super-resolution on wallpaper (and emoji) patches,
                                used tiled for 2048 -> 4096 (refine, or one step: direct)
Refine levels train on --crop x --crop high-res crops (default 64; low-res = crop / factor).

Conventions shared with the C side (docs/training.md says more):
  * pixels in [-1, 1] (uint8 / 127.5 - 1), RGB, NCHW;
  * DDPM training schedule: 1000 steps, beta_schedule squaredcos_cap_v2,
    prediction_type v_prediction (loss: MSE on v);
  * generator (l32): class_labels = Unicode emoji group 0..8, 9 = null class
    (dropped in 10 % of the steps, for classifier-free guidance / unconditional use);
  * refine levels: the low-res input is upsampled with
    torch.nn.functional.interpolate(mode="bilinear", align_corners=True, antialias=False)
    to the output size (align_corners=True as DeepFloyd IF; the farm's worker/level.c matches), then noised once to noise level s (integer 0..250 in training):
        cond = sqrt(abar[s]) * up(low) + sqrt(1 - abar[s]) * n,  n ~ N(0, 1) at output size
    with abar the training schedule's alphas_cumprod; the UNet input is
    concat([x_t, cond], dim=1) (6 channels) and class_labels = s
    (class_embed_type "timestep": s goes through the same sinusoidal projection as t);
  * low-res training images are exact box averages of the high-res ones
    (PIL Image.reduce), so  box_downsample(output) ~= input  is what the model learns.

Checkpoints: tools/runs/<level>/ckpt.pt (model, EMA, optimizer, step, RNG states),
written atomically every --ckpt-every steps and on SIGTERM / SIGINT; a run resumes
from it automatically. Beside it, tools/checkpoints/<level>.safetensors (model and EMA in
float16, the step in the metadata) is the compact copy that is committed: a fresh clone
resumes from it with a new optimizer and a short re-warmup. tools/export.py turns the EMA weights into a diffusers directory.
"""
import argparse
import json
import math
import os
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from diffusers import DDPMScheduler, UNet2DModel

TOOLS = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(TOOLS, "data")
RUNS = os.path.join(TOOLS, "runs")
COMPACT = os.path.join(TOOLS, "checkpoints")

NUM_GROUPS = 9          # Unicode emoji groups (tools/data_emoji.py)
NULL_CLASS = NUM_GROUPS  # 9
MAX_NOISE_LEVEL = 250   # refine levels: noise augmentation level sampled in [0, 250]

SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                prediction_type="v_prediction", clip_sample=False)

# ---------------------------------------------------------------- model configs
# Sizes were picked by measuring a training step on one niced CPU thread while the
# machine was busy with other work (docs/training.md has the numbers): the whole
# cascade has to train here on 2 shared cores in hours, not days.
_SR_UNET = dict(sample_size=128, in_channels=6, out_channels=3,
                block_out_channels=(32, 64, 64), layers_per_block=1,
                down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
                add_attention=False, norm_num_groups=16,
                class_embed_type="timestep")

LEVELS = {
    # 32x32 generator; attention only at 8x8 (last down block, mid block, first up block)
    "l32": dict(
        unet=dict(sample_size=32, in_channels=3, out_channels=3,
                  block_out_channels=(32, 64, 128), layers_per_block=1,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                  attention_head_dim=32, norm_num_groups=16,
                  num_class_embeds=NUM_GROUPS + 1),
        kind="generate", batch=16, lr=3e-4, steps=30000),
    # Refine levels: fully convolutional, no attention anywhere (tile-friendly), trained
    # on --crop x --crop high-res crops (default 64) and run on whole images / tiles.
    # 32 -> 128 on emoji
    "l128": dict(unet=dict(_SR_UNET), kind="refine", factor=4, batch=8, lr=2e-4, steps=20000),
    # 4x on patches of emoji (50 %) and wallpapers (50 %, content scale 1, 1/2, 1/4, 1/8):
    # the farm runs it tiled for 128 -> 512 and 512 -> 2048
    "l512": dict(unet=dict(_SR_UNET), kind="refine", factor=4, batch=8, lr=2e-4, steps=20000),
    # 2x on wallpaper patches (80 %, content scale 1, 1/2, 1/4) and emoji (20 %): 2048 -> 4096
    "l4096": dict(unet=dict(_SR_UNET), kind="refine", factor=2, batch=8, lr=2e-4, steps=20000),
}


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# ---------------------------------------------------------------- data
class EmojiData:
    def __init__(self, split="train"):
        d = os.path.join(DATA, "emoji")
        held = np.load(os.path.join(d, "heldout.npy"))
        keep = ~held if split == "train" else held
        self.x32 = np.load(os.path.join(d, "emoji_32.npy"))[keep]
        self.x128 = np.load(os.path.join(d, "emoji_128.npy"))[keep]
        self.labels = np.load(os.path.join(d, "labels.npy"))[keep].astype(np.int64)
        self.n = len(self.labels)


# Wallpapers kept out of training: tools/eval_cascade.py measures the upper levels' added
# detail on them (two photographs and one artwork).
HELDOUT_PHOTOS = ("027_nature_Garden", "031_nature_Storm", "009_symbolic-l")


class PhotoData:
    """Wallpapers decoded by tools/data_photos.py (uint8 HxWx3 .npy, long side <= 2048)."""

    def __init__(self, split="train"):
        d = os.path.join(DATA, "photos")
        with open(os.path.join(d, "index.json")) as f:
            index = json.load(f)["images"]
        held = [e for e in index if e["file"].removesuffix(".npy") in HELDOUT_PHOTOS]
        assert len(held) == len(HELDOUT_PHOTOS), "tools/data/photos lacks a held-out wallpaper"
        self.index = held if split == "heldout" else [e for e in index if e not in held]
        self.images = [np.load(os.path.join(d, e["file"]), mmap_mode="r") for e in self.index]
        area = np.array([im.shape[0] * im.shape[1] for im in self.images], np.float64)
        self.p = np.sqrt(area) / np.sqrt(area).sum()  # favour large images, not by area alone

    def patch(self, rng, size, scales):
        """A size x size uint8 patch; content scale 1/k with k from `scales` (box reduce)."""
        for _ in range(20):
            im = self.images[rng.choice(len(self.images), p=self.p)]
            k = int(rng.choice(scales))
            w = size * k
            if im.shape[0] >= w and im.shape[1] >= w:
                break
        else:
            k, w = 1, size
        y = rng.integers(0, im.shape[0] - w + 1)
        x = rng.integers(0, im.shape[1] - w + 1)
        p = np.ascontiguousarray(im[y:y + w, x:x + w])
        if k > 1:
            p = np.asarray(Image.fromarray(p).reduce(k))
        return p


def box_reduce(a, k):
    return np.asarray(Image.fromarray(a).reduce(k))


class Batcher:
    def __init__(self, level, cfg, rng, crop):
        self.level, self.cfg, self.rng, self.crop = level, cfg, rng, crop
        self.emoji = EmojiData("train")
        self.photos = PhotoData() if level in ("l512", "l4096") else None

    def flip(self, a):
        return a[:, ::-1] if self.rng.random() < 0.5 else a

    def next(self, bs):
        rng = self.rng
        if self.cfg["kind"] == "generate":
            idx = rng.integers(0, self.emoji.n, bs)
            x = np.stack([self.flip(self.emoji.x32[i]) for i in idx])
            y = self.emoji.labels[idx].copy()
            y[rng.random(bs) < 0.1] = NULL_CLASS
            return to_t(x), torch.from_numpy(y)
        f, c = self.cfg["factor"], self.crop
        his = []
        for _ in range(bs):
            if self.level == "l128" or (self.level == "l512" and rng.random() < 0.5) or \
                    (self.level == "l4096" and rng.random() < 0.2):
                hi = self.emoji.x128[rng.integers(0, self.emoji.n)]
                if c < 128:
                    y, x = rng.integers(0, 128 - c + 1, 2)
                    hi = hi[y:y + c, x:x + c]
            elif self.level == "l512":
                hi = self.photos.patch(rng, c, (1, 2, 4, 8))
            else:  # l4096
                hi = self.photos.patch(rng, c, (1, 2, 4))
            his.append(np.ascontiguousarray(self.flip(hi)))
        los = [box_reduce(h, f) for h in his]
        return to_t(np.stack(his)), to_t(np.stack(los))


def to_t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def upsample(lo, size):
    """The exact upsampling the farm reproduces (see module doc)."""
    return F.interpolate(lo, size=(size, size), mode="bilinear", align_corners=True, antialias=False)


# ---------------------------------------------------------------- checkpoint
def save_ckpt(path, model, ema, opt, step, rng, args):
    state = dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step,
                 rng=dict(torch=torch.get_rng_state(), numpy=rng.bit_generator.state,
                          python=random.getstate()),
                 level=args.level, unet_config=dict(model.config))
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def save_compact(level, model, ema, step):
    """Model and EMA weights in float16: what a fresh clone resumes from (no optimizer)."""
    from safetensors.torch import save_file
    os.makedirs(COMPACT, exist_ok=True)
    tensors = {f"model.{k}": v.detach().half().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.half().contiguous() for k, v in ema.shadow.items()})
    path = os.path.join(COMPACT, f"{level}.safetensors")
    save_file(tensors, path + ".tmp", metadata=dict(step=str(step), level=level,
                                                     ema_updates=str(ema.updates)))
    os.replace(path + ".tmp", path)


def load_compact(level, model, ema):
    """Returns the step of tools/checkpoints/<level>.safetensors, or None when absent."""
    from safetensors import safe_open
    path = os.path.join(COMPACT, f"{level}.safetensors")
    if not os.path.exists(path):
        return None
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        model.load_state_dict({k[6:]: f.get_tensor(k).float() for k in f.keys()
                               if k.startswith("model.")})
        ema.shadow = {k[4:]: f.get_tensor(k).float() for k in f.keys() if k.startswith("ema.")}
    ema.updates = int(meta["ema_updates"])
    return int(meta["step"])


class EMA:
    def __init__(self, model, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self):
        return dict(shadow=self.shadow, updates=self.updates, decay=self.decay)

    def load_state_dict(self, s):
        self.shadow, self.updates = s["shadow"], s["updates"]


# ---------------------------------------------------------------- main
def build(level):
    return UNet2DModel(**LEVELS[level]["unet"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--level", required=True, choices=sorted(LEVELS))
    ap.add_argument("--steps", type=int, help="total steps (default per level)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--crop", type=int, default=64,
                    help="refine levels: high-res training crop side (multiple of the factor, <= 128)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", help="default tools/runs/<level>")
    ap.add_argument("--init-from", metavar="LEVEL", choices=sorted(LEVELS),
                    help="a new run (no checkpoint of its own) starts from the weights of LEVEL's "
                         "compact checkpoint (same architecture), e.g. l512 from l128")
    ap.add_argument("--params", action="store_true", help="print the parameter count and exit")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    cfg = LEVELS[args.level]
    steps = args.steps or cfg["steps"]
    bs = args.batch or cfg["batch"]
    lr = args.lr or cfg["lr"]
    run = args.run_dir or os.path.join(RUNS, args.level)
    ckpt_path = os.path.join(run, "ckpt.pt")

    model = build(args.level)
    nparam = sum(p.numel() for p in model.parameters())
    if args.params:
        print(f"{args.level}: {nparam} parameters ({nparam * 2 / 2**20:.1f} MiB in f16)")
        return
    os.makedirs(run, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    ema = EMA(model, args.ema)
    sched = DDPMScheduler(**SCHEDULE)
    abar = sched.alphas_cumprod.float()
    rng = np.random.default_rng(args.seed)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    step = rewarm_from = 0
    if os.path.exists(ckpt_path):
        s = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(s["model"])
        ema.load_state_dict(s["ema"])
        opt.load_state_dict(s["opt"])
        for g in opt.param_groups:
            g["lr"] = lr
        step = s["step"]
        torch.set_rng_state(s["rng"]["torch"])
        rng.bit_generator.state = s["rng"]["numpy"]
        random.setstate(s["rng"]["python"])
        log(f"resumed {ckpt_path} at step {step}")
    else:
        compact = load_compact(args.level, model, ema)
        if compact is not None:
            step = rewarm_from = compact
            log(f"resumed {COMPACT}/{args.level}.safetensors at step {step} (new optimizer)")
        elif args.init_from:
            if LEVELS[args.init_from]["unet"] != cfg["unet"]:
                sys.exit(f"train.py: --init-from {args.init_from}: its architecture differs")
            start = load_compact(args.init_from, model, ema)
            if start is None:
                sys.exit(f"train.py: --init-from: no {COMPACT}/{args.init_from}.safetensors")
            ema.updates = 0
            log(f"initialised from {args.init_from} (its step {start}); this run starts at step 0")
    if os.path.exists(os.path.join(run, "args.json")) and not args.init_from:
        with open(os.path.join(run, "args.json")) as f:  # a resumed run keeps its origin
            args.init_from = json.load(f).get("init_from")
    with open(os.path.join(run, "args.json"), "w") as f:
        json.dump(dict(vars(args), steps=steps, batch=bs, lr=lr, params=nparam,
                       unet=cfg["unet"], schedule=SCHEDULE), f, indent=1, default=list)

    batcher = Batcher(args.level, cfg, rng, args.crop)
    assert args.crop % cfg.get("factor", 1) == 0 and 16 <= args.crop <= 128
    log(f"{args.level}: {nparam} params, batch {bs}, lr {lr}, step {step}/{steps}, "
        f"{torch.get_num_threads()} thread(s), train images {batcher.emoji.n}"
        + (f", photos {len(batcher.photos.images)}" if batcher.photos else ""))

    stop = {"sig": None}

    def on_signal(sig, frame):
        stop["sig"] = sig
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    model.train()
    t0, s0, loss_acc, n_acc = time.time(), step, 0.0, 0
    warmup = 500
    while step < steps and stop["sig"] is None:
        cur_lr = lr * min(1.0, (step + 1 - rewarm_from) / warmup)
        for g in opt.param_groups:
            g["lr"] = cur_lr
        if cfg["kind"] == "generate":
            x0, labels = batcher.next(bs)
            inp_extra = None
        else:
            x0, lo = batcher.next(bs)
            up = upsample(lo, x0.shape[-1])
            s = torch.randint(0, MAX_NOISE_LEVEL + 1, (bs,))
            a = abar[s].view(-1, 1, 1, 1)
            cond = a.sqrt() * up + (1 - a).sqrt() * torch.randn_like(up)
            labels = s
            inp_extra = cond
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (bs,))
        noise = torch.randn_like(x0)
        xt = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t)
        inp = xt if inp_extra is None else torch.cat([xt, inp_extra], dim=1)
        pred = model(inp, t, class_labels=labels).sample
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        step += 1
        loss_acc += loss.item()
        n_acc += 1
        if step % args.log_every == 0 or step == steps:
            now = time.time()
            sps = (step - s0) / max(now - t0, 1e-9)  # over the last log window
            eta = (steps - step) / max(sps, 1e-9)
            log(f"step {step}/{steps} loss {loss_acc / n_acc:.4f} lr {cur_lr:.2e} "
                f"{sps:.3f} steps/s ({1 / max(sps, 1e-9):.2f} s/step) ETA {eta / 3600:.2f} h")
            loss_acc, n_acc, t0, s0 = 0.0, 0, now, step
        if step % args.ckpt_every == 0:
            save_ckpt(ckpt_path, model, ema, opt, step, rng, args)
            save_compact(args.level, model, ema, step)
    save_ckpt(ckpt_path, model, ema, opt, step, rng, args)
    save_compact(args.level, model, ema, step)
    log(f"saved {ckpt_path} at step {step}" + (f" (signal {stop['sig']})" if stop["sig"] else ""))


if __name__ == "__main__":
    main()
