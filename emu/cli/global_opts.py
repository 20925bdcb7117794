"""-set GROUP.ID.PROP=VALUE and -global DRIVER.PROP=VALUE (QEMU 7.2's
``qemu_set_option`` and ``qemu_global_option``).

``-set`` changes one property of an option given before it (``-set
netdev.hs0.queues=2`` after ``-netdev ...,id=hs0``): the option is parsed
again with the property replaced or added, with every check it had, and
keeps its place on the command line.  Groups: device, netdev, chardev,
object.  ``-global`` sets the default of a property for every device of a
driver, ``-device`` and ``device_add`` alike (applied once the whole line
is read, as QEMU applies them when each device is made).
"""
from __future__ import annotations

import re

from emu.cli.schemas import GLOBAL
from emu.cli.state import OPTIONS, ParseState, option
from emu.config import GlobalProperty
from emu.keyval import OptionError, Schema, split_opts, typed_values, parse_pairs

_SET_RE = re.compile(r"([^.]{1,63})\.([^.]{1,63})\.(.+)\Z", re.S)
_GLOBAL_RE = re.compile(r"([^.=]{1,63})\.([^=]{1,63})=(.*)\Z", re.S)
#: -set group -> (the config list, the option that makes its records)
SET_GROUPS = {"device": ("devices", "device"), "netdev": ("netdevs", "netdev"),
              "chardev": ("chardevs", "chardev"), "object": ("objects", "object")}
_GLOBAL_FORM = Schema(GLOBAL.params, unknown="Invalid parameter '{key}'")


def _escape(item: str) -> str:
    return item.replace(",", ",,")


def with_property(arg: str, prop: str, value: str) -> str:
    """``arg`` (an option's text) with ``prop`` set to ``value``."""
    items = [i for i in split_opts(arg) if i.partition("=")[0] != prop or "=" not in i]
    return ",".join(_escape(i) for i in items + [f"{prop}={value}"])


@option("set")
def set_(p: ParseState, arg: str) -> None:
    m = _SET_RE.match(arg)
    if m is None or "=" not in m.group(3):
        raise OptionError(f"can't parse: \"{arg}\"")
    group, ident, assignment = m.groups()
    prop, _, value = assignment.partition("=")
    if group not in SET_GROUPS:
        raise OptionError(f"-set is not supported with {group}")
    attr, opt = SET_GROUPS[group]
    records = getattr(p.cfg, attr)
    index = next((i for i, r in enumerate(records) if getattr(r, "id", None) == ident), None)
    if index is None:
        raise OptionError(f"there is no {group} \"{ident}\" defined")
    record = records[index]
    prefix = f"-{opt} "
    if not record.origin.startswith(prefix):
        raise OptionError(f"-set cannot change {group} \"{ident}\" (not given by -{opt})")
    new_arg = with_property(record.origin[len(prefix):], prop, value)
    here = p.origin
    del records[index]
    p.origin = prefix + new_arg
    try:
        OPTIONS[opt].handler(p, new_arg)
    except OptionError:
        records.insert(index, record)
        p.origin = here
        raise
    p.origin = here
    records.insert(index, records.pop())          # keep its place on the line


@option("global")
def global_(p: ParseState, arg: str) -> None:
    m = _GLOBAL_RE.match(arg)
    if m is not None:
        driver, prop, value = m.groups()
    else:
        values = typed_values(parse_pairs(arg), _GLOBAL_FORM)
        missing = next((k for k in ("driver", "property", "value") if k not in values), None)
        if missing is not None:
            raise OptionError(f"Parameter '{missing}' is missing")
        driver, prop, value = values["driver"], values["property"], values["value"]
    p.cfg.globals.append(GlobalProperty(driver, prop, value, origin=p.origin))
