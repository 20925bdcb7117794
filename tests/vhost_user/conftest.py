"""Helpers for the vhost-user tests: a device that records what the Backend
tells it, a harness that drives a Backend through the real codec, guest RAM."""
from __future__ import annotations

import os

import pytest

from emu.memory import allocate
from emu.vhost_user.backend import IMPLEMENTED, Backend
from emu.vhost_user.codec import Decoder, encode, request
from emu.vhost_user.device import BackendDevice, DefaultMapper
from emu.vhost_user.messages import (FrontendRequest as F, MemoryRegion, MemoryTable,
                                     ProtocolFeature as PF, U64, VirtioFeature as VF,
                                     VringAddr, VringFd, VringState)

NET_FEATURES = VF.VERSION_1 | VF.NET_MRG_RXBUF | VF.LOG_ALL


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


class RecordingDevice(BackendDevice):
    """Records every call; checks the Backend's promises as it goes:
    memory changes only while no ring runs, start/stop alternate."""

    def __init__(self, features: int = NET_FEATURES, protocol_features: int = int(IMPLEMENTED),
                 queue_num: int = 1):
        self._features, self._pf, self._queue_num = int(features), int(protocol_features), queue_num
        self.calls: list[tuple] = []
        self.running: set[int] = set()
        self.stop_result: dict[int, int] = {}
        self.mem = None
        self.log = None
        self.config = bytearray(range(256))
        self.started_with: dict[int, dict] = {}

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def features(self):
        return self._features

    def protocol_features(self):
        return self._pf

    def queue_num(self):
        return self._queue_num

    def set_features(self, features):
        self.calls.append(("set_features", features))

    def memory_changed(self, mem):
        assert not self.running, f"memory changed under running rings {self.running}"
        self.mem = mem
        self.calls.append(("memory_changed", mem))

    def log_changed(self, log):
        self.log = log
        self.calls.append(("log_changed", log))

    def vring_start(self, vring):
        assert vring.index not in self.running
        assert vring.ready
        self.running.add(vring.index)
        self.started_with[vring.index] = dict(
            desc=vring.desc, avail=vring.avail, used=vring.used, desc_gpa=vring.desc_gpa,
            avail_gpa=vring.avail_gpa, used_gpa=vring.used_gpa, base=vring.base,
            kick=vring.kick_fd, inflight=vring.inflight)
        self.calls.append(("vring_start", vring.index))

    def vring_stop(self, vring):
        assert vring.index in self.running
        self.running.discard(vring.index)
        self.calls.append(("vring_stop", vring.index))
        return self.stop_result.get(vring.index, vring.base)

    def vring_enable(self, vring, enabled):
        self.calls.append(("vring_enable", vring.index, enabled))

    def vring_call_changed(self, vring):
        self.calls.append(("vring_call_changed", vring.index, vring.call_fd))

    def get_config(self, offset, size):
        return bytes(self.config[offset:offset + size])

    def set_config(self, offset, data, flags):
        self.config[offset:offset + len(data)] = data
        self.calls.append(("set_config", offset, bytes(data), flags))

    def set_status(self, status):
        super().set_status(status)
        self.calls.append(("set_status", status))

    def reset(self):
        super().reset()
        self.calls.append(("reset",))

    def send_rarp(self, mac):
        self.calls.append(("send_rarp", mac))

    def set_mtu(self, mtu):
        self.calls.append(("set_mtu", mtu))

    def disconnected(self):
        super().disconnected()
        self.calls.append(("disconnected",))


class RecordingMapper(DefaultMapper):
    """The default mapper, logging map/unmap into the device's call list."""

    def __init__(self, calls: list, max_regions: int = 8):
        super().__init__(max_regions)
        self.calls = calls
        self.live = []

    def map(self, specs, fds):
        mem = super().map(specs, fds)
        self.live.append(mem)
        self.calls.append(("map", mem))
        return mem

    def unmap(self, mem):
        assert not mem.closed
        self.live.remove(mem)
        self.calls.append(("unmap", mem))
        super().unmap(mem)


def ring_layout(base: int, num: int) -> tuple[int, int, int]:
    """(desc, avail, used) guest-physical addresses of a split ring at ``base``."""
    desc = base
    avail = desc + 16 * num
    used = (avail + 6 + 2 * num + 4095) // 4096 * 4096
    return desc, avail, used


