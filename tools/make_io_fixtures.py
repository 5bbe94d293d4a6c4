"""Writes the safetensors fixtures of tests/kernels/test_io.c with the Python safetensors library.

    .venv/bin/python tools/make_io_fixtures.py [--out tests/fixtures/io]

tiny.safetensors: one tensor per dtype the reader converts, plus __metadata__; the expected
values are written out in test_io.c (all exactly representable, so the test compares bits).
f32_sorted.safetensors: float32 tensors given out of name order; st_write_f32 must reproduce
this file byte for byte.
"""

import argparse
import os

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch


def tiny():
    return {
        "f32": torch.tensor([[0.0, 1.5, -2.25], [3.14159274101257324, 1e-30, -65536.0]],
                            dtype=torch.float32),
        "f16": torch.tensor([1.0, -0.5, 65504.0, 2.0**-14, 2.0**-24, float("inf")],
                            dtype=torch.float16),
        "bf16": torch.tensor([[1.0, -3.0], [2.0**-10, 2.0**100]], dtype=torch.bfloat16),
        "i64": torch.tensor([-5, 0, 123456789], dtype=torch.int64),
        "i32": torch.tensor([-7, 2147483647], dtype=torch.int32),
        "f64": torch.tensor([0.1], dtype=torch.float64),
        "down.0.conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2),
    }


def sorted_f32():
    return {
        "z": np.array(7.0, dtype=np.float32),
        "b": np.arange(4, dtype=np.float32).reshape(2, 2),
        "a.weight": np.array([1.0, -2.0, 0.5], dtype=np.float32),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/io")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    save_torch(tiny(), os.path.join(args.out, "tiny.safetensors"), metadata={"format": "pt"})
    save_numpy(sorted_f32(), os.path.join(args.out, "f32_sorted.safetensors"))


if __name__ == "__main__":
    main()
