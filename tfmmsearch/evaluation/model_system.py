"""A trained tfmmsearch model as a `SearchSystem` for the protocol evaluators.

Items and queries are embedded by the model's own `embed_items` / `embed_queries` (the
functions training and the serving graph use); the encoder outputs fed to `embed_items` are
memoised by title and image, since the evaluators index the same catalog several times. Scores
are retrieval similarities; with `rerank`, each query's top candidates are re-scored by the
ranking head and placed above the rest, as the `search` serving signature does. Masking a
modality gives the text-only and image-only ablations of the same model. The protocol's items
are titles and photos only: a model with item features finds its items' attribute values in a
`ProductAttributes` lookup, else scores them with the attributes missing.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmmsearch.contract import MODALITIES, has_text
from tfmmsearch.data.item_features import attribute_matrix
from tfmmsearch.data.pipeline import read_image
from tfmmsearch.model.feature_cache import inference_call
from tfmmsearch.model.lexical import MAX_QUERY_WORDS, MAX_TITLE_WORDS, query_coverage, word_ids
from tfmmsearch.model.search_model import RANKED_OUTPUTS, Encoders, MultimodalSearchModel

_RERANK_OFFSET = 1e4


class EncoderMemo:
    """Encoder outputs memoised per title and per image path, shared by several systems.

    The protocol indexes the same catalog with and without titles, for several ablations;
    the deep encoders then run once per distinct title and image, not once per task.
    """

    def __init__(self, encoders: Encoders, image_size: int, batch_size: int = 64):
        self.encoders, self.image_size, self.batch_size = encoders, image_size, batch_size
        self._texts: dict[str, np.ndarray] = {}
        self._images: dict[str, np.ndarray] = {}
        self._encode_text = inference_call(encoders.text)
        self._encode_image = inference_call(encoders.image)

    def prefill(self, titles: list[str], image_paths: list[str], title_features: np.ndarray,
                image_features: np.ndarray) -> None:
        """Takes encoder outputs computed elsewhere (a run's feature cache, same encoders)."""
        self._texts.update(zip(titles, title_features))
        self._images.update((path, vector) for path, vector in zip(image_paths, image_features)
                            if path)

    def texts(self, titles: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in titles if t not in self._texts))
        for start in range(0, len(missing), self.batch_size * 4):
            chunk = missing[start:start + self.batch_size * 4]
            for title, vector in zip(chunk, self._encode_text(tf.constant(chunk)).numpy()):
                self._texts[title] = vector
        return np.stack([self._texts[t] for t in titles])

    def images(self, paths: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(p for p in paths if p not in self._images))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            pixels = tf.stack([read_image(tf.constant(path), self.image_size) for path in chunk])
            for path, vector in zip(chunk, self._encode_image(pixels).numpy()):
                self._images[path] = vector
        return np.stack([self._images[p] for p in paths])


class ProductAttributes:
    """The raw item-feature values of a catalog's products, found by (title, image path).

    Evaluators hand systems titles and image paths only; a model with item features looks its
    items' attribute values up here (by image path when the title is hidden, as in the
    image_only task). Items it cannot place get empty values (masked, as in serving)."""

    def __init__(self, products, columns):
        self.columns = tuple(columns)
        rows = attribute_matrix(products, self.columns)
        self._by_item, self._by_image = {}, {}
        for product, row in zip(products, rows):
            path = str(product.image_path) if product.image_path else ""
            self._by_item[(product.title, path)] = row
            if path:
                self._by_image[path] = row

    def values(self, titles: list[str], image_paths: list[str]) -> np.ndarray:
        """object [B, C] of strings ("" where unknown)."""
        empty = np.full(len(self.columns), "", dtype=object)
        return np.array([self._by_item.get((title, path), self._by_image.get(path, empty))
                         for title, path in zip(titles, image_paths)],
                        dtype=object).reshape(len(titles), len(self.columns))


