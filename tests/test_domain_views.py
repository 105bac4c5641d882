"""The domain list and detail pages, through HTTP, against real test-driver hosts.

The list reads the inventory only: not one libvirt call per request, counted by wrapping
every method of libvirt's connection and domain classes for the length of the request (as
bench/list_page.py does). Its fourteen filters are checked against libvirt's own answer:
`listAllDomains` with the matching VIR_CONNECT_LIST_DOMAINS_* flags, on both hosts.

The detail page reads live from libvirt: its XML, SECURE only for admins (a VNC password
shows the difference), and a host that does not answer is a banner, not an error page.
"""

from __future__ import annotations

import contextlib
import functools
import re
import uuid as uuidlib
from types import SimpleNamespace

import libvirt
import pytest
from django.urls import reverse
from lxml import etree

from domains import hypervisor, inventory, views
from domains.models import LIST_FILTERS, Domain, Host, Operation, OperationKind, State
from tests.helpers import LIST_FLAGS, client_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

# The list filters and the listAllDomains flag each one stands for.
# What the inventory-only "ghost" row (crashed, on a host that is not there) matches.
GHOST_KEYS = {"inactive", "persistent", "other", "no_managed_save", "no_autostart", "no_snapshot"}


@contextlib.contextmanager
def counting_libvirt_calls(monkeypatch):
    """Count every call of a libvirt connection or domain method (and libvirt.open)."""
    calls: list[str] = []

    def counted(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return wrapper

    with monkeypatch.context() as m:
        for cls in (libvirt.virConnect, libvirt.virDomain):
            for name, attr in list(vars(cls).items()):
                if callable(attr) and not name.startswith("_"):
                    m.setattr(cls, name, counted(f"{cls.__name__}.{name}", attr))
        m.setattr(libvirt, "open", counted("open", libvirt.open))
        yield calls


def listed(response) -> list[str]:
    """UUIDs of the rows on this page, in order, read from the HTML."""
    assert response.status_code == 200
    return re.findall(r'<code class="uuid" title="([0-9a-f-]{36})">', response.content.decode())


def test_the_list_counter_sees_libvirt_calls(monkeypatch, people, make_domain):
    """The counter itself works: the detail page reads live, so it counts calls."""
    domain = make_domain(state="running")
    client = client_for(people.alice_admin)

    with counting_libvirt_calls(monkeypatch) as calls:
        response = client.get(reverse("domain_detail", args=["alpha", str(domain.uuid)]))

    assert response.status_code == 200
    assert "virDomain.XMLDesc" in calls


# --- the list: a varied inventory on both hosts --------------------------------------


@pytest.fixture
def inventory_world(people, hosts, make_domain, libvirt_hosts):
    """Domains in every state libvirt's test driver can show, on both hosts, in team A.

    Plus one inventory-only row in a state the test driver cannot make (crashed), on a
    host row whose daemon does not exist: the list never asks libvirt, so it shows it.
    """
    d = make_domain.define
    made = {
        "web-running": d("alpha", name="web-running", state="running", vcpus=2, memory_mib=384),
        "web-paused": d("alpha", name="web-paused", state="paused", memory_mib=128),
        "db-shutoff": d("alpha", name="db-shutoff", memory_mib=512),
        "tmp-transient": d(
            "alpha", name="tmp-transient", state="running", persistent=False, memory_mib=64
        ),
        "auto-shutoff": d("alpha", name="auto-shutoff", autostart=True, memory_mib=320),
        "saved": d("alpha", name="saved", managed_save=True, memory_mib=192),
        "snap-running": d(
            "alpha", name="snap-running", state="running", snapshots=2, memory_mib=448
        ),
        "snap-shutoff": d("alpha", name="snap-shutoff", snapshots=1, memory_mib=96),
        "beta-running": d("beta", name="beta-running", state="running", memory_mib=256),
        "beta-auto": d("beta", name="beta-auto", autostart=True, memory_mib=160),
        "beta-transient-paused": d(
            "beta", name="beta-transient-paused", state="paused", persistent=False, memory_mib=32
        ),
    }
    inventory.reconcile_host(hosts.alpha)
    inventory.reconcile_host(hosts.beta)
    Domain.objects.filter(uuid__in=made.values()).update(team=people.team_a)
    nowhere = Host.objects.create(
        name="nowhere", uri="test+unix:///default?socket=/nonexistent/vmpanel/libvirt-sock"
    )
    ghost = Domain.objects.create(
        host=nowhere, uuid=uuidlib.uuid4(), name="ghost-crashed", state=State.CRASHED,
        memory_kib=8 * 1024, team=people.team_a,
    )  # fmt: skip
    made["ghost-crashed"] = str(ghost.uuid)
    return SimpleNamespace(
        made=made,
        ghost=str(ghost.uuid),
        client=client_for(people.victor_viewer),
        conns={name: libvirt_hosts.conn(name) for name in ("alpha", "beta")},
    )


def libvirt_answer(w, keys: list[str]) -> set[str]:
    """What libvirt lists with these filters (OR of flags inside a group, as libvirt does)."""
    flags = 0
    for key in keys:
        flags |= LIST_FLAGS[key]
    ours = set(w.made.values())
    expected = {
        dom.UUIDString()
        for conn in w.conns.values()
        for dom in conn.listAllDomains(flags)
        if dom.UUIDString() in ours
    }
    # The ghost is in the inventory only: it matches if every group asked for allows it.
    groups_asked = [
        {k for k in group if k in keys} for group in _groups() if any(k in keys for k in group)
    ]
    if all(asked & GHOST_KEYS for asked in groups_asked):
        expected.add(w.ghost)
    return expected


def _groups() -> list[set[str]]:
    from domains.models import LIST_FILTER_GROUPS

    return [set(group) for group in LIST_FILTER_GROUPS]


def test_the_list_makes_no_libvirt_call(monkeypatch, inventory_world):
    client = inventory_world.client
    with counting_libvirt_calls(monkeypatch) as calls:
        response = client.get(
            reverse("domain_list"),
            {"f": ["running", "persistent"], "q": "web", "sort": "-memory", "gone": "on"},
        )
        plain = client.get(reverse("domain_list"))
        fragment = client.get(reverse("domain_list"), HTTP_HX_REQUEST="true")

    assert (response.status_code, plain.status_code, fragment.status_code) == (200, 200, 200)
    assert len(listed(plain)) == len(inventory_world.made)
    assert calls == []


def test_filters_are_all_fourteen(inventory_world):
    assert set(LIST_FLAGS) == set(LIST_FILTERS)


@pytest.mark.parametrize("key", list(LIST_FLAGS))
def test_each_filter_gives_what_libvirt_lists(key, inventory_world):
    response = inventory_world.client.get(reverse("domain_list"), {"f": key})

    assert set(listed(response)) == libvirt_answer(inventory_world, [key])
    # The box stays ticked on the page that shows the result.
    assert f'name="f" value="{key}" checked' in response.content.decode()


@pytest.mark.parametrize(
    "keys",
    [
        ["running", "paused"],
        ["active", "persistent"],
        ["inactive", "autostart"],
        ["running", "has_snapshot"],
        ["transient", "paused"],
        ["shutoff", "no_managed_save", "no_autostart"],
        ["inactive", "other"],
        ["active", "inactive", "managed_save", "no_managed_save"],
        list(LIST_FLAGS),
    ],
    ids=lambda keys: "+".join(keys) if len(keys) < 14 else "all",
)
def test_filter_combinations_combine_as_libvirt_does(keys, inventory_world):
    response = inventory_world.client.get(reverse("domain_list"), {"f": keys})

    assert set(listed(response)) == libvirt_answer(inventory_world, keys)


def test_unknown_filter_is_ignored_and_host_filter_narrows(inventory_world):
    client = inventory_world.client
    made = inventory_world.made

    everything = client.get(reverse("domain_list"), {"f": ["bogus"]})
    assert set(listed(everything)) == set(made.values())

    beta_running = client.get(reverse("domain_list"), {"host": "beta", "f": "running"})
    assert listed(beta_running) == [made["beta-running"]]

    # An unknown host is not applied (a hand-edited URL shows the unfiltered list).
    assert set(listed(client.get(reverse("domain_list"), {"host": "zeta"}))) == set(made.values())


def test_search_by_id_name_and_uuid(inventory_world, hosts):
    client = inventory_world.client
    made = inventory_world.made
    running = Domain.objects.get(uuid=made["web-running"])
    assert running.libvirt_id is not None

    # An ID is per host: every visible domain with that ID, whatever its host.
    by_id = listed(client.get(reverse("domain_list"), {"q": str(running.libvirt_id)}))
    same_id = Domain.objects.filter(libvirt_id=running.libvirt_id, uuid__in=made.values())
    assert set(by_id) == {str(d.uuid) for d in same_id} and made["web-running"] in by_id

    by_name = listed(client.get(reverse("domain_list"), {"q": " WEB-"}))
    assert set(by_name) == {made["web-running"], made["web-paused"]}

    uuid = made["snap-shutoff"]
    for q in (uuid, uuid.upper(), uuid.replace("-", ""), uuid.replace("-", "").upper()):
        assert listed(client.get(reverse("domain_list"), {"q": q})) == [uuid], q

    # More digits than an ID can have: not an ID, not a UUID, so a name part: no match.
    assert listed(client.get(reverse("domain_list"), {"q": "99999999999"})) == []
    nothing = client.get(reverse("domain_list"), {"q": "no-such-name"})
    assert listed(nothing) == []
    assert "No VMs match these filters." in nothing.content.decode()


def test_search_by_a_dashless_uuid_of_digits_only(people, hosts, make_domain, libvirt_hosts):
    """32 digits look like a number; they are a UUID, not an ID."""
    uuid = "12345678-1234-1234-1234-123456789012"
    conn = libvirt_hosts.conn("alpha")
    make_domain.track("alpha", uuid)
    conn.defineXML(make_domain.xml("digits", uuid))
    inventory.reconcile_host(hosts.alpha)
    Domain.objects.filter(uuid=uuid).update(team=people.team_a)

    response = client_for(people.olga_operator).get(
        reverse("domain_list"), {"q": uuid.replace("-", "")}
    )

    assert listed(response) == [uuid]


def names_in_order(w, response) -> list[str]:
    by_uuid = {v: k for k, v in w.made.items()}
    return [by_uuid[u] for u in listed(response)]


def test_sorting(inventory_world):
    w = inventory_world
    client = w.client
    rows = {str(d.uuid): d for d in Domain.objects.filter(uuid__in=w.made.values())}
    by_name = sorted(w.made, key=lambda n: n)

    assert names_in_order(w, client.get(reverse("domain_list"))) == by_name
    assert (
        names_in_order(w, client.get(reverse("domain_list"), {"sort": "-name"})) == (by_name[::-1])
    )
    memory = sorted(w.made, key=lambda n: (rows[w.made[n]].memory_kib, n))
    assert names_in_order(w, client.get(reverse("domain_list"), {"sort": "memory"})) == memory
    desc = names_in_order(w, client.get(reverse("domain_list"), {"sort": "-memory"}))
    assert desc == memory[::-1]
    # Ties are broken by name: three domains on alpha share the host.
    hosts = names_in_order(w, client.get(reverse("domain_list"), {"sort": "host"}))
    assert hosts == sorted(w.made, key=lambda n: (rows[w.made[n]].host.name, n))
    vcpus = names_in_order(w, client.get(reverse("domain_list"), {"sort": "-vcpus"}))
    assert vcpus[0] == "web-running"
    active = client.get(reverse("domain_list"), {"sort": "id", "f": "active"})
    ids = [rows[u].libvirt_id for u in listed(active)]
    assert ids == sorted(ids) and None not in ids
    # A sort key that is not offered is not applied: the list comes by name.
    assert names_in_order(w, client.get(reverse("domain_list"), {"sort": "uuid"})) == by_name


def test_sort_links_keep_the_filters_and_reverse(inventory_world):
    response = inventory_world.client.get(
        reverse("domain_list"), {"f": "running", "q": "web", "sort": "memory", "page": "1"}
    )
    page = response.content.decode()

    # Clicking the column sorted by reverses it; the filters stay, the page goes.
    assert 'href="?f=running&amp;q=web&amp;sort=-memory"' in page
    assert 'href="?f=running&amp;q=web&amp;sort=name"' in page


def test_pagination_keeps_the_query_string(monkeypatch, inventory_world):
    monkeypatch.setattr(views, "PAGE_SIZE", 3)
    w = inventory_world
    query = {"f": "persistent", "q": "-", "sort": "-memory"}
    expected = names_in_order(w, w.client.get(reverse("domain_list"), {**query, "page": "1"}))
    everything = [
        n
        for n in sorted(
            w.made,
            key=lambda n: Domain.objects.get(uuid=w.made[n]).memory_kib,
            reverse=True,
        )
        if "-" in n and Domain.objects.get(uuid=w.made[n]).persistent
    ]
    assert expected == everything[:3]

    seen: list[str] = []
    url = reverse("domain_list") + "?f=persistent&q=-&sort=-memory"
    for number in range(1, 10):
        response = w.client.get(url)
        seen += names_in_order(w, response)
        page = response.content.decode()
        assert f"Page {number} of" in page
        match = re.search(r'href="(\?[^"]*)"[^>]*>Next', page)
        if match is None:
            break
        next_query = match.group(1).replace("&amp;", "&")
        # The next page's link carries every filter along, and the htmx twin the path.
        assert next_query == f"?f=persistent&q=-&sort=-memory&page={number + 1}"
        assert f'hx-get="/domains/{match.group(1)}"' in page
        url = reverse("domain_list") + next_query
    assert seen == everything and number > 1


def test_gone_domains_are_hidden_unless_asked(people, hosts, make_domain, libvirt_hosts):
    here = make_domain(state="running")
    gone = make_domain()
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(gone.uuid)).undefine()
    inventory.reconcile_host(hosts.alpha)
    client = client_for(people.victor_viewer)

    assert listed(client.get(reverse("domain_list"))) == [str(here.uuid)]
    response = client.get(reverse("domain_list"), {"gone": "on"})
    assert set(listed(response)) == {str(here.uuid), str(gone.uuid)}
    assert 'class="is-gone"' in response.content.decode()

    detail = client.get(reverse("domain_detail", args=["alpha", str(gone.uuid)]))
    assert detail.status_code == 200
    assert "libvirt no longer knows this VM" in detail.content.decode()


