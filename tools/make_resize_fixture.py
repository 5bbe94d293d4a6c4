"""Reference for strata's bilinear cond upsampling: torch.nn.functional.interpolate with
mode="bilinear", align_corners=True (as DeepFloyd IF upsamples the previous stage).

Writes tests/fixtures/resize/bilinear.safetensors with tensors src (3, 7, 5) and the
upsampled dst_<h>x<w> for a few target sizes. Run: .venv/bin/python tools/make_resize_fixture.py
"""
import argparse

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="tests/fixtures/resize/bilinear.safetensors")
    args = parser.parse_args()
    torch.manual_seed(0)
    src = torch.rand(3, 7, 5) * 2 - 1
    tensors = {"src": src}
    for h, w in [(14, 10), (28, 20), (32, 32), (7, 5)]:
        dst = F.interpolate(src[None], size=(h, w), mode="bilinear", align_corners=True)[0]
        tensors[f"dst_{h}x{w}"] = dst.contiguous()
    save_file(tensors, args.out)


if __name__ == "__main__":
    main()
