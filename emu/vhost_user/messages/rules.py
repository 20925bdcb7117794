"""Per-request wire rules: which payload a request carries, how many fds may
come with it, what its reply looks like, which protocol feature it needs.
The codec and both state machines read these tables."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from emu.vhost_user.messages.payloads import (Config, DeviceStateTransfer, Inflight, Iotlb, Log,
                                              MemoryTable, Payload, Rarp, Raw, SingleMemRegion,
                                              U64, Uuid, VringAddr, VringArea, VringFd, VringState)
from emu.vhost_user.messages.requests import (BackendRequest, FrontendRequest, ProtocolFeature,
                                              SeedRequest)

# -- per-request rules --------------------------------------------------------------
class FdRule(enum.Enum):
    NONE = "none"              # no fd may come
    ONE = "one"                # exactly one
    OPTIONAL = "optional"      # 0 or 1 (extra fds tolerated by the spec, closed)
    NOFD_BIT = "nofd-bit"      # 1, or 0 when the payload's NOFD bit is set
    PER_REGION = "per-region"  # one per memory-table region

    def allowed(self, payload) -> range:
        if self is FdRule.NONE:
            return range(0, 1)
        if self is FdRule.ONE:
            return range(1, 2)
        if self is FdRule.OPTIONAL:
            return range(0, 2)
        if self is FdRule.NOFD_BIT:
            return range(0, 1) if payload.nofd else range(1, 2)
        n = len(payload.regions)
        return range(n, n + 1)


@dataclass(frozen=True)
class RequestSpec:
    """Wire rules of one request.

    ``payload``/``fds``: what the request carries.  ``reply``/``reply_fds``:
    its own reply, or ``None`` when it has none (it may still get a REPLY_ACK
    u64 if it sets NEED_REPLY).  ``status_reply``: the reply is a u64 status
    (0 = success), so a refused request can be answered instead of dropping
    the connection.  ``needs``: the protocol feature that must be negotiated
    before the request is valid.
    """

    payload: type[Payload] | None = None
    fds: FdRule = FdRule.NONE
    reply: type[Payload] | None = None
    reply_fds: FdRule = FdRule.NONE
    status_reply: bool = False
    needs: ProtocolFeature | None = None

    @property
    def has_reply(self) -> bool:
        return self.reply is not None


_F = FrontendRequest
_P = ProtocolFeature
FRONTEND_SPECS: dict[FrontendRequest, RequestSpec] = {
    _F.GET_FEATURES: RequestSpec(reply=U64),
    _F.SET_FEATURES: RequestSpec(U64),
    _F.SET_OWNER: RequestSpec(),
    _F.RESET_OWNER: RequestSpec(),
    _F.SET_MEM_TABLE: RequestSpec(MemoryTable, FdRule.PER_REGION),
    _F.SET_LOG_BASE: RequestSpec(Log, FdRule.ONE, reply=U64, status_reply=True, needs=_P.LOG_SHMFD),
    _F.SET_LOG_FD: RequestSpec(None, FdRule.ONE),
    _F.SET_VRING_NUM: RequestSpec(VringState),
    _F.SET_VRING_ADDR: RequestSpec(VringAddr),
    _F.SET_VRING_BASE: RequestSpec(VringState),
    _F.GET_VRING_BASE: RequestSpec(VringState, reply=VringState),
    _F.SET_VRING_KICK: RequestSpec(VringFd, FdRule.NOFD_BIT),
    _F.SET_VRING_CALL: RequestSpec(VringFd, FdRule.NOFD_BIT),
    _F.SET_VRING_ERR: RequestSpec(VringFd, FdRule.NOFD_BIT),
    _F.GET_PROTOCOL_FEATURES: RequestSpec(reply=U64),
    _F.SET_PROTOCOL_FEATURES: RequestSpec(U64),
    _F.GET_QUEUE_NUM: RequestSpec(reply=U64),
    _F.SET_VRING_ENABLE: RequestSpec(VringState),
    _F.SEND_RARP: RequestSpec(Rarp, needs=_P.RARP),
    _F.NET_SET_MTU: RequestSpec(U64, needs=_P.NET_MTU),
    _F.SET_BACKEND_REQ_FD: RequestSpec(None, FdRule.ONE, needs=_P.BACKEND_REQ),
    _F.IOTLB_MSG: RequestSpec(Iotlb),
    _F.SET_VRING_ENDIAN: RequestSpec(VringState, needs=_P.CROSS_ENDIAN),
    _F.GET_CONFIG: RequestSpec(Config, reply=Config, needs=_P.CONFIG),
    _F.SET_CONFIG: RequestSpec(Config, needs=_P.CONFIG),
    _F.CREATE_CRYPTO_SESSION: RequestSpec(Raw, reply=Raw, needs=_P.CRYPTO_SESSION),
    _F.CLOSE_CRYPTO_SESSION: RequestSpec(U64, needs=_P.CRYPTO_SESSION),
    _F.POSTCOPY_ADVISE: RequestSpec(reply=Raw, reply_fds=FdRule.OPTIONAL, needs=_P.PAGEFAULT),
    _F.POSTCOPY_LISTEN: RequestSpec(needs=_P.PAGEFAULT),
    _F.POSTCOPY_END: RequestSpec(reply=U64, status_reply=True, needs=_P.PAGEFAULT),
    _F.GET_INFLIGHT_FD: RequestSpec(Inflight, reply=Inflight, reply_fds=FdRule.ONE,
                                    needs=_P.INFLIGHT_SHMFD),
    _F.SET_INFLIGHT_FD: RequestSpec(Inflight, FdRule.ONE, needs=_P.INFLIGHT_SHMFD),
    _F.GPU_SET_SOCKET: RequestSpec(None, FdRule.ONE),
    _F.RESET_DEVICE: RequestSpec(needs=_P.RESET_DEVICE),
    _F.VRING_KICK: RequestSpec(VringState, needs=_P.INBAND_NOTIFICATIONS),
    _F.GET_MAX_MEM_SLOTS: RequestSpec(reply=U64),
    _F.ADD_MEM_REG: RequestSpec(SingleMemRegion, FdRule.ONE, needs=_P.CONFIGURE_MEM_SLOTS),
    _F.REM_MEM_REG: RequestSpec(SingleMemRegion, FdRule.OPTIONAL, needs=_P.CONFIGURE_MEM_SLOTS),
    _F.SET_STATUS: RequestSpec(U64, needs=_P.STATUS),
    _F.GET_STATUS: RequestSpec(reply=U64),
    _F.GET_SHARED_OBJECT: RequestSpec(Uuid, reply=U64, reply_fds=FdRule.OPTIONAL,
                                      status_reply=True, needs=_P.SHARED_OBJECT),
    _F.SET_DEVICE_STATE_FD: RequestSpec(DeviceStateTransfer, FdRule.ONE, reply=U64,
                                        reply_fds=FdRule.OPTIONAL, status_reply=True,
                                        needs=_P.DEVICE_STATE),
    _F.CHECK_DEVICE_STATE: RequestSpec(reply=U64, status_reply=True, needs=_P.DEVICE_STATE),
}

_B = BackendRequest
BACKEND_SPECS: dict[BackendRequest, RequestSpec] = {
    _B.IOTLB_MSG: RequestSpec(Iotlb),
    _B.CONFIG_CHANGE_MSG: RequestSpec(),
    _B.VRING_HOST_NOTIFIER_MSG: RequestSpec(VringArea, FdRule.NOFD_BIT),
    _B.VRING_CALL: RequestSpec(VringState),
    _B.VRING_ERR: RequestSpec(VringState),
    _B.SHARED_OBJECT_ADD: RequestSpec(Uuid),
    _B.SHARED_OBJECT_REMOVE: RequestSpec(Uuid),
    _B.SHARED_OBJECT_LOOKUP: RequestSpec(Uuid, reply=U64, reply_fds=FdRule.OPTIONAL,
                                         status_reply=True),
}

SEED_SPECS: dict[SeedRequest, RequestSpec] = {
    SeedRequest.SET_DEVICE_ID: RequestSpec(U64),
    SeedRequest.SET_VHOST_PCI: RequestSpec(U64),
}


def spec_of(request: FrontendRequest | BackendRequest | SeedRequest) -> RequestSpec:
    if isinstance(request, BackendRequest):
        return BACKEND_SPECS[request]
    if isinstance(request, SeedRequest):
        return SEED_SPECS[request]
    return FRONTEND_SPECS[request]


def reply_rules(request) -> tuple[type[Payload] | None, FdRule]:
    """(payload class, fd rule) of a reply to ``request``: its own reply, or
    the REPLY_ACK u64 when it has none."""
    spec = spec_of(request)
    if spec.reply is not None:
        return spec.reply, spec.reply_fds
    return U64, FdRule.NONE
