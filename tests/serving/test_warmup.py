"""Warmup file: written where TF Serving looks, in its record format, and replayable on the model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tests.serving.conftest import IMAGES, MODEL_NAME, QUERIES, STAND_IN_DIM, STAND_IN_PRODUCT_IDS, TITLES
from tfmmsearch.contract import SIGNATURE_INPUTS
from tfmmsearch.serving.client import ServingError
from tfmmsearch.serving.grpc_client import make_predict_request
from tfmmsearch.serving.local import LocalSavedModelClient
from tfmmsearch.contract import SIGNATURE_ALIASES
from tfmmsearch.serving.warmup import (
    MAX_WARMUP_RECORDS,
    read_warmup_file,
    replay_warmup,
    search_warmup_requests,
    warmup_path,
    warmup_signatures,
    write_warmup_file,
)


@pytest.fixture
def version_dir(stand_in_base_path, tmp_path):
    """A private copy of the stand-in's latest version, so writing warmup files touches no shared fixture."""
    return shutil.copytree(stand_in_base_path / "2", tmp_path / MODEL_NAME / "2")


def test_warmup_round_trip_keeps_every_request_and_input(version_dir):
    requests = search_warmup_requests(QUERIES, STAND_IN_PRODUCT_IDS, TITLES, IMAGES, batch_sizes=(1, 3),
                                      embedding_dim=STAND_IN_DIM)
    path = write_warmup_file(version_dir, requests)
    assert path == version_dir / "assets.extra" / "tf_serving_warmup_requests"

    logs = read_warmup_file(version_dir)
    assert len(logs) == len(requests) == 2 * len(warmup_signatures())  # two batch sizes
    for log, (signature_name, inputs) in zip(logs, requests):
        request = log.predict_log.request
        assert request.model_spec.name == MODEL_NAME
        assert request.model_spec.signature_name == signature_name
        assert set(request.inputs) == set(inputs)
        for name, expected in inputs.items():
            sent = tf.make_ndarray(request.inputs[name])
            assert sent.shape == expected.shape
            assert sent.tolist() == expected.tolist()  # image bytes included, byte for byte
    signatures = {log.predict_log.request.model_spec.signature_name for log in logs}
    assert signatures == {"serving_default", "search_filtered", "retrieve", "retrieve_embedding",
                          "rank", "embed_query", "embed_item"}


def test_every_contract_signature_is_warmed_up_at_every_batch_size(version_dir):
    """A signature added to the contract gets warmup records without anyone listing it."""
    batch_sizes = (1, 3)
    write_warmup_file(version_dir, search_warmup_requests(QUERIES, STAND_IN_PRODUCT_IDS, TITLES, IMAGES,
                                                          batch_sizes=batch_sizes,
                                                          embedding_dim=STAND_IN_DIM))
    seen = {}
    for log in read_warmup_file(version_dir):
        request = log.predict_log.request
        batch = {tf.make_ndarray(proto).shape[0] for proto in request.inputs.values()}
        assert len(batch) == 1, "every input of a request has the same batch size"
        seen.setdefault(request.model_spec.signature_name, set()).update(batch)
        assert set(request.inputs) == set(SIGNATURE_INPUTS[request.model_spec.signature_name])
    for name in SIGNATURE_INPUTS:
        warmed = SIGNATURE_ALIASES.get(name, name)  # `search` is warmed through serving_default
        assert seen.get(warmed) == set(batch_sizes), name
    assert not set(seen) & set(SIGNATURE_ALIASES), "aliases must not be warmed twice"


def test_a_contract_input_without_a_warmup_sample_is_named(monkeypatch):
    monkeypatch.setitem(SIGNATURE_INPUTS, "embed_audio", {"audio": ("string", (None,))})
    with pytest.raises(ValueError, match="input 'audio' of signature 'embed_audio'"):
        search_warmup_requests(QUERIES, STAND_IN_PRODUCT_IDS, TITLES, IMAGES,
                               embedding_dim=STAND_IN_DIM)


def test_a_new_contract_signature_on_known_inputs_gets_warmup_automatically(monkeypatch):
    monkeypatch.setitem(SIGNATURE_INPUTS, "rerank", {"query": ("string", (None,)),
                                                     "product_ids": ("string", (None, None))})
    requests = search_warmup_requests(QUERIES, STAND_IN_PRODUCT_IDS, TITLES, IMAGES, batch_sizes=(2,),
                                      embedding_dim=STAND_IN_DIM)
    (rerank,) = [inputs for name, inputs in requests if name == "rerank"]
    assert rerank["query"].shape == (2,) and rerank["product_ids"].shape == (2, len(STAND_IN_PRODUCT_IDS))


def test_file_is_plain_tfrecord_of_prediction_logs(version_dir):
    write_warmup_file(version_dir, [("embed_query", {"query": np.array([b"red dress"], object)})])
    records = list(tf.data.TFRecordDataset(str(warmup_path(version_dir))).as_numpy_iterator())
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    assert log.WhichOneof("log_type") == "predict_log"
    assert tf.make_ndarray(log.predict_log.request.inputs["query"]).tolist() == [b"red dress"]


def test_replay_gives_what_the_signatures_give(version_dir):
    requests = search_warmup_requests(QUERIES[:2], STAND_IN_PRODUCT_IDS, TITLES, IMAGES, batch_sizes=(2,),
                                      embedding_dim=STAND_IN_DIM)
    write_warmup_file(version_dir, requests)
    results = replay_warmup(version_dir)
    model = LocalSavedModelClient(version_dir)
    assert len(results) == len(requests)
    for result, (signature_name, inputs) in zip(results, requests):
        expected = model.predict(signature_name, inputs)
        assert set(result) == set(expected)
        for name in expected:
            np.testing.assert_array_equal(result[name], expected[name])


def test_ready_predict_requests_are_accepted(version_dir):
    request = make_predict_request("any", "retrieve", {"query": np.array(["blue jeans"])})
    write_warmup_file(version_dir, [request])
    (result,) = replay_warmup(version_dir)
    assert result["product_ids"].shape == (1, 3)


def test_a_request_the_model_refuses_is_named_on_replay(version_dir):
    write_warmup_file(version_dir, [
        ("embed_query", {"query": np.array([b"ok"], object)}),
        ("no_such_signature", {"query": np.array([b"x"], object)}),
    ])
    with pytest.raises(ServingError, match=r"warmup record 1 \('no_such_signature'\)"):
        replay_warmup(version_dir)


def test_bad_files_and_bad_requests_are_refused_clearly(version_dir, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not a TFRecord file at all")
    with pytest.raises(ValueError, match="garbage"):
        read_warmup_file(garbage)
    with pytest.raises(FileNotFoundError, match="no warmup file"):
        read_warmup_file(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        write_warmup_file(tmp_path, [("embed_query", {"query": np.array([b"a"], object)})])
    with pytest.raises(ValueError, match="no warmup requests"):
        write_warmup_file(version_dir, [])
    with pytest.raises(TypeError, match="warmup request 0"):
        write_warmup_file(version_dir, ["red dress"])
    too_many = [("embed_query", {"query": np.array([b"a"], object)})] * (MAX_WARMUP_RECORDS + 1)
    with pytest.raises(ValueError, match=f"at most {MAX_WARMUP_RECORDS}"):
        write_warmup_file(version_dir, too_many)
    assert not warmup_path(version_dir).exists(), "a refused request list must not leave a file"
