"""QMP commands that describe the binary rather than the running machine:
``query-machines``, ``qom-list-types``, ``qom-list-properties`` and
``device-list-properties``.  They answer before the machine
is built, as QEMU's do (qos-test's probe starts ``-machine none`` and asks
both at once), from the :class:`~emu.qmp.control.Introspection` the server
was given; without one they do not exist.
"""
from __future__ import annotations

from typing import Any

from emu.qmp import schema as S
from emu.qmp.commands import Arg, command
from emu.qmp.control import Introspection
from emu.qmp.errors import CommandNotFound
from emu.qmp.session import Session


def _introspection(s: Session, name: str) -> Introspection:
    i = s.monitor.introspection
    if i is None:
        raise CommandNotFound(f"The command {name} has not been found")
    return i


@command("query-machines", needs_machine=False, returns=S.Array(S.MACHINE_INFO))
def query_machines(s: Session, args: dict[str, Any]) -> list:
    return _introspection(s, "query-machines").query_machines()


@command("qom-list-types", Arg("implements", "str", optional=True),
         Arg("abstract", "bool", optional=True), needs_machine=False,
         returns=S.Array(S.OBJECT_TYPE_INFO))
def qom_list_types(s: Session, args: dict[str, Any]) -> list:
    return _introspection(s, "qom-list-types").qom_list_types(args.get("implements"),
                                                              args.get("abstract", False))


@command("qom-list-properties", Arg("typename", "str"), needs_machine=False,
         returns=S.Array(S.OBJECT_PROPERTY_INFO))
def qom_list_properties(s: Session, args: dict[str, Any]) -> list:
    return _introspection(s, "qom-list-properties").qom_list_properties(args["typename"])


@command("device-list-properties", Arg("typename", "str"), needs_machine=False,
         returns=S.Array(S.OBJECT_PROPERTY_INFO))
def device_list_properties(s: Session, args: dict[str, Any]) -> list:
    return _introspection(s, "device-list-properties").device_list_properties(args["typename"])


# -- the machine's object tree ---------------------------------------------------------------

@command("qom-list", Arg("path", "str"), returns=S.Array(S.Obj(("name", "str"), ("type", "str"),
                                                              ("description?", "str"),
                                                              ("default-value?", "any"))))
def qom_list(s: Session, args: dict[str, Any]) -> list:
    return s.machine.qom_list(args["path"])


@command("qom-get", Arg("path", "str"), Arg("property", "str"))
def qom_get(s: Session, args: dict[str, Any]) -> Any:
    return s.machine.qom_get(args["path"], args["property"])
