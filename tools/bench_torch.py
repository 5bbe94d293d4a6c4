"""Time diffusers' UNet2DModel forward on the CPU with PyTorch, for `make bench`.

Prints one line like strata's: `torch batch=1 threads=2 ms=... min_ms=... peak_rss_mb=...
layout=...` (ms the mean forward, min_ms the fastest). The faster of the contiguous and
channels_last layouts is reported (oneDNN picks its convolution kernels per layout); run with
OMP_NUM_THREADS set to --threads.
"""
import argparse
import resource
import time

import torch
from diffusers import UNet2DModel


def time_forward(model, x, t, labels, iters):
    """Mean and fastest forward in milliseconds, after two warm-up passes."""
    with torch.inference_mode():
        for _ in range(2):
            model(x, t, class_labels=labels)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(x, t, class_labels=labels)
            times.append((time.perf_counter() - start) * 1e3)
        return sum(times) / len(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="diffusers UNet2DModel directory")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--size", type=int, help="input side in pixels (default: the model's sample_size)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.backends.mkldnn.enabled = True
    model = UNet2DModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    size = args.size or model.config.sample_size
    x = torch.randn(args.batch, model.config.in_channels, size, size)
    t = torch.full((args.batch,), 500.0)
    labels = None
    if model.config.num_class_embeds or model.config.class_embed_type:
        labels = torch.zeros(args.batch, dtype=torch.long)
    best = None
    for layout in ("contiguous", "channels_last"):
        if layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        ms, fastest = time_forward(model, x, t, labels, args.iters)
        if best is None or fastest < best[1]:
            best = (ms, fastest, layout)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch batch={args.batch} threads={args.threads} ms={best[0]:.2f} "
          f"min_ms={best[1]:.2f} peak_rss_mb={rss:.1f} layout={best[2]} "
          f"version={torch.__version__}")


if __name__ == "__main__":
    main()
