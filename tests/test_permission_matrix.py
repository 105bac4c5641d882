"""Who may open what: every URL of the panel against every kind of person.

One row per URL (and method), one column per person: anonymous, a user of no team
(nora_noteam), a member of another team (bob_b, operator in team B), and team A's viewer,
operator and admin, and the superuser. Each cell is the expected HTTP status.

Every refused cell also proves that nothing happened: libvirt's own view of the domain
(read through the tests' connection), the operations (none queued or running; a 403 on a
lifecycle action leaves exactly one `refused` row, DESIGN rule 3, a 404 none at all), the
hosts, the memberships, the domains' teams and the audit trail are all as before. Pages
read by GET must not change anything either. An allowed write is checked for its effect.

No worker runs the queued operations here (the per-test transaction never commits, so
`on_commit` does not send them) and the view is told not to wait for them: an allowed
lifecycle action answers 303 to its operation's page, with the queued row behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import libvirt
import pytest
from django.test import Client
from django.urls import reverse

from domains.models import (
    AuditEvent,
    Domain,
    Host,
    Membership,
    Operation,
    OperationKind,
    OperationStatus,
    Role,
    SavedImage,
)
from tests.helpers import client_for, live

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

ROLES = (
    "anonymous",
    "nora_noteam",
    "bob_b",
    "victor_viewer",
    "olga_operator",
    "alice_admin",
    "root",
)

# The columns of the table, in the order of ROLES:
#                anon  nora   bob  viewer  oper  admin  root
PUBLIC = (200, 200, 200, 200, 200, 200, 200)
SIGNED_IN = (302, 200, 200, 200, 200, 200, 200)
TEAM_A_PAGE = (302, 404, 404, 200, 200, 200, 200)
OPERATE = (302, 404, 404, 403, 303, 303, 303)
OPERATE_PAGE = (302, 404, 404, 403, 200, 200, 200)
ADMIN_ONLY = (302, 404, 404, 403, 403, 303, 303)
SUPERUSER_ASSIGN = (302, 404, 404, 403, 403, 403, 303)
SUPERUSER_PAGE = (302, 403, 403, 403, 403, 403, 200)
SUPERUSER_POST = (302, 403, 403, 403, 403, 403, 303)
POST_ONLY = (302, 405, 405, 405, 405, 405, 405)
REDIRECT = (302, 302, 302, 302, 302, 302, 302)


@dataclass(frozen=True)
class Case:
    """One row of the matrix: a request and the status each person gets."""

    method: str
    url: Callable[[SimpleNamespace], str]
    statuses: tuple[int, ...]
    data: Callable[[SimpleNamespace], dict] = lambda w: {}
    # How to make the domain for this row (make_domain's keyword arguments).
    domain: dict = field(default_factory=lambda: {"state": "running"})
    # Checks the effect of an allowed write: (world, user, response, before snapshot).
    effect: Callable | None = None
    # Where a signed-in person's 302 must lead (anonymous always goes to the login page).
    redirect: str = ""
    needs_worker: bool = False
    # Prepares the world for this row: (world) → None.
    setup: Callable | None = None
    # A 403 here is an action refused for role, which leaves a refused Operation row.
    records_refusal: bool = False

    def expected(self, role: str) -> int:
        return dict(zip(ROLES, self.statuses, strict=True))[role]


def _domain_args(w: SimpleNamespace) -> list[str]:
    return [w.domain.host.name, str(w.domain.uuid)]


def _url(name: str, *args) -> Callable[[SimpleNamespace], str]:
    """reverse(name) with arguments; "domain" stands for the row's (host, UUID)."""

    def build(w: SimpleNamespace) -> str:
        resolved: list = []
        for arg in args:
            if arg == "domain":
                resolved += _domain_args(w)
            elif callable(arg):
                resolved.append(arg(w))
            else:
                resolved.append(arg)
        return reverse(name, args=resolved)

    return build


# --- effects of allowed writes -------------------------------------------------------


def _lifecycle_effect(kind: str):
    def check(w, user, response, before) -> None:
        new = Operation.objects.exclude(pk__in=[pk for pk, _s in before["ops"]])
        op = new.get()
        assert (op.kind, op.status, op.user, op.domain) == (
            kind,
            OperationStatus.QUEUED,
            user,
            w.domain,
        )
        assert op.team == w.people.team_a and op.task_id
        assert response["Location"] == reverse("operation_detail", args=[op.pk])
        # Queued only: libvirt is untouched until a worker runs it.
        assert live(w.conn, w.domain.uuid) == before["libvirt"]

    return check


