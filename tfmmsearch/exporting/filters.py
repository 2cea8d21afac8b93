"""Search filters parsed and evaluated in graph: one filter string per query -> a [B, N] mask.

The serving index holds, for every product, the values of some *filterable* catalog columns,
each either categorical (strings) or numeric. A request carries one filter string per query;
`filter_mask` parses the whole batch in graph and returns the products each query may return.
Core TensorFlow ops plus TF Text's RegexSplitWithOffsets only, so stock TF Serving runs it
inside a SavedModel (the loading process needs `import tensorflow_text`, as for the tokenizers).

Filter syntax (Lucene-like)
---------------------------
::

    filter  := ws* [clause ((ws+ | ws+ "AND" ws+) clause)*] ws*
    clause  := ["NOT" ws+ | "-"] field ":" target
    target  := value | "(" ws* value (ws+ "OR" ws+ value)* ws* ")"
             | "[" ws* bound ws+ "TO" ws+ bound ws* "]"
    value   := word | quoted
    bound   := word                        (a number, or * for an open end)
    field   := [A-Za-z_][A-Za-z0-9_.]*
    word    := a run of characters other than whitespace ( ) [ ] " :
    quoted  := '"' characters '"'          (backslash escapes: \\" is a quote, \\\\ a backslash)
    ws      := the ASCII whitespace of tfmmsearch.contract.TEXT_WHITESPACE

- ``brand:nike`` keeps products whose brand is nike; ``brand:"Red Tape"`` quotes a value with
  spaces; ``brand:(nike OR adidas OR "Red Tape")`` keeps any of these values.
- ``price:[100 TO 500]`` is an inclusive range on a numeric field; either end may be ``*``
  (``price:[* TO 500]``). Numbers are as in `tfmmsearch.contract.NUMBER_PATTERN`. ``price:250``
  means ``price:[250 TO 250]``, and ``price:(250 OR 300)`` either. A range whose low end is
  above its high end matches nothing.
- ``field:*`` (an unquoted star) keeps the products that have a value for the field;
  ``"*"`` quoted is the literal value.
- ``NOT clause`` (or ``-clause``) negates one clause. Clauses joined by ``AND`` or just by
  whitespace must all hold. ``OR`` exists only inside one field's parentheses; there are no
  nested groups. An empty or whitespace-only filter keeps every product.
- Keywords (AND, OR, NOT, TO) are upper case and are keywords only where the grammar expects
  one: ``AND:x`` is a clause on a field named AND, ``brand:(OR OR x)`` the values "OR" and "x".
  Quote a value that reads like a keyword to be safe.
- There is no whitespace around ``:``: ``brand: nike`` is malformed.

Matching. Categorical values, stored and requested alike, go through `categorical_keys`:
stripped of whitespace and called missing as `tfmmsearch.contract.attribute_value_tensor` says,
lower-cased (UTF-8), then 62-bit fingerprints (`contract.fingerprint`), -1 for missing. Matching
is therefore case-insensitive. A missing stored value never matches ``field:value`` (nor
``field:*``) and so always matches ``NOT field:value``; a requested value that is itself
missing ("", "NA", "none", ...) or unknown to the catalog simply matches nothing. Numeric
values go through `numeric_values` (`contract.parse_number_tensor`, then float32, NaN when
missing); a missing value is in no range, and bounds are compared after the same float32
rounding (values beyond float32 are +-inf, and TensorFlow flushes those below its smallest
normal, about 1.2e-38, to 0). -0 equals 0.

Errors (InvalidArgumentError from `filter_mask`, the first bad filter of the batch, eager and in
graph alike: the Assert kernel raises it and C-escapes its text, so quotes read \\' there;
`filter_errors` returns the plain text per filter):

- a malformed filter: ``filter 'brand:(nike' is malformed at position 11 (0-based): expected
  OR or ')' after a value in the group, found the end of the filter``. The position counts
  characters (not bytes) from 0 and points at the first token that cannot continue a filter
  (or at the end).
- ``unknown filter field 'colour'; filterable fields: gender, article_type, price (in filter
  'colour:red')``.
- ``filter field 'brand' is categorical: a range [lo TO hi] needs a numeric field (in filter
  ...)``.
- ``filter field 'price' is numeric: 'cheap' is not a number (in filter ...)``.

How it runs. One regex (TF Text's RegexSplitWithOffsets) splits every filter into tokens; a
27-state automaton over token kinds (one `tf.scan` step per token, the whole batch at once)
validates the grammar and labels each token (field, value, bound, ...). Every value or range
becomes an interval of int64 keys: categorical keys as stored, numbers through an
order-preserving map of their float32 bits (exact; a 0 bound takes in -0.0; NaN lies outside
every interval). A batch with at most DIRECT_UNITS values and ranges (one query with a clause
or two) tests each against all N products directly. Otherwise, per column that some clause
names, the batch's interval ends are sorted, one binary search (`tf.searchsorted`) gives each
product a code, and a [codes, ceil(B / 8)] table of rejections, eight queries to a byte, is
gathered by that code; the packed rows become the [B, N] mask once at the end. Columns no
clause names cost nothing, and nothing is larger than [B, N] (no [B, N, values]).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import tensorflow as tf
import tensorflow_text as tf_text

from tfmmsearch.contract import (
    FILTER_FIELD_PATTERN,
    FILTER_KINDS,
    TEXT_WHITESPACE,
    attribute_value_tensor,
    fingerprint,
    parse_number_tensor,
)

CATEGORICAL, NUMERIC = FILTER_KINDS  # the kinds of contract.FILTER_KINDS, by name
MISSING_KEY = -1  # `categorical_keys` of a missing value; fingerprints are >= 0
_NOTHING_KEY = -2  # a requested value that is missing: no stored key equals it
_PRESENT_HIGH = 2**62  # above every fingerprint: `field:*` is [0, 2**62]

# --------------------------------------------------------------------------- tokens

_SPACE_CHARS = "".join(f"\\x{ord(c):02x}" for c in TEXT_WHITESPACE)
_SPACE = f"[{_SPACE_CHARS}]+"
_QUOTED = r'"(?:[^"\\]|\\(?s:.))*"'
_TOKEN = "|".join([_SPACE, r"[()\[\]:]", _QUOTED, r'"(?s:.*)', f'[^{_SPACE_CHARS}()\\[\\]":]+'])

# Token kinds (END pads every filter's token row).
_KIND_COUNT = 17
(END, SPACE, LPAREN, RPAREN, LBRACKET, RBRACKET, COLON, QUOTED, UNTERMINATED,
 AND, OR, NOT, TO, STAR, FIELD, NEGATED_FIELD, WORD) = range(_KIND_COUNT)
_LITERALS = {"(": LPAREN, ")": RPAREN, "[": LBRACKET, "]": RBRACKET, ":": COLON,
             "AND": AND, "OR": OR, "NOT": NOT, "TO": TO, "*": STAR}
_WORDS = (AND, OR, NOT, TO, STAR, FIELD, NEGATED_FIELD, WORD)  # kinds a value/bound may be

# --------------------------------------------------------------------------- the automaton

# States after a token; each comes with what may follow it (the syntax error's "expected ...").
_STATES = (
    ("DEAD", ""),
    ("START", "a clause such as field:value"),
    ("START_SPACE", "a clause such as field:value"),
    ("NOT_OR_FIELD", "whitespace and a clause after NOT"),  # NOT, or a field named NOT
    ("NOT_SPACE", "a field name after NOT"),
    ("OR_OR_FIELD", "':' after a field name (OR joins values inside one field's parentheses "
                    "only, as in field:(a OR b))"),
    ("FIELD", "':' right after the field name"),
    ("COLON", "a value, a quoted value, '(' or '[' after ':'"),
    ("CLAUSE", "whitespace between clauses"),
    ("CLAUSE_SPACE", "a clause, AND, or the end of the filter"),
    ("AND_OR_FIELD", "whitespace and a clause after AND"),  # AND, or a field named AND
    ("AND_SPACE", "a clause after AND"),
    ("GROUP", "a value in the group"),
    ("GROUP_SPACE", "a value in the group"),
    ("GROUP_VALUE", "OR or ')' after a value in the group"),
    ("GROUP_VALUE_SPACE", "OR or ')' after a value in the group"),
    ("GROUP_OR", "whitespace after OR"),
    ("GROUP_OR_SPACE", "a value after OR"),
    ("RANGE", "the lower bound of the range (a number or *)"),
    ("RANGE_SPACE", "the lower bound of the range (a number or *)"),
    ("LOW", "whitespace and TO after the lower bound"),
    ("LOW_SPACE", "TO after the lower bound"),
    ("TO_KEYWORD", "whitespace after TO"),
    ("TO_SPACE", "the upper bound of the range (a number or *)"),
    ("HIGH", "']' to close the range"),
    ("HIGH_SPACE", "']' to close the range"),
    ("ACCEPT", ""),
)
_STATE = {name: i for i, (name, _) in enumerate(_STATES)}


def _transitions() -> list[list[int]]:
    """The [state, token kind] -> next state table (0 = DEAD, which stays dead)."""
    s = _STATE
    clause_start = {FIELD: s["FIELD"], NEGATED_FIELD: s["FIELD"], OR: s["OR_OR_FIELD"],
                    TO: s["FIELD"], AND: s["FIELD"], NOT: s["NOT_OR_FIELD"]}
    values = {kind: s["CLAUSE"] for kind in _WORDS + (QUOTED,)}
    rules = {
        "START": {SPACE: s["START_SPACE"], END: s["ACCEPT"], **clause_start},
        "START_SPACE": {END: s["ACCEPT"], **clause_start},
        "NOT_OR_FIELD": {SPACE: s["NOT_SPACE"], COLON: s["COLON"]},
        "NOT_SPACE": {kind: s["FIELD"] for kind in (FIELD, OR, TO, AND, NOT)},
        "OR_OR_FIELD": {COLON: s["COLON"]},
        "FIELD": {COLON: s["COLON"]},
        "COLON": {**values, LPAREN: s["GROUP"], LBRACKET: s["RANGE"]},
        "CLAUSE": {SPACE: s["CLAUSE_SPACE"], END: s["ACCEPT"]},
        "CLAUSE_SPACE": {END: s["ACCEPT"], **clause_start, AND: s["AND_OR_FIELD"]},
        "AND_OR_FIELD": {SPACE: s["AND_SPACE"], COLON: s["COLON"]},
        "AND_SPACE": clause_start,
        "GROUP": {SPACE: s["GROUP_SPACE"], **{k: s["GROUP_VALUE"] for k in values}},
        "GROUP_SPACE": {k: s["GROUP_VALUE"] for k in values},
        "GROUP_VALUE": {SPACE: s["GROUP_VALUE_SPACE"], RPAREN: s["CLAUSE"]},
        "GROUP_VALUE_SPACE": {OR: s["GROUP_OR"], RPAREN: s["CLAUSE"]},
        "GROUP_OR": {SPACE: s["GROUP_OR_SPACE"]},
        "GROUP_OR_SPACE": {k: s["GROUP_VALUE"] for k in values},
        "RANGE": {SPACE: s["RANGE_SPACE"], **{k: s["LOW"] for k in _WORDS}},
        "RANGE_SPACE": {k: s["LOW"] for k in _WORDS},
        "LOW": {SPACE: s["LOW_SPACE"]},
        "LOW_SPACE": {TO: s["TO_KEYWORD"]},
        "TO_KEYWORD": {SPACE: s["TO_SPACE"]},
        "TO_SPACE": {k: s["HIGH"] for k in _WORDS},
        "HIGH": {SPACE: s["HIGH_SPACE"], RBRACKET: s["CLAUSE"]},
        "HIGH_SPACE": {RBRACKET: s["CLAUSE"]},
        "ACCEPT": {END: s["ACCEPT"]},
    }
    table = [[0] * _KIND_COUNT for _ in _STATES]
    for state, moves in rules.items():
        for kind, target in moves.items():
            table[s[state]][kind] = target
    return table


_TABLE = _transitions()

# --------------------------------------------------------------------------- item values


def categorical_keys(values: tf.Tensor) -> tf.Tensor:
    """Matching keys of categorical values (stored or requested), any shape -> int64.

    Stripped as `contract.attribute_value_tensor` does, lower-cased (UTF-8), fingerprinted
    (`contract.fingerprint`); MISSING_KEY (-1) where the value is missing."""
    stripped, present = attribute_value_tensor(tf.convert_to_tensor(values, tf.string))
    keys = fingerprint(tf.strings.lower(stripped, encoding="utf-8"))
    return tf.where(present, keys, tf.constant(MISSING_KEY, tf.int64))


def numeric_values(values: tf.Tensor) -> tf.Tensor:
    """Numeric values (stored or requested), any shape -> float32, NaN where missing."""
    numbers, present = parse_number_tensor(tf.convert_to_tensor(values, tf.string))
    return tf.where(present, tf.cast(numbers, tf.float32), float("nan"))


def _order_keys(numbers: tf.Tensor) -> tf.Tensor:
    """int64 keys in the order of float32 numbers: exact (no float compare, so no flushing of
    denormals), -0.0 -> -1 just below 0.0 -> 0, and NaNs beyond the keys of -inf and +inf."""
    bits = tf.bitcast(numbers, tf.int32)
    return tf.cast(tf.bitwise.bitwise_xor(
        bits, tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 31), 0x7FFFFFFF)), tf.int64)


def _bound_keys(low, high, low_open, high_open):
    """Order-key interval of numeric bounds: a 0 bound takes in -0.0 and 0.0 alike, an open end
    is -inf / +inf (so NaN is in no interval)."""
    low_key, high_key = _order_keys(low), _order_keys(high)
    low_key = tf.where((low_key == 0) | (low_key == -1), tf.constant(-1, tf.int64), low_key)
    high_key = tf.where((high_key == 0) | (high_key == -1), tf.constant(0, tf.int64), high_key)
    infinity = _order_keys(tf.constant([-float("inf"), float("inf")]))
    return tf.where(low_open, infinity[0], low_key), tf.where(high_open, infinity[1], high_key)


# --------------------------------------------------------------------------- parsing


class _Clauses(NamedTuple):
    """A parsed batch: M clauses and V value units (a value, or a range), flat over queries.

    Each unit is an interval [low, high] of integer keys (see `_stored_keys`): [key, key] for a
    categorical value, [0, 2**62] for `*`; the bounds' order keys for a numeric range."""

    errors: tf.Tensor       # string [B], "" where the filter is fine
    row: tf.Tensor          # int32 [M] the query of each clause
    column: tf.Tensor       # int32 [M] index into `columns`, -1 if unknown
    negated: tf.Tensor      # bool [M]
    unit_clause: tf.Tensor  # int32 [V]
    low: tf.Tensor          # int64 [V]
    high: tf.Tensor         # int64 [V]