def test_htmx_gets_the_table_only(inventory_world):
    client = inventory_world.client

    full = client.get(reverse("domain_list"), {"f": "running"})
    fragment = client.get(reverse("domain_list"), {"f": "running"}, HTTP_HX_REQUEST="true")
    boosted = client.get(
        reverse("domain_list"), {"f": "running"}, HTTP_HX_REQUEST="true", HTTP_HX_BOOSTED="true"
    )

    page, part = full.content.decode(), fragment.content.decode()
    assert "<html" in page and 'class="filters"' in page and 'id="domain-table"' in page
    assert "<html" not in part and 'class="filters"' not in part
    assert part.count('id="domain-table"') == 1
    assert 'hx-swap-oob="true"' in part  # the sort input of the form follows the table
    assert set(listed(fragment)) == set(listed(full))
    assert "<html" in boosted.content.decode()  # a boosted request swaps the whole page
    for response in (full, fragment):
        assert "HX-Request" in response["Vary"]


def test_anonymous_htmx_request_is_sent_to_the_login_page(client):
    response = client.get(
        reverse("domain_list"),
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/domains/?f=running",
    )

    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login/?next=")


# --- the detail page -----------------------------------------------------------------


def detail(client, domain: Domain):
    return client.get(reverse("domain_detail", args=[domain.host.name, str(domain.uuid)]))


