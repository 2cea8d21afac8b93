"""Protocol evaluators and report tables, with fake systems whose scores are known by hand."""

import math

import numpy as np
import pytest

from tfmmsearch.evaluation.protocol import (
    BM25System,
    EvaluationRow,
    SearchSystem,
    evaluate_all,
    evaluate_attribute_task,
    evaluate_title_to_image,
    title_to_image_queries,
)
from tfmmsearch.evaluation.report import markdown_table, text_table

# Four products; p2 has no photo. The fake "image" system knows each photo's colour.
TITLES = ["red shirt", "blue shirt", "red shoes", "green hat"]
IMAGES = ["a.jpg", "b.jpg", None, "d.jpg"]
PHOTO_COLOUR = {"a.jpg": "red", "b.jpg": "blue", "d.jpg": "green"}
QUERIES = ["red", "blue", "purple"]
GRADES = np.array([[2, 1, 2, 0],    # red: p0, p2 fully relevant; p1 right type, wrong colour
                   [0, 2, 0, 0],    # blue: p1
                   [1, 0, 0, 0]],   # purple: nothing fully relevant -> dropped
                  dtype=np.int8)


class PhotoColourSystem:
    """Scores 1 when the photo's (hidden) colour is a query word; never reads titles."""

    def __init__(self, name="photo colour"):
        self.name = name
        self.calls = []

    def score(self, query_texts, titles, image_paths, item_mode):
        self.calls.append((list(query_texts), list(titles), list(image_paths), item_mode))
        return np.array([[1.0 if PHOTO_COLOUR.get(path) in query.split() else 0.0
                          for path in image_paths] for query in query_texts])


class TitleLookupSystem:
    """Title-to-image oracle: knows which photo belongs to which title (titles must be unique)."""

    name = "oracle"

    def __init__(self, photo_of_title):
        self.photo_of_title = photo_of_title
        self.calls = []

    def score(self, query_texts, titles, image_paths, item_mode):
        self.calls.append((list(query_texts), list(titles), item_mode))
        return np.array([[1.0 if path is not None and path == self.photo_of_title.get(query) else 0.0
                          for path in image_paths] for query in query_texts])


# The photo-colour system ranks, for "red": p0 (1.0), then the ties p1, p2, p3 in index order
# -> grades [2, 1, 2, 0]; ideal [2, 2, 1, 0]. For "blue": p1 first -> perfect.
RED_DCG_INDEX_ORDER = 3 / 1 + 1 / math.log2(3) + 3 / math.log2(4)
RED_IDEAL = 3 / 1 + 3 / math.log2(3) + 1 / math.log2(4)


def test_attribute_task_by_hand():
    system = PhotoColourSystem()
    metrics = evaluate_attribute_task(system, QUERIES, GRADES, TITLES, IMAGES, "full")
    assert metrics["ndcg@10"] == pytest.approx((RED_DCG_INDEX_ORDER / RED_IDEAL + 1.0) / 2)
    assert metrics["recall@100"] == pytest.approx(1.0)
    assert metrics["mrr"] == pytest.approx(1.0)
    assert metrics["num_queries"] == 2 and metrics["num_dropped"] == 1
    queries, titles, images, mode = system.calls[0]
    assert queries == ["red", "blue"]  # "purple" never reaches the system
    assert titles == TITLES and images == IMAGES and mode == "full"


def test_image_only_blanks_titles_but_keeps_photos():
    system = PhotoColourSystem()
    full = evaluate_attribute_task(system, QUERIES, GRADES, TITLES, IMAGES, "full")
    image_only = evaluate_attribute_task(system, QUERIES, GRADES, TITLES, IMAGES, "image_only")
    _, titles, images, mode = system.calls[1]
    assert titles == ["", "", "", ""] and images == IMAGES and mode == "image_only"
    assert image_only == full  # this system never used titles


def test_bm25_full_is_perfect_here_and_image_only_falls_to_catalog_order():
    bm25 = BM25System()
    full = evaluate_attribute_task(bm25, QUERIES, GRADES, TITLES, IMAGES, "full")
    # "red" matches p0 and p2 equally (same length), then the rest: grades [2, 2, 1, 0] = ideal.
    assert full["ndcg@10"] == pytest.approx(1.0) and full["mrr"] == pytest.approx(1.0)
    image_only = evaluate_attribute_task(bm25, QUERIES, GRADES, TITLES, IMAGES, "image_only")
    # Blank titles: every score 0, ranking is catalog order p0..p3.
    # "red": grades [2, 1, 2, 0]; "blue": [0, 2, 0, 0] -> DCG 3/log2(3), ideal 3, first hit rank 2.
    assert image_only["ndcg@10"] == pytest.approx((RED_DCG_INDEX_ORDER / RED_IDEAL + 1 / math.log2(3)) / 2)
    assert image_only["mrr"] == pytest.approx((1.0 + 0.5) / 2)


