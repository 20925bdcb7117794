"""The virtio-pci transport as QEMU 7.2 builds virtio-net-pci: QEMU's layout
(legacy I/O BAR0, MSI-X BAR1, modern BAR4 with QEMU's capability chain),
the transitional / modern-only / legacy-only shapes, the modern interface
dropped without VERSION_1, and the legacy interface register by register
(virtio 1.2 §4.1.4.8), driven as a legacy driver drives it.  The same
bytes against the reference QEMU: test_registers_vs_qemu.py."""
from __future__ import annotations

import os

import pytest

from emu.guest.pci import DriverError, probe
from emu.guest.virtio_pci import VirtioPCIDriver
from emu.guest.virtio_pci_legacy import LegacyVirtioPCIDriver
from emu.guest.virtio_transport import transport
from emu.spec import pci as regs, virtio_pci as VP
from emu.spec.virtio import (F_BAD_FEATURE, F_EVENT_IDX, F_VERSION_1, ISR_QUEUE, NO_VECTOR,
                             STATUS_ACKNOWLEDGE as ACK, STATUS_DRIVER as DRV,
                             STATUS_DRIVER_OK as DOK, STATUS_FEATURES_OK as FOK)
from emu.spec.virtio_ring import ring_layout
from emu.virtio import QEMU_LAYOUT, Interfaces, VirtioPCIFunction
from emu.virtio.pci_layout import InterfaceError

from tests.pci.helpers import ToyNet

TRANSITIONAL = Interfaces(legacy=True, modern=True)
LEGACY_ONLY = Interfaces(legacy=True, modern=False)


class ToyLegacy(ToyNet):
    """A device whose back-end lacks VERSION_1 (QEMU's vhost-user test server)."""

    def device_features(self):
        return F_EVENT_IDX | 1 << 5

    def bad_features(self):
        return 1 << 5


def plug(bus, device=None, interfaces=TRANSITIONAL, layout=QEMU_LAYOUT, **kw):
    fn = VirtioPCIFunction(device or ToyNet(), layout=layout, interfaces=interfaces,
                           name="t", **kw)
    bus.plug(fn, 4)
    return fn, probe(bus)[0]


def caps(dev) -> list[tuple[int, int, bytes]]:
    """(offset, id, bytes) of each capability, in list order."""
    out, off = [], dev.cfg_read(regs.CAPABILITY_LIST, 1)
    while off:
        size = dev.cfg_read(off + 2, 1) if dev.cfg_read(off, 1) == regs.CAP_ID_VNDR else 12
        out.append((off, dev.cfg_read(off, 1),
                    bytes(dev.cfg_read(off + i, 1) for i in range(size))))
        off = dev.cfg_read(off + 1, 1)
    return out


class Legacy:
    """The legacy registers at BAR0, poked as a legacy driver pokes them."""

    def __init__(self, bus, dev):
        self.bus, self.base = bus, dev.bar_address(0)

    def r(self, off, size):
        return self.bus.pio_read(self.base + off, size)

    def w(self, off, size, value):
        self.bus.pio_write(self.base + off, size, value)


# -- shapes ---------------------------------------------------------------------------------
def test_the_transitional_device_is_laid_out_as_qemus(bus):
    fn, dev = plug(bus)
    assert (dev.vendor_id, dev.device_id, dev.revision) == (0x1AF4, 0x1000, 0)
    assert (dev.subsystem_vendor_id, dev.subsystem_id) == (0x1AF4, 1)
    chain = caps(dev)
    assert [(off, cid) for off, cid, _ in chain] == [
        (0x98, regs.CAP_ID_MSIX), (0x84, 9), (0x70, 9), (0x60, 9), (0x50, 9), (0x40, 9)]
    vendor = {body[3]: body for _, cid, body in chain if cid == 9}
    for cfg_type, offset in ((VP.CAP_COMMON_CFG, 0), (VP.CAP_ISR_CFG, 0x1000),
                             (VP.CAP_DEVICE_CFG, 0x2000), (VP.CAP_NOTIFY_CFG, 0x3000)):
        body = vendor[cfg_type]
        assert body[4] == 4                                        # BAR4
        assert int.from_bytes(body[8:12], "little") == offset
        assert int.from_bytes(body[12:16], "little") == 0x1000     # the whole region
    assert int.from_bytes(vendor[VP.CAP_NOTIFY_CFG][16:20], "little") == 4
    assert vendor[VP.CAP_PCI_CFG][2] == VP.PCI_CFG_CAP_SIZE
    bars = {i: (b.kind, b.size, b.prefetchable) for i, b in dev.bars.items()}
    assert bars == {0: ("io", 32, False), 1: ("mem32", 0x1000, False),
                    4: ("mem64", 0x4000, True)}
    assert fn.stats()["interfaces"] == "transitional"


