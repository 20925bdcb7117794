"""qemu.qmp's own clients against emu's QMP server (in-process)."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import pytest
from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from emu.qmp import MonitorEndpoint, QmpServer

from .fakes import FakeMachine
from .qmp_helpers import serving
from .test_qmp_server import async_test

pytestmark = pytest.mark.usefixtures("no_fd_leak")


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "qmp.sock")


@async_test
async def test_async_client_over_a_unix_path(sock_path):
    async with serving(sock_path, machine_kw={"name": "vm1"}):
        qmp = QMPClient("emu-test")
        await qmp.connect(sock_path)
        try:
            assert qmp.greeting.QMP.version["qemu"]["major"] == 7
            assert qmp.greeting.QMP.capabilities == []
            assert await qmp.execute("query-name") == {"name": "vm1"}
            assert (await qmp.execute("query-status"))["running"] is True
            with pytest.raises(ExecuteError) as e:
                await qmp.execute("no-such-command")
            assert e.value.error_class == "CommandNotFound"
            with qmp.listener() as listener:
                await qmp.execute("stop")
                ev = await asyncio.wait_for(listener.get(), 5)
                assert ev["event"] == "STOP"
            assert await qmp.execute("quit") == {}
            ev = await asyncio.wait_for(qmp.events.get(), 5)
            while ev["event"] != "SHUTDOWN":
                ev = await asyncio.wait_for(qmp.events.get(), 5)
            assert ev["data"] == {"guest": False, "reason": "host-qmp-quit"}
        finally:
            await qmp.disconnect()


@async_test
async def test_async_client_over_a_connected_socket():
    ours, theirs = socket.socketpair()
    server = QmpServer()
    server.attach(FakeMachine(server.emit))
    qmp = QMPClient("emu-test")
    try:
        await server.add_monitor(MonitorEndpoint("mon", fd=theirs.detach()))
        await qmp.connect(ours)
        assert (await qmp.execute("query-chardev"))[0]["label"] == "mon"
        await qmp.execute("human-monitor-command", {"command-line": "info status"})
    finally:
        await qmp.disconnect()
        ours.close()
        await server.close()


@contextlib.contextmanager
def server_thread(*endpoints: MonitorEndpoint, **machine_kw):
    """The server in its own loop thread, for the blocking legacy client."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    def run():
        asyncio.set_event_loop(loop)
        server = QmpServer()
        holder["machine"] = FakeMachine(server.emit, **machine_kw)
        server.attach(holder["machine"])
        holder["server"] = server
        for ep in endpoints:
            loop.run_until_complete(server.add_monitor(ep))
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.close())
        loop.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(5)
    try:
        yield holder["server"], holder["machine"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


@contextlib.contextmanager
def legacy(address, server: bool = False):
    """A QEMUMonitorProtocol, closed with the event loop it creates for itself.

    As QEMUMachine._close_qmp_connection: EOF at close means the VM has
    gone away, which is expected after ``quit``.
    """
    qmp = QEMUMonitorProtocol(address, server=server)
    try:
        yield qmp
    finally:
        try:
            qmp.close()
        except EOFError:
            pass
        qmp._aloop.close()
        asyncio.set_event_loop(None)


def event_wait(qmp: QEMUMonitorProtocol, name: str, timeout: float = 5.0) -> dict:
    """What QEMUMachine.event_wait does: pull events until one matches."""
    while True:
        ev = qmp.pull_event(wait=timeout)
        if ev is None:
            raise TimeoutError(name)
        if ev["event"] == name:
            return ev


def test_legacy_client_over_a_unix_path(sock_path):
    with server_thread(MonitorEndpoint("compat_monitor0", path=sock_path, server=True)) as (server, machine), \
            legacy(sock_path) as qmp:
        greeting = qmp.connect()
        assert greeting["QMP"]["version"]["qemu"] == {"micro": 0, "minor": 2, "major": 7}
        assert qmp.cmd("query-status") == {"status": "running", "singlestep": False, "running": True}
        resp = qmp.cmd_obj({"execute": "bogus", "id": "x"})
        assert resp == {"id": "x", "error": {"class": "CommandNotFound",
                                             "desc": "The command bogus has not been found"}}
        assert qmp.cmd("stop") == {}
        assert event_wait(qmp, "STOP")["event"] == "STOP"
        assert qmp.cmd("quit") == {}
        assert event_wait(qmp, "SHUTDOWN")["data"] == {"guest": False, "reason": "host-qmp-quit"}
        assert machine.exit_requested.is_set()


def test_legacy_client_as_server_the_qemu72_qemumachine_way(sock_path):
    # QEMUMachine (QEMU 7.2) listens on a path and the VM connects to it.
    with legacy(sock_path, server=True) as qmp:
        with server_thread(MonitorEndpoint("mon", path=sock_path, server=False)):
            qmp.accept(timeout=5)
            assert qmp.cmd("query-status")["running"] is True
            assert qmp.cmd("quit") == {}
            assert event_wait(qmp, "SHUTDOWN")["data"]["reason"] == "host-qmp-quit"
