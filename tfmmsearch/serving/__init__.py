"""Serving side of tfmmsearch: talking to the exported model the way production will.

`client` queries TensorFlow Serving over REST or gRPC (or the SavedModel in-process) with one
API; `warmup` writes and replays the assets.extra warmup file TF Serving runs on load;
`test_server` is a TEST FIXTURE that answers the TF Serving PredictionService and REST API
subset over a SavedModel loaded in-process, because no TF Serving binary can be installed on the
development machines. The deployment files themselves live in the repository's serving/ folder.
"""
