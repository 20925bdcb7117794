"""The QOM object tree of one machine: ``/machine``, its containers
(``peripheral`` for devices with an id, ``peripheral-anon``,
``unattached``), the platform's objects and every device, each an
:class:`Object` of a registered type holding the model behind it (``impl``).

Paths resolve as QEMU's ``object_resolve_path`` does: an absolute path
(``/machine/peripheral/net0``) walks child names from the root; a partial
one (``ioapic``, ``peripheral/net0``) matches wherever in the tree it
resolves below some object, and only if that is one place (ambiguous:
nothing).  ``qom-list``/``qom-get`` read :meth:`Object.properties`: the
children as ``child<TYPE>`` and the ``type`` string every object has, plus
what a model adds with :meth:`Object.add_property`.

Single-threaded: built and read on the machine's event loop (devices are
added while the machine is built or hot-plugged by QMP).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from emu.errors import EmuBug
from emu.qom.catalog import registry
from emu.qom.types import TYPE_CONTAINER, TypeRegistry

PERIPHERAL = "peripheral"
PERIPHERAL_ANON = "peripheral-anon"
UNATTACHED = "unattached"


@dataclass(frozen=True)
class Property:
    name: str
    type: str                               # QEMU's property type: "string", "child<pci-device>"...
    get: Callable[[], Any] | None = None     # qom-get; None: not readable


class Object:
    """One node.  Compared by identity: the qtest session keeps the
    intercepted device as one of these."""

    def __init__(self, type_name: str, impl: Any = None):
        self.type = type_name
        self.impl = impl
        self.name = ""
        self.parent: Object | None = None
        self.children: dict[str, Object] = {}
        self._props: dict[str, Property] = {}

    @property
    def path(self) -> str:
        parts = []
        o: Object | None = self
        while o is not None and o.parent is not None:
            parts.append(o.name)
            o = o.parent
        return "/" + "/".join(reversed(parts))

    def add_property(self, name: str, type: str, get: Callable[[], Any] | None = None) -> None:
        if name in self._props or name in self.children or name == "type":
            raise EmuBug(f"{self.path}: property {name} exists")
        self._props[name] = Property(name, type, get)

    def properties(self) -> list[Property]:
        """``qom-list``: ``type``, the children, then the model's properties."""
        return ([Property("type", "string", lambda: self.type)]
                + [Property(n, f"child<{c.type}>", lambda c=c: c.path)
                   for n, c in self.children.items()]
                + list(self._props.values()))

    def walk(self) -> Iterator[Object]:
        yield self
        for c in self.children.values():
            yield from c.walk()

    def __repr__(self) -> str:
        return f"<Object {self.path} {self.type}>"


class ObjectTree:
    def __init__(self, machine_type: str, types: TypeRegistry | None = None):
        self.types = types if types is not None else registry()
        self.root = Object(TYPE_CONTAINER)
        self.machine = self.add(self.root, "machine", machine_type)
        for name in (PERIPHERAL, PERIPHERAL_ANON, UNATTACHED):
            self.add(self.machine, name, TYPE_CONTAINER)
        self._anon = {PERIPHERAL_ANON: 0, UNATTACHED: 0}

    # -- building -----------------------------------------------------------------------------
    def add(self, parent: Object | str, name: str, type_name: str, impl: Any = None) -> Object:
        """A new child ``name`` of ``parent`` (an object or a path)."""
        if isinstance(parent, str):
            found = self.resolve(parent)
            if found is None:
                raise EmuBug(f"no QOM object at {parent}")
            parent = found
        if type_name not in self.types:
            raise EmuBug(f"QOM type {type_name} is not registered (emu.qom.catalog)")
        if not name or "/" in name:
            raise EmuBug(f"bad QOM child name {name!r}")
        if name in parent.children:
            raise EmuBug(f"{parent.path}/{name} exists")
        obj = Object(type_name, impl)
        obj.name, obj.parent = name, parent
        parent.children[name] = obj
        return obj

    def add_device(self, id: str | None, type_name: str, impl: Any = None) -> Object:
        """A device from ``-device``/``device_add``: ``/machine/peripheral/ID``,
        or ``/machine/peripheral-anon/device[N]`` without an id."""
        if id is not None:
            return self.add(self.machine.children[PERIPHERAL], id, type_name, impl)
        return self._numbered(PERIPHERAL_ANON, type_name, impl)

    def add_unattached(self, type_name: str, impl: Any = None) -> Object:
        """A platform object with no other parent: ``/machine/unattached/device[N]``."""
        return self._numbered(UNATTACHED, type_name, impl)

    def _numbered(self, container: str, type_name: str, impl: Any) -> Object:
        n = self._anon[container]
        self._anon[container] += 1
        return self.add(self.machine.children[container], f"device[{n}]", type_name, impl)

    def remove(self, obj: Object) -> None:
        """Unparent ``obj`` and everything below it (a device unplugged)."""
        if obj.parent is None or obj.parent.children.get(obj.name) is not obj:
            raise EmuBug(f"{obj!r} is not in the tree")
        del obj.parent.children[obj.name]
        obj.parent = None

    def device(self, id: str) -> Object | None:
        return self.machine.children[PERIPHERAL].children.get(id)

    # -- lookup ---------------------------------------------------------------------------------
    def resolve(self, path: str, type_name: str | None = None) -> Object | None:
        """The object at ``path`` (absolute or partial), if it is one and,
        with ``type_name``, implements that type."""
        if not path:
            return None
        parts = [p for p in path.split("/") if p]
        if path.startswith("/"):
            found = _walk(self.root, parts)
        else:
            found, ambiguous = self._partial(self.root, parts)
            if ambiguous:
                return None
        if found is not None and type_name is not None and \
                not self.types.implements(found.type, type_name):
            return None
        return found

    def is_ambiguous(self, path: str) -> bool:
        """Whether a partial ``path`` matches in more than one place (QEMU's
        "Path '...' is ambiguous")."""
        parts = [p for p in path.split("/") if p]
        return bool(parts) and not path.startswith("/") and self._partial(self.root, parts)[1]

    def _partial(self, node: Object, parts: list[str]) -> tuple[Object | None, bool]:
        # (qom/object.c object_resolve_partial_path: a match below node and
        # one below any child is ambiguous)
        found = _walk(node, parts)
        for child in node.children.values():
            sub, ambiguous = self._partial(child, parts)
            if ambiguous:
                return None, True
            if sub is not None:
                if found is not None:
                    return None, True
                found = sub
        return found, False


def _walk(node: Object, parts: list[str]) -> Object | None:
    for p in parts:
        node = node.children.get(p)
        if node is None:
            return None
    return node
