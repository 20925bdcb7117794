"""emu's vhost-user against real peers: DPDK 22.11 testpmd (virtio-user
front-end, vhost back-end) and QEMU 7.2 (front-end, with and without a
driver).  Command lines are the ones that work on this machine
(reference real-peers.md): no hugepages, a unique --file-prefix per run,
SIGINT to stop testpmd, a timeout on everything."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal

import pytest

from emu.memory import allocate
from emu.vhost_user.backend import IMPLEMENTED, Backend
from emu.vhost_user.client import FrontendClient, FrontendVring
from emu.vhost_user.frontend import Frontend
from emu.vhost_user.messages import ProtocolFeature as PF, VirtioFeature as VF
from emu.vhost_user.shm import fd_kind
from emu.vhost_user.transport import BackendServer
from emu.vhost_user.wirelog import WireLog

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

TESTPMD = shutil.which("dpdk-testpmd") or "dpdk-testpmd"
QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
EAL = ["--no-huge", "-m", "1024", "--no-pci"]
TESTPMD_APP = ["--no-mlockall", "--total-num-mbufs", "16384", "--forward-mode=rxonly",
               "--stats-period", "1"]


class Proc:
    """A peer process whose output is collected; always stopped and reaped."""

    def __init__(self, argv: list[str], prefix: str | None = None):
        self.argv, self.prefix = argv, prefix
        self.proc: asyncio.subprocess.Process | None = None
        self.output = b""
        self._reader: asyncio.Task | None = None

    async def start(self) -> Proc:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        while chunk := await self.proc.stdout.read(65536):
            self.output += chunk

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    async def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> int:
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader
        self.proc.stdin.close()
        if self.prefix:
            shutil.rmtree(f"/var/run/dpdk/{self.prefix}", ignore_errors=True)
        return self.proc.returncode


async def _until(cond, timeout: float, what: str, proc: Proc | None = None):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}"
                                 + (f"; peer said:\n{proc.text[-3000:]}" if proc else ""))
        await asyncio.sleep(0.02)


def _rx(records, name=None):
    return [r for r in records if r.get("dir") == "rx" and (name is None or r["request"] == name)]


def _serve(vu, path, features, protocol_features):
    devices, records = [], []

    def factory():
        dev = vu.RecordingDevice(features=features, protocol_features=protocol_features)
        devices.append(dev)
        return Backend(dev, wire_log=WireLog(records.append))
    return BackendServer(factory, path=path), devices, records


# -- (a) testpmd virtio-user (front-end) -> emu back-end ------------------------------------------
@pytest.mark.parametrize("devargs", ["", ",in_order=1,mrg_rxbuf=0"], ids=["default", "in_order"])
def test_testpmd_virtio_user_against_emu_backend(no_fd_leak, vu, arun, tmp_path, devargs):
    async def main():
        path = str(tmp_path / "vu.sock")
        server, devices, records = _serve(
            vu, path, VF.VERSION_1 | VF.NET_MRG_RXBUF | VF.IN_ORDER,
            PF.MQ | PF.REPLY_ACK | PF.STATUS)
        await server.start()
        prefix = f"emu-vu-{os.getpid()}-{len(devargs)}"
        pmd = await Proc([TESTPMD, "-l", "0,1", "--main-lcore", "0", *EAL, "--file-prefix", prefix,
                          "--vdev", f"net_virtio_user0,path={path},queues=1{devargs}", "--",
                          *TESTPMD_APP], prefix).start()
        try:
            conn = await server.wait_connection(30)
            dev = devices[0]
            await _until(lambda: dev.running == {0, 1}, 30, "both rings to start", pmd)
            backend = conn.backend
            (region,) = backend.memory.regions
            assert region.gpa == region.uaddr and region.size == 1 << 30   # --no-huge -m 1024 memfd
            for i in (0, 1):
                v = backend.vrings[i]
                assert fd_kind(v.kick_fd) == "eventfd" and fd_kind(v.call_fd) == "eventfd"
                assert backend.memory.gpa_to_host(v.desc_gpa) == v.desc and v.enabled
            acked = backend.acked_features
            if devargs:
                assert acked & VF.IN_ORDER and not acked & VF.NET_MRG_RXBUF
            else:
                assert acked & VF.NET_MRG_RXBUF
            assert not backend.vhost_pci_active
        finally:
            rc = await pmd.stop(signal.SIGINT)
        assert rc == 0, pmd.text[-2000:]
        await asyncio.wait_for(conn.done.wait(), 10)
        assert conn.error is None
        answered = [r["payload"] for r in records
                    if r.get("dir") == "tx" and r["request"] == "GET_VRING_BASE"]
        assert answered == [{"index": 0, "num": 0}, {"index": 1, "num": 0}]
        assert dev.running == set() and dev.calls[-1] == ("disconnected",)
        await server.close()
    arun(main(), timeout=55)


# -- (b) emu front-end -> testpmd vhost (back-end) ---------------------------------------------------
def test_emu_frontend_against_testpmd_vhost(no_fd_leak, vu, arun, tmp_path):
    async def main():
        path = str(tmp_path / "vh.sock")
        prefix = f"emu-vh-{os.getpid()}"
        pmd = await Proc([TESTPMD, "-l", "0,1", "--main-lcore", "1", *EAL, "--file-prefix", prefix,
                          "--vdev", f"net_vhost0,iface={path},queues=1", "--", *TESTPMD_APP],
                         prefix).start()
        records = []
        client = FrontendClient(path, reconnect=0.05, timeout=15,
                                frontend=Frontend(wire_log=WireLog(records.append)))
        ram = allocate(64 << 20, "memfd", name="vm1")
        fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(4)]
        try:
            await asyncio.wait_for(client.connect(), 30)
            neg = await client.handshake()
            assert neg.protocol_features & PF.REPLY_ACK and not neg.vhost_pci
            assert neg.protocol_features & PF.BACKEND_REQ and client.channel is not None
            rings = []
            for i, base in enumerate((5, 7)):
                desc, avail, used = vu.ring_layout(0x100000 * (i + 1), 256)
                ram.write(avail + 2, base.to_bytes(2, "little"))    # empty rings at index base
                ram.write(used + 2, base.to_bytes(2, "little"))
                rings.append(FrontendVring(i, 256, desc, avail, used, base=base,
                                           kick_fd=fds[2 * i], call_fd=fds[2 * i + 1]))
            features = neg.features & (VF.VERSION_1 | VF.PROTOCOL_FEATURES | VF.NET_MRG_RXBUF)
            await client.start(features, ram, rings)      # every step REPLY_ACKed 0 by DPDK
            await _until(lambda: "virtio is now ready for processing" in pmd.text, 10,
                         "testpmd to accept the rings", pmd)
            assert await client.stop() == {0: 5, 1: 7}
        finally:
            await client.close()
            rc = await pmd.stop(signal.SIGINT)
            ram.close()
            for fd in fds:
                os.close(fd)
        assert rc == 0
        acks = [r for r in records if r.get("dir") == "rx" and r["flags"] == 5]
        assert all(r["payload"] == {"value": 0} for r in acks if r["request"].startswith("SET_"))
        assert "guest memory region size: 0x4000000" in pmd.text
    arun(main(), timeout=55)


# -- (c) QEMU 7.2, no guest -----------------------------------------------------------------------------
def _qemu_argv(path: str, *, guest_rom: bool) -> list[str]:
    return [QEMU, "-machine", "q35,memory-backend=mem", "-accel", "tcg", "-m", "256M",
            "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
            "-chardev", f"socket,id=c0,path={path}",
            "-netdev", "vhost-user,id=n0,chardev=c0,queues=1",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,vectors=0"
            + ("" if guest_rom else ",romfile="),
            "-nodefaults", "-no-user-config", "-display", "none", "-qmp", "stdio"] \
        + ([] if guest_rom else ["-S"])


async def _qemu_quit(qemu: Proc) -> int:
    qemu.proc.stdin.write(b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n')
    await qemu.proc.stdin.drain()
    try:
        await asyncio.wait_for(qemu.proc.wait(), 10)
    except asyncio.TimeoutError:
        pass
    return await qemu.stop(signal.SIGKILL)


QEMU_INIT = ["GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "GET_QUEUE_NUM",
             "SET_OWNER", "GET_FEATURES", "SET_VRING_CALL", "SET_VRING_ERR", "SET_VRING_CALL",
             "SET_VRING_ERR", "SET_VRING_ENABLE", "SET_VRING_ENABLE"]


@pytest.mark.parametrize("offer", ["dpdk-like", "all"])
def test_qemu_init_sequence(no_fd_leak, vu, arun, tmp_path, offer):
    async def main():
        path = str(tmp_path / "q.sock")
        pf = PF.MQ | PF.REPLY_ACK if offer == "dpdk-like" else int(IMPLEMENTED)
        server, devices, records = _serve(vu, path, VF.VERSION_1 | VF.NET_MRG_RXBUF, pf)
        await server.start()
        qemu = await Proc(_qemu_argv(path, guest_rom=False)).start()
        try:
            conn = await server.wait_connection(20)
            want = len(QEMU_INIT) + (2 if offer == "all" else 0)
            await _until(lambda: len(_rx(records)) >= want, 20, "QEMU's init sequence", qemu)
            await asyncio.sleep(0.2)                    # and nothing more comes
        finally:
            await _qemu_quit(qemu)
        await asyncio.wait_for(conn.done.wait(), 10)
        got = [r["request"] for r in _rx(records)]
        backend = conn.backend
        if offer == "dpdk-like":
            assert got == QEMU_INIT
        else:   # QEMU adds the memory-slot query and the back-end request channel
            assert got[:4] + got[6:] == QEMU_INIT
            assert set(got[4:6]) == {"GET_MAX_MEM_SLOTS", "SET_BACKEND_REQ_FD"}
        assert not backend.refused, backend.refused
        # QEMU acks bit 4 as NET_MTU and masks emu's marker: plain vhost-user
        acked = backend.protocol_features
        assert acked & PF.NET_MTU and not acked & PF.EMU_VHOST_PCI and not backend.vhost_pci_active
        assert [v.enabled for v in backend.vrings] == [True, True]
        assert conn.error is None
        assert not [r for r in records if r.get("dir") == "tx" and r["flags"] != 5]
        await server.close()
    arun(main(), timeout=55)


# -- QEMU 7.2 with a real driver: iPXE in the NIC's option ROM ------------------------------------------
def test_qemu_ipxe_driver_starts_rings(no_fd_leak, vu, arun, tmp_path):
    """No kernel needed: iPXE reaches DRIVER_OK in ~2 s, so QEMU sends its
    memory table (QEMU virtual addresses) and both rings."""
    async def main():
        path = str(tmp_path / "ipxe.sock")
        server, devices, records = _serve(vu, path, VF.VERSION_1 | VF.NET_MRG_RXBUF,
                                          PF.MQ | PF.REPLY_ACK)
        await server.start()
        qemu = await Proc(_qemu_argv(path, guest_rom=True)).start()
        try:
            conn = await server.wait_connection(20)
            dev = devices[0]
            await _until(lambda: dev.running == {0, 1}, 30, "iPXE to start both rings", qemu)
            backend = conn.backend
            (region,) = backend.memory.regions
            assert region.gpa == 0 and region.size == 256 << 20 and region.uaddr != 0
            v = backend.vrings[1]
            assert backend.memory.uaddr_to_gpa(v.addr.desc) == v.desc_gpa < 256 << 20
            assert v.enabled                    # from the enables QEMU sent before the rings
        finally:
            await _qemu_quit(qemu)
        await asyncio.wait_for(conn.done.wait(), 10)
        assert conn.error is None and not conn.backend.refused
        assert dev.calls[-1] == ("disconnected",) and dev.running == set()
        await server.close()
    arun(main(), timeout=55)
