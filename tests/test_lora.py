"""LoRA adapters (facediff.models.lora) checked against diffusers' own loaders on two tiny SD geometries."""
from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import StableDiffusionPipeline
from peft.tuners.lora import LoraLayer
from torch import nn

from facediff.errors import FacediffError
from facediff.models import lora
from tiny_sd import GEOMETRIES, build_tiny_sd, build_unet, generate

RANK, ALPHA = 2, 7.0  # alpha != rank on purpose: diffusers issue #6087
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These models are tiny: with 2 threads on a busy 2-core CPU a 2-step call slows from 0.1 s to seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize_lora_b(module: nn.Module, seed: int) -> None:
    """lora_B starts at zero (LoRA = no-op); give it values so the adapter changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def _adapt(pipe: StableDiffusionPipeline, *, text: bool = False) -> None:
    lora.add_lora(pipe.unet, rank=RANK, alpha=ALPHA, targets=lora.UNET_TARGETS)
    _randomize_lora_b(pipe.unet, 1)
    if text:
        lora.add_lora(pipe.text_encoder, rank=RANK, alpha=ALPHA, targets=lora.TEXT_TARGETS)
        _randomize_lora_b(pipe.text_encoder, 2)


def _strip_metadata(src, dst_dir):
    """The same tensors in a file without safetensors metadata (as many third-party tools write them)."""
    dst_dir.mkdir()
    dst = dst_dir / src.name
    safetensors.torch.save_file(safetensors.torch.load_file(str(src)), str(dst))
    return dst


def _matched_linear_params(module: nn.Module, targets) -> int:
    """sum of rank * (in + out) over the Linear layers whose name ends in a target (computed from the shapes)."""
    total = 0
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            total += RANK * (sub.in_features + sub.out_features)
    return total


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_add_lora_trains_only_lora_parameters(geometry, tmp_path):
    pipe = build_tiny_sd(geometry, tmp_path)
    for module, targets in ((pipe.unet, lora.UNET_TARGETS), (pipe.text_encoder, lora.TEXT_TARGETS)):
        expected = _matched_linear_params(module, targets)
        assert expected > 0
        n = lora.add_lora(module, rank=RANK, alpha=ALPHA, targets=targets)
        assert n == expected == lora.lora_parameter_count(module)
        trainable = [name for name, p in module.named_parameters() if p.requires_grad]
        assert trainable and all(".lora_A." in t or ".lora_B." in t for t in trainable)
        assert all(not p.requires_grad for name, p in module.named_parameters() if ".lora_" not in name)
        layers = [m for m in module.modules() if isinstance(m, LoraLayer)]
        assert all(m.scaling["default"] == pytest.approx(ALPHA / RANK) for m in layers)


def test_add_lora_rejects_targets_that_match_nothing(tmp_path):
    pipe = build_tiny_sd("f8-v", tmp_path)
    with pytest.raises(FacediffError, match=r"no_such_layer.*to_q"):
        lora.add_lora(pipe.unet, rank=2, alpha=2, targets=("to_q", "no_such_layer"))
    assert not getattr(pipe.unet, "peft_config", None)
    with pytest.raises(FacediffError, match="rank"):
        lora.add_lora(pipe.unet, rank=0, alpha=2, targets=("to_q",))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_diffusers_format_round_trip_keeps_alpha(geometry, tmp_path):
    pipe = build_tiny_sd(geometry, tmp_path)
    base = generate(pipe)
    _adapt(pipe)
    adapted = generate(pipe)
    assert np.abs(adapted - base).max() > 1e-2  # the LoRA does something
    # what diffusers would produce if it assumed alpha = rank: the same layers at scaling 1
    for layer in pipe.unet.modules():
        if isinstance(layer, LoraLayer):
            layer.scaling["default"] = 1.0
    alpha_as_rank = generate(pipe)
    for layer in pipe.unet.modules():
        if isinstance(layer, LoraLayer):
            layer.scaling["default"] = ALPHA / RANK

    path = lora.save_lora(tmp_path / "lora", pipe.unet)
    assert path.name == "pytorch_lora_weights.safetensors"
    fresh = build_tiny_sd(geometry, tmp_path)
    fresh.load_lora_weights(str(tmp_path / "lora"))  # plain diffusers
    np.testing.assert_allclose(generate(fresh), adapted, atol=ATOL)

    ours = build_tiny_sd(geometry, tmp_path)
    info = lora.load_lora(tmp_path / "lora", ours.unet)
    assert (info["format"], info["rank"], info["alpha"], info["alpha_from"]) == ("diffusers", RANK, ALPHA, "metadata")
    np.testing.assert_allclose(generate(ours), adapted, atol=ATOL)

    stripped = _strip_metadata(path, tmp_path / "stripped")
    blind = build_tiny_sd(geometry, tmp_path)
    blind.load_lora_weights(str(stripped.parent))
    blind_images = generate(blind)
    assert np.abs(blind_images - adapted).max() > 1e-3  # the metadata is what carries alpha ...
    np.testing.assert_allclose(blind_images, alpha_as_rank, atol=ATOL)  # ... without it alpha = rank (#6087)


def test_diffusers_format_with_other_targets(tmp_path):
    """Targets outside diffusers' key-renaming table next to ones inside it (a mixed file loads only half)."""
    pipe = build_tiny_sd("f4-eps", tmp_path)
    lora.add_lora(pipe.unet, rank=RANK, alpha=ALPHA, targets=("to_q", "proj_in", "ff.net.2", "conv1"))
    lora.add_lora(pipe.text_encoder, rank=RANK, alpha=ALPHA, targets=("q_proj", "fc1"))
    _randomize_lora_b(pipe.unet, 4)
    _randomize_lora_b(pipe.text_encoder, 5)
    adapted = generate(pipe)
    lora.save_lora(tmp_path / "lora", pipe.unet, pipe.text_encoder)
    fresh = build_tiny_sd("f4-eps", tmp_path)
    fresh.load_lora_weights(str(tmp_path / "lora"))
    np.testing.assert_allclose(generate(fresh), adapted, atol=ATOL)


