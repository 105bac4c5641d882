"""One function per user action.

Each checks permission and state, writes the Operation (or audit) row and queues the
Celery task once the transaction commits. Views call these; nothing else mutates. A refusal
raises `ActionRefused` after recording itself, so a refused action is on record too.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from vmpanel.middleware import current_request_id

from . import hypervisor
from .hypervisor import HypervisorError
from .models import (
    ACTIVE_STATUSES,
    AuditEvent,
    Domain,
    Host,
    Membership,
    Operation,
    OperationKind,
    OperationStatus,
    State,
    Team,
)

log = logging.getLogger(__name__)


class ActionRefused(Exception):
    """The action was turned down before any work; `message` says why in plain words."""

    def __init__(self, message: str, operation: Operation | None = None, status=409):
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.status = status


@dataclass(frozen=True)
class LifecycleSpec:
    role: str  # the action name of ACTION_ROLES the user needs
    allowed: Callable[[Domain], bool]
    wrong_state: str  # said when `allowed` is false; {name} and {state} filled in
    task: str  # the Celery task's name


def _inactive(d: Domain) -> bool:
    return not d.is_active


LIFECYCLE: dict[str, LifecycleSpec] = {
    OperationKind.START: LifecycleSpec(
        "operate",
        lambda d: _inactive(d) and d.persistent,
        gettext_noop("{name} is {state}; only a shut-off persistent domain can be started."),
        "domains.tasks.start_domain_task",
    ),
    OperationKind.SHUTDOWN: LifecycleSpec(
        "operate",
        lambda d: d.state == State.RUNNING,
        gettext_noop("{name} is {state}; only a running domain can be shut down."),
        "domains.tasks.shutdown_domain_task",
    ),
    OperationKind.DESTROY: LifecycleSpec(
        "operate",
        lambda d: d.is_active,
        gettext_noop("{name} is {state}; only a domain that is on can be forced off."),
        "domains.tasks.destroy_domain_task",
    ),
    OperationKind.REBOOT: LifecycleSpec(
        "operate",
        lambda d: d.state == State.RUNNING,
        gettext_noop("{name} is {state}; only a running domain can be rebooted."),
        "domains.tasks.reboot_domain_task",
    ),
    OperationKind.SUSPEND: LifecycleSpec(
        "operate",
        lambda d: d.state == State.RUNNING,
        gettext_noop("{name} is {state}; only a running domain can be suspended."),
        "domains.tasks.suspend_domain_task",
    ),
    OperationKind.RESUME: LifecycleSpec(
        "operate",
        lambda d: d.state == State.PAUSED,
        gettext_noop("{name} is {state}; only a paused domain can be resumed."),
        "domains.tasks.resume_domain_task",
    ),
    OperationKind.AUTOSTART_ON: LifecycleSpec(
        "operate",
        lambda d: d.persistent and not d.autostart,
        gettext_noop("{name} is transient or starts with its host already."),
        "domains.tasks.set_autostart_task",
    ),
    OperationKind.AUTOSTART_OFF: LifecycleSpec(
        "operate",
        lambda d: d.persistent and d.autostart,
        gettext_noop("{name} does not start with its host."),
        "domains.tasks.set_autostart_task",
    ),
    OperationKind.UNDEFINE: LifecycleSpec(
        "admin",
        lambda d: d.persistent,
        gettext_noop("{name} is transient: it has no configuration to undefine."),
        "domains.tasks.undefine_domain_task",
    ),
}


def allowed_actions(user: User, domain: Domain) -> list[str]:
    """The lifecycle actions to offer as buttons: state fits and the role allows."""
    if domain.gone_at is not None:
        return []
    may = {
        role
        for role in ("operate", "admin")
        if Domain.objects.for_user(user, role).filter(pk=domain.pk).exists()
    }
    return [kind for kind, spec in LIFECYCLE.items() if spec.role in may and spec.allowed(domain)]


def _record_refusal(user: User, domain: Domain, kind: str, params: dict, message: str) -> Operation:
    now = timezone.now()
    op = Operation.objects.create(
        kind=kind,
        user=user,
        domain=domain,
        host=domain.host,
        domain_uuid=domain.uuid,
        domain_name=domain.name,
        team=domain.team,
        params=params,
        status=OperationStatus.REFUSED,
        message=message,
        request_id=current_request_id.get(),
        finished_at=now,
    )
    log.info(
        "operation %s %s refused user=%s host=%s domain=%s: %s",
        op.pk, kind, user, domain.host.name, domain.uuid, message,
    )  # fmt: skip
    return op


def _refuse(user, domain, kind, params, message, status=409):
    op = _record_refusal(user, domain, kind, params, message)
    raise ActionRefused(message, op, status)


def request_lifecycle(
    user: User, domain: Domain, kind: str, params: dict | None = None
) -> Operation:
    """Check and queue one lifecycle operation; returns the queued Operation."""
    spec = LIFECYCLE[kind]
    params = params or {}
    if not Domain.objects.for_user(user, "view").filter(pk=domain.pk).exists():
        # Not even visible: the caller answers 404 and nothing is recorded, so that the
        # domain's existence does not leak through the audit trail either.
        raise ActionRefused(_("No such domain."), None, status=404)
    if not Domain.objects.for_user(user, spec.role).filter(pk=domain.pk).exists():
        _refuse(
            user, domain, kind, params,
            _("Your role in this domain's team does not allow this."), status=403,
        )  # fmt: skip
    if domain.gone_at is not None:
        _refuse(user, domain, kind, params, _("This domain no longer exists."))
    if not domain.host.enabled:
        _refuse(
            user, domain, kind, params,
            _("Host %(host)s is disabled; enable it first.") % {"host": domain.host},
        )  # fmt: skip
    try:
        hypervisor.ping(domain.host.uri)
    except HypervisorError as exc:
        _refuse(
            user, domain, kind, params,
            _("Host %(host)s does not answer (%(error)s); try again when it is back.")
            % {"host": domain.host, "error": exc.message},
        )  # fmt: skip
    if not spec.allowed(domain):
        _refuse(
            user, domain, kind, params,
            _(spec.wrong_state).format(
                name=domain.name, state=domain.get_state_display()
            ),
        )  # fmt: skip

    with transaction.atomic():
        # Lock the inventory row so that two requests cannot both find the domain idle.
        locked = Domain.objects.select_for_update().get(pk=domain.pk)
        busy = (
            Operation.objects.filter(domain=locked, status__in=ACTIVE_STATUSES)
            .order_by("created_at")
            .first()
        )
        if busy is not None:
            message = _("%(name)s is busy with operation #%(id)s (%(kind)s).") % {
                "name": domain.name,
                "id": busy.pk,
                "kind": busy.get_kind_display(),
            }
        else:
            op = Operation.objects.create(
                kind=kind,
                user=user,
                domain=locked,
                host=locked.host,
                domain_uuid=locked.uuid,
                domain_name=locked.name,
                team=locked.team,
                params=params,
                request_id=current_request_id.get(),
                task_id=str(uuidlib.uuid4()),
            )
            transaction.on_commit(lambda: _queue(spec.task, op))
            log.info(
                "operation %s %s queued user=%s host=%s domain=%s",
                op.pk, kind, user, locked.host.name, locked.uuid,
            )  # fmt: skip
            return op
    # Outside the transaction so the refusal stays on record.
    _refuse(user, domain, kind, params, message)
    raise AssertionError("unreachable")


def _queue(task_name: str, op: Operation) -> None:
    from vmpanel.celery import app

    try:
        app.send_task(task_name, args=[op.pk], task_id=op.task_id)
    except Exception as exc:  # broker down: kombu raises several kinds
        # Never leave a queued operation that no worker will ever see: the domain would
        # stay "busy" for good.
        log.error("operation %s not queued: %s", op.pk, exc)
        Operation.objects.filter(pk=op.pk, status=OperationStatus.QUEUED).update(
            status=OperationStatus.FAILED,
            message=_("The task queue does not answer; nothing was done. Try again later."),
            error=str(exc),
            finished_at=timezone.now(),
        )


def start_domain(user: User, domain: Domain) -> Operation:
    return request_lifecycle(user, domain, OperationKind.START)


def shutdown_domain(user: User, domain: Domain) -> Operation:
    return request_lifecycle(user, domain, OperationKind.SHUTDOWN)


def destroy_domain(user: User, domain: Domain) -> Operation:
    return request_lifecycle(user, domain, OperationKind.DESTROY)


def reboot_domain(user: User, domain: Domain) -> Operation:
    return request_lifecycle(user, domain, OperationKind.REBOOT)


def suspend_domain(user: User, domain: Domain) -> Operation:
    return request_lifecycle(user, domain, OperationKind.SUSPEND)


def resume_domain(user: User, domain: Domain) -> Operation:
    return request_lifecycle(user, domain, OperationKind.RESUME)


def set_autostart(user: User, domain: Domain, enabled: bool) -> Operation:
    kind = OperationKind.AUTOSTART_ON if enabled else OperationKind.AUTOSTART_OFF
    return request_lifecycle(user, domain, kind, {"enabled": enabled})


def undefine_domain(
    user: User,
    domain: Domain,
    remove_managed_save: bool = False,
    remove_snapshots_metadata: bool = False,
) -> Operation:
    params = {
        "remove_managed_save": remove_managed_save,
        "remove_snapshots_metadata": remove_snapshots_metadata,
    }
    # libvirt would refuse too, with a less helpful message: say what to tick.
    if domain.has_managed_save and not remove_managed_save:
        visible = Domain.objects.for_user(user, "admin").filter(pk=domain.pk).exists()
        if visible:
            _refuse(
                user, domain, OperationKind.UNDEFINE, params,
                _("%(name)s has a managed-save image; choose to remove it as well.")
                % {"name": domain.name},
            )  # fmt: skip
    if domain.snapshot_count and not remove_snapshots_metadata:
        visible = Domain.objects.for_user(user, "admin").filter(pk=domain.pk).exists()
        if visible:
            _refuse(
                user, domain, OperationKind.UNDEFINE, params,
                _("%(name)s has snapshots; choose to remove their metadata as well.")
                % {"name": domain.name},
            )  # fmt: skip
    return request_lifecycle(user, domain, OperationKind.UNDEFINE, params)


# --- hosts, teams, assignment (superusers and team admins; audit events) ------------


def _audit(kind: str, user: User, summary: str, team=None, **detail) -> AuditEvent:
    log.info("audit %s user=%s %s", kind, user, summary)
    return AuditEvent.objects.create(
        kind=kind, user=user, team=team, summary=summary, detail=detail
    )


def _require_superuser(user: User) -> None:
    if not user.is_superuser:
        raise ActionRefused(_("Only superusers may do this."), status=403)


def save_host(user: User, host: Host) -> Host:
    """Add or change a host after checking that its URI answers."""
    _require_superuser(user)
    if host.enabled:
        try:
            hypervisor.check_uri(host.uri)
        except HypervisorError as exc:
            raise ActionRefused(
                _("Cannot connect to %(uri)s: %(error)s") % {"uri": host.uri, "error": exc.message}
            ) from None
    created = host.pk is None
    with transaction.atomic():
        if not created:
            # A new URI may reach another libvirt: forget the old connection.
            hypervisor.forget(Host.objects.get(pk=host.pk).uri)
        host.save()
        _audit(
            "host_added" if created else "host_changed",
            user,
            f"{host.name} ({host.uri}, {'enabled' if host.enabled else 'disabled'})",
            host=host.name,
        )
    return host


def set_host_enabled(user: User, host: Host, enabled: bool) -> Host:
    _require_superuser(user)
    host.enabled = enabled
    host.save(update_fields=["enabled"])
    _audit("host_enabled" if enabled else "host_disabled", user, host.name, host=host.name)
    return host


def assign_domain(user: User, domain: Domain, team: Team | None) -> Domain:
    _require_superuser(user)
    before = domain.team.name if domain.team else None
    domain.team = team
    domain.save(update_fields=["team"])
    _audit(
        "domain_assigned",
        user,
        f"{domain.name} on {domain.host}: {before or '-'} → {team or '-'}",
        team=team,
        domain=str(domain.uuid),
        before=before,
    )
    return domain


def _require_team_admin(user: User, team: Team) -> None:
    if user.is_superuser:
        return
    if not Membership.objects.filter(user=user, team=team, role="admin").exists():
        raise ActionRefused(_("Only this team's admins may change its members."), status=403)


def set_membership(user: User, team: Team, member: User, role: str) -> Membership:
    """Add `member` to `team` with `role`, or change the role they have."""
    _require_team_admin(user, team)
    with transaction.atomic():
        ms, created = Membership.objects.get_or_create(
            team=team, user=member, defaults={"role": role}
        )
        before = None if created else ms.role
        if not created and ms.role != role:
            ms.role = role
            ms.save(update_fields=["role"])
        _audit(
            "role_changed",
            user,
            f"{member} in {team}: {before or '-'} → {role}",
            team=team,
            member=member.username,
            before=before,
            after=role,
        )
    return ms


def remove_membership(user: User, team: Team, member: User) -> None:
    _require_team_admin(user, team)
    with transaction.atomic():
        deleted, _n = Membership.objects.filter(team=team, user=member).delete()
        if deleted:
            _audit(
                "member_removed",
                user,
                f"{member} removed from {team}",
                team=team,
                member=member.username,
            )
