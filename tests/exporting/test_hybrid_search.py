"""`search` and `search_filtered` on a shop-like export: which candidates the configured fusion
hands the ranking head, exact pre-filtering, padding, and errors that leave the model serving."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.contract import FILTER_VALUES_FIELD, parse_number
from tfmmsearch.data.bm25 import BM25Index
from tfmmsearch.exporting.index_rows import read_index
from tfmmsearch.model.lexical import MAX_QUERY_WORDS, word_ids

pytestmark = pytest.mark.heavy  # trains or exports in its fixtures: scheduled first

QUERIES = ["black caps", "red dress for women", "blue shoes", "white tshirt men"]
CANDIDATES = 10  # export.hybrid.candidates of the shop export (tests/exporting/conftest.py)


@pytest.fixture(scope="module")
def module(shop_export):
    import tensorflow_text  # noqa: F401

    return tf.saved_model.load(str(shop_export))


def _sets(product_ids) -> list[set]:
    return [set(row) - {b""} for row in product_ids.numpy()]


def test_the_lexical_index_is_bm25_over_the_indexed_titles(module, shop_catalog):
    # The in-graph postings score what BM25 over the same hashed words scores.
    rows = read_index(module)
    documents = [" ".join(str(w) for w in words if w) for words in rows.fields["title_words"]]
    queries = [" ".join(str(w) for w in words if w)
               for words in word_ids(QUERIES, MAX_QUERY_WORDS).numpy()]
    expected = BM25Index(documents).score(queries)
    served = module.index.lexical.scores(word_ids(QUERIES, MAX_QUERY_WORDS)).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)


def test_each_fusion_hands_the_head_its_own_candidates(module):
    queries = tf.constant(QUERIES)
    dense = module.embed_query(query=queries)["embedding"].numpy() @ \
        module.index.embeddings.numpy().T
    lexical = module.index.lexical.scores(word_ids(QUERIES, MAX_QUERY_WORDS)).numpy()
    ids = read_index(module).product_ids
    try:
        module.fusion_type.assign("dense")
        found = _sets(module.signatures["serving_default"](query=queries)["product_ids"])
        for row, scores in enumerate(dense):
            assert found[row] == {ids[i].encode() for i in np.argsort(-scores)[:CANDIDATES]}
        module.fusion_type.assign("rrf")
        found = _sets(module.signatures["serving_default"](query=queries)["product_ids"])
        for row in range(len(QUERIES)):
            fused = np.zeros(len(ids))
            for scores, listed in ((dense[row], np.ones(len(ids), bool)),
                                   (lexical[row], lexical[row] > 0)):
                order = [i for i in np.argsort(-scores, kind="stable") if listed[i]][:CANDIDATES]
                fused[order] += 1.0 / (60.0 + np.arange(1, len(order) + 1))
            best = np.lexsort((-dense[row], -fused))[:CANDIDATES]
            assert found[row] == {ids[i].encode() for i in best}
            if lexical[row].max() > 0:  # the best exact-word match is always a candidate
                assert ids[int(np.argmax(lexical[row]))].encode() in found[row]
        module.fusion_type.assign("convex")
        module.convex_weight.assign(0.0)  # all lexical: the BM25 top items
        found = _sets(module.signatures["serving_default"](query=queries)["product_ids"])
        for row in range(len(QUERIES)):
            matched = np.flatnonzero(lexical[row] > 0)
            top = matched[np.argsort(-lexical[row][matched], kind="stable")][:CANDIDATES]
            assert {ids[i].encode() for i in top} <= found[row]
    finally:
        module.fusion_type.assign("rrf")
        module.convex_weight.assign(0.5)


def test_the_short_list_length_is_a_variable_of_the_export(module):
    """A loaded export re-scores the dense top `rerank_candidates` items (never fewer than
    top_k) with the head: all of them gives the head's own top K over the whole index."""
    queries = tf.constant(QUERIES)
    ids = read_index(module).product_ids
    head = module.signatures["rank"](query=queries, product_ids=tf.constant(
        [list(ids)] * len(QUERIES)))["scores"].numpy()
    dense = module.embed_query(query=queries)["embedding"].numpy() @ \
        module.index.embeddings.numpy().T
    search = module.signatures["serving_default"]

    def expected(short_list: int) -> list[set]:
        """The head's top K among the dense top `short_list` (at least K) items, per query."""
        found = []
        for row in range(len(QUERIES)):
            listed = np.argsort(-dense[row])[:max(short_list, CANDIDATES)]
            best = listed[np.argsort(-head[row][listed])][:CANDIDATES]
            found.append({ids[i].encode() for i in best})
        return found

    try:
        module.fusion_type.assign("dense")
        for short_list in (3, CANDIDATES, 2 * CANDIDATES + 5, len(ids)):
            module.rerank_candidates.assign(short_list)
            assert _sets(search(query=queries)["product_ids"]) == expected(short_list), short_list
        assert expected(len(ids)) == [set(ids[i].encode() for i in np.argsort(-row)[:CANDIDATES])
                                      for row in head]
    finally:
        module.fusion_type.assign("rrf")
        module.rerank_candidates.assign(CANDIDATES)