def _assign_effect(w, user, response, before) -> None:
    assert Domain.objects.get(pk=w.domain.pk).team == w.people.team_b
    event = AuditEvent.objects.get(kind="domain_assigned")
    assert event.user == user and event.team == w.people.team_b
    assert response["Location"] == reverse("domain_detail", args=_domain_args(w))


def _member_set_effect(w, user, response, before) -> None:
    ms = Membership.objects.get(user=w.people.nora_noteam)
    assert (ms.team, ms.role) == (w.people.team_a, Role.OPERATOR)
    event = AuditEvent.objects.get(kind="role_changed")
    assert event.user == user and event.detail["member"] == "nora_noteam"


def _member_remove_effect(w, user, response, before) -> None:
    assert not Membership.objects.filter(user=w.people.victor_viewer).exists()
    event = AuditEvent.objects.get(kind="member_removed")
    assert event.user == user and event.detail["member"] == "victor_viewer"


def _host_create_effect(w, user, response, before) -> None:
    host = Host.objects.get(name="gamma-new")
    assert host.uri == w.hosts.alpha.uri and host.enabled
    assert AuditEvent.objects.get(kind="host_added").user == user
    assert response["Location"] == reverse("host_detail", args=["gamma-new"])


def _host_edit_effect(w, user, response, before) -> None:
    assert Host.objects.get(name="alpha").uri == w.hosts.beta.uri
    assert AuditEvent.objects.get(kind="host_changed").user == user


def _host_disable_effect(w, user, response, before) -> None:
    assert not Host.objects.get(name="alpha").enabled
    assert AuditEvent.objects.get(kind="host_disabled").user == user


def _with_save_folder(w) -> None:
    w.hosts.alpha.save_dir = "/tmp/vmpanel-matrix-save"
    w.hosts.alpha.save(update_fields=["save_dir"])


def _with_saved_image(w) -> None:
    w.image = SavedImage.objects.create(
        host=w.domain.host,
        path="/tmp/vmpanel-matrix-save/matrix.save",
        domain=w.domain,
        domain_uuid=w.domain.uuid,
        domain_name=w.domain.name,
        team=w.domain.team,
    )


def _image_forgotten_effect(w, user, response, before) -> None:
    assert not SavedImage.objects.filter(pk=w.image.pk).exists()
    assert AuditEvent.objects.filter(kind="image_forgotten", user=user).exists()


def _logout_effect(w, user, response, before) -> None:
    assert response["Location"] == reverse("login")
    assert AuditEvent.objects.filter(kind="logout", user=user).count() == 1


# --- the matrix ----------------------------------------------------------------------

LIFECYCLE_STATES = {
    OperationKind.START: {"state": "shutoff"},
    OperationKind.SHUTDOWN: {"state": "running"},
    OperationKind.DESTROY: {"state": "running"},
    OperationKind.REBOOT: {"state": "running"},
    OperationKind.RESET: {"state": "running"},
    OperationKind.SUSPEND: {"state": "running"},
    OperationKind.RESUME: {"state": "paused"},
    OperationKind.AUTOSTART_ON: {"state": "shutoff"},
    OperationKind.AUTOSTART_OFF: {"state": "shutoff", "autostart": True},
    OperationKind.MANAGED_SAVE: {"state": "running"},
    OperationKind.MANAGED_SAVE_REMOVE: {"managed_save": True},
    OperationKind.UNDEFINE: {"state": "shutoff"},
}


def _lifecycle_case(kind: str) -> Case:
    return Case(
        "post",
        _url("domain_action", "domain", kind),
        ADMIN_ONLY if kind == OperationKind.UNDEFINE else OPERATE,
        # The confirmation is given here; without it is in test_domain_actions.
        data=lambda w: {"confirm": "yes"},
        domain=LIFECYCLE_STATES[kind],
        effect=_lifecycle_effect(kind),
        records_refusal=True,
    )


