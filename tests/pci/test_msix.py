"""MSI-X: capability, table, PBA, masking and pending delivery, programmed
by the guest-side PCI code the way Linux programs it."""
from __future__ import annotations

import struct

import pytest

from emu.errors import EmuBug
from emu.guest.pci import PCIDevice, assign_resources, enumerate_bus
from emu.pci import MSIX, PCIFunction, RegisterMap
from emu.spec import pci as regs

from .helpers import eventfd_count

NVEC = 5
PBA_OFF = 0x800


@pytest.fixture
def msix_fn(bus):
    fn = PCIFunction(0x1234, 0x11, 0xFF0000, name="msix-test")
    bar = RegisterMap(0x1000, "bar1")
    fn.add_bar(1, 0x1000, ops=bar)
    fn.msix = MSIX(fn, NVEC, 1, 0, 1, PBA_OFF)
    bar.add(0, fn.msix.table_size, fn.msix.table_ops, "table")
    bar.add(PBA_OFF, fn.msix.pba_size, fn.msix.pba_ops, "pba")
    bus.plug(fn, 3)
    return fn


@pytest.fixture
def dev(bus, msix_fn) -> PCIDevice:
    devs = enumerate_bus(bus)
    assign_resources(bus, devs)
    return devs[0]


def entry_addr(dev, vector, field=0):
    return dev.bar_address(1) + vector * 16 + field


def test_capability_describes_table_and_pba(bus, dev, msix_fn):
    cap = dev.find_capabilities(regs.CAP_ID_MSIX)[0]
    assert cap == msix_fn.msix.cap_offset
    ctrl, table, pba = struct.unpack("<HII", bytes(
        dev.cfg_read(cap + 2 + i, 1) for i in range(10)))
    assert ctrl == NVEC - 1 and table == 0 | 1 and pba == PBA_OFF | 1
    dev.cfg_write(cap + 2, 2, 0xFFFF)                     # only enable + function mask stick
    assert dev.cfg_read(cap + 2, 2) == 0xC000 | (NVEC - 1)
    dev.cfg_write(cap + 4, 4, 0)                          # table offset/BIR read-only
    assert dev.cfg_read(cap + 4, 4) == 1


def test_every_entry_starts_masked(dev, bus):
    for v in range(NVEC):
        assert bus.mmio_read(entry_addr(dev, v, 12), 4) == 1
        assert bus.mmio_read(entry_addr(dev, v, 0), 8) == 0


def test_enabled_vector_signals_the_guest_eventfd(dev, msix_fn):
    vecs = dev.enable_msix()
    assert len(vecs) == NVEC and len({v.vector for v in vecs}) == NVEC
    assert dev.command & regs.COMMAND_INTX_DISABLE and dev.command & regs.COMMAND_MASTER
    assert msix_fn.msix.notify(2)
    assert eventfd_count(vecs[2].eventfd) == 1
    assert all(eventfd_count(v.eventfd) == 0 for i, v in enumerate(vecs) if i != 2)
    assert msix_fn.msix.message(2) == (0xFEE00000, vecs[2].vector)


def test_masked_entry_pends_and_fires_on_unmask(dev, msix_fn):
    vecs = dev.enable_msix()
    dev.mask_msix_entry(1, True)
    assert msix_fn.msix.notify(1) and msix_fn.msix.notify(1)
    assert eventfd_count(vecs[1].eventfd) == 0
    assert dev.msix_pending(1) and not dev.msix_pending(0)
    dev.mask_msix_entry(1, False)
    assert eventfd_count(vecs[1].eventfd) == 1            # one message for the pending bit
    assert not dev.msix_pending(1)


def test_function_mask_pends_every_vector(dev, msix_fn):
    vecs = dev.enable_msix()
    dev.set_msix_function_mask(True)
    msix_fn.msix.notify(0)
    msix_fn.msix.notify(4)
    assert dev.msix_pending(0) and dev.msix_pending(4)
    assert eventfd_count(vecs[0].eventfd) == 0
    dev.mask_msix_entry(4, True)                          # still masked on its own
    dev.set_msix_function_mask(False)
    assert eventfd_count(vecs[0].eventfd) == 1 and eventfd_count(vecs[4].eventfd) == 0
    assert not dev.msix_pending(0) and dev.msix_pending(4)
    dev.mask_msix_entry(4, False)
    assert eventfd_count(vecs[4].eventfd) == 1


