"""Samplers with oracle denoisers, per-image seeds, seed-003 ablations, guidance batching, conditions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facediff.config import ATTRIBUTES, NUM_LEVELS, DiffusionConfig
from facediff.diffusion.process import NoiseProcess
from facediff.diffusion.schedules import scheduler_config
from facediff.errors import FacediffError
from facediff.conditioning.attributes import attr_batch, attr_vector, parse_attrs, parse_scales
from facediff.conditioning.condition import Condition
from facediff.conditioning.conditioner import Conditioner
from facediff.imaging import to_uint8
from facediff.registry import SAMPLERS
from facediff.sampling.guidance import guided_denoiser as _guided_denoiser
from facediff.sampling.samplers import sample


def guided_denoiser(model_fn, cond, guidance, per_attribute_scales=None):
    """The sampler's denoiser for attribute one-hots ``cond`` (None: unconditional), through the conditioner."""
    c = Condition() if cond is None else Condition(class_labels=cond)
    branches = Conditioner.from_parts(ATTRIBUTES, NUM_LEVELS).branches(c, guidance, per_attribute_scales)
    return _guided_denoiser(model_fn, branches)

SHAPE = (3, 3, 8, 8)
MU, S = 0.3, 0.5  # Gaussian data: x0 ~ N(MU, S^2) per pixel


def _process(schedule: str = "linear", pt: str = "epsilon", T: int = 1000) -> NoiseProcess:
    return NoiseProcess(DiffusionConfig(schedule=schedule, prediction_type=pt, num_train_timesteps=T))


def _ab(proc: NoiseProcess, t: torch.Tensor) -> torch.Tensor:
    assert t.dtype == torch.long  # trailing spacing: every sampler asks for integer training timesteps
    return proc.alphas_cumprod[t.cpu()].reshape(-1, 1, 1, 1)


def point_oracle(proc: NoiseProcess, x_star: torch.Tensor):
    """All data = x_star: x0_hat = x_star, eps_hat = (x_t - sqrt(ab) x_star) / sqrt(1 - ab)."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = _ab(proc, t)
        x0 = x_star.double().expand_as(x)
        eps = (x.double() - ab.sqrt() * x0) / (1 - ab).sqrt()
        return proc.target(x0, eps, t).to(x.dtype)

    return denoise


def gauss_oracle(proc: NoiseProcess):
    """x0 ~ N(MU, S^2): E[x0 | x_t] = MU + sqrt(ab) S^2 / (ab S^2 + 1 - ab) (x_t - sqrt(ab) MU)."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = _ab(proc, t)
        xd = x.double()
        x0 = MU + ab.sqrt() * S**2 / (ab * S**2 + 1 - ab) * (xd - ab.sqrt() * MU)
        eps = (xd - ab.sqrt() * x0) / (1 - ab).sqrt()
        return proc.target(x0, eps, t).to(x.dtype)

    return denoise


def _run(proc: NoiseProcess, denoise, sampler: str, steps: int = 20, shape=SHAPE, seeds=None, **kw):
    seeds = list(range(shape[0])) if seeds is None else seeds
    return sample(denoise, shape, scheduler_config=proc.scheduler_config, sampler=sampler, steps=steps,
                  seeds=seeds, **kw)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("pt", ("epsilon", "v_prediction", "sample"))
@pytest.mark.parametrize("schedule,steps", (("linear", 10), ("cosine", 37), ("scaled_linear", 50)))
def test_point_oracle_returns_the_data_point(sampler: str, pt: str, schedule: str, steps: int) -> None:
    proc = _process(schedule, pt)
    x_star = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = _run(proc, point_oracle(proc, x_star), sampler, steps, eta=1.0 if sampler == "ddim" else 0.0)
    assert out.dtype == torch.float32 and out.shape == SHAPE
    assert (out - x_star).abs().max() < 1e-4


@pytest.mark.parametrize("sampler", ("dpmpp", "euler", "heun", "unipc", "ddim"))
@pytest.mark.parametrize("schedule", ("linear", "cosine"))
def test_ode_samplers_transport_gaussian_data(sampler: str, schedule: str) -> None:
    """The probability-flow ODE maps N(0, I) to the data law N(MU, S^2) (up to 50-step discretisation)."""
    proc = _process(schedule, "v_prediction")
    out = _run(proc, gauss_oracle(proc), sampler, 50, shape=(8, 3, 16, 16))
    assert abs(out.mean().item() - MU) < 0.02
    assert 0.46 < out.std().item() < 0.52


