"""The process once its monitors are greeted: asyncio, the machine, the
run (see :mod:`emu.launcher` for the order).  Imported only after the
greeting went out (:mod:`emu.launcher.early`)."""
from __future__ import annotations

import asyncio
import logging
import signal

from emu import fdset, trace
from emu.config import MachineConfig
from emu.launcher import logs
from emu.launcher.build import Created, build_machine
from emu.launcher.control import MachineAdapter
from emu.launcher.early import PHASES, monitor_endpoints, phase
from emu.launcher.errors import StartupError
from emu.launcher.introspection import EmuIntrospection
from emu.launcher.serial import SerialPorts
from emu.qmp.endpoint import MonitorSetupError
from emu.qmp.server import QmpServer

log = logging.getLogger("emu")


async def serve(cfg: MachineConfig, ready=None, early=None, signals=()) -> int:
    """Monitors, machine, run until the end; :class:`StartupError` (with
    everything released, and the files start-up created removed) if a
    monitor, a chardev or the machine cannot be set up.  *ready* is called
    once the machine runs (``-daemonize``'s parent exits).  *early*: the
    monitors :mod:`emu.launcher.early` opened and greeted (else they are
    opened here).  *signals*: those received before the loop took them over."""
    server = QmpServer(introspection=EmuIntrospection())
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    created = Created()
    try:
        logs.setup(cfg)
    except OSError as e:
        raise StartupError("-D" if cfg.log_file else "-trace",
                           f"cannot open log file: {e.strerror}") from None
    fdset.take_over(cfg.fdsets)
    # the qtest chardev connects before anything slow, as the monitors did:
    # libqtest waits for both (the qtest modules are imported only for it: ~10 ms)
    qtest = None
    if cfg.qtest is not None:
        from emu.launcher.qtest_mode import open_qtest
        qtest = await open_qtest(cfg)
    phase("log open")
    try:
        machine = build_machine(cfg, server.emit, created)
    except BaseException:
        if qtest is not None:
            await qtest.close()
        raise
    phase("machine built")
    machine.add_event_listener(logs.on_event)
    serials = SerialPorts(cfg, machine.system, created)
    adapter = MachineAdapter(machine, cfg, server.emit, lambda: loop.call_soon_threadsafe(done.set),
                             serials=serials)
    adapter.qtest = qtest

    async def teardown() -> None:
        if qtest is not None:
            await qtest.close()      # no qtest command runs against a machine going away
        await machine.close()
        await serials.close()
        await server.close()

    def on_event(name, data):
        if name == "EMU_GUEST_POWEROFF":
            loop.call_soon_threadsafe(adapter.guest_powered_off)
    machine.add_event_listener(on_event)
    try:
        await serials.open()
        # The monitors are served from here on, as QEMU's main loop serves
        # them once the machine is set up: the greeting went out long before
        # (emu.launcher.early), what the clients sent waited in their sockets,
        # and the serial ports' sockets exist when the first answer comes.
        if early is not None:
            for mon in early.handover():
                await server.adopt(mon)
        else:
            for ep, mon in zip(monitor_endpoints(cfg), cfg.monitors):
                try:
                    await server.add_monitor(ep)
                except MonitorSetupError as e:
                    raise StartupError(mon.origin, str(e)) from None
    except BaseException:
        await teardown()
        created.remove()
        raise
    server.attach(adapter)
    phase("monitors served")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, adapter.signal)
    if signals:         # one came while the process was starting
        adapter.signal()

    async def start() -> None:
        await server.wait_for_clients()
        if qtest is not None:
            await qtest.endpoint.wait_for_client()
        # What the clients sent while the machine was set up (a harness's
        # negotiation and first query) is answered before the guest thread
        # starts competing for the interpreter: a few loop turns read, run
        # and write it.  QEMU too answers once the machine is set up.
        for _ in range(4):
            await asyncio.sleep(0)
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
        await teardown()
        created.remove()
        raise StartupError(_origin_of(cfg, e), str(e))
    # a stop or cont the monitor answered while the machine was starting found
    # no guest yet: the guest starts as -S said; bring it to the run state now
    adapter.started_running(machine)
    phase("machine started")
    _trace_phases()
    if qtest is not None and not done.is_set():
        qtest.serve(machine)
    if ready is not None and not done.is_set():
        ready()
    await done.wait()
    stopper.cancel()
    await teardown()
    return 0


_startup_ev = trace.event("emu_startup")


def _trace_phases() -> None:
    if _startup_ev.on and PHASES:
        t0 = PHASES[0][1]
        for name, t in PHASES:
            _startup_ev(name, (t - t0) * 1e3)


def _origin_of(cfg: MachineConfig, err: BaseException) -> str:
    """The option a start-up failure is about: the -chardev whose path a
    socket error names (SocketSetupError, ConnectFailed), else the -netdev
    (start-up waits for netdevs only)."""
    path = getattr(err, "path", None)
    for c in cfg.chardevs if path else ():
        if c.path == path:
            return c.origin
    for n in cfg.netdevs:
        ch = cfg.chardev(n.chardev)
        if n.id in str(err) or (ch is not None and str(ch.path) in str(err)):
            return n.origin
    return cfg.netdevs[0].origin if cfg.netdevs else ""


