"""The fused ranking head and its listwise training on graded candidates.

Retrieval compares one query vector with one item vector. The ranking head sees more: the
query vector, the fused item vector, each modality's vector, their element-wise products and
similarities, and which modalities the item has; a DCN cross layer and an MLP turn that into a
score. It is trained with `tfrs.tasks.Ranking` on graded relevance (0/1/2) over candidates the
retrieval model itself puts near the top, which is what it will re-score at serving time.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class RankingHead(tf.keras.layers.Layer):
    """score(query, item) from query x item interaction features. Shapes broadcast: [..., D].

    `attributes`: the model has the attribute modality (item features). The head then also
    reads the query's similarity with the attribute vector and the attribute mask column, and
    "attributes" may be one of its interactions. Without it the head's features are the
    two-modality ones, exactly (checkpoints of such heads restore unchanged).
    """

    INTERACTIONS = ("fused", "text", "image", "attributes")

    def __init__(self, hidden_units=(64, 32), cross_rank: int = 32,
                 interactions=("fused", "text", "image"), lexical: bool = False,
                 attributes: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = list(hidden_units)
        self.cross_rank = cross_rank
        self.lexical = bool(lexical)  # also reads the query's word coverage by the title
        self.attributes = bool(attributes)
        # Which item vectors the head sees element-wise against the query (the similarities
        # and the mask it always sees): leaving out "image" keeps a head from memorising
        # training photos through 256 image-product features.
        allowed = self.INTERACTIONS if self.attributes else self.INTERACTIONS[:3]
        unknown = set(interactions) - set(allowed)
        if unknown or not interactions:
            raise ValueError(f"ranking interactions {list(interactions)}: choose from "
                             f"{', '.join(allowed)}"
                             + ("" if self.attributes else " (attributes needs item features)"))
        self.interactions = [name for name in self.INTERACTIONS if name in interactions]
        # Low-rank cross (W = U V): a full [F, F] matrix over F = 3D + 5 features costs
        # ~20 GFLOP per step at D=256 with 64 candidates per query.
        self.cross = tfrs.layers.dcn.Cross(projection_dim=cross_rank, name="cross")
        self.mlp = [tf.keras.layers.Dense(units, activation="relu", name=f"dense_{i}")
                    for i, units in enumerate(self.hidden_units)]
        self.out = tf.keras.layers.Dense(1, name="score")
        # The head learns a residual over the retrieval similarity, so it starts as a re-scorer
        # that agrees with retrieval instead of as noise.
        self.similarity_scale = self.add_weight(
            name="similarity_scale", shape=(), initializer=tf.keras.initializers.Constant(10.0))

    def call(self, query, fused, text, image, mask, coverage=None, attributes=None):
        """query, fused, text, image, attributes: [..., D]; mask: [..., M] (has title, has
        image, has attributes: contract.MODALITIES; a head without attributes reads the first
        two columns only, so [..., 2] works too); coverage: [...] share of the query's words in
        the title (lexical heads only); attributes: the attribute vectors (heads with
        attributes only)."""
        mask = tf.cast(mask, query.dtype)
        text = text * mask[..., 0:1]
        image = image * mask[..., 1:2]
        vectors = {"fused": fused, "text": text, "image": image}
        similarities = [tf.reduce_sum(query * fused, -1), tf.reduce_sum(query * text, -1),
                        tf.reduce_sum(query * image, -1)]
        if self.attributes:
            if attributes is None:
                raise ValueError("a ranking head with attributes needs the attribute vectors")
            vectors["attributes"] = attributes * mask[..., 2:3]
            similarities.append(tf.reduce_sum(query * vectors["attributes"], -1))
            mask = mask[..., :3]
        else:
            mask = mask[..., :2]
        similarities = tf.stack(similarities, axis=-1)
        # Interaction features only: an item-only feature would let the head learn popularity.
        extra = []
        if self.lexical:
            if coverage is None:
                raise ValueError("a lexical ranking head needs the query's word coverage")
            # A title the item does not have (or that modality dropout hid) covers nothing.
            extra = [tf.cast(coverage, query.dtype)[..., None] * mask[..., 0:1]]
        features = tf.concat([query * vectors[name] for name in self.interactions]
                             + [similarities, mask] + extra, axis=-1)
        hidden = self.cross(features)
        for layer in self.mlp:
            hidden = layer(hidden)
        return tf.squeeze(self.out(hidden), axis=-1) + similarities[..., 0] * self.similarity_scale

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "cross_rank": self.cross_rank,
                "interactions": self.interactions, "lexical": self.lexical,
                "attributes": self.attributes}


def select_candidates(num_queries: tf.Tensor, num_items: tf.Tensor, num_candidates: int,
                      seed: int | None = None) -> tf.Tensor:
    """For query i: its own positive (column i) plus other in-batch items drawn uniformly.

    Uniform, not hardest-first: negatives chosen by retrieval score while positives are not
    teach the head that a high retrieval score means "negative" (a selection bias that
    inverted re-ranking in an early version). With num_candidates >= batch every item is a
    candidate. Returns int32 [Q, K] column indices, K = min(num_candidates, num_items).
    """
    k = tf.minimum(num_candidates, num_items)
    noise = tf.random.uniform([num_queries, num_items], seed=seed)
    own = tf.cast(tf.eye(num_queries, num_items), tf.bool)
    noise = tf.where(own, -1.0, noise)  # the positive is never drawn again as a negative
    _, others = tf.math.top_k(noise, k=k - 1)
    positives = tf.range(num_queries)[:, None]
    return tf.concat([positives, others], axis=1)


def top_retrieved_candidates(similarities: tf.Tensor, num_candidates: int) -> tf.Tensor:
    """For each query (row), the in-batch items retrieval ranks highest: int32 [Q, K].

    Chosen by score alone, whatever their grades, so the head learns to re-order exactly the
    kind of list it re-ranks at serving time; a query whose positive falls outside its top K
    still learns from the graded items inside it (and nothing when none is relevant).
    """
    k = tf.minimum(num_candidates, tf.shape(similarities)[1])
    return tf.math.top_k(tf.stop_gradient(similarities), k=k).indices


def listwise_ranking_task() -> tfrs.tasks.Ranking:
    """Softmax cross-entropy over each query's candidates against normalised gains 2^g - 1."""
    return tfrs.tasks.Ranking(
        loss=tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
        metrics=None,
    )


def gains_as_targets(grades: tf.Tensor) -> tf.Tensor:
    gains = tf.pow(2.0, tf.cast(grades, tf.float32)) - 1.0
    return tf.math.divide_no_nan(gains, tf.reduce_sum(gains, axis=-1, keepdims=True))
