"""One qtest connection, sans-IO: bytes in, replies out.

:meth:`QtestSession.receive` feeds bytes from the client; each complete
line is logged (``R``), parsed (:mod:`emu.qtest.commands`), run against the
:class:`~emu.qtest.target.QtestTarget`, and answered exactly as QEMU 7.2
answers it (widths from softmmu/qtest.c: ``in*`` ``OK 0x%04x``, ``read*``
``OK 0x%016x``, ``read`` ``OK 0x<hex>``, ``b64read`` ``OK <base64>``,
clocks ``OK <decimal ns>``).  Every bad command -- where QEMU would assert
-- is answered ``FAIL <reason>``, counted, and the session keeps serving.
IRQ level changes reported by the target become ``IRQ raise N`` /
``IRQ lower N`` in the output, in order with the replies (an IRQ raised by
an ``outb`` is sent before that ``outb``'s ``OK``, as in QEMU).
:meth:`data_to_send` drains the output.

Output is bounded: once more than ``max_output`` bytes of replies wait to be
sent, the remaining complete lines wait too (``pending_lines``) until the
owner has sent the output and calls :meth:`process_pending` -- a client
that pipelines thousands of ``read ADDR 0x200000`` without reading its
replies cannot make emu hold gigabytes.  The owner reads no more input while
lines are pending, so those are bounded by one read.

Single-threaded: call everything, the target's ``notify`` included, from
one thread (the event loop's).
"""
from __future__ import annotations

import base64
from collections import Counter
from typing import Callable, Hashable

from emu.errors import PeerError
from emu.qtest.commands import (BufRead, BufWrite, ClockSet, ClockStep, Command, Endianness,
                                IrqIntercept, MemRead, MemWrite, Memset, ModuleLoad, PortIn,
                                PortOut, SetIrqIn, parse, split_words)
from emu.qtest.errors import BadCommand, LineTooLong, UnknownDevice, UsageError
from collections import deque

from emu.qtest.lines import MAX_LINE, MAX_TRANSFER, LineDecoder
from emu.qtest.log import QtestLog
from emu.qtest.target import QtestTarget

MAX_IRQ = 256                    # (qtest.c: irq_levels[MAX_IRQ]; libqtest checks irq < MAX_IRQ)
# room for the largest single reply (read of MAX_TRANSFER bytes: 2 hex digits per byte)
MAX_OUTPUT = 2 * MAX_TRANSFER + (1 << 20)
ENDIANNESS = "little"            # x86_64 (qtest.c: TARGET_BIG_ENDIAN ? "big" : "little")


class QtestCounters:
    """What the client has cost the session: each refused command by its
    first word, and the last error's text."""

    def __init__(self):
        self.commands = 0
        self.refused: Counter[str] = Counter()
        self.irqs_sent = 0
        self.last_error = ""

    def note_refused(self, word: str, reason: str) -> None:
        self.refused[word] += 1
        self.last_error = f"{word}: {reason}"

    def as_dict(self) -> dict:
        return {"commands": self.commands, "refused": dict(self.refused),
                "refused_total": sum(self.refused.values()), "irqs_sent": self.irqs_sent,
                "last_error": self.last_error}


def _fits(value: int, size: int) -> bool:
    return isinstance(value, int) and 0 <= value < 1 << (8 * size)


