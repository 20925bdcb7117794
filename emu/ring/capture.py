"""The C data path's frame recorder (``struct emu_capture``)."""
from __future__ import annotations

from emu._ring import ffi


class Capture:
    """Records every frame the queues it is attached to move
    (``set_capture``), as one pcap record per frame appended to ``fd``
    with one ``writev``.  ``fd`` should be opened ``O_APPEND`` so records
    from two data-path threads never interleave; the file header is the
    owner's business (:mod:`emu.pcap`).  Frames are cut to ``snaplen``."""

    def __init__(self, fd: int, snaplen: int):
        self._c = ffi.new("struct emu_capture *")
        self._c.fd = fd
        self._c.snaplen = snaplen

    @property
    def frames(self) -> int:
        return int(self._c.frames)

    @property
    def bytes(self) -> int:
        """Bytes written into records (after ``snaplen``)."""
        return int(self._c.bytes)

    @property
    def errors(self) -> int:
        """Failed or short writes."""
        return int(self._c.errors)

    def detach(self) -> None:
        """Stop writing to ``fd``.  Call only once no data path uses the capture."""
        self._c.fd = -1
