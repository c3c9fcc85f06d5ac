"""HTTP/1.1 request parsing: h11 against httptools (llhttp), the choice behind the data path.

Parses the same keep-alive request (a curl-like head, 6 headers) over and over with each
parser, as the proxy would (one parser per connection, reused across requests), and
prints requests parsed per second and microseconds per request. Not a test.

    .venv/bin/python bench/bench_parsers.py
"""

from __future__ import annotations

import time

import h11

from gateway.http1.parse import RequestParser

REQUEST = (
    b"GET /api/users/42?expand=profile HTTP/1.1\r\n"
    b"Host: api.example.com\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n"
    b"X-Request-Id: 9d4a6c0e-2f7b-4c1e-8a0d-2b7f6f1f3e11\r\n"
    b"Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    b"Cookie: session=abc123\r\n"
    b"\r\n"
)


def bench_h11(n: int) -> float:
    conn = h11.Connection(h11.SERVER)
    start = time.perf_counter()
    for _ in range(n):
        conn.receive_data(REQUEST)
        event = conn.next_event()
        assert isinstance(event, h11.Request)
        assert isinstance(conn.next_event(), h11.EndOfMessage)
        conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()
    return time.perf_counter() - start


def bench_httptools(n: int) -> float:
    parser = RequestParser()
    events = parser.events
    start = time.perf_counter()
    for _ in range(n):
        parser.feed(REQUEST)
        events.popleft()
        events.popleft()
    return time.perf_counter() - start


def main() -> None:
    n = 100_000
    rows = [("h11", bench_h11(n)), ("httptools (gateway.http1)", bench_httptools(n))]
    print(f"{'parser':28} {'requests/s':>12} {'us/request':>11}")
    for name, seconds in rows:
        print(f"{name:28} {n / seconds:12,.0f} {1e6 * seconds / n:11.2f}")
    print(f"httptools / h11: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    main()
