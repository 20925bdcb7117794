"""Bad values for every ``-guest`` parameter of every driver and app, each
with the error it must get (QEMU's wording for QemuOpts values).

Shared by tests/cli/test_guest_params.py (the command line) and
tests/qmp/test_guest_params.py (``emu-set-guest-app`` on running VMs).
The texts are written out here, not taken from emu.guest.registry, so
that they are a specification the registry is held to.
"""
from __future__ import annotations

U64 = 18446744073709551615


def rng(key: str, lo: int, hi: int) -> str:
    return f"Parameter '{key}' expects a value in the range [{lo}, {hi}]"


def number(key: str) -> str:     # app counts take 200k, 1.5m...
    return (f"Parameter '{key}' expects a non-negative integer "
            "(suffix k, m or g: times 10^3, 10^6 or 10^9)")


def integer(key: str) -> str:
    return f"Parameter '{key}' expects integer"


def onoff(key: str) -> str:
    return f"Parameter '{key}' expects 'on' or 'off'"


def mac(key: str) -> str:
    return f"Parameter '{key}' expects a MAC address (six hex bytes, e.g. 52:54:00:12:34:56)"


def unknown(key: str) -> str:
    return f"Invalid parameter '{key}'"


def _burst(lo_bad: str = "0") -> list[tuple[str, str, str]]:
    return [("burst", "abc", number("burst")), ("burst", "-1", number("burst")),
            ("burst", lo_bad, rng("burst", 1, 32768)), ("burst", "40000", rng("burst", 1, 32768))]


def _driver(*extra: tuple[str, str, str]) -> list[tuple[str, str, str]]:
    return [("mode", "fast", "Parameter 'mode' does not accept value 'fast'"),
            ("queue_size", "abc", integer("queue_size")),
            ("queue_size", "0", rng("queue_size", 1, 32768)),
            ("queue_size", "65536", rng("queue_size", 1, 32768)),
            ("queue_size", "300", "Parameter 'queue_size' expects a power of 2 between 1 and 32768"),
            ("buf_size", "2k", integer("buf_size")),
            ("buf_size", "32", rng("buf_size", 64, 131072)),
            *extra,
            ("layout", "x", integer("layout")),
            ("layout", "3", rng("layout", 0, 2)),
            ("msix", "maybe", onoff("msix")),
            ("mrg_rxbuf", "2", onoff("mrg_rxbuf")),
            ("event_idx", "1", onoff("event_idx")),
            ("indirect_desc", "", onoff("indirect_desc")),
            ("packed", "maybe", onoff("packed"))]


#: driver -> (key, bad value, message); these keys are the driver's (any app)
DRIVER_CASES: dict[str, list[tuple[str, str, str]]] = {
    "virtio-net": _driver(("tx_buf_size", "-1", rng("tx_buf_size", 64, 131072)),
                          ("tx_buf_size", "9k", integer("tx_buf_size")),
                          ("legacy", "sometimes", onoff("legacy"))),
    "vhost-pci-net": _driver(("tx_buf_size", "4096", unknown("tx_buf_size")),   # virtio-net's only
                             ("legacy", "on", unknown("legacy"))),
}

#: (driver, app) -> (key, bad value, message)
APP_CASES: dict[tuple[str, str], list[tuple[str, str, str]]] = {
    ("virtio-net", "gen"): [
        ("size", "abc", number("size")), ("size", "49", rng("size", 50, 65535)),
        ("size", "70000", rng("size", 50, 65535)),
        ("count", "-1", number("count")), ("count", "1.5", number("count")),
        ("count", "18446744073709551616", rng("count", 0, U64)),
        ("rate", "fast", number("rate")), ("rate", "20000000000g", rng("rate", 0, U64)),
        *_burst(),
        ("verify", "2", onoff("verify")),
        ("dst", "zz", mac("dst")), ("dst", "52:54:00:00:00", mac("dst")),
        ("nope", "1", unknown("nope"))],
    ("virtio-net", "sink"): [
        ("verify", "x", onoff("verify")), *_burst(),
        ("rate", "1", unknown("rate"))],           # gen's key, not sink's
    ("virtio-net", "echo"): [("burst", "32", unknown("burst"))],    # takes none
    ("virtio-net", "responder"): [
        ("ip", "10.0.0.256", "Parameter 'ip' expects an IPv4 address"),
        ("ip", "fe80::1", "Parameter 'ip' expects an IPv4 address"),
        ("mac", "1:2:3:4:5:6", mac("mac")),
        ("verify", "on", unknown("verify"))],
    ("virtio-net", "pingpong"): [
        ("count", "x", number("count")), ("count", "-5", number("count")),
        ("size", "10", rng("size", 50, 65535)), ("size", "1.5", number("size")),
        ("warmup", "-5", number("warmup")), ("warmup", "1e3", number("warmup")),
        ("timeout_ms", "3600001", rng("timeout_ms", 0, 3600000)),
        ("timeout_ms", "soon", number("timeout_ms")),
        ("dst", "ff:ff:ff:ff:ff", mac("dst")),
        ("rate", "1", unknown("rate"))],
    ("vhost-pci-net", "sink"): [
        ("verify", "x", onoff("verify")), ("copy", "2", onoff("copy")), *_burst(),
        ("size", "64", unknown("size"))],
    ("vhost-pci-net", "echo"): [*_burst(), ("verify", "on", unknown("verify"))],
    ("vhost-pci-net", "forward"): [*_burst(), ("copy", "off", unknown("copy"))],
    ("vhost-pci-net", "responder"): [
        ("ip", "1.2.3", "Parameter 'ip' expects an IPv4 address"),
        ("mac", "52:54:00:00:00:0g", mac("mac")),
        ("burst", "8", unknown("burst"))],
}

#: parameters a parse cannot refuse (checked when the app starts)
RUNTIME_CHECKED = {("virtio-net", "pingpong", "engine")}
