"""QEMU's log (``-D``, ``-d ITEM``) and trace events (``-trace PATTERN``).

One log per process, as QEMU's ``qemu_log``: the ``-D`` file (or the
``file=`` of ``-trace``), else stderr; one line per record, flushed.
Trace lines are QEMU's log-backend format::

    pci_cfg_write vp0 00:03.0 @0x4 <- 0x6
    12345@1733300000.123456:pci_cfg_write vp0 00:03.0 @0x4 <- 0x6   (-msg timestamp=on)

Every event is declared here once (``-trace help`` lists them without
importing the modules that emit them); a module takes its events with
:func:`event` and tests ``ev.on`` before it formats anything, so an event
that is off costs one attribute load.  None is on the C data path: they
trace control paths (QMP, vhost-user messages, configuration cycles,
register accesses), never a packet.  Names and formats are QEMU 7.2's
where QEMU has the event (a monitor's or device's name stands where QEMU
prints a pointer); emu's own are marked so in their help.

``-d`` items are groups of events (``pci``, ``qmp``, ``vhost_user``) or
QEMU's message classes (``guest_errors``, ``unimp``): see :data:`ITEMS`.
Stdlib only: the command line reads this before the monitor listens.
"""
from __future__ import annotations

import fnmatch
import os
import sys
import threading
import time
from typing import IO, Any

# name -> (format, help); QEMU's format strings with Python's % conversions
EVENTS_DECLARED: dict[str, tuple[str, str]] = {
    # monitor/trace-events
    "handle_qmp_command": ("mon %s req: %s", "a QMP request received (its JSON)"),
    "monitor_qmp_respond": ("mon %s resp: %s", "a QMP response or event sent (its JSON)"),
    "monitor_protocol_event_emit": ("event=%s data=%s", "a QMP event raised"),
    # hw/virtio/trace-events (emu: the back-end's rx is QEMU's front-end write)
    "vhost_user_read": ("req:%d flags:0x%x", "a vhost-user message received"),
    "vhost_user_write": ("req:%d flags:0x%x", "a vhost-user message sent"),
    "vhost_user_message": ("%s %s %s flags:0x%x fds:%d %s",
                           "emu: a vhost-user message, decoded (connection, rx/tx, request, payload)"),
    "vhost_user_connected": ("device %s chardev %s", "emu: a vhost-user peer connected"),
    "vhost_user_disconnected": ("device %s chardev %s reason %s",
                                "emu: a vhost-user peer went away"),
    "vhost_user_wire": ("%s", "emu: every vhost-user message as one JSON object per line "
                              "(emu.vhost_user.wirelog)"),
    # hw/pci/trace-events
    "pci_cfg_read": ("%s %02x:%02x.%x @0x%x -> 0x%x", "a configuration-space read"),
    "pci_cfg_write": ("%s %02x:%02x.%x @0x%x <- 0x%x", "a configuration-space write"),
    "pci_bar_read": ("%s %02x:%02x.%x BAR%d @0x%x size %d -> 0x%x", "emu: a BAR register read"),
    "pci_bar_write": ("%s %02x:%02x.%x BAR%d @0x%x size %d <- 0x%x",
                      "emu: a BAR register write"),
    # emu's start-up (docs/performance.md): each phase, from the entry point
    "emu_startup": ("%s %.1f ms", "emu: a start-up phase done, ms since emu's entry point"),
    # hw/char/trace-events
    "serial_read": ("read addr 0x%02x val 0x%02x", "a 16550 UART register read"),
    "serial_write": ("write addr 0x%02x val 0x%02x", "a 16550 UART register write"),
}

#: -d items: help, and the trace events the item turns on
ITEMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "guest_errors": ("log when the guest driver misuses a device (every time, not only the "
                     "first of each kind)", ()),
    "unimp": ("log accesses to addresses no device implements (unassigned memory and I/O)", ()),
    "vhost_user": ("log vhost-user messages and connection changes",
                   ("vhost_user_message", "vhost_user_connected", "vhost_user_disconnected")),
    "pci": ("log PCI configuration and BAR accesses", ("pci_cfg_read", "pci_cfg_write",
                                                       "pci_bar_read", "pci_bar_write")),
    "qmp": ("log QMP commands, responses and events", ("handle_qmp_command", "monitor_qmp_respond",
                                                      "monitor_protocol_event_emit")),
}
#: QEMU's -d items for its CPU emulation: accepted with a note, not listed
QEMU_CPU_ITEMS = ("out_asm", "in_asm", "op", "op_opt", "op_ind", "int", "exec", "cpu", "fpu",
                  "mmu", "pcall", "cpu_reset", "page", "nochain", "plugin", "strace", "tid")


