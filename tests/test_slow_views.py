"""The pages of the slow operations: save (with the guide's warnings), restore from the
host and domain pages, the migration form with every flag, progress and cancel."""

from __future__ import annotations

import re

import pytest

from domains.models import Operation, OperationKind, OperationStatus, SavedImage
from tests.helpers import client_for, fresh, wait_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_save_page_warns_as_the_guide_does(people, make_domain, save_dir):
    domain = make_domain("alpha", state="running")
    page = client_for(people.olga_operator).get(f"/domains/alpha/{domain.uuid}/save/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "memory only" in text and "clock is not advanced" in text
    assert str(save_dir) in text


def test_save_and_restore_through_the_pages(
    people, make_domain, save_dir, celery_worker, libvirt_hosts
):
    domain = make_domain("alpha", state="running")
    client = client_for(people.olga_operator)
    response = client.post(f"/domains/alpha/{domain.uuid}/save/", {"image_name": "nightly"})
    op = Operation.objects.get(kind=OperationKind.SAVE)
    assert response.status_code == 303
    assert response["Location"] == f"/operations/{op.pk}/"
    assert wait_finished(op).status == OperationStatus.SUCCEEDED
    # The domain page lists the image with a Restore button; the host page reads inside it.
    detail = client.get(f"/domains/alpha/{domain.uuid}/").content.decode()
    image = SavedImage.objects.get()
    assert image.path in detail and f"/hosts/alpha/images/{image.pk}/restore/" in detail
    host_page = client_for(people.root).get("/hosts/alpha/").content.decode()
    assert image.path in host_page and domain.name in host_page and "256 MiB" in host_page

    response = client.post(f"/hosts/alpha/images/{image.pk}/restore/", {"confirm": "yes"})
    op = Operation.objects.get(kind=OperationKind.RESTORE)
    assert response.status_code == 303 and wait_finished(op).status == OperationStatus.SUCCEEDED
    assert fresh(domain).state_reason == "restored"


def test_save_with_a_bad_name_says_so_and_saves_nothing(people, make_domain, save_dir):
    domain = make_domain("alpha", state="running")
    response = client_for(people.olga_operator).post(
        f"/domains/alpha/{domain.uuid}/save/", {"image_name": "../../etc/shadow"}
    )
    assert response.status_code == 409  # refused, like every refused action, form shown again
    assert "letters, digits" in response.content.decode()
    assert not Operation.objects.exclude(status=OperationStatus.REFUSED).exists()
    assert not any(save_dir.iterdir())


def test_migration_form_offers_plain_choices_and_flags_only_to_admins(people, make_domain):
    """Issue 13, item 1: plain choices first; libvirt's flags behind "Advanced" for team
    admins (and superusers, who also get the free destination URI)."""
    domain = make_domain("alpha", state="running")
    operator = client_for(people.olga_operator).get(f"/domains/alpha/{domain.uuid}/migrate/")
    text = operator.content.decode()
    assert "Move while it runs" in text and "Also copy the disks" in text
    assert "Limit the speed (MiB/s)" in text
    assert re.search(r'<input type="radio" name="how" value="live"[^>]* checked', text)
    assert 'name="flags"' not in text and "Advanced" not in text
    assert 'name="migrate_uri"' not in text

    admin = client_for(people.alice_admin).get(f"/domains/alpha/{domain.uuid}/migrate/")
    text = admin.content.decode()
    assert "Advanced" in text and 'name="migrate_uri"' in text
    for flag in (
        "PEER2PEER", "TUNNELLED", "PERSIST_DEST", "UNDEFINE_SOURCE", "PAUSED",
        "NON_SHARED_INC", "CHANGE_PROTECTION", "UNSAFE",
    ):  # fmt: skip
        assert f'value="{flag}"' in text
    for default in ("PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE"):
        assert f'value="{default}" checked' in text
    assert 'value="TUNNELLED" checked' not in text
    # Only superusers get the free destination URI.
    assert 'name="destination_uri"' not in text
    root_page = client_for(people.root).get(f"/domains/alpha/{domain.uuid}/migrate/")
    assert 'name="destination_uri"' in root_page.content.decode()
    # A shut-off VM is offered the offline move first.
    stopped = make_domain("alpha", state="shutoff")
    page = client_for(people.olga_operator).get(f"/domains/alpha/{stopped.uuid}/migrate/")
    assert (
        'value="offline"' in page.content.decode() and 'value="live"' not in page.content.decode()
    )
    assert page.context["form"]["how"].value() == "offline"


@pytest.mark.parametrize(
    "who,data,flags",
    [
        # An operator's plain choices carry the defaults the advanced fold would have.
        (
            "olga_operator", {"how": "live"},
            ["LIVE", "PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE"],
        ),
        (
            "olga_operator", {"how": "paused", "copy_disks": "on"},
            ["NON_SHARED_DISK", "PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE"],
        ),
        # A team admin's ticks in the fold are the rest.
        ("alice_admin", {"how": "live", "flags": ["PEER2PEER", "PERSIST_DEST"]},
         ["LIVE", "PEER2PEER", "PERSIST_DEST"]),
    ],
)  # fmt: skip
def test_migration_plain_choices_become_flags(people, make_domain, who, data, flags):
    domain = make_domain("alpha", state="running")
    response = client_for(getattr(people, who)).post(
        f"/domains/alpha/{domain.uuid}/migrate/", {"destination": "beta", **data}
    )
    assert response.status_code == 303, response.content.decode()[:2000]
    op = Operation.objects.get(kind=OperationKind.MIGRATE)
    assert op.params["flags"] == flags


def test_an_operator_cannot_post_admin_flags(people, make_domain):
    domain = make_domain("alpha", state="running")
    response = client_for(people.olga_operator).post(
        f"/domains/alpha/{domain.uuid}/migrate/",
        {"destination": "beta", "how": "live", "flags": ["UNSAFE", "PEER2PEER"]},
    )
    assert response.status_code == 400
    assert "Only a team admin may choose these libvirt flags: UNSAFE." in response.content.decode()
    assert not Operation.objects.exists()


def test_migration_refusal_is_shown_before_libvirt(people, make_domain):
    domain = make_domain("alpha", state="running")
    response = client_for(people.alice_admin).post(
        f"/domains/alpha/{domain.uuid}/migrate/",
        {"destination": "beta", "flags": ["LIVE", "TUNNELLED"]},
    )
    assert response.status_code == 409
    assert "peer-to-peer" in response.content.decode()
    assert not Operation.objects.exclude(status=OperationStatus.REFUSED).exists()


def test_running_operation_shows_progress_and_cancel(people, make_domain):
    domain = make_domain("alpha", state="running")
    op = Operation.objects.create(
        kind=OperationKind.MIGRATE, user=people.olga_operator, domain=domain,
        host=domain.host, domain_uuid=domain.uuid, team=domain.team,
        status=OperationStatus.RUNNING, progress=42,
        progress_detail={
            "operation": "migration out", "data_total": 300 * 2**20,
            "data_processed": 126 * 2**20, "data_remaining": 174 * 2**20,
            "memory_bps": 5 * 2**20, "disk_total": 0, "disk_processed": 0,
        },
    )  # fmt: skip
    text = client_for(people.olga_operator).get(f"/operations/{op.pk}/").content.decode()
    assert "126.0 MiB of 300.0 MiB" in text and "5.0 MiB/s" in text and "migration out" in text
    assert f"/operations/{op.pk}/cancel/" in text and 'hx-trigger="every 1s"' in text
    # A viewer sees the progress but no Cancel button.
    viewer = client_for(people.victor_viewer).get(f"/operations/{op.pk}/").content.decode()
    assert "126.0 MiB" in viewer and f"/operations/{op.pk}/cancel/" not in viewer

    response = client_for(people.olga_operator).post(f"/operations/{op.pk}/cancel/")
    assert response.status_code == 303
    assert Operation.objects.get(pk=op.pk).cancel_requested


@pytest.mark.parametrize(
    "who,field,value",
    [
        ("alice_admin", "migrate_uri", "exec:cat /etc/shadow"),
        ("alice_admin", "listen_address", "10.0.0.2/8"),
        ("olga_operator", "migrate_uri", "tcp://10.0.0.2"),  # an admin's setting
        ("root", "destination_uri", "test:///etc/shadow"),
        ("root", "destination_uri", "qemu:///session"),
    ],
)
def test_migration_form_checks_uris_and_addresses(people, make_domain, who, field, value):
    """Issue 8, item 3: a form error, before libvirt is asked, and never libvirt's words."""
    domain = make_domain("alpha", state="running")
    data = {"flags": ["LIVE", "PEER2PEER", "PERSIST_DEST"], field: value}
    if field != "destination_uri":
        data["destination"] = "beta"
    response = client_for(getattr(people, who)).post(f"/domains/alpha/{domain.uuid}/migrate/", data)
    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert "root:" not in response.content.decode()
    assert not Operation.objects.exists()
