"""A client of etcd's v3 JSON gateway over httpx (which runs on trio through anyio).

etcd 3.4 serves its gRPC API as JSON on the client port: ``POST /v3/kv/range``,
``/v3/kv/txn``, ``/v3/kv/put``, ``/v3/kv/deleterange``, ``/v3/watch`` (a stream of
newline-separated JSON objects), ``/v3/lease/grant|keepalive|revoke`` and
``/v3/kv/lease/timetolive``, ``/v3/auth/authenticate``. Keys and values are base64 and
int64 fields are decimal strings; a field at its zero value is left out (a watch
event without ``type`` is a PUT, a transaction without ``succeeded`` failed).

The unary calls go through one pooled ``httpx.AsyncClient``. A watch has a connection
of its own, spoken with h11 (a streamed httpx response left before its end leaves
httpcore's body generator to the garbage collector; this one closes its socket when the
watch ends, cancelled or not). Every unary call runs under one cancel scope of
``dial_timeout`` (connect and answer); the endpoints are tried in order until one
answers. Not reaching any, or an error answer, raises ``StoreUnavailable`` naming
etcd, its URL and why (``code``: etcd's gRPC status, 5 for a lease that is gone).
With ``username_env``/``password_env`` the client authenticates once, and again
whenever etcd says its token is no longer valid.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.parse
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Final

import attrs
import h11
import httpx
import trio

from gateway.config import StoreConfig
from gateway.errors import ConfigError, ConfigIssue, StoreUnavailable

__all__ = ["EtcdClient", "KeyValue", "WatchBatch", "prefix_end"]

#: etcd's gRPC status for "not found" (a lease that expired or was revoked)
NOT_FOUND: Final = 5
#: etcd's gRPC status for an authentication token it no longer takes
UNAUTHENTICATED: Final = 16


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: str) -> str:
    """The ``range_end`` of every key starting with ``prefix`` (its last byte plus one)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


@attrs.frozen
class KeyValue:
    """One key as etcd holds it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    #: the lease the key is bound to; 0: none
    lease: int = 0

    @classmethod
    def parse(cls, data: dict[str, Any]) -> KeyValue:
        return cls(
            _unb64(data["key"]).decode(),
            _unb64(data.get("value", "")),
            int(data.get("create_revision", 0)),
            int(data.get("mod_revision", 0)),
            int(data.get("lease", 0)),
        )


@attrs.frozen
class Event:
    """A key put (``deleted`` False: ``kv`` holds its new value) or deleted."""

    kv: KeyValue
    deleted: bool


@attrs.frozen
class WatchBatch:
    """What one watch response brought: events, or that the watch fell behind compaction."""

    revision: int
    events: tuple[Event, ...] = ()
    #: set when the revision the watch asked for was compacted away: read the prefix again
    compacted: bool = False


@attrs.frozen
class Range:
    """The keys a range found, and the store's revision when it read them."""

    revision: int
    kvs: tuple[KeyValue, ...]


@attrs.frozen
class Compare:
    """One comparison of a transaction: ``target`` (MOD, CREATE, VALUE) of ``key``."""

    key: str
    target: str
    value: int

    def as_json(self) -> dict[str, Any]:
        field = {"MOD": "mod_revision", "CREATE": "create_revision"}[self.target]
        return {
            "key": _b64(self.key),
            "target": self.target,
            "result": "EQUAL",
            field: str(self.value),
        }


