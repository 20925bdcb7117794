"""virtio-net-pci whose data path is a vhost-user back-end (QEMU's
``-device virtio-net-pci,netdev=<vhost-user>``).

The device model never touches packets: the back-end process moves them
through the rings in our guest memory.  What it does:

* offers the guest the features both it and the back-end support (and,
  after a vhost-pci feature push, only those the back-end kept);
* at DRIVER_OK hands the back-end the memory table and every ring
  (kicks: the notify ioeventfds; calls: eventfds it watches and turns into
  MSI-X/INTx interrupts);
* at reset stops the back-end's rings first and reads back non-zero
  status until that is done (so a driver never re-uses ring memory the
  back-end still writes);
* keeps the link state in the device configuration (up while the back-end
  is connected) and raises a config interrupt when it changes;
* serves the control queue itself (MQ pair count, RX mode), as QEMU does.

Threads: transport callbacks run on the guest thread with the function
lock held and never wait for the event loop; vhost-user work is queued to
the loop in order.  Call eventfds are read on the loop, which takes the
function lock only briefly to raise the interrupt.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading

from emu.errors import GuestMemoryError
from emu.spec import vhost, virtio as V, virtio_net as N
from emu.spec.virtio_ring import (DESC, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE, RING_ENTRIES,
                                  RING_IDX, USED_ELEM)
from emu.spec import virtio_ring_packed as P
from emu.virtio.device import QueueConfig, VirtioDevice
from emu.virtio.packed_ctrl import PackedCtrlRing
from emu.vhost_user.errors import PeerClosed, VhostUserError
from emu.vhost_user.messages import FrontendRequest as F, VringState
from emu.vhost_user.frontend import FrontendVring, eventfd

#: a packed ring's first start: both halves at position 0, wrap counter 1
#: (QEMU's virtio_queue_packed_get_last_avail_idx of a fresh queue)
PACKED_FRESH_BASE = P.off_wrap(0, 1) | P.off_wrap(0, 1) << 16

log = logging.getLogger(__name__)


class VirtioNetDevice(VirtioDevice):
    device_id = N.VIRTIO_ID_NET
    pci_class = 0x020000

    def __init__(self, netdev, ram, loop: asyncio.AbstractEventLoop, *, mac: bytes,
                 queue_pairs: int = 1, mq: bool = False, mrg_rxbuf: bool = True,
                 event_idx: bool = True, indirect_desc: bool = True, host_mtu: int = 0,
                 queue_size: int = 256, packed: bool = False, name: str = "net0", events=None):
        super().__init__(N.CONFIG.size)
        self.netdev = netdev
        self.ram = ram
        self.loop = loop
        self.name = name
        self.emit = events or (lambda name, data: None)
        self.mac = mac
        self.pairs = queue_pairs
        self.mq = mq and queue_pairs > 1
        self.has_ctrl = self.mq
        self.num_queues = 2 * queue_pairs + (1 if self.has_ctrl else 0)
        self.ctrl_index = 2 * queue_pairs if self.has_ctrl else None
        self._qsize = queue_size
        self.host_mtu = host_mtu
        self.wanted = (V.F_VERSION_1 | N.F_MAC | N.F_STATUS
                       | (N.F_MRG_RXBUF if mrg_rxbuf else 0)
                       | (V.F_EVENT_IDX if event_idx else 0)
                       | (V.F_INDIRECT_DESC if indirect_desc else 0)
                       | (N.F_MTU if host_mtu else 0)
                       | (V.F_RING_PACKED if packed else 0)
                       | (N.F_MQ | N.F_CTRL_VQ if self.mq else 0))
        self.reneg_mask: int | None = None   # vhost-pci: back-end's pushed features
        self.link_up = False
        self.active_pairs = 1
        self._ctrl_last = 0            # control queue: next avail index to serve
        self._ctrl_packed = PackedCtrlRing(ram)
        # packed rings keep no index in memory: where the back-end left each
        # (its GET_VRING_BASE), for a start that is not a fresh one
        self._packed_bases: dict[int, int] = {}
        self.call_fds = {i: eventfd() for i in range(2 * queue_pairs)}
        self.calls = {i: 0 for i in self.call_fds}
        self.renegotiations = 0
        self.started = False
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._reset_done = threading.Event()
        self._reset_done.set()
        self._start_queued = False        # a start op submitted and not finished
        self._write_config()
        netdev.call_fds = dict(self.call_fds)
        netdev.attach(self)

    # -- loop side set-up ---------------------------------------------------------------------
    def start_loop_side(self) -> None:
        """Called on the loop once: call-fd readers and the ordered op queue."""
        self._queue = asyncio.Queue()
        self._worker = self.loop.create_task(self._run_ops())
        for i, fd in self.call_fds.items():
            self.loop.add_reader(fd, self._on_call, i)
        if self.netdev.connected:
            self._set_link(True)

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
                log.info("%s: vhost-user %s: %s", self.name, op.__name__, e)
            except (VhostUserError, OSError) as e:
                log.warning("%s: vhost-user %s failed: %s", self.name, op.__name__, e)
            except Exception:
                log.exception("%s: %s failed", self.name, op.__name__)
            finally:
                if op == self._op_stop:
                    self._reset_done.set()
                elif op == self._op_start:
                    self._start_queued = False

    def _on_call(self, index: int) -> None:
        try:
            os.eventfd_read(self.call_fds[index])
        except BlockingIOError:
            return
        self.calls[index] += 1
        self.transport.notify_queue(index)

    # -- description ------------------------------------------------------------------------------
    def queue_max_size(self, index: int) -> int:
        return 64 if index == self.ctrl_index else self._qsize

    def device_features(self) -> int:
        backend = self.netdev.backend_features
        offered = self.wanted & ((backend & N.VHOST_NET_BITS) | N.DEVICE_MODEL_BITS)
        if not backend & V.F_VERSION_1:
            offered &= ~V.F_VERSION_1          # the transport then refuses FEATURES_OK
        if not backend & N.F_MQ:
            offered &= ~(N.F_MQ | N.F_CTRL_VQ)
        if self.reneg_mask is not None:
            offered &= self.reneg_mask | N.DEVICE_MODEL_BITS
        return offered

    def _write_config(self) -> None:
        status = N.S_LINK_UP if self.link_up else 0
        N.CONFIG.pack_into(self.config, 0, self.mac, status, self.pairs, self.host_mtu)

    def _set_link(self, up: bool) -> None:
        if up == self.link_up:
            return
        self.link_up = up
        self._write_config()
        self.transport.notify_config()

    # -- driver actions (guest thread, lock held) ----------------------------------------------------
    def features_ok(self, features: int) -> bool:
        if features & N.F_MQ and not features & N.F_CTRL_VQ:
            return False          # §5.1.3.1: MQ requires CTRL_VQ
        return True

    def queue_enabled(self, index: int, queue: QueueConfig) -> None:
        if index == self.ctrl_index:
            self._ctrl_last = 0                    # a freshly enabled ring starts at 0
            self._ctrl_packed.reset()
        else:
            self._packed_bases.pop(index, None)    # a fresh ring
            self.transport.kick_eventfd(index)     # kicks go straight to the back-end

    def driver_ok(self) -> None:
        self.active_pairs = 1
        self._start_queued = True
        self._submit(self._op_start)

    def reset(self):
        self.reneg_mask_applied = self.reneg_mask
        # a start still queued or in flight counts as started: its rings
        # must be stopped once it is done, before the driver re-uses them
        if not self.started and not self._start_queued and self._reset_done.is_set():
            return None
        self._reset_done.clear()
        self._submit(self._op_stop)
        return self._reset_done.is_set

    def queue_notify(self, index: int) -> None:
        if index == self.ctrl_index:
            self._serve_ctrl()

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
        if not self.netdev.connected or not self.transport.status & 0x4 \
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

    # -- back-end events (loop) --------------------------------------------------------------------------
    async def backend_ready(self) -> None:
        """Connected again (or for the first time, late): link up, rings back."""
        self._set_link(True)
        if self.transport.status & 0x4:
            self._start_queued = True
            self._submit(self._op_start)

    def backend_lost(self) -> None:
        self.started = False
        self._reset_done.set()
        self._set_link(False)

    def backend_features_changed(self, features: int) -> None:
        """The vhost-pci back-end's driver negotiated ``features``: our guest
        must renegotiate with no more than those (the seed's rule)."""
        self.reneg_mask = features
        acked = self.transport.guest_features
        if acked and acked & N.VHOST_NET_BITS & ~features:
            self.renegotiations += 1
            self.transport.set_needs_reset()

    # -- control queue (guest thread) ------------------------------------------------------------
    def _serve_ctrl(self) -> None:
        q = self.transport.queues[self.ctrl_index]
        if not q.enable:
            return
        try:
            if self.transport.guest_features & V.F_RING_PACKED:
                self._serve_ctrl_packed(q)
            else:
                self._serve_ctrl_ring(q)
        except GuestMemoryError as e:       # rings outside RAM: the guest's error, not ours
            self.transport.errors.record("ctrl-queue", f"control queue: {e}")

    def _serve_ctrl_packed(self, q: QueueConfig) -> None:
        def command(readable: bytes) -> int:
            if len(readable) < 2:
                return N.CTRL_ERR
            cls, cmd = N.CTRL_HDR.unpack_from(readable)
            return self._ctrl_apply(cls, cmd, readable[2:])
        served = self._ctrl_packed.serve(
            q, command, lambda why: self.transport.errors.record("ctrl-command", why))
        if served:
            self.transport.notify_queue(self.ctrl_index)

    def _serve_ctrl_ring(self, q: QueueConfig) -> None:
        avail_idx = int.from_bytes(self.ram.read(q.driver + RING_IDX, 2), "little")
        last = self._ctrl_last
        used_idx = int.from_bytes(self.ram.read(q.device + RING_IDX, 2), "little")
        served = 0
        while last != avail_idx and served < q.size:
            entry = q.driver + RING_ENTRIES + 2 * (last % q.size)
            head = int.from_bytes(self.ram.read(entry, 2), "little")
            last = (last + 1) & 0xFFFF
            written = self._ctrl_command(q, head)
            elem = q.device + RING_ENTRIES + USED_ELEM.size * (used_idx % q.size)
            self.ram.write(elem, USED_ELEM.pack(head, written))
            used_idx = (used_idx + 1) & 0xFFFF
            served += 1
        self._ctrl_last = last
        if served:
            # one aligned 16-bit store for used->idx
            self.ram.view(q.device + RING_IDX, 2, dtype="<u2")[0] = used_idx
            self.transport.notify_queue(self.ctrl_index)

    def _ctrl_command(self, q: QueueConfig, head: int) -> int:
        """One command chain: {class, cmd} + data (readable), ack (writable)."""
        readable, ack_addr, i, seen = b"", None, head, 0
        if head >= q.size:
            self.transport.errors.record("ctrl-command", f"control command head {head} >= {q.size}")
            return 0
        try:
            while seen < q.size and i < q.size:
                addr, length, flags, nxt = DESC.unpack(self.ram.read(q.desc + DESC_SIZE * i,
                                                                     DESC_SIZE))
                seen += 1
                if flags & DESC_F_WRITE:
                    ack_addr = addr
                elif len(readable) < 256:
                    readable += self.ram.read(addr, min(length, 256))
                if not flags & DESC_F_NEXT:
                    break
                i = nxt
            status = N.CTRL_ERR
            if len(readable) >= 2:
                cls, cmd = N.CTRL_HDR.unpack_from(readable)
                status = self._ctrl_apply(cls, cmd, readable[2:])
            if ack_addr is not None:
                self.ram.write(ack_addr, bytes([status]))
                return 1
        except GuestMemoryError as e:    # guest-supplied addresses: never fatal
            self.transport.errors.record("ctrl-command", f"control command: {e}")
        return 0

    def _ctrl_apply(self, cls: int, cmd: int, data: bytes) -> int:
        if cls == N.CTRL_MQ and cmd == N.CTRL_MQ_VQ_PAIRS_SET and len(data) >= 2:
            pairs = int.from_bytes(data[:2], "little")
            if not 1 <= pairs <= self.pairs:
                return N.CTRL_ERR
            self.active_pairs = pairs
            self._submit(self._op_pairs)
            return N.CTRL_OK
        if cls in (N.CTRL_RX, N.CTRL_MAC, N.CTRL_VLAN, N.CTRL_ANNOUNCE):
            return N.CTRL_OK            # no filtering in emu: every frame is delivered
        return N.CTRL_ERR

    # -- monitor -----------------------------------------------------------------------------------
    def queue_stats(self) -> dict:
        t = self.transport
        out = {}
        for q in t.queues:
            role = "ctrl" if q.index == self.ctrl_index else ("rx" if q.index % 2 == 0 else "tx")
            out[f"{role}{q.index // 2}" if role != "ctrl" else "ctrl"] = {
                "index": q.index, "enabled": q.enable, "size": q.size,
                "calls": self.calls.get(q.index, 0), "kicks": t.kicks[q.index]}
        return out

    def device_stats(self) -> dict:
        return {"link_up": self.link_up, "renegotiations": self.renegotiations,
                "vhost_user": self.netdev.counters.as_dict()}

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()          # its queue serves this device only
        for fd in self.call_fds.values():
            try:
                self.loop.remove_reader(fd)
            except Exception:
                pass
            os.close(fd)
        self.call_fds = {}
