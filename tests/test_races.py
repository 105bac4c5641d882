"""Races: the same or conflicting requests at the same moment, as a double click, two
people, or a replayed request under load send them.

Each test fires its requests from threads of its own (each its own test Client and its
own database connection) released together by a barrier, against the real worker and the
test-driver hosts. Where an interleaving needs one request to be slower than the other
(a host that answers late while the other request's operation runs and finishes), the
slow side is a libvirt read that answers only once that has happened: a fault the test
driver cannot produce by itself, injected in the one thread (`slow_reads`).

What must hold whatever the order: at most one operation does the work, the other is
refused in words on its page (never a libvirt error, never a 500), and what is on record
agrees with what libvirt did. PostgreSQL runs the requests truly at once; SQLite
serialises writers, and the same outcomes must hold there too.
"""

from __future__ import annotations

import html
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from datetime import timedelta

import libvirt
import pytest
from django.db import connection
from django.urls import reverse
from django.utils import translation

from domains import domxml, hypervisor, inventory, tasks
from domains.models import (
    AuditEvent,
    Domain,
    Membership,
    Operation,
    OperationKind,
    OperationStatus,
    Role,
    SavedImage,
)
from provisioning.models import Method, Quota, RequestState, VMRequest
from provisioning.services import submit_request
from tests.helpers import client_for, fresh, live, wait_finished, wait_for
from tests.test_provisioning_create import make_template

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]


@pytest.fixture(autouse=True)
def _patient_pages(settings):
    # A quick action's page waits for its operation: long enough for a loaded machine.
    settings.VMPANEL_QUICK_WAIT_SECONDS = 10


# --- firing at once ----------------------------------------------------------------------

_thread = threading.local()


@pytest.fixture
def slow_reads(monkeypatch):
    """libvirt reads in a web request (ping, name lookups) that, in a thread told so
    (`at_once(..., slow={i: condition})`), answer only once `condition()` holds (at most
    15 s): a host slow to answer that one request while the other's operation runs."""
    for name in ("ping", "domain_name_taken"):
        real = getattr(hypervisor, name)

        def slowed(*args, _real=real, **kwargs):
            until = getattr(_thread, "until", None)
            if until is not None:
                _thread.until = None
                deadline = time.monotonic() + 15
                while not until() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return _real(*args, **kwargs)

        monkeypatch.setattr(hypervisor, name, slowed)


def at_once(*calls: Callable[[], object], slow: dict | None = None) -> list:
    """Run each call in a thread of its own, released together; their results in order.

    An exception (a 500 through the test Client) fails the test with it.
    """
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    errors: list = [None] * len(calls)

    def run(i: int, call: Callable[[], object]) -> None:
        try:
            _thread.until = (slow or {}).get(i)
            barrier.wait(timeout=30)
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - reported below, with its thread
            errors[i] = exc
        finally:
            _thread.until = None
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request did not come back"
    for i, exc in enumerate(errors):
        if exc is not None:
            raise AssertionError(f"request {i} failed: {exc!r}") from exc
    return results


# Two processes' clocks (the worker's claim, the web's audit row) on one machine.
_CLOCK_SLACK = timedelta(milliseconds=50)


def text(response) -> str:
    return html.unescape(response.content.decode())


def finished_op(**filters) -> Callable[[], bool]:
    """A condition: an operation matching `filters` has finished."""
    return lambda: Operation.objects.filter(finished_at__isnull=False, **filters).exists()


def settled(ops) -> list[Operation]:
    """Every operation of `ops` that was not refused, once its worker has finished it."""
    return [wait_finished(op, timeout=30) for op in ops.exclude(status=OperationStatus.REFUSED)]


def refused_in_words(response, op: Operation | None = None) -> str:
    """The page of a refused request: 409 (or the form again at 400/409) with the words of
    its refusal, which is on record."""
    assert response.status_code == 409, (response.status_code, text(response)[:300])
    page = text(response)
    refusal = Operation.objects.filter(status=OperationStatus.REFUSED).latest("pk")
    assert refusal.message and refusal.message in page, refusal.message
    if op is not None:
        assert refusal.kind == op.kind
    return refusal.message


# --- a. the same action twice on one VM -----------------------------------------------------