def test_kohya_with_other_targets(tmp_path):
    pipe = build_tiny_sd("f4-eps", tmp_path)
    lora.add_lora(pipe.unet, rank=RANK, alpha=ALPHA, targets=("to_q", "proj_in", "ff.net.2", "conv1"))
    _randomize_lora_b(pipe.unet, 4)
    adapted = generate(pipe)
    lora.save_kohya(tmp_path / "k.safetensors", pipe.unet)
    fresh = build_tiny_sd("f4-eps", tmp_path)
    fresh.load_lora_weights(str(tmp_path / "k.safetensors"))
    np.testing.assert_allclose(generate(fresh), adapted, atol=ATOL)
    # diffusers reads kohya text-encoder q/k/v keys only next to out_proj ones (it sniffs "to_out_lora" to
    # classify the dict): q_proj + fc1 would lose q_proj silently, q_proj + k_proj would not load at all
    for targets in (("q_proj", "fc1"), ("q_proj", "k_proj")):
        te = build_tiny_sd("f4-eps", tmp_path).text_encoder
        lora.add_lora(te, rank=RANK, alpha=ALPHA, targets=targets)
        with pytest.raises(FacediffError, match="te.safetensors.*text_encoder"):
            lora.save_kohya(tmp_path / "te.safetensors", None, te)
        assert not (tmp_path / "te.safetensors").exists()


