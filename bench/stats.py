"""Benchmark: the usage collector and the pages that show its figures.

Prints, in one run:
1. on the real QEMU hosts (bulk path), libvirt calls and time per host tick, next to the
   same figures for a per-domain loop over the same guests (the guide's calls, one set per
   domain);
2. a tick over 1,000 running domains on one test-driver host (the fallback path: the test
   driver answers only state.* in bulk);
3. a domain page's server time with a full year of history (hour and year ranges);
4. the history rows per domain after a simulated year, against the README's ceiling.

Targets (issue 10): 1 libvirt call per host per tick on the bulk path; a 1,000-domain tick
<= 1 s (a tenth of the default interval); the detail page <= 50 ms with a year of history;
rows per domain <= usage.ROWS_CEILING.

    .venv/bin/python bench/stats.py [--domains 1000] [--guests 3] [--no-qemu]

The QEMU part needs root (it brings up scripts/qemuhost.sh's two hosts and tears them
down); without root it says so and goes on with the rest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import script  # bench/ is first on sys.path when run

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN_DIR = os.environ.setdefault("VMPANEL_RUN_DIR", "/tmp/vmpanel-bench")
DB_FILE = Path(tempfile.gettempdir()) / "vmpanel-bench-stats.sqlite3"
os.environ.setdefault("DATABASE_URL", f"sqlite:///{DB_FILE}")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmpanel.settings")
os.environ.setdefault("VMPANEL_ALLOW_DEMO_SECRET", "true")  # a benchmark, not a panel


def timed_ticks(ticker, count: int = 5) -> tuple[float, float, float]:
    """(median ms of a whole tick, median ms of its libvirt read, calls) of `count` ticks,
    after one to warm up."""
    ticker.tick()
    times, reads = [], []
    for _ in range(count):
        start = time.perf_counter()
        ticker.tick()
        times.append((time.perf_counter() - start) * 1000)
        reads.append(ticker.last_read_ms)
    return statistics.median(times), statistics.median(reads), ticker.last_calls


def per_domain_loop(uri: str) -> tuple[float, int]:
    """The guide's way: every running domain asked one by one (info, vcpus, memoryStats,
    blockStats and interfaceStats per device). (median ms, calls) over 5 rounds."""
    import libvirt

    from domains import hypervisor

    conn = libvirt.open(uri)
    devices: dict = {}
    times, calls = [], 0
    try:
        for _ in range(6):
            start = time.perf_counter()
            calls = 1
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                _counters, more = hypervisor._guest_counters(dom, {}, devices)
                calls += more
            times.append((time.perf_counter() - start) * 1000)
    finally:
        conn.close()
    return statistics.median(times[1:]), calls


def qemu_part(guests: int) -> None:
    from domains import collector, domxml, hypervisor, inventory
    from domains.models import Host

    if os.geteuid() != 0:
        print("1. QEMU hosts: NOT RUN (needs root: a root libvirtd in network namespaces)")
        return
    script("qemuhost.sh", "install")
    script("qemu-guest.sh", "build")
    script("qemuhost.sh", "up", timeout=180)
    try:
        uri = script("qemuhost.sh", "uri", "qa")
        guest = script("qemu-guest.sh", "path")
        host = Host.objects.create(name="qa", uri=uri)
        for i in range(guests):
            name = f"bench-{i}-{uuid.uuid4().hex[:4]}"
            disk = f"/var/lib/libvirt/images/{name}.qcow2"
            hypervisor.create_volume(uri, disk, 64 * 2**20, "qcow2")
            xml = domxml.build_kernel_boot_guest(
                domxml.KernelBootGuest(
                    name=name, uuid=str(uuid.uuid4()), kernel=f"{guest}/vmlinuz",
                    initrd=f"{guest}/initrd.gz", disk=disk,
                    serial_log=f"/var/log/libvirt/{name}-serial.log", memory_mib=128,
                )
            )  # fmt: skip
            hypervisor.define_xml(uri, xml)
            hypervisor.start(uri, domxml.identity(xml).uuid)
        time.sleep(5)
        inventory.reconcile_host(host)
        tick_ms, bulk_ms, bulk_calls = timed_ticks(collector.HostTicker(host, tick_seconds=10))
        loop_ms, loop_calls = per_domain_loop(uri)
        print(f"1. QEMU host, {guests} running guests, reading one tick's counters:")
        print(f"   bulk (getAllDomainStats)   {bulk_calls:>5} libvirt calls  {bulk_ms:>8.1f} ms")
        print(f"   per-domain loop            {loop_calls:>5} libvirt calls  {loop_ms:>8.1f} ms")
        print(f"   (the whole tick, with its database writes: {tick_ms:.1f} ms)")
        print(f"   target: 1 call per host and tick on the bulk path: {bulk_calls == 1}")
    finally:
        hypervisor.forget_all()
        script("qemuhost.sh", "down", timeout=180)


def test_driver_part(count: int) -> None:
    import libvirt

    from domains import collector, domxml, inventory
    from domains.models import Host

    script("testhost.sh", "stop", "bench")
    script("testhost.sh", "start", "bench")
    uri = script("testhost.sh", "uri", "bench")
    keeper = libvirt.open(uri)  # keeps the test driver's world alive
    try:
        for i in range(count):
            spec = domxml.SimpleDomain(
                name=f"bench-{i:05d}", uuid=str(uuid.uuid4()), disk=f"/guest/b{i}.img",
                mac=domxml.generate_mac(),
            )  # fmt: skip
            keeper.createXML(domxml.build_simple_domain(spec), 0)
        host = Host.objects.create(name="bench", uri=uri)
        inventory.reconcile_host(host)
        ms, read_ms, calls = timed_ticks(collector.HostTicker(host, tick_seconds=10), count=3)
        print(f"2. test-driver host, {count} running domains (fallback path), one tick:")
        print(f"   {calls} libvirt calls; read {read_ms:.0f} ms, whole tick {ms:.0f} ms")
        print(f"   target: tick <= 1000 ms: {ms <= 1000}")
    finally:
        keeper.close()
        script("testhost.sh", "stop", "bench")


def year_part() -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    from domains import collector, usage
    from domains.models import Domain, DomainUsageSample, Host, Membership, Team

    host = Host.objects.create(name="year", uri="test+unix:///default?socket=/nonexistent/s")
    team = Team.objects.create(name="Year", slug="year")
    domain = Domain.objects.create(
        host=host, uuid=uuid.uuid4(), name="a-year-old", state=1, vcpus=2,
        memory_kib=2**20, max_memory_kib=2**20, team=team,
    )  # fmt: skip
    Host.objects.filter(pk=host.pk).update(enabled=False)  # no live read: server time only
    now = time.time()
    # A year and a month of ticks as they would have left every tier before pruning.
    for tier in usage.TIERS:
        start = usage.bucket(max(now - 400 * 86400, now - 2 * tier.keep), tier.step)
        DomainUsageSample.objects.bulk_create(
            [
                DomainUsageSample(
                    domain=domain, step=tier.step, at=at, cpu_avg=40.0, cpu_max=90.0,
                    mem_avg=2**19, mem_max=2**19 + 1000, disk_rd_avg=1e6, disk_rd_max=2e6,
                    disk_wr_avg=5e5, disk_wr_max=1e6, net_rx_avg=1e6, net_rx_max=3e6,
                    net_tx_avg=1e5, net_tx_max=2e5,
                )
                for at in range(start, int(now), tier.step)
            ],
            batch_size=2000,
        )  # fmt: skip
    before = collector.rows_per_domain()[domain.pk]
    collector.roll_up(now)
    after = collector.rows_per_domain()[domain.pk]
    print("3. a domain page with a year of history (server time, median of 20):")
    user = User.objects.create_user("year-viewer", password="x")
    Membership.objects.create(user=user, team=team, role="viewer")
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    for key in ("hour", "day", "year"):
        url = f"/domains/year/{domain.uuid}/?range={key}"
        client.get(url)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            assert client.get(url).status_code == 200
            times.append((time.perf_counter() - start) * 1000)
        ms = statistics.median(times)
        print(f"   range={key:<5} {ms:6.1f} ms (target <= 50 ms: {ms <= 50})")
    print("4. history rows of that domain after a simulated year:")
    print(f"   {before} before the roll-up and pruning, {after} after")
    print(f"   ceiling {usage.ROWS_CEILING} (README): {after <= usage.ROWS_CEILING}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--guests", type=int, default=3)
    parser.add_argument("--no-qemu", action="store_true")
    args = parser.parse_args()
    DB_FILE.unlink(missing_ok=True)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    try:
        if args.no_qemu:
            print("1. QEMU hosts: skipped (--no-qemu)")
        else:
            qemu_part(args.guests)
        test_driver_part(args.domains)
        year_part()
    finally:
        DB_FILE.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
