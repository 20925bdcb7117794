"""Wire log: one JSON object per message, to a path, a file or a callable."""
from __future__ import annotations

import io
import json

from emu.vhost_user.codec import Message, request
from emu.vhost_user.errors import MalformedMessage
from emu.vhost_user.messages import (Flags, FrontendRequest as F, MemoryRegion, MemoryTable,
                                     U64, VringFd)
from emu.vhost_user.wirelog import WireLog

TABLE = MemoryTable((MemoryRegion(0, 0x10000000, 0x7F0000000000, 0),))


def test_path_sink_writes_json_lines(tmp_path, no_fd_leak):
    path = tmp_path / "wire.jsonl"
    log = WireLog(str(path), label="vm1")
    log.record("rx", request(F.SET_MEM_TABLE, TABLE, (5,), need_reply=True))
    log.record("tx", Message(F.SET_MEM_TABLE, Flags.VERSION | Flags.REPLY, U64(0)))
    log.error("rx", MalformedMessage("bad version"))
    log.close()
    log.record("rx", request(F.GET_FEATURES))                  # after close: dropped
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3
    assert lines[0] == {"t": lines[0]["t"], "dir": "rx", "request": "SET_MEM_TABLE", "flags": 9,
                        "size": 40, "nfds": 1, "conn": "vm1",
                        "payload": {"regions": [{"gpa": 0, "size": "0x10000000",
                                                 "uaddr": "0x7f0000000000", "mmap_offset": 0}]}}
    assert lines[1]["flags"] == 5 and lines[1]["payload"] == {"value": 0}
    assert lines[2]["error"] == "MalformedMessage: bad version"
    assert lines[0]["t"] <= lines[1]["t"] <= lines[2]["t"]


def test_file_and_callable_sinks():
    buf = io.StringIO()
    WireLog(buf).record("tx", request(F.SET_VRING_CALL, VringFd(3, nofd=True)), channel="main")
    rec = json.loads(buf.getvalue())
    assert rec["payload"] == {"index": 3, "nofd": True} and rec["nfds"] == 0
    got = []
    WireLog(got.append).record("rx", request(F.GET_FEATURES), channel="backend-req")
    assert got[0]["channel"] == "backend-req" and got[0]["payload"] is None
