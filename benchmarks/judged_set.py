"""A judged query set from the search log's test days, graded over the whole catalog by a rule.

Benchmarks need queries the way shoppers type them, graded the way a shop's relevance raters
would grade them. There are no raters here, so this module is their stand-in (benchmark
tooling, not the package): it takes the distinct queries of the log's TEST days
(`split_by_time(log, (0.8, 0.1, 0.1))`), reads what each asks for, and grades every catalog
product from the catalog's attribute columns. The output is the judged-queries JSONL of
`tfmmsearch.data.judgments` (scored with `tfmmsearch evaluate --judgments FILE`) and two files
beside it: `judged.jsonl` -> `judged.subsets.json`, `judged.report.json`.

The rater's rule
----------------
Reading a query. Words are compared by `phrasing.normalise_key` (lower case, letters and digits
only: "Men's" = "mens", "T-Shirts" = "tshirts"), and a phrase matches a run of query words whose
keys, joined, spell it, so "t shirt", "tshirt" and "t-shirt" read alike. The vocabulary is the
catalog's own values (article type, gender, base colour, usage), the package's synonym lists
(`tfmmsearch.data.phrasing`: "tees" -> Tshirts, "navy" -> Navy Blue, "mens"/"male" -> Men),
and the few words raters know that those lists lack (`RATER_TYPE_WORDS`, `RATER_GENDER_WORDS`,
`RATER_COLOUR_WORDS`: "goggles" -> Sunglasses, "female" -> Women, "shoes" -> any of the three
shoe types, "kids" -> Boys or Girls, "dark blue" -> Navy Blue or Blue). An article-type phrase
also matches with one "s" more or less ("jean", "flip flop"). A phrase naming several values
("backpack": Backpacks or Rucksacks) accepts any of them. Reading goes left to right, longest
phrase first; at equal length an attribute beats a brand (type, gender, colour, usage, brand,
in that order), so a brand spelled like a common word does not hide the word.
  - The article type is required: a query without one is left out ("no_article_type"). When a
    query names two types, the last is the one asked for ("denim shorts" -> Shorts): the head
    noun of an English noun phrase comes last.
  - Gender, colour, usage and brand are optional; two values of one attribute ("black white
    shoes") are read as either.
  - Noise words ("buy", "new", "best", "offer", "online": `NOISE_WORDS`) and words matching
    nothing ("leather", "slim") are ignored: they ask for nothing.
  - Typos, conservatively: a word matching nothing is read as a vocabulary word of at least
    `MIN_TYPO_LENGTH` (5) letters that is exactly one edit away (insertion, deletion,
    substitution or swap of neighbours), and only when every such word reads the same ("shrit"
    -> shirt, "whiet" -> white; "shrt", one edit from both shirt and short, stays unread).
    Words are never corrected into shorter words ("mnes" is not read as mens): one edit turns
    most short words into other words.

Brands. Myntra has no brand column, so a product's brand is read from its title: the words
before its first gender word ("Turtle Check Men Navy Blue Shirt" -> Turtle Check, "Puma Men
Black Running Shoes" -> Puma). When those words are a shorter brand (read so from another
title) followed by a description holding a colour word, the description is dropped ("ADIDAS
Navy Blue Men Cap" -> ADIDAS; "Red Rose Women Peach Nightdress" stays Red Rose, as no title
reads "Red" alone). A title without a gender word takes the longest of those brands it starts
with ("Jealous 21 Green Bee Mine T-shirt" -> Jealous 21), else its first word ("Colorbar Velvet
Matte Lipstick" -> Colorbar); a title starting with a gender word has no brand.
A query names a brand when all the words of a known brand appear together in it: "red tape
shoes" names Red Tape, while "red shoes" and "tape red shoes" name the colour red. A product
matches a named brand when its brand starts with the brand's words, so a brand's sub-lines
count as the brand ("adidas" matches ADIDAS Originals, "arrow" Arrow Sport; the price is that
"lee" matches Lee Cooper too). Abbreviations ("park" for Park Avenue, "gini" for Gini and Jony)
are not read: the word is ignored, and the query is graded as if it named no brand.

Grades, over every product:
  2  the article type and every named attribute (gender, colour, usage, brand) match;
  1  the article type matches but some named attribute does not;
  0  otherwise. Grade 0 is not written: a product a line does not name is grade 0 to the
     reader and the evaluator.
Gender: a Unisex product matches a Men or a Women query (shops list it under both); a
"unisex" query matches only Unisex products, and a Boys or Girls query only that gender. A
query with no grade-2 product is dropped ("no_grade_2"): its judged products would all be
near misses.

The set. Queries are distinct by `search_log.query_key` (case and spacing), keeping the first
spelling seen on the test days, in log order; `--max-queries N` keeps a sample of N (by
`--seed`), and fewer than `--min-queries` (300) judged queries is an error. The subsets file
is `{"brand": [...], "unseen": [...]}`: the judged queries naming a brand, and those whose
key no training-day session typed (validation days do not count as training). It is the
`subsets` mapping of `evaluation.judged.evaluate_judged` and `evaluation.evaluate.evaluate`,
for the rows "queries naming a brand" and "queries unseen in training". The report file holds
the counts and each judged query's parse.

    python benchmarks/judged_set.py --catalog ../shared/data/myntra \\
        --log ../shared/data/myntra/search_log.jsonl --out /tmp/judged/myntra-test.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.judgments import JudgedQuery, write_judgments
from tfmmsearch.data.phrasing import (
    COLOUR_WORDS,
    GENDER_FORMS,
    USAGE_FORMS,
    normalise_key,
    type_nouns,
)
from tfmmsearch.data.schema import Product
from tfmmsearch.data.search_log import TimeSplit, query_key, read_search_log, split_by_time

TEST_SPLIT = (0.8, 0.1, 0.1)
DEFAULT_MIN_QUERIES = 300

TYPE, GENDER, COLOUR, USAGE, BRAND = "article_type", "gender", "base_colour", "usage", "brand"
ATTRIBUTES = (GENDER, COLOUR, USAGE, BRAND)  # what a query may name besides the article type
PRIORITY = (TYPE, GENDER, COLOUR, USAGE, BRAND)  # which reading wins at equal length
MAX_PHRASE_WORDS = 6
MIN_TYPO_LENGTH = 5
MISSING_VALUES = {"", "na"}

# Words raters know that the package's synonym lists (built for phrasing queries) lack.
RATER_TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "goggles": ("Sunglasses",),
    "bagpack": ("Backpacks",),
    "chappals": ("Flip Flops",),
    "lowers": ("Track Pants",),
    "gym shoes": ("Sports Shoes",),
    "sport shoes": ("Sports Shoes",),
    "leather shoes": ("Formal Shoes",),
    "heel sandals": ("Heels",),
    "body spray": ("Deodorant", "Perfume and Body Mist"),
    "shoes": ("Casual Shoes", "Sports Shoes", "Formal Shoes"),
    "footwear": ("Casual Shoes", "Sports Shoes", "Formal Shoes"),
}
RATER_GENDER_WORDS: dict[str, tuple[str, ...]] = {
    "man": ("Men",), "male": ("Men",), "gents": ("Men",), "guys": ("Men",), "him": ("Men",),
    "woman": ("Women",), "female": ("Women",), "lady": ("Women",), "her": ("Women",),
    "kids": ("Boys", "Girls"), "kid": ("Boys", "Girls"),
}
RATER_COLOUR_WORDS: dict[str, tuple[str, ...]] = {"dark blue": ("Navy Blue", "Blue")}
# Gender words a title's brand ends before (keys: "Men's" -> mens, "Kid's" -> kids).
TITLE_GENDER_KEYS = frozenset({"men", "mens", "women", "womens", "boy", "boys", "girl", "girls",
                               "unisex", "kid", "kids"})
# Shoppers' filler and function words: ignored, never read as a brand (a typo of one, such as
# "laetst", is read as it and so ignored too).
NOISE_WORDS = frozenset({"buy", "new", "best", "offer", "offers", "sale", "online", "latest",
                         "cheap", "discount", "deal", "deals", "shop", "shopping", "price",
                         "for", "with", "in", "and", "of", "the", "a", "an", "to"})
UNISEX_MATCHES = frozenset({"men", "women"})  # query genders a Unisex product also matches


def words(text: str) -> tuple[str, ...]:
    """A text's word keys (`normalise_key` per word), empty ones dropped."""
    return tuple(key for key in map(normalise_key, text.split()) if key)


