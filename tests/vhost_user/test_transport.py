"""Transport: servers and clients on unix socket paths, hostile peers
(closing mid-message, never replying, flooding, too many fds), one
connection at a time, reconnect redoing the handshake, no fd left open."""
from __future__ import annotations

import array
import asyncio
import os
import socket
import struct

import pytest

from emu.vhost_user.backend import Backend
from emu.vhost_user.codec import encode, request
from emu.vhost_user.errors import (ConnectFailed, MalformedMessage, PeerClosed, PeerTimeout,
                                   TruncatedMessage)
from emu.vhost_user.client import FrontendClient
from emu.vhost_user.messages import FrontendRequest as F, U64, VringFd, VringState
from emu.vhost_user.transport import BackendClient, BackendServer, MessageStream, connect_unix


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "vhost.sock")


def _server(vu, path, **kw):
    devices = []

    def factory():
        dev = vu.RecordingDevice()
        devices.append(dev)
        return Backend(dev)
    return BackendServer(factory, path=path, **kw), devices


async def _raw_client(path) -> socket.socket:
    return await connect_unix(path)


async def _recv_eof(sock: socket.socket, timeout=2.0) -> bytes:
    """What arrives until the peer closes (a reset counts as a close: the
    peer dropped us with our data unread)."""
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


async def _healthy(path):
    """A fresh front-end can still connect and negotiate."""
    c = FrontendClient(path, timeout=2)
    await c.connect()
    assert (await c.handshake()).queue_num == 1
    await c.close()


def test_server_serves_one_front_end_at_a_time(no_fd_leak, vu, arun, sock_path):
    async def main():
        server, devices = _server(vu, sock_path)
        await server.start()
        c1 = FrontendClient(sock_path)
        await c1.connect()
        await c1.handshake()
        second = await _raw_client(sock_path)
        assert await _recv_eof(second) == b""           # accepted and closed at once
        second.close()
        assert server.rejected == 1
        assert await c1.get_u64(F.GET_QUEUE_NUM) == 1   # the first is unharmed
        await c1.close()
        await asyncio.wait_for(server.connection.done.wait(), 2)
        assert devices[0].calls[-1] == ("disconnected",)
        await _healthy(sock_path)                        # and the next one is served
        assert server.connections == 2
        await server.close()
        assert not os.path.exists(sock_path)
    arun(main())


def test_server_on_an_inherited_listening_fd(no_fd_leak, vu, arun, sock_path):
    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(sock_path)
        lsock.listen()
        server, _ = _server(vu, None, fd=lsock.detach())
        await server.start()
        await _healthy(sock_path)
        await server.close()
    arun(main())


def test_peer_closes_mid_message(no_fd_leak, vu, arun, sock_path):
    async def main():
        server, devices = _server(vu, sock_path)
        await server.start()
        raw = await _raw_client(sock_path)
        conn = await server.wait_connection(2)
        efd = os.eventfd(0, os.EFD_CLOEXEC)
        data, _ = encode(request(F.SET_VRING_CALL, VringFd(0), (efd,)))
        raw.sendmsg([data[:14]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [efd]))])
        os.close(efd)
        raw.close()
        await asyncio.wait_for(conn.done.wait(), 2)
        assert isinstance(conn.error, TruncatedMessage)
        await _healthy(sock_path)
        await server.close()
    arun(main())


def test_malformed_message_costs_only_that_connection(no_fd_leak, vu, arun, sock_path):
    async def main():
        server, _ = _server(vu, sock_path)
        await server.start()
        raw = await _raw_client(sock_path)
        conn = await server.wait_connection(2)
        raw.send(struct.pack("<III", F.GET_FEATURES, 2, 0))        # protocol version 2
        assert await _recv_eof(raw) == b""
        raw.close()
        assert isinstance(conn.error, MalformedMessage)
        await _healthy(sock_path)
        await server.close()
    arun(main())


def test_too_many_fds_is_malformed_and_all_are_closed(no_fd_leak, vu, arun, sock_path):
    async def main():
        server, _ = _server(vu, sock_path)
        await server.start()
        raw = await _raw_client(sock_path)
        conn = await server.wait_connection(2)
        fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(12)]
        data, _ = encode(request(F.SET_VRING_CALL, VringFd(0), (0,)))
        raw.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        for fd in fds:
            os.close(fd)
        assert await _recv_eof(raw) == b""
        raw.close()
        assert isinstance(conn.error, MalformedMessage) and "fds" in str(conn.error)
        await server.close()
    arun(main())


