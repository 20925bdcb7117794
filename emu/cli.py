"""emu's command line, in QEMU's syntax (see docs/harness.md).

:func:`parse_args` turns argv into a :class:`MachineConfig` of plain
dataclasses and checks it as a whole (ids, references, sizes); it creates
nothing (no socket, no memory, no file), so a bad command line leaves
nothing behind.  :func:`main` prints errors QEMU's way::

    emu: -device virtio-net-pci,bar=1: Property 'virtio-net-pci.bar' not found

and exits with status 1.  Module-level imports are stdlib only: this runs
before the monitor listens.
"""
from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Union

from emu import __version__
from emu.errors import PeerError
from emu.keyval import (SIZE_HELP, OptionError, Param, Schema, boolean, choice, identifier,
                        integer, parse_pairs, require, size, split_head, split_opts, string,
                        to_size, typed_values)

PAGE_SIZE = 4096
DEFAULT_RAM_SIZE = 128 << 20        # QEMU's default -m
QEMU_VERSION_TEXT = "7.2.0"         # the QEMU release emu's interfaces mirror


class CommandLineError(PeerError):
    """A bad command line; ``str()`` is the message after ``emu: ``."""


class EarlyExit(Exception):
    """-version, -help, ``-device help``...: print ``text`` and exit with ``status``."""

    def __init__(self, text: str, status: int = 0):
        super().__init__(text)
        self.text = text
        self.status = status


# -- the configuration -------------------------------------------------------------

def _origin() -> Any:
    return field(default="", repr=False, compare=False)


@dataclass
class MemoryBackend:
    """``-object memory-backend-{shm,memfd,file}``; also the implicit RAM of ``-m``."""
    id: str
    qom_type: str
    size: int
    share: bool
    prealloc: bool = False
    mem_path: str | None = None
    origin: str = _origin()

    @property
    def backend(self) -> str:
        """The :func:`emu.memory.allocate` backend name: shm, memfd or file."""
        return self.qom_type.removeprefix("memory-backend-")


@dataclass
class FilterDump:
    """``-object filter-dump``: a pcap of a netdev's traffic."""
    id: str
    netdev: str
    file: str
    maxlen: int = 65536
    queue: str = "all"          # all | rx | tx
    origin: str = _origin()


@dataclass
class Chardev:
    id: str
    backend: str                # socket | stdio
    path: str | None = None
    fd: int | None = None
    server: bool = False
    wait: bool = True           # meaningful with server=on only
    reconnect: int = 0          # seconds; client mode only
    origin: str = _origin()


@dataclass
class Netdev:
    id: str
    chardev: str
    type: str = "vhost-user"
    queues: int = 1
    vhost_pci: str = "auto"     # auto | seed | off: see emu.vhost_user.extension
    origin: str = _origin()


@dataclass(frozen=True)
class PCIAddress:
    slot: int
    function: int = 0

    def __str__(self) -> str:
        return f"{self.slot:02x}.{self.function}"


@dataclass
class VirtioNetPCI:
    driver = "virtio-net-pci"
    id: str | None = None
    netdev: str | None = None
    mac: str | None = None
    addr: PCIAddress | None = None
    vectors: int | None = None          # MSI-X vectors; 0 = INTx only
    mrg_rxbuf: bool = True
    mq: bool = False
    event_idx: bool = True
    indirect_desc: bool = True
    host_mtu: int | None = None
    rx_queue_size: int = 256
    tx_queue_size: int = 256
    #: other virtio-net feature properties given explicitly (csum=off, ...)
    features: dict[str, bool] = field(default_factory=dict)
    origin: str = _origin()


@dataclass
class VhostPCINet:
    driver = "vhost-pci-net"
    chardev: str = ""
    id: str | None = None
    mac: str | None = None
    addr: PCIAddress | None = None
    vectors: int | None = None
    window: int = 4 << 30               # peer-memory BAR size
    queues: int = 1                     # max_virtqueue_pairs
    mrg_rxbuf: bool = True
    event_idx: bool = True
    indirect_desc: bool = True
    ack_timeout_ms: int = 1000
    vhost_pci: str = "auto"
    # what one peer may cost (docs/security.md)
    peer_vqs: int = 8                   # vrings a peer may use
    max_connections: int = 1            # front-ends connected at once (one served)
    max_payload: int = 4096             # bytes of one vhost-user message
    max_regions: int = 8                # memory regions
    max_mem: int = 0                    # bytes of peer memory mapped; 0: the window
    message_timeout_ms: int = 10000     # first to last byte of one vhost-user message
    origin: str = _origin()


Device = Union[VirtioNetPCI, VhostPCINet]
MemoryObject = Union[MemoryBackend, FilterDump]


