"""Python filters the benchmarks run (``bench_glue.py --filters``): small and typical."""

from __future__ import annotations

from typing import Any


class AddHeader:
    """Adds one request header: the cheapest useful filter."""

    def __init__(self, config: Any) -> None:
        self.name = str(config.get("header", "x-hello"))
        self.value = str(config.get("value", "world"))

    def on_request_headers(self, headers: Any) -> None:
        headers[self.name] = self.value
