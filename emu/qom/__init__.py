"""QEMU's object model as far as emu's monitors and qtest need it.

* ``types``        -- :class:`TypeInfo`, the :class:`TypeRegistry` (``qom-list-types``)
* ``catalog``      -- every type emu has, under QEMU's names
* ``tree``         -- :class:`ObjectTree`: ``/machine/...`` objects, QEMU's path resolution
* ``gpio``         -- GPIO lines of an object (qtest's IRQ interception)
* ``machine_tree`` -- the tree a machine type lays out
"""
from emu.qom.catalog import registry
from emu.qom.tree import Object, ObjectTree
from emu.qom.types import TypeInfo, TypeRegistry

__all__ = ["Object", "ObjectTree", "TypeInfo", "TypeRegistry", "registry"]
