"""argv -> :class:`~emu.config.MachineConfig`, checked as a whole.

Creates nothing (no socket, no memory, no file): a bad command line leaves
nothing behind.  Each option is a handler in one of the ``*_opts`` modules,
found by name in :data:`emu.cli.state.OPTIONS`.
"""
from __future__ import annotations

# the handler modules register their options on import
from emu.cli import (char_opts, compat_opts, device_opts, global_opts, machine_opts,  # noqa: F401
                     process_opts, qtest_opts)
from emu.cli.checks import check
from emu.cli.state import OPTIONS, CommandLineError, ParseState
from emu.config import MachineConfig
from emu.keyval import OptionError


def parse_args(argv: list[str]) -> MachineConfig:
    """Parse and check a whole command line.

    Raises :class:`CommandLineError` (message QEMU-style, without the
    ``emu: `` prefix) or :class:`~emu.cli.state.EarlyExit` for
    -version/-help/``help``.
    """
    p = ParseState()
    i = 0
    while i < len(argv):
        raw = argv[i]
        i += 1
        if not raw.startswith("-") or raw == "-":
            raise _error(p, f"{raw}: emu takes no disk image argument")
        p.option = raw[2:] if raw.startswith("--") else raw[1:]
        opt = OPTIONS.get(p.option)
        p.origin = raw
        try:
            if opt is None:
                raise CommandLineError(f"{raw}: invalid option")
            if not opt.takes_arg:
                opt.handler(p)
                continue
            if i >= len(argv):
                raise CommandLineError(f"{raw}: requires an argument")
            arg = argv[i]
            i += 1
            p.origin = f"{raw} {arg}"
            opt.handler(p, arg)
        except OptionError as e:
            raise _error(p, f"{p.origin}: {e}") from None
        except CommandLineError as e:
            raise _error(p, str(e)) from None
    try:
        check(p)
    except OptionError as e:
        raise _error(p, f"{p.origin}: {e}" if p.origin else str(e)) from None
    p.cfg.device_parser = device_opts.qmp_device_parser
    return p.cfg


def _error(p: ParseState, text: str) -> CommandLineError:
    """The error, with what it is printed with (``-msg`` options given before it)."""
    err = CommandLineError(text)
    err.cfg = p.cfg
    return err
