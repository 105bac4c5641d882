"""The inventory: reconcile against a real libvirt, gone domains, and the list filters.

Domains are made through the tests' own libvirt connection; the inventory is read by the
application's code (`inventory.reconcile_host`) and checked against what libvirt says.
"""

from __future__ import annotations

import itertools
import uuid as uuidlib

import libvirt
import pytest

from domains import inventory
from domains.models import LIST_FILTERS, Domain, Host, Operation, OperationStatus, State
from domains.services.common import ActionRefused
from tests.helpers import LIST_FLAGS, button_service, fresh

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

TEST_DRIVER_DEFAULT_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


def row(host: Host, uuid: str) -> Domain:
    return Domain.objects.get(host=host, uuid=uuid)


def test_reconcile_records_every_state_the_test_driver_shows(make_domain, hosts):
    made = {
        "running": make_domain.define(state="running", vcpus=2, memory_mib=384),
        "paused": make_domain.define(state="paused"),
        "shutoff": make_domain.define(state="shutoff"),
        "transient": make_domain.define(state="running", persistent=False),
        "transient_paused": make_domain.define(state="paused", persistent=False),
        "autostart": make_domain.define(state="shutoff", autostart=True),
        "managed_save": make_domain.define(managed_save=True),
        "snapshots": make_domain.define(state="running", snapshots=2),
    }

    changes = inventory.reconcile_host(hosts.alpha)

    assert changes >= len(made)
    expected = {
        # key: (state, reason, active, persistent, autostart, managed save, snapshots)
        "running": (State.RUNNING, "booted", True, True, False, False, 0),
        "paused": (State.PAUSED, "user", True, True, False, False, 0),
        "shutoff": (State.SHUTOFF, "unknown", False, True, False, False, 0),
        "transient": (State.RUNNING, "booted", True, False, False, False, 0),
        "transient_paused": (State.PAUSED, "user", True, False, False, False, 0),
        "autostart": (State.SHUTOFF, "unknown", False, True, True, False, 0),
        "managed_save": (State.SHUTOFF, "saved", False, True, False, True, 0),
        "snapshots": (State.RUNNING, "booted", True, True, False, False, 2),
    }
    conn = make_domain.libvirt_hosts.conn("alpha")
    for key, uuid in made.items():
        r = row(hosts.alpha, uuid)
        facts = (
            r.state,
            r.state_reason,
            r.is_active,
            r.persistent,
            r.autostart,
            r.has_managed_save,
            r.snapshot_count,
        )
        assert facts == expected[key], key
        dom = conn.lookupByUUIDString(uuid)
        assert r.name == dom.name()
        assert r.libvirt_id == (dom.ID() if dom.isActive() else None), key
        assert r.gone_at is None and r.team is None
        assert r.first_seen_at == r.last_seen_at
    big = row(hosts.alpha, made["running"])
    assert (big.vcpus, big.memory_kib, big.max_memory_kib) == (2, 384 * 1024, 384 * 1024)
    assert big.memory_mib == 384
    # The driver's own default domain is inventoried like any other.
    default = row(hosts.alpha, TEST_DRIVER_DEFAULT_UUID)
    assert (default.name, default.state) == ("test", State.RUNNING)
    # The other host is not touched by reconciling this one.
    assert not Domain.objects.filter(host=hosts.beta).exists()


def test_reconcile_twice_changes_nothing(make_domain, hosts):
    make_domain.define(state="running")
    inventory.reconcile_host(hosts.alpha)
    rows = set(Domain.objects.values_list("pk", "uuid", "state", "gone_at"))

    assert inventory.reconcile_host(hosts.alpha) == 0
    assert set(Domain.objects.values_list("pk", "uuid", "state", "gone_at")) == rows


def test_reconcile_follows_changes_made_outside_the_panel(make_domain, hosts):
    domain = make_domain(state="running")
    dom = make_domain.libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid))
    dom.suspend()
    dom.setAutostart(1)

    assert inventory.reconcile_host(hosts.alpha) == 1

    r = fresh(domain)
    assert (r.state, r.autostart, r.team) == (State.PAUSED, True, domain.team)
    assert r.pk == domain.pk


