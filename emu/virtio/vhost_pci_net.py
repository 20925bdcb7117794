"""vhost-pci-net: a vhost-user back-end presented to VM2 as a PCI device
whose BAR2 *is* the peer's (VM1's) memory.  Register contract:
``docs/vhost-pci-device.md``.

What the device does, and what it leaves to VM2's driver:

* vhost-user (back-end side, :class:`emu.vhost_user.backend.Backend`): the
  peer's memory table is mapped into the fixed peer-memory window (BAR2,
  regions 2 MiB-aligned in gpa order), its vrings are described in the
  metadata BAR (BAR4, guest-physical addresses of the peer), kicks become
  MSI-X vectors the driver chose, doorbells (BAR0 + 0x3800 + 4i) signal the
  peer's call eventfd of vring *i* (an ioeventfd: the driver's C loop writes
  the eventfd directly, as a doorbell write would without a VM exit);
* the driver moves packets itself, between the peer's rings and its own.

Window safety: whenever the device must take something away from the
driver (unmap or re-map memory, stop a vring, drop the peer), it bumps the
metadata generation, raises a config interrupt and waits for the driver to
acknowledge that generation (``driver_ack``) -- its promise that its copy
loop no longer touches what is going.  A driver that does not answer within
``ack_timeout`` gets the window revoked (private zero pages), so a late
access can neither crash emu nor reach the peer.

Doorbell and kick eventfds seen by the driver are stable fd numbers of the
device; the peer's fds are ``dup2``-ed onto them, so a peer's SET_VRING_CALL
swaps the target atomically and the driver never holds a closed fd.
"""
from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
import mmap
import os
import struct
import threading

from emu.errors import RegionTableError
from emu.pci.bar import RamBacking
from emu.pci.errors import GuestAccessError
from emu.spec import virtio as V, virtio_net as N
from emu.spec.virtio import ISR_QUEUE, NO_VECTOR
from emu.virtio.device import VirtioDevice
from emu.virtio.pci import VirtioPCIFunction, VirtioPCILayout
from emu.vhost_user.codec import close_fds
from emu.vhost_user.counters import PeerCounters
from emu.vhost_user.device import BackendDevice
from emu.window import PeerWindow

log = logging.getLogger(__name__)

VIRTIO_ID_VHOST_PCI_NET = 21
PCI_DEVICE_ID = 0x1040 + VIRTIO_ID_VHOST_PCI_NET     # 0x1055

# BAR0 layout (docs/vhost-pci-device.md §2)
DOORBELL_OFFSET = 0x3800
WINDOW_BAR = 2
METADATA_BAR = 4
METADATA_SIZE = 0x2000

# device configuration (§4)
CFG = struct.Struct("<6sHHHIIHHI")
CFG_MAC, CFG_STATUS, CFG_MAX_PAIRS, CFG_PEER_VQ_MAX = 0x00, 0x06, 0x08, 0x0A
CFG_GENERATION, CFG_DRIVER_ACK, CFG_VQ_SELECT, CFG_VQ_VECTOR, CFG_VQ_KICKS = \
    0x0C, 0x10, 0x14, 0x16, 0x18
S_LINK_UP = 1

# metadata (§5)
MAGIC = 0x49435056          # "VPCI"
VERSION = 1
M_MAGIC, M_VERSION, M_GENERATION, M_PEER_STATE = 0x000, 0x004, 0x008, 0x00C
M_FEATURES, M_PROTOCOL_FEATURES, M_MAC, M_MTU = 0x010, 0x018, 0x020, 0x026
M_NREGIONS, M_NVRINGS, M_WINDOW_SIZE = 0x028, 0x02C, 0x030
M_REGIONS, REGION_SIZE, MAX_REGIONS = 0x040, 32, 32
M_VRINGS, VRING_SIZE = 0x440, 40
REGION = struct.Struct("<QQQQ")             # gpa, size, window_offset, reserved
VRING = struct.Struct("<HHBBHQQQQ")         # num, base, enabled, ready, epoch, desc, avail, used, rsvd
PS_CONNECTED, PS_MEM_READY, PS_FEATURES_SET, PS_VHOST_PCI = 1, 2, 4, 8

