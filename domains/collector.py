"""The usage collector: one read per host and tick, rates, history, roll-up.

Runs inside the inventory watcher (`manage.py watch_inventory`): a `HostCollector` thread
per host the watcher owns (its lease, `leases.py`) beside its `HostWatch`, so the host has
one owner and a host that hangs stalls only its own thread. Each tick
(VMPANEL_STATS_SECONDS) it makes one `hypervisor.guest_counters` read (one
getAllDomainStats call where the host answers in bulk), turns the counters into rates
(`usage.RateKeeper`), and writes the 10-second history rows and each running domain's
"now" row (`DomainUsage`), plus the host's own. Once a minute a watcher rolls finer rows
up into coarser tiers and prunes what is older than each tier keeps (`roll_up`), so a
domain never has more than `usage.ROWS_CEILING` rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

from django.conf import settings
from django.db import close_old_connections
from django.db import connection as db_connection
from django.db.models import Max, Min

from . import hypervisor, usage
from .hypervisor import HostCounters, HypervisorError
from .models import Domain, DomainUsage, DomainUsageSample, Host, HostUsage, HostUsageSample

log = logging.getLogger("domains.collector")

SPARK_MINUTES = 60


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _detail(counters: usage.GuestCounters, rates: usage.Rates) -> dict:
    """What the detail page shows per vCPU, disk and interface (JSON)."""
    return {
        "vcpus": [
            {
                "n": n,
                "pct": _round(rates.vcpu_pct.get(n)),
                "state": counters.vcpu_state.get(n),
                "cpu": counters.vcpu_cpu.get(n),
            }
            for n in sorted(counters.vcpu_time_ns)
        ],
        "disks": [
            {
                "name": name,
                "source": d.source,
                "rd_bps": _round(rates.disks[name].rd_bps) if name in rates.disks else None,
                "wr_bps": _round(rates.disks[name].wr_bps) if name in rates.disks else None,
                "rd_iops": _round(rates.disks[name].rd_iops) if name in rates.disks else None,
                "wr_iops": _round(rates.disks[name].wr_iops) if name in rates.disks else None,
                "errors": d.errors,
            }
            for name, d in sorted(counters.disks.items())
        ],
        "nets": [
            {
                "name": name,
                "mac": n.mac,
                "rx_bitps": _round(rates.nets[name].rx_bitps) if name in rates.nets else None,
                "tx_bitps": _round(rates.nets[name].tx_bitps) if name in rates.nets else None,
                "rx_pps": _round(rates.nets[name].rx_pps) if name in rates.nets else None,
                "tx_pps": _round(rates.nets[name].tx_pps) if name in rates.nets else None,
                "errors": n.rx_errs + n.tx_errs,
                "drops": n.rx_drop + n.tx_drop,
            }
            for name, n in sorted(counters.nets.items())
        ],
    }


def _same(value):
    return value, value


class HostTicker:
    """The state a host's ticks carry from one to the next: previous samples (by host,
    UUID and device name), the device names read from XML, the host's previous CPU
    counters. Used by `HostCollector` and by tests and benches directly."""

    def __init__(self, host: Host, tick_seconds: float | None = None):
        self.host = host
        self.tick_seconds = tick_seconds or settings.VMPANEL_STATS_SECONDS
        self.keeper = usage.RateKeeper(self.tick_seconds)
        self.devices: dict = {}
        self.host_prev: HostCounters | None = None
        self.last_calls = 0
        self.last_read_ms = 0.0  # the libvirt part of the last tick (for the bench)

    def tick(self) -> int:
        """One read of the host, stored; returns the number of running domains seen."""
        host = self.host
        started = time.perf_counter()
        read = hypervisor.guest_counters(host.uri, self.devices)
        self.last_read_ms = (time.perf_counter() - started) * 1000
        self.last_calls = read.calls
        rates = self.keeper.update(host.pk, read.at, read.guests)
        counters = {g.uuid: g for g in read.guests}
        # Identity follows the inventory row: a migrated domain keeps its history.
        # All the host's rows, matched here: an IN list of a thousand UUIDs costs more.
        rows = {
            uuid: pk
            for uuid, pk in Domain.objects.filter(host=host, gone_at__isnull=True).values_list(
                "uuid", "pk"
            )
            if str(uuid) in counters
        }
        at = usage.bucket(read.at, usage.TIERS[0].step)
        when = datetime.fromtimestamp(read.at, tz=UTC)
        samples, now_rows = [], []
        for uuid_obj, pk in rows.items():
            uuid = str(uuid_obj)
            r, c = rates[uuid], counters[uuid]
            samples.append(
                DomainUsageSample(
                    domain_id=pk, step=usage.TIERS[0].step, at=at,
                    cpu_avg=r.cpu_pct, cpu_max=r.cpu_pct,
                    mem_avg=r.memory_used_kib, mem_max=r.memory_used_kib,
                    disk_rd_avg=r.disk_rd_bps, disk_rd_max=r.disk_rd_bps,
                    disk_wr_avg=r.disk_wr_bps, disk_wr_max=r.disk_wr_bps,
                    net_rx_avg=r.net_rx_bitps, net_rx_max=r.net_rx_bitps,
                    net_tx_avg=r.net_tx_bitps, net_tx_max=r.net_tx_bitps,
                )
            )  # fmt: skip
            now_rows.append(
                DomainUsage(
                    domain_id=pk, at=when, cpu_pct=_round(r.cpu_pct),
                    memory_used_kib=r.memory_used_kib, memory_source=r.memory_source,
                    detail=_detail(c, r),
                )
            )  # fmt: skip
        # Two ticks in one bucket (a late tick, the first one's figures still empty): the
        # later one's figures stand.
        DomainUsageSample.objects.bulk_create(
            samples,
            update_conflicts=True,
            unique_fields=["domain", "step", "at"],
            update_fields=[f"{n}_{k}" for n in DomainUsageSample.FIGURES for k in ("avg", "max")],
        )
        DomainUsage.objects.bulk_create(
            now_rows,
            update_conflicts=True,
            unique_fields=["domain"],
            update_fields=["at", "cpu_pct", "memory_used_kib", "memory_source", "detail"],
        )
        # A domain that stopped running has no usage now: its row was not written this tick.
        DomainUsage.objects.filter(domain__host=host, at__lt=when).delete()
        self.tick_host()
        return len(rows)

    def tick_host(self) -> None:
        host = self.host
        now = hypervisor.host_counters(host.uri)
        prev, self.host_prev = self.host_prev, now
        cpu = None
        if (
            prev is not None
            and now.cpu_busy_ns is not None
            and prev.cpu_busy_ns is not None
            and now.at - prev.at <= usage.MAX_GAP_TICKS * self.tick_seconds
        ):
            busy = now.cpu_busy_ns - prev.cpu_busy_ns
            total = now.cpu_total_ns - prev.cpu_total_ns
            if busy >= 0 and total > 0:
                cpu = min(100.0, 100.0 * busy / total)
        used = None
        if now.memory_free_kib is not None:
            used = max(0, now.memory_total_kib - now.memory_free_kib)
        step = usage.TIERS[0].step
        sample = HostUsageSample(
            host=host, step=step, at=usage.bucket(now.at, step),
            cpu_avg=cpu, cpu_max=cpu, mem_avg=used, mem_max=used,
        )  # fmt: skip
        HostUsageSample.objects.bulk_create(
            [sample],
            update_conflicts=True,
            unique_fields=["host", "step", "at"],
            update_fields=["cpu_avg", "cpu_max", "mem_avg", "mem_max"],
        )
        HostUsage.objects.update_or_create(
            host=host,
            defaults={
                "at": datetime.fromtimestamp(now.at, tz=UTC),
                "cpu_pct": _round(cpu),
                "memory_used_kib": used,
                "memory_total_kib": now.memory_total_kib,
                "cpus": now.cpus,
            },
        )


class HostCollector(threading.Thread):
    """One host's ticks, in a thread of its own (started and stopped by the watcher)."""

    def __init__(self, host: Host, tenure=None):
        super().__init__(name=f"collect-{host.name}", daemon=True)
        self.ticker = HostTicker(host)
        self.uri = host.uri
        self.stopping = threading.Event()
        # The host's lease (`leases.Tenure`; None: unguarded): no tick without it.
        self.tenure = tenure
        self.last_write = 0.0  # wall clock, the end of the last tick

    @property
    def host(self) -> Host:
        return self.ticker.host

    @host.setter
    def host(self, host: Host) -> None:
        self.ticker.host = host

    def run(self) -> None:
        tick = self.ticker.tick_seconds
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                if self.tenure is not None and not self.tenure.usable():
                    self.stopping.wait(0.2)  # another watcher may own the host by now
                    continue
                try:
                    close_old_connections()
                    self.ticker.tick()
                except HypervisorError as exc:
                    # A gap in the graphs; the page says "no data since …".
                    log.info("usage of %s not read: %s", self.host.name, exc.message)
                except Exception:
                    log.exception("usage tick of %s failed; going on", self.host.name)
                self.last_write = time.time()  # whether it wrote all, part or nothing
                self.stopping.wait(max(0.5, tick - (time.monotonic() - started)))
        finally:
            db_connection.close()


