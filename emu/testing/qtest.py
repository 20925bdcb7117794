"""Drive an emu process in qtest mode from Python, the way QEMU's libqtest
drives QEMU: device tests written register by register.

:class:`QtestMachine` starts ``emu-system-x86_64`` as libqtest starts its
binary -- it listens on a qtest and a QMP socket, the process connects to
both (``-qtest unix:PATH``, ``-chardev socket,path=..`` + ``-mon``),
``-accel qtest`` -- and stops it with SIGTERM, checking exit status 0::

    with QtestMachine(["-M", "pc", "-device", "virtio-net-pci,..."]) as vm:
        vm.qtest.outl(0xCF8, 0x80000000 | (4 << 11))     # 00:04.0, register 0
        assert vm.qtest.inw(0xCFC) == 0x1AF4
        vm.qmp.command("system_reset")

:class:`QtestClient` is the client half of the qtest protocol over any
connected stream (asynchronous ``IRQ raise/lower N`` lines are recorded in
:attr:`QtestClient.irq_level`); :class:`QmpClient` a small synchronous QMP
client that keeps the events it reads while waiting for an answer.  Only
the standard library is used: emu's own test tooling and a user's tests
need nothing else.
"""
from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from emu.testing import orphans

DEFAULT_TIMEOUT = 60.0


class QtestFailed(Exception):
    """The server answered ``FAIL <reason>``."""


class QmpCommandError(Exception):
    def __init__(self, error: dict):
        super().__init__(f"{error.get('class')}: {error.get('desc')}")
        self.error = error


class _Lines:
    """Newline-delimited reading with a deadline, over a socket."""

    def __init__(self, sock: socket.socket, timeout: float):
        self.sock = sock
        self.timeout = timeout
        self._buf = bytearray()

    def readline(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 1]
                return line
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError(f"no reply within {self.timeout:g} s")
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._buf += data


class QtestClient:
    def __init__(self, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT):
        self.sock = sock
        self._lines = _Lines(sock, timeout)
        self.irq_level: dict[int, bool] = {}

    def raw(self, line: str) -> str:
        """Send one command line; the reply line (``OK ...``/``FAIL ...``),
        IRQ lines before it recorded."""
        self.sock.sendall(line.encode("ascii") + b"\n")
        while True:
            reply = self._lines.readline().decode("ascii")
            words = reply.split(" ")
            if words[0] == "IRQ" and len(words) == 3:
                self.irq_level[int(words[2])] = words[1] == "raise"
                continue
            return reply

    def command(self, line: str) -> list[str]:
        """The words of an ``OK`` reply after ``OK``; :class:`QtestFailed` on FAIL."""
        reply = self.raw(line)
        if reply == "OK" or reply.startswith("OK "):
            return reply.split(" ")[1:]
        raise QtestFailed(reply[5:] if reply.startswith("FAIL") else reply)

    def _value(self, line: str) -> int:
        return int(self.command(line)[0], 16)

    # I/O ports
    def outb(self, port: int, value: int) -> None: self.command(f"outb 0x{port:x} 0x{value:x}")
    def outw(self, port: int, value: int) -> None: self.command(f"outw 0x{port:x} 0x{value:x}")
    def outl(self, port: int, value: int) -> None: self.command(f"outl 0x{port:x} 0x{value:x}")
    def inb(self, port: int) -> int: return self._value(f"inb 0x{port:x}")
    def inw(self, port: int) -> int: return self._value(f"inw 0x{port:x}")
    def inl(self, port: int) -> int: return self._value(f"inl 0x{port:x}")

    # memory, one access
    def writeb(self, addr: int, value: int) -> None: self.command(f"writeb 0x{addr:x} 0x{value:x}")
    def writew(self, addr: int, value: int) -> None: self.command(f"writew 0x{addr:x} 0x{value:x}")
    def writel(self, addr: int, value: int) -> None: self.command(f"writel 0x{addr:x} 0x{value:x}")
    def writeq(self, addr: int, value: int) -> None: self.command(f"writeq 0x{addr:x} 0x{value:x}")
    def readb(self, addr: int) -> int: return self._value(f"readb 0x{addr:x}")
    def readw(self, addr: int) -> int: return self._value(f"readw 0x{addr:x}")
    def readl(self, addr: int) -> int: return self._value(f"readl 0x{addr:x}")
    def readq(self, addr: int) -> int: return self._value(f"readq 0x{addr:x}")

    # memory, buffers (MMIO registers too: libqos reads a 4-byte register with read ADDR 4)
    def read(self, addr: int, size: int) -> bytes:
        return bytes.fromhex(self.command(f"read 0x{addr:x} 0x{size:x}")[0][2:])

    def write(self, addr: int, data: bytes) -> None:
        self.command(f"write 0x{addr:x} 0x{len(data):x} 0x{data.hex()}")

    def b64read(self, addr: int, size: int) -> bytes:
        return base64.b64decode(self.command(f"b64read 0x{addr:x} 0x{size:x}")[0])

    def b64write(self, addr: int, data: bytes) -> None:
        self.command(f"b64write 0x{addr:x} 0x{len(data):x} {base64.b64encode(data).decode()}")

    def memset(self, addr: int, size: int, value: int) -> None:
        self.command(f"memset 0x{addr:x} 0x{size:x} 0x{value:x}")

    # the virtual clock
    def clock_step(self, ns: int | None = None) -> int:
        return int(self.command("clock_step" if ns is None else f"clock_step {ns}")[0])

    def clock_set(self, ns: int) -> int:
        return int(self.command(f"clock_set {ns}")[0])

    # interrupts
    def irq_intercept_in(self, path: str) -> None: self.command(f"irq_intercept_in {path}")
    def irq_intercept_out(self, path: str) -> None: self.command(f"irq_intercept_out {path}")

    def set_irq_in(self, path: str, num: int, level: int, name: str = "unnamed-gpio-in") -> None:
        self.command(f"set_irq_in {path} {name} {num} {level}")

    def endianness(self) -> str:
        return self.command("endianness")[0]


