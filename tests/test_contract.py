"""The export contract: one text rule on both sides, the version layout, the signature specs."""

from __future__ import annotations

import pytest
import tensorflow as tf

from tfmmsearch.contract import (
    MODALITIES,
    SIGNATURE_ALIASES,
    SIGNATURE_INPUTS,
    SIGNATURE_OUTPUTS,
    attribute_value,
    attribute_value_tensor,
    base_dir_of,
    has_text,
    has_text_tensor,
    input_signature,
    list_versions,
    parse_number,
    parse_number_tensor,
    resolve_version_dir,
)
from tfmmsearch.data.schema import Product

TEXTS = ["", " ", "\t\n\r\f\v", "a", "  Red Dress ", "\u00a0", "\u3000", "x\n", "\n\n.", "é"]


def test_python_and_graph_agree_on_which_texts_are_present():
    python = [has_text(text) for text in TEXTS]
    graph = has_text_tensor(tf.constant(TEXTS)).numpy().tolist()
    assert python == graph
    assert python == [False, False, False, True, True, True, True, True, True, True]
    # The catalog's Product uses the same rule (what training's has_title reads).
    assert [Product("p", text, None).has_title for text in TEXTS] == python
    assert has_text_tensor(tf.constant([["", "b"]])).numpy().tolist() == [[False, True]]


VALUES = ["", " ", "NA", " na\t", "N/A", "NaN", "null", "NONE", "Nai", "Nike", "  Nike ", "NIKE",
          "\u00a0", "Café", "12.5", " 1299.00 ", "1,299", "12 USD", "-3", "+4.", ".5", "1e5",
          "2E-3", "1e400", "1" * 16, "1" * 15, "inf", "nan", "0x1A", "\u0661\u0662", "5."]


def test_python_and_graph_agree_on_attribute_values_and_numbers():
    stripped, present = attribute_value_tensor(tf.constant(VALUES))
    graph = [value.decode() if ok else None
             for value, ok in zip(stripped.numpy().tolist(), present.numpy().tolist())]
    assert graph == [attribute_value(v) for v in VALUES]
    assert [attribute_value(v) for v in VALUES[:9]] == [None] * 8 + ["Nai"]
    assert attribute_value("  Nike ") == "Nike" and attribute_value("\u00a0") == "\u00a0"

    numbers, present = parse_number_tensor(tf.constant(VALUES))
    graph = [value if ok else None for value, ok in zip(numbers.numpy().tolist(),
                                                       present.numpy().tolist())]
    python = [parse_number(v) for v in VALUES]
    assert graph == python  # float64 on both sides, parsed from the same digits
    assert python[VALUES.index(" 1299.00 ")] == 1299.0 and python[VALUES.index("2E-3")] == 0.002
    for unparsed in ("1,299", "12 USD", "1e400", "1" * 16, "inf", "nan", "0x1A", "\u0661\u0662"):
        assert parse_number(unparsed) is None, unparsed
    assert parse_number("1" * 15) == 111111111111111.0 and parse_number("5.") == 5.0


def test_modalities_name_the_attribute_modality_last():
    # Mask and modality_weights columns: a client reading weights[..., :2] keeps title and image.
    assert MODALITIES == ("text", "image", "attributes")


def test_signatures_in_and_out_cover_the_same_names():
    assert set(SIGNATURE_INPUTS) == set(SIGNATURE_OUTPUTS)
    assert set(SIGNATURE_ALIASES) <= set(SIGNATURE_INPUTS)
    specs = input_signature("rank")
    assert [(s.name, s.dtype, s.shape.as_list()) for s in specs] == [
        ("query", tf.string, [None]), ("product_ids", tf.string, [None, None])]
    assert [(s.name, s.shape.as_list()) for s in input_signature("embed_item")] == [
        ("title", [None]), ("image", [None]), ("attributes", [None, None])]


def _version(base, name):
    (base / name).mkdir(parents=True)
    (base / name / "saved_model.pb").write_bytes(b"")
    return base / name


def test_versions_are_integer_folders_holding_a_saved_model(tmp_path):
    base = tmp_path / "model"
    one, ten = _version(base, "1"), _version(base, "10")
    (base / "2").mkdir()  # empty: not a version
    _version(base, ".tmp-3-123-abc")  # a write in progress: not a version
    assert list_versions(base) == {1: one, 10: ten}
    assert resolve_version_dir(base) == ten
    assert resolve_version_dir(one) == one
    assert base_dir_of(one) == base and base_dir_of(base) == base
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_version_dir(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="tfmmsearch export"):
        resolve_version_dir(base / "2")
