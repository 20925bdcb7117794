"""The ``emu`` process: a parsed command line becomes a running VM.

Order (each step QEMU-like, and the monitor first so a harness gets its
greeting within milliseconds):

1. ``-daemonize``: fork; the parent exits once the child is up (0) or
   failed (1), as QEMU's parent does.
2. The monitors (``-qmp``, ``-mon``): their sockets made and the greeting
   sent with plain socket calls (:mod:`~emu.launcher.early`), before
   asyncio or any device module is imported.
3. The heavy imports, then the machine (:mod:`~emu.launcher.process`):
   RAM, chardevs, netdevs, devices, captures, serial ports, guest.  A
   failure here is reported ``emu: -device ...: reason`` with exit 1 and
   leaves nothing behind.
   The ``-qtest`` chardev connects here too (libqtest waits for it).
4. ``wait=on`` monitors and qtest: hold until a client connects.
5. Start (``-S``: prelaunch, the guest waits for ``cont``), then serve
   until ``quit``, a signal (SHUTDOWN host-signal, exit status 0) or the
   guest's power-off.  Under ``-accel qtest`` no guest program runs: the
   qtest client is the only driver (:mod:`emu.launcher.qtest_mode`).

This module imports only what steps 1 and 2 need; the rest is loaded on
first use (``emu.launcher.serve``, ``build_machine``, ``MachineAdapter``).
"""
from __future__ import annotations

import importlib
import os
import sys

from emu.launcher.early import monitor_endpoints
from emu.launcher.errors import StartupError

TYPE_CHECKING = False   # typing itself is not imported: this runs before the greeting
if TYPE_CHECKING:       # not at run time: emu.config is not needed to greet
    from typing import Any

    from emu.config import MachineConfig
    from emu.launcher.early import EarlyMonitors

__all__ = ["run", "serve", "monitor_endpoints", "build_machine", "MachineAdapter", "StartupError"]

_LAZY = {"serve": "emu.launcher.process", "build_machine": "emu.launcher.build",
         "MachineAdapter": "emu.launcher.control", "Created": "emu.launcher.build"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'emu.launcher' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _daemonize():
    """Fork; the parent waits for the child's word and exits with it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        status = os.read(r, 1)
        os._exit(0 if status == b"0" else 1)
    os.close(r)
    os.setsid()
    fd = os.open(os.devnull, os.O_RDWR)
    os.dup2(fd, 0)
    if fd > 2:
        os.close(fd)

    def ready():
        try:
            os.write(w, b"0")
            os.close(w)
        except OSError:
            pass
        # stdout/stderr leave the parent's terminal, as QEMU's do
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
    return ready


def run(cfg: MachineConfig, early: EarlyMonitors | None = None) -> int:
    """The process: 0 after ``quit``, a signal or the guest's power-off;
    1 (``emu: ORIGIN: reason`` on stderr) if it could not start.  *early*:
    monitors greeted before the command line was parsed (emu/__main__.py);
    those the parser agrees with are kept, the others opened now."""
    from emu.launcher.early import EarlyMonitors, catch_signals
    from emu.qmp.endpoint import MonitorSetupError
    signals = catch_signals()
    ready = None
    if cfg.daemonize:
        ready = _daemonize()
    if cfg.pidfile:
        try:
            with open(cfg.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as e:
            return _fatal(f"cannot create PID file: {e}", cfg)
    if early is None:
        early = EarlyMonitors([], [])
    try:
        try:
            early.reconcile(monitor_endpoints(cfg), [m.origin for m in cfg.monitors])
        except MonitorSetupError as e:
            return _fatal(f"{getattr(e, 'origin', '')}: {e}" if getattr(e, "origin", "") else str(e),
                          cfg)
        # the greeting is out: now the heavy part
        from emu.launcher.early import phase
        phase("parsed")
        import asyncio
        from emu.launcher import logs, process
        phase("imported asyncio and the launcher")
        try:
            return asyncio.run(process.serve(cfg, ready, early, signals))
        except StartupError as e:
            return _fatal(str(e), cfg)
        finally:
            logs.close()
    finally:
        early.close()
        if cfg.pidfile:
            try:
                os.unlink(cfg.pidfile)
            except OSError:
                pass


def _fatal(msg: str, cfg: MachineConfig | None = None) -> int:
    prefix = ""
    if cfg is not None and (cfg.msg_timestamp or cfg.msg_guest_name):
        from emu.trace import message_prefix
        prefix = message_prefix(cfg.msg_timestamp, cfg.name if cfg.msg_guest_name else None)
    print(f"{prefix}emu: {msg}", file=sys.stderr)
    return 1
