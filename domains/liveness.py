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


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    # Short timeouts: a page asks on every request and must not wait on a Redis in trouble.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)


def mark_worker_alive() -> None:
    """Say, for WORKER_ALIVE_SECONDS, that a worker runs (each worker, every few seconds)."""
    _redis().set(WORKER_ALIVE_KEY, time.time(), ex=WORKER_ALIVE_SECONDS)


def worker_alive() -> bool | None:
    """Whether a worker said lately that it runs; None when Redis does not answer."""
    try:
        return bool(_redis().exists(WORKER_ALIVE_KEY))
    except redis.RedisError:
        return None


def mark_watcher_beat() -> None:
    """The watcher's pass has run now (every pass, twice a second or so)."""
    _redis().set(WATCHER_BEAT_KEY, time.time())


def watcher_silent_seconds() -> float | None:
    """Seconds since the watcher's last pass; None when Redis does not answer, infinity
    when no watcher has ever run against this Redis."""
    try:
        beat = _redis().get(WATCHER_BEAT_KEY)
    except redis.RedisError:
        return None
    return float("inf") if beat is None else max(0.0, time.time() - float(beat))


def watcher_stale() -> bool:
    """Whether the inventory may be out of date: no watcher pass for longer than
    VMPANEL_WATCHER_STALE_SECONDS."""
    silent = watcher_silent_seconds()
    return silent is not None and silent > settings.VMPANEL_WATCHER_STALE_SECONDS
