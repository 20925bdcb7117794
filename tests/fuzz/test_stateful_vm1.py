"""Stateful fuzzing of emu's vhost-user front-end: a real VM1 process
(virtio-net-pci, ``reconnect=1``, a generator guest) against a hostile
back-end that answers each of VM1's requests honestly (emu's own Backend)
or not -- wrong ids, flags, sizes, fds, garbage, a refusal, a close
mid-reply --, pushes unsolicited messages, abuses the back-end request
channel, corrupts VM1's used rings and plays with the eventfds VM1 gave it.

After every step VM1 is alive and its monitor answers.  After every
example an honest back-end gets the whole set-up again (handshake, memory,
rings, DRIVER_OK), the link comes up, and VM1 holds exactly the fds it
held before, with no more mappings.

CI: a bounded run; ``EMU_FUZZ_LONG=1``: the long run.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import socket
import struct
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from emu.errors import PeerError
from emu.vhost_user.codec import HEADER, close_fds
from emu.vhost_user.messages import BackendRequest as B, Iotlb, VringState

from tests.hostile.evil_backend import EvilBackend, Listener, channel_message
from tests.hostile.procs import Emu, vm1_args

from . import peer_fds
from .vu_machine import Tally, VhostUserMachine

LONG = os.environ.get("EMU_FUZZ_LONG") == "1"
MAPS_SLACK = 8
STEP_WAIT = 2.0          # s to wait for VM1's next request in a step (VM1 may be idle)


class Vm1:
    """VM1, the socket it reconnects to, and its baseline."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.failures: list[str] = []
        self.listener = Listener(os.path.join(run_dir, "be.sock"))
        self.launch()

    def launch(self):
        self.vm = Emu("vm1", vm1_args(self.listener.path, reconnect=1,
                                      guest="virtio-net,app=gen,size=64,rate=1000,mode=interrupt"),
                     self.run_dir)
        self.current = self.listener.accept()
        self.current.serve_until_started()
        self.vm.wait(lambda: self.vm.device("net0")["link_up"], 15, "link up")
        # the baseline is the running guest's: its app (the app's module, the
        # modules it loads on first use, its pump thread) comes up after the link
        self.vm.wait(lambda: self.vm.queue("net0", "tx0")["packets"] > 0, 15, "traffic")
        self.base_fds = len(self.vm.fds())
        self.base_maps = len(self.vm.maps())

    def replace(self, why: str):
        self.failures.append(f"{why}\n{self.vm.log()[-4000:]}")
        self.current.close()
        self.vm.kill()
        self.launch()

    def checked(self, fn):
        try:
            return fn()
        except BaseException as e:
            self.replace(f"{type(e).__name__}: {e}")
            raise

    def alive(self):
        assert self.vm.alive(), self.vm.log()[-3000:]
        assert self.vm.execute("query-status")["status"] in ("running", "paused")

    def recover(self):
        """An honest back-end: VM1 redoes everything and is as it was."""
        self.current.close()
        self.current = self.listener.accept(30)
        self.current.serve_until_started(30)
        self.vm.wait(lambda: self.vm.device("net0")["link_up"], 15, "link up again")
        fds = len(self.vm.fds())
        assert fds == self.base_fds, f"VM1 fds {self.base_fds} -> {fds}: {self.vm.fds()}"
        assert len(self.vm.maps()) <= self.base_maps + MAPS_SLACK

    def close(self):
        self.current.close()
        code = self.vm.quit()
        self.listener.close()
        assert code == 0, self.vm.log()[-3000:]


