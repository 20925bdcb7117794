"""Fuzz target: the vhost-user front-end's handling of what a back-end sends.

    python tests/fuzz/fuzz_frontend.py -atheris_runs=100000 [CORPUS_DIR ...]

The front-end (``emu.vhost_user.frontend.Frontend``, sans-IO) plays
QEMU's session -- handshake, start, stop -- one request at a time, as
``FrontendClient`` does, and acts on each reply as the client does (the
protocol features it acks come from the back-end's offer, so the fuzzer
steers REPLY_ACK, the vhost-pci extension, the channel...).  Everything the
back-end sends is fuzz input, on the main socket (replies, the vhost-pci
``SET_FEATURES`` push, junk) and on the back-end request channel.

An input is a sequence of records ``u8 control, u8 length, bytes[length]``:
``control`` bits 0-1 = fds sent with the bytes, 2-3 = their kind
(eventfd, memfd, socket, pipe), bit 4 = channel instead of main socket,
bits 5-7 = how many scripted requests the front-end sends first.

A crash is an exception other than a VhostUserError (which closes the
connection), a reply handed to the wrong request, a message emu would
send that its own decoder rejects, or an fd left open.
"""
from __future__ import annotations

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_common import fd_count, main  # noqa: E402

MEMFD_SIZE = 1 << 16
F = B = U64 = VringState = VringFd = VringAddr = MemoryTable = MemoryRegion = None
Config = Inflight = Decoder = encode = Frontend = VhostUserError = None
Reply = BackendFeatures = Ignored = PF = spec_of = None


def _imports():
    global F, B, U64, VringState, VringFd, VringAddr, MemoryTable, MemoryRegion, Config
    global Inflight, Decoder, encode, Frontend, VhostUserError, Reply, BackendFeatures
    global Ignored, PF, spec_of
    from emu.vhost_user.codec import Decoder, encode
    from emu.vhost_user.errors import VhostUserError
    from emu.vhost_user.frontend import BackendFeatures, Frontend, Ignored, Reply
    from emu.vhost_user.messages import (BackendRequest as B, Config, FrontendRequest as F,
                                         Inflight, MemoryRegion, MemoryTable,
                                         ProtocolFeature as PF, U64, VringAddr, VringFd,
                                         VringState, spec_of)


