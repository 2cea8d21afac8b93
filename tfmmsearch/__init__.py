"""tfmmsearch: multimodal (text + image) product search on TensorFlow, TFRS and TF Serving.

TFRS and `hub.KerasLayer` need Keras 2 (tf_keras), so the legacy-Keras switch is set here,
before anything can import TensorFlow. TensorFlow's C++ log noise is lowered too; set
TF_CPP_MIN_LOG_LEVEL yourself to see it again.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"

# The Python entrypoints, imported lazily so `import tfmmsearch` stays cheap.
_ENTRYPOINTS = {
    "load_config": "tfmmsearch.config",
    "prepare_data": "tfmmsearch.data.prepare",
    "train": "tfmmsearch.training.train",
    "load_trained_model": "tfmmsearch.model.build",
    "evaluate": "tfmmsearch.evaluation.evaluate",
    "export": "tfmmsearch.exporting.export",
    "reindex": "tfmmsearch.exporting.export",
    "run_demo": "tfmmsearch.demo",
}


def __getattr__(name):
    if name in _ENTRYPOINTS:
        import importlib

        return getattr(importlib.import_module(_ENTRYPOINTS[name]), name)
    raise AttributeError(f"module 'tfmmsearch' has no attribute {name!r}")
