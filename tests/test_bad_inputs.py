"""Bad inputs through the CLI, one case each: exit code 2 and ONE line on stderr that names the file / key / value,
never a traceback; plus a property-based fuzzer over every config field and the numeric options of `sample`.

``CASES`` is also the source of the table in docs/reliability.md (``python scripts/reliability_table.py``).
Placeholders in a case: {run} a finished tiny attribute-conditional run, {ae} a finished tiny autoencoder run,
{data} a tiny prepared data set, {tmp} a fresh empty folder, {file} an existing plain file.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from facediff.cli.main import app

runner = CliRunner()

# (case, command, what the one-line error must contain)
CASES: list[tuple[str, str, str]] = [
    # train: config values that pass the type check but make no sense
    ("batch size 0", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.batch_size=0", "[train] batch_size = 0: must be >= 1"),
    ("negative grad accumulation", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.grad_accum=-1", "grad_accum"),
    ("zero max_steps", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.max_steps=0", "max_steps"),
    ("float text for an int", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.max_steps=3.5", "max_steps = '3.5'"),
    ("NaN learning rate", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.lr=nan", "[train] lr"),
    ("infinite learning rate", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.lr=inf", "[train] lr"),
    ("negative checkpoint interval", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.checkpoint_every=-5", "checkpoint_every"),
    ("probability above 1", "train ddpm --config tiny-ddpm --out {tmp}/r --set diffusion.cond_drop_prob=1.5", "cond_drop_prob"),
    ("EMA decay 1", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.ema_decay=1", "ema_decay"),
    ("empty channel list", "train ddpm --config tiny-ddpm --out {tmp}/r --set model.block_out_channels=[]", "block_out_channels"),
    ("unknown schedule", "train ddpm --config tiny-ddpm --out {tmp}/r --set diffusion.schedule=quadratic", "schedule"),
    ("unknown config key", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.learning_rate=1", "learning_rate"),
    ("malformed --set", "train ddpm --config tiny-ddpm --out {tmp}/r --set train.lr", "section.key=value"),
    ("unknown preset", "train ddpm --config tiny-ddpmm --out {tmp}/r", "no preset of that name"),
    ("config file that is not TOML", "train ddpm --config {file} --out {tmp}/r", "not valid TOML"),
    ("missing data set", "train ddpm --config tiny-ddpm --data {tmp}/nothing --out {tmp}/r", "not a prepared data set"),
    ("resume of an empty folder", "train ddpm --out {tmp} --resume", "holds no run"),
    ("existing run without --resume", "train ddpm --config tiny-ddpm --out {run}", "already holds a run"),
    ("fp16 on a CPU", "train ddpm --config tiny-ddpm --data {data} --out {tmp}/r --set train.mixed_precision=fp16", "fp16"),
    ("ldm without autoencoder", "train ldm --config tiny-ldm --data {data} --out {tmp}/r", "autoencoder"),
    ("ldm on a diffusion run", "train ldm --config tiny-ldm --data {data} --autoencoder {run} --out {tmp}/r", "not an autoencoder run"),
    ("estimator with 0 steps", "train estimator --data {data} --out {tmp}/e --steps 0", "max_steps"),
    ("estimator with NaN lr", "train estimator --data {data} --out {tmp}/e --lr nan", "lr"),
    # sample
    ("NaN guidance", "sample --model {run} --guidance nan --out {tmp}/x.png", "guidance"),
    ("zero images", "sample --model {run} --n 0 --out {tmp}/x.png", "n = 0"),
    ("zero steps", "sample --model {run} --steps 0 --out {tmp}/x.png", "steps"),
    ("more steps than T", "sample --model {run} --steps 5000 --out {tmp}/x.png", "choose 1..100"),
    ("negative eta", "sample --model {run} --sampler ddim --eta -1 --out {tmp}/x.png", "eta"),
    ("NaN eta", "sample --model {run} --sampler ddim --eta nan --out {tmp}/x.png", "eta"),
    ("zero batch size", "sample --model {run} --batch-size 0 --out {tmp}/x.png", "batch_size = 0"),
    ("level out of range", "sample --model {run} --attrs smiling=9 --out {tmp}/x.png", "0..5"),
    ("attribute without level", "sample --model {run} --attrs smiling --out {tmp}/x.png", "name=value"),
    ("unknown attribute", "sample --model {run} --attrs smilng=5 --out {tmp}/x.png", "unknown attribute 'smilng'"),
    ("infinite per-attribute scale", "sample --model {run} --attr-scales smiling=inf --out {tmp}/x.png", "finite"),
    ("unknown sampler", "sample --model {run} --sampler plms --out {tmp}/x.png", "plms"),
    ("unknown device", "sample --model {run} --device tpu --out {tmp}/x.png", "--device 'tpu': unknown"),
    ("a CUDA device this machine lacks", "sample --model {run} --device cuda:99 --out {tmp}/x.png", "--device cuda:99"),
    ("eval on an unknown device", "eval --model {run} --data {data} --device gpu0 --out {tmp}/ev", "--device 'gpu0'"),
    ("missing model folder", "sample --model {tmp}/none --out {tmp}/x.png", "no such file or directory"),
    ("a file as model", "sample --model {file} --out {tmp}/x.png", "a file"),
    ("an autoencoder as model", "sample --model {ae} --out {tmp}/x.png", "an autoencoder, not a diffusion model"),
    ("a folder that is no model", "sample --model {tmp} --out {tmp}/x.png", "not a facediff run or export"),
    ("output below a plain file", "sample --model {run} --n 1 --steps 1 --out {file}/x.png", "is a file, not a folder"),
    ("eval output below a plain file", "eval --model {run} --data {data} --n 4 --out {file}/ev", "is a file, not a folder"),
    ("truncated weights", "sample --model {truncated} --out {tmp}/x.png", "cannot load it"),
    ("malformed model_index.json", "sample --model {badindex} --out {tmp}/x.png", "not valid JSON"),
    ("sketch for a model without sketch input", "sample --model {run} --sketch {file} --out {tmp}/x.png", "does not take a sketch"),
    # eval
    ("too few images for FD", "eval --model {run} --data {data} --n 2 --out {tmp}/ev", "at least 4"),
    ("unknown metric", "eval --model {run} --data {data} --metrics fd,foo --out {tmp}/ev", "unknown foo"),
    ("eval without data set", "eval --model {run} --data {tmp}/nothing --out {tmp}/ev", "nothing"),
    # experiment
    ("unknown recipe", "experiment seed9 --out {tmp}/x", "seed9"),
    ("negative budget", "experiment seed003-noise --budget-minutes -1 --out {tmp}/x", "budget-minutes"),
    ("NaN budget", "experiment seed003-noise --budget-minutes nan --out {tmp}/x", "budget-minutes"),
    ("unsupported size", "experiment seed003-noise --size 48 --out {tmp}/x", "--size 48"),
    # data
    ("synth with 0 faces", "data synth --out {tmp}/d --n 0", "n must be >= 1"),
    ("synth at 4 px", "data synth --out {tmp}/d --size 4", ">= 8"),
    ("unknown style", "data synth --out {tmp}/d --style cartoon", "cartoon"),
    ("synth over a data set", "data synth --out {data} --n 4", "--overwrite"),
    ("inspect a folder that is no data set", "data inspect {tmp}", "manifest"),
    ("convert into a non-empty folder", "convert {run} {run}", "not empty"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_run, synth16) -> dict[str, str]:
    from facediff import api

    root = tmp_path_factory.mktemp("bad")
    ae = root / "ae"
    api.train("autoencoder", "tiny-vq", ae, overrides=[f"data.path={synth16}", "train.max_steps=2"])
    f = root / "plain.txt"
    f.write_text("not a model, not an image = [")
    import shutil

    truncated = root / "truncated"
    shutil.copytree(tiny_run / "export", truncated)
    w = truncated / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    badindex = root / "badindex"
    shutil.copytree(tiny_run / "export", badindex)
    (badindex / "model_index.json").write_text('{"_class_name": "FacediffPipeline",')
    return {"run": str(tiny_run), "ae": str(ae), "data": str(synth16), "file": str(f), "truncated": str(truncated),
            "badindex": str(badindex)}


@pytest.mark.parametrize("case,command,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, command, expected, places, tmp_path):
    args = command.format(tmp=tmp_path, **places).split()
    res = runner.invoke(app, args)
    err = res.stderr.strip()
    assert res.exit_code == 2, f"{case}: exit {res.exit_code}\n{res.output}"
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in res.output, err
    assert expected in err, err


def test_failed_first_start_does_not_block_the_corrected_command(tmp_path, synth16):
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "ddpm", "--config", "tiny-ddpm", "--data", str(tmp_path / "typo"), "--out", str(out)])
    assert res.exit_code == 2 and not (out / "config.json").exists()
    res = runner.invoke(app, ["train", "ddpm", "--config", "tiny-ddpm", "--data", str(synth16), "--out", str(out),
                              "--set", "train.max_steps=2"])
    assert res.exit_code == 0, res.output


# -- property-based: every config field, any text --------------------------------------------------------------
def _fields() -> list[str]:
    import dataclasses

    from facediff.config import RunConfig

    cfg = RunConfig()
    return [f"{name}.{f.name}" for name in ("data", "model", "diffusion", "train", "autoencoder", "latent")
            for f in dataclasses.fields(getattr(cfg, name))]


_texts = st.one_of(st.sampled_from(["0", "-1", "1", "nan", "inf", "-inf", "1e400", "3.5", "", "[]", "[0]", "[1,2]",
                                    "true", "x", "1e-3", "2", "[8, 16]", "cosine", "vq"]),
                   st.integers(-5, 5).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(max_size=6))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(_fields()), value=_texts)
def test_fuzz_config_fields_one_line_error_or_a_valid_config(field, value):
    """``--set FIELD=VALUE`` either gives a config that passes its own checks again, or one ConfigError line."""
    import dataclasses

    from facediff.config import ConfigError, apply_overrides, load_config

    try:
        cfg = apply_overrides(load_config("tiny-ddpm"), [f"{field}={value}"])
    except ConfigError as e:
        assert "\n" not in str(e) and field.split(".")[1] in str(e)
        return
    section, name = field.split(".")
    got = getattr(getattr(cfg, section), name)
    assert not (isinstance(got, float) and not math.isfinite(got))  # NaN / inf never pass
    dataclasses.replace(getattr(cfg, section))  # and the accepted value validates again


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(n=st.integers(-2, 3), steps=st.integers(-1, 3),
       guidance=st.sampled_from([0.0, 1.0, 3.0, -2.0, float("nan"), float("inf")]),
       eta=st.sampled_from([0.0, 0.5, -1.0, float("nan")]), batch=st.integers(-1, 3))
def test_fuzz_sample_numeric_options(n, steps, guidance, eta, batch, places, tmp_path):
    """`sample` with any numbers: faces written (exit 0) or one line (exit 2); never exit 0 with nothing done."""
    out = tmp_path / f"s_{n}_{steps}_{batch}.png"
    out.unlink(missing_ok=True)
    res = runner.invoke(app, ["sample", "--model", places["run"], "--n", str(n), "--steps", str(steps), "--sampler",
                              "ddim", "--guidance", str(guidance), "--eta", str(eta), "--batch-size", str(batch),
                              "--out", str(out)])
    if res.exit_code == 0:
        assert out.is_file() and n >= 1 and steps >= 1 and batch >= 1 and math.isfinite(guidance) and eta >= 0
    else:
        err = res.stderr.strip()
        assert res.exit_code == 2 and err.startswith("error: ") and "\n" not in err, res.output
        assert not out.exists()
