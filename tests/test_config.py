import pytest

from facediff.config import KINDS, ConfigError, RunConfig, apply_overrides, cond_dim, from_dict, load_config, to_dict


def test_defaults_roundtrip_through_dict():
    cfg = RunConfig()
    assert from_dict(to_dict(cfg)) == cfg


def test_unknown_key_and_section_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict({"train": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match="unknown section"):
        from_dict({"trian": {"lr": 1.0}})


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


def test_every_shipped_config_loads(tmp_path):
    from pathlib import Path

    for p in sorted((Path(__file__).parent.parent / "configs").glob("*.toml")):
        cfg = load_config(p)
        assert cfg.kind in KINDS, p


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
