"""Migration pre-flight: every refusal is answered in plain words before libvirt is asked
to migrate. The test driver cannot migrate at all, so a refusal seen here is the panel's
own; real migrations are in the qemu tier."""

from __future__ import annotations

import uuid as uuidlib

import pytest

from domains import rules
from domains.domxml import SimpleDomain, build_simple_domain
from domains.models import Operation, OperationStatus
from domains.rules import MigrationChoice
from domains.services import common, migration
from tests.helpers import wait_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DEFAULT = rules.DEFAULT_MIGRATION_FLAGS


def choose(dest, *flags, **kwargs) -> MigrationChoice:
    return MigrationChoice(destination=dest, flags=frozenset(flags or DEFAULT), **kwargs)


def refused(user, domain, choice) -> str:
    before = Operation.objects.exclude(status=OperationStatus.REFUSED).count()
    with pytest.raises(common.ActionRefused) as exc:
        migration.migrate_domain(user, domain, choice)
    # Nothing queued; the refusal itself is on record.
    assert Operation.objects.exclude(status=OperationStatus.REFUSED).count() == before
    assert exc.value.operation is None or exc.value.operation.status == OperationStatus.REFUSED
    return exc.value.message


@pytest.mark.parametrize(
    "flags,words",
    [
        ({"LIVE", "TUNNELLED"}, "peer-to-peer"),
        ({"LIVE", "PEER2PEER", "TUNNELLED", "NON_SHARED_DISK"}, "tunnel"),
        ({"LIVE", "PEER2PEER", "NON_SHARED_DISK", "NON_SHARED_INC"}, "not both"),
        ({"OFFLINE"}, "keep it defined on the destination"),
        ({"OFFLINE", "PERSIST_DEST", "LIVE"}, "exclude each other"),
        ({"LIVE", "PEER2PEER", "UNDEFINE_SOURCE"}, "lose the VM's configuration"),
        ({"LIVE", "BOGUS"}, "Unknown migration flags"),
    ],
)
def test_flag_combinations_libvirt_refuses(people, hosts, make_domain, flags, words):
    domain = make_domain("alpha", state="running")
    assert words in refused(people.olga_operator, domain, choose(hosts.beta, *flags))


def test_state_must_fit_the_flags(people, hosts, make_domain):
    stopped = make_domain("alpha", state="shutoff")
    assert "only an offline migration" in refused(people.olga_operator, stopped, choose(hosts.beta))
    transient = make_domain("alpha", state="running", persistent=False)
    message = refused(
        people.olga_operator, transient, choose(hosts.beta, "OFFLINE", "PERSIST_DEST")
    )
    assert "no configuration to move offline" in message


def test_destination_must_differ_and_answer(people, hosts, make_domain, libvirt_hosts):
    domain = make_domain("alpha", state="running")
    assert "is the host the VM is on" in refused(people.olga_operator, domain, choose(hosts.alpha))
    hosts.beta.uri = "test+unix:///default?socket=/nonexistent/libvirt-sock"
    hosts.beta.save()
    assert "does not answer" in refused(people.olga_operator, domain, choose(hosts.beta))


def test_name_or_uuid_taken_on_the_destination(people, hosts, make_domain, libvirt_hosts):
    domain = make_domain("alpha", state="running")
    beta = libvirt_hosts.conn("beta")
    clash = beta.defineXML(
        build_simple_domain(SimpleDomain(name=domain.name, uuid=str(uuidlib.uuid4())))
    )
    make_domain.track("beta", clash.UUIDString())
    assert "named" in refused(people.olga_operator, domain, choose(hosts.beta))
    # A new name avoids the clash (and the test driver then says it cannot migrate).
    same_uuid = beta.defineXML(
        build_simple_domain(SimpleDomain(name="twin", uuid=str(domain.uuid)))
    )
    make_domain.track("beta", same_uuid.UUIDString())
    assert "UUID exists" in refused(
        people.olga_operator, domain, choose(hosts.beta, *DEFAULT, new_name="renamed")
    )


