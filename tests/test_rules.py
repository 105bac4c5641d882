"""The pure rules of `domains.rules`: no daemon, no database; facts are built by hand."""

from __future__ import annotations

from dataclasses import replace

import libvirt
import pytest

from domains.hypervisor import GuestSighting, ResizeLimits
from domains.models import Domain, Host, State
from domains.rules import (
    DEFAULT_MIGRATION_FLAGS,
    DisplayRoute,
    MigrationChoice,
    MigrationOutcome,
    ResizeRequest,
    ResizeStep,
    console_address_problem,
    display_route,
    host_uri_problem,
    listen_address_problem,
    migrate_uri_problem,
    migration_flag_problems,
    migration_outcome,
    resize_plan,
    resize_problems,
    xml_edit_check,
)

MIB = 1024

RUNNING_PERSISTENT = ResizeLimits(
    active=True, persistent=True,
    vcpus_live=2, vcpus_max_live=4, vcpus_config=2, vcpus_max_config=4,
    memory_live_kib=512 * MIB, memory_max_live_kib=1024 * MIB,
    memory_config_kib=512 * MIB, memory_max_config_kib=1024 * MIB,
    host_cpus=8, host_memory_kib=16 * 1024 * MIB,
)  # fmt: skip
SHUT_OFF = replace(
    RUNNING_PERSISTENT,
    active=False, vcpus_live=None, vcpus_max_live=None,
    memory_live_kib=None, memory_max_live_kib=None,
)  # fmt: skip
TRANSIENT = replace(
    RUNNING_PERSISTENT,
    persistent=False, vcpus_config=None, vcpus_max_config=None,
    memory_config_kib=None, memory_max_config_kib=None,
)  # fmt: skip


def _domain(**fields) -> Domain:
    defaults = dict(name="web1", host_id=1, state=State.RUNNING, libvirt_id=7, persistent=True)
    return Domain(**{**defaults, **fields})


# --- resize -------------------------------------------------------------------------


def test_plan_raises_the_maximum_before_the_count_it_allows():
    req = ResizeRequest(vcpus=6, vcpus_max=8, config=True)
    assert resize_plan(SHUT_OFF, req) == [
        ResizeStep("vcpus_max", 8, config=True),
        ResizeStep("vcpus", 6, config=True),
    ]


def test_plan_lowers_the_count_before_a_maximum_below_it():
    req = ResizeRequest(memory_mib=256, memory_max_mib=384, config=True)
    assert resize_plan(SHUT_OFF, req) == [
        ResizeStep("memory", 256 * MIB, config=True),
        ResizeStep("memory_max", 384 * MIB, config=True),
    ]


def test_plan_live_and_config_in_one_step_and_nothing_for_current_values():
    req = ResizeRequest(vcpus=3, memory_mib=512, live=True, config=True)
    assert resize_plan(RUNNING_PERSISTENT, req) == [ResizeStep("vcpus", 3, True, True)]
    assert resize_plan(RUNNING_PERSISTENT, ResizeRequest(vcpus=2, live=True)) == []


@pytest.mark.parametrize(
    ("limits", "req", "words"),
    [
        (SHUT_OFF, ResizeRequest(vcpus=3, live=True), "is shut off: a live change"),
        (TRANSIENT, ResizeRequest(vcpus=3, config=True), "temporary: it has no saved"),
        (TRANSIENT, ResizeRequest(vcpus_max=8, live=True), "maximums change only"),
        (RUNNING_PERSISTENT, ResizeRequest(vcpus=6, live=True), "more than the running"),
        (RUNNING_PERSISTENT, ResizeRequest(memory_mib=2048, config=True), "raise the maximum"),
        (SHUT_OFF, ResizeRequest(vcpus_max=1, config=True), "lower those as well"),
        (RUNNING_PERSISTENT, ResizeRequest(vcpus=3), "Choose where the change goes"),
        (RUNNING_PERSISTENT, ResizeRequest(vcpus=0, live=True), "at least 1"),
        (RUNNING_PERSISTENT, ResizeRequest(vcpus=2, live=True), "Nothing to change"),
        # The host has 16 GiB: more than that, the guest could never have.
        (
            SHUT_OFF,
            ResizeRequest(memory_mib=20480, memory_max_mib=20480, config=True),
            "more than the host's whole memory of 16384 MiB",
        ),
    ],
)
def test_resize_problems_in_plain_words(limits, req, words):
    problems = resize_problems(_domain(), limits, req)
    assert any(words in p for p in problems), problems


def test_a_resize_within_the_limits_has_no_problem():
    req = ResizeRequest(vcpus=4, memory_mib=1024, live=True, config=True)
    assert resize_problems(_domain(), RUNNING_PERSISTENT, req) == []


# --- migration ------------------------------------------------------------------------

