"""The parsed configuration of one VM: what a command line becomes.

:func:`emu.cli.parse_args` builds a :class:`MachineConfig` of these plain
dataclasses and checks it as a whole; the launcher and the machine read it.
Nothing here creates anything or imports more than the standard library,
so any layer may read a configuration without pulling in the parser.

Each record keeps ``origin``, the option it came from (``-device
virtio-net-pci,...``), for error messages QEMU's way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

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
class GuestConfig:
    """``-guest DRIVER,app=APP,key=val...``: the driver program and its app.

    ``params`` are typed (checked against :mod:`emu.guest.registry`): the
    driver's and the app's keys as given, without defaults."""
    driver: str                 # virtio-net | vhost-pci-net
    app: str                    # gen | sink | echo | responder | forward | pingpong
    params: dict[str, Any] = field(default_factory=dict)
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