def _with_plural_variants(key: str) -> set[str]:
    return {key, key + "s", key[:-1] if key.endswith("s") and len(key) > 3 else key}


# --------------------------------------------------------------------------- brands from titles


def _gender_position(keys: Sequence[str]) -> int | None:
    return next((i for i, key in enumerate(keys) if key in TITLE_GENDER_KEYS), None)


def _gendered_brand(keys: tuple[str, ...], cut: int, known: set[tuple[str, ...]],
                    colour_words: Collection[str]) -> tuple[str, ...]:
    """The words before the gender word, less a colour-bearing description after a shorter
    known brand ("ADIDAS Navy Blue Men Cap" -> ADIDAS, "Red Tape Brown Casual Men's Shoe" ->
    Red Tape; "Red Rose Women ..." stays Red Rose, no brand "Red" being known)."""
    before = keys[:cut]
    for length in range(cut - 1, 0, -1):
        if before[:length] in known and any(word in colour_words for word in before[length:]):
            return before[:length]
    return before


def title_brand_words(title: str, known: Collection[tuple[str, ...]] = (),
                      colour_words: Collection[str] = ()) -> tuple[str, ...]:
    """The brand of one title as word keys (the module docstring's rule); () when it has none.

    `known` are the brands read from the words before the gender word of every title; they
    trim descriptions off such readings and name the brand of titles without a gender word.
    """
    keys = words(title)
    cut = _gender_position(keys)
    if cut:
        return _gendered_brand(keys, cut, set(known), colour_words)
    prefixes = [brand for brand in known if brand and keys[:len(brand)] == brand]
    if prefixes:
        return max(prefixes, key=len)
    return keys[:1] if cut is None else ()


