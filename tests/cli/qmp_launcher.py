"""Stand-in for the ``emu`` process in monitor tests, until emu.machine exists.

It does what the real process must do around the monitor, in the same
order: parse the command line with emu.cli (so the same argv works for
both), listen on every monitor before anything else, hold start-up for
``wait=on`` listeners, run until the machine asks to exit (``quit``,
guest power-off, SIGTERM/SIGINT: SHUTDOWN host-signal), then flush the
monitors and exit 0.  The machine is tests/cli/fakes.FakeMachine.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fakes import FakeMachine  # noqa: E402

from emu.cli import CommandLineError, EarlyExit, die, monitor_endpoints, parse_args  # noqa: E402
from emu.qmp import MonitorSetupError, QmpServer  # noqa: E402


async def serve(argv: list[str]) -> int:
    try:
        cfg = parse_args(argv)
    except EarlyExit as e:
        print(e.text)
        return e.status
    except CommandLineError as e:
        die(str(e))
    for msg in cfg.messages:
        print(f"emu: {msg}", file=sys.stderr)

    # Listen first: the greeting must not wait for the machine to be built.
    server = QmpServer()
    for ep, mon in zip(monitor_endpoints(cfg), cfg.monitors):
        try:
            await server.add_monitor(ep)
        except MonitorSetupError as e:
            await server.close()
            die(f"{mon.origin}: {e}")

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    machine = FakeMachine(server.emit, name=cfg.name,
                          start_paused=cfg.start_paused, no_shutdown=cfg.no_shutdown,
                          nics=tuple(d.id or f"net{i}" for i, d in enumerate(cfg.devices)) or ("nic0",),
                          on_exit=lambda: loop.call_soon_threadsafe(done.set))
    server.attach(machine)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, machine.signal)
    await server.wait_for_clients()
    await done.wait()
    await server.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(serve(sys.argv[1:])))