CASES: dict[str, Case] = {
    "domain_list": Case("get", _url("domain_list"), SIGNED_IN),
    "domain_detail": Case("get", _url("domain_detail", "domain"), TEAM_A_PAGE),
    "domain_usage": Case("get", _url("domain_usage", "domain"), TEAM_A_PAGE),
    "domain_screenshot": Case("get", _url("domain_screenshot", "domain"), TEAM_A_PAGE),
    "domain_console": Case("get", _url("domain_console", "domain"), TEAM_A_PAGE),
    # A test-driver domain has no VNC display: every role that may see it is told so.
    "console_ticket": Case(
        "post", _url("console_ticket", "domain"), (302, 404, 404, 409, 409, 409, 409)
    ),
    "console_ticket:GET": Case("get", _url("console_ticket", "domain"), POST_ONLY),
    "domain_confirm:destroy": Case("get", _url("domain_confirm", "domain", "destroy"), TEAM_A_PAGE),
    "domain_confirm:undefine": Case(
        "get", _url("domain_confirm", "domain", "undefine"), TEAM_A_PAGE
    ),
    "domain_confirm:reset": Case("get", _url("domain_confirm", "domain", "reset"), TEAM_A_PAGE),
    **{f"domain_action:{kind}": _lifecycle_case(kind) for kind in LIFECYCLE_STATES},
    "domain_action:GET": Case("get", _url("domain_action", "domain", "start"), POST_ONLY),
    "domain_assign": Case(
        "post",
        _url("domain_assign", "domain"),
        SUPERUSER_ASSIGN,
        data=lambda w: {"team": "team-b"},
        effect=_assign_effect,
    ),
    "domain_assign:GET": Case("get", _url("domain_assign", "domain"), POST_ONLY),
    "operation_detail": Case("get", _url("operation_detail", lambda w: w.op.pk), TEAM_A_PAGE),
    "operation_cancel": Case("post", _url("operation_cancel", lambda w: w.op.pk), OPERATE),
    "operation_cancel:GET": Case("get", _url("operation_cancel", lambda w: w.op.pk), POST_ONLY),
    "domain_save:GET": Case("get", _url("domain_save", "domain"), OPERATE_PAGE),
    "domain_save": Case(
        "post",
        _url("domain_save", "domain"),
        OPERATE,
        data=lambda w: {"image_name": "matrix"},
        setup=_with_save_folder,
        effect=_lifecycle_effect(OperationKind.SAVE),
        records_refusal=True,
    ),
    "domain_migrate:GET": Case("get", _url("domain_migrate", "domain"), OPERATE_PAGE),
    "domain_migrate": Case(
        "post",
        _url("domain_migrate", "domain"),
        OPERATE,
        data=lambda w: {"destination": "beta", "flags": ["LIVE", "PEER2PEER", "PERSIST_DEST"]},
        effect=_lifecycle_effect(OperationKind.MIGRATE),
        records_refusal=True,
    ),
    "image_restore": Case(
        "post",
        _url("image_restore", "alpha", lambda w: w.image.pk),
        OPERATE,
        data=lambda w: {"confirm": "yes"},  # the confirmation page's button
        domain={"state": "shutoff"},
        setup=_with_saved_image,
        effect=_lifecycle_effect(OperationKind.RESTORE),
        records_refusal=True,
    ),
    # The confirmation page, as a kind's form page (a viewer's GET is not on record).
    "image_restore:GET": Case(
        "get",
        _url("image_restore", "alpha", lambda w: w.image.pk),
        OPERATE_PAGE,
        domain={"state": "shutoff"},
        setup=_with_saved_image,
    ),
    "image_forget": Case(
        "post",
        _url("image_forget", "alpha", lambda w: w.image.pk),
        OPERATE,
        setup=_with_saved_image,
        effect=_image_forgotten_effect,
    ),
    "image_forget:GET": Case(
        "get",
        _url("image_forget", "alpha", lambda w: w.image.pk),
        POST_ONLY,
        setup=_with_saved_image,
    ),
    "activity": Case("get", _url("activity"), SIGNED_IN),
    "nav_counts": Case("get", _url("nav_counts"), SIGNED_IN),
    "host_list": Case("get", _url("host_list"), SUPERUSER_PAGE),
    "host_create:GET": Case("get", _url("host_create"), SUPERUSER_PAGE),
    "host_create": Case(
        "post",
        _url("host_create"),
        SUPERUSER_POST,
        data=lambda w: {"name": "gamma-new", "uri": w.hosts.alpha.uri, "enabled": "on"},
        effect=_host_create_effect,
    ),
    "host_detail": Case("get", _url("host_detail", "alpha"), SUPERUSER_PAGE),
    "host_edit:GET": Case("get", _url("host_edit", "alpha"), SUPERUSER_PAGE),
    "host_edit": Case(
        "post",
        _url("host_edit", "alpha"),
        SUPERUSER_POST,
        data=lambda w: {"name": "alpha", "uri": w.hosts.beta.uri, "enabled": "on"},
        effect=_host_edit_effect,
    ),
    "host_set_enabled": Case(
        "post",
        _url("host_set_enabled", "alpha"),
        SUPERUSER_POST,
        data=lambda w: {"enabled": "0"},
        effect=_host_disable_effect,
    ),
    "host_set_enabled:GET": Case("get", _url("host_set_enabled", "alpha"), POST_ONLY),
    "team_list": Case("get", _url("team_list"), SIGNED_IN),
    "team_detail": Case("get", _url("team_detail", "team-a"), TEAM_A_PAGE),
    "team_member_set": Case(
        "post",
        _url("team_member_set", "team-a"),
        ADMIN_ONLY,
        data=lambda w: {"username": "nora_noteam", "role": Role.OPERATOR},
        effect=_member_set_effect,
    ),
    "team_member_set:GET": Case("get", _url("team_member_set", "team-a"), POST_ONLY),
    "team_member_remove": Case(
        "post",
        _url("team_member_remove", "team-a", lambda w: w.people.victor_viewer.pk),
        ADMIN_ONLY,
        effect=_member_remove_effect,
    ),
    "team_member_remove:GET": Case(
        "get",
        _url("team_member_remove", "team-a", lambda w: w.people.victor_viewer.pk),
        POST_ONLY,
    ),
    "healthz": Case("get", _url("healthz"), PUBLIC),
    "readyz": Case("get", _url("readyz"), PUBLIC, needs_worker=True),
    "login": Case("get", _url("login"), PUBLIC),
    "logout": Case("post", _url("logout"), REDIRECT, effect=_logout_effect),
    "logout:GET": Case("get", _url("logout"), POST_ONLY),
    "home": Case("get", _url("home"), REDIRECT, redirect="/domains/"),
    "set_language": Case(
        "post",
        _url("set_language"),
        REDIRECT,
        data=lambda w: {"language": "en", "next": "/teams/"},
        redirect="/teams/",
    ),
    "set_language:GET": Case("get", _url("set_language"), POST_ONLY),
    # The words of console.js in the reader's language: for signed-in people only.
    "javascript_catalog": Case("get", _url("javascript_catalog"), SIGNED_IN),
}


