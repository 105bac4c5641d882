"""Per-host ownership for the long-running processes: leases in Redis.

Any number of inventory watchers (each with its usage collectors) may run, on any
machines. Each host is owned by exactly one of them at a time through a lease: a Redis key
set only if absent, with an expiry (`VMPANEL_LEASE_SECONDS`), renewed well inside its life
and deleted on a clean shutdown. Renewing and releasing compare the key's value first
(in one Lua script each), so a process never renews or releases a lease it has lost.

The live processes of a kind register themselves (a sorted set scored by expiry, on the
Redis server's clock); each holds its fair share of the hosts (`fair_share`), taking free
hosts while it holds fewer and letting go of some while it holds more (`plan`). A new
process so takes its share; a dead one's leases and registration expire within one lease
period and the others take its hosts over.

A process writes for a host only while its lease has at least a third of its life left
(`Tenure.usable`): one that cannot renew (Redis away, the process paused) stops writing
before the lease can lapse, so two owners write at once only when a single unit of work
(one read of a host and its writes) started in time and outlasted that third.

A journal (a capped Redis stream per kind) records every taking, letting go and losing,
with the time each owner started and last wrote: the ownership test reads it, and so may
an operator (`redis-cli XRANGE vmpanel:lease:watcher:journal - +`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import redis
from django.conf import settings

PREFIX = "vmpanel:lease"
JOURNAL_LENGTH = 2000

# --- the pure part: who should hold how many, and which ------------------------------


def fair_share(hosts: int, members: Iterable[str], me: str) -> int:
    """How many of `hosts` the process `me` should hold while `members` (the live
    processes of its kind; `me` counts whether listed or not) share them.

    An even split; the remainder goes to the first processes in sorted order, so every
    process computes the same numbers and they add up to `hosts`.
    """
    ordered = sorted({*members, me})
    base, extra = divmod(max(0, hosts), len(ordered))
    return base + (1 if ordered.index(me) < extra else 0)


def preference(me: str, host: int) -> int:
    """How much `me` wants `host` (rendezvous hashing): each process tries hosts in its own
    order, so processes starting together rarely race for the same key, and the hosts a
    process lets go of are the ones it wants least."""
    return int.from_bytes(hashlib.sha256(f"{me}|{host}".encode()).digest()[:8], "big")


def plan(
    me: str, members: Iterable[str], hosts: Sequence[int], held: Iterable[int], free: Iterable[int]
) -> tuple[list[int], list[int]]:
    """What `me` should try to take and what it should let go of now: `hosts` are the ones
    to own, `held` what it holds, `free` those nobody holds. Returns (take, release):
    free hosts in order of preference up to the fair share, or the least wanted held
    ones above it."""
    held = set(held) & set(hosts)
    target = fair_share(len(hosts), members, me)
    if len(held) > target:
        ranked = sorted(held, key=lambda h: preference(me, h))
        return [], ranked[: len(held) - target]
    wanted = sorted(set(free) - held, key=lambda h: preference(me, h), reverse=True)
    return wanted[: target - len(held)], []


def owner_of(value: str | bytes | None) -> tuple[str, float] | None:
    """(process, since) from a lease's value ("<process> <since>"); None if unowned."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    process, _, since = value.rpartition(" ")
    try:
        return process, float(since)
    except ValueError:
        return value, 0.0


@dataclass(frozen=True)
class Process:
    """A process's name, split for showing: the machine it runs on and its pid."""

    name: str

    @property
    def machine(self) -> str:
        return self.name.rsplit(":", 2)[0]

    @property
    def pid(self) -> str:
        parts = self.name.rsplit(":", 2)
        return parts[1] if len(parts) == 3 else ""


