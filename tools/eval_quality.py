#!/usr/bin/env python3
"""Quality of the level people see first (l32), measured with nothing from outside.

The features are the penultimate layer (64 values) of the frozen emoji-group classifier in
tools/classifier/ (tools/train_classifier.py), as FID uses Inception-v3's. Samples come from
build/strata (`strata render`), never from PyTorch:

  FED          Frechet distance between the feature Gaussians of 1,000 samples of
               `strata render --resolution 32` (seeds 0..999, no class, the pipeline's
               settings) and those of the training emoji, and of the held-out emoji.
               Floor: the held-out emoji against the training ones (216 images: the
               "216 at a time" figure draws 216 samples to compare like with like).
               Ceilings: two trivial generators, the training mean image plus Gaussian
               noise of the training per-pixel spread, and blurred coloured blobs on white.
  precision,   Kynkaanniemi et al. 2019, k = 3: a sample counts for precision when it lies
  recall       within the k-NN radius of some real image, a real image for recall when it lies
               within that of some sample; real = 1,000 training emoji (fixed draw).
               Reference: 1,000 other training emoji in the place of the samples. Beside
               them density and coverage (Naeem et al. 2020), which an outlier's wide ball
               does not inflate.
  class        class-conditional samples (`render --class-label c`, seeds 0..N-1 per class)
  accuracy     the classifier calls c, at classifier-free guidance 1 (off), 2, 4 (shipped).
  memorisation share of the samples nearer a training emoji than the median nearest-neighbour
               distance between training emoji (L2, in pixels and in features); the
               held-out emoji's share is the reference.

Intervals: 90% bootstrap (5th and 95th percentiles of 1,000 resamples of the samples with the
reference fixed; FED's recentred on the estimate; class accuracy resampled within each class).

  .venv/bin/python tools/eval_quality.py [--quality-samples 1000] [--class-samples 24]
                                         [--render-dir DIR] [--json FILE]
tools/eval_cascade.py runs it as its `quality` check (make eval).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_classifier  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(ROOT, "build", "strata")
DATA = os.path.join(ROOT, "tools", "data", "emoji")
PIPELINE = os.path.join(ROOT, "configs", "pipelines", "emoji.yaml")
GUIDANCES = (1, 2, 4)
SHIPPED = "4"  # configs/pipelines/emoji.yaml's guidance for l32, as acc's key
BOOT = 1000
K = 3


def render_cached(out, job, argv, count):
    """uint8 (count, side, side, 3): OUT/JOB/<index>.png, rendered unless all are there (a
    render stopped half-way resumes; JOB names the count, as render refuses other arguments)."""
    paths = [os.path.join(out, job, f"{i:06d}.png") for i in range(count)]
    if not all(os.path.exists(p) for p in paths):
        run = subprocess.run([STRATA, "render", "--count", str(count), "--out", out,
                              "--name", job, *argv], stderr=subprocess.PIPE, text=True)
        if run.returncode:
            lines = [ln for ln in run.stderr.splitlines()
                     if "done=" not in ln and "running" not in ln]
            sys.exit("eval_quality.py: strata render failed:\n" + "\n".join(lines[-10:]))
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def first_level_alone(pipeline, guidance, tmp):
    """A pipeline of the first level only, with its model's absolute path and this guidance."""
    with open(pipeline) as f:
        level = dict(yaml.safe_load(f)["levels"][0])
    level["model"] = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(pipeline)),
                                                   level["model"]))
    level["guidance"] = float(guidance)
    path = os.path.join(tmp, f"{level['name']}-g{guidance}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(dict(name=f"eval-{level['name']}-g{guidance}", levels=[level]), f,
                       sort_keys=False)
    return path, level