@dataclass
class GuestConfig:
    """``-guest DRIVER,app=APP,key=val...``: the driver program and its app."""
    driver: str                 # virtio-net | vhost-pci-net
    app: str                    # gen | sink | echo | responder | forward | pingpong
    params: dict[str, str] = field(default_factory=dict)
    origin: str = _origin()


@dataclass
class MonitorConfig:
    chardev: str
    mode: str = "control"
    pretty: bool = False
    origin: str = _origin()


@dataclass
class TraceConfig:
    events: list[str] = field(default_factory=list)     # names of enabled trace events
    file: str | None = None


@dataclass
class MachineConfig:
    name: str | None = None
    machine_type: str = "q35"
    ram_size: int = DEFAULT_RAM_SIZE
    memory_backend: str | None = None   # -machine memory-backend=ID (or -numa node,memdev=ID)
    mem_path: str | None = None         # -mem-path: implicit RAM from a file in this directory
    mem_prealloc: bool = False          # -mem-prealloc
    smp: int = 1
    accel: list[str] = field(default_factory=list)
    objects: list[MemoryObject] = field(default_factory=list)
    chardevs: list[Chardev] = field(default_factory=list)
    netdevs: list[Netdev] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    guest: GuestConfig | None = None
    monitors: list[MonitorConfig] = field(default_factory=list)
    start_paused: bool = False          # -S
    daemonize: bool = False
    pidfile: str | None = None
    no_shutdown: bool = False
    no_reboot: bool = False
    log_file: str | None = None         # -D
    log_items: list[str] = field(default_factory=list)   # -d
    trace: TraceConfig = field(default_factory=TraceConfig)
    #: "warning: ..." and "info: ..." lines, printed by main() after "emu: "
    messages: list[str] = field(default_factory=list)

    def chardev(self, id: str) -> Chardev | None:
        return next((c for c in self.chardevs if c.id == id), None)

    def netdev(self, id: str) -> Netdev | None:
        return next((n for n in self.netdevs if n.id == id), None)

    def object(self, id: str) -> MemoryObject | None:
        return next((o for o in self.objects if o.id == id), None)

    @property
    def ram(self) -> MemoryBackend:
        """The backend of guest RAM: ``-machine memory-backend=``, or the
        implicit one ``-m`` makes (shm, shared, which vhost-user needs)."""
        if self.memory_backend is not None:
            obj = self.object(self.memory_backend)
            assert isinstance(obj, MemoryBackend)
            return obj
        if self.mem_path is not None:   # QEMU's -mem-path RAM is private
            return MemoryBackend("pc.ram", "memory-backend-file", self.ram_size, share=False,
                                 prealloc=self.mem_prealloc, mem_path=self.mem_path)
        return MemoryBackend("pc.ram", "memory-backend-shm", self.ram_size, share=True,
                             prealloc=self.mem_prealloc)


# -- option schemas ----------------------------------------------------------------

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


_MAC_RE = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}\Z")
_ADDR_RE = re.compile(r"(?:0[xX])?([0-9a-fA-F]{1,2})(?:\.([0-7]))?\Z")


def _prop_error(driver: str, name: str, text: str) -> OptionError:
    return OptionError(f"Property '{driver}.{name}' doesn't take value '{text}'")


def _mac(driver: str) -> Callable[[str, str], str]:
    def parse(name: str, text: str) -> str:
        if not _MAC_RE.match(text):
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


def _queue_size(name: str, text: str) -> int:
    value = integer(256, 1024)(name, text)
    if value & (value - 1):
        raise OptionError(f"Parameter '{name}' expects a power of 2 between 256 and 1024")
    return value


def _window(name: str, text: str) -> int:
    value = size(name, text)
    if value < 2 << 20 or value & (value - 1):
        raise OptionError(f"Parameter '{name}' expects a power of two of at least 2M")
    return value


for _parser, _kind in ((_ram_size, "size"), (_backend_size, "size"), (_queue_size, "int 256..1024"),
                      (_window, "size"), (_fd, "fd")):
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

MACHINE_TYPES = {"q35": "Standard PC (Q35 + ICH9, 2009)",
                 "pc": "Standard PC (i440FX + PIIX, 1996)",
                 "none": "empty machine (no PCI bus)"}
_MACHINE_VERSIONED = re.compile(r"pc-(q35|i440fx)-\d+\.\d+\Z")

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

_SOCKET_NOT_SUPPORTED = ("host", "port", "to", "ipv4", "ipv6", "telnet", "tn3270", "websocket",
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

_PCI_COMMON = ("id", "addr", "vectors")
_PCI_IGNORED = (_ign("romfile", string), _ign("rombar", integer(0, 1)), _ign("bootindex", integer(-1, 1 << 31)),
                _ign("bus", choice("pcie.0", "pci.0")), _ign("multifunction"), _ign("ats"), _ign("aer"),
                _ign("acpi-index", integer(0, (1 << 32) - 1)), _ign("x-pcie-lnksta-dllla"),
                _ign("disable-legacy", _ON_OFF_AUTO, "emu's devices are modern-only"),
                Param("disable-modern", boolean, "must be off: emu's devices are modern-only"),
                Param("iommu_platform", boolean, "must be off"),
                Param("packed", boolean, "must be off: split virtqueues only"))
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
                   *params, *_PCI_IGNORED),
                  unknown="Property '{owner}.{key}' not found")