class QmpClient:
    def __init__(self, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT):
        self.sock = sock
        self._lines = _Lines(sock, timeout)
        self.events: list[dict] = []
        self.greeting = self._read()
        self.command("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            line = self._lines.readline().strip()
            if line:
                return json.loads(line)

    def request(self, name: str, **arguments: Any) -> dict:
        """The whole response (``return`` or ``error``); events meanwhile kept."""
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            else:
                return reply

    def command(self, name: str, **arguments: Any) -> Any:
        """The ``return`` value; :class:`QmpCommandError` on an error."""
        reply = self.request(name, **arguments)
        if "error" in reply:
            raise QmpCommandError(reply["error"])
        return reply["return"]

    def wait_event(self, name: str) -> dict:
        """The first event ``name`` not taken yet (read until it comes)."""
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            reply = self._read()
            if "event" not in reply:
                raise RuntimeError(f"an answer nobody asked for: {reply}")
            self.events.append(reply)


def emu_binary() -> list[str]:
    """``emu-system-x86_64`` beside this Python (a venv's bin), else ``python -m emu``."""
    script = os.path.join(os.path.dirname(sys.executable), "emu-system-x86_64")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "emu"]


class QtestMachine:
    """One emu (or QEMU: ``binary=``) process in qtest mode."""

    def __init__(self, args: Sequence[str] = (), *, binary: Sequence[str] | None = None,
                 qtest_log: str = "/dev/null", timeout: float = DEFAULT_TIMEOUT,
                 env: dict[str, str] | None = None, own_qtest: bool = True):
        """``own_qtest=False``: no ``-qtest`` of ours (``args`` bring their own
        ``-qtest chardev:ID``); :attr:`qtest` stays None."""
        self.args = list(args)
        self.own_qtest = own_qtest
        self.binary = list(binary) if binary is not None else emu_binary()
        self.qtest_log = qtest_log
        self.timeout = timeout
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.qtest: QtestClient | None = None
        self.qmp: QmpClient | None = None
        self.stderr = ""
        self.exit_status: int | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    def argv(self, qtest_path: str, qmp_path: str) -> list[str]:
        """The command line libqtest would give (qtest_init_without_qmp_handshake)."""
        qtest = ["-qtest", f"unix:{qtest_path}"] if self.own_qtest else []
        return [*self.binary, *qtest, "-qtest-log", self.qtest_log,
                "-chardev", f"socket,path={qmp_path},id=char0",
                "-mon", "chardev=char0,mode=control", "-display", "none",
                *self.args, "-accel", "qtest"]

    def start(self) -> QtestMachine:
        self._dir = tempfile.TemporaryDirectory(prefix="emu-qtest-")
        qpath, mpath = (os.path.join(self._dir.name, n) for n in ("qtest.sock", "qmp.sock"))
        listeners = []
        for path in (qpath, mpath) if self.own_qtest else (mpath,):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            s.listen(1)
            listeners.append(s)
        self._stderr = tempfile.TemporaryFile()
        try:
            self.proc = orphans.popen(self.argv(qpath, mpath), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=self._stderr,
                                      env=self.env)          # dies with the harness
            socks = [self._accept(s) for s in listeners]
        except BaseException:
            self.kill()
            raise
        finally:
            for s in listeners:
                s.close()
        if self.own_qtest:
            self.qtest = QtestClient(socks[0], self.timeout)
        self.qmp = QmpClient(socks[-1], self.timeout)
        return self

    def _accept(self, listener: socket.socket) -> socket.socket:
        deadline = time.monotonic() + self.timeout
        while True:
            if select.select([listener], [], [], 0.05)[0]:
                conn, _ = listener.accept()
                return conn
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary[-1]} exited with {self.proc.returncode} "
                                   f"before connecting: {self._read_stderr()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.binary[-1]} did not connect within {self.timeout:g} s")

    def _read_stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def terminate(self) -> int:
        """SIGTERM, as libqtest's qtest_quit; the exit status (0 expected)."""
        if self.proc is None:
            return self.exit_status if self.exit_status is not None else -1
        for c in (self.qtest, self.qmp):
            if c is not None:
                c.sock.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_status = self.proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_status = self.proc.wait()
        self._finish()
        return self.exit_status

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.exit_status = self.proc.returncode
        self._finish()

    def _finish(self) -> None:
        if self.proc is not None:
            self.stderr = self._read_stderr()
            self._stderr.close()
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> QtestMachine:
        return self.start()

    def __exit__(self, *exc) -> None:
        status = self.terminate()
        if exc[0] is None and status != 0:
            raise RuntimeError(f"exit status {status} on SIGTERM (expected 0): {self.stderr}")
