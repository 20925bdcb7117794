"""A peer that repeats what VM2 refuses cannot fill VM2's log (class 5):
the counts on the monitor are exact, the log gets a few lines and a count
of what it held back.  (Before: 20,000 refusals were 2.4 MB of log in 1.3 s.)"""
from __future__ import annotations

import socket

from emu.vhost_user.codec import encode, request
from emu.vhost_user.messages import FrontendRequest as F, U64, VringState

from .conftest import Expect
from .evil_frontend import EvilFrontend, FEATURES

LOG_BUDGET = 8 << 10          # bytes of new log a whole flood may cost


def test_twenty_thousand_refusals(victim):
    before = victim.before()
    fe = EvilFrontend(victim.sock)
    try:
        fe.handshake()
        fe.send(F.SET_FEATURES, U64(FEATURES))
        bad = b"".join(_encoded(F.SET_VRING_NUM, VringState(200, 256)) for _ in range(1000))
        for _ in range(20):
            fe.send_raw(bad)                          # 20,000 refused requests, no reply wanted
        assert fe.u64(F.GET_FEATURES)                 # all of them handled before this
    finally:
        fe.close()
    victim.after(before, Expect(refused=("SET_VRING_NUM",)))
    c = victim.counters()
    assert c["refused"]["SET_VRING_NUM"] - before["counters"]["refused"].get("SET_VRING_NUM", 0) \
        == 20000
    grown = len(victim.vm2.log()) - before["log"]
    assert grown < LOG_BUDGET, f"{grown} bytes of log:\n{victim.vm2.log()[before['log']:][-2000:]}"
    # what the log left out is counted on the monitor: the burst of 5 went out,
    # and one per 10 s while the flood lasts (50: even a flood of minutes)
    held = c["log_suppressed"] - before["counters"]["log_suppressed"]
    assert 20000 - 50 <= held <= 20000, c


def test_three_hundred_rejected_connections(victim):
    before = victim.before()
    fe = EvilFrontend(victim.sock)               # holds the one served slot
    extra = []
    try:
        fe.handshake()
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(victim.sock)
            extra.append(s)
            s.settimeout(10)
            assert s.recv(1) == b""                  # turned away at once
            s.close()
        assert fe.u64(F.GET_FEATURES)
    finally:
        for s in extra:
            s.close()
        fe.close()
    victim.after(before, Expect(rejected=300))
    grown = len(victim.vm2.log()) - before["log"]
    assert grown < LOG_BUDGET, f"{grown} bytes of log"


def _encoded(req, payload) -> bytes:
    return encode(request(req, payload))[0]
