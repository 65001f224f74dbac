"""MultiDiffusion (Bar-Tal et al. 2023): one canvas, several diffusion paths fused at every step.

A canvas larger than the model's native size is covered by **views** (windows of the native latent size at
a stride); each **region** is a condition (guidance ``Branches``) with a weight mask on the latent canvas.
At each step every (view, region) path predicts on its crop, and the canvas prediction is the mask-weighted
average over all paths (the paper's eq. 5 closed form, per pixel):

    pred = sum_{v,r} crop_v^T(m_r * pred_{v,r}) / sum_{v,r} crop_v^T(m_r)       (where the count > 0)

**Fusing the model output, not the stepped latents.** The reference (and diffusers' panorama pipeline)
averages ``scheduler.step`` outputs per view, which for multistep samplers (DPM-Solver++, UniPC) needs one
scheduler state per view. Every sampler here steps affinely in the model output given the shared x_t
(x_{t-1} = a_t x_t + b_t out for DDIM / DDPM means, plus history terms that are themselves fused outputs),
and the weights of a pixel sum to 1, so averaging the outputs and taking ONE step on the canvas equals
averaging the per-view steps for DDIM exactly (tests/test_multidiffusion.py checks it against the reference
formulation) whenever the step is affine, i.e. without x0 clipping (``clip_sample``: here the fused x0 is
clipped once, the reference clips each path's x0 before averaging), and keeps multistep samplers' history consistent (one state, one canvas). DDPM's added noise
is drawn once per canvas pixel instead of once per view (the reference's per-view noise is averaged down,
which shrinks its variance where views overlap).

**Bootstrapping** (paper sec. 4.2): for the first ``k`` network calls each foreground path sees, outside its
mask, a random constant-colour background (in model space: VAE-encoded, or the colour itself for pixel
models) noised to the current step with the shared initial noise x_T:
x_in = m * x_t + (1 - m) * (sqrt(alpha_bar_t) bg + sqrt(1 - alpha_bar_t) x_T).

Views are index lists, so a 360-degree panorama (``circular``) wraps columns modulo the width, and writes go
back to each view's own rows and columns (diffusers' version writes with global row indices, correct only
for one row of views). Paths whose mask is zero on a view are skipped: they add nothing to the average.
Everything here is plain tensors and ``Branches``; nothing knows about faces or prompts.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from facediff.conditioning.condition import Branches, Condition
from facediff.errors import FacediffError
from facediff.registry import WINDOW_WEIGHTS, check_choice
from facediff.sampling.guidance import ModelFn
from facediff.sampling.samplers import Denoise

MAX_PATHS = 2048  # default bound on (view, region) paths per step: beyond it a layout is refused (memory)


@dataclass(frozen=True)
class View:
    """One window of the latent canvas, as the canvas rows and columns it covers (in order)."""

    rows: torch.Tensor  # (h,) int64 canvas row of each window row
    cols: torch.Tensor  # (w,) int64 canvas column of each window column (modulo W for circular canvases)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H, W) -> (..., h, w)."""
        return x.index_select(-2, self.rows.to(x.device)).index_select(-1, self.cols.to(x.device))

    def add_into(self, canvas: torch.Tensor, values: torch.Tensor) -> None:
        """canvas[..., rows, cols] += values (no index repeats within one view)."""
        r, c = self.rows.to(canvas.device), self.cols.to(canvas.device)
        canvas[..., r[:, None], c[None, :]] += values


def window_starts(size: int, window: int, stride: int, wrap: bool = False) -> list[int]:
    """Window origins along one axis: every ``stride``, plus one aligned to the far edge (the reference
    leaves the border uncovered when (size - window) is not a multiple of the stride); with ``wrap``
    the origins run over the whole axis and windows continue past the edge."""
    if window < 1 or stride < 1:
        raise FacediffError(f"window {window} and stride {stride} must be at least 1")
    if stride > window:
        raise FacediffError(f"stride {stride} is larger than the window {window}: parts of the canvas would be "
                            "covered by no view; use a stride <= the window")
    if wrap:
        return list(range(0, size, stride))
    if size < window:
        raise FacediffError(f"canvas side {size} is smaller than the model's window {window}")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def make_views(canvas: tuple[int, int], window: tuple[int, int], stride: tuple[int, int],
               circular: bool = False) -> list[View]:
    """Views of a (H, W) latent canvas, row-major; ``circular`` wraps the columns (360-degree panorama)."""
    (H, W), (h, w) = canvas, window
    out = []
    for y in window_starts(H, h, stride[0]):
        for x in window_starts(W, w, stride[1], wrap=circular):
            out.append(View(torch.arange(y, y + h), torch.arange(x, x + w) % W))
    return out


