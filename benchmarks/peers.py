"""What the speed benchmarks share: the data, the network, and how each peer tool is run unmodified.

Peers (run, never copied into this repository):
  * the real diffusers example ``examples/unconditional_image_generation/train_unconditional.py``, passed by
    path (``--diffusers-example``; e.g. from a diffusers checkout), run in a subprocess by ``--peer-python``;
  * lucidrains' ``denoising-diffusion-pytorch`` ``Trainer``, when importable by ``--peer-python``.
Both import torchvision, which does not import beside this project's torch 2.13.0; a separate venv holds them:

    python -m venv /tmp/peers
    /tmp/peers/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/peers/bin/pip install diffusers accelerate datasets tensorboard denoising-diffusion-pytorch

Every arm gets the same PNG folder (SynthFaces, human), the same U-Net config (facediff's ``default-32``
network, unconditional; written as a diffusers ``config.json`` and passed to the example through its own
``--model_config_name_or_path``), the same batch, and one thread (``OMP_NUM_THREADS=1``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TQDM_EPOCH = re.compile(r"Epoch (\d+):.*?\| *(\d+)/(\d+) \[")  # the example: "Epoch 0:  45%|####5  | 29/64 [00:10<..."
TQDM_PLAIN = re.compile(r"\| *(\d+)/(\d+) \[")  # lucidrains: "loss: 0.0312:  10%|#         | 5/51 [00:12<..."


def one_thread_env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def prepare_data(work: Path, n: int, size: int) -> tuple[Path, Path]:
    """(prepared SynthFaces dir for facediff, PNG folder of the same images for the peers)."""
    from PIL import Image

    from facediff.data.prepared import PreparedDataset
    from facediff.data.synth import write_synth

    ds, folder = work / f"synth-{n}-{size}", work / f"png-{n}-{size}"
    if not (ds / "labels.jsonl").is_file():
        write_synth(ds, n=n, size=size, seed=0)
    if not folder.is_dir() or len(list(folder.glob("*.png"))) != n:
        folder.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(PreparedDataset(ds).images()):
            Image.fromarray(im).save(folder / f"{i:06d}.png")
    return ds, folder


def facediff_overrides(size: int, batch: int) -> list[str]:
    """``--set`` items that turn the ``default-32`` preset into the benchmark's unconditional network."""
    return ["model.conditioning=none", f"data.size={size}", "data.split=", f"train.batch_size={batch}"]


def build_benchmark_unet(size: int, batch: int = 32):
    """facediff's default network (preset ``default-32``, unconditional) at ``size``: every arm's network."""
    from facediff.config import load_config
    from facediff.models.unet import build_unet

    return build_unet(load_config("default-32", facediff_overrides(size, batch)).model, size)


