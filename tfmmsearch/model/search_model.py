"""The multi-task TFRS model: retrieval + cross-modal alignment + fused ranking.

A batch holds (query, positive item) pairs. Text and image enter either as raw inputs run
through the encoders (trainable towers) or as features cached from frozen encoders; the
model takes whichever the batch carries. A model with item features (config
model.item_features) also reads each item's raw attribute strings, `attribute_values` [B, C]
(a third modality; absent values are masked). The loss is the config-weighted sum of
  retrieval  - in-batch softmax over the global batch (learnable temperature, logQ
               correction, accidental-hit removal, other relevant items masked),
  alignment  - title<->image contrastive on items with both modalities,
  image / text retrieval (optional) - the same retrieval loss against each item's
               image-only / title-only vector, so the single-modality paths train every step,
  ranking    - listwise loss of the ranking head over retrieved in-batch candidates,
               labelled with graded relevance from attributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfmmsearch.config import ModelConfig
from tfmmsearch.contract import MODALITIES, has_text_tensor
from tfmmsearch.data.pipeline import decode_images
from tfmmsearch.model.alignment import alignment_loss
from tfmmsearch.data.item_features import NO_ITEM_FEATURES, ItemFeatureStats
from tfmmsearch.model.grades import attribute_grades
from tfmmsearch.model.item_features import (
    ATTRIBUTE_INPUT,
    complete_attribute_values,
    encoder_features,
)
from tfmmsearch.model.lexical import query_coverage
from tfmmsearch.model.ranking import (
    RankingHead,
    gains_as_targets,
    listwise_ranking_task,
    select_candidates,
    top_retrieved_candidates,
)
from tfmmsearch.model.retrieval import GlobalBatchRetrieval
from tfmmsearch.model.towers import build_item_tower, build_query_tower


@dataclass
class Encoders:
    """Raw-input encoders: title strings -> vectors, decoded images -> features, queries -> vectors."""

    text: tf.keras.Model | None = None
    image: tf.keras.Model | None = None
    query: tf.keras.Model | None = None


class MultimodalSearchModel(tfrs.Model):
    """Query tower, item tower with fusion, ranking head, and their training tasks.

    The model owns its encoders, so it embeds raw strings and images itself (`embed_queries`,
    `embed_items`): training, validation, evaluation, export and re-indexing all go through
    these two methods. A batch may carry cached encoder outputs instead (`query_features`,
    `title_features`, `image_features`); the encoder is then skipped for that batch. Only
    encoders named in `trainable_encoders` are part of the model's checkpoint: frozen ones are
    rebuilt from their TF-Hub modules, so checkpoints stay small.
    """

    def __init__(self, config: ModelConfig, text_dim: int, image_dim: int, query_dim: int,
                 encoders: Encoders | None = None, trainable_encoders=("text", "image", "query"),
                 image_size: int | None = None,
                 item_features: ItemFeatureStats = NO_ITEM_FEATURES, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        # The vocabularies and statistics of config.item_features (the run's item_features.json);
        # their columns, in order, are the model's `attribute_values` columns.
        item_features.check_config(config.item_features)
        self.item_feature_stats = item_features
        self.item_feature_columns = tuple(item_features.columns)
        self.encoders = encoders or Encoders()  # a dataclass: Keras does not track its fields
        self.image_size = image_size
        # Trainable encoders are tracked attributes, so their weights are saved and restored.
        for name in trainable_encoders:
            if getattr(self.encoders, name) is not None:
                setattr(self, f"{name}_encoder", getattr(self.encoders, name))
        self.item_tower = build_item_tower(
            text_dim, image_dim, config,
            encoder_features(item_features, config.item_features) if len(item_features) else None)
        self.query_tower = build_query_tower(query_dim, config)
        self.ranking_head = RankingHead(config.ranking_hidden_units,
                                        interactions=config.ranking_interactions,
                                        lexical=config.ranking_lexical,
                                        attributes=bool(self.item_feature_columns),
                                        name="ranking_head")
        self.retrieval_task = GlobalBatchRetrieval(
            remove_accidental_hits=config.remove_accidental_hits,
            logq_correction=config.logq_correction,
            num_hard_negatives=config.num_hard_negatives or None, name="retrieval")
        self.ranking_task = listwise_ranking_task()
        self.log_temperature = self.add_weight(
            name="log_temperature", shape=(),
            initializer=tf.keras.initializers.Constant(math.log(config.temperature)),
            trainable=config.learn_temperature)
        # Single-modality retrieval losses are logged only when they train.
        self.single_modalities = [name for name in ("image", "text")
                                  if getattr(config.loss_weights, f"{name}_retrieval") > 0]
        # Mean fusion weight of each modality the model has (attributes: with item features).
        self.weighted_modalities = [name for name in MODALITIES
                                    if name != "attributes" or self.item_feature_columns]
        self.trackers = {name: tf.keras.metrics.Mean(name=name) for name in (
            "retrieval_loss", *[f"{m}_retrieval_loss" for m in self.single_modalities],
            "alignment_loss", "ranking_loss", "temperature",
            *[f"{m}_weight" for m in self.weighted_modalities])}

    def build_heads(self) -> None:
        """Creates the ranking head's variables (it builds lazily) so checkpoints restore eagerly."""
        dim = self.config.embedding_dim
        zeros = tf.zeros([1, 1, dim])
        self.rank(zeros, {"embedding": zeros, "text": zeros, "image": zeros, "attributes": zeros,
                          "mask": tf.ones([1, 1, len(MODALITIES)])}, coverage=tf.zeros([1, 1]))

    def exported_parts(self) -> dict:
        """The parts an export tracks (and so saves) by name: everything its signatures call.
        A warm start from an export reads them back under the same names."""
        return {"text_encoder": self.encoders.text, "image_encoder": self.encoders.image,
                "query_encoder": self.encoders.query, "item_tower": self.item_tower,
                "query_tower": self.query_tower, "ranking_head": self.ranking_head}

    # ------------------------------------------------------------------ the inference surface

    @property
    def temperature(self) -> tf.Tensor:
        return tf.exp(self.log_temperature)

    def _encoder(self, name: str):
        encoder = getattr(self.encoders, name)
        if encoder is None:
            raise ValueError(f"this model has no {name} encoder: pass cached "
                             f"{'query' if name == 'query' else name}_features in the batch")
        return encoder

    def query_features(self, features, training=False):
        """`query_features` when the batch has them, else the query encoder on `query` strings."""
        if "query_features" in features:
            return features["query_features"]
        return self._encoder("query")(features["query"], training=training)

    def item_features(self, features, training=False):
        """(title features, image features) of a batch: cached where given, else encoded from
        `title` strings and `image` pixels [B, S, S, 3] or `image_bytes` (encoded files)."""
        if "title_features" in features:
            title = features["title_features"]
        else:
            title = self._encoder("text")(features["title"], training=training)
        if "image_features" in features:
            image = features["image_features"]
        else:
            pixels = features["image"] if "image" in features else \
                decode_images(features["image_bytes"], self._image_size())
            image = self._encoder("image")(pixels, training=training)
        return title, image

    def _image_size(self) -> int:
        if self.image_size is None:
            raise ValueError("decoding image bytes needs the model's image_size")
        return self.image_size

    def embed_queries(self, features, training=False) -> tf.Tensor:
        """L2-normalised query embeddings [B, D] of a batch ({"query": strings} or cached)."""
        return self.query_tower({"query_features": self.query_features(features, training)},
                                training=training)["embedding"]

    def embed_items(self, features, training=False) -> dict:
        """Item-tower outputs (embedding, modality_weights, text, image, attributes, mask) of a
        batch.

        `has_title` / `has_image` default to the contract's rules on the raw inputs: a title
        with a non-whitespace character, non-empty image bytes. `attribute_values` [B, C]
        strings (columns: `item_feature_columns`) are optional: absent, or of width 0, every
        item lacks them; a model without item features ignores them.
        """
        title, image = self.item_features(features, training)
        return self._item_tower(title, image, item_presence(features, "title"),
                                item_presence(features, "image"),
                                self.attribute_values(features, title), training)

    def attribute_values(self, features, title_features) -> tf.Tensor | None:
        """The batch's [B, C] item-feature strings for the item tower (None without features)."""
        if not self.item_feature_columns:
            return None
        return complete_attribute_values(features.get(ATTRIBUTE_INPUT),
                                         tf.shape(title_features)[0],
                                         len(self.item_feature_columns))

    def _item_tower(self, title, image, has_title, has_image, attribute_values=None,
                    training=False) -> dict:
        inputs = {"title_features": title, "image_features": image,
                  "has_title": has_title, "has_image": has_image}
        if attribute_values is not None:
            inputs[ATTRIBUTE_INPUT] = attribute_values
        return self.item_tower(inputs, training=training)

    def rank(self, query_embedding, items: dict, coverage=None) -> tf.Tensor:
        """Ranking-head scores; query [..., D] broadcasts against item outputs [..., D].
        `coverage` [...]: the query's word coverage by each title (a lexical head needs it);
        items["attributes"]: the attribute vectors (a model with item features needs them)."""
        return self.ranking_head(query_embedding, items["embedding"], items["text"], items["image"],
                                 items["mask"], coverage=coverage if self.ranking_head.lexical else None,
                                 attributes=items.get("attributes") if self.ranking_head.attributes
                                 else None)

    # ------------------------------------------------------------------ training objective

    def compute_loss(self, features, training=False) -> tf.Tensor:
        weights = self.config.loss_weights
        queries = self.embed_queries(features, training)
        title, image = self.item_features(features, training)
        has = {"text": features["has_title"], "image": features["has_image"]}
        attributes = self.attribute_values(features, title)
        items = self._item_tower(title, image, has["text"], has["image"], attributes, training)
        temperature = self.temperature

        sample_weight = features.get("sample_weight")

        def retrieval_against(candidates):
            return self.retrieval_task(
                queries, candidates, features["product_id"], temperature,
                sampling_probability=features.get("sampling_probability"),
                query_attributes=features.get("query_attributes"),
                candidate_attributes=features.get("item_attributes"),
                query_ids=features.get("query_id"), sample_weight=sample_weight)

        retrieval = retrieval_against(items["embedding"])
        single = {}
        for name in self.single_modalities:
            # The item tower again with the other modalities hidden (towers on features are
            # cheap; attributes are hidden by leaving their values out); items lacking this
            # modality keep their full embedding.
            only = {key: tf.logical_and(tf.cast(value, tf.bool), key == name)
                    for key, value in has.items()}
            hidden = None if attributes is None else tf.fill(tf.shape(attributes), "")
            view = self._item_tower(title, image, only["text"], only["image"], hidden, training)
            single[name] = retrieval_against(tf.where(only[name][:, None], view["embedding"],
                                                      items["embedding"]))

        alignment = alignment_loss(items["text"], items["image"], items["mask"], temperature)

        ranking = tf.constant(0.0)
        if weights.ranking > 0 and "query_attributes" in features:
            batch = tf.shape(queries)[0]
            if self.config.ranking_candidate_sampling == "top_retrieved":
                columns = top_retrieved_candidates(
                    tf.matmul(queries, items["embedding"], transpose_b=True),
                    self.config.ranking_candidates)
            else:
                columns = select_candidates(batch, batch, self.config.ranking_candidates)
            grades = tf.gather(in_batch_grades(features), columns, batch_dims=1)
            candidates = {key: tf.gather(value, columns) for key, value in items.items()
                          if key in RANKED_OUTPUTS}
            title_words = None
            if self.ranking_head.lexical:
                title_words = tf.gather(features["title_words"], columns)
            if "has_negative" in features:
                # Each pair's own hard negative (a product the shopper skipped) joins its list
                # as one more grade-0 candidate; a pair without one gets a masked-out column.
                negative = self.embed_items(strip_prefix(features, NEGATIVE_PREFIX), training)
                candidates = {key: tf.concat([value, negative[key][:, None]], axis=1)
                              for key, value in candidates.items()}
                grades = tf.concat([grades, tf.zeros_like(grades[:, :1])], axis=1)
                if title_words is not None:
                    title_words = tf.concat(
                        [title_words, features[f"{NEGATIVE_PREFIX}title_words"][:, None]], axis=1)
            coverage = None
            if title_words is not None:
                coverage = query_coverage(features["query_words"][:, None, :], title_words)
            rank_scores = self.rank(queries[:, None, :], candidates, coverage)
            if "has_negative" in features:
                shown = tf.concat([tf.ones_like(rank_scores[:, :-1], tf.bool),
                                   features["has_negative"][:, None]], axis=1)
                rank_scores = tf.where(shown, rank_scores, MASKED_SCORE)
            ranking = self.ranking_task(labels=gains_as_targets(grades), predictions=rank_scores,
                                        sample_weight=sample_weight)
            ranking = ranking / tf.cast(tf.shape(queries)[0] * _replicas(), ranking.dtype)

        mean_weights = tf.reduce_mean(items["modality_weights"], axis=0)
        # Metric results are summed over replicas: retrieval and ranking are already per-replica
        # shares of a global mean; replica-wide values are scaled so their sum is their mean.
        share = 1.0 / _replicas()
        for name, value in (("retrieval_loss", retrieval),
                            *[(f"{m}_retrieval_loss", single[m]) for m in self.single_modalities],
                            ("alignment_loss", alignment * share),
                            ("ranking_loss", ranking), ("temperature", temperature * share),
                            *[(f"{m}_weight", mean_weights[MODALITIES.index(m)] * share)
                              for m in self.weighted_modalities]):
            self.trackers[name].update_state(value)
        return (weights.retrieval * retrieval + weights.alignment * alignment / _replicas()
                + weights.ranking * ranking
                + sum(getattr(weights, f"{m}_retrieval") * single[m] for m in single))

    @property
    def metrics(self):
        return list(self.trackers.values())


