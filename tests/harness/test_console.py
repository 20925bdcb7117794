"""The serial console as harnesses use it: QEMU's ``QEMUMachine.set_console()``
and ``console_socket`` with avocado-style pattern waits, and the other
chardevs a console may sit on (file, stdio, pty, a client socket).

QEMU 7.2's python package (``qemu.machine`` and the ``qemu.qmp`` it was
written for) is read from QEMU's source tree, which
scripts/build-qemu-tests.sh unpacks under /var/cache/emu/qemu (CI builds
that cache; emu itself never imports it), in a child process so that its
qemu.qmp is the one used.  The same protocol is also spoken by hand: the
chardev and ``-serial`` options QEMUMachine passes, a unix socket, the QMP
client emu's harness uses.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from emu.testing.launch import vm1_args, vm2_args, wait_until

pytestmark = pytest.mark.usefixtures("no_fd_leak")

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "build-qemu-tests.sh")


@pytest.fixture(scope="module")
def qemu_python() -> str:
    """QEMU 7.2's python directory, from the source tree build-qemu-tests.sh
    unpacks (cached: it returns at once; cold: it builds, as CI does)."""
    out = subprocess.run([BUILD_SCRIPT], capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, f"build-qemu-tests.sh failed:\n{out.stderr[-4000:]}"
    qos = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)["QOS_TEST"]
    path = os.path.join(qos.split("/build/")[0], "src", "python")
    assert os.path.isdir(os.path.join(path, "qemu", "machine")), path
    return path


class Console:
    """avocado_qemu's wait_for_console_pattern / exec_command_and_wait_for_pattern."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.file = sock.makefile("rb")
        self.lines: list[str] = []

    def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.1, end - time.monotonic()))
            try:
                raw = self.file.readline()
            except socket.timeout:
                raw = b""
            if not raw:
                raise AssertionError(f"no console line with {pattern!r}; got {self.lines}")
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.lines.append(line)
            if pattern in line:
                return line

    def exec(self, command: str, pattern: str) -> str:
        self.sock.sendall(command.encode() + b"\r")      # as avocado's exec_command
        return self.wait_for(pattern)

    def close(self) -> None:
        self.file.close()


def vm2_console_args(sock: str) -> list[str]:
    return vm2_args(sock, ram="64M", app="echo")


