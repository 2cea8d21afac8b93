"""A pretrained sentence encoder used as is (no training): the zero-shot text baseline.

Queries and titles go through the same pretrained encoder (all-MiniLM-L6-v2 on Myntra) and
are ranked by cosine similarity, the way sentence-transformers users search. It reads titles
only: an item without a title gets a zero vector and scores 0, so the baseline honestly
finds nothing in `image_only` and `title_to_image`, like BM25.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmmsearch.contract import has_text
from tfmmsearch.model.feature_cache import encode_texts


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class ZeroShotTextSystem:
    """Cosine similarity of pretrained query and title embeddings (titles memoised)."""

    def __init__(self, name: str, title_encoder: tf.keras.Model, query_encoder: tf.keras.Model | None = None,
                 batch_size: int = 256):
        self.name = name
        self.title_encoder = title_encoder
        self.query_encoder = query_encoder or title_encoder
        self.batch_size = batch_size
        self._titles: dict[str, np.ndarray] = {}

    def embed_titles(self, titles: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in titles if has_text(t) and t not in self._titles))
        if missing:
            vectors = _normalised(encode_texts(self.title_encoder, missing, self.batch_size,
                                               desc=f"{self.name}: titles"))
            self._titles.update(zip(missing, vectors))
        width = next(iter(self._titles.values())).shape[0] if self._titles else 1
        empty = np.zeros(width, np.float32)
        return np.stack([self._titles.get(t, empty) if has_text(t) else empty for t in titles]) \
            if titles else np.zeros((0, width), np.float32)

    def embed_queries(self, query_texts: list[str]) -> np.ndarray:
        if not query_texts:
            return np.zeros((0, 1), np.float32)
        return _normalised(encode_texts(self.query_encoder, list(query_texts), self.batch_size,
                                        desc=f"{self.name}: queries"))

    def score(self, query_texts, titles, image_paths, item_mode: str) -> np.ndarray:
        titles = list(titles)
        if not query_texts or not any(has_text(t) for t in titles):
            return np.zeros((len(query_texts), len(titles)), np.float32)
        return self.embed_queries(list(query_texts)) @ self.embed_titles(titles).T