def test_reconcile_stamps_the_host(hosts, libvirt_hosts):
    inventory.reconcile_host(hosts.alpha)

    host = Host.objects.get(pk=hosts.alpha.pk)
    assert host.last_seen_at is not None and host.last_error == ""


def test_unreachable_host_records_the_error(db, tmp_path):
    from domains.hypervisor import HypervisorError

    host = Host.objects.create(
        name="nowhere", uri=f"test+unix:///default?socket={tmp_path}/libvirt-sock"
    )

    with pytest.raises(HypervisorError) as excinfo:
        inventory.reconcile_host(host)

    assert excinfo.value.host_unreachable and excinfo.value.retryable
    host.refresh_from_db()
    assert "libvirt-sock" in host.last_error and host.last_seen_at is None


@pytest.mark.parametrize("how", ["undefine", "destroy transient"])
def test_domain_removed_behind_the_panel_is_marked_gone(how, make_domain, hosts, people):
    domain = make_domain(state="running", persistent=(how == "undefine"))
    # A history to keep: a refused attempt by a viewer.
    with pytest.raises(ActionRefused):
        button_service("destroy")(people.victor_viewer, domain)
    dom = make_domain.libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid))
    dom.destroy()
    if how == "undefine":
        dom.undefine()

    inventory.reconcile_host(hosts.alpha)

    r = fresh(domain)
    assert r.gone_at is not None and r.libvirt_id is None
    assert r.name == domain.name and r.team == people.team_a
    assert [op.status for op in r.operations.all()] == [OperationStatus.REFUSED]
    assert Domain.objects.present().filter(pk=domain.pk).count() == 0
    # Marked once: a later pass counts no change.
    assert inventory.reconcile_host(hosts.alpha) == 0


def test_gone_domain_that_comes_back_is_the_same_row(make_domain, hosts):
    domain = make_domain(state="shutoff")
    conn = make_domain.libvirt_hosts.conn("alpha")
    xml = conn.lookupByUUIDString(str(domain.uuid)).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    conn.lookupByUUIDString(str(domain.uuid)).undefine()
    inventory.reconcile_host(hosts.alpha)
    assert fresh(domain).gone_at is not None

    conn.defineXML(xml)
    inventory.reconcile_host(hosts.alpha)

    r = fresh(domain)
    assert r.gone_at is None and r.team == domain.team
    assert Domain.objects.filter(uuid=domain.uuid).count() == 1


def test_refresh_domain_reads_one_domain(make_domain, hosts):
    uuid = make_domain.define(state="paused")

    r = inventory.refresh_domain(hosts.alpha, uuid)

    assert (r.state, r.persistent) == (State.PAUSED, True)
    assert Domain.objects.count() == 1  # only that one, not the whole host
    make_domain.libvirt_hosts.conn("alpha").lookupByUUIDString(uuid).destroy()
    make_domain.libvirt_hosts.conn("alpha").lookupByUUIDString(uuid).undefine()
    assert inventory.refresh_domain(hosts.alpha, uuid) is None
    assert fresh(r).gone_at is not None


def test_same_uuid_on_two_hosts_is_two_domains(make_domain, hosts):
    """Identity is (host, UUID): the same configuration defined on two hosts."""
    uuid = make_domain.define("alpha")
    xml = make_domain.libvirt_hosts.conn("alpha").lookupByUUIDString(uuid).XMLDesc(0)
    make_domain.libvirt_hosts.conn("beta").defineXML(xml)
    make_domain.track("beta", uuid)

    inventory.reconcile_host(hosts.alpha)
    inventory.reconcile_host(hosts.beta)

    assert Domain.objects.filter(uuid=uuid).count() == 2


# --- the fourteen listAllDomains filters ---------------------------------------------