# --- provisioning: templates, requests, notifications, quotas -------------------------

TEAM_ADMIN_PAGE = (302, 403, 403, 403, 403, 200, 200)
ANY_TEAM_PAGE = (302, 403, 200, 200, 200, 200, 200)


def _provisioning_world(w: SimpleNamespace) -> None:
    from provisioning.models import Template, VMRequest

    w.template = Template.objects.create(name="tpl", method="pxe", max_vcpus=4)
    w.template.hosts.set([w.hosts.alpha])
    w.spare = Template.objects.create(name="spare", method="pxe")  # no request: deletable
    w.req = VMRequest.objects.create(
        team=w.people.team_a,
        requester=w.people.victor_viewer,
        template=w.template,
        name="asked-1",
        vcpus=1,
        memory_mib=256,
        purpose="matrix",
    )
    w.provision = Operation.objects.create(
        kind=OperationKind.PROVISION,
        user=w.people.alice_admin,
        host=w.hosts.alpha,
        domain_name="made-1",
        team=w.people.team_a,
        params={"phase": "1"},
        status=OperationStatus.RUNNING,
    )


def _request_state_effect(state: str, audit_kind: str):
    def check(w, user, response, before) -> None:
        from provisioning.models import VMRequest

        req = VMRequest.objects.get(pk=w.req.pk)
        assert (req.state, req.decided_by) == (state, user)
        assert AuditEvent.objects.get(kind=audit_kind).user == user
        if state == "approved":
            op = Operation.objects.exclude(pk=w.provision.pk).get(kind=OperationKind.PROVISION)
            assert op.status == OperationStatus.QUEUED and req.operation == op
        assert live(w.conn, w.domain.uuid) == before["libvirt"]

    return check


def _submitted_effect(w, user, response, before) -> None:
    from provisioning.models import VMRequest

    req = VMRequest.objects.exclude(pk=w.req.pk).get()
    assert (req.requester, req.team, req.state) == (user, w.people.team_a, "submitted")
    assert response["Location"] == reverse("request_detail", args=[req.pk])
    assert AuditEvent.objects.get(kind="request_submitted").user == user


def _template_saved_effect(w, user, response, before) -> None:
    from provisioning.models import Template

    assert Template.objects.filter(name="new-tpl").exists()


def _template_deleted_effect(w, user, response, before) -> None:
    from provisioning.models import Template

    assert not Template.objects.filter(pk=w.spare.pk).exists()
    assert AuditEvent.objects.get(kind="template_deleted").user == user


def _quota_effect(w, user, response, before) -> None:
    from provisioning.models import Quota

    assert Quota.objects.get(team=w.people.team_a).max_vcpus == 7
    assert AuditEvent.objects.get(kind="quota_changed").user == user


def _template_data(w) -> dict:
    return {
        "name": "new-tpl", "method": "pxe", "domain_type": "kvm", "hosts": [w.hosts.alpha.pk],
        "vcpus_max": 2, "vcpus_current": 1, "vcpu_placement": "static", "memory_mib": 512,
        "current_memory_mib": 512, "firmware": "bios", "clock_offset": "utc",
        "on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "destroy",
        "disk_gib": 5, "disk_format": "qcow2", "disk_bus": "virtio", "net_type": "network",
        "net_source": "default", "net_model": "virtio", "balloon_period": 10,
        "min_vcpus": 1, "max_vcpus": 2, "min_memory_mib": 128, "max_memory_mib": 1024,
    }  # fmt: skip


