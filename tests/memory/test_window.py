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


# -- a new table in two steps: prepare (checks only), install (maps; rolls back) ------------------
import errno
import fcntl
import socket

from emu.memory import F_SEAL_FUTURE_WRITE
from emu.window import WindowMemory, WindowRegion


def _memfd(size, flags=0):
    fd = os.memfd_create("emu-test", os.MFD_CLOEXEC | flags)
    os.ftruncate(fd, size)
    return fd


def _sealed(seal):
    def make(vm1):
        fd = _memfd(4 * MiB, os.MFD_ALLOW_SEALING)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seal)
        return fd
    return make


def _pipe(vm1):
    r, w = os.pipe()
    os.close(w)
    return r


def _socket(vm1):
    a, b = socket.socketpair()
    a.close()
    return b.detach()


def _reopen(flags):
    return lambda vm1: os.open(f"/proc/self/fd/{vm1.regions[0].fd}", flags)


BAD_FDS = {
    "smaller-than-the-region": (lambda vm1: _memfd(MiB), "past the end of its fd"),
    "size-0": (lambda vm1: _memfd(0), "size 0"),
    "pipe": (_pipe, "not a regular file"),
    "socket": (_socket, "not a regular file"),
    "eventfd": (lambda vm1: os.eventfd(0), "not a regular file"),
    "directory": (lambda vm1: os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY), "not a regular file"),
    "o-path": (_reopen(os.O_PATH), "O_PATH"),
    "read-only": (_reopen(os.O_RDONLY), "open read-only"),
    "write-only": (_reopen(os.O_WRONLY), "open write-only"),
    "write-sealed": (_sealed(fcntl.F_SEAL_WRITE), "sealed against writing"),
    "future-write-sealed": (_sealed(F_SEAL_FUTURE_WRITE), "sealed against writing"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FDS))
def test_a_table_refused_by_prepare_leaves_the_window_as_it_was(no_fd_leak, kind):
    make, text = BAD_FDS[kind]
    vm1 = peer_ram()
    vm1.write(0, b"old table")
    w = PeerWindow(8 * MiB)
    mem = w.map_table([(0, 4 * MiB, 0, 0)], [os.dup(vm1.regions[0].fd)])
    with pytest.raises(RegionTableError, match=text):
        w.prepare([(0, 4 * MiB, 0, 0)], [make(vm1)])      # the fd is closed: no_fd_leak
    assert w.mapped and mem.read(0, 9) == b"old table"
    w.close()
    vm1.close()


def test_prepare_checks_the_layout_and_max_mem_before_any_fd(no_fd_leak):
    w = PeerWindow(8 * MiB)
    with pytest.raises(RegionTableError, match="bytes of window"):     # an eventfd is no memory,
        w.prepare([(0, 4 * MiB, 0, 0), (1 << 32, 4 * MiB + 4096, 1 << 32, 0)],  # but the layout
                  [_memfd(8 * MiB), os.eventfd(0)])                      # is checked first
    with pytest.raises(RegionTableError, match="exceeds max-mem"):
        w.prepare([(0, 4 * MiB, 0, 0)], [os.eventfd(0)], max_total=4 * MiB - 4096)
    plan = w.prepare([(0, 4 * MiB, 0, 0)], [_memfd(4 * MiB)], max_total=4 * MiB)
    assert not w.mapped                         # a plan maps nothing ...
    plan.close()                                # ... and owns its fds until installed
    w.close()


def _two_region_table(vm1):
    fd = vm1.regions[0].fd
    return [(0, 2 * MiB, 0, 0), (1 << 32, MiB, 1 << 32, 2 * MiB)], [os.dup(fd), os.dup(fd)]


def _hugetlb_second_region(vm1):
    """gpa 0 maps; the hugetlbfs region does not (offset not huge-page aligned: EINVAL)."""
    return ([(0, 2 * MiB, 0, 0), (1 << 32, MiB, 1 << 32, 4096)],
            [os.dup(vm1.regions[0].fd), _memfd(4 * MiB, os.MFD_HUGETLB)])


def test_mmap_refusing_a_region_maps_the_previous_table_again(no_fd_leak):
    vm1 = peer_ram()
    vm1.write(16, b"still here")
    w = PeerWindow(16 * MiB)
    old = w.map_table(*_two_region_table(vm1))
    hosts = [r.host_addr for r in old.regions]
    w.unmap()                                    # what the device does before a new table
    assert not w.mapped
    with pytest.raises(RegionTableError, match="mmap of region .* the previous table is mapped again"):
        w.map_table(*_hugetlb_second_region(vm1))
    assert w.mapped and w.rollbacks == 1
    assert [r.host_addr for r in old.regions] == hosts
    assert ctypes.string_at(hosts[0] + 16, 10) == b"still here"     # same address, same pages
    ctypes.memmove(hosts[1], b"hi", 2)
    assert vm1.read(2 * MiB, 2) == b"hi"
    assert w.holds(old.regions[1].window_offset, MiB)
    # and a good table still replaces it
    w.unmap()
    new = w.map_table([(0, 4 * MiB, 0, 0)], [os.dup(vm1.regions[0].fd)])
    assert new.read(16, 10) == b"still here"
    w.close()
    vm1.close()


def _protection(addr: int) -> str:
    """The permissions of the mapping holding ``addr`` in this process."""
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= addr < hi:
                return perms
    return ""


