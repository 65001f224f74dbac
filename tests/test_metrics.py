"""Metrics: FD / KID against float64 references and torchmetrics, FD by condition, attribute accuracy,
PSNR / SSIM against numpy / scikit-image, diversity, MTCNN face detection, and the one-line errors."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from facediff.errors import FacediffError
from facediff.metrics import fd as fdm
from facediff.metrics.attributes import accuracy_from_predictions, confusion_matrix
from facediff.metrics.diversity import mean_pairwise_distance
from facediff.metrics.image import lpips, psnr, ssim


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- Fréchet distance ---------------------------------------------------------------------------------

def test_fd_diagonal_closed_form():
    # For diagonal covariances d^2 = |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 7), rng.uniform(0.1, 3, 7)
    mu1, mu2 = rng.normal(size=7), rng.normal(size=7)
    ref = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert fdm.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(ref, rel=1e-9)


def test_fd_general_matches_eigen_reference():
    # Tr((S1 S2)^{1/2}) = sum of sqrt of the (real, positive) eigenvalues of S1 S2.
    rng = np.random.default_rng(1)
    s1, s2 = _spd(rng, 12), _spd(rng, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    got = fdm.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(ref, rel=1e-7)
    assert got == pytest.approx(fdm.frechet_distance(mu2, s2, mu1, s1), rel=1e-7)  # symmetric


def test_fd_features_identical_zero_shifted_positive_and_singular_finite():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(200, 8))
    assert fdm.fd_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    assert fdm.fd_from_features(f, f + 1.0) == pytest.approx(8.0, rel=1e-6)  # mean shift of 1 in 8 dims
    few = rng.normal(size=(5, 32))  # n < d: singular covariances
    assert np.isfinite(fdm.fd_from_features(few, rng.normal(size=(5, 32))))
    mu, sig = fdm.stats(f)
    assert np.allclose(sig, np.cov(f.T)) and np.allclose(mu, f.mean(0))
    with pytest.raises(FacediffError):
        fdm.stats(f[:1])


def test_fd_matches_torchmetrics_with_custom_extractor():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Flat(torch.nn.Module):
        num_features = 12

        def forward(self, x):
            return x.flatten(1).double()

    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 12))
    b = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 0.3
    m = FrechetInceptionDistance(feature=Flat(), reset_real_features=True)
    m.set_dtype(torch.float64)
    m.update(torch.from_numpy(a).view(300, 3, 2, 2), real=True)
    m.update(torch.from_numpy(b).view(300, 3, 2, 2), real=False)
    assert fdm.fd_from_features(a, b) == pytest.approx(float(m.compute()), rel=1e-4)


# --- KID ----------------------------------------------------------------------------------------------

def _mmd_loops(x, y):
    k = lambda u, v: (u @ v / len(u) + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_matches_loop_reference_and_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.5
    mean, std = fdm.kid(x, y, subsets=4, subset_size=30)  # full-size subsets: every subset is the whole set
    assert mean == pytest.approx(_mmd_loops(x, y), rel=1e-9) and std == pytest.approx(0.0, abs=1e-12)

    class Ident(torch.nn.Module):
        def forward(self, t):
            return t.flatten(1).double()

    m = KernelInceptionDistance(feature=Ident(), subsets=3, subset_size=30)
    m.update(torch.from_numpy(x).view(30, 5, 1, 1), real=True)
    m.update(torch.from_numpy(y).view(30, 5, 1, 1), real=False)
    assert mean == pytest.approx(float(m.compute()[0]), rel=1e-4)


def test_kid_near_zero_for_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, _ = fdm.kid(x, y, subsets=20, subset_size=200)
    shifted, _ = fdm.kid(x, y + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.02 and shifted > 10 * abs(same) + 0.1


def test_eval_kid_uses_every_image_for_the_mean_and_half_subsets_for_the_spread():
    from facediff.evaluation.evaluate import _kid_mean_std

    rng = np.random.default_rng(6)
    draw = lambda n: (rng.normal(size=(n, 8)), rng.normal(size=(n, 8)) + 0.3)  # noqa: E731
    x, y = draw(256)
    mean, std = _kid_mean_std(x, y)
    assert mean == pytest.approx(fdm.kid(x, y, subsets=1, subset_size=256)[0], rel=1e-12)
    # the spread is that of KID on fresh half-size samples, not ~0 as with full-size "subsets"
    fresh = np.std([fdm.kid(*draw(128), subsets=1, subset_size=128)[0] for _ in range(30)])
    assert fresh / 3 < std < fresh * 3


# --- FD paired by condition (seed 002) ------------------------------------------------------------------

def test_fd_by_condition_pairs_groups_and_skips_small_ones():
    rng = np.random.default_rng(6)
    # Condition c shifts the features by 3c: pairing by condition must see matched groups (small FD).
    cond = np.repeat([0, 1, 2], 100)[:, None]
    real = rng.normal(size=(300, 4)) + 3 * cond
    gen = rng.normal(size=(300, 4)) + 3 * cond
    r = fdm.fd_by_condition(real, cond, gen, cond, names=["smiling"])
    assert r["groups"] == 3 and r["fd"] < 0.5 and set(r["per_group"]) == {f"smiling={c}" for c in range(3)}
    wrong = fdm.fd_by_condition(real, cond, gen, (cond + 1) % 3)  # conditions ignored by the generator
    assert wrong["fd"] > 10 * r["fd"] + 5
    # A group with one generated image is skipped and listed.
    gcond = cond.copy()
    gcond[0, 0] = 7
    r2 = fdm.fd_by_condition(real, cond, gen, gcond)
    assert r2["groups"] == 3 and {"group": "0=7", "n_real": 0, "n_gen": 1} in r2["skipped"]
    with pytest.raises(FacediffError):
        fdm.fd_by_condition(real[:1], cond[:1], gen[:1], cond[:1])


# --- attribute accuracy -------------------------------------------------------------------------------

def test_attribute_accuracy_counts_and_dont_care():
    req = np.array([[0, 1], [2, 2], [5, -1], [3, 3]])
    pred = np.array([[0, 1], [2, 0], [4, 5], [3, 3]])
    r = accuracy_from_predictions(req, pred, attributes=("a", "b"))
    assert r["accuracy"] == pytest.approx(5 / 7)  # the -1 entry is not scored
    assert r["per_attribute"]["a"]["accuracy"] == pytest.approx(3 / 4)
    assert r["per_attribute"]["b"]["accuracy"] == pytest.approx(2 / 3)
    assert r["per_attribute"]["a"]["per_level"][5] == 0.0 and r["per_attribute"]["a"]["per_level"][1] is None
    assert r["exact_match"] == pytest.approx(2 / 4)
    assert r["mae"] == pytest.approx((1 + 2) / 7)
    conf = np.array(r["per_attribute"]["a"]["confusion"])
    assert conf[5, 4] == 1 and conf.sum() == 4
    assert confusion_matrix([1, 1, 2], [1, 2, 2], 3).tolist() == [[0, 0, 0], [0, 1, 1], [0, 0, 1]]
    with pytest.raises(FacediffError):
        accuracy_from_predictions(req, pred[:, :1], attributes=("a", "b"))


# --- image metrics ------------------------------------------------------------------------------------

def test_psnr_ssim_match_numpy_and_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    mse = ((a / 255.0 - b / 255.0) ** 2).reshape(3, -1).mean(1)
    assert psnr(a, b) == pytest.approx(float(np.mean(10 * np.log10(1 / mse))), rel=1e-6)
    ref = np.mean([structural_similarity(a[i] / 255.0, b[i] / 255.0, data_range=1.0, channel_axis=-1,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
                   for i in range(3)])
    assert ssim(a, b) == pytest.approx(ref, abs=3e-3)
    # Constant images: only the luminance term (2 m1 m2 + C1) / (m1^2 + m2^2 + C1), C1 = (0.01)^2 (Wang et al.).
    c1, c2 = np.full((1, 24, 24, 3), 51, np.uint8), np.full((1, 24, 24, 3), 153, np.uint8)
    assert ssim(c1, c2) == pytest.approx((2 * 0.2 * 0.6 + 1e-4) / (0.04 + 0.36 + 1e-4), abs=1e-4)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-6) and ssim(a, 255 - a) < 0.2


def test_lpips_and_inception_need_user_weights():
    a = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(FacediffError, match="--lpips-weights"):
        lpips(a, a)
    if importlib.util.find_spec("torch_fidelity") is None:
        from facediff.metrics.features import INCEPTION_MESSAGE, InceptionFeatures

        with pytest.raises(FacediffError) as e:
            InceptionFeatures()
        assert str(e.value) == INCEPTION_MESSAGE and "\n" not in str(e.value)


# --- diversity ----------------------------------------------------------------------------------------

def test_mean_pairwise_distance():
    assert mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
    pts = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert mean_pairwise_distance(pts) == pytest.approx((5 + 10 + 5) / 3)
    assert mean_pairwise_distance(np.ones((10, 4))) == pytest.approx(0.0, abs=1e-9)
    assert mean_pairwise_distance(np.array([[1.0, 0.0], [0.0, 2.0]]), metric="cosine") == pytest.approx(1.0)


# --- MTCNN --------------------------------------------------------------------------------------------

def test_face_detection_astronaut_and_noise():
    from skimage.data import astronaut

    from facediff.metrics.faces import face_detection

    img = astronaut()
    r = face_detection(img[None])
    assert r["rate"] == 1.0 and r["per_image"][0]["faces"] == 1 and r["per_image"][0]["confidence"] > 0.99
    x, y, w, h = r["per_image"][0]["box"]
    assert 150 < x + w / 2 < 300 and 40 < y + h / 2 < 200  # her face, upper middle of the picture
    noise = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    rn = face_detection(noise)
    assert rn["rate"] == 0.0 and rn["mean_confidence"] == 0.0 and rn["upscaled_to"] == 160
    with pytest.raises(FacediffError):
        face_detection(noise.astype(np.float32))
