"""The parsed configuration of one VM: what a command line becomes.

:func:`emu.cli.parse_args` builds a :class:`MachineConfig` of these plain
dataclasses and checks it as a whole; the launcher and the machine read it.
Nothing here creates anything or imports more than the standard library,
so any layer may read a configuration without pulling in the parser.

Each record keeps ``origin``, the option it came from (``-device
virtio-net-pci,...``), for error messages QEMU's way.

The records are declared as dataclasses are (``@dataclass``, annotated
fields, ``field(default_factory=..., compare=False, repr=False)``) but
made by the small :func:`dataclass` below: the standard one costs about
half a millisecond per class at import (it generates and compiles each
class's methods) plus its own import, and this module is read before the
monitor answers its first command.  Same semantics for what is used here:
positional or keyword construction, defaults and factories, ``==`` on the
compared fields, ``repr``, ``frozen`` (hashable, immutable).
"""
from __future__ import annotations

from typing import Any, Callable, Union

_MISSING = object()


class _Field:
    __slots__ = ("name", "default", "factory", "compare", "repr")

    def __init__(self, default: Any = _MISSING, factory: Any = None, compare: bool = True,
                 repr: bool = True):
        self.name = ""
        self.default, self.factory, self.compare, self.repr = default, factory, compare, repr


def field(*, default: Any = _MISSING, default_factory: Any = None, compare: bool = True,
          repr: bool = True) -> Any:
    """As :func:`dataclasses.field` (the arguments this module uses)."""
    return _Field(default, default_factory, compare, repr)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    fields = type(self).__record_fields__
    if len(args) > len(fields):
        raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, {len(args)} given")
    for f, value in zip(fields, args):
        if f.name in kwargs:
            raise TypeError(f"{type(self).__name__}() got multiple values for {f.name!r}")
        object.__setattr__(self, f.name, value)
    for f in fields[len(args):]:
        if f.name in kwargs:
            value = kwargs.pop(f.name)
        elif f.factory is not None:
            value = f.factory()
        elif f.default is not _MISSING:
            value = f.default
        else:
            raise TypeError(f"{type(self).__name__}() missing argument {f.name!r}")
        object.__setattr__(self, f.name, value)
    if kwargs:
        raise TypeError(f"{type(self).__name__}() got unexpected arguments {sorted(kwargs)}")


def _key(self: Any) -> tuple:
    return tuple(getattr(self, f.name) for f in type(self).__record_fields__ if f.compare)


def _eq(self: Any, other: Any) -> Any:
    if type(other) is not type(self):
        return NotImplemented
    return _key(self) == _key(other)


def _repr(self: Any) -> str:
    return f"{type(self).__name__}(" + ", ".join(
        f"{f.name}={getattr(self, f.name)!r}" for f in type(self).__record_fields__ if f.repr) + ")"


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")


def field_defaults(cls: Any) -> dict[str, Any]:
    """The default of every field of a record class that has one (what a
    property defaults to, for QMP's device-list-properties)."""
    out = {}
    for f in cls.__record_fields__:
        if f.factory is not None:
            out[f.name] = f.factory()
        elif f.default is not _MISSING:
            out[f.name] = f.default
    return out


def dataclass(cls: Any = None, *, frozen: bool = False) -> Any:
    """``@dataclass`` / ``@dataclass(frozen=True)`` for this module's records."""
    def make(cls: Any) -> Any:
        fields: dict[str, _Field] = {}
        for base in reversed(cls.__mro__[1:]):
            for f in getattr(base, "__record_fields__", ()):
                fields[f.name] = f
        for name in cls.__dict__.get("__annotations__", {}):
            value = cls.__dict__.get(name, _MISSING)
            f = value if isinstance(value, _Field) else _Field(default=value)
            f.name = name
            fields[name] = f
            if isinstance(value, _Field):
                if f.default is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, f.default)
        cls.__record_fields__ = tuple(fields.values())
        cls.__init__, cls.__eq__, cls.__repr__ = _init, _eq, _repr
        cls.__hash__ = (lambda self: hash(_key(self))) if frozen else None
        if frozen:
            cls.__setattr__ = _frozen_setattr
        return cls
    return make if cls is None else make(cls)

PAGE_SIZE = 4096
DEFAULT_RAM_SIZE = 128 << 20        # QEMU's default -m


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
    backend: str                # socket | stdio | file | pty | null
    path: str | None = None     # socket: unix path; file: the file
    fd: int | None = None
    server: bool = False
    wait: bool = True           # meaningful with server=on only
    reconnect: int = 0          # seconds; client mode only
    append: bool = False        # file: append instead of truncating
    logfile: str | None = None  # a copy of the output (a serial port's chardev)
    logappend: bool = False
    origin: str = _origin()


