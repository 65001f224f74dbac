import dataclasses
import math
import typing

import pytest

from facediff import registry
from facediff.config import (
    KINDS,
    PRESETS_DIR,
    AutoencoderConfig,
    ConfigError,
    DataConfig,
    DiffusionConfig,
    LatentConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    cond_dim,
    from_dict,
    load_config,
    load_config_json,
    preset_names,
    preset_path,
    save_config,
    to_dict,
)
from facediff.errors import FacediffError


def test_defaults_roundtrip_through_dict():
    cfg = RunConfig()
    assert from_dict(to_dict(cfg)) == cfg


def test_roundtrip_through_json_file(tmp_path):
    cfg = apply_overrides(RunConfig(), ["model.block_out_channels=8,16", "train.lr=3e-4", "data.hflip=false"])
    save_config(cfg, tmp_path / "config.json")
    assert load_config_json(tmp_path / "config.json") == cfg


def test_unknown_key_and_section_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict({"train": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match="unknown section"):
        from_dict({"trian": {"lr": 1.0}})
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(RunConfig(), ["train.lrr=1"])


def test_choices_and_types_are_checked():
    with pytest.raises(ConfigError, match="choose one of"):
        from_dict({"diffusion": {"schedule": "cosin"}})
    with pytest.raises(ConfigError, match="not a valid int"):
        apply_overrides(RunConfig(), ["train.max_steps=ten"])


def test_overrides_coerce_types():
    cfg = apply_overrides(RunConfig(), ["train.lr=1e-3", "model.block_out_channels=[8,16]",
                                        "data.hflip=false", "model.attributes=smiling,age"])
    assert cfg.train.lr == 1e-3 and cfg.model.block_out_channels == (8, 16)
    assert cfg.data.hflip is False and cond_dim(cfg.model) == 12
    assert type(cfg.train.lr) is float and type(cfg.model.block_out_channels[0]) is int


def test_kinds_come_from_the_registry():
    assert KINDS == registry.KINDS and "estimator" in KINDS
    assert from_dict({"kind": "estimator"}).kind == "estimator"
    with pytest.raises(ConfigError, match="kind = 'gan': choose one of ddpm, autoencoder, ldm, t2i, lora, estimator"):
        from_dict({"kind": "gan"})
    with pytest.raises(ConfigError, match="kind"):
        RunConfig(kind="gan")


# ------------------------------------------------------------------------------------------- type coercion
@pytest.mark.parametrize("value", ["3", 3, 3.0, " 3 ", "3.0", "3e0"])
def test_int_field_accepts_whole_numbers(value):
    assert from_dict({"train": {"max_steps": value}}).train.max_steps == 3
    assert type(from_dict({"train": {"max_steps": value}}).train.max_steps) is int


@pytest.mark.parametrize("value", ["3.5", 3.5, "ten", True, "inf", float("nan"), [3]])
def test_int_field_rejects_non_integers(value):
    with pytest.raises(ConfigError) as e:
        from_dict({"train": {"max_steps": value}})
    msg = str(e.value)
    assert "\n" not in msg and "[train] max_steps" in msg and repr(value) in msg and "int" in msg


def test_float_for_int_via_set_names_key_value_and_type():
    with pytest.raises(ConfigError, match=r"^\[train\] batch_size = '3\.5' is not a valid int"):
        apply_overrides(RunConfig(), ["train.batch_size=3.5"])
    assert apply_overrides(RunConfig(), ["train.batch_size=3"]).train.batch_size == 3


@pytest.mark.parametrize("value,expected", [("true", True), ("False", False), ("1", True), ("0", False),
                                            (True, True), (False, False), (1, True), (0, False)])
def test_bool_field_accepts_true_false_1_0(value, expected):
    assert from_dict({"data": {"hflip": value}}).data.hflip is expected


@pytest.mark.parametrize("value", ["yes", "no", "2", 2, "", 0.5, "on"])
def test_bool_field_rejects_anything_else(value):
    with pytest.raises(ConfigError, match=r"\[data\] hflip = .* is not a valid bool"):
        from_dict({"data": {"hflip": value}})


def test_float_field_accepts_ints_and_text_but_not_bools_or_words():
    assert from_dict({"train": {"lr": 1}}).train.lr == 1.0
    assert type(from_dict({"train": {"lr": 1}}).train.lr) is float
    assert from_dict({"train": {"lr": "2e-4"}}).train.lr == 2e-4
    for bad in (True, "fast", [1.0]):
        with pytest.raises(ConfigError, match=r"\[train\] lr = .* is not a valid float"):
            from_dict({"train": {"lr": bad}})


def test_str_field_rejects_non_strings():
    with pytest.raises(ConfigError, match=r"\[data\] path = 3 is not a valid str"):
        from_dict({"data": {"path": 3}})


def test_tuple_fields_coerce_each_entry_by_its_type():
    cfg = from_dict({"model": {"block_out_channels": [8, "16", 32.0], "attributes": ["age"]}})
    assert cfg.model.block_out_channels == (8, 16, 32) and cfg.model.attributes == ("age",)
    with pytest.raises(ConfigError, match=r"\[model\] block_out_channels = \[8, 16\.5\] is not a valid list of int"):
        from_dict({"model": {"block_out_channels": [8, 16.5]}})
    with pytest.raises(ConfigError, match=r"\[model\] attributes = .* is not a valid list of str"):
        from_dict({"model": {"attributes": [1, 2]}})
    with pytest.raises(ConfigError, match="not a valid list of int"):
        from_dict({"model": {"block_out_channels": 8}})


@pytest.mark.parametrize("section,cls", [("model", ModelConfig), ("autoencoder", AutoencoderConfig)])
def test_empty_channels_are_an_error(section, cls):
    with pytest.raises(ConfigError, match=rf"\[{section}\] block_out_channels = \(\): must list at least one"):
        cls(block_out_channels=())
    with pytest.raises(ConfigError, match="block_out_channels"):
        apply_overrides(RunConfig(), [f"{section}.block_out_channels=[]"])
    with pytest.raises(ConfigError, match=r"every entry must be >= 1"):
        cls(block_out_channels=(8, 0))
    assert apply_overrides(RunConfig(), ["model.attention_resolutions=[]"]).model.attention_resolutions == ()


def test_coercion_uses_the_declared_type_not_its_spelling():
    # every field's coerced default keeps its exact Python type (int stays int, tuple stays tuple)
    for cls in (DataConfig, ModelConfig, DiffusionConfig, TrainConfig, AutoencoderConfig, LatentConfig):
        inst = cls()
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert getattr(inst, f.name) == default and type(getattr(inst, f.name)) is type(default), f.name


# ------------------------------------------------------------------------------------------- __post_init__
@pytest.mark.parametrize("make,match", [
    (lambda: DiffusionConfig(schedule="bad"),
     r"^\[diffusion\] schedule = 'bad': choose one of linear, scaled_linear, cosine$"),
    (lambda: DiffusionConfig(prediction_type="x0"), r"\[diffusion\] prediction_type = 'x0': choose one of"),
    (lambda: DiffusionConfig(loss_weighting="snr"), r"\[diffusion\] loss_weighting = 'snr': choose one of"),
    (lambda: DataConfig(synth_style="cartoon"), r"\[data\] synth_style = 'cartoon': choose one of human, anime"),
    (lambda: ModelConfig(conditioning="sketch"), r"\[model\] conditioning = 'sketch': choose one of none, attributes, text"),
    (lambda: TrainConfig(mixed_precision="fp8"), r"\[train\] mixed_precision = 'fp8': choose one of auto, no, bf16"),
    (lambda: TrainConfig(lr_schedule="step"), r"\[train\] lr_schedule = 'step': choose one of constant, cosine"),
    (lambda: TrainConfig(sample_sampler="plms"), r"\[train\] sample_sampler = 'plms': choose one of"),
    (lambda: AutoencoderConfig(kind="vae"), r"\[autoencoder\] kind = 'vae': choose one of vq, kl"),
    (lambda: TrainConfig(max_steps="3.5"), r"\[train\] max_steps = '3.5' is not a valid int"),
])
def test_direct_construction_is_validated(make, match):
    with pytest.raises(ConfigError, match=match) as e:
        make()
    assert isinstance(e.value, FacediffError) and "\n" not in str(e.value)


def test_replace_is_validated_and_coerces():
    with pytest.raises(ConfigError, match="choose one of"):
        dataclasses.replace(DiffusionConfig(), schedule="bad")
    assert DataConfig(size="16").size == 16
    assert RunConfig(data={"size": 16}).data == DataConfig(size=16)
    with pytest.raises(ConfigError, match=r"unknown key \[data\] sise"):
        RunConfig(data={"sise": 16})


def test_every_choice_in_the_registry_is_accepted():
    for s in registry.SCHEDULES:
        DiffusionConfig(schedule=s)
    for p in registry.PREDICTION_TYPES:
        DiffusionConfig(prediction_type=p)
    for k in registry.AE_KINDS:
        AutoencoderConfig(kind=k)
    for s in registry.SAMPLERS:
        TrainConfig(sample_sampler=s)
    for s in registry.SYNTH_STYLES:
        DataConfig(synth_style=s)


# ------------------------------------------------------------------------------------------- ranges
POSITIVE_INTS = [("data", "synth_n"), ("model", "layers_per_block"), ("model", "attention_head_dim"),
                 ("model", "norm_num_groups"), ("model", "num_levels"), ("train", "batch_size"),
                 ("train", "grad_accum"), ("train", "max_steps"), ("train", "log_every"),
                 ("train", "keep_checkpoints"), ("train", "max_nonfinite"), ("train", "sample_steps"),
                 ("autoencoder", "layers_per_block"), ("autoencoder", "latent_channels"),
                 ("autoencoder", "num_vq_embeddings"), ("autoencoder", "vq_embed_dim"),
                 ("autoencoder", "norm_num_groups"), ("autoencoder", "disc_channels"), ("autoencoder", "eval_n")]
NON_NEGATIVE = [("train", "checkpoint_every"), ("train", "sample_every"), ("train", "warmup_steps"),
                ("train", "ema_start"), ("train", "time_budget_minutes"), ("train", "weight_decay"),
                ("train", "grad_clip"), ("autoencoder", "dead_code_restart"), ("autoencoder", "eval_every"),
                ("autoencoder", "disc_start"), ("autoencoder", "l1_weight"), ("autoencoder", "l2_weight"),
                ("autoencoder", "perceptual_weight"), ("autoencoder", "commitment_beta"),
                ("autoencoder", "kl_weight"), ("autoencoder", "disc_weight"), ("latent", "scale_factor"),
                ("model", "dropout")]
PROBABILITIES = [("diffusion", "cond_drop_prob"), ("diffusion", "attr_drop_prob"),
                 ("latent", "sketch_drop_prob"), ("model", "dropout")]


def _set(section, name, value):
    return apply_overrides(RunConfig(), [f"{section}.{name}={value}"])


def _one_line_error(section, name, value):
    with pytest.raises(ConfigError) as e:
        _set(section, name, value)
    msg = str(e.value)
    assert "\n" not in msg and f"[{section}] {name}" in msg, msg
    return msg


@pytest.mark.parametrize("section,name", POSITIVE_INTS)
def test_positive_ints(section, name):
    assert ">= 1" in _one_line_error(section, name, 0)
    assert ">= 1" in _one_line_error(section, name, -3)
    assert getattr(getattr(_set(section, name, 1), section), name) == 1


@pytest.mark.parametrize("section,name", NON_NEGATIVE)
def test_non_negative(section, name):
    assert ">= 0" in _one_line_error(section, name, -1) or "[0, 1]" in _one_line_error(section, name, -1)
    assert getattr(getattr(_set(section, name, 0), section), name) == 0


@pytest.mark.parametrize("section,name", PROBABILITIES)
def test_probabilities(section, name):
    assert "[0, 1]" in _one_line_error(section, name, 1.5)
    assert "[0, 1]" in _one_line_error(section, name, -0.1)
    for ok in (0, 1, 0.5):
        assert getattr(getattr(_set(section, name, ok), section), name) == ok


def test_special_ranges():
    assert ">= 2" in _one_line_error("diffusion", "num_train_timesteps", 1)
    assert _set("diffusion", "num_train_timesteps", 2).diffusion.num_train_timesteps == 2
    assert ">= 8" in _one_line_error("data", "size", 7)
    assert _set("data", "size", 8).data.size == 8
    assert "> 0" in _one_line_error("train", "lr", 0)
    assert "> 0" in _one_line_error("train", "lr", -1e-4)
    assert "> 0" in _one_line_error("diffusion", "snr_gamma", 0)
    assert "[0, 1)" in _one_line_error("train", "ema_decay", 1)
    assert "[0, 1)" in _one_line_error("train", "ema_decay", -0.5)
    assert _set("train", "ema_decay", 0).train.ema_decay == 0
    assert ">= 1" in _one_line_error("model", "in_channels", 0)
    assert "every entry" in _one_line_error("model", "attention_resolutions", "[8,-1]")


FLOAT_FIELDS = [(s, name) for s, cls in [("model", ModelConfig), ("diffusion", DiffusionConfig),
                                           ("train", TrainConfig), ("autoencoder", AutoencoderConfig),
                                           ("latent", LatentConfig), ("data", DataConfig)]
                for name, tp in typing.get_type_hints(cls).items() if tp is float]


@pytest.mark.parametrize("section,name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_inf_rejected_for_every_float(section, name, value):
    assert "finite" in _one_line_error(section, name, value)


def test_the_nan_test_covers_the_float_fields():
    assert {("train", "lr"), ("diffusion", "beta_start"), ("latent", "scale_factor"), ("model", "dropout"),
            ("autoencoder", "kl_weight")} <= set(FLOAT_FIELDS) and len(FLOAT_FIELDS) >= 19


def test_beta_range_for_linear_schedules_only():
    for sched in ("linear", "scaled_linear"):
        for bs, be in [(0.0, 0.02), (0.03, 0.02), (1e-4, 1.0), (-1e-4, 0.02)]:
            with pytest.raises(ConfigError, match=r"\[diffusion\] beta_start = .*, beta_end = .*0 < beta_start"):
                DiffusionConfig(schedule=sched, beta_start=bs, beta_end=be)
        assert DiffusionConfig(schedule=sched, beta_start=0.01, beta_end=0.01).beta_end == 0.01
    assert DiffusionConfig(schedule="cosine", beta_start=0.5, beta_end=0.1).schedule == "cosine"
    with pytest.raises(ConfigError, match="finite"):
        DiffusionConfig(schedule="cosine", beta_start=math.nan)


def test_errors_from_files_name_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('kind = "ddpm"\n[train]\nbatch_size = 0\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: \[train\] batch_size = 0: must be >= 1"):
        load_config(p)


# ------------------------------------------------------------------------------------------- presets
def test_every_shipped_preset_loads():
    names = preset_names()
    assert {"tiny-ddpm", "tiny-vq", "tiny-kl", "tiny-ldm", "default-32", "kl-f4-64", "vq-f4-64", "thesis-64",
            "seed003-manga-64"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.kind in KINDS, name
        assert cfg == load_config(preset_path(name)) == load_config(f"{name}.toml"), name


def test_presets_live_inside_the_package():
    import facediff

    assert PRESETS_DIR.parent == __import__("pathlib").Path(facediff.__file__).parent
    assert preset_path("tiny-ddpm") == PRESETS_DIR / "tiny-ddpm.toml"
    assert preset_path("tiny-ddpm.toml") == PRESETS_DIR / "tiny-ddpm.toml"
    with pytest.raises(ConfigError, match="no preset named 'nope'.*tiny-ddpm"):
        preset_path("nope")
    with pytest.raises(ConfigError, match="no preset"):
        preset_path("../presets/tiny-ddpm")


def test_preset_by_name_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("tiny-ddpm", ["train.max_steps=7"])
    assert cfg.kind == "ddpm" and cfg.train.max_steps == 7
    assert load_config("tiny-vq.toml").kind == "autoencoder"


def test_a_file_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-ddpm.toml").write_text('kind = "ldm"\n')
    assert load_config("tiny-ddpm.toml").kind == "ldm"  # the file in cwd
    assert load_config("tiny-ddpm").kind == "ddpm"  # no file called tiny-ddpm: the preset


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file and no preset of that name") as e:
        load_config(tmp_path / "nope.toml")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError,
                       match=r"^config 'x': no such file and no preset of that name \(presets: .*tiny-ddpm"):
        load_config("x")


def test_bad_toml_is_one_line_error(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("kind = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
