"""Training throughput: facediff's loop vs a baseline written like diffusers' train_unconditional.py.

Both train the SAME unconditional UNet2DModel config at the same batch size, in one process run, side by
side. The baseline follows the diffusers example: PIL images from a folder, per-item transforms
(resize, random flip, to-tensor, normalise; torchvision is not importable here, so the transforms are
written with PIL + numpy exactly as torchvision would do them), a shuffling DataLoader,
``DDPMScheduler.add_noise``, ``F.mse_loss`` on eps, AdamW, grad-clip 1.0, EMA. Ours is
``facediff.api.train`` with its defaults for CPU speed (uint8 data held in memory, bf16 autocast where the
CPU has it). Reported: steady-state end-to-end images/s (data + forward + backward + optimizer + EMA),
after warm-up steps.

    python benchmarks/train_throughput.py --size 32 --batch 32 --steps 40 --out benchmarks/results/train_throughput.json
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def baseline(folder: Path, unet_kwargs: dict, size: int, batch: int, steps: int, warmup: int) -> float:
    from diffusers import DDPMScheduler, UNet2DModel

    files = sorted(folder.glob("*.png"))

    class FolderDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            im = Image.open(files[i]).convert("RGB").resize((size, size), Image.BILINEAR)  # Resize
            if np.random.rand() < 0.5:  # RandomHorizontalFlip
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)  # ToTensor
            return {"input": (x - 0.5) / 0.5}  # Normalize([0.5], [0.5])

    loader = torch.utils.data.DataLoader(FolderDataset(), batch_size=batch, shuffle=True, num_workers=0,
                                         drop_last=True)
    torch.manual_seed(0)
    model = UNet2DModel(**unet_kwargs)
    ema = copy.deepcopy(model).requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    done, t0 = 0, None
    while done < warmup + steps:
        for b in loader:
            if done == warmup:
                t0 = time.perf_counter()
            if done >= warmup + steps:
                break
            clean = b["input"]
            noise = torch.randn(clean.shape)
            t = torch.randint(0, sched.config.num_train_timesteps, (clean.shape[0],)).long()
            noisy = sched.add_noise(clean, noise, t)
            loss = F.mse_loss(model(noisy, t).sample.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(p, 1 - 0.9999)
            done += 1
    return steps * batch / (time.perf_counter() - t0)


def ours(data_dir: Path, size: int, batch: int, steps: int, warmup: int, channels: list[int], mp: str) -> float:
    from facediff import api
    from facediff.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("tiny-ddpm", [
            f"data.path={data_dir}", f"data.size={size}", "data.split=", "model.conditioning=none",
            f"model.block_out_channels={channels}", "model.layers_per_block=2", "model.attention_resolutions=[8]",
            "model.attention_head_dim=32", "model.norm_num_groups=16", "diffusion.num_train_timesteps=1000",
            f"train.batch_size={batch}", f"train.max_steps={warmup + steps}", f"train.log_every={warmup}",
            "train.checkpoint_every=0", f"train.mixed_precision={mp}", "train.sample_steps=1", "train.lr=1e-4"])
        api.train("ddpm", cfg, Path(tmp) / "run")
        rows = [json.loads(l) for l in (Path(tmp) / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
        steady = [r for r in rows if r["step"] > warmup]
        return float(np.mean([r["images_per_s"] for r in steady]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--channels", default="32,64,128")
    ap.add_argument("--mixed-precision", default="bf16")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_throughput.json"))
    a = ap.parse_args()
    channels = [int(c) for c in a.channels.split(",")]
    from facediff.data.prepared import PreparedDataset
    from facediff.data.synth import write_synth

    with tempfile.TemporaryDirectory() as tmp:
        ds_dir = write_synth(Path(tmp) / "ds", n=a.n, size=a.size, seed=0)
        folder = Path(tmp) / "png"
        folder.mkdir()
        for i, im in enumerate(PreparedDataset(ds_dir).images()):
            Image.fromarray(im).save(folder / f"{i:06d}.png")
        down = tuple("AttnDownBlock2D" if a.size // 2 ** i == 8 else "DownBlock2D" for i in range(len(channels)))
        unet_kwargs = dict(sample_size=a.size, in_channels=3, out_channels=3, block_out_channels=tuple(channels),
                           layers_per_block=2, down_block_types=down,
                           up_block_types=tuple(d.replace("Down", "Up") for d in reversed(down)),
                           norm_num_groups=16, attention_head_dim=32, resnet_time_scale_shift="scale_shift")
        base = baseline(folder, unet_kwargs, a.size, a.batch, a.steps, a.warmup)
        mine = ours(ds_dir, a.size, a.batch, a.steps, a.warmup, channels, a.mixed_precision)
        mine_fp32 = ours(ds_dir, a.size, a.batch, a.steps, a.warmup, channels, "no")
    res = {"benchmark": "train_throughput", "size": a.size, "batch": a.batch, "steps": a.steps,
           "channels": channels, "baseline_images_per_s": base, "facediff_images_per_s": mine,
           "facediff_mixed_precision": a.mixed_precision, "facediff_fp32_images_per_s": mine_fp32,
           "speedup": mine / base, "speedup_fp32": mine_fp32 / base, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
           "command": " ".join(sys.argv)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
