"""Traffic between emu VM processes, measured from the outside.

A :class:`Topology` starts the VMs of one set-up on a :class:`~emu.testing.procs.Fleet`:

* ``echo``: VM1 ``gen`` -> VM2 ``echo`` (peer TX -> peer RX, one copy) -> VM1;
* ``sink``: VM1 ``gen`` -> VM2 ``sink`` (one copy into VM2's own RX);
* ``forward``: VM1 ``gen`` -> VM2 ``forward`` (two vhost-pci devices, one
  copy) -> VM3 ``sink``.

Everything is read the way a user would: QMP ``query-emu-stats`` of every
VM, ``/proc`` for CPU time.  :meth:`Topology.measure` runs one frame size:
switch VM1's app to ``gen``, warm up, count over a window, switch back to
``sink`` and wait until every packet is accounted for
(sent == received + drops).  Placement on 2+ cores: VM2's copy loop on
CPU 0, VM1 on CPU 1 (DPDK's testpmd layout), VM3 on CPU 2 if there is one,
else beside VM1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from emu.testing import procs

APPS = ("echo", "sink", "forward")
MAC1, MAC3 = "52:54:00:00:00:01", "52:54:00:00:00:03"


class TrafficError(RuntimeError):
    """A VM's guest failed, or traffic never started."""


@dataclass
class Snapshot:
    """Counters of every VM of a topology at one instant."""
    t: float
    sent: int
    received: int
    rx_bytes: int
    drops: int
    errors: int
    cpu: float
    queues: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    def rate(self, before: "Snapshot") -> dict:
        dt = max(self.t - before.t, 1e-9)
        pk = self.received - before.received
        return {"mpps": pk / dt / 1e6, "gbps": (self.rx_bytes - before.rx_bytes) * 8 / dt / 1e9,
                "drops": self.drops - before.drops, "errors": self.errors - before.errors,
                "cpu_s": self.cpu - before.cpu, "window_s": dt, "packets": pk}

    def balance(self, before: "Snapshot") -> dict:
        sent = self.sent - before.sent
        received = self.received - before.received
        drops = self.drops - before.drops
        return {"sent": sent, "received": received, "drops": drops,
                "errors": self.errors - before.errors,
                "balanced": sent == received + drops}


def _sum_queues(dev: dict, prefix: str) -> tuple[int, int]:
    qs = [q for q in dev["queues"]
          if q["name"].startswith(prefix) and q["name"][len(prefix):].isdigit()]
    return sum(q["packets"] for q in qs), sum(q["bytes"] for q in qs)