BUTTONS = {
    # kind: (state the VM starts in, who presses, what libvirt then says)
    "start": ("shutoff", "olga_operator", lambda f: f.active),
    "shutdown": ("running", "olga_operator", lambda f: not f.active),
    "reboot": ("running", "olga_operator", lambda f: f.active),
    "suspend": ("running", "olga_operator", lambda f: f.state == libvirt.VIR_DOMAIN_PAUSED),
    "managed_save": ("running", "olga_operator", lambda f: f.managed_save),
    "undefine": ("shutoff", "alice_admin", lambda f: f is None),
}


@pytest.mark.parametrize("host", ["quick", "slow"])
@pytest.mark.parametrize("kind", list(BUTTONS))
def test_a_double_click_on_a_button_does_the_work_once(
    kind, host, people, make_domain, libvirt_hosts, slow_reads
):
    """The same button pressed twice at once (a double click, or two people). "slow": the
    second request's host answers only after the first operation has finished, so that
    its checks were made on what the VM was before."""
    state, who, done = BUTTONS[kind]
    domain = make_domain("alpha", state=state)
    url = reverse("domain_action", args=["alpha", str(domain.uuid), kind])
    clients = [client_for(getattr(people, who)) for _ in range(2)]
    slow = {1: finished_op(domain=domain, kind=kind)} if host == "slow" else None

    responses = at_once(*(lambda c=c: c.post(url, {"confirm": "yes"}) for c in clients), slow=slow)

    ops = Operation.objects.filter(domain=domain, kind=kind)
    worked = ops.exclude(status=OperationStatus.REFUSED)
    assert worked.count() == 1, [(o.pk, o.status, o.message) for o in ops]
    op = wait_finished(worked.get())
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    # The worker took one operation: libvirt was asked once.
    assert ops.filter(started_at__isnull=False).count() == 1
    assert done(live(libvirt_hosts.conn("alpha"), domain.uuid))
    codes = sorted(r.status_code for r in responses)
    assert codes == [303, 409], codes
    refused = next(r for r in responses if r.status_code == 409)
    refused_in_words(refused, op)


@pytest.mark.parametrize("host", ["quick", "slow"])
def test_a_double_click_on_take_snapshot_takes_one(
    host, people, make_domain, libvirt_hosts, slow_reads
):
    domain = make_domain("alpha", state="running")
    url = reverse("domain_snapshot_create", args=["alpha", str(domain.uuid)])
    clients = [client_for(people.olga_operator) for _ in range(2)]
    slow = {1: finished_op(domain=domain)} if host == "slow" else None

    responses = at_once(
        *(lambda c=c: c.post(url, {"name": "before-upgrade"}) for c in clients), slow=slow
    )

    ops = Operation.objects.filter(domain=domain, kind=OperationKind.SNAPSHOT_CREATE)
    worked = settled(ops)
    assert len(worked) == 1, [(o.pk, o.status, o.message, o.error) for o in worked]
    assert ops.filter(started_at__isnull=False).count() == 1
    (op,) = worked
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).snapshots == 1
    assert sorted(r.status_code for r in responses) == [303, 409]
    refused = next(r for r in responses if r.status_code == 409)
    assert ops.get(status=OperationStatus.REFUSED).message in text(refused)


def test_two_vms_saved_to_one_image_name_at_once(people, make_domain, libvirt_hosts, save_dir):
    """Two operators save two VMs to the same image name at the same moment: one image is
    written, the other save refused in words; never one image written over the other."""
    first = make_domain("alpha", state="running")
    second = make_domain("alpha", state="running")
    posts = [
        lambda d=d, u=u: client_for(u).post(
            reverse("domain_save", args=["alpha", str(d.uuid)]), {"image_name": "nightly"}
        )
        for d, u in ((first, people.olga_operator), (second, people.alice_admin))
    ]

    responses = at_once(*posts)

    saves = Operation.objects.filter(kind=OperationKind.SAVE)
    worked = settled(saves)
    assert len(worked) == 1, [(o.pk, o.domain_name, o.status, o.message) for o in worked]
    assert saves.filter(started_at__isnull=False).count() == 1
    (op,) = worked
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    image = SavedImage.objects.get(path=f"{save_dir}/nightly.save")
    assert image.domain_id == op.domain_id
    assert hypervisor.saved_image(op.host.uri, image.path).uuid == str(op.domain_uuid)
    assert sorted(r.status_code for r in responses) == [303, 409]
    refused = next(r for r in responses if r.status_code == 409)
    assert "nightly" in saves.get(status=OperationStatus.REFUSED).message
    assert saves.get(status=OperationStatus.REFUSED).message in text(refused)
    other = second if op.domain_id == first.pk else first
    assert live(libvirt_hosts.conn("alpha"), other.uuid).active  # not saved, still running


