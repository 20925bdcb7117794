"""The same qtest command lines to the reference QEMU and to emu's machine.

* :class:`ReferenceQemu`: QEMU 7.2's qemu-system-x86_64 with the qtest
  accelerator (built by scripts/build-qemu-tests.sh), connected as
  libqtest connects it: a qtest socket and a QMP monitor, both listening
  here.  ``cmd(line)`` returns its reply lines (asynchronous ``IRQ`` lines
  first), ``qmp(name, **args)`` a QMP answer, events are kept.
* :class:`EmuQtest`: emu's :class:`~emu.qtest.session.QtestSession` over a
  :class:`emu.machine.Machine`'s platform through :class:`PlatformTarget`,
  with the same ``cmd`` -- the replies are emu's qtest code, the answers
  its address spaces and chipset.  The machine clock is held at 0, as the
  virtual clock of ``-accel qtest`` is.

Only what both answer alike is compared: unassigned memory (QEMU reads 0,
emu's platform all ones until the qtest accelerator's address-space
property is merged) is not read by these scripts.
"""
from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import tempfile
import time

from emu.machine import Machine
from emu.qtest.errors import TargetError
from emu.qtest.session import QtestSession

DEADLINE = 60.0


class ReferenceQemu:
    def __init__(self, binary: str, *args: str):
        self.tmp = tempfile.mkdtemp(prefix="emu-ref-")
        qsock, msock = os.path.join(self.tmp, "q.sock"), os.path.join(self.tmp, "q.qmp")
        listeners = []
        for path in (qsock, msock):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            s.listen(1)
            s.settimeout(DEADLINE)
            listeners.append(s)
        self.proc = subprocess.Popen(
            [binary, "-qtest", f"unix:{qsock}", "-qtest-log", "/dev/null",
             "-chardev", f"socket,path={msock},id=char0", "-mon", "chardev=char0,mode=control",
             "-display", "none", "-nodefaults", *args, "-accel", "qtest"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self.q, _ = listeners[0].accept()
            self.m, _ = listeners[1].accept()
        except socket.timeout:
            self.proc.kill()
            raise AssertionError(f"reference QEMU did not connect: {self.proc.stderr.read()}")
        finally:
            for s in listeners:
                s.close()
        self.q.settimeout(DEADLINE)
        self.m.settimeout(DEADLINE)
        self.qf = self.q.makefile("rb")
        self._mbuf = b""
        self.events: list[dict] = []
        json.loads(self._qmp_line(DEADLINE))            # greeting
        assert self.qmp("qmp_capabilities") == {"return": {}}

    def cmd(self, line: str) -> list[str]:
        self.q.sendall(line.encode() + b"\n")
        out = []
        while True:
            reply = self.qf.readline().decode().rstrip("\n")
            assert reply, f"QEMU closed the qtest socket at {line!r}"
            out.append(reply)
            if not reply.startswith("IRQ "):
                return out

    def qmp(self, name: str, **args) -> dict:
        msg = {"execute": name, **({"arguments": args} if args else {})}
        self.m.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = json.loads(self._qmp_line(DEADLINE))
            if "event" in reply:
                self.events.append(reply)
                continue
            return reply

    def _qmp_line(self, timeout: float) -> bytes | None:
        """The next line from QMP, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._mbuf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.m], [], [], left)[0]:
                return None
            chunk = self.m.recv(65536)
            assert chunk, "QEMU closed its QMP socket"
            self._mbuf += chunk
        line, self._mbuf = self._mbuf.split(b"\n", 1)
        return line

    def wait_event(self, name: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            hit = next((e for e in self.events if e["event"] == name), None)
            if hit is not None:
                self.events.remove(hit)
                return hit
            line = self._qmp_line(max(0.0, deadline - time.monotonic()))
            assert line is not None, f"no {name} from QEMU; saw {self.events}"
            self.events.append(json.loads(line))

    def close(self) -> None:
        try:
            self.proc.terminate()
            self.proc.wait(DEADLINE)
        finally:
            for f in (self.qf, self.q, self.m, self.proc.stderr):
                f.close()


class PlatformTarget:
    """The qtest target over a platform (what the qtest accelerator's
    machine target does, reduced to what these comparisons use)."""

    def __init__(self, platform):
        self.p = platform
        self.notify = None

    def io_read(self, port, size):
        return self.p.io.read(port, size)

    def io_write(self, port, size, value):
        self.p.io.write(port, size, value)

    def mem_read(self, addr, size):
        return self.p.memory.read(addr, size)

    def mem_write(self, addr, size, value):
        self.p.memory.write(addr, size, value)

    def mem_read_bytes(self, addr, length):
        return self.p.memory.read_bytes(addr, length)

    def mem_write_bytes(self, addr, data):
        self.p.memory.write_bytes(addr, data)

    def clock_step(self, ns):
        return 0

    def clock_set(self, ns):
        return 0

    def resolve_device(self, path):
        return "ioapic" if path == "ioapic" and self.p.ioapic is not None else None

    def irq_intercept(self, device, direction, notify):
        if direction == "in":
            self.p.ioapic.intercept(notify)

    def set_irq_in(self, device, name, num, level):
        if name is not None or not 0 <= num < 24:
            raise TargetError("no such input")
        self.p.ioapic.set_irq(num, bool(level), "qtest")

    def module_load(self, prefix, name):
        return True


class EmuQtest:
    """``machine_type`` and Machine keywords as ``Machine`` takes them."""

    def __init__(self, machine_type: str = "pc", ram_size: int = 128 << 20, **kw):
        self.machine = Machine(name="cmp", ram_size=ram_size, backend="memfd",
                               machine_type=machine_type, **kw)
        self.platform = self.machine.system
        self.platform.clock = lambda: 0          # the qtest virtual clock, never stepped
        self.session = QtestSession(PlatformTarget(self.platform))
        self.session.connection_made()

    def cmd(self, line: str) -> list[str]:
        self.session.receive(line.encode() + b"\n")
        return self.session.data_to_send().decode().splitlines()

    def close(self) -> None:
        self.session.connection_lost()
        self.machine.release()


def run_both(ref: ReferenceQemu, emu: EmuQtest, script: list[str]) -> tuple[list, list]:
    """Each line to both; -> (QEMU's replies, emu's), line by line."""
    want, got = [], []
    for line in script:
        want.append((line, ref.cmd(line)))
        got.append((line, emu.cmd(line)))
    return want, got


def cfg_addr(bdf: int, reg: int) -> int:
    return 0x80000000 | (bdf << 8) | reg


def config_dump_script(bdf: int) -> list[str]:
    """Every dword of the 256-byte space, and every byte through its lane."""
    out = []
    for reg in range(0, 0x100, 4):
        out += [f"outl 0xcf8 {cfg_addr(bdf, reg):#x}", "inl 0xcfc", "inb 0xcfd", "inw 0xcfe"]
    return out


def wmask_script(bdf: int, skip: tuple[int, ...] = ()) -> list[str]:
    """Write all ones then zeros to each byte, reading back each time, and
    put the byte back as it was (byte accesses through the lanes)."""
    out = []
    for reg in range(0x100):
        if reg in skip:
            continue
        lane = 0xCFC + (reg & 3)
        out += [f"outl 0xcf8 {cfg_addr(bdf, reg & ~3):#x}", f"outb {lane:#x} 0xff",
                f"inb {lane:#x}", f"outb {lane:#x} 0", f"inb {lane:#x}"]
    return out
