"""Address spaces: layered dispatch, unclaimed accesses, bulk copies that
split into the accesses a device model expects and never touch a hole."""
from __future__ import annotations

import mmap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.address_space import AddressSpace, Region
from emu.errors import EmuBug
from emu.pci.bar import RamBacking


class Log:
    """A register target that records every access."""

    def __init__(self, value: int = 0x1122334455667788):
        self.value = value
        self.log: list[tuple] = []

    def read(self, offset, size):
        self.log.append(("r", offset, size))
        return self.value

    def write(self, offset, size, value):
        self.log.append(("w", offset, size, value))


class Picky(Log):
    def accepts(self, offset, size):
        return size == 4


class Ram:
    def __init__(self, backing: RamBacking):
        self.ram = backing

    def read(self, offset, size):
        return self.ram.read(offset, size)

    def write(self, offset, size, value):
        self.ram.write(offset, size, value)


def space() -> AddressSpace:
    return AddressSpace("mmio", 1 << 64, (1, 2, 4, 8))


def test_higher_layers_win_and_lower_ones_show_through():
    s = space()
    low, high = Log(1), Log(2)
    s.set_layer("low", [Region(0x1000, 0x3000, low)], priority=0)
    s.set_layer("high", [Region(0x2000, 0x2100, high)], priority=5)
    assert s.read(0x1000, 4) == 1 and s.read(0x2000, 4) == 2 and s.read(0x2100, 4) == 1
    assert low.log == [("r", 0, 4), ("r", 0x1100, 4)]            # offsets are region-relative
    s.set_layer("high", [], priority=5)                           # the owner withdraws
    assert s.read(0x2000, 4) == 1


def test_origin_keeps_offsets_of_a_split_target():
    s = space()
    t = Log()
    s.set_layer("a", [Region(0x2080, 0x3000, t, origin=0x2000)])
    s.read(0x2080, 2)
    assert t.log == [("r", 0x80, 2)]


def test_a_target_may_decline_so_a_lower_layer_takes_it():
    s = AddressSpace("pio", 1 << 16, (1, 2, 4))
    picky, below = Picky(7), Log(9)
    s.set_layer("bridge", [Region(0xCF8, 0xCFC, picky)], priority=5)
    s.set_layer("bars", [Region(0xC00, 0xD00, below)], priority=0)
    assert s.read(0xCF8, 4) == 7
    assert s.read(0xCF8, 2) == 9 and below.log == [("r", 0xF8, 2)]


def test_unclaimed_and_malformed_accesses_are_counted_never_raised():
    s = space()
    t = Log()
    s.set_layer("a", [Region(0x1000, 0x2000, t)])
    assert s.read(0xFFE, 4) == 0xFFFFFFFF                       # straddles the start
    assert s.read(0x1FFE, 4) == 0xFFFFFFFF                      # straddles the end
    assert not s.write(0x5000, 4, 1)
    for size in (0, 3, 16):
        assert s.read(0x1000, size) == 0xFFFFFFFFFFFFFFFF
    assert s.read(-8, 4) == 0xFFFFFFFF and s.read((1 << 64) - 2, 4) == 0xFFFFFFFF
    assert not t.log
    assert s.unclaimed == {"mmio_read": 2, "mmio_write": 1, "mmio_read_bad": 5}


def test_overlapping_regions_in_one_layer_are_our_bug():
    with pytest.raises(EmuBug):
        space().set_layer("a", [Region(0, 0x2000, Log()), Region(0x1000, 0x3000, Log())])


def test_bulk_copy_splits_registers_into_aligned_accesses_and_copies_ram_whole():
    s = space()
    buf = bytearray(0x100)
    regs = Log(0)
    s.set_layer("ram", [Region(0x0, 0x100, Ram(RamBacking.from_buffer(buf)))])
    s.set_layer("regs", [Region(0x100, 0x200, regs)])
    s.write_bytes(0xF0, bytes(range(0x30)))                       # 16 bytes RAM, 32 registers
    assert buf[0xF0:] == bytes(range(0x10))
    assert [(op, off, n) for op, off, n, _ in regs.log] == [("w", 0, 8), ("w", 8, 8),
                                                            ("w", 0x10, 8), ("w", 0x18, 8)]
    regs.log.clear()
    assert s.read_bytes(0xFE, 2) == bytes(range(0x0E, 0x10))
    s.read_bytes(0x103, 6)                                       # unaligned: 1 + 4 + 1
    assert regs.log == [("r", 3, 1), ("r", 4, 4), ("r", 8, 1)]


def test_bulk_copy_across_a_hole_reads_ones_and_never_faults():
    s = space()
    mm = mmap.mmap(-1, 0x2000)
    mm[0:4] = b"abcd"
    backing = RamBacking.from_buffer(mm, accessible=lambda off, n: off + n <= 0x1000)
    s.set_layer("win", [Region(0x10000, 0x12000, Ram(backing))])
    assert s.read_bytes(0x10000, 4) == b"abcd"
    assert s.read_bytes(0x11000, 8) == b"\xff" * 8
    s.write_bytes(0x11000, b"zz")
    assert mm[0x1000:0x1002] == b"\x00\x00" and s.unclaimed["mmio_ram_unbacked"] == 2
    ro = RamBacking.from_buffer(bytes(16))
    s.set_layer("ro", [Region(0x20000, 0x20010, Ram(ro))])
    s.write_bytes(0x20000, b"x")
    assert s.unclaimed["mmio_write_readonly"] == 1 and s.read_bytes(0x20000, 1) == b"\0"


def test_bulk_ranges_outside_the_space_are_refused():
    with pytest.raises(ValueError):
        space().read_bytes((1 << 64) - 2, 4)
    with pytest.raises(ValueError):
        AddressSpace("pio", 1 << 16, (1, 2, 4)).write_bytes(0xFFFF, b"ab")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0x300), st.integers(0, 0x100))
def test_bulk_round_trip_over_ram_and_registers(addr, n):
    """Whatever the range, a bulk write then read of RAM gives the data
    back, and register pieces are naturally aligned and never cross a
    region."""
    s = space()
    buf = bytearray(0x200)
    regs = Log(0)
    s.set_layer("ram", [Region(0, 0x200, Ram(RamBacking.from_buffer(buf)))])
    s.set_layer("regs", [Region(0x200, 0x400, regs)])
    data = bytes((addr + i) & 0xFF for i in range(n))
    s.write_bytes(addr, data)
    ram_end = max(0, min(addr + n, 0x200) - addr)
    assert s.read_bytes(addr, ram_end) == data[:ram_end]
    for entry in regs.log:
        off, size = entry[1], entry[2]
        assert size in (1, 2, 4, 8) and off % size == 0 and off + size <= 0x200
