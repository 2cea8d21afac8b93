"""Live index updates: upserts, deletes and patches give the index a build from scratch on the
same final catalog would, embedding only what changed."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.contract import CONTENT_HASH_FIELD, FILTER_VALUES_FIELD, LEXICAL_FIELD
from tfmmsearch.exporting.errors import UpdateError
from tfmmsearch.exporting.export import catalog_embedder, search_module, update_index
from tfmmsearch.model.build import load_trained_model
from tfmmsearch.exporting.index_rows import content_hash, read_index, write_index
from tfmmsearch.exporting.updates import IndexUpdate, plan_update, read_ids_file, read_patch_file
from tfmmsearch.model.lexical import MAX_QUERY_WORDS, word_ids

pytestmark = pytest.mark.heavy  # trains or exports in its fixtures: scheduled first

QUERIES = ["black caps", "red dress for women", "blue shoes", "white tshirt"]


def _by_id(rows):
    order = np.argsort(rows.product_ids.astype(str))
    return rows.take(order)


def _loaded(version):
    import tensorflow_text  # noqa: F401

    return tf.saved_model.load(str(version))


def test_updates_end_where_a_fresh_build_of_the_final_catalog_starts(shop_run, shop_catalog,
                                                                    shop_export):
    first, later = shop_catalog[:20], shop_catalog[20:30]  # shop_export indexes `first`
    retitled = [dataclasses.replace(p, title=p.title + " extra soft") for p in first[:3]]
    rebranded = dataclasses.replace(first[3], attributes={**first[3].attributes, "brand": "Zed"})
    upsert = retitled + [rebranded] + later[:6]
    deleted = [p.product_id for p in first[12:16]]
    patch = {first[5].product_id: {"price": "1234.5"}, first[6].product_id: {"gender": "Girls"}}
    # From version 1 itself (other tests write versions beside it).
    version, report = update_index(shop_export, lambda filters: IndexUpdate(
        upsert=upsert, delete=deleted + ["no-such-id"], patch=patch))
    assert report.embedded == 4 + 6  # three retitled, one rebranded, six new; nothing else
    assert (report.added, report.replaced, report.deleted, report.patched) == (6, 4, 4, 2)
    assert report.unknown_deletes == ["no-such-id"]

    # The final catalog, built from scratch.
    final_by_id = {p.product_id: p for p in first if p.product_id not in deleted}
    final_by_id.update({p.product_id: p for p in upsert})
    final_by_id[first[5].product_id] = dataclasses.replace(
        final_by_id[first[5].product_id],
        attributes={**final_by_id[first[5].product_id].attributes, "price": "1234.5"})
    final_by_id[first[6].product_id] = dataclasses.replace(
        final_by_id[first[6].product_id],
        attributes={**final_by_id[first[6].product_id].attributes, "gender": "Girls"})
    config, model = load_trained_model(shop_run)
    final = list(final_by_id.values())
    columns = sorted({column for p in final for column in p.attributes})
    fresh = search_module(config, model, final, columns, "the final catalog")  # not saved
    updated = _loaded(version)
    a, b = _by_id(read_index(updated)), _by_id(read_index(fresh))
    np.testing.assert_array_equal(a.product_ids, b.product_ids)
    for name in b.fields:
        if b.fields[name].dtype == object:
            np.testing.assert_array_equal(a.fields[name], b.fields[name], err_msg=name)
        else:
            np.testing.assert_allclose(a.fields[name], b.fields[name], atol=1e-5, err_msg=name)
    # Derived state (filter keys, BM25 postings, the id lookup) agrees too, so every signature
    # answers alike.
    words = word_ids(QUERIES, MAX_QUERY_WORDS)  # (a fresh module's lexical index, in process)
    scores_a = updated.index.lexical.scores(words).numpy()
    scores_b = fresh.index.lexical.scores(words).numpy()
    order_a = np.argsort(read_index(updated).product_ids.astype(str))
    order_b = np.argsort(read_index(fresh).product_ids.astype(str))
    np.testing.assert_allclose(scores_a[:, order_a], scores_b[:, order_b], rtol=1e-5, atol=1e-6)
    for name in ("filter_keys", "filter_numbers"):
        np.testing.assert_array_equal(getattr(updated.index, name).numpy()[order_a],
                                      getattr(fresh.index, name).numpy()[order_b])
    for filter_text in ("", "gender:Girls", "price:[1000 TO *] AND NOT base_colour:Black"):
        inputs = {"query": tf.constant(QUERIES), "filter": tf.constant([filter_text] * 4)}
        got = updated.signatures["search_filtered"](**inputs)
        want = fresh.search_filtered(**inputs)
        np.testing.assert_array_equal(got["num_results"].numpy(), want["num_results"].numpy())
        np.testing.assert_allclose(np.sort(got["scores"].numpy(), axis=1),
                                   np.sort(want["scores"].numpy(), axis=1), rtol=1e-4, atol=1e-5)
    ids = [[first[6].product_id, "no-such-id"]]
    ranked = updated.signatures["rank"](query=tf.constant(QUERIES[:1]), product_ids=tf.constant(ids))
    assert ranked["known"].numpy().tolist() == [[True, False]]


def _plan(module, update):
    return plan_update(module, read_index(module), update, catalog_embedder(module))


def test_an_unchanged_catalog_is_indexed_again_without_embedding(shop_catalog, shop_export):
    module = _loaded(shop_export)
    rows, report = _plan(module, IndexUpdate(catalog=shop_catalog[:20]))
    assert (report.embedded, report.reused, report.size) == (0, 20, 20)
    changed = [dataclasses.replace(shop_catalog[0], title="a brand new title")] + shop_catalog[1:20]
    rows, report = _plan(module, IndexUpdate(catalog=changed[:15]))
    assert (report.embedded, report.reused, report.removed_by_replace) == (1, 14, 5)
    assert rows.product_ids.tolist() == [p.product_id for p in changed[:15]]
    stored = dict(zip(rows.product_ids, rows.fields[CONTENT_HASH_FIELD]))
    assert stored[shop_catalog[0].product_id] == content_hash(
        "a brand new title", shop_catalog[0].image_bytes(),
        [shop_catalog[0].attributes.get("brand", "")])
    # Only the changed product's vectors differ from the stored ones.
    before = read_index(module)
    moved = rows.fields["embedding"] - before.take(np.arange(15)).fields["embedding"]
    assert np.abs(moved[0]).max() > 1e-6 and np.abs(moved[1:]).max() == 0


def test_bad_updates_are_refused_before_anything_is_written(shop_catalog, shop_export):
    module = _loaded(shop_export)
    some = shop_catalog[0].product_id
    for update, words in [
        (IndexUpdate(patch={some: {"brand": "Zed"}}), "'brand' is an item feature"),
        (IndexUpdate(patch={some: {"colour": "Red"}}), "'colour' is not a filterable column"),
        (IndexUpdate(upsert=[shop_catalog[0]], delete=[some]), "both upserted and deleted"),
        (IndexUpdate(upsert=[shop_catalog[0], shop_catalog[0]]), "more than once"),
        (IndexUpdate(catalog=shop_catalog[:3], delete=[some]), "give it alone"),
    ]:
        with pytest.raises(UpdateError, match=words):
            _plan(module, update)
    base = shop_export.parent
    versions = sorted(p.name for p in base.iterdir())
    with pytest.raises(UpdateError, match="both upserted and deleted"):
        update_index(base, lambda filters: IndexUpdate(upsert=[shop_catalog[0]], delete=[some]))
    assert sorted(p.name for p in base.iterdir()) == versions


def test_a_patch_changes_filters_only_and_counts_unknown_ids(shop_catalog, shop_export):
    module = _loaded(shop_export)
    before = read_index(module)
    target = shop_catalog[2].product_id
    rows, report = _plan(module, IndexUpdate(
        patch={target: {"price": "5", "gender": "Unisex"}, "ghost": {"price": "1"}}))
    assert report.embedded == 0 and report.patched == 1 and report.unknown_patches == ["ghost"]
    write_index(module, rows)
    after = read_index(module)
    row = after.position_of()[target]
    assert after.fields[FILTER_VALUES_FIELD][row].tolist()[0] == "Unisex"
    np.testing.assert_array_equal(after.fields["embedding"], before.fields["embedding"])
    np.testing.assert_array_equal(after.fields[LEXICAL_FIELD], before.fields[LEXICAL_FIELD])
    found = module.signatures["search_filtered"](query=tf.constant(["shirt"]),
                                                  filter=tf.constant(["price:[* TO 10]"]))
    ids = found["product_ids"].numpy()[0][:int(found["num_results"].numpy()[0])]
    assert [i.decode() for i in ids] == [target]


def test_update_files_are_read_with_errors_naming_the_line(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# gone today\n12\n\n 13 \n", encoding="utf-8")
    assert read_ids_file(ids) == ["12", "13"]
    patch = tmp_path / "patch.jsonl"
    patch.write_text('{"product_id": 12, "price": 999}\n\n{"product_id": "13", "stock": "0"}\n',
                     encoding="utf-8")
    assert read_patch_file(patch) == {"12": {"price": "999"}, "13": {"stock": "0"}}
    csv_patch = tmp_path / "patch.csv"
    csv_patch.write_text("product_id,price\n12,999\n,5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"patch\.csv, row 3, field .product_id.: required"):
        read_patch_file(csv_patch)
    patch.write_text('{"product_id": "1", "price": 5}\n{"product_id": "2", "price"\n',
                     encoding="utf-8")
    with pytest.raises(ValueError, match=r"patch\.jsonl, line 2: not JSON"):
        read_patch_file(patch)
    patch.write_text('{"product_id": "1"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: names no column"):
        read_patch_file(patch)


def test_the_index_command_deletes_and_patches_then_query_filters(
        shop_export, shop_catalog, tmp_path, capsys):
    from tfmmsearch.cli import main
    from tfmmsearch.serving.warmup import warmup_path

    base = shop_export.parent  # a new version beside version 1, from version 1
    ids = tmp_path / "gone.txt"
    ids.write_text(f"{shop_catalog[0].product_id}\nnot-indexed\n", encoding="utf-8")
    patch = tmp_path / "patch.jsonl"
    patch.write_text(f'{{"product_id": "{shop_catalog[1].product_id}", "price": "8"}}\n',
                     encoding="utf-8")
    # Deletes and a patch only: nothing to embed, and no new product to warm up with.
    assert main(["index", "--model", str(shop_export), "--delete", str(ids), "--patch",
                 str(patch)]) == 0
    printed = capsys.readouterr().out
    version = printed.split("indexed into ", 1)[1].split(":", 1)[0]
    assert "indexed into" in printed and "0 embedded" in printed
    assert "1 deleted" in printed and "1 patched" in printed
    assert "1 ids to delete not in the index, skipped (not-indexed)" in printed
    assert warmup_path(version).read_bytes() == warmup_path(shop_export).read_bytes()  # kept
    assert main(["query", version, "dress", "--filter", "price:[* TO 10]", "-k", "5",
                 "--timeout", "300"]) == 0  # a first call on a busy machine
    shown = capsys.readouterr().out
    assert shop_catalog[1].product_id in shown
    assert shop_catalog[0].product_id not in shown.split("query:", 1)[1]
    # User mistakes: one line, exit 1, no traceback, nothing written.
    versions = sorted(p.name for p in base.iterdir())
    patch.write_text('{"product_id": "1", "price": 5}\n{"price": 6}\n', encoding="utf-8")
    for argv, words in [
        (["index", "--model", str(base)], "give --catalog"),
        (["index", "--model", str(base), "--patch", str(patch)], "line 2, field 'product_id'"),
        (["query", version, "dress", "--filter", "colour:red", "--timeout", "300"],
         "unknown filter field"),
    ]:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    assert sorted(p.name for p in base.iterdir()) == versions


def _served_known(version, product_ids):
    """Which ids `rank` knows, through the TF1 SavedModel loader: it restores variables with the
    graph's own saver ops, as TF Serving's C++ loader does (tf.saved_model.load restores through
    the object graph instead)."""
    import tensorflow_text  # noqa: F401

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version))
        signature = meta.signature_def["rank"]
        known = session.run(signature.outputs["known"].name,
                            {signature.inputs["query"].name: ["shirt"],
                             signature.inputs["product_ids"].name: [product_ids]})
    return known[0].tolist()


def test_an_update_keeps_the_graph_and_writes_new_variables(shop_catalog, shop_export,
                                                            monkeypatch, caplog):
    from tfmmsearch.exporting import export as export_module

    new = dataclasses.replace(shop_catalog[40], product_id="fresh-1")
    version, report = update_index(shop_export, lambda filters: IndexUpdate(upsert=[new]))
    assert report.size == 21
    # The graph and signatures are version 1's, byte for byte; the variables are new.
    assert (version / "saved_model.pb").read_bytes() == (shop_export / "saved_model.pb").read_bytes()
    before = tf.saved_model.experimental.read_fingerprint(str(shop_export))
    after = tf.saved_model.experimental.read_fingerprint(str(version))
    assert after.saved_model_checksum == before.saved_model_checksum
    assert after.checkpoint_hash != before.checkpoint_hash
    kept = shop_catalog[0].product_id
    assert _served_known(version, ["fresh-1", kept]) == [True, True]
    assert _served_known(shop_export, ["fresh-1", kept]) == [False, True]

    # Should the loaded object graph ever not match the previous version's checkpoint, the
    # version is saved in full instead (and says so).
    keys = export_module._checkpoint_keys
    monkeypatch.setattr(export_module, "_checkpoint_keys",
                        lambda path: {**keys(path), f"changed-{path.name}": tf.float32})
    again = dataclasses.replace(shop_catalog[41], product_id="fresh-2")
    with caplog.at_level("WARNING"):
        version, _ = update_index(shop_export, lambda filters: IndexUpdate(upsert=[again]))
    assert "saving it in full" in caplog.text
    assert _served_known(version, ["fresh-2", "fresh-1"]) == [True, False]
