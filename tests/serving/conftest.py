"""Serving fixtures: a TEST STAND-IN SavedModel with the export's signatures, and servers over it.

The stand-in is not the search model. It has exactly the signature names, inputs, outputs and
dtypes of the export contract (tfmmsearch/contract.py) over a hard-coded 5-product index, with
scores computed from string lengths, so the transports (REST row/columnar, gRPC, in-process) can
be tested in seconds. The same checks (`client_checks`) run against the real
tensorflow_model_server in test_model_server_integration.py when that binary is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.tf_serving_double import InProcessModelServer
from tfmmsearch.serving.client import ModelServerClient, SearchClient, ServingError
from tfmmsearch.serving.grpc_client import GrpcClient
from tfmmsearch.serving.local import LocalSavedModelClient
from tfmmsearch.serving.rest import RestClient

MODEL_NAME = "tfmmsearch"
STAND_IN_PRODUCT_IDS = ["p0", "p1", "p2", "p3", "p4"]
STAND_IN_ITEM_VECTORS = [
    [0.9, 0.1, 0.0, 0.2],
    [0.1, 0.8, 0.3, 0.1],
    [0.4, 0.4, 0.4, 0.4],
    [0.0, 0.2, 0.9, 0.3],
    [0.6, 0.0, 0.5, 0.6],
]
# One column per contract.MODALITIES (text, image, attributes).
STAND_IN_MODALITY_WEIGHTS = [[0.7, 0.3, 0.0], [0.5, 0.5, 0.0], [0.5, 0.3, 0.2], [0.9, 0.1, 0.0],
                             [0.2, 0.6, 0.2]]
STAND_IN_TOP_K = 3
STAND_IN_DIM = 4
HASH_BUCKETS = 2 ** 20
SCORE_SCALE_BY_VERSION = {1: 1.0, 2: 2.0}  # version 2 (the latest) doubles every score

QUERIES = ["red cotton dress", "blue denim jacket for men", "a"]
CANDIDATES = [["p3", "nope", "p0"], ["p1", "p4", "p2"], ["zz", "p0", "p3"]]
TITLES = ["Red Dress", "Denim Jacket", "Plain Tee"]
# Raw bytes that are not UTF-8 (JPEG/PNG magic, NUL): only base64 gets them through JSON intact.
IMAGES = [b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x80\xfe", b"",
          b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xc3\x28"]
# Item-feature strings for embed_item's `attributes` input (one row per title; non-ASCII on purpose).
ATTRIBUTES = [["Nike", "1299.00"], ["", ""], ["Zentra Café", "NA"]]


class StandInSearchModule(tf.Module):
    """TEST STAND-IN for the exported search model: same signatures, toy arithmetic."""

    def __init__(self, score_scale: float = 1.0) -> None:
        super().__init__()
        self.product_ids = tf.constant(STAND_IN_PRODUCT_IDS)
        self.item_vectors = tf.constant(STAND_IN_ITEM_VECTORS, tf.float32)
        self.item_modality_weights = tf.constant(STAND_IN_MODALITY_WEIGHTS, tf.float32)
        self.score_scale = tf.constant(score_scale, tf.float32)

    def _query_vector(self, query: tf.Tensor) -> tf.Tensor:
        length = tf.cast(tf.strings.length(query), tf.float32)
        words = tf.cast(tf.strings.split(query).row_lengths(), tf.float32)
        vowels = tf.cast(tf.strings.length(tf.strings.regex_replace(query, "[^aeiou]", "")), tf.float32)
        return tf.stack([length / 10.0, words, vowels / 5.0, tf.ones_like(length)], axis=1)

    def _top_k(self, query: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        scores = tf.matmul(self._query_vector(query), self.item_vectors, transpose_b=True) * self.score_scale
        top = tf.math.top_k(scores, k=STAND_IN_TOP_K)
        return top.values, top.indices

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="query")])
    def search(self, query):
        scores, indices = self._top_k(query)
        return {
            "product_ids": tf.gather(self.product_ids, indices),
            "scores": scores,
            "modality_weights": tf.gather(self.item_modality_weights, indices),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="query"),
                                  tf.TensorSpec([None], tf.string, name="filter")])
    def search_filtered(self, query, filter):  # noqa: A002  (the contract's input name)
        # Toy filter: a product whose id the filter names ("NOT p1 p3") is left out; the rest
        # is padded with "" and -inf, as the export pads.
        scores = tf.matmul(self._query_vector(query), self.item_vectors, transpose_b=True)
        named = tf.stack([tf.strings.regex_full_match(filter, f".*\\b{product_id}\\b.*")
                          for product_id in STAND_IN_PRODUCT_IDS], axis=1)
        scores = tf.where(named, float("-inf"), scores * self.score_scale)
        top = tf.math.top_k(scores, k=STAND_IN_TOP_K)
        real = tf.math.is_finite(top.values)
        return {
            "product_ids": tf.where(real, tf.gather(self.product_ids, top.indices), ""),
            "scores": top.values,
            "modality_weights": tf.where(real[:, :, None],
                                         tf.gather(self.item_modality_weights, top.indices), 0.0),
            "num_results": tf.reduce_sum(tf.cast(real, tf.int32), axis=1),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="query")])
    def retrieve(self, query):
        scores, indices = self._top_k(query)
        return {"product_ids": tf.gather(self.product_ids, indices), "scores": scores}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="embedding"),
                                  tf.TensorSpec([None], tf.int32, name="nprobe")])
    def retrieve_embedding(self, embedding, nprobe):
        # nprobe > 0 keeps only the first nprobe products in play (so a test sees it arrive).
        scores = tf.matmul(embedding, self.item_vectors, transpose_b=True) * self.score_scale
        limit = tf.reduce_max(nprobe)
        in_play = tf.logical_or(limit <= 0, tf.range(len(STAND_IN_PRODUCT_IDS)) < limit)
        top = tf.math.top_k(tf.where(in_play[None, :], scores, float("-inf")), k=STAND_IN_TOP_K)
        real = tf.math.is_finite(top.values)
        return {"product_ids": tf.where(real, tf.gather(self.product_ids, top.indices), ""),
                "scores": top.values}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="query"),
                                  tf.TensorSpec([None, None], tf.string, name="product_ids")])
    def rank(self, query, product_ids):
        matches = tf.equal(product_ids[:, :, None], self.product_ids[None, None, :])
        known = tf.reduce_any(matches, axis=-1)
        vectors = tf.gather(self.item_vectors, tf.argmax(tf.cast(matches, tf.int32), axis=-1))
        scores = tf.einsum("bd,bnd->bn", self._query_vector(query), vectors) * self.score_scale
        return {"scores": tf.where(known, scores, tf.zeros_like(scores)), "known": known}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="query")])
    def embed_query(self, query):
        return {"embedding": tf.math.l2_normalize(self._query_vector(query), axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="title"),
                                  tf.TensorSpec([None], tf.string, name="image"),
                                  tf.TensorSpec([None, None], tf.string, name="attributes")])
    def embed_item(self, title, image, attributes):
        # Byte count and a hash of the image bytes: any byte lost or altered in transit shows;
        # the first component counts the title's and the attribute strings' bytes.
        image_bytes = tf.cast(tf.strings.length(image), tf.float32)
        image_hash = tf.cast(tf.strings.to_hash_bucket_fast(image, HASH_BUCKETS), tf.float32)
        has_image = image_bytes > 0
        attribute_bytes = tf.reduce_sum(tf.strings.length(attributes), axis=1)
        text = tf.cast(tf.strings.length(title) + attribute_bytes, tf.float32) / 10.0
        embedding = tf.stack([text, image_bytes, image_hash, tf.cast(has_image, tf.float32)], axis=1)
        weights = tf.where(has_image[:, None], tf.constant([[0.6, 0.4, 0.0]]),
                           tf.constant([[1.0, 0.0, 0.0]]))
        weights = tf.where((attribute_bytes > 0)[:, None],
                           weights * 0.8 + tf.constant([[0.0, 0.0, 0.2]]), weights)
        return {"embedding": embedding, "modality_weights": weights}


def save_stand_in_model(directory: Path, score_scale: float = 1.0) -> Path:
    """Writes the TEST STAND-IN SavedModel with the export's signature keys."""
    module = StandInSearchModule(score_scale)
    search = module.search.get_concrete_function()
    signatures = {
        "serving_default": search,
        "search": search,
        "search_filtered": module.search_filtered.get_concrete_function(),
        "retrieve": module.retrieve.get_concrete_function(),
        "retrieve_embedding": module.retrieve_embedding.get_concrete_function(),
        "rank": module.rank.get_concrete_function(),
        "embed_query": module.embed_query.get_concrete_function(),
        "embed_item": module.embed_item.get_concrete_function(),
    }
    tf.saved_model.save(module, str(directory), signatures=signatures)
    return directory


