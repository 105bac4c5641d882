"""A person in Chromium: log in, filter the list, start a domain.

Playwright drives Debian's Chromium (/usr/bin/chromium; browser downloads are blocked
here) against Django's live server, with the real worker doing the start.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import browser_log_in, fresh, live, wait_for

CHROMIUM = "/usr/bin/chromium"
# Screenshots for people to look at (not compared): in the test run folder.
SHOTS = Path(os.environ.get("VMPANEL_SHOTS", "/tmp/vmpanel-shots"))
SHOTS.mkdir(parents=True, exist_ok=True)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"{CHROMIUM} is missing (apt-get install chromium): browser tests skipped",
    ),
]


def test_log_in_filter_and_start(
    page, live_server, celery_worker, people, make_domain, libvirt_hosts
):
    running = make_domain("alpha", name="web-running", state="running")
    stopped = make_domain("alpha", name="db-stopped", state="shutoff")
    # Whatever the Content-Security-Policy blocks, Chromium reports on the console.
    blocked: list[str] = []
    page.on(
        "console",
        lambda message: (
            blocked.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )

    response = page.goto(f"{live_server.url}/domains/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    # Not signed in: the login page comes first.
    assert "/login/" in page.url
    browser_log_in(page, live_server.url, "olga_operator", go=False)
    assert page.locator("text=web-running").count() >= 1
    assert page.locator("text=db-stopped").count() >= 1

    # Tick "shut off": htmx replaces the table and only the stopped domain remains.
    page.check("input[name=f][value=shutoff]")
    page.wait_for_function("() => !document.body.innerText.includes('web-running')", timeout=5000)
    assert "f=shutoff" in page.url  # the filter is in the address, so it can be shared
    page.click("text=db-stopped")
    page.wait_for_url(f"**/domains/alpha/{stopped.uuid}/")

    page.click("button:has-text('Start')")
    # The worker starts it in libvirt; the panel shows the new state.
    conn = libvirt_hosts.conn("alpha")
    wait_for(lambda: live(conn, stopped.uuid).state == 1, timeout=10, what="libvirt running")
    wait_for(lambda: fresh(stopped).state == 1, timeout=10, what="inventory running")
    page.wait_for_function(
        "() => /succeeded|running/i.test(document.body.innerText)", timeout=10000
    )
    page.goto(f"{live_server.url}/domains/?f=running")
    assert page.locator("text=db-stopped").count() >= 1
    assert fresh(running).state == 1
    # htmx, vmpanel.js and the stylesheet all ran under the policy, and nothing was blocked.
    assert page.evaluate("() => typeof htmx") == "object"
    assert blocked == []


def test_usage_graphs_draw_and_the_cpu_column_sorts(page, live_server, people, hosts, make_domain):
    from domains import collector
    from domains.models import DomainUsage, DomainUsageSample

    busy = make_domain("alpha", name="busy-vm", state="running", devices=True)
    calm = make_domain("alpha", name="calm-vm", state="running", devices=True)
    collector.HostTicker(hosts.alpha, tick_seconds=10).tick()
    # Five minutes of history, so that the graphs have lines to draw (ticks a second apart
    # may all fall into one 10 s bucket).
    now = int(time.time()) // 10 * 10
    DomainUsageSample.objects.bulk_create(
        DomainUsageSample(domain=busy, step=10, at=at, cpu_avg=50.0 + at % 7, cpu_max=90.0)
        for at in range(now - 300, now, 10)
    )
    DomainUsage.objects.filter(domain=busy).update(cpu_pct=91.0)
    DomainUsage.objects.filter(domain=calm).update(cpu_pct=3.0)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    page.set_viewport_size({"width": 1366, "height": 900})
    browser_log_in(page, live_server.url, "olga_operator")

    # "Which VM is busy?": sorting by CPU puts it first, and again reversed last.
    cpu_header = page.locator("th a", has_text=re.compile(r"^CPU"))
    cpu_header.click()
    page.wait_for_url("**sort=cpu**")
    cpu_header.click()
    page.wait_for_url("**sort=-cpu**")
    names = page.locator("#domain-table tbody tr td > a").all_inner_texts()
    assert names.index("busy-vm") < names.index("calm-vm"), names

    page.goto(f"{live_server.url}/domains/alpha/{busy.uuid}/")
    chart = page.locator(".usage-chart[data-usage-chart='usage-cpu'] canvas")
    chart.wait_for(timeout=5000)
    # Drawn: the canvas has pixels that are not blank.
    drawn = page.evaluate(
        """() => {
            const c = document.querySelector(".usage-chart[data-usage-chart='usage-cpu'] canvas");
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let ink = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i] > 0) ink++;
            return ink;
        }"""
    )
    assert drawn > 100, drawn
    page.screenshot(path=str(SHOTS / "usage-detail-1366.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(400)
    page.screenshot(path=str(SHOTS / "usage-detail-390.png"), full_page=True)
    assert problems == []


def test_on_a_phone_no_page_scrolls_sideways_and_the_menu_folds(
    page, live_server, people, make_domain
):
    """At 390 px: the main pages fit the screen (wide tables scroll inside their box), and
    the navigation is behind "Menu", its entries at least 40 px high."""
    domain = make_domain("alpha", name="phone-vm", state="running", snapshots=1)
    page.set_viewport_size({"width": 390, "height": 844})
    browser_log_in(page, live_server.url, "root")
    vm = f"/domains/alpha/{domain.uuid}/"
    pages = [
        "/domains/", vm, f"{vm}snapshots/", "/activity/", "/requests/", "/templates/",
        "/hosts/", "/hosts/alpha/", "/teams/", "/teams/team-a/",
    ]  # fmt: skip
    for path in pages:
        page.goto(f"{live_server.url}{path}")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide at 390 px"
        page.screenshot(path=SHOTS / f"phone{path.replace('/', '-')}.png", full_page=True)
    nav = page.locator(".topbar nav")
    assert not nav.is_visible()
    page.click("text=Menu")
    assert nav.is_visible()
    for box in [a.bounding_box() for a in nav.locator("a").all()]:
        assert box["height"] >= 40
    page.click(".topbar nav >> text=Activity")
    page.wait_for_url(f"{live_server.url}/activity/")


def test_on_a_phone_the_hosts_list_shows_every_hosts_state_without_scrolling(
    page, live_server, people, hosts
):
    """At 390 px each host is a card: whether it answers and who watches it are on the
    screen, named, not in columns past its right edge."""
    page.set_viewport_size({"width": 390, "height": 844})
    browser_log_in(page, live_server.url, "root")
    page.goto(f"{live_server.url}/hosts/")
    for name in ("alpha", "beta"):
        row = page.locator("table.cards tbody tr", has_text=name)
        for label in ("Now", "Watched by", "VMs"):
            cell = row.locator(f'td[data-label="{label}"]')
            box = cell.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, label
            assert cell.evaluate("c => getComputedStyle(c, '::before').content") == f'"{label}: "'
    page.screenshot(path=SHOTS / "phone-hosts-cards.png", full_page=True)


def test_pages_update_themselves_within_two_seconds(
    page, live_server, people, make_domain, watcher_beat
):
    """A change the inventory records (the watcher, another user's operation) shows on an
    open list and VM page without a reload."""
    from domains.models import Domain, State

    domain = make_domain("alpha", name="live-vm", state="running")
    browser_log_in(page, live_server.url, "olga_operator")
    page.wait_for_selector("#domain-table [data-live]", state="attached")

    Domain.objects.filter(pk=domain.pk).update(state=State.PAUSED, state_reason="user")
    started = time.monotonic()
    page.wait_for_function(
        "() => document.querySelector('#domain-table').innerText.includes('paused')",
        timeout=2500,
    )
    on_list = time.monotonic() - started

    page.goto(f"{live_server.url}/domains/alpha/{domain.uuid}/")
    page.wait_for_selector("#domain-panel [data-live]", state="attached")
    Domain.objects.filter(pk=domain.pk).update(state=State.RUNNING, state_reason="unpaused")
    started = time.monotonic()
    page.wait_for_function(
        "() => document.querySelector('#domain-panel .title-row').innerText.includes('running')",
        timeout=2500,
    )
    on_page = time.monotonic() - started
    assert on_list < 2 and on_page < 2, (on_list, on_page)


def test_a_request_page_shows_the_decision_within_two_seconds(
    page, live_server, people, hosts, watcher_beat
):
    """The person who asked for a VM keeps its request page open; a team admin decides
    elsewhere, and the page says so without a reload."""
    from provisioning import services
    from tests.test_provisioning_create import make_template

    req = services.submit_request(
        people.victor_viewer, people.team_a, make_template(hosts), "asked-vm", 1, 256, "testing"
    )
    browser_log_in(page, live_server.url, "victor_viewer")
    for width, height in ((1366, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live_server.url}/requests/{req.pk}/")
        page.screenshot(path=str(SHOTS / f"request-waiting-{width}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.wait_for_selector("#request-panel [data-live]", state="attached")

    services.reject_request(people.alice_admin, req, "Not this quarter, sorry.")
    started = time.monotonic()
    page.wait_for_function(
        "() => document.querySelector('#request-panel').innerText.includes('Not this quarter')",
        timeout=2500,
    )
    shown_after = time.monotonic() - started
    panel = page.inner_text("#request-panel")
    assert "rejected" in panel and "alice_admin" in panel
    page.screenshot(path=str(SHOTS / "request-decided-390.png"), full_page=True)
    assert shown_after < 2, shown_after


def test_a_bulk_action_on_three_vms_in_the_browser(
    page, live_server, celery_worker, people, make_domain, libvirt_hosts
):
    """Tick three VMs in the list, choose "Pause", do it: each gets an operation of its own
    and the list says each outcome, a refusal included. Then the main pages at 1366 px, as
    screenshots for people to look at."""
    names = ("tick-a", "tick-b", "tick-c")
    vms = [make_domain("alpha", name=name, state="running") for name in names[:2]]
    vms.append(make_domain("alpha", name=names[2], state="shutoff"))  # refused, alone
    page.set_viewport_size({"width": 1366, "height": 900})
    browser_log_in(page, live_server.url, "olga_operator")
    for vm in vms:
        page.check(f"input[name=pick][value='alpha/{vm.uuid}']")
    page.select_option("#bulk-action", "suspend")
    page.click("button:has-text('Do it')")
    page.wait_for_url(f"{live_server.url}/domains/**")
    text = page.inner_text("main")
    assert text.count("pause queued (operation #") == 2, text
    assert "tick-c: tick-c is shut off; only a running VM can be paused." in text
    page.screenshot(path=SHOTS / "bulk-pause-1366.png", full_page=True)
    conn = libvirt_hosts.conn("alpha")
    for vm in vms[:2]:
        wait_for(lambda vm=vm: live(conn, vm.uuid).state == 3, timeout=10, what="paused")

    vm = f"/domains/alpha/{vms[0].uuid}/"
    for path in ("/domains/", vm, "/activity/", "/requests/", "/templates/", "/teams/"):
        page.goto(f"{live_server.url}{path}")
        page.screenshot(path=SHOTS / f"wide{path.replace('/', '-')}.png", full_page=True)
