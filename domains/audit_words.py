"""Audit events in words: one translated sentence per kind, from what the event recorded
(its detail), e.g. "paula raised Research's memory quota from 16384 to 32768 MiB". Rows
written before a kind recorded enough say their one-line summary instead."""

from __future__ import annotations

from collections.abc import Callable

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.utils.translation import gettext_noop as _noop

from .models import Role

QUOTA_WORDS = {
    "max_domains": (_noop("VM"), ""),
    "max_vcpus": (_noop("vCPU"), ""),
    "max_memory_mib": (_noop("memory"), " MiB"),
    "max_disk_gib": (_noop("disk"), " GiB"),
    "max_snapshots_per_domain": (_noop("snapshots per VM"), ""),
}
SIGN_INS = ("login", "logout", "login_failed")


def _quota(who: str, team: str, d: dict) -> str:
    before, after = d.get("before") or {}, d["after"]
    parts = []
    for key, value in after.items():
        what, unit = QUOTA_WORDS.get(key, (key, ""))
        what = _(what)  # in the reader's language
        old = before.get(key)
        if old is None:
            parts.append(_("%(what)s limit set to %(new)s%(unit)s") % {
                "what": what, "new": value, "unit": unit})  # fmt: skip
        elif value > old:
            parts.append(_("%(what)s limit raised from %(old)s to %(new)s%(unit)s") % {
                "what": what, "old": old, "new": value, "unit": unit})  # fmt: skip
        elif value < old:
            parts.append(_("%(what)s limit lowered from %(old)s to %(new)s%(unit)s") % {
                "what": what, "old": old, "new": value, "unit": unit})  # fmt: skip
    if not parts:
        return _("%(who)s saved %(team)s's quota unchanged.") % {"who": who, "team": team}
    return _("%(who)s changed %(team)s's quota: %(changes)s.") % {
        "who": who, "team": team, "changes": "; ".join(parts)}  # fmt: skip


# A template's fields in a sentence: the words and the unit of each; others say their name.
TEMPLATE_WORDS = {
    "vcpus_current": (_noop("vCPUs"), ""),
    "vcpus_max": (_noop("maximum vCPUs"), ""),
    "memory_mib": (_noop("memory"), " MiB"),
    "current_memory_mib": (_noop("memory in use at start"), " MiB"),
    "hotplug_memory_mib": (_noop("maximum memory"), " MiB"),
    "disk_gib": (_noop("disk size"), " GiB"),
    "method": (_noop("install method"), ""),
    "domain_type": (_noop("kind of virtualisation"), ""),
    "cpuset": (_noop("host CPUs"), ""),
    "iso_path": (_noop("ISO image"), ""),
    "base_image": (_noop("disk image"), ""),
    "cmdline": (_noop("kernel options"), ""),
    "net_type": (_noop("network connection"), ""),
    "net_source": (_noop("network"), ""),
    "vnc": (_noop("screen"), ""),
    "balloon_period": (_noop("memory statistics period"), " s"),
    "boot_menu_timeout_ms": (_noop("boot menu wait"), " ms"),
    "bios_reboot_timeout_ms": (_noop("boot retry"), " ms"),
    "min_vcpus": (_noop("fewest vCPUs a request may ask"), ""),
    "max_vcpus": (_noop("most vCPUs a request may ask"), ""),
    "min_memory_mib": (_noop("least memory a request may ask"), " MiB"),
    "max_memory_mib": (_noop("most memory a request may ask"), " MiB"),
}


def _template_value(value, unit: str) -> str:
    if isinstance(value, bool):
        return _("on") if value else _("off")
    if value in (None, "", []):
        return _("none")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    text = str(value)
    return (text[:60] + "…" if len(text) > 60 else text) + unit


def _template_changed(who: str, team: str, d: dict) -> str:
    before, after = d.get("before") or {}, d["after"]
    parts = []
    words = {key: TEMPLATE_WORDS.get(key, (key.replace("_", " "), "")) for key in after}
    for key in sorted(after, key=lambda k: _(words[k][0])):  # in the reader's order
        what, unit = words[key]
        parts.append(
            _("%(what)s %(old)s → %(new)s")
            % {
                "what": _(what),
                "old": _template_value(before.get(key), unit),
                "new": _template_value(after[key], unit),
            }  # fmt: skip
        )
    if not parts:
        return _("%(who)s saved template %(name)s unchanged.") % {"who": who, "name": d["name"]}
    return _("%(who)s changed template %(name)s: %(changes)s.") % {
        "who": who, "name": d["name"], "changes": "; ".join(parts)}  # fmt: skip


