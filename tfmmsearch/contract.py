"""The export contract: what training, the serving graph, the clients and the tests agree on.

One place for the facts every layer of the package must read the same way: the serving
signatures (names, inputs, outputs, dtypes), the fields the in-graph index stores, the order
of the modalities, when an item "has a title" (and a query has text), how product ids are fingerprinted, and how a
TF Serving model base path lays out its versions. Everything else imports these names
instead of retyping them, so a change here is a change everywhere.

This module is a leaf: it imports nothing from tfmmsearch, and TensorFlow only inside the
functions that build tensors (the REST client and the config tools stay light).
"""

from __future__ import annotations

from pathlib import Path

# --------------------------------------------------------------------------- modalities

# Order of modality_weights / mask columns everywhere. "attributes" is the item-feature modality
# (config model.item_features: brand, price, ...); a model without item features masks it always,
# so its column is 0 in every mask and weight.
MODALITIES = ("text", "image", "attributes")

# --------------------------------------------------------------------------- search logs

# A search session's fields (data/search_log.py reads them; configs may map a log's own names).
SEARCH_LOG_FIELDS = ("session_id", "timestamp", "query", "shown", "clicked", "purchased")

# --------------------------------------------------------------------------- the text rule

# A title (or a query) is present when it holds a character other than these (ASCII
# whitespace): an item without one is a photo-only item, a query without one finds nothing. Python's
# str.strip() also strips Unicode spaces and tf.strings.strip does not, so both sides use this
# set explicitly: a title of "\u00a0" counts as present in training and in the graph alike.
TEXT_WHITESPACE = " \t\n\r\f\v"


def has_text(text: str | None) -> bool:
    """Whether a title or query counts as present (Python side of the rule)."""
    return bool(text) and bool(text.strip(TEXT_WHITESPACE))


def has_text_tensor(texts):
    """The same rule on a string tensor (any shape) -> bool tensor; core TF ops only."""
    import tensorflow as tf

    blank = "[" + "".join(f"\\x{ord(c):02x}" for c in TEXT_WHITESPACE) + "]*"
    return tf.logical_not(tf.strings.regex_full_match(texts, blank))


# --------------------------------------------------------------------------- attribute values

# Item-feature values (model.item_features) travel as strings, one column per configured feature,
# in training and in the `embed_item` signature alike. A value is missing when, stripped of
# TEXT_WHITESPACE, it is empty or one of these words in any letter case: the item then has no
# value for that feature (masked; an item with no feature present has no attribute modality).
MISSING_ATTRIBUTE_VALUES = ("", "na", "n/a", "nan", "null", "none")
# A numeric feature's value is a plain decimal number (stripped as above): optional sign, at most
# 15 integer digits, optional fraction and a two-digit exponent. Anything else ("1,299", "12 USD",
# "inf") is missing, not an error: a catalog column is data, not a request to fail on. The limits
# keep every accepted value finite in float64 on both sides.
NUMBER_PATTERN = r"[+-]?([0-9]{1,15}(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,2})?"


def _whitespace_class() -> str:
    return "[" + "".join(f"\\x{ord(c):02x}" for c in TEXT_WHITESPACE) + "]"


def attribute_value(value: str | None) -> str | None:
    """An attribute value as the model reads it (Python side): stripped of TEXT_WHITESPACE, or
    None when missing (see MISSING_ATTRIBUTE_VALUES). Case is kept: "Nike" and "NIKE" differ."""
    stripped = (value or "").strip(TEXT_WHITESPACE)
    return None if stripped.lower() in MISSING_ATTRIBUTE_VALUES else stripped


def parse_number(value: str | None) -> float | None:
    """A numeric attribute value (Python side of NUMBER_PATTERN), or None when missing."""
    import re

    stripped = attribute_value(value)
    if stripped is None or not re.fullmatch(NUMBER_PATTERN, stripped):
        return None
    return float(stripped)


