"""What QEMU's network layer puts on the wire, where emu interoperates with
it (QEMU 7.2, ``net/net.c``, ``net/socket.c``, ``net/announce.c``):

* the stream framing of ``-netdev socket`` (``fd=``, ``listen=``,
  ``connect=``): every frame, both ways, is a 4-byte big-endian length and
  then that many bytes of Ethernet frame (no virtio-net header);
* NET_BUFSIZE, the largest frame QEMU's net layer moves: a guest's TX frame
  above it is dropped (``qemu_sendv_packet_async``), a socket peer's frame
  above it ends the connection (``net_fill_rstate``: "oversized packet
  received, connection terminated");
* the self-announce frame (``announce_self_create``) and the default
  timing of ``announce-self`` rounds (qapi/net.json's example values are
  not defaults: QMP gives all four).
"""
from __future__ import annotations

import struct

NET_BUFSIZE = 4096 + 65536      # include/net/net.h
FRAME_LEN = struct.Struct(">I")  # the socket netdev's length prefix
FRAME_LEN_SIZE = FRAME_LEN.size

# announce_self_create: a RARP "reverse request" broadcast from the NIC's MAC
ETH_P_RARP = 0x8035
ARP_HTYPE_ETH = 0x0001
ARP_PTYPE_IP = 0x0800
ARP_OP_REQUEST_REV = 0x3
ANNOUNCE_FRAME_LEN = 60         # Ethernet's minimum frame without the FCS
BROADCAST = b"\xff" * 6


def announce_frame(mac: bytes) -> bytes:
    """The 60-byte RARP frame QEMU sends for a NIC with ``mac``."""
    if len(mac) != 6:
        raise ValueError(f"a MAC is 6 bytes, not {len(mac)}")
    frame = (BROADCAST + mac + struct.pack(">HHHBBH", ETH_P_RARP, ARP_HTYPE_ETH, ARP_PTYPE_IP,
                                           6, 4, ARP_OP_REQUEST_REV)
             + mac + bytes(4) + mac + bytes(4))
    return frame + bytes(ANNOUNCE_FRAME_LEN - len(frame))