def _domain_with_disk(libvirt_hosts, make_domain, hosts, path: str):
    from domains import inventory
    from domains.domxml import parse, to_string
    from domains.models import Domain

    uuid = str(uuidlib.uuid4())
    root = parse(build_simple_domain(SimpleDomain(name=f"disk-{uuid[:8]}", uuid=uuid)))
    disk = parse(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{path}'/><target dev='vda' bus='virtio'/></disk>"
    )
    root.find("devices").append(disk)
    dom = libvirt_hosts.conn("alpha").defineXML(to_string(root))
    dom.create()
    make_domain.track("alpha", uuid)
    inventory.reconcile_host(hosts.alpha)
    row = Domain.objects.get(host=hosts.alpha, uuid=uuid)
    row.team = make_domain.people.team_a
    row.save()
    return row


def test_disks_need_shared_storage_or_copy(people, hosts, make_domain, libvirt_hosts):
    domain = _domain_with_disk(libvirt_hosts, make_domain, hosts, "/default-pool/web.qcow2")
    message = refused(people.olga_operator, domain, choose(hosts.beta))
    assert "vda" in message and "shared storage or choose to copy storage" in message
    # A disk in a folder no pool of the destination holds cannot be copied there.
    other = _domain_with_disk(libvirt_hosts, make_domain, hosts, "/elsewhere/db.qcow2")
    message = refused(people.olga_operator, other, choose(hosts.beta, *DEFAULT, "NON_SHARED_DISK"))
    assert "no storage pool holding /elsewhere" in message


def test_copy_storage_needs_room_on_the_destination(people, hosts, make_domain, libvirt_hosts):
    # The test driver reports every disk as 1 TiB, more than its pools hold.
    domain = _domain_with_disk(libvirt_hosts, make_domain, hosts, "/default-pool/app.qcow2")
    message = refused(people.olga_operator, domain, choose(hosts.beta, *DEFAULT, "NON_SHARED_DISK"))
    assert "GiB free" in message and "/default-pool" in message
    assert libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).isActive()


def test_an_allowed_migration_reaches_libvirt_and_its_refusal_is_recorded(
    people, hosts, make_domain, celery_worker
):
    domain = make_domain("alpha", state="running")
    op = migration.migrate_domain(people.olga_operator, domain, choose(hosts.beta))
    assert op.target_host == hosts.beta and op.params["flags"] == sorted(DEFAULT)
    done = wait_finished(op)
    # The test driver cannot migrate: libvirt's own words reach the user.
    assert done.status == OperationStatus.FAILED
    assert "not supported" in done.error and done.message


def test_free_uri_is_for_superusers(people, hosts, make_domain):
    domain = make_domain("alpha", state="running")
    choice = MigrationChoice(destination=None, destination_uri=hosts.beta.uri, flags=DEFAULT)
    with pytest.raises(common.ActionRefused) as exc:
        migration.migrate_domain(people.alice_admin, domain, choice)
    assert exc.value.status == 403
    # A superuser may; pre-flight then runs against that URI like any other.
    clash = MigrationChoice(destination=None, destination_uri=hosts.alpha.uri, flags=DEFAULT)
    with pytest.raises(common.ActionRefused, match="UUID exists"):
        migration.migrate_domain(people.root, domain, clash)


# --- issue 8, item 3: the URIs and addresses of a migration are checked ------------------


def test_a_free_uri_naming_a_local_file_is_refused_without_echo(
    people, hosts, make_domain, tmp_path
):
    secret = tmp_path / "secret"
    secret.write_text("SECRET-FIRST-LINE-77aa\n")
    domain = make_domain("alpha", state="running")
    for uri in (f"test:///{secret}", "qemu:///session", "qemu+ssh://h/system?command=/bin/sh"):
        choice = MigrationChoice(destination=None, destination_uri=uri, flags=DEFAULT)
        message = refused(people.root, domain, choice)
        assert message.startswith("Destination URI:") and "SECRET" not in message, message


@pytest.mark.parametrize(
    "more,words",
    [
        ({"migrate_uri": "exec:cat /etc/shadow"}, "tcp://host[:port]"),
        ({"migrate_uri": "unix:///var/run/libvirt/x"}, "tcp://host[:port]"),
        ({"migrate_uri": "tcp://10.0.0.2/x?y"}, "no path"),
        ({"listen_address": "0.0.0.0 -incoming"}, "listen address"),
    ],
)
def test_migrate_uri_and_listen_address_are_checked(people, hosts, make_domain, more, words):
    domain = make_domain("alpha", state="running")
    message = refused(people.olga_operator, domain, choose(hosts.beta, **more))
    assert words in message