def test_withdrawn_event_clears_pending(dev, msix_fn):
    vecs = dev.enable_msix()
    dev.mask_msix_entry(3, True)
    msix_fn.msix.notify(3)
    msix_fn.msix.clear_pending(3)
    dev.mask_msix_entry(3, False)
    assert eventfd_count(vecs[3].eventfd) == 0


def test_disabled_msix_leaves_notify_to_intx(dev, msix_fn):
    assert not msix_fn.msix.notify(0)
    assert not dev.msix_pending(0)
    dev.enable_msix()
    with pytest.raises(EmuBug):                            # a device bug, not the guest's
        msix_fn.msix.notify(NVEC)


def test_no_message_without_bus_mastering(bus, dev, msix_fn):
    vecs = dev.enable_msix()
    dev.set_command(clear_bits=regs.COMMAND_MASTER)
    msix_fn.msix.notify(0)
    assert eventfd_count(vecs[0].eventfd) == 0
    assert msix_fn.errors["msi-without-bus-master"] == 1


def test_garbage_message_is_dropped_by_the_controller(bus, dev, msix_fn):
    dev.enable_msix()
    bus.mmio_write(entry_addr(dev, 0, 0), 4, 0x12345678)      # not the APIC window
    msix_fn.msix.notify(0)
    assert bus.irq.invalid_messages == 1


def test_table_access_rules(bus, dev, msix_fn):
    a = entry_addr(dev, 1)
    bus.mmio_write(a, 8, 0x00000000FEE00000)
    bus.mmio_write(a + 8, 8, (1 << 32) | 0x41)             # data + vector control in one
    assert bus.mmio_read(a + 8, 4) == 0x41 and bus.mmio_read(a + 12, 4) == 1
    bus.mmio_write(a + 12, 4, 0xFFFFFFFF)                  # reserved control bits stay 0
    assert bus.mmio_read(a + 12, 4) == 1
    errors = msix_fn.errors.total
    assert bus.mmio_read(a, 2) == 0xFFFF                   # word access: refused
    bus.mmio_write(a + 8, 1, 0)
    bus.mmio_write(a + 2, 4, 0)                            # misaligned dword
    assert bus.mmio_read(a + 8, 4) == 0x41
    assert msix_fn.errors["msix-bad-access"] == 3 == msix_fn.errors.total - errors
    assert bus.mmio_read(entry_addr(dev, NVEC), 4) == 0xFFFFFFFF     # past the table


def test_pba_is_read_only(bus, dev, msix_fn):
    dev.enable_msix()
    dev.mask_msix_entry(0, True)
    msix_fn.msix.notify(0)
    pba = dev.bar_address(1) + PBA_OFF
    bus.mmio_write(pba, 8, 0)
    assert bus.mmio_read(pba, 8) == 1 and bus.mmio_read(pba, 4) == 1
    assert msix_fn.errors["msix-pba-write"] == 1


def test_function_reset_masks_and_disables(bus, dev, msix_fn):
    dev.enable_msix()
    dev.mask_msix_entry(2, True)
    msix_fn.msix.notify(2)
    msix_fn.reset()
    assert not msix_fn.msix.enabled and not msix_fn.msix.is_pending(2)
    assert all(msix_fn.msix.vector_masked(v) and msix_fn.msix.message(v) == (0, 0)
               for v in range(NVEC))


@pytest.mark.parametrize("n,table,pba", [(0, 0, 0x800), (2049, 0, 0x800), (4, 4, 0x800)])
def test_bad_msix_declarations_are_our_bug(n, table, pba):
    fn = PCIFunction(0x1234, 0x11, 0xFF0000)
    with pytest.raises(EmuBug):
        MSIX(fn, n, 1, table, 1, pba)
