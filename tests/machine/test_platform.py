"""Machine types and the platform they build: one address-space dispatch
for every initiator (the guest, a device's MSI write, an outside driver),
CF8/CFC on the PC types, no PCI bus on ``none``."""
from __future__ import annotations

import struct

import pytest

from emu.errors import EmuBug
from emu.guest.pci import assign_resources, enumerate_bus
from emu.machine import Machine
from emu.machines import types
from emu.pci import MSIX, PCIFunction, RegisterMap
from emu.spec import pci as regs
from tests.pci.helpers import eventfd_count


def test_registry_names_aliases_and_default():
    assert types.default().name == "pc"          # QEMU 7.2's x86 default
    assert types.find("pc").name == "pc" and types.find("pc-i440fx-7.2").name == "pc"
    assert types.find("pc-i440fx-6.0").name == "pc" and types.find("pc-q35-7.1").name == "q35"
    assert types.find("none").has_pci is False
    assert types.find("isapc") is None and types.find("pc-i440fx-x") is None


@pytest.fixture
def machine(request):
    m = Machine(name="t", ram_size=16 << 20, backend="memfd", machine_type=request.param)
    yield m
    m.system.close()
    m.ram.close()


def msix_function(platform, slot: int = 3) -> PCIFunction:
    fn = PCIFunction(0x1234, 0x11, 0xFF0000, name="msix-test")
    bar = RegisterMap(0x1000, "bar1")
    fn.add_bar(1, 0x1000, ops=bar)
    fn.msix = MSIX(fn, 2, 1, 0, 1, 0x800)
    bar.add(0, fn.msix.table_size, fn.msix.table_ops, "table")
    bar.add(0x800, fn.msix.pba_size, fn.msix.pba_ops, "pba")
    platform.plug(fn, slot)
    return fn


@pytest.mark.parametrize("machine", ["none"], indirect=True)
def test_none_has_ram_and_no_pci_bus(machine):
    s = machine.system
    assert s.pci is None and s.functions == {}
    assert s.config_read(0, 0, 4) == 0xFFFFFFFF and s.unclaimed["config_read"] == 1
    assert s.pio_read(0xCFC, 4) == 0xFFFFFFFF                   # no host bridge either
    with pytest.raises(EmuBug):
        s.plug(PCIFunction(0x1234, 1, 0xFF0000), 3)
    machine.ram.regions[0].buffer()[0x1000:0x1004] = b"emu!"
    assert s.memory.read_bytes(0x1000, 4) == b"emu!"            # RAM is in the memory space


@pytest.mark.parametrize("machine", ["pc", "q35"], indirect=True)
def test_pc_types_decode_cf8_cfc_and_reach_ram(machine):
    s = machine.system
    fn = msix_function(s)
    s.pio_write(0xCF8, 4, 0x80000000 | (fn.bdf << 8))
    assert s.pio_read(0xCFC, 4) == 0x00111234
    s.memory.write_bytes(0x2000, b"\x01\x02\x03\x04")
    assert machine.ram.regions[0].buffer()[0x2000:0x2004] == b"\x01\x02\x03\x04"
    assert s.memory.read(0x2000, 4) == 0x04030201


@pytest.mark.parametrize("machine", ["pc"], indirect=True)
def test_an_msi_message_pointed_at_ram_is_a_memory_write(machine):
    """What QEMU's libqos checks: it programs the MSI-X message address to a
    buffer in guest RAM and reads the data the device wrote there."""
    s = machine.system
    fn = msix_function(s)
    dev = next(d for d in enumerate_bus(s) if d.bdf == fn.bdf)
    assign_resources(s, [dev])
    table = dev.bar_address(1)
    cap = dev.find_capabilities(regs.CAP_ID_MSIX)[0]
    dev.cfg_write(cap + 2, 2, 0x8000)                            # MSI-X enable
    s.mmio_write(table + 0, 8, 0x3000)                           # vector 0 -> guest RAM
    s.mmio_write(table + 8, 4, 0xCAFE)
    s.mmio_write(table + 12, 4, 0)                               # unmask
    apic_fd = s.interrupt_eventfd(0x41)
    s.mmio_write(table + 16, 8, regs.MSI_ADDR_BASE)              # vector 1 -> the APIC
    s.mmio_write(table + 24, 4, 0x41)
    s.mmio_write(table + 28, 4, 0)
    fn.msix.notify(0)
    fn.msix.notify(1)
    assert struct.unpack("<I", s.memory.read_bytes(0x3000, 4))[0] == 0xCAFE
    assert eventfd_count(apic_fd) == 1 and s.irq.invalid_messages == 0
    s.mmio_write(table + 0, 8, 0xF000_0000_0000)                 # nothing there
    fn.msix.notify(0)
    assert s.irq.invalid_messages == 1 and s.irq.last_invalid == (0xF000_0000_0000, 0xCAFE)