# --- roll-up and pruning --------------------------------------------------------------

_SUBJECTS = ((DomainUsageSample, "domain_id"), (HostUsageSample, "host_id"))


def roll_up(now: float | None = None) -> int:
    """Roll every completed bucket of each tier up into the next coarser one (average of
    averages, maximum of maxima), then prune each tier beyond what it keeps. Idempotent;
    returns the rows written. The watcher runs it once a minute."""
    now = time.time() if now is None else now
    written = 0
    for model, subject in _SUBJECTS:
        for fine, coarse in zip(usage.TIERS, usage.TIERS[1:], strict=False):
            written += _roll(model, subject, fine, coarse, now)
        for tier in usage.TIERS:
            model.objects.filter(step=tier.step, at__lt=now - tier.keep).delete()
    _update_sparks(now)
    return written


def _roll(model, subject: str, fine: usage.Tier, coarse: usage.Tier, now: float) -> int:
    # Only buckets that ended a while ago (the last fine rows may still be on their way).
    end = usage.bucket(now - 2 * fine.step, coarse.step)
    done = model.objects.filter(step=coarse.step).aggregate(last=Max("at"))["last"]
    if done is not None:
        start = done + coarse.step
    else:
        first = model.objects.filter(step=fine.step).aggregate(first=Min("at"))["first"]
        if first is None:
            return 0
        start = usage.bucket(first, coarse.step)
    start = max(start, usage.bucket(now - coarse.keep, coarse.step))
    if start >= end:
        return 0
    names = model.FIGURES
    fields = [f"{n}_{k}" for n in names for k in ("avg", "max")]
    groups: dict[tuple, list] = defaultdict(list)
    rows = model.objects.filter(step=fine.step, at__gte=start, at__lt=end).values(
        subject, "at", *fields
    )
    for row in rows.iterator(chunk_size=2000):
        groups[(row[subject], usage.bucket(row["at"], coarse.step))].append(row)
    made = [
        model(**{subject: who, "step": coarse.step, "at": at}, **usage.roll(rows, names))
        for (who, at), rows in groups.items()
    ]
    model.objects.bulk_create(made, batch_size=500, ignore_conflicts=True)
    return len(made)