# --- clones ------------------------------------------------------------------------------


def domain_on_a_volume(people, make_domain, conn, gib: int = 1) -> Domain:
    """A shut-off domain of team A whose qcow2 disk is a volume of the host's pool."""
    uuid = str(uuidlib.uuid4())
    name = f"orig-{uuid[:6]}"
    pool = conn.storagePoolLookupByName("default-pool")
    vol = pool.createXML(
        f"<volume><name>{name}.qcow2</name><capacity unit='G'>{gib}</capacity>"
        "<target><format type='qcow2'/></target></volume>",
        0,
    )
    xml = domxml.build_simple_domain(
        domxml.SimpleDomain(name=name, uuid=uuid, disk=vol.path(), mac=domxml.generate_mac())
    )
    make_domain.track("alpha", uuid)
    conn.defineXML(xml)
    inventory.reconcile_host(make_domain.hosts.alpha)
    domain = Domain.objects.get(uuid=uuid)
    domain.team = people.team_a
    domain.save(update_fields=["team"])
    return domain


def track_clones(make_domain) -> None:
    for op in Operation.objects.filter(kind=OperationKind.CLONE):
        make_domain.track("alpha", op.params["clone_uuid"])


def clone_post(user, domain: Domain, name: str):
    return lambda: client_for(user).post(
        reverse("domain_clone", args=["alpha", str(domain.uuid)]), {"name": name}
    )


@pytest.mark.parametrize("sources", ["one VM twice", "two VMs"])
def test_two_clones_with_one_new_name_make_one_vm(sources, people, make_domain, libvirt_hosts):
    """Cloning to the same new name at once, from one VM (a double click) or from two:
    one clone is made, the other refused in words before anything is copied."""
    conn = libvirt_hosts.conn("alpha")
    first = domain_on_a_volume(people, make_domain, conn)
    second = first if sources == "one VM twice" else domain_on_a_volume(people, make_domain, conn)
    name = f"copy-{uuidlib.uuid4().hex[:6]}"
    try:
        responses = at_once(
            clone_post(people.alice_admin, first, name),
            clone_post(people.alice_admin, second, name),
        )
    finally:
        track_clones(make_domain)

    clones = Operation.objects.filter(kind=OperationKind.CLONE)
    worked = settled(clones)
    assert len(worked) == 1, [(o.pk, o.status, o.message, o.error) for o in worked]
    assert clones.filter(started_at__isnull=False).count() == 1
    (op,) = worked
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert Domain.objects.present().filter(name=name).count() == 1
    assert sorted(r.status_code for r in responses) == [303, 409]
    refused = next(r for r in responses if r.status_code == 409)
    assert clones.get(status=OperationStatus.REFUSED).message in text(refused)


# --- d. two creations of one name on one host -------------------------------------------


def create_post(user, template, hosts, team, name: str, vcpus: int = 1):
    data = {
        "team": team.pk, "host": hosts.alpha.pk, "name": name, "vcpus": vcpus,
        "memory_mib": 256, "persistent": "on", "confirm": "1",
    }  # fmt: skip
    return lambda: client_for(user).post(reverse("template_create", args=[template.pk]), data)


def track_provisions(make_domain) -> None:
    for op in Operation.objects.filter(kind=OperationKind.PROVISION, domain_uuid__isnull=False):
        make_domain.track(op.host.name, op.domain_uuid)


def test_two_creations_of_one_name_on_one_host(people, hosts, make_domain):
    """Two team admins create a VM of the same name on the same host at once: one is made,
    the other refused in words on the form (not a libvirt error on its operation)."""
    template = make_template(hosts, Method.PXE)
    name = f"twin-{uuidlib.uuid4().hex[:6]}"
    try:
        responses = at_once(
            create_post(people.alice_admin, template, hosts, people.team_a, name),
            create_post(people.root, template, hosts, people.team_a, name),
        )
    finally:
        track_provisions(make_domain)

    made = Operation.objects.filter(kind=OperationKind.PROVISION).exclude(
        status=OperationStatus.REFUSED
    )
    assert made.count() == 1, [(o.pk, o.status, o.message, o.error) for o in made]
    op = wait_finished(made.get())
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert sorted(r.status_code for r in responses) == [303, 409]
    refused = next(r for r in responses if r.status_code == 409)
    words = Operation.objects.get(kind=OperationKind.PROVISION, status=OperationStatus.REFUSED)
    assert name in words.message and words.message in text(refused)


