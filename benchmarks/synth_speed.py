"""SynthFaces rendering throughput (image + sketch + mask + label), single process.

Usage: python benchmarks/synth_speed.py [--n 300] [--out benchmarks/results/synth_speed.json]
Reports wall-clock images/s and CPU-time images/s (the latter is less sensitive to other load on the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from facediff.data.synth import render_batch


def measure(size: int, style: str, n: int) -> dict[str, float]:
    render_batch(0, 0, 8, size, style)  # warm caches (pixel grids)
    w0, c0 = time.perf_counter(), time.process_time()
    render_batch(0, 1000, n, size, style)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"size": size, "style": style, "n": n, "images_per_s": round(n / wall, 1),
            "cpu_images_per_s": round(n / max(cpu, 1e-9), 1), "ms_per_image": round(1e3 * wall / n, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images per measurement")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "synth_speed.json"))
    args = ap.parse_args()
    rows = [measure(size, style, args.n) for style in ("human", "anime") for size in (32, 64)]
    for r in rows:
        print(f"{r['style']:>6} {r['size']:>3}px: {r['images_per_s']:7.1f} images/s wall, "
              f"{r['cpu_images_per_s']:7.1f} images/s CPU ({r['ms_per_image']} ms/image)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {"benchmark": "synth_speed", "results": rows, "cpu_count": os.cpu_count(), "load_avg_1m": load,
              "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
