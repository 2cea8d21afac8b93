"""A trained tfmmsearch model as a `SearchSystem` for the protocol evaluators.

Items are embedded through the encoders and the item tower (memoised by (title, image), since
the evaluators index the same catalog several times); queries through the query tower. Scores
are retrieval similarities; with `rerank`, each query's top candidates are re-scored by the
ranking head and placed above the rest, as the `search` serving signature does. Masking a
modality gives the text-only and image-only ablations of the same model.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmmsearch.data.pipeline import read_image
from tfmmsearch.model.search_model import Encoders, MultimodalSearchModel

_RERANK_OFFSET = 1e4


class TrainedModelSystem:
    """Scores queries against items with a trained model (optionally one modality only)."""

    def __init__(self, name: str, model: MultimodalSearchModel, encoders: Encoders, image_size: int,
                 use_text: bool = True, use_image: bool = True, rerank: int = 100,
                 batch_size: int = 256):
        if not (use_text or use_image):
            raise ValueError("a TrainedModelSystem needs at least one modality")
        self.name = name
        self.model, self.encoders, self.image_size = model, encoders, image_size
        self.use_text, self.use_image = use_text, use_image
        self.rerank, self.batch_size = rerank, batch_size
        self._items: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._embed_items = tf.function(self._embed_items_graph)
        self._embed_queries = tf.function(
            lambda texts: self.model.query_tower(
                {"query_features": self.encoders.query(texts)})["embedding"])

    def _embed_items_graph(self, titles, images, has_title, has_image):
        title_features = self.encoders.text(titles)
        image_features = self.encoders.image(images)
        return self.model.item_tower({"title_features": title_features,
                                      "image_features": image_features,
                                      "has_title": has_title, "has_image": has_image})

    def item_outputs(self, titles: list[str], image_paths: list[str]) -> dict[str, np.ndarray]:
        """Item-tower outputs for each (title, image path), computing only unseen items."""
        keys = list(zip(titles, image_paths))
        missing = list(dict.fromkeys(k for k in keys if k not in self._items))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            chunk_titles = [title for title, _ in chunk]
            chunk_paths = [path for _, path in chunk]
            images = tf.stack([read_image(tf.constant(path), self.image_size) for path in chunk_paths])
            has_title = tf.constant([bool(t.strip()) for t in chunk_titles])
            has_image = tf.constant([bool(p) for p in chunk_paths])
            outputs = self._embed_items(tf.constant(chunk_titles), images, has_title, has_image)
            for row, key in enumerate(chunk):
                self._items[key] = {name: value[row].numpy() for name, value in outputs.items()}
        return {name: np.stack([self._items[k][name] for k in keys]) for name in
                ("embedding", "text", "image", "mask", "modality_weights")}

    def _masked(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Re-fuses items with a modality switched off (ablations), using the fusion's own weights."""
        if self.use_text and self.use_image:
            return items
        keep = np.array([self.use_text, self.use_image], np.float32)
        mask = items["mask"] * keep
        weights = items["modality_weights"] * keep
        total = weights.sum(axis=1, keepdims=True)
        # An item left with no usable modality gets a zero vector (it cannot be found).
        weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
        fused = weights[:, :1] * items["text"] + weights[:, 1:] * items["image"]
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
            scores = self._rerank(scores, queries, items)
        return scores

    def _rerank(self, scores: np.ndarray, queries: np.ndarray, items: dict) -> np.ndarray:
        k = min(self.rerank, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        reranked = scores.astype(np.float64)
        for start in range(0, len(queries), 64):
            rows = top[start:start + 64]
            candidates = {name: tf.constant(items[name][rows]) for name in ("embedding", "text", "image", "mask")}
            head = self.model.rank(tf.constant(queries[start:start + 64])[:, None, :], candidates).numpy()
            np.put_along_axis(reranked[start:start + 64], rows, head + _RERANK_OFFSET, axis=1)
        return reranked
