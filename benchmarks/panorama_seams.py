"""Panorama seams against the tool a user would pick: diffusers' StableDiffusionPanoramaPipeline (MultiDiffusion,
the paper's uniform view weights) vs `facediff panorama` with its default Hann window weights and with uniform
weights, on the same Stable-Diffusion-format model, prompts, seeds, sampler (DDIM) and views.

Seam ratio (``metrics.image.seam_ratio``): the mean image gradient across the window borders (every stride, here
half the native size) over the mean gradient everywhere; 1 = the borders are as smooth as the rest. Also the
seconds per panorama. diffusers' ``get_views`` assumes Stable Diffusion's latent factor 8; for a model with another
factor f it is called on a canvas scaled by 8 / f, which gives the same latent views (window = the native latent
size, stride = half of it) as ours.

    OMP_NUM_THREADS=1 python benchmarks/panorama_seams.py --out benchmarks/results/panorama_seams.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent.parent / "src" / "facediff" / "assets"
PROMPTS = ("a photo of a smiling woman with long red hair", "an anime girl with purple hair and bangs",
           "a man with a beard and glasses", "an old man with grey hair, not smiling")


def diffusers_pipeline(model: Path):
    """diffusers' own MultiDiffusion panorama pipeline (uniform weights, one scheduler state per view), DDIM."""
    from diffusers import DDIMScheduler, StableDiffusionPanoramaPipeline

    pipe = StableDiffusionPanoramaPipeline.from_pretrained(model, safety_checker=None, feature_extractor=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    f, native, views = pipe.vae_scale_factor, pipe.unet.config.sample_size, pipe.get_views

    def get_views(h, w, circular_padding=False):  # SD's factor 8 is hard-coded there (module docstring)
        return views(h * 8 // f, w * 8 // f, window_size=native, stride=native // 2, circular_padding=circular_padding)

    pipe.get_views = get_views
    return pipe


def diffusers_panoramas(pipe, prompt: str, seeds: list[int], width: int, steps: int, guidance: float) -> np.ndarray:
    """``view_batch_size`` = every view in one forward (its default, 1, is slower; the images are the same)."""
    height = pipe.unet.config.sample_size * pipe.vae_scale_factor
    out = []
    for s in seeds:
        img = pipe(prompt, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(s), output_type="np", view_batch_size=64).images[0]
        out.append((img * 255).round().astype(np.uint8))
    return np.stack(out)


def facediff_panoramas(pipe, prompt: str, seeds: list[int], width: int, steps: int, guidance: float,
                       weights: str) -> np.ndarray:
    """`facediff panorama` (no bootstrapping: diffusers' pipeline has none)."""
    from facediff.pipelines.compose import panorama

    return panorama(pipe, width=width, prompt=prompt, sampler="ddim", steps=steps, guidance=guidance,
                    seeds=seeds, window_weights=weights, bootstrap=0.0).images


def main() -> None:
    from facediff.fsutil import file_sha256
    from facediff.metrics.image import seam_ratio

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ASSETS / "text_model", help="a Stable-Diffusion-format folder")
    ap.add_argument("--seeds", type=int, default=4, help="panoramas per prompt")
    ap.add_argument("--width", type=int, default=256, help="panorama width in pixels (4:1 at 64 px)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pictures", action="store_true", help="also write each arm's first panorama per prompt")
    args = ap.parse_args()
    seeds = list(range(args.seeds))
    from facediff.pipelines.load import load_pipeline

    ours, theirs = load_pipeline(args.model), diffusers_pipeline(args.model)
    arms: dict[str, dict] = {}
    for name in ("diffusers StableDiffusionPanoramaPipeline", "facediff, uniform weights", "facediff, hann weights"):
        images, t0 = [], time.perf_counter()
        for prompt in PROMPTS:
            if name.startswith("diffusers"):
                images.append(diffusers_panoramas(theirs, prompt, seeds, args.width, args.steps, args.guidance))
            else:
                images.append(facediff_panoramas(ours, prompt, seeds, args.width, args.steps, args.guidance,
                                                 name.split(", ")[1].split()[0]))
        images = np.concatenate(images)
        arms[name] = {"seam_ratio": seam_ratio(images, images.shape[1] // 2),
                      "seconds_per_panorama": (time.perf_counter() - t0) / len(images), "n": len(images)}
        print(name, json.dumps(arms[name]), flush=True)
        if args.pictures:
            from facediff.imaging import make_grid, save_png

            slug = "diffusers" if name.startswith("diffusers") else "facediff-" + name.split(", ")[1].split()[0]
            save_png(make_grid(images[::len(seeds)], 1, scale=2), args.out.with_name(f"{args.out.stem}-{slug}.png"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "panorama_seams", "model": str(args.model), "prompts": PROMPTS, "seeds": seeds,
        "width": args.width, "steps": args.steps, "sampler": "ddim", "guidance": args.guidance,
        "model_unet_sha256": file_sha256(args.model / "unet" / "diffusion_pytorch_model.safetensors"),
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "arms": arms}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
