"""``gateway.netio.SocketIO`` over real loopback sockets: a receive that has to wait
wakes on data, on the peer's close, and not after a cancellation; a close while another
task waits wakes it; a descriptor number used again works like a new one (what a
persistent readiness registration would have to get right; see bench/README.md)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from gateway.netio import SocketIO


def connected_pair() -> tuple[SocketIO, socket.socket]:
    """A ``SocketIO`` and its peer, a plain blocking socket, joined over loopback TCP."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
    return SocketIO(conn), peer


async def test_a_receive_waits_for_data_that_comes_later() -> None:
    io, peer = connected_pair()
    with peer:
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def receive() -> None:
                got.append(await io.receive_some(100))

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # parked on the poller
            peer.sendall(b"hello")
        assert got == [b"hello"]
        io.close()


async def test_the_registration_serves_every_wait_of_a_connection() -> None:
    # an edge-triggered registration made once must wake every later wait, including
    # those after data was read without waiting
    io, peer = connected_pair()
    with peer:
        for i in range(200):
            async with trio.open_nursery() as nursery:
                got: list[bytes] = []

                async def receive(got: list[bytes] = got) -> None:
                    got.append(await io.receive_some(100))

                nursery.start_soon(receive)
                if i % 2:
                    await trio.testing.wait_all_tasks_blocked()  # waits, then data
                peer.sendall(b"%d" % i)
            assert got == [b"%d" % i]
        io.close()


async def test_a_cancelled_wait_leaves_the_socket_readable_later() -> None:
    io, peer = connected_pair()
    with peer:
        with trio.move_on_after(0.05) as scope:
            await io.receive_some(100)
        assert scope.cancelled_caught
        peer.sendall(b"after")
        with trio.fail_after(5):
            assert await io.receive_some(100) == b"after"
        io.close()


async def test_the_peers_close_wakes_a_waiting_receive_with_eof() -> None:
    io, peer = connected_pair()
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def receive() -> None:
            got.append(await io.receive_some(100))

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        peer.close()
    assert got == [b""]
    io.close()


async def test_closing_the_socket_wakes_the_task_waiting_on_it() -> None:
    io, peer = connected_pair()
    with peer:
        async with trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def receive() -> None:
                try:
                    await io.receive_some(100)
                except trio.ClosedResourceError as e:
                    failed.append(e)

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            io.close()
        assert len(failed) == 1


async def test_two_readers_of_one_socket_are_refused() -> None:
    io, peer = connected_pair()
    with peer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(io.receive_some, 100)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await io.receive_some(100)
            peer.sendall(b"x")  # lets the first one finish
        io.close()


async def test_a_descriptor_number_used_again_waits_like_a_new_one() -> None:
    # a closed socket's number comes back for the next one: it must be registered anew
    for _ in range(3):
        io, peer = connected_pair()
        with peer:
            async with trio.open_nursery() as nursery:
                got: list[bytes] = []

                async def receive(io: SocketIO = io, got: list[bytes] = got) -> None:
                    got.append(await io.receive_some(100))

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                peer.sendall(b"again")
            assert got == [b"again"]
            io.close()
