"""Server-side parser for the SOQL subset the sandbox answers (not the client's query builder).

Grammar::

    SELECT COUNT() | item [, item]* FROM Object [WHERE cond] [GROUP BY group [, group]*]
        [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST] [, ...]] [LIMIT n] [OFFSET n]
    item := field | DAY_ONLY(field) | COUNT(field) ; group := field | DAY_ONLY(field)
    cond := term [OR term]* ; term := factor [AND factor]* ; factor := [NOT] (cond) | comparison
    comparison := field (= | != | <> | < | <= | > | >=) literal | field [NOT] IN (literal, ...)

An aggregate query (GROUP BY, or COUNT(field)) answers one AggregateResult per group, its function
columns named expr0, expr1, ... in SELECT order, as Salesforce names unaliased ones; DAY_ONLY of a
dateTime is its UTC date (date functions convert to the user's zone only inside convertTimezone()).

Literals: 'quoted strings', numbers, true/false, null, dates 2026-11-20 and datetimes
2026-11-20T00:00:00Z / 2026-11-20T00:00:00.000+0000. Errors carry Salesforce's error codes and
messages (MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE) so clients can be tested against them.

Datetime values are compared as strings in Salesforce's own fixed-width UTC form
(``2026-11-20T13:45:00.000+0000``), which orders exactly like the instants they denote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]
_T = TypeVar("_T")

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"select", "from", "where", "and", "or", "not", "in", "group", "order", "by", "limit", "offset"}
_FUNCTIONS = {"day_only": "DAY_ONLY", "count": "COUNT"}
_UNGROUPABLE = {"datetime", "textarea", "base64"}  # group a dateTime by a date function instead
_NUMERIC = {"int", "double", "currency", "percent"}


class FieldInfo(Protocol):
    """What binding needs to know of a field (sf_data.Field provides it)."""

    type: str  # describe type: datetime, date, boolean, int, double, currency, string, ...
    filterable: bool
    sortable: bool


class SoqlError(Exception):
    """A query Salesforce would refuse with HTTP 400 and ``errorCode``."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str  # = != < <= > >= in notin
    value: Any  # normalised literal; a tuple for IN
    pos: int


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or | not
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Item:
    """A SELECT or GROUP BY item: a field, or a function of one."""

    field: str
    function: str | None = None  # DAY_ONLY | COUNT


@dataclass
class Query:
    """A parsed and (after :func:`bind`) validated query; field names become canonical."""

    text: str
    sobject: str
    fields: list[str]
    is_count: bool
    where: Comparison | BoolOp | None
    order: list[tuple[str, bool]]  # (field, descending)
    limit: int | None
    offset: int
    positions: dict[str, int] = field(default_factory=dict)  # where names appear, for error carets
    predicate: Predicate | None = None
    items: list[Item] = field(default_factory=list)  # SELECT items, functions included
    group_by: list[Item] = field(default_factory=list)

    @property
    def is_aggregate(self) -> bool:
        return bool(self.group_by) or any(item.function == "COUNT" for item in self.items)

    def conjuncts(self) -> tuple[list[Comparison], bool]:
        """Comparisons every result must satisfy (the top-level AND), and whether they are the whole
        WHERE clause (no OR / NOT at the top), for index range narrowing."""
        out: list[Comparison] = []
        pure = True
        stack = [self.where] if self.where is not None else []
        while stack:
            node = stack.pop()
            if isinstance(node, Comparison):
                out.append(node)
            elif node.op == "and":
                stack.extend(node.parts)
            else:
                pure = False
        return out, pure


def _error_text(text: str, pos: int, message: str) -> str:
    """Salesforce's message layout: the query, a caret, the row/column, then the reason."""
    return f"\n{text}\n{' ' * pos}^\nERROR at Row:1:Column:{pos + 1}\n{message}"


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            start = len(text) - len(text[pos:].lstrip())
            raise SoqlError("MALFORMED_QUERY", _error_text(text, start, f"unexpected token: '{text[start]}'"))
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        pos = match.end()
    tokens.append(Token("eof", "<EOF>", len(text)))
    return tokens


