"""Multi-queue end to end: VM1's virtio-net-pci (mq=on, 2 pairs) through
VM2's vhost-pci-net echo.  Every pair carries traffic and every packet
comes back on the pair it left by.  (Before the fix VM2 never offered
VIRTIO_NET_F_MQ to its peer, so VM1 silently ran one pair.)"""
import asyncio

from emu.machine import Machine
from emu.netdev import SocketSpec
from emu.testing import vms
from emu.spec import virtio_net as N

PAIRS = 2
COUNT = 20000


def _mq_pair(sock: str, gen: dict) -> tuple[Machine, Machine]:
    """VM1 (virtio-net-pci, mq=on, PAIRS pairs, gen) and VM2 (vhost-pci-net, echo)."""
    b = Machine(name="vm2", ram_size=64 << 20, backend="shm")
    b.add_chardev(SocketSpec("c0", path=sock, server=True, wait=False))
    b.add_vhost_pci_net("vp0", "c0", mac=vms.MAC2, queue_pairs=PAIRS)
    b.set_guest("vhost-pci-net", "echo", {})
    a = Machine(name="vm1", ram_size=64 << 20, backend="memfd")
    a.add_chardev(SocketSpec("c0", path=sock))
    a.add_netdev_vhost_user("n0", "c0", queues=PAIRS)
    a.add_virtio_net("net0", "n0", mac=vms.MAC1, mq=True)
    a.set_guest("virtio-net", "gen", gen)
    return a, b


async def _mq_echo(sock: str):
    a, b = _mq_pair(sock, {"count": str(COUNT), "verify": "on"})
    await b.start()
    try:
        await a.start()
        try:
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) >= COUNT,
                               timeout=30, what="echoes on every pair")
            return a.emu_stats(), b.emu_stats(), a.guest.drivers[0].features
        finally:
            await a.close()
    finally:
        await b.close()


def test_two_queue_pairs_both_carry_traffic(tmp_path, no_fd_leak):
    s1, s2, features = asyncio.run(asyncio.wait_for(_mq_echo(str(tmp_path / "vp.sock")), 60))
    assert features & N.F_MQ and features & N.F_CTRL_VQ
    q1, q2 = s1["net0"]["queues"], s2["vp0"]["queues"]
    assert s1["guest"]["sent"] == COUNT and s1["guest"]["received"] == COUNT
    for k in range(PAIRS):
        sent, back = q1[f"tx{k}"]["packets"], q1[f"rx{k}"]["packets"]
        assert sent == COUNT // PAIRS and back == sent, (k, q1)
        # VM2 read pair k's TX (peer vring 2k+1) and filled its RX (2k)
        assert q2[f"peer{2 * k + 1}"]["packets"] == sent
        assert q2[f"peer{2 * k}"]["packets"] == sent
    for dev in (q1, q2):
        assert all(st["errors"] == 0 and st["drops"] == 0 for st in dev.values()), dev


def test_both_pairs_come_back_after_a_guest_reboot(tmp_path):
    """Regression: the device kept its control-queue position across a
    reset, so a rebooted driver's VQ_PAIRS_SET (avail index 1 again) was
    never served and pair 1 stayed disabled at the back-end."""
    async def body():
        a, b = _mq_pair(str(tmp_path / "vp.sock"), {"count": "0", "rate": "50000"})
        await b.start()
        try:
            await a.start()

            def peer(k):
                return b.emu_stats()["vp0"]["queues"].get(f"peer{k}", {}).get("packets", 0)
            for boot in ("first boot", "reboot"):
                if boot == "reboot":
                    await a.system_reset()
                start = [peer(1), peer(3)]             # the TX ring of each pair
                await vms.wait_for(lambda: peer(1) > start[0] + 1000 and peer(3) > start[1] + 1000,
                                   timeout=20, what=f"traffic on both pairs after the {boot}")
        finally:
            await a.close()
            await b.close()
    asyncio.run(asyncio.wait_for(body(), 60))
