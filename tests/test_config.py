"""Config loading: YAML into typed dataclasses, dotted overrides, range checks, errors that name
the key and where the value came from, and no key that nothing reads."""

import ast
import dataclasses
import re
import typing
from collections import Counter
from pathlib import Path

import pytest

from tfmmsearch.config import (
    Config,
    ConfigError,
    ItemFeatureConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / "tfmmsearch"


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
    config = load_config(path, ["training.batch_size=64", "model.ranking_interactions=[text, image]",
                                "towers.image.trainable=true", "data.catalog_dir=/x/y"])
    assert config.training.batch_size == 64
    assert config.model.ranking_interactions == ["text", "image"]
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
        ("model.ranking_interactions=text", "model.ranking_interactions"),
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


# --------------------------------------------------------------------------- every key is read


def _owner(node: ast.AST) -> str | None:
    """The last name of the object an attribute is read from: `cfg.image.image_size` -> image."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _package_reads() -> tuple[set[tuple[str | None, str]], list[tuple[str | None, re.Pattern]]]:
    """(owner, name) of every attribute read and getattr(obj, "name") in the package outside
    config.py, plus getattr(obj, f"{x}_suffix") reads as name patterns."""
    reads, patterns = set(), []
    for path in PACKAGE_DIR.rglob("*.py"):
        if path == PACKAGE_DIR / "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                reads.add((_owner(node.value), node.attr))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "getattr" and len(node.args) >= 2):
                owner, name = _owner(node.args[0]), node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    reads.add((owner, name.value))
                elif isinstance(name, ast.JoinedStr):
                    pattern = "".join(re.escape(part.value) if isinstance(part, ast.Constant)
                                      else ".+" for part in name.values)
                    patterns.append((owner, re.compile(pattern)))
    return reads, patterns


def _config_fields(cls=Config, section: str = "config", prefix: str = ""):
    """(section, field name, dotted key) of every field, nested sections included."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        yield section, item.name, prefix + item.name
        if dataclasses.is_dataclass(hints[item.name]):
            yield from _config_fields(hints[item.name], item.name, f"{prefix}{item.name}.")


def test_every_config_key_is_read_by_the_package():
    # A name used by one field only counts as read wherever it is read; a name several sections
    # share (seed, image_size, seq_length, ...) must be read off its own section
    # (`....splits.seed`, `synthetic.image_size`), so data.image_size cannot hide behind
    # towers.image.image_size.
    reads, patterns = _package_reads()
    fields = list(_config_fields())
    uses = Counter(name for _, name, _ in fields)
    unread = []
    for section, name, key in fields:
        unique = uses[name] == 1
        read = any(attr == name and (unique or owner == section) for owner, attr in reads)
        read = read or any(pattern.fullmatch(name) and (unique or owner == section)
                           for owner, pattern in patterns)
        if not read:
            unread.append(key)
    assert not unread, f"config keys no code under tfmmsearch/ reads: {', '.join(unread)}"


def test_the_read_check_sees_a_key_nothing_reads():
    # The check above would pass vacuously if the walk saw every name; these are not read.
    reads, _ = _package_reads()
    assert ("data", "image_size") not in reads and ("image", "image_size") in reads
    assert not any(attr == "shuffle_seed" for _, attr in reads)


@pytest.mark.parametrize("key", ["data.image_size", "data.shuffle_buffer", "data.shuffle_seed",
                                 "data.item_feature_columns", "data.label_columns",
                                 "data.ignored_columns"])
def test_removed_keys_say_they_were_removed(key):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: no longer a config key \(.+\); "
                                          r"delete it"):
        load_config(None, [f"{key}=1"])


# --------------------------------------------------------------------------- value ranges


