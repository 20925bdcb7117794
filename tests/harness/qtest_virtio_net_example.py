from emu.testing.qtest import QtestMachine

SLOT = 4                                      # -device ...,addr=04.0
BAR_ADDRESS = 0xE0000000                      # where we map the virtio structures
RING = 0x100000                               # queue 0's rings in guest RAM
ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK = 1, 2, 8, 4
VERSION_1 = 1 << 32


def bring_up_virtio_net(args):
    with QtestMachine(["-M", "pc", *args]) as vm:
        q = vm.qtest

        # PCI configuration space through CF8/CFC (mechanism #1: the dword
        # in CONFIG_ADDRESS, the byte lane in CONFIG_DATA's port)
        def cfg_addr(off):
            q.outl(0xCF8, 0x80000000 | SLOT << 11 | off & 0xFC)
            return 0xCFC + (off & 3)

        def cfg_read(off, size):
            return {1: q.inb, 2: q.inw, 4: q.inl}[size](cfg_addr(off))

        def cfg_write(off, size, value):
            {1: q.outb, 2: q.outw, 4: q.outl}[size](cfg_addr(off), value)

        assert cfg_read(0x00, 2) == 0x1AF4                        # virtio's vendor
        device = cfg_read(0x02, 2)
        assert device == 0x1041 or (device == 0x1000 and cfg_read(0x2E, 2) == 1)   # a NIC

        # walk the capabilities to the virtio structures (cfg_type 1..4)
        caps, off = {}, cfg_read(0x34, 1)
        while off:
            if cfg_read(off, 1) == 0x09:                          # vendor-specific
                caps[cfg_read(off + 3, 1)] = (off, cfg_read(off + 4, 1),
                                              cfg_read(off + 8, 4))
            off = cfg_read(off + 1, 1)
        (_, bar, common), (_, _, device_cfg) = caps[1], caps[4]
        notify_cap, _, notify = caps[2]
        multiplier = cfg_read(notify_cap + 16, 4)

        # size the BAR, map it, turn on memory decode and bus mastering
        reg = 0x10 + 4 * bar
        cfg_write(reg, 4, 0xFFFFFFFF)
        size = ((~cfg_read(reg, 4) | 0xF) & 0xFFFFFFFF) + 1    # lowest address bit set
        cfg_write(reg, 4, BAR_ADDRESS)
        if cfg_read(reg, 1) & 0x6 == 0x4:                        # 64-bit: upper half 0
            cfg_write(reg + 4, 4, 0)
        cfg_write(0x04, 2, 0x6)
        assert size >= 0x4000

        def common_write(off, size, value):
            q.write(BAR_ADDRESS + common + off, value.to_bytes(size, "little"))

        def common_read(off, size):                               # one access of that size
            return int.from_bytes(q.read(BAR_ADDRESS + common + off, size), "little")

        # the virtio 1.x initialisation, register by register (virtio 1.2, 3.1.1)
        common_write(0x14, 1, 0)                                  # reset
        assert common_read(0x14, 1) == 0
        common_write(0x14, 1, ACKNOWLEDGE)
        common_write(0x14, 1, ACKNOWLEDGE | DRIVER)
        common_write(0x00, 4, 0)                                  # device_feature_select
        features = common_read(0x04, 4)
        common_write(0x00, 4, 1)
        features |= common_read(0x04, 4) << 32
        assert features & VERSION_1
        wanted = VERSION_1 | (features & 1 << 5)                  # VERSION_1, MAC
        for select in (0, 1):
            common_write(0x08, 4, select)                         # driver_feature_select
            common_write(0x0C, 4, wanted >> 32 * select & 0xFFFFFFFF)
        common_write(0x14, 1, ACKNOWLEDGE | DRIVER | FEATURES_OK)
        assert common_read(0x14, 1) == ACKNOWLEDGE | DRIVER | FEATURES_OK

        # queue 0 (rx): size, rings in RAM, enable
        common_write(0x16, 2, 0)                                  # queue_select
        qsize = common_read(0x18, 2)
        assert qsize and qsize & (qsize - 1) == 0                 # a power of two
        q.memset(RING, 0x3000, 0)
        for off, addr in ((0x20, RING), (0x28, RING + 0x1000), (0x30, RING + 0x2000)):
            common_write(off, 4, addr)                            # desc, driver, device lo
            common_write(off + 4, 4, 0)                           # ... hi
        notify_addr = BAR_ADDRESS + notify + common_read(0x1E, 2) * multiplier
        common_write(0x1C, 2, 1)                                  # queue_enable
        assert common_read(0x1C, 2) == 1
        common_write(0x14, 1, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
        assert common_read(0x14, 1) == ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK

        # the device configuration: the MAC the command line gave
        mac = q.read(BAR_ADDRESS + device_cfg, 6)
        q.write(notify_addr, (0).to_bytes(2, "little"))          # kick queue 0

        # QMP beside it: a system reset is reported once done
        vm.qmp.command("system_reset")
        assert vm.qmp.wait_event("RESET")["data"] == {"guest": False,
                                                       "reason": "host-qmp-system-reset"}
        return mac