@pytest.mark.parametrize("schedule", ("linear", "cosine"))
@pytest.mark.parametrize("step_noise", (True, False))
def test_ddpm_equals_ddim_eta_one(schedule: str, step_noise: bool) -> None:
    """DDIM with eta = 1 is the DDPM posterior (Song et al. 2021, sec. 4.1); both draw the same per-image noise."""
    proc = _process(schedule, "epsilon")
    den = gauss_oracle(proc)
    a = _run(proc, den, "ddpm", 20, step_noise=step_noise)
    b = _run(proc, den, "ddim", 20, eta=1.0, step_noise=step_noise)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    if not step_noise:  # posterior mean only: no noise is added, so the spread comes from x_T alone
        assert not torch.allclose(a, _run(proc, den, "ddpm", 20, step_noise=True), atol=1e-2)


@pytest.mark.parametrize(
    "sampler,kw",
    (("ddpm", {}), ("ddim", {"eta": 1.0}), ("dpmpp", {}), ("heun", {}), ("ddpm", {"init_noise": "constant"})),
)
def test_image_does_not_depend_on_batch(sampler: str, kw: dict) -> None:
    proc = _process("linear", "epsilon")
    den = gauss_oracle(proc)
    seeds = [11, 7, 2024]
    batch = _run(proc, den, sampler, 12, seeds=seeds, **kw)
    for i, s in enumerate(seeds):
        one = _run(proc, den, sampler, 12, shape=(1, *SHAPE[1:]), seeds=[s], **kw)
        torch.testing.assert_close(batch[i : i + 1], one, atol=1e-6, rtol=0)
    again = _run(proc, den, sampler, 12, seeds=seeds[::-1], **kw)
    torch.testing.assert_close(again, batch.flip(0), atol=1e-6, rtol=0)
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)


@pytest.mark.parametrize("sampler,eta", (("ddpm", 0.0), ("ddim", 1.0), ("dpmpp", 0.0), ("euler", 0.0)))
def test_zero_init_without_step_noise_is_seed_independent(sampler: str, eta: float) -> None:
    proc = _process("linear", "epsilon")
    out = _run(proc, gauss_oracle(proc), sampler, 10, eta=eta, init_noise="zero", step_noise=False)
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    if sampler in ("ddpm", "ddim"):  # the step noise alone makes them differ again
        noisy = _run(proc, gauss_oracle(proc), sampler, 10, eta=eta, init_noise="zero")
        assert not torch.allclose(noisy[0], noisy[1], atol=1e-3)


@pytest.mark.parametrize("sampler", ("ddpm", "euler"))
def test_init_noise_constant_and_zero(sampler: str) -> None:
    proc = _process("linear", "epsilon")
    seen: list[torch.Tensor] = []

    def recording(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return torch.zeros_like(x)

    _run(proc, recording, sampler, 5, init_noise="constant")
    x_T = seen[0]
    assert torch.equal(x_T, x_T[:, :, :1, :1].expand_as(x_T))  # constant per image and channel
    assert x_T[:, :, 0, 0].std() > 0.1  # but one N(0, 1) draw per image/channel, from the seeds
    seen.clear()
    _run(proc, recording, sampler, 5, init_noise="zero")
    assert torch.equal(seen[0], torch.zeros_like(seen[0]))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_progress_and_timesteps(sampler: str) -> None:
    proc = _process("linear", "epsilon")
    calls: list[tuple[int, int]] = []
    ts: list[torch.Tensor] = []

    def den(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],) and t.dtype == torch.long
        ts.append(t[0])
        return torch.zeros_like(x)

    _run(proc, den, sampler, 8, callback=lambda d, n, t, x: calls.append((d, n)))
    total = calls[0][1]
    assert [c[0] for c in calls] == list(range(1, total + 1)) and all(c[1] == total for c in calls)
    assert total == (2 * 8 - 2 if sampler == "heun" else 8) == len(ts)
    assert int(ts[0]) == 999


def test_sample_argument_errors() -> None:
    proc = _process("linear", "epsilon", T=100)
    den = gauss_oracle(proc)
    with pytest.raises(FacediffError, match="sampler .plms.: choose one of"):
        _run(proc, den, "plms")
    with pytest.raises(FacediffError, match="seeds"):
        _run(proc, den, "ddim", seeds=[0])
    with pytest.raises(FacediffError, match="steps"):
        _run(proc, den, "ddim", steps=101)
    with pytest.raises(FacediffError, match="init_noise .uniform.: choose"):
        _run(proc, den, "ddim", init_noise="uniform")
    big = _process("linear", "epsilon", T=10000)  # alpha_bar_T ~ 1e-44: sigma overflows float32
    with pytest.raises(FacediffError, match="ddpm or ddim"):
        _run(big, gauss_oracle(big), "euler")
    assert torch.isfinite(_run(big, gauss_oracle(big), "ddpm", 10)).all()


