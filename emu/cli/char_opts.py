"""Character devices and what uses them: -chardev, -serial (and
``-device isa-serial``, whose handler is here).

A chardev is a byte stream with a backend: a unix socket (listening or
connecting, or an inherited fd), a file, stdio, a pty, or null.  Its
users are a monitor (-mon, -qmp), a vhost-user netdev or device (a socket
only), or a serial port.  The whole-line checks (:mod:`emu.cli.checks`)
see that each chardev has one user.
"""
from __future__ import annotations

from typing import Any

from emu.cli.schemas import CHARDEVS, SERIAL_OPTS, SOCKET_NOT_SUPPORTED
from emu.cli.state import HELP_WORDS, EarlyExit, ParseState, option
from emu.config import ISA_SERIAL_PORTS, Chardev, SerialPort
from emu.keyval import OptionError, split_head, split_opts

#: -serial unix:/tcp:... forms emu refuses, and why
_NETWORK = ("tcp", "telnet", "udp", "websocket")


@option("chardev")
def chardev(p: ParseState, arg: str) -> None:
    if arg in HELP_WORDS:
        raise EarlyExit("Available chardev backend types:\n" + "\n".join(f"  {k}" for k in CHARDEVS))
    backend, pairs = split_head(arg, "backend")
    schema = CHARDEVS.get(backend)
    if schema is None:
        raise OptionError(f"'{backend}' is not a valid char driver name")
    bad = next((k for k, _ in pairs if k in SOCKET_NOT_SUPPORTED), None)
    if bad is not None:
        raise OptionError(f"Parameter '{bad}' is not supported: emu chardevs are unix sockets "
                          "(path=) or inherited sockets (fd=)")
    values = p.opts(pairs, schema, title="chardev")
    if "id" not in values:
        raise OptionError("chardev: no id specified")
    dev = Chardev(values["id"], backend, logfile=values.get("logfile"),
                  logappend=values.get("logappend", False), origin=p.origin)
    if backend == "socket":
        socket_chardev(dev, values)
    elif backend == "file":
        if "path" not in values:
            raise OptionError("chardev: file: no filename given")
        dev.path, dev.append = values["path"], values.get("append", False)
    add_chardev(p, dev)


def socket_chardev(dev: Chardev, values: dict[str, Any]) -> None:
    """The socket half of -chardev socket, -qmp unix: and -serial unix:."""
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


def add_chardev(p: ParseState, dev: Chardev) -> None:
    if p.cfg.chardev(dev.id) is not None:
        raise OptionError(f"Duplicate ID '{dev.id}' for chardev")
    p.cfg.chardevs.append(dev)


def legacy_chardev(p: ParseState, label: str, spec: str) -> Chardev | None:
    """The chardev a legacy ``-serial SPEC`` names (QEMU's qemu_chr_new()
    forms): ``null``, ``stdio``, ``pty``, ``file:PATH``,
    ``unix:PATH[,server=on][,wait=off]``; None for ``chardev:ID``."""
    head, _, rest = spec.partition(":")
    if head in ("null", "stdio", "pty", "vc") and not rest:
        if head == "vc":
            p.info("emu has no graphical console: the serial port's output is dropped")
        return Chardev(label, "null" if head == "vc" else head, origin=p.origin)
    if head == "file" and rest:
        return Chardev(label, "file", path=rest, origin=p.origin)
    if head == "unix" and rest:
        items = split_opts(rest)
        dev = Chardev(label, "socket", origin=p.origin)
        values = p.opts(",".join(i.replace(",", ",,") for i in items[1:]), SERIAL_OPTS)
        socket_chardev(dev, {"path": items[0], **values})
        return dev
    if head in _NETWORK:
        raise OptionError(f"'{head}' chardevs are not supported by emu: use unix:PATH, "
                          "file:PATH, stdio or pty")
    raise OptionError(f"'{spec}' is not a valid char driver")


@option("serial")
def serial(p: ParseState, arg: str) -> None:
    """QEMU's -serial: COM1, COM2... in the order given; ``none`` leaves a
    port out, ``chardev:ID`` uses a -chardev."""
    index = p.serial_index
    p.serial_index += 1
    if arg == "none":
        return
    if index >= len(ISA_SERIAL_PORTS):
        raise OptionError(f"too many serial ports (emu has COM1..COM{len(ISA_SERIAL_PORTS)})")
    if arg.startswith("chardev:"):
        cid = arg[len("chardev:"):]
    else:
        dev = legacy_chardev(p, f"serial{index}", arg)
        add_chardev(p, dev)
        cid = dev.id
    p.cfg.serials.append(SerialPort(index, cid, origin=p.origin))


def isa_serial(p: ParseState, values: dict[str, Any]) -> None:
    """``-device isa-serial,chardev=ID[,index=N][,id=ID]`` (libvirt's form)."""
    if "chardev" not in values:
        raise OptionError("Property 'isa-serial.chardev' is required")
    used = {s.index for s in p.cfg.serials}
    index = values.get("index")
    if index is None:
        index = next((i for i in range(len(ISA_SERIAL_PORTS)) if i not in used), None)
        if index is None:
            raise OptionError("Max. supported number of ISA serial ports is 4.")
    elif index in used:
        raise OptionError(f"ISA serial port {index} (COM{index + 1}) is already in use")
    p.cfg.serials.append(SerialPort(index, values["chardev"], values.get("id"), origin=p.origin))