@pytest.fixture(scope="session")
def stand_in_base_path(tmp_path_factory) -> Path:
    """export/<name>/ layout holding versions 1 and 2 of the TEST STAND-IN."""
    base = tmp_path_factory.mktemp("export") / MODEL_NAME
    for version, scale in SCORE_SCALE_BY_VERSION.items():
        save_stand_in_model(base / str(version), score_scale=scale)
    return base


@pytest.fixture(scope="session")
def local_client(stand_in_base_path) -> LocalSavedModelClient:
    """The stand-in called in-process (latest version): the reference every transport must match."""
    return LocalSavedModelClient(stand_in_base_path)


@pytest.fixture(scope="session")
def fixture_server(stand_in_base_path):
    """The TF Serving test double (gRPC + REST, in-process) over both versions; always stopped."""
    server = InProcessModelServer(stand_in_base_path, MODEL_NAME, num_versions=2)
    try:
        server.start()
        yield server
    finally:
        server.stop()


TRANSPORTS = ("rest-row", "rest-columnar", "grpc")


def make_client(kind: str, rest_url: str, grpc_target: str, **kwargs) -> ModelServerClient:
    """A GrpcClient for "grpc", a RestClient for "rest-row" or "rest-columnar"."""
    kwargs.setdefault("timeout", 10.0)
    if kind == "grpc":
        return GrpcClient(grpc_target, MODEL_NAME, **kwargs)
    return RestClient(rest_url, MODEL_NAME, request_format=kind.split("-", 1)[1], **kwargs)


