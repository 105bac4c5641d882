"""What applies to an operation already queued or running: cancelling it."""

from __future__ import annotations

import logging

from django.contrib.auth.models import User
from django.utils import timezone
from django.utils.translation import gettext as _

from ..kinds import KINDS
from ..models import Operation, OperationStatus, actions_on
from .common import ActionRefused

log = logging.getLogger(__name__)


def cancel_operation(user: User, op: Operation) -> Operation:
    """Ask the worker running `op` to abort its libvirt job; a queued one just stops.

    Operators of the domain's team may cancel. A queued operation of any kind stops at
    once; a running one only where libvirt aborts it (save, restore, migration).
    """
    actions = actions_on(user, op.domain) if op.domain is not None else frozenset()
    if "view" not in actions:
        raise ActionRefused(_("No such operation."), status=404)
    if "operate" not in actions:
        raise ActionRefused(_("Your role does not allow cancelling this."), status=403)
    if (why := _not_cancellable(op)) is not None:
        raise ActionRefused(why)
    # A queued operation is cancelled here; the worker's claim then finds nothing to do.
    stopped = Operation.objects.filter(pk=op.pk, status=OperationStatus.QUEUED).update(
        status=OperationStatus.CANCELLED,
        cancel_requested=True,
        message=_("Cancelled by %(user)s before it started.") % {"user": user},
        finished_at=timezone.now(),
    )
    # Running: the worker's monitor sees the flag and calls abortJob. Only while it runs
    # and only where libvirt aborts it: since `op` was read, another cancel may have
    # stopped it, or it finished, or a worker took a quick one; then it is said so, where
    # both people were told "cancel requested" of an operation that had ended.
    if not stopped and not (
        KINDS[op.kind].long
        and Operation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(
            cancel_requested=True
        )
    ):
        op.refresh_from_db()
        raise ActionRefused(
            _not_cancellable(op) or _("Operation #%(id)s has finished already.") % {"id": op.pk}
        )
    op.refresh_from_db()
    log.info("operation %s cancel requested by %s", op.pk, user)
    return op


def _not_cancellable(op: Operation) -> str | None:
    """Why `op`, as read, cannot be cancelled; None if it can."""
    if op.is_finished:
        return _("Operation #%(id)s has finished already.") % {"id": op.pk}
    if op.status == OperationStatus.CHECKING:
        return _(
            "Operation #%(id)s has ended; the panel is finding out where the VM runs. "
            "There is nothing left to cancel."
        ) % {"id": op.pk}
    if op.status != OperationStatus.QUEUED and not KINDS[op.kind].long:
        # Queued, nothing ran yet: any kind stops. Running, only libvirt's long jobs abort.
        return _("A %(kind)s that has started cannot be cancelled.") % {
            "kind": op.get_kind_display()
        }
    return None
