"""Self-service requests and quotas: submit → approve → ready, submit → reject, each role,
quotas at and over the edge, notifications and e-mail."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from domains.models import AuditEvent, Domain, OperationStatus
from domains.services.common import ActionRefused
from provisioning import services
from provisioning.models import Method, Notification, Quota, RequestState, VMRequest
from tests.helpers import client_for, live, wait_finished, wait_for
from tests.test_provisioning_create import make_template

pytestmark = [pytest.mark.integration]


def submit(people, who, template, name="req-1", vcpus=2, memory_mib=512):
    return services.submit_request(
        getattr(people, who), people.team_a, template, name, vcpus, memory_mib, "testing"
    )


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["victor_viewer", "olga_operator", "alice_admin", "root"])
def test_every_member_may_submit(who, people, hosts):
    req = submit(people, who, make_template(hosts))
    assert req.state == RequestState.SUBMITTED and req.requester == getattr(people, who)
    assert AuditEvent.objects.get(kind="request_submitted").team == people.team_a


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["bob_b", "nora_noteam"])
def test_outsiders_cannot_submit(who, people, hosts):
    with pytest.raises(ActionRefused) as refused:
        submit(people, who, make_template(hosts))
    assert refused.value.status == 404
    assert not VMRequest.objects.exists()


@pytest.mark.django_db
def test_template_bounds_are_enforced(people, hosts):
    template = make_template(hosts, max_vcpus=2, max_memory_mib=1024)
    with pytest.raises(ActionRefused, match="allows 1 to 2 vCPUs"):
        submit(people, "victor_viewer", template, vcpus=3)
    with pytest.raises(ActionRefused, match="allows 128 to 1024 MiB"):
        submit(people, "victor_viewer", template, memory_mib=2048)
    assert AuditEvent.objects.filter(kind="request_refused").count() == 2


@pytest.mark.django_db
def test_a_name_taken_by_a_vm_or_a_request_is_refused_at_submit(people, hosts, make_domain):
    template = make_template(hosts)
    make_domain("alpha", name="web-7", team="b")  # another team's: the host's name is taken
    with pytest.raises(ActionRefused, match="A VM named web-7 exists already on alpha"):
        submit(people, "victor_viewer", template, name="web-7")
    first = submit(people, "victor_viewer", template, name="web-8")
    with pytest.raises(ActionRefused, match=f"Request #{first.pk} asks for a VM named web-8"):
        submit(people, "olga_operator", template, name="web-8")
    assert VMRequest.objects.count() == 1
    assert AuditEvent.objects.filter(kind="request_refused").count() == 2


@pytest.mark.django_db
def test_quota_at_and_over_the_edge(people, hosts, make_domain):
    template = make_template(hosts, disk_gib=10)
    make_domain("alpha", vcpus=4, memory_mib=1024)  # team A uses 1 domain, 4 vCPUs
    Quota.objects.create(
        team=people.team_a, max_domains=3, max_vcpus=8, max_memory_mib=4096, max_disk_gib=20
    )
    # 4 + 4 = 8 of 8: exactly at the limit is allowed.
    first = submit(people, "victor_viewer", template, name="edge", vcpus=4)
    services.approve_request(people.alice_admin, first, hosts.alpha)
    # One more vCPU is over: the refusal gives the numbers.
    with pytest.raises(ActionRefused, match="Team A would use 9 of 8 vCPUs"):
        submit(people, "victor_viewer", template, name="over", vcpus=1)
    assert services.usage(people.team_a) == services.Usage(2, 8, 1536, 10)
    # Disk: 10 approved + 10 more = 20 of 20 is allowed once vCPUs fit.
    Quota.objects.filter(team=people.team_a).update(max_vcpus=9, max_disk_gib=19)
    with pytest.raises(ActionRefused, match="would use 20 of 19 GiB of disk"):
        submit(people, "victor_viewer", template, name="disk", vcpus=1)


@pytest.mark.django_db
def test_approval_rechecks_the_quota(people, hosts):
    template = make_template(hosts)
    req = submit(people, "victor_viewer", template, vcpus=4)
    Quota.objects.create(team=people.team_a, max_vcpus=2)
    with pytest.raises(ActionRefused, match="would use 4 of 2 vCPUs"):
        services.approve_request(people.alice_admin, req, hosts.alpha)
    assert VMRequest.objects.get(pk=req.pk).state == RequestState.SUBMITTED


@pytest.mark.django_db
@pytest.mark.parametrize(
    "who,status", [("victor_viewer", 403), ("olga_operator", 403), ("bob_b", 404)]
)
def test_only_team_admins_decide(who, status, people, hosts):
    req = submit(people, "victor_viewer", make_template(hosts))
    for decide in (
        lambda u: services.approve_request(u, req, hosts.alpha),
        lambda u: services.reject_request(u, req, "no"),
    ):
        with pytest.raises(ActionRefused) as refused:
            decide(getattr(people, who))
        assert refused.value.status == status
    assert VMRequest.objects.get(pk=req.pk).state == RequestState.SUBMITTED


@pytest.mark.django_db
def test_submit_then_reject(people, hosts, django_capture_on_commit_callbacks):
    req = submit(people, "victor_viewer", make_template(hosts))
    with django_capture_on_commit_callbacks(execute=True):  # the requester is told on commit
        services.reject_request(people.alice_admin, req, "use the shared box")
    req.refresh_from_db()
    assert (req.state, req.decided_by, req.reason) == (
        RequestState.REJECTED,
        people.alice_admin,
        "use the shared box",
    )
    note = Notification.objects.get(user=people.victor_viewer)
    assert "rejected: use the shared box" in note.text
    assert mail.outbox[-1].to == ["victor_viewer@example.org"]
    assert AuditEvent.objects.filter(kind="request_rejected").exists()
    with pytest.raises(ActionRefused, match="rejected already"):
        services.approve_request(people.alice_admin, req, hosts.alpha)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_submit_approve_ready(people, hosts, libvirt_hosts, make_domain, settings):
    template = make_template(hosts, Method.PXE)
    req = submit(people, "victor_viewer", template, name="self-1")
    services.approve_request(people.alice_admin, req, hosts.beta)
    req.refresh_from_db()
    assert req.operation is not None and req.host == hosts.beta
    make_domain.track("beta", req.operation.domain_uuid)
    op = wait_finished(req.operation)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    req = wait_for(
        lambda: VMRequest.objects.filter(pk=req.pk, state=RequestState.READY).first(),
        what="request ready",
    )
    row = Domain.objects.get(host=hosts.beta, uuid=op.domain_uuid)
    assert row.team == people.team_a and row.name == "self-1"
    assert live(libvirt_hosts.conn("beta"), op.domain_uuid).persistent
    texts = list(
        Notification.objects.filter(user=people.victor_viewer).values_list("text", flat=True)
    )
    assert any("approved" in t for t in texts) and any("self-1 is ready" in t for t in texts)


@pytest.mark.django_db
def test_pages_walk_a_request(people, hosts, django_capture_on_commit_callbacks):
    template = make_template(hosts)
    viewer = client_for(people.victor_viewer)
    response = viewer.post(
        reverse("request_new"),
        {
            "team": people.team_a.pk,
            "template": template.pk,
            "name": "web-1",
            "vcpus": 1,
            "memory_mib": 256,
            "purpose": "a web server",
        },
    )
    assert response.status_code == 303
    req = VMRequest.objects.get()
    assert viewer.get(reverse("request_list")).context["mine"][0] == req
    admin = client_for(people.alice_admin)
    page = admin.get(reverse("request_detail", args=[req.pk]))
    assert page.context["may_decide"]
    assert list(admin.get(reverse("request_list")).context["to_decide"]) == [req]
    with django_capture_on_commit_callbacks(execute=True):  # the requester is told on commit
        response = admin.post(reverse("request_reject", args=[req.pk]), {"reason": "no room"})
    assert response.status_code == 303
    assert VMRequest.objects.get().state == RequestState.REJECTED
    assert "no room" in viewer.get(reverse("notification_list")).content.decode()
    viewer.post(reverse("notification_read"))
    assert not Notification.objects.filter(read_at__isnull=True).exists()


@pytest.mark.django_db
def test_quota_page_and_edit(people, hosts):
    url = reverse("team_quota", args=["team-a"])
    assert client_for(people.victor_viewer).get(url).status_code == 200
    assert client_for(people.bob_b).get(url).status_code == 404
    data = {"max_domains": 2, "max_vcpus": 4, "max_memory_mib": 2048, "max_disk_gib": 50}
    assert client_for(people.alice_admin).post(url, data).status_code == 403
    assert client_for(people.root).post(url, data).status_code == 303
    assert Quota.objects.get(team=people.team_a).max_vcpus == 4


@pytest.mark.django_db
def test_direct_creation_over_quota_is_refused_with_the_numbers(people, hosts):
    Quota.objects.create(team=people.team_a, max_memory_mib=1000)
    with pytest.raises(ActionRefused, match="Team A would use 1024 of 1000 MiB of memory"):
        services.create_domain(
            people.alice_admin, make_template(hosts), hosts.alpha, people.team_a,
            "big-1", 1, 1024, services.CreateChoice(),
        )  # fmt: skip
    from domains.models import Operation

    assert Operation.objects.get().status == OperationStatus.REFUSED


@pytest.mark.django_db
def test_failed_provisioning_fails_the_request_and_tells_the_requester(
    people, hosts, django_capture_on_commit_callbacks
):
    from domains.models import Operation, OperationKind

    req = submit(people, "victor_viewer", make_template(hosts))
    op = Operation.objects.create(
        kind=OperationKind.PROVISION,
        host=hosts.alpha,
        team=people.team_a,
        params={"request": req.pk},
        status=OperationStatus.FAILED,
        message="Phase 1 failed: the installer did not power off.",
    )
    VMRequest.objects.filter(pk=req.pk).update(state=RequestState.PROVISIONING, operation=op)
    with django_capture_on_commit_callbacks(execute=True):  # the requester is told on commit
        services.finish_request(op)
    req.refresh_from_db()
    assert req.state == RequestState.FAILED and "Phase 1 failed" in req.reason
    assert "failed" in Notification.objects.get(user=people.victor_viewer).text
    assert len(mail.outbox) == 1


def test_operation_without_a_domain_is_seen_by_its_team_only(people, hosts):
    from domains.models import Operation, OperationKind, OperationStatus
    from tests.helpers import client_for

    op = Operation.objects.create(
        kind=OperationKind.PROVISION,
        user=people.alice_admin,
        host=hosts.alpha,
        domain_name="not-yet",
        team=people.team_a,
        status=OperationStatus.RUNNING,
    )
    assert client_for(people.victor_viewer).get(f"/operations/{op.pk}/").status_code == 200
    assert client_for(people.bob_b).get(f"/operations/{op.pk}/").status_code == 404
    assert client_for(people.nora_noteam).get(f"/operations/{op.pk}/").status_code == 404


@pytest.mark.django_db
def test_the_quota_page_warns_when_a_limit_is_below_use(people, hosts, make_domain):
    make_domain("alpha", vcpus=4, memory_mib=1024)
    client = client_for(people.root)
    data = {"max_domains": 5, "max_vcpus": 2, "max_memory_mib": 4096, "max_disk_gib": 50}
    response = client.post(reverse("team_quota", args=["team-a"]), data, follow=True)
    page = response.content.decode()
    assert "Team A uses 4 vCPUs, more than its limit of 2" in page
    assert "MiB of memory, more than" not in page  # only what is over
    # Everyone who may see the page sees it.
    page = client_for(people.victor_viewer).get(reverse("team_quota", args=["team-a"]))
    assert "more than its limit of 2" in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_new_request_tells_the_teams_admins(people, hosts):
    people.alice_admin.email = "alice@example.org"
    people.alice_admin.save()
    req = submit(people, "victor_viewer", make_template(hosts), name="asked-9", vcpus=2)
    note = Notification.objects.get(user=people.alice_admin)
    assert "victor_viewer asks for asked-9 (2 vCPUs, 512 MiB)" in note.text
    assert note.url == reverse("request_detail", args=[req.pk])
    assert [m.to for m in mail.outbox] == [["alice@example.org"]]
    # Nobody else: not the asker, not the operator, not another team.
    assert Notification.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_navigation_counts_what_waits_for_each_person(people, hosts):
    submit(people, "victor_viewer", make_template(hosts), name="asked-10")

    def counts(person) -> str:
        response = client_for(person).get(reverse("nav_counts"))
        assert response.status_code == 200 and response["Cache-Control"] == "no-store"
        return response.content.decode()

    # Team A's admin: one request to decide, one notification about it.
    page = counts(people.alice_admin)
    assert re.search(r'id="nav-requests-count".*>1<span class="visually-hidden"> waiting', page)
    assert re.search(r'id="nav-notifications-count".*>1<span class="visually-hidden"> unread', page)
    # The asker and an operator decide nothing; another team sees nothing.
    for person in (people.victor_viewer, people.olga_operator, people.bob_b):
        assert "nav-count" not in counts(person)
    assert ">1<" in counts(people.root)  # superusers decide every team's requests
    # Read: the notification count goes.
    client_for(people.alice_admin).post(reverse("notification_read"))
    assert "unread" not in counts(people.alice_admin)
