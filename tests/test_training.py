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
TINY = "tiny-ddpm"


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
    assert any((tiny_run / "logs").rglob("events.out.tfevents.*"))  # Accelerator(log_with="tensorboard")


def test_resume_reproduces_uninterrupted_losses(tmp_path, synth16):
    common = [f"data.path={synth16}", "train.log_every=1", "train.checkpoint_every=3", "train.batch_size=8"]
    full = tmp_path / "full"
    api.train("ddpm", TINY, full, overrides=common + ["train.max_steps=6"])
    part = tmp_path / "part"
    api.train("ddpm", TINY, part, overrides=common + ["train.max_steps=3"])
    api.train("ddpm", None, part, overrides=["train.max_steps=6"], resume=True)
    a, b = _losses(full), _losses(part)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 7))
    for (_, la), (_, lb) in zip(a, b):
        assert la == pytest.approx(lb, rel=1e-5, abs=1e-6)


def test_compact_checkpoint_carries_a_run_to_another_directory(tmp_path, synth16):
    """bf16 weights + EMA, no optimizer: small enough to commit; --resume in a copy continues the run from that
    step with those weights (rounded to bf16) and a fresh optimizer."""
    from safetensors.torch import load_file

    from facediff.training.checkpoint import compact_checkpoint

    common = [f"data.path={synth16}", "train.log_every=1", "train.checkpoint_every=3", "train.batch_size=8",
              "train.warmup_steps=0", "train.lr=5e-3"]  # no warm-up: three steps move the weights visibly
    run = tmp_path / "run"
    api.train("ddpm", TINY, run, overrides=common + ["train.max_steps=3"])
    full = latest_checkpoint(run)
    packed = compact_checkpoint(run, tmp_path / "packed")
    assert not (packed / "optimizer.safetensors").exists()
    assert sum(f.stat().st_size for f in packed.iterdir()) < 0.4 * sum(f.stat().st_size for f in full.iterdir())
    weights = load_file(str(packed / "model.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in weights.values() if v.is_floating_point())
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "packed", moved)
    assert latest_checkpoint(moved) == moved / "state" / full.name  # its manifest verifies
    api.train("ddpm", None, moved, overrides=["train.max_steps=5"], resume=True)
    assert [st for st, _ in _losses(moved)] == [1, 2, 3, 4, 5]  # the log carried over, continued at step 4
    # the weights the resumed run started from: the step-3 weights rounded to bf16, nothing else
    trained = load_file(str(full / "model.safetensors"))
    assert all(torch.equal(weights[k].float(), v.bfloat16().float()) for k, v in trained.items())
    straight = tmp_path / "straight"
    api.train("ddpm", TINY, straight, overrides=common + ["train.max_steps=4"])
    # step 4's loss is taken before its update: the step-3 weights (bf16-rounded) on step 4's batch
    assert _losses(moved)[3][1] == pytest.approx(_losses(straight)[3][1], rel=2e-2)
    with pytest.raises(FacediffError, match="exists; remove it first"):
        compact_checkpoint(run, tmp_path / "packed")


def test_a_bundled_export_continues_its_run_on_another_machine(tmp_path, synth16):
    """checkpoint_from_bundle: the run's config and trainer state from a template run, the weights and EMA from
    the export's U-Net (bf16), at the step the export was trained to; --resume continues from there."""
    from safetensors.torch import load_file, save_file

    from facediff.training.checkpoint import checkpoint_from_bundle

    common = [f"data.path={synth16}", "train.log_every=1", "train.checkpoint_every=3", "train.batch_size=8"]
    run = tmp_path / "run"
    api.train("ddpm", TINY, run, overrides=common + ["train.max_steps=3"])
    bundle = run / "export"
    ckpt = checkpoint_from_bundle(bundle, run, tmp_path / "cont", step=7)
    assert latest_checkpoint(tmp_path / "cont") == ckpt and ckpt.name == "step-0000007"
    unet = load_file(str(bundle / "unet" / "diffusion_pytorch_model.safetensors"))
    for name in ("model.safetensors", "ema.safetensors"):
        got = load_file(str(ckpt / name))
        assert all(torch.equal(got[k].float(), v.bfloat16().float()) for k, v in unet.items())
    api.train("ddpm", None, tmp_path / "cont", overrides=["train.max_steps=9"], resume=True)
    assert [st for st, _ in _losses(tmp_path / "cont")][-2:] == [8, 9]
    with pytest.raises(FacediffError, match="exists; remove it first"):
        checkpoint_from_bundle(bundle, run, tmp_path / "cont", step=7)
    other = tmp_path / "other" / "unet"
    other.mkdir(parents=True)
    save_file({k: v for k, v in list(unet.items())[1:]}, str(other / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(FacediffError, match="is not the network of the run"):
        checkpoint_from_bundle(other.parent, run, tmp_path / "cont2", step=7)


def test_resume_from_a_compact_checkpoint_warms_the_fresh_optimizer_up_again(tmp_path, synth16):
    """No Adam moments in a compact checkpoint: the LR ramps (k + 1) / warmup_steps again from the resumed step,
    then follows the schedule (here constant); a full checkpoint resumes at the scheduled LR at once."""
    from facediff.training.checkpoint import compact_checkpoint

    common = [f"data.path={synth16}", "train.log_every=1", "train.checkpoint_every=5", "train.batch_size=4",
              "train.warmup_steps=4", "train.lr=1e-3"]
    run = tmp_path / "run"
    api.train("ddpm", TINY, run, overrides=common + ["train.max_steps=5"])
    compact_checkpoint(run, tmp_path / "packed")
    full, slower = tmp_path / "full", tmp_path / "slower"
    shutil.copytree(run, full)
    shutil.copytree(run, slower)
    for d in (tmp_path / "packed", full):
        api.train("ddpm", None, d, overrides=["train.max_steps=8"], resume=True)
    api.train("ddpm", None, slower, overrides=["train.max_steps=8", "train.lr=2.5e-4"], resume=True)

    def lrs(d):  # a row's LR is the one the next step uses
        return [json.loads(line)["lr"] for line in (d / "logs" / "metrics.jsonl").read_text().splitlines()]

    first = [0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3]  # warm-up k / 4, then constant
    assert lrs(full) == pytest.approx(first + [1e-3, 1e-3, 1e-3])
    assert lrs(tmp_path / "packed") == pytest.approx(first + [0.5e-3, 0.75e-3, 1e-3])
    assert lrs(slower) == pytest.approx(first + [2.5e-4] * 3)  # resumed with another lr: the schedule follows it
    # the resumed run's overrides are its config now: a later --resume without them keeps them
    assert json.loads((full / "config.json").read_text())["train"]["max_steps"] == 8


def test_interrupted_checkpoint_leaves_previous_loadable(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = latest_checkpoint(run)
    (run / "state" / ".step-0000009.tmp").mkdir()  # a checkpoint write killed half-way
    (run / "state" / ".step-0000009.tmp" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(run) == run / "state" / before.name


def test_refuses_to_overwrite_a_run(tiny_run):
    with pytest.raises(FacediffError, match="already holds a run"):
        api.train("ddpm", TINY, tiny_run)


def test_nonfinite_guard_stops_with_clear_message(tmp_path, synth16):
    with pytest.raises(FacediffError, match="non-finite losses in a row"):
        api.train("ddpm", TINY, tmp_path / "nan", overrides=[f"data.path={synth16}", "train.lr=1e30",
                  "train.grad_clip=0", "train.max_nonfinite=2", "train.max_steps=30", "train.warmup_steps=1"])


def test_unconditional_export_loads_in_plain_ddpm_pipeline(tmp_path, synth16):
    from diffusers import DDPMPipeline

    run = tmp_path / "uncond"
    api.train("ddpm", TINY, run, overrides=[f"data.path={synth16}", "model.conditioning=none",
                                            "train.max_steps=2"])
    pipe = DDPMPipeline.from_pretrained(run / "export")
    pipe.scheduler.set_timesteps(3)
    out = pipe(batch_size=2, num_inference_steps=3, output_type="np").images
    assert out.shape == (2, 16, 16, 3)


def test_conditional_export_loads_with_plain_diffusers_classes(tiny_run):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_run / "export" / "unet")
    sched = DDPMScheduler.from_pretrained(tiny_run / "export" / "scheduler")
    meta = json.loads((tiny_run / "export" / "model_index.json").read_text())  # the pipeline config
    c = torch.zeros(1, len(meta["attributes"]) * meta["num_levels"])
    c[0, meta["attributes"].index("smiling") * 6 + 5] = 1
    x = torch.randn(1, 3, 16, 16)
    sched.set_timesteps(3)
    for t in sched.timesteps:
        x = sched.step(unet(x, t, encoder_hidden_states=None, class_labels=c).sample, t, x).prev_sample
    assert torch.isfinite(x).all()


def _launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Two CPU processes (gloo) under torchrun; accelerate picks them up as MULTI_CPU (ACCELERATE_USE_CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "facediff.cli.main", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)


@pytest.mark.parametrize("host_sync", ["auto", "log"])  # log: the non-finite flag max-reduced on the device
def test_accelerate_launch_two_cpu_processes(tmp_path, synth16, host_sync):
    out = tmp_path / "ddp"
    res = _launch(["train", "ddpm", "--config", "tiny-ddpm", "--out", str(out), "--set", f"data.path={synth16}",
                   "--set", "train.max_steps=3", "--set", "train.log_every=1", "--set", f"train.host_sync={host_sync}"],
                  tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert latest_checkpoint(out).name == "step-0000003"
    assert len(_losses(out)) == 3
    assert (out / "export" / "model_index.json").is_file()
    assert json.loads((out / "logs" / "summary.json").read_text())["steps_per_rank"] == [3, 3]  # really 2 ranks


@pytest.mark.parametrize("trainer", ["ddpm", "autoencoder", "estimator"])
def test_time_budget_stops_both_ranks_at_the_same_step(trainer, tmp_path, synth16):
    """Every trainer agrees on the time budget across processes: both ranks stop at the same step (a
    disagreement would leave one rank waiting in the next all-reduce, i.e. a hang or unequal step counts)."""
    out = tmp_path / trainer
    if trainer == "estimator":
        args = ["train", "estimator", "--data", str(synth16), "--out", str(out), "--steps", "100000",
                "--batch-size", "8", "--size", "16", "--budget-minutes", "0.05"]
    else:
        args = ["train", trainer, "--config", f"tiny-{'ddpm' if trainer == 'ddpm' else 'vq'}", "--out", str(out),
                "--set", f"data.path={synth16}", "--set", "train.max_steps=100000", "--set", "train.batch_size=4",
                "--set", "train.checkpoint_every=0", "--set", "train.time_budget_minutes=0.05"]
    res = _launch(args, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "logs" / "summary.json").read_text())
    a, b = summary["steps_per_rank"]
    assert a == b == summary["steps"] and 0 < a < 100000


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(latest_checkpoint(run) / "model.safetensors"))


def test_grad_accumulation_equals_one_big_batch(tmp_path, synth16):
    """2 micro-batches of 4, accumulated, give the same update as one batch of 8 (same samples, same noise)."""
    common = [f"data.path={synth16}", "train.max_steps=2", "train.checkpoint_every=0", "train.log_every=1",
              "train.lr=1e-3", "train.warmup_steps=0"]
    api.train("ddpm", TINY, tmp_path / "big", overrides=common + ["train.batch_size=8"])
    api.train("ddpm", TINY, tmp_path / "acc", overrides=common + ["train.batch_size=4", "train.grad_accum=2"])
    big, acc = _final_weights(tmp_path / "big"), _final_weights(tmp_path / "acc")
    for k in big:
        torch.testing.assert_close(acc[k], big[k], atol=2e-5, rtol=1e-3)  # Adam: |update| ~ lr = 1e-3
    for (_, la), (_, lb) in zip(_losses(tmp_path / "big"), _losses(tmp_path / "acc")):
        assert la == pytest.approx(lb, rel=1e-5)
    api.train("ddpm", TINY, tmp_path / "half", overrides=common + ["train.batch_size=4"])  # only 4 of the 8
    half = _final_weights(tmp_path / "half")
    assert max(float((half[k] - big[k]).abs().max()) for k in big) > 1e-4


def test_bf16_autocast_trains(tmp_path, synth16):
    run = tmp_path / "bf16"
    summary = api.train("ddpm", TINY, run, overrides=[f"data.path={synth16}", "train.max_steps=2", "train.log_every=1",
                                                      "train.mixed_precision=bf16"])
    assert summary["steps"] == 2 and all(torch.isfinite(torch.tensor(l)) for _, l in _losses(run))


def test_lr_schedule_warmup_then_cosine_or_constant():
    import math

    from facediff.config import TrainConfig
    from facediff.training.common import make_lr_scheduler

    def lrs(schedule: str) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make_lr_scheduler(opt, TrainConfig(lr=0.1, warmup_steps=4, max_steps=10, lr_schedule=schedule))
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    warm = [0.1 * s / 4 for s in range(4)]
    assert lrs("constant") == pytest.approx(warm + [0.1] * 6)
    assert lrs("cosine") == pytest.approx(warm + [0.1 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 6)) for s in range(4, 10)])


def test_ema_update_follows_the_decay_formula():
    from facediff.config import TrainConfig
    from facediff.training.common import make_ema

    net = torch.nn.Linear(3, 2)
    ema = make_ema(net, TrainConfig(ema_decay=0.9, ema_start=2))
    shadow = [p.detach().clone() for p in net.parameters()]
    for step in range(1, 8):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        ema.step(net.parameters())
        k = step - 2 - 1  # steps since ema_start, as diffusers' EMAModel counts
        d = 0.0 if k <= 0 else min(0.9, (1 + k) / (10 + k))
        shadow = [d * s + (1 - d) * p.detach() for s, p in zip(shadow, net.parameters())]
        for s, e in zip(shadow, ema.shadow_params):
            torch.testing.assert_close(e, s)
    assert ema.cur_decay_value == pytest.approx(min(0.9, (1 + 4) / (10 + 4)))


def test_time_budget_stops_early_and_exports(tmp_path, synth16):
    run = tmp_path / "budget"
    summary = api.train("ddpm", TINY, run, overrides=[f"data.path={synth16}", "train.max_steps=100000",
                        "train.time_budget_minutes=0.001"])
    assert summary["steps"] < 100000
    assert (run / "export" / "model_index.json").is_file()


def test_fp16_on_cpu_is_a_clear_error(tmp_path, synth16):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(FacediffError, match="fp16"):
        api.train("ddpm", TINY, tmp_path / "fp16", overrides=[f"data.path={synth16}", "train.mixed_precision=fp16"])


def test_progress_prints_plain_timestamped_lines_when_stderr_is_a_log_file(capsys, monkeypatch):
    from facediff.cli import progress

    bar = progress.ProgressBar(10, "train", start=0)  # pytest's captured stderr is not a terminal
    bar.update(4, loss=0.5)  # within PLAIN_EVERY_S of the start: not printed
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    bar.update(6, loss=0.25)
    bar.set_total(20, 20)  # done, total
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1].rsplit(" ", 2)[0] for line in lines] == [
        "train: 6/10 (60 %) loss=0.25", "train: 20/20 (100 %)"]
    quiet = progress.Reporter(enabled=False)
    quiet("train", 5, 5, loss=1.0)
    loud = progress.Reporter()
    loud("sample", 3, 3)
    assert capsys.readouterr().err.count("sample: 3/3") == 1 and not quiet.bars
