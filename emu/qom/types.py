"""QOM types: names, parents, abstract, interfaces -- what ``qom-list-types``
reports and what ``implements`` asks.

A :class:`TypeInfo` is one type under QEMU's name.  A type *implements*
another when that one is itself, one of its ancestors, or an interface
declared by it or an ancestor (interfaces inherit from their parents too),
as ``object_class_dynamic_cast`` decides.  The types emu has are declared
in :mod:`emu.qom.catalog`; its :func:`~emu.qom.catalog.registry` gives them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from emu.errors import EmuBug

TYPE_OBJECT = "object"
TYPE_INTERFACE = "interface"
TYPE_DEVICE = "device"
TYPE_CONTAINER = "container"


@dataclass(frozen=True)
class TypeInfo:
    name: str
    parent: str | None               # None only for the roots, object and interface
    abstract: bool = False
    interfaces: tuple[str, ...] = ()

    def object_type_info(self) -> dict:
        """QAPI ``ObjectTypeInfo``: ``abstract`` only when true and ``parent``
        only when there is one, as QEMU 7.2 answers."""
        out: dict = {"name": self.name}
        if self.abstract:
            out["abstract"] = True
        if self.parent is not None:
            out["parent"] = self.parent
        return out


class TypeRegistry:
    def __init__(self, types: Iterable[TypeInfo] = ()):
        self._types: dict[str, TypeInfo] = {}
        for t in types:
            self.register(t)

    def register(self, info: TypeInfo) -> TypeInfo:
        """Add one type; its parent and interfaces must be known already."""
        if info.name in self._types:
            raise EmuBug(f"QOM type {info.name} registered twice")
        if info.parent is None and info.name not in (TYPE_OBJECT, TYPE_INTERFACE):
            raise EmuBug(f"QOM type {info.name} has no parent")
        for dep in ((info.parent,) if info.parent else ()) + info.interfaces:
            if dep not in self._types:
                raise EmuBug(f"QOM type {info.name}: {dep} is not registered before it")
        for iface in info.interfaces:
            if not self.implements(iface, TYPE_INTERFACE):
                raise EmuBug(f"QOM type {info.name}: {iface} is not an interface")
        self._types[info.name] = info
        return info

    def get(self, name: str) -> TypeInfo | None:
        return self._types.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._types

    def __iter__(self):
        return iter(self._types.values())

    def ancestors(self, name: str) -> list[str]:
        """``name`` and its parents up to the root."""
        out = []
        t = self._types.get(name)
        while t is not None:
            out.append(t.name)
            t = self._types.get(t.parent) if t.parent else None
        return out

    def implements(self, name: str, target: str) -> bool:
        """Whether type ``name`` is, derives from, or implements ``target``."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            n = todo.pop()
            if n in seen or n not in self._types:
                continue
            seen.add(n)
            if n == target:
                return True
            t = self._types[n]
            if t.parent:
                todo.append(t.parent)
            todo.extend(t.interfaces)
        return False

    def list_types(self, implements: str | None = None, abstract: bool = False) -> list[TypeInfo]:
        """``qom-list-types``: every type (abstract ones only with
        ``abstract``), or those implementing ``implements`` (an unknown
        name matches nothing)."""
        return [t for t in self._types.values()
                if (abstract or not t.abstract)
                and (implements is None or self.implements(t.name, implements))]
