"""What every page needs to know beyond its own view."""

from __future__ import annotations

from django.http import HttpRequest

from domains import liveness


def inventory_freshness(request: HttpRequest) -> dict:
    """`inventory_stale`: the watcher has not run a pass for a while, so states and lists
    may be out of date; `inventory_silent_seconds`: for how long. Signed-in pages only."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    silent = liveness.watcher_silent_seconds()
    stale = liveness.watcher_stale()
    return {
        "inventory_stale": stale,
        "inventory_silent_minutes": None if silent in (None, float("inf")) else int(silent // 60),
    }
