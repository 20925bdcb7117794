"""-guest values are checked where they enter: every parameter of every
driver and app, typed and bounded (emu.guest.registry), refused with a
QEMU-style message before anything starts."""
from __future__ import annotations

import pytest

from emu.cli import CommandLineError, EarlyExit, parse_args
from emu.guest import registry
from emu.keyval import OptionError

from tests.guest_params import APP_CASES, DRIVER_CASES, RUNTIME_CHECKED, number, onoff, rng
from tests.qmp.emu_process import EMU_CMD, start, stop

CASES = ([(drv, "sink", key, value, msg) for drv, cases in DRIVER_CASES.items()
          for key, value, msg in cases]
         + [(drv, app, key, value, msg) for (drv, app), cases in APP_CASES.items()
            for key, value, msg in cases])


def _error(argv: list[str]) -> str:
    with pytest.raises(CommandLineError) as e:
        parse_args(argv)
    return str(e.value)


@pytest.mark.parametrize("driver, app, key, value, message", CASES,
                         ids=[f"{d}-{a}-{k}={v}" for d, a, k, v, _ in CASES])
def test_a_bad_value_is_refused_where_it_enters(driver, app, key, value, message):
    arg = f"{driver},app={app},{key}={value}"
    assert _error(["-guest", arg]) == f"-guest {arg}: {message}"


@pytest.mark.parametrize("driver, app, key, value, message", CASES,
                         ids=[f"{d}-{a}-{k}={v}" for d, a, k, v, _ in CASES])
def test_a_bad_value_after_good_ones_is_refused_the_same(driver, app, key, value, message):
    # after good keys (the driver's, the app's): the bad one is reported
    good = "".join(f"{k}={v}," for k, v in (("msix", "on"), ("layout", "0")) if k != key)
    good += {"gen": "size=64,", "pingpong": "count=10,"}.get(app, "") if key not in ("size", "count") else ""
    arg = f"{driver},app={app},{good}{key}={value}"
    assert _error(["-guest", arg]) == f"-guest {arg}: {message}"


def test_every_parameter_has_its_bad_values_tested():
    for name, drv in registry.DRIVERS.items():
        assert {k for k, _, _ in DRIVER_CASES[name]} >= {p.name for p in drv.params}, name
        for app, spec in drv.apps.items():
            keys = {k for k, _, _ in APP_CASES[(name, app)]}
            want = {p.name for p in spec.params} - {k for d, a, k in RUNTIME_CHECKED
                                                     if (d, a) == (name, app)}
            assert keys >= want, (name, app, want - keys)
            assert keys - {p.name for p in spec.params} - {p.name for p in drv.params}, \
                f"{name} app={app}: no unknown key tested"


def test_good_values_are_typed():
    cfg = parse_args(["-guest", "virtio-net,app=gen,rate=200k,count=1.5m,size=1518,burst=64,"
                      "verify=on,dst=52-54-00-AA-BB-CC,mode=interrupt,queue_size=512,msix=off,"
                      "tx_buf_size=2048,layout=2,mrg_rxbuf=off",
                      "-chardev", "socket,id=c,path=/x", "-netdev", "vhost-user,id=n,chardev=c",
                      "-device", "virtio-net-pci,netdev=n"])
    assert cfg.guest.params == {"rate": 200_000, "count": 1_500_000, "size": 1518, "burst": 64,
                                "verify": True, "dst": "52:54:00:aa:bb:cc", "mode": "interrupt",
                                "queue_size": 512, "msix": False, "tx_buf_size": 2048, "layout": 2,
                                "mrg_rxbuf": False}
    cfg = parse_args(["-guest", "vhost-pci-net,app=responder,ip=10.0.0.2,mac=02:00:00:00:00:02",
                      "-chardev", "socket,id=c,path=/x", "-device", "vhost-pci-net,chardev=c"])
    assert cfg.guest.params == {"ip": "10.0.0.2", "mac": "02:00:00:00:00:02"}


def test_the_app_gets_every_parameter_with_its_default():
    typed = registry.driver("virtio-net").check("gen", {"size": "256", "mode": "interrupt"})
    assert typed.driver == {"mode": "interrupt"}
    assert typed.app == {"size": 256, "count": 0, "rate": 0, "burst": 32, "verify": False,
                         "dst": "ff:ff:ff:ff:ff:ff"}
    assert typed.given == {"size": 256, "mode": "interrupt"}
    assert registry.driver("virtio-net").check("sink", {}).driver == {"mode": "poll"}


def test_qmp_scalars_are_read_as_the_command_line_would_give_them():
    vp = registry.driver("vhost-pci-net")
    assert vp.check("sink", {"burst": 32, "verify": True, "copy": False}).app == \
        {"burst": 32, "verify": True, "copy": False}
    for params, message in (({"burst": 1.5}, number("burst")), ({"burst": 0}, rng("burst", 1, 32768)),
                            ({"burst": True}, number("burst")), ({"verify": 1}, onoff("verify")),
                            ({"burst": [1]}, "Parameter 'burst' expects a scalar value"),
                            ({"burst": None}, "Parameter 'burst' expects a scalar value")):
        with pytest.raises(OptionError) as e:
            vp.check("sink", params)
        assert str(e.value) == message, params


def test_an_app_switch_may_not_change_the_driver():
    nic = registry.driver("virtio-net")
    with pytest.raises(OptionError) as e:
        nic.check("sink", {"mode": "interrupt"}, app_only=True)
    assert str(e.value) == ("Parameter 'mode' belongs to the virtio-net driver: "
                            "it cannot change with the app")


def test_registry_bounds_agree_with_the_code_that_uses_them():
    from emu.guest import packets
    from emu.spec.virtio_ring import num_valid
    assert registry.MIN_STAMPED == packets.MIN_STAMPED
    # the largest queue_size= is the largest ring the engine takes
    assert num_valid(registry.QUEUE_MAX_SIZE) and not num_valid(2 * registry.QUEUE_MAX_SIZE)
    packets.udp_frame(registry.MAX_FRAME)          # the largest size= is a frame udp_frame builds


def test_every_declared_class_exists():
    for drv in registry.DRIVERS.values():
        matches, cls = drv.load()
        assert callable(matches) and isinstance(cls, type)
        for app in drv.apps.values():
            assert app.load().name == app.name


def test_guest_help_lists_drivers_apps_and_each_apps_keys():
    with pytest.raises(EarlyExit) as e:
        parse_args(["-guest", "help"])
    assert "vhost-pci-net   binds vhost-pci-net; apps: sink, echo, forward, responder" in e.value.text
    with pytest.raises(EarlyExit) as e:
        parse_args(["-guest", "virtio-net,app=gen,help"])
    text = e.value.text
    assert e.value.status == 0
    assert "burst=<int[k|m|g] 1..32768>" in text and "(default 32)" in text
    assert "mode=<poll|interrupt>" in text and "tx_buf_size=<int 64..131072>" in text
    with pytest.raises(CommandLineError) as e2:
        parse_args(["-guest", "vhost-pci-net,app=gen,help"])
    assert "unknown app 'gen' for driver vhost-pci-net" in str(e2.value)


def test_the_process_refuses_it_before_listening(tmp_path):
    sock = tmp_path / "q.sock"
    arg = "virtio-net,app=gen,burst=abc"
    proc = start(EMU_CMD, ["-qmp", f"unix:{sock},server=on,wait=off", "-guest", arg])
    assert proc.wait(30) == 1
    assert proc.stderr.read().decode() == f"emu: -guest {arg}: {number('burst')}\n"
    stop(proc)
    assert list(tmp_path.iterdir()) == []

