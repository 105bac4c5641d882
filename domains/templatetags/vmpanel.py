"""Small helpers for the panel's templates: badges, units, sort links."""

from __future__ import annotations

import math
from datetime import timedelta
from functools import cache

from django import template
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from domains.models import OperationStatus, Role, State

register = template.Library()

_STATE_CLASSES = {
    State.RUNNING: "running",
    State.PAUSED: "paused",
    State.PMSUSPENDED: "paused",
    State.SHUTOFF: "shutoff",
    State.CRASHED: "failed",
}

_STATUS_CLASSES = {
    OperationStatus.QUEUED: "queued",
    OperationStatus.RUNNING: "running-op",
    OperationStatus.CHECKING: "queued",
    OperationStatus.SUCCEEDED: "running",
    OperationStatus.FAILED: "failed",
    OperationStatus.CANCELLED: "shutoff",
    OperationStatus.REFUSED: "paused",
}


@cache
def _choice_labels(model: type, field_name: str) -> dict:
    return dict(model._meta.get_field(field_name).flatchoices)


@register.filter
def label(obj, field_name: str):
    """The label of a choice field's value (`{{ d|label:"state" }}`), as get_FOO_display
    gives it but without rebuilding the choices on every call: list pages call it per row."""
    value = getattr(obj, field_name)
    return _choice_labels(type(obj), field_name).get(value, value)


@register.filter
def state_class(domain) -> str:
    """CSS modifier of a domain's state badge; a gone domain is struck through."""
    if getattr(domain, "gone_at", None) is not None:
        return "gone"
    state = domain if isinstance(domain, int) else domain.state
    return _STATE_CLASSES.get(state, "other")


@register.filter
def status_class(status: str) -> str:
    """CSS modifier of an operation's status badge."""
    return _STATUS_CLASSES.get(status, "other")


@register.filter
def mib_from_bytes(count) -> str:
    """Bytes (libvirt's job statistics) to MiB with one decimal."""
    try:
        return f"{int(count) / 2**20:.1f}"
    except (TypeError, ValueError):
        return "0"


@register.filter
def mib(kib) -> int:
    """KiB (libvirt's unit) to whole MiB."""
    try:
        return int(kib) // 1024
    except (TypeError, ValueError):
        return 0


@register.filter
def elapsed(since) -> str:
    """Time since `since` in words, as timesince says it, but "less than a minute" where
    it would say "0 minutes"."""
    if since is None:
        return ""
    if timezone.now() - since < timedelta(minutes=1):
        return _("less than a minute")
    return timesince(since)


@register.filter
def minutes(delta) -> int:
    """A timedelta in whole minutes, rounded up (for "try again in N minutes")."""
    if not isinstance(delta, timedelta):
        return 0
    return max(1, math.ceil(delta.total_seconds() / 60))


@register.filter
def role_label(value: str) -> str:
    try:
        return Role(value).label
    except ValueError:
        return value or ""


@register.simple_tag(takes_context=True)
def sort_querystring(context, key: str) -> str:
    """The current query string with `sort` set to `key`, reversed if already sorted by it.

    The page number is dropped: a new order starts at page one.
    """
    request = context["request"]
    params = request.GET.copy()
    current = params.get("sort") or "name"
    params["sort"] = f"-{key}" if current == key else key
    params.pop("page", None)
    return "?" + params.urlencode()


@register.simple_tag(takes_context=True)
def sort_arrow(context, key: str) -> str:
    current = context["request"].GET.get("sort") or "name"
    if current == key:
        return "▲"
    if current == f"-{key}":
        return "▼"
    return ""


@register.filter
def yesno_word(value) -> str:
    return _("yes") if value else _("no")


@register.filter
def label_case(label) -> str:
    """A field's label with a capital first letter ("snapshots per VM" → "Snapshots per
    VM"), but a first word whose own case matters stays as written ("vCPUs", "vCPU 数"):
    Django's capfirst made them "VCPUs" and "VCPU 数"."""
    text = str(label)
    first = text.split(" ", 1)[0]
    return text if any(c.isupper() for c in first[1:]) else capfirst(text)


@register.filter
def said(message: str) -> str:
    """A stored message (an operation's) in the reader's language where it is one of the
    panel's own sentences just as it is ("Started."): it was written in the language of
    whoever asked, and another reader may read another. Anything else (names, libvirt's
    words, a sentence with numbers in it) stays as it was written."""
    return _(message) if message else message


