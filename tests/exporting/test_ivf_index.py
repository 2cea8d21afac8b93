"""The in-graph IVF index against numpy brute force: probing every list is exact, recall rises
with nprobe, filters and padding hold, upserts keep the centroids, and drift is reported."""

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.exporting.ivf_index import IVFIndex, default_list_count, train_centroids

DIM = 32


def _clustered(n: int, clusters: int, seed: int, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around `clusters` random centres (cosine about 0.9 to their centre)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, DIM)) / np.sqrt(DIM)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def built():
    vectors = _clustered(3000, 40, seed=0)
    lists = default_list_count(len(vectors))
    index = IVFIndex(DIM)
    index.build(tf.constant(vectors), tf.constant(train_centroids(vectors, lists, seed=0)))
    queries = _clustered(3050, 40, seed=0)[3000:]
    return index, vectors, tf.Variable(vectors), queries


def _search(index, variable, queries, k, nprobe, allowed=None):
    scores, positions = tf.function(index.search)(tf.constant(queries), variable, k, nprobe,
                                                  allowed)
    return scores.numpy(), positions.numpy()


def test_default_list_count_is_about_the_square_root():
    assert default_list_count(1_000_000) == 1000
    assert default_list_count(3) == 2 and default_list_count(1) == 1 and default_list_count(0) == 1


def test_centroids_are_unit_vectors_with_no_empty_list_and_reproducible():
    vectors = _clustered(2000, 10, seed=1)
    centroids = train_centroids(vectors, 10, seed=3)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    nearest = (vectors @ centroids.T).argmax(axis=1)
    assert np.bincount(nearest, minlength=10).min() > 0
    np.testing.assert_array_equal(centroids, train_centroids(vectors, 10, seed=3))
    with pytest.raises(ValueError, match="non-empty"):
        train_centroids(np.zeros((0, DIM), np.float32), 4)


def test_every_item_is_stored_once_in_the_list_of_its_nearest_centroid(built):
    index, vectors, _, _ = built
    members, offsets = index.members.numpy(), index.offsets.numpy()
    assert sorted(members) == list(range(len(vectors)))
    nearest = (vectors @ index.centroids.numpy().T).argmax(axis=1)
    for list_id in range(len(offsets) - 1):
        assert set(members[offsets[list_id]:offsets[list_id + 1]]) == set(np.flatnonzero(nearest == list_id))
    np.testing.assert_array_equal(index.lists.numpy(), nearest)
    np.testing.assert_allclose(index.codes.numpy().astype(np.float32), vectors[members], atol=1e-2)


def test_probing_every_list_is_exact_brute_force(built):
    index, vectors, variable, queries = built
    lists = int(tf.size(index.offsets)) - 1
    scores, positions = _search(index, variable, queries, 10, lists)
    exact = queries @ vectors.T
    for row in range(len(queries)):
        np.testing.assert_array_equal(positions[row], np.argsort(-exact[row], kind="stable")[:10])
        np.testing.assert_allclose(scores[row], exact[row][positions[row]], rtol=1e-5)


def test_recall_rises_with_nprobe(built):
    index, vectors, variable, queries = built
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recalls = []
    for nprobe in (1, 2, 4, 8, 55):
        _, positions = _search(index, variable, queries, 10, nprobe)
        recalls.append(np.mean([len(set(p) & set(t)) / 10 for p, t in zip(positions, truth)]))
    assert recalls == sorted(recalls) and recalls[-1] == 1.0
    assert recalls[0] < 1.0  # one list alone misses some neighbours: the index is approximate
    assert recalls[2] >= 0.9


def test_filters_and_padding(built):
    index, vectors, variable, queries = built
    rng = np.random.default_rng(5)
    allowed = rng.random((len(queries), len(vectors))) < 0.002  # a handful of items per query
    lists = int(tf.size(index.offsets)) - 1
    scores, positions = _search(index, variable, queries, 10, lists, tf.constant(allowed))
    for row in range(len(queries)):
        matching = np.flatnonzero(allowed[row])
        expected = matching[np.argsort(-(vectors[matching] @ queries[row]), kind="stable")][:10]
        real = positions[row][positions[row] >= 0]
        np.testing.assert_array_equal(real, expected)
        assert np.all(np.isneginf(scores[row][len(real):])) and len(positions[row]) == 10


