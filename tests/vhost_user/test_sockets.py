"""Listening and connecting sockets (emu.vhost_user.sockets): errors that
name the path and, from the command line, the option (class 8); backlogs
that hold the connections a server takes; reconnect that backs off after
every failure, whatever the errno (class 3)."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from emu.vhost_user.backend import Backend
from emu.vhost_user.client import FrontendClient
from emu.vhost_user.errors import ConnectFailed, SocketSetupError
from emu.vhost_user.sockets import Backoff, backlog_for, connect_unix, listen_unix
from emu.vhost_user.transport import BackendClient, BackendServer


@pytest.fixture
def short_dir():
    import tempfile
    d = tempfile.mkdtemp(prefix="emu-s-", dir="/tmp")     # sun_path is 108 bytes
    yield d
    import shutil
    shutil.rmtree(d, ignore_errors=True)


# -- listen errors ------------------------------------------------------------------------------

def test_listen_on_a_directory_names_it(short_dir):
    with pytest.raises(SocketSetupError, match=f"Failed to bind socket to {short_dir}: "
                                               "Is a directory") as e:
        listen_unix(short_dir)
    assert e.value.path == short_dir


def test_listen_on_a_file_leaves_it_alone(short_dir):
    path = os.path.join(short_dir, "data")
    with open(path, "w") as f:
        f.write("keep me")
    with pytest.raises(SocketSetupError, match="not a socket"):
        listen_unix(path)
    assert open(path).read() == "keep me"


def test_listen_on_a_path_too_long():
    path = "/tmp/" + "x" * 200
    with pytest.raises(SocketSetupError, match="is too long") as e:
        listen_unix(path)
    assert e.value.path == path


def test_listen_in_a_missing_directory(short_dir):
    path = os.path.join(short_dir, "no", "such.sock")
    with pytest.raises(SocketSetupError, match="No such file or directory"):
        listen_unix(path)


def test_a_stale_socket_is_replaced(short_dir):
    path = os.path.join(short_dir, "s.sock")
    old = listen_unix(path)
    old.close()                                   # the file stays: a dead server's socket
    new = listen_unix(path)
    try:
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        c.close()
    finally:
        new.close()


# -- backlogs -----------------------------------------------------------------------------------

def test_a_burst_of_max_connections_clients_all_get_in(no_fd_leak, vu, arun, short_dir):
    """64 front-ends connect before the server's loop runs once: the
    backlog holds them all (it was 4: the fifth got EAGAIN)."""
    path = os.path.join(short_dir, "s.sock")

    async def main():
        server = BackendServer(lambda: Backend(vu.RecordingDevice()), path=path,
                               max_connections=64)
        await server.start()
        clients = []
        try:
            for _ in range(64):                   # no await: nothing is accepted meanwhile
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                clients.append(s)
                s.connect(path)                   # BlockingIOError here was the bug
            await asyncio.sleep(0.2)
            assert server.rejected == 0
        finally:
            for s in clients:
                s.close()
            await server.close()
    arun(main())


def test_backlog_for():
    assert backlog_for(1) == 5 and backlog_for(64) == 68
    assert backlog_for(10 ** 6) == socket.SOMAXCONN


# -- connect: a full backlog is a failure, not a connection ----------------------------------------

def _full_listener(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A listener that never accepts, its backlog filled."""
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(0)
    queued = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return ls, queued
        queued.append(s)


def test_connect_into_a_full_backlog_fails_and_says_why(no_fd_leak, arun, short_dir):
    path = os.path.join(short_dir, "full.sock")
    ls, queued = _full_listener(path)
    try:
        async def main():
            with pytest.raises(ConnectFailed, match="listen backlog is full") as e:
                await connect_unix(path)
            assert e.value.path == path
            backoff = Backoff(0.1)
            with pytest.raises(ConnectFailed, match="gave up"):
                await connect_unix(path, reconnect=0.1, timeout=0.6, backoff=backoff)
            assert 3 <= backoff.failures <= 12      # 50 ms, 100 ms, 100 ms...: not thousands
        arun(main())
    finally:
        for s in queued:
            s.close()
        ls.close()


