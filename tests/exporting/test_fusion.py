"""Fusion of the dense and lexical lists equals a plain numpy reference, ties and edges included.

The functions run inside tf.functions with unknown shapes and scalar-tensor parameters, as the
export traces them; scores come from small value sets so that ties are common.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.exporting.fusion import convex_fusion, reciprocal_rank_fusion

EXCLUDED = -np.inf
f32 = np.float32
_SCORES = tf.TensorSpec([None, None], tf.float32)
_SCALAR = tf.TensorSpec([], tf.float32)
_COUNT = tf.TensorSpec([], tf.int32)

rrf = tf.function(lambda dense, lexical, candidates, k: reciprocal_rank_fusion(
    dense, lexical, candidates, k), input_signature=[_SCORES, _SCORES, _COUNT, _SCALAR])
convex = tf.function(lambda dense, lexical, weight, candidates: convex_fusion(
    dense, lexical, weight, candidates), input_signature=[_SCORES, _SCORES, _SCALAR, _COUNT])


def reference_rrf(dense, lexical, candidates, k):
    """Positions and fused scores, one query at a time, straight from the definition."""
    positions, scores = [], []
    for dense_row, lexical_row in zip(dense, lexical):
        count = min(candidates, len(dense_row))
        allowed = [i for i in range(len(dense_row)) if dense_row[i] > EXCLUDED]
        dense_list = sorted(allowed, key=lambda i: (-dense_row[i], i))[:count]
        lexical_list = sorted((i for i in allowed if lexical_row[i] > 0),
                              key=lambda i: (-lexical_row[i], i))[:count]
        fused = {}
        for ranked in (dense_list, lexical_list):
            for rank, item in enumerate(ranked, start=1):
                fused[item] = fused.get(item, f32(0)) + f32(1 / (np.float64(f32(k)) + rank))
        best = sorted(fused, key=lambda i: (-fused[i], -dense_row[i], i))
        excluded = [i for i in range(len(dense_row)) if dense_row[i] == EXCLUDED]
        row = (best + excluded)[:count]
        positions.append(row)
        scores.append([fused.get(i, EXCLUDED) for i in row])
    return positions, scores


def reference_convex(dense, lexical, weight, candidates):
    positions, scores = [], []
    weight = f32(weight)
    for dense_row, lexical_row in zip(dense, lexical):
        allowed = dense_row > EXCLUDED
        best = lexical_row[allowed].max(initial=f32(0))
        scale = (f32(1) - weight) / best if best > 0 else f32(0)
        with np.errstate(invalid="ignore"):  # 0 * -inf of excluded items, replaced below
            fused = np.where(allowed, weight * dense_row + scale * lexical_row, EXCLUDED)
        row = sorted(range(len(dense_row)), key=lambda i: (-fused[i], i))[:candidates]
        positions.append(row)
        scores.append([fused[i] for i in row])
    return positions, scores


def random_case(rng, batch, items):
    dense = rng.choice(np.array([-0.5, 0.1, 0.3, 0.3, 0.8], f32), size=(batch, items))
    dense[rng.random((batch, items)) < 0.3] = EXCLUDED
    lexical = rng.choice(np.array([0, 0, 0, 0.7, 1.5, 2.25], f32), size=(batch, items))
    if batch:
        lexical[0] = 0  # a query that matches nothing lexically
        dense[-1, : items // 2] = EXCLUDED  # half the catalog filtered away
    if batch > 2:
        dense[1] = EXCLUDED  # a filter nothing passes
        lexical[2, rng.random(items) < 0.5] = 0
    return dense, lexical


def assert_same(got, expected, shape):
    got_positions, got_scores = (t.numpy() for t in got)
    positions, scores = expected
    assert got_positions.dtype == np.int32 and got_scores.dtype == np.float32
    assert got_positions.shape == got_scores.shape == shape
    np.testing.assert_array_equal(got_positions, np.array(positions, np.int32).reshape(shape))
    np.testing.assert_array_equal(got_scores, np.array(scores, np.float32).reshape(shape))


CASES = [(seed, batch, items, candidates)
         for seed, (batch, items, candidates) in enumerate([
             (4, 30, 5), (4, 30, 30), (3, 12, 40), (5, 1, 3), (4, 25, 1), (2, 0, 5), (0, 7, 3),
             (6, 60, 12)])]


@pytest.mark.parametrize("seed,batch,items,candidates", CASES)
@pytest.mark.parametrize("k", [0.0, 1.0, 60.0])
def test_reciprocal_rank_fusion_matches_the_reference(seed, batch, items, candidates, k):
    dense, lexical = random_case(np.random.default_rng(seed), batch, items)
    assert_same(rrf(dense, lexical, candidates, k), reference_rrf(dense, lexical, candidates, k),
                (batch, min(candidates, items)))


@pytest.mark.parametrize("seed,batch,items,candidates", CASES)
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_convex_fusion_matches_the_reference(seed, batch, items, candidates, weight):
    dense, lexical = random_case(np.random.default_rng(seed), batch, items)
    assert_same(convex(dense, lexical, weight, candidates),
                reference_convex(dense, lexical, weight, candidates),
                (batch, min(candidates, items)))


def test_reciprocal_rank_fusion_by_hand():
    dense = np.array([[0.9, 0.1, EXCLUDED, 0.5, 0.5]], f32)
    lexical = np.array([[0.0, 2.0, 3.0, 0.0, 1.0]], f32)  # item 2 is excluded: no lexical rank
    positions, scores = (t.numpy() for t in rrf(dense, lexical, 3, 60.0))
    # dense list 0, 3, 4 (3 before 4: equal, lower position); lexical list 1, 4.
    # Item 4: 1/63 + 1/62; items 0 and 1 tie at 1/61, the better dense score first.
    assert positions.tolist() == [[4, 0, 1]]
    np.testing.assert_allclose(scores, [[1 / 63 + 1 / 62, 1 / 61, 1 / 61]], rtol=1e-6)
    # With longer lists item 1 is 4th in the dense one: 1/64 + 1/61 beats item 4's 1/63 + 1/62.
    positions, scores = (t.numpy() for t in rrf(dense, lexical, 10, 60.0))
    assert positions.tolist() == [[1, 4, 0, 3, 2]] and scores[0, -1] == EXCLUDED


def test_convex_fusion_scales_bm25_by_the_best_allowed_item():
    dense = np.array([[0.2, 0.4, EXCLUDED], [0.2, 0.4, 0.6]], f32)
    lexical = np.array([[1.0, 0.0, 8.0], [0.0, 0.0, 0.0]], f32)
    positions, scores = (t.numpy() for t in convex(dense, lexical, 0.5, 3))
    # Row 0: the excluded item's 8.0 does not set the scale; 1.0 is the best allowed BM25.
    assert positions.tolist() == [[0, 1, 2], [2, 1, 0]]
    np.testing.assert_allclose(scores, [[0.6, 0.2, EXCLUDED], [0.3, 0.2, 0.1]], rtol=1e-6)


def test_parameters_read_from_variables_change_a_traced_function():
    k, weight = tf.Variable(60.0), tf.Variable(1.0)
    fuse = tf.function(lambda dense, lexical: (reciprocal_rank_fusion(dense, lexical, 3, k)[1],
                                               convex_fusion(dense, lexical, weight, 3)[0]))
    dense = tf.constant([[0.9, 0.5, 0.1]])
    lexical = tf.constant([[0.0, 0.0, 4.0]])
    rrf_scores, order = fuse(dense, lexical)
    assert order.numpy().tolist() == [[0, 1, 2]]
    k.assign(0.0)
    weight.assign(0.0)
    new_scores, new_order = fuse(dense, lexical)
    assert new_order.numpy().tolist() == [[2, 0, 1]]  # BM25 only; the rest by position
    np.testing.assert_allclose(rrf_scores.numpy(), [[1 / 61 + 1 / 63, 1 / 61, 1 / 62]], rtol=1e-6)
    np.testing.assert_allclose(new_scores.numpy(), [[1 + 1 / 3, 1, 1 / 2]], rtol=1e-6)
    assert fuse.experimental_get_tracing_count() == 1