DEVICES: dict[str, tuple[Schema, str]] = {
    "virtio-net-pci": (_device_schema(
        "virtio-net-pci",
        Param("netdev", identifier, "id of the -netdev (vhost-user front-end)"),
        Param("mq", boolean, "VIRTIO_NET_F_MQ"),
        Param("host_mtu", integer(68, 65535), "VIRTIO_NET_F_MTU with this MTU"),
        Param("rx_queue_size", _queue_size, "rx virtqueue size"),
        Param("tx_queue_size", _queue_size, "tx virtqueue size"),
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

GUEST_DRIVERS = {"virtio-net": "virtio-net-pci", "vhost-pci-net": "vhost-pci-net"}
GUEST_APPS = ("gen", "sink", "echo", "responder", "forward", "pingpong")

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

_HELP_WORDS = ("help", "?")
_MUST_BE_OFF = {"disable-modern": "emu's virtio devices are modern-only",
                "iommu_platform": "emu has no IOMMU",
                "packed": "emu implements split virtqueues only"}
_FIELD_NAMES = {"ack-timeout": "ack_timeout_ms", "vhost-pci": "vhost_pci", "peer-vqs": "peer_vqs",
                "max-connections": "max_connections", "max-payload": "max_payload",
                "max-regions": "max_regions", "max-mem": "max_mem",
                "message-timeout": "message_timeout_ms"}


def _wants_help(pairs: list[tuple[str, str | None]]) -> bool:
    return any(k in _HELP_WORDS and v is None for k, v in pairs)


# -- the parser --------------------------------------------------------------------

class _Parser:
    def __init__(self) -> None:
        self.cfg = MachineConfig()
        self.ram_size_given = False
        self.machine_accel = False
        self.accel_option = False
        self.machine_origin = "-machine"
        self.compat_monitors = 0
        self.numa_origin: str | None = None
        self.origin = ""

    # Each handler gets the option's argument; OptionError gets the
    # "-opt arg: " prefix in parse_args().

    def warn(self, text: str) -> None:
        self.cfg.messages.append(f"{self.origin}: warning: {text}")

    def info(self, text: str) -> None:
        self.cfg.messages.append(f"{self.origin}: info: {text}")

    def opts(self, arg: str | list[tuple[str, str | None]], schema: Schema, **fmt: str) -> dict[str, Any]:
        """Typed values of *arg* (an option string, or pairs from split_head)."""
        warnings: list[str] = []
        pairs = parse_pairs(arg, schema.implied) if isinstance(arg, str) else arg
        values = typed_values(pairs, schema, warnings, **fmt)
        for w in warnings:
            self.cfg.messages.append(f"{self.origin}: {w}")
        ignored = [p.name for p in schema.params if p.ignored and p.name in values]
        if ignored:
            self.info(f"{', '.join(repr(n) for n in ignored)} accepted for compatibility, no effect in emu")
        return values

    def opt_name(self, arg: str) -> None:
        self.cfg.name = self.opts(arg, NAME).get("guest")

    def opt_m(self, arg: str) -> None:
        values = self.opts(arg, MEMORY)
        require(values, "size")
        self.cfg.ram_size = values["size"]
        self.ram_size_given = True

    def opt_machine(self, arg: str) -> None:
        if arg in _HELP_WORDS:
            raise EarlyExit("Supported machines are:\n" + "\n".join(
                f"{k:<20} {v}" for k, v in MACHINE_TYPES.items()))
        pairs = dict(parse_pairs(arg, MACHINE.implied))
        mtype = pairs.get("type") or self.cfg.machine_type
        if mtype not in MACHINE_TYPES and not _MACHINE_VERSIONED.match(mtype):
            raise OptionError("unsupported machine type\nUse -machine help to list supported machines")
        values = self.opts(arg, MACHINE, owner=mtype)
        self.cfg.machine_type = mtype
        self.machine_origin = self.origin
        if "memory-backend" in values:
            if self.numa_origin is not None and self.cfg.memory_backend != values["memory-backend"]:
                raise OptionError("'-machine memory-backend' and '-numa memdev' properties are mutually exclusive")
            self.cfg.memory_backend = values["memory-backend"]
        if "accel" in values:
            self.machine_accel = True
            self.cfg.accel += values["accel"].split(":")

    def opt_numa(self, arg: str) -> None:
        values = self.opts(arg, NUMA)
        require(values, "memdev")
        if self.numa_origin is not None:
            raise OptionError("emu supports one NUMA node")
        self.numa_origin = self.origin
        if self.cfg.memory_backend not in (None, values["memdev"]):
            raise OptionError("'-machine memory-backend' and '-numa memdev' properties are mutually exclusive")
        self.cfg.memory_backend = values["memdev"]

    def opt_mem_path(self, arg: str) -> None:
        self.cfg.mem_path = arg

    def opt_accel(self, arg: str) -> None:
        if arg in _HELP_WORDS:
            raise EarlyExit("Accelerators supported in QEMU binary:\n" + "\n".join(ACCELERATORS)
                            + "\n(none has an effect: emu emulates devices, not CPUs)")
        values = self.opts(arg, ACCEL)
        require(values, "accel")
        if values["accel"] not in ACCELERATORS:
            raise OptionError(f"invalid accelerator {values['accel']}")
        self.cfg.accel.append(values["accel"])
        self.accel_option = True
        self.info("accelerators have no effect: emu emulates devices, not CPUs")

    def opt_enable_kvm(self) -> None:
        self.cfg.accel.append("kvm")

    def opt_smp(self, arg: str) -> None:
        values = self.opts(arg, SMP)
        self.cfg.smp = values.get("cpus", 1) or 1
        if self.cfg.smp > 1:
            self.info("emu runs one guest driver thread; the CPU count is only recorded")

    def opt_object(self, arg: str) -> None:
        if arg in _HELP_WORDS:
            raise EarlyExit("List of user creatable objects:\n" + "\n".join(f"  {k}" for k in OBJECTS))
        qom_type, pairs = split_head(arg, "qom-type")
        schema = OBJECTS.get(qom_type)
        if schema is None:
            raise OptionError(f"Parameter 'qom-type' does not accept value '{qom_type}'")
        if _wants_help(pairs):
            raise EarlyExit(schema.help(qom_type))
        values = self.opts(pairs, schema)
        require(values, "id")
        if qom_type == "filter-dump":
            require(values, "netdev", "file")
            obj: MemoryObject = FilterDump(values["id"], values["netdev"], values["file"],
                                           values.get("maxlen", 65536), values.get("queue", "all"),
                                           origin=self.origin)
        else:
            require(values, "size")
            if qom_type == "memory-backend-file":
                require(values, "mem-path")
            if values.get("hugetlb"):
                raise OptionError("hugetlb=on is not supported; use memory-backend-file,"
                                  "mem-path=<hugetlbfs mount>")
            # shm and memfd default to shared (as QEMU's memfd does); a file does not
            share = values.get("share", qom_type != "memory-backend-file")
            if qom_type == "memory-backend-shm" and not share:
                raise OptionError("memory-backend-shm is always shared: share=off is not supported")
            obj = MemoryBackend(values["id"], qom_type, values["size"], share,
                                values.get("prealloc", False), values.get("mem-path"), origin=self.origin)
        if self.cfg.object(obj.id) is not None:
            raise OptionError(f"Duplicate ID '{obj.id}' for object")
        self.cfg.objects.append(obj)

    def opt_chardev(self, arg: str) -> None:
        if arg in _HELP_WORDS:
            raise EarlyExit("Available chardev backend types:\n" + "\n".join(f"  {k}" for k in CHARDEVS))
        backend, pairs = split_head(arg, "backend")
        schema = CHARDEVS.get(backend)
        if schema is None:
            raise OptionError(f"'{backend}' is not a valid char driver name")
        bad = next((k for k, _ in pairs if k in _SOCKET_NOT_SUPPORTED), None)
        if bad is not None:
            raise OptionError(f"Parameter '{bad}' is not supported: emu chardevs are unix sockets "
                              "(path=) or inherited sockets (fd=)")
        values = self.opts(pairs, schema)
        if "id" not in values:
            raise OptionError("chardev: no id specified")
        dev = Chardev(values["id"], backend, origin=self.origin)
        if backend == "socket":
            self._socket(dev, values)
        self._add_chardev(dev)

    def _socket(self, dev: Chardev, values: dict[str, Any]) -> None:
        if ("path" in values) == ("fd" in values):
            raise OptionError("Exactly one of 'path' or 'fd' option required")
        dev.fd = values.get("fd")
        dev.path = values.get("path")
        dev.server = values.get("server", False)
        if dev.server and "reconnect" in values:
            raise OptionError("'reconnect' option is incompatible with socket in server listen mode")
        if not dev.server and "wait" in values:
            raise OptionError("'wait' option is incompatible with socket in client connect mode")
        dev.wait = values.get("wait", True)
        dev.reconnect = values.get("reconnect", 0)

    def _add_chardev(self, dev: Chardev) -> None:
        if self.cfg.chardev(dev.id) is not None:
            raise OptionError(f"Duplicate ID '{dev.id}' for chardev")
        self.cfg.chardevs.append(dev)

    def opt_netdev(self, arg: str) -> None:
        if arg in _HELP_WORDS:
            raise EarlyExit("Available netdev backend types:\n" + "\n".join(f"  {k}" for k in NETDEVS))
        ntype, pairs = split_head(arg, "type")
        schema = NETDEVS.get(ntype)
        if schema is None:
            raise OptionError(f"Parameter 'type' does not accept value '{ntype}'")
        values = self.opts(pairs, schema)
        require(values, "id", "chardev")
        if self.cfg.netdev(values["id"]) is not None:
            raise OptionError(f"Duplicate ID '{values['id']}' for netdev")
        self.cfg.netdevs.append(Netdev(values["id"], values["chardev"], ntype, values.get("queues", 1),
                                       values.get("vhost-pci", "auto"), origin=self.origin))

    def opt_device(self, arg: str) -> None:
        if arg in _HELP_WORDS:
            raise EarlyExit(device_help())
        driver, pairs = split_head(arg, "driver")
        driver = DEVICE_ALIASES.get(driver, driver)
        if driver not in DEVICES:
            raise OptionError(f"'{driver}' is not a valid device model name")
        schema = DEVICES[driver][0]
        if _wants_help(pairs):
            raise EarlyExit(schema.help(driver))
        values = self.opts(pairs, schema, owner=driver)
        for name, why in _MUST_BE_OFF.items():
            if values.pop(name, False):
                raise OptionError(f"Property '{driver}.{name}' doesn't take value 'on': {why}")
        for p in schema.params:
            if p.ignored:
                values.pop(p.name, None)
        fields = {_FIELD_NAMES.get(k, k): v for k, v in values.items()}
        dev: Device
        if driver == "virtio-net-pci":
            features = {f: fields.pop(f) for f in VIRTIO_NET_FEATURES if f in fields}
            dev = VirtioNetPCI(**fields, features=features, origin=self.origin)
        else:
            require(values, "chardev")
            dev = VhostPCINet(**fields, origin=self.origin)
        if dev.id is not None and any(d.id == dev.id for d in self.cfg.devices):
            raise OptionError(f"Duplicate ID '{dev.id}' for device")
        self.cfg.devices.append(dev)

    def opt_guest(self, arg: str) -> None:
        if arg in _HELP_WORDS:
            raise EarlyExit("Guest drivers: " + ", ".join(GUEST_DRIVERS)
                            + "\nApps: " + ", ".join(GUEST_APPS))
        if self.cfg.guest is not None:
            raise OptionError("only one -guest may be given")
        pairs = parse_pairs(arg, "driver")
        params: dict[str, str] = {}
        for key, value in pairs:
            if value is None:
                raise OptionError(f"Expected '=' after parameter '{key}'")
            if key in params:
                raise OptionError(f"Parameter '{key}' given twice")
            params[key] = value
        driver = params.pop("driver", "")
        if driver not in GUEST_DRIVERS:
            raise OptionError(f"Parameter 'driver' does not accept value '{driver}'")
        if "app" not in params:
            raise OptionError("Parameter 'app' is missing")
        app = params.pop("app")
        if app not in GUEST_APPS:
            raise OptionError(f"Parameter 'app' does not accept value '{app}'")
        self.cfg.guest = GuestConfig(driver, app, params, origin=self.origin)

    def opt_qmp(self, arg: str, pretty: bool = False) -> None:
        items = split_opts(arg)
        head = items[0] if items else ""
        rest = ",".join(item.replace(",", ",,") for item in items[1:])
        label = f"compat_monitor{self.compat_monitors}"
        if head == "stdio" and not rest:
            dev = Chardev(label, "stdio", origin=self.origin)
        elif head.startswith("unix:") and len(head) > 5:
            values = self.opts(rest, QMP_OPTS)
            dev = Chardev(label, "socket", path=head[5:], origin=self.origin)
            self._socket(dev, {"path": head[5:], **values})
        elif head.startswith(("tcp:", "telnet:", "udp:")):
            raise OptionError(f"'{head.split(':')[0]}' monitors are not supported by emu: "
                              "use unix:PATH or stdio")
        else:
            raise OptionError(f"'{arg}' is not a valid char driver")
        self.compat_monitors += 1
        self._add_chardev(dev)
        self.cfg.monitors.append(MonitorConfig(label, "control", pretty, origin=self.origin))

    def opt_qmp_pretty(self, arg: str) -> None:
        self.opt_qmp(arg, pretty=True)

    def opt_mon(self, arg: str) -> None:
        values = self.opts(arg, MON)
        require(values, "chardev")
        mode = values.get("mode", "readline")
        if mode != "control":
            raise OptionError("emu has no human monitor: use mode=control (QMP) and "
                              "human-monitor-command")
        self.cfg.monitors.append(MonitorConfig(values["chardev"], mode, values.get("pretty", False),
                                               origin=self.origin))

    def opt_monitor(self, arg: str) -> None:
        if arg != "none":
            raise OptionError("emu has no human monitor: use -qmp and human-monitor-command")

    def opt_serial(self, arg: str) -> None:
        if arg not in ("none", "null"):
            self.info("emu has no serial port: nothing will be written to it")

    def opt_parallel(self, arg: str) -> None:
        if arg not in ("none", "null"):
            raise OptionError("emu has no parallel port: use -parallel none")

    def opt_display(self, arg: str) -> None:
        dtype = split_opts(arg)[0] if arg else ""
        if dtype != "none":
            raise OptionError(f"Parameter 'type' does not accept value '{dtype}'")

    def opt_vga(self, arg: str) -> None:
        if arg != "none":
            self.info("emu has no display: the VGA device is not emulated")

    def opt_cpu(self, arg: str) -> None:
        self.info("emu emulates devices, not CPUs: -cpu has no effect")

    def opt_kernel_like(self, arg: str) -> None:
        self.info("emu boots no kernel: its guest is a driver program (see -guest)")

    def opt_d(self, arg: str) -> None:
        if arg in _HELP_WORDS:
            raise EarlyExit("Log items (comma separated):\n" + "\n".join(
                f"{k:<15} {v}" for k, v in LOG_ITEMS.items()))
        for item in arg.split(","):
            if item not in LOG_ITEMS:
                raise OptionError(f"unknown log item '{item}' (-d help lists them)")
            if item not in self.cfg.log_items:
                self.cfg.log_items.append(item)

    def opt_D(self, arg: str) -> None:
        self.cfg.log_file = arg

    def opt_trace(self, arg: str) -> None:
        if arg in _HELP_WORDS:
            raise EarlyExit("\n".join(f"{k:<16} {v}" for k, v in TRACE_EVENTS.items()))
        values = self.opts(arg, TRACE)
        if "file" in values:
            self.cfg.trace.file = values["file"]
        pattern = values.get("enable")
        if pattern is None:
            return
        matched = fnmatch.filter(TRACE_EVENTS, pattern)
        if not matched:
            self.warn(f"trace event '{pattern}' does not exist")
        for ev in matched:
            if ev not in self.cfg.trace.events:
                self.cfg.trace.events.append(ev)

    def opt_pidfile(self, arg: str) -> None:
        self.cfg.pidfile = arg

    def opt_version(self) -> None:
        raise EarlyExit(version_text())

    def opt_help(self) -> None:
        raise EarlyExit(usage())

    def flag(self, attr: str) -> Callable[[], None]:
        def set_flag() -> None:
            setattr(self.cfg, attr, True)
        return set_flag

    # -- whole-line checks (QEMU creates chardevs, netdevs, then devices) --

    def check(self) -> None:
        cfg = self.cfg
        users: dict[str, str] = {}

        def use_chardev(cid: str, origin: str, what: str) -> Chardev:
            self.origin = origin
            dev = cfg.chardev(cid)
            if dev is None:
                raise OptionError(f'chardev "{cid}" not found')
            if cid in users:
                raise OptionError(f"chardev '{cid}' is already in use by {users[cid]}")
            users[cid] = what
            return dev

        for mon in cfg.monitors:
            dev = use_chardev(mon.chardev, mon.origin, "a monitor")
            if dev.backend == "stdio" and cfg.daemonize:
                raise OptionError("cannot use stdio with -daemonize")
        for nd in cfg.netdevs:
            dev = use_chardev(nd.chardev, nd.origin, f"netdev '{nd.id}'")
            if dev.backend != "socket":
                raise OptionError(f'chardev "{nd.chardev}" is not a unix socket')

        for obj in cfg.objects:
            if isinstance(obj, FilterDump) and cfg.netdev(obj.netdev) is None:
                self.origin = obj.origin
                raise OptionError("Parameter 'netdev' expects a network backend id")

        if cfg.devices and cfg.machine_type == "none":
            self.origin = cfg.devices[0].origin
            raise OptionError(f"No 'PCI' bus found for device '{cfg.devices[0].driver}'")
        nics: dict[str, str] = {}
        slots: dict[PCIAddress, Device] = {}
        for i, dev in enumerate(cfg.devices):
            self.origin = dev.origin
            if isinstance(dev, VirtioNetPCI):
                if dev.netdev is None:
                    self.warn(f"nic {dev.id or f'{dev.driver}.{i}'} has no peer")
                elif cfg.netdev(dev.netdev) is None:
                    raise OptionError(f"Property '{dev.driver}.netdev' can't find value '{dev.netdev}'")
                elif dev.netdev in nics:
                    raise OptionError(f"Property '{dev.driver}.netdev' can't take value "
                                      f"'{dev.netdev}', it's in use")
                else:
                    nics[dev.netdev] = dev.driver
                    nd = cfg.netdev(dev.netdev)
                    if dev.mq is False and nd is not None and nd.queues > 1:
                        self.info(f"netdev '{nd.id}' has {nd.queues} queue pairs but mq=off: "
                                  "the guest will use one")
            else:
                ch = use_chardev(dev.chardev, dev.origin, f"device '{dev.id or dev.driver}'")
                if ch.backend != "socket":
                    raise OptionError(f'chardev "{dev.chardev}" is not a unix socket')
            if dev.addr is not None:
                other = slots.get(dev.addr)
                if other is not None:
                    raise OptionError(f"PCI: slot {dev.addr.slot} function {dev.addr.function} not "
                                      f"available for {dev.driver}, in use by {other.driver},"
                                      f"id \"{other.id or ''}\"")
                slots[dev.addr] = dev

        self._check_ram()
        self._check_guest()

    def _check_ram(self) -> None:
        cfg = self.cfg
        if cfg.memory_backend is not None:
            self.origin = self.numa_origin or self.machine_origin
            obj = cfg.object(cfg.memory_backend)
            if obj is None:
                raise OptionError(f"Memory backend '{cfg.memory_backend}' not found")
            if not isinstance(obj, MemoryBackend):
                raise OptionError(f"'{cfg.memory_backend}' is not a memory backend")
            if self.ram_size_given and obj.size != cfg.ram_size:
                raise OptionError("Machine memory size does not match the size of the memory backend")
            cfg.ram_size = obj.size
        if not cfg.ram.share and any(isinstance(d, VirtioNetPCI) and d.netdev for d in cfg.devices):
            self.origin = cfg.ram.origin
            raise OptionError(f"vhost-user needs guest RAM shared with the back-end: "
                              f"set share=on on memory backend '{cfg.ram.id}'")

    def _check_guest(self) -> None:
        g = self.cfg.guest
        if g is None:
            return
        self.origin = g.origin
        wanted = GUEST_DRIVERS[g.driver]
        n = sum(d.driver == wanted for d in self.cfg.devices)
        need = 2 if g.app == "forward" else 1
        if n < need:
            raise OptionError(f"app={g.app} needs {'two' if need == 2 else 'a'} "
                              f"{wanted} device{'s' if need == 2 else ''}")


# option name -> (takes an argument, handler name or callable maker)
_ARG_OPTIONS = {
    "name": "opt_name", "m": "opt_m", "machine": "opt_machine", "M": "opt_machine",
    "accel": "opt_accel", "smp": "opt_smp", "object": "opt_object", "chardev": "opt_chardev",
    "netdev": "opt_netdev", "device": "opt_device", "guest": "opt_guest", "qmp": "opt_qmp",
    "qmp-pretty": "opt_qmp_pretty", "mon": "opt_mon", "monitor": "opt_monitor",
    "serial": "opt_serial", "parallel": "opt_parallel", "display": "opt_display",
    "vga": "opt_vga", "cpu": "opt_cpu", "kernel": "opt_kernel_like", "initrd": "opt_kernel_like",
    "append": "opt_kernel_like", "d": "opt_d", "D": "opt_D", "trace": "opt_trace",
    "pidfile": "opt_pidfile", "numa": "opt_numa", "mem-path": "opt_mem_path",
}
_FLAG_OPTIONS = {
    "S": "start_paused", "daemonize": "daemonize", "no-shutdown": "no_shutdown",
    "no-reboot": "no_reboot", "mem-prealloc": "mem_prealloc",
}
_HARMLESS_FLAGS = ("nographic", "nodefaults", "no-user-config", "no-hpet", "no-acpi")
_ACTION_OPTIONS = {"version": "opt_version", "help": "opt_help", "h": "opt_help",
                   "enable-kvm": "opt_enable_kvm"}


def parse_args(argv: list[str]) -> MachineConfig:
    """Parse and check a whole command line.

    Raises :class:`CommandLineError` (message QEMU-style, without the
    ``emu: `` prefix) or :class:`EarlyExit` for -version/-help/``help``.
    """
    p = _Parser()
    i = 0
    while i < len(argv):
        raw = argv[i]
        i += 1
        if not raw.startswith("-") or raw == "-":
            raise CommandLineError(f"{raw}: emu takes no disk image argument")
        name = raw[2:] if raw.startswith("--") else raw[1:]
        p.origin = raw
        try:
            if name in _ARG_OPTIONS:
                if i >= len(argv):
                    raise CommandLineError(f"{raw}: requires an argument")
                arg = argv[i]
                i += 1
                p.origin = f"{raw} {arg}"
                getattr(p, _ARG_OPTIONS[name])(arg)
            elif name in _FLAG_OPTIONS:
                setattr(p.cfg, _FLAG_OPTIONS[name], True)
            elif name in _HARMLESS_FLAGS:
                pass
            elif name in _ACTION_OPTIONS:
                getattr(p, _ACTION_OPTIONS[name])()
            else:
                raise CommandLineError(f"{raw}: invalid option")
        except OptionError as e:
            raise CommandLineError(f"{p.origin}: {e}") from None
    if p.machine_accel and p.accel_option:
        raise CommandLineError("The -accel and \"-machine accel=\" options are incompatible")
    try:
        p.check()
    except OptionError as e:
        raise CommandLineError(f"{p.origin}: {e}" if p.origin else str(e)) from None
    return p.cfg


def monitor_endpoints(cfg: MachineConfig) -> list[Any]:
    """The :class:`emu.qmp.MonitorEndpoint` of every monitor, for QmpServer.add_monitor."""
    from emu.qmp import MonitorEndpoint
    out = []
    for mon in cfg.monitors:
        dev = cfg.chardev(mon.chardev)
        assert dev is not None, "parse_args checked the reference"
        out.append(MonitorEndpoint(label=dev.id, path=dev.path, fd=dev.fd, stdio=dev.backend == "stdio",
                                   server=dev.server, wait=dev.server and dev.wait,
                                   reconnect=float(dev.reconnect), pretty=mon.pretty))
    return out


# -- texts ---------------------------------------------------------------------------

def version_text() -> str:
    """First line for people, second for harnesses that parse QEMU's."""
    return (f"emu version {__version__}\n"
            f"QEMU emulator version {QEMU_VERSION_TEXT} (emu {__version__})")


def device_help() -> str:
    lines = ["Network devices:"]
    for name, (_, desc) in DEVICES.items():
        alias = next((a for a, t in DEVICE_ALIASES.items() if t == name), None)
        lines.append(f'name "{name}", bus PCI' + (f', alias "{alias}"' if alias else "") + f', desc "{desc}"')
    return "\n".join(lines)


def usage() -> str:
    return f"""{version_text()}
usage: emu [options]

emu is one virtual machine: guest RAM, a PCI bus with virtio-net-pci and
vhost-pci-net devices, a QMP monitor, and a guest driver program.

Machine:
-name NAME | guest=NAME          the VM's name (query-name)
-m [size=]SIZE                   guest RAM (default 128M; unit M if none)
-numa node,memdev=ID, -mem-path DIR, -mem-prealloc   as in QEMU (one node)
-machine TYPE[,memory-backend=ID] q35 (default), pc, or none
-object memory-backend-shm|memfd|file,id=ID,size=SIZE[,share=on][,mem-path=PATH]
-object filter-dump,id=ID,netdev=ID,file=PCAP[,maxlen=N]
-smp N, -accel NAME, -enable-kvm, -cpu X   accepted, no effect
Devices:
-chardev socket,id=ID,path=PATH|fd=N[,server=on|off][,wait=off][,reconnect=SECONDS]
-netdev vhost-user,id=ID,chardev=ID[,queues=N][,vhost-pci=auto|seed|off]
-device virtio-net-pci,netdev=ID[,mac=MAC][,mrg_rxbuf=on|off][,mq=on|off][,vectors=N][,addr=SLOT.FN]...
-device vhost-pci-net,chardev=ID[,mac=MAC][,window=SIZE][,queues=N]...
-device help | -device DRIVER,help   list device models / their properties
Guest:
-guest virtio-net|vhost-pci-net,app=gen|sink|echo|responder|forward|pingpong[,key=value...]
Monitor:
-qmp unix:PATH[,server=on|off][,wait=off] | -qmp stdio | -qmp-pretty ...
-chardev socket,id=mon,fd=N -mon chardev=mon,mode=control[,pretty=on]
Process:
-S                               start paused (prelaunch); 'cont' starts
-daemonize, -pidfile FILE, -no-shutdown, -no-reboot
-D FILE, -d ITEM[,...] (-d help), -trace [enable=]PATTERN[,file=FILE] (-trace help)
-display none, -nographic, -nodefaults, -no-user-config, -serial none, -vga none
-version, -help"""


def die(msg: str) -> NoReturn:
    """Report a fatal command-line error QEMU's way and exit with status 1."""
    print(f"emu: {msg}", file=sys.stderr)
    sys.exit(1)


def main(argv: list[str] | None = None, run: Callable[[MachineConfig], int] | None = None) -> int:
    """``emu [options]``: parse, report, then hand the config to *run*
    (default: :func:`emu.launcher.run`, the machine's process lifecycle)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = parse_args(argv)
    except EarlyExit as e:
        print(e.text)
        return e.status
    except CommandLineError as e:
        die(str(e))
    for msg in cfg.messages:
        print(f"emu: {msg}", file=sys.stderr)
    if run is None:
        from emu.launcher import run  # type: ignore[no-redef]
    return run(cfg)
