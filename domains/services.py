"""One function per user action.

Each checks permission and state, writes the Operation (or audit) row and queues the
Celery task once the transaction commits. Views call these; nothing else mutates. A refusal
raises `ActionRefused` after recording itself, so a refused action is on record too.
"""

from __future__ import annotations

import logging
import re
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
    SavedImage,
    State,
    Team,
    teams_for,
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
    allow_gone: bool = False  # restore brings back a saved transient domain


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
    OperationKind.SAVE: LifecycleSpec(
        "operate",
        lambda d: d.state in (State.RUNNING, State.PAUSED),
        gettext_noop("{name} is {state}; only a running or paused domain can be saved."),
        "domains.tasks.save_domain_task",
    ),
    OperationKind.RESTORE: LifecycleSpec(
        "operate",
        lambda d: not d.is_active,
        gettext_noop("{name} is {state}; restore needs it shut off (or gone, if transient)."),
        "domains.tasks.restore_domain_task",
        allow_gone=True,
    ),
    OperationKind.MANAGED_SAVE: LifecycleSpec(
        "operate",
        lambda d: d.persistent and d.state in (State.RUNNING, State.PAUSED),
        gettext_noop(
            "{name} is {state}; managed save needs a running or paused persistent domain."
        ),
        "domains.tasks.managed_save_task",
    ),
    OperationKind.MANAGED_SAVE_REMOVE: LifecycleSpec(
        "operate",
        lambda d: d.has_managed_save and not d.is_active,
        gettext_noop("{name} has no managed-save image to remove."),
        "domains.tasks.managed_save_remove_task",
    ),
    OperationKind.MIGRATE: LifecycleSpec(
        "operate",
        lambda d: True,  # the flags decide: migration_problems() says what fits
        "",
        "domains.tasks.migrate_domain_task",
    ),
}

# Kinds whose libvirt job can be aborted while it runs.
CANCELLABLE = {
    OperationKind.SAVE,
    OperationKind.RESTORE,
    OperationKind.MANAGED_SAVE,
    OperationKind.MIGRATE,
}
# Offered as plain buttons; the others need a form of their own.
BUTTON_KINDS = [
    k
    for k in LIFECYCLE
    if k not in (OperationKind.SAVE, OperationKind.RESTORE, OperationKind.MIGRATE)
]


def allowed_actions(user: User, domain: Domain) -> list[str]:
    """The lifecycle actions to offer as buttons: state fits and the role allows."""
    if domain.gone_at is not None:
        return []
    may = {
        role
        for role in ("operate", "admin")
        if Domain.objects.for_user(user, role).filter(pk=domain.pk).exists()
    }
    return [
        kind
        for kind in BUTTON_KINDS
        if LIFECYCLE[kind].role in may and LIFECYCLE[kind].allowed(domain)
    ]


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


def _check_role(user: User, domain: Domain, kind: str, params: dict) -> None:
    """404 for a domain the user cannot see; 403, on record, for a role too small."""
    if not Domain.objects.for_user(user, "view").filter(pk=domain.pk).exists():
        # Not even visible: the caller answers 404 and nothing is recorded, so that the
        # domain's existence does not leak through the audit trail either.
        raise ActionRefused(_("No such domain."), None, status=404)
    if not Domain.objects.for_user(user, LIFECYCLE[kind].role).filter(pk=domain.pk).exists():
        _refuse(
            user, domain, kind, params,
            _("Your role in this domain's team does not allow this."), status=403,
        )  # fmt: skip


def request_lifecycle(
    user: User,
    domain: Domain,
    kind: str,
    params: dict | None = None,
    *,
    extra_check: Callable[[], str | None] | None = None,
    target_host: Host | None = None,
) -> Operation:
    """Check and queue one operation on `domain`; returns the queued Operation.

    `extra_check` runs after the common checks (role, host, state) and returns the reason
    to refuse in plain words, or None.
    """
    spec = LIFECYCLE[kind]
    params = params or {}
    _check_role(user, domain, kind, params)
    if domain.gone_at is not None and not spec.allow_gone:
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
    problem = extra_check() if extra_check else None
    if problem:
        _refuse(user, domain, kind, params, problem)

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
                target_host=target_host,
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