def attribute_value_tensor(values):
    """The same rule on a string tensor (any shape) -> (stripped values, present bool tensor)."""
    import tensorflow as tf

    space = _whitespace_class()
    stripped = tf.strings.regex_replace(values, f"^{space}+|{space}+$", "")
    missing = "(?i)(" + "|".join(MISSING_ATTRIBUTE_VALUES) + ")"
    return stripped, tf.logical_not(tf.strings.regex_full_match(stripped, missing))


def parse_number_tensor(values):
    """`parse_number` on a string tensor -> (float64 values, 0 where missing; present bool)."""
    import tensorflow as tf

    stripped, present = attribute_value_tensor(values)
    present = tf.logical_and(present, tf.strings.regex_full_match(stripped, NUMBER_PATTERN))
    numbers = tf.strings.to_number(tf.where(present, stripped, "0"), tf.float64)
    return numbers, present


# --------------------------------------------------------------------------- product ids

FINGERPRINT_BUCKETS = 2**62  # 62-bit fingerprints: collisions are checked by a string compare


def fingerprint(ids):
    """int64 fingerprints of string product ids (sorted lookup in the index, id gathering)."""
    import tensorflow as tf

    return tf.strings.to_hash_bucket_fast(ids, FINGERPRINT_BUCKETS)


UNKNOWN_SCORE = -1e30  # `rank` score of a product id the index does not hold (see `known`)

# --------------------------------------------------------------------------- the index

INDEX_FIELDS = ("embedding", "text", "image", "mask", "modality_weights")  # per item, float32


def index_field_widths(embedding_dim: int) -> dict[str, int]:
    """Width of each INDEX_FIELDS row: vectors are embedding_dim wide, mask and weights one
    column per modality."""
    return {"embedding": embedding_dim, "text": embedding_dim, "image": embedding_dim,
            "mask": len(MODALITIES), "modality_weights": len(MODALITIES)}


LEXICAL_FIELD = "title_words"  # int64 hashed title words: BM25 retrieval and a lexical head
FILTER_VALUES_FIELD = "filter_values"  # string [N, F]: the items' export.filters columns
CONTENT_HASH_FIELD = "content_hashes"  # string [N]: what each item was embedded from
# float32 [embedding_dim] attribute-modality vectors, only for a model with item features (its
# ranking head reads them); the item-feature columns, in order, are EXPORT_ITEM_FEATURES_FILE.
ATTRIBUTES_FIELD = "attributes"
# Every export holds its item-feature columns in order ([] for a model without item features)
# twice: as the string variable `item_feature_columns` of the SavedModel, and as this JSON file
# ({"columns": [...], "statistics": the vocabularies and numeric statistics}) beside the warmup
# file, for clients that do not load the model.
EXPORT_ITEM_FEATURES_FILE = "assets.extra/item_features.json"

# --------------------------------------------------------------------------- filters

# What a filterable column (config export.filters) holds: categorical values matched exactly
# (case-insensitively) or numbers matched by ranges. exporting/filters.py parses the syntax.
FILTER_KINDS = ("categorical", "numeric")
FILTER_FIELD_PATTERN = r"[A-Za-z_][A-Za-z0-9_.]*"  # a column name a filter can spell
# Every export's filterable columns and their kinds, for clients that do not load the model
# (also the SavedModel's string variables `filter_columns` and `filter_kinds`).
EXPORT_FILTERS_FILE = "assets.extra/filters.json"

# --------------------------------------------------------------------------- signatures

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MODEL_NAME = "tfmmsearch"  # the served model's name unless a config or request says otherwise

# Signatures that are another one under a second name (the same concrete function).
SIGNATURE_ALIASES = {"search": DEFAULT_SIGNATURE}

