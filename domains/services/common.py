"""What every service shares: the refusal, the permission gate, the audit row and the
queueing of an operation once its transaction commits."""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Callable

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from vmpanel.celery import app
from vmpanel.middleware import current_request_id, current_request_started

from .. import hypervisor
from ..hypervisor import HypervisorError
from ..kinds import KINDS, wrong_state_message
from ..models import (
    ACTIVE_STATUSES,
    AuditEvent,
    Domain,
    Host,
    Operation,
    OperationStatus,
    Team,
    actions_on,
    is_team_admin,
)

log = logging.getLogger(__name__)


class ActionRefused(Exception):
    """The action was turned down before any work; `message` says why in plain words.

    `status` says how a page answers it: 404 for what the user may not even see, 403 for
    a role too small, 409 for a state or a limit that does not allow it now, 400 for input
    that is not usable.
    """

    def __init__(self, message: str, operation: Operation | None = None, status: int = 409):
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.status = status


def audit(kind: str, user: User, summary: str, team: Team | None = None, **detail) -> AuditEvent:
    """Put on record what is not an operation on a domain (hosts, roles, requests)."""
    log.info("audit %s user=%s %s", kind, user, summary)
    limit = AuditEvent._meta.get_field("summary").max_length
    if len(summary) > limit:  # the detail keeps everything; the one-line summary is cut
        summary = summary[: limit - 1] + "…"
    return AuditEvent.objects.create(
        kind=kind, user=user, team=team, summary=summary, detail=detail
    )


def record_refusal(
    user: User,
    kind: str,
    message: str,
    *,
    domain: Domain | None = None,
    host: Host | None = None,
    team: Team | None = None,
    name: str = "",
    params: dict | None = None,
) -> Operation:
    """An Operation row saying that `kind` was refused and why, so refusals are on record
    like everything else. For an operation on a domain, `domain` fills in the rest."""
    if domain is not None:
        host, team, name = domain.host, domain.team, domain.name
    op = Operation.objects.create(
        kind=kind,
        user=user,
        domain=domain,
        host=host,
        domain_uuid=domain.uuid if domain is not None else None,
        domain_name=name,
        team=team,
        params=params or {},
        status=OperationStatus.REFUSED,
        message=message,
        request_id=current_request_id.get(),
        finished_at=timezone.now(),
    )
    log.info(
        "operation %s %s refused user=%s host=%s domain=%s: %s",
        op.pk, kind, user, host, op.domain_uuid, message,
    )  # fmt: skip
    return op


def refuse(
    user: User, domain: Domain, kind: str, params: dict | None, message: str, status: int = 409
):
    """Record the refusal of `kind` on `domain`, then raise it."""
    op = record_refusal(user, kind, message, domain=domain, params=params)
    raise ActionRefused(message, op, status)


def require(
    user: User, domain: Domain, kind: str, params: dict | None = None, *, record: bool = True
) -> frozenset[str]:
    """Refuse unless `user` holds the role `kind` needs on `domain`; returns the actions
    the user holds there.

    A domain the user cannot see is a 404 and leaves no record, so that its existence does
    not leak through the audit trail either. A role too small is a 403, on record unless
    `record` is false (a GET of a form is not an attempt).
    """
    actions = actions_on(user, domain)
    if "view" not in actions:
        raise ActionRefused(_("No such VM."), status=404)
    if KINDS[kind].role not in actions:
        message = _("Your role in this VM's team does not allow this.")
        if record:
            refuse(user, domain, kind, params, message, status=403)
        raise ActionRefused(message, status=403)
    return actions


def require_superuser(user: User) -> None:
    if not user.is_superuser:
        raise ActionRefused(_("Only superusers may do this."), status=403)


def require_team_admin(user: User, team: Team, message: str = "") -> None:
    if not is_team_admin(user, team):
        raise ActionRefused(message or _("Only this team's admins may do this."), status=403)


