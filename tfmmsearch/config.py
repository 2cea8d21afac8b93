"""Typed experiment configs, loaded from YAML with dotted command-line overrides.

Configs are data: YAML is read with `yaml.safe_load` and poured into dataclasses whose
field types and value ranges are checked, so a typo'd key, a string where a number belongs or
`training.epochs: 0` fails at load time with the dotted key in the message, not an hour into
training. Every field is read by some code (tests/test_config.py checks): a key that does
nothing is worse than no key.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tfmmsearch.contract import (
    DEFAULT_MODEL_NAME,
    FILTER_FIELD_PATTERN,
    FILTER_KINDS,
    SEARCH_LOG_FIELDS,
)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key.

    `key` is the dotted key at fault where known, and `keys` every key a rule between several
    keys read, so `load_config` can tell whether a `--set` override or the file supplied the
    value.
    """

    def __init__(self, message: str, key: str | None = None, also: tuple[str, ...] = ()):
        super().__init__(message)
        self.key = key
        self.keys = ((key,) if key else ()) + tuple(also)


# --------------------------------------------------------------------------- range checks


def _number_problem(value: float, low: float | None, high: float | None, low_open: bool,
                    high_open: bool) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if low is not None and (value <= low if low_open else value < low):
        return f"must be {'>' if low_open else '>='} {low:g}"
    if high is not None and (value >= high if high_open else value > high):
        return f"must be {'<' if high_open else '<='} {high:g}"
    return None


def _check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                 *, low_open: bool = False, high_open: bool = False, why: str = "",
                 also: tuple[str, ...] = ()) -> None:
    """ConfigError naming `key` unless low <= value <= high (open ends with *_open); `also`
    names the other keys a bound depends on."""
    problem = _number_problem(value, low, high, low_open, high_open)
    if problem is not None:
        reason = f" ({why})" if why else ""
        raise ConfigError(f"{key} {problem}, got {value!r}{reason}", key, also)


def _check_fraction(key: str, value: float) -> None:
    """Dropouts and held-out shares: in [0, 1), since 1 would drop or hold out everything."""
    _check_range(key, value, 0.0, 1.0, high_open=True)


def _check_split_shares(key: str, shares, why: str) -> None:
    """train / validation / test shares in [0, 1] summing to 1, with some training share."""
    for name in ("train", "validation", "test"):
        _check_range(f"{key}.{name}", getattr(shares, name), 0.0, 1.0)
    _check_range(f"{key}.train", shares.train, 0.0, low_open=True, why=why)
    total = math.fsum((shares.train, shares.validation, shares.test))
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"{key}: train + validation + test must sum to 1, got "
                          f"{shares.train:g} + {shares.validation:g} + {shares.test:g} = "
                          f"{total:g}", key)


# --------------------------------------------------------------------------- sections


@dataclass
class SyntheticCatalogConfig:
    """The embedded procedurally drawn catalog used when no catalog_dir is given."""

    num_items: int = 2000
    seed: int = 0
    image_size: int = 64

    def __post_init__(self) -> None:
        _check_range("data.synthetic.num_items", self.num_items, 1)
        _check_range("data.synthetic.seed", self.seed, 0)
        _check_range("data.synthetic.image_size", self.image_size, 16, 1024,
                     why="the generator draws 16 to 1024 px photos")


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

    def __post_init__(self) -> None:
        _check_range("data.queries.seed", self.seed, 0)
        _check_range("data.queries.phrasings_per_attribute_set", self.phrasings_per_attribute_set,
                     1)
        extra_roles = len(dataclasses.fields(AttributeColumnsConfig)) - 1  # all but article_type
        _check_range("data.queries.max_extra_attributes", self.max_extra_attributes, 0,
                     extra_roles, why=f"a query adds at most the {extra_roles} other attributes")
        _check_fraction("data.queries.heldout_phrasing_fraction", self.heldout_phrasing_fraction)
        _check_range("data.queries.max_positives_per_query", self.max_positives_per_query, 1)


@dataclass
class SplitsConfig:
    """Product-level split fractions (no product in two splits)."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _check_split_shares("data.splits", self, "training needs products")
        _check_range("data.splits.seed", self.seed, 0)


@dataclass
class TimeSplitConfig:
    """Day-level shares of the search log: train on the first days, validate and test on the
    last ones (no session in two splits)."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        _check_split_shares("data.search_log.time_split", self, "training needs days")


