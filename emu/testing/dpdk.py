"""DPDK 22.11 ``dpdk-testpmd`` as a real vhost-user peer, without hugepages.

The command lines are the ones that work on this 2-core machine
(``--no-huge -m 1024 --total-num-mbufs 16384``; ``-l 0,1`` with the main
lcore on the other process's forwarding core, so each forwarding loop owns
one core).  testpmd gets SIGINT, never SIGKILL first, so it sends
GET_VRING_BASE and closes cleanly; each run has its own ``--file-prefix``.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

TESTPMD = "dpdk-testpmd"
_PPS = re.compile(rb"Rx-pps:\s+(\d+)")
_TX_PPS = re.compile(rb"Tx-pps:\s+(\d+)")
_RX_PKTS = re.compile(rb"RX-packets:\s+(\d+)")
_TX_PKTS = re.compile(rb"TX-packets:\s+(\d+)")


def available() -> bool:
    return shutil.which(TESTPMD) is not None


class Testpmd:
    """One testpmd process with one vhost-user vdev.

    ``role``: ``"vhost"`` (net_vhost: back-end, socket server) or
    ``"virtio-user"`` (net_virtio_user: front-end, socket client).
    ``mode``: testpmd forward mode (txonly, rxonly, io, macswap...).
    """

    _seq = 0

    def __init__(self, role: str, sock: str, mode: str, *, size: int = 64,
                 main_lcore: int | None = None, devargs: str = "", queues: int = 1,
                 stats_period: int = 1, extra: tuple = (), burst: int | None = None):
        if role not in ("vhost", "virtio-user"):
            raise ValueError(role)
        Testpmd._seq += 1
        self.role, self.sock, self.mode = role, sock, mode
        self.prefix = f"emu{os.getpid()}x{Testpmd._seq}"
        if main_lcore is None:
            main_lcore = 1 if role == "vhost" else 0
        vdev = (f"net_vhost0,iface={sock},queues={queues}" if role == "vhost"
                else f"net_virtio_user0,path={sock},queues={queues}") + devargs
        self.argv = [TESTPMD, "-l", "0,1", "--main-lcore", str(main_lcore),
                     "--no-huge", "-m", "1024", "--no-pci", "--file-prefix", self.prefix,
                     "--vdev", vdev, "--", "--no-mlockall", "--total-num-mbufs", "16384",
                     f"--txpkts={size}", "--stats-period", str(stats_period),
                     f"--forward-mode={mode}", *extra]
        if burst:
            self.argv.append(f"--burst={burst}")
        self.out = bytearray()
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> "Testpmd":
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self):
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            self.out += chunk

    def wait_socket(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"testpmd did not create {self.sock}:\n{self.text[-2000:]}")
            time.sleep(0.05)

    def wait_output(self, pattern: bytes, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while pattern not in self.out:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"testpmd: no {pattern!r}:\n{self.text[-2000:]}")
            time.sleep(0.05)

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def rx_pps(self) -> list[int]:
        return [int(m) for m in _PPS.findall(bytes(self.out))]

    def tx_pps(self) -> list[int]:
        return [int(m) for m in _TX_PPS.findall(bytes(self.out))]

    def totals(self) -> tuple[int, int]:
        """(RX-packets, TX-packets) from the last statistics block."""
        out = bytes(self.out)
        rx = _RX_PKTS.findall(out)
        tx = _TX_PKTS.findall(out)
        return (int(rx[-1]) if rx else 0, int(tx[-1]) if tx else 0)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGKILL if it hangs; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._reader:
            self._reader.join(2)
        shutil.rmtree(f"/var/run/dpdk/{self.prefix}", ignore_errors=True)
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def pair_mpps(size: int, seconds: float = 6.0, direction: str = "u2v",
              devargs_vhost: str = "", devargs_vu: str = "") -> float | None:
    """DPDK's own one-copy figure: testpmd virtio-user <-> testpmd vhost.

    ``u2v``: virtio-user txonly -> vhost rxonly (vhost dequeue, guest TX);
    ``v2u``: vhost txonly -> virtio-user rxonly.  Returns the median Rx-pps
    (in Mpps) of the receiving side, skipping the first two seconds."""
    if not available():
        return None
    with tempfile.TemporaryDirectory(prefix="emu-dpdk-") as d:
        sock = os.path.join(d, "vhost.sock")
        vh_mode, vu_mode = ("rxonly", "txonly") if direction == "u2v" else ("txonly", "rxonly")
        vh = Testpmd("vhost", sock, vh_mode, size=size, devargs=devargs_vhost).start()
        try:
            vh.wait_socket()
            vu = Testpmd("virtio-user", sock, vu_mode, size=size, devargs=devargs_vu).start()
            try:
                time.sleep(seconds)
            finally:
                vu.stop()
        finally:
            vh.stop()
        rx = (vh if direction == "u2v" else vu).rx_pps()
        rx = [x for x in rx if x > 0][2:] or [x for x in rx if x > 0]
        if not rx:
            return None
        rx.sort()
        return rx[len(rx) // 2] / 1e6
