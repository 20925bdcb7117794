"""The QMP monitor: QEMU Machine Protocol server for one emu machine.

Layout: :mod:`~emu.qmp.stream` splits the byte stream into JSON values,
:mod:`~emu.qmp.session` is what commands run against (the machine, the
session's state), :mod:`~emu.qmp.commands` checks requests and runs
commands (sans I/O), :mod:`~emu.qmp.hmp` answers ``human-monitor-command``
on top of them, :mod:`~emu.qmp.control` is the contract with the machine
(and QEMU's run-state rules), :mod:`~emu.qmp.server` is the asyncio
transport.  :mod:`~emu.qmp.greeting` and :mod:`~emu.qmp.endpoint` are what
the launcher needs before asyncio is imported (it greets first).

Everything is stdlib-only, and importing the package imports nothing: its
names are loaded on first use, so ``emu.qmp.greeting`` costs only itself.
"""
from __future__ import annotations

import importlib

_WHERE = {"MachineControl": "control", "RunState": "control", "QmpError": "errors",
          "CommandNotFound": "errors", "QmpServer": "server", "Connection": "server",
          "Session": "session", "Monitor": "session", "MonitorEndpoint": "endpoint",
          "MonitorSetupError": "endpoint", "QEMU_VERSION": "greeting", "PACKAGE": "greeting"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'emu.qmp' has no attribute {name!r}")
    return getattr(importlib.import_module(f"emu.qmp.{module}"), name)
