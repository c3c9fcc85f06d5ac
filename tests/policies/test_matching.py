"""Route matching's pure core on hand-written cases: the regex rules, each condition kind."""

from __future__ import annotations

import pytest

from policies.matching import (
    MAX_PATTERN_LENGTH,
    Conditions,
    FirstMatchIndex,
    HeaderCondition,
    PathRule,
    QueryCondition,
    pattern_problem,
    query_value,
)
from tests.strategies import MatchRequest


@pytest.mark.parametrize(
    "pattern",
    [
        r"^/v[0-9]+/users/[^/]+$",
        r"/api/.*",
        r"/(a|b)/x",  # an alternation outside a repeat
        r"/x(?:/[a-z]{2,8})?",  # an optional group: its body repeats at most once
        r"(?i)/static/\w+\.css",
        r"/files/[a-f0-9]{32}",
        r"(/seg)+",  # a repeated group without a quantifier or alternation in it
        "x" * MAX_PATTERN_LENGTH,
    ],
)
def test_patterns_within_the_subset_are_accepted(pattern: str) -> None:
    assert pattern_problem(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a+)+", "quantifier inside a repeated group"),
        (r"(a*)*b", "quantifier inside a repeated group"),
        (r"(?:x[0-9]?)+", "quantifier inside a repeated group"),
        (r"(a|aa)*", "alternation inside a repeated group"),
        (r"(a)\1", "backreferences"),
        (r"(?P<x>a)(?P=x)", "backreferences"),
        (r"/a(?=b)", "lookahead/lookbehind"),
        (r"(?<!x)/a", "lookahead/lookbehind"),
        (r"(a)?(?(1)b|c)", "conditional groups"),
        (r"(?>ab)", "atomic groups"),
        (r"a++", "possessive"),
        ("/caf\u00e9", "must be ASCII"),
        ("/api/(", "is not a valid regex"),
        ("x" * (MAX_PATTERN_LENGTH + 1), "longer than"),
    ],
)
def test_pathological_or_unsupported_patterns_are_refused(pattern: str, reason: str) -> None:
    problem = pattern_problem(pattern)
    assert problem is not None and reason in problem


H = [(b"Host", b"x"), (b"X-Canary", b"1"), (b"x-canary", b"2"), (b"X-User", b"alice")]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (HeaderCondition.of("x-user", "exact", "alice"), True),
        (HeaderCondition.of("X-USER", "exact", "Alice"), False),  # values are case-sensitive
        (HeaderCondition.of("x-canary", "exact", "1,2"), True),  # repeated: joined with ","
        (HeaderCondition.of("x-canary", "exact", "1"), False),
        (HeaderCondition.of("x-user", "prefix", "al"), True),
        (HeaderCondition.of("x-user", "regex", "[a-z]+"), True),
        (HeaderCondition.of("x-user", "regex", "ali"), False),  # the whole value
        (HeaderCondition.of("x-user", "present"), True),
        (HeaderCondition.of("x-missing", "present"), False),
        (HeaderCondition.of("x-missing", "absent"), True),
        (HeaderCondition.of("x-user", "absent"), False),
        (HeaderCondition.of("x-user", "exact", "alice", invert=True), False),
        (HeaderCondition.of("x-missing", "exact", "a", invert=True), True),
        (HeaderCondition.of("x-missing", "present", invert=True), True),
    ],
)
def test_header_conditions(condition: HeaderCondition, expected: bool) -> None:
    assert condition.accepts(H) is expected


@pytest.mark.parametrize(
    ("condition", "query", "expected"),
    [
        (QueryCondition.of("debug", "present"), b"a=1&debug", True),
        (QueryCondition.of("debug", "present"), b"a=1&debugx=1", False),
        (QueryCondition.of("v", "exact", "2"), b"v=2&v=3", True),  # the first one counts
        (QueryCondition.of("v", "exact", "3"), b"v=2&v=3", False),
        (QueryCondition.of("v", "exact", "a%20b"), b"v=a%20b", True),  # not decoded
        (QueryCondition.of("v", "regex", "[0-9]+"), b"v=42", True),
        (QueryCondition.of("v", "regex", "[0-9]+"), b"v=42x", False),
        (QueryCondition.of("v", "exact", ""), b"", False),
    ],
)
def test_query_conditions(condition: QueryCondition, query: bytes, expected: bool) -> None:
    assert condition.accepts(b"/path?" + query) is expected


def test_query_value_of_a_bare_name_is_empty() -> None:
    assert query_value(b"a&b=1", b"a") == b""
    assert query_value(b"a&b=1", b"c") is None


def test_methods_any_of() -> None:
    conditions = Conditions(frozenset({b"GET", b"HEAD"}))
    assert conditions.accepts(MatchRequest(b"HEAD"))
    assert not conditions.accepts(MatchRequest(b"POST"))


def test_the_first_listed_route_wins_across_kinds() -> None:
    index = FirstMatchIndex(
        [
            (PathRule("regex", "/api/v[0-9]+/.*"), None, "versioned"),
            (PathRule("prefix", "/api"), Conditions(frozenset({b"POST"})), "posts"),
            (PathRule("path", "/api/v1/x"), None, "never: the regex above takes it"),
            (PathRule("prefix", "/api"), None, "api"),
            (PathRule("prefix", "/"), None, "default"),
        ]
    )
    assert index.match(b"/api/v1/x", MatchRequest()) == "versioned"
    assert index.match(b"/api/other", MatchRequest(b"POST")) == "posts"
    assert index.match(b"/api/other", MatchRequest()) == "api"
    assert index.match(b"/else", MatchRequest()) == "default"
    assert (
        FirstMatchIndex([(PathRule("prefix", "/a"), None, 1)]).match(b"/b", MatchRequest()) is None
    )


def test_config_text_matches_as_utf_8() -> None:
    assert HeaderCondition.of("x-city", "exact", "Zürich").accepts([(b"x-city", "Zürich".encode())])
    assert QueryCondition.of("€", "present").accepts("/p?€=1".encode())
    index = FirstMatchIndex([(PathRule("prefix", "/café"), None, "café")])
    assert index.match("/café/menu".encode(), MatchRequest()) == "café"
