"""An approximate dense index (inverted file, IVF) in core TF ops, so stock TF Serving loads it.

Exact scoring reads every item vector for every query: memory-bound, about 73 ms per query at
1M items on 2 cores, and 10M float32 vectors do not fit beside the rest of an export. ScaNN is
faster but its custom ops do not load in stock TF Serving. An IVF index needs only matmul,
top_k, gather, slices, a while loop and ragged tensors:

- partition centroids [L, D] are learned by spherical k-means (numpy, at index time,
  `train_centroids`); every item belongs to the list of its nearest centroid;
- items are stored list-contiguous as bfloat16 codes (half the bytes of float32), with
  `offsets` [L + 1] where each list starts and `members` the item position of each stored row;
- a query scores the centroids, probes the best `nprobe` lists, scores their members from the
  codes (each list read in place as one slice), keeps a short list and re-scores it exactly in
  float32 from the caller's item vectors.

Centroids stay fixed between rebuilds: `place` puts a changed catalog (upserts, deletes) in the
lists of its nearest centroids, and `drift` says when the lists have moved far enough from what
k-means built for a rebuild to pay (lists grown uneven, items far from their centroids).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfmmsearch.exporting.variable_reads import gather_rows, resizable_variable

_EXCLUDED = float("-inf")
PLACE_CHUNK = 16384  # rows per nearest-centroid matmul: [chunk, L] floats, not [N, L]
# A batch whose widest probe covers more than 1/EXACT_FROM_SHARE of the index is scored exactly.
EXACT_FROM_SHARE = 4
# (query, list) pairs scanned at once: 10 was fastest of 1, 2, 10 and 32 at 1M x batch 32.
PARALLEL_PAIRS = 10
# A rebuild pays once the lists are this much more uneven than k-means left them, or items sit
# this much further (mean cosine) from their centroids.
REBUILD_IMBALANCE_GROWTH = 2.0
REBUILD_COHESION_DROP = 0.05


def default_list_count(n: int) -> int:
    """About sqrt(N) lists: probing a few lists then reads about nprobe * sqrt(N) items."""
    return max(1, min(n, int(round(math.sqrt(max(n, 1))))))


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _nearest(vectors: np.ndarray, centroids: np.ndarray, chunk: int = PLACE_CHUNK
             ) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine of each row's nearest centroid, in chunks of rows."""
    best = np.empty(len(vectors), np.int64)
    similarity = np.empty(len(vectors), np.float32)
    for first in range(0, len(vectors), chunk):
        scores = vectors[first:first + chunk] @ centroids.T
        best[first:first + chunk] = scores.argmax(axis=1)
        similarity[first:first + chunk] = scores.max(axis=1)
    return best, similarity


def train_centroids(vectors: np.ndarray, lists: int, iterations: int = 10, seed: int = 0,
                    sample_per_list: int = 64) -> np.ndarray:
    """Spherical k-means centroids [L, D] (unit norm, float32) of `vectors` [N, D].

    Trained on a sample of `sample_per_list` points per list (the centroids barely move past
    that). A list left empty is re-seeded with the point furthest from its own centroid, so no
    list is wasted.
    """
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"train_centroids needs a non-empty [N, D] matrix, got shape {vectors.shape}")
    rng = np.random.default_rng(seed)
    lists = max(1, min(int(lists), len(vectors)))
    sample = vectors
    if len(vectors) > lists * sample_per_list:
        sample = vectors[np.sort(rng.choice(len(vectors), lists * sample_per_list, replace=False))]
    sample = _normalised(sample)
    centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
    for _ in range(iterations):
        assigned, similarity = _nearest(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assigned, sample)
        counts = np.bincount(assigned, minlength=lists)
        for empty in np.flatnonzero(counts == 0):
            furthest = int(similarity.argmin())
            sums[empty] = sample[furthest]
            similarity[furthest] = np.inf  # not chosen twice
        centroids = _normalised(sums).astype(np.float32)
    return centroids


