"""emu's data paths against DPDK 22.11 testpmd, both roles:

* testpmd ``net_virtio_user`` (front-end, txonly) -> emu VM2's
  vhost-pci-net (plain vhost-user back-end for a stock front-end): VM2's
  driver copies every frame out of DPDK's TX ring through the window;
* emu VM1's virtio-net-pci (front-end) -> testpmd ``net_vhost`` (back-end,
  macswap): every frame goes to DPDK and comes back.

Both with split and packed rings (testpmd's ``packed_vq=1``; VM1's
``packed=on``).  Counters are compared with testpmd's own."""
import asyncio
import os

import pytest

from emu.spec import virtio as V
from emu.testing import dpdk, vms

pytestmark = pytest.mark.peers


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


@pytest.mark.parametrize("devargs,vm2_packed", [
    ("", False), (",in_order=1", False), (",mrg_rxbuf=0,in_order=1", False),
    (",packed_vq=1", False), (",packed_vq=1,in_order=1", False),
    (",packed_vq=1,mrg_rxbuf=0,in_order=1", True)],
    ids=["default", "in-order", "no-mrg-in-order", "packed", "packed-in-order",
         "packed-no-mrg-in-order-vm2-packed"])
def test_testpmd_virtio_user_txonly_into_vm2(tmp_path, devargs, vm2_packed):
    formats = set()

    async def body():
        sock = str(tmp_path / "vp.sock")
        vm2 = vms.vm2(sock, "sink", {"verify": "off"}, packed=vm2_packed)
        ev = vms.Events(vm2)
        await vm2.start()
        tp = dpdk.Testpmd("virtio-user", sock, "txonly", size=64, devargs=devargs).start()
        try:
            await ev.wait("VHOST_USER_CONNECTED", "vm2", timeout=20)
            await vms.wait_for(lambda: vms.guest_stats(vm2).get("received", 0) > 50000,
                               timeout=20, what="DPDK frames in VM2")
            drv = vm2.guest.drivers[0]
            formats.update(v.packed for v in drv.peer.vrings if v.ready)
            formats.add(("own", drv.rx[0].packed))
        finally:
            loop = asyncio.get_running_loop()
            rc = await loop.run_in_executor(None, tp.stop)
        await ev.wait("VHOST_USER_DISCONNECTED", "vm2", timeout=10)
        stats = vm2.emu_stats()
        await vm2.close()
        return rc, tp, stats
    rc, tp, stats = run(body())
    assert rc == 0, tp.text[-2000:]
    # the ring format DPDK asked for, on VM2's own queues the device's
    assert formats == {"packed_vq=1" in devargs, ("own", vm2_packed)}
    _, tx = tp.totals()
    got = stats["guest"]["received"]
    q = stats["vp0"]["queues"]
    # what DPDK put in its TX ring, VM2 took -- but for what was still in
    # the ring when testpmd's GET_VRING_BASE stopped it (at most a ring)
    assert tx - 256 <= got <= tx, (got, tx)
    assert q["peer1"]["packets"] == got
    assert q["rx0"]["packets"] == got               # one copy into VM2's own RX ring
    assert q["rx0"]["bytes"] == 64 * got
    assert all(s["errors"] == 0 for s in q.values()), q


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_vm1_gen_through_testpmd_vhost_macswap(tmp_path, packed):
    """Both directions through DPDK's back-end: VM1's TX dequeued by
    testpmd, sent back by it into VM1's RX ring."""
    count = 100000

    async def body():
        sock = str(tmp_path / "vh.sock")
        tp = dpdk.Testpmd("vhost", sock, "macswap", size=64).start()
        try:
            await asyncio.get_running_loop().run_in_executor(None, tp.wait_socket)
            vm1 = vms.vm1(sock, "gen", {"count": str(count), "verify": "on"}, packed=packed)
            ev = vms.Events(vm1)
            await vm1.start()
            await ev.wait("EMU_GUEST_APP_DONE", "vm1", timeout=30)
            # what testpmd managed to send back arrives; testpmd counts the rest
            await asyncio.sleep(0.5)
            stats = vm1.emu_stats()
            features = vm1.guest.drivers[0].features
            await vm1.close()
        finally:
            rc = await asyncio.get_running_loop().run_in_executor(None, tp.stop)
        return rc, tp, stats, features
    rc, tp, stats, features = run(body())
    assert rc == 0, tp.text[-2000:]
    assert bool(features & V.F_RING_PACKED) == packed
    rx, tx = tp.totals()
    g = stats["guest"]
    assert g["sent"] == count
    assert rx == count                      # DPDK received every frame VM1 sent
    assert g["received"] == tx              # and VM1 every frame DPDK sent back
    q = stats["net0"]["queues"]
    assert q["rx0"]["verify_fail"] == 0 and q["rx0"]["errors"] == 0
    assert q["tx0"]["errors"] == 0
