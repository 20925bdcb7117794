"""Sans-IO vhost-user back-end: one connection's state machine.

``Backend.handle(message) -> [messages to send]``.  Every request is fully
validated before any state changes; a refused request is recorded in
``refused`` and answered:

* with a REPLY_ACK status 1 when the front-end set NEED_REPLY (acks are
  sent whenever NEED_REPLY is set, as DPDK and libvhost-user do: a
  front-end that asks waits, and must not hang);
* with its status reply set to 1 when the request's own reply is a status
  (SET_LOG_BASE, CHECK_DEVICE_STATE...), or an empty config for GET_CONFIG;
* otherwise, for a request that needs a reply which cannot be given
  (GET_VRING_BASE of a bad ring, GET_INFLIGHT_FD...), the error is raised:
  the connection must be closed, which the front-end sees at once;
* otherwise it is only logged, and the connection goes on.

The Backend never touches sockets: the transport feeds it messages, sends
what it returns, and drains :meth:`outgoing` / :meth:`channel_outgoing`
when :attr:`on_output` fires (messages queued outside ``handle``).
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Callable

from emu import ratelimit
from emu.errors import EmuBug, PeerError
from emu.memory import GuestMemory, check_mappable, validate_regions
from emu.ratelimit import LogLimiter
from emu.spec import virtio_ring, virtio_ring_packed
from emu.vhost_user import extension
from emu.vhost_user.codec import Message, close_fds, request
from emu.vhost_user.counters import PeerCounters
from emu.vhost_user.device import BackendDevice, DefaultMapper, MemoryMapper
from emu.vhost_user.errors import ProtocolViolation, UnsupportedRequest, UsageError
from emu.vhost_user.messages import (MAX_CONFIG_SIZE, VHOST_PCI_START, VHOST_PCI_STOP, Config,
                                     FrontendRequest as F, Inflight, ProtocolFeature as PF,
                                     SeedRequest, U64, VirtioFeature, VringState, spec_of)
from emu.vhost_user.shm import DirtyLog, InflightArea, check_eventfd, check_unix_socket
from emu.vhost_user.vring import Vring, packed_base, packed_reply_base
from emu.vhost_user.wirelog import WireLog

log = logging.getLogger(__name__)

#: Protocol features this state machine implements (the device picks among them).
IMPLEMENTED = (PF.MQ | PF.LOG_SHMFD | PF.RARP | PF.REPLY_ACK | PF.NET_MTU | PF.BACKEND_REQ
               | PF.CONFIG | PF.INFLIGHT_SHMFD | PF.RESET_DEVICE | PF.CONFIGURE_MEM_SLOTS
               | PF.STATUS)
MAX_VRINGS = 256       # the fd word carries 8 index bits
MIN_MTU, MAX_MTU = 68, 65535


class _MemoryView(GuestMemory):
    """Live regions of several mapped tables (after ADD/REM_MEM_REG).  The
    tables own the mappings: closing the view unmaps nothing."""

    def close(self) -> None:
        self.closed = True


class Backend:
    def __init__(self, device: BackendDevice, *, memory_mapper: MemoryMapper | None = None,
                 max_queues: int | None = None, max_regions: int = 8,
                 wire_log: WireLog | None = None, vhost_pci: str = "auto",
                 counters: PeerCounters | None = None):
        self.device = device
        self.counters = counters            # the device's, across connections
        self.max_regions = max_regions
        self.mapper = memory_mapper or DefaultMapper(max_regions)
        self.max_queues = max_queues if max_queues is not None else device.max_vrings()
        if not 1 <= self.max_queues <= MAX_VRINGS:
            raise UsageError(f"max_queues {self.max_queues} not in 1..{MAX_VRINGS}")
        self.wire_log = wire_log
        self.vhost_pci = extension.check_mode(vhost_pci)
        self.vrings = [Vring(i) for i in range(self.max_queues)]
        self.owner = False
        self.acked_features: int | None = None
        self.protocol_features = 0          # acked by SET_PROTOCOL_FEATURES
        self.protocol_features_set = False
        self.memory: GuestMemory | None = None
        self._tables: list[GuestMemory] = []    # what the mapper returned, in order
        self._removed: set[int] = set()         # id() of regions removed by REM_MEM_REG
        self.log: DirtyLog | None = None
        self.log_fd: int | None = None
        self.inflight: InflightArea | None = None
        self.backend_req_fd: int | None = None
        self.mtu: int | None = None
        self.peer_device_id: int | None = None      # seed: SET_DEVICE_ID
        self.vhost_pci_started = False              # seed: SET_VHOST_PCI start/stop
        self.refused: collections.deque[tuple[str, PeerError]] = collections.deque(maxlen=64)
        self.on_output: Callable[[], None] | None = None
        self._lock = threading.Lock()        # outboxes and pushed features (device threads)
        self._outbox: list[Message] = []
        self._channel_outbox: list[Message] = []
        self._pushed_features: int | None = None
        self._kept: set[int] = set()
        self.closed = False
        self._handlers = {
            F.GET_FEATURES: self._get_features,
            F.SET_FEATURES: self._set_features,
            F.SET_OWNER: self._set_owner,
            F.RESET_OWNER: self._reset_owner,
            F.SET_MEM_TABLE: self._set_mem_table,
            F.SET_LOG_BASE: self._set_log_base,
            F.SET_LOG_FD: self._set_log_fd,
            F.SET_VRING_NUM: self._set_vring_num,
            F.SET_VRING_ADDR: self._set_vring_addr,
            F.SET_VRING_BASE: self._set_vring_base,
            F.GET_VRING_BASE: self._get_vring_base,
            F.SET_VRING_KICK: self._set_vring_kick,
            F.SET_VRING_CALL: self._set_vring_call,
            F.SET_VRING_ERR: self._set_vring_err,
            F.GET_PROTOCOL_FEATURES: self._get_protocol_features,
            F.SET_PROTOCOL_FEATURES: self._set_protocol_features,
            F.GET_QUEUE_NUM: self._get_queue_num,
            F.SET_VRING_ENABLE: self._set_vring_enable,
            F.SEND_RARP: self._send_rarp,
            F.NET_SET_MTU: self._net_set_mtu,
            F.SET_BACKEND_REQ_FD: self._set_backend_req_fd,
            F.GET_CONFIG: self._get_config,
            F.SET_CONFIG: self._set_config,
            F.GET_INFLIGHT_FD: self._get_inflight_fd,
            F.SET_INFLIGHT_FD: self._set_inflight_fd,
            F.RESET_DEVICE: self._reset_device,
            F.GET_MAX_MEM_SLOTS: self._get_max_mem_slots,
            F.ADD_MEM_REG: self._add_mem_reg,
            F.REM_MEM_REG: self._rem_mem_reg,
            F.SET_STATUS: self._set_status,
            F.GET_STATUS: self._get_status,
        }
        # A separate table: IntEnum members compare by value, so SET_DEVICE_ID
        # (20) would otherwise replace NET_SET_MTU's handler.
        self._seed_handlers = {
            SeedRequest.SET_DEVICE_ID: self._seed_set_device_id,
            SeedRequest.SET_VHOST_PCI: self._seed_set_vhost_pci,
        }
        device.connected(self)

    @property
    def limiter(self) -> LogLimiter:
        """Rate limit of this device's log lines about its peers."""
        return self.counters.limiter if self.counters is not None else ratelimit.DEFAULT

    # -- negotiation state ---------------------------------------------------------
    def offered_features(self) -> int:
        return int(self.device.features()) | int(VirtioFeature.PROTOCOL_FEATURES)

    def offered_protocol_features(self) -> int:
        offer = int(self.device.protocol_features()) & int(IMPLEMENTED)
        offer &= ~extension.reserved_bits(self.vhost_pci)
        return offer | extension.offer_bits(self.vhost_pci)

    def negotiated(self, feature: PF) -> bool:
        return bool(self.protocol_features & feature)

    @property
    def vhost_pci_active(self) -> bool:
        return extension.is_active(self.vhost_pci, self.protocol_features)

    @property
    def seed_dialect(self) -> bool:
        """Ids 20/21 are the seed's SET_DEVICE_ID/SET_VHOST_PCI on this
        connection (the transport switches its decoder accordingly)."""
        return self.vhost_pci == "seed" and self.vhost_pci_active

    def _protocol_features_on(self) -> bool:
        """VHOST_USER_F_PROTOCOL_FEATURES negotiated: rings start disabled."""
        if self.acked_features is not None:
            return bool(self.acked_features & VirtioFeature.PROTOCOL_FEATURES)
        return self.protocol_features_set

    # -- entry point -------------------------------------------------------------------
    def handle(self, msg: Message) -> list[Message]:
        """Process one message from the front-end; -> messages to send, in order.
        Takes ownership of ``msg.fds``."""
        if self.closed:
            close_fds(msg.fds)
            raise UsageError("Backend.handle after close")
        self._record("rx", msg)
        self._kept = set()
        try:
            out = self._handle(msg)
        finally:
            close_fds(fd for fd in msg.fds if fd not in self._kept)
            self._kept = set()
        out += self.outgoing(log_tx=False)
        for m in out:
            self._record("tx", m)
        return out

    def _handle(self, msg: Message) -> list[Message]:
        if msg.is_reply:
            self._refuse(msg, ProtocolViolation(f"unexpected {msg.request.name} reply from the front-end"))
            return []
        spec = spec_of(msg.request)
        try:
            self._check_negotiated(msg.request, spec)
            table = self._seed_handlers if isinstance(msg.request, SeedRequest) else self._handlers
            handler = table.get(msg.request)
            if handler is None:
                raise UnsupportedRequest(f"{msg.request.name} is not supported")
            reply = handler(msg)
        except PeerError as e:
            return self._refuse(msg, e)
        except OSError as e:
            # The root of every OSError here is a peer's fd (a mapping or an
            # fd check a mapper or device made without typing it): a refusal
            # like any other, never an internal error that drops the peer.
            # Handlers validate first and mappers leave the old table on
            # failure, so the previous state stands.
            return self._refuse(msg, ProtocolViolation(
                f"{msg.request.name}: {e.strerror or e} (from the peer's fd)"))
        if spec.has_reply:
            return [msg.reply(*reply) if isinstance(reply, tuple) else msg.reply(reply)]
        if msg.need_reply:
            return [msg.reply(U64(0))]
        return []

    def _check_negotiated(self, req, spec) -> None:
        if isinstance(req, SeedRequest):
            if not self.seed_dialect:
                raise ProtocolViolation(f"{req.name} outside a seed vhost-pci connection")
        elif req == F.NET_SET_MTU:
            if not extension.net_mtu_negotiated(self.vhost_pci, self.protocol_features):
                raise ProtocolViolation("NET_SET_MTU without NET_MTU negotiated"
                                        + (" (bit 4 means VHOST_PCI here)" if self.vhost_pci_active else ""))
        elif spec.needs is not None and not self.negotiated(spec.needs):
            raise ProtocolViolation(f"{req.name} without {spec.needs.name} negotiated")

    def _refuse(self, msg: Message, err: PeerError) -> list[Message]:
        self.refused.append((msg.request.name, err))
        if self.counters is not None:
            self.counters.note_refused(msg.request.name, err)
        self.limiter.log(log, logging.WARNING, ("refused", msg.request.name),
                         "vhost-user back-end refused %s: %s", msg.request.name, err)
        if self.wire_log is not None:
            self.wire_log.error("rx", err)
        if msg.is_reply:
            return []
        spec = spec_of(msg.request)
        if spec.has_reply:
            if spec.status_reply:
                return [msg.reply(U64(1))]
            if msg.request == F.GET_CONFIG:      # libvhost-user's convention: size 0
                return [msg.reply(Config(msg.payload.offset, 0, msg.payload.flags))]
            raise err
        if msg.need_reply:
            return [msg.reply(U64(1))]
        return []

    def _keep(self, msg: Message, i: int = 0) -> int:
        fd = msg.fds[i]
        self._kept.add(fd)
        return fd

    def _vring(self, index: int) -> Vring:
        if not 0 <= index < self.max_queues:
            raise ProtocolViolation(f"vring index {index} out of range (device has {self.max_queues})")
        return self.vrings[index]

    # -- features ---------------------------------------------------------------------
    def _get_features(self, msg):
        return U64(self.offered_features())

    @property
    def packed(self) -> bool:
        """VIRTIO_F_RING_PACKED negotiated: every ring is packed."""
        return bool((self.acked_features or 0) & VirtioFeature.RING_PACKED)

    def _check_num(self, num: int, what: str) -> None:
        (virtio_ring_packed if self.packed else virtio_ring).check_num(num, ProtocolViolation, what)

    def _set_features(self, msg):
        value, offered = msg.payload.value, self.offered_features()
        if value & ~offered:
            raise ProtocolViolation(f"SET_FEATURES 0x{value:x} acks bits not offered "
                                    f"(0x{value & ~offered:x})")
        packed = bool(value & VirtioFeature.RING_PACKED)
        if packed != self.packed:
            running = [v.index for v in self.vrings if v.started]
            if running:
                raise ProtocolViolation(f"SET_FEATURES changes the ring format while vrings "
                                        f"{running} run")
        self.acked_features = value
        for v in self.vrings:
            if v.packed != packed:
                v.packed = packed
                self._retranslate(v)          # the areas' sizes and alignment changed
        self.device.set_features(value)

    def _get_protocol_features(self, msg):
        return U64(self.offered_protocol_features())

    def _set_protocol_features(self, msg):
        value, offered = msg.payload.value, self.offered_protocol_features()
        if value & ~offered:
            raise ProtocolViolation(f"SET_PROTOCOL_FEATURES 0x{value:x} acks bits not offered "
                                    f"(0x{value & ~offered:x})")
        with self._lock:         # atomic with push_features() from a device thread
            self.protocol_features = value
            self.protocol_features_set = True
            if self._pushed_features is not None and self.vhost_pci_active:
                self._outbox.append(request(F.SET_FEATURES, U64(self._pushed_features)))

    def _get_queue_num(self, msg):
        return U64(self.device.queue_num())

    def _set_owner(self, msg):
        self.owner = True

    def _reset_owner(self, msg):
        self._reset()
        self.owner = False

    def _reset_device(self, msg):
        self._reset()

    def _reset(self) -> None:
        """Rings disabled and forgotten, memory and log dropped, features
        cleared; protocol features and the inflight area survive."""
        self._pause([v for v in self.vrings if v.started])
        for v in self.vrings:
            self._close_vring_fds(v)
            self.vrings[v.index] = Vring(v.index)
        self._drop_memory()
        self._set_log(None)
        self._install_inflight(self.inflight)
        self.acked_features = None
        self.device.reset()

    # -- status, config, net --------------------------------------------------------------
    def _set_status(self, msg):
        if msg.payload.value > 0xFF:
            raise ProtocolViolation(f"device status 0x{msg.payload.value:x} is not a u8")
        self.device.set_status(msg.payload.value)

    def _get_status(self, msg):
        return U64(self.device.get_status())

    def _get_config(self, msg):
        p = msg.payload
        if p.offset + p.size > MAX_CONFIG_SIZE:
            raise ProtocolViolation(f"config range {p.offset}+{p.size} past {MAX_CONFIG_SIZE}")
        data = bytes(self.device.get_config(p.offset, p.size))
        if len(data) != p.size:
            raise EmuBug(f"device returned {len(data)} config bytes for {p.size}")
        return Config(p.offset, p.size, p.flags, data)

    def _set_config(self, msg):
        p = msg.payload
        if p.offset + p.size > MAX_CONFIG_SIZE:
            raise ProtocolViolation(f"config range {p.offset}+{p.size} past {MAX_CONFIG_SIZE}")
        self.device.set_config(p.offset, p.data, p.flags)

    def _send_rarp(self, msg):
        self.device.send_rarp(msg.payload.mac)

    def _net_set_mtu(self, msg):
        mtu = msg.payload.value
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ProtocolViolation(f"MTU {mtu} not in {MIN_MTU}..{MAX_MTU}")
        self.mtu = mtu
        self.device.set_mtu(mtu)

    def _seed_set_device_id(self, msg):
        self.peer_device_id = msg.payload.value
        self.device.set_device_id(msg.payload.value)

    def _seed_set_vhost_pci(self, msg):
        if msg.payload.value not in (VHOST_PCI_START, VHOST_PCI_STOP):
            raise ProtocolViolation(f"SET_VHOST_PCI {msg.payload.value}: expected 0 (start) or 1 (stop)")
        self.vhost_pci_started = msg.payload.value == VHOST_PCI_START
        self.device.vhost_pci_started(self.vhost_pci_started)

    # -- back-end request channel ---------------------------------------------------------
    def _set_backend_req_fd(self, msg):
        check_unix_socket(msg.fds[0], "SET_BACKEND_REQ_FD")
        old, self.backend_req_fd = self.backend_req_fd, self._keep(msg)
        close_fds([old] if old is not None else [])

    def backend_request(self, req, payload=None, fds=(), need_reply: bool = False) -> bool:
        """Queue a BackendRequest for the channel; False if there is none.
        ``need_reply`` is honoured only with REPLY_ACK negotiated."""
        if self.backend_req_fd is None or self.closed:
            return False
        need_reply = need_reply and self.negotiated(PF.REPLY_ACK)
        msg = request(req, payload, fds, need_reply)
        with self._lock:
            self._channel_outbox.append(msg)
        self._wake()
        return True

    def channel_outgoing(self) -> list[Message]:
        with self._lock:
            out, self._channel_outbox = self._channel_outbox, []
        for m in out:
            self._record("tx", m, channel="backend-req")
        return out

    def handle_channel_reply(self, msg: Message) -> None:
        """A reply on the channel (to a NEED_REPLY request): recorded only."""
        self._record("rx", msg, channel="backend-req")
        close_fds(msg.fds)
        if not msg.is_reply or (msg.payload is not None and getattr(msg.payload, "value", 0)):
            err = ProtocolViolation(f"front-end answered {msg.request.name} on the channel with {msg}")
            self.refused.append((msg.request.name, err))
            if self.counters is not None:
                self.counters.note_refused(msg.request.name, err)

    # -- vhost-pci extension -------------------------------------------------------------
    def push_features(self, features: int) -> None:
        """The device's driver negotiated ``features``: tell the front-end
        (vhost-pci extension).  Sent now if the extension is active, right
        after SET_PROTOCOL_FEATURES if that has not come yet, never to a
        plain peer.  Thread-safe."""
        with self._lock:
            self._pushed_features = int(features)
            send = self.protocol_features_set and self.vhost_pci_active and not self.closed
            if send:
                self._outbox.append(request(F.SET_FEATURES, U64(int(features))))
        if send:
            self._wake()

    def outgoing(self, log_tx: bool = True) -> list[Message]:
        """Unsolicited messages for the main socket (drained)."""
        with self._lock:
            out, self._outbox = self._outbox, []
        if log_tx:
            for m in out:
                self._record("tx", m)
        return out

    def _wake(self) -> None:
        if self.on_output is not None:
            self.on_output()

    # -- memory ------------------------------------------------------------------------------
    def _live_regions(self) -> list:
        return [r for t in self._tables for r in t.regions if id(r) not in self._removed]

    def _set_mem_table(self, msg):
        specs = [r.spec() for r in msg.payload.regions]
        validate_regions(specs, self.max_regions)
        running = [v for v in self.vrings if v.started]
        for v in running:
            if not v.fits(specs):
                raise ProtocolViolation(f"new memory table leaves running vring {v.index} unmapped")
        self._check_fds(specs, msg.fds)
        self._kept.update(msg.fds)          # the mapper owns them now
        self._pause(running)
        try:
            new = self.mapper.map(specs, list(msg.fds))
        except BaseException:
            self._resume(running)
            raise
        old, self._tables, self._removed = self._tables, [new], set()
        self._install_memory()
        for t in old:
            self.mapper.unmap(t)
        self._resume(running)

    @staticmethod
    def _check_fds(specs, fds) -> None:
        """Every fd can back its region (type, access mode, seals, size)
        before a ring is paused or the mapper is called: a mapper that
        must let go of the current table first (the vhost-pci window) then
        fails only for reasons of its own."""
        for (gpa, size, uaddr, offset), fd in zip(specs, fds):
            check_mappable(fd, offset, size, what=f"memory fd of region gpa=0x{gpa:x}")

    def _get_max_mem_slots(self, msg):
        return U64(self.max_regions)

    def _add_mem_reg(self, msg):
        spec = msg.payload.region.spec()
        live = [(r.gpa, r.size, r.uaddr, r.mmap_offset) for r in self._live_regions()]
        if len(live) >= self.max_regions:
            raise ProtocolViolation(f"ADD_MEM_REG: all {self.max_regions} memory slots are used")
        validate_regions(live + [spec], self.max_regions)
        self._check_fds([spec], msg.fds[:1])
        self._kept.add(msg.fds[0])
        new = self.mapper.map([spec], [msg.fds[0]])
        running = [v for v in self.vrings if v.started]
        self._pause(running)
        self._tables.append(new)
        self._install_memory()
        self._resume(running)

    def _rem_mem_reg(self, msg):
        want = msg.payload.region
        match = [r for r in self._live_regions()
                 if (r.gpa, r.size, r.uaddr) == (want.gpa, want.size, want.uaddr)]
        if not match:
            raise ProtocolViolation(f"REM_MEM_REG: no region gpa=0x{want.gpa:x} size=0x{want.size:x}")
        region = match[0]
        running = [v for v in self.vrings if v.started]
        for v in running:
            if v.uses_region(region):
                raise ProtocolViolation(f"REM_MEM_REG: running vring {v.index} lives in the region")
        self._pause(running)
        self._removed.add(id(region))
        gone = [t for t in self._tables if all(id(r) in self._removed for r in t.regions)]
        self._tables = [t for t in self._tables if t not in gone]
        self._removed -= {id(r) for t in gone for r in t.regions}
        self._install_memory()
        for t in gone:
            self.mapper.unmap(t)
        self._resume(running)

    def _install_memory(self) -> None:
        """Publish the live regions, re-translate every addressed ring, tell
        the device.  Rings are stopped by the caller."""
        if len(self._tables) == 1 and not self._removed:
            self.memory = self._tables[0]
        elif self._tables:
            self.memory = _MemoryView(self._live_regions(), backend="view")
        else:
            self.memory = None
        for v in self.vrings:
            self._retranslate(v)
        self.device.memory_changed(self.memory)

    def _retranslate(self, v: Vring) -> None:
        v.clear_translation()
        if self.memory is None or v.addr is None:
            return
        try:
            v.translate(self.memory)
        except ProtocolViolation as e:
            self.limiter.log(log, logging.INFO, "retranslate", "vring %d no longer translates "
                             "(%s): needs a new SET_VRING_ADDR", v.index, e)

    def _drop_memory(self) -> None:
        old, self._tables, self._removed = self._tables, [], set()
        if old or self.memory is not None:
            self._install_memory()
        for t in old:
            self.mapper.unmap(t)

    # -- dirty log ------------------------------------------------------------------------------
    def _set_log_base(self, msg):
        p = msg.payload
        self._kept.add(msg.fds[0])           # DirtyLog closes it in every case
        self._set_log(DirtyLog(msg.fds[0], p.mmap_size, p.mmap_offset))
        return U64(0)

    def _set_log(self, new: DirtyLog | None) -> None:
        old, self.log = self.log, new
        if old is not None or new is not None:
            self.device.log_changed(new)
        if old is not None:
            old.close()

    def _set_log_fd(self, msg):
        check_eventfd(msg.fds[0], "SET_LOG_FD")
        old, self.log_fd = self.log_fd, self._keep(msg)
        close_fds([old] if old is not None else [])

    # -- inflight ----------------------------------------------------------------------------------
    def _check_inflight_request(self, p: Inflight) -> None:
        if not 1 <= p.num_queues <= self.max_queues:
            raise ProtocolViolation(f"inflight for {p.num_queues} queues, device has {self.max_queues}")
        self._check_num(p.queue_size, "vring size")
        started = [v.index for v in self.vrings if v.started]
        if started:
            raise ProtocolViolation(f"inflight area changed while vrings {started} run")

    def _get_inflight_fd(self, msg):
        p = msg.payload
        self._check_inflight_request(p)
        area = InflightArea.create(p.num_queues, p.queue_size, packed=self.packed)
        self._install_inflight(area)
        return Inflight(area.mmap_size, 0, p.num_queues, p.queue_size), (area.fd,)

    def _set_inflight_fd(self, msg):
        p = msg.payload
        self._check_inflight_request(p)
        self._kept.add(msg.fds[0])           # InflightArea owns it (closes it on error)
        area = InflightArea(msg.fds[0], p.mmap_size, p.mmap_offset, p.num_queues, p.queue_size,
                            packed=self.packed)
        self._install_inflight(area)

    def _install_inflight(self, area: InflightArea | None) -> None:
        old, self.inflight = self.inflight, area
        for v in self.vrings:
            v.inflight = area.queue_addr(v.index) if area and v.index < area.num_queues else None
        if old is not None and old is not area:
            old.close()

    # -- vrings ------------------------------------------------------------------------------------------
    def _set_vring_num(self, msg):
        v = self._vring(msg.payload.index)
        if v.started:
            raise ProtocolViolation(f"SET_VRING_NUM on running vring {v.index}")
        self._check_num(msg.payload.num, "vring size")
        v.num = msg.payload.num
        v.clear_translation()            # sizes changed: needs a new SET_VRING_ADDR
        v.addr = None

    def _set_vring_base(self, msg):
        v = self._vring(msg.payload.index)
        if v.started:
            raise ProtocolViolation(f"SET_VRING_BASE on running vring {v.index}")
        limit = 0xFFFFFFFF if self.packed else 0xFFFF
        if msg.payload.num > limit:
            raise ProtocolViolation(f"vring base 0x{msg.payload.num:x} exceeds 0x{limit:x}")
        if self.packed and v.num:
            # positions inside the ring (a used half of 0 is DPDK's: it sends the avail half)
            a_pos, _, u_pos, _ = packed_base(msg.payload.num)
            if a_pos >= v.num or u_pos >= v.num:
                raise ProtocolViolation(f"packed vring base 0x{msg.payload.num:x}: position "
                                        f"past a ring of {v.num}")
        v.base = msg.payload.num

    def _set_vring_addr(self, msg):
        p = msg.payload
        v = self._vring(p.index)
        if self.memory is None:
            raise ProtocolViolation(f"SET_VRING_ADDR {p.index} before a memory table")
        if not v.num:
            raise ProtocolViolation(f"SET_VRING_ADDR {p.index} before SET_VRING_NUM")
        trial = Vring(v.index, num=v.num, addr=p, packed=v.packed)
        trial.translate(self.memory)                 # validate before touching v
        was_running = v.started
        if was_running:                              # QEMU re-sends it to toggle F_LOG
            self._pause([v])
        v.addr = p
        v.translate(self.memory)
        if was_running:
            self._resume([v])
        else:
            self._maybe_start(v)

    def _get_vring_base(self, msg):
        v = self._vring(msg.payload.index)
        if v.started:
            self._pause([v])
        # The ring is stopped until set up again: it needs a new kick (and call).
        close_fds([fd for fd in (v.kick_fd, v.call_fd) if fd is not None])
        v.kick_fd = v.call_fd = None
        v.kick_set = False
        base = packed_reply_base(v.base) if v.packed else v.base
        return VringState(v.index, base)

    def _vring_fd(self, msg, what: str) -> tuple[Vring, int | None]:
        v = self._vring(msg.payload.index)
        if msg.payload.nofd:
            return v, None
        check_eventfd(msg.fds[0], f"{msg.request.name} {v.index}")
        return v, self._keep(msg)

    def _set_vring_kick(self, msg):
        v, fd = self._vring_fd(msg, "kick")
        was_running = v.started
        if was_running:
            self._pause([v])
        old, v.kick_fd, v.kick_set = v.kick_fd, fd, True
        close_fds([old] if old is not None else [])
        if was_running:
            self._resume([v])
        else:
            self._maybe_start(v)

    def _set_vring_call(self, msg):
        v, fd = self._vring_fd(msg, "call")
        old, v.call_fd = v.call_fd, fd
        if old != fd:
            self.device.vring_call_changed(v)
        close_fds([old] if old is not None else [])

    def _set_vring_err(self, msg):
        v, fd = self._vring_fd(msg, "err")
        old, v.err_fd = v.err_fd, fd
        close_fds([old] if old is not None else [])

    def _set_vring_enable(self, msg):
        v = self._vring(msg.payload.index)
        if msg.payload.num not in (0, 1):
            raise ProtocolViolation(f"SET_VRING_ENABLE {v.index} with {msg.payload.num}")
        v.enabled = bool(msg.payload.num)    # kept even before the ring exists (QEMU)
        self.device.vring_enable(v, v.enabled)

    def _maybe_start(self, v: Vring) -> None:
        if v.started or not v.ready or self.memory is None:
            return
        if not self._protocol_features_on():
            v.enabled = True                 # without protocol features rings start enabled
        v.started = True
        self.device.vring_start(v)

    def _pause(self, rings: list[Vring]) -> None:
        for v in rings:
            base = self.device.vring_stop(v)
            if not isinstance(base, int) or not 0 <= base <= 0xFFFFFFFF:
                raise EmuBug(f"vring_stop returned {base!r}")
            v.base, v.started = base, False

    def _resume(self, rings: list[Vring]) -> None:
        for v in rings:
            self._maybe_start(v)

    @staticmethod
    def _close_vring_fds(v: Vring) -> None:
        close_fds([fd for fd in (v.kick_fd, v.call_fd, v.err_fd) if fd is not None])
        v.kick_fd = v.call_fd = v.err_fd = None
        v.kick_set = False

    # -- teardown -------------------------------------------------------------------------------------
    def close(self) -> None:
        """The connection is gone: stop rings, drop memory, close every fd.
        Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self._pause([v for v in self.vrings if v.started])
        finally:
            for v in self.vrings:
                self._close_vring_fds(v)
            try:
                self._drop_memory()
                self._set_log(None)
            finally:
                self._install_inflight(None)
                for fd in (self.log_fd, self.backend_req_fd):
                    close_fds([fd] if fd is not None else [])
                self.log_fd = self.backend_req_fd = None
                self.device.disconnected()

    # -- introspection ---------------------------------------------------------------------------------
    def _record(self, direction: str, msg: Message, channel: str = "main") -> None:
        if self.wire_log is not None:
            self.wire_log.record(direction, msg, channel=channel)

    def describe(self) -> dict:
        """State summary for monitors and logs."""
        return {
            "owner": self.owner,
            "features": self.acked_features,
            "protocol_features": self.protocol_features,
            "vhost_pci": self.vhost_pci_active,
            "regions": [(r.gpa, r.size) for r in self._live_regions()],
            "vrings": [{"index": v.index, "num": v.num, "base": v.base, "started": v.started,
                        "enabled": v.enabled} for v in self.vrings if v.num or v.enabled],
        }
