"""The guest drivers and their apps, declared once.

For each ``-guest DRIVER``: the device it binds, its own parameters, and
its apps with theirs -- every parameter a keyval :class:`~emu.keyval.Param`
with its type, bounds and default.  Three readers: the command-line parser
(which values exist; it refuses a bad one where it enters, QEMU-style), the
launcher's QMP ``emu-set-guest-app`` (the same checks, answered at once),
and :class:`emu.guest.program.GuestProgram` (the classes to run and the
typed values they get).

Declarative and cheap to import (stdlib and :mod:`emu.keyval` only: the
parser runs before the monitor listens): classes are named as
``"module:attribute"`` and imported by :meth:`AppSpec.load` /
:meth:`DriverSpec.load` when a guest starts.
"""
from __future__ import annotations

import importlib
import re
from typing import Any, Callable, Mapping

from emu.keyval import (OptionError, Param, Schema, boolean, choice, format_value, integer,
                        macaddr, power_of_two, string)
from emu.spec.virtio import QUEUE_MAX_SIZE
#: the smallest frame the generator can stamp: emu.guest.packets.MIN_STAMPED
#: (Ethernet + IPv4 + UDP headers and the 8-byte sequence stamp; a test pins it)
MIN_STAMPED = 50
#: an IPv4 datagram is at most 65535 bytes (RFC 791 Total Length): so is a UDP frame's
MAX_FRAME = 65535
MAX_BURST = QUEUE_MAX_SIZE       # a burst never moves more than a whole ring
U64_MAX = (1 << 64) - 1


# -- value parsers (parameter name, text) -> value, keyval's convention -------------------------

