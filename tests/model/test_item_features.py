"""The attribute modality: encoder lookups and parsing, the tower's third modality and its mask,
the model's attribute inputs and losses."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.config import ItemFeatureConfig, ModelConfig
from tfmmsearch.data.item_features import NUMERIC_CLIP, compute_item_feature_stats, numeric_value
from tfmmsearch.data.schema import Product
from tfmmsearch.model.item_features import AttributeEncoder, encoder_features
from tfmmsearch.model.search_model import MultimodalSearchModel
from tfmmsearch.model.towers import build_item_tower

TEXT_DIM, IMAGE_DIM, QUERY_DIM, DIM = 6, 5, 4, 8
BRAND = ItemFeatureConfig("brand", "categorical", max_vocabulary=3, embedding_dim=4)
MATERIAL = ItemFeatureConfig("material", "multi_categorical", embedding_dim=3)
PRICE = ItemFeatureConfig("price", "numeric", transform="log1p")
CONFIGS = [BRAND, MATERIAL, PRICE]
CATALOG = [("Nike", "Cotton|Linen", "100"), ("Puma", "Cotton", "2000"), ("Nike", "Silk", ""),
           ("Adidas", "", "50"), ("Nike", "NA", "999"), ("Zara", "Linen", "NA"),
           ("Puma", "Wool", "10")]


def catalog_products():
    return [Product(f"p{i}", f"t{i}", None, {"brand": b, "material": m, "price": p})
            for i, (b, m, p) in enumerate(CATALOG)]


@pytest.fixture(scope="module")
def stats():
    return compute_item_feature_stats(catalog_products(), CONFIGS)


def encoder(stats) -> AttributeEncoder:
    layer = AttributeEncoder(encoder_features(stats, CONFIGS), name="attribute_encoder")
    layer(tf.constant([["", "", ""]]))  # builds the embeddings
    return layer


def slices(layer, vectors):
    """The encoder output cut into its per-column parts: brand (4 + flag), material (3 + flag),
    price (1 + flag)."""
    vectors = vectors.numpy()
    return {"brand": vectors[:, :4], "has_brand": vectors[:, 4],
            "material": vectors[:, 5:8], "has_material": vectors[:, 8],
            "price": vectors[:, 9], "has_price": vectors[:, 10]}


# --------------------------------------------------------------------------- the encoder


def test_categorical_lookup_embeds_the_vocabulary_and_one_bucket_for_other_values(stats):
    assert stats.features[0].vocabulary == ("Nike", "Puma", "Adidas")  # Zara is cut
    layer = encoder(stats)
    table = layer.embedding_layers[0].embeddings.numpy()  # row 0: out of vocabulary
    values = tf.constant([["Nike", "", ""], [" Puma ", "", ""], ["Adidas", "", ""],
                          ["Zara", "", ""], ["Reebok", "", ""], ["nike", "", ""],
                          ["NA", "", ""], ["", "", ""]])
    vectors, present = layer(values)
    parts = slices(layer, vectors)
    np.testing.assert_allclose(parts["brand"][:3], table[[1, 2, 3]])
    np.testing.assert_allclose(parts["brand"][3:6], table[[0, 0, 0]])  # case matters: nike is OOV
    np.testing.assert_array_equal(parts["brand"][6:], 0.0)  # missing: zeros, not the OOV bucket
    np.testing.assert_array_equal(parts["has_brand"], [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(present.numpy(), [True] * 6 + [False, False])
    assert vectors.shape == (8, layer.output_width) == (8, 11)


def test_multi_valued_cells_average_their_parts_embeddings(stats):
    layer = encoder(stats)
    vocabulary = stats.features[1].vocabulary
    table = layer.embedding_layers[1].embeddings.numpy()
    row = {value: table[index + 1] for index, value in enumerate(vocabulary)}
    values = tf.constant([["", "Cotton|Linen", ""], ["", " Silk | NA |Hemp", ""], ["", "|", ""],
                          ["", "Wool", ""]])
    parts = slices(layer, layer(values)[0])
    np.testing.assert_allclose(parts["material"][0], (row["Cotton"] + row["Linen"]) / 2, rtol=1e-6)
    # "NA" is left out, Hemp is out of vocabulary (row 0).
    np.testing.assert_allclose(parts["material"][1], (row["Silk"] + table[0]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(parts["material"][2], 0.0)
    np.testing.assert_allclose(parts["material"][3], row["Wool"], rtol=1e-6)
    np.testing.assert_array_equal(parts["has_material"], [1, 1, 0, 1])


def test_numeric_values_are_log_transformed_and_standardised_like_the_statistics(stats):
    price = stats.features[2]
    layer = encoder(stats)
    raw = ["100", " 2000 ", "", "1,299", "-4", "0", "1e12", "NA"]
    parts = slices(layer, layer(tf.constant([["", "", v] for v in raw]))[0])
    expected = []
    for value in raw:
        number = numeric_value(value, "log1p")
        expected.append(0.0 if number is None else
                        float(np.clip((number - price.mean) / price.std, -NUMERIC_CLIP, NUMERIC_CLIP)))
    np.testing.assert_allclose(parts["price"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(parts["has_price"], [1, 1, 0, 0, 0, 1, 1, 0])
    assert parts["price"][6] == pytest.approx(NUMERIC_CLIP)  # a 1e12 typo is clipped
    # Standardised over the catalog: its present prices have mean 0 and std 1.
    catalog = layer(tf.constant([["", "", p] for _, _, p in CATALOG]))[0].numpy()[:, 9]
    present = [numeric_value(p, "log1p") is not None for _, _, p in CATALOG]
    assert catalog[present].mean() == pytest.approx(0.0, abs=1e-5)
    assert catalog[present].std() == pytest.approx(1.0, abs=1e-4)


def test_an_empty_vocabulary_maps_every_value_to_the_bucket():
    items = [Product("a", "t", None, {"brand": ""}), Product("b", "t", None, {"brand": "NA"})]
    stats = compute_item_feature_stats(items, [BRAND])
    assert stats.features[0].vocabulary == ()
    layer = AttributeEncoder(encoder_features(stats, [BRAND]))
    vectors, present = layer(tf.constant([["Nike"], [""]]))
    np.testing.assert_allclose(vectors.numpy()[0, :4], layer.embedding_layers[0].embeddings.numpy()[0])
    np.testing.assert_array_equal(present.numpy(), [True, False])


# --------------------------------------------------------------------------- the tower


def tower_inputs(values, seed=0):
    rng = np.random.default_rng(seed)
    batch = len(values)
    return {"title_features": tf.constant(rng.normal(size=(batch, TEXT_DIM)), tf.float32),
            "image_features": tf.constant(rng.normal(size=(batch, IMAGE_DIM)), tf.float32),
            "has_title": tf.constant([True, True, False, True][:batch]),
            "has_image": tf.constant([True, False, True, True][:batch]),
            "attribute_values": tf.constant(values)}


def two_modality_copy(tower, config):
    """The two-modality tower with the three-modality tower's title/image weights."""
    plain = build_item_tower(TEXT_DIM, IMAGE_DIM, config)
    for name in ("text_projection", "image_projection"):
        plain.get_layer(name).set_weights(tower.get_layer(name).get_weights())
    source = tower.get_layer("fusion")
    target = plain.get_layer("fusion")
    if config.fusion == "attention":  # key, score and the first two modality biases
        weights = {v.name: v.numpy() for v in source.weights}
        target.set_weights([weights[v.name][:2] if v.name.endswith("modality_bias:0")
                            else weights[v.name] for v in target.weights])
    elif config.fusion == "gated":  # gate over [text; image] (the attribute rows see zeros)
        kernel, bias = source.gate.get_weights()
        target.gate.set_weights([kernel[:2 * DIM, :2], bias[:2]])
    else:  # concat: projection of [text; image]
        kernel, bias = source.project.get_weights()
        target.project.set_weights([kernel[:2 * DIM], bias])
    return plain


