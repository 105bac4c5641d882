"""Benchmark: pages that update themselves, as `make demo` serves them.

An open list page asks every second whether what it shows changed (`?since=<its version>`;
templates/_live.html). Printed:

1. The server's cost of that check while nothing changed (a 204), with 50 open pages (50
   sessions) polling, against a full render of the list (its kept copies emptied first),
   both measured in this process on the demo's database: the check must cost at most a
   fifth of a render.
2. The delay from a change in libvirt (a demo domain suspended or resumed through the
   host's own libvirt connection) to the open pages showing it: the watcher's event, the
   inventory row, the next poll, the swap. Several pages in Chromium, several rounds.

Targets (issue 13): the check <= 1/5 of a full render; delay p95 <= 2 s.

    make demo            # in another terminal
    .venv/bin/python bench/live_updates.py [--url http://127.0.0.1:8000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmpanel.settings")
os.environ.setdefault("VMPANEL_ALLOW_DEMO_SECRET", "true")  # the demo's own settings
os.environ.setdefault(
    "REDIS_URL", f"redis://127.0.0.1:{os.environ.get('VMPANEL_REDIS_PORT', '6391')}/0"
)

PASSWORD = "vmpanel-demo"


def server_cost(user: str, pages: int, polls: int) -> tuple[float, float]:
    """(ms per check, ms per full render) in this process, on the demo's database."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from domains import kept_pages, rows

    person = get_user_model().objects.get(username=user)
    clients = []
    for _ in range(pages):
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
        client.get("/domains/")  # the CSRF cookie: from here on the page is kept
        html = client.get("/domains/").content.decode()
        clients.append((client, re.search(r"since=([0-9a-f]+)", html).group(1)))

    started = time.perf_counter()
    for i in range(polls):
        client, version = clients[i % pages]
        response = client.get("/domains/", {"since": version}, HTTP_HX_REQUEST="true")
        assert response.status_code == 204, response.status_code
    check = (time.perf_counter() - started) / polls * 1000

    client = clients[0][0]
    renders = max(20, polls // 10)
    started = time.perf_counter()
    for _ in range(renders):
        kept_pages._pages = kept_pages._Kept()  # nothing kept: the page as first rendered
        rows._render.cache_clear()
        assert client.get("/domains/", HTTP_HX_REQUEST="true").status_code == 200
    render = (time.perf_counter() - started) / renders * 1000
    return check, render


def delays(base: str, user: str, pages: int, rounds: int) -> list[float]:
    """Seconds from a libvirt change to every open page showing it."""
    import libvirt
    from playwright.sync_api import sync_playwright

    from domains.models import Domain

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    target = (
        Domain.objects.filter(team__memberships__user__username=user, state=1, gone_at=None)
        .select_related("host")
        .order_by("name")
        .first()
    )
    if target is None:
        sys.exit(f"live_updates: {user} has no running domain (is `make demo` up?)")
    conn = libvirt.open(target.host.uri)
    dom = conn.lookupByUUIDString(str(target.uuid))
    seen: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        tabs = []
        for _ in range(pages):
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            tab = context.new_page()
            tab.goto(f"{base}/login/")
            tab.fill("input[name=username]", user)
            tab.fill("input[name=password]", PASSWORD)
            tab.click("button[type=submit]")
            tab.wait_for_url(f"{base}/domains/**")
            tab.goto(f"{base}/domains/?q={target.name}")
            tabs.append(tab)
        for n in range(rounds):
            word = "paused" if n % 2 == 0 else "running"
            started = time.monotonic()
            (dom.suspend if word == "paused" else dom.resume)()
            for tab in tabs:
                tab.wait_for_function(
                    f"() => document.querySelector('#domain-table .badge')"
                    f"?.innerText.includes('{word}')",
                    timeout=10000,
                )
            seen.append(time.monotonic() - started)
            print(f"  round {n + 1:>2}: {word:<8} on {pages} pages after {seen[-1]:.2f} s")
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        browser.close()
    conn.close()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="oscar", help="a demo login (operator of Platform)")
    parser.add_argument("--pages", type=int, default=50, help="open pages polling (check)")
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--tabs", type=int, default=5, help="open pages in Chromium (delay)")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    check, render = server_cost(args.user, args.pages, args.polls)
    print(f"check (204, {args.pages} pages polling): {check:.2f} ms")
    print(f"full render of the list:               {render:.2f} ms")
    ratio = check / render
    print(f"check / render: {ratio:.2f}  (target <= 0.20){'' if ratio <= 0.2 else '  MISSED'}")

    seen = delays(args.url, args.user, args.tabs, args.rounds)
    p95 = statistics.quantiles(seen, n=20)[-1] if len(seen) >= 2 else seen[0]
    print(
        f"delay: median {statistics.median(seen):.2f} s, p95 {p95:.2f} s"
        f"  (target p95 <= 2 s){'' if p95 <= 2 else '  MISSED'}"
    )


if __name__ == "__main__":
    main()
