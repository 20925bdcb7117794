"""vhost-user message definitions, in three modules of one job each:

- :mod:`.requests`: request ids, header flags, feature bits, wire limits;
- :mod:`.payloads`: one frozen dataclass per wire layout (``pack``/``unpack``,
  exact sizes, fields the wire format fixes, :class:`MalformedMessage`);
- :mod:`.rules`: per request, the payload, the fds that may come with it,
  its reply and the protocol feature it needs (:data:`FRONTEND_SPECS`,
  :data:`BACKEND_SPECS`), read by the codec and both state machines.

Nothing here does I/O.  Every public name is re-exported here.
"""
from emu.vhost_user.messages.requests import (  # noqa: F401
    U64_MAX, MAX_CONFIG_SIZE, MAX_MEM_TABLE_REGIONS, MAX_FDS, VRING_INDEX_MASK, VRING_NOFD_MASK,
    FrontendRequest, BackendRequest, SeedRequest, VHOST_PCI_START, VHOST_PCI_STOP, Flags,
    VERSION_MASK, KNOWN_FLAGS, ProtocolFeature, VirtioFeature, flag_names,
)
from emu.vhost_user.messages.payloads import (  # noqa: F401
    Payload, U64, VringState, VRING_F_LOG, VringAddr, VringFd, VringFdWord, MemoryRegion,
    MemoryTable, SingleMemRegion, Log, CONFIG_FLAG_MIGRATION, Config, Inflight, VringArea,
    IotlbType, Iotlb, Rarp, Uuid, DeviceStateTransfer, Raw,
)
from emu.vhost_user.messages.rules import (  # noqa: F401
    FdRule, RequestSpec, FRONTEND_SPECS, BACKEND_SPECS, SEED_SPECS, spec_of, reply_rules,
)
