"""emu.eventfd: reads and writes that a peer holding the same eventfd
cannot turn into a hang (docs/security.md, class 2).

The peer's powers, all exercised here on one open file description, as
SCM_RIGHTS gives it: clear O_NONBLOCK, read the counter dry, fill it to
2^64 - 2.  Each test would hang without the fix: the deadlines are
pytest-timeout's (a hang fails the test), never a measured duration.
"""
from __future__ import annotations

import fcntl
import os
import threading

import pytest

from emu import eventfd, ring

FULL = (1 << 64) - 2


def peer_eventfd(count: int = 0) -> int:
    """An eventfd as a hostile peer leaves it: blocking, at ``count``."""
    fd = os.eventfd(0, os.EFD_CLOEXEC)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    if count:
        os.eventfd_write(fd, count)
    return fd


@pytest.fixture
def fd():
    f = peer_eventfd()
    yield f
    os.close(f)


def test_the_kernel_honours_rwf_nowait_on_eventfd_reads(fd):
    """The whole read side rests on this (measured on 6.18): a kernel that
    refused it would send emu down the racy poll-then-read path."""
    with pytest.raises(BlockingIOError):
        os.preadv(fd, [bytearray(8)], -1, os.RWF_NOWAIT)
    assert eventfd.drain(fd) == 0
    assert eventfd.stats()["racy_reads"] == 0


def test_drain_of_an_empty_blocking_eventfd_returns_at_once(fd):
    assert eventfd.drain(fd) == 0
    os.eventfd_write(fd, 5)
    assert eventfd.drain(fd) == 5
    assert eventfd.drain(fd) == 0


def test_one_eventfd_for_two_readers(fd):
    """Two fd numbers, one counter: the second reader finds it empty."""
    twin = os.dup(fd)
    try:
        os.eventfd_write(fd, 1)
        assert eventfd.drain(fd) + eventfd.drain(twin) == 1
    finally:
        os.close(twin)


def test_signal_into_a_full_blocking_counter_is_interrupted(fd):
    os.eventfd_write(fd, FULL)
    before = eventfd.stats()["interrupted_writes"]
    assert eventfd.signal(fd) is False                  # held <= 2 guard periods, then let go
    assert eventfd.stats()["interrupted_writes"] > before
    assert eventfd.stats()["guard"] == "guarded"
    assert eventfd.drain(fd) == FULL                     # nothing was added, nothing lost
    assert eventfd.signal(fd) is True and eventfd.drain(fd) == 1


def test_the_c_data_path_signal_is_bounded_too(fd):
    """emu_dev_signal (the pump's call) goes through the same guarded write."""
    os.eventfd_write(fd, FULL)
    table = ring.RegionTable()
    buf = bytearray(4096)
    from emu._ring import ffi
    base = int(ffi.cast("uintptr_t", ffi.from_buffer(buf)))
    q = ring.DeviceQueue(table, 8, base, base + 1024, base + 2048, call_fd=fd)
    q.signal()
    assert eventfd.drain(fd) == FULL


def test_a_held_write_stalls_only_its_own_thread(fd):
    """The GIL is released while a write is held: other threads run."""
    os.eventfd_write(fd, FULL)
    other = peer_eventfd()
    try:
        t = threading.Thread(target=eventfd.signal, args=(fd,))
        t.start()
        for _ in range(1000):                            # this thread is not held meanwhile
            assert eventfd.signal(other) and eventfd.drain(other) == 1
        t.join(30)
        assert not t.is_alive()
    finally:
        os.close(other)


def test_many_threads_each_get_a_slot_and_let_it_go(fd):
    """Threads come and go (pumps are rebuilt): slots are reused, every
    held write is interrupted."""
    os.eventfd_write(fd, FULL)
    for _ in range(3):
        ts = [threading.Thread(target=eventfd.signal, args=(fd,)) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
            assert not t.is_alive()
    assert eventfd.drain(fd) == FULL


def test_a_forked_child_gets_a_guard_of_its_own(fd):
    os.eventfd_write(fd, FULL)
    assert eventfd.signal(fd) is False          # the parent's guard is running
    pid = os.fork()
    if pid == 0:
        try:
            ok = eventfd.signal(fd) is False and eventfd.stats()["guard"] == "guarded"
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_bad_fds_raise(fd):
    """(That a kick/call fd is an eventfd at all is checked where it is
    received: ``emu.vhost_user.shm.check_eventfd``.)"""
    with pytest.raises(OSError):
        eventfd.signal(-1)
    with pytest.raises(OSError):
        eventfd.drain(-1)
