"""DPDK 22.11 ``dpdk-testpmd`` as a real vhost-user peer, without hugepages.

The command lines are the ones that work on this 2-core machine
(``--no-huge -m 1024 --total-num-mbufs 16384``; ``-l 0,1`` with the main
lcore on the other process's forwarding core, so each forwarding loop owns
one core).  testpmd gets SIGINT, never SIGKILL first, so it sends
GET_VRING_BASE and closes cleanly; each run has its own ``--file-prefix``;
``setpriv --pdeathsig KILL`` takes it down if the harness dies (the signal
follows the thread that started it: start testpmd from a thread that
outlives it, normally the main thread).

Reference set-ups for the benchmarks (:func:`one_copy`, :func:`vswitch`)
report the receiver's Rx-pps (median over a window after a warm-up) and
the CPU seconds every testpmd used in that window (/proc utime + stime).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from typing import Sequence

from emu.testing import orphans
from emu.testing.procs import command, cpu_seconds

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
    ``vdevs``: the ``--vdev`` arguments, replacing the one ``role`` implies
    (a vswitch has two ``net_vhost`` ports).
    """

    _seq = 0

    def __init__(self, role: str, sock: str, mode: str, *, size: int = 64,
                 main_lcore: int | None = None, devargs: str = "", queues: int = 1,
                 stats_period: int = 1, extra: tuple = (), burst: int | None = None,
                 vdevs: Sequence[str] | None = None):
        if role not in ("vhost", "virtio-user"):
            raise ValueError(role)
        Testpmd._seq += 1
        self.role, self.sock, self.mode = role, sock, mode
        self.prefix = f"emu{os.getpid()}x{Testpmd._seq}"
        if main_lcore is None:
            main_lcore = 1 if role == "vhost" else 0
        if vdevs is None:
            vdevs = [(f"net_vhost0,iface={sock},queues={queues}" if role == "vhost"
                      else f"net_virtio_user0,path={sock},queues={queues}") + devargs]
        vdev_args = [a for v in vdevs for a in ("--vdev", v)]
        self.argv = [TESTPMD, "-l", "0,1", "--main-lcore", str(main_lcore),
                     "--no-huge", "-m", "1024", "--no-pci", "--file-prefix", self.prefix,
                     *vdev_args, "--", "--no-mlockall", "--total-num-mbufs", "16384",
                     f"--txpkts={size}", "--stats-period", str(stats_period),
                     f"--forward-mode={mode}", *extra]
        if burst:
            self.argv.append(f"--burst={burst}")
        self.out = bytearray()
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> "Testpmd":
        self.proc = orphans.popen(command(self.argv), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self):
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            self.out += chunk

    def wait_socket(self, timeout: float = 20.0) -> None:
        self.wait_path(self.sock, timeout)

    def wait_path(self, path: str, timeout: float = 20.0) -> None:
        """Wait for a socket file this testpmd creates (net_vhost iface)."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"testpmd did not create {path}:\n{self.text[-2000:]}")
            time.sleep(0.05)

    def wait_output(self, pattern: bytes, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while pattern not in self.out:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"testpmd: no {pattern!r}:\n{self.text[-2000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

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


def _measure(receiver: Testpmd, procs: Sequence[Testpmd], seconds: float,
             warmup: float, start_deadline: float = 60.0) -> dict:
    """Rx-pps of ``receiver`` (median of the lines printed in the window)
    and the CPU time of ``procs`` over the same window.  The window opens
    ``warmup`` seconds after traffic is seen: on a loaded machine the EAL
    start-up and link negotiation of three testpmds can take far longer
    than any fixed warm-up (``start_deadline`` bounds that wait)."""
    deadline = time.monotonic() + start_deadline
    while not any(receiver.rx_pps()) and time.monotonic() < deadline:
        if any(p.proc is not None and p.proc.poll() is not None for p in procs):
            break                        # one died: its output says why, below
        time.sleep(0.2)
    time.sleep(warmup)
    n0, c0, t0 = len(receiver.rx_pps()), sum(cpu_seconds(p.pid) for p in procs), time.monotonic()
    time.sleep(seconds)
    c1, t1 = sum(cpu_seconds(p.pid) for p in procs), time.monotonic()
    pps = [x for x in receiver.rx_pps()[n0:] if x > 0]
    if not pps:
        raise RuntimeError(f"testpmd: no traffic in the window:\n{receiver.text[-2000:]}")
    mpps = statistics.median(pps) / 1e6
    cpu = c1 - c0
    return {"mpps": mpps, "window_s": t1 - t0, "cpu_s": cpu, "processes": len(procs),
            "cpu_ns_per_packet": cpu / (mpps * 1e6 * (t1 - t0)) * 1e9, "pps_samples": pps}


def one_copy(size: int, seconds: float = 4.0, direction: str = "u2v", *,
             warmup: float = 2.0, devargs_vhost: str = "", devargs_vu: str = "") -> dict | None:
    """DPDK's own one-copy figure: testpmd ``net_virtio_user`` <-> testpmd
    ``net_vhost``, one forwarding loop each on its own core.

    ``u2v``: virtio-user txonly -> vhost rxonly (the vhost side dequeues:
    one copy, like VM2 reading VM1's TX); ``v2u``: vhost txonly ->
    virtio-user rxonly.  None if testpmd is not installed."""
    if not available():
        return None
    with tempfile.TemporaryDirectory(prefix="emu-dpdk-") as d:
        sock = os.path.join(d, "vhost.sock")
        vh_mode, vu_mode = ("rxonly", "txonly") if direction == "u2v" else ("txonly", "rxonly")
        vh = Testpmd("vhost", sock, vh_mode, size=size, devargs=devargs_vhost).start()
        vu = None
        try:
            vh.wait_socket()
            vu = Testpmd("virtio-user", sock, vu_mode, size=size, devargs=devargs_vu).start()
            r = _measure(vh if direction == "u2v" else vu, [vh, vu], seconds, warmup)
        finally:
            if vu is not None:
                vu.stop()
            vh.stop()
    return {"size": size, "setup": f"testpmd virtio-user -> testpmd vhost ({direction})", **r}


def vswitch(size: int, seconds: float = 4.0, *, warmup: float = 2.0) -> dict | None:
    """The two-copy path vhost-pci replaces: VM1 (testpmd virtio-user,
    txonly) -> a vswitch (testpmd with two ``net_vhost`` ports, io
    forwarding: dequeue copy + enqueue copy) -> VM3 (testpmd virtio-user,
    rxonly).  Three busy loops: the vswitch's on CPU 0, VM1's and VM3's
    share CPU 1.  Mpps at VM3; CPU of all three processes."""
    if not available():
        return None
    with tempfile.TemporaryDirectory(prefix="emu-dpdk-") as d:
        s0, s1 = os.path.join(d, "vs0.sock"), os.path.join(d, "vs1.sock")
        sw = Testpmd("vhost", s0, "io", size=size,
                     vdevs=[f"net_vhost0,iface={s0},queues=1",
                            f"net_vhost1,iface={s1},queues=1"]).start()
        started = [sw]
        try:
            sw.wait_socket()
            sw.wait_path(s1)
            vm3 = Testpmd("virtio-user", s1, "rxonly", size=size).start()
            started.append(vm3)
            vm1 = Testpmd("virtio-user", s0, "txonly", size=size).start()
            started.append(vm1)
            r = _measure(vm3, started, seconds, warmup)
        finally:
            for t in reversed(started):
                t.stop()
    return {"size": size, "setup": "testpmd virtio-user -> testpmd vswitch (2x net_vhost, io) "
                                  "-> testpmd virtio-user", **r}


def pair_mpps(size: int, seconds: float = 6.0, direction: str = "u2v",
              devargs_vhost: str = "", devargs_vu: str = "") -> float | None:
    """Median Rx-pps (Mpps) of :func:`one_copy` (2 s warm-up, then the rest)."""
    r = one_copy(size, max(1.0, seconds - 2.0), direction, devargs_vhost=devargs_vhost,
                 devargs_vu=devargs_vu)
    return r["mpps"] if r else None