# item-tower outputs the head reads ("attributes": zeros for a model without item features)
RANKED_OUTPUTS = ("embedding", "text", "image", "attributes", "mask")
NEGATIVE_PREFIX = "negative_"  # a pair's hard-negative item inputs (training/datasets.py)
MASKED_SCORE = -1e9  # a ranking candidate that is not there: softmax weight 0


def in_batch_grades(features) -> tf.Tensor:
    """int32 [B, B] grade of every in-batch item for every pair's query: attribute grades
    (0 for queries naming no attribute), and at least the pair's own `positive_grade` for its
    own item (a search-log pair's purchase or click)."""
    grades = attribute_grades(features["query_attributes"], features["item_attributes"])
    if "positive_grade" not in features:
        return grades
    own = tf.linalg.diag(tf.cast(features["positive_grade"], grades.dtype))
    return tf.maximum(grades, own)


def strip_prefix(features, prefix: str) -> dict:
    """The `prefix`ed entries of a batch under their plain names."""
    return {key[len(prefix):]: value for key, value in features.items()
            if key.startswith(prefix)}


def item_presence(features, modality: str) -> tf.Tensor:
    """Whether each item of a batch has its title / image: the batch's `has_title` / `has_image`
    when given, else the contract's rule on the raw input."""
    key = f"has_{modality}"
    if key in features:
        return tf.cast(features[key], tf.bool)
    if modality == "title":
        return has_text_tensor(features["title"])
    if "image_bytes" in features:
        return tf.strings.length(features["image_bytes"]) > 0
    raise ValueError(f"a batch without {key} needs raw titles / image_bytes to derive it")


def _replicas() -> int:
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync
