"""Reference fixtures for the C samplers (kernels/sampler_steps.c), made by diffusers itself.

For every case this runs the real diffusers scheduler (DDPMScheduler, DDIMScheduler or
DPMSolverMultistepScheduler) for a few inference steps on a small tensor of 2 images, feeding
random model outputs and, where a step draws noise, noise we inject (DDIM: the variance_noise
argument; DDPM: a stand-in for the randn_tensor its module calls). It writes

  OUT/<case>/scheduler_config.json  exactly as the scheduler's save_config writes it
  OUT/<case>/io.safetensors         float32 tensors:
      timesteps (n), sample0 (2,2,3,3), model_outputs (n,2,2,3,3), noises (n,2,2,3,3; zeros where
      no noise is drawn), noise_used (n; 1 where the step drew noise), samples (n,2,2,3,3; the
      sample after each step), eta (1; a step() argument in diffusers, not a config field),
      add_noise_t (k), add_noise_x0 (2,2,3,3), add_noise_noise (2,2,3,3),
      add_noise_out (k,2,2,3,3; scheduler.add_noise at each t)

The output is a pure function of the case list and the installed torch/diffusers: random
tensors come from a generator seeded by the case name. Rerunning replaces OUT entirely.
tests/kernels/test_sampler.c replays every case in C.
"""

import argparse
import shutil
import zlib
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from safetensors.torch import save_file

import diffusers.schedulers.scheduling_ddpm as scheduling_ddpm

SHAPE = (2, 2, 3, 3)  # 2 images; thresholding works per image
KINDS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}
PREDICTIONS = {"eps": "epsilon", "v": "v_prediction", "sample": "sample"}
SPACINGS = ("leading", "trailing", "linspace")
SCALED = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
COSINE = {"beta_schedule": "squaredcos_cap_v2"}
ZSNR = {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
        "timestep_spacing": "trailing"}


