"""vhost-user front-end: the sans-IO state machine.

:class:`Frontend` builds requests, tracks what was negotiated, matches
replies (they come in request order, with the request's id and the REPLY
flag) and classifies everything else the back-end sends: the vhost-pci
extension's ``SET_FEATURES`` on the main socket, and
:class:`~emu.vhost_user.messages.BackendRequest` messages on the back-end
request channel.  It never touches a socket: :mod:`emu.vhost_user.client`
runs it on one (as :mod:`emu.vhost_user.transport` runs the back-end).
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from emu import ratelimit
from emu.ratelimit import LogLimiter
from emu.vhost_user import extension
from emu.vhost_user.codec import Message, close_fds, request
from emu.vhost_user.counters import PeerCounters
from emu.vhost_user.errors import ProtocolViolation, VhostUserError
from emu.vhost_user.messages import (BackendRequest as B, FrontendRequest as F,
                                     ProtocolFeature as PF, U64, U64_MAX, spec_of)
from emu.vhost_user.wirelog import WireLog

log = logging.getLogger(__name__)

DEFAULT_FRONTEND_PROTOCOL_FEATURES = (PF.MQ | PF.REPLY_ACK | PF.BACKEND_REQ
                                      | PF.CONFIGURE_MEM_SLOTS | PF.STATUS)


# -- events -------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """The reply to ``request``."""
    request: Message
    reply: Message


@dataclass(frozen=True)
class BackendFeatures:
    """vhost-pci: the back-end's driver negotiated ``features`` (a subset of ours)."""
    features: int


@dataclass(frozen=True)
class ConfigChange:
    pass


@dataclass(frozen=True)
class VringCall:
    index: int


@dataclass(frozen=True)
class VringErr:
    index: int


@dataclass(frozen=True)
class Ignored:
    """A well-formed message that is invalid here; logged and dropped."""
    message: Message
    error: VhostUserError


