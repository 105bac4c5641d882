"""Usage figures from libvirt's counters: the rate arithmetic and the history tiers.

Pure: no libvirt, no database. The collector (`domains.collector`) reads the counters
through `hypervisor.guest_counters` and stores what this module makes of them.

Rates are done right, where the peers go wrong:
- CPU % is of the domain's own vCPUs (time used ÷ (interval × vCPUs)), never of the
  host's cores;
- a previous sample is matched by host, UUID and device *name* (never by index: a hotplug
  shifts indexes), so a disk or NIC that appears has no rate until its second sample;
- a counter that went down (the guest restarted, the domain migrated, a device was
  replaced, a 64-bit counter wrapped) or a gap longer than three ticks gives no figure
  (a gap in the graph), never a negative or giant spike;
- the timestamp is the one taken once per host read, after libvirt answered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# How many ticks may pass between two samples before the rate is no longer a rate.
MAX_GAP_TICKS = 3


@dataclass(frozen=True)
class DiskCounters:
    rd_bytes: int
    wr_bytes: int
    rd_reqs: int
    wr_reqs: int
    errors: int | None = None  # not every path reports it
    source: str = ""


@dataclass(frozen=True)
class NetCounters:
    rx_bytes: int
    tx_bytes: int
    rx_pkts: int
    tx_pkts: int
    rx_errs: int = 0
    tx_errs: int = 0
    rx_drop: int = 0
    tx_drop: int = 0
    mac: str = ""


@dataclass(frozen=True)
class GuestCounters:
    """What libvirt says of one running domain at one moment (its cumulative counters and
    its memory gauges)."""

    uuid: str
    vcpus: int  # vCPUs the domain has now (the CPU % is of these)
    cpu_time_ns: int | None = None
    vcpu_time_ns: Mapping[int, int] = field(default_factory=dict)
    vcpu_state: Mapping[int, int] = field(default_factory=dict)
    vcpu_cpu: Mapping[int, int] = field(default_factory=dict)  # physical CPU, where known
    balloon_current_kib: int | None = None  # what the guest has
    balloon_usable_kib: int | None = None  # what it could still use (guest's view)
    rss_kib: int | None = None  # what the QEMU process holds on the host
    disks: Mapping[str, DiskCounters] = field(default_factory=dict)
    nets: Mapping[str, NetCounters] = field(default_factory=dict)


@dataclass(frozen=True)
class DiskRates:
    rd_bps: float
    wr_bps: float
    rd_iops: float
    wr_iops: float
    errors: int | None
    source: str


@dataclass(frozen=True)
class NetRates:
    rx_bitps: float
    tx_bitps: float
    rx_pps: float
    tx_pps: float
    errors: int
    drops: int
    mac: str


@dataclass(frozen=True)
class Rates:
    """One domain's usage over one interval. None: no figure this time (first sample, a
    counter reset, a gap)."""

    cpu_pct: float | None = None
    vcpu_pct: Mapping[int, float] = field(default_factory=dict)
    memory_used_kib: int | None = None
    memory_source: str = ""  # "guest" (balloon: current − usable) or "host" (QEMU's RSS)
    disks: Mapping[str, DiskRates] = field(default_factory=dict)
    nets: Mapping[str, NetRates] = field(default_factory=dict)

    def _total(self, items, name: str) -> float | None:
        values = [getattr(item, name) for item in items]
        return sum(values) if values else None

    @property
    def disk_rd_bps(self) -> float | None:
        return self._total(self.disks.values(), "rd_bps")

    @property
    def disk_wr_bps(self) -> float | None:
        return self._total(self.disks.values(), "wr_bps")

    @property
    def net_rx_bitps(self) -> float | None:
        return self._total(self.nets.values(), "rx_bitps")

    @property
    def net_tx_bitps(self) -> float | None:
        return self._total(self.nets.values(), "tx_bitps")


def memory_used(cur: GuestCounters) -> tuple[int | None, str]:
    """(KiB used, whose view): the guest's own (balloon current − usable) where its
    balloon driver reports it, else what the host process holds (RSS)."""
    if cur.balloon_current_kib is not None and cur.balloon_usable_kib is not None:
        return max(0, cur.balloon_current_kib - cur.balloon_usable_kib), "guest"
    if cur.rss_kib is not None:
        return cur.rss_kib, "host"
    return None, ""


def _delta(before: int | None, after: int | None) -> int | None:
    """after − before, or None when either is unknown or the counter went down (reset,
    wrap, replaced): no rate is better than a negative or giant one."""
    if before is None or after is None or after < before:
        return None
    return after - before


def rates(
    prev: GuestCounters | None,
    prev_at: float | None,
    cur: GuestCounters,
    cur_at: float,
    tick_seconds: float,
) -> Rates:
    """The usage between two samples of the same domain on the same host."""
    used, source = memory_used(cur)
    seconds = None if prev_at is None else cur_at - prev_at
    if prev is None or seconds is None or seconds <= 0 or seconds > MAX_GAP_TICKS * tick_seconds:
        return Rates(memory_used_kib=used, memory_source=source)

    cpu_pct = None
    cpu = _delta(prev.cpu_time_ns, cur.cpu_time_ns)
    if cpu is not None and cur.vcpus > 0:
        cpu_pct = 100.0 * cpu / (seconds * 1e9 * cur.vcpus)
    vcpu_pct = {}
    for number, time_ns in cur.vcpu_time_ns.items():
        spent = _delta(prev.vcpu_time_ns.get(number), time_ns)
        if spent is not None:
            vcpu_pct[number] = 100.0 * spent / (seconds * 1e9)

    disks = {}
    for name, now in cur.disks.items():
        then = prev.disks.get(name)
        if then is None or then.source != now.source:
            continue  # new here, or another image behind the same name
        d = [_delta(getattr(then, f), getattr(now, f)) for f in _DISK_FIELDS]
        if None in d:
            continue
        disks[name] = DiskRates(
            d[0] / seconds, d[1] / seconds, d[2] / seconds, d[3] / seconds, now.errors, now.source
        )
    nets = {}
    for name, now in cur.nets.items():
        then = prev.nets.get(name)
        if then is None or then.mac != now.mac:
            continue
        d = [_delta(getattr(then, f), getattr(now, f)) for f in _NET_FIELDS]
        if None in d:
            continue
        nets[name] = NetRates(
            rx_bitps=8 * d[0] / seconds,
            tx_bitps=8 * d[1] / seconds,
            rx_pps=d[2] / seconds,
            tx_pps=d[3] / seconds,
            errors=now.rx_errs + now.tx_errs,
            drops=now.rx_drop + now.tx_drop,
            mac=now.mac,
        )
    return Rates(cpu_pct, vcpu_pct, used, source, disks, nets)


_DISK_FIELDS = ("rd_bytes", "wr_bytes", "rd_reqs", "wr_reqs")
_NET_FIELDS = ("rx_bytes", "tx_bytes", "rx_pkts", "tx_pkts")


class RateKeeper:
    """The previous sample of every domain, by host and UUID: a domain that turns up on
    another host (migrated) starts afresh there, one that is gone is forgotten."""

    def __init__(self, tick_seconds: float):
        self.tick_seconds = tick_seconds
        self._prev: dict[tuple[int, str], tuple[float, GuestCounters]] = {}

    def update(self, host_id: int, at: float, guests: Iterable[GuestCounters]) -> dict[str, Rates]:
        result = {}
        seen = set()
        for cur in guests:
            key = (host_id, cur.uuid)
            seen.add(key)
            prev_at, prev = self._prev.get(key, (None, None))
            result[cur.uuid] = rates(prev, prev_at, cur, at, self.tick_seconds)
            self._prev[key] = (at, cur)
        for key in [k for k in self._prev if k[0] == host_id and k not in seen]:
            del self._prev[key]
        return result


# --- history tiers ------------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    step: int  # seconds one row covers
    keep: int  # seconds of history kept at this step


# Proxmox keeps RRD tiers much like these: full resolution for an hour, then coarser.
TIERS = (
    Tier(step=10, keep=3600),  # an hour of 10 s samples: 360 rows
    Tier(step=60, keep=86400),  # a day of minutes: 1,440 rows
    Tier(step=1800, keep=31 * 86400),  # a month of half-hours: 1,488 rows
    Tier(step=21600, keep=366 * 86400),  # a year of 6 hours: 1,464 rows
)
# The most rows one domain can have, whatever its age (the README states it).
ROWS_CEILING = sum(t.keep // t.step + 1 for t in TIERS)


@dataclass(frozen=True)
class Range:
    label: str
    seconds: int
    step: int  # the tier it is drawn from


RANGES = {
    "hour": Range("hour", 3600, 10),
    "day": Range("day", 86400, 60),
    "week": Range("week", 7 * 86400, 1800),
    "month": Range("month", 31 * 86400, 1800),
    "year": Range("year", 366 * 86400, 21600),
}


def bucket(at: float, step: int) -> int:
    """The start (unix seconds) of the `step`-second bucket holding `at`."""
    return int(at // step) * step


def grid(values: Mapping[int, float | None], start: int, end: int, step: int) -> tuple:
    """(times, values) on a regular grid from `start` to `end`: a bucket without a row
    is None, a gap in the graph."""
    times = list(range(bucket(start, step), bucket(end, step) + 1, step))
    return times, [values.get(t) for t in times]


def roll(rows: Iterable[Mapping[str, float | None]], names: Iterable[str]) -> dict:
    """Average of the averages and maximum of the maxima of finer rows (None ignored):
    `names` are the figures' base names, each with `_avg` and `_max`."""
    rows = list(rows)
    out = {}
    for name in names:
        avgs = [r[f"{name}_avg"] for r in rows if r[f"{name}_avg"] is not None]
        maxs = [r[f"{name}_max"] for r in rows if r[f"{name}_max"] is not None]
        out[f"{name}_avg"] = sum(avgs) / len(avgs) if avgs else None
        out[f"{name}_max"] = max(maxs) if maxs else None
    return out
