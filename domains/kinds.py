"""The operation kinds: one entry per kind, and every table about kinds derived from it.

Adding a kind means one entry here, one service function, one task and, if it has a form,
one template; the views, the buttons, the cancel rules and the worker's retry rules follow
from the entry. `docs/architecture.md` walks through an example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from django.utils.functional import Promise
from django.utils.module_loading import import_string
from django.utils.translation import gettext, gettext_noop
from django.utils.translation import gettext_lazy as _

from .models import Domain, OperationKind, State


def always_allowed(_domain: Domain) -> bool:
    return True


def _inactive(d: Domain) -> bool:
    return not d.is_active


def _running(d: Domain) -> bool:
    return d.state == State.RUNNING


def _running_or_paused(d: Domain) -> bool:
    return d.state in (State.RUNNING, State.PAUSED)


# Where a kind is offered.
PANEL = "panel"  # the domain's page: a button, a confirm link or a link to its form
IMAGE = "image"  # beside each saved image of the domain
SNAPSHOT = "snapshot"  # beside each snapshot, on the domain's snapshots page
TEMPLATE = "template"  # on a template's page (the domain does not exist yet)


@dataclass(frozen=True)
class KindSpec:
    """What the panel knows about one operation kind."""

    kind: str
    label: Promise  # the button's words, translated when shown
    role: str  # the ACTION_ROLES action the user needs on the domain ("operate", "admin")
    task: str  # the Celery task's registered name
    allowed: Callable[[Domain], bool] = always_allowed  # the domain's state allows it
    wrong_state: str = ""  # said when `allowed` is false; {name} and {state} filled in
    long: bool = False  # a libvirt job: progress, cancel (abortJob), never tried twice
    confirm: bool = False  # a confirmation page comes first
    form: str = ""  # URL name of the kind's own form page; "" for a plain button
    # Dotted path of the service a plain button calls; "" for `lifecycle.perform`, which
    # queues a kind that needs only the common checks.
    service: str = ""
    options: tuple[str, ...] = ()  # check boxes a plain button's form may post
    offered: str = PANEL
    allow_gone: bool = False  # restore brings back a saved transient domain

    @property
    def service_function(self) -> Callable:
        """The service a plain button calls: `service(user, domain, **options)`."""
        if self.service:
            return import_string(self.service)
        return partial(import_string(PERFORM), kind=self.kind)


def _entry(kind: OperationKind, label, role: str, task: str, **more) -> tuple[str, KindSpec]:
    return kind.value, KindSpec(kind.value, label, role, f"domains.tasks.{task}", **more)


_SVC = "domains.services"
PERFORM = f"{_SVC}.lifecycle.perform"

KINDS: dict[str, KindSpec] = dict(
    [
        _entry(
            OperationKind.START, _("Start"), "operate", "start_domain_task",
            allowed=lambda d: _inactive(d) and d.persistent,
            wrong_state=gettext_noop(
                "{name} is {state}; only a shut-off permanent VM can be started."
            ),
        ),
        _entry(
            OperationKind.SHUTDOWN, _("Shut down"), "operate", "shutdown_domain_task",
            allowed=_running,
            wrong_state=gettext_noop("{name} is {state}; only a running VM can be shut down."),
        ),
        _entry(
            OperationKind.DESTROY, _("Force off"), "operate", "destroy_domain_task",
            allowed=lambda d: d.is_active,
            wrong_state=gettext_noop(
                "{name} is {state}; only a VM that is on can be forced off."
            ),
            confirm=True,
        ),
        _entry(
            OperationKind.REBOOT, _("Reboot"), "operate", "reboot_domain_task",
            allowed=_running,
            wrong_state=gettext_noop("{name} is {state}; only a running VM can be rebooted."),
        ),
        _entry(
            OperationKind.RESET, _("Reset"), "operate", "reset_domain_task",
            allowed=_running,
            wrong_state=gettext_noop("{name} is {state}; only a running VM can be reset."),
            confirm=True,
        ),
        _entry(
            OperationKind.SUSPEND, _("Pause"), "operate", "suspend_domain_task",
            allowed=_running,
            wrong_state=gettext_noop("{name} is {state}; only a running VM can be paused."),
        ),
        _entry(
            OperationKind.RESUME, _("Resume"), "operate", "resume_domain_task",
            allowed=lambda d: d.state == State.PAUSED,
            wrong_state=gettext_noop("{name} is {state}; only a paused VM can be resumed."),
        ),
        _entry(
            OperationKind.AUTOSTART_ON, _("Start with its host"), "operate", "set_autostart_task",
            allowed=lambda d: d.persistent and not d.autostart,
            wrong_state=gettext_noop("{name} is temporary or starts with its host already."),
        ),
        _entry(
            OperationKind.AUTOSTART_OFF, _("Stop starting with its host"), "operate",
            "set_autostart_task",
            allowed=lambda d: d.persistent and d.autostart,
            wrong_state=gettext_noop("{name} does not start with its host."),
        ),
        _entry(
            OperationKind.UNDEFINE, _("Delete definition"), "admin", "undefine_domain_task",
            allowed=lambda d: d.persistent,
            wrong_state=gettext_noop("{name} is temporary: it has no definition to delete."),
            confirm=True,
            service=f"{_SVC}.lifecycle.undefine_domain",
            options=("remove_managed_save", "remove_snapshots_metadata"),
        ),
        _entry(
            OperationKind.SAVE, _("Save to image…"), "operate", "save_domain_task",
            allowed=_running_or_paused,
            wrong_state=gettext_noop(
                "{name} is {state}; only a running or paused VM can be saved."
            ),
            long=True,
            form="domain_save",
        ),
        _entry(
            OperationKind.RESTORE, _("Restore"), "operate", "restore_domain_task",
            allowed=_inactive,
            wrong_state=gettext_noop(
                "{name} is {state}; restore needs it shut off (or gone, if temporary)."
            ),
            long=True,
            offered=IMAGE,
            allow_gone=True,
        ),
        _entry(
            OperationKind.MANAGED_SAVE, _("Hibernate"), "operate", "managed_save_task",
            allowed=lambda d: d.persistent and _running_or_paused(d),
            wrong_state=gettext_noop(
                "{name} is {state}; only a running or paused permanent VM can hibernate."
            ),
            long=True,
        ),
        _entry(
            OperationKind.MANAGED_SAVE_REMOVE, _("Discard hibernation"), "operate",
            "managed_save_remove_task",
            allowed=lambda d: d.has_managed_save and not d.is_active,
            wrong_state=gettext_noop("{name} is not hibernated."),
        ),
        # The flags decide which states fit: migration_problems() says so in plain words.
        _entry(
            OperationKind.MIGRATE, _("Move to another host…"), "operate", "migrate_domain_task",
            long=True,
            form="domain_migrate",
        ),
        # Live or saved configuration: resize_problems() says what fits.
        _entry(
            OperationKind.RESIZE, _("Change vCPUs or memory…"), "operate", "resize_domain_task",
            form="domain_resize",
        ),
        _entry(
            OperationKind.SNAPSHOT_CREATE, _("Take snapshot…"), "operate",
            "snapshot_create_task",
            form="domain_snapshot_create",
        ),
        # Both throw something away: their confirmation pages say what.
        _entry(
            OperationKind.SNAPSHOT_REVERT, _("Revert"), "admin", "snapshot_revert_task",
            offered=SNAPSHOT,
        ),
        _entry(
            OperationKind.SNAPSHOT_DELETE, _("Delete"), "admin", "snapshot_delete_task",
            offered=SNAPSHOT,
        ),
        _entry(
            OperationKind.EDIT_XML, _("Edit XML…"), "admin", "edit_xml_task",
            allowed=lambda d: d.persistent,
            wrong_state=gettext_noop(
                "{name} is temporary: it has no saved configuration to edit."
            ),
            form="domain_xml_edit",
        ),
    ]
)  # fmt: skip

# A provisioning makes its domain: no domain to check, so it is offered on the template.
KINDS[OperationKind.PROVISION.value] = KindSpec(
    OperationKind.PROVISION.value,
    _("Create VM"),
    "admin",
    "provisioning.tasks.provision_domain_task",
    offered=TEMPLATE,
)

# A clone makes a new domain against the team's quota: provisioning's room.
KINDS[OperationKind.CLONE.value] = KindSpec(
    OperationKind.CLONE.value,
    _("Clone…"),
    "admin",
    "provisioning.tasks.clone_domain_task",
    allowed=_inactive,
    wrong_state=gettext_noop("{name} is {state}; only a shut-off VM can be cloned."),
    long=True,
    form="domain_clone",
)

# Derived tables: never write one of these by hand.
LONG_KINDS = frozenset(k for k, spec in KINDS.items() if spec.long)
BUTTON_KINDS = tuple(k for k, s in KINDS.items() if s.offered == PANEL and not s.form)
FORM_KINDS = tuple(k for k, s in KINDS.items() if s.form)
CONFIRM_KINDS = tuple(k for k, s in KINDS.items() if s.confirm)
TASK_NAMES = frozenset(spec.task for spec in KINDS.values())


def wrong_state_message(spec: KindSpec, domain: Domain) -> str:
    """The refusal for a domain whose state does not allow `spec`, in the user's language."""
    return gettext(spec.wrong_state).format(name=domain.name, state=domain.get_state_display())


def panel_actions(domain: Domain, actions: frozenset[str]) -> list[KindSpec]:
    """The kinds to offer on the domain's page to someone holding `actions` on it
    (see `permissions.actions_on`): the role and the state allow them."""
    if domain.gone_at is not None:
        return []
    return [
        spec
        for spec in KINDS.values()
        if spec.offered == PANEL and spec.role in actions and spec.allowed(domain)
    ]
