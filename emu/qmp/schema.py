"""``query-qmp-schema``: what emu's monitor accepts and sends, in QAPI's
introspection shapes (QEMU 7.2's ``SchemaInfo``), generated from the
command table (:mod:`emu.qmp.commands`: each command's arguments and its
``returns``) and the events declared here.

A small type language stands for QAPI's: the builtins by name (``"str"``,
``"int"``, ``"bool"``, ``"number"``, ``"null"``, ``"any"``), :class:`Obj`
(members, ``"name?"`` optional), :class:`Enum`, :class:`Array`.  As QEMU
does, every type but the builtins is named by a number in the answer
(``"0"`` is the empty object), arrays ``"[ELEMENT]"``; the numbering is a
property of one answer, never to be relied on, only to be followed.

A new command declares its return (``@command(..., returns=Obj(...))``),
a new event its data (:func:`event`); undeclared, a command returns
``any``.
"""
from __future__ import annotations

from typing import Any

BUILTINS = {"str": "string", "int": "int", "bool": "boolean", "number": "number",
            "null": "null", "any": "value"}


class Obj:
    """A QAPI struct: ``Obj(("name", "str"), ("size?", "int"))``."""

    def __init__(self, *members: tuple[str, "Type"]):
        self.members = tuple((n.rstrip("?"), t, n.endswith("?")) for n, t in members)

    def key(self) -> tuple:
        return ("object", tuple((n, _key(t), o) for n, t, o in self.members))


class Union:
    """A QAPI flat union: the base members, and per value of *tag* (a base
    member) the members that come with it."""

    def __init__(self, base: Obj, tag: str, variants: dict[str, Obj]):
        self.base, self.tag, self.variants = base, tag, variants
        self.members = base.members

    def key(self) -> tuple:
        return ("union", self.base.key(), self.tag,
                tuple((c, v.key()) for c, v in self.variants.items()))


class Enum:
    def __init__(self, *values: str):
        self.values = values

    def key(self) -> tuple:
        return ("enum", self.values)


class Array:
    def __init__(self, element: "Type"):
        self.element = element

    def key(self) -> tuple:
        return ("array", _key(self.element))


Type = Any          # a builtin's name, Obj, Union, Enum or Array
EMPTY = Obj()


def _key(t: Type) -> Any:
    return t if isinstance(t, str) else t.key()


# -- the shared types, QEMU's names in comments ---------------------------------------------
RUN_STATE = Enum("debug", "inmigrate", "internal-error", "io-error", "paused", "postmigrate",
                 "prelaunch", "finish-migrate", "restore-vm", "running", "save-vm", "shutdown",
                 "suspended", "watchdog", "guest-panicked", "colo")           # RunState
SHUTDOWN_CAUSE = Enum("none", "host-error", "host-qmp-quit", "host-qmp-system-reset",
                      "host-signal", "host-ui", "guest-shutdown", "guest-reset", "guest-panic",
                      "subsystem-reset", "snapshot-load")                     # ShutdownCause
QMP_CAPABILITY = Enum("oob")                                                  # QMPCapability
STATUS_INFO = Obj(("running", "bool"), ("singlestep", "bool"), ("status", RUN_STATE))
VERSION_INFO = Obj(("qemu", Obj(("major", "int"), ("minor", "int"), ("micro", "int"))),
                   ("package", "str"))
NAME_INFO = Obj(("name?", "str"))
UUID_INFO = Obj(("UUID", "str"))
COMMAND_INFO = Obj(("name", "str"))
CHARDEV_INFO = Obj(("label", "str"), ("filename", "str"), ("frontend-open", "bool"))
PCI_MEMORY_REGION = Obj(("bar", "int"), ("type", "str"), ("address", "int"), ("size", "int"),
                        ("prefetch?", "bool"), ("mem_type_64?", "bool"))
