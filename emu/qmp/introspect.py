"""QMP commands that describe the binary rather than the running machine:
``query-machines`` and ``qom-list-types``.  They answer before the machine
is built, as QEMU's do (qos-test's probe starts ``-machine none`` and asks
both at once), from the :class:`~emu.qmp.control.Introspection` the server
was given; without one they do not exist.
"""
from __future__ import annotations

from typing import Any

from emu.qmp.commands import Arg, command
from emu.qmp.control import Introspection
from emu.qmp.errors import CommandNotFound
from emu.qmp.session import Session


def _introspection(s: Session, name: str) -> Introspection:
    i = s.monitor.introspection
    if i is None:
        raise CommandNotFound(f"The command {name} has not been found")
    return i


@command("query-machines", needs_machine=False)
def query_machines(s: Session, args: dict[str, Any]) -> list:
    return _introspection(s, "query-machines").query_machines()


@command("qom-list-types", Arg("implements", "str", optional=True),
         Arg("abstract", "bool", optional=True), needs_machine=False)
def qom_list_types(s: Session, args: dict[str, Any]) -> list:
    return _introspection(s, "qom-list-types").qom_list_types(args.get("implements"),
                                                              args.get("abstract", False))