def test_grades_may_be_a_callable_and_are_checked():
    metrics = evaluate_attribute_task(PhotoColourSystem(), QUERIES, lambda: GRADES, TITLES, IMAGES)
    assert metrics["num_queries"] == 2
    with pytest.raises(ValueError, match=r"grades have shape \(3, 3\); expected \(3, 4\)"):
        evaluate_attribute_task(PhotoColourSystem(), QUERIES, GRADES[:, :3], TITLES, IMAGES)
    with pytest.raises(ValueError, match="item_mode"):
        evaluate_attribute_task(PhotoColourSystem(), QUERIES, GRADES, TITLES, IMAGES, "title_only")
    with pytest.raises(ValueError, match="same products"):
        evaluate_attribute_task(PhotoColourSystem(), QUERIES, GRADES, TITLES, IMAGES[:3])


def test_a_system_returning_the_wrong_shape_is_named():
    class Broken:
        name = "broken"

        def score(self, query_texts, titles, image_paths, item_mode):
            return np.zeros((len(query_texts), len(titles) - 1))

    with pytest.raises(ValueError, match=r"system 'broken' returned scores of shape \(2, 3\)"):
        evaluate_attribute_task(Broken(), QUERIES, GRADES, TITLES, IMAGES)


T2I_TITLES = ["red shirt", "", "blue shirt", "green hat", "red cap"]
T2I_IMAGES = ["a.jpg", "b.jpg", None, "d.jpg", "e.jpg"]


def test_title_to_image_with_a_perfect_system():
    oracle = TitleLookupSystem({"red shirt": "a.jpg", "green hat": "d.jpg", "red cap": "e.jpg"})
    metrics = evaluate_title_to_image(oracle, T2I_TITLES, T2I_IMAGES)
    assert metrics == {"recall@1": 1.0, "recall@10": 1.0, "mrr": 1.0, "num_queries": 3,
                       "skipped": 2}  # p1 has no title, p2 no photo
    queries, titles, mode = oracle.calls[0]
    assert queries == ["red shirt", "green hat", "red cap"]
    assert titles == [""] * 5 and mode == "image_only"


def test_title_to_image_by_hand_with_a_confused_system():
    # The oracle believes "red cap" is photo a.jpg: it ranks p0 first and p4 (the target)
    # among the zero-score ties p1, p2, p3, p4 -> rank 5.
    oracle = TitleLookupSystem({"red shirt": "a.jpg", "green hat": "d.jpg", "red cap": "a.jpg"})
    metrics = evaluate_title_to_image(oracle, T2I_TITLES, T2I_IMAGES)
    assert metrics["recall@1"] == pytest.approx(2 / 3)
    assert metrics["recall@10"] == pytest.approx(1.0)
    assert metrics["mrr"] == pytest.approx((1 + 1 + 1 / 5) / 3)


def test_title_to_image_text_only_system_is_at_catalog_order_chance():
    # BM25 sees only blank titles: all ties, so target p_i lands at rank i + 1.
    metrics = evaluate_title_to_image(BM25System(), ["a b", "c d", "e f"], ["1.jpg", "2.jpg", "3.jpg"])
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_title_to_image_sampling_is_seeded():
    titles = [f"title {i}" for i in range(20)]
    images = [f"{i}.jpg" if i % 4 else None for i in range(20)]  # 5 without a photo
    chosen, skipped = title_to_image_queries(titles, images, max_queries=6, seed=3)
    assert skipped == 5 and len(chosen) == 6 and len(set(chosen.tolist())) == 6
    assert all(i % 4 for i in chosen) and list(chosen) == sorted(chosen)
    np.testing.assert_array_equal(chosen, title_to_image_queries(titles, images, 6, seed=3)[0])
    others = [tuple(title_to_image_queries(titles, images, 6, seed=s)[0]) for s in range(4, 10)]
    assert any(other != tuple(chosen) for other in others)
    everything, _ = title_to_image_queries(titles, images, max_queries=100)
    assert len(everything) == 15


