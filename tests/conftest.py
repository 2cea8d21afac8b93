"""Test-wide setup: Keras 2 for TFRS/TF-Hub before TensorFlow loads, and shared fixtures."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
MYNTRA_DIR = SHARED_DIR / "data" / "myntra"
REFERENCE_DIR = SHARED_DIR / "reference"


@pytest.fixture(scope="session")
def myntra_dir() -> Path:
    if not (MYNTRA_DIR / "products.csv").is_file():
        pytest.skip(f"Myntra catalog not found at {MYNTRA_DIR} (shared/ is not beside the repo)")
    return MYNTRA_DIR


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference outputs not found at {REFERENCE_DIR}")
    return REFERENCE_DIR