def product_brands(titles: Sequence[str], colour_words: Collection[str] = ()
                   ) -> tuple[list[tuple[str, ...]], dict[tuple, str]]:
    """Each title's brand (word keys) and a display name per brand (its commonest spelling).

    Titles with a gender word are read first, against every title's words before its gender
    word; titles without one then against the brands those gave.
    """
    keyed = [words(title) for title in titles]
    before_gender = {keys[:cut] for keys in keyed if (cut := _gender_position(keys))}
    brands: list[tuple[str, ...] | None] = [
        _gendered_brand(keys, cut, before_gender, colour_words)
        if (cut := _gender_position(keys)) else None for keys in keyed]
    gendered = {brand for brand in brands if brand}
    brands = [brand if brand is not None else title_brand_words(title, gendered)
              for title, brand in zip(titles, brands)]
    spellings: dict[tuple, Counter] = {}
    for title, brand in zip(titles, brands):
        if brand:  # its words are the title's first words that have a key
            raw = [word for word in title.split() if normalise_key(word)][:len(brand)]
            spellings.setdefault(brand, Counter())[" ".join(raw)] += 1
    names = {brand: counts.most_common(1)[0][0] for brand, counts in spellings.items()}
    return brands, names


def colour_words(products: Iterable[Product]) -> set[str]:
    """Word keys of the catalog's colours and their synonyms (what trims a title's brand)."""
    found = set()
    for value in {product.attributes.get(COLOUR, "") for product in products}:
        for phrase in (value, *COLOUR_WORDS.get(normalise_key(value), ())):
            found.update(words(phrase))
    return found - MISSING_VALUES


