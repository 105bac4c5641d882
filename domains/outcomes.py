"""Migrations that ended without libvirt saying how: judged from what both hosts say.

libvirt's answer to a migration is the truth only when it arrives. When the source host's
daemon dies mid-transfer (or the worker driving the migration does), the call fails while
the destination may hold a paused, half-arrived copy for a few seconds, and the guest may
still run on the source. So the panel never infers success from "something is on the
destination": `rules.migration_outcome` asks that the guest *runs* there and is no longer
active on the source, and anything short of knowing says "outcome unknown — checking"
(`OperationStatus.CHECKING`) until `settle_checking_operations` (run by every worker's
keeper) finds out. Ownership follows the real guest: the row (team, history) moves only
once the guest has; volumes made on the destination for a failed copy are removed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from . import hypervisor, inventory, language
from .hypervisor import GuestSighting, HypervisorError
from .models import Domain, Operation, OperationKind, OperationStatus, State
from .rules import MigrationOutcome, migration_outcome

log = logging.getLogger(__name__)


def _destination(op: Operation) -> tuple[str, str]:
    """(name for people, URI) of the migration's destination."""
    uri = op.params.get("destination_uri", "")
    return (op.target_host.name if op.target_host else uri), uri


def _sighting_words(host: str, seen: GuestSighting | None, error: str = "") -> str:
    if seen is None:
        return _("%(host)s does not answer (%(error)s)") % {"host": host, "error": error}
    if not seen.present:
        return _("%(host)s does not have it") % {"host": host}
    words = _("%(host)s has it %(state)s (%(reason)s)") % {
        "host": host,
        "state": State(seen.state).label if seen.state in State.values else seen.state,
        "reason": hypervisor.reason_text(seen.state, seen.reason),
    }
    if seen.job:
        words += ", " + _("a libvirt job still running")
    return words


def judge_migration(op: Operation) -> tuple[str, str]:
    """(MigrationOutcome, what each host said in plain words) for `op` now."""
    uuid = str(op.domain_uuid)
    dest_name, dest_uri = _destination(op)
    seen: list[GuestSighting | None] = []
    words = []
    for name, uri in ((op.host.name, op.host.uri), (dest_name, dest_uri)):
        try:
            sighting = hypervisor.sighting(uri, uuid)
        except HypervisorError as exc:
            seen.append(None)
            words.append(_sighting_words(name, None, exc.message))
        else:
            seen.append(sighting)
            words.append(_sighting_words(name, sighting))
    offline = "OFFLINE" in op.params.get("flags", ())
    return migration_outcome(seen[0], seen[1], offline=offline), "; ".join(words) + "."


def follow_to_destination(op: Operation) -> None:
    """The domain's row (team, history) now lives where the guest went."""
    if op.target_host is not None and op.domain is not None:
        inventory.move_domain(op.domain, op.target_host)


def undo_destination(op: Operation) -> str:
    """After a migration that did not happen: remove the volumes it made on the
    destination, drop the rows the watcher made there for the half-arrived copy (gone,
    with no history), and read the source again. Returns words for what could not be
    removed (empty when all went)."""
    _name, dest_uri = _destination(op)
    kept = []
    for path in op.params.get("created_volumes", ()):
        try:
            hypervisor.delete_volume(dest_uri, path)
        except HypervisorError as exc:
            if not exc.no_such_volume:
                log.warning("operation %s: %s not removed: %s", op.pk, path, exc)
                kept.append(path)
    if op.target_host is not None:
        try:
            inventory.refresh_domain(op.target_host, op.domain_uuid)
        except HypervisorError:
            pass
        Domain.objects.filter(
            host=op.target_host, uuid=op.domain_uuid, gone_at__isnull=False, operations=None
        ).exclude(pk=op.domain_id).delete()
    try:
        inventory.refresh_domain(op.host, op.domain_uuid)
    except HypervisorError as exc:
        log.warning("operation %s: source not read again: %s", op.pk, exc)
    if not kept:
        return ""
    return _("The copies made on the destination could not be removed: %(paths)s.") % {
        "paths": ", ".join(kept)
    }


def unknown_message(reported: str, words: str) -> str:
    return _(
        "Outcome unknown — checking. The migration ended without libvirt's answer "
        "(%(error)s); now %(words)s"
    ) % {"error": reported, "words": words}


def conclude(op: Operation, reported: str) -> str:
    """Settle a migration that ended without libvirt's answer (a CHECKING one, or one
    whose worker died), if what the hosts say now allows; returns the outcome."""
    outcome, words = judge_migration(op)
    now = timezone.now()
    active = Operation.objects.filter(
        pk=op.pk,
        status__in=(OperationStatus.CHECKING, OperationStatus.RUNNING, OperationStatus.QUEUED),
    )
    if outcome == MigrationOutcome.MOVED:
        follow_to_destination(op)
        message = _(
            "Migrated: the migration ended without libvirt's answer (%(error)s), and "
            "checking afterwards found the VM running on %(dest)s. %(words)s"
        ) % {"error": reported, "dest": _destination(op)[0], "words": words}
        if active.update(
            status=OperationStatus.SUCCEEDED, message=message, finished_at=now, progress=100
        ):
            log.warning("operation %s migration settled: moved; %s", op.pk, words)
        return outcome
    if outcome == MigrationOutcome.STAYED:
        # Undone first (two keepers doing it both is harmless), recorded after: whoever
        # reads "failed" finds the destination clean and the full message.
        kept = undo_destination(op)
        message = _(
            "Not migrated: the migration ended without libvirt's answer (%(error)s), and the "
            "VM stayed on %(source)s. %(words)s"
        ) % {"error": reported, "source": op.host.name, "words": words}
        if active.update(
            status=OperationStatus.FAILED, message=f"{message} {kept}".strip(), finished_at=now
        ):
            log.warning("operation %s migration settled: stayed; %s", op.pk, words)
        return outcome
    give_up = timedelta(seconds=settings.VMPANEL_CHECKING_GIVE_UP_SECONDS)
    if op.started_at is not None and now - op.started_at > give_up:
        message = _(
            "The outcome is still unknown after %(minutes)s minutes (%(words)s) The panel "
            "has stopped checking: look at both hosts before moving this VM again."
        ) % {"minutes": int(give_up.total_seconds() // 60), "words": words}
        active.update(status=OperationStatus.FAILED, message=message, finished_at=now)
        log.error("operation %s migration outcome unknown; given up: %s", op.pk, words)
        return outcome
    Operation.objects.filter(pk=op.pk, status=OperationStatus.CHECKING).update(
        message=unknown_message(reported, words), heartbeat_at=now
    )
    return outcome


def settle_checking_operations() -> list[int]:
    """Look again at every operation whose outcome is unknown; returns those settled."""
    settled = []
    checking = Operation.objects.filter(status=OperationStatus.CHECKING).select_related(
        "host", "target_host", "domain"
    )
    for op in checking:
        if op.kind != OperationKind.MIGRATE:  # no other kind ends up here today
            continue
        with language.for_operation(op):
            reported = op.error or op.params.get("reported") or _("no answer")
            if conclude(op, reported) != MigrationOutcome.UNKNOWN:
                settled.append(op.pk)
    return settled
