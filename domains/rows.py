"""The rows of the long tables (the domain list, the activity page), rendered once per
content and kept.

A list page is mostly its rows, and a row is a few dozen template nodes: under load, the
template engine, not the database, was what made the list and activity pages slow. A row
is rendered from a frozen copy of exactly the facts it shows (plus the language and the
time zone it was rendered in), and that copy is the cache key: a row whose facts changed
is a new key, so a cached row can never show stale facts. Finished operations never change,
so the activity page hits the cache almost always. Per process, at most ROWS_KEPT rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from .models import Domain, Operation, OperationKind, OperationStatus, State
from .sparkline import sparkline

ROWS_KEPT = 4096  # about 1 KiB each


@dataclass(frozen=True)
class DomainRow:
    """What one row of the domain list shows."""

    host: str
    host_error: str
    uuid: str
    name: str
    gone_at: datetime | None
    state: int
    state_reason: str
    libvirt_id: int | None
    vcpus: int
    memory_kib: int
    persistent: bool
    autostart: bool
    has_managed_save: bool
    snapshot_count: int
    team: str
    # Usage now (running domains): CPU %, memory used, the last hour's CPU a minute.
    cpu_pct: float | None = None
    memory_used_kib: int | None = None
    spark: tuple = ()
    # Images of its memory saved through the panel ("Saved to an image (2)").
    saved_images: int = 0

    # What the list view reads for each row (`QuerySet.values`): no model instances made.
    # `saved_image_count` is the list query's annotation (`with_saved_image_count`).
    VALUES = (
        "host__name", "host__last_error", "uuid", "name", "gone_at", "state", "state_reason",
        "libvirt_id", "vcpus", "memory_kib", "persistent", "autostart", "has_managed_save",
        "snapshot_count", "team__name", "usage__cpu_pct", "usage__memory_used_kib",
        "usage__spark", "saved_image_count",
    )  # fmt: skip

    @classmethod
    def of_values(cls, v: dict) -> DomainRow:
        return cls(
            host=v["host__name"], host_error=v["host__last_error"], uuid=str(v["uuid"]),
            name=v["name"], gone_at=v["gone_at"], state=v["state"],
            state_reason=v["state_reason"], libvirt_id=v["libvirt_id"], vcpus=v["vcpus"],
            memory_kib=v["memory_kib"], persistent=v["persistent"], autostart=v["autostart"],
            has_managed_save=v["has_managed_save"], snapshot_count=v["snapshot_count"],
            team=v["team__name"] or "",
            cpu_pct=v["usage__cpu_pct"], memory_used_kib=v["usage__memory_used_kib"],
            spark=tuple(v["usage__spark"] or ()), saved_images=v["saved_image_count"] or 0,
        )  # fmt: skip

    @classmethod
    def of(cls, d: Domain) -> DomainRow:
        return cls(
            host=d.host.name, host_error=d.host.last_error, uuid=str(d.uuid), name=d.name,
            gone_at=d.gone_at, state=d.state, state_reason=d.state_reason,
            libvirt_id=d.libvirt_id, vcpus=d.vcpus, memory_kib=d.memory_kib,
            persistent=d.persistent, autostart=d.autostart,
            has_managed_save=d.has_managed_save, snapshot_count=d.snapshot_count,
            team=d.team.name if d.team_id else "",
            saved_images=getattr(d, "saved_image_count", 0) or 0,
        )  # fmt: skip

    @property
    def state_label(self) -> str:
        return _label(State, self.state)

    @property
    def sparkline(self) -> SafeString:
        label = _("CPU in the last hour, a value a minute")
        return sparkline(self.spark, maximum=100, label=label)


@dataclass(frozen=True)
class OperationRow:
    """What one row of an operations table shows."""

    pk: int
    created_at: datetime
    username: str
    kind: str
    status: str
    message: str
    error: str
    show_target: bool
    # The target columns (activity page): the domain's page, if the domain is known.
    domain_host: str = ""
    domain_uuid: str = ""
    domain_name: str = ""
    host: str = ""
    team: str = ""

    VALUES = (
        "pk", "created_at", "user__username", "kind", "status", "message", "error",
        "domain__host__name", "domain__uuid", "domain__name", "domain_name", "host__name",
        "team__name",
    )  # fmt: skip

    @classmethod
    def of_values(cls, v: dict, show_target: bool) -> OperationRow:
        target = {}
        if show_target:
            target = {
                "domain_host": v["domain__host__name"] or "",
                "domain_uuid": str(v["domain__uuid"] or ""),
                "domain_name": v["domain_name"] or v["domain__name"] or "",
                "host": v["host__name"] or "",
                "team": v["team__name"] or "",
            }
        return cls(
            pk=v["pk"], created_at=v["created_at"], username=v["user__username"] or "",
            kind=v["kind"], status=v["status"], message=v["message"], error=v["error"],
            show_target=show_target, **target,
        )  # fmt: skip

    @classmethod
    def of(cls, op: Operation, show_target: bool) -> OperationRow:
        target = {}
        if show_target:
            domain = op.domain
            target = {
                "domain_host": domain.host.name if domain else "",
                "domain_uuid": str(domain.uuid) if domain else "",
                "domain_name": op.domain_name or (domain.name if domain else ""),
                "host": op.host.name if op.host_id else "",
                "team": op.team.name if op.team_id else "",
            }
        return cls(
            pk=op.pk, created_at=op.created_at,
            username=op.user.username if op.user_id else "", kind=op.kind,
            status=op.status, message=op.message, error=op.error,
            show_target=show_target, **target,
        )  # fmt: skip

    @property
    def kind_label(self) -> str:
        return _label(OperationKind, self.kind)

    @property
    def status_label(self) -> str:
        return _label(OperationStatus, self.status)


def _label(choices, value) -> str:
    try:
        return str(choices(value).label)
    except ValueError:
        return str(value)


@lru_cache(maxsize=ROWS_KEPT)
def _render(template_name: str, row, language: str, zone: str, extra: tuple) -> SafeString:
    # `language` and `zone` are in the key only: the words and the times are rendered in
    # the ones active now, which are these.
    context = {"r": row, **dict(extra)}
    return mark_safe(render_to_string(template_name, context))  # noqa: S308 (rendered)


def rendered(template_name: str, row, **extra) -> SafeString:
    """`row` through `template_name` (context: `r`, and `extra`: hashable values, part of
    the key), from the cache when rendered before."""
    return _render(
        template_name, row, get_language(), timezone.get_current_timezone_name(),
        tuple(sorted(extra.items())),
    )  # fmt: skip


# The buttons of a list row, in this order, where the role and the state allow them.
ROW_KINDS = ("start", "shutdown", "reboot")


def row_actions(row: DomainRow, actions: frozenset[str]) -> tuple[str, ...]:
    """The ROW_KINDS that someone holding `actions` (see `models.actions_on`) on the row's
    domain may use now, as its state allows."""
    from .kinds import KINDS  # kinds imports models, as rows does: no cycle at load time

    if row.gone_at is not None or not actions:
        return ()
    facts = Domain(
        state=row.state, libvirt_id=row.libvirt_id, persistent=row.persistent,
        autostart=row.autostart, has_managed_save=row.has_managed_save,
    )  # fmt: skip
    return tuple(k for k in ROW_KINDS if KINDS[k].role in actions and KINDS[k].allowed(facts))
