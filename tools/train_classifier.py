#!/usr/bin/env python3
"""Train the frozen emoji-group classifier that tools/eval_quality.py measures l32 with.

A small CNN on 32x32 emoji (tools/data_emoji.py's emoji_32.npy) predicts the 9 Unicode emoji
groups. Trained on the training split only; the held-out split (216 emoji, never seen by l32 nor
by this classifier) gives its accuracy. Its penultimate layer (64 features, the global average of
the last convolution) plays the part Inception-v3's pool features play in FID: the quality
figures of l32 (Frechet distance, precision and recall, class accuracy of class-conditional
samples) need nothing from outside the repository.

  .venv/bin/python tools/train_classifier.py [--epochs 24] [--out tools/classifier]

writes tools/classifier/model.safetensors (float16 weights, about 200 KB) and config.json (the
architecture, training settings, held-out accuracy). Deterministic: one thread, fixed seeds and
torch.use_deterministic_algorithms, so a rerun with the same torch on the same CPU gives the same
weights (another CPU's float kernels may differ in the last bits). The committed weights are
frozen: rebuilding them changes every FED figure, so do it only with a new baseline.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

TOOLS = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(TOOLS, "data", "emoji")
OUT = os.path.join(TOOLS, "classifier")
GROUPS = 9

ARCH = dict(channels=[24, 48, 48, 64, 64], pool_after=[0, 2, 3], groups=8, features=64,
            classes=GROUPS)


class Classifier(nn.Module):
    """conv3x3 + GroupNorm + SiLU blocks, 2x2 average pools, a global average (the features)."""

    def __init__(self, channels, pool_after, groups, features, classes):
        super().__init__()
        assert channels[-1] == features
        self.pool_after = set(pool_after)
        cin = 3
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        for c in channels:
            self.convs.append(nn.Conv2d(cin, c, 3, padding=1))
            self.norms.append(nn.GroupNorm(groups, c))
            cin = c
        self.head = nn.Linear(features, classes)

    def features(self, x):
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = F.silu(norm(conv(x)))
            if i in self.pool_after:
                x = F.avg_pool2d(x, 2)
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.head(self.features(x))


def to_input(images):
    """uint8 (N, 32, 32, 3) -> float32 (N, 3, 32, 32) in [-1, 1], as the diffusion models see it."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def load(path=OUT):
    """The frozen classifier (float32, eval mode) and its config."""
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    net = Classifier(**config["arch"])
    net.load_state_dict({k: v.float() for k, v in load_file(
        os.path.join(path, "model.safetensors")).items()})
    return net.eval(), config


@torch.no_grad()
def run(net, images, batch=500):
    """(features (N, 64), logits (N, 9)) as float64 numpy arrays."""
    feats, logits = [], []
    for i in range(0, len(images), batch):
        f = net.features(to_input(images[i:i + batch]))
        feats.append(f.double().numpy())
        logits.append(net.head(f).double().numpy())
    return np.concatenate(feats), np.concatenate(logits)


def augment(x, rng):
    """Random horizontal flips and shifts of up to 2 pixels (white fill, as the emoji's ground)."""
    n = len(x)
    flip = rng.random(n) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=255)
    dy, dx = rng.integers(0, 5, n), rng.integers(0, 5, n)
    return np.stack([padded[i, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])


def accuracy(net, images, labels):
    return float(np.mean(run(net, images)[1].argmax(1) == labels))


def train(args, x, y):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    net = Classifier(**ARCH)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * (len(x) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    for epoch in range(args.epochs):
        net.train()
        order, start, total = rng.permutation(len(x)), time.time(), 0.0
        for b in range(len(x) // args.batch):
            idx = order[b * args.batch:(b + 1) * args.batch]
            loss = F.cross_entropy(net(to_input(augment(x[idx], rng))),
                                   torch.from_numpy(y[idx]), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        net.eval()
        print(f"epoch {epoch + 1}/{args.epochs} loss {total / (len(x) // args.batch):.3f} "
              f"train acc {accuracy(net, x, y):.3f} ({time.time() - start:.0f} s)", flush=True)
    return net


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    held = np.load(os.path.join(DATA, "heldout.npy"))
    images = np.load(os.path.join(DATA, "emoji_32.npy"))
    labels = np.load(os.path.join(DATA, "labels.npy")).astype(np.int64)
    net = train(args, images[~held], labels[~held])

    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in net.state_dict().items()},
              os.path.join(args.out, "model.safetensors"))
    config = dict(arch=ARCH, training=dict(vars(args), out=None, train_images=int((~held).sum()),
                                           torch=torch.__version__))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    # the accuracy of the weights as stored (float16), not of the float32 ones trained
    frozen, _ = load(args.out)
    pred = run(frozen, images[held])[1].argmax(1)
    config["heldout"] = dict(images=int(held.sum()),
                             accuracy=round(float(np.mean(pred == labels[held])), 4),
                             train_accuracy=round(accuracy(frozen, images[~held],
                                                           labels[~held]), 4),
                             per_group=[round(float(np.mean(pred[labels[held] == g] == g)), 3)
                                        if np.any(labels[held] == g) else None
                                        for g in range(GROUPS)],
                             per_group_count=[int(np.sum(labels[held] == g))
                                              for g in range(GROUPS)])
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    print(f"held-out accuracy {config['heldout']['accuracy']:.3f} over {int(held.sum())} emoji "
          f"(train {config['heldout']['train_accuracy']:.3f}); wrote {args.out}")


if __name__ == "__main__":
    main()
