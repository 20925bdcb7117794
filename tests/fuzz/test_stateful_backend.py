"""Stateful fuzzing of the vhost-user back-end in-process: emu's Backend
with the default mapper, driven through the real codec by
:class:`vu_machine.VhostUserMachine` (any message, any order, fds of every
kind).  After every step the device's promises hold (memory changes only
while no ring runs, start/stop alternate); after every connection the
process holds exactly the fds it held before, its mappings are back, and a
well-behaved session (handshake, table, ring, GET_VRING_BASE) still works.

CI: a bounded run; ``EMU_FUZZ_LONG=1``: the long run (figures in
docs/security.md).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from emu.errors import PeerError
from emu.memory import allocate
from emu.vhost_user.backend import IMPLEMENTED, Backend
from emu.vhost_user.codec import Decoder, encode, request
from emu.vhost_user.counters import PeerCounters
from emu.vhost_user.device import BackendDevice, DefaultMapper
from emu.vhost_user.messages import (FrontendRequest as F, MemoryRegion, MemoryTable, U64,
                                     VirtioFeature as VF, VringAddr, VringFd, VringState)

from .fuzz_common import fd_set, map_count
from .vu_machine import Tally, VhostUserMachine

LONG = os.environ.get("EMU_FUZZ_LONG") == "1"
MAPS_SLACK = 4


class CheckingDevice(BackendDevice):
    def __init__(self):
        self.running: set[int] = set()

    def features(self):
        return VF.VERSION_1 | VF.INDIRECT_DESC | VF.NET_MRG_RXBUF | VF.LOG_ALL

    def protocol_features(self):
        return int(IMPLEMENTED)

    def memory_changed(self, mem):
        assert not self.running, f"memory changed under running rings {self.running}"

    def vring_start(self, v):
        assert v.index not in self.running
        self.running.add(v.index)

    def vring_stop(self, v):
        assert v.index in self.running
        self.running.discard(v.index)
        return v.base


class InProcess:
    """The transport: bytes and fds into a Decoder and a Backend, as a
    socket would deliver them (the fds duplicated: the sender keeps its own)."""

    def __init__(self):
        self.counters = PeerCounters()
        self.good_ram = allocate(2 << 20, "memfd", name="fuzz-good")
        self.good_kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.rebase()
        self.open()

    def rebase(self):
        self.base_fds = fd_set()
        self.base_maps = map_count()

    def open(self):
        self.device = CheckingDevice()
        self.backend = Backend(self.device, counters=self.counters, memory_mapper=DefaultMapper(8))
        self.dec = Decoder()
        self.closed = False

    def exchange(self, data, fds, expect):
        if self.closed:
            return None
        self.dec.feed(data, [os.dup(fd) for fd in fds])
        replies = []
        try:
            while (msg := self.dec.next_message()) is not None:
                replies += self.backend.handle(msg)
                self.dec.seed_dialect = self.backend.seed_dialect
        except PeerError:                      # malformed, or a reply that cannot be given
            self.close()
            return None
        for r in replies:
            encode(r)                          # emu never sends what it would refuse
        if not expect or not replies:
            return None
        last = replies[-1]
        return type(last)(last.request, last.flags, last.payload, tuple(os.dup(f) for f in last.fds))

    def close(self):
        if not self.closed:
            self.closed = True
            self.backend.close()
            self.dec.close()
        assert not self.device.running, "rings still running after close"

    def settle(self):
        pass                       # handle() is synchronous: always settled

    def check_alive(self):
        assert not self.device.running or self.backend.memory is not None

    def after_close(self, owned=frozenset()):
        def extra():
            return {fd: os.readlink(f"/proc/self/fd/{fd}")
                    for fd in fd_set() - self.base_fds - set(owned)}
        self._no_leak(extra, "after the connection")
        assert map_count() <= self.base_maps + MAPS_SLACK, (self.base_maps, map_count())
        self._good_session()
        self._no_leak(extra, "after a good session")

    @staticmethod
    def _no_leak(extra, when):
        left = extra()
        if left:
            for fd in left:              # clean up first: the next example must start clean
                os.close(fd)
            raise AssertionError(f"fds left {when}: {left}")

    def _good_session(self):
        b = Backend(CheckingDevice(), memory_mapper=DefaultMapper(8))

        def go(req, payload=None, fds=(), need_reply=False):
            return b.handle(request(req, payload, tuple(os.dup(f) for f in fds), need_reply))
        try:
            offered = go(F.GET_FEATURES)[0].payload.value
            go(F.SET_FEATURES, U64(offered & (VF.VERSION_1 | VF.PROTOCOL_FEATURES)))
            r = self.good_ram.regions[0]
            table = MemoryTable((MemoryRegion(r.gpa, r.size, r.uaddr, 0),))
            assert go(F.SET_MEM_TABLE, table, (r.fd,), True)[0].payload.value == 0
            go(F.SET_VRING_NUM, VringState(0, 64))
            go(F.SET_VRING_ADDR, VringAddr(0, 0, r.uaddr, r.uaddr + 8192, r.uaddr + 4096, 0))
            go(F.SET_VRING_KICK, VringFd(0), (self.good_kick,))
            go(F.SET_VRING_ENABLE, VringState(0, 1))
            assert 0 in b.device.running, "a good ring set-up did not start the ring"
            assert go(F.GET_VRING_BASE, VringState(0, 0))[0].payload.index == 0
        finally:
            b.close()


def test_backend_stateful():
    transport = InProcess()

    class Machine(VhostUserMachine):
        transport_factory = staticmethod(lambda: transport)
        tally = Tally()

        def teardown(self):
            super().teardown()
            transport.open()                      # the next example starts connected
    try:
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=3000 if LONG else 200, stateful_step_count=80 if LONG else 40,
            deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        transport.close()
        print(f"in-process back-end: {Machine.tally}")
