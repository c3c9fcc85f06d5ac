"""Route match time at 10, 1,000 and 10,000 routes, by kind, against a linear scan.

For each kind (``exact``: ``path: /svc{i}/items``; ``prefix``: ``prefix: /svc{i}/``;
``regex``: ``regex: /svc{i}/items/[0-9]+``) and each size, a listener with that many
routes (a catch-all ``prefix: /`` last, so that every request matches) is compiled into
this tree's ``RouteTable`` and asked for requests spread over all its routes. The same
run times a linear scan of the same routes in order (the first that matches wins: the
specification the table's index must agree with), so the two figures come from the same
machine in the same minute. ``one-prefix`` is the usual config: a single ``prefix: /``.

``--tree DIR`` times another source tree's ``RouteTable`` instead (``git archive REF |
tar -x -C DIR``); a tree without ``regex`` support skips that kind.

It prints microseconds per match (the median of ``--repeats`` timings, each over enough
matches to take about ``--budget`` seconds). The table's figure is a whole
``RouteTable.match``: the virtual host from ``Host`` (one dict probe here), the query
string cut, then the route; the scan's is the route step alone, on the path. Before
timing, both must pick the same route for every request (a wrong matcher is never
reported as fast; the route sets are such that the older tree's longest-prefix rule
agrees). It is not a test and never runs in CI.

Run: ``.venv/bin/python bench/bench_routes.py [--sizes 10 1000 10000] [--tree DIR]``.
"""

from __future__ import annotations

import argparse
import functools
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

KINDS = ("one-prefix", "exact", "prefix", "regex")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per timing")
    parser.add_argument("--tree", type=Path, help="time this source tree's RouteTable")
    parser.add_argument("--no-linear", action="store_true", help="skip the linear scan")
    return parser.parse_args(argv)


def routes_of(kind: str, size: int) -> list[dict[str, Any]]:
    if kind == "one-prefix":
        return [{"match": {"prefix": "/"}, "cluster": "c"}]
    match = {
        "exact": lambda i: {"path": f"/svc{i}/items"},
        "prefix": lambda i: {"prefix": f"/svc{i}/"},
        "regex": lambda i: {"regex": f"/svc{i}/items/[0-9]+"},
    }[kind]
    routes = [{"match": match(i), "cluster": "c"} for i in range(size - 1)]
    return [*routes, {"match": {"prefix": "/"}, "cluster": "c"}]


def targets_of(kind: str, size: int, rng: random.Random) -> list[bytes]:
    """Request targets spread over the routes (exact ones hit their own path)."""
    if kind == "one-prefix":
        return [
            f"/svc{rng.randrange(1000)}/items/{rng.randrange(100)}".encode() for _ in range(512)
        ]
    picks = [rng.randrange(max(size - 1, 1)) for _ in range(512)]
    if kind == "exact":
        return [f"/svc{i}/items".encode() for i in picks]
    return [f"/svc{i}/items/{rng.randrange(100)}".encode() for i in picks]


def linear_scan(routes: list[dict[str, Any]]) -> Callable[[bytes], int | None]:
    """The specification: the first route, in order, whose path rule matches."""
    rules: list[tuple[str, Any]] = []
    for route in routes:
        m = route["match"]
        if "path" in m:
            rules.append(("path", m["path"].encode()))
        elif "prefix" in m:
            rules.append(("prefix", m["prefix"].encode()))
        else:
            rules.append(("regex", re.compile(m["regex"].encode())))

    def match(path: bytes) -> int | None:
        for position, (kind, value) in enumerate(rules):
            if kind == "path":
                if path == value:
                    return position
            elif kind == "prefix":
                if path.startswith(value):
                    return position
            elif value.fullmatch(path) is not None:
                return position
        return None

    return match


def time_per_call(call: Callable[[Any], object], inputs: Sequence[Any], args: Any) -> float:
    """Median microseconds per call over ``args.repeats`` timings of ~``budget`` seconds."""
    n = 1
    while True:  # find a count that takes about the budget
        start = time.perf_counter()
        for i in range(n):
            call(inputs[i % len(inputs)])
        spent = time.perf_counter() - start
        if spent >= args.budget / 4:
            break
        n *= 4
    n = max(1, int(n * args.budget / spent))
    figures = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(n):
            call(inputs[i % len(inputs)])
        figures.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(figures)


Matcher = Callable[[Any], Any]
HOST = b"127.0.0.1:8080"


def table_matcher(
    kind: str, size: int, targets: list[bytes]
) -> tuple[Matcher, list[Any], tuple[Any, ...]] | None:
    """This tree's (or ``--tree``'s) ``RouteTable.match`` for the routes, its inputs for
    ``targets`` (request heads, built before the timing as the data path has them), and
    the routes as compiled (to tell which one an entry is)."""
    from gateway.config import config_from_data
    from gateway.http1.events import NO_BODY, RequestReceived
    from gateway.routing import RouteTable

    data = {
        "listeners": [{"name": "web", "address": "127.0.0.1:0", "routes": routes_of(kind, size)}],
        "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:9"}]}],
    }
    try:
        config = config_from_data(data)
    except Exception as e:  # an older tree without this kind of match
        print(f"  ({kind}: not supported by this tree: {str(e).splitlines()[0]})")
        return None
    routes = config.listeners[0].routes
    table = RouteTable(config.listeners[0])
    if "head" in RouteTable.match.__code__.co_varnames[:2]:
        heads = [
            RequestReceived(b"GET", t, b"1.1", [(b"host", HOST)], True, NO_BODY, 0, HOST, 40)
            for t in targets
        ]
        return table.match, heads, routes
    return functools.partial(table.match, HOST), targets, routes  # the older signature


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = (args.tree or Path(__file__).resolve().parent.parent).resolve()
    sys.path.insert(0, str(root))
    print(f"tree: {root}; microseconds per match, median of {args.repeats}")
    print(f"{'kind':<11} {'routes':>7} {'table µs':>10} {'linear µs':>10}")
    rng = random.Random(1)
    for kind in args.kinds:
        for size in [1] if kind == "one-prefix" else args.sizes:
            targets = targets_of(kind, size, rng)
            found = table_matcher(kind, size, targets)
            if found is None:
                continue
            match, inputs, routes = found
            scan = linear_scan(routes_of(kind, size))
            # a matcher that answers wrong is never reported as fast
            order = {id(route): i for i, route in enumerate(routes)}
            answers = [None if e is None else order[id(e.route)] for e in map(match, inputs)]
            assert answers == [scan(t) for t in targets], kind
            indexed = time_per_call(match, inputs, args)
            linear = "-" if args.no_linear else f"{time_per_call(scan, targets, args):10.3f}"
            print(f"{kind:<11} {size:>7} {indexed:10.3f} {linear:>10}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