@pytest.mark.parametrize("override, key, words", [
    ("training.epochs=0", "training.epochs", "must be >= 1, got 0"),
    ("training.batch_size=0", "training.batch_size", "must be >= 1"),
    ("training.learning_rate=0", "training.learning_rate", "must be > 0"),
    ("training.learning_rate=-0.1", "training.learning_rate", "must be > 0"),
    ("training.learning_rate=.nan", "training.learning_rate", "must be a finite number"),
    ("training.steps_per_checkpoint=-1", "training.steps_per_checkpoint", "must be >= 0"),
    ("training.early_stopping_patience=-2", "training.early_stopping_patience", "must be >= 0"),
    ("training.validation_queries=-1", "training.validation_queries", "must be >= 0"),
    ("training.seed=-1", "training.seed", "must be >= 0"),
    ("model.embedding_dim=0", "model.embedding_dim", "must be >= 1"),
    ("model.modality_dropout=1", "model.modality_dropout", "must be < 1"),
    ("model.image_input_dropout=-0.1", "model.image_input_dropout", "must be >= 0"),
    ("model.projection_dropout=1.5", "model.projection_dropout", "must be < 1"),
    ("model.temperature=0", "model.temperature", "must be > 0"),
    ("model.num_hard_negatives=-1", "model.num_hard_negatives", "must be >= 0"),
    ("model.ranking_candidates=0", "model.ranking_candidates", "must be >= 1"),
    ("model.ranking_hidden_units=[16, 0]", r"model.ranking_hidden_units[1]", "must be >= 1"),
    ("model.ranking_interactions=[]", "model.ranking_interactions", "at least one"),
    ("model.ranking_interactions=[fused, colour]", r"model.ranking_interactions[1]",
     "'colour' is not one of"),
    ("model.loss_weights.alignment=-1", "model.loss_weights.alignment", "must be >= 0"),
    ("model.loss_weights.image_retrieval=-0.5", "model.loss_weights.image_retrieval",
     "must be >= 0"),
    ("towers.text.seq_length=1", "towers.text.seq_length", "must be >= 2"),
    ("towers.query.seq_length=1", "towers.query.seq_length", "must be >= 2"),
    ("towers.text.trainable=top_n", "towers.text.trainable_top_layers", "must be >= 1"),
    ("towers.text.trainable_top_layers=-1", "towers.text.trainable_top_layers", "must be >= 0"),
    ("towers.image.image_size=7", "towers.image.image_size", "must be >= 8"),
    ("towers.image.colour_histogram_bins=-1", "towers.image.colour_histogram_bins",
     "must be >= 0"),
    ("towers.image.colour_histogram_bins=17", "towers.image.colour_histogram_bins",
     "must be <= 16"),
    ("export.top_k=0", "export.top_k", "must be >= 1"),
    ("export.filters={gender: exact}", "export.filters.gender", "'exact' is not one of"),
    ("export.filters={'bad name': categorical}", "export.filters.bad name",
     "name must match"),
    ("export.hybrid.fusion_type=sum", "export.hybrid.fusion_type", "'sum' is not one of"),
    ("export.hybrid.candidates=0", "export.hybrid.candidates", "must be >= 1"),
    ("export.hybrid.rrf_k=-1", "export.hybrid.rrf_k", "must be >= 0"),
    ("export.hybrid.convex_weight=1.5", "export.hybrid.convex_weight", "must be <= 1"),
    ("data.synthetic.num_items=0", "data.synthetic.num_items", "must be >= 1"),
    ("data.synthetic.image_size=8", "data.synthetic.image_size", "must be >= 16"),
    ("data.synthetic.image_size=2048", "data.synthetic.image_size", "must be <= 1024"),
    ("data.synthetic.seed=-3", "data.synthetic.seed", "must be >= 0"),
    ("data.queries.seed=-1", "data.queries.seed", "must be >= 0"),
    ("data.queries.phrasings_per_attribute_set=0", "data.queries.phrasings_per_attribute_set",
     "must be >= 1"),
    ("data.queries.max_extra_attributes=4", "data.queries.max_extra_attributes", "must be <= 3"),
    ("data.queries.max_extra_attributes=-1", "data.queries.max_extra_attributes", "must be >= 0"),
    ("data.queries.heldout_phrasing_fraction=1", "data.queries.heldout_phrasing_fraction",
     "must be < 1"),
    ("data.queries.max_positives_per_query=0", "data.queries.max_positives_per_query",
     "must be >= 1"),
    ("data.splits.train=0.9", "data.splits", "must sum to 1, got 0.9 + 0.1 + 0.1 = 1.1"),
    ("data.splits={train: 0, validation: 0.5, test: 0.5}", "data.splits.train", "must be > 0"),
    ("data.splits={train: 1.5, validation: -0.5, test: 0}", "data.splits.train", "must be <= 1"),
    ("data.splits.seed=-1", "data.splits.seed", "must be >= 0"),
])
def test_out_of_range_values_are_errors_naming_the_key(override, key, words):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    message = str(caught.value)
    assert message.startswith(f"--set {override}: {key}"), message
    assert words in message, message


