"""Guest memory: backends, peer mapping, bounds-checked translation, cleanup."""
import mmap
import os

import numpy as np
import pytest

from emu import memory
from emu.errors import GuestMemoryError, RegionTableError

MiB = 1 << 20


def shm_objects():
    return {n for n in os.listdir("/dev/shm") if n.startswith("emu-")}


@pytest.mark.parametrize("backend", ["shm", "memfd"])
def test_allocate_read_write_and_share(backend, no_fd_leak):
    before = shm_objects()
    with memory.allocate(4 * MiB, backend, name="t") as mem:
        assert shm_objects() == before, "shm object must be unlinked at once"
        mem.write(0x1000, b"hello")
        assert mem.read(0x1000, 5) == b"hello"
        # the fd really shares the pages: map it a second time, as a peer would
        r = mem.regions[0]
        peer = memory.map_regions([(0, r.size, 0x7000_0000, 0)], [os.dup(r.fd)])
        assert peer.read(0x1000, 5) == b"hello"
        peer.write(0x2000, b"\xaa\xbb")
        assert mem.read(0x2000, 2) == b"\xaa\xbb"
        peer.close()
    assert mem.closed


def test_file_backend_in_directory(tmp_path, no_fd_leak):
    with memory.allocate(2 * MiB, "file", mem_path=str(tmp_path)) as mem:
        mem.write(0, b"x")
        assert mem.read(0, 1) == b"x"
    assert list(tmp_path.iterdir()) == [], "O_TMPFILE leaves no name behind"


def test_file_backend_named(tmp_path, no_fd_leak):
    p = tmp_path / "ram"
    with memory.allocate(MiB, "file", mem_path=str(p)) as mem:
        mem.write(10, b"abc")
    assert p.read_bytes()[10:13] == b"abc"


def test_unknown_backend_and_bad_size():
    with pytest.raises(RegionTableError):
        memory.allocate(MiB, "nvdimm")
    with pytest.raises(RegionTableError):
        memory.allocate(1000, "memfd")


def test_translation_bounds():
    with memory.allocate(MiB, "memfd", gpa=0x10000) as mem:
        r, off = mem.translate_gpa(0x10000, MiB)
        assert off == 0 and r.size == MiB
        assert mem.gpa_to_host(0x10000 + 5) == r.host_addr + 5
        for gpa, ln in [(0xffff, 1), (0x10000 + MiB, 1), (0x10000 + MiB - 1, 2),
                        (0x10000, MiB + 1), ((1 << 64) - 1, 2), (-1, 1), (0x10000, -1)]:
            with pytest.raises(GuestMemoryError):
                mem.translate_gpa(gpa, ln)
        uaddr = r.uaddr
        assert mem.uaddr_to_host(uaddr + 7, 1) == r.host_addr + 7
        assert mem.uaddr_to_gpa(uaddr + 7) == 0x10007
        with pytest.raises(GuestMemoryError):
            mem.translate_uaddr(uaddr - 1, 1)


def _two_region_peer():
    """A front-end with two regions at distinct gpa/uaddr backed by one memfd."""
    fd = os.memfd_create("peer")
    os.ftruncate(fd, 3 * MiB)
    specs = [(0, MiB, 0x5000_0000, 0), (0x100000000, MiB, 0x6000_0000, 2 * MiB)]
    return fd, specs


def test_range_straddling_two_regions_is_rejected(no_fd_leak):
    fd, specs = _two_region_peer()
    mem = memory.map_regions(specs, [fd, os.dup(fd)])
    try:
        mem.write(MiB - 4, b"1234")
        with pytest.raises(GuestMemoryError):
            mem.translate_gpa(MiB - 4, 8)
        # adjacent in uaddr space? no: but test the gap between regions
        with pytest.raises(GuestMemoryError):
            mem.translate_gpa(MiB, 1)
        mem.write(0x100000000, b"hi")
        assert mem.read(0x100000000, 2) == b"hi"
        assert mem.uaddr_to_gpa(0x6000_0000) == 0x100000000
    finally:
        mem.close()


