"""An export with `export.index.type: ivf`: its signatures against brute force over its own
index, nprobe per request, filters that never lose a match, core-op-only graph, and updates
that keep (or rebuild) the lists."""

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import make_untrained_run
from tests.exporting.conftest import SHOP_FILTERS
from tfmmsearch.exporting.index_rows import read_index

pytestmark = pytest.mark.heavy  # trains or exports in its fixtures: scheduled first

QUERIES = ["black caps", "red dress for women", "blue shoes", "white tshirt men"]
LISTS, NPROBE, TOP_K = 6, 2, 10


@pytest.fixture(scope="module")
def ivf_run(tmp_path_factory, tiny_hub_cache):
    return make_untrained_run(tmp_path_factory.mktemp("ivf"), tiny_hub_cache, [
        f"export.filters={SHOP_FILTERS}", "export.hybrid.fusion_type=dense",
        "export.hybrid.candidates=10", "export.index.type=ivf", f"export.index.lists={LISTS}",
        f"export.index.nprobe={NPROBE}"])


@pytest.fixture(scope="module")
def ivf_export(ivf_run, tmp_path_factory):
    from tfmmsearch.exporting.export import export

    return export(ivf_run, base_dir=tmp_path_factory.mktemp("ivf_export") / "ivf")


@pytest.fixture(scope="module")
def module(ivf_export):
    import tensorflow_text  # noqa: F401

    return tf.saved_model.load(str(ivf_export))


def _exact_top(module, embeddings, k=TOP_K):
    scores = embeddings @ module.index.embeddings.numpy().T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _ids(module, positions):
    ids = read_index(module).product_ids
    return [[ids[i] for i in row] for row in positions]


def _decoded(values):
    return [[v.decode() for v in row if v] for row in values.numpy()]


def test_the_export_holds_k_means_lists_over_its_catalog(module):
    drift = {name: value.numpy() for name, value in module.index.ivf.drift().items()}
    size = int(tf.shape(module.index.product_ids)[0])
    assert drift["lists"] == LISTS and drift["items"] == size == 60
    assert int(module.nprobe.numpy()) == NPROBE
    nearest = (module.index.embeddings.numpy() @ module.index.ivf.centroids.numpy().T).argmax(1)
    np.testing.assert_array_equal(module.index.ivf.lists.numpy(), nearest)


def test_probing_every_list_retrieves_what_brute_force_does(module):
    embeddings = module.embed_query(query=tf.constant(QUERIES))["embedding"].numpy()
    try:
        module.nprobe.assign(LISTS)
        found = _decoded(module.signatures["retrieve"](query=tf.constant(QUERIES))["product_ids"])
    finally:
        module.nprobe.assign(NPROBE)
    assert found == _ids(module, _exact_top(module, embeddings))


def test_nprobe_per_request_trades_recall_for_work(module):
    embeddings = module.embed_query(query=tf.constant(QUERIES))["embedding"]
    retrieve = module.signatures["retrieve_embedding"]
    rows = len(QUERIES)
    every = _decoded(retrieve(embedding=embeddings, nprobe=tf.fill([rows], LISTS))["product_ids"])
    assert every == _ids(module, _exact_top(module, embeddings.numpy()))
    # One list, a query at a time: only members of its nearest list come back, unless that
    # list holds over a quarter of the index (an untrained tower crowds some lists), which
    # IVFIndex.search scores exactly by design (both cases: tests/exporting/test_ivf_index.py).
    lists = module.index.ivf.lists.numpy()
    sizes = np.bincount(lists, minlength=LISTS)
    nearest = (embeddings.numpy() @ module.index.ivf.centroids.numpy().T).argmax(1)
    where = read_index(module).position_of()
    exact = _ids(module, _exact_top(module, embeddings.numpy()))
    for row in range(rows):
        [found] = _decoded(retrieve(embedding=embeddings[row:row + 1],
                                    nprobe=tf.ones([1], tf.int32))["product_ids"])
        if sizes[nearest[row]] > len(lists) // 4:
            assert found == exact[row]
        else:
            assert found and {lists[where[pid]] for pid in found} == {nearest[row]}
    # 0 = the export's nprobe: the same as `retrieve` of the same queries.
    default = _decoded(retrieve(embedding=embeddings, nprobe=tf.zeros([rows], tf.int32))["product_ids"])
    assert default == _decoded(module.signatures["retrieve"](query=tf.constant(QUERIES))["product_ids"])


def test_a_wrongly_shaped_embedding_is_refused_and_the_model_still_answers(module):
    retrieve = module.signatures["retrieve_embedding"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="retrieve_embedding"):
        retrieve(embedding=tf.ones([2, 3]), nprobe=tf.zeros([2], tf.int32))
    assert retrieve(embedding=tf.ones([1, 16]) / 4.0,
                    nprobe=tf.zeros([1], tf.int32))["product_ids"].shape == (1, TOP_K)