def _create_data(w) -> dict:
    # Without "confirm": the preview, which sends nothing.
    return {
        "team": w.people.team_a.pk, "host": w.hosts.alpha.pk, "name": "pre-1",
        "vcpus": 1, "memory_mib": 256, "persistent": "on",
    }  # fmt: skip


def _request_data(w) -> dict:
    return {
        "team": w.people.team_a.pk, "template": w.template.pk, "name": "asked-2",
        "vcpus": 1, "memory_mib": 256, "purpose": "matrix",
    }  # fmt: skip


_P = {"setup": _provisioning_world}
CASES.update(
    {
        "template_list": Case("get", _url("template_list"), SIGNED_IN, **_P),
        "template_new:GET": Case("get", _url("template_new"), SUPERUSER_PAGE, **_P),
        "template_new": Case(
            "post",
            _url("template_new"),
            SUPERUSER_POST,
            data=_template_data,
            effect=_template_saved_effect,
            **_P,
        ),  # fmt: skip
        "template_edit": Case(
            "get", _url("template_edit", lambda w: w.template.pk), SUPERUSER_PAGE, **_P
        ),
        "template_delete:GET": Case(
            "get", _url("template_delete", lambda w: w.spare.pk), SUPERUSER_PAGE, **_P
        ),
        "template_delete": Case(
            "post",
            _url("template_delete", lambda w: w.spare.pk),
            SUPERUSER_POST,
            effect=_template_deleted_effect,
            **_P,
        ),  # fmt: skip
        "template_create:GET": Case(
            "get", _url("template_create", lambda w: w.template.pk), TEAM_ADMIN_PAGE, **_P
        ),
        "template_create": Case(
            "post",
            _url("template_create", lambda w: w.template.pk),
            TEAM_ADMIN_PAGE,
            data=_create_data,
            **_P,
        ),  # fmt: skip
        "provision_detail": Case(
            "get", _url("provision_detail", lambda w: w.provision.pk), TEAM_A_PAGE, **_P
        ),
        "request_list": Case("get", _url("request_list"), SIGNED_IN, **_P),
        "request_new:GET": Case("get", _url("request_new"), ANY_TEAM_PAGE, **_P),
        "request_new": Case(
            "post",
            _url("request_new"),
            (302, 403, 200, 303, 303, 303, 303),
            data=_request_data,
            effect=_submitted_effect,
            **_P,
        ),  # fmt: skip
        "request_detail": Case(
            "get", _url("request_detail", lambda w: w.req.pk), TEAM_A_PAGE, **_P
        ),
        "request_approve": Case(
            "post",
            _url("request_approve", lambda w: w.req.pk),
            ADMIN_ONLY,
            data=lambda w: {"host": w.hosts.alpha.pk},
            effect=_request_state_effect("approved", "request_approved"),
            **_P,
        ),  # fmt: skip
        "request_approve:GET": Case(
            "get", _url("request_approve", lambda w: w.req.pk), POST_ONLY, **_P
        ),
        "request_reject": Case(
            "post",
            _url("request_reject", lambda w: w.req.pk),
            ADMIN_ONLY,
            data=lambda w: {"reason": "no"},
            effect=_request_state_effect("rejected", "request_rejected"),
            **_P,
        ),  # fmt: skip
        "request_reject:GET": Case(
            "get", _url("request_reject", lambda w: w.req.pk), POST_ONLY, **_P
        ),
        "notification_list": Case("get", _url("notification_list"), SIGNED_IN, **_P),
        "notification_read": Case(
            "post", _url("notification_read"), (302, 303, 303, 303, 303, 303, 303), **_P
        ),
        "notification_read:GET": Case("get", _url("notification_read"), POST_ONLY, **_P),
        "team_quota": Case("get", _url("team_quota", "team-a"), TEAM_A_PAGE, **_P),
        "team_quota:POST": Case(
            "post",
            _url("team_quota", "team-a"),
            (302, 404, 404, 403, 403, 403, 303),
            data=lambda w: {
                "max_domains": 5,
                "max_vcpus": 7,
                "max_memory_mib": 4096,
                "max_disk_gib": 100,
            },
            effect=_quota_effect,
            **_P,
        ),  # fmt: skip
    }
)


# --- resize and raw XML ---------------------------------------------------------------

ADMIN_PAGE = (302, 404, 404, 403, 403, 200, 200)


def _resize_data(w) -> dict:
    # The matrix's domain runs with 1 vCPU of at most 1 and 256 MiB: a new maximum.
    return {
        "vcpus": 1, "vcpus_max": 2, "memory_mib": 256, "memory_max_mib": 256,
        "live": "on", "config": "on",
    }  # fmt: skip


