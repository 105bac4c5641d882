"""Probes: /healthz says the process and database are up; /readyz that the panel can work."""

import time

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from domains import hypervisor, liveness
from domains.hypervisor import HypervisorError
from domains.models import Host
from vmpanel.celery import app


def healthz(request):
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any database failure means not healthy
        return JsonResponse({"status": "fail", "database": str(exc)}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


def _unowned_hosts() -> str:
    """The watcher check: "ok", or the enabled hosts that have had no owner (no watcher's
    pass) for longer than a lease (a watcher died and nobody took its hosts over)."""
    now = time.time()
    hosts = list(Host.objects.filter(enabled=True).only("pk", "name", "created_at"))
    try:
        marks = liveness.hosts_fresh_since([h.pk for h in hosts])
    except redis.RedisError:
        return "fail: no broker"
    late = []
    for host in hosts:
        # A host no watcher has marked yet counts from when it was added.
        since = marks.get(host.pk) or host.created_at.timestamp()
        if now - since > settings.VMPANEL_LEASE_SECONDS:
            late.append(f"{host.name} has had no owner for {int(now - since)} s")
    return f"fail: {'; '.join(late)}" if late else "ok"


def readyz(request):
    checks: dict[str, str] = {}
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
        checks["redis"] = "ok"
    except Exception as exc:  # redis-py raises several kinds
        checks["redis"] = f"fail: {exc}"
    if checks["redis"] == "ok":
        try:
            # limit=1: answer as soon as one worker replies; without it the ping always
            # waits out the whole timeout, which a 1 s probe timeout never sees end.
            replies = app.control.ping(timeout=1.0, limit=1) or []
            checks["worker"] = "ok" if replies else "fail: no worker answered"
        except Exception as exc:  # broker trouble
            checks["worker"] = f"fail: {exc}"
    else:
        checks["worker"] = "fail: no broker"
    silent = liveness.watcher_silent_seconds()
    if silent is None:
        checks["watcher"] = "fail: no broker"
    elif silent > settings.VMPANEL_WATCHER_STALE_SECONDS:
        checks["watcher"] = (
            "fail: never ran" if silent == float("inf") else f"fail: silent for {int(silent)} s"
        )
    else:
        checks["watcher"] = _unowned_hosts()
    for host in Host.objects.filter(enabled=True):
        try:
            hypervisor.ping(host.uri)
            checks[f"host:{host.name}"] = "ok"
        except HypervisorError as exc:
            checks[f"host:{host.name}"] = f"fail: {exc.message}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "fail", **checks}, status=200 if ok else 503)
