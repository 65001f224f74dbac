"""``facediff eval``: sample a model under the real set's conditions, score it, write metrics.json + report.

Generated image i is sampled under the attribute condition (and, for sketch models, the sketch) of a
randomly drawn real image r(i), so FD can be paired by condition (seed 002) and attribute accuracy is
measured against what was requested. Every metric is also computed real-vs-real between two disjoint
halves of the real set: the floor a perfect model would reach with as many images.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from facediff.config import ATTRIBUTES
from facediff.data.imageio import resize_batch
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError
from facediff.progress import Progress
from facediff.registry import METRICS

DEFAULT_METRICS = ",".join(METRICS)


def sketch_fidelity(generated: np.ndarray, reference: np.ndarray, method: str = "xdog", tol: int = 1) -> dict[str, float]:
    """Edge agreement between sketches extracted from generated images and from the reference images.

    Both sides go through the same extractor, so the score measures geometry, not drawing style: edge F1
    with a ``tol``-pixel tolerance (precision = share of generated ink within tol px of reference ink, and
    the reverse for recall) and the symmetric Chamfer distance in pixels.
    """
    from scipy.ndimage import binary_dilation, distance_transform_edt

    from facediff.data.sketch import extract_sketch

    f1s, chamfers = [], []
    st = np.ones((2 * tol + 1, 2 * tol + 1), bool)
    for g, r in zip(generated, reference):
        eg = extract_sketch(g, method) < 128
        er = extract_sketch(r, method) < 128
        if not eg.any() or not er.any():
            f1s.append(0.0 if eg.any() != er.any() else 1.0)
            chamfers.append(float(g.shape[0]) if eg.any() != er.any() else 0.0)
            continue
        prec = (eg & binary_dilation(er, st)).sum() / eg.sum()
        rec = (er & binary_dilation(eg, st)).sum() / er.sum()
        f1s.append(float(2 * prec * rec / max(prec + rec, 1e-9)))
        dg, dr = distance_transform_edt(~eg), distance_transform_edt(~er)
        chamfers.append(float(0.5 * (dr[eg].mean() + dg[er].mean())))
    return {"edge_f1": float(np.mean(f1s)), "chamfer_px": float(np.mean(chamfers))}


def _kid_mean_std(feats_real: np.ndarray, feats_gen: np.ndarray) -> tuple[float, float]:
    """KID_oracle and its spread. Up to 1000 images a side the mean uses every image (one full-size subset,
    the least noisy unbiased estimate) and the std is taken over 50 half-size subsets, so that it shows how
    much the estimate moves with the sample; beyond that, Binkowski et al.'s 50 subsets of 1000."""
    from facediff.metrics import fd as fdm

    n = min(len(feats_gen), len(feats_real))
    if n > 1000:
        return fdm.kid(feats_real, feats_gen, subsets=50, subset_size=1000)
    mean, _ = fdm.kid(feats_real, feats_gen, subsets=1, subset_size=n)
    _, std = fdm.kid(feats_real, feats_gen, subsets=50, subset_size=max(2, n // 2))
    return mean, std


def _score(gen: np.ndarray, gen_levels: np.ndarray, real: np.ndarray, real_levels: np.ndarray, metrics: set[str],
           extractor, attributes: tuple[str, ...], conditional: bool) -> dict[str, Any]:
    """The metrics of one image set against a real set (used for the model and for the real-vs-real floor)."""
    from facediff.metrics import diversity as div
    from facediff.metrics import fd as fdm

    out: dict[str, Any] = {}
    feats_gen = feats_real = None
    if metrics & {"fd", "kid", "fd_by_condition", "diversity"}:
        feats_gen, feats_real = extractor(gen), extractor(real)
    # FD and KID are biased by the sample size, so they compare as many generated images as real ones: the
    # real-vs-real floor then has the same n (a data set of < 2n images caps both at half of it)
    same_n = feats_gen[:len(feats_real)] if feats_gen is not None else None
    if "fd" in metrics:
        out["fd_oracle"] = fdm.fd_from_features(feats_real, same_n)
        out["fd_n"] = len(same_n)
    if "kid" in metrics:
        out["kid_oracle"], out["kid_oracle_std"] = _kid_mean_std(feats_real, same_n)
    if "fd_by_condition" in metrics and conditional and (real_levels >= 0).any():
        per = {}
        for j, name in enumerate(attributes):
            try:
                per[name] = fdm.fd_by_condition(feats_real, real_levels, feats_gen, gen_levels, columns=[j],
                                                names=attributes)["fd"]
            except FacediffError:  # no level of this attribute has >= 2 images on both sides (small n)
                per[name] = None
        vals = [v for v in per.values() if v is not None and np.isfinite(v)]
        out["fd_by_condition"] = {"mean": float(np.mean(vals)) if vals else None, "per_attribute": per}
    if "attr" in metrics and conditional and (gen_levels >= 0).any():
        from facediff.metrics.attributes import attribute_accuracy

        out["attr"] = attribute_accuracy(gen, gen_levels, extractor, attributes=attributes)
    if "faces" in metrics:
        from facediff.metrics.faces import face_detection

        fdet = face_detection(gen)
        out["faces"] = {k: v for k, v in fdet.items() if k != "per_image"}
    if "diversity" in metrics:
        out["diversity"] = div.mean_pairwise_distance(feats_gen)
    return out


def evaluate(model: str | Path | None, data: str | Path, *, metrics: str | Sequence[str] = DEFAULT_METRICS,
             n: int = 256, sampler: str = "dpmpp", steps: int = 25, guidance: float | None = None, seed: int = 0,
             split: str | None = None, batch_size: int = 64, init_noise: str = "normal", step_noise: bool = True,
             prompts: str = "caption", clip: str | None = None, text: bool = False, device: str = "auto",
             out: str | Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate a model (run dir, export dir, or None = bundled default) against a prepared data set.

    Text models are prompted with the labels.jsonl field ``prompts`` of the sampled rows (``caption``, or
    ``caption_heldout``: SynthFaces' held-out paraphrase templates); metric "prompt" scores the oracle's
    agreement with each prompt, "clip" the CLIP score with the CLIP model at ``clip`` (a local path or hub id).
    ``text`` with ``model`` None: the bundled text-to-face model. ``device``: where the model samples (auto =
    the GPU when torch sees one); the oracle and the metrics run on the CPU.
    """
    from facediff.evaluation.autoencoder import evaluate_autoencoder_report
    from facediff.metrics.features import OracleFeatures
    from facediff.pipelines.load import load_pipeline, resolve_device

    wanted = _wanted_metrics(metrics, n)
    if model is not None and _is_autoencoder(Path(model)):
        return evaluate_autoencoder_report(model, data, n=n, split=split, out=out)
    pipe = load_pipeline(model, resolve_device(device), text=text)
    ds = PreparedDataset(data, split=split)
    rng = np.random.default_rng(seed)
    attrs = pipe.attributes or ATTRIBUTES
    real_levels_all = ds.attribute_levels(attrs)
    rows = rng.choice(len(ds), size=n, replace=len(ds) < n)
    gen_levels = real_levels_all[rows] if pipe.conditional else np.full((n, len(attrs)), -1)
    # every condition the model declares, from the sampled rows (never a silent blank): ``kind.dataset_values``
    conditioner = pipe.conditioner
    conditions = {k.name: k.dataset_values(ds, rows, field=prompts) for k in conditioner.kinds}
    texts = None
    seq = next((k for k in conditioner.kinds if k.route == "sequence"), None)
    if seq is not None:  # prompts of the sampled rows; the levels they name are what the images must show
        from facediff.metrics.prompts import prompt_levels

        texts = conditions[seq.name]
        if not any(texts):
            raise FacediffError(f"{data}: no labels.jsonl row has a {prompts!r} field to prompt the text model with; "
                                "pass --prompts caption (or prepare the data set with captions)")
        gen_levels = prompt_levels(texts, attrs)
    from facediff.pipelines.load import resolve_guidance

    guidance = resolve_guidance(pipe, guidance)  # None: the model's own default
    pipe.network_evaluations = 0
    t0 = time.perf_counter()
    gen = pipe(seeds=[seed * 100003 + i for i in range(n)], conditions=conditions, guidance=guidance,
               sampler=sampler, steps=steps, batch_size=batch_size, init_noise=init_noise, step_noise=step_noise,
               progress=progress).images
    seconds = time.perf_counter() - t0
    size = gen.shape[1]
    real_all = resize_batch(ds.images(), size)
    extractor = OracleFeatures()
    # real reference: n real images disjoint from the floor's second half
    perm = rng.permutation(len(ds))
    half = len(ds) // 2
    ref_idx, floor_idx = perm[:half][:max(n, 4)], perm[half:][:max(n, 4)]
    result: dict[str, Any] = {"model": str(getattr(pipe, "model_dir", None) or model), "data": str(data), "n": n, "sampler": sampler,
                              "steps": steps, "guidance": guidance, "image_size": size}
    if texts is not None:
        result["prompts"] = prompts
    result.update(_score(gen, gen_levels, real_all[ref_idx], real_levels_all[ref_idx], wanted, extractor, attrs,
                         pipe.conditional or texts is not None))
    floor_levels = real_levels_all[floor_idx]
    floor = _score(real_all[floor_idx], floor_levels, real_all[ref_idx], real_levels_all[ref_idx], wanted,
                   extractor, attrs, True)
    if texts is not None:
        _score_prompts(result, floor, gen, texts, real_all[rows], wanted, extractor, clip)
    _score_fidelity(result, floor, conditioner, conditions, gen, real_all, rows, wanted)
    if "timing" in wanted:
        nfe = pipe.network_evaluations
        result["timing"] = {"seconds_total": seconds, "seconds_per_image": seconds / n, "network_evaluations": nfe,
                            "seconds_per_network_evaluation": seconds / max(1, nfe)}
    result["floor_real_vs_real"] = floor
    if out is not None:
        _write(out, result, gen, gen_levels, attrs, pipe)
    return result


def _wanted_metrics(metrics: str | Sequence[str], n: int) -> set[str]:
    """The metric names asked for (``--metrics``), checked against ``METRICS`` and ``n``."""
    wanted = set(metrics.split(",") if isinstance(metrics, str) else metrics)
    unknown = wanted - set(METRICS)
    if unknown:
        raise FacediffError(f"--metrics: unknown {', '.join(sorted(unknown))} (known: {', '.join(METRICS)})")
    if n < 4:
        raise FacediffError(f"--n {n}: at least 4 images are needed for FD/KID")
    return wanted


def _score_fidelity(result: dict[str, Any], floor: dict[str, Any], conditioner, conditions: dict[str, Any],
                    gen: np.ndarray, real_all: np.ndarray, rows: np.ndarray, wanted: set[str]) -> None:
    """Condition fidelity of the spatial kinds the model declares ("sketch", "parsing") on the sampled rows;
    the floor scores the real images of the same rows."""
    size = gen.shape[1]
    fidelity = {k.fidelity_metric: k for k in conditioner.kinds if k.fidelity_metric in wanted}
    if "sketch" in fidelity:
        result["sketch"] = sketch_fidelity(gen, real_all[rows])
        floor["sketch"] = sketch_fidelity(real_all[rows], real_all[rows])
    if "parsing" in fidelity:  # the face parser reads the generated faces; floor: the real faces vs their maps
        from facediff.metrics.parsing import parsing_fidelity

        masks = _resize_ids(conditions[fidelity["parsing"].name], size)
        result["parsing"], floor["parsing"] = parsing_fidelity(gen, masks), parsing_fidelity(real_all[rows], masks)


def _resize_ids(maps: list, size: int) -> np.ndarray:
    """Label maps (N of (S, S)) -> (N, size, size) by nearest neighbour (ids are never blended)."""
    out = []
    for m in maps:
        m = np.asarray(m)
        idx = (np.arange(size) * m.shape[0] / size).astype(np.int64)
        out.append(m[idx][:, idx])
    return np.stack(out)


def _score_prompts(result: dict[str, Any], floor: dict[str, Any], gen: np.ndarray, texts: list[str],
                   real_rows: np.ndarray, wanted: set[str], extractor, clip: str | None) -> None:
    """Text-model scores: oracle agreement with the prompts ("prompt"), CLIP-S ("clip"); the floor scores
    the real images of the same rows against the same prompts (their own captions)."""
    if "prompt" in wanted:
        from facediff.metrics.prompts import prompt_accuracy

        result["prompt"], floor["prompt"] = prompt_accuracy(gen, texts, extractor), \
            prompt_accuracy(real_rows, texts, extractor)
    if "clip" in wanted:
        if clip is None:
            result["clip"] = {"note": "no CLIP weights given (--clip PATH_OR_HUB_ID); see 'prompt' for the oracle's "
                                      "prompt agreement"}
        else:
            from facediff.metrics.clip_score import CLIPScorer

            scorer = CLIPScorer(clip)
            result["clip"], floor["clip"] = {"clip_score": scorer(gen, texts)}, {"clip_score": scorer(real_rows, texts)}


def _is_autoencoder(p: Path) -> bool:
    """An autoencoder export or run (vae/ without a diffusion U-Net)."""
    for folder in (p, p / "export"):
        if (folder / "vae" / "config.json").is_file() and not (folder / "unet").is_dir():
            return True
    cfg = p / "config.json"
    if cfg.is_file() and not (p / "export" / "unet").is_dir():
        try:
            return json.loads(cfg.read_text()).get("kind") == "autoencoder"
        except ValueError:
            return False
    return False


def _write(out: str | Path, result: dict[str, Any], gen: np.ndarray, gen_levels: np.ndarray,
           attrs: tuple[str, ...], pipe) -> Path:
    from facediff.imaging import make_grid
    from facediff.report.html import confusion_plots, write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scale = max(1, 64 // gen.shape[1])
    grids: dict[str, Any] = {"samples": make_grid(gen[:64], 8, scale=scale)}
    if pipe.conditional:
        for j, a in enumerate(attrs):  # per attribute: row = requested level, up to 8 samples each
            tiles, labels = [], []
            for level in range(pipe.num_levels):
                sel = np.flatnonzero(gen_levels[:, j] == level)[:8]
                row = np.full((8,) + gen.shape[1:], 255, np.uint8)
                row[:len(sel)] = gen[sel]
                tiles.append(row)
                labels.append(f"{a}={level}")
            grids[f"by level: {a}"] = make_grid(np.concatenate(tiles), 8, scale=scale, row_labels=labels)
    plots = confusion_plots(result["attr"]) if "attr" in result else {}
    model_dir = Path(pipe.model_dir) if getattr(pipe, "model_dir", None) else Path(str(result["model"]))
    run_dir = model_dir.parent if model_dir.name == "export" else None
    loss = run_dir / "logs" / "metrics.jsonl" if run_dir is not None else None
    cfg = pipe.training_config
    floors = result.get("floor_real_vs_real")
    summary = {k: v for k, v in result.items() if k != "floor_real_vs_real"}
    return write_report(out, {**summary, "floor_real_vs_real": floors}, grids=grids, plots=plots, config=cfg,
                        loss_curve=loss if loss is not None and loss.is_file() else None, floors=floors,
                        title=f"facediff evaluation: {model_dir}")