# --------------------------------------------------------------------------- the vocabulary


@dataclass
class Vocabulary:
    """Phrase key -> {role: the catalog value keys it names}, from one catalog's values."""

    phrases: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    display: dict[tuple[str, str], str] = field(default_factory=dict)  # (role, value key) -> name
    known_words: set[str] = field(default_factory=lambda: set(NOISE_WORDS))

    def add(self, role: str, phrase: str, values: Iterable[str], plural_variants: bool = False):
        """`phrase` names `values` of `role` (with one "s" more or less, if asked)."""
        key = normalise_key(phrase)
        if not key:
            return
        phrase_words = words(phrase)
        self.known_words.update(phrase_words)
        if plural_variants:
            self.known_words.update(_with_plural_variants(phrase_words[-1]))
        for variant in _with_plural_variants(key) if plural_variants else (key,):
            self.known_words.add(variant)
            entry = self.phrases.setdefault(variant, {})
            entry[role] = entry.get(role, frozenset()) | frozenset(values)

    @classmethod
    def from_catalog(cls, products: Sequence[Product],
                     brand_names: Mapping[tuple[str, ...], str]) -> "Vocabulary":
        """The catalog's values, the package's synonyms, the raters' words and the brands."""
        vocab = cls()
        present: dict[str, set[str]] = {role: set() for role in (TYPE, GENDER, COLOUR, USAGE)}
        for product in products:
            for role, values in present.items():
                value = product.attributes.get(role, "")
                if normalise_key(value) not in MISSING_VALUES:
                    values.add(value)
                    vocab.display.setdefault((role, normalise_key(value)), value)
        keys = {role: {normalise_key(v) for v in values} for role, values in present.items()}

        for value in present[TYPE]:
            for phrase in (value, *(noun for pair in type_nouns(value) for noun in pair)):
                vocab.add(TYPE, phrase, [normalise_key(value)], plural_variants=True)
        for value in present[GENDER]:
            forms = GENDER_FORMS.get(normalise_key(value), {})
            for phrase in (value, *forms.get("pre", ()), *forms.get("bare", ())):
                vocab.add(GENDER, phrase, [normalise_key(value)])
        for value in present[COLOUR]:
            for phrase in (value, *COLOUR_WORDS.get(normalise_key(value), ())):
                vocab.add(COLOUR, phrase, [normalise_key(value)])
        for value in present[USAGE]:
            forms = USAGE_FORMS.get(normalise_key(value), {})
            for phrase in (value, *forms.get("pre", ()), *forms.get("bare", ())):
                vocab.add(USAGE, phrase, [normalise_key(value)])
        for role, table in ((TYPE, RATER_TYPE_WORDS), (GENDER, RATER_GENDER_WORDS),
                            (COLOUR, RATER_COLOUR_WORDS)):
            for phrase, values in table.items():
                in_catalog = [normalise_key(v) for v in values if normalise_key(v) in keys[role]]
                if in_catalog:
                    vocab.add(role, phrase, in_catalog, plural_variants=role == TYPE)
        for brand, name in brand_names.items():
            if "".join(brand) not in NOISE_WORDS:
                vocab.add(BRAND, " ".join(brand), [" ".join(brand)])
                vocab.display[(BRAND, " ".join(brand))] = name
        return vocab

    def is_known(self, word: str) -> bool:
        return word in self.known_words

    def correct(self, word: str) -> str | None:
        """The known word (>= MIN_TYPO_LENGTH letters) one edit from `word`, when every such
        word reads the same; else None."""
        if word in NOISE_WORDS or word.isdigit():
            return None
        candidates = sorted(target for target in _one_edit_variants(word)
                            if len(target) >= MIN_TYPO_LENGTH and target in self.known_words)
        readings = {tuple(sorted(self.phrases.get(target, {}).items())) for target in candidates}
        return candidates[0] if len(readings) == 1 else None

    def name(self, role: str, value: str) -> str:
        return self.display.get((role, value), value)


