"""A tiny BERT (2 layers, hidden 64) with a vocabulary learned from catalog text.

It is the fixture the tests, the demo and CPU-only smoke runs use in place of a pretrained
BERT: same module interfaces, built in seconds, no download. Its weights are random (seeded)
until training moves them; its vocabulary comes from the catalog, so catalog words are
whole tokens rather than [UNK] or character soup.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from tfmmsearch.data.vocab import learn_wordpiece_vocabulary, write_vocab_file
from tfmmsearch.hub.bert_encoder import BertEncoderConfig, build_bert_encoder, save_bert_encoder
from tfmmsearch.hub.bert_preprocessor import save_bert_preprocessor
from tfmmsearch.hub.text_module import VOCAB_FILENAME

PREPROCESSOR_SUBDIR = "preprocessor"
ENCODER_SUBDIR = "encoder"
TINY_HIDDEN_SIZE = 64
TINY_NUM_LAYERS = 2
TINY_NUM_HEADS = 2
TINY_INTERMEDIATE_SIZE = 256
# Room to pack longer sequences later than the default seq_length, at a small cost.
TINY_MIN_POSITIONS = 128


def tiny_bert_config(vocab_size: int, seq_length: int = 32) -> BertEncoderConfig:
    """The tiny encoder's hyper-parameters for a vocabulary of `vocab_size` tokens."""
    return BertEncoderConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_HIDDEN_SIZE,
        num_layers=TINY_NUM_LAYERS,
        num_heads=TINY_NUM_HEADS,
        intermediate_size=TINY_INTERMEDIATE_SIZE,
        max_position_embeddings=max(seq_length, TINY_MIN_POSITIONS),
    )


def build_tiny_bert_modules(out_dir: str | Path, texts: Iterable[str], vocab_size: int = 2000,
                            seq_length: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """Learns a vocabulary from `texts`, writes out_dir/preprocessor and out_dir/encoder.

    Returns (preprocessor_dir, encoder_dir). `vocab_size` is an upper bound: the learner
    stops earlier when the texts have fewer useful pieces. Equal arguments give equal modules.
    """
    vocab = learn_wordpiece_vocabulary(texts, vocab_size, lowercase=True)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="tiny-bert-vocab-") as tmp:
        vocab_file = write_vocab_file(vocab, Path(tmp) / VOCAB_FILENAME)
        preprocessor_dir = save_bert_preprocessor(vocab_file, out_dir / PREPROCESSOR_SUBDIR,
                                                  seq_length=seq_length, lower_case=True)
    encoder = build_bert_encoder(tiny_bert_config(len(vocab), seq_length), seed=seed,
                                 name="tiny_bert")
    encoder_dir = save_bert_encoder(encoder, out_dir / ENCODER_SUBDIR)
    return preprocessor_dir, encoder_dir
