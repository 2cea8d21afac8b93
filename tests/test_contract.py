"""The export contract: one text rule on both sides, the version layout, the signature specs."""

from __future__ import annotations

import pytest
import tensorflow as tf

from tfmmsearch.contract import (
    SIGNATURE_ALIASES,
    SIGNATURE_INPUTS,
    SIGNATURE_OUTPUTS,
    base_dir_of,
    has_text,
    has_text_tensor,
    input_signature,
    list_versions,
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


def test_signatures_in_and_out_cover_the_same_names():
    assert set(SIGNATURE_INPUTS) == set(SIGNATURE_OUTPUTS)
    assert set(SIGNATURE_ALIASES) <= set(SIGNATURE_INPUTS)
    specs = input_signature("rank")
    assert [(s.name, s.dtype, s.shape.as_list()) for s in specs] == [
        ("query", tf.string, [None]), ("product_ids", tf.string, [None, None])]


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
