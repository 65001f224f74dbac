"""Training throughput on the same network and batch: facediff vs the REAL diffusers example vs lucidrains.

Arms (each its own subprocess, one thread, interleaved repetitions; median and range reported):
  * ``facediff``: ``facediff train ddpm --config default-32`` (unconditional), timed from its own
    ``logs/metrics.jsonl`` (``seconds`` of every step) over steps ``warmup .. warmup+steps``;
  * ``diffusers-example``: ``train_unconditional.py`` unmodified (``--diffusers-example PATH``, run by
    ``--peer-python``), same PNG folder, the same U-Net config via ``--model_config_name_or_path``, timed
    from its own tqdm step log over the same window (start-up excluded);
  * ``network-step``: forward + backward + AdamW of the same network on one fixed batch, nothing else: the
    ceiling of any loop here (labelled as what it is: written here, not a peer);
  * ``lucidrains``: ``denoising_diffusion_pytorch.Trainer`` on its own ``Unet(dim=40, dim_mults=(1, 2, 4))``
    (4.0M parameters against 4.1M; its architecture differs), when ``--peer-python`` can import it.
Precisions: ``--precisions no,bf16,auto`` (the example's ``--mixed_precision bf16``, lucidrains' ``amp`` with
``mixed_precision_type="bf16"``; ``auto``, facediff's default, only for facediff: its probe picks no or bf16). Also reported: forward FLOPs of the network (``torch.utils.flop_counter``)
x 3 per trained image, as achieved GFLOP/s, against this machine's one-thread fp32 and bf16 GEMM peak
measured in the same run. See benchmarks/peers.py for the peer venv.

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --diffusers-example /tmp/train_unconditional.py \
        --peer-python /tmp/peers/bin/python --size 32 --reps 3 --out benchmarks/results/train_throughput-32.json
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import REPO, StepLog, example_args, facediff_overrides, forward_flops, one_thread_env, prepare_data, \
    python_version_of, run_facediff_train, window_rate, write_unet_config  # noqa: E402

LUCIDRAINS = '''
import sys
from denoising_diffusion_pytorch import GaussianDiffusion, Trainer, Unet
folder, out, size, batch, steps, mp = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
model = Unet(dim=40, dim_mults=(1, 2, 4))
print("parameters", sum(p.numel() for p in model.parameters()), flush=True)
diffusion = GaussianDiffusion(model, image_size=size, timesteps=1000)
trainer = Trainer(diffusion, folder, train_batch_size=batch, train_num_steps=steps, results_folder=out,
                  amp=mp != "no", mixed_precision_type="bf16", calculate_fid=False,
                  save_and_sample_every=10 ** 9)
trainer.train()
'''


NETWORK_STEP = '''
import json, sys, time, torch, torch.nn.functional as F
from facediff.config import load_config
from facediff.models.unet import build_unet
size, batch, steps, warmup, mp, overrides = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6:]
net = build_unet(load_config("default-32", overrides).model, size)
opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
x, t = torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,))
for i in range(warmup + steps):
    if i == warmup:
        t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mp == "bf16"):
        out = net(x, t).sample
    F.mse_loss(out.float(), x).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
print(json.dumps(steps * batch / (time.perf_counter() - t0)))
'''


def gemm_peak_gflops(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """One-thread matmul rate, the physical limit of a network made of convolutions and projections."""
    torch.set_num_threads(1)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def run_facediff(a, ds: Path, work: Path, mp: str) -> float:
    return run_facediff_train(a.facediff_python, ds, work / "facediff-run", a.size, a.batch, a.warmup, a.steps, mp,
                              one_thread_env(1))[0]


def run_example(a, folder: Path, config_dir: Path, work: Path, mp: str) -> float:
    out = work / "example-run"
    shutil.rmtree(out, ignore_errors=True)
    log = StepLog([a.peer_python, *example_args(Path(a.diffusers_example), folder, out, config_dir, a.size, a.batch,
                                                mp, 1000, 10 ** 9)], one_thread_env(1), work / "example.log")
    while not log.steps or log.steps[-1][1] < a.warmup + a.steps:
        if log.proc.poll() is not None:
            raise RuntimeError(f"the diffusers example stopped (rc {log.proc.returncode}); see {work / 'example.log'}")
        time.sleep(0.5)
    log.wait(timeout=0)
    return window_rate(log.steps, a.batch, a.warmup)


def run_lucidrains(a, folder: Path, work: Path, mp: str) -> float:
    out = work / "lucidrains-run"
    shutil.rmtree(out, ignore_errors=True)
    script = work / "lucidrains_driver.py"
    script.write_text(LUCIDRAINS)
    log = StepLog([a.peer_python, str(script), str(folder), str(out), str(a.size), str(a.batch),
                   str(a.warmup + a.steps + 1), mp], one_thread_env(1), work / "lucidrains.log", pattern="plain")
    rc = log.wait()
    if rc != 0:
        raise RuntimeError(f"lucidrains' Trainer failed (rc {rc}); see {work / 'lucidrains.log'}")
    return window_rate(log.steps, a.batch, a.warmup)


def run_network_step(a, work: Path, mp: str) -> float:
    """The bare network step (forward, backward, AdamW on one fixed batch; no data, no noise process, no EMA):
    the ceiling any training loop on this network can reach here."""
    script = work / "network_step.py"
    script.write_text(NETWORK_STEP)
    r = subprocess.run([a.facediff_python, str(script), str(a.size), str(a.batch), str(a.steps), str(a.warmup), mp,
                        *facediff_overrides(a.size, a.batch)], env=one_thread_env(1), check=True,
                       capture_output=True, text=True)
    return float(r.stdout.strip().splitlines()[-1])


def lucidrains_available(python: str) -> bool:
    return subprocess.run([python, "-c", "import denoising_diffusion_pytorch"], capture_output=True).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffusers-example", help="path of diffusers' train_unconditional.py (arm skipped if absent)")
    ap.add_argument("--peer-python", default=sys.executable, help="python of the venv with torchvision (peers)")
    ap.add_argument("--facediff-python", default=sys.executable,
                    help="python that runs facediff and the network step (e.g. the peer venv, for the same torch)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="steps before the timed window")
    ap.add_argument("--bf16-steps", type=int, default=3, help="timed steps of bf16 arms (slow on some CPUs)")
    ap.add_argument("--bf16-warmup", type=int, default=1, help="warm-up steps of bf16 arms")
    ap.add_argument("--bf16-reps", type=int, default=1, help="repetitions of bf16 arms (1: slow on AVX2 CPUs)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bf16-arms", default="facediff,diffusers-example,lucidrains,network-step",
                    help="arms with a bf16 row (lucidrains' bf16 needs > 6 min for its first step on an AVX2 CPU)")
    ap.add_argument("--resume-log", help="file of 'rep i arm precision: r img/s' lines: kept, appended to")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--precisions", default="no,bf16")
    ap.add_argument("--arms", default="facediff,diffusers-example,lucidrains,network-step")
    ap.add_argument("--work", default="/tmp/facediff-throughput")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_throughput.json"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ds, folder = prepare_data(work, a.n, a.size)
    config_dir, params = write_unet_config(work, a.size)
    arms = [x for x in a.arms.split(",") if x]
    if "diffusers-example" in arms and not a.diffusers_example:
        arms.remove("diffusers-example")
    if "lucidrains" in arms and not lucidrains_available(a.peer_python):
        arms.remove("lucidrains")
    fwd = forward_flops(a.size, a.batch)
    peak = {"fp32": gemm_peak_gflops(torch.float32), "bf16": gemm_peak_gflops(torch.bfloat16)}
    rates: dict[str, list[float]] = {}
    if a.resume_log and Path(a.resume_log).is_file():  # an interrupted run's printed rates: measured, kept
        for line in Path(a.resume_log).read_text().splitlines():
            m = re.match(r"rep (\d+) (\S+) (\S+): ([\d.]+) img/s", line)
            if m:
                rates.setdefault(f"{m.group(2)}/{m.group(3)}", []).append(float(m.group(4)))
    steps, warmup = a.steps, a.warmup
    for mp in a.precisions.split(","):
        a.steps = a.bf16_steps if mp in ("bf16", "auto") else steps
        a.warmup = a.bf16_warmup if mp in ("bf16", "auto") else warmup
        for rep in range(a.bf16_reps if mp == "bf16" else a.reps):  # interleaved: every arm once per repetition
            for arm in arms:
                if mp == "bf16" and arm not in a.bf16_arms.split(","):
                    continue
                if mp == "auto" and arm != "facediff":  # facediff's default: its start-up probe picks no or bf16
                    continue
                if len(rates.get(f"{arm}/{mp}", [])) > rep:  # measured before (--resume-log)
                    continue
                if arm == "facediff":
                    r = run_facediff(a, ds, work, mp)
                elif arm == "network-step":
                    r = run_network_step(a, work, mp)
                elif arm == "diffusers-example":
                    r = run_example(a, folder, config_dir, work, mp)
                else:
                    r = run_lucidrains(a, folder, work, mp)
                rates.setdefault(f"{arm}/{mp}", []).append(r)
                print(f"rep {rep} {arm} {mp}: {r:.2f} img/s", flush=True)
                if a.resume_log:
                    with open(a.resume_log, "a") as f:
                        f.write(f"rep {rep} {arm} {mp}: {r:.2f} img/s\n")
    rows = {}
    for key, rs in rates.items():
        med = statistics.median(rs)
        rows[key] = {"images_per_s_median": med, "images_per_s": rs, "range": [min(rs), max(rs)]}
        if key.startswith(("facediff", "diffusers-example", "network-step")):  # the same network: its FLOPs apply
            rows[key]["achieved_gflops"] = 3 * fwd / a.batch * med / 1e9
    if "facediff/auto" in rows and "diffusers-example/no" in rows:  # each tool's default setting
        rows["facediff/auto"]["vs_example_default"] = (rows["facediff/auto"]["images_per_s_median"]
                                                       / rows["diffusers-example/no"]["images_per_s_median"])
    for mp in a.precisions.split(","):
        ref = rows.get(f"diffusers-example/{mp}")
        if ref and f"facediff/{mp}" in rows:
            rows[f"facediff/{mp}"]["vs_example"] = rows[f"facediff/{mp}"]["images_per_s_median"] / ref["images_per_s_median"]
    best = {arm: max((v["images_per_s_median"], k.split("/")[1]) for k, v in rows.items() if k.startswith(arm + "/"))
            for arm in arms}
    for key, row in rows.items():
        if "achieved_gflops" in row and not key.endswith("/auto"):  # auto's precision is the probe's
            row["fraction_of_gemm_peak"] = row["achieved_gflops"] / peak["fp32" if key.endswith("/no") else "bf16"]
    res = {"benchmark": "train_throughput", "size": a.size, "batch": a.batch, "timed_steps": steps,
           "bf16_timed_steps": a.bf16_steps, "bf16_warmup_steps": a.bf16_warmup, "bf16_arms": a.bf16_arms, "warmup_steps": warmup, "reps": a.reps, "n_train": a.n,
           "parameters_facediff_and_example": params, "forward_gflop_per_batch": fwd / 1e9,
           "gemm_peak_gflops_1thread": peak, "arms": rows,
           "best_setting": {arm: {"images_per_s": v, "precision": p} for arm, (v, p) in best.items()},
           "cpu_flags": sorted({f for f in open("/proc/cpuinfo").read().split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}),
           "torch_facediff": python_version_of(a.facediff_python), "torch_peer": python_version_of(a.peer_python),
           "machine": platform.processor() or platform.machine(), "command": " ".join(sys.argv)}
    if "facediff" in best and "diffusers-example" in best:
        res["speedup_best_vs_best"] = best["facediff"][0] / best["diffusers-example"][0]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "arms"}, indent=1))


if __name__ == "__main__":
    main()