def normalize_datetime(literal: str) -> str:
    """Any SOQL datetime literal → ``YYYY-MM-DDTHH:MM:SS.fff+0000`` in UTC."""
    value = datetime.fromisoformat(literal.replace("Z", "+00:00")).astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}+0000"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.positions: dict[str, int] = {}

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, token: Token) -> SoqlError:
        message = f"unexpected token: '{token.text}'"
        return SoqlError("MALFORMED_QUERY", _error_text(self.text, token.pos, message))

    def is_word(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "word" and token.text.lower() in words

    def expect_word(self, word: str) -> Token:
        if not self.is_word(word):
            raise self.fail(self.peek())
        return self.next()

    def expect_punct(self, char: str) -> None:
        token = self.next()
        if token.text != char:
            raise self.fail(token)

    def name(self) -> str:
        token = self.next()
        if token.kind != "word" or token.text.lower() in _KEYWORDS:
            raise self.fail(token)
        self.positions.setdefault(token.text, token.pos)
        return token.text

    def parse(self) -> Query:
        self.expect_word("select")
        fields: list[str] = []
        is_count = False
        if self.is_word("count") and [t.text for t in self.tokens[self.i + 1 : self.i + 3]] == ["(", ")"]:
            self.i += 1
            self.expect_punct("(")
            self.expect_punct(")")
            is_count = True
        else:
            items = self.comma_list(self.item)
            fields = [item.field for item in items]
        self.expect_word("from")
        sobject = self.name()
        where = None
        if self.is_word("where"):
            self.next()
            where = self.disjunction()
        group_by: list[Item] = []
        if self.is_word("group"):
            self.next()
            self.expect_word("by")
            group_by = self.comma_list(self.item)
        order: list[tuple[str, bool]] = []
        if self.is_word("order"):
            self.next()
            self.expect_word("by")
            order = self.comma_list(self.order_item)
        limit = self.int_clause("limit")
        offset = self.int_clause("offset") or 0
        if self.peek().kind != "eof":
            raise self.fail(self.peek())
        query = Query(self.text, sobject, fields, is_count, where, order, limit, offset, self.positions)
        if not is_count:
            query.items, query.group_by = items, group_by
        return query

    def item(self) -> Item:
        """``field`` or ``FUNCTION(field)``."""
        token = self.peek()
        function = _FUNCTIONS.get(token.text.lower()) if token.kind == "word" else None
        if function is None or self.tokens[self.i + 1].text != "(":
            return Item(self.name())
        self.next()
        self.expect_punct("(")
        name = self.name()
        self.expect_punct(")")
        return Item(name, function)

    def comma_list(self, item: Callable[[], _T]) -> list[_T]:
        """``item [, item]*``."""
        items = [item()]
        while self.peek().text == ",":
            self.next()
            items.append(item())
        return items

    def int_clause(self, word: str) -> int | None:
        if not self.is_word(word):
            return None
        self.next()
        token = self.next()
        if token.kind != "number" or not token.text.isdigit():
            raise self.fail(token)
        return int(token.text)

    def order_item(self) -> tuple[str, bool]:
        name = self.name()
        descending = False
        if self.is_word("asc", "desc"):
            descending = self.next().text.lower() == "desc"
        if self.is_word("nulls"):
            self.next()
            if not self.is_word("first", "last"):
                raise self.fail(self.peek())
            self.next()
        return name, descending

    def disjunction(self) -> Comparison | BoolOp:
        parts = [self.conjunction()]
        while self.is_word("or"):
            self.next()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def conjunction(self) -> Comparison | BoolOp:
        parts = [self.factor()]
        while self.is_word("and"):
            self.next()
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def factor(self) -> Comparison | BoolOp:
        if self.is_word("not"):
            self.next()
            return BoolOp("not", (self.factor(),))
        if self.peek().text == "(":
            self.next()
            inner = self.disjunction()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        start = self.peek()
        name = self.name()
        if self.is_word("not", "in"):
            negate = self.next().text.lower() == "not"
            if negate:
                self.expect_word("in")
            self.expect_punct("(")
            values = self.comma_list(self.literal)
            self.expect_punct(")")
            return Comparison(name, "notin" if negate else "in", tuple(values), start.pos)
        op = self.next()
        if op.kind != "op":
            raise self.fail(op)
        return Comparison(name, "!=" if op.text == "<>" else op.text, self.literal(), start.pos)

    def literal(self) -> Token:
        token = self.next()
        if token.kind in ("string", "datetime", "date", "number") or (
            token.kind == "word" and token.text.lower() in ("true", "false", "null")
        ):
            return token
        raise self.fail(token)


def parse(text: str) -> Query:
    """Parse ``text``; raises :class:`SoqlError` (MALFORMED_QUERY) on syntax errors."""
    return _Parser(text.strip()).parse()


def _no_such_column(query: Query, name: str) -> SoqlError:
    return SoqlError(
        "INVALID_FIELD",
        _error_text(
            query.text,
            query.positions.get(name, 0),
            f"No such column '{name}' on entity '{query.sobject}'. If you are attempting to use a custom "
            "field, be sure to append the '__c' after the custom field name. Please reference your WSDL "
            "or the describe call for the appropriate names.",
        ),
    )


def _typed_literal(token: Token, field_name: str, field_type: str, text: str) -> Any:
    """Convert a literal token to the field's value space, refusing mismatches like Salesforce."""
    if token.kind == "word" and token.text.lower() == "null":
        return None
    expected = {"datetime": "dateTime", "date": "date", "boolean": "boolean"}.get(field_type)
    if field_type in _NUMERIC:
        expected = "number"
    ok = {
        "dateTime": token.kind == "datetime",
        "date": token.kind == "date",
        "boolean": token.kind == "word" and token.text.lower() in ("true", "false"),
        "number": token.kind == "number",
    }.get(expected or "", token.kind == "string")
    if not ok:
        quoted = " and should not be enclosed in quotes" if token.kind == "string" else ""
        raise SoqlError(
            "INVALID_FIELD",
            _error_text(
                text,
                token.pos,
                f"value of filter criterion for field '{field_name}' must be of type "
                f"{expected or 'string'}{quoted}",
            ),
        )
    if token.kind == "datetime":
        return normalize_datetime(token.text)
    if token.kind == "number":
        return float(token.text) if "." in token.text else int(token.text)
    if expected == "boolean":
        return token.text.lower() == "true"
    if token.kind == "string":
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])
    return token.text


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if left is None or right is None:
        return False
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