# --- save, restore, managed save, migration, cancel ----------------------------------

# A saved image's file name: the user names it, the folder is the host's.
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def save_path(host: Host, image_name: str) -> str:
    name = image_name if image_name.endswith(".save") else f"{image_name}.save"
    return f"{host.save_dir.rstrip('/')}/{name}"


def save_domain(user: User, domain: Domain, image_name: str) -> Operation:
    """Save the domain's memory to an image named `image_name` in its host's save folder."""
    image_name = image_name.strip()

    def check() -> str | None:
        if not domain.host.save_dir:
            return _("Host %(host)s has no save folder; a superuser can set one.") % {
                "host": domain.host
            }
        if not _IMAGE_NAME.fullmatch(image_name):
            return _(
                "An image name uses letters, digits, dots, dashes and underscores only "
                "(at most 100), and starts with a letter or digit."
            )
        if SavedImage.objects.filter(
            host=domain.host, path=save_path(domain.host, image_name)
        ).exists():
            return _("An image named %(name)s exists already on %(host)s.") % {
                "name": image_name,
                "host": domain.host,
            }
        return None

    return request_lifecycle(
        user,
        domain,
        OperationKind.SAVE,
        {"image": image_name, "path": save_path(domain.host, image_name)},
        extra_check=check,
    )


def restore_domain(user: User, image: SavedImage) -> Operation:
    """Start the image's domain from the image (memory only; disks must be unchanged)."""
    domain = image.domain
    if domain is None:
        raise ActionRefused(_("This image's domain is unknown to the panel."), status=404)

    def check() -> str | None:
        if image.host_id != domain.host_id:
            return _("The image is on %(image_host)s but the domain is now on %(host)s.") % {
                "image_host": image.host,
                "host": domain.host,
            }
        try:
            facts = hypervisor.domain_facts(domain.host.uri, str(domain.uuid))
        except HypervisorError as exc:
            if exc.no_such_domain:
                return None  # a transient domain, saved away: restore brings it back
            return exc.message
        if facts.id is not None:
            return _("%(name)s is running already; shut it down before restoring.") % {
                "name": facts.name
            }
        return None

    return request_lifecycle(
        user,
        domain,
        OperationKind.RESTORE,
        {"image_id": image.pk, "path": image.path},
        extra_check=check,
    )


def managed_save_domain(user: User, domain: Domain) -> Operation:
    return request_lifecycle(user, domain, OperationKind.MANAGED_SAVE)


def remove_managed_save(user: User, domain: Domain) -> Operation:
    return request_lifecycle(user, domain, OperationKind.MANAGED_SAVE_REMOVE)


def delete_saved_image(user: User, image: SavedImage) -> None:
    """Forget an image the panel made (the file goes when its host's folder is cleaned)."""
    if not user.is_superuser and not (
        image.team and teams_for(user, "operate").filter(pk=image.team_id).exists()
    ):
        raise ActionRefused(_("Your role does not allow this."), status=403)
    _audit("image_forgotten", user, image.path, team=image.team, host=image.host.name)
    image.delete()


