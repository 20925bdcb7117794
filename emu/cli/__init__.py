"""emu's command line, in QEMU's syntax (see docs/harness.md).

:func:`parse_args` turns argv into an :class:`emu.config.MachineConfig`
and checks it as a whole; it creates nothing.  :func:`main` prints errors
QEMU's way::

    emu: -device virtio-net-pci,bar=1: Property 'virtio-net-pci.bar' not found

and exits with status 1.  The parts: :mod:`~emu.cli.schemas` (every
option's parameters), :mod:`~emu.cli.state` (the option table and what
handlers share), the handlers (:mod:`~emu.cli.machine_opts`,
:mod:`~emu.cli.device_opts`, :mod:`~emu.cli.process_opts`),
:mod:`~emu.cli.checks` (whole-line checks), :mod:`~emu.cli.parser`,
:mod:`~emu.cli.texts` (help and version).  Module-level imports are
stdlib only: this runs before the monitor listens.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn

from emu.cli.parser import parse_args
from emu.cli.state import CommandLineError, EarlyExit
from emu.cli.texts import device_help, usage, version_text
from emu.config import MachineConfig

__all__ = ["parse_args", "main", "die", "CommandLineError", "EarlyExit", "device_help", "usage",
           "version_text"]


def die(msg: str, cfg: MachineConfig | None = None) -> NoReturn:
    """Report a fatal command-line error QEMU's way and exit with status 1
    (*cfg*: the ``-msg`` options read so far)."""
    prefix = ""
    if cfg is not None and (cfg.msg_timestamp or cfg.msg_guest_name):
        from emu.trace import message_prefix
        prefix = message_prefix(cfg.msg_timestamp, cfg.name if cfg.msg_guest_name else None)
    print(f"{prefix}emu: {msg}", file=sys.stderr)
    sys.exit(1)


def print_and_exit_on_sigpipe(text: str) -> None:
    """Print help text as QEMU does: a reader that goes away (``emu -device
    help | head``) ends the process by SIGPIPE, quietly, as it ends QEMU.
    (Python ignores SIGPIPE; a running VM keeps ignoring it -- its peers'
    sockets must never kill it -- so this is for texts printed instead of running.)"""
    import signal
    previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    finally:        # main() called in-process (tests) gives the disposition back
        signal.signal(signal.SIGPIPE, previous)


def main(argv: list[str] | None = None, run: Callable[[MachineConfig], int] | None = None) -> int:
    """``emu [options]``: parse, report, then hand the config to *run*
    (default: :func:`emu.launcher.run`, the machine's process lifecycle)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = parse_args(argv)
    except EarlyExit as e:
        print_and_exit_on_sigpipe(e.text)
        return e.status
    except CommandLineError as e:
        die(str(e), getattr(e, "cfg", None))
    if cfg.messages:
        from emu.trace import message_prefix
        prefix = message_prefix(cfg.msg_timestamp, cfg.name if cfg.msg_guest_name else None)
        for msg in cfg.messages:
            print(f"{prefix}emu: {msg}", file=sys.stderr)
    if run is None:
        from emu.launcher import run  # type: ignore[no-redef]   # heavy: only now
    return run(cfg)
