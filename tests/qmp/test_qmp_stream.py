"""QMP framing: JSON values out of an arbitrary byte stream."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from emu.qmp.stream import JsonError, JsonStreamer, decode


def feed_all(streamer: JsonStreamer, *chunks: bytes) -> list:
    out = []
    for chunk in chunks:
        out += streamer.feed(chunk)
    return out


def texts(items: list) -> list:
    return [str(x) if isinstance(x, JsonError) else x for x in items]


def test_values_may_span_lines_and_share_them():
    s = JsonStreamer()
    assert feed_all(s, b'{"execute":\n "a"}{"execute": "b"} {"x"', b': [1, {"y": "}]"}]}\n') == [
        {"execute": "a"}, {"execute": "b"}, {"x": [1, {"y": "}]"}]}]
    assert not s.pending


def test_escapes_across_chunk_boundaries():
    s = JsonStreamer()
    assert feed_all(s, b'{"a": "q\\', b'"x\\\\', b'"}') == [{"a": 'q"x\\'}]


def test_garbage_gets_qemu_like_errors_and_the_stream_resyncs():
    s = JsonStreamer()
    out = texts(feed_all(s, b'garbage {"ok": 1} ] [1,2] "str" 12 {"a": NaN} {"a": 1, "a": 2} {"a":}\n{"ok": 2}'))
    assert out == ["JSON parse error, invalid keyword 'garbage'", {"ok": 1},
                   "JSON parse error, expecting value", [1, 2], "str", 12,
                   "JSON parse error, invalid keyword 'NaN'", "JSON parse error, duplicate key",
                   "JSON parse error, expecting value", {"ok": 2}]


def test_invalid_utf8_is_a_parse_error():
    (err,) = JsonStreamer().feed(b'{"a": "\xc3\x28"}')
    assert isinstance(err, JsonError) and str(err).startswith("JSON parse error")


def test_oversized_value_is_reported_once_without_buffering_it():
    s = JsonStreamer(max_size=1000)
    big = b'{"execute": "x", "arguments": {"s": "' + b"A" * 100_000 + b'"}}'
    out = feed_all(s, *[big[i:i + 4096] for i in range(0, len(big), 4096)], b'{"ok": 1}')
    assert texts(out) == ["JSON parse error, input exceeds 1000 bytes", {"ok": 1}]
    assert len(s._buf) == 0


def test_deep_nesting_is_refused_and_resyncs():
    s = JsonStreamer(max_depth=64)
    out = s.feed(b"[" * 5000 + b"]" * 5000 + b'{"ok": 1}')
    assert texts(out) == ["JSON parse error, nesting deeper than 64", {"ok": 1}]


def test_reset_bytes_discard_a_partial_value():
    s = JsonStreamer()
    assert texts(s.feed(b'{"execute": "half\xff{"ok": 1}\xfe')) == [
        "JSON parse error, input discarded at reset byte", {"ok": 1}]


def test_a_reset_byte_is_not_swallowed_by_a_pending_escape():
    s = JsonStreamer()
    assert s.feed(b'{"a": "\\') == []
    assert texts(s.feed(b'\xff{"ok": 1}')) == ["JSON parse error, input discarded at reset byte", {"ok": 1}]
    assert texts(s.feed(b'"x\\\xff{"ok": 2}')) == ["JSON parse error, input discarded at reset byte", {"ok": 2}]


def test_decode_is_strict():
    for bad in (b"Infinity", b'{"a": -Infinity}', b"[1,]", b"{'a': 1}"):
        try:
            decode(bad)
        except JsonError:
            continue
        raise AssertionError(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=6),
       st.lists(st.integers(1, 64), max_size=20), st.sampled_from(["", "\n", " ", "\r\n"]))
def test_any_chunking_of_a_valid_stream_yields_the_same_values(objs, cuts, sep):
    data = sep.join(json.dumps(o, ensure_ascii=False) for o in objs).encode() + b"\n"
    chunks, pos = [], 0
    for c in cuts:
        chunks.append(data[pos:pos + c])
        pos += c
    chunks.append(data[pos:])
    assert feed_all(JsonStreamer(), *chunks) == objs


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_and_a_good_value_after_a_reset_parses(junk):
    s = JsonStreamer(max_size=256, max_depth=16)
    for item in s.feed(junk):
        assert isinstance(item, (JsonError, dict, list, str, int, float, bool, type(None)))
    assert s.feed(b'\xff{"ok": true}')[-1] == {"ok": True}
