"""virtio-net-pci whose data path is a vhost-user back-end (QEMU's
``-device virtio-net-pci,netdev=<vhost-user>``).

The device model never touches packets: the back-end process moves them
through the rings in our guest memory.  What it does beyond
:class:`~emu.virtio.net_base.VirtioNet`:

* offers the guest the features both it and the back-end support (and,
  after a vhost-pci feature push, only those the back-end kept); a
  back-end without VERSION_1 leaves the function legacy-only, as QEMU;
* at DRIVER_OK hands the back-end the memory table and every ring
  (kicks: the notify ioeventfds; calls: eventfds it watches and turns into
  MSI-X/INTx interrupts);
* at reset stops the back-end's rings first and reads back non-zero
  status until that is done (so a driver never re-uses ring memory the
  back-end still writes);
* keeps the link state in the device configuration (up while the back-end
  is connected) and raises a config interrupt when it changes.

Threads: transport callbacks run on the guest thread with the function
lock held and never wait for the event loop; vhost-user work is queued to
the loop in order.  Call eventfds are read on the loop, which takes the
function lock only briefly to raise the interrupt.
"""
from __future__ import annotations

import asyncio
import logging
import threading

from emu.spec import vhost, virtio as V, virtio_net as N
from emu.spec import virtio_ring_packed as P
from emu.spec.virtio_ring import RING_IDX
from emu.virtio.device import QueueConfig
from emu.virtio.net_base import VirtioNet, eventfd
from emu.vhost_user.errors import PeerClosed, VhostUserError
from emu.vhost_user.messages import FrontendRequest as F, ProtocolFeature, Rarp, VringState
from emu.vhost_user.client import FrontendVring

__all__ = ["VirtioNetDevice", "eventfd"]

#: a packed ring's first start: both halves at position 0, wrap counter 1
#: (QEMU's virtio_queue_packed_get_last_avail_idx of a fresh queue)
PACKED_FRESH_BASE = P.off_wrap(0, 1) | P.off_wrap(0, 1) << 16

log = logging.getLogger(__name__)