def test_a_cross_section_rule_is_checked_at_load_time():
    with pytest.raises(ConfigError, match=r"towers\.query\.seq_length must equal "
                                          r"towers\.text\.seq_length"):
        load_config(None, ["towers.text.trainable=full", "towers.query.seq_length=8"])
    config = load_config(None, ["towers.text.trainable=frozen", "towers.query.seq_length=8"])
    assert config.towers.query.seq_length == 8  # a frozen encoder can be loaded twice


def test_boundary_values_load():
    config = load_config(None, [
        "training.epochs=1", "training.batch_size=1", "training.steps_per_checkpoint=0",
        "model.modality_dropout=0", "model.projection_dropout=0.99", "model.num_hard_negatives=0",
        "model.ranking_hidden_units=[]", "model.loss_weights.ranking=0", "towers.query.seq_length=0",
        "towers.text.trainable=top_n", "towers.text.trainable_top_layers=1",
        "towers.image.image_size=8", "data.splits={train: 1, validation: 0, test: 0}",
        "data.queries.max_extra_attributes=3", "export.top_k=1"])
    assert (config.training.epochs, config.towers.image.image_size, config.export.top_k) == (1, 8, 1)
    assert config.data.splits.train == 1.0


# --------------------------------------------------------------------------- where errors came from


