"""The QMP monitor: QEMU Machine Protocol server for one emu machine.

Layout: :mod:`~emu.qmp.stream` splits the byte stream into JSON values,
:mod:`~emu.qmp.session` is what commands run against (the machine, the
session's state), :mod:`~emu.qmp.commands` checks requests and runs
commands (sans I/O), :mod:`~emu.qmp.hmp` answers ``human-monitor-command``
on top of them, :mod:`~emu.qmp.control` is the contract with the machine
(and QEMU's run-state rules), :mod:`~emu.qmp.server` is the asyncio
transport.  Everything here is stdlib-only so that the greeting is ready
within milliseconds of start-up.
"""
from __future__ import annotations

from emu.qmp.control import MachineControl, RunState
from emu.qmp.errors import CommandNotFound, QmpError
from emu.qmp.server import Connection, MonitorEndpoint, MonitorSetupError, QmpServer
from emu.qmp.session import PACKAGE, QEMU_VERSION, Monitor, Session

__all__ = ["MachineControl", "RunState", "QmpError", "CommandNotFound", "QmpServer", "Connection",
           "Session", "Monitor", "MonitorEndpoint", "MonitorSetupError", "QEMU_VERSION", "PACKAGE"]