def _edited_xml(w) -> str:
    """The domain's saved configuration with a description added (read by the tests'
    own connection)."""
    xml = w.conn.lookupByUUIDString(str(w.domain.uuid)).XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    )
    return xml.replace("</uuid>", "</uuid>\n  <description>matrix</description>", 1)


CASES.update(
    {
        "domain_resize:GET": Case("get", _url("domain_resize", "domain"), OPERATE_PAGE),
        "domain_resize": Case(
            "post",
            _url("domain_resize", "domain"),
            OPERATE,
            data=_resize_data,
            effect=_lifecycle_effect(OperationKind.RESIZE),
            records_refusal=True,
        ),
        "domain_xml_edit:GET": Case("get", _url("domain_xml_edit", "domain"), ADMIN_PAGE),
        # A preview shows the diff and changes nothing, not even the operations.
        "domain_xml_edit:preview": Case(
            "post",
            _url("domain_xml_edit", "domain"),
            ADMIN_PAGE,
            data=lambda w: {"xml": _edited_xml(w), "preview": "1"},
            records_refusal=True,
        ),
        "domain_xml_edit": Case(
            "post",
            _url("domain_xml_edit", "domain"),
            ADMIN_ONLY,
            data=lambda w: {"xml": _edited_xml(w), "save": "1"},
            effect=_lifecycle_effect(OperationKind.EDIT_XML),
            records_refusal=True,
        ),
    }
)


# --- acting on several domains from the list ----------------------------------------------


def _bulk_effect(w, user, response, before) -> None:
    """Every signed-in person comes back to the list; what happened to the ticked domain
    follows their role: nothing for those who cannot see it, a refusal on record for a
    viewer, a queued reboot for operators and up."""
    assert response["Location"] == "/domains/?f=running"
    new = list(Operation.objects.exclude(pk__in=[pk for pk, _s in before["ops"]]))
    role = {"nora_noteam": None, "bob_b": None, "victor_viewer": "refused"}.get(
        user.username, "queued"
    )
    if role is None:
        assert new == []
    else:
        (op,) = new
        assert (op.kind, op.status, op.user) == (OperationKind.REBOOT, role, user)
    assert live(w.conn, w.domain.uuid) == before["libvirt"]


CASES.update(
    {
        "domain_bulk": Case(
            "post",
            _url("domain_bulk"),
            (302, 303, 303, 303, 303, 303, 303),
            data=lambda w: {
                "action": "reboot",
                "pick": [f"{w.domain.host.name}/{w.domain.uuid}"],
                "next": "/domains/?f=running",
            },
            effect=_bulk_effect,
        ),
        "domain_bulk:GET": Case("get", _url("domain_bulk"), POST_ONLY),
    }
)


# --- snapshots and clones --------------------------------------------------------------


def _with_snapshot(w: SimpleNamespace) -> None:
    dom = w.conn.lookupByUUIDString(str(w.domain.uuid))
    dom.snapshotCreateXML("<domainsnapshot><name>matrix-snap</name></domainsnapshot>", 0)


def _snapshot_url(name: str):
    return lambda w: reverse(name, args=_domain_args(w)) + "?name=matrix-snap"


CASES.update(
    {
        "domain_snapshots": Case(
            "get", _url("domain_snapshots", "domain"), TEAM_A_PAGE, setup=_with_snapshot
        ),
        "domain_snapshot_create:GET": Case(
            "get", _url("domain_snapshot_create", "domain"), OPERATE_PAGE
        ),
        "domain_snapshot_create": Case(
            "post",
            _url("domain_snapshot_create", "domain"),
            OPERATE,
            data=lambda w: {"name": "matrix", "description": "before the upgrade"},
            effect=_lifecycle_effect(OperationKind.SNAPSHOT_CREATE),
            records_refusal=True,
        ),
        "domain_snapshot_revert:GET": Case(
            "get", _snapshot_url("domain_snapshot_revert"), ADMIN_PAGE, setup=_with_snapshot
        ),
        "domain_snapshot_revert": Case(
            "post",
            _url("domain_snapshot_revert", "domain"),
            ADMIN_ONLY,
            data=lambda w: {"name": "matrix-snap", "then": ""},
            setup=_with_snapshot,
            effect=_lifecycle_effect(OperationKind.SNAPSHOT_REVERT),
            records_refusal=True,
        ),
        "domain_snapshot_delete:GET": Case(
            "get", _snapshot_url("domain_snapshot_delete"), ADMIN_PAGE, setup=_with_snapshot
        ),
        "domain_snapshot_delete": Case(
            "post",
            _url("domain_snapshot_delete", "domain"),
            ADMIN_ONLY,
            data=lambda w: {"name": "matrix-snap", "mode": "one"},
            setup=_with_snapshot,
            effect=_lifecycle_effect(OperationKind.SNAPSHOT_DELETE),
            records_refusal=True,
        ),
        "domain_clone:GET": Case(
            "get", _url("domain_clone", "domain"), ADMIN_PAGE, domain={"state": "shutoff"}
        ),
        "domain_clone": Case(
            "post",
            _url("domain_clone", "domain"),
            ADMIN_ONLY,
            data=lambda w: {"name": "matrix-copy"},
            domain={"state": "shutoff"},
            effect=_lifecycle_effect(OperationKind.CLONE),
            records_refusal=True,
        ),
    }
)


