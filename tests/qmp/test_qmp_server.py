"""The QMP server in-process, over real sockets, with a FakeMachine."""
from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import threading

import pytest

from emu.errors import EmuBug
from emu.qmp import MonitorEndpoint, MonitorSetupError, QmpServer
from emu.qmp.commands import COMMANDS
from emu.qmp.server import MAX_SESSIONS

from .qmp_helpers import RawClient, client, serving

pytestmark = pytest.mark.usefixtures("no_fd_leak")


def async_test(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))
    return wrapper


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "qmp.sock")


def error(cls: str, desc: str, **rid) -> dict:
    return {**rid, "error": {"class": cls, "desc": desc}}


async def alive(c: RawClient) -> None:
    """The monitor still answers after whatever came before."""
    r = await c.execute("query-status")
    assert set(r["return"]) == {"status", "singlestep", "running"}


# -- greeting and negotiation -------------------------------------------------------

@async_test
async def test_greeting_shape(sock_path):
    async with serving(sock_path), client(sock_path, negotiate=False) as c:
        assert await c.recv() == {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                                      "package": "emu 0.1.0"},
                                          "capabilities": []}}


@async_test
async def test_negotiation(sock_path):
    async with serving(sock_path), client(sock_path, negotiate=False) as c:
        await c.recv()
        expecting = "Expecting capabilities negotiation with 'qmp_capabilities'"
        assert await c.execute("query-status", id=1) == error("CommandNotFound", expecting, id=1)
        assert await c.execute("no-such-command") == error("CommandNotFound", expecting)
        # we do not offer oob, so a client may not enable it
        assert await c.execute("qmp_capabilities", {"enable": ["oob"]}) == error(
            "GenericError", "Capability 'oob' not available")
        assert await c.execute("qmp_capabilities", {"enable": ["bogus"]}) == error(
            "GenericError", "Parameter 'enable' does not accept value 'bogus'")
        assert await c.execute("qmp_capabilities", {"enable": "oob"}) == error(
            "GenericError", "Invalid parameter type for 'enable', expected: array")
        assert await c.execute("query-status") == error("CommandNotFound", expecting)
        assert await c.execute("qmp_capabilities", id="a") == {"return": {}, "id": "a"}
        assert await c.execute("qmp_capabilities", id="b") == error(
            "CommandNotFound", "Capabilities negotiation is already complete, command ignored", id="b")
        await alive(c)


@pytest.mark.parametrize("rid", [0, -1, "x", None, 1.5, [1, "a"], {"a": {"b": [None]}}, True, 2**64 - 1])
@async_test
async def test_id_is_echoed_whatever_its_value(sock_path, rid):
    async with serving(sock_path), client(sock_path) as c:
        assert (await c.execute("query-name", id=rid))["id"] == rid
        assert (await c.execute("bogus", id=rid))["id"] == rid
        assert (await c.execute("query-name", {"x": 1}, id=rid))["id"] == rid
        await c.send({"id": rid})
        assert await c.response() == error("GenericError", "QMP input lacks member 'execute'", id=rid)


# -- commands -------------------------------------------------------------------------

