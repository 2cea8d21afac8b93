"""The pairs a run trains on: attribute queries, the search log, or both, mixed by share.

Attribute pairs come from the training split's products only (the protocol's held-out
products stay unseen). Search-log pairs come from the log's training days and may name any
product of the catalog, as a shop's log does: a product's clicks teach the model whichever
product split it falls in (benchmarks say so where it matters). Click weights correct for
position bias with propensities estimated on the training days only (never on the days the
model is tested on); the curve is written to the run directory and to TensorBoard.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from tfmmsearch.config import Config
from tfmmsearch.data.log_pairs import CLICK_GRADE, PURCHASE_GRADE, log_pairs
from tfmmsearch.data.position_bias import PositionBias, estimate_position_bias
from tfmmsearch.data.prepare import PreparedData
from tfmmsearch.data.schema import Product
from tfmmsearch.training.examples import (
    AttributeIds,
    TrainingExamples,
    build_examples,
    log_examples,
    mix_examples,
)

logger = logging.getLogger(__name__)

POSITION_BIAS_FILE = "position_bias.json"


@dataclass
class TrainingSet:
    """A run's examples, the products they index into, and the log's propensity curve."""

    examples: TrainingExamples
    products: list[Product]
    position_bias: PositionBias | None = None


def attribute_ids_for(config: Config, products: list[Product]) -> AttributeIds:
    """Catalog-wide attribute ids, or ids that read no column when attributes are no source."""
    if config.data.sources.attributes > 0:
        return AttributeIds.from_products(products, config.data.attributes)
    return AttributeIds.unread()


def estimate_log_position_bias(config: Config, prepared: PreparedData,
                               progress: bool = False) -> PositionBias | None:
    """Propensities from the log's training days (None when the config turns them off)."""
    method = config.data.search_log.position_bias
    if method == "none":
        return None
    if method == "em":
        return estimate_position_bias(prepared.search_log.train, progress=progress)
    from tfmmsearch.data.pair_features import lexical_pair_features

    pair_features = lexical_pair_features(
        {p.product_id: p.title for p in prepared.catalog.products})
    return estimate_position_bias(prepared.search_log.train, progress=progress,
                                  pair_features=pair_features)


def training_set(config: Config, prepared: PreparedData, run_dir: Path | None = None,
                 write: bool = True) -> TrainingSet:
    """The configured sources' examples; with a log, its propensities go to `run_dir`."""
    products = prepared.catalog.products
    sources = config.data.sources
    train_ids = set(prepared.splits["train"])
    attribute_ids = attribute_ids_for(config, products)
    parts: list[tuple[TrainingExamples, float]] = []
    if sources.attributes > 0:
        train_products = [p for p in products if p.product_id in train_ids]
        parts.append((build_examples(prepared.queries["train"], train_products,
                                     config.data.attributes,
                                     max_per_query=config.data.queries.max_positives_per_query,
                                     seed=config.training.seed, attribute_ids=attribute_ids),
                      sources.attributes))
    bias = None
    if sources.search_log > 0:
        log = config.data.search_log
        bias = estimate_log_position_bias(config, prepared)
        pairs = log_pairs(prepared.search_log.train, purchase_weight=log.purchase_weight,
                          click_weight=log.click_weight, position_bias=bias,
                          max_propensity_weight=log.max_propensity_weight)
        parts.append((log_examples(pairs, products, config.data.attributes, attribute_ids,
                                   seed=config.training.seed,
                                   with_negatives=log.skipped_as_negatives), sources.search_log))
        logger.info("search log: %d training pairs from %d sessions of the training days "
                    "(%d purchases, %d clicks)", len(pairs), len(prepared.search_log.train),
                    sum(p.grade == PURCHASE_GRADE for p in pairs),
                    sum(p.grade == CLICK_GRADE for p in pairs))
        if bias is not None and run_dir is not None and write:
            write_position_bias(bias, run_dir, log.max_propensity_weight)
    if sources.search_log == 0:  # attribute pairs only: index the training split as before
        products = [p for p in products if p.product_id in train_ids]
        return TrainingSet(parts[0][0], products, bias)
    return TrainingSet(mix_examples(parts, products, config.data.attributes, attribute_ids),
                       products, bias)


def write_position_bias(bias: PositionBias, run_dir: Path, clip: float) -> None:
    """position_bias.json, and the curve in TensorBoard (scalars by rank, a table as text)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / POSITION_BIAS_FILE).write_text(json.dumps(bias.to_dict(), indent=2))
    writer = tf.summary.create_file_writer(str(run_dir / "logs" / "position_bias"))
    with writer.as_default():
        for rank, (propensity, weight) in enumerate(
                zip(bias.propensities, bias.weights(range(1, bias.max_rank + 1), clip)), start=1):
            tf.summary.scalar("position_bias/propensity", float(propensity), step=rank)
            tf.summary.scalar("position_bias/click_weight", float(weight), step=rank)
        tf.summary.text("position_bias/table", bias.table(clip), step=0)
    writer.close()
    logger.info("position bias (%s, %d ranks, converged: %s) written to %s and TensorBoard",
                bias.method, bias.max_rank, bias.converged,
                run_dir / POSITION_BIAS_FILE)
