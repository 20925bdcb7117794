"""The schemas of emu's options: every parameter with its type, bounds and help.

One :class:`~emu.keyval.Schema` per option (or per ``-device`` driver,
``-object`` type, ``-chardev`` and ``-netdev`` backend), and the value
parsers the command line needs beyond :mod:`emu.keyval`'s.  A new option
is a schema here plus one handler (see :mod:`emu.cli.state`).  Error texts
are QEMU 7.2's where QEMU has the option.
"""
from __future__ import annotations

from emu.config import PAGE_SIZE
from emu.devprops import (DEVICE_ALIASES, DEVICES, DRIVER_MUST_BE_OFF,  # noqa: F401
                          FIELD_NAMES, ISA_SERIAL, MUST_BE_OFF, VIRTIO_DEVICE_OF, VIRTIO_NET_FEATURES,
                          VHOST_PCI_MODE as _VHOST_PCI_MODE,
                          ignored as _ign)
from emu.keyval import (SIZE_HELP, OptionError, Param, Schema, boolean, choice, identifier, integer,
                        size, string, to_size)


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


def _fd(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise OptionError(f"Unable to parse FD number {text}")
    return int(text)


for _parser, _kind in ((_ram_size, "size"), (_backend_size, "size"), (_fd, "fd")):
    _parser.kind = _kind  # type: ignore[attr-defined]


NAME = Schema((Param("guest", string, "the VM's name"),
               _ign("process", string, "process name"),
               _ign("debug-threads", boolean, "name threads")), implied="guest")

MEMORY = Schema((Param("size", _ram_size, "guest RAM size (default unit M)"),), implied="size")

_MACHINE_IGNORED = ("acpi", "dump-guest-core", "graphics", "hpet", "i8042", "kernel-irqchip",
                    "mem-merge", "nvdimm", "pic", "pit", "sata", "smbus", "smm",
                    "suppress-vmdesc", "usb", "vmport")
def _below_4g(name: str, text: str) -> int:
    value = size(name, text)
    if value > 4 << 30:
        raise OptionError(f"Machine option 'max-ram-below-4g={value}' expects size less than "
                          f"or equal to 4G")
    return value


_below_4g.kind = "size"  # type: ignore[attr-defined]

MACHINE = Schema((Param("type", string, "machine type (pc, q35, none)"),
                  Param("memory-backend", identifier, "id of the -object memory-backend-* for RAM"),
                  Param("max-ram-below-4g", _below_4g, "RAM below 4 GiB at most (pc, q35)"),
                  Param("accel", string, "accelerator list (qtest: the qtest accelerator)"),
                  *(_ign(n, string) for n in _MACHINE_IGNORED)),
                 implied="type", unknown="Property '{owner}-machine.{key}' not found")

ACCELERATORS = ("kvm", "tcg", "xen", "hvf", "whpx", "nvmm", "hax", "qtest")
ACCEL = Schema((Param("accel", string, "accelerator name"),
                *(_ign(n, string) for n in ("thread", "tb-size", "split-wx", "kernel-irqchip",
                                            "kvm-shadow-mem", "dirty-ring-size"))),
               implied="accel")

SMP_KEYS = ("cpus", "maxcpus", "sockets", "dies", "clusters", "cores", "threads")
SMP = Schema(tuple(Param(n, integer(0, 4096)) for n in SMP_KEYS), implied="cpus")

SET = Schema(())            # -set GROUP.ID.PROP=VALUE: parsed by its handler
GLOBAL = Schema((Param("driver", string, "device type"), Param("property", string, "property"),
                 Param("value", string, "default value")))

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

_LOGFILE = (Param("logfile", string, "a copy of the output (serial ports), e.g. /dev/fdset/N"),
            Param("logappend", boolean, "append to logfile instead of truncating it"))
SOCKET_NOT_SUPPORTED = ("host", "port", "to", "ipv4", "ipv6", "telnet", "tn3270", "websocket",
                         "tls-creds", "tls-authz", "nodelay", "abstract", "tight")
CHARDEVS: dict[str, Schema] = {
    "socket": Schema((Param("id", identifier, "chardev id"),
                      Param("path", string, "unix socket path"),
                      Param("fd", _fd, "inherited socket fd (connected or listening)"),
                      Param("server", boolean, "listen instead of connect"),
                      Param("wait", boolean, "with server=on: wait for a client before starting"),
                      Param("reconnect", integer(0, 1 << 31), "client: seconds before re-connecting"),
                      *_LOGFILE)),
    "stdio": Schema((Param("id", identifier, "chardev id"), _ign("signal"),
                     *_LOGFILE)),
    "file": Schema((Param("id", identifier, "chardev id"),
                    Param("path", string, "the file (or /dev/fdset/N) the output goes to"),
                    Param("append", boolean, "append instead of truncating"),
                    *_LOGFILE)),
    "pty": Schema((Param("id", identifier, "chardev id"), _ign("logfile", string),
                   _ign("logappend"))),
    "null": Schema((Param("id", identifier, "chardev id"), _ign("logfile", string),
                    _ign("logappend"))),
}
#: -serial unix:PATH,...
SERIAL_OPTS = Schema((Param("server", boolean), Param("wait", boolean),
                      Param("reconnect", integer(0, 1 << 31))))

#: -netdev socket parameters of QEMU's datagram modes, refused by name
SOCKET_NETDEV_NOT_SUPPORTED = ("mcast", "udp", "localaddr")
NETDEVS: dict[str, Schema] = {
    "vhost-user": Schema((Param("id", identifier, "netdev id"),
                          Param("chardev", identifier, "the socket chardev to the back-end"),
                          Param("queues", integer(1, 1024), "queue pairs"),
                          Param("vhost-pci", _VHOST_PCI_MODE, "vhost-pci extension: auto, seed or off"),
                          _ign("vhostforce"))),
    "socket": Schema((Param("id", identifier, "netdev id"),
                      Param("fd", _fd, "an inherited connected stream socket"),
                      Param("listen", string, "[HOST]:PORT: accept one TCP peer at a time"),
                      Param("connect", string, "HOST:PORT: connect to a TCP peer"),
                      *(Param(k, string, "not supported: emu's socket netdev is a stream")
                        for k in SOCKET_NETDEV_NOT_SUPPORTED))),
    "hubport": Schema((Param("id", identifier, "netdev id"),
                       Param("hubid", integer(-(1 << 31), (1 << 31) - 1), "hub identifier"),
                       Param("netdev", identifier, "not supported: hub ports of NICs only"))),
}

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
                Param("events", string, "a file of event name patterns, one a line"),
                Param("file", string, "trace output file (the log: as -D)")), implied="enable")