@dataclass
class SearchLogConfig:
    """The shop's search log as training signal (data/search_log.py has the format).

    Purchases and clicks are positives with their weights; each click is also weighted by the
    inverse of the examination propensity of the rank it was shown at (estimated from the
    training days, `position_bias`), clipped at `max_propensity_weight`. Products shown
    above a click and skipped are the ranking head's hard negatives (`skipped_as_negatives`).
    """

    path: str = ""  # .jsonl or .csv; empty: no log (with the synthetic catalog, see below)
    fields: dict[str, str] = field(default_factory=dict)  # the log's field name -> ours
    # With the synthetic catalog (data.catalog_dir empty) and no path: simulate a log of this
    # many sessions over synthetic_days days next to the catalog (0: none).
    synthetic_sessions: int = 0
    synthetic_days: int = 30
    time_split: TimeSplitConfig = field(default_factory=TimeSplitConfig)
    # Train on part of the training days only (UTC dates, inclusive; empty: open): a feedback
    # round warm-started from an earlier model trains on the days that model has not seen.
    # Validation and test days stay those of the whole log's time split.
    train_from: str = ""
    train_until: str = ""
    purchase_weight: float = 3.0
    click_weight: float = 1.0
    position_bias: str = "regression_em"  # regression_em | em | none
    max_propensity_weight: float = 10.0
    skipped_as_negatives: bool = True

    def __post_init__(self) -> None:
        for name in ("train_from", "train_until"):
            value = getattr(self, name)
            if value:
                try:
                    datetime.date.fromisoformat(value)
                except ValueError:
                    raise ConfigError(f"data.search_log.{name}: {value!r} is not a date like "
                                      f"2026-10-31", f"data.search_log.{name}") from None
        if self.train_from and self.train_until and self.train_from > self.train_until:
            raise ConfigError(f"data.search_log: train_from {self.train_from} is after "
                              f"train_until {self.train_until}", "data.search_log.train_from",
                              ("data.search_log.train_until",))
        _check_range("data.search_log.synthetic_sessions", self.synthetic_sessions, 0)
        _check_range("data.search_log.synthetic_days", self.synthetic_days, 1)
        _check_range("data.search_log.purchase_weight", self.purchase_weight, 0.0)
        _check_range("data.search_log.click_weight", self.click_weight, 0.0)
        if self.purchase_weight == 0 and self.click_weight == 0:
            raise ConfigError("data.search_log: purchase_weight and click_weight are both 0, so "
                              "the log teaches nothing", "data.search_log.purchase_weight",
                              ("data.search_log.click_weight",))
        _check_choice("data.search_log.position_bias", self.position_bias,
                      ("regression_em", "em", "none"))
        _check_range("data.search_log.max_propensity_weight", self.max_propensity_weight, 1.0,
                     why="a weight cap below 1 would down-weight the top rank")
        for theirs, ours in self.fields.items():
            _check_choice(f"data.search_log.fields.{theirs}", ours, SEARCH_LOG_FIELDS)


@dataclass
class SourcesConfig:
    """Where training pairs come from and each source's share of the training loss."""

    attributes: float = 1.0  # attribute queries generated from data.attributes columns
    search_log: float = 0.0  # purchases and clicks of data.search_log's training days

    def __post_init__(self) -> None:
        for name in ("attributes", "search_log"):
            _check_range(f"data.sources.{name}", getattr(self, name), 0.0)
        if self.attributes == 0 and self.search_log == 0:
            raise ConfigError("data.sources: give attributes or search_log a weight above 0",
                              "data.sources")


