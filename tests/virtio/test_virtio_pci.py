"""The modern virtio-pci transport: identity and capabilities, the device
status machine, feature negotiation, queue set-up rules, notifications,
interrupts (MSI-X and INTx/ISR), config generation, and a hostile driver."""
from __future__ import annotations

import pytest

from emu.errors import EmuBug
from emu.guest.pci import DriverError, probe
from emu.guest.virtio_pci import VirtioPCIDriver
from emu.pci import RamBacking
from emu.spec import pci as regs
from emu.spec import virtio_pci as vp
from emu.spec.virtio import (F_EVENT_IDX, F_VERSION_1, NO_VECTOR, STATUS_ACKNOWLEDGE,
                             STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
                             STATUS_NEEDS_RESET)
from emu.virtio import VirtioPCIFunction, VirtioPCILayout

from tests.pci.helpers import RegFile, ToyNet, eventfd_count

ACK, DRV, FOK, DOK = STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK, STATUS_DRIVER_OK


class Common:
    """The common configuration, poked register by register."""

    def __init__(self, bus, base):
        self.bus, self.base = bus, base

    def r(self, off, size):
        return self.bus.mmio_read(self.base + off, size)

    def w(self, off, size, value):
        self.bus.mmio_write(self.base + off, size, value)

    @property
    def status(self):
        return self.r(vp.COMMON_STATUS, 1)

    def set_status(self, value):
        self.w(vp.COMMON_STATUS, 1, value)

    def driver_features(self, features):
        for sel in (0, 1):
            self.w(vp.COMMON_GFSELECT, 4, sel)
            self.w(vp.COMMON_GF, 4, (features >> (32 * sel)) & 0xFFFFFFFF)

    def select(self, q):
        self.w(vp.COMMON_Q_SELECT, 2, q)

    def to_features_ok(self, features=F_VERSION_1):
        self.set_status(ACK)
        self.set_status(ACK | DRV)
        self.driver_features(features)
        self.set_status(ACK | DRV | FOK)


@pytest.fixture
def dev(bus, vnet):
    return probe(bus)[0]


@pytest.fixture
def cc(bus, dev):
    return Common(bus, dev.bar_address(0))


@pytest.fixture
def drv(dev):
    return VirtioPCIDriver(dev)


def events(fn, kind):
    return [e for e in fn.device.events if e[0] == kind]


# -- identity and capabilities ---------------------------------------------------------------
def test_identity(dev):
    assert (dev.vendor_id, dev.device_id, dev.revision) == (0x1AF4, 0x1041, 1)
    assert dev.class_code == 0x020000
    assert (dev.subsystem_vendor_id, dev.subsystem_id) == (0x1AF4, 0x40)
    assert dev.interrupt_pin == 1


def test_capabilities_describe_the_layout(dev, drv, vnet):
    kinds = {c.cfg_type: (c.bar, c.offset, c.length) for c in drv.caps.values()}
    assert kinds == {vp.CAP_COMMON_CFG: (0, 0x0, vp.COMMON_CFG_SIZE),
                     vp.CAP_ISR_CFG: (0, 0x1000, 4),
                     vp.CAP_DEVICE_CFG: (0, 0x2000, 8),
                     vp.CAP_NOTIFY_CFG: (0, 0x3000, 0x1000)}
    assert drv.notify_cap.multiplier == 4
    assert dev.bars[0].size == 0x4000 and dev.bars[1].size == 0x1000
    assert dev.msix_table_size() == 3                       # 2 queues + config
    ids = [cid for cid, _ in dev.capabilities()]
    assert ids.count(regs.CAP_ID_VNDR) == 5 and regs.CAP_ID_MSIX in ids


