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
from tfmmsearch.exporting.export import embed_catalog, update_index
from tfmmsearch.exporting.index_rows import export_attribute_columns, product_hashes, read_index
from tfmmsearch.exporting.updates import EMBEDDED_IDS, IndexUpdate

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


def test_worker_processes_match_the_in_process_path_and_count_bad_rows(shop_export, with_bad_rows,
                                                                      tmp_path):
    products, bad = with_bad_rows
    module = _loaded(shop_export)
    columns = export_attribute_columns(module)
    options = BeamEmbedOptions(pipeline_args=MULTI_PROCESS, batch_size=8)
    arrays, bad_rows = embed_products(products, columns, shop_export, tmp_path, options)

    good = [p for p in products if p.product_id not in bad]
    assert arrays[EMBEDDED_IDS].tolist() == [p.product_id for p in good]  # catalog order
    expected = embed_catalog(module.index_outputs, good, columns=columns)
    for field, values in expected.items():
        assert arrays[field].shape == values.shape, field
        np.testing.assert_allclose(arrays[field], values, rtol=1e-5, atol=1e-6, err_msg=field)
    np.testing.assert_array_equal(arrays[CONTENT_HASH_FIELD], product_hashes(good, columns))
    # The two bad rows are counted under the catalog reader's reasons, naming row and file.
    assert {row["product_id"]: row["reason"] for row in bad_rows} == bad
    assert [row["row"] for row in bad_rows] == [61, 62]
    assert all(row["field"] == "image" for row in bad_rows)
    assert "missing.jpg" in bad_rows[0]["image"] and "garbage.jpg" in bad_rows[1]["image"]
    # Both workers embedded: the shards hold every good product exactly once.
    assert len(read_index_shards(tmp_path)[EMBEDDED_IDS]) == len(good)
    assert read_bad_rows(tmp_path) == bad_rows


def _copy_version(version: Path, base: Path) -> Path:
    shutil.copytree(version, base / "1")
    return base / "1"


def test_an_update_skips_bad_rows_or_fails_naming_them(shop_export, with_bad_rows, tmp_path):
    products, bad = with_bad_rows
    source = _copy_version(shop_export, tmp_path / "shop")
    # "error": the first bad row, as a catalog read names it, and nothing is written.
    options = BeamEmbedOptions(pipeline_args=IN_MEMORY, batch_size=16, on_bad_row="error")
    with pytest.raises(CatalogError) as error:
        update_index(source, lambda filters: IndexUpdate(upsert=products),
                     embed_with=beam_embedder(options))
    message = str(error.value)
    assert "missing.jpg" in message and "row 61" in message and "field 'image'" in message
    assert "2 bad rows (missing_image: 1, undecodable_image: 1)" in message
    assert {p.name for p in source.parent.iterdir()} == {"1", ".tfmmsearch-writer.lock"}

    # "skip": the new version holds every good product; the temporary shards are gone.
    options = BeamEmbedOptions(pipeline_args=IN_MEMORY, batch_size=16, on_bad_row="skip")
    version, report = update_index(source, lambda filters: IndexUpdate(upsert=products),
                                   embed_with=beam_embedder(options))
    assert sorted(report.skipped) == sorted(bad)
    assert report.embedded == len(products) - 20 - 2  # shop_export already holds the first 20
    assert report.size == len(products) - 2
    ids = read_index(_loaded(version)).product_ids.tolist()
    assert sorted(ids) == sorted(p.product_id for p in products if p.product_id not in bad)
    assert not [p for p in source.parent.iterdir() if p.name.startswith(".embeddings-")]


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


def test_a_failed_bundle_is_retried_without_lost_or_duplicated_products(shop_export,
                                                                       shop_catalog, tmp_path):
    """The DirectRunner's multi-process engine (the FnApiRunner) fails the pipeline at the
    first bundle error instead of retrying it (Beam issue #18640), so retries are checked
    with BundleBasedDirectRunner, the DirectRunner engine that retries a failed bundle as a
    cluster runner does. The marker proves the failure really happened."""
    products = list(shop_catalog[:40])
    victim = products[17].product_id
    marker = tmp_path / "failed-once"
    handler = FailsOnceHandler(shop_export, str(marker), victim, batch_size=8)
    options = BeamEmbedOptions(runner="BundleBasedDirectRunner", batch_size=8)
    module = _loaded(shop_export)
    columns = export_attribute_columns(module)
    arrays, bad_rows = embed_products(products, columns, shop_export, tmp_path / "out", options,
                                      handler=handler)
    assert marker.exists()  # the failure was injected, and the run still finished
    assert bad_rows == []
    assert arrays[EMBEDDED_IDS].tolist() == [p.product_id for p in products]  # once each
    expected = embed_catalog(module.index_outputs, products, columns=columns)
    np.testing.assert_allclose(arrays["embedding"], expected["embedding"], rtol=1e-5, atol=1e-6)


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
    beam_rows = read_index(_loaded(beam_source.parent / "2"))
    plain_rows = read_index(_loaded(plain_source.parent / "2"))
    np.testing.assert_array_equal(beam_rows.product_ids, plain_rows.product_ids)
    assert set(beam_rows.fields) == set(plain_rows.fields)
    for name, values in plain_rows.fields.items():
        if values.dtype == object:
            np.testing.assert_array_equal(beam_rows.fields[name], values, err_msg=name)
        else:
            np.testing.assert_allclose(beam_rows.fields[name], values, rtol=1e-5, atol=1e-6,
                                       err_msg=name)
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
