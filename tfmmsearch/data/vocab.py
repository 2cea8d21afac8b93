"""WordPiece vocabularies learned from catalog text, for the tiny fixture BERT.

A fixture BERT with BERT's 30k vocabulary would spend most of its weights on words no
catalog uses; learning a few thousand word pieces from the catalog's own titles keeps it
small while every title still tokenizes into known pieces. Learning is delegated to
keras-nlp (Keras 3 lives in this process only for this computation; nothing Keras 3 goes
into a model). Text is lower-cased and accent-stripped exactly as the in-graph BERT
tokenizer does, so the pieces learned are the pieces the preprocessor will look for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
# [PAD] must be id 0: BERT inputs are zero-padded and input_mask marks the padding.
RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)


def learn_wordpiece_vocabulary(texts: Iterable[str], vocab_size: int,
                               lowercase: bool = True) -> list[str]:
    """Learns a WordPiece vocabulary of at most `vocab_size` tokens from `texts`.

    The result starts with RESERVED_TOKENS ([PAD] first), then single characters and
    word pieces ("##" marks a piece continuing a word). Deterministic for equal inputs.
    With `lowercase`, text is also stripped of accents (BERT "uncased" convention).
    """
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
    if not any(text.strip() for text in texts):
        raise ValueError("cannot learn a vocabulary: no non-empty text given")
    if vocab_size <= len(RESERVED_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beyond the "
                         f"{len(RESERVED_TOKENS)} reserved tokens")

    import tensorflow as tf
    # keras-nlp is imported here so that importing this module stays cheap and Keras 3
    # is only loaded by callers that actually learn a vocabulary.
    import keras_nlp

    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, dtype=tf.string)).batch(1024)
    vocab = keras_nlp.tokenizers.compute_word_piece_vocabulary(
        dataset,
        vocabulary_size=vocab_size,
        lowercase=lowercase,
        strip_accents=lowercase,
        split=True,
        reserved_tokens=list(RESERVED_TOKENS),
    )
    vocab = [token.decode("utf-8") if isinstance(token, bytes) else str(token) for token in vocab]
    _check_vocabulary(vocab, source="learned vocabulary")
    return vocab


def write_vocab_file(vocab: Sequence[str], path: str | Path) -> Path:
    """Writes one token per line (the BERT vocab.txt format); returns the path."""
    _check_vocabulary(vocab, source=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    return path


def read_vocab_file(path: str | Path) -> list[str]:
    """Reads a vocab.txt, one token per line; blank or duplicate lines are errors."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab = [line.rstrip("\r") for line in lines]
    _check_vocabulary(vocab, source=str(path))
    return vocab


def _check_vocabulary(vocab: Sequence[str], source: str) -> None:
    """A vocab the in-graph lookup table can load: non-empty, unique, single-line tokens."""
    if not vocab:
        raise ValueError(f"{source}: vocabulary is empty")
    seen: dict[str, int] = {}
    for line, token in enumerate(vocab, start=1):
        if not token or token != token.strip() or "\n" in token:
            raise ValueError(f"{source}: line {line}: token {token!r} is empty or has whitespace")
        if token in seen:
            raise ValueError(f"{source}: line {line}: token {token!r} repeats line {seen[token]}")
        seen[token] = line
    if vocab[0] != PAD_TOKEN:
        raise ValueError(f"{source}: line 1 is {vocab[0]!r}; {PAD_TOKEN} must be first (id 0 pads)")
    for token in (UNK_TOKEN, CLS_TOKEN, SEP_TOKEN):
        if token not in seen:
            raise ValueError(f"{source}: vocabulary lacks the special token {token}")