def _list_ordered_codes(vectors, order, starts):
    """bfloat16 codes of `vectors` [N, D] in list order, filled chunk by chunk into one buffer:
    no float32 copy of the whole matrix beside the caller's (10 GB more at 10M x 256)."""
    codes = tf.zeros([tf.shape(vectors)[0], tf.shape(vectors)[1]], tf.bfloat16)
    for chunk in tf.range(tf.size(starts)):
        rows = order[starts[chunk]:starts[chunk] + PLACE_CHUNK]
        codes = tf.raw_ops.InplaceUpdate(
            x=codes, i=tf.range(starts[chunk], starts[chunk] + tf.size(rows)),
            v=tf.cast(tf.gather(vectors, rows), tf.bfloat16))
    return codes


def _exact_top(queries, vectors, k, allowed=None):
    """`IVFIndex.search`'s outputs from scoring every item exactly."""
    scores = tf.matmul(queries, vectors, transpose_b=True)
    if allowed is not None:
        scores = tf.where(allowed, scores, _EXCLUDED)
    best = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(scores)[1]))
    return _padded(best.values, tf.where(best.values > _EXCLUDED, best.indices, -1), k)


def _padded(scores, positions, k):
    """[B, k' <= k] results padded to [B, k] with score -inf and position -1."""
    missing = tf.maximum(k - tf.shape(positions)[1], 0)
    return (tf.pad(scores, [[0, 0], [0, missing]], constant_values=_EXCLUDED),
            tf.pad(positions, [[0, 0], [0, missing]], constant_values=-1))


