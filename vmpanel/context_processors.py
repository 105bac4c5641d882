"""What every page needs to know beyond its own view."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest
from django.utils import timezone

from domains import liveness


def inventory_freshness(request: HttpRequest) -> dict:
    """`inventory_stale`: the watcher has not run a pass for a while, so states and lists
    may be out of date; `inventory_since`: its last pass, None if it never ran. Signed-in
    pages only."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not liveness.watcher_stale():
        return {}
    silent = liveness.watcher_silent_seconds()
    since = None
    if silent is not None and silent != float("inf"):
        since = timezone.now() - timedelta(seconds=silent)
    return {"inventory_stale": True, "inventory_since": since}
