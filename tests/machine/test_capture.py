"""-object filter-dump: pcap files that hold exactly the frames that crossed
a NIC, byte for byte, in order, read back with scapy and tshark."""
import asyncio
import os
import subprocess

import pytest
from scapy.utils import rdpcap

from emu import ring
from emu.guest import packets
from emu.testing import vms


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def sent_frames(count, size, src_mac, dst="ff:ff:ff:ff:ff:ff"):
    tmpl = packets.udp_frame(size, src_mac=src_mac, dst_mac=dst, sport=9)
    return [ring.expected_frame(tmpl, size, packets.STAMP_OFF, seq) for seq in range(count)]


def swapped(f: bytes) -> bytes:
    return f[6:12] + f[0:6] + f[12:]


def test_captures_hold_exactly_the_frames_that_crossed(tmp_path):
    count, size = 3000, 200

    async def body():
        sock = str(tmp_path / "vp.sock")
        b = vms.vm2(sock, "echo")
        b.add_filter_dump("d2", "vp0", str(tmp_path / "vm2.pcap"))
        await b.start()
        a = vms.vm1(sock, "gen", {"count": str(count), "size": str(size), "verify": "on"})
        a.add_filter_dump("d1", "n0", str(tmp_path / "vm1-tx.pcap"), queue="tx")
        a.add_filter_dump("d3", "n0", str(tmp_path / "vm1-rx.pcap"), queue="rx", maxlen=64)
        try:
            await a.start()
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) >= count,
                               what="echoes")
            return a.emu_stats(), b.emu_stats()
        finally:
            await a.close()
            await b.close()
    s1, s2 = run(body())
    want = sent_frames(count, size, vms.MAC1)

    tx = [bytes(p) for p in rdpcap(str(tmp_path / "vm1-tx.pcap"))]
    assert tx == want                                   # every frame VM1 sent, in order
    rx = rdpcap(str(tmp_path / "vm1-rx.pcap"))
    assert len(rx) == count
    assert [bytes(p) for p in rx] == [swapped(f)[:64] for f in want]   # maxlen=64
    assert all(p.wirelen == size for p in rx)
    caps = {c["file"].rsplit("/", 1)[1]: c for c in s1["net0"]["captures"]}
    assert caps["vm1-tx.pcap"]["frames"] == count and caps["vm1-tx.pcap"]["errors"] == 0

    # VM2 saw each frame twice: in from VM1's TX ring, out into its RX ring
    both = [bytes(p) for p in rdpcap(str(tmp_path / "vm2.pcap"))]
    assert len(both) == 2 * count
    assert [f for f in both if f[:6] == want[0][:6]] == want
    assert [f for f in both if f[:6] == vms.MAC1] == [swapped(f) for f in want]
    assert s2["vp0"]["captures"][0]["frames"] == 2 * count


@pytest.mark.peers
def test_tshark_reads_a_capture(tmp_path):
    count = 200

    async def body():
        sock = str(tmp_path / "vp.sock")
        b = vms.vm2(sock, "echo")
        await b.start()
        a = vms.vm1(sock, "gen", {"count": str(count), "size": "128"})
        a.add_filter_dump("d1", "n0", str(tmp_path / "all.pcap"))
        try:
            await a.start()
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) >= count)
        finally:
            await a.close()
            await b.close()
    run(body())
    out = subprocess.run(["tshark", "-r", str(tmp_path / "all.pcap"), "-T", "fields",
                          "-e", "udp.dstport", "-e", "frame.len"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2 * count
    assert all(ln.split() == ["9", "128"] for ln in lines)


def test_filter_dump_errors(tmp_path):
    m = vms.vm1(str(tmp_path / "none.sock"), "sink")
    try:
        with pytest.raises(ValueError, match="no netdev"):
            m.add_filter_dump("d", "nosuch", str(tmp_path / "x.pcap"))
        m.add_filter_dump("d1", "n0", str(tmp_path / "a.pcap"), queue="rx")
        with pytest.raises(ValueError, match="already captured"):
            m.add_filter_dump("d2", "n0", str(tmp_path / "b.pcap"))
        assert os.path.exists(tmp_path / "a.pcap")
    finally:
        run(m.close())
