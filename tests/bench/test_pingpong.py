"""The ``pingpong`` latency app: VM1 sends one stamped frame at a time and
times its echo from VM2 (``echo``), polling or sleeping on interrupts."""
import asyncio

import pytest

from emu.guest import apps
from emu.spec import virtio
from emu.testing import vms

COUNT = 300


async def _pingpong(sock: str, mode: str, size: int, params=None):
    b = vms.vm2(sock, "echo", {"mode": mode})
    await b.start()
    a = vms.vm1(sock, "pingpong", {"mode": mode, "size": str(size), "count": str(COUNT),
                                   "warmup": "20", **(params or {})})
    try:
        await a.start()
        return await vms.wait_for(lambda: "rtt_ns" in vms.guest_stats(a) and vms.guest_stats(a)
                                  or "error" in vms.guest_stats(a) and vms.guest_stats(a),
                                  timeout=30, what="pingpong done")
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("mode,size", [("poll", 64), ("interrupt", 64), ("poll", 1518)])
def test_every_round_trip_timed(tmp_path, mode, size, no_fd_leak):
    g = asyncio.run(asyncio.wait_for(_pingpong(str(tmp_path / "vp.sock"), mode, size), 60))
    assert "error" not in g, g
    assert g["sent"] == COUNT and g["received"] == COUNT and g["lost"] == 0
    assert g["engine"] == "python" and g["size"] == size
    r = g["rtt_ns"]
    assert 0 < r["min"] <= r["p50"] <= r["p90"] <= r["p99"] <= r["p99.9"] <= r["max"]
    assert r["min"] <= r["mean"] <= r["max"]


def test_unknown_engine_is_a_guest_error(tmp_path):
    g = asyncio.run(asyncio.wait_for(
        _pingpong(str(tmp_path / "vp.sock"), "poll", 64, {"engine": "nope"}), 60))
    assert "unknown engine" in g["error"]


def test_engine_hook_replaces_the_round_trip(tmp_path, monkeypatch):
    """A registered engine is used for every round trip (how a C ping-pong
    would plug in); its figures are what the app reports."""
    calls = []

    def fixed(txq, rxq, frame, seq, interrupt, timeout_s, sink):
        calls.append(seq)
        return None if seq % 10 == 0 else 1000 + seq
    monkeypatch.setitem(apps.PINGPONG_ENGINES, "fixed", fixed)
    g = asyncio.run(asyncio.wait_for(
        _pingpong(str(tmp_path / "vp.sock"), "poll", 64, {"engine": "fixed"}), 60))
    assert calls[:COUNT + 20] == list(range(COUNT + 20))
    timed = range(20, COUNT + 20)
    assert g["lost"] == sum(1 for s in timed if s % 10 == 0)
    assert g["received"] == COUNT - g["lost"]
    assert g["rtt_ns"]["min"] == 1021 and g["rtt_ns"]["max"] == 1000 + COUNT + 19


def test_percentiles_nearest_rank():
    p = apps.percentiles(range(1, 1001))
    assert (p["p50"], p["p90"], p["p99"], p["p99.9"]) == (500, 900, 990, 999)
    assert p["min"] == 1 and p["max"] == 1000 and p["mean"] == 500.5
    assert apps.percentiles([]) == {}


@pytest.mark.parametrize("mode,size", [("poll", 64), ("interrupt", 64), ("poll", 1518)])
def test_c_engine_answers_every_ping(tmp_path, mode, size, no_fd_leak):
    """engine=c (one C call per round trip): every ping comes back, echoed
    by VM2 and checked by the C sink (stamp and payload), none lost."""
    g = asyncio.run(asyncio.wait_for(
        _pingpong(str(tmp_path / "vp.sock"), mode, size, {"engine": "c"}), 60))
    assert "error" not in g, g
    assert g["engine"] == "c" and g["size"] == size
    assert g["sent"] == COUNT and g["received"] == COUNT and g["lost"] == 0
    r = g["rtt_ns"]
    assert 0 < r["min"] <= r["p50"] <= r["p99"] <= r["max"]


async def _pingpong_no_echo(sock: str, mode: str):
    b = vms.vm2(sock, "sink", {"mode": mode})
    await b.start()
    a = vms.vm1(sock, "pingpong", {"mode": mode, "size": "64", "count": "20", "warmup": "2",
                                   "timeout_ms": "5", "engine": "c"})
    try:
        await a.start()
        return await vms.wait_for(lambda: "rtt_ns" in vms.guest_stats(a) and vms.guest_stats(a)
                                  or "error" in vms.guest_stats(a) and vms.guest_stats(a),
                                  timeout=30, what="pingpong done")
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("mode", ["poll", "interrupt"])
def test_c_engine_counts_unanswered_pings_lost(tmp_path, mode):
    """VM2 swallows the frames (sink, no echo): each round trip of the C
    engine ends at its timeout and counts as lost, none as received."""
    g = asyncio.run(asyncio.wait_for(_pingpong_no_echo(str(tmp_path / "vp.sock"), mode), 60))
    assert "error" not in g, g
    assert g["engine"] == "c" and g["sent"] == 20 and g["lost"] == 20 and g["received"] == 0


async def _pingpong_packed(sock: str, mode: str):
    b = vms.vm2(sock, "echo", {"mode": mode}, packed=True)
    await b.start()
    a = vms.vm1(sock, "pingpong", {"mode": mode, "size": "64", "count": str(COUNT),
                                   "warmup": "20", "engine": "c"}, packed=True)
    try:
        await a.start()
        g = await vms.wait_for(lambda: "rtt_ns" in vms.guest_stats(a) and vms.guest_stats(a)
                               or "error" in vms.guest_stats(a) and vms.guest_stats(a),
                               timeout=30, what="pingpong done")
        g["ring_packed"] = bool(a.devices["net0"].model.transport.guest_features
                                & virtio.F_RING_PACKED)
        return g
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("mode", ["poll", "interrupt"])
def test_c_engine_on_packed_rings(tmp_path, mode):
    """packed=on on both VMs: the C engine's wait (emu_drv_has_used) reads
    the packed descriptor's flags; every ping still comes back checked."""
    g = asyncio.run(asyncio.wait_for(_pingpong_packed(str(tmp_path / "vp.sock"), mode), 60))
    assert "error" not in g, g
    assert g["engine"] == "c" and g["sent"] == COUNT and g["received"] == COUNT
    assert g["lost"] == 0 and g["ring_packed"]