def _matches(values: np.ndarray, columns: list[str]):
    """Python predicates for the filters below, over the index's stored filter values."""
    column = {name: i for i, name in enumerate(columns)}

    def value(row, name):
        return str(values[row, column[name]]).strip().lower()

    def price(row):
        return parse_number(str(values[row, column["price"]]))

    return {
        "gender:men": lambda r: value(r, "gender") == "men",
        'gender:(Women OR "Men") AND NOT article_type:Caps':
            lambda r: value(r, "gender") in ("women", "men") and value(r, "article_type") != "caps",
        "price:[* TO 900]": lambda r: price(r) is not None and price(r) <= 900,
        "price:[100000 TO *]": lambda r: False,
        "base_colour:Black price:[500 TO 3000]":
            lambda r: value(r, "base_colour") == "black" and price(r) is not None
            and 500 <= price(r) <= 3000,
    }


def test_filtered_search_returns_exactly_the_matching_products(module):
    rows = read_index(module)
    columns = [c.decode() for c in module.filter_columns.numpy()]
    predicates = _matches(rows.fields[FILTER_VALUES_FIELD], columns)
    query = "blue shirt"
    for text, keep in predicates.items():
        matching = {rows.product_ids[r] for r in range(len(rows)) if keep(r)}
        out = module.signatures["search_filtered"](query=tf.constant([query]),
                                                   filter=tf.constant([text]))
        count = int(out["num_results"].numpy()[0])
        ids = [i.decode() for i in out["product_ids"].numpy()[0]]
        scores = out["scores"].numpy()[0]
        assert count == min(len(matching), 10), text
        assert set(ids[:count]) <= matching and len(set(ids[:count])) == count, text
        assert ids[count:] == [""] * (10 - count) and np.all(scores[count:] == -np.inf), text
        assert np.all(np.isfinite(scores[:count])), text
        if len(matching) <= CANDIDATES:  # fewer matches than K: none is lost
            assert set(ids[:count]) == matching, text
    # An empty filter is the unfiltered search.
    plain = module.signatures["serving_default"](query=tf.constant(QUERIES))
    empty = module.signatures["search_filtered"](query=tf.constant(QUERIES),
                                                 filter=tf.constant([""] * len(QUERIES)))
    np.testing.assert_array_equal(empty["product_ids"].numpy(), plain["product_ids"].numpy())
    np.testing.assert_allclose(empty["scores"].numpy(), plain["scores"].numpy(), rtol=1e-6)
    assert empty["num_results"].numpy().tolist() == [10] * len(QUERIES)


