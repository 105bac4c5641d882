"""What the pages show of usage: the figures now, the graphs' series, the top consumers.

Reads the collector's rows only (never libvirt): the list, host and team pages stay free of
libvirt calls, and a detail page with a year of history reads at most one tier's rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import QuerySet, Sum
from django.utils.translation import gettext as _

from . import kept_sql, usage
from .models import Domain, DomainUsage, DomainUsageSample, Host, HostUsage, HostUsageSample

DEFAULT_RANGE = "hour"
LAST_FIGURES = 6  # rows of the table read without JavaScript


class UnknownRange(ValueError):
    """A ?range= the graphs do not have: a 400 with this message."""


def parse_range(value: str | None) -> usage.Range:
    key = (value or DEFAULT_RANGE).strip()
    if key not in usage.RANGES:
        raise UnknownRange(
            _("Unknown time range “%(range)s”: choose one of %(ranges)s.")
            % {"range": key[:40], "ranges": ", ".join(usage.RANGES)}
        )
    return usage.RANGES[key]


def range_labels() -> list[tuple[str, str]]:
    return [
        ("hour", _("hour")),
        ("day", _("day")),
        ("week", _("week")),
        ("month", _("month")),
        ("year", _("year")),
    ]


def stale_after() -> float:
    """Seconds without a sample after which the figures are "no data since …"."""
    return usage.MAX_GAP_TICKS * settings.VMPANEL_STATS_SECONDS


@dataclass
class Chart:
    key: str  # also the id of its JSON block
    title: str
    unit: str
    data: dict


def _series(rows: list[dict], times: list[int], figures: list[tuple[str, str, float]]) -> list:
    by_at = {r["at"]: r for r in rows}
    out = []
    for field, label, scale in figures:
        values = []
        for t in times:
            value = by_at.get(t, {}).get(field)
            values.append(None if value is None else round(value * scale, 2))
        out.append({"label": label, "values": values})
    return out


def _chart(key: str, title: str, unit: str, rows, times, figures, top=None) -> Chart:
    data = {"t": times, "unit": unit, "min": 0, "max": top}
    data["series"] = _series(rows, times, figures)
    return Chart(key, title, unit, data)


def _charts(prefix: str, rows: list[dict], rng: usage.Range, end: int, disks: bool) -> list:
    times, _ignored = usage.grid({}, end - rng.seconds, end, rng.step)
    avg, mx = _("average"), _("maximum")
    mib = 1 / 1024
    charts = [
        _chart(f"{prefix}-cpu", _("CPU"), "%", rows, times,
               [("cpu_avg", avg, 1), ("cpu_max", mx, 1)], top=100),
        _chart(f"{prefix}-memory", _("Memory used"), "MiB", rows, times,
               [("mem_avg", avg, mib), ("mem_max", mx, mib)]),
    ]  # fmt: skip
    if disks:
        charts += [
            _chart(f"{prefix}-disk", _("Disk"), "B/s", rows, times, [
                ("disk_rd_avg", _("read, average"), 1), ("disk_rd_max", _("read, maximum"), 1),
                ("disk_wr_avg", _("write, average"), 1), ("disk_wr_max", _("write, maximum"), 1),
            ]),
            _chart(f"{prefix}-network", _("Network"), "bit/s", rows, times, [
                ("net_rx_avg", _("in, average"), 1), ("net_rx_max", _("in, maximum"), 1),
                ("net_tx_avg", _("out, average"), 1), ("net_tx_max", _("out, maximum"), 1),
            ]),
        ]  # fmt: skip
    return charts


def _end(rows: list[dict], rng: usage.Range, now: float) -> int:
    """Where the graphs end: the newest row's bucket (the bucket in progress has no row
    yet), or now's if that row is old."""
    end = rows[-1]["at"] if rows and rows[-1]["at"] >= now - 3 * rng.step else now
    return usage.bucket(end, rng.step)


def _last_figures(rows: list[dict]) -> list[dict]:
    last = [r for r in rows if r.get("cpu_avg") is not None or r.get("mem_avg") is not None]
    return [
        {**r, "when": datetime.fromtimestamp(r["at"], tz=UTC)}
        for r in reversed(last[-LAST_FIGURES:])
    ]


