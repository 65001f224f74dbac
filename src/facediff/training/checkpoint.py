"""Resumable training state as safetensors + JSON, written so that no fault loses more than one interval.

Layout: ``RUN_DIR/state/step-0000500/`` holds ``model.safetensors``, ``ema.safetensors``,
``optimizer.safetensors`` (every tensor of the optimizer state), ``trainer.json`` (step, optimizer
param groups, LR-scheduler state, counters) and, written LAST, ``manifest.json`` (size and SHA-256 of every
other file). A checkpoint is *complete* when its manifest verifies. Writing goes to a temporary sibling
folder that is renamed into place; re-saving an existing step first moves the old copy aside, so the only
good copy is never deleted before its replacement is complete. ``latest_checkpoint`` does not trust
``state/latest.json`` alone: it returns the newest complete checkpoint among all folders in ``state/``
(including a complete temporary or set-aside copy left by a kill between two renames). A failed write (disk
full) removes its temporary folder and raises a one-line error; the previous checkpoints are untouched.
No pickle anywhere.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from facediff.errors import FacediffError
from facediff.fsutil import disk_message


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
    """The module's state dict on the CPU; only the keys in ``module.checkpoint_keys`` when it has them (a LoRA
    run saves its adapters, not the frozen multi-GB base it reloads from [lora] base)."""
    keys = getattr(module, "checkpoint_keys", None)
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items() if keys is None or k in keys}


def _load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], file: Path) -> None:
    keys = getattr(module, "checkpoint_keys", None)
    if keys is None:
        module.load_state_dict(tensors)
        return
    missing = sorted(set(keys) - set(tensors))
    unexpected = module.load_state_dict(tensors, strict=False).unexpected_keys
    if missing or unexpected:
        raise FacediffError(f"{file}: does not match this run's trainable weights (missing {missing[:2]}, "
                            f"unexpected {list(unexpected)[:2]}); was [lora] changed since it was written?")


MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^\.?step-(\d+)(\.(tmp|old)-\d+)?$")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_files(tmp: Path, model: nn.Module, ema: nn.Module | None, optimizer: torch.optim.Optimizer,
                 lr_scheduler: Any, step: int, extra: dict[str, Any],
                 extra_modules: dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] | None) -> None:
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
    _write_manifest(tmp, step)


def _write_manifest(folder: Path, step: int) -> None:
    """Flush every file of ``folder``, then write its manifest (size and SHA-256 of each): the mark of a
    complete checkpoint, so it goes last."""
    files = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(folder.iterdir())}
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    (folder / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1))
    _fsync_dir(folder)


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, ema: nn.Module | None,
                    optimizer: torch.optim.Optimizer, lr_scheduler: Any, extra: dict[str, Any], keep: int = 2,
                    extra_modules: dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] | None = None) -> Path:
    """Write ``state/step-NNNNNNN`` (manifest last), point ``state/latest.json`` at it, prune to ``keep``.

    ``extra_modules`` {name: (module, optimizer or None)} (e.g. a GAN discriminator and its optimizer) are
    written into the same checkpoint as ``NAME.safetensors`` / ``NAME.optimizer.safetensors``, so they are
    saved or not together with the model.
    """
    state_dir = Path(run_dir) / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    final = state_dir / name
    tmp = state_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _write_files(tmp, model, ema, optimizer, lr_scheduler, step, extra, extra_modules)
    except Exception as e:  # disk full, I/O error: keep what was there, say so in one line
        shutil.rmtree(tmp, ignore_errors=True)
        prev = latest_checkpoint(run_dir)
        kept = f"the last complete checkpoint {prev.name} is intact" if prev else "no earlier checkpoint exists"
        raise FacediffError(f"could not write checkpoint {final} ({disk_message(e)}); {kept}; free space and "
                            "continue with --resume") from None
    old = None
    if final.exists():  # re-saving a step: set the old copy aside, never delete it first
        old = state_dir / f".{name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(state_dir)
    try:
        latest_tmp = state_dir / "latest.json.tmp"
        latest_tmp.write_text(json.dumps({"checkpoint": name, "step": step}))
        os.replace(latest_tmp, state_dir / "latest.json")
    except OSError:  # only a hint: latest_checkpoint scans the folders
        pass
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    done = sorted((p for p in state_dir.glob("step-*") if p.is_dir() and _complete(p)), key=_step_of)
    for stale in done[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    for left in state_dir.glob(".step-*"):  # temporary / set-aside copies a kill left behind, now superseded
        if left.is_dir() and _step_of(left) <= step:
            shutil.rmtree(left, ignore_errors=True)
    return final


def _step_of(path: Path) -> int:
    m = _STEP_DIR.match(path.name)
    return int(m.group(1)) if m else -1


def _complete(path: Path, verify_hashes: bool = False) -> bool:
    """Does ``path`` hold a whole checkpoint? Its manifest's sizes (and, if asked, hashes) must match; a
    checkpoint from before manifests (a ``step-*`` folder, never a temporary one) counts when trainer.json, model
    and optimizer files are there."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        if path.name.startswith("."):  # a temporary / set-aside copy counts only with its manifest
            return False
        return (path / "trainer.json").is_file() and (path / "model.safetensors").is_file() and \
            (path / "optimizer.safetensors").is_file()
    try:
        files = json.loads(manifest.read_text())["files"]
        for fname, info in files.items():
            f = path / fname
            if not f.is_file() or f.stat().st_size != info["size"]:
                return False
            if verify_hashes and _sha256(f) != info["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete, verified checkpoint of ``run_dir`` (None if it has none)."""
    state_dir = Path(run_dir) / "state"
    if not state_dir.is_dir():
        return None
    candidates = sorted((p for p in state_dir.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)),
                        key=lambda p: (_step_of(p), not p.name.startswith(".")), reverse=True)
    for path in candidates:
        if _complete(path, verify_hashes=True):
            return path
    return None


