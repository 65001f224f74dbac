"""Resumable training state as safetensors + JSON, written atomically.

Layout: ``RUN_DIR/state/step-0000500/`` holds ``model.safetensors``, ``ema.safetensors``,
``optimizer.safetensors`` (every tensor of the optimizer state), ``trainer.json`` (step, optimizer
param groups, LR-scheduler state, counters). ``state/latest.json`` names the newest complete checkpoint
and is replaced atomically (``os.replace``) only after that checkpoint's files are on disk, so a kill
at any moment leaves the previous checkpoint loadable. No pickle anywhere.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from facediff.errors import FacediffError


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, val in pstate.items():
            if torch.is_tensor(val):
                tensors[f"state.{pid}.{key}"] = val.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = val
    for name, val in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, ema: nn.Module | None,
                    optimizer: torch.optim.Optimizer, lr_scheduler: Any, extra: dict[str, Any], keep: int = 2,
                    extra_modules: dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] | None = None) -> Path:
    """Write ``state/step-NNNNNNN`` then point ``state/latest.json`` at it; prune to the newest ``keep``.

    ``extra_modules`` {name: (module, optimizer or None)} (e.g. a GAN discriminator and its optimizer) are
    written into the same checkpoint as ``NAME.safetensors`` / ``NAME.optimizer.safetensors`` before the
    atomic rename, so they are saved or not together with the model.
    """
    state_dir = Path(run_dir) / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    tmp = state_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_weights(model), str(tmp / "model.safetensors"))
    if ema is not None:
        save_file(_weights(ema), str(tmp / "ema.safetensors"))
    opt_tensors, opt_meta = _optimizer_to_flat(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    trainer = {"step": step, "optimizer": opt_meta, "lr_scheduler": lr_scheduler.state_dict(), **extra}
    for mname, (module, mopt) in (extra_modules or {}).items():
        save_file(_weights(module), str(tmp / f"{mname}.safetensors"))
        if mopt is not None:
            t, meta = _optimizer_to_flat(mopt)
            save_file(t, str(tmp / f"{mname}.optimizer.safetensors"))
            trainer.setdefault("extra_optimizers", {})[mname] = meta
    (tmp / "trainer.json").write_text(json.dumps(trainer, indent=1))
    final = state_dir / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = state_dir / "latest.json.tmp"
    latest_tmp.write_text(json.dumps({"checkpoint": name, "step": step}))
    os.replace(latest_tmp, state_dir / "latest.json")
    done = sorted(p for p in state_dir.glob("step-*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    latest = Path(run_dir) / "state" / "latest.json"
    if not latest.is_file():
        return None
    try:
        name = json.loads(latest.read_text())["checkpoint"]
    except (ValueError, KeyError):
        raise FacediffError(f"{latest} is damaged; delete it to restart from scratch") from None
    path = latest.parent / name
    if not (path / "trainer.json").is_file():
        raise FacediffError(f"{latest} points at {path}, which is incomplete; delete latest.json to start over")
    return path


def load_checkpoint(path: Path, model: nn.Module, ema: nn.Module | None, optimizer: torch.optim.Optimizer | None,
                    lr_scheduler: Any | None,
                    extra_modules: dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] | None = None
                    ) -> dict[str, Any]:
    """Restore weights, EMA, optimizer, LR scheduler (and ``extra_modules``) in place; returns trainer.json."""
    trainer = json.loads((path / "trainer.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    if ema is not None and (path / "ema.safetensors").is_file():
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    if optimizer is not None:
        _optimizer_from_flat(optimizer, load_file(str(path / "optimizer.safetensors")), trainer["optimizer"])
    if lr_scheduler is not None:
        lr_scheduler.load_state_dict(trainer["lr_scheduler"])
    for mname, (module, mopt) in (extra_modules or {}).items():
        f = path / f"{mname}.safetensors"
        if not f.is_file():
            raise FacediffError(f"{path} has no {f.name}; this checkpoint was not written by this trainer")
        module.load_state_dict(load_file(str(f)))
        if mopt is not None and mname in trainer.get("extra_optimizers", {}):
            _optimizer_from_flat(mopt, load_file(str(path / f"{mname}.optimizer.safetensors")),
                                 trainer["extra_optimizers"][mname])
    return trainer


def load_weights(path: Path, which: str = "ema") -> dict[str, torch.Tensor]:
    """EMA (default) or raw weights of a checkpoint directory."""
    f = path / f"{which}.safetensors"
    if not f.is_file():
        f = path / "model.safetensors"
    return load_file(str(f))
