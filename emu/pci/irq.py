"""The platform's interrupt controller, as the guest sees it: MSI messages
and INTx lines become eventfds a guest thread can wait on.

MSI (x86 style): a message is a 32-bit write of ``data`` to ``address``,
sent into the system memory space like any bus-master write; the
local-APIC window 0xFEE00000..0xFEEFFFFF (:class:`MsiWindow`, a region of
that space) turns it into vector ``data & 0xff``.  Vectors 0..15 are
reserved exceptions on x86 (an APIC reports them as illegal), so they are
refused too.  A refused message, and one that reached nothing at all, is
counted and dropped, as the APIC would drop it.

INTx: level-triggered lines (GSIs).  Several functions may share a line;
the line is the OR of their levels.  Assertion (a 0->1 edge of the line)
signals the line's eventfd; the guest's handler then reads the device's
ISR, which makes the device deassert (virtio-pci does this).

Thread safety: eventfd writes are atomic; counters and the lazily created
fds are guarded by an internal lock, so device models may raise interrupts
from any thread.
"""
from __future__ import annotations

import os
import threading
from collections import Counter

from emu import eventfd
from emu.address_space import Region
from emu.spec import pci as regs

NUM_VECTORS = 256
FIRST_VALID_VECTOR = 16
APIC_MSI_SIZE = 0x100000        # 0xFEE00000..0xFEEFFFFF


def _signal(fd: int) -> None:
    eventfd.signal(fd)     # a full counter wakes its reader anyway; never blocks


class InterruptController:
    def __init__(self):
        self._lock = threading.Lock()
        self._msi_fds: dict[int, int] = {}
        self._intx_fds: dict[int, int] = {}
        self._intx_sources: dict[int, set[object]] = {}
        self._line_observers: list = []
        self.delivered: Counter[int] = Counter()     # per MSI vector
        self.intx_assertions: Counter[int] = Counter()
        self.invalid_messages = 0
        self.last_invalid: tuple[int, int] | None = None
        self.closed = False

    @staticmethod
    def _new_eventfd() -> int:
        return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    # -- MSI ------------------------------------------------------------------
    def eventfd(self, vector: int) -> int:
        """The eventfd signalled by MSI ``vector`` (created on first use)."""
        if not FIRST_VALID_VECTOR <= vector < NUM_VECTORS:
            raise ValueError(f"vector {vector} is not in {FIRST_VALID_VECTOR}..255")
        with self._lock:
            self._check_open()
            fd = self._msi_fds.get(vector)
            if fd is None:
                fd = self._msi_fds[vector] = self._new_eventfd()
            return fd

    @staticmethod
    def message_vector(address: int, data: int) -> int | None:
        """The vector an MSI message targets, or None if it is not valid."""
        if address >> 20 != regs.MSI_ADDR_BASE >> 20:     # 0xFEExxxxx, high dword 0
            return None
        vector = data & 0xFF
        return vector if vector >= FIRST_VALID_VECTOR else None

    def deliver_msi(self, address: int, data: int) -> bool:
        """A device's MSI write reached the APIC window: signal the vector."""
        vector = self.message_vector(address, data)
        with self._lock:
            if vector is None or self.closed:
                self.invalid_messages += 1
                self.last_invalid = (address, data)
                return False
            self.delivered[vector] += 1
            fd = self._msi_fds.get(vector)
            if fd is None:
                fd = self._msi_fds[vector] = self._new_eventfd()
            _signal(fd)
            return True

    def refuse(self, address: int, data: int) -> None:
        """An MSI write that no region of the memory space took."""
        with self._lock:
            self.invalid_messages += 1
            self.last_invalid = (address, data)

    def msi_window(self) -> "MsiWindow":
        return MsiWindow(self)

    # -- INTx -----------------------------------------------------------------
    def intx_eventfd(self, line: int) -> int:
        """The eventfd signalled when INTx ``line`` is asserted."""
        with self._lock:
            self._check_open()
            fd = self._intx_fds.get(line)
            if fd is None:
                fd = self._intx_fds[line] = self._new_eventfd()
            return fd

    def set_intx(self, line: int, source: object, level: bool) -> None:
        """``source`` (a function) drives ``line`` to ``level``."""
        with self._lock:
            sources = self._intx_sources.setdefault(line, set())
            was = bool(sources)
            if level:
                sources.add(source)
            else:
                sources.discard(source)
            if sources and not was and not self.closed:
                self.intx_assertions[line] += 1
                fd = self._intx_fds.get(line)
                if fd is None:
                    fd = self._intx_fds[line] = self._new_eventfd()
                _signal(fd)
            changed = bool(sources) != was
            observers = list(self._line_observers) if changed else ()
        for fn in observers:          # outside the lock: an observer may read levels
            fn(line, int(not was))

    def add_line_observer(self, fn) -> None:
        """``fn(line, level)`` on every change of a line's level (qtest's
        ``irq_intercept_in`` of the interrupt controller); from any thread."""
        with self._lock:
            self._line_observers.append(fn)

    def intx_level(self, line: int) -> bool:
        with self._lock:
            return bool(self._intx_sources.get(line))

    # -- lifetime -------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("interrupt controller is closed")

    def close(self) -> None:
        with self._lock:
            self.closed = True
            for fd in list(self._msi_fds.values()) + list(self._intx_fds.values()):
                os.close(fd)
            self._msi_fds.clear()
            self._intx_fds.clear()

    def stats(self) -> dict:
        with self._lock:
            return {"msi_delivered": dict(self.delivered),
                    "msi_invalid": self.invalid_messages,
                    "intx_assertions": dict(self.intx_assertions)}


class MsiWindow:
    """The local APIC's MSI window as a region of system memory."""

    def __init__(self, irq: InterruptController):
        self.irq = irq

    def region(self) -> Region:
        return Region(regs.MSI_ADDR_BASE, regs.MSI_ADDR_BASE + APIC_MSI_SIZE, self,
                      name="apic-msi")

    def accepts(self, offset: int, size: int) -> bool:
        return size == 4            # an MSI message is one dword write

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.irq.deliver_msi(regs.MSI_ADDR_BASE + offset, value)