class Log:
    """The process's log sink (``qemu_log``): thread-safe, a line at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._own = False
        self.timestamp = False          # -msg timestamp=on
        self.items: frozenset[str] = frozenset()
        self.dropped = 0                # lines a failing sink refused

    def open(self, file: IO[str] | None = None, path: str | None = None,
             fd: int | None = None) -> None:
        """Log to *file*, or to *path* / *fd* (truncated, as QEMU's -D), else stderr."""
        self.close()
        if fd is not None:
            self._file, self._own = os.fdopen(fd, "w", buffering=1, encoding="utf-8",
                                              errors="replace"), True
        elif path is not None:
            self._file, self._own = open(path, "w", buffering=1, encoding="utf-8",
                                         errors="replace"), True
        else:
            self._file, self._own = file, False

    def write(self, line: str) -> None:
        with self._lock:
            f = self._file if self._file is not None else sys.stderr
            try:
                f.write(line if line.endswith("\n") else line + "\n")
                f.flush()
            except (OSError, ValueError):    # a full disk, a closed pipe: go on without
                self.dropped += 1

    def trace(self, name: str, text: str) -> None:
        if self.timestamp:
            now = time.time()
            self.write(f"{threading.get_native_id()}@{int(now)}.{int(now % 1 * 1e6):06d}:"
                       f"{name} {text}")
        else:
            self.write(f"{name} {text}")

    def close(self) -> None:
        with self._lock:
            if self._own and self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
            self._file, self._own = None, False


LOG = Log()


class Event:
    """One trace event: ``if ev.on: ev(args...)``."""

    __slots__ = ("name", "fmt", "help", "on")

    def __init__(self, name: str, fmt: str, help: str):
        self.name, self.fmt, self.help = name, fmt, help
        self.on = False

    def __call__(self, *args: Any) -> None:
        if self.on:
            try:
                text = self.fmt % args
            except (TypeError, ValueError) as e:     # a bad call must not break the caller
                text = f"(bad trace arguments {args!r}: {e})"
            LOG.trace(self.name, text)

    def __repr__(self) -> str:
        return f"<trace event {self.name} {'on' if self.on else 'off'}>"


EVENTS: dict[str, Event] = {n: Event(n, f, h) for n, (f, h) in EVENTS_DECLARED.items()}


class Item:
    """A ``-d`` message class: ``if UNIMP.on: UNIMP.log(text)``."""

    __slots__ = ("name", "on")

    def __init__(self, name: str):
        self.name, self.on = name, False

    def log(self, text: str) -> None:
        if self.on:
            LOG.write(text)


ITEM_FLAGS: dict[str, Item] = {n: Item(n) for n in ITEMS}


def event(name: str) -> Event:
    """The declared event *name* (a module's handle on it)."""
    return EVENTS[name]


def item(name: str) -> Item:
    return ITEM_FLAGS[name]


def matching(pattern: str) -> list[str]:
    """Event names a ``-trace`` pattern selects (QEMU: a glob)."""
    return fnmatch.filter(EVENTS_DECLARED, pattern)


def enable(events: list[str] | tuple[str, ...] = (), items: list[str] | tuple[str, ...] = (),
           timestamp: bool = False) -> None:
    """Turn on *events* and the ``-d`` *items* (and the events they group)."""
    LOG.timestamp = timestamp
    LOG.items = frozenset(items)
    for ev in EVENTS.values():
        ev.on = False
    for it in ITEM_FLAGS.values():
        it.on = it.name in LOG.items
    for name in events:
        EVENTS[name].on = True
    for name in items:
        for ev in ITEMS.get(name, ("", ()))[1]:
            EVENTS[ev].on = True


def iso_now() -> str:
    """QEMU's ``-msg timestamp=on`` prefix: ``2024-01-01T12:00:00.123456Z``."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def message_prefix(timestamp: bool, guest_name: str | None) -> str:
    """What goes before ``emu: `` in a message on stderr (QEMU's
    error_report(): the time with ``-msg timestamp=on``, the guest's name
    with ``-msg guest-name=on``)."""
    parts = [iso_now()] if timestamp else []
    if guest_name:
        parts.append(guest_name)
    return " ".join(parts) + " " if parts else ""


def events_help() -> str:
    """``-trace help``: one event name a line, as QEMU prints them."""
    return "\n".join(EVENTS_DECLARED)


def items_help() -> str:
    """``-d help`` in QEMU's format."""
    lines = ["Log items (comma separated):"]
    lines += [f"{k:<15} {h}" for k, (h, _) in ITEMS.items()]
    lines += ["trace:PATTERN   enable trace events", "",
              'Use "-d trace:help" to get a list of trace events.']
    return "\n".join(lines)
