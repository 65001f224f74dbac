"""Integration: tiny train -> checkpoint -> resume -> export -> plain diffusers load, on CPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facediff import api
from facediff.errors import FacediffError
from facediff.training.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny-ddpm.toml"


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines() if l]
    return [(r["step"], r["loss"]) for r in rows]


def test_tiny_run_layout(tiny_run):
    assert (tiny_run / "config.json").is_file()
    ckpt = latest_checkpoint(tiny_run)
    assert ckpt is not None and ckpt.name == "step-0000006"
    for f in ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "trainer.json"):
        assert (ckpt / f).is_file()
    assert (tiny_run / "export" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert list((tiny_run / "samples").glob("*.png"))
    assert len(_losses(tiny_run)) == 6
    assert any((tiny_run / "logs").glob("events.out.tfevents.*"))


def test_resume_reproduces_uninterrupted_losses(tmp_path, synth16):
    common = [f"data.path={synth16}", "train.log_every=1", "train.checkpoint_every=3", "train.batch_size=8"]
    full = tmp_path / "full"
    api.train("ddpm", TINY, full, overrides=common + ["train.max_steps=6"], show_progress=False)
    part = tmp_path / "part"
    api.train("ddpm", TINY, part, overrides=common + ["train.max_steps=3"], show_progress=False)
    api.train("ddpm", None, part, overrides=["train.max_steps=6"], resume=True, show_progress=False)
    a, b = _losses(full), _losses(part)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 7))
    for (_, la), (_, lb) in zip(a, b):
        assert la == pytest.approx(lb, rel=1e-5, abs=1e-6)


def test_interrupted_checkpoint_leaves_previous_loadable(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = latest_checkpoint(run)
    (run / "state" / ".step-0000009.tmp").mkdir()  # a checkpoint write killed half-way
    (run / "state" / ".step-0000009.tmp" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(run) == run / "state" / before.name


def test_refuses_to_overwrite_a_run(tiny_run):
    with pytest.raises(FacediffError, match="already holds a run"):
        api.train("ddpm", TINY, tiny_run, show_progress=False)


def test_nonfinite_guard_stops_with_clear_message(tmp_path, synth16):
    with pytest.raises(FacediffError, match="non-finite losses in a row"):
        api.train("ddpm", TINY, tmp_path / "nan", overrides=[f"data.path={synth16}", "train.lr=1e30",
                  "train.grad_clip=0", "train.max_nonfinite=2", "train.max_steps=30", "train.warmup_steps=1"],
                  show_progress=False)


def test_unconditional_export_loads_in_plain_ddpm_pipeline(tmp_path, synth16):
    from diffusers import DDPMPipeline

    run = tmp_path / "uncond"
    api.train("ddpm", TINY, run, overrides=[f"data.path={synth16}", "model.conditioning=none",
                                            "train.max_steps=2"], show_progress=False)
    pipe = DDPMPipeline.from_pretrained(run / "export")
    pipe.scheduler.set_timesteps(3)
    out = pipe(batch_size=2, num_inference_steps=3, output_type="np").images
    assert out.shape == (2, 16, 16, 3)


def test_conditional_export_loads_with_plain_diffusers_classes(tiny_run):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_run / "export" / "unet")
    sched = DDPMScheduler.from_pretrained(tiny_run / "export" / "scheduler")
    meta = json.loads((tiny_run / "export" / "facediff.json").read_text())
    c = torch.zeros(1, len(meta["attributes"]) * meta["num_levels"])
    c[0, meta["attributes"].index("smiling") * 6 + 5] = 1
    x = torch.randn(1, 3, 16, 16)
    sched.set_timesteps(3)
    for t in sched.timesteps:
        x = sched.step(unet(x, t, encoder_hidden_states=None, class_labels=c).sample, t, x).prev_sample
    assert torch.isfinite(x).all()


def test_accelerate_launch_two_cpu_processes(tmp_path, synth16):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "facediff.cli.main", "train", "ddpm", "--config", str(TINY), "--out", str(out),
           "--set", f"data.path={synth16}", "--set", "train.max_steps=3", "--set", "train.log_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert latest_checkpoint(out).name == "step-0000003"
    assert len(_losses(out)) == 3
    assert (out / "export" / "facediff.json").is_file()


def test_grad_accumulation_and_bf16_autocast_train(tmp_path, synth16):
    run = tmp_path / "accum"
    summary = api.train("ddpm", TINY, run, overrides=[f"data.path={synth16}", "train.grad_accum=2",
                        "train.batch_size=4", "train.max_steps=3", "train.log_every=1",
                        "train.mixed_precision=bf16"], show_progress=False)
    assert summary["steps"] == 3
    losses = _losses(run)
    assert len(losses) == 3 and all(l == l and l < 10 for _, l in losses)  # finite


def test_time_budget_stops_early_and_exports(tmp_path, synth16):
    run = tmp_path / "budget"
    summary = api.train("ddpm", TINY, run, overrides=[f"data.path={synth16}", "train.max_steps=100000",
                        "train.time_budget_minutes=0.001"], show_progress=False)
    assert summary["steps"] < 100000
    assert (run / "export" / "facediff.json").is_file()


def test_fp16_on_cpu_is_a_clear_error(tmp_path, synth16):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(FacediffError, match="fp16"):
        api.train("ddpm", TINY, tmp_path / "fp16", overrides=[f"data.path={synth16}", "train.mixed_precision=fp16"],
                  show_progress=False)


def test_progress_prints_plain_timestamped_lines_when_stderr_is_a_log_file(capsys, monkeypatch):
    from facediff.training import progress

    bar = progress.ProgressBar(10, "train", start=0)  # pytest's captured stderr is not a terminal
    bar.update(4, loss=0.5)  # within PLAIN_EVERY_S of the start: not printed
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    bar.update(6, loss=0.25)
    bar.set_total(20, 20)  # done, total
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1].rsplit(" ", 2)[0] for line in lines] == [
        "train: 6/10 (60 %) loss=0.25", "train: 20/20 (100 %)"]
    assert progress.ProgressBar(5, "quiet", enabled=False).update(5) is None and capsys.readouterr().err == ""
