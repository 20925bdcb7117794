"""Bits vhost owns in the virtio feature space: offered by a vhost back-end
(kernel vhost-net or a vhost-user back-end) to its front-end, never to a
guest (Linux ``vhost_types.h``; QEMU ``docs/interop/vhost-user.rst``)."""
from __future__ import annotations

F_LOG_ALL = 1 << 26             # VHOST_F_LOG_ALL: dirty-page logging (migration)
F_PROTOCOL_FEATURES = 1 << 30   # VHOST_USER_F_PROTOCOL_FEATURES