def load_checkpoint(path: Path, model: nn.Module, ema: nn.Module | None, optimizer: torch.optim.Optimizer | None,
                    lr_scheduler: Any | None,
                    extra_modules: dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] | None = None
                    ) -> dict[str, Any]:
    """Restore weights, EMA, optimizer, LR scheduler (and ``extra_modules``) in place, the optimizer at the
    restored schedule's LR; returns trainer.json. The schedule keeps its step but the base LRs of
    ``lr_scheduler`` as built for this run: a run resumed with another lr (``--set train.lr=...``) continues
    its schedule at that lr, not at the checkpoint's."""
    try:
        trainer = json.loads((path / "trainer.json").read_text())
    except (OSError, ValueError):
        raise FacediffError(f"{path / 'trainer.json'} is missing or damaged; delete {path} to resume from an "
                            "earlier checkpoint") from None
    _load_weights(model, load_file(str(path / "model.safetensors")), path / "model.safetensors")
    if ema is not None and (path / "ema.safetensors").is_file():
        _load_weights(ema, load_file(str(path / "ema.safetensors")), path / "ema.safetensors")
    if optimizer is not None and not trainer.get("compact"):
        _optimizer_from_flat(optimizer, load_file(str(path / "optimizer.safetensors")), trainer["optimizer"])
    if lr_scheduler is not None:
        state, now = trainer["lr_scheduler"], getattr(lr_scheduler, "base_lrs", None)
        if now and state.get("base_lrs") and state["base_lrs"] != now:  # LambdaLR: lr = base * lambda(step)
            state = {**state, "base_lrs": list(now),
                     "_last_lr": [lr * b / old for lr, b, old in zip(state["_last_lr"], now, state["base_lrs"])]}
        lr_scheduler.load_state_dict(state)
        if optimizer is not None:  # loading a scheduler leaves the optimizer's LR as it was built
            for group, lr in zip(optimizer.param_groups, lr_scheduler.get_last_lr()):
                group["lr"] = lr
    for mname, (module, mopt) in (extra_modules or {}).items():
        f = path / f"{mname}.safetensors"
        if not f.is_file():
            raise FacediffError(f"{path} has no {f.name}; this checkpoint was not written by this trainer")
        module.load_state_dict(load_file(str(f)))
        if mopt is not None and mname in trainer.get("extra_optimizers", {}):
            _optimizer_from_flat(mopt, load_file(str(path / f"{mname}.optimizer.safetensors")),
                                 trainer["extra_optimizers"][mname])
    return trainer