_ALPHABET = string.ascii_lowercase + string.digits


def _one_edit_variants(word: str) -> set[str]:
    """Every string one insertion, deletion, substitution or neighbour swap from `word`."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {left + right[1:] for left, right in splits if right}
    swaps = {left + right[1] + right[0] + right[2:] for left, right in splits if len(right) > 1}
    substitutions = {left + letter + right[1:] for left, right in splits if right
                     for letter in _ALPHABET}
    inserts = {left + letter + right for left, right in splits for letter in _ALPHABET}
    return (deletes | swaps | substitutions | inserts) - {word}


# --------------------------------------------------------------------------- reading a query


@dataclass(frozen=True)
class QueryParse:
    """What one query asks for, as catalog value keys (`normalise_key`) per role."""

    query: str
    article_types: frozenset[str]
    named: Mapping[str, frozenset[str]] = field(hash=False)  # gender/colour/usage/brand keys
    ignored: tuple[str, ...] = ()  # words that matched nothing
    corrected: tuple[tuple[str, str], ...] = ()  # (typed word, the word it was read as)

    @property
    def names_brand(self) -> bool:
        return bool(self.named.get(BRAND))

    def signature(self) -> tuple:
        """What grading depends on: equal signatures get equal grades."""
        return (self.article_types,
                tuple((role, self.named.get(role, frozenset())) for role in ATTRIBUTES))

    def describe(self, vocab: Vocabulary) -> dict:
        """The parse in catalog spellings, for reports."""
        out = {TYPE: sorted(vocab.name(TYPE, v) for v in self.article_types)}
        for role in ATTRIBUTES:
            if self.named.get(role):
                out[role] = sorted(vocab.name(role, v) for v in self.named[role])
        if self.ignored:
            out["ignored"] = list(self.ignored)
        if self.corrected:
            out["corrected"] = [f"{typed}->{read}" for typed, read in self.corrected]
        return out


def parse_query(query: str, vocab: Vocabulary) -> QueryParse:
    """Reads `query` by the module docstring's rule; `article_types` is empty when it names none."""
    typed = words(query)
    corrected = []
    tokens = []
    for word in typed:
        read = word
        if not vocab.is_known(word):
            read = vocab.correct(word) or word
            if read != word:
                corrected.append((word, read))
        tokens.append(read)

    type_readings: list[frozenset[str]] = []
    named: dict[str, frozenset[str]] = {}
    ignored = []
    position = 0
    while position < len(tokens):
        for end in range(min(len(tokens), position + MAX_PHRASE_WORDS), position, -1):
            entry = vocab.phrases.get("".join(tokens[position:end]))
            if entry:
                role = next(role for role in PRIORITY if role in entry)
                if role == TYPE:
                    type_readings.append(entry[role])
                else:
                    named[role] = named.get(role, frozenset()) | entry[role]
                position = end
                break
        else:
            if tokens[position] not in NOISE_WORDS:
                ignored.append(tokens[position])
            position += 1
    return QueryParse(query, type_readings[-1] if type_readings else frozenset(), named,
                      tuple(ignored), tuple(corrected))


# --------------------------------------------------------------------------- grading