class Topology:
    """The VMs of one set-up, started with VM1 idle (``sink``)."""

    def __init__(self, fleet: procs.Fleet, app: str = "echo", *, queues: int = 1,
                 mode: str = "poll", max_size: int = 1518, ram: str = "256M",
                 tag: str = ""):
        if app not in APPS:
            raise ValueError(f"app {app!r}: expected one of {', '.join(APPS)}")
        if mode not in ("poll", "interrupt"):
            raise ValueError(f"mode {mode!r}: expected poll or interrupt")
        self.fleet, self.app, self.queues, self.mode = fleet, app, queues, mode
        self.max_size = max_size
        self.ram = ram
        self.tag = tag
        self.vms: list = []
        self.source = self.receiver = None
        self.started_s = 0.0

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> "Topology":
        f, t0, tag = self.fleet, time.monotonic(), self.tag
        drv = procs.driver_params(self.max_size, self.mode)
        socks = [f.path(f"{tag}a.sock")]
        if self.app == "forward":
            socks.append(f.path(f"{tag}b.sock"))
        vm2 = f.emu(procs.vhost_pci_args(socks, self.app, {"mode": self.mode}, queues=self.queues,
                                         ram=self.ram, name=f"{tag}vm2"),
                    name=f"{tag}vm2", cpus=f.cpus(0))
        self.vms.append(vm2)
        for s in socks:
            f.wait_socket(s, vm2)
        if self.app == "forward":
            # a third core if there is one; else VM3 shares VM1's
            vm3 = f.emu(procs.virtio_net_args(socks[1], "sink", drv, queues=self.queues,
                                              ram=self.ram, name=f"{tag}vm3", mac=MAC3),
                        name=f"{tag}vm3", cpus=f.cpus(min(2, procs.cpu_count() - 1)))
            self.vms.append(vm3)
        vm1 = f.emu(procs.virtio_net_args(socks[0], "sink", drv, queues=self.queues,
                                          ram=self.ram, name=f"{tag}vm1", mac=MAC1),
                    name=f"{tag}vm1", cpus=f.cpus(1))
        self.vms.append(vm1)
        self.source = vm1
        self.receiver = {"echo": vm1, "sink": vm2, "forward": self.vms[1]}[self.app]
        for vm in self.vms:
            self._wait_guest(vm)
        self.started_s = time.monotonic() - t0
        return self

    @staticmethod
    def _wait_guest(vm, timeout: float = 30.0) -> None:
        """The monitor greets before the machine runs: wait for its guest."""
        deadline = time.monotonic() + timeout
        while "guest" not in vm.cmd("query-emu-stats"):
            if time.monotonic() > deadline:
                raise TrafficError(f"{vm.name}: no guest program after {timeout} s")
            time.sleep(0.01)

    @property
    def pids(self) -> list[int]:
        return [vm.pid for vm in self.vms]

    def stop(self) -> None:
        for vm in reversed(self.vms):
            self.fleet.stop(vm)
        self.vms = []

    # -- counters --------------------------------------------------------------------------------
    def stats(self) -> dict:
        return {vm.name: vm.cmd("query-emu-stats") for vm in self.vms}

    def snapshot(self) -> Snapshot:
        t = time.monotonic()
        raw = self.stats()
        cpu = sum(procs.cpu_seconds(vm.pid) for vm in self.vms)
        sent = received = rx_bytes = drops = errors = 0
        queues = {}
        for vm in self.vms:
            st = raw[vm.name]
            if "error" in st.get("guest", {}):
                raise TrafficError(f"{vm.name}: guest failed: {st['guest']['error']}")
            for dev in st["devices"]:
                errors += dev.get("guest_errors", {}).get("total", 0)
                for q in dev["queues"]:
                    drops += q["drops"]
                    errors += q["errors"]
                    queues[f"{vm.name}.{dev['id']}.{q['name']}"] = (
                        q["packets"], q["bytes"], q["drops"], q["errors"])
                if vm is self.source:
                    sent += _sum_queues(dev, "tx")[0]
                if vm is self.receiver and dev["driver"] in ("virtio-net-pci", "vhost-pci-net"):
                    p, b = _sum_queues(dev, "rx")
                    received += p
                    rx_bytes += b
        return Snapshot(t, sent, received, rx_bytes, drops, errors, cpu, queues)

    # -- one measurement -----------------------------------------------------------------------
    def start_traffic(self, size: int, burst: int | None = None) -> None:
        if size > self.max_size:
            raise ValueError(f"size {size} > max_size {self.max_size} the VMs were started for")
        params = {"size": size, "count": 0, "dst": MAC3 if self.app == "forward" else
                  "52:54:00:00:00:02"}
        if burst:
            params["burst"] = burst
        self.source.cmd("emu-set-guest-app", app="gen", params=params)

    def stop_traffic(self) -> None:
        self.source.cmd("emu-set-guest-app", app="sink", params={})

    def settle(self, before: Snapshot, timeout: float = 5.0) -> Snapshot:
        """After :meth:`stop_traffic`: wait until every packet sent since
        ``before`` was received or dropped (or nothing moves for 0.5 s)."""
        deadline = time.monotonic() + timeout
        last, still = None, time.monotonic()
        while True:
            s = self.snapshot()
            if s.balance(before)["balanced"]:
                return s
            key = (s.sent, s.received, s.drops)
            if key != last:
                last, still = key, time.monotonic()
            if time.monotonic() - still > 0.5 or time.monotonic() > deadline:
                return s
            time.sleep(0.02)

    def measure(self, size: int, seconds: float, *, warmup: float = 0.5,
                burst: int | None = None, tick: float = 0.25,
                on_tick: Callable[[Snapshot, Snapshot, dict], None] | None = None) -> dict:
        """One frame size: Mpps/Gbps over ``seconds`` after ``warmup``,
        CPU per packet, and the counter balance once traffic stopped."""
        pre = self.snapshot()
        self.start_traffic(size, burst)
        phase = {"size": size, "phase": "start", "elapsed": 0.0, "seconds": seconds}
        try:
            first = self._wait_first(pre, on_tick, phase)
            phase["phase"] = "warm-up"
            prev = first
            end_warm = first.t + warmup
            while time.monotonic() < end_warm:
                time.sleep(min(tick, max(0.0, end_warm - time.monotonic())))
                cur = self.snapshot()
                if on_tick:
                    on_tick(prev, cur, phase)
                prev = cur
            s0 = self.snapshot()
            phase["phase"] = "measure"
            prev, end = s0, s0.t + seconds
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                time.sleep(min(tick, end - now))
                cur = self.snapshot()
                phase["elapsed"] = cur.t - s0.t
                if on_tick:
                    on_tick(prev, cur, phase)
                prev = cur
            s1 = prev if prev is not s0 else self.snapshot()
        finally:
            self.stop_traffic()
        done = self.settle(pre)
        r = s1.rate(s0)
        out = {"size": size, "app": self.app, "queues": self.queues, "mode": self.mode,
               "mpps": r["mpps"], "gbps": r["gbps"], "window_s": r["window_s"],
               "cpu_s": r["cpu_s"], "processes": len(self.vms),
               "cpu_ns_per_packet": r["cpu_s"] / r["packets"] * 1e9 if r["packets"] else None,
               **done.balance(pre)}
        out["per_queue_mpps"] = {k: (v[0] - s0.queues.get(k, (0,))[0]) / r["window_s"] / 1e6
                                 for k, v in s1.queues.items()
                                 if v[0] != s0.queues.get(k, (0,))[0]}
        return out

    def _wait_first(self, pre: Snapshot, on_tick, phase, timeout: float = 15.0) -> Snapshot:
        deadline = time.monotonic() + timeout
        prev = pre
        while True:
            s = self.snapshot()
            if on_tick:
                on_tick(prev, s, phase)
            if s.received > pre.received:
                return s
            if time.monotonic() > deadline:
                raise TrafficError(f"no packet reached {self.receiver.name} within {timeout} s")
            prev = s
            time.sleep(0.05)
