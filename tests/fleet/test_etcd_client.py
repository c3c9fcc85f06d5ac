"""The etcd client against a real etcd: transactions on a revision, leases, a watch
that reports compaction, endpoints tried in turn, and user/password authentication."""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from gateway.config import StoreConfig
from gateway.config.model import StoreTls
from gateway.control.etcd import Compare, EtcdClient, prefix_end, put_op, range_op
from gateway.errors import ConfigError, StoreUnavailable
from tests.conftest import ClosedAddress
from tests.fleet.conftest import EtcdServer, need_etcd
from tests.gateway.tls_support import Pki


def client_of(*endpoints: str, **settings: object) -> EtcdClient:
    return EtcdClient(
        StoreConfig(type="etcd", endpoints=endpoints, prefix="/t", dial_timeout=2, **settings)  # type: ignore[arg-type]
    )


def test_prefix_end_is_the_next_key_after_the_prefix() -> None:
    assert prefix_end("/t/") == "/t0"
    assert prefix_end("/a/b") == "/a/c"


async def test_a_transaction_compares_the_revision_it_read(etcd: EtcdServer) -> None:
    client = client_of(etcd.url)
    try:
        created = await client.txn([Compare("/t/k", "CREATE", 0)], [put_op("/t/k", b"1")])
        assert created.succeeded
        again = await client.txn(
            [Compare("/t/k", "CREATE", 0)], [put_op("/t/k", b"2")], [range_op("/t/k")]
        )
        assert not again.succeeded
        [[kv]] = again.ranges
        assert (kv.value, kv.mod_revision) == (b"1", created.revision)
        stale = await client.txn(
            [Compare("/t/k", "MOD", created.revision - 1)], [put_op("/t/k", b"3")]
        )
        assert not stale.succeeded
        moved = await client.txn([Compare("/t/k", "MOD", created.revision)], [put_op("/t/k", b"4")])
        assert moved.succeeded and moved.revision == created.revision + 1
        assert [kv.value for kv in (await client.range("/t/", prefix=True)).kvs] == [b"4"]
    finally:
        await client.aclose()


async def test_a_key_bound_to_a_revoked_lease_is_gone(etcd: EtcdServer) -> None:
    client = client_of(etcd.url)
    try:
        lease = await client.grant(5)
        assert await client.keepalive(lease) == 5
        await client.put("/t/leased", b"x", lease)
        assert 0 < await client.time_to_live(lease) <= 5
        await client.revoke(lease)
        assert (await client.range("/t/leased")).kvs == ()
        assert await client.keepalive(lease) == 0
        assert await client.time_to_live(lease) == -1
        await client.revoke(lease)  # gone already: fine
    finally:
        await client.aclose()


async def test_a_watch_brings_puts_and_deletes_and_reports_compaction(etcd: EtcdServer) -> None:
    client = client_of(etcd.url)
    try:
        first, _ = await client.put("/t/w", b"1")
        await client.delete("/t/w")
        events = []
        with trio.fail_after(10):
            async with aclosing(client.watch("/t/", first)) as batches:
                async for batch in batches:
                    events += batch.events
                    if len(events) == 2:
                        break
        assert [(e.kv.key, e.deleted) for e in events] == [("/t/w", False), ("/t/w", True)]
        last, _ = await client.put("/t/w", b"2")
        await client.call("/v3/kv/compaction", {"revision": str(last)})
        with trio.fail_after(10):
            async with aclosing(client.watch("/t/", first)) as watch:
                seen = [batch async for batch in watch]
        assert seen[-1].compacted and not any(b.events for b in seen)
    finally:
        await client.aclose()


async def test_endpoints_are_tried_in_turn_and_none_answering_names_etcd(
    etcd: EtcdServer, closed_address: ClosedAddress
) -> None:
    down = f"http://{closed_address()}"
    client = client_of(down, etcd.url)
    try:
        assert (await client.range("/t/none")).revision > 0
    finally:
        await client.aclose()
    client = client_of(down)
    try:
        with pytest.raises(StoreUnavailable, match=r"^etcd unreachable \(http://127\.0\.0\.1:"):
            await client.range("/t/none")
    finally:
        await client.aclose()


async def test_user_and_password_from_the_environment(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await etcd.call("/v3/auth/user/add", {"name": "root", "password": "secret"})
    await etcd.call("/v3/auth/role/add", {"name": "root"})
    await etcd.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
    await etcd.call("/v3/auth/enable", {})
    anonymous = client_of(etcd.url)
    try:
        with pytest.raises(StoreUnavailable, match=r"etcd at .* refused /v3/kv/range"):
            await anonymous.range("/t/x")
    finally:
        await anonymous.aclose()
    settings = {"username_env": "TG_ETCD_USER", "password_env": "TG_ETCD_PASSWORD"}
    with pytest.raises(ConfigError, match=r"config_store\.username_env: \$TG_ETCD_USER is not set"):
        client_of(etcd.url, **settings)
    monkeypatch.setenv("TG_ETCD_USER", "root")
    monkeypatch.setenv("TG_ETCD_PASSWORD", "secret")
    client = client_of(etcd.url, **settings)
    try:
        await client.put("/t/x", b"1")
        with trio.fail_after(10):
            async with aclosing(client.watch("/t/", 1)) as batches:
                async for batch in batches:
                    if batch.events:
                        assert batch.events[0].kv.value == b"1"
                        break
    finally:
        await client.aclose()


async def test_tls_with_a_client_certificate(tmp_path: Path, pki: Pki) -> None:
    """``config_store.tls``: etcd's certificate verified against ``ca``, and the client
    certificate etcd requires (``--client-cert-auth``), for calls and the watch alike."""
    need_etcd()
    client_cert = pki.issue("client", "client.test")
    server = EtcdServer(
        tmp_path / "etcd",
        tls=(pki.ca_file, *pki.issue("etcd", "127.0.0.1")),
        client_cert=client_cert,
    )
    await server.start()
    try:
        without = client_of(server.url, tls=StoreTls(ca=pki.ca_file))
        try:
            with pytest.raises(StoreUnavailable, match="etcd unreachable"):
                await without.range("/t/x")
        finally:
            await without.aclose()
        tls = StoreTls(ca=pki.ca_file, cert=client_cert[0], key=client_cert[1])
        client = client_of(server.url, tls=tls)
        try:
            await client.put("/t/x", b"over tls")
            assert [kv.value for kv in (await client.range("/t/x")).kvs] == [b"over tls"]
            with trio.fail_after(10):
                async with aclosing(client.watch("/t/", 1)) as batches:
                    async for batch in batches:
                        if batch.events:
                            assert batch.events[0].kv.value == b"over tls"
                            break
        finally:
            await client.aclose()
    finally:
        await server.stop()