def test_a_refused_install_after_a_revocation_never_leaves_a_faulting_hole(no_fd_leak):
    """The driver did not acknowledge (the window was revoked, not unmapped):
    it may still read its old host addresses while the next table is tried.
    A table that mmap refuses half-way must put back the zero pages where
    its first regions went, never the PROT_NONE reservation (VM2 died with
    SIGSEGV on a loaded machine, where ack-timeout expires)."""
    vm1 = peer_ram()
    vm1.write(16, b"old")
    w = PeerWindow(16 * MiB)
    old = w.map_table(*_two_region_table(vm1))
    hosts = [r.host_addr for r in old.regions]
    w.revoke()                                   # no ack: zero pages under the driver
    assert _protection(hosts[0]).startswith("rw")
    seen, restore = [], w._restore

    def watch_restore():                         # the moment between undo and roll-back
        seen.extend(_protection(h) for h in hosts)
        return restore()
    w._restore = watch_restore
    with pytest.raises(RegionTableError, match="the previous table is mapped again"):
        w.map_table(*_hugetlb_second_region(vm1))   # gpa 0 maps over the zeros, then EINVAL
    assert seen and all(p.startswith("rw") for p in seen), seen
    assert all(_protection(h).startswith("rw") for h in hosts)
    assert ctypes.string_at(hosts[0] + 16, 3) == b"old"          # the old table is back
    w.close()
    vm1.close()


def test_a_refused_install_restores_zero_pages_even_when_the_old_table_is_gone(no_fd_leak,
                                                                              monkeypatch):
    """The same, when the old table cannot come back either: the undo alone
    must keep the revoked range readable."""
    vm1 = peer_ram()
    w = PeerWindow(16 * MiB)
    old = w.map_table(*_two_region_table(vm1))
    host = old.regions[0].host_addr
    w.revoke()
    real, calls = w._map, []

    def fail_second(slot):
        calls.append(slot)
        if len(calls) >= 2:
            raise OSError(errno.ENOMEM, "test: no memory")
        real(slot)
    monkeypatch.setattr(w, "_map", fail_second)
    with pytest.raises(RegionTableError):
        w.map_table(*_two_region_table(vm1))
    assert _protection(host).startswith("rw") and w.accessible(old.regions[0].window_offset, 1)
    assert ctypes.string_at(host, 4) == bytes(4)
    w.close()
    vm1.close()


def test_a_region_mmap_refuses_never_leaves_a_hole_in_the_window(no_fd_leak):
    """A refused MAP_FIXED may unmap the range it was to replace: a hole any
    thread's next allocation can land in, which the roll-back's MAP_FIXED
    would then map over (VM2 crashed in json encoding, its heap clobbered).
    The window tries each mapping elsewhere first: the refusal leaves the
    reservation whole."""
    vm1 = peer_ram()
    w = PeerWindow(16 * MiB)
    w.map_table(*_two_region_table(vm1))
    w.unmap()
    seen, undo = [], w._undo

    def watch_undo(offset, length):
        seen.append(_protection(w.base + offset))
        undo(offset, length)
    w._undo = watch_undo
    with pytest.raises(RegionTableError):
        w.map_table(*_hugetlb_second_region(vm1))
    assert len(seen) == 2 and seen[1] == "---p", seen      # the refused region's range
    w.close()
    vm1.close()


def test_mmap_refusing_the_first_table_leaves_nothing_mapped(no_fd_leak):
    vm1 = peer_ram()
    w = PeerWindow(16 * MiB)
    with pytest.raises(RegionTableError, match="no previous table"):
        w.map_table(*_hugetlb_second_region(vm1))
    assert not w.mapped and not w.accessible(0, 1)
    w.close()
    vm1.close()


def test_when_even_the_previous_table_cannot_come_back_its_range_is_revoked(no_fd_leak,
                                                                          monkeypatch):
    vm1 = peer_ram()
    vm1.write(0, b"secret")
    w = PeerWindow(16 * MiB)
    old = w.map_table([(0, 4 * MiB, 0, 0)], [os.dup(vm1.regions[0].fd)])
    old_fd = w._table[0].fd
    real = w._map

    def refuse_the_old_table(slot):
        if slot.fd == old_fd:
            raise OSError(errno.ENOMEM, "test: no memory")
        real(slot)
    monkeypatch.setattr(w, "_map", refuse_the_old_table)
    w.unmap()
    with pytest.raises(RegionTableError, match="no previous table"):
        w.map_table(*_hugetlb_second_region(vm1))
    # the old host addresses are harmless: zero pages, not the peer, not a fault
    assert not w.mapped and not w.holds(0, 1) and w.accessible(0, 4 * MiB)
    assert ctypes.string_at(old.regions[0].host_addr, 6) == bytes(6)
    w.close()                                   # the old table's fd is closed: no_fd_leak
    vm1.close()


def test_regions_and_memory_are_window_types(no_fd_leak):
    vm1 = peer_ram()
    vm1.write(0, b"data")
    w = PeerWindow(8 * MiB)
    mem = w.map_table([(0, 4 * MiB, 0, 0)], [os.dup(vm1.regions[0].fd)])
    assert isinstance(mem, WindowMemory)
    assert all(type(r) is WindowRegion and r.host_addr == w.base + r.window_offset
               for r in mem.regions)
    mem.close()                                  # leaves the mapping to the window
    assert w.mapped and ctypes.string_at(w.base, 4) == b"data"
    w.forget()                                   # the table's fds go, its pages stay ...
    assert w.mapped and ctypes.string_at(w.base, 4) == b"data"
    w.unmap()                                    # ... until it is unmapped
    assert not w.accessible(0, 1)
    w.close()
    vm1.close()
