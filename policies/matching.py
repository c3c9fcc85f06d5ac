"""Which route takes a request: compiled conditions, a first-match index, safe regexes.

Theory of operation
-------------------
A route's match is one *path rule* (``path``: equal, ``prefix``: starts with, ``regex``:
the whole path matches) and optional *conditions* (methods, headers, query parameters),
all of which must hold. Routes are tried in the order they are listed and the first
that matches wins (Envoy's rule), whatever the kinds: a ``prefix: /`` listed first takes
every request.

``FirstMatchIndex`` answers that without trying the routes one by one. It is built once
per config version from the routes' rules and holds:

- ``exact``: path -> the positions of the routes with that ``path``;
- ``prefixes``: prefix -> the positions of the routes with that ``prefix``, and the
  distinct prefix lengths, so a request path is looked up once per length (a path of
  length n is cut at each length <= n): the cost grows with the number of *distinct
  lengths*, never with the number of routes;
- ``regexes``: (position, compiled pattern), in order; these are the only routes tried
  one by one, and only those listed before the best candidate found so far.

The candidates from the dicts are sorted by position and walked together with the
regex routes; the first position whose rule and conditions accept the request wins.
A table without conditions or regexes (the usual case) has every answer worked out when
it is built: each exact path's (its route, or a prefix route listed before it) and each
prefix's (its route, or a shorter prefix's listed before it); a request then takes its
exact path's answer, else its longest matching prefix's: one dict probe per distinct
length at most, longest first, and the first hit is the answer.

Invariant (``tests/property/test_matching.py``): ``match`` returns what a linear scan of
the routes in order returns, for every request.

Regexes (``pattern_problem``): Python's ``re`` is the engine, a backtracking one, so
a pattern is refused unless it keeps to a subset that cannot backtrack exponentially,
close to what RE2 accepts: at most ``MAX_PATTERN_LENGTH`` characters, ASCII only, none
of RE2's unsupported constructs (backreferences, lookahead and lookbehind, conditional
groups, atomic groups and possessive quantifiers), and no repeat (``*``, ``+``,
``{m,n}`` with n > 1) whose body holds another quantifier or an alternation (``(a+)+``,
``(a|aa)*``: the shapes of catastrophic backtracking). Character classes, anchors,
groups, ``?``, bounded and unbounded repeats of a single item remain. What this cannot
rule out is polynomial work from several unbounded repeats over the same characters
(``.*a.*a.*b``); a request path is bounded by the listener's header limit.

Pure and synchronous: bytes in, an answer out; patterns are compiled once, here.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

import attrs

__all__ = [
    "MAX_PATTERN_LENGTH",
    "Conditions",
    "FirstMatchIndex",
    "HeaderCondition",
    "PathRule",
    "QueryCondition",
    "Request",
    "ValueMatch",
    "compile_pattern",
    "pattern_problem",
]

#: the longest pattern accepted: bounds the cost of compiling and checking it (route
#: regexes are short; Envoy bounds RE2's program size for the same reason)
MAX_PATTERN_LENGTH: Final = 1024

# re's own parser: the syntax tree is the only reliable way to see a pattern's shape
# (no stubs: typeshed describes the deprecated ``sre_parse`` alias, whose import warns)
_parser: Any = importlib.import_module("re._parser")

_REFUSED: Final = {
    "GROUPREF": "backreferences are not supported",
    "GROUPREF_EXISTS": "conditional groups are not supported",
    "GROUPREF_IGNORE": "backreferences are not supported",
    "ASSERT": "lookahead/lookbehind is not supported",
    "ASSERT_NOT": "lookahead/lookbehind is not supported",
    "ATOMIC_GROUP": "atomic groups are not supported",
    "POSSESSIVE_REPEAT": "possessive quantifiers are not supported",
}
_REPEATS: Final = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is refused (the module docstring lists the rules), or None."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"is longer than {MAX_PATTERN_LENGTH} characters"
    if not pattern.isascii():
        return r"must be ASCII (match other bytes with \xNN)"
    try:
        tree = _parser.parse(pattern)
    except re.error as e:
        return f"is not a valid regex: {e}"
    return _tree_problem(tree, in_repeat=False)


def _tree_problem(items: Iterable[tuple[Any, Any]], *, in_repeat: bool) -> str | None:
    for op, value in items:
        name = str(op)
        if name in _REFUSED:
            return _REFUSED[name]
        children: list[Any] = []
        repeated = in_repeat
        if name in _REPEATS:
            _low, high, body = value
            if in_repeat:
                return "a quantifier inside a repeated group can backtrack exponentially"
            repeated = high > 1
            children = [body]
        elif name == "SUBPATTERN":
            children = [value[3]]
        elif name == "BRANCH":
            if in_repeat:
                return "an alternation inside a repeated group can backtrack exponentially"
            children = value[1]
        for child in children:
            problem = _tree_problem(child, in_repeat=repeated)
            if problem is not None:
                return problem
    return None


def compile_pattern(pattern: str) -> re.Pattern[bytes]:
    """``pattern`` compiled for bytes; call ``pattern_problem`` first (config validation)."""
    return re.compile(pattern.encode("ascii"))


class Request(Protocol):
    """What a condition reads of a request (``gateway.http1.events.RequestReceived``)."""

    @property
    def method(self) -> bytes: ...
    @property
    def target(self) -> bytes: ...
    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...


def _bytes(text: str) -> bytes:
    """Config text as the bytes a request carries: UTF-8 (any ``str`` encodes)."""
    return text.encode("utf-8", "surrogatepass")


PathKind = Literal["path", "prefix", "regex"]


@attrs.frozen
class PathRule:
    """A route's path rule: ``value`` equal to, a prefix of, or (``regex``) the whole path."""

    kind: PathKind
    value: str