class QtestSession:
    def __init__(self, target: QtestTarget, *, log: QtestLog | None = None,
                 max_line: int = MAX_LINE, max_output: int = MAX_OUTPUT):
        self.target = target
        self.log = log
        self.counters = QtestCounters()
        self.max_output = max_output
        self._lines = LineDecoder(max_line)
        self._pending: deque[bytes | LineTooLong] = deque()
        self._out = bytearray()
        self._open = False
        self._irq_levels = [0] * MAX_IRQ
        self._intercepted: Hashable | None = None
        self.on_output: Callable[[], None] | None = None   # told when async output is queued
        self._in_command = False

    # -- connection -----------------------------------------------------
    def connection_made(self) -> None:
        # (qtest.c CHR_EVENT_OPENED: the IRQ levels start at 0 again; the
        # intercepted device stays, it is the process's)
        self._irq_levels = [0] * MAX_IRQ
        self._open = True
        if self.log:
            self.log.opened()

    def connection_lost(self) -> None:
        if self._open and self.log:
            self.log.closed()
        self._open = False
        self._out.clear()
        self._pending.clear()

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    # -- input ----------------------------------------------------------
    @property
    def pending_lines(self) -> int:
        """Complete command lines not yet run (output was over ``max_output``)."""
        return len(self._pending)

    def receive(self, data: bytes) -> None:
        self._pending.extend(self._lines.feed(data))
        self.process_pending()

    def process_pending(self) -> None:
        """Run waiting lines while the unsent output is under ``max_output``."""
        while self._pending and len(self._out) < self.max_output:
            line = self._pending.popleft()
            self.counters.commands += 1
            if isinstance(line, LineTooLong):
                self._fail("<line>", str(line))
                continue
            self._in_command = True
            try:
                self._send(self._run_line(line))
            finally:
                self._in_command = False

    def _run_line(self, line: bytes) -> str:
        try:
            words = split_words(line)
        except BadCommand as e:
            if self.log:
                self.log.received([line[:80].decode("ascii", "backslashreplace")])
            return self._refused("<line>", str(e))
        if self.log:
            self.log.received(words)
        word = words[0] if words and words[0] else "<empty>"
        try:
            return self._execute(parse(line))
        except UnknownDevice as e:
            return self._refused(word, str(e))
        except PeerError as e:      # BadCommand, TargetError, GuestMemoryError, ...
            return self._refused(word, str(e) or type(e).__name__)

    def _refused(self, word: str, reason: str) -> str:
        self.counters.note_refused(word, reason)
        return f"FAIL {reason}\n"

    def _fail(self, word: str, reason: str) -> None:
        self._send(self._refused(word, reason))

    def _send(self, text: str) -> None:
        if not self._open:
            return
        self._out += text.encode("ascii")
        if self.log:
            self.log.sent(text)

    # -- IRQs -----------------------------------------------------------
    def irq_changed(self, n: int, level: int) -> None:
        """The target's ``notify``: line *n* of the intercepted device is now
        at *level*.  Sent only when it differs from the last level sent."""
        if not isinstance(n, int) or not 0 <= n < MAX_IRQ:
            raise UsageError(f"IRQ line {n!r} is not in 0..{MAX_IRQ - 1}")
        if self._irq_levels[n] == level:
            return
        self._irq_levels[n] = level
        self.counters.irqs_sent += 1
        self._send(f"IRQ {'raise' if level else 'lower'} {n}\n")
        if not self._in_command and self.on_output is not None:
            self.on_output()

    # -- commands -------------------------------------------------------
    def _execute(self, cmd: Command) -> str:
        t = self.target
        if isinstance(cmd, PortOut):
            t.io_write(cmd.port, cmd.size, cmd.value)
            return "OK\n"
        if isinstance(cmd, PortIn):
            value = t.io_read(cmd.port, cmd.size)
            if not _fits(value, cmd.size):
                raise UsageError(f"io_read returned {value!r} for a {cmd.size}-byte access")
            return f"OK 0x{value:04x}\n"
        if isinstance(cmd, MemWrite):
            t.mem_write(cmd.addr, cmd.size, cmd.value)
            return "OK\n"
        if isinstance(cmd, MemRead):
            value = t.mem_read(cmd.addr, cmd.size)
            if not _fits(value, cmd.size):
                raise UsageError(f"mem_read returned {value!r} for a {cmd.size}-byte access")
            return f"OK 0x{value:016x}\n"
        if isinstance(cmd, BufRead):
            data = bytes(t.mem_read_bytes(cmd.addr, cmd.length))
            if len(data) != cmd.length:
                raise UsageError(f"mem_read_bytes returned {len(data)} bytes, not {cmd.length}")
            if cmd.b64:
                return f"OK {base64.b64encode(data).decode('ascii')}\n"
            return f"OK 0x{data.hex()}\n"
        if isinstance(cmd, BufWrite):
            if cmd.mismatch is not None and self.log:
                self.log.sent(f"b64write: data length mismatch (told {cmd.length}, "
                              f"found {cmd.mismatch})\n")
            if cmd.data:
                t.mem_write_bytes(cmd.addr, cmd.data)
            return "OK\n"
        if isinstance(cmd, Memset):
            if cmd.length:
                t.mem_write_bytes(cmd.addr, bytes([cmd.pattern]) * cmd.length)
            return "OK\n"
        if isinstance(cmd, ClockStep):
            # (qtest_clock_warp(now + ns): a negative step warps nowhere)
            ns = t.clock_step(None if cmd.ns is None else max(cmd.ns, 0))
            return f"OK {ns}\n"
        if isinstance(cmd, ClockSet):
            return f"OK {t.clock_set(cmd.ns)}\n"
        if isinstance(cmd, IrqIntercept):
            return self._intercept(cmd)
        if isinstance(cmd, SetIrqIn):
            device = t.resolve_device(cmd.path)
            if device is None:
                raise UnknownDevice(cmd.path)
            t.set_irq_in(device, cmd.name, cmd.num, cmd.level)
            return "OK\n"
        if isinstance(cmd, Endianness):
            return f"OK {ENDIANNESS}\n"
        if isinstance(cmd, ModuleLoad):
            return "OK\n" if t.module_load(cmd.prefix, cmd.name) else "FAIL\n"
        raise UsageError(f"no handler for {cmd!r}")

    def _intercept(self, cmd: IrqIntercept) -> str:
        device = self.target.resolve_device(cmd.path)
        if device is None:
            raise UnknownDevice(cmd.path)
        if self._intercepted is not None:
            # (qtest.c: one intercepted device per process; asking again for
            # the same one is fine)
            if self._intercepted != device:
                raise BadCommand("IRQ intercept already enabled")
            return "OK\n"
        self.target.irq_intercept(device, cmd.direction, self.irq_changed)
        self._intercepted = device
        return "OK\n"