def test_place_keeps_centroids_and_drift_asks_for_a_rebuild_when_lists_move():
    vectors = _clustered(2000, 20, seed=2)
    index = IVFIndex(DIM)
    index.build(tf.constant(vectors), tf.constant(train_centroids(vectors, 20, seed=0)))
    centroids = index.centroids.numpy()
    drift = {name: value.numpy() for name, value in index.drift().items()}
    assert not drift["rebuild"] and drift["items"] == 2000 and drift["lists"] == 20
    # An upsert of products like the others: same centroids, still balanced.
    similar = np.concatenate([vectors, _clustered(200, 20, seed=2)[:200]])
    index.place(tf.constant(similar))
    np.testing.assert_array_equal(index.centroids.numpy(), centroids)
    np.testing.assert_array_equal(index.lists.numpy(), (similar @ centroids.T).argmax(axis=1))
    assert not index.drift()["rebuild"].numpy()
    # A new kind of product, far from every centroid and all in one list: rebuild.
    shifted = np.concatenate([vectors, _clustered(3000, 1, seed=9)])
    index.place(tf.constant(shifted))
    drift = {name: value.numpy() for name, value in index.drift().items()}
    assert drift["rebuild"] and drift["imbalance"] > 2 * drift["built_imbalance"]


def test_an_empty_index_answers_with_padding():
    index = IVFIndex(DIM)
    variable = tf.Variable(np.zeros((0, DIM), np.float32), shape=tf.TensorShape([None, DIM]))
    scores, positions = _search(index, variable, np.ones((2, DIM), np.float32), 5, 4)
    assert positions.shape == (2, 5) and np.all(positions == -1) and np.all(np.isneginf(scores))


def test_the_scan_finds_the_best_items_of_the_probed_lists(built):
    """Below the exact-scoring threshold the scan returns, per query, exactly the best items
    among the members of its nprobe nearest lists (bf16 scan, float32 re-score)."""
    index, vectors, variable, queries = built
    nprobe = 3  # 3 of 55 lists: far below a quarter of the index
    scores, positions = _search(index, variable, queries, 10, nprobe)
    lists = index.lists.numpy()
    nearest = np.argsort(-(queries @ index.centroids.numpy().T), axis=1)[:, :nprobe]
    for row in range(len(queries)):
        members = np.flatnonzero(np.isin(lists, nearest[row]))
        assert len(members) < len(vectors) // 4
        expected = members[np.argsort(-(vectors[members] @ queries[row]), kind="stable")][:10]
        np.testing.assert_array_equal(positions[row], expected)
        np.testing.assert_allclose(scores[row], vectors[expected] @ queries[row], rtol=1e-5)


def test_probes_wider_than_a_quarter_of_the_index_are_scored_exactly():
    """One list holding almost everything (a catalog the centroids no longer fit): exact
    scoring, not a [B, M, D] gather of nearly the whole index per query."""
    vectors = _clustered(2000, 20, seed=4)
    index = IVFIndex(DIM)
    index.build(tf.constant(vectors), tf.constant(train_centroids(vectors, 20, seed=0)))
    crowded = np.concatenate([vectors[:50], _clustered(1950, 1, seed=8)])
    index.place(tf.constant(crowded))
    # One query probes the crowded list; the others, from the old clusters, have neighbours
    # in lists they do not probe: only exact scoring of the whole batch finds those.
    queries = np.concatenate([_clustered(1, 1, seed=8), _clustered(2007, 20, seed=4)[2000:]])
    scores, positions = _search(index, tf.Variable(crowded), queries, 10, 1)
    exact = queries @ crowded.T
    for row in range(len(queries)):
        np.testing.assert_array_equal(positions[row], np.argsort(-exact[row], kind="stable")[:10])