DEST = Host(pk=2, name="beta", uri="qemu+tcp://10.0.0.2/system", enabled=True)


def _choice(*flags: str, **more) -> MigrationChoice:
    return MigrationChoice(DEST, flags=frozenset(flags), **more)


def test_the_default_choice_fits_a_running_persistent_domain():
    assert (
        migration_flag_problems(_domain(), MigrationChoice(DEST, flags=DEFAULT_MIGRATION_FLAGS))
        == []
    )


@pytest.mark.parametrize(
    ("domain", "choice", "words"),
    [
        (_domain(), _choice("LIVE", "TUNNELLED"), "choose peer-to-peer too"),
        (_domain(), _choice("PEER2PEER", "TUNNELLED", "NON_SHARED_DISK"), "through a tunnel"),
        (_domain(), _choice("NON_SHARED_DISK", "NON_SHARED_INC"), "not both"),
        (_domain(), _choice("OFFLINE"), "choose to keep it defined on the destination"),
        (_domain(), _choice("OFFLINE", "PERSIST_DEST", "LIVE"), "exclude each other"),
        (_domain(), _choice("UNDEFINE_SOURCE"), "would lose"),
        (_domain(state=State.SHUTOFF, libvirt_id=None), _choice("LIVE"), "only an offline"),
        (_domain(persistent=False), _choice("OFFLINE", "PERSIST_DEST"), "temporary VM has no"),
        (_domain(host_id=2), _choice("LIVE"), "the host the VM is on"),
        (_domain(), _choice("LIVE", new_name="bad name!"), "A new name uses"),
        (_domain(), _choice("LIVE", bandwidth_mib_s=-1), "0 for no limit"),
        (_domain(), _choice("LIVE", "WARP"), "Unknown migration flags: WARP"),
    ],
)
def test_migration_flag_rules(domain, choice, words):
    problems = migration_flag_problems(domain, choice)
    assert any(words in p for p in problems), problems


def test_disabled_destination_is_refused():
    off = Host(pk=3, name="gamma", uri="qemu+tcp://10.0.0.3/system", enabled=False)
    problems = migration_flag_problems(_domain(), MigrationChoice(off, flags=frozenset({"LIVE"})))
    assert problems == ["Host gamma is disabled."]


# --- edited XML -------------------------------------------------------------------------

SAVED = (
    "<domain type='test'><name>web1</name>"
    "<uuid>11111111-2222-3333-4444-555555555555</uuid><memory>1024</memory></domain>"
)


def test_an_edit_gives_its_diff():
    diff, problem = xml_edit_check(SAVED, SAVED.replace("1024", "2048"))
    assert problem == "" and "-" in diff and "2048" in diff


@pytest.mark.parametrize(
    ("edited", "words"),
    [
        (SAVED.replace("web1", "web2"), "The name must stay web1"),
        (SAVED.replace("11111111", "99999999"), "The UUID must stay"),
        (SAVED, "nothing to change"),
        ("<domain>", ""),  # not well-formed: the parser's own words
        ('<!DOCTYPE d [<!ENTITY x "y">]>' + SAVED, ""),
    ],
)
def test_an_edit_that_may_not_go(edited, words):
    diff, problem = xml_edit_check(SAVED, edited)
    assert diff == "" and problem and words in problem


# --- host URIs, migration URIs and listen addresses -------------------------------------

SOCKET = "/tmp/vmpanel-test-0123abcd/hosts/alpha/sock/libvirt-sock"


