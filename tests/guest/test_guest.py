"""The guest side: firmware enumeration and resource assignment, the
capability walk against hostile devices, and a full virtio-pci bring-up
from a separate guest thread."""
from __future__ import annotations

import threading

import pytest

from emu.guest.pci import (DriverError, PCIDevice, ResourceWindows, VectorAllocator, Window,
                           assign_resources, enumerate_bus, probe, wait_interrupts)
from emu.guest.virtio_pci import VirtioPCIDriver
from emu.pci import PCIFunction
from emu.spec import pci as regs
from emu.pci.bus import make_bdf
from emu.virtio import VirtioPCIFunction

from tests.pci.helpers import RegFile, ToyNet


def fn_with(*bars, pin=1):
    f = PCIFunction(0x1234, 0x1, 0xFF0000, interrupt_pin=pin)
    for index, size, kind, pf in bars:
        f.add_bar(index, size, kind, pf, ops=RegFile(min(size, 0x1000)))
    return f


def test_enumeration_finds_functions_and_skips_holes(bus):
    bus.plug(fn_with(), 0)
    bus.plug(fn_with(), 7, 0)
    bus.plug(fn_with(), 7, 5)
    bus.plug(fn_with(), 31)
    found = [d.bdf for d in enumerate_bus(bus)]
    assert found == [make_bdf(0, 0, 0), make_bdf(0, 7, 0), make_bdf(0, 7, 5), make_bdf(0, 31, 0)]


def test_resources_land_in_their_windows_naturally_aligned(bus):
    bus.plug(fn_with((0, 0x4000, "mem32", False), (1, 0x20, "io", False),
                     (2, 1 << 32, "mem64", True)), 1)
    bus.plug(fn_with((0, 0x10, "mem32", False), (2, 0x100000, "mem64", False),
                     (4, 0x100, "io", False)), 2)
    devs = probe(bus)
    for d in devs:
        for b in d.bars.values():
            assert b.address is not None and b.address % b.size == 0
            if b.kind == "io":
                assert 0xC000 <= b.address < 0x10000
            elif b.kind == "mem32":
                assert 0xC000_0000 <= b.address < 0xFEC0_0000 and b.address % 0x1000 == 0
            else:
                assert b.address >= 1 << 32
        assert d.command & (regs.COMMAND_IO | regs.COMMAND_MEMORY | regs.COMMAND_MASTER) == 7
        assert d.cfg_read(regs.INTERRUPT_LINE, 1) == bus.intx_route(d.bdf)
    spans = sorted((b.address, b.address + b.size) for d in devs for b in d.bars.values()
                   if b.kind != "io")
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))      # no overlaps
    # the firmware's view agrees with the devices'
    for d in devs:
        for b in d.bars.values():
            assert bus.functions[d.bdf].bars[b.index].address == b.address


def test_bars_that_do_not_fit_stay_unassigned(bus):
    bus.plug(fn_with((0, 0x2000, "mem32", False), (1, 0x1000, "mem32", False)), 1)
    devs = enumerate_bus(bus)
    tiny = ResourceWindows(mem32=Window(0xC000_0000, 0xC000_2000))
    unplaced = assign_resources(bus, devs, tiny)
    assert [b.index for b in unplaced] == [1]
    assert devs[0].bars[0].address == 0xC000_0000 and devs[0].bars[1].address is None
    with pytest.raises(DriverError):
        devs[0].bar_read(1, 0, 4)


class LoopingCaps(PCIFunction):
    """A hostile device whose capability list points back at itself."""

    def __init__(self):
        super().__init__(0x1234, 0x66, 0xFF0000)
        off = self.add_capability(0x09, b"\x00\x00")
        self.config[off + 1] = off


def test_capability_loop_is_detected(bus):
    bus.plug(LoopingCaps(), 1)
    d = PCIDevice(bus, make_bdf(0, 1, 0))
    with pytest.raises(DriverError):
        d.capabilities()


def test_capability_walk_stops_at_bad_pointers(bus):
    f = PCIFunction(0x1234, 0x66, 0xFF0000)
    off = f.add_capability(0x09, b"\x00\x00")
    f.config[off + 1] = 0x20                    # points into the header: end of list
    bus.plug(f, 1)
    assert PCIDevice(bus, make_bdf(0, 1, 0)).capabilities() == [(0x09, off)]


def test_msix_table_outside_its_bar_is_refused(bus):
    f = PCIFunction(0x1234, 0x66, 0xFF0000)
    f.add_bar(0, 0x100, ops=RegFile(0x100))
    f.add_capability(regs.CAP_ID_MSIX, (63).to_bytes(2, "little")      # 64 entries = 1 KiB
                     + (0).to_bytes(4, "little") + (0x80).to_bytes(4, "little"))
    bus.plug(f, 1)
    d = probe(bus)[0]
    with pytest.raises(DriverError):
        d.enable_msix()


def test_vector_allocator_runs_out():
    alloc = VectorAllocator(0x30, 0x31)
    assert [alloc.alloc(), alloc.alloc()] == [0x30, 0x31]
    with pytest.raises(DriverError):
        alloc.alloc()
    alloc.free(0x30)
    assert alloc.alloc() == 0x30


def test_guest_thread_brings_up_a_virtio_device_while_the_device_raises_interrupts(
        no_fd_leak, bus):
    """The guest runs in its own thread (like a vCPU); the device side
    raises interrupts from the test thread (like the asyncio loop)."""
    fn = VirtioPCIFunction(ToyNet())
    bus.plug(fn, 3)
    up, done = threading.Event(), threading.Event()
    got: dict = {}

    def guest():
        dev = probe(bus)[0]
        drv = VirtioPCIDriver(dev)
        drv.negotiate(0)
        vecs = dev.enable_msix()
        drv.set_config_vector(0)
        drv.setup_queue(0, 0x10000, 0x11000, 0x12000, vector=1)
        drv.driver_ok()
        up.set()
        fired = 0
        while fired < 50:
            fired += len(wait_interrupts([vecs[1].eventfd], 5))
            drv.notify(0)
        got["fired"] = fired
        done.set()

    t = threading.Thread(target=guest)
    t.start()
    assert up.wait(5)
    for _ in range(50):
        fn.notify_queue(0)
        if done.wait(0.001):
            break
    while not done.wait(0.01):
        fn.notify_queue(0)
    t.join(5)
    assert got["fired"] >= 50 and fn.kicks[0] >= 50 and fn.errors.total == 0


def test_a_later_driver_finds_the_addresses_firmware_assigned(bus):
    bus.plug(fn_with((0, 0x1000, "mem32", False), (2, 1 << 32, "mem64", True),
                     (4, 0x20, "io", False)), 1)
    firmware = probe(bus)[0]
    late = PCIDevice(bus, firmware.bdf)
    assert late.size_bars() == firmware.bars
    assert late.command == firmware.command                    # probing restored decode
