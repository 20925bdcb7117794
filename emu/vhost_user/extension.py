"""The vhost-pci extension (Wei Wang's seed patch) and the bit-4 rule.

The seed gave protocol-feature bit 4 to ``VHOST_PCI``; upstream QEMU 2.9
gave the same bit to ``NET_MTU``.  A connection therefore decides once,
when SET_PROTOCOL_FEATURES is sent/received, what bit 4 means on it:

* ``"auto"`` (default): the extension is active only if both sides ack bit
  4 **and** emu's private marker bit 63 (``EMU_VHOST_PCI``).  Stock QEMU and
  DPDK mask unknown bits, so against them bit 4 is always ``NET_MTU``.
* ``"seed"``: the local configuration says the peer is seed-era and knows
  only bit 4: bit 4 acked means vhost-pci.
* ``"off"``: never; bit 4 is ``NET_MTU``.

The seed (v1) also took protocol bit 5 for its SET_DEVICE_ID request (id
20) and id 21 for SET_VHOST_PCI; today those are BACKEND_REQ and
SET_BACKEND_REQ_FD.  In ``"seed"`` mode emu therefore never offers or acks
bit 5, and decodes ids 20/21 as the seed's requests once the extension is on.

When active, the back-end may send ``SET_FEATURES`` to the front-end on the
main socket (its driver's negotiated features); the front-end, if that set
is a subset of what it negotiated, makes its device renegotiate.  When not
active nobody sends an unsolicited message and ``NET_SET_MTU`` is valid
once bit 4 is acked.
"""
from __future__ import annotations

from emu.vhost_user.errors import UsageError
from emu.vhost_user.messages import ProtocolFeature

MODES = ("auto", "seed", "off")
BIT4 = int(ProtocolFeature.VHOST_PCI)
MARKER = int(ProtocolFeature.EMU_VHOST_PCI)


SEED_BIT5 = int(ProtocolFeature.BACKEND_REQ)   # the seed's DEVICE_ID feature


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"vhost_pci={mode!r}: expected one of {', '.join(MODES)}")
    return mode


def offer_bits(mode: str) -> int:
    """Protocol bits a back-end adds to its offer for the extension."""
    return {"auto": BIT4 | MARKER, "seed": BIT4, "off": 0}[check_mode(mode)]


def reserved_bits(mode: str) -> int:
    """Protocol bits that mean something else in this mode: never offered
    nor acked as their modern meaning."""
    return SEED_BIT5 if check_mode(mode) == "seed" else 0


def ack_bits(mode: str, offered: int) -> int:
    """Bits a front-end acks for the extension, given the back-end's offer."""
    check_mode(mode)
    if mode == "auto" and offered & BIT4 and offered & MARKER:
        return BIT4 | MARKER
    if mode == "seed" and offered & BIT4:
        return BIT4
    return 0


def is_active(mode: str, acked: int) -> bool:
    """Whether the extension is on, given the acked protocol features."""
    check_mode(mode)
    if mode == "auto":
        return bool(acked & BIT4 and acked & MARKER)
    if mode == "seed":
        return bool(acked & BIT4)
    return False


def net_mtu_negotiated(mode: str, acked: int) -> bool:
    """Bit 4 means NET_MTU on this connection and was acked."""
    return bool(acked & BIT4) and not is_active(mode, acked)
