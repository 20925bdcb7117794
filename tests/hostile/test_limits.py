"""Resource limits of vhost-pci-net, each configurable on the command line
and tested at its edge (the value itself is allowed, one more is not):

    -device vhost-pci-net,...,max-connections=N,max-payload=BYTES,
            max-regions=N,max-mem=SIZE,peer-vqs=N,message-timeout=MS

Beyond a limit the request is refused (REPLY_ACK 1) or the connection
dropped / turned away, counted in query-emu-stats (vp0.vhost_user) and
logged; what was there before keeps working.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from emu.vhost_user.messages import (Config, FrontendRequest as F, MemoryTable, U64,
                                     VringState)

from .evil_frontend import FEATURES, EchoPeer, EvilFrontend, PeerRAM
from .procs import Emu, vm2_args

MiB = 1 << 20
LIMITS = ",max-connections=2,max-payload=268,max-regions=2,max-mem=4M,peer-vqs=2,message-timeout=800"


@pytest.fixture(scope="module")
def vm2(run_dir):
    sock = os.path.join(run_dir, "vp.sock")
    vm = Emu("vm2", vm2_args([sock], device_props=LIMITS), run_dir)
    vm.sock = sock
    yield vm
    assert vm.quit() == 0, vm.log()[-3000:]


def counters(vm2: Emu) -> dict:
    return vm2.device("vp0")["vhost_user"]


def idle(vm2: Emu) -> None:
    vm2.wait(lambda: vm2.device("vp0")["peer_state"] == 0
             and counters(vm2)["connections"] == counters(vm2)["disconnects"], 10, "vp0 idle")


def hello(fe: EvilFrontend) -> None:
    fe.handshake()
    fe.send(F.SET_FEATURES, U64(FEATURES))


def test_max_connections_one_served_one_waiting_the_third_turned_away(vm2):
    idle(vm2)
    rejected = counters(vm2)["rejected"]
    a = EvilFrontend(vm2.sock)
    assert a.u64(F.GET_FEATURES)                      # served
    b = EvilFrontend(vm2.sock)                        # the second may wait ...
    b.send(F.GET_FEATURES)
    with pytest.raises((socket.timeout, TimeoutError)):
        b.recv(0.5)
    c = EvilFrontend(vm2.sock)                        # ... the third may not
    assert c.wait_closed(5)
    assert counters(vm2)["rejected"] == rejected + 1
    a.close()
    reply = b.recv(5)                                 # the waiting one is served next
    assert reply is not None and reply.request == F.GET_FEATURES
    b.close()
    c.close()
    idle(vm2)
    assert "max-connections 2" in vm2.log()


def test_max_payload_at_the_cap_is_read_one_byte_more_is_not(vm2):
    idle(vm2)
    with EvilFrontend(vm2.sock) as fe:
        hello(fe)
        fe.send(F.GET_CONFIG, Config(0, 256, 0, bytes(256)))     # 12 + 256 = 268 bytes: the cap
        reply = fe.recv(5)
        assert reply is not None and reply.request == F.GET_CONFIG   # read (and refused: no CONFIG)
        dropped = counters(vm2)["dropped"].get("MalformedMessage", 0)
        fe.send_header(F.GET_CONFIG, 1, 269, bytes(269))
        assert fe.wait_closed(5)
    idle(vm2)
    assert counters(vm2)["dropped"]["MalformedMessage"] == dropped + 1
    assert "exceeds the 268-byte cap" in vm2.log()


def test_max_regions(vm2):
    idle(vm2)
    ram = PeerRAM(((0, MiB), (MiB, MiB), (2 * MiB, MiB)))
    refused = counters(vm2)["refused"].get("SET_MEM_TABLE", 0)
    try:
        with EvilFrontend(vm2.sock) as fe:
            hello(fe)
            assert fe.u64(F.GET_MAX_MEM_SLOTS) == 2
            table, fds = ram.table()
            three = MemoryTable(table.regions)
            assert fe.status(F.SET_MEM_TABLE, three, fds) == 1                   # one too many
            assert fe.status(F.SET_MEM_TABLE, MemoryTable(table.regions[:2]), fds[:2]) == 0
    finally:
        ram.close()
    idle(vm2)
    assert counters(vm2)["refused"]["SET_MEM_TABLE"] == refused + 1


def test_max_mem_exactly_then_one_page_more_and_the_old_table_stays(vm2):
    idle(vm2)
    p = EchoPeer(vm2.sock, layout=((0, 2 * MiB), (2 * MiB, 2 * MiB)))   # exactly 4M: mapped
    try:
        p.roundtrip(1)
        refused = counters(vm2)["refused"].get("SET_MEM_TABLE", 0)
        # the same first region (the rings live there), a second one page larger
        big = PeerRAM(((2 * MiB, 2 * MiB + 4096),))
        try:
            (r0, *_), (fd0, *_) = p.ram.table()[0].regions, p.ram.table()[1]
            (r1,), (fd1,) = big.table()[0].regions, big.table()[1]
            assert p.fe.status(F.SET_MEM_TABLE, MemoryTable((r0, r1)), (fd0, fd1)) == 1
        finally:
            big.close()
        assert counters(vm2)["refused"]["SET_MEM_TABLE"] == refused + 1
        for seq in range(2, 5):
            p.roundtrip(seq)                          # the refusal changed nothing
    finally:
        p.close()
    idle(vm2)
    assert "exceeds max-mem" in vm2.log()


def test_peer_vqs(vm2):
    idle(vm2)
    with EvilFrontend(vm2.sock) as fe:
        hello(fe)
        assert fe.u64(F.GET_QUEUE_NUM) == 1
        assert fe.status(F.SET_VRING_NUM, VringState(1, 64)) == 0                # the last vring
        assert fe.status(F.SET_VRING_NUM, VringState(2, 64)) == 1                # one past it
    idle(vm2)
    assert "out of range (device has 2)" in vm2.log()


def test_message_timeout_a_slow_message_is_served_a_stalled_one_is_dropped(vm2):
    """Slowloris: a front-end may sit idle between messages for as long as
    it likes, but a message it has begun must be whole within
    message-timeout (800 ms here), or the one served slot would be held by
    a trickle forever while the next front-end waits."""
    idle(vm2)
    dropped = counters(vm2)["dropped"].get("PeerTimeout", 0)
    with EvilFrontend(vm2.sock) as fe:
        time.sleep(1.2)                                  # idle longer than the timeout: fine
        raw = struct.pack("<III", F.GET_FEATURES, 1, 0)
        for b in raw:                                    # 12 bytes over ~0.4 s: served
            fe.send_raw(bytes([b]))
            time.sleep(0.035)
        reply = fe.recv(5)
        assert reply is not None and reply.request == F.GET_FEATURES
        fe.send_raw(raw[:5])                             # then a header that stops
        waiting = EvilFrontend(vm2.sock)                 # the next front-end waits for the slot
        t0 = time.monotonic()
        assert fe.wait_closed(5)
        assert time.monotonic() - t0 > 0.6               # not before its timeout (wait_closed bounds the rest)
        assert waiting.u64(F.GET_FEATURES)               # ... and is served once it is freed
        waiting.close()
    idle(vm2)
    assert counters(vm2)["dropped"]["PeerTimeout"] == dropped + 1
    assert "did not finish it within 0.8 s" in vm2.log()
    assert vm2.execute("query-status")["status"] == "running"


@pytest.mark.parametrize("prop,message", [
    ("peer-vqs=1", "peer-vqs"), ("peer-vqs=177", "peer-vqs"),
    ("max-connections=0", "max-connections"), ("max-payload=267", "max-payload"),
    ("max-regions=33", "max-regions"), ("max-regions=0", "max-regions"),
    ("max-mem=xyz", "max-mem"), ("message-timeout=0", "message-timeout"),
])
def test_limits_out_of_range_stop_start_up(run_dir, prop, message):
    sock = os.path.join(run_dir, "bad.sock")
    args = [sys.executable, "-P", "-m", "emu", *vm2_args([sock], device_props="," + prop)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p.stderr
    assert message in p.stderr and p.stderr.startswith("emu: -device vhost-pci-net"), p.stderr
