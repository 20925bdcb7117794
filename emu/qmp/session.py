"""What QMP commands run against, sans I/O: the :class:`Monitor` every
connection of one server shares, and each connection's :class:`Session`.

The commands (:mod:`~emu.qmp.commands`, :mod:`~emu.qmp.hmp`) see only
these; the asyncio server (:mod:`~emu.qmp.server`) creates them and
gives the monitor what only it knows (its own chardevs) as a callable.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from emu.errors import EmuBug
from emu.qmp.control import Introspection, MachineControl
from emu.qmp.greeting import PACKAGE, QEMU_VERSION, greeting, version_info  # noqa: F401

log = logging.getLogger("emu.qmp")


class Monitor:
    """The machine behind every session of one QMP server.

    It may be attached after the monitors listen (the process greets
    first, then builds the machine); commands that need it wait meanwhile.
    """

    def __init__(self, machine: MachineControl | None = None,
                 chardevs: Callable[[], list[dict[str, Any]]] = list,
                 introspection: Introspection | None = None):
        self._machine = machine
        self._attached: asyncio.Event | None = None
        self._chardevs = chardevs
        self.introspection = introspection

    @property
    def machine(self) -> MachineControl:
        if self._machine is None:
            raise EmuBug("QMP command ran before the machine was attached")
        return self._machine

    def attach(self, machine: MachineControl) -> None:
        """Give the monitor its machine; commands waiting for it proceed."""
        self._machine = machine
        if self._attached is not None:
            self._attached.set()

    async def machine_ready(self) -> None:
        if self._machine is None:
            if self._attached is None:
                self._attached = asyncio.Event()
            await self._attached.wait()

    def chardev_info(self) -> list[dict[str, Any]]:
        """``query-chardev`` entries of the monitors' own chardevs."""
        return self._chardevs()

    @staticmethod
    def log_bug(what: str, exc: BaseException) -> None:
        log.error("%s", what, exc_info=exc)


class Session:
    """One QMP connection's protocol state."""

    def __init__(self, monitor: Monitor, label: str):
        self.monitor = monitor
        self.label = label
        self.negotiated = False

    @property
    def machine(self) -> MachineControl:
        return self.monitor.machine