def test_two_requests_for_one_name_submitted_at_once(people, hosts):
    """Two members ask for a VM of the same name at once: one request is made, the other
    refused with the name's words (the two would clash at approval)."""
    template = make_template(hosts, Method.PXE)
    data = {
        "team": people.team_a.pk, "template": template.pk, "name": "same-name", "vcpus": 1,
        "memory_mib": 256, "purpose": "race",
    }  # fmt: skip
    posts = [
        lambda u=u: client_for(u).post(reverse("request_new"), data)
        for u in (people.victor_viewer, people.olga_operator)
    ]

    responses = at_once(*posts)

    assert VMRequest.objects.filter(name="same-name").count() == 1
    codes = sorted(r.status_code for r in responses)
    assert codes == [303, 409], codes
    refused = next(r for r in responses if r.status_code == 409)
    assert "asks for a VM named same-name already" in text(refused)


# --- b. deciding one request twice at once ---------------------------------------------------


@pytest.fixture
def second_admin(people):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("ada_admin", "ada@example.org", "password")
    Membership.objects.create(user=user, team=people.team_a, role=Role.ADMIN)
    return user


def approve_post(user, req: VMRequest, host):
    return lambda: client_for(user).post(
        reverse("request_approve", args=[req.pk]), {"host": host.pk}, follow=True
    )


def reject_post(user, req: VMRequest):
    return lambda: client_for(user).post(
        reverse("request_reject", args=[req.pk]), {"reason": "not now"}, follow=True
    )


def test_two_admins_approve_one_request_at_once(people, hosts, make_domain, second_admin):
    template = make_template(hosts, Method.PXE)
    Quota.objects.create(team=people.team_a, max_domains=5)
    req = submit_request(
        people.victor_viewer, people.team_a, template, "asked-once", 1, 256, "race"
    )
    try:
        responses = at_once(
            approve_post(people.alice_admin, req, hosts.alpha),
            approve_post(second_admin, req, hosts.alpha),
        )
    finally:
        track_provisions(make_domain)

    req.refresh_from_db()
    made = Operation.objects.filter(kind=OperationKind.PROVISION).exclude(
        status=OperationStatus.REFUSED
    )
    assert made.count() == 1 and req.operation == made.get()
    assert AuditEvent.objects.filter(kind="request_approved").count() == 1
    op = wait_finished(made.get())
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    wait_for(lambda: VMRequest.objects.get(pk=req.pk).state == RequestState.READY)
    assert Domain.objects.present().filter(name="asked-once").count() == 1
    from provisioning.services import usage

    assert usage(people.team_a).domains == 1  # counted once
    assert all(r.status_code == 200 for r in responses)
    pages = [text(r) for r in responses]
    loser = req.decided_by == people.alice_admin and pages[1] or pages[0]
    assert "was decided meanwhile" in loser or "is approved already" in loser, loser[:2000]


def test_approve_and_reject_one_request_at_once(people, hosts, make_domain, second_admin):
    template = make_template(hosts, Method.PXE)
    req = submit_request(people.victor_viewer, people.team_a, template, "yes-or-no", 1, 256, "x")
    try:
        responses = at_once(
            approve_post(people.alice_admin, req, hosts.alpha), reject_post(second_admin, req)
        )
    finally:
        track_provisions(make_domain)

    req.refresh_from_db()
    made = Operation.objects.filter(kind=OperationKind.PROVISION).exclude(
        status=OperationStatus.REFUSED
    )
    approvals = AuditEvent.objects.filter(kind="request_approved").count()
    rejections = AuditEvent.objects.filter(kind="request_rejected").count()
    if req.decided_by == people.alice_admin:
        assert req.state != RequestState.REJECTED and req.operation is not None
        assert (made.count(), approvals, rejections) == (1, 1, 0)
        wait_finished(made.get())
        loser = text(responses[1])
    else:
        assert req.state == RequestState.REJECTED and req.operation is None
        assert (made.count(), approvals, rejections) == (0, 0, 1)
        loser = text(responses[0])
    assert all(r.status_code == 200 for r in responses)
    assert "was decided meanwhile" in loser or "already" in loser, loser[:2000]


