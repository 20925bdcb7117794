"""The same QMP conversation with QEMU 7.2 and with emu: the same answers.

Timestamps, the version numbers and the greeting's capability list (QEMU
offers oob, emu does not) are normalised away; everything else, including
the order of events and answers, must match.
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from .emu_process import EMU_CMD, QEMU_CMD, start, stop, wait_for_path

pytestmark = pytest.mark.peers

ARGS = ["-S", "-display", "none", "-nodefaults", "-machine", "none", "-name", "cmp"]

CONVERSATION: list[bytes] = [
    b'{"execute": "query-status", "id": 1}',
    b'{"execute": "qmp_capabilities", "id": "neg"}',
    b'{"execute": "qmp_capabilities"}',
    b'{"execute": "no-such-command", "id": [1, {"a": null}]}',
    b'{"execute": "query-status", "arguments": {"x": 1}}',
    b'{"execute": "human-monitor-command"}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": 5}}',
    b'{"execute": 1}',
    b'{"foo": 1, "id": 2}',
    b'{"id": 3}',
    b'{"execute": "query-status", "arguments": []}',
    b'{"execute": "query-status", "id": 1, "id": 2}',
    b"garbage",
    b"[1, 2]",
    b'{"execute": "query-status", "id": {"nested": [true, 1.5]}}',
    b'{"execute": "query-name"}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "info status"}}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "info bogus"}}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "bogus"}}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "info status extra"}}',
    b'{"execute": "stop"}',
    b'{"execute": "cont"}',
    b'{"execute": "query-status"}',
    b'{"execute": "cont"}',
    b'{"execute": "stop", "id": "s"}',
    b'{"execute": "query-status"}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "info status"}}',
    b'{"execute": "system_reset"}',
    b'{"execute": "query-status"}',
    b'{"execute": "quit", "id": "q"}',
]


def normalise(msg: dict) -> dict:
    if "timestamp" in msg:
        assert set(msg["timestamp"]) == {"seconds", "microseconds"}
        assert abs(msg["timestamp"]["seconds"] - time.time()) < 60
        msg = {**msg, "timestamp": "T"}
    if "QMP" in msg:
        version = msg["QMP"]["version"]
        assert set(version) == {"qemu", "package"} and set(version["qemu"]) == {"micro", "minor", "major"}
        assert isinstance(msg["QMP"]["capabilities"], list)
        msg = {"QMP": {"version": "V", "capabilities": "C"}}
    return msg


def transcript(cmd: list[str], tmp_path) -> list[dict]:
    path = str(tmp_path / f"{cmd[-1].replace('/', '_')}.sock")
    proc = start(cmd, ARGS + ["-qmp", f"unix:{path},server=on,wait=off"])
    try:
        wait_for_path(path, proc)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.settimeout(30)
        stream = sock.makefile("rb")
        out = [normalise(json.loads(stream.readline()))]
        for request in CONVERSATION:
            sock.sendall(request + b"\n")
            while True:     # events first, then the answer, as they come
                msg = normalise(json.loads(stream.readline()))
                out.append(msg)
                if "event" not in msg:
                    break
        if out[-1].get("id") == "q":
            # after quit's answer: nothing but the SHUTDOWN event, if it came later
            try:
                out += [normalise(json.loads(line)) for line in stream]
            except ConnectionResetError:    # QEMU may exit with our input unread
                pass
        stream.close()
        sock.close()
    finally:
        code = stop(proc)
    assert code == 0
    return out


def test_same_conversation_as_qemu(tmp_path):
    qemu = transcript(QEMU_CMD, tmp_path)
    emu = transcript(EMU_CMD, tmp_path)
    for i, (q, e) in enumerate(zip(qemu, emu)):
        assert e == q, f"message {i} differs"
    assert len(emu) == len(qemu)
    # and the conversation really covered what matters
    events = [m["event"] for m in qemu if "event" in m]
    assert events == ["RESUME", "STOP", "RESET", "SHUTDOWN"]
    assert {"guest": False, "reason": "host-qmp-quit"} in [m.get("data") for m in qemu]
