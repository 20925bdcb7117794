"""Python face of the engine's virtio-net data path (``emu/_ring_net.c``):
a NIC's queues moved to and from a stream socket (:class:`NetPort`, QEMU's
``-netdev socket`` framing) or between the NICs of a hub (:class:`Hub`),
by a :class:`~emu.ring.pump.Pump` job (``add_net``, ``add_hub``).

Who touches what: the job owns the socket and the staging buffers while
the link is up, and the rings while they are not paused.  Python

* sets the socket with :meth:`NetPort.set_socket` (only while the link is
  down; the job gives the link up on EOF, an error or a garbage length and
  signals :attr:`NetPort.event_fd`), takes it back with :meth:`take_socket`;
* attaches the NIC's :class:`~emu.ring.DeviceQueue` pair with
  :meth:`attach` / :meth:`detach` while the rings are paused
  (:meth:`pause_rings` returns once the job is out of them);
* hands frames to send with :meth:`inject` (an announce: sent between two
  whole frames of the stream, never inside one).
"""
from __future__ import annotations

import os
import time

from emu import eventfd as efd
from emu._ring import ffi, lib
from emu.errors import EmuBug
from emu.ring.burst import RingError
from emu.ring.queues import DeviceQueue

NET_BUFSIZE = lib.EMU_NET_BUFSIZE
LEN_SIZE = lib.EMU_NET_LEN_SIZE
INJECT_MAX = lib.EMU_NET_INJECT_MAX
HUB_MAX_PORTS = lib.EMU_HUB_MAX_PORTS
TX_STAGING = 256 * 1024          # bytes of frames waiting for the socket
RX_STAGING = 256 * 1024          # bytes read, waiting to be parsed

LINK_NAMES = {lib.EMU_NET_UP: "up", lib.EMU_NET_NOSOCK: "no-socket", lib.EMU_NET_EOF: "eof",
              lib.EMU_NET_ERROR: "error", lib.EMU_NET_OVERSIZE: "oversize"}
_STAT_FIELDS = ("tx_frames", "tx_bytes", "rx_frames", "rx_bytes", "tx_oversize", "tx_errors",
                "tx_dropped", "tx_lost_bytes", "rx_dropped", "rx_errors", "rx_waits",
                "rx_oversize", "partial_writes", "write_blocked", "partial_reads", "injected",
                "inject_dropped", "eof", "errors")


def _eventfd() -> int:
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