class TrainedModelSystem:
    """Scores queries against items with a trained model (optionally one modality only)."""

    def __init__(self, name: str, model: MultimodalSearchModel, use_text: bool = True,
                 use_image: bool = True, rerank: int = 100, batch_size: int = 256,
                 memo: EncoderMemo | None = None, attributes: ProductAttributes | None = None):
        if not (use_text or use_image):
            raise ValueError("a TrainedModelSystem needs at least one modality")
        self.name = name
        self.model = model
        self.memo = memo or EncoderMemo(model.encoders, model.image_size)
        self.use_text, self.use_image = use_text, use_image
        self.rerank, self.batch_size = rerank, batch_size
        self._embed_queries = tf.function(lambda texts: model.embed_queries({"query": texts}))
        self._embed_items = tf.function(lambda batch: model.embed_items(batch))
        # A model with item features reads its items' attribute values when they are known.
        self.attributes = attributes if model.item_feature_columns else None
        if self.attributes is not None and self.attributes.columns != model.item_feature_columns:
            raise ValueError(f"product attributes of columns {self.attributes.columns}, the model "
                             f"reads {model.item_feature_columns}")

    def item_outputs(self, titles: list[str], image_paths: list[str]) -> dict[str, np.ndarray]:
        """Item-tower outputs for each (title, image path)."""
        titles, image_paths = list(titles), list(image_paths)
        outputs: dict[str, list] = {}
        for start in range(0, len(titles), self.batch_size):
            chunk_titles = titles[start:start + self.batch_size]
            chunk_paths = image_paths[start:start + self.batch_size]
            batch = {"title_features": tf.constant(self.memo.texts(chunk_titles)),
                     "image_features": tf.constant(self.memo.images(chunk_paths)),
                     "has_title": tf.constant([has_text(t) for t in chunk_titles]),
                     "has_image": tf.constant([bool(p) for p in chunk_paths])}
            if self.attributes is not None:
                batch["attribute_values"] = tf.constant(
                    self.attributes.values(chunk_titles, chunk_paths).astype(str), tf.string)
            result = self._embed_items(batch)
            for name, value in result.items():
                outputs.setdefault(name, []).append(value.numpy())
        return {name: np.concatenate(values) for name, values in outputs.items()}

    def _masked(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Re-fuses items with a modality switched off (ablations), using the fusion's own weights."""
        if self.use_text and self.use_image:
            return items
        # Attributes (item features) stay as they are: the ablations are about title and photo.
        keep = np.array([self.use_text, self.use_image, True], np.float32)
        mask = items["mask"] * keep
        weights = items["modality_weights"] * keep
        total = weights.sum(axis=1, keepdims=True)
        # An item left with no usable modality gets a zero vector (it cannot be found).
        weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
        fused = sum(weights[:, i:i + 1] * items[name] for i, name in enumerate(MODALITIES))
        norms = np.linalg.norm(fused, axis=1, keepdims=True)
        fused = np.divide(fused, norms, out=np.zeros_like(fused), where=norms > 0)
        return {**items, "embedding": fused, "mask": mask, "modality_weights": weights}

    def embed_queries(self, query_texts: list[str]) -> np.ndarray:
        outputs = [self._embed_queries(tf.constant(query_texts[s:s + self.batch_size])).numpy()
                   for s in range(0, len(query_texts), self.batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.model.config.embedding_dim))

    def score(self, query_texts, titles, image_paths, item_mode: str) -> np.ndarray:
        items = self._masked(self.item_outputs(list(titles), list(image_paths)))
        queries = self.embed_queries(list(query_texts))
        scores = queries @ items["embedding"].T
        if self.rerank:
            scores = self._rerank(scores, queries, items, self.words(query_texts, titles))
        # A query without text finds nothing, as in the serving signatures.
        blank = np.array([not has_text(q) for q in query_texts], bool)
        scores[blank] = -np.inf
        return scores

    def words(self, query_texts, titles) -> tuple[np.ndarray, np.ndarray] | None:
        """(query word ids, title word ids) for a lexical ranking head, else None; a title the
        items are scored without (text-off ablation) has no words."""
        if not self.model.ranking_head.lexical:
            return None
        return (word_ids(list(query_texts), MAX_QUERY_WORDS).numpy(),
                word_ids([t if self.use_text else "" for t in titles], MAX_TITLE_WORDS).numpy())

    def head_scores(self, queries: np.ndarray, items: dict, rows: np.ndarray,
                    words: tuple[np.ndarray, np.ndarray] | None = None,
                    block: int = 64) -> np.ndarray:
        """Ranking-head scores [Q, K] of each query's candidate items `rows` [Q, K] (indices
        into the item outputs `items`); `words` as `words(...)` gives them."""
        scores = []
        for start in range(0, len(queries), block):
            chunk = rows[start:start + block]
            candidates = {name: tf.constant(items[name][chunk]) for name in RANKED_OUTPUTS}
            coverage = None
            if words is not None:
                coverage = query_coverage(words[0][start:start + block][:, None, :],
                                          words[1][chunk])
            scores.append(self.model.rank(tf.constant(queries[start:start + block])[:, None, :],
                                          candidates, coverage).numpy())
        return np.concatenate(scores) if scores else np.zeros(rows.shape, np.float32)

    def _rerank(self, scores: np.ndarray, queries: np.ndarray, items: dict,
                words: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        k = min(self.rerank, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        reranked = scores.astype(np.float64)
        np.put_along_axis(reranked, top, self.head_scores(queries, items, top, words)
                          + _RERANK_OFFSET, axis=1)
        return reranked
