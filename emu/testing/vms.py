"""Machines wired together in one process, for tests and benchmarks that
do not need separate processes: VM2 (vhost-pci-net, server) and VM1
(virtio-net-pci over vhost-user, client), optionally VM3 behind a second
vhost-pci-net device of VM2 (forwarding).  Everything runs on the calling
asyncio loop plus each machine's guest and data-path threads."""
from __future__ import annotations

import asyncio
import os
import tempfile
import time

from emu.machine import Machine
from emu.netdev import SocketSpec

MAC1 = bytes.fromhex("525400000001")
MAC2 = bytes.fromhex("525400000002")
MAC3 = bytes.fromhex("525400000003")


def vm2(sock: str | list[str], app: str = "echo", params: dict | None = None, *,
        backend: str = "shm", ram: int = 64 << 20, vhost_pci: str = "auto",
        ack_timeout: float = 1.0, name: str = "vm2", packed: bool = False) -> Machine:
    """``packed``: the device offers packed own queues (the peer's rings may
    be either format whatever it is)."""
    m = Machine(name=name, ram_size=ram, backend=backend)
    socks = [sock] if isinstance(sock, str) else list(sock)
    for i, path in enumerate(socks):
        m.add_chardev(SocketSpec(f"c{i}", path=path, server=True, wait=False))
        m.add_vhost_pci_net(f"vp{i}", f"c{i}", mac=MAC2, vhost_pci=vhost_pci,
                            ack_timeout=ack_timeout, packed=packed)
    m.set_guest("vhost-pci-net", app, params or {})
    return m


def vm1(sock: str, app: str = "gen", params: dict | None = None, *, backend: str = "memfd",
        ram: int = 64 << 20, mac: bytes = MAC1, reconnect: float = 0.0, vhost_pci: str = "auto",
        name: str = "vm1", **nic) -> Machine:
    m = Machine(name=name, ram_size=ram, backend=backend)
    m.add_chardev(SocketSpec("c0", path=sock, reconnect=reconnect))
    m.add_netdev_vhost_user("n0", "c0", vhost_pci=vhost_pci)
    m.add_virtio_net("net0", "n0", mac=mac, **nic)
    m.set_guest("virtio-net", app, params or {})
    return m


class Events:
    """Collects machine events; ``wait`` for one by name."""

    def __init__(self, *machines: Machine):
        self.items: list[tuple[str, str, dict]] = []
        for m in machines:
            m.add_event_listener(lambda name, data, m=m: self.items.append((m.name, name, data)))

    def names(self, machine: str | None = None) -> list[str]:
        return [n for m, n, _ in self.items if machine is None or m == machine]

    async def wait(self, name: str, machine: str | None = None, timeout: float = 10.0,
                   count: int = 1) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            hits = [d for m, n, d in self.items if n == name and (machine is None or m == machine)]
            if len(hits) >= count:
                return hits[count - 1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} event ({count}) within {timeout} s; saw {self.names()}")
            await asyncio.sleep(0.02)


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(interval)


def guest_stats(m: Machine) -> dict:
    return m.emu_stats().get("guest", {})


def sock_path(tmpdir: str | None = None, name: str = "vp.sock") -> str:
    d = tmpdir or tempfile.mkdtemp(prefix="emu-")
    return os.path.join(d, name)