def queue_operation(
    user: User,
    domain: Domain,
    kind: str,
    params: dict | None = None,
    *,
    check: Callable[[], str | None] | None = None,
    locked_check: Callable[[Domain], str | None] | None = None,
    target_host: Host | None = None,
    fields: dict | None = None,
    payload: dict | None = None,
) -> Operation:
    """Check and queue one operation of `kind` on `domain`; returns the queued Operation.

    The checks, each refusal on record: the role, the domain still there, its host
    enabled and answering, the state (the kind's entry in `kinds.KINDS`), then `check`,
    which returns the reason to refuse in plain words or None, and last that no other
    operation holds the domain. `locked_check(row)` is asked last, inside the transaction
    that writes the operation, with the domain's row locked: for what must not change
    between the check and the write (a limit shared with other VMs, a name on the host),
    read from the database only and under a lock of its own (`hold`, a team row).
    `fields` are further Operation fields for the queued row; `payload` goes to the task
    only (see `send_on_commit`).
    """
    spec = KINDS[kind]
    params = params or {}
    # What the person was shown is no older than their request (None outside one).
    looked_at = current_request_started.get()
    require(user, domain, kind, params)
    if domain.gone_at is not None and not spec.allow_gone:
        refuse(user, domain, kind, params, _("This VM no longer exists."))
    if not domain.host.enabled:
        refuse(
            user, domain, kind, params,
            _("Host %(host)s is disabled; enable it first.") % {"host": domain.host},
        )  # fmt: skip
    try:
        hypervisor.ping(domain.host.uri)
    except HypervisorError as exc:
        refuse(
            user, domain, kind, params,
            _("Host %(host)s does not answer (%(error)s); try again when it is back.")
            % {"host": domain.host, "error": exc.message},
        )  # fmt: skip
    if not spec.allowed(domain):
        refuse(user, domain, kind, params, wrong_state_message(spec, domain))
    problem = check() if check else None
    if problem:
        refuse(user, domain, kind, params, problem)

    with transaction.atomic():
        # Lock the inventory row so that two requests cannot both find the domain idle.
        locked = Domain.objects.select_for_update().get(pk=domain.pk)
        # Everything above was checked on `domain` as this request read it, before asking
        # its host: another request may have changed the VM since (a double click whose
        # first operation ran and finished meanwhile, a second person). So the locked row
        # is checked again, and where the two requests overlapped the second is refused.
        problem = _locked_problem(user, locked, kind, looked_at)
        if problem is None and locked_check is not None:
            problem = locked_check(locked)
        if problem is None:
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
            send_on_commit(op, payload)
            return op
    # Outside the transaction, so that the refusal stays on record.
    if problem is _NO_ROLE:
        # Out of the team, or the VM given to another team, since the request began: said
        # as at the start (404, or 403 on record).
        require(user, locked, kind, params)
        problem = _("Your role in this VM's team does not allow this.")
    refuse(user, locked, kind, params, problem)
    raise AssertionError("unreachable")


# `_locked_problem`'s answer when the user no longer holds the kind's role on the domain.
_NO_ROLE = "no role"


def _locked_problem(user: User, locked: Domain, kind: str, looked_at) -> str | None:
    """Why `kind` may not be queued on the locked row `locked` now, or None: the role, an
    operation that holds the domain (or held it since `looked_at`: the request's checks
    were made on the VM as it was before), the domain gone, its state."""
    spec = KINDS[kind]
    if spec.role not in actions_on(user, locked):
        return _NO_ROLE
    ops = Operation.objects.filter(domain=locked).exclude(status=OperationStatus.REFUSED)
    busy = ops.filter(status__in=ACTIVE_STATUSES).order_by("created_at").first()
    if busy is not None:
        return _("%(name)s is busy with operation #%(id)s (%(kind)s).") % {
            "name": locked.name, "id": busy.pk, "kind": busy.get_kind_display()
        }  # fmt: skip
    if looked_at is not None:
        # Times from two processes (each web process stamps its own operations; the worker
        # the end): the machines' clocks must agree, as for every time the panel shows.
        meanwhile = (
            ops.filter(Q(created_at__gte=looked_at) | Q(finished_at__gte=looked_at))
            .order_by("created_at")
            .first()
        )
        if meanwhile is not None:
            return _(
                "%(name)s was busy with operation #%(id)s (%(kind)s) while you asked; see "
                "what it did before asking again."
            ) % {"name": locked.name, "id": meanwhile.pk, "kind": meanwhile.get_kind_display()}
    if locked.gone_at is not None and not spec.allow_gone:
        return _("This VM no longer exists.")
    if not spec.allowed(locked):
        return wrong_state_message(spec, locked)
    return None


