"""The machine's QOM tree (:mod:`emu.qom`) as QEMU 7.2's monitor shows it:
``qom-list``, ``qom-get``, HMP ``info qom-tree`` and ``info qtree``.

Read-only.  A device object's properties are its ``-device`` properties
(:mod:`emu.devprops`) with the values its configuration has, beside what
the tree itself holds (``type``, the children).  Errors are QEMU's:
``DeviceNotFound`` "Device 'PATH' not found", "Path 'PATH' is ambiguous",
"Property 'TYPE.NAME' not found".
"""
from __future__ import annotations

from typing import Any

from emu import devprops
from emu.config import MachineConfig, PCIAddress
from emu.qmp.errors import GENERIC_ERROR, QmpError

DEVICE_NOT_FOUND = "DeviceNotFound"


def _resolve(m: Any, path: str):
    tree = m.qom
    obj = tree.resolve(path)
    if obj is None:
        if tree.is_ambiguous(path):
            raise QmpError(f"Path '{path}' is ambiguous", GENERIC_ERROR)
        raise QmpError(f"Device '{path}' not found", DEVICE_NOT_FOUND)
    return obj


def _value(v: Any) -> Any:
    if isinstance(v, PCIAddress):
        return str(v)
    if isinstance(v, bytes):
        return ":".join(f"{b:02x}" for b in v)
    return v


def _device_config(cfg: MachineConfig, obj: Any) -> Any:
    entry = getattr(obj, "impl", None)
    dev_id = getattr(entry, "id", None)
    return next((d for d in cfg.devices if d.id == dev_id), None)


def device_props(m: Any, cfg: MachineConfig, obj: Any) -> dict[str, tuple[str, Any]]:
    """``name -> (type, value)`` of a device object's ``-device`` properties."""
    entry = getattr(obj, "impl", None)
    driver = getattr(entry, "driver", None)
    infos = devprops.device_properties(driver) if driver else None
    if not infos:
        return {}
    d = _device_config(cfg, obj)
    out = {}
    for info in infos:
        name = info["name"]
        field = devprops.FIELD_NAMES.get(name, name)
        if d is not None and hasattr(d, field):
            value = getattr(d, field)
        elif d is not None and name in getattr(d, "features", {}):
            value = d.features[name]
        else:
            value = info.get("default-value")
        if name == "mac" and value is None:
            value = (entry.props or {}).get("mac")
        if name in ("disable-legacy", "disable-modern"):
            value = _realized_interface(entry, name, value)
        if name == "addr":
            value = f"{(entry.bdf >> 3) & 31:02x}.{entry.bdf & 7}"
        out[name] = (info["type"], _value(value))
    return out


def _realized_interface(entry: Any, name: str, value: Any) -> Any:
    """A virtio-pci function's disable-legacy/disable-modern as QEMU's
    realize leaves them: ``auto`` resolved (off: emu's buses are root
    buses, never a PCIe port), disable-modern on once a device without
    VERSION_1 dropped the modern interface."""
    fn = getattr(entry, "function", None)
    ifs = getattr(fn, "interfaces", None) or getattr(fn, "asked", None)
    if ifs is None:
        return value
    if name == "disable-legacy":
        return "off" if ifs.legacy else "on"
    return not ifs.modern


def qom_list(m: Any, cfg: MachineConfig, path: str) -> list[dict[str, Any]]:
    obj = _resolve(m, path)
    out = [{"name": p.name, "type": p.type} for p in obj.properties()]
    have = {p["name"] for p in out}
    out += [{"name": n, "type": t} for n, (t, _) in device_props(m, cfg, obj).items()
            if n not in have]
    return out


def qom_get(m: Any, cfg: MachineConfig, path: str, prop: str) -> Any:
    obj = _resolve(m, path)
    for p in obj.properties():
        if p.name == prop:
            if p.get is None:
                raise QmpError(f"Property '{obj.type}.{prop}' is not readable")
            return p.get()
    dev = device_props(m, cfg, obj)
    if prop in dev:
        value = dev[prop][1]
        return "" if value is None else value
    raise QmpError(f"Property '{obj.type}.{prop}' not found")


