"""A virtio-net driver (the guest side of ``virtio-net-pci``), as Linux's
``virtio_net`` sets the device up, using only the bus: probe by ID,
negotiate, rings and buffers in its own RAM, MSI-X (or INTx), DRIVER_OK.
The data path is the C engine's driver side (:class:`emu.ring.DriverQueue`);
the apps in :mod:`emu.guest.apps` decide what flows.
"""
from __future__ import annotations

import logging

from emu import ring
from emu.guest.dma import DmaPool
from emu.guest.taps import tap
from emu.guest.pci import DriverError, PCIDevice
from emu.guest.virtio_pci import DeviceLifecycle
from emu.guest.virtio_transport import transport
from emu.spec import virtio as V, virtio_net as N, virtio_pci, virtio_ring as R
from emu.spec import virtio_ring_packed as P
from emu.spec.virtio import NO_VECTOR, STATUS_NEEDS_RESET

log = logging.getLogger(__name__)

PCI_DEVICE_ID = virtio_pci.pci_device_id(N.VIRTIO_ID_NET)
PCI_DEVICE_ID_TRANSITIONAL = virtio_pci.transitional_device_id(N.VIRTIO_ID_NET)
# what this driver can use; the app may mask some off
SUPPORTED = (V.F_VERSION_1 | N.F_MAC | N.F_STATUS | N.F_MRG_RXBUF | V.F_EVENT_IDX
             | V.F_INDIRECT_DESC | N.F_MTU | N.F_MQ | N.F_CTRL_VQ | V.F_RING_PACKED)


def matches(dev: PCIDevice) -> bool:
    """A virtio-net function: modern-only (0x1041), or transitional /
    legacy (0x1000 with subsystem id 1, §4.1.2.1)."""
    if dev.vendor_id != virtio_pci.PCI_VENDOR_ID:
        return False
    return dev.device_id == PCI_DEVICE_ID or (dev.device_id == PCI_DEVICE_ID_TRANSITIONAL
                                              and dev.subsystem_id == N.VIRTIO_ID_NET)


