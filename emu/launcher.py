"""The ``emu`` process: a parsed command line becomes a running VM.

Order (each step QEMU-like, and the monitor first so a harness gets its
greeting within milliseconds):

1. ``-daemonize``: fork; the parent exits once the child is up (0) or
   failed (1), as QEMU's parent does.
2. QMP listeners (``-qmp``, ``-mon``); heavy modules are imported only now.
3. The machine: RAM, chardevs, netdevs, devices, captures, guest.
   A failure here is reported ``emu: -device ...: reason`` with exit 1 and
   leaves nothing behind.
4. ``wait=on`` monitors: hold until a client connects.
5. Start (``-S``: prelaunch, the guest waits for ``cont``), then serve
   until ``quit``, a signal (SHUTDOWN host-signal) or the guest's power-off.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from emu.cli import MachineConfig, die, monitor_endpoints
from emu.qmp import MonitorSetupError, QmpServer
from emu.qmp.control import (GUEST_SHUTDOWN, HOST_QMP_QUIT, HOST_SIGNAL, QmpError, RunState)

log = logging.getLogger("emu")

DEFAULT_MAC = (0x52, 0x54, 0x00, 0x12, 0x34, 0x56)


class StartupError(Exception):
    """A configuration the machine cannot build; ``origin`` names the option."""

    def __init__(self, origin: str, msg: str):
        super().__init__(f"{origin}: {msg}" if origin else msg)


def _mac(text: str | None, index: int) -> bytes:
    if text:
        return bytes(int(p, 16) for p in text.split(":"))
    m = list(DEFAULT_MAC)
    m[5] = (m[5] + index) & 0xFF
    return bytes(m)


def _setup_logging(cfg: MachineConfig) -> None:
    level = logging.DEBUG if "vhost_user" in cfg.log_items or "all" in cfg.log_items \
        else logging.WARNING
    handler = logging.FileHandler(cfg.log_file) if cfg.log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("emu: %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    if "guest_errors" in cfg.log_items:
        logging.getLogger("emu.pci.errors").setLevel(logging.DEBUG)


def build_machine(cfg: MachineConfig, emit):
    """Everything the command line describes, not started yet."""
    from emu.machine import Machine
    from emu.netdev import SocketSpec
    from emu.virtio.vhost_pci_net import PeerLimits
    wire_log = None
    if "vhost_user_wire" in cfg.trace.events:
        from emu.vhost_user.wirelog import WireLog
        # one log per connection (the transport closes it when the peer goes)
        target = cfg.trace.file or cfg.log_file or sys.stderr

        def wire_log():
            return WireLog(target, label=cfg.name or "")
    ram = cfg.ram
    try:
        m = Machine(name=cfg.name or "", ram_size=ram.size, backend=ram.backend,
                    mem_path=ram.mem_path, wire_log=wire_log, machine_type=cfg.machine_type)
    except Exception as e:
        raise StartupError(ram.origin, f"cannot allocate guest RAM: {e}") from None
    m.add_event_listener(emit)
    try:
        monitors = {mon.chardev for mon in cfg.monitors}   # the QMP server's, not ours
        for c in cfg.chardevs:
            if c.backend == "socket" and c.id not in monitors:
                m.add_chardev(SocketSpec(c.id, path=c.path, fd=c.fd, server=c.server,
                                         wait=c.wait, reconnect=float(c.reconnect)))
        for n in cfg.netdevs:
            m.add_netdev_vhost_user(n.id, n.chardev, queues=n.queues, vhost_pci=n.vhost_pci)
        for i, d in enumerate(cfg.devices):
            slot = d.addr.slot if d.addr else None
            try:
                if d.driver == "virtio-net-pci":
                    if d.netdev is None:
                        # QEMU runs a NIC without a peer; emu's device model is
                        # its vhost-user back-end, so there is nothing to run.
                        raise ValueError("emu cannot run a NIC without a back-end: "
                                         "give it netdev= (a vhost-user netdev)")
                    m.add_virtio_net(d.id or f"net{i}", d.netdev, mac=_mac(d.mac, i), addr=slot,
                                     mq=d.mq, mrg_rxbuf=d.mrg_rxbuf, event_idx=d.event_idx,
                                     indirect_desc=d.indirect_desc, host_mtu=d.host_mtu or 0,
                                     vectors=d.vectors, queue_size=d.rx_queue_size)
                else:
                    m.add_vhost_pci_net(d.id or f"vp{i}", d.chardev, mac=_mac(d.mac, i),
                                        addr=slot, queue_pairs=d.queues, window=d.window,
                                        vhost_pci=d.vhost_pci,
                                        ack_timeout=d.ack_timeout_ms / 1000,
                                        peer_vq_max=d.peer_vqs,
                                        limits=PeerLimits(d.max_connections, d.max_payload,
                                                          d.max_regions, d.max_mem,
                                                          d.message_timeout_ms / 1000))
            except Exception as e:
                raise StartupError(d.origin, str(e)) from None
        for obj in cfg.objects:
            if obj.__class__.__name__ == "FilterDump":
                try:
                    m.add_filter_dump(obj.id, obj.netdev, obj.file, maxlen=obj.maxlen,
                                      queue=obj.queue)
                except Exception as e:
                    raise StartupError(obj.origin, str(e)) from None
        if cfg.guest is not None:
            try:
                from emu.guest.program import _drivers_for
                _, _, apps = _drivers_for(cfg.guest.driver)
                if cfg.guest.app not in apps:
                    raise ValueError(f"unknown app '{cfg.guest.app}' for driver "
                                     f"{cfg.guest.driver} (have {', '.join(sorted(apps))})")
            except ValueError as e:
                raise StartupError(cfg.guest.origin, str(e)) from None
            m.set_guest(cfg.guest.driver, cfg.guest.app, cfg.guest.params)
    except BaseException:
        _close_now(m)
        raise
    return m


def _close_now(m) -> None:
    """Release what a half-built machine holds (before any loop work)."""
    for e in m.devices.values():
        for obj in (e.model, e.function):
            c = getattr(obj, "close", None)
            if c is not None:
                try:
                    c()
                except Exception:
                    pass
    m.system.close()
    m.ram.close()


class MachineAdapter:
    """emu.qmp's MachineControl over an emu.machine.Machine, with QEMU's
    run-state rules."""

    def __init__(self, machine, cfg: MachineConfig, emit, on_exit):
        self.m = machine
        self.cfg = cfg
        self.rs = RunState(emit, start_paused=cfg.start_paused, no_shutdown=cfg.no_shutdown)
        self._on_exit = on_exit
        self.started = False

    @property
    def name(self):
        return self.cfg.name

    @property
    def run_state(self) -> str:
        return self.rs.state

    # The actions answer once the guest has carried them out: after ``stop``
    # the counters are frozen, after ``cont`` and ``system_reset`` traffic runs.
    async def stop(self):
        if self.rs.running:
            self.m.stop()
            await self.m.guest_settled()
        self.rs.stop()          # STOP once paused, as QEMU's do_vm_stop

    async def cont(self):
        was_prelaunch = self.rs.state == "prelaunch"
        if self.rs.cont():
            self.m.cont()
            if was_prelaunch:
                self.started = True
            await self.m.guest_settled()

    async def system_reset(self):
        self.rs.reset()
        self.m.system_reset()
        await self.m.guest_settled()

    def system_powerdown(self):
        self.rs.powerdown()
        self.m.system_powerdown()

    def guest_powered_off(self):
        if self.rs.shutdown(guest=True, reason=GUEST_SHUTDOWN):
            self._on_exit()

    def quit(self):
        self.rs.shutdown(guest=False, reason=HOST_QMP_QUIT)
        self._on_exit()

    def signal(self):
        self.rs.shutdown(guest=False, reason=HOST_SIGNAL)
        self._on_exit()

    # -- views -------------------------------------------------------------------------------------
    def query_pci(self) -> list:
        if self.m.system.pci is None:          # no PCI bus: QEMU answers []
            return []
        devs = []
        ids = {e.bdf: e.id for e in self.m.devices.values()}
        for bdf, fn in sorted(self.m.system.functions.items()):
            cfg = fn.config
            rd = lambda off, n: int.from_bytes(cfg[off:off + n], "little")  # noqa: E731
            regions = []
            for index, bar in sorted(fn.bars.items()):
                r = {"bar": index, "type": "io" if bar.kind == "io" else "memory",
                     "address": bar.address if bar.address is not None else 0xFFFFFFFFFFFFFFFF,
                     "size": bar.size}
                if bar.kind != "io":
                    r["prefetch"] = bool(bar.prefetchable)
                    r["mem_type_64"] = bar.kind == "mem64"
                regions.append(r)
            d = {"bus": bdf >> 8, "slot": (bdf >> 3) & 0x1F, "function": bdf & 7,
                 "class_info": {"class": rd(0x0A, 2), "desc": _class_desc(rd(0x0A, 2))},
                 "id": {"vendor": rd(0, 2), "device": rd(2, 2),
                        "subsystem-vendor": rd(0x2C, 2), "subsystem": rd(0x2E, 2)},
                 "qdev_id": ids.get(bdf, ""), "regions": regions}
            if cfg[0x3D]:
                d["irq_pin"] = cfg[0x3D]
                d["irq"] = cfg[0x3C]
            devs.append(d)
        return [{"bus": 0, "devices": devs}]

    def query_chardev(self) -> list:
        out = []
        open_ids = set()
        for nd in self.m.netdevs.values():
            if nd.connected:
                open_ids.add(nd.sock.id)
        for e in self.m.devices.values():
            if e.driver == "vhost-pci-net" and getattr(e.model, "backend", None) is not None:
                open_ids.add(e.props["chardev"])
        for spec in self.m.chardevs.values():
            if spec.path:
                fn = f"unix:{spec.path}{',server=on' if spec.server else ''}"
            else:
                fn = f"fd:{spec.fd}"
            out.append({"label": spec.id, "filename": fn,
                        "frontend-open": spec.id in open_ids})
        return out

    def emu_stats(self) -> dict:
        raw = self.m.emu_stats()
        devices = []
        for dev_id, d in raw.items():
            if dev_id == "guest":
                continue
            queues = []
            for qname, q in d["queues"].items():
                queues.append({"name": qname, "index": q.get("index", _qindex(qname)),
                               **{k: q.get(k, 0) for k in
                                  ("packets", "bytes", "drops", "errors", "kicks", "calls")},
                               **{k: v for k, v in q.items() if k not in
                                  ("packets", "bytes", "drops", "errors", "kicks", "calls",
                                   "index")}})
            extra = {k: v for k, v in d.items() if k not in ("queues",)}
            devices.append({"id": dev_id, **extra, "queues": queues})
        out = {"devices": devices}
        if "guest" in raw:
            out["guest"] = raw["guest"]
        return out

    def set_guest_app(self, app: str, params: dict):
        """Switch the guest's app; answers once the new app runs."""
        g = self.m.guest
        if g is None:
            raise QmpError("This VM has no guest program (-guest)")
        if app not in g.apps:
            raise QmpError(f"Unknown app '{app}' for driver {g.kind} "
                           f"(have {', '.join(sorted(g.apps))})")
        g.request("set_app", app, {k: str(v) for k, v in params.items()})
        return self.m.guest_settled()

    def info_network(self) -> str:
        lines = []
        for e in self.m.devices.values():
            mac = ":".join(f"{b:02x}" for b in e.props.get("mac", b""))
            lines.append(f"{e.id}: index=0,type=nic,model={e.driver},macaddr={mac}")
            if e.netdev is not None:
                nd = e.netdev
                state = "connected" if nd.connected else "disconnected"
                lines.append(f" \\ {nd.id}: index=0,type=vhost-user,"
                             f"vhost-user to {nd.sock.id} ({state})")
            elif e.driver == "vhost-pci-net":
                peer = "connected" if getattr(e.model, "backend", None) else "disconnected"
                lines.append(f" \\ {e.props['chardev']}: vhost-user back-end (peer {peer})")
        return "\n".join(lines)


