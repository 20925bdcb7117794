"""The schemas of emu's options: every parameter with its type, bounds and help.

One :class:`~emu.keyval.Schema` per option (or per ``-device`` driver,
``-object`` type, ``-chardev`` and ``-netdev`` backend), and the value
parsers the command line needs beyond :mod:`emu.keyval`'s.  A new option
is a schema here plus one handler (see :mod:`emu.cli.state`).  Error texts
are QEMU 7.2's where QEMU has the option.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from emu.config import PAGE_SIZE, PCIAddress
from emu.keyval import (MAC_RE, SIZE_HELP, OptionError, Param, Schema, boolean, choice, identifier,
                        integer, power_of_two, size, string, to_size)

def _ign(name: str, parse: Callable[[str, str], Any] = boolean, help: str = "") -> Param:
    return Param(name, parse, help, ignored=True)


def _ram_size(name: str, text: str) -> int:
    value = to_size(text, default_suffix="M")   # -m 256 means 256 MiB
    if value is None:
        raise OptionError(f"Parameter '{name}' expects a non-negative number below 2^64\n{SIZE_HELP}")
    return _page_multiple(name, value)


def _page_multiple(name: str, value: int) -> int:
    if value <= 0 or value % PAGE_SIZE:
        raise OptionError(f"Parameter '{name}' expects a positive multiple of {PAGE_SIZE}")
    return value


def _backend_size(name: str, text: str) -> int:
    return _page_multiple(name, size(name, text))


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


def _fd(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise OptionError(f"Unable to parse FD number {text}")
    return int(text)


def _window(name: str, text: str) -> int:
    value = size(name, text)
    if value < 2 << 20 or value & (value - 1):
        raise OptionError(f"Parameter '{name}' expects a power of two of at least 2M")
    return value


for _parser, _kind in ((_ram_size, "size"), (_backend_size, "size"), (_window, "size"), (_fd, "fd")):
    _parser.kind = _kind  # type: ignore[attr-defined]

_ON_OFF_AUTO = choice("on", "off", "auto")
_VHOST_PCI_MODE = choice("auto", "seed", "off")

NAME = Schema((Param("guest", string, "the VM's name"),
               _ign("process", string, "process name"),
               _ign("debug-threads", boolean, "name threads")), implied="guest")

MEMORY = Schema((Param("size", _ram_size, "guest RAM size (default unit M)"),), implied="size")

_MACHINE_IGNORED = ("acpi", "dump-guest-core", "graphics", "hpet", "i8042", "kernel-irqchip",
                    "mem-merge", "nvdimm", "pic", "pit", "sata", "smbus", "smm",
                    "suppress-vmdesc", "usb", "vmport")
MACHINE = Schema((Param("type", string, "machine type (q35, pc, none)"),
                  Param("memory-backend", identifier, "id of the -object memory-backend-* for RAM"),
                  _ign("accel", string, "accelerator list"),
                  *(_ign(n, string) for n in _MACHINE_IGNORED)),
                 implied="type", unknown="Property '{owner}-machine.{key}' not found")

ACCELERATORS = ("kvm", "tcg", "xen", "hvf", "whpx", "nvmm", "hax", "qtest")
ACCEL = Schema((Param("accel", string, "accelerator name"),
                *(_ign(n, string) for n in ("thread", "tb-size", "split-wx", "kernel-irqchip",
                                            "kvm-shadow-mem", "dirty-ring-size"))),
               implied="accel")

SMP = Schema(tuple(Param(n, integer(0, 4096)) for n in
                   ("cpus", "maxcpus", "sockets", "dies", "clusters", "cores", "threads")),
             implied="cpus")

_BACKEND_COMMON = (Param("id", identifier, "object id"),
                   Param("size", _backend_size, "size in bytes (K/M/G/T suffixes)"),
                   Param("share", boolean, "MAP_SHARED, needed by vhost-user peers"),
                   Param("prealloc", boolean, "touch every page at start"),
                   _ign("prealloc-threads", integer(1, 1024)), _ign("merge"), _ign("dump"),
                   _ign("reserve"), _ign("policy", choice("default", "preferred", "bind", "interleave")),
                   _ign("host-nodes", string), _ign("x-use-canonical-path-for-ramblock-id"))
OBJECTS: dict[str, Schema] = {
    "memory-backend-shm": Schema(_BACKEND_COMMON),
    "memory-backend-memfd": Schema(_BACKEND_COMMON + (
        Param("hugetlb", boolean, "hugetlbfs pages (emu: must be off)"),
        _ign("hugetlbsize", size), _ign("seal"))),
    "memory-backend-file": Schema(_BACKEND_COMMON + (
        Param("mem-path", string, "file, or directory (e.g. a hugetlbfs mount)"),
        _ign("discard-data"), _ign("align", size), _ign("pmem"), _ign("readonly"))),
    "filter-dump": Schema((Param("id", identifier, "object id"),
                           Param("netdev", identifier, "id of the -netdev to capture"),
                           Param("file", string, "pcap file"),
                           Param("maxlen", integer(1, (1 << 32) - 1), "bytes kept per packet"),
                           Param("queue", choice("all", "rx", "tx"), "direction"),
                           _ign("status", choice("on", "off")), _ign("position", string),
                           _ign("insert", choice("behind", "before")))),
}

SOCKET_NOT_SUPPORTED = ("host", "port", "to", "ipv4", "ipv6", "telnet", "tn3270", "websocket",
                         "tls-creds", "tls-authz", "nodelay", "abstract", "tight")
CHARDEVS: dict[str, Schema] = {
    "socket": Schema((Param("id", identifier, "chardev id"),
                      Param("path", string, "unix socket path"),
                      Param("fd", _fd, "inherited socket fd (connected or listening)"),
                      Param("server", boolean, "listen instead of connect"),
                      Param("wait", boolean, "with server=on: wait for a client before starting"),
                      Param("reconnect", integer(0, 1 << 31), "client: seconds before re-connecting"),
                      _ign("logfile", string), _ign("logappend"))),
    "stdio": Schema((Param("id", identifier, "chardev id"), _ign("signal"))),
}

NETDEVS: dict[str, Schema] = {
    "vhost-user": Schema((Param("id", identifier, "netdev id"),
                          Param("chardev", identifier, "the socket chardev to the back-end"),
                          Param("queues", integer(1, 1024), "queue pairs"),
                          Param("vhost-pci", _VHOST_PCI_MODE, "vhost-pci extension: auto, seed or off"),
                          _ign("vhostforce"))),
}

_PCI_IGNORED = (_ign("romfile", string), _ign("rombar", integer(0, 1)), _ign("bootindex", integer(-1, 1 << 31)),
                _ign("bus", choice("pcie.0", "pci.0")), _ign("multifunction"), _ign("ats"), _ign("aer"),
                _ign("acpi-index", integer(0, (1 << 32) - 1)), _ign("x-pcie-lnksta-dllla"),
                _ign("disable-legacy", _ON_OFF_AUTO, "emu's devices are modern-only"),
                Param("disable-modern", boolean, "must be off: emu's devices are modern-only"),
                Param("iommu_platform", boolean, "must be off"))
VIRTIO_NET_FEATURES = ("csum", "guest_csum", "gso", "guest_tso4", "guest_tso6", "guest_ecn",
                       "guest_ufo", "guest_announce", "host_tso4", "host_tso6", "host_ecn", "host_ufo",
                       "ctrl_vq", "ctrl_rx", "ctrl_vlan", "ctrl_rx_extra", "ctrl_mac_addr",
                       "ctrl_guest_offloads", "status", "any_layout", "in_order", "notify_on_empty")


def _device_schema(driver: str, *params: Param) -> Schema:
    return Schema((Param("id", identifier, "device id"),
                   Param("addr", _pci_addr(driver), "PCI slot and function, e.g. 06.0"),
                   Param("vectors", integer(0, 2048), "MSI-X vectors (0: INTx)"),
                   Param("mac", _mac(driver), "MAC address"),
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
        Param("netdev", identifier, "id of the -netdev (vhost-user front-end)"),
        Param("mq", boolean, "VIRTIO_NET_F_MQ"),
        Param("host_mtu", integer(68, 65535), "VIRTIO_NET_F_MTU with this MTU"),
        Param("rx_queue_size", power_of_two(256, 1024), "rx virtqueue size"),
        Param("tx_queue_size", power_of_two(256, 1024), "tx virtqueue size"),
        *(Param(f, boolean, "virtio-net feature") for f in VIRTIO_NET_FEATURES)),
        "virtio-net over modern virtio-pci; its back-end is a vhost-user netdev"),
    "vhost-pci-net": (_device_schema(
        "vhost-pci-net",
        Param("chardev", identifier, "the vhost-user socket chardev (this device is the back-end)"),
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

NUMA = Schema((Param("type", choice("node"), "emu has one NUMA node"),
               Param("memdev", identifier, "the node's memory backend: guest RAM"),
               _ign("nodeid", integer(0, 0)), _ign("cpus", string), _ign("initiator", integer(0, 0))),
              implied="type")

MON = Schema((Param("chardev", identifier, "chardev id"),
              Param("mode", choice("control", "readline"), "control (QMP)"),
              Param("pretty", boolean, "pretty-print JSON"),
              _ign("id", string)))

QMP_OPTS = Schema((Param("server", boolean), Param("wait", boolean),
                   Param("reconnect", integer(0, 1 << 31))))

TRACE = Schema((Param("enable", string, "event name pattern"),
                Param("file", string, "trace output file")), implied="enable")

LOG_ITEMS = {
    "guest_errors": "log when the guest driver misuses a device",
    "unimp": "log accesses to unimplemented device functionality",
    "vhost_user": "log vhost-user requests and state changes",
    "pci": "log PCI configuration and BAR accesses",
    "qmp": "log QMP commands and events",
}
TRACE_EVENTS = {
    "vhost_user_wire": "every vhost-user message, one JSON object per line (emu.vhost_user.wirelog)",
    "qmp": "every QMP message received and sent",
}

#: -device properties that exist only to be refused when on
MUST_BE_OFF = {"disable-modern": "emu's virtio devices are modern-only",
               "iommu_platform": "emu has no IOMMU"}
#: -device property -> emu.config field, where the names differ
FIELD_NAMES = {"ack-timeout": "ack_timeout_ms", "vhost-pci": "vhost_pci", "peer-vqs": "peer_vqs",
               "max-connections": "max_connections", "max-payload": "max_payload",
               "max-regions": "max_regions", "max-mem": "max_mem",
               "message-timeout": "message_timeout_ms"}