def info_qom_tree(m: Any, path: str = "/machine") -> str:
    """HMP ``info qom-tree [PATH]``: ``/name (type)``, two spaces a level,
    children sorted by name as QEMU sorts them."""
    obj = _resolve(m, path)
    lines: list[str] = []

    def show(o: Any, indent: int) -> None:
        lines.append(f"{' ' * indent}/{o.name or ''} ({o.type})")
        for name in sorted(o.children):
            show(o.children[name], indent + 2)
    show(obj, 0)
    return "\n".join(lines)


def info_qtree(m: Any, cfg: MachineConfig, pci: list[dict[str, Any]]) -> str:
    """HMP ``info qtree``: the buses and the devices on them, with their
    properties, as QEMU prints it (``bus:``, ``type``, ``dev: TYPE, id "ID"``)."""
    tree = m.qom
    lines = ["bus: main-system-bus", "  type System"]
    sysbus = [o for o in tree.machine.walk()
              if tree.types.implements(o.type, "sys-bus-device")]
    by_qdev = {d["qdev_id"]: d for bus in pci for d in bus.get("devices", [])}
    for dev in sysbus:
        lines.append(f'  dev: {dev.type}, id ""')
        for name, bus in sorted(dev.children.items()):
            if not tree.types.implements(bus.type, "bus"):
                continue
            lines.append(f"    bus: {name}")
            lines.append(f"      type {bus.type}")
            for obj in _devices_on(tree):
                _qtree_device(lines, m, cfg, obj, by_qdev, 6)
    return "\n".join(lines)


def _devices_on(tree: Any) -> list[Any]:
    out = []
    for container in ("peripheral", "peripheral-anon"):
        c = tree.machine.children.get(container)
        if c is not None:
            out += [c.children[n] for n in sorted(c.children)]
    return [o for o in out if tree.types.implements(o.type, "pci-device")]


def _qtree_device(lines: list[str], m: Any, cfg: MachineConfig, obj: Any,
                  by_qdev: dict[str, Any], indent: int) -> None:
    pad = " " * indent
    entry = obj.impl
    dev_id = obj.name if obj.parent is not None and obj.parent.name == "peripheral" else ""
    lines.append(f'{pad}dev: {obj.type}, id "{dev_id}"')
    props = device_props(m, cfg, obj)
    backend = obj.children.get("virtio-backend")
    proxy = {n: v for n, v in props.items()
             if backend is None or n in devprops.PCI_PROXY_PROPS}
    _qtree_props(lines, proxy, pad + "  ")
    d = by_qdev.get(getattr(entry, "id", ""))
    if d is not None:
        ci, ids = d["class_info"], d["id"]
        lines.append(f"{pad}  class {ci.get('desc') or ci['class']}, addr "
                     f"{d['bus']:02x}:{d['slot']:02x}.{d['function']}, pci id "
                     f"{ids['vendor']:04x}:{ids['device']:04x} "
                     f"(sub {ids.get('subsystem-vendor', 0):04x}:{ids.get('subsystem', 0):04x})")
        for r in d["regions"]:
            # an unassigned BAR (-S, before the firmware) is at -1, as in QEMU
            kind = "i/o" if r["type"] == "io" else "mem"
            lines.append(f"{pad}  bar {r['bar']}: {kind} at 0x{r['address'] & ((1 << 64) - 1):x} "
                         f"[0x{(r['address'] + r['size'] - 1) & ((1 << 64) - 1):x}]")
    if backend is not None:
        lines.append(f"{pad}  bus: virtio-bus")
        lines.append(f"{pad}    type virtio-pci-bus")
        lines.append(f'{pad}    dev: {backend.type}, id ""')
        _qtree_props(lines, {n: v for n, v in props.items() if n not in proxy}, pad + "      ")


def _qtree_props(lines: list[str], props: dict[str, tuple[str, Any]], pad: str) -> None:
    """``name = value`` as qdev prints it; a property without a value (one
    emu has no default for) is left out."""
    for name, (ptype, value) in props.items():
        if value is None:
            continue
        if ptype == "bool":
            text = "true" if value else "false"
        elif ptype in ("uint16", "uint32", "int32", "size") and isinstance(value, int):
            text = f"{value} (0x{value:x})"
        elif name == "addr":
            text = str(value)
        else:
            text = f'"{value}"'
        lines.append(f"{pad}{name} = {text}")