def snapshot(w: SimpleNamespace) -> dict:
    """Everything a refused request must leave as it was."""
    return {
        "libvirt": live(w.conn, w.domain.uuid),
        "ops": set(Operation.objects.values_list("pk", "status")),
        "hosts": list(Host.objects.order_by("pk").values("name", "uri", "enabled")),
        "memberships": set(Membership.objects.values_list("user_id", "team_id", "role")),
        "domain_teams": set(Domain.objects.values_list("pk", "team_id")),
        "audit": list(AuditEvent.objects.values_list("pk", flat=True)),
    }


def assert_nothing_changed(w, before: dict, user, allow_refused_row: bool) -> None:
    after = snapshot(w)
    new_ops = Operation.objects.exclude(pk__in=[pk for pk, _s in before["ops"]])
    if allow_refused_row:
        # DESIGN rule 3: a refusal for role is on record, and is all there is.
        op = new_ops.get()
        assert (op.status, op.user, op.domain) == (OperationStatus.REFUSED, user, w.domain)
        assert not op.task_id
        after["ops"].discard((op.pk, op.status))
    else:
        assert not new_ops.exists(), list(new_ops.values("kind", "status", "message"))
    assert not Operation.objects.filter(
        status__in=[OperationStatus.QUEUED, OperationStatus.RUNNING]
    ).exclude(pk__in=[pk for pk, _s in before["ops"]])
    assert after == before


@pytest.fixture
def world(people, hosts, make_domain, libvirt_hosts, request):
    case: Case = CASES[request.node.callspec.params["url"]]
    domain = make_domain(**case.domain)
    op = Operation.objects.create(
        kind=OperationKind.START,
        user=people.olga_operator,
        domain=domain,
        host=domain.host,
        domain_uuid=domain.uuid,
        domain_name=domain.name,
        team=domain.team,
        status=OperationStatus.SUCCEEDED,
        message="Started.",
    )
    w = SimpleNamespace(
        people=people, hosts=hosts, domain=domain, op=op, conn=libvirt_hosts.conn("alpha")
    )
    if case.setup is not None:
        case.setup(w)
    return w


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", list(CASES))
def test_matrix(url, role, world, settings, request):
    case = CASES[url]
    if case.needs_worker:
        request.getfixturevalue("celery_worker")
        request.getfixturevalue("watcher_beat")
    # An allowed action answers at once with its operation's page (nothing runs it here).
    settings.VMPANEL_QUICK_WAIT_SECONDS = 0
    user = None if role == "anonymous" else getattr(world.people, role)
    client = Client() if user is None else client_for(user)
    path = case.url(world)
    before = snapshot(world)

    if case.method == "get":
        response = client.get(path)
    else:
        response = client.post(path, case.data(world))

    expected = case.expected(role)
    assert response.status_code == expected, (
        f"{case.method.upper()} {path} as {role}: {response.status_code}, expected {expected}"
    )
    if expected == 302:
        if user is None:
            assert response["Location"].startswith("/login/?next="), response["Location"]
        elif case.redirect:
            assert response["Location"] == case.redirect
    if case.effect is not None and expected in (302, 303) and user is not None:
        case.effect(world, user, response, before)
    else:
        refused_for_role = expected == 403 and case.records_refusal
        assert_nothing_changed(world, before, user, allow_refused_row=refused_for_role)


def test_every_button_action_is_in_the_matrix():
    """Each action the detail page offers as a plain button posts to domain_action."""
    from domains import kinds

    assert set(kinds.BUTTON_KINDS) == set(LIFECYCLE_STATES)


def test_every_url_of_the_panel_is_in_the_matrix():
    """A new URL must get its row here: compare with the URL configuration."""
    from django.urls import get_resolver

    named = {name for name in get_resolver().reverse_dict if isinstance(name, str)}
    covered = {key.split(":")[0] for key in CASES}
    assert named - covered == set()


# --- visibility beyond single URLs ----------------------------------------------------


