"""Keeps the Domain rows true to what libvirt says.

Used by the watcher (events and the periodic full read) and by tasks after they change a
domain. A domain that libvirt no longer knows is marked gone, never deleted: its
operations are its history.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from . import hypervisor, rules
from .hypervisor import DomainFacts, HypervisorError
from .models import Domain, Host

log = logging.getLogger(__name__)

_FIELDS = (
    "name",
    "state",
    "state_reason",
    "libvirt_id",
    "vcpus",
    "memory_kib",
    "max_memory_kib",
    "persistent",
    "autostart",
    "has_managed_save",
    "snapshot_count",
)


def _values(facts: DomainFacts) -> dict:
    return {
        "name": facts.name,
        "state": facts.state,
        "state_reason": facts.state_reason,
        "libvirt_id": facts.id,
        "vcpus": facts.vcpus,
        "memory_kib": facts.memory_kib,
        "max_memory_kib": facts.max_memory_kib,
        "persistent": facts.persistent,
        "autostart": facts.autostart,
        "has_managed_save": facts.has_managed_save,
        "snapshot_count": facts.snapshot_count,
    }


def _owner_of(uuid: uuidlib.UUID) -> int | None:
    """The team of the same guest (same UUID) known on another host: ownership follows
    the guest, so a copy that arrives on a host (a migration, half-way or done by hand)
    is its team's, not nobody's. Live rows first, then the most recently seen."""
    return (
        Domain.objects.filter(uuid=uuid, team__isnull=False)
        .order_by(F("gone_at").desc(nulls_first=True), "-last_seen_at")
        .values_list("team_id", flat=True)
        .first()
    )


# A state found changed began between the panel's previous look at the host and now: when
# that look was this recent, the change is said to have happened now ("running for 3
# minutes"); after a longer silence (the watcher stopped, the host did not answer) only
# that it began then or earlier ("for at least …"). Events and the reconcile every
# VMPANEL_RECONCILE_SECONDS keep the look recent while the watcher runs.
def _prompt_window() -> timedelta:
    return timedelta(seconds=max(60, 3 * settings.VMPANEL_RECONCILE_SECONDS))


# (state_since, state_since_exact): the inventory's own fields, beside libvirt's.
_SINCE_FIELDS = ("state_since", "state_since_exact")


def _owners_of(uuids: list[uuidlib.UUID]) -> dict[uuidlib.UUID, int]:
    """`_owner_of` for many UUIDs at once (those with a team only)."""
    found: dict[uuidlib.UUID, int] = {}
    for start in range(0, len(uuids), 500):
        rows = (
            Domain.objects.filter(uuid__in=uuids[start : start + 500], team__isnull=False)
            .order_by(F("gone_at").desc(nulls_first=True), "-last_seen_at")
            .values_list("uuid", "team_id")
        )
        for uuid, team in rows:
            found.setdefault(uuid, team)  # the first is the live row, or the latest seen
    return found


def _since_of_new_state(
    uuid: uuidlib.UUID, host_id: int, facts: DomainFacts, now: datetime, last_look: datetime | None
) -> tuple[datetime, bool]:
    """Since when a domain is in the state just found begun (or first seen): now, exact if
    the panel looked at the host a moment ago. A guest arriving by migration brings the
    running-since its row elsewhere holds (a migration the panel did not drive, or the
    watcher's row for the arrival before the panel moves the guest's own row here)."""
    if rules.arrives_by_migration(facts.state, facts.state_reason):
        elsewhere = (
            Domain.objects.filter(uuid=uuid)
            .exclude(host_id=host_id)
            .order_by(F("gone_at").desc(nulls_first=True), "-last_seen_at")
            .values_list("state", "state_reason", "state_since", "state_since_exact")
            .first()
        )
        if elsewhere is not None and rules.carries_running_since(*elsewhere[:2]):
            return elsewhere[2], elsewhere[3]
    return now, last_look is not None and now - last_look <= _prompt_window()


def _track_since(
    row: Domain, facts: DomainFacts, now: datetime, last_look: Callable[[], datetime | None]
) -> None:
    """Start the row's state-since afresh when the state read is another than the one
    stored (or the domain is back after being gone); a pass that finds the same state,
    as the periodic reconcile mostly does, leaves it as it is."""
    if row.gone_at is None and rules.state_goes_on(
        (row.state, row.state_reason), (facts.state, facts.state_reason)
    ):
        return
    look = last_look()
    if row.gone_at is None and row.last_seen_at is not None:
        look = max(filter(None, (look, row.last_seen_at)))
    row.state_since, row.state_since_exact = _since_of_new_state(
        row.uuid, row.host_id, facts, now, look
    )


def _apply(row: Domain, facts: DomainFacts, now, last_look: Callable[[], datetime | None]) -> bool:
    """Copy `facts` onto `row`; True if anything the user sees changed."""
    _track_since(row, facts, now, last_look)
    changed = row.gone_at is not None
    for field, value in _values(facts).items():
        if getattr(row, field) != value:
            setattr(row, field, value)
            changed = True
    row.gone_at = None
    row.last_seen_at = now
    return changed


def _mark_reachable(host: Host, error: str = "") -> None:
    now = timezone.now()
    if error:
        Host.objects.filter(pk=host.pk).update(last_error=error)
    else:
        # "Seen at" alone is a quiet write (kept_pages.QUIET_COLUMNS); the error is cleared
        # only when there is one, so that a pass that changes nothing bumps nothing.
        Host.objects.filter(pk=host.pk).update(last_seen_at=now)
        if Host.objects.filter(pk=host.pk).exclude(last_error="").exists():
            Host.objects.filter(pk=host.pk).update(last_error="")


def store_capabilities(host: Host) -> hypervisor.HostCapabilities | None:
    """Probe what `host` can do (once per connection) and keep it on the Host row.

    None, with the row left as it was, when the host is disabled or does not answer: the
    capabilities are for showing, and a host that does not answer says so elsewhere.
    """
    if not host.enabled:
        return None
    try:
        caps = hypervisor.capabilities(host.uri)
    except HypervisorError as exc:
        log.warning("capabilities of host %s not probed: %s", host.name, exc.message)
        return None
    host.capabilities = caps.to_dict()
    host.capabilities_probed_at = timezone.now()
    Host.objects.filter(pk=host.pk).update(
        capabilities=host.capabilities, capabilities_probed_at=host.capabilities_probed_at
    )
    return caps


def reconcile_host(host: Host) -> int:
    """Read every domain of `host` and bring the inventory in line; returns changes."""
    try:
        all_facts = hypervisor.list_domains(host.uri)
    except HypervisorError as exc:
        _mark_reachable(host, exc.message)
        raise
    # The previous full read: what was found changed now changed since then.
    last_look = Host.objects.filter(pk=host.pk).values_list("last_seen_at", flat=True).first()
    _mark_reachable(host)
    now = timezone.now()
    seen = {uuidlib.UUID(f.uuid): f for f in all_facts}
    changes = created = 0
    with transaction.atomic():
        rows = {d.uuid: d for d in Domain.objects.filter(host=host)}
        # New rows in one INSERT and their teams in one query: a host read for the first
        # time (a watcher taking it over from a fresh start) may bring hundreds.
        teams = _owners_of([uuid for uuid in seen if uuid not in rows])
        to_create, to_update = [], []
        for uuid, facts in seen.items():
            row = rows.get(uuid)
            if row is None:
                since, exact = _since_of_new_state(uuid, host.pk, facts, now, last_look)
                to_create.append(
                    Domain(
                        host=host,
                        uuid=uuid,
                        team_id=teams.get(uuid),
                        first_seen_at=now,
                        last_seen_at=now,
                        state_since=since,
                        state_since_exact=exact,
                        **_values(facts),
                    )
                )
            elif _apply(row, facts, now, lambda: last_look):
                to_update.append(row)
        if to_create:
            # A row another writer inserted since `rows` was read (an operation's
            # refresh, a watcher at a takeover) stays as that writer, reading libvirt as
            # freshly, left it; the rest go in.
            Domain.objects.bulk_create(to_create, batch_size=500, ignore_conflicts=True)
            created = len(to_create)
        changes += created
        if to_update:
            Domain.objects.bulk_update(
                to_update, [*_FIELDS, *_SINCE_FIELDS, "gone_at", "last_seen_at"]
            )
            changes += len(to_update)
        gone = [u for u, row in rows.items() if u not in seen and row.gone_at is None]
        if gone:
            changes += Domain.objects.filter(host=host, uuid__in=gone).update(
                gone_at=now, libvirt_id=None
            )
        # "Last seen" means seen, changed or not: one UPDATE for the host's other rows
        # (those just written say so already; on a first read, that is all of them).
        Domain.objects.filter(host=host, gone_at__isnull=True).exclude(last_seen_at=now).update(
            last_seen_at=now
        )
    if created:
        _update_statistics()
    return changes


def _update_statistics() -> None:
    # SQLite plans from statistics it only gathers when asked: without them a filtered,
    # sorted list page sorts every row instead of walking the name index.
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE domains_domain")


def refresh_domain(host: Host, uuid: str | uuidlib.UUID) -> Domain | None:
    """Re-read one domain after an event or an operation; None if it is gone."""
    uuid = uuidlib.UUID(str(uuid))
    try:
        facts = hypervisor.domain_facts(host.uri, str(uuid))
    except HypervisorError as exc:
        if exc.no_such_domain:
            Domain.objects.filter(host=host, uuid=uuid, gone_at__isnull=True).update(
                gone_at=timezone.now(), libvirt_id=None
            )
            return None
        raise
    now = timezone.now()

    def last_look() -> datetime | None:
        # The host's last full read (events come between them): asked only on a change.
        return Host.objects.filter(pk=host.pk).values_list("last_seen_at", flat=True).first()

    row = Domain.objects.filter(host=host, uuid=uuid).first()
    if row is None:
        since, exact = _since_of_new_state(uuid, host.pk, facts, now, last_look())
        row, created = Domain.objects.get_or_create(
            host=host,
            uuid=uuid,
            defaults={
                **_values(facts),
                "team_id": _owner_of(uuid),
                "first_seen_at": now,
                "last_seen_at": now,
                "state_since": since,
                "state_since_exact": exact,
            },
        )
    else:
        created = False
    if not created:
        _apply(row, facts, now, last_look)
        # Only what libvirt says (and since when): a full save would undo a team assigned
        # meanwhile.
        row.save(update_fields=[*_FIELDS, *_SINCE_FIELDS, "gone_at", "last_seen_at"])
    return row


def move_domain(row: Domain, dest: Host) -> Domain:
    """After a migration: the same row (team, history) now lives on `dest`.

    The watcher may have seen the domain arrive and made a row of its own first; that
    row's operations (if any) join this one's history and the extra row goes.
    """
    with transaction.atomic():
        arrived = (
            Domain.objects.select_for_update()
            .filter(host=dest, uuid=row.uuid)
            .exclude(pk=row.pk)
            .first()
        )
        if arrived is not None:
            arrived.operations.update(domain=row)
            arrived.delete()
        Domain.objects.filter(pk=row.pk).update(host=dest, gone_at=None)
    row.refresh_from_db()
    return refresh_domain(dest, row.uuid) or row
