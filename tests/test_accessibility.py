"""Accessibility of the main pages: axe-core (from the npm registry, vendored under
tests/vendor for the tests only) run in Debian's Chromium on each main page, at 1366 and
390 px, as a superuser (who sees the most). No serious or critical violation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import browser_log_in

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"{CHROMIUM} is missing (apt-get install chromium): accessibility tests skipped",
    ),
]


@pytest.fixture
def browser_context_args(browser_context_args):
    # axe is injected as a script of the test's own: the panel's Content-Security-Policy
    # (rightly) refuses it, so this context alone does not apply it.
    return {**browser_context_args, "bypass_csp": True}


def _violations(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("width", [1366, 390])
def test_main_pages_have_no_serious_accessibility_violation(
    width, page, live_server, people, make_domain
):
    domain = make_domain("alpha", name="a11y-vm", state="running", snapshots=1, devices=True)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/login/")
    assert _violations(page) == []
    browser_log_in(page, live_server.url, "root", go=False)
    vm = f"/domains/alpha/{domain.uuid}/"
    found = {}
    for path in [
        "/domains/", vm, f"{vm}snapshots/", f"{vm}snapshots/new/", "/activity/",
        "/requests/", "/templates/", "/hosts/", "/hosts/alpha/", "/teams/", "/teams/team-a/",
        "/notifications/",
    ]:  # fmt: skip
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        if problems := _violations(page):
            found[path] = problems
    assert found == {}, json.dumps(found, indent=1)
