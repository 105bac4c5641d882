"""Issue 15 in Chromium: someone switches to Chinese from the footer, and the main pages
read in Chinese and hold their layout at 1366 px and at 390 px — nothing scrolls sideways,
no button or label is clipped. Screenshots (zh-*.png) are kept for people to look at.
"""

from __future__ import annotations

import shutil

import pytest

from domains.models import Operation, Profile
from tests.helpers import browser_log_in, wait_finished
from tests.test_browser import CHROMIUM, SHOTS
from tests.test_i18n import english_left

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"{CHROMIUM} is missing (apt-get install chromium): browser tests skipped",
    ),
]

WIDTHS = ((1366, 900), (390, 844))

# What people read that must not be cut off or pushed out of the page: buttons, labels,
# headings, badges. A table too wide for a phone scrolls inside its own box (allowed).
CLIPPED = """() => {
  const out = [];
  const scrollsInside = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o === "auto" || o === "scroll") return true;
    }
    return false;
  };
  for (const el of document.querySelectorAll(
      "button, .button, input[type=submit], select, label, h1, h2, th, .badge, nav a")) {
    if (!el.offsetParent && getComputedStyle(el).position !== "fixed") continue;  // hidden
    const r = el.getBoundingClientRect();
    if (r.width <= 1 || r.height <= 1) continue;  // hidden but for screen readers
    const what = (el.innerText || el.value || el.tagName).trim().slice(0, 40);
    if (el.scrollWidth > el.clientWidth + 1 && el.tagName !== "SELECT") {
      out.push("text overflows: " + what);
    }
    if (!scrollsInside(el) && (r.right > innerWidth + 1 || r.left < -1)) {
      out.push("off the page: " + what);
    }
  }
  return out;
}"""


def _look(page, live_server, path: str, name: str) -> None:
    """The page at both widths: in Chinese, fitting, nothing clipped; screenshots saved."""
    for width, height in WIDTHS:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        assert page.get_attribute("html", "lang") == "zh-hans", path
        page.screenshot(path=SHOTS / f"zh-{name}-{width}.png", full_page=True)
        scroll = page.evaluate("() => document.documentElement.scrollWidth")
        assert scroll <= width, f"{path} is {scroll} px wide at {width} px"
        assert page.evaluate(CLIPPED) == [], (path, width)
        assert english_left(page.content()) == [], (path, width)
        assert "VCPU" not in page.inner_text("main"), path  # vCPU keeps its case


def test_the_main_pages_in_chinese_at_1366_and_390(
    page, live_server, celery_worker, people, hosts, make_domain, django_capture_on_commit_callbacks
):
    from provisioning import services
    from tests.test_provisioning_create import make_template

    vm = make_domain("alpha", name="web-01", state="running", snapshots=1, devices=True)
    make_domain("alpha", name="db-02", state="shutoff", devices=True)
    template = make_template(hosts)
    services.submit_request(
        people.victor_viewer, people.team_a, template, "app-03", 2, 1024, "测试"
    )
    mine = services.submit_request(
        people.olga_operator, people.team_a, template, "app-04", 1, 512, "测试"
    )

    # An operator whose browser speaks English switches from the footer of the list.
    page.set_viewport_size({"width": 1366, "height": 900})
    browser_log_in(page, live_server.url, "olga_operator")
    assert page.get_attribute("html", "lang") == "en"
    page.select_option("#language", "zh-hans")
    page.click("footer button[type=submit]")
    page.wait_for_url(f"{live_server.url}/domains/**")
    assert page.get_attribute("html", "lang") == "zh-hans"
    assert Profile.objects.get(user=people.olga_operator).language == "zh-hans"
    assert "虚拟机" in page.inner_text(".topbar")
    # Told of a decision from now on in Chinese (written when sent, in her language then).
    services.reject_request(people.alice_admin, mine, "配额不够")

    # Start the shut-off VM: its operation's page and message are Chinese too.
    page.goto(f"{live_server.url}/domains/?f=shutoff")
    page.click("text=db-02")
    page.get_by_role("button", name="启动", exact=True).click()
    page.wait_for_load_state("networkidle")
    started = wait_finished(Operation.objects.get(kind="start"))
    assert started.message == "已启动。"
    operation = f"/operations/{started.pk}/"

    detail = f"/domains/alpha/{vm.uuid}/"
    for path, name in (
        ("/domains/", "list"),
        (detail, "vm"),
        (f"{detail}snapshots/", "snapshots"),
        (f"{detail}snapshots/new/", "snapshot-new"),
        (f"{detail}migrate/", "migrate"),
        (f"{detail}resize/", "resize"),
        (f"{detail}confirm/destroy/", "confirm-force-off"),
        (operation, "operation"),
        ("/activity/", "activity"),
        ("/requests/", "requests"),
        ("/requests/new/", "request-new"),
        (f"/requests/{mine.pk}/", "request"),
        ("/notifications/", "notifications"),
        ("/teams/", "teams"),
        ("/teams/team-a/", "team"),
    ):
        _look(page, live_server, path, name)

    # The console's own words come from the scripts' catalogue: this VM has no screen,
    # and the status line says so in Chinese.
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{live_server.url}{detail}console/?kind=vnc")
    status = page.locator("[data-console-status]")
    page.wait_for_function(
        "() => document.querySelector('[data-console-status]').dataset.state === 'disconnected'",
        timeout=10000,
    )
    assert status.inner_text().startswith("已断开：")
    assert "没有 VNC 显示" in status.inner_text()
    page.screenshot(path=SHOTS / "zh-console-1366.png", full_page=True)


def test_the_superusers_pages_in_chinese_at_1366_and_390(page, live_server, people, hosts):
    from tests.test_provisioning_create import make_template

    template = make_template(hosts)
    Profile.objects.create(user=people.root, language="zh-hans")
    browser_log_in(page, live_server.url, "root")
    for path, name in (
        ("/hosts/", "hosts"),
        ("/hosts/alpha/", "host"),
        ("/templates/", "templates"),
        (f"/templates/{template.pk}/edit/", "template-form"),
        ("/teams/team-a/quota/", "quota"),
        ("/activity/", "activity-audit"),  # the audit trail's sentences
    ):
        _look(page, live_server, path, name)


def test_the_login_page_speaks_the_browsers_language(browser, live_server, db):
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    for width, height in WIDTHS:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live_server.url}/login/")
        assert page.get_attribute("html", "lang") == "zh-hans"
        assert page.inner_text("h1") == "登录 vmpanel"
        page.screenshot(path=SHOTS / f"zh-login-{width}.png", full_page=True)
        assert page.evaluate(CLIPPED) == []
    context.close()