def test_to_uint8() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2).expand(2, 3, 2, 2)
    u = to_uint8(x)
    assert isinstance(u, np.ndarray) and u.dtype == np.uint8 and u.shape == (2, 2, 2, 3)
    assert u[0, :, :, 0].tolist() == [[0, 128], [255, 255]]
    assert to_uint8(x[:, :1]).shape == (2, 2, 2, 3)
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(1, 4, 2, 2))


# -- conditions and guidance ------------------------------------------------------------------------
D = len(ATTRIBUTES) * NUM_LEVELS


class CountingModel:
    """model_fn(x, t, class_labels=...): records call batch sizes and conds; output depends non-linearly on cond."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, torch.Tensor | None]] = []
        self.w = torch.randn(D, 3, generator=torch.Generator().manual_seed(5))

    def __call__(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        cond = class_labels
        assert t.shape == (x.shape[0],)
        self.calls.append((x.shape[0], None if cond is None else cond.clone()))
        c = torch.zeros(x.shape[0], D) if cond is None else cond
        return x * 0.5 + torch.tanh(c @ self.w)[:, :, None, None] + t.float()[:, None, None, None] * 1e-3


def _cond() -> torch.Tensor:
    return attr_batch([{"smiling": 5, "eyeglasses": 3, "age": 1}, {"smiling": 0, "eyeglasses": 1}])


def test_plain_and_joint_cfg_batching() -> None:
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([500, 500])
    cond = _cond()
    m = CountingModel()
    plain = guided_denoiser(m, cond, 1.0)(x, t)
    assert [c[0] for c in m.calls] == [2] and torch.equal(m.calls[0][1], cond)
    m.calls.clear()
    guided_denoiser(m, None, 5.0)(x, t)
    assert len(m.calls) == 1 and m.calls[0] == (2, None)

    m.calls.clear()
    out = guided_denoiser(m, cond, 4.0)(x, t)
    assert [c[0] for c in m.calls] == [4]  # ONE forward of batch 2B
    ref = CountingModel()
    expected = ref(x, t, torch.zeros_like(cond)) + 4.0 * (plain - ref(x, t, torch.zeros_like(cond)))
    torch.testing.assert_close(out, expected)


def _only(cond: torch.Tensor, names: list[str]) -> torch.Tensor:
    blocks = cond.reshape(cond.shape[0], len(ATTRIBUTES), NUM_LEVELS).clone()
    for i, a in enumerate(ATTRIBUTES):
        if a not in names:
            blocks[:, i] = 0
    return blocks.reshape(cond.shape)


def test_per_attribute_guidance_without_context() -> None:
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([10, 10])
    cond = _only(_cond(), ["smiling", "eyeglasses"])  # every given attribute has its own scale
    m = CountingModel()
    out = guided_denoiser(m, cond, 3.0, per_attribute_scales={"smiling": 6.0, "eyeglasses": 2.0})(x, t)
    assert [c[0] for c in m.calls] == [2 * 3]  # ONE forward of batch (1 + k) B, k = 2
    batched = m.calls[0][1]
    torch.testing.assert_close(batched[:2], torch.zeros_like(cond))  # null
    torch.testing.assert_close(batched[2:4], _only(cond, ["eyeglasses"]))  # model attribute order
    torch.testing.assert_close(batched[4:6], _only(cond, ["smiling"]))
    f = CountingModel()
    null = f(x, t, torch.zeros_like(cond))
    expected = null + 6.0 * (f(x, t, _only(cond, ["smiling"])) - null) + 2.0 * (
        f(x, t, _only(cond, ["eyeglasses"])) - null
    )
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("guidance", (1.0, 3.0))
def test_per_attribute_guidance_with_context(guidance: float) -> None:
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([10, 10])
    cond = _cond()  # smiling, eyeglasses given (+ age in row 0); only smiling gets its own scale
    m = CountingModel()
    out = guided_denoiser(m, cond, guidance, per_attribute_scales={"smiling": 5.0})(x, t)
    k_null = 1 if guidance > 1 else 0
    assert [c[0] for c in m.calls] == [2 * (2 + k_null)]
    f = CountingModel()
    ctx = _only(cond, ["eyeglasses", "age"])
    assert torch.equal(m.calls[0][1][:2], ctx)  # bangs and beard: don't care (zero) in every branch
    p_ctx, p_null = f(x, t, ctx), f(x, t, torch.zeros_like(cond))
    expected = p_null + guidance * (p_ctx - p_null) + 5.0 * (f(x, t, cond) - p_ctx)
    torch.testing.assert_close(out, expected)


def test_guided_denoiser_errors() -> None:
    with pytest.raises(FacediffError, match="unknown attribute 'smilng'"):
        guided_denoiser(CountingModel(), _cond(), 2.0, per_attribute_scales={"smilng": 2.0})
    with pytest.raises(FacediffError, match="attribute-conditional"):
        Conditioner().branches(Condition(), 2.0, {"smiling": 2.0})
    with pytest.raises(FacediffError, match="shape"):
        Conditioner.from_parts(sketch_size=4).encode(2, sketch=torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="different fields"):
        Condition.cat([Condition(class_labels=torch.zeros(1, 3)), Condition(concat=torch.zeros(1, 1, 2, 2))])


def test_batching_token_states_of_different_lengths_is_exact_for_cross_attention() -> None:
    """Condition.cat tiles (B, L_i, D) states (and their masks) to the lcm length: a chunked long prompt batches
    with the one-chunk empty prompt, and softmax attention over the tiled keys equals attention over the own."""
    torch.manual_seed(0)
    short, long_ = torch.randn(1, 4, 8), torch.randn(1, 6, 8)
    masks = torch.tensor([[1, 1, 1, 0]]), torch.ones(1, 6, dtype=torch.long)
    out = Condition.cat([Condition(encoder_hidden_states=short, encoder_attention_mask=masks[0]),
                         Condition(encoder_hidden_states=long_, encoder_attention_mask=masks[1])])
    assert out.encoder_hidden_states.shape == (2, 12, 8) and out.encoder_attention_mask.shape == (2, 12)
    torch.testing.assert_close(out.encoder_hidden_states[0], short[0].repeat(3, 1))
    assert out.encoder_attention_mask[0].tolist() == [1, 1, 1, 0] * 3
    q = torch.randn(1, 5, 8)
    attend = torch.nn.functional.scaled_dot_product_attention
    torch.testing.assert_close(attend(q, out.encoder_hidden_states[:1], out.encoder_hidden_states[:1]),
                               attend(q, short, short))


def test_guided_denoiser_inside_sampler_one_call_per_step() -> None:
    proc = _process("linear", "epsilon")
    batches: list[int] = []

    def model_fn(x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        batches.append(x.shape[0])
        return gauss_oracle(proc)(x, t)

    den = guided_denoiser(model_fn, _cond(), 3.0)
    out = sample(den, (2, 3, 4, 4), scheduler_config=proc.scheduler_config, sampler="dpmpp", steps=6, seeds=[0, 1])
    assert batches == [4] * 6 and torch.isfinite(out).all()


def test_attr_vector_and_parsing() -> None:
    v = attr_vector({"smiling": 5, "bangs": 0})
    assert v.dtype == torch.float32 and v.shape == (D,) and v.sum() == 2
    assert v[ATTRIBUTES.index("smiling") * NUM_LEVELS + 5] == 1 and v[0] == 1
    assert torch.equal(attr_vector(None), torch.zeros(D)) and torch.equal(attr_vector({}), torch.zeros(D))
    assert attr_vector({"b": 1}, attributes=("a", "b"), num_levels=3).tolist() == [0, 0, 0, 0, 1, 0]
    with pytest.raises(FacediffError, match=r"unknown attribute 'smilng' for this model \(known: bangs, eyeglasses"):
        attr_vector({"smilng": 1})
    with pytest.raises(FacediffError, match="0..5"):
        attr_vector({"smiling": 6})
    assert parse_attrs("smiling=5, eyeglasses=3") == {"smiling": 5, "eyeglasses": 3}
    assert parse_attrs("") == {}
    assert parse_scales("smiling=4,age=2.5") == {"smiling": 4.0, "age": 2.5}
    for bad in ("smiling5", "smiling=x", "smiling=1,smiling=2", "=3"):
        with pytest.raises(FacediffError) as e:
            parse_attrs(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(FacediffError, match="unknown attribute"):
        parse_attrs("smilng=1", attributes=ATTRIBUTES)
    with pytest.raises(FacediffError, match="unknown attribute"):
        parse_scales("agee=2", attributes=ATTRIBUTES)


@pytest.mark.parametrize("pt", ("epsilon", "v_prediction", "sample"))
@pytest.mark.parametrize("sampler", ("euler", "heun"))
def test_first_sigma_step_equals_ddim_step(sampler: str, pt: str) -> None:
    """An Euler step in sigma space is a DDIM step (Karras et al. 2022, sec. 4): the second network input of
    Euler/Heun (scaled to VP space) equals DDIM's, on the cosine schedule's huge first sigma too."""
    proc = _process("cosine", pt)
    seen: dict[str, list[torch.Tensor]] = {sampler: [], "ddim": []}

    def recorder(name: str):
        def den(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            seen[name].append(x.clone())
            return gauss_oracle(proc)(x, t)

        return den

    _run(proc, recorder(sampler), sampler, 10)
    _run(proc, recorder("ddim"), "ddim", 10)
    # float32 in sigma space at sigma_0 ~ 2e4 costs ~1e-3; a wrong x0_hat or step is off by > 1e-2
    torch.testing.assert_close(seen[sampler][1], seen["ddim"][1], atol=3e-3, rtol=0)