# -- the sans-IO state machine --------------------------------------------------------
class Frontend:
    def __init__(self, *, features: int = U64_MAX,
                 protocol_features: int = DEFAULT_FRONTEND_PROTOCOL_FEATURES,
                 vhost_pci: str = "auto", wire_log: WireLog | None = None,
                 counters: PeerCounters | None = None):
        self.features = features                    # what our device could negotiate
        self.counters = counters                    # the device's, across connections
        self.wanted_protocol_features = int(protocol_features)
        self.vhost_pci = extension.check_mode(vhost_pci)
        self.wire_log = wire_log
        self.backend_features: int | None = None            # GET_FEATURES
        self.backend_protocol_features: int | None = None   # GET_PROTOCOL_FEATURES
        self.acked_features: int | None = None              # our SET_FEATURES
        self.protocol_features = 0                          # our SET_PROTOCOL_FEATURES
        self.queue_num: int | None = None
        self.max_mem_slots: int | None = None
        self.pending: collections.deque[Message] = collections.deque()

    @property
    def limiter(self) -> LogLimiter:
        """Rate limit of the device's log lines about its back-ends."""
        return self.counters.limiter if self.counters is not None else ratelimit.DEFAULT

    def fresh(self) -> Frontend:
        """Same configuration, nothing negotiated (a new connection)."""
        return Frontend(features=self.features, protocol_features=self.wanted_protocol_features,
                        vhost_pci=self.vhost_pci, wire_log=self.wire_log, counters=self.counters)

    # -- negotiation ---------------------------------------------------------------------
    def negotiated(self, feature: PF) -> bool:
        return bool(self.protocol_features & feature)

    @property
    def vhost_pci_active(self) -> bool:
        return extension.is_active(self.vhost_pci, self.protocol_features)

    def choose_protocol_features(self, offered: int) -> int:
        """What to ack from the back-end's offer, with the bit-4 rule."""
        ext = extension.ack_bits(self.vhost_pci, offered)
        plain = offered & self.wanted_protocol_features & ~(extension.BIT4 | extension.MARKER)
        plain &= ~extension.reserved_bits(self.vhost_pci)
        if not ext and offered & self.wanted_protocol_features & PF.NET_MTU:
            plain |= PF.NET_MTU
        return plain | ext

    # -- requests --------------------------------------------------------------------------
    def request(self, req: F, payload=None, fds: Sequence[int] = (),
                need_reply: bool = False) -> Message:
        """Build a request and expect its reply.  NEED_REPLY is set only
        with REPLY_ACK negotiated (QEMU's rule); see :meth:`expects_reply`."""
        need_reply = need_reply and self.negotiated(PF.REPLY_ACK) and not spec_of(req).has_reply
        msg = request(req, payload, fds, need_reply)
        if self.expects_reply(msg):
            self.pending.append(msg)
        if req == F.SET_FEATURES:
            self.acked_features = payload.value
        elif req == F.SET_PROTOCOL_FEATURES:
            self.protocol_features = payload.value
        if self.wire_log is not None:
            self.wire_log.record("tx", msg)
        return msg

    @staticmethod
    def expects_reply(msg: Message) -> bool:
        return spec_of(msg.request).has_reply or msg.need_reply

    # -- incoming ---------------------------------------------------------------------------
    def receive(self, msg: Message):
        """A message from the main socket -> :class:`Reply`,
        :class:`BackendFeatures` or :class:`Ignored`.  Raises
        ProtocolViolation for a reply that matches no request (fatal: the
        stream is out of step)."""
        if self.wire_log is not None:
            self.wire_log.record("rx", msg)
        if msg.is_reply:
            if not self.pending:
                close_fds(msg.fds)
                raise ProtocolViolation(f"{msg.request.name} reply to no request")
            head = self.pending[0]
            if msg.request != head.request:
                close_fds(msg.fds)
                raise ProtocolViolation(f"{msg.request.name} reply while waiting for "
                                        f"{head.request.name}")
            self.pending.popleft()
            self._note_reply(head, msg)
            return Reply(head, msg)
        close_fds(msg.fds)
        if msg.request == F.SET_FEATURES and self.vhost_pci_active:
            pushed = msg.payload.value
            ref = self.acked_features if self.acked_features is not None else self.features
            if pushed & ~ref:
                return self._ignored(msg, ProtocolViolation(
                    f"back-end pushed features 0x{pushed:x}, not a subset of 0x{ref:x} "
                    f"(extra 0x{pushed & ~ref:x})"))
            return BackendFeatures(pushed)
        why = ("" if self.vhost_pci_active or msg.request != F.SET_FEATURES
               else " (vhost-pci extension not negotiated)")
        return self._ignored(msg, ProtocolViolation(f"unsolicited {msg.request.name}{why}"))

    def _note_reply(self, req: Message, reply: Message) -> None:
        if req.request == F.GET_FEATURES:
            self.backend_features = reply.payload.value
        elif req.request == F.GET_PROTOCOL_FEATURES:
            self.backend_protocol_features = reply.payload.value
        elif req.request == F.GET_QUEUE_NUM:
            self.queue_num = reply.payload.value
        elif req.request == F.GET_MAX_MEM_SLOTS:
            self.max_mem_slots = reply.payload.value

    def _ignored(self, msg: Message, err: VhostUserError) -> Ignored:
        self.limiter.log(log, logging.WARNING, ("ignored", msg.request.name),
                         "vhost-user front-end ignored %s: %s", msg.request.name, err)
        if self.counters is not None:
            self.counters.note_refused(msg.request.name, err)
        if self.wire_log is not None:
            self.wire_log.error("rx", err)
        return Ignored(msg, err)

    def handle_channel(self, msg: Message):
        """A message on the back-end request channel -> (event or None,
        replies to send there)."""
        if self.wire_log is not None:
            self.wire_log.record("rx", msg, channel="backend-req")
        close_fds(msg.fds)
        if msg.is_reply:
            return self._ignored(msg, ProtocolViolation("reply on the back-end channel")), []
        event: Any
        if msg.request == B.CONFIG_CHANGE_MSG:
            event, ok = ConfigChange(), True
        elif msg.request in (B.VRING_CALL, B.VRING_ERR):
            cls = VringCall if msg.request == B.VRING_CALL else VringErr
            event, ok = cls(msg.payload.index), True
        else:   # IOTLB, host notifiers, shared objects: not supported by emu's front-end
            event, ok = self._ignored(msg, ProtocolViolation(f"{msg.request.name} not supported")), False
        replies = []
        if msg.need_reply or spec_of(msg.request).has_reply:
            replies.append(msg.reply(U64(0 if ok else 1)))
        for r in replies:
            if self.wire_log is not None:
                self.wire_log.record("tx", r, channel="backend-req")
        return event, replies