def _check_columns(columns: Sequence[str], kinds: Sequence[str]) -> None:
    if len(columns) != len(kinds):
        raise ValueError(f"{len(columns)} filter columns but {len(kinds)} kinds")
    for column, kind in zip(columns, kinds):
        if kind not in FILTER_KINDS:
            raise ValueError(f"filter column {column!r}: kind {kind!r} is not one of "
                             f"{FILTER_KINDS}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"duplicate filter columns in {tuple(columns)}")


def _token_kinds(tokens: tf.Tensor) -> tf.Tensor:
    """Kind of each token (string [T] -> int32 [T]); literals win over the patterns."""
    kind = tf.fill(tf.shape(tokens), WORD)
    for pattern, pattern_kind in ((FILTER_FIELD_PATTERN, FIELD), ("-" + FILTER_FIELD_PATTERN, NEGATED_FIELD),
                                  (_SPACE, SPACE), ('"(?s:.*)', UNTERMINATED), (_QUOTED, QUOTED)):
        kind = tf.where(tf.strings.regex_full_match(tokens, pattern), pattern_kind, kind)
    literal = tf.equal(tokens[:, None], tf.constant(list(_LITERALS))[None, :])
    literal_kind = tf.gather(tf.constant(list(_LITERALS.values()), tf.int32),
                             tf.argmax(tf.cast(literal, tf.int32), axis=1, output_type=tf.int32))
    return tf.where(tf.reduce_any(literal, axis=1), literal_kind, kind)


def _run_automaton(kinds: tf.Tensor) -> tf.Tensor:
    """int32 [B, L] token kinds (END-padded) -> the state after each token, [B, L]."""
    table = tf.constant(_TABLE, tf.int32)
    width = len(_TABLE[0])

    def step(state, kind):
        return tf.gather(tf.reshape(table, [-1]), state * width + kind)

    start = tf.fill(tf.shape(kinds)[:1], _STATE["START"])
    return tf.transpose(tf.scan(step, tf.transpose(kinds), initializer=start))


def _unquote(tokens: tf.Tensor, kinds: tf.Tensor) -> tf.Tensor:
    inner = tf.strings.regex_replace(tokens, r'(?s)^"(.*)"$', r"\1")
    return tf.where(kinds == QUOTED, tf.strings.regex_replace(inner, r"(?s)\\(.)", r"\1"), tokens)


def _first_per_filter(count, rows, offsets, messages) -> tf.Tensor:
    """string [count]: per filter the message at the smallest offset, "" where none."""
    first = tf.math.unsorted_segment_min(offsets, rows, count)
    pick = tf.equal(offsets, tf.gather(first, rows))
    return tf.tensor_scatter_nd_update(tf.fill([count], ""), tf.boolean_mask(rows, pick)[:, None],
                                       tf.boolean_mask(messages, pick))


def _syntax_errors(filters, tokens, starts, kinds, states) -> tf.Tensor:
    """string [B]: the malformed-filter message of each filter whose automaton died."""
    dead = tf.argmax(tf.cast(states == _STATE["DEAD"], tf.int32), axis=1, output_type=tf.int32)
    before = tf.concat([tf.fill(tf.shape(states)[:1], _STATE["START"])[:, None], states], axis=1)
    expected = tf.gather(tf.constant([text for _, text in _STATES]),
                         tf.gather(before, dead, batch_dims=1))
    kind = tf.gather(kinds, dead, batch_dims=1)
    token = tf.gather(tf.concat([tokens.to_tensor(""), tf.fill([tf.shape(kinds)[0], 1], "")], 1),
                      dead, batch_dims=1)
    offsets = tf.cast(starts.to_tensor(0), tf.int32)
    start = tf.gather(tf.concat([offsets, tf.zeros([tf.shape(kinds)[0], 1], tf.int32)], 1), dead,
                      batch_dims=1)
    byte = tf.where(kind == END, tf.strings.length(filters), start)
    prefix = tf.strings.substr(filters, tf.zeros_like(byte), byte)  # bytes before the token
    position = tf.strings.length(prefix, unit="UTF8_CHAR")
    found = tf.where(kind == END, "the end of the filter",
                     tf.where(kind == SPACE, "whitespace",
                              tf.where(kind == UNTERMINATED, "an unterminated quote",
                                       tf.strings.join(["'", token, "'"]))))
    return tf.strings.join(["filter '", filters, "' is malformed at position ",
                            tf.strings.as_string(position), " (0-based): expected ", expected,
                            ", found ", found])


def _parse(filters: tf.Tensor, columns: Sequence[str], kinds: Sequence[str]) -> _Clauses:
    """Tokens -> automaton -> the clauses and value units of the well-formed filters, plus the
    error message of every filter (syntax first, then the leftmost semantic problem)."""
    tokens, starts, _ = tf_text.regex_split_with_offsets(filters, _TOKEN, _TOKEN)
    kind = tokens.with_flat_values(_token_kinds(tokens.flat_values))
    count = tf.shape(filters)[0]
    padded = tf.concat([kind.to_tensor(END), tf.fill([count, 1], END)], axis=1)
    states = _run_automaton(padded)  # [B, L + 1]
    valid = tf.equal(states[:, -1], _STATE["ACCEPT"])
    syntax = _syntax_errors(filters, tokens, starts, padded, states)

    # Flat per-token views (valid filters only: a dead filter's labels mean nothing).
    lengths = tokens.row_lengths()
    row = tf.cast(tokens.value_rowids(), tf.int32)
    keep = tf.gather(valid, row)
    text, kind, start = tokens.flat_values, kind.flat_values, starts.flat_values
    state = tf.RaggedTensor.from_tensor(states[:, :-1], lengths=lengths).flat_values
    before = tf.RaggedTensor.from_tensor(
        tf.concat([tf.fill([count, 1], _STATE["START"]), states[:, :-2]], axis=1),
        lengths=lengths).flat_values

    # Every clause has exactly one colon, right after its field.
    colon = keep & tf.equal(kind, COLON)
    field_at = tf.cast(tf.where(colon)[:, 0], tf.int32) - 1
    clause_of_token = tf.cumsum(tf.cast(colon, tf.int32)) - 1
    field = tf.strings.regex_replace(tf.gather(text, field_at), "^-", "")
    clause_row = tf.gather(row, field_at)
    negated = (tf.equal(tf.gather(kind, field_at), NEGATED_FIELD)
               | tf.equal(tf.gather(before, field_at), _STATE["NOT_SPACE"]))
    column, numeric = _columns_of(field, columns, kinds)
    clause_filter = tf.gather(filters, clause_row)

    # Value units: each value (alone or in a group) is [v TO v]; each range is one unit.
    is_value = keep & ((tf.equal(state, _STATE["CLAUSE"]) & tf.equal(before, _STATE["COLON"]))
                       | tf.equal(state, _STATE["GROUP_VALUE"]))
    at_value = tf.where(is_value)[:, 0]
    at_low = tf.where(keep & tf.equal(state, _STATE["LOW"]))[:, 0]
    at_high = tf.where(keep & tf.equal(state, _STATE["HIGH"]))[:, 0]
    value = _unquote(tf.gather(text, at_value), tf.gather(kind, at_value))
    value_star = tf.equal(tf.gather(kind, at_value), STAR)
    low_text = tf.concat([value, tf.gather(text, at_low)], 0)
    high_text = tf.concat([value, tf.gather(text, at_high)], 0)
    low_open = tf.concat([value_star, tf.equal(tf.gather(kind, at_low), STAR)], 0)
    high_open = tf.concat([value_star, tf.equal(tf.gather(kind, at_high), STAR)], 0)
    low_start = tf.gather(start, tf.concat([at_value, at_low], 0))
    high_start = tf.gather(start, tf.concat([at_value, at_high], 0))
    unit_clause = tf.gather(clause_of_token, tf.concat([at_value, at_low], 0))
    range_clause = tf.gather(clause_of_token, at_low)
    is_range = tf.math.unsorted_segment_max(tf.ones_like(range_clause), range_clause,
                                            tf.size(field)) > 0
    low, high = numeric_values(low_text), numeric_values(high_text)

    # Errors of well-formed filters, first one (leftmost) per filter.
    field_start = tf.gather(start, field_at)
    in_filter = tf.strings.join([" (in filter '", clause_filter, "')"])
    unknown = tf.strings.join(["unknown filter field '", field, "'; filterable fields: ",
                               ", ".join(columns) or "(none)", in_filter])
    categorical_range = tf.strings.join(["filter field '", field, "' is categorical: a range "
                                         "[lo TO hi] needs a numeric field", in_filter])
    unit_numeric = tf.gather(numeric, unit_clause)
    bad_low = unit_numeric & ~low_open & tf.math.is_nan(low)
    bad_high = unit_numeric & ~high_open & tf.math.is_nan(high)
    not_a_number = tf.strings.join(["filter field '", tf.gather(field, unit_clause),
                                    "' is numeric: '", tf.where(bad_low, low_text, high_text),
                                    "' is not a number", tf.gather(in_filter, unit_clause)])
    problems = [(column < 0, clause_row, field_start, unknown),
                ((column >= 0) & ~numeric & is_range, clause_row, field_start, categorical_range),
                (bad_low | bad_high, tf.gather(clause_row, unit_clause),
                 tf.where(bad_low, low_start, high_start), not_a_number)]
    found = [[tf.boolean_mask(part, bad) for part in parts] for bad, *parts in problems]
    semantic = _first_per_filter(count, *(tf.concat(list(parts), 0) for parts in zip(*found)))

    # Each unit as an interval of integer keys (see `_stored_keys`).
    key = categorical_keys(low_text)
    key = tf.where(tf.equal(key, MISSING_KEY), tf.constant(_NOTHING_KEY, tf.int64), key)
    categorical_low = tf.where(low_open, tf.constant(0, tf.int64), key)
    categorical_high = tf.where(high_open, tf.constant(_PRESENT_HIGH, tf.int64), key)
    numeric_low, numeric_high = _bound_keys(low, high, low_open, high_open)
    return _Clauses(
        errors=tf.where(valid, semantic, syntax), row=clause_row, column=column,
        negated=negated, unit_clause=unit_clause,
        low=tf.where(unit_numeric, numeric_low, categorical_low),
        high=tf.where(unit_numeric, numeric_high, categorical_high))


def _columns_of(field, columns, kinds):
    """Index in `columns` (-1 unknown) and whether it is numeric, per field name [M]."""
    if not columns:
        return tf.fill(tf.shape(field), -1), tf.zeros(tf.shape(field), tf.bool)
    hit = tf.equal(field[:, None], tf.constant(list(columns), tf.string)[None, :])
    column = tf.where(tf.reduce_any(hit, axis=1),
                      tf.argmax(tf.cast(hit, tf.int32), axis=1, output_type=tf.int32), -1)
    numeric = tf.gather(tf.constant([kind == NUMERIC for kind in kinds]), tf.maximum(column, 0))
    return column, numeric & (column >= 0)


def filter_errors(filters: tf.Tensor, columns: Sequence[str], kinds: Sequence[str]) -> tf.Tensor:
    """string [B]: what is wrong with each filter ("" where it is fine), as `filter_mask`
    would raise it. Lets a caller check requests without evaluating them."""
    _check_columns(columns, kinds)
    return _parse(tf.convert_to_tensor(filters, tf.string), tuple(columns), tuple(kinds)).errors


# --------------------------------------------------------------------------- evaluation

# Up to this many value units (values and ranges) in a batch, each is tested against every
# product directly (a few elementwise passes over N each); beyond it, per-column codes and
# packed rejection tables (`_coded_mask`), whose cost hardly grows with the number of values.
DIRECT_UNITS = 4


def _stored_keys(column: int, kinds: Sequence[str], keys: tf.Tensor, numbers: tf.Tensor):
    """int64 [N] keys of `columns[column]`: categorical keys, or the numbers' order keys."""
    local = kinds[:column].count(kinds[column])
    if kinds[column] == CATEGORICAL:
        return keys[:, local]
    return _order_keys(numbers[:, local])


def _direct_mask(clauses: _Clauses, kinds, keys, numbers, count, size) -> tf.Tensor:
    """bool [B, N]: every unit an interval test over all N, then OR per clause, AND per query."""
    unit_column = tf.gather(clauses.column, clauses.unit_clause)
    hits, owners = [], []
    for column in range(len(kinds)):
        on = tf.equal(unit_column, column)
        low, high = tf.boolean_mask(clauses.low, on), tf.boolean_mask(clauses.high, on)

        def inside(column=column, low=low, high=high):
            stored = _stored_keys(column, kinds, keys, numbers)[None, :]
            return (stored >= low[:, None]) & (stored <= high[:, None])

        hits.append(tf.cond(tf.reduce_any(on), inside, lambda: tf.zeros([0, size], tf.bool)))
        owners.append(tf.boolean_mask(clauses.unit_clause, on))
    hit = tf.math.unsorted_segment_max(tf.cast(tf.concat(hits, 0), tf.int8), tf.concat(owners, 0),
                                       tf.size(clauses.row)) > 0  # [M, N]: any unit of the clause
    accept = tf.cast(tf.not_equal(hit, clauses.negated[:, None]), tf.int8)
    return tf.math.unsorted_segment_min(accept, clauses.row, count) > 0  # no clause: int8 max


def _sorted_unique(values: tf.Tensor) -> tf.Tensor:
    """The distinct values [K], ascending."""
    ordered = tf.sort(values)
    fresh = tf.concat([tf.ones_like(ordered[:1], tf.bool), ordered[1:] != ordered[:-1]], 0)
    return tf.boolean_mask(ordered, fresh)


def _column_rejects(clauses: _Clauses, column: int, stored: tf.Tensor,
                    count: tf.Tensor) -> tf.Tensor:
    """uint8 [N, ceil(B / 8)]: bit b % 8 of byte b // 8 is set where some clause of query b on
    `column` rejects the product.

    Codes: with S the sorted distinct interval ends of this column's units, an integer key x has
    #{e in S + (S + 1): e <= x} = 2i + 1 if x = S_i and 2i + 2 if S_i < x < S_{i+1}, so one
    binary search gives every product a code, and a unit [S_i, S_j] covers codes [2i+1, 2j+1]."""
    on = tf.equal(clauses.column, column)
    local = tf.cumsum(tf.cast(on, tf.int32)) - 1  # clause -> index among this column's clauses
    unit_on = tf.gather(on, clauses.unit_clause)
    unit = tf.boolean_mask(tf.gather(local, clauses.unit_clause), unit_on)
    low, high = tf.boolean_mask(clauses.low, unit_on), tf.boolean_mask(clauses.high, unit_on)
    ends = _sorted_unique(tf.concat([low, high], 0))
    code = tf.searchsorted(tf.sort(tf.concat([ends, ends + 1], 0)), stored, side="right")
    start = 2 * tf.searchsorted(ends, low) + 1
    end = 2 * tf.searchsorted(ends, high) + 1
    width = 2 * tf.size(ends) + 1
    # Which codes each clause covers: +1 at start, -1 past end, running sum (units may overlap).
    nonempty = tf.concat([start <= end] * 2, 0)
    offset = unit * (width + 1)
    delta = tf.math.unsorted_segment_sum(
        tf.concat([tf.ones_like(start), -tf.ones_like(start)], 0)[nonempty],
        tf.concat([offset + start, offset + end + 1], 0)[nonempty],
        tf.reduce_sum(tf.cast(on, tf.int32)) * (width + 1))
    covered = tf.cumsum(tf.reshape(delta, [-1, width + 1]), axis=1)[:, :width] > 0
    rejects = tf.equal(covered, tf.boolean_mask(clauses.negated, on)[:, None])  # not accepted
    per_query = tf.math.unsorted_segment_max(
        tf.cast(rejects, tf.int32), tf.boolean_mask(clauses.row, on), count) > 0  # [B, codes]
    # Eight queries per byte: [B, codes] -> [codes, ceil(B / 8)], then one row per product.
    groups = (count + 7) // 8
    padded = tf.pad(tf.cast(per_query, tf.int32), [[0, 8 * groups - count], [0, 0]])
    bits = tf.bitwise.left_shift(1, tf.range(8))[None, :, None]
    table = tf.reduce_sum(tf.reshape(padded, [groups, 8, width]) * bits, axis=1)
    return tf.gather(tf.transpose(tf.cast(table, tf.uint8)), code)


def _coded_mask(clauses: _Clauses, kinds, keys, numbers, count, size) -> tf.Tensor:
    """bool [B, N]: per column that some clause names, one binary search codes each product and
    a [codes, B / 8] table of packed rejections is gathered by that code."""
    groups = (count + 7) // 8
    # Columns are independent (they may run in parallel); the ones no clause names cost nothing.
    used = [tf.reduce_any(tf.equal(clauses.column, column)) for column in range(len(kinds))]
    parts = [tf.cond(used[column],
                     lambda c=column: _column_rejects(
                         clauses, c, _stored_keys(c, kinds, keys, numbers), count),
                     lambda: tf.zeros([0, groups], tf.uint8))
             for column in range(len(kinds))]
    rejected = tf.zeros([size, groups], tf.uint8)
    for column_used, part in zip(used, parts):
        rejected = tf.cond(column_used, lambda r=rejected, p=part: r | p, lambda r=rejected: r)
    queries = tf.range(count)
    rows = tf.gather(tf.transpose(rejected), queries // 8)  # [B, N]
    bit = tf.cast(tf.bitwise.left_shift(1, queries % 8), tf.uint8)[:, None]
    return tf.equal(tf.bitwise.bitwise_and(rows, bit), 0)


def filter_mask(filters: tf.Tensor, columns: Sequence[str], kinds: Sequence[str],
                keys: tf.Tensor, numbers: tf.Tensor) -> tf.Tensor:
    """bool [B, N]: which of N products each of B filters keeps (see the module docstring).

    filters: string [B], one filter per query ("" keeps everything).
    columns, kinds: the filterable columns in order and their kinds (FILTER_KINDS).
    keys: int64 [N, Fc], `categorical_keys` of the categorical columns, in their order.
    numbers: float32 [N, Fn], `numeric_values` of the numeric columns, in their order.
    Raises InvalidArgumentError (in graph: at run time) naming the first bad filter.
    """
    columns, kinds = tuple(columns), tuple(kinds)
    _check_columns(columns, kinds)
    filters = tf.convert_to_tensor(filters, tf.string)
    keys = tf.convert_to_tensor(keys, tf.int64)
    numbers = tf.convert_to_tensor(numbers, tf.float32)
    filters.shape.assert_has_rank(1)
    for name, matrix, kind in (("keys", keys, CATEGORICAL), ("numbers", numbers, NUMERIC)):
        width = kinds.count(kind)
        if not matrix.shape.is_compatible_with([None, width]):
            raise ValueError(f"{name} must be [N, {width}] ({kind} columns), not {matrix.shape}")
    clauses = _parse(filters, columns, kinds)
    bad = tf.not_equal(clauses.errors, "")
    # The Assert kernel in eager mode too (tf.debugging.Assert would word it in Python).
    check = tf.raw_ops.Assert(
        condition=tf.logical_not(tf.reduce_any(bad)),
        data=[tf.strings.reduce_join(tf.boolean_mask(clauses.errors, bad)[:1])])
    size = tf.shape(keys)[0]
    with tf.control_dependencies([check, tf.debugging.assert_equal(
            size, tf.shape(numbers)[0], message="keys and numbers hold different product counts")]):
        count = tf.identity(tf.shape(filters)[0])
    if not kinds:  # no filterable column: the check above refused every non-empty filter
        return tf.ones([count, size], tf.bool)
    args = (clauses, kinds, keys, numbers, count, size)
    return tf.cond(
        tf.size(clauses.row) > 0,
        lambda: tf.cond(tf.size(clauses.unit_clause) <= DIRECT_UNITS,
                        lambda: _direct_mask(*args), lambda: _coded_mask(*args)),
        lambda: tf.ones([count, size], tf.bool))
