"""Provisioning on the same rails as the domains: template edits on record, notifications
and e-mails only once a decision commits, and a request finished exactly once."""

from __future__ import annotations

import pytest
from django.core import mail
from django.db import transaction
from django.forms.models import model_to_dict
from django.urls import reverse

from domains.models import AuditEvent, Operation, OperationKind, OperationStatus
from domains.services.common import ActionRefused
from provisioning import services, tasks
from provisioning.models import Notification, RequestState, VMRequest
from tests.helpers import client_for
from tests.test_provisioning_create import make_template

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _submitted(people, hosts, **fields) -> VMRequest:
    return services.submit_request(
        people.victor_viewer, people.team_a, make_template(hosts, **fields), "req-1", 2, 512, "t"
    )


def test_a_template_edit_is_on_record_with_before_and_after(people, hosts):
    template = make_template(hosts, max_vcpus=4)
    data = {k: v for k, v in model_to_dict(template).items() if v is not None}
    data["hosts"] = [hosts.alpha.pk]  # beta no longer
    data["max_vcpus"] = 8

    response = client_for(people.root).post(reverse("template_edit", args=[template.pk]), data)

    assert response.status_code == 303
    event = AuditEvent.objects.get(kind="template_changed")
    assert event.user == people.root
    assert event.detail["before"] == {"hosts": ["alpha", "beta"], "max_vcpus": 4}
    assert event.detail["after"] == {"hosts": ["alpha"], "max_vcpus": 8}
    template.refresh_from_db()
    assert template.max_vcpus == 8 and list(template.hosts.all()) == [hosts.alpha]


def test_only_superusers_save_templates(people, hosts):
    template = make_template(hosts)
    with pytest.raises(ActionRefused) as refused:
        services.save_template(people.alice_admin, template, [hosts.alpha])
    assert refused.value.status == 403
    assert not AuditEvent.objects.filter(kind__startswith="template_").exists()


def test_a_decision_rolled_back_tells_nobody(people, hosts, django_capture_on_commit_callbacks):
    req = _submitted(people, hosts)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                services.reject_request(people.alice_admin, req, "no room")
                raise RuntimeError("the transaction fails after the decision")

    assert mail.outbox == []
    assert not Notification.objects.exists()
    assert VMRequest.objects.get(pk=req.pk).state == RequestState.SUBMITTED


def test_a_decision_that_commits_tells_the_requester_once(
    people, hosts, django_capture_on_commit_callbacks
):
    req = _submitted(people, hosts)
    with django_capture_on_commit_callbacks(execute=True):
        services.reject_request(people.alice_admin, req, "no room")

    assert [m.to for m in mail.outbox] == [[people.victor_viewer.email]]
    assert Notification.objects.get(user=people.victor_viewer).text.endswith("no room")


def test_a_request_is_decided_once(people, hosts):
    req = _submitted(people, hosts)
    stale = VMRequest.objects.get(pk=req.pk)  # a second admin's page, loaded before
    services.reject_request(people.alice_admin, req, "no")

    with pytest.raises(ActionRefused, match="decided meanwhile"):
        services.approve_request(people.root, stale, hosts.alpha)
    assert VMRequest.objects.get(pk=req.pk).state == RequestState.REJECTED
    # Nothing was provisioned; the late approval is on record as refused.
    provisions = Operation.objects.filter(kind=OperationKind.PROVISION)
    assert [op.status for op in provisions] == [OperationStatus.REFUSED]


@pytest.mark.django_db(transaction=True)  # the task commits as it would in a worker
def test_a_redelivered_provisioning_task_changes_nothing(people, hosts):
    """A second delivery finds the operation claimed by the first worker (still running):
    it must neither fail the request nor tell the requester anything."""
    req = _submitted(people, hosts)
    mail.outbox.clear()  # the admins heard of the request itself; that is not the subject
    Notification.objects.all().delete()
    op = Operation.objects.create(
        kind=OperationKind.PROVISION, user=people.alice_admin, host=hosts.alpha,
        team=people.team_a, domain_name=req.name, params={"request": req.pk},
        status=OperationStatus.RUNNING,
    )  # fmt: skip
    VMRequest.objects.filter(pk=req.pk).update(state=RequestState.PROVISIONING, operation=op)

    tasks.provision_domain_task(op.pk)  # runs here, as a redelivery would in a worker

    req.refresh_from_db()
    assert req.state == RequestState.PROVISIONING and req.reason == ""
    assert mail.outbox == [] and not Notification.objects.exists()
    assert Operation.objects.get(pk=op.pk).status == OperationStatus.RUNNING


def test_finishing_a_request_twice_tells_once(people, hosts, django_capture_on_commit_callbacks):
    req = _submitted(people, hosts)
    services.approve_request(people.alice_admin, req, hosts.alpha)
    req.refresh_from_db()
    Operation.objects.filter(pk=req.operation_id).update(status=OperationStatus.SUCCEEDED)
    op = Operation.objects.get(pk=req.operation_id)

    with django_capture_on_commit_callbacks(execute=True):
        services.finish_request(op)
        services.finish_request(op)

    assert VMRequest.objects.get(pk=req.pk).state == RequestState.READY
    assert Notification.objects.filter(user=people.victor_viewer).count() == 1
    assert len(mail.outbox) == 1


def test_a_refused_approval_is_on_record_as_a_refused_provisioning(people, hosts):
    req = _submitted(people, hosts)
    hosts.alpha.enabled = False
    hosts.alpha.save()
    hosts.beta.enabled = False
    hosts.beta.save()

    with pytest.raises(ActionRefused, match="cannot go to that host"):
        services.approve_request(people.alice_admin, req)

    op = Operation.objects.get(kind=OperationKind.PROVISION)
    assert op.status == OperationStatus.REFUSED and op.user == people.alice_admin
    assert op.team == people.team_a and op.params == {"request": req.pk}


def test_a_long_audit_summary_is_cut_to_its_column(people):
    from domains.services.common import audit

    event = audit("test_event", people.root, "x" * 2000, every="detail")
    event.refresh_from_db()
    assert len(event.summary) == 500 and event.summary.endswith("…")
    assert event.detail == {"every": "detail"}