def test_a_selective_filter_loses_no_match_under_ivf(module):
    """The probed lists hold fewer matches than asked: the batch is scored exactly, so every
    matching product is returned, as with an exact index."""
    rows = read_index(module)
    columns = [c.decode() for c in module.filter_columns.numpy()]
    values = rows.fields["filter_values"]
    kind = values[0, columns.index("article_type")]
    gender = values[0, columns.index("gender")]
    matching = {rows.product_ids[i] for i in range(len(rows))
                if values[i, columns.index("article_type")] == kind
                and values[i, columns.index("gender")] == gender}
    assert 0 < len(matching) < TOP_K
    text = f'article_type:"{kind}" AND gender:"{gender}"'
    result = module.signatures["search_filtered"](query=tf.constant(QUERIES),
                                                  filter=tf.constant([text] * len(QUERIES)))
    assert result["num_results"].numpy().tolist() == [len(matching)] * len(QUERIES)
    for found in _decoded(result["product_ids"]):
        assert set(found) == matching
    # An unselective filter keeps the approximate path, and every result still matches.
    broad = module.signatures["search_filtered"](query=tf.constant(QUERIES),
                                                 filter=tf.constant([f'NOT gender:"{gender}"'] * 4))
    where = rows.position_of()
    for found in _decoded(broad["product_ids"]):
        assert found and all(values[where[p], columns.index("gender")] != gender for p in found)


def test_the_graph_uses_only_core_tf_and_tf_text_ops(ivf_export):
    """Every op of every function in saved_model.pb is registered by TensorFlow itself or by
    tensorflow_text (TF Serving builds bundle TF Text), so stock TF Serving loads the export."""
    script = textwrap.dedent(f"""
        import json, tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow.python.framework import op_def_registry
        model = saved_model_pb2.SavedModel()
        model.ParseFromString(open({str(ivf_export / 'saved_model.pb')!r}, "rb").read())
        graph = model.meta_graphs[0].graph_def
        used = {{node.op for node in graph.node}}
        for function in graph.library.function:
            used |= {{node.op for node in function.node_def}}
        used -= {{function.signature.name for function in graph.library.function}}
        core = {{op for op in used if op_def_registry.get(op) is not None}}
        import tensorflow_text  # registers its ops
        text = {{op for op in used - core if op_def_registry.get(op) is not None}}
        print(json.dumps({{"used": sorted(used), "core": sorted(core), "text": sorted(text)}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=True)
    ops = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(ops["used"]) == set(ops["core"]) | set(ops["text"]), \
        sorted(set(ops["used"]) - set(ops["core"]) - set(ops["text"]))
    assert {"TopKV2", "RaggedRange", "BatchMatMulV3"} & set(ops["core"])  # the IVF scan is in it
    assert set(ops["text"]) <= {"CaseFoldUTF8", "NormalizeUTF8", "RegexSplitWithOffsets",
                                "WordpieceTokenizeWithOffsets"}


def _saved(version, path):
    """A variable of a written export version, read from its checkpoint (no SavedModel load)."""
    return tf.train.load_checkpoint(str(version / "variables" / "variables")).get_tensor(
        f"{path}/.ATTRIBUTES/VARIABLE_VALUE")


def test_updates_keep_the_centroids_and_rebuild_them_when_asked(ivf_export, ivf_run, tmp_path):
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.prepare import resolve_catalog_dir
    from tfmmsearch.exporting.export import update_index
    from tfmmsearch.exporting.updates import IndexUpdate
    from tfmmsearch.model.build import load_run_config

    import tensorflow_text  # noqa: F401

    base = tmp_path / "ivf"
    shutil.copytree(ivf_export, base / "1")
    products = read_catalog(resolve_catalog_dir(load_run_config(ivf_run))).products
    renamed = [dataclasses.replace(products[0], title=products[0].title + " limited edition")]
    version, report = update_index(base, lambda filters: IndexUpdate(
        upsert=renamed, delete=[products[1].product_id]))
    built = _saved(base / "1", "index/ivf/centroids")
    np.testing.assert_array_equal(_saved(version, "index/ivf/centroids"), built)
    nearest = (_saved(version, "index/embeddings") @ built.T).argmax(1)
    np.testing.assert_array_equal(_saved(version, "index/ivf/lists"), nearest)
    assert report.list_drift["items"] == 59 and not report.lists_rebuilt
    assert "IVF: 6 lists kept" in report.summary()

    version, report = update_index(base, lambda filters: IndexUpdate(delete=[products[2].product_id]),
                                   rebuild_lists=True)
    assert report.lists_rebuilt and "rebuilt by k-means" in report.summary()
    assert not np.array_equal(_saved(version, "index/ivf/centroids"), built)
    assert len(_saved(version, "index/ivf/members")) == 58
