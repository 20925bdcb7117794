"""What every virtio-net device model of emu shares, whatever moves its
packets (a vhost-user back-end, :mod:`emu.virtio.virtio_net`; emu's own C
data path, :mod:`emu.virtio.net_internal`):

* the queues (one rx/tx pair per queue pair, then the control queue,
  there whether CTRL_VQ is offered or not, as in QEMU) and the device configuration (mac, status, max_virtqueue_pairs,
  mtu; its size follows the features offered, §5.1.4, as QEMU sizes it);
* the link state in ``status`` (LINK_UP) and the announce bit
  (VIRTIO_NET_S_ANNOUNCE, set by ``announce-self`` when the driver took
  GUEST_ANNOUNCE and CTRL_VQ, cleared by its ANNOUNCE_ACK), each change
  raising a configuration interrupt;
* the control queue, served here on the kick (guest thread, lock held),
  split or packed (:mod:`emu.virtio.packed_ctrl`) as the driver negotiated:
  MQ pair count, RX mode / MAC / VLAN tables (accepted: emu does not
  filter, every frame is delivered), guest offloads (none to set),
  ANNOUNCE_ACK;
* the call eventfds a data path signals (the C engine writes them) and
  their readers on the event loop, which raise the queue's interrupt.

A subclass says what it offers (``device_features``) and moves the
packets: ``driver_ok``, ``reset``, ``queue_enabled`` and its own link.
"""
from __future__ import annotations

import asyncio
import logging
import os

from emu import eventfd as efd
from emu.errors import GuestMemoryError
from emu.spec import virtio as V, virtio_net as N
from emu.spec.virtio_ring import (DESC, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE, RING_ENTRIES,
                                  RING_IDX, USED_ELEM)
from emu.virtio.device import QueueConfig, VirtioDevice
from emu.virtio.packed_ctrl import PackedCtrlRing

log = logging.getLogger(__name__)

CTRL_QUEUE_SIZE = 64            # QEMU's control queue size
CTRL_MAX_READ = 256             # bytes of one command read (the longest: a MAC table)


eventfd = efd.new        # a call eventfd of the device's own (non-blocking, close-on-exec)