_COUNT_RE = re.compile(r"([0-9]+)(?:\.([0-9]+))?([kKmMgG]?)\Z")
_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def count(lo: int, hi: int) -> Callable[[str, str], int]:
    """A decimal integer with an optional SI suffix (``200k``, ``1.5m``), in [lo, hi]."""
    def parse(name: str, text: str) -> int:
        m = _COUNT_RE.match(text)
        if not m or (m.group(2) is not None and not m.group(3)):
            raise OptionError(f"Parameter '{name}' expects a non-negative integer "
                              "(suffix k, m or g: times 10^3, 10^6 or 10^9)")
        whole, frac, suffix = m.groups()
        mult = _SI[suffix.lower()]
        value = int(whole) * mult + (int(frac) * mult // 10 ** len(frac) if frac else 0)
        if not lo <= value <= hi:
            raise OptionError(f"Parameter '{name}' expects a value in the range [{lo}, {hi}]")
        return value
    parse.kind = f"int[k|m|g] {lo}..{hi}"  # type: ignore[attr-defined]
    return parse


def ipv4(name: str, text: str) -> str:
    import ipaddress   # here: only a guest that answers ARP needs it
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise OptionError(f"Parameter '{name}' expects an IPv4 address") from None


ipv4.kind = "ipv4"  # type: ignore[attr-defined]


# -- the declarations ----------------------------------------------------------------------------

# Plain classes, not dataclasses: this module is imported before the
# monitor listens, and each dataclass costs about a millisecond to define.

class AppSpec:
    __slots__ = ("name", "target", "help", "params", "devices", "schema")

    def __init__(self, name: str, target: str, help: str, params: tuple[Param, ...] = (),
                 devices: int = 1):
        self.name = name
        self.target = target            # "module:Class"
        self.help = help
        self.params = params
        self.devices = devices          # devices of the driver's kind it needs at least
        self.schema = Schema(params)

    def __repr__(self) -> str:
        return f"AppSpec({self.name!r}, {self.target!r})"

    def load(self) -> type:
        return _load(self.target)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


class GuestParams:
    """Typed ``-guest`` values: the driver's (as given, and ``mode``'s
    default), the app's complete (defaults filled in), and all that were given."""
    __slots__ = ("driver", "app", "given")

    def __init__(self, driver: dict[str, Any], app: dict[str, Any], given: dict[str, Any]):
        self.driver = driver
        self.app = app
        self.given = given


class DriverSpec:
    __slots__ = ("name", "device", "target", "cls", "params", "apps", "schema")

    def __init__(self, name: str, device: str, target: str, cls: str, params: tuple[Param, ...],
                 apps: tuple[AppSpec, ...]):
        self.name = name                # -guest DRIVER
        self.device = device            # the qdev driver whose functions it binds
        self.target = target            # "module": matches(dev) and the driver class below
        self.cls = cls
        self.params = params
        self.apps: dict[str, AppSpec] = {a.name: a for a in apps}
        self.schema = Schema(params)

    def __repr__(self) -> str:
        return f"DriverSpec({self.name!r}, {self.device!r})"

    def load(self) -> tuple[Callable[[Any], bool], type]:
        """(matches(dev), the driver class)."""
        module = importlib.import_module(self.target)
        return module.matches, getattr(module, self.cls)

    def app(self, name: str) -> AppSpec:
        spec = self.apps.get(name)
        if spec is None:
            if name not in APP_NAMES:
                raise OptionError(f"Parameter 'app' does not accept value '{name}'")
            raise OptionError(f"unknown app '{name}' for driver {self.name} "
                              f"(have {', '.join(sorted(self.apps))})")
        return spec

    def check(self, app: str, params: Mapping[str, Any], *, app_only: bool = False) -> GuestParams:
        """Typed values of *params* (text, or scalars as QMP gives them) for
        *app*; raises :class:`OptionError` with QEMU's wording.  With
        *app_only* (an app switch) the driver's keys are refused: they
        would need the driver to start over."""
        spec = self.app(app)
        drv: dict[str, Any] = {}
        vals: dict[str, Any] = {}
        given: dict[str, Any] = {}
        for key, value in params.items():
            param = spec.schema.by_name.get(key)
            out = vals
            if param is None:
                param, out = self.schema.by_name.get(key), drv
                if param is None:
                    raise OptionError(f"Invalid parameter '{key}'")
                if app_only:
                    raise OptionError(f"Parameter '{key}' belongs to the {self.name} driver: "
                                      "it cannot change with the app")
            out[key] = given[key] = param.parse(key, _text(key, value))
        return GuestParams({**self.defaults(), **drv}, {**spec.defaults(), **vals}, given)

    def defaults(self) -> dict[str, Any]:
        """The driver's keys that have a default of the program's (the others
        default to the driver class's own)."""
        return {p.name: p.default for p in self.params if p.default is not None}

    def check_devices(self, app: str, have: int) -> None:
        """*have* devices of this driver's kind: enough for *app*?"""
        need = self.app(app).devices
        if have < need:
            raise OptionError(f"app={app} needs {'a' if need == 1 else 'two' if need == 2 else need} "
                              f"{self.device} device{'s' if need > 1 else ''}")

    def help(self, app: str | None = None) -> str:
        head = (f"{self.name}: a driver of {self.device} devices; apps: "
                f"{', '.join(self.apps)}\n{self.schema.help('driver')}")
        if app is None:
            return head
        spec = self.app(app)
        return f"{head}\n{spec.help}\n{spec.schema.help(f'app={app}')}"


def _text(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return format_value(value)
    raise OptionError(f"Parameter '{key}' expects a scalar value")


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _burst(default: int) -> Param:
    return Param("burst", count(1, MAX_BURST), "packets per data-path call", default=default)


_VERIFY = Param("verify", boolean, "check every frame's stamp and payload", default=False)
_IP = Param("ip", ipv4, "answer for this address only (default: any)")
_MAC = Param("mac", macaddr, "the address claimed in replies (default: the device's)")
_BROADCAST = "ff:ff:ff:ff:ff:ff"
_SIZE = Param("size", count(MIN_STAMPED, MAX_FRAME), "frame bytes (no FCS)", default=64)


def _driver_params(*extra: Param) -> tuple[Param, ...]:
    buf = integer(64, 1 << 17)
    return (Param("mode", choice("poll", "interrupt"), "data path spins, or sleeps on interrupts",
                  default="poll"),
            Param("queue_size", power_of_two(1, QUEUE_MAX_SIZE), "descriptors per virtqueue"),
            Param("buf_size", buf, "bytes per buffer (RX; and TX unless tx_buf_size)"),
            *extra,
            Param("layout", integer(0, 2), "descriptors per buffer: 0 one, 1 header + data, "
                  "2 indirect"),
            Param("msix", boolean, "use MSI-X (off: INTx)"),
            Param("mrg_rxbuf", boolean, "ask for VIRTIO_NET_F_MRG_RXBUF"),
            Param("event_idx", boolean, "ask for VIRTIO_RING_F_EVENT_IDX"),
            Param("indirect_desc", boolean, "ask for VIRTIO_RING_F_INDIRECT_DESC"),
            Param("packed", boolean, "ask for VIRTIO_F_RING_PACKED (when the device offers it)"))


_A = "emu.guest.apps"
_V = "emu.guest.vhost_pci_apps"

_VIRTIO_NET_APPS = (
    AppSpec("gen", f"{_A}:Gen", "send frames on every queue pair, count what comes back",
            (_SIZE,
             Param("count", count(0, U64_MAX), "frames to send (0: without end)", default=0),
             Param("rate", count(0, U64_MAX), "frames per second (0: as fast as the ring allows)",
                   default=0),
             _burst(32), _VERIFY,
             Param("dst", macaddr, "destination MAC", default=_BROADCAST))),
    AppSpec("sink", f"{_A}:Sink", "count (and check) every frame received", (_VERIFY, _burst(256))),
    AppSpec("echo", f"{_A}:Echo", "send every frame back, MAC addresses swapped"),
    AppSpec("responder", f"{_A}:Responder", "answer ARP and ICMP echo requests", (_IP, _MAC)),
    AppSpec("pingpong", f"{_A}:PingPong", "one stamped frame at a time: round-trip latency",
            (Param("count", count(0, U64_MAX), "timed round trips", default=10000),
             _SIZE,
             Param("warmup", count(0, U64_MAX), "untimed round trips first", default=100),
             Param("timeout_ms", count(0, 3_600_000), "ms before a round trip counts as lost",
                   default=1000),
             # checked when the app starts: engines register at run time (PINGPONG_ENGINES)
             Param("engine", string, "round-trip implementation", default="python"),
             Param("dst", macaddr, "destination MAC", default=_BROADCAST))),
)
_VHOST_PCI_APPS = (
    AppSpec("sink", f"{_V}:Sink", "peer TX -> own RX (one copy), counted",
            (_VERIFY, Param("copy", boolean, "copy (off: complete the peer's chains only)",
                            default=True), _burst(64))),
    AppSpec("echo", f"{_V}:Echo", "peer TX -> peer RX, MAC addresses swapped (one copy)",
            (_burst(64),)),
    AppSpec("forward", f"{_V}:Forward", "between two devices' peers, one copy each way",
            (_burst(64),), devices=2),
    AppSpec("responder", f"{_V}:Responder", "answer the peer's ARP and ICMP echo requests",
            (_IP, _MAC)),
)

DRIVERS: dict[str, DriverSpec] = {d.name: d for d in (
    DriverSpec("virtio-net", "virtio-net-pci", "emu.guest.virtio_net", "VirtioNetDriver",
               _driver_params(Param("tx_buf_size", integer(64, 1 << 17),
                                    "bytes per TX buffer: a whole frame and its header"),
                              Param("legacy", boolean, "drive the legacy virtio-pci interface "
                                    "(of a transitional device; a legacy-only one always)")),
               _VIRTIO_NET_APPS),
    DriverSpec("vhost-pci-net", "vhost-pci-net", "emu.guest.vhost_pci_net", "VhostPciNetDriver",
               _driver_params(), _VHOST_PCI_APPS),
)}

#: every app name, in the order the drivers declare them
APP_NAMES: tuple[str, ...] = tuple(dict.fromkeys(a for d in DRIVERS.values() for a in d.apps))


def driver(name: str) -> DriverSpec:
    spec = DRIVERS.get(name)
    if spec is None:
        raise OptionError(f"Parameter 'driver' does not accept value '{name}'")
    return spec


def overview() -> str:
    """``-guest help``."""
    lines = ["Guest drivers (-guest DRIVER,app=APP[,key=value...]; "
             "-guest DRIVER,app=APP,help lists the keys):"]
    for d in DRIVERS.values():
        lines.append(f"  {d.name:<15} binds {d.device}; apps: {', '.join(d.apps)}")
    lines.append("Apps: " + ", ".join(APP_NAMES))
    return "\n".join(lines)
