"""QEMU 7.2 booting a Linux guest as VM1, emu VM2 (vhost-pci-net) as its
vhost-user back-end: the guest's ping is answered by VM2's guest driver,
which reads the request from VM1's TX ring and writes the reply into VM1's
RX ring through the BAR window.  One boot (~8 s under TCG)."""
import asyncio

import pytest

from emu.testing import vms
from tests.peers import linux_guest


@pytest.mark.peers
def test_linux_guest_ping_answered_through_the_window(tmp_path):
    async def body():
        sock = str(tmp_path / "vp.sock")
        vm2 = vms.vm2(sock, "responder", {"ip": "10.0.0.2"})
        ev = vms.Events(vm2)
        await vm2.start()
        try:
            loop = asyncio.get_running_loop()
            res = await loop.run_in_executor(
                None, lambda: linux_guest.run_guest(sock, timeout=120, mode="ping", count=3))
            stats = vm2.emu_stats()
        finally:
            await vm2.close()
        return res, stats, ev
    res, stats, ev = asyncio.run(body())
    assert res.ping_replies() == (3, 3), res.console[-2000:]
    g = stats["guest"]
    assert g["arp_replies"] >= 1 and g["icmp_replies"] == 3
    q = stats["vp0"]["queues"]
    assert q["peer1"]["packets"] >= 4          # ARP + 3 echo requests from the Linux guest
    assert q["peer0"]["packets"] == g["sent"]  # every reply landed in the guest's RX ring
    assert all(s["errors"] == 0 for s in q.values())
    assert "VHOST_USER_DISCONNECTED" in ev.names()