def _class_desc(cls: int) -> str:
    return {0x0200: "Ethernet controller", 0x0600: "Host bridge",
            0x0601: "ISA bridge"}.get(cls, "Class %04x" % cls)


def _qindex(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    n = int(digits) if digits else 0
    if name.startswith("rx"):
        return 2 * n
    if name.startswith("tx"):
        return 2 * n + 1
    return n


async def serve(cfg: MachineConfig, ready=None) -> int:
    server = QmpServer()
    for ep, mon in zip(monitor_endpoints(cfg), cfg.monitors):
        try:
            await server.add_monitor(ep)
        except MonitorSetupError as e:
            await server.close()
            die(f"{mon.origin}: {e}")
    # Let the sessions send their greetings now: building the machine blocks
    # the loop for a while (imports, RAM), and a harness that negotiates
    # meanwhile sees every event of the machine's start-up.
    await asyncio.sleep(0)
    _setup_logging(cfg)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    try:
        machine = build_machine(cfg, server.emit)
    except StartupError as e:
        await server.close()
        die(str(e))
    adapter = MachineAdapter(machine, cfg, server.emit, lambda: loop.call_soon_threadsafe(done.set))

    def on_event(name, data):
        if name == "EMU_GUEST_POWEROFF":
            loop.call_soon_threadsafe(adapter.guest_powered_off)
    machine.add_event_listener(on_event)
    server.attach(adapter)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, adapter.signal)
    await server.wait_for_clients()
    # start-up may wait (a reconnect= netdev waits for its first back-end,
    # as QEMU does): a quit or a signal meanwhile still ends the process
    starting = loop.create_task(machine.start(paused=cfg.start_paused))
    stopper = loop.create_task(done.wait())
    await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        try:
            await starting
        except (asyncio.CancelledError, Exception):
            pass
    elif starting.exception() is not None:
        e = starting.exception()
        stopper.cancel()
        await machine.close()
        await server.close()
        die(f"{_origin_of(cfg, e)}{e}")
    if ready is not None and not done.is_set():
        ready()
    await done.wait()
    stopper.cancel()
    await machine.close()
    await server.close()
    return 0


