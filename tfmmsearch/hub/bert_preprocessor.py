"""A TF-Hub-format BERT preprocessor: raw strings in, encoder inputs out, all in graph.

It follows the tfhub.dev BERT preprocessors, so the same tower code runs on either:
calling the module maps string [batch] to input_word_ids / input_mask / input_type_ids
(int32 [batch, seq_length]); `tokenize` maps string [batch] to ragged wordpiece ids
[batch, (words), (pieces)]; `bert_pack_inputs(segments, seq_length=N)` packs one or more
tokenized segments as [CLS] a [SEP] b [SEP] ..., trimmed round-robin to fit N.

Tokenization uses tensorflow_text's BertTokenizer ops (lower-case, NFD, accents stripped,
split on whitespace and punctuation, WordPiece with [UNK] for words over 100 bytes), which
stock TF Serving images bundle. Trimming and packing use core ops only: tensorflow_text's
RoundRobinTrim op is missing from older TF Serving images.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
import tensorflow_text as tf_text

from tfmmsearch.data.vocab import CLS_TOKEN, SEP_TOKEN, UNK_TOKEN, read_vocab_file
from tfmmsearch.hub.text_module import (
    INPUT_MASK,
    INPUT_TYPE_IDS,
    INPUT_WORD_IDS,
    save_atomically,
)

# Concrete `bert_pack_inputs` functions are saved for 1..MAX_SAVED_SEGMENTS segments.
MAX_SAVED_SEGMENTS = 3
# BERT's WordPiece replaces a word longer than this by [UNK].
MAX_BYTES_PER_WORD = 100


def round_robin_lengths(lengths: list[tf.Tensor], budget: tf.Tensor) -> list[tf.Tensor]:
    """How many leading tokens of each segment fit in `budget`, taking one from each in turn.

    The token at position j of segment i is the (sum_s min(len_s, j + [s < i]))-th token taken
    in round-robin order, so it survives when that count is below the budget. Core ops only.
    `lengths` are int64 [batch] tensors; returns int64 [batch] tensors.
    """
    budget = tf.cast(budget, tf.int64)
    kept = []
    for i, length in enumerate(lengths):
        rows, j = _row_positions(_lengths_to_splits(length))
        taken_before = tf.zeros_like(j)
        for s, other in enumerate(lengths):
            taken_before += tf.minimum(tf.gather(other, rows), j + (1 if s < i else 0))
        keep = tf.cast(taken_before < budget, tf.int64)
        kept.append(tf.math.unsorted_segment_sum(keep, rows, tf.shape(length, tf.int64)[0]))
    return kept


def _lengths_to_splits(lengths: tf.Tensor) -> tf.Tensor:
    return tf.concat([tf.zeros([1], tf.int64), tf.cumsum(lengths)], axis=0)


def _row_positions(row_splits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """For each flat token: its row and its position j within the row (int64)."""
    token = tf.range(row_splits[-1])
    rows = tf.searchsorted(row_splits[1:], token, side="right", out_type=tf.int64)
    return rows, token - tf.gather(row_splits, rows)


class BertPreprocessor(tf.Module):
    """The preprocessor as a savable module. `vocab_file` must list [PAD] first."""

    def __init__(self, vocab_file: str | Path, seq_length: int = 128, lower_case: bool = True,
                 name: str = "bert_preprocessor"):
        super().__init__(name=name)
        vocab = read_vocab_file(vocab_file)
        if seq_length < 2:
            raise ValueError(f"seq_length must be >= 2 ([CLS] and [SEP]), got {seq_length}")
        self.default_seq_length = int(seq_length)
        self.cls_id = vocab.index(CLS_TOKEN)
        self.sep_id = vocab.index(SEP_TOKEN)
        self.vocab_size = len(vocab)
        self.lower_case = lower_case
        # An Asset: saving copies vocab.txt into the SavedModel and loading points here.
        self.vocab_file = tf.saved_model.Asset(str(vocab_file))
        initializer = tf.lookup.TextFileInitializer(
            self.vocab_file, key_dtype=tf.string, key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            value_dtype=tf.int64, value_index=tf.lookup.TextFileIndex.LINE_NUMBER)
        self._vocab_table = tf.lookup.StaticVocabularyTable(initializer, num_oov_buckets=1)
        self._tokenizer = tf_text.BertTokenizer(
            self._vocab_table, token_out_type=tf.int64, unknown_token=UNK_TOKEN,
            lower_case=lower_case, max_bytes_per_word=MAX_BYTES_PER_WORD)

    # ------------------------------------------------------------------ graph functions

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, text):
        """string [batch] -> encoder inputs at the default seq_length."""
        outputs = self._pack_inputs([self._tokenize(text)], self.default_seq_length)
        return {name: tf.ensure_shape(value, [None, self.default_seq_length])
                for name, value in outputs.items()}

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, text):
        """string [batch] -> int32 ragged [batch, (words), (wordpieces)]."""
        return self._tokenize(text)

    @tf.function(autograph=False)
    def bert_pack_inputs(self, segments, seq_length=None):
        """list of ragged int segments -> dict of int32 [batch, seq_length] encoder inputs."""
        return self._pack_inputs(segments, seq_length)

    def _tokenize(self, text):
        tokens = self._tokenizer.tokenize(text)
        return tokens.with_flat_values(tf.cast(tokens.flat_values, tf.int32))

    def _pack_inputs(self, segments, seq_length=None):
        if seq_length is None:
            seq_length = self.default_seq_length
        if not isinstance(segments, (list, tuple)):
            segments = [segments]
        if not segments:
            raise ValueError("bert_pack_inputs needs at least one segment")
        segments = [_as_token_rows(segment, index) for index, segment in enumerate(segments)]
        seq_length = tf.cast(seq_length, tf.int64)
        num_specials = len(segments) + 1  # [CLS] and one [SEP] per segment
        check = tf.debugging.assert_greater_equal(
            seq_length, tf.constant(num_specials, tf.int64),
            message=f"seq_length too small for {len(segments)} segment(s) plus specials")
        with tf.control_dependencies([check]):
            budget = seq_length - num_specials
        kept = round_robin_lengths([splits[1:] - splits[:-1] for _, splits in segments], budget)

        # Scatter every token, [CLS] and [SEP] straight to its packed position:
        # row layout is [CLS] seg_0[:kept_0] [SEP] seg_1[:kept_1] [SEP] ... then padding.
        # Trimmed tokens go to an extra last column that is cut off afterwards.
        batch_size = tf.shape(segments[0][1], tf.int64)[0] - 1
        row_ids = tf.range(batch_size)
        zeros = tf.zeros_like(row_ids)
        indices = [tf.stack([row_ids, zeros], axis=1)]
        word_ids = [tf.fill([batch_size], self.cls_id)]
        type_ids = [tf.zeros([batch_size], tf.int32)]
        start = zeros + 1  # where the current segment begins, per row
        for index, ((values, splits), length) in enumerate(zip(segments, kept)):
            rows, position = _row_positions(splits)
            columns = tf.where(position < tf.gather(length, rows),
                               tf.gather(start, rows) + position, seq_length)
            indices.append(tf.stack([rows, columns], axis=1))
            word_ids.append(values)
            type_ids.append(tf.fill(tf.shape(rows), index))
            start += length
            indices.append(tf.stack([row_ids, start], axis=1))
            word_ids.append(tf.fill([batch_size], self.sep_id))
            type_ids.append(tf.fill([batch_size], index))
            start += 1
        indices = tf.concat(indices, axis=0)
        shape = tf.stack([batch_size, seq_length + 1])

        def scatter(values):
            return tf.scatter_nd(indices, tf.concat(values, axis=0), shape)[:, :-1]

        # Padding is 0 in all three outputs ([PAD] is id 0 in every vocab we accept).
        return {
            INPUT_WORD_IDS: scatter(word_ids),
            INPUT_MASK: scatter([tf.ones_like(ids) for ids in word_ids]),
            INPUT_TYPE_IDS: scatter(type_ids),
        }

    # ------------------------------------------------------------------ saving

    def trace_for_saving(self) -> None:
        """Traces `bert_pack_inputs` for 1..MAX_SAVED_SEGMENTS segments, each either
        [batch, (words), (pieces)] (from `tokenize`) or [batch, (tokens)], with any
        seq_length or none (the builder's default)."""
        seq_length_spec = tf.TensorSpec([], tf.int32)
        for ragged_rank in (2, 1):
            segment_spec = tf.RaggedTensorSpec(
                [None] * (ragged_rank + 1), tf.int32, ragged_rank=ragged_rank,
                row_splits_dtype=tf.int64)
            for count in range(1, MAX_SAVED_SEGMENTS + 1):
                specs = [segment_spec] * count
                self.bert_pack_inputs.get_concrete_function(specs, seq_length=seq_length_spec)
                self.bert_pack_inputs.get_concrete_function(specs)


def _as_token_rows(segment, index: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A segment as (int32 token values, int64 row splits) of [batch, (tokens)].

    Works on the flat values and splits directly: the RaggedTensor helpers (merge_dims,
    value_rowids) add validation ops that make every traced signature slow to build.
    """
    if not isinstance(segment, tf.RaggedTensor):
        raise TypeError(f"bert_pack_inputs: segment {index} must be a RaggedTensor "
                        f"(from `tokenize`), got {type(segment).__name__}")
    if segment.shape.rank not in (2, 3) or segment.ragged_rank != segment.shape.rank - 1:
        raise ValueError(f"bert_pack_inputs: segment {index} has shape {segment.shape}; "
                         "expected ragged [batch, (words), (pieces)] or [batch, (tokens)]")
    splits = tf.cast(segment.row_splits, tf.int64)
    if segment.shape.rank == 3:  # a row's tokens end where its last word's pieces end
        splits = tf.gather(tf.cast(segment.values.row_splits, tf.int64), splits)
    return tf.cast(segment.flat_values, tf.int32), splits


def save_bert_preprocessor(vocab_file: str | Path, out_dir: str | Path, seq_length: int = 128,
                           lower_case: bool = True) -> Path:
    """Builds and saves a preprocessor SavedModel over `vocab_file` (atomically)."""

    def write(tmp_dir: Path) -> None:
        preprocessor = BertPreprocessor(vocab_file, seq_length=seq_length, lower_case=lower_case)
        preprocessor.trace_for_saving()
        tf.saved_model.save(preprocessor, str(tmp_dir),
                            signatures={"serving_default": preprocessor.__call__})

    return save_atomically(out_dir, write)