class Grader:
    """Grades every product for a parse, from per-value boolean masks over the catalog."""

    def __init__(self, products: Sequence[Product], brands: Sequence[tuple[str, ...]]):
        self.product_ids = [product.product_id for product in products]
        self.columns = {role: np.array([normalise_key(p.attributes.get(role, "")) for p in products])
                        for role in (TYPE, GENDER, COLOUR, USAGE)}
        self.brand_rows: dict[tuple[str, ...], list[int]] = {}
        for row, brand in enumerate(brands):
            self.brand_rows.setdefault(brand, []).append(row)
        self._masks: dict[tuple[str, frozenset], np.ndarray] = {}
        self._grades: dict[tuple, np.ndarray] = {}

    def mask(self, role: str, values: frozenset[str]) -> np.ndarray:
        """Products whose `role` matches any of `values` (Unisex counted for Men and Women)."""
        cached = self._masks.get((role, values))
        if cached is not None:
            return cached
        if role == BRAND:
            wanted = [tuple(value.split()) for value in values]
            mask = np.zeros(len(self.product_ids), dtype=bool)
            for brand, rows in self.brand_rows.items():
                if brand and any(brand[:len(named)] == named for named in wanted):
                    mask[rows] = True
        else:
            accepted = set(values)
            if role == GENDER and values & UNISEX_MATCHES:
                accepted.add("unisex")
            mask = np.isin(self.columns[role], sorted(accepted))
        self._masks[(role, values)] = mask
        return mask

    def grade_array(self, parse: QueryParse) -> np.ndarray:
        """[P] grades 0/1/2 in catalog order."""
        signature = parse.signature()
        cached = self._grades.get(signature)
        if cached is not None:
            return cached
        of_type = self.mask(TYPE, parse.article_types)
        exact = of_type.copy()
        for role in ATTRIBUTES:
            if parse.named.get(role):
                exact &= self.mask(role, parse.named[role])
        grades = of_type.astype(np.int8) + exact.astype(np.int8)
        self._grades[signature] = grades
        return grades

    def judgments(self, parse: QueryParse) -> dict[str, int]:
        """product id -> grade for every product graded above 0, grade 2 first."""
        grades = self.grade_array(parse)
        return {self.product_ids[row]: int(grade) for grade in (2, 1)
                for row in np.flatnonzero(grades == grade)}


class Rater:
    """The rule over one catalog: reads queries and grades every product for them."""

    def __init__(self, products: Sequence[Product]):
        self.products = list(products)
        self.brands, self.brand_names = product_brands(
            [product.title for product in self.products], colour_words(self.products))
        self.vocabulary = Vocabulary.from_catalog(self.products, self.brand_names)
        self.grader = Grader(self.products, self.brands)

    def parse(self, query: str) -> QueryParse:
        return parse_query(query, self.vocabulary)

    def judge(self, query: str | QueryParse) -> dict[str, int]:
        """product id -> grade (1 or 2) for every product the rule grades above 0."""
        parse = self.parse(query) if isinstance(query, str) else query
        return self.grader.judgments(parse) if parse.article_types else {}

    def brand_of(self, product_id: str) -> str | None:
        """A product's brand as read from its title, in the catalog's commonest spelling."""
        for product, brand in zip(self.products, self.brands):
            if product.product_id == product_id:
                return self.brand_names.get(brand)
        raise KeyError(product_id)


# --------------------------------------------------------------------------- the judged set


class JudgedSetError(ValueError):
    """The log's test days do not give enough judged queries."""


@dataclass
class JudgedSet:
    queries: list[JudgedQuery]
    parses: list[QueryParse]
    subsets: dict[str, list[str]]  # "brand" / "unseen" -> judged query texts
    report: dict
    rater: Rater


def distinct_test_queries(split: TimeSplit) -> list[str]:
    """The test days' distinct queries (by `query_key`), first spelling, in log order."""
    first: dict[str, str] = {}
    for session in split.test:
        first.setdefault(query_key(session.query), session.query)
    return list(first.values())