def forward_flops(size: int, batch: int) -> float:
    """Forward FLOPs of the benchmark network for one batch (convolutions, matmuls, attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = build_benchmark_unet(size, batch)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,)))
    return float(fc.get_total_flops())


def run_facediff_train(python: str, ds: Path, out: Path, size: int, batch: int, warmup: int, steps: int,
                       mixed_precision: str, env: dict[str, str], timeout: float | None = None,
                       host_sync: str = "auto", log_every: int = 1) -> tuple[float, dict]:
    """``facediff train ddpm --config default-32`` on the benchmark network: (img/s over steps ``warmup ..
    warmup+steps`` from its own logs/metrics.jsonl, the run's precision choice from logs/summary.json).
    ``host_sync`` / ``log_every``: [train]'s (a log row reads the device, so time a sync-free loop with rows
    every few steps; ``warmup`` and ``steps`` multiples of ``log_every``)."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = [python, "-m", "facediff.cli.main", "train", "ddpm", "--config", "default-32", "--data", str(ds),
           "--out", str(out)]
    for item in facediff_overrides(size, batch) + [
            f"train.max_steps={warmup + steps + 1}", f"train.log_every={log_every}", "train.checkpoint_every=0",
            "train.sample_every=0", "train.sample_steps=1", f"train.mixed_precision={mixed_precision}",
            f"train.host_sync={host_sync}"]:
        cmd += ["--set", item]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"facediff train failed (rc {r.returncode}): {r.stderr[-1500:]}")
    rows = [json.loads(l) for l in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    precision = json.loads((out / "logs" / "summary.json").read_text())["precision"]
    return window_rate([(row["seconds"], row["step"]) for row in rows], batch, warmup), precision


def write_unet_config(work: Path, size: int) -> tuple[Path, int]:
    """facediff's default network (preset ``default-32``, unconditional) as a diffusers config folder."""
    net = build_benchmark_unet(size)
    folder = work / f"unet-config-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(dict(net.config), indent=1, default=list))
    return folder, sum(p.numel() for p in net.parameters())


def example_args(example: Path, folder: Path, out: Path, config_dir: Path, size: int, batch: int,
                 mixed_precision: str, epochs: int, checkpointing_steps: int) -> list[str]:
    """The example's command line: its defaults, plus what makes the arms comparable (data, net, batch,
    precision, EMA on, no loader workers, flip as facediff does) and no 1000-step sample grid mid-run."""
    return [str(example), "--train_data_dir", str(folder), "--resolution", str(size), "--output_dir", str(out),
            "--train_batch_size", str(batch), "--num_epochs", str(epochs), "--use_ema", "--random_flip",
            "--mixed_precision", mixed_precision, "--dataloader_num_workers", "0",
            "--model_config_name_or_path", str(config_dir), "--checkpointing_steps", str(checkpointing_steps),
            "--save_images_epochs", "100000", "--save_model_epochs", "100000",
            # its sample grid after epoch 0 (``epoch % save_images_epochs == 0`` holds at 0) would run 16 images
            # x 1000 DDPM steps (~8 CPU-minutes); one image, one step keeps that out of the training time
            "--eval_batch_size", "1", "--ddpm_num_inference_steps", "1"]


class StepLog:
    """Runs a command and time-stamps every step its tqdm progress bar reports (stderr, read live)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, pattern: str = "epoch"):
        self.pattern = pattern  # "epoch": steps counted across per-epoch bars; "plain": one bar over the run
        self.t0 = time.perf_counter()
        self.steps: list[tuple[float, int]] = []  # (seconds since start, global step)
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        buf = ""
        while True:
            ch = self.proc.stderr.read(1)
            if not ch:
                break
            if ch in "\r\n":
                self._line(buf)
                buf = ""
            else:
                buf += ch

    def _line(self, line: str) -> None:
        self.log.write(line + "\n")
        m = (TQDM_EPOCH if self.pattern == "epoch" else TQDM_PLAIN).search(line)
        if not m:
            return
        if self.pattern == "epoch":
            epoch, k, per_epoch = (int(g) for g in m.groups())
            step = epoch * per_epoch + k
        else:
            step = int(m.group(1))
        if not self.steps or step > self.steps[-1][1]:
            self.steps.append((time.perf_counter() - self.t0, step))

    def wait(self, timeout: float | None = None) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        self.reader.join(10)
        self.log.close()
        return rc


def window_rate(steps: list[tuple[float, int]], batch: int, skip: int) -> float:
    """Images/s between the step-``skip`` report and the last report (start-up and warm-up excluded)."""
    after = [(t, s) for t, s in steps if s >= skip]
    if len(after) < 2:
        raise RuntimeError(f"too few step reports after step {skip}: {steps[-5:]}")
    (t_a, s_a), (t_b, s_b) = after[0], after[-1]
    return (s_b - s_a) * batch / (t_b - t_a)


def python_version_of(python: str) -> str:
    return subprocess.run([python, "-c", "import torch, sys; print(torch.__version__)"], capture_output=True,
                          text=True).stdout.strip()


def facediff_cmd() -> list[str]:
    return [sys.executable, "-m", "facediff.cli.main"]
