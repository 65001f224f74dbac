"""MultiDiffusion cost: seconds per sampler step vs regions and views, batched vs one path at a time, and
memory per view, on the bundled attribute model (32 px, classifier-free guidance: 2 branches per path).

Canvases 32 x (32, 64, 96, 128) px at stride 16 (1, 3, 5, 7 views); 1, 2 or 4 regions as vertical strips
(a region has weight only on the views it overlaps; paths with zero weight are skipped). One denoise call
= one sampler step; median of ``--reps`` calls after a warm-up. Memory: peak RSS of a fresh process for one
step over the resident memory before it (batched mode, read every millisecond), divided by the number of views.

    OMP_NUM_THREADS=1 python benchmarks/compose_throughput.py --out benchmarks/results/compose_throughput.json
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

PIXEL32 = Path(__file__).resolve().parent.parent / "tests" / "data" / "pixel32_model"  # the former default

WIDTHS = (32, 64, 96, 128)
REGIONS = (1, 2, 4)


def build(width: int, regions: int, n: int):
    from facediff.pipelines.compose import Layout, Region
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(PIXEL32)  # the 32 px pixel model its numbers were measured on
    strip = width / regions
    layout = Layout(width=width, height=32, stride=16, bootstrap=0.0, regions=[
        Region(box=(round(i * strip), 0, round((i + 1) * strip), 32), attrs={"smiling": 5 * (i % 2)})
        for i in range(regions)])
    return pipe, layout, n


def denoiser(pipe, layout, n: int, batched: bool, calls: list):
    """The fused denoiser compose() samples with (the same code path), without the sampler around it."""
    from facediff.pipelines.compose import plan

    return plan(pipe, layout, n=n, batched=batched, max_batch=10_000, on_call=calls.append).denoise


def time_step(width: int, regions: int, n: int, batched: bool, reps: int) -> dict:
    pipe, layout, n = build(width, regions, n)
    calls: list = []
    d = denoiser(pipe, layout, n, batched, calls)
    x, t = torch.randn(n, 3, 32, width), torch.full((n,), 500)
    with torch.no_grad():
        d(x, t)  # warm-up
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            d(x, t)
            ts.append(time.perf_counter() - t0)
    from facediff.sampling.multidiffusion import make_views

    views = len(make_views((32, width), (32, 32), (16, 16)))
    return {"width": width, "views": views, "regions": regions, "batched": batched, "n": n,
            "forwards_per_step": calls[-1] - calls[-2] if len(calls) > 1 else calls[-1],
            "s_per_step": statistics.median(ts), "range": [min(ts), max(ts)]}


def _rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20


def memory(width: int, regions: int, n: int) -> float:
    """MB of resident memory one batched step adds at its peak over the loaded model and canvas (RSS read
    from /proc every millisecond by a watcher thread while the step runs; the second step is measured)."""
    import threading

    pipe, layout, n = build(width, regions, n)
    d = denoiser(pipe, layout, n, True, [])
    x, t = torch.randn(n, 3, 32, width), torch.full((n,), 500)
    with torch.no_grad():
        d(x, t)
        base, peak, stop = _rss_mb(), [0.0], threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_mb())
                time.sleep(0.001)

        th = threading.Thread(target=watch)
        th.start()
        d(x, t)
        stop.set()
        th.join()
    return max(0.0, peak[0] - base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1, help="compositions per batch")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compose_throughput.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for width in WIDTHS:
        for regions in REGIONS:
            for batched in (True, False):
                r = time_step(width, regions, args.n, batched, args.reps)
                if batched:
                    r["memory_mb"] = round(memory(width, regions, args.n), 1)
                    r["memory_mb_per_view"] = round(r["memory_mb"] / r["views"], 1)
                rows.append(r)
                print(json.dumps(r), flush=True)
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    result = {"benchmark": "compose_throughput", "torch": torch.__version__, "threads": 1,
              "cpu": platform.processor() or platform.machine(),
              "bf16_cpu": any(f in flags for f in ("avx512_bf16", "amx_bf16")), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