def cancel_operation(user: User, op: Operation) -> Operation:
    """Ask the worker running `op` to abort its libvirt job; a queued one just stops."""
    if (
        op.domain is None
        or not Domain.objects.for_user(user, "view").filter(pk=op.domain_id).exists()
    ):
        raise ActionRefused(_("No such operation."), status=404)
    if not Domain.objects.for_user(user, "operate").filter(pk=op.domain_id).exists():
        raise ActionRefused(_("Your role does not allow cancelling this."), status=403)
    if op.is_finished:
        raise ActionRefused(_("Operation #%(id)s has finished already.") % {"id": op.pk})
    if op.kind not in CANCELLABLE:
        raise ActionRefused(_("A %(kind)s cannot be cancelled.") % {"kind": op.get_kind_display()})
    # A queued operation is cancelled here; the worker's claim then finds nothing to do.
    stopped = Operation.objects.filter(pk=op.pk, status=OperationStatus.QUEUED).update(
        status=OperationStatus.CANCELLED,
        cancel_requested=True,
        message=_("Cancelled by %(user)s before it started.") % {"user": user},
        finished_at=timezone.now(),
    )
    if not stopped:
        # Running: the worker's monitor sees the flag and calls abortJob.
        Operation.objects.filter(pk=op.pk).update(cancel_requested=True)
    op.refresh_from_db()
    log.info("operation %s cancel requested by %s", op.pk, user)
    return op


@dataclass(frozen=True)
class MigrationChoice:
    """What the migration form asks for."""

    destination: Host | None  # one of the panel's hosts …
    destination_uri: str = ""  # … or, for superusers, any libvirt URI
    flags: frozenset[str] = frozenset()
    bandwidth_mib_s: int = 0
    new_name: str = ""
    migrate_uri: str = ""
    listen_address: str = ""


DEFAULT_MIGRATION_FLAGS = frozenset({"LIVE", "PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE"})


def _dest_uris(choice: MigrationChoice) -> tuple[str, str]:
    """(the panel's URI of the destination, the URI the source daemon uses)."""
    if choice.destination is not None:
        dest = choice.destination
        return dest.uri, dest.migration_uri or dest.uri
    return choice.destination_uri, choice.destination_uri