SENTENCES: dict[str, Callable[[str, str, dict], str]] = {
    "login": lambda who, team, d: _("%(who)s signed in.") % {"who": who},
    "logout": lambda who, team, d: _("%(who)s signed out.") % {"who": who},
    "login_failed": lambda who, team, d: (
        _("Someone failed to sign in as “%(name)s”.") % {"name": d["username"]}
    ),
    "quota_changed": _quota,
    "role_changed": lambda who, team, d: (
        _("%(who)s made %(member)s %(role)s in %(team)s.")
        % {"who": who, "member": d["member"], "role": Role(d["after"]).label, "team": team}
    ),
    "member_removed": lambda who, team, d: (
        _("%(who)s removed %(member)s from %(team)s.")
        % {"who": who, "member": d["member"], "team": team}
    ),
    "domain_assigned": lambda who, team, d: (
        _("%(who)s gave %(name)s to %(team)s.")
        % {"who": who, "name": d["name"], "team": team or _("no team")}
    ),
    "host_added": lambda who, team, d: (
        _("%(who)s added host %(host)s.") % {"who": who, "host": d["host"]}
    ),
    "host_changed": lambda who, team, d: (
        _("%(who)s changed host %(host)s.") % {"who": who, "host": d["host"]}
    ),
    "host_enabled": lambda who, team, d: (
        _("%(who)s enabled host %(host)s.") % {"who": who, "host": d["host"]}
    ),
    "host_disabled": lambda who, team, d: (
        _("%(who)s disabled host %(host)s.") % {"who": who, "host": d["host"]}
    ),
    "image_forgotten": lambda who, team, d: (
        _("%(who)s forgot a saved image on %(host)s.") % {"who": who, "host": d["host"]}
    ),
    "image_adopted": lambda who, team, d: (
        _(
            "The panel found the image %(path)s that operation #%(op)s left complete on "
            "%(host)s, and kept it."
        )
        % {"path": d["path"], "op": d["operation"], "host": d["host"]}
    ),
    "request_submitted": lambda who, team, d: (
        _("%(who)s asked for %(name)s (%(vcpus)s vCPUs, %(mib)s MiB) in %(team)s.")
        % {"who": who, "name": d["name"], "vcpus": d["vcpus"], "mib": d["memory_mib"], "team": team}
    ),
    # The refusal's own words are the summary, in the language of whom it refused.
    "request_refused": lambda who, team, d: (
        _("%(who)s's request for %(name)s was refused: %(why)s")
        % {"who": who, "name": d["name"], "why": d["why"]}
    ),
    "request_approved": lambda who, team, d: (
        _("%(who)s approved %(name)s on %(host)s.")
        % {"who": who, "name": d["name"], "host": d["host"]}
    ),
    "request_rejected": lambda who, team, d: (
        _("%(who)s rejected %(name)s: %(reason)s")
        % {"who": who, "name": d["name"], "reason": d["reason"]}
    ),
    "template_added": lambda who, team, d: (
        _("%(who)s added template %(name)s.") % {"who": who, "name": d["name"]}
    ),
    "template_changed": _template_changed,
    "template_deleted": lambda who, team, d: (
        _("%(who)s deleted template %(name)s.") % {"who": who, "name": d["name"]}
    ),
    "console.opened": lambda who, team, d: (
        _("%(who)s opened a console%(view)s.")
        % {"who": who, "view": _(" (view only)") if d.get("view_only") else ""}
    ),
    "console.closed": lambda who, team, d: (
        _("%(who)s closed a console after %(s)s s.") % {"who": who, "s": d["seconds"]}
    ),
}


# What each kind of event is about, in a word or two (the activity page's column; the
# sentence says the rest). By the part of the kind before "_" or ".", then whole kinds.
_TOPICS = {
    "login": gettext_lazy("sign-in"),
    "logout": gettext_lazy("sign-out"),
    "login_failed": gettext_lazy("failed sign-in"),
    "domain_assigned": gettext_lazy("VM's team"),
    "quota": gettext_lazy("quota"),
    "role": gettext_lazy("member"),
    "member": gettext_lazy("member"),
    "host": gettext_lazy("host"),
    "image": gettext_lazy("saved image"),
    "request": gettext_lazy("request"),
    "template": gettext_lazy("template"),
    "console": gettext_lazy("console session"),
}


def topic(kind: str) -> str:
    """The event's kind in words for people; the kind itself where none is known."""
    words = _TOPICS.get(kind) or _TOPICS.get(kind.replace(".", "_").split("_")[0])
    return str(words) if words else kind


def sentence(kind: str, who: str, team: str, detail: dict, summary: str) -> str:
    """The event in a translated sentence; its summary where the kind has none or the
    event recorded too little."""
    words = SENTENCES.get(kind)
    if words is None:
        return summary
    try:
        return words(who or _("The panel"), team or "—", {"why": summary, **(detail or {})})
    except (KeyError, TypeError, AttributeError):
        return summary
