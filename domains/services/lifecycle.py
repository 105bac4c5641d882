"""Turning domains on and off: the quick operations of the guide's lifecycle section.

Each function checks (role, host, state: see `common.queue_operation`), writes the
Operation row and queues its task on commit. The work happens in `domains.tasks`.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.utils.translation import gettext as _

from ..models import Domain, Operation, OperationKind
from .common import queue_operation, refuse, require

# The kinds whose whole check is the common one (role, host, state as their entry in
# `kinds.KINDS` says): no function of their own, `perform` queues them all.
PLAIN_KINDS = frozenset(
    {
        OperationKind.START,  # boot a shut-off persistent domain (from its managed save)
        OperationKind.SHUTDOWN,  # ask the guest OS to power off; it may take its time
        OperationKind.DESTROY,  # pull the plug: unsaved data in the guest is lost
        OperationKind.REBOOT,  # ask the guest OS to restart
        OperationKind.RESET,  # the reset button: at once, without asking the guest OS
        OperationKind.SUSPEND,  # pause the vCPUs; the memory stays allocated
        OperationKind.RESUME,  # let a paused guest run again
        OperationKind.AUTOSTART_ON,  # start with the host's libvirtd
        OperationKind.AUTOSTART_OFF,  # stay off when the host's libvirtd starts
        OperationKind.MANAGED_SAVE,  # hibernate: the next start resumes from the image
        OperationKind.MANAGED_SAVE_REMOVE,  # throw that image away: the next start boots
    }
)


def perform(user: User, domain: Domain, kind: str) -> Operation:
    """Queue one of the plain lifecycle kinds (`PLAIN_KINDS`) on `domain` after the common
    checks; what the worker then does is the kind's task in `domains.tasks`."""
    if kind not in PLAIN_KINDS:
        raise ValueError(f"{kind} is not a plain lifecycle kind")
    return queue_operation(user, domain, kind)


def undefine_domain(
    user: User,
    domain: Domain,
    remove_managed_save: bool = False,
    remove_snapshots_metadata: bool = False,
) -> Operation:
    """Remove a persistent domain's configuration (a running one becomes transient).

    libvirt refuses while a managed-save image or snapshots exist unless told to remove
    them too; the panel says which box to tick before asking it.
    """
    kind = OperationKind.UNDEFINE
    params = {
        "remove_managed_save": remove_managed_save,
        "remove_snapshots_metadata": remove_snapshots_metadata,
    }
    # The role first: the hints below are for those who may undefine.
    require(user, domain, kind, params)
    if domain.has_managed_save and not remove_managed_save:
        refuse(
            user, domain, kind, params,
            _("%(name)s is hibernated; choose to discard the hibernation as well.")
            % {"name": domain.name},
        )  # fmt: skip
    if domain.snapshot_count and not remove_snapshots_metadata:
        refuse(
            user, domain, kind, params,
            _("%(name)s has snapshots; choose to remove their metadata as well.")
            % {"name": domain.name},
        )  # fmt: skip
    return queue_operation(user, domain, kind, params)