def build_judged_set(products: Sequence[Product], split: TimeSplit,
                     min_queries: int = DEFAULT_MIN_QUERIES, max_queries: int | None = None,
                     seed: int = 0) -> JudgedSet:
    """Parses and grades the test days' queries; at most `max_queries` (a sample by `seed`,
    kept in log order).

    Raises JudgedSetError (its message holds the counts) when fewer than `min_queries` are left.
    """
    rater = Rater(products)
    train_keys = {query_key(session.query) for session in split.train}
    queries = distinct_test_queries(split)

    kept: list[tuple[QueryParse, dict[str, int]]] = []
    dropped: Counter = Counter()
    for query in queries:
        parse = rater.parse(query)
        grades = rater.judge(parse)
        if not parse.article_types:
            dropped["no_article_type"] += 1
        elif 2 not in grades.values():
            dropped["no_grade_2"] += 1
        else:
            kept.append((parse, grades))
    judged_before_sampling = len(kept)
    if max_queries is not None and len(kept) > max_queries:
        chosen = sorted(random.Random(seed).sample(range(len(kept)), max_queries))
        kept = [kept[index] for index in chosen]

    parses = [parse for parse, _ in kept]
    subsets = {"brand": [p.query for p in parses if p.names_brand],
               "unseen": [p.query for p in parses if query_key(p.query) not in train_keys]}
    grade_2 = [sum(grade == 2 for grade in grades.values()) for _, grades in kept]
    grade_1 = [sum(grade == 1 for grade in grades.values()) for _, grades in kept]
    report = {
        "products": len(products),
        "brands_read_from_titles": len(rater.brand_names),
        "test_days": [str(day) for day in split.days["test"]],
        "test_day_sessions": len(split.test),
        "distinct_queries": len(queries),
        "parsed": len(queries) - dropped["no_article_type"],
        "dropped": {reason: dropped[reason] for reason in ("no_article_type", "no_grade_2")},
        "judged_before_sampling": judged_before_sampling,
        "judged_queries": len(kept),
        "brand_queries": len(subsets["brand"]),
        "unseen_queries": len(subsets["unseen"]),
        "mean_grade_2_per_query": round(float(np.mean(grade_2)), 2) if kept else 0.0,
        "median_grade_2_per_query": float(np.median(grade_2)) if kept else 0.0,
        "mean_grade_1_per_query": round(float(np.mean(grade_1)), 2) if kept else 0.0,
        "queries_with_typos_read": sum(bool(p.corrected) for p in parses),
        "queries_with_unread_words": sum(bool(p.ignored) for p in parses),
        "commonest_unread_words": Counter(w for p in parses for w in p.ignored).most_common(20),
        "max_queries": max_queries, "seed": seed,
    }
    if len(kept) < min_queries:
        raise JudgedSetError(f"only {len(kept)} judged queries from the test days, fewer than "
                             f"{min_queries}: {json.dumps(report)}")
    judged = [JudgedQuery(parse.query, grades) for parse, grades in kept]
    return JudgedSet(judged, parses, subsets, report, rater)


def side_paths(out: str | Path) -> tuple[Path, Path]:
    """(subsets, report) files beside the judged JSONL: judged.jsonl -> judged.subsets.json."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".jsonl" else out
    return (stem.with_name(stem.name + ".subsets.json"),
            stem.with_name(stem.name + ".report.json"))


def write_judged_set(judged: JudgedSet, out: str | Path) -> list[Path]:
    """Writes the judged JSONL (`write_judgments`), its subsets and its report."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_judgments(out, judged.queries)
    subsets_path, report_path = side_paths(out)
    subsets_path.write_text(json.dumps(judged.subsets, indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    report = dict(judged.report)
    report["parses"] = [{"query": parse.query, **parse.describe(judged.rater.vocabulary)}
                        for parse in judged.parses]
    report_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                           encoding="utf-8")
    return [out, subsets_path, report_path]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, required=True, metavar="DIR")
    parser.add_argument("--log", type=Path, required=True, metavar="FILE")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="judged-queries JSONL; .subsets.json and .report.json go beside it")
    parser.add_argument("--min-queries", type=int, default=DEFAULT_MIN_QUERIES)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed for --max-queries")
    args = parser.parse_args(argv)

    catalog = read_catalog(args.catalog, check_images=False)
    log = read_search_log(args.log, product_ids=[p.product_id for p in catalog.products])
    split = split_by_time(log, TEST_SPLIT)
    try:
        judged = build_judged_set(catalog.products, split, args.min_queries, args.max_queries,
                                  args.seed)
    except JudgedSetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    paths = write_judged_set(judged, args.out)
    for name, value in judged.report.items():
        print(f"{name}: {json.dumps(value)}")
    print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
