"""The emu process in qtest mode, launched as libqtest launches its binary
(emu.testing.qtest.QtestMachine): it connects to both sockets, serves the
qtest stream over its machine, counts refusals, survives a client that
goes away (a new one is served), writes the -qtest-log, and exits 0 on
SIGTERM.  Bad command lines fail at once with the option named."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from emu.testing.qtest import QtestClient, QtestMachine, emu_binary

DEADLINE = 60.0


def run_emu(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True,
                          timeout=DEADLINE, stdin=subprocess.DEVNULL)


def test_the_console_script_has_the_name_libqtest_needs():
    # libqtest takes the architecture from the binary's name: *-system-x86_64
    script = emu_binary()
    assert script[0].endswith("/emu-system-x86_64") and os.access(script[0], os.X_OK)


def test_sigterm_ends_the_process_with_status_0(tmp_path):
    vm = QtestMachine(["-M", "pc"]).start()
    assert vm.qtest.endianness() == "little"
    assert vm.qmp.command("query-status")["status"] == "running"
    pid = vm.proc.pid
    assert vm.terminate() == 0, vm.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_sigterm_while_a_command_stream_is_in_flight_still_exits_0():
    vm = QtestMachine(["-M", "pc"]).start()
    # pipeline many commands without reading the replies, then SIGTERM
    vm.qtest.sock.sendall(b"readl 0x100000\n" * 20000)
    assert vm.terminate() == 0, vm.stderr


def test_refused_commands_are_counted_in_query_emu_stats():
    with QtestMachine(["-M", "pc"]) as vm:
        q = vm.qtest
        assert q.raw("frob") == "FAIL Unknown command 'frob'"
        assert q.raw("outb 0x10000 1").startswith("FAIL port")
        q.writel(0x100000, 7)
        assert q.raw("read 0x100000 0x0") == "FAIL SIZE must not be 0"
        assert q.readl(0x100000) == 7
        stats = vm.qmp.command("query-emu-stats")["qtest"]
        assert stats["refused"] == {"frob": 1, "outb": 1, "read": 1}
        assert stats["refused_total"] == 3 and stats["commands"] == 5
        assert stats["connections"] == 1 and stats["last_error"] == "read: SIZE must not be 0"


def test_a_client_that_goes_away_and_a_new_one(tmp_path):
    path = str(tmp_path / "qt.sock")
    log = tmp_path / "qtest.log"
    vm = QtestMachine(["-M", "pc", "-chardev", f"socket,id=qt,path={path},server=on,wait=off",
                       "-qtest", "chardev:qt"], qtest_log=str(log), own_qtest=False).start()
    try:
        deadline = time.monotonic() + DEADLINE
        while not os.path.exists(path):
            assert time.monotonic() < deadline and vm.proc.poll() is None
            time.sleep(0.01)

        def connect() -> QtestClient:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            return QtestClient(s, DEADLINE)
        first = connect()
        first.writel(0x100000, 0xfeedf00d)
        first.irq_intercept_in("ioapic")
        first.set_irq_in("ioapic", 3, 1)
        assert first.irq_level == {3: True}
        first.sock.sendall(b"readl 0x100000\n")     # a command whose reply is never read
        first.sock.close()
        second = connect()
        # the machine's state stays; the intercepted device is the process's
        assert second.readl(0x100000) == 0xfeedf00d
        assert second.raw("irq_intercept_in /machine/i440fx") == \
            "FAIL IRQ intercept already enabled"
        assert second.raw("irq_intercept_in ioapic") == "OK"
        second.set_irq_in("ioapic", 3, 0)           # levels started again at 0 for us
        second.set_irq_in("ioapic", 3, 1)
        assert second.irq_level == {3: True}
        third = socket.socket(socket.AF_UNIX)       # waits while the second is served
        third.connect(path)
        third.sendall(b"readl 0x100000\n")
        assert second.readl(0x100000) == 0xfeedf00d
        assert vm.qmp.command("query-emu-stats")["qtest"]["connections"] == 2
        second.sock.close()
        t = QtestClient(third, DEADLINE)
        assert t._lines.readline() == b"OK 0x00000000feedf00d"
        assert vm.qmp.command("query-emu-stats")["qtest"]["connections"] == 3
        third.close()
    finally:
        assert vm.terminate() == 0, vm.stderr
    text = log.read_text().splitlines()
    assert [line.split("] ")[1] for line in text if line.startswith("[I ")] == \
        ["OPENED", "CLOSED"] * 3
    assert text[0] == "[I 0.000000] OPENED"
    assert any(line.endswith("] writel 0x100000 0xfeedf00d") and line.startswith("[R +")
               for line in text)
    assert any(line.startswith("[S +") and line.endswith("] IRQ raise 3") for line in text)
    assert not os.path.exists(path)                 # the listener's socket is removed


def test_the_qtest_log_records_the_conversation(tmp_path):
    log = tmp_path / "q.log"
    with QtestMachine(["-machine", "none"], qtest_log=str(log)) as vm:
        vm.qtest.raw("inb 0x80")
        vm.qtest.raw("bogus")
    lines = log.read_text().splitlines()
    assert lines[0] == "[I 0.000000] OPENED"
    body = [line.split("] ", 1)[1] for line in lines[1:]]
    assert body == ["inb 0x80", "OK 0x00ff", "bogus", "FAIL Unknown command 'bogus'", "CLOSED"]
    assert all(line.startswith(("[R +", "[S +", "[I +")) for line in lines[1:])


@pytest.mark.parametrize("args, message", [
    (["-qtest", "unix:/nonexistent/dir/q.sock"],
     "emu: -qtest unix:/nonexistent/dir/q.sock: Failed to connect to "
     "'/nonexistent/dir/q.sock': No such file or directory"),
    (["-qtest", "chardev:nope"], 'emu: -qtest chardev:nope: chardev "nope" not found'),
    (["-qtest", "tcp:localhost:1"], "emu: -qtest tcp:localhost:1: 'tcp:localhost:1' is not "
     "a valid char driver"),
    (["-qtest", "unix:/tmp/x", "-qtest", "unix:/tmp/y"], "only one -qtest"),
    (["-accel", "qtest", "-M", "pc", "-guest", "virtio-net,app=sink"],
     "no guest program runs under the qtest accelerator"),
])
def test_bad_qtest_command_lines_fail_at_once_naming_the_option(args, message):
    out = run_emu(["-display", "none", "-machine", "none", *args])
    assert out.returncode == 1
    assert message in out.stderr, out.stderr


def test_a_qtest_log_that_cannot_be_opened_names_the_option(tmp_path):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "q.sock"))
    listener.listen(1)
    try:
        out = run_emu(["-display", "none", "-machine", "none", "-accel", "qtest",
                       "-qtest", f"unix:{tmp_path}/q.sock", "-qtest-log", "/nonexistent/dir/log"])
    finally:
        listener.close()
    assert out.returncode == 1
    assert "emu: -qtest-log /nonexistent/dir/log: cannot open the log: No such file or " \
        "directory" in out.stderr


def test_the_probe_gets_qemus_shapes():
    with QtestMachine(["-machine", "none"]) as vm:
        machines = vm.qmp.command("query-machines")
        types = vm.qmp.command("qom-list-types", implements="device", abstract=True)
    allowed = {"name", "alias", "is-default", "cpu-max", "hotpluggable-cpus",
               "numa-mem-supported", "deprecated", "default-cpu-type", "default-ram-id"}
    assert all(set(m) <= allowed for m in machines)
    assert any(m.get("alias") == "pc" for m in machines)
    assert all(set(t) <= {"name", "abstract", "parent"} for t in types)
    assert {"name": "virtio-net-pci", "parent": "virtio-net-pci-base"} in types


def test_a_listening_qtest_socket_holds_start_up_until_a_client_comes(tmp_path):
    path = str(tmp_path / "q.sock")
    vm = QtestMachine(["-machine", "none", "-qtest", f"unix:{path},server=on"],
                      own_qtest=False)
    # wait=on: the monitor connects first (libqtest's order does not matter), the
    # machine starts only once a qtest client is there
    vm.start()
    try:
        assert vm.qmp.command("query-machines")       # answered before the machine runs
        s = socket.socket(socket.AF_UNIX)
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert time.monotonic() < deadline and vm.proc.poll() is None
                time.sleep(0.01)
        q = QtestClient(s, DEADLINE)
        assert q.endianness() == "little"
        assert vm.qmp.command("query-status")["status"] == "running"
        s.close()
    finally:
        assert vm.terminate() == 0, vm.stderr


def test_a_qtest_client_chardev_with_reconnect_comes_back(tmp_path):
    path = str(tmp_path / "q.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(DEADLINE)
    vm = QtestMachine(["-M", "pc", "-qtest", f"unix:{path},reconnect=1"], own_qtest=False).start()
    try:
        conn, _ = listener.accept()
        first = QtestClient(conn, DEADLINE)
        first.writel(0x100000, 0x5a5a5a5a)
        conn.close()
        conn, _ = listener.accept()                   # emu connects again a second later
        again = QtestClient(conn, DEADLINE)
        assert again.readl(0x100000) == 0x5a5a5a5a
        assert vm.qmp.command("query-emu-stats")["qtest"]["connections"] == 2
        conn.close()
    finally:
        listener.close()
        assert vm.terminate() == 0, vm.stderr


def test_sigterm_while_start_up_waits_for_a_qtest_client_exits_0(tmp_path):
    path = str(tmp_path / "q.sock")
    vm = QtestMachine(["-machine", "none", "-qtest", f"unix:{path},server=on"],
                      own_qtest=False).start()
    deadline = time.monotonic() + DEADLINE
    while not os.path.exists(path):               # listening, holding start-up
        assert time.monotonic() < deadline and vm.proc.poll() is None
        time.sleep(0.01)
    assert vm.terminate() == 0, vm.stderr
    assert not os.path.exists(path)
