"""One request's figures, from its head to its end: what the stats and the access log read.

Theory of operation: the proxy makes a ``RequestRecord`` when a request starts (its head,
the clock) and fills it in as the request goes: the upstream cluster and host, the
request id and traceparent it sent, the status, the body bytes each way, the response
flags. When the request ends (however it ends) the connection closes it exactly once:
the listener's stats and, for the first attempt's answer, the cluster's are charged, and
the record is handed to the ``AccessLog``, which keeps the values it writes (no
formatting: its writer formats a batch later). So a connection keeps one record and
``begin``s it again for each request: no allocation per request. It is a plain slotted
object, not an attrs value: it is written field by field on the hot path, and ``begin``
is the only place its fields get their defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.http1.events import RequestReceived
    from gateway.observe.stats import ClusterStats, EndpointStats, RouteClusterStats

#: ``cluster`` and ``host`` of a request that reached no upstream, as JSON
NULL = b"null"


class RequestRecord:
    """The figures of one request."""

    __slots__ = (
        "answered",
        "bytes_in",
        "bytes_out",
        "cluster",
        "duration_ms",
        "flags",
        "head",
        "head_sent",
        "host",
        "request_id",
        "start",
        "status",
        "traceparent",
        "upstream_ms",
        "watch",
    )

    def __init__(self, head: RequestReceived, start: float) -> None:
        self.begin(head, start)

    def begin(self, head: RequestReceived, start: float) -> None:
        """A request starts: its head, the clock, every other figure at its default."""
        #: the request's head (a stand-in for one that never parsed: 400, 408)
        self.head = head
        #: ``perf_counter()`` at the head's arrival
        self.start = start
        #: the status sent to the client; 0 while (or if) none was sent
        self.status = 0
        #: Envoy's response flags, comma separated (``UF,URX``); "" when none
        self.flags = ""
        #: request and response body bytes (after chunked framing is removed)
        self.bytes_in = 0
        self.bytes_out = 0
        #: set when the request ends: from the head to the end of the response
        self.duration_ms = 0.0
        #: the last attempt's time to the end of its response; < 0 when none answered
        self.upstream_ms = -1.0
        #: the upstream cluster and host as JSON strings (``null`` when none)
        self.cluster = NULL
        self.host = NULL
        #: the ``x-request-id`` sent upstream (or given by the client)
        self.request_id = b""
        #: the ``traceparent`` sent upstream; b"" when none (or an invalid one passed on)
        self.traceparent = b""
        #: whether any byte of the response has gone to the client
        self.head_sent = False
        #: the stats of the first attempt when it answered: it started with the request
        #: and ends with it, so it is charged when the request ends, with one clock read
        self.answered: tuple[ClusterStats, EndpointStats] | None = None
        #: where the request is also counted when it ends: its route's stats for its
        #: cluster, when a rollout watches the route
        self.watch: RouteClusterStats | None = None

    def add_flag(self, flag: str) -> None:
        self.flags = f"{self.flags},{flag}" if self.flags else flag
