"""Benchmark: the web tier under load, as `make demo` serves it.

Logs in as a demo user, then drives /healthz, the domain list, a domain's page and the
activity page with wrk (Debian's `wrk`), 16 and 50 concurrent clients for a fixed time
each, and prints requests per second, p50/p95/p99 latency, errors, and each page's
throughput as a ratio to /healthz's in the same run.

Targets (issue 9): 0 errors; at 16 clients list >= 0.5, domain page >= 0.3, activity >= 0.3
of /healthz; at 50 clients p95 <= 1 s on every page.

    make demo            # in another terminal: the panel as it runs for people
    .venv/bin/python bench/web_load.py [--url http://127.0.0.1:8000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.cookiejar
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request

PASSWORD = "vmpanel-demo"


def login(base: str, username: str) -> tuple[str, str]:
    """(session cookie, a domain page's path) for `username`, through the login form."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode(
        {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token}
    ).encode()
    request = urllib.request.Request(f"{base}/login/", data, headers={"Referer": f"{base}/"})
    listing = opener.open(request).read().decode()
    domain = re.search(r'href="(/domains/[^/"]+/[0-9a-f-]{36}/)"', listing)
    if domain is None:
        sys.exit(f"web_load: {username} sees no domain at {base}/domains/ (is `make demo` up?)")
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    return cookie, domain.group(1)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, cookie: str, clients: int, seconds: int) -> dict:
    """One wrk run: requests/s, latency percentiles (ms) and errors."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(clients, 4)}",
            f"-c{clients}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Cookie: {cookie}",
            url,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "--raw" in sys.argv:
        print(out)
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(n) for n in match.groups())
    if not {"50", "90", "99"} <= latency.keys():  # nothing answered in time
        nan = float("nan")
        return {"rps": 0.0, "p50": nan, "p95": nan, "p99": nan, "errors": max(errors, 1)}
    # wrk prints no p95: read it off the distribution between p90 and p99 (linear).
    p90, p99 = _ms(latency["90"]), _ms(latency["99"])
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(latency["50"]),
        "p95": p90 + (p99 - p90) * 5 / 9,
        "p99": p99,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="oscar", help="a demo login (operator of Platform)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", default="16,50")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds per client count (this machine's speed drifts by 2x over "
        "tens of seconds: each page's figure is its median round, each round ends with "
        "/healthz so that every ratio compares neighbours in time)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("web_load: needs wrk (apt-get install wrk)")
    base = args.url.rstrip("/")
    cookie, domain_path = login(base, args.user)
    pages = {
        "healthz": "/healthz",
        "list": "/domains/",
        "domain": domain_path,
        "activity": "/activity/",
    }
    targets = {16: {"list": 0.5, "domain": 0.3, "activity": 0.3}}
    print(f"web_load: {base} as {args.user}, {args.seconds} s per page and client count")
    failed = False
    for clients in (int(c) for c in args.clients.split(",")):
        print(f"\n{clients} clients")
        print(
            f"  {'page':<9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
            f" {'errors':>7} {'÷healthz':>9}"
        )
        rounds = []
        for _round in range(args.rounds):
            seconds = max(2, args.seconds // args.rounds)
            got = {name: wrk(base + path, cookie, clients, seconds) for name, path in pages.items()}
            got["healthz_after"] = wrk(base + "/healthz", cookie, clients, seconds)
            rounds.append(got)
        results = {}
        for name in pages:
            # Each round's throughput against the mean of the /healthz runs around it.
            ratios = sorted(
                g[name]["rps"] / ((g["healthz"]["rps"] + g["healthz_after"]["rps"]) / 2)
                for g in rounds
            )
            middle = sorted(rounds, key=lambda g: g[name]["rps"])[len(rounds) // 2][name]
            results[name] = {
                **middle,
                "errors": sum(g[name]["errors"] for g in rounds),
                "ratio": ratios[len(ratios) // 2],
            }
        for name, r in results.items():
            ratio = r["ratio"]
            notes = []
            if r["errors"]:
                notes.append("ERRORS")
            if clients >= 50 and r["p95"] > 1000:
                notes.append("p95 > 1 s")
            if ratio < targets.get(clients, {}).get(name, 0):
                notes.append(f"below {targets[clients][name]}")
            failed = failed or bool(notes)
            print(
                f"  {name:<9} {r['rps']:>8.1f} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f}"
                f" {r['errors']:>7} {ratio:>9.2f}  {' '.join(notes)}"
            )
    print("\nall targets met" if not failed else "\nsome targets missed (marked above)")


if __name__ == "__main__":
    main()
