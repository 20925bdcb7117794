"""emu's qtest session answers as QEMU 7.2's qtest server does: the same
command script goes to the reference qemu-system-x86_64 (``-machine pc``,
16 MiB of RAM, ``-accel qtest``, connected as libqtest connects it) and to a
session over a target modelled on that machine (RAM, unassigned I/O all
ones, unassigned memory reading zero, the ioapic's inputs); every reply and
the shape of every ``-qtest-log`` line must match."""
from __future__ import annotations

import base64
import io
import os
import re
import socket
import subprocess

import pytest

from emu.qtest.errors import TargetError
from emu.qtest.log import QtestLog
from emu.qtest.session import QtestSession
from .qemu_build import BUILD_TIMEOUT

RAM = 16 << 20
DEADLINE = 60.0

DATA = bytes(range(7, 7 + 48))
SCRIPT = [
    "endianness",
    # the virtual clock (before any IRQ is intercepted: the PIT ticks)
    "clock_step 100", "clock_set 50", "clock_step -5", "clock_set 1000", "clock_step 0x10",
    # I/O ports nothing decodes
    "inb 0x80", "inw 0x1234", "inl 0x1234", "outb 0x1234 0x1ff", "outl 0x1234 -1",
    # RAM, scalar accesses of every size, then buffers
    "writeb 0x100000 0x1ab", "writew 0x100002 0xbeef", "writel 0x100004 0x12345678",
    "writeq 0x100008 0x1122334455667788",
    "readb 0x100000", "readw 0x100002", "readl 0x100004", "readq 0x100008", "readq 0x100001",
    "read 0x100000 0x10", "b64read 0x100000 0x10", "b64read 0x100000 0x0",
    f"write 0x200000 0x{len(DATA):x} 0x{DATA.hex()}", "write 0x200100 0x8 0x0102",
    f"b64write 0x300000 0x{len(DATA):x} {base64.b64encode(DATA).decode()}",
    "read 0x200000 0x30", "read 0x200100 0x8", f"b64read 0x300000 0x{len(DATA):x}",
    "memset 0x400000 0x20 0x1a5", "memset 0x400020 0 0x11", "read 0x400000 0x21",
    "readl 010", "readl 0X100004", "readb +1048576",
    # memory nothing decodes: reads zero, writes vanish
    "writeq 0x2000000 1", "readq 0x2000000", "read 0x2000000 0x4", "readb 0xfffffffffffffff0",
    # what QEMU itself answers FAIL
    "frob", "inq 0x80", "rtas ibm,foo 1 0x0 1 0x0", "irq_intercept_in /machine/nothing",
    "set_irq_in /machine/nothing unnamed-gpio-in 1 1",
    # IRQs: the ioapic's inputs, intercepted; set_irq_in raises through it
    "irq_intercept_in ioapic", "irq_intercept_in ioapic",
    "irq_intercept_out /machine/i440fx",
    "set_irq_in ioapic unnamed-gpio-in 11 1", "set_irq_in ioapic unnamed-gpio-in 11 1",
    "set_irq_in ioapic unnamed-gpio-in 11 0", "set_irq_in ioapic unnamed-gpio-in 5 1",
    "module_load accel tcg",
    "endianness",
]


class PcLike:
    """Enough of QEMU's pc machine for the script above."""

    def __init__(self):
        self.ram = bytearray(RAM)
        self.notify = None

    def io_read(self, port, size):
        return (1 << (8 * size)) - 1

    def io_write(self, port, size, value):
        pass

    def mem_read_bytes(self, addr, length):
        out = bytearray(length)
        if addr < RAM:
            n = min(length, RAM - addr)
            out[:n] = self.ram[addr:addr + n]
        return bytes(out)

    def mem_write_bytes(self, addr, data):
        if addr < RAM:
            n = min(len(data), RAM - addr)
            self.ram[addr:addr + n] = data[:n]

    def mem_read(self, addr, size):
        return int.from_bytes(self.mem_read_bytes(addr, size), "little")

    def mem_write(self, addr, size, value):
        self.mem_write_bytes(addr, value.to_bytes(size, "little"))

    clock = 0

    def clock_step(self, ns):
        self.clock += ns or 0
        return self.clock

    def clock_set(self, ns):
        self.clock = max(self.clock, ns)
        return self.clock

    def resolve_device(self, path):
        # (on QEMU's pc the ioapic is found by its partial path only)
        return {"ioapic": "ioapic", "/machine/i440fx": "i440fx"}.get(path)

    def irq_intercept(self, device, direction, notify):
        self.notify = notify

    def set_irq_in(self, device, name, num, level):
        if device != "ioapic" or name is not None or num >= 24:
            raise TargetError("no such input")
        if self.notify:
            self.notify(num, level)

    def module_load(self, prefix, name):
        return True


def _reference_replies(binary: str, tmp: str) -> tuple[list[str], str]:
    qsock, msock, log = (os.path.join(tmp, n) for n in ("q.sock", "q.qmp", "q.log"))
    listeners = []
    for path in (qsock, msock):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(1)
        s.settimeout(DEADLINE)
        listeners.append(s)
    proc = subprocess.Popen(
        [binary, "-qtest", f"unix:{qsock}", "-qtest-log", log,
         "-chardev", f"socket,path={msock},id=char0", "-mon", "chardev=char0,mode=control",
         "-display", "none", "-machine", "pc", "-nodefaults", "-m", "16M", "-accel", "qtest"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        q, _ = listeners[0].accept()
        m, _ = listeners[1].accept()
        q.settimeout(DEADLINE)
        rx, replies = b"", []
        for cmd in SCRIPT:
            q.sendall(cmd.encode() + b"\n")
            while True:   # a reply, after any IRQ lines
                while b"\n" not in rx:
                    chunk = q.recv(65536)
                    assert chunk, f"QEMU closed the qtest socket at {cmd!r}: {proc.stderr.read()}"
                    rx += chunk
                line, rx = rx.split(b"\n", 1)
                replies.append(line.decode())
                if not line.startswith(b"IRQ "):
                    break
        q.close()
        # quit through QMP: QEMU's log is stdio-buffered until it exits
        m.settimeout(DEADLINE)
        m.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n')
        assert proc.wait(DEADLINE) == 0
        m.close()
        with open(log) as f:
            return replies, f.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        for s in listeners:
            s.close()


def _emu_replies() -> tuple[list[str], str]:
    buf = io.StringIO()
    session = QtestSession(PcLike(), log=QtestLog(buf))
    session.connection_made()
    replies = []
    for cmd in SCRIPT:
        session.receive(cmd.encode() + b"\n")
        replies += session.data_to_send().decode().splitlines()
    session.connection_lost()
    return replies, buf.getvalue()


def _shape(log: str) -> list[str]:
    """The log with times blanked, up to the connection's CLOSED (QEMU logs
    a second CLOSED when it tears the chardev down at exit)."""
    lines = [re.sub(r"\d+\.\d{6}", "T", line) for line in log.splitlines()]
    return lines[:lines.index("[I +T] CLOSED") + 1]


@pytest.mark.peers
@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.slow
def test_replies_and_log_match_qemu(qemu_tests, tmp_path):
    want, want_log = _reference_replies(qemu_tests["QEMU_REFERENCE"], str(tmp_path))
    got, got_log = _emu_replies()
    assert got == want
    assert _shape(got_log) == _shape(want_log)
