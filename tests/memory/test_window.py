"""The vhost-pci peer-memory window: map, re-map, unmap and revoke."""
import ctypes
import os
import subprocess
import sys

import pytest

from emu import memory
from emu.errors import RegionTableError
from emu.window import PeerWindow, SLOT_ALIGN

MiB = 1 << 20


def peer_ram(size=4 * MiB):
    return memory.allocate(size, "memfd", name="vm1")


def test_regions_appear_at_aligned_offsets_and_share_pages(no_fd_leak):
    vm1 = memory.allocate(3 * MiB, "memfd")
    fd = vm1.regions[0].fd
    w = PeerWindow(64 * MiB)
    specs = [(0x100000000, MiB, 0x7000_0000, 2 * MiB), (0, 2 * MiB, 0x6000_0000, 0)]
    mem = w.map_table(specs, [os.dup(fd), os.dup(fd)])
    # gpa order, 2 MiB slots
    offs = [r.window_offset for r in mem.regions]
    assert offs == [0, SLOT_ALIGN]
    vm1.write(2 * MiB + 16, b"peer-hi")          # region 2 lives at fd offset 2 MiB
    assert mem.read(0x100000000 + 16, 7) == b"peer-hi"
    assert ctypes.string_at(w.base + SLOT_ALIGN + 16, 7) == b"peer-hi"
    mem.write(5, b"from-vm2")
    assert vm1.read(5, 8) == b"from-vm2"
    w.unmap()
    w.close()
    vm1.close()


def test_unaligned_mmap_offset():
    vm1 = memory.allocate(2 * MiB, "memfd")
    vm1.write(0x1234, b"X")
    w = PeerWindow(16 * MiB)
    mem = w.map_table([(0, 0x1000, 0, 0x1234)], [os.dup(vm1.regions[0].fd)])
    assert mem.read(0, 1) == b"X"
    assert mem.regions[0].window_offset % 4096 == 0x234
    w.close()
    vm1.close()


def test_remap_requires_unmap_and_table_must_fit(no_fd_leak):
    vm1 = peer_ram()
    fd = vm1.regions[0].fd
    w = PeerWindow(8 * MiB)
    w.map_table([(0, 4 * MiB, 0, 0)], [os.dup(fd)])
    with pytest.raises(RegionTableError):
        w.map_table([(0, 4 * MiB, 0, 0)], [os.dup(fd)])
    w.unmap()
    with pytest.raises(RegionTableError):        # 3 MiB regions in 2 MiB slots: 3rd past 8 MiB
        w.map_table([(i << 32, 3 * MiB, i << 32, 0) for i in range(3)],
                    [os.dup(fd), os.dup(fd), os.dup(fd)])
    with pytest.raises(RegionTableError):        # past the end of the fd
        w.map_table([(0, 4 * MiB, 0, 1 * MiB)], [os.dup(fd)])
    mem = w.map_table([(0, 4 * MiB, 0, 0)], [os.dup(fd)])
    assert mem.read(0, 1) == b"\0"
    w.close()
    vm1.close()


def test_revoke_gives_zero_pages_not_peer_memory():
    vm1 = peer_ram()
    vm1.write(0, b"secret")
    w = PeerWindow(8 * MiB)
    w.map_table([(0, 4 * MiB, 0, 0)], [os.dup(vm1.regions[0].fd)])
    assert ctypes.string_at(w.base, 6) == b"secret"
    w.revoke()
    assert w.revocations == 1 and not w.mapped
    # a late access by a driver that did not ack: zeros, and writes go nowhere
    assert ctypes.string_at(w.base, 6) == b"\0" * 6
    ctypes.memmove(w.base, b"late", 4)
    assert vm1.read(0, 6) == b"secret"
    w.unmap()
    w.close()
    vm1.close()


def test_access_after_unmap_faults_in_a_child():
    """After unmap the range is PROT_NONE again: a broken driver faults."""
    code = r"""
import ctypes, os
from emu import memory
from emu.window import PeerWindow
vm1 = memory.allocate(1 << 20, "memfd")
w = PeerWindow(4 << 20)
w.map_table([(0, 1 << 20, 0, 0)], [os.dup(vm1.regions[0].fd)])
w.unmap()
ctypes.string_at(w.base, 1)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert p.returncode == -11  # SIGSEGV


def test_no_mapping_leak_over_remap_cycles():
    vm1 = peer_ram()
    w = PeerWindow(8 * MiB)
    for i in range(100):
        w.map_table([(0, 4 * MiB, 0, 0)], [os.dup(vm1.regions[0].fd)])
        (w.revoke if i % 2 else w.unmap)()
        w.unmap()
    with open("/proc/self/maps") as f:
        assert sum("memfd:emu-vm1" in line for line in f) == 1  # vm1's own mapping only
    w.close()
    vm1.close()
