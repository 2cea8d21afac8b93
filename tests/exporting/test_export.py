"""Export to TF Serving layout: versions, signatures, fresh-process parity, atomicity, re-indexing."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.exporting import export as export_lib
from tfmmsearch.contract import SIGNATURE_ALIASES, SIGNATURE_INPUTS, UNKNOWN_SCORE, list_versions
from tfmmsearch.exporting.export import LOCK_FILE

pytestmark = pytest.mark.heavy  # trains or exports in its fixtures: scheduled first

QUERIES = ["black caps", "red dress for women", ""]


@pytest.fixture(scope="module")
def loaded(exported):
    """`exported` loaded once in this process (the tests below only call it, never assign)."""
    import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

    return tf.saved_model.load(str(exported))


def test_version_layout_and_saved_model_cli_lists_every_signature(exported):
    assert exported.name == "1" and exported.parent.name == "tiny"
    assert (exported / "saved_model.pb").is_file()
    # Nothing but versions and the writer lock (TF Serving ignores non-integer entries).
    assert {p.name for p in exported.parent.iterdir() if not p.name.isdigit()} == {LOCK_FILE}
    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([str(cli), "show", "--dir", str(exported), "--all"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in SIGNATURE_INPUTS:  # every signature of the contract
        assert f"signature_def['{name}']" in shown.stdout


def test_the_export_holds_no_keras_layer_traces(exported, tiny_run):
    # Layer call traces are for tf.keras.models.load_model, which nothing does with an export;
    # they cost a third of the export's time (export._keras_layer_traces_off). The pretrained
    # encoders arrive as SavedModels with traces of their own: only the model's layers count.
    from tensorflow.core.protobuf import saved_model_pb2

    from tfmmsearch.model.build import load_trained_model

    _, model = load_trained_model(tiny_run)
    ours = {module.name for part in (model.item_tower, model.query_tower, model.ranking_head)
            for module in (part, *part.submodules)}
    proto = saved_model_pb2.SavedModel.FromString((exported / "saved_model.pb").read_bytes())
    traced = {function.signature.name.removeprefix("__inference_").split("_layer_call_and_")[0]
              for function in proto.meta_graphs[0].graph_def.library.function
              if "_layer_call_and_return_conditional_losses" in function.signature.name}
    assert "image_projection_hidden" in ours
    assert not ours & traced, sorted(ours & traced)


FRESH_PROCESS = textwrap.dedent("""
    import sys, json
    import numpy as np, tensorflow as tf, tensorflow_text  # nothing from tfmmsearch
    model = tf.saved_model.load(sys.argv[1])
    queries = tf.constant(json.loads(sys.argv[2]))
    image = open(sys.argv[3], "rb").read()
    out = {}
    for name in ("serving_default", "retrieve", "embed_query"):
        for key, value in model.signatures[name](query=queries).items():
            out[f"{name}/{key}"] = value.numpy()
    ranked = model.signatures["rank"](query=queries[:1], product_ids=tf.constant([["100001", "nope"]]))
    out.update({f"rank/{k}": v.numpy() for k, v in ranked.items()})
    items = model.signatures["embed_item"](title=tf.constant(["Red Dress", ""]), image=tf.constant([b"", image]),
                                           attributes=tf.fill([2, 0], ""))
    out.update({f"embed_item/{k}": v.numpy() for k, v in items.items()})
    np.savez(sys.argv[4], **{k: (v.astype(str) if v.dtype == object else v) for k, v in out.items()})