# --- c. quota: two that each fit, but not together --------------------------------------------

QUOTA_WORDS = "Team A would use"


def test_two_approvals_that_together_overrun_the_quota(people, hosts, make_domain, second_admin):
    template = make_template(hosts, Method.PXE)
    Quota.objects.create(team=people.team_a, max_vcpus=4)
    reqs = [
        submit_request(people.victor_viewer, people.team_a, template, f"big-{i}", 3, 256, "x")
        for i in (1, 2)
    ]
    try:
        responses = at_once(
            approve_post(people.alice_admin, reqs[0], hosts.alpha),
            approve_post(second_admin, reqs[1], hosts.alpha),
        )
    finally:
        track_provisions(make_domain)

    states = sorted(VMRequest.objects.get(pk=r.pk).state for r in reqs)
    assert states.count(RequestState.SUBMITTED) == 1, states
    made = Operation.objects.filter(kind=OperationKind.PROVISION).exclude(
        status=OperationStatus.REFUSED
    )
    assert made.count() == 1
    wait_finished(made.get())
    assert any("Team A would use 6 of 4 vCPUs" in text(r) for r in responses)


def test_two_creations_that_together_overrun_the_quota(people, hosts, make_domain):
    template = make_template(hosts, Method.PXE)
    Quota.objects.create(team=people.team_a, max_vcpus=4)
    try:
        responses = at_once(
            create_post(people.alice_admin, template, hosts, people.team_a, "quota-1", vcpus=3),
            create_post(people.root, template, hosts, people.team_a, "quota-2", vcpus=3),
        )
    finally:
        track_provisions(make_domain)

    made = Operation.objects.filter(kind=OperationKind.PROVISION).exclude(
        status=OperationStatus.REFUSED
    )
    assert made.count() == 1, [(o.domain_name, o.status) for o in made]
    wait_finished(made.get())
    assert sorted(r.status_code for r in responses) == [303, 409]
    refused = next(r for r in responses if r.status_code == 409)
    assert "Team A would use 6 of 4 vCPUs" in text(refused)


def test_a_creation_right_after_another_counts_the_first(people, hosts, make_domain):
    """One after the other, the second before a worker has made the first VM: the first
    counts already (it is on its way), so the second is refused."""
    from provisioning import services

    template = make_template(hosts, Method.PXE)
    Quota.objects.create(team=people.team_a, max_domains=1)
    # The first, queued and not yet taken by a worker (made directly, not sent).
    first = Operation.objects.create(
        kind=OperationKind.PROVISION, user=people.alice_admin, host=hosts.alpha,
        domain_uuid=uuidlib.uuid4(), domain_name="first-one", team=people.team_a,
        params={"vcpus": 1, "memory_mib": 256, "disk_gib": 10, "request": None},
    )  # fmt: skip
    try:
        # In English whatever a page in another language left active in this thread.
        with (
            translation.override("en"),
            pytest.raises(services.ActionRefused, match="Team A would use 2 of 1 VMs"),
        ):
            services.create_domain(
                people.alice_admin, template, hosts.alpha, people.team_a, "second-one", 1,
                256, services.CreateChoice(persistent=True, start=False),
            )  # fmt: skip
    finally:
        Operation.objects.filter(pk=first.pk).update(status=OperationStatus.FAILED)
        track_provisions(make_domain)


def test_a_clone_and_a_creation_that_together_overrun_the_quota(
    people, hosts, make_domain, libvirt_hosts
):
    conn = libvirt_hosts.conn("alpha")
    original = domain_on_a_volume(people, make_domain, conn)  # 1 vCPU, 256 MiB
    template = make_template(hosts, Method.PXE)
    Quota.objects.create(team=people.team_a, max_domains=2)
    try:
        responses = at_once(
            clone_post(people.alice_admin, original, "quota-clone"),
            create_post(people.root, template, hosts, people.team_a, "quota-made"),
        )
    finally:
        track_clones(make_domain)
        track_provisions(make_domain)

    worked = Operation.objects.filter(
        kind__in=[OperationKind.CLONE, OperationKind.PROVISION]
    ).exclude(status=OperationStatus.REFUSED)
    assert worked.count() == 1, [(o.kind, o.status) for o in worked]
    wait_finished(worked.get(), timeout=30)
    assert sorted(r.status_code for r in responses) == [303, 409]
    refused = next(r for r in responses if r.status_code == 409)
    assert "Team A would use 3 of 2 VMs" in text(refused)


