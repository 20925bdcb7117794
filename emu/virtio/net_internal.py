"""virtio-net-pci whose packets emu moves itself: the device side of its
rings runs in the C engine (:mod:`emu.ring.netport`), between the guest's
queues and its netdev (:mod:`emu.netdev_internal`: a stream socket, or the
other NICs of a hub).  No Python runs per packet.

What the model does beyond :class:`~emu.virtio.net_base.VirtioNet`:

* offers what QEMU 7.2's virtio-net offers a peer without a vnet header
  (MAC, STATUS, MRG_RXBUF, the control queue with RX / VLAN / RX_EXTRA /
  MAC_ADDR / GUEST_OFFLOADS commands, GUEST_ANNOUNCE, INDIRECT_DESC,
  EVENT_IDX, VERSION_1), except RING_RESET (emu resets whole devices only);
  RING_PACKED with ``packed=on`` (the engine's primitives take either format);
* at DRIVER_OK builds the rx0/tx0 device queues (every guest address
  through a region table of guest RAM, their kicks the notify ioeventfds,
  their calls the eventfds of :class:`~emu.virtio.net_base.VirtioNet`) and
  attaches them to the netdev's port; at reset detaches them (a frame
  waiting for RX buffers is dropped, as QEMU purges its queue);
* :meth:`pause` / :meth:`resume` for the machine's stop and cont: the job
  leaves the rings and returns to them; the peer's frames wait in the
  socket meanwhile (nothing is lost), what was staged still goes out;
* the link in the device configuration follows the netdev (a stream that
  ended is a link down);
* ``announce-self`` sends QEMU's RARP frame to the peer through the job
  (never inside another frame of the stream), and asks the driver to
  announce itself where it took GUEST_ANNOUNCE.

Threads: transport callbacks run with the function lock held (guest
thread, or the qtest session on the loop); attaching or detaching waits
only for the data-path thread, which takes no lock.
"""
from __future__ import annotations

import asyncio
import logging

from emu.errors import PeerError
from emu.ring import DeviceQueue, RegionTable
from emu.spec import qemu_net, virtio as V, virtio_net as N
from emu.virtio.device import QueueConfig
from emu.virtio.net_base import VirtioNet

log = logging.getLogger(__name__)

#: QEMU 7.2's virtio-net features for a peer without a vnet header (the
#: device-model bits; the ring bits are added per property)
QEMU_NET_FEATURES = (N.F_MAC | N.F_STATUS | N.F_CTRL_VQ | N.F_CTRL_RX | N.F_CTRL_VLAN
                     | N.F_CTRL_RX_EXTRA | N.F_GUEST_ANNOUNCE | N.F_CTRL_MAC_ADDR
                     | N.F_CTRL_GUEST_OFFLOADS | V.F_VERSION_1)