def test_mmap_offset_honoured(no_fd_leak):
    fd = os.memfd_create("peer")
    os.ftruncate(fd, 2 * MiB)
    os.pwrite(fd, b"OFFSET", MiB + 0x123)
    # an offset that is not page aligned: the region starts inside a page
    mem = memory.map_regions([(0, 0x1000, 0x1000, MiB + 0x123)], [fd])
    try:
        assert mem.read(0, 6) == b"OFFSET"
    finally:
        mem.close()


@pytest.mark.parametrize("specs,why", [
    ([], "count"),
    ([(0, 0, 0, 0)], "zero-size"),
    ([(0, MiB, 0, 0), (MiB // 2, MiB, 2 * MiB, 0)], "overlap gpa"),
    ([(0, MiB, 0, 0), (2 * MiB, MiB, MiB // 2, 0)], "overlap uaddr"),
    ([((1 << 64) - 4096, 8192, 0, 0)], "wrap gpa"),
    ([(0, 8192, (1 << 64) - 4096, 0)], "wrap uaddr"),
    ([(0, MiB, 0, 4 * MiB)], "offset past end"),
    ([(0, 8 * MiB, 0, 0)], "size past end"),
])
def test_hostile_tables_rejected_without_fd_leak(specs, why, no_fd_leak):
    fds = []
    for _ in specs:
        fd = os.memfd_create("peer")
        os.ftruncate(fd, 2 * MiB)
        fds.append(fd)
    with pytest.raises(RegionTableError):
        memory.map_regions(specs, fds)
    for fd in fds:  # ownership was taken: every fd is closed
        with pytest.raises(OSError):
            os.fstat(fd)


def test_fd_count_mismatch_and_region_cap(no_fd_leak):
    fd = os.memfd_create("peer")
    os.ftruncate(fd, MiB)
    with pytest.raises(RegionTableError):
        memory.map_regions([(0, MiB, 0, 0), (MiB, MiB, MiB, 0)], [fd])
    fds = []
    for i in range(3):
        f = os.memfd_create("p")
        os.ftruncate(f, MiB)
        fds.append(f)
    with pytest.raises(RegionTableError):
        memory.map_regions([(i * MiB, MiB, i * MiB, 0) for i in range(3)], fds, max_regions=2)
    f = os.memfd_create("p")
    os.ftruncate(f, MiB)
    with pytest.raises(RegionTableError):
        memory.map_regions([(0, MiB, 0, 0)], [f], max_total=MiB - 1)


def test_non_file_fd_rejected(no_fd_leak):
    r, w = os.pipe()
    try:
        with pytest.raises(RegionTableError):
            memory.map_regions([(0, 4096, 0, 0)], [r])
    finally:
        os.close(w)


def test_numpy_view_is_live_and_survives_close(no_fd_leak):
    mem = memory.allocate(MiB, "memfd")
    v = mem.view(0x100, 16)
    v[:] = np.arange(16, dtype=np.uint8)
    assert mem.read(0x100, 16) == bytes(range(16))
    words = mem.view(0x200, 8, np.uint32)
    words[0] = 0xdeadbeef
    assert mem.read(0x200, 4) == (0xdeadbeef).to_bytes(4, "little")
    mem.close()          # view still alive: mapping outlives the table, no crash
    assert v[3] == 3
    del v, words


def test_table_for_c():
    with memory.allocate(MiB, "memfd", gpa=0x4000_0000) as mem:
        [(gpa, size, uaddr, host)] = mem.table()
        assert (gpa, size) == (0x4000_0000, MiB)
        assert host == mem.regions[0].host_addr != 0
        # the host address really is the mapping
        import ctypes
        ctypes.memmove(host + 8, b"viaC", 4)
        assert mem.read(0x4000_0008, 4) == b"viaC"


def test_no_mapping_leak_across_cycles():
    def maps():
        with open("/proc/self/maps") as f:
            return sum(1 for line in f if "memfd:peer" in line or "emu-" in line)
    start = maps()
    for _ in range(50):
        fd, specs = _two_region_peer()
        mem = memory.map_regions(specs, [fd, os.dup(fd)])
        mem.close()
    assert maps() == start


def test_close_is_idempotent_and_exception_safe(no_fd_leak):
    mem = memory.allocate(MiB, "memfd")
    mem.close()
    mem.close()
    with pytest.raises(GuestMemoryError):
        mem.translate_gpa(0, 1)


def test_page_size_constant():
    assert memory.PAGE_SIZE == mmap.PAGESIZE
