"""The usage collector against the test-driver hosts: real libvirt counters (the test
driver's grow with time), the per-domain fallback path, rows written, roll-up and pruning
under the ceiling with injected timestamps, and faults (a host away, a domain vanishing
mid-tick)."""

from __future__ import annotations

import time

import pytest

from domains import collector, hypervisor, usage
from domains.hypervisor import HypervisorError
from domains.models import DomainUsage, DomainUsageSample, Host, HostUsage, HostUsageSample

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _two_ticks(host) -> collector.HostTicker:
    ticker = collector.HostTicker(host, tick_seconds=10)
    ticker.tick()
    time.sleep(1.1)  # the test driver's counters follow the clock
    ticker.tick()
    return ticker


def test_a_running_domain_gets_rates_after_two_ticks_and_a_shut_off_one_none(hosts, make_domain):
    running = make_domain(state="running", devices=True)
    off = make_domain(state="shutoff", devices=True)
    ticker = _two_ticks(hosts.alpha)

    now = DomainUsage.objects.get(domain=running)
    assert now.cpu_pct is not None and now.cpu_pct >= 0
    assert now.memory_used_kib and now.memory_source == "guest"
    disk = now.detail["disks"][0]
    assert disk["name"] == "vda" and disk["rd_bps"] > 0 and disk["wr_bps"] > 0
    nic = now.detail["nets"][0]
    assert nic["rx_bitps"] > 0 and nic["mac"]
    assert [v["n"] for v in now.detail["vcpus"]] == list(range(running.vcpus))
    assert not DomainUsage.objects.filter(domain=off).exists()
    rows = DomainUsageSample.objects.filter(domain=running, step=10).order_by("at")
    assert rows.count() in (1, 2)  # two ticks a second apart may share a 10 s bucket
    assert rows.last().disk_rd_avg is None or rows.last().disk_rd_avg > 0
    assert not DomainUsageSample.objects.filter(domain=off).exists()
    # The test driver answers only state.* in bulk: the guide's per-domain calls fill in.
    assert ticker.last_calls > 1
    host_now = HostUsage.objects.get(host=hosts.alpha)
    assert host_now.memory_total_kib > 0 and host_now.cpus > 0


def test_a_domain_that_stops_loses_its_usage_now(hosts, make_domain, libvirt_hosts):
    domain = make_domain(state="running")
    ticker = _two_ticks(hosts.alpha)
    assert DomainUsage.objects.filter(domain=domain).exists()
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).destroy()
    ticker.tick()
    assert not DomainUsage.objects.filter(domain=domain).exists()


def test_a_domain_vanishing_mid_tick_is_skipped(hosts, make_domain, libvirt_hosts, monkeypatch):
    keep = make_domain(state="running")
    vanish = make_domain(state="running")
    real = hypervisor._guest_counters

    def destroyed_first(dom, stats, devices):
        # Between the bulk call and the per-domain calls the domain goes (a real
        # destroy, at the one moment the race needs).
        if dom.UUIDString() == str(vanish.uuid):
            libvirt_hosts.conn("alpha").lookupByUUIDString(str(vanish.uuid)).destroy()
        return real(dom, stats, devices)

    monkeypatch.setattr(hypervisor, "_guest_counters", destroyed_first)
    ticker = collector.HostTicker(hosts.alpha, tick_seconds=10)
    assert ticker.tick() >= 1
    assert DomainUsage.objects.filter(domain=keep).exists()
    assert not DomainUsage.objects.filter(domain=vanish).exists()


def test_a_host_that_does_not_answer_is_an_error_not_a_crash(db):
    away = Host.objects.create(name="away", uri="test+unix:///default?socket=/nonexistent/sock")
    with pytest.raises(HypervisorError):
        collector.HostTicker(away, tick_seconds=10).tick()
    assert not HostUsageSample.objects.filter(host=away).exists()


def _fill(domain, start: float, end: float, step: int, cpu=50.0) -> None:
    DomainUsageSample.objects.bulk_create(
        [
            DomainUsageSample(domain=domain, step=step, at=at, cpu_avg=cpu, cpu_max=cpu + 10)
            for at in range(usage.bucket(start, step), int(end), step)
        ],
        batch_size=1000,
    )


def test_roll_up_makes_coarser_rows_with_averages_and_maxima(hosts, make_domain):
    domain = make_domain(state="running")
    now = 1_800_000_000.0
    _fill(domain, now - 600, now, 10, cpu=20.0)
    collector.roll_up(now)
    minutes = DomainUsageSample.objects.filter(domain=domain, step=60)
    assert 8 <= minutes.count() <= 10
    assert {(m.cpu_avg, m.cpu_max) for m in minutes} == {(20.0, 30.0)}
    # Running it again writes nothing more.
    assert collector.roll_up(now) == 0


def test_history_stays_under_the_ceiling_after_a_simulated_year(hosts, make_domain):
    domain = make_domain(state="running")
    now = 1_800_000_000.0
    year_ago = now - 400 * 86400
    # What a year and more of ticks leaves behind at every tier (injected, not waited for).
    for tier in usage.TIERS:
        _fill(domain, max(year_ago, now - 2 * tier.keep), now, tier.step)
    assert collector.rows_per_domain()[domain.pk] > usage.ROWS_CEILING
    collector.roll_up(now)
    assert collector.rows_per_domain()[domain.pk] <= usage.ROWS_CEILING
    for tier in usage.TIERS:
        oldest = DomainUsageSample.objects.filter(domain=domain, step=tier.step).order_by("at")
        assert oldest.first().at >= now - tier.keep