def _compile(node: Comparison | BoolOp) -> Predicate:
    if isinstance(node, BoolOp):
        parts = [_compile(part) for part in node.parts]
        if node.op == "and":
            return lambda rec: all(part(rec) for part in parts)
        if node.op == "or":
            return lambda rec: any(part(rec) for part in parts)
        return lambda rec: not parts[0](rec)
    name, op, value = node.field, node.op, node.value
    if op == "in":
        return lambda rec: rec[name] in value
    if op == "notin":
        return lambda rec: rec[name] not in value
    return lambda rec: _compare(op, rec[name], value)


def compile_all(comparisons: list[Comparison]) -> Predicate | None:
    """A predicate for the conjunction of bound comparisons (None when there are none)."""
    if not comparisons:
        return None
    return _compile(comparisons[0] if len(comparisons) == 1 else BoolOp("and", tuple(comparisons)))


def bind(query: Query, objects: Mapping[str, Mapping[str, FieldInfo]]) -> Query:
    """Resolve names case-insensitively against ``objects`` ({object: {field: info}}),
    type the literals and compile the WHERE clause. Raises INVALID_TYPE / INVALID_FIELD."""
    by_lower = {name.lower(): name for name in objects}
    sobject = by_lower.get(query.sobject.lower())
    if sobject is None:
        raise SoqlError(
            "INVALID_TYPE",
            _error_text(
                query.text,
                query.positions.get(query.sobject, 0),
                f"sObject type '{query.sobject}' is not supported. If you are attempting to use a custom "
                "object, be sure to append the '__c' after the entity name. Please reference your WSDL or "
                "the describe call for the appropriate names.",
            ),
        )
    types = objects[sobject]
    canonical = {name.lower(): name for name in types}
    query.sobject = sobject

    def resolve(name: str) -> str:
        found = canonical.get(name.lower())
        if found is None:
            raise _no_such_column(query, name)
        return found

    def restricted(name: str, verb: str) -> None:
        if not (types[name].sortable if verb == "sorted" else types[name].filterable):
            raise SoqlError(
                "INVALID_FIELD",
                _error_text(
                    query.text,
                    query.positions.get(name, 0),
                    f"field '{name}' can not be {verb} in a query call",
                ),
            )

    query.fields = [resolve(name) for name in query.fields]
    query.items = [Item(resolve(item.field), item.function) for item in query.items]
    query.group_by = [Item(resolve(item.field), item.function) for item in query.group_by]
    if query.is_aggregate:
        _check_aggregate(query, types)
    order = []
    for name, descending in query.order:
        resolved = resolve(name)
        restricted(resolved, "sorted")
        order.append((resolved, descending))
    query.order = order

    def typed(node: Comparison | BoolOp) -> Comparison | BoolOp:
        if isinstance(node, BoolOp):
            return BoolOp(node.op, tuple(typed(part) for part in node.parts))
        name = resolve(node.field)
        restricted(name, "filtered")
        if isinstance(node.value, tuple):
            value: Any = tuple(_typed_literal(tok, name, types[name].type, query.text) for tok in node.value)
        else:
            value = _typed_literal(node.value, name, types[name].type, query.text)
        return Comparison(name, node.op, value, node.pos)

    if query.where is not None:
        query.where = typed(query.where)
        query.predicate = _compile(query.where)
    return query


