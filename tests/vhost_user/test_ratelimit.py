"""One mechanism bounds every log line an untrusted party can repeat
(emu.ratelimit.LogLimiter; class 5): refusals, ignored messages, dropped
and rejected connections, guest errors.  Counts stay exact; the log gets a
burst, then a trickle that says how much it held back."""
from __future__ import annotations

import asyncio
import logging
import socket

from emu.pci.errors import GuestErrors
from emu.ratelimit import LogLimiter
from emu.vhost_user.backend import Backend
from emu.vhost_user.codec import request
from emu.vhost_user.counters import PeerCounters
from emu.vhost_user.frontend import Frontend
from emu.vhost_user.messages import FrontendRequest as F, U64, VringState
from emu.vhost_user.transport import BackendServer


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_burst_then_rate_and_the_count_held_back(caplog):
    clock = Clock()
    lim = LogLimiter(burst=3, rate=0.5, clock=clock)
    log = logging.getLogger("emu.test.ratelimit")
    with caplog.at_level(logging.INFO, logger="emu.test.ratelimit"):
        for i in range(100):
            lim.log(log, logging.WARNING, "k", "event %d", i)
        clock.t += 2.0                                   # one token back
        lim.log(log, logging.WARNING, "k", "event %d", 100)
        lim.log(log, logging.WARNING, "other", "another kind")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines[:3] == ["event 0", "event 1", "event 2"]
    assert lines[3] == "event 100 (97 more suppressed)"
    assert lines[4] == "another kind"                    # keys are limited apart
    assert lim.suppressed == 97


def test_held_back_lines_go_to_debug_for_an_operator_who_asked(caplog):
    lim = LogLimiter(burst=1, rate=0)
    log = logging.getLogger("emu.test.ratelimit")
    with caplog.at_level(logging.DEBUG, logger="emu.test.ratelimit"):
        for i in range(5):
            lim.log(log, logging.WARNING, "k", "event %d", i)
    assert [r.levelno for r in caplog.records] == [logging.WARNING] + [logging.DEBUG] * 4


def test_keys_are_bounded():
    lim = LogLimiter(max_keys=8)
    for i in range(1000):
        lim.allow(("k", i))
    assert len(lim._buckets) == 8


def _warnings(caplog, text):
    return [r for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_twenty_thousand_refusals_log_a_handful(caplog, vu):
    """The adversarial run: 20,000 refusals were 2.4 MB of log in 1.3 s."""
    counters = PeerCounters()
    for conn in range(4):                                # reconnecting does not refill it
        b = Backend(vu.RecordingDevice(), counters=counters)
        with caplog.at_level(logging.WARNING):
            for _ in range(5000):                        # ring 99: out of range, refused
                b.handle(request(F.SET_VRING_NUM, VringState(99, 256)))
        b.close()
    assert counters.refused["SET_VRING_NUM"] == 20000
    lines = _warnings(caplog, "refused SET_VRING_NUM")
    assert 1 <= len(lines) <= 10, len(lines)


def test_ignored_messages_from_a_back_end_log_a_handful(caplog):
    counters = PeerCounters()
    fe = Frontend(counters=counters)
    with caplog.at_level(logging.WARNING):
        for _ in range(10000):
            fe.receive(request(F.SET_FEATURES, U64(1)))
    assert counters.refused["SET_FEATURES"] == 10000
    assert 1 <= len(_warnings(caplog, "ignored SET_FEATURES")) <= 10


def test_rejected_connections_log_a_handful(caplog, vu, arun):
    import tempfile
    path = tempfile.mktemp(prefix="emu-rl-", suffix=".sock", dir="/tmp")

    async def main():
        counters = PeerCounters()
        server = BackendServer(lambda: Backend(vu.RecordingDevice()), path=path,
                               counters=counters)
        await server.start()
        first = socket.socket(socket.AF_UNIX)
        first.connect(path)
        await asyncio.sleep(0.05)
        others = []
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            s.connect(path)
            others.append(s)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        while server.rejected < 300:
            await asyncio.sleep(0.01)
        for s in others + [first]:
            s.close()
        await server.close()
        return counters
    with caplog.at_level(logging.WARNING):
        counters = arun(main(), timeout=30)
    assert counters.rejected == 300
    assert 1 <= len(_warnings(caplog, "already connected")) <= 10


def test_guest_errors_first_of_each_kind_then_a_trickle(caplog):
    g = GuestErrors("dev0")
    with caplog.at_level(logging.WARNING, logger="emu.pci"):
        for _ in range(5000):
            g.record("bar-write", "write to nothing")
        g.record("notify", "bad queue")
    assert g.total == 5001
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["dev0: guest error (bar-write): write to nothing",
                     "dev0: guest error (notify): bad queue"]