PCI_DEVICE_INFO = Obj(("bus", "int"), ("slot", "int"), ("function", "int"),
                      ("class_info", Obj(("desc?", "str"), ("class", "int"))),
                      ("id", Obj(("device", "int"), ("vendor", "int"), ("subsystem?", "int"),
                                 ("subsystem-vendor?", "int"))),
                      ("irq?", "int"), ("irq_pin", "int"), ("qdev_id", "str"), ("pci_bridge?", "any"),
                      ("regions", Array(PCI_MEMORY_REGION)))
PCI_INFO = Obj(("bus", "int"), ("devices", Array(PCI_DEVICE_INFO)))
CPU_INSTANCE_PROPERTIES = Obj(("node-id?", "int"), ("socket-id?", "int"), ("die-id?", "int"),
                              ("cluster-id?", "int"), ("core-id?", "int"), ("thread-id?", "int"))
CPU_INFO_FAST = Obj(("cpu-index", "int"), ("qom-path", "str"), ("thread-id", "int"),
                    ("props?", CPU_INSTANCE_PROPERTIES), ("target", Enum("x86_64")))
KVM_INFO = Obj(("enabled", "bool"), ("present", "bool"))
_META_TYPE = Enum("builtin", "enum", "array", "object", "alternate", "command", "event")
SCHEMA_INFO = Union(Obj(("name", "str"), ("meta-type", _META_TYPE), ("features?", Array("str"))),
                    "meta-type", {
    "builtin": Obj(("json-type", Enum("string", "number", "int", "boolean", "null", "object",
                                      "array", "value"))),
    "enum": Obj(("members", Array(Obj(("name", "str"), ("features?", Array("str"))))),
                ("values", Array("str"))),
    "array": Obj(("element-type", "str")),
    "object": Obj(("members", Array(Obj(("name", "str"), ("type", "str"), ("default?", "any"),
                                        ("features?", Array("str"))))),
                  ("tag?", "str"), ("variants?", Array(Obj(("case", "str"), ("type", "str"))))),
    "alternate": Obj(("members", Array(Obj(("type", "str"))))),
    "command": Obj(("arg-type", "str"), ("ret-type", "str"), ("allow-oob?", "bool")),
    "event": Obj(("arg-type", "str")),
})
MACHINE_INFO = Obj(("name", "str"), ("alias?", "str"), ("is-default?", "bool"), ("cpu-max", "int"),
                   ("hotpluggable-cpus", "bool"), ("numa-mem-supported", "bool"),
                   ("deprecated", "bool"), ("default-cpu-type?", "str"),
                   ("default-ram-id?", "str"))
OBJECT_TYPE_INFO = Obj(("name", "str"), ("abstract?", "bool"), ("parent?", "str"))
OBJECT_PROPERTY_INFO = Obj(("name", "str"), ("type", "str"), ("description?", "str"),
                           ("default-value?", "any"))
EMU_STATS = Obj(("devices", Array("any")), ("guest?", "any"), ("serial?", Array("any")))

_DEVICE_CHARDEV = (("device", "str"), ("chardev", "str"), ("netdev?", "str"))

#: event name -> its data (emu raises these; QEMU's have QEMU's members)
EVENTS: dict[str, Obj] = {
    "STOP": EMPTY,
    "RESUME": EMPTY,
    "POWERDOWN": EMPTY,
    "RESET": Obj(("guest", "bool"), ("reason", SHUTDOWN_CAUSE)),
    "SHUTDOWN": Obj(("guest", "bool"), ("reason", SHUTDOWN_CAUSE)),
    "NIC_RX_FILTER_CHANGED": Obj(("name?", "str"), ("path", "str")),
    # emu's own
    "VHOST_USER_CONNECTED": Obj(*_DEVICE_CHARDEV),
    "VHOST_USER_DISCONNECTED": Obj(*_DEVICE_CHARDEV, ("reason", "str")),
    "VHOST_USER_FEATURES_CHANGED": Obj(*_DEVICE_CHARDEV, ("features", "int"),
                                       ("protocol-features", "int")),
    "EMU_VHOST_PCI_WINDOW_REVOKED": Obj(("device", "str"), ("reason", "str")),
    "EMU_GUEST_PANIC": Obj(("driver", "str"), ("reason", "str")),
    "EMU_GUEST_POWEROFF": EMPTY,
    "EMU_GUEST_RENEGOTIATED": Obj(("driver", "str"), ("features", "int")),
    # the app's counters follow "app": each app has its own (see query-emu-stats)
    "EMU_GUEST_APP_DONE": Obj(("app", "str"), *((f"{k}?", "int") for k in (
        "sent", "received", "echoed", "forwarded", "arp_replies", "icmp_replies", "ignored",
        "rounds", "lost"))),
}


