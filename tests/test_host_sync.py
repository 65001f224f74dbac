"""[train] host_sync = "log": a training step that never reads the device (training.host_sync): the same
losses as per-step reads, non-finite steps skipped on the device, counted and stopped as before."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from facediff import api
from facediff.config import TrainConfig
from facediff.errors import FacediffError
from facediff.training.host_sync import DeviceGuard

TINY = "tiny-ddpm"


def _rows(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines() if l]


class _Acc:  # what DeviceGuard asks of accelerate's Accelerator on one process
    num_processes = 1


def test_a_nonfinite_step_is_skipped_on_the_device_exactly():
    """fused AdamW with found_inf = 1 leaves weights, moments and step count as they were; the counters (total,
    longest run in a row) are read on demand, and a run of max_nonfinite raises the one-line error."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, fused=True)
    guard = DeviceGuard(torch.device("cpu"), nonfinite_total=5)

    def step(scale: float) -> None:
        loss = net(torch.randn(8, 4)).pow(2).mean() * scale
        guard.see([loss])
        loss.backward()
        guard.step(_Acc(), [opt])
        opt.zero_grad(set_to_none=True)

    step(1.0)
    weights = [p.detach().clone() for p in net.parameters()]
    moments = [opt.state[p]["exp_avg"].clone() for p in net.parameters()]
    steps = [float(opt.state[p]["step"]) for p in net.parameters()]
    step(float("nan"))
    step(float("inf"))
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    assert all(torch.equal(a, opt.state[p]["exp_avg"]) for a, p in zip(moments, net.parameters()))
    assert [float(opt.state[p]["step"]) for p in net.parameters()] == steps
    tc = TrainConfig(max_nonfinite=3)
    assert guard.read(3, tc) == 7  # 5 before + 2 skipped
    step(1.0)  # a finite step moves the weights again and ends the run of skips
    assert not torch.equal(weights[0], net.weight)
    for _ in range(3):
        step(float("nan"))
    with pytest.raises(FacediffError, match=r"stopped by step 7: 3 non-finite losses in a row; lower \[train\] lr"):
        guard.read(7, tc)


def test_log_mode_trains_as_per_step_reads_do(tmp_path, synth16):
    """Same seed, same data: host_sync = "log" (fused AdamW, no per-step reads) gives the losses and weights of
    host_sync = "step" up to float rounding; its rows are the log steps, with the loss read there."""
    common = [f"data.path={synth16}", "train.max_steps=6", "train.log_every=3", "train.checkpoint_every=0"]
    for mode in ("step", "log"):
        api.train("ddpm", TINY, tmp_path / mode, overrides=common + [f"train.host_sync={mode}"])
    step_rows, log_rows = _rows(tmp_path / "step"), _rows(tmp_path / "log")
    assert [r["step"] for r in log_rows] == [r["step"] for r in step_rows] == [3, 6]
    for a, b in zip(step_rows, log_rows):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
        assert b["nonfinite_total"] == a["nonfinite_total"] == 0
    from safetensors.torch import load_file

    name = "export/unet/diffusion_pytorch_model.safetensors"
    w_step, w_log = load_file(str(tmp_path / "step" / name)), load_file(str(tmp_path / "log" / name))
    assert all(torch.allclose(w_step[k], w_log[k], atol=1e-5) for k in w_step)


def test_log_mode_stops_on_nonfinite_losses_with_the_same_message(tmp_path, synth16):
    with pytest.raises(FacediffError, match="non-finite losses in a row"):
        api.train("ddpm", TINY, tmp_path / "nan", overrides=[
            f"data.path={synth16}", "train.lr=1e30", "train.grad_clip=0", "train.max_nonfinite=2",
            "train.max_steps=30", "train.warmup_steps=1", "train.log_every=4", "train.host_sync=log"])


def test_log_mode_reads_the_device_on_log_rows_only(tmp_path, synth16, monkeypatch):
    """Count the loop's reads of tensor values (item / bool / float / int called from training/loop.py, common.py,
    host_sync.py): per step under "step", per log row under "log"."""
    reads: list[str] = []
    ours = ("training/loop.py", "training/common.py", "training/host_sync.py")
    for name in ("item", "__bool__", "__float__", "__int__"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, _name=name, **k):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if caller.endswith(ours):
                reads.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    common = [f"data.path={synth16}", "train.max_steps=12", "train.log_every=6", "train.checkpoint_every=0",
              "train.mixed_precision=no"]
    counts = {}
    for mode in ("step", "log"):
        reads.clear()
        api.train("ddpm", TINY, tmp_path / mode, overrides=common + [f"train.host_sync={mode}"])
        counts[mode] = len(reads)
    assert counts["step"] >= 2 * 12  # the finite flag and the loss, every step
    assert counts["log"] <= 4 * 3, counts  # loss, grad norm, two counters per log row (2 rows); counters at the end
    with pytest.raises(FacediffError, match="host_sync = 'bogus': choose one of auto, step, log"):
        api.train("ddpm", TINY, tmp_path / "bad", overrides=common + ["train.host_sync=bogus"])


def test_log_mode_needs_a_fused_optimizer(tmp_path, synth16):
    """A task whose optimizer cannot skip on the device (the autoencoder's) refuses "log" in one line."""
    with pytest.raises(FacediffError, match="host_sync = 'log': this task's optimizer is not a fused Adam"):
        api.train("autoencoder", "tiny-kl", tmp_path / "ae", overrides=[
            f"data.path={synth16}", "train.max_steps=1", "train.host_sync=log"])
