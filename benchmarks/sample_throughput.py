"""Sampling throughput: facediff's pipeline vs diffusers' own pipelines on the SAME U-Net (and VAE).

64 images, 20 steps of DPM-Solver++(2M), one batch, one thread, interleaved repetitions (median, range):
  * pixel, unconditional (facediff's default network, 32 px): ``FacediffPipeline`` vs ``DDPMPipeline`` with
    ``DPMSolverMultistepScheduler``;
  * latent, unconditional (16x16x4 latents of the vq-f4-64 autoencoder, 64 px out, decode counted):
    ``FacediffPipeline`` vs diffusers' ``LDMPipeline`` (deprecated there, still the one it ships) with the
    same scheduler;
  * pixel, attribute-conditional with classifier-free guidance (the bundled default model): diffusers has no
    pipeline for class-label CFG, so the reference is the network itself: 20 forwards of the 2B batch.
For every arm the network's own time (20 forwards at the arm's batch, + the decode) is measured in the same
run; ``overhead`` = time beyond it. Weights are random where no trained model is bundled: speed does not
depend on them.
Precision: each tool also at its best setting on this CPU: facediff with ``precision="auto"`` (bf16 autocast
of the network where a probe measures it faster), diffusers' pipeline with its U-Net
called under ``torch.autocast("cpu", torch.bfloat16)`` and its output back in fp32 (what facediff does; a
plain ``pipe.to(bfloat16)`` breaks ``LDMPipeline``, whose latents stay fp32, and autocasting the whole call
breaks its numpy output), the network alone in bf16 autocast.

    OMP_NUM_THREADS=1 python benchmarks/sample_throughput.py --out benchmarks/results/sample_throughput.json
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler, LDMPipeline, UNet2DModel

PIXEL32 = Path(__file__).resolve().parent.parent / "tests" / "data" / "pixel32_model"  # the former default

REPO = Path(__file__).resolve().parent.parent


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _bf16(fn):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()
    return run


def _bf16_unet(unet):
    """The same weights; forward under bf16 autocast, the output back in fp32 (a user's bf16 for diffusers)."""
    wrapped = copy.copy(unet)
    forward = unet.forward

    def call(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return type(out)(sample=out.sample.float())
    wrapped.forward = call
    return wrapped


def _best_precision_arms(ours, ref, network, n: int, steps: int) -> dict:
    """The same calls at each tool's best precision on this CPU (module docstring)."""
    ref.set_progress_bar_config(disable=True)
    return {
        "facediff-auto": lambda: ours(seeds=list(range(n)), sampler="dpmpp", steps=steps, batch_size=n,
                                      output_type="pt", precision="auto"),
        "diffusers-bf16": lambda: ref(batch_size=n, num_inference_steps=steps,
                                      generator=torch.Generator().manual_seed(0), output_type="np"),
        "network-bf16": _bf16(network),
    }


def pixel_arms(n: int, steps: int):
    from facediff.config import load_config
    from facediff.diffusion.schedules import scheduler_config
    from facediff.models.unet import build_unet
    from facediff.pipelines.facediff import FacediffPipeline

    cfg = load_config("default-32", ["model.conditioning=none"])
    torch.manual_seed(0)
    unet = build_unet(cfg.model, 32).eval()
    sched = DDPMScheduler.from_config(scheduler_config(cfg.diffusion))
    ours = FacediffPipeline(unet=unet, scheduler=sched, attributes=(), num_levels=cfg.model.num_levels)
    ref = DDPMPipeline(unet=unet, scheduler=DPMSolverMultistepScheduler.from_config(sched.config))
    ref.set_progress_bar_config(disable=True)
    x = torch.randn(n, 3, 32, 32)
    t = torch.full((n,), 500)
    return {
        "facediff": lambda: ours(seeds=list(range(n)), sampler="dpmpp", steps=steps, batch_size=n, output_type="pt"),
        "diffusers": lambda: ref(batch_size=n, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                                 output_type="np"),
        "network": lambda: [unet(x, t) for _ in range(steps)],
        **_best_precision_arms(ours, DDPMPipeline(unet=_bf16_unet(unet), scheduler=ref.scheduler),
                               lambda: [unet(x, t) for _ in range(steps)], n, steps),
    }


def latent_arms(n: int, steps: int):
    from facediff.config import load_config
    from facediff.models.autoencoder import build_autoencoder
    from facediff.pipelines.facediff import FacediffPipeline

    torch.manual_seed(0)
    vq = build_autoencoder(load_config("vq-f4-64").autoencoder, 64).eval()
    vq.register_to_config(scaling_factor=1.0)
    unet = UNet2DModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128),
                       layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=16,
                       attention_head_dim=32, resnet_time_scale_shift="scale_shift").eval()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear")
    ours = FacediffPipeline(unet=unet, scheduler=sched, vae=vq, attributes=(), num_levels=3)
    ref = LDMPipeline(vqvae=vq, unet=unet, scheduler=DPMSolverMultistepScheduler.from_config(sched.config))
    ref.set_progress_bar_config(disable=True)
    z = torch.randn(n, 4, 16, 16)
    t = torch.full((n,), 500)

    def network():
        for _ in range(steps):
            unet(z, t)
        vq.decode(z)
    return {
        "facediff": lambda: ours(seeds=list(range(n)), sampler="dpmpp", steps=steps, batch_size=n, output_type="pt"),
        "diffusers": lambda: ref(batch_size=n, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                                 output_type="np"),
        "network": network,
        **_best_precision_arms(ours, LDMPipeline(vqvae=vq, unet=_bf16_unet(unet), scheduler=ref.scheduler),
                               network, n, steps),
    }


