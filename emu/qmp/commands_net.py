"""QMP ``announce-self`` (QEMU 7.2, qapi/net.json): self-announce rounds on
every NIC, or on the ``interfaces`` named; ``id`` names the timer (the same
id again replaces it; ``rounds`` 0 cancels it).  The machine offers it as
:class:`AnnounceControl`; the rounds run on its real-time clock."""
from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

from emu.qmp import schema as S
from emu.qmp.commands import Arg, command
from emu.qmp.errors import CommandNotFound, QmpError
from emu.qmp.session import Session


@runtime_checkable
class AnnounceControl(Protocol):
    def announce_self(self, initial: int, max: int, rounds: int, step: int,
                      interfaces: list[str] | None, id: str) -> Any:
        """Start (or replace, or with rounds 0 cancel) the named timer (an
        awaitable: once the machine can send)."""


@command("announce-self", Arg("initial", "int"), Arg("max", "int"), Arg("rounds", "int"),
         Arg("step", "int"), Arg("interfaces", "array", optional=True, schema=S.Array("str")),
         Arg("id", "str", optional=True), returns=S.EMPTY)
async def announce_self(s: Session, args: dict[str, Any]) -> dict:
    m = s.machine
    if not isinstance(m, AnnounceControl):
        raise CommandNotFound("The command announce-self has not been found")
    interfaces = args.get("interfaces")
    if interfaces is not None and not all(isinstance(i, str) for i in interfaces):
        raise QmpError("Invalid parameter type for 'interfaces', expected: string")
    done = m.announce_self(args["initial"], args["max"], args["rounds"], args["step"],
                           interfaces, args.get("id", ""))
    if inspect.isawaitable(done):
        await done
    return {}
