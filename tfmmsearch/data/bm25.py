"""Okapi BM25 over product titles: the lexical search a learned one must beat.

It lives in the data layer because it is two things: evaluation's baseline row, and the old
search of the shop that the synthetic search log simulates (`synthetic_log`: what BM25
showed is what shoppers could click).

score(q, d) = sum over query tokens t of
    idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
with idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)), k1 = 1.5, b = 0.75. A token repeated in
the query counts once per occurrence, as in the formula. Tokens are lowercase runs of letters
and digits, so "T-Shirt" is "t" + "shirt" and nothing is stemmed or dropped.

The index is a term-major posting list (CSR: term -> documents, each posting already holding
its BM25 weight). A batch of queries expands to the postings of its tokens and is summed into
a dense [Q, N] block with one `np.bincount`, so scoring needs no Python loop over documents
or postings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

K1 = 1.5
B = 0.75

_TOKEN = re.compile(r"[^\W_]+")  # letters and digits of any script; underscore splits too

# A scoring block of whole queries: bounds the dense float64 sums (rows x documents) and the
# expanded postings (~40 bytes each) held at once.
_ROWS_PER_BLOCK = 256
_POSTINGS_PER_BLOCK = 4_000_000


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric runs: "Men's Navy-Blue T-Shirt" -> men, s, navy, blue, t, shirt."""
    return _TOKEN.findall(text.lower()) if text else []


class BM25Index:
    """BM25 over a fixed list of documents; `score(queries)` returns float32 [Q, N]."""

    def __init__(self, documents: Sequence[str], k1: float = K1, b: float = B):
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1 = k1
        self.b = b
        self.num_documents = len(documents)
        self.vocabulary: dict[str, int] = {}
        term_ids: list[int] = []
        doc_ids: list[int] = []
        lengths = np.zeros(self.num_documents, dtype=np.float64)
        for doc, text in enumerate(documents):
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise TypeError(f"document {doc} must be a string, got {type(text).__name__}")
            tokens = tokenize(text)
            lengths[doc] = len(tokens)
            for token in tokens:
                term_ids.append(self.vocabulary.setdefault(token, len(self.vocabulary)))
            doc_ids.extend([doc] * len(tokens))
        self.document_lengths = lengths
        self._build_postings(np.asarray(term_ids, dtype=np.int64), np.asarray(doc_ids, dtype=np.int64))

    def _build_postings(self, term_ids: np.ndarray, doc_ids: np.ndarray) -> None:
        num_terms = len(self.vocabulary)
        # One posting per (term, document): sorting the combined key groups by term, then document.
        keys, term_freq = np.unique(term_ids * max(self.num_documents, 1) + doc_ids, return_counts=True)
        post_terms = keys // max(self.num_documents, 1)
        self.posting_docs = (keys % max(self.num_documents, 1)).astype(np.int64)
        doc_freq = np.bincount(post_terms, minlength=num_terms).astype(np.float64)
        self.term_offsets = np.concatenate([[0], np.cumsum(doc_freq)]).astype(np.int64)
        self.idf = np.log1p((self.num_documents - doc_freq + 0.5) / (doc_freq + 0.5))
        average_length = self.document_lengths.mean() if self.num_documents else 0.0
        if len(keys) == 0:
            self.posting_weights = np.zeros(0, dtype=np.float64)
            return
        relative_length = self.document_lengths[self.posting_docs] / average_length
        tf = term_freq.astype(np.float64)
        saturation = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * relative_length))
        self.posting_weights = self.idf[post_terms] * saturation

    def query_term_ids(self, query: str) -> list[int]:
        """Vocabulary ids of the query's tokens (repeats kept, unknown tokens dropped)."""
        return [self.vocabulary[token] for token in tokenize(query) if token in self.vocabulary]

    def score(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 scores [len(queries), num_documents]; 0 where a document shares no query token."""
        scores = np.zeros((len(queries), self.num_documents), dtype=np.float32)
        if self.num_documents == 0 or len(queries) == 0:
            return scores
        rows, terms = [], []
        for q, query in enumerate(queries):
            if not isinstance(query, str):
                raise TypeError(f"query {q} must be a string, got {type(query).__name__}")
            ids = self.query_term_ids(query)
            rows.extend([q] * len(ids))
            terms.extend(ids)
        rows = np.asarray(rows, dtype=np.int64)
        terms = np.asarray(terms, dtype=np.int64)
        sizes = self.term_offsets[terms + 1] - self.term_offsets[terms]
        per_query = np.bincount(rows, weights=sizes, minlength=len(queries))
        pair_bounds = np.searchsorted(rows, np.arange(len(queries) + 1))  # rows is sorted
        first = 0
        while first < len(queries):  # blocks of whole queries with bounded rows and postings
            end, total = first + 1, per_query[first]
            while (end < len(queries) and end - first < _ROWS_PER_BLOCK
                   and total + per_query[end] <= _POSTINGS_PER_BLOCK):
                total += per_query[end]
                end += 1
            pairs = slice(pair_bounds[first], pair_bounds[end])
            self._accumulate(scores[first:end], rows[pairs] - first, terms[pairs], sizes[pairs])
            first = end
        return scores

    def _accumulate(self, block: np.ndarray, rows: np.ndarray, terms: np.ndarray,
                    sizes: np.ndarray) -> None:
        """Adds the postings of (row, term) pairs into `block` [rows, documents] in place."""
        total = int(sizes.sum())
        if total == 0:
            return
        # Posting positions of every pair, laid end to end.
        postings = np.repeat(self.term_offsets[terms] - (np.cumsum(sizes) - sizes), sizes) + np.arange(total)
        flat = np.repeat(rows, sizes) * self.num_documents + self.posting_docs[postings]
        sums = np.bincount(flat, weights=self.posting_weights[postings], minlength=block.size)
        block += sums.reshape(block.shape).astype(np.float32)
