"""The process's messages, log and traces, set up from the command line.

* stderr: warnings and errors (``emu: ...``; ``-msg timestamp=on`` puts
  QEMU's ISO-8601 time in front, ``-msg guest-name=on`` the VM's name);
* the log (``-D FILE``, or ``-trace ...,file=FILE``; else stderr): the
  ``-d`` items and the trace events (:mod:`emu.trace`).  ``guest_errors``
  sends every guest error there (without it only the first of each kind
  is a warning on stderr); ``vhost_user`` adds the vhost-user modules'
  own notes to its messages, the lines the peers' rate limit held back
  included (:mod:`emu.ratelimit`: they go to DEBUG); ``vhost_user_wire``
  writes the JSON wire log.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

from emu import trace
from emu.config import MachineConfig
from emu.fdset import open_path

_VHOST_USER_LOGGERS = ("emu.vhost_user", "emu.netdev", "emu.virtio")
_connected = trace.event("vhost_user_connected")
_disconnected = trace.event("vhost_user_disconnected")


def message_prefix(cfg: MachineConfig) -> Callable[[], str]:
    """What goes before ``emu: `` on stderr (QEMU's error_report())."""
    name = cfg.name if cfg.msg_guest_name else None
    return lambda: trace.message_prefix(cfg.msg_timestamp, name)


class _StderrFormatter(logging.Formatter):
    def __init__(self, prefix: Callable[[], str]):
        super().__init__("emu: %(name)s: %(message)s")
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        return self.prefix() + super().format(record)


class _LogHandler(logging.Handler):
    """Python log records into emu's log (``-D``), one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            trace.LOG.write(self.format(record))
        except Exception:
            self.handleError(record)


def setup(cfg: MachineConfig) -> None:
    """Open the log, turn on the events, route Python's loggers."""
    path = cfg.trace.file or cfg.log_file
    if path is not None:
        # truncated, as QEMU's -D; /dev/fdset/N works
        fd = open_path(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666, cfg.fdsets)
        trace.LOG.open(fd=fd)
    trace.enable([e for e in cfg.trace.events if e != "vhost_user_wire"], cfg.log_items,
                 timestamp=cfg.msg_timestamp)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    stderr.setFormatter(_StderrFormatter(message_prefix(cfg)))
    root = logging.getLogger()
    root.addHandler(stderr)
    root.setLevel(logging.WARNING)
    to_log = _LogHandler()
    to_log.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    if "guest_errors" in cfg.log_items:
        # every guest error, not only the first of each kind (emu.pci.errors)
        lg = logging.getLogger("emu.pci")
        lg.setLevel(logging.DEBUG)
        lg.addHandler(to_log)
        lg.propagate = False
    if "vhost_user" in cfg.log_items:
        for name in _VHOST_USER_LOGGERS:
            lg = logging.getLogger(name)
            lg.setLevel(logging.DEBUG)      # everything: what the rate limit held back too
            lg.addHandler(to_log)


def close() -> None:
    trace.LOG.close()


def on_event(name: str, data: dict[str, Any] | None) -> None:
    """The machine's events that are trace events too."""
    if name == "VHOST_USER_CONNECTED" and _connected.on:
        _connected((data or {}).get("device"), (data or {}).get("chardev"))
    elif name == "VHOST_USER_DISCONNECTED" and _disconnected.on:
        d = data or {}
        _disconnected(d.get("device"), d.get("chardev"), d.get("reason"))


def wire_log_factory(cfg: MachineConfig) -> Callable[[], Any] | None:
    """One wire log per vhost-user connection, or None if nothing wants one:
    the JSON wire log (``vhost_user_wire``) and the trace events
    ``vhost_user_read``/``vhost_user_write``/``vhost_user_message``."""
    events = [trace.event(n) for n in ("vhost_user_read", "vhost_user_write", "vhost_user_message")]
    json_wanted = "vhost_user_wire" in cfg.trace.events
    if not json_wanted and not any(e.on for e in events):
        return None
    from emu.vhost_user.wirelog import WireLog, payload_fields
    read_ev, write_ev, msg_ev = events
    target = (cfg.trace.file or cfg.log_file or sys.stderr) if json_wanted else (lambda rec: None)
    label = cfg.name or ""

    class TracingWireLog(WireLog):
        """The wire log, and the trace events of every message it sees."""

        def record(self, direction: str, msg: Any, *, channel: str = "main") -> dict:
            ev = read_ev if direction == "rx" else write_ev
            if ev.on:
                ev(int(msg.request), int(msg.flags))
            if msg_ev.on:
                payload = payload_fields(msg)
                msg_ev(label or "-", direction, msg.request.name, int(msg.flags), len(msg.fds),
                       "" if payload is None else payload)
            return super().record(direction, msg, channel=channel) if json_wanted else {}

        def error(self, direction: str, error: BaseException, *, channel: str = "main") -> None:
            if msg_ev.on:
                msg_ev(label or "-", direction, "ERROR", 0, 0, f"{type(error).__name__}: {error}")
            if json_wanted:
                super().error(direction, error, channel=channel)

    if json_wanted and isinstance(target, str):
        # the log is open already when the log and the wire log share a file
        target = _shared_sink(target, cfg)

    def factory() -> WireLog:
        return TracingWireLog(target, label=label)
    return factory


def _shared_sink(path: str, cfg: MachineConfig):
    """The wire log's JSON lines go through emu's log when it is the same
    file (``-trace vhost_user_wire,file=F`` is the log's file too)."""
    if path == (cfg.trace.file or cfg.log_file):
        import json

        def sink(rec: dict) -> None:
            trace.LOG.write(json.dumps(rec, separators=(",", ":")))
        return sink
    return path
