"""The saved configuration as raw XML, for team admins: preview the diff, then redefine."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.utils.translation import gettext as _

from .. import domxml, hypervisor
from ..hypervisor import HypervisorError
from ..kinds import KINDS, wrong_state_message
from ..models import Domain, Host, Operation, OperationKind, OperationStatus, SavedImage
from ..rules import edit_policy_problems, taken_path_problems, xml_edit_check
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


def host_reach_problems(
    host: Host, new_xml: str, current_xml: str | None, uuid: str = ""
) -> list[str]:
    """What `new_xml` (of domain `uuid`) reaches on `host` beyond a team admin's powers
    (`rules.edit_policy_problems`), and the files of the host's other domains it names
    (`rules.taken_path_problems`: an allowed folder holds every team's disks): reads the
    host's platforms, storage pools and domains now."""
    try:
        new = domxml.read_domain_reach(new_xml)
        current = domxml.read_domain_reach(current_xml) if current_xml else None
    except domxml.XMLError as exc:
        return [str(exc)]
    roots = (*hypervisor.pool_paths(host.uri), *host.allowed_folders)
    problems = edit_policy_problems(
        new, current, hypervisor.platforms(host.uri), roots, host.allow_hostdev
    )
    taken = hypervisor.paths_in_use(host.uri, exclude_uuid=uuid)
    # Memory images the panel saved of the host's other VMs: their memory, as a disk.
    images = SavedImage.objects.filter(host=host).exclude(domain_uuid=uuid or None)
    taken |= frozenset(images.values_list("path", flat=True))
    return problems + taken_path_problems(new, current, taken)


def _edit_problem(user: User, domain: Domain, current: str, new_xml: str) -> tuple[str, str, list]:
    """(diff, problem, waived) of an edit: the identity rules for everyone, the host
    policy for all but superusers, whose edits past it are allowed and `waived` on record."""
    diff, problem = xml_edit_check(current, new_xml)
    if problem:
        return diff, problem, []
    try:
        reach = host_reach_problems(domain.host, new_xml, current, str(domain.uuid))
    except HypervisorError as exc:
        return diff, exc.message, []
    if reach and not user.is_superuser:
        return "", " ".join(reach), []
    return diff, "", reach


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
    diff, problem, _waived = _edit_problem(user, domain, current, new_xml)
    return XmlPreview(new_xml, diff, problem)


def refused_edit(user: User, domain: Domain, op_pk: int) -> XmlPreview | None:
    """A save of `domain`'s XML that libvirt refused in the worker (operation `op_pk`), for
    the editor's "edit again": the text as submitted (the record's copy, whose passwords
    are put back from the saved configuration so that saving it keeps them) and libvirt's
    words. None when `op_pk` is no such save of this domain."""
    require(user, domain, OperationKind.EDIT_XML, record=False)
    op = (
        Operation.objects.filter(
            pk=op_pk, domain=domain, kind=OperationKind.EDIT_XML, status=OperationStatus.FAILED
        )
        .exclude(xml_after="")
        .first()
    )
    if op is None:
        return None
    why = _("libvirt refused this text (operation #%(op)s): %(error)s") % {
        "op": op.pk, "error": op.error or op.message}  # fmt: skip
    try:
        text = domxml.restore_secrets(op.xml_after, current_domain_xml(domain))
    except (HypervisorError, domxml.XMLError) as exc:
        # The text without its passwords is still the person's work; saving it as it is
        # would drop them, so say so.
        text = op.xml_after
        why += " " + _(
            "The saved passwords could not be read back (%(error)s): put them back before "
            "saving, or the VM loses them."
        ) % {"error": getattr(exc, "message", str(exc))}
    return XmlPreview(text, "", why)


def edit_domain_xml(user: User, domain: Domain, new_xml: str) -> Operation:
    """Redefine a persistent domain from XML typed by a team admin.

    Checked here: well-formed (the hardened parser's message otherwise), no DOCTYPE or
    entities, the same UUID and name, something changed; and, for all but superusers, that
    it reaches no further on the host than a team admin may (`host_reach_problems`: the
    emulator, platform, host paths, pass-through). A superuser's edit past that policy is
    allowed, and what it waived is on the operation's record. libvirt validates the XML
    against its schema in the task; a refusal there leaves the configuration as it was.
    """
    params: dict = {"diff": ""}

    def check() -> str | None:
        try:
            current = current_domain_xml(domain)
        except HypervisorError as exc:
            return exc.message
        _diff, problem, waived = _edit_problem(user, domain, current, new_xml)
        if problem:
            return problem
        if waived:
            params["policy_waived"] = waived
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
