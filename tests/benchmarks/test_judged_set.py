"""benchmarks/judged_set.py: the rater's rule (reading queries, brands from titles, grades) and
the judged set it builds from a log's test days, on a hand-made catalog and log."""

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from tests.benchmarks.scripts import load_benchmark
from tfmmsearch.data.catalog import write_catalog
from tfmmsearch.data.judgments import read_judgments
from tfmmsearch.data.schema import Product
from tfmmsearch.data.search_log import read_search_log, split_by_time
from tfmmsearch.evaluation.judged import evaluate_judged


js = load_benchmark("judged_set")

# product id, title, article type, gender, colour, usage
ROWS = [
    ("p1", "Turtle Check Men Navy Blue Shirt", "Shirts", "Men", "Navy Blue", "Casual"),
    ("p2", "Puma Men Black Running Shoes", "Sports Shoes", "Men", "Black", "Sports"),
    ("p3", "Red Tape Men Brown Formal Shoes", "Formal Shoes", "Men", "Brown", "Formal"),
    ("p4", "Red Tape Brown Casual Men's Shoe", "Casual Shoes", "Men", "Brown", "Casual"),
    ("p5", "Puma Deck Navy Blue Backpack", "Backpacks", "Unisex", "Navy Blue", "Casual"),
    ("p6", "Nike Women Red Tshirt", "Tshirts", "Women", "Red", "Sports"),
    ("p7", "Nike Men Navy Blue Tshirt", "Tshirts", "Men", "Navy Blue", "Sports"),
    ("p8", "ADIDAS Originals Men White Tshirt", "Tshirts", "Men", "White", "Casual"),
    ("p9", "ADIDAS Navy Blue Men Tshirt", "Tshirts", "Men", "Navy Blue", "Sports"),
    ("p10", "Fastrack Unisex Black Watch", "Watches", "Unisex", "Black", "Casual"),
    ("p11", "Fastrack Boys Black Watch", "Watches", "Boys", "Black", "Casual"),
    ("p12", "Colorbar Velvet Matte Lipstick", "Lipstick", "Women", "Red", "Casual"),
    ("p13", "Jealous 21 Women Green Top", "Tops", "Women", "Green", "Casual"),
    ("p14", "Jealous 21 Green Bee Mine T-shirt", "Tshirts", "Women", "Green", "Casual"),
    ("p15", "Red Rose Women Peach Nightdress", "Nightdress", "Women", "Peach", "Casual"),
    ("p16", "Men Black Leather Belt", "Belts", "Men", "Black", "Casual"),
    ("p17", "Lee Men Blue Jeans", "Jeans", "Men", "Blue", "Casual"),
    ("p18", "Lee Cooper Men Blue Jeans", "Jeans", "Men", "Blue", "Casual"),
    ("p19", "Roadster Men Red Tshirt", "Tshirts", "Men", "Red", "Casual"),
    ("p20", "Tantra Kid's Gizmo Orange Kidswear", "Tshirts", "Boys", "Orange", "Casual"),
    ("p21", "Nike Men Black Shorts", "Shorts", "Men", "Black", "Sports"),
    ("p22", "ADIDAS Men Black Socks", "Socks", "Men", "Black", "Sports"),
    ("p23", "Navy Men White Shirt", "Shirts", "Men", "White", "Casual"),  # a brand "Navy"
]


def _products():
    return [Product(pid, title, None, {"gender": gender, "article_type": article_type,
                                       "base_colour": colour, "usage": usage, "season": "NA"})
            for pid, title, article_type, gender, colour, usage in ROWS]


@pytest.fixture(scope="module")
def rater():
    return js.Rater(_products())


# --------------------------------------------------------------------------- brands from titles


