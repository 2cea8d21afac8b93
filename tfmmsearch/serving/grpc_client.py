"""`GrpcClient`: TF Serving's gRPC PredictionService and ModelService (tensorflow-serving-api stubs).

Also the PredictRequest builder the warmup file reuses: the same tensors gRPC sends are the
ones TF Serving replays on load. (Named grpc_client, not grpc, so it never shadows the grpc
package.)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tfmmsearch.serving.client import (
    DEFAULT_MODEL_NAME,
    DEFAULT_TIMEOUT,
    ModelServerClient,
    ServingError,
    normalize_outputs,
    string_tensor,
)

# TF Serving accepts messages up to 2 GiB; gRPC's 4 MiB default would reject a batch of photos.
GRPC_MESSAGE_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def make_predict_request(
    model_name: str,
    signature_name: str,
    inputs: Mapping[str, Any],
    version: int | None = None,
):
    """A tensorflow_serving PredictRequest for `inputs` (numpy arrays or lists; str/bytes for strings)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind == "U":
            array = string_tensor(array.reshape(-1).tolist()).reshape(array.shape)
        elif array.dtype == np.float64:
            array = array.astype(np.float32)  # the contract's float tensors are float32
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def outputs_from_tensor_protos(signature_name: str, tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A PredictResponse's output TensorProtos -> dict of arrays with the contract's dtypes."""
    import tensorflow as tf

    return normalize_outputs(signature_name, {name: tf.make_ndarray(proto) for name, proto in tensors.items()})


class GrpcClient(ModelServerClient):
    """TF Serving over gRPC: `target` is "host:8500" (a leading scheme:// is dropped).

    The channel opens on the first call; `close()` (or a `with` block) shuts it.
    """

    transport = "grpc"

    def __init__(self, target: str, model_name: str = DEFAULT_MODEL_NAME, timeout: float = DEFAULT_TIMEOUT,
                 version: int | None = None) -> None:
        super().__init__(model_name, timeout, version)
        self.target = target.split("://", 1)[-1].rstrip("/")
        self._channel = None
        self._prediction_stub = None
        self._model_stub = None

    @property
    def address(self) -> str:
        return self.target

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._prediction_stub = self._model_stub = None

    def predict(self, signature_name: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        request = make_predict_request(self.model_name, signature_name, inputs, self.version)
        response = self._call("Predict", request)
        return outputs_from_tensor_protos(signature_name, response.outputs)

    def model_status(self) -> dict[str, Any]:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_model_spec(request.model_spec)
        response = self._call("GetModelStatus", request)
        return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)

    def model_metadata(self) -> dict[str, Any]:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._fill_model_spec(request.model_spec)
        request.metadata_field.append("signature_def")
        response = self._call("GetModelMetadata", request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        as_json = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        return {
            "model_spec": json_format.MessageToDict(response.model_spec, **as_json),
            "metadata": {"signature_def": json_format.MessageToDict(signature_map, **as_json)},
        }

    def _fill_model_spec(self, spec: Any) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = int(self.version)

    def _call(self, method: str, request: Any) -> Any:
        import grpc

        if self._channel is None:
            from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(self.target, options=GRPC_MESSAGE_OPTIONS)
            self._prediction_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        stub = self._model_stub if method == "GetModelStatus" else self._prediction_stub
        try:
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code = error.code().name if error.code() is not None else "UNKNOWN"
            details = error.details() or ""
            if code == "UNAVAILABLE":
                message = self.unreachable_message(f"UNAVAILABLE: {details}")
            elif code == "DEADLINE_EXCEEDED":
                message = self.timeout_message(f"{method}, DEADLINE_EXCEEDED")
            else:
                message = f"gRPC {method} on {self.target} -> {code}: {details}"
            raise ServingError(message, grpc_code=code, server_message=details) from None