def _listed(client: Client) -> set[str]:
    response = client.get(reverse("domain_list"))
    assert response.status_code == 200
    return {str(d["uuid"]) for d in response.context["page"].paginator.object_list}


def test_domain_of_no_team_is_for_the_superuser_only(people, make_domain, libvirt_hosts):
    domain = make_domain(team=None, state="running")
    team_a = make_domain(team="a", state="running")
    conn = libvirt_hosts.conn("alpha")
    before = live(conn, domain.uuid)
    args = [domain.host.name, str(domain.uuid)]

    root = client_for(people.root)
    assert str(domain.uuid) in _listed(root)
    page = root.get(reverse("domain_detail", args=args))
    assert page.status_code == 200
    assert "none (superusers only)" in page.content.decode()

    for name in ("alice_admin", "olga_operator", "victor_viewer", "bob_b", "nora_noteam"):
        client = client_for(getattr(people, name))
        listed = _listed(client)
        assert str(domain.uuid) not in listed, name
        assert (str(team_a.uuid) in listed) == (name not in ("bob_b", "nora_noteam"))
        assert client.get(reverse("domain_detail", args=args)).status_code == 404, name
        for action in ("destroy", "undefine"):
            url = reverse("domain_confirm", args=[*args, action])
            assert client.get(url).status_code == 404, (name, action)
        for action in ("shutdown", "suspend", "destroy"):
            url = reverse("domain_action", args=[*args, action])
            response = client.post(url, {"confirm": "yes"})
            assert response.status_code == 404, (name, action)
    assert not Operation.objects.exists()
    assert live(conn, domain.uuid) == before


def test_operation_of_a_domain_of_no_team_is_for_the_superuser_only(people, make_domain):
    domain = make_domain(team=None)
    op = Operation.objects.create(
        kind=OperationKind.START, user=people.root, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, domain_name=domain.name, status=OperationStatus.SUCCEEDED,
    )  # fmt: skip
    url = reverse("operation_detail", args=[op.pk])

    assert client_for(people.root).get(url).status_code == 200
    for name in ("alice_admin", "olga_operator", "victor_viewer", "bob_b", "nora_noteam"):
        assert client_for(getattr(people, name)).get(url).status_code == 404, name
    # An unknown operation is the same 404: nothing tells the two apart.
    missing = client_for(people.alice_admin).get(reverse("operation_detail", args=[op.pk + 99]))
    assert missing.status_code == 404


def test_user_with_no_team_sees_an_empty_list(people, make_domain):
    make_domain(team="a")
    make_domain(team="b")
    make_domain(team=None)

    client = client_for(people.nora_noteam)
    response = client.get(reverse("domain_list"))

    assert response.status_code == 200
    assert response.context["page"].paginator.count == 0
    assert "No VMs for you yet" in response.content.decode()
    # Filters or a search do not open anything up either.
    response = client.get(reverse("domain_list"), {"q": "vm-", "gone": "on", "f": "running"})
    assert response.context["page"].paginator.count == 0
    teams = client.get(reverse("team_list"))
    assert "You belong to no team yet" in teams.content.decode()


def test_each_team_sees_its_own_domains(people, make_domain):
    a = make_domain(team="a")
    b = make_domain(team="b", host="beta")

    assert _listed(client_for(people.victor_viewer)) == {str(a.uuid)}
    assert _listed(client_for(people.bob_b)) == {str(b.uuid)}
    # The superuser also sees the test driver's own "test" domain of each host (no team).
    assert {str(a.uuid), str(b.uuid)} <= _listed(client_for(people.root))
    # Team B's domain is a 404 for team A's admin, and its team page too.
    alice = client_for(people.alice_admin)
    assert alice.get(reverse("domain_detail", args=["beta", str(b.uuid)])).status_code == 404
    assert alice.get(reverse("team_detail", args=["team-b"])).status_code == 404
    assert client_for(people.bob_b).get(reverse("team_detail", args=["team-b"])).status_code == 200


@pytest.mark.parametrize(
    ("who", "kind", "offered"),
    [
        ("victor_viewer", "destroy", False),
        ("olga_operator", "destroy", True),
        ("olga_operator", "undefine", False),
        ("alice_admin", "undefine", True),
        ("root", "undefine", True),
    ],
)
def test_confirm_page_offers_the_form_only_to_who_may(who, kind, offered, people, make_domain):
    domain = make_domain(state="running")
    url = reverse("domain_confirm", args=[domain.host.name, str(domain.uuid), kind])

    page = client_for(getattr(people, who)).get(url).content.decode()

    action_url = reverse("domain_action", args=[domain.host.name, str(domain.uuid), kind])
    assert (f'action="{action_url}"' in page) == offered
    assert ("This action is not available now" in page) == (not offered)