def event(name: str, data: Obj = EMPTY) -> None:
    """Declare an event a module raises (its data members)."""
    EVENTS[name] = data


# -- the answer ------------------------------------------------------------------------------
class _Namer:
    """QEMU's masking: numbers for every non-builtin type, in order of use."""

    def __init__(self) -> None:
        self.names: dict[Any, str] = {}
        self.entries: list[dict[str, Any]] = []
        self.name(EMPTY)                    # "0", as in QEMU

    def name(self, t: Type) -> str:
        if isinstance(t, str):
            if t not in BUILTINS:
                raise ValueError(f"unknown builtin type {t!r}")
            key = ("builtin", t)
            if key not in self.names:
                self.names[key] = t
                self.entries.append({"name": t, "meta-type": "builtin", "json-type": BUILTINS[t]})
            return t
        key = t.key()
        if key in self.names:
            return self.names[key]
        if isinstance(t, Array):
            element = self.name(t.element)
            name = f"[{element}]"
            self.names[key] = name
            self.entries.append({"name": name, "meta-type": "array", "element-type": element})
            return name
        name = str(sum(1 for k in self.names if k[0] != "builtin" and k[0] != "array"))
        self.names[key] = name
        if isinstance(t, Enum):
            self.entries.append({"name": name, "meta-type": "enum",
                                 "members": [{"name": v} for v in t.values],
                                 "values": list(t.values)})
            return name
        entry: dict[str, Any] = {"name": name, "meta-type": "object", "members": []}
        self.entries.append(entry)
        for member, mtype, optional in t.members:
            m: dict[str, Any] = {"name": member, "type": self.name(mtype)}
            if optional:
                m["default"] = None
            entry["members"].append(m)
        if isinstance(t, Union):
            entry["tag"] = t.tag
            entry["variants"] = [{"case": c, "type": self.name(v)} for c, v in t.variants.items()]
        return name


#: the name of an Arg that lets a command take arguments beyond its spec
#: (device_add's properties)
ANY_ARGS = "*"


def arg_type(args: tuple) -> Obj:
    """A command's arguments (emu.qmp.commands.Arg) as a QAPI struct.  The
    catch-all of a command that takes more (device_add's properties) is not
    a member: QEMU declares such a command's named arguments only."""
    simple = {"str": "str", "int": "int", "bool": "bool", "object": "any", "array": Array("any"),
              "any": "any"}
    return Obj(*((a.name + ("?" if a.optional else ""), a.schema or simple[a.type]) for a in args
                 if a.name != ANY_ARGS))


def schema_info(commands: dict[str, Any]) -> list[dict[str, Any]]:
    """``query-qmp-schema``'s answer: every command, then every event, then
    the types they use."""
    namer = _Namer()
    out: list[dict[str, Any]] = []
    for name in sorted(commands):
        cmd = commands[name]
        out.append({"name": name, "meta-type": "command", "arg-type": namer.name(arg_type(cmd.args)),
                    "ret-type": namer.name(cmd.returns)})
    for name in sorted(EVENTS):
        out.append({"name": name, "meta-type": "event", "arg-type": namer.name(EVENTS[name])})
    return out + namer.entries
