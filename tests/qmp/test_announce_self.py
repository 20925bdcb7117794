"""QMP ``announce-self`` against the emu process and the reference QEMU 7.2,
each NIC on a ``-netdev socket,fd=N`` whose other end is the test: the
frame QEMU sends (captured from the reference) is the frame emu sends, the
rounds come as many and no sooner than QEMU's delays, ``interfaces`` picks
NICs by name, the same id replaces (rounds 0 cancels) and other ids are
apart; bad arguments are refused and the monitor goes on.  The timers'
arithmetic alone: test_announce_schedule in this file."""
from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest

from emu.netdev_announce import AnnounceError, AnnounceParameters, Schedule
from emu.spec import qemu_net

from tests.peers.qemu_qtest import QtestQemu

MACS = ("52:54:00:12:34:56", "52:54:00:ab:cd:ef")


class Stream:
    """The test's end of one NIC's socket netdev."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.frames: list[tuple[float, bytes]] = []

    def pump(self, wait: float) -> None:
        r, _, _ = select.select([self.sock], [], [], wait)
        if r:
            data = self.sock.recv(1 << 16)
            assert data, "the stream ended"
            self.buf += data
        while len(self.buf) >= 4:
            (n,) = struct.unpack_from(">I", self.buf)
            if len(self.buf) < 4 + n:
                break
            self.frames.append((time.monotonic(), self.buf[4:4 + n]))
            self.buf = self.buf[4 + n:]

    def wait(self, count: int, timeout: float = 20.0) -> list[tuple[float, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count:
            assert time.monotonic() < deadline, f"{len(self.frames)} of {count} frames"
            self.pump(0.05)
        return self.frames

    def quiet(self, period: float) -> None:
        """No frame for ``period`` seconds."""
        end = time.monotonic() + period
        n = len(self.frames)
        while time.monotonic() < end:
            self.pump(0.05)
        assert len(self.frames) == n, "frames kept coming"


class Qmp:
    def __init__(self, path: str):
        self.s = socket.socket(socket.AF_UNIX)
        deadline = time.monotonic() + 30
        while True:                      # the path exists once bound, before listen()
            try:
                self.s.connect(path)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())
        assert self.cmd("qmp_capabilities") == {"return": {}}

    def cmd(self, execute: str, **arguments) -> dict:
        self.f.write(json.dumps({"execute": execute, **({"arguments": arguments}
                                                        if arguments else {})}) + "\n")
        self.f.flush()
        while True:
            reply = json.loads(self.f.readline())
            if "event" not in reply:
                return reply

    def close(self) -> None:
        self.f.close()
        self.s.close()


class EmuProcess:
    """``python -m emu`` with one NIC per MAC, each on an inherited socket."""

    def __init__(self, nics: int = 1):
        self.dir = tempfile.mkdtemp(prefix="emu-ann-")
        qmp = os.path.join(self.dir, "qmp.sock")
        ours, theirs, args = [], [], []
        for i in range(nics):
            a, b = socket.socketpair()
            ours.append(a)
            theirs.append(b)
            args += ["-netdev", f"socket,fd={b.fileno()},id=hs{i}",
                     "-device", f"virtio-net-pci,netdev=hs{i},id=nic{i},mac={MACS[i]}"]
        self.proc = subprocess.Popen([sys.executable, "-m", "emu", "-M", "pc", *args,
                                      "-qmp", f"unix:{qmp},server=on,wait=off",
                                      "-display", "none"],
                                     pass_fds=[b.fileno() for b in theirs],
                                     stderr=subprocess.PIPE)
        for b in theirs:
            b.close()
        deadline = time.monotonic() + 30
        while not os.path.exists(qmp):
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        self.qmp = Qmp(qmp)
        self.streams = [Stream(a) for a in ours]

    def close(self) -> None:
        self.qmp.close()
        self.proc.terminate()
        self.proc.wait(20)
        self.proc.stderr.close()
        for s in self.streams:
            s.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class QemuProcess:
    """The reference QEMU with the same NIC (``-accel qtest``)."""

    def __init__(self):
        a, b = socket.socketpair()
        self.q = QtestQemu(["-M", "pc", "-netdev", f"socket,fd={b.fileno()},id=hs0",
                            "-device", f"virtio-net-pci,netdev=hs0,id=nic0,mac={MACS[0]}"],
                           pass_fds=(b.fileno(),))
        b.close()
        self.streams = [Stream(a)]

    def announce(self, **args) -> dict:
        return self.q.qmp("announce-self", **args)

    def close(self) -> None:
        self.q.close()
        self.streams[0].sock.close()


@pytest.fixture
def emu():
    p = EmuProcess()
    yield p
    p.close()


@pytest.fixture
def qemu():
    p = QemuProcess()
    yield p
    p.close()


def test_emu_sends_the_frame_qemu_sends(emu, qemu):
    args = dict(initial=50, max=100, rounds=1, step=10)
    assert qemu.announce(**args) == {"return": {}}
    assert emu.qmp.cmd("announce-self", **args) == {"return": {}}
    (_, theirs), = qemu.streams[0].wait(1)
    (_, ours), = emu.streams[0].wait(1)
    assert ours == theirs == qemu_net.announce_frame(bytes.fromhex(MACS[0].replace(":", "")))
    assert theirs[12:14] == b"\x80\x35" and len(theirs) == 60


def test_the_rounds_come_as_qemus_and_no_sooner(emu, qemu):
    """rounds 4, initial 50, step 20, max 60: at once, then after 50, 60 and
    60 ms (the 70 ms step clamped to max) -- four frames from each."""
    args = dict(initial=50, max=60, rounds=4, step=20)
    streams = [qemu.streams[0], emu.streams[0]]
    t_qemu = time.monotonic()
    qemu.announce(**args)
    t_emu = time.monotonic()
    emu.qmp.cmd("announce-self", **args)
    deadline = time.monotonic() + 20
    while any(len(s.frames) < 4 for s in streams):     # timestamp each frame as it comes
        assert time.monotonic() < deadline
        for s in streams:
            s.pump(0.002)
    for s, t0 in zip(streams, (t_qemu, t_emu)):
        s.quiet(0.3)
        times = [t for t, _ in s.frames]
        assert len(times) == 4
        # a timer never fires early: QEMU's deadlines are in whole ms of the
        # real-time clock, so each may come up to 1 ms before the exact delay
        assert times[-1] - t0 >= (50 + 60 + 60 - 3) / 1000


def test_the_same_id_with_rounds_0_cancels_and_ids_are_apart(emu):
    s = emu.streams[0]
    emu.qmp.cmd("announce-self", initial=100000, max=100000, rounds=10, step=0, id="bob")
    emu.qmp.cmd("announce-self", initial=20, max=20, rounds=3, step=0, id="alice")
    s.wait(1 + 3)                                   # bob's first, alice's three
    emu.qmp.cmd("announce-self", initial=20, max=100, rounds=300, step=10, id="bob")
    s.wait(4 + 2)
    assert emu.qmp.cmd("announce-self", initial=20, max=100, rounds=0, step=10,
                       id="bob") == {"return": {}}
    time.sleep(0.05)
    s.pump(0.05)
    s.quiet(0.4)                                    # as libqos checks it


def test_interfaces_picks_nics_by_name():
    p = EmuProcess(nics=2)
    try:
        p.qmp.cmd("announce-self", initial=10, max=10, rounds=2, step=0, interfaces=["nic1"])
        (_, f), _ = p.streams[1].wait(2)
        assert f[6:12] == bytes.fromhex(MACS[1].replace(":", ""))
        p.streams[0].quiet(0.2)
        p.qmp.cmd("announce-self", initial=10, max=10, rounds=1, step=0,
                  interfaces=["nothing-of-that-name"])
        p.streams[1].quiet(0.2)
    finally:
        p.close()


@pytest.mark.parametrize("args, text", [
    (dict(initial=-1, max=1, rounds=1, step=1), "Parameter 'initial' expects a value of at least 0"),
    (dict(initial=1, max=1, rounds=-5, step=1), "Parameter 'rounds' expects a value of at least 0"),
    (dict(initial=1, max=1, rounds=1 << 40, step=1), "Parameter 'rounds' expects a value of at most"),
    (dict(initial=1, max=1, rounds=1), "Parameter 'step' is missing"),
    (dict(initial="x", max=1, rounds=1, step=1), "Invalid parameter type for 'initial'"),
    (dict(initial=1, max=1, rounds=1, step=1, interfaces=[1]),
     "Invalid parameter type for 'interfaces', expected: string"),
    (dict(initial=1, max=1, rounds=1, step=1, bogus=1), "Parameter 'bogus' is unexpected"),
])
def test_bad_arguments_are_refused_and_the_monitor_goes_on(emu, args, text):
    reply = emu.qmp.cmd("announce-self", **args)
    assert text in reply["error"]["desc"], reply
    assert emu.qmp.cmd("announce-self", initial=1, max=1, rounds=1, step=1) == {"return": {}}
    emu.streams[0].wait(1)


def test_announce_schedule():
    s = Schedule(AnnounceParameters(initial=20, max=100, rounds=300, step=10))
    delays = [s.fire() for _ in range(12)]
    assert delays[:10] == [20, 30, 40, 50, 60, 70, 80, 90, 100, 100]
    s = Schedule(AnnounceParameters(initial=5, max=1, rounds=3, step=0))
    assert [s.fire(), s.fire(), s.fire()] == [1, 1, None]     # above max: max; then done
    with pytest.raises(AnnounceError):
        AnnounceParameters(initial=0, max=0, rounds=0, step=-1)


def test_the_announcer_on_a_clock_it_does_not_own():
    """Rounds at QEMU's times exactly (a manual clock stands in for the
    real-time one): at once, then initial, +step ... capped at max; the
    same id replaces, rounds 0 cancels, other ids go on; interfaces."""
    from emu.clock import Clock
    from emu.netdev_announce import Announcer

    class Nic:
        def __init__(self):
            self.at = []

        def announce(self):
            self.at.append(clock.now() // 1_000_000)

    clock = Clock("rt", manual=True)
    a, b = Nic(), Nic()
    ann = Announcer(lambda: [("a", a), ("b", b)], clock)
    ann.announce_self(AnnounceParameters(initial=20, max=50, rounds=6, step=15, id="x"))
    clock.warp(1_000_000_000)
    assert a.at == b.at == [0, 20, 55, 105, 155, 205]      # 20, 35, 50 (capped), 50, 50
    ann.announce_self(AnnounceParameters(initial=10, max=10, rounds=100, step=0, id="y",
                                         interfaces=("b",)))
    ann.announce_self(AnnounceParameters(initial=7, max=7, rounds=3, step=0))   # id ""
    clock.step(25_000_000)
    ann.announce_self(AnnounceParameters(initial=0, max=0, rounds=0, step=0, id="y"))
    clock.step(1_000_000_000)
    assert a.at[6:] == [1000, 1007, 1014]                   # "" only: "y" skipped nic a
    assert b.at[6:] == [1000, 1000, 1007, 1010, 1014, 1020]  # both, until "y" was cancelled
    assert ann.timers == {}
