"""The object tree: QEMU's path resolution, devices, the machine layouts."""
from __future__ import annotations

import pytest

from emu.errors import EmuBug
from emu.machines import types as machine_types
from emu.machines.platform import Platform
from emu.qom.machine_tree import add_device, machine_tree
from emu.qom.tree import ObjectTree


def test_absolute_and_partial_paths_resolve_as_in_qemu():
    t = ObjectTree("pc-i440fx-7.2-machine")
    host = t.add(t.machine, "i440fx", "i440FX-pcihost")
    t.add(host, "ioapic", "ioapic")
    net = t.add_device("net0", "virtio-net-pci")
    assert t.resolve("/machine/i440fx/ioapic").type == "ioapic"
    assert t.resolve("ioapic") is host.children["ioapic"]
    assert t.resolve("/machine/ioapic") is None          # not a child of /machine
    assert t.resolve("peripheral/net0") is net and t.resolve("net0") is net
    assert t.resolve("//machine//peripheral/net0") is net  # empty parts are skipped
    assert net.path == "/machine/peripheral/net0"
    assert t.resolve("") is None and t.resolve("nothing") is None
    # a name found in two places is ambiguous: nothing
    t.add(t.machine, "ioapic", "ioapic")
    assert t.resolve("ioapic") is None
    assert t.resolve("/machine/ioapic").type == "ioapic"


def test_type_filter_and_devices_without_an_id():
    t = ObjectTree("none-machine")
    a = t.add_device(None, "virtio-net-pci")
    b = t.add_device(None, "vhost-pci-net")
    u = t.add_unattached("ioapic")
    assert (a.path, b.path, u.path) == ("/machine/peripheral-anon/device[0]",
                                         "/machine/peripheral-anon/device[1]",
                                         "/machine/unattached/device[0]")
    assert t.resolve(a.path, "pci-device") is a
    assert t.resolve(a.path, "sys-bus-device") is None
    assert t.resolve("/machine/peripheral", "device") is None    # a container


def test_adding_and_removing_objects():
    t = ObjectTree("none-machine")
    net = t.add_device("n1", "virtio-net-pci")
    with pytest.raises(EmuBug, match="exists"):
        t.add_device("n1", "virtio-net-pci")
    with pytest.raises(EmuBug, match="not registered"):
        t.add_device("n2", "e1000")
    with pytest.raises(EmuBug, match="bad QOM child name"):
        t.add(t.machine, "a/b", "container")
    t.remove(net)
    assert t.device("n1") is None and t.resolve("n1") is None
    with pytest.raises(EmuBug):
        t.remove(net)
    t.add_device("n1", "virtio-net-pci")          # the id is free again


def test_properties_list_type_children_and_model_properties():
    t = ObjectTree("none-machine")
    net = t.add_device("n1", "virtio-net-pci")
    t.add(net, "virtio-backend", "virtio-net-device")
    net.add_property("mac", "str", lambda: "52:54:00:12:34:56")
    props = {p.name: p for p in net.properties()}
    assert props["type"].type == "string" and props["type"].get() == "virtio-net-pci"
    assert props["virtio-backend"].type == "child<virtio-net-device>"
    assert props["virtio-backend"].get() == "/machine/peripheral/n1/virtio-backend"
    assert props["mac"].get() == "52:54:00:12:34:56"
    with pytest.raises(EmuBug):
        net.add_property("virtio-backend", "str")


@pytest.mark.parametrize("name, host, bus", [("pc", "i440fx", "pci.0"), ("q35", "q35", "pcie.0")])
def test_pc_machines_lay_out_the_host_bridge_and_ioapic_as_qemu(name, host, bus):
    mtype = machine_types.find(name)
    platform = Platform(mtype)
    try:
        t = machine_tree(mtype, platform)
        assert t.machine.type == mtype.qom_type
        assert t.resolve(f"/machine/{host}/{bus}") is not None
        ioapic = t.resolve("ioapic", "device")
        assert ioapic.path == f"/machine/{host}/ioapic"
        assert ioapic.impl.gpio_in.count == 24
        entry = object()
        dev = add_device(t, "nic", "virtio-net-pci", entry)
        assert dev.impl is entry and dev.children["virtio-backend"].type == "virtio-net-device"
    finally:
        platform.close()


def test_the_none_machine_has_only_its_containers():
    mtype = machine_types.find("none")
    platform = Platform(mtype, pci=False)
    try:
        t = machine_tree(mtype, platform)
        assert set(t.machine.children) == {"peripheral", "peripheral-anon", "unattached"}
        assert t.resolve("ioapic") is None
    finally:
        platform.close()


def test_a_platform_that_lays_out_its_own_tree_is_asked():
    class Own(Platform):
        def qom_populate(self, tree):
            tree.add(tree.machine, "fw_cfg", "ioapic")
    mtype = machine_types.find("pc")
    platform = Own(mtype)
    try:
        t = machine_tree(mtype, platform)
        assert t.resolve("/machine/fw_cfg") is not None and t.resolve("/machine/i440fx") is None
    finally:
        platform.close()


def test_an_ioapic_model_of_the_platform_is_the_ioapic_qtest_reaches():
    class Ioapic:
        def __init__(self):
            self.observers, self.pins = [], {}

        def intercept(self, notify):
            self.observers.append(notify)

        def set_irq(self, pin, level, source=None):
            self.pins[pin] = (level, source)
            for n in self.observers:
                n(pin, int(level))
    mtype = machine_types.find("pc")
    platform = Platform(mtype)
    platform.ioapic = Ioapic()
    try:
        t = machine_tree(mtype, platform)
        lines = t.resolve("ioapic").impl.gpio_in
        seen = []
        lines.observe(lambda n, level: seen.append((n, level)))
        lines.set(9, 1)
        assert seen == [(9, 1)] and platform.ioapic.pins[9] == (True, lines)
        assert not platform.irq.intx_level(9)      # the model drives the controller, not us
    finally:
        platform.close()