@pytest.mark.parametrize(
    "uri",
    [
        "qemu+ssh://root@kvm1/system",
        "qemu+ssh://kvm1.example.org:2222/system",
        "qemu+ssh://admin@10.0.0.2/system?keyfile=/root/.ssh/id_ed25519&no_verify=1",
        "qemu+ssh://root@kvm1/system?sshauth=agent,privkey&known_hosts=/etc/vmpanel/known",
        "qemu+tls://kvm1.example.org/system",
        "qemu+tls://kvm1/system?pkipath=/etc/pki/vmpanel&no_verify=0",
        "qemu+tcp://10.0.0.2/system",  # scripts/qemuhost.sh p2p-uri
        "qemu+tcp://[fd00::2]:16509/system",
        "qemu:///system",
        f"qemu:///system?socket={SOCKET}",  # scripts/qemuhost.sh uri
        f"test+unix:///default?socket={SOCKET}",  # scripts/testhost.sh uri
    ],
)
def test_host_uris_a_superuser_means(uri):
    assert host_uri_problem(uri) is None


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "test:///etc/shadow",  # the test driver reads the file and echoes its first line
        "test:///default",  # in-process: a world private to one process
        "test+unix:///default",  # no socket
        "test+unix:///etc/shadow?socket=/tmp/sock",
        "test+unix:///default?socket=relative/sock",
        "test+unix:///default?socket=/tmp/../etc/sock",
        "test+unix:///default?socket=/tmp/a&socket=/tmp/b",
        "test+unix:///default?socket=/tmp/a;command=/bin/sh",  # libvirt splits on ;
        "test+unix:///default?socket=%2Fetc%2Fshadow",
        "test+unix://somehost/default?socket=/tmp/sock",
        "qemu:///session",
        "qemu:///system?command=/bin/sh",
        "qemu:///embed?root=/etc",
        "qemu://kvm1/system",
        "qemu+ssh://root@kvm1/system?command=/tmp/evil",
        "qemu+ssh://root@kvm1/system?netcat=/tmp/evil",
        "qemu+ssh://root@kvm1/system?socket=/var/run/x",
        "qemu+ssh://root@kvm1/session",
        "qemu+ssh://root@kvm1/",
        "qemu+ssh://root:secret@kvm1/system",
        "qemu+ssh://kvm1:0/system",
        "qemu+ssh://kvm1:99999/system",
        "qemu+ssh:///system",
        "qemu+ssh://bad_host!/system",
        "qemu+ssh://root@kvm1/system#x",
        "qemu+ssh://root@kvm1/system?keyfile=id_rsa",
        "qemu+ssh://root@kvm1/system?no_verify=yes",
        "qemu+tcp://kvm1/system?pkipath=/etc/pki",
        "qemu+ext:///system?command=/bin/sh",
        "qemu+unix:///system",
        "qemu+libssh2://root@kvm1/system",
        "xen:///system",
        "lxc:///",
        "vbox:///session",
        "QEMU+SSH://root@kvm1/system",
        "qemu+ssh://root@kvm1/system ",
        "qemu+ssh://root@kvm1/sys\ttem",
        "qemu+ssh://root@kvm1/system\x00",
        "qemu+ssh://root@k\u0662vm1/system",
        "qemu+ssh://" + "a" * 600 + "/system",
        "../../etc/passwd",
        "<script>alert(1)</script>",
        "/etc/shadow",
    ],
)
def test_host_uris_refused_before_libvirt_is_asked(uri):
    problem = host_uri_problem(uri)
    assert problem
    # The words never repeat the URI (nor what libvirt would read behind it).
    assert "shadow" not in problem and "evil" not in problem


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("", True),
        ("tcp://10.0.0.2", True),
        ("tcp://10.0.0.2:49152", True),
        ("tcp://kvm2.example.org:49152", True),
        ("tcp://[fd00::2]:49152", True),
        ("rdma://10.0.0.2:49152", True),
        ("tcp://10.0.0.2/path", False),
        ("tcp://10.0.0.2?x=1", False),
        ("tcp://user@10.0.0.2", False),
        ("tcp://10.0.0.2:0", False),
        ("tcp://10.0.0.2:70000", False),
        ("tcp://", False),
        ("unix:///var/run/x", False),
        ("fd:3", False),
        ("exec:cat /etc/shadow", False),
        ("tcp:10.0.0.2:49152", False),
        ("tcp://10.0.0.2 ", False),
        ("tcp://10.0.0.2\x00", False),
    ],
)
def test_migrate_uris(uri, ok):
    assert (migrate_uri_problem(uri) is None) == ok


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("", True),
        ("10.0.0.2", True),
        ("0.0.0.0", True),
        ("fd00::2", True),
        ("kvm2.example.org", True),
        ("kvm2", True),
        ("10.0.0.2/24", False),
        ("kvm 2", False),
        ("[fd00::2]", False),
        ("tcp://10.0.0.2", False),
        ("../../etc/passwd", False),
        ("a\x00b", False),
        ("\u202ekvm2", False),
    ],
)
def test_listen_addresses(address, ok):
    assert (listen_address_problem(address) is None) == ok


@pytest.mark.parametrize(
    ("choice", "words"),
    [
        (MigrationChoice(None, destination_uri="test:///etc/shadow"), "Destination URI:"),
        (MigrationChoice(None, destination_uri="qemu:///session"), "Destination URI:"),
        (MigrationChoice(DEST, migrate_uri="exec:cat /etc/shadow"), "tcp://host[:port]"),
        (MigrationChoice(DEST, listen_address="0.0.0.0/0"), "A listen address"),
    ],
)
def test_migration_uris_are_checked_before_anything_else(choice, words):
    problems = migration_flag_problems(_domain(), replace(choice, flags=DEFAULT_MIGRATION_FLAGS))
    assert len(problems) == 1 and words in problems[0], problems


# --- a migration's outcome when libvirt did not report it ------------------------------

_RUNNING = GuestSighting(True, libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED)
_INCOMING = GuestSighting(True, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION)
_STARTING = GuestSighting(True, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP)
_USER_PAUSED = GuestSighting(True, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER)
_SENT = GuestSighting(True, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION)
_SHUT_OFF = GuestSighting(True, libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED)
_ABSENT = GuestSighting(False)
_MIGRATING = GuestSighting(True, libvirt.VIR_DOMAIN_RUNNING, 0, job=True)
_DOWN = None  # the host does not answer


