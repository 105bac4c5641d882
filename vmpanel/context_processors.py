"""What every page needs to know beyond its own view."""

from __future__ import annotations

import time
from datetime import timedelta

from django.http import HttpRequest
from django.utils import timezone

from domains import liveness


def inventory_freshness(request: HttpRequest) -> dict:
    """`inventory_stale`: no watcher has run a pass for a while, or a host has had no owner
    (no pass) for longer than a lease, so states and lists may be out of date;
    `inventory_since`: since when, None if no watcher ever ran. Signed-in pages only."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    stale_since = liveness.inventory_stale_since()
    if stale_since is None:
        return {}
    since = None
    if stale_since:
        since = timezone.now() - timedelta(seconds=max(0.0, time.time() - stale_since))
    return {"inventory_stale": True, "inventory_since": since}