def test_two_resizes_that_together_overrun_the_quota(people, make_domain):
    vms = [make_domain("alpha", state="shutoff") for _ in range(2)]  # 1 vCPU each
    Quota.objects.create(team=people.team_a, max_vcpus=3)
    data = {"vcpus": 2, "vcpus_max": 2, "memory_mib": 256, "memory_max_mib": 256,
            "config": "on"}  # fmt: skip
    posts = [
        lambda d=d, u=u: client_for(u).post(
            reverse("domain_resize", args=["alpha", str(d.uuid)]), data
        )
        for d, u in zip(vms, (people.olga_operator, people.alice_admin), strict=True)
    ]

    responses = at_once(*posts)

    resizes = Operation.objects.filter(kind=OperationKind.RESIZE)
    worked = resizes.exclude(status=OperationStatus.REFUSED)
    assert worked.count() == 1, [(o.domain_name, o.status, o.message) for o in resizes]
    op = wait_finished(worked.get())
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert sorted(r.status_code for r in responses) == [303, 409]
    refused = next(r for r in responses if r.status_code == 409)
    assert "Team A would use 4 of 3 vCPUs" in text(refused)
    assert sorted(fresh(d).vcpus for d in vms) == [1, 2]


# --- e. the permission changes while the action is on its way ---------------------------------


def queued(kind: str, user, domain: Domain) -> Operation:
    """An operation queued but not yet taken by a worker (made directly, not sent), as
    one waiting behind others is."""
    return Operation.objects.create(
        kind=kind, user=user, domain=domain, host=domain.host, domain_uuid=domain.uuid,
        domain_name=domain.name, team=domain.team,
    )  # fmt: skip


def test_an_operator_removed_before_their_start_runs(people, make_domain, libvirt_hosts):
    """Olga's start waits in the queue; meanwhile she is taken out of the team. When a
    worker takes it, it is refused in words and the VM stays off."""
    domain = make_domain("alpha", state="shutoff")
    op = queued(OperationKind.START, people.olga_operator, domain)
    client_for(people.alice_admin).post(
        reverse("team_member_remove", args=["team-a", people.olga_operator.pk])
    )
    assert not Membership.objects.filter(user=people.olga_operator).exists()

    tasks.start_domain_task(op.pk)

    op.refresh_from_db()
    assert op.status == OperationStatus.REFUSED, (op.status, op.message)
    assert "olga_operator" in op.message and "nothing was done" in op.message.lower()
    assert not live(libvirt_hosts.conn("alpha"), domain.uuid).active


def test_a_vm_given_to_another_team_before_its_start_runs(people, make_domain, libvirt_hosts):
    domain = make_domain("alpha", state="shutoff")
    op = queued(OperationKind.START, people.olga_operator, domain)
    response = client_for(people.root).post(
        reverse("domain_assign", args=["alpha", str(domain.uuid)]), {"team": "team-b"}
    )
    assert response.status_code == 303

    tasks.start_domain_task(op.pk)

    op.refresh_from_db()
    assert op.status == OperationStatus.REFUSED, (op.status, op.message)
    assert not live(libvirt_hosts.conn("alpha"), domain.uuid).active
    # Team B's operator, who holds it now, may start it.
    response = client_for(people.bob_b).post(
        reverse("domain_action", args=["alpha", str(domain.uuid), "start"])
    )
    assert response.status_code == 303
    done = wait_finished(Operation.objects.filter(domain=domain, user=people.bob_b).get())
    assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)