def window_weight(kind: str, window: tuple[int, int]) -> torch.Tensor | None:
    """The (h, w) weight of each position of a view in the fused average: None for "uniform" (the paper's eq. 5:
    a view counts everywhere alike, so its border is a step in the average and can show as a seam), or "hann"
    (overlap-add, as in audio's short-time Fourier synthesis): sin^2(pi u) in window coordinates
    u = (i + 1/2) / n, highest at the view's centre and near 0 at its border. At a stride of half the window
    two neighbouring views' weights sum to 1 (sin^2 + cos^2), so every pixel cross-fades over the whole overlap
    from one view to the next: no view's border is a step anywhere. (Mixture of Diffusers' Gaussian, sigma =
    0.1 window, instead hands over within ~2 latent pixels midway between view centres: a seam moved, not gone.)"""
    check_choice("window_weights", kind, WINDOW_WEIGHTS)
    if kind == "uniform":
        return None

    def axis(n: int) -> torch.Tensor:
        return torch.sin(torch.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2

    return (axis(window[0])[:, None] * axis(window[1])[None, :]).float()


@dataclass(frozen=True)
class RegionPaths:
    """One region of the composition on the latent canvas."""

    branches: Branches  # the region's guided prediction; spatial fields (concat) are canvas-sized
    mask: torch.Tensor  # (1, 1, H, W) weight in [0, 1] on the latent canvas
    foreground: bool = True  # bootstrapped during the first k calls (the background region is not)
    bootstrap_steps: int | None = None  # this region's k (None: ``Bootstrap.steps``)


@dataclass(frozen=True)
class Bootstrap:
    """What the bootstrapping phase needs (paper sec. 4.2)."""

    steps: int  # network calls with bootstrapping (the first k) of regions that do not set their own
    backgrounds: torch.Tensor  # (K, C, H, W) constant-colour canvases in model space
    noise: torch.Tensor  # (B, C, H, W) the shared x_T, standard normal (before init_noise_sigma)
    alphas_cumprod: torch.Tensor  # (T,) alpha_bar_t of the training schedule
    generator: torch.Generator  # draws the background of each foreground path at each call


def _crop_condition(cond: Condition, view: View, canvas: tuple[int, int]) -> Condition:
    """Spatial fields (B, C, H, W) of canvas size are cropped to the view; the others are shared."""
    out = {}
    for k, v in cond.fields().items():
        out[k] = view.crop(v) if v.ndim == 4 and tuple(v.shape[-2:]) == canvas else v
    return Condition(**out)


def _noised_background(boot: Bootstrap, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """sqrt(alpha_bar_t) bg + sqrt(1 - alpha_bar_t) x_T on the canvas, one random background for the batch."""
    i = int(torch.randint(len(boot.backgrounds), (1,), generator=boot.generator))
    T = len(boot.alphas_cumprod)
    ab = boot.alphas_cumprod[int(t.reshape(-1)[0].float().round().clamp(0, T - 1))].to(like)
    return ab.sqrt() * boot.backgrounds[i].to(like) + (1 - ab).sqrt() * boot.noise.to(like)


def _active_paths(views: Sequence[View], regions: Sequence[RegionPaths], max_paths: int) -> list[tuple[int, int]]:
    """(view, region) index pairs whose region mask has weight on the view; at least one, at most ``max_paths``."""
    if not regions:
        raise FacediffError("a composition needs at least one region")
    paths = [(v, r) for v, view in enumerate(views) for r, reg in enumerate(regions)
             if bool(view.crop(reg.mask).sum() > 0)]
    if len(paths) > max_paths:
        raise FacediffError(f"{len(views)} views x {len(regions)} regions = {len(paths)} active paths per step, above "
                            f"the bound of {max_paths}; use a larger stride, fewer regions or a smaller canvas")
    if not paths:
        raise FacediffError("no region has weight on any view: every mask is empty")
    return paths


def _forward_groups(paths: list[tuple[int, int]], rows_per_path: dict[tuple[int, int], int], batched: bool,
                    max_batch: int) -> list[list[tuple[int, int]]]:
    """The paths split into runs that share one network forward (up to ``max_batch`` rows; one each unbatched)."""
    groups: list[list[tuple[int, int]]] = []
    for key in paths:  # consecutive paths (a view's regions, then the next view) share one forward
        if batched and groups and sum(rows_per_path[k] for k in groups[-1]) + rows_per_path[key] <= max_batch:
            groups[-1].append(key)
        else:
            groups.append([key])
    return groups


def multidiffusion_denoiser(model_fn: ModelFn, canvas: tuple[int, int], views: Sequence[View],
                            regions: Sequence[RegionPaths], *, bootstrap: Bootstrap | None = None,
                            max_batch: int = 64, batched: bool = True, max_paths: int = MAX_PATHS,
                            on_call: Callable[[int], None] | None = None,
                            view_weight: torch.Tensor | None = None) -> Denoise:
    """``denoise(x, t)`` over the whole (B, C, H, W) canvas for ``sample`` (module docstring).

    ``batched``: all branches of all regions of a view (and further views, up to ``max_batch`` rows) go
    through ONE network forward; False runs one forward per (view, region), for the benchmark.
    ``on_call(calls)`` is told the number of forwards after each denoise call. ``view_weight`` (h, w)
    (``window_weight``) multiplies every path's mask in the average (None: 1).
    """
    H, W = canvas
    paths = _active_paths(views, regions, max_paths)
    crops = {(v, r): (_crop_condition(regions[r].branches.base, views[v], canvas),
                      [(_crop_condition(c, views[v], canvas), w) for c, w in regions[r].branches.deltas],
                      views[v].crop(regions[r].mask))
             for v, r in paths}
    forwards = [0]  # network forwards so far
    denoise_calls = [0]  # denoise calls so far (bootstrapping counts them)

    def forward(group: list[tuple[int, int]], x: torch.Tensor, t: torch.Tensor, inputs: dict) -> list[torch.Tensor]:
        """The guided prediction of each path in ``group`` from ONE network call."""
        xs, ts, conds, sizes = [], [], [], []
        for key in group:
            base, deltas, _ = crops[key]
            branch_conds = [base, *(c for c, _ in deltas)]
            sizes.append(len(branch_conds))
            for c in branch_conds:
                xs.append(inputs[key])
                ts.append(t)
                conds.append(c.to(x.device))
        cond = Condition.cat(conds) if len(conds) > 1 else conds[0]
        out = model_fn(torch.cat(xs), torch.cat(ts), **cond.fields()).split(len(x))
        forwards[0] += 1
        preds, i = [], 0
        for key, k in zip(group, sizes):
            base_out = out[i]
            pred = base_out
            for (_, w), p in zip(crops[key][1], out[i + 1:i + k]):
                pred = pred + w * (p - base_out)
            preds.append(pred)
            i += k
        return preds

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        step = denoise_calls[0]
        denoise_calls[0] += 1
        booting = [bootstrap is not None and reg.foreground and step < (
            bootstrap.steps if reg.bootstrap_steps is None else reg.bootstrap_steps) for reg in regions]
        bg = _noised_background(bootstrap, t, x) if any(booting) else None
        inputs = {}
        for v, r in paths:
            crop = views[v].crop(x)
            if booting[r]:
                m = crops[(v, r)][2]
                crop = m * crop + (1 - m) * views[v].crop(bg)
            inputs[(v, r)] = crop
        value = torch.zeros_like(x)
        count = torch.zeros((1, 1, H, W), dtype=x.dtype, device=x.device)
        rows_per_path = {key: len(x) * (1 + len(crops[key][1])) for key in paths}
        for group in _forward_groups(paths, rows_per_path, batched, max_batch):
            for key, pred in zip(group, forward(group, x, t, inputs)):
                m = crops[key][2].to(x) if view_weight is None else crops[key][2].to(x) * view_weight.to(x)
                views[key[0]].add_into(value, pred * m)
                views[key[0]].add_into(count, m)
        if on_call is not None:
            on_call(forwards[0])
        return torch.where(count > 0, value / count.clamp_min(1e-12), value)

    return denoise
