"""Serving side of tfmmsearch: talking to the exported model the way production will.

`client` holds the one client interface (`SearchClient`, `ServingError`, `connect`); the
transports behind it are `rest` (TF Serving REST over urllib), `grpc_client` (TF Serving gRPC)
and `local` (the SavedModel in this process). `warmup` writes and replays the assets.extra warmup
file TF Serving runs on load; `query` is `tfmmsearch query`. The TF Serving test double the tests
run against lives in tests/serving/tf_serving_double.py, not here; the deployment files live in
the repository's serving/ folder.
"""