def test_detail_shows_facts_live_state_and_xml(people, make_domain):
    domain = make_domain(state="running", vcpus=2, memory_mib=384)

    response = detail(client_for(people.victor_viewer), domain)

    assert response.status_code == 200
    page = response.content.decode()
    assert f"<h1>{domain.name}</h1>" in page
    assert str(domain.uuid) in page
    assert f"<td>{domain.libvirt_id}</td>" in page
    assert "384 MiB of 384 MiB" in page
    assert "<tr><th>OS type</th><td>linux</td></tr>" in page
    assert "<tr><th>Current vCPUs</th><td>2</td></tr>" in page
    assert "<td>running</td>" in page and "booted" not in page  # the usual reason: none
    # The XML names host paths and devices: not for viewers (nor operators).
    assert f"&lt;uuid&gt;{domain.uuid}&lt;/uuid&gt;" not in page
    admin_page = detail(client_for(people.alice_admin), domain).content.decode()
    assert f"&lt;uuid&gt;{domain.uuid}&lt;/uuid&gt;" in admin_page
    # A viewer gets no action buttons.
    assert 'class="actions"' not in page
    assert 'action="/domains/' not in page


def _domain_with_vnc_password(make_domain, hosts, people, conn, password: str) -> Domain:
    uuid = str(uuidlib.uuid4())
    root = etree.fromstring(make_domain.xml("vnc-guest", uuid).encode())
    etree.SubElement(root.find("devices"), "graphics", type="vnc", port="-1", passwd=password)
    make_domain.track("alpha", uuid)
    conn.defineXML(etree.tostring(root, encoding="unicode")).create()
    inventory.reconcile_host(hosts.alpha)
    domain = Domain.objects.select_related("host").get(host=hosts.alpha, uuid=uuid)
    domain.team = people.team_a
    domain.save()
    return domain