def test_modern_only_and_legacy_only(bus):
    fn, dev = plug(bus, interfaces=Interfaces(legacy=False))
    assert (dev.device_id, dev.revision) == (0x1041, 1)
    assert sorted(dev.bars) == [1, 4]
    assert [cid for _, cid, _ in caps(dev)][0] == regs.CAP_ID_MSIX


def test_legacy_only_has_msix_alone_at_0x40(bus):
    fn, dev = plug(bus, interfaces=LEGACY_ONLY)
    assert (dev.device_id, dev.revision, dev.subsystem_id) == (0x1000, 0, 1)
    assert [(off, cid) for off, cid, _ in caps(dev)] == [(0x40, regs.CAP_ID_MSIX)]
    assert sorted(dev.bars) == [0, 1]
    with pytest.raises(DriverError):
        VirtioPCIDriver(dev)                       # no modern interface
    assert isinstance(transport(dev), LegacyVirtioPCIDriver)


def test_without_msix_the_chain_starts_at_pci_cfg(bus):
    fn, dev = plug(bus, layout=QEMU_LAYOUT.with_vectors(0))
    assert caps(dev)[0][0] == 0x84 and 1 not in dev.bars
    assert dev.bars[0].size == 32                  # 20 + 8 bytes of config


def test_the_io_bar_grows_with_the_config(bus):
    class Wide(ToyNet):
        def __init__(self):
            super().__init__()
            self.config = bytearray(10)            # e.g. virtio-net with MQ
    fn, dev = plug(bus, device=Wide())
    assert dev.bars[0].size == 64                  # 24 + 10 > 32: QEMU's pow2ceil


def test_a_device_without_version_1_drops_the_modern_interface(bus):
    fn, dev = plug(bus, device=ToyLegacy())
    assert fn.interfaces == LEGACY_ONLY
    assert [cid for _, cid, _ in caps(dev)] == [regs.CAP_ID_MSIX]
    assert sorted(dev.bars) == [0, 1]
    with pytest.raises(InterfaceError, match="legacy mode is disabled"):
        VirtioPCIFunction(ToyLegacy(), layout=QEMU_LAYOUT, interfaces=Interfaces(legacy=False))
    with pytest.raises(InterfaceError, match="neither modern nor legacy"):
        Interfaces(legacy=False, modern=False)


def test_realize_can_wait_for_the_back_ends_features(bus):
    dev = ToyLegacy()
    fn = VirtioPCIFunction(dev, layout=QEMU_LAYOUT, interfaces=TRANSITIONAL, realize=False)
    bus.plug(fn, 4)
    assert fn.interfaces is None and not fn.bars
    assert fn.realize() == LEGACY_ONLY
    assert probe(bus)[0].device_id == 0x1000


# -- the legacy registers ---------------------------------------------------------------------
@pytest.fixture
def legacy(bus):
    fn, dev = plug(bus)
    return fn, dev, Legacy(bus, dev)


def test_legacy_features_32_bits_in_effect_at_once(legacy):
    fn, dev, io = legacy
    assert io.r(VP.HOST_FEATURES, 4) == (F_EVENT_IDX | 1 << 5) & 0xFFFFFFFF   # no VERSION_1
    io.w(VP.STATUS, 1, ACK)
    io.w(VP.STATUS, 1, ACK | DRV)
    io.w(VP.GUEST_FEATURES, 4, F_EVENT_IDX | 1 << 5 | 1 << 7)     # bit 7 not offered: masked
    assert io.r(VP.GUEST_FEATURES, 4) == F_EVENT_IDX | 1 << 5
    assert fn.guest_features == F_EVENT_IDX | 1 << 5
    assert ("features_ok", F_EVENT_IDX | 1 << 5) in fn.device.events
    io.w(VP.GUEST_FEATURES, 4, F_BAD_FEATURE | F_EVENT_IDX)       # QEMU's probe of a bad driver
    assert fn.guest_features == fn.device.bad_features() & io.r(VP.HOST_FEATURES, 4)


