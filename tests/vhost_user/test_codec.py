"""Codec: round trips of every payload, and every way a message can be malformed."""
from __future__ import annotations

import os
import struct

import pytest

from emu.vhost_user.codec import HEADER, Decoder, Message, encode, request
from emu.vhost_user.errors import MalformedMessage, UsageError
from emu.vhost_user.messages import (BACKEND_SPECS, FRONTEND_SPECS, BackendRequest as B,
                                     Config, DeviceStateTransfer, Flags, FrontendRequest as F,
                                     Inflight, Iotlb, Log, MemoryRegion, MemoryTable, Rarp, Raw,
                                     SingleMemRegion, U64, Uuid, VringAddr, VringArea, VringFd,
                                     VringState)



def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

REGION = MemoryRegion(0x0, 0x100000, 0x7F0000000000, 0)

SAMPLES = [
    request(F.GET_FEATURES),
    request(F.SET_FEATURES, U64(0x140008000)),
    request(F.SET_OWNER),
    request(F.SET_MEM_TABLE, MemoryTable((REGION, MemoryRegion(0x100000, 0x1000, 0x7F1000000000, 0x2000))), (0, 1)),
    request(F.SET_LOG_BASE, Log(0x1000, 0), (0,)),
    request(F.SET_LOG_FD, None, (0,)),
    request(F.SET_VRING_NUM, VringState(1, 256)),
    request(F.SET_VRING_ADDR, VringAddr(1, 1, 0x1000, 0x3000, 0x2000, 0x4000)),
    request(F.GET_VRING_BASE, VringState(1, 0)),
    request(F.SET_VRING_KICK, VringFd(3), (0,)),
    request(F.SET_VRING_CALL, VringFd(255, nofd=True)),
    request(F.SET_VRING_ENABLE, VringState(0, 1), need_reply=True),
    request(F.SEND_RARP, Rarp(bytes.fromhex("525400123456"))),
    request(F.NET_SET_MTU, U64(1500)),
    request(F.SET_BACKEND_REQ_FD, None, (0,)),
    request(F.IOTLB_MSG, Iotlb(0x1000, 0x2000, 0x3000, 3, 2)),
    request(F.GET_CONFIG, Config(0, 12, 0, bytes(12))),
    request(F.SET_CONFIG, Config(4, 2, 1, b"\x01\x02")),
    request(F.CREATE_CRYPTO_SESSION, Raw(b"\x00" * 40)),
    request(F.GET_INFLIGHT_FD, Inflight(0, 0, 2, 256)),
    request(F.SET_INFLIGHT_FD, Inflight(0x2080, 0, 2, 256), (0,)),
    request(F.ADD_MEM_REG, SingleMemRegion(REGION), (0,)),
    request(F.REM_MEM_REG, SingleMemRegion(REGION)),
    request(F.REM_MEM_REG, SingleMemRegion(REGION), (0,)),
    request(F.GET_SHARED_OBJECT, Uuid(bytes(range(16)))),
    request(F.SET_DEVICE_STATE_FD, DeviceStateTransfer(1, 0), (0,)),
    Message(F.GET_FEATURES, Flags.VERSION | Flags.REPLY, U64(1 << 32)),
    Message(F.GET_VRING_BASE, Flags.VERSION | Flags.REPLY, VringState(1, 3392)),
    Message(F.SET_MEM_TABLE, Flags.VERSION | Flags.REPLY, U64(0)),
    Message(F.GET_INFLIGHT_FD, Flags.VERSION | Flags.REPLY, Inflight(0x2080, 0, 2, 256), (0,)),
]

CHANNEL_SAMPLES = [
    request(B.CONFIG_CHANGE_MSG, need_reply=True),
    request(B.VRING_CALL, VringState(1, 0)),
    request(B.VRING_HOST_NOTIFIER_MSG, VringArea(2, 0x1000, 0, nofd=True)),
    request(B.VRING_HOST_NOTIFIER_MSG, VringArea(2, 0x1000, 0x3000), (0,)),
    request(B.IOTLB_MSG, Iotlb(1, 2, 3, 1, 1)),
    Message(B.CONFIG_CHANGE_MSG, Flags.VERSION | Flags.REPLY, U64(0)),
]