class HostileBackend(RuleBasedStateMachine):
    vm1: Vm1 = None
    tally = Tally()

    def __init__(self):
        super().__init__()
        self.tally.examples += 1
        self.e: EvilBackend | None = None

    # -- plumbing -----------------------------------------------------------------------------
    def _conn(self) -> EvilBackend:
        """The connection VM1 has with us now (a new one once it reconnected)."""
        if self.e is None or self.e.closed:
            if self.e is not None:
                self.e.close()
            self.e = self.vm1.listener.accept(30)
            self.tally.connections += 1
        return self.e

    def _next(self):
        """VM1's next request, or None if it has none for now or left."""
        e = self._conn()
        try:
            msg = e.recv(STEP_WAIT)
        except (socket.timeout, TimeoutError):
            return None
        return msg

    def teardown(self):
        if self.e is not None:
            self.e.close()
        self.vm1.current = self.e if self.e is not None else self.vm1.current
        self.vm1.checked(self.vm1.recover)

    @invariant()
    def alive(self):
        self.tally.steps += 1
        self.vm1.checked(self.vm1.alive)

    # -- rules -----------------------------------------------------------------------------------
    @initialize(how=st.sampled_from(["fresh", "started"]))
    def start(self, how):
        self.vm1.current.close()                 # the honest session ends: VM1 reconnects to us
        if how == "started":
            self._conn().serve_until_started(30)

    @rule(n=st.integers(1, 12))
    def serve_honestly(self, n):
        e = self._conn()
        for _ in range(n):
            try:
                msg = e.recv(STEP_WAIT)
            except (socket.timeout, TimeoutError):
                return
            if msg is None:
                return
            try:
                for out in e.backend.handle(msg):
                    e.send(out)
                e._sync_channel()
            except OSError:
                e.closed = True
                return
            except Exception as err:         # the honest Backend refused VM1's request: a drop
                if not isinstance(err, PeerError):
                    raise
                e.closed = True
                return

    @rule(how=st.sampled_from(["other-id", "no-reply-flag", "short", "long", "huge", "with-fd",
                               "status-1", "garbage", "close-mid-reply", "twice"]))
    def answer_badly(self, how):
        msg = self._next()
        if msg is None:
            return
        try:
            self._answer_badly(self.e, msg, how)
        except OSError:                  # VM1 dropped us already: that is its right
            self.e.closed = True

    def _answer_badly(self, e, msg, how):
        close_fds(msg.fds)
        req, body = int(msg.request), struct.pack("<Q", 1 << 32)
        if how == "other-id":
            e.send_header((req % 40) + 1, 5, 8, body)
        elif how == "no-reply-flag":
            e.send_header(req, 1, 8, body)
        elif how == "short":
            e.send_header(req, 5, 4, bytes(4))
        elif how == "long":
            e.send_header(req, 5, 16, bytes(16))
        elif how == "huge":
            e.send_header(req, 5, 1 << 30)
        elif how == "with-fd":
            fd = peer_fds.make("eventfd")
            try:
                e.send_header(req, 5, 8, body, (fd,))
            finally:
                os.close(fd)
        elif how == "status-1":
            e.send_header(req, 5, 8, struct.pack("<Q", 1))
        elif how == "garbage":
            e.send_raw(os.urandom(64))
        elif how == "close-mid-reply":
            e.send_raw(HEADER.pack(req, 5, 8) + b"\x01")
            e.sock.shutdown(socket.SHUT_RDWR)
        else:
            for out in e.backend.handle(msg):
                e.send(out)
                e.send(out)

    @rule(req=st.integers(0, 45), flags=st.sampled_from([1, 5, 9]), n=st.integers(1, 200))
    def unsolicited(self, req, flags, n):
        e = self._conn()
        one = HEADER.pack(req, flags, 8) + struct.pack("<Q", 1 << 32)
        try:
            e.send_raw(one * n)
        except OSError:
            e.closed = True

    @rule(what=st.sampled_from(["call-bad-ring", "call-ring-0", "err", "config", "iotlb",
                                "garbage", "host-notifier"]))
    def channel(self, what):
        e = self._conn()
        if e.backend.backend_req_fd is None:
            return
        ch = e.channel()
        try:
            ch.setblocking(False)
            data = {"call-bad-ring": channel_message(B.VRING_CALL, VringState(200, 0)),
                    "call-ring-0": channel_message(B.VRING_CALL, VringState(0, 0)),
                    "err": channel_message(B.VRING_ERR, VringState(1, 0)),
                    "config": channel_message(B.CONFIG_CHANGE_MSG, need_reply=True),
                    "iotlb": channel_message(B.IOTLB_MSG, Iotlb(0, 4096, 0, 1, 1), need_reply=True),
                    "garbage": os.urandom(40),
                    "host-notifier": HEADER.pack(B.VRING_HOST_NOTIFIER_MSG, 1, 0)}[what]
            ch.send(data)
        except OSError:
            pass
        finally:
            ch.close()

    @rule(index=st.sampled_from([0, 1]), what=st.sampled_from(["bad-id", "jump", "len"]))
    def corrupt_used(self, index, what):
        e = self._conn()
        v = e.backend.vrings[index] if index < len(e.backend.vrings) else None
        if v is None or not v.used or e.backend.memory is None:
            return
        if what == "bad-id":
            ctypes.memmove(v.used + 4, struct.pack("<II", 0xFFFF, 64), 8)
            idx = ctypes.c_uint16.from_address(v.used + 2)
            idx.value = (idx.value + 1) & 0xFFFF
        elif what == "jump":
            ctypes.c_uint16.from_address(v.used + 2).value ^= 0x8000
        else:
            ctypes.memmove(v.used + 4, struct.pack("<II", 0, 1 << 30), 8)

    @rule(which=st.sampled_from(["kick", "call"]), index=st.sampled_from([0, 1]),
          actions=st.lists(st.sampled_from(["signal", "drain", "fill", "blocking"]),
                           min_size=1, max_size=5))
    def eventfd_games(self, which, index, actions):
        """VM1's own kick (its ioeventfd) and call eventfds, as we hold them."""
        e = self._conn()
        v = e.backend.vrings[index] if index < len(e.backend.vrings) else None
        fd = None if v is None else (v.kick_fd if which == "kick" else v.call_fd)
        if fd is None:
            return
        for action in actions:
            VhostUserMachine._poke(fd, action)

    @rule(what=st.sampled_from(["stop-cont", "reset"]))
    def guest(self, what):
        """The monitor drives VM1 while the back-end misbehaves (and must not hang)."""
        if what == "stop-cont":
            self.vm1.vm.execute("stop")
            self.vm1.vm.execute("cont")
            return
        # the reset waits for this back-end's replies: ask from a thread and
        # serve meanwhile, as a back-end in its own process would
        with ThreadPoolExecutor(1) as pool:
            reset = pool.submit(self.vm1.vm.execute, "system_reset")
            while not reset.done() and self.e is not None and not self.e.closed:
                self.serve_honestly(1)
            reset.result(30)

    @rule()
    def hang_up(self):
        self._conn().close()
        self.e = None


def test_vm1_stateful():
    d = tempfile.mkdtemp(prefix="emu-fz1-", dir="/tmp")
    vm1 = Vm1(d)

    class Machine(HostileBackend):
        tally = Tally()
    Machine.vm1 = vm1
    started = time.monotonic()
    try:
        from hypothesis.stateful import run_state_machine_as_test
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=100 if LONG else 10, stateful_step_count=40 if LONG else 12,
            deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        print(f"VM1 process: {Machine.tally} in {time.monotonic() - started:.0f} s")
        for f in vm1.failures:
            print("VM1 replaced after:", f)
        try:
            vm1.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)
