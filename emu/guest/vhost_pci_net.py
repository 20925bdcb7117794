"""The vhost-pci-net driver (VM2's side), written from
``docs/vhost-pci-device.md`` and using only the bus.

It brings up the device's own virtqueues like any virtio driver, maps the
peer-memory window (BAR2) and the metadata page (BAR4) as a Linux driver
``ioremap``\\ s prefetchable BARs, and turns the metadata into C engine
objects: a :class:`~emu.ring.RegionTable` of the peer's regions *inside the
window*, and a :class:`~emu.ring.DeviceQueue` per ready peer vring (the
driver is the device side of VM1's rings: that is vhost-pci).  Doorbells
are the ioeventfds the bus exposes at BAR0 + 0x3800 + 4i; in interrupt mode
each peer vring gets an MSI-X vector for the peer's kicks.

Window safety, the driver's half: on every config interrupt the app stops
touching the peer (its pump is stopped), the driver re-reads the metadata,
acknowledges the generation it saw, and the app starts again on what is
valid now.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from emu import ratelimit, ring
from emu.guest.dma import DmaPool
from emu.guest.pci import DriverError, PCIDevice
from emu.guest.taps import tap
from emu.guest.virtio_pci import DeviceLifecycle, VirtioPCIDriver
from emu.spec import vhost_pci_net as S, virtio as V, virtio_net as N, virtio_pci
from emu.spec import virtio_ring as R, virtio_ring_packed as P
from emu.spec.vhost_pci_net import (CFG_DRIVER_ACK, CFG_MAC, CFG_MAX_PAIRS, CFG_PEER_VQ_MAX,
                                    CFG_VQ_BASE, CFG_VQ_SELECT, CFG_VQ_VECTOR, METADATA_BAR,
                                    M_GENERATION, PS_CONNECTED, PS_MEM_READY, WINDOW_BAR)
from emu.spec.virtio import NO_VECTOR, STATUS_NEEDS_RESET

log = logging.getLogger(__name__)

# peer vrings of either format; own queues packed too when the device offers it
SUPPORTED = S.FEATURES | V.F_RING_PACKED


def matches(dev: PCIDevice) -> bool:
    return dev.vendor_id == virtio_pci.PCI_VENDOR_ID and dev.device_id == S.PCI_DEVICE_ID


@dataclass(frozen=True)
class PeerVring:
    index: int
    num: int
    base: int
    enabled: bool
    ready: bool
    epoch: int             # bumped by the device at every (re)start of the vring
    desc: int
    avail: int             # packed: the driver event suppression area
    used: int              # packed: the device event suppression area
    packed: bool = False   # the vring's format (metadata vring[i].format)


@dataclass(frozen=True)
class PeerView:
    """One consistent read of the metadata page."""
    generation: int
    state: int
    features: int
    protocol_features: int
    mac: bytes
    mtu: int
    regions: tuple          # (gpa, size, window_offset)
    vrings: tuple           # PeerVring per index

    @property
    def mem_ready(self) -> bool:
        return bool(self.state & PS_CONNECTED and self.state & PS_MEM_READY)

    def vring(self, index: int) -> PeerVring | None:
        if index < len(self.vrings) and self.vrings[index].ready and self.vrings[index].num:
            return self.vrings[index]
        return None


class VhostPciNetDriver(DeviceLifecycle):
    def __init__(self, dev: PCIDevice, ram, dma: DmaPool, *, features: int = SUPPORTED,
                 queue_size: int = 256, buf_size: int = 2048, layout: int = 0,
                 msix: bool = True, name: str = "vhost-pci-net"):
        self.dev = dev
        self.ram = ram
        self.dma = dma
        self.want = features & SUPPORTED
        self.queue_size = queue_size
        self.buf_size = buf_size
        self.layout = layout
        self.use_msix = msix
        self.name = name
        self.vp = VirtioPCIDriver(dev)
        self.features = 0
        self.mac = b""
        self.pairs = 1
        self.peer_vq_max = 0
        self.rx: list[ring.DriverQueue] = []      # our own queues, driver side
        self.tx: list[ring.DriverQueue] = []
        self.own_rx_dev: list[ring.DeviceQueue] = []   # ... and their device side
        self.own_tx_dev: list[ring.DeviceQueue] = []
        self.own_table: ring.RegionTable | None = None
        self.peer_table = ring.RegionTable()
        self.peer: PeerView | None = None
        self.window = None
        self.metadata = None
        self.vectors = []
        self.config_fd: int | None = None
        self.intx = False
        self._areas: dict[int, tuple] = {}
        self.acked = 0
        self.resets = 0
        self.stale_reads = 0
        self.taps = []      # host-side captures (filter-dump), set by the guest program
        self.live_peer: dict[int, tuple] = {}                 # index -> (key, DeviceQueue)
        self.peer_totals: dict[int, dict] = {}                # stats of earlier ones

    # -- bring-up ------------------------------------------------------------------------------------
    def start(self) -> None:
        vp = self.vp
        self.features = vp.negotiate(self.want)
        self.mac = vp.read_config(CFG_MAC, 6)
        self.pairs = max(1, vp.read_config_struct("<H", CFG_MAX_PAIRS)[0])
        self.peer_vq_max = vp.read_config_struct("<H", CFG_PEER_VQ_MAX)[0]
        nq = 2 * self.pairs
        if self.use_msix and not self.vectors:
            try:
                self.vectors = self.dev.enable_msix()
            except DriverError as e:
                log.info("%s: no MSI-X (%s), using INTx", self.name, e)
        if self.vectors:
            vp.set_config_vector(0)
            self.config_fd = self.vectors[0].eventfd
        else:
            self.intx = True
            self.config_fd = self.dev.intx_eventfd()
        self.window = self.dev.map_bar(WINDOW_BAR)
        self.metadata = self.dev.map_bar(METADATA_BAR)
        self.own_table = ring.RegionTable(self.ram)
        self.rx, self.tx, self.own_rx_dev, self.own_tx_dev = [], [], [], []
        for pair in range(self.pairs):
            for index, lst, dlst in ((N.rx_queue(pair), self.rx, self.own_rx_dev),
                                     (N.tx_queue(pair), self.tx, self.own_tx_dev)):
                drv, devq = self._own_queue(index)
                lst.append(drv)
                dlst.append(devq)
        vp.driver_ok()
        for q in self.rx:
            q.rx_refill()
        self.refresh()
        self.ack()          # from now on the device waits for us before taking anything away

    def _own_queue(self, index: int):
        num = self.queue_size
        if index not in self._areas:          # room for either format
            ring_bytes = R.ring_layout(0, num)[3]
            base = self.dma.alloc(ring_bytes)
            nslots = num // 2 if self.layout == 1 else num
            bufs = self.dma.alloc(nslots * self.buf_size)
            ind = self.dma.alloc(32 * nslots) if self.layout == 2 else 0
            self._areas[index] = (base, ring_bytes, bufs, ind)
        base, ring_bytes, bufs, ind = self._areas[index]
        packed = bool(self.features & V.F_RING_PACKED)
        desc, avail, used, _ = (P if packed else R).ring_layout(base, num)
        self.ram.fill(desc, ring_bytes)
        info = self.vp.setup_queue(index, desc, avail, used, size=num)
        drv = ring.DriverQueue(self.ram, info.size, desc, avail, used, bufs, self.buf_size,
                               layout=self.layout, ind_gpa=ind, features=self.features,
                               name=f"{self.name}.q{index}")
        devq = ring.DeviceQueue.from_gpa(self.own_table, info.size, desc, avail, used,
                                         features=self.features, name=f"{self.name}.own{index}")
        return drv, devq

    # -- the peer ----------------------------------------------------------------------------------------
    def read_metadata(self, retries: int = 1000) -> PeerView:
        """A consistent copy of the metadata (sequence lock)."""
        view = self.metadata.view
        for _ in range(retries):
            g1 = int.from_bytes(view[M_GENERATION:M_GENERATION + 4], "little")
            if g1 & 1:
                time.sleep(0)
                continue
            page = bytes(view[:self.metadata.length])
            g2 = int.from_bytes(view[M_GENERATION:M_GENERATION + 4], "little")
            if g1 == g2:
                return self._parse(page)
            self.stale_reads += 1
        raise DriverError(f"{self.name}: metadata generation never settled")

    def _parse(self, page: bytes) -> PeerView:
        (magic, version, gen, state, feats, pfeats, mac, mtu, nregions, nvrings,
         wsize) = S.HEADER.unpack_from(page)
        if magic != S.MAGIC:
            raise DriverError(f"{self.name}: metadata magic 0x{magic:08x}")
        nregions = min(nregions, S.MAX_REGIONS)
        nvrings = min(nvrings, self.peer_vq_max)
        regions = []
        for i in range(nregions):
            gpa, size, woff, _ = S.REGION.unpack_from(page, S.region_at(i))
            # a region the window does not hold is the device's bug: skip it
            if size and woff + size <= self.window.length:
                regions.append((gpa, size, woff))
        vrings = []
        for i in range(nvrings):
            num, base, en, rdy, epoch, desc, avail, used, fmt, *_ = S.VRING.unpack_from(
                page, S.vring_at(i))
            vrings.append(PeerVring(i, num, base, bool(en), bool(rdy), epoch, desc, avail, used,
                                    fmt == S.FORMAT_PACKED))
        return PeerView(gen, state, feats, pfeats, mac, mtu, tuple(regions), tuple(vrings))

    def refresh(self) -> PeerView:
        """Re-read the metadata and reload the peer region table.  Call only
        while nothing uses the peer queues (the app is stopped)."""
        self.peer = self.read_metadata()
        if self.peer.mem_ready:
            base = self.window.host_addr
            self.peer_table.update([(g, s, base + o) for g, s, o in self.peer.regions])
        else:
            self.peer_table.update([])
        return self.peer

    def ack(self) -> None:
        """Tell the device we no longer use anything older than what we read."""
        if self.peer is not None:
            self.vp.config_write(CFG_DRIVER_ACK, 4, self.peer.generation)
            self.acked = self.peer.generation

    def peer_queue(self, index: int, mode: str = "poll") -> ring.DeviceQueue | None:
        """The device side of the peer's vring ``index``, or None if not ready.

        The same object is returned while the vring, its epoch and the
        peer's memory layout are unchanged: an app rebuilt after an
        unrelated config change carries on where it was (last_avail_idx
        lives in the C queue), instead of restarting from SET_VRING_BASE."""
        p = self.peer
        if p is None or not p.mem_ready:
            self._drop_peer(index)
            return None
        v = p.vring(index)
        if v is None:
            self._drop_peer(index)
            return None
        if not v.enabled:
            # SET_VRING_ENABLE 0: a disabled net ring carries nothing.  The
            # queue (and its position) is kept for when it is enabled again.
            return None
        key = (v.num, v.epoch, v.desc, v.avail, v.used, v.base, v.packed, p.features, p.regions,
               mode)
        cached = self.live_peer.get(index)
        if cached is not None and cached[0] == key:
            return cached[1]
        self._drop_peer(index)
        call = self.dev.bus.ioeventfd_for(self.dev.bars[0].address + S.doorbell(index), 4)
        kick = self._kick_vector(index) if mode == "interrupt" else -1
        # the format is the vring's (the metadata), whatever the features say
        features = p.features | V.F_RING_PACKED if v.packed else p.features & ~V.F_RING_PACKED
        start = v.base
        if v.packed:
            # a packed ring keeps no index in memory: the device keeps where a
            # driver left it this epoch (peer_vq_base: this one before a
            # re-map, the one before a reboot), else the vring's base
            self.vp.config_write(CFG_VQ_SELECT, 2, index)
            start = self.vp.read_config_struct("<I", CFG_VQ_BASE)[0] & 0xFFFF
        try:
            q = ring.DeviceQueue.from_gpa(self.peer_table, v.num, v.desc, v.avail, v.used,
                                          features=features, last_avail_idx=start,
                                          call_fd=call if call is not None else -1,
                                          kick_fd=kick, name=f"{self.name}.peer{index}")
        except Exception as e:       # the peer's addresses are untrusted
            ratelimit.DEFAULT.log(log, logging.WARNING, (self.name, "peer-vring"),
                                  "%s: peer vring %d unusable: %s", self.name, index, e)
            return None
        if q.used_idx != q.last_avail_idx:
            # a driver that rebooted while the peer's split rings ran on: this
            # device side completes in order, so it resumes where the used
            # ring says (a fresh ring: used idx == SET_VRING_BASE; packed:
            # peer_vq_base above)
            q.reset(q.used_idx)
        # the peer's TX ring carries frames into this VM, its RX ring frames out
        tap(q, self.taps, "rx" if index % 2 else "tx")
        self.live_peer[index] = (key, q)
        return q

    def _drop_peer(self, index: int) -> None:
        """Forget a peer queue (its counters go to the totals)."""
        entry = self.live_peer.pop(index, None)
        if entry is None:
            return
        tot = self.peer_totals.setdefault(index, {})
        for k, v in entry[1].stats().items():
            tot[k] = tot.get(k, 0) + v if isinstance(v, int) else v

    def _kick_vector(self, index: int) -> int:
        """Program an MSI-X vector for the peer's kicks on vring ``index``."""
        entry = 1 + 2 * self.pairs + index
        if entry >= len(self.vectors):
            return -1
        self.vp.config_write(CFG_VQ_SELECT, 2, index)
        self.vp.config_write(CFG_VQ_VECTOR, 2, self.vectors[entry].entry)
        return self.vectors[entry].eventfd

    def polling(self) -> None:
        """Back to polling: no kick vectors."""
        for i in range(self.peer_vq_max):
            self.vp.config_write(CFG_VQ_SELECT, 2, i)
            self.vp.config_write(CFG_VQ_VECTOR, 2, NO_VECTOR)

    # -- events ---------------------------------------------------------------------------------------------
    def config_event(self) -> str | None:
        if self.intx and not self.vp.read_isr() & 0x2:
            return None
        if self.vp.status & STATUS_NEEDS_RESET:
            return "needs-reset"
        return "peer"

    def report_positions(self) -> None:
        """Where each packed peer vring's device side is (``peer_vq_base``):
        a packed ring keeps no index in memory, so the device asks us for
        GET_VRING_BASE.  Only while nothing moves them (the app stopped)."""
        for index, (_, q) in self.live_peer.items():
            if q.packed:
                self.vp.config_write(CFG_VQ_SELECT, 2, index)
                self.vp.config_write(CFG_VQ_BASE, 4, q.last_avail_idx)

    def halt(self) -> None:
        """A reboot forgets this driver: the device keeps our packed peer
        vrings' positions for the next one (the split rings' are in memory)."""
        self.report_positions()

    def handle_config(self, app) -> bool:
        """The peer changed: stop using it, say where we left its packed
        vrings, re-read, acknowledge, go on."""
        was = app.running
        if was:
            app.stop()
        self.report_positions()
        self.refresh()
        self.ack()
        if was:
            app.start()
        return True

    def reinit(self) -> None:
        super().reinit()
        self.ack()

    def queue_stats(self) -> dict:
        out = {}
        for index in sorted(set(self.peer_totals) | set(self.live_peer)):
            st = dict(self.peer_totals.get(index, {}))
            if index in self.live_peer:
                for k, v in self.live_peer[index][1].stats().items():
                    st[k] = st.get(k, 0) + v if isinstance(v, int) else v
            st["calls"] = st.pop("notifies", 0)      # we signal the peer's call eventfd
            out[f"peer{index}"] = st
        for i, q in enumerate(self.rx):
            out[f"rx{i}"] = q.stats()
        for i, q in enumerate(self.tx):
            out[f"tx{i}"] = q.stats()
        return out