def test_pci_cfg_capability_reaches_bar0_through_config_space(dev, vnet, cc):
    c = vnet.pci_cfg_offset
    dev.cfg_write(c + vp.CAP_BAR, 1, 0)
    dev.cfg_write(c + vp.CAP_OFFSET, 4, vp.COMMON_NUMQ)
    dev.cfg_write(c + vp.CAP_LENGTH, 4, 2)
    assert dev.cfg_read(c + vp.PCI_CFG_DATA, 4) == 2
    dev.cfg_write(c + vp.CAP_OFFSET, 4, vp.COMMON_STATUS)
    dev.cfg_write(c + vp.CAP_LENGTH, 4, 1)
    dev.cfg_write(c + vp.PCI_CFG_DATA, 4, ACK)
    assert cc.status == ACK
    dev.cfg_write(c + vp.CAP_LENGTH, 4, 3)                   # bad length: nothing happens,
    assert dev.cfg_read(c + vp.PCI_CFG_DATA, 4) == ACK       # the data keeps its value (QEMU)
    assert vnet.errors["pci-cfg-bad-access"] == 1
    dev.cfg_write(c + vp.CAP_LENGTH, 4, 0)                   # no access asked: not an error
    assert dev.cfg_read(c + vp.PCI_CFG_DATA, 4) == ACK
    assert vnet.errors["pci-cfg-bad-access"] == 1


# -- device status -----------------------------------------------------------------------------
def test_status_sequence_and_callbacks(cc, vnet):
    assert cc.status == 0
    cc.to_features_ok(F_VERSION_1 | F_EVENT_IDX)
    assert cc.status == ACK | DRV | FOK
    assert vnet.guest_features == F_VERSION_1 | F_EVENT_IDX
    assert events(vnet, "features_ok") == [("features_ok", F_VERSION_1 | F_EVENT_IDX)]
    cc.set_status(ACK | DRV | FOK | DOK)
    assert cc.status == ACK | DRV | FOK | DOK and events(vnet, "driver_ok")
    assert vnet.errors.total == 0


@pytest.mark.parametrize("writes,final,kind", [
    ([DRV], 0, "status-order"),                                  # DRIVER without ACK
    ([ACK, ACK | FOK], ACK, "status-order"),                     # FEATURES_OK without DRIVER
    ([ACK, ACK | DRV, ACK | DRV | DOK], ACK | DRV, "status-order"),
    ([ACK, ACK | DRV, ACK], ACK | DRV, "status-clear"),          # bits cannot be cleared
    ([ACK | 0x10 | 0x20], ACK, "status-reserved"),
    ([ACK | STATUS_NEEDS_RESET], ACK, "status-reserved"),        # only the device sets it
])
def test_status_rule_breaks_are_refused_and_counted(cc, vnet, writes, final, kind):
    for w in writes:
        cc.set_status(w)
    assert cc.status == final
    assert vnet.errors[kind] == 1
    assert not events(vnet, "driver_ok")


def test_failed_is_always_accepted(cc, vnet):
    cc.set_status(STATUS_FAILED)
    assert cc.status == STATUS_FAILED
    cc.set_status(STATUS_FAILED | ACK)
    assert cc.status == STATUS_FAILED | ACK and vnet.errors.total == 0


def test_ack_driver_features_ok_in_one_write(cc, vnet):
    cc.driver_features(F_VERSION_1)
    cc.set_status(ACK | DRV | FOK | DOK)
    assert cc.status == ACK | DRV | FOK | DOK and vnet.errors.total == 0


def test_reset_clears_everything(no_fd_leak, bus, dev, drv, cc, vnet):
    vecs = dev.enable_msix()
    drv.negotiate(F_EVENT_IDX)
    drv.set_config_vector(0)
    drv.setup_queue(0, 0x10000, 0x11000, 0x12000, size=64, vector=1)
    drv.driver_ok()
    vnet.isr = 3
    dev.mask_msix_entry(1, True)
    vnet.notify_queue(0)
    assert dev.msix_pending(1)
    cc.set_status(0)
    assert cc.status == 0                                  # reset completes at once
    cc.select(0)
    assert (cc.r(vp.COMMON_Q_SIZE, 2), cc.r(vp.COMMON_Q_ENABLE, 2),
            cc.r(vp.COMMON_Q_MSIX, 2), cc.r(vp.COMMON_Q_DESC, 8)) == (256, 0, NO_VECTOR, 0)
    assert cc.r(vp.COMMON_MSIX, 2) == NO_VECTOR
    assert vnet.guest_features == 0 and vnet.isr == 0
    cc.w(vp.COMMON_GFSELECT, 4, 1)
    assert cc.r(vp.COMMON_GF, 4) == 0
    assert events(vnet, "reset") and not dev.msix_pending(1)
    assert eventfd_count(vecs[1].eventfd) == 0


