"""WordPiece vocabulary learning from catalog text (tfmmsearch.data.vocab)."""

import itertools

import pytest

from tfmmsearch.data.vocab import (
    RESERVED_TOKENS,
    learn_wordpiece_vocabulary,
    read_vocab_file,
    write_vocab_file,
)

# Catalog-like titles; every word recurs often enough for the learner to keep it whole.
COLOURS = ["Navy Blue", "Red", "Black", "White", "Grey"]
ARTICLES = ["Shirt", "Tshirts", "Jeans", "Backpack", "Sneakers", "Kurta"]
BRANDS = ["Puma", "Nike", "Café"]
TITLES = [f"{brand} Men {colour} {article}"
          for brand, colour, article in itertools.product(BRANDS, COLOURS, ARTICLES)]


@pytest.fixture(scope="module")
def vocab():
    return learn_wordpiece_vocabulary(TITLES, vocab_size=300)


def test_reserved_tokens_come_first_with_pad_at_zero(vocab):
    assert vocab[: len(RESERVED_TOKENS)] == list(RESERVED_TOKENS)
    assert vocab[0] == "[PAD]"
    assert len(set(vocab)) == len(vocab)


def test_frequent_catalog_words_are_whole_tokens(vocab):
    for word in ("navy", "blue", "shirt", "backpack", "sneakers", "puma", "men"):
        assert word in vocab, word


def test_text_is_lowercased_and_accents_stripped(vocab):
    assert "cafe" in vocab
    assert not any(token.lower() != token for token in vocab if token not in RESERVED_TOKENS)
    assert not any("é" in token for token in vocab)


def test_learning_is_deterministic(vocab):
    assert learn_wordpiece_vocabulary(TITLES, vocab_size=300) == vocab


def test_vocab_size_is_an_upper_bound():
    small = learn_wordpiece_vocabulary(TITLES, vocab_size=40)
    assert len(small) <= 40
    assert small[: len(RESERVED_TOKENS)] == list(RESERVED_TOKENS)


def test_write_then_read_round_trips(vocab, tmp_path):
    path = write_vocab_file(vocab, tmp_path / "sub" / "vocab.txt")
    assert read_vocab_file(path) == vocab
    assert path.read_text(encoding="utf-8").splitlines() == vocab


@pytest.mark.parametrize("texts, vocab_size, message", [
    ([], 100, "no non-empty text"),
    (["", "   "], 100, "no non-empty text"),
    (["red shirt"], 5, "leaves no room"),
])
def test_bad_learning_input_is_rejected(texts, vocab_size, message):
    with pytest.raises(ValueError, match=message):
        learn_wordpiece_vocabulary(texts, vocab_size)


def test_non_string_text_is_named():
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        learn_wordpiece_vocabulary(["red shirt", 42], 100)


@pytest.mark.parametrize("lines, message", [
    (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "red"], "line 6.*repeats line 5"),
    (["[UNK]", "[PAD]", "[CLS]", "[SEP]"], "line 1.*must be first"),
    (["[PAD]", "[UNK]", "[CLS]", "red"], "lacks the special token \\[SEP\\]"),
    (["[PAD]", "[UNK]", "", "[CLS]", "[SEP]"], "line 3"),
])
def test_bad_vocab_file_names_file_and_line(tmp_path, lines, message):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        read_vocab_file(path)
    assert str(path) in str(error.value)


@pytest.mark.slow
def test_myntra_titles_give_whole_word_tokens(myntra_dir):
    import csv

    with open(myntra_dir / "products.csv", encoding="utf-8", newline="") as handle:
        titles = [row["title"] for row in csv.DictReader(handle)][:3000]
    vocab = learn_wordpiece_vocabulary(titles, vocab_size=2000)
    assert len(vocab) <= 2000
    for word in ("men", "women", "shirt", "navy", "blue", "watch"):
        assert word in vocab, word