class VirtioNetDevice(VirtioNet):
    def __init__(self, netdev, ram, loop: asyncio.AbstractEventLoop | None, *, mac: bytes,
                 queue_pairs: int = 1, mq: bool = False, mrg_rxbuf: bool = True,
                 event_idx: bool = True, indirect_desc: bool = True, host_mtu: int = 0,
                 queue_size: int = 256, packed: bool = False, name: str = "net0", events=None):
        wanted = (V.F_VERSION_1 | N.F_MAC | N.F_STATUS
                  | (N.F_MRG_RXBUF if mrg_rxbuf else 0)
                  | (V.F_EVENT_IDX if event_idx else 0)
                  | (V.F_INDIRECT_DESC if indirect_desc else 0)
                  | (V.F_RING_PACKED if packed else 0))
        super().__init__(ram, mac=mac, queue_pairs=queue_pairs, mq=mq, ctrl_vq=False,
                         wanted=wanted, host_mtu=host_mtu, queue_size=queue_size, name=name,
                         loop=loop, events=events)
        self.netdev = netdev
        self.reneg_mask: int | None = None   # vhost-pci: back-end's pushed features
        # packed rings keep no index in memory: where the back-end left each
        # (its GET_VRING_BASE), for a start that is not a fresh one
        self._packed_bases: dict[int, int] = {}
        self.renegotiations = 0
        self.started = False
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._reset_done = threading.Event()
        self._reset_done.set()
        self._start_queued = False        # a start op submitted and not finished
        netdev.call_fds = dict(self.call_fds)
        netdev.attach(self)

    @property
    def features_known(self) -> bool:
        """Whether the back-end's features are known (it has connected, or
        it is no back-end at all: a NIC without a peer): until then the
        function cannot tell whether it is modern."""
        return bool(self.netdev.connected or self.netdev.backend_features & V.F_VERSION_1)

    # -- loop side set-up ---------------------------------------------------------------------
    def start_loop_side(self) -> None:
        """Called on the loop once: call-fd readers and the ordered op queue."""
        self._queue = asyncio.Queue()
        self._worker = self.loop.create_task(self._run_ops())
        self.start_call_readers()
        if self.netdev.connected:
            self.set_link(True)

    def _submit(self, op, *args) -> None:
        """Queue a vhost-user operation (from any thread), run in order."""
        self.loop.call_soon_threadsafe(self._queue.put_nowait, (op, args))

    async def _run_ops(self) -> None:
        while True:
            op, args = await self._queue.get()
            try:
                await op(*args)
            except PeerClosed as e:
                # the back-end went away meanwhile: its disconnect is reported already
                self.netdev.counters.limiter.log(log, logging.INFO, ("op", op.__name__),
                                                 "%s: vhost-user %s: %s", self.name, op.__name__, e)
            except (VhostUserError, OSError) as e:     # a back-end can repeat this: rate-limited
                self.netdev.counters.limiter.log(log, logging.WARNING, ("op", op.__name__),
                                                 "%s: vhost-user %s failed: %s", self.name,
                                                 op.__name__, e)
            except Exception:
                self.netdev.counters.limiter.log(log, logging.ERROR, ("bug", op.__name__),
                                                 "%s: %s failed", self.name, op.__name__,
                                                 exc_info=True)
            finally:
                if op == self._op_stop:
                    self._reset_done.set()
                elif op == self._op_start:
                    self._start_queued = False

    # -- description ------------------------------------------------------------------------------
    def device_features(self) -> int:
        backend = self.netdev.backend_features
        offered = self.wanted & ((backend & N.VHOST_NET_BITS) | N.DEVICE_MODEL_BITS)
        if not backend & V.F_VERSION_1:
            offered &= ~V.F_VERSION_1          # the function is then legacy-only
        if not backend & N.F_MQ:
            offered &= ~(N.F_MQ | N.F_CTRL_VQ)
        if self.reneg_mask is not None:
            offered &= self.reneg_mask | N.DEVICE_MODEL_BITS
        return offered

    # -- driver actions (guest thread, lock held) ----------------------------------------------------
    def queue_enabled(self, index: int, queue: QueueConfig) -> None:
        super().queue_enabled(index, queue)
        if index != self.ctrl_index:
            self._packed_bases.pop(index, None)    # a fresh ring
            self.transport.kick_eventfd(index)     # kicks go straight to the back-end

    def driver_ok(self) -> None:
        self.active_pairs = 1
        self._start_queued = True
        self._submit(self._op_start)

    def reset(self):
        self.reset_common()
        # a start still queued or in flight counts as started: its rings
        # must be stopped once it is done, before the driver re-uses them
        if not self.started and not self._start_queued and self._reset_done.is_set():
            return None
        self._reset_done.clear()
        self._submit(self._op_stop)
        return self._reset_done.is_set

    def pairs_changed(self) -> None:
        self._submit(self._op_pairs)

    # -- vhost-user operations (loop) ---------------------------------------------------------------
    def _backend_features_for(self, guest: int) -> int:
        f = guest & N.VHOST_NET_BITS & self.netdev.backend_features
        return f | (self.netdev.backend_features & vhost.F_PROTOCOL_FEATURES)

    def _vrings(self) -> list[FrontendVring]:
        t = self.transport
        packed = t.guest_features & V.F_RING_PACKED
        out = []
        for q in t.queues:
            if q.index == self.ctrl_index or not q.enable:
                continue
            if packed:
                # where the back-end stopped it, or a fresh ring (a back-end
                # lost without GET_VRING_BASE left no position: as QEMU,
                # the last one known is used)
                base = self._packed_bases.get(q.index, PACKED_FRESH_BASE)
            else:
                # a fresh ring has used->idx 0; after a back-end restart the
                # back-end resumes where the used ring says (in-order net)
                base = int.from_bytes(self.ram.read(q.device + RING_IDX, 2), "little")
            out.append(FrontendVring(q.index, q.size, q.desc, q.driver, q.device,
                                     base=base,
                                     kick_fd=t.kick_eventfd(q.index),
                                     call_fd=self.call_fds[q.index]))
        return out

    async def _op_start(self) -> None:
        # a reset queued behind this start makes it obsolete (and while it is
        # pending the status still reads the old DRIVER_OK, features read 0)
        if not self.netdev.connected or not self.transport.status & V.STATUS_DRIVER_OK \
                or not self._reset_done.is_set():
            return
        features = self._backend_features_for(self.transport.guest_features)
        vrings = self._vrings()
        await self.netdev.client.start(features, self.ram, vrings)
        self.started = True
        await self._apply_pairs()
        self.emit("NIC_RX_FILTER_CHANGED", {"name": self.name,
                                            "path": f"/machine/peripheral/{self.name}/virtio-backend"})

    async def _apply_pairs(self) -> None:
        if not self.mq or not self.netdev.backend_features & vhost.F_PROTOCOL_FEATURES:
            return
        for pair in range(self.pairs):
            on = 1 if pair < self.active_pairs else 0
            for idx in (N.rx_queue(pair), N.tx_queue(pair)):
                await self.netdev.client.call(F.SET_VRING_ENABLE, VringState(idx, on),
                                              need_reply=True)

    async def _op_stop(self) -> None:
        if self.started and self.netdev.connected:
            try:
                bases = await self.netdev.client.stop()
                if self.transport.guest_features & V.F_RING_PACKED:
                    self._packed_bases.update(bases)
            finally:
                self.started = False
        self.started = False

    async def _op_pairs(self) -> None:
        if self.started:
            await self._apply_pairs()

    # -- announce-self (loop) ----------------------------------------------------------------------------
    def announce(self) -> bool:
        """As QEMU's vhost-user netdev: the back-end sends the RARP itself
        (SEND_RARP) if it offers that; then the guest's own announce."""
        neg = self.netdev.negotiated
        if self.netdev.connected and neg is not None and \
                neg.protocol_features & ProtocolFeature.RARP:
            self._submit(self._op_rarp)
        return super().announce()

    async def _op_rarp(self) -> None:
        await self.netdev.client.call(F.SEND_RARP, Rarp(self.mac))

    # -- back-end events (loop) --------------------------------------------------------------------------
    async def backend_ready(self) -> None:
        """Connected again (or for the first time, late): link up, rings back."""
        self.set_link(True)
        if self.transport.status & V.STATUS_DRIVER_OK:
            self._start_queued = True
            self._submit(self._op_start)

    def backend_lost(self) -> None:
        self.started = False
        self._reset_done.set()
        self.set_link(False)

    def backend_features_changed(self, features: int) -> None:
        """The vhost-pci back-end's driver negotiated ``features``: our guest
        must renegotiate with no more than those (the seed's rule)."""
        self.reneg_mask = features
        acked = self.transport.guest_features
        if acked and acked & N.VHOST_NET_BITS & ~features:
            self.renegotiations += 1
            self.transport.set_needs_reset()

    # -- monitor -----------------------------------------------------------------------------------
    def device_stats(self) -> dict:
        return {"link_up": self.link_up, "renegotiations": self.renegotiations,
                "vhost_user": self.netdev.counters.as_dict()}

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()          # its queue serves this device only
        self.close_calls()