@pytest.mark.timeout(3900)          # a cold build-qemu-tests.sh run comes first
def test_qemumachine_console_socket_and_pattern_waits(emu_binary, emu_vm_factory, qemu_python):
    """QEMU's own QEMUMachine (and its qemu.qmp), in a child process."""
    sock = emu_vm_factory.path("vp.sock")
    vm1 = vm1_args(sock, ram="64M", params={"size": 64, "count": 0})
    r = subprocess.run([sys.executable, os.path.join(HERE, "qemumachine_console.py"), *emu_binary,
                        "--", *vm2_console_args(sock), "--", *vm1],
                       env={**os.environ, "PYTHONPATH": qemu_python},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["qemu_qmp"].startswith(qemu_python)              # QEMU's package, not pip's
    lines = out["lines"]
    # the boot lines came before the console was connected: they were kept for it
    assert lines[0] == "emu guest: vhost-pci-net driver, app echo, poll mode, booting"
    assert "pci 0000:00:02.0: [1af4:1055]" in lines
    assert any(line.startswith("vhost-pci-net@10: ready") and "peer not connected" in line
               for line in lines)
    assert any("peer changed, peer connected" in line for line in lines)
    assert any(line.startswith("status: app echo running echoed=") for line in lines)
    assert out["answers"]["set-app"] == {"return": {}}
    console = next(c for c in out["answers"]["query-chardev"]["return"] if c["label"] == "console")
    assert console["filename"].startswith("unix:") and console["filename"].endswith(",server=on")
    assert lines[-1] == "guest: power down" and out["exitcode"] == 0


def test_the_same_console_protocol_by_hand(emu_vm_factory):
    """What QEMUMachine passes and does, with a raw socket and emu's QMP client."""
    sock = emu_vm_factory.path("vp.sock")
    path = emu_vm_factory.path("console.sock")
    vm = emu_vm_factory(vm2_console_args(sock) + [
        "-display", "none", "-vga", "none",
        "-chardev", f"socket,id=console,path={path},server=on,wait=off",
        "-serial", "chardev:console"], name="vm2")
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    console = Console(c)
    try:
        console.wait_for("emu guest: vhost-pci-net driver, app echo")
        console.wait_for("app echo: started")
        emu_vm_factory(vm1_args(sock, ram="64M", params={"size": 64, "count": 0}), name="vm1")
        console.wait_for("peer connected")
        console.exec("status", "status: app echo running")
        vm.cmd("system_reset")
        console.wait_for("guest: reboot")
        console.wait_for("app echo: started")
    finally:
        console.close()
        c.close()


def test_a_console_on_a_file_stdio_and_a_pty(emu_vm_factory):
    log = emu_vm_factory.path("console.log")
    sock = emu_vm_factory.path("vp.sock")
    # COM1 on a file (libvirt's -chardev file + -device isa-serial form)
    vm = emu_vm_factory(vm2_console_args(sock) + [
        "-chardev", f"file,id=charserial0,path={log}",
        "-device", '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}'],
        name="file")
    wait_until(lambda: os.path.exists(log) and b"app echo: started" in open(log, "rb").read(),
               timeout=30, what="the console file")
    assert open(log, "rb").read().startswith(b"emu guest: vhost-pci-net driver")
    assert {"label": "charserial0", "filename": "file", "frontend-open": True} in vm.cmd("query-chardev")
    vm.shutdown()
    # COM1 on stdio
    vm = emu_vm_factory(vm2_args(emu_vm_factory.path("vp2.sock"), ram="64M") + ["-serial", "stdio"],
                        name="stdio")
    wait_until(lambda: "app echo: started" in vm.stdout_text(), timeout=30, what="stdout")
    assert {"label": "serial0", "filename": "stdio", "frontend-open": True} in vm.cmd("query-chardev")
    vm.shutdown()
    # COM1 on a pty: its path is in query-chardev and on stderr, as QEMU prints it
    vm = emu_vm_factory(vm2_args(emu_vm_factory.path("vp3.sock"), ram="64M", params={"mode": "poll"})
                        + ["-serial", "pty", "-S"], name="pty")
    pty = next(c["filename"] for c in vm.cmd("query-chardev") if c["label"] == "serial0")
    assert pty.startswith("pty:/dev/pts/")
    assert f"char device redirected to {pty[4:]} (label serial0)" in vm.stderr_text()
    fd = os.open(pty[4:], os.O_RDWR | os.O_NOCTTY)
    try:
        vm.cmd("cont")
        data = b""
        end = time.monotonic() + 30
        while b"app echo: started" not in data and time.monotonic() < end:
            import select
            if select.select([fd], [], [], 0.5)[0]:
                data += os.read(fd, 4096)
        assert b"app echo: started\r\n" in data
    finally:
        os.close(fd)
    vm.shutdown()


def test_a_console_client_chardev_reaches_the_harness(emu_vm_factory):
    # the harness listens; emu connects (-chardev socket without server=on)
    path = emu_vm_factory.path("harness-console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        emu_vm_factory(vm2_console_args(emu_vm_factory.path("vp.sock")) + [
            "-chardev", f"socket,id=con,path={path}", "-serial", "chardev:con"], name="client")
        srv.settimeout(30)
        conn, _ = srv.accept()
        console = Console(conn)
        console.wait_for("app echo: started")
        console.exec("status", "status: app echo running")
        console.exec("bogus", "guest: unknown command 'bogus'")
        console.close()
        conn.close()
    finally:
        srv.close()


def test_no_console_when_the_machine_has_no_serial_port(emu_vm_factory):
    vm = emu_vm_factory(vm2_console_args(emu_vm_factory.path("vp.sock")) + ["-d", "unimp",
                                                                            "-D", emu_vm_factory.path("log")])
    wait_until(lambda: vm.cmd("query-emu-stats").get("guest", {}).get("app") == "echo", timeout=30)
    assert "serial" not in vm.cmd("query-emu-stats")
    # the guest probed COM1 and found nothing there: the probe shows in -d unimp
    wait_until(lambda: "pio: unassigned read (size 1, addr 0x3ff)" in open(emu_vm_factory.path("log")).read(),
               timeout=30, what="the probe in the log")
