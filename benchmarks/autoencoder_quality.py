"""Autoencoder quality per CPU budget: train --config for --minutes, report held-out PSNR / SSIM.

The config defaults to ``vq-f4-64` (src/facediff/presets/vq-f4-64.toml)`. Reported: PSNR / SSIM / codebook usage on SynthFaces (val
split) and PSNR on a real photo's face (scikit-image's ``astronaut``, rows 20..200 x cols 140..320 of the
512x512 image, resized to the model size).

    OMP_NUM_THREADS=1 python benchmarks/autoencoder_quality.py --set train.mixed_precision=bf16 --minutes 130 \
        --threads 1 --out runs/bench-vq-f4-64          # --config kl-f4-64 for the KL twin

``--resume`` continues a run (the budget counts from the restart). Results go to ``--json`` (default
RUN_DIR/benchmark.json).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
ASTRONAUT_FACE = (slice(20, 200), slice(140, 320))  # rows, cols of skimage.data.astronaut() framing the face


def astronaut_face(size: int) -> np.ndarray | None:
    """uint8 (1, size, size, 3): the astronaut's face, or None without scikit-image."""
    try:
        from skimage import data
    except ImportError:
        return None
    face = data.astronaut()[ASTRONAUT_FACE]
    return np.asarray(Image.fromarray(face).resize((size, size), Image.LANCZOS))[None]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=40.0, help="training wall-clock budget")
    ap.add_argument("--config", default=str("vq-f4-64"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override section.key=value")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench-vq-f4-64"), help="run directory")
    ap.add_argument("--json", default=None, help="result JSON (default RUN_DIR/benchmark.json)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("FACEDIFF_THREADS", "2")))
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from facediff.config import load_config
    from facediff.metrics.reconstruction import reconstruct_images, reconstruction_metrics
    from facediff.imaging import make_grid, save_png, to_uint8
    from facediff.training.autoencoder import load_autoencoder, train_autoencoder

    from dataclasses import replace

    from facediff.cli.progress import Reporter
    from facediff.models.autoencoder import latent_channels, vae_downsample

    if args.resume:  # the run's own config; --set is not applied on resume
        from facediff.config import load_config_json

        if args.sets:
            raise SystemExit("error: --set cannot change a resumed run; drop it or start a new --out")
        cfg = load_config_json(Path(args.out) / "config.json")
    else:
        cfg = load_config(args.config, args.sets)
    # the wall-clock budget of this benchmark run is the loop's time budget
    cfg = replace(cfg, train=replace(cfg.train, time_budget_minutes=args.minutes))
    t0 = time.perf_counter()
    with Reporter() as progress:
        summary = train_autoencoder(cfg, args.out, resume=args.resume, progress=progress)
    ae = load_autoencoder(args.out)
    result = {"config": args.config, "sets": args.sets, "minutes_budget": args.minutes,
              "wall_s": time.perf_counter() - t0, "steps": summary["steps"],
              "images_seen": summary["steps"] * cfg.train.batch_size * cfg.train.grad_accum,
              "parameters": summary["parameters"], "perceptual_loss": summary["perceptual_loss"],
              "synthfaces_val": summary["eval"], "heldout": summary["heldout"],
              "downsample": vae_downsample(ae), "latent_channels": latent_channels(ae)}
    face = astronaut_face(cfg.data.size)
    if face is not None:
        res = reconstruction_metrics(ae, face)
        result["astronaut_face"] = {k: res[k] for k in ("psnr", "ssim")}
        _, x_hat, _ = reconstruct_images(ae, face)
        save_png(make_grid(np.concatenate([face, to_uint8(x_hat)]), 2, scale=4),
                 Path(args.out) / "samples" / "astronaut.png")
    out_json = Path(args.json) if args.json else Path(args.out) / "benchmark.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