def test_text_encoder_lora_round_trip(tmp_path):
    pipe = build_tiny_sd("f4-eps", tmp_path)
    ids = pipe.tokenizer("a face", return_tensors="pt").input_ids
    with torch.no_grad():
        base_text = pipe.text_encoder(ids)[0]
    _adapt(pipe, text=True)
    adapted = generate(pipe)
    with torch.no_grad():
        adapted_text = pipe.text_encoder(ids)[0]
    assert (adapted_text - base_text).abs().max() > 1e-3

    path = lora.save_lora(tmp_path / "lora", pipe.unet, pipe.text_encoder)
    keys = safetensors.torch.load_file(str(path))
    # the SD key layout (text_model.encoder...) although transformers 5 flattened CLIPTextModel
    assert "text_encoder.text_model.encoder.layers.1.self_attn.out_proj.lora_linear_layer.up.weight" in keys
    meta = json.loads(lora.read_lora_metadata(path)["lora_adapter_metadata"])
    assert meta["text_encoder.lora_alpha"] == meta["unet.lora_alpha"] == ALPHA
    fresh = build_tiny_sd("f4-eps", tmp_path)
    fresh.load_lora_weights(str(tmp_path / "lora"))
    with torch.no_grad():
        torch.testing.assert_close(fresh.text_encoder(ids)[0], adapted_text, atol=ATOL, rtol=0)
    np.testing.assert_allclose(generate(fresh), adapted, atol=ATOL)

    ours = build_tiny_sd("f4-eps", tmp_path)
    lora.load_lora(tmp_path / "lora", ours.unet, ours.text_encoder)
    np.testing.assert_allclose(generate(ours), adapted, atol=ATOL)
    unet_only = build_tiny_sd("f4-eps", tmp_path)
    with pytest.raises(FacediffError, match="text_encoder"):
        lora.load_lora(tmp_path / "lora", unet_only.unet)  # never a silent partial load
    assert not getattr(unet_only.unet, "peft_config", None)


def test_kohya_round_trip(tmp_path):
    pipe = build_tiny_sd("f8-v", tmp_path)
    base = generate(pipe)
    _adapt(pipe, text=True)
    adapted = generate(pipe)
    path = lora.save_kohya(tmp_path / "face.safetensors", pipe.unet, pipe.text_encoder,
                           extra_metadata={"ss_output_name": "face"})

    tensors = safetensors.torch.load_file(str(path))
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    peft_q = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    torch.testing.assert_close(tensors[f"{q}.lora_down.weight"], peft_q.lora_A["default"].weight)
    torch.testing.assert_close(tensors[f"{q}.lora_up.weight"], peft_q.lora_B["default"].weight)
    assert f"{te}.lora_down.weight" in tensors
    alphas = [v for k, v in tensors.items() if k.endswith(".alpha")]
    assert len(alphas) * 3 == len(tensors) and all(a.ndim == 0 and a.item() == ALPHA for a in alphas)
    meta = lora.read_lora_metadata(path)
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == str(RANK)
    assert float(meta["ss_network_alpha"]) == ALPHA and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_training_comment"] == "facediff" and meta["ss_output_name"] == "face"

    # diffusers' reader converts every key (it raises on leftovers) and keeps every alpha
    converted, network_alphas = StableDiffusionPipeline.lora_state_dict(str(path))
    assert all(k.startswith(("unet.", "text_encoder.")) and "lora_unet_" not in k and "lora_te" not in k
               for k in converted)
    assert len(converted) == 2 * len(alphas) and len(network_alphas) == len(alphas)
    assert set(network_alphas.values()) == {ALPHA}

    fresh = build_tiny_sd("f8-v", tmp_path)
    fresh.load_lora_weights(str(path))
    np.testing.assert_allclose(generate(fresh), adapted, atol=ATOL)

    ours = build_tiny_sd("f8-v", tmp_path)
    info = lora.load_lora(path, ours.unet, ours.text_encoder)
    assert (info["format"], info["rank"], info["alpha"], info["tensors"]) == ("kohya", RANK, ALPHA, len(tensors))
    np.testing.assert_allclose(generate(ours), adapted, atol=ATOL)

    off = build_tiny_sd("f8-v", tmp_path)
    lora.load_lora(path, off.unet, off.text_encoder, scale=0.0)
    np.testing.assert_allclose(generate(off), base, atol=ATOL)


