"""The inventory watcher as it runs in production: a `manage.py watch_inventory` process.

Changes are made through the tests' own libvirt connection, never the panel's, and must
show in the inventory within 2 seconds. With a long reconcile interval only libvirt's
lifecycle events can explain that; a short interval tests the periodic full read.
"""

from __future__ import annotations

import uuid as uuidlib

import pytest

from domains.domxml import SimpleDomain, build_simple_domain, build_snapshot
from domains.models import Domain, Host, State
from tests.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WITHIN = 2  # seconds, from a change in libvirt to the inventory


def appears(host: Host, uuid: str, check=lambda d: True, what: str = "") -> Domain:
    def seen() -> Domain | None:
        row = Domain.objects.filter(host=host, uuid=uuid).first()
        return row if row is not None and check(row) else None

    return wait_for(seen, timeout=WITHIN, what=what or f"{uuid} in the inventory")


def test_lifecycle_events_reach_the_inventory(start_watcher, make_domain, hosts):
    start_watcher(reconcile_seconds=600)  # no full read during the test: events only
    conn = make_domain.libvirt_hosts.conn("alpha")

    uuid = make_domain.define(state="shutoff", name="evented")
    row = appears(hosts.alpha, uuid, lambda d: d.state == State.SHUTOFF, "defined")
    assert row.name == "evented" and row.persistent

    dom = conn.lookupByUUIDString(uuid)
    dom.create()
    appears(hosts.alpha, uuid, lambda d: d.state == State.RUNNING and d.libvirt_id, "started")

    dom.suspend()
    appears(hosts.alpha, uuid, lambda d: d.state == State.PAUSED, "suspended")

    dom.destroy()
    appears(
        hosts.alpha,
        uuid,
        lambda d: d.state == State.SHUTOFF and d.libvirt_id is None,
        "destroyed",
    )

    dom.rename("renamed", 0)
    renamed = appears(hosts.alpha, uuid, lambda d: d.name == "renamed", "renamed")
    assert renamed.pk == row.pk  # identity is the UUID, not the name

    conn.lookupByUUIDString(uuid).undefine()
    gone = appears(hosts.alpha, uuid, lambda d: d.gone_at is not None, "undefined")
    assert gone.pk == row.pk and gone.libvirt_id is None


def test_transient_domain_comes_and_goes(start_watcher, make_domain, hosts):
    start_watcher(reconcile_seconds=600)

    uuid = make_domain.define("beta", state="running", persistent=False)
    appears(hosts.beta, uuid, lambda d: not d.persistent and d.state == State.RUNNING)

    make_domain.libvirt_hosts.conn("beta").lookupByUUIDString(uuid).destroy()
    appears(hosts.beta, uuid, lambda d: d.gone_at is not None, "transient gone")


def test_periodic_reconcile_catches_what_has_no_event(start_watcher, make_domain, hosts):
    """Autostart and snapshots raise no lifecycle event: the full read finds them."""
    uuid = make_domain.define(state="shutoff")
    start_watcher(reconcile_seconds=1)
    appears(hosts.alpha, uuid)
    dom = make_domain.libvirt_hosts.conn("alpha").lookupByUUIDString(uuid)

    dom.setAutostart(1)
    dom.snapshotCreateXML(build_snapshot("s1"), 0)

    appears(hosts.alpha, uuid, lambda d: d.autostart and d.snapshot_count == 1, "reconciled")


def test_restarted_host_is_picked_up_again(start_watcher, make_domain, hosts, libvirt_hosts):
    old = make_domain.define("beta", state="running")
    start_watcher(reconcile_seconds=600)
    appears(hosts.beta, old)

    libvirt_hosts.restart("beta")

    # The daemon came back with a fresh world: the watcher reconnects by itself and its
    # full read on reconnecting finds the old domain gone.
    wait_for(
        lambda: Domain.objects.get(host=hosts.beta, uuid=old).gone_at is not None,
        timeout=5,
        what="the watcher reconnected and reconciled beta",
    )
    new = make_domain.define("beta", state="running")
    appears(hosts.beta, new, lambda d: d.state == State.RUNNING, "defined after the restart")
    # The driver's default domain survived in the inventory as the same row.
    assert Domain.objects.get(host=hosts.beta, name="test").gone_at is None
    # And alpha was never disturbed.
    uuid = make_domain.define("alpha", state="paused")
    appears(hosts.alpha, uuid, lambda d: d.state == State.PAUSED)


def test_host_added_while_running_is_watched(start_watcher, make_domain, hosts, libvirt_hosts):
    start_watcher(reconcile_seconds=600)
    libvirt_hosts.start("gamma")
    try:
        host = Host.objects.create(name="gamma", uri=libvirt_hosts.uri("gamma"))
        wait_for(
            lambda: Host.objects.get(pk=host.pk).last_seen_at is not None,
            timeout=5,
            what="the watcher read the new host",
        )
        uuid = str(uuidlib.uuid4())
        libvirt_hosts.conn("gamma").defineXML(
            build_simple_domain(SimpleDomain(name="on-gamma", uuid=uuid))
        )
        appears(host, uuid)
    finally:
        libvirt_hosts.stop("gamma")


def test_host_that_stops_answering_is_recorded(start_watcher, make_domain, hosts, libvirt_hosts):
    start_watcher(reconcile_seconds=600)
    libvirt_hosts.start("gamma")
    host = Host.objects.create(name="gamma", uri=libvirt_hosts.uri("gamma"))
    wait_for(lambda: Host.objects.get(pk=host.pk).last_seen_at, timeout=5)

    libvirt_hosts.stop("gamma")

    error = wait_for(lambda: Host.objects.get(pk=host.pk).last_error, timeout=5)
    assert "libvirt-sock" in error or "connect" in error.lower()
    # The other hosts are still watched.
    uuid = make_domain.define("alpha", state="running")
    appears(hosts.alpha, uuid)


def test_disabled_host_is_left_alone(start_watcher, make_domain, hosts):
    Host.objects.filter(pk=hosts.beta.pk).update(enabled=False)
    start_watcher(reconcile_seconds=600)

    uuid = make_domain.define("alpha", state="running")
    appears(hosts.alpha, uuid)
    assert not Domain.objects.filter(host=hosts.beta).exists()
    # alpha's event came through, so the watcher has run its passes: beta was skipped.
    assert Host.objects.get(pk=hosts.beta.pk).last_seen_at is None
