"""Stateful fuzzing of the QMP monitor of a real emu process (VM2 with a
vhost-pci-net device and a guest): every command in any order with odd
arguments and odd ids, HMP command lines, raw bytes, and the parser's reset
byte.  Every line the monitor writes must be strict JSON (no NaN,
Infinity, ``inf``), every command gets exactly one answer carrying its id,
and the process stays up.  ``quit`` and ``system_powerdown`` end a VM by
design and are left out (their own tests are tests/cli's).

CI: a bounded run; ``EMU_FUZZ_LONG=1``: the long run.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from emu.qmp.commands import COMMANDS

from tests.hostile.procs import Emu, vm2_args

from .vu_machine import Tally

LONG = os.environ.get("EMU_FUZZ_LONG") == "1"
ENDS_THE_VM = {"quit", "system_powerdown"}
NAMES = sorted(set(COMMANDS) - ENDS_THE_VM)
TIMEOUT = 15.0

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                      st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=20), st.sampled_from(["", "vp0", "echo", "sink", "x" * 300]))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
#: an id as it is written on the wire: any JSON value, or tokens on the edge of JSON
ids = st.one_of(json_value.map(json.dumps),
                st.sampled_from(["1e999", "-1e999", "1e308", "NaN", "Infinity", "-0", "1E400",
                                 "123456789012345678901234567890", "0.1e-400"]))


def strict(line: bytes):
    def refuse(word):
        raise AssertionError(f"the monitor wrote {word}: not JSON: {line[:200]!r}")
    return json.loads(line, parse_constant=refuse)


def strict_finite(token: str):
    """The value of an id token as strict JSON reads it (ValueError if none)."""
    import math

    def finite(text):
        v = float(text)
        if not math.isfinite(v):
            raise ValueError(text)
        return v
    return json.loads(token, parse_constant=lambda w: (_ for _ in ()).throw(ValueError(w)),
                      parse_float=finite)


class Monitor:
    """A raw QMP connection that checks every line it reads."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.buf = b""
        self.seq = 0
        assert "QMP" in self.read()
        self.send_obj({"execute": "qmp_capabilities"})
        assert self.read() == {"return": {}}

    def send(self, data: bytes):
        self.sock.sendall(data)

    def send_obj(self, obj):
        self.send(json.dumps(obj).encode() + b"\n")

    def read(self) -> dict:
        """The next non-event message."""
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                assert chunk, "the monitor closed the connection"
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            if not line.strip():
                continue
            msg = strict(line)
            assert isinstance(msg, dict), msg
            if "event" not in msg:
                return msg

    def sync(self) -> list[dict]:
        """Reset the parser (0xFF, as QEMU documents) and read everything up
        to the answer of a marked command; -> the answers before it."""
        self.seq += 1
        mark = f"sync-{self.seq}"
        self.send(b"\xff" + json.dumps({"execute": "query-status", "id": mark}).encode() + b"\n")
        before = []
        while True:
            msg = self.read()
            if msg.get("id") == mark:
                assert "return" in msg, msg
                return before
            before.append(msg)

    def close(self):
        self.sock.close()


class QmpMachine(RuleBasedStateMachine):
    vm: Emu = None
    path: str = ""
    tally = Tally()

    def __init__(self):
        super().__init__()
        self.tally.examples += 1
        self.tally.connections += 1
        self.mon = Monitor(self.path)

    def teardown(self):
        self.mon.close()

    @invariant()
    def alive(self):
        self.tally.steps += 1
        assert self.vm.alive(), self.vm.log()[-3000:]

    @rule(name=st.sampled_from(NAMES), args=st.one_of(st.none(), st.dictionaries(
              st.sampled_from(["device", "app", "params", "command-line", "cpu-index", "enable",
                               "x", ""]), json_value, max_size=3)), rid=st.one_of(st.none(), ids))
    def execute(self, name, args, rid):
        body = {"execute": name}
        if args is not None:
            body["arguments"] = args
        text = json.dumps(body)
        if rid is not None:
            text = text[:-1] + f', "id": {rid}}}'
        self.mon.send(text.encode() + b"\n")
        answer = self.mon.read()
        assert ("return" in answer) != ("error" in answer), answer
        if rid is not None:
            try:
                want = strict_finite(rid)
            except ValueError:              # not JSON: a parse error, which has no id
                assert "error" in answer and "id" not in answer, answer
            else:
                assert "id" in answer and answer["id"] == want, (rid, answer)
        if name in ("stop", "system_reset") and "return" in answer:
            self.mon.send_obj({"execute": "cont"})
            self.mon.read()

    @rule(line=st.one_of(st.sampled_from(["info status", "info pci", "info version", "info name",
                                          "info chardev", "info network", "stop", "cont", "c",
                                          "s", "system_reset", "info", "help", "info nonsense",
                                          "", " ", "x" * 1000]),
                         st.text(max_size=40).filter(lambda t: t.split()[:1] not in
                                                     (["quit"], ["q"], ["system_powerdown"]))))
    def hmp(self, line):
        self.mon.send_obj({"execute": "human-monitor-command", "arguments": {"command-line": line}})
        answer = self.mon.read()
        assert "return" in answer or "error" in answer, answer
        self.mon.send_obj({"execute": "cont"})
        self.mon.read()

    @rule(data=st.one_of(st.binary(max_size=200), st.sampled_from([
        b"{", b"}", b"[[[[", b'"unterminated', b"\\", b"1e999", b"NaN", b'{"execute": 1}',
        b'{"execute": "query-status", "id": 1, "id": 2}', b"[]", b"null", b"\xfe", b"{" * 600])))
    def raw(self, data):
        self.mon.send(data)
        for msg in self.mon.sync():
            assert "error" in msg or "return" in msg, msg

    @rule(app=st.sampled_from(["echo", "sink", "forward", "responder", "nope", ""]),
          params=st.dictionaries(st.sampled_from(["mode", "burst", "size", "rate", "count",
                                                  "queues", "x"]), json_leaf, max_size=3))
    def set_guest_app(self, app, params):
        self.mon.send_obj({"execute": "emu-set-guest-app",
                           "arguments": {"app": app, "params": params}})
        answer = self.mon.read()
        assert "return" in answer or "error" in answer, answer

    @rule()
    def new_session(self):
        self.mon.close()
        self.mon = Monitor(self.path)
        self.tally.connections += 1


def test_qmp_stateful():
    d = tempfile.mkdtemp(prefix="emu-fzq-", dir="/tmp")
    vm = Emu("vm2", vm2_args([os.path.join(d, "vp.sock")]), d)

    class Machine(QmpMachine):
        tally = Tally()
    Machine.vm, Machine.path = vm, vm.qmp_path
    started = time.monotonic()
    try:
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=400 if LONG else 40, stateful_step_count=60 if LONG else 25,
            deadline=None, suppress_health_check=list(HealthCheck)))
        assert vm.execute("query-status")["status"] == "running"
    finally:
        print(f"QMP: {Machine.tally} in {time.monotonic() - started:.0f} s")
        try:
            assert vm.quit() == 0, vm.log()[-3000:]
        finally:
            shutil.rmtree(d, ignore_errors=True)