COMBINATIONS = [
    ("active", "inactive", "running", "paused"),
    ("persistent", "autostart"),
    ("transient", "paused"),
    ("inactive", "managed_save", "has_snapshot"),
    ("running", "paused", "no_autostart", "no_snapshot"),
    ("persistent", "transient", "shutoff", "other"),
    ("managed_save", "no_managed_save", "autostart", "no_autostart"),
    ("active", "running", "persistent", "no_managed_save", "no_autostart", "has_snapshot"),
]


@pytest.fixture
def mixed_host(make_domain, hosts):
    """alpha with a domain in each state the test driver can show, reconciled."""
    make_domain.define(state="running")
    make_domain.define(state="running", autostart=True)
    make_domain.define(state="running", snapshots=1)
    make_domain.define(state="paused")
    make_domain.define(state="paused", autostart=True, snapshots=2)
    make_domain.define(state="shutoff")
    make_domain.define(state="shutoff", autostart=True)
    make_domain.define(state="shutoff", snapshots=1)
    make_domain.define(managed_save=True)
    make_domain.define(managed_save=True, autostart=True, snapshots=1)
    make_domain.define(state="running", persistent=False)
    make_domain.define(state="paused", persistent=False)
    inventory.reconcile_host(hosts.alpha)
    return make_domain.libvirt_hosts.conn("alpha")


def _compare(conn, keys) -> set[uuidlib.UUID]:
    flags = 0
    for key in keys:
        flags |= LIST_FLAGS[key]
    from_libvirt = {uuidlib.UUID(d.UUIDString()) for d in conn.listAllDomains(flags)}
    from_inventory = set(
        Domain.objects.present()
        .filter(host__name="alpha")
        .with_list_filters(list(keys))
        .values_list("uuid", flat=True)
    )
    assert from_inventory == from_libvirt, keys
    return from_libvirt


def test_filters_cover_libvirts_fourteen():
    assert set(LIST_FILTERS) == set(LIST_FLAGS)


def test_each_filter_matches_libvirt(mixed_host):
    everything = mixed_host.listAllDomains(0)
    assert len(everything) >= 13
    for key in LIST_FLAGS:
        found = _compare(mixed_host, [key])
        # Each filter but "other" (no state the test driver shows) finds something.
        assert found or key == "other", key


def test_every_pair_of_filters_matches_libvirt(mixed_host):
    for pair in itertools.combinations(LIST_FLAGS, 2):
        _compare(mixed_host, pair)


@pytest.mark.parametrize("keys", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
def test_filter_combinations_match_libvirt(keys, mixed_host):
    _compare(mixed_host, keys)


def test_no_filter_is_everything(mixed_host):
    _compare(mixed_host, [])


def test_gone_rows_are_not_listed(make_domain, hosts):
    domain = make_domain(state="shutoff")
    Domain.objects.filter(pk=domain.pk).update(gone_at=domain.last_seen_at)

    assert not Domain.objects.present().with_list_filters(["inactive"]).filter(pk=domain.pk)
    assert Operation.objects.count() == 0


def test_a_full_read_racing_another_writer_goes_on_with_the_row_once(
    make_domain, hosts, monkeypatch
):
    """Another writer (an operation's refresh, a watcher at a takeover) may insert a VM's
    row between the full read's look at the host's rows and its own insert: the read goes
    on, leaving that row once, instead of failing the whole host's read."""
    first = make_domain.define(state="running")
    second = make_domain.define(state="shutoff")
    real = inventory._owners_of

    def racing(uuids):
        inventory.refresh_domain(hosts.alpha, first)  # the other writer, just in between
        return real(uuids)

    monkeypatch.setattr(inventory, "_owners_of", racing)
    inventory.reconcile_host(hosts.alpha)
    assert Domain.objects.filter(host=hosts.alpha, uuid=first).count() == 1
    assert row(hosts.alpha, first).state == State.RUNNING
    assert row(hosts.alpha, second).state == State.SHUTOFF