@pytest.mark.parametrize("product_id, brand", [
    ("p1", "Turtle Check"), ("p2", "Puma"), ("p3", "Red Tape"),
    ("p4", "Red Tape"),            # "Brown Casual" is a description after the known Red Tape
    ("p9", "ADIDAS"),              # "Navy Blue" likewise, after ADIDAS
    ("p8", "ADIDAS Originals"),    # no colour word follows ADIDAS: a sub-line, kept whole
    ("p15", "Red Rose"),           # a colour word, but no title reads "Red" alone
    ("p20", "Tantra"),             # "Kid's" is a gender word
    ("p5", "Puma"), ("p12", "Colorbar"),   # no gender word: a known brand, else the first word
    ("p14", "Jealous 21"),         # the longest known brand it starts with, not "Jealous"
    ("p16", None),                 # starts with its gender word
])
def test_brand_is_read_from_the_title(rater, product_id, brand):
    assert rater.brand_of(product_id) == brand


def test_a_title_without_a_gender_word_takes_the_longest_known_brand():
    title = "Jealous 21 Green Bee Mine T-shirt"
    assert js.title_brand_words(title) == ("jealous",)
    assert js.title_brand_words(title, [("jealous",), ("jealous", "21")]) == ("jealous", "21")


# --------------------------------------------------------------------------- reading queries


@pytest.mark.parametrize("query", ["tees", "tshirt", "t-shirts", "T Shirt", "TSHIRTS", "tee"])
def test_type_synonyms_and_spellings_read_as_the_catalog_type(rater, query):
    parse = rater.parse(query)
    assert parse.article_types == {"tshirts"} and not parse.named and not parse.ignored


@pytest.mark.parametrize("query, role, value", [
    ("navy tees", "base_colour", "navyblue"), ("navy blue tees", "base_colour", "navyblue"),
    ("mens tees", "gender", "men"), ("men's tees", "gender", "men"),
    ("male tees", "gender", "men"), ("female tees", "gender", "women"),
    ("sporty tees", "usage", "sports"),
])
def test_attribute_synonyms_read_as_catalog_values(rater, query, role, value):
    assert rater.parse(query).named == {role: {value}}


def test_noise_and_unknown_words_are_ignored(rater):
    parse = rater.parse("buy new best offer slim tshirts online")
    assert parse.article_types == {"tshirts"}
    assert not parse.named
    assert parse.ignored == ("slim",)  # noise words are not even reported


def test_a_type_phrase_is_read_before_a_usage_word(rater):
    assert rater.parse("casual shoes").article_types == {"casualshoes"}
    assert not rater.parse("casual shoes").named
    assert rater.parse("casual navy shirts").named == {"usage": {"casual"},
                                                       "base_colour": {"navyblue"}}


def test_the_last_of_two_types_is_the_one_asked_for(rater):
    assert rater.parse("denim shorts").article_types == {"shorts"}
    assert rater.parse("shorts denim").article_types == {"jeans"}


def test_a_generic_word_accepts_each_type_it_covers(rater):
    assert rater.parse("puma shoes").article_types == {"casualshoes", "sportsshoes",
                                                       "formalshoes"}


def test_typos_one_edit_from_a_long_enough_word_are_read(rater):
    parse = rater.parse("navy shrit")
    assert parse.article_types == {"shirts"} and parse.corrected == (("shrit", "shirt"),)
    assert rater.parse("whiet tees").named == {"base_colour": {"white"}}


def test_typos_that_are_ambiguous_or_short_are_not_read(rater):
    # "shrt" is one edit from both shirt and short: which one the shopper meant is a guess.
    parse = rater.parse("shrt")
    assert not parse.article_types and parse.ignored == ("shrt",)
    # "mnes" is one edit from "mens", but four letters are too few to trust one edit.
    parse = rater.parse("mnes tshirt")
    assert not parse.named and parse.ignored == ("mnes",)


def test_a_brand_is_read_only_when_all_its_words_are_there(rater):
    parse = rater.parse("red tape shoes")
    assert parse.named == {"brand": {"red tape"}}
    assert rater.parse("red shoes").named == {"base_colour": {"red"}}
    parse = rater.parse("tape red shoes")
    assert parse.named == {"base_colour": {"red"}} and parse.ignored == ("tape",)
    assert rater.parse("red tape red shoes").named == {"brand": {"red tape"},
                                                       "base_colour": {"red"}}


def test_a_brand_spelled_like_an_attribute_word_does_not_hide_the_attribute(rater):
    assert rater.brand_of("p23") == "Navy"
    assert rater.parse("navy shirts").named == {"base_colour": {"navyblue"}}
    assert rater.judge("navy shirts") == {"p1": 2, "p23": 1}


