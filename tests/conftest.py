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


# --------------------------------------------------------------------------- tiny training runs

# `tiny_hub_cache` (the tiny BERT + image modules, built once per session) is defined below.


def tiny_config_overrides(hub_cache: Path, work_dir: Path) -> list[str]:
    """`--set` overrides for a run that trains in seconds: ~150 synthetic items, 32 px, dim 16.

    Returned as override strings so the same tiny run can be built in-process
    (`make_tiny_config`) or passed to `tfmmsearch train --set ...` in a subprocess.
    """
    return [
        "name=tiny",
        f"data.work_dir={work_dir}",
        "data.catalog_dir=",
        "data.on_bad_row=skip",
        "data.synthetic.num_items=150",
        "data.synthetic.image_size=32",
        "data.queries.phrasings_per_attribute_set=2",
        "data.queries.max_extra_attributes=1",
        "data.queries.max_positives_per_query=4",
        f"towers.hub_cache_dir={hub_cache}",
        "towers.text.seq_length=16",
        "towers.text.trainable=frozen",
        "towers.image.image_size=32",
        "towers.image.trainable=false",
        "model.embedding_dim=16",
        "model.ranking_candidates=8",
        "model.ranking_hidden_units=[16]",
        "training.batch_size=16",
        "training.epochs=2",
        "training.learning_rate=0.003",
        "training.cache_frozen_features=true",
    ]


def make_tiny_config(hub_cache: Path, work_dir: Path, overrides: list[str] | None = None):
    """A tiny `Config` (see `tiny_config_overrides`), with extra dotted overrides applied last."""
    from tfmmsearch.config import load_config

    return load_config(None, tiny_config_overrides(hub_cache, work_dir) + list(overrides or []))


@pytest.fixture(scope="session")
def tiny_hub_cache(tmp_path_factory) -> Path:
    """The tiny TF-Hub fixtures (BERT + image), built once per test session."""
    from tfmmsearch.hub.registry import build_bundle

    cache_dir = tmp_path_factory.mktemp("hub_cache")
    for bundle in ("tiny-bert", "tiny-image"):
        build_bundle(bundle, cache_dir)
    return cache_dir


# --------------------------------------------------------------------------- a tiny export

def make_untrained_run(root: Path, hub_cache: Path, overrides: list[str] | None = None) -> Path:
    """config.yaml + final weights (+ item_features.json with model.item_features) of an
    untrained tiny model over a 60-item synthetic catalog."""
    from tfmmsearch.config import load_config, save_config
    from tfmmsearch.model.build import RUN_WEIGHTS, build_model, run_item_features

    config = load_config(None, [
        f"data.work_dir={root / 'data'}", "data.synthetic.num_items=60",
        f"towers.hub_cache_dir={hub_cache}", "towers.image.image_size=64",
        "model.embedding_dim=16", f"export.base_dir={root / 'export'}", "export.model_name=tiny",
        "export.top_k=10",
    ] + list(overrides or []))
    run_dir = root / "run"
    run_dir.mkdir()
    save_config(config, run_dir / "config.yaml")
    item_features = None
    if config.model.item_features:  # vocabularies and statistics from the catalog, as training
        from tfmmsearch.data.catalog import read_catalog
        from tfmmsearch.data.prepare import resolve_catalog_dir

        products = read_catalog(resolve_catalog_dir(config)).products
        item_features = run_item_features(config, run_dir, products, write=True)
    model = build_model(config, item_features=item_features)
    model.build_heads()
    model.save_weights(str(run_dir / RUN_WEIGHTS))
    return run_dir


# Item features (a brand vocabulary, log prices) that the ranking head also reads.
ITEM_FEATURE_OVERRIDES = [
    "model.item_features=[{column: brand, kind: categorical, embedding_dim: 4}, "
    "{column: price, kind: numeric, transform: log1p}]",
    "model.ranking_interactions=[fused, text, attributes]"]


@pytest.fixture(scope="session")
def attribute_run(tmp_path_factory, tiny_hub_cache) -> Path:
    """An untrained tiny run with `ITEM_FEATURE_OVERRIDES`, built once per session; read only."""
    return make_untrained_run(tmp_path_factory.mktemp("attributes"), tiny_hub_cache,
                              ITEM_FEATURE_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_hub_cache) -> Path:
    """An untrained tiny run (see `make_untrained_run`), built once per test session.

    Shared by every module that reads it: a test may write files of its own into it or add
    export versions beside `exported`, but one that must see the run untouched (an empty
    feature cache, say) builds its own with `make_untrained_run`.
    """
    return make_untrained_run(tmp_path_factory.mktemp("export_run"), tiny_hub_cache)


@pytest.fixture(scope="session")
def exported(tiny_run) -> Path:
    """Version 1 of `tiny_run`'s export (config's export.base_dir), built once per session.

    Tests may add later versions to `exported.parent`; they compare against the versions there
    before them rather than assume which ones exist."""
    from tfmmsearch.exporting.export import export

    return export(tiny_run)


@pytest.fixture(scope="session")
def exported_subset(tiny_run, tmp_path_factory):
    """(version, products): `tiny_run` exported with top_k 100 over 40 given catalog products,
    from the 6th on (not a prefix of the catalog), into a base of its own; once per session,
    read only."""
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.prepare import resolve_catalog_dir
    from tfmmsearch.exporting.export import export
    from tfmmsearch.model.build import load_run_config

    products = read_catalog(resolve_catalog_dir(load_run_config(tiny_run))).products[5:45]
    assert len(products) == 40
    base = tmp_path_factory.mktemp("export_subset") / "tiny"
    return export(tiny_run, base_dir=base, top_k=100, products=products), products


def pytest_collection_modifyitems(config, items):
    """Files marked slow or heavy run first. `make test` gives each xdist worker whole files,
    in collection order: a long file collected last would leave one worker running it alone."""
    first_seen = {}
    for index, item in enumerate(items):
        long = item.get_closest_marker("slow") or item.get_closest_marker("heavy")
        first_seen.setdefault(item.path, (long is None, index))
    items.sort(key=lambda item: first_seen[item.path])