def test_pci_function_reset_resets_the_virtio_device(cc, vnet):
    cc.to_features_ok()
    vnet.reset()
    assert vnet.status == 0 and events(vnet, "reset")


def test_needs_reset(dev, drv, cc, vnet):
    vecs = dev.enable_msix()
    drv.negotiate(0)
    drv.set_config_vector(0)
    drv.driver_ok()
    gen = drv.config_generation
    vnet.set_needs_reset()
    assert cc.status & STATUS_NEEDS_RESET and drv.config_generation == (gen + 1) & 0xFF
    assert eventfd_count(vecs[0].eventfd) == 1
    cc.set_status(cc.status | STATUS_FAILED)              # writing back NEEDS_RESET is fine
    assert cc.status & STATUS_FAILED and vnet.errors.total == 0
    drv.reset()
    assert cc.status == 0


# -- features -------------------------------------------------------------------------------------
def test_device_feature_windows(cc):
    got = []
    for sel in (0, 1, 2, 0xFFFFFFFF):
        cc.w(vp.COMMON_DFSELECT, 4, sel)
        assert cc.r(vp.COMMON_DFSELECT, 4) == sel
        got.append(cc.r(vp.COMMON_DF, 4))
    assert got == [F_EVENT_IDX | 1 << 5, 1, 0, 0]


def test_negotiation_through_the_driver(drv, vnet):
    assert drv.negotiate(F_EVENT_IDX | 1 << 3) == F_VERSION_1 | F_EVENT_IDX
    assert vnet.guest_features == F_VERSION_1 | F_EVENT_IDX


@pytest.mark.parametrize("features,kind", [
    (F_VERSION_1 | 1 << 7, "features-unoffered"),
    (F_EVENT_IDX, "features-no-version-1"),
    (F_VERSION_1 | 1 << 63, "features-unoffered"),
])
def test_features_ok_refused_for_bad_features(cc, vnet, features, kind):
    cc.to_features_ok(features)
    assert cc.status == ACK | DRV and vnet.guest_features == 0
    assert vnet.errors[kind] == 1
    assert not events(vnet, "features_ok")


def test_device_may_refuse_features(drv, cc, vnet):
    vnet.device.refuse_features = True
    with pytest.raises(DriverError):
        drv.negotiate(F_EVENT_IDX)
    assert cc.status == ACK | DRV | STATUS_FAILED
    assert vnet.features_refused == 1 and vnet.errors.total == 0


def test_driver_features_frozen_after_features_ok(cc, vnet):
    cc.to_features_ok(F_VERSION_1)
    cc.w(vp.COMMON_GFSELECT, 4, 0)
    cc.w(vp.COMMON_GF, 4, F_EVENT_IDX)
    assert cc.r(vp.COMMON_GF, 4) == 0 and vnet.guest_features == F_VERSION_1
    assert vnet.errors["features-after-ok"] == 1


def test_driver_feature_select_beyond_64_bits(cc, vnet):
    cc.w(vp.COMMON_GFSELECT, 4, 5)
    cc.w(vp.COMMON_GF, 4, 0)                               # zero: harmless
    cc.w(vp.COMMON_GF, 4, 1)
    assert cc.r(vp.COMMON_GF, 4) == 0 and vnet.errors["features-unoffered"] == 1


