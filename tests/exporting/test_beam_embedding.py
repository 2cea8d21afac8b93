"""Catalog embedding on Apache Beam: the DirectRunner's worker processes give the in-process
path's vectors for every product, in catalog order; bad rows are counted, not fatal; a failed
bundle is retried without losing or repeating products; `tfmmsearch index --runner` builds
the index an in-process update builds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from tfmmsearch.contract import CONTENT_HASH_FIELD
from tfmmsearch.data.schema import CatalogError, Product
from tfmmsearch.exporting.beam_embedding import (
    IndexOutputsHandler,
    beam_embedder,
    embed_products,
    read_bad_rows,
    read_index_shards,
)
from tfmmsearch.exporting.beam_options import BeamEmbedOptions, BeamUnavailableError
from tfmmsearch.exporting.export import embed_catalog
from tfmmsearch.exporting.index_rows import export_attribute_columns, product_hashes, read_index
from tfmmsearch.exporting.updates import EMBEDDED_IDS, IndexUpdate, plan_update

pytestmark = pytest.mark.heavy  # trains or exports in its fixtures: scheduled first

MULTI_PROCESS = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
IN_MEMORY = ("--direct_num_workers=1", "--direct_running_mode=in_memory")


def _loaded(version):
    import tensorflow_text  # noqa: F401

    return tf.saved_model.load(str(version))


@pytest.fixture(autouse=True)
def _workers_import_the_tests(monkeypatch):
    """Worker processes unpickle the tests' handlers by module name: they need the repo."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), path])))


@pytest.fixture(scope="module")
def shop_module(shop_export):
    """`shop_export` loaded once for the module (read only: nothing here assigns its index)."""
    return _loaded(shop_export)


@pytest.fixture(scope="module")
def with_bad_rows(shop_catalog, tmp_path_factory):
    """The shop catalog plus two bad rows a worker meets: an image file that is gone, and
    a file that is not an image (a product given in Python, never validated)."""
    root = tmp_path_factory.mktemp("bad_rows")
    garbage = root / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    gone = Product("gone-1", "a red shirt", root / "missing.jpg", {"brand": "Zed"}, row=61)
    broken = Product("broken-1", "a blue cap", garbage, {"brand": "Zed"}, row=62)
    products = list(shop_catalog[:30]) + [gone] + list(shop_catalog[30:50]) + [broken]
    return products, {gone.product_id: "missing_image", broken.product_id: "undecodable_image"}


def test_worker_processes_match_the_in_process_path_and_count_bad_rows(
        shop_export, shop_module, with_bad_rows, tmp_path):
    products, bad = with_bad_rows
    columns = export_attribute_columns(shop_module)
    options = BeamEmbedOptions(pipeline_args=MULTI_PROCESS, batch_size=8)
    arrays, bad_rows = embed_products(products, columns, shop_export, tmp_path, options)

    good = [p for p in products if p.product_id not in bad]
    assert arrays[EMBEDDED_IDS].tolist() == [p.product_id for p in good]  # catalog order, once
    expected = embed_catalog(shop_module.index_outputs, good, columns=columns)
    for field, values in expected.items():
        assert arrays[field].shape == values.shape, field
        np.testing.assert_allclose(arrays[field], values, rtol=1e-5, atol=1e-6, err_msg=field)
    np.testing.assert_array_equal(arrays[CONTENT_HASH_FIELD], product_hashes(good, columns))
    # The two bad rows are counted under the catalog reader's reasons, naming row and file.
    assert {row["product_id"]: row["reason"] for row in bad_rows} == bad
    assert [row["row"] for row in bad_rows] == [61, 62]
    assert all(row["field"] == "image" for row in bad_rows)
    assert "missing.jpg" in bad_rows[0]["image"] and "garbage.jpg" in bad_rows[1]["image"]
    assert read_bad_rows(tmp_path) == bad_rows


def test_an_update_skips_bad_rows_or_fails_naming_them(shop_export, shop_module, with_bad_rows,
                                                      tmp_path):
    """Through `beam_embedder` on the already loaded export (the in-memory runner reuses it),
    planned as `update_index` plans: nothing here writes a version."""
    products, bad = with_bad_rows
    products = products[18:33] + products[-1:]  # two indexed, twelve new, both bad rows
    update = IndexUpdate(upsert=products)
    # "error": the first bad row, as a catalog read names it.
    options = BeamEmbedOptions(pipeline_args=IN_MEMORY, batch_size=4, on_bad_row="error",
                               embeddings_dir=tmp_path / "error")
    with pytest.raises(CatalogError) as error:
        plan_update(shop_module, read_index(shop_module), update,
                    beam_embedder(options)(shop_module, shop_export))
    message = str(error.value)
    assert "missing.jpg" in message and "row 61" in message and "field 'image'" in message
    assert "2 bad rows (missing_image: 1, undecodable_image: 1)" in message

    # "skip": every good product is upserted, the bad ones are counted and left out; the
    # temporary directory beside the export is removed.
    options = BeamEmbedOptions(pipeline_args=IN_MEMORY, batch_size=4, on_bad_row="skip")
    rows, report = plan_update(shop_module, read_index(shop_module), update,
                               beam_embedder(options)(shop_module, shop_export))
    assert sorted(report.skipped) == sorted(bad)
    assert (report.embedded, report.reused, report.added) == (12, 2, 12)
    assert report.size == 20 + 12 and "2 bad rows could not be embedded" in report.summary()
    assert not set(bad) & set(rows.product_ids)
    assert not [p for p in shop_export.parent.iterdir() if p.name.startswith(".embeddings-")]


