"""16 faces with the bundled default model, its default sampler, steps and guidance: seconds on this CPU (issue 26:
"16 faces in under 10 s", 1 thread and 2 threads).

Each thread count runs in its own process (OMP_NUM_THREADS and torch.set_num_threads = k): the model is loaded
once, one warm-up call, then ``api.sample(n=16, pipeline=...)`` -- what `facediff sample --n 16` does after the
model is loaded -- timed ``--repeats`` times (median and range). The cold command (`facediff sample --n 16
--out F`, start of Python to PNG written) is timed once per thread count as well.

    python benchmarks/sixteen_faces.py --out benchmarks/results/sixteen_faces.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))


def _one_process(threads: int, repeats: int) -> dict:
    """Runs in the child: the warm timing at ``threads`` threads."""
    import torch

    from facediff import api
    from facediff.pipelines.load import DEFAULT_MODEL_DIR

    torch.set_num_threads(threads)
    pipe = api.load(None)
    api.sample(None, n=2, steps=2, pipeline=pipe)  # warm-up: allocator, oneDNN kernels, precision probe
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = api.sample(None, n=16, pipeline=pipe)
        runs.append(time.perf_counter() - t0)
    req = res["request"]
    return {"seconds": statistics.median(runs), "runs": runs, "precision": res["precision"],
            "sampler": req.sampler, "steps": req.steps, "guidance": req.guidance,
            "model": str(DEFAULT_MODEL_DIR.name), "images": list(res["images"].shape)}


def _cold(threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "facediff.cli.main", "sample", "--n", "16", "--out",
                        str(Path(tmp) / "f.png")], env=env, check=True, capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description="16 faces with the bundled default model")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sixteen_faces.json")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_one_process(args.child, args.repeats)))
        return
    import torch

    from facediff.pipelines.load import DEFAULT_MODEL_DIR
    from record_quality import _cpu, weights_sha256

    result = {"what": "16 faces, bundled default model, default sampler/steps/guidance (api.sample after load)",
              "command": "python benchmarks/sixteen_faces.py", "cpu": _cpu(), "cores": os.cpu_count(),
              "torch": torch.__version__, "python": platform.python_version(),
              "model_sha256": weights_sha256(DEFAULT_MODEL_DIR), "threads": {}}
    for k in (int(t) for t in args.threads.split(",")):
        env = {**os.environ, "OMP_NUM_THREADS": str(k)}
        out = subprocess.run([sys.executable, __file__, "--child", str(k), "--repeats", str(args.repeats)],
                             env=env, check=True, capture_output=True, text=True).stdout
        arm = json.loads(out.strip().splitlines()[-1])
        arm["cold_command_seconds"] = _cold(k)
        result["threads"][str(k)] = arm
        print(f"{k} thread(s): {arm['seconds']:.2f} s for 16 faces ({arm['sampler']}, {arm['steps']} steps, "
              f"guidance {arm['guidance']}, {arm['precision']}); cold command {arm['cold_command_seconds']:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