def migration_problems(domain: Domain, choice: MigrationChoice) -> list[str]:
    """Everything that would make this migration fail, in plain words, before libvirt is
    asked to migrate. Reads facts from both hosts; changes nothing."""
    flags = choice.flags
    problems: list[str] = []
    unknown = flags - set(hypervisor.MIGRATION_FLAGS)
    if unknown:
        return [_("Unknown migration flags: %(flags)s.") % {"flags": ", ".join(sorted(unknown))}]
    copy = flags & {"NON_SHARED_DISK", "NON_SHARED_INC"}
    # Flag combinations this libvirt refuses, said before it does.
    if "TUNNELLED" in flags and "PEER2PEER" not in flags:
        problems.append(
            _("Tunnelled migration goes through the source daemon: choose peer-to-peer too.")
        )
    if "TUNNELLED" in flags and copy:
        problems.append(
            _("This libvirt cannot copy storage through a tunnel: choose one of the two.")
        )
    if copy == {"NON_SHARED_DISK", "NON_SHARED_INC"}:
        problems.append(_("Copy the whole disks or only their changes, not both."))
    if "OFFLINE" in flags:
        if "PERSIST_DEST" not in flags:
            problems.append(
                _(
                    "An offline migration moves only the configuration: "
                    "choose persistent on the destination."
                )
            )
        if "LIVE" in flags:
            problems.append(_("Offline and live exclude each other."))
        if copy:
            problems.append(_("An offline migration copies no storage."))
    if "UNDEFINE_SOURCE" in flags and "PERSIST_DEST" not in flags and domain.persistent:
        problems.append(
            _(
                "Undefining the source without persisting on the destination would lose "
                "the domain's configuration."
            )
        )
    if "PAUSED" in flags and "OFFLINE" in flags:
        problems.append(_("An offline domain cannot be left paused."))
    # The guest's state must fit the flags.
    if "OFFLINE" not in flags and not domain.is_active:
        problems.append(
            _("%(name)s is shut off: only an offline migration can move it.")
            % {"name": domain.name}
        )
    if "OFFLINE" in flags and not domain.persistent:
        problems.append(_("A transient domain has no configuration to move offline."))
    if choice.destination is not None and choice.destination.pk == domain.host_id:
        problems.append(_("The destination is the host the domain is on."))
    if choice.destination is not None and not choice.destination.enabled:
        problems.append(_("Host %(host)s is disabled.") % {"host": choice.destination})
    if choice.new_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", choice.new_name):
        problems.append(_("A new name uses letters, digits, dots, dashes and underscores only."))
    if choice.bandwidth_mib_s < 0:
        problems.append(_("Bandwidth is a number of MiB/s, 0 for no limit."))
    if problems:
        return problems

    dest_uri, _p2p = _dest_uris(choice)
    try:
        hypervisor.ping(dest_uri)
    except HypervisorError as exc:
        return [_("The destination does not answer: %(error)s") % {"error": exc.message}]
    try:
        if hypervisor.domain_exists(dest_uri, str(domain.uuid)):
            problems.append(_("A domain with this UUID exists on the destination already."))
        name = choice.new_name or domain.name
        if hypervisor.domain_name_taken(dest_uri, name):
            problems.append(
                _("A domain named %(name)s exists on the destination already.") % {"name": name}
            )
        if "OFFLINE" not in flags:
            needed: dict[str, int] = {}  # folder → bytes the copies need there
            for disk in hypervisor.domain_disks(domain.host.uri, str(domain.uuid)):
                if hypervisor.volume_exists(dest_uri, disk.source):
                    continue  # shared storage, or a target made ready by hand
                folder = disk.source.rsplit("/", 1)[0]
                needed[folder] = needed.get(folder, 0) + disk.allocation_bytes
                if not copy:
                    problems.append(
                        _(
                            "Disk %(target)s (%(path)s) is not on the destination: put it on "
                            "shared storage or choose to copy storage."
                        )
                        % {"target": disk.target, "path": disk.source}
                    )
                elif hypervisor.pool_free_bytes(dest_uri, disk.source) is None:
                    problems.append(
                        _(
                            "The destination has no storage pool holding %(folder)s, so the "
                            "copy of %(target)s cannot be created there."
                        )
                        % {"folder": disk.source.rsplit("/", 1)[0], "target": disk.target}
                    )
            for folder, size in needed.items() if copy else ():
                free = hypervisor.pool_free_bytes(dest_uri, f"{folder}/x")
                if free is not None and free < size:
                    problems.append(
                        _(
                            "The destination's pool for %(folder)s has %(free)s GiB free; the "
                            "copies need %(size)s GiB."
                        )
                        % {
                            "folder": folder,
                            "free": round(free / 2**30, 1),
                            "size": round(size / 2**30, 1),
                        }
                    )
    except HypervisorError as exc:
        problems.append(exc.message)
    return problems


def migrate_domain(user: User, domain: Domain, choice: MigrationChoice) -> Operation:
    """Check everything in plain words, then queue the migration."""
    _check_role(user, domain, OperationKind.MIGRATE, {})
    if choice.destination is None and not user.is_superuser:
        raise ActionRefused(_("Only superusers may migrate to a free URI."), status=403)
    if choice.destination is None and not choice.destination_uri:
        raise ActionRefused(_("Choose a destination."), status=400)
    dest_uri, p2p_uri = _dest_uris(choice)
    params = {
        "destination": choice.destination.name if choice.destination else "",
        "destination_uri": dest_uri,
        "p2p_uri": p2p_uri,
        "flags": sorted(choice.flags),
        "bandwidth_mib_s": choice.bandwidth_mib_s,
        "new_name": choice.new_name,
        "migrate_uri": choice.migrate_uri
        or (
            f"tcp://{choice.destination.migration_address}"
            if choice.destination and choice.destination.migration_address
            else ""
        ),
        "listen_address": choice.listen_address
        or (choice.destination.migration_address if choice.destination else ""),
        "source": domain.host.name,
    }

    def check() -> str | None:
        problems = migration_problems(domain, choice)
        return " ".join(problems) if problems else None

    return request_lifecycle(
        user,
        domain,
        OperationKind.MIGRATE,
        params,
        extra_check=check,
        target_host=choice.destination,
    )
