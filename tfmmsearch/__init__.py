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