def test_an_error_from_an_override_names_the_override_not_the_file(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text("training: {epochs: 3}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["model.fusion=gated", "training.epochs=0"])
    assert str(caught.value) == "--set training.epochs=0: training.epochs must be >= 1, got 0"
    assert "base.yaml" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"^--set model\.nope=1: model\.nope: unknown key"):
        load_config(path, ["model.nope=1"])
    with pytest.raises(ConfigError, match=r"^--set training\.batch_size=big: training\.batch_size: "
                                          r"expected an integer"):
        load_config(path, ["training.batch_size=big"])


def test_an_error_from_the_file_names_the_file(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text("training: {epochs: 0}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["model.fusion=gated"])  # an unrelated override is not blamed
    assert str(caught.value) == f"config file {path}: training.epochs must be >= 1, got 0"
    assert load_config(path, ["training.epochs=2"]).training.epochs == 2  # an override can fix it


def test_an_override_that_breaks_a_section_rule_is_named(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text("data: {splits: {train: 0.8, validation: 0.1, test: 0.1}}\n")
    with pytest.raises(ConfigError, match=r"^--set data\.splits\.test=0\.3: data\.splits: "
                                          r"train \+ validation \+ test must sum to 1"):
        load_config(path, ["data.splits.test=0.3"])
    # setting two fractions one after the other is fine when the result sums to 1
    config = load_config(path, ["data.splits.train=0.7", "data.splits.test=0.2"])
    assert (config.data.splits.train, config.data.splits.test) == (0.7, 0.2)


# --------------------------------------------------------------------------- item features


BRAND = "{column: brand, kind: categorical, max_vocabulary: 50, embedding_dim: 8}"
PRICE = "{column: price, kind: numeric, transform: log1p}"


def test_item_features_load_from_a_yaml_list():
    config = load_config(None, [f"model.item_features=[{BRAND}, {PRICE}]",
                                "model.ranking_interactions=[fused, attributes]"])
    brand, price = config.model.item_features
    assert (brand.column, brand.kind, brand.max_vocabulary, brand.embedding_dim) == \
        ("brand", "categorical", 50, 8)
    assert (price.column, price.kind, price.transform) == ("price", "numeric", "log1p")
    assert config_from_dict(config_to_dict(config)) == config
    assert load_config(None).model.item_features == []  # the default: no attribute modality


@pytest.mark.parametrize("items, key, words", [
    ("[{column: brand, kind: colour}]", r"model.item_features[0].kind", "'colour' is not one of"),
    ("[{column: price, kind: numeric, transform: sqrt}]", r"model.item_features[0].transform",
     "'sqrt' is not one of"),
    ("[{column: brand, max_vocabulary: 0}]", r"model.item_features[0].max_vocabulary",
     "must be >= 1"),
    ("[{column: brand, embedding_dim: 0}]", r"model.item_features[0].embedding_dim",
     "must be >= 1"),
    ("[{column: tags, kind: multi_categorical, separator: ''}]",
     r"model.item_features[0].separator", "needs a separator"),
    ("[{column: ' '}]", r"model.item_features[0].column", "name the catalog column"),
    (f"[{BRAND}, {{column: brand}}]", r"model.item_features[1].column",
     "already model.item_features[0]"),
    ("[{column: brand, colour: red}]", r"model.item_features[0].colour", "unknown key"),
    # The label columns of the protocol (data.attributes) and their parents are the answer.
    ("[{column: article_type}]", r"model.item_features[0].column", "data.attributes.article_type"),
    (f"[{BRAND}, {{column: base_colour}}]", r"model.item_features[1].column",
     "data.attributes.base_colour"),
    ("[{column: master_category}]", r"model.item_features[0].column", "parent category"),
    ("[{column: sub_category}]", r"model.item_features[0].column", "parent category"),
])
def test_bad_item_features_are_errors_naming_the_key(items, key, words):
    override = f"model.item_features={items}"
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    message = str(caught.value)
    assert message.startswith(f"--set {override}: {key}"), message
    assert words in message, message


def test_a_renamed_label_column_is_refused_under_its_own_name_and_the_old_name_is_free():
    with pytest.raises(ConfigError, match=r"model\.item_features\[0\]\.column: 'colour' is "
                                          r"data\.attributes\.base_colour"):
        load_config(None, ["data.attributes.base_colour=colour", "model.item_features=[{column: colour}]"])
    config = load_config(None, ["data.attributes.base_colour=colour",
                                "model.item_features=[{column: base_colour}]"])
    assert config.model.item_features[0].column == "base_colour"
    # Season and year are not label columns: they may be item features.
    load_config(None, ["model.item_features=[{column: season}, {column: year, kind: numeric}]"])


def test_the_attributes_interaction_needs_item_features():
    with pytest.raises(ConfigError, match=r"model\.ranking_interactions\[1\]: attributes needs "
                                          r"model\.item_features"):
        load_config(None, ["model.ranking_interactions=[fused, attributes]"])


def test_every_item_feature_key_is_read_by_the_package():
    # model.item_features entries sit in a list, which the walk above does not enter; the
    # package reads each entry's keys off the entry, `feature.<key>`.
    reads, _ = _package_reads()
    unread = [item.name for item in dataclasses.fields(ItemFeatureConfig)
              if ("feature", item.name) not in reads]
    assert not unread, f"model.item_features keys no code reads: {', '.join(unread)}"
