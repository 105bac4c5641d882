"""Since when a VM is in its state, as its page says it ("Running for 3 hours, 12 minutes,
since 14:05").

libvirt keeps no such time for a domain: the inventory records it (`Domain.state_since`,
see `inventory` and `rules.state_goes_on`). This module only words it for a page.

A VM's page is kept rendered per content (`kept_pages`), and an elapsed time changes by
itself. So the words are facts of the page like any other: the elapsed time in whole
minutes at most (two units: "3 hours, 12 minutes", "2 days, 4 hours") and the since-time as
shown (the time alone when it is today, else with its date). They change at most once a
minute, and a changed fact is a new kept page, so what a kept page says is never more than
a minute behind; a page left open polls every second and swaps when they change. No script
is needed, and a page without JavaScript is right when it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.formats import date_format
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

from . import rules
from .models import Domain, State


@dataclass(frozen=True)
class StateSince:
    """What a VM's page says of the time in its state; hashable (a fact of a kept page)."""

    # "running" (also paused a moment while it moves or starts), "paused", "shutoff", "other"
    kind: str
    state_label: str  # the state's name, for "other"
    since: datetime
    exact: bool  # False: the panel first saw the state then; it began then or earlier
    elapsed: str  # "3 hours, 12 minutes"; changes at most once a minute
    when: str  # the since-time as shown: the time alone if today where the viewer is


def state_since(domain: Domain, now: datetime | None = None) -> StateSince | None:
    """The VM's time in its state, or None where there is nothing true to say: gone, or
    the copy a migration left shut off behind it (the guest runs on elsewhere)."""
    if domain.gone_at is not None:
        return None
    kind = rules.state_kind(domain.state, domain.state_reason)
    if kind == rules.LEFT:
        return None
    now = now or timezone.now()
    if kind != rules.RUNNING:
        kind = {str(int(State.PAUSED)): "paused", str(int(State.SHUTOFF)): "shutoff"}.get(
            kind, "other"
        )
    since = domain.state_since
    delta = now - since
    if delta < timedelta(minutes=1):
        # "for at least less than a minute" says nothing: a lower bound is "a moment".
        elapsed = _("less than a minute") if domain.state_since_exact else _("a moment")
    else:
        elapsed = timesince(since, now, depth=2)
    return StateSince(
        kind=kind,
        state_label=str(domain.get_state_display()),
        since=since,
        exact=domain.state_since_exact,
        elapsed=elapsed,
        when=date_format(
            timezone.localtime(since),
            "TIME_FORMAT"
            if timezone.localdate(since) == timezone.localdate(now)
            else "SHORT_DATETIME_FORMAT",
        ),
    )


def unchanged_for(said: StateSince | None, now: datetime | None = None) -> float | None:
    """Seconds the words of `said` stay as they are, for a poll to be confirmed unchanged
    no longer (`kept_pages.render_kept`'s `live_for`): to the next whole minute of the
    elapsed time or of the clock (at midnight the date joins the time), whichever comes
    first. None: nothing moves on."""
    if said is None:
        return None
    now = now or timezone.now()
    elapsed = (now - said.since).total_seconds()
    to_elapsed_minute = 60 - elapsed % 60 if elapsed >= 0 else -elapsed
    to_clock_minute = 60 - (now.second + now.microsecond / 1e6)
    return max(0.1, min(to_elapsed_minute, to_clock_minute))