class IVFIndex(tf.Module):
    """Partition centroids and bfloat16 codes of items stored list by list, in variables."""

    def __init__(self, dim: int, lists: int = 0, kmeans_iterations: int = 10, name: str = "ivf"):
        super().__init__(name=name)
        # How `refresh_lists` trains centroids (config export.index), kept in the export so a
        # loaded one rebuilds its lists the way it was configured (lists 0: about sqrt(N)).
        self.configured_lists = tf.Variable(lists, dtype=tf.int32, trainable=False,
                                            name="configured_lists")
        self.kmeans_iterations = tf.Variable(kmeans_iterations, dtype=tf.int32,
                                             trainable=False, name="kmeans_iterations")
        self.centroids = resizable_variable([dim], tf.float32, "centroids")
        self.offsets = resizable_variable([], tf.int32, "offsets")  # [L + 1]
        self.members = resizable_variable([], tf.int32, "members")  # item position of each code
        self.codes = resizable_variable([dim], tf.bfloat16, "codes")
        self.lists = resizable_variable([], tf.int32, "lists")  # each item's list, item order
        # What k-means left (set by `build`) and what `place` made of it since: `drift` compares.
        self.built_imbalance = tf.Variable(1.0, trainable=False, name="built_imbalance")
        self.built_cohesion = tf.Variable(1.0, trainable=False, name="built_cohesion")
        self.cohesion = tf.Variable(1.0, trainable=False, name="cohesion")
        spec = tf.TensorSpec([None, dim], tf.float32)
        self.build = tf.function(self._build, input_signature=[spec, spec])
        self.place = tf.function(self._place, input_signature=[spec])
        self.drift = tf.function(self._drift, input_signature=[])

    def _build(self, vectors, centroids):
        """New centroids (from `train_centroids`), then `place` of `vectors` [N, D]."""
        self.centroids.assign(centroids)
        count = self._place(vectors)
        self.built_imbalance.assign(self._imbalance())
        self.built_cohesion.assign(self.cohesion)
        return count

    def _place(self, vectors):
        """Puts every row of `vectors` [N, D] (the whole index, item order) in the list of its
        nearest centroid and stores its code there; the centroids stay."""
        centroids = tf.convert_to_tensor(self.centroids)
        size = tf.shape(vectors)[0]
        starts = tf.range(0, size, PLACE_CHUNK)
        nearest = tf.TensorArray(tf.int32, size=tf.size(starts), infer_shape=False,
                                 element_shape=tf.TensorShape([None]))
        similarity = tf.TensorArray(tf.float32, size=tf.size(starts), infer_shape=False,
                                    element_shape=tf.TensorShape([None]))
        for chunk in tf.range(tf.size(starts)):
            scores = tf.matmul(vectors[starts[chunk]:starts[chunk] + PLACE_CHUNK], centroids,
                               transpose_b=True)
            nearest = nearest.write(chunk, tf.argmax(scores, axis=1, output_type=tf.int32))
            similarity = similarity.write(chunk, tf.reduce_max(scores, axis=1))
        lists = nearest.concat()
        order = tf.argsort(lists, stable=True)
        sizes = tf.math.bincount(lists, minlength=tf.shape(centroids)[0], dtype=tf.int32)
        self.lists.assign(lists)
        self.members.assign(order)
        self.codes.assign(_list_ordered_codes(vectors, order, starts))
        self.offsets.assign(tf.concat([[0], tf.cumsum(sizes)], axis=0))
        self.cohesion.assign(tf.cond(size > 0, lambda: tf.reduce_mean(similarity.concat()),
                                     lambda: tf.constant(1.0)))
        return size

    def _imbalance(self):
        """Largest list over the mean list (1 = perfectly even); 1 for an empty index."""
        sizes = tf.cast(self.offsets[1:] - self.offsets[:-1], tf.float32)
        mean = tf.reduce_mean(sizes)
        return tf.where(mean > 0, tf.reduce_max(sizes) / tf.maximum(mean, 1e-9), 1.0)

    def _drift(self):
        """How far the lists are from what `build` left, and whether a rebuild would pay."""
        imbalance = self._imbalance()
        rebuild = tf.logical_or(imbalance > REBUILD_IMBALANCE_GROWTH * self.built_imbalance,
                                self.cohesion < self.built_cohesion - REBUILD_COHESION_DROP)
        return {"lists": tf.size(self.offsets) - 1, "items": tf.size(self.members),
                "imbalance": imbalance, "built_imbalance": tf.identity(self.built_imbalance),
                "cohesion": tf.identity(self.cohesion),
                "built_cohesion": tf.identity(self.built_cohesion), "rebuild": rebuild}

    def probe_ranges(self, queries, nprobe):
        """The stored-row range [start, end) of each list each query probes: two [B, P]."""
        lists = tf.size(self.offsets) - 1
        nprobe = tf.minimum(tf.maximum(tf.cast(nprobe, tf.int32), 1), tf.maximum(lists, 0))
        probe = tf.math.top_k(tf.matmul(queries, self.centroids, transpose_b=True),
                              k=nprobe).indices
        offsets = tf.convert_to_tensor(self.offsets)
        return tf.gather(offsets, probe), tf.gather(offsets, probe + 1)

    def scan_lists(self, queries, starts, ends):
        """Approximate scores and item positions of every row of the probed lists: [B, M]
        each (M: the most rows a query of the batch probes), score -inf / position -1 past a
        query's own rows.

        One (query, list) pair at a time: a list is a contiguous slice of the codes, which TF
        reads in place (no copy), cast to float32 block by block for the matvec. Gathering
        the probed rows into one padded [B, M, D] block instead copied every row once more
        and scored the padding: 5x slower at batch 32 (benchmarks/RESULTS.md).
        """
        probes = tf.shape(starts)[1]
        pair_starts, pair_ends = tf.reshape(starts, [-1]), tf.reshape(ends, [-1])
        pair_query = tf.repeat(tf.range(tf.shape(queries)[0]), probes)
        codes = tf.convert_to_tensor(self.codes)
        members = tf.convert_to_tensor(self.members)
        pairs = tf.size(pair_starts)
        scores = tf.TensorArray(tf.float32, size=pairs, infer_shape=False,
                                element_shape=tf.TensorShape([None]))
        positions = tf.TensorArray(tf.int32, size=pairs, infer_shape=False,
                                   element_shape=tf.TensorShape([None]))

        def scan_pair(pair, scores, positions):
            first, last = pair_starts[pair], pair_ends[pair]
            block = tf.cast(codes[first:last], tf.float32)
            return (pair + 1,
                    scores.write(pair, tf.linalg.matvec(block, queries[pair_query[pair]])),
                    positions.write(pair, members[first:last]))

        _, scores, positions = tf.while_loop(
            lambda pair, *_: pair < pairs, scan_pair, [0, scores, positions],
            parallel_iterations=PARALLEL_PAIRS)
        per_query = tf.reduce_sum(ends - starts, axis=1)
        return (tf.RaggedTensor.from_row_lengths(scores.concat(), per_query).to_tensor(_EXCLUDED),
                tf.RaggedTensor.from_row_lengths(positions.concat(), per_query).to_tensor(-1))

    def search(self, queries, vectors, k, nprobe, allowed=None, rescore=None):
        """The best `k` items of the `nprobe` lists nearest each query: exact float32 scores
        [B, k] and item positions [B, k], best first; score -inf and position -1 pad a query
        whose probed lists hold fewer than k (allowed) items.

        `vectors` [N, D]: the items' float32 vectors (item order) for the re-score. `allowed`
        [B, N] bool: only these items may be returned (a filter). `rescore`: how many of the
        scan's best are re-scored exactly (default 2k). A batch in which one query would scan
        more than a quarter of the index (lists grown very uneven) is scored exactly instead.
        Call inside a tf.function.
        """
        queries = tf.convert_to_tensor(queries, tf.float32)
        k = tf.cast(k, tf.int32)
        starts, ends = self.probe_ranges(queries, nprobe)
        widest = tf.reduce_max(tf.concat([tf.reduce_sum(ends - starts, axis=1), [0]], axis=0))
        return tf.cond(
            widest > tf.shape(vectors)[0] // EXACT_FROM_SHARE,
            lambda: _exact_top(queries, vectors, k, allowed),
            lambda: self._rescored(queries, vectors, k, starts, ends, allowed, rescore))

    def _rescored(self, queries, vectors, k, starts, ends, allowed, rescore):
        """`search` over the probed lists: scan, keep the best `rescore`, re-score exactly."""
        approximate, positions = self.scan_lists(queries, starts, ends)
        if allowed is not None:
            approximate = tf.where(
                tf.gather(allowed, tf.maximum(positions, 0), batch_dims=1), approximate, _EXCLUDED)
        short = tf.math.top_k(approximate, k=tf.minimum(
            tf.cast(2 * k if rescore is None else rescore, tf.int32), tf.shape(approximate)[1]))
        short_positions = tf.gather(positions, short.indices, batch_dims=1)
        exact = tf.squeeze(tf.matmul(gather_rows(vectors, tf.maximum(short_positions, 0)),
                                     queries[:, :, None]), axis=2)
        exact = tf.where(short.values > _EXCLUDED, exact, _EXCLUDED)
        best = tf.math.top_k(exact, k=tf.minimum(k, tf.shape(exact)[1]))
        found = tf.gather(short_positions, best.indices, batch_dims=1)
        return _padded(best.values, tf.where(best.values > _EXCLUDED, found, -1), k)

    def nbytes(self) -> dict[str, int]:
        """Bytes each variable of the structure holds (for memory reports)."""
        return {variable.name.split("/")[-1].split(":")[0]:
                int(tf.size(variable, out_type=tf.int64)) * variable.dtype.size
                for variable in (self.centroids, self.offsets, self.members, self.codes,
                                 self.lists)}


def refresh_lists(ivf, vectors: np.ndarray, rebuild: bool = False) -> bool:
    """Puts an index's vectors [N, D] (all of them, item order) in the lists of a (possibly
    loaded) `IVFIndex`: new centroids by k-means when `rebuild` or when it has none yet,
    otherwise the current ones. Returns whether centroids were trained."""
    vectors = np.asarray(vectors, np.float32)
    train = len(vectors) > 0 and (rebuild or int(tf.shape(ivf.centroids)[0]) == 0)
    if train:
        lists = int(ivf.configured_lists.numpy()) or default_list_count(len(vectors))
        centroids = train_centroids(vectors, lists, int(ivf.kmeans_iterations.numpy()))
        ivf.build(tf.constant(vectors), tf.constant(centroids))
    elif int(tf.shape(ivf.centroids)[0]) > 0:
        ivf.place(tf.constant(vectors))
    return train
