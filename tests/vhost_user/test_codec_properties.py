"""Properties of the codec: decode(encode(m)) == m for every valid message;
arbitrary bytes and fds never raise anything but MalformedMessage and never
leak an fd."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings, strategies as st

from emu.vhost_user.codec import Decoder, Message, encode
from emu.vhost_user.errors import MalformedMessage
from emu.vhost_user.messages import (BackendRequest, Config, DeviceStateTransfer, Flags,
                                     FrontendRequest, Inflight, Iotlb, Log, MemoryRegion,
                                     MemoryTable, Rarp, Raw, SingleMemRegion, U64, Uuid,
                                     VringAddr, VringArea, VringFd, VringState, reply_rules,
                                     spec_of)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
region = st.builds(MemoryRegion, u64, u64, u64, u64)

PAYLOADS = {
    U64: st.builds(U64, u64),
    VringState: st.builds(VringState, u32, u32),
    VringAddr: st.builds(VringAddr, u32, st.sampled_from([0, 1]), u64, u64, u64, u64),
    VringFd: st.builds(VringFd, st.integers(0, 255), st.booleans()),
    MemoryTable: st.builds(MemoryTable, st.lists(region, min_size=1, max_size=8).map(tuple)),
    SingleMemRegion: st.builds(SingleMemRegion, region),
    Log: st.builds(Log, u64, u64),
    Config: st.integers(0, 256).flatmap(lambda n: st.builds(
        Config, u32, st.just(n), st.sampled_from([0, 1]), st.binary(min_size=n, max_size=n))),
    Inflight: st.builds(Inflight, u64, u64, u16, u16),
    VringArea: st.builds(VringArea, st.integers(0, 255), u64, u64, st.booleans()),
    Iotlb: st.builds(Iotlb, u64, u64, u64, st.integers(0, 3), st.integers(1, 6)),
    Rarp: st.builds(Rarp, st.binary(min_size=6, max_size=6)),
    Uuid: st.builds(Uuid, st.binary(min_size=16, max_size=16)),
    DeviceStateTransfer: st.builds(DeviceStateTransfer, st.integers(0, 1), st.just(0)),
    Raw: st.builds(Raw, st.binary(max_size=300)),
}
FAKE_FD = 1 << 20     # above any real fd number: decoding must never touch fds it hands out


@st.composite
def messages(draw):
    req = draw(st.sampled_from(list(FrontendRequest) + list(BackendRequest)))
    is_reply = draw(st.booleans())
    if is_reply:
        cls, fd_rule = reply_rules(req)
        flags = Flags.VERSION | Flags.REPLY
    else:
        spec = spec_of(req)
        cls, fd_rule = spec.payload, spec.fds
        flags = Flags.VERSION | (Flags.NEED_REPLY if draw(st.booleans()) else 0)
    payload = draw(PAYLOADS[cls]) if cls is not None else None
    nfds = draw(st.sampled_from(list(fd_rule.allowed(payload))))
    return Message(req, flags, payload, tuple(FAKE_FD + i for i in range(nfds)))


@settings(max_examples=400, deadline=None)
@given(messages(), st.data())
def test_decode_encode_round_trip(msg, data):
    raw, fds = encode(msg)
    dec = Decoder(type(msg.request))
    # deliver in random pieces; the fds ride on the first piece (the header's sendmsg)
    cuts = sorted(data.draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=4)))
    pieces = [raw[a:b] for a, b in zip([0] + cuts, cuts + [len(raw)]) if a < b]
    got = []
    for i, piece in enumerate(pieces):
        dec.feed(piece, fds if i == 0 else ())
        while (m := dec.next_message()) is not None:
            got.append(m)
    assert got == [msg]
    assert not dec.has_partial


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=64), st.integers(0, 3)), max_size=8),
       st.sampled_from([FrontendRequest, BackendRequest]))
def test_arbitrary_input_only_malformed_and_no_fd_leak(chunks, requests):
    before = _open_fds()
    dec = Decoder(requests)
    handed_out = []
    try:
        for blob, nfds in chunks:
            fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(nfds)] if blob else []
            dec.feed(blob, fds)
            while (m := dec.next_message()) is not None:
                handed_out.extend(m.fds)
    except MalformedMessage:
        pass
    finally:
        dec.close()
        for fd in handed_out:
            os.close(fd)
    assert _open_fds() == before


@settings(max_examples=200, deadline=None)
@given(messages(), st.binary(min_size=1, max_size=12))
def test_garbage_after_a_valid_message_keeps_the_message(msg, garbage):
    raw, fds = encode(msg)
    dec = Decoder(type(msg.request))
    dec.feed(raw + garbage, fds)
    assert dec.next_message() == msg
    try:
        extra = dec.next_message()
    except MalformedMessage:
        return
    assert extra is None or extra.request in type(msg.request)