@pytest.fixture(params=TRANSPORTS)
def served_client(request, fixture_server):
    """The TF Serving clients over each wire format, against the in-process test double."""
    client = make_client(request.param, fixture_server.rest_url, fixture_server.grpc_target)
    try:
        yield client
    finally:
        client.close()


class ClientChecks:
    """Assertions shared by the fixture-server tests and the real-TF-Serving integration test."""

    def __init__(self, local: LocalSavedModelClient) -> None:
        self.local = local

    @staticmethod
    def assert_same(served: dict, direct: dict) -> None:
        assert set(served) == set(direct)
        for name in direct:
            assert served[name].shape == direct[name].shape, name
            assert served[name].dtype == direct[name].dtype, name
            # Exact: gRPC carries float32 bits, REST the shortest decimal that round-trips them.
            np.testing.assert_array_equal(served[name], direct[name], err_msg=name)

    def all_signatures_match_local(self, client: SearchClient) -> None:
        self.assert_same(client.search(QUERIES), self.local.search(QUERIES))
        self.assert_same(client.retrieve(QUERIES), self.local.retrieve(QUERIES))
        filters = ["", "NOT p0 p4", "p0 p1 p2 p3"]  # the last leaves fewer than K products
        filtered = client.search_filtered(QUERIES, filters)
        self.assert_same(filtered, self.local.search_filtered(QUERIES, filters))
        assert filtered["num_results"].tolist() == [3, 3, 1]
        assert filtered["product_ids"][2].tolist() == ["p4", "", ""]
        self.assert_same(client.rank(QUERIES, CANDIDATES), self.local.rank(QUERIES, CANDIDATES))
        self.assert_same(client.embed_query(QUERIES), self.local.embed_query(QUERIES))
        self.assert_same(client.embed_item(TITLES, IMAGES), self.local.embed_item(TITLES, IMAGES))
        vectors = self.local.embed_query(QUERIES)["embedding"]
        self.assert_same(client.retrieve_embedding(vectors), self.local.retrieve_embedding(vectors))
        # nprobe arrives per row as int32 (the stand-in keeps the first nprobe products in play).
        narrowed = client.retrieve_embedding(vectors, nprobe=[0, 2, 1])
        self.assert_same(narrowed, self.local.retrieve_embedding(vectors, nprobe=2))
        assert set(narrowed["product_ids"][0]) - {""} <= {"p0", "p1"}

    @staticmethod
    def image_bytes_arrive_intact(client: SearchClient) -> None:
        embedding = client.embed_item(TITLES, IMAGES)["embedding"]
        expected_hash = tf.strings.to_hash_bucket_fast(tf.constant(IMAGES), HASH_BUCKETS).numpy()
        np.testing.assert_array_equal(embedding[:, 1], [len(image) for image in IMAGES])
        np.testing.assert_array_equal(embedding[:, 2], expected_hash.astype(np.float32))
        np.testing.assert_array_equal(embedding[:, 3], [1.0, 0.0, 1.0])

    @staticmethod
    def attributes_arrive_intact(client: SearchClient) -> None:
        items = client.embed_item(TITLES, IMAGES, ATTRIBUTES)
        expected = [(len(title.encode()) + sum(len(v.encode()) for v in row)) / 10.0
                    for title, row in zip(TITLES, ATTRIBUTES)]
        np.testing.assert_allclose(items["embedding"][:, 0], expected, rtol=1e-6)
        np.testing.assert_array_equal(items["modality_weights"][:, 2] > 0, [True, False, True])
        # Without attributes ([B, 0]) the items are embedded from title and image alone.
        plain = client.embed_item(TITLES, IMAGES)
        np.testing.assert_allclose(plain["embedding"][:, 0], [len(t) / 10.0 for t in TITLES],
                                   rtol=1e-6)
        assert not plain["modality_weights"][:, 2].any()

    @staticmethod
    def bad_input_is_refused_then_served(client: ModelServerClient) -> None:
        with pytest.raises(ServingError) as refused:
            client.predict("serving_default", {"query": np.array([1.5, 2.5], np.float32)})
        error = refused.value
        assert error.server_message, "the error must carry the server's own message"
        assert error.server_message in str(error)
        assert "string" in error.server_message  # names the dtype the signature expects
        if client.transport == "rest":
            assert error.http_status == 400
        else:
            assert error.grpc_code == "INVALID_ARGUMENT"
        with pytest.raises(ServingError) as unknown:
            client.predict("no_such_signature", {"query": np.array([b"x"], object)})
        assert "no_such_signature" in unknown.value.server_message
        answer = client.search(["still answering"])
        assert answer["product_ids"].shape == (1, STAND_IN_TOP_K)


@pytest.fixture(scope="session")
def client_checks(local_client) -> ClientChecks:
    return ClientChecks(local_client)