def _with_real_fds(msg: Message) -> tuple[Message, list[int]]:
    fds = [eventfd() for _ in msg.fds]
    return Message(msg.request, msg.flags, msg.payload, tuple(fds)), fds


def _decode_all(data: bytes, fds=(), requests=F, **kw) -> list[Message]:
    dec = Decoder(requests, **kw)
    dec.feed(data, fds)
    out = []
    while (m := dec.next_message()) is not None:
        out.append(m)
    return out


@pytest.mark.parametrize("msg", SAMPLES + CHANNEL_SAMPLES, ids=lambda m: f"{m.request.name}")
def test_round_trip(msg, no_fd_leak):
    msg, fds = _with_real_fds(msg)
    data, sent_fds = encode(msg)
    assert sent_fds == msg.fds
    assert struct.unpack_from("<III", data) == (msg.request, msg.flags, len(data) - 12)
    got = _decode_all(data, sent_fds, type(msg.request))
    assert got == [msg]
    for fd in fds:
        os.close(fd)


def test_vring_addr_wire_order_is_desc_used_avail():
    data, _ = encode(request(F.SET_VRING_ADDR, VringAddr(2, 0, 0x1000, 0x3000, 0x2000, 0x4000)))
    assert struct.unpack("<IIQQQQ", data[12:]) == (2, 0, 0x1000, 0x3000, 0x2000, 0x4000)


def test_fd_word_layout():
    assert encode(request(F.SET_VRING_CALL, VringFd(5, nofd=True)))[0][12:] == struct.pack("<Q", 0x105)
    assert VringFd.unpack(struct.pack("<Q", 0x1FF)) == VringFd(255, True)


def test_incremental_byte_by_byte_with_fds_on_header(no_fd_leak):
    msgs = [request(F.SET_MEM_TABLE, MemoryTable((REGION,)), (0,)),
            request(F.SET_VRING_KICK, VringFd(1), (0,)),
            request(F.GET_FEATURES)]
    real = [_with_real_fds(m) for m in msgs]
    dec = Decoder()
    out = []
    for m, fds in real:
        data, mfds = encode(m)
        for i in range(len(data)):
            dec.feed(data[i:i + 1], mfds if i == 0 else ())
            assert dec.wanted() >= 1
            while (got := dec.next_message()) is not None:
                out.append(got)
    assert out == [m for m, _ in real]
    for _, fds in real:
        for fd in fds:
            os.close(fd)


def test_several_messages_in_one_feed():
    data = b"".join(encode(m)[0] for m in (request(F.SET_OWNER), request(F.GET_FEATURES),
                                           request(F.SET_FEATURES, U64(1))))
    assert [m.request for m in _decode_all(data)] == [F.SET_OWNER, F.GET_FEATURES, F.SET_FEATURES]


def test_wanted_asks_for_exactly_the_rest():
    data, _ = encode(request(F.SET_VRING_ADDR, VringAddr(0, 0, 0, 0, 0, 0)))
    dec = Decoder()
    assert dec.wanted() == 12
    dec.feed(data[:5])
    assert dec.wanted() == 7
    dec.feed(data[5:12])
    assert dec.next_message() is None
    assert dec.wanted() == 40
    dec.feed(data[12:30])
    assert dec.wanted() == 22


# -- malformed input --------------------------------------------------------------------
def _hdr(req, flags, size, payload=b""):
    return HEADER.pack(req, flags, size) + payload