@pytest.mark.parametrize(
    ("source", "dest", "outcome"),
    [
        # What was once recorded as success: a half-arrived copy, the source's daemon dead.
        (_DOWN, _INCOMING, MigrationOutcome.UNKNOWN),
        (_DOWN, _STARTING, MigrationOutcome.UNKNOWN),
        # Running on the destination is not enough while the source cannot be asked.
        (_DOWN, _RUNNING, MigrationOutcome.UNKNOWN),
        (_ABSENT, _RUNNING, MigrationOutcome.MOVED),
        (_SHUT_OFF, _RUNNING, MigrationOutcome.MOVED),  # without undefining the source
        (_ABSENT, _USER_PAUSED, MigrationOutcome.MOVED),  # migrated while paused
        # Memory sent, not yet confirmed: still active on the source.
        (_SENT, _RUNNING, MigrationOutcome.UNKNOWN),
        # The source runs it: it did not move, wherever the destination is.
        (_RUNNING, _INCOMING, MigrationOutcome.STAYED),
        (_RUNNING, _ABSENT, MigrationOutcome.STAYED),
        (_RUNNING, _DOWN, MigrationOutcome.STAYED),
        (_USER_PAUSED, _ABSENT, MigrationOutcome.STAYED),
        # A job still running on either side: too early to say.
        (_MIGRATING, _INCOMING, MigrationOutcome.UNKNOWN),
        (_ABSENT, GuestSighting(True, libvirt.VIR_DOMAIN_RUNNING, 0, job=True), "unknown"),
        # It runs nowhere: it stopped (the source holds it shut off).
        (_SHUT_OFF, _ABSENT, MigrationOutcome.STAYED),
        (_SHUT_OFF, _INCOMING, MigrationOutcome.UNKNOWN),  # the copy may yet run
        (_SHUT_OFF, _DOWN, MigrationOutcome.UNKNOWN),
    ],
)
def test_migration_outcome_needs_the_guest_running_there_and_gone_here(source, dest, outcome):
    assert migration_outcome(source, dest) == outcome


def test_offline_migration_outcome_is_the_destination_holding_the_definition():
    defined = GuestSighting(True, libvirt.VIR_DOMAIN_SHUTOFF, 0)
    assert migration_outcome(defined, defined, offline=True) == MigrationOutcome.MOVED
    assert migration_outcome(defined, _ABSENT, offline=True) == MigrationOutcome.STAYED
    assert migration_outcome(defined, _DOWN, offline=True) == MigrationOutcome.UNKNOWN


# --- consoles: how the proxy reaches a display ----------------------------------------

LOCAL = "qemu:///system"
REMOTE = "qemu+ssh://root@kvm1/system"


@pytest.mark.parametrize(
    "uri, listen, port, console_address, route",
    [
        # A local host: through libvirt's connection, wherever the display listens.
        (LOCAL, ("127.0.0.1",), 5900, "", DisplayRoute()),
        (LOCAL, ("127.0.0.1",), 5900, "10.0.0.2", DisplayRoute()),
        ("test+unix:///default?socket=/run/t.sock", (), -1, "", DisplayRoute()),
        # On the host's console address: there, by TCP, local or remote.
        (LOCAL, ("10.0.0.2",), 5901, "10.0.0.2", DisplayRoute("10.0.0.2", 5901)),
        (REMOTE, ("10.0.0.2",), 5901, "10.0.0.2", DisplayRoute("10.0.0.2", 5901)),
        # A remote host's display anywhere else cannot be reached: said, with what to do.
        (REMOTE, ("127.0.0.1",), 5900, "", "without a console address"),
        (REMOTE, ("127.0.0.1",), 5900, "10.0.0.2", "not on its host's console address"),
        (REMOTE, ("10.0.0.9",), 5900, "10.0.0.2", "listens on 10.0.0.9"),
        (REMOTE, ("10.0.0.2",), -1, "10.0.0.2", "no port yet"),
    ],
)
def test_display_route(uri, listen, port, console_address, route):
    got = display_route("web1", uri, listen, port, console_address)
    if isinstance(route, str):
        assert isinstance(got, str) and route in got and "web1" in got
    else:
        assert got == route


@pytest.mark.parametrize(
    "address, problem",
    [
        ("", None),
        ("10.0.0.2", None),
        ("fd00::2", None),
        ("0.0.0.0", "every interface"),
        ("::", "every interface"),
        ("127.0.0.1", "leave the field blank"),
        ("kvm1.example.org", "an IP address"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_console_address(address, problem):
    got = console_address_problem(address)
    assert got is None if problem is None else problem in got