def test_front_end_reconnect_backs_off_from_a_full_backlog(no_fd_leak, arun, short_dir):
    """The adversarial run's spin: asyncio called the EAGAIN connect
    connected, set-up failed with ENOTCONN, _reconnect retried at once
    (~4,500 attempts a second)."""
    path = os.path.join(short_dir, "full.sock")
    ls, queued = _full_listener(path)
    try:
        async def main():
            client = FrontendClient(path, reconnect=0.2, timeout=1)
            task = asyncio.ensure_future(client.connect())
            await asyncio.sleep(1.0)
            assert not task.done()                 # still trying: nothing is "connected"
            assert client.backoff.failures <= 12
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.close()
        arun(main())
    finally:
        for s in queued:
            s.close()
        ls.close()


def _dropping_listener(path: str, accepted: list):
    """A peer whose socket is there but which drops every connection."""
    async def serve():
        ls = listen_unix(path)
        loop = asyncio.get_running_loop()
        try:
            while True:
                conn, _ = await loop.sock_accept(ls)
                accepted.append(1)
                conn.close()
        finally:
            ls.close()
    return asyncio.ensure_future(serve())


def test_front_end_reconnect_backs_off_from_a_peer_that_drops_it(no_fd_leak, arun, short_dir):
    path = os.path.join(short_dir, "drop.sock")

    async def main():
        accepted = []
        server = _dropping_listener(path, accepted)
        client = FrontendClient(path, reconnect=0.2, timeout=1)
        await client.connect()
        await asyncio.sleep(1.5)
        # 50 ms, 100 ms, then every 200 ms: about 8 in 1.5 s (was: as fast as the loop went)
        assert 2 <= len(accepted) <= 15, len(accepted)
        await client.close()
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    arun(main())


def test_back_end_client_reconnect_backs_off_from_a_peer_that_drops_it(no_fd_leak, vu, arun,
                                                                       short_dir):
    path = os.path.join(short_dir, "drop.sock")

    async def main():
        accepted = []
        server = _dropping_listener(path, accepted)
        client = BackendClient(path, lambda: Backend(vu.RecordingDevice()), reconnect=0.2)
        await client.start()
        await asyncio.sleep(1.5)
        assert 2 <= len(accepted) <= 15, len(accepted)
        await client.close()
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    arun(main())


def test_backoff_doubles_and_a_connection_that_lasted_resets_it(monkeypatch):
    b = Backoff(1.0)
    assert [b.next() for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    now = [100.0]
    monkeypatch.setattr("emu.vhost_user.sockets.time.monotonic", lambda: now[0])
    b.up()
    now[0] += 0.1
    assert b.down() == 1.0                 # a short-lived connection is one more failure
    b.up()
    now[0] += Backoff.PROVED
    assert b.down() == 0.05                # one that stayed up resets the delays


# -- from the command line: the option and the path ---------------------------------------------

@pytest.mark.parametrize("kind", ["directory", "file", "too-long"])
@pytest.mark.parametrize("role", ["vhost-pci-net", "netdev-server", "netdev-client"])
def test_emu_names_the_option_and_the_path(short_dir, kind, role):
    if kind == "directory":
        path = short_dir
    elif kind == "file":
        path = os.path.join(short_dir, "file")
        open(path, "w").close()
    else:
        path = "/tmp/" + "y" * 200
    server = ",server=on,wait=off" if role != "netdev-client" else ""
    chardev = f"socket,id=c0,path={path}{server}"
    args = ["-m", "64M", "-display", "none", "-chardev", chardev]
    if role == "vhost-pci-net":
        args += ["-device", "vhost-pci-net,chardev=c0"]
    else:
        args += ["-netdev", "vhost-user,id=n0,chardev=c0", "-device", "virtio-net-pci,netdev=n0"]
    p = subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr)
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"emu: -chardev {chardev}: "), last
    assert path in last[len(f"emu: -chardev {chardev}: "):], last
    assert "Errno" not in last
    if kind == "file":
        assert os.path.isfile(path)