class VirtioNet(VirtioDevice):
    device_id = N.VIRTIO_ID_NET
    pci_class = 0x020000

    def __init__(self, ram, *, mac: bytes, queue_pairs: int = 1, mq: bool = False, ctrl_vq: bool,
                 wanted: int, host_mtu: int = 0, queue_size: int = 256, name: str = "net0",
                 loop: asyncio.AbstractEventLoop | None = None, events=None):
        self.mac = mac
        self.pairs = queue_pairs
        self.mq = mq and queue_pairs > 1
        # the control queue always exists (QEMU's virtio_net_device_realize adds
        # it whatever the features: libqos sets up 2 * pairs + 1 queues), and is
        # offered (CTRL_VQ) with ctrl_vq or mq
        self.has_ctrl = ctrl_vq or self.mq
        self.num_queues = 2 * queue_pairs + 1
        self.ctrl_index = 2 * queue_pairs
        self.host_mtu = host_mtu
        self.wanted = (wanted | (N.F_MTU if host_mtu else 0)
                       | (N.F_MQ | N.F_CTRL_VQ if self.mq else 0))
        super().__init__(N.config_size(self.wanted))
        self.ram = ram
        self.name = name
        self.loop = loop
        self.emit = events or (lambda name, data: None)
        self._qsize = queue_size
        self.link_up = False
        self.announce_pending = False
        self.announces = 0
        self.active_pairs = 1
        self._ctrl_last = 0            # control queue: next avail index to serve
        self._ctrl_packed = PackedCtrlRing(ram, CTRL_MAX_READ)     # ... or its place in a packed ring
        self.call_fds = {i: eventfd() for i in range(2 * queue_pairs)}
        self.calls = {i: 0 for i in self.call_fds}
        self.ctrl_commands = 0
        self._write_config()

    # -- description ------------------------------------------------------------------------
    def queue_max_size(self, index: int) -> int:
        return CTRL_QUEUE_SIZE if index == self.ctrl_index else self._qsize

    def legacy_features(self) -> int:
        # (§6.3: ANY_LAYOUT is the legacy driver's promise the engine never
        # needed: it walks any chain layout; BAD_FEATURE as QEMU shows it)
        return (self.device_features() & 0xFFFFFFFF) | V.F_ANY_LAYOUT | V.F_BAD_FEATURE

    def bad_features(self) -> int:
        """QEMU's virtio_net_bad_features: the MAC and nothing that changes the rings."""
        return N.F_MAC

    def features_ok(self, features: int) -> bool:
        if features & N.F_MQ and not features & N.F_CTRL_VQ:
            return False          # §5.1.3.1: MQ requires CTRL_VQ
        return True

    # -- configuration ----------------------------------------------------------------------
    def _write_config(self) -> None:
        status = (N.S_LINK_UP if self.link_up else 0) | (N.S_ANNOUNCE if self.announce_pending
                                                         else 0)
        full = N.CONFIG.pack(self.mac, status, self.pairs, self.host_mtu)
        self.config[:] = full[:len(self.config)]

    def set_link(self, up: bool) -> None:
        """The link as the data path sees it (loop or any thread)."""
        if up == self.link_up:
            return
        self.link_up = up
        self._config_changed()

    def _config_changed(self) -> None:
        self._write_config()
        if self._transport is not None:
            self.transport.notify_config()

    def announce(self) -> bool:
        """``announce-self`` reached this NIC (QEMU's virtio_net_announce):
        with GUEST_ANNOUNCE and CTRL_VQ negotiated, ask the driver to
        announce itself too.  True if it was asked."""
        f = self.transport.guest_features if self._transport is not None else 0
        if not (f & N.F_GUEST_ANNOUNCE and f & N.F_CTRL_VQ):
            return False
        self.announce_pending = True
        self.announces += 1
        self._config_changed()
        return True

    # -- calls (the data path signals them; read on the loop) ---------------------------------
    def start_call_readers(self) -> None:
        for i, fd in self.call_fds.items():
            self.loop.add_reader(fd, self._on_call, i)

    def _on_call(self, index: int) -> None:
        # a vhost-user back-end shares these: it may make one blocking or
        # read it dry after the loop saw it readable (emu.eventfd: never blocks)
        if not efd.drain(self.call_fds[index]):
            return
        self.calls[index] += 1
        self.transport.notify_queue(index)

    def close_calls(self) -> None:
        for fd in self.call_fds.values():
            try:
                if self.loop is not None and not self.loop.is_closed():
                    self.loop.remove_reader(fd)
            except Exception:
                pass
            os.close(fd)
        self.call_fds = {}

    # -- control queue (guest thread, lock held) ------------------------------------------------
    def queue_enabled(self, index: int, queue: QueueConfig) -> None:
        if index == self.ctrl_index:
            self._ctrl_last = 0                    # a freshly enabled ring starts at 0
            self._ctrl_packed.reset()

    def queue_notify(self, index: int) -> None:
        if index == self.ctrl_index:
            self._serve_ctrl()

    def reset_common(self) -> None:
        """What a driver reset clears here (the subclass's reset calls it)."""
        self.active_pairs = 1
        self._ctrl_last = 0
        self._ctrl_packed.reset()
        if self.announce_pending:
            self.announce_pending = False
            self._write_config()

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
            self.ctrl_commands += 1
            return self._ctrl_apply(cls, cmd, readable[2:])
        served = self._ctrl_packed.serve(
            q, command, lambda why: self.transport.errors.record("ctrl-command", why))
        if served:
            self.transport.notify_queue(self.ctrl_index)

    def _serve_ctrl_ring(self, q: QueueConfig) -> None:
        ram = self.ram
        avail_idx = int.from_bytes(ram.read(q.driver + RING_IDX, 2), "little")
        last = self._ctrl_last
        used_idx = int.from_bytes(ram.read(q.device + RING_IDX, 2), "little")
        served = 0
        while last != avail_idx and served < q.size:
            entry = q.driver + RING_ENTRIES + 2 * (last % q.size)
            head = int.from_bytes(ram.read(entry, 2), "little")
            last = (last + 1) & 0xFFFF
            written = self._ctrl_command(q, head)
            elem = q.device + RING_ENTRIES + USED_ELEM.size * (used_idx % q.size)
            ram.write(elem, USED_ELEM.pack(head, written))
            used_idx = (used_idx + 1) & 0xFFFF
            served += 1
        self._ctrl_last = last
        if served:
            # one aligned 16-bit store for used->idx
            ram.view(q.device + RING_IDX, 2, dtype="<u2")[0] = used_idx
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
                elif len(readable) < CTRL_MAX_READ:
                    readable += self.ram.read(addr, min(length, CTRL_MAX_READ))
                if not flags & DESC_F_NEXT:
                    break
                i = nxt
            status = N.CTRL_ERR
            if len(readable) >= 2:
                cls, cmd = N.CTRL_HDR.unpack_from(readable)
                status = self._ctrl_apply(cls, cmd, readable[2:])
                self.ctrl_commands += 1
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
            self.pairs_changed()
            return N.CTRL_OK
        if cls == N.CTRL_ANNOUNCE:
            # (§5.1.6.5.4: the driver acks VIRTIO_NET_S_ANNOUNCE; QEMU refuses
            # an ack nothing asked for)
            if cmd != N.CTRL_ANNOUNCE_ACK or not self.announce_pending:
                return N.CTRL_ERR
            self.announce_pending = False
            self._write_config()
            return N.CTRL_OK
        if cls == N.CTRL_GUEST_OFFLOADS:
            # (§5.1.6.5.6.1: "The driver MUST NOT enable an offload for which the
            # appropriate feature has not been negotiated"): emu offers none
            if cmd != N.CTRL_GUEST_OFFLOADS_SET or len(data) < 8 or int.from_bytes(data[:8],
                                                                                   "little"):
                return N.CTRL_ERR
            return N.CTRL_OK
        if cls in (N.CTRL_RX, N.CTRL_MAC, N.CTRL_VLAN):
            return N.CTRL_OK            # no filtering in emu: every frame is delivered
        return N.CTRL_ERR

    def pairs_changed(self) -> None:
        """The driver set ``active_pairs`` (control queue, lock held)."""

    # -- monitor ---------------------------------------------------------------------------------
    def queue_stats(self) -> dict:
        t = self.transport
        out = {}
        for q in t.queues:
            role = "ctrl" if q.index == self.ctrl_index else ("rx" if q.index % 2 == 0 else "tx")
            out[f"{role}{q.index // 2}" if role != "ctrl" else "ctrl"] = {
                "index": q.index, "enabled": q.enable, "size": q.size,
                "calls": self.calls.get(q.index, 0), "kicks": t.kicks[q.index]}
        return out
