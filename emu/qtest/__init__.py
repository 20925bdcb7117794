"""qtest: QEMU 7.2's test protocol, so QEMU's own qos-test can drive emu.

Layout (one job per module):

* ``numbers``  -- numbers as QEMU's qemu_strtou64/strtoi64/strtoi parse them
* ``lines``    -- LineDecoder: the byte stream -> bounded command lines
* ``commands`` -- parse and check one command line into a typed Command
* ``target``   -- QtestTarget: what the machine implements for qtest
* ``session``  -- QtestSession (sans-IO): commands -> target -> replies, IRQ lines
* ``log``      -- QtestLog: the ``-qtest-log`` file in QEMU's format
* ``client``   -- QtestConnection: a session over a connected unix socket (asyncio)
* ``endpoint`` -- QtestEndpoint: the ``-qtest`` chardev (connect, listen, fd), one
  connection after another
* ``machine_target`` -- MachineTarget: the QtestTarget of an emu machine (its
  address spaces, virtual clock and QOM tree)

The launcher wires them (``emu/launcher/qtest_mode.py``); ``docs/qtest.md``
says what QEMU's qos-test gets from them.
"""
from emu.qtest.client import QtestConnection
from emu.qtest.commands import parse
from emu.qtest.errors import BadCommand, LineTooLong, QtestError, TargetError, UnknownDevice
from emu.qtest.lines import LineDecoder
from emu.qtest.log import QtestLog
from emu.qtest.session import QtestCounters, QtestSession
from emu.qtest.target import QtestTarget

__all__ = [
    "BadCommand", "LineDecoder", "LineTooLong", "QtestConnection", "QtestCounters",
    "QtestError", "QtestLog", "QtestSession", "QtestTarget", "TargetError", "UnknownDevice",
    "parse",
]