def test_a_query_without_an_article_type_names_no_type_and_gets_no_grades(rater):
    parse = rater.parse("puma black")
    assert not parse.article_types and parse.named == {"brand": {"puma"},
                                                       "base_colour": {"black"}}
    assert rater.judge(parse) == {}


# --------------------------------------------------------------------------- grades


def test_grades_two_for_everything_named_one_for_the_type_alone(rater):
    assert rater.judge("navy tshirts men") == {
        "p7": 2, "p9": 2,                                     # Men, Navy Blue, Tshirts
        "p6": 1, "p8": 1, "p14": 1, "p19": 1, "p20": 1}       # other Tshirts
    # Nothing but the type named: every product of the type is grade 2, nothing is grade 1.
    assert rater.judge("jeans") == {"p17": 2, "p18": 2}


def test_unisex_products_match_men_and_women_queries_but_not_kids(rater):
    assert rater.judge("mens black watch") == {"p10": 2, "p11": 1}
    assert rater.judge("womens watch") == {"p10": 2, "p11": 1}
    assert rater.judge("unisex watch") == {"p10": 2, "p11": 1}
    assert rater.judge("boys watch") == {"p11": 2, "p10": 1}
    assert rater.judge("kids watch") == {"p11": 2, "p10": 1}  # kids: Boys or Girls


def test_a_named_brand_matches_brands_that_start_with_its_words(rater):
    assert rater.judge("adidas tshirts") == {"p8": 2, "p9": 2, "p6": 1, "p7": 1, "p14": 1,
                                             "p19": 1, "p20": 1}
    assert rater.judge("lee cooper jeans") == {"p18": 2, "p17": 1}
    assert rater.judge("lee jeans") == {"p17": 2, "p18": 2}  # the documented price
    assert rater.judge("red tape formal shoes") == {"p3": 2}


def test_grading_is_one_vector_per_distinct_parse(rater):
    first = rater.grader.grade_array(rater.parse("Navy Tees Men"))
    again = rater.grader.grade_array(rater.parse("men navy t-shirts buy"))
    assert again is first  # same parse, same cached grades
    assert first.shape == (len(ROWS),) and set(np.unique(first)) <= {0, 1, 2}


# --------------------------------------------------------------------------- the judged set