MALFORMED = {
    "version 0": _hdr(F.GET_FEATURES, 0, 0),
    "version 2": _hdr(F.GET_FEATURES, 2, 0),
    "unknown flag bit": _hdr(F.GET_FEATURES, 1 | 0x10, 0),
    "reply with need_reply": _hdr(F.GET_FEATURES, 1 | 4 | 8, 8, bytes(8)),
    "unknown id 0": _hdr(0, 1, 0),
    "unknown id 44": _hdr(44, 1, 0),
    "unknown id huge": _hdr(0xFFFFFFFF, 1, 0),
    "size over cap": _hdr(F.SET_FEATURES, 1, 0x10000),
    "u64 too short": _hdr(F.SET_FEATURES, 1, 4, bytes(4)),
    "u64 too long": _hdr(F.SET_FEATURES, 1, 16, bytes(16)),
    "payload on GET_FEATURES": _hdr(F.GET_FEATURES, 1, 8, bytes(8)),
    "vring addr short": _hdr(F.SET_VRING_ADDR, 1, 32, bytes(32)),
    "vring addr bad flags": _hdr(F.SET_VRING_ADDR, 1, 40, struct.pack("<IIQQQQ", 0, 2, 0, 0, 0, 0)),
    "mem table 0 regions": _hdr(F.SET_MEM_TABLE, 1, 8, struct.pack("<II", 0, 0)),
    "mem table 9 regions": _hdr(F.SET_MEM_TABLE, 1, 8 + 32 * 9, struct.pack("<II", 9, 0) + bytes(32 * 9)),
    "mem table count vs size": _hdr(F.SET_MEM_TABLE, 1, 40, struct.pack("<II", 2, 0) + bytes(32)),
    "mem table full-size payload": _hdr(F.SET_MEM_TABLE, 1, 8 + 32 * 8, struct.pack("<II", 1, 0) + bytes(256)),
    "fd word high bits": _hdr(F.SET_VRING_CALL, 1, 8, struct.pack("<Q", 0x100 | 1 << 40)),
    "fd word bit 9": _hdr(F.SET_VRING_KICK, 1, 8, struct.pack("<Q", 0x300)),
    "config size over 256": _hdr(F.GET_CONFIG, 1, 12 + 257, struct.pack("<III", 0, 257, 0) + bytes(257)),
    "config size mismatch": _hdr(F.GET_CONFIG, 1, 20, struct.pack("<III", 0, 4, 0) + bytes(8)),
    "config bad flags": _hdr(F.SET_CONFIG, 1, 13, struct.pack("<III", 0, 1, 2) + b"\0"),
    "inflight short": _hdr(F.GET_INFLIGHT_FD, 1, 20, bytes(20)),
    "iotlb bad type": _hdr(F.IOTLB_MSG, 1, 32, struct.pack("<QQQBB6x", 0, 0, 0, 1, 9)),
    "device state phase": _hdr(F.SET_DEVICE_STATE_FD, 1, 8, struct.pack("<II", 0, 1)),
    "reply of wrong size": _hdr(F.GET_VRING_BASE, 5, 16, bytes(16)),
    "ack of wrong size": _hdr(F.SET_MEM_TABLE, 5, 4, bytes(4)),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed(name, no_fd_leak):
    with pytest.raises(MalformedMessage):
        _decode_all(MALFORMED[name])


def test_header_rejected_before_payload_arrives():
    """A hostile size is refused on the header alone: nothing gets buffered."""
    dec = Decoder()
    dec.feed(_hdr(F.SET_FEATURES, 1, 0xFFFFFFFF))
    with pytest.raises(MalformedMessage, match="cap"):
        dec.next_message()


def test_unknown_backend_request_id():
    with pytest.raises(MalformedMessage, match="BackendRequest id 9"):
        _decode_all(_hdr(9, 1, 0), requests=B)


FD_CASES = [
    ("kick without fd", request(F.SET_VRING_KICK, VringFd(0)), 0),
    ("kick with NOFD and an fd", request(F.SET_VRING_KICK, VringFd(0, nofd=True)), 1),
    ("kick with two fds", request(F.SET_VRING_KICK, VringFd(0)), 2),
    ("mem table fewer fds", request(F.SET_MEM_TABLE, MemoryTable((REGION, REGION))), 1),
    ("mem table more fds", request(F.SET_MEM_TABLE, MemoryTable((REGION,))), 2),
    ("fd on GET_FEATURES", request(F.GET_FEATURES), 1),
    ("fd on SET_VRING_NUM", request(F.SET_VRING_NUM, VringState(0, 8)), 1),
    ("log base without fd", request(F.SET_LOG_BASE, Log(8, 0)), 0),
    ("backend req fd missing", request(F.SET_BACKEND_REQ_FD), 0),
    ("two fds on REM_MEM_REG", request(F.REM_MEM_REG, SingleMemRegion(REGION)), 2),
]


@pytest.mark.parametrize("name,msg,nfds", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_wrong_fd_count_is_malformed_and_fds_are_closed(name, msg, nfds, no_fd_leak):
    data = HEADER.pack(msg.request, msg.flags, 0)
    body = msg.payload.pack() if msg.payload else b""
    data = HEADER.pack(msg.request, msg.flags, len(body)) + body
    fds = [eventfd() for _ in range(nfds)]
    with pytest.raises(MalformedMessage, match="fds"):
        _decode_all(data, fds)
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)       # the decoder closed it


def test_too_many_fds_for_one_message(no_fd_leak):
    fds = [eventfd() for _ in range(9)]
    dec = Decoder(max_fds=8)
    dec.feed(_hdr(F.SET_OWNER, 1, 0)[:4], fds)
    with pytest.raises(MalformedMessage, match="cap"):
        dec.next_message()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_broken_decoder_stays_broken_and_closes_later_fds(no_fd_leak):
    dec = Decoder()
    dec.feed(_hdr(99, 1, 0))
    with pytest.raises(MalformedMessage):
        dec.next_message()
    fd = eventfd()
    dec.feed(encode(request(F.SET_VRING_KICK, VringFd(0), (fd,)))[0], [fd])
    with pytest.raises(MalformedMessage):
        dec.next_message()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_close_releases_fds_of_a_partial_message(no_fd_leak):
    fd = eventfd()
    data, _ = encode(request(F.SET_VRING_CALL, VringFd(0), (fd,)))
    dec = Decoder()
    dec.feed(data[:13], [fd])
    assert dec.next_message() is None and dec.has_partial
    dec.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_fds_belong_to_the_message_they_arrived_with(no_fd_leak):
    """Bytes of message A's tail and B's head fed separately: B's fds go to B."""
    a, b = eventfd(), eventfd()
    da, _ = encode(request(F.SET_VRING_KICK, VringFd(0), (a,)))
    db, _ = encode(request(F.SET_VRING_CALL, VringFd(0), (b,)))
    dec = Decoder()
    dec.feed(da[:15], [a])
    dec.feed(da[15:])
    dec.feed(db, [b])
    m1, m2 = dec.next_message(), dec.next_message()
    assert m1.fds == (a,) and m2.fds == (b,)
    os.close(a)
    os.close(b)


def test_encode_refuses_what_the_decoder_would_refuse():
    with pytest.raises(UsageError):
        encode(request(F.SET_FEATURES))                       # payload missing
    with pytest.raises(UsageError):
        encode(request(F.GET_FEATURES, U64(1)))               # payload not allowed
    with pytest.raises(UsageError):
        encode(request(F.SET_VRING_KICK, VringFd(0)))         # fd missing
    with pytest.raises(UsageError):
        encode(request(F.SET_VRING_ADDR, VringState(0, 0)))   # wrong payload class
    with pytest.raises(UsageError):
        encode(Message(F.GET_FEATURES, 0x1 | 0x40))
    with pytest.raises(UsageError):
        encode(request(F.SET_FEATURES, U64(1 << 64)))
    with pytest.raises(UsageError):
        encode(request(F.SET_VRING_CALL, VringFd(256), (0,)))


def test_every_request_has_a_spec():
    assert set(FRONTEND_SPECS) == set(F) and len(F) == 43
    assert set(BACKEND_SPECS) == set(B) and len(B) == 8
    assert F.SET_BACKEND_REQ_FD == 21 and F.NET_SET_MTU == 20 and F.CHECK_DEVICE_STATE == 43


def test_seed_dialect_decodes_ids_20_and_21():
    from emu.vhost_user.messages import SeedRequest
    raw = _hdr(21, 1, 8, struct.pack("<Q", 0))          # the seed's SET_VHOST_PCI start
    with pytest.raises(MalformedMessage):                  # today: SET_BACKEND_REQ_FD needs an fd
        _decode_all(raw)
    dec = Decoder()
    dec.seed_dialect = True
    dec.feed(raw)
    assert dec.next_message() == request(SeedRequest.SET_VHOST_PCI, U64(0))