def test_legacy_status_sequence_and_queues_by_pfn(legacy):
    fn, dev, io = legacy
    io.w(VP.STATUS, 1, ACK)
    io.w(VP.STATUS, 1, ACK | DRV)
    io.w(VP.STATUS, 1, ACK | DRV | FOK)            # not a legacy bit
    assert io.r(VP.STATUS, 1) == ACK | DRV and fn.errors["status-reserved"] == 1
    io.w(VP.QUEUE_SEL, 2, 1)
    assert io.r(VP.QUEUE_NUM, 2) == 64 and io.r(VP.QUEUE_SEL, 2) == 1      # ToyNet's size
    io.w(VP.QUEUE_PFN, 4, 0x123)
    q = fn.queues[1]
    assert (q.desc, q.driver, q.device) == ring_layout(0x123000, 64)[:3]
    assert q.enable and io.r(VP.QUEUE_PFN, 4) == 0x123
    io.w(VP.QUEUE_PFN, 4, 0x200)                  # frozen while enabled
    assert io.r(VP.QUEUE_PFN, 4) == 0x123 and fn.errors["queue-frozen"] == 1
    io.w(VP.QUEUE_SEL, 2, 7)                       # beyond the queues: reads 0
    assert (io.r(VP.QUEUE_NUM, 2), io.r(VP.QUEUE_PFN, 4)) == (0, 0)
    io.w(VP.QUEUE_PFN, 4, 0x300)
    assert fn.errors["queue-select"] == 1
    io.w(VP.STATUS, 1, ACK | DRV | DOK)            # DRIVER_OK after DRIVER: no FEATURES_OK
    assert io.r(VP.STATUS, 1) == ACK | DRV | DOK and ("driver_ok",) in fn.device.events
    io.w(VP.GUEST_FEATURES, 4, 0)                  # not any more
    assert fn.errors["features-after-ok"] == 1
    io.w(VP.QUEUE_SEL, 2, 1)
    io.w(VP.QUEUE_PFN, 4, 0)                       # QEMU: a PFN of 0 resets the device
    assert io.r(VP.STATUS, 1) == 0 and not fn.queues[1].enable


def test_legacy_isr_is_read_to_clear_and_drives_intx(legacy, bus):
    fn, dev, io = legacy
    io.w(VP.STATUS, 1, ACK | DRV | DOK)
    fn.notify_queue(0)
    assert fn.pci_status & regs.STATUS_INTERRUPT
    assert io.r(VP.ISR, 1) == ISR_QUEUE
    assert io.r(VP.ISR, 1) == 0 and not fn.pci_status & regs.STATUS_INTERRUPT


def test_the_config_moves_when_msix_is_enabled(legacy, bus):
    fn, dev, io = legacy
    mac = bytes(io.r(VP.CONFIG_OFF + i, 1) for i in range(6))
    assert mac == bytes.fromhex("525400123456")
    assert io.r(VP.MSI_CONFIG_VECTOR, 2) == 0x5452            # config bytes, not a vector
    dev.enable_msix()
    assert bytes(io.r(VP.CONFIG_OFF_MSIX + i, 1) for i in range(6)) == mac
    assert io.r(VP.MSI_CONFIG_VECTOR, 2) == NO_VECTOR
    io.w(VP.MSI_CONFIG_VECTOR, 2, 1)
    assert io.r(VP.MSI_CONFIG_VECTOR, 2) == 1
    io.w(VP.MSI_CONFIG_VECTOR, 2, 99)                          # beyond the table: refused
    assert io.r(VP.MSI_CONFIG_VECTOR, 2) == NO_VECTOR and fn.errors["vector-refused"] == 1
    io.w(VP.QUEUE_SEL, 2, 0)
    io.w(VP.MSI_QUEUE_VECTOR, 2, 2)
    assert io.r(VP.MSI_QUEUE_VECTOR, 2) == 2 and fn.queues[0].msix_vector == 2
    io.w(VP.CONFIG_OFF_MSIX + 6, 2, 0xBEEF)                    # ToyNet's writable le16
    assert ("config_write", 0xBEEF) in fn.device.events


