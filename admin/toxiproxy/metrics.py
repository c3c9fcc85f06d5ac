"""``/metrics``: the Prometheus text toxiproxy-server's ``-proxy-metrics`` exposes.

Toxiproxy counts, per proxy and direction, the bytes read from the source
(``toxiproxy_proxy_received_bytes_total``) and written to the destination
(``toxiproxy_proxy_sent_bytes_total``), labelled ``direction, listener, proxy,
upstream``. Here they come from the listener's and its cluster's byte counters (Envoy's
names): upstream (client to server) received = the listener's ``downstream_cx_rx_bytes_total``,
sent = the cluster's ``upstream_cx_tx_bytes_total``; downstream the other way round.
They are live (Toxiproxy adds a connection's bytes when it ends), and a proxy's lines go
when it is deleted (Toxiproxy keeps them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Protocol

from admin.toxiproxy.proxies import is_proxy, upstream_of
from gateway.config import Config

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_METRICS: Final = (
    (
        "toxiproxy_proxy_received_bytes_total",
        "The total bytes received from the source",
        (
            ("upstream", "listener", "downstream_cx_rx_bytes_total"),
            ("downstream", "cluster", "upstream_cx_rx_bytes_total"),
        ),
    ),
    (
        "toxiproxy_proxy_sent_bytes_total",
        "The total bytes sent to the destination",
        (
            ("upstream", "cluster", "upstream_cx_tx_bytes_total"),
            ("downstream", "listener", "downstream_cx_tx_bytes_total"),
        ),
    ),
)


class _Scope(Protocol):
    def counters(self) -> dict[str, int]: ...


class StatsRegistry(Protocol):
    """What is read of the gateway's stats registry (``Gateway.refresh_stats``)."""

    def listener(self, name: str) -> _Scope: ...

    def cluster(self, name: str) -> _Scope: ...


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(config: Config, stats: StatsRegistry, shown: Mapping[str, str]) -> tuple[str, str]:
    """The exposition text and its content type."""
    proxies = sorted((lst for lst in config.listeners if is_proxy(lst)), key=lambda x: x.name)
    lines: list[str] = []
    for metric, help_text, directions in _METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for direction, scope, counter in directions:
            for listener in proxies:
                if scope == "listener":
                    counters = stats.listener(listener.name).counters()
                else:
                    counters = stats.cluster(listener.cluster or "").counters()
                labels = (
                    f'direction="{direction}",listener="{_label(shown.get(listener.name, ""))}",'
                    f'proxy="{_label(listener.name)}",'
                    f'upstream="{_label(upstream_of(config, listener))}"'
                )
                lines.append(f"{metric}{{{labels}}} {counters.get(counter, 0)}")
    return "\n".join(lines) + "\n", CONTENT_TYPE
