"""emu front-end <-> emu back-end over a real socketpair: every message, the
back-end request channel, and the vhost-pci extension with its bit-4 rule."""
from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading

import pytest

from emu.memory import allocate
from emu.vhost_user.backend import IMPLEMENTED, Backend
from emu.vhost_user.errors import ProtocolViolation
from emu.vhost_user.client import FrontendClient, FrontendVring
from emu.vhost_user.frontend import BackendFeatures, Frontend, Ignored
from emu.vhost_user.messages import (BackendRequest as B, Config, FrontendRequest as F, Inflight,
                                     Iotlb, Log, ProtocolFeature as PF, Rarp, U64,
                                     VirtioFeature as VF, VringFd, VringState)
from emu.vhost_user.transport import BackendConnection
from emu.vhost_user.wirelog import WireLog

ALL_PF = int(IMPLEMENTED)
START_FEATURES = VF.VERSION_1 | VF.PROTOCOL_FEATURES | VF.NET_MRG_RXBUF


class Pair:
    def __init__(self, vu, *, device=None, backend_mode="auto", frontend_mode="auto",
                 frontend_pf=ALL_PF, frontend_features=(1 << 64) - 1, **callbacks):
        self.device = device or vu.RecordingDevice()
        self.brecs, self.frecs = [], []
        self.backend = Backend(self.device, vhost_pci=backend_mode,
                               wire_log=WireLog(self.brecs.append))
        a, b = socket.socketpair()
        self.conn = BackendConnection(a, self.backend)
        self.client = FrontendClient(sock=b, timeout=2.0, frontend=Frontend(
            features=frontend_features, protocol_features=frontend_pf, vhost_pci=frontend_mode,
            wire_log=WireLog(self.frecs.append)), **callbacks)
        self.fds: list[int] = []
        self.ram = allocate(4 << 20, "memfd", name="pair")

    def eventfd(self):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.fds.append(fd)
        return fd

    def vrings(self, vu, bases=(0, 0)):
        out = []
        for i, base in enumerate(bases):
            desc, avail, used = vu.ring_layout(0x100000 * (i + 1), 256)
            out.append(FrontendVring(i, 256, desc, avail, used, base=base,
                                     kick_fd=self.eventfd(), call_fd=self.eventfd()))
        return out

    async def close(self):
        await self.client.close()
        await asyncio.wait_for(self.conn.done.wait(), 2)
        self.ram.close()
        for fd in self.fds:
            os.close(fd)


async def _settle():
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)


def test_full_session(no_fd_leak, vu, arun):
    async def main():
        p = Pair(vu)
        await p.client.connect()
        calls = {0: p.eventfd(), 1: p.eventfd()}
        neg = await p.client.handshake(vring_calls=calls)
        assert neg.features == p.device.features() | VF.PROTOCOL_FEATURES
        assert neg.protocol_features & (PF.MQ | PF.REPLY_ACK | PF.BACKEND_REQ | PF.STATUS)
        assert neg.queue_num == 1 and neg.max_mem_slots == 8 and neg.vhost_pci
        assert p.backend.backend_req_fd is not None and p.conn.channel is not None
        rings = p.vrings(vu, bases=(0, 7))
        await p.client.start(START_FEATURES, p.ram, rings)
        assert p.device.running == {0, 1}
        b0 = p.backend.vrings[0]
        assert (b0.desc_gpa, b0.avail_gpa, b0.used_gpa) == (rings[0].desc, rings[0].avail, rings[0].used)
        assert b0.enabled and p.device.get_status() == 0xF
        p.ram.write(rings[1].desc, b"descriptor")
        assert ctypes.string_at(p.backend.vrings[1].desc, 10) == b"descriptor"
        p.device.stop_result = {0: 12}
        assert await p.client.stop() == {0: 12, 1: 7}
        assert p.device.running == set()
        await p.close()
        sent = [r["request"] for r in p.frecs if r.get("dir") == "tx"]
        got = [r["request"] for r in p.brecs if r.get("dir") == "rx"]
        assert sent == got
        assert sent[:8] == ["GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES",
                            "GET_QUEUE_NUM", "GET_MAX_MEM_SLOTS", "SET_BACKEND_REQ_FD",
                            "SET_OWNER", "SET_VRING_CALL"]
        assert sent.count("GET_VRING_BASE") == 2 and "SET_STATUS" in sent
        assert all(r["flags"] == 5 for r in p.brecs if r.get("dir") == "tx")
    arun(main())


