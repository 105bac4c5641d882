"""The rate arithmetic of `domains.usage`: no daemon, no database; counters by hand."""

from __future__ import annotations

import pytest

from domains.usage import (
    ROWS_CEILING,
    TIERS,
    DiskCounters,
    GuestCounters,
    NetCounters,
    RateKeeper,
    bucket,
    grid,
    memory_used,
    rates,
    roll,
)

GIB = 2**30
TICK = 10.0


def guest(cpu=0, vcpus=2, disks=None, nets=None, vcpu_times=None, **memory) -> GuestCounters:
    return GuestCounters(
        uuid="u1", vcpus=vcpus, cpu_time_ns=cpu, vcpu_time_ns=vcpu_times or {},
        disks=disks or {}, nets=nets or {}, **memory,
    )  # fmt: skip


def disk(rd=0, wr=0, source="/var/lib/libvirt/images/a.qcow2"):
    return DiskCounters(
        rd_bytes=rd, wr_bytes=wr, rd_reqs=rd // 4096, wr_reqs=wr // 4096, source=source
    )


def nic(rx=0, tx=0, mac="52:54:00:00:00:01"):
    return NetCounters(rx_bytes=rx, tx_bytes=tx, rx_pkts=rx // 1000, tx_pkts=tx // 1000, mac=mac)


def test_cpu_is_a_share_of_the_domains_own_vcpus():
    # 2 vCPUs for 10 s is 20 s of CPU time; 5 s used is 25 %, whatever the host's cores.
    r = rates(guest(cpu=0), 0.0, guest(cpu=5 * 10**9), 10.0, TICK)
    assert r.cpu_pct == pytest.approx(25.0)
    per_vcpu = rates(
        guest(vcpu_times={0: 0, 1: 0}), 0.0, guest(vcpu_times={0: 10**10, 1: 10**9}), 10.0, TICK
    )
    assert per_vcpu.vcpu_pct == pytest.approx({0: 100.0, 1: 10.0})


def test_the_first_sample_has_no_rates_but_its_memory():
    r = rates(
        None,
        None,
        guest(cpu=123, balloon_current_kib=4 * 2**20, balloon_usable_kib=2**20),
        5.0,
        TICK,
    )
    assert r.cpu_pct is None and r.disks == {} and r.nets == {}
    assert (r.memory_used_kib, r.memory_source) == (3 * 2**20, "guest")


def test_memory_falls_back_to_the_hosts_view_labelled_so():
    assert memory_used(guest(balloon_current_kib=2**20, rss_kib=300_000)) == (300_000, "host")
    assert memory_used(guest()) == (None, "")


@pytest.mark.parametrize(
    "before, after",
    [
        (5 * 10**9, 10**9),  # the guest restarted (or migrated): the counter went down
        (2**63 - 10, 5),  # a 64-bit counter wrapped
    ],
)
def test_a_counter_that_goes_down_is_a_gap_never_a_spike(before, after):
    prev = guest(cpu=before, disks={"vda": disk(rd=before)}, nets={"vnet0": nic(rx=before)})
    cur = guest(cpu=after, disks={"vda": disk(rd=after)}, nets={"vnet0": nic(rx=after)})
    r = rates(prev, 0.0, cur, 10.0, TICK)
    assert r.cpu_pct is None and r.disks == {} and r.nets == {}
    assert r.disk_rd_bps is None and r.net_rx_bitps is None


def test_a_gap_longer_than_three_ticks_is_a_gap():
    prev, cur = guest(cpu=0), guest(cpu=10**9)
    assert rates(prev, 0.0, cur, 3 * TICK, TICK).cpu_pct is not None
    assert rates(prev, 0.0, cur, 3 * TICK + 1, TICK).cpu_pct is None
    assert rates(prev, 10.0, cur, 10.0, TICK).cpu_pct is None  # no time passed


def test_zero_vcpus_is_no_figure():
    assert rates(guest(cpu=0, vcpus=0), 0.0, guest(cpu=10**9, vcpus=0), 10.0, TICK).cpu_pct is None


def test_devices_are_matched_by_name_not_position():
    prev = guest(disks={"vda": disk(rd=0), "vdb": disk(rd=0, source="/b.img")})
    # vdb was unplugged and vdc plugged: vda still has its rate, vdc none until next time.
    cur = guest(disks={"vda": disk(rd=10 * GIB), "vdc": disk(rd=5 * GIB, source="/c.img")})
    r = rates(prev, 0.0, cur, 10.0, TICK)
    assert set(r.disks) == {"vda"}
    assert r.disks["vda"].rd_bps == pytest.approx(GIB)
    assert r.disk_rd_bps == pytest.approx(GIB)


def test_a_device_name_now_behind_another_image_or_mac_starts_afresh():
    prev = guest(disks={"vda": disk(rd=0, source="/old.img")}, nets={"vnet0": nic(rx=0)})
    cur = guest(
        disks={"vda": disk(rd=GIB, source="/new.img")},
        nets={"vnet0": nic(rx=10**6, mac="52:54:00:00:00:02")},
    )
    r = rates(prev, 0.0, cur, 10.0, TICK)
    assert r.disks == {} and r.nets == {}


def test_network_rates_are_bits_per_second():
    r = rates(
        guest(nets={"vnet0": nic(rx=0, tx=0)}),
        0.0,
        guest(nets={"vnet0": nic(rx=10**6, tx=2 * 10**6)}),
        10.0,
        TICK,
    )
    assert r.nets["vnet0"].rx_bitps == pytest.approx(8 * 10**5)
    assert r.net_tx_bitps == pytest.approx(16 * 10**5)


def test_the_keeper_starts_afresh_on_another_host_and_forgets_the_gone():
    keeper = RateKeeper(TICK)
    assert keeper.update(1, 0.0, [guest(cpu=0)])["u1"].cpu_pct is None  # first sample
    assert keeper.update(1, 10.0, [guest(cpu=10**9)])["u1"].cpu_pct == pytest.approx(5.0)
    # Migrated to host 2: its counters there are another QEMU's; no rate on the first tick.
    assert keeper.update(2, 20.0, [guest(cpu=4 * 10**9)])["u1"].cpu_pct is None
    keeper.update(1, 20.0, [])  # gone from host 1
    assert keeper.update(1, 30.0, [guest(cpu=5 * 10**9)])["u1"].cpu_pct is None
    assert keeper.update(2, 30.0, [guest(cpu=6 * 10**9)])["u1"].cpu_pct == pytest.approx(10.0)


def test_roll_up_averages_averages_and_keeps_maxima_ignoring_gaps():
    rows = [
        {"cpu_avg": 10.0, "cpu_max": 20.0},
        {"cpu_avg": None, "cpu_max": None},
        {"cpu_avg": 30.0, "cpu_max": 90.0},
    ]
    assert roll(rows, ["cpu"]) == {"cpu_avg": 20.0, "cpu_max": 90.0}
    assert roll([{"cpu_avg": None, "cpu_max": None}], ["cpu"]) == {"cpu_avg": None, "cpu_max": None}


def test_a_grid_has_a_gap_where_no_row_is():
    times, values = grid({0: 1.0, 20: 3.0}, 0, 25, 10)
    assert times == [0, 10, 20] and values == [1.0, None, 3.0]
    assert bucket(125, 60) == 120


def test_the_rows_ceiling_is_the_sum_of_the_tiers():
    assert [t.step for t in TIERS] == sorted(t.step for t in TIERS)
    assert ROWS_CEILING == sum(t.keep // t.step + 1 for t in TIERS) < 5000
