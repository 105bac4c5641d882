"""A VM's page says everything about it (issue 13, item 2): how long it has been in its
state ("Running for 3 hours, 12 minutes, since 14:05"), kept true by the inventory through
reconcile passes, state changes and migrations; restoring from a saved image goes through
a page that says what will happen; a hibernated VM (managed save) and one saved to an
image look different, in the list and on its page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from domains import inventory, rules
from domains.models import (
    Domain,
    Host,
    Operation,
    OperationKind,
    OperationStatus,
    SavedImage,
    State,
)
from tests.helpers import client_for, fresh, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

NBSP = "\xa0"  # Django's timesince puts one between a number and its unit


def _page(client, domain: Domain, **extra) -> str:
    url = reverse("domain_detail", args=[domain.host.name, domain.uuid])
    return client.get(url, **extra).content.decode()


def _words(html: str) -> str:
    """The page's text with its white space (and Django's no-break spaces) made plain."""
    return re.sub(r"\s+", " ", html.replace(NBSP, " "))


def _since(domain: Domain, ago: timedelta, exact: bool = True) -> None:
    Domain.objects.filter(pk=domain.pk).update(
        state_since=timezone.now() - ago, state_since_exact=exact
    )


def _hhmm(domain: Domain) -> str:
    return timezone.localtime(fresh(domain).state_since).strftime("%H:%M")


# --- since when: the rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    "old,new,goes_on",
    [
        ((State.RUNNING, "booted"), (State.RUNNING, "unpaused"), True),
        ((State.SHUTOFF, "shutdown"), (State.SHUTOFF, "destroyed"), True),
        ((State.RUNNING, "booted"), (State.PAUSED, "user"), False),
        ((State.PAUSED, "user"), (State.RUNNING, "unpaused"), False),
        ((State.RUNNING, "booted"), (State.SHUTOFF, "shutdown"), False),
        # A migration is no change: paused a moment on the source, running on arrival …
        ((State.RUNNING, "booted"), (State.PAUSED, "migration"), True),
        ((State.PAUSED, "migration"), (State.RUNNING, "migrated"), True),
        ((State.PAUSED, "migration"), (State.RUNNING, "migration cancelled"), True),
        ((State.RUNNING, "booted"), (State.SHUTOFF, "migrated"), True),
        ((State.SHUTOFF, "migrated"), (State.RUNNING, "migrated"), True),
        # … but the copy it left behind, started again, is a new start.
        ((State.SHUTOFF, "migrated"), (State.RUNNING, "booted"), False),
        # A start that waits paused a moment starts when it is started.
        ((State.SHUTOFF, "shutdown"), (State.PAUSED, "starting up"), False),
        ((State.PAUSED, "starting up"), (State.RUNNING, "booted"), True),
        ((State.PAUSED, "migration"), (State.PAUSED, "user"), False),
    ],
)
def test_which_changes_restart_the_time_in_a_state(old, new, goes_on):
    assert rules.state_goes_on(old, new) is goes_on


# --- since when: the inventory and the page ----------------------------------------------


def test_a_running_vm_says_since_when_and_a_reconcile_pass_keeps_it(
    people, hosts, make_domain, libvirt_hosts
):
    domain = make_domain(state="running")
    client = client_for(people.olga_operator)
    # The first read of the host: the panel cannot know when it started.
    assert not fresh(domain).state_since_exact
    assert "Running for at least a moment, since the panel first saw it running" in _words(
        _page(client, domain)
    )

    # As the watcher would have recorded a start three hours and twelve minutes ago.
    _since(domain, timedelta(hours=3, minutes=12, seconds=20))
    recorded = fresh(domain).state_since
    text = _words(_page(client, domain))
    assert f"Running for 3 hours, 12 minutes, since {_hhmm(domain)}." in text
    # A reconcile pass and an event's refresh find it running still: the time stays.
    inventory.reconcile_host(hosts.alpha)
    inventory.refresh_domain(hosts.alpha, domain.uuid)
    assert fresh(domain).state_since == recorded
    assert "Running for 3 hours, 12 minutes" in _words(_page(client, domain))

    # Paused: a new state since now, and the panel saw it happen.
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).suspend()
    inventory.reconcile_host(hosts.alpha)
    row = fresh(domain)
    assert row.state == State.PAUSED and row.state_since_exact
    assert timezone.now() - row.state_since < timedelta(seconds=30)
    assert f"Paused for less than a minute, since {_hhmm(domain)}." in _words(_page(client, domain))
    # Shut off, through an event's refresh.
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).destroy()
    inventory.refresh_domain(hosts.alpha, domain.uuid)
    assert "Shut off for less than a minute" in _words(_page(client, domain))


def test_a_change_found_after_a_silence_is_only_at_least(people, hosts, make_domain, libvirt_hosts):
    domain = make_domain(state="running")
    _since(domain, timedelta(days=2))
    # The watcher was silent for an hour: the VM stopped some time in that hour.
    Host.objects.filter(pk=hosts.alpha.pk).update(last_seen_at=timezone.now() - timedelta(hours=1))
    Domain.objects.filter(pk=domain.pk).update(last_seen_at=timezone.now() - timedelta(hours=1))
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).destroy()
    inventory.reconcile_host(hosts.alpha)
    row = fresh(domain)
    assert row.state == State.SHUTOFF and not row.state_since_exact
    text = _words(_page(client_for(people.olga_operator), domain))
    assert "Shut off for at least a moment, since the panel first saw it shut off" in text


def test_a_moved_vm_keeps_its_running_since(people, hosts, make_domain, libvirt_hosts):
    """The guest keeps running through a migration: its row (and its time) follow it. The
    test driver cannot migrate; the hosts are brought to what a migration leaves: the
    guest gone from alpha and running on beta, and the panel moves the row."""
    domain = make_domain(state="running")
    _since(domain, timedelta(hours=5, minutes=1))
    recorded = fresh(domain).state_since
    alpha = libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid))
    xml = alpha.XMLDesc(0)
    make_domain.track("beta", domain.uuid)
    libvirt_hosts.conn("beta").createXML(xml, 0)
    alpha.destroy()
    alpha.undefine()
    assert inventory.refresh_domain(hosts.alpha, domain.uuid) is None  # gone from alpha

    moved = inventory.move_domain(fresh(domain), hosts.beta)
    assert (moved.pk, moved.host, moved.state) == (domain.pk, hosts.beta, State.RUNNING)
    assert moved.state_since == recorded and moved.state_since_exact
    inventory.reconcile_host(hosts.beta)
    assert fresh(domain).state_since == recorded
    assert "Running for 5 hours, 1 minute" in _words(_page(client_for(people.olga_operator), moved))


@pytest.mark.usefixtures("watcher_beat")
def test_the_kept_vm_page_moves_on_with_the_time(people, make_domain):
    """The page is kept per content, and an open page's poll is answered "unchanged" (204)
    while nothing was written. The elapsed time moves on without a write: the page a poll
    gets once its minute has passed says the new time, never the old one."""
    domain = make_domain(state="running")
    # Ten minutes and 58.5 seconds ago: "10 minutes" now, "11 minutes" in a moment.
    _since(domain, timedelta(minutes=10, seconds=58.5))
    client = client_for(people.olga_operator)
    _page(client, domain)  # the CSRF cookie is set: from here on, kept
    first = _page(client, domain)
    assert "Running for 10 minutes," in _words(first)
    version = re.search(r"since=([0-9a-f]+)", first).group(1)
    url = reverse("domain_detail", args=[domain.host.name, domain.uuid])

    def poll() -> str:
        answer = client.get(url, {"since": version}, HTTP_HX_REQUEST="true")
        return answer.content.decode() if answer.status_code == 200 else ""

    assert poll() == ""  # unchanged: 204
    # (Another fact may change first, the screen's thumbnail say: the page it brings must
    # still come to say the new minute.)
    wait_for(
        lambda: "Running for 11 minutes," in _words(poll()),
        timeout=10, interval=0.2, what="a poll brings the next minute",
    )  # fmt: skip
    assert "Running for 11 minutes," in _words(_page(client, domain))


# --- restore through a confirmation page ---------------------------------------------------


def _image(domain: Domain, by=None, ago: timedelta = timedelta(hours=1)) -> SavedImage:
    op = None
    if by is not None:
        op = Operation.objects.create(
            kind=OperationKind.SAVE, user=by, domain=domain, host=domain.host,
            domain_uuid=domain.uuid, domain_name=domain.name, team=domain.team,
            status=OperationStatus.SUCCEEDED,
        )  # fmt: skip
    return SavedImage.objects.create(
        host=domain.host, path=f"/var/lib/libvirt/save/{domain.name}.save", domain=domain,
        domain_uuid=domain.uuid, domain_name=domain.name, memory_kib=262144,
        team=domain.team, operation=op, created_at=timezone.now() - ago,
    )  # fmt: skip


def _restore_url(image: SavedImage) -> str:
    return reverse("image_restore", args=[image.host.name, image.pk])


def test_restore_asks_first_and_only_its_post_queues_it(people, make_domain):
    domain = make_domain(state="shutoff")
    image = _image(domain, by=people.olga_operator)
    client = client_for(people.olga_operator)
    # The VM page offers the confirmation (a link), no button that restores at once.
    vm_page = _page(client, domain)
    assert f'href="{_restore_url(image)}"' in vm_page
    assert f'action="{_restore_url(image)}"' not in vm_page

    page = client.get(_restore_url(image))
    text = _words(page.content.decode())
    assert page.status_code == 200
    # The save page's warnings, and the image's time, size and who saved it.
    assert "The image holds the memory only" in text
    assert f"exactly as they were at {timezone.localtime(image.created_at):%Y-%m-%d %H:%M}" in text
    assert "clock is not advanced" in text and "A temporary VM is gone once saved" in text
    assert image.path in text and "256 MiB" in text and "olga_operator" in text
    assert f"{domain.name} is shut off on alpha: it starts from this image" in text
    assert 'name="confirm" value="yes"' in text
    assert not Operation.objects.filter(kind=OperationKind.RESTORE).exists()

    # A POST without the page's confirmation (an old page's button) only asks again.
    again = client.post(_restore_url(image))
    assert again.status_code == 400 and "The image holds the memory only" in _words(
        again.content.decode()
    )
    assert not Operation.objects.filter(kind=OperationKind.RESTORE).exists()

    done = client.post(_restore_url(image), {"confirm": "yes"})
    op = Operation.objects.get(kind=OperationKind.RESTORE)
    assert done.status_code == 303 and done["Location"] == f"/operations/{op.pk}/"
    assert (op.status, op.user, op.domain, op.params["path"]) == (
        OperationStatus.QUEUED, people.olga_operator, domain, image.path,
    )  # fmt: skip


def test_restore_page_says_what_happens_to_the_vm_as_it_is_now(
    people, hosts, make_domain, libvirt_hosts
):
    domain = make_domain(state="running")
    image = _image(domain, ago=timedelta(days=1))
    client = client_for(people.olga_operator)
    text = _words(client.get(_restore_url(image)).content.decode())
    assert f"{domain.name} is running on alpha now: the restore would be refused" in text
    assert ">Restore</button>" not in text  # nothing to press while it runs
    # Its record shows it started after the save; the same guest is defined on beta too.
    Operation.objects.create(
        kind=OperationKind.START, user=people.olga_operator, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, domain_name=domain.name, team=domain.team,
        status=OperationStatus.SUCCEEDED,
    )  # fmt: skip
    Domain.objects.create(host=hosts.beta, uuid=domain.uuid, name=domain.name, team=domain.team)
    text = _words(client.get(_restore_url(image)).content.decode())
    assert f"The panel's record shows {domain.name} running again after this image" in text
    assert "may damage its file systems" in text
    assert "same identity (UUID) is defined on beta" in text

    # A temporary VM, saved away: gone from its host, restoring brings it back.
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).destroy()
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).undefine()
    inventory.reconcile_host(hosts.alpha)
    assert fresh(domain).gone_at is not None
    page = client.get(_restore_url(image))
    text = _words(page.content.decode())
    assert f"{domain.name} is not defined on alpha now" in text and ">Restore</button>" in text

    # A viewer sees the VM but may not restore: no confirmation page either.
    assert client_for(people.victor_viewer).get(_restore_url(image)).status_code == 403


def test_the_host_page_restores_through_the_same_confirmation(people, make_domain):
    domain = make_domain(state="shutoff")
    image = _image(domain)
    html = client_for(people.root).get(reverse("host_detail", args=["alpha"])).content.decode()
    assert f'href="{_restore_url(image)}"' in html
    assert f'action="{_restore_url(image)}"' not in html


# --- hibernated and saved to an image ------------------------------------------------------

HIBERNATED = "Hibernated — starts where it left off"


def _row_of(html: str, name: str) -> str:
    return next(row for row in html.split("<tr") if f">{name}</a>" in row).split("</tr>")[0]


def test_hibernated_and_saved_to_an_image_look_different(people, make_domain):
    hibernated = make_domain(state="running", managed_save=True)
    imaged = make_domain(state="shutoff")
    _image(imaged)
    SavedImage.objects.create(
        host=imaged.host, path="/var/lib/libvirt/save/second.save", domain=imaged,
        domain_uuid=imaged.uuid, domain_name=imaged.name, team=imaged.team,
    )  # fmt: skip
    plain = make_domain(state="shutoff")
    client = client_for(people.olga_operator)

    listing = client.get(reverse("domain_list")).content.decode()
    assert HIBERNATED in _row_of(listing, hibernated.name)
    assert "Saved to an image" not in _row_of(listing, hibernated.name)
    assert "Saved to an image (2)" in _row_of(listing, imaged.name)
    assert HIBERNATED not in _row_of(listing, imaged.name)
    plain_row = _row_of(listing, plain.name)
    assert HIBERNATED not in plain_row and "Saved to an image" not in plain_row
    # Under the table, one line says what each means.
    assert "Start resumes it with its programs still open" in listing
    assert "open the VM to restore one" in listing

    page = _words(_page(client, hibernated))
    assert f'<span class="badge badge-hibernated">{HIBERNATED}</span>' in page
    assert "Start resumes it where it left off" in page and "Saved to an image" not in page
    page = _words(_page(client, imaged))
    assert '<span class="badge badge-image">Saved to an image (2)</span>' in page
    assert "2 copies of its memory are kept in files on the host" in page
    assert HIBERNATED not in page


def test_the_list_without_either_has_no_legend(people, make_domain):
    make_domain(state="running")
    listing = client_for(people.olga_operator).get(reverse("domain_list")).content.decode()
    assert 'class="legend"' not in listing