def case_list():
    """(name, kind, config kwargs, steps, eta) for every case."""
    cases = []
    for kind in KINDS:
        for pred_short, pred in PREDICTIONS.items():
            for spacing in SPACINGS:
                cfg = {"prediction_type": pred, "timestep_spacing": spacing}
                cases.append((f"{kind}_{pred_short}_{spacing}", kind, cfg, 10, 0.0))
    cases += [
        # steps_offset 1: the last step (t = 1) draws noise with std sqrt(beta), not 1e-10
        ("ddpm_fixed_large_offset1", "ddpm", {"variance_type": "fixed_large", "steps_offset": 1},
         10, 0.0),
        ("ddpm_fixed_large_trailing", "ddpm",
         {"variance_type": "fixed_large", "timestep_spacing": "trailing"}, 10, 0.0),
        ("ddpm_offset1", "ddpm", {"steps_offset": 1}, 10, 0.0),
        ("ddpm_noclip", "ddpm", {"clip_sample": False}, 10, 0.0),
        ("ddpm_clip_range", "ddpm", {"clip_sample_range": 1.5}, 10, 0.0),
        ("ddpm_threshold", "ddpm",
         {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5},
         10, 0.0),
        ("ddpm_cosine", "ddpm", COSINE, 10, 0.0),
        ("ddpm_scaled_linear", "ddpm", SCALED, 10, 0.0),
        ("ddpm_zsnr", "ddpm", ZSNR, 10, 0.0),
        ("ddim_eta05", "ddim", {}, 10, 0.5),
        ("ddim_eta1_v_trailing", "ddim",
         {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 10, 1.0),
        ("ddim_alpha_one_false", "ddim", {"set_alpha_to_one": False}, 10, 0.0),
        ("ddim_offset1", "ddim", {"steps_offset": 1}, 10, 0.0),
        ("ddim_noclip_sample", "ddim", {"clip_sample": False, "prediction_type": "sample"},
         10, 0.0),
        ("ddim_threshold", "ddim",
         {"thresholding": True, "dynamic_thresholding_ratio": 0.95, "sample_max_value": 2.5,
          "prediction_type": "v_prediction"}, 10, 0.0),
        ("ddim_cosine", "ddim", COSINE, 10, 0.0),
        ("ddim_scaled_linear", "ddim", SCALED, 10, 0.0),
        ("ddim_zsnr", "ddim", ZSNR, 10, 0.0),
        ("ddim_t500_trailing", "ddim", {"num_train_timesteps": 500, "timestep_spacing": "trailing"},
         15, 0.0),
        ("dpm_order1", "dpm", {"solver_order": 1}, 10, 0.0),
        ("dpm_sigma_min", "dpm", {"final_sigmas_type": "sigma_min"}, 10, 0.0),
        ("dpm_sigma_min_nolof", "dpm",
         {"final_sigmas_type": "sigma_min", "lower_order_final": False}, 10, 0.0),
        ("dpm_sigma_min_16", "dpm", {"final_sigmas_type": "sigma_min"}, 16, 0.0),
        ("dpm_euler_at_final_16", "dpm",
         {"final_sigmas_type": "sigma_min", "euler_at_final": True}, 16, 0.0),
        # lower_order_final off: only final_sigmas_type zero keeps the last step first order
        ("dpm_nolof_zero", "dpm", {"lower_order_final": False}, 10, 0.0),
        ("dpm_threshold", "dpm",
         {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 3.0},
         10, 0.0),
        ("dpm_offset1", "dpm", {"timestep_spacing": "leading", "steps_offset": 1}, 10, 0.0),
        ("dpm_cosine", "dpm", COSINE, 10, 0.0),
        ("dpm_scaled_linear", "dpm", SCALED, 10, 0.0),
        ("dpm_zsnr", "dpm", ZSNR, 10, 0.0),
    ]
    return cases


class InjectedNoise:
    """Stands in for scheduling_ddpm.randn_tensor: hands out noises[i] and records the call."""

    def __init__(self, pool, noises, used):
        self.pool, self.noises, self.used, self.step = pool, noises, used, 0

    def __call__(self, shape, generator=None, device=None, dtype=None, **kwargs):
        assert tuple(shape) == SHAPE and not self.used[self.step]
        self.used[self.step] = 1
        self.noises[self.step] = self.pool[self.step]
        return self.pool[self.step].clone().to(dtype or torch.float32)


def run_steps(sched, kind, eta, gen):
    """Steps sched through its timesteps; returns the tensors the C test replays."""
    n = len(sched.timesteps)
    sample0 = torch.randn(SHAPE, generator=gen)
    outs = torch.randn((n, *SHAPE), generator=gen)
    pool = torch.randn((n, *SHAPE), generator=gen)
    noises, used = torch.zeros((n, *SHAPE)), torch.zeros(n)
    samples = torch.zeros((n, *SHAPE))
    inject = InjectedNoise(pool, noises, used)
    original = scheduling_ddpm.randn_tensor
    scheduling_ddpm.randn_tensor = inject
    try:
        sample = sample0.clone()
        for i, t in enumerate(sched.timesteps):
            inject.step = i
            kwargs = {}
            if kind == "ddim":
                kwargs["eta"] = eta
                if eta > 0:
                    kwargs["variance_noise"] = pool[i].clone()
                    used[i], noises[i] = 1, pool[i]
            sample = sched.step(outs[i], t, sample, **kwargs).prev_sample
            samples[i] = sample
    finally:
        scheduling_ddpm.randn_tensor = original
    return {"timesteps": sched.timesteps.to(torch.float32), "sample0": sample0,
            "model_outputs": outs, "noises": noises, "noise_used": used, "samples": samples}


def run_add_noise(cls, cfg, steps, kind, gen):
    """scheduler.add_noise at a few t: from the schedule for DPM-Solver (it looks t up there)."""
    sched = cls(**cfg)
    sched.set_timesteps(steps)
    if kind == "dpm":
        ts = [int(sched.timesteps[j]) for j in (0, len(sched.timesteps) // 2, -1)]
    else:
        ts = [0, 1, sched.config.num_train_timesteps // 2, sched.config.num_train_timesteps - 1]
    x0, noise = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
    out = torch.stack([sched.add_noise(x0, noise, torch.tensor([t])) for t in ts])
    return {"add_noise_t": torch.tensor(ts, dtype=torch.float32), "add_noise_x0": x0,
            "add_noise_noise": noise, "add_noise_out": out}


def make_case(out_dir, name, kind, cfg, steps, eta):
    cls = KINDS[kind]
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    sched = cls(**cfg)
    sched.set_timesteps(steps)
    case_dir = out_dir / name
    case_dir.mkdir(parents=True)
    sched.save_config(case_dir)
    tensors = run_steps(sched, kind, eta, gen)
    tensors.update(run_add_noise(cls, cfg, steps, kind, gen))
    tensors["eta"] = torch.tensor([eta], dtype=torch.float32)
    tensors = {k: v.to(torch.float32).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(case_dir / "io.safetensors"))
    return len(sched.timesteps), int(tensors["noise_used"].sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/schedulers"),
                        help="output folder, replaced entirely (default: %(default)s)")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    total = 0
    for name, kind, cfg, steps, eta in case_list():
        n, noisy = make_case(args.out, name, kind, cfg, steps, eta)
        total += sum(f.stat().st_size for f in (args.out / name).iterdir())
        print(f"{name}: {n} steps, {noisy} with noise")
    print(f"{len(case_list())} cases, {total} bytes in {args.out}")


if __name__ == "__main__":
    main()