@async_test
async def test_run_state_commands_and_events(sock_path):
    async with serving(sock_path, machine_kw={"start_paused": True}) as (server, machine), \
            client(sock_path) as c:
        st = await c.execute("query-status")
        assert st == {"return": {"status": "prelaunch", "singlestep": False, "running": False}}
        assert await c.execute("stop") == {"return": {}}           # prelaunch: no STOP, as QEMU
        assert await c.execute("cont") == {"return": {}}
        ev = await c.event("RESUME")
        assert set(ev) == {"timestamp", "event"} and set(ev["timestamp"]) == {"seconds", "microseconds"}
        assert await c.execute("query-status") == {"return": {"status": "running", "singlestep": False,
                                                              "running": True}}
        assert await c.execute("cont") == {"return": {}}           # already running: no event
        assert await c.execute("stop") == {"return": {}}
        await c.event("STOP")
        assert (await c.execute("query-status"))["return"]["status"] == "paused"
        assert await c.execute("system_reset") == {"return": {}}
        ev = await c.event("RESET")
        assert ev["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
        assert (await c.execute("query-status"))["return"]["status"] == "prelaunch"
        assert [e["event"] for e in c.events] == []
        assert machine.calls == ["stop", "cont", "cont", "stop", "system_reset"]


@async_test
async def test_powerdown_and_quit(sock_path):
    async with serving(sock_path) as (server, machine), client(sock_path) as c:
        assert await c.execute("system_powerdown") == {"return": {}}
        await c.event("POWERDOWN")
        ev = await c.event("SHUTDOWN")
        assert ev["data"] == {"guest": True, "reason": "guest-shutdown"}
    async with serving(sock_path) as (server, machine), client(sock_path) as c:
        assert await c.execute("quit", id=9) == {"return": {}, "id": 9}
        ev = await c.event("SHUTDOWN")
        assert ev["data"] == {"guest": False, "reason": "host-qmp-quit"}
        assert machine.exit_requested.is_set()


@async_test
async def test_cont_after_guest_shutdown_needs_reset(sock_path):
    async with serving(sock_path, machine_kw={"no_shutdown": True}) as (server, machine), \
            client(sock_path) as c:
        await c.execute("system_powerdown")
        await c.event("SHUTDOWN")
        await c.event("STOP")
        assert not machine.exit_requested.is_set()
        assert (await c.execute("query-status"))["return"]["status"] == "shutdown"
        assert await c.execute("cont") == error("GenericError", "Resetting the Virtual Machine is required")
        await c.execute("system_reset")
        await c.execute("cont")
        await c.event("RESUME")


@async_test
async def test_queries(sock_path):
    async with serving(sock_path, machine_kw={"name": "vm1", "nics": ("a", "b")}) as (server, machine), \
            client(sock_path) as c:
        assert await c.execute("query-version") == {"return": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                                               "package": "emu 0.1.0"}}
        assert await c.execute("query-name") == {"return": {"name": "vm1"}}
        names = [x["name"] for x in (await c.execute("query-commands"))["return"]]
        assert names == list(COMMANDS)
        assert {"qmp_capabilities", "query-status", "stop", "cont", "system_reset", "system_powerdown", "quit",
                "query-version", "query-commands", "query-name", "query-pci", "query-chardev",
                "human-monitor-command", "query-emu-stats", "emu-set-guest-app"} <= set(names)
        assert await c.execute("query-pci") == {"return": machine.query_pci()}
        chardevs = (await c.execute("query-chardev"))["return"]
        assert chardevs == [{"label": "compat_monitor0", "filename": f"unix:{sock_path},server=on",
                             "frontend-open": True}] + machine.query_chardev()
        stats = (await c.execute("query-emu-stats"))["return"]
        assert [d["id"] for d in stats["devices"]] == ["a", "b"]
        assert set(stats["devices"][0]["queues"][0]) == {"index", "name", "packets", "bytes", "drops",
                                                         "errors", "kicks", "calls"}
        only_b = (await c.execute("query-emu-stats", {"device": "b"}))["return"]
        assert [d["id"] for d in only_b["devices"]] == ["b"]
        assert await c.execute("query-emu-stats", {"device": "zz"}) == error("GenericError", "Device 'zz' not found")


@async_test
async def test_query_name_without_name(sock_path):
    async with serving(sock_path), client(sock_path) as c:
        assert await c.execute("query-name") == {"return": {}}


@async_test
async def test_set_guest_app(sock_path):
    async with serving(sock_path) as (server, machine), client(sock_path) as c:
        assert await c.execute("emu-set-guest-app", {"app": "echo", "params": {"rate": 5, "dst": "x"}}) == \
            {"return": {}}
        assert machine.app == ("echo", {"rate": 5, "dst": "x"})
        assert await c.execute("emu-set-guest-app", {"app": "bogus"}) == error(
            "GenericError", "Parameter 'app' does not accept value 'bogus'")
        assert await c.execute("emu-set-guest-app", {"app": "gen", "params": {"x": [1]}}) == error(
            "GenericError", "Invalid parameter type for 'params.x', expected: scalar")
        assert await c.execute("emu-set-guest-app", {"params": {}}) == error(
            "GenericError", "Parameter 'app' is missing")
        assert machine.app == ("echo", {"rate": 5, "dst": "x"})


