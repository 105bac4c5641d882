"""The saved configuration as raw XML, for team admins: preview the diff, then redefine."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.utils.translation import gettext as _

from .. import domxml, hypervisor
from ..hypervisor import HypervisorError
from ..kinds import KINDS, wrong_state_message
from ..models import Domain, Operation, OperationKind
from ..rules import xml_edit_check
from .common import queue_operation, require


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


def preview_domain_xml(user: User, domain: Domain, new_xml: str) -> XmlPreview:
    """The diff saving `new_xml` would make, or why it would be refused; changes nothing
    and records nothing."""
    kind = OperationKind.EDIT_XML
    require(user, domain, kind, record=False)
    if not KINDS[kind].allowed(domain):
        return XmlPreview(new_xml, "", wrong_state_message(KINDS[kind], domain))
    if not domain.host.enabled:  # a disabled host is left alone, even for reading
        return XmlPreview(new_xml, "", _("Host %(host)s is disabled.") % {"host": domain.host})
    try:
        current = current_domain_xml(domain)
    except HypervisorError as exc:
        return XmlPreview(new_xml, "", exc.message)
    diff, problem = xml_edit_check(current, new_xml)
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
        _diff, problem = xml_edit_check(current, new_xml)
        if problem:
            return problem
        # The record is read by the whole team: no passwords in it.
        params["diff"] = domxml.xml_diff(
            domxml.redact_secrets(current), domxml.redact_secrets(new_xml)
        )
        return None

    def redacted() -> str:
        try:
            return domxml.redact_secrets(new_xml)
        except domxml.XMLError:
            return ""  # refused by check() anyway

    return queue_operation(
        user,
        domain,
        OperationKind.EDIT_XML,
        params,
        check=check,
        # What the team reads: the submitted XML without its passwords (the task puts
        # libvirt's read-back in its place). The XML itself travels with the task only.
        fields={"xml_after": redacted()},
        payload={"xml": new_xml},
    )
