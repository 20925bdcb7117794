"""RAM below and above 4 GiB as QEMU 7.2 lays it out per machine type, one
backing presented as several guest-physical ranges, and the vhost-user
memory table that follows it (two regions from one fd)."""
from __future__ import annotations

import os
import struct

import pytest

from emu import memory
from emu.errors import RegionTableError
from emu.machine import Machine
from emu.machines import ram_layout
from emu.machines.ram_layout import AMD_HT_SIZE, AMD_HT_START, E820_RAM, E820_RESERVED
from emu.vhost_user.messages import FrontendRequest as F
from tests.hostile.evil_backend import Listener
from tests.hostile.procs import Emu, vm1_args

G, M = 1 << 30, 1 << 20


@pytest.mark.parametrize("machine,ram,below,above", [
    ("pc", 128 * M, 128 * M, 0),
    ("pc", 0xDFF00000, 0xDFF00000, 0),                 # just below 3.5 GiB: all low
    ("pc", 0xE0000000, 0xC0000000, 0x20000000),        # 3.5 GiB: the gigabyte split
    ("pc", 4 * G, 3 * G, G),
    ("pc", 8 * G, 3 * G, 5 * G),
    ("q35", 128 * M, 128 * M, 0),
    ("q35", 0xAFF00000, 0xAFF00000, 0),
    ("q35", 0xB0000000, 2 * G, 0x30000000),
    ("q35", 4 * G, 2 * G, 2 * G),
    ("none", 3 * G, 3 * G, 0),
])
def test_split_per_machine_type(machine, ram, below, above):
    from emu.machines import types
    layout = types.find(machine).layout(ram)
    assert (layout.below_4g, layout.above_4g) == (below, above)
    windows = [(0, 0, below)] + ([(4 * G, below, above)] if above else [])
    assert layout.windows() == windows


def test_max_ram_below_4g_lowers_the_split():
    assert ram_layout.pc_layout(4 * G, 2 * G).windows() == [(0, 0, 2 * G), (4 * G, 2 * G, 2 * G)]
    assert ram_layout.q35_layout(4 * G, G).windows() == [(0, 0, G), (4 * G, G, 3 * G)]
    # raising it (up to 4G) is allowed on pc as in QEMU; q35 keeps its own cap
    assert ram_layout.pc_layout(3968 * M, 4 * G).windows() == [(0, 0, 3968 * M)]


def test_e820_is_qemus_table():
    layout = ram_layout.pc_layout(4 * G)
    assert layout.e820() == [(AMD_HT_START, AMD_HT_SIZE, E820_RESERVED), (0, 3 * G, E820_RAM),
                             (4 * G, G, E820_RAM)]
    raw = layout.e820_bytes()
    assert len(raw) == 60 and struct.unpack_from("<QQI", raw, 20) == (0, 3 * G, 1)


def test_ram_reaching_the_hypertransport_hole_is_refused():
    with pytest.raises(RegionTableError, match="HyperTransport"):
        ram_layout.pc_layout(AMD_HT_START)


def test_one_backing_several_regions():
    ram = memory.allocate(8 * M, "memfd", layout=[(0, 0, 4 * M), (4 * G, 4 * M, 4 * M)])
    try:
        low, high = ram.regions
        assert (low.gpa, low.size, low.mmap_offset) == (0, 4 * M, 0)
        assert (high.gpa, high.size, high.mmap_offset) == (4 * G, 4 * M, 4 * M)
        assert high.fd == low.fd and high.uaddr == low.uaddr + 4 * M
        assert high.host_addr == low.host_addr + 4 * M
        ram.write(4 * G + 16, b"above")
        assert os.pread(low.fd, 5, 4 * M + 16) == b"above"       # the same file, further on
        with pytest.raises(Exception):
            ram.translate_gpa(4 * M, 1)                          # the hole is not RAM
        fd = low.fd
    finally:
        ram.close()
    with pytest.raises(OSError):
        os.fstat(fd)                                             # closed once, by its owner


@pytest.mark.parametrize("layout", [
    [(0, 0, 4 * M)],                                  # does not cover the backing
    [(0, 0, 4 * M), (8 * M, 2 * M, 4 * M)],           # does not continue it
    [(0, 0, 4 * M), (2 * M, 4 * M, 4 * M)],           # overlaps in guest-physical space
    [(0, 0, 4 * M), (4 * G + 1, 4 * M, 4 * M)],       # not page aligned
])
def test_bad_layouts_are_refused(layout, no_fd_leak):
    with pytest.raises(RegionTableError):
        memory.allocate(8 * M, "memfd", layout=layout)


def test_a_machine_maps_both_ranges_and_the_hole_between_them():
    m = Machine(name="big", ram_size=4 * G, backend="memfd", machine_type="pc")
    try:
        assert [(r.gpa, r.size) for r in m.ram.regions] == [(0, 3 * G), (4 * G, G)]
        s = m.system
        s.memory.write(4 * G + 0x1000, 4, 0xCAFE)
        assert m.ram.read(4 * G + 0x1000, 4) == struct.pack("<I", 0xCAFE)
        assert os.pread(m.ram.regions[0].fd, 4, 3 * G + 0x1000) == struct.pack("<I", 0xCAFE)
        assert s.memory.lookup(3 * G + 0x1000, 4) is None        # the PCI hole
        assert s.fw_cfg.file("etc/e820") == ram_layout.pc_layout(4 * G).e820_bytes()
    finally:
        m.release()


@pytest.mark.peers
def test_vhost_user_memory_table_follows_the_split(tmp_path):
    """A 4 GiB pc VM over vhost-user: SET_MEM_TABLE carries two regions
    from the one backing (one fd each, as the protocol wants), at 0 and
    4 GiB, with their offsets -- and the bytes the guest wrote above 4 GiB
    are in the back-end's mapping of the second region."""
    listener = Listener(str(tmp_path / "vu.sock"))
    vm = Emu("vm1", vm1_args(listener.path, mem="4G", guest="virtio-net,app=sink"),
             str(tmp_path))
    try:
        e = listener.accept()
        msg = e.serve(until=lambda m: m.request == F.SET_MEM_TABLE, timeout=30)
        assert msg is not None
        regions = msg.payload.regions
        assert [(r.gpa, r.size, r.mmap_offset) for r in regions] == [(0, 3 * G, 0),
                                                                     (4 * G, G, 3 * G)]
        assert len(msg.fds) == 2
        st = [os.fstat(fd) for fd in msg.fds]
        assert st[0].st_ino == st[1].st_ino and st[0].st_size == 4 * G
        assert regions[1].uaddr == regions[0].uaddr + 3 * G
        for fd in msg.fds:
            os.close(fd)
    finally:
        vm.kill()
        listener.close()
