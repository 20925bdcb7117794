"""A socket netdev's peer as its own process: QEMU's stream framing (a
4-byte big-endian length, then the frame) on an inherited fd, a TCP
listener (emu connects) or a TCP client (emu listens).

    python -m tests.peers.net_peer MODE (--fd N | --listen PORT | --connect PORT) [options]

Modes:
  echo     every frame back as it came
  sink     count and keep what arrives; on EOF (or SIGTERM) print a JSON
           report: frames, bytes, and each frame's sha256 in order
  gen      send --count frames of --size bytes: emu's generator frames
           (UDP, the sequence stamp and pattern emu's sink checks), --pace
           frames then a pause of --pause-ms, then wait for EOF
  script   send the bytes of --file as they are (framing edges), then sink

Frames are built and checked with dpkt.  stdout carries one JSON line per
event: {"started": pid} once SIGTERM is handled, {"ready": port} once
listening, {"report": ...} at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time

import dpkt

LEN = struct.Struct(">I")


def say(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def connection(args) -> socket.socket:
    if args.fd is not None:
        return socket.socket(fileno=args.fd)
    if args.listen is not None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", args.listen))
        ls.listen(1)
        say({"ready": ls.getsockname()[1]})
        conn, _ = ls.accept()
        ls.close()
        return conn
    deadline = time.monotonic() + 20
    while True:
        try:
            return socket.create_connection(("127.0.0.1", args.connect))
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def frames(sock: socket.socket):
    buf = b""
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        buf += data
        off = 0
        while len(buf) - off >= 4:
            (n,) = LEN.unpack_from(buf, off)
            if len(buf) - off - 4 < n:
                break
            yield buf[off + 4:off + 4 + n]
            off += 4 + n
        buf = buf[off:]


def gen_frame(seq: int, size: int) -> bytes:
    """emu's generator frame for ``seq`` (emu.guest.packets' UDP template,
    the stamp and pattern of emu.ring.traffic), built with dpkt."""
    from emu.guest import packets
    from emu.ring.traffic import expected_frame
    tmpl = packets.udp_frame(size, src_mac=bytes.fromhex("02aabbccdd01"),
                             dst_mac=bytes.fromhex("ffffffffffff"))
    f = expected_frame(tmpl, size, packets.STAMP_OFF, seq)
    eth = dpkt.ethernet.Ethernet(f)            # a well-formed UDP/IPv4 frame
    assert isinstance(eth.data, dpkt.ip.IP) and isinstance(eth.data.data, dpkt.udp.UDP)
    return f


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("echo", "sink", "gen", "script"))
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int)
    where.add_argument("--listen", type=int)
    where.add_argument("--connect", type=int)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--pace", type=int, default=0)
    ap.add_argument("--pause-ms", type=float, default=0)
    ap.add_argument("--file")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminated)
    say({"started": os.getpid()})          # SIGTERM is handled from here on
    sock = connection(args)
    got, nbytes, digests = 0, 0, []
    try:
        if args.mode == "echo":
            for f in frames(sock):
                sock.sendall(LEN.pack(len(f)) + f)
                got += 1
        elif args.mode == "gen":
            for seq in range(args.count):
                f = gen_frame(seq, args.size)
                sock.sendall(LEN.pack(len(f)) + f)
                if args.pace and (seq + 1) % args.pace == 0:
                    time.sleep(args.pause_ms / 1000)
            say({"sent": args.count})
            for f in frames(sock):
                got += 1
        else:
            if args.mode == "script":
                with open(args.file, "rb") as fh:
                    sock.sendall(fh.read())
                say({"sent": os.path.getsize(args.file)})
            for f in frames(sock):
                got += 1
                nbytes += len(f)
                digests.append(hashlib.sha256(f).hexdigest())
    except (KeyboardInterrupt, ConnectionError):
        pass
    say({"report": {"frames": got, "bytes": nbytes, "digests": digests}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
