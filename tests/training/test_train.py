"""`train(config, run_dir)` end to end on the tiny config, and `load_trained_model`.

Two variants: frozen towers whose outputs are cached (the default for real runs on a CPU)
and fully trainable towers (raw strings and images through BERT and the image net every
step). Each must leave a complete run directory, learn something, and reload bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.training.conftest import TinyRun, read_checkpoint
from tfmmsearch.config import load_config
from tfmmsearch.data.item_features import ITEM_FEATURES_FILE, ItemFeatureStats, attribute_matrix
from tfmmsearch.data.pipeline import read_image
from tfmmsearch.data.prepare import prepare_data
from tfmmsearch.data.queries import grade_matrix
from tfmmsearch.evaluation.metrics import retrieval_metrics
from tfmmsearch.model.build import (
    RUN_WEIGHTS,
    build_encoders,
    build_model,
    cached_inputs,
    load_trained_model,
)
from tfmmsearch.training.train import train, validation_queries

PROJECTOR_TENSOR = "embedding/.ATTRIBUTES/VARIABLE_VALUE"


# --------------------------------------------------------------------------- helpers


def split_set(config, split: str = "validation"):
    """A split's products (catalog order, as the run's projector writes them) and queries

    (for validation, the ones `train` scores each epoch)."""
    prepared = prepare_data(config, progress=False)
    wanted = set(prepared.splits[split])
    products = [p for p in prepared.catalog.products if p.product_id in wanted]
    queries = (validation_queries(prepared, config) if split == "validation"
               else prepared.queries[split])
    return products, queries


def item_embeddings(model, products) -> np.ndarray:
    """Item embeddings from raw titles, image files and item-feature values (the model owns its
    encoders, so this works whatever a run caches)."""
    batch = {"title": tf.constant([p.title for p in products]),
             "image_bytes": tf.constant([p.image_path.read_bytes() if p.image_path else b""
                                         for p in products])}
    if model.item_feature_columns:
        batch["attribute_values"] = tf.constant(
            attribute_matrix(products, model.item_feature_columns).tolist())
    return model.embed_items(batch)["embedding"].numpy()


def query_embeddings(model, texts: list[str]) -> np.ndarray:
    return model.embed_queries({"query": tf.constant(texts)}).numpy()


def split_ndcg(config, model, split: str = "validation") -> float:
    """NDCG@10 of retrieval from raw queries over a split's products, as in PROTOCOL."""
    products, queries = split_set(config, split)
    grades = grade_matrix(queries, products, config.data.attributes)
    scores = (query_embeddings(model, [q.text for q in queries])
              @ item_embeddings(model, products).T)
    return retrieval_metrics(scores, grades)["ndcg@10"]


def untrained_model(config):
    """A model of the run's architecture, seeded like the run, that has not trained."""
    tf.keras.utils.set_random_seed(config.training.seed)
    model = build_model(config)
    model.build_heads()
    return model


def assert_complete_run_dir(run: TinyRun) -> dict:
    run_dir, epochs = run.run_dir, run.config.training.epochs
    assert load_config(run_dir / "config.yaml") == run.config
    for epoch in range(1, epochs + 1):
        assert (run_dir / "checkpoints" / f"epoch-{epoch:03d}.index").is_file()
    assert (run_dir / (RUN_WEIGHTS + ".index")).is_file()
    assert list((run_dir / "backup").rglob("checkpoint")), "no BackupAndRestore state"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"]
    for key in ("loss", "retrieval_loss", "alignment_loss", "ranking_loss", "val_ndcg@10",
                "learning_rate", "text_weight", "image_weight"):
        assert len(history[key]) == epochs, key
        assert all(np.isfinite(history[key])), key
    assert 0.0 <= metrics["validation"]["val_ndcg@10"] <= 1.0
    assert metrics["validation"]["val_ndcg@10"] == pytest.approx(history["val_ndcg@10"][-1])
    assert metrics["train_pairs"] >= metrics["steps_per_epoch"] * run.config.training.batch_size
    assert metrics["history"] == run.result.history
    assert metrics["validation"] == run.result.validation
    return metrics


def train_complete_run(config, run_dir: Path) -> TinyRun:
    """Trains `config` into run_dir and checks the run directory is complete."""
    run = TinyRun(config, run_dir, train(config, run_dir, verbose=0))
    assert_complete_run_dir(run)
    return run