class Harness:
    """Drives a Backend with requests that go through encode() and the
    Decoder, as they would on a socket.  fds passed to send() are dup'ed:
    the caller keeps its own."""

    def __init__(self, device: RecordingDevice | None = None, **backend_kw):
        self.device = device or RecordingDevice()
        self.mapper = RecordingMapper(self.device.calls, backend_kw.pop("max_regions", 8))
        self.backend = Backend(self.device, memory_mapper=self.mapper,
                               max_regions=self.mapper.max_regions, **backend_kw)
        self.own_fds: list[int] = []

    def send(self, req, payload=None, fds=(), need_reply=False):
        data, _ = encode(request(req, payload, fds, need_reply))
        dec = Decoder()
        dec.seed_dialect = self.backend.seed_dialect
        dec.feed(data, [os.dup(fd) for fd in fds])
        msg = dec.next_message()
        assert msg is not None and dec.next_message() is None
        replies = self.backend.handle(msg)
        for r in replies:                         # every reply must be encodable and decodable
            rdata, rfds = encode(r)
            rdec = Decoder()
            rdec.feed(rdata, [os.dup(fd) for fd in rfds])
            back = rdec.next_message()
            assert back is not None and back.is_reply
            for fd in back.fds:
                os.close(fd)
        return replies

    def reply(self, req, payload=None, fds=(), need_reply=False):
        replies = self.send(req, payload, fds, need_reply)
        assert len(replies) == 1, replies
        assert replies[0].is_reply and replies[0].request == req
        return replies[0]

    def ack(self, req, payload=None, fds=()) -> int:
        return self.reply(req, payload, fds, need_reply=True).payload.value

    def u64(self, req) -> int:
        return self.reply(req).payload.value

    def eventfd(self) -> int:
        fd = eventfd()
        self.own_fds.append(fd)
        return fd

    def negotiate(self, protocol_features: int | None = None, features: int | None = None):
        offered = self.u64(F.GET_FEATURES)
        offered_pf = self.u64(F.GET_PROTOCOL_FEATURES)
        pf = offered_pf & ~PF.EMU_VHOST_PCI & ~PF.NET_MTU if protocol_features is None \
            else protocol_features
        self.send(F.SET_PROTOCOL_FEATURES, U64(pf))
        self.send(F.SET_OWNER)
        self.send(F.SET_FEATURES, U64(offered if features is None else features))
        return offered, offered_pf

    def set_mem(self, mem, need_reply=True) -> int | None:
        table = MemoryTable(tuple(MemoryRegion(r.gpa, r.size, r.uaddr, r.mmap_offset)
                                  for r in mem.regions))
        replies = self.send(F.SET_MEM_TABLE, table, tuple(r.fd for r in mem.regions), need_reply)
        return replies[0].payload.value if replies else None

    def ring_addr(self, mem, index: int, base_gpa: int, num: int, flags=0, log=0) -> VringAddr:
        desc, avail, used = ring_layout(base_gpa, num)
        u = lambda gpa: mem.translate_gpa(gpa)[0].uaddr + gpa - mem.translate_gpa(gpa)[0].gpa
        return VringAddr(index, flags, u(desc), u(used), u(avail), log)

    def setup_ring(self, mem, index: int, base_gpa: int, num: int = 256, base: int = 0,
                   kick: bool = True, call: bool = True) -> None:
        self.send(F.SET_VRING_NUM, VringState(index, num))
        self.send(F.SET_VRING_BASE, VringState(index, base))
        self.send(F.SET_VRING_ADDR, self.ring_addr(mem, index, base_gpa, num))
        if kick:
            self.send(F.SET_VRING_KICK, VringFd(index), (self.eventfd(),))
        if call:
            self.send(F.SET_VRING_CALL, VringFd(index), (self.eventfd(),))

    def refused(self) -> list[str]:
        return [name for name, _ in self.backend.refused]

    def close(self):
        self.backend.close()
        for fd in self.own_fds:
            os.close(fd)
        self.own_fds = []


@pytest.fixture
def ram():
    """2 MiB of guest RAM in a memfd at gpa 0."""
    mem = allocate(2 << 20, "memfd", name="test")
    yield mem
    mem.close()


@pytest.fixture
def harness(no_fd_leak):
    h = Harness()
    yield h
    h.close()
    assert not h.mapper.live, "mapped tables left behind"


@pytest.fixture
def vu():
    """The helpers above, for test modules (a non-package test directory
    cannot import its conftest reliably)."""
    import types
    return types.SimpleNamespace(Harness=Harness, RecordingDevice=RecordingDevice,
                                 RecordingMapper=RecordingMapper, eventfd=eventfd,
                                 ring_layout=ring_layout, NET_FEATURES=NET_FEATURES)


@pytest.fixture
def arun():
    """Run a coroutine to completion on a fresh event loop, with a timeout."""
    import asyncio

    def run(coro, timeout: float = 10.0):
        return asyncio.run(asyncio.wait_for(coro, timeout))
    return run
