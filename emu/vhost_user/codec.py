"""Sans-IO vhost-user framing: bytes + fds in, typed :class:`Message` out.

The header is ``u32 request, u32 flags, u32 size`` (little endian), then
``size`` payload bytes; fds travel as SCM_RIGHTS with the header.  The
:class:`Decoder` checks the header as soon as its 12 bytes are in (so a
hostile size never makes it buffer), decodes the payload into its typed
class, and checks the fd count against the request's rule.  Any framing
error raises :class:`MalformedMessage` and *breaks* the decoder: the byte
stream cannot be resynchronised, so the connection must go.  The decoder
closes every fd it does not hand out in a message.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from emu.vhost_user.errors import MalformedMessage, UsageError
from emu.vhost_user.messages import (KNOWN_FLAGS, MAX_FDS, VERSION_MASK, BackendRequest,
                                     Flags, FrontendRequest, Payload, SeedRequest, reply_rules,
                                     spec_of)

HEADER = struct.Struct("<III")
HEADER_SIZE = HEADER.size
DEFAULT_MAX_PAYLOAD = 4096     # rust-vmm's cap; net's largest real payload is 268


def close_fds(fds: Iterable[int]) -> None:
    """Close fds we were handed and will not keep; never raises."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


@dataclass(frozen=True)
class Message:
    """One vhost-user message.  ``fds`` belong to whoever holds the message:
    a receiver must keep or close them; a sender keeps ownership (the kernel
    duplicates them into the peer)."""

    request: FrontendRequest | BackendRequest | SeedRequest
    flags: int = Flags.VERSION
    payload: Payload | None = None
    fds: tuple[int, ...] = ()

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & Flags.REPLY)

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & Flags.NEED_REPLY)

    def reply(self, payload: Payload | None = None, fds: Sequence[int] = ()) -> Message:
        """The reply to this request: same id, flags VERSION|REPLY."""
        return Message(self.request, Flags.VERSION | Flags.REPLY, payload, tuple(fds))

    def __str__(self) -> str:
        kind = "reply" if self.is_reply else "request"
        return f"{self.request.name} {kind} flags=0x{self.flags:x} {self.payload} fds={len(self.fds)}"


def request(req, payload: Payload | None = None, fds: Sequence[int] = (),
            need_reply: bool = False) -> Message:
    """Build a request message."""
    flags = Flags.VERSION | (Flags.NEED_REPLY if need_reply else 0)
    return Message(req, flags, payload, tuple(fds))


def _rules(msg_request, is_reply: bool):
    if is_reply:
        return reply_rules(msg_request)
    spec = spec_of(msg_request)
    return spec.payload, spec.fds


def encode(msg: Message) -> tuple[bytes, tuple[int, ...]]:
    """-> (wire bytes, fds to send with them).  Checks the message against
    the request's rules: emu must never send what it would reject."""
    cls, fd_rule = _rules(msg.request, msg.is_reply)
    if msg.flags & ~KNOWN_FLAGS or msg.flags & VERSION_MASK != 1:
        raise UsageError(f"bad flags 0x{msg.flags:x} for {msg.request.name}")
    if cls is None:
        if msg.payload is not None:
            raise UsageError(f"{msg.request.name} carries no payload")
        body = b""
    else:
        if not isinstance(msg.payload, cls):
            raise UsageError(f"{msg.request.name} needs a {cls.__name__} payload, "
                             f"got {type(msg.payload).__name__}")
        body = msg.payload.pack()
    if len(msg.fds) not in fd_rule.allowed(msg.payload) or len(msg.fds) > MAX_FDS:
        raise UsageError(f"{msg.request.name} cannot carry {len(msg.fds)} fds")
    return HEADER.pack(int(msg.request), int(msg.flags), len(body)) + body, tuple(msg.fds)