def _origin_of(cfg: MachineConfig, err: Exception) -> str:
    for n in cfg.netdevs:
        if n.id in str(err) or (cfg.chardev(n.chardev) and str(cfg.chardev(n.chardev).path) in str(err)):
            return f"{n.origin}: "
    return f"{cfg.netdevs[0].origin}: " if cfg.netdevs else ""


def _daemonize():
    """Fork; the parent waits for the child's word and exits with it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        status = os.read(r, 1)
        os._exit(0 if status == b"0" else 1)
    os.close(r)
    os.setsid()
    fd = os.open(os.devnull, os.O_RDWR)
    os.dup2(fd, 0)
    if fd > 2:
        os.close(fd)

    def ready():
        try:
            os.write(w, b"0")
            os.close(w)
        except OSError:
            pass
        # stdout/stderr leave the parent's terminal, as QEMU's do
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
    return ready


def run(cfg: MachineConfig) -> int:
    ready = None
    if cfg.daemonize:
        ready = _daemonize()
    if cfg.pidfile:
        try:
            with open(cfg.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as e:
            die(f"cannot create PID file: {e}")
    try:
        return asyncio.run(serve(cfg, ready))
    finally:
        if cfg.pidfile:
            try:
                os.unlink(cfg.pidfile)
            except OSError:
                pass
