"""The servable: a tf.Module whose signatures take raw strings, image bytes and item-feature
strings (`embed_item`'s `attributes`, in the order of the module's `item_feature_columns`).

Everything a TF Serving request needs runs in graph: tokenisation (TF Text ops), image
decoding, the towers (through the model's own `embed_queries` / `embed_items`, the functions
training and evaluation use), exact top-K over an in-graph index, and ranking-head re-scoring. The
index lives in variables with a dynamic first dimension, so `tfmmsearch index` can load an
export, assign a new catalog's embeddings and save the next version without the training code.

Product-id lookup for `rank` uses sorted 62-bit fingerprints of the ids plus a string check,
so it is core ops only and survives re-indexing (no hash-table resource to rebuild).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from tfmmsearch.contract import (
    ATTRIBUTES_FIELD,
    INDEX_FIELDS,
    LEXICAL_FIELD,
    SIGNATURE_ALIASES,
    SIGNATURE_INPUTS,
    UNKNOWN_SCORE,
    fingerprint,
    has_text_tensor,
    index_field_widths,
    input_signature,
)
from tfmmsearch.config import FUSIONS, HybridConfig, IndexConfig
from tfmmsearch.exporting.filters import CATEGORICAL, NUMERIC, categorical_keys, filter_mask, numeric_values
from tfmmsearch.exporting.fusion import convex_fusion, reciprocal_rank_fusion
from tfmmsearch.exporting.ivf_index import IVFIndex
from tfmmsearch.exporting.lexical_index import LexicalIndex
from tfmmsearch.exporting.variable_reads import gather_rows, resizable_variable
from tfmmsearch.model.item_features import ATTRIBUTE_INPUT
from tfmmsearch.model.lexical import MAX_QUERY_WORDS, MAX_TITLE_WORDS, query_coverage, word_ids

class ItemIndex(tf.Module):
    """Item-tower outputs of a catalog, held in resizable variables."""

    def __init__(self, dim: int, title_words: int = MAX_TITLE_WORDS, attributes: bool = False,
                 filter_kinds: tuple[str, ...] = (), dense: IndexConfig | None = None,
                 name: str = "index"):
        super().__init__(name=name)

        variable = resizable_variable
        width = index_field_widths(dim)
        self.product_ids = variable([], tf.string, "product_ids")
        self.embeddings = variable([width["embedding"]], tf.float32, "embeddings")
        self.text = variable([width["text"]], tf.float32, "text")
        self.image = variable([width["image"]], tf.float32, "image")
        self.mask = variable([width["mask"]], tf.float32, "mask")
        self.modality_weights = variable([width["modality_weights"]], tf.float32, "modality_weights")
        self.sorted_fingerprints = variable([], tf.int64, "sorted_fingerprints")
        self.sorted_positions = variable([], tf.int32, "sorted_positions")
        # Hashed title words (model/lexical.py): the lexical ranking head's input and what the
        # BM25 inverted index is built from, so every update rebuilds it from the same rows.
        self.title_words = variable([title_words], tf.int64, "title_words")
        self.lexical = LexicalIndex()
        self.assign_words = tf.function(
            self._assign_words, input_signature=[tf.TensorSpec([None, title_words], tf.int64)])
        # Filterable columns (config export.filters): the raw strings as indexed, and what
        # filters compare: categorical keys and numbers (exporting/filters.py).
        self._filter_kinds = tuple(filter_kinds)
        self.filter_values = variable([len(filter_kinds)], tf.string, "filter_values")
        self.filter_keys = variable([filter_kinds.count(CATEGORICAL)], tf.int64, "filter_keys")
        self.filter_numbers = variable([filter_kinds.count(NUMERIC)], tf.float32,
                                       "filter_numbers")
        self.assign_filters = tf.function(
            self._assign_filters,
            input_signature=[tf.TensorSpec([None, len(filter_kinds)], tf.string)])
        # What each item was embedded from (exporting/updates.py): unchanged items keep their
        # stored vectors when the catalog is indexed again.
        self.content_hashes = variable([], tf.string, "content_hashes")
        self.assign_content_hashes = tf.function(
            self._assign_content_hashes, input_signature=[tf.TensorSpec([None], tf.string)])
        if dense is not None and dense.type == "ivf":  # approximate dense scoring (config export.index)
            self.ivf = IVFIndex(width["embedding"], dense.lists, dense.kmeans_iterations)
        if attributes:  # attribute-modality vectors, for a ranking head with item features
            self.attributes = variable([dim], tf.float32, "attributes")
            self.assign_attributes = tf.function(
                self._assign_attributes, input_signature=[tf.TensorSpec([None, dim], tf.float32)])

    def _assign_attributes(self, attributes):
        """Sets the items' attribute vectors; call right after `assign`, for the same items."""
        tf.debugging.assert_equal(tf.shape(attributes)[0], self.size,
                                  message="attributes must have one row per indexed item")
        self.attributes.assign(attributes)
        return tf.shape(attributes)[0]

    def _assign_words(self, title_words):
        """Sets the items' title words and rebuilds the BM25 index from them; call right after
        `assign`, for the same items."""
        tf.debugging.assert_equal(tf.shape(title_words)[0], self.size,
                                  message="title_words must have one row per indexed item")
        self.title_words.assign(title_words)
        self.lexical.build(title_words)
        return tf.shape(title_words)[0]

    def _assign_filters(self, values):
        """Sets the items' filterable values (one column per export filter, in order); call
        right after `assign`, for the same items."""
        tf.debugging.assert_equal(tf.shape(values)[0], self.size,
                                  message="filter values must have one row per indexed item")
        kinds = self._filter_kinds
        def columns_of(kind):
            chosen = [i for i, each in enumerate(kinds) if each == kind]
            return tf.constant(chosen, tf.int32, shape=[len(chosen)])

        categorical, numeric = columns_of(CATEGORICAL), columns_of(NUMERIC)
        self.filter_values.assign(values)
        self.filter_keys.assign(categorical_keys(tf.gather(values, categorical, axis=1)))
        self.filter_numbers.assign(numeric_values(tf.gather(values, numeric, axis=1)))
        return tf.shape(values)[0]

    def _assign_content_hashes(self, hashes):
        """Sets the items' content hashes; call right after `assign`, for the same items."""
        tf.debugging.assert_equal(tf.shape(hashes)[0], self.size,
                                  message="content hashes must have one row per indexed item")
        self.content_hashes.assign(hashes)
        return tf.shape(hashes)[0]

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string), tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.float32)])
    def assign(self, product_ids, embeddings, text, image, mask, modality_weights):
        """Replaces the whole index (any size) and rebuilds the id lookup; saved, so it also
        works on a loaded export (re-indexing). Masks and weights narrower than
        contract.MODALITIES (a caller written for title and image only) get zero columns for
        the modalities they leave out: absent."""
        self.product_ids.assign(product_ids)
        self.embeddings.assign(embeddings)
        self.text.assign(text)
        self.image.assign(image)
        self.mask.assign(_pad_modalities(mask, self.mask.shape[1]))
        self.modality_weights.assign(_pad_modalities(modality_weights,
                                                     self.modality_weights.shape[1]))
        prints = fingerprint(product_ids)
        order = tf.argsort(prints, stable=True)
        self.sorted_fingerprints.assign(tf.gather(prints, order))
        self.sorted_positions.assign(tf.cast(order, tf.int32))
        return tf.shape(product_ids)[0]

    @property
    def size(self) -> tf.Tensor:
        return tf.shape(self.product_ids)[0]

    def lookup(self, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Index positions of `ids` (any shape) and whether each id is in the index."""
        slot = tf.searchsorted(self.sorted_fingerprints, tf.reshape(fingerprint(ids), [-1]),
                               side="left")
        position = tf.reshape(_safe_gather(self.sorted_positions, slot), tf.shape(ids))
        stored = _safe_gather(self.product_ids, position)
        known = tf.logical_and(tf.equal(stored, ids), tf.strings.length(ids) > 0)
        return position, known


# The dense similarity the fusions see for an allowed item an IVF index did not probe: below any
# cosine, yet not -inf (which means "filtered out"), so BM25 alone can still bring it in.
UNPROBED_SIMILARITY = -2.0


def _string_variable(values: tuple[str, ...], name: str) -> tf.Variable:
    """A fixed list of names the SavedModel carries for clients (columns, kinds)."""
    return tf.Variable(tf.constant(list(values), tf.string, shape=[len(values)]),
                       trainable=False, name=name)


def _pad_modalities(columns: tf.Tensor, width: int) -> tf.Tensor:
    """[N, m] per-modality columns, m <= width, -> [N, width] (zeros for the missing ones)."""
    missing = width - tf.shape(columns)[1]
    tf.debugging.assert_non_negative(missing, message=f"at most {width} modality columns")
    return tf.pad(columns, [[0, 0], [0, tf.maximum(missing, 0)]])


def _safe_gather(values: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Gather that returns the dtype's zero instead of failing on an empty `values`."""
    padded = tf.concat([values, tf.zeros([1], values.dtype)], axis=0)
    return tf.gather(padded, tf.minimum(positions, tf.shape(values)[0]))


def _checked_first(check, *tensors):
    """`tensors`, usable only after `check` ran: an input check must fail with its own message
    before a kernel downstream fails with a shape error of its own."""
    with tf.control_dependencies([check]):
        return tuple(tf.identity(tensor) for tensor in tensors)


@dataclass
class _Untracked:
    """Holds the Keras model without making it part of the SavedModel's object graph: the
    module saves the towers and encoders it calls, not the training model's tasks and metrics."""

    model: object


class SearchModule(tf.Module):
    """Towers + ranking head + index, with the serving signatures (tfmmsearch/contract.py)."""

    def __init__(self, model, top_k: int = 100, hybrid: HybridConfig | None = None,
                 filters: dict[str, str] | None = None, index: IndexConfig | None = None):
        super().__init__(name="tfmmsearch")
        hybrid = hybrid or HybridConfig()
        index = index or IndexConfig()
        filters = dict(filters or {})
        self._model = _Untracked(model)
        # What the signatures call, tracked so that the SavedModel carries its variables
        # (under the names a warm start reads them back by).
        for name, part in model.exported_parts().items():
            setattr(self, name, part)
        self.image_size = model.image_size
        self.top_k = top_k
        # How `search` gathers candidates (config export.hybrid), in variables so that a
        # loaded export can be switched (benchmarks compare fusions and list lengths on one
        # export). The head re-scores `rerank_candidates` (>= top_k) items.
        self.rerank_candidates = tf.Variable(max(top_k, hybrid.candidates), dtype=tf.int32,
                                             trainable=False, name="rerank_candidates")
        self.fusion_type = tf.Variable(hybrid.fusion_type, trainable=False, name="fusion_type")
        self.rrf_k = tf.Variable(hybrid.rrf_k, dtype=tf.float32, trainable=False, name="rrf_k")
        self.convex_weight = tf.Variable(hybrid.convex_weight, dtype=tf.float32,
                                         trainable=False, name="convex_weight")
        # The filterable columns and their kinds, in the order the index stores them.
        self.filter_names = tuple(filters)
        self.filter_kind_names = tuple(filters.values())
        self.filter_columns = _string_variable(self.filter_names, "filter_columns")
        self.filter_kinds = _string_variable(self.filter_kind_names, "filter_kinds")
        self.lexical_head = model.ranking_head.lexical
        # The item-feature columns `embed_item`'s attributes hold, in order (contract.py).
        self.attribute_columns = tuple(model.item_feature_columns)
        self.item_feature_columns = _string_variable(self.attribute_columns,
                                                     "item_feature_columns")
        self.index = ItemIndex(model.config.embedding_dim, attributes=bool(self.attribute_columns),
                               filter_kinds=self.filter_kind_names, dense=index)
        # Lists an IVF index probes per query unless a `retrieve_embedding` request says.
        self._ivf = hasattr(self.index, "ivf")
        if self._ivf:
            self.nprobe = tf.Variable(index.nprobe, dtype=tf.int32, trainable=False,
                                      name="nprobe")

    # ------------------------------------------------------------------ building blocks

    def _query_embedding(self, query):
        return self._model.model.embed_queries({"query": query})

    def _item_fields(self) -> tuple[str, ...]:
        """What the index stores per item: INDEX_FIELDS, plus the attribute vectors of a model
        with item features."""
        return INDEX_FIELDS + ((ATTRIBUTES_FIELD,) if self.attribute_columns else ())

    def _item_outputs(self, title, image, attributes):
        """Item-tower outputs of raw (title, image bytes, attribute strings [B, 0 or C]); a
        batch of 0 gives empty outputs."""
        columns = len(self.attribute_columns)
        title, image, attributes = _checked_first(tf.debugging.assert_equal(
            tf.stack([tf.size(image), tf.shape(attributes)[0]]), tf.size(title),
            message="title, image and attributes must have the same batch size (one of each "
                    "per item; b'' for an item without an image, a row of attributes per item, "
                    "of width 0 when none are known)"), title, image, attributes)
        width = tf.shape(attributes)[1]
        if columns:
            expected = (f"0 or {columns} columns, one per item feature in this order: "
                        f"{', '.join(self.attribute_columns)}")
        else:
            expected = "0 columns: this model reads no item features"
        title, image, attributes = _checked_first(tf.debugging.assert_equal(
            tf.logical_or(tf.equal(width, 0), tf.equal(width, columns)), True,
            message=f"attributes must have {expected}"), title, image, attributes)
        dim = self._model.model.config.embedding_dim
        widths = {**index_field_widths(dim), ATTRIBUTES_FIELD: dim}
        fields = self._item_fields()

        def empty():
            return {field: tf.zeros([0, widths[field]]) for field in fields}

        def embedded():
            outputs = self._model.model.embed_items(
                {"title": title, "image_bytes": image, ATTRIBUTE_INPUT: attributes})
            return {field: outputs[field] for field in fields}

        return tf.cond(tf.size(title) > 0, embedded, empty)

    def _top(self, scores, k):
        k = tf.minimum(k, tf.shape(scores)[1])
        return tf.math.top_k(scores, k=k)

    def _head_scores(self, query, query_embedding, positions):
        index = self.index
        candidates = {"embedding": gather_rows(index.embeddings, positions),
                      "text": gather_rows(index.text, positions),
                      "image": gather_rows(index.image, positions),
                      "mask": gather_rows(index.mask, positions)}
        coverage = attributes = None
        if self.lexical_head:
            coverage = query_coverage(word_ids(query, MAX_QUERY_WORDS)[:, None, :],
                                      gather_rows(index.title_words, positions))
        if self.attribute_columns:
            attributes = gather_rows(index.attributes, positions)
        return self.ranking_head(query_embedding[:, None, :], candidates["embedding"],
                                 candidates["text"], candidates["image"], candidates["mask"],
                                 coverage=coverage, attributes=attributes)

    @staticmethod
    def _found_nothing(query, product_ids, scores):
        """Queries without text (the contract's rule) find no products: ids "", score -inf.
        Returns the masked (ids, scores) and the [B, 1] mask of queries that have text."""
        has_text = has_text_tensor(query)[:, None]
        return (tf.where(has_text, product_ids, ""), tf.where(has_text, scores, float("-inf")),
                has_text)

    # ------------------------------------------------------------------ signatures

    def _dense_list(self, embedding, count, allowed=None, nprobe=None):
        """The `count` items nearest each query embedding [B, D] (within `allowed` [B, N]):
        (positions [B, C], similarities [B, C]) best first, C <= count; padding has score
        -inf and position 0. Exact, or through the IVF index (config export.index), which
        falls back to exact scoring for a batch whose filter leaves too few items in the
        probed lists, so filtered results are never cut short."""
        def exact():
            scores, positions = self._top(self._dense_matrix(embedding, allowed), count)
            return positions, scores

        if not self._ivf:
            return exact()

        def approximate():
            scores, positions = self.index.ivf.search(
                embedding, self.index.embeddings, count,
                self.nprobe if nprobe is None else nprobe, allowed)
            return tf.maximum(positions, 0), scores

        if allowed is None:
            return approximate()
        positions, scores = approximate()
        found = tf.reduce_sum(tf.cast(scores > float("-inf"), tf.int32), axis=1)
        wanted = tf.minimum(count, tf.reduce_sum(tf.cast(allowed, tf.int32), axis=1))
        return tf.cond(tf.reduce_all(found >= wanted), lambda: (positions, scores), exact)

    def _dense_matrix(self, embedding, allowed=None):
        """Exact similarities to every item [B, N], -inf where `allowed` is False."""
        dense = tf.matmul(embedding, self.index.embeddings, transpose_b=True)
        return dense if allowed is None else tf.where(allowed, dense, float("-inf"))

    def _fusion_matrix(self, embedding, count, allowed=None):
        """Dense similarities [B, N] for the fusions: exact, or, with an IVF index, the
        re-scored similarities of its short list and UNPROBED_SIMILARITY for the other allowed
        items (they can still enter through the lexical list)."""
        if not self._ivf:
            return self._dense_matrix(embedding, allowed)
        positions, scores = self._dense_list(embedding, count, allowed)
        size = tf.shape(self.index.product_ids)[0]
        floor = tf.fill([tf.shape(embedding)[0], size], UNPROBED_SIMILARITY)
        if allowed is not None:
            floor = tf.where(allowed, floor, float("-inf"))
        listed = tf.where(scores > float("-inf"))  # [L, 2]: (query, slot) of the real items
        items = tf.stack([listed[:, 0], tf.cast(tf.gather_nd(positions, listed), tf.int64)], 1)
        return tf.tensor_scatter_nd_update(floor, items, tf.gather_nd(scores, listed))

    def _candidates(self, query, embedding, allowed=None):
        """The head's short list [B, C] and which of its entries are real items, fused with
        in-graph BM25 as `fusion_type` says (config export.hybrid)."""
        count = tf.maximum(self.rerank_candidates, self.top_k)

        def lexical():  # both fusions leave out the items dense marks -inf
            return self.index.lexical.scores(word_ids(query, MAX_QUERY_WORDS))

        def dense_only():
            positions, scores = self._dense_list(embedding, count, allowed)
            return positions, scores > float("-inf")

        def fused(fuse):
            dense = self._fusion_matrix(embedding, count, allowed)
            positions = fuse(dense, lexical())
            return positions, tf.gather(dense, positions, batch_dims=1) > float("-inf")

        def rrf():
            return fused(lambda dense, bm25: reciprocal_rank_fusion(dense, bm25, count,
                                                                    self.rrf_k)[0])

        def convex():
            return fused(lambda dense, bm25: convex_fusion(dense, bm25, self.convex_weight,
                                                           count)[0])

        branches = {"dense": dense_only, "rrf": rrf, "convex": convex}
        assert tuple(branches) == FUSIONS, "every configurable fusion has a branch"
        mode = tf.argmax(tf.cast(tf.equal(self.fusion_type, list(FUSIONS)), tf.int32),
                         output_type=tf.int32)
        return tf.switch_case(mode, [branches[name] for name in FUSIONS])

    def _ranked(self, query, allowed=None):
        """Candidates (within `allowed` [B, N] where given), re-scored by the ranking head;
        the top K as the search signatures return them, with how many are real results."""
        embedding = self._query_embedding(query)
        candidates, valid = self._candidates(query, embedding, allowed)
        head = tf.where(valid, self._head_scores(query, embedding, candidates), float("-inf"))
        scores, order = self._top(head, self.top_k)
        positions = tf.gather(candidates, order, batch_dims=1)
        valid = tf.gather(valid, order, batch_dims=1)
        ids, scores, has_text = self._found_nothing(
            query, tf.where(valid, gather_rows(self.index.product_ids, positions), ""), scores)
        real = tf.logical_and(valid, has_text)
        weights = tf.where(real[:, :, None], gather_rows(self.index.modality_weights, positions),
                           0.0)
        return {"product_ids": ids, "scores": tf.where(real, scores, float("-inf")),
                "modality_weights": weights,
                "num_results": tf.reduce_sum(tf.cast(real, tf.int32), axis=1)}

    @tf.function(input_signature=input_signature("search"))
    def search(self, query):
        """Retrieve candidates from the index, re-score with the ranking head, keep the top K."""
        results = self._ranked(query)
        return {name: results[name] for name in ("product_ids", "scores", "modality_weights")}

    @tf.function(input_signature=input_signature("search_filtered"))
    def search_filtered(self, query, filter):  # noqa: A002  (the contract's input name)
        """`search` among the products that satisfy each query's filter (exact pre-filtering:
        the filter applies before top-K, so every result matches and fewer than K matches are
        all returned; `num_results` says how many)."""
        index = self.index
        query, filter = _checked_first(tf.debugging.assert_equal(
            tf.shape(query)[0], tf.shape(filter)[0],
            message="search_filtered: query [B] and filter [B] must have the same batch size "
                    "(\"\" for a query without a filter)"), query, filter)
        allowed = filter_mask(filter, self.filter_names, self.filter_kind_names,
                              index.filter_keys, index.filter_numbers)
        return self._ranked(query, allowed)

    @tf.function(input_signature=input_signature("retrieve"))
    def retrieve(self, query):
        """Top-K by embedding similarity alone (exact, or through the IVF index)."""
        return self._retrieved(has_text_tensor(query), self._query_embedding(query))

    @tf.function(input_signature=input_signature("retrieve_embedding"))
    def retrieve_embedding(self, embedding, nprobe):
        """The index alone: top-K items of query embeddings [B, D] (an `embed_query` output,
        or an `embed_item` one for search by photo). nprobe [B]: lists an IVF index probes,
        <= 0 for the export's own (the batch probes its largest); an exact index ignores it."""
        embedding, nprobe = _checked_first(tf.debugging.assert_equal(
            tf.shape(embedding), [tf.shape(nprobe)[0], self.index.embeddings.shape[1]],
            message=f"retrieve_embedding: embedding must be [B, "
                    f"{self.index.embeddings.shape[1]}] with one nprobe per row"),
            embedding, nprobe)
        if self._ivf:
            asked = tf.reduce_max(tf.concat([nprobe, [0]], axis=0))
            nprobe = tf.where(asked > 0, asked, self.nprobe)
        has_vector = tf.reduce_any(tf.not_equal(embedding, 0.0), axis=1)
        return self._retrieved(has_vector, embedding, nprobe)

    def _retrieved(self, has_input, embedding, nprobe=None):
        """`retrieve`'s outputs for query embeddings [B, D]; rows where `has_input` [B] is
        False (a query without text, an all-zero embedding) find nothing."""
        positions, scores = self._dense_list(embedding, self.top_k, nprobe=nprobe)
        real = tf.logical_and(scores > float("-inf"), has_input[:, None])
        return {"product_ids": tf.where(real, gather_rows(self.index.product_ids, positions), ""),
                "scores": tf.where(real, scores, float("-inf"))}

    @tf.function(input_signature=input_signature("rank"))
    def rank(self, query, product_ids):
        """Ranking-head scores of given indexed products; unknown ids score UNKNOWN_SCORE."""
        query, product_ids = _checked_first(tf.debugging.assert_equal(
            tf.shape(query)[0], tf.shape(product_ids)[0],
            message="rank: query [B] and product_ids [B, N] must have the same batch size B"),
            query, product_ids)
        embedding = self._query_embedding(query)
        positions, known = self.index.lookup(product_ids)
        scores = self._head_scores(query, embedding, positions)
        return {"scores": tf.where(known, scores, UNKNOWN_SCORE), "known": known}

    @tf.function(input_signature=input_signature("embed_query"))
    def embed_query(self, query):
        return {"embedding": self._query_embedding(query)}

    @tf.function(input_signature=input_signature("embed_item"))
    def embed_item(self, title, image, attributes):
        """Item embeddings and modality weights of raw titles, image bytes and item-feature
        strings [B, C] in `item_feature_columns` order ([B, 0]: none known)."""
        outputs = self._item_outputs(title, image, attributes)
        return {"embedding": outputs["embedding"], "modality_weights": outputs["modality_weights"]}

    @tf.function(input_signature=input_signature("embed_item"))
    def index_outputs(self, title, image, attributes):
        """Everything the index stores for an item (used when (re-)indexing a catalog)."""
        outputs = self._item_outputs(title, image, attributes)
        stored = {key: outputs[key] for key in self._item_fields()}
        stored[LEXICAL_FIELD] = word_ids(title, MAX_TITLE_WORDS)
        return stored

    def signatures(self) -> dict:
        """Every signature of the contract (SIGNATURE_INPUTS) as a concrete function."""
        functions = {"serving_default": self.search, "search_filtered": self.search_filtered,
                     "retrieve": self.retrieve, "retrieve_embedding": self.retrieve_embedding,
                     "rank": self.rank,
                     "embed_query": self.embed_query, "embed_item": self.embed_item}
        concrete = {name: function.get_concrete_function() for name, function in functions.items()}
        concrete.update({alias: concrete[name] for alias, name in SIGNATURE_ALIASES.items()})
        assert set(concrete) == set(SIGNATURE_INPUTS), "the module and the contract disagree"
        return concrete
