"""QMP commands: request checking, argument checking, the command table.

Sans I/O: :func:`dispatch` turns one decoded request into one response
dict (or a :class:`QmpError`), checking it in the order and with the
texts of QEMU 7.2's ``qmp_dispatch`` and QAPI input visitor;
:func:`execute` runs one command (what HMP builds on).  Handlers get the
:class:`~emu.qmp.session.Session` and its arguments.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from emu.errors import PeerError
from emu.qmp import schema as S
from emu.qmp.errors import CommandNotFound, QmpError
from emu.qmp.session import Session, version_info


class Arg:
    """One argument: ``type`` is what is checked ("str" | "int" | "bool" |
    "object" | "array" | "any"); ``schema`` its QAPI type for
    query-qmp-schema where the check type says too little.  (Plain classes
    here, not dataclasses: the table is built while the process starts.)"""

    __slots__ = ("name", "type", "optional", "schema")

    def __init__(self, name: str, type: str, optional: bool = False, schema: Any = None):
        self.name, self.type, self.optional, self.schema = name, type, optional, schema

    def __repr__(self) -> str:
        return f"Arg({self.name!r}, {self.type!r}{', optional' if self.optional else ''})"


_TYPE_NAMES = {"str": "string", "int": "integer", "bool": "boolean",
               "object": "object", "array": "array"}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < 1 << 64
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    return True


#: an Arg of this name lets a command take arguments beyond its spec (device_add's properties)
ANY_ARGS = S.ANY_ARGS


def check_args(spec: tuple[Arg, ...], args: dict[str, Any]) -> None:
    for a in spec:
        if a.name == ANY_ARGS:
            continue
        if a.name not in args:
            if not a.optional:
                raise QmpError(f"Parameter '{a.name}' is missing")
        elif not _type_ok(a.type, args[a.name]):
            raise QmpError(f"Invalid parameter type for '{a.name}', expected: {_TYPE_NAMES[a.type]}")
    known = {a.name for a in spec}
    if ANY_ARGS in known:
        return
    for key in args:
        if key not in known:
            raise QmpError(f"Parameter '{key}' is unexpected")


Handler = Callable[["Session", dict[str, Any]], Any]


class Command:
    """A command: its handler, arguments, whether it needs the machine, and
    its QAPI return type (:mod:`emu.qmp.schema`, for query-qmp-schema)."""

    __slots__ = ("name", "handler", "args", "needs_machine", "returns")

    def __init__(self, name: str, handler: Handler, args: tuple[Arg, ...] = (),
                 needs_machine: bool = True, returns: Any = "any"):
        self.name, self.handler, self.args = name, handler, args
        self.needs_machine, self.returns = needs_machine, returns


COMMANDS: dict[str, Command] = {}


def command(name: str, *args: Arg, needs_machine: bool = True,
            returns: Any = "any") -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, fn, tuple(args), needs_machine, returns)
        return fn
    return register


async def _call(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


# -- the commands --------------------------------------------------------------

QMP_CAPABILITIES = "qmp_capabilities"


@command(QMP_CAPABILITIES, Arg("enable", "array", optional=True, schema=S.Array(S.QMP_CAPABILITY)),
         needs_machine=False, returns=S.EMPTY)
def qmp_capabilities(s: Session, args: dict[str, Any]) -> dict:
    if s.negotiated:
        raise CommandNotFound("Capabilities negotiation is already complete, command ignored")
    for cap in args.get("enable", []):
        if not isinstance(cap, str):
            raise QmpError("Invalid parameter type for 'enable', expected: string")
        if cap != "oob":
            raise QmpError(f"Parameter 'enable' does not accept value '{cap}'")
        # emu does not offer out-of-band execution (its greeting says so)
        raise QmpError("Capability 'oob' not available")
    s.negotiated = True
    return {}


@command("query-status", returns=S.STATUS_INFO)
def query_status(s: Session, args: dict[str, Any]) -> dict:
    state = s.machine.run_state
    return {"status": state, "singlestep": False, "running": state == "running"}


@command("stop", returns=S.EMPTY)
async def stop(s: Session, args: dict[str, Any]) -> dict:
    await _call(s.machine.stop())
    return {}


@command("cont", returns=S.EMPTY)
async def cont(s: Session, args: dict[str, Any]) -> dict:
    await _call(s.machine.cont())
    return {}


@command("system_reset", returns=S.EMPTY)
async def system_reset(s: Session, args: dict[str, Any]) -> dict:
    await _call(s.machine.system_reset())
    return {}


@command("system_powerdown", returns=S.EMPTY)
async def system_powerdown(s: Session, args: dict[str, Any]) -> dict:
    await _call(s.machine.system_powerdown())
    return {}


@command("quit", returns=S.EMPTY)
async def quit_(s: Session, args: dict[str, Any]) -> dict:
    await _call(s.machine.quit())
    return {}


@command("query-version", needs_machine=False, returns=S.VERSION_INFO)
def query_version(s: Session, args: dict[str, Any]) -> dict:
    return version_info()


@command("query-name", returns=S.NAME_INFO)
def query_name(s: Session, args: dict[str, Any]) -> dict:
    name = s.machine.name
    return {} if name is None else {"name": name}


@command("query-uuid", returns=S.UUID_INFO)
def query_uuid(s: Session, args: dict[str, Any]) -> dict:
    # -uuid, else QEMU's all-zero UUID
    return {"UUID": getattr(s.machine, "uuid", None) or "00000000-0000-0000-0000-000000000000"}


@command("query-commands", needs_machine=False, returns=S.Array(S.COMMAND_INFO))
def query_commands(s: Session, args: dict[str, Any]) -> list:
    return [{"name": name} for name in COMMANDS]


@command("query-pci", returns=S.Array(S.PCI_INFO))
def query_pci(s: Session, args: dict[str, Any]) -> list:
    return s.machine.query_pci()


@command("query-chardev", returns=S.Array(S.CHARDEV_INFO))
def query_chardev(s: Session, args: dict[str, Any]) -> list:
    return s.monitor.chardev_info() + list(s.machine.query_chardev())


@command("query-emu-stats", Arg("device", "str", optional=True), returns=S.EMU_STATS)
def query_emu_stats(s: Session, args: dict[str, Any]) -> dict:
    stats = s.machine.emu_stats()
    if "device" in args:
        devices = [d for d in stats.get("devices", []) if d.get("id") == args["device"]]
        if not devices:
            raise QmpError(f"Device '{args['device']}' not found")
        stats = {**stats, "devices": devices}
    return stats


@command("emu-set-guest-app", Arg("app", "str"), Arg("params", "object", optional=True),
         returns=S.EMPTY)
async def emu_set_guest_app(s: Session, args: dict[str, Any]) -> dict:
    params = args.get("params", {})
    for key, value in params.items():
        if not isinstance(value, (str, int, float, bool)):
            raise QmpError(f"Invalid parameter type for 'params.{key}', expected: scalar")
    await _call(s.machine.set_guest_app(args["app"], dict(params)))
    return {}


@command("query-qmp-schema", needs_machine=False, returns=S.Array(S.SCHEMA_INFO))
def query_qmp_schema(s: Session, args: dict[str, Any]) -> list:
    return S.schema_info(COMMANDS)


@command("query-cpus-fast", returns=S.Array(S.CPU_INFO_FAST))
def query_cpus_fast(s: Session, args: dict[str, Any]) -> list:
    cpus = getattr(s.machine, "query_cpus_fast", None)
    return cpus() if cpus is not None else []


@command("query-kvm", needs_machine=False, returns=S.KVM_INFO)
def query_kvm(s: Session, args: dict[str, Any]) -> dict:
    # emu runs no CPU model: no KVM, whatever -accel asked for
    return {"enabled": False, "present": False}


# -- dispatch ------------------------------------------------------------------

_NO_ID = object()


def _check_request(req: dict[str, Any]) -> str:
    for key, value in req.items():
        if key == "execute":
            if not isinstance(value, str):
                raise QmpError("QMP input member 'execute' must be a string")
        elif key == "arguments":
            if not isinstance(value, dict):
                raise QmpError("QMP input member 'arguments' must be an object")
        elif key != "id":
            raise QmpError(f"QMP input member '{key}' is unexpected")
    if "execute" not in req:
        raise QmpError("QMP input lacks member 'execute'")
    return req["execute"]


async def execute(s: Session, name: str, args: dict[str, Any] | None = None) -> Any:
    """Run command *name* (known, arguments checked); its value, or
    :class:`QmpError` / whatever the machine raised."""
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise CommandNotFound(f"The command {name} has not been found")
    args = {} if args is None else args
    check_args(cmd.args, args)
    if cmd.needs_machine:
        await s.monitor.machine_ready()
    return await _call(cmd.handler(s, args))


async def dispatch(s: Session, req: Any) -> dict[str, Any]:
    """One response for one decoded request; never raises QmpError."""
    if not isinstance(req, dict):
        return {"error": QmpError("QMP input must be a JSON object").to_json()}
    rid = req.get("id", _NO_ID)
    try:
        name = _check_request(req)
        if not s.negotiated and name != QMP_CAPABILITIES:
            raise CommandNotFound("Expecting capabilities negotiation with 'qmp_capabilities'")
        value = await execute(s, name, req.get("arguments", {}))
        response: dict[str, Any] = {"return": value}
        if rid is not _NO_ID:
            response["id"] = rid
        return response
    except QmpError as e:
        error = e.to_json()
    except PeerError as e:  # the machine refused bad input (e.g. an app parameter)
        error = QmpError(str(e)).to_json()
    except Exception as e:  # a bug in emu or in the machine: answer, log, keep serving
        s.monitor.log_bug(f"command {req.get('execute')!r} failed", e)
        error = QmpError(f"internal error: {type(e).__name__}: {e}").to_json()
    return {"error": error} if rid is _NO_ID else {"id": rid, "error": error}
