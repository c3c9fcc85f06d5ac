"""FirstMatchIndex against its specification: a scan of the routes in order."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from policies.matching import Conditions, FirstMatchIndex, HeaderCondition, PathRule, QueryCondition
from tests.strategies import MatchRequest

#: a small alphabet, so that prefixes, paths and patterns often overlap
paths = st.lists(st.sampled_from(["a", "b", "ab", "/"]), max_size=4).map(lambda p: "/" + "".join(p))
patterns = st.sampled_from(["/a.*", "/[ab]+", "/b/?a*", "/ab", ".*b", "/(a|b)/x"])
index_rules = st.one_of(
    paths.map(lambda p: PathRule("path", p)), paths.map(lambda p: PathRule("prefix", p))
)
rules = st.one_of(index_rules, patterns.map(lambda p: PathRule("regex", p)))
methods = st.sampled_from([b"GET", b"POST", b"HEAD"])
header_conditions = st.builds(
    HeaderCondition.of,
    st.sampled_from(["x-a", "x-b"]),
    st.sampled_from(["exact", "prefix", "present", "absent"]),
    st.sampled_from(["", "1", "12"]),
    invert=st.booleans(),
)
conditions = st.one_of(
    st.none(),
    st.builds(
        Conditions,
        st.frozensets(methods, max_size=2),
        st.lists(header_conditions, max_size=2).map(tuple),
        st.lists(
            st.builds(QueryCondition.of, st.sampled_from(["q"]), st.just("present")), max_size=1
        ).map(tuple),
    ),
)
routes = st.lists(st.tuples(rules, conditions), max_size=12)
queries = st.sampled_from([b"", b"q", b"q=1&r", b"r=1"])
methods_headers = st.tuples(
    methods,
    st.lists(
        st.tuples(st.sampled_from([b"x-a", b"X-B"]), st.sampled_from([b"1", b"12", b""])),
        max_size=3,
    ).map(tuple),
)


def request_at(path: bytes, query: bytes, method: bytes, headers: Any) -> MatchRequest:
    return MatchRequest(method, path + b"?" + query if query else path, headers)


def scan(table: list[tuple[PathRule, Conditions | None]], request: MatchRequest) -> int | None:
    """The first route, in order, whose rule and conditions accept the request."""
    path = request.target.partition(b"?")[0]
    for position, (rule, condition) in enumerate(table):
        value = rule.value.encode()
        if rule.kind == "path":
            hit = path == value
        elif rule.kind == "prefix":
            hit = path.startswith(value)
        else:
            hit = re.fullmatch(value, path) is not None
        if hit and (condition is None or condition.accepts(request)):
            return position
    return None


def near(table: list[PathRule]) -> st.SearchStrategy[bytes]:
    """Request paths: any, or one of the rules' own values with a little more after it."""
    own = [rule.value for rule in table if rule.kind != "regex"]
    if not own:
        return paths.map(str.encode)
    extended = st.tuples(st.sampled_from(own), st.sampled_from(["", "a", "b/", "/x"]))
    return st.one_of(paths, extended.map("".join)).map(str.encode)


@given(table=routes, data=st.data())
def test_the_index_answers_as_a_scan_in_order(
    table: list[tuple[PathRule, Conditions | None]], data: st.DataObject
) -> None:
    path = data.draw(near([rule for rule, _ in table]))
    request = request_at(path, data.draw(queries), *data.draw(methods_headers))
    index = FirstMatchIndex(
        (rule, condition, position) for position, (rule, condition) in enumerate(table)
    )
    assert index.match(path, request) == scan(table, request)


@given(
    table=st.one_of(st.lists(index_rules, max_size=12), st.lists(rules, max_size=12)),
    data=st.data(),
)
def test_without_conditions_the_index_answers_as_a_scan_too(
    table: list[PathRule], data: st.DataObject
) -> None:
    path = data.draw(near(table))
    request = request_at(path, data.draw(queries), *data.draw(methods_headers))
    plain = [(rule, None) for rule in table]
    index = FirstMatchIndex((rule, None, position) for position, rule in enumerate(table))
    assert index.match(path, request) == scan(plain, request)