# -- queues ---------------------------------------------------------------------------------------
def test_queue_setup_through_the_driver(dev, drv, vnet, cc):
    dev.enable_msix()
    drv.negotiate(0)
    assert drv.num_queues == 2
    q = drv.setup_queue(1, 0x1_0000_2000, 0x1_0000_3000, 0x1_0000_4000, vector=2)
    assert q.size == 64                                     # queue 1's max
    assert q.notify_addr == dev.bar_address(0) + 0x3000 + 4
    (_, index, snap), = events(vnet, "enabled")
    assert index == 1 and snap.enable and snap.size == 64 and snap.msix_vector == 2
    assert (snap.desc, snap.driver, snap.device) == (0x1_0000_2000, 0x1_0000_3000, 0x1_0000_4000)
    cc.select(1)
    assert cc.r(vp.COMMON_Q_DESC, 4) == 0x2000 and cc.r(vp.COMMON_Q_DESC + 4, 4) == 1
    assert cc.r(vp.COMMON_Q_NOFF, 2) == 1
    snap.desc = 0                                           # a snapshot, not our state
    assert vnet.queues[1].desc == 0x1_0000_2000


def test_queue_size_may_only_be_lowered_to_a_power_of_two(cc, vnet):
    cc.select(0)
    for bad in (0, 3, 100, 512, 0xFFFF):
        cc.w(vp.COMMON_Q_SIZE, 2, bad)
        assert cc.r(vp.COMMON_Q_SIZE, 2) == 256
    cc.w(vp.COMMON_Q_SIZE, 2, 32)
    assert cc.r(vp.COMMON_Q_SIZE, 2) == 32
    cc.w(vp.COMMON_Q_SIZE, 2, 1)
    assert cc.r(vp.COMMON_Q_SIZE, 2) == 1
    assert vnet.errors["queue-size"] == 5


def test_queue_registers_freeze_once_enabled(cc, vnet):
    cc.to_features_ok()
    cc.select(0)
    cc.w(vp.COMMON_Q_DESC, 8, 0x10000)
    cc.w(vp.COMMON_Q_ENABLE, 2, 1)
    assert cc.r(vp.COMMON_Q_ENABLE, 2) == 1
    cc.w(vp.COMMON_Q_SIZE, 2, 16)
    cc.w(vp.COMMON_Q_MSIX, 2, 0)
    cc.w(vp.COMMON_Q_DESC, 4, 0x20000)
    cc.w(vp.COMMON_Q_AVAIL + 4, 4, 1)
    cc.w(vp.COMMON_Q_USED, 8, 0x30000)
    q = vnet.queues[0]
    assert (q.size, q.msix_vector, q.desc, q.driver, q.device) == (256, NO_VECTOR, 0x10000, 0, 0)
    assert vnet.errors["queue-frozen"] == 5
    cc.w(vp.COMMON_Q_ENABLE, 2, 1)                          # idempotent, not an error
    assert vnet.errors.total == 5 and len(events(vnet, "enabled")) == 1


@pytest.mark.parametrize("setup,value", [
    ("before-features-ok", 1), ("ok", 0), ("ok", 2), ("ok", 0xFFFF),
    ("misaligned-desc", 1), ("misaligned-avail", 1), ("misaligned-used", 1),
])
def test_queue_enable_refusals(cc, vnet, setup, value):
    if setup != "before-features-ok":
        cc.to_features_ok()
    cc.select(0)
    field = {"misaligned-desc": (vp.COMMON_Q_DESC, 0x1008),
             "misaligned-avail": (vp.COMMON_Q_AVAIL, 0x2001),
             "misaligned-used": (vp.COMMON_Q_USED, 0x3002)}.get(setup)
    if field:
        cc.w(field[0], 8, field[1])
    cc.w(vp.COMMON_Q_ENABLE, 2, value)
    assert cc.r(vp.COMMON_Q_ENABLE, 2) == 0 and not vnet.queues[0].enable
    assert vnet.errors["queue-enable"] == 1 and not events(vnet, "enabled")


def test_queue_select_out_of_range(cc, vnet):
    cc.to_features_ok()
    cc.select(2)
    assert cc.r(vp.COMMON_Q_SELECT, 2) == 2
    assert cc.r(vp.COMMON_Q_SIZE, 2) == 0 and cc.r(vp.COMMON_Q_ENABLE, 2) == 0   # no such queue
    # as QEMU's unused queues read: no vector, the index as notify offset
    assert cc.r(vp.COMMON_Q_MSIX, 2) == NO_VECTOR and cc.r(vp.COMMON_Q_NOFF, 2) == 2
    assert cc.r(vp.COMMON_Q_DESC, 8) == 0
    before = [vars(q).copy() for q in vnet.queues]
    cc.w(vp.COMMON_Q_SIZE, 2, 16)
    cc.w(vp.COMMON_Q_ENABLE, 2, 1)
    cc.w(vp.COMMON_Q_DESC, 8, 0x1000)
    assert [vars(q) for q in vnet.queues] == before
    assert vnet.errors["queue-select"] == 3


