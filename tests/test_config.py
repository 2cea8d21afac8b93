"""Config loading: YAML into typed dataclasses, dotted overrides, and errors that name the key."""

from pathlib import Path

import pytest

from tfmmsearch.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.name == path.stem


def test_yaml_values_reach_the_dataclasses(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntraining: {batch_size: 16, learning_rate: 1}\nmodel: {fusion: gated}\n")
    config = load_config(path)
    assert config.training.batch_size == 16
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate, float)
    assert config.model.fusion == "gated"
    assert config.training.epochs == Config().training.epochs  # untouched keys keep defaults


def test_dotted_overrides_apply_after_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training: {batch_size: 16}\n")
    config = load_config(path, ["training.batch_size=64", "data.item_feature_columns=[brand, price]",
                                "towers.image.trainable=true", "data.catalog_dir=/x/y"])
    assert config.training.batch_size == 64
    assert config.data.item_feature_columns == ["brand", "price"]
    assert config.towers.image.trainable is True
    assert config.data.catalog_dir == "/x/y"


def test_unknown_key_is_an_error_naming_the_dotted_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training: {batch_sise: 16}\n")
    with pytest.raises(ConfigError, match=r"training\.batch_sise: unknown key"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"model\.nope: unknown key"):
        load_config(None, ["model.nope=1"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("training.batch_size=big", "training.batch_size"),
        ("training.batch_size=1.5", "training.batch_size"),
        ("training.learning_rate=fast", "training.learning_rate"),
        ("towers.image.trainable=3", "towers.image.trainable"),
        ("data.item_feature_columns=brand", "data.item_feature_columns"),
        ("training=5", "training"),
        ("model.ranking_hidden_units=[1, x]", r"model\.ranking_hidden_units\[1\]"),
    ],
)
def test_wrong_types_are_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_bad_choice_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.fusion: 'sum' is not one of"):
        load_config(None, ["model.fusion=sum"])
    with pytest.raises(ConfigError, match=r"data\.on_bad_row"):
        load_config(None, ["data.on_bad_row=ignore"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["training.batch_size"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_yaml_is_read_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_save_and_reload_round_trip(tmp_path):
    config = load_config(None, ["training.epochs=7", "model.ranking_hidden_units=[8]"])
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config
    assert config_from_dict(config_to_dict(config)) == config
