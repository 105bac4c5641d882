"""A person in Chromium: log in, filter the list, start a domain.

Playwright drives Debian's Chromium (/usr/bin/chromium; browser downloads are blocked
here) against Django's live server, with the real worker doing the start.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers import PASSWORD, fresh, live, wait_for

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"{CHROMIUM} is missing (apt-get install chromium): browser tests skipped",
    ),
]

# Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run
# from a thread with a loop unless told that this is deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


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
    page.fill("input[name=username]", "olga_operator")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/domains/**")
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
