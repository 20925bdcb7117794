"""What the monitor shows of a running :class:`emu.machine.Machine`, in
QEMU 7.2's shapes: ``query-pci``, ``query-chardev``, ``query-emu-stats``,
HMP ``info network``.  Read-only: nothing here changes the machine."""
from __future__ import annotations

from typing import Any

# query-emu-stats: the counters every queue has (0 if its side does not count them)
QUEUE_COUNTERS = ("packets", "bytes", "drops", "errors", "kicks", "calls")


def query_pci(m: Any) -> list[dict[str, Any]]:
    if m.system.pci is None:          # no PCI bus: QEMU answers []
        return []
    devs = []
    ids = {e.bdf: e.id for e in m.devices.values()}
    for bdf, fn in sorted(m.system.functions.items()):
        cfg = fn.config
        rd = lambda off, n: int.from_bytes(cfg[off:off + n], "little")  # noqa: E731
        regions = []
        for index, bar in sorted(fn.bars.items()):
            # (QEMU's PciMemoryRegion.address is an int: -1 while unassigned)
            r = {"bar": index, "type": "io" if bar.kind == "io" else "memory",
                 "address": bar.address if bar.address is not None else -1,
                 "size": bar.size}
            if bar.kind != "io":
                r["prefetch"] = bool(bar.prefetchable)
                r["mem_type_64"] = bar.kind == "mem64"
            regions.append(r)
        class_info = {"class": rd(0x0A, 2)}
        desc = class_desc(rd(0x0A, 2))
        if desc is not None:
            class_info["desc"] = desc
        d = {"bus": bdf >> 8, "slot": (bdf >> 3) & 0x1F, "function": bdf & 7,
             "class_info": class_info,
             "id": {"vendor": rd(0, 2), "device": rd(2, 2),
                    "subsystem-vendor": rd(0x2C, 2), "subsystem": rd(0x2E, 2)},
             "qdev_id": ids.get(bdf, ""), "regions": regions, "irq_pin": cfg[0x3D]}
        if cfg[0x3D]:
            d["irq"] = cfg[0x3C]
        devs.append(d)
    return [{"bus": 0, "devices": devs}]


def query_chardev(m: Any) -> list[dict[str, Any]]:
    out = []
    open_ids = set()
    for nd in m.netdevs.values():
        if nd.connected and getattr(nd, "sock", None) is not None:   # vhost-user's chardev
            open_ids.add(nd.sock.id)
    for sock in m.backend_sockets.values():
        if sock.connected:
            open_ids.add(sock.sock.id)
    for spec in m.chardevs.values():
        if spec.path:
            fn = f"unix:{spec.path}{',server=on' if spec.server else ''}"
        else:
            fn = f"fd:{spec.fd}"
        out.append({"label": spec.id, "filename": fn, "frontend-open": spec.id in open_ids})
    return out


def emu_stats(m: Any) -> dict[str, Any]:
    raw = m.emu_stats()
    devices = []
    for dev_id, d in raw.items():
        if dev_id == "guest":
            continue
        queues = []
        for qname, q in d["queues"].items():
            queues.append({"name": qname, "index": q.get("index", _qindex(qname)),
                           **{k: q.get(k, 0) for k in QUEUE_COUNTERS},
                           **{k: v for k, v in q.items() if k not in QUEUE_COUNTERS
                              and k != "index"}})
        extra = {k: v for k, v in d.items() if k not in ("queues",)}
        devices.append({"id": dev_id, **extra, "queues": queues})
    out: dict[str, Any] = {"devices": devices}
    if "guest" in raw:
        out["guest"] = raw["guest"]
    return out


def info_network(m: Any) -> str:
    lines = []
    for e in m.devices.values():
        mac = ":".join(f"{b:02x}" for b in e.props.get("mac", b""))
        lines.append(f"{e.id}: index=0,type=nic,model={e.driver},macaddr={mac}")
        if e.netdev is not None and hasattr(e.netdev, "info_str"):    # emu.netdev_internal
            lines.append(f" \\ {e.netdev.id}: index=0,{e.netdev.info_str}")
        elif e.netdev is not None:
            nd = e.netdev
            state = "connected" if nd.connected else "disconnected"
            lines.append(f" \\ {nd.id}: index=0,type=vhost-user,"
                         f"vhost-user to {nd.sock.id} ({state})")
        elif e.driver == "vhost-pci-net":
            peer = "connected" if m.backend_sockets[e.id].connected else "disconnected"
            lines.append(f" \\ {e.props['chardev']}: vhost-user back-end (peer {peer})")
    return "\n".join(lines)


def info_mtree(m: Any) -> str:
    """HMP ``info mtree``: the platform's address spaces in QEMU's format
    (a layer of :mod:`emu.address_space` is a container at its priority)."""
    out = []
    for title, space, root in (("memory", m.system.memory, "system"), ("I/O", m.system.io, "io")):
        out.append(f"address-space: {title}")
        out.append(f"  {0:016x}-{space.size - 1:016x} (prio 0, i/o): {root}")
        for layer, prio, regions in space.layers():
            for r in sorted(regions, key=lambda r: r.start):
                kind = "ram" if getattr(r.target, "ram", None) is not None else "i/o"
                out.append(f"    {r.start:016x}-{r.end - 1:016x} (prio {prio}, {kind}): "
                           f"{r.name or layer}")
        out.append("")
    return "\n".join(out)


def query_cpus_fast(m: Any, cpus: int) -> list[dict[str, Any]]:
    """QEMU's CpuInfoFast per ``-smp`` CPU.  emu has no vCPU threads: CPU 0
    is the guest program's thread (the process's main thread when no guest
    runs), the others the main thread; the topology is QEMU 7.2's default
    for ``-smp N`` (cores of one socket)."""
    import os
    import threading
    if not m.machine_type.has_pci:        # QEMU's none machine has no CPU
        return []
    guest = getattr(m.guest, "_thread", None) if m.guest is not None else None
    main = os.getpid()
    out = []
    for i in range(max(cpus, 1)):
        tid = guest.native_id if (i == 0 and isinstance(guest, threading.Thread)
                                  and guest.native_id) else main
        out.append({"cpu-index": i, "qom-path": f"/machine/unattached/device[{i}]",
                    "thread-id": tid, "props": {"core-id": i, "thread-id": 0, "socket-id": 0},
                    "target": "x86_64"})
    return out


#: PCI class code (base class, subclass) -> the description QEMU's query-pci
#: gives (PCI Code and ID Assignment Specification names, as QEMU spells them)
CLASS_DESCRIPTIONS = {
    0x0100: "SCSI controller", 0x0101: "IDE controller", 0x0106: "SATA controller",
    0x0180: "Storage controller", 0x0200: "Ethernet controller", 0x0280: "Network controller",
    0x0300: "VGA controller", 0x0380: "Display controller", 0x0600: "Host bridge",
    0x0601: "ISA bridge", 0x0604: "PCI bridge", 0x0680: "Bridge", 0x0C03: "USB controller",
    0x0C05: "SMBus",
}


def class_desc(cls: int) -> str | None:
    """QEMU's description of a class, or None (query-pci then has no desc)."""
    return CLASS_DESCRIPTIONS.get(cls)


def _qindex(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    n = int(digits) if digits else 0
    if name.startswith("rx"):
        return 2 * n
    if name.startswith("tx"):
        return 2 * n + 1
    return n
