"""emu's QOM types: QEMU's implements/abstract rules and ObjectTypeInfo shapes."""
from __future__ import annotations

import pytest

from emu.errors import EmuBug
from emu.machines.types import MACHINE_TYPES
from emu.qom.catalog import registry
from emu.qom.types import TypeInfo, TypeRegistry


def names(types):
    return {t.name for t in types}


def test_devices_are_listed_by_what_they_implement():
    r = registry()
    devices = names(r.list_types("device", abstract=True))
    assert {"device", "pci-device", "virtio-pci", "virtio-net-pci", "vhost-pci-net",
            "i440FX-pcihost", "ioapic"} <= devices
    assert not devices & {"machine", "pc-i440fx-7.2-machine", "PCI", "container"}
    concrete = names(r.list_types("device"))
    assert "virtio-net-pci" in concrete and not concrete & {"device", "pci-device", "virtio-pci"}
    assert names(r.list_types("virtio-pci")) == {"virtio-net-pci", "vhost-pci-net"}


def test_interfaces_are_implemented_through_ancestors():
    r = registry()
    assert {"virtio-net-pci", "vhost-pci-net"} <= names(r.list_types("conventional-pci-device"))
    assert names(r.list_types("pci-express-device")) == {"virtio-net-pci"}
    # the pc machines implement hotplug-handler through generic-pc-machine; none does not
    hp = names(r.list_types("hotplug-handler"))
    assert {"pc-i440fx-7.2-machine", "pc-q35-7.2-machine"} <= hp and "none-machine" not in hp
    assert r.implements("virtio-net-pci", "interface")
    assert r.list_types("no-such-type") == []


def test_every_machine_type_has_its_qom_type():
    r = registry()
    machines = names(r.list_types("machine"))
    assert machines == {t.qom_type for t in MACHINE_TYPES}
    assert r.get("pc-i440fx-7.2-machine").parent == "generic-pc-machine"
    assert r.get("none-machine").parent == "machine"


def test_object_type_info_has_qemus_members_only():
    r = registry()
    assert r.get("device").object_type_info() == {"name": "device", "abstract": True,
                                                  "parent": "object"}
    assert r.get("virtio-net-pci").object_type_info() == {"name": "virtio-net-pci",
                                                          "parent": "virtio-net-pci-base"}
    assert r.get("object").object_type_info() == {"name": "object", "abstract": True}


def test_the_registry_refuses_what_would_make_it_inconsistent():
    r = TypeRegistry([TypeInfo("object", None, abstract=True),
                      TypeInfo("interface", None, abstract=True)])
    with pytest.raises(EmuBug, match="not registered"):
        r.register(TypeInfo("child", "parent"))
    r.register(TypeInfo("thing", "object"))
    with pytest.raises(EmuBug, match="twice"):
        r.register(TypeInfo("thing", "object"))
    with pytest.raises(EmuBug, match="not an interface"):
        r.register(TypeInfo("other", "object", interfaces=("thing",)))
    with pytest.raises(EmuBug, match="no parent"):
        r.register(TypeInfo("orphan", None))
    assert r.ancestors("thing") == ["thing", "object"]
