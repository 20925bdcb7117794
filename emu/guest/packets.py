"""Frames the guest apps send and answer (built and parsed with dpkt).

``udp_frame`` is the generator's template: Ethernet/IPv4/UDP like testpmd's
txonly, with the sequence stamp at the start of the UDP payload
(:data:`STAMP_OFF`).  :class:`Responder` answers ARP requests and ICMP echo
requests, which is all a Linux guest's ``ping`` needs.
"""
from __future__ import annotations

# dpkt (and ipaddress) are imported where a frame is built or parsed, not
# with this module: they cost tens of milliseconds, and a guest whose app
# never builds a frame (echo, sink) should boot without them

STAMP_OFF = 14 + 20 + 8          # first UDP payload byte
MIN_STAMPED = STAMP_OFF + 8      # smallest frame that holds a stamp
BROADCAST = b"\xff" * 6


def mac_bytes(mac: str | bytes) -> bytes:
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError(f"MAC must be 6 bytes, got {len(mac)}")
        return mac
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def udp_frame(size: int, src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02",
              src_ip="198.18.0.1", dst_ip="198.18.0.2", sport=9, dport=9) -> bytes:
    """An Ethernet/IPv4/UDP frame of exactly ``size`` bytes (no FCS)."""
    if size < 14 + 20 + 8:
        raise ValueError(f"a UDP frame needs at least 42 bytes, not {size}")
    import ipaddress

    import dpkt
    payload = bytes(size - 42)
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(src=ipaddress.IPv4Address(src_ip).packed,
                    dst=ipaddress.IPv4Address(dst_ip).packed, p=dpkt.ip.IP_PROTO_UDP,
                    ttl=64, data=udp)
    ip.len = 20 + udp.ulen
    udp.sum = 0                     # no UDP checksum: the payload is stamped per packet
    eth = dpkt.ethernet.Ethernet(dst=mac_bytes(dst_mac), src=mac_bytes(src_mac),
                                 type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    frame = bytes(eth)
    assert len(frame) == size, (len(frame), size)
    return frame


class Responder:
    """Answers ARP who-has and ICMP echo requests.

    ``ip``: answer only for this address (None: for any address, which is
    enough for a guest that pings whatever peer it was told).  ``mac``: the
    address claimed in ARP replies and used as the reply source."""

    def __init__(self, mac="02:00:00:00:00:02", ip: str | None = None):
        import ipaddress
        self.mac = mac_bytes(mac)
        self.ip = ipaddress.IPv4Address(ip).packed if ip else None
        self.arp_replies = 0
        self.icmp_replies = 0
        self.ignored = 0

    def _mine(self, addr: bytes) -> bool:
        return self.ip is None or addr == self.ip

    def reply(self, frame: bytes) -> bytes | None:
        import dpkt
        try:
            eth = dpkt.ethernet.Ethernet(frame)
        except (dpkt.UnpackError, ValueError):
            self.ignored += 1
            return None
        if isinstance(eth.data, dpkt.arp.ARP):
            return self._arp(eth)
        if isinstance(eth.data, dpkt.ip.IP) and isinstance(eth.data.data, dpkt.icmp.ICMP):
            return self._icmp(eth)
        self.ignored += 1
        return None

    def _arp(self, eth) -> bytes | None:
        import dpkt
        a = eth.data
        if a.op != dpkt.arp.ARP_OP_REQUEST or not self._mine(a.tpa):
            self.ignored += 1
            return None
        r = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REPLY, sha=self.mac, spa=a.tpa,
                         tha=a.sha, tpa=a.spa)
        self.arp_replies += 1
        return bytes(dpkt.ethernet.Ethernet(dst=a.sha, src=self.mac,
                                            type=dpkt.ethernet.ETH_TYPE_ARP, data=r))

    def _icmp(self, eth) -> bytes | None:
        import dpkt
        ip, icmp = eth.data, eth.data.data
        if icmp.type != dpkt.icmp.ICMP_ECHO or not self._mine(ip.dst):
            self.ignored += 1
            return None
        echo = icmp.data
        rep = dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_ECHOREPLY, code=0,
                             data=dpkt.icmp.ICMP.Echo(id=echo.id, seq=echo.seq, data=echo.data))
        rip = dpkt.ip.IP(src=ip.dst, dst=ip.src, p=dpkt.ip.IP_PROTO_ICMP, ttl=64,
                         id=ip.id, data=rep)
        rip.len = 20 + len(bytes(rep))
        self.icmp_replies += 1
        return bytes(dpkt.ethernet.Ethernet(dst=eth.src, src=self.mac,
                                            type=dpkt.ethernet.ETH_TYPE_IP, data=rip))
