"""CPU economics of 64x64 faces: pixel DDPM vs latent DDPM (f = 4 -> 16x16 latents) at equal U-Net width.

Measures, on the same machine in one run: training images/s, sampling images/s (DPM-Solver++ 25 steps,
guidance 3, batch 32), and the quality each reaches in the SAME CPU budget (FD_oracle, attribute
accuracy from `facediff eval`). Needs a trained 64 px autoencoder (facediff train autoencoder ...).

    OMP_NUM_THREADS=2 python benchmarks/cpu_economics.py --autoencoder runs/vq-f4-64 --minutes 15 \
        --out benchmarks/results/cpu_economics.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def arm_overrides(kind: str, channels: str, data: Path, minutes: float, steps: int) -> list[str]:
    common = [f"data.path={data}", "data.size=64", f"model.block_out_channels=[{channels}]",
              "model.layers_per_block=2", "model.attention_head_dim=32", "model.norm_num_groups=32",
              "diffusion.num_train_timesteps=1000", "diffusion.schedule=cosine", "diffusion.prediction_type=v_prediction",
              "diffusion.loss_weighting=min_snr", "train.batch_size=32", f"train.max_steps={steps}",
              f"train.time_budget_minutes={minutes}", "train.lr=5e-4", "train.warmup_steps=100",
              "train.checkpoint_every=0", "train.log_every=10", "train.mixed_precision=bf16", "train.sample_steps=10"]
    if kind == "pixel":
        return common + ["model.attention_resolutions=[16]"]
    return common + ["model.attention_resolutions=[8]", "latent.sketch=false"]


def sampling_speed(model: Path, n: int = 32) -> float:
    from facediff import api

    api.sample(model, n=4, steps=2)  # warm-up
    t0 = time.perf_counter()
    api.sample(model, n=n, steps=25, guidance=3.0, batch_size=n)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--autoencoder", required=True, help="trained 64 px autoencoder run/export (f = 4)")
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget per arm")
    ap.add_argument("--channels", default="64,128,128")
    ap.add_argument("--n-eval", type=int, default=128)
    ap.add_argument("--work", default=str(REPO / "runs" / "cpu_economics"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cpu_economics.json"))
    a = ap.parse_args()
    from facediff import api
    from facediff.data.synth import write_synth

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "synth64"
    if not (data / "manifest.json").is_file():
        write_synth(data, n=8000, size=64, style="human", seed=0, overwrite=True)
    res: dict = {"benchmark": "cpu_economics", "minutes_per_arm": a.minutes, "channels": a.channels,
                 "command": " ".join(sys.argv), "arms": {}}
    for kind in ("latent", "pixel"):
        run = work / kind
        if not (run / "export" / "model_index.json").is_file():
            over = arm_overrides(kind, a.channels, data, a.minutes, 100000)
            if kind == "latent":
                over.append(f"latent.autoencoder={a.autoencoder}")
            api.train("ddpm" if kind == "pixel" else "ldm", None, run, overrides=over)
        rows = [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines() if l]
        train_ips = float(np.median([r["images_per_s"] for r in rows[1:]] or [rows[-1]["images_per_s"]]))
        ev = api.evaluate(run, data, metrics="fd,attr,timing", n=a.n_eval, steps=25, out=work / f"eval-{kind}")
        res["arms"][kind] = {
            "train_images_per_s": train_ips, "steps_in_budget": rows[-1]["step"],
            "sample_images_per_s": sampling_speed(run), "fd_oracle": ev["fd_oracle"],
            "fd_oracle_floor": ev["floor_real_vs_real"]["fd_oracle"], "attr_accuracy": ev["attr"]["accuracy"],
            "space": "16x16x latent" if kind == "latent" else "64x64x3 pixels",
        }
        print(kind, json.dumps(res["arms"][kind]), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
