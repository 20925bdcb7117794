"""vhost-user: sans-IO codec, back-end and front-end state machines, the
vhost-pci extension, an asyncio unix-socket transport and a wire log.

See docs/vhost-user.md.  Layout (one job per module):

* ``messages``  -- request ids, flags, feature bits, payload classes, per-request rules
* ``codec``     -- Message, incremental Decoder, encode
* ``extension`` -- the vhost-pci extension and the protocol bit-4 rule
* ``device``    -- BackendDevice (what a device implements), memory mappers
* ``vring``     -- the back-end's view of a ring (translation, checks)
* ``shm``       -- fd checks, dirty log, inflight area
* ``backend``   -- Backend: one connection's back-end state machine
* ``frontend``  -- Frontend, the front-end's sans-IO state machine
* ``client``    -- FrontendClient: a Frontend on a socket (asyncio)
* ``transport`` -- MessageStream, BackendConnection, BackendServer/Client
* ``sockets``   -- listening and connecting unix sockets, reconnect back-off
* ``wirelog``   -- per-connection JSON-lines wire log
"""
from emu.vhost_user.backend import Backend
from emu.vhost_user.codec import Decoder, Message, encode, request
from emu.vhost_user.device import BackendDevice, DefaultMapper, MemoryMapper
from emu.vhost_user.client import FrontendClient, FrontendVring
from emu.vhost_user.frontend import Frontend
from emu.vhost_user.messages import (BackendRequest, Flags, FrontendRequest, ProtocolFeature,
                                     VirtioFeature)
from emu.vhost_user.transport import BackendClient, BackendConnection, BackendServer
from emu.vhost_user.vring import Vring
from emu.vhost_user.wirelog import WireLog

__all__ = [
    "Backend", "BackendClient", "BackendConnection", "BackendDevice", "BackendRequest",
    "BackendServer", "Decoder", "DefaultMapper", "Flags", "Frontend", "FrontendClient",
    "FrontendRequest", "FrontendVring", "MemoryMapper", "Message", "ProtocolFeature",
    "VirtioFeature", "Vring", "WireLog", "encode", "request",
]
