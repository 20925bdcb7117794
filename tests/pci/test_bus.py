"""BAR sizing and placement, MMIO/PIO dispatch, decode enables, RAM-backed
BARs, ioeventfds and the legacy configuration ports -- driven through the
bus exactly as firmware and drivers do."""
from __future__ import annotations

import mmap
import os

import pytest

from emu.errors import EmuBug
from emu.pci import BusError, PCIFunction, RamBacking
from emu.spec import pci as regs
from emu.pci.bus import make_bdf

from .helpers import RegFile, eventfd_count, reads_unassigned

BDF = make_bdf(0, 2, 0)
BAR0 = regs.BASE_ADDRESS_0


def size_probe(bus, bdf, index):
    off = BAR0 + 4 * index
    bus.config_write(bdf, off, 4, 0xFFFFFFFF)
    return bus.config_read(bdf, off, 4)


@pytest.mark.parametrize("kind,size,prefetch,low,high", [
    ("mem32", 0x1000, False, 0xFFFFF000, None),
    ("mem32", 0x10, True, 0xFFFFFFF8, None),
    ("mem32", 1 << 31, False, 0x80000000, None),
    ("mem64", 0x100000, True, 0xFFF0000C, 0xFFFFFFFF),
    ("mem64", 8 << 30, True, 0x0000000C, 0xFFFFFFFE),
    ("mem64", 0x4000, False, 0xFFFFC004, 0xFFFFFFFF),
    ("io", 0x20, False, 0xFFFFFFE1, None),
    ("io", 4, False, 0xFFFFFFFD, None),
])
def test_bar_sizing(bus, kind, size, prefetch, low, high):
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    fn.add_bar(2, size, kind, prefetch, ops=RegFile(16))
    bdf = bus.plug(fn, 1)
    assert size_probe(bus, bdf, 2) == low
    if high is not None:
        assert size_probe(bus, bdf, 3) == high
    # unimplemented BARs read back 0 whatever is written
    assert size_probe(bus, bdf, 0) == 0 and size_probe(bus, bdf, 5) == 0
    assert fn.errors.total == 0            # sizing probes are not guest errors


@pytest.mark.parametrize("args", [
    dict(index=0, size=0x1800, kind="mem32"),         # not a power of two
    dict(index=0, size=8, kind="mem32"),              # below 16 bytes
    dict(index=0, size=512, kind="io"),               # I/O BARs are at most 256 bytes
    dict(index=5, size=0x1000, kind="mem64"),         # 64-bit BAR needs two registers
    dict(index=0, size=0x20, kind="io", prefetchable=True),
    dict(index=6, size=0x1000, kind="mem32"),
])
def test_bad_bar_declarations_are_our_bug(args):
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    with pytest.raises(EmuBug):
        fn.add_bar(ops=RegFile(16), **args)


def test_overlapping_bar_registers_are_refused():
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    fn.add_bar(0, 0x1000, "mem64", ops=RegFile(16))
    with pytest.raises(EmuBug):
        fn.add_bar(1, 0x1000, "mem32", ops=RegFile(16))


def program(bus, bdf, index, addr, command=regs.COMMAND_MEMORY):
    bus.config_write(bdf, BAR0 + 4 * index, 4, addr & 0xFFFFFFFF)
    if addr >> 32:
        bus.config_write(bdf, BAR0 + 4 * index + 4, 4, addr >> 32)
    bus.config_write(bdf, regs.COMMAND, 2, command)


def test_mmio_dispatch_needs_address_and_memory_decode(bus, regfile_fn):
    regs_ = regfile_fn.regs
    bus.config_write(BDF, BAR0, 4, 0xC0000000)
    assert reads_unassigned(bus, 0xC0000000, 4)          # decode still off
    bus.config_write(BDF, regs.COMMAND, 2, regs.COMMAND_MEMORY)
    bus.mmio_write(0xC0000104, 4, 0x11223344)
    assert regs_.mem[0x104:0x108] == bytes.fromhex("44332211")
    assert bus.mmio_read(0xC0000105, 1) == 0x33
    assert bus.mmio_read(0xC0000104, 8) == 0x11223344
    # a write of the wrong width is cut to the access size
    bus.mmio_write(0xC0000200, 2, 0x123456)
    assert bus.mmio_read(0xC0000200, 4) == 0x3456
    # the device refuses a register: all ones on read side unaffected, counted
    bus.mmio_write(0xC0000010, 4, 1)
    assert regfile_fn.errors["test-readonly"] == 1
    # decode off again: the BAR vanishes
    bus.config_write(BDF, regs.COMMAND, 2, 0)
    assert reads_unassigned(bus, 0xC0000104, 4)
    bus.mmio_write(0xC0000104, 4, 0)
    assert regs_.mem[0x104:0x108] == bytes.fromhex("44332211")
    assert bus.unclaimed["mmio_read"] == 2 and bus.unclaimed["mmio_write"] == 1