HMP = [
    ("info status", "VM status: running\r\n"),
    ("  info   status  ", "VM status: running\r\n"),
    ("info version", "7.2.0 (emu 0.1.0)\r\n"),
    ("info name", "vm1\r\n"),
    ("info bogus", "unknown command: 'info bogus'\r\n"),
    ("bogus", "unknown command: 'bogus'\r\n"),
    ("", ""),
    ("info status extra", "status: extraneous characters at the end of line\r\n"
                          "Try \"help info status\" for more information\r\n"),
    ("info network", "nic0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n"
                     " \\ net0: index=0,type=vhost-user,vhost-user to char0\r\n"),
    ("info pci", "  Bus  0, device   2, function 0:\r\n"
                 "    Ethernet controller: PCI device 1af4:1041\r\n"
                 "      PCI subsystem 1af4:1100\r\n"
                 "      IRQ 10, pin A\r\n"
                 "      BAR1: 32 bit memory at 0xfea00000 [0xfea00fff].\r\n"
                 "      BAR4: 64 bit prefetchable memory at 0xffffffffffffffff [0x00003ffe].\r\n"
                 "      id \"nic0\"\r\n"),
]


@pytest.mark.parametrize("line, text", HMP)
@async_test
async def test_human_monitor_command(sock_path, line, text):
    async with serving(sock_path, machine_kw={"name": "vm1"}), client(sock_path) as c:
        assert await c.execute("human-monitor-command", {"command-line": line}) == {"return": text}


@async_test
async def test_hmp_more(sock_path):
    async with serving(sock_path) as (server, machine), client(sock_path) as c:
        out = (await c.execute("human-monitor-command", {"command-line": "info chardev"}))["return"]
        assert out == f"compat_monitor0: filename=unix:{sock_path},server=on\r\n" \
                      "char0: filename=disconnected:unix:/tmp/vu.sock,server=on\r\n"
        out = (await c.execute("human-monitor-command", {"command-line": "info emu-stats"}))["return"]
        assert out.splitlines()[1].split() == ["nic0", "rx0", "10", "640", "0", "0", "3", "4"]
        assert "info pci" in (await c.execute("human-monitor-command", {"command-line": "info"}))["return"]
        assert "system_reset" in (await c.execute("human-monitor-command", {"command-line": "help"}))["return"]
        assert await c.execute("human-monitor-command", {"command-line": "stop"}) == {"return": ""}
        await c.event("STOP")
        assert await c.execute("human-monitor-command", {"command-line": "c", "cpu-index": 0}) == {"return": ""}
        await c.event("RESUME")
        assert await c.execute("human-monitor-command", {"command-line": 5}) == error(
            "GenericError", "Invalid parameter type for 'command-line', expected: string")
        assert await c.execute("human-monitor-command", {}) == error(
            "GenericError", "Parameter 'command-line' is missing")
        assert await c.execute("human-monitor-command", {"command-line": "info pci", "cpu-index": "0"}) == error(
            "GenericError", "Invalid parameter type for 'cpu-index', expected: integer")


@async_test
async def test_hmp_reports_machine_errors_as_text(sock_path):
    async with serving(sock_path, machine_kw={"no_shutdown": True}), client(sock_path) as c:
        await c.execute("system_powerdown")
        assert await c.execute("human-monitor-command", {"command-line": "cont"}) == {
            "return": "Error: Resetting the Virtual Machine is required\r\n"}


# -- bad input: clear errors, the monitor survives ----------------------------------------

BAD = [
    (b"garbage\n", error("GenericError", "JSON parse error, invalid keyword 'garbage'")),
    (b"[1, 2]\n", error("GenericError", "QMP input must be a JSON object")),
    (b'"str"\n', error("GenericError", "QMP input must be a JSON object")),
    (b"42\n", error("GenericError", "QMP input must be a JSON object")),
    (b"}\n", error("GenericError", "JSON parse error, expecting value")),
    (b'{"execute": "query-status",}\n', error("GenericError",
                                              "JSON parse error, expecting property name enclosed in double quotes")),
    (b'{"execute": 1}\n', error("GenericError", "QMP input member 'execute' must be a string")),
    (b'{"execute": "query-status", "arguments": []}\n',
     error("GenericError", "QMP input member 'arguments' must be an object")),
    (b'{"execute": "query-status", "control": {}}\n', error("GenericError", "QMP input member 'control' is unexpected")),
    (b'{"exec-oob": "query-status"}\n', error("GenericError", "QMP input member 'exec-oob' is unexpected")),
    (b'{"foo": 1, "id": 3}\n', error("GenericError", "QMP input member 'foo' is unexpected", id=3)),
    (b'{}\n', error("GenericError", "QMP input lacks member 'execute'")),
    (b'{"execute": "foo"}\n', error("CommandNotFound", "The command foo has not been found")),
    (b'{"execute": "query-status", "arguments": {"x": 1}}\n', error("GenericError", "Parameter 'x' is unexpected")),
    (b'{"execute": "query-emu-stats", "arguments": {"device": 1}}\n',
     error("GenericError", "Invalid parameter type for 'device', expected: string")),
    (b'{"execute": "query-status", "id": 1, "id": 2}\n', error("GenericError", "JSON parse error, duplicate key")),
    (b'{"execute": "query-status", "arguments": {"a": NaN}}\n',
     error("GenericError", "JSON parse error, invalid keyword 'NaN'")),
    (b"[" * 2000 + b"]" * 2000 + b"\n", error("GenericError", "JSON parse error, nesting deeper than 512")),
]