@pytest.mark.parametrize(
    ("who", "secure"),
    [
        ("victor_viewer", False),
        ("olga_operator", False),
        ("alice_admin", True),
        ("root", True),
    ],
)
def test_secure_xml_only_for_admins(who, secure, people, hosts, make_domain, libvirt_hosts):
    conn = libvirt_hosts.conn("alpha")
    domain = _domain_with_vnc_password(make_domain, hosts, people, conn, "s3cret-vnc-pw")
    # The difference is real in libvirt: only the SECURE flag gives the password out.
    dom = conn.lookupByUUIDString(str(domain.uuid))
    assert "s3cret-vnc-pw" not in dom.XMLDesc(0)
    assert "s3cret-vnc-pw" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)

    page = detail(client_for(getattr(people, who)), domain).content.decode()

    # Team admins and superusers see the XML, with its secrets; nobody else sees it.
    assert ("&lt;graphics type=" in page) == secure
    assert ("s3cret-vnc-pw" in page) == secure


def test_detail_lists_the_domains_operations(people, make_domain):
    domain = make_domain(state="running")
    other = make_domain(state="running")

    def op(target, kind, status, message):
        return Operation.objects.create(
            kind=kind, user=people.olga_operator, domain=target, host=target.host,
            domain_uuid=target.uuid, domain_name=target.name, team=target.team,
            status=status, message=message,
        )  # fmt: skip

    ours = [
        op(domain, OperationKind.SUSPEND, "succeeded", "Suspended."),
        op(domain, OperationKind.START, "refused", "only a shut-off permanent VM"),
    ]
    theirs = op(other, OperationKind.REBOOT, "succeeded", "Reboot requested.")

    page = detail(client_for(people.victor_viewer), domain).content.decode()

    for row in ours:
        assert f'href="/operations/{row.pk}/">#{row.pk}</a>' in page
        assert row.message in page
    assert f"#{theirs.pk}<" not in page
    assert "No operations yet." not in page
    # Newest first.
    assert page.index(f"#{ours[1].pk}<") < page.index(f"#{ours[0].pk}<")


