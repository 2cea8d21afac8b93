"""BM25 retrieval over the whole catalog inside the serving graph: an inverted index in variables.

Dense retrieval blurs the exact words shoppers mean (brands, model numbers, "navy"), so the
export also needs a lexical list over every item. This is the evaluation baseline's Okapi BM25
(`data/bm25.py`, whose K1 and B it imports) over the hashed word ids of `model/lexical.py`, so
titles and queries are tokenised exactly as everywhere else in the export.

The index is a posting list sorted by word: one posting per distinct (word, item), holding the
item's position and its precomputed BM25 weight. A batch of queries finds each query word's
postings by binary search, gathers those ranges and scatter-adds their weights into [B, N]:
the work is the postings the queries touch plus the output itself. Core TF ops only, and the
postings live in variables with a dynamic first dimension, so calling the saved `build` on a
loaded SavedModel re-indexes a changed catalog with no Python code of this package.
"""

from __future__ import annotations

import tensorflow as tf

from tfmmsearch.data.bm25 import B, K1
from tfmmsearch.exporting.variable_reads import gather_rows

_WORD_IDS = tf.TensorSpec([None, None], tf.int64)  # 0 pads; model/lexical.py word_ids


def _resizable(dtype: tf.DType, name: str) -> tf.Variable:
    return tf.Variable(tf.zeros([0], dtype), shape=tf.TensorShape([None]), trainable=False,
                       name=name)


def _starts_of_runs(*sorted_columns: tf.Tensor) -> tf.Tensor:
    """bool [M]: where the tuple of `sorted_columns` differs from the row before (row 0: True)."""
    changed = tf.zeros_like(sorted_columns[0][1:], tf.bool)
    for column in sorted_columns:
        changed = tf.logical_or(changed, tf.not_equal(column[1:], column[:-1]))
    return tf.concat([tf.ones_like(sorted_columns[0][:1], tf.bool), changed], axis=0)


class LexicalIndex(tf.Module):
    """An inverted index of the items' title words; `scores(query_words)` is BM25 [B, N]."""

    def __init__(self, name: str = "lexical_index"):
        super().__init__(name=name)
        self.posting_terms = _resizable(tf.int64, "posting_terms")  # ascending word ids
        self.posting_items = _resizable(tf.int32, "posting_items")  # ascending within a word
        self.posting_weights = _resizable(tf.float32, "posting_weights")  # BM25 of the pair
        self.num_items = tf.Variable(0, dtype=tf.int32, trainable=False, name="num_items")
        self.build = tf.function(self._build, input_signature=[_WORD_IDS])
        self.scores = tf.function(self._scores, input_signature=[_WORD_IDS])

    def _build(self, title_words: tf.Tensor) -> tf.Tensor:
        """Replaces the index with the postings of `title_words` int64 [N, W] (row i: item i's
        words, 0 pads); returns the number of postings."""
        present = title_words > 0
        num_items = tf.shape(title_words)[0]
        lengths = tf.reduce_sum(tf.cast(present, tf.float64), axis=1)
        average_length = tf.math.divide_no_nan(tf.reduce_sum(lengths),
                                               tf.cast(num_items, tf.float64))

        # Every word occurrence, items ascending (row-major); a stable sort by word keeps them
        # so, which makes equal (word, item) pairs adjacent.
        occurrences = tf.where(present)
        words = tf.gather_nd(title_words, occurrences)
        items = tf.cast(occurrences[:, 0], tf.int32)
        by_word = tf.argsort(words, stable=True)
        words, items = tf.gather(words, by_word), tf.gather(items, by_word)

        new_pair = _starts_of_runs(words, items)
        term_freq = tf.math.segment_sum(tf.ones_like(words, tf.float64),
                                        tf.cumsum(tf.cast(new_pair, tf.int32)) - 1)
        terms = tf.boolean_mask(words, new_pair)
        posting_items = tf.boolean_mask(items, new_pair)

        term_of_posting = tf.cumsum(tf.cast(_starts_of_runs(terms), tf.int32)) - 1
        doc_freq = tf.gather(tf.math.segment_sum(tf.ones_like(term_freq), term_of_posting),
                             term_of_posting)
        total = tf.cast(num_items, tf.float64)
        idf = tf.math.log1p((total - doc_freq + 0.5) / (doc_freq + 0.5))
        relative_length = tf.math.divide_no_nan(tf.gather(lengths, posting_items), average_length)
        saturation = term_freq * (K1 + 1) / (term_freq + K1 * (1 - B + B * relative_length))

        self.posting_terms.assign(terms)
        self.posting_items.assign(posting_items)
        self.posting_weights.assign(tf.cast(idf * saturation, tf.float32))
        self.num_items.assign(num_items)
        return tf.size(terms)

    def _scores(self, query_words: tf.Tensor) -> tf.Tensor:
        """float32 [B, N] BM25 of every indexed item for `query_words` int64 [B, Q] (0 pads); a
        word repeated in a query counts once per occurrence, an unknown word adds nothing."""
        batch = tf.shape(query_words, out_type=tf.int64)[0]
        num_items = tf.cast(self.num_items, tf.int64)
        occurrences = tf.where(query_words > 0)
        words = tf.gather_nd(query_words, occurrences)
        first = tf.searchsorted(self.posting_terms, words, side="left", out_type=tf.int64)
        end = tf.searchsorted(self.posting_terms, words, side="right", out_type=tf.int64)
        found = end > first
        first, end = tf.boolean_mask(first, found), tf.boolean_mask(end, found)
        row_start = tf.boolean_mask(occurrences[:, 0], found) * num_items  # of the [B * N] cells

        # The words' posting ranges laid end to end, and for each posting the first cell of its
        # query's row: a step at each range's start, summed up (linear in the postings touched).
        touched = tf.ragged.range(first, end).flat_values
        range_starts = tf.cumsum(end - first, exclusive=True)
        steps = row_start - tf.concat([tf.zeros([1], tf.int64), row_start[:-1]], axis=0)
        row_start_of_posting = tf.cumsum(
            tf.scatter_nd(range_starts[:, None], steps, tf.shape(touched, tf.int64)))
        cells = row_start_of_posting + tf.cast(gather_rows(self.posting_items, touched), tf.int64)
        sums = tf.math.unsorted_segment_sum(gather_rows(self.posting_weights, touched), cells,
                                            batch * num_items)
        return tf.reshape(sums, tf.stack([batch, num_items]))
