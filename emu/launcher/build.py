"""A checked :class:`~emu.config.MachineConfig` becomes an
:class:`emu.machine.Machine`, not started yet.

The heavy modules (memory, devices, vhost-user) are imported only here,
once the monitors listen.  A failure names the option at fault
(:class:`StartupError`) and leaves nothing behind.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from emu import fdset
from emu.config import FilterDump, MachineConfig, VhostPCINet, VirtioNetPCI
from emu.errors import PeerError
from emu.guest import registry
from emu.launcher.errors import StartupError


class Created:
    """Files start-up creates: removed again if the VM does not start
    (a failed start leaves nothing behind)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def open(self, path: str, flags: int, fdsets) -> int:
        new = fdset.set_id(path) is None and not os.path.lexists(path)
        fd = fdset.open_path(path, flags | os.O_CREAT, 0o644, fdsets)
        if new:
            self.paths.append(path)
        return fd

    def remove(self) -> None:
        for path in self.paths:
            try:
                if os.path.isfile(path) and not os.path.islink(path):
                    os.unlink(path)
            except OSError:
                pass
        self.paths = []


def build_machine(cfg: MachineConfig, emit: Callable[[str, dict | None], None],
                  created: Created | None = None):
    """Everything the command line describes, not started yet."""
    from emu.launcher.logs import wire_log_factory
    from emu.machine import Machine
    ram = cfg.ram
    created = created if created is not None else Created()
    numa = tuple(cfg.object(i).size for i in cfg.numa_memdevs)
    try:
        m = Machine(name=cfg.name or "", ram_size=ram.size, backend=ram.backend,
                    mem_path=ram.mem_path, wire_log=wire_log_factory(cfg),
                    machine_type=cfg.machine_type, cpus=cfg.smp, max_cpus=cfg.max_cpus,
                    numa_nodes=numa, max_ram_below_4g=cfg.max_ram_below_4g,
                    qtest=cfg.qtest_accel)
    except Exception as e:
        raise StartupError(ram.origin, f"cannot allocate guest RAM: {e}") from None
    m.globals = list(cfg.globals)
    m.device_parser = cfg.device_parser
    m.add_event_listener(emit)
    try:
        _populate(m, cfg, created)
    except BaseException:
        m.release()
        created.remove()
        raise
    return m


def _populate(m: Any, cfg: MachineConfig, created: Created) -> None:
    from emu.machine import mac_bytes
    # the QMP server's, the qtest endpoint's and the serial ports' chardevs
    # are not the machine's
    others = {mon.chardev for mon in cfg.monitors} | {s.chardev for s in cfg.serials} \
        | ({cfg.qtest.chardev} if cfg.qtest else set())
    if any(c.backend == "socket" and c.id not in others for c in cfg.chardevs):
        from emu.netdev import SocketSpec       # the vhost-user modules, only when used
    if any(isinstance(d, VhostPCINet) for d in cfg.devices):
        from emu.virtio.vhost_pci_net import PeerLimits
    for c in cfg.chardevs:
        if c.backend == "socket" and c.id not in others:
            m.add_chardev(SocketSpec(c.id, path=c.path, fd=c.fd, server=c.server,
                                     wait=c.wait, reconnect=float(c.reconnect)))
    for n in cfg.netdevs:
        try:
            if n.type == "socket":
                m.add_netdev_socket(n.id, fd=n.fd, listen=n.listen, connect=n.connect)
            elif n.type == "hubport":
                m.add_netdev_hubport(n.id, n.hubid)
            else:
                m.add_netdev_vhost_user(n.id, n.chardev, queues=n.queues, vhost_pci=n.vhost_pci)
        except PeerError as e:
            raise StartupError(n.origin, str(e)) from None
    for i, d in enumerate(cfg.devices):
        slot = d.addr
        try:
            if isinstance(d, VirtioNetPCI):
                # a NIC without netdev= has no peer (emu.machine.NoPeer), as in QEMU
                m.add_virtio_net(d.id or f"net{i}", d.netdev, mac=mac_bytes(d.mac, i), addr=slot,
                                 mq=d.mq, mrg_rxbuf=d.mrg_rxbuf, event_idx=d.event_idx,
                                 indirect_desc=d.indirect_desc, host_mtu=d.host_mtu or 0,
                                 vectors=d.vectors, queue_size=d.rx_queue_size, packed=d.packed,
                                 disable_legacy=d.disable_legacy,
                                 disable_modern=d.disable_modern)
            elif isinstance(d, VhostPCINet):
                m.add_vhost_pci_net(d.id or f"vp{i}", d.chardev, mac=mac_bytes(d.mac, i),
                                    addr=slot, queue_pairs=d.queues, window=d.window,
                                    vhost_pci=d.vhost_pci, ack_timeout=d.ack_timeout_ms / 1000,
                                    peer_vq_max=d.peer_vqs, packed=d.packed,
                                    limits=PeerLimits(d.max_connections, d.max_payload,
                                                      d.max_regions, d.max_mem,
                                                      d.message_timeout_ms / 1000))
        except Exception as e:
            raise StartupError(d.origin, str(e)) from None
    for obj in cfg.objects:
        if isinstance(obj, FilterDump):
            try:
                fd = created.open(obj.file, os.O_WRONLY | os.O_TRUNC | os.O_APPEND, cfg.fdsets)
                m.add_filter_dump(obj.id, obj.netdev, obj.file, maxlen=obj.maxlen, queue=obj.queue,
                                  fd=fd)
            except OSError as e:
                raise StartupError(obj.origin, f"Could not open '{obj.file}': {e.strerror}") from None
            except Exception as e:
                raise StartupError(obj.origin, str(e)) from None
    g = cfg.guest
    if g is not None:
        try:    # parse_args checked it; a config built otherwise is checked here
            drv = registry.driver(g.driver)
            drv.check(g.app, g.params)
            drv.check_devices(g.app, sum(d.driver == drv.device for d in cfg.devices))
        except PeerError as e:
            raise StartupError(g.origin, str(e)) from None
        m.set_guest(g.driver, g.app, g.params)
