"""Shared machinery of the seed recipes: budget, data, throughput-sized training arms, evaluation, tables.

A recipe gets a :class:`Ctx` (output folder, data, budget, image size, model) and returns its results dict;
:func:`finish` writes ``results.json``, ``results.md`` (tables laid out like the seed's, the seed's published
numbers labelled apart from ours) and ``report.html`` (``write_report``, with sample grids).
Training arms are sized by wall time: a 3-step probe run measures images/s and the fixed cost of a run
(start-up, export, sample grid), and ``train.max_steps`` is set so the arm fits its share of the budget.
"""
from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from facediff.config import preset_path
from facediff.errors import FacediffError
from facediff.evaluation.evaluate import evaluate
from facediff.pipelines.load import load_pipeline
from facediff.progress import Progress
from facediff.training.run import train

EVAL_SAFETY = 1.3  # evaluation costs more than its sampling alone (features, MTCNN, KID, report)


@dataclass
class Ctx:
    """What a recipe is run with (built by ``registry.run_experiment``)."""

    name: str  # recipe name
    out: Path  # output folder (results.json, results.md, report.html, runs/, evals/, data/)
    budget_minutes: float  # total wall-clock budget of the recipe
    size: int = 32  # image side in px of the models trained / the data rendered
    data: Path | None = None  # a prepared data set (None = SynthFaces rendered into out/data)
    model: str | None = None  # model for sampling-only recipes (None = the bundled default model)
    n_eval: int | None = None  # images per evaluated arm (None = sized by the budget)
    progress: Progress | None = None  # progress callback of long steps (None: nothing shown)
    tiny: bool = False  # smoke-test mode: tiny configs, 2 training steps, no probes (tests only)
    t0: float = field(default_factory=time.time)

    def left_s(self) -> float:
        """Seconds of budget left."""
        return self.budget_minutes * 60 - (time.time() - self.t0)

    def steps(self, k: int) -> int:
        """Sampler steps of an evaluation (at most 3 in tiny mode)."""
        return min(k, 3) if self.tiny else k

    def say(self, what: str) -> None:
        """One progress line on stderr (with the time and the budget left), when progress is shown."""
        if self.progress is not None:
            print(f"[{time.strftime('%H:%M:%S')}] {self.name}: {what} ({self.left_s() / 60:.1f} min of budget left)",
                  file=sys.stderr, flush=True)

    def data_label(self) -> str:
        """How "ours" is labelled in the tables."""
        src = "SynthFaces" if self.data is None else f"data {self.data.name}"
        return f"ours ({src} {self.size}px, CPU budget {self.budget_minutes:g} min)"


def config_path(name: str) -> Path:
    """A preset shipped in the package (``facediff/presets``); a one-line error when it is missing."""
    return preset_path(name)


def prepare_data(ctx: Ctx, style: str, n: int) -> tuple[Path, str | None]:
    """The data set of the recipe and its evaluation split: ``--data`` as given, else SynthFaces in out/data."""
    from facediff.data.prepared import PreparedDataset

    if ctx.data is not None:
        if not (ctx.data / "manifest.json").is_file():
            raise FacediffError(f"--data {ctx.data}: not a prepared data set (no manifest.json); "
                                "make one with `facediff data prepare` or `facediff data synth`")
        path = ctx.data
    else:
        from facediff.data.synth import write_synth

        path = ctx.out / "data"
        if not (path / "manifest.json").is_file():
            write_synth(path, n=n, size=ctx.size, style=style, seed=0, overwrite=True)
    splits = {lab.get("split", "train") for lab in PreparedDataset(path).all_labels}
    return path, ("val" if "val" in splits else None)


