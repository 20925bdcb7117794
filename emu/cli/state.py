"""What every option handler shares: the parse state, the option table, the errors.

An option is one handler registered with :func:`option` (its schema is in
:mod:`emu.cli.schemas`)::

    @option("uuid")
    def uuid(p: ParseState, arg: str) -> None:
        p.cfg.uuid = p.opts(arg, UUID)["uuid"]

A handler raises :class:`~emu.keyval.OptionError` with QEMU's text;
:func:`emu.cli.parser.parse_args` prefixes it with the option (``-uuid
ARG: ``).  Flags without an argument are registered with ``arg=False``.
"""
from __future__ import annotations

from typing import Any, Callable

from emu.config import MachineConfig
from emu.errors import EmuBug, PeerError
from emu.keyval import Schema, parse_pairs, typed_values

HELP_WORDS = ("help", "?")


class CommandLineError(PeerError):
    """A bad command line; ``str()`` is the message after ``emu: ``."""


class EarlyExit(Exception):
    """-version, -help, ``-device help``...: print ``text`` and exit with ``status``."""

    def __init__(self, text: str, status: int = 0):
        super().__init__(text)
        self.text = text
        self.status = status


class ParseState:
    """The configuration being built, and what the whole-line checks need
    to know about how it was given."""

    def __init__(self) -> None:
        self.cfg = MachineConfig()
        self.origin = ""                # the option being parsed, for messages
        self.option = ""                # its name, without the dash (help titles)
        self.ram_size_given = False     # -m
        self.machine_accel = False      # -machine accel=
        self.accel_option = False       # -accel
        self.machine_origin = "-machine"
        self.numa_origin: str | None = None
        self.qtest_log_origin = "-qtest-log"
        self.smp_values: dict[str, int] = {}   # -smp as given
        self.smp_origin = ""
        self.compat_monitors = 0        # -qmp monitors so far (compat_monitorN)
        self.serial_index = 0           # -serial options so far (COM1, COM2...)
        self.nographic = False          # -nographic
        self.nodefaults = False         # -nodefaults

    def warn(self, text: str) -> None:
        self.cfg.messages.append(f"{self.origin}: warning: {text}")

    def info(self, text: str) -> None:
        self.cfg.messages.append(f"{self.origin}: info: {text}")

    def opts(self, arg: str | list[tuple[str, str | None]], schema: Schema, *,
             title: str | None = None, **fmt: str) -> dict[str, Any]:
        """Typed values of *arg* (an option string, or pairs from split_head).

        A bare ``help`` among them prints the schema (``TITLE options:``,
        *title* defaulting to the option's name) and exits, as QemuOpts does."""
        warnings: list[str] = []
        pairs = parse_pairs(arg, schema.implied) if isinstance(arg, str) else arg
        if wants_help(pairs) or (schema.implied and (schema.implied, "help") in pairs):
            raise EarlyExit(schema.help(title or self.option))
        values = typed_values(pairs, schema, warnings, **fmt)
        for w in warnings:
            self.cfg.messages.append(f"{self.origin}: {w}")
        ignored = [p.name for p in schema.params if p.ignored and p.name in values]
        if ignored:
            self.info(f"{', '.join(repr(n) for n in ignored)} accepted for compatibility, no effect in emu")
        return values


def wants_help(pairs: list[tuple[str, str | None]]) -> bool:
    """``-device DRIVER,help``: a bare ``help`` (or ``?``) among the pairs."""
    return any(k in HELP_WORDS and v is None for k, v in pairs)


class Option:
    __slots__ = ("name", "handler", "takes_arg")

    def __init__(self, name: str, handler: Callable[..., None], takes_arg: bool = True):
        self.name = name
        self.handler = handler          # (state, arg) or, without an argument, (state)
        self.takes_arg = takes_arg


#: every option by name (without its dash); filled by the handler modules
OPTIONS: dict[str, Option] = {}


def option(*names: str, arg: bool = True) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register the decorated handler for ``-NAME`` (and its aliases)."""
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        for name in names:
            if name in OPTIONS:
                raise EmuBug(f"option -{name} registered twice")
            OPTIONS[name] = Option(name, fn, arg)
        return fn
    return register


def flag(attr: str, *names: str) -> None:
    """``-S``, ``-daemonize``...: set the boolean *attr* of the MachineConfig."""
    def set_flag(p: ParseState) -> None:
        setattr(p.cfg, attr, True)
    option(*names, arg=False)(set_flag)
