"""The ``emu`` process: a parsed command line becomes a running VM.

Order (each step QEMU-like, and the monitor first so a harness gets its
greeting within milliseconds):

1. ``-daemonize``: fork; the parent exits once the child is up (0) or
   failed (1), as QEMU's parent does.
2. QMP listeners (``-qmp``, ``-mon``) and the ``-qtest`` chardev (both
   connected before anything slow: libqtest waits for them); heavy modules
   are imported only now.
3. The machine: RAM, chardevs, netdevs, devices, captures, guest.
   A failure here is reported ``emu: -device ...: reason`` with exit 1 and
   leaves nothing behind.
4. ``wait=on`` monitors: hold until a client connects.
5. Start (``-S``: prelaunch, the guest waits for ``cont``), then serve
   until ``quit``, a signal (SHUTDOWN host-signal, exit status 0) or the
   guest's power-off.  Under ``-accel qtest`` no guest program runs: the
   qtest client is the only driver (:mod:`emu.launcher.qtest_mode`).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from emu.config import MachineConfig
from emu.launcher.build import StartupError, build_machine
from emu.launcher.control import MachineAdapter
from emu.launcher.introspection import EmuIntrospection
from emu.launcher.qtest_mode import open_qtest
from emu.qmp import MonitorEndpoint, MonitorSetupError, QmpServer

__all__ = ["run", "serve", "monitor_endpoints", "build_machine", "MachineAdapter", "StartupError"]

log = logging.getLogger("emu")


def monitor_endpoints(cfg: MachineConfig) -> list[MonitorEndpoint]:
    """Where each ``-qmp`` / ``-mon`` monitor listens or connects."""
    out = []
    for mon in cfg.monitors:
        dev = cfg.chardev(mon.chardev)
        assert dev is not None, "parse_args checked the reference"
        out.append(MonitorEndpoint(label=dev.id, path=dev.path, fd=dev.fd, stdio=dev.backend == "stdio",
                                   server=dev.server, wait=dev.server and dev.wait,
                                   reconnect=float(dev.reconnect), pretty=mon.pretty))
    return out


def _setup_logging(cfg: MachineConfig) -> None:
    level = logging.DEBUG if "vhost_user" in cfg.log_items or "all" in cfg.log_items \
        else logging.WARNING
    handler = logging.FileHandler(cfg.log_file) if cfg.log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("emu: %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    if "guest_errors" in cfg.log_items:
        logging.getLogger("emu.pci.errors").setLevel(logging.DEBUG)


async def serve(cfg: MachineConfig, ready=None) -> int:
    """Monitors, machine, run until the end; :class:`StartupError` (with
    everything released) if a monitor or the machine cannot be set up.
    *ready* is called once the machine runs (``-daemonize``'s parent exits)."""
    server = QmpServer(introspection=EmuIntrospection())
    for ep, mon in zip(monitor_endpoints(cfg), cfg.monitors):
        try:
            await server.add_monitor(ep)
        except MonitorSetupError as e:
            await server.close()
            raise StartupError(mon.origin, str(e)) from None
    try:
        qtest = await open_qtest(cfg)
    except StartupError:
        await server.close()
        raise
    # Let the sessions send their greetings now: building the machine blocks
    # the loop for a while (imports, RAM), and a harness that negotiates
    # meanwhile sees every event of the machine's start-up.
    await asyncio.sleep(0)
    _setup_logging(cfg)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    async def close_endpoints() -> None:
        if qtest is not None:
            await qtest.close()
        await server.close()
    try:
        machine = build_machine(cfg, server.emit)
    except BaseException:
        await close_endpoints()
        raise
    adapter = MachineAdapter(machine, cfg, server.emit, lambda: loop.call_soon_threadsafe(done.set))
    adapter.qtest = qtest

    def on_event(name, data):
        if name == "EMU_GUEST_POWEROFF":
            loop.call_soon_threadsafe(adapter.guest_powered_off)
    machine.add_event_listener(on_event)
    server.attach(adapter)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, adapter.signal)

    async def start() -> None:
        await server.wait_for_clients()
        if qtest is not None:
            await qtest.endpoint.wait_for_client()
        await machine.start(paused=cfg.start_paused)
    # start-up may wait (wait=on monitors and qtest for their client, a
    # reconnect= netdev for its first back-end, as QEMU does): a quit or a
    # signal meanwhile still ends the process
    starting = loop.create_task(start())
    stopper = loop.create_task(done.wait())
    await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        try:
            await starting
        except (asyncio.CancelledError, Exception):
            pass
    elif starting.exception() is not None:
        e = starting.exception()
        stopper.cancel()
        await machine.close()
        await close_endpoints()
        raise StartupError(_origin_of(cfg, e), str(e))
    if qtest is not None and not done.is_set():
        qtest.serve(machine)
    if ready is not None and not done.is_set():
        ready()
    await done.wait()
    stopper.cancel()
    if qtest is not None:
        await qtest.close()          # no qtest command runs against a machine going away
    await machine.close()
    await server.close()
    return 0


def _origin_of(cfg: MachineConfig, err: BaseException) -> str:
    """The -netdev a start-up failure is about (start-up waits for netdevs only)."""
    for n in cfg.netdevs:
        ch = cfg.chardev(n.chardev)
        if n.id in str(err) or (ch is not None and str(ch.path) in str(err)):
            return n.origin
    return cfg.netdevs[0].origin if cfg.netdevs else ""


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


def run(cfg: MachineConfig) -> int:
    """The process: 0 after ``quit``, a signal or the guest's power-off;
    1 (``emu: ORIGIN: reason`` on stderr) if it could not start."""
    ready = None
    if cfg.daemonize:
        ready = _daemonize()
    if cfg.pidfile:
        try:
            with open(cfg.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as e:
            return _fatal(f"cannot create PID file: {e}")
    try:
        return asyncio.run(serve(cfg, ready))
    except StartupError as e:
        return _fatal(str(e))
    finally:
        if cfg.pidfile:
            try:
                os.unlink(cfg.pidfile)
            except OSError:
                pass


def _fatal(msg: str) -> int:
    print(f"emu: {msg}", file=sys.stderr)
    return 1