# -- the boilerplate a manager (libvirt) passes: recorded, or accepted without effect --
MSG = Schema((Param("timestamp", boolean, "prefix messages and trace lines with the time"),
              Param("guest-name", boolean, "prefix messages with the guest name (-name)")))
UUID = Schema((Param("uuid", string, "the VM's UUID (query-uuid)"),), implied="uuid")
SANDBOX = Schema((Param("enable", boolean, "seccomp sandbox (emu installs none)"),
                  *(Param(n, choice("allow", "deny", "children"), "a seccomp rule (emu: none)")
                    for n in ("obsolete", "elevateprivileges", "spawn", "resourcecontrol"))),
                 implied="enable")
OVERCOMMIT = Schema((Param("mem-lock", boolean, "lock guest memory (emu: must be off)"),
                     _ign("cpu-pm", boolean)))
RTC = Schema((_ign("base", string, "utc, localtime or a date"),
              _ign("clock", choice("host", "rt", "vm")),
              _ign("driftfix", choice("none", "slew"))))
BOOT = Schema((_ign("order", string), _ign("once", string), _ign("menu", boolean),
               _ign("splash", string), _ign("splash-time", integer(0, 65535)),
               _ign("reboot-timeout", integer(-1, 65535)), _ign("strict", boolean)),
              implied="order")
ADD_FD = Schema((Param("fd", integer(-1, (1 << 31) - 1), "an inherited file descriptor"),
                 Param("set", integer(-1, (1 << 63) - 1), "the fd set it joins: /dev/fdset/SET"),
                 Param("opaque", string, "free text (query-fdsets)")))
AUDIODEV = Schema((Param("id", identifier, "audio backend id"),
                   Param("driver", string, "audio driver (emu has no audio)"),
                   Param("timer-period", integer(0, 1 << 31), "microseconds")))
NIC = Schema((Param("type", choice("none"), "none: no default NIC (emu has none anyway)"),),
             implied="type")
#: -object types libvirt always adds that emu has no use for
IGNORED_OBJECTS: dict[str, Schema] = {
    "secret": Schema((Param("id", identifier, "object id"),
                      *(Param(n, string, "secret's value (emu uses no secret)")
                        for n in ("format", "file", "data", "keyid", "iv")))),
}
