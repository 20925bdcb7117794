"""The machine side of qtest: a :class:`~emu.qtest.target.QtestTarget` over
emu's machine pieces.

* accesses go through the platform's address spaces
  (:class:`emu.machines.platform.Platform` ``memory`` and ``io``): the same
  layered dispatch, bounds checks and device models a guest driver reaches,
  RAM included; bulk and scalar memory commands alike are split per region
  as QEMU's ``flatview_read``/``write`` split them (``read ADDR 4`` of an
  MMIO register is one 4-byte access).  What nothing decodes answers as the
  platform does: I/O ports all ones, memory zero (QEMU's).
* the clock is the machine's virtual clock (:class:`emu.clock.Clock`;
  manual under ``-accel qtest``: ``clock_step`` runs its timers).
* devices are found in the machine's QOM tree (:class:`emu.qom.ObjectTree`)
  by absolute or partial path; their GPIO lines (:mod:`emu.qom.gpio`) are
  what ``irq_intercept_*`` observes and ``set_irq_in`` drives.

The session runs on the event loop; a line that changes level on another
thread (a device model raising INTx from a worker) is reported through the
loop, in order.
"""
from __future__ import annotations

import asyncio
from typing import Literal

from emu.qom.tree import Object, ObjectTree
from emu.qom.types import TYPE_DEVICE
from emu.qtest.errors import TargetError
from emu.qtest.target import IrqNotify


class MachineTarget:
    def __init__(self, platform, clock, tree: ObjectTree):
        self.platform = platform
        self.clock = clock
        self.tree = tree

    # -- I/O ports and memory -----------------------------------------------------------------
    def io_read(self, port: int, size: int) -> int:
        return self.platform.io.read(port, size)

    def io_write(self, port: int, size: int, value: int) -> None:
        self.platform.io.write(port, size, value)

    def mem_read(self, addr: int, size: int) -> int:
        # (qtest.c readl: address_space_read of 4 bytes, then tswap32: x86 is little endian)
        return int.from_bytes(self.mem_read_bytes(addr, size), "little")

    def mem_write(self, addr: int, size: int, value: int) -> None:
        self.mem_write_bytes(addr, value.to_bytes(size, "little"))

    def mem_read_bytes(self, addr: int, length: int) -> bytes:
        return self._bulk(self.platform.memory.read_bytes, addr, length)

    def mem_write_bytes(self, addr: int, data: bytes) -> None:
        self._bulk(self.platform.memory.write_bytes, addr, data)

    @staticmethod
    def _bulk(op, addr, arg):
        try:
            return op(addr, arg)
        except ValueError as e:      # past the end of the space (the parser keeps below 2^64)
            raise TargetError(str(e)) from None

    # -- the virtual clock ----------------------------------------------------------------------
    def clock_step(self, ns: int | None) -> int:
        return self.clock.step(ns)

    def clock_set(self, ns: int) -> int:
        return self.clock.warp(ns)

    # -- devices and their GPIO lines -------------------------------------------------------------
    def resolve_device(self, path: str) -> Object | None:
        # (qtest.c: DEVICE(object_resolve_path(path, NULL)); an object that
        # is no device is refused as unknown instead of QEMU's failed cast)
        return self.tree.resolve(path, TYPE_DEVICE)

    def irq_intercept(self, device: Object, direction: Literal["in", "out"],
                      notify: IrqNotify) -> None:
        # (qtest.c: only the unnamed lists are intercepted; a device with
        # none is still the intercepted one, and nothing is reported)
        lines = getattr(device.impl, f"gpio_{direction}", None)
        if lines is not None:
            lines.observe(_on_loop(_running_loop(), notify))

    def set_irq_in(self, device: Object, name: str | None, num: int, level: int) -> None:
        if name is None:
            lines = getattr(device.impl, "gpio_in", None)
        else:
            lines = (getattr(device.impl, "gpio_in_named", None) or {}).get(name)
        what = "unnamed-gpio-in" if name is None else name
        if lines is None:
            raise TargetError(f"{device.path} has no GPIO input list {what}")
        if not 0 <= num < lines.count:
            raise TargetError(f"{device.path} has no input {what}[{num}] "
                              f"(0..{lines.count - 1})")
        lines.set(num, level)

    def module_load(self, prefix: str, name: str) -> bool:
        # emu loads no modules: as a QEMU built without CONFIG_MODULES,
        # whose module_load answers 2 ("built in") for any name
        return True


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _on_loop(loop: asyncio.AbstractEventLoop | None, notify: IrqNotify) -> IrqNotify:
    """``notify`` called on ``loop``'s thread whoever reports the change
    (no loop: a caller that drives the session itself, on one thread)."""
    def report(line: int, level: int) -> None:
        if loop is None or _running_loop() is loop:
            notify(line, level)
        else:
            try:
                loop.call_soon_threadsafe(notify, line, level)
            except RuntimeError:       # the loop is closed: the process is ending
                pass
    return report