def test_vectors_beyond_the_table_read_back_no_vector(cc, vnet):
    cc.w(vp.COMMON_MSIX, 2, 2)
    assert cc.r(vp.COMMON_MSIX, 2) == 2
    cc.w(vp.COMMON_MSIX, 2, 3)                               # table has 3 entries: 0..2
    assert cc.r(vp.COMMON_MSIX, 2) == NO_VECTOR
    cc.select(0)
    cc.w(vp.COMMON_Q_MSIX, 2, 0x7FFF)
    assert cc.r(vp.COMMON_Q_MSIX, 2) == NO_VECTOR
    cc.w(vp.COMMON_Q_MSIX, 2, NO_VECTOR)
    assert vnet.errors["vector-refused"] == 2


def test_driver_sees_a_refused_vector(dev, drv):
    drv.negotiate(0)
    with pytest.raises(DriverError):
        drv.setup_queue(0, 0x1000, 0x2000, 0x3000, vector=9)


def test_queue_reset_is_not_offered(cc, vnet):
    cc.select(0)
    cc.w(vp.COMMON_Q_RESET, 2, 1)
    assert cc.r(vp.COMMON_Q_RESET, 2) == 0 and vnet.errors["queue-reset"] == 1


# -- notifications --------------------------------------------------------------------------------
def ready(dev, drv, msix=True):
    vecs = dev.enable_msix() if msix else None
    drv.negotiate(0)
    if msix:
        drv.set_config_vector(0)
    drv.setup_queue(0, 0x10000, 0x11000, 0x12000, vector=1 if msix else NO_VECTOR)
    drv.setup_queue(1, 0x20000, 0x21000, 0x22000, vector=2 if msix else NO_VECTOR)
    drv.driver_ok()
    return vecs


def test_notify_by_mmio_reaches_queue_notify(bus, dev, drv, vnet):
    ready(dev, drv)
    drv.notify(1)
    drv.notify(0)
    bus.mmio_write(drv.queues[1].notify_addr, 4, 1)           # 32-bit kicks work too
    assert events(vnet, "notify") == [("notify", 1), ("notify", 0), ("notify", 1)]
    assert vnet.kicks == [1, 2]


def test_notify_for_a_disabled_or_absent_queue_is_dropped(bus, dev, drv, vnet):
    drv.negotiate(0)
    drv.setup_queue(0, 0x10000, 0x11000, 0x12000)
    base = dev.bar_address(0) + 0x3000
    bus.mmio_write(base + 4, 2, 1)                            # queue 1 not enabled
    bus.mmio_write(base + 8, 2, 2)                            # no queue 2
    bus.mmio_write(base + 2, 2, 0)                            # between two queues
    bus.mmio_write(base, 1, 0)                                # byte write
    bus.mmio_write(base, 8, 0)
    assert not events(vnet, "notify")
    assert vnet.errors["notify-queue"] == 3 and vnet.errors["notify-bad-access"] == 2
    assert bus.mmio_read(base, 2) == 0


def test_notify_through_ioeventfd(no_fd_leak, bus, dev, drv, vnet):
    ready(dev, drv)
    fd = vnet.kick_eventfd(0)
    assert vnet.kick_eventfd(0) == fd
    assert drv.notify_eventfd(0) == fd and drv.notify_eventfd(1) is None
    drv.notify(0)                                             # the driver signals fd itself
    bus.mmio_write(drv.queues[0].notify_addr, 2, 0)          # an MMIO kick is caught too
    assert eventfd_count(fd) == 2 and not events(vnet, "notify")
    vnet.release_kick_eventfd(0)
    drv.notify(0)
    assert events(vnet, "notify") == [("notify", 0)]
    vnet.kick_eventfd(1)                                      # closed by vnet.close()