def test_every_other_request_over_the_socket(no_fd_leak, vu, arun):
    async def main():
        p = Pair(vu, backend_mode="off", frontend_mode="off")
        await p.client.connect()
        neg = await p.client.handshake()
        assert not neg.vhost_pci and neg.protocol_features & PF.NET_MTU
        c = p.client
        await c.start(START_FEATURES | VF.LOG_ALL, p.ram, p.vrings(vu))
        assert (await c.call(F.GET_CONFIG, Config(0, 6, 0, bytes(6)))).payload.data == bytes(range(6))
        await c._acked(F.SET_CONFIG, Config(6, 2, 0, b"\x01\x02"))
        await c._acked(F.SEND_RARP, Rarp(bytes.fromhex("525400aabbcc")))
        await c._acked(F.NET_SET_MTU, U64(1500))
        await c._acked(F.SET_VRING_ERR, VringFd(0), (p.eventfd(),))
        assert await c.get_u64(F.GET_STATUS) == 0xF
        extra = allocate(1 << 20, "memfd", gpa=1 << 30)
        try:
            await c.add_mem_reg(extra.regions[0])
            assert len(p.backend.memory.regions) == 2
            await c.rem_mem_reg(extra.regions[0])
            assert len(p.backend.memory.regions) == 1
        finally:
            extra.close()
        logfd = os.memfd_create("log", os.MFD_CLOEXEC)
        os.ftruncate(logfd, 4096)
        try:
            assert (await c.call(F.SET_LOG_BASE, Log(4096, 0), (logfd,))).payload.value == 0
        finally:
            os.close(logfd)
        await c._acked(F.SET_LOG_FD, None, (p.eventfd(),))
        with pytest.raises(ProtocolViolation, match="refused IOTLB_MSG"):
            await c._acked(F.IOTLB_MSG, Iotlb(0, 1, 0, 3, 2))
        await c.stop()
        reply = await c.call(F.GET_INFLIGHT_FD, Inflight(0, 0, 2, 128))
        assert reply.payload.mmap_size == 2 * 2112 and len(reply.fds) == 1
        await c._acked(F.SET_INFLIGHT_FD, reply.payload, reply.fds)
        os.close(reply.fds[0])
        await c._acked(F.RESET_DEVICE)
        await c.call(F.RESET_OWNER)
        assert await c.get_u64(F.GET_FEATURES)        # still alive
        names = {n for n, *_ in p.device.calls}
        assert {"set_config", "send_rarp", "set_mtu", "log_changed", "reset"} <= names
        await p.close()
        assert set(FR.name for FR in F) - {r.get("request") for r in p.brecs} == {
            "SET_VRING_ENDIAN", "CREATE_CRYPTO_SESSION", "CLOSE_CRYPTO_SESSION", "POSTCOPY_ADVISE",
            "POSTCOPY_LISTEN", "POSTCOPY_END", "GPU_SET_SOCKET", "VRING_KICK",
            "GET_SHARED_OBJECT", "SET_DEVICE_STATE_FD", "CHECK_DEVICE_STATE"}
    arun(main())


def test_backend_request_channel(no_fd_leak, vu, arun):
    async def main():
        seen = []
        p = Pair(vu, on_config_change=lambda: seen.append("config"),
                 on_vring_call=lambda i: seen.append(("call", i)),
                 on_vring_err=lambda i: seen.append(("err", i)))
        await p.client.connect()
        await p.client.handshake()
        assert p.backend.backend_request(B.CONFIG_CHANGE_MSG, need_reply=True)
        assert p.backend.backend_request(B.VRING_CALL, VringState(1, 0))
        assert p.backend.backend_request(B.VRING_ERR, VringState(0, 0))
        assert p.backend.backend_request(B.IOTLB_MSG, Iotlb(0, 1, 0, 1, 1), need_reply=True)
        await _settle()
        assert seen == ["config", ("call", 1), ("err", 0)]
        channel_rx = [r for r in p.brecs if r.get("channel") == "backend-req" and r["dir"] == "rx"]
        assert [(r["request"], r["payload"]) for r in channel_rx] == [
            ("CONFIG_CHANGE_MSG", {"value": 0}), ("IOTLB_MSG", {"value": 1})]
        assert [n for n, _ in p.backend.refused] == ["IOTLB_MSG"]
        await p.close()
    arun(main())