@pytest.mark.parametrize(
    ("host", "uuid", "says"),
    [
        ("alpha", str(uuidlib.uuid4()), "No such VM."),
        ("alpha", "not-a-uuid", "Not a valid UUID: not-a-uuid"),
        ("alpha", "1234", "Not a valid UUID: 1234"),
        ("zeta", None, "No such VM."),
    ],
    ids=["unknown-uuid", "malformed", "short", "unknown-host"],
)
def test_detail_404s(host, uuid, says, people, make_domain):
    domain = make_domain()
    uuid = uuid or str(domain.uuid)
    client = client_for(people.root)

    for name, args in (
        ("domain_detail", [host, uuid]),
        ("domain_confirm", [host, uuid, "destroy"]),
    ):
        response = client.get(reverse(name, args=args))
        assert response.status_code == 404
        assert says in response.content.decode()
    response = client.post(reverse("domain_action", args=[host, uuid, "start"]))
    assert response.status_code == 404
    assert not Operation.objects.exists()


def test_unknown_action_and_confirm_of_a_plain_action_are_404(people, make_domain):
    domain = make_domain()
    client = client_for(people.root)
    args = [domain.host.name, str(domain.uuid)]

    assert client.post(reverse("domain_action", args=[*args, "explode"])).status_code == 404
    response = client.get(reverse("domain_confirm", args=[*args, "start"]))
    assert response.status_code == 404
    assert "needs no confirmation" in response.content.decode()
    assert not Operation.objects.exists()