def _check_aggregate(query: Query, types: Mapping[str, FieldInfo]) -> None:
    """Refuse what Salesforce refuses in an aggregate query: a dateTime (or long text) grouped as
    such, DAY_ONLY of a field that is not a date, a plain field neither grouped nor aggregated."""

    def refuse(code: str, item: Item, message: str) -> SoqlError:
        return SoqlError(code, _error_text(query.text, query.positions.get(item.field, 0), message))

    for item in [*query.items, *query.group_by]:
        kind = types[item.field].type
        if item.function == "DAY_ONLY" and kind not in ("date", "datetime"):
            raise refuse(
                "MALFORMED_QUERY", item, f"field '{item.field}' of type {kind} can not be used in DAY_ONLY"
            )
    for item in query.group_by:
        if item.function is None and types[item.field].type in _UNGROUPABLE:
            raise refuse("INVALID_FIELD", item, f"field '{item.field}' can not be grouped in a query call")
    grouped = set(query.group_by)
    for item in query.items:
        if item.function != "COUNT" and item not in grouped:
            raise refuse("MALFORMED_QUERY", item, f"Field must be grouped or aggregated: {item.field}")
    if query.order:
        raise SoqlError("MALFORMED_QUERY", "ORDER BY in an aggregate query is not modelled by the sandbox")


def aggregate(query: Query, records: Iterable[Record]) -> list[dict[str, Any]]:
    """The AggregateResult records of a bound aggregate query over its matching records."""

    def value(item: Item, record: Record) -> Any:
        raw = record[item.field]
        if item.function == "DAY_ONLY" and isinstance(raw, str):
            return raw[:10]  # dateTimes are held in UTC, "2026-11-20T13:45:00.000+0000"
        return raw

    groups: dict[tuple[Any, ...], list[int]] = {}
    counted = [item for item in query.items if item.function == "COUNT"]
    for record in records:
        key = tuple(value(item, record) for item in query.group_by)
        counts = groups.setdefault(key, [0] * len(counted))
        for n, item in enumerate(counted):
            counts[n] += record[item.field] is not None
    if not query.group_by and not groups:
        groups[()] = [0] * len(counted)  # COUNT(field) without GROUP BY: one row, even of nothing
    out = []
    for key in sorted(groups, key=lambda k: tuple((v is not None, v) for v in k)):
        grouped = dict(zip(query.group_by, key, strict=True))
        counts = iter(groups[key])
        row: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
        expr = 0
        for item in query.items:
            if item.function is None:
                row[item.field] = grouped[item]
                continue
            row[f"expr{expr}"] = next(counts) if item.function == "COUNT" else grouped[item]
            expr += 1
        out.append(row)
    return out
