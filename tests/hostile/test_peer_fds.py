"""A peer that turns the eventfds it shares with emu against it.

An eventfd sent over SCM_RIGHTS is one open file description in both
processes: the peer can clear O_NONBLOCK on it, read it dry behind emu's
back, or fill its counter to 2^64 - 2 so that the next write blocks.  emu
must never block on such an fd (docs/security.md, class 2): its monitor
answers, its data path moves, its other peers are served.

* VM2 (vhost-pci-net) against a hostile front-end: one blocking kick eventfd
  for two rings (the loop's second reader used to block for good, taking
  QMP and every device with it), a saturated blocking call eventfd (the
  pump used to block in ``write``);
* VM1 (virtio-net-pci) against a hostile back-end: its own kick eventfd made
  blocking and saturated (the pump, and ``stop``, used to hang), its call
  eventfd made blocking and read dry in a loop (the loop's read could block).
"""
from __future__ import annotations

import fcntl
import os
import threading
import time

import pytest

from emu import ring
from emu.vhost_user.messages import FrontendRequest as F, VringFd

from .evil_frontend import EchoPeer
from .test_backend_attacks import Survivor

FULL = (1 << 64) - 2          # the largest eventfd count: the next write of 1 blocks


def blocking(fd: int) -> int:
    """Clear O_NONBLOCK on ``fd`` -- on the open file description emu shares."""
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def fill(fd: int) -> None:
    """Fill an eventfd its owner keeps signalling to 2^64 - 2 (while it is
    still non-blocking, so that our own write cannot hang)."""
    while True:
        try:
            os.preadv(fd, [bytearray(8)], -1, os.RWF_NOWAIT)
        except BlockingIOError:
            pass
        try:
            os.eventfd_write(fd, FULL)
            return
        except BlockingIOError:         # a signal came in between: empty it again
            pass


def test_one_blocking_kick_eventfd_for_two_rings(victim):
    """The loop watches both rings' kick fds; a kick makes both readable,
    the first read empties the shared counter, the second must not block."""
    before = victim.before()
    peer = EchoPeer(victim.sock)
    kick = blocking(os.eventfd(0, os.EFD_CLOEXEC))
    try:
        peer.roundtrip(1)
        for r in (peer.rx, peer.tx):
            peer.fe.send(F.SET_VRING_KICK, VringFd(r.index), (kick,))
        peer.roundtrip(2)

        def kicks() -> int:
            return sum(victim.vm2.device("vp0").get("peer_kicks", {}).values())
        for _ in range(10):
            seen = kicks()
            os.eventfd_write(kick, 1)
            victim.vm2.wait(lambda: kicks() > seen, 10, "VM2 to take the kick")
        peer.roundtrip(3)
    finally:
        os.close(kick)
        peer.close()
    victim.after(before, _expect())


def test_saturated_blocking_call_eventfd(victim):
    """VM2's pump signals our RX ring's call eventfd after every echo: at
    2^64 - 2 and blocking, that write would block; the pump must go on."""
    before = victim.before()
    peer = EchoPeer(victim.sock)
    call = blocking(os.eventfd(0, os.EFD_CLOEXEC))
    os.eventfd_write(call, FULL)
    try:
        peer.roundtrip(1)
        peer.fe.send(F.SET_VRING_CALL, VringFd(peer.rx.index), (call,))
        for seq in range(2, 12):               # each echo is signalled into the full counter
            peer.roundtrip(seq)
        assert victim.vm2.execute("query-status")["status"] == "running"
    finally:
        os.close(call)
        peer.close()
    victim.after(before, _expect())


def _expect():
    from .conftest import Expect
    return Expect()


# -- VM1 against a hostile back-end ----------------------------------------------------------

@pytest.fixture(scope="module")
def survivor(run_dir):
    d = os.path.join(run_dir, "b")          # its VM1 must not share the victim's file names
    os.mkdir(d)
    s = Survivor(d)
    yield s
    s.close()


class TxConsumer:
    """The evil back-end as a TX device in a thread: completes VM1's TX
    chains and asks for a kick at every one (EVENT_IDX's avail_event), so
    VM1 keeps posting and kicking."""

    def __init__(self, e):
        v = e.backend.vrings[1]
        self.table = ring.RegionTable(e.backend.memory)
        self.q = ring.DeviceQueue(self.table, v.num, v.desc, v.avail, v.used,
                                  features=e.backend.acked_features)
        self.done = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.done += self.q.drain(64).packets
            self.q.notify_enable(True)
            time.sleep(0.001)

    def close(self):
        self._stop.set()
        self._t.join(10)


def test_vm1_kick_eventfd_made_blocking_and_saturated(survivor):
    """VM1's data path kicks its TX ring through the eventfd it gave us:
    full and blocking, a kick would block its pump for good -- and ``stop``,
    which waits for the pump to leave the rings."""
    e = survivor.next_connection()
    consumer = None
    try:
        e.serve_until_started()
        vm1 = survivor.vm1
        consumer = TxConsumer(e)
        kick = e.backend.vrings[1].kick_fd            # VM1's TX kick (its ioeventfd)
        fill(kick)
        blocking(kick)
        log_at = len(vm1.log())
        kicks = vm1.queue("net0", "tx0")["kicks"]
        done = consumer.done
        # VM1 goes on posting and kicking into the full counter
        vm1.wait(lambda: vm1.queue("net0", "tx0")["kicks"] > kicks + 10
                 and consumer.done > done + 10, 10, "VM1 kicking into the full counter")
        for _ in range(3):
            vm1.execute("stop")
            assert vm1.execute("query-status")["status"] == "paused"
            vm1.execute("cont")
            assert vm1.execute("query-status")["status"] == "running"
            done = consumer.done
            vm1.wait(lambda: consumer.done > done + 10, 10, "VM1 sending after cont")
        assert "did not settle" not in vm1.log()[log_at:], vm1.log()[log_at:]
    finally:
        if consumer is not None:
            consumer.close()
        e.close()
    survivor.recover()
    survivor.vm1.wait(lambda: survivor.vm1.device("net0")["link_up"], 10, "link up again")


def test_vm1_call_eventfd_made_blocking_and_read_dry(survivor):
    """We signal VM1's call eventfd and read it back at once, over and
    over, and stop with it empty: VM1's loop, woken by a signal, often
    finds it empty -- a blocking read there waits for a signal that never
    comes, and its monitor with it."""
    e = survivor.next_connection()
    try:
        e.serve_until_started()
        call = blocking(e.backend.vrings[0].call_fd)
        buf = bytearray(8)
        calls = survivor.vm1.queue("net0", "rx0")["calls"]
        for k in range(200):
            os.eventfd_write(call, 1)
            spin = time.perf_counter() + k % 40 * 25e-6   # land between its wake-up and its read
            while time.perf_counter() < spin:
                pass
            try:
                os.preadv(call, [buf], -1, os.RWF_NOWAIT)
            except BlockingIOError:
                pass                                    # VM1 read it first
            assert survivor.vm1.execute("query-status")["status"] == "running"
        assert survivor.vm1.queue("net0", "rx0")["calls"] > calls     # the loop did wake
    finally:
        e.close()
    survivor.recover()
    survivor.vm1.wait(lambda: survivor.vm1.device("net0")["link_up"], 10, "link up again")