def test_a_register_is_hit_by_its_offset_whatever_the_width(legacy):
    """QEMU's virtio_ioport_read: inw of the status reads the status (not
    status and ISR), a byte of the features' upper half is all ones."""
    fn, dev, io = legacy
    io.w(VP.STATUS, 1, ACK)
    assert io.r(VP.STATUS, 2) == ACK
    assert io.r(VP.HOST_FEATURES, 1) == io.r(VP.HOST_FEATURES, 4) & 0xFF
    assert io.r(VP.HOST_FEATURES + 1, 1) == 0xFF
    assert fn.errors["legacy-bad-access"] == 1
    io.w(VP.HOST_FEATURES, 4, 0)
    io.w(VP.ISR, 1, 1)
    assert fn.errors["legacy-readonly"] == 2


def test_legacy_notify_reaches_the_queue_eventfd_or_the_device(legacy):
    fn, dev, io = legacy
    io.w(VP.STATUS, 1, ACK | DRV)
    for q in (0, 1):
        io.w(VP.QUEUE_SEL, 2, q)
        io.w(VP.QUEUE_PFN, 4, 0x100 + 0x10 * q)
    fd = fn.kick_eventfd(1)
    io.w(VP.QUEUE_NOTIFY, 2, 1)                   # the ioeventfd takes it (no exit)
    assert os.eventfd_read(fd) == 1 and fn.kicks[1] == 0
    io.w(VP.QUEUE_NOTIFY, 4, 1)                   # another width: through the register
    assert os.eventfd_read(fd) == 1 and fn.kicks[1] == 1
    io.w(VP.QUEUE_NOTIFY, 2, 0)                   # no eventfd: the device model
    assert fn.kicks[0] == 1
    io.w(VP.QUEUE_NOTIFY, 2, 5)
    assert fn.errors["notify-queue"] == 1
    assert bus_modern_notify(fn, dev, 1, fd)


def bus_modern_notify(fn, dev, q, fd) -> bool:
    """The same queue's modern notify address signals the same eventfd."""
    dev.bus.mmio_write(dev.bar_address(4) + 0x3000 + 4 * q, 2, q)
    return os.eventfd_read(fd) == 1


def test_legacy_status_acknowledge_driver_turns_on_bus_mastering(legacy, bus):
    fn, dev, io = legacy
    dev.set_command(clear_bits=regs.COMMAND_MASTER)
    io.w(VP.STATUS, 1, ACK | DRV)
    assert fn.bus_master


# -- guest drivers over either interface ------------------------------------------------------
def test_the_guest_transports_bring_the_device_up_either_way(bus):
    fn, dev = plug(bus)
    modern = transport(dev)
    assert isinstance(modern, VirtioPCIDriver) and modern.device_id == 1
    assert modern.negotiate(F_VERSION_1 | F_EVENT_IDX) == F_VERSION_1 | F_EVENT_IDX
    info = modern.setup_queue(0, 0x10000, 0x11000, 0x12000)
    modern.driver_ok()
    assert info.notify_addr == dev.bar_address(4) + 0x3000
    old = transport(dev, legacy=True)
    assert isinstance(old, LegacyVirtioPCIDriver) and old.device_id == 1
    assert old.negotiate(F_EVENT_IDX | F_VERSION_1) == F_EVENT_IDX   # 32 bits, no VERSION_1
    assert fn.status == ACK | DRV
    desc, avail, used, _ = ring_layout(0x20000, 64)
    info = old.setup_queue(1, desc, avail, used)
    with pytest.raises(DriverError):
        old.setup_queue(0, 0x30000, 0x30000 + 4096, 0x40000)    # not the legacy layout
    old.driver_ok()
    assert fn.status == ACK | DRV | DOK and fn.queues[1].desc == 0x20000
    assert info.notify_addr == dev.bar_address(0) + VP.QUEUE_NOTIFY
    assert old.read_config(0, 6) == bytes.fromhex("525400123456")