def test_accesses_outside_or_across_a_bar_are_unclaimed(bus, regfile_fn):
    program(bus, BDF, 0, 0xC0000000)
    assert reads_unassigned(bus, 0xC0000FFE, 4)              # straddles the end
    assert reads_unassigned(bus, 0xBFFFFFFE, 4)              # straddles the start
    assert reads_unassigned(bus, 0xC0001000, 1)
    for size in (0, 3, 16):
        assert reads_unassigned(bus, 0xC0000000, size)
        bus.mmio_write(0xC0000000, size, 1)
    assert reads_unassigned(bus, -8, 4)
    assert reads_unassigned(bus, (1 << 64) - 2, 4)
    assert not regfile_fn.regs.log
    assert bus.unclaimed["mmio_read"] == 3 and bus.unclaimed["mmio_read_bad"] == 5
    assert bus.unclaimed["mmio_write_bad"] == 3


@pytest.mark.parametrize("addr", [0, 0xFFFFF000, 0xFFFFFFFF])
def test_bars_at_zero_or_reaching_4g_are_not_decoded(bus, regfile_fn, addr):
    program(bus, BDF, 0, addr)
    assert regfile_fn.bars[0].address is None
    assert reads_unassigned(bus, addr & ~0xFFF, 4)


def test_mem64_bar_above_4g_and_moving_it(bus):
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    rf = RegFile(0x1000)
    fn.add_bar(2, 0x1000, "mem64", prefetchable=True, ops=rf)
    moves = []
    fn.add_mapping_listener(lambda f, b: moves.append(b.address))
    bdf = bus.plug(fn, 1)
    program(bus, bdf, 2, 0x8_0000_0000)
    bus.mmio_write(0x8_0000_0010, 8, 0x0102030405060708)
    assert rf.mem[0x10:0x18] == bytes.fromhex("0807060504030201")
    program(bus, bdf, 2, 0x9_0000_0000)
    assert reads_unassigned(bus, 0x8_0000_0010, 8)
    assert bus.mmio_read(0x9_0000_0010, 8) == 0x0102030405060708
    assert moves == [0x8_0000_0000, 0x9_0000_0000]


def test_io_bar_dispatch_needs_io_decode(bus):
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    rf = RegFile(0x20)
    fn.add_bar(4, 0x20, "io", ops=rf)
    bdf = bus.plug(fn, 1)
    program(bus, bdf, 4, 0xC040, command=regs.COMMAND_MEMORY)
    bus.pio_write(0xC044, 2, 0xBEEF)
    assert rf.mem[4:6] == b"\x00\x00"
    program(bus, bdf, 4, 0xC040, command=regs.COMMAND_IO)
    bus.pio_write(0xC044, 2, 0xBEEF)
    assert bus.pio_read(0xC044, 2) == 0xBEEF
    assert bus.pio_read(0xC044, 8) == 0xFFFFFFFF                # no 8-byte port I/O
    assert reads_unassigned(bus, 0xC044, 2)                   # not in memory space
    program(bus, bdf, 4, 0x1_0000, command=regs.COMMAND_IO)     # beyond 64 KiB of ports
    assert fn.bars[4].address is None


