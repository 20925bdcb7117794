"""The ``-device`` drivers' properties, declared once: the command line
reads them (``-device DRIVER,...``, ``-device DRIVER,help``), and so do
QMP's ``device-list-properties`` and ``qom-list-properties``
(:mod:`emu.launcher.introspection`), which is why they are not in
:mod:`emu.cli` (nothing but the entry point imports the parser).  Each is a
:class:`~emu.keyval.Param` with its parser (type and bounds) and help; the
defaults are the :mod:`emu.config` records' (:data:`FIELD_NAMES` maps the
names that differ).  Error texts are QEMU 7.2's.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from emu.config import PCIAddress
from emu.keyval import (MAC_RE, OptionError, Param, Schema, boolean, choice, identifier, integer,
                        power_of_two, size, string)


def ignored(name: str, parse: Callable[[str, str], Any] = boolean, help: str = "") -> Param:
    """A property accepted for QEMU command lines, without effect in emu."""
    return Param(name, parse, help, ignored=True)


_ign = ignored
ON_OFF_AUTO = choice("on", "off", "auto")
VHOST_PCI_MODE = choice("auto", "seed", "off")
_ON_OFF_AUTO = ON_OFF_AUTO
_VHOST_PCI_MODE = VHOST_PCI_MODE


_ADDR_RE = re.compile(r"(?:0[xX])?([0-9a-fA-F]{1,2})(?:\.([0-7]))?\Z")


def _prop_error(driver: str, name: str, text: str) -> OptionError:
    return OptionError(f"Property '{driver}.{name}' doesn't take value '{text}'")


def _mac(driver: str) -> Callable[[str, str], str]:
    def parse(name: str, text: str) -> str:
        if not MAC_RE.match(text):
            raise _prop_error(driver, name, text)
        return text.lower().replace("-", ":")
    parse.kind = "macaddr"  # type: ignore[attr-defined]
    return parse


def _pci_addr(driver: str) -> Callable[[str, str], PCIAddress]:
    def parse(name: str, text: str) -> PCIAddress:
        m = _ADDR_RE.match(text)
        if not m or int(m.group(1), 16) > 0x1F:
            raise _prop_error(driver, name, text)
        return PCIAddress(int(m.group(1), 16), int(m.group(2) or 0))
    parse.kind = "slot[.fn]"  # type: ignore[attr-defined]
    return parse


def _window(name: str, text: str) -> int:
    value = size(name, text)
    if value < 2 << 20 or value & (value - 1):
        raise OptionError(f"Parameter '{name}' expects a power of two of at least 2M")
    return value



_window.kind = "size"  # type: ignore[attr-defined]


_PCI_IGNORED = (_ign("romfile", string), _ign("rombar", integer(0, 1)), _ign("bootindex", integer(-1, 1 << 31)),
                _ign("bus", choice("pcie.0", "pci.0")), _ign("multifunction"), _ign("ats"), _ign("aer"),
                _ign("acpi-index", integer(0, (1 << 32) - 1)), _ign("x-pcie-lnksta-dllla"),
                Param("iommu_platform", boolean, "must be off"))
#: the properties QEMU keeps on the PCI proxy (``virtio-net-pci``); the rest
#: are its virtio device's (``virtio-net-device``), as ``info qtree`` shows
PCI_PROXY_PROPS = frozenset({"addr", "vectors", "disable-legacy", "disable-modern",
                             *(p.name for p in _PCI_IGNORED)})
VIRTIO_NET_FEATURES = ("csum", "guest_csum", "gso", "guest_tso4", "guest_tso6", "guest_ecn",
                       "guest_ufo", "guest_announce", "host_tso4", "host_tso6", "host_ecn", "host_ufo",
                       "ctrl_vq", "ctrl_rx", "ctrl_vlan", "ctrl_rx_extra", "ctrl_mac_addr",
                       "ctrl_guest_offloads", "status", "any_layout", "in_order", "notify_on_empty")


#: the virtio device behind a -device driver: QEMU aliases the device's
#: properties (mac, netdev...) on the PCI proxy, and its errors name the device
VIRTIO_DEVICE_OF = {"virtio-net-pci": "virtio-net-device"}


def _device_schema(driver: str, *params: Param) -> Schema:
    return Schema((Param("id", identifier, "device id"),
                   Param("addr", _pci_addr(driver), "PCI slot and function, e.g. 06.0"),
                   Param("vectors", integer(0, 2048), "MSI-X vectors (0: INTx)"),
                   Param("mac", _mac(VIRTIO_DEVICE_OF.get(driver, driver)), "MAC address"),
                   Param("mrg_rxbuf", boolean, "VIRTIO_NET_F_MRG_RXBUF"),
                   Param("event_idx", boolean, "VIRTIO_RING_F_EVENT_IDX"),
                   Param("indirect_desc", boolean, "VIRTIO_RING_F_INDIRECT_DESC"),
                   Param("packed", boolean, "VIRTIO_F_RING_PACKED: offer packed virtqueues "
                                            "(default off, as QEMU)"),
                   *params, *_PCI_IGNORED),
                  unknown="Property '{owner}.{key}' not found")


DEVICES: dict[str, tuple[Schema, str]] = {
    "virtio-net-pci": (_device_schema(
        "virtio-net-pci",
        Param("netdev", identifier, "id of the -netdev (vhost-user, socket or hubport)"),
        Param("mq", boolean, "VIRTIO_NET_F_MQ"),
        Param("host_mtu", integer(68, 65535), "VIRTIO_NET_F_MTU with this MTU"),
        Param("rx_queue_size", power_of_two(256, 1024), "rx virtqueue size"),
        Param("tx_queue_size", power_of_two(256, 1024), "tx virtqueue size"),
        Param("disable-legacy", _ON_OFF_AUTO, "on: no legacy interface (auto, off: transitional)"),
        Param("disable-modern", boolean, "on: the legacy interface only"),
        *(Param(f, boolean, "virtio-net feature") for f in VIRTIO_NET_FEATURES)),
        "virtio-net over virtio-pci, transitional as QEMU's; its data path a vhost-user "
        "back-end, or emu's own (socket, hubport netdevs)"),
    "vhost-pci-net": (_device_schema(
        "vhost-pci-net",
        Param("chardev", identifier, "the vhost-user socket chardev (this device is the back-end)"),
        _ign("disable-legacy", _ON_OFF_AUTO, "vhost-pci-net is modern-only"),
        Param("disable-modern", boolean, "must be off: vhost-pci-net is modern-only"),
        Param("window", _window, "peer-memory BAR size (power of two, default 4G)"),
        Param("queues", integer(1, 256), "max_virtqueue_pairs"),
        Param("ack-timeout", integer(0, 60000), "ms the driver has to release the window"),
        Param("vhost-pci", _VHOST_PCI_MODE, "vhost-pci extension: auto, seed or off"),
        Param("peer-vqs", integer(2, 176), "vrings a peer may use (default 8)"),
        Param("max-connections", integer(1, 64), "front-ends connected at once, one served (default 1)"),
        Param("max-payload", integer(268, 1 << 20), "bytes of one vhost-user message (default 4096)"),
        Param("max-regions", integer(1, 32), "peer memory regions (default 8)"),
        Param("max-mem", size, "peer memory mapped at once (default: the window)"),
        Param("message-timeout", integer(1, 3600000),
              "ms a front-end may take to send one whole message (default 10000)")),
        "vhost-pci-net: a vhost-user back-end that exposes the peer VM's memory in a BAR"),
}
DEVICE_ALIASES = {"virtio-net": "virtio-net-pci"}

ISA_SERIAL = Schema((Param("chardev", identifier, "the chardev the port's output goes to"),
                     Param("index", integer(0, 3), "0..3: COM1..COM4 (0x3f8, 0x2f8, 0x3e8, 0x2e8)"),
                     Param("id", identifier, "device id"),
                     _ign("iobase", integer(0, 0xFFFF)), _ign("irq", integer(0, 15)),
                     _ign("wakeup", integer(0, 1))),
                    unknown="Property '{owner}.{key}' not found")

#: -device properties that exist only to be refused when on (per driver:
#: DRIVER_MUST_BE_OFF)
DRIVER_MUST_BE_OFF = {"vhost-pci-net": {"disable-modern": "vhost-pci-net is modern-only"}}
MUST_BE_OFF = {"iommu_platform": "emu has no IOMMU"}
#: -device property -> emu.config field, where the names differ
FIELD_NAMES = {"ack-timeout": "ack_timeout_ms", "vhost-pci": "vhost_pci", "peer-vqs": "peer_vqs",
               "disable-legacy": "disable_legacy", "disable-modern": "disable_modern",
               "max-connections": "max_connections", "max-payload": "max_payload",
               "max-regions": "max_regions", "max-mem": "max_mem",
               "message-timeout": "message_timeout_ms"}


# -- QMP's view: QAPI ObjectPropertyInfo ---------------------------------------------------------

#: qdev property types the parser's bounds do not tell
QEMU_TYPES = {"host_mtu": "uint16", "rx_queue_size": "uint16", "tx_queue_size": "uint16"}
#: ``-device`` options that are not the device's qdev properties
NOT_PROPERTIES = ("id", "bus")


def _qemu_type(p: Param) -> str:
    """The property type QEMU names for a parser (qdev's PropertyInfo names)."""
    if p.name in QEMU_TYPES:
        return QEMU_TYPES[p.name]
    kind = p.kind
    if kind == "on|off":
        return "bool"
    if kind == "on|off|auto":
        return "OnOffAuto"
    if kind == "slot[.fn]":
        return "int32"
    if kind == "size":
        return "size"
    if kind.startswith("int "):
        lo = int(kind.split()[1].split("..")[0])
        return "int32" if lo < 0 else "uint32"
    return "str"


def property_info(driver: str, p: Param, defaults: dict[str, Any]) -> dict[str, Any]:
    """``{"name", "type", "description"?, "default-value"?}`` as QEMU 7.2 sends it."""
    out: dict[str, Any] = {"name": p.name, "type": _qemu_type(p)}
    if p.help:
        out["description"] = p.help
    default = defaults.get(FIELD_NAMES.get(p.name, p.name))
    if default is not None and not isinstance(default, (list, dict)):
        out["default-value"] = default
    return out


def device_properties(driver: str) -> list[dict[str, Any]] | None:
    """Every property of ``-device DRIVER`` (None: no such driver)."""
    from emu import config
    if driver == "isa-serial":
        return [property_info(driver, p, {}) for p in ISA_SERIAL.params
                if p.name not in NOT_PROPERTIES]
    entry = DEVICES.get(DEVICE_ALIASES.get(driver, driver))
    if entry is None:
        return None
    record = {"virtio-net-pci": config.VirtioNetPCI, "vhost-pci-net": config.VhostPCINet}[
        DEVICE_ALIASES.get(driver, driver)]
    defaults = config.field_defaults(record)
    # "id" names the device and "bus" places it: neither is a qdev property
    return [property_info(driver, p, defaults) for p in entry[0].params
            if p.name not in NOT_PROPERTIES]
