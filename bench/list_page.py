"""Benchmark: the domain list page at 100 and at 10,000 domains.

Defines the domains on a private test-driver host, reads them into the inventory, then
requests the list page as a team member (permission filter included) and prints the
median server time and the number of libvirt calls made per request.

Targets (issue 2): 0 libvirt calls per list request; the 10,000-domain median within
1.2 x the 100-domain one.

    .venv/bin/python bench/list_page.py [--sizes 100,10000] [--requests 30]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN_DIR = os.environ.setdefault("VMPANEL_RUN_DIR", "/tmp/vmpanel-bench")
DB_FILE = Path(tempfile.gettempdir()) / "vmpanel-bench.sqlite3"
os.environ.setdefault("DATABASE_URL", f"sqlite:///{DB_FILE}")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmpanel.settings")
os.environ.setdefault("VMPANEL_ALLOW_DEMO_SECRET", "true")  # a benchmark, not a panel

import libvirt  # noqa: E402  (the bench counts libvirt calls, so it may import it)

LIBVIRT_CALLS = 0


def count_libvirt_calls() -> None:
    """Wrap every method of libvirt's connection and domain classes with a counter."""

    def counted(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            global LIBVIRT_CALLS
            LIBVIRT_CALLS += 1
            return fn(*args, **kwargs)

        return wrapper

    for cls in (libvirt.virConnect, libvirt.virDomain):
        for name, attr in list(vars(cls).items()):
            if callable(attr) and not name.startswith("_"):
                setattr(cls, name, counted(attr))
    libvirt.open = counted(libvirt.open)


def host_script(*args: str) -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/testhost.sh"), *args],
        check=True,
        capture_output=True,
        text=True,
    )
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    DB_FILE.unlink(missing_ok=True)
    host_script("stop", "bench")
    host_script("start", "bench")
    uri = host_script("uri", "bench")

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from domains import domxml, inventory
    from domains.models import Domain, Host, Membership, Team

    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="Bench", slug="bench")
    user = User.objects.create_user("bench-viewer", password="x")
    Membership.objects.create(user=user, team=team, role="viewer")
    host = Host.objects.create(name="bench", uri=uri)
    keeper = libvirt.open(uri)  # keeps the test driver's world alive
    client = Client()
    client.force_login(user)
    count_libvirt_calls()

    defined = 0
    print(
        f"{'domains':>8} {'median ms':>10} {'p90 ms':>8} {'libvirt calls/req':>18} {'SQL/req':>8}"
    )
    results = {}
    for size in sizes:
        t0 = time.monotonic()
        while defined < size:
            spec = domxml.SimpleDomain(name=f"bench-{defined:05d}", uuid=str(uuid.uuid4()))
            keeper.defineXML(domxml.build_simple_domain(spec))
            defined += 1
        inventory.reconcile_host(host)
        Domain.objects.filter(team__isnull=True).update(team=team)
        setup_s = time.monotonic() - t0

        times = []
        global LIBVIRT_CALLS
        LIBVIRT_CALLS = 0
        client.get("/domains/?f=persistent&sort=name")  # warm up
        LIBVIRT_CALLS = 0
        with CaptureQueriesContext(connection) as queries:
            for _ in range(args.requests):
                start = time.perf_counter()
                response = client.get("/domains/?f=persistent&sort=name")
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, response.status_code
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        calls = LIBVIRT_CALLS / args.requests
        sql = len(queries) / args.requests
        results[size] = median
        print(f"{size:>8} {median:>10.1f} {p90:>8.1f} {calls:>18.1f} {sql:>8.1f}")
        print(f"         (set-up of {size} domains: {setup_s:.1f} s)", file=sys.stderr)

    if len(sizes) >= 2:
        ratio = results[sizes[-1]] / results[sizes[0]]
        print(f"ratio {sizes[-1]} / {sizes[0]} domains: {ratio:.2f} (target <= 1.20)")
    keeper.close()
    host_script("stop", "bench")
    DB_FILE.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