# signature -> input name -> (dtype, shape); dict order is the positional order.
SIGNATURE_INPUTS: dict[str, dict[str, tuple[str, tuple]]] = {
    "serving_default": {"query": ("string", (None,))},
    "search": {"query": ("string", (None,))},
    # filter [B]: one filter per query in the syntax of exporting/filters.py ("" = none).
    "search_filtered": {"query": ("string", (None,)), "filter": ("string", (None,))},
    "retrieve": {"query": ("string", (None,))},
    # The index alone, by query vectors [B, D] (embed_query's, or embed_item's for search by
    # photo); nprobe [B]: lists an IVF index probes (<= 0: the export's default).
    "retrieve_embedding": {"embedding": ("float32", (None, None)), "nprobe": ("int32", (None,))},
    "rank": {"query": ("string", (None,)), "product_ids": ("string", (None, None))},
    "embed_query": {"query": ("string", (None,))},
    # attributes [B, C]: item i's value of the export's j-th item-feature column (see
    # EXPORT_ITEM_FEATURES_FILE), strings as in training; C = 0 (or values that are all missing)
    # embeds the items without attributes. A model without item features takes C = 0 only.
    "embed_item": {"title": ("string", (None,)), "image": ("string", (None,)),
                   "attributes": ("string", (None, None))},
}

# signature -> output name -> dtype. REST answers carry no dtypes, so clients read them here.
SIGNATURE_OUTPUTS: dict[str, dict[str, str]] = {
    "serving_default": {"product_ids": "string", "scores": "float32", "modality_weights": "float32"},
    "search": {"product_ids": "string", "scores": "float32", "modality_weights": "float32"},
    # num_results [B]: how many of the K results are real; the rest are "" with score -inf
    # (fewer products than K satisfy the filter).
    "search_filtered": {"product_ids": "string", "scores": "float32",
                        "modality_weights": "float32", "num_results": "int32"},
    "retrieve": {"product_ids": "string", "scores": "float32"},
    "retrieve_embedding": {"product_ids": "string", "scores": "float32"},
    "rank": {"scores": "float32", "known": "bool"},
    "embed_query": {"embedding": "float32"},
    "embed_item": {"embedding": "float32", "modality_weights": "float32"},
}

# String inputs that hold raw bytes: sent as {"b64": ...} over REST, as TF Serving requires.
BINARY_INPUTS = frozenset({"image"})

SEARCH_SIGNATURES = ("serving_default", "search_filtered", "retrieve", "retrieve_embedding")  # the ones that return ranked product ids


def input_signature(signature: str) -> list:
    """`tf.TensorSpec`s of a signature's inputs, in order (for `tf.function(input_signature=)`)."""
    import tensorflow as tf

    return [tf.TensorSpec(shape, getattr(tf, dtype), name=name)
            for name, (dtype, shape) in SIGNATURE_INPUTS[signature].items()]


# --------------------------------------------------------------------------- versions on disk


def is_saved_model(path: str | Path) -> bool:
    path = Path(path)
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


def list_versions(base_dir: str | Path) -> dict[int, Path]:
    """Integer version folders holding a SavedModel under a TF Serving base path, by number.

    TF Serving serves exactly these; hidden temporaries (`.tmp-*`) and other folders are not
    versions.
    """
    base = Path(base_dir)
    if not base.is_dir():
        return {}
    return {int(child.name): child for child in sorted(base.iterdir())
            if child.is_dir() and child.name.isdigit() and is_saved_model(child)}


def resolve_version_dir(path: str | Path) -> Path:
    """`path` itself when it is a SavedModel, else the latest version under a base path."""
    path = Path(path)
    if is_saved_model(path):
        return path
    versions = list_versions(path)
    if not versions:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such directory")
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a directory")
        found = sorted(child.name for child in path.iterdir())[:10]
        raise FileNotFoundError(
            f"{path}: neither a SavedModel (no saved_model.pb) nor a TF Serving base path with "
            f"integer version folders holding one (found: {', '.join(found) or 'nothing'}); "
            f"create one with: tfmmsearch export --run RUN_DIR --base {path}")
    return versions[max(versions)]


def base_dir_of(path: str | Path) -> Path:
    """The model base path for `path`: itself, or its parent when `path` is a version folder."""
    path = Path(path)
    if path.name.isdigit() and is_saved_model(path):
        return path.parent
    return path