# ---------------------------------------------------------------- measures
def gaussian(f):
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet(a, b):
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); the trace of the root from the
    eigenvalues of S_a^(1/2) S_b S_a^(1/2), symmetric, so numpy alone does it stably."""
    (mu_a, s_a), (mu_b, s_b) = a, b
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def interval(values):
    return float(np.percentile(values, 5)), float(np.percentile(values, 95))


def fed(f, ref, rng, size=None):
    """(FED of f against the Gaussian ref, 90% interval): resamples of f of its own size with
    replacement; with size, the mean and spread of draws of size without replacement."""
    if size is None:
        # A resample's duplicates bias a Frechet distance upwards (by about 0.3 at 216 points,
        # 0.05 at 1,000, for these features): the interval is recentred on the estimate.
        value = frechet(gaussian(f), ref)
        boots = np.array([frechet(gaussian(f[rng.integers(0, len(f), len(f))]), ref)
                          for _ in range(BOOT)])
        return dict(value=value, interval=interval(boots - boots.mean() + value))
    size = min(size, len(f))
    draws = [frechet(gaussian(f[rng.choice(len(f), size, replace=False)]), ref)
             for _ in range(BOOT)]
    return dict(value=float(np.mean(draws)), interval=interval(draws))


def distances(a, b):
    d = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(d, 0))


def knn_radius(x, k):
    d = distances(x, x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]


def covered(query, ref, k):
    """Per query point: inside the k-NN ball of some ref point (the ref set's manifold)."""
    return (distances(query, ref) <= knn_radius(ref, k)[None, :]).any(axis=1)


def mean_interval(hits, rng):
    boots = [hits[rng.integers(0, len(hits), len(hits))].mean() for _ in range(BOOT)]
    return dict(value=float(hits.mean()), interval=interval(boots))


def precision_recall(real, fake, rng):
    """Precision resamples the samples' hits, recall the real images' hits (manifolds fixed).
    Density and coverage (Naeem et al. 2020) beside them: precision and recall count a point
    inside the ball of one outlier, whose radius is large; density counts the real balls a
    sample is in (over K), coverage the real images whose own ball holds a sample."""
    inside = distances(fake, real) <= knn_radius(real, K)[None, :]
    return dict(precision=mean_interval(inside.any(axis=1), rng),
                recall=mean_interval(covered(real, fake, K), rng),
                density=mean_interval(inside.sum(axis=1) / K, rng),
                coverage=mean_interval(inside.any(axis=0), rng))


def nearer_than_median(x, train):
    """Share of x nearer a training point than the median training nearest-neighbour distance."""
    d = distances(train, train)
    np.fill_diagonal(d, np.inf)
    median = float(np.median(d.min(axis=1)))
    return float(np.mean(distances(x, train).min(axis=1) < median)), median


def class_accuracy(pred, labels, rng):
    hits = pred == labels
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    boots = [np.concatenate([hits[rng.choice(g, len(g))] for g in groups]).mean()
             for _ in range(BOOT)]
    per = [float(hits[g].mean()) for g in groups]
    return dict(value=float(hits.mean()), interval=interval(boots), per_group=per)


# ---------------------------------------------------------------- trivial generators
def mean_plus_noise(train, n, rng):
    """The training mean image plus independent Gaussian noise of the per-pixel spread."""
    x = train.astype(np.float64)
    out = x.mean(0) + x.std(0) * rng.standard_normal((n,) + x.shape[1:])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def blobs(n, rng):
    """One to three blurred ellipses of random colours on white, the emoji's ground."""
    out = []
    for _ in range(n):
        im = Image.new("RGB", (32, 32), (255, 255, 255))
        draw = ImageDraw.Draw(im)
        for _ in range(rng.integers(1, 4)):
            cx, cy, rx, ry = rng.uniform(8, 24, 2).tolist() + rng.uniform(4, 14, 2).tolist()
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry],
                         fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        out.append(np.asarray(im.filter(ImageFilter.GaussianBlur(1.5))))
    return np.stack(out)


# ---------------------------------------------------------------- the run
class Data:
    """The emoji at 32x32, their groups, the split, and the frozen classifier's outputs."""

    def __init__(self):
        self.net, self.config = train_classifier.load()
        held = np.load(os.path.join(DATA, "heldout.npy"))
        images = np.load(os.path.join(DATA, "emoji_32.npy"))
        labels = np.load(os.path.join(DATA, "labels.npy")).astype(np.int64)
        self.train, self.held, self.held_labels = images[~held], images[held], labels[held]
        self.train_labels = labels[~held]
        self.f_train, _ = self.features(self.train)
        self.f_held, logits = self.features(self.held)
        self.held_hits = logits.argmax(1) == self.held_labels
        self.ref = dict(train=gaussian(self.f_train), heldout=gaussian(self.f_held))

    def features(self, images):
        return train_classifier.run(self.net, images)

    def group_shares(self):
        counts = np.bincount(self.train_labels, minlength=self.config["arch"]["classes"])
        return counts / counts.sum()


