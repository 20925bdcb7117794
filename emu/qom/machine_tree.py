"""The object tree of a machine as QEMU 7.2 lays it out:

* ``pc``:  ``/machine/i440fx`` (i440FX-pcihost) with its bus ``pci.0`` and
  the ``ioapic`` (so the partial path ``ioapic`` resolves, and
  ``/machine/ioapic`` does not: QEMU's ``ioapic_init_gsi(.., "i440fx")``);
* ``q35``: ``/machine/q35`` (q35-pcihost), ``pcie.0``, ``ioapic``;
* ``none``: the containers only;
* every device: ``/machine/peripheral/ID`` (or ``peripheral-anon``), its
  virtio device below it as ``virtio-backend``.

A platform that knows its own pieces better (the chipset functions)
provides ``qom_populate(tree)`` and is asked instead of the defaults here.
"""
from __future__ import annotations

from typing import Any

from emu.qom import catalog as C
from emu.qom.gpio import IoapicInputs, IrqLineInputs
from emu.qom.tree import Object, ObjectTree

#: machine type name -> (host bridge child, its type, root bus child, bus type)
HOST_BRIDGES = {
    "pc": ("i440fx", C.TYPE_I440FX_PCIHOST, "pci.0", C.TYPE_PCI_BUS),
    "q35": ("q35", C.TYPE_Q35_PCIHOST, "pcie.0", C.TYPE_PCIE_BUS),
}
VIRTIO_BACKEND = "virtio-backend"
#: -device driver -> the type of its virtio device
VIRTIO_BACKENDS = {C.TYPE_VIRTIO_NET_PCI: C.TYPE_VIRTIO_NET_DEVICE,
                   C.TYPE_VHOST_PCI_NET: C.TYPE_VHOST_PCI_NET_DEVICE}


def machine_tree(machine_type, platform) -> ObjectTree:
    """The tree of a machine of ``machine_type`` (emu.machines.types)
    built on ``platform`` (emu.machines.platform.Platform)."""
    tree = ObjectTree(machine_type.qom_type)
    populate = getattr(platform, "qom_populate", None)
    if populate is not None:
        populate(tree)
        return tree
    host = HOST_BRIDGES.get(machine_type.name)
    if host is not None and platform.pci is not None:
        name, htype, bus, btype = host
        bridge = tree.add(tree.machine, name, htype, platform.config_mechanism)
        tree.add(bridge, bus, btype, platform.pci)
        ioapic = getattr(platform, "ioapic", None)
        inputs = IoapicInputs(ioapic) if ioapic is not None else IrqLineInputs(platform.irq)
        tree.add(bridge, "ioapic", C.TYPE_IOAPIC, _Ioapic(ioapic, inputs))
    return tree


class _Ioapic:
    """The ioapic as qtest sees it: its unnamed GPIO inputs (and the model,
    where the platform has one)."""

    def __init__(self, model, inputs):
        self.model = model
        self.gpio_in = inputs


def add_device(tree: ObjectTree, id: str | None, driver: str, entry: Any) -> Object:
    """A device plugged into the machine, with its virtio backend."""
    obj = tree.add_device(id, driver, entry)
    backend = VIRTIO_BACKENDS.get(driver)
    if backend is not None:
        tree.add(obj, VIRTIO_BACKEND, backend, getattr(entry, "model", None))
    return obj
