"""Stateful fuzzing of a real VM2 process (``-device vhost-pci-net``, guest
app echo in interrupt mode) by :class:`vu_machine.VhostUserMachine` over
its socket: any message in any order with fds of every kind, and the
peer's powers over the eventfds it shared.

After every step: VM2 is alive and its monitor answers ``query-status``
(the QMP client's 15 s timeout is the deadline).  Every request that wants
a reply gets it or sees the connection closed -- never silence.  After
every connection: VM2 lets the peer go, holds exactly the fds it held
before (/proc/PID/fd), maps none of the peer's memory and no more than
before (/proc/PID/maps), and a well-behaved front-end gets an echo.

CI: a bounded run; ``EMU_FUZZ_LONG=1``: the long run.
"""
from __future__ import annotations

import array
import os
import shutil
import socket
import tempfile
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from emu.vhost_user.codec import Decoder, close_fds
from emu.vhost_user.messages import FrontendRequest as F

from tests.hostile.evil_frontend import MARKER, EchoPeer
from tests.hostile.procs import Emu, peer_mappings, vm2_args

from .vu_machine import Tally, VhostUserMachine

LONG = os.environ.get("EMU_FUZZ_LONG") == "1"
MAPS_SLACK = 8
REPLY_TIMEOUT = 15.0


class SocketTransport:
    """One connection at a time to VM2's vhost-pci-net socket.  A VM2 found
    dead, hung or unclean is replaced by a fresh one (its log kept in
    ``failures``) before the failure is raised: the next example, and every
    example hypothesis replays while it shrinks, starts from a sound VM2."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, "vp0.sock")
        self.sock: socket.socket | None = None
        self.closed = True
        self.vm2: Emu | None = None
        self.failures: list[str] = []
        self.settles = 0
        self.launch()

    def launch(self):
        self.vm2 = Emu("vm2", vm2_args([self.path]), self.run_dir)
        self.good_session()                       # warm-up: every code path loaded
        self.wait_gone()
        self.base_fds = self.vm2.fds()
        self.base_maps = len(self.vm2.maps())

    def replace(self, why: str):
        self.close()
        log = self.vm2.log()[-4000:] if self.vm2 is not None else ""
        self.failures.append(f"{why}\n{log}")
        if self.vm2 is not None:
            self.vm2.kill()
        self.launch()

    def checked(self, fn, *args):
        try:
            return fn(*args)
        except BaseException as e:
            self.replace(f"{type(e).__name__}: {e}")
            raise

    def rebase(self):
        pass                                      # VM2's baseline is VM2's own

    def open(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(REPLY_TIMEOUT)
        self.sock.connect(self.path)
        self.dec = Decoder(F)
        self.closed = False

    def exchange(self, data, fds, expect):
        if self.closed:
            return None
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            self.sock.sendmsg([data], anc)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True
            return None
        if not expect:
            return None
        req = int.from_bytes(data[:4], "little")
        while True:                               # a reply to an earlier raw request may come first
            msg = self._recv()
            if msg is None:
                return None
            close_fds(msg.fds)
            if msg.is_reply and int(msg.request) == req:
                return msg

    def _recv(self):
        while True:
            try:
                msg = self.dec.next_message()
            except Exception:                     # VM2 sent what emu's codec refuses: a bug
                raise AssertionError("VM2 sent a malformed message")
            if msg is not None:
                return msg
            try:
                data, anc, _, _ = self.sock.recvmsg(self.dec.wanted(), socket.CMSG_SPACE(8 * 4))
            except (ConnectionResetError, BrokenPipeError):
                data, anc = b"", []
            except socket.timeout:
                self.replace("reply timeout")
                raise AssertionError(f"VM2 neither answered nor closed within {REPLY_TIMEOUT} s")
            fds = [fd for _, kind, d in anc if kind == socket.SCM_RIGHTS
                   for fd in array.array("i", d[:len(d) - len(d) % 4])]
            if not data:
                close_fds(fds)
                self.closed = True
                return None
            self.dec.feed(data, fds)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.dec.close()
            self.sock = None
        self.closed = True

    def check_alive(self):
        self.checked(self._check_alive)

    def _check_alive(self):
        assert self.vm2.alive(), self.vm2.log()[-3000:]
        assert self.vm2.execute("query-status")["status"] == "running"

    def settle(self, timeout: float = 1.0):
        """Until VM2's driver acknowledged the device's latest generation
        (it has rebuilt its data path on what we sent), or ``timeout``."""
        def acked():
            d = self.vm2.device("vp0")
            self.settles += 1
            return d["generation"] == d["driver_ack"]
        try:
            self.vm2.wait(acked, timeout, "VM2's driver to settle")
        except TimeoutError:
            pass                   # a peer may play whenever it likes: the check is alive()

    def wait_gone(self, timeout: float = 20.0):
        def gone():
            d = self.vm2.device("vp0")
            return d["peer_state"] == 0 and \
                d["vhost_user"]["disconnects"] == d["vhost_user"]["connections"]
        self.vm2.wait(gone, timeout, "VM2 to let the peer go")

    def after_close(self, owned=frozenset()):
        self.checked(self._after_close)

    def _after_close(self):
        self.wait_gone()
        fds = self.vm2.fds()
        extra = {fd: what for fd, what in fds.items() if fd not in self.base_fds}
        assert len(fds) == len(self.base_fds), f"VM2 fds {len(self.base_fds)} -> {len(fds)}: {extra}"
        assert not peer_mappings(self.vm2, MARKER), "VM2 still maps the peer's memory"
        assert len(self.vm2.maps()) <= self.base_maps + MAPS_SLACK, \
            f"VM2 mappings {self.base_maps} -> {len(self.vm2.maps())}"
        self.good_session()

    def good_session(self):
        peer = EchoPeer(self.path)
        try:
            peer.roundtrip(1, timeout=20)
        finally:
            peer.close()


@pytest.fixture(scope="module")
def run_dir():
    d = tempfile.mkdtemp(prefix="emu-fz-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_vm2_stateful(run_dir):
    transport = SocketTransport(run_dir)
    transport.open()

    class Machine(VhostUserMachine):
        transport_factory = staticmethod(lambda: transport)
        tally = Tally()

        def teardown(self):
            super().teardown()
            transport.open()
    started = time.monotonic()
    try:
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=300 if LONG else 40, stateful_step_count=60 if LONG else 25,
            deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        transport.close()
        print(f"VM2 process: {Machine.tally} in {time.monotonic() - started:.0f} s "
              f"({transport.settles} settle polls)")
        for f in transport.failures:
            print("VM2 replaced after:", f)
        code = transport.vm2.quit()
        assert code == 0, transport.vm2.log()[-3000:]