def test_an_operator_removed_while_pressing_start(people, make_domain, libvirt_hosts):
    """Olga presses start at the moment Alice takes her out of the team: either she was
    still in when a worker took her start (and it ran), or it is refused in words — and
    the record says which, as libvirt does."""
    domain = make_domain("alpha", state="shutoff")
    start = reverse("domain_action", args=["alpha", str(domain.uuid), "start"])
    remove = reverse("team_member_remove", args=["team-a", people.olga_operator.pk])
    olga, alice = client_for(people.olga_operator), client_for(people.alice_admin)

    pressed, removed = at_once(lambda: olga.post(start), lambda: alice.post(remove))

    assert removed.status_code == 303
    assert pressed.status_code in (303, 403, 404), pressed.status_code
    running = live(libvirt_hosts.conn("alpha"), domain.uuid).active
    starts = Operation.objects.filter(domain=domain, kind=OperationKind.START)
    ran = starts.filter(status=OperationStatus.SUCCEEDED)
    assert running == ran.exists()
    if ran.exists():
        gone_at = AuditEvent.objects.get(kind="member_removed").created_at
        assert ran.get().started_at <= gone_at + _CLOCK_SLACK
    for op in starts.exclude(status=OperationStatus.SUCCEEDED):
        assert op.status == OperationStatus.REFUSED and op.message


def test_a_vm_given_away_while_its_old_team_starts_it(people, make_domain, libvirt_hosts):
    domain = make_domain("alpha", state="shutoff")
    start = reverse("domain_action", args=["alpha", str(domain.uuid), "start"])
    assign = reverse("domain_assign", args=["alpha", str(domain.uuid)])
    olga, root = client_for(people.olga_operator), client_for(people.root)

    pressed, assigned = at_once(
        lambda: olga.post(start), lambda: root.post(assign, {"team": "team-b"})
    )

    assert assigned.status_code == 303 and fresh(domain).team == people.team_b
    assert pressed.status_code in (303, 403, 404), pressed.status_code
    running = live(libvirt_hosts.conn("alpha"), domain.uuid).active
    starts = Operation.objects.filter(domain=domain, kind=OperationKind.START)
    ran = starts.filter(status=OperationStatus.SUCCEEDED)
    assert running == ran.exists()
    if ran.exists():
        given_at = AuditEvent.objects.get(kind="domain_assigned").created_at
        assert ran.get().started_at <= given_at + _CLOCK_SLACK
    for op in starts.exclude(status=OperationStatus.SUCCEEDED):
        assert op.status == OperationStatus.REFUSED and op.message


# --- f. cancelling -------------------------------------------------------------------------------


def test_one_operation_cancelled_twice_at_once(people, make_domain, libvirt_hosts):
    domain = make_domain("alpha", state="running")
    op = queued(OperationKind.SAVE, people.olga_operator, domain)
    url = reverse("operation_cancel", args=[op.pk])
    clients = [client_for(people.olga_operator), client_for(people.alice_admin)]

    responses = at_once(*(lambda c=c: c.post(url, follow=True) for c in clients))

    op.refresh_from_db()
    assert op.status == OperationStatus.CANCELLED
    pages = [text(r) for r in responses]
    assert all(r.status_code == 200 for r in responses)
    told = sorted(
        "cancel requested" if "Cancel requested" in p else "finished already"
        for p in pages
        if "Cancel requested" in p or "has finished already" in p
    )
    # The one whose cancel stopped it is told so; the other that it had ended already.
    assert told == ["cancel requested", "finished already"], told
    tasks.save_domain_task(op.pk)  # a late delivery finds nothing to do
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).active


def test_cancel_while_a_worker_takes_the_operation(people, make_domain, libvirt_hosts, save_dir):
    """A cancel at the moment a worker takes a save: it ends in one state, and the page
    says what happened to it."""
    domain = make_domain("alpha", state="running")
    op = queued(OperationKind.SAVE, people.olga_operator, domain)
    path = f"{save_dir}/cancelled.save"
    Operation.objects.filter(pk=op.pk).update(params={"image": "cancelled", "path": path})
    client = client_for(people.olga_operator)

    cancelled, _ran = at_once(
        lambda: client.post(reverse("operation_cancel", args=[op.pk]), follow=True),
        lambda: tasks.save_domain_task(op.pk),
    )

    op.refresh_from_db()
    page = text(cancelled)
    saved = not live(libvirt_hosts.conn("alpha"), domain.uuid).active
    if op.status == OperationStatus.CANCELLED:
        assert not saved and op.started_at is None
    else:
        assert op.status == OperationStatus.SUCCEEDED and saved
        assert "The cancel came too late" in op.message or "has finished already" in page
    assert "Cancel requested" in page or "has finished already" in page
