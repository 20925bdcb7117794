"""A stand-in ``*-system-x86_64`` for running QEMU's own libqtest against
emu's qtest adapter before emu's launcher has a qtest machine.

It does what libqtest needs of the binary's *process*, nothing more: parse
the options libqtest passes, connect to its two listening sockets, serve
the qtest stream with :class:`emu.qtest.QtestConnection` over the fake
machine of these tests (with ``-qtest-log``), answer the probe's QMP
(greeting, qmp_capabilities, query-machines, qom-list-types) with strict
QAPI shapes, and exit 0 on SIGTERM.  The QMP part is a test double: emu's
real monitor is emu.qmp, wired up by the launcher later.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from emu.qmp.stream import JsonStreamer  # noqa: E402
from emu.qtest import QtestConnection, QtestLog, QtestSession  # noqa: E402
from tests.qtest.fake_target import FakeTarget  # noqa: E402

MACHINES = [
    {"name": "pc-i440fx-7.2", "alias": "pc", "is-default": True, "cpu-max": 255,
     "hotpluggable-cpus": True, "numa-mem-supported": False, "deprecated": False,
     "default-cpu-type": "qemu64-x86_64-cpu", "default-ram-id": "pc.ram"},
    {"name": "none", "cpu-max": 1, "hotpluggable-cpus": False, "numa-mem-supported": False,
     "deprecated": False, "default-ram-id": "ram"},
]
TYPES = [{"name": "virtio-net-pci", "parent": "virtio-net-pci-base"},
         {"name": "virtio-net-pci-base", "parent": "virtio-pci", "abstract": True}]


def parse(argv: list[str]) -> dict[str, str]:
    opts, i = {}, 0
    while i < len(argv):
        key = argv[i]
        if key in ("-qtest", "-qtest-log", "-chardev", "-mon", "-display", "-machine", "-M",
                   "-accel"):
            opts[key] = argv[i + 1]
            i += 2
        else:
            raise SystemExit(f"libqtest_peer: unexpected argument {key!r}")
    return opts


async def serve_qmp(path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(path)
    greeting = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                    "package": "emu-test"}, "capabilities": []}}
    writer.write(json.dumps(greeting).encode() + b"\r\n")
    stream = JsonStreamer()
    while data := await reader.read(65536):
        for msg in stream.feed(data):
            cmd = msg.get("execute") if isinstance(msg, dict) else None
            if cmd == "query-machines":
                ret = MACHINES
            elif cmd == "qom-list-types":
                ret = TYPES
            elif cmd == "qmp_capabilities":
                ret = {}
            else:
                writer.write(json.dumps({"error": {"class": "CommandNotFound",
                                                   "desc": f"no {cmd}"}}).encode() + b"\r\n")
                continue
            writer.write(json.dumps({"return": ret}).encode() + b"\r\n")
        await writer.drain()


async def main() -> int:
    opts = parse(sys.argv[1:])
    assert opts["-qtest"].startswith("unix:"), opts["-qtest"]
    qmp_path = dict(kv.split("=", 1) for kv in opts["-chardev"].split(",")[1:])["path"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    session = QtestSession(FakeTarget(), log=QtestLog.open(opts.get("-qtest-log")))
    conn = await QtestConnection.connect_unix(opts["-qtest"][len("unix:"):], session)
    tasks = [asyncio.ensure_future(conn.run()), asyncio.ensure_future(serve_qmp(qmp_path))]
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if session.log:
        session.log.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
