"""Product splits: disjoint, complete, near the fractions, stable as the catalog grows."""

import random

import pytest

from tfmmsearch.data.splits import SplitError, split_products, validate_fractions


def _ids(count, prefix="p"):
    return [f"{prefix}{index}" for index in range(count)]


def test_splits_are_disjoint_and_cover_every_product():
    ids = _ids(2000)
    splits = split_products(ids, (0.8, 0.1, 0.1), seed=3)
    assert list(splits) == ["train", "validation", "test"]
    members = [set(split) for split in splits.values()]
    assert sum(len(split) for split in splits.values()) == len(ids)
    assert members[0] | members[1] | members[2] == set(ids)
    assert not (members[0] & members[1] or members[0] & members[2] or members[1] & members[2])
    # Input order is kept inside each split.
    for split in splits.values():
        assert split == sorted(split, key=ids.index)


def test_split_sizes_follow_the_fractions():
    splits = split_products(_ids(20000), (0.7, 0.2, 0.1), seed=0)
    shares = {name: len(ids) / 20000 for name, ids in splits.items()}
    assert shares["train"] == pytest.approx(0.7, abs=0.015)
    assert shares["validation"] == pytest.approx(0.2, abs=0.015)
    assert shares["test"] == pytest.approx(0.1, abs=0.015)


def test_split_is_deterministic_by_seed_and_order_independent():
    ids = _ids(500)
    first = split_products(ids, seed=7)
    assert split_products(ids, seed=7) == first
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    reshuffled = split_products(shuffled, seed=7)
    assert {name: set(v) for name, v in reshuffled.items()} == {name: set(v) for name, v in first.items()}
    assert split_products(ids, seed=8)["train"] != first["train"]


def test_adding_products_never_moves_existing_ones():
    old = _ids(1000)
    before = split_products(old, seed=5)
    after = split_products(old + _ids(3000, prefix="new"), seed=5)
    for name in before:
        assert set(before[name]) == set(after[name]) & set(old)


def test_zero_fraction_leaves_a_split_empty():
    splits = split_products(_ids(1000), (0.9, 0.1, 0.0))
    assert splits["test"] == []
    assert len(splits["train"]) + len(splits["validation"]) == 1000
    only_test = split_products(_ids(100), {"train": 0.0, "validation": 0.0, "test": 1.0})
    assert len(only_test["test"]) == 100


@pytest.mark.parametrize("fractions, message", [
    ((0.8, 0.1, 0.2), "sum to 1"),
    ((0.5, 0.5), "need 3 values"),
    ((1.2, -0.1, -0.1), "'validation' must be >= 0"),
    ((0.8, float("nan"), 0.1), "finite number"),
    ((0.8, "0.1", 0.1), "finite number"),
    ({"train": 0.8, "valid": 0.1, "test": 0.1}, "unknown: ['valid']"),
])
def test_bad_fractions_raise_clear_errors(fractions, message):
    with pytest.raises(SplitError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split_products(_ids(10), fractions)


def test_validate_fractions_accepts_a_mapping_and_rounding_noise():
    assert validate_fractions({"test": 0.1, "train": 0.8, "validation": 0.1}) == (0.8, 0.1, 0.1)
    assert validate_fractions((0.7, 0.2, 0.1)) == (0.7, 0.2, 0.1)  # sums to 0.9999999999999999


def test_duplicate_or_empty_ids_are_rejected():
    with pytest.raises(SplitError, match="'p1' .*appears twice"):
        split_products(["p0", "p1", "p1"])
    with pytest.raises(SplitError, match="position 1"):
        split_products(["p0", ""])