def fed_row(d, f, seed, like_floor=False):
    row = {name: fed(f, ref, np.random.default_rng([seed, i]))
           for i, (name, ref) in enumerate(d.ref.items())}
    if like_floor:
        row["train, 216 at a time"] = fed(f, d.ref["train"], np.random.default_rng([seed, 9]),
                                          size=len(d.held))
    return row


def measure_unconditional(d, samples, n):
    """FED, precision and recall, memorisation and groups of the unconditional samples, with
    the floor, the ceilings and the precision/recall reference."""
    f_gen, logits = d.features(samples)
    rng = np.random.default_rng(1)
    trivial = {"mean + noise": mean_plus_noise(d.train, n, rng), "blobs": blobs(n, rng)}
    f_triv = {k: d.features(v)[0] for k, v in trivial.items()}
    r = dict(fed={"l32": fed_row(d, f_gen, 2, like_floor=True),
                  "held-out emoji (floor)": {"train": fed(d.f_held, d.ref["train"],
                                                          np.random.default_rng(3))}})
    r["fed"].update({k: fed_row(d, f, 4 + i) for i, (k, f) in enumerate(f_triv.items())})
    order = np.random.default_rng(6).permutation(len(d.train))
    real, other = d.f_train[order[:n]], d.f_train[order[n:2 * n]]
    r["precision_recall"] = {"l32": precision_recall(real, f_gen, np.random.default_rng(7)),
                             "training emoji (reference)": precision_recall(
                                 real, other, np.random.default_rng(8))}
    r["precision_recall"].update({k: precision_recall(real, f, np.random.default_rng(9 + i))
                                  for i, (k, f) in enumerate(f_triv.items())})
    r["precision_heldout"] = mean_interval(covered(d.f_held, real, K), np.random.default_rng(11))
    flat = d.train.reshape(len(d.train), -1).astype(np.float64)
    pix, pix_median = nearer_than_median(samples.reshape(n, -1).astype(np.float64), flat)
    feat, feat_median = nearer_than_median(f_gen, d.f_train)
    held_pix, _ = nearer_than_median(d.held.reshape(len(d.held), -1).astype(np.float64), flat)
    held_feat, _ = nearer_than_median(d.f_held, d.f_train)
    r["memorisation"] = dict(pixels=pix, pixels_median=pix_median, features=feat,
                             features_median=feat_median, heldout_pixels=held_pix,
                             heldout_features=held_feat)
    groups = np.bincount(logits.argmax(1), minlength=len(d.group_shares()))
    r["groups"] = dict(samples=(groups / n).tolist(), training=d.group_shares().tolist())
    return r


def measure_classes(d, args, out, tmp, level):
    """Class accuracy of class-conditional samples at each guidance."""
    r = {}
    groups = d.config["arch"]["classes"]
    for g in GUIDANCES:
        path, _ = first_level_alone(args.pipeline, g, tmp)
        images, labels = [], []
        for c in range(groups):
            images.append(render_cached(out, f"{level['name']}-g{g}-c{c}-n{args.class_samples}", [
                "--pipeline", path, "--resolution", str(level["side"]), "--seed", "0",
                "--class-label", str(c), "--workers", f"{level['name']}={args.workers}"],
                args.class_samples))
            labels += [c] * args.class_samples
        pred = d.features(np.concatenate(images))[1].argmax(1)
        r[str(g)] = class_accuracy(pred, np.array(labels), np.random.default_rng([12, g]))
    return r


def measure(args, tmp):
    d = Data()
    out = args.render_dir or tmp
    _, level = first_level_alone(args.pipeline, 1, tmp)
    samples = render_cached(out, f"{level['name']}-n{args.quality_samples}", [
        "--pipeline", args.pipeline, "--resolution", str(level["side"]), "--seed", "0",
        "--workers", f"{level['name']}={args.workers}"], args.quality_samples)
    r = dict(level=level["name"], samples=args.quality_samples, class_samples=args.class_samples,
             classifier=dict(heldout=mean_interval(d.held_hits, np.random.default_rng(0)),
                             images=len(d.held)))
    r.update(measure_unconditional(d, samples, args.quality_samples))
    r["class_accuracy"] = measure_classes(d, args, out, tmp, level)
    return r