def test_overlapping_bars_resolve_to_the_lower_bdf(bus):
    a, b = PCIFunction(0x1234, 1, 0xFF0000), PCIFunction(0x1234, 2, 0xFF0000)
    ra, rb = RegFile(0x2000), RegFile(0x1000)
    a.add_bar(0, 0x2000, ops=ra)
    b.add_bar(0, 0x1000, ops=rb)
    bdf_b = bus.plug(b, 7)
    bdf_a = bus.plug(a, 3)
    program(bus, bdf_b, 0, 0xC0001000)
    program(bus, bdf_a, 0, 0xC0000000)                  # a covers all of b
    bus.mmio_write(0xC0001000, 4, 0xAAAA)
    assert ra.mem[0x1000:0x1004] == b"\xaa\xaa\x00\x00" and not rb.log
    program(bus, bdf_a, 0, 0xC0004000)                  # a moves away: b shows up again
    bus.mmio_write(0xC0001000, 4, 0xBBBB)
    assert rb.mem[0:2] == b"\xbb\xbb"


def test_partial_overlap_keeps_the_uncovered_part(bus):
    a, b = PCIFunction(0x1234, 1, 0xFF0000), PCIFunction(0x1234, 2, 0xFF0000)
    ra, rb = RegFile(0x1000), RegFile(0x4000)
    a.add_bar(0, 0x1000, ops=ra)
    b.add_bar(0, 0x4000, ops=rb)
    program(bus, bus.plug(a, 1), 0, 0xC0001000)
    program(bus, bus.plug(b, 2), 0, 0xC0000000)
    bus.mmio_write(0xC0000000, 4, 1)                    # b, below a
    bus.mmio_write(0xC0001000, 4, 2)                    # a
    bus.mmio_write(0xC0002000, 4, 3)                    # b, above a
    assert rb.mem[0] == 1 and ra.mem[0] == 2 and rb.mem[0x2000] == 3
    assert reads_unassigned(bus, 0xC0000FFE, 4)   # spans two owners


def test_ram_bar_is_mapped_and_reached_by_mmio(bus):
    backing = mmap.mmap(-1, 0x2000)
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    fn.add_bar(2, 0x4000, "mem64", prefetchable=True, ram=backing)   # backing < BAR size
    bdf = bus.plug(fn, 1)
    with pytest.raises(BusError):
        bus.map_ram(0x8_0000_0000, 16)                   # not programmed yet
    program(bus, bdf, 2, 0x8_0000_0000)
    m = bus.map_ram(0x8_0000_1000, 0x1000)
    m.view[0:4] = b"\x01\x02\x03\x04"
    assert backing[0x1000:0x1004] == b"\x01\x02\x03\x04"
    assert bus.mmio_read(0x8_0000_1000, 4) == 0x04030201
    bus.mmio_write(0x8_0000_0008, 8, 0x1122334455667788)
    assert backing[8:16] == bytes.fromhex("8877665544332211")
    assert m.host_addr == RamBacking.from_buffer(backing).host_addr + 0x1000
    assert bus.mmio_read(0x8_0000_3000, 4) == 0xFFFFFFFF               # past the backing
    assert fn.errors["ram-unbacked"] == 1
    for addr, length in [(0x8_0000_1000, 0x1001), (0x8_0000_3000, 16), (0x8_0000_0000, 0),
                         (0x7_FFFF_FFF0, 32)]:
        with pytest.raises(BusError):
            bus.map_ram(addr, length)
    del m
    bus.config_write(bdf, regs.COMMAND, 2, 0)
    with pytest.raises(BusError):
        bus.map_ram(0x8_0000_0000, 16)


def test_register_bars_cannot_be_mapped(bus, regfile_fn):
    program(bus, BDF, 0, 0xC0000000)
    with pytest.raises(BusError):
        bus.map_ram(0xC0000000, 16)
    assert bus.unclaimed["map_ram"] == 1


def test_read_only_ram_bar(bus):
    page = bytearray(0x1000)
    page[0] = 0x5A
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    fn.add_bar(4, 0x2000, "mem32", ram=RamBacking.from_buffer(page, readonly=True))
    bdf = bus.plug(fn, 1)
    program(bus, bdf, 4, 0xC0000000)
    bus.mmio_write(0xC0000000, 1, 0xFF)
    assert page[0] == 0x5A and bus.mmio_read(0xC0000000, 1) == 0x5A
    assert fn.errors["ram-readonly"] == 1
    m = bus.map_ram(0xC0000000, 16)
    assert m.readonly and m.view.readonly and m.view[0] == 0x5A


