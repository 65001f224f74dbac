"""Training throughput on a GPU: facediff's loop vs the REAL diffusers example vs the bare network step, on the
same network and batch, with achieved FLOP/s against this GPU's bf16 GEMM peak measured in the same run.

Arms, for every ``--configs`` item SIZE:BATCH (each tool at its best setting on a GPU: bf16):
  * ``facediff``: ``facediff train ddpm --config default-32`` (unconditional), ``mixed_precision = "auto"`` (bf16
    on a GPU that has it), ``host_sync = "auto"`` (no per-step host reads on CUDA), timed from its own
    ``logs/metrics.jsonl`` (a row every 10 steps) over steps ``warmup .. warmup+steps``;
  * ``facediff-step-sync``: the same with ``host_sync = "step"`` (the loss and the non-finite flag read every
    step: the loop as measured before, 0.89x the example on an H200);
  * ``diffusers-example``: ``train_unconditional.py`` unmodified (``--diffusers-example PATH``), same PNG folder,
    the same U-Net config (``--model_config_name_or_path``), ``--mixed_precision bf16``, 4 loader workers,
    timed from its own tqdm step log (start-up excluded); skipped with the reason if it cannot start;
  * ``network-step-*``: forward + backward + fused AdamW of the same network on one fixed batch already on the
    GPU, nothing else (written here, not a peer): the ceiling of any loop, in fp32, bf16, bf16 + channels_last,
    and bf16 + channels_last + ``torch.compile`` (``--compile``; compile seconds reported beside the rate).
Achieved FLOP/s = 3 x forward FLOPs per image (``torch.utils.flop_counter``) x images/s, against the bf16
(and fp32, TF32 off) 8192^3 matmul rate. See benchmarks/peers.py for how the peers are run.

    python benchmarks/gpu_throughput.py --diffusers-example /tmp/train_unconditional.py \
        --out benchmarks/results/gpu_throughput-h200.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import StepLog, build_benchmark_unet, example_args, forward_flops, prepare_data, run_facediff_train, \
    window_rate, write_unet_config  # noqa: E402

VARIANTS = {  # name: (autocast bf16, channels_last, torch.compile, one host sync per step: loss.item())
    "network-step-fp32": (False, False, False, False),
    "network-step-bf16": (True, False, False, False),
    "network-step-bf16-sync": (True, False, False, True),
    "network-step-bf16-cl": (True, True, False, False),
    "network-step-bf16-cl-compile": (True, True, True, False),
}


def gpu_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    return env


def gemm_tflops(dtype: torch.dtype, n: int = 8192, warmup: int = 3, repeats: int = 10) -> float:
    """Mean rate of ``repeats`` n^3 matmuls on random data after ``warmup`` (CUDA events)."""
    a, b = torch.randn(n, n, dtype=dtype, device="cuda"), torch.randn(n, n, dtype=dtype, device="cuda")
    for _ in range(warmup):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


def network_step(size: int, batch: int, steps: int, warmup: int, variant: str) -> dict:
    """img/s of forward + backward + AdamW on one batch resident on the GPU (see the module docstring)."""
    bf16, channels_last, compiled, sync = VARIANTS[variant]
    torch.manual_seed(0)
    net = build_benchmark_unet(size, batch).cuda()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=fmt)
    t = torch.randint(0, 1000, (batch,), device="cuda")
    forward = torch.compile(net) if compiled else net

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            out = forward(x, t).sample
        loss = F.mse_loss(out.float(), x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sync:  # what a loop that logs or NaN-checks the loss every step pays
            loss.item()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    rate = steps * batch / (time.perf_counter() - t0)
    return {"img_per_s": rate, "warmup_seconds": round(warm_s, 2)}


def run_facediff(a, ds: Path, work: Path, size: int, batch: int, host_sync: str) -> dict:
    """``facediff train`` with host_sync "auto" (on CUDA: no per-step host reads, training/host_sync.py) or
    "step" (the loss and the non-finite flag read every step, as before), rows every 10 steps for both."""
    rate, precision = run_facediff_train(sys.executable, ds, work / f"facediff-run-{size}-{batch}", size, batch,
                                         a.warmup, a.steps, "auto", gpu_env(), a.arm_timeout, host_sync=host_sync,
                                         log_every=10)
    return {"img_per_s": rate, "precision": f"{precision['chosen']} ({precision['reason']})", "host_sync": host_sync}


def run_example(a, folder: Path, config_dir: Path, work: Path, size: int, batch: int) -> dict:
    out = work / f"example-run-{size}-{batch}"
    shutil.rmtree(out, ignore_errors=True)
    args = example_args(Path(a.diffusers_example), folder, out, config_dir, size, batch, "bf16", 1000, 10 ** 9)
    args[args.index("--dataloader_num_workers") + 1] = str(a.example_workers)
    log = StepLog([sys.executable, *args], gpu_env(), work / f"example-{size}-{batch}.log")
    t0 = time.perf_counter()
    while not log.steps or log.steps[-1][1] < a.warmup + a.steps:
        if log.proc.poll() is not None or time.perf_counter() - t0 > a.arm_timeout:
            log.wait(timeout=0)
            tail = (work / f"example-{size}-{batch}.log").read_text()[-1500:]
            raise RuntimeError(f"the diffusers example stopped or timed out: {tail}")
        time.sleep(0.2)
    log.wait(timeout=0)
    return {"img_per_s": window_rate(log.steps, batch, a.warmup)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers-example", help="path of diffusers' train_unconditional.py (arm skipped if absent)")
    ap.add_argument("--configs", default="32:32,32:256,64:128", help="SIZE:BATCH items")
    ap.add_argument("--compile", default="32:256,64:128", help="SIZE:BATCH items that also get the compiled arm")
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--warmup", type=int, default=10, help="steps before the timed window")
    ap.add_argument("--reps", type=int, default=2, help="repetitions of the cheap arms (median reported)")
    ap.add_argument("--n", type=int, default=2048, help="SynthFaces images (rendered here)")
    ap.add_argument("--example-workers", type=int, default=4, help="the example's --dataloader_num_workers")
    ap.add_argument("--arm-timeout", type=float, default=150, help="seconds before an arm is given up")
    ap.add_argument("--arms", default="facediff,facediff-step-sync,diffusers-example," + ",".join(VARIANTS),
                    help="arms to run")
    ap.add_argument("--work", default="/tmp/facediff-gpu-throughput")
    ap.add_argument("--out", default="benchmarks/results/gpu_throughput.json")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_throughput: no CUDA device here; run benchmarks/train_throughput.py on a CPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
              "bf16_gemm_tflops": round(gemm_tflops(torch.bfloat16), 1),
              "fp32_gemm_tflops_no_tf32": round(gemm_tflops(torch.float32), 1),
              "settings": vars(a), "rows": []}
    print(json.dumps({k: result[k] for k in ("device", "torch", "bf16_gemm_tflops", "fp32_gemm_tflops_no_tf32")}),
          flush=True)
    compile_set = set(a.compile.split(",")) if a.compile else set()
    for item in a.configs.split(","):
        size, batch = (int(v) for v in item.split(":"))
        t0 = time.perf_counter()
        ds, folder = prepare_data(work, a.n, size)
        config_dir, params = write_unet_config(work, size)
        flops = 3 * forward_flops(size, 4) / 4  # per trained image
        print(f"[{size}px batch {batch}] data {time.perf_counter() - t0:.0f} s, {params} parameters, "
              f"{flops / 1e9:.2f} GFLOP per trained image", flush=True)
        arms = [arm for arm in a.arms.split(",") if "compile" not in arm or item in compile_set]
        for arm in arms:
            reps = 1 if arm in ("diffusers-example", "network-step-bf16-cl-compile") else a.reps
            runs, error = [], None
            for _ in range(reps):
                try:
                    if arm in ("facediff", "facediff-step-sync"):
                        runs.append(run_facediff(a, ds, work, size, batch, "auto" if arm == "facediff" else "step"))
                    elif arm == "diffusers-example":
                        if not a.diffusers_example:
                            error = "not run: no --diffusers-example"
                            break
                        runs.append(run_example(a, folder, config_dir, work, size, batch))
                    else:
                        runs.append(network_step(size, batch, a.steps, a.warmup, arm))
                except Exception as e:  # one arm failing must not lose the others' numbers
                    error = f"{type(e).__name__}: {e}"[-2000:]
                    traceback.print_exc()
                    break
            row = {"size": size, "batch": batch, "arm": arm, "parameters": params,
                   "gflop_per_image": round(flops / 1e9, 3)}
            if runs:
                rates = [r["img_per_s"] for r in runs]
                med = statistics.median(rates)
                tflops = med * flops / 1e12
                row.update(img_per_s=round(med, 1), range=[round(min(rates), 1), round(max(rates), 1)],
                           achieved_tflops=round(tflops, 2),
                           fraction_of_bf16_gemm_peak=round(tflops / result["bf16_gemm_tflops"], 4),
                           **{k: v for k, v in runs[0].items() if k != "img_per_s"})
            if error:
                row["error"] = error
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(result, indent=1))  # after every arm: a timeout keeps what ran


if __name__ == "__main__":
    main()