@pytest.mark.parametrize("text, words", [
    # (TensorFlow's Assert kernel escapes the quotes of its message: \'colour\'.)
    ("colour:red", r"unknown filter field .{1,2}colour.{1,2}; filterable fields: gender, "
                   "article_type, base_colour, price"),
    ("brand:(nike", "malformed at position 11"),
    ("gender:[a TO b]", r"field .{1,2}gender.{1,2} is categorical"),
    ("price:cheap", r"field .{1,2}price.{1,2} is numeric"),
])
def test_bad_filters_are_invalid_argument_and_the_model_keeps_serving(module, text, words):
    with pytest.raises(tf.errors.InvalidArgumentError, match=words):
        module.signatures["search_filtered"](query=tf.constant(["shirt", "caps"]),
                                             filter=tf.constant(["", text]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        module.signatures["search_filtered"](query=tf.constant(["shirt", "caps"]),
                                             filter=tf.constant([""]))
    out = module.signatures["search_filtered"](query=tf.constant(["shirt"]),
                                               filter=tf.constant(["gender:Men"]))
    assert int(out["num_results"].numpy()[0]) > 0


FRESH_PROCESS = textwrap.dedent("""
    import sys, json
    import numpy as np, tensorflow as tf, tensorflow_text  # nothing from tfmmsearch
    model = tf.saved_model.load(sys.argv[1])
    queries, filters = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    out = model.signatures["search_filtered"](query=tf.constant(queries), filter=tf.constant(filters))
    plain = model.signatures["serving_default"](query=tf.constant(queries))
    np.savez(sys.argv[4], ids=out["product_ids"].numpy().astype(str), scores=out["scores"].numpy(),
             count=out["num_results"].numpy(), plain=plain["product_ids"].numpy().astype(str))
""")
FILTERS = ["gender:Men", 'article_type:(Tshirts OR "Casual Shoes") NOT base_colour:Black',
           "price:[* TO 1500]", ""]


def test_a_fresh_tensorflow_process_serves_hybrid_and_filtered_search(module, shop_export,
                                                                      tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run([sys.executable, str(script), str(shop_export), json.dumps(QUERIES),
                             json.dumps(FILTERS), str(tmp_path / "out.npz")],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    served = dict(np.load(tmp_path / "out.npz"))
    here = module.signatures["search_filtered"](query=tf.constant(QUERIES),
                                                filter=tf.constant(FILTERS))
    np.testing.assert_array_equal(served["ids"], here["product_ids"].numpy().astype(str))
    np.testing.assert_allclose(served["scores"], here["scores"].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(served["count"], here["num_results"].numpy())
    np.testing.assert_array_equal(served["plain"][3], served["ids"][3])  # "" filters nothing


def test_clients_over_the_test_server_search_with_filters(shop_export, capsys):
    """REST (row + columnar) and gRPC through the PredictionService TEST DOUBLE."""
    from tests.serving.tf_serving_double import InProcessModelServer
    from tfmmsearch.serving.client import ServingError
    from tfmmsearch.serving.connect import connect
    from tfmmsearch.serving.local import LocalSavedModelClient
    from tfmmsearch.serving.query import run_query

    expected = LocalSavedModelClient(shop_export).search_filtered(QUERIES, FILTERS)
    with InProcessModelServer(shop_export.parent, "shop") as server:
        clients = [connect(server.rest_url, "shop", request_format="row"),
                   connect(server.rest_url, "shop", request_format="columnar"),
                   connect(server.grpc_target, "shop")]
        for client in clients:
            got = client.search_filtered(QUERIES, FILTERS)
            np.testing.assert_array_equal(got["product_ids"], expected["product_ids"])
            np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-5)
            np.testing.assert_array_equal(got["num_results"], expected["num_results"])
            assert got["num_results"].dtype == np.int32
            with pytest.raises(ServingError, match="unknown filter field"):
                client.search_filtered(["shirt"], "colour:red")
        run_query(server.rest_url, ["shirt"], model_name="shop", k=3,
                  filter_text="price:[100000 TO *]")
    assert "(no product matches the filter)" in capsys.readouterr().out