def cfg_arms(n: int, steps: int):
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(PIXEL32)  # the 32 px pixel model its numbers were measured on
    calls = {"forwards": 0}
    pipe.unet.register_forward_hook(lambda *_: calls.__setitem__("forwards", calls["forwards"] + 1))
    conds = [{"smiling": 2, "eyeglasses": 1}] * n
    cond = pipe.conditioner.encode(n, conds)
    both = cond.cat([pipe.conditioner.null(cond), cond]).fields()  # the 2B batch of one guided step
    x = torch.randn(2 * n, 3, pipe.sample_size, pipe.sample_size)
    t = torch.full((2 * n,), 500)

    def ours(precision: str = "no"):
        calls["forwards"] = 0
        pipe(seeds=list(range(n)), attrs=conds, guidance=3.0, sampler="dpmpp", steps=steps, batch_size=n,
             output_type="pt", precision=precision)
        assert calls["forwards"] == steps, f"{calls['forwards']} forwards for {steps} steps"  # cond+uncond batched

    def network():
        from facediff.models.unet import unet_call

        for _ in range(steps):
            unet_call(pipe.unet, x, t, **both)
    return {"facediff": ours, "network": network, "facediff-auto": lambda: ours("auto"), "network-bf16": _bf16(network)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arms", default="pixel,latent,cfg")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sample_throughput.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    builders = {"pixel": pixel_arms, "latent": latent_arms, "cfg": cfg_arms}
    res: dict = {"benchmark": "sample_throughput", "n": a.n, "steps": a.steps, "sampler": "DPM-Solver++(2M)",
                 "threads": a.threads, "reps": a.reps, "torch": torch.__version__,
                 "machine": platform.processor() or platform.machine(), "command": " ".join(sys.argv), "arms": {}}
    with torch.inference_mode():
        for name in a.arms.split(","):
            fns = builders[name](a.n, a.steps)
            for fn in fns.values():  # warm-up (oneDNN primitives, allocator)
                fn()
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(a.reps):  # interleaved
                for k, fn in fns.items():
                    times[k].append(_time(fn))
            row = {k: {"seconds_median": statistics.median(v), "seconds": v, "images_per_s": a.n / statistics.median(v)}
                   for k, v in times.items()}
            for k in list(row):
                if not k.startswith("network"):
                    net = row["network-bf16" if k.endswith(("-auto", "-bf16")) else "network"]["seconds_median"]
                    row[k]["overhead_vs_network"] = row[k]["seconds_median"] / net - 1
            if "diffusers" in row:
                row["speedup_vs_diffusers"] = row["diffusers"]["seconds_median"] / row["facediff"]["seconds_median"]
                best = min(row["diffusers"]["seconds_median"], row["diffusers-bf16"]["seconds_median"])
                row["speedup_best_vs_best"] = best / min(row["facediff"]["seconds_median"],
                                                         row["facediff-auto"]["seconds_median"])
            res["arms"][name] = row
            print(name, json.dumps({k: (v if not isinstance(v, dict) else round(v["images_per_s"], 3))
                                    for k, v in row.items()}), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
