"""Building a search model from a config, and restoring a trained run's model.

Training, evaluation, export and the benchmarks all get their model here, so they never
import each other to build one. The model always owns its three encoders (title, image,
query); whether a batch carries cached frozen-encoder outputs instead of raw inputs is the
batch's choice (`cached_inputs` says which a run caches), not the model's.

A run directory's trained weights live at RUN_DIR/model/weights (`RUN_WEIGHTS`); a model with
item features (model.item_features) also needs the vocabularies and statistics training computed
from its catalog, RUN_DIR/item_features.json (`run_item_features`), which reloading reads back so
that reloaded and exported models read attribute values exactly as the trained one did.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import tensorflow as tf

from tfmmsearch.config import Config, load_config
from tfmmsearch.contract import EXPORT_ITEM_FEATURES_FILE, resolve_version_dir
from tfmmsearch.data.item_features import (
    ITEM_FEATURES_FILE,
    NO_ITEM_FEATURES,
    ItemFeatureStats,
    compute_item_feature_stats,
)
from tfmmsearch.model.encoders import build_image_encoder, build_text_encoder
from tfmmsearch.model.search_model import Encoders, MultimodalSearchModel

RUN_WEIGHTS = "model/weights"  # relative to a run directory
RUN_CONFIG = "config.yaml"


def frozen_encoders(config: Config) -> set[str]:
    """Which encoders do not train ("text", "image", "query"): their outputs can be cached."""
    towers = config.towers
    frozen = set()
    if towers.text.trainable == "frozen":
        # The query encoder is the text encoder, or one built with the text tower's settings.
        frozen |= {"text", "query"}
    if not towers.image.trainable:
        frozen.add("image")
    return frozen


# Model input carrying each encoder's cached output.
CACHED_INPUT = {"text": "title_features", "image": "image_features", "query": "query_features"}


def cached_inputs(config: Config) -> set[str]:
    """Model inputs a run feeds from cached encoder outputs (frozen encoders, caching on)."""
    if not config.training.cache_frozen_features:
        return set()
    return {CACHED_INPUT[name] for name in frozen_encoders(config)}


def build_encoders(config: Config) -> Encoders:
    """The run's TF-Hub encoders; the query encoder is the text encoder unless configured apart."""
    towers = config.towers
    cache_dir = towers.hub_cache_dir or None
    text = build_text_encoder(towers.text, cache_dir)
    query_seq = towers.query.seq_length or towers.text.seq_length
    # (A trainable shared encoder with another query seq_length is refused at config load.)
    if towers.query.share_text_encoder and query_seq == towers.text.seq_length:
        query = text
    else:
        query_config = dataclasses.replace(towers.text, seq_length=query_seq)
        query = build_text_encoder(query_config, cache_dir, name="query_encoder",
                                   preprocessor=towers.query.preprocessor or None,
                                   encoder=towers.query.encoder or None)
    image = build_image_encoder(towers.image, cache_dir)
    return Encoders(text=text, image=image, query=query)


def encoder_dims(encoders: Encoders, image_size: int) -> tuple[int, int, int]:
    """Output widths of the (text, image, query) encoders, measured with one eager call."""
    text_dim = int(encoders.text(tf.constant(["x"])).shape[-1])
    image_dim = int(encoders.image(tf.zeros([1, image_size, image_size, 3])).shape[-1])
    query_dim = int(encoders.query(tf.constant(["x"])).shape[-1])
    return text_dim, image_dim, query_dim


