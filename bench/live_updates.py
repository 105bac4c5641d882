"""Benchmark: pages that update themselves, as `make demo` serves them.

An open list page asks every second whether what it shows changed (`?since=<its version>`;
templates/_live.html). Printed:

1. The server's cost of that check while nothing changed (a 204), with 50 open pages (50
   sessions) polling, against a full render of the list (its kept copies emptied first),
   both measured in this process on the demo's database: the check must cost at most a
   fifth of a render. A confirmed page's poll is answered before the session, the user
   and the view are loaded (`kept_pages.PollMiddleware`), as long as nothing was written
   since; so the check is measured twice: as fast as the pages can ask, and at the real
   rate (each page once a second) while the demo's watcher and collector write as they
   do, with the share of polls that went the whole way (the view's queries).
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


def server_cost(user: str, pages: int, polls: int, seconds: int) -> dict[str, float]:
    """The check (as fast as the pages can ask, and at the real rate) and a full render, in
    this process on the demo's database: milliseconds of wall time and of this process's
    CPU time (the machine is shared: wall time moves with everyone else's load)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from domains import kept_pages, rows

    person = get_user_model().objects.get(username=user)
    clients = []
    versions = []
    for _ in range(pages):
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(person, backend="django.contrib.auth.backends.ModelBackend")
        client.get("/domains/")  # the CSRF cookie: from here on the page is kept
        html = client.get("/domains/").content.decode()
        clients.append(client)
        versions.append(re.search(r"since=([0-9a-f]+)", html).group(1))

    def poll(i: int) -> int:
        response = clients[i].get("/domains/", {"since": versions[i]}, HTTP_HX_REQUEST="true")
        assert response.status_code in (200, 204), response.status_code
        if response.status_code == 200:  # the collector's figures moved: the new version
            versions[i] = re.search(r"since=([0-9a-f]+)", response.content.decode()).group(1)
        return response.status_code

    for i in range(pages):
        poll(i)  # each page confirmed once the whole way, as after its first poll
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(polls):
        poll(i % pages)
    check = (time.perf_counter() - wall) / polls * 1000
    check_cpu = (time.process_time() - cpu) / polls * 1000

    # At the real rate: every page once a second, spread over the second, while the demo's
    # watcher and collector write as they do (each write bumps the change count). What
    # counts is the polls answered "unchanged" (204): early, or after the view looked the
    # whole way because something was written; a 200 is a page that did change.
    whole_way = 0
    render_kept = kept_pages.render_kept

    def counted(*args, **kwargs):
        nonlocal whole_way
        whole_way += 1
        return render_kept(*args, **kwargs)

    kept_pages.render_kept = counted
    unchanged: list[tuple[float, bool]] = []
    begin = time.monotonic()
    for n in range(seconds * pages):
        time.sleep(max(0.0, begin + n / pages - time.monotonic()))
        looked, cpu = whole_way, time.process_time()
        if poll(n % pages) == 204:
            unchanged.append((time.process_time() - cpu, whole_way > looked))
    kept_pages.render_kept = render_kept

    def render() -> None:
        kept_pages._pages = kept_pages._Kept()  # nothing kept: the page as first rendered
        rows._render.cache_clear()
        assert clients[0].get("/domains/", HTTP_HX_REQUEST="true").status_code == 200

    renders = max(20, polls // 10)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(renders):
        render()
    rendered = (time.perf_counter() - wall, time.process_time() - cpu)
    # And at the same pace as the polls above (a process that waits in between runs
    # slower than one kept busy): the real rate's ratio compares like with like.
    paced_render = 0.0
    begin = time.monotonic()
    for n in range(renders):
        time.sleep(max(0.0, begin + n / pages - time.monotonic()))
        cpu = time.process_time()
        render()
        paced_render += time.process_time() - cpu
    return {
        "check": check,
        "check_cpu": check_cpu,
        "paced_cpu": sum(t for t, _ in unchanged) / len(unchanged) * 1000,
        "whole_way": sum(1 for _, whole in unchanged if whole) / len(unchanged),
        "changed": seconds * pages - len(unchanged),
        "render": rendered[0] / renders * 1000,
        "render_cpu": rendered[1] / renders * 1000,
        "paced_render_cpu": paced_render / renders * 1000,
    }


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
    parser.add_argument("--seconds", type=int, default=30, help="at the real rate (check)")
    parser.add_argument("--tabs", type=int, default=5, help="open pages in Chromium (delay)")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    cost = server_cost(args.user, args.pages, args.polls, args.seconds)
    print(
        f"check (204, {args.pages} pages polling):  {cost['check']:.2f} ms"
        f" (CPU {cost['check_cpu']:.2f} ms)"
    )
    print(
        f"full render of the list:                {cost['render']:.2f} ms"
        f" (CPU {cost['render_cpu']:.2f} ms)"
    )
    print(
        f"check at the real rate ({args.pages} pages once a second, {args.seconds} s): "
        f"CPU {cost['paced_cpu']:.2f} ms a 204, {cost['whole_way']:.0%} of them the whole "
        f"way; {cost['changed']} polls found a change; a render at that pace: CPU "
        f"{cost['paced_render_cpu']:.2f} ms"
    )
    for name, ratio in (
        ("check / render", cost["check"] / cost["render"]),
        ("check / render, CPU", cost["check_cpu"] / cost["render_cpu"]),
        ("at the real rate / render, CPU", cost["paced_cpu"] / cost["paced_render_cpu"]),
    ):
        missed = "" if ratio <= 0.2 else "  MISSED"
        print(f"{name}: {ratio:.2f}  (target <= 0.20){missed}")

    seen = delays(args.url, args.user, args.tabs, args.rounds)
    p95 = statistics.quantiles(seen, n=20)[-1] if len(seen) >= 2 else seen[0]
    print(
        f"delay: median {statistics.median(seen):.2f} s, p95 {p95:.2f} s"
        f"  (target p95 <= 2 s){'' if p95 <= 2 else '  MISSED'}"
    )


if __name__ == "__main__":
    main()
