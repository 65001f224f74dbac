"""Record what a bundled model measures into its folder: MODEL/quality.json (issue 26, section 4).

    python scripts/record_quality.py src/facediff/assets/default_model --eval runs/eval-attr/metrics.json \
        --command "facediff eval --data runs/eval64k --metrics fd,attr,faces --n 512 --steps 25 --out runs/eval-attr"

The file holds the metrics of `facediff eval` (and, for a text model, of `facediff experiment
text-understanding`) without the per-level tables, the commands that made them, and the SHA-256 of the weights
they were measured on and of the oracle that read them. tests/test_targets.py checks the targets of the issue against it and fails when the
weights changed without a new measurement.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

DROP = {"per_level", "confusion", "prompts", "per_prompt", "example", "arms"}  # tables, not targets


def weights_sha256(model: Path) -> str:
    """SHA-256 of the denoising network's weights (unet/diffusion_pytorch_model.safetensors)."""
    from facediff.fsutil import file_sha256

    return file_sha256(model / "unet" / "diffusion_pytorch_model.safetensors")


def oracle_sha256() -> str:
    """SHA-256 of the bundled oracle's weights, which read every number here: a retrained oracle means a new
    measurement."""
    from facediff.fsutil import file_sha256
    from facediff.metrics.features import oracle_dir

    return file_sha256(oracle_dir() / "model.safetensors")


def _summary(obj):
    if isinstance(obj, dict):
        return {k: _summary(v) for k, v in obj.items() if k not in DROP}
    return obj


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="the bundled model folder")
    ap.add_argument("--eval", type=Path, help="metrics.json of `facediff eval`")
    ap.add_argument("--understanding", type=Path, help="results.json of `facediff experiment text-understanding`")
    ap.add_argument("--group", type=Path, help="results.json of `facediff experiment seed001` (group photos)")
    ap.add_argument("--sweep", type=Path, help="results.json of `facediff experiment sweep-isolation`")
    ap.add_argument("--command", action="append", default=[], help="a command that made the numbers (repeatable)")
    args = ap.parse_args()
    if not (args.eval or args.understanding or args.group or args.sweep):
        ap.error("give at least one of --eval, --understanding, --group, --sweep")
    out = args.model / "quality.json"
    record = {"weights_sha256": weights_sha256(args.model), "oracle_sha256": oracle_sha256()}
    old = json.loads(out.read_text()) if out.is_file() else {}
    if all(old.get(k) == v for k, v in record.items()):  # same weights, same oracle: add to that record
        record = {**old, "commands": old.get("commands", []) + args.command}
    elif not (args.eval or args.understanding):
        ap.error(f"{out} records other weights or another oracle: give --eval and/or --understanding")
    else:
        record["commands"] = args.command
    record.update(date=time.strftime("%Y-%m-%d"), machine=f"{_cpu()}, OMP_NUM_THREADS=1")
    if args.eval:
        record["eval"] = _summary(json.loads(args.eval.read_text()))
    if args.understanding:
        record["understanding"] = _summary(json.loads(args.understanding.read_text()))
    if args.group:  # one entry per arm: its name -> metrics
        res = json.loads(args.group.read_text())
        record["group"] = {a["name"]: a["metrics"] for a in res["arms"]}
        if "real" in res:  # the face counts of real SynthFaces tiles: the detector's floor
            record["group_real"] = res["real"]
    if args.sweep:
        res = json.loads(args.sweep.read_text())
        record["sweep"] = {"worst": res["worst"], "target": res["target"], "grids": res["grids"],
                           "per_attribute": {a["name"]: a["metrics"]["worst"] for a in res["arms"]},
                           # the same measure on SynthFaces' own grids (raw, and through the autoencoder)
                           "floors": res.get("floors", {}), "worst_held_spread": res.get("worst_held_spread")}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