def test_evaluate_all_runs_every_task_for_every_system():
    calls = []

    def grades():
        calls.append(1)
        return GRADES

    systems = [PhotoColourSystem(), BM25System()]
    rows = evaluate_all(systems, QUERIES, grades, TITLES, IMAGES)
    assert len(calls) == 1  # the grade matrix is built once
    assert [row.system for row in rows] == ["photo colour", "BM25 over titles"]
    for row in rows:
        assert set(row.results) == {"full", "image_only", "title_to_image"}
    assert rows[1].results["full"]["ndcg@10"] == pytest.approx(1.0)
    assert rows[1]["title_to_image"]["skipped"] == 1  # p2 has no photo
    # Rows are plain dicts, ready for JSON and the tables.
    assert set(rows[0]) == {"system", "full", "image_only", "title_to_image"}
    assert rows[0]["system"] == "photo colour" and rows[0] == rows[0].to_dict()
    assert rows[0]["full"] == evaluate_attribute_task(PhotoColourSystem(), QUERIES, GRADES, TITLES,
                                                      IMAGES, "full")
    assert isinstance(systems[0], SearchSystem)
    only_full = evaluate_all(systems, QUERIES, GRADES, TITLES, IMAGES, tasks=["full"])
    assert set(only_full[0].results) == {"full"}
    with pytest.raises(ValueError, match="unknown tasks"):
        evaluate_all(systems, QUERIES, GRADES, TITLES, IMAGES, tasks=["speed"])
    with pytest.raises(TypeError, match="not a SearchSystem"):
        evaluate_all([object()], QUERIES, GRADES, TITLES, IMAGES)


def test_report_tables():
    rows = [EvaluationRow("bm25", {"full": {"ndcg@10": 0.5244, "recall@100": 0.6, "mrr": 0.58,
                                            "num_queries": 300, "num_dropped": 2},
                                   "title_to_image": {"recall@1": 0.1, "recall@10": 0.25, "mrr": 0.15,
                                                      "num_queries": 1000, "skipped": 12}}),
            {"system": "random", "full": {"ndcg@10": 0.022, "recall@100": 0.031, "mrr": float("nan")}}]
    markdown = markdown_table(rows).splitlines()
    assert markdown[0].startswith("| system | full NDCG@10 | full R@100 | full MRR | image_only NDCG@10")
    assert markdown[0].endswith("| t2i R@1 | t2i R@10 | t2i MRR |")
    assert markdown[1].count("---") == 10
    assert markdown[2] == "| bm25 | 0.524 | 0.600 | 0.580 | - | - | - | 0.100 | 0.250 | 0.150 |"
    assert markdown[3] == "| random | 0.022 | 0.031 | - | - | - | - | - | - | - |"

    text = text_table(rows, digits=2).splitlines()
    assert text[0].split()[:3] == ["system", "full", "NDCG@10"]
    assert text[2].split() == ["bm25", "0.52", "0.60", "0.58", "-", "-", "-", "0.10", "0.25", "0.15"]
    assert len({len(line) for line in text[:2]}) == 1  # header and rule line up
    assert "full: 300 queries (2 dropped: no grade-2 product)" in text
    assert "title_to_image: 1000 queries (12 products skipped: no title or no image)" in text
    assert EvaluationRow("x", {"full": {"mrr": 1.0}}).to_dict() == {"system": "x", "full": {"mrr": 1.0}}


def test_evaluate_all_caps_title_to_image_queries():
    titles = [f"title {i}" for i in range(12)]
    images = [f"{i}.jpg" for i in range(12)]
    oracle = TitleLookupSystem(dict(zip(titles, images)))
    grades = np.zeros((1, 12), dtype=np.int8)
    grades[0, 3] = 2
    rows = evaluate_all([oracle], ["anything"], grades, titles, images, 5)
    t2i = rows[0]["title_to_image"]
    assert t2i["num_queries"] == 5 and t2i["skipped"] == 0 and t2i["recall@1"] == 1.0
    assert len(oracle.calls[-1][0]) == 5  # only the sampled titles were scored
    same = evaluate_all([oracle], ["anything"], grades, titles, images, title_to_image_max_queries=5)
    assert same[0]["title_to_image"] == t2i
    with pytest.raises(ValueError, match="disagree"):
        evaluate_all([oracle], ["anything"], grades, titles, images, 5, title_to_image_max_queries=6)
