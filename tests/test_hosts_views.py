"""Host pages (superusers only): add, edit, enable and disable, and the live facts.

A host is saved only after the panel reached its URI: a test daemon's URI works, a socket
that is not there gives libvirt's own message on the form and saves nothing. Every change
leaves an audit event.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from domains import hypervisor
from domains.models import AuditEvent, Host
from tests.helpers import client_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

BROKEN_URI = "test+unix:///default?socket=/nonexistent/sock"


@pytest.fixture
def root(people):
    return client_for(people.root)


def test_add_a_host_with_a_working_uri(root, people, hosts, libvirt_hosts):
    uri = libvirt_hosts.uri("beta")

    response = root.post(reverse("host_create"), {"name": "beta-two", "uri": uri, "enabled": "on"})

    assert response.status_code == 303
    assert response["Location"] == reverse("host_detail", args=["beta-two"])
    host = Host.objects.get(name="beta-two")
    assert (host.uri, host.enabled) == (uri, True)
    event = AuditEvent.objects.get(kind="host_added")
    assert event.user == people.root
    assert event.summary == f"beta-two ({uri}, enabled)"
    assert event.detail == {"host": "beta-two"}
    page = root.get(response["Location"]).content.decode()
    assert "Host beta-two saved." in page


def test_add_a_host_with_a_broken_uri(root, hosts):
    response = root.post(
        reverse("host_create"), {"name": "broken", "uri": BROKEN_URI, "enabled": "on"}
    )

    assert response.status_code == 200
    errors = response.context["form"].errors["uri"]
    assert len(errors) == 1
    assert errors[0].startswith(f"Cannot connect to {BROKEN_URI}: ")
    # libvirt's own words name the socket it could not reach.
    assert "/nonexistent/sock" in errors[0].removeprefix(f"Cannot connect to {BROKEN_URI}: ")
    assert "Cannot connect to" in response.content.decode()
    assert not Host.objects.filter(name="broken").exists()
    assert not AuditEvent.objects.exclude(kind="login").exists()


def test_a_disabled_host_is_saved_without_connecting(root):
    response = root.post(reverse("host_create"), {"name": "later", "uri": BROKEN_URI})

    assert response.status_code == 303
    assert not Host.objects.get(name="later").enabled
    assert AuditEvent.objects.get(kind="host_added").summary == f"later ({BROKEN_URI}, disabled)"


def test_host_name_must_be_unique_and_a_slug(root, hosts, libvirt_hosts):
    uri = libvirt_hosts.uri("alpha")

    taken = root.post(reverse("host_create"), {"name": "alpha", "uri": uri, "enabled": "on"})
    bad = root.post(reverse("host_create"), {"name": "no spaces", "uri": uri, "enabled": "on"})

    assert taken.status_code == 200 and "name" in taken.context["form"].errors
    assert bad.status_code == 200 and "name" in bad.context["form"].errors
    assert Host.objects.count() == 2
    assert not AuditEvent.objects.exclude(kind="login").exists()


def test_edit_a_host(root, people, hosts, libvirt_hosts):
    url = reverse("host_edit", args=["alpha"])
    form = root.get(url)
    assert form.status_code == 200
    assert f'value="{hosts.alpha.uri}"' in form.content.decode().replace("&amp;", "&")

    # A broken URI: refused with libvirt's words, the host stays as it was.
    response = root.post(url, {"name": "alpha", "uri": BROKEN_URI, "enabled": "on"})
    assert response.status_code == 200
    assert "/nonexistent/sock" in response.context["form"].errors["uri"][0]
    assert Host.objects.get(pk=hosts.alpha.pk).uri == hosts.alpha.uri
    assert not AuditEvent.objects.exclude(kind="login").exists()

    new_uri = libvirt_hosts.uri("beta")
    response = root.post(url, {"name": "alpha", "uri": new_uri, "enabled": "on"})

    assert response.status_code == 303
    assert Host.objects.get(pk=hosts.alpha.pk).uri == new_uri
    event = AuditEvent.objects.get(kind="host_changed")
    assert event.user == people.root and event.summary == f"alpha ({new_uri}, enabled)"


def test_edit_of_an_unknown_host_is_404(root, hosts):
    assert root.get(reverse("host_edit", args=["zeta"])).status_code == 404
    assert root.post(reverse("host_set_enabled", args=["zeta"])).status_code == 404
    assert root.get(reverse("host_detail", args=["zeta"])).status_code == 404


def test_disable_and_enable(root, people, hosts):
    url = reverse("host_set_enabled", args=["alpha"])

    assert root.get(url).status_code == 405
    response = root.post(url, {"enabled": "0"})

    assert response.status_code == 303
    assert response["Location"] == reverse("host_detail", args=["alpha"])
    assert not Host.objects.get(name="alpha").enabled
    page = root.get(response["Location"]).content.decode()
    assert "Host alpha disabled." in page
    assert "This host is disabled: the panel does not watch it" in page
    assert "Not available now." in page
    assert '<input type="hidden" name="enabled" value="1">' in page  # the Enable button

    response = root.post(url, {"enabled": "1"})

    assert response.status_code == 303
    assert Host.objects.get(name="alpha").enabled
    kinds = list(
        AuditEvent.objects.exclude(kind="login")
        .order_by("pk")
        .values_list("kind", "user__username")
    )
    assert kinds == [("host_disabled", "root"), ("host_enabled", "root")]


def test_host_detail_shows_the_live_host(root, hosts, make_domain, libvirt_hosts):
    make_domain(state="running")
    conn = libvirt_hosts.conn("alpha")
    model, memory_mib, cpus = conn.getInfo()[:3]

    response = root.get(reverse("host_detail", args=["alpha"]))

    assert response.status_code == 200
    page = response.content.decode()

    def version(n: int) -> str:
        return f"{n // 1000000}.{n // 1000 % 1000}.{n % 1000}"

    assert f"<tr><th>Hostname</th><td>{conn.getHostname()}</td></tr>" in page
    assert f"<td>{conn.getType()} {version(conn.getVersion())}</td>" in page
    assert f"<tr><th>libvirt</th><td>{version(conn.getLibVersion())}</td></tr>" in page
    assert f"<tr><th>CPU model</th><td>{model}</td></tr>" in page
    assert f"<tr><th>CPUs</th><td>{cpus}</td></tr>" in page
    assert f"<tr><th>Memory</th><td>{memory_mib} MiB</td></tr>" in page
    # The test driver's own "test" domain and ours.
    assert response.context["domain_count"] == 2


def test_host_detail_of_an_unreachable_host_is_a_banner(root):
    Host.objects.create(name="nowhere", uri=BROKEN_URI)

    response = root.get(reverse("host_detail", args=["nowhere"]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Host nowhere does not answer:" in page
    assert "/nonexistent/sock" in page
    assert "Not available now." in page
    hypervisor.forget(BROKEN_URI)


def test_host_list(root, hosts):
    Host.objects.create(name="nowhere", uri=BROKEN_URI, last_error="Failed to connect socket")
    Host.objects.filter(name="beta").update(enabled=False)

    page = root.get(reverse("host_list")).content.decode()

    for name in ("alpha", "beta", "nowhere"):
        assert f'<a href="/hosts/{name}/">{name}</a>' in page
    assert '<span class="badge badge-shutoff">disabled</span>' in page
    assert '<span class="badge badge-failed">does not answer</span>' in page
    assert '<span class="badge badge-other">not seen yet</span>' in page


@pytest.mark.parametrize(
    "who", ["alice_admin", "olga_operator", "victor_viewer", "bob_b", "nora_noteam"]
)
def test_everyone_but_superusers_gets_403(who, people, hosts, libvirt_hosts):
    client = client_for(getattr(people, who))
    before = list(Host.objects.order_by("pk").values())

    pages = [
        client.get(reverse("host_list")),
        client.get(reverse("host_create")),
        client.get(reverse("host_detail", args=["alpha"])),
        client.get(reverse("host_edit", args=["alpha"])),
    ]
    writes = [
        client.post(
            reverse("host_create"),
            {"name": "sneaky", "uri": libvirt_hosts.uri("alpha"), "enabled": "on"},
        ),
        client.post(
            reverse("host_edit", args=["alpha"]),
            {"name": "alpha", "uri": BROKEN_URI, "enabled": "on"},
        ),
        client.post(reverse("host_set_enabled", args=["alpha"]), {"enabled": "0"}),
    ]

    for response in pages + writes:
        assert response.status_code == 403
        assert "Only superusers may manage hosts." in response.content.decode()
    assert list(Host.objects.order_by("pk").values()) == before
    assert not AuditEvent.objects.exclude(kind="login").exists()
    # The menu does not offer the page either.
    assert 'href="/hosts/"' not in client.get(reverse("domain_list")).content.decode()


# --- issue 8, item 3: host URIs are checked before libvirt is asked ------------------


@pytest.fixture
def secret_file(tmp_path):
    """A local file with a line no page may ever show (the test driver, asked to open
    test:///<file>, reads it as its configuration and echoes the first line)."""
    path = tmp_path / "secret"
    path.write_text("SECRET-FIRST-LINE-4f1c\nsecond\n")
    return path


def _calls_to_libvirt(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = hypervisor.check_uri
    monkeypatch.setattr(hypervisor, "check_uri", lambda uri: calls.append(uri) or real(uri))
    return calls


@pytest.mark.parametrize(
    "field,value",
    [
        ("uri", "test:///{secret}"),
        ("uri", "qemu:///session"),
        ("uri", "qemu+ssh://root@kvm1/system?command=/bin/sh"),
        ("uri", "test+unix:///default?socket=/tmp/s;command=/bin/sh"),
        ("migration_uri", "test:///{secret}"),
        ("migration_uri", "qemu+ext:///system?command=/bin/sh"),
        ("migration_address", "10.0.0.2; rm -rf /"),
    ],
)
def test_a_uri_the_panel_does_not_use_is_refused_before_libvirt(
    root, hosts, libvirt_hosts, secret_file, monkeypatch, field, value
):
    calls = _calls_to_libvirt(monkeypatch)
    data = {"name": "sneaky", "uri": libvirt_hosts.uri("alpha"), "enabled": "on"}
    data[field] = value.format(secret=secret_file)

    for url in (reverse("host_create"), reverse("host_edit", args=["alpha"])):
        if "edit" in url:
            data["name"] = "alpha"
        response = root.post(url, data)

        assert response.status_code == 200
        assert field in response.context["form"].errors
        assert "SECRET-FIRST-LINE" not in response.content.decode()
    assert calls == []
    assert not Host.objects.filter(name="sneaky").exists()
    assert Host.objects.get(name="alpha").uri == libvirt_hosts.uri("alpha")
    assert not AuditEvent.objects.exclude(kind="login").exists()


def test_the_service_refuses_such_uris_too(people, hosts, secret_file, monkeypatch):
    from domains.services.common import ActionRefused
    from domains.services.hosts import save_host

    calls = _calls_to_libvirt(monkeypatch)
    for host in (
        Host(name="sneaky", uri=f"test:///{secret_file}"),
        Host(name="sneaky", uri=hosts.alpha.uri, migration_uri=f"test:///{secret_file}"),
        Host(name="sneaky", uri=hosts.alpha.uri, migration_address="a b"),
    ):
        with pytest.raises(ActionRefused) as exc:
            save_host(people.root, host)
        assert exc.value.status == 400 and "SECRET" not in exc.value.message
    assert calls == [] and not Host.objects.filter(name="sneaky").exists()


def test_the_qemu_tier_uris_are_accepted(root, hosts, libvirt_hosts):
    """scripts/qemuhost.sh's URIs (`uri`: the local daemon on a socket of its own,
    `p2p-uri`: qemu+tcp) pass the rule; a disabled host is saved without connecting."""
    response = root.post(
        reverse("host_create"),
        {
            "name": "qa",
            "uri": "qemu:///system?socket=/tmp/vmpanel-qemu/qa/run/libvirt-sock",
            "migration_uri": "qemu+tcp://10.201.0.1/system",
            "migration_address": "10.201.0.1",
        },
    )
    assert response.status_code == 303


@pytest.mark.parametrize(
    "variable,value",
    [
        ("VMPANEL_HOSTS", "evil=test:///etc/shadow"),
        ("VMPANEL_MIGRATION_URIS", "alpha=qemu+ext:///system?command=/bin/sh"),
    ],
)
def test_seed_demo_checks_its_uris_too(monkeypatch, libvirt_hosts, variable, value):
    from django.core.management import CommandError, call_command

    from domains.management.commands import seed_demo

    monkeypatch.setenv("VMPANEL_HOSTS", f"alpha={libvirt_hosts.uri('alpha')}")
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(
        seed_demo.Command, "wait_for_watcher", lambda *a: pytest.fail("got as far as the hosts")
    )

    with pytest.raises(CommandError, match=f"{variable}: host "):
        call_command("seed_demo")
    assert not Host.objects.exists()