@dataclass
class DataConfig:
    """Where the catalog lives and how its columns are used."""

    catalog_dir: str = ""  # empty: generate the synthetic catalog into work_dir
    work_dir: str = "artifacts/data"
    on_bad_row: str = "error"  # error | skip
    attributes: AttributeColumnsConfig = field(default_factory=AttributeColumnsConfig)
    synthetic: SyntheticCatalogConfig = field(default_factory=SyntheticCatalogConfig)
    queries: QueriesConfig = field(default_factory=QueriesConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    search_log: SearchLogConfig = field(default_factory=SearchLogConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)

    def __post_init__(self) -> None:
        _check_choice("data.on_bad_row", self.on_bad_row, ("error", "skip"))
        has_log = bool(self.search_log.path) or (not self.catalog_dir
                                                 and self.search_log.synthetic_sessions > 0)
        if self.sources.search_log > 0 and not has_log:
            raise ConfigError("data.sources.search_log > 0 needs a log: set data.search_log.path"
                              " (or, with the synthetic catalog, data.search_log.synthetic_sessions)",
                              "data.sources.search_log",
                              ("data.search_log.path", "data.search_log.synthetic_sessions"))


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
        _check_range("towers.text.seq_length", self.seq_length, 2, why="[CLS] and [SEP]")
        _check_range("towers.text.trainable_top_layers", self.trainable_top_layers,
                     1 if self.trainable == "top_n" else 0,
                     why="towers.text.trainable is top_n" if self.trainable == "top_n" else "",
                     also=("towers.text.trainable",))


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

    def __post_init__(self) -> None:
        _check_range("towers.image.image_size", self.image_size, 8)
        _check_range("towers.image.colour_histogram_bins", self.colour_histogram_bins, 0, 16,
                     why="bins^3 features: 16 already gives 4096")


@dataclass
class QueryTowerConfig:
    """The query tower shares the text tower's BERT, or loads its own."""

    share_text_encoder: bool = True
    encoder: str = ""
    preprocessor: str = ""
    seq_length: int = 0  # 0: the text tower's; queries are short, and padding costs BERT time

    def __post_init__(self) -> None:
        if self.seq_length != 0:
            _check_range("towers.query.seq_length", self.seq_length, 2,
                         why="[CLS] and [SEP]; 0 means the text tower's")


@dataclass
class TowersConfig:
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    query: QueryTowerConfig = field(default_factory=QueryTowerConfig)
    hub_cache_dir: str = ""  # empty: $TFMMSEARCH_HUB_CACHE or ~/.cache/tfmmsearch/hub

    def __post_init__(self) -> None:
        query_seq = self.query.seq_length or self.text.seq_length
        if (self.query.share_text_encoder and query_seq != self.text.seq_length
                and self.text.trainable != "frozen"):
            raise ConfigError("towers.query.seq_length must equal towers.text.seq_length (or be "
                              "0) when the query tower shares a trainable text encoder",
                              "towers.query.seq_length",
                              ("towers.query.share_text_encoder", "towers.text.seq_length",
                               "towers.text.trainable"))


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

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            _check_range(f"model.loss_weights.{item.name}", getattr(self, item.name), 0.0,
                         why="a negative weight would train the model to fail that task")


ITEM_FEATURE_KINDS = ("categorical", "multi_categorical", "numeric")
NUMERIC_TRANSFORMS = ("none", "log1p")
# Columns the label columns (data.attributes) nest in, in Myntra's category hierarchy
# (master_category > sub_category > article_type): an item tower reading them would read the
# answer as surely as one reading article_type itself (PROTOCOL.md), so they are refused too.
LABEL_PARENT_COLUMNS = ("master_category", "sub_category")


@dataclass
class ItemFeatureConfig:
    """One catalog column as an item feature (an entry of model.item_features).

    kind: categorical - the value is looked up in a vocabulary of the catalog's `max_vocabulary`
          most frequent values and embedded (`embedding_dim`); other values share one
          out-of-vocabulary embedding;
          multi_categorical - the value is split on `separator` ("Cotton|Linen"), each part
          looked up as above, the parts' embeddings averaged;
          numeric - the value is parsed as a number (contract.NUMBER_PATTERN), transformed
          (`transform`: log1p for prices and counts, or none; log1p treats negatives as missing)
          and standardised with the catalog's mean and std.
    Missing values (contract.MISSING_ATTRIBUTE_VALUES, unparseable numbers) are masked, not
    guessed. Vocabularies and statistics are data: computed from the catalog's products when
    training starts and stored in the run directory (tfmmsearch/data/item_features.py).
    Keys that do not apply to the kind are ignored.
    """

    column: str = ""
    kind: str = "categorical"  # categorical | multi_categorical | numeric
    max_vocabulary: int = 1000  # categorical kinds: most frequent values kept (+1 OOV bucket)
    embedding_dim: int = 16  # categorical kinds: width of each value's embedding
    separator: str = "|"  # multi_categorical: what separates the values in the column
    transform: str = "none"  # numeric: none | log1p, applied before standardising

    def check(self, key: str) -> None:
        """ConfigErrors under `key` (the entry's dotted key, model.item_features[i])."""
        if not self.column.strip():
            raise ConfigError(f"{key}.column: name the catalog column", f"{key}.column")
        _check_choice(f"{key}.kind", self.kind, ITEM_FEATURE_KINDS)
        _check_range(f"{key}.max_vocabulary", self.max_vocabulary, 1)
        _check_range(f"{key}.embedding_dim", self.embedding_dim, 1)
        _check_choice(f"{key}.transform", self.transform, NUMERIC_TRANSFORMS)
        if self.kind == "multi_categorical" and not self.separator:
            raise ConfigError(f"{key}.separator: a multi_categorical column needs a separator",
                              f"{key}.separator", (f"{key}.kind",))


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
    # item vectors the head multiplies element-wise with the query: fused, text, image, and
    # attributes (needs item_features)
    ranking_interactions: list[str] = field(default_factory=lambda: ["fused", "text", "image"])
    # the head also reads how many of the query's words the title spells out (model/lexical.py)
    ranking_lexical: bool = False
    loss_weights: LossWeightsConfig = field(default_factory=LossWeightsConfig)
    # Catalog columns read as the item tower's third modality, "attributes" (ItemFeatureConfig):
    # one more weight in the fusion, masked for items with none of them, and ranking-head
    # inputs. Empty: no attribute modality (its mask and weight columns are always 0).
    item_features: list[ItemFeatureConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_choice("model.fusion", self.fusion, ("attention", "concat", "gated"))
        _check_choice("model.ranking_candidate_sampling", self.ranking_candidate_sampling,
                      ("uniform", "top_retrieved"))
        _check_range("model.embedding_dim", self.embedding_dim, 1)
        for name in ("modality_dropout", "image_input_dropout", "projection_dropout"):
            _check_fraction(f"model.{name}", getattr(self, name))
        _check_range("model.temperature", self.temperature, 0.0, low_open=True)
        _check_range("model.num_hard_negatives", self.num_hard_negatives, 0)
        _check_range("model.ranking_candidates", self.ranking_candidates, 1)
        for index, units in enumerate(self.ranking_hidden_units):
            _check_range(f"model.ranking_hidden_units[{index}]", units, 1)
        if not self.ranking_interactions:
            raise ConfigError("model.ranking_interactions: name at least one of fused, text, "
                              "image, attributes", "model.ranking_interactions")
        for index, name in enumerate(self.ranking_interactions):
            _check_choice(f"model.ranking_interactions[{index}]", name,
                          ("fused", "text", "image", "attributes"))
            if name == "attributes" and not self.item_features:
                raise ConfigError(f"model.ranking_interactions[{index}]: attributes needs "
                                  "model.item_features (no column is an item feature)",
                                  f"model.ranking_interactions[{index}]",
                                  ("model.item_features",))
        seen: dict[str, int] = {}
        for index, feature in enumerate(self.item_features):
            key = f"model.item_features[{index}]"
            feature.check(key)
            if feature.column in seen:
                raise ConfigError(f"{key}.column: {feature.column!r} is already "
                                  f"model.item_features[{seen[feature.column]}]",
                                  f"{key}.column")
            seen[feature.column] = index


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
    # memory: every item's inputs as in-graph tables (small catalogs); tfds: items streamed
    # from the prepared TFDS train split, frozen features from TFRecord shards beside it
    item_source: str = "memory"
    mixed_precision: bool = False
    xla: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice(
            "training.strategy", self.strategy, ("default", "mirrored", "multi_worker_mirrored")
        )
        _check_choice("training.item_source", self.item_source, ("memory", "tfds"))
        _check_range("training.batch_size", self.batch_size, 1)
        _check_range("training.epochs", self.epochs, 1)
        _check_range("training.learning_rate", self.learning_rate, 0.0, low_open=True)
        _check_range("training.steps_per_checkpoint", self.steps_per_checkpoint, 0)
        _check_range("training.early_stopping_patience", self.early_stopping_patience, 0)
        _check_range("training.validation_queries", self.validation_queries, 0)
        _check_range("training.seed", self.seed, 0)


FUSIONS = ("dense", "rrf", "convex")


@dataclass
class HybridConfig:
    """How the exported `search` gathers the ranking head's candidates (exporting/fusion.py).

    dense - the `candidates` nearest items by embedding only;
    rrf - reciprocal rank fusion of the dense and the in-graph BM25 lists (each item scores
          sum of 1 / (rrf_k + rank) over the lists that hold it; 60 is Vespa's, OpenSearch's
          and Weaviate's default);
    convex - convex_weight * dense similarity + (1 - convex_weight) * BM25 / the query's best
             BM25 score.
    The export stores these in variables, so a benchmark can switch them on a loaded model.
    """

    fusion_type: str = "dense"
    candidates: int = 100  # each list's length, and the length of the head's short list
    rrf_k: float = 60.0
    convex_weight: float = 0.5

    def __post_init__(self) -> None:
        _check_choice("export.hybrid.fusion_type", self.fusion_type, FUSIONS)
        _check_range("export.hybrid.candidates", self.candidates, 1)
        _check_range("export.hybrid.rrf_k", self.rrf_k, 0.0)
        _check_range("export.hybrid.convex_weight", self.convex_weight, 0.0, 1.0)


INDEX_TYPES = ("exact", "ivf")


@dataclass
class IndexConfig:
    """How the export's dense index scores the catalog (exporting/ivf_index.py).

    exact - every item, float32 (best below about 100k items);
    ivf - an inverted file: k-means `lists` (0: about sqrt(N), chosen at index time), a query
          probes its `nprobe` nearest lists (a variable of the export; the `retrieve_embedding`
          signature takes it per request) and re-scores the best exactly in float32.
    Centroids are learned when a catalog is indexed whole and kept through upserts; the index
    log says when the lists have drifted enough to rebuild them (`tfmmsearch index
    --rebuild-lists`).
    """

    type: str = "exact"
    lists: int = 0
    nprobe: int = 16
    kmeans_iterations: int = 10

    def __post_init__(self) -> None:
        _check_choice("export.index.type", self.type, INDEX_TYPES)
        _check_range("export.index.lists", self.lists, 0)
        _check_range("export.index.nprobe", self.nprobe, 1)
        _check_range("export.index.kmeans_iterations", self.kmeans_iterations, 1)


@dataclass
class ExportConfig:
    model_name: str = DEFAULT_MODEL_NAME
    base_dir: str = "export"
    top_k: int = 100
    # Catalog columns `search_filtered` can filter on, each categorical (exact values) or
    # numeric (ranges): {gender: categorical, price: numeric}. Stored in the index, kept
    # through re-indexing and updates (exporting/filters.py has the syntax).
    filters: dict[str, str] = field(default_factory=dict)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    index: IndexConfig = field(default_factory=IndexConfig)

    def __post_init__(self) -> None:
        _check_range("export.top_k", self.top_k, 1)
        for column, kind in self.filters.items():
            _check_choice(f"export.filters.{column}", kind, FILTER_KINDS)
            if not re.fullmatch(FILTER_FIELD_PATTERN, column):
                raise ConfigError(f"export.filters.{column}: a filterable column's name must "
                                  f"match {FILTER_FIELD_PATTERN} to be written in a filter",
                                  f"export.filters.{column}")


@dataclass
class Config:
    """One experiment: everything needed to reproduce a run."""

    name: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    towers: TowersConfig = field(default_factory=TowersConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        labels = {getattr(self.data.attributes, item.name): item.name
                  for item in dataclasses.fields(self.data.attributes)}
        for index, feature in enumerate(self.model.item_features):
            key = f"model.item_features[{index}].column"
            if feature.column in labels:
                role = labels[feature.column]
                raise ConfigError(f"{key}: {feature.column!r} is data.attributes.{role}, a "
                                  "column that defines queries and relevance labels; an item "
                                  "feature reading it would read the answer", key,
                                  (f"data.attributes.{role}",))
            if feature.column in LABEL_PARENT_COLUMNS:
                raise ConfigError(f"{key}: {feature.column!r} is a parent category of the label "
                                  "columns (data.attributes); an item feature reading it would "
                                  "read the answer", key)
        if (self.data.sources.search_log > 0 and self.data.search_log.skipped_as_negatives
                and self.training.item_source == "tfds"):
            raise ConfigError("data.search_log.skipped_as_negatives needs training.item_source: "
                              "memory (a streamed item cannot carry another item's features); "
                              "set one of them", "data.search_log.skipped_as_negatives",
                              ("training.item_source", "data.sources.search_log"))


# --------------------------------------------------------------------------- loading


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}", key)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Checks `value` against the annotation `hint`, building nested dataclasses."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}", key)
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
        raise ConfigError("; ".join(errors), key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}", key)
        (item_hint,) = typing.get_args(hint)
        return [_coerce(f"{key}[{i}]", item_hint, item) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}", key)
        _, value_hint = typing.get_args(hint)
        return {str(k): _coerce(f"{key}.{k}", value_hint, v) for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}", key)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}", key)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}", key)
        return value
    if hint is str:
        if isinstance(value, datetime.date):  # YAML reads 2026-10-31 as a date
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}", key)
        return value
    raise ConfigError(f"{key}: unsupported config type {hint!r}", key)