def test_ram_bar_holes_are_not_touched(bus):
    backing = mmap.mmap(-1, 0x2000)
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    fn.add_bar(0, 0x2000, ram=RamBacking.from_buffer(
        backing, accessible=lambda off, n: off + n <= 0x1000))
    program(bus, bus.plug(fn, 1), 0, 0xC0000000)
    backing[0x1000] = 7
    assert bus.mmio_read(0xC0001000, 1) == 0xFF
    bus.mmio_write(0xC0001000, 1, 1)
    assert backing[0x1000] == 7 and fn.errors["ram-unbacked"] == 2


def test_ioeventfd_takes_matching_writes(no_fd_leak, bus, regfile_fn):
    fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    fd2 = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        ev = regfile_fn.add_ioeventfd(0, 0x100, fd, size=2)
        regfile_fn.add_ioeventfd(0, 0x200, fd2, data=7)
        assert bus.ioeventfd_for(0xC0000100, 2) is None              # BAR not decoded
        program(bus, BDF, 0, 0xC0000000)
        assert bus.ioeventfd_for(0xC0000100, 2) == fd
        assert bus.ioeventfd_for(0xC0000100, 4) is None              # size must match
        assert bus.ioeventfd_for(0xC0000200, 4, 7) == fd2
        assert bus.ioeventfd_for(0xC0000200, 4, 8) is None           # data must match
        bus.mmio_write(0xC0000100, 2, 3)
        bus.mmio_write(0xC0000100, 2, 3)
        assert eventfd_count(fd) == 2 and not regfile_fn.regs.log   # no exit to the model
        bus.mmio_write(0xC0000100, 4, 3)                            # other size: the model
        assert regfile_fn.regs.log == [("w", 0x100, 4, 3)]
        bus.mmio_write(0xC0000200, 1, 7)
        assert eventfd_count(fd2) == 1
        bus.mmio_write(0xC0000200, 1, 6)
        assert eventfd_count(fd2) == 0 and regfile_fn.regs.log[-1] == ("w", 0x200, 1, 6)
        program(bus, BDF, 0, 0xD0000000)                            # follows the BAR
        assert bus.ioeventfd_for(0xC0000100, 2) is None
        assert bus.ioeventfd_for(0xD0000100, 2) == fd
        regfile_fn.remove_ioeventfd(ev)
        assert bus.ioeventfd_for(0xD0000100, 2) is None
        with pytest.raises(EmuBug):
            regfile_fn.add_ioeventfd(3, 0, fd)                       # no such BAR
    finally:
        os.close(fd)
        os.close(fd2)


def test_legacy_config_mechanism(bus, regfile_fn):
    addr = 0x80000000 | (BDF << 8)
    bus.pio_write(0xCF8, 4, addr)
    assert bus.pio_read(0xCF8, 4) == addr
    assert bus.pio_read(0xCFC, 4) == 0x56781234
    assert bus.pio_read(0xCFE, 2) == 0x5678
    assert bus.pio_read(0xCFD, 1) == 0x12
    # misaligned: QEMU serves registers 1 and 2 (a byte at a time)
    assert bus.pio_read(0xCFD, 2) == 0x7812
    bus.pio_write(0xCF8, 4, addr | regs.COMMAND)
    bus.pio_write(0xCFC, 2, regs.COMMAND_MEMORY)
    assert regfile_fn.command == regs.COMMAND_MEMORY
    bus.pio_write(0xCF8, 4, addr & 0x7FFFFFFF)                    # mechanism disabled
    assert bus.pio_read(0xCFC, 4) == 0xFFFFFFFF
    bus.pio_write(0xCF8, 4, 0x80000000 | (make_bdf(0, 9, 0) << 8))
    assert bus.pio_read(0xCFC, 4) == 0xFFFFFFFF                   # nothing at 00:09.0


def test_stats_report_unclaimed_and_guest_errors(bus, regfile_fn):
    bus.mmio_read(0x1000, 4)
    bus.config_write(BDF, 0, 2, 0)
    st = bus.stats()
    assert st["unclaimed"]["mmio_read"] == 1
    assert st["functions"]["00:02.0"]["by_kind"]["config-readonly"] == 1