def test_kohya_refuses_a_module_diffusers_would_misname(tmp_path):
    """class_embedding.linear_1 (facediff's attribute U-Nets) -> lora_unet_class_embedding_linear_1, which
    diffusers' kohya reader turns into class_embedding.linear (its SDXL "emb" index heuristic)."""
    extra = dict(class_embed_type="projection", projection_class_embeddings_input_dim=6)
    unet, fresh = build_unet("f4-eps", **extra), build_unet("f4-eps", **extra)
    lora.add_lora(unet, rank=RANK, alpha=ALPHA, targets=("linear_1",))
    _randomize_lora_b(unet, 3)
    with pytest.raises(FacediffError, match="class_embedding.linear_1"):
        lora.save_kohya(tmp_path / "k.safetensors", unet)
    assert not (tmp_path / "k.safetensors").exists()

    # such a file made elsewhere: diffusers only logs "unexpected keys" and drops them; load_lora refuses it
    alien, tensors = tmp_path / "alien.safetensors", {}
    for name in ("class_embedding.linear_1", "time_embedding.linear_1"):
        lin, key = unet.get_submodule(name), "lora_unet_" + name.replace(".", "_")
        tensors |= {f"{key}.lora_down.weight": lin.lora_A["default"].weight.detach(),
                    f"{key}.lora_up.weight": lin.lora_B["default"].weight.detach(), f"{key}.alpha": torch.tensor(ALPHA)}
    safetensors.torch.save_file(tensors, str(alien))
    with pytest.raises(FacediffError, match="alien.safetensors.*4 unet LoRA tensors but 2"):
        lora.load_lora(alien, fresh)
    assert not getattr(fresh, "peft_config", None)

    lora.save_lora(tmp_path / "d", unet)  # the diffusers format holds it
    lora.load_lora(tmp_path / "d", fresh)
    args = (torch.randn(1, 3, 4, 4), torch.tensor([10]), torch.randn(1, 3, 8))
    cls = torch.randn(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(fresh(*args, class_labels=cls).sample, unet(*args, class_labels=cls).sample)


def test_merge_lora_matches_the_adapted_forward(tmp_path):
    pipe = build_tiny_sd("f8-v", tmp_path)
    _adapt(pipe)
    args = (torch.randn(1, 4, 4, 4), torch.tensor([500]), torch.randn(1, 5, 16))
    with torch.no_grad():
        before = pipe.unet(*args).sample
        assert lora.merge_lora(pipe.unet) == sum(isinstance(m, LoraLayer) for m in pipe.unet.modules())
        torch.testing.assert_close(pipe.unet(*args).sample, before, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:While injecting the PEFT adapters")
def test_load_lora_bad_inputs(tmp_path):
    pipe = build_tiny_sd("f8-v", tmp_path)
    with pytest.raises(FacediffError, match="missing.safetensors"):
        lora.load_lora(tmp_path / "missing.safetensors", pipe.unet)
    with pytest.raises(FacediffError, match="empty_dir"):
        (tmp_path / "empty_dir").mkdir()
        lora.load_lora(tmp_path / "empty_dir", pipe.unet)
    text = tmp_path / "notes.safetensors"
    text.write_text("not a safetensors file at all")
    with pytest.raises(FacediffError, match="notes.safetensors.*not a safetensors"):
        lora.load_lora(text, pipe.unet)
    other = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"encoder.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(FacediffError, match="other.safetensors.*neither"):
        lora.load_lora(other, pipe.unet)
    assert not getattr(pipe.unet, "peft_config", None)

    # a LoRA for another U-Net geometry: an error, and no half-loaded adapter is left behind
    src = build_tiny_sd("f4-eps", tmp_path)
    _adapt(src)
    lora.save_lora(tmp_path / "f4", src.unet)
    with pytest.raises(FacediffError, match="pytorch_lora_weights.safetensors"):
        lora.load_lora(tmp_path / "f4", pipe.unet)
    assert not getattr(pipe.unet, "peft_config", None)
    assert not any(isinstance(m, LoraLayer) and m.lora_A for m in pipe.unet.modules())