# ---------------------------------------------------------------- report
def fmt(m, digits=2):
    lo, hi = m["interval"]
    return f"{m['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def report(r):
    """Prints the figures, one idea a line; returns whether the sanity bars hold."""
    name, n = r["level"], r["samples"]
    p = f"quality {name}:"
    print(f"{p} classifier (tools/classifier, 64 features): held-out accuracy "
          f"{fmt(r['classifier']['heldout'], 3)} over {r['classifier']['images']} emoji")
    fed_ = r["fed"]
    ceilings = {k: v for k, v in fed_.items() if k in ("mean + noise", "blobs")}
    for ref in ("train", "heldout"):
        print(f"{p} FED against the {'training' if ref == 'train' else 'held-out'} emoji: "
              f"{name} ({n} samples) {fmt(fed_[name][ref])}; " +
              ("floor (held-out emoji) " + fmt(fed_["held-out emoji (floor)"]["train"]) + "; "
               if ref == "train" else "") +
              "; ".join(f"ceiling {k} {fmt(v[ref])}" for k, v in ceilings.items()), flush=True)
    print(f"{p} FED against the training emoji, 216 samples at a time (the floor's size): "
          f"{fmt(fed_[name]['train, 216 at a time'])}")
    pr = r["precision_recall"]
    print(f"{p} precision / recall / density / coverage (k={K}, {n} training emoji as the real "
          f"set; held-out emoji precision {fmt(r['precision_heldout'], 3)}):")
    for k, v in pr.items():
        print(f"{p}   {k}: " + " / ".join(fmt(v[m], 3) for m in
                                         ("precision", "recall", "density", "coverage")))
    acc = r["class_accuracy"]
    print(f"{p} class accuracy of class-conditional samples ({r['class_samples']} a group): " +
          "; ".join(f"guidance {g} {fmt(v, 3)}" for g, v in acc.items()))
    for g, v in acc.items():
        print(f"{p}   per group at guidance {g}: " +
              " ".join(f"{a:.2f}" for a in v["per_group"]))
    mem = r["memorisation"]
    print(f"{p} memorisation: {100 * mem['pixels']:.1f}% of {n} samples nearer a training emoji "
          f"than the median training nearest-neighbour distance in pixels (L2, "
          f"{mem['pixels_median']:.0f}), {100 * mem['features']:.1f}% in features "
          f"({mem['features_median']:.2f}); held-out emoji: {100 * mem['heldout_pixels']:.1f}% "
          f"and {100 * mem['heldout_features']:.1f}%")
    print(f"{p} groups the classifier gives the samples / the training emoji: " +
          " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(r["groups"]["samples"],
                                                      r["groups"]["training"])), flush=True)
    # Sanity bars, not quality targets: a broken level (noise, a constant image, labels ignored)
    # fails them; the figures themselves are for comparing models.
    worst_ceiling = min(v["train"]["interval"][0] for v in ceilings.values())
    ok = fed_[name]["train"]["interval"][1] < worst_ceiling
    ok &= acc[SHIPPED]["interval"][0] > 2 / len(acc[SHIPPED]["per_group"])
    print(f"{p} {'ok' if ok else 'FAILED'}: FED below the ceilings, class accuracy at "
          f"the shipped guidance ({SHIPPED}) above twice chance", flush=True)
    return ok


def check(pipe, args, tmp):
    """The `quality` check of tools/eval_cascade.py."""
    r = measure(args, tmp)
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return report(r)


def add_arguments(parser):
    parser.add_argument("--quality-samples", type=int, default=1000,
                        help="unconditional first-level samples for FED, precision, recall")
    parser.add_argument("--class-samples", type=int, default=24,
                        help="class-conditional samples per group and guidance")
    parser.add_argument("--render-dir", help="keep the renders here and reuse them (default: "
                                             "a temporary directory)")
    parser.add_argument("--json", help="also write the figures to this JSON file")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=PIPELINE)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    add_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strata-quality-") as tmp:
        return 0 if check(None, args, tmp) else 1


if __name__ == "__main__":
    sys.exit(main())