def compact_checkpoint(run_dir: Path, out_dir: Path) -> Path:
    """A copy of ``run_dir``'s latest checkpoint small enough to commit (to carry a CPU run over to another
    machine): weights and EMA in bf16, no optimizer state (Adam's moments re-warm within a few hundred steps);
    with the run's config.json and metrics log, so ``--resume`` in a copy of ``out_dir`` continues the run.
    Not bit-exact: ``trainer.json`` says ``compact`` and the optimizer starts fresh."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FacediffError(f"{run_dir}: no complete checkpoint to compact")
    dst = Path(out_dir) / "state" / ckpt.name
    if dst.exists():
        raise FacediffError(f"{dst} exists; remove it first")
    dst.mkdir(parents=True)
    for name in ("model.safetensors", "ema.safetensors"):
        if (ckpt / name).is_file():
            save_file({k: (v.bfloat16() if v.is_floating_point() else v) for k, v in load_file(str(ckpt / name)).items()},
                      str(dst / name))
    trainer = json.loads((ckpt / "trainer.json").read_text())
    (dst / "trainer.json").write_text(json.dumps({**trainer, "compact": True}, indent=1))
    _write_manifest(dst, trainer["step"])
    for name in ("config.json", "logs/metrics.jsonl"):
        if (Path(run_dir) / name).is_file():
            (Path(out_dir) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(run_dir) / name, Path(out_dir) / name)
    return dst


def checkpoint_from_bundle(bundle: Path, template: Path, out: Path, step: int) -> Path:
    """Continue a bundled model's run on any machine without committing a second checkpoint of it: ``out`` is a
    copy of the run ``template`` (its config and trainer state: LR scheduler, data order; e.g. the model's
    committed compact run) without its checkpoints, plus one compact checkpoint at ``step`` whose weights and EMA
    are ``bundle``'s U-Net (an export folder holding unet/). Returns the checkpoint folder."""
    template, out = Path(template), Path(out)
    ckpt = latest_checkpoint(template)
    if ckpt is None:
        raise FacediffError(f"{template}: no complete checkpoint to take the run's state from")
    if out.exists():
        raise FacediffError(f"{out} exists; remove it first")
    unet = load_file(str(Path(bundle) / "unet" / "diffusion_pytorch_model.safetensors"))
    layout = load_file(str(ckpt / "model.safetensors"))
    prefix = "unet." if all(k.startswith("unet.") for k in layout) else ""  # t2i runs wrap the U-Net
    weights = {prefix + k: (v.bfloat16() if v.is_floating_point() else v) for k, v in unet.items()}
    if set(weights) != set(layout) or any(weights[k].shape != layout[k].shape for k in layout):
        raise FacediffError(f"{bundle}: its U-Net is not the network of the run {template}")
    shutil.copytree(template, out, ignore=shutil.ignore_patterns("state", "export", "cache", "samples"))
    dst = out / "state" / f"step-{step:07d}"
    dst.mkdir(parents=True)
    save_file(weights, str(dst / "model.safetensors"))
    save_file(weights, str(dst / "ema.safetensors"))
    trainer = json.loads((ckpt / "trainer.json").read_text())
    trainer.update(step=step, ema_step=step, compact=True)
    trainer.pop("mixed_precision", None)  # "auto" measures again on this machine
    trainer["lr_scheduler"].update(last_epoch=step, _step_count=step + 1)
    (dst / "trainer.json").write_text(json.dumps(trainer, indent=1))
    _write_manifest(dst, step)
    return dst


def load_weights(path: Path, which: str = "ema") -> dict[str, torch.Tensor]:
    """EMA (default) or raw weights of a checkpoint directory."""
    f = path / f"{which}.safetensors"
    if not f.is_file():
        f = path / "model.safetensors"
    return load_file(str(f))
