"""Time to quality: FD_oracle vs CPU-minutes, the real diffusers example vs ``facediff train``, same data and net.

Both train facediff's default network (unconditional, 4.1M parameters) on the same SynthFaces PNG folder at
batch 32, one thread each, side by side (one per core), each with ITS OWN defaults: the example with its
schedule / prediction type / LR / EMA as shipped (plus EMA on, the same flip augmentation, no loader
workers, fp32, checkpoints every ``--checkpoint-every`` steps), facediff with the ``default-32`` preset.
Then each arm's EMA weights at several wall-clock times since its process started are sampled (20-step
DPM-Solver++, ``--eval-n`` images) and scored with ``facediff eval`` (FD_oracle; its real-vs-real floor at
the same n). Output: JSON + a plot of both curves. See benchmarks/peers.py for the peer venv.

    python benchmarks/time_to_quality.py --diffusers-example /tmp/train_unconditional.py \
        --peer-python /tmp/peers/bin/python --minutes 30 --work /tmp/ttq \
        --out benchmarks/results/time_to_quality.json
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import REPO, StepLog, example_args, facediff_cmd, facediff_overrides, one_thread_env, prepare_data, \
    python_version_of, write_unet_config  # noqa: E402


def train_both(a: argparse.Namespace, work: Path, ds: Path, folder: Path, config_dir: Path) -> dict:
    env = one_thread_env(1)
    ex_out, fd_out = work / "example-run", work / "facediff-run"
    for d in (ex_out, fd_out):
        shutil.rmtree(d, ignore_errors=True)
    ex = StepLog([a.peer_python, *example_args(Path(a.diffusers_example), folder, ex_out, config_dir, a.size,
                                                 a.batch, "no", 1000, a.checkpoint_every)], env, work / "example.log")
    fd_cmd = [*facediff_cmd(), "train", "ddpm", "--config", "default-32", "--data", str(ds), "--out", str(fd_out)]
    for item in facediff_overrides(a.size, a.batch) + [
            f"train.time_budget_minutes={a.minutes}", "train.sample_every=0",
            f"train.checkpoint_every={a.checkpoint_every}", "train.keep_checkpoints=100000",
            f"train.mixed_precision={a.facediff_precision}"]:
        fd_cmd += ["--set", item]
    t_fd = time.time()
    fd = subprocess.Popen(fd_cmd, env=env, stdout=open(work / "facediff.log", "w"), stderr=subprocess.STDOUT)
    t_ex = time.time() - (time.perf_counter() - ex.t0)
    deadline = 60 * a.minutes + 30  # the example is stopped at the wall-clock limit
    rc_ex = ex.wait(timeout=deadline)
    rc_fd = fd.wait()
    return {"example": {"dir": str(ex_out), "t_start": t_ex, "rc": rc_ex, "steps": ex.steps[-1][1] if ex.steps else 0},
            "facediff": {"dir": str(fd_out), "t_start": t_fd, "rc": rc_fd}}


def checkpoints(arm: str, info: dict) -> list[tuple[float, int, Path]]:
    """(minutes since the arm's process started, step, folder) of every checkpoint, in order."""
    d = Path(info["dir"])
    if arm == "example":
        found = [(int(p.name.split("-")[1]), p) for p in d.glob("checkpoint-*") if (p / "unet_ema").is_dir()]
    else:
        found = [(int(p.name.split("-")[1]), p) for p in (d / "state").glob("step-*") if (p / "manifest.json").is_file()]
    rows = []
    for step, p in sorted(found):
        stamp = p / ("unet_ema" if arm == "example" else "manifest.json")
        rows.append(((stamp.stat().st_mtime - info["t_start"]) / 60, step, p))
    return rows


def export(arm: str, ckpt: Path, run_dir: Path, dest: Path) -> Path:
    """The checkpoint's EMA weights as a folder ``facediff eval`` samples."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from safetensors.torch import load_file

    if dest.is_dir():
        return dest
    if arm == "example":  # the example's own scheduler defaults: linear betas, 1000 steps, epsilon
        unet = UNet2DModel.from_pretrained(ckpt / "unet_ema")
        DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
                     ).save_pretrained(dest)
        return dest
    from facediff.config import load_config_json, to_dict
    from facediff.diffusion.schedules import scheduler_config
    from facediff.models.unet import build_unet
    from facediff.pipelines.facediff import FacediffPipeline
    from facediff.pipelines.load import save_pipeline

    cfg = load_config_json(run_dir / "config.json")
    unet = build_unet(cfg.model, cfg.data.size)
    unet.load_state_dict(load_file(str(ckpt / "ema.safetensors")))
    pipe = FacediffPipeline(unet=unet, scheduler=DDPMScheduler.from_config(scheduler_config(cfg.diffusion)),
                            attributes=(), num_levels=cfg.model.num_levels)
    torch.manual_seed(0)
    return save_pipeline(pipe, dest, to_dict(cfg))


def evaluate_arms(a: argparse.Namespace, work: Path, ds: Path, trained: dict) -> dict:
    from facediff import api

    curves: dict = {}
    targets = [float(m) for m in a.eval_at.split(",")]
    for arm, info in trained.items():
        if arm not in a.eval_arms.split(","):
            continue
        ck = checkpoints(arm, info)
        chosen = []
        for m in targets:  # the last checkpoint written by minute m
            before = [c for c in ck if c[0] <= m + 0.25]
            if before and before[-1] not in chosen:
                chosen.append(before[-1])
        rows = []
        for minutes, step, p in chosen:
            folder = export(arm, p, Path(info["dir"]), work / "exports" / f"{arm}-{step}")
            sampler = a.example_sampler if arm == "example" else "dpmpp"
            r = api.evaluate(folder, ds, metrics="fd", n=a.eval_n, sampler=sampler, steps=20, seed=1)
            rows.append({"minutes": round(minutes, 2), "step": step, "sampler": sampler, "fd_oracle": r["fd_oracle"],
                         "floor_fd_oracle": r["floor_real_vs_real"]["fd_oracle"]})
            print(arm, rows[-1], flush=True)
        curves[arm] = rows
        suffix = f"-{a.example_sampler}" if arm == "example" and a.example_sampler != "dpmpp" else ""
        (work / f"curve-{arm}{suffix}.json").write_text(json.dumps(rows, indent=1))
    return curves


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = {"example": "diffusers train_unconditional.py (defaults)", "facediff": "facediff train ddpm (defaults)"}
    for arm, rows in curves.items():
        label = f"{names[arm]}, sampled with {rows[0].get('sampler', 'dpmpp')} 20 steps"
        ax.plot([r["minutes"] for r in rows], [r["fd_oracle"] for r in rows], "o-", label=label)
    floors = [r["floor_fd_oracle"] for rows in curves.values() for r in rows]
    if floors:
        ax.axhline(sum(floors) / len(floors), color="gray", ls="--", label="real vs real floor")
    ax.set_xlabel("wall-clock minutes since start (1 CPU thread)")
    ax.set_ylabel("FD_oracle (lower is better)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffusers-example", required=True, help="path of diffusers' train_unconditional.py")
    ap.add_argument("--peer-python", required=True, help="python of a venv with torchvision + diffusers + datasets")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=2048, help="training images")
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--eval-at", default="5,10,15,20,30", help="minutes at which each arm is scored")
    ap.add_argument("--eval-n", type=int, default=256)
    ap.add_argument("--facediff-precision", default="auto", help="facediff's [train] mixed_precision")
    ap.add_argument("--phase", choices=["all", "train", "eval", "report"], default="all",
                    help="train: both runs; eval: score checkpoints (--eval-arms); report: JSON + plot of the curves")
    ap.add_argument("--eval-arms", default="example,facediff")
    ap.add_argument("--example-sampler", default="dpmpp",
                    help="sampler for the example's checkpoints (its linear-beta eps models need ddim's x0 clipping "
                         "at 20 steps; DPM-Solver++ diverges on them early in training)")
    ap.add_argument("--work", default="/tmp/ttq")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "time_to_quality.json"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ds, folder = prepare_data(work, a.n, a.size)
    config_dir, params = write_unet_config(work, a.size)
    state = work / "trained.json"
    if a.phase in ("all", "train"):
        trained = train_both(a, work, ds, folder, config_dir)
        state.write_text(json.dumps(trained, indent=1))
    if a.phase == "train":
        return
    trained = json.loads(state.read_text())
    if a.phase in ("all", "eval"):
        evaluate_arms(a, work, ds, trained)
    curves = {arm: json.loads((work / f"curve-{arm}.json").read_text()) for arm in ("example", "facediff")
              if (work / f"curve-{arm}.json").is_file()}
    for other in sorted(work.glob("curve-example-*.json")):  # the example scored with other samplers too:
        rows = json.loads(other.read_text())                 # its best curve (lowest final FD) is the bar
        if rows and (not curves.get("example") or rows[-1]["fd_oracle"] < curves["example"][-1]["fd_oracle"]):
            curves["example"] = rows
    ex_final = curves["example"][-1] if curves.get("example") else None
    reached = None
    if ex_final:
        hit = [r for r in curves.get("facediff", []) if r["fd_oracle"] <= ex_final["fd_oracle"]]
        reached = hit[0]["minutes"] if hit else None
    res = {"benchmark": "time_to_quality", "size": a.size, "batch": a.batch, "n_train": a.n, "parameters": params,
           "minutes": a.minutes, "eval_n": a.eval_n, "curves": curves, "example_final": ex_final,
           "facediff_minutes_to_example_final": reached,
           "ratio": (ex_final["minutes"] / reached) if (ex_final and reached) else None,
           "torch_facediff": python_version_of(sys.executable), "torch_peer": python_version_of(a.peer_python),
           "machine": platform.processor() or platform.machine(), "command": " ".join(sys.argv)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    plot(curves, Path(a.out).with_suffix(".png"))
    print(json.dumps({k: v for k, v in res.items() if k != "curves"}, indent=1))


if __name__ == "__main__":
    main()