def _update_sparks(now: float) -> None:
    """The last hour of minute averages of CPU on each running domain's "now" row."""
    step = usage.TIERS[1].step
    # Up to the last minute `_roll` has made.
    end = usage.bucket(now - 2 * usage.TIERS[0].step, step) - step
    start = end - (SPARK_MINUTES - 1) * step
    series: dict[int, dict[int, float | None]] = defaultdict(dict)
    ids = list(DomainUsage.objects.values_list("domain_id", flat=True))
    for pk, at, cpu in DomainUsageSample.objects.filter(
        domain_id__in=ids, step=step, at__gte=start
    ).values_list("domain_id", "at", "cpu_avg"):
        series[pk][at] = None if cpu is None else round(cpu, 1)
    rows = []
    for pk in ids:
        _times, values = usage.grid(series.get(pk, {}), start, end, step)
        rows.append(DomainUsage(domain_id=pk, spark=values))
    DomainUsage.objects.bulk_update(rows, ["spark"], batch_size=500)


def rows_per_domain() -> dict[int, int]:
    """How many history rows each domain has (for the ceiling's test and bench)."""
    counts: dict[int, int] = defaultdict(int)
    for pk in DomainUsageSample.objects.values_list("domain_id", flat=True).iterator():
        counts[pk] += 1
    return dict(counts)