class FailsOnceHandler(IndexOutputsHandler):
    """Raises on the first call for the batch holding `victim`, once per marker file: a worker
    that dies mid-bundle. Workers may be processes, so the marker lives on disk."""

    def __init__(self, version_dir, marker: str, victim: str, **kwargs):
        super().__init__(version_dir, **kwargs)
        self._marker, self._victim = marker, victim

    def run_inference(self, batch, model, inference_args=None):
        if any(item["product_id"] == self._victim for item in batch):
            try:
                with open(self._marker, "x"):
                    pass
            except FileExistsError:
                pass
            else:
                raise RuntimeError(f"injected worker failure on {self._victim}")
        return super().run_inference(batch, model, inference_args)


def test_a_failed_bundle_is_retried_without_lost_or_duplicated_products(
        shop_export, shop_module, shop_catalog, tmp_path):
    """The DirectRunner's batch engine (the FnApiRunner, in its multi-process and in-memory
    modes alike) fails the pipeline at the first bundle error instead of retrying it (Beam
    issue #18640; checked with Beam 2.77), so retries are checked with
    BundleBasedDirectRunner, the DirectRunner engine that retries a failed bundle (up to 4
    times) as a cluster runner does. The marker proves the failure really happened."""
    products = list(shop_catalog[:40])
    victim = products[17].product_id
    marker = tmp_path / "failed-once"
    handler = FailsOnceHandler(shop_export, str(marker), victim, batch_size=8)
    options = BeamEmbedOptions(runner="BundleBasedDirectRunner", batch_size=8,
                               embeddings_dir=tmp_path / "out")
    arrays = beam_embedder(options, handler)(shop_module, shop_export)(products)
    assert marker.exists()  # the failure was injected, and the run still finished
    assert arrays[EMBEDDED_IDS].tolist() == [p.product_id for p in products]  # once each
    assert read_bad_rows(tmp_path / "out") == []
    columns = export_attribute_columns(shop_module)
    expected = embed_catalog(shop_module.index_outputs, products, columns=columns)
    np.testing.assert_allclose(arrays["embedding"], expected["embedding"], rtol=1e-5, atol=1e-6)


def _checkpoint(version: Path) -> dict[str, np.ndarray]:
    """Every variable a version's checkpoint holds (reading it is faster than loading it)."""
    reader = tf.train.load_checkpoint(str(version / "variables" / "variables"))
    return {key: np.asarray(reader.get_tensor(key)) for key in reader.get_variable_to_shape_map()
            if key.endswith("VARIABLE_VALUE")}


def _copy_version(version: Path, base: Path) -> Path:
    shutil.copytree(version, base / "1")
    return base / "1"


def test_cli_index_with_the_direct_runner_builds_the_in_process_index(shop_export, shop_run,
                                                                     tmp_path, capsys):
    from tfmmsearch.cli import main
    from tfmmsearch.data.prepare import resolve_catalog_dir
    from tfmmsearch.model.build import load_run_config

    catalog_dir = resolve_catalog_dir(load_run_config(shop_run))
    beam_source = _copy_version(shop_export, tmp_path / "beam")
    plain_source = _copy_version(shop_export, tmp_path / "plain")
    shards = tmp_path / "shards"
    assert main(["index", "--model", str(beam_source.parent), "--catalog", str(catalog_dir),
                 "--runner", "DirectRunner", "--embeddings-dir", str(shards), "--batch-size",
                 "16", "--", *IN_MEMORY]) == 0
    out = capsys.readouterr().out
    assert "indexed into" in out and "40 embedded; 20 unchanged and reused" in out
    assert main(["index", "--model", str(plain_source.parent), "--catalog",
                 str(catalog_dir)]) == 0
    # The two versions share version 1's graph, so their checkpoints hold the same variables:
    # equal model weights, and the same index rows in the same order.
    beam_values, plain_values = _checkpoint(beam_source.parent / "2"), _checkpoint(
        plain_source.parent / "2")
    assert set(beam_values) == set(plain_values)
    assert any("product_ids" in key for key in plain_values)
    for key, values in plain_values.items():
        if values.dtype.kind in "OSU":
            np.testing.assert_array_equal(beam_values[key], values, err_msg=key)
        else:
            np.testing.assert_allclose(beam_values[key], values, rtol=1e-5, atol=1e-6,
                                       err_msg=key)
    # --embeddings-dir keeps the shards: the 40 products the update embedded.
    assert len(read_index_shards(shards)[EMBEDDED_IDS]) == 40


@pytest.mark.parametrize("argv, words", [
    (["--runner", "Dataflow"], "unknown Beam runner 'Dataflow'; choose one of DirectRunner"),
    (["--", "--direct_num_workers=2"], "pipeline options only apply to a Beam run"),
    (["--embeddings-dir", "x"], "--embeddings-dir only apply to a Beam run"),
    (["--runner", "DirectRunner", "--batch-size", "0"], "batch_size must be >= 1"),
    (["--runner", "DirectRunner", "--", "--runner=FlinkRunner"], "not as a pipeline option"),
])
def test_cli_beam_mistakes_are_one_line(argv, words, tmp_path, capsys):
    from tfmmsearch.cli import main

    assert main(["index", "--model", str(tmp_path), "--catalog", str(tmp_path)] + argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert words in err


def test_a_missing_beam_is_one_line(monkeypatch, tmp_path, capsys):
    import importlib.util

    from tfmmsearch.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "apache_beam" else real(name, *a))
    with pytest.raises(BeamUnavailableError, match=r"pip install 'tfmmsearch\[beam\]'"):
        BeamEmbedOptions()
    assert main(["index", "--model", str(tmp_path), "--catalog", str(tmp_path),
                 "--runner", "DirectRunner"]) == 1
    err = capsys.readouterr().err
    assert "needs Apache Beam, which is not installed" in err and "Traceback" not in err
