"""Every QOM type emu has, under QEMU 7.2's names and parents (checked
against the reference QEMU by tests/qmp/test_introspection_vs_qemu.py).

A type is listed here when emu can make an object of it (or it is an
abstract parent or an interface of one).  A new device model adds its line
in the group it belongs to; machine types come from
:mod:`emu.machines.types`, their parents from the abstract machine types
below.  emu's own types (``vhost-pci-net``, ``memory-backend-shm``) have no
QEMU counterpart.
"""
from __future__ import annotations

from emu.qom.types import (TYPE_CONTAINER, TYPE_DEVICE, TYPE_INTERFACE, TYPE_OBJECT, TypeInfo,
                           TypeRegistry)

# interfaces
CONVENTIONAL_PCI_DEVICE = "conventional-pci-device"
PCI_EXPRESS_DEVICE = "pci-express-device"
HOTPLUG_HANDLER = "hotplug-handler"
USER_CREATABLE = "user-creatable"

# the types emu's object tree is made of (emu.qom.tree, emu.qom.machine_tree)
TYPE_MACHINE = "machine"
TYPE_PCI_DEVICE = "pci-device"
TYPE_VIRTIO_PCI = "virtio-pci"
TYPE_VIRTIO_NET_PCI = "virtio-net-pci"
TYPE_VIRTIO_NET_DEVICE = "virtio-net-device"
TYPE_VHOST_PCI_NET = "vhost-pci-net"
TYPE_VHOST_PCI_NET_DEVICE = "vhost-pci-net-device"
TYPE_I440FX_PCIHOST = "i440FX-pcihost"
TYPE_Q35_PCIHOST = "q35-pcihost"
TYPE_IOAPIC = "ioapic"
TYPE_PCI_BUS = "PCI"
TYPE_PCIE_BUS = "PCIE"

_I = TypeInfo

_ROOTS = (
    _I(TYPE_OBJECT, None, abstract=True),
    _I(TYPE_INTERFACE, None, abstract=True),
    _I(CONVENTIONAL_PCI_DEVICE, TYPE_INTERFACE, abstract=True),
    _I(PCI_EXPRESS_DEVICE, TYPE_INTERFACE, abstract=True),
    _I(HOTPLUG_HANDLER, TYPE_INTERFACE, abstract=True),
    _I(USER_CREATABLE, TYPE_INTERFACE, abstract=True),
    _I(TYPE_CONTAINER, TYPE_OBJECT),
)

_DEVICES = (
    _I(TYPE_DEVICE, TYPE_OBJECT, abstract=True),
    # PCI functions
    _I(TYPE_PCI_DEVICE, TYPE_DEVICE, abstract=True),
    _I(TYPE_VIRTIO_PCI, TYPE_PCI_DEVICE, abstract=True),
    _I("virtio-net-pci-base", TYPE_VIRTIO_PCI, abstract=True),
    _I(TYPE_VIRTIO_NET_PCI, "virtio-net-pci-base",
       interfaces=(PCI_EXPRESS_DEVICE, CONVENTIONAL_PCI_DEVICE)),
    _I(TYPE_VHOST_PCI_NET, TYPE_VIRTIO_PCI, interfaces=(CONVENTIONAL_PCI_DEVICE,)),
    # the virtio devices behind the PCI proxies (/machine/peripheral/ID/virtio-backend)
    _I("virtio-device", TYPE_DEVICE, abstract=True),
    _I(TYPE_VIRTIO_NET_DEVICE, "virtio-device"),
    _I(TYPE_VHOST_PCI_NET_DEVICE, "virtio-device"),
    # the platform
    _I("sys-bus-device", TYPE_DEVICE, abstract=True),
    _I("pci-host-bridge", "sys-bus-device", abstract=True),
    _I("pcie-host-bridge", "pci-host-bridge", abstract=True),
    _I(TYPE_I440FX_PCIHOST, "pci-host-bridge"),
    _I(TYPE_Q35_PCIHOST, "pcie-host-bridge"),
    _I("ioapic-common", "sys-bus-device", abstract=True),
    _I(TYPE_IOAPIC, "ioapic-common"),
)

_BUSES = (
    _I("bus", TYPE_OBJECT, abstract=True),
    _I(TYPE_PCI_BUS, "bus"),
    _I(TYPE_PCIE_BUS, TYPE_PCI_BUS),
    _I("virtio-bus", "bus", abstract=True),
    _I("virtio-pci-bus", "virtio-bus"),
)

_MACHINES = (
    _I(TYPE_MACHINE, TYPE_OBJECT, abstract=True),
    _I("x86-machine", TYPE_MACHINE, abstract=True),
    _I("generic-pc-machine", "x86-machine", abstract=True, interfaces=(HOTPLUG_HANDLER,)),
)

_OBJECTS = (
    _I("memory-backend", TYPE_OBJECT, abstract=True, interfaces=(USER_CREATABLE,)),
    _I("memory-backend-memfd", "memory-backend"),
    _I("memory-backend-file", "memory-backend"),
    _I("memory-backend-shm", "memory-backend"),
    _I("netfilter", TYPE_OBJECT, abstract=True, interfaces=(USER_CREATABLE,)),
    _I("filter-dump", "netfilter"),
)


def machine_types() -> tuple[TypeInfo, ...]:
    """``NAME-machine`` for every machine type of :mod:`emu.machines.types`."""
    from emu.machines.types import MACHINE_TYPES
    return tuple(_I(t.qom_type, t.qom_parent) for t in MACHINE_TYPES)


def emu_types() -> tuple[TypeInfo, ...]:
    """Every type, parents before children."""
    return _ROOTS + _DEVICES + _BUSES + _MACHINES + machine_types() + _OBJECTS


_REGISTRY: TypeRegistry | None = None


def registry() -> TypeRegistry:
    """The registry of every type emu has (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = TypeRegistry(emu_types())
    return _REGISTRY