ValueKind = Literal["exact", "prefix", "regex", "present"]


@attrs.frozen
class ValueMatch:
    """How a value (a header's, a query parameter's) must look to match."""

    kind: ValueKind
    value: bytes = b""
    pattern: re.Pattern[bytes] | None = None

    @classmethod
    def of(cls, kind: ValueKind, text: str = "") -> ValueMatch:
        """``text`` is the value, the prefix or the pattern (compiled here, once)."""
        if kind == "regex":
            return cls(kind, pattern=compile_pattern(text))
        return cls(kind, _bytes(text))

    def accepts(self, value: bytes | None) -> bool:
        """Whether ``value`` (None: there is none) matches."""
        if value is None:
            return False
        kind = self.kind
        if kind == "present":
            return True
        if kind == "exact":
            return value == self.value
        if kind == "prefix":
            return value.startswith(self.value)
        assert self.pattern is not None
        return self.pattern.fullmatch(value) is not None


HeaderKind = Literal["exact", "prefix", "regex", "present", "absent"]


@attrs.frozen
class HeaderCondition:
    """One header condition; ``name`` lower case. Repeated headers join with ``,``.
    ``absent`` is ``present`` inverted."""

    name: bytes
    match: ValueMatch
    invert: bool = False

    @classmethod
    def of(
        cls, name: str, kind: HeaderKind, value: str = "", *, invert: bool = False
    ) -> HeaderCondition:
        """The condition on header ``name``; ``value`` is the text, prefix or pattern."""
        if kind == "absent":
            return cls(_bytes(name.lower()), ValueMatch.of("present"), not invert)
        return cls(_bytes(name.lower()), ValueMatch.of(kind, value), invert)

    def accepts(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        wanted = self.name
        values = [value for name, value in headers if name.lower() == wanted]
        return self.match.accepts(b",".join(values) if values else None) is not self.invert


@attrs.frozen
class QueryCondition:
    """One query parameter condition, on the raw (not percent-decoded) first value."""

    name: bytes
    match: ValueMatch

    @classmethod
    def of(
        cls, name: str, kind: Literal["exact", "regex", "present"], value: str = ""
    ) -> QueryCondition:
        return cls(_bytes(name), ValueMatch.of(kind, value))

    def accepts(self, target: bytes) -> bool:
        """Whether the query string of request target ``target`` satisfies the condition."""
        return self.match.accepts(query_value(target.partition(b"?")[2], self.name))


def query_value(query: bytes, name: bytes) -> bytes | None:
    """The first value of ``name`` in a query string (``b""`` for a bare ``name``)."""
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if key == name:
            return value
    return None


@attrs.frozen
class Conditions:
    """A route's conditions beyond its path rule; every one must hold."""

    #: accepted methods; empty: every method
    methods: frozenset[bytes] = frozenset()
    headers: tuple[HeaderCondition, ...] = ()
    query: tuple[QueryCondition, ...] = ()

    def accepts(self, request: Request) -> bool:
        if self.methods and request.method not in self.methods:
            return False
        headers, target = request.headers, request.target
        return all(h.accepts(headers) for h in self.headers) and all(
            q.accepts(target) for q in self.query
        )


T = TypeVar("T")


class FirstMatchIndex(Generic[T]):
    """The first of a list of routes that accepts a request, found through an index.

    Built from ``(rule, conditions or None, target)`` in route order; ``match`` returns
    the target of the first route whose rule and conditions accept the request.
    """

    __slots__ = (
        "_conditions",
        "_exact",
        "_exact_answers",
        "_lengths",
        "_longest_first",
        "_plain",
        "_prefix_answers",
        "_prefixes",
        "_regexes",
        "_targets",
    )

    def __init__(self, routes: Iterable[tuple[PathRule, Conditions | None, T]]) -> None:
        exact: dict[bytes, tuple[int, ...]] = {}
        prefixes: dict[bytes, tuple[int, ...]] = {}
        regexes: list[tuple[int, re.Pattern[bytes]]] = []
        conditions: list[Conditions | None] = []
        targets: list[T] = []
        for position, (rule, condition, target) in enumerate(routes):
            conditions.append(condition)
            targets.append(target)
            if rule.kind == "regex":
                regexes.append((position, compile_pattern(rule.value)))
                continue
            key = _bytes(rule.value)
            table = exact if rule.kind == "path" else prefixes
            table[key] = (*table.get(key, ()), position)
        self._exact = exact
        self._prefixes = prefixes
        self._lengths = tuple(sorted({len(p) for p in prefixes}))
        self._longest_first = self._lengths[::-1]
        self._regexes = tuple(regexes)
        self._conditions = tuple(conditions)
        self._targets = tuple(targets)
        #: no conditions, no regexes: every answer can be worked out now
        self._plain = not regexes and all(c is None for c in conditions)
        #: plain: the answer for each exact path, and for each prefix (the first route
        #: among its own and the shorter prefixes it starts with); a path's answer is that
        #: of its exact path, else that of its longest matching prefix, which counts every
        #: shorter one
        self._exact_answers: dict[bytes, T] = {}
        self._prefix_answers: dict[bytes, T] = {}
        if self._plain:
            for key, positions in exact.items():
                first = min([positions[0], *self._prefix_positions(key, len(key))])
                self._exact_answers[key] = targets[first]
            for key, positions in prefixes.items():
                first = min([positions[0], *self._prefix_positions(key, len(key) - 1)])
                self._prefix_answers[key] = targets[first]

    def _prefix_positions(self, path: bytes, longest: int) -> list[int]:
        """The first route of each prefix of ``path`` at most ``longest`` long."""
        return [
            self._prefixes[path[:length]][0]
            for length in self._lengths
            if length <= longest and path[:length] in self._prefixes
        ]

    def match(self, path: bytes, request: Request) -> T | None:
        """The target of the first route accepting ``request``, whose ``path`` is its
        target without the query string; None if no route does."""
        if self._plain:
            answer = self._exact_answers.get(path)
            if answer is not None:
                return answer
            answers = self._prefix_answers
            size = len(path)
            for length in self._longest_first:
                if length <= size:
                    answer = answers.get(path[:length])
                    if answer is not None:
                        return answer
            return None
        found = self._exact.get(path, ())
        prefixes = self._prefixes
        size = len(path)
        for length in self._lengths:
            if length > size:
                break
            hit = prefixes.get(path[:length])
            if hit is not None:
                found = found + hit if found else hit
        return self._walk(sorted(found), path, request)

    def _walk(self, candidates: list[int], path: bytes, request: Request) -> T | None:
        """The first accepting route among the candidates and the regex routes, in order."""
        conditions = self._conditions
        regexes = self._regexes
        next_regex = 0
        for position in (*candidates, len(conditions)):  # the end: every regex left
            while next_regex < len(regexes) and regexes[next_regex][0] < position:
                at, pattern = regexes[next_regex]
                next_regex += 1
                condition = conditions[at]
                if pattern.fullmatch(path) is not None and (
                    condition is None or condition.accepts(request)
                ):
                    return self._targets[at]
            if position == len(conditions):
                return None
            condition = conditions[position]
            if condition is None or condition.accepts(request):
                return self._targets[position]
        return None  # pragma: no cover - the loop ends at the sentinel
