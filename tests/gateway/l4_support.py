"""Upstreams, configs and clients for the TCP listener and toxics tests (loopback, port 0)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from gateway.app import Gateway
from gateway.config import Address, Config
from gateway.config.load import config_from_data


@attrs.define(eq=False)
class StreamEcho:
    """A TCP upstream that echoes each chunk at once and passes a half-close back
    (``send_eof`` after the client's EOF); ``greeting`` is sent first on connect."""

    address: Address = attrs.Factory(lambda: Address("127.0.0.1", 0))
    greeting: bytes = b""
    accepted: int = 0

    async def start(self, nursery: trio.Nursery) -> StreamEcho:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
        nursery.start_soon(trio.serve_listeners, self._serve, listeners)
        return self

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        async with stream:
            try:
                if self.greeting:
                    await stream.send_all(self.greeting)
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
                await stream.send_eof()
                await trio.sleep(5)  # the gateway closes first (both directions ended)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


def l4_config(
    clusters: dict[str, list[Address]],
    *,
    split: dict[str, int] | None = None,
    **listener: Any,
) -> dict[str, Any]:
    """One tcp listener ``tcp`` on port 0: to the first cluster, or a weighted ``split``."""
    target: dict[str, Any] = (
        {"split": [{"cluster": c, "weight": w} for c, w in split.items()]}
        if split
        else {"cluster": next(iter(clusters))}
    )
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {"name": "tcp", "address": "127.0.0.1:0", "protocol": "tcp", **target, **listener}
        ],
        "clusters": [
            {"name": name, "endpoints": [{"address": str(a)} for a in addrs]}
            for name, addrs in clusters.items()
        ],
    }


def toxic(name: str, type_: str, stream: str = "downstream", **attributes: Any) -> dict[str, Any]:
    """A toxic as config data; ``toxicity`` and ``source`` may be passed among the rest."""
    extra = {k: attributes.pop(k) for k in ("toxicity", "source") if k in attributes}
    return {"name": name, "type": type_, "stream": stream, "attributes": attributes, **extra}


async def change_listener(gw: Gateway, name: str = "tcp", **fields: Any) -> Config:
    """Apply one config version in which listener ``name`` has ``fields`` (as data)."""

    def change(config: Config) -> Config:
        from gateway.config import unstructure

        data = unstructure(config)
        for lst in data["listeners"]:
            if lst["name"] == name:
                lst.update(fields)
        return config_from_data(data)

    result = await gw.control.apply(change)
    assert isinstance(result, Config), result
    return result


async def connect(gw: Gateway, name: str = "tcp") -> trio.SocketStream:
    address = gw.listener_address(name)
    return await trio.open_tcp_stream(address.host, address.port)


async def receive_exactly(stream: trio.SocketStream, size: int, within: float = 5.0) -> bytes:
    """``size`` bytes from ``stream`` (fewer if it ends first), within ``within`` s."""
    received = b""
    with trio.fail_after(within):
        while len(received) < size:
            data = await stream.receive_some(size - len(received))
            if not data:
                break
            received += data
    return received


async def read_to_end(stream: trio.SocketStream, within: float = 5.0) -> bytes:
    """Everything until EOF (a reset propagates), within ``within`` s."""
    received = b""
    with trio.fail_after(within):
        while data := await stream.receive_some(65536):
            received += data
    return received


def timed(clock: Callable[[], float] = trio.current_time) -> Callable[[], float]:
    """Seconds since this call, on trio's clock."""
    start = clock()
    return lambda: clock() - start
