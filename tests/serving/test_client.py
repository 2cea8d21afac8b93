"""The clients against the TF Serving protocol (the in-process TEST DOUBLE) and in-process.

Every transport must give exactly what the SavedModel gives when called directly; REST bodies are
checked against TF Serving's documented JSON layout; bad input must come back as ServingError
with the server's own message, and the server must keep answering.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.contract import SIGNATURE_INPUTS
from tests.serving.conftest import (
    CANDIDATES,
    IMAGES,
    MODEL_NAME,
    QUERIES,
    SCORE_SCALE_BY_VERSION,
    STAND_IN_DIM,
    STAND_IN_PRODUCT_IDS,
    STAND_IN_TOP_K,
    TITLES,
    TRANSPORTS,
    make_client,
)
from tests.serving.ports import free_port, silent_listener
from tfmmsearch.contract import MODALITIES
from tfmmsearch.serving.client import SearchClient, ServingError
from tfmmsearch.serving.connect import connect
from tfmmsearch.serving.grpc_client import GrpcClient, make_predict_request, outputs_from_tensor_protos
from tfmmsearch.serving.local import LocalSavedModelClient
from tfmmsearch.serving.rest import RestClient, rest_request_body

# --------------------------------------------------------------------------- transports agree


def test_every_signature_matches_the_saved_model_called_directly(served_client, client_checks):
    client_checks.all_signatures_match_local(served_client)


def test_image_bytes_reach_embed_item_intact(served_client, client_checks):
    client_checks.image_bytes_arrive_intact(served_client)


def test_attribute_values_reach_embed_item_intact(served_client, client_checks):
    client_checks.attributes_arrive_intact(served_client)


def test_bad_input_gives_the_server_message_and_the_server_keeps_answering(served_client, client_checks):
    client_checks.bad_input_is_refused_then_served(served_client)


def test_outputs_follow_the_export_contract(local_client):
    batch = len(QUERIES)
    found = local_client.search(QUERIES)
    assert found["product_ids"].shape == (batch, STAND_IN_TOP_K)
    assert found["scores"].dtype == np.float32 and found["scores"].shape == (batch, STAND_IN_TOP_K)
    assert found["modality_weights"].shape == (batch, STAND_IN_TOP_K, len(MODALITIES))
    assert set(found["product_ids"].ravel()) <= set(STAND_IN_PRODUCT_IDS)
    assert np.all(np.diff(found["scores"], axis=1) <= 0), "top-K must come best first"

    ranked = local_client.rank(QUERIES, CANDIDATES)
    expected_known = [[pid in STAND_IN_PRODUCT_IDS for pid in row] for row in CANDIDATES]
    np.testing.assert_array_equal(ranked["known"], expected_known)
    assert ranked["scores"].shape == (batch, len(CANDIDATES[0]))

    assert local_client.embed_query(QUERIES)["embedding"].shape == (batch, STAND_IN_DIM)
    items = local_client.embed_item(TITLES, IMAGES)
    assert items["embedding"].shape == (batch, STAND_IN_DIM)
    np.testing.assert_allclose(items["modality_weights"].sum(axis=1), 1.0, rtol=1e-6)


def test_rank_scores_agree_with_search_scores_for_the_same_products(served_client):
    found = served_client.search(QUERIES)
    ranked = served_client.rank(QUERIES, found["product_ids"].tolist())
    assert ranked["known"].all()
    np.testing.assert_allclose(ranked["scores"], found["scores"], rtol=1e-6)


# --------------------------------------------------------------------------- versions, status, metadata


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_version_pin_reaches_that_version(fixture_server, kind):
    latest = make_client(kind, fixture_server.rest_url, fixture_server.grpc_target)
    first = make_client(kind, fixture_server.rest_url, fixture_server.grpc_target, version=1)
    try:
        newest, oldest = latest.search(QUERIES), first.search(QUERIES)
    finally:
        latest.close()
        first.close()
    np.testing.assert_array_equal(newest["product_ids"], oldest["product_ids"])
    ratio = SCORE_SCALE_BY_VERSION[2] / SCORE_SCALE_BY_VERSION[1]
    np.testing.assert_allclose(newest["scores"], oldest["scores"] * ratio, rtol=1e-6)


@pytest.mark.parametrize("kind, expected", [("rest-columnar", 404), ("grpc", "NOT_FOUND")])
def test_unknown_model_and_version_are_not_found(fixture_server, kind, expected):
    for options in ({"model": "no_such_model"}, {"version": 7}):
        name = options.get("model", MODEL_NAME)
        client = make_client(kind, fixture_server.rest_url, fixture_server.grpc_target,
                             version=options.get("version"))
        client.model_name = name
        try:
            with pytest.raises(ServingError) as refused:
                client.search(["red dress"])
        finally:
            client.close()
        assert expected in (refused.value.http_status, refused.value.grpc_code)
        assert "Servable not found for request" in refused.value.server_message
        assert name in refused.value.server_message


def test_model_status_is_tf_servings_json_on_both_transports(served_client):
    status = served_client.model_status()
    assert status == {"model_version_status": [
        {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in sorted(SCORE_SCALE_BY_VERSION, reverse=True)
    ]}
    assert served_client.wait_until_available(timeout=5)["model_version_status"][0]["state"] == "AVAILABLE"


def test_metadata_describes_the_signatures(served_client):
    metadata = served_client.model_metadata()
    assert metadata["model_spec"]["name"] == MODEL_NAME
    assert metadata["model_spec"]["version"] == str(max(SCORE_SCALE_BY_VERSION))
    assert served_client.signature_names() == sorted(SIGNATURE_INPUTS)  # the whole contract
    rank = metadata["metadata"]["signature_def"]["signature_def"]["rank"]
    assert rank["inputs"]["product_ids"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in rank["inputs"]["product_ids"]["tensor_shape"]["dim"]] == ["-1", "-1"]
    assert rank["outputs"]["known"]["dtype"] == "DT_BOOL"
    assert rank["method_name"] == "tensorflow/serving/predict"


# --------------------------------------------------------------------------- REST wire format


def _post(server, path: str, body: bytes | str | dict) -> tuple[int, str, str]:
    data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    request = urllib.request.Request(server.rest_url + path, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def _get(server, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.rest_url + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


PREDICT = f"/v1/models/{MODEL_NAME}:predict"


def test_row_format_answers_a_list_of_per_row_objects(fixture_server, local_client):
    status, content_type, text = _post(fixture_server, PREDICT, {"instances": QUERIES})
    assert status == 200 and content_type == "application/json"
    answer = json.loads(text)
    assert list(answer) == ["predictions"]
    rows = answer["predictions"]
    direct = local_client.search(QUERIES)
    assert len(rows) == len(QUERIES)
    for i, row in enumerate(rows):
        assert set(row) == {"product_ids", "scores", "modality_weights"}
        assert row["product_ids"] == direct["product_ids"][i].tolist()  # plain JSON strings
        np.testing.assert_array_equal(np.float32(row["scores"]), direct["scores"][i])
        np.testing.assert_array_equal(np.float32(row["modality_weights"]), direct["modality_weights"][i])


def test_columnar_format_answers_an_object_of_outputs(fixture_server, local_client):
    body = {"signature_name": "rank", "inputs": {"query": QUERIES, "product_ids": CANDIDATES}}
    status, _, text = _post(fixture_server, PREDICT, body)
    assert status == 200
    answer = json.loads(text)
    assert list(answer) == ["outputs"] and set(answer["outputs"]) == {"scores", "known"}
    direct = local_client.rank(QUERIES, CANDIDATES)
    assert answer["outputs"]["known"] == direct["known"].tolist()  # JSON true/false
    np.testing.assert_array_equal(np.float32(answer["outputs"]["scores"]), direct["scores"])


def test_single_output_signatures_omit_the_output_name(fixture_server, local_client):
    expected = local_client.embed_query(["a", "bb"])["embedding"]
    row = json.loads(_post(fixture_server, PREDICT, {"signature_name": "embed_query", "instances": ["a", "bb"]})[2])
    columnar = json.loads(_post(fixture_server, PREDICT, {"signature_name": "embed_query", "inputs": ["a", "bb"]})[2])
    np.testing.assert_array_equal(np.float32(row["predictions"]), expected)
    np.testing.assert_array_equal(np.float32(columnar["outputs"]), expected)


def test_b64_objects_carry_raw_bytes_in_row_format(fixture_server, local_client):
    instances = [{"title": t, "image": {"b64": base64.b64encode(i).decode()}, "attributes": []}
                 for t, i in zip(TITLES, IMAGES)]
    status, _, text = _post(fixture_server, PREDICT, {"signature_name": "embed_item", "instances": instances})
    assert status == 200
    rows = json.loads(text)["predictions"]
    direct = local_client.embed_item(TITLES, IMAGES)
    np.testing.assert_array_equal(np.float32([r["embedding"] for r in rows]), direct["embedding"])


def test_floats_are_written_as_their_shortest_float32_decimal(fixture_server):
    text = _post(fixture_server, PREDICT, {"signature_name": "embed_item",
                                           "inputs": {"title": ["x"], "image": [""],
                                                      "attributes": [[]]}})[2]
    # modality weights [1.0, 0.0, 0.0] for a title-only item; 0.1 (title length / 10) not
    # 0.10000000149.
    assert "0.1," in text.replace(" ", "") and "0.10000000149" not in text


def test_client_row_body_matches_tf_servings_documented_layout():
    body = rest_request_body("embed_item", {"title": np.array([b"Red Dress"], object),
                                            "image": np.array([b"\xff\xd8"], object)}, "row")
    assert body == {"signature_name": "embed_item",
                    "instances": [{"title": "Red Dress", "image": {"b64": "/9g="}}]}
    body = rest_request_body("rank", {"query": np.array([b"q"], object),
                                      "product_ids": np.array([[b"p1", b"p2"]], object)}, "columnar")
    assert body == {"signature_name": "rank", "inputs": {"query": ["q"], "product_ids": [["p1", "p2"]]}}
    assert rest_request_body("x", {"v": np.array([0.1], np.float32)}, "columnar")["inputs"]["v"] == [0.1]


BAD_REQUESTS = [
    pytest.param(PREDICT, {"inputs": {"query": [1, 2]}}, 400,
                 "JSON Value: 1 Type: Number is not of expected type: string", id="dtype"),
    pytest.param(PREDICT, {"inputs": {"query": [["a"], ["b"]]}}, 400, "expects [-1]", id="rank"),
    pytest.param(PREDICT, {"signature_name": "rank", "inputs": {"query": ["a"]}}, 400,
                 "Missing named input: product_ids", id="missing-input-columnar"),
    pytest.param(PREDICT, {"signature_name": "rank", "instances": [{"query": "a"}]}, 400,
                 "must only have keys: product_ids,query", id="missing-input-row"),
    pytest.param(PREDICT, {"signature_name": "nope", "instances": ["a"]}, 400,
                 'Serving signature name: "nope" not found in signature def', id="unknown-signature"),
    pytest.param(PREDICT, {"signature_name": 3, "instances": ["a"]}, 400,
                 "'signature_name' key must be a string", id="signature-not-string"),
    pytest.param(PREDICT, {"instances": ["a"], "inputs": ["a"]}, 400, "only one of", id="both-formats"),
    pytest.param(PREDICT, {"instances": []}, 400, "No values in 'instances' array", id="empty-instances"),
    pytest.param(PREDICT, {"queries": ["a"]}, 400, "Missing 'inputs' or 'instances' key", id="no-inputs"),
    pytest.param(PREDICT, "{not json", 400, "JSON Parse error", id="not-json"),
    pytest.param(PREDICT, "", 400, "The document is empty", id="empty-body"),
    pytest.param(PREDICT, {"signature_name": "rank", "inputs": {"query": ["a", "b"],
                                                                "product_ids": [["p1"], ["p1", "p2"]]}},
                 400, "Encountered list at unexpected size", id="ragged"),
    pytest.param(PREDICT, {"signature_name": "embed_item", "inputs": {"title": ["t"], "image": [{"b64": "**"}],
                                                                "attributes": [[]]}},
                 400, "Unable to base64 decode", id="bad-base64"),
    pytest.param(PREDICT, {"signature_name": "rank", "inputs": {"query": ["a", "b"], "product_ids": [["p1"]]}},
                 400, "", id="batch-mismatch-fails-inside-the-model"),
    pytest.param("/v1/models/other:predict", {"instances": ["a"]}, 404,
                 "Servable not found for request: Latest(other)", id="unknown-model"),
    pytest.param(f"/v1/models/{MODEL_NAME}/versions/7:predict", {"instances": ["a"]}, 404,
                 f"Servable not found for request: Specific({MODEL_NAME}, 7)", id="unknown-version"),
    pytest.param(f"/v1/models/{MODEL_NAME}:classify", {"examples": []}, 501, "predict only", id="classify"),
]


@pytest.mark.parametrize("path, body, status, fragment", BAD_REQUESTS)
def test_bad_rest_requests_get_an_error_object_and_the_server_survives(fixture_server, path, body, status, fragment):
    got_status, content_type, text = _post(fixture_server, path, body)
    assert got_status == status, text
    assert content_type == "application/json"
    answer = json.loads(text)
    assert list(answer) == ["error"] and isinstance(answer["error"], str) and answer["error"]
    assert fragment in answer["error"]
    assert _post(fixture_server, PREDICT, {"instances": ["still here"]})[0] == 200


def test_rest_status_and_metadata_urls(fixture_server):
    status, answer = _get(fixture_server, f"/v1/models/{MODEL_NAME}/versions/1")
    assert status == 200 and [v["version"] for v in answer["model_version_status"]] == ["1"]
    status, answer = _get(fixture_server, f"/v1/models/{MODEL_NAME}/versions/9")
    assert status == 404 and "Could not find version 9" in answer["error"]
    status, answer = _get(fixture_server, f"/v1/models/{MODEL_NAME}/versions/1/metadata")
    assert status == 200 and answer["model_spec"]["version"] == "1"
    status, answer = _get(fixture_server, "/v1/models/no_such_model")
    assert status == 404 and "no_such_model" in answer["error"]


# --------------------------------------------------------------------------- failures on the way


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_server_that_never_answers_is_a_serving_error_within_the_timeout(transport):
    with silent_listener() as port:
        client = connect(f"127.0.0.1:{port}", transport=transport, timeout=0.5)
        started = time.monotonic()
        try:
            with pytest.raises(ServingError, match="within 0.5s") as refused:
                client.search(["red dress"])
        finally:
            client.close()
        assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port}" in str(refused.value)


@pytest.mark.parametrize("transport, label", [("rest", "REST"), ("grpc", "gRPC")])
def test_unreachable_server_is_one_line_naming_transport_and_address(transport, label):
    port = free_port()  # nothing listens there
    client = connect(f"127.0.0.1:{port}", transport=transport, timeout=2)
    try:
        with pytest.raises(ServingError) as refused:
            client.search(["red dress"])
    finally:
        client.close()
    message = str(refused.value)
    assert message.startswith(f"cannot reach TF Serving over {label} at ")
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    if transport == "grpc":
        assert refused.value.grpc_code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    else:
        assert refused.value.http_status is None and refused.value.server_message is None


def test_client_refuses_malformed_input_before_sending():
    client = RestClient("http://127.0.0.1:9", timeout=1)  # never contacted
    with pytest.raises(TypeError, match="single str"):
        client.search("red dress")
    with pytest.raises(ValueError, match="empty"):
        client.search([])
    with pytest.raises(TypeError, match=r"queries\[1\]"):
        client.search(["ok", 3])
    with pytest.raises(ValueError, match=r"product_ids\[1\]: 1 ids but row 0 has 2"):
        client.rank(["a", "b"], [["p1", "p2"], ["p1"]])
    with pytest.raises(ValueError, match="2 rows for 1 queries"):
        client.rank(["a"], [["p1"], ["p2"]])
    with pytest.raises(ValueError, match="2 titles but 1 images"):
        client.embed_item(["a", "b"], [b""])
    with pytest.raises(TypeError, match=r"images\[0\]"):
        client.embed_item(["a"], ["not bytes"])
    with pytest.raises(ValueError, match="transport must be one of auto, local, rest, grpc"):
        connect("x", transport="http2")
    with pytest.raises(ValueError, match="request_format"):
        RestClient("http://127.0.0.1:9", request_format="rows")


def test_rank_keeps_only_the_candidate_columns_it_sent():
    class PaddedByBatching(SearchClient):
        """Answers like TF Serving after batching this request with a wider one."""

        def signature_names(self):
            return ["rank"]

        def predict(self, signature_name, inputs):
            batch, width = inputs["product_ids"].shape
            return {"scores": np.arange(batch * (width + 2), dtype=np.float32).reshape(batch, width + 2),
                    "known": np.ones((batch, width + 2), bool)}

    ranked = PaddedByBatching().rank(["a", "b"], [["p1", "p2"], ["p3", "p4"]])
    assert ranked["scores"].shape == (2, 2) and ranked["known"].shape == (2, 2)
    np.testing.assert_array_equal(ranked["scores"], [[0, 1], [4, 5]])


def test_local_client_takes_the_latest_version_of_a_base_path(stand_in_base_path, local_client):
    assert local_client.path.name == str(max(SCORE_SCALE_BY_VERSION))
    first = LocalSavedModelClient(stand_in_base_path / "1")
    np.testing.assert_allclose(local_client.search(QUERIES)["scores"],
                               first.search(QUERIES)["scores"] * SCORE_SCALE_BY_VERSION[2], rtol=1e-6)
    with pytest.raises(ServingError, match="no_such_signature"):
        local_client.predict("no_such_signature", {"query": np.array([b"x"], object)})


def test_local_client_names_what_it_found_instead_of_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(FileNotFoundError, match=r"notes\.txt"):
        LocalSavedModelClient(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        LocalSavedModelClient(tmp_path / "missing")


def test_local_client_refuses_a_wrong_dtype_with_serving_error(local_client):
    with pytest.raises(ServingError, match="serving_default"):
        local_client.predict("serving_default", {"query": np.array([1.5], np.float32)})


def test_grpc_output_filter_and_metadata_fields_follow_tf_serving(fixture_server):
    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(fixture_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = make_predict_request(MODEL_NAME, "search", {"query": np.array([b"red dress"], object)})
        request.output_filter.append("scores")
        response = stub.Predict(request, timeout=10)
        assert set(response.outputs) == {"scores"}
        assert response.model_spec.version.value == max(SCORE_SCALE_BY_VERSION)
        assert response.model_spec.signature_name == "search"
        assert outputs_from_tensor_protos("search", response.outputs)["scores"].shape == (1, STAND_IN_TOP_K)

        request.output_filter[:] = ["no_such_output"]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "output tensor alias not found in signature: no_such_output" in refused.value.details()

        bare = get_model_metadata_pb2.GetModelMetadataRequest()
        bare.model_spec.name = MODEL_NAME
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetModelMetadata(bare, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "metadata_field" in refused.value.details()


# --------------------------------------------------------------------------- choosing a client


def test_connect_picks_the_transport_from_the_target(stand_in_base_path):
    local = connect(stand_in_base_path, timeout=3)
    assert isinstance(local, LocalSavedModelClient) and local.path.name == str(max(SCORE_SCALE_BY_VERSION))
    assert local.timeout == 3
    for url in ("http://127.0.0.1:8501", "https://serving.example:443/"):
        rest = connect(url, version=2, request_format="row")
        assert isinstance(rest, RestClient) and rest.url == url.rstrip("/")
        assert (rest.model_name, rest.version, rest.request_format) == (MODEL_NAME, 2, "row")
    for target in ("127.0.0.1:8500", "serving-host:8500", "[::1]:8500"):
        grpc_client = connect(target, model_name="other", timeout=4)
        assert isinstance(grpc_client, GrpcClient)
        assert (grpc_client.target, grpc_client.model_name, grpc_client.timeout) == (target, "other", 4)
    forced = connect("127.0.0.1:8501", transport="rest")
    assert isinstance(forced, RestClient) and forced.url == "http://127.0.0.1:8501"


@pytest.mark.parametrize("target", ["export/x", "./x", "/no/such/export", "export", "x:y", "x:8500/1"])
def test_a_missing_export_is_not_taken_for_a_host(target, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so the relative targets surely do not exist
    with pytest.raises(FileNotFoundError, match="no such export directory") as missing:
        connect(target)
    assert str(missing.value).startswith(f"{target}: ")
    with pytest.raises(FileNotFoundError, match="no such export directory"):
        connect(target, transport="local")


def test_every_client_refuses_a_timeout_that_is_not_positive(stand_in_base_path):
    for bad in (0, -1, "10", True):
        with pytest.raises(ValueError, match="timeout must be positive seconds"):
            RestClient("http://127.0.0.1:9", timeout=bad)
        with pytest.raises(ValueError, match="timeout must be positive seconds"):
            GrpcClient("127.0.0.1:9", timeout=bad)
        with pytest.raises(ValueError, match="timeout must be positive seconds"):
            LocalSavedModelClient(stand_in_base_path, timeout=bad)
    assert LocalSavedModelClient(stand_in_base_path).timeout is None  # in-process: no limit by default


class _Spin(tf.Module):
    """A signature that runs `steps` loop iterations: a slow call on demand."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="steps")])
    def spin(self, steps):
        done = tf.while_loop(lambda i: i < steps, lambda i: i + 1, [tf.constant(0, tf.int64)])[0]
        return {"done": done}


def test_local_timeout_bounds_a_slow_signature(tmp_path):
    module = _Spin()
    signatures = {"spin": module.spin.get_concrete_function()}
    tf.saved_model.save(module, str(tmp_path / "spin"), signatures=signatures)
    patient = LocalSavedModelClient(tmp_path / "spin", timeout=30)
    assert int(patient.predict("spin", {"steps": np.int64(5)})["done"]) == 5
    hasty = LocalSavedModelClient(tmp_path / "spin", timeout=0.001)
    started = time.monotonic()
    with pytest.raises(ServingError, match=r"'spin': no answer within 0.001s"):
        hasty.predict("spin", {"steps": np.int64(100_000)})
    assert time.monotonic() - started < 1


def test_local_client_pins_a_version_like_a_server_would(stand_in_base_path):
    first = LocalSavedModelClient(stand_in_base_path, version=1)
    assert first.path == stand_in_base_path / "1"
    with pytest.raises(FileNotFoundError, match=r"no version 7; it holds versions \[1, 2\]"):
        LocalSavedModelClient(stand_in_base_path, version=7)
