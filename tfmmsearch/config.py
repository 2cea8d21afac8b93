"""Typed experiment configs, loaded from YAML with dotted command-line overrides.

Configs are data: YAML is read with `yaml.safe_load` and poured into dataclasses whose
field types are checked, so a typo'd key or a string where a number belongs fails at load
time with the dotted key in the message, not an hour into training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


# --------------------------------------------------------------------------- sections


@dataclass
class SyntheticCatalogConfig:
    """The embedded procedurally drawn catalog used when no catalog_dir is given."""

    num_items: int = 2000
    seed: int = 0
    image_size: int = 64


@dataclass
class AttributeColumnsConfig:
    """Which catalog columns define attribute queries and grades (PROTOCOL.md)."""

    article_type: str = "article_type"
    gender: str = "gender"
    base_colour: str = "base_colour"
    usage: str = "usage"


@dataclass
class QueriesConfig:
    """Attribute-query generation: phrasings per attribute set, held-out phrasings."""

    seed: int = 0
    phrasings_per_attribute_set: int = 4
    max_extra_attributes: int = 3
    heldout_phrasing_fraction: float = 0.2
    max_positives_per_query: int = 32  # training pairs sampled per query (broad queries have 1000s)


@dataclass
class SplitsConfig:
    """Product-level split fractions (no product in two splits)."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: int = 0