""")


def test_a_fresh_tensorflow_process_serves_every_signature_like_the_trained_model(
        exported, loaded, tiny_run, tmp_path):
    from tfmmsearch.model.build import load_trained_model

    config, model = load_trained_model(tiny_run)
    catalog_images = sorted((Path(config.data.work_dir) / "synthetic_catalog" / "images").glob("*.jpg"))
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run([sys.executable, str(script), str(exported), json.dumps(QUERIES),
                             str(catalog_images[0]), str(tmp_path / "out.npz")],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    served = dict(np.load(tmp_path / "out.npz"))

    # embed_query equals the trained query tower.
    expected_query = model.embed_queries({"query": tf.constant(QUERIES)})
    np.testing.assert_allclose(served["embed_query/embedding"], expected_query.numpy(), atol=1e-5)
    # embed_item equals the trained model on the same raw inputs (no image / no title handled).
    expected_items = model.embed_items({
        "title": tf.constant(["Red Dress", ""]),
        "image_bytes": tf.constant([b"", catalog_images[0].read_bytes()])})
    np.testing.assert_allclose(served["embed_item/embedding"], expected_items["embedding"].numpy(), atol=1e-5)
    # One weight per modality; this model has no item features, so its attribute weight is 0.
    np.testing.assert_allclose(served["embed_item/modality_weights"], [[1, 0, 0], [0, 1, 0]], atol=1e-6)

    # retrieve = exact top-K over the index, checked against numpy brute force.
    index_embeddings = loaded.index.embeddings.numpy()
    index_ids = loaded.index.product_ids.numpy().astype(str)
    brute = served["embed_query/embedding"] @ index_embeddings.T
    top = np.argsort(-brute, axis=1, kind="stable")[:, :10]
    np.testing.assert_allclose(served["retrieve/scores"][:2], np.take_along_axis(brute, top, 1)[:2],
                               atol=1e-5)
    assert served["retrieve/product_ids"].shape == (3, 10)
    # The empty query finds nothing: empty ids, score -inf, in both search signatures.
    for name in ("retrieve", "serving_default"):
        assert set(served[f"{name}/product_ids"][2]) == {""}
        assert np.all(served[f"{name}/scores"][2] == -np.inf)
    # search returns K ranked results with per-modality weights, scores descending.
    assert served["serving_default/product_ids"].shape == (3, 10)
    assert served["serving_default/modality_weights"].shape == (3, 10, 3)
    assert np.all(np.diff(served["serving_default/scores"][:2], axis=1) <= 1e-6)
    assert set(served["serving_default/product_ids"][:2].ravel()) <= set(index_ids)
    # rank: a known id gets a real score, an unknown one the documented sentinel.
    np.testing.assert_array_equal(served["rank/known"], [[True, False]])
    assert served["rank/scores"][0, 1] == pytest.approx(UNKNOWN_SCORE)
    assert served["rank/scores"][0, 0] > UNKNOWN_SCORE


def test_bad_inputs_give_errors_not_crashes(exported, loaded):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        loaded.signatures["embed_query"](query=tf.constant([1, 2]))  # wrong dtype
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        loaded.signatures["rank"](query=tf.constant(["x"]), product_ids=tf.constant(["a"]))  # wrong rank
    # An undecodable image names its position in the batch.
    jpeg = next(Path(exported.parent.parent.parent / "data" / "synthetic_catalog" / "images").glob("*.jpg"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch position 1"):
        loaded.signatures["embed_item"](title=tf.constant(["x", "y"]),
                                        image=tf.constant([jpeg.read_bytes(), b"not a jpeg"]),
                                        attributes=tf.fill([2, 0], ""))
    # Mismatched batches are InvalidArgument with a message, not an internal error.
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        loaded.signatures["embed_item"](title=tf.constant(["x", "y"]), image=tf.constant([b""]),
                                        attributes=tf.fill([2, 0], ""))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        loaded.signatures["embed_item"](title=tf.constant(["x", "y"]), image=tf.constant([b"", b""]),
                                        attributes=tf.fill([1, 0], ""))
    # A model without item features takes no attribute values.
    with pytest.raises(tf.errors.InvalidArgumentError, match="reads no item features"):
        loaded.signatures["embed_item"](title=tf.constant(["x"]), image=tf.constant([b""]),
                                        attributes=tf.constant([["Nike"]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        loaded.signatures["rank"](query=tf.constant(["x", "y"]), product_ids=tf.constant([["a"]]))
    # A batch of 0 items gives empty outputs.
    empty = loaded.signatures["embed_item"](title=tf.constant([], tf.string),
                                            image=tf.constant([], tf.string),
                                            attributes=tf.fill([0, 0], ""))
    assert empty["embedding"].shape == (0, 16) and empty["modality_weights"].shape == (0, 3)
    # The same loaded model keeps answering afterwards; blank queries find nothing.
    out = loaded.signatures["serving_default"](query=tf.constant(["", "  \t", "caps"]))
    assert out["product_ids"].shape == (3, 10)
    assert set(out["product_ids"].numpy()[:2].ravel()) == {b""}
    assert np.all(out["scores"].numpy()[:2] == -np.inf)
    assert b"" not in set(out["product_ids"].numpy()[2])


def test_a_failed_export_leaves_earlier_versions_and_no_partial_one(tiny_run, exported, monkeypatch):
    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full")

    before = sorted(p.name for p in exported.parent.iterdir())
    assert exported.name in before
    monkeypatch.setattr(export_lib.tf.saved_model, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export_lib.export(tiny_run)
    entries = sorted(p.name for p in exported.parent.iterdir())
    assert [name for name in entries if name != LOCK_FILE] == [
        name for name in before if name != LOCK_FILE]  # no new version, no leftover temporary


def test_reindexing_makes_new_products_searchable_in_a_new_version(exported, tiny_run, tmp_path):
    from tfmmsearch.data.catalog import read_catalog, write_catalog

    source = exported.parent.parent.parent / "data" / "synthetic_catalog"
    catalog = read_catalog(source)
    new_dir = tmp_path / "catalog"
    shutil.copytree(source / "images", new_dir / "images")
    rows = [{"product_id": p.product_id, "title": p.title,
             "image": str(p.image_path.relative_to(source)) if p.image_path else ""}
            for p in catalog.products]
    rows.append({"product_id": "NEW-1", "title": "Zentra Women Purple Dress",
                 "image": rows[0]["image"] or rows[1]["image"]})
    write_catalog(new_dir, rows)
    latest = max(list_versions(exported.parent))  # `exported` is version 1; other tests add more
    version = export_lib.reindex(exported.parent, new_dir)
    assert version.name == str(latest + 1)
    loaded = tf.saved_model.load(str(version))
    assert loaded.index.product_ids.numpy().shape == (len(rows),)
    ranked = loaded.signatures["rank"](query=tf.constant(["purple dress"]),
                                       product_ids=tf.constant([["NEW-1"]]))
    assert bool(ranked["known"].numpy()[0, 0])
    # The previous version is untouched on disk and does not know the new product.
    old = tf.saved_model.load(str(exported))
    assert not bool(old.signatures["rank"](query=tf.constant(["x"]),
                                           product_ids=tf.constant([["NEW-1"]]))["known"].numpy()[0, 0])


def test_warmup_file_parses_as_prediction_logs_and_replays(exported):
    from tfmmsearch.serving.warmup import read_warmup_file, replay_warmup, warmup_path

    assert warmup_path(exported).is_file()
    logs = read_warmup_file(warmup_path(exported))
    signatures = {log.predict_log.request.model_spec.signature_name for log in logs}
    assert signatures == set(SIGNATURE_INPUTS) - set(SIGNATURE_ALIASES)  # aliases share a function
    results = replay_warmup(exported)
    assert len(results) == len(logs)


def test_clients_over_the_test_server_match_the_export_called_directly(exported, capsys):
    """REST (row + columnar) and gRPC through the PredictionService TEST FIXTURE, on the real export."""
    from tests.serving.tf_serving_double import InProcessModelServer
    from tfmmsearch.serving.connect import connect
    from tfmmsearch.serving.local import LocalSavedModelClient
    from tfmmsearch.serving.query import run_query

    queries = ["black caps", "purple dress"]
    local = LocalSavedModelClient(exported.parent)
    expected = local.search(queries)
    with InProcessModelServer(exported.parent, "tiny") as server:
        clients = [connect(server.rest_url, "tiny", request_format="row"),
                   connect(server.rest_url, "tiny", request_format="columnar"),
                   connect(server.grpc_target, "tiny")]
        for client in clients:
            got = client.search(queries)
            np.testing.assert_array_equal(got["product_ids"], expected["product_ids"])
            np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-5)
            np.testing.assert_allclose(got["modality_weights"], expected["modality_weights"], rtol=1e-5)
        image = next(Path(exported.parent.parent.parent / "data" / "synthetic_catalog" / "images").glob("*.jpg"))
        item = clients[0].embed_item(["Red Dress"], [image.read_bytes()])
        np.testing.assert_allclose(item["embedding"], local.embed_item(["Red Dress"], [image.read_bytes()])["embedding"],
                                   rtol=1e-5, atol=1e-6)
        run_query(server.rest_url, ["black caps"], model_name="tiny", k=3)
    printed = capsys.readouterr().out
    assert "query: 'black caps'" in printed and printed.count("score") == 3


def test_export_of_given_products_indexes_exactly_those(tiny_run, exported_subset, tmp_path):
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.prepare import resolve_catalog_dir
    from tfmmsearch.model.build import load_run_config

    version, products = exported_subset  # catalog products 5..44, exported with products=
    catalog = read_catalog(resolve_catalog_dir(load_run_config(tiny_run))).products
    assert [p.product_id for p in products] != [p.product_id for p in catalog[:len(products)]]
    loaded = tf.saved_model.load(str(version))
    stored = [pid.decode() for pid in loaded.index.product_ids.numpy()]
    assert stored == [p.product_id for p in products]
    with pytest.raises(ValueError, match="either catalog_dir or products"):
        export_lib.export(tiny_run, catalog_dir=tmp_path, base_dir=tmp_path / "both", products=products)
