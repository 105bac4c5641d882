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
from dataclasses import asdict, dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from vmpanel.middleware import current_request_id

from . import domxml, hypervisor
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
    OperationKind.RESIZE: LifecycleSpec(
        "operate",
        lambda d: True,  # live or configuration: resize_problems() says what fits
        "",
        "domains.tasks.resize_domain_task",
    ),
    OperationKind.EDIT_XML: LifecycleSpec(
        "admin",
        lambda d: d.persistent,
        gettext_noop("{name} is transient: it has no saved configuration to edit."),
        "domains.tasks.edit_xml_task",
    ),
}

# Kinds whose libvirt job can be aborted while it runs.
CANCELLABLE = {
    OperationKind.SAVE,
    OperationKind.RESTORE,
    OperationKind.MANAGED_SAVE,
    OperationKind.MIGRATE,
}
# Kinds that need a form of their own; the others are offered as plain buttons.
FORM_KINDS = {
    OperationKind.SAVE,
    OperationKind.RESTORE,
    OperationKind.MIGRATE,
    OperationKind.RESIZE,
    OperationKind.EDIT_XML,
}
BUTTON_KINDS = [k for k in LIFECYCLE if k not in FORM_KINDS]


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
    fields: dict | None = None,
) -> Operation:
    """Check and queue one operation on `domain`; returns the queued Operation.

    `extra_check` runs after the common checks (role, host, state) and returns the reason
    to refuse in plain words, or None. `fields` are further Operation fields to set on the
    queued row (the XML an edit is to define, say).
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
                **(fields or {}),
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


# --- resize: vCPUs and memory --------------------------------------------------------

# Beyond what any libvirt driver takes; also keeps the numbers inside libvirt's C types.
MAX_VCPUS = 16384
MAX_MEMORY_MIB = 2**32


@dataclass(frozen=True)
class ResizeRequest:
    """What the resize form asks for. None leaves a value as it is; memory in MiB.

    `live` and `config` say where the counts change; the maximums only ever change in the
    saved configuration (libvirt cannot change them on a running domain).
    """

    vcpus: int | None = None
    vcpus_max: int | None = None
    memory_mib: int | None = None
    memory_max_mib: int | None = None
    live: bool = False
    config: bool = False


@dataclass(frozen=True)
class ResizeStep:
    """One libvirt call of a resize: `what` is vcpus, vcpus_max, memory or memory_max."""

    what: str
    value: int  # a number of vCPUs, or KiB
    live: bool = False
    config: bool = False


def _mib(kib: int | None) -> int | None:
    return None if kib is None else kib // 1024


def _resize_rows(lim: hypervisor.ResizeLimits, req: ResizeRequest) -> list[tuple]:
    """(what, unit in KiB, wanted, wanted maximum, live now, live maximum, config now,
    config maximum) for vCPUs and for memory, the memory in MiB."""
    return [
        (
            "vcpus", 1, req.vcpus, req.vcpus_max, lim.vcpus_live, lim.vcpus_max_live,
            lim.vcpus_config, lim.vcpus_max_config,
        ),
        (
            "memory", 1024, req.memory_mib, req.memory_max_mib, _mib(lim.memory_live_kib),
            _mib(lim.memory_max_live_kib), _mib(lim.memory_config_kib),
            _mib(lim.memory_max_config_kib),
        ),
    ]  # fmt: skip


def resize_plan(lim: hypervisor.ResizeLimits, req: ResizeRequest) -> list[ResizeStep]:
    """The libvirt calls that take the domain from `lim` to `req`; [] if nothing changes.

    Maximums first, so that a count may rise to a new maximum; but where a maximum comes
    down below the configuration's count, that count comes down first. Either way every
    count stays within its maximum at each step.
    """
    steps: list[ResizeStep] = []
    for what, unit, value, top, now_live, _max_live, now_config, now_top in _resize_rows(lim, req):
        live = req.live and value is not None and now_live is not None and value != now_live
        config = req.config and value is not None and now_config is not None and value != now_config
        count = [ResizeStep(what, value * unit, live, config)] if live or config else []
        if top is not None and now_top is not None and top != now_top:
            maximum = [ResizeStep(f"{what}_max", top * unit, config=True)]
            steps += count + maximum if top < (now_config or 0) else maximum + count
        else:
            steps += count
    return steps


def resize_problems(domain: Domain, lim: hypervisor.ResizeLimits, req: ResizeRequest) -> list[str]:
    """Everything that would make this resize fail, in plain words, before libvirt is asked."""
    name = domain.name
    problems: list[str] = []
    labels = {
        "vcpus": _("vCPUs"),
        "vcpus_max": _("Maximum vCPUs"),
        "memory_mib": _("Memory"),
        "memory_max_mib": _("Maximum memory"),
    }
    for field, label in labels.items():
        value = getattr(req, field)
        ceiling = MAX_MEMORY_MIB if field.startswith("memory") else MAX_VCPUS
        if value is not None and value < 1:
            problems.append(_("%(what)s must be at least 1.") % {"what": label})
        elif value is not None and value > ceiling:
            problems.append(
                _("%(what)s: %(value)s is more than libvirt takes (%(max)s).")
                % {"what": label, "value": value, "max": ceiling}
            )
    if req.live and not lim.active:
        problems.append(
            _(
                "%(name)s is shut off: a live change needs it running. Choose the saved "
                "configuration only."
            )
            % {"name": name}
        )
    if not lim.persistent:
        if req.config:
            problems.append(
                _(
                    "%(name)s is transient: it has no saved configuration to change. "
                    "Choose live only."
                )
                % {"name": name}
            )
        if (req.vcpus_max is not None and req.vcpus_max != lim.vcpus_max_live) or (
            req.memory_max_mib is not None and req.memory_max_mib != _mib(lim.memory_max_live_kib)
        ):
            problems.append(
                _(
                    "The maximums change only in a saved configuration, and %(name)s is "
                    "transient: it has none."
                )
                % {"name": name}
            )
    if problems:
        return problems

    if not req.live and not req.config:
        # The form shows the live values of a running domain, the configuration's else.
        shown = [
            (value, now_live if lim.active else now_config)
            for _w, _u, value, _t, now_live, _ml, now_config, _mc in _resize_rows(lim, req)
        ]
        if any(value is not None and value != now for value, now in shown):
            problems.append(
                _(
                    "Choose where the change goes: the running domain, the saved "
                    "configuration, or both."
                )
            )
    for what, _unit, value, top, _now_live, max_live, now_config, now_top in _resize_rows(lim, req):
        mib = what == "memory"
        new_top = top if top is not None else now_top
        if req.live and value is not None and max_live is not None and value > max_live:
            problems.append(
                (
                    _(
                        "%(value)s MiB is more than the running domain's maximum memory of "
                        "%(max)s MiB. A new maximum takes effect only at the next boot."
                    )
                    if mib
                    else _(
                        "%(value)s vCPUs is more than the running domain's maximum of "
                        "%(max)s. A new maximum takes effect only at the next boot."
                    )
                )
                % {"value": value, "max": max_live}
            )
        if not lim.persistent or new_top is None:
            continue
        changed_here = req.config and value is not None
        count = value if changed_here else now_config
        if count is not None and count > new_top:
            if changed_here:
                message = (
                    _(
                        "%(value)s MiB is more than the maximum memory of %(max)s MiB in the "
                        "saved configuration; raise the maximum as well."
                    )
                    if mib
                    else _(
                        "%(value)s vCPUs is more than the maximum of %(max)s in the saved "
                        "configuration; raise the maximum as well."
                    )
                )
            else:
                message = (
                    _(
                        "The new maximum memory of %(max)s MiB is below the %(value)s MiB of "
                        "the saved configuration; lower that as well."
                    )
                    if mib
                    else _(
                        "The new maximum of %(max)s vCPUs is below the %(value)s vCPUs of the "
                        "saved configuration; lower those as well."
                    )
                )
            problems.append(message % {"value": count, "max": new_top})
    if not problems and not resize_plan(lim, req):
        problems.append(_("Nothing to change: these are the current values."))
    return problems


def resize_domain(
    user: User,
    domain: Domain,
    *,
    vcpus: int | None = None,
    vcpus_max: int | None = None,
    memory_mib: int | None = None,
    memory_max_mib: int | None = None,
    live: bool = False,
    config: bool = False,
) -> Operation:
    """Change the vCPUs and memory, live and/or in the saved configuration, and their
    maximums (saved configuration only); every limit checked in plain words first."""
    req = ResizeRequest(vcpus, vcpus_max, memory_mib, memory_max_mib, bool(live), bool(config))

    def check() -> str | None:
        try:
            lim = hypervisor.resize_limits(domain.host.uri, str(domain.uuid))
        except HypervisorError as exc:
            return exc.message
        problems = resize_problems(domain, lim, req)
        return " ".join(problems) if problems else None

    return request_lifecycle(user, domain, OperationKind.RESIZE, asdict(req), extra_check=check)


# --- raw XML, for team admins ----------------------------------------------------------

MAX_XML_CHARS = 1_000_000


@dataclass(frozen=True)
class XmlPreview:
    """What saving `xml` would change: the unified diff, or why it would be refused."""

    xml: str
    diff: str
    problem: str


def current_domain_xml(domain: Domain) -> str:
    """The saved configuration as the editor shows it, secrets included so that saving
    keeps them (the editor is for team admins, who see them on the detail page too)."""
    return hypervisor.xml_of(domain.host.uri, str(domain.uuid), inactive=True, secure=True)


def _xml_check(domain: Domain, current: str, new_xml: str) -> tuple[str, str]:
    """(diff, problem) of replacing `current` by `new_xml`; problem "" when it may go."""
    if len(new_xml) > MAX_XML_CHARS:
        return "", _("The XML is longer than %(n)s characters.") % {"n": MAX_XML_CHARS}
    try:
        new = domxml.edited_domain_identity(new_xml)
    except domxml.XMLError as exc:
        return "", str(exc)
    now = domxml.identity(current)
    try:
        same_uuid = uuidlib.UUID(new.uuid) == uuidlib.UUID(now.uuid)
    except ValueError:
        same_uuid = False
    if not same_uuid:
        return "", _(
            "The UUID must stay %(uuid)s: this page edits this domain, and another UUID "
            "would define another domain."
        ) % {"uuid": now.uuid}
    if new.name != now.name:
        return "", _("The name must stay %(name)s: renaming is not done by editing the XML.") % {
            "name": now.name
        }
    diff = domxml.xml_diff(current, new_xml)
    if not diff:
        return "", _("The XML is the same as the saved configuration: nothing to change.")
    return diff, ""


def preview_domain_xml(user: User, domain: Domain, new_xml: str) -> XmlPreview:
    """The diff saving `new_xml` would make, or why it would be refused; changes nothing
    and records nothing."""
    if not Domain.objects.for_user(user, "view").filter(pk=domain.pk).exists():
        raise ActionRefused(_("No such domain."), status=404)
    if not Domain.objects.for_user(user, "admin").filter(pk=domain.pk).exists():
        raise ActionRefused(_("Your role in this domain's team does not allow this."), status=403)
    if not domain.persistent:
        return XmlPreview(new_xml, "", _(LIFECYCLE[OperationKind.EDIT_XML].wrong_state).format(
            name=domain.name, state=domain.get_state_display()
        ))  # fmt: skip
    try:
        current = current_domain_xml(domain)
    except HypervisorError as exc:
        return XmlPreview(new_xml, "", exc.message)
    diff, problem = _xml_check(domain, current, new_xml)
    return XmlPreview(new_xml, diff, problem)


def edit_domain_xml(user: User, domain: Domain, new_xml: str) -> Operation:
    """Redefine a persistent domain from XML typed by a team admin.

    Checked here: well-formed (the hardened parser's message otherwise), no DOCTYPE or
    entities, the same UUID and name, something changed. libvirt validates it against its
    schema in the task; a refusal there leaves the configuration as it was.
    """
    params: dict = {"diff": ""}

    def check() -> str | None:
        try:
            current = current_domain_xml(domain)
        except HypervisorError as exc:
            return exc.message
        _diff, problem = _xml_check(domain, current, new_xml)
        if problem:
            return problem
        # The record is read by the whole team: no passwords in it.
        params["diff"] = domxml.xml_diff(
            domxml.redact_secrets(current), domxml.redact_secrets(new_xml)
        )
        return None

    return request_lifecycle(
        user,
        domain,
        OperationKind.EDIT_XML,
        params,
        extra_check=check,
        # The task reads the XML to define from here, and puts the read-back in its place.
        fields={"xml_after": new_xml},
    )