class Decoder:
    """Incremental decoder for one byte stream.

    ``requests`` selects the id space: :class:`FrontendRequest` on the main
    socket, :class:`BackendRequest` on the back-end request channel.  A
    message with the REPLY flag is decoded as a reply to that request.

    fds fed with some bytes belong to the message that the first of those
    bytes is part of (the sender attaches them to the header's sendmsg).
    Read at most :meth:`wanted` bytes per ``recvmsg`` and this is exact.

    ``seed_dialect``: ids 20 and 21 are the seed's SET_DEVICE_ID and
    SET_VHOST_PCI (set by the owner once a "seed" vhost-pci connection has
    negotiated the extension; it applies from the next header decoded).
    """

    def __init__(self, requests: type[FrontendRequest] | type[BackendRequest] = FrontendRequest,
                 *, max_payload: int = DEFAULT_MAX_PAYLOAD, max_fds: int = MAX_FDS):
        self.requests = requests
        self.max_payload = max_payload
        self.max_fds = max_fds
        self._buf = bytearray()
        self._base = 0                                # stream offset of _buf[0]
        self._fds: list[tuple[int, list[int]]] = []   # (stream offset, fds)
        self._header: tuple | None = None             # validated header of the message at _buf[0]
        self.broken: MalformedMessage | None = None
        self.seed_dialect = False

    # -- input ----------------------------------------------------------------
    def feed(self, data: bytes, fds: Sequence[int] = ()) -> None:
        if self.broken is not None:
            close_fds(fds)
            return
        if fds:
            self._fds.append((self._base + len(self._buf), list(fds)))
        self._buf += data

    def wanted(self) -> int:
        """Bytes still needed to complete the header or message at hand (>= 1)."""
        if self._header is None:
            return max(1, HEADER_SIZE - len(self._buf)) if len(self._buf) < HEADER_SIZE else 1
        need = HEADER_SIZE + self._header[2] - len(self._buf)
        return max(1, need)

    @property
    def has_partial(self) -> bool:
        """True if some bytes of an unfinished message are buffered (EOF now
        would truncate a message)."""
        return bool(self._buf) or bool(self._fds)

    # -- output ---------------------------------------------------------------
    def next_message(self) -> Message | None:
        """The next whole message, or None if more bytes are needed."""
        if self.broken is not None:
            raise self.broken
        try:
            return self._next()
        except MalformedMessage as e:
            self.broken = e
            self.close()
            raise

    def _next(self) -> Message | None:
        if len(self._buf) < HEADER_SIZE:
            self._check_fd_budget(len(self._buf))
            return None
        if self._header is None:
            self._header = self._parse_header(bytes(self._buf[:HEADER_SIZE]))
        req, flags, size, cls, fd_rule = self._header
        end = HEADER_SIZE + size
        if len(self._buf) < end:
            self._check_fd_budget(len(self._buf))
            return None
        fds = self._take_fds(end)
        try:
            body = bytes(self._buf[HEADER_SIZE:end])
            payload = cls.unpack(body) if cls is not None else None
            if len(fds) not in fd_rule.allowed(payload):
                raise MalformedMessage(
                    f"{req.name} {'reply ' if flags & Flags.REPLY else ''}came with "
                    f"{len(fds)} fds, allowed {_describe(fd_rule.allowed(payload))}")
        except BaseException:
            close_fds(fds)
            raise
        del self._buf[:end]
        self._base += end
        self._header = None
        return Message(req, flags, payload, tuple(fds))

    def _parse_header(self, raw: bytes):
        req_id, flags, size = HEADER.unpack(raw)
        if flags & VERSION_MASK != 1:
            raise MalformedMessage(f"protocol version {flags & VERSION_MASK}, expected 1")
        if flags & ~KNOWN_FLAGS:
            raise MalformedMessage(f"unknown header flags 0x{flags & ~KNOWN_FLAGS:x}")
        is_reply = bool(flags & Flags.REPLY)
        if is_reply and flags & Flags.NEED_REPLY:
            raise MalformedMessage("a reply with NEED_REPLY set")
        try:
            if self.seed_dialect and self.requests is FrontendRequest \
                    and req_id in SeedRequest._value2member_map_:
                req = SeedRequest(req_id)
            else:
                req = self.requests(req_id)
        except ValueError:
            raise MalformedMessage(f"unknown {self.requests.__name__} id {req_id}") from None
        if size > self.max_payload:
            raise MalformedMessage(f"{req.name} payload of {size} bytes exceeds the "
                                   f"{self.max_payload}-byte cap")
        cls, fd_rule = _rules(req, is_reply)
        ok = size == 0 if cls is None else cls.valid_size(size)
        if not ok:
            raise MalformedMessage(f"{req.name} {'reply ' if is_reply else ''}payload of "
                                   f"{size} bytes has the wrong size")
        return req, flags, size, cls, fd_rule

    def _take_fds(self, end: int) -> list[int]:
        limit = self._base + end
        taken = [fd for off, fds in self._fds if off < limit for fd in fds]
        self._fds = [(off, fds) for off, fds in self._fds if off >= limit]
        return taken

    def _check_fd_budget(self, buffered: int) -> None:
        limit = self._base + max(buffered, 1)
        n = sum(len(fds) for off, fds in self._fds if off < limit)
        if n > self.max_fds:
            raise MalformedMessage(f"{n} fds for one message, cap is {self.max_fds}")

    def close(self) -> None:
        """Drop buffered bytes and close every fd not handed out."""
        for _, fds in self._fds:
            close_fds(fds)
        self._fds = []
        self._buf.clear()


def _describe(r: range) -> str:
    return str(r.start) if len(r) == 1 else f"{r.start}..{r.stop - 1}"
