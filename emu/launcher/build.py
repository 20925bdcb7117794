"""A checked :class:`~emu.config.MachineConfig` becomes an
:class:`emu.machine.Machine`, not started yet.

The heavy modules (memory, devices, vhost-user) are imported only here,
once the monitors listen.  A failure names the option at fault
(:class:`StartupError`) and leaves nothing behind.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from emu.config import FilterDump, MachineConfig, VhostPCINet, VirtioNetPCI
from emu.errors import PeerError
from emu.guest import registry

DEFAULT_MAC = (0x52, 0x54, 0x00, 0x12, 0x34, 0x56)


class StartupError(Exception):
    """A configuration the machine cannot build, or a monitor that cannot
    be set up; ``origin`` names the option.  Fatal: ``emu: ...``, exit 1."""

    def __init__(self, origin: str, msg: str):
        super().__init__(f"{origin}: {msg}" if origin else msg)


def mac_bytes(text: str | None, index: int) -> bytes:
    """``mac=`` as given, or QEMU's default 52:54:00:12:34:56 + the NIC's index."""
    if text:
        return bytes(int(p, 16) for p in text.split(":"))
    m = list(DEFAULT_MAC)
    m[5] = (m[5] + index) & 0xFF
    return bytes(m)


def _wire_log(cfg: MachineConfig) -> Callable[[], Any] | None:
    if "vhost_user_wire" not in cfg.trace.events:
        return None
    from emu.vhost_user.wirelog import WireLog
    # one log per connection (the transport closes it when the peer goes)
    target = cfg.trace.file or cfg.log_file or sys.stderr

    def wire_log() -> WireLog:
        return WireLog(target, label=cfg.name or "")
    return wire_log


def build_machine(cfg: MachineConfig, emit: Callable[[str, dict | None], None]):
    """Everything the command line describes, not started yet."""
    from emu.machine import Machine
    ram = cfg.ram
    try:
        m = Machine(name=cfg.name or "", ram_size=ram.size, backend=ram.backend,
                    mem_path=ram.mem_path, wire_log=_wire_log(cfg), machine_type=cfg.machine_type)
    except Exception as e:
        raise StartupError(ram.origin, f"cannot allocate guest RAM: {e}") from None
    m.add_event_listener(emit)
    try:
        _populate(m, cfg)
    except BaseException:
        m.release()
        raise
    return m


def _populate(m: Any, cfg: MachineConfig) -> None:
    from emu.netdev import SocketSpec
    from emu.virtio.vhost_pci_net import PeerLimits
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
            if isinstance(d, VirtioNetPCI):
                if d.netdev is None:
                    # QEMU runs a NIC without a peer; emu's device model is
                    # its vhost-user back-end, so there is nothing to run.
                    raise ValueError("emu cannot run a NIC without a back-end: "
                                     "give it netdev= (a vhost-user netdev)")
                m.add_virtio_net(d.id or f"net{i}", d.netdev, mac=mac_bytes(d.mac, i), addr=slot,
                                 mq=d.mq, mrg_rxbuf=d.mrg_rxbuf, event_idx=d.event_idx,
                                 indirect_desc=d.indirect_desc, host_mtu=d.host_mtu or 0,
                                 vectors=d.vectors, queue_size=d.rx_queue_size, packed=d.packed)
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
                m.add_filter_dump(obj.id, obj.netdev, obj.file, maxlen=obj.maxlen, queue=obj.queue)
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