@pytest.mark.parametrize("data, response", BAD, ids=[str(i) for i in range(len(BAD))])
@async_test
async def test_bad_input(sock_path, data, response):
    async with serving(sock_path), client(sock_path) as c:
        await c.send(data)
        assert await c.response() == response
        await alive(c)


@async_test
async def test_huge_line_is_refused_without_buffering(sock_path):
    async with serving(sock_path, max_message=64 << 10) as (server, machine), client(sock_path) as c:
        blob = b'{"execute": "query-status", "arguments": {"x": "' + b"A" * (8 << 20) + b'"}}\n'
        send = asyncio.create_task(c.send(blob))
        assert await c.response(timeout=20) == error("GenericError", "JSON parse error, input exceeds 65536 bytes")
        await send
        await alive(c)
        (session,) = server.sessions
        assert len(session._streamer._buf) == 0


@async_test
async def test_a_machine_bug_costs_one_command(sock_path):
    async with serving(sock_path) as (server, machine), client(sock_path) as c:
        def broken():
            raise RuntimeError("boom")
        machine.query_pci = broken
        assert await c.execute("query-pci") == error("GenericError", "internal error: RuntimeError: boom")
        await alive(c)


@async_test
async def test_an_answer_that_is_not_json_costs_one_command(sock_path):
    async with serving(sock_path) as (server, machine), client(sock_path) as c:
        machine.emu_stats = lambda: {"devices": [object()]}
        r = await c.execute("query-emu-stats", id=4)
        assert r["id"] == 4 and r["error"]["desc"].startswith("internal error: answer is not JSON")
        await alive(c)
        with pytest.raises(EmuBug, match="event BAD is not JSON"):
            server.emit("BAD", {"x": object()})
        await alive(c)


@async_test
async def test_machine_methods_may_be_coroutines(sock_path):
    async with serving(sock_path) as (server, machine), client(sock_path) as c:
        stopped = []

        async def slow_stop():
            await asyncio.sleep(0.05)
            machine.state.stop()
            stopped.append(True)
        machine.stop = slow_stop
        assert await c.execute("stop") == {"return": {}}
        assert stopped == [True]
        await c.event("STOP")


@async_test
async def test_commands_wait_for_a_late_machine(sock_path):
    server = QmpServer()
    await server.add_monitor(MonitorEndpoint("m", path=sock_path, server=True))
    try:
        async with client(sock_path) as c:      # greeting and negotiation need no machine
            assert (await c.execute("query-version"))["return"]["package"] == "emu 0.1.0"
            await c.send({"execute": "query-status", "id": "late"})
            await asyncio.sleep(0.1)
            from .fakes import FakeMachine
            server.attach(FakeMachine(server.emit))
            assert (await c.response())["id"] == "late"
    finally:
        await server.close()


@async_test
async def test_abrupt_disconnects_do_not_disturb_others(sock_path):
    async with serving(sock_path) as (server, machine), client(sock_path) as steady:
        for _ in range(5):
            c = await RawClient.connect(sock_path)
            await c.recv()
            c.writer.write(b'{"execute": "qmp_capabilities"}\n{"execute": "query-pci"}{"exec')
            c.writer.transport.abort()
        await asyncio.sleep(0.05)
        await alive(steady)
        assert server.sessions == {next(iter(server.sessions))}


# -- several monitors, events -----------------------------------------------------------