class InternalNetDevice(VirtioNet):
    def __init__(self, netdev, ram, loop: asyncio.AbstractEventLoop | None, *, mac: bytes,
                 mq: bool = False, mrg_rxbuf: bool = True, event_idx: bool = True,
                 indirect_desc: bool = True, host_mtu: int = 0, queue_size: int = 256,
                 packed: bool = False, name: str = "net0", events=None):
        # mq=on: QEMU offers MQ even with one queue pair (max_virtqueue_pairs 1)
        wanted = (QEMU_NET_FEATURES | (N.F_MRG_RXBUF if mrg_rxbuf else 0)
                  | (N.F_MQ if mq else 0)
                  | (V.F_EVENT_IDX if event_idx else 0)
                  | (V.F_INDIRECT_DESC if indirect_desc else 0)
                  | (V.F_RING_PACKED if packed else 0))
        super().__init__(ram, mac=mac, queue_pairs=1, ctrl_vq=True, wanted=wanted,
                         host_mtu=host_mtu, queue_size=queue_size, name=name, loop=loop,
                         events=events)
        self.netdev = netdev
        self.port = netdev.port
        # QEMU's NIC starts with its link up (VIRTIO_NET_S_LINK_UP at realize),
        # whatever its peer: a stream that ends takes it down
        self.link_up = True
        self._write_config()
        self.table: RegionTable | None = None
        self.live: tuple[DeviceQueue, DeviceQueue] | None = None
        self.paused = False                  # the machine is stopped
        self.queue_errors = 0
        self.announces_sent = 0
        netdev.attach(self)

    # -- description ------------------------------------------------------------------
    def device_features(self) -> int:
        return self.wanted

    def start_loop_side(self) -> None:
        self.start_call_readers()
        self.set_link(self.netdev.connected)

    # -- driver actions (lock held) ----------------------------------------------------------
    def queue_enabled(self, index: int, queue: QueueConfig) -> None:
        super().queue_enabled(index, queue)
        if index != self.ctrl_index:
            self.transport.kick_eventfd(index)     # kicks wake the data-path thread

    def driver_ok(self) -> None:
        t = self.transport
        rxq, txq = t.queues[N.rx_queue(0)], t.queues[N.tx_queue(0)]
        if not (rxq.enable and txq.enable):
            t.errors.record("queue-missing", "DRIVER_OK without rx0 and tx0 set up: no data path")
            return
        if self.table is None:
            self.table = RegionTable(self.ram)
        features = t.guest_features
        try:
            rx, tx = (DeviceQueue.from_gpa(self.table, q.size, q.desc, q.driver, q.device,
                                           features=features, kick_fd=t.kick_eventfd(q.index),
                                           call_fd=self.call_fds[q.index],
                                           name=f"{self.name}.q{q.index}")
                      for q in (rxq, txq))
        except PeerError as e:
            # rings outside guest RAM: the driver's error, the device waits for a reset
            self.queue_errors += 1
            t.errors.record("queue-outside-ram", f"data queues: {e}")
            t.set_needs_reset()
            return
        self.port.pause_rings()
        self.port.attach(tx, rx)
        self.live = (rx, tx)
        if not self.paused:
            self.port.resume_rings()

    def reset(self):
        self.reset_common()
        if self.live is not None:
            self.port.pause_rings()
            self.port.detach()
            self.live = None
            if not self.paused:
                self.port.resume_rings()
        return None

    # -- the machine's stop and cont ------------------------------------------------------------
    def pause(self) -> None:
        """The machine stops: return once the data path is out of the rings."""
        self.paused = True
        self.port.pause_rings()

    def resume(self) -> None:
        self.paused = False
        self.port.resume_rings()

    # -- the netdev ------------------------------------------------------------------------------
    def announce(self) -> bool:
        """QEMU's qemu_announce_self_iter for this NIC: the RARP frame to
        the peer, then the driver's own announce (GUEST_ANNOUNCE)."""
        if self.netdev.send_raw(qemu_net.announce_frame(self.mac)):
            self.announces_sent += 1
        else:
            log.info("%s: announce frame not queued (the data path is busy)", self.name)
        return super().announce()

    # -- monitor --------------------------------------------------------------------------------
    def queue_stats(self) -> dict:
        out = super().queue_stats()
        if self.live is not None:
            for (qname, q) in (("rx0", self.live[0]), ("tx0", self.live[1])):
                st = q.stats()
                out[qname].update({f"device_{k}": st[k] for k in ("packets", "bytes", "drops",
                                                                  "errors", "suppressed",
                                                                  "wakeups")})
                if "last_error" in st:
                    out[qname]["last_error"] = st["last_error"]
        return out

    def device_stats(self) -> dict:
        return {"link_up": self.link_up, "netdev": self.netdev.stats(),
                "announces": self.announces_sent, "queue_errors": self.queue_errors,
                "paused": self.paused}

    def close(self) -> None:
        if self.live is not None:
            self.port.pause_rings()
            self.port.detach()
            self.live = None
        self.close_calls()