def _write_log(path, days):
    """`days`: one list of queries per UTC day, in order."""
    start = datetime(2026, 10, 1, tzinfo=timezone.utc)
    with path.open("w") as handle:
        count = 0
        for day, queries in enumerate(days):
            for minute, query in enumerate(queries):
                stamp = (start + timedelta(days=day, minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
                handle.write(json.dumps({"session_id": f"s{count}", "timestamp": stamp,
                                         "query": query, "shown": ["p1", "p2"],
                                         "clicked": ["p1"], "purchased": []}) + "\n")
                count += 1
    return path


TEST_DAY = ["Navy  Tees Men", "adidas tshirts", "puma black", "lee red jeans",
            "mens black watch", "navy tees men"]


@pytest.fixture
def log_path(tmp_path):
    # 8 training days, 1 validation day, 1 test day of 6 sessions each: the cuts fall at days.
    train_day = ["navy tees men", "jeans", "red shoes", "boys watch", "shorts", "tops"]
    return _write_log(tmp_path / "log.jsonl", [train_day] * 8 + [["adidas tshirts"] * 6,
                                                                TEST_DAY])


def test_judged_set_takes_the_test_days_distinct_queries_and_counts_what_it_drops(log_path):
    split = split_by_time(read_search_log(log_path), js.TEST_SPLIT)
    judged = js.build_judged_set(_products(), split, min_queries=1)
    assert [q.query for q in judged.queries] == ["Navy  Tees Men", "adidas tshirts",
                                                 "mens black watch"]
    assert judged.queries[0].grades == {"p7": 2, "p9": 2, "p6": 1, "p8": 1, "p14": 1,
                                        "p19": 1, "p20": 1}
    assert all(set(q.grades.values()) <= {1, 2} for q in judged.queries)
    # Typed on the validation day only: still unseen in training.
    assert judged.subsets == {"brand": ["adidas tshirts"],
                              "unseen": ["adidas tshirts", "mens black watch"]}
    report = judged.report
    assert (report["test_day_sessions"], report["distinct_queries"], report["parsed"]) == (6, 5, 4)
    assert report["dropped"] == {"no_article_type": 1, "no_grade_2": 1}
    assert (report["judged_queries"], report["brand_queries"], report["unseen_queries"]) == (3, 1, 2)
    assert report["mean_grade_2_per_query"] == pytest.approx((2 + 2 + 1) / 3, abs=0.01)


def test_too_few_judged_queries_is_an_error_and_max_queries_samples(log_path):
    split = split_by_time(read_search_log(log_path), js.TEST_SPLIT)
    with pytest.raises(js.JudgedSetError, match="only 3 judged queries"):
        js.build_judged_set(_products(), split, min_queries=4)
    sampled = js.build_judged_set(_products(), split, min_queries=2, max_queries=2, seed=3)
    again = js.build_judged_set(_products(), split, min_queries=2, max_queries=2, seed=3)
    texts = [q.query for q in sampled.queries]
    assert texts == [q.query for q in again.queries] and len(texts) == 2
    order = ["Navy  Tees Men", "adidas tshirts", "mens black watch"]
    assert texts == [text for text in order if text in texts]  # log order kept
    assert sampled.report["judged_before_sampling"] == 3
    assert set(sampled.subsets["unseen"]) <= set(texts)


def test_the_cli_writes_judgments_the_evaluator_reads_with_its_subsets(tmp_path, log_path,
                                                                       capsys):
    columns = ["product_id", "title", "article_type", "gender", "base_colour", "usage", "image"]
    write_catalog(tmp_path / "catalog", [dict(zip(columns, row + ("",))) for row in ROWS],
                  columns=columns)
    out = tmp_path / "judged" / "test.jsonl"
    args = ["--catalog", str(tmp_path / "catalog"), "--log", str(log_path), "--out", str(out)]
    assert js.main(args + ["--min-queries", "4"]) == 1
    assert "only 3 judged queries" in capsys.readouterr().err and not out.exists()
    assert js.main(args + ["--min-queries", "3"]) == 0

    judgments = read_judgments(out, product_ids=[row[0] for row in ROWS])
    subsets = json.loads((tmp_path / "judged" / "test.subsets.json").read_text())
    report = json.loads((tmp_path / "judged" / "test.report.json").read_text())
    assert len(judgments) == report["judged_queries"] == 3
    assert report["parses"][1] == {"query": "adidas tshirts", "article_type": ["Tshirts"],
                                   "brand": ["ADIDAS"]}

    class ByOrder:
        name = "catalog order"

        def score(self, query_texts, titles, image_paths, item_mode):
            return np.tile(-np.arange(len(titles), dtype=np.float32), (len(query_texts), 1))

    [row] = evaluate_judged([ByOrder()], judgments, [r[0] for r in ROWS], [r[1] for r in ROWS],
                            [None] * len(ROWS), subsets=subsets)
    assert {task: row[task]["num_queries"] for task in row if task != "system"} == {
        "judged": 3, "judged:brand": 1, "judged:unseen": 2}


# --------------------------------------------------------------------------- the real log


@pytest.mark.slow
def test_the_myntra_log_gives_at_least_300_judged_queries(myntra_dir):
    log_file = myntra_dir / "search_log.jsonl"
    if not log_file.is_file():
        pytest.skip(f"search log not found at {log_file}")
    from tfmmsearch.data.catalog import read_catalog

    catalog = read_catalog(myntra_dir, check_images=False)
    split = split_by_time(read_search_log(log_file), js.TEST_SPLIT)
    judged = js.build_judged_set(catalog.products, split)
    assert len(judged.queries) >= js.DEFAULT_MIN_QUERIES
    texts = {q.query for q in judged.queries}
    assert judged.subsets["brand"] and set(judged.subsets["brand"]) <= texts
    assert judged.subsets["unseen"] and set(judged.subsets["unseen"]) <= texts
    assert judged.report["dropped"]["no_article_type"] < 0.05 * judged.report["distinct_queries"]
