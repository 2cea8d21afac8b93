"""The zero-shot text baseline: cosine similarity of one pretrained encoder's query and title vectors."""

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.evaluation.zero_shot import ZeroShotTextSystem


class BagOfWords(tf.keras.layers.Layer):
    """A deterministic stand-in sentence encoder: hashed word counts (records every call)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def call(self, texts, training=False):
        self.calls += 1
        ids = tf.strings.to_hash_bucket_fast(tf.strings.split(tf.strings.lower(texts)), 257)
        return tf.reduce_sum(tf.one_hot(ids.to_tensor(default_value=-1), 257), axis=1)


TITLES = ["Red Cotton Dress", "Blue Denim Jeans", "Black Leather Shoes", ""]


def test_scores_are_cosines_and_an_exact_title_ranks_first():
    system = ZeroShotTextSystem("zero-shot", BagOfWords())
    scores = system.score(["blue denim jeans", "black shoes"], TITLES, [""] * 4, "full")
    assert scores.shape == (2, 4)
    assert np.argmax(scores[0]) == 1 and scores[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert np.argmax(scores[1]) == 2 and 0.5 < scores[1, 2] < 1.0  # 2 of 3 words
    assert scores[:, 3].tolist() == [0.0, 0.0]  # no title: nothing to match
    assert np.all(scores <= 1.0 + 1e-6)


def test_items_without_titles_score_zero_everywhere():
    system = ZeroShotTextSystem("zero-shot", BagOfWords())
    scores = system.score(["red dress"], ["", "  "], ["a.jpg", "b.jpg"], "image_only")
    np.testing.assert_array_equal(scores, np.zeros((1, 2)))


def test_titles_are_encoded_once_across_calls():
    titles_encoder, query_encoder = BagOfWords(), BagOfWords()
    system = ZeroShotTextSystem("zero-shot", titles_encoder, query_encoder)
    first = system.score(["red dress"], TITLES, [""] * 4, "full")
    traced = titles_encoder.calls
    second = system.score(["red dress"], TITLES, [""] * 4, "full")
    assert titles_encoder.calls == traced  # memoised: no second title pass
    assert query_encoder.calls > 0
    np.testing.assert_allclose(first, second)