# The class of the advisory locks `hold` takes (PostgreSQL keeps the two-number form apart
# from the one-number form kept_pages uses).
_HOLD_CLASS = 0x766D70  # "vmp"


def hold(key: str) -> None:
    """Serialise, until the current transaction ends, with every other transaction that
    holds the same `key`: for a check and a write that no one row stands for (a VM name on
    a host, an image path), so that two requests at once cannot both find it free.

    PostgreSQL: a transaction-level advisory lock on the key's hash. SQLite: nothing to do,
    its transactions begin IMMEDIATE (settings.py), so writers take turns already.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("hold() outside a transaction holds nothing")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_HOLD_CLASS, key])


def send_on_commit(op: Operation, payload: dict | None = None) -> None:
    """Hand `op` to its kind's Celery task once the current transaction commits.

    `payload` goes to the task with the message and is never stored in the database: it is
    for what must not be on record (the XML an edit defines, with its passwords).
    """
    transaction.on_commit(lambda: send_now(op, payload or {}))
    log.info(
        "operation %s %s queued user=%s host=%s domain=%s",
        op.pk, op.kind, op.user, op.host, op.domain_uuid,
    )  # fmt: skip


def task_queue(op: Operation) -> str | None:
    """The Celery queue `op` goes to: its host's (`Host.celery_queue`) for a slow
    operation, so that only workers near the host run it; else None, the default queue
    that every worker reads."""
    host = op.host
    if host is not None and host.celery_queue and KINDS[op.kind].long:
        return host.celery_queue
    return None


# After a send the task queue did not answer, this process's sends of the next few seconds
# fail at once, in the same words: each waits out the broker's timeouts (settings.py) when
# Redis hangs, and a bulk action on many VMs held its page for minutes.
QUEUE_QUIET_SECONDS = 5.0
_queue_quiet_until: dict[str, float] = {}  # broker URL → time.monotonic()


def send_now(op: Operation, payload: dict | None = None) -> None:
    """Hand `op` to its kind's task now; if the task queue does not answer, the operation
    fails on record (nothing ran) rather than staying queued for nobody."""
    broker = app.conf.broker_url
    try:
        if time.monotonic() < _queue_quiet_until.get(broker, 0.0):
            raise ConnectionError("the task queue did not answer a moment ago")
        app.send_task(
            KINDS[op.kind].task,
            args=[op.pk],
            kwargs=payload or {},
            task_id=op.task_id,
            queue=task_queue(op),
        )
    except Exception as exc:  # broker down: kombu raises several kinds
        _queue_quiet_until[broker] = time.monotonic() + QUEUE_QUIET_SECONDS
        # Never leave a queued operation that no worker will ever see: the domain would
        # stay "busy" for good.
        # Its words are the broker's, not libvirt's: in the log, not as the libvirt error.
        log.error("operation %s not queued: %s", op.pk, exc)
        Operation.objects.filter(pk=op.pk, status=OperationStatus.QUEUED).update(
            status=OperationStatus.FAILED,
            message=_("The task queue does not answer; nothing was done. Try again later."),
            finished_at=timezone.now(),
        )