def test_zero_notify_multiplier_selects_by_value(no_fd_leak, bus):
    fn = VirtioPCIFunction(ToyNet(), layout=VirtioPCILayout(notify_off_multiplier=0))
    bus.plug(fn, 8)
    dev = probe(bus)[0]
    drv = VirtioPCIDriver(dev)
    ready(dev, drv, msix=False)
    assert drv.queues[0].notify_addr == drv.queues[1].notify_addr
    fd = fn.kick_eventfd(1)
    drv.notify(0)
    drv.notify(1)
    assert events(fn, "notify") == [("notify", 0)] and eventfd_count(fd) == 1


# -- interrupts -----------------------------------------------------------------------------------
def test_msix_queue_and_config_interrupts(dev, drv, vnet):
    vecs = ready(dev, drv)
    vnet.notify_queue(1)
    assert eventfd_count(vecs[2].eventfd) == 1 and eventfd_count(vecs[1].eventfd) == 0
    gen = drv.config_generation
    vnet.notify_config()
    assert eventfd_count(vecs[0].eventfd) == 1 and drv.config_generation == gen + 1


def test_no_vector_means_no_interrupt(bus, dev, drv, vnet):
    vecs = dev.enable_msix()
    drv.negotiate(0)
    drv.setup_queue(0, 0x10000, 0x11000, 0x12000, vector=NO_VECTOR)
    drv.driver_ok()
    vnet.notify_queue(0)
    vnet.notify_config()
    assert all(eventfd_count(v.eventfd) == 0 for v in vecs)
    assert bus.irq.invalid_messages == 0


def test_interrupts_wait_for_driver_ok(dev, drv, vnet):
    vecs = dev.enable_msix()
    drv.negotiate(0)
    drv.set_config_vector(0)
    drv.setup_queue(0, 0x10000, 0x11000, 0x12000, vector=1)
    gen = drv.config_generation
    vnet.notify_queue(0)
    vnet.notify_config()
    assert eventfd_count(vecs[1].eventfd) == 0 and eventfd_count(vecs[0].eventfd) == 0
    assert vnet.suppressed_notifications == 2 and vnet.isr == 0
    assert drv.config_generation == gen + 1                 # the change is still visible


def test_intx_isr_read_to_clear(bus, dev, drv, vnet):
    ready(dev, drv, msix=False)
    fd = dev.intx_eventfd()
    vnet.notify_queue(0)
    assert eventfd_count(fd) == 1 and dev.cfg_read(regs.STATUS, 2) & regs.STATUS_INTERRUPT
    vnet.notify_config()
    assert drv.read_isr() == 3
    assert not bus.irq.intx_level(bus.intx_route(dev.bdf))
    assert not dev.cfg_read(regs.STATUS, 2) & regs.STATUS_INTERRUPT
    assert drv.read_isr() == 0
    vnet.notify_queue(1)
    assert eventfd_count(fd) == 1 and drv.read_isr() == 1


def test_isr_is_read_only(bus, dev, drv, vnet):
    ready(dev, drv, msix=False)
    vnet.notify_queue(0)
    isr = dev.bar_address(0) + 0x1000
    bus.mmio_write(isr, 1, 0)
    assert vnet.isr == 1 and vnet.errors["isr-write"] == 1
    assert bus.mmio_read(isr + 1, 1) == 0xFF and vnet.isr == 1   # only offset 0 is the ISR


# -- device configuration -------------------------------------------------------------------------
def test_device_config_access(bus, dev, drv, vnet):
    assert drv.read_config(0, 6) == bytes.fromhex("525400123456")
    assert drv.read_config_struct("<6sH") == (bytes.fromhex("525400123456"), 0)
    drv.config_write(6, 2, 0x1234)
    assert drv.config_read(6, 2) == 0x1234 and events(vnet, "config_write")
    base = dev.bar_address(0) + 0x2000
    bus.mmio_write(base, 4, 0)                                 # read-only part
    assert bus.mmio_read(base + 8, 4) == 0xFFFFFFFF           # past config_size
    assert bus.mmio_read(base + 1, 2) == 0xFFFF               # misaligned
    assert bus.mmio_read(base, 8) == (1 << 64) - 1            # 64-bit: not allowed
    assert vnet.errors["config-readonly"] == 1
    assert vnet.errors["device-cfg-bad-access"] == 3
    assert drv.read_config(0, 6) == bytes.fromhex("525400123456")


