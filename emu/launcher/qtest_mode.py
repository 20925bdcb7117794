"""The launcher's qtest part: ``-qtest`` and ``-qtest-log``.

:func:`open_qtest` makes the qtest chardev's connection (or listener) as
the process starts, beside the monitors -- libqtest waits for both -- and
opens the log; :meth:`QtestService.serve` starts answering once the
machine is built and started, over :class:`emu.qtest.MachineTarget`.
Everything fails as a :class:`~emu.launcher.build.StartupError` naming
the option.
"""
from __future__ import annotations

from typing import Any

from emu.config import MachineConfig
from emu.launcher.build import StartupError
from emu.qtest.endpoint import QtestEndpoint, QtestSetupError
from emu.qtest.log import QtestLog


class QtestService:
    def __init__(self, endpoint: QtestEndpoint, log: QtestLog | None):
        self.endpoint = endpoint
        self.log = log
        self.session = None

    def serve(self, machine: Any) -> None:
        from emu.qtest.machine_target import MachineTarget
        from emu.qtest.session import QtestSession
        target = MachineTarget(machine.system, machine.clocks.virtual, machine.qom)
        self.session = QtestSession(target, log=self.log)
        self.endpoint.serve(self.session)

    def stats(self) -> dict:
        """The ``qtest`` block of query-emu-stats."""
        out = {"connections": self.endpoint.connections}
        if self.session is not None:
            out.update(self.session.counters.as_dict())
        return out

    async def close(self) -> None:
        await self.endpoint.close()       # the session's CLOSED goes to the log first
        if self.log is not None:
            self.log.close()


async def open_qtest(cfg: MachineConfig) -> QtestService | None:
    q = cfg.qtest
    if q is None:
        return None
    dev = cfg.chardev(q.chardev)
    assert dev is not None, "parse_args checked the reference"
    endpoint = QtestEndpoint(path=dev.path, fd=dev.fd, server=dev.server, wait=dev.wait,
                             reconnect=float(dev.reconnect))
    try:
        await endpoint.open()
    except QtestSetupError as e:
        raise StartupError(q.origin, str(e)) from None
    try:
        log = QtestLog.open(cfg.qtest_log)
    except OSError as e:
        await endpoint.close()
        raise StartupError(f"-qtest-log {cfg.qtest_log}",
                           f"cannot open the log: {e.strerror}") from None
    return QtestService(endpoint, log)
