"""Checks on fds a peer sends, and the small shared mappings that are not
guest RAM: the dirty log (SET_LOG_BASE) and the inflight area
(GET/SET_INFLIGHT_FD)."""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import stat

from emu.errors import RegionTableError
from emu.memory import check_mappable
from emu.spec.virtio_ring import num_valid
from emu.spec.virtio_ring_packed import num_valid as packed_num_valid
from emu.vhost_user.errors import ProtocolViolation

U64_MAX = (1 << 64) - 1


def fd_kind(fd: int) -> str:
    """``"eventfd"``, ``"socket"``, ``"file"``, ``"pipe"`` or ``"other"``."""
    try:
        st = os.fstat(fd)
    except OSError:
        return "closed"
    if stat.S_ISSOCK(st.st_mode):
        return "socket"
    if stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "file"
    if stat.S_ISFIFO(st.st_mode):
        return "pipe"
    try:
        if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]":
            return "eventfd"
    except OSError:
        pass
    return "other"


def check_eventfd(fd: int, what: str) -> None:
    """Kick/call/err fds must be eventfds: anything else (a memfd, a socket)
    would make the data path read or write the wrong object."""
    kind = fd_kind(fd)
    if kind != "eventfd":
        raise ProtocolViolation(f"{what} fd is {_a(kind)}, not an eventfd")


def check_unix_socket(fd: int, what: str) -> None:
    kind = fd_kind(fd)
    if kind != "socket":
        raise ProtocolViolation(f"{what} fd is {_a(kind)}, not a socket")


def _a(kind: str) -> str:
    return "closed" if kind == "closed" else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