def assert_reload_matches_training(run: TinyRun, reloaded=None):
    """The projector holds item embeddings written by the in-memory trained model."""
    config, model = reloaded or load_trained_model(run.run_dir)
    assert config == run.config
    products, _ = split_set(config)
    projector = run.run_dir / "logs" / "projector"
    trained = read_checkpoint(tf.train.latest_checkpoint(str(projector)))[PROJECTOR_TENSOR]
    titles = (projector / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert titles == [p.title for p in products]
    reloaded = item_embeddings(model, products)
    np.testing.assert_allclose(reloaded, trained, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(reloaded, axis=1), 1.0, atol=1e-4)
    return config, model


# --------------------------------------------------------------------------- frozen + cached


@pytest.fixture(scope="module")
def frozen_reloaded(frozen_run):
    """(config, model) of the frozen run, rebuilt from its run directory."""
    return load_trained_model(frozen_run.run_dir)


def test_frozen_run_writes_a_complete_run_dir(frozen_run):
    metrics = assert_complete_run_dir(frozen_run)
    assert metrics["history"]["learning_rate"][0] > metrics["history"]["learning_rate"][-1]
    cache_dir = Path(frozen_run.config.data.work_dir) / "feature_cache"
    cached = {path.name.split("-")[0] for path in cache_dir.glob("*.npz")}
    assert {"titles", "images", "train_queries", "validation_queries"} <= cached


def test_frozen_run_learns(frozen_run, frozen_reloaded):
    history = frozen_run.result.history
    assert history["retrieval_loss"][-1] < history["retrieval_loss"][0]
    # Ranking quality, not just the loss, over the training split: the tiny run's 15
    # validation products are too few to tell two epochs from chance. Untrained models of
    # other seeds score within 10% of each other here; two epochs add about 40%.
    config = frozen_run.config
    untrained = split_ndcg(config, untrained_model(config), split="train")
    _, model = frozen_reloaded
    trained = split_ndcg(config, model, split="train")
    assert trained > 1.1 * untrained, (trained, untrained)


def test_frozen_run_reloads_with_the_same_embeddings_and_metrics(frozen_run, frozen_reloaded):
    config, model = assert_reload_matches_training(frozen_run, frozen_reloaded)
    # Scored from raw inputs, the reloaded model reproduces the run's validation NDCG.
    assert split_ndcg(config, model) == pytest.approx(
        frozen_run.result.validation["val_ndcg@10"], abs=1e-6)


def test_load_trained_model_without_weights_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="train first"):
        load_trained_model(tmp_path)


# --------------------------------------------------------------------------- trainable towers


@pytest.mark.slow
def test_trainable_towers_fine_tune_and_reload(tmp_path, tiny_config):
    config = tiny_config("towers.text.trainable=full", "towers.image.trainable=true",
                         "data.queries.max_positives_per_query=1")
    run = train_complete_run(config, tmp_path / "run")
    history = run.result.history
    assert history["retrieval_loss"][-1] < history["retrieval_loss"][0]

    config, model = assert_reload_matches_training(run)
    assert cached_inputs(config) == set()
    # The restored BERT and image net are the fine-tuned ones, not the hub modules' weights.
    fresh = build_encoders(config)
    products, _ = split_set(config)
    titles = tf.constant([p.title for p in products])
    assert np.abs(model.encoders.text(titles) - fresh.text(titles)).max() > 1e-4
    size = config.towers.image.image_size
    images = tf.stack([read_image(tf.constant(str(p.image_path or "")), size) for p in products])
    assert np.abs(model.encoders.image(images) - fresh.image(images)).max() > 1e-4


# --------------------------------------------------------------------------- lexical ranking head


def test_lexical_head_trains_on_word_coverage_and_reloads(tmp_path, tiny_config):
    # Training batches then carry query and title words (compute_loss reads them).
    config = tiny_config("model.ranking_lexical=true", "model.ranking_candidate_sampling=top_retrieved",
                         "training.epochs=1")
    run = train_complete_run(config, tmp_path / "run")
    assert np.isfinite(run.result.history["ranking_loss"]).all()
    _, model = load_trained_model(run.run_dir)
    assert model.ranking_head.lexical
    dim = config.model.embedding_dim
    vectors = [tf.fill([1, 2, dim], 0.1)] * 3
    query, mask = tf.fill([1, 1, dim], 0.1), tf.ones([1, 2, 2])
    scores = model.ranking_head(query, *vectors, mask, coverage=tf.constant([[0.0, 1.0]])).numpy()
    assert scores[0, 0] != pytest.approx(scores[0, 1], abs=1e-6)  # only the coverage differs


# --------------------------------------------------------------------------- item features


