"""The servable: a tf.Module whose signatures take raw strings and image bytes.

Everything a TF Serving request needs runs in graph: tokenisation (TF Text ops), JPEG/PNG
decoding, the towers, exact top-K over an in-graph index, and ranking-head re-scoring. The
index lives in variables with a dynamic first dimension, so `tfmmsearch index` can load an
export, assign a new catalog's embeddings and save the next version without the training code.

Product-id lookup for `rank` uses sorted 62-bit fingerprints of the ids plus a string check,
so it is core ops only and survives re-indexing (no hash-table resource to rebuild).
"""

from __future__ import annotations

import tensorflow as tf

from tfmmsearch.data.pipeline import decode_image
from tfmmsearch.model.lexical import MAX_QUERY_WORDS, MAX_TITLE_WORDS, query_coverage, word_ids

MODALITIES = ("text", "image")
UNKNOWN_SCORE = -1e30  # `rank` score of a product id the index does not hold (see `known`)
_FINGERPRINT_BUCKETS = 2**62


def fingerprint(ids: tf.Tensor) -> tf.Tensor:
    return tf.strings.to_hash_bucket_fast(ids, _FINGERPRINT_BUCKETS)


class ItemIndex(tf.Module):
    """Item-tower outputs of a catalog, held in resizable variables."""

    def __init__(self, dim: int, title_words: int = 0, name: str = "index"):
        super().__init__(name=name)

        def variable(shape, dtype, label):
            return tf.Variable(tf.zeros([0] + shape, dtype), shape=tf.TensorShape([None] + shape),
                               trainable=False, name=label)

        self.product_ids = variable([], tf.string, "product_ids")
        self.embeddings = variable([dim], tf.float32, "embeddings")
        self.text = variable([dim], tf.float32, "text")
        self.image = variable([dim], tf.float32, "image")
        self.mask = variable([len(MODALITIES)], tf.float32, "mask")
        self.modality_weights = variable([len(MODALITIES)], tf.float32, "modality_weights")
        self.sorted_fingerprints = variable([], tf.int64, "sorted_fingerprints")
        self.sorted_positions = variable([], tf.int32, "sorted_positions")
        if title_words:  # hashed title words, for a lexical ranking head (model/lexical.py)
            self.title_words = variable([title_words], tf.int64, "title_words")
            self.assign_words = tf.function(
                self._assign_words, input_signature=[tf.TensorSpec([None, title_words], tf.int64)])

    def _assign_words(self, title_words):
        """Sets the items' title words; call right after `assign`, for the same items."""
        tf.debugging.assert_equal(tf.shape(title_words)[0], self.size,
                                  message="title_words must have one row per indexed item")
        self.title_words.assign(title_words)
        return tf.shape(title_words)[0]

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string), tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.float32)])
    def assign(self, product_ids, embeddings, text, image, mask, modality_weights):
        """Replaces the whole index (any size) and rebuilds the id lookup; saved, so it also
        works on a loaded export (re-indexing)."""
        self.product_ids.assign(product_ids)
        self.embeddings.assign(embeddings)
        self.text.assign(text)
        self.image.assign(image)
        self.mask.assign(mask)
        self.modality_weights.assign(modality_weights)
        prints = fingerprint(product_ids)
        order = tf.argsort(prints, stable=True)
        self.sorted_fingerprints.assign(tf.gather(prints, order))
        self.sorted_positions.assign(tf.cast(order, tf.int32))
        return tf.shape(product_ids)[0]

    @property
    def size(self) -> tf.Tensor:
        return tf.shape(self.product_ids)[0]

    def lookup(self, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Index positions of `ids` (any shape) and whether each id is in the index."""
        slot = tf.searchsorted(self.sorted_fingerprints, tf.reshape(fingerprint(ids), [-1]),
                               side="left")
        position = tf.reshape(_safe_gather(self.sorted_positions, slot), tf.shape(ids))
        stored = _safe_gather(self.product_ids, position)
        known = tf.logical_and(tf.equal(stored, ids), tf.strings.length(ids) > 0)
        return position, known


def _safe_gather(values: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Gather that returns the dtype's zero instead of failing on an empty `values`."""
    padded = tf.concat([values, tf.zeros([1], values.dtype)], axis=0)
    return tf.gather(padded, tf.minimum(positions, tf.shape(values)[0]))


QUERY_SPEC = tf.TensorSpec([None], tf.string, name="query")


class SearchModule(tf.Module):
    """Towers + ranking head + index, with the serving signatures as tf.functions."""

    def __init__(self, model, encoders, image_size: int, top_k: int = 100, rerank_candidates: int = 100):
        super().__init__(name="tfmmsearch")
        self.text_encoder = encoders.text
        self.image_encoder = encoders.image
        self.query_encoder = encoders.query
        self.item_tower = model.item_tower
        self.query_tower = model.query_tower
        self.ranking_head = model.ranking_head
        self.image_size = image_size
        self.top_k = top_k
        self.rerank_candidates = max(top_k, rerank_candidates)
        self.lexical = model.ranking_head.lexical
        self.index = ItemIndex(model.config.embedding_dim,
                               title_words=MAX_TITLE_WORDS if self.lexical else 0)

    # ------------------------------------------------------------------ building blocks

    def _query_embedding(self, query):
        features = self.query_encoder(query, training=False)
        return self.query_tower({"query_features": features}, training=False)["embedding"]

    def _item_outputs(self, title, image):
        size = self.image_size
        images = tf.map_fn(lambda data: decode_image(data, size), image,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return self.item_tower({
            "title_features": self.text_encoder(title, training=False),
            "image_features": self.image_encoder(images, training=False),
            "has_title": tf.strings.length(tf.strings.strip(title)) > 0,
            "has_image": tf.strings.length(image) > 0,
        }, training=False)

    def _top(self, scores, k):
        k = tf.minimum(k, tf.shape(scores)[1])
        return tf.math.top_k(scores, k=k)

    def _head_scores(self, query, query_embedding, positions):
        index = self.index
        candidates = {"embedding": tf.gather(index.embeddings, positions),
                      "text": tf.gather(index.text, positions),
                      "image": tf.gather(index.image, positions),
                      "mask": tf.gather(index.mask, positions)}
        coverage = None
        if self.lexical:
            coverage = query_coverage(word_ids(query, MAX_QUERY_WORDS)[:, None, :],
                                      tf.gather(index.title_words, positions))
        return self.ranking_head(query_embedding[:, None, :], candidates["embedding"],
                                 candidates["text"], candidates["image"], candidates["mask"],
                                 coverage=coverage)

    # ------------------------------------------------------------------ signatures

    @tf.function(input_signature=[QUERY_SPEC])
    def search(self, query):
        """Retrieve candidates from the index, re-score with the ranking head, keep the top K."""
        embedding = self._query_embedding(query)
        similarities = tf.matmul(embedding, self.index.embeddings, transpose_b=True)
        _, candidates = self._top(similarities, self.rerank_candidates)
        head = self._head_scores(query, embedding, candidates)
        scores, order = self._top(head, self.top_k)
        positions = tf.gather(candidates, order, batch_dims=1)
        return {"product_ids": tf.gather(self.index.product_ids, positions),
                "scores": scores,
                "modality_weights": tf.gather(self.index.modality_weights, positions)}

    @tf.function(input_signature=[QUERY_SPEC])
    def retrieve(self, query):
        """Exact top-K by embedding similarity alone."""
        embedding = self._query_embedding(query)
        similarities = tf.matmul(embedding, self.index.embeddings, transpose_b=True)
        scores, positions = self._top(similarities, self.top_k)
        return {"product_ids": tf.gather(self.index.product_ids, positions), "scores": scores}

    @tf.function(input_signature=[QUERY_SPEC, tf.TensorSpec([None, None], tf.string, name="product_ids")])
    def rank(self, query, product_ids):
        """Ranking-head scores of given indexed products; unknown ids score UNKNOWN_SCORE."""
        embedding = self._query_embedding(query)
        positions, known = self.index.lookup(product_ids)
        scores = self._head_scores(query, embedding, positions)
        return {"scores": tf.where(known, scores, UNKNOWN_SCORE), "known": known}

    @tf.function(input_signature=[QUERY_SPEC])
    def embed_query(self, query):
        return {"embedding": self._query_embedding(query)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="title"),
                                  tf.TensorSpec([None], tf.string, name="image")])
    def embed_item(self, title, image):
        outputs = self._item_outputs(title, image)
        return {"embedding": outputs["embedding"], "modality_weights": outputs["modality_weights"]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="title"),
                                  tf.TensorSpec([None], tf.string, name="image")])
    def index_outputs(self, title, image):
        """Everything the index stores for an item (used when (re-)indexing a catalog)."""
        outputs = self._item_outputs(title, image)
        stored = {key: outputs[key] for key in ("embedding", "text", "image", "mask", "modality_weights")}
        if self.lexical:
            stored["title_words"] = word_ids(title, MAX_TITLE_WORDS)
        return stored

    def signatures(self) -> dict:
        search = self.search.get_concrete_function()
        return {
            "serving_default": search,
            "search": search,
            "retrieve": self.retrieve.get_concrete_function(),
            "rank": self.rank.get_concrete_function(),
            "embed_query": self.embed_query.get_concrete_function(),
            "embed_item": self.embed_item.get_concrete_function(),
        }
