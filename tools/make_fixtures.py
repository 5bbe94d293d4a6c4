#!/usr/bin/env python3
"""Reference fixtures for the C UNet2DModel forward and the samplers, made by diffusers itself.

For every case in CASES this script

1. builds a randomly initialised ``diffusers.UNet2DModel`` from a config dict (fixed seed), perturbs it
   so that every parameter matters (GroupNorm affine away from 1/0, conv/linear biases, sharper
   attention), rounds every weight to the case's storage dtype (F32/F16/BF16) and back to float32 so
   that torch and the C side use bit-identical weights;
2. writes ``<out>/<case>/model/`` with ``save_pretrained`` (config.json +
   diffusion_pytorch_model.safetensors, rewritten in the storage dtype with the same tensor names;
   optionally with legacy attention key names ``query/key/value/proj_attn``, optionally with config
   fields stripped so that defaults apply) and ``scheduler_config.json`` (DDIMScheduler);
3. writes ``<out>/<case>/unet.safetensors`` (float32): ``sample`` (N, in_channels, H, W; for an SR
   model this is already concat([x_t, cond])), ``timestep`` (N), ``class_labels`` (when the model
   has a class embedding: (N) or, for class_embed_type "identity", (N, time_embed_dim)) and
   ``expected`` = model(sample, timestep, class_labels).sample;
4. for cases with loops, writes ``<out>/<case>/loops/<sampler>_<prediction>_<spacing>/`` with the
   scheduler's ``scheduler_config.json`` and ``io.safetensors``: ``noise``, ``class_labels``, ``cond``
   (SR only), ``steps``, ``timesteps`` (for debugging) and ``expected`` = final sample of a
   diffusers-style sampling loop;
5. reloads every written model directory with ``UNet2DModel.from_pretrained`` and checks that it
   reproduces ``expected`` exactly (this validates dtype rewrite, legacy keys and stripped configs);
6. writes ``<out>/<case>/meta.json`` with shapes, statistics and the float32-vs-float64 discrepancy of
   each expected tensor (a guide for the C test tolerance).

Deterministic: fixed per-case seeds, ``torch.use_deterministic_algorithms(True)``, one thread.

Usage:
    .venv/bin/python tools/make_fixtures.py                 # all cases -> tests/fixtures/unet
    .venv/bin/python tools/make_fixtures.py --only small3   # rebuild one case
    .venv/bin/python tools/make_fixtures.py --list
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import re
import shutil
import sys

import torch

STORAGE_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}

# Legacy (pre-0.14 diffusers AttentionBlock) names of the attention projections.
LEGACY_RENAMES = [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")]

ALL_LOOPS = [
    (sampler, pred, spacing)
    for sampler in ("ddim", "dpm++2m")
    for pred in ("epsilon", "v_prediction", "sample")
    for spacing in ("leading", "trailing", "linspace")
]
LOOP_STEPS = {"ddim": 12, "dpm++2m": 15}

# The google/ddpm-cifar10-32 hub config (config.json keeps exactly these fields).
CIFAR10_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}

# Each case:
#   config        kwargs of UNet2DModel
#   dtype         storage dtype of diffusion_pytorch_model.safetensors
#   n, hw         batch and spatial size of unet.safetensors
#   timesteps     one per batch element (float32 in the fixture)
#   class_labels  list (ints or noise levels) or "identity" (random (N, time_embed_dim))
#   prediction    prediction_type of model/scheduler_config.json
#   legacy        write attention weights under legacy names
#   keep_keys     if set: config.json keeps only these fields (the rest must be defaults)
#   strip_defaults: config.json drops every field equal to UNet2DModel's default
#   loops         list of (sampler, prediction, spacing); loop_n, loop_hw, loop_class_labels
CASES: dict[str, dict] = {
    "cifar10": dict(
        seed=1001,
        config=dict(CIFAR10_CONFIG),
        dtype="F16",
        n=2,
        hw=(32, 32),
        timesteps=[999.0, 37.0],
        prediction="epsilon",
        legacy=True,
        keep_keys=sorted(CIFAR10_CONFIG),
        doc="google/ddpm-cifar10-32 architecture and config.json (only the hub's fields), F16 weights "
        "under LEGACY attention names (query/key/value/proj_attn), as in the hub checkpoint. "
        "attention_head_dim null -> 1 head of 256; downsample_padding 0 -> asymmetric pad; "
        "flip_sin_to_cos false, freq_shift 1; norm_eps 1e-6; 32 groups.",
    ),
    "small3": dict(
        seed=1002,
        config=dict(
            sample_size=16,
            in_channels=3,
            out_channels=3,
            block_out_channels=[16, 32, 32],
            down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            layers_per_block=1,
            attention_head_dim=8,
            norm_num_groups=8,
            flip_sin_to_cos=True,
            freq_shift=0,
            downsample_padding=1,
            num_class_embeds=10,
        ),
        dtype="F32",
        n=2,
        hw=(16, 16),
        timesteps=[500.0, 1.0],
        class_labels=[3, 7],
        prediction="epsilon",
        loops=ALL_LOOPS,
        loop_n=2,
        loop_hw=(16, 16),
        loop_class_labels=[3, 7],
        doc="3 levels, multi-head attention (head dim 8 -> 4 heads of 8 at 32 channels) in down, mid "
        "and up blocks, nn.Embedding class labels (num_class_embeds 10), flip_sin_to_cos true, "
        "freq_shift 0, F32 weights. Carries the 18 sampler loops.",
    ),
    "sr": dict(
        seed=1003,
        config=dict(
            sample_size=32,
            in_channels=6,
            out_channels=3,
            class_embed_type="timestep",
            resnet_time_scale_shift="scale_shift",
            block_out_channels=[16, 32],
            down_block_types=["DownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            layers_per_block=1,
            attention_head_dim=16,
            norm_num_groups=8,
            mid_block_scale_factor=1.0,
        ),
        dtype="F32",
        n=2,
        hw=(32, 32),
        timesteps=[999.0, 250.0],
        class_labels=[100.0, 0.0],
        prediction="v_prediction",
        loops=[("ddim", "v_prediction", "trailing"), ("dpm++2m", "epsilon", "leading")],
        loop_n=1,
        loop_hw=(16, 16),
        loop_class_labels=[250.0],
        doc="super-resolution UNet: in 6 = concat([x_t (3), cond (3)]), out 3; class_embed_type "
        "'timestep' (noise level through the sinusoidal time_proj then its own TimestepEmbedding); "
        "resnet_time_scale_shift 'scale_shift' (time_emb_proj 2*C, norm2 * (1+scale) + shift, and NO "
        "group_norm in the mid-block attention); 2 heads of 16. 2 loops.",
    ),
    "banded": dict(
        seed=1009,
        config=dict(
            sample_size=112,
            in_channels=6,
            out_channels=3,
            class_embed_type="timestep",
            block_out_channels=[32, 32],
            down_block_types=["DownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "UpBlock2D"],
            layers_per_block=1,
            add_attention=False,
            norm_num_groups=8,
        ),
        dtype="F16",
        n=2,
        hw=(112, 112),
        timesteps=[500.0, 20.0],
        class_labels=[50.0, 0.0],
        prediction="v_prediction",
        doc="a refine UNet like the shipped ones (no attention) on a 112x112 canvas: its full-size "
        "3x3 convolutions (im2col 576 x 12544) are built and multiplied in two bands of output "
        "rows (kernels/conv.c CONV_BAND_FLOATS), the other cases in one.",
    ),
    "tiles": dict(
        seed=1011,
        config=dict(
            sample_size=160,
            in_channels=6,
            out_channels=3,
            class_embed_type="timestep",
            block_out_channels=[32, 64, 64],
            down_block_types=["DownBlock2D", "DownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "UpBlock2D", "UpBlock2D"],
            layers_per_block=1,
            add_attention=False,
            norm_num_groups=16,
        ),
        dtype="F16",
        n=2,
        hw=(160, 160),
        timesteps=[700.0, 30.0],
        class_labels=[25.0, 0.0],
        prediction="v_prediction",
        doc="the shipped super-resolution architecture (models/l4096) on a 160x160 canvas: its "
        "full-size 3x3 convolutions run in bands of output rows built from their inputs as stored "
        "(kernels/conv_band.c: the up path's concatenations, with GroupNorm groups spanning both "
        "maps, and the upsampler's nearest x2 read on the fly), the half-size ones as before.",
    ),
    "sr_bf16": dict(
        seed=1004,
        config=None,  # same as sr (filled in below)
        dtype="BF16",
        n=2,
        hw=(32, 32),
        timesteps=[600.0, 10.0],
        class_labels=[999.0, 20.0],
        prediction="v_prediction",
        doc="same architecture as sr, different random weights, stored as BF16.",
    ),
    "defaults": dict(
        seed=1005,
        config=dict(
            sample_size=8,
            center_input_sample=True,
            class_embed_type="identity",
            block_out_channels=[16, 32],
            down_block_types=["DownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=4,
            norm_eps=1e-5,
        ),
        dtype="F16",
        n=2,
        hw=(8, 8),
        timesteps=[999.0, 500.5],
        class_labels="identity",
        prediction="epsilon",
        strip_defaults=True,
        doc="config.json without any field that equals UNet2DModel's default (so attention_head_dim "
        "-> 8, layers_per_block -> 2, mid_block_type -> UNetMidBlock2D, in/out 3, norm_eps 1e-5, "
        "flip_sin_to_cos true, freq_shift 0, act_fn silu, ...), center_input_sample true, "
        "class_embed_type 'identity' (class_labels is (N, 64) added to the time embedding), a "
        "fractional timestep (500.5), F16 weights.",
    ),
    "nomid": dict(
        seed=1006,
        config=dict(
            sample_size=16,
            block_out_channels=[8, 16, 16],
            down_block_types=["AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            mid_block_type=None,
            downsample_type="resnet",
            upsample_type="resnet",
            layers_per_block=1,
            norm_num_groups=4,
        ),
        dtype="F32",
        n=2,
        hw=(16, 16),
        timesteps=[700.0, 3.0],
        prediction="epsilon",
        doc="mid_block_type null (no mid block), downsample_type/upsample_type 'resnet': only "
        "AttnDownBlock2D/AttnUpBlock2D use a ResnetBlock2D(down/up=True) as down/upsampler; "
        "DownBlock2D (level 1) and UpBlock2D (level 0) ignore the field and keep the conv ones.",
    ),
    "extras": dict(
        seed=1007,
        config=dict(
            sample_size=[8, 16],
            in_channels=4,
            out_channels=2,
            block_out_channels=[8, 16],
            down_block_types=["AttnDownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "AttnUpBlock2D"],
            layers_per_block=1,
            act_fn="mish",
            time_embedding_dim=40,
            attention_head_dim=6,
            norm_num_groups=4,
            attn_norm_num_groups=2,
            resnet_time_scale_shift="scale_shift",
            mid_block_scale_factor=1.41421356,
            downsample_padding=0,
            norm_eps=1e-4,
            num_class_embeds=5,
        ),
        dtype="F32",
        n=2,
        hw=(8, 16),
        timesteps=[400.0, 0.0],
        class_labels=[4, 0],
        prediction="sample",
        doc="less common fields: act_fn 'mish' (resnets only; conv_act and the time MLP stay SiLU), "
        "time_embedding_dim 40 (not 4*8), attention_head_dim 6 (heads = C // 6: 1 head at 8 ch, "
        "2 heads at 16 ch; inner dim 6/12 != C, i.e. to_q is 8->6 and to_out 6->8 at level 0), "
        "attn_norm_num_groups 2 "
        "(mid attention gets a GroupNorm(2) although resnet_time_scale_shift is 'scale_shift'), "
        "mid_block_scale_factor sqrt(2) (mid resnets AND mid attention divide by it), "
        "downsample_padding 0, norm_eps 1e-4, in 4 / out 2 channels, non-square 8x16, timestep 0.",
    ),
    "noattn": dict(
        seed=1008,
        config=dict(
            sample_size=8,
            block_out_channels=[8, 16],
            down_block_types=["DownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "UpBlock2D"],
            layers_per_block=2,
            add_attention=False,
            norm_num_groups=2,
        ),
        dtype="BF16",
        n=1,
        hw=(8, 8),
        timesteps=[123.0],
        prediction="epsilon",
        doc="add_attention false (mid block = resnet, resnet, no attention weights), no attention "
        "anywhere, layers_per_block 2, N=1, BF16.",
    ),
    "legacy": dict(
        seed=1009,
        config=dict(
            sample_size=8,
            block_out_channels=[8, 16],
            down_block_types=["AttnDownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "AttnUpBlock2D"],
            layers_per_block=1,
            attention_head_dim=4,
            norm_num_groups=2,
        ),
        dtype="F32",
        n=2,
        hw=(8, 8),
        timesteps=[999.0, 500.0],
        prediction="epsilon",
        legacy=True,
        doc="tiny model whose attention weights (down, mid, up) are stored under the legacy names "
        "query/key/value/proj_attn: the cheap version of the cifar10 legacy check.",
    ),
}
CASES["sr_bf16"]["config"] = dict(CASES["sr"]["config"])


# --------------------------------------------------------------------------------------------------


def set_determinism(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def unet_defaults() -> dict:
    from diffusers import UNet2DModel

    sig = inspect.signature(UNet2DModel.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self"}


def same_value(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def perturb_and_round(model: torch.nn.Module, gen: torch.Generator, dtype: torch.dtype) -> None:
    """Make every parameter matter, then round all parameters to `dtype` (kept as float32)."""
    from diffusers.models.attention_processor import Attention

    def randn_like(t):
        return torch.randn(t.shape, generator=gen, dtype=torch.float32)

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.GroupNorm):
                mod.weight.copy_(1.0 + 0.1 * randn_like(mod.weight))
                mod.bias.copy_(0.1 * randn_like(mod.bias))
            elif isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and mod.bias is not None:
                mod.bias.add_(0.05 * randn_like(mod.bias))
        # Default init gives near-uniform softmax (logit std ~0.35); sharpen it so head split,
        # transposes and the softmax scale are really tested (logit std ~2).
        for mod in model.modules():
            if isinstance(mod, Attention):
                for lin in (mod.to_q, mod.to_k):
                    lin.weight.mul_(2.5)
                    lin.bias.mul_(2.5)
        for name, p in model.named_parameters():
            if torch.count_nonzero(p) == 0:
                print(f"  note: {name} was all zero, re-initialised", file=sys.stderr)
                p.copy_(0.05 * randn_like(p))
        for name, p in model.named_parameters():
            p.copy_(p.to(dtype).to(torch.float32))
        for name, p in model.named_parameters():
            assert torch.count_nonzero(p) > 0, name


def legacy_name(key: str) -> str:
    m = re.match(r"^(.*\.attentions\.\d+)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", key)
    if not m:
        return key
    return f"{m.group(1)}.{dict(LEGACY_RENAMES)[m.group(2)]}.{m.group(3)}"


def rewrite_weights(model_dir: str, dtype_name: str, legacy: bool) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = os.path.join(model_dir, "diffusion_pytorch_model.safetensors")
    tensors = {}
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            t = f.get_tensor(k)
            assert t.dtype == torch.float32, (k, t.dtype)
            t16 = t.to(STORAGE_DTYPES[dtype_name])
            assert torch.equal(t16.to(torch.float32), t), f"{k} not exactly representable"
            tensors[legacy_name(k) if legacy else k] = t16.contiguous()
    if legacy:
        n = sum(1 for k in tensors if re.search(r"\.(query|key|value|proj_attn)\.", k))
        assert n > 0, "legacy requested but no attention weights"
    meta = dict(meta)
    meta.setdefault("format", "pt")
    save_file(tensors, path, metadata=meta)


def edit_config(model_dir: str, case: dict) -> list[str]:
    path = os.path.join(model_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    defaults = unet_defaults()
    removed = []
    for k in list(cfg):
        if k.startswith("_"):
            continue
        drop = False
        if case.get("keep_keys") is not None and k not in case["keep_keys"]:
            drop = True
            if not same_value(cfg[k], defaults[k]):
                raise SystemExit(f"config field {k}={cfg[k]!r} would be dropped but is not the default")
        if case.get("strip_defaults") and k in defaults and same_value(cfg[k], defaults[k]):
            drop = True
        if drop:
            del cfg[k]
            removed.append(k)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    return removed


def make_scheduler(sampler: str, prediction: str, spacing: str):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = dict(
        num_train_timesteps=1000,
        beta_schedule="linear",
        prediction_type=prediction,
        timestep_spacing=spacing,
    )
    if sampler == "ddim":
        return DDIMScheduler(clip_sample=False, **common)
    if sampler == "dpm++2m":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **common)
    raise ValueError(sampler)


def class_labels_tensor(spec, n: int, time_embed_dim: int, gen: torch.Generator, model):
    """Returns (float32 tensor stored in the fixture, tensor passed to the torch model)."""
    if spec is None:
        return None, None
    if spec == "identity":
        t = torch.randn((n, time_embed_dim), generator=gen, dtype=torch.float32)
        return t, t
    t = torch.tensor(spec, dtype=torch.float32)
    assert t.shape == (n,), (spec, n)
    if model.config.class_embed_type is None:  # nn.Embedding needs integer indices
        return t, t.to(torch.long)
    return t, t


def run_model(model, sample, timestep, class_labels):
    with torch.no_grad():
        return model(sample, timestep, class_labels).sample


def sampling_loop(model, scheduler, noise, steps, class_labels, cond):
    """The loop of a diffusers pipeline, written out."""
    x = noise * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t)
            if cond is not None:
                inp = torch.cat([inp, cond], dim=1)
            out = model(inp, t, class_labels).sample
            x = scheduler.step(out, t, x).prev_sample
    return x


def stats(expected: torch.Tensor, ref64: torch.Tensor) -> dict:
    diff = (expected.double() - ref64).abs()
    return {
        "shape": list(expected.shape),
        "max_abs": float(expected.abs().max()),
        "rms": float(expected.double().pow(2).mean().sqrt()),
        "max_abs_diff_f32_vs_f64": float(diff.max()),
        "rms_diff_f32_vs_f64": float(diff.pow(2).mean().sqrt()),
    }


def save_st(path: str, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.to(torch.float32).contiguous() for k, v in tensors.items()}, path)


def build_case(name: str, case: dict, out_root: str) -> dict:
    from diffusers import DDIMScheduler, UNet2DModel

    print(f"[{name}] building", file=sys.stderr)
    torch.manual_seed(case["seed"])
    gen = torch.Generator().manual_seed(case["seed"] + 7)
    dtype_name = case["dtype"]
    model = UNet2DModel(**case["config"]).eval()
    perturb_and_round(model, gen, STORAGE_DTYPES[dtype_name])

    case_dir = os.path.join(out_root, name)
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    model_dir = os.path.join(case_dir, "model")
    os.makedirs(model_dir)
    model.save_pretrained(model_dir, safe_serialization=True)
    rewrite_weights(model_dir, dtype_name, case.get("legacy", False))
    removed = edit_config(model_dir, case)
    DDIMScheduler(prediction_type=case["prediction"]).save_config(model_dir)

    cfg = model.config
    time_embed_dim = cfg.time_embedding_dim or cfg.block_out_channels[0] * 4
    n, (h, w) = case["n"], case["hw"]
    model64 = copy.deepcopy(model).double()
    # time_proj always returns float32; UNet2DModel casts it for the time MLP but not on the
    # class_embed_type="timestep" path, so a float64 copy needs the cast done here.
    _tp = model64.time_proj.forward
    model64.time_proj.forward = lambda x: _tp(x).double()

    # ---- single forward
    sample = torch.randn((n, cfg.in_channels, h, w), generator=gen, dtype=torch.float32)
    timestep = torch.tensor(case["timesteps"], dtype=torch.float32)
    cl_store, cl_model = class_labels_tensor(case.get("class_labels"), n, time_embed_dim, gen, model)
    expected = run_model(model, sample, timestep, cl_model)
    cl64 = cl_model.double() if cl_model is not None and cl_model.is_floating_point() else cl_model
    ref64 = run_model(model64, sample.double(), timestep.double(), cl64)
    tensors = {"sample": sample, "timestep": timestep, "expected": expected}
    if cl_store is not None:
        tensors["class_labels"] = cl_store
    save_st(os.path.join(case_dir, "unet.safetensors"), tensors)

    meta = {
        "case": name,
        "doc": case["doc"],
        "storage_dtype": dtype_name,
        "legacy_attention_names": bool(case.get("legacy", False)),
        "config_fields_removed": removed,
        "time_embed_dim": time_embed_dim,
        "unet": {
            "timestep": case["timesteps"],
            "class_labels": "random (N, time_embed_dim)" if cl_store is not None and cl_store.dim() == 2
            else case.get("class_labels"),
            "expected": stats(expected, ref64),
        },
        "loops": {},
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
    }

    # ---- sampling loops
    c_out = cfg.out_channels
    c_cond = cfg.in_channels - cfg.out_channels
    for sampler, pred, spacing in case.get("loops", []):
        lname = f"{sampler}_{pred}_{spacing}"
        ldir = os.path.join(case_dir, "loops", lname)
        os.makedirs(ldir)
        steps = LOOP_STEPS[sampler]
        ln, (lh, lw) = case["loop_n"], case["loop_hw"]
        lgen = torch.Generator().manual_seed(case["seed"] * 1000 + len(meta["loops"]))
        noise = torch.randn((ln, c_out, lh, lw), generator=lgen, dtype=torch.float32)
        cond = torch.randn((ln, c_cond, lh, lw), generator=lgen, dtype=torch.float32) if c_cond else None
        lcl_store, lcl_model = class_labels_tensor(case.get("loop_class_labels"), ln, time_embed_dim, lgen, model)
        sched = make_scheduler(sampler, pred, spacing)
        sched.save_config(ldir)
        x = sampling_loop(model, sched, noise, steps, lcl_model, cond)
        timesteps = sched.timesteps.to(torch.float32)
        sched64 = make_scheduler(sampler, pred, spacing)
        lcl64 = lcl_model.double() if lcl_model is not None and lcl_model.is_floating_point() else lcl_model
        x64 = sampling_loop(model64, sched64, noise.double(), steps, lcl64,
                            cond.double() if cond is not None else None)
        io = {"noise": noise, "steps": torch.tensor([float(steps)]), "timesteps": timesteps, "expected": x}
        if lcl_store is not None:
            io["class_labels"] = lcl_store
        if cond is not None:
            io["cond"] = cond
        save_st(os.path.join(ldir, "io.safetensors"), io)
        meta["loops"][lname] = {
            "sampler": sampler,
            "prediction_type": pred,
            "timestep_spacing": spacing,
            "steps": steps,
            "timesteps": [int(t) for t in sched.timesteps],
            "expected": stats(x, x64),
        }
        print(f"[{name}] loop {lname}: max|x|={meta['loops'][lname]['expected']['max_abs']:.4g} "
              f"f32-f64={meta['loops'][lname]['expected']['max_abs_diff_f32_vs_f64']:.3g}", file=sys.stderr)

    # ---- check: diffusers reloads what we wrote and reproduces expected exactly
    reloaded = UNet2DModel.from_pretrained(model_dir).eval()
    re_out = run_model(reloaded.float(), sample, timestep, cl_model)
    if not torch.equal(re_out, expected):
        raise SystemExit(f"[{name}] from_pretrained output differs: {float((re_out - expected).abs().max())}")
    for k in case["config"]:
        if not same_value(getattr(reloaded.config, k), case["config"][k]):
            raise SystemExit(f"[{name}] reloaded config {k} differs")

    with open(os.path.join(case_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    e = meta["unet"]["expected"]
    print(f"[{name}] unet: max|y|={e['max_abs']:.4g} rms={e['rms']:.4g} "
          f"f32-f64={e['max_abs_diff_f32_vs_f64']:.3g}", file=sys.stderr)
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Cases: " + ", ".join(CASES))
    default_out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "unet")
    ap.add_argument("--out", default=default_out,
                    help="output folder (default: tests/fixtures/unet of this repository)")
    ap.add_argument("--only", metavar="NAME", action="append",
                    help="rebuild only this case (repeatable); see --list")
    ap.add_argument("--skip", metavar="NAME", action="append", default=[], help="skip this case (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = ap.parse_args(argv)

    if args.list:
        for k, c in CASES.items():
            print(f"{k:10s} {c['dtype']:5s} {c['doc']}")
        return 0
    names = args.only or list(CASES)
    for nme in names + args.skip:
        if nme not in CASES:
            ap.error(f"unknown case {nme!r}; known: {', '.join(CASES)}")
    set_determinism(args.threads)
    os.makedirs(args.out, exist_ok=True)
    for nme in names:
        if nme in args.skip:
            continue
        build_case(nme, CASES[nme], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
