"""Random streams from a socket netdev's peer into the engine's data path:
any split of any frames (zero-length to NET_BUFSIZE), then maybe a garbage
length, then anything.  Every whole frame before the garbage reaches the
guest, in order and intact; the garbage ends the stream (QEMU's rule);
nothing after it is delivered; the process lives on."""
from __future__ import annotations

import struct
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.spec import qemu_net

from tests.ring.net_rig import NetRig, framed, wait_until

NET_BUFSIZE = qemu_net.NET_BUFSIZE

FRAMES = st.lists(st.one_of(st.binary(max_size=64), st.binary(min_size=60, max_size=1600),
                            st.integers(1500, NET_BUFSIZE).map(lambda n: bytes([n & 0xFF]) * n)),
                  max_size=12)
GARBAGE = st.one_of(st.none(), st.integers(NET_BUFSIZE + 1, 0xFFFFFFFF))
CUTS = st.lists(st.integers(1, 5000), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAMES, GARBAGE, st.binary(max_size=200), CUTS)
def test_any_stream_from_the_peer(frames, garbage, tail, cuts):
    r = NetRig(num=256)
    try:
        r.rx_refill()
        data = framed(frames)
        if garbage is not None:
            data += struct.pack(">I", garbage) + tail
        pos, k = 0, 0
        while pos < len(data):                       # the stream in random pieces
            n = cuts[k % len(cuts)]
            r.peer_send(data[pos:pos + n])
            pos += n
            k += 1
        assert r.rx(len(frames), timeout=30) == frames
        if garbage is not None:
            wait_until(lambda: r.port.link == "oversize", what="the stream to end")
        else:
            assert r.port.link == "up"
        time.sleep(0.01)
        assert r.drv_rx.rx_recv() == []              # nothing more, nothing made up
        st_ = r.port.stats()
        assert st_["rx_frames"] == len(frames) and st_["rx_errors"] == 0
    finally:
        r.close()