class NetPort:
    """One NIC's side of the engine's data path.  ``max_frame``: the
    largest frame either way (QEMU's NET_BUFSIZE)."""

    def __init__(self, *, max_frame: int = NET_BUFSIZE, name: str = "",
                 tx_staging: int = TX_STAGING, rx_staging: int = RX_STAGING):
        self.name = name
        p = self.p = ffi.new("struct emu_netport *")
        self._txbuf = ffi.new("uint8_t[]", max(tx_staging, LEN_SIZE + max_frame))
        self._rxbuf = ffi.new("uint8_t[]", max(rx_staging, 2 * (LEN_SIZE + max_frame)))
        p.txbuf, p.txcap = self._txbuf, len(self._txbuf)
        p.rxbuf, p.rxcap = self._rxbuf, len(self._rxbuf)
        p.max_frame = max_frame
        p.fd = -1
        p.link = lib.EMU_NET_NOSOCK
        self._own_wake = _eventfd()
        p.wake_fd = self._own_wake
        self.event_fd = _eventfd()
        p.event_fd = self.event_fd
        rc = lib.emu_net_check(p)
        if rc:
            raise EmuBug(f"net port {name}: bad staging ({RingError(rc)})")
        self.tx: DeviceQueue | None = None
        self.rx: DeviceQueue | None = None
        self.pump = None                 # the Pump running its job (for pause_rings)

    # -- the socket ------------------------------------------------------------------------
    @property
    def link(self) -> str:
        return LINK_NAMES.get(int(self.p.link), str(int(self.p.link)))

    @property
    def up(self) -> bool:
        return int(self.p.link) == lib.EMU_NET_UP

    @property
    def last_errno(self) -> int:
        return int(self.p.last_errno)

    def set_socket(self, fd: int) -> None:
        """Hand the job a connected stream socket (made non-blocking here);
        the link comes up, the staging starts empty."""
        os.set_blocking(fd, False)
        if lib.emu_net_set_fd(self.p, fd):
            raise EmuBug(f"net port {self.name}: set_socket while the link is up")

    def take_socket(self) -> int | None:
        """The socket of a link that went down (the caller closes it), or None."""
        fd = lib.emu_net_take_fd(self.p)
        return None if fd < 0 else fd

    def release(self) -> int | None:
        """Once no job runs: the socket back whatever the link's state
        (the caller closes it); the link reads no-socket."""
        if self._job_running():
            raise EmuBug(f"net port {self.name}: release while its job runs")
        fd = int(self.p.fd)
        self.p.fd = -1
        self.p.link = lib.EMU_NET_NOSOCK
        return None if fd < 0 else fd

    def consume_event(self) -> bool:
        """Read :attr:`event_fd` (the link went down); True if it was set."""
        return efd.drain(self.event_fd) > 0

    # -- the rings -------------------------------------------------------------------------
    def attach(self, tx: DeviceQueue, rx: DeviceQueue) -> None:
        """The NIC's TX and RX queues; only while paused (or no job runs)."""
        self._need_out("attach")
        self.tx, self.rx = tx, rx
        self.p.tx, self.p.rx = tx.q, rx.q

    def detach(self) -> None:
        """Let go of the queues (a driver reset); a frame waiting for RX
        buffers is dropped, the stream stays in step."""
        self._need_out("detach")
        self.p.tx = self.p.rx = ffi.NULL
        self.tx = self.rx = None
        lib.emu_net_purge_rx(self.p)

    def pause_rings(self, timeout: float = 5.0) -> None:
        """Return once the job no longer touches the rings (it keeps
        writing what it has staged and what is injected)."""
        self.p.rings_paused = 1
        self._wake()
        deadline = time.monotonic() + timeout
        while self._job_running() and self.p.in_rings:
            if time.monotonic() > deadline:
                raise EmuBug(f"net port {self.name}: the job did not leave the rings")
            time.sleep(0.0002)

    def resume_rings(self) -> None:
        self.p.rings_paused = 0
        self._wake()

    @property
    def rings_paused(self) -> bool:
        return bool(self.p.rings_paused)

    def _job_running(self) -> bool:
        return self.pump is not None and self.pump.running

    def _need_out(self, what: str) -> None:
        if self._job_running() and (not self.p.rings_paused or self.p.in_rings):
            raise EmuBug(f"net port {self.name}: {what} while the job may be in the rings")

    def _wake(self) -> None:
        efd.signal(int(self.p.wake_fd))     # a full counter wakes the job anyway

    # -- frames from Python ------------------------------------------------------------------
    def inject(self, frame: bytes) -> bool:
        """Queue ``frame`` for the job to send (False: the queue is full)."""
        if len(frame) > INJECT_MAX:
            raise EmuBug(f"an injected frame is at most {INJECT_MAX} bytes")
        return lib.emu_net_inject(self.p, frame, len(frame)) == 0

    # -- monitor ----------------------------------------------------------------------------
    def stats(self) -> dict:
        st = self.p.st
        out = {k: int(getattr(st, k)) for k in _STAT_FIELDS}
        out["wakeups"] = int(self.p.wake_st.wakeups)
        out["link"] = self.link
        if self.p.last_errno:
            out["last_errno"] = os.strerror(int(self.p.last_errno))
        out["staged_tx_bytes"] = int(self.p.tx_tail - self.p.tx_head)
        return out

    def close(self) -> None:
        """Release the eventfds (the caller stopped the pump, closed the socket)."""
        for fd in (self._own_wake, self.event_fd):
            if fd >= 0:
                os.close(fd)
        self._own_wake = self.event_fd = -1


class Hub:
    """The NIC ports of one hub (QEMU's ``-netdev hubport,hubid=N``)."""

    def __init__(self, name: str = ""):
        self.name = name
        self.h = ffi.new("struct emu_hub *")
        self.wake_fd = _eventfd()
        self.h.wake_fd = self.wake_fd
        self.ports: list[NetPort] = []

    def add_port(self, port: NetPort) -> None:
        """Before the hub's job starts."""
        if len(self.ports) >= HUB_MAX_PORTS:
            raise EmuBug(f"hub {self.name}: at most {HUB_MAX_PORTS} ports")
        port.p.wake_fd = self.wake_fd
        self.h.ports[len(self.ports)] = port.p
        self.ports.append(port)
        self.h.nports = len(self.ports)

    def close(self) -> None:
        for port in self.ports:
            port.close()
        if self.wake_fd >= 0:
            os.close(self.wake_fd)
            self.wake_fd = -1