def test_backend_that_never_replies_times_out(no_fd_leak, arun, sock_path):
    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(sock_path)
        lsock.listen()
        lsock.setblocking(False)
        lost = []
        client = FrontendClient(sock_path, timeout=0.2, on_disconnect=lost.append)
        await client.connect()
        peer, _ = await asyncio.get_running_loop().sock_accept(lsock)
        with pytest.raises(PeerTimeout):
            await client.call(F.GET_FEATURES)
        assert client.stream.closed and isinstance(lost[0], PeerTimeout)
        with pytest.raises(PeerClosed):
            await client.call(F.GET_FEATURES)
        await client.close()
        peer.close()
        lsock.close()
    arun(main())


def test_flood_of_requests_is_absorbed(no_fd_leak, vu, arun, sock_path):
    """50 000 messages without replies: processed in order, memory bounded by
    back-pressure (the inbox never grows past its high-water mark)."""
    async def main():
        server, devices = _server(vu, sock_path)
        await server.start()
        raw = await _raw_client(sock_path)
        conn = await server.wait_connection(2)
        one = encode(request(F.SET_VRING_ENABLE, VringState(0, 1)))[0]
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(raw, one * 50000 + encode(request(F.GET_QUEUE_NUM))[0])
        reply = await asyncio.wait_for(loop.sock_recv(raw, 20), 10)
        assert struct.unpack("<IIIQ", reply) == (F.GET_QUEUE_NUM, 5, 8, 1)
        assert devices[0].calls.count(("vring_enable", 0, True)) == 50000
        assert len(conn.stream._inbox) == 0
        raw.close()
        await server.close()
    arun(main(), timeout=30)


def test_flood_from_a_peer_that_never_reads_its_replies(no_fd_leak, vu, arun, sock_path):
    async def main():
        server, _ = _server(vu, sock_path)
        await server.start()
        raw = await _raw_client(sock_path)
        conn = await server.wait_connection(2)
        conn.reply_timeout = 0.3
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        one = encode(request(F.GET_FEATURES))[0]
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_sendall(raw, one * 200000), 10)
        except (ConnectionError, BrokenPipeError):
            pass
        await asyncio.wait_for(conn.done.wait(), 10)
        assert isinstance(conn.error, PeerTimeout)
        raw.close()
        await _healthy(sock_path)
        await server.close()
    arun(main(), timeout=30)


def test_frontend_reconnect_redoes_the_handshake(no_fd_leak, vu, arun, sock_path):
    async def main():
        handshakes = []

        async def redo(client):
            handshakes.append(await client.handshake())

        client = FrontendClient(sock_path, reconnect=0.1, on_reconnect=redo, timeout=2)
        connecting = asyncio.ensure_future(client.connect())   # nobody listens yet: retries
        await asyncio.sleep(0.15)
        assert not connecting.done()
        server, devices = _server(vu, sock_path)
        await server.start()
        await asyncio.wait_for(connecting, 2)
        await client.handshake()
        first = server.connection
        await first.close()                                     # the back-end goes away
        for _ in range(100):
            if handshakes:
                break
            await asyncio.sleep(0.02)
        assert len(handshakes) == 1 and server.connections == 2 and client.connections == 2
        second = server.connection.backend          # a new Backend, negotiated from scratch
        assert second is not first.backend and second.owner and second.protocol_features_set
        assert first.backend.closed and devices[0].calls[-1] == ("disconnected",)
        await client.close()
        await server.close()
    arun(main())


def test_connect_without_reconnect_fails_fast(no_fd_leak, arun, sock_path):
    async def main():
        with pytest.raises(ConnectFailed):
            await FrontendClient(sock_path).connect()
        with pytest.raises(ConnectFailed, match="gave up"):
            await connect_unix(sock_path, reconnect=0.05, timeout=0.2)
    arun(main())


def test_backend_client_reconnects(no_fd_leak, vu, arun, sock_path):
    """A back-end that connects (server=off) to a front-end that listens."""
    async def main():
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(sock_path)
        lsock.listen()
        lsock.setblocking(False)
        loop = asyncio.get_running_loop()
        bclient = BackendClient(sock_path, lambda: Backend(vu.RecordingDevice()), reconnect=0.05)
        await bclient.start()
        for round_ in (1, 2):
            peer, _ = await loop.sock_accept(lsock)
            fe = FrontendClient(sock=peer, timeout=2)
            await fe.connect()
            assert (await fe.handshake()).queue_num == 1
            await fe.close()                 # front-end restarts: the back-end comes back
            await bclient.wait_connection(round_, 2)
        await bclient.close()
        lsock.close()
    arun(main())


def test_stream_send_after_close_and_eof_are_typed(no_fd_leak, arun):
    async def main():
        a, b = socket.socketpair()
        sa = MessageStream(a)
        b.close()
        with pytest.raises(PeerClosed):
            await sa.receive()
        with pytest.raises(PeerClosed):
            sa.send(request(F.SET_FEATURES, U64(1)))
        sa.close()
    arun(main())