def build_model(config: Config, encoders: Encoders | None = None,
                dims: tuple[int, int, int] | None = None,
                item_features: ItemFeatureStats | None = None) -> MultimodalSearchModel:
    """The search model over `encoders` (built from the config when not given).

    `dims` (text, image, query encoder widths) lets a caller under a distribution strategy
    measure them outside its scope: an eager TF-Hub call in a multi-worker cross-replica
    context fails. `item_features`: the vocabularies and statistics of config.model.item_features
    (`run_item_features`); required when the config declares item features.
    """
    if item_features is None:
        if config.model.item_features:
            raise ValueError("model.item_features needs the catalog's vocabularies and "
                             "statistics: pass item_features (model.build.run_item_features)")
        item_features = NO_ITEM_FEATURES
    encoders = encoders or build_encoders(config)
    dims = dims or encoder_dims(encoders, config.towers.image.image_size)
    return MultimodalSearchModel(config.model, *dims, encoders=encoders,
                                 trainable_encoders=_trainable(config),
                                 image_size=config.towers.image.image_size,
                                 item_features=item_features, name="multimodal_search")


def run_item_features(config: Config, run_dir: str | Path | None = None, products=None,
                      write: bool = False, warm_start: str | Path | None = None
                      ) -> ItemFeatureStats:
    """The item-feature statistics of a run: read from RUN_DIR/item_features.json when it is
    there, else those of the `warm_start` source (its embeddings are rows of its vocabularies:
    a vocabulary recomputed from a changed catalog would misread them), else computed from
    `products` (the catalog's). With `write` they are written to the run directory.

    A run without item features has none (and no file). Statistics that do not belong to the
    config (another column, kind or option) are a ValueError.
    """
    configs = config.model.item_features
    if not configs:
        return NO_ITEM_FEATURES
    path = Path(run_dir) / ITEM_FEATURES_FILE if run_dir is not None else None
    if path is not None and path.is_file():
        stats = ItemFeatureStats.read(path)
        stats.check_config(configs, str(path))
        return stats
    stats = source_item_features(warm_start) if warm_start is not None else None
    if stats is not None:
        stats.check_config(configs, f"warm-start source {warm_start}")
    elif products is None:
        raise FileNotFoundError(f"{path or 'no run directory'}: the run's item-feature "
                                "statistics are missing (training writes them)")
    else:
        stats = compute_item_feature_stats(products, configs)
    if write and path is not None:
        stats.write(path)
    return stats


def source_item_features(source: str | Path) -> ItemFeatureStats | None:
    """The item-feature statistics of a run directory (RUN_DIR/item_features.json) or an export
    (the "statistics" of its contract.EXPORT_ITEM_FEATURES_FILE); None where it has none."""
    source = Path(source)
    if (source / RUN_CONFIG).is_file():
        path = source / ITEM_FEATURES_FILE
        return ItemFeatureStats.read(path) if path.is_file() else None
    try:
        path = resolve_version_dir(source) / EXPORT_ITEM_FEATURES_FILE
    except FileNotFoundError:
        return None
    if not path.is_file():
        return None
    statistics = json.loads(path.read_text(encoding="utf-8")).get("statistics")
    return ItemFeatureStats.from_json(statistics, str(path)) if statistics else None


def _trainable(config: Config) -> set[str]:
    return {"text", "image", "query"} - frozen_encoders(config)


def load_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {RUN_CONFIG}); "
                                f"train one first: tfmmsearch train --out {run_dir}")
    return load_config(path)


def load_trained_model(run_dir: str | Path, config: Config | None = None
                       ) -> tuple[Config, MultimodalSearchModel]:
    """Rebuilds a run's model from its config.yaml and restores the final weights."""
    run_dir = Path(run_dir)
    weights = run_dir / RUN_WEIGHTS
    if not Path(str(weights) + ".index").is_file():
        raise FileNotFoundError(f"{run_dir} has no trained weights ({weights}.index); "
                                f"train first: tfmmsearch train --out {run_dir}")
    config = config or load_run_config(run_dir)
    model = build_model(config, item_features=run_item_features(config, run_dir))
    model.build_heads()
    status = model.load_weights(str(weights))
    status.assert_existing_objects_matched()  # every variable of the model must come back
    status.expect_partial()  # optimizer slots and metric states are not needed
    return config, model