OWN_FEATURES = V.F_VERSION_1 | N.F_MRG_RXBUF | V.F_INDIRECT_DESC | V.F_EVENT_IDX
MAX_PEER_VQS = (METADATA_SIZE - M_VRINGS) // VRING_SIZE     # what the metadata page holds


@dataclass(frozen=True)
class PeerLimits:
    """What one peer may cost the device (``-device vhost-pci-net``
    properties; docs/security.md).  Beyond a limit a request is refused or
    the connection dropped, counted in query-emu-stats."""

    max_connections: int = 1       # front-ends connected at once: one served, the rest wait
    max_payload: int = 4096        # bytes of one vhost-user message
    max_regions: int = 8           # memory regions (GET_MAX_MEM_SLOTS)
    max_mem: int = 0               # bytes of peer memory mapped at once; 0: the window size
    message_timeout: float = 10.0  # s from the first byte of a message to its last

    def check(self) -> None:
        if self.max_connections < 1 or self.max_regions not in range(1, MAX_REGIONS + 1) \
                or self.max_payload < 12 or self.max_mem < 0 or not self.message_timeout > 0:
            raise ValueError(f"bad peer limits {self}")


class Metadata:
    """The metadata page (BAR4): written by the device under a sequence
    lock (``generation`` odd while updating), read by the driver.  Only the
    generation word needs single aligned stores (it has them); the fields
    are written between its two stores with ``struct.pack_into``, and a
    driver that read while they changed sees an odd or moved generation and
    reads again, so a torn field is never used.  No ring index lives here."""

    def __init__(self, peer_vq_max: int, window_size: int):
        if M_VRINGS + VRING_SIZE * peer_vq_max > METADATA_SIZE:
            raise ValueError(f"peer_vq_max {peer_vq_max} does not fit the metadata page")
        self.mm = mmap.mmap(-1, METADATA_SIZE)
        # 32-bit words (x86: little-endian, as the page's layout); an item store
        # is one aligned 4-byte store, as numpy's was, without importing numpy
        self.u32 = memoryview(self.mm).cast("I")
        self.peer_vq_max = peer_vq_max
        self._lock = threading.Lock()
        struct.pack_into("<II", self.mm, M_MAGIC, MAGIC, VERSION)
        struct.pack_into("<Q", self.mm, M_WINDOW_SIZE, window_size)

    @property
    def generation(self) -> int:
        return int(self.u32[M_GENERATION // 4])

    def update(self, fn) -> int:
        """Run ``fn(mm)`` inside the sequence lock; returns the new (even)
        generation.  Each generation store is one aligned 32-bit store."""
        with self._lock:
            g = self.generation
            self.u32[M_GENERATION // 4] = (g + 1) & 0xFFFFFFFF   # odd: in progress
            fn(self.mm)
            g = (g + 2) & 0xFFFFFFFE
            self.u32[M_GENERATION // 4] = g
            return g

    def close(self) -> None:
        if self.u32 is not None:
            self.u32.release()
        self.u32 = None
        try:
            self.mm.close()
        except BufferError:
            pass


class _WindowMapper:
    """Places the peer's memory table in the window (emu.vhost_user's
    MemoryMapper).  The window holds one table: ``map`` retires the current
    one first; ``unmap`` of a table already replaced does nothing."""

    def __init__(self, dev: "VhostPciNetDevice"):
        self.dev = dev
        self.current = None

    def map(self, specs, fds):
        total, cap = sum(s[1] for s in specs), self.dev.max_mem
        if total > cap:
            close_fds(fds)               # refused before anything changes: the old table stays
            raise RegionTableError(f"memory table of 0x{total:x} bytes exceeds max-mem 0x{cap:x}")
        self.dev._retire_window("memory table replaced")
        self.current = None
        self.current = self.dev.window.map_table(specs, fds, max_regions=MAX_REGIONS)
        return self.current

    def unmap(self, mem) -> None:
        if mem is self.current:
            self.dev._retire_window("memory table dropped")
            self.current = None


class _Peer(BackendDevice):
    """The vhost-user face of the device (kept apart from the virtio face:
    the two interfaces share method names such as ``reset``)."""

    def __init__(self, dev: "VhostPciNetDevice"):
        self.dev = dev

    # negotiation
    def features(self) -> int:
        return self.dev.peer_offer()

    def protocol_features(self) -> int:
        return super().protocol_features()

    def queue_num(self) -> int:
        return self.dev.peer_vq_max // 2

    def set_features(self, features: int) -> None:
        self.dev._peer_features(features)

    # connection
    def connected(self, backend) -> None:
        super().connected(backend)
        self.dev._peer_connected(backend)

    def disconnected(self) -> None:
        super().disconnected()
        self.dev._peer_disconnected()

    # memory and rings
    def memory_changed(self, mem) -> None:
        self.dev._memory_changed(mem)

    def vring_start(self, vring) -> None:
        self.dev._vring_start(vring)

    def vring_stop(self, vring) -> int:
        return self.dev._vring_stop(vring)

    def vring_enable(self, vring, enabled: bool) -> None:
        self.dev._vring_publish(vring)

    def vring_call_changed(self, vring) -> None:
        self.dev._alias(self.dev.call_alias, vring.index, vring.call_fd)

    # net
    def send_rarp(self, mac: bytes) -> None:
        self.dev.metadata.update(lambda mm: mm.__setitem__(slice(M_MAC, M_MAC + 6), mac[:6]))

    def set_mtu(self, mtu: int) -> None:
        self.dev.metadata.update(lambda mm: struct.pack_into("<H", mm, M_MTU, mtu))

    def reset(self) -> None:
        super().reset()


class VhostPciNetDevice(VirtioDevice):
    device_id = VIRTIO_ID_VHOST_PCI_NET
    pci_class = 0x020000

    def __init__(self, *, mac: bytes, queue_pairs: int = 1, peer_vq_max: int = 8,
                 window_size: int = 4 << 30, queue_size: int = 256, ack_timeout: float = 1.0,
                 name: str = "vp0", events=None, limits: PeerLimits = PeerLimits()):
        super().__init__(CFG.size)
        limits.check()
        if not 2 <= peer_vq_max <= MAX_PEER_VQS:
            raise ValueError(f"peer-vqs {peer_vq_max} not in 2..{MAX_PEER_VQS}")
        self.limits = limits
        self.max_mem = limits.max_mem or window_size
        self.name = name
        self.emit = events or (lambda name, data: None)
        self.mac = mac
        self.pairs = queue_pairs
        self.num_queues = 2 * queue_pairs
        self.peer_vq_max = peer_vq_max
        self._qsize = queue_size
        self.ack_timeout = ack_timeout
        self.window = PeerWindow(window_size)
        self.metadata = Metadata(peer_vq_max, window_size)
        self.peer = _Peer(self)
        self.backend = None
        self.peer_state = 0
        self.peer_features = 0
        # stable fds the driver sees (see module docstring)
        self.call_alias = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                           for _ in range(peer_vq_max)]
        self.kick_vector = [NO_VECTOR] * peer_vq_max
        self.kick_count = [0] * peer_vq_max
        self.vring_epoch = [0] * peer_vq_max
        self._kick_fd: list[int | None] = [None] * peer_vq_max   # the peer's, per vring
        self._watching: dict[int, int] = {}          # vring -> fd the loop reads
        self.vq_select = 0
        self.driver_ack = 0
        self.driver_active = False
        self._ack = threading.Condition()
        self.window_revocations = 0
        self.ack_timeouts = 0
        self.peer_counters = PeerCounters()      # refusals and drops, over all connections
        self.loop = None
        self._write_config()

    # -- virtio face --------------------------------------------------------------------------------
    def queue_max_size(self, index: int) -> int:
        return self._qsize

    def device_features(self) -> int:
        return OWN_FEATURES

    def _write_config(self) -> None:
        up = self.peer_state & PS_CONNECTED and self.peer_state & PS_MEM_READY
        CFG.pack_into(self.config, 0, self.mac, S_LINK_UP if up else 0, self.pairs,
                      self.peer_vq_max, self.metadata.generation, self.driver_ack,
                      self.vq_select, self.kick_vector[self.vq_select],
                      self.kick_count[self.vq_select] & 0xFFFFFFFF)

    def config_read(self, offset: int, size: int) -> int:
        self._write_config()
        return int.from_bytes(self.config[offset:offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        if offset == CFG_DRIVER_ACK and size == 4:
            with self._ack:
                self.driver_ack = value
                self.driver_active = True
                self._ack.notify_all()
        elif offset == CFG_VQ_SELECT and size == 2:
            self.vq_select = value if value < self.peer_vq_max else 0
            if value >= self.peer_vq_max:
                raise GuestAccessError("vq-select", f"peer_vq_select {value} >= {self.peer_vq_max}")
        elif offset == CFG_VQ_VECTOR and size == 2:
            if value != NO_VECTOR and not self.transport.vector_ok(value):
                raise GuestAccessError("vector-refused", f"peer vring vector {value}")
            self.kick_vector[self.vq_select] = value
            self._watch_kicks(self.vq_select)
        else:
            raise GuestAccessError("config-readonly",
                                   f"write of {size} bytes to device config 0x{offset:x}")

    def features_ok(self, features: int) -> bool:
        # the seed's rule: our driver's choice goes to the peer (vhost-pci mode)
        if self.backend is not None:
            self.backend.push_features(self._peer_bits(features))
        return True

    def reset(self) -> None:
        with self._ack:
            self.driver_active = False
            self.driver_ack = 0
            self._ack.notify_all()
        for i in range(self.peer_vq_max):
            self.kick_vector[i] = NO_VECTOR
            self._watch_kicks(i)

    # -- vhost-user face (event loop thread) ---------------------------------------------------------
    def peer_offer(self) -> int:
        """GET_FEATURES: what our driver negotiated, or what it could."""
        g = self._transport.guest_features if self._transport is not None else 0
        return self._peer_bits(g or OWN_FEATURES)

    def _peer_bits(self, driver_features: int) -> int:
        """Ring-format bits for the peer: our driver's choice, plus MQ while
        the peer may use it.  MQ is about the peer's queues (peer_vq_max),
        not our own, so our driver never negotiates it; without it a
        multi-queue front-end silently falls back to one pair.  Once the
        peer has set its features, MQ follows them: a push must stay a
        subset of what the peer acked."""
        bits = driver_features & N.VHOST_NET_BITS & ~N.F_MQ
        if self.peer_vq_max > 2 and (not self.peer_features or self.peer_features & N.F_MQ):
            bits |= N.F_MQ
        return bits

    def _peer_connected(self, backend) -> None:
        self.backend = backend
        self.peer_counters.connections += 1
        self._set_state(PS_CONNECTED, True)
        g = self._transport.guest_features if self._transport is not None else 0
        if g:
            backend.push_features(self._peer_bits(g))
        self.emit("VHOST_USER_CONNECTED", self._who())

    def _who(self) -> dict:
        spec = getattr(self, "sock_spec", None)
        return {"device": self.name, "chardev": spec.id if spec else ""}

    def _peer_disconnected(self) -> None:
        self.backend = None
        self.peer_counters.disconnects += 1
        self.peer_features = 0
        for i in range(self.peer_vq_max):
            self._alias(self.call_alias, i, None)
        self._retire_window("peer disconnected")
        self._set_state(PS_CONNECTED | PS_MEM_READY | PS_FEATURES_SET | PS_VHOST_PCI, False)
        self.metadata.update(self._clear_vrings)
        self._config_changed()
        self.emit("VHOST_USER_DISCONNECTED", {**self._who(), "reason": "peer closed the connection"})

    def _peer_features(self, features: int) -> None:
        self.peer_features = features
        vp = bool(self.backend is not None and self.backend.vhost_pci_active)

        def fill(mm):
            struct.pack_into("<QQ", mm, M_FEATURES, features,
                             self.backend.protocol_features if self.backend else 0)
        self.metadata.update(fill)
        self._set_state(PS_FEATURES_SET, True)
        self._set_state(PS_VHOST_PCI, vp)
        self.emit("VHOST_USER_FEATURES_CHANGED", {
            **self._who(), "features": features,
            "protocol-features": self.backend.protocol_features if self.backend else 0})

    def _memory_changed(self, mem) -> None:
        def fill(mm):
            regions = [] if mem is None else sorted(mem.regions, key=lambda r: r.gpa)
            for i, r in enumerate(regions[:MAX_REGIONS]):
                REGION.pack_into(mm, M_REGIONS + REGION_SIZE * i, r.gpa, r.size,
                                 r.window_offset, 0)
            struct.pack_into("<I", mm, M_NREGIONS, min(len(regions), MAX_REGIONS))
        self.metadata.update(fill)
        self._set_state(PS_MEM_READY, mem is not None)
        self._config_changed()

    def _vring_publish(self, v) -> None:
        if v.index >= self.peer_vq_max:
            return

        epoch = self.vring_epoch[v.index]

        def fill(mm):
            ready = 1 if v.started else 0
            VRING.pack_into(mm, M_VRINGS + VRING_SIZE * v.index, v.num, v.base & 0xFFFF,
                            1 if v.enabled else 0, ready, epoch, v.desc_gpa, v.avail_gpa,
                            v.used_gpa, 0)
            n = struct.unpack_from("<I", mm, M_NVRINGS)[0]
            struct.pack_into("<I", mm, M_NVRINGS, max(n, v.index + 1))
        self.metadata.update(fill)
        self._config_changed()

    def _vring_start(self, v) -> None:
        if v.index >= self.peer_vq_max:
            return
        self._alias(self.call_alias, v.index, v.call_fd)
        # a new epoch tells the driver this is a fresh start from v.base,
        # not the ring it was already serving
        self.vring_epoch[v.index] = (self.vring_epoch[v.index] + 1) & 0xFFFF
        self._vring_publish(v)
        self._set_kick_fd(v.index, v.kick_fd)

    def _vring_stop(self, v) -> int:
        """GET_VRING_BASE (or a re-map): the driver must let go of the ring;
        then its used->idx is the next avail index (the copy loop completes
        every chain it pops, in order)."""
        if v.index < self.peer_vq_max:
            self._set_kick_fd(v.index, None)     # the Backend closes it after we return
            started, v.started = v.started, False
            self._vring_publish(v)
            v.started = started
            self._wait_ack(f"vring {v.index} stopped")
            self._alias(self.call_alias, v.index, None)
        if not v.used:
            return v.base
        return ctypes.c_uint16.from_address(v.used + 2).value

    def _clear_vrings(self, mm) -> None:
        mm[M_VRINGS:M_VRINGS + VRING_SIZE * self.peer_vq_max] = bytes(VRING_SIZE * self.peer_vq_max)
        struct.pack_into("<II", mm, M_NREGIONS, 0, 0)

    # -- the window ---------------------------------------------------------------------------------------
    def _retire_window(self, why: str) -> None:
        """Take the peer's memory away from the driver, safely."""
        if not self.window.mapped:
            return
        if self.peer_state & PS_MEM_READY:
            self._set_state(PS_MEM_READY, False)
        self._config_changed()
        if self._wait_ack(why):
            self.window.unmap()
        else:
            # zero pages stay until the driver next acknowledges (then unmap
            # releases them): a late access reads zeros instead of faulting
            self.window.revoke()
            self.window_revocations += 1
            self.emit("EMU_VHOST_PCI_WINDOW_REVOKED", {"device": self.name, "reason": why})

    def _wait_ack(self, why: str) -> bool:
        """Wait until the driver acknowledged the current generation."""
        gen = self.metadata.generation
        with self._ack:
            if not self.driver_active:
                return True
            ok = self._ack.wait_for(lambda: not self.driver_active or
                                    ((self.driver_ack - gen) & 0xFFFFFFFF) < 0x80000000,
                                    self.ack_timeout)
        if not ok:
            self.ack_timeouts += 1
            log.warning("%s: driver did not acknowledge generation %d (%s) within %.1f s",
                        self.name, gen, why, self.ack_timeout)
        return ok

    # -- notifications ---------------------------------------------------------------------------------
    def _alias(self, table: list[int], index: int, fd: int | None) -> None:
        """Point the stable fd ``table[index]`` at ``fd`` (None: a dummy)."""
        if index >= len(table):
            return
        if fd is None:
            dummy = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            os.dup2(dummy, table[index], inheritable=False)
            os.close(dummy)
        else:
            os.dup2(fd, table[index], inheritable=False)

    def _set_kick_fd(self, index: int, fd: int | None) -> None:
        """The peer's kick eventfd of vring ``index`` (loop thread)."""
        self._kick_fd[index] = fd
        self._apply_kick_watch(index)

    def _watch_kicks(self, index: int) -> None:
        """Re-evaluate after the driver changed the vring's vector (any thread)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._apply_kick_watch, index)

    def _apply_kick_watch(self, index: int) -> None:
        """Turn the peer's kicks on vring ``index`` into the driver's vector
        -- only while a vector is set: a polling driver costs nothing."""
        if self.loop is None:
            return
        fd = self._kick_fd[index]
        want = fd if fd is not None and self.kick_vector[index] != NO_VECTOR else None
        have = self._watching.get(index)
        if have == want:
            return
        if have is not None:
            self._remove_reader(have)
            del self._watching[index]
        if want is not None:
            self.loop.add_reader(want, self._on_kick, index, want)
            self._watching[index] = want

    def _remove_reader(self, fd: int) -> None:
        try:
            self.loop.remove_reader(fd)
        except (ValueError, OSError):
            pass

    def _on_kick(self, index: int, fd: int) -> None:
        try:
            os.eventfd_read(fd)
        except (BlockingIOError, OSError):
            return
        self.kick_count[index] += 1
        vector = self.kick_vector[index]
        if vector != NO_VECTOR:
            self.transport.notify_vector(vector, ISR_QUEUE)

    def _set_state(self, bit: int, on: bool) -> None:
        self.peer_state = (self.peer_state | bit) if on else (self.peer_state & ~bit)
        state = self.peer_state
        self.metadata.update(lambda mm: struct.pack_into("<I", mm, M_PEER_STATE, state))
        self._write_config()

    def _config_changed(self) -> None:
        if self._transport is not None:
            self._write_config()
            self.transport.notify_config()

    # -- the vhost-user socket (event loop) ----------------------------------------------------------
    def configure_socket(self, sock, *, vhost_pci: str = "auto", wire_log=None) -> None:
        """``sock``: an emu.netdev.SocketSpec (server: listen; else connect)."""
        self.sock_spec, self.vhost_pci_mode, self.wire_log = sock, vhost_pci, wire_log
        self.mapper = _WindowMapper(self)

    def _new_backend(self):
        from emu.vhost_user.backend import Backend
        wl = self.wire_log() if callable(self.wire_log) else self.wire_log
        return Backend(self.peer, memory_mapper=self.mapper, max_queues=self.peer_vq_max,
                       max_regions=self.limits.max_regions, wire_log=wl,
                       vhost_pci=self.vhost_pci_mode, counters=self.peer_counters)

    async def start_loop_side(self) -> None:
        import asyncio
        from emu.vhost_user.transport import BackendClient, BackendServer
        self.loop = asyncio.get_running_loop()
        s = getattr(self, "sock_spec", None)
        if s is None:
            self.server = None
            return
        if s.server or s.path is None:
            self.server = BackendServer(self._new_backend, path=s.path if s.fd is None else None,
                                        fd=s.fd, counters=self.peer_counters,
                                        max_payload=self.limits.max_payload,
                                        max_connections=self.limits.max_connections,
                                        message_timeout=self.limits.message_timeout)
        else:
            self.server = BackendClient(s.path, self._new_backend,
                                        reconnect=s.reconnect or None,
                                        max_payload=self.limits.max_payload,
                                        message_timeout=self.limits.message_timeout)
        await self.server.start()

    async def aclose(self) -> None:
        srv = getattr(self, "server", None)
        if srv is not None:
            await srv.close()
            self.server = None

    # -- monitor ---------------------------------------------------------------------------------------
    def device_stats(self) -> dict:
        return {"peer_state": self.peer_state, "peer_features": self.peer_features,
                "generation": self.metadata.generation, "driver_ack": self.driver_ack,
                "window_revocations": self.window_revocations, "ack_timeouts": self.ack_timeouts,
                "peer_kicks": {i: c for i, c in enumerate(self.kick_count) if c},
                "vhost_user": self.peer_counters.as_dict()}

    def close(self) -> None:
        if self.loop is not None:
            for fd in list(self._watching.values()):
                self._remove_reader(fd)
        self._watching.clear()
        for fd in self.call_alias:
            os.close(fd)
        self.call_alias = []
        self.window.close()
        self.metadata.close()


class VhostPciNetFunction(VirtioPCIFunction):
    """The PCI function: the virtio transport plus doorbells, the window
    (BAR2) and the metadata (BAR4)."""

    def __init__(self, dev: VhostPciNetDevice, name: str = ""):
        # MSI-X: config + own queues + one per peer vring (kicks)
        vectors = 1 + dev.num_queues + dev.peer_vq_max
        super().__init__(dev, layout=VirtioPCILayout(notify_length=0x800, msix_vectors=vectors),
                         pci_device_id=PCI_DEVICE_ID, name=name or dev.name)
        n = dev.peer_vq_max
        self.bar0.add(DOORBELL_OFFSET, 4 * n, _Doorbells(self, dev), "doorbells")
        for i in range(n):
            self.add_ioeventfd(0, DOORBELL_OFFSET + 4 * i, dev.call_alias[i])
        w = dev.window
        self.add_bar(WINDOW_BAR, w.size, "mem64", True,
                     ram=RamBacking(w.base, w.size, keepalive=w, accessible=self._window_ok))
        md = dev.metadata
        self.add_bar(METADATA_BAR, METADATA_SIZE, "mem32",
                     ram=RamBacking.from_buffer(md.mm, readonly=True))

    def _window_ok(self, offset: int, size: int) -> bool:
        return self.device.window.accessible(offset, size)


class _Doorbells:
    """Writes that miss the ioeventfd (a size it does not match) still ring."""

    def __init__(self, fn, dev):
        self.fn, self.dev = fn, dev
        self.rung = 0

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        i = offset // 4
        if offset % 4 or i >= self.dev.peer_vq_max:
            raise GuestAccessError("doorbell", f"doorbell write at 0x{offset:x}")
        self.rung += 1
        os.eventfd_write(self.dev.call_alias[i], 1)