# Keys that once existed but that no code read; old config files (and the config.yaml of old
# runs) get told what happened rather than a bare "unknown key".
REMOVED_KEYS = {
    "data.image_size": "the image tower's input size is towers.image.image_size",
    "data.shuffle_buffer": "training shuffles over all its pairs",
    "data.shuffle_seed": "training.seed seeds the shuffle",
    "data.item_feature_columns": "item features other than title and image are not used yet",
    "data.label_columns": "labels come from data.attributes",
    "data.ignored_columns": "columns outside data.attributes are kept as attributes and unused",
}


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names and dotted in REMOVED_KEYS:
            raise ConfigError(f"{dotted}: no longer a config key ({REMOVED_KEYS[dotted]}); "
                              "delete it", dotted)
        if key not in names:
            raise ConfigError(f"{dotted}: unknown key (known: {', '.join(sorted(names))})", dotted)
        kwargs[key] = _coerce(dotted, hints[key], value)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as error:
        raise ConfigError(f"{prefix or cls.__name__}: {error}", prefix or None) from error


def config_from_dict(values: dict | None) -> Config:
    """Builds a Config from plain data (the parsed YAML), validating every key."""
    return _build(Config, values or {})


def config_to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Splits `a.b.c=value`; the value is parsed as a YAML scalar/list (safe_load)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. training.batch_size=64")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text}: cannot parse value {raw!r}: {error}") from error
    return key.split("."), value


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Returns a copy of the raw config mapping with dotted overrides applied."""
    import copy

    result = copy.deepcopy(values)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {'.'.join(path[:depth + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return result


def _override_at_fault(keys: tuple[str, ...], overrides: list[str]) -> str | None:
    """The last override that set one of `keys`, a section holding it, or a key inside it (a
    section rule such as the split sum), else None: the file (or the defaults) supplied it."""
    for text in reversed(overrides):
        set_key = text.split("=", 1)[0].strip()
        for key in keys:
            if (key == set_key or key.startswith((set_key + ".", set_key + "["))
                    or set_key.startswith(key + ".")):
                return text
    return None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Loads a YAML config file (or the defaults) and applies `--set` style overrides.

    An error says where the bad value came from: `--set training.epochs=0: training.epochs must
    be >= 1, got 0` when an override set it, `config file c.yaml: ...` when the file did.
    """
    overrides = list(overrides or [])
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
    values = apply_overrides(values, overrides)
    try:
        return config_from_dict(values)
    except ConfigError as error:
        override = _override_at_fault(error.keys, overrides)
        if override is not None:
            where = f"--set {override}: "
        else:
            where = f"config file {path}: " if path is not None else ""
        raise ConfigError(f"{where}{error}", error.key, error.keys[1:]) from None


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