def test_read_config_retries_across_a_generation_change(dev, drv, vnet):
    dev_model = vnet.device
    original = dev_model.config_read
    changes = []

    def racing_read(offset, size):                     # the device changes mid-read
        if not changes:
            changes.append(1)
            dev_model.config[:6] = bytes.fromhex("020000000001")
            vnet.notify_config()
        return original(offset, size)

    dev_model.config_read = racing_read
    assert drv.read_config(0, 6) == bytes.fromhex("020000000001")


def test_read_config_gives_up_on_a_device_that_never_settles(dev, drv, vnet):
    dev_model = vnet.device
    original = dev_model.config_read

    def always_changing(offset, size):
        vnet.notify_config()
        return original(offset, size)

    dev_model.config_read = always_changing
    with pytest.raises(DriverError):
        drv.read_config(0, 4)


# -- register-level abuse -------------------------------------------------------------------------
COMMON_REGS = [(o, s) for o, s in vp.COMMON_FIELD_SIZES.items()]


@pytest.mark.parametrize("off,width", COMMON_REGS)
def test_wrong_sized_common_accesses_are_refused(cc, vnet, off, width):
    before = vnet.stats()
    for size in (1, 2, 4, 8):
        if size == width or (width == 8 and size == 4):
            continue
        assert cc.r(off, size) == (1 << (8 * size)) - 1
        cc.w(off, size, (1 << (8 * size)) - 1)
    assert vnet.stats()["queues"] == before["queues"] and vnet.status == 0
    assert vnet.errors["common-bad-access"] >= 4


@pytest.mark.parametrize("off", [0x01, 0x02, 0x03, 0x11, 0x13, 0x17, 0x22, 0x26, 0x3C, 0x3E])
def test_misaligned_and_unassigned_common_offsets(cc, vnet, off):
    for size in (1, 2, 4):
        cc.r(off, size)
        cc.w(off, size, 0xFFFFFFFF)
    assert vnet.status == 0 and vnet.driver_features == 0
    assert vnet.errors.total >= 3


@pytest.mark.parametrize("off", [vp.COMMON_DF, vp.COMMON_NUMQ, vp.COMMON_CFGGENERATION,
                                 vp.COMMON_Q_NOFF, vp.COMMON_Q_NDATA])
def test_read_only_common_registers(cc, vnet, off):
    width = vp.COMMON_FIELD_SIZES[off]
    before = cc.r(off, width)
    cc.w(off, width, 0x55)
    assert cc.r(off, width) == before and vnet.errors["common-readonly"] == 1


@pytest.mark.parametrize("value", [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0xFFFFFFFF,
                                   0xFFFFFFFFFFFFFFFF])
def test_garbage_in_every_common_register(bus, dev, cc, vnet, value):
    for off, width in COMMON_REGS:
        for sel in (0, 1, 5):
            cc.select(sel)
            cc.w(off, width, value)
            cc.r(off, width)
    st = vnet.status
    assert st & ~(ACK | DRV | FOK | DOK | STATUS_FAILED) == 0
    assert not st & DRV or st & ACK
    assert not st & FOK or st & DRV
    assert not st & DOK or st & FOK
    for q in vnet.queues:
        assert q.size and q.size <= q.max_size and not q.size & (q.size - 1)
        assert q.msix_vector == NO_VECTOR or q.msix_vector < 3
        assert not q.enable or st & FOK
    assert vnet.msix_config == NO_VECTOR or vnet.msix_config < 3
    assert dev.vendor_id == 0x1AF4                              # the function still answers


