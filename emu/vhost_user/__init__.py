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
import importlib

# Importing the package imports none of its modules: each name is loaded on
# first use (a VM that never speaks vhost-user, or not yet, does not pay for
# the codec, the state machines and the transport at start-up).
_WHERE = {"Backend": "backend", "Decoder": "codec", "Message": "codec", "encode": "codec",
          "request": "codec", "BackendDevice": "device", "DefaultMapper": "device",
          "MemoryMapper": "device", "Frontend": "frontend", "FrontendClient": "client",
          "FrontendVring": "client", "BackendRequest": "messages", "Flags": "messages",
          "FrontendRequest": "messages", "ProtocolFeature": "messages",
          "VirtioFeature": "messages", "BackendClient": "transport",
          "BackendConnection": "transport", "BackendServer": "transport", "Vring": "vring",
          "WireLog": "wirelog"}


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'emu.vhost_user' has no attribute {name!r}")
    return getattr(importlib.import_module(f"emu.vhost_user.{module}"), name)


__all__ = [
    "Backend", "BackendClient", "BackendConnection", "BackendDevice", "BackendRequest",
    "BackendServer", "Decoder", "DefaultMapper", "Flags", "Frontend", "FrontendClient",
    "FrontendRequest", "FrontendVring", "MemoryMapper", "Message", "ProtocolFeature",
    "VirtioFeature", "Vring", "WireLog", "encode", "request",
]
