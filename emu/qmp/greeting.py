"""The greeting and the wire encoding: what the monitor sends before it
knows anything else.  Stdlib only and cheap, so that the process greets
before the heavy imports (:mod:`emu.launcher.early`)."""
from __future__ import annotations

import json

from emu import __version__

#: the QEMU release whose QMP (and command line) emu mirrors
QEMU_VERSION = (7, 2, 0)
PACKAGE = f"emu {__version__}"


def version_info() -> dict:
    """``query-version``'s value."""
    major, minor, micro = QEMU_VERSION
    return {"qemu": {"micro": micro, "minor": minor, "major": major}, "package": PACKAGE}


def greeting() -> dict:
    # out-of-band execution is not offered: the capability list is empty
    return {"QMP": {"version": version_info(), "capabilities": []}}


def encode(msg: dict, pretty: bool = False) -> bytes:
    """One QMP message on the wire (QEMU ends each with CRLF): strict JSON,
    as :func:`emu.qmp.stream.decode` reads it -- a NaN or infinity anywhere
    raises ValueError instead of writing ``NaN``/``Infinity``."""
    # (RFC 8259, 6: "Numeric values that cannot be represented [...] as
    # sequences of digits (such as Infinity and NaN) are not permitted")
    return (json.dumps(msg, indent=4 if pretty else None, allow_nan=False) + "\r\n").encode()
