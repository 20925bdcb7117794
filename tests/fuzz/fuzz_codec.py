"""Fuzz target: the vhost-user decoder feeding a Backend, as on a socket.

    python tests/fuzz/fuzz_codec.py -atheris_runs=100000 [CORPUS_DIR ...]
    python tests/fuzz/fuzz_codec.py --seed-corpus DIR     # write seed inputs

An input is a sequence of records ``u8 control, u8 length, bytes[length]``:
the bytes arrive as one read; ``control`` bits 0-1 say how many fds come
with them and bits 2-3 which kind (eventfd, memfd of 64 KiB, socket,
pipe).  The Backend behind the decoder has a device without a data path.
A crash is anything but a PeerError from the back-end or a
MalformedMessage from the decoder, or an fd or mapping left open after
the connection is torn down.
"""
from __future__ import annotations

import logging
import os
import socket
import sys

PAGE = 4096
MEMFD_SIZE = 16 * PAGE


def _imports():
    global Backend, BackendDevice, Decoder, PeerError, MalformedMessage
    from emu.errors import PeerError
    from emu.vhost_user.backend import Backend
    from emu.vhost_user.codec import Decoder
    from emu.vhost_user.device import BackendDevice
    from emu.vhost_user.errors import MalformedMessage


def _make_fd(kind: int) -> list[int]:
    if kind == 0:
        return [os.eventfd(0, os.EFD_CLOEXEC)]
    if kind == 1:
        fd = os.memfd_create("fuzz", os.MFD_CLOEXEC)
        os.ftruncate(fd, MEMFD_SIZE)
        return [fd]
    if kind == 2:
        a, b = socket.socketpair()
        a.close()
        return [b.detach()]
    r, w = os.pipe()
    os.close(w)
    return [r]


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _device():
    from emu.vhost_user.backend import IMPLEMENTED
    from emu.vhost_user.messages import VirtioFeature as VF

    class FuzzDevice(BackendDevice):
        def features(self):
            return VF.VERSION_1 | VF.NET_MRG_RXBUF | VF.LOG_ALL | VF.RING_PACKED

        def protocol_features(self):
            return int(IMPLEMENTED)

        def vring_stop(self, vring):
            return vring.base & 0xFFFF

    return FuzzDevice()


def run_one(data: bytes) -> None:
    before = _fd_count()
    backend = Backend(_device(), vhost_pci="auto")
    dec = Decoder()
    try:
        pos = 0
        while pos + 2 <= len(data):
            control, length = data[pos], data[pos + 1]
            chunk = data[pos + 2:pos + 2 + length]
            pos += 2 + length
            fds = [fd for _ in range(control & 3) for fd in _make_fd(control >> 2 & 3)] if chunk else []
            dec.feed(chunk, fds)
            while (msg := dec.next_message()) is not None:
                try:
                    for out in backend.handle(msg):
                        assert out.is_reply or out.request.name == "SET_FEATURES", out
                except PeerError:
                    return              # the connection would be closed here
    except MalformedMessage:
        return
    finally:
        dec.close()
        backend.close()
        after = _fd_count()
        if after != before:
            raise AssertionError(f"fd leak: {before} open before, {after} after")


def seed_corpus() -> list[bytes]:
    """Inputs shaped like a QEMU session, for the fuzzer to mutate."""
    from emu.vhost_user.backend import IMPLEMENTED
    from emu.vhost_user.codec import encode, request
    from emu.vhost_user.messages import (FrontendRequest as F, Inflight, MemoryRegion,
                                         MemoryTable, U64, VringAddr, VringFd, VringState)

    def rec(msg, fd_kind=0):
        raw, fds = encode(msg)
        out = b""
        for i in range(0, len(raw), 255):
            n = len(fds) if i == 0 else 0
            out += bytes([n | fd_kind << 2, len(raw[i:i + 255])]) + raw[i:i + 255]
        return out

    ram = MemoryTable((MemoryRegion(0, MEMFD_SIZE, 0x7F0000000000, 0),))
    u = 0x7F0000000000
    hello = [request(F.GET_FEATURES), request(F.GET_PROTOCOL_FEATURES),
             request(F.SET_PROTOCOL_FEATURES, U64(int(IMPLEMENTED) | 1 << 63)), request(F.GET_QUEUE_NUM),
             request(F.SET_OWNER)]
    start = [request(F.SET_FEATURES, U64(1 << 32 | 1 << 30 | 1 << 15), need_reply=True)]
    ring = [request(F.SET_VRING_NUM, VringState(0, 64)), request(F.SET_VRING_BASE, VringState(0, 5)),
            request(F.SET_VRING_ADDR, VringAddr(0, 0, u, u + 0x1000, u + 0x800, 0))]
    out = [b"".join(rec(m) for m in hello)]
    out.append(out[0] + rec(start[0]) + rec(request(F.SET_MEM_TABLE, ram, (0,)), fd_kind=1)
               + b"".join(rec(m) for m in ring) + rec(request(F.SET_VRING_KICK, VringFd(0), (0,)))
               + rec(request(F.GET_VRING_BASE, VringState(0, 0))))
    out.append(out[0] + rec(request(F.GET_INFLIGHT_FD, Inflight(0, 0, 2, 64)))
               + rec(request(F.SET_VRING_ENABLE, VringState(1, 1))))
    return out


def write_seed_corpus(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for i, blob in enumerate(seed_corpus()):
        with open(os.path.join(directory, f"seed{i}"), "wb") as f:
            f.write(blob)


def main(argv: list[str]) -> None:
    if len(argv) > 2 and argv[1] == "--seed-corpus":
        _imports()
        write_seed_corpus(argv[2])
        return
    import atheris
    logging.disable(logging.WARNING)     # refusals are expected by the thousand
    with atheris.instrument_imports(include=["emu"]):
        _imports()
    atheris.Setup(argv, run_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
else:
    _imports()
