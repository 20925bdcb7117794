"""Host-side frame captures (``-object filter-dump``) on the queues a
driver creates.  Not something a driver does: the machine hands the guest
program its devices' captures, as a logic analyser is clipped onto a bus,
and the queue that moves a device's frames records them (emu.pcap)."""


def tap(q, taps, direction: str) -> None:
    """Attach to ``q`` the capture (if any) that wants ``direction`` frames
    (rx: into this VM, tx: out of it)."""
    for t in taps:
        if t.wants(direction):
            q.set_capture(t)
            return