@async_test
async def test_events_reach_every_negotiated_monitor(tmp_path):
    a_path, b_path = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    async with serving(a_path) as (server, machine):
        await server.add_monitor(MonitorEndpoint("compat_monitor1", path=b_path, server=True))
        async with client(a_path) as a, client(b_path) as b, client(a_path) as a2, \
                client(b_path, negotiate=False) as raw:
            await raw.recv()                       # greeting, but no negotiation: no events
            assert await a.execute("stop") == {"return": {}}
            for c in (a, b, a2):
                ev = await c.event("STOP")
                assert ev["event"] == "STOP"
            await b.execute("cont")
            for c in (a, b, a2):
                await c.event("RESUME")
            assert await raw.execute("query-status") == error(
                "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
            labels = [d["label"] for d in (await a.execute("query-chardev"))["return"]]
            assert labels[:2] == ["compat_monitor0", "compat_monitor1"]


@async_test
async def test_emit_from_another_thread(sock_path):
    async with serving(sock_path) as (server, machine), client(sock_path) as c:
        t = threading.Thread(target=server.emit, args=("VHOST_USER_CONNECTED", {"device": "nic0", "chardev": "c0"}))
        t.start()
        t.join()
        ev = await c.event("VHOST_USER_CONNECTED")
        assert ev["data"] == {"device": "nic0", "chardev": "c0"}
        assert isinstance(ev["timestamp"]["seconds"], int) and 0 <= ev["timestamp"]["microseconds"] < 10**6


@async_test
async def test_a_client_that_never_reads_loses_events_not_memory(sock_path):
    async with serving(sock_path, max_output=256 << 10) as (server, machine), client(sock_path) as c:
        (session,) = server.sessions
        for _ in range(200):
            server.emit("NIC_RX_FILTER_CHANGED", {"name": "nic0", "path": "x" * 16384})
        assert session.events_dropped > 0
        assert session.writer.transport.get_write_buffer_size() <= (256 << 10) + 20000


@async_test
async def test_sessions_per_listener_are_capped(sock_path):
    async with serving(sock_path):
        clients = [await RawClient.connect(sock_path) for _ in range(MAX_SESSIONS)]
        for c in clients:
            await c.recv()
        extra = await RawClient.connect(sock_path)
        with pytest.raises(EOFError):
            await extra.recv()
        await extra.close()
        await clients[0].close()
        await asyncio.sleep(0.05)
        again = await RawClient.connect(sock_path)
        assert "QMP" in await again.recv()
        for c in clients[1:] + [again]:
            await c.close()


@async_test
async def test_pretty_monitor(sock_path):
    server = QmpServer()
    from .fakes import FakeMachine
    server.attach(FakeMachine(server.emit))
    await server.add_monitor(MonitorEndpoint("m", path=sock_path, server=True, pretty=True))
    try:
        reader, writer = await asyncio.open_unix_connection(sock_path)
        head = await reader.readuntil(b"}\r\n")
        assert head.startswith(b'{\n    "QMP": {') and json.loads(head)["QMP"]["capabilities"] == []
        writer.close()
        await writer.wait_closed()
    finally:
        await server.close()


# -- endpoints: fds, client mode, socket files --------------------------------------------

@async_test
async def test_connected_fd_monitor_the_qemumachine_way():
    ours, theirs = socket.socketpair()
    server = QmpServer()
    from .fakes import FakeMachine
    server.attach(FakeMachine(server.emit))
    try:
        await server.add_monitor(MonitorEndpoint("mon", fd=theirs.detach()))
        c = await RawClient.connect("", sock=ours)
        await c.greeting_and_negotiate()
        assert (await c.execute("query-chardev"))["return"][0]["label"] == "mon"
        await c.close()
    finally:
        await server.close()


@async_test
async def test_listening_fd_monitor(tmp_path):
    path = str(tmp_path / "inherited.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen()
    server = QmpServer()
    from .fakes import FakeMachine
    server.attach(FakeMachine(server.emit))
    try:
        await server.add_monitor(MonitorEndpoint("mon", fd=lsock.detach(), server=True))
        for _ in range(2):
            async with client(path) as c:
                await alive(c)
    finally:
        await server.close()


@async_test
async def test_client_mode_monitor_connects_to_the_harness(tmp_path):
    # QEMU 7.2's QEMUMachine listens and lets QEMU connect (-chardev socket,id=mon,path=P).
    path = str(tmp_path / "harness.sock")
    accepted: asyncio.Queue = asyncio.Queue()
    harness = await asyncio.start_unix_server(lambda r, w: accepted.put_nowait((r, w)), path)
    server = QmpServer()
    from .fakes import FakeMachine
    server.attach(FakeMachine(server.emit))
    try:
        await server.add_monitor(MonitorEndpoint("mon", path=path, server=False))
        c = RawClient(*await asyncio.wait_for(accepted.get(), 5))
        await c.greeting_and_negotiate()
        await alive(c)
        await c.close()
    finally:
        await server.close()
        harness.close()
        await harness.wait_closed()


@async_test
async def test_client_mode_reconnects(tmp_path):
    path = str(tmp_path / "harness.sock")
    accepted: asyncio.Queue = asyncio.Queue()
    server = QmpServer()
    from .fakes import FakeMachine
    server.attach(FakeMachine(server.emit))
    # nobody listens yet: with reconnect=, emu keeps trying instead of failing
    await server.add_monitor(MonitorEndpoint("mon", path=path, reconnect=0.05))
    harness = await asyncio.start_unix_server(lambda r, w: accepted.put_nowait((r, w)), path)
    try:
        for _ in range(2):
            c = RawClient(*await asyncio.wait_for(accepted.get(), 5))
            await c.greeting_and_negotiate()
            await c.close()
    finally:
        await server.close()
        harness.close()
        await harness.wait_closed()


@async_test
async def test_setup_errors(tmp_path):
    server = QmpServer()
    missing = str(tmp_path / "nobody.sock")
    with pytest.raises(MonitorSetupError, match=f"^Failed to connect to '{missing}': No such file or directory$"):
        await server.add_monitor(MonitorEndpoint("m", path=missing))
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(MonitorSetupError, match=f"^Failed to bind socket to {regular}: Address already in use$"):
        await server.add_monitor(MonitorEndpoint("m", path=str(regular), server=True))
    assert regular.read_text() == "keep me"
    fd = os.open(regular, os.O_RDONLY)
    with pytest.raises(MonitorSetupError, match=f"^File descriptor '{fd}' is not a socket$"):
        await server.add_monitor(MonitorEndpoint("m", fd=fd))       # the server owns (and closed) it
    with pytest.raises(MonitorSetupError, match="^Unable to use fd 9999: Bad file descriptor$"):
        await server.add_monitor(MonitorEndpoint("m", fd=9999))
    udp = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with pytest.raises(MonitorSetupError, match="is not a stream socket$"):
        await server.add_monitor(MonitorEndpoint("m", fd=udp.detach()))
    await server.close()


@async_test
async def test_socket_file_lifecycle(sock_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)            # a socket file left by a dead process
    stale.close()
    async with serving(sock_path), client(sock_path) as c:
        await alive(c)
    assert not os.path.exists(sock_path)


@async_test
async def test_wait_for_clients_holds_until_the_first_client(sock_path):
    server = QmpServer()
    from .fakes import FakeMachine
    server.attach(FakeMachine(server.emit))
    await server.add_monitor(MonitorEndpoint("m", path=sock_path, server=True, wait=True))
    try:
        waiter = asyncio.create_task(server.wait_for_clients())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        async with client(sock_path) as c:
            await asyncio.wait_for(waiter, 5)
            await alive(c)
    finally:
        await server.close()


# -- the machine contract ----------------------------------------------------------------

def test_fake_machine_satisfies_the_protocol():
    from emu.qmp import MachineControl

    from .fakes import FakeMachine
    assert isinstance(FakeMachine(lambda *a: None), MachineControl)


def test_run_state_rules():
    from emu.qmp import QmpError, RunState
    events: list = []
    rs = RunState(lambda name, data: events.append((name, data)), start_paused=True, no_shutdown=True)
    assert (rs.state, rs.stop(), events) == ("prelaunch", False, [])
    assert rs.cont() and rs.state == "running" and events == [("RESUME", None)]
    assert not rs.cont()
    assert rs.stop() and events[-1] == ("STOP", None)
    assert rs.reset() and rs.state == "prelaunch"
    assert events[-1] == ("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
    rs.cont()
    assert rs.shutdown(guest=True, reason="guest-shutdown") is False       # -no-shutdown: stay
    assert events[-2:] == [("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"}), ("STOP", None)]
    with pytest.raises(QmpError, match="Resetting the Virtual Machine is required"):
        rs.cont()
    assert rs.shutdown(guest=False, reason="host-qmp-quit") is True        # quit always exits


@async_test
async def test_hmp_quit(sock_path):
    async with serving(sock_path) as (server, machine), client(sock_path) as c:
        assert await c.execute("human-monitor-command", {"command-line": "q"}) == {"return": ""}
        assert (await c.event("SHUTDOWN"))["data"]["reason"] == "host-qmp-quit"
        assert machine.exit_requested.is_set()