@dataclass
class DataConfig:
    """Where the catalog lives and how its columns are used."""

    catalog_dir: str = ""  # empty: generate the synthetic catalog into work_dir
    work_dir: str = "artifacts/data"
    on_bad_row: str = "error"  # error | skip
    item_feature_columns: list[str] = field(default_factory=list)
    label_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    attributes: AttributeColumnsConfig = field(default_factory=AttributeColumnsConfig)
    synthetic: SyntheticCatalogConfig = field(default_factory=SyntheticCatalogConfig)
    queries: QueriesConfig = field(default_factory=QueriesConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    image_size: int = 224
    shuffle_buffer: int = 2048
    shuffle_seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("data.on_bad_row", self.on_bad_row, ("error", "skip"))


@dataclass
class TextTowerConfig:
    """TF-Hub BERT preprocessor + encoder handles (URL or local directory)."""

    preprocessor: str = "tiny-bert-preprocessor"
    encoder: str = "tiny-bert-encoder"
    seq_length: int = 32
    pooling: str = "mean"  # mean | pooled
    trainable: str = "frozen"  # frozen | full | top_n
    trainable_top_layers: int = 0

    def __post_init__(self) -> None:
        _check_choice("towers.text.pooling", self.pooling, ("mean", "pooled"))
        _check_choice("towers.text.trainable", self.trainable, ("frozen", "full", "top_n"))


@dataclass
class ImageTowerConfig:
    """TF-Hub image feature-vector handle; input is RGB in [0, 1]."""

    handle: str = "tiny-image"
    image_size: int = 64
    trainable: bool = False
    # >0: also a colour histogram of the photo's foreground (bins per RGB channel, bins^3
    # features) next to the module's features; CNN features trained for object classes carry
    # colour weakly, and shoppers name colours.
    colour_histogram_bins: int = 0


@dataclass
class QueryTowerConfig:
    """The query tower shares the text tower's BERT, or loads its own."""

    share_text_encoder: bool = True
    encoder: str = ""
    preprocessor: str = ""
    seq_length: int = 0  # 0: the text tower's; queries are short, and padding costs BERT time


@dataclass
class TowersConfig:
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    query: QueryTowerConfig = field(default_factory=QueryTowerConfig)
    hub_cache_dir: str = ""  # empty: $TFMMSEARCH_HUB_CACHE or ~/.cache/tfmmsearch/hub


@dataclass
class LossWeightsConfig:
    retrieval: float = 1.0
    alignment: float = 0.1
    ranking: float = 0.5
    # Retrieval of each item seen through one modality only (its image vector, its title
    # vector): with modality dropout only some items train the photo-only path per step;
    # these terms train it on every item (items lacking the modality use their fused vector).
    image_retrieval: float = 0.0
    text_retrieval: float = 0.0


@dataclass
class ModelConfig:
    embedding_dim: int = 64
    fusion: str = "attention"  # attention | concat | gated
    modality_dropout: float = 0.2
    image_input_dropout: float = 0.1
    # Dropout between each projection's hidden and output layer: with frozen towers the
    # projections can memorise the training catalog (retrieval loss -> 0.07 on Myntra).
    projection_dropout: float = 0.0
    temperature: float = 0.05
    learn_temperature: bool = True
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    num_hard_negatives: int = 0  # >0: keep only the hardest in-batch negatives in the softmax
    ranking_candidates: int = 64  # in-batch items the ranking head scores per query
    # uniform: the query's positive + uniformly drawn in-batch items; top_retrieved: the
    # in-batch items retrieval ranks highest (what the head re-ranks at serving time)
    ranking_candidate_sampling: str = "uniform"
    ranking_hidden_units: list[int] = field(default_factory=lambda: [64, 32])
    # item vectors the head multiplies element-wise with the query: fused, text, image
    ranking_interactions: list[str] = field(default_factory=lambda: ["fused", "text", "image"])
    # the head also reads how many of the query's words the title spells out (model/lexical.py)
    ranking_lexical: bool = False
    loss_weights: LossWeightsConfig = field(default_factory=LossWeightsConfig)

    def __post_init__(self) -> None:
        _check_choice("model.fusion", self.fusion, ("attention", "concat", "gated"))
        _check_choice("model.ranking_candidate_sampling", self.ranking_candidate_sampling,
                      ("uniform", "top_retrieved"))


@dataclass
class TrainingConfig:
    strategy: str = "default"  # default | mirrored | multi_worker_mirrored
    batch_size: int = 64
    epochs: int = 3
    learning_rate: float = 1e-3
    steps_per_checkpoint: int = 0  # 0: checkpoint once per epoch only
    early_stopping_patience: int = 0  # 0: off
    validation_queries: int = 1000  # validation queries sampled for per-epoch NDCG (0: all)
    cache_frozen_features: bool = True
    mixed_precision: bool = False
    xla: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice(
            "training.strategy", self.strategy, ("default", "mirrored", "multi_worker_mirrored")
        )


@dataclass
class ExportConfig:
    model_name: str = "tfmmsearch"
    base_dir: str = "export"
    top_k: int = 100


@dataclass
class Config:
    """One experiment: everything needed to reproduce a run."""

    name: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    towers: TowersConfig = field(default_factory=TowersConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


# --------------------------------------------------------------------------- loading


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Checks `value` against the annotation `hint`, building nested dataclasses."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(key, option, value)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        (item_hint,) = typing.get_args(hint)
        return [_coerce(f"{key}[{i}]", item_hint, item) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        _, value_hint = typing.get_args(hint)
        return {str(k): _coerce(f"{key}.{k}", value_hint, v) for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {hint!r}")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{dotted}: unknown key (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(dotted, hints[key], value)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as error:
        raise ConfigError(f"{prefix or cls.__name__}: {error}") from error


def config_from_dict(values: dict | None) -> Config:
    """Builds a Config from plain data (the parsed YAML), validating every key."""
    return _build(Config, values or {})


def config_to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Splits `a.b.c=value`; the value is parsed as a YAML scalar/list (safe_load)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. training.batch_size=64")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {error}") from error
    return key.split("."), value


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Returns a copy of the raw config mapping with dotted overrides applied."""
    import copy

    result = copy.deepcopy(values)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return result


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Loads a YAML config file (or the defaults) and applies `--set` style overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path}: invalid YAML: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping")
    values = apply_overrides(values, overrides or [])
    try:
        return config_from_dict(values)
    except ConfigError as error:
        where = f"config file {path}: " if path is not None else ""
        raise ConfigError(f"{where}{error}") from None


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