@pytest.mark.parametrize("fusion", ["attention", "gated", "concat"])
def test_absent_attributes_give_exactly_the_two_modality_result(stats, fusion):
    config = ModelConfig(embedding_dim=DIM, fusion=fusion, item_features=CONFIGS)
    tower = build_item_tower(TEXT_DIM, IMAGE_DIM, config, encoder_features(stats, CONFIGS))
    absent = [["", "NA", "n/a"], ["", "", ""], ["NA", "|", "1,299"], ["", "", ""]]
    out = tower(tower_inputs(absent), training=False)
    np.testing.assert_array_equal(out["mask"].numpy()[:, 2], 0.0)
    np.testing.assert_array_equal(out["modality_weights"].numpy()[:, 2], 0.0)

    plain = two_modality_copy(tower, config)
    inputs = tower_inputs(absent)
    inputs.pop("attribute_values")
    reference = plain(inputs, training=False)
    np.testing.assert_allclose(out["embedding"].numpy(), reference["embedding"].numpy(), atol=1e-6)
    np.testing.assert_allclose(out["modality_weights"].numpy(),
                               reference["modality_weights"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(reference["modality_weights"].numpy()[:, 2], 0.0)


@pytest.mark.parametrize("fusion", ["attention", "gated", "concat"])
def test_a_present_attribute_gets_weight_and_changes_the_fused_embedding(stats, fusion):
    config = ModelConfig(embedding_dim=DIM, fusion=fusion, item_features=CONFIGS)
    tower = build_item_tower(TEXT_DIM, IMAGE_DIM, config, encoder_features(stats, CONFIGS))
    absent = tower(tower_inputs([["", "", ""]] * 4), training=False)
    nike = tower(tower_inputs([["Nike", "", ""]] * 4), training=False)
    puma = tower(tower_inputs([["Puma", "", "100"]] * 4), training=False)
    np.testing.assert_array_equal(nike["mask"].numpy()[:, 2], 1.0)
    assert (nike["modality_weights"].numpy()[:, 2] > 0).all()
    np.testing.assert_allclose(nike["modality_weights"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(nike["embedding"].numpy() - absent["embedding"].numpy()).max(axis=1).min() > 1e-4
    assert np.abs(nike["embedding"].numpy() - puma["embedding"].numpy()).max(axis=1).min() > 1e-4
    assert np.abs(nike["attributes"].numpy() - puma["attributes"].numpy()).max() > 1e-4
    # The title and photo vectors do not depend on the attributes.
    np.testing.assert_allclose(nike["text"].numpy(), absent["text"].numpy())
    np.testing.assert_allclose(nike["image"].numpy(), puma["image"].numpy())


def test_modality_dropout_can_hide_the_attributes_but_never_everything(stats):
    config = ModelConfig(embedding_dim=DIM, modality_dropout=0.9, item_features=[BRAND])
    stats = compute_item_feature_stats(catalog_products(), [BRAND])
    tower = build_item_tower(TEXT_DIM, IMAGE_DIM, config, encoder_features(stats, [BRAND]))
    inputs = tower_inputs([["Nike"]] * 4)
    inputs = {key: tf.repeat(value, 500, axis=0) for key, value in inputs.items()}
    mask = tower(inputs, training=True)["mask"].numpy()
    assert mask.any(axis=1).all()
    hidden = 1 - mask[:, 2].mean()
    assert 0.2 < hidden < 0.45  # 0.9 x (one of three) where three are present, and so on


# --------------------------------------------------------------------------- the model


def model_batch(values, seed=0):
    rng = np.random.default_rng(seed)
    batch = len(values)
    return {"query_features": tf.constant(rng.normal(size=(batch, QUERY_DIM)), tf.float32),
            "title_features": tf.constant(rng.normal(size=(batch, TEXT_DIM)), tf.float32),
            "image_features": tf.constant(rng.normal(size=(batch, IMAGE_DIM)), tf.float32),
            "has_title": tf.ones([batch], tf.bool), "has_image": tf.ones([batch], tf.bool),
            "product_id": tf.constant([f"p{i}" for i in range(batch)]),
            "attribute_values": tf.constant(values)}


def make_model(stats, configs=CONFIGS, **loss_weights):
    config = ModelConfig(embedding_dim=DIM, ranking_candidates=4, item_features=list(configs),
                         ranking_interactions=["fused", "text", "image", "attributes"])
    for name, value in {"ranking": 0.0, "alignment": 0.0, **loss_weights}.items():
        setattr(config.loss_weights, name, value)
    tf.keras.utils.set_random_seed(0)
    return MultimodalSearchModel(config, TEXT_DIM, IMAGE_DIM, QUERY_DIM, item_features=stats)


VALUES = [list(row) for row in CATALOG] + [["", "", ""]]


def test_embed_items_without_attribute_values_is_all_missing(stats):
    model = make_model(stats)
    assert model.item_feature_columns == ("brand", "material", "price")
    batch = model_batch(VALUES)
    missing = dict(batch, attribute_values=tf.fill([len(VALUES), 3], ""))
    reference = model.embed_items(missing)["embedding"].numpy()
    for variant in ({k: v for k, v in batch.items() if k != "attribute_values"},
                    dict(batch, attribute_values=tf.fill([len(VALUES), 0], ""))):
        np.testing.assert_array_equal(model.embed_items(variant)["embedding"].numpy(), reference)
    with_values = model.embed_items(batch)
    assert np.abs(with_values["embedding"].numpy()[:-1] - reference[:-1]).max(axis=1).min() > 1e-4
    np.testing.assert_array_equal(with_values["mask"].numpy()[:, 2], [1] * len(CATALOG) + [0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="0 or 3 columns"):
        model.embed_items(dict(batch, attribute_values=tf.fill([len(VALUES), 2], "x")))


def test_a_model_without_item_features_masks_the_attributes_whatever_it_is_given():
    model = MultimodalSearchModel(ModelConfig(embedding_dim=DIM), TEXT_DIM, IMAGE_DIM, QUERY_DIM)
    out = model.embed_items(model_batch([["Nike", "x", "1"]] * 3))
    np.testing.assert_array_equal(out["mask"].numpy()[:, 2], 0.0)
    np.testing.assert_array_equal(out["modality_weights"].numpy()[:, 2], 0.0)
    np.testing.assert_array_equal(out["attributes"].numpy(), 0.0)
    assert "attributes_weight" not in {t.name for t in model.metrics}


def losses(model, features) -> dict:
    for tracker in model.metrics:
        tracker.reset_state()
    total = float(model.compute_loss(features, training=False))
    return {"total": total, **{t.name: float(t.result()) for t in model.metrics}}


def test_losses_read_the_attributes_and_log_their_weight(stats):
    model = make_model(stats)
    batch = model_batch(VALUES)
    result = losses(model, batch)
    assert result["attributes_weight"] > 0
    assert result["text_weight"] + result["image_weight"] + result["attributes_weight"] == \
        pytest.approx(1.0, rel=1e-5)
    other = dict(batch, attribute_values=tf.constant([["Zara", "Wool", "5"]] * len(VALUES)))
    assert losses(model, other)["retrieval_loss"] != pytest.approx(result["retrieval_loss"], rel=1e-5)


def test_single_modality_views_hide_the_attributes(stats):
    model = make_model(stats, image_retrieval=1.0)
    batch = model_batch(VALUES)
    result = losses(model, batch)
    # The photo-only view: no title, no attributes.
    photo_only = dict(batch, has_title=tf.zeros([len(VALUES)], tf.bool),
                      attribute_values=tf.fill([len(VALUES), 3], ""))
    assert result["image_retrieval_loss"] == pytest.approx(
        losses(make_model(stats), photo_only)["retrieval_loss"], rel=1e-5)


def test_the_ranking_loss_reads_each_hard_negatives_own_attributes(stats):
    model = make_model(stats, ranking=1.0)
    batch = model_batch(VALUES)
    size = len(VALUES)
    batch.update({"query_attributes": tf.fill([size, 4], -1), "item_attributes": tf.fill([size, 4], 0),
                  "positive_grade": tf.fill([size], 2), "has_negative": tf.ones([size], tf.bool)})
    for key in ("title_features", "image_features", "has_title", "has_image", "attribute_values"):
        batch[f"negative_{key}"] = tf.roll(batch[key], 1, axis=0)
    tf.random.set_seed(0)
    first = losses(model, batch)["ranking_loss"]
    tf.random.set_seed(0)
    again = losses(model, batch)["ranking_loss"]
    assert first == pytest.approx(again, rel=1e-6)  # the same candidates under the same seed
    changed = dict(batch, negative_attribute_values=tf.constant([["Zara", "Silk", "1"]] * size))
    tf.random.set_seed(0)
    assert losses(model, changed)["ranking_loss"] != pytest.approx(first, rel=1e-6)
