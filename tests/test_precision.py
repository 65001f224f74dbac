"""mixed_precision = "auto": the probe's decisions, and that probing leaves the run exactly as it was."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from facediff import api
from facediff.training import precision
from facediff.training.precision import choose_precision, kernel_probe

CPU = torch.device("cpu")


def _fake_step(ms: dict[str, float]):
    calls = []

    def step(mp: str) -> None:
        calls.append(mp)
        time.sleep(ms[mp] / 1000)
    return step, calls


def test_kernel_probe_measures_both_precisions():
    fp32, bf16 = kernel_probe()
    assert fp32 > 0 and bf16 > 0 and kernel_probe() == (fp32, bf16)  # measured once per process


def test_auto_takes_fp32_when_bf16_kernels_are_slower(monkeypatch):
    monkeypatch.setattr(precision, "kernel_probe", lambda: (1.0, 12.0))
    step, calls = _fake_step({"no": 1, "bf16": 1})
    c = choose_precision("auto", CPU, step)
    assert c.chosen == "no" and "12.0x slower" in c.reason and not c.warning
    assert calls == []  # the model probe is skipped: the kernels already decided
    assert c.probe_ms == {"kernel_fp32": 1.0, "kernel_bf16": 12.0}


def test_explicit_bf16_is_kept_but_warned_when_slower(monkeypatch):
    monkeypatch.setattr(precision, "kernel_probe", lambda: (1.0, 16.0))
    c = choose_precision("bf16", CPU)
    assert c.chosen == "bf16" and c.warning and "16.0x slower" in c.reason
    monkeypatch.setattr(precision, "kernel_probe", lambda: (1.0, 0.5))
    c = choose_precision("bf16", CPU)
    assert c.chosen == "bf16" and not c.warning


@pytest.mark.parametrize("bf16_ms, expected", [(20.0, "bf16"), (38.0, "no")])
def test_auto_times_the_model_when_kernels_allow_bf16(monkeypatch, bf16_ms, expected):
    monkeypatch.setattr(precision, "kernel_probe", lambda: (1.0, 0.5))
    step, calls = _fake_step({"no": 40.0, "bf16": bf16_ms})
    c = choose_precision("auto", CPU, step, margin=1.1)
    assert c.chosen == expected
    assert set(calls) == {"no", "bf16"} and len(calls) >= 4  # warm-up + timed repeats of each
    assert c.probe_ms["model_fp32"] >= 40.0 and c.probe_ms["model_bf16"] >= bf16_ms


def test_explicit_fp32_is_not_probed(monkeypatch):
    def boom():
        raise AssertionError("probed")
    monkeypatch.setattr(precision, "kernel_probe", boom)
    assert choose_precision("no", CPU).chosen == "no"


def _losses(run: Path) -> list[float]:
    return [json.loads(l)["loss"] for l in (run / "logs" / "metrics.jsonl").read_text().splitlines()]


def test_model_probe_leaves_the_run_unchanged(monkeypatch, tmp_path, synth16):
    """The probe runs the real task's forward/backward in both precisions; the run that follows must be the
    run an explicit setting gives (same losses): no stale gradients, no consumed randomness."""
    monkeypatch.setattr(precision, "kernel_probe", lambda: (1.0, 0.5))  # force the model probe
    common = [f"data.path={synth16}", "train.log_every=1", "train.max_steps=3", "train.batch_size=8",
              "train.checkpoint_every=0"]
    s = api.train("ddpm", "tiny-ddpm", tmp_path / "auto", overrides=common + ["train.mixed_precision=auto"])
    p = s["precision"]
    assert p["requested"] == "auto" and p["chosen"] in ("no", "bf16") and "model_fp32" in p["probe_ms"]
    api.train("ddpm", "tiny-ddpm", tmp_path / "explicit", overrides=common + [f"train.mixed_precision={p['chosen']}"])
    assert _losses(tmp_path / "auto") == _losses(tmp_path / "explicit")


def test_presets_default_to_auto():
    from facediff.config import load_config, preset_names

    for name in preset_names():
        assert load_config(name).train.mixed_precision in ("auto", "no"), name


# ------------------------------------------------------------------------------------------------ sampling
def test_sampling_precision_follows_the_forward_probe(monkeypatch):
    from facediff.errors import FacediffError
    from facediff.sampling import precision as sp

    seen = []
    monkeypatch.setattr(sp, "kernel_probe", lambda **kw: (seen.append(kw), (1.0, 0.5))[1])
    assert sp.sampling_precision("auto", "cpu")[0] == "bf16" and seen == [{"backward": False}]
    monkeypatch.setattr(sp, "kernel_probe", lambda **kw: (1.0, 3.0))
    chosen, reason = sp.sampling_precision("auto", "cpu")
    assert chosen == "no" and "0.33x" in reason
    assert sp.sampling_precision("bf16", "cpu") == ("bf16", "bf16 (as asked), though measured 3.0x slower than fp32 on this CPU")
    monkeypatch.setattr(sp, "kernel_probe", lambda **kw: pytest.fail("fp32 needs no probe"))
    assert sp.sampling_precision("no", "cpu")[0] == "no"
    with pytest.raises(FacediffError, match="precision"):
        sp.sampling_precision("fp8", "cpu")


def test_bf16_sampling_runs_the_network_in_bf16_and_the_images_stay_close():
    import numpy as np

    pipe = api.load()
    dtypes = []
    hook = pipe.unet.conv_in.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    try:
        fp32 = pipe(4, attrs={"smiling": 5}, steps=6, seed=3)
        assert fp32.precision == "no" and set(dtypes) == {torch.float32}
        dtypes.clear()
        bf16 = pipe(4, attrs={"smiling": 5}, steps=6, seed=3, precision="bf16")
        assert bf16.precision == "bf16" and set(dtypes) == {torch.bfloat16}
    finally:
        hook.remove()
    diff = np.abs(fp32.images.astype(int) - bf16.images)
    assert diff.mean() < 4 and diff.max() > 0  # the same faces, not the same bits


def test_a_resumed_auto_run_keeps_the_precision_it_started_with(monkeypatch, tmp_path, synth16):
    """A new probe on resume could pick the other precision (timings are noisy); the resumed losses must
    still repeat the uninterrupted run's, so the checkpoint's precision is kept."""
    common = [f"data.path={synth16}", "train.log_every=1", "train.batch_size=8", "train.checkpoint_every=2",
              "train.mixed_precision=auto"]
    monkeypatch.setattr(precision, "kernel_probe", lambda: (1.0, 0.5))  # bf16 kernels "faster" ...
    monkeypatch.setattr(precision, "model_probe", lambda step, repeats=2: {"no": 2.0, "bf16": 1.0})  # ... model too
    first = api.train("ddpm", "tiny-ddpm", tmp_path / "run", overrides=common + ["train.max_steps=2"])
    assert first["precision"]["chosen"] == "bf16"
    monkeypatch.setattr(precision, "kernel_probe", lambda: (1.0, 9.0))  # now the probe would say fp32
    resumed = api.train("ddpm", "tiny-ddpm", tmp_path / "run", overrides=common + ["train.max_steps=4"], resume=True)
    assert resumed["precision"]["chosen"] == "bf16" and "resumed" in resumed["precision"]["reason"]
    fresh = api.train("ddpm", "tiny-ddpm", tmp_path / "fresh", overrides=common + ["train.max_steps=4"])
    assert fresh["precision"]["chosen"] == "no"  # without a checkpoint the (patched) probe decides
