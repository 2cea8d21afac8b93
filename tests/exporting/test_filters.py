"""In-graph filters against a plain-Python parser and evaluator written from the docstring's
grammar: random catalogs and filters, every error, the edge shapes, and a SavedModel loaded by
a process that imports only tensorflow and tensorflow_text."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.contract import TEXT_WHITESPACE, attribute_value, parse_number
from tfmmsearch.exporting.filters import (
    CATEGORICAL,
    DIRECT_UNITS,
    MISSING_KEY,
    NUMERIC,
    categorical_keys,
    filter_errors,
    filter_mask,
    numeric_values,
)

COLUMNS = ("brand", "price", "colour.base", "rating")
KINDS = (CATEGORICAL, NUMERIC, CATEGORICAL, NUMERIC)

# --------------------------------------------------------------------------- the reference


class Malformed(Exception):
    def __init__(self, position: int):
        super().__init__(position)
        self.position = position


@dataclass
class Token:
    kind: str
    text: str
    start: int
    value: str = ""


@dataclass
class Clause:
    field: str
    start: int
    negated: bool = False
    values: list = field(default_factory=list)  # (text, is_star, start)
    bounds: tuple | None = None  # ((low text, start), (high text, start))


ASCII_FIELD_START = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
ASCII_FIELD_REST = ASCII_FIELD_START | set("0123456789.")
SPECIAL = set('()[]":') | set(TEXT_WHITESPACE)
KEYWORDS = {"AND", "OR", "NOT", "TO", "*"}
FIELD_LIKE = {"field", "AND", "OR", "NOT", "TO"}
VALUE_LIKE = {"field", "-field", "word", "AND", "OR", "NOT", "TO", "*"}


def is_field(word: str) -> bool:
    return bool(word) and word[0] in ASCII_FIELD_START and all(c in ASCII_FIELD_REST for c in word)


def tokenize(text: str) -> list[Token]:
    tokens, i = [], 0
    while i < len(text):
        c, start = text[i], i
        if c in TEXT_WHITESPACE:
            while i < len(text) and text[i] in TEXT_WHITESPACE:
                i += 1
            tokens.append(Token("space", text[start:i], start))
        elif c in "()[]:":
            tokens.append(Token(c, c, start))
            i += 1
        elif c == '"':
            i, value = i + 1, ""
            while i < len(text) and text[i] != '"':
                if text[i] == "\\" and i + 1 < len(text):
                    i += 1
                value += text[i]
                i += 1
            if i < len(text):
                tokens.append(Token("quoted", text[start:i + 1], start, value))
                i += 1
            else:
                tokens.append(Token("unterminated", text[start:], start))
        else:
            while i < len(text) and text[i] not in SPECIAL:
                i += 1
            word = text[start:i]
            kind = (word if word in KEYWORDS else "field" if is_field(word)
                    else "-field" if word[:1] == "-" and is_field(word[1:]) else "word")
            tokens.append(Token(kind, word, start, word))
    return tokens + [Token("end", "", len(text))]


def parse(text: str) -> list[Clause]:
    """Clauses of a filter, or Malformed(position of the first token that cannot continue)."""
    tokens, at = tokenize(text), 0

    def kind(ahead=0):
        return tokens[min(at + ahead, len(tokens) - 1)].kind

    def take(*kinds):
        nonlocal at
        if kind() not in kinds:
            raise Malformed(tokens[at].start)
        at += 1
        return tokens[at - 1]

    def value():
        token = take(*VALUE_LIKE, "quoted")
        return token.value, token.kind == "*", token.start

    def clause():
        negated = False
        if kind() == "NOT" and kind(1) != ":":
            take("NOT"), take("space")
            negated, name = True, take(*FIELD_LIKE)
        elif kind() == "-field":
            negated, name = True, take("-field")
        else:
            name = take(*FIELD_LIKE)
        result = Clause(name.text.lstrip("-"), name.start, negated)
        take(":")
        if kind() == "(":
            take("(")
            if kind() == "space":
                take("space")
            result.values.append(value())
            while kind() != ")":
                take("space")
                if kind() == ")":
                    break
                take("OR"), take("space")
                result.values.append(value())
            take(")")
        elif kind() == "[":
            take("[")
            if kind() == "space":
                take("space")
            low = take(*VALUE_LIKE)
            take("space"), take("TO"), take("space")
            high = take(*VALUE_LIKE)
            if kind() == "space":
                take("space")
            take("]")
            result.bounds = ((low.text, low.start), (high.text, high.start))
        else:
            result.values.append(value())
        return result

    clauses = []
    if kind() == "space":
        take("space")
    if kind() == "end":
        return clauses
    while True:
        clauses.append(clause())
        if kind() == "end":
            return clauses
        take("space")
        if kind() == "end":
            return clauses
        if kind() == "AND" and kind(1) != ":":
            take("AND"), take("space")


def semantic_error(text: str, clauses: list[Clause]) -> str:
    """The leftmost problem of a well-formed filter, as the module words it, or ""."""
    found = []
    where = f" (in filter '{text}')"
    for clause in clauses:
        if clause.field not in COLUMNS:
            found.append((clause.start, f"unknown filter field '{clause.field}'; filterable "
                                        f"fields: {', '.join(COLUMNS)}{where}"))
            continue
        if KINDS[COLUMNS.index(clause.field)] == CATEGORICAL:
            if clause.bounds:
                found.append((clause.start, f"filter field '{clause.field}' is categorical: a "
                                            f"range [lo TO hi] needs a numeric field{where}"))
            continue
        pairs = [(v, s) for v, star, s in clause.values if not star]
        pairs += [(v, s) for v, s in clause.bounds or () if v != "*"]
        for value, start in pairs:
            if parse_number(value) is None:
                found.append((start, f"filter field '{clause.field}' is numeric: '{value}' is "
                                     f"not a number{where}"))
    return min(found)[1] if found else ""


def number32(value: str | None) -> float:
    """The float32 TensorFlow reads: overflow is +-inf, a denormal flushes to a signed 0."""
    number = parse_number(value)
    if number is None:
        return math.nan
    with np.errstate(over="ignore"):
        number = float(np.float32(number))
    return math.copysign(0.0, number) if abs(number) < np.finfo(np.float32).tiny else number


def key(value: str | None) -> str | None:
    value = attribute_value(value)
    return None if value is None else value.lower()


def reference_mask(clauses: list[Clause], catalog: dict[str, list]) -> list[bool]:
    rows = len(next(iter(catalog.values())))
    keep = [True] * rows
    for clause in clauses:
        stored = catalog[clause.field]
        numeric = KINDS[COLUMNS.index(clause.field)] == NUMERIC
        for n in range(rows):
            if numeric:
                x = number32(stored[n])
                if clause.bounds:
                    (low, _), (high, _) = clause.bounds
                    hit = (not math.isnan(x) and (low == "*" or x >= number32(low))
                           and (high == "*" or x <= number32(high)))
                else:
                    hit = any(not math.isnan(x) and (star or x == number32(v))
                              for v, star, _ in clause.values)
            else:
                mine = key(stored[n])
                hit = mine is not None and any(star or key(v) == mine
                                               for v, star, _ in clause.values)
            keep[n] = keep[n] and hit != clause.negated
    return keep


# --------------------------------------------------------------------------- random data

WORDS = ["Nike", "nike", "NIKE ", " Red Tape", "red tape", "adidas", "Éclair", "éclair", "OR",
         "AND", "x-y", "-neg", "say \"hi\"", "back\\slash", "(paren)", "a:b", "*", "tab\there",
         "NA", "none", "", "  ", "Puma", "1e2"]
NUMBERS = ["10", "10.0", "-3", "-0", "0", "2.5", "1e2", "100", "7", " 7 ", "1e40", "-1e40",
           ".5", "0.1", "1e-40", "-1e-40", "n/a", "abc", "", "NaN", "1,299"]


def random_catalog(rng: random.Random, rows: int) -> dict[str, list]:
    return {name: [rng.choice(WORDS if kind == CATEGORICAL else NUMBERS + [None])
                   for _ in range(rows)] for name, kind in zip(COLUMNS, KINDS)}


def catalog_tensors(catalog: dict[str, list]):
    def matrix(kind):
        names = [n for n, k in zip(COLUMNS, KINDS) if k == kind]
        rows = len(catalog[names[0]])
        return tf.constant([[catalog[n][i] or "" for n in names] for i in range(rows)],
                           tf.string, shape=[rows, len(names)])
    return categorical_keys(matrix(CATEGORICAL)), numeric_values(matrix(NUMERIC))


def render(rng: random.Random, value: str) -> str:
    plain = value and not set(value) & SPECIAL and value != "*"
    if plain and rng.random() < 0.7:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def random_filter(rng: random.Random) -> str:
    def space():
        return rng.choice([" ", " ", "  ", "\t", "\n "])

    def clause():
        name = rng.choice(COLUMNS)
        numeric = KINDS[COLUMNS.index(name)] == NUMERIC
        pool = [n for n in NUMBERS if parse_number(n) is not None] if numeric else WORDS + ["zzz"]
        prefix = rng.choice(["", "", "NOT" + space(), "-"])
        shape = rng.random()
        if shape < 0.35:
            target = render(rng, rng.choice(pool))
        elif shape < 0.45:
            target = "*"
        elif shape < 0.75 or not numeric:
            values = [render(rng, rng.choice(pool)) for _ in range(rng.randint(1, 3))]
            pad = rng.choice(["", " "])
            target = "(" + pad + (space() + "OR" + space()).join(values) + pad + ")"
        else:
            ends = [rng.choice(pool + ["*"]) for _ in range(2)]
            pad = rng.choice(["", " "])
            target = f"[{pad}{ends[0]}{space()}TO{space()}{ends[1]}{pad}]"
        return f"{prefix}{name}:{target}"

    parts = [clause() for _ in range(rng.randint(0, 3))]
    joined = "".join(rng.choice([space(), space() + "AND" + space()]) + p for p in parts[1:])
    return rng.choice(["", " "]) + "".join(parts[:1]) + joined + rng.choice(["", " "])


def mutate(rng: random.Random, text: str) -> str:
    i = rng.randint(0, len(text))
    edit = rng.random()
    if edit < 0.3 and text:
        return text[:i] + text[i + 1:]
    if edit < 0.5:
        return text[:i]
    piece = rng.choice(list('()[]":\\*-') + [" ", " AND ", " OR ", " TO ", "NOT ", "x", "é"])
    return text[:i] + piece + text[i:]


@pytest.fixture(scope="module")
def mask_function():
    fc, fn = KINDS.count(CATEGORICAL), KINDS.count(NUMERIC)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([None, fc], tf.int64),
                                  tf.TensorSpec([None, fn], tf.float32)])
    def masks(filters, keys, numbers):
        return filter_mask(filters, COLUMNS, KINDS, keys, numbers)
    return masks


@pytest.fixture(scope="module")
def errors_function():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def errors(filters):
        return filter_errors(filters, COLUMNS, KINDS)
    return errors


def decoded(tensor) -> list[str]:
    return [item.decode("utf-8") for item in tensor.numpy()]


def graph_message(error: tf.errors.InvalidArgumentError) -> str:
    """The message of the Assert kernel, whose string data is C-escaped (\\' for ')."""
    return error.message.replace("\\'", "'").replace('\\"', '"')


# --------------------------------------------------------------------------- agreement


def test_the_generator_writes_filters_the_reference_accepts():
    rng = random.Random(1)
    texts = [random_filter(rng) for _ in range(300)]
    assert all(isinstance(parse(t), list) for t in texts)
    assert sum("(" in t for t in texts) > 50 and sum("[" in t for t in texts) > 20
    assert sum("NOT" in t or " -" in t or t.startswith("-") for t in texts) > 50


def test_masks_equal_the_reference_on_random_filters(mask_function):
    rng = random.Random(7)
    catalog = random_catalog(rng, 80)
    keys, numbers = catalog_tensors(catalog)
    texts, expected = [], []
    while len(texts) < 300:
        text = random_filter(rng)
        clauses = parse(text)
        if semantic_error(text, clauses):
            continue  # a numeric field's "1,299"-like value; the error tests cover these
        texts.append(text)
        expected.append(reference_mask(clauses, catalog))
    got = mask_function(tf.constant(texts), keys, numbers).numpy()
    assert got.shape == (300, 80)
    wrong = [t for t, g, e in zip(texts, got, expected) if list(g) != e]
    assert not wrong, f"{len(wrong)} filters differ from the reference, e.g. {wrong[:3]}"
    # Alone, each filter gets the same row: from the direct path (DIRECT_UNITS values or
    # ranges or fewer), or the coded one without its byte-mates of the packed rejections.
    for text, row in zip(texts[::3], got[::3]):
        np.testing.assert_array_equal(mask_function(tf.constant([text]), keys, numbers)[0], row)
    units = [sum(len(c.values) or 1 for c in parse(text)) for text in texts[::3]]
    assert sum(0 < u <= DIRECT_UNITS for u in units) > 30
    assert sum(u > DIRECT_UNITS for u in units) > 10
    share = got.mean(axis=1)
    assert (share == 0).sum() > 10 and (share == 1).sum() > 10
    assert ((share > 0) & (share < 1)).sum() > 100


def test_mutated_filters_fail_exactly_where_the_reference_fails(errors_function, mask_function):
    rng = random.Random(11)
    texts = [mutate(rng, random_filter(rng)) for _ in range(500)]
    texts += ["NOT", "AND", "a:x AND", "NOT NOT brand:x", "brand:(OR OR x)", "AND:x",
              "brand:x AND AND:y", "brand:x AND AND", "NOT:x", "brand:x NOT", "brand:x-y:z"]
    got = decoded(errors_function(tf.constant(texts)))
    malformed = 0
    for text, message in zip(texts, got):
        try:
            expected = semantic_error(text, parse(text))
        except Malformed as error:
            malformed += 1
            assert message.startswith(f"filter '{text}' is malformed at position "
                                      f"{error.position} (0-based): expected "), (text, message)
        else:
            assert message == expected, text
    assert 100 < malformed < len(texts) - 100
    # The well-formed, meaningful ones evaluate like the reference too.
    catalog = random_catalog(rng, 30)
    good = [t for t, m in zip(texts, got) if not m]
    got_masks = mask_function(tf.constant(good), *catalog_tensors(catalog)).numpy()
    for text, mask in zip(good, got_masks):
        assert list(mask) == reference_mask(parse(text), catalog), text


# --------------------------------------------------------------------------- errors

CATALOG = {"brand": ["Nike", "Red Tape", "", "adidas"], "price": ["10", "20.5", "x", "-3"],
           "colour.base": ["Black", "white", "NA", "black "], "rating": ["4", "", "5", "1"]}


def eager_mask(filters, columns=COLUMNS, kinds=KINDS, catalog=CATALOG):
    keys, numbers = catalog_tensors(catalog) if columns else (tf.zeros([4, 0], tf.int64),
                                                              tf.zeros([4, 0], tf.float32))
    return filter_mask(tf.constant(filters, tf.string), columns, kinds, keys, numbers).numpy()


@pytest.mark.parametrize("text, message", [
    ("brand:(nike", "filter 'brand:(nike' is malformed at position 11 (0-based): expected OR "
                    "or ')' after a value in the group, found the end of the filter"),
    ("brand:nike price:[1 TO]", "is malformed at position 22 (0-based): expected whitespace "
                                "after TO, found ']'"),
    ('brand:"nike', "malformed at position 6 (0-based): expected a value, a quoted value, '(' "
                    "or '[' after ':', found an unterminated quote"),
    ("brand: nike", "malformed at position 6 (0-based)"),
    ("brand:(nike adidas)", "malformed at position 12 (0-based): expected OR or ')'"),
    ("brand:a OR brand:b", "malformed at position 10 (0-based): expected ':' after a field name "
                           "(OR joins values inside one field's parentheses only"),
    ("brand:éé:b", "malformed at position 8 (0-based): expected whitespace between clauses, "
                   "found ':'"),  # characters, not bytes
    ("colour:red", "unknown filter field 'colour'; filterable fields: brand, price, colour.base, "
                   "rating (in filter 'colour:red')"),
    ("price:[1 TO 5] brand:[a TO b]", "filter field 'brand' is categorical: a range [lo TO hi] "
                                      "needs a numeric field"),
    ("price:[1 TO cheap]", "filter field 'price' is numeric: 'cheap' is not a number"),
    ("rating:(4 OR \"n/a\")", "filter field 'rating' is numeric: 'n/a' is not a number"),
])
def test_errors_name_the_problem_eager_and_in_graph(text, message, mask_function):
    with pytest.raises(tf.errors.InvalidArgumentError) as eager:
        eager_mask(["brand:nike", text])
    assert message in graph_message(eager.value)
    keys, numbers = catalog_tensors(CATALOG)
    with pytest.raises(tf.errors.InvalidArgumentError) as graph:
        mask_function(tf.constant([text, ""]), keys, numbers)
    assert message in graph_message(graph.value)


def test_a_batch_reports_each_filters_first_problem(errors_function):
    got = decoded(errors_function(tf.constant(
        ["brand:x", "size:1 price:y", "price:y size:1", "", "price:[z TO y]"])))
    assert got[0] == "" and got[3] == ""
    assert got[1].startswith("unknown filter field 'size'")
    assert got[2].startswith("filter field 'price' is numeric: 'y'")
    assert got[4].startswith("filter field 'price' is numeric: 'z'")


def test_column_declarations_are_checked_when_the_graph_is_built():
    keys, numbers = catalog_tensors(CATALOG)
    with pytest.raises(ValueError, match="kind 'text'"):
        filter_mask(tf.constant([""]), ("brand",), ("text",), keys[:, :1], numbers[:, :0])
    with pytest.raises(ValueError, match="2 filter columns but 1 kinds"):
        filter_mask(tf.constant([""]), ("brand", "price"), (CATEGORICAL,), keys, numbers)
    with pytest.raises(ValueError, match=r"keys must be \[N, 1\]"):
        filter_mask(tf.constant([""]), ("brand", "price"), (CATEGORICAL, NUMERIC), keys, numbers)


# --------------------------------------------------------------------------- edges


def test_values_are_normalised_the_same_on_both_sides():
    keys = categorical_keys(
        tf.constant(["Nike", " NIKE\t", "nike", "NA", " ", "none", "Nikes"])).numpy()
    assert len(set(keys[:3])) == 1 and keys[0] >= 0 and keys[-1] != keys[0]
    assert list(keys[3:6]) == [MISSING_KEY] * 3
    numbers = numeric_values(tf.constant([" 7 ", "1e2", "-0", "x", "", "1,299"])).numpy()
    np.testing.assert_array_equal(numbers[:3], [7, 100, 0])
    assert np.isnan(numbers[3:]).all()


def test_small_catalog_by_hand():
    cases = {
        "": [1, 1, 1, 1],
        " \t": [1, 1, 1, 1],
        "brand:NIKE": [1, 0, 0, 0],
        "NOT brand:nike": [0, 1, 1, 1],  # a missing brand is not nike
        "brand:*": [1, 1, 0, 1],
        "-brand:*": [0, 0, 1, 0],
        'brand:("red tape" OR adidas)': [0, 1, 0, 1],
        "colour.base:black price:[* TO 15]": [1, 0, 0, 1],
        "colour.base:black AND price:[10 TO *]": [1, 0, 0, 0],
        "price:[20 TO 10]": [0, 0, 0, 0],
        "price:(-3 OR 20.5)": [0, 1, 0, 1],
        "rating:*": [1, 0, 1, 1],
        "brand:NA": [0, 0, 0, 0],  # a missing value matches nothing
        "brand:zzz": [0, 0, 0, 0],
        "NOT colour.base:(black OR white)": [0, 0, 1, 0],
    }
    np.testing.assert_array_equal(eager_mask(list(cases)).astype(int), list(cases.values()))
    for text, expected in cases.items():  # one at a time: the direct path
        np.testing.assert_array_equal(eager_mask([text])[0].astype(int), expected, err_msg=text)


def test_empty_batches_catalogs_and_column_lists(mask_function):
    keys, numbers = catalog_tensors(CATALOG)
    assert mask_function(tf.constant([], tf.string), keys, numbers).shape == (0, 4)
    for only_empty in ([""], ["", ""], [" ", "\t\n"]):  # no token at all, or no clause
        np.testing.assert_array_equal(mask_function(tf.constant(only_empty), keys, numbers),
                                      np.ones([len(only_empty), 4], bool))
        errors = filter_errors(tf.constant(only_empty), COLUMNS, KINDS)
        assert decoded(errors) == [""] * len(only_empty)
    empty = mask_function(tf.constant(["brand:nike", "", "price:[1 TO 2]"]), keys[:0], numbers[:0])
    assert empty.shape == (3, 0)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        mask_function(tf.constant(["brand:nike size:1"]), keys[:0], numbers[:0])
    assert "unknown filter field 'size'" in graph_message(error.value)
    np.testing.assert_array_equal(eager_mask(["", "  "], (), ()), np.ones([2, 4], bool))
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        eager_mask(["", "brand:nike"], (), ())
    assert "unknown filter field 'brand'; filterable fields: (none)" in graph_message(error.value)
    # Traced with unknown shapes, as a signature of an export without filterable columns is.
    no_columns = tf.function(lambda texts, k, n: filter_mask(texts, (), (), k, n),
                             input_signature=[tf.TensorSpec([None], tf.string),
                                              tf.TensorSpec([None, 0], tf.int64),
                                              tf.TensorSpec([None, 0], tf.float32)])
    np.testing.assert_array_equal(no_columns(tf.constant(["", " "]), tf.zeros([3, 0], tf.int64),
                                             tf.zeros([3, 0])), np.ones([2, 3], bool))


# --------------------------------------------------------------------------- saved model

FRESH_PROCESS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (RegexSplitWithOffsets)
assert not any(name.startswith("tfmmsearch") for name in sys.modules)
loaded = tf.saved_model.load(sys.argv[1])
out = {"mask": loaded.signatures["mask"](filters=tf.constant(json.loads(sys.argv[2])))["mask"]
       .numpy().astype(int).tolist()}
for bad in json.loads(sys.argv[3]):
    try:
        loaded.mask(tf.constant([bad]))
        out[bad] = "no error"
    except tf.errors.InvalidArgumentError as error:
        out[bad] = error.message.replace("\\\\'", "'")
print(json.dumps(out))
"""