def process_name() -> str:
    """This process's name among its kind: machine, pid, and a random part so that a
    recycled pid is never mistaken for its predecessor."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuidlib.uuid4().hex[:6]}"


class Tenure:
    """One lease this process holds: its value and until when it surely still holds it
    (on this process's monotonic clock, from the moment the last renewal was sent)."""

    def __init__(self, host: int, value: str, seconds: float, sent_at: float):
        self.host = host
        self.value = value
        self.seconds = seconds
        self.valid_until = sent_at + seconds
        self.lost = False

    def renewed(self, sent_at: float) -> None:
        self.valid_until = sent_at + self.seconds

    def usable(self, now: float | None = None) -> bool:
        """Whether to start a unit of work: held, with a third of the lease still ahead."""
        now = time.monotonic() if now is None else now
        return not self.lost and now + self.seconds / 3 < self.valid_until


# --- Redis --------------------------------------------------------------------------

# Register (or renew) a process; drop the expired; return the live ones. On the server's
# clock, so machines whose clocks differ agree on who is alive.
_JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# The live processes, without registering: those whose registration has not expired.
_MEMBERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""

# Take a free lease; its value carries the taker and the server's time.
_ACQUIRE = """
local t = redis.call('TIME')
local value = ARGV[1] .. ' ' .. t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
if redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2]) then
  return value
end
return false
"""

# Renew the leases still ours (compare, then extend); return the keys renewed.
_RENEW = """
local held = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    held[#held + 1] = key
  end
end
return held
"""

# Delete a lease only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    # Bounded: a lease keeper that waits on a Redis in trouble must not outwait its leases.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


class Board:
    """The leases of one kind of process ("watcher") in Redis."""

    def __init__(self, kind: str = "watcher", client: redis.Redis | None = None):
        self.kind = kind
        self.client = client or _redis()
        self._join = self.client.register_script(_JOIN)
        self._members = self.client.register_script(_MEMBERS)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)

    def key(self, host: int) -> str:
        return f"{PREFIX}:{self.kind}:host:{host}"

    @property
    def members_key(self) -> str:
        return f"{PREFIX}:{self.kind}:members"

    @property
    def journal_key(self) -> str:
        return f"{PREFIX}:{self.kind}:journal"

    def join(self, me: str, seconds: float) -> list[str]:
        """Say `me` is alive for `seconds`; the live processes of this kind, sorted."""
        names = self._join(keys=[self.members_key], args=[me, int(seconds * 1000)])
        return sorted(n.decode() for n in names)

    def members(self) -> list[str]:
        """The live processes of this kind, sorted (read only: nobody is registered)."""
        return sorted(n.decode() for n in self._members(keys=[self.members_key]))

    def leave(self, me: str) -> None:
        self.client.zrem(self.members_key, me)

    def acquire(self, host: int, me: str, seconds: float) -> str | None:
        """The lease's value if `me` took `host`'s free lease, else None."""
        value = self._acquire(keys=[self.key(host)], args=[me, int(seconds * 1000)])
        return value.decode() if value else None

    def renew(self, values: dict[int, str], seconds: float) -> set[int]:
        """Extend the leases (host → value) still held; the hosts renewed."""
        if not values:
            return set()
        hosts = list(values)
        keys = [self.key(h) for h in hosts]
        renewed = set(
            self._renew(keys=keys, args=[int(seconds * 1000), *(values[h] for h in hosts)])
        )
        return {h for h, k in zip(hosts, keys, strict=True) if k.encode() in renewed}

    def release(self, host: int, value: str) -> bool:
        return bool(self._release(keys=[self.key(host)], args=[value]))

    def owners(self, hosts: Sequence[int]) -> dict[int, tuple[str, float] | None]:
        """Each host's (process, since), or None while nobody holds it."""
        if not hosts:
            return {}
        values = self.client.mget([self.key(h) for h in hosts])
        return {h: owner_of(v) for h, v in zip(hosts, values, strict=True)}

    def record(self, event: str, host: int, me: str, **fields: float | str) -> None:
        """Put a taking, letting go or losing in the journal (this process's wall clock)."""
        entry = {"event": event, "host": host, "owner": me, "at": repr(time.time())}
        entry.update({k: repr(v) if isinstance(v, float) else v for k, v in fields.items()})
        self.client.xadd(self.journal_key, entry, maxlen=JOURNAL_LENGTH, approximate=True)

    def journal(self) -> list[dict[str, str]]:
        """The journal, oldest first, each entry's fields as text."""
        return [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _id, fields in self.client.xrange(self.journal_key)
        ]

    def take_turn(self, job: str, me: str, seconds: float) -> bool:
        """Whether `me` runs `job` now: the first process to ask in each `seconds` does,
        the others leave it (for jobs any one process may do for all)."""
        return bool(
            self.client.set(f"{PREFIX}:{self.kind}:turn:{job}", me, nx=True, px=int(seconds * 1000))
        )


@dataclass(frozen=True)
class Owner:
    """Who watches a host, for the hosts page."""

    process: Process
    since: datetime


def host_owners(hosts: Sequence[int]) -> dict[int, Owner | None] | None:
    """Each host's watcher and since when (None: nobody holds it); None when Redis does
    not answer."""
    try:
        owners = Board().owners(hosts)
    except redis.RedisError:
        return None
    return {
        host: None
        if owner is None
        else Owner(Process(owner[0]), datetime.fromtimestamp(owner[1], tz=UTC))
        for host, owner in owners.items()
    }
