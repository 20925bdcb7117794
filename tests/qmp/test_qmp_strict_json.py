"""QMP is strict JSON both ways (class 6).

QEMU 7.2 (measured) parses an ``id`` of 1e999 as a double, infinity, and
echoes it back as ``"id": inf`` -- not JSON, and a strict client (Python's
``json`` with ``parse_constant`` refusing, any RFC 8259 parser) chokes on
the whole stream.  emu refuses a number that overflows to infinity as a
JSON parse error (no id: the id is what is wrong, as for any parse error)
and never writes NaN or Infinity: an answer that holds one becomes an
internal-error answer, which is JSON.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from emu.qmp.greeting import encode
from emu.qmp.stream import JsonError, JsonStreamer, decode


def strict(line: bytes):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize("text", [b"1e999", b"-1e999", b'{"id": 1e999}', b"[1, 2e400]",
                                  b'{"execute": "x", "arguments": {"a": -9e99999}}'])
def test_numbers_that_overflow_are_parse_errors(text):
    with pytest.raises(JsonError, match="out of range"):
        decode(text)


@pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_words_are_parse_errors(text):
    with pytest.raises(JsonError):
        decode(text)


def test_large_but_finite_numbers_are_kept():
    assert decode(b"1e308") == 1e308
    assert decode(b"123456789012345678901234567890") == 123456789012345678901234567890
    assert decode(b"1e-999") == 0.0                      # underflow is finite


def test_encode_refuses_nan_and_infinity():
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            encode({"return": {"x": bad}})
    assert encode({"id": 1e308}) == b'{"id": 1e+308}\r\n'


def test_the_streamer_reports_the_bad_value_and_goes_on():
    out = JsonStreamer().feed(b'{"id": 1e999} {"id": 2}')
    assert isinstance(out[0], JsonError) and out[1] == {"id": 2}


def test_emu_answers_odd_ids_with_strict_json():
    """The adversarial run's case end to end: every line emu writes parses
    strictly, and the monitor goes on answering."""
    lines = [{"execute": "qmp_capabilities", "id": 1}]
    odd_ids = ["1e999", "-1e999", "1e308", "-0", "123456789012345678901234567890", "1.5e-300",
               '"text"', "[1, {}]", '{"nested": [1e308]}', "null", "true"]
    feed = "".join(f'{{"execute": "query-status", "id": {i}}}\n' for i in odd_ids)
    feed = json.dumps(lines[0]) + "\n" + feed + '{"execute": "quit"}\n'
    p = subprocess.run([sys.executable, "-m", "emu", "-m", "64M", "-display", "none",
                        "-qmp", "stdio"], input=feed.encode(), capture_output=True, timeout=60)
    out = [strict(line) for line in p.stdout.splitlines() if line.strip()]
    answers = [m for m in out if "QMP" not in m and "event" not in m]
    assert len(answers) == 1 + len(odd_ids) + 1, out
    assert answers[1]["error"]["desc"] == "JSON parse error, number 1e999 out of range"
    assert "id" not in answers[1] and "id" not in answers[2]
    assert answers[3] == {"id": 1e308, "return": answers[3]["return"]}
    assert answers[5]["id"] == 123456789012345678901234567890
    assert answers[-1] == {"return": {}}                   # quit: still serving at the end
    assert b"inf" not in p.stdout.lower().replace(b"info", b"")
