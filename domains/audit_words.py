"""Audit events in words: one translated sentence per kind, from what the event recorded
(its detail), e.g. "paula raised Research's memory quota from 16384 to 32768 MiB". Rows
written before a kind recorded enough say their one-line summary instead."""

from __future__ import annotations

from collections.abc import Callable

from django.utils.translation import gettext as _

from .models import Role

QUOTA_WORDS = {
    "max_domains": ("VM", ""),
    "max_vcpus": ("vCPU", ""),
    "max_memory_mib": ("memory", " MiB"),
    "max_disk_gib": ("disk", " GiB"),
    "max_snapshots_per_domain": ("snapshots per VM", ""),
}
SIGN_INS = ("login", "logout", "login_failed")


def _quota(who: str, team: str, d: dict) -> str:
    before, after = d.get("before") or {}, d["after"]
    parts = []
    for key, value in after.items():
        what, unit = QUOTA_WORDS.get(key, (key, ""))
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
    "request_approved": lambda who, team, d: (
        _("%(who)s approved %(name)s on %(host)s.")
        % {"who": who, "name": d["name"], "host": d["host"]}
    ),
    "request_rejected": lambda who, team, d: (
        _("%(who)s rejected %(name)s: %(reason)s")
        % {"who": who, "name": d["name"], "reason": d["reason"]}
    ),
    "template_added": lambda who, team, d: (
        _("%(who)s added the template %(name)s.") % {"who": who, "name": d["name"]}
    ),
    "template_changed": lambda who, team, d: (
        _("%(who)s changed the template %(name)s: %(fields)s.")
        % {"who": who, "name": d["name"], "fields": ", ".join(sorted(d["after"])) or "—"}
    ),
    "console.opened": lambda who, team, d: (
        _("%(who)s opened a console%(view)s.")
        % {"who": who, "view": _(" (view only)") if d.get("view_only") else ""}
    ),
    "console.closed": lambda who, team, d: (
        _("%(who)s closed a console after %(s)s s.") % {"who": who, "s": d["seconds"]}
    ),
}


def sentence(kind: str, who: str, team: str, detail: dict, summary: str) -> str:
    """The event in a translated sentence; its summary where the kind has none or the
    event recorded too little."""
    words = SENTENCES.get(kind)
    if words is None:
        return summary
    try:
        return words(who or _("The panel"), team or "—", detail or {})
    except (KeyError, TypeError, AttributeError):
        return summary
