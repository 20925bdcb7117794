"""The C engine's copy of the spec (what _ring.h exposes to cffi) agrees
with emu.spec: C cannot import Python's constants, so they are pinned
here instead."""
from __future__ import annotations

from emu._ring import lib
from emu.ring.queues import queue_flags
from emu.spec import vhost, virtio, virtio_net, virtio_ring, virtio_ring_packed
from emu.vhost_user import shm

PREFIX = "EMU_VRING_"
PACKED_PREFIX = "EMU_PRING_"


def test_every_ring_constant_of_the_engine_is_the_spec_s():
    engine = {n[len(PREFIX):]: getattr(lib, n) for n in dir(lib) if n.startswith(PREFIX)}
    # the flags the chain walker checks and the layout it indexes by
    assert {"DESC_F_NEXT", "DESC_F_WRITE", "DESC_F_INDIRECT", "AVAIL_F_NO_INTERRUPT",
            "USED_F_NO_NOTIFY", "DESC_SIZE", "USED_ELEM_SIZE", "RING_ENTRIES"} <= set(engine)
    for name, value in engine.items():
        assert hasattr(virtio_ring, name), f"{PREFIX}{name} has no emu.spec.virtio_ring.{name}"
        assert value == getattr(virtio_ring, name), name


def test_every_packed_ring_constant_of_the_engine_is_the_spec_s():
    engine = {n[len(PACKED_PREFIX):]: getattr(lib, n) for n in dir(lib)
              if n.startswith(PACKED_PREFIX)}
    assert {"DESC_F_AVAIL", "DESC_F_USED", "EVENT_FLAG_ENABLE", "EVENT_FLAG_DISABLE",
            "EVENT_FLAG_DESC", "EVENT_F_WRAP_CTR", "DESC_SIZE", "EVENT_SIZE"} <= set(engine)
    # the inflight region's packed format is vhost-user's (emu.vhost_user.shm)
    inflight = {"INFLIGHT_HEADER": shm.INFLIGHT_PACKED_HEADER,
                "INFLIGHT_DESC": shm.INFLIGHT_PACKED_DESC}
    for name, value in engine.items():
        if name in inflight:
            assert value == inflight[name], name
            continue
        assert hasattr(virtio_ring_packed, name), \
            f"{PACKED_PREFIX}{name} has no emu.spec.virtio_ring_packed.{name}"
        assert value == getattr(virtio_ring_packed, name), name


def test_the_engine_acts_on_the_spec_s_feature_bits():
    """Each negotiated bit the engine implements turns on its queue flag,
    and nothing else does."""
    for bit, qf in ((virtio.F_EVENT_IDX, lib.EMU_QF_EVENT_IDX),
                    (virtio.F_INDIRECT_DESC, lib.EMU_QF_INDIRECT),
                    (virtio_net.F_MRG_RXBUF, lib.EMU_QF_MRG_RXBUF),
                    (vhost.F_LOG_ALL, lib.EMU_QF_LOG),
                    (virtio.F_IN_ORDER, lib.EMU_QF_IN_ORDER)):
        assert queue_flags(bit) == qf
    others = ((1 << 64) - 1) & ~(virtio.F_EVENT_IDX | virtio.F_INDIRECT_DESC
                                 | virtio_net.F_MRG_RXBUF | vhost.F_LOG_ALL | virtio.F_IN_ORDER)
    assert queue_flags(others) == 0


def test_the_net_job_frames_as_qemu_net_says():
    """The socket netdev's limits in _ring_net.h are emu.spec.qemu_net's."""
    from emu.spec import qemu_net
    assert lib.EMU_NET_BUFSIZE == qemu_net.NET_BUFSIZE
    assert lib.EMU_NET_LEN_SIZE == qemu_net.FRAME_LEN_SIZE
    assert qemu_net.ANNOUNCE_FRAME_LEN <= lib.EMU_NET_INJECT_MAX     # an announce fits a slot
    assert len(qemu_net.announce_frame(bytes(6))) == qemu_net.ANNOUNCE_FRAME_LEN