def domain_usage(
    domain: Domain, rng: usage.Range, vcpu_cpus=None, now: float | None = None
) -> tuple[tuple, Callable[[], dict]]:
    """The Usage section of a domain's page: all it shows from the database, as read
    (hashable: the section's HTML is kept per content, and it is what the page polls), and
    a function making the section's context from that read.

    `vcpu_cpus`: each vCPU's physical CPU from the page's live read, where the collector's
    bulk read had none (getAllDomainStats does not say)."""
    now = time.time() if now is None else now
    # Both queries compiled once per shape (`kept_sql`); the window starts on a bucket.
    current = kept_sql.rows(
        ("usage_now", domain.pk),
        lambda: DomainUsage.objects.filter(domain=domain).values(
            "at", "cpu_pct", "memory_used_kib", "memory_source", "detail"
        ),
    )
    current = current[0] if current else None
    fields = ["at", *(f"{n}_{k}" for n in DomainUsageSample.FIGURES for k in ("avg", "max"))]
    since = usage.bucket(now - rng.seconds - rng.step, rng.step)
    rows = kept_sql.rows(
        ("usage_rows", domain.pk, rng.step, since),
        lambda: (
            DomainUsageSample.objects.filter(domain=domain, step=rng.step, at__gte=since)
            .order_by("at")
            .values(*fields)
        ),
    )
    last_sample = rows[-1]["at"] if rows else None
    fresh = current is not None and now - current["at"].timestamp() <= stale_after()
    if fresh and vcpu_cpus:
        for row in current["detail"].get("vcpus", []):
            if row.get("cpu") is None:
                row["cpu"] = vcpu_cpus.get(row["n"])
    end = _end(rows, rng, now)
    # The screen thumbnail's cache-buster: a new picture with each new figure (without
    # figures, with each tick: not each second, or the section would never be kept).
    tick = settings.VMPANEL_STATS_SECONDS
    screen_at = int(current["at"].timestamp()) if fresh else int(now) // tick * tick
    running = domain.libvirt_id is not None and domain.gone_at is None
    seen = None
    if fresh:
        seen = json.dumps(current, sort_keys=True, default=str)
    facts = (
        rng.label, running, end, screen_at, last_sample, seen,
        tuple(tuple(r.values()) for r in rows),
    )  # fmt: skip

    def context() -> dict:
        return {
            "range": rng.label,
            "ranges": range_labels(),
            "now": current if fresh else None,
            "running": running,
            "no_data_since": None
            if fresh or last_sample is None
            else datetime.fromtimestamp(last_sample, tz=UTC),
            "charts": _charts("usage", rows, rng, end, disks=True),
            "screen_at": screen_at,
            "last_figures": _last_figures(rows),
        }

    return facts, context


def host_usage(host: Host, rng: usage.Range, now: float | None = None) -> dict:
    """The host page's own CPU and memory, its graph and its top domains."""
    now = time.time() if now is None else now
    current = HostUsage.objects.filter(host=host).first()
    rows = list(
        HostUsageSample.objects.filter(
            host=host, step=rng.step, at__gte=now - rng.seconds - rng.step
        )
        .order_by("at")
        .values("at", "cpu_avg", "cpu_max", "mem_avg", "mem_max")
    )
    fresh = current is not None and now - current.at.timestamp() <= stale_after()
    running = DomainUsage.objects.filter(domain__host=host, domain__gone_at__isnull=True)
    return {
        "range": rng.label,
        "ranges": range_labels(),
        "now": current if fresh else None,
        "no_data_since": None
        if fresh or not rows
        else datetime.fromtimestamp(rows[-1]["at"], tz=UTC),
        "charts": _charts("host-usage", rows, rng, _end(rows, rng, now), disks=False),
        "last_figures": _last_figures(rows),
        "top_cpu": top(running, "cpu_pct"),
        "top_memory": top(running, "memory_used_kib"),
    }


def top(qs: QuerySet, field: str, count: int = 10) -> list[DomainUsage]:
    """The `count` running domains using most by `field` (a DomainUsage field)."""
    return list(
        qs.filter(**{f"{field}__isnull": False})
        .select_related("domain", "domain__host", "domain__team")
        .order_by(f"-{field}", "domain__name")[:count]
    )


def team_usage(domains: QuerySet) -> dict:
    """A team's top consumers and totals (of its running domains)."""
    running = DomainUsage.objects.filter(domain__in=domains, domain__gone_at__isnull=True)
    totals = running.aggregate(memory=Sum("memory_used_kib"))
    vcpus = domains.filter(gone_at__isnull=True, libvirt_id__isnull=False).aggregate(
        vcpus=Sum("vcpus"), memory=Sum("memory_kib")
    )
    return {
        "top_cpu": top(running, "cpu_pct", 5),
        "top_memory": top(running, "memory_used_kib", 5),
        "memory_used_kib": totals["memory"] or 0,
        "running_vcpus": vcpus["vcpus"] or 0,
        "running_memory_kib": vcpus["memory"] or 0,
    }