class VirtioNetDriver(DeviceLifecycle):
    """One virtio-net device.  ``features``: what to ask for (masked with
    :data:`SUPPORTED` and the device's offer); ``layout``: descriptor layout
    of this driver's buffers (0 one descriptor like Linux, 1 header+data
    like iPXE, 2 indirect); ``legacy``: drive the legacy interface even
    where the modern one exists (it is used anyway on a device without it)."""

    def __init__(self, dev: PCIDevice, ram, dma: DmaPool, *, features: int = SUPPORTED,
                 queue_size: int = 256, buf_size: int = 2048, tx_buf_size: int | None = None,
                 layout: int = 0, msix: bool = True, legacy: bool = False,
                 name: str = "virtio-net"):
        self.dev = dev
        self.ram = ram
        self.dma = dma
        self.want = features & SUPPORTED
        self.queue_size = queue_size
        self.buf_size = buf_size                    # RX buffers (MRG_RXBUF spreads big frames)
        self.tx_buf_size = tx_buf_size or buf_size  # TX: one buffer holds a whole frame
        self.layout = layout
        self.use_msix = msix
        self.name = name
        self.vp = transport(dev, legacy)
        self.features = 0
        self.mac = b""
        self.pairs = 1
        self.rx: list[ring.DriverQueue] = []
        self.tx: list[ring.DriverQueue] = []
        self.config_fd: int | None = None
        self.intx = False
        self.vectors = []
        self._areas: dict[int, tuple] = {}
        self.resets = 0
        self.taps = []          # host-side captures (filter-dump), set by the guest program

    # -- bring-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        vp = self.vp
        self.features = vp.negotiate(self.want)
        if self.features & N.F_MQ and self.features & N.F_CTRL_VQ:
            self.pairs = max(1, vp.read_config_struct("<H", N.CFG_MAX_PAIRS)[0])
        else:
            self.pairs = 1
        self.mac = vp.read_config(N.CFG_MAC, 6) if self.features & N.F_MAC else b"\x02" + bytes(5)
        nq = 2 * self.pairs + (1 if self.features & N.F_CTRL_VQ else 0)
        if self.use_msix and not self.vectors:
            try:
                self.vectors = self.dev.enable_msix(min(nq + 1, self.dev.msix_table_size()))
            except DriverError as e:
                log.info("%s: no MSI-X (%s), using INTx", self.name, e)
                self.vectors = []
        if self.vectors:
            vp.set_config_vector(0)
            self.config_fd = self.vectors[0].eventfd
        else:
            self.intx = True
            self.config_fd = self.dev.intx_eventfd()
        self.rx, self.tx = [], []
        for pair in range(self.pairs):
            self.rx.append(self._queue(N.rx_queue(pair)))
            self.tx.append(self._queue(N.tx_queue(pair)))
        if self.features & N.F_CTRL_VQ:
            self._ctrl = self._ctrl_queue(2 * self.pairs)
        vp.driver_ok()
        for q in self.rx:
            q.rx_refill()
        if self.pairs > 1 and not self.set_pairs(self.pairs):
            # as Linux does: a device that refuses keeps one pair working
            log.warning("%s: the device did not accept %d queue pairs", self.name, self.pairs)

    def _bufsize(self, index: int) -> int:
        return self.tx_buf_size if index % 2 else self.buf_size

    @property
    def packed(self) -> bool:
        return bool(self.features & V.F_RING_PACKED)

    def _area(self, index: int, num: int):
        """Ring + buffers of queue ``index``, allocated once (room for either
        format: a renegotiation may change it), re-used on reset."""
        if index not in self._areas:
            ring_bytes = R.ring_layout(0, num)[3]          # the larger of the two
            base = self.dma.alloc(ring_bytes)
            nslots = num // 2 if self.layout == 1 else num
            bufs = self.dma.alloc(nslots * self._bufsize(index))
            ind = self.dma.alloc(32 * nslots) if self.layout == 2 else 0
            self._areas[index] = (base, ring_bytes, bufs, ind)
        base, ring_bytes, bufs, ind = self._areas[index]
        d, a, u, _ = (P if self.packed else R).ring_layout(base, num)
        return d, a, u, ring_bytes, bufs, ind

    def _vector(self, index: int) -> int:
        return self.vectors[1 + index].entry if len(self.vectors) > 1 + index else NO_VECTOR

    def _queue(self, index: int) -> ring.DriverQueue:
        num = self.vp.queue_size(index, self.queue_size)
        desc, avail, used, ring_bytes, bufs, ind = self._area(index, num)
        self.ram.fill(desc, ring_bytes)
        vector = self._vector(index)
        info = self.vp.setup_queue(index, desc, avail, used, size=num, vector=vector)
        num = info.size
        irq = self.vectors[1 + index].eventfd if vector != NO_VECTOR else -1
        kick = self.vp.notify_eventfd(index)
        q = ring.DriverQueue(self.ram, num, desc, avail, used, bufs, self._bufsize(index),
                             layout=self.layout, ind_gpa=ind, features=self.features,
                             kick_fd=kick if kick is not None else -1, irq_fd=irq,
                             name=f"{self.name}.q{index}")
        tap(q, self.taps, "tx" if index % 2 else "rx")
        return q

    def _ctrl_queue(self, index: int):
        num = self.vp.queue_size(index, 64)
        desc, avail, used, ring_bytes, bufs, _ = self._area(index, num)
        self.ram.fill(desc, ring_bytes)
        self.vp.setup_queue(index, desc, avail, used, size=num, vector=self._vector(index))
        return {"index": index, "desc": desc, "avail": avail, "used": used, "buf": bufs,
                "num": num, "avail_idx": 0, "used_seen": 0, "pos": 0, "wrap": 1}

    def set_pairs(self, pairs: int, timeout: float = 2.0) -> bool:
        """VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET through the control queue."""
        import time
        c = self._ctrl
        cmd = N.CTRL_HDR.pack(N.CTRL_MQ, N.CTRL_MQ_VQ_PAIRS_SET) + pairs.to_bytes(2, "little")
        self.ram.write(c["buf"], cmd)
        self.ram.write(c["buf"] + 64, b"\xff")
        # chain: command (readable) -> ack (writable)
        done = self._post_ctrl_packed(c, len(cmd)) if self.packed else self._post_ctrl(c, len(cmd))
        self.vp.notify(c["index"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return self.ram.read(c["buf"] + 64, 1) == bytes([N.CTRL_OK])
            time.sleep(0.001)
        return False

    def _post_ctrl(self, c: dict, length: int):
        self.ram.write(c["desc"], R.DESC.pack(c["buf"], length, R.DESC_F_NEXT, 1))
        self.ram.write(c["desc"] + R.DESC_SIZE, R.DESC.pack(c["buf"] + 64, 1, R.DESC_F_WRITE, 0))
        self.ram.write(c["avail"] + R.RING_ENTRIES + 2 * (c["avail_idx"] % c["num"]),
                       (0).to_bytes(2, "little"))
        c["avail_idx"] = (c["avail_idx"] + 1) & 0xFFFF
        self.ram.view(c["avail"] + R.RING_IDX, 2, dtype="<u2")[0] = c["avail_idx"]

        def done() -> bool:
            if int(self.ram.view(c["used"] + R.RING_IDX, 2, dtype="<u2")[0]) == c["used_seen"]:
                return False
            c["used_seen"] = (c["used_seen"] + 1) & 0xFFFF
            return True
        return done

    def _post_ctrl_packed(self, c: dict, length: int):
        """The command's two descriptors at the ring position, the head's
        flags stored last (one aligned 16-bit store)."""
        head, wrap, num = c["pos"], c["wrap"], c["num"]
        second = (head + 1) % num
        wrap2 = wrap ^ 1 if second == 0 else wrap
        self.ram.write(c["desc"] + P.DESC_SIZE * head, P.DESC.pack(c["buf"], length, 0, 0)[:14])
        self.ram.write(c["desc"] + P.DESC_SIZE * second,
                       P.DESC.pack(c["buf"] + 64, 1, 0, 0)[:14])
        flags = lambda pos: self.ram.view(c["desc"] + P.DESC_SIZE * pos + P.DESC_FLAGS, 2,
                                          dtype="<u2")
        flags(second)[0] = P.avail_flags(wrap2) | R.DESC_F_WRITE
        flags(head)[0] = P.avail_flags(wrap) | R.DESC_F_NEXT
        c["pos"], c["wrap"] = (head + 2) % num, (wrap ^ 1 if head + 2 >= num else wrap)
        return lambda: P.is_used(int(flags(head)[0]), wrap)

    # -- events -----------------------------------------------------------------------------------------
    @property
    def link_up(self) -> bool:
        if not self.features & N.F_STATUS:
            return True
        return bool(self.vp.read_config_struct("<H", N.CFG_STATUS)[0] & N.S_LINK_UP)

    def config_event(self) -> str | None:
        """After the config interrupt fired: 'needs-reset', 'link', or None."""
        if self.intx:
            isr = self.vp.read_isr()
            if not isr & V.ISR_CONFIG:
                return None
        if self.vp.status & STATUS_NEEDS_RESET:
            return "needs-reset"
        return "link"

    def queue_stats(self) -> dict:
        out = {}
        for name, qs in (("rx", self.rx), ("tx", self.tx)):
            for i, q in enumerate(qs):
                st = q.stats()
                st["kicks"] = st.pop("notifies", 0)    # we kick the device
                out[f"{name}{i}"] = st
        return out
