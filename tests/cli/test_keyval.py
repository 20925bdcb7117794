"""QEMU option-string syntax: splitting, escaping, implied keys, typed values."""
from __future__ import annotations

import pytest

from emu.keyval import (OptionError, Param, Schema, boolean, choice, identifier, integer,
                        parse_opts, parse_pairs, size, split_head, split_opts, to_size)


@pytest.mark.parametrize("text, items", [
    ("", []),
    ("a=1", ["a=1"]),
    ("a=1,b=2", ["a=1", "b=2"]),
    ("path=/tmp/a,,b,server=on", ["path=/tmp/a,b", "server=on"]),
    ("a=1,", ["a=1"]),                      # trailing comma ends the list
    ("a=x,,", ["a=x,"]),                    # an escaped comma at the end is data
    ("a=,,,,,b=2", ["a=,,", "b=2"]),
    (",", [""]),
])
def test_split_opts(text, items):
    assert split_opts(text) == items


def test_implied_key_takes_the_first_bare_element_only():
    assert parse_pairs("virtio-net-pci,netdev=n0", "driver") == [("driver", "virtio-net-pci"), ("netdev", "n0")]
    assert parse_pairs("driver=virtio-net-pci,netdev=n0", "driver") == [("driver", "virtio-net-pci"), ("netdev", "n0")]
    # an escaped comma belongs to the implied value, as in QEMU
    assert parse_pairs("virtio-net-pci,,x", "driver") == [("driver", "virtio-net-pci,x")]
    assert parse_pairs("server,nowait") == [("server", None), ("nowait", None)]
    assert split_head("socket,id=c", "backend") == ("socket", [("id", "c")])
    assert split_head("id=c,backend=socket", "backend") == ("socket", [("id", "c")])
    assert split_head("id=c", "backend") == ("", [("id", "c")])


@pytest.mark.parametrize("text, value", [
    ("on", True), ("yes", True), ("true", True), ("y", True),
    ("off", False), ("no", False), ("false", False), ("n", False),
])
def test_booleans(text, value):
    assert boolean("share", text) is value


@pytest.mark.parametrize("text", ["ON", "1", "", "maybe"])
def test_bad_boolean(text):
    with pytest.raises(OptionError, match=r"^Parameter 'share' expects 'on' or 'off'$"):
        boolean("share", text)


@pytest.mark.parametrize("text, value", [
    ("4096", 4096), ("4k", 4096), ("4K", 4096), ("256M", 256 << 20), ("1G", 1 << 30),
    ("2T", 2 << 40), ("1.5G", 3 << 29), ("0x1000", 4096), ("0x10M", 16 << 20), ("512B", 512),
    (" 8M ", 8 << 20), ("15E", 15 << 60),
])
def test_sizes(text, value):
    assert to_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Z", "1.5", "16E", "-1", "1M1", "0x", "1.5B"])
def test_bad_sizes(text):
    assert to_size(text) is None
    with pytest.raises(OptionError, match=r"^Parameter 'size' expects a size value$"):
        size("size", text)


def test_default_unit():
    assert to_size("256", default_suffix="M") == 256 << 20
    assert to_size("256k", default_suffix="M") == 256 << 10


def test_integer():
    parse = integer(1, 1024)
    assert parse("queues", "8") == 8
    assert parse("queues", "0x10") == 16
    with pytest.raises(OptionError, match=r"^Parameter 'queues' expects integer$"):
        parse("queues", "x")
    with pytest.raises(OptionError, match=r"^Parameter 'queues' expects a value in the range \[1, 1024\]$"):
        parse("queues", "0")


def test_identifier_and_choice():
    assert identifier("id", "net0.a-b_c") == "net0.a-b_c"
    for bad in ("", "1bad", "a b", "a,b", "_x"):
        with pytest.raises(OptionError, match=r"^Parameter 'id' expects an identifier\nIdentifiers consist"):
            identifier("id", bad)
    with pytest.raises(OptionError, match=r"^Parameter 'mode' does not accept value 'x'$"):
        choice("control", "readline")("mode", "x")


SCHEMA = Schema((Param("id", identifier), Param("server", boolean), Param("wait", boolean),
                 Param("path")), implied="path", unknown="Property 'thing.{key}' not found")


def test_parse_opts_typed_values():
    assert parse_opts("/tmp/a,,b,id=c0,server=on,wait=off", SCHEMA) == {
        "path": "/tmp/a,b", "id": "c0", "server": True, "wait": False}


def test_short_form_booleans_warn_like_qemu():
    warnings: list[str] = []
    assert parse_opts("id=c,server,nowait", SCHEMA, warnings) == {"id": "c", "server": True, "wait": False}
    assert warnings == [
        "warning: short-form boolean option 'server' deprecated\nPlease use server=on instead",
        "warning: short-form boolean option 'nowait' deprecated\nPlease use wait=off instead",
    ]


def test_parse_opts_errors():
    with pytest.raises(OptionError, match=r"^Property 'thing.bogus' not found$"):
        parse_opts("id=c,bogus=1", SCHEMA)
    with pytest.raises(OptionError, match=r"^Property 'thing.nobogus' not found$"):
        parse_opts("id=c,nobogus", SCHEMA)
    with pytest.raises(OptionError, match=r"^Parameter 'id' given twice$"):
        parse_opts("id=a,id=b", SCHEMA)
    with pytest.raises(OptionError, match=r"^Expected '=' after parameter 'id'$"):
        parse_opts("/p,id", SCHEMA)
    with pytest.raises(OptionError, match=r"^Parameter 'server' expects 'on' or 'off'$"):
        parse_opts("id=c,server=maybe", SCHEMA)


def test_schema_help_lists_every_parameter():
    text = SCHEMA.help("thing")
    assert text.splitlines()[0] == "thing options:"
    for name in ("id=<id>", "server=<on|off>", "wait=<on|off>", "path=<str>"):
        assert name in text
