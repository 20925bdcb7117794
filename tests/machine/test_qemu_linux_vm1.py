"""QEMU 7.2 booting a Linux guest as VM1, emu VM2 (vhost-pci-net) as its
vhost-user back-end: the guest's pings are answered by VM2's guest driver,
which reads each request from VM1's TX ring and writes the reply into VM1's
RX ring through the BAR window.  One boot (~10 s under TCG) serves both
ring formats: the guest's eth0 is a split virtio-net-pci (VM2's vp0), its
eth1 one with packed=on (VM2's vp1)."""
import asyncio

import pytest

from emu.testing import vms
from tests.peers import linux_guest


@pytest.mark.peers
def test_linux_guest_ping_answered_through_the_window_split_and_packed(tmp_path):
    async def body():
        socks = [str(tmp_path / "vp0.sock"), str(tmp_path / "vp1.sock")]
        vm2 = vms.vm2(socks, "responder")
        ev = vms.Events(vm2)
        await vm2.start()
        formats: dict[int, set] = {0: set(), 1: set()}
        done = asyncio.Event()

        async def watch():
            # what each device's metadata says of its peer's vrings, while up
            while not done.is_set():
                for i, drv in enumerate(vm2.guest.drivers if vm2.guest else []):
                    peer = drv.peer
                    if peer is not None:
                        formats[i] |= {v.packed for v in peer.vrings if v.ready}
                await asyncio.sleep(0.02)
        watcher = asyncio.create_task(watch())
        try:
            loop = asyncio.get_running_loop()
            res = await loop.run_in_executor(
                None, lambda: linux_guest.run_guest(socks[0], timeout=150, mode="ping", count=3,
                                                    more_nics=((socks[1], True),)))
            stats = vm2.emu_stats()
        finally:
            done.set()
            await watcher
            await vm2.close()
        return res, stats, ev, formats
    res, stats, ev, formats = asyncio.run(body())
    assert res.ping_replies(0) == (3, 3), res.console[-2000:]
    assert res.ping_replies(1) == (3, 3), res.console[-2000:]
    assert formats == {0: {False}, 1: {True}}      # eth0 split, eth1 packed, as negotiated
    g = stats["guest"]
    assert g["arp_replies"] >= 2 and g["icmp_replies"] == 6
    for dev in ("vp0", "vp1"):
        q = stats[dev]["queues"]
        assert q["peer1"]["packets"] >= 4          # ARP + 3 echo requests from the guest
        assert q["peer0"]["packets"] >= 4          # ARP reply + 3 echo replies into its RX ring
        assert all(s["errors"] == 0 for s in q.values()), (dev, q)
    assert stats["vp0"]["queues"]["peer0"]["packets"] + \
        stats["vp1"]["queues"]["peer0"]["packets"] == g["sent"]
    assert ev.names().count("VHOST_USER_DISCONNECTED") == 2
