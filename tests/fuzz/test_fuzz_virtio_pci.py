"""Random register traffic against a virtio-pci function: nothing escapes,
and the transport's invariants hold after every access."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.guest.pci import DriverError, VectorAllocator, probe
from emu.guest.virtio_pci import VirtioPCIDriver
from emu.machines.platform import Platform
from emu.spec import pci as regs
from emu.spec.virtio import (F_EVENT_IDX, F_VERSION_1, NO_VECTOR, STATUS_ACKNOWLEDGE, STATUS_DRIVER,
                             STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
                             STATUS_NEEDS_RESET)
from emu.virtio import VirtioPCIFunction

from tests.pci.helpers import ToyNet

SIZES = st.sampled_from([1, 2, 4, 8, 3, 0])
VALUES = st.one_of(st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 2**64 - 1),
                   st.sampled_from([0, 1, 0xF, 0x80, 0xFFFF, 0xFFFFFFFF, F_VERSION_1 >> 32,
                                    STATUS_ACKNOWLEDGE, STATUS_ACKNOWLEDGE | STATUS_DRIVER,
                                    0x0B, 0x0F, 0x4F, 0xCF]))
BAR0_OFFSETS = st.one_of(st.integers(0, 0x40), st.integers(0x1000, 0x1004),
                         st.integers(0x2000, 0x200A), st.integers(0x3000, 0x3010),
                         st.integers(0, 0x4010))
BAR1_OFFSETS = st.one_of(st.integers(0, 0x34), st.integers(0x800, 0x80A), st.integers(0, 0x1010))
CFG_OFFSETS = st.one_of(st.integers(0x40, 0xA8), st.integers(0, 0x40), st.integers(0, 0x1003))

OPS = st.one_of(
    st.tuples(st.just("bar0"), BAR0_OFFSETS, SIZES, st.booleans(), VALUES),
    st.tuples(st.just("bar1"), BAR1_OFFSETS, SIZES, st.booleans(), VALUES),
    st.tuples(st.just("cfg"), CFG_OFFSETS, SIZES, st.booleans(), VALUES),
    st.tuples(st.just("device"), st.sampled_from(["queue0", "queue1", "config", "needs_reset"]),
              st.just(0), st.just(False), st.just(0)),
    st.tuples(st.just("firmware"), st.just(0), st.just(0), st.just(False), st.just(0)),
    # well-formed driver steps, so random traffic also hits negotiated and live states
    st.tuples(st.just("driver"), st.sampled_from(["bringup", "negotiate", "msix", "queue0",
                                                   "queue1", "driver_ok"]),
              st.just(0), st.just(False), st.just(0)),
)

DRIVER_BITS = (STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
               | STATUS_FAILED)


def frozen_view(q):
    return (q.size, q.msix_vector, q.desc, q.driver, q.device)


def check_invariants(fn, needs_reset_raised: bool, enabled_at: dict):
    st_ = fn.status
    assert st_ & ~(DRIVER_BITS | STATUS_NEEDS_RESET) == 0
    assert not st_ & STATUS_DRIVER or st_ & STATUS_ACKNOWLEDGE
    assert not st_ & STATUS_FEATURES_OK or st_ & STATUS_DRIVER
    assert not st_ & STATUS_DRIVER_OK or st_ & STATUS_FEATURES_OK
    assert not st_ & STATUS_NEEDS_RESET or needs_reset_raised
    offered = fn.device.device_features()
    if st_ & STATUS_FEATURES_OK:
        assert fn.guest_features & ~offered == 0 and fn.guest_features & F_VERSION_1
    else:
        assert fn.guest_features == 0
    for q in fn.queues:
        assert 1 <= q.size <= q.max_size and not q.size & (q.size - 1)
        assert q.msix_vector == NO_VECTOR or q.msix_vector < fn.msix.nvectors
        if q.enable:
            assert st_ & STATUS_FEATURES_OK
            assert q.desc % 16 == 0 and q.driver % 2 == 0 and q.device % 4 == 0
            view = frozen_view(q)
            assert enabled_at.setdefault(q.index, view) == view
        else:
            enabled_at.pop(q.index, None)
    assert fn.msix_config == NO_VECTOR or fn.msix_config < fn.msix.nvectors
    assert 0 <= fn.config_generation <= 0xFF and fn.isr & ~3 == 0
    assert fn.vendor_id == 0x1AF4 and fn.device_id == 0x1041
    assert fn.command & ~regs.COMMAND_WRITABLE == 0


def drive(drv, dev, step):
    """One correct driver step; the device may refuse it (random traffic
    may have broken the state before), which the driver reports."""
    try:
        if step == "bringup":
            for sub in ("negotiate", "queue0", "queue1", "driver_ok"):
                drive(drv, dev, sub)
        elif step == "negotiate":
            drv.negotiate(1 << 29)
        elif step == "msix":
            dev.enable_msix(vectors=VectorAllocator())
        elif step == "driver_ok":
            drv.driver_ok()
        else:
            q = int(step[-1])
            drv.setup_queue(q, 0x10000 * (q + 1), 0x10000 * (q + 1) + 0x1000,
                            0x10000 * (q + 1) + 0x2000, vector=q + 1)
    except DriverError:
        pass


reached: set[str] = set()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(OPS, max_size=80))
def test_random_register_traffic(live, ops):
    bus = Platform()
    fn = VirtioPCIFunction(ToyNet())
    bus.plug(fn, 4)
    try:
        dev = probe(bus)[0]
        drv = VirtioPCIDriver(dev)
        bases = {0: dev.bar_address(0), 1: dev.bar_address(1)}
        needs_reset, enabled_at = False, {}
        if live:                                # half the runs start on a live device
            drive(drv, dev, "bringup")
        for kind, off, size, write, value in ops:
            if kind in ("bar0", "bar1"):
                addr = bases[int(kind[-1])] + off
                if write:
                    bus.mmio_write(addr, size, value)
                else:
                    bus.mmio_read(addr, size)
            elif kind == "cfg":
                if write:
                    bus.config_write(dev.bdf, off, size, value)
                else:
                    bus.config_read(dev.bdf, off, size)
            elif kind == "device":
                if off == "needs_reset":
                    needs_reset = needs_reset or fn.status != 0
                    fn.set_needs_reset()
                elif off == "config":
                    fn.notify_config()
                else:
                    fn.notify_queue(int(off[-1]))
            elif kind == "driver":
                drive(drv, dev, off)
            else:
                for index, base in bases.items():
                    dev.program_bar(index, base)
                dev.set_command(regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
            if fn.status == 0:
                needs_reset = False
            check_invariants(fn, needs_reset, enabled_at)
            reached.update(f"status-{b:#x}" for b in (1, 2, 4, 8, 0x40, 0x80) if fn.status & b)
            reached.update(f"queue{q.index}" for q in fn.queues if q.enable)
    finally:
        fn.close()
        bus.close()


def test_random_traffic_reached_the_interesting_states():
    """Guards the fuzzer itself: it must get past FEATURES_OK and enable queues."""
    if not reached:
        test_random_register_traffic()
    assert {"status-0x8", "status-0x4", "status-0x40", "queue0", "queue1"} <= reached


# -- the transitional function QEMU builds (legacy I/O BAR0 beside the modern BAR4) ------------
IO_OFFSETS = st.one_of(st.integers(0, 0x20), st.sampled_from([0x0, 0x4, 0x8, 0xC, 0xE, 0x10,
                                                              0x12, 0x13, 0x14, 0x16, 0x18]))
LEGACY_OPS = st.one_of(
    st.tuples(st.just("io"), IO_OFFSETS, st.sampled_from([1, 2, 4]), st.booleans(), VALUES),
    st.tuples(st.just("bar4"), BAR0_OFFSETS, SIZES, st.booleans(), VALUES),
    st.tuples(st.just("cfg"), CFG_OFFSETS, SIZES, st.booleans(), VALUES),
    st.tuples(st.just("driver"), st.sampled_from(["legacy", "modern", "msix"]), st.just(0),
              st.just(False), st.just(0)),
)


def check_transitional(fn, offered_legacy: int):
    s = fn.status
    assert s & ~(DRIVER_BITS | STATUS_NEEDS_RESET) == 0
    assert not s & STATUS_DRIVER or s & STATUS_ACKNOWLEDGE
    if s & STATUS_FEATURES_OK:                         # only the modern interface sets it
        assert fn.guest_features & F_VERSION_1
    assert fn.guest_features & ~(fn.device.device_features() | offered_legacy) == 0
    for q in fn.queues:
        assert 1 <= q.size <= q.max_size and not q.size & (q.size - 1)
        if q.enable:
            assert q.desc % 16 == 0 and q.driver % 2 == 0 and q.device % 4 == 0
    assert fn.vendor_id == 0x1AF4 and fn.device_id == 0x1000 and fn.isr & ~3 == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LEGACY_OPS, max_size=80))
def test_random_traffic_on_a_transitional_function(ops):
    from emu.guest.virtio_pci_legacy import LegacyVirtioPCIDriver
    from emu.virtio import QEMU_LAYOUT, Interfaces
    bus = Platform()
    fn = VirtioPCIFunction(ToyNet(), layout=QEMU_LAYOUT, interfaces=Interfaces(legacy=True))
    bus.plug(fn, 4)
    try:
        dev = probe(bus)[0]
        io, mem = dev.bar_address(0), dev.bar_address(4)
        offered_legacy = fn.legacy_features()
        for kind, off, size, write, value in ops:
            if kind == "io":
                if write:
                    bus.pio_write(io + off, size, value & ((1 << 8 * size) - 1))
                else:
                    bus.pio_read(io + off, size)
            elif kind == "bar4":
                if write:
                    bus.mmio_write(mem + off, size, value)
                else:
                    bus.mmio_read(mem + off, size)
            elif kind == "cfg":
                if write:
                    bus.config_write(dev.bdf, off, size, value)
                else:
                    bus.config_read(dev.bdf, off, size)
            else:
                try:
                    if off == "legacy":
                        d = LegacyVirtioPCIDriver(dev)
                        d.negotiate(F_EVENT_IDX)
                        d.setup_queue(0, 0x100000, 0x101000, 0x102000)
                        d.driver_ok()
                    elif off == "modern":
                        d = VirtioPCIDriver(dev)
                        d.negotiate(0)
                        d.driver_ok()
                    else:
                        dev.enable_msix(vectors=VectorAllocator())
                except DriverError:
                    pass
            check_transitional(fn, offered_legacy)
    finally:
        fn.close()
        bus.close()
