"""Sans-IO HTTP/2 code: what the h2 state machine does not decide for the gateway.

- ``request``: strict validation of a request's header list and its translation into
  the HTTP/1.1 head the proxy core works on (``gateway.http1.events.RequestReceived``),
  and the body's ``content-length`` check;
- ``response``: an HTTP/1.1 response head (and trailers) as an HTTP/2 header list;
- ``defence``: the flood budgets and the header-block guard, pure counters.

No trio, no sockets, no clock: time arrives as ``now``.
"""