def base_overrides(ctx: Ctx, data: Path, steps: int) -> list[str]:
    """Overrides every training arm shares: data, size, step count, no intermediate checkpoints or grids."""
    attn = max(4, ctx.size // 4)  # self-attention on the 8x8 (32 px) / 16x16 (64 px) feature map only
    ov = [f"data.path={data}", f"data.size={ctx.size}", f"train.max_steps={steps}", "train.checkpoint_every=0",
          "train.sample_every=0", f"train.sample_steps={1 if ctx.tiny else 10}", "train.sample_sampler=ddim", "train.log_every=1",
          f"train.mixed_precision={'no' if ctx.tiny else 'auto'}", f"train.warmup_steps={0 if ctx.tiny else min(20, max(1, steps // 10))}"]
    if not ctx.tiny:
        ov.append(f"model.attention_resolutions=[{attn}]")
    return ov


def base_config(ctx: Ctx, preset: str = "default-32") -> Path:
    """The preset an arm starts from: tiny-ddpm in tiny mode, else ``preset``."""
    return config_path("tiny-ddpm" if ctx.tiny else preset)


@dataclass
class Throughput:
    """Measured training speed of one architecture."""

    images_per_s: float  # steady-state training images per second
    overhead_s: float  # fixed seconds of a run besides its steps (start-up, export, final grid)


def probe(ctx: Ctx, config: Path | None, overrides: Sequence[str], name: str) -> Throughput:
    """Train 3 steps of an arm's architecture and measure its images/s and fixed cost."""
    if ctx.tiny:
        return Throughput(images_per_s=1e9, overhead_s=0.0)
    run = ctx.out / "probes" / name
    shutil.rmtree(run, ignore_errors=True)
    t = time.time()
    train("ddpm", config, run, overrides=[*overrides, "train.max_steps=3"])
    wall = time.time() - t
    rows = [json.loads(r) for r in (run / "logs" / "metrics.jsonl").read_text().splitlines() if r.strip()]
    speeds = [r["images_per_s"] for r in rows[1:] if r.get("images_per_s")] or [rows[-1]["images_per_s"]]
    ips = float(statistics.median(speeds))
    per_step = json.loads((run / "config.json").read_text())["train"]
    step_s = per_step["batch_size"] * per_step["grad_accum"] / ips
    return Throughput(images_per_s=ips, overhead_s=max(0.0, wall - 3 * step_s))


def arm_seconds(ctx: Ctx, train_share: float, arms_left: int) -> float:
    """Training seconds of the next arm: what is left of the training share, split over the arms left."""
    return (ctx.left_s() - ctx.budget_minutes * 60 * (1 - train_share)) / max(1, arms_left)


def steps_for(ctx: Ctx, tp: Throughput, seconds: float, batch_size: int, grad_accum: int = 1) -> int:
    """Optimizer steps that fit ``seconds`` of one arm (at least 1; 2 in tiny mode)."""
    if ctx.tiny:
        return 2
    return max(1, int((seconds - tp.overhead_s) * tp.images_per_s / (batch_size * grad_accum)))


def train_arm(ctx: Ctx, name: str, config: Path | None, overrides: Sequence[str]) -> dict[str, Any]:
    """Train one arm into out/runs/NAME (a finished arm is reused); returns the run summary + seconds."""
    run = ctx.out / "runs" / name
    summary_file = run / "logs" / "summary.json"
    if summary_file.is_file() and (run / "export" / "model_index.json").is_file():
        s = json.loads(summary_file.read_text())
        tc = s.get("config", {}).get("train", {})
        return {**{k: v for k, v in s.items() if k != "config"}, "run": str(run), "seconds": None, "reused": True,
                "images": s["steps"] * tc.get("batch_size", 0) * tc.get("grad_accum", 1)}
    shutil.rmtree(run, ignore_errors=True)
    ctx.say(f"training arm {name}")
    t = time.time()
    summary = train("ddpm", config, run, overrides=list(overrides), progress=ctx.progress)
    tc = json.loads((run / "config.json").read_text())["train"]
    return {**summary, "images": summary["steps"] * tc["batch_size"] * tc["grad_accum"], "run": str(run),
            "seconds": round(time.time() - t, 1)}


def untrained_arm(ctx: Ctx, name: str, config: Path | None, overrides: Sequence[str]) -> dict[str, Any]:
    """An arm at its initial weights (no training step) in out/runs/NAME."""
    from facediff.training.diffusion import export_untrained
    from facediff.training.run import run_config

    run = ctx.out / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    summary = export_untrained(run_config("ddpm", config, run, list(overrides), False), run)
    return {**summary, "images": 0, "run": str(run), "seconds": 0.0}


def sampling_cost(model: str | Path | None, sampler: str = "ddim", guidance: float = 3.0) -> float:
    """Seconds per image per sampler step of ``model`` (8 images, 2 steps, after one warm-up call)."""
    pipe = load_pipeline(model)
    conds = [{a: 0 for a in pipe.attributes}] * 8 if pipe.conditional else None
    kw = dict(sampler=sampler, steps=2, guidance=guidance)
    pipe(seeds=list(range(2)), attrs=conds[:2] if conds else None, **kw)
    t = time.time()
    pipe(seeds=list(range(8)), attrs=conds, **kw)
    return (time.time() - t) / 16


def size_n(ctx: Ctx, seconds: float, image_steps: float, lo: int = 16, hi: int = 512) -> int:
    """Images per arm: ``ctx.n_eval`` if given, else what ``seconds`` of sampling allows at ``image_steps``
    seconds per image (summed over every arm), a multiple of 8 within [lo, hi]."""
    if ctx.n_eval is not None:
        if ctx.n_eval < 4:
            raise FacediffError(f"n_eval = {ctx.n_eval}: at least 4 images are needed for FD/KID")
        return ctx.n_eval
    n = int(seconds / max(image_steps * EVAL_SAFETY, 1e-9))
    return max(lo, min(hi, n // 8 * 8))


def evaluate_arm(ctx: Ctx, name: str, model: str | Path | None, data: Path, split: str | None, *, n: int,
                 metrics: str, sampler: str, steps: int, guidance: float = 3.0, init_noise: str = "normal",
                 step_noise: bool = True, seed: int = 0) -> dict[str, Any]:
    """``evaluate`` into out/evals/NAME (metrics.json + report with its sample grid)."""
    if n < 48:  # too few images per attribute level for FD by condition (it raises when no group has 2)
        metrics = ",".join(m for m in metrics.split(",") if m != "fd_by_condition")
    ctx.say(f"evaluating arm {name} (n = {n}, {sampler} {steps} steps)")
    t = time.time()
    r = evaluate(model, data, metrics=metrics, n=n, sampler=sampler, steps=steps, guidance=guidance,
                     seed=seed, split=split, init_noise=init_noise, step_noise=step_noise,
                     out=ctx.out / "evals" / name, progress=ctx.progress)
    r["eval_seconds"] = round(time.time() - t, 1)
    return r


def grid_of(ctx: Ctx, name: str) -> Path | None:
    """The sample grid evaluate() wrote for arm NAME."""
    p = ctx.out / "evals" / name / "report_files" / "samples.png"
    return p if p.is_file() else None


def pick(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one evaluate() result (None where not measured)."""
    def get(*keys: str) -> Any:
        v: Any = result
        for k in keys:
            if not isinstance(v, dict) or k not in v:
                return None
            v = v[k]
        return v

    return {"fd_oracle": get("fd_oracle"), "kid_oracle": get("kid_oracle"), "kid_oracle_std": get("kid_oracle_std"),
            "fd_by_condition": get("fd_by_condition", "mean"), "attr_accuracy": get("attr", "accuracy"),
            "faces_rate": get("faces", "rate"), "mtcnn_confidence": get("faces", "mean_confidence"),
            "diversity": get("diversity"), "seconds_per_image": get("timing", "seconds_per_image"),
            "nfe": get("timing", "network_evaluations")}


def fmt(v: Any, kind: str = "num") -> str:
    """One table cell: percentages for rates/accuracies, 4 significant digits otherwise, "—" for None."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, str):
        return v
    if kind == "pct":
        return f"{100 * v:.2f} %"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table (cells already strings or formatted with :func:`fmt`)."""
    esc = [[fmt(c).replace("|", "\\|") for c in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in esc)]


def finish(ctx: Ctx, results: dict[str, Any], markdown: list[str], grids: dict[str, Path | None],
           floors: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write results.json, results.md and report.html (metrics per arm flattened, grids embedded)."""
    from facediff.report.html import write_report

    results = {"recipe": ctx.name, "budget_minutes": ctx.budget_minutes, "size": ctx.size,
               "data": str(ctx.data) if ctx.data else "SynthFaces (rendered into out/data)",
               "elapsed_s": round(time.time() - ctx.t0, 1), **results}
    ctx.out.mkdir(parents=True, exist_ok=True)
    (ctx.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    md = [f"# facediff experiment {ctx.name}", "", *markdown, "",
          f"Elapsed: {results['elapsed_s'] / 60:.1f} min of a {ctx.budget_minutes:g} min budget."]
    (ctx.out / "results.md").write_text("\n".join(md) + "\n")
    metrics = {arm["name"]: arm.get("metrics", {}) for arm in results.get("arms", [])}
    images = {k: p.read_bytes() for k, p in grids.items() if p is not None and Path(p).is_file()}
    write_report(ctx.out, metrics, grids=images, floors=floors, config={k: v for k, v in results.items()
                                                                       if k not in ("arms",)},
                 title=f"facediff experiment {ctx.name}", write_metrics_json=False)
    results["files"] = {n: str(ctx.out / n) for n in ("results.json", "results.md", "report.html")}
    return results