# -- layout for device types with their own registers (vhost-pci-net) -----------------------------
class DoorbellFunction(VirtioPCIFunction):
    """Shaped like vhost-pci-net: doorbells in BAR0's notify page, a
    RAM-backed 64-bit BAR2 and a read-only RAM-backed BAR4."""

    def __init__(self):
        super().__init__(ToyNet(), layout=VirtioPCILayout(notify_length=0x800),
                         pci_device_id=0x1055, name="doorbells")
        self.doorbells = RegFile(0x100)
        self.bar0.add(0x3800, 0x100, self.doorbells, "doorbells")
        self.window = bytearray(0x10000)
        self.meta = bytearray(0x2000)
        self.add_bar(2, 1 << 32, "mem64", prefetchable=True, ram=self.window)
        self.add_bar(4, 0x2000, "mem32", ram=RamBacking.from_buffer(self.meta, readonly=True))


def test_device_type_registers_and_ram_bars(bus):
    fn = DoorbellFunction()
    bus.plug(fn, 5)
    dev = probe(bus)[0]
    assert dev.device_id == 0x1055
    assert dev.bars[2].kind == "mem64" and dev.bars[2].prefetchable
    assert dev.bars[2].address >= 1 << 32 and dev.bars[2].size == 1 << 32
    drv = VirtioPCIDriver(dev)
    assert drv.notify_cap.length == 0x800
    ready(dev, drv)
    dev.bar_write(0, 0x3804, 4, 1)
    assert fn.doorbells.log == [("w", 4, 4, 1)]
    win = dev.map_bar(2, 0, 0x10000)
    win.view[100] = 42
    assert fn.window[100] == 42
    fn.meta[0:4] = b"VPCI"
    meta = dev.map_bar(4)
    assert bytes(meta.view[0:4]) == b"VPCI" and meta.readonly
    drv.notify(1)
    assert events(fn, "notify") == [("notify", 1)]


def test_layout_mistakes_are_our_bug():
    with pytest.raises(EmuBug):
        VirtioPCIFunction(ToyNet(), layout=VirtioPCILayout(notify_length=4))
    with pytest.raises(EmuBug):
        VirtioPCIFunction(ToyNet(), layout=VirtioPCILayout(device_length=4))
    fn = VirtioPCIFunction(ToyNet(), layout=VirtioPCILayout(notify_length=0x800))
    with pytest.raises(EmuBug):
        fn.bar0.add(0x3700, 0x200, RegFile(0x200), "overlaps-notify")


def test_a_function_that_is_not_virtio_is_refused(bus, regfile_fn):
    dev = probe(bus)[0]
    with pytest.raises(DriverError):
        VirtioPCIDriver(dev)


def test_packed_rings_size_and_alignment_rules(cc, vnet, monkeypatch):
    """With VIRTIO_F_RING_PACKED negotiated a queue size need not be a power
    of two (§2.8) and both event suppression areas must be 4-byte aligned
    (§2.8.10.1), where a split ring's avail ring needs 2."""
    from emu.spec.virtio import F_RING_PACKED
    monkeypatch.setattr(vnet.device, "device_features",
                        lambda: F_VERSION_1 | F_EVENT_IDX | F_RING_PACKED)
    cc.to_features_ok(F_VERSION_1 | F_RING_PACKED)
    assert cc.status & FOK
    cc.select(0)
    cc.w(vp.COMMON_Q_SIZE, 2, 100)
    assert cc.r(vp.COMMON_Q_SIZE, 2) == 100
    cc.w(vp.COMMON_Q_SIZE, 2, 300)                  # above the maximum: still refused
    assert cc.r(vp.COMMON_Q_SIZE, 2) == 100 and vnet.errors["queue-size"] == 1
    cc.w(vp.COMMON_Q_AVAIL, 8, 0x2002)              # fine for a split ring, not for packed
    cc.w(vp.COMMON_Q_ENABLE, 2, 1)
    assert not vnet.queues[0].enable and vnet.errors["queue-enable"] == 1
    cc.w(vp.COMMON_Q_AVAIL, 8, 0x2004)
    cc.w(vp.COMMON_Q_ENABLE, 2, 1)
    assert vnet.queues[0].enable and vnet.queues[0].size == 100
