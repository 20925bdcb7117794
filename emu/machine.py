"""One virtual machine: guest RAM, the platform its machine type builds
(address spaces, interrupt controller, PCI bus: :mod:`emu.machines`),
device models, the guest program, vhost-user connections and the run state
the monitor controls.

Threads and locks (see docs/architecture.md):

* the **event loop** (the caller's asyncio loop, main thread) runs the
  vhost-user connections, QMP and device reactions to back-end events;
* the **guest** runs on its own thread (:class:`emu.guest.program.GuestProgram`);
  its register accesses take the machine lock (QEMU's BQL) inside the bus;
* **data-path threads** spin in C without the GIL and take no lock.

Rule that keeps this deadlock-free: the guest thread never waits for the
event loop while it holds the machine lock; the loop takes the lock only
for short device updates (raising an interrupt, a config change).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from emu import memory
from emu.clock import MachineClocks
from emu.errors import EmuBug
from emu.machines import types as machine_types
from emu.machine_nic import NoPeer, mac_bytes
from emu.machines.board import Board
from emu.pci.bus import format_bdf
from emu.qom.machine_tree import add_device as qom_add_device, machine_tree

log = logging.getLogger(__name__)

RUN_STATES = ("prelaunch", "running", "paused", "shutdown")


@dataclass
class DeviceEntry:
    id: str
    driver: str                 # qdev driver name: virtio-net-pci, vhost-pci-net
    function: object            # the PCIFunction on the bus
    model: object               # the VirtioDevice
    bdf: int = 0
    netdev: object | None = None
    props: dict = field(default_factory=dict)
    taps: list = field(default_factory=list)     # emu.pcap.PcapCapture (filter-dump)
    qom: object | None = None   # its emu.qom.Object (/machine/peripheral/ID)
    hotplugged: bool = False

    @property
    def qom_path(self) -> str:
        return f"/machine/peripheral/{self.id}"


class Machine:
    """Build with the ``add_*`` methods, then ``await start()``.

    ``cpus``/``max_cpus``/``numa_nodes``/``max_ram_below_4g``: what ``-smp``,
    ``-numa`` and ``-machine`` tell the machine type's builder
    (:class:`emu.machines.board.Board`); RAM is laid out as the type lays
    it out (pc and q35 split it around the PCI hole below 4 GiB)."""

    def __init__(self, *, name: str = "", ram_size: int = 256 << 20, backend: str = "shm",
                 mem_path: str | None = None, share: bool = True, wire_log=None,
                 machine_type: str | None = None, cpus: int = 1, max_cpus: int = 0,
                 numa_nodes: tuple[int, ...] = (), max_ram_below_4g: int | None = None,
                 qtest: bool = False):
        self.name = name
        self.lock = threading.RLock()
        # -accel qtest: no guest program; the virtual clock moves by qtest only
        self.qtest = qtest
        self.clocks = MachineClocks(qtest=qtest)
        mtype = machine_types.find(machine_type) if machine_type else machine_types.default()
        if mtype is None:
            raise EmuBug(f"unknown machine type {machine_type!r}")
        layout = mtype.layout(ram_size, max_ram_below_4g)
        self.ram = memory.allocate(ram_size, backend, name=name or "ram", mem_path=mem_path,
                                   layout=layout.windows())
        self.ram_backend = backend
        self.board = Board(ram_size, cpus, max_cpus, tuple(numa_nodes), max_ram_below_4g)
        try:
            # the platform every initiator reaches: the guest program, the
            # device models' DMA and MSI writes, a qtest client
            self.system = mtype.build(lock=self.lock, ram=self.ram, board=self.board)
        except BaseException:
            self.ram.close()
            raise
        self.machine_type = mtype
        # the platform's time (the chipset's timers) is the virtual clock, as in QEMU
        self.system.clock = self.clocks.virtual.now
        self.qom = machine_tree(mtype, self.system)     # /machine/... (qtest, qom-*)
        self.globals: list = []          # -global defaults (emu.config.GlobalProperty)
        # how device_add reads a device's properties: -device's parser,
        # given by the command line (emu.config.MachineConfig.device_parser)
        self.device_parser = None
        from emu.machine_hotplug import Hotplug
        self.hotplug = Hotplug(self)
        self.system.on_reset_request = self._guest_reset_request
        self.system.on_power_off = self._guest_power_off
        self.devices: dict[str, DeviceEntry] = {}
        self.netdevs: dict[str, object] = {}
        self.backend_sockets: dict[str, object] = {}    # device id -> VhostUserBackendSocket
        self.hubs = None                  # emu.netdev_internal.HubNetwork, with a hubport
        self.announcer = None             # emu.netdev_announce.Announcer, once announce-self ran
        self.chardevs: dict[str, object] = {}
        self.guest = None
        self.guest_spec: tuple | None = None
        self.run_state = "prelaunch"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wire_log = wire_log
        self._listeners: list = []
        self._next_slot = 2           # QEMU's first free slot on q35 is about here
        self.started_at = time.monotonic()
        self.captures: list = []

    # -- events -------------------------------------------------------------------------------------
    def add_event_listener(self, fn) -> None:
        """``fn(name, data)`` for every event (the QMP server's emit)."""
        self._listeners.append(fn)

    def emit(self, name: str, data: dict | None = None) -> None:
        for fn in list(self._listeners):
            try:
                fn(name, data or {})
            except Exception:
                log.exception("event listener failed for %s", name)

    # -- building -----------------------------------------------------------------------------------
    def _slot(self, addr: str | int | None) -> int:
        if addr is None or addr == "":
            while any(b >> 3 == self._next_slot for b in self.system.functions):
                self._next_slot += 1
            slot = self._next_slot
            self._next_slot += 1
            return slot
        if isinstance(addr, str):
            addr = int(addr.split(".")[0], 16)
        if not 0 <= addr < 32:
            raise EmuBug(f"PCI slot {addr} out of range")
        return addr

    def nic_mac(self, text: str | None) -> bytes:
        """The MAC of a NIC added now: ``mac=``, or QEMU's default for the next NIC."""
        return mac_bytes(text, len(self.devices))

    def add_chardev(self, spec) -> None:
        if spec.id in self.chardevs:
            raise EmuBug(f"duplicate chardev id {spec.id}")
        self.chardevs[spec.id] = spec

    def add_netdev_vhost_user(self, id: str, chardev: str, queues: int = 1,
                              vhost_pci: str = "auto"):
        from emu.netdev import VhostUserNetdev
        spec = self.chardevs[chardev]
        wl = self.wire_log() if callable(self.wire_log) else self.wire_log
        nd = VhostUserNetdev(id, spec, queues=queues, vhost_pci=vhost_pci,
                             wire_log=wl, events=self.emit)
        self.netdevs[id] = nd
        return nd

    def add_netdev_socket(self, id: str, *, fd: int | None = None, listen: str | None = None,
                          connect: str | None = None):
        """``-netdev socket``: emu's C engine moves the NIC's frames to a stream."""
        from emu.netdev_internal import SocketNetdev
        nd = SocketNetdev(id, fd=fd, listen=listen, connect=connect, events=self.emit)
        self.netdevs[id] = nd
        return nd

    def add_netdev_hubport(self, id: str, hubid: int):
        """``-netdev hubport``: a port of hub ``hubid`` (frames to its other ports)."""
        from emu.netdev_internal import HubNetwork, HubPortNetdev
        if self.hubs is None:
            self.hubs = HubNetwork()
        nd = HubPortNetdev(id, hubid, self.hubs, events=self.emit)
        self.netdevs[id] = nd
        return nd

    def add_virtio_net(self, id: str, netdev: str | None, *, mac: bytes, addr=None,
                       mq: bool = False, mrg_rxbuf: bool = True, event_idx: bool = True,
                       indirect_desc: bool = True, host_mtu: int = 0, vectors: int | None = None,
                       queue_size: int = 256, packed: bool = False,
                       disable_legacy: str | bool = "auto",
                       disable_modern: bool = False, hotplug: bool = False) -> DeviceEntry:
        """``netdev`` None: a NIC with no peer (:class:`NoPeer`).  ``hotplug``:
        added at run time (the guest is told through ACPI hotplug)."""
        entry = self.make_virtio_net(id, netdev, mac=mac, mq=mq, mrg_rxbuf=mrg_rxbuf,
                                     event_idx=event_idx, indirect_desc=indirect_desc,
                                     host_mtu=host_mtu, vectors=vectors, queue_size=queue_size,
                                     packed=packed, disable_legacy=disable_legacy,
                                     disable_modern=disable_modern)
        if hotplug:
            return self.hotplug.plug(entry, addr)
        return self.add_device(entry, addr)

    def make_virtio_net(self, id: str, netdev: str | None, *, mac: bytes, mq: bool = False,
                        mrg_rxbuf: bool = True, event_idx: bool = True,
                        indirect_desc: bool = True, host_mtu: int = 0,
                        vectors: int | None = None, queue_size: int = 256,
                        packed: bool = False, disable_legacy: str | bool = "auto",
                        disable_modern: bool = False) -> DeviceEntry:
        """A virtio-net-pci device model and function (:mod:`emu.virtio.net_pci`:
        the model its netdev calls for, QEMU's transitional function), not plugged yet."""
        from emu.virtio import net_pci
        nd = self.netdevs[netdev] if netdev is not None else NoPeer(id)
        model = net_pci.make_model(nd, self.ram, mac=mac, name=id, events=self.emit, mq=mq,
                                   mrg_rxbuf=mrg_rxbuf, event_idx=event_idx,
                                   indirect_desc=indirect_desc, host_mtu=host_mtu,
                                   queue_size=queue_size, packed=packed, loop=self.loop)
        fn = net_pci.make_function(model, name=id, vectors=vectors,
                                   disable_legacy=disable_legacy, disable_modern=disable_modern)
        return DeviceEntry(id, "virtio-net-pci", fn, model,
                           netdev=nd if netdev is not None else None,
                           props={"mac": mac, "netdev": netdev})

    def add_vhost_pci_net(self, id: str, chardev: str, *, mac: bytes, addr=None,
                          queue_pairs: int = 1, peer_vq_max: int = 8,
                          window: int = 4 << 30, queue_size: int = 256,
                          vhost_pci: str = "auto", ack_timeout: float = 1.0,
                          limits=None, packed: bool = False) -> DeviceEntry:
        from emu.netdev import VhostUserBackendSocket
        from emu.virtio.vhost_pci_net import PeerLimits, VhostPciNetDevice, VhostPciNetFunction
        limits = limits or PeerLimits()
        model = VhostPciNetDevice(mac=mac, queue_pairs=queue_pairs, peer_vq_max=peer_vq_max,
                                  window_size=window, queue_size=queue_size,
                                  ack_timeout=ack_timeout, name=id, chardev=chardev,
                                  events=self.emit, limits=limits, packed=packed)
        self.backend_sockets[id] = VhostUserBackendSocket(
            self.chardevs[chardev], model.peer, mapper=model.peer.mapper,
            max_queues=peer_vq_max, counters=model.peer.counters,
            max_regions=limits.max_regions, max_payload=limits.max_payload,
            max_connections=limits.max_connections, message_timeout=limits.message_timeout,
            vhost_pci=vhost_pci, wire_log=self.wire_log)
        fn = VhostPciNetFunction(model, name=id)
        entry = DeviceEntry(id, "vhost-pci-net", fn, model, props={"chardev": chardev, "mac": mac})
        return self.add_device(entry, addr)

    def add_device(self, entry: DeviceEntry, addr=None) -> DeviceEntry:
        """Plug a device model built elsewhere (vhost-pci-net)."""
        slot, fn = self._devfn(addr)
        if not 0 <= slot < 32:
            raise EmuBug(f"PCI slot {slot} out of range")
        other = self.system.functions.get((slot << 3) | fn)
        if other is not None:
            owner = next((e for e in self.devices.values() if e.function is other), None)
            raise ValueError(f"PCI: slot {slot} function {fn} not available for {entry.driver}, "
                             f"in use by {owner.driver if owner else other.name},"
                             f"id={owner.id if owner else '(null)'}")
        entry.bdf = self.system.plug(entry.function, slot, fn)
        self.devices[entry.id] = entry
        entry.qom = qom_add_device(self.qom, entry.id, entry.driver, entry)
        return entry

    def _devfn(self, addr) -> tuple[int, int]:
        """(slot, function) of ``addr`` ("SS[.F]", a slot number, a
        :class:`emu.config.PCIAddress` or None: the first free slot)."""
        if addr is None or addr == "":
            return self._slot(None), 0
        if hasattr(addr, "slot"):
            return addr.slot, addr.function
        if isinstance(addr, str) and "." in addr:
            slot, fn = addr.split(".", 1)
            return int(slot, 16), int(fn)
        return self._slot(addr), 0

    def add_filter_dump(self, id: str, netdev: str, file: str, *, maxlen: int = 65536,
                        queue: str = "all", fd: int | None = None):
        """Capture the frames crossing a NIC into a pcap file.  ``netdev``:
        a -netdev id (its virtio-net-pci) or a vhost-pci-net device id.
        ``queue``: rx (into this VM), tx (out of it) or all.  ``fd``: the
        file already open (the launcher opens it: ``/dev/fdset/N``), owned
        by the capture from here on."""
        from emu.pcap import PcapCapture
        entry = next((e for e in self.devices.values()
                      if (e.netdev is not None and e.netdev.id == netdev)
                      or (e.driver == "vhost-pci-net" and e.id == netdev)), None)
        error = None
        if entry is None:
            error = (f"filter-dump: netdev '{netdev}' is not used by a NIC"
                     if netdev in self.netdevs else
                     f"filter-dump: no netdev or vhost-pci-net device '{netdev}'")
        else:
            for d in ("rx", "tx"):
                if queue in ("all", d) and any(t.wants(d) for t in entry.taps):
                    error = f"filter-dump: '{netdev}' {d} frames are already captured"
        if error is not None:
            if fd is not None:
                os.close(fd)
            raise ValueError(error)
        cap = PcapCapture(file, maxlen, queue, name=id, fd=fd)
        entry.taps.append(cap)
        self.captures.append(cap)
        return cap

    def set_guest(self, driver: str, app: str, params: dict | None = None) -> None:
        self.guest_spec = (driver, app, dict(params or {}))

    # -- running ------------------------------------------------------------------------------------
    async def start(self, paused: bool = False, connect_timeout: float = 10.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.clocks.attach(self.loop)
        for e in self.devices.values():
            if hasattr(e.model, "loop"):
                e.model.loop = self.loop
        for nd in self.netdevs.values():
            await nd.open()
        for e in self.devices.values():
            if getattr(e.function, "interfaces", True) is None:
                # its back-end's features are known now, unless it connects
                # later (server wait=off, reconnect=): then it is taken as modern
                e.function.realize(by_features=e.model.features_known)
        for sock in self.backend_sockets.values():
            await sock.open()
        for e in self.devices.values():
            starter = getattr(e.model, "start_loop_side", None)
            if starter is not None:
                starter()
        if self.guest_spec is not None:
            if self.qtest:
                raise EmuBug("no guest program runs under the qtest accelerator")
            from emu.guest.program import GuestProgram
            driver, app, params = self.guest_spec
            self.guest = GuestProgram(self.system, self.ram, driver, app, params, paused=paused,
                                      name=f"{self.name or 'vm'}-guest", on_event=self.emit,
                                      taps={e.bdf: e.taps for e in self.devices.values()
                                            if e.taps})
            self.guest.start()
        if paused:
            self._pause_devices()
        self.run_state = "paused" if paused else "running"

    # Actions only: the run state and its events belong to the caller
    # (emu.launcher uses emu.qmp.control.RunState, QEMU's rules).
    def stop(self) -> None:
        """Pause the guest, then the devices' own data paths (QEMU's
        vm_stop: the vCPUs, then each device's vm-state handler): neither
        touches the rings until cont."""
        if self.guest is not None:
            self.guest.request("pause")
        self._pause_devices()
        self.run_state = "paused"

    def cont(self) -> None:
        for e in self.devices.values():
            resume = getattr(e.model, "resume", None)
            if resume is not None:
                resume()
        if self.guest is not None:
            self.guest.request("resume")
        self.run_state = "running"

    def _pause_devices(self) -> None:
        for e in self.devices.values():
            pause = getattr(e.model, "pause", None)
            if pause is not None:
                pause()

    async def guest_settled(self, timeout: float = 5.0) -> None:
        """Return once the guest has carried out every request made so far:
        after ``stop`` its data paths no longer touch the rings, as QEMU's
        ``stop`` returns with the vCPUs paused."""
        if self.guest is None or not self.guest.alive:
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def settled() -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
        self.guest.after_requests(settled)
        try:
            await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            # a guest that died meanwhile serves no request: do not hang the monitor
            log.warning("%s: guest did not settle within %s s", self.name, timeout)

    def announce_self(self, params) -> None:
        """QMP announce-self (:mod:`emu.netdev_announce`): every NIC, on
        the machine's real-time clock (as QEMU's QEMU_CLOCK_REALTIME)."""
        if self.announcer is None:
            from emu.netdev_announce import Announcer
            self.announcer = Announcer(
                lambda: [(e.id, e.model) for e in self.devices.values()
                         if e.driver == "virtio-net-pci" and hasattr(e.model, "announce")],
                self.clocks.realtime)
        self.announcer.announce_self(params)

    async def system_reset(self, timeout: float | None = None) -> None:
        """QEMU's qemu_system_reset (:func:`emu.machine_reset.system_reset`)."""
        from emu import machine_reset
        await machine_reset.system_reset(self, timeout)

    def _guest_reset_request(self) -> None:
        from emu import machine_reset
        machine_reset.guest_reset_request(self)

    def _guest_power_off(self) -> None:
        from emu import machine_reset
        machine_reset.guest_power_off(self)

    def system_powerdown(self) -> None:
        """The power button: the ACPI power-button event (PM1 PWRBTN_STS, if
        the guest enabled it) and the guest "OS" powers off at once."""
        pm = self.system.chipset.get("piix4-pm")
        if pm is not None:
            pm.power_button()
        if self.guest is not None:
            self.guest.request("poweroff")

    async def close(self) -> None:
        """Tear everything down (idempotent)."""
        if self.run_state == "shutdown":
            return
        self.run_state = "shutdown"
        if self.announcer is not None:
            self.announcer.close()
        if self.guest is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.guest.stop)
        for sock in self.backend_sockets.values():
            await sock.close()
        for nd in self.netdevs.values():
            await nd.close()
        self.release()

    def release(self) -> None:
        """Release what the machine holds without the event loop: every
        device's model and function, the captures, the bus, guest RAM.  The
        end of :meth:`close`; alone, for a machine never started (a build
        that failed half-way)."""
        self.run_state = "shutdown"
        for e in self.devices.values():
            for obj in (e.model, e.function):
                c = getattr(obj, "close", None)
                if c is not None:
                    try:
                        c()
                    except Exception:
                        log.exception("closing %s", e.id)
        for cap in self.captures:
            cap.close()
        for nd in self.netdevs.values():
            release = getattr(nd, "release", None)     # what needs no loop (netdev_internal)
            if release is not None:
                release()
        if self.hubs is not None:
            self.hubs.close()
        self.clocks.close()
        self.system.close()
        self.ram.close()

    # -- monitor views --------------------------------------------------------------------------------
    def emu_stats(self) -> dict:
        """Per device, per queue: packets, bytes, drops, errors, kicks, calls."""
        guest = self.guest.stats() if self.guest is not None else {"devices": {}}
        out = {}
        for e in self.devices.values():
            dev = {"driver": e.driver, "bdf": format_bdf(e.bdf), "queues": {}}
            model_q = e.model.queue_stats() if hasattr(e.model, "queue_stats") else {}
            guest_q = guest["devices"].get(e.bdf, {})
            for qname in sorted(set(model_q) | set(guest_q)):
                m, g = model_q.get(qname, {}), guest_q.get(qname, {})
                dev["queues"][qname] = {
                    "packets": g.get("packets", 0), "bytes": g.get("bytes", 0),
                    "drops": g.get("drops", 0), "errors": g.get("errors", 0),
                    "kicks": m.get("kicks", 0) + g.get("kicks", 0),
                    "calls": m.get("calls", 0) + g.get("calls", 0),
                    **{k: v for k, v in m.items() if k not in ("kicks", "calls")},
                    **{k: v for k, v in g.items()
                       if k not in ("packets", "bytes", "drops", "errors", "kicks", "calls")},
                }
            if hasattr(e.model, "device_stats"):
                dev.update(e.model.device_stats())
            dev["guest_errors"] = e.function.errors.as_dict()
            if e.taps:
                dev["captures"] = [t.stats() for t in e.taps]
            out[e.id] = dev
        if self.guest is not None:
            out["guest"] = {"app": guest.get("app"), "paused": guest.get("paused"),
                            **guest.get("app_stats", {})}
            if self.guest.error is not None:
                out["guest"]["error"] = str(self.guest.error)
        return out
