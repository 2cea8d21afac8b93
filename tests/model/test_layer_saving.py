"""Every layer and model of tfmmsearch.model survives get_config/from_config and save/reload.

Each fusion (attention, concat, gated), each ranking-head variant (with attributes too), both
towers (with and without projection dropout, the item tower with item features) and the
encoder layers go through the round trips of
tests/harness.py, which compare configs, weight layouts and inference outputs.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from tests.harness import (
    assert_config_round_trip,
    assert_outputs_close,
    assert_saving_round_trip,
    wrap_layer,
)
from tfmmsearch.config import ImageTowerConfig, ItemFeatureConfig, ModelConfig
from tfmmsearch.data.item_features import compute_item_feature_stats
from tfmmsearch.data.schema import Product
from tfmmsearch.hub.registry import resolve_handle
from tfmmsearch.model.encoders import ColourHistogram, TopLayersKerasLayer, build_image_encoder
from tfmmsearch.model.fusion import (
    AttentionFusion,
    ConcatFusion,
    GatedFusion,
    ModalityDropout,
    make_fusion,
)
from tfmmsearch.model.item_features import encoder_features
from tfmmsearch.model.ranking import RankingHead
from tfmmsearch.model.retrieval import GlobalBatchRetrieval
from tfmmsearch.model.towers import build_item_tower, build_query_tower

DIM, BATCH = 8, 4
FUSIONS = ("attention", "concat", "gated")


def _normal(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape), tf.float32)


def _unit(*shape, seed=0):
    return tf.math.l2_normalize(_normal(*shape, seed=seed), axis=-1)


# Row 2 has no image, row 3 no title: the mask must reach the rebuilt layer intact.
MASK = tf.constant([[True, True], [True, True], [True, False], [False, True]])


# --------------------------------------------------------------------------- fusion

def _fusion_inputs():
    return {"text": _unit(BATCH, DIM, seed=1), "image": _unit(BATCH, DIM, seed=2), "mask": MASK}


def _apply_fusion(layer, x):
    return layer(([x["text"], x["image"]], x["mask"]))


@pytest.mark.parametrize("kind", FUSIONS)
def test_fusion_config_round_trip(kind):
    x = _fusion_inputs()
    layer = make_fusion(kind, DIM)
    assert_config_round_trip(layer, (([x["text"], x["image"]], x["mask"]),))


@pytest.mark.parametrize("kind", FUSIONS)
def test_fusion_saving_round_trip(kind, tmp_path):
    x = _fusion_inputs()
    model = wrap_layer(make_fusion(kind, DIM), x, _apply_fusion)
    assert_saving_round_trip(model, x, tmp_path)


def test_fusion_options_survive_the_config():
    assert AttentionFusion.from_config(AttentionFusion(attention_units=5).get_config()).attention_units == 5
    assert ConcatFusion.from_config(ConcatFusion(7).get_config()).output_dim == 7
    assert isinstance(make_fusion("gated", DIM), GatedFusion)


def test_modality_dropout_round_trips(tmp_path):
    layer = ModalityDropout(0.5, seed=3, name="modality_dropout")
    clone = assert_config_round_trip(layer, (MASK,))
    assert (clone.rate, clone.seed) == (0.5, 3)
    model = wrap_layer(layer, {"mask": MASK}, lambda lyr, x: lyr(x["mask"]))
    assert_saving_round_trip(model, {"mask": MASK}, tmp_path)


# --------------------------------------------------------------------------- ranking head

HEAD_VARIANTS = [pytest.param(interactions, lexical,
                              id=f"{'+'.join(interactions)}-{'lexical' if lexical else 'plain'}")
                 for interactions in (["fused", "text", "image"], ["fused"], ["text"], ["image"],
                                      ["fused", "text"])
                 for lexical in (False, True)]


def _head_inputs():
    return {"query": _unit(BATCH, DIM, seed=3), "fused": _unit(BATCH, DIM, seed=4),
            "text": _unit(BATCH, DIM, seed=5), "image": _unit(BATCH, DIM, seed=6),
            "mask": tf.cast(MASK, tf.float32),
            "coverage": tf.constant([1.0, 0.5, 0.0, 0.25])}


def _head(interactions, lexical):
    return RankingHead(hidden_units=(6, 4), cross_rank=3, interactions=interactions,
                       lexical=lexical, name="ranking_head")


def _apply_head(layer, x):
    return layer(x["query"], x["fused"], x["text"], x["image"], x["mask"], coverage=x["coverage"])


@pytest.mark.parametrize("interactions,lexical", HEAD_VARIANTS)
def test_ranking_head_config_round_trip(interactions, lexical):
    x = _head_inputs()
    clone = assert_config_round_trip(
        _head(interactions, lexical), (x["query"], x["fused"], x["text"], x["image"], x["mask"]),
        {"coverage": x["coverage"]})
    assert (clone.interactions, clone.lexical, clone.hidden_units, clone.cross_rank) == \
        ([n for n in RankingHead.INTERACTIONS if n in interactions], lexical, [6, 4], 3)


@pytest.mark.parametrize("interactions,lexical", HEAD_VARIANTS)
def test_ranking_head_saving_round_trip(interactions, lexical, tmp_path):
    x = _head_inputs()
    assert_saving_round_trip(wrap_layer(_head(interactions, lexical), x, _apply_head), x, tmp_path)


def _attribute_head():
    return RankingHead(hidden_units=(6, 4), cross_rank=3, interactions=["fused", "attributes"],
                       lexical=True, attributes=True, name="ranking_head")


def _head_inputs_with_attributes():
    mask = tf.concat([tf.cast(MASK, tf.float32), tf.constant([[1.0], [0.0], [1.0], [1.0]])], -1)
    return {**_head_inputs(), "attributes": _unit(BATCH, DIM, seed=12), "mask": mask}


def test_ranking_head_with_attributes_round_trips(tmp_path):
    x = _head_inputs_with_attributes()
    clone = assert_config_round_trip(
        _attribute_head(), (x["query"], x["fused"], x["text"], x["image"], x["mask"]),
        {"coverage": x["coverage"], "attributes": x["attributes"]})
    assert (clone.attributes, clone.interactions) == (True, ["fused", "attributes"])
    model = wrap_layer(_attribute_head(), x, lambda layer, v: layer(
        v["query"], v["fused"], v["text"], v["image"], v["mask"], coverage=v["coverage"],
        attributes=v["attributes"]))
    assert_saving_round_trip(model, x, tmp_path)


# --------------------------------------------------------------------------- towers

def _tower_config(fusion="attention", projection_dropout=0.0):
    return ModelConfig(embedding_dim=DIM, fusion=fusion, projection_dropout=projection_dropout)


def _item_inputs():
    return {"title_features": _normal(BATCH, 12, seed=7), "image_features": _normal(BATCH, 10, seed=8),
            "has_title": MASK[:, 0], "has_image": MASK[:, 1]}


TOWER_VARIANTS = [(fusion, dropout) for fusion in FUSIONS for dropout in (0.0, 0.3)]


@pytest.mark.parametrize("fusion,dropout", TOWER_VARIANTS)
def test_item_tower_config_round_trip(fusion, dropout):
    tower = build_item_tower(12, 10, _tower_config(fusion, dropout))
    clone = assert_config_round_trip(tower, (_item_inputs(),))
    assert [layer.name for layer in clone.layers] == [layer.name for layer in tower.layers]


@pytest.mark.parametrize("fusion,dropout", TOWER_VARIANTS)
def test_item_tower_saving_round_trip(fusion, dropout, tmp_path):
    tower = build_item_tower(12, 10, _tower_config(fusion, dropout))
    assert_saving_round_trip(tower, _item_inputs(), tmp_path)


ITEM_FEATURES = [ItemFeatureConfig("brand", "categorical", max_vocabulary=2, embedding_dim=3),
                 ItemFeatureConfig("material", "multi_categorical", embedding_dim=2),
                 ItemFeatureConfig("price", "numeric", transform="log1p")]


def _attribute_features():
    products = [Product(str(i), "t", None, {"brand": b, "material": m, "price": p})
                for i, (b, m, p) in enumerate([("Nike", "a|b", "10"), ("Puma", "b", ""),
                                               ("Nike", "", "99"), ("Zara", "c", "5")])]
    return encoder_features(compute_item_feature_stats(products, ITEM_FEATURES), ITEM_FEATURES)


def _item_inputs_with_attributes():
    return {**_item_inputs(), "attribute_values": tf.constant(
        [["Nike", "a|c", "12"], ["", "", ""], ["Zara", "NA", "1,299"], ["Puma", "b", "7"]])}


@pytest.mark.parametrize("fusion", FUSIONS)
def test_item_tower_with_item_features_round_trips(fusion, tmp_path):
    config = ModelConfig(embedding_dim=DIM, fusion=fusion, item_features=ITEM_FEATURES)
    tower = build_item_tower(12, 10, config, _attribute_features())
    inputs = _item_inputs_with_attributes()
    clone = assert_config_round_trip(tower, (inputs,))
    encoder = clone.get_layer("attribute_encoder")
    assert encoder.features == tower.get_layer("attribute_encoder").features
    assert encoder.columns == ["brand", "material", "price"]
    assert_saving_round_trip(tower, inputs, tmp_path)
    # And by checkpoint, as training runs restore it.
    tower.save_weights(str(tmp_path / "ckpt"))
    fresh = build_item_tower(12, 10, config, _attribute_features())
    fresh.load_weights(str(tmp_path / "ckpt")).assert_existing_objects_matched()
    assert_outputs_close(tower(inputs, training=False), fresh(inputs, training=False))


@pytest.mark.parametrize("dropout", (0.0, 0.3))
def test_query_tower_round_trips(dropout, tmp_path):
    tower = build_query_tower(12, _tower_config(projection_dropout=dropout))
    inputs = {"query_features": _normal(BATCH, 12, seed=9)}
    assert_config_round_trip(tower, (inputs,))
    assert_saving_round_trip(tower, inputs, tmp_path)


def test_item_tower_weights_restore_by_checkpoint(tmp_path):
    # What training runs do: save_weights of one tower, load_weights into a fresh build.
    config = _tower_config("gated", 0.3)
    tower = build_item_tower(12, 10, config)
    tower.save_weights(str(tmp_path / "ckpt"))
    fresh = build_item_tower(12, 10, config)
    fresh.load_weights(str(tmp_path / "ckpt")).assert_existing_objects_matched()
    assert_outputs_close(tower(_item_inputs(), training=False), fresh(_item_inputs(), training=False))


# --------------------------------------------------------------------------- encoders

def _images():
    pixels = np.ones((2, 32, 32, 3), np.float32)
    pixels[0, 8:24, 8:24] = [0.9, 0.1, 0.1]
    pixels[1, 4:20, 10:30] = [0.1, 0.2, 0.8]
    return tf.constant(pixels)


def test_colour_histogram_round_trips(tmp_path):
    layer = ColourHistogram(bins=3, background=0.8, name="colour_histogram")
    clone = assert_config_round_trip(layer, (_images(),))
    assert (clone.bins, clone.background, clone.trainable) == (3, 0.8, False)
    model = wrap_layer(layer, {"image": _images()}, lambda lyr, x: lyr(x["image"]))
    assert_saving_round_trip(model, {"image": _images()}, tmp_path)


def test_image_encoder_with_colour_histogram_saves(tiny_hub_cache, tmp_path):
    encoder = build_image_encoder(ImageTowerConfig(handle="tiny-image", image_size=32,
                                                   colour_histogram_bins=2), tiny_hub_cache)
    # hub.KerasLayer itself is not registered with Keras (TF-Hub's documented custom_objects).
    assert_saving_round_trip(encoder, _images(), tmp_path, custom_objects={"KerasLayer": hub.KerasLayer})


def _bert_inputs(seq_length=6):
    ids = np.array([[2, 10, 11, 12, 3, 0], [2, 13, 3, 0, 0, 0]], np.int32)[:, :seq_length]
    return {"input_word_ids": tf.constant(ids), "input_mask": tf.constant((ids > 0).astype(np.int32)),
            "input_type_ids": tf.zeros_like(tf.constant(ids))}


def _trainable_names(layer):
    return sorted(v.name for v in layer.trainable_weights)


def test_top_layers_keras_layer_config_round_trip(tiny_hub_cache):
    handle = resolve_handle("tiny-bert-encoder", tiny_hub_cache)
    layer = TopLayersKerasLayer(handle, top_layers=1, name="bert")
    clone = assert_config_round_trip(layer, (_bert_inputs(),), atol=1e-5)
    assert clone.top_layers == 1 and clone.trainable
    # Which variables train is what top_layers is for: the rebuilt layer must agree.
    assert _trainable_names(clone) == _trainable_names(layer)
    assert len(layer.trainable_weights) < len(layer.weights)


def test_top_layers_keras_layer_saving_round_trip(tiny_hub_cache, tmp_path):
    handle = resolve_handle("tiny-bert-encoder", tiny_hub_cache)
    inputs = _bert_inputs()
    model = wrap_layer(TopLayersKerasLayer(handle, top_layers=1, name="bert"), inputs)
    assert_saving_round_trip(model, inputs, tmp_path, atol=1e-5)


# --------------------------------------------------------------------------- retrieval loss

def test_global_batch_retrieval_config_round_trip():
    layer = GlobalBatchRetrieval(remove_accidental_hits=False, logq_correction=False,
                                 num_hard_negatives=2, name="retrieval")
    ids = tf.constant(["a", "b", "c", "a"])
    args = (_unit(BATCH, DIM, seed=10), _unit(BATCH, DIM, seed=11), ids, tf.constant(0.1))
    clone = assert_config_round_trip(layer, args,
                                     custom_objects={"GlobalBatchRetrieval": GlobalBatchRetrieval})
    assert (clone.remove_accidental_hits, clone.logq_correction) == (False, False)