# -- the vhost-pci extension --------------------------------------------------------------------
def test_extension_active_push_subset(no_fd_leak, vu, arun):
    async def main():
        got = []
        p = Pair(vu, on_backend_features=got.append)
        await p.client.connect()
        neg = await p.client.handshake()
        assert neg.vhost_pci and p.backend.vhost_pci_active
        assert neg.protocol_features & (PF.VHOST_PCI | PF.EMU_VHOST_PCI) == PF.VHOST_PCI | PF.EMU_VHOST_PCI
        await p.client.start(START_FEATURES, p.ram, p.vrings(vu))
        # VM2's driver negotiated less than VM1 did: pushed from a device thread
        t = threading.Thread(target=p.backend.push_features, args=(VF.VERSION_1,))
        t.start()
        t.join()
        await _settle()
        assert got == [VF.VERSION_1]
        pushed = [r for r in p.brecs if r.get("dir") == "tx" and r["request"] == "SET_FEATURES"
                  and r["flags"] == 1]              # a request from the back-end, not a reply
        assert [r["payload"] for r in pushed] == [{"value": hex(VF.VERSION_1)}]
        # NET_SET_MTU means nothing here: bit 4 is VHOST_PCI
        with pytest.raises(ProtocolViolation):
            await p.client._acked(F.NET_SET_MTU, U64(1500))
        await p.close()
    arun(main())


def test_push_before_the_handshake_is_sent_right_after_it(no_fd_leak, vu, arun):
    async def main():
        got = []
        p = Pair(vu, on_backend_features=got.append)
        p.backend.push_features(VF.VERSION_1 | VF.NET_MRG_RXBUF)
        await p.client.connect()
        await p.client.handshake()
        await _settle()
        assert got == [VF.VERSION_1 | VF.NET_MRG_RXBUF]
        order = [r["request"] for r in p.brecs if "request" in r]
        i = order.index("SET_PROTOCOL_FEATURES")
        assert order[i + 1] == "SET_FEATURES"
        await p.close()
    arun(main())


def test_push_of_a_superset_is_ignored(no_fd_leak, vu, arun):
    async def main():
        got = []
        p = Pair(vu, on_backend_features=got.append)
        await p.client.connect()
        await p.client.handshake()
        await p.client.start(START_FEATURES, p.ram, p.vrings(vu))
        p.backend.push_features(VF.VERSION_1 | VF.EVENT_IDX)     # EVENT_IDX was not negotiated
        await _settle()
        assert got == []
        ignored = [e for e in p.client.events if isinstance(e, Ignored)]
        assert ignored and isinstance(ignored[0].error, ProtocolViolation)
        assert "not a subset" in str(ignored[0].error)
        assert await p.client.get_u64(F.GET_QUEUE_NUM) == 1      # connection unharmed
        await p.close()
    arun(main())


def test_bit4_without_marker_means_net_mtu(no_fd_leak, vu, arun):
    """A back-end that offers bit 4 but not the marker (a stock one): plain
    semantics, no unsolicited message even if the device pushes."""
    async def main():
        got = []
        dev = vu.RecordingDevice(protocol_features=ALL_PF)     # includes NET_MTU
        p = Pair(vu, device=dev, backend_mode="off", on_backend_features=got.append)
        await p.client.connect()
        neg = await p.client.handshake()
        assert neg.protocol_features & PF.NET_MTU and not neg.protocol_features & PF.EMU_VHOST_PCI
        assert not neg.vhost_pci and not p.backend.vhost_pci_active
        await p.client.start(START_FEATURES, p.ram, p.vrings(vu))
        p.backend.push_features(VF.VERSION_1)
        await p.client._acked(F.NET_SET_MTU, U64(9000))
        await _settle()
        assert got == [] and ("set_mtu", 9000) in dev.calls
        assert not [r for r in p.brecs if r.get("dir") == "tx" and r["request"] == "SET_FEATURES"
                    and r["flags"] == 1]
        assert not [e for e in p.client.events if isinstance(e, (BackendFeatures, Ignored))]
        await p.close()
    arun(main())


def test_seed_mode_uses_bit4_alone(no_fd_leak, vu, arun):
    async def main():
        got = []
        p = Pair(vu, backend_mode="seed", frontend_mode="seed", on_backend_features=got.append)
        await p.client.connect()
        neg = await p.client.handshake()
        assert neg.vhost_pci and not neg.protocol_features & PF.EMU_VHOST_PCI
        p.backend.push_features(VF.VERSION_1)
        await _settle()
        assert got == [VF.VERSION_1]
        await p.close()
    arun(main())


def test_auto_frontend_against_seed_backend_stays_plain(no_fd_leak, vu, arun):
    """emu's default front-end never takes bit 4 alone as vhost-pci."""
    async def main():
        got = []
        p = Pair(vu, backend_mode="seed", on_backend_features=got.append)
        await p.client.connect()
        neg = await p.client.handshake()
        assert not neg.vhost_pci and neg.protocol_features & PF.NET_MTU
        p.backend.push_features(VF.VERSION_1)     # the seed back-end thinks it is on
        await _settle()
        assert got == []
        assert [e for e in p.client.events if isinstance(e, Ignored)]
        await p.close()
    arun(main())
