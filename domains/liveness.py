"""Who is alive: the workers and the inventory watcher mark themselves in Redis, and the
pages and /readyz read those marks.

Marks live in Redis, not the database: they are written every few seconds by every
process, and are worth nothing once the processes are gone.
"""

from __future__ import annotations

import time
from functools import lru_cache

import redis
from django.conf import settings

WORKER_ALIVE_KEY = "vmpanel:worker-alive"
WORKER_ALIVE_SECONDS = 30
WATCHER_BEAT_KEY = "vmpanel:watcher-beat"
# Per host (a hash, field = the host's pk): the time of its owner's last pass, or, while it
# has no owner, the moment a watcher first saw it so.
HOST_FRESH_KEY = "vmpanel:host-fresh"
# The oldest of those over the enabled hosts, written by every watcher pass: what every
# page reads (one key, no database query). It stops moving when no watcher runs.
INVENTORY_FRESH_KEY = "vmpanel:inventory-fresh"


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    # Short timeouts: a page asks on every request and must not wait on a Redis in trouble.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)


# After a read Redis did not answer, the pages' reads of the next few seconds do not ask
# it again: with a Redis that accepts and never answers, each would wait out the timeout
# above, and every page (the banner, the navigation) took a second or more longer.
QUIET_SECONDS = 5.0
_quiet_until = 0.0
_UNANSWERED = object()


def _read(ask):
    """`ask(client)`, or `_UNANSWERED` when Redis does not answer or did not a moment ago."""
    global _quiet_until
    if time.monotonic() < _quiet_until:
        return _UNANSWERED
    try:
        return ask(_redis())
    except redis.RedisError:
        _quiet_until = time.monotonic() + QUIET_SECONDS
        return _UNANSWERED


def mark_worker_alive() -> None:
    """Say, for WORKER_ALIVE_SECONDS, that a worker runs (each worker, every few seconds)."""
    _redis().set(WORKER_ALIVE_KEY, time.time(), ex=WORKER_ALIVE_SECONDS)


def worker_alive() -> bool | None:
    """Whether a worker said lately that it runs; None when Redis does not answer."""
    alive = _read(lambda client: client.exists(WORKER_ALIVE_KEY))
    return None if alive is _UNANSWERED else bool(alive)


def mark_watcher_beat() -> None:
    """The watcher's pass has run now (every pass, twice a second or so)."""
    _redis().set(WATCHER_BEAT_KEY, time.time())


def watcher_silent_seconds() -> float | None:
    """Seconds since the watcher's last pass; None when Redis does not answer, infinity
    when no watcher has ever run against this Redis."""
    beat = _read(lambda client: client.get(WATCHER_BEAT_KEY))
    if beat is _UNANSWERED:
        return None
    return float("inf") if beat is None else max(0.0, time.time() - float(beat))


def mark_hosts_fresh(passes: dict[int, float], unowned: list[int], enabled: list[int]) -> None:
    """A watcher's pass: `passes` are its own hosts' last passes, `unowned` the enabled
    hosts nobody holds (marked from now on, unless marked already), `enabled` all the
    hosts to watch (marks of others are dropped). Then the oldest mark, for the pages."""
    client = _redis()
    now = time.time()
    pipe = client.pipeline(transaction=False)
    if passes:
        pipe.hset(HOST_FRESH_KEY, mapping={str(h): t for h, t in passes.items()})
    for host in unowned:
        pipe.hsetnx(HOST_FRESH_KEY, str(host), now)
    pipe.hgetall(HOST_FRESH_KEY)
    marks = pipe.execute()[-1]
    wanted = {str(h) for h in enabled}
    dropped = [k for k in marks if k.decode() not in wanted]
    if dropped:
        client.hdel(HOST_FRESH_KEY, *dropped)
    oldest = min((float(v) for k, v in marks.items() if k.decode() in wanted), default=now)
    client.set(INVENTORY_FRESH_KEY, oldest)


def hosts_fresh_since(hosts: list[int]) -> dict[int, float | None]:
    """Each host's mark (see HOST_FRESH_KEY); None where it has none. Raises RedisError."""
    if not hosts:
        return {}
    values = _redis().hmget(HOST_FRESH_KEY, [str(h) for h in hosts])
    return {h: None if v is None else float(v) for h, v in zip(hosts, values, strict=True)}


def inventory_stale_since() -> float | None:
    """None while the inventory is fresh; else since when it may be out of date (epoch
    seconds; 0 if no watcher ever ran): no watcher pass for longer than
    VMPANEL_WATCHER_STALE_SECONDS, or a host with no owner or no pass for longer than a
    lease (VMPANEL_LEASE_SECONDS). None too when Redis does not answer."""
    marks = _read(lambda client: client.mget(WATCHER_BEAT_KEY, INVENTORY_FRESH_KEY))
    if marks is _UNANSWERED:
        return None
    beat, fresh = marks
    if beat is None:
        return 0.0
    now = time.time()
    beat = float(beat)
    if now - beat > settings.VMPANEL_WATCHER_STALE_SECONDS:
        return beat
    if fresh is not None and now - float(fresh) > settings.VMPANEL_LEASE_SECONDS:
        return float(fresh)
    return None


def watcher_stale() -> bool:
    """Whether the inventory may be out of date (see `inventory_stale_since`)."""
    return inventory_stale_since() is not None
