"""Toxiproxy's REST API over triogate: its proxies are tcp listeners, its toxics the
listeners' toxics, each write one config change through the control plane.

    decode.py   request bodies read as Toxiproxy's Go server reads them, and its errors
    toxics.py   a toxic's JSON, defaults, order of checks; the 400s where Toxiproxy crashes
    proxies.py  a proxy as a listener + its ``<name>-upstream`` cluster; the changes
    metrics.py  ``/metrics`` (``-proxy-metrics``): Toxiproxy's byte counters
    app.py      the ASGI app: Toxiproxy's router, middleware and answers
    server.py   serving it with hypercorn on Trio, as a service of the gateway
    errors.py   ToxiproxyError(GatewayError): status + message, Toxiproxy's error format

The contract it follows is ``shared/toxiproxy-contract.md`` (Toxiproxy v2.12.0 read from
source and checked against a real server); where this API differs, the module saying
so documents it.
"""

from admin.toxiproxy.app import VERSION, ToxiproxyApp
from admin.toxiproxy.server import serve_toxiproxy, toxiproxy_service

__all__ = ["VERSION", "ToxiproxyApp", "serve_toxiproxy", "toxiproxy_service"]
