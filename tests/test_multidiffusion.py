"""MultiDiffusion: views, fusion, bootstrapping, circular panoramas, layouts and their errors (seed 001)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

from facediff.conditioning.condition import Branches, Condition
from facediff.errors import FacediffError
from facediff.pipelines.compose import Layout, Region, compose, latent_mask, load_layout, panorama, pixel_mask
from facediff.pipelines.facediff import FacediffPipeline
from facediff.pipelines.load import load_pipeline
from facediff.sampling.multidiffusion import (
    Bootstrap, RegionPaths, View, make_views, multidiffusion_denoiser, window_starts, window_weight)
from facediff.sampling.samplers import make_scheduler, sample

from tiny_sd import build_tiny_sd


def toy_model(x, t, class_labels=None, concat=None, **_):
    """A deterministic, nonlinear, position-dependent stand-in for a U-Net (zero padding, like one)."""
    w = torch.linspace(-1, 1, 9).view(1, 1, 3, 3).repeat(x.shape[1], 1, 1, 1)
    h = torch.nn.functional.conv2d(torch.tanh(x), w, padding=1, groups=x.shape[1])
    c = 0.0 if class_labels is None else class_labels.sum(1).view(-1, 1, 1, 1) * 0.1
    s = 0.0 if concat is None else concat.mean((1,), keepdim=True)
    return 0.3 * h + c + s + 0.001 * t.view(-1, 1, 1, 1).float() * x


def _label(n, k):
    return Condition(class_labels=torch.full((n, 2), float(k)))


# ------------------------------------------------------------------------------------------------ views
def test_window_starts_cover_the_far_edge_and_wrap():
    assert window_starts(20, 8, 4) == [0, 4, 8, 12]
    assert window_starts(22, 8, 4) == [0, 4, 8, 12, 14]  # the reference would stop at 12 and leave 20..21 at 0
    assert window_starts(8, 8, 4) == [0]
    assert window_starts(16, 8, 8, wrap=True) == [0, 8]
    views = make_views((12, 16), (8, 8), (4, 8), circular=True)
    assert len(views) == 2 * 2 and views[1].cols.tolist() == list(range(8, 16))
    assert make_views((8, 12), (8, 8), (8, 8), circular=True)[1].cols.tolist() == [8, 9, 10, 11, 0, 1, 2, 3]
    covered = torch.zeros(22, 22)
    for v in make_views((22, 22), (8, 8), (4, 4)):
        v.add_into(covered, torch.ones(8, 8))
    assert bool((covered > 0).all())
    with pytest.raises(FacediffError, match="stride 9 is larger than the window 8"):
        window_starts(20, 8, 9)
    with pytest.raises(FacediffError, match="smaller than the model's window"):
        window_starts(6, 8, 4)


# -------------------------------------------------------------------------------- fusion vs the reference
def _reference_ddim(model_fn, x_T, views, regions, steps, scheduler_config, boot_bg=None, k=0):
    """Bar-Tal et al.'s loop: per view, every region's guided prediction is STEPPED with that view's own
    scheduler copy, then the stepped latents are mask-averaged; bootstrapping pastes the noised background."""
    sched = make_scheduler("ddim", scheduler_config)
    sched.set_timesteps(steps)
    per_view = [copy.deepcopy(sched) for _ in views]
    x = x_T.clone()
    for i, t in enumerate(sched.timesteps):
        value, count = torch.zeros_like(x), torch.zeros_like(x[:, :1])
        for v, view in enumerate(views):
            for reg in regions:
                m = view.crop(reg.mask)
                if m.sum() == 0:
                    continue
                xv = view.crop(x)
                if i < k and reg.foreground:
                    ab = sched.alphas_cumprod[int(t)]
                    noised = ab.sqrt() * boot_bg + (1 - ab).sqrt() * x_T
                    xv = m * xv + (1 - m) * view.crop(noised)
                tt = torch.full((len(x),), int(t))
                base = model_fn(xv, tt, **reg.branches.base.fields())
                pred = base + sum(w * (model_fn(xv, tt, **c.fields()) - base) for c, w in reg.branches.deltas)
                stepped = per_view[v].step(pred, t, view.crop(x), eta=0.0).prev_sample
                view.add_into(value, stepped * m)
                view.add_into(count, m)
        x = torch.where(count > 0, value / count, value)
    return x


def test_fused_ddim_equals_the_reference_formulation_on_two_rows_of_views():
    n, C, H, W = 2, 3, 12, 20
    views = make_views((H, W), (8, 8), (4, 6))  # 2 rows of views, last column aligned to the edge
    assert len({int(v.rows[0]) for v in views}) == 2
    fg = torch.zeros(1, 1, H, W)
    fg[..., 2:9, 3:11] = 1.0
    soft = torch.zeros(1, 1, H, W)
    soft[..., 5:12, 10:20] = 0.6
    bg = (1 - fg - soft).clamp_min(0)
    regions = [RegionPaths(Branches(_label(n, 0), ((_label(n, 1), 3.0),)), fg),
               RegionPaths(Branches(_label(n, 0), ((_label(n, 2), 2.0),)), soft),
               RegionPaths(Branches(_label(n, 0)), bg, foreground=False)]
    # clip_sample = False: with x0 clipping the step is not affine in the output (the fused x0 is clipped once,
    # the reference clips each path's x0), and the two formulations differ by design
    cfg = dict(DDPMScheduler(num_train_timesteps=100, clip_sample=False).config)
    seeds = [3, 4]
    x_T = randn_tensor((n, C, H, W), generator=[torch.Generator().manual_seed(s) for s in seeds])
    colour = torch.tensor([0.5, -0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, H, W)
    ab = make_scheduler("ddim", cfg).alphas_cumprod
    boot = Bootstrap(2, colour.clone(), x_T, ab, torch.Generator().manual_seed(0))
    ours = sample(multidiffusion_denoiser(toy_model, (H, W), views, regions, bootstrap=boot),
                  (n, C, H, W), scheduler_config=cfg, sampler="ddim", steps=5, seeds=seeds)
    ref = _reference_ddim(toy_model, x_T, views, regions, 5, cfg, boot_bg=colour, k=2)
    assert torch.allclose(ours, ref, atol=1e-5), float((ours - ref).abs().max())
    no_boot = sample(multidiffusion_denoiser(toy_model, (H, W), views, regions), (n, C, H, W),
                     scheduler_config=cfg, sampler="ddim", steps=5, seeds=seeds)
    assert not torch.allclose(no_boot, ref, atol=1e-3)  # the bootstrapping is really in both


def test_batched_and_one_path_at_a_time_agree_and_count_forwards():
    n, H, W = 1, 8, 16
    views = make_views((H, W), (8, 8), (8, 4))
    left = torch.zeros(1, 1, H, W)
    left[..., :8] = 1
    regions = [RegionPaths(Branches(_label(n, 0), ((_label(n, 1), 2.0),)), left),
               RegionPaths(Branches(_label(n, 0)), 1 - left, foreground=False)]
    x, t = torch.randn(n, 3, H, W), torch.full((n,), 40)
    calls = []
    batched = multidiffusion_denoiser(toy_model, (H, W), views, regions, on_call=calls.append)(x, t)
    single = multidiffusion_denoiser(toy_model, (H, W), views, regions, batched=False, on_call=calls.append)(x, t)
    assert torch.allclose(batched, single, atol=1e-6)
    # 3 views; the left region has weight on views 0, 1 and the background on views 1, 2: 4 active paths
    assert calls == [1, 4]


def test_path_bound_is_a_one_line_error():
    views = make_views((8, 32), (8, 8), (8, 1))
    regions = [RegionPaths(Branches(_label(1, 0)), torch.ones(1, 1, 8, 32), foreground=False)]
    with pytest.raises(FacediffError, match="25 active paths per step, above the bound of 10"):
        multidiffusion_denoiser(toy_model, (8, 32), views, regions, max_paths=10)


def test_bootstrapping_shows_foreground_paths_a_noised_constant_colour_outside_their_mask():
    n, H, W = 1, 8, 8
    m = torch.zeros(1, 1, H, W)
    m[..., :, :4] = 1
    seen = []

    def spy(x, t, **cond):
        seen.append(x.clone())
        return toy_model(x, t, **cond)

    noise = torch.randn(n, 3, H, W)
    colours = torch.rand(4, 3, 1, 1).expand(4, 3, H, W) * 2 - 1
    ab = torch.linspace(0.99, 0.01, 100)
    boot = Bootstrap(1, colours, noise, ab, torch.Generator().manual_seed(0))
    regions = [RegionPaths(Branches(_label(n, 1)), m), RegionPaths(Branches(_label(n, 0)), 1 - m, foreground=False)]
    denoise = multidiffusion_denoiser(spy, (H, W), make_views((H, W), (8, 8), (8, 8)), regions, bootstrap=boot)
    x, t = torch.randn(n, 3, H, W), torch.full((n,), 50)
    denoise(x, t)
    fg_in, bg_in = seen[0].split(n)  # one forward: [foreground path, background path]
    assert torch.equal(fg_in[..., :4], x[..., :4]) and torch.equal(bg_in, x)
    colour = (fg_in[..., 4:] - (1 - ab[50]).sqrt() * noise[..., 4:]) / ab[50].sqrt()
    assert torch.allclose(colour, colour[..., :1, :1].expand_as(colour), atol=1e-5)  # one constant colour
    assert any(torch.allclose(colour[0, :, 0, 0], c[:, 0, 0], atol=1e-5) for c in colours)
    denoise(x, torch.full((n,), 40))  # k = 1: the second call is plain
    assert torch.equal(seen[1].split(n)[0], x)


def test_circular_two_row_panorama_has_no_seam():
    """Rolling a circular canvas by a stride rolls the fused prediction exactly: the left and right edge
    columns are treated like any two neighbours. Without wrap, the edges are not neighbours at all."""
    n, H, W = 1, 12, 24
    x, t = torch.randn(n, 3, H, W), torch.full((n,), 30)
    regions = [RegionPaths(Branches(_label(n, 1)), torch.ones(1, 1, H, W), foreground=False)]
    for circular in (True, False):
        views = make_views((H, W), (8, 8), (4, 4), circular=circular)
        assert len({int(v.rows[0]) for v in views}) == 2
        d = multidiffusion_denoiser(toy_model, (H, W), views, regions)
        rolled = d(x.roll(4, dims=-1), t)
        same = torch.allclose(rolled, d(x, t).roll(4, dims=-1), atol=1e-6)
        assert same is circular


def test_hann_window_weights_cross_fade_views_where_uniform_weights_step():
    """Each view predicts one constant (the mean of its crop of a ramp): the uniform average (the paper) is a
    staircase with a step at every view border; Hann weights cross-fade over the whole overlap, so no column
    changes by more than a fraction of a step. At a stride of the window (no overlap) the two agree exactly."""
    n, H, W = 1, 8, 48
    x = torch.arange(W, dtype=torch.float32).expand(n, 1, H, W).clone()

    def view_mean(x, t, **_):
        return x.mean((-2, -1), keepdim=True).expand_as(x)

    regions = [RegionPaths(Branches(_label(n, 0)), torch.ones(1, 1, H, W), foreground=False)]
    t = torch.full((n,), 10)
    views = make_views((H, W), (8, 16), (8, 8))
    uniform = multidiffusion_denoiser(view_mean, (H, W), views, regions)(x, t)[0, 0, 0]
    hann = multidiffusion_denoiser(view_mean, (H, W), views, regions,
                                   view_weight=window_weight("hann", (8, 16)))(x, t)[0, 0, 0]
    step = uniform.diff().abs().max()  # the uniform staircase: a step of the stride (8) at each inner view border
    assert step == pytest.approx(8.0) and torch.count_nonzero(uniform.diff()) == 5
    assert hann.diff().abs()[8:-8].max() < 0.4 * step  # inside: a smooth ramp from one view's value to the next
    assert torch.all(hann.diff()[8:-8] >= 0)  # monotone, as the views' values
    aligned = make_views((H, W), (8, 16), (8, 16))
    assert torch.allclose(multidiffusion_denoiser(view_mean, (H, W), aligned, regions)(x, t),
                          multidiffusion_denoiser(view_mean, (H, W), aligned, regions,
                                                  view_weight=window_weight("hann", (8, 16)))(x, t))
    assert window_weight("uniform", (8, 8)) is None
    with pytest.raises(FacediffError, match="window_weights 'gauss': choose one of hann, uniform"):
        window_weight("gauss", (8, 8))


# --------------------------------------------------------------------------------- pipelines and layouts
@pytest.fixture(scope="module")
def attr_pipe(tiny_run) -> FacediffPipeline:
    return load_pipeline(tiny_run)


@pytest.fixture(scope="module")
def text_pipe(tmp_path_factory) -> FacediffPipeline:
    folder = tmp_path_factory.mktemp("sd") / "tiny-sd"
    build_tiny_sd("f8-v", folder.parent).save_pretrained(folder, safe_serialization=True)
    return load_pipeline(folder)


def test_uniform_panorama_equals_diffusers_panorama_pipeline(tmp_path):
    """With the paper's uniform weights, `panorama` makes the image diffusers' StableDiffusionPanoramaPipeline
    makes (one scheduler state per view there, the fused output here); Hann weights make another."""
    from diffusers import StableDiffusionPanoramaPipeline

    folder = tmp_path / "tiny-sd"
    build_tiny_sd("f8-v", tmp_path).save_pretrained(folder, safe_serialization=True)  # DDIM, latent factor 8
    theirs = StableDiffusionPanoramaPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None)
    theirs.set_progress_bar_config(disable=True)
    views = theirs.get_views  # window = the native latent size (4), stride = half of it, as ours
    theirs.get_views = lambda h, w, circular_padding=False: views(h, w, window_size=4, stride=2,
                                                                  circular_padding=circular_padding)
    ref = theirs("a face", height=32, width=96, num_inference_steps=4, guidance_scale=3.0,
                 generator=torch.Generator().manual_seed(5), output_type="np").images[0]
    pipe = load_pipeline(folder)
    kw = dict(width=96, prompt="a face", sampler="ddim", steps=4, guidance=3.0, seeds=[5], bootstrap=0.0)
    uniform = panorama(pipe, window_weights="uniform", **kw).images[0].astype(np.float64)
    assert np.abs(uniform - ref * 255).max() <= 1.0  # uint8 rounding
    hann = panorama(pipe, window_weights="hann", **kw).images[0].astype(np.float64)
    assert np.abs(hann - ref * 255).max() > 4


def test_one_region_over_the_native_canvas_equals_plain_sampling(attr_pipe):
    s = attr_pipe.sample_size
    attrs = {"smiling": 5, "eyeglasses": 0}
    layout = Layout(width=s, height=s, regions=[Region(box=(0, 0, 1, 1), attrs=attrs)], bootstrap=0.0,
                    sampler="dpmpp", steps=4, guidance=2.5, seed=5)
    fused = compose(attr_pipe, layout, n=2).images
    plain = attr_pipe(2, attrs=attrs, guidance=2.5, sampler="dpmpp", steps=4, seed=5).images
    assert np.abs(fused.astype(int) - plain).max() <= 1
    other = attr_pipe(2, attrs={"smiling": 0}, guidance=2.5, sampler="dpmpp", steps=4, seed=5).images
    assert np.abs(other.astype(int) - plain).max() > 1  # the condition matters, so the equality means something


def test_native_size_panorama_equals_plain_text_sampling(text_pipe):
    s = text_pipe.sample_size
    pano = panorama(text_pipe, width=s, prompt="a smiling face", guidance=3.0, steps=3, sampler="ddim", seed=1).images
    plain = text_pipe(1, prompt="a smiling face", guidance=3.0, steps=3, sampler="ddim", seed=1).images
    assert np.abs(pano.astype(int) - plain).max() <= 1
    wide = panorama(text_pipe, width=3 * s, prompt="a smiling face", steps=2, sampler="dpmpp", circular=True)
    assert wide.images.shape == (1, s, 3 * s, 3) and wide.views == 6  # stride = half the window, wrapped


def test_per_region_prompts_reach_their_views(text_pipe):
    s = text_pipe.sample_size
    layout = Layout(width=2 * s, height=s, steps=2, regions=[Region(box=(0, 0, s, s), prompt="a smiling face"),
                                                                Region(box=(s, 0, 2 * s, s), prompt="a sad face")],
                    background=Region(prompt="a face"))
    a = compose(text_pipe, layout).images
    layout.regions[1].prompt = "a smiling face"
    b = compose(text_pipe, layout).images
    assert np.abs(a[:, :, s + s // 2:].astype(int) - b[:, :, s + s // 2:]).max() > 0
    assert compose(text_pipe, layout).paths == 2 * 2  # 3 views; each box on 2; the background has no weight


def test_sketch_regions_draw_into_their_box():
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=3, block_out_channels=(8, 8),
                                layers_per_block=1, norm_num_groups=4, cross_attention_dim=8,
                                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    pipe = FacediffPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50), sketch=True)
    seen = []
    real = pipe.denoise_fn
    pipe.denoise_fn = lambda x, t, **c: (seen.append(c["concat"].clone()), real(x, t, **c))[1]
    ink = np.full((8, 8), 255, np.uint8)
    ink[:, 3] = 0  # one vertical line
    layout = Layout(width=16, height=8, steps=1, bootstrap=0, stride=8,
                    regions=[Region(box=(8, 0, 16, 8), sketch=ink)])
    compose(pipe, layout)
    # one forward: view 0 (background: null + cond, both blank), view 1 (the region: null, then its sketch)
    maps = seen[0]
    assert maps.shape == (4, 1, 8, 8) and float(maps[:3].sum()) == 0 and float(maps[3, 0, :, 3].min()) > 0
    assert float(maps[3, 0, :, 5:].sum()) == 0
    with pytest.raises(FacediffError, match="region 1: this model does not take a sketch"):
        compose(load_pipeline(None), Layout(width=64, height=64, regions=[Region(box=(0, 0, 1, 1), sketch=ink)]))


def test_masks_boxes_feathering_and_their_errors(tmp_path, attr_pipe):
    from PIL import Image

    m = pixel_mask(Region(box=(0.25, 0, 0.75, 0.5)), 16, 8, "r")
    assert m.shape == (1, 1, 8, 16) and float(m.sum()) == 8 * 4 and float(m[0, 0, 0, 4]) == 1.0
    soft = pixel_mask(Region(box=(4, 0, 12, 8), feather=1.5), 16, 8, "r")
    assert 0 < float(soft[0, 0, 4, 3]) < 1
    lat = latent_mask(soft, (4, 8), True, "r")
    assert ((lat > 0) & (lat < 1)).any()
    s = attr_pipe.sample_size
    Image.fromarray(np.zeros((s, 2 * s), np.uint8)).save(tmp_path / "black.png")
    Image.fromarray(np.full((s + 1, 2 * s), 255, np.uint8)).save(tmp_path / "tall.png")
    cases = [
        (Layout(width=s, height=s, regions=[Region(box=(0, 0, s + 1, s))]), "region 1: box .* is not inside"),
        (Layout(width=2 * s, height=s, regions=[Region(mask=tmp_path / "black.png")]), "region 1: the mask is empty"),
        (Layout(width=2 * s, height=s, regions=[Region(mask=tmp_path / "tall.png")]),
         f"mask is {2 * s}x{s + 1}; the canvas is {2 * s}x{s}"),
        (Layout(width=s, height=s, regions=[Region(box=(0, 0, 1, 1), prompt="a face")]),
         "region 1: this model does not take a prompt"),
        (Layout(width=s, height=s, regions=[Region(box=(0, 0, 1, 1), attrs={"wings": 3})]), "wings"),
        (Layout(width=s - 1, height=s), f"canvas {s - 1}x{s} is smaller than the model's native size {s}x{s}"),
        (Layout(width=s, height=s, stride=s + 1), f"stride {s + 1} is larger than the window {s}"),
        (Layout(width=s, height=s, regions=[Region(box=(0, 0, 1, 1))], bootstrap=1.5), "bootstrap = 1.5"),
    ]
    for layout, pattern in cases:
        with pytest.raises(FacediffError, match=pattern):
            compose(attr_pipe, layout)


def test_a_region_with_its_own_seed_rerolls_only_its_face(attr_pipe):
    s = attr_pipe.sample_size

    def layout(seed_right):  # views aligned to the two faces: nothing couples them but the shared x_T
        return Layout(width=2 * s, height=s, stride=s, steps=3, sampler="ddim", seed=3, bootstrap=0.0, regions=[
            Region(box=(0, 0, s, s), attrs={"smiling": 5}), Region(box=(s, 0, 2 * s, s), attrs={"smiling": 0},
                                                                   seed=seed_right)])
    base = compose(attr_pipe, layout(None), n=2).images.astype(int)
    assert np.array_equal(compose(attr_pipe, layout(3), n=2).images, base)  # its own seed = the layout's
    other = compose(attr_pipe, layout(11), n=2).images.astype(int)
    assert np.array_equal(other[:, :, :s], base[:, :, :s])
    assert np.abs(other[:, :, s:] - base[:, :, s:]).max() > 10


def test_a_region_can_set_its_own_bootstrapping():
    views = make_views((4, 8), (4, 4), (2, 2))
    mask = torch.zeros(1, 1, 4, 8)
    mask[..., :4] = 1
    ab = torch.linspace(0.99, 0.01, 50)

    def run(global_k, own_k):
        seen = []
        model = lambda x, t, **c: (seen.append(x.clone()), toy_model(x, t, **c))[1]
        boot = Bootstrap(global_k, torch.full((1, 2, 4, 8), 0.7), torch.randn(1, 2, 4, 8), ab,
                         torch.Generator().manual_seed(0))
        regions = [RegionPaths(Branches(_label(1, 1)), mask, bootstrap_steps=own_k),
                   RegionPaths(Branches(_label(1, 0)), 1 - mask, foreground=False)]
        d = multidiffusion_denoiser(model, (4, 8), views, regions, bootstrap=boot)
        x = torch.randn(1, 2, 4, 8, generator=torch.Generator().manual_seed(1))
        return [d(x, torch.tensor([30])) for _ in range(3)], seen
    no_boot, _ = run(0, None)
    assert all(torch.equal(a, b) for a, b in zip(run(3, 0)[0], no_boot))  # own k = 0 overrides the layout's 3
    own, seen = run(0, 2)  # own k = 2 with the layout's 0: the first two calls bootstrap, the third does not
    assert not torch.equal(own[0], no_boot[0]) and not torch.equal(own[1], no_boot[1])
    assert torch.equal(own[2], no_boot[2])


def test_layout_values_of_the_wrong_type_are_one_line_errors(tmp_path):
    path = tmp_path / "layout.toml"
    for text, pattern in [("steps = 'a'", "steps = 'a': give an integer"),
                          ("bootstrap = 'x'", "bootstrap = 'x': give a number"),
                          ("circular = 1", "circular = 1: give true or false"),
                          ("window_weights = 'box'", "layout.toml: window_weights = 'box': choose one of hann, uniform"),
                          ("[[region]]\nbox = [0, 0, 8, 8]\nguidance = 'x'", "region 1: guidance = 'x': give a number"),
                          ("[[region]]\nbox = [0, 0, 8, 8]\nseed = 1.5", "region 1: seed = 1.5: give an integer")]:
        path.write_text(f"width = 64\nheight = 32\n{text}\n")
        with pytest.raises(FacediffError, match=pattern):
            load_layout(path)


def test_canvas_must_be_a_multiple_of_the_latent_factor(text_pipe):
    s = text_pipe.sample_size
    with pytest.raises(FacediffError, match="multiples of the model's latent factor 8"):
        panorama(text_pipe, width=s + 4, prompt="a face")


def test_layout_file(tmp_path):
    (tmp_path / "m.png").write_bytes(b"")
    path = tmp_path / "layout.toml"
    path.write_text('width = 64\nheight = 32\nsteps = 7\n[background]\nprompt = "a room"\n'
                    '[[region]]\nname = "left"\nbox = [0, 0, 32, 32]\nattrs = { smiling = 5 }\nguidance = 4.0\n'
                    '[[region]]\nmask = "m.png"\nsoft = true\n')
    layout = load_layout(path)
    assert (layout.width, layout.height, layout.steps, layout.background.prompt) == (64, 32, 7, "a room")
    assert layout.regions[0].box == (0.0, 0.0, 32.0, 32.0) and layout.regions[0].attrs == {"smiling": 5}
    assert layout.regions[1].mask == tmp_path / "m.png" and layout.regions[1].soft
    path.write_text('width = 64\nheight = 32\n[[region]]\nbox = [0, 0, 32]\n')
    with pytest.raises(FacediffError, match="region 1: box = .*give \\[x0, y0, x1, y1\\]"):
        load_layout(path)
    path.write_text('width = 64\nheight = 32\n[[region]]\nbx = [0, 0, 32, 32]\n')
    with pytest.raises(FacediffError, match="region 1: unknown key 'bx'"):
        load_layout(path)
    path.write_text('width = "wide"\n')
    with pytest.raises(FacediffError, match="width = 'wide'"):
        load_layout(path)


# ----------------------------------------------------------------------------------------------------- CLI
def test_cli_compose_and_panorama(tmp_path, tiny_run):
    from PIL import Image
    from typer.testing import CliRunner

    from facediff.cli.main import app

    runner = CliRunner()
    layout = tmp_path / "group.toml"
    layout.write_text('width = 32\nheight = 16\nsteps = 2\nstride = 8\n'
                      '[[region]]\nbox = [0, 0, 16, 16]\nattrs = { smiling = 5 }\n'
                      '[[region]]\nbox = [16, 0, 32, 16]\nattrs = "smiling=0"\nguidance = 2.0\n')
    out = tmp_path / "group.png"
    res = runner.invoke(app, ["compose", "--model", str(tiny_run), "--layout", str(layout), "--out", str(out),
                              "--save-masks", "--n", "2", "--bootstrap", "0.5"])
    assert res.exit_code == 0, res.output
    assert "3 views, 4 paths per step" in res.stdout
    assert Image.open(out).size[1] == Image.open(tmp_path / "group-masks.png").size[1] > 16
    pano = tmp_path / "pano.png"
    res = runner.invoke(app, ["panorama", "--model", str(tiny_run), "--attrs", "smiling=5", "--width", "48",
                              "--circular", "--steps", "2", "--out", str(pano)])
    assert res.exit_code == 0 and pano.is_file() and "6 views per step" in res.stdout, res.output

    def one_line_error(args):
        r = runner.invoke(app, args)
        err = r.stderr.strip()
        assert r.exit_code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in r.output, \
            r.output
        return err

    layout.write_text('width = 32\nheight = 16\n[[region]]\nbox = [20, 0, 40, 16]\n')
    assert "region 1: box [20.0, 0.0, 40.0, 16.0] is not inside the 32x16 canvas" in one_line_error(
        ["compose", "--model", str(tiny_run), "--layout", str(layout), "--out", str(tmp_path / "new.png")])
    assert "no such file" in one_line_error(["compose", "--model", str(tiny_run), "--layout", str(tmp_path / "x.toml")])
    assert "this model does not take a prompt" in one_line_error(
        ["panorama", "--model", str(tiny_run), "--prompt", "a face", "--width", "32"])
    assert "smaller than the model's native size" in one_line_error(
        ["panorama", "--model", str(tiny_run), "--width", "8"])


def test_seed001_recipe_scores_regions_and_leakage(tmp_path, tiny_run, monkeypatch):
    import json

    from facediff.experiments.registry import run_experiment
    from facediff.experiments.seed001 import _score
    from facediff.models.estimator import AttributeEstimator, EstimatorConfig, save_estimator

    oracle = save_estimator(AttributeEstimator(EstimatorConfig(size=16, widths=(8, 16), feature_dim=24)),
                            tmp_path / "oracle")
    monkeypatch.setattr("facediff.metrics.features.oracle_dir", lambda: oracle)
    res = run_experiment("seed001", tmp_path / "exp", model=tiny_run, size=16, budget_minutes=1, tiny=True)
    saved = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert [a["k"] for a in saved["arms"]] == [None, 0.0, 0.2, 0.4, 0.2, 0.0] and res["n"] == 1
    assert [a.get("window_weights") for a in saved["arms"]] == [None, "hann", "hann", "hann", "uniform", "hann"]
    assert all(a["metrics"]["seam_ratio"] > 0 for a in saved["arms"])  # every arm on the same lines
    assert saved["arms"][-1]["name"].endswith("(stride = window)") and saved["arms"][-1]["views"] == 4
    assert saved["arms"][1]["views"] == 9  # the default views: half-window stride on a 2x2 canvas
    md = (tmp_path / "exp" / "results.md").read_text()
    assert "leakage" in md and "| plain (unfused, native size) |" in md and "k = 40 %" in md
    assert "data:image/png;base64" in (tmp_path / "exp" / "report.html").read_text()
    # the scoring itself: region 0 asked smiling 5, its neighbours 0; it shows 0 -> wrong and leaked
    conds = [[{"smiling": 5}, {"smiling": 0}, {"smiling": 0}, {"smiling": 5}]]
    s = _score({"smiling": np.array([0, 0, 0, 5])}, conds, ("smiling",))
    assert s["accuracy"] == 0.75 and s["leak_pairs"] == 8 and s["leakage"] == 2 / 8


def test_seam_ratio_sees_hard_cuts_at_window_borders_only():
    from facediff.metrics.image import seam_ratio

    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(0, 2, (2, 32, 32, 3)), axis=2).clip(-60, 60) + 128  # a random-walk texture
    assert 0.7 < seam_ratio(smooth.astype(np.uint8), 8) < 1.3
    cut = smooth.copy()
    cut[:, :, 16:] += 60  # a hard edge between columns 15 and 16
    assert seam_ratio(cut.astype(np.uint8), 16) > 3 * seam_ratio(smooth.astype(np.uint8), 16)
    assert seam_ratio(cut.astype(np.uint8), 16) > 2 * seam_ratio(cut.astype(np.uint8), 12)  # 12: not at the cut
    with pytest.raises(FacediffError, match="no window border"):
        seam_ratio(smooth.astype(np.uint8), 40)


def test_seam_ratio_can_leave_out_the_borders_between_regions():
    from facediff.metrics.image import seam_ratio

    rng = np.random.default_rng(1)
    smooth = (np.cumsum(rng.normal(0, 2, (2, 32, 32, 3)), axis=2).clip(-60, 60) + 128)
    smooth[:, :, 16:] += 60  # the cut between two regions, at x = 16
    img = smooth.clip(0, 255).astype(np.uint8)
    assert seam_ratio(img, 8) > 1.5  # the cut is one of the window borders
    assert seam_ratio(img, 8, skip_every=16) < 1.3  # the borders within the regions are smooth