@dataclass
class SerialPort:
    """A 16550 UART on the ISA bus (``-serial``, ``-device isa-serial``):
    COM1..COM4 at QEMU's I/O bases and IRQs, its output to ``chardev``."""
    index: int                  # 0..3: COM1..COM4
    chardev: str                # the chardev's id ("serial0" for -serial stdio)
    id: str | None = None
    origin: str = _origin()


#: QEMU's isa-serial ports: index -> (iobase, irq)
ISA_SERIAL_PORTS = ((0x3F8, 4), (0x2F8, 3), (0x3E8, 4), (0x2E8, 3))


@dataclass
class Netdev:
    """``-netdev TYPE,id=ID,...``: ``vhost-user`` (``chardev``, ``queues``,
    ``vhost_pci``), ``socket`` (one of ``fd``, ``listen``, ``connect``) or
    ``hubport`` (``hubid``)."""
    id: str
    chardev: str = ""
    type: str = "vhost-user"
    queues: int = 1
    vhost_pci: str = "auto"     # auto | seed | off: see emu.vhost_user.extension
    fd: int | None = None       # socket: an inherited connected stream socket
    listen: str | None = None   # socket: [HOST]:PORT to accept one peer at a time on
    connect: str | None = None  # socket: HOST:PORT to connect to
    hubid: int | None = None    # hubport
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
    disable_legacy: str = "auto"        # on | off | auto (QEMU's: legacy on a conventional bus)
    disable_modern: bool = False
    mrg_rxbuf: bool = True
    mq: bool = False
    event_idx: bool = True
    indirect_desc: bool = True
    packed: bool = False                # VIRTIO_F_RING_PACKED offered (QEMU's default: off)
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
    packed: bool = False                # packed own queues offered (peer rings: either format)
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
class GlobalProperty:
    """``-global DRIVER.PROP=VALUE``: the default of a property of every
    device of that driver (as given; applied when each device is made)."""
    driver: str
    prop: str
    value: str
    origin: str = _origin()


@dataclass
class GuestConfig:
    """``-guest DRIVER,app=APP,key=val...``: the driver program and its app.

    ``params`` are typed (checked against :mod:`emu.guest.registry`): the
    driver's and the app's keys as given, without defaults."""
    driver: str                 # virtio-net | vhost-pci-net
    app: str                    # gen | sink | echo | responder | forward | pingpong
    params: dict[str, Any] = field(default_factory=dict)
    origin: str = _origin()


@dataclass
class QtestConfig:
    """``-qtest``: the chardev carrying the qtest protocol (``unix:PATH``
    makes one labelled ``qtest``; ``chardev:ID`` names a ``-chardev``)."""
    chardev: str
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
    machine_type: str = "pc"            # QEMU's default x86 machine (emu.machines.types)
    ram_size: int = DEFAULT_RAM_SIZE
    memory_backend: str | None = None   # -machine memory-backend=ID (or -numa node,memdev=ID)
    mem_path: str | None = None         # -mem-path: implicit RAM from a file in this directory
    mem_prealloc: bool = False          # -mem-prealloc
    smp: int = 1                        # -smp: boot CPUs
    max_cpus: int = 0                   # -smp maxcpus= (0: as many as boot CPUs)
    numa_memdevs: list[str] = field(default_factory=list)   # -numa node,memdev=ID
    max_ram_below_4g: int | None = None  # -machine max-ram-below-4g=
    globals: list[GlobalProperty] = field(default_factory=list)   # -global
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
    serials: list[SerialPort] = field(default_factory=list)
    uuid: str | None = None             # -uuid (query-uuid)
    msg_timestamp: bool = False         # -msg timestamp=on: messages and trace lines
    msg_guest_name: bool = False        # -msg guest-name=on
    #: -add-fd: set id -> [(fd, opaque)]; "/dev/fdset/ID" opens a duplicate
    fdsets: dict[int, list[tuple[int, str | None]]] = field(default_factory=dict)
    qtest: QtestConfig | None = None    # -qtest
    qtest_log: str | None = None        # -qtest-log FILE|none; None: standard error
    #: "warning: ..." and "info: ..." lines, printed by main() after "emu: "
    messages: list[str] = field(default_factory=list)
    #: ``(driver, pairs, globals) -> Device``: -device's parser, set by the
    #: command line, for QMP device_add (the same schema and texts)
    device_parser: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @property
    def qtest_accel(self) -> bool:
        """The qtest accelerator: the first of ``-accel``/``-machine accel=``,
        or implied by ``-qtest`` when no accelerator is given (as QEMU).
        No guest program runs; the virtual clock moves only by qtest."""
        return self.accel[0] == "qtest" if self.accel else self.qtest is not None

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