ITEM_FEATURES = ("model.item_features=[{column: brand, kind: categorical, max_vocabulary: 100, "
                 "embedding_dim: 4}, {column: price, kind: numeric, transform: log1p}]",
                 "model.ranking_interactions=[fused, text, image, attributes]")


def test_item_features_train_reload_and_export(tmp_path, tiny_config):
    from tfmmsearch.contract import ATTRIBUTES_FIELD, EXPORT_ITEM_FEATURES_FILE
    from tfmmsearch.exporting.export import embed_items, export

    config = tiny_config(*ITEM_FEATURES, "training.epochs=1")
    run = train_complete_run(config, tmp_path / "run")
    weights = run.result.history["attributes_weight"]
    assert len(weights) == 1 and 0.0 < weights[0] < 1.0
    assert np.isfinite(run.result.history["ranking_loss"]).all()
    # The vocabularies and statistics came from the catalog and are kept with the run.
    stats = ItemFeatureStats.read(run.run_dir / ITEM_FEATURES_FILE)
    brand, price = stats.features
    assert stats.columns == ("brand", "price") and len(brand.vocabulary) > 3
    assert price.present > 0.9 * (price.present + price.missing) and price.missing > 0
    assert 4.0 < price.mean < 9.0  # log1p of prices in the hundreds to thousands

    # Reloaded, the model embeds the validation items (with their brands and prices) exactly as
    # the trained one did (the run's projector).
    config, model = assert_reload_matches_training(run)
    assert model.item_feature_columns == ("brand", "price")

    products, _ = split_set(config)
    products = products[:12]
    version = export(run.run_dir, base_dir=tmp_path / "export" / "tiny", products=products)
    stored = json.loads((version / EXPORT_ITEM_FEATURES_FILE).read_text(encoding="utf-8"))
    assert stored["columns"] == ["brand", "price"]
    assert ItemFeatureStats.from_json(stored["statistics"]) == stats
    loaded = tf.saved_model.load(str(version))
    titles = tf.constant([p.title for p in products])
    images = tf.constant([p.image_path.read_bytes() if p.image_path else b"" for p in products])
    values = attribute_matrix(products, ["brand", "price"])
    embed = loaded.signatures["embed_item"]
    served = embed(title=titles, image=images, attributes=tf.constant(values.tolist()))
    expected = model.embed_items({"title": titles, "image_bytes": images,
                                  "attribute_values": tf.constant(values.tolist())})
    np.testing.assert_allclose(served["embedding"].numpy(), expected["embedding"].numpy(), atol=1e-5)
    np.testing.assert_allclose(served["modality_weights"].numpy(),
                               expected["modality_weights"].numpy(), atol=1e-5)
    assert (served["modality_weights"].numpy()[:, 2] > 0).all()
    unknown = embed(title=titles, image=images, attributes=tf.fill([len(products), 0], ""))
    plain = model.embed_items({"title": titles, "image_bytes": images})
    np.testing.assert_allclose(unknown["embedding"].numpy(), plain["embedding"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(unknown["modality_weights"].numpy()[:, 2], 0.0)
    # The index holds the items embedded with their attributes; re-indexing reads them too.
    np.testing.assert_allclose(loaded.index.embeddings.numpy(), expected["embedding"].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(loaded.index.attributes.numpy(), expected["attributes"].numpy(),
                               atol=1e-5)
    paths = [str(p.image_path or "") for p in products]
    again = embed_items(loaded.index_outputs, [p.title for p in products], paths,
                        attributes=values)
    np.testing.assert_allclose(again["embedding"], expected["embedding"].numpy(), atol=1e-5)
    np.testing.assert_allclose(again[ATTRIBUTES_FIELD], expected["attributes"].numpy(), atol=1e-5)

    # A warm start (from the run or from its export) keeps the source's vocabularies, whatever
    # the new run's catalog holds: its embeddings are rows of them.
    from tfmmsearch.model.build import run_item_features
    from tfmmsearch.model.warm_start import warm_start

    for index, source in enumerate((run.run_dir, version)):
        kept = run_item_features(config, tmp_path / f"round-{index}", products=products[:3],
                                 write=True, warm_start=source)
        assert kept == stats
        assert ItemFeatureStats.read(tmp_path / f"round-{index}" / ITEM_FEATURES_FILE) == stats
    assert run_item_features(config, None, products=products[:3]) != stats  # a fresh one differs
    fresh = build_model(config, item_features=stats)
    fresh.build_heads()
    warm_start(fresh, version)
    warmed = item_embeddings(fresh, products)
    np.testing.assert_allclose(warmed, expected["embedding"].numpy(), atol=1e-5)