def test_a_saved_model_filters_in_a_process_with_only_tensorflow_and_tf_text(tmp_path):
    keys, numbers = catalog_tensors(CATALOG)

    class Filtered(tf.Module):
        def __init__(self):
            super().__init__()
            self.keys = tf.Variable(keys, shape=[None, 2])
            self.numbers = tf.Variable(numbers, shape=[None, 2])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def mask(self, filters):
            return {"mask": filter_mask(filters, COLUMNS, KINDS, self.keys, self.numbers)}

    module = Filtered()
    tf.saved_model.save(module, str(tmp_path / "filtered"), signatures={"mask": module.mask})
    good = ["", "brand:(nike OR adidas)", "price:[* TO 15] -colour.base:white", "rating:(4 OR 5)"]
    bad = ["colour:red", "price:[1 TO cheap]", "brand:(nike"]
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "filtered"),
                             json.dumps(good), json.dumps(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["mask"] == eager_mask(good).astype(int).tolist()
    assert out["mask"] == [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 0, 1, 0]]
    assert "unknown filter field 'colour'" in out["colour:red"]
    assert "field 'price' is numeric: 'cheap' is not a number" in out["price:[1 TO cheap]"]
    assert "filter 'brand:(nike' is malformed at position 11" in out["brand:(nike"]
