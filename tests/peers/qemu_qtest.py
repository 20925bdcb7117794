"""The reference QEMU 7.2 (``qemu-system-x86_64`` with the qtest accelerator,
built by scripts/build-qemu-tests.sh --reference) driven over its qtest
socket as libqtest drives it (it connects to our listening sockets), with
a QMP monitor beside it; and emu's machine behind the same interface, so a
test reads both devices the same way (CF8/CFC, in/out, MMIO)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(ROOT, "scripts", "build-qemu-tests.sh")
BUILD_TIMEOUT = 3600          # a cold build of the reference (cached: milliseconds)
ACCEPT_TIMEOUT = 60.0


def reference_binary() -> str:
    out = subprocess.run([BUILD_SCRIPT, "--reference"], capture_output=True, text=True,
                         timeout=BUILD_TIMEOUT)
    assert out.returncode == 0, f"build-qemu-tests.sh failed:\n{out.stderr[-4000:]}"
    paths = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return paths["QEMU_REFERENCE"]


class Bus:
    """What the tests read and write; subclasses move the bytes."""

    def out(self, port: int, size: int, value: int) -> None: ...
    def inp(self, port: int, size: int) -> int: ...
    def mread(self, addr: int, size: int) -> int: ...
    def mwrite(self, addr: int, size: int, value: int) -> None: ...

    # PCI configuration mechanism #1: the dword in CONFIG_ADDRESS, the byte
    # lane in CONFIG_DATA's port (what every host bridge decodes)
    def cfg_read(self, bdf: int, off: int, size: int) -> int:
        self.out(0xCF8, 4, 0x80000000 | bdf << 8 | off & 0xFC)
        return self.inp(0xCFC + (off & 3), size)

    def cfg_write(self, bdf: int, off: int, size: int, value: int) -> None:
        self.out(0xCF8, 4, 0x80000000 | bdf << 8 | off & 0xFC)
        self.out(0xCFC + (off & 3), size, value)


class QtestQemu(Bus):
    """The reference QEMU with ``args`` after ``-accel qtest``; ``pass_fds``
    inherited (a ``-netdev socket,fd=N``)."""

    def __init__(self, args: list[str], pass_fds: tuple[int, ...] = ()):
        self.dir = tempfile.mkdtemp(prefix="emu-ref-")
        qpath, mpath = os.path.join(self.dir, "qtest.sock"), os.path.join(self.dir, "qmp.sock")
        lq, lm = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
        for ls, p in ((lq, qpath), (lm, mpath)):
            ls.bind(p)
            ls.listen(1)
            ls.settimeout(ACCEPT_TIMEOUT)
        self.proc = subprocess.Popen(
            [reference_binary(), "-qtest", f"unix:{qpath}", "-qtest-log", "/dev/null",
             "-chardev", f"socket,path={mpath},id=char0", "-mon", "chardev=char0,mode=control",
             "-display", "none", "-nodefaults", "-accel", "qtest", *args],
            pass_fds=pass_fds, stderr=subprocess.PIPE)
        try:
            self.q, _ = lq.accept()
            self.m, _ = lm.accept()
        finally:
            lq.close()
            lm.close()
        self.qf, self.mf = self.q.makefile("rwb"), self.m.makefile("rwb")
        self.greeting = json.loads(self.mf.readline())
        self.qmp("qmp_capabilities")
        self.events: list[dict] = []

    def cmd(self, line: str) -> str:
        self.qf.write((line + "\n").encode())
        self.qf.flush()
        while True:
            reply = self.qf.readline().decode().strip()
            if not reply.startswith("IRQ"):
                assert reply.startswith("OK"), f"{line!r}: {reply}"
                return reply

    def qmp(self, execute: str, **arguments) -> dict:
        msg = {"execute": execute, **({"arguments": arguments} if arguments else {})}
        self.mf.write((json.dumps(msg) + "\n").encode())
        self.mf.flush()
        while True:
            reply = json.loads(self.mf.readline())
            if "event" in reply:
                self.events.append(reply)
                continue
            return reply

    def out(self, port, size, value):
        self.cmd(f"{ {1: 'outb', 2: 'outw', 4: 'outl'}[size]} 0x{port:x} 0x{value:x}")

    def inp(self, port, size):
        return int(self.cmd(f"{ {1: 'inb', 2: 'inw', 4: 'inl'}[size]} 0x{port:x}").split()[1], 16)

    def mread(self, addr, size):
        data = bytes.fromhex(self.cmd(f"read 0x{addr:x} 0x{size:x}").split()[1][2:])
        return int.from_bytes(data, "little")

    def mwrite(self, addr, size, value):
        self.cmd(f"write 0x{addr:x} 0x{size:x} 0x{value.to_bytes(size, 'little').hex()}")

    def close(self) -> None:
        for f in (self.qf, self.mf, self.q, self.m):
            try:
                f.close()
            except OSError:
                pass
        self.proc.kill()
        self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


class EmuPlatform(Bus):
    """An emu machine's platform (what a qtest client reaches)."""

    def __init__(self, system):
        self.s = system

    def out(self, port, size, value):
        self.s.pio_write(port, size, value)

    def inp(self, port, size):
        return self.s.pio_read(port, size)

    def mread(self, addr, size):
        return self.s.mmio_read(addr, size)

    def mwrite(self, addr, size, value):
        self.s.mmio_write(addr, size, value)