@register.filter
def state_label(state) -> str:
    """The words for a libvirt state number (for live facts, which are plain numbers)."""
    try:
        return State(int(state)).label
    except (TypeError, ValueError):
        return _("unknown")


def _scaled(value, base: int, units: tuple[str, ...]) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    for unit in units[:-1]:
        if abs(number) < base:
            return f"{number:.0f} {unit}" if unit == units[0] else f"{number:.1f} {unit}"
        number /= base
    return f"{number:.1f} {units[-1]}"


@register.filter
def bytes_per_second(value) -> str:
    """1536 → "1.5 KiB/s" (disk rates)."""
    return _scaled(value, 1024, ("B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"))


@register.filter
def bits_per_second(value) -> str:
    """1500000 → "1.5 Mbit/s" (network rates, in 1000 steps as networks count)."""
    return _scaled(value, 1000, ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"))


@register.filter
def per_second(value) -> str:
    try:
        return f"{float(value):.1f}/s"
    except (TypeError, ValueError):
        return "—"


@register.filter
def kib_size(value) -> str:
    """KiB → "512 MiB" / "1.5 GiB"."""
    try:
        return _scaled(float(value) * 1024, 1024, ("B", "KiB", "MiB", "GiB", "TiB"))
    except (TypeError, ValueError):
        return "—"


@register.filter
def bytes_size(value) -> str:
    """Bytes → "512 MiB" / "20.0 GiB"."""
    try:
        return _scaled(float(value), 1024, ("B", "KiB", "MiB", "GiB", "TiB"))
    except (TypeError, ValueError):
        return "—"


@register.filter
def percent(value) -> str:
    try:
        return f"{float(value):.1f} %"
    except (TypeError, ValueError):
        return "—"


# Why a VM is in its state, in words for people: libvirt's reason (hypervisor.reason_text,
# stored on the inventory row) for each state. "unknown" and "booted" (the usual) say nothing.
_REASON_WORDS = {
    State.RUNNING: {
        "migrated": _lazy("moved here from another host"),
        "restored": _lazy("restored from a saved image"),
        "from snapshot": _lazy("back at a snapshot"),
        "unpaused": _lazy("resumed after a pause"),
        "migration cancelled": _lazy("a move to another host was cancelled"),
        "save cancelled": _lazy("saving to an image was cancelled"),
        "woken up": _lazy("woken up by its guest"),
        "crashed": _lazy("running again after a crash"),
        "post-copy": _lazy("still moving in (post-copy)"),
    },
    State.PAUSED: {
        "user": _lazy("paused by someone"),
        "migration": _lazy("paused while it moves to another host"),
        "save": _lazy("paused while it is saved to an image"),
        "dump": _lazy("paused while its memory is dumped"),
        "I/O error": _lazy("paused: a disk could not be read or written"),
        "watchdog": _lazy("paused by its watchdog"),
        "from snapshot": _lazy("paused at a snapshot"),
        "shutting down": _lazy("paused while shutting down"),
        "snapshot": _lazy("paused while a snapshot is taken"),
        "crashed": _lazy("paused after its guest crashed"),
        "starting up": _lazy("started paused"),
        "post-copy": _lazy("paused while moving in (post-copy)"),
        "post-copy failed": _lazy("paused: a move to another host failed half way"),
    },
    State.SHUTDOWN: {"user": _lazy("shutting down at someone's request")},
    State.SHUTOFF: {
        "shutdown": _lazy("shut down normally"),
        "destroyed": _lazy("forced off"),
        "crashed": _lazy("stopped after a crash"),
        "migrated": _lazy("moved to another host"),
        # Both a save to an image and a hibernation (managed save) leave this reason: the
        # badges beside it say which.
        "saved": _lazy("memory saved"),
        "failed": _lazy("failed to start"),
        "from snapshot": _lazy("back at a snapshot"),
        "daemon": _lazy("stopped by the host's libvirt"),
    },
    State.CRASHED: {"panicked": _lazy("the guest's kernel panicked")},
}


@register.filter
def reason_words(reason, state) -> str:
    """libvirt's reason for `state` in plain words; "" when it adds nothing."""
    try:
        words = _REASON_WORDS.get(State(int(state)), {}).get(reason)
    except (TypeError, ValueError):
        return ""
    return str(words) if words else ""