def put_op(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def range_op(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


@attrs.frozen
class TxnResult:
    succeeded: bool
    revision: int
    #: the keys each failure (or success) range op read, in order
    ranges: tuple[tuple[KeyValue, ...], ...]


def _credentials(store: StoreConfig) -> tuple[str, str] | None:
    if store.username_env is None or store.password_env is None:
        return None
    values = []
    for field in ("username_env", "password_env"):
        name = getattr(store, field)
        value = os.environ.get(name)
        if not value:
            raise ConfigError([ConfigIssue(f"config_store.{field}", f"${name} is not set")])
        values.append(value)
    return values[0], values[1]


def _ssl_context(store: StoreConfig) -> ssl.SSLContext:
    tls = store.tls
    if tls is None:
        return ssl.create_default_context()
    context = ssl.create_default_context(cafile=tls.ca)
    if tls.cert is not None and tls.key is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


class EtcdClient:
    """Unary calls and watches against the etcd cluster of a ``config_store``."""

    def __init__(self, store: StoreConfig) -> None:
        self.store = store
        self.endpoints = tuple(url.rstrip("/") for url in store.endpoints)
        self._credentials = _credentials(store)
        self._token: str | None = None
        self._ssl = _ssl_context(store)
        # timeouts are the cancel scopes of each call, not httpx's
        self._http = httpx.AsyncClient(verify=self._ssl, timeout=None)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- unary calls -------------------------------------------------------------------

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers, within
        ``dial_timeout``; its JSON answer. ``StoreUnavailable`` if none does."""
        with trio.move_on_after(self.store.dial_timeout):
            answer: dict[str, Any] = await self._call(path, body)
            return answer
        raise StoreUnavailable(
            f"etcd ({', '.join(self.endpoints)}) did not answer {path} "
            f"within {self.store.dial_timeout:g} s"
        )

    async def _call(self, path: str, body: dict[str, Any], *, retry_auth: bool = True) -> Any:
        if self._credentials is not None and self._token is None:
            await self._authenticate()
        errors = []
        for url in self.endpoints:
            try:
                data = json.dumps(body).encode()
                headers = {**self._headers(), "content-type": "application/json"}
                headers["content-length"] = str(len(data))
                request = self._http.build_request("POST", url + path, headers=headers)
                request.stream = _Body(data)
                response = await self._http.send(request)
            except httpx.HTTPError as e:
                errors.append(f"{url}: {e or type(e).__name__}")
                continue
            answer = _json(response, url)
            if response.status_code == 200:
                return answer
            code = answer.get("code") if isinstance(answer, dict) else None
            message = answer.get("message") if isinstance(answer, dict) else response.text
            if code == UNAUTHENTICATED and retry_auth and self._credentials is not None:
                self._token = None
                return await self._call(path, body, retry_auth=False)
            raise StoreUnavailable(f"etcd at {url} refused {path}: {message}", code)
        raise StoreUnavailable(f"etcd unreachable ({'; '.join(errors)})")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    async def _authenticate(self) -> None:
        assert self._credentials is not None
        name, password = self._credentials
        self._token = ""  # while it asks: no header
        answer = await self._call(
            "/v3/auth/authenticate", {"name": name, "password": password}, retry_auth=False
        )
        self._token = str(answer["token"])

    async def range(self, key: str, *, prefix: bool = False) -> Range:
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        answer = await self.call("/v3/kv/range", body)
        return Range(
            int(answer["header"]["revision"]),
            tuple(KeyValue.parse(kv) for kv in answer.get("kvs", ())),
        )

    async def txn(
        self,
        compare: list[Compare],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] = [],  # noqa: B006  (never mutated)
    ) -> TxnResult:
        answer = await self.call(
            "/v3/kv/txn",
            {"compare": [c.as_json() for c in compare], "success": success, "failure": failure},
        )
        ranges = tuple(
            tuple(KeyValue.parse(kv) for kv in r["response_range"].get("kvs", ()))
            for r in answer.get("responses", ())
            if "response_range" in r
        )
        return TxnResult(
            bool(answer.get("succeeded", False)), int(answer["header"]["revision"]), ranges
        )

    async def put(self, key: str, value: bytes, lease: int = 0) -> tuple[int, KeyValue | None]:
        """Put ``key``; returns the revision of the put and the key's previous value."""
        body = put_op(key, value, lease)["request_put"]
        answer = await self.call("/v3/kv/put", {**body, "prev_kv": True})
        previous = answer.get("prev_kv")
        return int(answer["header"]["revision"]), (
            None if previous is None else KeyValue.parse(previous)
        )

    async def delete(self, key: str) -> tuple[KeyValue, ...]:
        """Delete ``key``; returns what was deleted (nothing when it was not there)."""
        answer = await self.call("/v3/kv/deleterange", {"key": _b64(key), "prev_kv": True})
        return tuple(KeyValue.parse(kv) for kv in answer.get("prev_kvs", ()))

    async def grant(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds (rounded up to whole seconds, etcd's unit)."""
        seconds = max(1, int(-(-ttl // 1)))
        answer = await self.call("/v3/lease/grant", {"TTL": str(seconds)})
        return int(answer["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew ``lease`` once; its TTL in seconds, 0 when it is gone (expired, revoked)."""
        answer = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        """Revoke ``lease`` (its keys are deleted); a lease already gone is fine."""
        try:
            await self.call("/v3/lease/revoke", {"ID": str(lease)})
        except StoreUnavailable as e:
            if e.code != NOT_FOUND:
                raise

    async def time_to_live(self, lease: int) -> int:
        """Seconds ``lease`` has left; -1 when it is gone."""
        answer = await self.call("/v3/kv/lease/timetolive", {"ID": str(lease)})
        return int(answer.get("TTL", -1))

    # -- watches -----------------------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int) -> AsyncGenerator[WatchBatch, None]:
        """Every change under ``prefix`` from ``start_revision`` on, as etcd sends them.

        Ends (``StoreUnavailable``) when the stream breaks; a compacted start revision
        yields one batch with ``compacted`` set and ends.
        """
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": str(start_revision),
            }
        }
        if self._credentials is not None and self._token is None:
            with trio.fail_after(self.store.dial_timeout):
                await self._authenticate()
        errors = []
        for url in self.endpoints:
            try:
                async with aclosing(self._watch_at(url, body)) as batches:
                    async for batch in batches:
                        yield batch
                        if batch.compacted:
                            return
            except trio.TooSlowError:
                errors.append(f"{url}: no answer within {self.store.dial_timeout:g} s")
                continue
            except StoreUnavailable as e:
                errors.append(str(e))
                continue
            errors.append(f"{url}: the watch stream ended")
        self._token = None if self._credentials is not None else self._token
        raise StoreUnavailable(f"etcd watch broke ({'; '.join(errors)})")

    async def _watch_at(self, url: str, body: dict[str, Any]) -> AsyncGenerator[WatchBatch, None]:
        """One watch stream on ``url``, over h11 on a trio stream of its own: a watch
        that ends early (cancelled, compacted) closes its socket then and there."""
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "", parts.port or 2379
        data = json.dumps(body).encode()
        headers = [
            ("Host", parts.netloc),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *self._headers().items(),
        ]
        conn = h11.Connection(h11.CLIENT)
        try:
            with trio.fail_after(self.store.dial_timeout):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if parts.scheme == "https":
                    stream = trio.SSLStream(stream, self._ssl, server_hostname=host)
                    await stream.do_handshake()
            async with stream:
                request = conn.send(h11.Request(method="POST", target="/v3/watch", headers=headers))
                await stream.send_all(
                    request + conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage())
                )
                async with aclosing(_watch_batches(conn, stream, url)) as batches:
                    async for batch in batches:
                        yield batch
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as e:
            raise StoreUnavailable(f"etcd watch at {url} broke: {e or type(e).__name__}") from e


async def _watch_batches(
    conn: h11.Connection, stream: trio.abc.Stream, url: str
) -> AsyncGenerator[WatchBatch, None]:
    """The watch responses etcd streams back, one JSON object a line."""
    status = 0
    buffer = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            buffer += event.data
            if status != 200:
                continue
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                batch = _watch_batch(json.loads(line), url)
                yield batch
                if batch.compacted:
                    return
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if status != 200:
                raise StoreUnavailable(f"etcd at {url} refused the watch: {buffer[:200]!r}")
            return


def _watch_batch(message: dict[str, Any], url: str) -> WatchBatch:
    if "error" in message:
        raise StoreUnavailable(f"etcd at {url} ended the watch: {message['error']}")
    result = message.get("result", {})
    revision = int(result.get("header", {}).get("revision", 0))
    if "compact_revision" in result:
        return WatchBatch(revision, compacted=True)
    events = tuple(
        Event(KeyValue.parse(e["kv"]), e.get("type") == "DELETE") for e in result.get("events", ())
    )
    return WatchBatch(revision, events)


def _json(response: httpx.Response, url: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise StoreUnavailable(
            f"etcd at {url} answered {response.status_code} with no JSON: {response.text[:200]!r}"
        ) from None


class _Body(httpx.AsyncByteStream):
    """A request body as a plain async iterator: httpx's own (``content=``, ``json=``) is
    an async generator, which httpcore leaves unfinished when the connection fails
    mid-send (etcd refusing our TLS client certificate), for the garbage collector to
    finalize outside trio: an "Exception ignored" on every such call."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data