def test_detail_of_a_host_with_no_daemon_is_a_banner(people, make_domain, monkeypatch):
    domain = make_domain(state="running")
    missing = "test+unix:///default?socket=/nonexistent/vmpanel-test/libvirt-sock"
    Host.objects.filter(pk=domain.host_id).update(uri=missing)

    response = detail(client_for(people.olga_operator), domain)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Host alpha does not answer:" in page
    assert "/nonexistent/vmpanel-test/libvirt-sock" in page  # libvirt's own words
    assert "showing the last known facts" in page
    assert "Not available now." in page
    assert str(domain.uuid) in page and "&lt;domain" not in page


def test_detail_when_the_daemon_stopped_under_a_cached_connection(people, libvirt_hosts, settings):
    # The page's own short cache of the live read would show the facts of a moment ago:
    # this is about libvirt's connection, so read afresh each time.
    settings.VMPANEL_LIVE_CACHE_SECONDS = 0
    libvirt_hosts.start("gamma")
    uri = libvirt_hosts.uri("gamma")
    client = client_for(people.root)
    try:
        host = Host.objects.create(name="gamma", uri=uri)
        inventory.reconcile_host(host)
        domain = Domain.objects.select_related("host").get(host=host, name="test")
        before = detail(client, domain)
        assert before.status_code == 200 and "&lt;domain" in before.content.decode()
    finally:
        libvirt_hosts.stop("gamma")
    try:
        response = detail(client, domain)

        assert response.status_code == 200
        assert "Host gamma does not answer:" in response.content.decode()
    finally:
        hypervisor.forget(uri)


def test_detail_of_a_disabled_host_asks_libvirt_nothing(monkeypatch, people, make_domain):
    domain = make_domain(state="running")
    Host.objects.filter(pk=domain.host_id).update(enabled=False)
    client = client_for(people.alice_admin)

    with counting_libvirt_calls(monkeypatch) as calls:
        response = detail(client, domain)

    assert response.status_code == 200
    assert "Host alpha is disabled; showing the last known facts." in response.content.decode()
    assert calls == []


def test_detail_htmx_gets_the_panel_only(people, make_domain):
    domain = make_domain(state="running")
    client = client_for(people.olga_operator)

    response = client.get(
        reverse("domain_detail", args=["alpha", str(domain.uuid)]), HTTP_HX_REQUEST="true"
    )

    part = response.content.decode()
    assert response.status_code == 200
    assert part.lstrip().startswith('<div id="domain-panel">')
    assert "<html" not in part
    # An operator gets buttons: shut down, reboot, suspend; force off via its confirmation.
    for kind in ("shutdown", "reboot", "suspend"):
        assert f'hx-post="/domains/alpha/{domain.uuid}/do/{kind}/"' in part
    assert f'href="/domains/alpha/{domain.uuid}/confirm/destroy/"' in part
    assert "/do/undefine/" not in part and "/confirm/undefine/" not in part


def test_superuser_gets_the_assign_form(people, make_domain):
    domain = make_domain()

    root_page = detail(client_for(people.root), domain).content.decode()
    admin_page = detail(client_for(people.alice_admin), domain).content.decode()

    assign = reverse("domain_assign", args=["alpha", str(domain.uuid)])
    assert f'action="{assign}"' in root_page
    assert f'action="{assign}"' not in admin_page


def test_state_reasons_are_said_in_plain_words(people, make_domain):
    """Issue 13, item 1: libvirt's reasons ("destroyed", "unpaused") in words for people,
    on the list and the VM page."""
    from domains.templatetags.vmpanel import reason_words

    assert reason_words("destroyed", State.SHUTOFF) == "forced off"
    assert reason_words("unpaused", State.RUNNING) == "resumed after a pause"
    assert reason_words("I/O error", State.PAUSED) == "paused: a disk could not be read or written"
    assert reason_words("unknown", State.RUNNING) == ""
    assert reason_words("destroyed", "not a state") == ""

    domain = make_domain(state="shutoff")
    Domain.objects.filter(pk=domain.pk).update(state_reason="destroyed")
    client = client_for(people.victor_viewer)
    for page in (client.get("/domains/"), detail(client, domain)):
        text = page.content.decode()
        assert "forced off" in text and "destroyed" not in text