def _make_fds(kind: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        if kind == 0:
            out.append(os.eventfd(0, os.EFD_CLOEXEC))
        elif kind == 1:
            fd = os.memfd_create("fuzz", os.MFD_CLOEXEC)
            os.ftruncate(fd, MEMFD_SIZE)
            out.append(fd)
        elif kind == 2:
            a, b = socket.socketpair()
            a.close()
            out.append(b.detach())
        else:
            r, w = os.pipe()
            os.close(w)
            out.append(r)
    return out


def _script(fe):
    """QEMU's session as FrontendClient sends it; each step may look at
    the replies so far (the Frontend's negotiated state)."""
    u = 0x7F0000000000
    yield F.GET_FEATURES, None, False
    yield F.GET_PROTOCOL_FEATURES, None, False
    yield F.SET_PROTOCOL_FEATURES, U64(fe.choose_protocol_features(
        fe.backend_protocol_features or 0)), False
    yield F.GET_QUEUE_NUM, None, False
    yield F.GET_MAX_MEM_SLOTS, None, False
    yield F.SET_BACKEND_REQ_FD, None, True
    yield F.SET_OWNER, None, False
    yield F.SET_VRING_CALL, VringFd(0, True), False
    yield F.SET_FEATURES, U64((fe.backend_features or 0) & 0x1_7000_8000), True
    yield F.SET_MEM_TABLE, MemoryTable((MemoryRegion(0, MEMFD_SIZE, u, 0),)), True
    for i in (0, 1):
        yield F.SET_VRING_NUM, VringState(i, 256), False
        yield F.SET_VRING_BASE, VringState(i, 0), False
        yield F.SET_VRING_ADDR, VringAddr(i, 0, u, u + 0x2000, u + 0x1000, 0), False
        yield F.SET_VRING_KICK, VringFd(i, True), False
        yield F.SET_VRING_ENABLE, VringState(i, 1), True
    yield F.SET_STATUS, U64(0xF), True
    yield F.GET_STATUS, None, False
    yield F.GET_CONFIG, Config(0, 12, 0, bytes(12)), False
    yield F.GET_INFLIGHT_FD, Inflight(0, 0, 2, 256), False
    for i in (0, 1):
        yield F.SET_VRING_ENABLE, VringState(i, 0), True
        yield F.GET_VRING_BASE, VringState(i, 0), False


def _check_encodable(msg) -> None:
    """emu must never send what it would itself reject."""
    data, fds = encode(msg)
    dec = Decoder(type(msg.request))
    dec.feed(data, [os.dup(fd) for fd in fds])
    back = dec.next_message()
    assert back is not None and back.request == msg.request and back.flags == msg.flags, back
    for fd in back.fds:
        os.close(fd)


def _act_on(event) -> None:
    """What FrontendClient does with an event (reply fds are the caller's)."""
    if isinstance(event, Reply):
        assert event.reply.request == event.request.request, event
        assert event.reply.is_reply
        if event.request.request == F.GET_VRING_BASE and \
                event.reply.payload.index != event.request.payload.index:
            pass        # FrontendClient.stop raises ProtocolViolation here: a peer error
        for fd in event.reply.fds:
            os.close(fd)
    elif isinstance(event, BackendFeatures):
        assert event.features >= 0
    else:
        assert isinstance(event, Ignored), event


def run_one(data: bytes) -> None:
    before = fd_count()
    fe = Frontend(vhost_pci="auto")
    main_dec, chan_dec = Decoder(F), Decoder(B)
    script = _script(fe)
    try:
        pos = 0
        while pos + 2 <= len(data):
            control, length = data[pos], data[pos + 1]
            chunk = data[pos + 2:pos + 2 + length]
            pos += 2 + length
            for _ in range(control >> 5):
                step = next(script, None)
                if step is not None:
                    req, payload, need_reply = step
                    nfds = spec_of(req).fds.allowed(payload).start   # stand-ins: never sent
                    _check_encodable(fe.request(req, payload, (0,) * nfds, need_reply))
            fds = _make_fds(control >> 2 & 3, control & 3) if chunk else []
            channel = bool(control & 0x10)
            dec = chan_dec if channel else main_dec
            dec.feed(chunk, fds)
            while (msg := dec.next_message()) is not None:
                if channel:
                    event, replies = fe.handle_channel(msg)
                    for r in replies:
                        _check_encodable(r)
                    assert event is None or not isinstance(event, Reply)
                else:
                    _act_on(fe.receive(msg))
    except VhostUserError:
        pass                     # the connection is dropped: fine
    finally:
        main_dec.close()
        chan_dec.close()
        after = fd_count()
        if after != before:
            raise AssertionError(f"fd leak: {before} open before, {after} after")


def seed_corpus() -> list[bytes]:
    """Replies a well-behaved back-end would send, one request at a time."""
    from emu.vhost_user.codec import Message, request
    from emu.vhost_user.messages import Flags

    def rec(msg, send: int = 1, channel: bool = False) -> bytes:
        raw, _ = encode(msg)
        return bytes([send << 5 | (0x10 if channel else 0), len(raw)]) + raw

    def reply(req, payload) -> bytes:
        return rec(Message(req, Flags.VERSION | Flags.REPLY, payload))

    features = 1 << 32 | 1 << 30 | 1 << 15
    pf = int(PF.MQ | PF.REPLY_ACK | PF.BACKEND_REQ | PF.CONFIGURE_MEM_SLOTS | PF.STATUS
             | PF.NET_MTU | PF.EMU_VHOST_PCI)
    hello = (reply(F.GET_FEATURES, U64(features)) + reply(F.GET_PROTOCOL_FEATURES, U64(pf))
             + bytes([1 << 5, 0]))
    more = (reply(F.GET_QUEUE_NUM, U64(1)) + reply(F.GET_MAX_MEM_SLOTS, U64(8))
            + reply(F.SET_BACKEND_REQ_FD, U64(0)))
    push = rec(request(F.SET_FEATURES, U64(features)), send=0)
    chan = (rec(request(B.CONFIG_CHANGE_MSG), send=0, channel=True)
            + rec(request(B.VRING_CALL, VringState(0, 0)), send=0, channel=True))
    return [hello, hello + more, hello + more + push + chan]


if __name__ == "__main__":
    main(sys.argv, run_one, seed_corpus, _imports, globals(),
         ("_script", "_act_on", "run_one"))
else:
    _imports()