class SharedMapping:
    """``[offset, offset+size)`` of a file-like fd, mapped shared read/write.
    ``addr`` is the host address of byte ``offset``."""

    def __init__(self, fd: int, size: int, offset: int, what: str):
        if size <= 0 or offset < 0 or offset + size > U64_MAX:
            raise ProtocolViolation(f"{what}: bad size 0x{size:x} / offset 0x{offset:x}")
        try:                    # type, access mode, seals, size: the same checks as guest RAM
            check_mappable(fd, offset, size, what=f"{what} fd")
        except RegionTableError as e:
            raise ProtocolViolation(str(e)) from None
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        self._delta = offset - base
        try:
            self._mm = mmap.mmap(fd, self._delta + size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
        except (OSError, ValueError, OverflowError) as e:
            raise ProtocolViolation(f"{what}: mmap failed: {e}") from None
        buf = ctypes.c_char.from_buffer(self._mm)
        try:
            self.addr = ctypes.addressof(buf) + self._delta
        finally:
            del buf
        self.size = size

    def view(self) -> memoryview:
        return memoryview(self._mm)[self._delta:self._delta + self.size]

    @property
    def closed(self) -> bool:
        return self._mm is None

    def close(self) -> None:
        mm, self._mm = self._mm, None
        self.addr = 0
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass   # a view is alive: the last view's release unmaps


LOG_PAGE = 4096


class DirtyLog:
    """The dirty-page bitmap of SET_LOG_BASE: bit ``p`` of the log is page
    ``p = gpa / 4096`` of guest memory.  The C data path marks it atomically
    at ``addr``; :meth:`mark` is the Python path (tests, control plane)."""

    def __init__(self, fd: int, mmap_size: int, mmap_offset: int):
        """Takes ownership of ``fd`` (closed before return)."""
        try:
            self._map = SharedMapping(fd, mmap_size, mmap_offset, "dirty log")
        finally:
            os.close(fd)
        self.size = mmap_size

    @property
    def addr(self) -> int:
        return self._map.addr

    def mark(self, gpa: int, length: int) -> None:
        """Set the bits of every page in ``[gpa, gpa+length)``.  A page past
        the log is refused, never written."""
        if length <= 0:
            return
        first, last = gpa // LOG_PAGE, (gpa + length - 1) // LOG_PAGE
        if last // 8 >= self.size:
            raise ProtocolViolation(f"dirty log of {self.size} bytes cannot log page {last}")
        view = self._map.view()
        try:
            for page in range(first, last + 1):
                view[page // 8] |= 1 << (page % 8)
        finally:
            view.release()

    def is_dirty(self, gpa: int) -> bool:
        page = gpa // LOG_PAGE
        if page // 8 >= self.size:
            return False
        view = self._map.view()
        try:
            return bool(view[page // 8] >> (page % 8) & 1)
        finally:
            view.release()

    def close(self) -> None:
        self._map.close()


# -- inflight area (INFLIGHT_SHMFD): vhost-user.rst's queue regions --------------------
INFLIGHT_ALIGNMENT = 64
INFLIGHT_VERSION = 1
# split (QueueRegionSplit / DescStateSplit, libvhost-user's and DPDK's)
INFLIGHT_HEADER = 16      # u64 features, u16 version, u16 desc_num, u16 last_batch_head, u16 used_idx
INFLIGHT_DESC = 16        # u8 inflight, u8 pad[5], u16 next, u64 counter
# packed (QueueRegionPacked / DescStatePacked, DPDK's rte_vhost_inflight_info_packed)
INFLIGHT_PACKED_HEADER = 32   # u64 features, u16 version, desc_num, free_head, old_free_head,
                              # used_idx, old_used_idx, u8 used_wrap_counter,
                              # old_used_wrap_counter, pad[7] (to the u64 of desc[0])
INFLIGHT_PACKED_DESC = 32     # u8 inflight, pad, u16 next, last, num, u64 counter,
                              # u16 id, flags, u32 len, u64 addr
INFLIGHT_P_DESC_NUM, INFLIGHT_P_USED_WRAP, INFLIGHT_P_OLD_USED_WRAP = 10, 20, 21
INFLIGHT_P_NEXT = 2           # in a DescStatePacked


def inflight_queue_size(queue_size: int, packed: bool = False) -> int:
    """Bytes of one queue's inflight region (DPDK's get_pervq_shm_size_split
    / _packed)."""
    if packed:
        raw = INFLIGHT_PACKED_DESC * queue_size + INFLIGHT_PACKED_HEADER
    else:
        raw = INFLIGHT_DESC * queue_size + INFLIGHT_HEADER
    return (raw + INFLIGHT_ALIGNMENT - 1) // INFLIGHT_ALIGNMENT * INFLIGHT_ALIGNMENT


class InflightArea:
    """``num_queues`` consecutive per-queue regions in one fd, in the split
    or (``packed``) the packed format: the rings' format, negotiated before
    (as DPDK: VIRTIO_F_RING_PACKED in SET_FEATURES).  Created by the
    back-end for GET_INFLIGHT_FD (a sealed memfd it keeps and hands out), or
    received back with SET_INFLIGHT_FD after a back-end restart."""

    def __init__(self, fd: int, mmap_size: int, mmap_offset: int, num_queues: int,
                 queue_size: int, packed: bool = False, fresh: bool = False):
        """Takes ownership of ``fd``: it stays open (it is handed to the
        front-end) until :meth:`close`.  ``fresh``: a zeroed area of ours to
        initialise (a packed region's free list); a received one is kept."""
        self.fd = fd
        self.packed = packed
        try:
            valid = packed_num_valid(queue_size) if packed else num_valid(queue_size)
            if num_queues < 1 or not valid:
                raise ProtocolViolation(
                    f"inflight area for {num_queues} queues of {queue_size} entries")
            need = num_queues * inflight_queue_size(queue_size, packed)
            if mmap_size < need:
                raise ProtocolViolation(f"inflight area of 0x{mmap_size:x} bytes, "
                                        f"{num_queues}x{queue_size} need 0x{need:x}")
            self._map = SharedMapping(fd, mmap_size, mmap_offset, "inflight area")
        except BaseException:
            os.close(fd)
            self.fd = None
            raise
        self.mmap_size, self.mmap_offset = mmap_size, mmap_offset
        self.num_queues, self.queue_size = num_queues, queue_size
        view = self._map.view()
        try:
            for q in range(num_queues):   # as libvhost-user: desc_num is ours to set
                off = q * inflight_queue_size(queue_size, packed)
                view[off + 10:off + 12] = queue_size.to_bytes(2, "little")
                if packed and fresh:      # as DPDK: both wrap counters 1, a free list 0, 1, ...
                    import numpy as np    # here only: VM2's start-up path imports this module
                    view[off + INFLIGHT_P_USED_WRAP] = 1
                    view[off + INFLIGHT_P_OLD_USED_WRAP] = 1
                    descs = np.frombuffer(view, np.uint16, queue_size * INFLIGHT_PACKED_DESC // 2,
                                          off + INFLIGHT_PACKED_HEADER)
                    descs[INFLIGHT_P_NEXT // 2::INFLIGHT_PACKED_DESC // 2] = \
                        np.arange(1, queue_size + 1, dtype=np.uint16)
                    del descs
        finally:
            view.release()

    @classmethod
    def create(cls, num_queues: int, queue_size: int, packed: bool = False) -> InflightArea:
        """A fresh zeroed area in a memfd sealed against resizing (so neither
        side can make the other's mapping fault)."""
        valid = packed_num_valid(queue_size) if packed else num_valid(queue_size)
        if num_queues < 1 or not valid:
            raise ProtocolViolation(f"inflight area for {num_queues} queues of {queue_size} entries")
        size = num_queues * inflight_queue_size(queue_size, packed)
        fd = os.memfd_create("emu-vhost-inflight", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, size, 0, num_queues, queue_size, packed, fresh=True)

    def queue_addr(self, index: int) -> int:
        """Host address of queue ``index``'s region (what the C engine takes)."""
        if not 0 <= index < self.num_queues:
            raise IndexError(index)
        return self._map.addr + index * inflight_queue_size(self.queue_size, self.packed)

    def queue_view(self, index: int) -> memoryview:
        size = inflight_queue_size(self.queue_size, self.packed)
        return self._map.view()[index * size:(index + 1) * size]

    def close(self) -> None:
        self._map.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
